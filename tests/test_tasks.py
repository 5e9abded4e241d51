"""divrl.tasks: solvability, determinism, canonical forms, counts, attacks.

The Countdown and modular counts are checked against brute-force enumerators
written here, on a different code path from the library (all surface
expression trees / all ordered tuples, with a top-down canonicaliser).
"""

import itertools
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest

from divrl import tasks
from divrl.tasks import math_word
from divrl.tasks import safe_parse

ALL = ("countdown", "modular", "rare", "math_word")


# --- Registry -----------------------------------------------------------------


def test_get_task_and_unknown_names():
  for name in ALL:
    task = tasks.get_task(name)
    assert task.name == name
  with pytest.raises(ValueError, match="countdown, math_word, modular, rare"):
    tasks.get_task("sudoku")
  with pytest.raises(ValueError, match="num_cont"):
    tasks.get_task("countdown", num_cont=3)


@pytest.mark.parametrize("name,kwargs,field", [
    ("countdown", {"num_count": 9}, "num_count"),
    ("countdown", {"min_number": 5, "max_number": 4}, "max_number"),
    ("countdown", {"use_all": 1}, "use_all"),
    ("modular", {"min_modulus": 1}, "min_modulus"),
    ("modular", {"num_terms": 0}, "num_terms"),
    ("rare", {"num_factors": 7}, "num_factors"),
    ("rare", {"min_target": 4, "max_target": 5}, "max_target"),
    ("rare", {"min_term": 1}, "min_term"),
    ("math_word", {"style": "latex"}, "style"),
])
def test_bad_knobs_name_the_argument(name, kwargs, field):
  with pytest.raises(ValueError, match=field):
    tasks.get_task(name, **kwargs)


def test_bad_examples_name_the_key():
  task = tasks.get_task("countdown")
  with pytest.raises(ValueError, match="'target'"):
    task.verify({"numbers": [1, 2], "solution": "1+2"}, "1+2")
  with pytest.raises(ValueError, match="'numbers'"):
    task.prompt({"numbers": "1,2", "target": 3, "solution": ""})
  with pytest.raises(TypeError, match="rng"):
    task.generate("seed", 2)


# --- Every task: solvable, deterministic, wrong answers, alphabet -------------


def _task_and_examples(name, seed, n=12):
  task = tasks.get_task(name)
  return task, task.generate(np.random.default_rng(seed), n)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", ALL)
def test_generated_examples_are_solvable(name, seed):
  task, examples = _task_and_examples(name, seed)
  for ex in examples:
    ref = task.verify(ex, task.reference(ex))
    assert ref.correct and ref.reward == 1.0 and ref.error is None, ref
    sols = task.solutions(ex, limit=40)
    assert sols and len(sols) <= 40
    verdicts = [task.verify(ex, s) for s in sols]
    assert all(v.correct for v in verdicts), verdicts
    canon = [v.canonical for v in verdicts]
    assert len(set(canon)) == len(canon)
    if name != "math_word":
      assert canon == sols  # toy solutions are canonical strings
      assert ref.canonical in set(task.solutions(ex))


@pytest.mark.parametrize("name", ALL)
def test_generation_is_deterministic_per_seed(name):
  task = tasks.get_task(name)
  a = task.generate(np.random.default_rng(7), 10)
  b = task.generate(7, 10)
  c = task.generate(np.random.default_rng(8), 10)
  assert a == b
  assert a != c
  assert task.generate(7, 0) == []


@pytest.mark.parametrize("name", ALL)
def test_wrong_answers_are_well_formed_and_incorrect(name):
  task, examples = _task_and_examples(name, 3)
  rng = np.random.default_rng(0)
  for ex in examples:
    for _ in range(5):
      verdict = task.verify(ex, task.wrong_answer(ex, rng))
      assert not verdict.correct and verdict.reward == 0.0
      assert verdict.canonical is None
      assert verdict.error.startswith(("wrong:", "invalid:")), verdict.error


