"""``quayside demo``: the whole stack on this machine, as plain processes, with no IB account and
no Docker: the simulated IB gateway replaying the built-in synthetic market (or ``--data FILE``),
the broker gateway, the engine pinned to a core, the UDP feed relay, the support services (P&L,
risk, recorder, metrics) and the dashboard. Prints the dashboard's address and a live summary
line; stops everything, in reverse order, on Ctrl-C or after ``--duration`` seconds.
``--core-only`` starts only the simulated gateway, gateway, engine and relay, on the standard
ring names, for the support side in containers (``docker-compose -f compose.yaml up``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_RUN_DIR = "results/demo"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    from quayside.core.broker.sim.commands import _speed
    from quayside.core.replay.commands import add_param_option

    p = sub.add_parser(
        "demo",
        help="the whole stack as processes on this machine (simulated IB, engine, services, dashboard)",
        description=__doc__,
    )
    p.add_argument(
        "--data",
        type=Path,
        help="data file to replay instead of the synthetic market (any format `quayside replay` reads); "
        "replayed in a loop",
    )
    p.add_argument("--duration", type=_positive, help="stop after S seconds of running (default: until Ctrl-C)")
    p.add_argument("--strategy", default="crossover", help="crossover (default), market_maker, a module or a .py file")
    add_param_option(p)
    p.add_argument("--speed", type=_speed, default=1.0, help="market speed, times real time (default 1; 'max')")
    p.add_argument("--seed", type=int, default=7, help="synthetic market seed (default 7)")
    p.add_argument(
        "--core-only",
        action="store_true",
        help="only the simulated gateway, gateway, engine and relay (support side from compose.yaml)",
    )
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path(DEFAULT_RUN_DIR),
        help=f"configurations, logs and recordings of the run (default {DEFAULT_RUN_DIR})",
    )
    p.add_argument(
        "--dashboard-token",
        help="operator token for the dashboard's controls (default: a random one, printed, never stored)",
    )
    p.add_argument(
        "--ring-prefix",
        help="ring names PREFIX-inbound, -outbound, -control, -feed (default: private to the run; "
        "'quayside', the standard names, with --core-only)",
    )
    p.add_argument("--cpu", type=int, help="core to pin the engine to (default: an isolated one, else the last)")
    p.add_argument(
        "--wait-strategy",
        choices=["busy-spin", "spin-yield", "sleep", "auto"],
        help="engine idle strategy (default: auto on an isolated core, sleep on a shared one)",
    )
    p.add_argument(
        "--relay-dest", default="127.0.0.1:7000", metavar="HOST:PORT", help="UDP destination of the feed relay"
    )
    p.add_argument(
        "--startup-timeout",
        type=_positive,
        default=600.0,
        help="seconds the engine may take to start (its first run compiles kernels; default 600)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from quayside.core.replay.commands import parse_params
    from quayside.stack.plan import DemoOptions, PlanError, build_plan
    from quayside.stack.supervisor import Supervisor

    try:
        params = parse_params(args.param)
    except ValueError as exc:
        print(f"quayside demo: {exc}", file=sys.stderr)
        return 2
    options = DemoOptions(
        run_dir=args.run_dir,
        data=args.data,
        duration=args.duration,
        strategy=args.strategy,
        params=params,
        speed=args.speed,
        seed=args.seed,
        core_only=args.core_only,
        dashboard=not args.no_dashboard,
        dashboard_token=args.dashboard_token,
        ring_prefix=args.ring_prefix,
        cpu=args.cpu,
        wait_strategy=args.wait_strategy,
        relay_dest=args.relay_dest,
        startup_timeout=args.startup_timeout,
    )
    try:
        plan = build_plan(options)
    except PlanError as exc:
        print(f"quayside demo: {exc}", file=sys.stderr)
        return 2
    print(f"quayside demo: the stack as processes on this machine; run folder {plan.run_dir}", flush=True)
    print(f"  market: {plan.market} at {args.speed:g}x; strategy {args.strategy} on {', '.join(plan.symbols)}")
    print(f"  rings: {', '.join(str(p) for p in plan.ring_paths.values())}", flush=True)
    return Supervisor(plan, duration=args.duration).run()
