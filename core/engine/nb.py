"""The engine's jitted kernels: handle each inbound record, call the strategy, run pre-trade
risk, write orders to the outbound ring and every event to the feed; and the live loop.

Kernels take ``a`` (:class:`~quayside.core.engine.state.EngineArrays`), ``r``
(:class:`Rings`: outbound and feed ring arrays) and views of the records to handle. They
allocate nothing, log nothing and raise nothing: problems become denial and log records.

This module is also a template. The two imports tagged ``strategy-binding`` bind the strategy;
:mod:`quayside.core.engine.binding` writes a copy of this file with those lines pointing at
another strategy module, so that each strategy gets its own compiled (and cached) engine with
the strategy inlined into the loop, which a function pointer would prevent.
"""

from __future__ import annotations

from quayside.core.engine.state import N_LIMITS, ORDER_CAPACITY, IntentAction, SlotStatus
from quayside.core.feed.atomics import now_ns
from quayside.core.feed.idle import idle_nb
from quayside.core.feed.nb import cmd_offer_nb, cmd_peek_nb, cmd_release_nb, feed_claim_nb, feed_commit_nb
from quayside.core.jit import kernel
from quayside.core.risk.nb import check_new_order_nb, record_fill_nb, record_message_parts_nb, record_order_nb
from quayside.core.strategies.crossover import on_fill_nb as strategy_on_fill_nb  # strategy-binding
from quayside.core.strategies.crossover import on_quote_nb as strategy_on_quote_nb  # strategy-binding
from quayside.core.wire import (
    ControlCommand,
    DenyReason,
    Flag,
    LogCode,
    LogLevel,
    OrderStatus,
    PositionOrigin,
    RecordKind,
    Side,
    TradingState,
)

__all__ = ["process_record_nb", "run_live_nb", "heartbeat_nb", "clock_nb"]

U32_MAX = 4_294_967_295


# --------------------------------------------------------------------------- emitting


@kernel(inline="always")
def clock_nb(a, sim_now):
    """The engine clock: the wall clock live, the event clock in replay."""
    return sim_now if a.engine[0].replay else now_ns()


@kernel(inline="always")
def publish_nb(r, src, row):
    """Copy record ``src[row]`` ((n, 8) int64 words) onto the feed; the feed stamps ``seq``."""
    pos = feed_claim_nb(r.feed_words, 1)
    slot = pos & (r.feed_slots.shape[0] - 1)
    for w in range(8):
        r.feed_slots[slot, w] = src[row, w]
    r.feed_slots[slot, 1] = pos
    feed_commit_nb(r.feed_words, pos + 1)


@kernel
def log_nb(a, r, code, level, iid, now, i0, i1, a0, a1):
    rec = a.log_rec[0]
    rec.instrument_id = iid
    rec.ts_event = now
    rec.code = code
    rec.level = level
    rec.i0 = i0
    rec.i1 = i1
    rec.a0 = a0
    rec.a1 = a1
    publish_nb(r, a.log_words, 0)


@kernel
def deny_nb(a, r, iid, side, order_type, price, qty, reason, limit, ts_recv, now):
    eng = a.engine[0]
    d = a.denial_rec[0]
    d.instrument_id = iid
    d.ts_event = now
    d.ts_recv = ts_recv
    d.order_id = eng.next_order_id
    d.reason = reason
    d.side = side
    d.order_type = order_type
    d.price = price
    d.quantity = qty
    d.limit = limit
    eng.denials += 1
    publish_nb(r, a.denial_words, 0)


@kernel
def publish_position_nb(a, r, iid, now):
    st = a.inst[iid]
    p = a.position_rec[0]
    p.instrument_id = iid
    p.ts_event = now
    p.quantity = st.position
    p.avg_price = st.avg_price
    p.working_buy_qty = st.working_buy
    p.working_sell_qty = st.working_sell
    p.origin = PositionOrigin.ENGINE
    publish_nb(r, a.position_words, 0)


@kernel(inline="always")
def _dt_u32(dt):
    if dt < 0:
        return 0
    return dt if dt < U32_MAX else U32_MAX


# --------------------------------------------------------------------------- orders out


