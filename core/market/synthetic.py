"""The built-in synthetic market: seeded quotes and trades that the project generates itself.

It is the default data of ``quayside replay``, of the simulated IB gateway and of the demo, so
that a fresh clone runs end to end with no downloaded data, and what benchmarks use to make
millions of events. Output is an array of ``record_dtype`` (``QUOTE`` and ``TRADE`` records,
``Flag.REPLAY`` set), sorted by ``ts_event``, ``seq`` equal to the index in the stream, and
``ts_recv = ts_event`` plus a positive feed latency. The same ``seed`` gives the same bytes in
every run and process (on the same platform and numpy/numba build), and a stream read in chunks
(:class:`SyntheticMarket`, :func:`generate_chunks`) is the one-shot stream cut in pieces.

Model, per instrument (instruments are independent; each has its own random stream):

* **Arrivals**: a Hawkes process (exponential kernel, branching ratio ``hawkes_branching``,
  memory ``hawkes_decay_s``) whose baseline switches between a calm and a burst regime
  (exponential durations ``calm_duration_s`` / ``burst_duration_s``, baseline ``burst_rate_mult``
  times higher in bursts). Long-run mean: ``events_per_s``. Quiet stretches, bursts, clusters.
* **Efficient price**: a driftless random walk that takes one relative step per event (price
  moves come with activity: bursts are volatile, quiet stretches quiet), the step scaled by an
  Ornstein-Uhlenbeck log-volatility factor in clock time (``vol_of_vol``, ``vol_halflife_s``:
  volatility clustering) and by ``burst_vol_mult`` in bursts, and normalised so that the
  long-run volatility without jumps is ``annual_vol``, annualised over
  :data:`SECONDS_PER_YEAR` (252 sessions of 6.5 hours: the synthetic market is always open).
* **Jumps**: Poisson (``jumps_per_hour``), a gap of ``jump_min_ticks`` plus an exponential
  ``jump_mean_ticks``, up or down, published at once as a quote whose spread blows out by
  ``jump_spread_ticks`` and recovers with half-life ``jump_spread_halflife_s``; a jump also
  excites the arrival process (about ``jump_burst_events`` extra events at once).
* **Quotes**: the quoted centre is the efficient price plus mean-reverting microstructure noise
  (AR(1) in event time, ``noise_ticks``, ``noise_halflife_events``: bid-ask bounce). The spread
  is ``spread_ticks`` most of the time, widened by a persistent random state
  (``spread_widen_prob``, ``spread_widen_mean_ticks``, ``spread_persistence``), by
  ``burst_spread_ticks`` on average in bursts, and by the blow-out after a jump. Prices are
  on the tick grid, ``bid < ask`` always. Sizes are log-normal (``quote_size_median``,
  ``quote_size_sigma``) in multiples of ``size_increment``, thinner when the spread is wide;
  a quote that moves neither price refreshes the size of one side.
* **Trades**: a fraction ``trade_fraction`` of events, at the touch of the last quote (a buyer
  lifts the ask, a seller hits the bid), buyers more likely when the efficient price is above
  the quoted mid (``flow_skew``). Sizes are Pareto (``trade_size_min``, ``trade_size_alpha``,
  heavy-tailed), capped by ``trade_size_max`` and by the size at the touch, which they deplete;
  a trade pushes the quoted centre its way (``impact_ticks``), and emptying the level moves it.
* **Latency**: ``ts_recv - ts_event`` is ``latency_min_us`` plus a log-normal with median
  ``latency_median_us`` and sigma ``latency_sigma``.

Defaults live in two places only: generic ones on the fields of :class:`MarketConfig` (with
their meaning), and per-instrument values for the instruments of
:func:`~quayside.core.instruments.default_registry` in :data:`INSTRUMENT_DEFAULTS`
(:func:`parameters_markdown` prints the resulting table).

Example::

    records = generate(seed=7, duration_s=3600)   # one hour of EURUSD, USDJPY, AAPL, ESZ6
    print(describe(records))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from quayside.core.instruments import default_registry
from quayside.core.market import nb
from quayside.core.wire import VERSIONS, Flag, RecordKind, quote_dtype, record_dtype, trade_dtype

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_START_NS",
    "DEFAULT_DURATION_S",
    "SECONDS_PER_YEAR",
    "JUMP_DETECT_TICKS",
    "MarketConfig",
    "INSTRUMENT_DEFAULTS",
    "default_configs",
    "resolve_configs",
    "SyntheticMarket",
    "generate",
    "generate_chunks",
    "describe",
    "parameters_markdown",
]

DEFAULT_SEED = 7
#: 2026-10-05 13:30:00 UTC, a Monday, 09:30 in New York (the US cash open; ESZ6 is front month).
DEFAULT_START_NS = 1_791_207_000_000_000_000
DEFAULT_DURATION_S = 3600.0
#: Volatility is annualised over 252 sessions of 6.5 hours: the synthetic market is always in session.
SECONDS_PER_YEAR = 252 * 6.5 * 3600
#: :func:`describe` counts a jump where the mid moves this many ticks from one quote to the next.
JUMP_DETECT_TICKS = 10.0


class MarketConfig(BaseModel):
    """How the synthetic market of one instrument behaves. Frozen; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # identity and price grid
    instrument_id: int = Field(ge=1, le=65_535, description="wire instrument id")
    symbol: str = Field(min_length=1, max_length=32, description="symbol, for summaries")
    tick_size: float = Field(gt=0, description="minimum price increment; every price is on this grid")
    start_price: float = Field(gt=0, description="efficient price at the start")
    # volatility
    annual_vol: float = Field(default=0.20, gt=0, le=5, description="diffusive volatility, annualised")
    vol_of_vol: float = Field(default=0.35, ge=0, le=2, description="sd of the log-volatility factor")
    vol_halflife_s: float = Field(default=900.0, gt=0, description="half-life of volatility shocks, s")
    # arrivals and regimes
    events_per_s: float = Field(default=10.0, gt=0, le=1e6, description="long-run mean of quotes + trades per s")
    trade_fraction: float = Field(default=0.2, ge=0, le=0.9, description="share of events that are trades")
    hawkes_branching: float = Field(default=0.6, ge=0, le=0.95, description="events triggered per event")
    hawkes_decay_s: float = Field(default=0.4, gt=0, description="memory of the self-excitation, s")
    calm_duration_s: float = Field(default=300.0, gt=0, description="mean length of a calm regime, s")
    burst_duration_s: float = Field(default=30.0, gt=0, description="mean length of a burst regime, s")
    burst_rate_mult: float = Field(default=4.0, ge=1, le=100, description="baseline arrival rate x in bursts")
    burst_vol_mult: float = Field(default=1.3, ge=1, le=20, description="price step x in bursts (on top of more steps)")
    # spread
    spread_ticks: int = Field(default=1, ge=1, le=1000, description="typical spread, ticks")
    spread_widen_prob: float = Field(default=0.15, ge=0, le=1, description="P(a fresh spread draw is wider)")
    spread_widen_mean_ticks: float = Field(default=1.3, ge=1, description="mean extra ticks when wider")
    spread_persistence: float = Field(default=0.8, ge=0, lt=1, description="P(a quote keeps the widening)")
    burst_spread_ticks: float = Field(default=0.4, ge=0, description="mean extra ticks during bursts")
    # jumps
    jumps_per_hour: float = Field(default=2.0, ge=0, description="mean number of price jumps per hour")
    jump_min_ticks: float = Field(default=15.0, ge=1, description="smallest jump, ticks")
    jump_mean_ticks: float = Field(default=12.0, ge=0, description="mean jump beyond the smallest, ticks")
    jump_spread_ticks: float = Field(default=6.0, ge=0, description="spread blow-out at a jump, extra ticks")
    jump_spread_halflife_s: float = Field(default=3.0, gt=0, description="recovery half-life of it, s")
    jump_burst_events: float = Field(default=30.0, ge=0, description="events a jump triggers directly")
    # microstructure
    noise_ticks: float = Field(default=0.3, ge=0, description="sd of the quoted centre around the price, ticks")
    noise_halflife_events: float = Field(default=2.0, gt=0, description="mean reversion of that noise, events")
    impact_ticks: float = Field(default=0.3, ge=0, description="push of a trade of median quote size, ticks")
    flow_skew: float = Field(default=0.8, ge=0, description="dP(buy) per spread of efficient price over mid")
    # sizes
    quote_size_median: float = Field(default=300.0, gt=0, description="median size at the touch")
    quote_size_sigma: float = Field(default=0.7, ge=0, le=3, description="log-normal sigma of quote sizes")
    size_increment: float = Field(default=1.0, gt=0, description="sizes are multiples of this (at least one)")
    trade_size_min: float = Field(default=20.0, gt=0, description="Pareto scale of trade sizes")
    trade_size_alpha: float = Field(default=1.4, gt=0.5, le=10, description="Pareto tail index (smaller: heavier)")
    trade_size_max: float = Field(default=20_000.0, gt=0, description="cap of trade sizes")
    # feed latency
    latency_min_us: float = Field(default=250.0, ge=0, le=1e6, description="smallest ts_recv - ts_event, us")
    latency_median_us: float = Field(default=300.0, gt=0, le=1e6, description="median latency above it, us")
    latency_sigma: float = Field(default=0.6, ge=0, le=3, description="log-normal sigma of that latency")

    @model_validator(mode="after")
    def _consistent(self):
        if self.start_price < 10 * self.tick_size:
            raise ValueError(f"start_price {self.start_price} is under 10 ticks of {self.tick_size}")
        if self.trade_size_max < self.trade_size_min:
            raise ValueError("trade_size_max is smaller than trade_size_min")
        if self.quote_size_median < self.size_increment:
            raise ValueError("quote_size_median is smaller than size_increment")
        return self


