"""The dashboard's JSON API, event stream and controls, on real rings and a real HTTP port.

The test is the engine: it publishes feed records into a real feed ring and reads the control
ring the way the engine does. Controls are refused without a configured token (403, saying
how), without or with a wrong bearer token (401), and land in the control ring with the right
scope when the token is right; every attempt is in the audit log.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from _dashboard import AAPL, EURUSD, OTHER_TOKEN, TOKEN, Dashboard, denial, fill, heartbeat, log, order, quote, wait_for

from quayside.core.wire import ControlCommand, DenyReason, LimitId, LogCode, Side, TradingState
from quayside.support.dashboard.auth import TOKEN_ENV

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _no_token_in_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("QUAYSIDE_TOKENS_FILE", raising=False)
    monkeypatch.delenv("QUAYSIDE_AUDIT_LOG", raising=False)


def summary(url: str) -> dict:
    r = httpx.get(f"{url}/api/summary", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_panels_show_positions_pnl_limits_blotter_latency_and_health(shm_dir, tmp_path):
    with Dashboard(shm_dir, tmp_path) as d:
        d.publish(
            log(LogCode.ENGINE_STARTED), log(LogCode.BROKER_CONNECTED, i0=7), heartbeat(),
            quote(AAPL, 190.00, 190.02), order(1, AAPL, Side.BUY, 10.0, 190.02), fill(1, AAPL, 10.0, 190.02, 501),
            denial(2, AAPL, DenyReason.MAX_ORDER_QTY), quote(AAPL, 191.00, 191.02),
        )  # fmt: skip
        s = wait_for(lambda: (s := summary(d.url))["fills"] == 1 and s["positions"] and s, "the fill in the summary")
        (pos,) = s["positions"]
        assert (pos["instrument"], pos["strategy_id"], pos["quantity"]) == ("AAPL", 1, 10.0)
        assert pos["avg_price"] == pytest.approx(190.02)
        assert pos["mark"] == pytest.approx(191.00)  # a long position closes at the bid
        assert pos["unrealized"] == pytest.approx(10 * (191.00 - 190.02) - 1.0)  # open commission included
        assert s["trading"]["state"] == "ACTIVE" and not s["trading"]["fill_latch_engaged"]
        assert s["trading"]["denials"] == {"MAX_ORDER_QTY": 1}
        long_limit = next(r for r in s["limits"] if r["limit"] == "MAX_LONG_POSITION" and r["instrument"] == "AAPL")
        assert long_limit["used"] == 10.0 and long_limit["utilisation"] == pytest.approx(10.0 / long_limit["value"])
        total = s["latency"]["tick_to_order"]["total"]
        assert total["count"] == 1 and sum(total["counts"]) == 1 and total["mean_s"] == pytest.approx(9e-6)
        health = s["health"]
        assert health["broker"]["connected"] is True and health["engine"]["heartbeats"] == 1
        assert not health["feed"]["stale"] and health["feed"]["records"] == 8
        (aapl,) = [q for q in health["quotes"] if q["instrument"] == "AAPL"]
        assert aapl["age_s"] < 30 and aapl["stale_after_s"] == 5.0

        rows = httpx.get(f"{d.url}/api/blotter", timeout=10).json()["rows"]
        kinds = [r["kind"] for r in rows]
        assert kinds == ["engine", "engine", "order", "fill", "denial"]
        denied = rows[-1]
        assert (denied["reason"], denied["order_id"], denied["detail"]) == ("MAX_ORDER_QTY", 2, "limit 1000")
        assert (rows[3]["fill_id"], rows[3]["side"], rows[3]["quantity"]) == (501, "BUY", 10.0)
        later = httpx.get(f"{d.url}/api/blotter", params={"since": rows[3]["seq"]}, timeout=10).json()["rows"]
        assert [r["kind"] for r in later] == ["denial"]
        for path in ("positions", "limits", "latency", "status", "trading", "equity"):
            assert httpx.get(f"{d.url}/api/{path}", timeout=10).status_code == 200, path

        # the engine halts: the page's state follows the heartbeats and the state-change records
        d.publish(log(LogCode.STATE_CHANGED, i0=TradingState.ACTIVE, i1=TradingState.HALTED),
                  heartbeat(TradingState.HALTED))  # fmt: skip
        wait_for(lambda: summary(d.url)["trading"]["state"] == "HALTED", "HALTED in the summary")
        last = httpx.get(f"{d.url}/api/blotter", params={"limit": 1}, timeout=10).json()["rows"][0]
        assert last["detail"] == "trading state ACTIVE -> HALTED"


def test_controls_are_refused_while_no_token_is_configured_and_viewing_still_works(shm_dir, tmp_path):
    with Dashboard(shm_dir, tmp_path) as d:
        r = httpx.post(f"{d.url}/api/control/halt", json={}, headers=AUTH, timeout=10)
        assert r.status_code == 403
        assert "QUAYSIDE_DASHBOARD_TOKEN" in r.json()["detail"] and "QUAYSIDE_TOKENS_FILE" in r.json()["detail"]
        assert d.controls() == []
        (entry,) = d.audit()
        assert (entry["action"], entry["result"], entry["operator"], entry["address"]) == (
            "halt", "refused", None, "127.0.0.1",
        )  # fmt: skip
        s = summary(d.url)
        assert s["controls"]["enabled"] is False and "QUAYSIDE_DASHBOARD_TOKEN" in s["controls"]["detail"]


def test_controls_need_an_audit_log(shm_dir, tmp_path):
    with Dashboard(shm_dir, tmp_path, tokens=f"alice:{TOKEN}\n", audit=False) as d:
        r = httpx.post(f"{d.url}/api/control/halt", json={}, headers=AUTH, timeout=10)
        assert r.status_code == 403 and "QUAYSIDE_AUDIT_LOG" in r.json()["detail"]
        assert d.controls() == []


def test_controls_with_tokens_reach_the_control_ring_and_the_audit_log(shm_dir, tmp_path):
    tokens = f"# operators\nalice:{TOKEN}\nbob:{OTHER_TOKEN}\ncarol:short\n"
    with Dashboard(shm_dir, tmp_path, tokens=tokens) as d:
        url = f"{d.url}/api/control"
        assert httpx.post(f"{url}/halt", json={}, timeout=10).status_code == 401  # no token
        bad = httpx.post(f"{url}/halt", json={}, headers={"Authorization": "Bearer not-a-token"}, timeout=10)
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        short = httpx.post(f"{url}/halt", json={}, headers={"Authorization": "Bearer short"}, timeout=10)
        assert short.status_code == 401  # a token under 16 characters is ignored, not accepted
        assert d.controls() == []

        ok = httpx.post(f"{url}/halt", json={"instrument": "AAPL", "strategy_id": 1, "note": "test"}, headers=AUTH,
                        timeout=10)  # fmt: skip
        assert ok.status_code == 202, ok.text
        body = ok.json()
        assert (body["result"], body["operator"], body["instrument"]) == ("sent", "alice", "AAPL")
        (rec,) = wait_for(d.controls, "the HALT in the control ring")
        assert (rec["command"], rec["instrument_id"], rec["strategy_id"]) == (ControlCommand.HALT, AAPL, 1)
        assert rec["command_id"] == body["command_id"] and rec["issuer_id"] == d.settings.dashboard.issuer_id

        r = httpx.post(f"{url}/set-limit", json={"limit": "MAX_ORDER_QTY", "value": 50},
                       headers={"Authorization": f"Bearer {OTHER_TOKEN}"}, timeout=10)  # fmt: skip
        assert r.status_code == 202 and r.json()["operator"] == "bob"
        (rec,) = wait_for(d.controls, "the SET_LIMIT in the control ring")
        assert (rec["command"], rec["limit_id"], rec["value"], rec["instrument_id"]) == (
            ControlCommand.SET_LIMIT, LimitId.MAX_ORDER_QTY, 50.0, 0,
        )  # fmt: skip
        for action, command in [("resume", ControlCommand.RESUME), ("reduce-only", ControlCommand.REDUCE_ONLY),
                                ("cancel-all", ControlCommand.CANCEL_ALL)]:  # fmt: skip
            assert (
                httpx.post(f"{url}/{action}", json={"instrument": "EURUSD"}, headers=AUTH, timeout=10).status_code
                == 202
            )
            (rec,) = wait_for(d.controls, f"{action} in the control ring")
            assert (rec["command"], rec["instrument_id"]) == (command, EURUSD)

        # bad requests: 4xx naming the problem, nothing sent
        nope = httpx.post(f"{url}/halt", json={"instrument": "NOPE"}, headers=AUTH, timeout=10)
        assert nope.status_code == 422 and "NOPE" in nope.json()["detail"] and "AAPL" in nope.json()["detail"]
        for body in [{"limit": "MAX_ORDER_QTY", "value": -1}, {"limit": "NO_SUCH_LIMIT", "value": 1}, {"value": 1},
                     {"strategy_id": 300}, {"bogus": 1}]:  # fmt: skip
            r = httpx.post(f"{url}/set-limit", json=body, headers=AUTH, timeout=10)
            assert r.status_code == 422, (body, r.text)
        r = httpx.post(
            f"{url}/set-limit", content=b'{"limit": "MAX_ORDER_QTY", "value": NaN}', headers=AUTH, timeout=10
        )
        assert r.status_code == 422
        assert d.controls() == []

        audit = d.audit()
        results = [(e["action"], e["operator"], e["result"]) for e in audit]
        assert results == [
            ("halt", None, "refused"),
            ("halt", None, "refused"),
            ("halt", None, "refused"),
            ("halt", "alice", "sent"),
            ("set-limit", "bob", "sent"),
            ("resume", "alice", "sent"),
            ("reduce-only", "alice", "sent"),
            ("cancel-all", "alice", "sent"),
            ("halt", "alice", "invalid"),
        ]  # fmt: skip  (requests pydantic rejects never reach the handler: nothing to attribute)
        sent = audit[3]
        assert sent["instrument"] == "AAPL" and sent["strategy_id"] == 1 and sent["note"] == "test"
        assert sent["address"] == "127.0.0.1" and sent["command_id"] == body_id(ok) and sent["at"].endswith("+00:00")
        assert audit[4]["limit"] == "MAX_ORDER_QTY" and audit[4]["value"] == 50.0
        assert TOKEN not in d.audit_path.read_text()  # secrets never reach the audit log

        metrics = httpx.get(f"{d.url}/metrics", timeout=10).text
        assert 'quayside_dashboard_controls_total{action="halt",result="refused"} 3.0' in metrics


def body_id(response: httpx.Response) -> int:
    return response.json()["command_id"]


def test_the_environment_token_is_the_operator_named_operator(shm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with Dashboard(shm_dir, tmp_path) as d:
        r = httpx.post(f"{d.url}/api/control/resume", json={}, headers=AUTH, timeout=10)
        assert r.status_code == 202 and r.json()["operator"] == "operator"
        (rec,) = wait_for(d.controls, "the RESUME in the control ring")
        assert rec["command"] == ControlCommand.RESUME


def test_a_bare_token_in_the_secret_file_is_the_operator_named_operator(shm_dir, tmp_path):
    with Dashboard(shm_dir, tmp_path, tokens=f"{TOKEN}\n") as d:
        r = httpx.post(f"{d.url}/api/control/halt", json={}, headers=AUTH, timeout=10)
        assert r.status_code == 202 and r.json()["operator"] == "operator"


def test_without_an_engine_a_control_fails_plainly_and_is_audited(shm_dir, tmp_path):
    with Dashboard(shm_dir, tmp_path, tokens=f"alice:{TOKEN}\n", control_ring=str(shm_dir / "absent")) as d:
        r = httpx.post(f"{d.url}/api/control/halt", json={}, headers=AUTH, timeout=10)
        assert r.status_code == 503 and "no control ring" in r.json()["detail"]
        assert d.audit()[-1]["result"] == "failed"


def _events(lines):
    """Parse an SSE line stream into (event, data, id) tuples."""
    event, data, eid = None, [], None
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data)), eid
            event, data, eid = None, [], None
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line.startswith("id:"):
            eid = line[3:].strip()


def test_the_event_stream_delivers_a_fill_and_resumes_after_a_reconnect(shm_dir, tmp_path):
    with Dashboard(shm_dir, tmp_path) as d:
        d.publish(quote(EURUSD, 1.1, 1.1001))
        with httpx.stream("GET", f"{d.url}/api/events", timeout=10) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = _events(r.iter_lines())
            event, first, _ = next(events)
            assert event == "summary" and first["fills"] == 0
            d.publish(order(1, EURUSD, Side.BUY, 1000.0, 1.1001), fill(1, EURUSD, 1000.0, 1.1001, 77))
            seen = []
            for event, data, eid in events:
                if event == "row":
                    seen.append(data)
                    assert eid == str(data["seq"])
                    if data["kind"] == "fill":
                        break
            assert [r["kind"] for r in seen] == ["order", "fill"] and seen[1]["fill_id"] == 77
            for event, data, _ in events:  # a summary follows soon with the new position
                if event == "summary":
                    assert data["fills"] == 1 and data["positions"][0]["quantity"] == 1000.0
                    break
        d.publish(fill(1, EURUSD, 500.0, 1.1002, 78))
        wait_for(lambda: summary(d.url)["fills"] == 2, "the second fill")
        # a page that reconnects after row 2 (the first fill) gets what it missed, then lives on
        with httpx.stream("GET", f"{d.url}/api/events", headers={"Last-Event-ID": "2"}, timeout=10) as r:
            events = _events(r.iter_lines())
            assert next(events)[0] == "summary"
            event, data, eid = next(events)
            assert (event, data["fill_id"], eid) == ("row", 78, "3")


def test_bad_query_parameters_are_4xx(shm_dir, tmp_path):
    with Dashboard(shm_dir, tmp_path) as d:
        for path in ("/api/blotter?since=-1", "/api/blotter?limit=0", "/api/blotter?limit=abc", "/api/events?since=x"):
            r = httpx.get(f"{d.url}{path}", timeout=10)
            assert r.status_code == 422, path
        assert httpx.get(f"{d.url}/api/nothing", timeout=10).status_code == 404
        assert httpx.delete(f"{d.url}/api/control/halt", timeout=10).status_code == 405


def test_the_page_and_plotly_are_served_by_the_app_itself(shm_dir, tmp_path):
    with Dashboard(shm_dir, tmp_path) as d:
        page = httpx.get(d.url, timeout=10)
        assert page.status_code == 200 and '<script src="/vendor/plotly.min.js">' in page.text
        assert "http://" not in page.text and "https://" not in page.text  # nothing from another host
        js = httpx.get(f"{d.url}/vendor/plotly.min.js", timeout=10)
        assert js.status_code == 200 and "plotly" in js.text[:2000].lower() and len(js.content) > 1_000_000
        for name in ("dashboard.js", "dashboard.css"):
            assert httpx.get(f"{d.url}/static/{name}", timeout=10).status_code == 200
        assert httpx.get(f"{d.url}/docs", timeout=10).status_code == 404  # Swagger UI would need a CDN
        schema = httpx.get(f"{d.url}/openapi.json", timeout=10).json()
        assert {"/api/summary", "/api/control/halt", "/api/control/set-limit"} <= set(schema["paths"])
        assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_fills_arrive_in_order_under_load(shm_dir, tmp_path):
    """Many fills at once: every one becomes a row, in feed order, none twice."""
    with Dashboard(shm_dir, tmp_path) as d:
        d.publish(quote(EURUSD, 1.1, 1.1001))
        batch = np.concatenate([fill(1, EURUSD, 1.0, 1.1, k) for k in range(1, 1001)])
        d.publish(batch)
        wait_for(lambda: summary(d.url)["fills"] == 1000, "1000 fills")
        rows = httpx.get(f"{d.url}/api/blotter", params={"limit": 5000}, timeout=10).json()["rows"]
        assert [r["fill_id"] for r in rows] == list(range(1, 1001))


def test_the_equity_curve_is_thinned_without_losing_a_trough():
    from quayside.support.dashboard.service import thin_curve

    points = [(t, 100.0 - (t % 97), 100.0, float(t % 97)) for t in range(20_000)]
    points[12_345] = (12_345, 0.0, 100.0, 100.0)  # the deepest drawdown of the day
    thinned = thin_curve(points, 600)
    assert len(thinned) <= 600
    assert points[12_345] in thinned and thinned[-1] == points[-1]
    assert [p[0] for p in thinned] == sorted(p[0] for p in thinned)
    assert thin_curve(points[:10], 600) == points[:10]
