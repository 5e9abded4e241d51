"""Confidence-aware corrections: ACE's confidence shift on negative
advantages, and the backward correction of a noisy binary verifier.

References:
  "Overconfident Errors Need Stronger Correction: Asymmetric Confidence
  Penalties for Reinforcement Learning" (2025) (ACE).
  "Reinforcement Learning with Verifiable yet Noisy Rewards under Imperfect
  Verifiers" (2025) (backward correction).
  Natarajan et al., "Learning with Noisy Labels" (2013) (the unbiased
  estimator under class-conditional flips).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from divrl.registry import register
from divrl.types import Batch, scalar_rewards_of

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


@register("token_weight", "ace", reads=("ref_logprobs",))
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


@register("transform", "noisy_verifier_correction")
def noisy_verifier_correction_part(batch: Batch, *,
                                   false_positive: float = 0.0,
                                   false_negative: float = 0.0) -> Batch:
  """Backward correction of 0/1 rewards from a verifier with known flip
  rates (``backward_corrected_rewards``). The corrected reward is unbiased
  for the clean one, at the price of variance ``1 / (1 - rho0 - rho1)^2``
  times larger. The paper's forward correction (a reweighting of the
  score-function terms from the false-negative rate) is not implemented: its
  form was not available to us (see docs/catalog.md).

  References:
    "Reinforcement Learning with Verifiable yet Noisy Rewards under
    Imperfect Verifiers" (2025).
  """
  r = scalar_rewards_of(batch, "noisy_verifier_correction")
  new = backward_corrected_rewards(r, false_positive=false_positive,
                                   false_negative=false_negative)
  return batch.replace(rewards=new.astype(r.dtype))
