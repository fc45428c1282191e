"""The instrument registry: small integer ids that every record carries, resolved by both sides.

The engine, the gateway and every support service load the same registry file, so an
``instrument_id`` in a record means the same contract everywhere. Ids start at 1 (0 means
"none / all" in the wire format) and must stay stable for as long as recordings made with them
are kept: add instruments with new ids, never renumber.

A registry file is TOML::

    account_currency = "USD"

    [[instrument]]
    id = 1
    symbol = "EURUSD"
    sec_type = "CASH"
    exchange = "IDEALPRO"
    currency = "USD"
    tick_size = 0.00005

Unknown keys, duplicate ids or symbols, and bad values are errors that name the file and the
entry. This module needs only pydantic and numpy (support services import it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["Instrument", "InstrumentRegistry", "RegistryError", "instrument_dtype", "default_registry"]

MAX_INSTRUMENT_ID = 65_535


class RegistryError(ValueError):
    """The registry file is malformed; the message names the file and the entry."""


class Instrument(BaseModel):
    """One tradable contract, as IB identifies it, plus what risk and P&L need."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1, le=MAX_INSTRUMENT_ID, description="wire id, stable forever")
    symbol: str = Field(min_length=1, max_length=32, description="IB symbol (localSymbol for futures)")
    sec_type: Literal["STK", "CASH", "FUT", "CRYPTO", "IND", "CFD"] = "STK"
    exchange: str = Field(default="SMART", min_length=1)
    primary_exchange: str = ""
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    multiplier: float = Field(default=1.0, gt=0, description="contract multiplier (futures)")
    tick_size: float = Field(default=0.01, gt=0, description="minimum price increment")
    lot_size: float = Field(default=1.0, gt=0, description="minimum quantity increment")
    con_id: int = Field(default=0, ge=0, description="IB conId if known, else 0")
    last_trade_date: str = Field(default="", description="futures expiry, YYYYMM or YYYYMMDD")


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    instrument: list[Instrument] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self):
        for attr in ("id", "symbol"):
            seen: dict = {}
            for inst in self.instrument:
                key = getattr(inst, attr)
                if key in seen:
                    raise ValueError(f"instrument {attr} {key!r} is used twice (entries {seen[key]} and {inst.id})")
                seen[key] = inst.id
        return self


#: The per-instrument numbers jitted kernels need, indexed by instrument id.
instrument_dtype = np.dtype(
    [("multiplier", "<f8"), ("tick_size", "<f8"), ("lot_size", "<f8"), ("known", "u1")], align=True
)


class InstrumentRegistry:
    """Instruments by id and by symbol."""

    def __init__(self, instruments: Iterable[Instrument], account_currency: str = "USD", source: str = "<memory>"):
        try:
            parsed = _RegistryFile(account_currency=account_currency, instrument=list(instruments))
        except ValidationError as exc:
            raise RegistryError(f"{source}: {_describe(exc)}") from None
        self.source = source
        self.account_currency = parsed.account_currency
        self._by_id = {inst.id: inst for inst in parsed.instrument}
        self._by_symbol = {inst.symbol: inst for inst in parsed.instrument}

    @classmethod
    def load(cls, path: str | Path) -> InstrumentRegistry:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise RegistryError(f"{path}: no such instrument registry file") from None
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"{path}: not valid TOML: {exc}") from None
        try:
            parsed = _RegistryFile.model_validate(data)
        except ValidationError as exc:
            raise RegistryError(f"{path}: {_describe(exc)}") from None
        return cls(parsed.instrument, parsed.account_currency, source=str(path))

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(sorted(self._by_id.values(), key=lambda i: i.id))

    def __contains__(self, key: int | str) -> bool:
        return key in self._by_id or key in self._by_symbol

    def by_id(self, instrument_id: int) -> Instrument:
        try:
            return self._by_id[int(instrument_id)]
        except KeyError:
            raise KeyError(f"instrument id {instrument_id} is not in {self.source}") from None

    def by_symbol(self, symbol: str) -> Instrument:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise KeyError(f"instrument {symbol!r} is not in {self.source}") from None

    def arrays(self) -> np.ndarray:
        """``instrument_dtype`` rows indexed by id (row 0 and unused ids have ``known == 0``)."""
        size = max(self._by_id, default=0) + 1
        out = np.zeros(size, dtype=instrument_dtype)
        for inst in self._by_id.values():
            out[inst.id] = (inst.multiplier, inst.tick_size, inst.lot_size, 1)
        return out

    def to_toml(self) -> str:
        lines = [f'account_currency = "{self.account_currency}"', ""]
        for inst in self:
            lines.append("[[instrument]]")
            for key, value in inst.model_dump().items():
                lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
            lines.append("")
        return "\n".join(lines)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = list(err["loc"])
        if len(loc) >= 2 and loc[0] == "instrument" and isinstance(loc[1], int):
            where = f"[[instrument]] number {loc[1] + 1}" + (
                f", field {'.'.join(map(str, loc[2:]))}" if loc[2:] else ""
            )
        else:
            where = ".".join(map(str, loc))
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def default_registry() -> InstrumentRegistry:
    """The built-in instruments of the synthetic market (no file needed)."""
    return InstrumentRegistry(
        [
            Instrument(id=1, symbol="EURUSD", sec_type="CASH", exchange="IDEALPRO", currency="USD", tick_size=0.00005),
            Instrument(id=2, symbol="USDJPY", sec_type="CASH", exchange="IDEALPRO", currency="JPY", tick_size=0.005),
            Instrument(id=3, symbol="AAPL", sec_type="STK", exchange="SMART", primary_exchange="NASDAQ"),
            Instrument(
                id=4,
                symbol="ESZ6",
                sec_type="FUT",
                exchange="CME",
                currency="USD",
                multiplier=50.0,
                tick_size=0.25,
                last_trade_date="20261218",
            ),
        ],
        source="<built-in registry>",
    )
