"""``quayside engine ...`` (run the live engine) and ``quayside control ...`` (operator commands
through the control ring: whoever can write the ring's file in /dev/shm may use them)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    engine = sub.add_parser("engine", help="the live engine process", description=__doc__)
    esub = engine.add_subparsers(dest="engine_command", required=True, metavar="SUBCOMMAND")
    p = esub.add_parser("run", help="start the engine: pin, warm up, run the loop until SIGTERM/Ctrl-C")
    p.add_argument("--config", type=Path, help="engine configuration (TOML); default: built-in")
    p.add_argument("--cpu", type=int, help="pin to this CPU (overrides the configuration)")
    p.add_argument("--wait-strategy", choices=["busy-spin", "spin-yield", "sleep", "auto"], help="override")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=_run)
    p = esub.add_parser("check-config", help="validate an engine configuration and print it resolved")
    p.add_argument("config", type=Path)
    p.set_defaults(func=_check)

    control = sub.add_parser("control", help="send a control command to a running engine")
    control.add_argument("--ring", default="quayside-control", help="control ring name or path")
    control.add_argument("--instrument", type=int, default=0, help="instrument id scope (0 = all)")
    control.add_argument("--strategy-id", type=int, default=0, help="strategy id scope (0 = all)")
    csub = control.add_subparsers(dest="control_command", required=True, metavar="COMMAND")
    for name, what in [
        ("halt", "halt trading and cancel all working orders in scope"),
        ("resume", "back to ACTIVE (also clears a fill-count latch)"),
        ("reduce-only", "only position-reducing orders"),
        ("cancel-all", "cancel working orders in scope, keep the trading state"),
    ]:
        csub.add_parser(name, help=what).set_defaults(func=_control)
    p = csub.add_parser("set-limit", help="change one risk limit (LimitId name, value)")
    p.add_argument("limit", help="e.g. MAX_ORDER_QTY, PRICE_COLLAR_PCT, MAX_MESSAGES_PER_WINDOW")
    p.add_argument("value", type=float)
    p.set_defaults(func=_control)


def _load(args) -> object:
    from quayside.core.engine.config import EngineConfig, load_toml_config

    config = load_toml_config(args.config, EngineConfig) if args.config else EngineConfig()
    update = {}
    if getattr(args, "cpu", None) is not None:
        update["cpu"] = args.cpu
    if getattr(args, "wait_strategy", None):
        update["wait_strategy"] = args.wait_strategy
    return config.model_copy(update=update) if update else config


def _run(args: argparse.Namespace) -> int:
    from loguru import logger

    from quayside.core.engine.config import ConfigError
    from quayside.core.engine.process import Engine

    try:
        engine = Engine(_load(args))
    except ConfigError as exc:
        print(f"quayside engine: {exc}", file=sys.stderr)
        return 2
    for line in engine.banner():
        logger.info(line)
    try:
        handled = engine.run(args.duration)
    finally:
        engine.close()
    logger.info("engine stopped after {} inbound records", handled)
    return 0


def _check(args: argparse.Namespace) -> int:
    from quayside.core.engine.config import ConfigError

    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"quayside engine: {exc}", file=sys.stderr)
        return 2
    print(config.model_dump_json(indent=2))
    return 0


def _control(args: argparse.Namespace) -> int:
    from quayside.core import wire
    from quayside.core.feed.control import ControlSender

    command = {
        "halt": wire.ControlCommand.HALT,
        "resume": wire.ControlCommand.RESUME,
        "reduce-only": wire.ControlCommand.REDUCE_ONLY,
        "cancel-all": wire.ControlCommand.CANCEL_ALL,
        "set-limit": wire.ControlCommand.SET_LIMIT,
    }[args.control_command]
    limit_id, value = 0, 0.0
    if command == wire.ControlCommand.SET_LIMIT:
        name = args.limit.upper().replace("-", "_")
        if name not in wire.LimitId._fields:
            print(
                f"quayside control: unknown limit {args.limit!r}; one of {', '.join(wire.LimitId._fields)}",
                file=sys.stderr,
            )
            return 2
        limit_id, value = getattr(wire.LimitId, name), args.value
    sender = ControlSender(args.ring, issuer_id=os.getuid())
    try:
        sent, command_id, detail = sender.send(
            command, instrument_id=args.instrument, strategy_id=args.strategy_id, limit_id=limit_id, value=value
        )
    finally:
        sender.close()
    if not sent:
        print(f"quayside control: {detail}", file=sys.stderr)
        return 1 if "full" in detail else 2
    print(f"sent {args.control_command} (command id {command_id})")
    return 0
