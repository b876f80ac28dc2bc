"""Tests for quotas.duration: Go time.ParseDuration / Duration.String() compatibility."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import jsonschema
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from quotas.duration import (
    DURATION_PATTERN,
    Duration,
    format_duration,
    parse_duration,
    parse_duration_ns,
)

NS, US, MS, S = 1, 1_000, 1_000_000, 1_000_000_000
MIN, H, DAY, WEEK = 60 * S, 3600 * S, 86400 * S, 7 * 86400 * S
MAX_NS, MIN_NS = 2**63 - 1, -(2**63)
PATTERN_RE = re.compile(DURATION_PATTERN)


def seconds(ns: int) -> float:
    return float(Fraction(ns, S))


# Go's src/time/time_test.go parseDurationTests, verbatim, plus our d/w extension.
GO_PARSE: list[tuple[str, int]] = [
    ("0", 0),
    ("5s", 5 * S),
    ("30s", 30 * S),
    ("1478s", 1478 * S),
    ("-5s", -5 * S),
    ("+5s", 5 * S),
    ("-0", 0),
    ("+0", 0),
    ("5.0s", 5 * S),
    ("5.6s", 5 * S + 600 * MS),
    ("5.s", 5 * S),
    (".5s", 500 * MS),
    ("1.0s", 1 * S),
    ("1.00s", 1 * S),
    ("1.004s", 1 * S + 4 * MS),
    ("1.0040s", 1 * S + 4 * MS),
    ("100.00100s", 100 * S + 1 * MS),
    ("10ns", 10 * NS),
    ("11us", 11 * US),
    ("12\u00b5s", 12 * US),
    ("12\u03bcs", 12 * US),
    ("13ms", 13 * MS),
    ("14s", 14 * S),
    ("15m", 15 * MIN),
    ("16h", 16 * H),
    ("3h30m", 3 * H + 30 * MIN),
    ("10.5s4m", 4 * MIN + 10 * S + 500 * MS),
    ("-2m3.4s", -(2 * MIN + 3 * S + 400 * MS)),
    ("1h2m3s4ms5us6ns", 1 * H + 2 * MIN + 3 * S + 4 * MS + 5 * US + 6 * NS),
    ("39h9m14.425s", 39 * H + 9 * MIN + 14 * S + 425 * MS),
    ("52763797000ns", 52763797000 * NS),
    ("0.3333333333333333333h", 20 * MIN),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", MAX_NS),
    ("9223372036854775.807us", MAX_NS),
    ("9223372036s854ms775us807ns", MAX_NS),
    ("-9223372036854775808ns", MIN_NS),
    ("-9223372036854775.808us", MIN_NS),
    ("-9223372036s854ms775us808ns", MIN_NS),
    ("-2562047h47m16.854775808s", MIN_NS),
    ("2562047h47m16.854775807s", MAX_NS),
    ("0.100000000000000000000h", 6 * MIN),
    ("0.830103483285477580700h", 49 * MIN + 48 * S + 372539827 * NS),
    # the usual Kubernetes/Kueue spellings
    ("30m", 30 * MIN),
    ("5m0s", 5 * MIN),
    ("1h30m", 90 * MIN),
    ("168h", 168 * H),
    ("1.5h", 90 * MIN),
    ("300ms", 300 * MS),
    ("-1s", -S),
    ("0s", 0),
    ("1h1h", 2 * H),  # Go allows repeated units
    ("1s1h", H + S),  # ... in any order
    ("0.5ns", 0),  # sub-nanosecond parts are truncated
    ("1.9ns", 1),
    ("-1.9ns", -1),
    ("000001s", S),
    # extension: days and weeks
    ("7d", 7 * DAY),
    ("1d", DAY),
    ("1.5d", 36 * H),
    ("2w", 2 * WEEK),
    ("1w2d3h", WEEK + 2 * DAY + 3 * H),
    ("-1d", -DAY),
    ("15250w", 15250 * WEEK),
]


@pytest.mark.parametrize(("text", "ns"), GO_PARSE)
def test_parse(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert parse_duration(text) == seconds(ns)
    assert PATTERN_RE.fullmatch(text)


# Go's parseDurationErrorTests (minus "1d", which we accept) plus our own.
GO_INVALID = [
    "",
    "3",
    "-",
    "s",
    ".",
    "-.",
    ".s",
    "+.s",
    "\x85\x85",
    "\xffff",
    "hello \xffff world",
    "\ufffd",
    "\ufffd hello \ufffd world",
    "9223372036854775810ns",
    "9223372036854775808ns",
    "-9223372036854775809ns",
    "9223372036854776us",
    "3000000h",
    "9223372036854775.808us",
    "9223372036854ms775us808ns",
    # ours
    "+",
    "1",
    "00",
    "-1",
    "1.5",
    "1h 30m",
    " 1s",
    "1s ",
    "1s\n",
    "1H",
    "1S",
    "1sec",
    "1min",
    "1hr",
    "1e3s",
    "1.2.3s",
    "--1s",
    "+-1s",
    "1h-30m",
    "1mo",
    "1y",
    "1ds",
    "1Ms",
    "1_000s",
    "１s",
    "inf",
    "infs",
    "NaNs",
    "2562047h47m16.854775808s",
    "15251w",
    "99999999999999999999999999999s",
]


@pytest.mark.parametrize("text", GO_INVALID)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(ValueError, match=r'^not a valid duration: "'):
        parse_duration(text)
    with pytest.raises(ValueError):
        parse_duration_ns(text)


def test_error_message() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("1x")
    assert str(info.value) == 'not a valid duration: "1x"'


def test_huge_fraction_string_is_cheap() -> None:
    # Go issue 15011: long fractions must not blow up.
    # Go keeps the first 19 digits and computes in float64, which lands exactly on 400s.
    assert parse_duration_ns("0." + "1" * 100_000 + "h") == 400 * S


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (90, 90.0), (-2, -2.0), (1.5, 1.5), (0.001, 0.001), (-0.0, 0.0), (3e9, 3e9)],
)
def test_parse_numbers_are_seconds(value: int | float, expected: float) -> None:
    assert parse_duration(value) == expected
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "value", [True, False, None, float("inf"), float("-inf"), float("nan"), 1e10, -1e10, 2**70,
              [1], b"1s"],
)
def test_parse_rejects_bad_numbers_and_types(value: object) -> None:
    with pytest.raises(ValueError, match="not a valid duration"):
        parse_duration(value)  # type: ignore[arg-type]


# Go's durationTests (TestDurationString), plus a few.
GO_STRING: list[tuple[str, int]] = [
    ("0s", 0),
    ("1ns", 1 * NS),
    ("1.1\u00b5s", 1100 * NS),
    ("2.2ms", 2200 * US),
    ("3.3s", 3300 * MS),
    ("4m5s", 4 * MIN + 5 * S),
    ("4m5.001s", 4 * MIN + 5001 * MS),
    ("5h6m7.001s", 5 * H + 6 * MIN + 7001 * MS),
    ("8m0.000000001s", 8 * MIN + 1 * NS),
    ("2562047h47m16.854775807s", MAX_NS),
    ("-2562047h47m16.854775808s", MIN_NS),
    ("1h30m0s", 90 * MIN),
    ("5m0s", 5 * MIN),
    ("300ms", 300 * MS),
    ("-1s", -S),
    ("-1ms", -MS),
    ("999ns", 999),
    ("1\u00b5s", US),
    ("999.999\u00b5s", 999999),
    ("1ms", MS),
    ("999.999999ms", S - 1),
    ("1s", S),
    ("59.999999999s", MIN - 1),
    ("1m0s", MIN),
    ("59m59s", H - S),
    ("1h0m0s", H),
    ("168h0m0s", WEEK),
    ("1h0m1s", H + S),
]


@pytest.mark.parametrize(("expected", "ns"), GO_STRING)
def test_format(expected: str, ns: int) -> None:
    assert format_duration(seconds(ns)) == expected
    assert parse_duration_ns(expected) == ns


def test_format_rounds_to_the_nearest_nanosecond() -> None:
    assert format_duration(1e-10) == "0s"
    assert format_duration(6e-10) == "1ns"
    assert format_duration(-6e-10) == "-1ns"
    assert format_duration(1.0000000004) == "1s"


def test_format_accepts_ints() -> None:
    assert format_duration(5400) == "1h30m0s"


@pytest.mark.parametrize(
    "value",
    [float("inf"), float("nan"), 1e10, -1e10, 2**64, pytest.param(10**5000, id="10**5000")],
)
def test_format_rejects_non_finite_and_out_of_range(value: float) -> None:
    with pytest.raises(ValueError):
        format_duration(value)


@pytest.mark.parametrize("value", [True, "1s", None])
def test_format_rejects_non_numbers(value: object) -> None:
    with pytest.raises(TypeError):
        format_duration(value)  # type: ignore[arg-type]


def test_parse_duration_ns_of_numbers_rounds() -> None:
    assert parse_duration_ns(1.5) == 1_500_000_000
    assert parse_duration_ns(4e-10) == 0
    assert parse_duration_ns(-7) == -7 * S


# --------------------------------------------------------------------------- pydantic

class Policy(BaseModel):
    timeout: Duration
    grace: Duration = 30.0


@pytest.mark.parametrize(
    ("raw", "expected", "dumped"),
    [("30m", 1800.0, "30m0s"), ("1h30m", 5400.0, "1h30m0s"), ("300ms", 0.3, "300ms"),
     ("7d", 604800.0, "168h0m0s"), (90, 90.0, "1m30s"), (0.5, 0.5, "500ms"), ("0", 0.0, "0s")],
)
def test_pydantic_duration(raw: object, expected: float, dumped: str) -> None:
    model = Policy.model_validate({"timeout": raw})
    assert model.timeout == expected
    assert model.model_dump() == {"timeout": dumped, "grace": "30s"}
    assert json.loads(model.model_dump_json()) == {"timeout": dumped, "grace": "30s"}
    assert Policy.model_validate_json(model.model_dump_json()) == model


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("1", "1"), ("30 m", "30 m"), ("", ""), ("1x", "1x"), (True, "True"), (None, "None"),
     (float("inf"), "inf")],
)
def test_pydantic_duration_errors(raw: object, shown: str) -> None:
    with pytest.raises(ValidationError) as info:
        Policy.model_validate({"timeout": raw})
    (error,) = info.value.errors()
    assert error["type"] == "duration"
    assert error["loc"] == ("timeout",)
    assert error["msg"] == f'must be a duration such as "30m" or "1h30m", got "{shown}"'
    assert error["ctx"] == {"value": shown}


def test_pydantic_error_for_an_int_too_long_to_print() -> None:
    with pytest.raises(ValidationError) as info:
        Policy.model_validate({"timeout": 10**5000})
    (error,) = info.value.errors()
    assert error["type"] == "duration"
    assert error["ctx"] == {"value": "<int too large to show>"}


def test_pydantic_json_schema() -> None:
    for mode in ("validation", "serialization"):
        props = Policy.model_json_schema(mode=mode)["properties"]
        assert {k: v for k, v in props["timeout"].items() if k != "title"} == {
            "type": "string",
            "pattern": DURATION_PATTERN,
        }
    validator = jsonschema.Draft202012Validator(Policy.model_json_schema())
    for ok in ("30m", "1h30m", "5m0s", "0", "-1.5h", "7d", "300\u00b5s"):
        validator.validate({"timeout": ok})
    for bad in ("1", "30 m", "1x", "", 30, "1e3s"):
        assert not validator.is_valid({"timeout": bad}), bad


# --------------------------------------------------------------------------- properties

UNITS = {"ns": NS, "us": US, "\u00b5s": US, "\u03bcs": US, "ms": MS, "s": S, "m": MIN,
         "h": H, "d": DAY, "w": WEEK}
# fractional digits that keep each component an exact number of nanoseconds
EXACT_FRACTION_DIGITS = {u: len(str(n)) - len(str(n).rstrip("0")) for u, n in UNITS.items()}


@st.composite
def duration_strings(draw: st.DrawFn) -> tuple[str, int]:
    """A Go duration string and its exact value in nanoseconds (independent oracle)."""
    sign = draw(st.sampled_from(["", "+", "-"]))
    parts, total = [], 0
    for _ in range(draw(st.integers(1, 4))):
        unit = draw(st.sampled_from(sorted(UNITS)))
        whole = draw(st.integers(0, 999))
        places = draw(st.integers(0, EXACT_FRACTION_DIGITS[unit]))
        frac = draw(st.integers(0, 10**places - 1)) if places else None
        text = str(whole) if frac is None else f"{whole}.{frac:0{places}d}"
        total += int((Fraction(text) * UNITS[unit]))
        parts.append(text + unit)
    return sign + "".join(parts), -total if sign == "-" else total


@given(duration_strings())
@example(("1w2d3h4m5.5s6ms7us8ns", WEEK + 2 * DAY + 3 * H + 4 * MIN + 5506 * MS + 7 * US + 8))
def test_parse_matches_oracle(case: tuple[str, int]) -> None:
    text, ns = case
    assert PATTERN_RE.fullmatch(text)
    assert parse_duration_ns(text) == ns
    assert parse_duration(text) == seconds(ns)


@given(st.integers(MIN_NS, MAX_NS))
@example(MAX_NS)
@example(MIN_NS)
@example(0)
def test_round_trip_through_seconds(ns: int) -> None:
    value = seconds(ns)
    text = format_duration(value)
    assert parse_duration(text) == value
    assert format_duration(parse_duration(text)) == text
    assert PATTERN_RE.fullmatch(text)
    assert not re.search("[dw]", text)  # Go cannot read our extension units


@given(st.integers(-(2**51), 2**51))
def test_round_trip_is_nanosecond_exact_where_floats_allow(ns: int) -> None:
    assert parse_duration_ns(format_duration(seconds(ns))) == ns


@given(duration_strings())
def test_format_of_parse_is_canonical(case: tuple[str, int]) -> None:
    text, ns = case
    once = format_duration(parse_duration(text))
    assert format_duration(parse_duration(once)) == once


@given(st.from_regex(DURATION_PATTERN, fullmatch=True))
def test_everything_the_pattern_allows_parses_or_overflows(text: str) -> None:
    try:
        parse_duration_ns(text)
    except ValueError:
        # only overflow may reject a pattern-valid string
        body = text.lstrip("+-")
        total = sum(
            int(Fraction(num) * UNITS[unit])
            for num, unit in re.findall(
                r"([0-9]*\.?[0-9]*)(ns|us|\u00b5s|\u03bcs|ms|s|m|h|d|w)", body
            )
        )
        assert total > MAX_NS, text


@given(st.text(alphabet="0123456789.+-nsuµμmhdwx ", max_size=12))
def test_parser_never_accepts_what_the_pattern_rejects(text: str) -> None:
    try:
        parse_duration_ns(text)
    except ValueError:
        return
    assert PATTERN_RE.fullmatch(text), text
