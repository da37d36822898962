"""Kubernetes resource quantities (`500m`, `64Gi`, `1e3`) parsed to exact decimals."""

from __future__ import annotations

import re
from decimal import Decimal

from mlplatform.config.rules import MAX_QUANTITY, MAX_QUANTITY_EXPONENT, QUANTITY_ALLOWED, QUANTITY_RULE, shown

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

# Digits before the suffix: more than a 64-bit count can hold is never a real quantity.
_QUANTITY = re.compile(
    r"([+-]?(?:\d{1,40}(?:\.\d{0,40})?|\.\d{1,40}))(?:([eE][+-]?\d{1,6})|(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?"
)


def _refuse(text: object) -> ValueError:
    return ValueError(f"{shown(text)} breaks {QUANTITY_RULE} (allowed: {QUANTITY_ALLOWED})")


def parse_quantity(text: str | int | float) -> Decimal:
    """Exact value of a quantity; raises ValueError naming the rule and the accepted forms."""
    if isinstance(text, (bool, float)):
        # YAML floats are inexact and may be inf or nan: quantities are written as text.
        raise _refuse(text)
    if isinstance(text, int):
        value = Decimal(text)
    else:
        match = _QUANTITY.fullmatch(text)
        if not match:
            raise _refuse(text)
        number, exponent, suffix = match.groups()
        value = Decimal(number)
        if exponent:
            power = int(exponent[1:])
            if abs(power) > MAX_QUANTITY_EXPONENT:
                raise _refuse(text)
            value = value.scaleb(power)
        else:
            value = value * _SUFFIXES[suffix or ""]
    if abs(value) > MAX_QUANTITY:
        raise _refuse(text)
    return value
