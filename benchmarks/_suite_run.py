"""Each benchmark module in its own process, so that one that crashes, hangs or is killed costs
only its own results.

A module runs as ``python -m benchmarks._suite_child``, in its own session (a timeout or Ctrl-C
stops its whole process group: SIGTERM first, which the modules' ``Workspace`` turns into a
clean-up, then SIGKILL). Its stdout (its own table) and stderr (its progress, shown live with
the module's name in front) go to ``<out>/<name>.log``. Its outcome is one of:

``OK``       exited 0 with a result file;
``ERRORS``   a result file, but some of its groups failed (exit 1; the rest are kept);
``SKIPPED``  the module is not there, or cannot run here (the result says why);
``CRASHED``  no usable result (an exception, a signal, an exit without writing one);
``TIMEOUT``  stopped after ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Outcome", "run_module", "FAILED"]

FAILED = ("ERRORS", "CRASHED", "TIMEOUT")


@dataclass
class Outcome:
    name: str
    status: str
    seconds: float
    reason: str = ""
    exit_code: int | None = None
    result: dict | None = None
    log: str = ""
    tail: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """What suite.json keeps about the run (the result itself is kept beside it)."""
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 1),
            "log": self.log,
        }


def _pump(stream, log, lock: threading.Lock, echo: str | None, tail: list[str]) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            log.write(line)
            log.flush()
        tail.append(line.rstrip("\n"))
        del tail[:-40]
        if echo is not None:
            print(f"{echo}{line}", end="", file=sys.stderr, flush=True)
    stream.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the module's process group (its clean-up runs), SIGKILL what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_error(tail: list[str]) -> str:
    """The line that says what went wrong (a traceback's last line), for the table."""
    for line in reversed(tail):
        text = line.strip()
        if text and not text.startswith(("File ", "^", "~")):
            return text[:300]
    return ""


def run_module(
    name: str,
    module: str,
    out_dir: Path,
    args: list[str],
    *,
    root: Path,
    env: dict[str, str],
    timeout: float,
    python_path: list[Path] = (),
) -> Outcome:
    """Run ``module``'s ``main(args + ["--out", out_dir/<name>.json])`` in a child process."""
    out = out_dir / f"{name}.json"
    log_path = out_dir / f"{name}.log"
    out.unlink(missing_ok=True)  # a stale result must not pass for this run's
    paths = [str(root), *map(str, python_path)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    child_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "benchmarks._suite_child", name, module, str(out), *args]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(['python', '-m', module, *args])}", file=sys.stderr)
    t0 = time.perf_counter()
    tail: list[str] = []
    lock = threading.Lock()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, log, lock, None, []), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, log, lock, f"  [{name}] ", tail), daemon=True),
        ]
        for t in pumps:
            t.start()
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
        except BaseException:  # Ctrl-C: the module is in its own session and did not get it
            _stop(proc)
            raise
        for t in pumps:
            t.join(5)
    seconds = time.perf_counter() - t0
    code = proc.returncode
    base = Outcome(name, "CRASHED", seconds, exit_code=code, log=str(log_path), tail=tail)
    if timed_out:
        base.status, base.reason = "TIMEOUT", f"stopped after {timeout:.0f} s"
        return base
    try:
        result = json.loads(out.read_text())
    except FileNotFoundError:
        result = None
    except ValueError as exc:
        base.reason = f"{out.name} is not valid JSON: {exc}"
        return base
    if result is not None and not isinstance(result, dict):
        base.reason = f"{out.name} holds a {type(result).__name__}, not an object"
        return base
    if result is not None and "skipped" in result:
        base.status, base.reason, base.result = "SKIPPED", str(result["skipped"]), result
        return base
    if result is None:
        died = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        base.reason = f"{died}, no result written" + (f": {_last_error(tail)}" if _last_error(tail) else "")
        return base
    base.result = result
    if code == 0:
        base.status = "OK"
    else:
        groups = ", ".join(str(e.get("group", "?")) for e in result.get("errors", [])) or f"exit code {code}"
        base.status, base.reason = "ERRORS", f"failed: {groups}"
    return base
