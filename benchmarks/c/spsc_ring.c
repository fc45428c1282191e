/*
 * A minimal single-producer single-consumer ring in shared memory: the floor that the
 * Quayside feed ring is measured against. Written for the benchmarks only.
 *
 * Layout of the mapped file: two rings, each a 128-byte header (producer position and
 * consumer position on separate cache lines) followed by `capacity` 64-byte slots, then one
 * cache line of start-up flags. Positions only grow; the slot of position p is p & (cap - 1).
 * The producer publishes with a release store, the consumer reads it with an acquire load
 * (C11 atomics); on x86-64 both are plain moves. Spin loops execute the pause hint, as the
 * engine's busy-spin wait does: leaving a tight spin loop without it costs a memory-ordering
 * machine clear, and measured here the ring's round trip is ~6 % faster with it.
 *
 *   spsc_ring pingpong   PATH ITERS WARMUP CPU_A CPU_B SAMPLES_FILE
 *       A writes a record (seq, timestamp) into ring 1; B busy-polls ring 1 and echoes the
 *       record into ring 2; A busy-polls ring 2. One int64 round-trip time in ns per measured
 *       iteration is written to SAMPLES_FILE (raw little-endian int64).
 *   spsc_ring lineping   PATH ITERS WARMUP CPU_A CPU_B SAMPLES_FILE
 *       No ring: A stores a counter into one cache line, B spins on it and stores it into a
 *       second line, A spins on that. One line transfer each way: the hardware's limit.
 *   spsc_ring throughput PATH RECORDS BATCH CAPACITY CPU_P CPU_C
 *       The producer pushes RECORDS records in batches of BATCH (waiting while the ring is
 *       full); the consumer copies them out and checks every sequence number.
 *
 * Both modes fork: the parent is A / the producer, the child B / the consumer; each pins
 * itself. A JSON summary goes to stdout. The file is unlinked as soon as both sides map it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    _Alignas(64) int64_t w[8];
} record_t;

typedef struct {
    _Alignas(64) _Atomic int64_t head; /* producer position */
    _Alignas(64) _Atomic int64_t tail; /* consumer position */
    record_t slots[];
} ring_t;

typedef struct {
    _Alignas(64) _Atomic int64_t child_ready;
    _Atomic int64_t child_pinned;
} flags_t;

static size_t ring_bytes(int64_t cap) { return sizeof(ring_t) + (size_t)cap * sizeof(record_t); }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int pin(int cpu) {
    if (cpu < 0) return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0;
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void *map_file(const char *path, size_t size) {
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) die("open");
    if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap");
    close(fd);
    memset(p, 0, size); /* fault every page in before anything is timed */
    return p;
}

/* Push one record; spins while the ring is full. */
static inline void push1(ring_t *r, int64_t cap, int64_t *cached_tail, const record_t *rec) {
    int64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    while (head - *cached_tail >= cap) {
        *cached_tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (head - *cached_tail >= cap) relax();
    }
    r->slots[head & (cap - 1)] = *rec;
    atomic_store_explicit(&r->head, head + 1, memory_order_release);
}

/* Spin until one record is available, copy it out, release the slot. */
static inline void pop1(ring_t *r, int64_t cap, record_t *out) {
    int64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    while (atomic_load_explicit(&r->head, memory_order_acquire) == tail) relax();
    *out = r->slots[tail & (cap - 1)];
    atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
}

