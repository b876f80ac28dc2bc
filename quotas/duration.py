"""Go ``time.ParseDuration`` syntax (``"30m"``, ``"1h30m"``, ``"300ms"``), as float seconds.

Why: Kubernetes and Kueue configuration (and therefore our quota/queue CRDs) spell
durations the Go way, and what we write back must be readable by Go code. So parsing
follows Go exactly, and formatting reproduces Go's ``Duration.String()``.

Extension: besides Go's units ``ns us µs μs ms s m h`` we also accept ``d`` (24h) and
``w`` (7d) because the CLI takes ``--since 7d``. :func:`format_duration` never emits them.

Like Go, a duration must fit in an int64 count of nanoseconds (about +-292 years), fractional
nanoseconds are truncated (computed in float64 exactly as Go does), and a bare number is only
allowed for ``"0"``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Any, Final, cast

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "DURATION_JSON_SCHEMA",
    "DURATION_PATTERN",
    "Duration",
    "format_duration",
    "parse_duration",
    "parse_duration_ns",
]

_NS: Final = 1
_US: Final = 1_000
_MS: Final = 1_000_000
_S: Final = 1_000_000_000
_UNIT_NS: Final[dict[str, int]] = {
    "ns": _NS,
    "us": _US,
    "\u00b5s": _US,  # µ MICRO SIGN (what Go prints)
    "\u03bcs": _US,  # μ GREEK SMALL LETTER MU
    "ms": _MS,
    "s": _S,
    "m": 60 * _S,
    "h": 3600 * _S,
    "d": 86400 * _S,  # extension
    "w": 7 * 86400 * _S,  # extension
}
_MAX_NS: Final = 2**63 - 1
_MIN_NS: Final = -(2**63)
# Go's limits as the nearest floats; these lie slightly outside the int64 range, so
# numbers of seconds are checked against them and clamped when formatting.
_MAX_SECONDS: Final = float(Fraction(_MAX_NS, _S))
_MIN_SECONDS: Final = float(Fraction(_MIN_NS, _S))

DURATION_PATTERN: Final[str] = (
    r"^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h|d|w))+)$"
)
"""Regex (ECMA-262 and Python compatible) for the accepted syntax, used in JSON schemas."""

# One "<number><unit>" component, tokenised the way Go does it: the unit is the maximal run
# of characters that are neither digits nor '.', and must then be a known unit.
_COMPONENT_RE: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def _shown(value: object) -> str:
    """The input as the user wrote it, for error messages."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except ValueError:  # int beyond sys.get_int_max_str_digits()
        return f"<{type(value).__name__} too large to show>"


def _invalid(value: object) -> ValueError:
    return ValueError(f'not a valid duration: "{_shown(value)}"')


def _leading_fraction(digits: str) -> tuple[int, int]:
    """Go's leadingFraction: keep digits while the numerator fits in int64, ignore the rest."""
    numerator, scale = 0, 1
    for char in digits:
        candidate = numerator * 10 + int(char)
        if numerator > (2**63 - 1) // 10 or candidate > 2**63:
            break
        numerator, scale = candidate, scale * 10
    return numerator, scale


def _parse_ns(text: str) -> int:
    body = text
    negative = False
    if body[:1] in ("-", "+"):
        negative = body[0] == "-"
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise _invalid(text)
    total = 0
    pos = 0
    while pos < len(body):
        m = _COMPONENT_RE.match(body, pos)
        assert m is not None  # every group is optional
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:  # no digits at all, e.g. ".s" or "s"
            raise _invalid(text)
        if unit not in _UNIT_NS:
            raise _invalid(text)
        whole = whole.lstrip("0")
        if len(whole) > 19 or int(whole or "0") > 2**63:  # Go's leadingInt overflow
            raise _invalid(text)
        unit_ns = _UNIT_NS[unit]
        component = int(whole or "0") * unit_ns
        if frac:
            numerator, scale = _leading_fraction(frac)
            # Same float64 expression as Go, so "0.3333333333333333333h" is exactly 20m there
            # and here (exact arithmetic would give 1ns less).
            component += int(float(numerator) * (float(unit_ns) / float(scale)))
        total += component
        if component > 2**63 or total > 2**63:
            raise _invalid(text)
        pos = m.end()
    ns = -total if negative else total
    if not _MIN_NS <= ns <= _MAX_NS:
        raise _invalid(text)
    return ns


