"""The simulated gateway's market replay, with no socket: sources, books, the clock in its
modes (paused and stepped, real time times a speed, as fast as possible), and looping."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from quayside.core.broker.sim.config import ConfigError, DataConfig, SimGatewayConfig
from quayside.core.broker.sim.market import ArraySource, MarketReplay, SyntheticSource
from quayside.core.broker.sim.server import open_market_data
from quayside.core.market.synthetic import DEFAULT_START_NS, generate
from quayside.core.wire import RecordKind, quote_dtype, trade_dtype


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    return generate(seed=5, duration_s=20)


def _replay(source, speed=1.0, paused=False):
    events = []
    replay = MarketReplay(source, [1, 2, 3, 4], speed=speed, paused=paused)
    replay.on_quote = lambda iid, ts, book, *prev: events.append(("q", iid, ts, book.bid, book.ask))
    replay.on_trade = lambda iid, ts, book, price, size: events.append(("t", iid, ts, price, size))
    return replay, events


def test_stepping_hands_out_every_record_once_in_order(records):
    replay, events = _replay(ArraySource(records), paused=True)
    start = int(records["ts_event"][0])
    assert asyncio.run(replay.step(5.0)) + asyncio.run(replay.step(100.0)) == len(records)
    assert len(events) == len(records) and replay.records_seen == len(records)
    assert [e[2] for e in events] == records["ts_event"].tolist()
    q = records[records["kind"] == RecordKind.QUOTE].view(quote_dtype)
    last_es = q[q["instrument_id"] == 4][-1]
    book = replay.books[4]
    assert (book.bid, book.ask, book.bid_size) == (last_es["bid_price"], last_es["ask_price"], last_es["bid_size"])
    t = records[records["kind"] == RecordKind.TRADE].view(trade_dtype)
    assert replay.books[4].volume == pytest.approx(t[t["instrument_id"] == 4]["size"].sum())
    assert replay.now_ns == start - 1 + round(105e9) and replay.ended


def test_prime_reads_ahead_until_every_book_is_two_sided(records):
    replay, _ = _replay(ArraySource(records), paused=True)
    replay.prime(60.0)
    assert all(b.two_sided for b in replay.books.values())
    assert replay.records_seen < len(records) // 4


def test_real_time_follows_the_wall_clock_times_the_speed(records):
    replay, _ = _replay(ArraySource(records), speed=10.0)

    async def run_for(seconds):
        task = asyncio.create_task(replay.run())
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        replay.close()
        await task
        return elapsed

    start = replay.now_ns
    elapsed = asyncio.run(run_for(0.5))
    advanced = (replay.now_ns - start) / 1e9
    assert 10 * elapsed - 1.0 <= advanced <= 10 * elapsed + 1.0
    assert 0 < replay.records_seen < len(records)


def test_as_fast_as_possible_runs_to_the_end_and_loops(records):
    replay, _ = _replay(ArraySource(records), speed=float("inf"))

    async def run_until_ended():
        task = asyncio.create_task(replay.run())
        while not replay.ended:
            await asyncio.sleep(0.01)
        replay.close()
        await task

    asyncio.run(asyncio.wait_for(run_until_ended(), 60))
    assert replay.records_seen == len(records) and replay.now_ns == int(records["ts_event"][-1])
    source = ArraySource(records[:50], loop=True)
    first = source.read_until(2**62, 1000)
    second = source.read_until(2**62, 1000)
    assert source.laps == 1 and len(first) == len(second) == 50
    assert (second["ts_event"] - first["ts_event"] == source.span).all()


def test_the_synthetic_source_is_the_generated_stream():
    source = SyntheticSource(5, None, DEFAULT_START_NS, duration_s=20)
    parts = []
    while source.ts_next is not None:
        parts.append(source.read_until(source.ts_next + 3 * 10**9, 500))
    assert (np.concatenate(parts) == generate(seed=5, duration_s=20)).all()


def test_data_files_need_instruments(tmp_path, records):
    from quayside.core.replay.recording import RecordingWriter

    path = tmp_path / "feed.qsf"
    with RecordingWriter(path) as w:
        w.write(records[:100])
    with pytest.raises(ConfigError, match="give a registry file"):
        open_market_data(SimGatewayConfig(data=DataConfig(path=str(path))))
    registry = tmp_path / "registry.toml"
    from quayside.core.instruments import default_registry

    registry.write_text(default_registry().to_toml())
    source, reg, description = open_market_data(
        SimGatewayConfig(registry=str(registry), data=DataConfig(path=str(path), at_end="loop"))
    )
    assert len(reg) == 4 and source.loop and "recording" in description
