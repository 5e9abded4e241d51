"""GSM8K / MATH-style word problems with a numeric final-answer verifier.

Prompt and answer::

  prompt:  "Question: Ann has 3 boxes with 12 apples each. ...\\nAnswer:"
  answer:  " 3 boxes of 12 is 3*12 = 36.\\n36-5 = 31.\\n#### 31"
           or  "... so the answer is $\\boxed{31}$."   (then end-of-sequence)

The completion is free text (any characters) that ends its reasoning with a
final answer in one of two marked forms:

* GSM8K: ``#### <answer>``; the answer is the rest of the line after the
  *last* ``####``.
* MATH: ``\\boxed{<answer>}``; the answer is the brace-matched content of the
  *last* ``\\boxed{`` (at most ``MAX_ANSWER_CHARS`` characters).

``####`` wins when both occur. With ``lenient=True`` a completion without
either marker is scored by its last number (ASCII digits only) in its last
1000 characters (a number cut by that window is skipped, not read as its
tail), as several GSM8K evaluation harnesses do; the default is strict.

The final answer is lightly normalised (spaces, ``$`` and ``\\$``, a trailing
``.``, ``%`` and ``\\%``, ``\\!``, ``{,}`` -> ``,``, ``\\dfrac``/``\\tfrac``
-> ``\\frac``, ``\\left``/``\\right``) and then read by
``safe_parse.parse_number``: integers, decimals, comma groups of three, ``a/b``
and ``\\frac{a}{b}``. Numbers are compared exactly as fractions, so ``0.5``,
``1/2`` and ``\\frac{1}{2}`` all match a reference of ``1/2``. A reference
that is not a number (MATH answers such as ``x^2+1``) is compared as the
normalised string with all spaces removed. Unicode digits (``'３'``),
exponents and expressions are not numbers here; the reasoning text itself
may contain anything.

**Distinct solutions.** There is one correct final answer per problem; the
canonical form is the exact value (``format_fraction``: ``"31"``,
``"-3/4"``), or ``"text:<normalised>"`` for a non-numeric reference. Two
correct completions with different reasoning are the same solution.

**Data.** ``MathWordTask.generate`` makes small templated two-step problems
(GSM8K or MATH style) so that the pipeline runs without any data; the TFDS
builder (``divrl.tasks.builders.MathWordBuilder``) instead reads user-supplied
JSONL files from the TFDS ``manual_dir`` (see ``MANUAL_DOWNLOAD_INSTRUCTIONS``).
Either way an example is ``{"question", "answer", "final"}``: ``answer`` is
the reference solution text and ``final`` its extracted final answer.

**Splits.** An instance is its question text (the prompt). ``generate`` for
a split (``base.SplitRng``) keeps only questions whose seeded hash
(``base.hashed_split``) puts them in that split, a share ``test_fraction``
in "test", so generated train and test questions never coincide. The JSONL
files are used as they are: keeping their splits apart is the data's job.

Unlike the toy tasks, this alphabet is printable ASCII plus newline (96
characters): it does not fit the small character-level tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import re
from fractions import Fraction
from typing import Any, ClassVar

from divrl.tasks import base
from divrl.tasks import safe_parse

ALPHABET = "".join(chr(i) for i in range(32, 127)) + "\n"
MAX_ANSWER_CHARS = 256
STYLES = ("gsm8k", "math")
MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put one JSONL file per split in the manual directory, named <split>.jsonl
(by default train.jsonl and test.jsonl). Each line is a JSON object with a
string field "question" and a string field "answer" (the field names are
MathWordConfig.question_key / answer_key). The answer must end with a GSM8K
final answer "#### <number>" or contain a MATH-style \\boxed{...}; for
example the GSM8K files grade_school_math/data/{train,test}.jsonl can be used
as they are. Pass the directory as
tfds.download.DownloadConfig(manual_dir=...) or
divrl.tasks.load_split(..., manual_dir=...).
"""

_LENIENT_TAIL = 1000
_LAST_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?(?:/[0-9]+)?",
                          re.ASCII)
# The characters of _LAST_NUMBER: no match crosses any other character.
_NUMBER_CHARS = frozenset("0123456789,./-")


def _boxed_content(text: str) -> tuple[str | None, str | None]:
  start = text.rfind("\\boxed{")
  i = start + len("\\boxed{")
  depth = 1
  end = min(len(text), i + MAX_ANSWER_CHARS + 1)
  for j in range(i, end):
    c = text[j]
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return text[i:j], None
  return None, (f"format: \\boxed{{ not closed within {MAX_ANSWER_CHARS} "
                f"characters")


