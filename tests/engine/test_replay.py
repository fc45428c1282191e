"""Replay: byte-identical results for identical input, consistent result files, real data files
through the CLI, data errors that name file, line and field, and the simulated venue's fill
model, commission and latency (on hand-built events, with a user strategy loaded from a file)."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, require

from quayside.core import wire
from quayside.core.engine.config import StrategyConfig
from quayside.core.instruments import default_registry
from quayside.core.replay.recording import read_recording
from quayside.core.replay.runner import ReplayConfig, run_replay
from quayside.core.replay.venue import VenueConfig
from quayside.core.wire import Flag, OrderStatus, RecordKind

QUAYSIDE = str(Path(sys.executable).with_name("quayside"))
TIMEOUT = 600.0
DATA_RUNS = {
    "eurusd": SHARED_DATA / "eurusd-quotes-2020-01-01.csv",
    "lobster": SHARED_DATA / "lobster-goog-2012-06-21-l10.zip",
}


# --------------------------------------------------------------------------- the CLI


class CliRun:
    """One ``quayside replay`` process; ``result()`` waits for it (once) and checks it succeeded."""

    def __init__(self, out: Path, args: list[str]):
        self.out = out
        cmd = [QUAYSIDE, "replay", "--out", str(out), "--no-progress", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._output: tuple[str, str] | None = None

    def result(self) -> tuple[str, Path]:
        if self._output is None:
            self._output = self.proc.communicate(timeout=TIMEOUT)
        stdout, stderr = self._output
        assert self.proc.returncode == 0, f"{self.proc.args} exited {self.proc.returncode}\n{stdout}\n{stderr}"
        return stdout, self.out


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, CliRun]:
    """Every ``quayside replay`` run of this module, started at once; each test waits for its own."""
    base = tmp_path_factory.mktemp("replay-cli")
    runs = {name: ["--duration-s", "600"] for name in ("synthetic-a", "synthetic-b")}
    runs |= {name: ["--data", str(path)] for name, path in DATA_RUNS.items() if path.exists()}
    procs = {name: CliRun(base / name, args) for name, args in runs.items()}
    yield procs
    for run in procs.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


def finished(cli_runs, name: str) -> tuple[str, Path]:
    return cli_runs[name].result()


def test_replay_twice_gives_byte_identical_results(cli_runs):
    _, a = finished(cli_runs, "synthetic-a")
    _, b = finished(cli_runs, "synthetic-b")
    names = sorted(p.name for p in a.iterdir())
    expected = ["denials.csv", "equity.csv", "equity.png", "feed.qsf", "fills.csv", "orders.csv"]
    assert names == sorted([*expected, "positions.csv", "summary.json", "timing.json"])
    assert names == sorted(p.name for p in b.iterdir())
    compared = [n for n in names if n != "timing.json"]  # wall-clock throughput: the one file that differs
    match, mismatch, errors = filecmp.cmpfiles(a, b, compared, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert sorted(match) == sorted(compared)


def test_replay_results_are_consistent(cli_runs):
    stdout, out = finished(cli_runs, "synthetic-a")
    summary = json.loads((out / "summary.json").read_text())
    orders = pd.read_csv(out / "orders.csv")
    fills = pd.read_csv(out / "fills.csv")
    denials = pd.read_csv(out / "denials.csv")
    positions = pd.read_csv(out / "positions.csv").set_index("symbol")
    equity = pd.read_csv(out / "equity.csv")
    assert summary["orders"] >= 10 and summary["fills"] >= 10
    assert (summary["orders"], summary["fills"], summary["denials"]) == (len(orders), len(fills), len(denials))
    assert summary["equity_samples"] == len(equity) > 500  # one a second over 600 s
    assert sorted(summary["instruments"]) == sorted(positions.index)
    net = fills.groupby("symbol")["quantity"].sum().reindex(positions.index, fill_value=0.0)
    np.testing.assert_allclose(net, positions["position"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(positions["engine_position"], positions["position"], rtol=0, atol=1e-9)
    assert summary["final_position"] == pytest.approx(positions["position"].to_dict())
    assert summary["pnl"] == pytest.approx(positions["pnl"].sum())
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"orders        {summary['orders']:,}" in stdout

    feed = read_recording(out / "feed.qsf")
    kinds = feed["kind"]
    feed_orders = feed[kinds == RecordKind.ORDER].view(wire.order_dtype)
    assert feed_orders["order_id"].tolist() == orders["order_id"].tolist()
    assert feed_orders["quantity"].tolist() == orders["quantity"].tolist()
    assert (kinds == RecordKind.FILL).sum() == len(fills)
    assert (kinds == RecordKind.QUOTE).sum() + (kinds == RecordKind.TRADE).sum() == summary["events"]
    assert np.all(feed["flags"] & Flag.REPLAY)  # everything in a backtest's feed says so
    assert np.all(np.diff(feed["seq"].astype(np.int64)) == 1)


@pytest.mark.parametrize("name, events", [("eurusd", 9_500), ("lobster", None)])
def test_replay_of_real_data_files(cli_runs, name, events):
    require(DATA_RUNS[name].exists(), f"{DATA_RUNS[name]} is not present")
    stdout, out = finished(cli_runs, name)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["events"] > 1_000 if events is None else summary["events"] == events
    for line in ("events", "orders", "P&L", "Sharpe", "max drawdown", "results"):
        assert line in stdout
    assert summary["orders"] == len(pd.read_csv(out / "orders.csv")) > 0


def test_malformed_data_file_names_file_line_and_field(tmp_path):
    bad = tmp_path / "eurusd-quotes-bad.csv"
    bad.write_text("20200101 170000065,1.121200,1.121720,0\n20200101 170010447,1.121200,1.121920,0\n")
    bad.write_text(bad.read_text() + "20200101 170010498,1.121170,1.12x610,0\n")
    done = subprocess.run(
        [QUAYSIDE, "replay", "--data", str(bad), "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(bad) in done.stderr and "line 3" in done.stderr and "field 'ask'" in done.stderr
    assert "1.12x610" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


# --------------------------------------------------------------------------- the venue model

# A user strategy in a file of its own: one limit order on the first quote, as its parameters say.
PROBE = textwrap.dedent(
    '''
    """A probe for venue tests: one limit order on the first quote of an instrument."""

    import numpy as np
    from pydantic import BaseModel, ConfigDict

    from quayside.core.engine.state import IntentAction
    from quayside.core.jit import kernel
    from quayside.core.wire import OrderType, Side, TimeInForce

    NAME = "venue_probe"
    STATE_WIDTH = 1


    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        side: int = 1
        tif: str = "IOC"
        offset_ticks: float = 0.0  # from the opposite touch, positive = more aggressive
        quantity: float = 10.0


    def params_array(params, registry, instruments):
        tif = TimeInForce.IOC if params.tif == "IOC" else TimeInForce.DAY
        return np.array([params.side, tif, params.offset_ticks, params.quantity], dtype=np.float64)


    @kernel
    def on_quote_nb(params, sstate, inst, static, orders, iid, now, intents):
        if sstate[iid, 0] != 0.0:
            return 0
        sstate[iid, 0] = 1.0
        side = int(params[0])
        touch = inst[iid].ask if side == Side.BUY else inst[iid].bid
        it = intents[0]
        it.action = IntentAction.NEW
        it.instrument_id = iid
        it.side = side
        it.order_type = OrderType.LIMIT
        it.tif = int(params[1])
        it.price = touch + side * params[2] * static[iid].tick_size
        it.quantity = params[3]
        return 1


    @kernel
    def on_fill_nb(params, sstate, inst, static, orders, iid, quantity, price, now, intents):
        return 0
    '''
)

AAPL = 3
T0 = 1_700_000_000 * 10**9
RECV_US = 100  # data feed latency of the hand-built events
VENUE = {"order_latency_us": 50.0, "response_latency_us": 70.0, "commission_bps": 1.0, "commission_per_unit": 0.005}
VENUE["commission_min"] = 0.5


def quote_at(t_us: int, bid: float, ask: float) -> np.ndarray:
    q = np.zeros(1, wire.quote_dtype)
    q["kind"], q["version"], q["flags"], q["instrument_id"] = RecordKind.QUOTE, 1, Flag.REPLAY, AAPL
    q["ts_event"] = T0 + t_us * 1000
    q["ts_recv"] = q["ts_event"] + RECV_US * 1000
    q["bid_price"], q["ask_price"], q["bid_size"], q["ask_size"] = bid, ask, 500.0, 500.0
    return q.view(wire.record_dtype)


def trade_at(t_us: int, price: float) -> np.ndarray:
    t = np.zeros(1, wire.trade_dtype)
    t["kind"], t["version"], t["flags"], t["instrument_id"] = RecordKind.TRADE, 1, Flag.REPLAY, AAPL
    t["ts_event"] = T0 + t_us * 1000
    t["ts_recv"] = t["ts_event"] + RECV_US * 1000
    t["price"], t["size"] = price, 5.0
    return t.view(wire.record_dtype)


@pytest.fixture(scope="module")
def probe_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("strategies") / "venue_probe.py"
    path.write_text(PROBE)
    return path


def probe_replay(probe_path: Path, events: list[np.ndarray], venue: dict | None = None, **params):
    config = ReplayConfig(
        strategy=StrategyConfig(name=str(probe_path), instruments=["AAPL"], params=params),
        venue=VenueConfig(**{**VENUE, **(venue or {})}),
        write_feed=False,
    )
    result = run_replay(np.concatenate(events), config, default_registry())
    kept = result.kept
    statuses = kept[kept["kind"] == RecordKind.ORDER_STATUS].view(wire.order_status_dtype)
    assert len(result.orders) == 1 and result.summary["strategy"] == "venue_probe"
    return result, [int(s) for s in statuses["status"]]


def commission(qty: float, price: float) -> float:
    return max(qty * price * VENUE["commission_bps"] * 1e-4 + qty * VENUE["commission_per_unit"], 0.5)


@pytest.mark.parametrize("qty", [100.0, 10.0])  # commission above, and at, its minimum
def test_marketable_ioc_fills_at_the_venue_touch_after_the_latencies(probe_path, qty):
    # BUY IOC at the ask (100.04) decided when the quote is received (t = 100 µs), at the venue
    # 50 µs later; meanwhile (t = 120 µs) the ask improved to 100.03: the fill is at the touch.
    events = [quote_at(0, 100.00, 100.04), quote_at(120, 100.00, 100.03), quote_at(5_000, 100.00, 100.03)]
    result, statuses = probe_replay(probe_path, events, quantity=qty)
    order, fills = result.orders.iloc[0], result.fills
    assert (order["side"], order["order_type"], order["tif"]) == ("BUY", "LIMIT", "IOC")
    assert order["price"] == pytest.approx(100.04)
    assert order["ts_event"] == T0 + RECV_US * 1000  # replay: sent on the event clock
    assert len(fills) == 1 and statuses == [OrderStatus.FILLED]
    f = fills.iloc[0]
    assert (f["price"], f["quantity"]) == (100.03, qty)
    assert f["commission"] == pytest.approx(commission(qty, 100.03), rel=1e-12)
    assert (qty == 10.0) == (f["commission"] == 0.5)
    latency_ns = (VENUE["order_latency_us"] + VENUE["response_latency_us"]) * 1000
    assert f["ts_recv"] - order["ts_event"] == latency_ns
    assert f["ts_event"] - order["ts_event"] == VENUE["order_latency_us"] * 1000
    pos = result.positions.iloc[0]
    assert (pos["position"], pos["engine_position"]) == (qty, qty)
    assert pos["cash"] == pytest.approx(-qty * 100.03 - f["commission"])
    assert result.summary["latency_ns"]["order_to_fill_p50"] == latency_ns


@pytest.mark.parametrize("side, moved", [(1, (100.00, 100.05)), (-1, (99.99, 100.04))])
def test_ioc_that_is_no_longer_marketable_on_arrival_is_cancelled(probe_path, side, moved):
    # at the touch when decided, but the touch moves away before the order reaches the venue
    events = [quote_at(0, 100.00, 100.04), quote_at(120, *moved), quote_at(5_000, *moved)]
    result, statuses = probe_replay(probe_path, events, side=side)
    assert len(result.fills) == 0 and statuses == [OrderStatus.CANCELLED]
    assert result.positions.iloc[0]["position"] == 0.0


def test_non_marketable_ioc_is_cancelled(probe_path):
    events = [quote_at(0, 100.00, 100.04), quote_at(5_000, 100.00, 100.04)]
    result, statuses = probe_replay(probe_path, events, offset_ticks=-2.0)  # BUY at 100.02
    assert len(result.fills) == 0 and statuses == [OrderStatus.CANCELLED]


@pytest.mark.parametrize("side", [1, -1])
def test_resting_limit_fills_at_its_price_when_a_trade_goes_through_it(probe_path, side):
    # 2 ticks back from the opposite touch: BUY at 100.04 - 0.02, SELL at 100.00 + 0.02, inside the spread
    bid, ask, price = 100.00, 100.04, 100.02
    through = price - 0.01 * side  # strictly beyond the order's price, seen from its side
    events = [
        quote_at(0, bid, ask),
        trade_at(1_000, price),  # touches: no fill
        quote_at(2_000, bid, ask),
        trade_at(3_000, through),
        quote_at(4_000, bid, ask),
    ]
    result, statuses = probe_replay(
        probe_path, events, venue={"fill_on_quote_cross": False}, side=side, tif="DAY", offset_ticks=-2.0
    )
    order = result.orders.iloc[0]
    assert order["tif"] == "DAY" and order["price"] == pytest.approx(price)
    assert statuses == [OrderStatus.SUBMITTED, OrderStatus.FILLED]
    assert len(result.fills) == 1
    f = result.fills.iloc[0]
    assert f["price"] == pytest.approx(price)  # its own price, not the trade's
    assert f["quantity"] == 10.0 * side
    assert f["ts_event"] == T0 + 3_000_000  # the trade through it, not the one at its price
    assert f["ts_recv"] == f["ts_event"] + VENUE["response_latency_us"] * 1000


def test_resting_limit_fills_when_the_opposite_quote_crosses_it(probe_path):
    events = [quote_at(0, 100.00, 100.04), quote_at(1_000, 99.98, 100.02), quote_at(2_000, 99.98, 100.01)]
    result, statuses = probe_replay(probe_path, events, tif="DAY", offset_ticks=-2.0)  # BUY 100.02
    assert statuses == [OrderStatus.SUBMITTED, OrderStatus.FILLED]
    f = result.fills.iloc[0]
    assert f["ts_event"] == T0 + 2_000_000 and f["price"] == pytest.approx(100.02)  # only strictly beyond
