"""Support services read the feed over UDP, as on a support host of its own: a real relay
process (``quayside feed relay``) sends a feed ring to a multicast group, and two services
(``quayside support pnl`` and ``quayside support metrics``, with ``QUAYSIDE_FEED__SOURCE=udp``)
join the group on the same port; each must receive every record and report the fills and
positions they make."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections import defaultdict

import numpy as np
import pytest
from _monitoring_feed import session, typed
from _monitoring_procs import QUAYSIDE, TIMEOUT, ServiceProcess, http_get, wait_for
from prometheus_client.parser import text_string_to_metric_families

from quayside.core import wire
from quayside.core.feed.ring import FeedWriter
from quayside.core.instruments import default_registry

pytestmark = pytest.mark.slow

RELAY_ARGS = ("--max-datagram", "8972", "--json")  # jumbo-frame datagrams, as the example inventory relays


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multicast_loops_back(group: str, port: int) -> bool:
    """Does a datagram sent to ``group`` reach a socket on this host that joined it the way the
    services join (any interface)? Needs a multicast-capable route; the relay sends the same way."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind(("0.0.0.0", port))
        rx.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton("0.0.0.0")
        )
        rx.settimeout(2.0)
        try:
            tx.sendto(b"probe", (group, port))
            return rx.recv(16) == b"probe"
        except OSError:
            return False


def expected_positions(feed: np.ndarray) -> dict[str, tuple[float, int]]:
    """``symbol -> (quantity, fills)`` from the FILL records, summed independently of the P&L code."""
    fills = typed(feed, wire.RecordKind.FILL)
    registry = default_registry()
    out: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for iid, qty in zip(fills["instrument_id"].tolist(), fills["quantity"].tolist(), strict=True):
        row = out[registry.by_id(iid).symbol]
        row[0] += qty
        row[1] += 1
    return {symbol: (q, n) for symbol, (q, n) in out.items()}


def counter(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in the exported metrics")


def test_two_services_receive_every_record_from_a_relay_over_multicast(shm_dir, tmp_path):
    group, port = f"239.255.{random.randint(1, 254)}.{random.randint(1, 254)}", free_udp_port()
    assert multicast_loops_back(group, port), f"multicast to {group} does not loop back on this host"
    feed = session(3_000, seed=5)
    writer = FeedWriter(shm_dir / "feed", 1 << 14)
    env = {
        "QUAYSIDE_FEED__SOURCE": "udp",
        "QUAYSIDE_FEED__UDP_BIND": f"0.0.0.0:{port}",
        "QUAYSIDE_FEED__UDP_GROUP": group,
        "QUAYSIDE_FEED__RING": str(shm_dir / "absent"),  # nothing to read from shared memory
        "QUAYSIDE_LOG_FORMAT": "json",
    }
    services = [ServiceProcess(name, tmp_path / f"{name}.log", env) for name in ("pnl", "metrics")]
    relay = None
    try:
        for svc in services:
            svc.start()
        for svc in services:
            svc.wait_healthy()
        relay_log = tmp_path / "relay.log"
        with open(relay_log, "wb") as err:
            relay = subprocess.Popen(
                [QUAYSIDE, "feed", "relay", "--ring", str(shm_dir / "feed"), "--dest", f"{group}:{port}", *RELAY_ARGS],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                text=True,
            )
        ready = json.loads(relay.stdout.readline() or "{}")
        assert ready.get("event") == "ready", relay_log.read_text()
        for lo in range(0, len(feed), 250):  # an engine's pace, not one burst into the socket buffers
            writer.publish(feed[lo : lo + 250])
            time.sleep(0.01)

        def received_all(svc: ServiceProcess) -> bool:
            return svc.health()["feed"]["records"] >= len(feed)

        for svc in services:
            wait_for(lambda svc=svc: received_all(svc), f"every record at {svc.name}", explain=svc.output)
        relay.send_signal(signal.SIGTERM)
        out, _ = relay.communicate(timeout=TIMEOUT)
        final = json.loads(out.splitlines()[-1])
        assert final["event"] == "final" and final["records_sent"] == len(feed)

        for svc in services:  # every record exactly once: nothing lost, nothing foreign, nothing twice
            stats = svc.health()["feed"]
            assert (stats["records"], stats["lost"], stats["foreign"]) == (len(feed), 0, 0), (svc.name, stats)

        want = expected_positions(feed)
        status, body = http_get(services[0].url + "/positions")
        assert status == 200, body
        got = {p["symbol"]: (p["quantity"], p["fills"]) for p in json.loads(body)["positions"]}
        assert got == want and len(want) == 3
        metrics = services[1].metrics()
        assert counter(metrics, "quayside_fills_total") == len(typed(feed, wire.RecordKind.FILL))
        assert counter(metrics, "quayside_orders_total") == len(typed(feed, wire.RecordKind.ORDER))
    finally:
        if relay is not None and relay.poll() is None:
            relay.kill()
            relay.wait(TIMEOUT)
        for svc in services:
            if svc.proc is not None and svc.proc.poll() is None:
                svc.stop()
        writer.close()
