"""Decimal String handling (rulebook section A, rules 1-4): property tests."""

from __future__ import annotations

import math
import re
import sys

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from scp.pipeline.ds import (
    DS_MAX_BYTES,
    DS_PATTERN,
    DSKind,
    classify_ds,
    format_ds,
    normalize_ds,
    parse_ds,
    split_ds,
)

RULE_1 = re.compile(r"^ *[+-]?(\d+|\d+\.\d*|\.\d+)([eE][+-]?\d+)? *$", re.ASCII)
finite = st.floats(allow_nan=False, allow_infinity=False)
SMALLEST_SUBNORMAL = 5e-324


# --------------------------------------------------------------------------- format_ds


@given(finite)
@example(0.1 + 0.2)
@example(-0.0)
@example(sys.float_info.max)
@example(-sys.float_info.max)
@example(sys.float_info.min)
@example(SMALLEST_SUBNORMAL)
@example(-1.2345678901234567e-300)
@example(123456789012345678.0)
@example(-0.000123456789012345)
def test_format_ds_is_a_valid_ds(x: float) -> None:
    text = format_ds(x)
    assert RULE_1.match(text), text
    assert len(text.encode("ascii")) <= DS_MAX_BYTES
    assert text not in ("-0", "-0.0")
    assert classify_ds(text) is DSKind.CLEAN
    parsed = parse_ds(text)
    assert parsed is not None and math.isfinite(parsed)


@given(finite)
@example(-sys.float_info.max)
@example(-2.2250738585072014e-308)
def test_format_ds_round_trips_within_ds_precision(x: float) -> None:
    """At least 9 significant digits for any finite float (3-digit negative
    exponent and a sign leave 9 digits in 16 bytes); subnormals within one step."""
    back = float(format_ds(x))
    assert abs(back - x) <= max(5e-9 * abs(x), SMALLEST_SUBNORMAL)


magnitudes = st.floats(min_value=1e-9, max_value=1e10, exclude_max=True)


@given(magnitudes, st.booleans())
@example(1.0 / 3.0, True)
@example(0.30000000000000004, False)
@example(9999999999.999998, True)
def test_format_ds_keeps_eleven_digits_in_the_usual_range(magnitude: float, negative: bool) -> None:
    """With a one-digit exponent, 16 bytes hold 11 significant digits: relative
    error below 1e-10 for 1e-9 <= |x| < 1e10."""
    x = -magnitude if negative else magnitude
    back = float(format_ds(x))
    assert abs(back - x) <= 1e-10 * abs(x)


short_reprs = st.one_of(
    st.integers(min_value=-(10**9), max_value=10**9).map(float),
    st.from_regex(r"-?[0-9]{1,6}\.[0-9]{1,7}", fullmatch=True).map(float),
    st.from_regex(r"-?[1-9]\.[0-9]{1,6}e-?[1-9][0-9]{0,2}", fullmatch=True).map(float),
).filter(math.isfinite)


@given(st.one_of(short_reprs, finite))
def test_format_ds_is_exact_when_repr_fits(x: float) -> None:
    assume(len(repr(x)) <= DS_MAX_BYTES)
    assert float(format_ds(x)) == x


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1 + 0.2, "0.3"),  # rule 2: assigning a float writes 19 characters
        (-0.0, "0"),
        (0.0, "0"),
        (0.5, "0.5"),
        (1e-5, "1e-05"),
        (1 / 3, "0.33333333333333"),
    ],
)
def test_format_ds_examples(value: float, expected: str) -> None:
    assert format_ds(value) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_format_ds_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError):
        format_ds(value)


# --------------------------------------------------------------------------- parse_ds


@given(st.from_regex(DS_PATTERN, fullmatch=True))
def test_parse_ds_accepts_every_rule_1_string(text: str) -> None:
    value = parse_ds(text)
    expected = float(text)
    if math.isfinite(expected):
        assert value == expected
    else:
        assert value is None  # 1e999: finite numbers only (rule 5)


@given(st.from_regex(DS_PATTERN, fullmatch=True), st.sampled_from(["mm", "cm", " mm", "px", "%"]))
def test_parse_ds_rejects_units(text: str, unit: str) -> None:
    assert parse_ds(text.rstrip(" ") + unit) is None


