"""The modular task (divrl/tasks/modular.py): unordered canonical forms,
rules, solution counts against brute force (all ordered tuples), and lazy
solutions."""

import itertools
import time

import pytest

from divrl import tasks


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
