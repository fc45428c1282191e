"""What a backtest uses when the user gives nothing: the synthetic market and sensible sizes.

On the built-in synthetic market the crossover trades EURUSD (100,000 units), AAPL (100
shares) and the ES future (1 contract), with risk limits sized to match. On a data file it
trades every symbol in the file with the schema defaults, unless a configuration says more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quayside.core.engine.config import StrategyConfig
from quayside.core.instruments import InstrumentRegistry, default_registry
from quayside.core.replay.recording import DataFormatError
from quayside.core.replay.runner import ReplayConfig
from quayside.core.risk.config import InstrumentLimits, RiskConfig
from quayside.core.wire import RecordKind

__all__ = ["SYNTHETIC_SIZES", "default_replay_config", "load_events"]

# symbol: (order size, position limit); notional limits follow from price
SYNTHETIC_SIZES = {"EURUSD": (100_000.0, 300_000.0), "AAPL": (100.0, 300.0), "ESZ6": (1.0, 3.0)}


def load_events(
    data: Path | None, seed: int, duration_s: float, on_error: str = "raise", registry: InstrumentRegistry | None = None
) -> tuple[np.ndarray, InstrumentRegistry, list[str], str]:
    """(events, registry, symbols, description) for a data file, or the synthetic market.

    A recording (``.qsf``) holds instrument ids, not symbols: they resolve through ``registry``
    (the configuration's, else the built-in one), and the symbols traded are those of its quotes."""
    if data is None:
        from quayside.core.market.synthetic import generate

        symbols = list(SYNTHETIC_SIZES)
        events = generate(seed=seed, duration_s=duration_s, instruments=symbols)
        return events, default_registry(), symbols, f"synthetic market (seed {seed}, {duration_s:g} s)"
    from quayside.core.replay.loaders import load

    loaded = load(data, on_error=on_error)
    if loaded.format == "recording":
        registry = registry or default_registry()
        recs = loaded.records
        quoted = np.unique(recs["instrument_id"][recs["kind"] == RecordKind.QUOTE])
        symbols = [i.symbol for i in registry if i.id in set(quoted.tolist())]
        if not symbols:
            raise DataFormatError(data, "the recording has no quotes for any instrument of the registry")
        return recs, registry, symbols, f"{data} (recording, {len(recs):,} records)"
    return loaded.records, loaded.instruments, list(loaded.symbols), f"{data} ({loaded.format})"


def default_replay_config(
    config: ReplayConfig | None, symbols: list[str], registry: InstrumentRegistry, synthetic: bool
) -> ReplayConfig:
    """``config`` if given; otherwise the crossover on ``symbols`` with matching sizes."""
    if config is not None:
        return config
    if not synthetic:
        return ReplayConfig(strategy=StrategyConfig(instruments=symbols))
    sizes = {s: SYNTHETIC_SIZES[s] for s in symbols if s in SYNTHETIC_SIZES}
    strategy = StrategyConfig(
        name="crossover",
        instruments=list(sizes),
        params={
            "fast_span": 50,
            "slow_span": 400,
            "threshold_bps": 0.5,
            "order_qty": {s: q for s, (q, _) in sizes.items()},
        },
    )
    per_instrument = {
        s: InstrumentLimits(max_order_qty=2 * q, max_long_position=lim, max_short_position=lim)
        for s, (q, lim) in sizes.items()
    }
    risk = RiskConfig(defaults=InstrumentLimits(max_order_notional=2_000_000.0), instruments=per_instrument)
    return ReplayConfig(strategy=strategy, risk=risk)