@given(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "+inf", "Infinity", "-Infinity", "NAN"]),
    st.text(alphabet=" ", max_size=2),
)
def test_parse_ds_rejects_nan_and_inf(word: str, pad: str) -> None:
    assert parse_ds(pad + word + pad) is None


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_parse_ds_rejects_comma_decimals(whole: int, fraction: int) -> None:
    assert parse_ds(f"{whole},{fraction}") is None
    assert classify_ds(f"{whole},{fraction}") is DSKind.COMMA


@pytest.mark.parametrize(
    "text",
    ["", " ", "0.5mm", "0. 5", "1 000", "0x10", "1e", ".", "+", "--1", "1.2.3", "١٢", "0.5\\0.5"],
)
def test_parse_ds_rejects_non_ds(text: str) -> None:
    assert parse_ds(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5", 0.5),
        (" 0.5 ", 0.5),
        ("+1", 1.0),
        ("-.5", -0.5),
        ("5.", 5.0),
        ("1.367188e+00", 1.367188),
    ],
)
def test_parse_ds_accepts_ds(text: str, expected: float) -> None:
    assert parse_ds(text) == expected


# --------------------------------------------------------------------------- classify, split


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("0.5", DSKind.CLEAN),
        ("  0.5  ", DSKind.CLEAN),  # rule 4: padding is not part of the value
        ("1.367188e+00", DSKind.CLEAN),  # exponent forms are legal DS
        ("0.30000000000000004", DSKind.REFORMAT),  # rule 2: 19 bytes
        ("00000000000000000.5", DSKind.REFORMAT),
        ("0,5", DSKind.COMMA),
        ("", DSKind.EMPTY),
        ("   ", DSKind.EMPTY),
        ("0.5mm", DSKind.INVALID),
        ("nan", DSKind.INVALID),
        ("0. 5", DSKind.INVALID),  # ambiguous: never guessed
        ("1e999", DSKind.INVALID),  # not finite
    ],
)
def test_classify_ds(text: str, kind: DSKind) -> None:
    assert classify_ds(text) is kind


def test_split_ds_str_and_bytes() -> None:
    assert split_ds("0.5\\0.6") == ["0.5", "0.6"]
    assert split_ds(b"0.5\\0.6 ") == ["0.5", "0.6 "]
    assert split_ds("0.3\\0.3\\") == ["0.3", "0.3", ""]
    assert split_ds("") == [""]


# --------------------------------------------------------------------------- normalize_ds


def test_normalize_trailing_empty_value_dropped() -> None:
    norm = normalize_ds("0.3\\0.3\\")
    assert norm.vm == 2 and norm.trailing_empty == 1
    assert norm.text == "0.3\\0.3" and norm.needs_edit


def test_normalize_padding_is_not_a_change() -> None:
    norm = normalize_ds(" 0.5 \\ 0.5")
    assert norm.numbers == (0.5, 0.5)
    assert not norm.needs_edit


def test_normalize_reformats_over_long_values() -> None:
    norm = normalize_ds("0.30000000000000004\\0.5")
    assert norm.text == "0.3\\0.5" and norm.needs_edit
    assert [p.kind for p in norm.reformatted] == [DSKind.REFORMAT]


def test_normalize_comma_only_when_allowed() -> None:
    assert normalize_ds("0,5\\0,5").values is None
    fixed = normalize_ds("0,5\\0,5", comma_decimal=True)
    assert fixed.text == "0.5\\0.5" and fixed.needs_edit


def test_normalize_never_guesses() -> None:
    norm = normalize_ds("0.30000000000000004\\0.5mm")
    assert norm.values is None and not norm.needs_edit


def test_normalize_empty_value() -> None:
    assert normalize_ds("").is_empty
    assert normalize_ds("   ").is_empty


@given(st.lists(finite, min_size=1, max_size=6))
def test_normalize_over_long_values_round_trip(values: list[float]) -> None:
    raw = "\\".join(f"{v:.25g}" if abs(v) < 1e300 else repr(v) for v in values)
    norm = normalize_ds(raw)
    assume(norm.numbers is not None)
    assert norm.values is not None
    for text, number in zip(norm.values, norm.numbers or (), strict=True):
        assert len(text) <= DS_MAX_BYTES and RULE_1.match(text)
        assert abs(float(text) - number) <= max(5e-9 * abs(number), SMALLEST_SUBNORMAL)
