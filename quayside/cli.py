"""The ``quayside`` command. Each capability registers its own subcommands; heavy imports
(numba, the engine) happen inside the handlers, so ``--help`` is instant everywhere."""

from __future__ import annotations

import argparse
import sys

from quayside import __version__


def build_parser() -> argparse.ArgumentParser:
    from quayside import bench
    from quayside.core.broker import commands as gateway_commands
    from quayside.core.broker.sim import commands as simgateway_commands
    from quayside.core.engine import commands as engine_commands
    from quayside.core.feed import commands as feed_commands
    from quayside.core.host import commands as host_commands
    from quayside.core.replay import commands as replay_commands
    from quayside.stack import commands as stack_commands
    from quayside.support import commands as support_commands

    parser = argparse.ArgumentParser(
        prog="quayside",
        description="Quayside: a trading stack for Interactive Brokers, engine on pinned cores, support in containers.",
    )
    parser.add_argument("--version", action="version", version=f"quayside {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stack_commands.register(sub)
    replay_commands.register(sub)
    engine_commands.register(sub)
    gateway_commands.register(sub)
    simgateway_commands.register(sub)
    support_commands.register(sub)
    feed_commands.register(sub)
    host_commands.register(sub)
    bench.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
