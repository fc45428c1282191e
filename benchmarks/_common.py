"""What every benchmark shares: child processes pinned to a CPU, cleanup of shared-memory
segments and processes (also on Ctrl-C), latency statistics, machine facts, the table, and the
result file every module writes (the shape the suite, ``benchmarks/suite.py``, reads).

Every module's command line is built here too (:func:`module_parser`, :func:`selected`,
:func:`apply_nice`, :func:`run_main`), so that ``--quick``, ``--out``, ``--only``, ``--retries``
and ``--nice`` mean the same everywhere and the suite can pass them to any module.

The result file (``SCHEMA`` 1) is one JSON object: ``benchmark`` (the module's name), ``quick``,
``groups``, ``started``, ``seconds``, ``machine`` (:func:`machine_info`), ``config``,
``measurements``, ``targets``, ``errors`` (``[{group, error}]``) and ``notes``; or, from a module
whose prerequisites are absent, ``benchmark`` and ``skipped`` (the reason) alone. Each
measurement has ``name``, ``key`` (unique in the module), ``group`` and ``kind`` (``"floor"``,
``"baseline"`` or ``"peer"``; absent for Quayside's own figures), and one figure:

* ``latency``: :func:`latency_stats` (percentiles in ns and a log-scale histogram);
* ``records_per_s`` or ``events_per_s``, or ``rate_per_s`` with ``rate_unit`` (higher is better);
* ``seconds_median`` (and ``seconds_max``; lower is better);
* ``value`` with ``unit`` and ``better`` (``"lower"`` or ``"higher"``), for anything else;

and optionally ``preempted`` (share of its CPU time other processes took), ``compare``,
``target``, ``verdict``, ``parent`` (the key of the row it breaks down) and ``detail``. Targets
have ``id``, ``description``, ``verdict`` (PASS, FAIL, INCONCLUSIVE or NOT RUN) and ``evidence``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CPU_A",
    "CPU_B",
    "CPUS_ENV",
    "SCHEMA",
    "ChildError",
    "Skip",
    "Child",
    "Workspace",
    "pin",
    "OnCpu",
    "PREEMPTED",
    "best_attempt",
    "cpu_busy",
    "latency_stats",
    "log_histogram",
    "machine_info",
    "format_table",
    "render_table",
    "jsonable",
    "write_result",
    "skipped",
    "RESULTS",
    "module_parser",
    "finish",
    "apply_nice",
    "run_main",
]

#: ``"A,B"``: the CPUs to pin to instead of 0 and 1 (the suite sets it from the host's isolated CPUs).
CPUS_ENV = "QUAYSIDE_BENCH_CPUS"
SCHEMA = 1
#: Where a module writes its result file by default (``<name>.json``).
RESULTS = Path(__file__).resolve().parent / "results"


def _bench_cpus() -> tuple[int, int]:
    text = os.environ.get(CPUS_ENV, "").strip()
    if not text:
        return 0, 1
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{CPUS_ENV}={text!r}: expected two CPU numbers 'A,B' (initiator/producer, echo/reader)")
    return int(parts[0]), int(parts[1])


CPU_A, CPU_B = _bench_cpus()  # the producer / initiator; the reader(s) / echo side / engine


class ChildError(RuntimeError):
    """A benchmark child process failed, died or timed out."""


class Skip(Exception):
    """Raised by a benchmark module whose prerequisites are absent (no Docker engine, no
    Chromium, the peers not installed): the suite reports the module as SKIPPED with this
    message instead of as a crash. A module may also write the result itself with :func:`skipped`."""


def pin(cpu: int | None) -> bool:
    """Pin the calling process to ``cpu``; False (and unpinned) if that is not possible."""
    if cpu is None:
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError):
        return False
    return os.sched_getaffinity(0) == {cpu}


class OnCpu:
    """How much of a stretch of wall time this process actually ran, and how long it sat
    runnable in the run queue while something else ran on its CPU (``/proc/self/schedstat``;
    ``getrusage`` where that is missing). A busy-polling process alone on its core runs ~100 %."""

    def __init__(self):
        self._r0, self._s0, self._t0 = resource.getrusage(resource.RUSAGE_SELF), _schedstat(), time.perf_counter()

    def result(self) -> dict:
        r1, s1, wall = resource.getrusage(resource.RUSAGE_SELF), _schedstat(), time.perf_counter() - self._t0
        if self._s0 and s1:
            ran, waited = (s1[0] - self._s0[0]) / 1e9, (s1[1] - self._s0[1]) / 1e9
        else:
            ran, waited = (r1.ru_utime + r1.ru_stime) - (self._r0.ru_utime + self._r0.ru_stime), None
        return {
            "wall_s": round(wall, 4),
            "ran_s": round(ran, 4),
            "waited_runnable_s": None if waited is None else round(waited, 4),
            "on_cpu": round(ran / wall, 3) if wall > 0 else None,
            "involuntary_switches": r1.ru_nivcsw - self._r0.ru_nivcsw,
        }


#: A run whose processes lost more than this share of their time to other processes on the
#: same CPU is "disturbed": a target it misses is inconclusive rather than failed.
PREEMPTED = 0.1


def best_attempt(fn, ok, preempted, retries: int, summary) -> dict:
    """Run ``fn()`` until ``ok(result)`` or an undisturbed attempt, at most ``1 + retries`` times.

    Returns the attempt that met the target if one did (other processes taking CPU time can
    only lower a rate or add loss, never help, so a pass under disturbance is still a pass),
    otherwise the least disturbed one, not the best-looking one. Every attempt's ``summary``
    goes into ``result["attempts"]``."""
    tries = []
    for _ in range(1 + retries):
        r = fn()
        r["preempted"] = preempted(r)
        tries.append(r)
        if ok(r) or r["preempted"] <= PREEMPTED:
            break
    best = tries[-1] if ok(tries[-1]) else min(tries, key=lambda r: r["preempted"])
    best["attempts"] = [summary(t) | {"preempted": t["preempted"], "chosen": t is best} for t in tries]
    return best


def _schedstat() -> tuple[int, int] | None:
    """(ns on the CPU, ns runnable but waiting for it) of the calling process."""
    text = _read("/proc/self/schedstat")
    try:
        ran, waited, _ = text.split()
        return int(ran), int(waited)
    except (AttributeError, ValueError):
        return None


def _cpu_times() -> dict[int, tuple[int, int]]:
    out = {}
    for line in (_read("/proc/stat") or "").splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            v = [int(x) for x in fields]
            out[int(name[3:])] = (sum(v), v[3] + v[4])  # total, idle + iowait
    return out


def cpu_busy(seconds: float = 0.3) -> dict[str, float]:
    """The share of each CPU that was busy over ``seconds`` (``/proc/stat``): measured between
    benchmarks, while this run is idle, it is the load from everything else."""
    a = _cpu_times()
    time.sleep(seconds)
    b = _cpu_times()
    out = {}
    for cpu in sorted(set(a) & set(b)):
        total = b[cpu][0] - a[cpu][0]
        idle = b[cpu][1] - a[cpu][1]
        out[f"cpu{cpu}"] = round(1 - idle / total, 3) if total > 0 else None
    return out


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _child_main(conn, parent: int, cpu: int | None, target, args) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and kills us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        target(conn, pin(cpu), *args)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


class Child:
    """A forked process running ``target(conn, pinned, *args)`` on ``cpu``.

    Forked, not spawned: it inherits the parent's already compiled numba kernels. It talks to
    the parent over ``conn``; a message ``{"error": ...}`` is raised here as :class:`ChildError`.
    """

    def __init__(self, ws: Workspace, name: str, cpu: int | None, target, *args):
        ctx = mp.get_context("fork")
        self.name = name
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(
            target=_child_main, args=(child_conn, os.getpid(), cpu, target, args), name=name, daemon=True
        )
        ws.children.append(self)
        self.proc.start()
        child_conn.close()

    def send(self, msg) -> None:
        self.conn.send(msg)

    def recv(self, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.conn.poll(0.05):
                try:
                    msg = self.conn.recv()
                except EOFError:
                    raise ChildError(f"{self.name} exited (code {self._exitcode()}) without a result") from None
                if isinstance(msg, dict) and "error" in msg:
                    raise ChildError(f"{self.name} failed:\n{msg['error']}")
                return msg
            if not self.proc.is_alive() and not self.conn.poll(0):
                raise ChildError(f"{self.name} exited (code {self._exitcode()}) without a result")
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} gave no answer within {timeout:.0f} s")

    def _exitcode(self):
        self.proc.join(0.1)
        return self.proc.exitcode

    def stop(self, timeout: float = 2.0) -> None:
        """Wait briefly for a clean exit, then kill."""
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class Workspace:
    """Owns everything a run creates: a private folder in the shm directory for ring segments,
    a temporary folder (C binary, samples), and the child processes. ``close`` removes them
    all, whatever happened; SIGTERM is turned into an exception so that ``finally`` runs."""

    def __init__(self):
        from quayside.core.feed.segment import default_shm_dir

        self.shm = default_shm_dir() / f"quayside-bench-{os.getpid()}"
        self.shm.mkdir(mode=0o700)
        self.tmp = Path(tempfile.mkdtemp(prefix="quayside-bench-"))
        self.children: list[Child] = []
        self._rings = 0
        self._old_term = signal.signal(signal.SIGTERM, self._on_term)

    @staticmethod
    def _on_term(signum, frame):
        raise SystemExit(128 + signum)

    def ring(self, name: str) -> str:
        """A fresh path for a segment (never one used before in this run: a killed producer
        may have left its file behind)."""
        self._rings += 1
        return str(self.shm / f"{name}-{self._rings}")

    def reap(self) -> None:
        """Kill any child still running (after a benchmark, or on failure)."""
        for child in self.children:
            if child.proc.is_alive():
                child.proc.kill()
            child.proc.join(5)
            child.conn.close()
        self.children.clear()

    def close(self) -> None:
        self.reap()
        shutil.rmtree(self.shm, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, self._old_term)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: Histogram bins per factor of ten: a bin is 12 % wide, finer than the run-to-run spread of a p50.
BINS_PER_DECADE = 20


def log_histogram(samples_ns: np.ndarray) -> dict:
    """Counts in log-spaced bins (``BINS_PER_DECADE`` per decade, spanning the samples): enough
    to draw the distribution on a log scale, tail included, without keeping every sample.
    Samples of 0 ns or less (two clocks read in the same tick) are counted in the first bin."""
    s = np.maximum(np.asarray(samples_ns, dtype=np.int64), 1)
    lo = int(np.floor(np.log10(s.min()) * BINS_PER_DECADE))
    hi = max(int(np.ceil(np.log10(s.max()) * BINS_PER_DECADE)), lo + 1)
    edges = 10.0 ** (np.arange(lo, hi + 1) / BINS_PER_DECADE)
    edges[0], edges[-1] = min(edges[0], s.min()), max(edges[-1], s.max())  # rounding must not drop one
    counts, _ = np.histogram(s, bins=edges)
    return {
        "bins_per_decade": BINS_PER_DECADE,
        "edges_ns": [float(f"{e:.6g}") for e in edges],
        "counts": counts.tolist(),
        "nonpositive": int((np.asarray(samples_ns) <= 0).sum()),
    }


def latency_stats(samples_ns: np.ndarray) -> dict:
    """Percentiles of round-trip samples in ns (nearest-rank: every figure is a real sample),
    and their :func:`log_histogram` (what the suite's plots draw)."""
    s = np.asarray(samples_ns, dtype=np.int64)
    p = np.percentile(s, [50, 90, 99, 99.9, 99.99], method="inverted_cdf")
    return {
        "n": int(s.size),
        "min_ns": int(s.min()),
        "p50_ns": int(p[0]),
        "p90_ns": int(p[1]),
        "p99_ns": int(p[2]),
        "p99_9_ns": int(p[3]),
        "p99_99_ns": int(p[4]),
        "max_ns": int(s.max()),
        "mean_ns": float(s.mean()),
        "over_10us": int((s > 10_000).sum()),
        "histogram": log_histogram(s),
    }


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def machine_info(repo: Path) -> dict:
    import numba

    model = None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    isolated = _read("/sys/devices/system/cpu/isolated")
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], repo)
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "isolated_cpus": isolated or "",
        "cores_isolated": bool(isolated),
        "clocksource": _read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "kernel": platform.release(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "gcc": (_run(["gcc", "-dumpfullversion"]) or None),
        "git_commit": _run(["git", "rev-parse", "HEAD"], repo),
        "git_dirty": None if status is None else bool(status),
        "executable_is_venv": sys.prefix != sys.base_prefix,
    }