def test_toy_alphabets_fit_a_small_tokenizer():
  assert len(tasks.TOY_ALPHABET) < 61
  rng = np.random.default_rng(0)
  for name in tasks.TOY_TASKS:
    task, examples = _task_and_examples(name, 0)
    alphabet = set(task.alphabet)
    assert alphabet <= set(tasks.TOY_ALPHABET)
    for ex in examples:
      texts = [task.prompt(ex), task.reference(ex), task.wrong_answer(ex, rng)]
      texts += task.solutions(ex, limit=20)
      for text in texts:
        assert set(text) <= alphabet, (name, text)
  task, examples = _task_and_examples("math_word", 0)
  for ex in examples:
    assert set(task.prompt(ex) + ex["answer"]) <= set(task.alphabet)


def test_prompt_formats():
  cd = tasks.get_task("countdown")
  assert cd.prompt({"numbers": [3, 5, 2, 7], "target": 16,
                    "solution": ""}) == "countdown 3,5,2,7 to 16:"
  mod = tasks.get_task("modular")
  assert mod.prompt({"modulus": 7, "residue": 3, "num_terms": 2,
                     "solution": ""}) == "mod 7: 2 terms sum to 3:"
  rare = tasks.get_task("rare")
  assert rare.prompt({"target": 35, "factors": [5, 7],
                      "solution": ""}) == "make 35:"
  mw = tasks.get_task("math_word")
  assert mw.prompt({"question": "Q?", "answer": "#### 1",
                    "final": "1"}) == "Question: Q?\nAnswer:"


# --- Countdown ----------------------------------------------------------------

CD = {"numbers": [3, 5, 2, 7], "target": 16, "solution": "(3+5)*2"}


@pytest.mark.parametrize("forms", [
    ["(3+5)*2", "2*(5+3)", "2*(3+5)", "(5+3)*2", " ( 3 + 5 ) * 2 "],
    ["7-(5-3)", "7-5+3", "3+7-5", "(7+3)-5", "3-(5-7)"],
    ["8/(4/2)", "8*2/4", "2*8/4", "(8*2)/4", "8/4*2"],
    ["2*3*4", "4*(3*2)", "(2*4)*3"],
    ["1+2+3+4", "(4+3)+(2+1)", "4+(3+(2+1))"],
    ["(9-3)*(2+4)", "(4+2)*(9-3)", "(2+4)*(9-3)"],
])
def test_countdown_equivalent_forms_share_a_canonical_form(forms):
  task = tasks.get_task("countdown")
  canon = {task.canonicalize(f) for f in forms}
  assert len(canon) == 1, canon
  (text, error), = canon
  assert error is None
  assert task.canonicalize(text) == (text, None)  # a fixed point


@pytest.mark.parametrize("a,b", [
    ("8*2", "4*4"), ("(1+2)*3", "1*3+2*3"), ("5*1", "5/1"),
    ("2*3+4", "2*(3+4)"), ("6/3/1", "6/(3/1)"), ("3-1", "1-3"),
    ("(2-1)*3", "3*2-3"),
])
def test_countdown_different_solutions_differ(a, b):
  task = tasks.get_task("countdown")
  assert task.canonicalize(a)[0] != task.canonicalize(b)[0]


@pytest.mark.parametrize("completion,prefix", [
    ("(3+5)*2", None),
    ("3+5+7+2-1", "invalid"),           # 1 is not given
    ("(3+5)*2*2", "invalid"),           # 2 used twice
    ("7/2*2+5+3-7", "invalid"),
    ("5*3", "wrong"),
    ("-3+5*2+7+2", "format"),           # no unary minus
    ("(03+5)*2", "format"),             # no leading zeros
    ("(3+5)x2", "format"),
    ("16", "invalid"),
    ("", "format"),
])
def test_countdown_rules(completion, prefix):
  verdict = tasks.get_task("countdown").verify(CD, completion)
  if prefix is None:
    assert verdict.correct and verdict.canonical == "(3+5)*2"
  else:
    assert not verdict.correct and verdict.error.startswith(prefix), verdict


def test_countdown_division_must_be_exact_but_negatives_are_fine():
  task = tasks.get_task("countdown")
  ex = {"numbers": [7, 2, 4, 9], "target": 14, "solution": ""}
  assert not task.verify(ex, "7/2*4").correct      # 3.5 is not an integer
  assert task.verify(ex, "7*4/2").correct
  assert task.verify(ex, "9-(2-7)").correct        # -5 on the way
  assert task.verify(ex, "(2-9)*(2-4)").error.startswith("invalid")
  ex = {"numbers": [2, 2, 3], "target": 12, "solution": ""}
  assert task.verify(ex, "2*2*3").correct          # a duplicate may be reused


