"""Fuzzing every reader of model output in divrl/tasks: the verifiers of all
tasks in ``tasks.TASKS``, their reward components, and the parsers and
answer extractors they use.

Two kinds of input: hypothesis properties (arbitrary text, look-alike
mutations of correct answers, random expressions and numbers checked against
independent oracles) and a corpus of adversarial strings (1 MB inputs,
100k digits, 10k-deep nesting, huge exponents, division by zero, Unicode
look-alikes, Python and shell code). Every call must return a reward (a
finite float) or a clear rejection within ``BOUND`` seconds, must not raise,
and must execute nothing: ``no_execution`` makes ``eval``/``exec``/
``compile``/``open``, ``os.system``/``os.popen``, the ``os.exec*``/
``spawn*``/``fork`` family and ``subprocess.Popen`` record the call and
raise, and the code payloads would create ``SENTINEL`` if run.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import io
import json
import math
import os
import re
import subprocess
import tempfile
import time
from fractions import Fraction

import hypothesis
import pytest
from hypothesis import strategies as st

from divrl import tasks
from divrl.tasks import base
from divrl.tasks import math_word
from divrl.tasks import safe_parse
from tests import fuzzing

# Seconds per call. The worst calls measured here (2 busy cores): 0.14 s,
# parse of a 256 KB sum with max_length raised to 1 MB; 31 ms in the task
# verifiers (normalize_answer of a 1 MB completion).
BOUND = 1.0
SENTINEL = os.path.join(tempfile.gettempdir(),
                        f"divrl-verifier-fuzz-{os.getpid()}")
MB = 1 << 20

# --- No execution -------------------------------------------------------------

_FORBIDDEN = (
    (builtins, ("eval", "exec", "compile", "open")),
    (io, ("open",)),
    (os, ("system", "popen", "open", "fork", "forkpty", "posix_spawn",
          "posix_spawnp", "execv", "execve", "execvp", "execvpe", "execl",
          "execlp", "spawnv", "spawnve", "spawnvp", "spawnl")),
    (subprocess, ("Popen",)),
)


@contextlib.contextmanager
def no_execution():
  """Within: every function of ``_FORBIDDEN`` records its name and raises.

  Yields the list of recorded names. The verifiers catch every exception
  (``Task.verify``), so the record, not the exception, is what the tests
  check.
  """
  calls, saved = [], []

  def forbid(name):
    def forbidden(*args, **kwargs):
      del args, kwargs
      calls.append(name)
      raise AssertionError(f"a verifier called {name}")
    return forbidden

  for module, names in _FORBIDDEN:
    for name in names:
      if hasattr(module, name):
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, forbid(f"{module.__name__}.{name}"))
  try:
    yield calls
  finally:
    for module, name, original in reversed(saved):
      setattr(module, name, original)


def guarded(fn, *args, **kwargs):
  """``fn(*args, **kwargs)``: asserts it executed nothing and took < BOUND s.

  An exception of ``fn`` propagates and fails the test.
  """
  with no_execution() as calls:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    elapsed = time.perf_counter() - start
  assert not calls, (fn, calls)
  assert elapsed < BOUND, (fn, elapsed)
  assert not os.path.exists(SENTINEL)
  return out


# --- Tasks and examples -------------------------------------------------------

# Knobs of every task in tasks.TASKS, including the largest budgets.
CONFIGS = {
    "countdown": ({}, {"use_all": True}),
    "modular": ({}, {"num_terms": 1},
                {"num_terms": 6, "min_modulus": 99_990,
                 "max_modulus": 100_000}),
    "rare": ({}, {"num_factors": 3, "max_target": 3000}),
    "math_word": ({}, {"style": "math", "lenient": True},
                  {"lenient": True, "max_completion_chars": 10**7}),
}
# Hand-written examples; no corpus payload below contains their answers.
FIXED = {
    "countdown": [{"numbers": [3, 5, 2, 7], "target": 16,
                   "solution": "7*2+5-3"}],
    "modular": [{"modulus": 7, "residue": 3, "num_terms": 2,
                 "solution": "1,2"}],
    "rare": [{"target": 35, "factors": [5, 7], "solution": "17+18"}],
    "math_word": [
        {"question": "q", "answer": "#### 16", "final": "16"},
        {"question": "q", "answer": "\\boxed{\\frac{7}{4}}",
         "final": "\\frac{7}{4}"},
        {"question": "q", "answer": "\\boxed{x^2+1}", "final": "x^2+1"},
    ],
}
# The characters a correct toy answer can contain.
ANSWER_CHARS = {"countdown": safe_parse.DIGITS + "+-*/() ",
                "modular": safe_parse.DIGITS + ", ",
                "rare": safe_parse.DIGITS + "+* "}


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
  """A task, its fixed examples and a few generated ones."""

  label: str
  task: base.Task
  fixed: tuple
  generated: tuple

  @property
  def examples(self):
    return self.fixed + self.generated


def _cases() -> list[Case]:
  out = []
  for name, configs in CONFIGS.items():
    for i, knobs in enumerate(configs):
      task = tasks.get_task(name, **knobs)
      out.append(Case(f"{name}{i}", task, tuple(FIXED[name]),
                      tuple(task.generate(100 + i, 2))))
  return out


CASES = _cases()
CASE_EXAMPLES = [(case, ex) for case in CASES for ex in case.examples]
COUNTDOWN = tasks.get_task("countdown")
RARE = tasks.get_task("rare")


def check_verdict(task, verdict):
  """A reward in {0, 1}, or a rejection with a printable, short error."""
  assert isinstance(verdict, base.Verdict), verdict
  assert type(verdict.reward) is float and math.isfinite(verdict.reward)
  assert type(verdict.correct) is bool
  assert verdict.reward == (1.0 if verdict.correct else 0.0), verdict
  assert verdict.correct == (verdict.error is None)
  assert verdict.correct == isinstance(verdict.canonical, str), verdict
  if not verdict.correct:
    assert verdict.error.startswith(("format: ", "invalid: ", "wrong: ")), (
        verdict.error)
    assert verdict.error.isascii() and verdict.error.isprintable()
    assert len(verdict.error) < 500
  components = guarded(task.reward_components, verdict)
  assert len(components) == len(task.REWARD_COMPONENTS)
  assert all(type(c) is float and c in (0.0, 1.0) for c in components)


def check_parse_result(result):
  """A value, or an error message that is printable ASCII."""
  assert isinstance(result, safe_parse.ParseResult)
  assert result.ok == (result.value is not None)
  if result.ok:
    assert isinstance(result.value, Fraction)
  else:
    assert result.error and result.tree is None
    assert result.error.isascii() and result.error.isprintable()
    assert len(result.error) < 500


def read_everywhere(text: str, *, examples: str = "all") -> list:
  """Every reader of model text on ``text``, each checked; the verdicts.

  ``examples`` is "all" or "fixed" (the hand-written examples only).
  """
  verdicts = []
  for case in CASES:
    for ex in (case.examples if examples == "all" else case.fixed):
      verdict = guarded(case.task.verify, ex, text)
      check_verdict(case.task, verdict)
      if isinstance(case.task, tasks.RareTask):
        assert guarded(case.task.is_rare, ex, text) is (
            verdict.correct and "*" in text)
      verdicts.append(verdict)
  for limits in (safe_parse.DEFAULT_LIMITS, COUNTDOWN.limits):
    check_parse_result(guarded(safe_parse.parse, text, limits))
  check_parse_result(guarded(safe_parse.parse_number, text))
  check_parse_result(guarded(safe_parse.parse_number, text, max_length=256))
  for lenient in (False, True):
    answer, error = guarded(math_word.extract_final_answer, text,
                            lenient=lenient)
    assert (answer is None) != (error is None)
    assert answer is None or answer in text
  assert isinstance(guarded(math_word.normalize_answer, text), str)
  value, error = guarded(math_word.answer_value, text)
  assert (value is None) != (error is None)
  canon, error = guarded(COUNTDOWN.canonicalize, text)
  assert (canon is None) != (error is None)
  for c in text[:64]:
    assert guarded(safe_parse.describe_char, c).isprintable()
  try:
    record = guarded(math_word.parse_jsonl_line, text, where="f:1")
    assert set(record) == {"question", "answer", "final"}
  except ValueError as e:  # the documented rejection of a bad data line
    assert str(e).startswith("f:1: "), e
  return verdicts


def test_every_task_is_fuzzed():
  """CONFIGS names every registered task, and every example is solvable."""
  assert set(CONFIGS) == set(tasks.TASKS) == set(FIXED)
  for case in CASES:
    for ex in case.examples:
      ref = case.task.verify(ex, case.task.reference(ex))
      assert ref.correct, (case.label, ex, ref)


def test_the_guard_sees_execution():
  """The guard records eval/os.system/Popen/open even when they are caught,
  and stops them before they create the sentinel."""

  def unsafe(text):
    try:
      return eval(text)  # pylint: disable=eval-used
    except AssertionError:
      return None

  for code in (f"__import__('os').system('touch {SENTINEL}')",
               f"open({SENTINEL!r}, 'w')",
               f"__import__('subprocess').Popen(['touch', {SENTINEL!r}])"):
    with no_execution() as calls:
      assert unsafe(code) is None
    assert calls == ["builtins.eval"]
    with no_execution() as calls:
      try:
        exec(compile(code, "<fuzz>", "eval"))  # pylint: disable=exec-used
      except AssertionError:
        pass
    assert calls == ["builtins.compile"]
    with no_execution() as calls:
      with pytest.raises(AssertionError):
        os.system(f"touch {SENTINEL}")
      with pytest.raises(AssertionError):
        subprocess.run(["touch", SENTINEL], check=False)
      with pytest.raises(AssertionError):
        open(SENTINEL, "w", encoding="utf-8")  # pylint: disable=R1732
    assert calls == ["os.system", "subprocess.Popen", "builtins.open"]
  assert not os.path.exists(SENTINEL)
  assert eval("1+1") == 2  # pylint: disable=eval-used  # restored


# --- Adversarial corpus -------------------------------------------------------

S = SENTINEL
CORPUS = {
    # Very long inputs.
    "mb_digits": "1" * MB,
    "digits_100k": "9" * 100_000,
    "mb_sum": "1+" * (MB // 2) + "1",
    "mb_spaces": " " * MB + "\u0667",
    "mb_newlines": "\n" * MB + "\uff17",
    "mb_fullwidth": "\uff11" * MB,
    "mb_markers": "####" * (MB // 4),
    "mb_boxed": "\\boxed{" * (MB // 7),
    "mb_braces": "{" * MB,
    "mb_code": "__import__('os');" * (MB // 17),
    "decimal_100k": "0." + "0" * 100_000 + "1",
    "commas_100k": "1" + ",000" * 25_000,
    "frac_100k": "\\frac{" + "9" * 100_000 + "}{7}",
    "slash_100k": "9" * 50_000 + "/" + "7" * 50_000,
    # Deep nesting.
    "parens_10k": "(" * 10_000 + "1" + ")" * 10_000,
    "open_10k": "(" * 10_000,
    "close_10k": ")" * 10_000,
    "unary_10k": "-" * 10_000 + "1",
    "neg_parens_10k": "(-" * 10_000 + "1" + ")" * 10_000,
    "braces_10k": "{" * 10_000 + "1" + "}" * 10_000,
    "boxed_10k": "\\boxed{" * 10_000 + "1" + "}" * 10_000,
    "frac_10k": "\\frac{" * 10_000 + "1}{2}" + "}" * 10_000,
    "json_100k": "[" * 100_000,
    "json_objects_10k": '{"a":' * 10_000 + "1" + "}" * 10_000,
    "short_parens": "(" * 40 + "7" + ")" * 40,
    "short_chain": "+".join(["1"] * 100),
    "short_products": "*".join(["9999"] * 50),
    # Huge exponents and non-finite numbers.
    "pow_tower": "9**9**9",
    "caret": "10^99999",
    "sci": "1e999999",
    "sci_upper": "1E+999999",
    "sci_tiny": "1e-999999",
    "neg_pow": "2**-99999",
    "pow_10": "10**10**10",
    "caret_tower": "9^9^9^9",
    "latex_pow": "10^{99999}",
    "sqrt": "2**0.5",
    "pow_call": "pow(9, 9**9)",
    "float_inf": "float('inf')",
    "inf": "inf",
    "neg_inf": "-inf",
    "nan": "nan",
    "infinity": "Infinity",
    "overflow": "1e309",
    "latex_inf": "\\infty",
    "superscript_pow": "9\u2079\u2079",
    # Division by zero.
    "div0": "1/0",
    "div0_expr": "1/(2-2)",
    "zero_over_zero": "0/0",
    "div0_answer": "(3+5)/(2-2)",
    "frac_div0": "\\frac{1}{0}",
    "frac_zero_zero": "\\frac{0}{0}",
    "div0_decimal": "7/0.0",
    "div0_neg": "1/-0",
    "div0_commas": "1,000/0",
    "div0_times_zero": "1/(1-1)*0",
    # Unicode look-alikes and odd code points (no surrogates).
    "fullwidth": "\uff11\uff16",
    "fullwidth_expr": "(\uff13+\uff15)*\uff12",
    "fullwidth_all": "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18"
                     "\uff19",
    "fullwidth_ops": "(3\uff0b5)\uff0a2",
    "arabic_indic": "\u0661\u0666",
    "eastern_arabic": "\u06f1\u06f6",
    "devanagari": "\u0967\u096c",
    "math_bold": "\U0001d7cf\U0001d7d4",
    "minus_sign": "\u22127",
    "minus_expr": "(3+5)*2\u22120",
    "en_dash": "3\u20135",
    "times": "5\u00d77",
    "divide": "8\u00f72",
    "division_slash": "7\u22154",
    "fraction_slash": "7\u20444",
    "superscript": "2\u00b2",
    "superscripts": "\u00b9\u2076",
    "subscripts": "\u2081\u2086",
    "vulgar": "\u00bd",
    "circled": "\u246f",
    "roman": "\u216b",
    "combining": "1\u03016",
    "combining_only": "\u0301\u0308\u20dd",
    "zwj": "1\u200d6",
    "zwsp": "1\u200b6",
    "zwnj": "(3+5)\u200c*2",
    "word_joiner": "1\u20606",
    "bom": "\ufeff7",
    "rtl_override": "\u202e61\u202c",
    "isolates": "\u2066(3+5)*2\u2069",
    "nul": "1\x006",
    "nuls": "\x00" * 100,
    "delete": "7\x7f",
    "nbsp": "7\u00a0",
    "ideographic_space": "\u30007",
    "arabic_decimal": "3\u066b5",
    "arabic_comma": "1\u060c2",
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "private_use": "\ue000\U000f0000",
    "replacement": "\ufffd",
    "line_separator": "7\u2028",
    "emoji": "\U0001f600+1",
    # Python and shell code.
    "import": f"__import__('os').system('touch {S}')",
    "shell_subst": f"$(touch {S})",
    "backticks": f"`touch {S}`",
    "shell_seq": f"; touch {S}",
    "shell_pipe": f"| touch {S}",
    "shell_and": f"&& touch {S}",
    "rm": "$(rm -rf /)",
    "eval": f"eval(\"__import__('os').system('touch {S}')\")",
    "exec": f"exec(\"open('{S}', 'w')\")",
    "open": f"open('{S}', 'w').write('x')",
    "compile": f"compile('open(\"{S}\", \"w\")', 'x', 'exec')",
    "lambda": "lambda: 1",
    "lambda_popen": f"(lambda: __import__('subprocess').Popen(['touch', "
                    f"'{S}']))()",
    "fstring": f"f'{{__import__(\"os\").popen(\"touch {S}\")}}'",
    "subclasses": "().__class__.__base__.__subclasses__()",
    "statement": "import os; os.system('id')",
    "ternary": "8 if True else 9",
    "template": "{{7*7}}",
    "dollar_template": "${7*7}",
    "latex_input": "\\input{/etc/passwd}",
    "latex_write18": "\\write18{touch x}",
    "boxed_code": f"\\boxed{{__import__('os').system('touch {S}')}}",
    "hex": "0x10",
    "octal": "0o20",
    "binary": "0b10000",
    "complex": "7j",
    "underscore": "1_6",
    "int_call": "int('7')",
    "huge_range": "sum(range(10**9))",
    "huge_string": "'a' * 10**10",
}
WRAPPERS = ("{}", "#### {}", "\\boxed{{{}}}", "Reasoning: {}\nSo done.")


@pytest.mark.parametrize("name", list(CORPUS))
def test_adversarial_corpus(name):
  """Every reader rejects every payload, alone or wrapped in an answer form,
  quickly, without executing or raising."""
  for wrapper in WRAPPERS:
    text = wrapper.format(CORPUS[name])
    verdicts = read_everywhere(text, examples="fixed")
    assert not any(v.correct for v in verdicts), (name, wrapper, verdicts)
    for limits in (safe_parse.DEFAULT_LIMITS, COUNTDOWN.limits):
      assert not safe_parse.parse(text, limits).ok
    assert not safe_parse.parse_number(text, max_length=256).ok
    assert math_word.answer_value(text)[0] is None
    assert COUNTDOWN.canonicalize(text)[0] is None


def test_raised_limits_stay_linear():
  """With the length limit raised to 1 MB, long inputs are rejected by the
  node, depth and digit limits in linear time (~0.5 s per MB here, so
  256 KB inputs keep the bound)."""
  big = safe_parse.Limits(max_length=MB, max_depth=safe_parse.MAX_DEPTH_CAP,
                          max_nodes=safe_parse.MAX_NODES_CAP)
  quarter = MB // 4
  for text in ("1" * quarter, "1+" * (quarter // 2) + "1", "(" * quarter,
               "-" * quarter + "1", "(-" * (quarter // 2) + "1",
               CORPUS["parens_10k"], CORPUS["neg_parens_10k"]):
    result = guarded(safe_parse.parse, text, big)
    check_parse_result(result)
    assert not result.ok, (text[:20], result)
  assert guarded(safe_parse.parse, " " * quarter + "7", big).value == 7
  assert guarded(safe_parse.parse, "(" * 100 + "7" + ")" * 100, big).ok


# --- Regressions --------------------------------------------------------------


@pytest.mark.parametrize("text,final", [
    ("123" + " " * 998, "23"),      # was read as 23
    ("-5" + "." * 999, "5"),        # was read as 5
    ("x 1,234" + " " * 997, "234"),  # was read as 234
])
def test_lenient_skips_a_number_cut_by_the_tail_window(text, final):
  """Lenient mode reads the last 1000 characters; a number the cut splits was
  read as its tail, so a wrong answer could earn the reward."""
  task = tasks.get_task("math_word", lenient=True)
  verdict = task.verify({"question": "q", "answer": f"#### {final}",
                         "final": final}, text)
  assert not verdict.correct and verdict.error.startswith("format: ")
  assert math_word.extract_final_answer(text + " 7", lenient=True) == (
      "7", None)
  whole = text.strip(" .")  # the number is read when it is not cut
  assert math_word.extract_final_answer(whole, lenient=True) == (
      whole[whole.rfind(" ") + 1:], None)


@pytest.mark.parametrize("line", ["[" * 100_000, '{"a":' * 100_000,
                                  "9" * 5000])
def test_jsonl_line_errors_are_value_errors_naming_the_line(line):
  """A too deeply nested line raised RecursionError, a 5000-digit integer a
  ValueError that did not name the line."""
  with pytest.raises(ValueError, match=r"^data\.jsonl:7: invalid JSON"):
    math_word.parse_jsonl_line(line, where="data.jsonl:7")


# --- Hypothesis strategies ----------------------------------------------------

LOOKALIKES = (
    "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"  # fullwidth
    "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"  # Arabic
    "\u06f0\u06f1\u06f6\u0966\u0967\u096c\U0001d7ce\U0001d7d4"
    "\u00b2\u00b3\u00b9\u2070\u2076\u2081\u2086\u00bd\u246f\u216b"
    "\u2212\u2013\uff0d\u00d7\u2217\uff0a\u00f7\u2215\u2044\uff0f\uff0b"
    "\uff08\uff09\u060c\uff0c\u066b\u3002\uff5b\uff5d\uff3c"
    "\u0301\u0308\u20dd\u200b\u200c\u200d\u2060\ufeff"   # combining, zero-width
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"  # bidi
    "\x00\x7f\u00a0\u3000\u2028\ufffd\ufffe\uffff\ue000\U0010ffff")
SUPERSCRIPTS = "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
# Look-alikes of each ASCII character of an answer.
TWINS = {
    **{d: (chr(0xff10 + i) + chr(0x0660 + i) + chr(0x06f0 + i)
           + chr(0x0966 + i) + chr(0x1d7ce + i) + SUPERSCRIPTS[i])
       for i, d in enumerate(safe_parse.DIGITS)},
    "-": "\u2212\u2013\uff0d", "*": "\u00d7\u2217\uff0a",
    "/": "\u00f7\u2215\u2044\uff0f", "+": "\uff0b\u2795", "(": "\uff08",
    ")": "\uff09", ",": "\u060c\uff0c", ".": "\u066b\u3002",
    " ": "\u00a0\u3000",
    "{": "\uff5b", "}": "\uff5d", "\\": "\uff3c",
}
FRAGMENTS = (
    "(", ")", "+", "-", "*", "/", "**", "^", ",", ".", " ", "\n", "\t", "0",
    "7", "16", "99999", "9" * 40, "1e999999", "/0", "(2-2)", "\\frac{",
    "}{", "}", "{", "\\boxed{", "####", "$", "\\%", "\\left", "\\right",
    "\\dfrac{", "__import__('os')", "eval(", "exec(", "lambda: ", "f'{",
    "open(", "$(", "`", ";", "|", "inf", "nan", "0x", "_", "\"", "[",
    "{\"question\": \"q\", \"answer\": \"#### 16\"}",
) + tuple(LOOKALIKES)
GRAMMAR = "0123456789+-*/() "

_chars = st.one_of(st.sampled_from(GRAMMAR), st.sampled_from(LOOKALIKES),
                   st.characters())
_fragment = st.one_of(st.sampled_from(FRAGMENTS), st.text(_chars, max_size=6))
_repeated = st.builds(lambda f, n: (f * n)[:MB], _fragment,
                      st.integers(1, 20_000))
MODEL_TEXT = st.one_of(
    st.text(_chars, max_size=300),
    st.lists(st.one_of(_fragment, _fragment, _repeated), max_size=8).map(
        "".join),
    st.text(max_size=100),
)
CASE_EXAMPLE = st.sampled_from(CASE_EXAMPLES)


def _valid_answers(case, ex):
  """(head, answer) pairs whose concatenation is a correct completion; a
  mutation of ``answer`` must make it incorrect."""
  if isinstance(case.task, tasks.MathWordTask):
    return [("Some reasoning.\n#### ", ex["final"]),
            ("So it is $\\boxed{", ex["final"] + "}$.")]
  return [("", s) for s in case.task.solutions(ex, limit=8)]


VALID = {(case.label, i): _valid_answers(case, ex)
         for case in CASES for i, ex in enumerate(case.examples)}


@st.composite
def mutated_answers(draw):
  """(case, example, completion): a correct answer with one character
  swapped for a look-alike or one odd character inserted."""
  case = draw(st.sampled_from(CASES))
  i = draw(st.integers(0, len(case.examples) - 1))
  pairs = VALID[(case.label, i)]
  head, answer = draw(st.sampled_from(pairs))
  # The math answers end with "}$." after the \boxed content: mutate inside.
  size = len(answer) - (3 if answer.endswith("}$.") else 0)
  spots = [j for j in range(size) if answer[j] in TWINS]
  if spots and draw(st.booleans()):
    j = draw(st.sampled_from(spots))
    answer = (answer[:j] + draw(st.sampled_from(TWINS[answer[j]]))
              + answer[j + 1:])
  else:
    j = draw(st.integers(0, size))
    answer = answer[:j] + draw(st.sampled_from(LOOKALIKES)) + answer[j:]
  return case, case.examples[i], head + answer


# --- Properties of the verifiers ----------------------------------------------


@fuzzing.settings(ci=100)
@hypothesis.given(CASE_EXAMPLE, MODEL_TEXT)
def test_verify_arbitrary_text(case_example, text):
  """A verdict for any text; a toy answer with a character outside its
  grammar is never correct; a correct toy canonical form is a fixed point."""
  fuzzing.count("verifiers/verify_arbitrary_text")
  case, ex = case_example
  verdict = guarded(case.task.verify, ex, text)
  check_verdict(case.task, verdict)
  name = case.task.name
  if name in ANSWER_CHARS and not set(text) <= set(ANSWER_CHARS[name]):
    assert not verdict.correct, (text, verdict)
  if verdict.correct and name in ANSWER_CHARS:
    again = case.task.verify(ex, verdict.canonical)
    assert again.correct and again.canonical == verdict.canonical


@fuzzing.settings(ci=150)
@hypothesis.given(mutated_answers())
def test_look_alikes_in_a_correct_answer_are_rejected(case_example_text):
  """One look-alike or invisible character in a correct answer makes it
  incorrect (``format:``, or ``wrong:`` for a non-numeric reference)."""
  fuzzing.count("verifiers/look_alikes_rejected")
  case, ex, text = case_example_text
  verdict = guarded(case.task.verify, ex, text)
  check_verdict(case.task, verdict)
  assert not verdict.correct, (text, verdict)
  assert verdict.error.startswith(("format: ", "wrong: ")), verdict.error


@fuzzing.settings(ci=100)
@hypothesis.given(CASE_EXAMPLE, st.integers(0, 3), st.integers(0, 3),
                  MODEL_TEXT, st.data())
def test_noise_around_a_correct_answer_keeps_it_correct(case_example, left,
                                                        right, prefix, data):
  """ASCII spaces around a toy answer, and any reasoning text without a
  marker before a math answer, keep it correct with the same canonical
  form."""
  case, ex = case_example
  pairs = VALID[(case.label, case.examples.index(ex))]
  head, answer = data.draw(st.sampled_from(pairs))
  fuzzing.count("verifiers/noise_keeps_correct")  # after the last draw
  task = case.task
  if isinstance(task, tasks.MathWordTask):
    for marker in ("####", "\\boxed{"):  # the answer's marker must be last
      while marker in prefix:
        prefix = prefix.replace(marker, "")
    plain = guarded(task.verify, ex, head + answer)
    text = prefix[:60_000] + "\n" + head + answer
  else:
    plain = guarded(task.verify, ex, answer)
    assert plain.canonical == answer  # toy solutions are canonical
    text = " " * left + answer + " " * right
  verdict = guarded(task.verify, ex, text)
  check_verdict(task, verdict)
  assert plain.correct and verdict.correct, (text, verdict)
  assert verdict.canonical == plain.canonical


@fuzzing.settings(ci=60)
@hypothesis.given(st.lists(st.one_of(_fragment, _repeated), min_size=1,
                           max_size=6).map("".join),
                  st.sampled_from(WRAPPERS))
def test_adversarial_mixtures_in_every_reader(text, wrapper):
  """Concatenated adversarial fragments (up to ~1 MB), in each answer form,
  through every reader of every task."""
  fuzzing.count("verifiers/adversarial_mixtures")
  read_everywhere(wrapper.format(text))


# --- Properties of the parsers ------------------------------------------------

_LEAF = st.one_of(st.integers(0, 20), st.integers(0, 10**18 - 1)).map(
    lambda v: ("n", v))
TREES = st.recursive(
    _LEAF,
    lambda kids: st.one_of(
        st.tuples(st.sampled_from("+-*/"), kids, kids),
        st.tuples(st.just("neg"), kids)),
    max_leaves=24)


def _tree_text(tree) -> list[str]:
  """The tokens of ``tree`` with every binary operation parenthesised."""
  if tree[0] == "n":
    return [str(tree[1])]
  if tree[0] == "neg":
    return ["-", *_tree_text(tree[1])]
  return ["(", *_tree_text(tree[1]), tree[0], *_tree_text(tree[2]), ")"]


def _tree_oracle(tree, limits):
  """(value, depth, nodes) of ``tree``; value None if the parser must fail
  on division by zero or magnitude."""
  bound = limits.max_magnitude
  if tree[0] == "n":
    return Fraction(tree[1]), 0, 1
  if tree[0] == "neg":
    value, depth, nodes = _tree_oracle(tree[1], limits)
    return (None if value is None else -value), depth + 1, nodes + 1
  (a, da, na), (b, db, nb) = (_tree_oracle(tree[1], limits),
                              _tree_oracle(tree[2], limits))
  depth, nodes = max(da, db) + 1, na + nb + 1
  if a is None or b is None or (tree[0] == "/" and b == 0):
    return None, depth, nodes
  value = {"+": a + b, "-": a - b, "*": a * b,
           "/": a / b if b else None}[tree[0]]
  if abs(value.numerator) > bound or value.denominator > bound:
    return None, depth, nodes
  return value, depth, nodes


@fuzzing.settings(ci=150)
@hypothesis.given(TREES, st.sampled_from(["", " ", "  "]))
def test_parse_matches_a_tree_oracle(tree, sep):
  """``parse`` of a random expression accepts it iff it is within the limits
  and has no division by zero, with the exact value; ``to_string``
  round-trips."""
  fuzzing.count("verifiers/parse_tree_oracle")
  text = sep.join(_tree_text(tree))
  limits = safe_parse.Limits(max_length=10_000)
  value, depth, nodes = _tree_oracle(tree, limits)
  expect_ok = (value is not None and depth <= limits.max_depth
               and nodes <= limits.max_nodes)
  result = guarded(safe_parse.parse, text, limits)
  check_parse_result(result)
  assert result.ok == expect_ok, (text, result.error)
  if result.ok:
    assert result.value == value
    again = safe_parse.to_string(result.tree)
    reparsed = safe_parse.parse(again, safe_parse.Limits(
        max_length=10_000, max_depth=safe_parse.MAX_DEPTH_CAP))
    assert reparsed.ok and reparsed.value == value, (again, reparsed.error)
    assert safe_parse.to_string(reparsed.tree) == again
  short = guarded(safe_parse.parse, text)
  check_parse_result(short)
  assert short.ok == (result.ok and len(text) <= 256)


def _python_value(text: str) -> Fraction | None:
  """The value of ``text`` as a Python expression over int literals, unary
  minus and ``+ - * /`` (evaluated on the AST with Fractions), or None."""
  try:
    node = ast.parse(text.strip(" "), mode="eval").body
  except SyntaxError:
    return None
  ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
         ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
  bound = safe_parse.DEFAULT_LIMITS.max_magnitude

  def value(n):
    if isinstance(n, ast.Constant) and type(n.value) is int:
      if n.value > bound:
        raise ValueError
      return Fraction(n.value)
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
      return -value(n.operand)
    if isinstance(n, ast.BinOp) and type(n.op) in ops:
      out = ops[type(n.op)](value(n.left), value(n.right))
      if abs(out.numerator) > bound or out.denominator > bound:
        raise ValueError
      return out
    raise ValueError

  try:
    return value(node)
  except (ValueError, ZeroDivisionError):
    return None


@fuzzing.settings(ci=200)
@hypothesis.given(st.text(st.sampled_from(GRAMMAR), max_size=30))
def test_parse_agrees_with_python_arithmetic(text):
  """On strings of the grammar's characters, ``parse`` accepts exactly the
  Python integer expressions without unary plus, ``**``, ``//``, leading
  zeros or over-long literals, with Python's value (Fractions for ``/``)."""
  fuzzing.count("verifiers/parse_python_oracle")
  result = guarded(safe_parse.parse, text)
  check_parse_result(result)
  expected = _python_value(text)
  excluded = (re.search(r"(?<![0-9])0[0-9]|[0-9]{19}|\*\*|//", text)
              or re.search(r"(^|[-+*/(])\s*\+", text.strip(" ")))
  if result.ok:
    assert result.value == expected, (text, expected)
  elif expected is not None:
    assert excluded, (text, result.error)


