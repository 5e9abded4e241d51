"""The Countdown task (divrl/tasks/countdown.py): canonical forms, rules, and
solution counts.

The counts are checked against brute-force enumerators written here, on a
different code path from the library (all surface expression trees, with a
top-down canonicaliser).
"""

import itertools

import pytest

from divrl import tasks


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


def test_countdown_min_solutions():
  task = tasks.get_task("countdown", min_solutions=5)
  for ex in task.generate(0, 8):
    sols = task.solutions(ex)
    assert len(sols) >= 5
    assert ex["solution"] == sols[0]  # the shortest
  with pytest.raises(ValueError, match="min_solutions"):
    tasks.get_task("countdown", num_count=2, max_number=3, min_target=5,
                   max_target=6, min_solutions=50).generate(0, 1)