def test_countdown_use_all():
  task = tasks.get_task("countdown", use_all=True)
  ex = {"numbers": [3, 5, 2, 7], "target": 16, "solution": ""}
  assert "every number" in task.verify(ex, "(3+5)*2").error
  assert task.verify(ex, "2*7+5-3").correct
  for ex in task.generate(0, 5):
    assert task.verify(ex, ex["solution"]).correct


def _trees(items):
  """All (tree, value) over the leaves in this order; '/' only when exact."""
  if len(items) == 1:
    yield items[0], items[0]
    return
  for i in range(1, len(items)):
    for left, lv in _trees(items[:i]):
      for right, rv in _trees(items[i:]):
        yield ("+", left, right), lv + rv
        yield ("-", left, right), lv - rv
        yield ("*", left, right), lv * rv
        if rv != 0 and lv % rv == 0:
          yield ("/", left, right), lv // rv


def _norm(tree):
  """Top-down canonical key: signed terms of maximal +/- or */÷ chains."""
  if isinstance(tree, int):
    return str(tree)
  group = "+-" if tree[0] in "+-" else "*/"
  terms = []

  def collect(x, sign):
    if isinstance(x, tuple) and x[0] in group:
      collect(x[1], sign)
      collect(x[2], sign if x[0] in "+*" else -sign)
    else:
      terms.append((sign, _norm(x)))

  collect(tree, 1)
  return group[0] + "[" + ",".join(f"{s}{t}" for s, t in sorted(terms)) + "]"


def _text(tree):
  if isinstance(tree, int):
    return str(tree)
  return f"({_text(tree[1])}{tree[0]}{_text(tree[2])})"


def _brute_force(numbers, target, use_all=False):
  """Distinct solutions as {top-down key: one fully parenthesised surface}."""
  found = {}
  sizes = [len(numbers)] if use_all else range(1, len(numbers) + 1)
  for r in sizes:
    for perm in itertools.permutations(range(len(numbers)), r):
      for tree, value in _trees(tuple(numbers[i] for i in perm)):
        if value == target:
          found.setdefault(_norm(tree), _text(tree))
  return found


COUNT_CASES = [
    ([1, 2, 3, 4], 10, False),
    ([1, 2, 3, 4], 24, True),
    ([2, 2, 3, 5], 10, False),   # duplicate numbers
    ([1, 1, 1], 2, False),       # many identities with 1
    ([6, 3, 2], 1, False),
    ([8, 4, 2, 2], 8, False),
]


@pytest.mark.parametrize("numbers,target,use_all", COUNT_CASES)
def test_countdown_solution_count_matches_brute_force(numbers, target,
                                                      use_all):
  task = tasks.get_task("countdown", use_all=use_all)
  ex = {"numbers": numbers, "target": target, "solution": ""}
  brute = _brute_force(numbers, target, use_all)
  sols = task.solutions(ex)
  assert len(sols) == len(brute) > 0
  # Every brute-force solution verifies, and the canonical forms of one
  # surface per brute-force class are exactly the library's solutions.
  canon = set()
  for surface in brute.values():
    verdict = task.verify(ex, surface)
    assert verdict.correct, (surface, verdict)
    canon.add(verdict.canonical)
  assert canon == set(sols)


def test_countdown_counts_on_generated_instances():
  task = tasks.get_task("countdown")
  for ex in task.generate(11, 6):
    assert len(task.solutions(ex)) == len(_brute_force(ex["numbers"],
                                                       ex["target"]))


def test_countdown_generation_excludes_trivial_targets():
  task = tasks.get_task("countdown", num_count=3, max_number=10, min_target=1,
                        max_target=50)
  for ex in task.generate(0, 50):
    assert ex["target"] not in ex["numbers"]
    assert 1 <= ex["target"] <= 50


# --- Modular ------------------------------------------------------------------


@pytest.mark.parametrize("forms", [["1,2", "2,1", " 2 , 1 "],
                                   ["0,3", "3,0"], ["5,5"]])
def test_modular_unordered_canonical(forms):
  task = tasks.get_task("modular")
  ex = {"modulus": 7, "residue": 3, "num_terms": 2, "solution": ""}
  canon = {task.verify(ex, f).canonical for f in forms}
  assert len(canon) == 1 and None not in canon