@st.composite
def number_forms(draw):
  """(text, value or None): a number as ``parse_number`` documents it."""
  kind = draw(st.sampled_from(["int", "commas", "decimal", "point", "slash",
                               "frac"]))
  n = draw(st.integers(0, 10**20))
  m = draw(st.integers(0, 10**20))
  digits = draw(st.text(st.sampled_from(safe_parse.DIGITS), min_size=1,
                        max_size=15))
  if kind == "int":
    text, value = str(n), Fraction(n)
  elif kind == "commas":
    text, value = f"{n:,}", Fraction(n)
  elif kind == "decimal":
    text, value = f"{n}.{digits}", n + Fraction(int(digits), 10**len(digits))
  elif kind == "point":
    text, value = f".{digits}", Fraction(int(digits), 10**len(digits))
  else:
    prefix = draw(st.sampled_from(["\\frac", "\\dfrac", "\\tfrac"]))
    text = f"{n}/{m}" if kind == "slash" else f"{prefix}{{{n}}}{{{m}}}"
    value = Fraction(n, m) if m else None
  sign = draw(st.sampled_from(["", "-", "+"]))
  if value is not None and sign == "-":
    value = -value
  return sign + text, value


@fuzzing.settings(ci=150)
@hypothesis.given(number_forms(), st.sampled_from(["{}", "${}$", "\\${}",
                                                   "{}.", "{}\\%", " {} "]))
