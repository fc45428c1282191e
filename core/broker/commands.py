"""``quayside gateway ...``: the broker gateway process between IB (TWS / IB Gateway, or the
simulated gateway) and the engine's rings.

``quayside gateway run --config gateway.toml`` connects, streams the configured instruments into
the engine's inbound ring, sends the engine's orders, and reconnects and reconciles on its own
until SIGTERM or Ctrl-C (then it disconnects cleanly, exit code 0). Exit codes: 2 for a bad
configuration, 3 when every configured client id is in use (IB error 326), 1 for anything else
unexpected. Its last line on stderr is a JSON object of counters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    gateway = sub.add_parser("gateway", help="the IB broker gateway process (ib_insync)", description=__doc__)
    gsub = gateway.add_subparsers(dest="gateway_command", required=True, metavar="SUBCOMMAND")
    p = gsub.add_parser("run", help="connect to IB and serve the engine's rings until SIGTERM/Ctrl-C")
    p.add_argument("--config", type=Path, help="gateway configuration (TOML); default: built-in")
    p.add_argument("--port", type=int, help="TWS API port (overrides the configuration)")
    p.add_argument("--client-id", type=int, help="API client id (overrides the configuration)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=_run)
    p = gsub.add_parser("check-config", help="validate a gateway configuration and print it resolved")
    p.add_argument("config", type=Path)
    p.set_defaults(func=_check)


def _load(args: argparse.Namespace):
    from quayside.core.broker.config import load_config

    config = load_config(args.config)
    update = {}
    if getattr(args, "port", None) is not None:
        update["port"] = args.port
    if getattr(args, "client_id", None) is not None:
        update["client_id"] = args.client_id
    return config.model_copy(update=update) if update else config


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import signal

    from loguru import logger

    from quayside.core.broker.config import ConfigError
    from quayside.core.broker.gateway import Gateway
    from quayside.core.instruments import RegistryError

    try:
        config = _load(args)
        gateway = Gateway(config)
    except (ConfigError, RegistryError, ImportError) as exc:
        print(f"quayside gateway: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop)
        if args.duration is not None:
            loop.call_later(args.duration, gateway.stop)
        logger.info(
            "quayside gateway: {}:{} client id {} ({}), streaming {}; rings {} / {}",
            config.host,
            config.port,
            config.client_id,
            config.library,
            ", ".join(config.instruments),
            config.rings.inbound,
            config.rings.outbound,
        )
        return await gateway.run()

    code = asyncio.run(main())
    if gateway.fatal:
        print(f"quayside gateway: {gateway.fatal}", file=sys.stderr)
    print(json.dumps(gateway.stats()), file=sys.stderr, flush=True)
    return code


def _check(args: argparse.Namespace) -> int:
    from quayside.core.broker.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        config.load_registry()
    except ConfigError as exc:
        print(f"quayside gateway: {exc}", file=sys.stderr)
        return 2
    print(config.model_dump_json(indent=2))
    return 0