@pytest.mark.parametrize("completion,prefix", [
    ("1,1", "wrong"), ("10,0", "invalid"), ("8,2", "invalid"),
    ("01,2", "format"), ("1", "format"), ("1,2,0", "format"),
    ("-1,4", "format"),
    ("1;2", "format"), ("1,", "format"), ("1.0,2", "format"),
])
def test_modular_rules(completion, prefix):
  task = tasks.get_task("modular")
  ex = {"modulus": 7, "residue": 3, "num_terms": 2, "solution": ""}
  verdict = task.verify(ex, completion)
  assert not verdict.correct and verdict.error.startswith(prefix), verdict


@pytest.mark.parametrize("p", [3, 5, 7, 11, 13])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_modular_counts_match_brute_force(p, k):
  task = tasks.get_task("modular", num_terms=k)
  for c in range(p):
    ex = {"modulus": p, "residue": c, "num_terms": k, "solution": ""}
    brute = {tuple(sorted(t)) for t in itertools.product(range(p), repeat=k)
             if sum(t) % p == c}
    sols = task.solutions(ex)
    assert len(sols) == len(brute)
    assert {tuple(int(x) for x in s.split(",")) for s in sols} == brute
    if k == 2:
      assert len(sols) == (p + 1) // 2


def test_modular_solutions_are_lazy():
  task = tasks.get_task("modular", num_terms=4, max_modulus=10**5)
  ex = {"modulus": 99991, "residue": 5, "num_terms": 4, "solution": ""}
  start = time.perf_counter()
  assert len(task.solutions(ex, limit=10)) == 10
  assert time.perf_counter() - start < 1.0


# --- Rare ---------------------------------------------------------------------


@pytest.mark.parametrize("num_factors,min_target,max_target", [
    (2, 20, 99), (3, 30, 300), (4, 210, 1000)])
