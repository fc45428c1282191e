"""A simulated IB Gateway: speaks the TWS API socket protocol so ib_insync runs with no account."""
