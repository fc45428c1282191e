"""The execution engine: the numba hot loop on a pinned core."""
