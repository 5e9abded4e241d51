"""Sampled divergence estimators between the policy and a reference.

With ``u = log pi(y) - log ref(y)`` for a token ``y`` sampled from ``pi``:

============  ==========================  ===================================
estimator     value                       expected gradient in the loss
============  ==========================  ===================================
``k1``        ``u``                       ``0`` (score-function identity)
``abs``       ``|u|``                     none of the KLs
``k2``        ``u^2 / 2``                 ``grad KL(pi || ref)``
``k3``        ``exp(-u) + u - 1``         ``grad KL(ref || pi)``
``<k>+``      value of ``<k>``            gradient of ``k2``
IS ``k3``     ``(pi/pi_old) k3``          ``grad KL(pi || ref)``
IS ``k1``     ``(pi/pi_old) k1``          ``grad KL(pi || ref)``
============  ==========================  ===================================

The expectations are over ``y ~ pi`` (``y ~ pi_old`` for the importance
sampled "IS" rows, ``is_correction=True`` with the ratio differentiated) with
the sample held fixed, per token: for sequences the k2 and k3 rows give the
sum over positions of the gradient of the per-position conditional
divergence, with the prefix distribution not differentiated. The full
sequence-level KL gradient also has a term through the prefix distribution; a
loss-placed per-token estimator does not give it.

KL **in the reward** (the ``"kl_in_reward"`` transform, verl's
``use_kl_in_reward``) is different: the per-token estimate is a constant in
the return, and the policy-gradient estimator differentiates the sampling
distribution of the whole sequence. With ``k1`` and an unbiased advantage
(RLOO) the expected gradient of the loss is ``coef * grad KL(pi || ref)`` of
the **full sequence** distribution, prefix term included; other estimators in
the reward give ``coef * sum_y grad pi(y) sum_t k_t(y)``, which is not the
gradient of a KL in general. All of this is checked by exact enumeration in
``tests/test_divergences.py``.

This module also holds the ``"entropy"`` regularizer (``H = log V -
KL(pi || uniform)`` per position).

References:
  Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/
  kl-approx.html (k1, k2, k3).
  Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in
  Open Language Models", arXiv:2402.03300 (k3 in the GRPO loss).
  DeepSeek-AI, "DeepSeek-V3.2: Pushing the Frontier of Open Large Language
  Models", arXiv:2512.02556 (importance-sampling corrected k3).
  Ziegler et al., "Fine-Tuning Language Models from Human Preferences",
  arXiv:1909.08593 (KL penalty in the reward).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl.sequences import on_last_token
from divrl.registry import above, at_least, defaults_from, register
from divrl.types import Batch, behaviour_logprobs, scalar_rewards_of

Array = jax.Array

ESTIMATORS = ("k1", "abs", "k2", "k3")


def kl_estimator(u: Array, estimator: str = "k3") -> Array:
  """The sampled estimators of ``KL(p || q)`` from ``u = log p(y) - log q(y)``.

  For ``y`` sampled from ``p`` (the table in the module docstring):
  ``k1 = u``, ``abs = |u|``, ``k2 = u^2 / 2``, ``k3 = exp(-u) - 1 + u``
  (Schulman 2020). ``k1`` and ``k3`` are unbiased for ``KL(p || q)``; ``k3``
  is non-negative with lower variance when ``p`` is close to ``q``; ``k2``
  is biased (its expectation is ``KL`` to second order). This one table
  serves the KL regularizers here, the rollout rejection criteria
  (``divrl.rejection``: ``p`` = the sampler, ``q`` = ``pi_old``) and the KL
  metrics (``divrl.metrics.kl_to_base``).

  Args:
    u: log-ratios ``log p - log q`` at samples of ``p``, any shape.
    estimator: ``"k1"``, ``"abs"``, ``"k2"`` or ``"k3"``.

  Returns:
    The per-sample estimates, same shape as ``u``.
  """
  if estimator == "k1":
    return u
  if estimator == "abs":
    return jnp.abs(u)
  if estimator == "k2":
    return 0.5 * u * u
  if estimator == "k3":
    return jnp.expm1(-u) + u
  raise ValueError(
      f"estimator must be one of {ESTIMATORS} or with a '+' suffix, got"
      f" {estimator!r}.")


def kl_estimate(logprobs: Array, ref_logprobs: Array,
                estimator: str, *,
                log_ratio_clip: float | None = None,
                value_clip: float | None = None) -> Array:
  """Per-token sampled KL estimate ``[B,T]`` (see the module table).

  Args:
    logprobs: ``[B,T]`` policy log-probs (differentiable).
    ref_logprobs: ``[B,T]`` reference log-probs (constants).
    estimator: ``"k1"``, ``"abs"``, ``"k2"``, ``"k3"``, or any of them with a
      ``"+"`` suffix for the straight-through form: value of the base
      estimator, gradient of ``k2`` (``k2 - sg(k2) + sg(k)``).
    log_ratio_clip: optional clamp of ``u`` (verl clamps k3's ``-u`` at 20).
    value_clip: optional symmetric clamp of the base estimator's value to
      ``[-value_clip, value_clip]`` (tunix ``kl_clamp_value``; verl clamps k3
      to ``[-10, 10]``). Outside the clamp a plain estimator has zero
      gradient; a ``"+"`` form keeps its ``k2`` gradient (only its value is
      clamped, as in verl).

  Returns:
    ``[B,T]`` estimates.
  """
  chex.assert_equal_shape([logprobs, ref_logprobs])
  if value_clip is not None and not value_clip > 0:
    raise ValueError(f"value_clip must be > 0 or None, got {value_clip}.")
  u = logprobs - jax.lax.stop_gradient(ref_logprobs)
  if log_ratio_clip is not None:
    u = jnp.clip(u, -log_ratio_clip, log_ratio_clip)
  plus = estimator.endswith("+")
  value = kl_estimator(u, estimator[:-1] if plus else estimator)
  if value_clip is not None:
    value = jnp.clip(value, -value_clip, value_clip)
  if plus:
    k2 = kl_estimator(u, "k2")
    return k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(value)
  return value


def importance_corrected_kl(logprobs: Array, ref_logprobs: Array,
                            old_logprobs: Array, estimator: str, *,
                            detach_ratio: bool = False,
                            is_log_ratio_clip: float | None = 20.0,
                            log_ratio_clip: float | None = None,
                            value_clip: float | None = None) -> Array:
  """KL estimate multiplied by the ratio ``pi / pi_old`` (unbiased off-policy).

  ``KL_t = exp(log pi_t - log pi_old_t) * k(u_t)``. For samples drawn from
  ``pi_old``, ``E_{pi_old}[(pi/pi_old) k3] = E_pi[k3] = KL(pi || ref)`` per
  position, so the value is unbiased for the reverse KL even off-policy. With
  the ratio differentiated (``detach_ratio=False``, TRL's
  ``use_bias_correction_kl``, which does not detach it) the expected gradient
  is ``grad KL(pi || ref)`` of each position's conditional, prefix held
  fixed; with a detached ratio it is ``grad KL(ref || pi)`` like plain k3.

  References:
    DeepSeek-AI, "DeepSeek-V3.2: Pushing the Frontier of Open Large Language
    Models", arXiv:2512.02556 (unbiased KL estimate, Eq. for the
    importance-sampled k3).

  Args:
    logprobs: ``[B,T]`` policy log-probs (differentiable).
    ref_logprobs: ``[B,T]`` reference log-probs (constants).
    old_logprobs: ``[B,T]`` behaviour log-probs (constants).
    estimator: as in ``kl_estimate``.
    detach_ratio: stop the gradient through ``pi / pi_old``.
    is_log_ratio_clip: clamp of ``log pi - log pi_old`` before ``exp`` (as the
      surrogates do; ``None`` reproduces TRL, which does not clamp).
    log_ratio_clip: clamp of ``u``, as in ``kl_estimate``.
    value_clip: clamp of the estimate's value before the ratio multiplies it.

  Returns:
    ``[B,T]`` corrected estimates.
  """
  chex.assert_equal_shape([logprobs, ref_logprobs, old_logprobs])
  d = logprobs - jax.lax.stop_gradient(old_logprobs)
  if is_log_ratio_clip is not None:
    d = jnp.clip(d, -is_log_ratio_clip, is_log_ratio_clip)
  ratio = jnp.exp(d)
  if detach_ratio:
    ratio = jax.lax.stop_gradient(ratio)
  return ratio * kl_estimate(logprobs, ref_logprobs, estimator,
                             log_ratio_clip=log_ratio_clip,
                             value_clip=value_clip)


@register("regularizer", "kl", reads=("ref_logprobs",),
          domains={"log_ratio_clip": above(0), "value_clip": above(0),
                   "is_log_ratio_clip": above(0), "coef": at_least(0)})
@defaults_from(kl_estimate, importance_corrected_kl)
def kl_part(batch: Batch, *, estimator: str = "k3", log_ratio_clip, value_clip,
            is_correction: bool = False, detach_ratio,
            is_log_ratio_clip) -> Array:
  """KL to the reference placed in the loss; reads ``Batch.ref_logprobs``.

  ``kl_estimate`` (plain) or, with ``is_correction=True``,
  ``importance_corrected_kl`` against ``pi_old`` (``Batch.old_logprobs``, or
  ``sg(logprobs)`` on-policy, where the ratio's value is 1 but its gradient
  is not 0); see ``kl_estimate`` and ``importance_corrected_kl``.

  Library settings: verl ``kl_loss_type=low_var_kl`` is ``estimator="k3",
  log_ratio_clip=20, value_clip=10``; tunix is ``estimator="k3"`` with
  ``value_clip=kl_clamp_value``; TRL is ``estimator="k3"`` and, with
  ``use_bias_correction_kl``, ``is_correction=True, detach_ratio=False,
  is_log_ratio_clip=None``.
  """
  if is_correction:
    return importance_corrected_kl(
        batch.logprobs, batch.ref_logprobs, behaviour_logprobs(batch), estimator,
        detach_ratio=detach_ratio, is_log_ratio_clip=is_log_ratio_clip,
        log_ratio_clip=log_ratio_clip, value_clip=value_clip)
  return kl_estimate(batch.logprobs, batch.ref_logprobs, estimator,
                     log_ratio_clip=log_ratio_clip, value_clip=value_clip)


def kl_penalized_rewards(rewards: Array, token_rewards: Array | None,
                         mask: Array, kl: Array, coef):
  """Subtracts ``coef * kl`` from the token rewards and the sequence rewards.

  ``token_rewards <- token_rewards - coef * kl * m`` (the scalar reward on
  the last valid token when ``token_rewards`` is None) and ``rewards <-
  rewards - coef * sum_t kl * m``.

  Returns:
    ``(rewards [B], token_rewards [B,T])``.
  """
  chex.assert_rank([rewards, mask, kl], [1, 2, 2])
  chex.assert_equal_shape([mask, kl])
  m = mask.astype(kl.dtype)
  penalty = coef * jnp.where(mask > 0, kl, 0.0) * m
  if token_rewards is None:
    token_rewards = on_last_token(rewards, mask)
  token_rewards = jnp.where(mask > 0, token_rewards, 0.0) - penalty
  return rewards - jnp.sum(penalty, axis=-1), token_rewards


@register("transform", "kl_in_reward", reads=("ref_logprobs",),
          domains={"coef": at_least(0), "log_ratio_clip": above(0),
                   "value_clip": above(0)})
@defaults_from(kl_estimate)
def kl_in_reward_part(batch: Batch, *, coef: float = 0.0,
                      estimator: str = "k1", log_ratio_clip, value_clip,
                      coefs=None) -> Batch:
  """KL to the reference subtracted from the rewards (verl use_kl_in_reward).

  ``kl_t = k(log pi_old_t - log ref_t)`` with ``pi_old`` = ``Batch.old_logprobs``
  (or ``sg(logprobs)`` on-policy), a constant; then ``kl_penalized_rewards``:
  ``token_rewards <- token_rewards - coef kl_t m_t`` (the scalar reward on the
  last valid token when ``Batch.token_rewards`` is None) and ``rewards <-
  rewards - coef sum_t kl_t m_t``. Sequence estimators (GRPO, RLOO, ...) read
  ``rewards``; token-level ones (REINFORCE++, GAE) read ``token_rewards``;
  see ``kl_penalized_rewards``.

  Gradient: the penalty enters the return, so with ``estimator="k1"`` (verl's
  default ``algorithm.kl_penalty="kl"``) and an unbiased advantage such as
  RLOO the expected gradient of the loss is ``coef * grad KL(pi || ref)`` of
  the full sequence distribution (including the prefix term a loss-placed
  estimator misses); see the module docstring. Inspired by Ziegler et al.,
  "Fine-Tuning Language Models from Human Preferences", arXiv:1909.08593
  (``R = r - beta log(pi/ref)``). Drive ``coef`` with
  ``divrl.controllers.adaptive_kl`` under ``jit`` through the objective's
  call-time ``coefs={"kl_in_reward": beta}``, which overrides ``coef``.

  Raises:
    ValueError: if ``Batch.ref_logprobs`` is None or ``Batch.rewards`` is not
      ``[B]``.
  """
  scalar_rewards_of(batch, "kl_in_reward")
  if coefs is not None and "kl_in_reward" in coefs:
    coef = coefs["kl_in_reward"]
  old = jax.lax.stop_gradient(behaviour_logprobs(batch))
  kl = kl_estimate(old, batch.ref_logprobs, estimator,
                   log_ratio_clip=log_ratio_clip, value_clip=value_clip)
  kl = jax.lax.stop_gradient(kl)
  rewards, token_rewards = kl_penalized_rewards(
      batch.rewards, batch.token_rewards, batch.response_mask, kl, coef)
  return batch.replace(rewards=rewards.astype(batch.rewards.dtype),
                       token_rewards=token_rewards)


@register("regularizer", "entropy", reads=("entropy",))
def entropy_part(batch: Batch) -> Array:
  """The per-token policy entropy ``H_t`` (``Batch.entropy``) as a regularizer.

  The loss adds ``coef * H_t``, so a **negative** ``coef`` is an entropy
  bonus. The objective aggregates it with its own mode, as verl does
  (``policy_loss -= entropy_coeff * agg_loss(H, loss_agg_mode)``). TRL always
  uses the global token mean over the (entropy-masked) tokens, independent of
  ``loss_type``: use ``aggregation="token-mean"`` to match it. Drive ``coef``
  with ``divrl.controllers.adaptive_entropy`` through
  ``objective(batch, coefs={"entropy": ...})``. The gradient flows through
  ``Batch.entropy``, which the caller computes from the model (``divrl.ops``).

  References:
    He et al., "Skywork Open Reasoner 1 Technical Report", arXiv:2505.22312
    (entropy bonus with adaptive control).

  Raises:
    ValueError: if ``Batch.entropy`` is None.
  """
  return batch.entropy


# The call-time ``coefs`` key that overrides ``kl_in_reward``'s ``coef``.
kl_in_reward_part.coef_keys = ("kl_in_reward",)