def _check_seconds(value: int | float) -> None:
    # int/float comparison is exact in Python, even for ints too large for a float (nan fails it)
    if not _MIN_SECONDS <= value <= _MAX_SECONDS:
        raise _invalid(value)


def parse_duration(text: str | int | float) -> float:
    """Parse a Go-style duration string into seconds.

    Python ``int``/``float`` values are taken as seconds (they must be finite and in Go's
    range); ``bool`` is rejected. Raises ``ValueError('not a valid duration: "..."')``.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise _invalid(text)
    if isinstance(text, str):
        return float(Fraction(_parse_ns(text), _S))
    _check_seconds(text)
    return float(text)


def parse_duration_ns(text: str | int | float) -> int:
    """Like :func:`parse_duration` but exact: integer nanoseconds, i.e. Go's ``time.Duration``.

    Numbers are seconds, rounded to the nearest nanosecond.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise _invalid(text)
    if isinstance(text, str):
        return _parse_ns(text)
    _check_seconds(text)
    return min(max(round(Fraction(text) * _S), _MIN_NS), _MAX_NS)


def _frac(value: int, precision: int) -> tuple[int, str]:
    """Go's fmtFrac: split off ``precision`` digits, dropping trailing zeros (and the dot)."""
    whole, rest = divmod(value, 10**precision)
    digits = f"{rest:0{precision}d}".rstrip("0")
    return whole, f".{digits}" if digits else ""


def format_duration(seconds: float) -> str:
    """Format seconds exactly like Go's ``Duration.String()`` (``"1h30m0s"``, ``"300ms"``).

    The value is rounded to the nearest nanosecond; it must fit Go's int64 nanoseconds
    (the floats nearest to Go's limits are clamped to them).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        kind = type(seconds).__name__
        raise TypeError(f"format_duration() needs a number of seconds, got {kind}")
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:  # also rejects inf and nan
        raise ValueError(f"duration out of range: {_shown(seconds)} seconds")
    ns = parse_duration_ns(seconds)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < _S:
        if u < _US:
            return f"{sign}{u}ns"
        if u < _MS:
            whole, frac = _frac(u, 3)
            return f"{sign}{whole}{frac}\u00b5s"
        whole, frac = _frac(u, 6)
        return f"{sign}{whole}{frac}ms"
    secs, frac = _frac(u, 9)
    minutes, secs = divmod(secs, 60)
    out = f"{secs}{frac}s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        out = f"{minutes}m{out}"
        if hours:
            out = f"{hours}h{out}"
    return f"{sign}{out}"


# --------------------------------------------------------------------------- pydantic

DURATION_JSON_SCHEMA: Final[dict[str, Any]] = {"type": "string", "pattern": DURATION_PATTERN}


def _validate_duration(value: object) -> float:
    try:
        return parse_duration(cast("str | int | float", value))
    except (ValueError, TypeError):
        raise PydanticCustomError(
            "duration",
            'must be a duration such as "30m" or "1h30m", got "{value}"',
            {"value": _shown(value)},
        ) from None


def _serialize_duration(value: float) -> str:
    return format_duration(value)


Duration = Annotated[
    float,
    PlainValidator(_validate_duration),
    PlainSerializer(_serialize_duration, return_type=str, when_used="always"),
    WithJsonSchema(DURATION_JSON_SCHEMA),
]
"""Pydantic field type: seconds as float; accepts Go duration strings or numbers of seconds."""