#: Per-instrument values for the instruments of ``default_registry()`` (ids and tick sizes come
#: from the registry; everything not listed here is the field default of :class:`MarketConfig`).
INSTRUMENT_DEFAULTS: dict[str, dict[str, float]] = {
    "EURUSD": {
        "start_price": 1.0850,
        "annual_vol": 0.07,
        "events_per_s": 8.0,
        "trade_fraction": 0.08,
        "spread_widen_prob": 0.2,
        "spread_widen_mean_ticks": 1.2,
        "jumps_per_hour": 1.0,
        "jump_min_ticks": 15.0,
        "jump_mean_ticks": 5.0,
        "quote_size_median": 2_000_000.0,
        "quote_size_sigma": 0.6,
        "size_increment": 10_000.0,
        "trade_size_min": 20_000.0,
        "trade_size_alpha": 1.3,
        "trade_size_max": 10_000_000.0,
        "latency_min_us": 400.0,
        "latency_median_us": 500.0,
    },
    "USDJPY": {
        "start_price": 151.20,
        "annual_vol": 0.09,
        "events_per_s": 6.0,
        "trade_fraction": 0.08,
        "spread_widen_prob": 0.2,
        "spread_widen_mean_ticks": 1.2,
        "jumps_per_hour": 1.0,
        "jump_min_ticks": 15.0,
        "jump_mean_ticks": 10.0,
        "quote_size_median": 2_000_000.0,
        "quote_size_sigma": 0.6,
        "size_increment": 10_000.0,
        "trade_size_min": 20_000.0,
        "trade_size_alpha": 1.3,
        "trade_size_max": 10_000_000.0,
        "latency_min_us": 400.0,
        "latency_median_us": 500.0,
    },
    "AAPL": {
        "start_price": 225.00,
        "annual_vol": 0.25,
        "events_per_s": 15.0,
        "trade_fraction": 0.25,
        "spread_widen_prob": 0.2,
        "spread_widen_mean_ticks": 1.3,
        "jumps_per_hour": 2.0,
        "jump_min_ticks": 15.0,
        "jump_mean_ticks": 20.0,
        "jump_spread_ticks": 8.0,
        "quote_size_median": 300.0,
        "quote_size_sigma": 0.8,
        "trade_size_min": 20.0,
        "trade_size_alpha": 1.4,
        "trade_size_max": 20_000.0,
        "latency_min_us": 200.0,
        "latency_median_us": 300.0,
    },
    "ESZ6": {
        "start_price": 5900.00,
        "annual_vol": 0.16,
        "events_per_s": 25.0,
        "trade_fraction": 0.3,
        "spread_widen_prob": 0.03,
        "spread_widen_mean_ticks": 1.0,
        "burst_spread_ticks": 0.2,
        "jumps_per_hour": 2.0,
        "jump_min_ticks": 16.0,
        "jump_mean_ticks": 16.0,
        "jump_spread_ticks": 3.0,
        "quote_size_median": 40.0,
        "quote_size_sigma": 0.7,
        "trade_size_min": 1.0,
        "trade_size_alpha": 1.3,
        "trade_size_max": 1_000.0,
        "latency_min_us": 150.0,
        "latency_median_us": 150.0,
    },
}


