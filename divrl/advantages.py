"""Group, batch and token-level advantage estimators.

Each estimator is a pure array function with chex shape checks; the registered
``"advantage"`` parts adapt them to a ``Batch`` and return ``[B,T]``
advantages that are zero on padding.

* Sequence-level, from rewards ``[B]`` and integer group ids ``[B]`` (ragged
  groups, static ``num_groups``): ``grpo`` (also Dr.GRPO and the batch-std
  variant), ``rloo``, ``opo``, ``gpg``, ``passk_best``; with a token-level
  batch normalisation: ``reinforce_pp_baseline``, ``gdpo``.
* Token-level, from token rewards ``[B,T]`` (``Batch.token_rewards``, else the
  scalar reward on the last valid token): ``reinforce_pp``, ``remax``,
  ``otb``, ``gae``.

All group and batch statistics take ``axis_name``: inside ``shard_map`` they
are ``psum``-ed over that axis, so a batch split over devices, with groups
spanning devices, gives the single-device result (group ids must be global).
Positions where the mask is 0 (padding, or observation tokens in the middle
of a multi-turn response) never change a result: their values are replaced
by 0 before any arithmetic.

Expected-gradient facts (checked exactly on a tabular policy in
``tests/test_advantages.py``), for the on-policy surrogate
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
import numpy as np

from divrl import groups
from divrl.registry import (FINITE, State, above, at_least, between,
                            defaults_from, integer, register)
from divrl.sequences import (on_last_token, per_token, sequence_lengths,
                             valid_rows)
from divrl.types import Batch, behaviour_logprobs

Array = jax.Array

_EPS_PLACEMENTS = ("std", "var")
_SINGLETON = ("zero", "reward")
_STD_SCOPES = ("group", "batch")
_BATCH_NORMS = ("tokens", "samples", "none")
_SIGN_MODES = ("weighted", "psr", "nsr")
WHITEN_EPS = 1e-8


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
         std_scope: str = "group", axis_name=None) -> Array:
  """Group-relative advantage of GRPO.

  ``A_i = (r_i - mean_g) / (std_g + eps)``, or ``/ sqrt(var_g + eps)`` with
  ``eps_placement="var"``, where ``var_g = sum_j (r_j - mean_g)^2 / (n_g -
  ddof)``. A group whose scale is 0 (all-equal rewards with ``eps=0``) gets
  advantage 0 instead of 0/0. With ``scale_by_std=False`` this is Dr.GRPO's
  ``r_i - mean_g``. With ``std_scope="batch"`` the scale is the std of all
  sequence rewards of the whole (global) batch, ``var = sum_j (r_j -
  mean_batch)^2 / (B - ddof)``, while the mean stays the group mean (TRL
  ``scale_rewards="batch"``; the "group mean, batch std" of Lite PPO).

  References:
    Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning
    in Open Language Models", arXiv:2402.03300 (GRPO).
    Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective",
    arXiv:2503.20783 (Dr.GRPO: drop the std).
    Liu et al., "Part I: Tricks or Traps? A Deep Dive into RL for LLM
    Reasoning", arXiv:2508.08221 (Lite PPO: group mean, batch std).

  Conventions differ between libraries (``docs/conventions.md``): verl uses
  ``ddof=1, eps=1e-6, singleton="reward"``; TRL ``ddof=1, eps=1e-4,
  singleton="zero"`` (``std_scope="batch"`` for ``scale_rewards="batch"``);
  tunix ``ddof=1, eps=1e-6``.

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
      eps)``; with ``std_scope="batch"``: mean 0 and the batch std).
    scale_by_std: divide by the std (False gives Dr.GRPO).
    std_scope: ``"group"`` (default) or ``"batch"``: which rewards the std
      is taken over. The batch std counts every row, including rows whose
      response mask is empty.
    axis_name: mesh axis to ``psum`` group statistics over inside
      ``shard_map``.

  Returns:
    ``[B]`` advantages.
  """
  _check_inputs(rewards, group_ids)
  _check_choice("eps_placement", eps_placement, _EPS_PLACEMENTS)
  _check_choice("singleton", singleton, _SINGLETON)
  _check_choice("std_scope", std_scope, _STD_SCOPES)
  mean, var, n = groups.group_moments(rewards, group_ids, num_groups,
                                      ddof=ddof, axis_name=axis_name)
  single = n <= 1
  mean = jnp.where(single, 0.0, mean)
  if scale_by_std:
    if std_scope == "group":
      var = jnp.where(single, 1.0, var)
    else:
      _, batch_var = groups.batch_moments(rewards, ddof=ddof,
                                          axis_name=axis_name)
      var = jnp.broadcast_to(batch_var, rewards.shape)
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


# --- Shared token-level helpers ---------------------------------------------


def _check_tokens(*arrays: Array) -> None:
  chex.assert_rank(list(arrays), 2)
  chex.assert_equal_shape(list(arrays))


def _float_dtype(*arrays: Array):
  return jnp.result_type(*[a.dtype for a in arrays], jnp.float32)


def _check_unit_interval(name: str, value) -> None:
  if isinstance(value, (int, float)) and not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")


def masked_whiten(x: Array, mask: Array, *, eps: float = WHITEN_EPS,
                  axis_name=None) -> Array:
  """Token-level z-score over every valid token of the (global) batch.

  ``(x - mean) / sqrt(var + eps)`` on valid tokens (``mask > 0``), 0
  elsewhere, where ``mean = sum x m / sum m`` and ``var = sum m (x - mean)^2
  / (sum m - 1)`` (unbiased) over the whole batch (``psum`` over
  ``axis_name``). The mean is not added back (verl's ``masked_whiten`` with
  ``shift_mean=True``). With fewer than two valid tokens the variance is 0.

  Args:
    x: ``[B,T]`` values; anything at ``mask == 0`` is ignored.
    mask: ``[B,T]`` mask (its values weight the statistics).
    eps: added to the variance inside the square root.
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B,T]`` whitened values, multiplied by the mask.
  """
  _check_tokens(x, mask)
  valid = mask > 0
  m = mask.astype(_float_dtype(x))
  x = jnp.where(valid, x.astype(m.dtype), 0.0)
  mean, var = groups.batch_moments(x, weights=m, ddof=1, axis_name=axis_name)
  return jnp.where(valid, (x - mean) * jax.lax.rsqrt(var + eps), 0.0) * m


def discounted_returns(token_rewards: Array, mask: Array, *,
                       gamma: float = 1.0) -> Array:
  """Discounted reward-to-go over valid tokens, ``[B,T]``.

  A reverse ``lax.scan``: on a valid token ``G_t = R_t + gamma G_next`` and
  ``G_next <- G_t``; a mask-0 token (padding, or an observation token inside
  a multi-turn response) carries ``G_next`` unchanged and gets ``G_t = 0``.
  Rewards on mask-0 tokens are ignored.
  """
  _check_tokens(token_rewards, mask)
  _check_unit_interval("gamma", gamma)
  dtype = _float_dtype(token_rewards)
  valid = mask > 0
  r = jnp.where(valid, token_rewards.astype(dtype), 0.0)

  def step(g_next, xs):
    r_t, v_t = xs
    g = r_t + gamma * g_next
    return jnp.where(v_t, g, g_next), jnp.where(v_t, g, 0.0)

  # zeros_like keeps the varying-over-devices type inside shard_map, so the
  # carry types of the scan match.
  _, out = jax.lax.scan(step, jnp.zeros_like(r[:, 0]), (r.T, valid.T),
                        reverse=True)
  return out.T


def _reverse_cumsum(x: Array) -> Array:
  return jnp.flip(jnp.cumsum(jnp.flip(x, axis=1), axis=1), axis=1)


# --- Token-level estimators -------------------------------------------------


def reinforce_pp(token_rewards: Array, mask: Array, *, gamma: float = 1.0,
                 whiten: bool = True, axis_name=None) -> Array:
  """REINFORCE++: whitened discounted reward-to-go, no critic and no groups.

  ``G_t = R_t + gamma G_{t+1}`` over valid tokens (``discounted_returns``:
  mask-0 tokens carry ``G`` unchanged and get 0), then ``A = (G - mean) /
  sqrt(var + 1e-8)`` with the token-level mean and unbiased variance over
  every valid token of the global batch (``masked_whiten``; no mean
  re-added). ``whiten=False`` returns ``G`` on valid tokens.

  This reproduces verl's ``reinforce_plus_plus`` estimator, including its
  fix for observation tokens (``G`` carried through them). KL-in-the-reward,
  which the paper folds into ``R_t``, is a separate transform
  (``"kl_in_reward"``).

  References:
    Hu et al., "REINFORCE++: A Simple and Efficient Approach for Aligning
    Large Language Models", arXiv:2501.03262.

  Args:
    token_rewards: ``[B,T]`` per-token rewards ``R_t``.
    mask: ``[B,T]`` response mask.
    gamma: discount in ``[0, 1]`` (verl ``algorithm.gamma``, default 1).
    whiten: apply the batch token-level whitening.
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B,T]`` advantages, 0 where ``mask == 0``.
  """
  g = discounted_returns(token_rewards, mask, gamma=gamma)
  if whiten:
    return masked_whiten(g, mask, axis_name=axis_name)
  return g * mask.astype(g.dtype)


def reinforce_pp_baseline(rewards: Array, group_ids: Array, num_groups: int,
                          mask: Array, *, singleton: str = "zero",
                          whiten: bool = True, axis_name=None) -> Array:
  """REINFORCE++ with a group-mean baseline, whitened over the batch tokens.

  ``s_i = r_i - mean_g`` (a singleton group gets 0 with ``singleton="zero"``,
  the library default; verl uses mean 0, so ``s_i = r_i``:
  ``singleton="reward"``), broadcast over the valid tokens of
  sequence ``i``, then ``masked_whiten`` over every valid token of the global
  batch (so sequences weigh by their length). This reproduces verl's
  ``reinforce_plus_plus_baseline``.

  References:
    Hu et al., "REINFORCE++: A Simple and Efficient Approach for Aligning
    Large Language Models", arXiv:2501.03262.

  Args:
    rewards: ``[B]`` float sequence rewards.
    group_ids: ``[B]`` int group ids.
    num_groups: static upper bound on the group ids.
    mask: ``[B,T]`` response mask.
    singleton: ``"zero"`` (default) or ``"reward"`` (verl: mean 0).
    whiten: apply the batch token-level whitening.
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B,T]`` advantages, 0 where ``mask == 0``.
  """
  chex.assert_rank(mask, 2)
  chex.assert_equal_shape_prefix([rewards, mask], 1)
  s = grpo(rewards, group_ids, num_groups, singleton=singleton,
           scale_by_std=False, axis_name=axis_name)
  x = per_token(s, mask)
  if whiten:
    return masked_whiten(x, mask, axis_name=axis_name)
  return x


def remax(token_rewards: Array, mask: Array,
          baseline_rewards: Array) -> Array:
  """ReMax: reward-to-go minus the reward of a greedy baseline response.

  ``A_{i,t} = (sum_{s >= t} R_{i,s} m_{i,s} - b_i) m_{i,t}``, where ``b_i`` is
  the reward of the greedy decode for the same prompt (computed by the
  trainer). For an outcome reward on the last token this is ``r_i - b_i`` on
  every token. No normalisation (verl's ``remax``).

  References:
    Li et al., "ReMax: A Simple, Effective, and Efficient Reinforcement
    Learning Method for Aligning Large Language Models", arXiv:2310.10505.

  Args:
    token_rewards: ``[B,T]`` per-token rewards.
    mask: ``[B,T]`` response mask.
    baseline_rewards: ``[B]`` baseline (greedy) rewards.

  Returns:
    ``[B,T]`` advantages, 0 where ``mask == 0``.
  """
  _check_tokens(token_rewards, mask)
  chex.assert_rank(baseline_rewards, 1)
  chex.assert_equal_shape_prefix([baseline_rewards, mask], 1)
  dtype = _float_dtype(token_rewards, baseline_rewards)
  valid = mask > 0
  m = mask.astype(dtype)
  returns = _reverse_cumsum(jnp.where(valid, token_rewards.astype(dtype),
                                      0.0) * m)
  return jnp.where(valid, returns - baseline_rewards.astype(dtype)[:, None],
                   0.0) * m


def otb(token_rewards: Array, mask: Array, old_logprobs: Array,
        sum_pi_squared: Array, group_ids: Array, num_groups: int, *,
        handle_zero_tail: bool = True, eps: float = 1e-8,
        axis_name=None) -> Array:
  """Optimal token baseline: a per-position, variance-weighted group baseline.

  ``G_{i,t} = sum_{s >= t} R_{i,s} m_{i,s}`` (reward-to-go), ``w_{i,t} = 1 -
  2 pi_old(y_t) + sum_v pi_old(v)^2`` (the squared norm of the logit
  gradient of ``log pi(y_t)``) and ``W_{i,t} = sum_{s <= t} w_{i,s} m_{i,s}``.
  Per group and position: ``B_t = sum_i G_{i,t} W_{i,t} m_{i,t} / (sum_i
  W_{i,t} m_{i,t} + eps)`` and ``A_{i,t} = (G_{i,t} - B_t) m_{i,t}``. A
  singleton group gets ``B = 0``. With ``handle_zero_tail``, when one row is
  uniquely the longest of its group (length = number of valid tokens), its
  baseline is 0 at positions ``t >= L_2``, the second-longest length: there
  it has no sibling and ``B_t`` would cancel its return.

  Inspired by the optimal-token-baseline blog post (References); the
  formula and the zero-tail rule reproduce verl's ``optimal_token_baseline``
  (positions are padded positions, not compacted valid tokens: verl's
  ``tir_optimal_token_baseline`` is not implemented). We choose to clip
  ``pi_old = exp(min(old_logprobs, 0))`` so that invalid log-probs above 0
  cannot make ``w`` negative through ``pi_old > 1``, and to clamp ``w`` at
  its lower bound ``(1 - pi_old)^2`` (``sum_v pi^2 >= pi(y)^2``), which
  inconsistent or rounded inputs could violate (a negative ``W`` can cancel
  ``eps`` and give 0/0); verl's rollout-IS scaling of ``w`` is not
  implemented.

  References:
    The optimal-token-baseline blog post (inspired by):
    https://richardli.xyz/optimal-token-baseline

  Args:
    token_rewards: ``[B,T]`` per-token rewards.
    mask: ``[B,T]`` response mask.
    old_logprobs: ``[B,T]`` log-probs of the sampled tokens under
      ``pi_old`` (no gradient is taken).
    sum_pi_squared: ``[B,T]`` ``sum_v pi_old(v | prefix)^2``.
    group_ids: ``[B]`` int group ids.
    num_groups: static upper bound on the group ids.
    handle_zero_tail: zero the baseline of a uniquely longest row's tail.
    eps: added to the denominator of ``B_t`` (verl 1e-8).
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B,T]`` advantages, 0 where ``mask == 0``.
  """
  _check_tokens(token_rewards, mask, old_logprobs, sum_pi_squared)
  chex.assert_rank(group_ids, 1)
  chex.assert_type(group_ids, int)
  chex.assert_equal_shape_prefix([group_ids, mask], 1)
  dtype = _float_dtype(token_rewards, old_logprobs, sum_pi_squared)
  valid = mask > 0
  m = mask.astype(dtype)
  zero = jnp.zeros((), dtype)
  r = jnp.where(valid, token_rewards.astype(dtype), zero)
  old = jnp.where(valid, jax.lax.stop_gradient(old_logprobs).astype(dtype),
                  zero)
  sps = jnp.where(valid, jax.lax.stop_gradient(sum_pi_squared).astype(dtype),
                  zero)
  g = _reverse_cumsum(r * m)
  pi = jnp.exp(jnp.minimum(old, 0.0))
  # w >= (1 - pi)^2 >= 0 because sum_v pi_v^2 >= pi^2: clamp at that bound
  # (inconsistent or rounded inputs could make it negative, and a group's
  # sum of W could then cancel eps: 0/0).
  w = jnp.maximum(1.0 - 2.0 * pi + sps, (1.0 - pi) ** 2)
  w = jnp.where(valid, w, zero)
  big_w = jnp.cumsum(w * m, axis=1)
  num = groups.group_sum(g * big_w * m, group_ids, num_groups, axis_name)
  den = groups.group_sum(big_w * m, group_ids, num_groups, axis_name) + eps
  base = groups.broadcast(num / den, group_ids)
  n = groups.broadcast(groups.group_count(group_ids, num_groups, axis_name),
                       group_ids)
  base = jnp.where((n <= 1)[:, None], zero, base)
  if handle_zero_tail:
    length = sequence_lengths(mask, dtype)
    longest = groups.broadcast(
        groups.group_max(length, group_ids, num_groups, axis_name), group_ids)
    is_longest = length == longest
    n_longest = groups.broadcast(
        groups.group_sum(is_longest.astype(dtype), group_ids, num_groups,
                         axis_name), group_ids)
    second = groups.broadcast(
        groups.group_max(jnp.where(is_longest, -1.0, length), group_ids,
                         num_groups, axis_name), group_ids)
    tail = ((is_longest & (n_longest == 1) & (n > 1))[:, None]
            & (jnp.arange(mask.shape[1])[None, :] >= second[:, None]))
    base = jnp.where(tail, zero, base)
  return jnp.where(valid, g - base, zero) * m


def gae(token_rewards: Array, values: Array, mask: Array, *,
        gamma: float = 1.0, lam: float = 1.0) -> tuple[Array, Array]:
  """Generalized advantage estimation over the valid tokens of each row.

  A reverse ``lax.scan`` with carry ``(V_next, A_next)``, initially 0: on a
  valid token ``delta_t = R_t + gamma V_next - V_t``, ``A_t = delta_t +
  gamma lam A_next`` and the carry becomes ``(V_t, A_t)``; a mask-0 token
  (padding, or an observation token inside a multi-turn response) leaves the
  carry unchanged, so ``V_next`` is the value at the next *valid* token (0
  after the last one). ``returns = A + V`` (the critic's target).

  This reproduces verl's ``gae`` before its whitening (the ``"gae"`` part
  whitens ``A``; see ``masked_whiten``); rlax's
  ``truncated_generalized_advantage_estimation`` is the same recursion
  without the mask. We choose to return 0 for both outputs at mask-0 tokens
  (verl leaves the carried values there; they never enter a loss).

  References:
    Schulman et al., "High-Dimensional Continuous Control Using Generalized
    Advantage Estimation", arXiv:1506.02438.

  Args:
    token_rewards: ``[B,T]`` per-token rewards ``R_t``.
    values: ``[B,T]`` critic values ``V(s_t)`` (no gradient is taken).
    mask: ``[B,T]`` response mask.
    gamma: discount in ``[0, 1]`` (verl default 1).
    lam: GAE ``lambda`` in ``[0, 1]`` (verl default 1; tunix 0.95).

  Returns:
    ``(advantages [B,T], returns [B,T])``, both 0 where ``mask == 0``.
  """
  _check_tokens(token_rewards, values, mask)
  _check_unit_interval("gamma", gamma)
  _check_unit_interval("lam", lam)
  dtype = _float_dtype(token_rewards, values)
  valid = mask > 0
  zero = jnp.zeros((), dtype)
  r = jnp.where(valid, token_rewards.astype(dtype), zero)
  v = jnp.where(valid, jax.lax.stop_gradient(values).astype(dtype), zero)

  def step(carry, xs):
    v_next, a_next = carry
    r_t, v_t, ok = xs
    a = r_t + gamma * v_next - v_t + gamma * lam * a_next
    carry = (jnp.where(ok, v_t, v_next), jnp.where(ok, a, a_next))
    return carry, jnp.where(ok, a, zero)

  init = (jnp.zeros_like(r[:, 0]), jnp.zeros_like(r[:, 0]))  # see above
  _, adv = jax.lax.scan(step, init, (r.T, v.T, valid.T), reverse=True)
  adv = adv.T
  return adv, jnp.where(valid, adv + v, zero)


# --- More sequence-level estimators -------------------------------------------


def opo(rewards: Array, group_ids: Array, num_groups: int, lengths: Array, *,
        singleton: str = "zero", axis_name=None) -> Array:
  """OPO: the length-weighted group mean as baseline.

  ``A_i = r_i - b_g`` with ``b_g = sum_j |y_j| r_j / sum_j |y_j|`` over the
  group, ``|y_j|`` the number of valid tokens. Under a sequence-level loss
  summed over tokens this is the baseline that minimises the gradient
  variance when the per-token gradient norms are roughly equal. A group
  whose lengths sum to 0 gets ``b_g = 0``. No std.

  References:
    Hao et al., "On-Policy RL with Optimal Reward Baseline",
    arXiv:2505.23585.

  Conventions: a singleton group gets 0 by default (``singleton="zero"``);
  verl's ``opo`` uses baseline 0 there, ``A = r`` (``singleton="reward"``).

  Args:
    rewards: ``[B]`` float sequence rewards.
    group_ids: ``[B]`` int group ids.
    num_groups: static upper bound on the group ids.
    lengths: ``[B]`` response lengths ``|y_i|`` (float or int).
    singleton: ``"zero"`` or ``"reward"``.
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B]`` advantages.
  """
  _check_inputs(rewards, group_ids)
  chex.assert_equal_shape([rewards, lengths])
  _check_choice("singleton", singleton, _SINGLETON)
  lengths = lengths.astype(rewards.dtype)
  n = groups.broadcast(groups.group_count(group_ids, num_groups, axis_name),
                       group_ids)
  # Shift by the group minimum: equal rewards give exactly zero advantage.
  shift = groups.broadcast(
      groups.group_min(rewards, group_ids, num_groups, axis_name), group_ids)
  num = groups.broadcast(groups.group_sum(lengths * (rewards - shift),
                                          group_ids, num_groups, axis_name),
                         group_ids)
  den = groups.broadcast(groups.group_sum(lengths, group_ids, num_groups,
                                          axis_name), group_ids)
  base = jnp.where(den > 0, shift + num / jnp.where(den > 0, den, 1.0), 0.0)
  single = n <= 1
  return jnp.where(single, 0.0 if singleton == "zero" else rewards,
                   rewards - base)


def gpg(rewards: Array, group_ids: Array, num_groups: int, *,
        f_norm: float = 1.0, singleton: str = "zero", axis_name=None) -> Array:
  """GPG: the group-centred reward, rescaled by the share of non-zero rewards.

  ``A_i = alpha (r_i - mean_g) / f_norm`` with ``alpha = B / max(1, #{i : r_i
  != 0})`` counted over the whole global batch (``psum`` over
  ``axis_name``). ``alpha`` undoes the dilution of a batch-mean loss by
  samples that carry no gradient; ``f_norm`` is a constant normaliser.

  References:
    Chu et al., "GPG: A Simple and Strong Reinforcement Learning Baseline for
    Model Reasoning", arXiv:2504.02546.

  Inspired by the paper, whose ``alpha`` counts the samples with a non-zero
  advantage; we reproduce verl's ``gpg``, which counts non-zero *rewards*,
  with ``f_norm = 1``. A singleton group gets 0 by default; verl gives it
  mean 0, ``A = alpha r`` (``singleton="reward"``).

  Args:
    rewards: ``[B]`` float sequence rewards.
    group_ids: ``[B]`` int group ids.
    num_groups: static upper bound on the group ids.
    f_norm: positive constant divisor.
    singleton: ``"zero"`` or ``"reward"``.
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B]`` advantages.
  """
  _check_inputs(rewards, group_ids)
  if isinstance(f_norm, (int, float)) and not f_norm > 0:
    raise ValueError(f"f_norm must be > 0, got {f_norm!r}.")
  dev = grpo(rewards, group_ids, num_groups, singleton=singleton,
             scale_by_std=False, axis_name=axis_name)
  size = jnp.asarray(rewards.shape[0], rewards.dtype)
  nonzero = jnp.sum((rewards != 0).astype(rewards.dtype))
  if axis_name is not None:
    size, nonzero = jax.lax.psum((size, nonzero), axis_name)
  alpha = size / jnp.maximum(nonzero, 1.0)
  return alpha * dev / f_norm


def passk_best(rewards: Array, group_ids: Array, num_groups: int, *,
               scale_by_std: bool = True, eps: float = 1e-6, ddof: int = 1,
               axis_name=None) -> Array:
  """Pass@k-style credit: only the best sample of each group gets a signal.

  In a group of ``n >= 2`` the top sample gets ``A = r_(1) - r_(2)``, the
  best minus the second-best reward, divided by ``std_g + eps`` when
  ``scale_by_std`` (``std_g`` with ``ddof``); every other sample, and every
  singleton group, gets 0. Ties: among equal maxima the sample with the
  lowest *global* batch index is the top one (then ``r_(1) = r_(2)`` and its
  advantage is 0 anyway). Inside ``shard_map`` the global index is
  ``axis_index(axis_name) * B_local + i``, i.e. the batch is split in
  contiguous blocks over ``axis_name``.

  References:
    Tang et al., "Optimizing Language Models for Inference Time Objectives
    using Reinforcement Learning", arXiv:2503.19595.

  Inspired by the paper's pass@k gradient (the leave-one-out credit of the
  max over the whole group, i.e. ``k = n``); we reproduce verl's
  ``grpo_passk`` (``scale_by_std`` is its ``norm_adv_by_std_in_grpo``),
  except that verl rejects groups of one and leaves ties to ``torch.topk``.
  Dividing by the group std (the default here, as in verl, where
  ``norm_adv_by_std_in_grpo`` defaults to True) is verl's choice, not the
  paper's; ``scale_by_std=False`` gives the paper's credit. This is not
  "Pass@k Training" (Chen et al., arXiv:2508.10751), which gives every
  sample of a group an analytic pass@k advantage
  (``divrl.passk.passk_closed_form``). Without the std it is the ``k = n``
  case of PKPO with the leave-one-out-minus-one baseline
  (``divrl.passk.pkpo_advantages(k=n, baseline="loo_minus_one")``, tested).

  Args:
    rewards: ``[B]`` float sequence rewards.
    group_ids: ``[B]`` int group ids.
    num_groups: static upper bound on the group ids.
    scale_by_std: divide by ``std_g + eps``.
    eps: added to the group std.
    ddof: delta degrees of freedom of the group std (1 = unbiased, verl).
    axis_name: mesh axis for the collectives inside ``shard_map``.

  Returns:
    ``[B]`` advantages.
  """
  _check_inputs(rewards, group_ids)
  b = rewards.shape[0]
  index = jnp.arange(b, dtype=jnp.int32)
  if axis_name is not None:
    index = index + jax.lax.axis_index(axis_name).astype(jnp.int32) * b
  best = groups.broadcast(
      groups.group_max(rewards, group_ids, num_groups, axis_name), group_ids)
  big = jnp.iinfo(jnp.int32).max
  top_index = groups.broadcast(
      groups.group_min(jnp.where(rewards == best, index, big), group_ids,
                       num_groups, axis_name), group_ids)
  is_top = index == top_index
  second = groups.broadcast(
      groups.group_max(jnp.where(is_top, -jnp.inf, rewards), group_ids,
                       num_groups, axis_name), group_ids)
  _, var, n = groups.group_moments(rewards, group_ids, num_groups, ddof=ddof,
                                   axis_name=axis_name)
  keep = is_top & (n >= 2)
  adv = rewards - jnp.where(keep, second, rewards)
  if scale_by_std:
    scale = jnp.sqrt(var) + eps
    adv = jnp.where(scale > 0, adv / jnp.where(scale > 0, scale, 1.0), 0.0)
  return jnp.where(keep, adv, 0.0)


def gdpo(rewards: Array, group_ids: Array, num_groups: int, mask: Array, *,
         reward_weights=None, batch_norm: str = "tokens",
         batch_eps: float = 1e-4, eps: float = 1e-6, ddof: int = 1,
         eps_placement: str = "std", singleton: str = "zero",
         scale_by_std: bool = True, std_scope: str = "group",
         axis_name=None) -> Array:
  """GDPO: normalise each reward component per group, then sum, then batch.

  For rewards ``r [B,K]`` with weights ``w [K]``: ``z_{i,k} = grpo(r_{:,k})``
  (a group z-score with the ``grpo`` flags ``eps, ddof, eps_placement,
  singleton, scale_by_std, std_scope``), ``s_i = sum_k w_k z_{i,k}``, then a
  batch normalisation of ``s``:

  * ``batch_norm="tokens"`` (verl ``gdpo``): ``s_i`` on every valid token,
    ``masked_whiten`` over the valid tokens of the global batch;
  * ``"samples"`` (TRL ``multi_objective_aggregation="normalize_then_sum"``):
    ``(s_i - mean_batch s) / (std_batch s + batch_eps)`` over all ``B``
    sequences, unbiased std (TRL ``batch_eps = 1e-4``; use ``eps=1e-4`` for
    TRL's group z-score);
  * ``"none"``: ``s_i`` on every valid token.

  Normalising before summing keeps reward combinations that sum-then-normalise
  (``grpo`` with ``reward_weights``) would collapse onto one advantage.

  References:
    Liu et al., "GDPO: Group reward-Decoupled Normalization Policy
    Optimization for Multi-reward RL Optimization", arXiv:2601.05242.

  Args:
    rewards: ``[B,K]`` reward components (``[B]`` is read as ``K = 1``).
    group_ids: ``[B]`` int group ids.
    num_groups: static upper bound on the group ids.
    mask: ``[B,T]`` response mask.
    reward_weights: ``K`` weights (default all 1).
    batch_norm: ``"tokens"``, ``"samples"`` or ``"none"``.
    batch_eps: added to the batch std with ``batch_norm="samples"``.
    eps, ddof, eps_placement, singleton, scale_by_std, std_scope: the
      per-component group normalisation, as in ``grpo``.
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B,T]`` advantages, 0 where ``mask == 0``.
  """
  _check_choice("batch_norm", batch_norm, _BATCH_NORMS)
  if rewards.ndim == 1:
    rewards = rewards[:, None]
  chex.assert_rank([rewards, mask], 2)
  chex.assert_equal_shape_prefix([rewards, mask], 1)
  k = rewards.shape[1]
  w = (jnp.ones((k,), rewards.dtype) if reward_weights is None
       else jnp.asarray(reward_weights, rewards.dtype))
  if w.shape != (k,):
    raise ValueError(f"reward_weights must have {k} entries (one per reward"
                     f" component), got shape {tuple(w.shape)}.")
  z = jnp.stack([grpo(rewards[:, c], group_ids, num_groups, eps=eps, ddof=ddof,
                      eps_placement=eps_placement, singleton=singleton,
                      scale_by_std=scale_by_std, std_scope=std_scope,
                      axis_name=axis_name) for c in range(k)], axis=1)
  s = z @ w
  if batch_norm == "samples":
    mean, var = groups.batch_moments(s, ddof=1, axis_name=axis_name)
    scale = jnp.sqrt(var) + batch_eps
    s = jnp.where(scale > 0, (s - mean) / jnp.where(scale > 0, scale, 1.0),
                  0.0)
  x = per_token(s, mask)
  if batch_norm == "tokens":
    return masked_whiten(x, mask, axis_name=axis_name)
  return x


# --- Carried state: an EMA of the reward std ---------------------------------


def ema_std_grpo(rewards: Array, group_ids: Array, num_groups: int,
                 std: Array, *, eps: float = 1e-6, singleton: str = "zero",
                 axis_name=None) -> Array:
  """GRPO's group-centred reward over a *tracked* std: ``(r - mean_g) /
  (std + eps)``.

  ``std`` is a scalar carried across steps (``ema_std_update``) instead of
  the group's own std, so groups with a small spread are not blown up and
  the scale of the advantages moves slowly.

  Inspired by EMA-GRPO of Feng et al., "OneThinker: All-in-one Reasoning
  Model for Image and Video", arXiv:2512.03043, which tracks a moving
  average of the reward std per task. We choose one task (divrl batches
  carry no task id), the unbiased std of the whole batch's rewards as the
  per-step measurement, and an Adam-style bias correction of the average
  (``ema_std_update``).

  Args:
    rewards: ``[B]`` float sequence rewards.
    group_ids: ``[B]`` int group ids.
    num_groups: static upper bound on the group ids.
    std: scalar, the tracked reward std (or ``[B]``, one per sample).
    eps: added to ``std``.
    singleton: what a group of one gets, as in ``grpo``.
    axis_name: mesh axis for ``psum`` inside ``shard_map``.

  Returns:
    ``[B]`` advantages.
  """
  chex.assert_rank(std, {0, 1})
  dev = grpo(rewards, group_ids, num_groups, singleton=singleton,
             scale_by_std=False, axis_name=axis_name)
  return dev / (std.astype(dev.dtype) + eps)


def w_reinforce(rewards: Array, *, lam: float = 0.1, threshold: float = 0.5,
                mode: str = "weighted") -> Array:
  """Sign-asymmetric REINFORCE advantages of Zhu et al., "The Surprising
  Effectiveness of Negative Reinforcement in LLM Reasoning",
  arXiv:2506.01347 (checked against their released code,
  ``compute_psr_nsr_outcome_advantage``).

  With ``correct = r > threshold`` (their rewards are 0/1):

  * ``mode="weighted"`` (W-REINFORCE): ``A = lam`` if correct, ``-1`` if not
    (the README's ``lam = 0.1`` upweights negative reinforcement);
  * ``"psr"``: ``+1`` on correct samples, 0 on the others;
  * ``"nsr"``: ``-1`` on wrong samples, 0 on the others.

  No group baseline and no std. Their PSR/NSR modes drop the other samples
  from the batch; here those samples get advantage 0, which gives the same
  gradient direction but, under ``token-mean``, a denominator that still
  counts their tokens (a per-batch scale).

  Args:
    rewards: ``[B]`` float rewards.
    lam: the weight of positive samples in ``"weighted"`` mode.
    threshold: rewards above it count as correct.
    mode: ``"weighted"``, ``"psr"`` or ``"nsr"``.

  Returns:
    ``[B]`` advantages.
  """
  chex.assert_rank(rewards, 1)
  chex.assert_type(rewards, float)
  _check_choice("mode", mode, _SIGN_MODES)
  correct = rewards > threshold
  one = jnp.ones_like(rewards)
  if mode == "psr":
    return jnp.where(correct, one, 0.0)
  if mode == "nsr":
    return jnp.where(correct, 0.0, -one)
  return jnp.where(correct, lam * one, -one)


def ema_std_init() -> dict[str, Array]:
  """The carry of ``ema_std_grpo``: an empty moving average."""
  return {"ema": jnp.zeros((), jnp.float32),
          "weight": jnp.zeros((), jnp.float32)}


def ema_std_update(carry: dict[str, Array], batch: Batch, *,
                   decay: float = 0.9, reward_weights=None,
                   axis_name=None) -> dict[str, Array]:
  """One step of the reward-std average: ``ema <- decay ema + (1 - decay)
  std(r)``, ``weight <- decay weight + (1 - decay)``.

  ``std(r)`` is the unbiased std of the batch's scalar rewards (``psum``
  over ``axis_name``); the tracked value is ``ema / weight`` (bias
  corrected, so the first step gives the first batch's std exactly).
  """
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"decay must lie in [0, 1), got {decay}.")
  r = scalar_rewards(batch.rewards, reward_weights)
  _, var = groups.batch_moments(r, ddof=1, axis_name=axis_name)
  return {"ema": decay * carry["ema"] + (1.0 - decay) * jnp.sqrt(var),
          "weight": decay * carry["weight"] + (1.0 - decay)}


def tracked_std(carry: dict[str, Array]) -> Array:
  """The bias-corrected average ``ema / weight`` (0 before any update)."""
  w = carry["weight"]
  return jnp.where(w > 0, carry["ema"] / jnp.where(w > 0, w, 1.0), 0.0)


def ema_task_std_init(*, num_tasks: int = 1) -> dict[str, Array]:
  """The carry of ``ema_task_std_grpo``: one empty average per task."""
  if not isinstance(num_tasks, int) or num_tasks < 1:
    raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}.")
  return {"ema": jnp.zeros((num_tasks,), jnp.float32),
          "weight": jnp.zeros((num_tasks,), jnp.float32)}


def _task_ids(batch: Batch, num_tasks: int) -> Array:
  ids = batch.task_ids
  if not isinstance(ids, jax.core.Tracer):
    bad = (np.asarray(ids) < 0) | (np.asarray(ids) >= num_tasks)
    if bad.any():
      raise ValueError(f"Batch.task_ids must lie in [0, num_tasks ="
                       f" {num_tasks}), got {np.asarray(ids)[bad][:4]}.")
  return ids


def ema_task_std_update(carry: dict[str, Array], batch: Batch, *,
                        decay: float = 0.9, num_tasks: int = 1,
                        reward_weights=None,
                        axis_name=None) -> dict[str, Array]:
  """One step of the per-task reward-std averages: for each task ``k`` with
  at least two valid samples in the batch, ``ema_k <- decay ema_k + (1 -
  decay) std_k(r)`` and ``weight_k <- decay weight_k + (1 - decay)``
  (``std_k`` unbiased over the task's samples with a non-empty response,
  ``psum`` over ``axis_name``); the other tasks keep their average."""
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"decay must lie in [0, 1), got {decay}.")
  r = scalar_rewards(batch.rewards, reward_weights)
  ids = _task_ids(batch, num_tasks)
  count, _, std, _ = groups.valid_group_stats(
      r, valid_rows(batch.response_mask), ids, num_tasks, axis_name)
  seen = count >= 2
  return {"ema": jnp.where(seen, decay * carry["ema"] + (1.0 - decay) * std,
                           carry["ema"]),
          "weight": jnp.where(seen, decay * carry["weight"] + (1.0 - decay),
                              carry["weight"])}


# --- Batch adapters ---------------------------------------------------------


def scalar_rewards(rewards: Array, reward_weights=None) -> Array:
  """Sequence rewards ``[B]`` from ``[B]`` or ``[B,K]`` (weighted sum).

  This is the "sum then normalise" multi-reward convention (TRL's default).
  ``reward_weights`` (``K`` floats, default all 1) weight the components.
  """
  if rewards.ndim == 1:
    if reward_weights is not None:
      raise ValueError("reward_weights given but rewards have no component"
                       " axis (shape [B]).")
    return rewards
  k = rewards.shape[-1]
  w = (jnp.ones((k,), rewards.dtype) if reward_weights is None
       else jnp.asarray(reward_weights, rewards.dtype))
  if w.shape != (k,):
    raise ValueError(f"reward_weights must have {k} entries (one per reward"
                     f" component), got shape {tuple(w.shape)}.")
  return rewards @ w


def group_advantage_part(fn, batch: Batch, reward_weights=None,
                         **kwargs) -> Array:
  """``fn(r, group_ids, num_groups, **kwargs)`` on the batch's scalar
  rewards, broadcast to ``[B,T]`` and masked: the body of a group-level
  advantage part."""
  r = scalar_rewards(batch.rewards, reward_weights)
  return per_token(fn(r, batch.group_ids, batch.groups, **kwargs),
                   batch.response_mask)


def token_rewards_of(batch: Batch, reward_weights=None) -> Array:
  """The ``[B,T]`` token rewards a token-level estimator reads.

  ``Batch.token_rewards`` (0 where the mask is 0) when set; otherwise the
  scalar reward (``scalar_rewards(batch.rewards, reward_weights)``) on the
  last valid token.
  """
  if batch.token_rewards is not None:
    if reward_weights is not None:
      raise ValueError("reward_weights has no effect when Batch.token_rewards"
                       " is set; combine reward components before filling"
                       " token_rewards.")
    return jnp.where(batch.response_mask > 0, batch.token_rewards,
                     jnp.zeros((), batch.token_rewards.dtype))
  return on_last_token(scalar_rewards(batch.rewards, reward_weights),
                       batch.response_mask)


@register("advantage", "grpo",
          domains={"eps": at_least(0), "ddof": integer(0)})
@defaults_from(grpo, scalar_rewards)
def grpo_part(batch: Batch, *, axis_name=None, eps, ddof, eps_placement,
              singleton, scale_by_std, std_scope, reward_weights) -> Array:
  """GRPO advantages per token; see ``grpo``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = grpo(r, batch.group_ids, batch.groups, eps=eps, ddof=ddof,
             eps_placement=eps_placement, singleton=singleton,
             scale_by_std=scale_by_std, std_scope=std_scope,
             axis_name=axis_name)
  return per_token(adv, batch.response_mask)


@register("advantage", "dr_grpo")
@defaults_from(grpo, scalar_rewards)
def dr_grpo_part(batch: Batch, *, axis_name=None, singleton,
                 reward_weights) -> Array:
  """Dr.GRPO advantages per token: ``r_i - mean_g`` (arXiv:2503.20783)."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = grpo(r, batch.group_ids, batch.groups, singleton=singleton,
             scale_by_std=False, axis_name=axis_name)
  return per_token(adv, batch.response_mask)


@register("advantage", "rloo")
@defaults_from(rloo, scalar_rewards)
def rloo_part(batch: Batch, *, axis_name=None, singleton,
              reward_weights) -> Array:
  """RLOO advantages per token; see ``rloo``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = rloo(r, batch.group_ids, batch.groups, singleton=singleton,
             axis_name=axis_name)
  return per_token(adv, batch.response_mask)


@register("advantage", "reinforce_pp",
          domains={"gamma": between(0, 1)})
@defaults_from(reinforce_pp, scalar_rewards)
def reinforce_pp_part(batch: Batch, *, axis_name=None, gamma, whiten,
                      reward_weights) -> Array:
  """REINFORCE++ advantages per token; see ``reinforce_pp``."""
  return reinforce_pp(token_rewards_of(batch, reward_weights),
                      batch.response_mask, gamma=gamma, whiten=whiten,
                      axis_name=axis_name)


@register("advantage", "reinforce_pp_baseline")
@defaults_from(reinforce_pp_baseline, scalar_rewards)
def reinforce_pp_baseline_part(batch: Batch, *, axis_name=None, singleton,
                               whiten, reward_weights) -> Array:
  """REINFORCE++ with a group-mean baseline, per token.

  See ``reinforce_pp_baseline``.
  """
  r = scalar_rewards(batch.rewards, reward_weights)
  return reinforce_pp_baseline(r, batch.group_ids, batch.groups,
                               batch.response_mask, singleton=singleton,
                               whiten=whiten, axis_name=axis_name)


@register("advantage", "remax", reads=("baseline_rewards",))
@defaults_from(scalar_rewards)
def remax_part(batch: Batch, *, axis_name=None, reward_weights) -> Array:
  """ReMax advantages per token; see ``remax``. Reads the reward of the
  greedy decode of each prompt, ``Batch.baseline_rewards``."""
  del axis_name  # no batch statistics
  return remax(token_rewards_of(batch, reward_weights), batch.response_mask,
               batch.baseline_rewards)


@register("advantage", "opo")
@defaults_from(opo, scalar_rewards)
def opo_part(batch: Batch, *, axis_name=None, singleton,
             reward_weights) -> Array:
  """OPO advantages per token (length-weighted baseline); see ``opo``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = opo(r, batch.group_ids, batch.groups,
            sequence_lengths(batch.response_mask, r.dtype),
            singleton=singleton, axis_name=axis_name)
  return per_token(adv, batch.response_mask)


@register("advantage", "gpg",
          domains={"f_norm": above(0)})
@defaults_from(gpg, scalar_rewards)
def gpg_part(batch: Batch, *, axis_name=None, f_norm, singleton,
             reward_weights) -> Array:
  """GPG advantages per token; see ``gpg``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = gpg(r, batch.group_ids, batch.groups, f_norm=f_norm,
            singleton=singleton, axis_name=axis_name)
  return per_token(adv, batch.response_mask)


@register("advantage", "gdpo", reads=("reward_components",),
          domains={"batch_eps": at_least(0), "eps": at_least(0),
                   "ddof": integer(0)})
@defaults_from(gdpo)
def gdpo_part(batch: Batch, *, axis_name=None, reward_weights, batch_norm,
              batch_eps, eps, ddof, eps_placement, singleton, scale_by_std,
              std_scope) -> Array:
  """GDPO advantages per token (normalise, sum, normalise); see ``gdpo``.

  Reads ``K`` reward components (``Batch.rewards`` of shape ``[B,K]``); with
  ``[B]`` rewards it is the single-component case.
  """
  return gdpo(batch.rewards, batch.group_ids, batch.groups,
              batch.response_mask, reward_weights=reward_weights,
              batch_norm=batch_norm, batch_eps=batch_eps, eps=eps, ddof=ddof,
              eps_placement=eps_placement, singleton=singleton,
              scale_by_std=scale_by_std, std_scope=std_scope,
              axis_name=axis_name)


@register("advantage", "passk_best",
          domains={"eps": at_least(0), "ddof": integer(0)})
@defaults_from(passk_best, scalar_rewards)
def passk_best_part(batch: Batch, *, axis_name=None, scale_by_std, eps, ddof,
                    reward_weights) -> Array:
  """Pass@k best-sample advantages per token; see ``passk_best``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = passk_best(r, batch.group_ids, batch.groups, scale_by_std=scale_by_std,
                   eps=eps, ddof=ddof, axis_name=axis_name)
  return per_token(adv, batch.response_mask)


@register("advantage", "otb", reads=("sum_pi_squared",),
          domains={"eps": above(0)})
@defaults_from(otb, scalar_rewards)
def otb_part(batch: Batch, *, axis_name=None, handle_zero_tail, eps,
             reward_weights) -> Array:
  """Optimal-token-baseline advantages per token; see ``otb``.

  Reads ``Batch.sum_pi_squared`` (of ``pi_old``: the prepare stage runs on
  the behaviour policy's statistics); ``pi_old`` comes from
  ``Batch.old_logprobs``, else ``stop_gradient(logprobs)``.
  """
  return otb(token_rewards_of(batch, reward_weights), batch.response_mask,
             behaviour_logprobs(batch), batch.sum_pi_squared, batch.group_ids,
             batch.groups, handle_zero_tail=handle_zero_tail, eps=eps,
             axis_name=axis_name)


@register("advantage", "gae", reads=("values",),
          domains={"gamma": between(0, 1), "lam": between(0, 1)})
@defaults_from(gae, scalar_rewards)
def gae_part(batch: Batch, *, axis_name=None, gamma, lam, whiten: bool = True,
             reward_weights) -> Array:
  """GAE advantages per token, whitened over the batch; see ``gae``.

  Reads the critic's ``Batch.values``. ``whiten=True`` applies
  ``masked_whiten`` to the advantages (verl); the critic is trained on the
  returns by the ``"value_loss"`` regularizer.
  """
  adv, _ = gae(token_rewards_of(batch, reward_weights), batch.values,
               batch.response_mask, gamma=gamma, lam=lam)
  if whiten:
    return masked_whiten(adv, batch.response_mask, axis_name=axis_name)
  return adv * batch.mask


@register("advantage", "ema_std_grpo",
          state=State(init=ema_std_init, update=ema_std_update),
          domains={"eps": above(0), "decay": between(0, 1, high_open=True)})
@defaults_from(ema_std_grpo, ema_std_update, scalar_rewards)
def ema_std_grpo_part(batch: Batch, *, carry, axis_name=None, eps, singleton,
                      decay, reward_weights) -> Array:
  """GRPO over a moving average of the reward std (carried state).

  See ``ema_std_grpo``; ``decay`` sets the average's memory
  (``ema_std_update``).
  """
  del decay  # used by the carry update
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = ema_std_grpo(r, batch.group_ids, batch.groups, tracked_std(carry),
                     eps=eps, singleton=singleton, axis_name=axis_name)
  return per_token(adv, batch.response_mask)


@register("advantage", "ema_task_std_grpo", reads=("task_ids",),
          state=State(init=ema_task_std_init, update=ema_task_std_update),
          domains={"eps": above(0), "decay": between(0, 1, high_open=True),
                   "num_tasks": integer(1)})
@defaults_from(ema_std_grpo, ema_task_std_update, scalar_rewards)
def ema_task_std_grpo_part(batch: Batch, *, carry, axis_name=None, eps,
                           singleton, decay, num_tasks,
                           reward_weights) -> Array:
  """EMA-GRPO: the group-centred reward over a moving average of the reward
  std of the sample's task, ``(r - mean_g) / (sigma_task + eps)``.

  ``sigma_task`` is carried across steps, one average per task
  (``ema_task_std_update``, bias-corrected as in ``tracked_std``), from
  ``Batch.task_ids`` in ``[0, num_tasks)``. Inspired by EMA-GRPO of
  OneThinker, which normalises by a per-task moving average of the reward
  std: the per-step measurement (the unbiased std of the task's rewards in
  the batch) and the bias correction are our choices. With ``num_tasks=1``
  it is ``ema_std_grpo``.

  References:
    Feng et al., "OneThinker: All-in-one Reasoning Model for Image and
    Video", arXiv:2512.03043.
  """
  del decay  # used by the carry update
  r = scalar_rewards(batch.rewards, reward_weights)
  std = tracked_std(carry)[_task_ids(batch, num_tasks)]
  adv = ema_std_grpo(r, batch.group_ids, batch.groups, std, eps=eps,
                     singleton=singleton, axis_name=axis_name)
  return per_token(adv, batch.response_mask)


@register("advantage", "w_reinforce",
          domains={"lam": at_least(0), "threshold": FINITE})
@defaults_from(w_reinforce, scalar_rewards)
def w_reinforce_part(batch: Batch, *, lam, threshold,
                     reward_weights) -> Array:
  """W-REINFORCE: ``lam`` on correct samples, ``-1`` on wrong ones; see
  ``w_reinforce``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  return per_token(w_reinforce(r, lam=lam, threshold=threshold),
                   batch.response_mask)


@register("advantage", "psr",
          domains={"threshold": FINITE})
@defaults_from(w_reinforce, scalar_rewards)
def psr_part(batch: Batch, *, threshold, reward_weights) -> Array:
  """Positive sample reinforcement only: ``+1`` on correct samples;
  see ``w_reinforce``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  return per_token(w_reinforce(r, threshold=threshold, mode="psr"),
                   batch.response_mask)


@register("advantage", "nsr",
          domains={"threshold": FINITE})
@defaults_from(w_reinforce, scalar_rewards)
def nsr_part(batch: Batch, *, threshold, reward_weights) -> Array:
  """Negative sample reinforcement only: ``-1`` on wrong samples;
  see ``w_reinforce``."""
  r = scalar_rewards(batch.rewards, reward_weights)
  return per_token(w_reinforce(r, threshold=threshold, mode="nsr"),
                   batch.response_mask)