def test_parse_number_reads_documented_forms(form, decoration):
  """Every documented number form parses to its exact value (zero
  denominators are rejected), also through ``answer_value``'s
  normalisation."""
  fuzzing.count("verifiers/parse_number_forms")
  text, value = form
  result = guarded(safe_parse.parse_number, text, max_length=256)
  check_parse_result(result)
  assert result.value == value, (text, result.error)
  got, error = guarded(math_word.answer_value, decoration.format(text))
  assert got == value, (decoration.format(text), error)


# D: a decimal as parse_number reads it (comma groups, optional fraction).
_D = r"(?:[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+|)(?:\.[0-9]+)?"
NUMBER = re.compile(
    rf"[+-]?(?:\\[dt]?frac\{{-?{_D}\}}\{{{_D}\}}|{_D}(?:/{_D})?)")


@fuzzing.settings(ci=150)
@hypothesis.given(st.one_of(MODEL_TEXT, st.text(st.sampled_from(
    "0123456789,./-+\\frac{}dt"), max_size=30)))
def test_parse_number_accepts_only_plain_ascii_numbers(text):
  """What ``parse_number`` accepts matches an independent regular
  expression of the documented forms, with the same value."""
  fuzzing.count("verifiers/parse_number_oracle")
  result = guarded(safe_parse.parse_number, text)
  check_parse_result(result)
  if result.ok:
    assert NUMBER.fullmatch(text) and text.isascii(), text
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if body.startswith("\\"):
      num, den = body[body.index("{") + 1:-1].split("}{")
    else:
      num, _, den = body.partition("/")
    value = Fraction(num.replace(",", ""))
    if den:
      value /= Fraction(den.replace(",", ""))
    assert result.value == sign * value, text