@cache
def _built_in() -> tuple[MarketConfig, ...]:
    return tuple(
        MarketConfig(instrument_id=i.id, symbol=i.symbol, tick_size=i.tick_size, **INSTRUMENT_DEFAULTS[i.symbol])
        for i in default_registry()
    )


def default_configs() -> dict[str, MarketConfig]:
    """The built-in market of every instrument of ``default_registry()``, by symbol."""
    return {c.symbol: c for c in _built_in()}


def resolve_configs(instruments: Iterable[MarketConfig | str | int] | None = None) -> tuple[MarketConfig, ...]:
    """Configs for ``instruments``: ``None`` for all the built-in ones, else configs, built-in
    symbols or built-in instrument ids (mixed as you like), each instrument id at most once."""
    defaults = default_configs()
    if instruments is None:
        return tuple(defaults.values())
    if isinstance(instruments, (str, int, MarketConfig)):
        instruments = [instruments]
    by_id = {c.instrument_id: c for c in defaults.values()}
    out: list[MarketConfig] = []
    for item in instruments:
        if isinstance(item, MarketConfig):
            out.append(item)
        elif isinstance(item, str) and item in defaults:
            out.append(defaults[item])
        elif isinstance(item, int) and not isinstance(item, bool) and item in by_id:
            out.append(by_id[item])
        else:
            known = ", ".join(f"{c.symbol} ({c.instrument_id})" for c in defaults.values())
            raise ValueError(f"no built-in synthetic market for {item!r}; built-in: {known}")
    if not out:
        raise ValueError("no instruments to simulate")
    ids = [c.instrument_id for c in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"instrument ids must be unique, got {ids}")
    return tuple(out)


