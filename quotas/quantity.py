"""Exact Kubernetes resource quantities (``resource.Quantity``) as :class:`~decimal.Decimal`.

Why: GPU/CPU/memory requests in pod specs and our quota CRDs are written as
Kubernetes quantities (``"500m"``, ``"64Gi"``, ``"1e3"``). Floats would make quota
arithmetic drift (``0.1 + 0.2 != 0.3``) and silently round 8Ei-sized byte counts, so we
keep them as exact decimals and only round (to 1n, like Kubernetes) when formatting.

Semantics follow ``k8s.io/apimachinery/pkg/api/resource``:

* Accepted syntax is the intersection of the OpenAPI pattern (:data:`KUBERNETES_QUANTITY_PATTERN`)
  and Go's ``ParseQuantity``: the pattern allows a fractional exponent (``"1e1.5"``) that Go
  rejects, so we reject it too; Go's scanner accepts some oddities the pattern rejects
  (``"Ki"``, ``"-"``), which we also reject. Surrounding whitespace is rejected.
* Parsing is exact: no rounding at all (Kubernetes rounds to 1n while parsing; we defer that
  to :func:`format_quantity`, so sums of many tiny values stay exact).
* Formatting rounds to nano precision *away from zero* (``0.1n -> "1n"``, ``-0.1n -> "-1n"``),
  which is what Kubernetes does: ``ParseQuantity`` takes the absolute value, applies
  ``inf.RoundUp`` at scale 9, then restores the sign.
* Safety cap (deliberate deviation): values with ``abs(value) >= 10**1000`` are rejected,
  because formatting ``"1e2000000000"`` in DecimalSI would build a 2 GB string.
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation, Rounded
from typing import Annotated, Any, Final, Literal, cast, get_args

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "FORMATS",
    "KUBERNETES_QUANTITY_PATTERN",
    "MAX_MAGNITUDE_EXPONENT",
    "NonNegativeQuantity",
    "Quantity",
    "QuantityFormat",
    "QUANTITY_JSON_SCHEMA",
    "EXACT_CONTEXT",
    "canonical",
    "format_quantity",
    "parse_quantity",
    "quantity_format_of",
]

QuantityFormat = Literal["DecimalSI", "BinarySI", "DecimalExponent"]
"""The three serialisation styles of a Kubernetes quantity."""

FORMATS: Final[tuple[QuantityFormat, ...]] = get_args(QuantityFormat)

KUBERNETES_QUANTITY_PATTERN: Final[str] = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
"""The pattern Kubernetes publishes in OpenAPI for ``resource.Quantity`` (ECMA-262 syntax)."""

MAX_MAGNITUDE_EXPONENT: Final[int] = 1000
"""Values with ``abs(value) >= 10**MAX_MAGNITUDE_EXPONENT`` are rejected (see module docstring)."""

EXACT_CONTEXT: Final[Context] = Context(
    prec=60, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, Rounded, InvalidOperation]
)
"""Decimal context for arithmetic on quantities: 60 digits, and it *raises* instead of rounding.

This module never needs it (parsing and formatting work on digit strings and ints, whatever
the current context), but callers summing quantities should use it, since the default
28-digit context silently rounds e.g. ``64Ei + 1n``::

    with decimal.localcontext(EXACT_CONTEXT):
        total = sum(requests, Decimal(0))
"""

# Stricter than the published pattern: integral exponent only (Go's parser demands that).
_QUANTITY_RE: Final = re.compile(
    r"(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?:(?P<bin>[KMGTPE]i)|(?P<dec>[numkMGTPE])|[eE](?P<exp>[+-]?[0-9]+))?"
)

_DECIMAL_SUFFIX_EXP: Final[dict[str, int]] = {
    "n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18,
}
_EXP_DECIMAL_SUFFIX: Final[dict[int, str]] = {
    v: k for k, v in _DECIMAL_SUFFIX_EXP.items()
} | {0: ""}
_BINARY_SUFFIXES: Final[tuple[str, ...]] = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_BINARY_SUFFIX_POWER: Final[dict[str, int]] = {s: i for i, s in enumerate(_BINARY_SUFFIXES) if s}
# Go parses the exponent with ParseInt and stores it in an int32.
_MAX_EXPONENT_FIELD: Final[int] = 2**31 - 1


def _shown(value: object) -> str:
    """The input as the user wrote it, for error messages (ints: ``str(int)``)."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except ValueError:  # int beyond sys.get_int_max_str_digits()
        return f"<{type(value).__name__} too large to show>"


