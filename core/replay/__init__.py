"""Replay: backtests through the same kernels, loaders for recorded and historical data."""