# --------------------------------------------------------------------------- packing for the kernels

_MASK64 = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _stream_state(seed: int, instrument_id: int) -> list[int]:
    """The four xoshiro256** words of one instrument's stream, from (seed, instrument id)."""
    state, mixed = _splitmix64(seed & _MASK64)
    state = mixed ^ ((instrument_id * 0xD1B54A32D192ED03) & _MASK64)
    words = []
    for _ in range(4):
        state, word = _splitmix64(state)
        words.append(word)
    return words


def _header_word(kind: int, instrument_id: int) -> float:
    word = kind | (VERSIONS[kind] << 8) | (Flag.REPLAY << 16) | (instrument_id << 32)
    return float(word)  # < 2**48: exact in a double


def _pack(config: MarketConfig) -> np.ndarray:
    c = config
    p = np.zeros(nb.NP)
    p[nb.P_ID] = c.instrument_id
    p[nb.P_TICK] = c.tick_size
    div = round(1.0 / c.tick_size)
    p[nb.P_TICK_DIV] = div if div >= 1 and abs(1.0 / c.tick_size - div) < 1e-9 * div else 0.0
    burst_share = c.burst_duration_s / (c.burst_duration_s + c.calm_duration_s)
    base = c.events_per_s * (1.0 - c.hawkes_branching) / (1.0 - burst_share + burst_share * c.burst_rate_mult)
    # every event moves the price one step; the step variance is set so that the long-run
    # variance per second (calm and burst steps, each at its regime's event rate) is annual_vol**2
    steps_per_s = ((1.0 - burst_share) + burst_share * c.burst_rate_mult * c.burst_vol_mult**2) * base
    steps_per_s /= 1.0 - c.hawkes_branching
    p[nb.P_SIGMA] = c.annual_vol / math.sqrt(SECONDS_PER_YEAR * steps_per_s)
    p[nb.P_MU_CALM] = base
    p[nb.P_MU_BURST] = base * c.burst_rate_mult
    p[nb.P_BETA] = 1.0 / c.hawkes_decay_s
    p[nb.P_ALPHA] = c.hawkes_branching * p[nb.P_BETA]
    p[nb.P_CALM_S] = c.calm_duration_s
    p[nb.P_BURST_S] = c.burst_duration_s
    p[nb.P_STEP_CALM] = 1.0
    p[nb.P_STEP_BURST] = c.burst_vol_mult
    p[nb.P_HVOL_KAPPA] = math.log(2.0) / c.vol_halflife_s
    p[nb.P_HVOL_SD] = c.vol_of_vol
    p[nb.P_TRADE_FRAC] = c.trade_fraction
    p[nb.P_SPREAD] = c.spread_ticks
    p[nb.P_WIDEN_PROB] = c.spread_widen_prob
    p[nb.P_WIDEN_MEAN] = c.spread_widen_mean_ticks
    p[nb.P_SPREAD_PERSIST] = c.spread_persistence
    p[nb.P_BURST_SPREAD] = c.burst_spread_ticks
    p[nb.P_JUMP_RATE] = c.jumps_per_hour / 3600.0
    p[nb.P_JUMP_MIN] = c.jump_min_ticks
    p[nb.P_JUMP_MEAN] = c.jump_mean_ticks
    p[nb.P_JUMP_SPREAD] = c.jump_spread_ticks
    p[nb.P_JUMP_SPREAD_HL] = c.jump_spread_halflife_s
    p[nb.P_JUMP_EXCITE] = c.jump_burst_events * p[nb.P_BETA]
    phi = 0.5 ** (1.0 / c.noise_halflife_events)
    p[nb.P_NOISE_PHI] = phi
    p[nb.P_NOISE_INNOV] = c.noise_ticks * math.sqrt(1.0 - phi * phi)
    p[nb.P_QSIZE_MEDIAN] = c.quote_size_median
    p[nb.P_QSIZE_SIGMA] = c.quote_size_sigma
    p[nb.P_SIZE_INC] = c.size_increment
    p[nb.P_TSIZE_MIN] = c.trade_size_min
    p[nb.P_TSIZE_ALPHA] = c.trade_size_alpha
    p[nb.P_TSIZE_MAX] = c.trade_size_max
    p[nb.P_IMPACT] = c.impact_ticks
    p[nb.P_FLOW_SKEW] = c.flow_skew
    p[nb.P_LAT_MIN] = c.latency_min_us * 1e3
    p[nb.P_LAT_MEDIAN] = c.latency_median_us * 1e3
    p[nb.P_LAT_SIGMA] = c.latency_sigma
    p[nb.P_START] = c.start_price
    p[nb.P_HEADER_QUOTE] = _header_word(RecordKind.QUOTE, c.instrument_id)
    p[nb.P_HEADER_TRADE] = _header_word(RecordKind.TRADE, c.instrument_id)
    return p