# The lenient last number, read with the test's own copy of the pattern.
LAST_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?(?:/[0-9]+)?", re.ASCII)
NUMBER_CHARS = set("0123456789,./-")
# A number, filler and a suffix, 1000 - k characters from the number's end
# to the text's end: for 0 < k < len(number) the lenient window cuts it.
LENIENT_TEXT = st.builds(
    lambda a, fill, k, b: a + fill * (1000 - len(b) - k) + b,
    st.from_regex(r"-?[0-9][0-9,./-]{0,8}", fullmatch=True),
    st.sampled_from([" ", ".", "x", "-", ",", "\uff11"]),
    st.integers(-2, 10),
    st.sampled_from(["", "7", " 7", "x", "."]))


@fuzzing.settings(ci=150)
@hypothesis.given(st.one_of(MODEL_TEXT, LENIENT_TEXT, LENIENT_TEXT))
def test_extract_final_answer(text):
  """The marked answer is the documented substring; the lenient answer is
  the last number of the whole text (never a piece of one), and is found
  when it starts after a non-number character in the last 1000."""
  fuzzing.count("verifiers/extract_final_answer")
  strict = guarded(math_word.extract_final_answer, text)
  lenient = guarded(math_word.extract_final_answer, text, lenient=True)
  for answer, error in (strict, lenient):
    assert (answer is None) != (error is None)
    assert error is None or error.startswith("format: ")
  if "####" in text:
    line = text[text.rfind("####") + 4:].partition("\n")[0]
    expected = line.strip(" \t\r")
    if expected and len(line) <= math_word.MAX_ANSWER_CHARS:
      assert strict == (expected, None)
    assert lenient == strict
  elif "\\boxed{" in text:
    assert strict[0] is None or len(strict[0]) <= math_word.MAX_ANSWER_CHARS
    assert lenient == strict
  else:
    assert strict[0] is None
    matches = list(LAST_NUMBER.finditer(text))
    if lenient[0] is not None:
      assert lenient[0] == matches[-1].group(), text
    if matches:
      cut = max(len(text) - 1000, 0)
      gap = text[cut:matches[-1].start()]
      if cut == 0 or any(c not in NUMBER_CHARS for c in gap):
        assert lenient == (matches[-1].group(), None), text