def _invalid(value: object) -> ValueError:
    return ValueError(f'not a valid quantity: "{_shown(value)}"')


def _out_of_range(original: object) -> ValueError:
    return ValueError(
        f'quantity out of range (>= 1e{MAX_MAGNITUDE_EXPONENT}): "{_shown(original)}"'
    )


def _check_magnitude(value: Decimal, original: object) -> Decimal:
    if value and value.adjusted() >= MAX_MAGNITUDE_EXPONENT:
        raise _out_of_range(original)
    return value


def _match(text: str) -> re.Match[str]:
    m = _QUANTITY_RE.fullmatch(text)
    if m is None or not (m["int"] or m["frac"]):
        raise _invalid(text)
    return m


def parse_quantity(value: str | int | float | Decimal) -> Decimal:
    """Parse a Kubernetes quantity exactly.

    ``int`` and finite ``Decimal`` are taken as they are; ``float`` goes through ``str()``
    (so ``0.1`` means ``Decimal("0.1")``); ``bool`` and other types are rejected.
    Raises ``ValueError('not a valid quantity: "..."')`` for anything Kubernetes would reject.
    """
    if isinstance(value, bool):
        raise _invalid(value)
    if isinstance(value, int):
        return _check_magnitude(Decimal(value), value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _invalid(value)
        return _check_magnitude(value, value)
    if isinstance(value, float):
        return parse_quantity(str(value))  # inf/nan give "inf"/"nan", rejected below
    if not isinstance(value, str):
        raise _invalid(value)

    m = _match(value)
    sign = "-" if m["sign"] == "-" else ""
    frac = m["frac"] or ""
    digits = (m["int"] + frac).lstrip("0") or "0"
    exponent = -len(frac)
    if m["exp"] is not None:
        field = m["exp"].lstrip("+-").lstrip("0")
        if len(field) > 10 or int(field or "0") > _MAX_EXPONENT_FIELD:
            raise _invalid(value)
        exponent += int(m["exp"])
    elif m["dec"] is not None:
        exponent += _DECIMAL_SUFFIX_EXP[m["dec"]]
    elif m["bin"] is not None:
        # Integer arithmetic keeps the 1024**k multiplication exact at any size.
        digits = str(int(digits) * 1024 ** _BINARY_SUFFIX_POWER[m["bin"]])
    if digits == "0":
        return Decimal(0)  # also folds "-0" into plain zero
    if exponent + len(digits) - 1 >= MAX_MAGNITUDE_EXPONENT:
        raise _out_of_range(value)
    # Building from a string is exact regardless of the active decimal context.
    return Decimal(f"{sign}{digits}E{exponent}")


def _round_to_nano(value: Decimal) -> tuple[bool, int, int]:
    """Return (negative, coefficient, exponent) with exponent >= -9, trailing zeros stripped.

    Rounds away from zero, as Kubernetes does when it parses a quantity finer than 1n.
    """
    sign, digit_tuple, exp = value.as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    if exp < -9:
        shift = -9 - exp
        if shift >= len(digits):
            coefficient = 1  # 0 < |value| < 1n
        else:
            head, tail = digits[:-shift], digits[-shift:]
            coefficient = int(head or "0") + (1 if tail.strip("0") else 0)
        digits, exp = str(coefficient), -9
    stripped = digits.rstrip("0")
    return bool(sign), int(stripped), exp + len(digits) - len(stripped)


def format_quantity(value: Decimal | int, fmt: QuantityFormat | str = "DecimalSI") -> str:
    """Format ``value`` canonically, like Kubernetes' ``Quantity.String()``.

    The mantissa is always an integer with the largest possible suffix/exponent
    (``1.5 -> "1500m"``, ``1000 -> "1k"``). Values finer than 1n are rounded away from zero.
    ``"BinarySI"`` falls back to DecimalSI for ``abs(value) < 1024`` and non-integers, and
    writes integers that are no whole multiple of 1Ki without suffix (``1536 -> "1536"``).
    Beyond the largest suffix the mantissa grows: ``1e21 -> "1000E"``, ``2**70 -> "1024Ei"``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown quantity format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise TypeError(f"format_quantity() needs a Decimal or int, got {type(value).__name__}")
    dec = Decimal(value)
    if not dec.is_finite():
        raise ValueError(f"cannot format non-finite quantity {value}")
    _check_magnitude(dec, value)
    if not dec:
        return "0"
    negative, coefficient, exp = _round_to_nano(dec)
    sign = "-" if negative else ""

    if fmt == "BinarySI" and exp >= 0:
        integer = coefficient * 10**exp
        if integer >= 1024:
            power = 0
            while power < len(_BINARY_SUFFIXES) - 1 and integer % 1024 == 0:
                integer //= 1024
                power += 1
            return f"{sign}{integer}{_BINARY_SUFFIXES[power]}"
    # DecimalSI / DecimalExponent (and the BinarySI fallback): exponent = floor to a multiple of 3.
    exp3 = exp - exp % 3
    if fmt == "DecimalExponent":
        suffix = f"e{exp3}" if exp3 else ""
    else:
        exp3 = min(exp3, 18)
        suffix = _EXP_DECIMAL_SUFFIX[exp3]
    return f"{sign}{coefficient}{'0' * (exp - exp3)}{suffix}"


def _as_text(value: str | int | float | Decimal) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise _invalid(value)
    return value if isinstance(value, str) else str(value)


def quantity_format_of(text: str | int | float | Decimal) -> QuantityFormat:
    """Tell which format a quantity was written in, so it can be re-emitted in the same style.

    ``"64Gi"`` is BinarySI, ``"1e3"`` DecimalExponent, ``"500m"``/``"8"`` DecimalSI.
    Non-strings are judged by ``str()`` (``Decimal("1E+3")`` counts as DecimalExponent).
    """
    m = _match(_as_text(text))
    if m["bin"] is not None:
        return "BinarySI"
    if m["exp"] is not None:
        return "DecimalExponent"
    return "DecimalSI"


def canonical(text: str | int | float | Decimal) -> str:
    """Canonical form of a quantity in the style it was written in (``"1.5Gi" -> "1536Mi"``)."""
    return format_quantity(parse_quantity(text), quantity_format_of(text))


# --------------------------------------------------------------------------- pydantic

QUANTITY_JSON_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "pattern": KUBERNETES_QUANTITY_PATTERN,
}
"""Kubernetes' int-or-string schema for quantities, as used in CRDs."""


def _validate_quantity(value: object) -> Decimal:
    try:
        return parse_quantity(cast("str | int | float | Decimal", value))
    except (ValueError, TypeError):
        raise PydanticCustomError(
            "quantity", 'must be a quantity, got "{value}"', {"value": _shown(value)}
        ) from None


def _validate_non_negative_quantity(value: object) -> Decimal:
    if isinstance(value, float):
        # The API server's int-or-string schema refuses a bare 1.5 in a custom resource,
        # so refuse it here too rather than pass what `kubectl apply` will reject.
        raise PydanticCustomError(
            "quantity_float",
            'must be an integer or a quoted quantity such as "1500m", got {value}',
            {"value": _shown(value)},
        )
    try:
        parsed = parse_quantity(cast("str | int | float | Decimal", value))
    except (ValueError, TypeError):
        parsed = None
    if parsed is None or parsed < 0:
        raise PydanticCustomError(
            "non_negative_quantity",
            'must be a non-negative quantity, got "{value}"',
            {"value": _shown(value)},
        )
    return parsed


def _serialize_quantity(value: Decimal) -> str:
    return format_quantity(value)


Quantity = Annotated[
    Decimal,
    PlainValidator(_validate_quantity),
    PlainSerializer(_serialize_quantity, return_type=str, when_used="always"),
    WithJsonSchema(QUANTITY_JSON_SCHEMA),
]
"""Pydantic field type: accepts quantity strings and numbers, dumps canonical DecimalSI text."""

NonNegativeQuantity = Annotated[
    Decimal,
    PlainValidator(_validate_non_negative_quantity),
    PlainSerializer(_serialize_quantity, return_type=str, when_used="always"),
    WithJsonSchema(QUANTITY_JSON_SCHEMA),
]
"""Like :data:`Quantity` but rejects negative values (requests, limits, quotas)."""
