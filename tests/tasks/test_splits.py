"""Held-out splits (divrl/tasks/base.py and every generated task): the test
split of a seeded dataset shares no instance with its train split.

The overlap tests compare what ``generate`` draws for the two splits, with
"the same instance" written out here (the prompt, or the prompt up to the
order of the numbers for countdown), not with the tasks' own partition
functions. Each uses sizes at which the old independent draws overlapped
(e.g. modular, 256 train and 64 test prompts: 42 shared test prompts; rare:
every test prompt).
"""

import zlib

import numpy as np
import pytest

from divrl import tasks
from divrl.tasks import base
from divrl.tasks import builders

SEEDS = (0, 1, 2)


def _splits(task, seed, num_train, num_test):
  return (task.generate(builders.split_rng(seed, "train"), num_train),
          task.generate(builders.split_rng(seed, "test"), num_test))


def _assert_disjoint(task, key, num_train, num_test):
  for seed in SEEDS:
    train, test = _splits(task, seed, num_train, num_test)
    shared = {key(e) for e in train} & {key(e) for e in test}
    assert not shared, (seed, sorted(shared)[:5])
    assert not {task.prompt(e) for e in train} & {task.prompt(e)
                                                  for e in test}


# --- No instance in both splits, per task ------------------------------------


def test_countdown_splits_share_no_instance():
  # The "easy" preset: 26-36 of 100 test instances were training instances.
  task = tasks.get_task("countdown", num_count=3, min_number=1, max_number=10,
                        min_target=1, max_target=50)
  _assert_disjoint(task, lambda e: (tuple(sorted(e["numbers"])),
                                    e["target"]), 1000, 100)


@pytest.mark.parametrize("kwargs", [{}, {"num_terms": 3, "max_modulus": 17}])
def test_modular_splits_share_no_prompt(kwargs):
  task = tasks.get_task("modular", **kwargs)
  _assert_disjoint(task, lambda e: (e["modulus"], e["residue"],
                                    e["num_terms"]), 256, 64)
  # Every modulus still occurs in both splits.
  train, test = _splits(task, 0, 2000, 2000)
  moduli = set(range(task.min_modulus, task.max_modulus + 1))
  assert {e["modulus"] for e in train} == moduli
  assert {e["modulus"] for e in test} == moduli


@pytest.mark.parametrize("kwargs", [{}, {"min_target": 30, "max_target": 999,
                                         "num_factors": 3}])
def test_rare_splits_share_no_target(kwargs):
  task = tasks.get_task("rare", **kwargs)
  _assert_disjoint(task, lambda e: e["target"], 1000, 100)


def test_math_word_generated_splits_share_no_question():
  # 5-8 of 100 generated test questions were training questions.
  task = tasks.get_task("math_word")
  _assert_disjoint(task, lambda e: e["question"], 1000, 200)


