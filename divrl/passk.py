"""pass@k objectives: advantages whose policy gradient ascends pass@k (or
its continuous form max@k) instead of the mean reward.

For a group of ``n`` i.i.d. samples with rewards ``g`` and ``k <= n``, the
unbiased estimator of ``max@k = E[max of k samples]`` averages the maximum
over all ``C(n, k)`` subsets of size ``k``; for 0/1 rewards with ``c``
correct it is ``rho(n, c, k) = 1 - C(n - c, k) / C(n, k)`` (Chen et al.,
"Evaluating Large Language Models Trained on Code", arXiv:2107.03374).

* ``pkpo_advantages``: the exact gradient of that estimator as per-sample
  weights (Walder and Karkhanis, "Pass@K Policy Optimization: Solving Harder
  Reinforcement Learning Problems", arXiv:2505.15201), with leave-one-out
  baselines.
* ``passk_closed_form``: the analytic pass@k advantage for binary rewards of
  Chen et al., "Pass@k Training for Adaptively Balancing Exploration and
  Exploitation of Large Reasoning Models", arXiv:2508.10751.
* ``divrl.advantages.passk_best`` is the ``k = n`` case of
  ``pkpo_advantages(baseline="loo_minus_one")`` (tested).

Binomial coefficients are computed in log space (``gammaln``), so large
groups do not overflow.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from divrl import groups
from divrl.advantages import group_advantage_part, scalar_rewards
from divrl.registry import above, defaults_from, integer, register
from divrl.risk import sort_groups as risk_sort
from divrl.risk import unsort as risk_unsort
from divrl.types import Batch

Array = jax.Array

PKPO_BASELINES = ("none", "loo", "loo_minus_one")


def log_binom(a: Array, b: Array) -> Array:
  """``log C(a, b)`` elementwise, ``-inf`` where ``b < 0`` or ``b > a``."""
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  ok = (b >= 0) & (b <= a)
  sa, sb = jnp.where(ok, a, 1.0), jnp.where(ok, b, 0.0)
  out = gammaln(sa + 1) - gammaln(sb + 1) - gammaln(sa - sb + 1)
  return jnp.where(ok, out, -jnp.inf)


def binom_ratio(a, b, c, d) -> Array:
  """``C(a, b) / C(c, d)`` (0 where the numerator is 0)."""
  return jnp.exp(log_binom(a, b) - log_binom(c, d))


def passk_estimate(n: Array, c: Array, k: int) -> Array:
  """The unbiased pass@k estimate ``1 - C(n - c, k) / C(n, k)`` (arXiv:
  2107.03374), elementwise; NaN where ``n < k``."""
  n = jnp.asarray(n, jnp.float32)
  c = jnp.asarray(c, jnp.float32)
  return jnp.where(n >= k, 1.0 - binom_ratio(n - c, k, n, k), jnp.nan)


def _check(rewards: Array, group_ids: Array, k: int) -> None:
  chex.assert_rank([rewards, group_ids], 1)
  chex.assert_type(rewards, float)
  chex.assert_type(group_ids, int)
  chex.assert_equal_shape([rewards, group_ids])
  if not (isinstance(k, int) and k >= 1):
    raise ValueError(f"k must be an int >= 1, got {k!r}.")


def pkpo_advantages(rewards: Array, group_ids: Array, num_groups: int, *,
                    k: int = 4, baseline: str = "loo",
                    axis_name=None) -> Array:
  """PKPO's transformed rewards (arXiv:2505.15201), scaled by ``n / k``.

  Within each group, with the rewards sorted ``g_1 <= ... <= g_n`` (ties in
  batch order), the gradient of the subset-average estimator of max@k is
  ``sum_i s_i grad log pi(y_i)`` with::

    s_i = [C(i-1, k-1) g_i + sum_{j>i} C(j-2, k-2) g_j] / C(n, k)

  (each subset containing ``i`` credits ``i`` with its maximum). For 0/1
  rewards this is the paper's ``k/n`` for a correct sample and ``(k/n)
  rho(n-1, c, k-1)`` for a wrong one. Baselines, each independent of the
  sample's own reward, so the estimate stays unbiased:

  * ``"none"``: ``s_i``.
  * ``"loo"``: minus ``(k/n)`` times the max@k estimate of the other
    ``n - 1`` samples (needs ``n > k``; a group with ``n = k`` gets no
    baseline). At ``k = 1`` it is RLOO.
  * ``"loo_minus_one"``: each subset credits ``i`` with its marginal
    ``max(S) - max(S minus i)`` instead of ``max(S)``:
    ``[C(i-1, k-1) g_i - sum_{j<i} C(j-1, k-2) g_j] / C(n, k)`` (needs
    ``k >= 2``). At ``k = n`` only the best sample gets ``g_(n) - g_(n-1)``:
    ``passk_best`` without the std.

  The result is multiplied by ``n / k`` so that, under a per-sample mean,
  ``E[(1/n) sum_i A_i grad log pi(y_i)] = grad max@k / k`` (``A`` is the
  RLOO advantage at ``k = 1``). A group with fewer than ``k`` samples gets
  0. The two baselines are our reading of the paper's leave-one-out
  variance reduction ("inspired by"); the ``"none"`` weights are exact.

  Args:
    rewards: ``[B]`` float rewards.
    group_ids: ``[B]`` int group ids.
    num_groups: static number of groups.
    k: the ``k`` of pass@k (static).
    baseline: ``"none"``, ``"loo"`` or ``"loo_minus_one"``.
    axis_name: mesh axis inside ``shard_map`` (rows are all-gathered).

  Returns:
    ``[B]`` advantages.
  """
  _check(rewards, group_ids, k)
  if baseline not in PKPO_BASELINES:
    raise ValueError(f"baseline must be one of {PKPO_BASELINES}, got"
                     f" {baseline!r}.")
  if baseline == "loo_minus_one" and k < 2:
    raise ValueError("baseline 'loo_minus_one' needs k >= 2.")
  s = risk_sort(rewards, group_ids, num_groups, axis_name=axis_name)
  g, i, n = s.r, s.pos + 1.0, s.n
  start = jnp.concatenate([jnp.ones((1,), bool), s.group[1:] != s.group[:-1]])
  end = jnp.concatenate([s.group[1:] != s.group[:-1], jnp.ones((1,), bool)])

  def prefix(x):      # sum over j < i within the group
    return groups.segment_cumsum(x, start) - x

  def suffix(x):      # sum over j > i within the group
    return (groups.segment_cumsum(x[::-1], end[::-1]) - x[::-1])[::-1]

  lc = log_binom(n, k)
  own = jnp.exp(log_binom(i - 1, k - 1) - lc) * g
  if baseline == "loo_minus_one":
    adv = own - prefix(jnp.exp(log_binom(i - 1, k - 2) - lc) * g)
  else:
    adv = own + suffix(jnp.exp(log_binom(i - 2, k - 2) - lc) * g)
    if baseline == "loo":
      lc1 = log_binom(n - 1, k)
      b = (prefix(jnp.exp(log_binom(i - 1, k - 1) - lc1) * g)
           + suffix(jnp.exp(log_binom(i - 2, k - 1) - lc1) * g))
      adv = adv - jnp.where(n > k, (k / n) * b, 0.0)
  adv = jnp.where(s.ok & (n >= k), adv * n / k, 0.0)
  return risk_unsort(s, adv)


def passk_closed_form(rewards: Array, group_ids: Array, num_groups: int, *,
                      k: int = 4, eps: float = 1e-6,
                      axis_name=None) -> Array:
  """The analytic pass@k advantage for 0/1 rewards of "Pass@k Training"
  (Chen et al., arXiv:2508.10751; formula checked against the authors'
  README and released code).

  In a group of ``N`` with ``N_neg`` wrong samples (a sample is correct when
  its reward is > 0.5)::

    R = 1 - C(N_neg, k) / C(N, k),        sigma = sqrt(R (1 - R)) + eps
    A_pos = (1 - R) / sigma
    A_neg = (1 - R - C(N_neg - 1, k - 1) / C(N - 1, k - 1)) / sigma

  ``R`` is the group's pass@k estimate; a group of all-correct or
  all-wrong samples gets 0, and so does a group with fewer than ``k``
  samples.
  """
  _check(rewards, group_ids, k)
  correct = (rewards > 0.5).astype(jnp.float32)
  n = groups.broadcast(groups.group_count(group_ids, num_groups, axis_name),
                       group_ids)
  pos = groups.broadcast(groups.group_sum(correct, group_ids, num_groups,
                                          axis_name), group_ids)
  neg = n - pos
  r = 1.0 - binom_ratio(neg, k, n, k)
  sigma = jnp.sqrt(jnp.maximum(r * (1.0 - r), 0.0)) + eps
  a_pos = (1.0 - r) / sigma
  a_neg = (1.0 - r - binom_ratio(neg - 1, k - 1, n - 1, k - 1)) / sigma
  adv = jnp.where(correct > 0, a_pos, a_neg)
  return jnp.where(n >= k, adv, 0.0)


@register("advantage", "pkpo",
          domains={"k": integer(1)}, group_size="k")
@defaults_from(pkpo_advantages, scalar_rewards)
def pkpo_part(batch: Batch, *, axis_name=None, k, baseline,
              reward_weights) -> Array:
  """PKPO's pass@k / max@k advantages; see ``pkpo_advantages``."""
  return group_advantage_part(pkpo_advantages, batch, reward_weights, k=k,
                              baseline=baseline, axis_name=axis_name)


@register("advantage", "passk_closed_form",
          domains={"k": integer(1), "eps": above(0)}, group_size="k")
@defaults_from(passk_closed_form, scalar_rewards)
def passk_closed_form_part(batch: Batch, *, axis_name=None, k, eps,
                           reward_weights) -> Array:
  """The analytic pass@k advantage of "Pass@k Training";
  see ``passk_closed_form``."""
  return group_advantage_part(passk_closed_form, batch, reward_weights, k=k,
                              eps=eps, axis_name=axis_name)
