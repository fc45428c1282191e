"""Quayside's replay beside the backtesters users would pick instead, on the same quotes.

    python -m benchmarks.peers [--quick] [--out PATH] [--only PEER,...]
    make bench-peers          (creates .venv-peers from requirements-peers.lock, then runs this)

The crossover (``core/strategies/crossover.py``, with the engine benchmark's parameters and
replay config, ``benchmarks/_engine_replay.py``) is backtested on the quotes the engine
benchmark replays (``benchmarks/_engine_data.py``: derived from the real EURUSD quotes in
``../shared/data``, or the synthetic market) by

* Quayside: ``run_replay`` end to end, and its replay loop alone (the engine benchmark's own
  measurement functions);
* hftbacktest (``_peers_hft.py``): with its hash-map and its ROI-vector market depth;
* NautilusTrader (``_peers_nautilus.py``): a ``BacktestEngine`` and a ``Strategy`` subclass.

Each system runs in its own forked process, which converts the quotes to its own format and
warms up (compiles) untimed, then backtests on request; runs are interleaved across systems.
The figure is events per CPU-second: the quotes backtested over ``time.process_time()`` of the
process doing it (all its threads), the median of the runs, so the other processes on a shared
machine count for little, and NautilusTrader may run fewer events than the others. Every
system's order and fill counts are compared with Quayside's on the same events.

The peers are an optional dependency group. Where they are not installed, this re-runs itself
in ``.venv-peers`` when that exists; otherwise it writes a result saying SKIPPED and why.
Prints one table and writes a JSON file (default ``benchmarks/results/peers.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from benchmarks import _peers_report as report
from benchmarks._common import (
    Child,
    ChildError,
    Workspace,
    cpu_busy,
    finish,
    machine_info,
    module_parser,
    run_main,
    skipped,
)

ROOT = Path(__file__).resolve().parents[1]
PEERS_VENV = ROOT / ".venv-peers"
#: peer -> the distribution that provides it
PEERS = {"hftbacktest": "hftbacktest", "nautilus": "nautilus_trader"}
#: system -> (peer it needs, or None for Quayside)
SYSTEMS = {
    "quayside": None,
    "hftbacktest_hashmap": "hftbacktest",
    "hftbacktest_roivec": "hftbacktest",
    "nautilus": "nautilus",
}

# name: (full, quick)
PLAN = {
    # Quayside and hftbacktest; not fewer in a quick run: run_replay's fixed cost per call (about
    # 20 ms of CPU) would weigh on a short stream, and these runs take seconds
    "events": (2_000_000, 2_000_000),
    "nautilus_events": (200_000, 50_000),  # NautilusTrader: about 20 us of CPU per quote
    "runs": (3, 2),
}
READY_TIMEOUT_S = 900.0  # conversion and compile in every child at once, on a shared machine
RUN_TIMEOUT_S = 900.0


def plan(quick: bool) -> dict:
    return {k: v[1] if quick else v[0] for k, v in PLAN.items()}


def crossover_params() -> dict:
    """The engine benchmark's crossover parameters, in the form its kernel uses them
    (``crossover.params_array``): EMA weights 2 / (span + 1), threshold as a fraction, warm-up
    of ``slow_span`` quotes, and the target position."""
    from benchmarks._engine_replay import ORDER_QTY, PARAMS

    return {
        "fast_alpha": 2.0 / (PARAMS["fast_span"] + 1),
        "slow_alpha": 2.0 / (PARAMS["slow_span"] + 1),
        "threshold": PARAMS["threshold_bps"] * 1e-4,
        "warmup": PARAMS["slow_span"],
        "order_qty": ORDER_QTY,
        "order_type": "ioc_limit at the touch (NautilusTrader: market IOC)",
    }


class QuaysideRunner:
    """Quayside on ``records``: ``run(n)`` times ``run_replay`` on the first ``n`` quotes (CPU
    time of this process around the engine benchmark's ``run_runner``), then its replay loop
    alone (``run_kernel_loop``'s CPU time inside the kernel calls)."""

    def __init__(self, records, registry, symbol: str):
        from benchmarks._engine_replay import replay_config, run_kernel_loop, run_runner

        self.records, self.registry = records, registry
        self.config = replay_config(symbol)
        self._runner, self._loop = run_runner, run_kernel_loop
        t0 = time.perf_counter()
        self.run(min(20_000, len(records)))
        self.info = {"version": importlib.metadata.version("quayside"), "warm_s": round(time.perf_counter() - t0, 3)}

    def run(self, n: int) -> dict:
        records = self.records[:n]
        c0, t0 = time.process_time(), time.perf_counter()
        r = self._runner(records, self.config, self.registry)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        loop = self._loop(records, self.config, self.registry)
        return {
            "events": n,
            "cpu_s": cpu,
            "wall_s": wall,
            "orders": r["orders"],
            "fills": r["fills"],
            "denials": r["denials"],
            "final_position": sum(r["final_position"].values()),
            "kernel_cpu_s": loop["kernel_cpu_s"],
            "kernel_s": loop["kernel_s"],
        }


def _runner(system: str, data, params: dict, events: int):
    records = data.records[:events]
    if system == "quayside":
        return QuaysideRunner(records, data.registry, data.symbols[0])
    if system.startswith("hftbacktest_"):
        from benchmarks._peers_hft import HftRunner

        return HftRunner(records, params, system.removeprefix("hftbacktest_"))
    from benchmarks._peers_nautilus import NautilusRunner

    return NautilusRunner(records, params)


def _serve(conn, pinned: bool, system: str, data, params: dict, events: int) -> None:
    """A system's process: prepare its first ``events`` quotes (untimed), say ready, then one
    backtest per request."""
    runner = _runner(system, data, params, events)
    conn.send({"ready": runner.info})
    while (n := conn.recv()) is not None:
        conn.send(runner.run(n))


# --------------------------------------------------------------------------- the run


def installed() -> dict[str, dict]:
    """Each peer: whether this Python can import it, and its version."""
    out = {}
    for peer, dist in PEERS.items():
        found = importlib.util.find_spec(dist) is not None
        try:
            version = importlib.metadata.version(dist) if found else None
        except importlib.metadata.PackageNotFoundError:
            version = None
        out[peer] = {"distribution": dist, "installed": found, "version": version}
    return out


def _in_peers_venv() -> bool:
    return Path(sys.prefix).resolve() == PEERS_VENV.resolve()


def measure(ws: Workspace, systems: list[str], data, cfg: dict, errors: list[dict]) -> dict[str, dict]:
    """Start one process per system, wait until all are ready, then ``cfg["runs"]`` rounds of
    one backtest each (interleaved); Quayside also backtests NautilusTrader's shorter stream
    once, for the trade counts. A system that fails is dropped and its error kept."""
    params = crossover_params()
    n_events = min(cfg["events"], len(data.records))
    n_nautilus = min(cfg["nautilus_events"], n_events)
    size = {s: n_nautilus if s == "nautilus" else n_events for s in systems}
    children = {s: Child(ws, f"peers-{s}", None, _serve, s, data, params, size[s]) for s in systems}
    out: dict[str, dict] = {}
    for s, child in list(children.items()):
        try:
            out[s] = {"info": child.recv(READY_TIMEOUT_S)["ready"], "runs": []}
            print(f"  {s} ready: {out[s]['info']}", file=sys.stderr, flush=True)
        except ChildError as exc:
            _drop(s, children, errors, exc)
    for i in range(cfg["runs"]):
        for s, child in list(children.items()):
            n = size[s]
            try:
                child.send(n)
                r = child.recv(RUN_TIMEOUT_S)
            except (ChildError, OSError) as exc:
                _drop(s, children, errors, exc)
                continue
            out[s]["runs"].append(r)
            print(
                f"  run {i + 1}/{cfg['runs']} {s}: {n:,} events, {r['cpu_s']:.3f} CPU s, {r['wall_s']:.3f} s",
                file=sys.stderr,
                flush=True,
            )
    if "quayside" in children and "nautilus" in out and n_nautilus != n_events:
        try:
            children["quayside"].send(n_nautilus)
            out["quayside"]["at_nautilus_events"] = children["quayside"].recv(RUN_TIMEOUT_S)
        except (ChildError, OSError) as exc:
            errors.append({"group": "quayside", "error": f"counts on {n_nautilus:,} events: {exc}"})
    for child in children.values():
        with contextlib.suppress(OSError):
            child.send(None)
        child.stop(10.0)
    return {s: v for s, v in out.items() if v["runs"]}


def _drop(system: str, children: dict, errors: list[dict], exc: Exception) -> None:
    print(f"  {system} failed: {exc}", file=sys.stderr, flush=True)
    errors.append({"group": system, "error": str(exc)})
    child = children.pop(system)
    if child.proc.is_alive():
        child.proc.kill()
    child.proc.join(5)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = module_parser(
        "peers",
        __doc__,
        "fewer runs, NautilusTrader on fewer events (a minute or two)",
        choices=tuple(PEERS),
        kind="peer",
        only_help=f"measure only these peers: {', '.join(PEERS)}",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    peers = installed()
    if not any(peers[p]["installed"] for p in args.peers):
        venv_python = PEERS_VENV / "bin" / "python"
        if venv_python.exists() and not _in_peers_venv():
            print(f"peers not installed in {sys.prefix}: running in {PEERS_VENV.name}", file=sys.stderr, flush=True)
            return subprocess.call([str(venv_python), "-m", "benchmarks.peers", *argv], cwd=ROOT)
        missing = ", ".join(peers[p]["distribution"] for p in args.peers)
        return skipped(
            args.out,
            "peers",
            f"{missing} not installed in {sys.prefix} (an optional dependency group): `make bench-peers` "
            f"installs them into {PEERS_VENV.name} from requirements-peers.lock and runs this benchmark there",
        )
    return run_main(_main, args, peers)


def _main(args: argparse.Namespace, peers: dict[str, dict]) -> int:
    from benchmarks._engine_data import derived_quotes

    cfg = plan(args.quick)
    started = time.time()
    machine = machine_info(ROOT)
    machine["peers"] = {p: v["version"] for p, v in peers.items()}
    systems = [s for s, need in SYSTEMS.items() if need is None or (need in args.peers and peers[need]["installed"])]
    t0 = time.perf_counter()
    data = derived_quotes(cfg["events"])
    print(f"data: {data.description} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    errors: list[dict] = []
    background = cpu_busy()
    print(f"[{time.strftime('%H:%M:%S')}] {', '.join(systems)} ...", file=sys.stderr, flush=True)
    with Workspace() as ws:
        try:
            results = measure(ws, systems, data, cfg, errors)
        except ChildError as exc:
            errors.append({"group": "peers", "error": str(exc)})
            results = {}
        except Exception:
            errors.append({"group": "peers", "error": traceback.format_exc()})
            results = {}
    machine["loadavg_at_end"] = list(os.getloadavg())
    rows = report.rows(results, data.description)
    targets = report.evaluate(results, args.peers, peers)
    report.annotate(rows, targets)
    notes = report.notes(machine, results, background, data)
    print()
    print(report.format_table(rows))
    print()
    print(report.format_targets(targets))
    for note in notes:
        print(f"note: {note}")
    return finish(
        args,
        "peers",
        started,
        systems,
        machine,
        cfg | {"strategy": crossover_params()},
        data=data.source | {"description": data.description},
        peers=peers,
        measurements=rows,
        targets=targets,
        background_busy_before=background,
        errors=errors,
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit(main())
