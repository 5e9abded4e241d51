"""Token masks and weights, and batch filters.

Two kinds of parts live here (see ``divrl.objective``):

* ``token_weight`` parts return ``[B,T]`` weights that multiply the
  surrogate's per-token loss only (not the denominators, not the
  regularizers): ``high_entropy``.
* ``transform`` parts change ``Batch.response_mask`` before anything else
  runs, so they also change every aggregation's denominator and every
  regularizer: ``mask_truncated``, ``filter_zero_variance_groups``. They do
  not change rewards, so masked rows still take part in group statistics.

Inside ``shard_map`` pass ``axis_name``: the entropy quantile is taken over
the tokens of all shards (``all_gather``) and group statistics are
``pmin``/``pmax``-ed, so a sharded batch gives the same masks as one device.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.advantages import scalar_rewards
from divrl.registry import at_least, between, defaults_from, register
from divrl.types import Batch

Array = jax.Array

def high_entropy_mask(entropy: Array, mask: Array, rho: float = 0.2, *,
                      axis_name=None) -> Array:
  """Keeps the top-``rho`` fraction of tokens by entropy: ``[B,T]`` in {0,1}.

  A valid token (``mask > 0``) is kept iff ``H >= quantile_{1-rho}(H)``, the
  quantile of ``masked_quantile`` taken over *all* valid tokens of the global
  batch (all shards, via ``all_gather`` over ``axis_name``). Ties with the
  threshold are kept; ``rho = 1`` keeps every valid token; ``rho = 0`` keeps
  the tokens with the maximal entropy. Padding gets 0.

  Because no value lies strictly between two adjacent order statistics,
  ``H >= v_lo + f (v_hi - v_lo)`` equals ``H >= v_lo`` if ``f = 0`` and
  ``H >= v_hi`` otherwise; the mask is computed with that exact order
  statistic (``v_ceil(p)``), so rounding of the interpolation cannot flip a
  token.

  Inspired by Wang et al., "Beyond the 80/20 Rule: High-Entropy Minority
  Tokens Drive Effective Reinforcement Learning for LLM Reasoning",
  arXiv:2506.01939 (``rho = 0.2`` in the paper); TRL
  ``top_entropy_quantile`` (which also thresholds with ``>=`` at
  ``torch.quantile(H, 1 - rho)``, linear interpolation).

  Args:
    entropy: ``[B,T]`` per-token entropies (treated as constants).
    mask: ``[B,T]`` response mask (``> 0`` marks valid tokens).
    rho: fraction of tokens to keep, in ``[0, 1]``.
    axis_name: mesh axis to gather over inside ``shard_map``.

  Returns:
    ``[B,T]`` float32 weights in {0, 1}.
  """
  chex.assert_rank([entropy, mask], 2)
  chex.assert_equal_shape([entropy, mask])
  rho = float(rho)
  if not 0.0 <= rho <= 1.0:
    raise ValueError(f"rho must lie in [0, 1], got {rho}.")
  valid = mask > 0
  h = jax.lax.stop_gradient(entropy).astype(jnp.float32)
  h = jnp.where(valid, h, 0.0)
  if rho == 1.0:
    return valid.astype(jnp.float32)
  s, n = groups.sorted_valid(groups.all_gather(h, axis_name),
                             groups.all_gather(valid, axis_name))
  lo, f = groups.quantile_index(1.0 - rho, n)
  threshold = s[lo + (f > 0).astype(jnp.int32)]
  return (valid & (h >= threshold)).astype(jnp.float32)


@register("token_weight", "high_entropy", reads=("entropy",),
          domains={"rho": between(0, 1)})
@defaults_from(high_entropy_mask)
def high_entropy_part(batch: Batch, advantages: Array, *, axis_name=None,
                      rho) -> Array:
  """Top-``rho`` entropy token mask (arXiv:2506.01939, TRL
  ``top_entropy_quantile``); see ``high_entropy_mask``. Needs
  ``Batch.entropy``. The default ``rho = 0.2`` is the paper's setting (TRL's
  default ``top_entropy_quantile = 1.0`` keeps every token, i.e. is off)."""
  del advantages
  return high_entropy_mask(batch.entropy, batch.response_mask, rho,
                           axis_name=axis_name)


# --- Transforms that change the response mask -------------------------------


def _zero_rows(mask: Array, drop: Array) -> Array:
  """``mask`` with the rows where ``drop [B]`` is True set to 0 (same dtype)."""
  return jnp.where(drop[:, None], jnp.zeros((), mask.dtype), mask)


@register("transform", "mask_truncated", reads=("truncated",))
def mask_truncated_part(batch: Batch) -> Batch:
  """Masks out responses that hit the length limit (overlong filtering).

  Rows with ``Batch.truncated`` get ``response_mask = 0``: they add nothing
  to the loss or to any denominator. Rewards are unchanged, so the rows still
  take part in group statistics (a group mean includes them), as in TRL's
  ``mask_truncated_completions``.

  Reference: Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning
  System at Scale", arXiv:2503.14476 (overlong filtering).
  """
  chex.assert_shape(batch.truncated, (batch.batch_size,))
  return batch.replace(response_mask=_zero_rows(batch.response_mask,
                                                batch.truncated))


def zero_variance_groups(rewards: Array, group_ids: Array, num_groups: int, *,
                         atol: float = 0.0, axis_name=None) -> Array:
  """``[B]`` bool: True where the sample's group has all-equal rewards.

  A group is degenerate when ``max - min <= atol`` over its rewards (a
  singleton group is degenerate). Group extrema are ``pmin``/``pmax``-ed over
  ``axis_name`` inside ``shard_map``.
  """
  chex.assert_rank([rewards, group_ids], 1)
  chex.assert_equal_shape([rewards, group_ids])
  lo = groups.group_min(rewards, group_ids, num_groups, axis_name)
  hi = groups.group_max(rewards, group_ids, num_groups, axis_name)
  spread = groups.broadcast(hi - lo, group_ids)
  return spread <= atol


@register("transform", "filter_zero_variance_groups",
          domains={"atol": at_least(0)})
@defaults_from(zero_variance_groups, scalar_rewards)
def filter_zero_variance_groups_part(batch: Batch, *, axis_name=None, atol,
                                     reward_weights) -> Batch:
  """DAPO dynamic sampling as weights: degenerate groups get mask 0.

  A group whose (scalar, see ``advantages.scalar_rewards``) rewards are all
  equal within ``atol`` carries no group-relative signal; its rows get
  ``response_mask = 0``, so they leave the loss *and* the denominators,
  as if the group had been filtered out of the batch. Singleton groups are
  degenerate and are masked too. DAPO instead resamples until the batch is
  full; this keeps shapes static.

  Reference: Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning
  System at Scale", arXiv:2503.14476 (dynamic sampling, Eq. 11 constraint
  ``0 < #correct < G``); verl ``algorithm.filter_groups``.
  """
  if atol < 0:
    raise ValueError(f"atol must be >= 0, got {atol}.")
  r = scalar_rewards(batch.rewards, reward_weights)
  drop = zero_variance_groups(r, batch.group_ids, batch.groups, atol=atol,
                              axis_name=axis_name)
  return batch.replace(response_mask=_zero_rows(batch.response_mask, drop))
