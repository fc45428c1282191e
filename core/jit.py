"""The decorator for hot-path kernels.

``@kernel`` is ``numba.njit`` with the compile cache on and numba's runtime (NRT) off. Without
the runtime a kernel cannot allocate: ``np.empty`` or a list inside one is a compile error, so
"the hot loop allocates nothing" is checked by the compiler, not by review. It also removes the
reference counting numba otherwise emits around every array passed between functions, which
measured at about 2 µs per event for the engine's state (a named tuple of two dozen arrays).
Kernels take preallocated arrays, scalars and records, and return codes instead of raising.
"""

from __future__ import annotations

from numba import njit

__all__ = ["kernel"]


def kernel(fn=None, **options):
    """``@kernel`` or ``@kernel(inline="always")``: njit with ``cache=True`` and no runtime."""
    options = {"cache": True, "_nrt": False, **options}
    if fn is None:
        return lambda f: njit(**options)(f)
    return njit(**options)(fn)