# --------------------------------------------------------------------------- the stream


class SyntheticMarket:
    """A seeded, endless stream of synthetic quotes and trades, read in pieces.

    ``next_chunk(n)`` returns the next ``n`` records, ``until(ts_end_ns)`` every record before
    ``ts_end_ns``, and ``fill(out)`` writes into a preallocated ``record_dtype`` array; however
    the stream is cut, the records (``seq`` included) are those of one long run.
    """

    def __init__(
        self,
        seed: int = DEFAULT_SEED,
        instruments: Iterable[MarketConfig | str | int] | None = None,
        start_ns: int = DEFAULT_START_NS,
    ):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.start_ns = int(start_ns)
        self.configs = resolve_configs(instruments)
        self._params = np.stack([_pack(c) for c in self.configs])
        n = len(self.configs)
        self._sf = np.zeros((n, nb.NSF))
        self._si = np.zeros((n, nb.NSI), dtype=np.int64)
        self._rng = np.array([_stream_state(self.seed, c.instrument_id) for c in self.configs], dtype=np.uint64)
        nb.init_nb(self._params, self._sf, self._si, self._rng, np.int64(self.start_ns))
        self.seq = 0  # records produced so far, and the seq of the next one

    @property
    def ts_next(self) -> int:
        """``ts_event`` of the next record."""
        return int(self._si[:, nb.I_PENDING_T].min())

    @property
    def jumps(self) -> dict[str, int]:
        """Price jumps injected so far, by symbol."""
        return {c.symbol: int(self._si[k, nb.I_JUMPS]) for k, c in enumerate(self.configs)}

    @property
    def events_per_s(self) -> float:
        """Configured long-run event rate of all instruments together."""
        return sum(c.events_per_s for c in self.configs)

    def fill(self, out: np.ndarray, ts_end_ns: int | None = None) -> int:
        """Write the next records into ``out`` (64-byte records, C-contiguous), at most
        ``len(out)`` and none at or after ``ts_end_ns``; return how many were written."""
        if out.dtype.itemsize != record_dtype.itemsize or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writeable, C-contiguous array of 64-byte records")
        words = out.view(np.int64).reshape(-1, 8)
        end = np.iinfo(np.int64).max if ts_end_ns is None else int(ts_end_ns)
        args = (self._params, self._sf, self._si, self._rng)
        count = nb.run_nb(*args, words, words.view(np.float64), np.int64(self.seq), np.int64(end))
        self.seq += count
        return count

    def next_chunk(self, n: int, ts_end_ns: int | None = None) -> np.ndarray:
        """The next ``n`` records (fewer only if ``ts_end_ns`` comes first)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        out = np.empty(n, dtype=record_dtype)  # the kernel writes every byte of a record
        count = self.fill(out, ts_end_ns)
        return out if count == n else out[:count].copy()

    def until(self, ts_end_ns: int) -> np.ndarray:
        """Every record with ``ts_event < ts_end_ns`` not yet produced."""
        parts = []
        while True:
            expected = self.events_per_s * max(0.0, (ts_end_ns - self.ts_next) / 1e9)
            out = np.empty(int(1.2 * expected + 10.0 * math.sqrt(expected) + 1024), dtype=record_dtype)
            count = self.fill(out, ts_end_ns)
            # a view keeps at most ~1.4x the memory alive; copy when the guess was far off
            parts.append(out[:count] if count >= 0.7 * len(out) else out[:count].copy())
            if count < len(out):
                break
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def generate(
    seed: int = DEFAULT_SEED,
    duration_s: float = DEFAULT_DURATION_S,
    instruments: Iterable[MarketConfig | str | int] | None = None,
    start_ns: int = DEFAULT_START_NS,
) -> np.ndarray:
    """``duration_s`` seconds of the synthetic market from ``start_ns``, as ``record_dtype``."""
    if not duration_s >= 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    market = SyntheticMarket(seed, instruments, start_ns)
    return market.until(market.start_ns + round(duration_s * 1e9))


def generate_chunks(
    seed: int = DEFAULT_SEED,
    chunk_events: int = 65_536,
    duration_s: float | None = None,
    instruments: Iterable[MarketConfig | str | int] | None = None,
    start_ns: int = DEFAULT_START_NS,
) -> Iterator[np.ndarray]:
    """The stream of :func:`generate` in chunks of ``chunk_events`` records (the last one
    shorter); endless when ``duration_s`` is None."""
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    market = SyntheticMarket(seed, instruments, start_ns)
    end = None if duration_s is None else market.start_ns + round(duration_s * 1e9)
    while True:
        chunk = market.next_chunk(chunk_events, end)
        if len(chunk):
            yield chunk
        if len(chunk) < chunk_events:
            return


# --------------------------------------------------------------------------- summaries


def describe(
    records: np.ndarray,
    instruments: Iterable[MarketConfig | str | int] | None = None,
    jump_ticks: float = JUMP_DETECT_TICKS,
) -> pd.DataFrame:
    """Summary statistics of a stream of quotes and trades, one row per instrument plus ``ALL``.

    ``instruments`` gives symbols and tick sizes (the built-in ones by default). Columns:

    * ``events``, ``quotes``, ``trades``; ``span_s``: first to last event, s;
    * ``rate_p50`` / ``rate_p95`` / ``rate_p99`` / ``rate_max``: events in one-second bins
      (bursts show as a p99 several times the median), ``rate_fano``: variance / mean of those
      counts (1 for a Poisson process, more when arrivals cluster);
    * ``spread_median`` / ``spread_p95`` / ``spread_max`` / ``spread_mean``: quoted spread,
      ticks; ``spread_busy_mean``: mean spread in the busiest 5 % of seconds;
    * ``jumps``: mid moves of at least ``jump_ticks`` ticks from one quote to the next;
    * ``realised_vol``: annualised (:data:`SECONDS_PER_YEAR`) from one-minute mid log returns,
      jumps included; ``absret_acf1``: lag-1 autocorrelation of absolute 10-second returns
      (positive under volatility clustering);
    * ``trade_size_median`` / ``trade_size_p99``, ``buy_share``: share of buyer-initiated trades;
    * ``latency_median_us``: median ``ts_recv - ts_event``.
    """
    import pandas as pd

    configs = {c.instrument_id: c for c in resolve_configs(instruments)}
    records = np.ascontiguousarray(records)
    kind = records["kind"]
    ids = records["instrument_id"]
    ts = records["ts_event"]
    quotes = records.view(quote_dtype)
    trades = records.view(trade_dtype)
    rows: dict[str, dict[str, float]] = {}
    t0 = int(ts.min()) if len(ts) else 0
    n_sec = int((int(ts.max()) - t0) // 1_000_000_000) + 1 if len(ts) else 0
    for iid in np.unique(ids):
        cfg = configs.get(int(iid))
        symbol = cfg.symbol if cfg else f"id {int(iid)}"
        tick = cfg.tick_size if cfg else math.nan
        mine = ids == iid
        q = quotes[mine & (kind == RecordKind.QUOTE)]
        tr = trades[mine & (kind == RecordKind.TRADE)]
        row = {"events": int(mine.sum()), "quotes": len(q), "trades": len(tr)}
        row |= _rate_stats(ts[mine], t0, n_sec)
        row |= _quote_stats(q, tick, t0, n_sec, jump_ticks)
        row["trade_size_median"] = float(np.median(tr["size"])) if len(tr) else math.nan
        row["trade_size_p99"] = float(np.quantile(tr["size"], 0.99)) if len(tr) else math.nan
        row["buy_share"] = float(np.mean(tr["aggressor"] == 1)) if len(tr) else math.nan
        lat = quotes["ts_recv"][mine] - ts[mine]
        row["latency_median_us"] = float(np.median(lat)) / 1e3 if len(lat) else math.nan
        rows[symbol] = row
    total = {
        "events": len(records),
        "quotes": int((kind == RecordKind.QUOTE).sum()),
        "trades": int((kind == RecordKind.TRADE).sum()),
    }
    total |= _rate_stats(ts, t0, n_sec)
    total["jumps"] = sum(r.get("jumps", 0) for r in rows.values())
    rows["ALL"] = total
    frame = pd.DataFrame.from_dict(rows, orient="index")
    for col in ("events", "quotes", "trades", "jumps"):
        frame[col] = frame[col].astype(np.int64)
    return frame


def _rate_stats(ts: np.ndarray, t0: int, n_sec: int) -> dict[str, float]:
    if n_sec == 0:
        return {"span_s": 0.0}
    counts = np.bincount((ts - t0) // 1_000_000_000, minlength=n_sec)
    p50, p95, p99 = np.quantile(counts, [0.5, 0.95, 0.99])
    mean = counts.mean()
    return {
        "span_s": (int(ts.max()) - int(ts.min())) / 1e9,
        "rate_p50": float(p50),
        "rate_p95": float(p95),
        "rate_p99": float(p99),
        "rate_max": float(counts.max()),
        "rate_fano": float(counts.var() / mean) if mean > 0 else math.nan,
    }


def _quote_stats(q: np.ndarray, tick: float, t0: int, n_sec: int, jump_ticks: float) -> dict[str, float]:
    if len(q) == 0:
        return {"jumps": 0}
    spread = np.rint((q["ask_price"] - q["bid_price"]) / tick)
    sec = (q["ts_event"] - t0) // 1_000_000_000
    counts = np.bincount(sec, minlength=n_sec)
    busy = counts[sec] >= np.quantile(counts, 0.95)
    mid = 0.5 * (q["bid_price"] + q["ask_price"])
    jumps = int(np.sum(np.abs(np.diff(mid)) >= jump_ticks * tick * (1 - 1e-9)))
    return {
        "spread_median": float(np.median(spread)),
        "spread_p95": float(np.quantile(spread, 0.95)),
        "spread_max": float(spread.max()),
        "spread_mean": float(spread.mean()),
        "spread_busy_mean": float(spread[busy].mean()) if busy.any() else math.nan,
        "jumps": jumps,
        "realised_vol": _realised_vol(q["ts_event"], mid, 60),
        "absret_acf1": _absret_acf1(q["ts_event"], mid, 10),
    }


def _sampled_log_mid(ts: np.ndarray, mid: np.ndarray, step_s: int) -> np.ndarray:
    """Log mid of the last quote at or before each ``step_s`` boundary after the first quote."""
    step = step_s * 1_000_000_000
    grid = np.arange(int(ts[0]), int(ts[-1]) + 1, step)
    return np.log(mid[np.searchsorted(ts, grid, side="right") - 1])


def _realised_vol(ts: np.ndarray, mid: np.ndarray, step_s: int) -> float:
    r = np.diff(_sampled_log_mid(ts, mid, step_s))
    if len(r) < 2:
        return math.nan
    return float(math.sqrt(np.sum(r * r) * SECONDS_PER_YEAR / (len(r) * step_s)))


def _absret_acf1(ts: np.ndarray, mid: np.ndarray, step_s: int) -> float:
    a = np.abs(np.diff(_sampled_log_mid(ts, mid, step_s)))
    if len(a) < 10 or a[:-1].std() == 0 or a[1:].std() == 0:
        return math.nan
    return float(np.corrcoef(a[:-1], a[1:])[0, 1])


def _fmt(value: float) -> str:
    if value >= 1000 and float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:g}"


def parameters_markdown(configs: Iterable[MarketConfig] | None = None) -> str:
    """A Markdown table of every parameter of ``configs`` (the built-in ones by default)."""
    configs = list(configs) if configs is not None else list(default_configs().values())
    lines = [
        "| parameter | " + " | ".join(c.symbol for c in configs) + " | meaning |",
        "|---|" + "---:|" * len(configs) + "---|",
    ]
    for name, field in MarketConfig.model_fields.items():
        if name == "symbol":
            continue
        values = " | ".join(_fmt(getattr(c, name)) for c in configs)
        lines.append(f"| `{name}` | {values} | {field.description} |")
    return "\n".join(lines)
