"""The math word task (divrl/tasks/math_word.py): final-answer extraction,
verification, the lenient mode, JSONL parsing and the completion length."""

from fractions import Fraction

import pytest

from divrl import tasks
from divrl.tasks import math_word
from tests.tasks.test_base import EXAMPLES


@pytest.mark.parametrize("completion,expected", [
    ("so 36-5 = 31.\n#### 31", "31"),
    ("#### 31\n", "31"),
    ("#### 1,234", "1234"),
    ("first #### 3\nthen #### 4", "4"),                  # the last marker
    ("The answer is $\\boxed{\\frac{3}{4}}$.", "3/4"),
    ("\\boxed{1} then \\boxed{2}", "2"),
    ("#### $18.00", "18"),
    ("#### 0.75", "3/4"),
    ("#### 50%", "50"),
])
def test_math_final_answer_extraction(completion, expected):
  raw, error = math_word.extract_final_answer(completion)
  assert error is None
  value, error = math_word.answer_value(raw)
  assert error is None and value == Fraction(expected)


@pytest.mark.parametrize("final,completion,ok", [
    ("3/4", "#### 0.75", True),
    ("3/4", "\\boxed{\\dfrac{3}{4}}", True),
    ("0.75", "#### 3/4", True),
    ("1234", "#### 1,234", True),
    ("1234", "#### 1234.0", True),
    ("72", "#### 72.5", False),
    ("72", "the answer is 72", False),                 # strict: no marker
    ("72", "#### seventy-two", False),
    ("72", "#### ７２", False),
    ("72", "#### 72 dollars", False),
    ("x^2+1", "\\boxed{x^2 + 1}", True),                # non-numeric reference
    ("x^2+1", "\\boxed{x^2 + 2}", False),
])
def test_math_verify(final, completion, ok):
  task = tasks.get_task("math_word")
  ex = {"question": "q", "answer": f"#### {final}", "final": final}
  verdict = task.verify(ex, completion)
  assert verdict.correct == ok, verdict
  if ok:
    assert task.verify(ex, ex["answer"]).canonical == verdict.canonical


def test_math_lenient_uses_the_last_number():
  task = tasks.get_task("math_word", lenient=True)
  ex = {"question": "q", "answer": "#### 72", "final": "72"}
  assert task.verify(ex, "3 and then 72").correct
  assert not task.verify(ex, "72 and then 3").correct
  assert not task.verify(ex, "no number").correct


def test_math_jsonl_parsing_errors_name_the_line():
  line = '{"question": "q", "answer": "#### 5"}'
  assert math_word.parse_jsonl_line(line)["final"] == "5"
  with pytest.raises(ValueError, match="f.jsonl:3: invalid JSON"):
    math_word.parse_jsonl_line("{", where="f.jsonl:3")
  with pytest.raises(ValueError, match="'answer'"):
    math_word.parse_jsonl_line('{"question": "q"}')
  with pytest.raises(ValueError, match="no final answer"):
    math_word.parse_jsonl_line('{"question": "q", "answer": "5"}')


def test_math_word_completion_length_knob():
  task = tasks.get_task("math_word", max_completion_chars=100)
  ex = EXAMPLES["math_word"]
  assert task.verify(ex, "x" * 90 + "#### 16").correct
  assert "longer than 100" in task.verify(ex, "x" * 95 + "#### 16").error