def extract_final_answer(text: str, *, lenient: bool = False
                         ) -> tuple[str | None, str | None]:
  """The raw final answer of a solution text (see the module docstring).

  Args:
    text: a completion or a reference solution.
    lenient: fall back to the last number when there is no marker.

  Returns:
    ``(answer, None)`` or ``(None, error)``. Linear time; never raises.
  """
  if not isinstance(text, str):
    return None, f"format: expected str, got {type(text).__name__}"
  marker = text.rfind("####")
  if marker >= 0:
    # Only a bounded window after the marker is ever looked at.
    window = text[marker + 4:marker + 4 + MAX_ANSWER_CHARS + 1]
    line, newline, _ = window.partition("\n")
    if not newline and len(window) > MAX_ANSWER_CHARS:
      return None, f"format: final answer longer than {MAX_ANSWER_CHARS}"
    line = line.strip(" \t\r")
    if not line:
      return None, "format: nothing after '####'"
    return line, None
  if "\\boxed{" in text:
    content, error = _boxed_content(text)
    if error:
      return None, error
    return content.strip(" \t\r\n"), None
  if lenient:
    # Only the last _LENIENT_TAIL characters are read. A number that the cut
    # splits is skipped, not read as its tail ("123" as "23", "-5" as "5").
    start = max(len(text) - _LENIENT_TAIL, 0)
    if start and text[start - 1] in _NUMBER_CHARS:
      while start < len(text) and text[start] in _NUMBER_CHARS:
        start += 1
    found = _LAST_NUMBER.findall(text, start)
    if found:
      return found[-1], None
  return None, "format: no final answer ('#### <answer>' or '\\boxed{...}')"


def normalize_answer(answer: str) -> str:
  """Light normalisation of a raw final answer (see the module docstring)."""
  s = answer.strip(" \t\r\n")
  for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""),
                   ("{,}", ","), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                   ("\\$", ""), ("$", ""), ("\\%", ""), ("%", "")):
    s = s.replace(old, new)
  s = s.strip(" \t\r\n")
  if s.endswith("."):
    s = s[:-1]
  return s.replace(" ", "")


def answer_value(answer: str) -> tuple[Fraction | None, str | None]:
  """The exact number of a raw final answer, or (None, error)."""
  result = safe_parse.parse_number(normalize_answer(answer),
                                   max_length=MAX_ANSWER_CHARS, max_digits=40)
  return result.value, result.error


def _decimal_or_fraction(value: Fraction) -> str:
  """GSM8K-style text: an integer, a terminating decimal, or ``a/b``."""
  if value.denominator == 1:
    return str(value.numerator)
  den = value.denominator
  for p in (2, 5):
    while den % p == 0:
      den //= p
  if den == 1:
    digits = 0
    while (value * 10**digits).denominator != 1:
      digits += 1
    scaled = str(abs((value * 10**digits).numerator)).rjust(digits + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{scaled[:-digits]}.{scaled[-digits:]}"
  return str(value)


def _latex(value: Fraction) -> str:
  if value.denominator == 1:
    return str(value.numerator)
  sign = "-" if value < 0 else ""
  return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


_NAMES = (("Ann", "she", "her"), ("Ben", "he", "his"), ("Cleo", "she", "her"),
          ("Dev", "he", "his"), ("Eli", "he", "his"), ("Fay", "she", "her"))
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "cards")


def parse_jsonl_line(line: str, *, question_key: str = "question",
                     answer_key: str = "answer",
                     where: str = "line") -> dict[str, str]:
  """One example from one JSONL line (JSON only; nothing is evaluated).

  Raises:
    ValueError: naming ``where`` (file and line) and the bad field.
  """
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"{where}: invalid JSON ({e.msg}).") from None
  except (ValueError, RecursionError) as e:
    # Nested too deeply, or an integer of more than 4300 digits.
    raise ValueError(f"{where}: invalid JSON ({type(e).__name__}).") from None
  if not isinstance(record, dict):
    raise ValueError(f"{where}: expected a JSON object.")
  for key in (question_key, answer_key):
    if not isinstance(record.get(key), str):
      raise ValueError(f"{where}: field {key!r} must be a string, got "
                       f"{type(record.get(key)).__name__}.")
  answer = record[answer_key]
  final, error = extract_final_answer(answer)
  if error:
    raise ValueError(f"{where}: the {answer_key!r} field has no final answer "
                     f"({error}).")
  return {"question": record[question_key], "answer": answer, "final": final}


