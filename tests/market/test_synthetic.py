"""The built-in synthetic market: deterministic, well-formed, recognisably a market, and the
same stream whether it is made in one call or read in chunks. Speed is measured in benchmarks,
not here."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from quayside.core.market import nb
from quayside.core.market.synthetic import (
    DEFAULT_START_NS,
    MarketConfig,
    SyntheticMarket,
    default_configs,
    describe,
    generate,
    generate_chunks,
    parameters_markdown,
    resolve_configs,
)
from quayside.core.wire import FORMAT_VERSION, Flag, RecordKind, quote_dtype, record_dtype, trade_dtype, validate

ROOT = Path(__file__).resolve().parents[2]
TWO_HOURS = 7200.0


@pytest.fixture(scope="module")
def hour() -> np.ndarray:
    return generate(seed=7, duration_s=3600)


@pytest.fixture(scope="module", params=[7, 11, 2024])
def long_run(request):
    """Two hours of three seeds: the market (for what it injected), its records, their summary."""
    market = SyntheticMarket(seed=request.param)
    records = market.until(market.start_ns + int(TWO_HOURS * 1e9))
    return market, records, describe(records)


def _sha(records: np.ndarray) -> str:
    return hashlib.sha256(records.tobytes()).hexdigest()


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_bytes():
    a = generate(seed=3, duration_s=300)
    b = generate(seed=3, duration_s=300)
    assert len(a) > 1000
    assert a.tobytes() == b.tobytes()


def test_same_seed_gives_the_same_bytes_in_another_process():
    code = (
        "import hashlib; from quayside.core.market.synthetic import generate; "
        "print(hashlib.sha256(generate(seed=3, duration_s=300).tobytes()).hexdigest())"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == _sha(generate(seed=3, duration_s=300))


def test_a_different_seed_gives_a_different_market():
    a = generate(seed=3, duration_s=60)
    b = generate(seed=4, duration_s=60)
    assert a.tobytes() != b.tobytes()
    assert not np.array_equal(a["ts_event"][:100], b["ts_event"][:100])


def test_an_instrument_stream_does_not_depend_on_the_others():
    everything = generate(seed=5, duration_s=300)
    alone = generate(seed=5, duration_s=300, instruments=["AAPL"])
    mine = everything[everything["instrument_id"] == 3]
    assert len(alone) == len(mine) > 0
    for field in ("kind", "flags", "instrument_id", "ts_event", "payload"):
        assert np.array_equal(alone[field], mine[field]), field
    assert np.array_equal(alone["seq"], np.arange(len(alone)))


# --------------------------------------------------------------------------- chunks


def test_chunks_are_the_one_shot_stream():
    one_shot = generate(seed=9, duration_s=600)
    chunks = list(generate_chunks(seed=9, chunk_events=997, duration_s=600))
    assert len(chunks) > 3 and all(len(c) == 997 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 997
    assert np.concatenate(chunks).tobytes() == one_shot.tobytes()


def test_a_market_read_in_uneven_pieces_is_the_one_shot_stream():
    one_shot = generate(seed=9, duration_s=600)
    market = SyntheticMarket(seed=9)
    pieces = [market.next_chunk(n) for n in (1, 2, 0, 500, 7, 20_000)]
    buffer = np.zeros(3000, dtype=record_dtype)
    assert market.fill(buffer) == 3000
    pieces.append(buffer)
    pieces.append(market.until(DEFAULT_START_NS + 600 * 10**9))
    assert market.ts_next >= DEFAULT_START_NS + 600 * 10**9
    assert np.concatenate(pieces).tobytes() == one_shot.tobytes()
    assert market.seq == len(one_shot)


def test_endless_chunks_keep_going_past_any_duration():
    stream = generate_chunks(seed=1, chunk_events=50_000)
    first = [next(stream) for _ in range(3)]
    assert all(len(c) == 50_000 for c in first)
    assert np.array_equal(np.concatenate(first)["seq"], np.arange(150_000))


# --------------------------------------------------------------------------- invariants


def test_records_are_well_formed(hour):
    r = hour
    assert r.dtype == record_dtype and len(r) > 100_000
    assert validate(r).all()
    assert set(np.unique(r["kind"])) == {RecordKind.QUOTE, RecordKind.TRADE}
    assert (r["version"] == FORMAT_VERSION).all()
    assert (r["flags"] == Flag.REPLAY).all()
    assert (r["strategy_id"] == 0).all()
    assert set(np.unique(r["instrument_id"])) == {c.instrument_id for c in default_configs().values()}
    assert np.array_equal(r["seq"], np.arange(len(r), dtype=np.uint64))
    assert (np.diff(r["ts_event"]) >= 0).all()
    assert r["ts_event"][0] >= DEFAULT_START_NS and r["ts_event"][-1] < DEFAULT_START_NS + 3600 * 10**9
    latency = r.view(quote_dtype)["ts_recv"] - r["ts_event"]
    assert latency.min() > 0 and latency.max() < 1_000_000_000
    assert 100_000 < np.median(latency) < 5_000_000  # hundreds of microseconds to milliseconds


def test_quotes_are_on_the_grid_with_bid_below_ask(hour):
    for cfg in default_configs().values():
        mine = hour[(hour["instrument_id"] == cfg.instrument_id) & (hour["kind"] == RecordKind.QUOTE)]
        q = mine.view(quote_dtype)
        assert (np.diff(q["ts_event"]) > 0).all(), cfg.symbol
        assert (q["bid_price"] < q["ask_price"]).all(), cfg.symbol
        assert (q["bid_price"] > 0).all()
        for field in ("bid_price", "ask_price"):
            ticks = q[field] / cfg.tick_size
            assert np.abs(ticks - np.rint(ticks)).max() < 1e-6, (cfg.symbol, field)
        for field in ("bid_size", "ask_size"):
            lots = q[field] / cfg.size_increment
            assert (q[field] >= cfg.size_increment).all() and np.abs(lots - np.rint(lots)).max() < 1e-9


def test_trades_print_at_the_touch_of_the_last_quote(hour):
    quotes, trades = hour.view(quote_dtype), hour.view(trade_dtype)
    for cfg in default_configs().values():
        rows = np.flatnonzero(hour["instrument_id"] == cfg.instrument_id)
        is_quote = hour["kind"][rows] == RecordKind.QUOTE
        assert is_quote[0], "the first event of an instrument is a quote"
        last_quote = np.maximum.accumulate(np.where(is_quote, np.arange(len(rows)), 0))
        t = trades[rows[~is_quote]]
        q = quotes[rows[last_quote[~is_quote]]]
        assert set(np.unique(t["aggressor"])) == {1, -1}
        buy = t["aggressor"] == 1
        assert np.array_equal(t["price"][buy], q["ask_price"][buy]), cfg.symbol
        assert np.array_equal(t["price"][~buy], q["bid_price"][~buy]), cfg.symbol
        assert (t["size"] <= np.where(buy, q["ask_size"], q["bid_size"])).all()
        assert (t["size"] > 0).all()
        assert np.array_equal(t["trade_id"], np.arange(1, len(t) + 1, dtype=np.uint64))
        assert not hour.view(np.uint8).reshape(-1, 64)[rows[~is_quote], 57:].any(), "padding is zero"


def test_prices_on_a_grid_whose_reciprocal_is_not_an_integer():
    odd = MarketConfig(instrument_id=9, symbol="ODD", tick_size=0.03, start_price=50.0, spread_ticks=2)
    q = generate(seed=1, duration_s=600, instruments=[odd]).view(quote_dtype)
    q = q[q["kind"] == RecordKind.QUOTE]
    ticks = q["ask_price"] / 0.03
    assert np.abs(ticks - np.rint(ticks)).max() < 1e-6
    assert np.median(np.rint((q["ask_price"] - q["bid_price"]) / 0.03)) == 2


# --------------------------------------------------------------------------- realism


def test_arrivals_come_in_bursts(long_run):
    _, _, stats = long_run
    for cfg in default_configs().values():
        row = stats.loc[cfg.symbol]
        assert 0.7 < row.events / TWO_HOURS / cfg.events_per_s < 1.3, cfg.symbol
        assert row.rate_p99 >= 3 * max(row.rate_p50, 1), cfg.symbol  # bursts
        assert row.rate_fano > 2.5, cfg.symbol  # clustered, far from Poisson


def test_spreads_are_mostly_typical_and_widen_in_bursts(long_run):
    _, _, stats = long_run
    for cfg in default_configs().values():
        row = stats.loc[cfg.symbol]
        assert row.spread_median == cfg.spread_ticks, cfg.symbol
        assert row.spread_p95 > row.spread_median, cfg.symbol  # occasional widening
        assert row.spread_busy_mean > 1.05 * row.spread_mean, cfg.symbol  # wider when busy


def test_jumps_happen_and_blow_out_the_spread(long_run):
    market, records, stats = long_run
    assert sum(market.jumps.values()) >= 3
    for cfg in default_configs().values():
        assert abs(stats.loc[cfg.symbol, "jumps"] - market.jumps[cfg.symbol]) <= 1, cfg.symbol
        q = records[(records["instrument_id"] == cfg.instrument_id) & (records["kind"] == RecordKind.QUOTE)]
        q = q.view(quote_dtype)
        mid = 0.5 * (q["bid_price"] + q["ask_price"])
        at = np.flatnonzero(np.abs(np.diff(mid)) >= 10 * cfg.tick_size * (1 - 1e-9)) + 1
        spread = np.rint((q["ask_price"] - q["bid_price"]) / cfg.tick_size)
        assert (spread[at] >= cfg.spread_ticks + 2).all(), cfg.symbol


def test_volatility_is_as_configured_and_clusters(long_run):
    _, _, stats = long_run
    for cfg in default_configs().values():
        assert 0.4 < stats.loc[cfg.symbol, "realised_vol"] / cfg.annual_vol < 2.5, cfg.symbol
    assert stats["absret_acf1"].drop("ALL").mean() > 0.0


def test_quotes_bounce_and_trade_sizes_are_heavy_tailed(hour):
    stats = describe(hour)
    for cfg in default_configs().values():
        q = hour[(hour["instrument_id"] == cfg.instrument_id) & (hour["kind"] == RecordKind.QUOTE)].view(quote_dtype)
        moves = np.diff(0.5 * (q["bid_price"] + q["ask_price"]))
        moves = moves[moves != 0]
        assert np.corrcoef(moves[:-1], moves[1:])[0, 1] < -0.1, cfg.symbol  # bid-ask bounce
        row = stats.loc[cfg.symbol]
        assert row.trade_size_p99 >= 5 * row.trade_size_median, cfg.symbol
        assert 0.4 < row.buy_share < 0.6


def test_describe_has_a_row_per_instrument_and_a_total(hour):
    stats = describe(hour)
    assert list(stats.index) == [*default_configs(), "ALL"]
    assert stats.loc["ALL", "events"] == len(hour) == stats["events"].drop("ALL").sum()
    for column in ("spread_median", "spread_p95", "rate_p50", "rate_p99", "jumps", "realised_vol"):
        assert column in stats.columns


# --------------------------------------------------------------------------- configuration and kernels


def test_configs_are_frozen_and_reject_unknown_fields():
    cfg = default_configs()["EURUSD"]
    assert cfg.tick_size == 0.00005 and cfg.instrument_id == 1
    with pytest.raises(ValidationError):
        cfg.annual_vol = 0.3
    with pytest.raises(ValidationError):
        MarketConfig(instrument_id=1, symbol="X", tick_size=0.01, start_price=10.0, spred_ticks=2)
    with pytest.raises(ValidationError):
        MarketConfig(instrument_id=1, symbol="X", tick_size=0.01, start_price=0.05)


def test_instruments_by_symbol_id_or_config_and_errors():
    aapl = default_configs()["AAPL"]
    assert resolve_configs(["AAPL", 4]) == (aapl, default_configs()["ESZ6"])
    assert resolve_configs(aapl) == (aapl,)
    with pytest.raises(ValueError, match="no built-in synthetic market"):
        resolve_configs(["MSFT"])
    with pytest.raises(ValueError, match="unique"):
        resolve_configs(["AAPL", 3])
    with pytest.raises(TypeError):
        SyntheticMarket(seed=1.5)


def test_parameter_table_lists_every_parameter():
    table = parameters_markdown()
    for name in MarketConfig.model_fields:
        if name != "symbol":
            assert f"`{name}`" in table


def _xoshiro_reference(state: list[int], n: int) -> list[int]:
    mask = (1 << 64) - 1

    def rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & mask

    s, out = list(state), []
    for _ in range(n):
        out.append(rotl((s[1] * 5) & mask, 7) * 9 & mask)
        t = (s[1] << 17) & mask
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


def test_the_random_stream_is_xoshiro256starstar():
    seed_words = [0x0123456789ABCDEF, 0xFEDCBA9876543210, 0x0F1E2D3C4B5A6978, 0x8796A5B4C3D2E1F0]
    state = np.array([seed_words, seed_words], dtype=np.uint64)
    got = [int(nb._next_u64(state, 1)) for _ in range(64)]
    assert got == _xoshiro_reference(seed_words, 64)
    assert list(state[0]) == seed_words  # other rows untouched