def test_rare_family_sizes_and_is_rare(num_factors, min_target, max_target):
  task = tasks.get_task("rare", num_factors=num_factors,
                        min_target=min_target, max_target=max_target)
  for ex in task.generate(0, 10):
    t = ex["target"]
    sols = task.solutions(ex)
    rare = [s for s in sols if task.is_rare(ex, task.verify(ex, s).canonical)]
    assert len(rare) == 2 ** (num_factors - 1) - 1
    assert len(sols) - len(rare) == t // 2 - 1
    # Brute force over all ordered pairs.
    brute = {("+", min(a, t - a)) for a in range(2, t - 1)}
    brute |= {("*", min(d, t // d)) for d in range(2, t) if t % d == 0}
    assert len(brute) == len(sols)
    assert not task.is_rare(ex, ex["solution"])
    assert not task.is_rare(ex, None)


def test_rare_canonical_and_rules():
  task = tasks.get_task("rare")
  ex = {"target": 35, "factors": [5, 7], "solution": "17+18"}
  assert task.verify(ex, "7*5").canonical == "5*7"
  assert task.verify(ex, " 5 * 7 ").canonical == "5*7"
  assert task.verify(ex, "18+17").canonical == "17+18"
  assert task.is_rare(ex, "5*7") and task.is_rare(ex, "7*5")
  assert not task.is_rare(ex, "5*8")
  for completion, prefix in [("1*35", "invalid"), ("0+35", "invalid"),
                             ("35", "format"), ("5*7+0", "format"),
                             ("5x7", "format"), ("05*7", "format"),
                             ("6*6", "wrong"), ("17-18", "format")]:
    verdict = task.verify(ex, completion)
    assert not verdict.correct and verdict.error.startswith(prefix), verdict


# --- Math word ----------------------------------------------------------------


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


# --- Hostile completions, for every task --------------------------------------

PAYLOADS = {
    "huge_literal": "9" * 10000,
    "huge_power": "10**10**10",
    "power_tower": "9**9**9**9",
    "big_product": "*".join(["999999"] * 40),
    "deep_open": "(" * 100000,
    "deep_balanced": "(" * 5000 + "1" + ")" * 5000,
    "deep_unary": "-" * 100000 + "1",
    "many_terms": "+".join(["1"] * 5000),
    "fullwidth_digit": "\uff13",
    "fullwidth_expr": "\uff13+\uff15",
    "arabic_indic": "\u0663*\u0665",
    "superscript": "2\u00b2",
    "rtl_override": "\u202e1+2\u202c",
    "emoji": "\U0001f600+1",
    "nul": "1\x00+2",
    "lone_surrogate": "\ud800",
    "import": "__import__('os').system('echo hi')",
    "statement": "1; import os",
    "lambda": "(lambda: 1)()",
    "fstring": "f'{1+1}'",
    "dunder": "().__class__.__bases__[0].__subclasses__()",
    "newline": "1\n+2",
    "div_zero": "1/0",
    # Short enough to pass the toy tasks' length checks (256 characters).
    "short_deep_open": "(" * 250,
    "short_nested": "(" * 100 + "3" + ")" * 100,
    "short_unary": "-" * 200 + "3",
    "short_digits": "9" * 200,
    "short_product": "*".join(["99"] * 80),
    "short_chain": "+".join(["1"] * 120),
    "short_big_mul": "9" * 30 + "*" + "9" * 30,
    "long_10mb": "1+" * 5_000_000 + "1",
    "spaces_10mb": " " * 10_000_000,
}
EXAMPLES = {
    "countdown": {"numbers": [3, 5, 2, 7], "target": 16, "solution": "(3+5)*2"},
    "modular": {"modulus": 7, "residue": 3, "num_terms": 2, "solution": "1,2"},
    "rare": {"target": 35, "factors": [5, 7], "solution": "17+18"},
    "math_word": {"question": "q", "answer": "#### 16", "final": "16"},
}
# math_word's free text may contain anything: attack its final-answer parser.
WRAPPERS = {"plain": "{}", "gsm8k": "#### {}", "boxed": "\\boxed{{{}}}"}


def _cases():
  for name in EXAMPLES:
    for payload in PAYLOADS:
      for wrapper in (WRAPPERS if name == "math_word" else ["plain"]):
        yield name, payload, wrapper


@pytest.mark.parametrize("name,payload,wrapper", list(_cases()))
def test_hostile_completions_fail_cleanly_and_fast(name, payload, wrapper):
  task = tasks.get_task(name)
  completion = WRAPPERS[wrapper].format(PAYLOADS[payload])
  start = time.perf_counter()
  verdict = task.verify(EXAMPLES[name], completion)
  elapsed = time.perf_counter() - start
  assert elapsed < 1.0, elapsed
  assert verdict.reward == 0.0 and not verdict.correct
  assert verdict.canonical is None
  assert isinstance(verdict.error, str) and verdict.error
  assert not verdict.error.startswith("internal"), verdict.error
  assert len(verdict.error) < 300


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


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("completion", [None, b"(3+5)*2", 16, ["16"]])
def test_non_str_completions(name, completion):
  verdict = tasks.get_task(name).verify(EXAMPLES[name], completion)
  assert not verdict.correct and verdict.error.startswith("format")


def test_records_with_numpy_and_bytes_are_accepted():
  task = tasks.get_task("countdown")
  record = {"numbers": np.array([3, 5, 2, 7]), "target": np.int64(16),
            "solution": b"(3+5)*2"}
  assert task.from_record(record) == EXAMPLES["countdown"]
  assert task.verify(record, "2*(3+5)").correct
  assert task.prompt(record) == "countdown 3,5,2,7 to 16:"


def test_importing_the_tasks_does_not_import_tfds():
  code = ("import sys, divrl.tasks; "
          "assert 'tensorflow_datasets' not in sys.modules; "
          "assert 'tensorflow' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_countdown_min_solutions():
  task = tasks.get_task("countdown", min_solutions=5)
  for ex in task.generate(0, 8):
    sols = task.solutions(ex)
    assert len(sols) >= 5
    assert ex["solution"] == sols[0]  # the shortest
  with pytest.raises(ValueError, match="min_solutions"):
    tasks.get_task("countdown", num_count=2, max_number=3, min_target=5,
                   max_target=6, min_solutions=50).generate(0, 1)


def test_math_word_completion_length_knob():
  task = tasks.get_task("math_word", max_completion_chars=100)
  ex = EXAMPLES["math_word"]
  assert task.verify(ex, "x" * 90 + "#### 16").correct
  assert "longer than 100" in task.verify(ex, "x" * 95 + "#### 16").error
