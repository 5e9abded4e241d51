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
broken by batch index, so ranks are a permutation of ``0..G_i-1``. Rows with
an empty response (all-zero mask) are excluded from the ranking (our
choice: their mean log-prob of 0 would otherwise rank them as the most
likely samples). The authors' released code ranks by the mean per-token old
log-probability and uses ``beta = 0.25`` with GRPO normalisation afterwards;
that is our default.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import defaults_from, register
from divrl.sequences import sequence_mean
from divrl.types import Batch
from divrl.types import behaviour_logprobs
from divrl.types import scalar_rewards_of

Array = jax.Array


def unlikeliness_values(rewards: Array, scores: Array, group_ids: Array,
                        num_groups: int, *, beta: float = 0.25,
                        valid: Array | None = None, axis_name=None) -> Array:
  """``r_i * (1 - beta * rank_i / G_i)`` (He et al. 2025); see the module.

  ``rank_i`` is the ordinal rank of ``scores`` in the group (ties broken by
  global batch index, ``groups.group_ranks``) among the ``valid`` rows, and
  ``G_i`` the number of valid rows in the group. A row that is not valid
  (an empty response) takes no part in any rank and keeps its reward.
  """
  chex.assert_rank(rewards, 1)
  rank, size = groups.group_ranks(scores, group_ids, num_groups,
                                  ties="ordinal", valid=valid,
                                  axis_name=axis_name)
  rho = rank.astype(rewards.dtype) / jnp.maximum(size, 1).astype(rewards.dtype)
  return rewards * (1.0 - beta * rho)


@register("transform", "unlikeliness_reward")
@defaults_from(unlikeliness_values)
def unlikeliness_reward_part(batch: Batch, *, beta, axis_name=None) -> Batch:
  """Scales rewards down by likelihood rank in the group (He et al. 2025).

  Rewarding the Unlikely, arXiv:2506.02355; see the module docstring.
  ``beta`` in ``[0, 1]``; the rank uses ``behaviour_logprobs(batch)``. Rows
  whose response mask is all zero are left out of the ranking.
  """
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")
  r = scalar_rewards_of(batch, "unlikeliness_reward")
  lp = jax.lax.stop_gradient(behaviour_logprobs(batch))
  mask = batch.response_mask
  scores = sequence_mean(lp, mask)[:, 0]
  new = unlikeliness_values(r, scores, batch.group_ids, batch.groups,
                            beta=beta, valid=jnp.any(mask > 0, axis=1),
                            axis_name=axis_name)
  return batch.replace(rewards=new.astype(r.dtype))
