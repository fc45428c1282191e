"""Metrics exporter: the engine's statistics and latency histograms as Prometheus metrics."""
