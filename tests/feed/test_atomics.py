"""The memory-ordering claim of ``atomics.py``, proved with two processes and the compiler.

A child process spins in a jitted loop on a word of a shared segment; the parent changes the
word once the child has said it is about to spin. With ``load_acquire`` the child sees the
change. With a plain ``words[i]`` load (the negative control) it never does: LLVM assumes the
word cannot change inside a loop that stores nothing, and compiles the loop to ``for (;;);``.
The generated IR and assembly are checked too, so the claim does not rest on timing alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _stress_spin import READY, SPIN, spin_acquire_nb, spin_naive_nb
from numba import njit

from quayside.core.feed.atomics import fence_acquire, fence_release, fetch_add, load_acquire, now_ns, store_release
from quayside.core.feed.segment import RingType, create_segment

SCRIPT = Path(__file__).with_name("_stress_spin.py")
START_TIMEOUT = 120.0  # the child imports numba and compiles its loop first; generous on a loaded host
SEE_TIMEOUT = 60.0  # the acquire loop sees the store in microseconds; this only bounds a failure
NAIVE_GRACE = 3.0  # the naive loop gets this long to (not) see the store
SIGNATURE = "(int64[::1],)"


def _start_spinner(path: Path, kind: str, words: np.ndarray) -> subprocess.Popen:
    """Start the child and wait until its jitted loop has set READY (it is about to spin)."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(path), kind], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + START_TIMEOUT
    while words[READY] != 1:
        if proc.poll() is not None:
            pytest.fail(f"spinner exited with code {proc.returncode} before READY:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"spinner not READY after {START_TIMEOUT} s")
        time.sleep(0.005)
    return proc


@pytest.fixture
def flag(shm_dir):
    seg = create_segment(shm_dir / "flag", RingType.COMMAND, 2)
    seg.words[SPIN] = 7
    yield seg
    seg.close()


def test_acquire_load_sees_a_store_from_another_process(flag):
    proc = _start_spinner(flag.path, "acquire", flag.words)
    try:
        time.sleep(0.2)  # the same head start as the negative control gets
        flag.words[SPIN] = 42
        out, err = proc.communicate(timeout=SEE_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "42"


def test_plain_load_never_sees_the_store_negative_control(flag):
    """The hazard is real: without an atomic load the same loop spins forever."""
    proc = _start_spinner(flag.path, "naive", flag.words)
    try:
        time.sleep(0.2)
        flag.words[SPIN] = 42
        with pytest.raises(subprocess.TimeoutExpired):
            proc.communicate(timeout=NAIVE_GRACE)
        assert proc.poll() is None, "the naive loop must still be spinning"
    finally:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode == -9
    assert "42" not in out


# --------------------------------------------------------------------------- the generated code


def _native_function_ir(dispatcher) -> str:
    """The optimised LLVM IR of the kernel itself (not its CPython wrapper)."""
    dispatcher.compile(SIGNATURE)
    ir = dispatcher.inspect_llvm(dispatcher.signatures[0])
    name = dispatcher.py_func.__name__
    for chunk in ir.split("\ndefine ")[1:]:
        header = chunk.split("\n", 1)[0]
        if name in header and "cpython" not in header:
            return chunk[: chunk.index("\n}")]
    raise AssertionError(f"no native function for {name} in its IR")


def _self_loops(function_ir: str) -> list[str]:
    """The bodies of the basic blocks that branch back to themselves (the spin loops)."""
    blocks = re.split(r"\n(?=[\w.]+:)", function_ir)
    loops = []
    for block in blocks:
        label = block.split(":", 1)[0].strip()
        terminator = block.rstrip().rsplit("\n", 1)[-1]
        if terminator.strip().startswith("br ") and f"label %{label}" in terminator:
            loops.append(block)
    return loops


def test_plain_load_is_hoisted_out_of_the_spin_loop():
    loops = _self_loops(_native_function_ir(spin_naive_nb))
    assert loops, "expected the naive spin loop to survive as a loop"
    assert all("load" not in block for block in loops), loops  # nothing is read inside the loop


def test_acquire_load_stays_inside_the_spin_loop():
    loops = _self_loops(_native_function_ir(spin_acquire_nb))
    assert loops
    for block in loops:
        assert re.search(r"load atomic i64, ptr %[\w.]+ acquire", block), block


def test_plain_load_loop_compiles_to_a_jump_to_itself():
    spin_naive_nb.compile(SIGNATURE)
    asm = spin_naive_nb.inspect_asm(spin_naive_nb.signatures[0])
    if not re.search(r"\bjmp\b", asm):
        pytest.skip("assembly check written for x86-64")
    assert re.search(r"^(\.LBB\w+):\n(?:\s+\.p2align.*\n)?\s+jmp\s+\1$", asm, re.M), asm[:2000]


# --------------------------------------------------------------------------- single-process semantics


@njit
def _roundtrip_nb(words):
    store_release(words, 0, 5)
    fence_release()
    a = load_acquire(words, 0)
    fence_acquire()
    old = fetch_add(words, 1, 3)
    return a, old, words[1]


def test_intrinsics_read_and_write_the_element_they_name():
    words = np.zeros(4, dtype=np.int64)
    words[1] = 10
    assert _roundtrip_nb(words) == (5, 10, 13)
    assert list(words) == [5, 13, 0, 0]


def test_intrinsics_reject_anything_but_a_1d_int64_array():
    from numba.core.errors import TypingError

    with pytest.raises((TypeError, TypingError), match="1-d int64 array"):
        njit(lambda a: load_acquire(a, 0))(np.zeros(2, dtype=np.float64))


def test_now_ns_is_the_realtime_clock():
    t = njit(lambda: now_ns())()
    assert abs(t - time.time_ns()) < 5_000_000_000
