"""divrl.tasks.safe_parse: values, precedence, limits and error handling;
hostile inputs to the parsers."""

import time
from fractions import Fraction

import numpy as np
import pytest

from divrl.tasks import math_word
from divrl.tasks import safe_parse
from tests.tasks.test_base import PAYLOADS


F = Fraction


@pytest.mark.parametrize("text,value", [
    ("0", F(0)),
    ("7", F(7)),
    ("1+2*3", F(7)),
    ("(1+2)*3", F(9)),
    ("2-3-4", F(-5)),          # left-associative
    ("2-(3-4)", F(3)),
    ("2/4/2", F(1, 4)),        # left-associative
    ("2/(4/2)", F(1)),
    ("8/3*3", F(8)),           # exact: no float rounding
    ("1/3+1/6", F(1, 2)),
    ("-3+5", F(2)),
    ("--3", F(3)),
    ("2*-3", F(-6)),
    ("2--3", F(5)),
    (" 1 +  2 ", F(3)),
    ("((((5))))", F(5)),
    ("999999999999999999", F(10**18 - 1)),
])
def test_values(text, value):
  result = safe_parse.parse(text)
  assert result.ok, result.error
  assert result.value == value
  assert result.tree.value == value


def _random_tree(rng, leaves):
  """(value, fully parenthesised text) of a random expression."""
  if leaves == 1:
    v = int(rng.integers(0, 30))
    return F(v), str(v)
  k = int(rng.integers(1, leaves))
  lv, lfull = _random_tree(rng, k)
  rv, rfull = _random_tree(rng, leaves - k)
  op = "+-*/"[int(rng.integers(4))]
  if op == "/" and rv == 0:
    op = "+"
  value = {"+": lambda: lv + rv, "-": lambda: lv - rv,
           "*": lambda: lv * rv, "/": lambda: lv / rv}[op]()
  return value, f"({lfull}{op}{rfull})"


@pytest.mark.parametrize("seed", range(5))
def test_random_expressions_match_direct_fraction_arithmetic(seed):
  rng = np.random.default_rng(seed)
  for _ in range(40):
    value, full = _random_tree(rng, int(rng.integers(1, 9)))
    result = safe_parse.parse(full)
    assert result.ok, (full, result.error)
    assert result.value == value
    # to_string keeps the tree: re-parsing gives the same tree.
    again = safe_parse.parse(safe_parse.to_string(result.tree))
    assert again.tree == result.tree
    assert len(safe_parse.to_string(result.tree)) <= len(full)


@pytest.mark.parametrize("text", [
    "", " ", "1+", "+1", "(1", "1)", "()", "1//2", "1**2", "1^2", "1/0",
    "1/(2-2)", "007", "1.5", "1e5", "0x10", "abc", "3 4", "(1)(2)", "1,000",
    "1\t+2", "1\n", "\u00a01", "\u2212" + "1", "1_000",
])
def test_rejected(text):
  result = safe_parse.parse(text)
  assert not result.ok
  assert result.value is None and result.tree is None
  assert isinstance(result.error, str) and result.error


def test_errors_name_the_position_and_do_not_echo_unicode():
  assert "position 2" in safe_parse.parse("1+a").error
  error = safe_parse.parse("1+\u202e2").error
  assert "U+202E" in error and "\u202e" not in error


@pytest.mark.parametrize("depth,ok", [(32, True), (33, False)])
def test_depth_limit(depth, ok):
  text = "(" * depth + "1" + ")" * depth
  assert safe_parse.parse(text).ok == ok
  assert safe_parse.parse("-" * depth + "1").ok == ok