@kernel
def send_order_nb(a, r, iid, side, order_type, tif, price, qty, ts_recv, ts_seen, ts_decided):
    """Risk-check and send one new order; its order id, or minus the denial reason."""
    eng = a.engine[0]
    reason, limit = check_new_order_nb(a, iid, side, order_type, price, qty, ts_decided)
    oid = eng.next_order_id
    slot = a.orders[oid % ORDER_CAPACITY]
    if reason == 0 and slot.status != SlotStatus.FREE:
        reason, limit = DenyReason.TOO_MANY_ORDERS, float(ORDER_CAPACITY)
    if reason != 0:
        deny_nb(a, r, iid, side, order_type, price, qty, reason, limit, ts_recv, ts_decided)
        return -reason
    o = a.order_rec[0]
    o.instrument_id = iid
    o.ts_recv = ts_recv
    o.order_id = oid
    o.side = side
    o.order_type = order_type
    o.tif = tif
    o.price = price
    o.quantity = qty
    o.dt_queue_ns = _dt_u32(ts_seen - ts_recv) if ts_recv > 0 else 0
    o.dt_decide_ns = _dt_u32(ts_decided - ts_seen)
    ts_sent = clock_nb(a, ts_decided)
    o.ts_event = ts_sent
    if cmd_offer_nb(r.out_words, r.out_slots, a.order_words, 0, 1) < 0:
        eng.backpressure += 1
        deny_nb(a, r, iid, side, order_type, price, qty, DenyReason.OUTBOUND_FULL, 0.0, ts_recv, ts_sent)
        return -DenyReason.OUTBOUND_FULL
    eng.next_order_id = oid + 1
    eng.orders_out += 1
    slot.order_id = oid
    slot.instrument_id = iid
    slot.status = SlotStatus.PENDING_NEW
    slot.side = side
    slot.order_type = order_type
    slot.tif = tif
    slot.price = price
    slot.quantity = qty
    slot.filled = 0.0
    slot.ts_sent = ts_sent
    st = a.inst[iid]
    if side == Side.BUY:
        st.working_buy += qty
        st.buy_order_id = oid
    else:
        st.working_sell += qty
        st.sell_order_id = oid
    record_order_nb(a, iid, side, price, qty, ts_sent)  # duplicate guard and message rate
    publish_nb(r, a.order_words, 0)
    return oid


@kernel
def _send_cancel_nb(engine, orders, cancel_rec, cancel_words, msg_times, r, oid, reason, ts_recv, now):
    """``send_cancel_nb`` on just the arrays it uses: ``retry_cancels_nb`` runs behind a check
    after every record, and a call site that passes the whole state costs time on every record
    even when the check is false (measured at about 2 ns of the replay loop's ~45 ns/event)."""
    eng = engine[0]
    slot = orders[oid % ORDER_CAPACITY]
    if slot.order_id != oid or slot.status == SlotStatus.FREE or slot.status == SlotStatus.PENDING_CANCEL:
        return True
    c = cancel_rec[0]
    c.instrument_id = slot.instrument_id
    c.ts_recv = ts_recv
    c.order_id = oid
    c.reason = reason
    c.ts_event = now if eng.replay else now_ns()  # clock_nb
    if cmd_offer_nb(r.out_words, r.out_slots, cancel_words, 0, 1) < 0:
        eng.backpressure += 1
        if slot.status != SlotStatus.CANCEL_WANTED:
            slot.status = SlotStatus.CANCEL_WANTED
            eng.pending_cancels += 1
        return False
    if slot.status == SlotStatus.CANCEL_WANTED:
        eng.pending_cancels -= 1
    slot.status = SlotStatus.PENDING_CANCEL
    eng.cancels_out += 1
    record_message_parts_nb(engine, msg_times, c.ts_event)
    publish_nb(r, cancel_words, 0)
    return True


@kernel
def send_cancel_nb(a, r, oid, reason, ts_recv, now):
    """Cancel a working order (cancels always pass risk). False if the outbound ring is full:
    the order is then marked CANCEL_WANTED and retried every iteration."""
    return _send_cancel_nb(a.engine, a.orders, a.cancel_rec, a.cancel_words, a.msg_times, r, oid, reason, ts_recv, now)


@kernel
def cancel_scope_nb(a, r, iid, reason, now):
    """Cancel every working order of instrument ``iid`` (0: all instruments)."""
    for k in range(ORDER_CAPACITY):
        slot = a.orders[k]
        if slot.status != SlotStatus.FREE and (iid == 0 or slot.instrument_id == iid):
            send_cancel_nb(a, r, slot.order_id, reason, 0, now)


