"""Confidence-aware corrections: ACE's confidence shift on negative
advantages, a confidence reweighting of positive advantages (ProGRPO), and
the backward and forward corrections of a noisy binary verifier.

References:
  "Overconfident Errors Need Stronger Correction: Asymmetric Confidence
  Penalties for Reinforcement Learning" (2025) (ACE).
  "Reinforcement Learning with Verifiable yet Noisy Rewards under Imperfect
  Verifiers" (2025) (backward correction).
  Natarajan et al., "Learning with Noisy Labels" (2013) (the unbiased
  estimator under class-conditional flips).
  "Back to Basics: Revisiting Exploration in Reinforcement Learning for LLM
  Reasoning via Generative Probabilities" (2025) (ProGRPO).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import above, at_least, between, register
from divrl.sequences import per_token, sequence_mean, valid_rows
from divrl.types import Batch, behaviour_logprobs, scalar_rewards_of

Array = jax.Array


def confidence_shift(logprobs: Array, ref_logprobs: Array,
                     mask: Array) -> Array:
  """ACE's ``c_i = sg(sum_t m (log pi - log pi_ref))``, ``[B]``: how much more
  likely the policy makes the response than the reference does."""
  d = jax.lax.stop_gradient(logprobs - ref_logprobs)
  return jnp.sum(jnp.where(mask > 0, d, 0.0), axis=1)


def ace_modulation(c: Array, *, alpha: float = 0.5, power: float = 1.0,
                   cap: float | None = 10.0) -> Array:
  """The family ``g(c) = 1 + alpha max(c, 0)^power`` (capped at ``cap``): 1
  when the policy is no more confident than the reference, growing with the
  excess confidence. ACE's exact ``g`` was not available to us; this family
  and its defaults are our choice."""
  g = 1.0 + alpha * jnp.maximum(c, 0.0) ** power
  return g if cap is None else jnp.minimum(g, cap)


@register("token_weight", "ace", reads=("ref_logprobs",),
          domains={"alpha": at_least(0), "power": above(0),
                   "cap": at_least(1)})
def ace_part(batch: Batch, advantages: Array, *, alpha: float = 0.5,
             power: float = 1.0, cap: float | None = 10.0) -> Array:
  """ACE: negative advantages scaled by ``g(c_i)`` of the confidence shift.

  Rows whose advantage is negative (wrong, or worse than their group) get
  weight ``ace_modulation(confidence_shift(...))``: an error the policy has
  grown more confident in than the reference is pushed down harder. Other
  rows get 1. As a token weight it scales ``A`` for surrogates positively
  homogeneous in ``A`` per token. Inspired by ACE: ``c_i`` is the paper's,
  ``g`` is a documented family of our choice.

  References:
    "Overconfident Errors Need Stronger Correction: Asymmetric Confidence
    Penalties for Reinforcement Learning" (2025).
  """
  c = confidence_shift(batch.logprobs, batch.ref_logprobs, batch.mask)
  g = ace_modulation(c, alpha=alpha, power=power, cap=cap)
  a = jax.lax.stop_gradient(advantages)
  w = jnp.where(a < 0, g[:, None], 1.0)
  return jnp.where(batch.mask > 0, w, 0.0)


def backward_corrected_rewards(observed: Array, *, false_positive: float,
                               false_negative: float) -> Array:
  """``(r~ - rho0) / (1 - rho0 - rho1)`` for a 0/1 verifier that passes a
  wrong answer with probability ``rho0`` (false positive) and fails a right
  one with probability ``rho1`` (false negative): unbiased for the clean
  reward, ``E[r_hat | r] = r``.

  Raises:
    ValueError: unless ``0 <= rho0, rho1`` and ``rho0 + rho1 < 1``.
  """
  r0, r1 = float(false_positive), float(false_negative)
  if not (r0 >= 0 and r1 >= 0 and r0 + r1 < 1):
    raise ValueError(f"false_positive and false_negative must be >= 0 with a"
                     f" sum below 1, got {false_positive!r} and"
                     f" {false_negative!r}.")
  return (observed - r0) / (1.0 - r0 - r1)


@register("transform", "noisy_verifier_correction",
          domains={"false_positive": between(0, 1, high_open=True),
                   "false_negative": between(0, 1, high_open=True)})
def noisy_verifier_correction_part(batch: Batch, *,
                                   false_positive: float = 0.0,
                                   false_negative: float = 0.0) -> Batch:
  """Backward correction of 0/1 rewards from a verifier with known flip
  rates (``backward_corrected_rewards``). The corrected reward is unbiased
  for the clean one, at the price of variance ``1 / (1 - rho0 - rho1)^2``
  times larger. The paper's forward correction is the advantage
  ``noisy_verifier_forward``.

  References:
    "Reinforcement Learning with Verifiable yet Noisy Rewards under
    Imperfect Verifiers" (2025).
  """
  r = scalar_rewards_of(batch, "noisy_verifier_correction")
  new = backward_corrected_rewards(r, false_positive=false_positive,
                                   false_negative=false_negative)
  return batch.replace(rewards=new.astype(r.dtype))


def forward_correction_weights(observed: Array, *,
                               false_negative: float) -> Array:
  """The forward correction's score-function weights of 0/1 rewards:
  ``w = rho1`` where the verifier passed the sample, ``rho1 - 1`` where it
  failed it.

  Under a verifier with false-positive rate ``rho0`` and false-negative rate
  ``rho1``, ``E[w | r = 1] = 0`` and ``E[w | r = 0] = -(1 - rho0 - rho1)``:
  the expected update ``E[w grad log pi(y)]`` is ``(1 - rho0 - rho1) (grad
  J_clean - E[grad log pi]) = (1 - rho0 - rho1) grad J_clean``, the clean
  gradient's direction, whatever ``rho0`` is (it needs only ``rho1``).

  Raises:
    ValueError: unless ``0 <= rho1 < 1``.
  """
  r1 = float(false_negative)
  if not 0.0 <= r1 < 1.0:
    raise ValueError(f"false_negative must lie in [0, 1), got"
                     f" {false_negative!r}.")
  return jnp.where(observed > 0.5, r1, r1 - 1.0).astype(observed.dtype)


@register("advantage", "noisy_verifier_forward",
          domains={"false_negative": between(0, 1, high_open=True)})
def noisy_verifier_forward_part(batch: Batch, *,
                                false_negative: float = 0.0) -> Array:
  """The forward correction of a noisy 0/1 verifier as an advantage: ``A =
  rho1`` on passed samples, ``rho1 - 1`` on failed ones
  (``forward_correction_weights``), on every valid token, with no group
  baseline (a baseline would cancel the correction, which is a constant
  shift of the observed reward). Its expected gradient is the clean
  gradient times ``1 - rho0 - rho1``; it needs only the false-negative rate
  ``rho1``. Inspired by the paper's forward correction: the weights ``w_1 =
  rho1``, ``w_0 = rho1 - 1`` are from a summary of the paper, not its text or
  code, and placing them as a baseline-free advantage is our reading.

  References:
    Cai et al., "Reinforcement Learning with Verifiable yet Noisy Rewards
    under Imperfect Verifiers", arXiv:2510.00915.
  """
  r = scalar_rewards_of(batch, "noisy_verifier_forward")
  return per_token(forward_correction_weights(
      r, false_negative=false_negative), batch.response_mask)


def confidence_weights(confidence: Array, positive: Array, group_ids: Array,
                       num_groups: int, *, coef: float = 1.0,
                       floor: float = 0.5, cap: float = 2.0,
                       valid: Array | None = None,
                       axis_name=None) -> Array:
  """``w_i = clip(1 + coef (mean - c_i), floor, cap)`` on the ``positive``
  rows, ``c_i`` their confidence and ``mean`` the average confidence of the
  positive rows of their group; 1 elsewhere. Less confident correct
  answers weigh more, more confident ones less."""
  if coef < 0 or not 0.0 <= floor <= 1.0 <= cap:
    raise ValueError(f"need coef >= 0 and floor <= 1 <= cap, got coef="
                     f"{coef}, floor={floor}, cap={cap}.")
  ok = positive if valid is None else positive & valid
  w = ok.astype(confidence.dtype)
  total = groups.group_sum(w * confidence, group_ids, num_groups, axis_name)
  count = groups.group_sum(w, group_ids, num_groups, axis_name)
  mean = groups.broadcast(total / jnp.maximum(count, 1.0), group_ids)
  out = jnp.clip(1.0 + coef * (mean - confidence), floor, cap)
  return jnp.where(ok, out, 1.0)


@register("token_weight", "confidence_reweight",
          domains={"coef": at_least(0), "floor": between(0, 1),
                   "cap": at_least(1)})
def confidence_reweight_part(batch: Batch, advantages: Array, *,
                             coef: float = 1.0, floor: float = 0.5,
                             cap: float = 2.0, axis_name=None) -> Array:
  """ProGRPO-style reweighting of positive advantages by confidence: rows
  with ``A > 0`` get ``confidence_weights`` of their mean token log-prob
  under the behaviour policy (``c_i = mean_t log pi_old``, relative to the
  group's other positive rows), so that correct answers the policy already
  finds likely are reinforced less and unlikely correct ones more; other
  rows get 1. Inspired by ProGRPO (ARM): its weight also reads the prompt's
  perplexity, which the batch does not carry, and its exact form was not
  available to us; the linear, clipped family and its defaults are ours.

  References:
    "Back to Basics: Revisiting Exploration in Reinforcement Learning for
    LLM Reasoning via Generative Probabilities" (2025).
  """
  mask = batch.mask
  c = jax.lax.stop_gradient(sequence_mean(behaviour_logprobs(batch),
                                          mask)[:, 0])
  positive = jnp.sum(jax.lax.stop_gradient(advantages) * mask, axis=1) > 0
  valid = valid_rows(mask)
  w = confidence_weights(c, positive, batch.group_ids, batch.groups,
                         coef=coef, floor=floor, cap=cap, valid=valid,
                         axis_name=axis_name)
  return jnp.where(mask > 0, w[:, None], 0.0)