def test_length_digits_nodes_and_magnitude_limits():
  limits = safe_parse.Limits(max_length=10)
  assert safe_parse.parse("1+2+3+4+5", limits).ok
  assert "longer than 10" in safe_parse.parse("1+2+3+4+5+6", limits).error
  limits = safe_parse.Limits(max_digits=3)
  assert safe_parse.parse("999", limits).ok
  assert "digits" in safe_parse.parse("1000", limits).error
  limits = safe_parse.Limits(max_nodes=5)
  assert safe_parse.parse("1+2+3", limits).ok
  assert "nodes" in safe_parse.parse("1+2+3+4", limits).error
  limits = safe_parse.Limits(max_magnitude=1000)
  assert safe_parse.parse("10*100", limits).ok
  assert "magnitude" in safe_parse.parse("10*101", limits).error
  assert "magnitude" in safe_parse.parse("1/1001", limits).error
  assert "magnitude" in safe_parse.parse("1001", limits).error
  big = "*".join(["999999999"] * 3)
  assert "magnitude" in safe_parse.parse(big).error


def test_switches():
  no_unary = safe_parse.Limits(allow_unary_minus=False)
  assert "unary" in safe_parse.parse("-1", no_unary).error
  assert safe_parse.parse("3-1", no_unary).ok
  zeros = safe_parse.Limits(allow_leading_zeros=True)
  assert safe_parse.parse("007", zeros).value == 7
  no_spaces = safe_parse.Limits(allow_spaces=False)
  assert "space" in safe_parse.parse("1 + 2", no_spaces).error


@pytest.mark.parametrize("field,value", [
    ("max_depth", 10**6), ("max_depth", 0), ("max_length", -1),
    ("max_digits", 10**4), ("max_nodes", 1.5), ("max_nodes", 10**4),
    ("max_magnitude", True),
])
def test_limits_validation_names_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    safe_parse.Limits(**{field: value})


@pytest.mark.parametrize("value", [None, b"1+2", 12, ["1"]])
def test_non_str_input_is_an_error_not_an_exception(value):
  assert not safe_parse.parse(value).ok
  assert not safe_parse.parse_number(value).ok


@pytest.mark.parametrize("text,value", [
    ("72", F(72)), ("-3", F(-3)), ("+3", F(3)), ("1,234,567", F(1234567)),
    ("3.25", F(13, 4)), (".5", F(1, 2)), ("0.50", F(1, 2)), ("7/4", F(7, 4)),
    ("-7/4", F(-7, 4)), ("\\frac{7}{4}", F(7, 4)), ("\\dfrac{1}{3}", F(1, 3)),
    ("-\\frac{7}{4}", F(-7, 4)), ("\\frac{-7}{4}", F(-7, 4)), ("007", F(7)),
    ("1,000.5", F(2001, 2)),
])
def test_parse_number(text, value):
  result = safe_parse.parse_number(text)
  assert result.ok, result.error
  assert result.value == value


@pytest.mark.parametrize("text", [
    "", "-", "1,23", "12,3456", ",123", "1.", "1.2.3", "1e3", "1/0", "1/2/3",
    "\\frac{1}{0}", "\\frac{1}{2", "\\frac{a}{2}", "３", "1 000", "2**3",
    "1+1", "--1", "0x1F", "inf", "nan", "9" * 41,
])
def test_parse_number_rejected(text):
  result = safe_parse.parse_number(text)
  assert not result.ok and result.error


def test_format_fraction():
  assert safe_parse.format_fraction(F(72)) == "72"
  assert safe_parse.format_fraction(F(-6, 8)) == "-3/4"


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_hostile_input_to_the_parsers(payload):
  generous = safe_parse.Limits(max_length=200_000, max_depth=100,
                               max_nodes=safe_parse.MAX_NODES_CAP)
  for limits in (safe_parse.DEFAULT_LIMITS, generous):
    start = time.perf_counter()
    result = safe_parse.parse(PAYLOADS[payload], limits)
    assert time.perf_counter() - start < 1.0
    assert (result.error is None) == (result.tree is not None)
    if limits is safe_parse.DEFAULT_LIMITS:
      assert not result.ok and result.error
    elif result.ok:  # e.g. depth 100 is within the generous limits
      assert payload in ("short_nested", "short_chain")
      repr(result)  # a tree at the caps is still safe to walk recursively
  start = time.perf_counter()
  assert not safe_parse.parse_number(PAYLOADS[payload]).ok
  assert not math_word.answer_value(PAYLOADS[payload][:10_000])[0]
  assert time.perf_counter() - start < 1.0
