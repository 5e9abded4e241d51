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
============  ==========================  ===================================

The expectations are over ``y ~ pi`` with the sample held fixed, per token:
for sequences the k2 and k3 rows give the sum over positions of the gradient
of the per-position conditional divergence, with the prefix distribution not
differentiated. The full sequence-level KL gradient also has a term through
the prefix distribution; a loss-placed per-token estimator does not give it
(KL in the reward does). All of this is checked by exact enumeration in
``tests/test_expected_gradients.py``.

References:
  Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/
  kl-approx.html (k1, k2, k3).
  Shao et al., arXiv:2402.03300 (k3 in the GRPO loss).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl.registry import register
from divrl.types import Batch

Array = jax.Array

ESTIMATORS = ("k1", "abs", "k2", "k3")


def _base_estimate(u: Array, estimator: str) -> Array:
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
                estimator: str = "k3", *,
                log_ratio_clip: float | None = None) -> Array:
  """Per-token sampled KL estimate ``[B,T]`` (see the module table).

  Args:
    logprobs: ``[B,T]`` policy log-probs (differentiable).
    ref_logprobs: ``[B,T]`` reference log-probs (constants).
    estimator: ``"k1"``, ``"abs"``, ``"k2"``, ``"k3"``, or any of them with a
      ``"+"`` suffix for the straight-through form: value of the base
      estimator, gradient of ``k2`` (``k2 - sg(k2) + sg(k)``).
    log_ratio_clip: optional clamp of ``u`` (verl clamps k3's ``-u`` at 20).

  Returns:
    ``[B,T]`` estimates.
  """
  chex.assert_equal_shape([logprobs, ref_logprobs])
  u = logprobs - jax.lax.stop_gradient(ref_logprobs)
  if log_ratio_clip is not None:
    u = jnp.clip(u, -log_ratio_clip, log_ratio_clip)
  if estimator.endswith("+"):
    value = _base_estimate(u, estimator[:-1])
    k2 = _base_estimate(u, "k2")
    return k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(value)
  return _base_estimate(u, estimator)


@register("regularizer", "kl")
def kl_part(batch: Batch, *, estimator: str = "k3",
            log_ratio_clip: float | None = None) -> Array:
  """KL to the reference placed in the loss; needs ``batch.ref_logprobs``."""
  if batch.ref_logprobs is None:
    raise ValueError("the 'kl' regularizer needs Batch.ref_logprobs, which is"
                     " None.")
  return kl_estimate(batch.logprobs, batch.ref_logprobs, estimator,
                     log_ratio_clip=log_ratio_clip)
