"""The C floor: ``benchmarks/c/spsc_ring.c`` compiled with gcc at run time and driven here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from benchmarks._common import CPU_A, CPU_B, ChildError, Workspace, latency_stats

__all__ = ["CFloor"]

SOURCE = Path(__file__).resolve().parent / "c" / "spsc_ring.c"


class CFloor:
    """Compiles the C ring once per run into the workspace's temporary folder."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        gcc = shutil.which("gcc") or shutil.which("cc")
        if gcc is None:
            raise ChildError("no C compiler (gcc or cc) on PATH: the C floor cannot be measured")
        self.binary = ws.tmp / "spsc_ring"
        cmd = [gcc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(self.binary), str(SOURCE)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise ChildError(f"compiling {SOURCE.name} failed:\n{out.stderr}")
        self.compiler = " ".join([Path(gcc).name, *cmd[1:4]])

    def _run(self, args: list[str], timeout: float) -> dict:
        proc = subprocess.Popen([str(self.binary), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:  # a timeout or Ctrl-C: the forked C child dies with its parent
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise ChildError(f"spsc_ring {args[0]} failed ({proc.returncode}): {err.strip()} {out.strip()}")
        return json.loads(out)

    def pingpong(self, iterations: int, warmup: int, mode: str = "pingpong") -> tuple[np.ndarray, dict]:
        """Round trips through two C rings (``pingpong``) or one bare cache line each way
        (``lineping``); returns the raw samples in ns and the program's summary."""
        samples = self.ws.tmp / f"{mode}.bin"
        ring = self.ws.ring(f"c-{mode}")
        args = [mode, ring, str(iterations), str(warmup), str(CPU_A), str(CPU_B), str(samples)]
        info = self._run(args, timeout=60 + iterations * 1e-5)
        data = np.fromfile(samples, dtype=np.int64)
        samples.unlink()
        if info["errors"]:
            raise ChildError(f"C {mode}: {info['errors']} echoes came back wrong")
        return data, info

    def throughput(self, records: int, batch: int, capacity: int) -> dict:
        args = ["throughput", self.ws.ring("c-throughput"), str(records), str(batch), str(capacity)]
        info = self._run([*args, str(CPU_A), str(CPU_B)], timeout=60 + records * 1e-7)
        if info["errors"]:
            raise ChildError(f"C throughput: {info['errors']} records had a wrong sequence number")
        return info


def summarise_pingpong(trials: list[np.ndarray]) -> dict:
    """Pooled percentiles over interleaved trials, plus each trial's p50 (to show the spread)."""
    stats = latency_stats(np.concatenate(trials))
    stats["trial_p50_ns"] = [int(np.percentile(t, 50, method="inverted_cdf")) for t in trials]
    return stats
