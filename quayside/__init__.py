"""Quayside: a trading stack for Interactive Brokers.

The repository keeps the design's layout: ``core/`` (the bare-metal side) is installed as
``quayside.core`` and ``support/`` (the containerised side) as ``quayside.support``.
"""

__version__ = "0.1.0"
