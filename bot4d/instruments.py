"""Instruments: the mapping between a venue's symbol and the kernels' integer world.

An instrument has a dense integer id (index into every per-instrument kernel array), a venue, the
venue's symbol, and the fixed-point scales of its prices and quantities. Scales are chosen so that
every price and quantity the venue can send is an exact integer number of units.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bot4d.fixedpoint import INT64_MAX, from_fixed


class UnknownSymbolError(KeyError):
    """A venue sent (or a user named) a symbol that is not configured."""

    def __str__(self) -> str:  # KeyError quotes its argument; say a sentence instead
        return str(self.args[0]) if self.args else "unknown symbol"


@dataclass(frozen=True)
class Instrument:
    id: int
    venue: str
    symbol: str
    price_scale: int  # decimals: price units = price * 10**price_scale
    qty_scale: int
    max_price_units: int = INT64_MAX // 4  # beyond this a price is out of range for the book
    max_qty_units: int = INT64_MAX // 4

    def price(self, units: int) -> Decimal:
        return from_fixed(units, self.price_scale)

    def qty(self, units: int) -> Decimal:
        return from_fixed(units, self.qty_scale)


class InstrumentTable:
    """Instruments by id and by (venue, symbol); ids are dense and stable in insertion order."""

    def __init__(self) -> None:
        self._by_id: list[Instrument] = []
        self._by_key: dict[tuple[str, str], Instrument] = {}

    def add(self, venue: str, symbol: str, price_scale: int, qty_scale: int, **kw: int) -> Instrument:
        key = (venue, symbol)
        if key in self._by_key:
            raise ValueError(f"instrument {venue}:{symbol} is already configured")
        inst = Instrument(len(self._by_id), venue, symbol, price_scale, qty_scale, **kw)
        self._by_id.append(inst)
        self._by_key[key] = inst
        return inst

    def get(self, venue: str, symbol: str) -> Instrument:
        try:
            return self._by_key[(venue, symbol)]
        except KeyError:
            raise UnknownSymbolError(f"unknown symbol {symbol!r} on venue {venue!r}") from None

    def find(self, venue: str, symbol: str) -> Instrument | None:
        return self._by_key.get((venue, symbol))

    def by_id(self, instrument_id: int) -> Instrument:
        return self._by_id[instrument_id]

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(self._by_id)
