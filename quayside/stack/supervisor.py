"""Start the parts of a :class:`~quayside.stack.plan.Plan` in order, watch them, stop them in reverse.

* Each part is ``python -m quayside.cli ARGS``, its output in ``logs/<part>.log`` of the run
  folder, in a process group of its own (a Ctrl-C in the terminal reaches only the supervisor,
  which then stops the parts in order) and with ``PR_SET_PDEATHSIG``: if the supervisor dies,
  however it dies, the kernel sends every part SIGTERM.
* A part is started only when the parts it comes after are ready (``Part.after``: the gateway
  after the simulated gateway and the engine, the relay and services after the engine), so a
  failure names the first part that could not come up.
* A part that exits while the stack runs stops the stack: the message names it, its exit code
  or signal, and its last log lines.
* Stopping (Ctrl-C, SIGTERM, ``--duration``, or a part's death) goes in reverse order, one
  layer of the dependency graph at a time (services and relay, then the gateway, then the engine
  and the simulated gateway): SIGTERM to each part's group, up to ``stop_timeout`` seconds, then
  SIGKILL. A second Ctrl-C kills at
  once. Then the rings this run used are removed from the shm directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from quayside.stack.plan import Part, Plan
from quayside.stack.watch import FeedWatch, creator_pid

__all__ = ["PartFailed", "Supervisor", "check_rings"]

_PR_SET_PDEATHSIG = 1
_TAIL_LINES = 12
_SLOW_START_S = 15.0


class PartFailed(RuntimeError):
    """A part died or did not become ready; ``str()`` says which, why, and its last lines."""

    def __init__(self, part: str, message: str):
        super().__init__(message)
        self.part = part


class _Stopped(Exception):
    """A stop was asked for (signal or duration) while starting."""


@dataclass
class Child:
    part: Part
    proc: subprocess.Popen
    log_path: Path
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def how_it_ended(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "is still running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def tail(self, n: int = _TAIL_LINES) -> list[str]:
        return [_readable(line) for line in self.output().splitlines()[-n:]]


def _readable(line: str) -> str:
    """A log line as a person reads it: loguru's JSON lines (services) shown as their text."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return json.loads(line)["text"].rstrip()
    return line


