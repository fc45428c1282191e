"""The market data of the engine benchmarks: millions of quotes derived from the real EURUSD
quotes in ``../shared/data`` (repeated and perturbed, deterministically), or the synthetic
market when that folder is absent. Either way the output says which, and that derived data is
not real data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quayside.core import wire
from quayside.core.instruments import InstrumentRegistry

__all__ = ["DATA_FILE", "MarketData", "derived_quotes"]

ROOT = Path(__file__).resolve().parents[1]
DATA_FILE = ROOT.parent / "shared" / "data" / "eurusd-quotes-2020-01-01.csv"

GAP_NS = 1_000_000_000  # between the end of one copy and the start of the next
# copy k is the original with every price scaled by 1 + SCALE_STEP * ((k * 7) % 11 - 5) and
# shifted by OFFSET_STEP * ((k * 3) % 5 - 2): small moves (at most about half a percent), a
# different level for each copy, so the EMAs re-converge and the strategy trades at each seam
SCALE_STEP = 1e-3
OFFSET_STEP = 5e-4


@dataclass
class MarketData:
    """Quote records (``record_dtype``, time order), the registry, the traded symbols, and a
    plain statement of where they came from."""

    records: np.ndarray
    registry: InstrumentRegistry
    symbols: list[str]
    description: str
    real: bool  # derived from the real file (True) or synthetic (False)
    source: dict = field(default_factory=dict)


def derived_quotes(events: int, path: Path = DATA_FILE, seed: int = 7) -> MarketData:
    """At least ``events`` quotes: the real quotes of ``path`` repeated, each copy shifted in
    time after the previous one and scaled/offset in price; the synthetic market (EURUSD only)
    when ``path`` does not exist."""
    if not path.exists():
        return _synthetic(events, seed, f"{path} is absent")
    from quayside.core.replay.loaders import load

    loaded = load(path)
    base = loaded.records
    quotes = base[base["kind"] == wire.RecordKind.QUOTE]
    n = len(quotes)
    copies = -(-events // n)
    q = quotes.view(wire.quote_dtype)
    span = int(q["ts_event"][-1] - q["ts_event"][0]) + GAP_NS
    words = np.tile(quotes.view(np.int64).reshape(n, 8), (copies, 1))  # (n * copies, 8)
    prices = words[:, 4:6].view(np.float64)  # bid_price, ask_price
    k = np.arange(copies, dtype=np.int64)
    shift = np.repeat(k * span, n)
    words[:, 2] += shift  # ts_event
    words[:, 3] += shift  # ts_recv
    scale = np.repeat(1.0 + SCALE_STEP * ((k * 7) % 11 - 5), n)[:, None]
    offset = np.repeat(OFFSET_STEP * ((k * 3) % 5 - 2), n)[:, None]
    prices[:] = np.round(prices * scale + offset, 5)
    words[:, 1] = np.arange(len(words), dtype=np.int64)  # seq
    out = words.reshape(-1).view(wire.quote_dtype)
    records = out.view(wire.record_dtype)
    symbols = list(loaded.symbols)
    description = (
        f"derived from {n:,} real {symbols[0]} quotes ({path.name}), repeated {copies}x and perturbed "
        f"(each copy shifted in time, its prices scaled by up to +/-{5 * SCALE_STEP:.1%} and offset); not real data"
    )
    source = {
        "file": str(path),
        "real_quotes": n,
        "copies": copies,
        "events": len(records),
        "time_span_s": round((int(out["ts_event"][-1]) - int(out["ts_event"][0])) / 1e9, 1),
        "perturbation": f"copy k: ts + k * (span + 1 s); price * (1 + {SCALE_STEP:g} * ((7k mod 11) - 5)) "
        f"+ {OFFSET_STEP:g} * ((3k mod 5) - 2), rounded to 1e-5",
        "real_data": False,
    }
    return MarketData(records, loaded.instruments, symbols, description, True, source)


def _synthetic(events: int, seed: int, why: str) -> MarketData:
    from quayside.core.instruments import default_registry
    from quayside.core.market.synthetic import generate_chunks

    chunks, total = [], 0
    for chunk in generate_chunks(seed=seed, chunk_events=1 << 18, instruments=["EURUSD"]):
        chunk = chunk[chunk["kind"] == wire.RecordKind.QUOTE]
        chunks.append(chunk)
        total += len(chunk)
        if total >= events:
            break
    records = np.concatenate(chunks)[:events].copy()
    records["seq"] = np.arange(len(records), dtype=np.uint64)
    description = f"synthetic market (seed {seed}, EURUSD quotes only) because {why}; not real data"
    source = {"synthetic": True, "seed": seed, "events": len(records), "real_data": False, "why": why}
    return MarketData(records, default_registry(), ["EURUSD"], description, False, source)