def test_tfds_splits_of_rare_share_no_target(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  targets = {}
  for split, n in (("train", 200), ("test", 50)):
    ds = tasks.load_split("rare", split, tmp_path, seed=4, num_train=200,
                          num_test=50)
    targets[split] = {int(ds[i]["target"]) for i in range(len(ds))}
  assert targets["train"] and targets["test"]
  assert not targets["train"] & targets["test"]


# --- The rare targets: a seeded partition of all of them ---------------------


def test_rare_target_split_is_a_seeded_partition():
  task = tasks.get_task("rare")
  every = task.targets()
  # Products of two distinct primes in [20, 299], checked by trial division.
  want = [t for t in range(20, 300)
          if sum(1 for p in range(2, t) if t % p == 0
                 and all(p % d for d in range(2, p))) == 2
          and all(t % (p * p) for p in range(2, 18))]
  assert list(every) == want and len(every) == 83
  train, test = task.targets(0, "train"), task.targets(0, "test")
  assert len(test) == round(0.25 * 83) == 21
  assert sorted(train + test) == list(every)
  assert task.targets(0, "test") == test  # deterministic
  assert task.targets(1, "test") != test  # and seeded
  # Generation draws each split's targets, and only those.
  got = {e["target"] for e in task.generate(builders.split_rng(0, "test"),
                                            2000)}
  assert got == set(test)
  # Without a split (an int seed), from all of them.
  assert {e["target"] for e in task.generate(0, 3000)} == set(every)


def test_rare_test_fraction_sets_the_number_of_test_targets():
  task = tasks.get_task("rare", test_fraction=0.5)
  assert len(task.targets(3, "test")) == round(0.5 * 83)
  # At least one target per split, whatever the fraction.
  tiny = tasks.get_task("rare", min_target=6, max_target=10,
                        test_fraction=0.01)
  assert tiny.targets() == (6, 10)
  assert len(tiny.targets(0, "test")) == len(tiny.targets(0, "train")) == 1


# --- Shared helpers -----------------------------------------------------------


def test_split_rng_draws_the_old_stream_and_names_its_split():
  rng = builders.split_rng(5, "test")
  assert isinstance(rng, np.random.Generator)
  assert base.split_of(rng) == (5, "test")
  old = np.random.default_rng([5, zlib.crc32(b"test")])
  np.testing.assert_array_equal(rng.integers(0, 1000, 20),
                                old.integers(0, 1000, 20))
  assert base.split_of(np.random.default_rng(5)) is None
  assert base.split_of(5) is None


@pytest.mark.parametrize("name", tasks.TOY_TASKS + ("math_word",))
def test_generate_refuses_an_unknown_split(name):
  task = tasks.get_task(name)
  with pytest.raises(ValueError, match="validation"):
    task.generate(builders.split_rng(0, "validation"), 3)


def test_split_members_partition_range_n():
  for n in (2, 3, 10, 101):
    for fraction in (0.01, 0.25, 0.99):
      test = base.split_members(n, 7, "test", fraction)
      train = base.split_members(n, 7, "train", fraction)
      assert sorted(np.concatenate([test, train]).tolist()) == list(range(n))
      assert len(test) == min(n - 1, max(1, round(fraction * n)))
      assert len(train) >= 1
  a = base.split_members(50, 0, "test", 0.25)
  assert a.tolist() == base.split_members(50, 0, "test", 0.25).tolist()
  assert a.tolist() != base.split_members(50, 1, "test", 0.25).tolist()
  assert a.tolist() != base.split_members(50, 0, "test", 0.25, 9).tolist()


def test_hashed_split_holds_out_about_test_fraction():
  keys = [(tuple(range(i % 7)), i) for i in range(20000)]
  for fraction in (0.1, 0.25, 0.5):
    share = np.mean([base.hashed_split(k, 3, fraction) == "test"
                     for k in keys])
    assert abs(share - fraction) < 0.015, (fraction, share)
  # Deterministic; a larger fraction only moves instances into "test".
  assert [base.hashed_split(k, 3, 0.25) for k in keys[:200]] == [
      base.hashed_split(k, 3, 0.25) for k in keys[:200]]
  assert all(base.hashed_split(k, 3, 0.5) == "test" for k in keys[:2000]
             if base.hashed_split(k, 3, 0.25) == "test")
  # Another seed, another partition.
  assert [base.hashed_split(k, 3, 0.25) for k in keys[:200]] != [
      base.hashed_split(k, 4, 0.25) for k in keys[:200]]


@pytest.mark.parametrize("name, kwargs, match", [
    ("countdown", {"test_fraction": 0.0}, "test_fraction"),
    ("modular", {"test_fraction": 1.0}, "test_fraction"),
    ("rare", {"test_fraction": True}, "test_fraction"),
    ("math_word", {"test_fraction": "0.2"}, "test_fraction"),
    ("rare", {"min_target": 6, "max_target": 9}, "at least two"),
])
def test_bad_split_knobs_are_refused(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    tasks.get_task(name, **kwargs)
