"""Group normalisations of rewards into advantages, beyond GRPO's z-score.

* ``bnpo``: Beta normalisation ("BNPO: Beta Normalization Policy
  Optimization" (2025); checked against the authors' released code,
  https://github.com/changyi7231/BNPO, ``compute_bnpo_outcome_advantage``).
* ``gaussian_rank``: the rank of a reward in its group mapped through the
  inverse normal CDF (G^2RPO of "OpenVLThinkerV2", arXiv:2604.08539).
* ``stratified``: z-scores within strata of a group, blended with the
  group's own ("Stratified GRPO: Handling Structural Heterogeneity in
  Reinforcement Learning of LLM Search Agents" (2025)).

Each is an array function of rewards ``[B]`` and group ids with a registered
``"advantage"`` part. Inside ``shard_map`` pass ``axis_name``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri
from jax.scipy.stats import beta as beta_dist

from divrl import groups
from divrl.advantages import group_advantage_part, grpo, scalar_rewards
from divrl.registry import (FINITE, above, at_least, between, defaults_from,
                            integer, register)
from divrl.sequences import per_token, sequence_lengths
from divrl.types import Batch

Array = jax.Array


def _check(rewards: Array, group_ids: Array) -> None:
  chex.assert_rank([rewards, group_ids], 1)
  chex.assert_type(rewards, float)
  chex.assert_type(group_ids, int)
  chex.assert_equal_shape([rewards, group_ids])


# --- BNPO -------------------------------------------------------------------


def bnpo_beta_params(group_means: Array, present: Array) -> tuple[Array,
                                                                   Array]:
  """BNPO's ``(alpha, beta)`` from the group means of the batch.

  Method of moments over the groups that are present: ``m``, ``v`` their
  mean and unbiased variance, ``a = (m (1 - m) / v - 1) m``, ``b = (m (1 -
  m) / v - 1) (1 - m)``, ``alpha = max(1 + a / 3, 1)``, ``beta = max(1 + b
  / 3, 1)``. With a single group the released code takes ``m = 0, v = 1``;
  when ``v = 0`` (every group has the same mean, where the code divides by
  zero) we take ``alpha = beta = 1``.
  """
  w = present.astype(jnp.float32)
  count = jnp.sum(w)
  m = jnp.sum(w * group_means) / jnp.maximum(count, 1.0)
  v = jnp.sum(w * (group_means - m) ** 2) / jnp.maximum(count - 1.0, 1.0)
  m = jnp.where(count > 1, m, 0.0)
  v = jnp.where(count > 1, v, 1.0)
  safe_v = jnp.where(v > 0, v, 1.0)
  a = (m * (1 - m) / safe_v - 1) * m
  b = (m * (1 - m) / safe_v - 1) * (1 - m)
  alpha = jnp.where(v > 0, jnp.maximum(1 + a / 3, 1.0), 1.0)
  beta = jnp.where(v > 0, jnp.maximum(1 + b / 3, 1.0), 1.0)
  return alpha, beta


def bnpo(rewards: Array, group_ids: Array, num_groups: int, *,
         low: float = 0.0, high: float = 1.0, max_weight: float = 1e6,
         alpha: float | None = None, beta: float | None = None,
         axis_name=None) -> Array:
  """BNPO advantages ``A_i = (r_i - p_g) / Beta_pdf(p_g; alpha, beta)``
  ("BNPO: Beta Normalization Policy Optimization" (2025), released code
  https://github.com/changyi7231/BNPO).

  Rewards are mapped to ``[0, 1]`` by ``(r - low) / (high - low)``; ``p_g``
  is the group mean of the mapped rewards; ``1 / pdf`` is clipped to ``[0,
  max_weight]``. A group of one gets 0 (the released code sets its ``p`` to
  0, which with ``alpha > 1`` gives it the weight ``max_weight``; we take
  its own reward as ``p``, in the fit too). ``alpha``
  and ``beta`` come from ``bnpo_beta_params`` unless given. ``Beta(1, 1)``
  is REINFORCE with the group-mean baseline (tested); ``Beta(3/2, 3/2)``
  divides by ``sqrt(p (1 - p))`` up to a constant, GRPO's std for 0/1
  rewards.
  """
  _check(rewards, group_ids)
  if not high > low:
    raise ValueError(f"bnpo needs high > low, got low={low}, high={high}.")
  r = (rewards.astype(jnp.float32) - low) / (high - low)
  total = groups.group_sum(r, group_ids, num_groups, axis_name)
  count = groups.group_count(group_ids, num_groups, axis_name)
  p = total / jnp.maximum(count, 1.0)
  if alpha is None or beta is None:
    a, b = bnpo_beta_params(p, count > 0)
  else:
    a, b = jnp.float32(alpha), jnp.float32(beta)
  pdf = beta_dist.pdf(p, a, b)
  weight = jnp.clip(1.0 / pdf, 0.0, max_weight)
  weight = jnp.where(jnp.isfinite(weight), weight, max_weight)
  p_i = groups.broadcast(p, group_ids)
  adv = groups.broadcast(weight, group_ids) * (r - p_i)
  return jnp.where(groups.broadcast(count, group_ids) > 1, adv, 0.0)


# --- Gaussian rank -------------------------------------------------------------


def gaussian_rank(rewards: Array, group_ids: Array, num_groups: int, *,
                  axis_name=None) -> Array:
  """``A_i = Phi^-1((midrank_i - 1/2) / n_g)``, ``midrank`` the 1-based
  average rank of ``r_i`` in its group (ties share it).

  G^2RPO of "OpenVLThinkerV2" (arXiv:2604.08539), "inspired by": we apply it
  per prompt group (the paper also groups by task). A group of one, or of
  equal rewards, gets 0; the advantages of a group without ties are the
  ``n`` evenly spaced normal quantiles, whatever the reward scale.
  """
  _check(rewards, group_ids)
  rank, n = groups.group_ranks(rewards, group_ids, num_groups,
                               ties="average", axis_name=axis_name)
  return ndtri((rank + 0.5) / jnp.maximum(n, 1.0))


# --- Stratified normalisation ---------------------------------------------------


def stratified(rewards: Array, group_ids: Array, num_groups: int,
               strata: Array, num_strata: int, *, blend: float = 0.5,
               eps: float = 1e-6, axis_name=None) -> Array:
  """Stratified advantage normalisation with a global blend::

    A = blend (r - mu_{g,s}) / (sigma_{g,s} + eps)
        + (1 - blend) (r - mu_g) / (sigma_g + eps)

  over the group ``g`` and the group-and-stratum cell ``(g, s)`` (unbiased
  std, GRPO's ``grpo`` for each; a cell of one gets 0 in its term).
  "Stratified GRPO: Handling Structural Heterogeneity in Reinforcement
  Learning of LLM Search Agents" (2025), "inspired by": the paper's strata are
  search-call counts of agent trajectories; here they are any int ids
  ``strata [B]`` in ``[0, num_strata)``.
  """
  _check(rewards, group_ids)
  chex.assert_equal_shape([rewards, strata])
  if not 0.0 <= blend <= 1.0:
    raise ValueError(f"blend must lie in [0, 1], got {blend}.")
  cell = group_ids * num_strata + strata.astype(group_ids.dtype)
  within = grpo(rewards, cell, num_groups * num_strata, eps=eps,
                axis_name=axis_name)
  overall = grpo(rewards, group_ids, num_groups, eps=eps,
                 axis_name=axis_name)
  return blend * within + (1.0 - blend) * overall


def length_strata(mask: Array, num_strata: int) -> Array:
  """``[B]`` strata from response lengths: ``floor(num_strata * |y| /
  (T + 1))``, equal-width bins of ``0..T`` valid tokens."""
  t = mask.shape[-1]
  n = sequence_lengths(mask)
  return jnp.minimum((num_strata * n) // (t + 1), num_strata - 1).astype(
      jnp.int32)


# --- Registered parts ------------------------------------------------------------


@register("advantage", "bnpo",
          domains={"low": FINITE, "high": FINITE, "max_weight": above(0),
                   "alpha": above(0), "beta": above(0)})
@defaults_from(bnpo, scalar_rewards)
def bnpo_part(batch: Batch, *, axis_name=None, low, high, max_weight, alpha,
              beta, reward_weights) -> Array:
  """BNPO advantages per token; see ``bnpo``. With reward components
  (``Batch.rewards [B,K]``, no ``reward_weights``) BNPO's advantage
  decomposition: the advantage of each component, averaged."""
  kw = dict(low=low, high=high, max_weight=max_weight, alpha=alpha,
            beta=beta, axis_name=axis_name)
  if batch.rewards.ndim == 2 and reward_weights is None:
    adv = jnp.mean(jnp.stack([
        bnpo(batch.rewards[:, k], batch.group_ids, batch.groups, **kw)
        for k in range(batch.rewards.shape[1])]), axis=0)
  else:
    adv = bnpo(scalar_rewards(batch.rewards, reward_weights),
               batch.group_ids, batch.groups, **kw)
  return per_token(adv, batch.response_mask)


@register("advantage", "gaussian_rank")
@defaults_from(scalar_rewards)
def gaussian_rank_part(batch: Batch, *, axis_name=None,
                       reward_weights) -> Array:
  """Gaussian-rank advantages per token; see ``gaussian_rank``."""
  return group_advantage_part(gaussian_rank, batch, reward_weights,
                              axis_name=axis_name)


@register("advantage", "stratified",
          domains={"num_strata": integer(1), "blend": between(0, 1),
                   "eps": at_least(0)})
@defaults_from(stratified, scalar_rewards)
def stratified_part(batch: Batch, *, axis_name=None, num_strata: int = 2,
                    blend, eps, reward_weights) -> Array:
  """Stratified normalisation per token, strata by response length
  (``length_strata``); see ``stratified``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  strata = length_strata(batch.response_mask, num_strata)
  adv = stratified(r, batch.group_ids, batch.groups, strata, num_strata,
                   blend=blend, eps=eps, axis_name=axis_name)
  return per_token(adv, batch.response_mask)
