"""Kubernetes resource quantities (`500m`, `64Gi`, `1e3`) parsed to exact decimals."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?$")


def parse_quantity(text: str | int | float) -> Decimal:
    """Exact value of a quantity; raises ValueError with the accepted forms."""
    if isinstance(text, bool):
        raise ValueError("a boolean is not a quantity")
    if isinstance(text, (int, float)):
        return Decimal(str(text))
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 4, 64Gi, 1e3)")
    number, exponent, suffix = match.groups()
    value = Decimal(number)
    if exponent:
        return value * (Decimal(10) ** int(exponent[1:]))
    return value * _SUFFIXES[suffix or ""]