def _us(ns) -> str:
    return "" if ns is None else f"{ns / 1000:.3f}"


def _rate(r) -> str:
    return "" if r is None else f"{r / 1e6:.2f}M"


def format_table(rows: list[dict]) -> str:
    """One line per measurement: latency percentiles in µs, rate in records/s, loss, the share of
    the run's CPU time that other processes took ("others"), and the comparison (ratio to the C
    floor or to a target) with its verdict."""
    head = ["benchmark", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "records/s", "lost", "others", "vs", "verdict"]
    body = []
    for r in rows:
        lat = r.get("latency") or {}
        body.append(
            [
                r["name"],
                _us(lat.get("p50_ns")),
                _us(lat.get("p99_ns")),
                _us(lat.get("p99_9_ns")),
                _us(lat.get("max_ns")),
                _rate(r.get("records_per_s")),
                "" if r.get("lost") is None else str(r["lost"]),
                "" if r.get("preempted") is None else f"{r['preempted']:.0%}",
                r.get("compare", ""),
                r.get("verdict", ""),
            ]
        )
    return render_table(head, body, right={1, 2, 3, 4, 5, 6, 7})


def render_table(head: list[str], body: list[list[str]], right: set[int]) -> str:
    """``head``, a rule and the ``body`` rows in columns as wide as their widest cell, two spaces
    apart; the columns numbered in ``right`` (figures) aligned right, the others left."""
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(b) for b in body)])


