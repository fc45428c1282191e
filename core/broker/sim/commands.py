"""``quayside simgateway``: a simulated IB Gateway on the TWS API port, for development and
rehearsal with no IB account. The real ib_insync client (and so the whole stack) connects to it
as to IB Gateway; market data comes from the built-in synthetic market or a data file, orders
fill against it, and faults (disconnects, IB error codes, delays, duplicate executions, refused
client ids, rejections, pacing) are injected on demand through the admin port."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def _speed(text: str) -> float:
    if text.lower() in ("max", "inf", "infinite"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number or 'max', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("speed must be > 0")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simgateway",
        help="a simulated IB Gateway (TWS API protocol) on 127.0.0.1, with fault injection",
        description=__doc__,
    )
    p.add_argument("--config", type=Path, help="gateway configuration (TOML); default: built-in")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TWS API port (default 4002, like IB Gateway paper; 0 = any free port)")
    p.add_argument("--admin-port", type=int, help="admin port for fault injection (default 4003; -1 = none)")
    p.add_argument("--data", type=Path, help="recording (.qsf) or data file to replay; default: synthetic market")
    p.add_argument("--registry", type=Path, help="instrument registry (TOML); needed for recordings")
    p.add_argument("--speed", type=_speed, help="times real time (default 1); 'max' = as fast as possible")
    p.add_argument("--seed", type=int, help="synthetic market seed (default 7)")
    p.add_argument("--loop", action="store_true", help="replay the data file again when it ends")
    p.add_argument("--paused", action="store_true", help="start with the market clock stopped (admin: step, resume)")
    p.add_argument("--account", help="the managed account (default DU0000001)")
    p.add_argument(
        "--send",
        metavar="COMMAND",
        help="send one admin COMMAND to a running gateway's admin port (e.g. 'drop 30', 'error 1100') and exit",
    )
    p.set_defaults(func=main)


def _config(args: argparse.Namespace):
    from quayside.core.broker.sim.config import load_config

    config = load_config(args.config)
    top, data = {}, {}
    for name in ("host", "port", "account"):
        if getattr(args, name) is not None:
            top[name] = getattr(args, name)
    if args.admin_port is not None:
        top["admin_port"] = None if args.admin_port < 0 else args.admin_port
    if args.registry is not None:
        top["registry"] = str(args.registry)
    if args.data is not None:
        data["path"] = str(args.data)
    if args.speed is not None:
        data["speed"] = args.speed
    if args.seed is not None:
        data["seed"] = args.seed
    if args.loop:
        data["at_end"] = "loop"
    if args.paused:
        data["start_paused"] = True
    if not (top or data):
        return config
    from quayside.core.broker.sim.config import SimGatewayConfig, validate_config

    merged = config.model_dump()
    merged.update(top)
    merged["data"].update(data)
    return validate_config(merged, SimGatewayConfig, "command line")


def _send(config, command: str) -> int:
    import socket

    if config.admin_port is None:
        print("quayside simgateway: no admin port configured", file=sys.stderr)
        return 2
    try:
        with socket.create_connection((config.host, config.admin_port), timeout=30) as sock:
            sock.sendall(command.encode() + b"\n")
            reply = sock.makefile("r").readline().strip()
    except OSError as exc:
        print(f"quayside simgateway: admin port {config.host}:{config.admin_port}: {exc}", file=sys.stderr)
        return 1
    print(reply)
    return 0 if reply.startswith("ok") else 1


def main(args: argparse.Namespace) -> int:
    from quayside.core.broker.sim.config import ConfigError

    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"quayside simgateway: {exc}", file=sys.stderr)
        return 2
    if args.send:
        return _send(config, args.send)
    import asyncio

    return asyncio.run(_serve(config))


async def _serve(config) -> int:
    import asyncio
    import signal

    from loguru import logger

    from quayside.core.broker.sim.config import ConfigError
    from quayside.core.broker.sim.server import SimGateway

    try:
        gateway = SimGateway(config)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"quayside simgateway: {exc}", file=sys.stderr)
        return 2
    try:
        await gateway.start()
    except OSError as exc:
        print(f"quayside simgateway: cannot listen on {config.host}: {exc}", file=sys.stderr)
        return 1
    for line in gateway.banner():
        logger.info(line)
    admin = f", admin port {gateway.admin_port}" if gateway.admin_port is not None else ""
    print(f"simgateway listening on {config.host}:{gateway.port}{admin}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("simgateway: stopping")
    await gateway.stop()
    return 0
