"""The rare task (divrl/tasks/rare.py): family sizes against brute force,
``is_rare``, canonical forms and rules."""

import pytest

from divrl import tasks


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
