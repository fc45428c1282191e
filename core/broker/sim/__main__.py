"""``python -m quayside.core.broker.sim [options]``: the same as ``quayside simgateway [options]``."""

from __future__ import annotations

import argparse
import sys

from quayside.core.broker.sim import commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quayside")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simgateway", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
