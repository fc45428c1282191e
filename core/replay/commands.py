"""``quayside replay``: backtest a strategy over the built-in synthetic market or a data file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_OUT = "results/replay"
SYNTHETIC_SYMBOLS = ["EURUSD", "AAPL", "ESZ6"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="backtest a strategy through the engine's kernels and a simulated venue",
        description=(
            "Replay market data through the same strategy and risk kernels as the live engine, with a "
            "simulated venue, and write orders, fills, positions, equity, a summary and a plot to --out. "
            "Without --data it runs on the built-in seeded synthetic market."
        ),
    )
    p.add_argument(
        "--data",
        type=Path,
        help="data file: a recording (.qsf), quote CSV, LOBSTER zip, Binance raw "
        "feed (.gz), Bitstamp orders (.csv.gz) or a pysystemtrade price CSV",
    )
    p.add_argument("--config", type=Path, help="replay configuration (TOML): strategy, risk, venue")
    p.add_argument("--strategy", help="strategy: crossover, market_maker, a module path or a .py file")
    p.add_argument("--instruments", help="comma-separated symbols to trade (default: the data's)")
    add_param_option(p)
    p.add_argument("--seed", type=int, default=7, help="synthetic market seed (default 7)")
    p.add_argument("--duration-s", type=float, default=3600.0, help="synthetic market length (default 3600 s)")
    p.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="malformed data rows: stop with an error naming file, line and field (default) or skip and count them",
    )
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def add_param_option(p: argparse.ArgumentParser) -> None:
    """``--param KEY=VALUE``, repeatable: the strategy parameters of a command that runs one
    (``quayside replay``, ``quayside demo``), read with :func:`parse_params`."""
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy parameter (VALUE is JSON, e.g. --param fast_span=10); repeatable",
    )


def parse_params(items: list[str]) -> dict:
    """The ``--param`` items as a dict: VALUE parsed as JSON, or kept as text where it is not
    JSON (``--param name=fast``); ValueError naming an item that is not KEY=VALUE."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param wants KEY=VALUE (VALUE as JSON), got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def main(args: argparse.Namespace) -> int:
    from quayside.core.engine.config import ConfigError, load_toml_config
    from quayside.core.replay.defaults import default_replay_config, load_events
    from quayside.core.replay.loaders import DataFormatError
    from quayside.core.replay.runner import ReplayConfig, run_replay

    try:
        config = load_toml_config(args.config, ReplayConfig) if args.config else None
        registry = None
        if config is not None and config.registry:
            from quayside.core.instruments import InstrumentRegistry

            registry = InstrumentRegistry.load(config.registry)
        events, registry, symbols, source = load_events(args.data, args.seed, args.duration_s, args.on_error, registry)
        config = default_replay_config(config, symbols, registry, args.data is None)
        overrides = {}
        if args.strategy:
            overrides["name"] = args.strategy
            overrides["params"] = {}
        if args.instruments:
            overrides["instruments"] = [s.strip() for s in args.instruments.split(",") if s.strip()]
        if args.param:
            overrides["params"] = {**(overrides.get("params", config.strategy.params)), **parse_params(args.param)}
        if overrides:
            strategy = config.strategy.model_copy(update=overrides)
            config = config.model_copy(update={"strategy": strategy})
        print(
            f"replay: {source}, {len(events):,} events; strategy {config.strategy.name} on "
            f"{', '.join(config.strategy.instruments)}",
            file=sys.stderr,
        )
        result = run_replay(events, config, registry, args.out, progress=not args.no_progress and sys.stderr.isatty())
    except (ConfigError, DataFormatError, FileNotFoundError, ValueError) as exc:
        print(f"quayside replay: {exc}", file=sys.stderr)
        return 2
    s = result.summary
    if args.json:
        print(json.dumps(s, indent=2, sort_keys=True))
        return 0
    sharpe = "n/a" if s["sharpe"] is None else f"{s['sharpe']:.2f}"
    lines = [
        f"  events        {s['events']:,} in {result.wall_seconds:.2f} s ({result.events_per_second / 1e6:.2f} M events/s)",
        f"  orders        {s['orders']:,}   fills {s['fills']:,}   denials {s['denials']:,} {s['denials_by_reason'] or ''}",
        f"  P&L           {s['pnl']:,.2f} (commissions {s['commissions']:,.2f})   by instrument "
        + ", ".join(f"{k} {v:,.2f}" for k, v in s["pnl_by_instrument"].items()),
        f"  Sharpe        {sharpe} ({s['sharpe_basis']})",
        f"  max drawdown  {s['max_drawdown']:,.2f}   turnover {s['turnover']:,.0f}",
        f"  results       {result.out_dir}/ (summary.json, orders/fills/denials/positions/equity.csv, equity.png, "
        "feed.qsf)",
    ]
    print("\n".join(lines))
    return 0
