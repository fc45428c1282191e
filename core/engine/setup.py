"""From configuration to ready engine state: the part live and replay share.

Everything here runs before the first event and may raise; nothing here runs in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from quayside.core.engine.binding import Kernels, bind
from quayside.core.engine.config import ConfigError, StrategyConfig
from quayside.core.engine.state import EngineArrays, allocate, inbound_views
from quayside.core.instruments import InstrumentRegistry
from quayside.core.risk.config import RiskConfig, apply_risk
from quayside.core.strategies.base import StrategyError, validate_params

__all__ = ["PreparedEngine", "prepare_engine", "apply_fx", "warm_up"]


@dataclass
class PreparedEngine:
    kernels: Kernels
    arrays: EngineArrays
    params: object  # the strategy's validated Params
    instruments: list[str]

    @property
    def strategy(self) -> ModuleType:
        return self.kernels.strategy


def prepare_engine(
    registry: InstrumentRegistry,
    strategy: StrategyConfig,
    risk: RiskConfig,
    *,
    fx_fallback: dict[str, float] | None = None,
    replay: bool = False,
    first_order_id: int = 1,
) -> PreparedEngine:
    """Validate the strategy and risk configuration against the registry, bind the strategy's
    kernels and allocate the engine state. Raises :class:`ConfigError` with every problem."""
    unknown = [s for s in strategy.instruments if s not in registry]
    if unknown:
        known = ", ".join(i.symbol for i in registry)
        raise ConfigError(f"strategy instruments not in the registry: {', '.join(unknown)} (known: {known})")
    try:
        kernels = bind(strategy.name)
        params = validate_params(kernels.strategy, strategy.params)
        params_arr = kernels.strategy.params_array(params, registry, list(strategy.instruments))
    except (StrategyError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    arrays = allocate(
        registry,
        params=params_arr,
        state_width=kernels.strategy.STATE_WIDTH,
        strategy_id=strategy.strategy_id,
        first_order_id=first_order_id,
        replay=replay,
    )
    try:
        apply_risk(arrays, risk, registry, list(strategy.instruments))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for symbol in strategy.instruments:
        arrays.static[registry.by_symbol(symbol).id]["traded"] = 1
    apply_fx(arrays, registry, fx_fallback or {})
    return PreparedEngine(kernels, arrays, params, list(strategy.instruments))


def apply_fx(a: EngineArrays, registry: InstrumentRegistry, fallback: dict[str, float]) -> None:
    """Convert each instrument's currency to the account currency through an FX instrument of
    the registry (``<ACCOUNT><CCY>`` divided, or ``<CCY><ACCOUNT>`` multiplied, at its mid), or
    the configured fallback rate when that instrument has no quote yet."""
    account = registry.account_currency
    for inst in registry:
        row = a.static[inst.id]
        if inst.currency == account:
            row["fx_instrument"] = 0
            continue
        direct = f"{inst.currency}{account}"
        inverse = f"{account}{inst.currency}"
        if direct in registry and registry.by_symbol(direct).sec_type == "CASH":
            row["fx_instrument"], row["fx_invert"] = registry.by_symbol(direct).id, 0
        elif inverse in registry and registry.by_symbol(inverse).sec_type == "CASH":
            row["fx_instrument"], row["fx_invert"] = registry.by_symbol(inverse).id, 1
        else:
            row["fx_instrument"] = -1  # no FX instrument in the registry: the fallback only
        row["fx_fallback"] = fallback.get(inst.currency, np.nan)


def warm_up(prepared: PreparedEngine) -> None:
    """Compile (or load from cache) every kernel the loop calls, on throw-away state, so the
    first real event does not pay for compilation."""
    import copy

    from quayside.core.engine.state import Rings
    from quayside.core.feed.segment import RingType, private_segment
    from quayside.core.wire import RecordKind, quote_dtype

    k = prepared.kernels.engine
    a = EngineArrays(*[copy.deepcopy(x) for x in prepared.arrays])
    out = private_segment(RingType.COMMAND, 64)
    feed = private_segment(RingType.FEED, 1024)
    inbound = private_segment(RingType.COMMAND, 64)
    control = private_segment(RingType.COMMAND, 64)
    r = Rings(out.words, out.slot_words, feed.words, feed.slot_words)
    q = np.zeros(2, quote_dtype)
    q["kind"] = RecordKind.QUOTE
    words = q.view(np.int64).reshape(-1, 8)
    k.process_record_nb(a, r, inbound_views(words), 0, 0)
    k.heartbeat_nb(a, r, 0)
    k.log_nb(a, r, 0, 0, 0, 0, 0, 0, 0.0, 0.0)
    in_views, ctl_views = inbound_views(inbound.slot_words), inbound_views(control.slot_words)
    k.run_live_nb(a, r, inbound.words, in_views, control.words, ctl_views, 256, 0)
