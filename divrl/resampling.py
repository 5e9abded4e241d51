"""Score-based resampling of a batch (PF-PPO).

Inspired by Shen et al., "Policy Filtration in RLHF to Fine-Tune LLM for Code
Generation" (PF-PPO), arXiv:2409.06957, as exposed by verl's
``algorithm.use_pf_ppo``. We resample ``B`` rows with replacement, with
probability proportional to a weight of the sequence reward, over the whole
batch the transform sees (apply it before sharding; under ``shard_map`` it
resamples within each shard). Resampling duplicates rows, so it is meant for
estimators without group structure (verl uses it with GAE only).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl.registry import at_least, defaults_from, register
from divrl.types import Batch, scalar_rewards_of

Array = jax.Array

MODES = ("pow", "max_min", "max_random")


def pf_ppo_weights(rewards: Array, *, mode: str = "pow",
                   power: float = 2.0) -> Array:
  """Unnormalised resampling weights ``[B]`` from sequence rewards ``[B]``.

  ``pow``: ``|r|^power``; ``max_min``: 1 for samples with the batch's max or
  min reward, else 0; ``max_random``: 0.4 for max-reward samples, else 0.1.
  """
  chex.assert_rank(rewards, 1)
  if mode == "pow":
    return jnp.abs(rewards) ** power
  is_max = rewards == jnp.max(rewards)
  if mode == "max_min":
    return (is_max | (rewards == jnp.min(rewards))).astype(rewards.dtype)
  if mode == "max_random":
    return jnp.where(is_max, 0.4, 0.1).astype(rewards.dtype)
  raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")


def pf_ppo_indices(key: Array, rewards: Array, *, mode: str = "pow",
                   power: float = 2.0) -> Array:
  """``B`` row indices drawn with replacement, ``P(i) ∝ weight_i``.

  If every weight is 0 (e.g. all rewards 0 under ``pow``) the draw is uniform.
  """
  w = pf_ppo_weights(rewards, mode=mode, power=power)
  total = jnp.sum(w)
  p = jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0),
                1.0 / w.shape[0])
  return jax.random.choice(key, w.shape[0], (w.shape[0],), replace=True, p=p)


@register("transform", "pf_ppo",
          domains={"power": at_least(0)})
@defaults_from(pf_ppo_indices)
def pf_ppo_part(batch: Batch, *, key: Array, mode, power) -> Batch:
  """Resamples the rows of ``batch``; see ``pf_ppo_indices``."""
  idx = pf_ppo_indices(key, scalar_rewards_of(batch, "pf_ppo"), mode=mode, power=power)
  return jax.tree.map(lambda x: x[idx], batch)