@kernel
def _retry_cancels_nb(engine, orders, cancel_rec, cancel_words, msg_times, r, now):
    for k in range(ORDER_CAPACITY):
        if orders[k].status == SlotStatus.CANCEL_WANTED:
            _send_cancel_nb(engine, orders, cancel_rec, cancel_words, msg_times, r, orders[k].order_id, 0, 0, now)


@kernel
def retry_cancels_nb(a, r, now):
    _retry_cancels_nb(a.engine, a.orders, a.cancel_rec, a.cancel_words, a.msg_times, r, now)


@kernel
def process_intents_nb(a, r, n, ts_recv, ts_seen):
    ts_decided = clock_nb(a, ts_seen)
    for k in range(min(n, a.intents.shape[0])):
        it = a.intents[k]
        if it.action == IntentAction.NEW:
            send_order_nb(
                a,
                r,
                it.instrument_id,
                it.side,
                it.order_type,
                it.tif,
                it.price,
                it.quantity,
                ts_recv,
                ts_seen,
                ts_decided,
            )
        elif it.action == IntentAction.CANCEL:
            send_cancel_nb(a, r, it.order_id, 0, ts_recv, ts_decided)


# --------------------------------------------------------------------------- inbound records


@kernel
def _release_slot(a, slot):
    st = a.inst[slot.instrument_id]
    remaining = max(slot.quantity - slot.filled, 0.0)
    if slot.side == Side.BUY:
        st.working_buy = max(st.working_buy - remaining, 0.0)
        if st.buy_order_id == slot.order_id:
            st.buy_order_id = 0
    else:
        st.working_sell = max(st.working_sell - remaining, 0.0)
        if st.sell_order_id == slot.order_id:
            st.sell_order_id = 0
    if slot.status == SlotStatus.CANCEL_WANTED:
        a.engine[0].pending_cancels -= 1
    slot.status = SlotStatus.FREE


@kernel(inline="always")
def handle_quote_nb(a, r, inb, row, ts_seen):
    q = inb.quote[row]
    publish_nb(r, inb.words, row)
    iid = q.instrument_id
    if iid <= 0 or iid >= a.inst.shape[0]:
        return
    st = a.inst[iid]
    st.bid = q.bid_price
    st.ask = q.ask_price
    st.bid_size = q.bid_size
    st.ask_size = q.ask_size
    st.ts_quote = ts_seen
    st.stale = 1 if q.flags & Flag.STALE else 0
    st.quotes += 1
    if a.static[iid].traded:
        n = strategy_on_quote_nb(a.params, a.sstate, a.inst, a.static, a.orders, iid, ts_seen, a.intents)
        if n > 0:
            process_intents_nb(a, r, n, q.ts_recv, ts_seen)


@kernel(inline="always")
def handle_trade_nb(a, r, inb, row, ts_seen):
    t = inb.trade[row]
    publish_nb(r, inb.words, row)
    iid = t.instrument_id
    if 0 < iid < a.inst.shape[0]:
        a.inst[iid].last_price = t.price
        a.inst[iid].last_size = t.size
        a.inst[iid].ts_trade = ts_seen


@kernel
def apply_fill_nb(st, qty, price):
    """Average-cost position update for a signed fill ``qty`` at ``price``."""
    pos = st.position
    new = pos + qty
    if pos == 0.0 or (pos > 0.0) == (qty > 0.0):
        st.avg_price = (st.avg_price * abs(pos) + price * abs(qty)) / abs(new) if pos != 0.0 else price
    elif abs(qty) > abs(pos):
        st.avg_price = price  # flipped through zero: the opening part's price
    st.position = new
    if abs(new) < 1e-12:
        st.position = 0.0
        st.avg_price = float("nan")


