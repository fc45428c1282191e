"""``quayside feed ...``: look at rings, relay the feed over UDP, receive it, run the demo."""

from __future__ import annotations

import argparse
import json

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    from quayside.core.feed import demo, udp

    feed = sub.add_parser("feed", help="shared-memory rings and the UDP relay", description=__doc__)
    fsub = feed.add_subparsers(dest="feed_command", required=True, metavar="SUBCOMMAND")

    p = fsub.add_parser("inspect", help="print a ring segment's header and positions as JSON")
    p.add_argument("ring", help="segment name in the shm directory (e.g. 'quayside-feed') or a path")
    p.add_argument("--type", choices=["feed", "command"], default="feed", help="ring type (default: feed)")
    p.set_defaults(func=_inspect)

    p = fsub.add_parser("relay", help="read a feed ring and send it as batched UDP datagrams")
    udp.add_relay_arguments(p)
    p.set_defaults(func=udp.relay_main)

    p = fsub.add_parser("receive", help="receive relayed UDP datagrams and report gaps, duplicates, reordering")
    udp.add_receive_arguments(p)
    p.set_defaults(func=udp.receive_main)

    p = fsub.add_parser("demo", help="synthetic quotes through a feed ring, a reader, the relay and a UDP receiver")
    demo.add_demo_arguments(p)
    p.set_defaults(func=demo.demo_main)


def _inspect(args: argparse.Namespace) -> int:
    from quayside.core.feed.segment import RingType, attach_segment

    ring_type = RingType.FEED if args.type == "feed" else RingType.COMMAND
    seg = attach_segment(args.ring, ring_type, writable=False)
    hdr = seg.header[0]
    out = {"path": str(seg.path)}
    for name in hdr.dtype.names:
        value = hdr[name]
        out[name] = value.decode() if isinstance(value, bytes) else int(value)
    out["records_in_ring"] = int(min(out["producer_position"], seg.capacity))
    kinds = np.bincount(seg.slots["kind"][: out["records_in_ring"]], minlength=1)
    out["kinds_in_ring"] = {int(k): int(c) for k, c in enumerate(kinds) if c}
    seg.close()
    print(json.dumps(out, indent=2))
    return 0
