"""Wait strategies for jitted polling loops, as the Disruptor names them.

* ``BUSY_SPIN`` — poll without pause (``pause`` hint only): lowest latency, burns its core.
  Only for a core isolated from the scheduler (``isolcpus``/``nohz_full``).
* ``SPIN_YIELD`` — spin a while, then ``sched_yield()`` between polls: latency close to busy
  spin when the core is free, and other runnable threads still get it.
* ``SLEEP`` — spin, yield, then sleep in short steps when idle for long: for shared cores and
  laptops, at the price of tens of microseconds on the first event after a quiet spell.

``idle_nb(strategy, idle_count)`` is called by a loop each time a poll found nothing, with the
number of consecutive empty polls; the loop resets the count when it finds work.
"""

from __future__ import annotations

from typing import NamedTuple

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from quayside.core.feed.atomics import cpu_relax
from quayside.core.jit import kernel

__all__ = ["WaitStrategy", "wait_strategy_id", "idle_nb", "sched_yield_nb", "sleep_ns_nb"]


class _WaitStrategy(NamedTuple):
    BUSY_SPIN: int = 1
    SPIN_YIELD: int = 2
    SLEEP: int = 3


WaitStrategy = _WaitStrategy()

SPIN_POLLS = 2_000  # empty polls before yielding
YIELD_POLLS = 20_000  # empty polls before sleeping (SLEEP only)
SLEEP_NS = 50_000


def wait_strategy_id(name: str) -> int:
    try:
        return getattr(WaitStrategy, name.upper().replace("-", "_"))
    except AttributeError:
        names = ", ".join(n.lower().replace("_", "-") for n in WaitStrategy._fields)
        raise ValueError(f"unknown wait strategy {name!r}; choose one of {names}") from None


@intrinsic
def sched_yield_nb(typingctx):
    """``sched_yield()``: give the core to another runnable thread, if any."""

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def sleep_ns_nb(typingctx, nsty):
    """``nanosleep()`` for ``ns`` nanoseconds (less than one second)."""

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        timespec = ir.LiteralStructType([i64, i64])
        fnty = ir.FunctionType(ir.IntType(32), [timespec.as_pointer(), timespec.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "nanosleep")
        ts = cgutils.alloca_once(builder, timespec)
        builder.store(ir.Constant(i64, 0), cgutils.gep_inbounds(builder, ts, 0, 0))
        ns = context.cast(builder, args[0], sig.args[0], types.int64)
        builder.store(ns, cgutils.gep_inbounds(builder, ts, 0, 1))
        builder.call(fn, [ts, ir.Constant(ts.type, None)])
        return context.get_dummy_value()

    return types.void(nsty), codegen


@kernel
def idle_nb(strategy, idle_count):
    """One idle step of ``strategy`` after ``idle_count`` consecutive empty polls."""
    if strategy == WaitStrategy.BUSY_SPIN or idle_count < SPIN_POLLS:
        cpu_relax()
    elif strategy == WaitStrategy.SPIN_YIELD or idle_count < YIELD_POLLS:
        sched_yield_nb()
    else:
        sleep_ns_nb(SLEEP_NS)
