"""The task interface (divrl/tasks/base.py), checked on every task: solvable,
deterministic, wrong answers, alphabets, prompts, malformed examples, TFDS
records, and hostile or non-str completions (``verify`` never raises)."""

import time

import numpy as np
import pytest

from divrl import tasks


ALL = ("countdown", "modular", "rare", "math_word")


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