def jsonable(obj):
    """``json.dumps(default=...)`` for numpy scalars and arrays."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_result(path: Path, doc: dict) -> None:
    """Write a module's result file (see the module docstring for its shape)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": SCHEMA, **doc}, indent=2, default=jsonable) + "\n")


def skipped(path: Path, benchmark: str, reason: str) -> int:
    """Write the result of a module that cannot run here, say why, and return its exit code (0)."""
    write_result(path, {"benchmark": benchmark, "skipped": reason})
    print(f"{benchmark}: SKIPPED: {reason}")
    return 0


# --------------------------------------------------------------------------- command line


def module_parser(
    name: str,
    doc: str,
    quick_help: str,
    *,
    choices: Sequence[str] = (),
    default: Sequence[str] | None = None,
    kind: str = "group",
    only_help: str | None = None,
    retries: str | None = None,
    nice: bool = False,
) -> argparse.ArgumentParser:
    """The options every benchmark module takes: ``--quick`` (``quick_help`` says what it cuts)
    and ``--out`` (default ``benchmarks/results/<name>.json``); when there are ``choices`` to
    pick from, ``--only KIND,...``, read into ``args.<kind>s`` (a list; ``default``, else all
    of them, without it; an unknown name is a usage error naming the choices); ``--retries N`` when
    ``retries`` names what is repeated ("a run"); ``--nice N`` with ``nice`` (apply it with
    :func:`apply_nice`). ``doc`` is the module's docstring: its first paragraph is the description."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS / f"{name}.json",
        help=f"JSON result file (default: benchmarks/results/{name}.json)",
    )
    if choices:
        p.add_argument(
            "--only",
            dest=f"{kind}s",
            type=_selection(choices, kind),
            default=list(choices if default is None else default),
            metavar=f"{kind.upper()},...",
            help=only_help or f"run only these {kind}s: {', '.join(choices)}",
        )
    if retries:
        p.add_argument(
            "--retries",
            type=int,
            default=2,
            metavar="N",
            help=f"repeat {retries} that missed its target while other processes took more than "
            f"{PREEMPTED * 100:.0f}%% of its CPU time, up to N times; a passing attempt, else the least disturbed one, "
            "is kept (default: 2)",
        )
    if nice:
        p.add_argument(
            "--nice",
            type=int,
            default=0,
            metavar="N",
            help="run at this nice value (every child inherits it); a negative one (needs CAP_SYS_NICE) makes a "
            "shared machine's other processes yield to the benchmark, at their expense (default: 0)",
        )
    return p


def _selection(choices: Sequence[str], kind: str) -> Callable[[str], list[str]]:
    def names(text: str) -> list[str]:
        picked = [n.strip() for n in text.split(",") if n.strip()]
        unknown = sorted(set(picked) - set(choices))
        if unknown or not picked:
            raise argparse.ArgumentTypeError(
                f"unknown {kind}(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(choices)}"
            )
        return picked

    return names


def apply_nice(n: int) -> int:
    """Run this process (and every child forked after) at nice ``n``, saying so on stderr when
    that is refused (a negative value needs CAP_SYS_NICE); returns the nice value it runs at."""
    if n:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, n)
        except OSError as exc:
            print(f"cannot set nice {n}: {exc}; running at {os.getpriority(os.PRIO_PROCESS, 0)}", file=sys.stderr)
    return os.getpriority(os.PRIO_PROCESS, 0)


def run_main(fn: Callable[..., int], *args) -> int:
    """``fn(*args)``, with Ctrl-C ending it as 130 and one line instead of a traceback (the
    :class:`Workspace` in ``fn`` has killed the children and removed the segments by then)."""
    try:
        return fn(*args)
    except KeyboardInterrupt:
        print("\ninterrupted: children killed, shared memory removed", file=sys.stderr)
        return 130


def finish(
    args: argparse.Namespace, name: str, started: float, groups: list[str], machine: dict, config: dict, **fields
) -> int:
    """Write the module's result file: the fields every one has (``benchmark`` ``name``,
    ``quick``, ``groups``, ``started`` and ``seconds`` from ``started``, a ``time.time()``,
    ``machine``, ``config``), then ``fields``; say where; the exit code: 1 if it holds
    ``errors``, else 0."""
    doc = {
        "benchmark": name,
        "quick": args.quick,
        "groups": groups,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine,
        "config": config,
        **fields,
    }
    write_result(args.out, doc)
    print(f"wrote {args.out} ({doc['seconds']} s)")
    return 1 if doc.get("errors") else 0