@dataclasses.dataclass(frozen=True)
class MathWordTask(base.Task):
  """Word problems with a final numeric answer (see the module docstring).

  Attributes:
    style: the answer style of ``generate``: ``"gsm8k"`` (``#### 31``) or
      ``"math"`` (``\\boxed{31}``).
    lenient: score a completion with no final-answer marker by its last
      number.
    max_completion_chars: longer completions are rejected unread.
    test_fraction: the share of the generated questions held out for the
      "test" split, in (0, 1) (``generate`` only).
  """

  style: str = "gsm8k"
  lenient: bool = False
  max_completion_chars: int = 65536
  test_fraction: float = 0.25

  name: ClassVar[str] = "math_word"
  FIELDS: ClassVar[dict[str, str]] = {
      "question": "str", "answer": "str", "final": "str"}
  REFERENCE_FIELD: ClassVar[str] = "answer"

  def __post_init__(self):
    if self.style not in STYLES:
      raise ValueError(f"style must be one of {STYLES}, got {self.style!r}.")
    if not isinstance(self.lenient, bool):
      raise ValueError(f"lenient must be a bool, got {self.lenient!r}.")
    base.check_int("max_completion_chars", self.max_completion_chars, 1,
                   10**7)
    base.check_fraction("test_fraction", self.test_fraction)

  @property
  def alphabet(self) -> str:
    return ALPHABET

  def prompt(self, example) -> str:
    return f"Question: {self.check_example(example)['question']}\nAnswer:"

  def _verify(self, example: dict[str, Any], completion: str) -> base.Verdict:
    raw, error = extract_final_answer(completion, lenient=self.lenient)
    if error:
      return base.incorrect(error)
    want, want_error = answer_value(example["final"])
    if want_error is None:
      got, got_error = answer_value(raw)
      if got_error:
        return base.incorrect(f"format: final answer: {got_error}")
      if got != want:
        return base.incorrect(f"wrong: final answer {got}, expected {want}")
      return base.correct(safe_parse.format_fraction(got))
    norm = normalize_answer(raw)
    if norm != normalize_answer(example["final"]):
      return base.incorrect("wrong: final answer does not match the "
                            "(non-numeric) reference")
    return base.correct(f"text:{norm}")

  def solutions(self, example, limit: int | None = None) -> list[str]:
    """The reference solution (the only distinct solution)."""
    ex = self.check_example(example)
    if limit is not None:
      base.check_int("limit", limit, 0)
    return [ex["answer"]][:limit]

  def wrong_answer(self, example, rng) -> str:
    ex = self.check_example(example)
    rng = base.as_rng(rng)
    value, error = answer_value(ex["final"])
    delta = int(rng.integers(1, 10)) * (1 if rng.random() < 0.5 else -1)
    wrong = str(delta) if error else _decimal_or_fraction(value + delta)
    body = ex["answer"]
    marker = body.rfind("####")
    if marker >= 0:
      return f"{body[:marker]}#### {wrong}"
    start = body.rfind("\\boxed{")
    if start >= 0:
      return f"{body[:start]}\\boxed{{{wrong}}}$."
    return f"{body}\n#### {wrong}"

  def _problem(self, rng) -> tuple[str, list[str], Fraction]:
    name, pron, poss = _NAMES[int(rng.integers(len(_NAMES)))]
    item = _ITEMS[int(rng.integers(len(_ITEMS)))]
    kind = int(rng.integers(4))
    if kind == 0:
      a, b = int(rng.integers(2, 10)), int(rng.integers(3, 20))
      c = int(rng.integers(1, a * b))
      q = (f"{name} has {a} boxes with {b} {item} each. {pron.capitalize()} "
           f"gives away {c} {item}. How many {item} does {pron} have left?")
      steps = [f"{a} boxes of {b} is {a}*{b} = {a * b} {item}.",
               f"After giving away {c}, {a * b}-{c} = {a * b - c} are left."]
      return q, steps, Fraction(a * b - c)
    if kind == 1:
      a, b = int(rng.integers(2, 8)), int(rng.integers(2, 12))
      bill = next(v for v in (20, 50, 100, 200, 500) if v >= a * b)
      q = (f"{name} buys {a} {item} for {b} dollars each and pays with a "
           f"{bill} dollar bill. How much change does {pron} get, in dollars?")
      steps = [f"The {item} cost {a}*{b} = {a * b} dollars.",
               f"The change is {bill}-{a * b} = {bill - a * b} dollars."]
      return q, steps, Fraction(bill - a * b)
    if kind == 2:
      a, b = int(rng.integers(3, 40)), int(rng.integers(2, 9))
      q = (f"A rope is {a} meters long. {name} cuts it into {b} equal "
           f"pieces. How long is each piece, in meters?")
      value = Fraction(a, b)
      steps = [f"Each piece is {a}/{b} = {_decimal_or_fraction(value)} "
               f"meters long."]
      return q, steps, value
    a, b, c = (int(rng.integers(5, 30)), int(rng.integers(2, 8)),
               int(rng.integers(1, 50)))
    q = (f"{name} reads {a} pages a day for {b} days, then {c} more pages. "
         f"How many pages did {pron} read in total?")
    steps = [f"In {b} days {pron} reads {a}*{b} = {a * b} pages.",
             f"In total {a * b}+{c} = {a * b + c} pages."]
    return q, steps, Fraction(a * b + c)

  def generate(self, rng, n: int) -> list[dict[str, Any]]:
    """Templated two-step problems (no data needed); see ``style``."""
    rng = base.as_rng(rng)
    base.check_int("n", n, 0)
    where = base.split_of(rng)
    out = []
    for _ in range(n):
      question, steps, value = self._problem(rng)
      for _ in range(1000):
        if (where is None or base.hashed_split(question, where[0],
                                               self.test_fraction)
            == where[1]):
          break
        question, steps, value = self._problem(rng)
      else:
        raise ValueError(f"no generated question of split {where[1]!r} in "
                         f"1000 draws; raise or lower test_fraction.")
      if self.style == "gsm8k":
        final = _decimal_or_fraction(value)
        answer = "\n".join(steps) + f"\n#### {final}"
      else:
        final = _latex(value)
        answer = " ".join(steps) + f" The answer is $\\boxed{{{final}}}$."
      out.append({"question": question, "answer": answer, "final": final})
    return out