static int pingpong(const char *path, long iters, long warmup, int cpu_a, int cpu_b, const char *out) {
    const int64_t cap = 1024;
    size_t rb = ring_bytes(cap);
    char *base = map_file(path, 2 * rb + sizeof(flags_t));
    ring_t *r1 = (ring_t *)base, *r2 = (ring_t *)(base + rb);
    flags_t *flags = (flags_t *)(base + 2 * rb);
    unlink(path);
    long total = iters + warmup;
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) { /* B: echo ring 1 -> ring 2 */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        atomic_store(&flags->child_pinned, pin(cpu_b));
        atomic_store_explicit(&flags->child_ready, 1, memory_order_release);
        int64_t cached = 0;
        record_t rec;
        for (long i = 0; i < total; i++) {
            pop1(r1, cap, &rec);
            push1(r2, cap, &cached, &rec);
        }
        _exit(0);
    }
    int pinned_a = pin(cpu_a);
    int64_t *samples = malloc(sizeof(int64_t) * (size_t)(iters > 0 ? iters : 1));
    if (!samples) die("malloc");
    while (!atomic_load_explicit(&flags->child_ready, memory_order_acquire)) {
    }
    int64_t cached = 0;
    long errors = 0;
    record_t rec = {{0}}, back;
    int64_t t_begin = now_ns();
    for (long i = 0; i < total; i++) {
        int64_t t0 = now_ns();
        rec.w[1] = i;
        rec.w[2] = t0;
        push1(r1, cap, &cached, &rec);
        pop1(r2, cap, &back);
        int64_t t1 = now_ns();
        if (back.w[1] != i || back.w[2] != t0) errors++;
        if (i >= warmup) samples[i - warmup] = t1 - t0;
    }
    int64_t t_end = now_ns();
    int status = 0;
    waitpid(child, &status, 0);
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(samples, sizeof(int64_t), (size_t)iters, f) != (size_t)iters) die("write samples");
    fclose(f);
    printf("{\"mode\": \"pingpong\", \"iterations\": %ld, \"warmup\": %ld, \"errors\": %ld, "
           "\"seconds\": %.6f, \"pinned_a\": %d, \"pinned_b\": %ld, \"child_status\": %d}\n",
           iters, warmup, errors, (t_end - t_begin) / 1e9, pinned_a, (long)atomic_load(&flags->child_pinned),
           status);
    return errors != 0 || status != 0;
}

static int lineping(const char *path, long iters, long warmup, int cpu_a, int cpu_b, const char *out) {
    char *base = map_file(path, 3 * 128);
    _Atomic int64_t *ping = (_Atomic int64_t *)base, *pong = (_Atomic int64_t *)(base + 128);
    flags_t *flags = (flags_t *)(base + 256);
    unlink(path);
    long total = iters + warmup;
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        atomic_store(&flags->child_pinned, pin(cpu_b));
        atomic_store_explicit(&flags->child_ready, 1, memory_order_release);
        for (int64_t i = 1; i <= total; i++) {
            while (atomic_load_explicit(ping, memory_order_acquire) != i) relax();
            atomic_store_explicit(pong, i, memory_order_release);
        }
        _exit(0);
    }
    int pinned_a = pin(cpu_a);
    int64_t *samples = malloc(sizeof(int64_t) * (size_t)(iters > 0 ? iters : 1));
    if (!samples) die("malloc");
    while (!atomic_load_explicit(&flags->child_ready, memory_order_acquire)) {
    }
    int64_t t_begin = now_ns();
    for (int64_t i = 1; i <= total; i++) {
        int64_t t0 = now_ns();
        atomic_store_explicit(ping, i, memory_order_release);
        while (atomic_load_explicit(pong, memory_order_acquire) != i) relax();
        int64_t t1 = now_ns();
        if (i > warmup) samples[i - warmup - 1] = t1 - t0;
    }
    int64_t t_end = now_ns();
    int status = 0;
    waitpid(child, &status, 0);
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(samples, sizeof(int64_t), (size_t)iters, f) != (size_t)iters) die("write samples");
    fclose(f);
    printf("{\"mode\": \"lineping\", \"iterations\": %ld, \"warmup\": %ld, \"errors\": 0, "
           "\"seconds\": %.6f, \"pinned_a\": %d, \"pinned_b\": %ld, \"child_status\": %d}\n",
           iters, warmup, (t_end - t_begin) / 1e9, pinned_a, (long)atomic_load(&flags->child_pinned), status);
    return status != 0;
}