@kernel
def handle_fill_nb(a, r, inb, row, ts_seen):
    f = inb.fill[row]
    publish_nb(r, inb.words, row)
    iid = f.instrument_id
    if iid <= 0 or iid >= a.inst.shape[0] or f.quantity == 0.0:
        return
    eng = a.engine[0]
    eng.fills += 1
    st = a.inst[iid]
    apply_fill_nb(st, f.quantity, f.price)
    slot = a.orders[f.order_id % ORDER_CAPACITY]
    if slot.order_id == f.order_id and slot.status != SlotStatus.FREE:
        # working shrinks by what this order still had open, never more: an over-fill (say a
        # duplicated execution report) must not eat the working quantity of other orders
        done = min(abs(f.quantity), max(slot.quantity - slot.filled, 0.0))
        slot.filled += abs(f.quantity)
        owner = a.inst[slot.instrument_id]  # working quantity belongs to the order's instrument
        if slot.side == Side.BUY:
            owner.working_buy = max(owner.working_buy - done, 0.0)
        else:
            owner.working_sell = max(owner.working_sell - done, 0.0)
        if slot.filled >= slot.quantity - 1e-12:
            _release_slot(a, slot)
    publish_position_nb(a, r, iid, ts_seen)
    if record_fill_nb(a, ts_seen):
        log_nb(a, r, LogCode.FILL_LATCH_ENGAGED, LogLevel.CRITICAL, 0, ts_seen, eng.fill_count, 0, 0.0, 0.0)
    if a.static[iid].traded:
        n = strategy_on_fill_nb(
            a.params, a.sstate, a.inst, a.static, a.orders, iid, f.quantity, f.price, ts_seen, a.intents
        )
        if n > 0:
            process_intents_nb(a, r, n, f.ts_recv, ts_seen)


@kernel
def handle_status_nb(a, r, inb, row, ts_seen):
    s = inb.status[row]
    publish_nb(r, inb.words, row)
    slot = a.orders[s.order_id % ORDER_CAPACITY]
    if slot.order_id != s.order_id or slot.status == SlotStatus.FREE:
        return
    if s.status == OrderStatus.CANCELLED or s.status == OrderStatus.REJECTED or s.status == OrderStatus.INACTIVE:
        _release_slot(a, slot)
    elif slot.status == SlotStatus.PENDING_NEW and (
        s.status == OrderStatus.SUBMITTED or s.status == OrderStatus.PARTIALLY_FILLED
    ):
        slot.status = SlotStatus.WORKING


@kernel
def _set_state(a, r, iid, state, now):
    old = a.engine[0].trading_state if iid == 0 else a.inst[iid].trading_state
    if iid == 0:
        a.engine[0].trading_state = state
    else:
        a.inst[iid].trading_state = state
    log_nb(a, r, LogCode.STATE_CHANGED, LogLevel.WARNING, iid, now, old, state, 0.0, 0.0)


@kernel
def handle_control_nb(a, r, inb, row, now):
    """Apply a control command; it takes effect before the next inbound record is handled."""
    c = inb.control[row]
    publish_nb(r, inb.words, row)
    eng = a.engine[0]
    iid = c.instrument_id
    if c.strategy_id != 0 and c.strategy_id != eng.strategy_id:
        return  # addressed to another engine's strategy
    if iid >= a.inst.shape[0]:
        log_nb(a, r, LogCode.CONTROL_REJECTED, LogLevel.ERROR, 0, now, c.command, iid, 0.0, 0.0)
        return
    eng.controls += 1
    cmd = c.command
    if cmd == ControlCommand.HALT:
        _set_state(a, r, iid, TradingState.HALTED, now)
        cancel_scope_nb(a, r, iid, cmd, now)
    elif cmd == ControlCommand.RESUME:
        _set_state(a, r, iid, TradingState.ACTIVE, now)
        if iid == 0:
            eng.latched = 0
    elif cmd == ControlCommand.REDUCE_ONLY:
        _set_state(a, r, iid, TradingState.REDUCING, now)
    elif cmd == ControlCommand.CANCEL_ALL:
        cancel_scope_nb(a, r, iid, cmd, now)
    elif cmd == ControlCommand.SET_LIMIT:
        lid = c.limit_id
        if lid <= 0 or lid >= N_LIMITS or c.value != c.value:
            log_nb(a, r, LogCode.CONTROL_REJECTED, LogLevel.ERROR, iid, now, cmd, lid, 0.0, c.value)
            return
        old = a.limits[iid, lid]
        a.limits[iid, lid] = c.value
        log_nb(a, r, LogCode.LIMIT_CHANGED, LogLevel.WARNING, iid, now, lid, c.command_id, old, c.value)
        return
    elif cmd == ControlCommand.BLOCK or cmd == ControlCommand.UNBLOCK:
        flag = 1 if cmd == ControlCommand.BLOCK else 0
        if iid == 0:
            for k in range(1, a.inst.shape[0]):
                a.inst[k].blocked = flag
        else:
            a.inst[iid].blocked = flag
    elif cmd == ControlCommand.MARK_STALE or cmd == ControlCommand.MARK_FRESH:
        flag = 1 if cmd == ControlCommand.MARK_STALE else 0
        if iid == 0:
            for k in range(1, a.inst.shape[0]):
                a.inst[k].stale = flag
        else:
            a.inst[iid].stale = flag
    else:
        log_nb(a, r, LogCode.CONTROL_REJECTED, LogLevel.ERROR, iid, now, cmd, cmd, 0.0, 0.0)
        return
    log_nb(a, r, LogCode.CONTROL_APPLIED, LogLevel.INFO, iid, now, cmd, c.command_id, 0.0, 0.0)


