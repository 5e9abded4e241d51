"""The planted rare family in the pretraining mixture (divrl/tasks/rare.py
``solution_families`` and divrl/rl/pretrain.py ``sft_mixture`` /
``sft_targets``): every prompt with a product answer has the product family
at exactly ``rare_weight`` of its correct answers, whatever
``max_solutions``, and the drawn pretraining pairs realise that share.

Which answers are products is checked with ``verify`` and the answer text
(a correct ``a*b``), not with the families' own labels."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from divrl import tasks
from divrl.rl import pretrain
from divrl.tasks import builders

WRONG_SHARE = 0.2


def _train(task, n, seed=0):
  return task.generate(builders.split_rng(seed, "train"), n)


def _is_product(task, example, answer):
  return answer is not None and "*" in answer and task.verify(
      example, answer).correct


# --- solution_families --------------------------------------------------------


@pytest.mark.parametrize("num_factors,min_target,max_target", [
    (2, 20, 299), (3, 30, 999), (4, 210, 1000)])
def test_families_split_sums_from_products(num_factors, min_target,
                                           max_target):
  task = tasks.get_task("rare", num_factors=num_factors,
                        min_target=min_target, max_target=max_target,
                        rare_weight=0.1)
  for ex in task.generate(0, 10):
    t = ex["target"]
    families = task.solution_families(ex)
    assert [(name, round(w, 12)) for name, w, _ in families] == [
        ("common", 0.9), ("rare", 0.1)]
    common, rare = families[0][2], families[1][2]
    products = {(d, t // d) for d in range(2, t) if t % d == 0
                and d <= t // d}
    assert sorted(rare) == sorted(f"{a}*{b}" for a, b in products)
    assert len(rare) == 2 ** (num_factors - 1) - 1
    assert common == [f"{a}+{t - a}" for a in range(2, t // 2 + 1)]
    # A limit caps each family on its own: the products stay.
    capped = task.solution_families(ex, limit=2)
    assert [(n, round(w, 12), m) for n, w, m in capped] == [
        ("common", 0.9, common[:2]), ("rare", 0.1, rare[:2])]
    assert all(_is_product(task, ex, a) for a in rare)
    assert not any(_is_product(task, ex, a) for a in common)


def test_rare_weight_zero_leaves_products_out_and_bad_weights_fail():
  task = tasks.get_task("rare", rare_weight=0.0)
  ex = {"target": 35, "factors": [5, 7], "solution": "17+18"}
  assert [(n, w) for n, w, _ in task.solution_families(ex)] == [
      ("common", 1.0)]
  only = tasks.get_task("rare", rare_weight=1.0).solution_families(ex)
  assert [(n, w, m) for n, w, m in only] == [("rare", 1.0, ["5*7"])]
  for bad in (-0.1, 1.5, True, "0.1"):
    with pytest.raises(ValueError, match="rare_weight"):
      tasks.get_task("rare", rare_weight=bad)


def test_default_rare_weight_is_documented():
  task = tasks.get_task("rare")
  assert task.rare_weight == 0.05
  assert "``rare_weight`` (default 0.05)" in tasks.rare.__doc__


# --- sft_mixture: the exact mixture -------------------------------------------


def _product_shares(task, examples, mixture):
  """Example index -> (product mass, correct mass), from the answers."""
  out = defaultdict(lambda: [0.0, 0.0])
  for i, answer, p in zip(mixture.example, mixture.answer, mixture.prob):
    ex = examples[i]
    if answer is not None and task.verify(ex, answer).correct:
      out[int(i)][1] += p
      out[int(i)][0] += p if _is_product(task, ex, answer) else 0.0
  return out


@pytest.mark.parametrize("max_solutions", [1, 16, 1000])
@pytest.mark.parametrize("rare_weight", [0.01, 0.05, 0.3])
def test_every_prompt_has_the_rare_family_at_rare_weight(max_solutions,
                                                          rare_weight):
  task = tasks.get_task("rare", rare_weight=rare_weight)
  examples = _train(task, 256)
  mixture = pretrain.sft_mixture(
      task, examples, np.random.default_rng(0), skew=1.5,
      wrong_share=WRONG_SHARE, max_solutions=max_solutions)
  np.testing.assert_allclose(mixture.prob.sum(), 1.0, rtol=1e-12)
  shares = _product_shares(task, examples, mixture)
  assert sorted(shares) == list(range(len(examples)))
  for i, (rare, correct) in shares.items():
    assert rare > 0, examples[i]
    np.testing.assert_allclose(rare / correct, rare_weight, rtol=1e-9)
    np.testing.assert_allclose(correct, (1 - WRONG_SHARE) / len(examples),
                               rtol=1e-9)
  # The family labels agree with the answers.
  for i, answer, family in zip(mixture.example, mixture.answer,
                               mixture.family):
    assert (family == "rare") == _is_product(task, examples[i], answer)
    assert (family == "wrong") == (answer is None)


def test_the_truncated_old_mixture_missed_most_products():
  """What the fix is for: the first 16 solutions of a target >= 36 are all
  sums, so a mixture of ``solutions(limit=16)`` has no product for it."""
  task = tasks.get_task("rare")
  examples = _train(task, 256)
  missing = [ex for ex in examples
             if not any("*" in s for s in task.solutions(ex, limit=16))]
  assert len(missing) > 200
  mixture = pretrain.sft_mixture(task, missing, np.random.default_rng(0),
                                 skew=1.5, wrong_share=WRONG_SHARE,
                                 max_solutions=16)
  assert all(rare > 0 for rare, _ in _product_shares(
      task, missing, mixture).values())


# --- sft_targets: the drawn pretraining pairs ---------------------------------


def _draw(task, examples, num_targets, seed=0):
  return pretrain.sft_targets(task, examples, np.random.default_rng(seed),
                              num_targets=num_targets, skew=1.5,
                              wrong_share=WRONG_SHARE, max_solutions=16)


@pytest.mark.parametrize("num_examples,num_targets,everywhere", [
    # The default config: the few targets drawn once among the 256 train
    # examples expect 0.64 product pairs, so about a third of them get none.
    # (everywhere: every prompt expects at least one.)
    (256, 4096, False),
    (2000, 4096, True),     # the rare experiments' sizes
    (256, 16384, True)])
def test_drawn_pairs_realise_the_rare_share_per_prompt(
    num_examples, num_targets, everywhere):
  task = tasks.get_task("rare")
  examples = _train(task, num_examples)
  pairs = _draw(task, examples, num_targets)
  assert len(pairs) == num_targets
  mass = Counter(examples[i]["target"] for i in range(len(examples)))
  products, correct = Counter(), Counter()
  for i, answer in pairs:
    t = examples[i]["target"]
    if task.verify(examples[i], answer).correct:
      correct[t] += 1
      products[t] += _is_product(task, examples[i], answer)
  # Stratified draws: a prompt expecting e product pairs gets floor(e) or
  # ceil(e) of them, so at least one as soon as e >= 1.
  for t, count in mass.items():
    e = num_targets * (1 - WRONG_SHARE) * 0.05 * count / num_examples
    assert np.floor(e - 1e-9) <= products[t] <= np.ceil(e + 1e-9), (
        t, products[t], e)
  expected_min = num_targets * (1 - WRONG_SHARE) * 0.05 * min(
      mass.values()) / num_examples
  assert (expected_min >= 1) == everywhere
  if everywhere:
    assert all(products[t] > 0 for t in mass)
  # The share of products among the correct pairs is rare_weight.
  share = sum(products.values()) / sum(correct.values())
  assert abs(share - 0.05) < 0.01, share
  assert abs(sum(correct.values()) / num_targets - (1 - WRONG_SHARE)) < 0.01


def test_drawn_pairs_are_seeded():
  task = tasks.get_task("rare")
  examples = _train(task, 64)
  assert _draw(task, examples, 500, seed=1) == _draw(task, examples, 500,
                                                     seed=1)
  assert _draw(task, examples, 500, seed=1) != _draw(task, examples, 500,
                                                     seed=2)