static int throughput(const char *path, long records, long batch, long cap, int cpu_p, int cpu_c) {
    if (cap < 2 || (cap & (cap - 1)) || batch < 1 || batch > cap) {
        fprintf(stderr, "capacity must be a power of two >= batch\n");
        return 2;
    }
    size_t rb = ring_bytes(cap);
    char *base = map_file(path, rb + 2 * sizeof(flags_t));
    ring_t *r = (ring_t *)base;
    flags_t *flags = (flags_t *)(base + rb);
    /* the consumer reports through the second flags block: errors, start and end times */
    _Atomic int64_t *report = (_Atomic int64_t *)(base + rb + sizeof(flags_t));
    unlink(path);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        atomic_store(&flags->child_pinned, pin(cpu_c));
        atomic_store_explicit(&flags->child_ready, 1, memory_order_release);
        record_t *out = malloc(sizeof(record_t) * (size_t)batch);
        int64_t pos = 0, errors = 0, t_first = 0, sum = 0;
        while (pos < records) {
            int64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
            int64_t n = head - pos;
            if (n <= 0) {
                relax();
                continue;
            }
            if (n > batch) n = batch;
            if (!t_first) t_first = now_ns();
            for (int64_t i = 0; i < n; i++) out[i] = r->slots[(pos + i) & (cap - 1)];
            atomic_store_explicit(&r->tail, pos + n, memory_order_release);
            for (int64_t i = 0; i < n; i++) {
                errors += out[i].w[1] != pos + i;
                sum += out[i].w[2];
            }
            pos += n;
        }
        report[1] = t_first;
        report[2] = now_ns();
        report[3] = sum;
        atomic_store_explicit(&report[0], errors + 1, memory_order_release);
        _exit(0);
    }
    int pinned_p = pin(cpu_p);
    while (!atomic_load_explicit(&flags->child_ready, memory_order_acquire)) {
    }
    int64_t cached = 0, pos = 0;
    int64_t t0 = now_ns();
    while (pos < records) {
        int64_t n = records - pos < batch ? records - pos : batch;
        while (pos + n - cached > cap) {
            cached = atomic_load_explicit(&r->tail, memory_order_acquire);
            if (pos + n - cached > cap) relax();
        }
        for (int64_t i = 0; i < n; i++) {
            record_t *s = &r->slots[(pos + i) & (cap - 1)];
            s->w[0] = 1;
            s->w[1] = pos + i;
            s->w[2] = pos + i;
            for (int w = 3; w < 8; w++) s->w[w] = 0;
        }
        pos += n;
        atomic_store_explicit(&r->head, pos, memory_order_release);
    }
    int64_t t1 = now_ns();
    int status = 0;
    waitpid(child, &status, 0);
    int64_t errors = atomic_load_explicit(&report[0], memory_order_acquire) - 1;
    printf("{\"mode\": \"throughput\", \"records\": %ld, \"batch\": %ld, \"capacity\": %ld, "
           "\"producer_seconds\": %.6f, \"t_producer_start\": %lld, \"t_consumer_first\": %lld, "
           "\"t_consumer_done\": %lld, \"errors\": %lld, \"pinned_p\": %d, \"pinned_c\": %ld, "
           "\"child_status\": %d}\n",
           records, batch, cap, (t1 - t0) / 1e9, (long long)t0, (long long)report[1], (long long)report[2],
           (long long)errors, pinned_p, (long)atomic_load(&flags->child_pinned), status);
    return errors != 0 || status != 0;
}

int main(int argc, char **argv) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (argc == 8 && strcmp(argv[1], "pingpong") == 0)
        return pingpong(argv[2], atol(argv[3]), atol(argv[4]), atoi(argv[5]), atoi(argv[6]), argv[7]);
    if (argc == 8 && strcmp(argv[1], "lineping") == 0)
        return lineping(argv[2], atol(argv[3]), atol(argv[4]), atoi(argv[5]), atoi(argv[6]), argv[7]);
    if (argc == 8 && strcmp(argv[1], "throughput") == 0)
        return throughput(argv[2], atol(argv[3]), atol(argv[4]), atol(argv[5]), atoi(argv[6]), atoi(argv[7]));
    fprintf(stderr,
            "usage: %s pingpong|lineping PATH ITERS WARMUP CPU_A CPU_B SAMPLES_FILE\n"
            "       %s throughput PATH RECORDS BATCH CAPACITY CPU_P CPU_C\n",
            argv[0], argv[0]);
    return 2;
}
