"""Jitted kernels of the synthetic market: one event at a time, per-instrument state in arrays.

The Python face (``synthetic.py``) validates the configuration, packs it into a ``params``
array (one row per instrument, columns ``P_*``), seeds the random streams and allocates the
state; these kernels only read and write those arrays and the output records. They allocate
nothing, log nothing and raise nothing.

State of instrument ``k`` lives in three rows: ``sf[k]`` (floats, columns ``F_*``), ``si[k]``
(int64, columns ``I_*``) and ``rng[k]`` (the four uint64 words of its xoshiro256** stream).
Because every random draw comes from the instrument's own stream and every event is produced
from that state alone, a run split into any number of calls of :func:`run_nb` writes exactly
the records of one long call, and the events of one instrument do not depend on which other
instruments are simulated with it.

Records are written through two views of the same ``(n, 8)`` block of 64-bit words (``out_i``
as int64, ``out_f`` as float64), in the byte layout of ``quote_dtype`` and ``trade_dtype``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["init_nb", "run_nb", "NP", "NSF", "NSI"]

# --------------------------------------------------------------------------- params columns

P_ID = 0  # instrument id
P_TICK = 1  # tick size
P_TICK_DIV = 2  # 1 / tick when that is an integer (prices are then n / div, exact decimals), else 0
P_SIGMA = 3  # sd of the relative price step of one event (calm regime, average volatility factor)
P_MU_CALM = 4  # Hawkes baseline intensity in the calm regime, events / s
P_MU_BURST = 5  # Hawkes baseline intensity in the burst regime, events / s
P_ALPHA = 6  # intensity added by each event, 1 / s
P_BETA = 7  # decay rate of the excitation, 1 / s
P_CALM_S = 8  # mean calm-regime duration, s
P_BURST_S = 9  # mean burst-regime duration, s
P_STEP_CALM = 10  # multiplier of the price step in the calm regime (1)
P_STEP_BURST = 11  # multiplier of the price step in the burst regime
P_HVOL_KAPPA = 12  # mean-reversion rate of the log-volatility factor, 1 / s
P_HVOL_SD = 13  # stationary standard deviation of the log-volatility factor
P_TRADE_FRAC = 14  # probability that an event (after the first quote) is a trade
P_SPREAD = 15  # typical spread, ticks
P_WIDEN_PROB = 16  # probability that a fresh widening draw is wider than typical
P_WIDEN_MEAN = 17  # mean extra ticks of a widening (geometric, >= 1)
P_SPREAD_PERSIST = 18  # probability that a quote keeps the previous widening
P_BURST_SPREAD = 19  # mean extra ticks during bursts (geometric, >= 0)
P_JUMP_RATE = 20  # jumps per second
P_JUMP_MIN = 21  # minimum jump, ticks
P_JUMP_MEAN = 22  # mean jump beyond the minimum, ticks (exponential)
P_JUMP_SPREAD = 23  # extra spread right after a jump, ticks
P_JUMP_SPREAD_HL = 24  # half-life of that extra spread, s
P_JUMP_EXCITE = 25  # intensity added by a jump, 1 / s
P_NOISE_PHI = 26  # AR(1) coefficient of the microstructure noise, per event
P_NOISE_INNOV = 27  # innovation sd of the noise, ticks (stationary sd * sqrt(1 - phi**2))
P_QSIZE_MEDIAN = 28  # median quote size
P_QSIZE_SIGMA = 29  # log-normal sigma of quote sizes
P_SIZE_INC = 30  # size increment (sizes are multiples of it, at least one)
P_TSIZE_MIN = 31  # Pareto scale of trade sizes
P_TSIZE_ALPHA = 32  # Pareto tail index of trade sizes
P_TSIZE_MAX = 33  # cap of trade sizes (also capped by the size at the touch)
P_IMPACT = 34  # noise push of a trade of median quote size, ticks
P_FLOW_SKEW = 35  # sensitivity of P(buy) to (efficient - quoted mid) / spread
P_LAT_MIN = 36  # minimum feed latency, ns
P_LAT_MEDIAN = 37  # median latency beyond the minimum, ns
P_LAT_SIGMA = 38  # log-normal sigma of that latency
P_START = 39  # start price
P_HEADER_QUOTE = 40  # header word 0 of a quote (kind, version, flags, instrument id); exact in a float
P_HEADER_TRADE = 41  # header word 0 of a trade
NP = 42

# --------------------------------------------------------------------------- float state columns

F_PRICE = 0  # the efficient price
F_EXCITE = 1  # Hawkes excitation (intensity above baseline) at I_T_INTENSITY
F_HVOL = 2  # log-volatility factor
F_NOISE = 3  # microstructure noise, ticks
F_JUMP_SPREAD = 4  # extra spread set by the last jump, ticks (decays from I_T_JUMP)
F_BID_SIZE = 5  # size at the bid of the last quote (reduced by trades)
F_ASK_SIZE = 6
F_SPARE = 7  # the second normal of the last polar draw
F_HAS_SPARE = 8  # 1.0 when F_SPARE is unused
NSF = 9

# --------------------------------------------------------------------------- int state columns

I_T_LAST = 0  # time of the last event, ns
I_T_INTENSITY = 1  # time at which F_EXCITE is valid, ns
I_REGIME = 2  # 0 calm, 1 burst
I_REGIME_END = 3  # when the current regime ends, ns
I_NEXT_JUMP = 4  # time of the next jump, ns
I_PENDING_T = 5  # time of this instrument's next event, ns
I_PENDING_JUMP = 6  # 1 if that event is a jump
I_WIDEN = 7  # current widening, ticks
I_BID = 8  # last quoted bid, in ticks
I_ASK = 9  # last quoted ask, in ticks
I_HAS_QUOTE = 10  # 1 once a quote was published
I_T_JUMP = 11  # time of the last jump, ns
I_TRADE_ID = 12  # last trade id
I_JUMPS = 13  # jumps so far
NSI = 14

_NS = 1e9
_LN2 = math.log(2.0)
_NEVER = 9_000_000_000_000_000_000  # ns, "no such event" (year 2255)

# --------------------------------------------------------------------------- random numbers


@njit(cache=True, error_model="numpy")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True, error_model="numpy")
def _next_u64(s, k):
    """xoshiro256** (Blackman and Vigna) on the four words of row ``k``."""
    s0 = s[k, 0]
    s1 = s[k, 1]
    s2 = s[k, 2]
    s3 = s[k, 3]
    result = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    s[k, 0] = s0
    s[k, 1] = s1
    s[k, 2] = s2
    s[k, 3] = s3
    return result


@njit(cache=True, error_model="numpy")
def _uniform(s, k):
    """Uniform in (0, 1]: 53 random bits, never zero (safe under ``log``)."""
    return (np.float64(_next_u64(s, k) >> np.uint64(11)) + 1.0) * (1.0 / 9007199254740992.0)


@njit(cache=True, error_model="numpy")
def _normal(s, sf, k):
    """Standard normal (Marsaglia's polar method; the second value of a pair is kept in ``sf``)."""
    if sf[k, F_HAS_SPARE] != 0.0:
        sf[k, F_HAS_SPARE] = 0.0
        return sf[k, F_SPARE]
    while True:
        u = 2.0 * _uniform(s, k) - 1.0
        v = 2.0 * _uniform(s, k) - 1.0
        q = u * u + v * v
        if 0.0 < q < 1.0:
            break
    m = math.sqrt(-2.0 * math.log(q) / q)
    sf[k, F_SPARE] = v * m
    sf[k, F_HAS_SPARE] = 1.0
    return u * m


@njit(cache=True, error_model="numpy")
def _exponential(s, k, mean):
    return -math.log(_uniform(s, k)) * mean


@njit(cache=True, error_model="numpy")
def _geometric0(s, k, mean):
    """Geometric on {0, 1, 2, ...} with the given mean (0 when mean <= 0)."""
    if mean <= 0.0:
        return 0
    return math.floor(-math.log(_uniform(s, k)) / math.log1p(1.0 / mean))


@njit(cache=True, error_model="numpy")
def _to_ns(seconds):
    if seconds >= 1e9:  # more than 31 years: far enough, and no int64 overflow when added to a time
        return np.int64(1_000_000_000_000_000_000)
    return max(np.int64(1), np.int64(seconds * _NS))


# --------------------------------------------------------------------------- scheduling


@njit(cache=True, error_model="numpy")
def _schedule_nb(k, params, sf, si, rng):
    """Draw instrument ``k``'s next event (time and whether it is a jump) after I_T_LAST.

    Arrivals are a Hawkes process with an exponential kernel whose baseline switches between a
    calm and a burst regime (a Markov-modulated Hawkes process). The next arrival is drawn
    exactly (Dassios and Zhao, 2013); regime switches and jumps compete with it, and because the
    process is Markov in (regime, excitation), drawing again after a switch is exact.
    """
    t = si[k, I_T_LAST]
    beta = params[k, P_BETA]
    while True:
        # bring the excitation to time t (it is there already right after an event)
        excite = sf[k, F_EXCITE]
        if t != si[k, I_T_INTENSITY]:
            excite *= math.exp(-beta * (t - si[k, I_T_INTENSITY]) / _NS)
            sf[k, F_EXCITE] = excite
            si[k, I_T_INTENSITY] = t
        mu = params[k, P_MU_BURST] if si[k, I_REGIME] == 1 else params[k, P_MU_CALM]
        wait = _exponential(rng, k, 1.0 / mu)
        if excite > 1e-12:
            d = 1.0 + beta * math.log(_uniform(rng, k)) / excite
            if d > 0.0:
                wait = min(wait, -math.log(d) / beta)
        t_next = t + _to_ns(wait)
        regime_end = si[k, I_REGIME_END]
        next_jump = si[k, I_NEXT_JUMP]
        if next_jump <= t_next and next_jump <= regime_end:
            si[k, I_PENDING_T] = max(next_jump, si[k, I_T_LAST] + 1)
            si[k, I_PENDING_JUMP] = 1
            return
        if regime_end < t_next:
            t = regime_end
            regime = 1 - si[k, I_REGIME]
            si[k, I_REGIME] = regime
            si[k, I_REGIME_END] = t + _to_ns(
                _exponential(rng, k, params[k, P_BURST_S] if regime == 1 else params[k, P_CALM_S])
            )
            continue
        si[k, I_PENDING_T] = t_next
        si[k, I_PENDING_JUMP] = 0
        return


@njit(cache=True, error_model="numpy")
def init_nb(params, sf, si, rng, start_ns):
    """Fresh state for every instrument at ``start_ns`` and each one's first event drawn."""
    for k in range(params.shape[0]):
        sf[k, :] = 0.0
        si[k, :] = 0
        sf[k, F_PRICE] = params[k, P_START]
        si[k, I_T_LAST] = start_ns
        si[k, I_T_INTENSITY] = start_ns
        burst_share = params[k, P_BURST_S] / (params[k, P_BURST_S] + params[k, P_CALM_S])
        regime = 1 if _uniform(rng, k) <= burst_share else 0
        si[k, I_REGIME] = regime
        si[k, I_REGIME_END] = start_ns + _to_ns(
            _exponential(rng, k, params[k, P_BURST_S] if regime == 1 else params[k, P_CALM_S])
        )
        sf[k, F_HVOL] = params[k, P_HVOL_SD] * _normal(rng, sf, k)
        phi = params[k, P_NOISE_PHI]
        sf[k, F_NOISE] = params[k, P_NOISE_INNOV] / math.sqrt(1.0 - phi * phi) * _normal(rng, sf, k)
        si[k, I_NEXT_JUMP] = np.int64(_NEVER)
        if params[k, P_JUMP_RATE] > 0.0:
            si[k, I_NEXT_JUMP] = start_ns + _to_ns(_exponential(rng, k, 1.0 / params[k, P_JUMP_RATE]))
        si[k, I_T_JUMP] = start_ns
        _schedule_nb(k, params, sf, si, rng)


# --------------------------------------------------------------------------- events


@njit(cache=True, error_model="numpy")
def _price(params, k, ticks):
    div = params[k, P_TICK_DIV]
    if div > 0.0:
        return ticks / div
    return ticks * params[k, P_TICK]


@njit(cache=True, error_model="numpy")
def _size(params, k, raw):
    inc = params[k, P_SIZE_INC]
    return max(1.0, math.floor(raw / inc + 0.5)) * inc


@njit(cache=True, error_model="numpy")
def _latency_ns(params, sf, rng, k):
    extra = params[k, P_LAT_MEDIAN] * math.exp(params[k, P_LAT_SIGMA] * _normal(rng, sf, k))
    return np.int64(params[k, P_LAT_MIN] + extra)


@njit(cache=True, error_model="numpy")
def _advance_nb(k, t, jump, params, sf, si, rng):
    """Move instrument ``k``'s efficient price, volatility, noise and excitation to time ``t``."""
    dt = (t - si[k, I_T_LAST]) / _NS
    si[k, I_T_LAST] = t
    # volatility clustering: an Ornstein-Uhlenbeck log-volatility factor, exact step
    x = params[k, P_HVOL_KAPPA] * dt
    a = 1.0 - x + 0.5 * x * x if x < 1e-3 else math.exp(-x)  # the series is exact to 1e-10 there
    sd = params[k, P_HVOL_SD]
    h = a * sf[k, F_HVOL] + sd * math.sqrt(max(0.0, 1.0 - a * a)) * _normal(rng, sf, k)
    sf[k, F_HVOL] = h
    # one event, one step: price moves come with activity, so bursts are volatile and quiet
    # stretches are quiet (the activity clock of Clark, 1973); E[exp(2h - 2 sd^2)] = 1
    regime_step = params[k, P_STEP_BURST] if si[k, I_REGIME] == 1 else params[k, P_STEP_CALM]
    step = params[k, P_SIGMA] * regime_step * math.exp(h - sd * sd)
    sf[k, F_PRICE] *= 1.0 + step * _normal(rng, sf, k)
    # mean-reverting microstructure noise around the efficient price (bid-ask bounce)
    sf[k, F_NOISE] = params[k, P_NOISE_PHI] * sf[k, F_NOISE] + params[k, P_NOISE_INNOV] * _normal(rng, sf, k)
    # self-excitation
    excite = sf[k, F_EXCITE] * math.exp(-params[k, P_BETA] * (t - si[k, I_T_INTENSITY]) / _NS)
    si[k, I_T_INTENSITY] = t
    excite += params[k, P_ALPHA]
    if jump:
        sign = 1.0 if _uniform(rng, k) <= 0.5 else -1.0
        ticks = params[k, P_JUMP_MIN] + _exponential(rng, k, params[k, P_JUMP_MEAN])
        price = sf[k, F_PRICE]
        sf[k, F_PRICE] = max(0.5 * price, price + sign * ticks * params[k, P_TICK])
        sf[k, F_JUMP_SPREAD] = params[k, P_JUMP_SPREAD]
        si[k, I_T_JUMP] = t
        si[k, I_JUMPS] += 1
        excite += params[k, P_JUMP_EXCITE]
        si[k, I_NEXT_JUMP] = t + _to_ns(_exponential(rng, k, 1.0 / params[k, P_JUMP_RATE]))
    sf[k, F_EXCITE] = excite


@njit(cache=True, error_model="numpy")
def _write_header(out_i, i, header, seq, t):
    out_i[i, 0] = np.int64(header)
    out_i[i, 1] = seq
    out_i[i, 2] = t


@njit(cache=True, error_model="numpy")
def _quote_nb(k, t, params, sf, si, rng, out_i, out_f, i, seq):
    widen = si[k, I_WIDEN]
    if _uniform(rng, k) > params[k, P_SPREAD_PERSIST]:
        widen = 0
        if _uniform(rng, k) <= params[k, P_WIDEN_PROB]:
            widen = 1 + _geometric0(rng, k, params[k, P_WIDEN_MEAN] - 1.0)
        si[k, I_WIDEN] = widen
    spread = int(params[k, P_SPREAD]) + widen
    if si[k, I_REGIME] == 1:
        spread += _geometric0(rng, k, params[k, P_BURST_SPREAD])
    if sf[k, F_JUMP_SPREAD] > 0.0:
        decay = math.exp(-_LN2 * (t - si[k, I_T_JUMP]) / _NS / params[k, P_JUMP_SPREAD_HL])
        extra = math.floor(sf[k, F_JUMP_SPREAD] * decay + 0.5)
        if extra == 0:
            sf[k, F_JUMP_SPREAD] = 0.0  # recovered
        spread += extra
    centre = sf[k, F_PRICE] / params[k, P_TICK] + sf[k, F_NOISE]
    bid = np.int64(math.floor(centre - 0.5 * spread + 0.5))
    ask = bid + spread
    if bid < 1:  # a price never reaches zero; keep the book above it
        bid = np.int64(1)
        ask = bid + spread
    thin = params[k, P_SPREAD] / spread  # wide books are thin books
    new_bid = si[k, I_HAS_QUOTE] == 0 or bid != si[k, I_BID]
    new_ask = si[k, I_HAS_QUOTE] == 0 or ask != si[k, I_ASK]
    if not new_bid and not new_ask:  # a size-only update on one side
        if _uniform(rng, k) <= 0.5:
            new_bid = True
        else:
            new_ask = True
    if new_bid:
        sf[k, F_BID_SIZE] = _size(
            params, k, params[k, P_QSIZE_MEDIAN] * thin * math.exp(params[k, P_QSIZE_SIGMA] * _normal(rng, sf, k))
        )
    if new_ask:
        sf[k, F_ASK_SIZE] = _size(
            params, k, params[k, P_QSIZE_MEDIAN] * thin * math.exp(params[k, P_QSIZE_SIGMA] * _normal(rng, sf, k))
        )
    si[k, I_BID] = bid
    si[k, I_ASK] = ask
    si[k, I_HAS_QUOTE] = 1
    _write_header(out_i, i, params[k, P_HEADER_QUOTE], seq, t)
    out_i[i, 3] = t + _latency_ns(params, sf, rng, k)
    out_f[i, 4] = _price(params, k, bid)
    out_f[i, 5] = _price(params, k, ask)
    out_f[i, 6] = sf[k, F_BID_SIZE]
    out_f[i, 7] = sf[k, F_ASK_SIZE]


@njit(cache=True, error_model="numpy")
def _trade_nb(k, t, params, sf, si, rng, out_i, out_f, i, seq):
    bid = si[k, I_BID]
    ask = si[k, I_ASK]
    # informed flow: buyers arrive more often when the efficient price is above the quoted mid
    gap = (sf[k, F_PRICE] / params[k, P_TICK] - 0.5 * (bid + ask)) / (ask - bid)
    p_buy = min(0.95, max(0.05, 0.5 + params[k, P_FLOW_SKEW] * gap))
    side = 1 if _uniform(rng, k) <= p_buy else -1
    touch = sf[k, F_ASK_SIZE] if side == 1 else sf[k, F_BID_SIZE]
    raw = params[k, P_TSIZE_MIN] * math.exp(-math.log(_uniform(rng, k)) / params[k, P_TSIZE_ALPHA])  # Pareto
    size = min(_size(params, k, min(raw, params[k, P_TSIZE_MAX])), touch)
    left = touch - size
    push = params[k, P_IMPACT] * size / params[k, P_QSIZE_MEDIAN]
    if left < params[k, P_SIZE_INC]:  # the level is gone: the next quote will move away from it
        left = params[k, P_SIZE_INC]
        push += 0.5
    if side == 1:
        sf[k, F_ASK_SIZE] = left
    else:
        sf[k, F_BID_SIZE] = left
    sf[k, F_NOISE] += side * push
    si[k, I_TRADE_ID] += 1
    _write_header(out_i, i, params[k, P_HEADER_TRADE], seq, t)
    out_i[i, 3] = t + _latency_ns(params, sf, rng, k)
    out_f[i, 4] = _price(params, k, ask if side == 1 else bid)
    out_f[i, 5] = size
    out_i[i, 6] = si[k, I_TRADE_ID]
    out_i[i, 7] = side & 0xFF


@njit(cache=True, error_model="numpy")
def run_nb(params, sf, si, rng, out_i, out_f, seq0, ts_end):
    """Write the next events, in ``ts_event`` order, until ``out`` is full or the next event is
    at or after ``ts_end``. Returns the number of records written (``seq`` runs from ``seq0``).

    Ties between instruments go to the lower row; one instrument's events are strictly
    increasing in time.
    """
    n_inst = params.shape[0]
    n = out_i.shape[0]
    i = 0
    while i < n:
        k = 0
        for j in range(1, n_inst):
            if si[j, I_PENDING_T] < si[k, I_PENDING_T]:
                k = j
        t = si[k, I_PENDING_T]
        if t >= ts_end:
            break
        jump = si[k, I_PENDING_JUMP] == 1
        _advance_nb(k, t, jump, params, sf, si, rng)
        if jump or si[k, I_HAS_QUOTE] == 0 or _uniform(rng, k) > params[k, P_TRADE_FRAC]:
            _quote_nb(k, t, params, sf, si, rng, out_i, out_f, i, seq0 + i)
        else:
            _trade_nb(k, t, params, sf, si, rng, out_i, out_f, i, seq0 + i)
        _schedule_nb(k, params, sf, si, rng)
        i += 1
    return i