def _child_environment(extra: dict[str, str]) -> dict[str, str]:
    """The supervisor's environment without ``QUAYSIDE_*`` settings (each part's configuration is
    its file in the run folder; a variable meant for a container must not override it), except
    where segments and compiled kernels live."""
    keep = {"QUAYSIDE_SHM_DIR", "QUAYSIDE_CACHE_DIR"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUAYSIDE_") or k in keep}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_rings(plan: Plan) -> list[str]:
    """Refuse rings another live process made (another engine or demo on the same names);
    remove ones left by a process that is gone. Returns what was removed, for the record."""
    from quayside.core.feed.segment import RingLayoutError, RingType, attach_segment

    removed = []
    for role, path in plan.ring_paths.items():
        if not path.exists():
            continue
        kind = RingType.FEED if role == "feed" else RingType.COMMAND
        try:
            seg = attach_segment(path, kind, writable=False)
            pid = int(seg.header[0]["creator_pid"])
            seg.close()
        except (RingLayoutError, ValueError, OSError) as exc:
            raise PartFailed(
                "engine", f"{path} exists and is not a {role} ring this build can replace: {exc}"
            ) from None
        if pid != os.getpid() and _pid_alive(pid):
            raise PartFailed(
                "engine",
                f"the {role} ring {path} belongs to a running process (pid {pid}): another engine or demo "
                "uses these ring names; stop it, or choose other names with --ring-prefix",
            )
        path.unlink()
        removed.append(f"{path} (left by pid {pid}, which is gone)")
    return removed


class Supervisor:
    """Runs a plan: ``run()`` returns 0 after a clean stop, 1 when a part failed."""

    def __init__(
        self, plan: Plan, *, duration: float | None = None, stop_timeout: float = 15.0, out: TextIO | None = None
    ):
        self.plan = plan
        self.duration = duration
        self.stop_timeout = stop_timeout
        self.out = out or sys.stdout
        self.err = sys.stderr
        self.children: list[Child] = []
        self.watch: FeedWatch | None = None
        self.stop_reason: str | None = None
        self.force = False
        self._rings_checked = False
        self._preexec = _die_with_parent()

    # ------------------------------------------------------------------ output

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name
            print(f"\nquayside demo: {self.stop_reason}: stopping (again to kill at once)", file=self.err, flush=True)
        else:
            self.force = True

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        code = 0
        try:
            for note in check_rings(self.plan):
                self.say(f"  removed a stale ring: {note}")
            self._rings_checked = True
            self._bring_up()
            self._write_state()
            self._announce()
            self._live()
        except _Stopped:
            pass
        except PartFailed as exc:
            self._summary_line(final=True)
            print(f"quayside demo: {exc}", file=self.err, flush=True)
            code = 1
        finally:
            stopping = time.monotonic()
            self._stop_all()
            self._cleanup()
            for s, handler in previous.items():
                signal.signal(s, handler)
        if code == 0:
            self._summary_line(final=True)
            took = time.monotonic() - stopping
            why = self.stop_reason or f"after {self.duration:g} s"
            self.say(f"quayside demo: stopped ({why}) in {took:.1f} s; logs and recordings in {self.plan.run_dir}")
        return code

    def _spawn(self, part: Part) -> Child:
        log_path = self.plan.run_dir / "logs" / f"{part.name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "quayside.cli", *part.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_environment(part.env),
                cwd=self.plan.run_dir,
                process_group=0,
                preexec_fn=self._preexec,
            )
        child = Child(part, proc, log_path, time.monotonic())
        self.children.append(child)
        return child

    def _bring_up(self) -> None:
        """Start each part once the parts it comes after are ready; wait until all are."""
        pending = list(self.plan.parts)
        starting: list[Child] = []
        ready: set[str] = set()
        slow_noted = False
        while pending or starting:
            for part in [p for p in pending if set(p.after) <= ready]:
                pending.remove(part)
                starting.append(self._spawn(part))
            self._check_children()
            if self.stop_reason:
                raise _Stopped
            if self.watch is not None:
                self.watch.poll()
            now = time.monotonic()
            for child in list(starting):
                detail = getattr(self, f"_ready_{child.part.ready}")(child)
                if detail:
                    starting.remove(child)
                    ready.add(child.part.name)
                    self._ready(child, detail)
                elif now > child.started + child.part.timeout:
                    what = f"was not ready after {child.part.timeout:g} s"
                    raise PartFailed(child.part.name, self._failure(child, what))
                elif child.part.name == "engine" and not slow_noted and now - child.started > _SLOW_START_S:
                    self.say("  … the engine is still starting (its first run compiles the kernels: a few minutes)")
                    slow_noted = True
            time.sleep(0.05)

    def _ready(self, child: Child, detail: str) -> None:
        took = time.monotonic() - child.started
        self.say(f"  {child.part.name:<11} ready  pid {child.pid:<7} {took:5.1f} s  {detail}")
        if child.part.name == "engine":
            for line in self._engine_banner(child):
                self.say(f"      {line}")

    # ------------------------------------------------------------------ readiness, one per Part.ready

    def _ready_listening(self, child: Child) -> str | None:
        for line in child.output().splitlines():
            if line.startswith("simgateway listening on "):
                return line.removeprefix("simgateway listening on ")
        return None

    def _ready_engine(self, child: Child) -> str | None:
        if self.watch is None:
            path = self.plan.ring_paths["feed"]
            if creator_pid(path) != child.pid:
                return None
            self.watch = FeedWatch(path, self.plan.registry, self.plan.symbols)
            self.watch.poll()
        if not self.watch.engine_started:
            return None
        return f"cpu {self.plan.cpu}, wait strategy {self.plan.wait_strategy} ({self.plan.wait_reason})"

    def _ready_gateway(self, child: Child) -> str | None:
        if self.watch is not None and self.watch.broker_connected:
            return f"connected to the simulated IB gateway on 127.0.0.1:{self.plan.ports['simgateway']}"
        return None

    def _ready_relay(self, child: Child) -> str | None:
        for line in child.output().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "ready":
                    return f"UDP to {event['dest']}, stream {event['stream_id']}"
        return None

    def _ready_http(self, child: Child) -> str | None:
        try:
            with urllib.request.urlopen(child.part.health, timeout=2) as response:
                return child.part.url if response.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    @staticmethod
    def _engine_banner(child: Child) -> list[str]:
        lines = []
        for line in child.output().splitlines():
            if "engine.commands:_run" in line and " - " in line:
                lines.append(line.split(" - ", 1)[1].rstrip())
        return lines

    # ------------------------------------------------------------------ running

    def _check_children(self) -> None:
        for child in self.children:
            if not child.alive():
                raise PartFailed(child.part.name, self._failure(child, "stopped unexpectedly"))

    def _failure(self, child: Child, what: str) -> str:
        ended = "" if child.alive() else f" ({child.how_it_ended()})"
        lines = "\n".join(f"    {line}" for line in child.tail()) or "    (no output)"
        return f"the {child.part.name} {what}{ended}; its last lines ({child.log_path}):\n{lines}\nstopping the stack."

    def _announce(self) -> None:
        dashboard = self.plan.part("dashboard")
        self.say()
        if dashboard is not None:
            self.say(f"Dashboard: {dashboard.url}")
            if self.plan.token:
                origin = "generated for this run, not stored" if self.plan.token_generated else "from --dashboard-token"
                self.say(f"Operator token for the controls (kill switch): {self.plan.token}  ({origin})")
        else:
            for note in self.plan.notes:
                self.say(f"Note: {note}")
        if self.plan.part("pnl") is None:
            feed, control = self.plan.rings["feed"], self.plan.rings["control"]
            self.say(
                "Core only: start the support side in containers against this engine (docs/demo.md):\n"
                f"  QUAYSIDE_UID={os.getuid()} QUAYSIDE_GID={os.getgid()} QUAYSIDE_FEED__RING={feed} "
                f"QUAYSIDE_RISK__CONTROL__RING={control} QUAYSIDE_DASHBOARD__CONTROL_RING={control} "
                "docker-compose -f compose.yaml up --build"
            )
        until = f"for {self.duration:g} s" if self.duration else "until Ctrl-C"
        self.say(f"Running {until}; one summary line {'a second' if self.out.isatty() else 'every 5 s'}:")

    def _live(self) -> None:
        interval = 1.0 if self.out.isatty() else 5.0
        deadline = None if self.duration is None else time.monotonic() + self.duration
        next_line = time.monotonic() + interval
        while True:
            self._check_children()
            self.watch.poll()
            now = time.monotonic()
            if self.stop_reason or (deadline is not None and now >= deadline):
                return
            if now >= next_line:
                self._summary_line()
                next_line = now + interval
            time.sleep(0.1)

    def _summary_line(self, final: bool = False) -> None:
        if self.watch is None:
            return
        with contextlib.suppress(Exception):  # the ring may be gone if the engine died
            self.watch.poll()
        line = self.watch.line()
        if self.out.isatty():  # refreshed in place (cut to the terminal's width); the last one stays
            if not final:
                line = line[: shutil.get_terminal_size().columns - 1]
            print(f"\r\033[K{line}", end="\n" if final else "", file=self.out, flush=True)
            return
        self.say(("final: " if final else "") + line)

    def _write_state(self) -> None:
        """``stack.json`` in the run folder: pids, addresses, rings and logs of this run (for
        scripts and tests; no secrets)."""
        state = {
            "supervisor_pid": os.getpid(),
            "run_dir": str(self.plan.run_dir),
            "rings": self.plan.rings,
            "ring_paths": {k: str(v) for k, v in self.plan.ring_paths.items()},
            "ports": self.plan.ports,
            "cpu": self.plan.cpu,
            "wait_strategy": self.plan.wait_strategy,
            "parts": {
                c.part.name: {"pid": c.pid, "url": c.part.url, "health": c.part.health, "log": str(c.log_path)}
                for c in self.children
            },
        }
        (self.plan.run_dir / "stack.json").write_text(json.dumps(state, indent=2) + "\n")

    # ------------------------------------------------------------------ stopping

    def _depth(self, name: str) -> int:
        part = self.plan.part(name)
        return 0 if part is None or not part.after else 1 + max(self._depth(a) for a in part.after)

    def _stop_all(self) -> None:
        layers: dict[int, list[Child]] = {}
        for child in self.children:
            layers.setdefault(self._depth(child.part.name), []).append(child)
        for depth in sorted(layers, reverse=True):
            self._stop(layers[depth])

    def _stop(self, children: list[Child]) -> None:
        """SIGTERM to each child's group, wait up to ``stop_timeout``, then SIGKILL the group."""
        for child in children:
            if child.alive() and not self.force:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while any(c.alive() for c in children) and time.monotonic() < deadline and not self.force:
            time.sleep(0.02)
        for child in children:
            alive = child.alive()
            with contextlib.suppress(ProcessLookupError):  # the group: the part and anything it started
                os.killpg(child.pid, signal.SIGKILL)
            child.proc.wait()
            if alive:
                print(f"quayside demo: the {child.part.name} did not stop in time: killed", file=self.err, flush=True)
        if self.watch is not None and any(c.part.name == "engine" for c in children):
            with contextlib.suppress(Exception):
                self.watch.poll()  # the engine's last heartbeat and stop record

    def _cleanup(self) -> None:
        if self.watch is not None:
            self.watch.close()
        if not self._rings_checked:
            return  # the rings belong to someone else
        for path in self.plan.ring_paths.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