@fuzzing.settings(ci=100)
@hypothesis.given(st.one_of(
    MODEL_TEXT,
    st.builds(json.dumps, st.dictionaries(
        st.sampled_from(["question", "answer", "other"]),
        st.one_of(st.text(max_size=20), MODEL_TEXT.map(lambda t: "#### " + t),
                  st.integers(), st.none()), max_size=3)),
    st.builds(lambda n, s: "[" * n + s, st.sampled_from([1, 500, 5000, 10**5]),
              MODEL_TEXT)))
def test_jsonl_lines_give_an_example_or_a_value_error(line):
  """``parse_jsonl_line`` (the reader of reference answers) returns an
  example or raises a ValueError that names the line, never anything else."""
  fuzzing.count("verifiers/parse_jsonl_line")
  try:
    record = guarded(math_word.parse_jsonl_line, line, where="f:3")
  except ValueError as e:
    assert str(e).startswith("f:3: "), e
    return
  assert all(isinstance(record[k], str) for k in ("question", "answer",
                                                    "final"))
  assert math_word.extract_final_answer(record["answer"])[0] == (
      record["final"])


COUNTDOWN_TEXT = st.recursive(
    st.integers(1, 20).map(lambda v: ("n", v)),
    lambda kids: st.tuples(st.sampled_from("+-*/"), kids, kids),
    max_leaves=8).map(lambda tree: "".join(_tree_text(tree)))


@fuzzing.settings(ci=100)
@hypothesis.given(st.one_of(MODEL_TEXT, COUNTDOWN_TEXT))
def test_canonical_forms_and_rare_mode_of_any_text(text):
  """``canonicalize`` is a projection (its output is its own canonical
  form), ``is_rare`` is a bool true only for a correct product, and
  ``describe_char`` shows any character as printable ASCII."""
  fuzzing.count("verifiers/canonical_and_rare")
  canon, error = guarded(COUNTDOWN.canonicalize, text)
  assert (canon is None) != (error is None)
  if canon is not None:
    assert COUNTDOWN.canonicalize(canon) == (canon, None)
  for ex in FIXED["rare"]:
    rare = guarded(RARE.is_rare, ex, text)
    assert rare is (RARE.verify(ex, text).correct and "*" in text)
  for c in text[:50]:
    shown = guarded(safe_parse.describe_char, c)
    assert shown.isascii() and shown.isprintable() and len(shown) <= 10
    assert (shown == repr(c)) == (" " <= c <= "~")
