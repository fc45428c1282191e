"""Loaders over the real data in ../shared/data (the facts SOURCES.md states), and over small
malformed files: every error names the file, the line and the field."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, require

from quayside.core.instruments import Instrument, InstrumentRegistry
from quayside.core.replay.loaders import (
    FORMATS,
    DataFormatError,
    detect_format,
    load,
    load_binance_raw,
    load_bitstamp,
    load_lobster,
    load_pysystemtrade,
    load_quotes,
)
from quayside.core.wire import BookAction, Flag, RecordKind, Side, record_dtype, validate

EURUSD = "eurusd-quotes-2020-01-01.csv"
USDJPY = "truefx-usdjpy-quotes-2013-01-01.csv"
LOBSTER = "lobster-goog-2012-06-21-l10.zip"
BINANCE = "binance-usdm-btcusdt-rawfeed-2024-08-08.gz"
BITSTAMP = "bitstamp-btcusd-l3-orders-2026-05-02.csv.gz"
BITSTAMP_TRADES = "bitstamp-btcusd-trades-2026-05-02.csv"
PST = "pysystemtrade-ch15"


def shared(name: str) -> Path:
    require(SHARED_DATA.is_dir(), f"the shared data folder {SHARED_DATA} is absent (CI has it beside the clone)")
    path = SHARED_DATA / name
    require(path.exists(), f"{path} is absent from the shared data folder")
    return path


def utc(text: str) -> int:
    return pd.Timestamp(text).tz_convert("UTC").value


def check_stream(data) -> None:
    """What every loader promises about its records."""
    recs = data.records
    assert recs.dtype == record_dtype
    assert validate(recs).all()
    assert np.all(np.diff(recs["ts_event"]) >= 0)
    assert np.array_equal(recs["seq"], np.arange(len(recs), dtype=np.uint64))
    assert np.all(recs["flags"] & Flag.REPLAY)
    assert np.all(recs["instrument_id"] >= 1)
    assert sum(data.counts.values()) == len(recs)
    assert (data.ts_first, data.ts_last) == (int(recs["ts_event"][0]), int(recs["ts_event"][-1]))
    assert data.skipped == 0 and data.errors == ()


# --------------------------------------------------------------------------- quotes


@pytest.fixture(scope="module")
def eurusd():
    return load(shared(EURUSD))


def test_histdata_eurusd_quotes(eurusd):
    check_stream(eurusd)
    assert eurusd.format == "histdata-quotes" and eurusd.symbol == "EURUSD"
    assert eurusd.rows == 9500 and eurusd.counts == {"QUOTE": 9500}
    q = eurusd.quotes()
    # HistData's clock is EST (UTC-5): 17:00 New York is 22:00 UTC
    assert q["ts_event"][0] == utc("2020-01-01T22:00:00.065Z")
    assert q["ts_event"][-1] == utc("2020-01-02T04:00:52.125Z")
    assert np.array_equal(q["ts_recv"], q["ts_event"])
    assert (q["bid_price"][0], q["ask_price"][0]) == (1.1212, 1.12172)
    assert (q["bid_price"].min(), q["bid_price"].max()) == (1.12106, 1.12245)
    spread = q["ask_price"] - q["bid_price"]
    assert np.median(spread) == pytest.approx(0.00003) and spread.max() == pytest.approx(0.00072)
    assert not np.any(q["bid_price"] > q["ask_price"])
    assert np.isnan(q["bid_size"]).all() and np.isnan(q["ask_size"]).all()
    inst = eurusd.instruments.by_symbol("EURUSD")
    assert (inst.id, inst.sec_type, inst.currency) == (1, "CASH", "USD")


def test_histdata_times_can_be_read_as_utc():
    q = load_quotes(shared(EURUSD), tz="UTC").quotes()
    assert q["ts_event"][0] == utc("2020-01-01T17:00:00.065Z")


def test_truefx_usdjpy_quotes():
    data = load(shared(USDJPY))
    check_stream(data)
    assert data.format == "quotes-csv" and data.symbol == "USDJPY"
    assert data.rows == 1000 and data.counts == {"QUOTE": 1000}
    assert data.ts_first == utc("2013-01-01T22:00:00.295Z")
    assert data.ts_last == utc("2013-01-01T22:35:13.494Z")
    q = data.quotes()
    assert (q["bid_price"][-1], q["ask_price"][-1]) == (86.836, 86.854)
    assert not np.any(q["bid_price"] > q["ask_price"])
    assert int(np.sum(q["bid_price"] == q["ask_price"])) == 1  # locked once, at 22:34:34.652
    assert data.instruments.by_symbol("USDJPY").currency == "JPY"


def test_generic_quote_csv_with_sizes_and_receive_times(tmp_path):
    path = tmp_path / "ticks.csv"
    path.write_text(
        "ts_event,ts_recv,bid,ask,bid_size,ask_size\n"
        "1000,1500,1.5,1.6,10,20\n"
        "2000,2100,1.55,1.65,,5\n"
        "2000,2300,1.5,1.6,1,2\n"
    )
    data = load(path, symbol="XYZ", instruments={"XYZ": 7})
    check_stream(data)
    q = data.quotes()
    assert q["ts_event"].tolist() == [1000, 2000, 2000] and q["ts_recv"].tolist() == [1500, 2100, 2300]
    assert q["instrument_id"].tolist() == [7, 7, 7]
    assert np.isnan(q["bid_size"][1]) and q["ask_size"][1] == 5
    assert data.instruments.by_id(7).symbol == "XYZ"


def test_a_registry_names_the_instrument(tmp_path):
    path = tmp_path / "eurusd.csv"
    path.write_text("timestamp,bid,ask\n2024-01-02T10:00:00Z,1.1,1.2\n")
    registry = InstrumentRegistry([Instrument(id=42, symbol="EURUSD", sec_type="CASH", currency="USD")])
    data = load(path, instruments=registry)
    assert data.records["instrument_id"].tolist() == [42] and data.instruments.by_id(42).symbol == "EURUSD"
    with pytest.raises(KeyError, match="'EURUSD' is not in"):
        load(path, instruments={"GBPUSD": 1})


# --------------------------------------------------------------------------- LOBSTER


@pytest.fixture(scope="module")
def lobster():
    return load(shared(LOBSTER))


def test_lobster_goog_counts_and_times(lobster):
    check_stream(lobster)
    assert lobster.format == "lobster" and lobster.symbol == "GOOG"
    assert lobster.rows == 147_916
    assert lobster.extra["message_types"] == {1: 71_258, 2: 19, 3: 64_961, 4: 7_765, 5: 3_913, 6: 0, 7: 0}
    assert lobster.counts == {"BOOK": 71_258 + 19 + 64_961 + 7_765, "TRADE": 7_765 + 3_913, "QUOTE": 45_569}
    # seconds after midnight, US/Eastern (EDT in June) -> UTC
    assert lobster.ts_first == utc("2012-06-21T09:30:00.015105074-04:00")
    assert lobster.ts_last == utc("2012-06-21T15:59:59.871751084-04:00")
    assert int(np.sum(np.diff(lobster.book()["ts_event"]) == 0)) > 0  # ties keep file order
    prices = np.concatenate([lobster.book()["price"], lobster.trades()["price"]])
    assert (prices.min(), prices.max()) == (563.49, 580.94)


def test_lobster_book_and_trade_mapping(lobster):
    book, trades = lobster.book(), lobster.trades()
    actions = np.bincount(book["action"], minlength=6)
    assert actions[BookAction.ADD] == 71_258 and actions[BookAction.MODIFY] == 19
    assert actions[BookAction.DELETE] == 64_961 and actions[BookAction.EXECUTE] == 7_765
    assert np.all(book["size"][book["action"] == BookAction.DELETE] == 0)
    assert np.all(book["order_id"] > 0) and set(np.unique(book["side"])) == {Side.BUY, Side.SELL}
    unknown = np.isnan(book["size"]).sum()
    assert unknown == lobster.extra["unknown_remaining"] and 0 < unknown < 1000
    # the first message executes 4 shares of a resting buy order at 579.40: a sell-initiated trade
    first = trades[0]
    assert (first["price"], first["size"], first["aggressor"]) == (579.40, 4.0, Side.SELL)
    assert set(np.unique(trades["aggressor"])) == {Side.BUY, Side.SELL}
    assert np.all(trades["trade_id"] == 0)


def test_lobster_quotes_follow_level_one(lobster):
    q = lobster.quotes()
    # the orderbook's first row: 580.23 x 100 / 579.40 x 496
    assert (q["bid_price"][0], q["bid_size"][0], q["ask_price"][0], q["ask_size"][0]) == (579.40, 496, 580.23, 100)
    with zipfile.ZipFile(shared(LOBSTER)) as zf:
        name = next(n for n in zf.namelist() if "_orderbook_" in n)
        last_row = zf.read(name).decode().rstrip("\n").rsplit("\n", 1)[-1].split(",")[:4]
    ask, ask_size, bid, bid_size = (int(x) for x in last_row)
    assert (q["ask_price"][-1], q["ask_size"][-1]) == (ask / 10_000, ask_size)
    assert (q["bid_price"][-1], q["bid_size"][-1]) == (bid / 10_000, bid_size)
    assert not np.any(q["bid_price"] >= q["ask_price"])
    # per change of the top of book ($0.28, as SOURCES.md says, per orderbook row)
    assert np.median(q["ask_price"] - q["bid_price"]) == pytest.approx(0.29)
    # 7,764 of 7,765 visible executions are at the best price before them (the first has none)
    recs = lobster.records
    is_quote = recs["kind"] == RecordKind.QUOTE
    last_quote = np.maximum.accumulate(np.where(is_quote, np.arange(len(recs)), -1))
    book = recs.view(lobster.book().dtype)
    execs = np.flatnonzero((recs["kind"] == RecordKind.BOOK) & (book["action"] == BookAction.EXECUTE))
    before = np.concatenate([[-1], last_quote[:-1]])[execs]
    quotes = recs.view(q.dtype)
    has = before >= 0
    best = np.where(book["side"][execs] == Side.BUY, quotes["bid_price"][before], quotes["ask_price"][before])
    assert int(np.sum(has & (best == book["price"][execs]))) == 7_764 and int(np.sum(~has)) == 1


def test_lobster_from_the_two_csv_files(tmp_path):
    src = shared(LOBSTER)
    with zipfile.ZipFile(src) as zf:
        names = [n for n in zf.namelist() if n.endswith(".csv")]
        for n in names:
            data = zf.read(n).decode().splitlines(keepends=True)[:2000]
            (tmp_path / n).write_text("".join(data))
    msg = next(tmp_path.glob("*_message_*.csv"))
    data = load(msg, quotes=False)
    assert data.rows == 2000 and "QUOTE" not in data.counts and data.symbol == "GOOG"
    assert len(data.sources) == 2
    book = next(tmp_path.glob("*_orderbook_*.csv"))
    renamed = msg.rename(tmp_path / "messages.csv")
    explicit = load_lobster(renamed, book, symbol="GOOG", date="2012-06-21", quotes=False)
    assert explicit.records.tobytes() == data.records.tobytes()
    with pytest.raises(DataFormatError, match="pass symbol= and date="):
        load_lobster(renamed, book)


# --------------------------------------------------------------------------- Binance


@pytest.fixture(scope="module")
def binance():
    return load(shared(BINANCE))


def test_binance_raw_feed_counts(binance):
    check_stream(binance)
    assert binance.format == "binance-raw" and binance.symbol == "BTCUSDT"
    assert binance.rows == 93_954
    assert binance.counts == {"QUOTE": 66_089, "TRADE": 21_313, "BOOK": 443_521 + 2 * 1000 + 1}
    assert binance.extra["depth_levels"] == 443_521
    assert binance.extra["depth_gaps"] == 0
    assert binance.extra["snapshot_lines"] == [55]
    assert binance.extra["local_time_backwards"] == 0
    assert binance.extra["stale_depth_updates"] == 4


def test_binance_records(binance):
    q, t, b = binance.quotes(), binance.trades(), binance.book()
    assert not np.any(q["bid_price"] >= q["ask_price"])
    assert np.all(np.diff(t["trade_id"].astype(np.int64)) == 1)  # consecutive, in order
    assert (t["price"].min(), t["price"].max()) == (61_590.3, 61_839.9)
    assert t["size"].sum() == pytest.approx(2_429.366)
    assert set(np.unique(t["aggressor"])) == {Side.BUY, Side.SELL}
    # the first line's own local time; the collector ran ~1.27 s behind the exchange
    ts_recv = np.concatenate([q["ts_recv"], t["ts_recv"], b["ts_recv"]])
    assert (ts_recv.min(), ts_recv.max()) == (1_723_161_255_030_314_667, 1_723_161_599_833_492_584)
    assert np.median(t["ts_recv"] - t["ts_event"]) / 1e6 == pytest.approx(-1270, abs=20)
    snap = b[(b["flags"] & Flag.SNAPSHOT) != 0]
    assert len(snap) == 2001 and snap["action"][0] == BookAction.CLEAR
    assert np.all(snap["action"][1:] == BookAction.ADD) and np.all(snap["ts_event"] == 1_723_161_256_493_000_000)
    assert (snap["price"][1], snap["size"][1], snap["side"][1]) == (61_800.2, 2.909, Side.BUY)
    live = b[(b["flags"] & Flag.SNAPSHOT) == 0]
    assert set(np.unique(live["action"])) == {BookAction.MODIFY, BookAction.DELETE}
    assert np.all((live["action"] == BookAction.DELETE) == (live["size"] == 0))
    assert np.all(live["order_id"] == 0) and np.all(live["level"] == 0)


def test_binance_snapshot_sits_between_stale_and_live_updates(binance):
    recs = binance.records
    book = recs.view(binance.book().dtype)
    clear = int(np.flatnonzero((recs["kind"] == RecordKind.BOOK) & (book["action"] == BookAction.CLEAR))[0])
    dropped = load_binance_raw(shared(BINANCE), drop_stale_depth=True)
    assert dropped.excluded == {"stale_depth_updates": 4}
    n_stale = binance.counts["BOOK"] - dropped.counts["BOOK"]
    assert n_stale > 0
    # every stale level update comes before the snapshot in time order
    diffs_before = np.sum(recs["kind"][:clear] == RecordKind.BOOK)
    assert diffs_before == n_stale


# --------------------------------------------------------------------------- Bitstamp


@pytest.fixture(scope="module")
def bitstamp():
    return load(shared(BITSTAMP), quotes=True)


def test_bitstamp_orders_and_trades(bitstamp):
    check_stream(bitstamp)
    assert bitstamp.format == "bitstamp" and bitstamp.symbol == "BTCUSD"
    assert [p.name for p in bitstamp.sources] == [BITSTAMP, BITSTAMP_TRADES, "bitstamp-btcusd-2026-05-02.meta.json"]
    assert bitstamp.rows == 314_057 + 284
    assert bitstamp.extra["actions"] == {"created": 156_889, "changed": 266, "deleted": 156_902}
    assert (bitstamp.extra["synthetic_snapshot"], bitstamp.extra["synthetic_deletes"]) == (6_512, 6_518)
    assert bitstamp.counts["BOOK"] == 314_057 + 1 and bitstamp.counts["TRADE"] == 284
    b = bitstamp.book()
    snap = b[(b["flags"] & Flag.SNAPSHOT) != 0]
    assert len(snap) == 6_513 and snap["action"][0] == BookAction.CLEAR
    assert np.all(snap["ts_event"] == 1_777_689_380_521 * 1_000_000)
    live = b[(b["flags"] & Flag.SNAPSHOT) == 0][:-6_518]
    assert len(live) == 301_027
    assert live["ts_event"][0] == utc("2026-05-02T02:36:21.262Z")
    assert live["ts_event"][-1] == utc("2026-05-02T03:06:20.412Z")
    assert np.median(live["price"]) == 78_377
    t = bitstamp.trades()
    assert (int(np.sum(t["aggressor"] == Side.BUY)), int(np.sum(t["aggressor"] == Side.SELL))) == (162, 122)
    assert (t["price"].min(), t["price"].max()) == (78_319, 78_497)
    assert (t["ts_event"][0], t["ts_event"][-1]) == (utc("2026-05-02T02:36:23.817Z"), utc("2026-05-02T03:06:14.280Z"))
    assert np.all(np.diff(t["trade_id"].astype(np.int64)) > 0)


def test_bitstamp_derived_quotes(bitstamp):
    q = bitstamp.quotes()
    assert bitstamp.extra["crossed_quotes"] == 0 and bitstamp.extra["uncrossed_orders"] <= 5
    assert (q["bid_price"][0], q["ask_price"][0]) == (78_318, 78_319)
    assert q["ts_event"][0] == 1_777_689_380_521 * 1_000_000  # after the whole snapshot
    inside = ~np.isnan(q["bid_price"]) & ~np.isnan(q["ask_price"])
    assert np.all(q["bid_price"][inside] < q["ask_price"][inside])
    assert 0 < np.median((q["ask_price"] - q["bid_price"])[inside]) < 10
    trades = bitstamp.trades()
    assert np.all((trades["price"] >= q["bid_price"][inside].min()) & (trades["price"] <= q["ask_price"][inside].max()))


def test_bitstamp_options_are_counted(bitstamp):
    path = shared(BITSTAMP)
    raw = pd.read_csv(path)
    created = raw[raw.action == "created"].set_index("id").price
    outside = raw.id.map(created).fillna(raw.price).pipe(lambda p: (p < 1_000) | (p > 1_000_000))
    data = load_bitstamp(path, trades_path=None, drop_synthetic_deletes=True, price_range=(1_000, 1_000_000))
    assert data.excluded["synthetic_deletes"] == 6_518
    assert data.excluded["price_range"] == int(outside.iloc[:-6_518].sum())
    assert data.counts == {"BOOK": 314_057 + 1 - 6_518 - data.excluded["price_range"]}
    book = data.book()
    assert np.nanmin(book["price"]) >= 1_000 and np.nanmax(book["price"]) <= 1_000_000
    # without the metadata file the synthetic rows are found from the file itself
    alone = load_bitstamp(path, trades_path=None, meta_path=None)
    assert alone.extra["synthetic_source"] == "file"
    assert (alone.extra["synthetic_snapshot"], alone.extra["synthetic_deletes"]) == (6_512, 6_518)


def test_bitstamp_order_prices(bitstamp):
    # order 2002347659919360: created as a bid at 79,116, then filled at 78,319 (the changed rows)
    book = bitstamp.book()
    mine = book[book["order_id"] == 2002347659919360]
    assert mine["action"][0] == BookAction.ADD and np.all(mine["price"] == 79_116)
    assert bitstamp.extra["row_price_differs"] > 0
    rows = load_bitstamp(shared(BITSTAMP), trades_path=None, order_prices="row").book()
    assert 78_319 in rows[rows["order_id"] == 2002347659919360]["price"]


# --------------------------------------------------------------------------- pysystemtrade


def test_pysystemtrade_adjusted_prices():
    data = load(shared(f"{PST}/adjusted_prices/US10.csv"))
    check_stream(data)
    assert data.format == "pysystemtrade" and data.symbol == "US10"
    assert data.rows == 48_423 and data.excluded == {"empty_price": 1_719}
    assert data.counts == {"QUOTE": 48_423 - 1_719}
    q = data.quotes()
    assert q["ts_event"][0] == utc("1982-08-30T23:00:00Z") and q["ts_event"][-1] == utc("2023-08-31T20:00:00Z")
    assert q["bid_price"][0] == pytest.approx(-36.4140525) and np.array_equal(q["bid_price"], q["ask_price"])
    assert np.isnan(q["bid_size"]).all()
    inst = data.instruments.by_symbol("US10")
    assert (inst.sec_type, inst.multiplier, inst.currency) == ("FUT", 1000.0, "USD")


def test_pysystemtrade_folder_and_multiple_prices():
    data = load(shared(f"{PST}/adjusted_prices"))
    check_stream(data)
    assert data.symbols == ("CORN", "EUROSTX", "MXP", "SOFR", "US10", "V2X")
    mult = {i.symbol: (i.id, i.multiplier, i.currency) for i in data.instruments}
    assert mult["CORN"] == (1, 50.0, "USD") and mult["MXP"] == (3, 500_000.0, "USD")
    assert mult["EUROSTX"] == (2, 10.0, "EUR") and mult["US10"] == (5, 1000.0, "USD")
    assert data.ts_first == utc("1972-10-18T23:00:00Z")
    last = {s: data.records["ts_event"][data.records["instrument_id"] == i].max() for s, (i, _, _) in mult.items()}
    assert data.ts_last == utc("2023-08-31T20:00:00Z")
    assert {pd.Timestamp(t, tz="UTC").date().isoformat() for t in last.values()} == {"2023-08-30", "2023-08-31"}
    assert pd.Timestamp(last["CORN"], tz="UTC").date().isoformat() == "2023-08-30"  # its last adjusted price
    multiple = load_pysystemtrade(shared(f"{PST}/multiple_prices/US10.csv"), kind="trade")
    t = multiple.trades()
    assert multiple.counts == {"TRADE": 48_423 - 1_719} and t["price"][-1] == 111.078125
    assert np.isnan(t["size"]).all() and np.all(t["aggressor"] == 0)
    fx = load(shared(f"{PST}/fx_prices/EURUSD.csv")).instruments.by_symbol("EURUSD")
    assert (fx.sec_type, fx.currency) == ("CASH", "USD")


# --------------------------------------------------------------------------- format detection


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        (EURUSD, "histdata-quotes"),
        (USDJPY, "quotes-csv"),
        (LOBSTER, "lobster"),
        (BINANCE, "binance-raw"),
        (BITSTAMP, "bitstamp"),
        (BITSTAMP_TRADES, "bitstamp-trades"),
        (f"{PST}/adjusted_prices/CORN.csv", "pysystemtrade"),
        (f"{PST}/multiple_prices", "pysystemtrade"),
    ],
)
def test_detect_format(name, fmt):
    assert detect_format(shared(name)) == fmt


def test_an_unknown_format_names_the_known_ones(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, world\n")
    with pytest.raises(DataFormatError, match="unknown data format") as err:
        load(path)
    assert str(path) in str(err.value) and all(name in str(err.value) for name in FORMATS)


# --------------------------------------------------------------------------- malformed input


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


QUOTES = "timestamp,bid,ask\n2024-01-02T10:00:00Z,1.10,1.20\n2024-01-02T10:00:01Z,1.11,1.21\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (QUOTES + "2024-01-02T10:00:02Z,abc,1.2\n", 4, "bid", "not a number (got 'abc')"),
        (QUOTES + "2024-01-02T10:00:02Z,1.1\n", 4, "ask", "missing: the row has 2 fields"),
        (QUOTES + "2024-01-02T10:00:02Z,1.1,1.2,9\n", 4, "column 4", "extra field"),
        (QUOTES + "yesterday,1.1,1.2\n", 4, "timestamp", "not a timestamp in ISO-8601 form"),
        (QUOTES + "2024-01-02T09:00:00Z,1.1,1.2\n", 4, "timestamp", "time goes backwards"),
        (QUOTES + "2024-01-02T10:00:02Z,inf,1.2\n", 4, "bid", "not a finite number"),
        ("timestamp,bid\n2024-01-02T10:00:00Z,1.1\n", 1, "ask", "missing column in the header"),
        ("2024-01-02T10:00:00Z,1.1,1.2\n", 1, "ts_event", "missing column in the header"),
    ],
)
def test_malformed_quote_csv(tmp_path, text, line, field, words):
    path = write(tmp_path, "q.csv", text)
    with pytest.raises(DataFormatError) as err:
        load(path, format="quotes-csv")
    message = str(err.value)
    assert message.startswith(f"{path}, line {line}, field {field!r}: ") and words in message
    assert (err.value.line, err.value.field) == (line, field)


def test_the_earliest_bad_line_is_reported(tmp_path):
    path = write(tmp_path, "q.csv", QUOTES + "2024-01-02T10:00:02Z,1.1,x\nnot-a-time,1.1,1.2\n")
    with pytest.raises(DataFormatError, match=r", line 4, field 'ask'"):
        load(path)


def test_skip_counts_what_it_leaves_out(tmp_path):
    text = QUOTES + "2024-01-02T10:00:02Z,abc,1.2\n2024-01-02T10:00:03Z,1.1\n2024-01-02T10:00:04Z,1.12,1.22\n"
    data = load(write(tmp_path, "q.csv", text), on_error="skip")
    assert data.skipped == 2 and data.counts == {"QUOTE": 3} and data.rows == 5
    assert "line 4, field 'bid'" in data.errors[0] and "line 5, field 'ask'" in data.errors[1]


def test_malformed_histdata(tmp_path):
    text = "20200101 170000065,1.1212,1.1217,0\n20200101 17000x065,1.1212,1.1217,0\n"
    path = write(tmp_path, "eurusd.csv", text)
    with pytest.raises(DataFormatError, match=r"line 2, field 'timestamp': not a timestamp"):
        load(path)


LOB_NAME = "TEST_2012-06-21_34200000_57600000_{}_1.csv"


def lobster_pair(tmp_path: Path, messages: str, book: str) -> Path:
    write(tmp_path, LOB_NAME.format("orderbook"), book)
    return write(tmp_path, LOB_NAME.format("message"), messages)


BOOK_ROWS = "5802300,100,5794000,500\n5802300,100,5794000,400\n5802300,100,5794000,300\n"


@pytest.mark.parametrize(
    ("messages", "line", "field", "words"),
    [
        ("34200.1,1,11,100,5794000,1\n34200.2,9,11,100,5794000,1\n34200.3,3,11,100,5794000,1\n", 2, "type", "1-7"),
        ("34200.1,1,11,100,5794000,1\n34200.2,3,11,100,5794000,0\n34200.3,3,11,100,5794000,1\n", 2, "direction", ""),
        (
            "34200.1,1,11,100,5794000,1\n34200.05,3,11,100,5794000,1\n34200.3,3,1,100,5794000,1\n",
            2,
            "time",
            "backwards",
        ),
        ("34200.1,1,11,100,5794000,1\n34200.2,3,11,1x0,5794000,1\n34200.3,3,1,100,5794000,1\n", 2, "size", "integer"),
        ("34200.1,1,11,100,5794000,1\n34200.2,3,11,100,5794000,1\n", 3, "row", "must pair up"),
    ],
)
def test_malformed_lobster(tmp_path, messages, line, field, words):
    path = lobster_pair(tmp_path, messages, BOOK_ROWS)
    with pytest.raises(DataFormatError) as err:
        load(path)
    assert (err.value.line, err.value.field) == (line, field) and words in str(err.value)
    assert "TEST_2012-06-21" in str(err.value)


def test_lobster_skip_drops_a_message_with_its_book_row(tmp_path):
    messages = "34200.1,1,11,100,5794000,1\n34200.2,9,11,100,5794000,1\n34200.3,4,11,30,5794000,1\n"
    data = load(lobster_pair(tmp_path, messages, BOOK_ROWS), on_error="skip")
    assert data.skipped == 1 and data.counts == {"BOOK": 2, "TRADE": 1, "QUOTE": 2}
    book = data.book()
    assert book["action"].tolist() == [BookAction.ADD, BookAction.EXECUTE] and book["size"].tolist() == [100, 70]


FEED = (
    '1000 {"stream":"x@bookTicker","data":{"e":"bookTicker","s":"BTCUSDT","b":"1.5","B":"2","a":"1.6","A":"3",'
    '"T":5,"E":5}}\n'
    '2000 {"stream":"x@trade","data":{"e":"trade","s":"BTCUSDT","t":7,"p":"1.55","q":"0.5","m":true,"T":6,"E":6}}\n'
    '3000 {"stream":"x@depth","data":{"e":"depthUpdate","s":"BTCUSDT","E":7,"T":7,"U":10,"u":12,"pu":9,'
    '"b":[["1.5","1"],["1.4","0"]],"a":[["1.6","2"]]}}\n'
)


def test_binance_small_feed(tmp_path):
    data = load(write(tmp_path, "feed.gz", FEED))
    assert data.counts == {"QUOTE": 1, "TRADE": 1, "BOOK": 3}
    b = data.book()
    assert b["action"].tolist() == [BookAction.MODIFY, BookAction.DELETE, BookAction.MODIFY]
    assert b["side"].tolist() == [Side.BUY, Side.BUY, Side.SELL] and b["ts_recv"].tolist() == [3000] * 3
    assert data.trades()["aggressor"][0] == Side.SELL and data.quotes()["ts_event"][0] == 5_000_000


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ('4000 {"stream":"x","data":{"e":"trade",', "json", "not valid JSON"),
        ("40x0 {}", "local_ts", "not an integer"),
        ('4000 {"stream":"x","data":{"e":"markPrice","s":"BTCUSDT"}}', "data.e", "an event type"),
        ('4000 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":8,"p":"1.5","m":true,"T":6}}', "data.q", "missing"),
        (
            '4000 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":8,"p":"x","q":"1","m":true,"T":6}}',
            "data.p",
            "number",
        ),
        (
            '4000 {"stream":"x","data":{"e":"trade","s":"ETHUSDT","t":8,"p":"1","q":"1","m":true,"T":6}}',
            "data.s",
            "symbol",
        ),
    ],
)
def test_malformed_binance(tmp_path, line, field, words):
    path = write(tmp_path, "feed.gz", FEED + line + "\n" + FEED.splitlines()[0] + "\n")
    with pytest.raises(DataFormatError) as err:
        load(path)
    assert (err.value.line, err.value.field) == (4, field) and words in str(err.value)
    data = load(path, on_error="skip")
    assert data.skipped == 1 and data.rows == 5 and sum(data.counts.values()) == 6


def test_truncated_gzip(tmp_path):
    whole = gzip.compress((FEED * 50).encode())
    path = tmp_path / "feed.gz"
    path.write_bytes(whole[: len(whole) - 30])
    with pytest.raises(DataFormatError, match="truncated gzip stream") as err:
        load(path)
    assert err.value.line is not None and err.value.line > 1
    data = load(path, on_error="skip")
    assert data.extra["truncated"] and data.skipped <= 1 and data.rows >= err.value.line - 1


BITSTAMP_HEAD = "id,timestamp,exchange_timestamp,price,volume,action,direction\n"


@pytest.mark.parametrize(
    ("rows", "line", "field", "words"),
    [
        ("1,1000,900,78000.0,0.5,created,bid\n1,1001,901,78000.0,0.5,removed,bid\n", 3, "action", "not one of"),
        (
            "1,1000,900,78000.0,0.5,created,bid\n1,1001,899,78000.0,0.5,deleted,bid\n",
            3,
            "exchange_timestamp",
            "backwards",
        ),
        ("1,1000,900,78000.0,0.5,created,buy\n", 2, "direction", "not one of bid, ask"),
        ("1,1000,900,-5,0.5,created,bid\n", 2, "price", "negative"),
    ],
)
def test_malformed_bitstamp(tmp_path, rows, line, field, words):
    path = write(tmp_path, "orders.csv.gz", BITSTAMP_HEAD + rows)
    with pytest.raises(DataFormatError) as err:
        load(path)
    assert (err.value.line, err.value.field) == (line, field) and words in str(err.value)


def test_bitstamp_header_must_match(tmp_path):
    path = write(tmp_path, "orders.csv", "id,timestamp,exchange_timestamp,price,volume,action\n1,2,3,4,5,created\n")
    with pytest.raises(DataFormatError, match=r"line 1, field 'direction'"):
        load_bitstamp(path)


@pytest.mark.parametrize(
    ("rows", "line", "field"),
    [
        ("2020-01-01 23:00:00,1.5\n2020-01-0x 23:00:00,1.6\n", 3, "DATETIME"),
        ("2020-01-02 23:00:00,1.5\n2020-01-01 23:00:00,1.6\n", 3, "DATETIME"),
        ("2020-01-01 23:00:00,1.5\n2020-01-02 23:00:00,1.6.1\n", 3, "price"),
    ],
)
def test_malformed_pysystemtrade(tmp_path, rows, line, field):
    path = write(tmp_path, "US10.csv", "DATETIME,price\n" + rows)
    with pytest.raises(DataFormatError) as err:
        load(path)
    assert (err.value.line, err.value.field) == (line, field)


def test_not_utf8(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(QUOTES.encode() + b"2024-01-02T10:00:02Z,1.1,\xff\xfe\n")
    with pytest.raises(DataFormatError, match="line 4: not UTF-8"):
        load_quotes(path)
