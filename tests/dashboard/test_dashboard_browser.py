"""The page in a real browser against a real live engine: positions and a fill arrive, the kill
switch is refused without credentials and works with them, the engine halts and cancels its
working orders, and the audit log has both attempts.

Chromium (Debian's, driven by Playwright) loads the dashboard, which reads the engine's real
feed ring and writes its real control ring. The test plays the gateway and the broker
(``tests/engine/_engine_harness.py``) for an engine running the market maker, which keeps a bid
and an offer working. A screenshot of the page after the halt is kept as a test artifact
in ``build/test-artifacts/`` (or ``$QUAYSIDE_TEST_ARTIFACTS``; its path is printed).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _dashboard import TOKEN, Dashboard
from _engine_harness import LiveEngine, fill, order_status, quote
from conftest import require

from quayside.core.wire import ControlCommand, LogCode, OrderStatus, RecordKind, Side, TradingState

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run",
]  # fmt: skip
EURUSD = 1
ENGINE = {
    "heartbeat_ms": 100.0,
    "strategy": {
        "name": "market_maker",
        "instruments": ["EURUSD"],
        "params": {"half_spread_ticks": 1.0, "quote_qty": 10.0, "max_inventory": 50.0, "min_requote_ms": 0.0},
    },
    "risk": {"duplicate_window_ms": 0.0},
}


def outbound(engine: LiveEngine, n: int) -> list:
    """The next ``n`` records the engine writes to its outbound ring (the broker's side)."""
    got: list = []
    engine.wait_until(lambda: len(got.__iadd__(engine.poll_outbound())) >= n, f"{n} outbound records")
    assert len(got) == n, got
    return got


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


@pytest.mark.browser
@pytest.mark.slow
def test_kill_switch_from_the_page_halts_a_live_engine_and_cancels_its_orders(shm_dir, tmp_path, monkeypatch):
    require(os.access(CHROMIUM, os.X_OK) or shutil.which("chromium") is not None, f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.delenv("QUAYSIDE_DASHBOARD_TOKEN", raising=False)
    engine = LiveEngine(ENGINE, shm_dir, tmp_path)
    try:
        engine.start()
        with Dashboard(shm_dir, tmp_path, tokens=f"alice:{TOKEN}\n", engine=engine) as d, sync_playwright() as p:
            # the market maker quotes both sides; the broker acknowledges both: two working orders
            engine.send(quote(EURUSD, 1.1000, 1.1001))
            orders = outbound(engine, 2)
            assert sorted(int(o["side"]) for o in orders) == [Side.SELL, Side.BUY]
            engine.send(*(order_status(o, OrderStatus.SUBMITTED) for o in orders))

            browser = launch(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(d.url)
            expect(page.locator("#connection")).to_have_text("live", timeout=30_000)
            expect(page.locator("#trading-state")).to_have_attribute("data-state", "ACTIVE", timeout=30_000)

            # a partial fill of the bid: the row and the position appear, the order stays working
            buy = next(o for o in orders if o["side"] == Side.BUY)
            engine.send(fill(buy, 4.0, float(buy["price"]), fill_id=9001))
            expect(page.locator("#blotter tr[data-kind=fill][data-fill-id='9001']")).to_have_count(1, timeout=10_000)
            position = page.locator("#positions tr[data-instrument=EURUSD]")
            expect(position).to_contain_text("4", timeout=10_000)
            expect(page.locator("#blotter tr[data-kind=order]")).to_have_count(2)

            # the kill switch without credentials: confirmed, refused, nothing reaches the engine
            page.click("#btn-halt")
            expect(page.locator("#confirm")).to_be_visible()
            expect(page.locator("#confirm-text")).to_contain_text("KILL SWITCH")
            page.click("#confirm-yes")
            expect(page.locator("#control-result")).to_contain_text("refused (401)", timeout=10_000)
            assert [e["result"] for e in d.audit()] == ["refused"]
            # ... and cancelling at the confirm step sends nothing at all
            page.fill("#token", TOKEN)
            page.click("#btn-halt")
            page.click("#confirm-no")
            assert len(d.audit()) == 1

            # with the token: the engine halts and cancels both working orders in the same iteration
            page.click("#btn-halt")
            page.click("#confirm-yes")
            expect(page.locator("#control-result")).to_contain_text("halt sent by alice", timeout=10_000)
            ctl = engine.next_feed(RecordKind.CONTROL, command=ControlCommand.HALT)
            state = engine.next_feed(RecordKind.LOG, code=LogCode.STATE_CHANGED)
            assert (state["i0"], state["i1"]) == (TradingState.ACTIVE, TradingState.HALTED)
            cancelled = {int(engine.next_feed(RecordKind.CANCEL)["order_id"]) for _ in orders}
            assert cancelled == {int(o["order_id"]) for o in orders}
            applied = engine.next_feed(RecordKind.LOG, code=LogCode.CONTROL_APPLIED)
            assert applied["i1"] == ctl["command_id"]
            cancels = outbound(engine, 2)
            assert {int(c["kind"]) for c in cancels} == {RecordKind.CANCEL}
            assert {int(c["reason"]) for c in cancels} == {ControlCommand.HALT}

            expect(page.locator("#trading-state")).to_have_attribute("data-state", "HALTED", timeout=10_000)
            expect(page.locator("#blotter tr[data-kind=cancel]")).to_have_count(2, timeout=10_000)
            audit = d.audit()
            assert [(e["result"], e["operator"]) for e in audit] == [("refused", None), ("sent", "alice")]
            assert audit[1]["command_id"] == int(ctl["command_id"]) and audit[1]["address"] == "127.0.0.1"

            artifacts = Path(
                os.environ.get("QUAYSIDE_TEST_ARTIFACTS") or Path(__file__).parents[2] / "build" / "test-artifacts"
            )
            artifacts.mkdir(parents=True, exist_ok=True)
            shot = artifacts / "dashboard-halted.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            print(f"screenshot: {shot}")
            assert not errors, errors
            browser.close()
    finally:
        engine.close()
