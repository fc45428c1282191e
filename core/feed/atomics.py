"""Memory-ordering primitives for jitted code that shares memory with other processes.

numba has no ``volatile``: a plain ``while a[0] == old`` loop compiles to a load that LLVM
hoists out of the loop (nothing inside it writes ``a``), so the loop never sees another
process's store. These intrinsics emit LLVM ``load atomic ... acquire`` and
``store atomic ... release`` instructions instead. An atomic load may not be hoisted, merged
or cached in a register across iterations, and acquire/release give the ordering the rings
need on any architecture (on x86-64 they compile to plain ``mov`` instructions, so they cost
nothing at run time). ``tests/feed/test_atomics.py`` proves both halves: the naive loop really
is hoisted, and these loads are not.

All functions take a one-dimensional contiguous ``int64`` array (a view of shared memory) and
an element index. They are for use inside ``@njit`` functions only.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "load_acquire",
    "store_release",
    "fetch_add",
    "fence_acquire",
    "fence_release",
    "fence_seq_cst",
    "cpu_relax",
    "now_ns",
]

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _element_pointer(context, builder, arrty, arr, idx):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [idx], wraparound=False)


def _check_int64_array(arrty):
    if not (isinstance(arrty, types.Array) and arrty.dtype == types.int64 and arrty.ndim == 1):
        raise TypeError(f"expected a 1-d int64 array, got {arrty}")


@intrinsic
def load_acquire(typingctx, arrty, idxty):
    """``arr[idx]`` as an atomic load with acquire ordering."""
    _check_int64_array(arrty)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, arrty, args[0], args[1])
        return builder.load_atomic(ptr, ordering="acquire", align=8)

    return types.int64(arrty, idxty), codegen


@intrinsic
def store_release(typingctx, arrty, idxty, valty):
    """``arr[idx] = val`` as an atomic store with release ordering."""
    _check_int64_array(arrty)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, arrty, args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, ptr, ordering="release", align=8)
        return context.get_dummy_value()

    return types.void(arrty, idxty, valty), codegen


@intrinsic
def fetch_add(typingctx, arrty, idxty, valty):
    """Atomic ``arr[idx] += val`` (sequentially consistent); returns the old value."""
    _check_int64_array(arrty)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, arrty, args[0], args[1])
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, val, ordering="seq_cst")

    return types.int64(arrty, idxty, valty), codegen


def _fence(ordering):
    @intrinsic
    def fence(typingctx):
        def codegen(context, builder, sig, args):
            builder.fence(ordering)
            return context.get_dummy_value()

        return types.void(), codegen

    return fence


fence_acquire = _fence("acquire")
fence_acquire.__doc__ = "Loads before the fence are ordered before loads and stores after it."
fence_release = _fence("release")
fence_release.__doc__ = "Loads and stores before the fence are ordered before stores after it."
fence_seq_cst = _fence("seq_cst")
fence_seq_cst.__doc__ = "A full barrier (``mfence`` on x86-64), for store-then-load handshakes."


@intrinsic
def cpu_relax(typingctx):
    """The spin-wait hint (``pause`` on x86-64): eases the sibling hyper-thread and power."""

    def codegen(context, builder, sig, args):
        if _X86:  # elsewhere the atomic load in the spin loop is correct on its own
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def now_ns(typingctx):
    """``CLOCK_REALTIME`` in integer nanoseconds, from the vDSO (about 20 ns; no syscall)."""

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        timespec = ir.LiteralStructType([i64, i64])
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), timespec.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        ts = cgutils.alloca_once(builder, timespec)
        builder.call(fn, [ir.Constant(ir.IntType(32), 0), ts])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return types.int64(), codegen