@kernel(inline="always")
def process_record_nb(a, r, inb, row, ts_seen):
    """Handle one inbound record (any kind) seen at ``ts_seen``."""
    a.engine[0].events_in += 1
    kind = inb.words[row, 0] & 0xFF
    if kind == RecordKind.QUOTE:
        handle_quote_nb(a, r, inb, row, ts_seen)
    elif kind == RecordKind.TRADE:
        handle_trade_nb(a, r, inb, row, ts_seen)
    elif kind == RecordKind.FILL:
        handle_fill_nb(a, r, inb, row, ts_seen)
    elif kind == RecordKind.ORDER_STATUS:
        handle_status_nb(a, r, inb, row, ts_seen)
    elif kind == RecordKind.CONTROL:
        handle_control_nb(a, r, inb, row, ts_seen)
    else:
        publish_nb(r, inb.words, row)  # book updates, broker positions, logs: on to the feed
    if a.engine[0].pending_cancels > 0:
        _retry_cancels_nb(a.engine, a.orders, a.cancel_rec, a.cancel_words, a.msg_times, r, ts_seen)


# --------------------------------------------------------------------------- the live loop


@kernel
def heartbeat_nb(a, r, now):
    eng = a.engine[0]
    h = a.heartbeat_rec[0]
    h.ts_event = now
    h.loop_iterations = eng.loop_iterations
    h.events_in = eng.events_in
    h.orders_out = min(eng.orders_out + eng.cancels_out, U32_MAX)
    h.denials = min(eng.denials, U32_MAX)
    h.fills = min(eng.fills, U32_MAX)
    h.backpressure = min(eng.backpressure, U32_MAX)
    h.trading_state = eng.trading_state
    h.wait_strategy = eng.wait_strategy
    h.cpu = eng.cpu
    h.max_loop_ns = min(eng.max_loop_ns, U32_MAX)
    publish_nb(r, a.heartbeat_words, 0)
    eng.last_heartbeat_ns = now
    eng.max_loop_ns = 0


@kernel
def run_live_nb(a, r, in_words, inb, ctl_words, ctl, max_batch, budget_ns):
    """Poll the control and inbound rings until ``budget_ns`` has passed; then return to
    Python (which checks for signals and re-enters). Returns the records handled."""
    eng = a.engine[0]
    in_mask = inb.words.shape[0] - 1
    ctl_mask = ctl.words.shape[0] - 1
    start = now_ns()
    handled = 0
    idle = 0
    while True:
        eng.loop_iterations += 1
        cpos, cn = cmd_peek_nb(ctl_words)
        for k in range(cn):
            handle_control_nb(a, r, ctl, (cpos + k) & ctl_mask, now_ns())
        if cn > 0:
            cmd_release_nb(ctl_words, cpos + cn)
        pos, n = cmd_peek_nb(in_words)
        if n > max_batch:
            n = max_batch
        if n > 0:
            t0 = now_ns()
            for k in range(n):
                process_record_nb(a, r, inb, (pos + k) & in_mask, now_ns())
            cmd_release_nb(in_words, pos + n)
            handled += n
            idle = 0
            now = now_ns()
            if now - t0 > eng.max_loop_ns:
                eng.max_loop_ns = now - t0
        else:
            idle += 1
            idle_nb(eng.wait_strategy, idle)
            now = now_ns()
        if eng.pending_cancels > 0:
            retry_cancels_nb(a, r, now)
        if now - eng.last_heartbeat_ns >= eng.heartbeat_interval_ns:
            heartbeat_nb(a, r, now)
        if now - start >= budget_ns:
            return handled
