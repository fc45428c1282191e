"""Benchmarks (not tests): each prints a table, writes JSON, and compares against a baseline
measured in the same run. ``python -m benchmarks.feed --help`` for the feed rings."""
