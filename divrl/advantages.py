"""Group and batch advantage estimators.

Each estimator is a pure function of sequence rewards ``[B]`` and integer group
ids ``[B]`` (ragged groups, static ``num_groups``), returning sequence
advantages ``[B]``. The registered parts (``"grpo"``, ``"dr_grpo"``,
``"rloo"``) adapt them to a ``Batch`` and broadcast over response tokens.

Expected-gradient facts (checked exactly on a tabular policy in
``tests/test_expected_gradients.py``), for the on-policy surrogate
``-(1/G) sum_i A_i log pi(y_i)`` over a group of ``G`` i.i.d. samples:

* RLOO: ``E[grad] = -grad J`` where ``J = E_pi[r]`` (unbiased).
* Dr.GRPO (mean only): ``E[grad] = -(G-1)/G * grad J``.
* GRPO (mean/std): for binary rewards with success probability ``p``,
  ``E[grad] = -w_G(p) * grad J`` where ``w_G(p) = sum_c Bin(c; G-1, p)
  (a(1, c) - a(0, c))`` and ``a(x, c)`` is the advantage of a sample with
  reward ``x`` whose ``G-1`` siblings have ``c`` successes. It is a scaled
  gradient of ``J``, not an unbiased one.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import register
from divrl.types import Batch

Array = jax.Array

_EPS_PLACEMENTS = ("std", "var")
_SINGLETON = ("zero", "reward")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _check_inputs(rewards: Array, group_ids: Array) -> None:
  chex.assert_rank(rewards, 1)
  chex.assert_type(rewards, float)
  chex.assert_type(group_ids, int)
  chex.assert_equal_shape([rewards, group_ids])


def grpo(rewards: Array, group_ids: Array, num_groups: int, *,
         eps: float = 1e-6, ddof: int = 1, eps_placement: str = "std",
         singleton: str = "zero", scale_by_std: bool = True,
         axis_name=None) -> Array:
  """Group-relative advantage of GRPO.

  ``A_i = (r_i - mean_g) / (std_g + eps)``, or ``/ sqrt(var_g + eps)`` with
  ``eps_placement="var"``, where ``var_g = sum_j (r_j - mean_g)^2 / (n_g -
  ddof)``. A group whose scale is 0 (all-equal rewards with ``eps=0``) gets
  advantage 0 instead of 0/0. With ``scale_by_std=False`` this is Dr.GRPO's ``r_i - mean_g``.

  References:
    Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning
    in Open Language Models", arXiv:2402.03300 (GRPO).
    Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective",
    arXiv:2503.20783 (Dr.GRPO: drop the std).

  Conventions differ between libraries (``docs/conventions.md``): verl uses
  ``ddof=1, eps=1e-6, singleton="reward"``; TRL ``ddof=1, eps=1e-4,
  singleton="zero"``; tunix ``ddof=1, eps=1e-6``.

  Args:
    rewards: ``[B]`` float sequence rewards.
    group_ids: ``[B]`` int group ids in ``[0, num_groups)``.
    num_groups: static upper bound on the group ids.
    eps: stabiliser added to the std (or to the variance).
    ddof: delta degrees of freedom of the group variance (1 = unbiased).
    eps_placement: ``"std"`` for ``std + eps``, ``"var"`` for
      ``sqrt(var + eps)``.
    singleton: what a group of one sample gets: ``"zero"`` (no relative
      signal) or ``"reward"`` (verl: mean 0 and std 1, so ``A = r / (1 +
      eps)``).
    scale_by_std: divide by the group std (False gives Dr.GRPO).
    axis_name: mesh axis to ``psum`` group statistics over inside
      ``shard_map``.

  Returns:
    ``[B]`` advantages.
  """
  _check_inputs(rewards, group_ids)
  _check_choice("eps_placement", eps_placement, _EPS_PLACEMENTS)
  _check_choice("singleton", singleton, _SINGLETON)
  mean, var, n = groups.group_moments(rewards, group_ids, num_groups,
                                      ddof=ddof, axis_name=axis_name)
  single = n <= 1
  mean = jnp.where(single, 0.0, mean)
  if scale_by_std:
    var = jnp.where(single, 1.0, var)
    scale = (jnp.sqrt(var) + eps if eps_placement == "std"
             else jnp.sqrt(var + eps))
    # A zero-variance group with eps=0 has 0/0; its deviations are exactly 0.
    adv = jnp.where(scale > 0, (rewards - mean) / jnp.where(scale > 0, scale,
                                                            1.0), 0.0)
  else:
    adv = rewards - mean
  if singleton == "zero":
    adv = jnp.where(single, 0.0, adv)
  return adv


def rloo(rewards: Array, group_ids: Array, num_groups: int, *,
         singleton: str = "zero", axis_name=None) -> Array:
  """REINFORCE leave-one-out advantage.

  ``A_i = r_i - mean_{j != i} r_j = n/(n-1) (r_i - mean_g)``. The baseline
  does not depend on ``y_i``, so the policy gradient stays unbiased.

  References:
    Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization
    for Learning from Human Feedback in LLMs", arXiv:2402.14740.
    Kool et al., "Buy 4 REINFORCE Samples, Get a Baseline for Free!" (2019).

  Args:
    rewards: ``[B]`` float.
    group_ids: ``[B]`` int.
    num_groups: static upper bound on the group ids.
    singleton: a group of one gets ``"zero"`` (verl's vectorised version,
      tunix) or ``"reward"``, the raw reward (verl's loop version).
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B]`` advantages.
  """
  _check_inputs(rewards, group_ids)
  _check_choice("singleton", singleton, _SINGLETON)
  n = groups.broadcast(groups.group_count(group_ids, num_groups, axis_name),
                       group_ids)
  total = groups.broadcast(
      groups.group_sum(rewards, group_ids, num_groups, axis_name), group_ids)
  single = n <= 1
  others = (total - rewards) / jnp.where(single, 1.0, n - 1.0)
  adv = rewards - others
  return jnp.where(single, 0.0 if singleton == "zero" else rewards, adv)


# --- Batch adapters ---------------------------------------------------------


def scalar_rewards(rewards: Array, weights=None) -> Array:
  """Sequence rewards ``[B]`` from ``[B]`` or ``[B,K]`` (weighted sum).

  This is the "sum then normalise" multi-reward convention (TRL's default).
  """
  if rewards.ndim == 1:
    if weights is not None:
      raise ValueError("reward_weights given but rewards have no component"
                       " axis (shape [B]).")
    return rewards
  k = rewards.shape[-1]
  w = jnp.ones((k,), rewards.dtype) if weights is None else jnp.asarray(
      weights, rewards.dtype)
  if w.shape != (k,):
    raise ValueError(f"reward_weights must have {k} entries (one per reward"
                     f" component), got shape {tuple(w.shape)}.")
  return rewards @ w


def per_token(sequence_values: Array, mask: Array) -> Array:
  """Broadcasts ``[B]`` values over tokens and zeroes padding: ``[B,T]``."""
  return sequence_values[:, None] * mask


@register("advantage", "grpo")
def grpo_part(batch: Batch, *, axis_name=None, eps: float = 1e-6,
              ddof: int = 1, eps_placement: str = "std",
              singleton: str = "zero", scale_by_std: bool = True,
              reward_weights=None) -> Array:
  """GRPO advantages per token; see ``grpo``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = grpo(r, batch.group_ids, batch.groups, eps=eps, ddof=ddof,
             eps_placement=eps_placement, singleton=singleton,
             scale_by_std=scale_by_std, axis_name=axis_name)
  return per_token(adv, batch.mask)


@register("advantage", "dr_grpo")
def dr_grpo_part(batch: Batch, *, axis_name=None, singleton: str = "zero",
                 reward_weights=None) -> Array:
  """Dr.GRPO advantages per token: ``r_i - mean_g`` (arXiv:2503.20783)."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = grpo(r, batch.group_ids, batch.groups, singleton=singleton,
             scale_by_std=False, axis_name=axis_name)
  return per_token(adv, batch.mask)


@register("advantage", "rloo")
def rloo_part(batch: Batch, *, axis_name=None, singleton: str = "zero",
              reward_weights=None) -> Array:
  """RLOO advantages per token; see ``rloo``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = rloo(r, batch.group_ids, batch.groups, singleton=singleton,
             axis_name=axis_name)
  return per_token(adv, batch.mask)
