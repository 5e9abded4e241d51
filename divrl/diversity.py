"""Diversity rewards: reward transforms that favour rare correct solutions.

``unlikeliness_reward`` -- He et al. 2025, "Rewarding the Unlikely: Lifting
GRPO Beyond Distribution Sharpening" (arXiv:2506.02355). GRPO has a rank
bias: the most likely correct samples are reinforced most, so the policy
sharpens and pass@N at large N falls below the base model's. The fix
multiplies each reward by a penalty that grows with the sample's likelihood
rank inside its group:

    rank_i = #{j in group(i) : s_j < s_i}      (least likely: rank 0)
    rho_i  = rank_i / G_i                      in [0, 1)
    r'_i   = r_i * (1 - beta * rho_i)

where ``s_i`` is the mean per-token log-probability of sample ``i`` under the
behaviour policy (``old_logprobs``, else the stop-gradient current
logprobs) and ``G_i`` the size of its group. Ties are
broken by batch index, so ranks are a permutation of ``0..G_i-1``. The
released code ranks by mean per-token old log-probability and uses
``beta = 0.25`` with GRPO normalisation afterwards (see
``../shared/reference/papers_001.md`` #42); that is our default.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import register
from divrl.types import Batch
from divrl.types import behaviour_logprobs
from divrl.types import scalar_rewards_of

Array = jax.Array


def mean_token_logprob(logprobs: Array, mask: Array) -> Array:
  """``[B]`` mean of ``logprobs`` over valid tokens (0 for empty rows)."""
  chex.assert_equal_shape([logprobs, mask])
  valid = mask > 0
  total = jnp.sum(jnp.where(valid, logprobs, 0.0), axis=1)
  count = jnp.sum(valid, axis=1)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def likelihood_ranks(scores: Array, group_ids: Array, num_groups: int, *,
                     axis_name=None) -> tuple[Array, Array]:
  """``(rank [B], group size [B])``: ascending rank of ``scores`` per group.

  Inside ``shard_map`` pass ``axis_name``: scores and ids are all-gathered
  over that axis (ranks need every member of a group) and ties are broken by
  global batch index.
  """
  chex.assert_rank([scores, group_ids], 1)
  chex.assert_equal_shape([scores, group_ids])
  b = scores.shape[0]
  idx = jnp.arange(b)
  all_scores, all_ids, all_idx = scores, group_ids, idx
  if axis_name is not None:
    idx = idx + jax.lax.axis_index(axis_name) * b
    all_scores = jax.lax.all_gather(scores, axis_name, tiled=True)
    all_ids = jax.lax.all_gather(group_ids, axis_name, tiled=True)
    all_idx = jax.lax.all_gather(idx, axis_name, tiled=True)
  same = group_ids[:, None] == all_ids[None, :]
  below = (all_scores[None, :] < scores[:, None]) | (
      (all_scores[None, :] == scores[:, None]) & (all_idx[None, :] < idx[:, None]))
  rank = jnp.sum(same & below, axis=1)
  size = groups.broadcast(
      groups.group_count(group_ids, num_groups, axis_name=axis_name),
      group_ids)
  return rank, size


def unlikeliness_values(rewards: Array, scores: Array, group_ids: Array,
                        num_groups: int, *, beta: float = 0.25,
                        axis_name=None) -> Array:
  """``r_i * (1 - beta * rank_i / G_i)`` (He et al. 2025); see the module."""
  chex.assert_rank(rewards, 1)
  rank, size = likelihood_ranks(scores, group_ids, num_groups,
                                axis_name=axis_name)
  rho = rank.astype(rewards.dtype) / jnp.maximum(size, 1).astype(rewards.dtype)
  return rewards * (1.0 - beta * rho)


@register("transform", "unlikeliness_reward")
def unlikeliness_reward(batch: Batch, *, beta: float = 0.25,
                        axis_name=None) -> Batch:
  """Scales rewards down by likelihood rank in the group (He et al. 2025).

  Rewarding the Unlikely, arXiv:2506.02355; see the module docstring.
  ``beta`` in ``[0, 1]``; the rank uses ``behaviour_logprobs(batch)``.
  """
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")
  r = scalar_rewards_of(batch, "unlikeliness_reward")
  lp = jax.lax.stop_gradient(behaviour_logprobs(batch))
  scores = mean_token_logprob(lp, batch.response_mask)
  new = unlikeliness_values(r, scores, batch.group_ids, batch.num_groups,
                            beta=beta, axis_name=axis_name)
  return batch.replace(rewards=new.astype(r.dtype))
