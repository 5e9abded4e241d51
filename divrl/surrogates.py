"""Per-token policy-gradient surrogates.

A surrogate maps per-token log-probs, behaviour log-probs and advantages
``[B,T]`` to a per-token loss ``[B,T]`` (to be minimised), plus per-token
diagnostics. Aggregation over tokens and sequences is a separate step
(``divrl.aggregation``).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl.registry import register
from divrl.types import Batch

Array = jax.Array


def log_ratio(logprobs: Array, old_logprobs: Array,
              clip: float | None = 20.0) -> Array:
  """``log pi - log pi_old``, optionally clamped to ``[-clip, clip]``.

  verl clamps at 20 before ``exp`` in most losses; TRL does not clamp. The
  clamp keeps ``exp`` finite for extreme gaps and zeroes the gradient
  beyond it.
  """
  d = logprobs - old_logprobs
  return d if clip is None else jnp.clip(d, -clip, clip)


def ppo_clip(logprobs: Array, old_logprobs: Array, advantages: Array, *,
             eps_low: float = 0.2, eps_high: float = 0.2,
             log_ratio_clip: float | None = 20.0):
  """PPO clipped surrogate with asymmetric bounds (clip-higher).

  ``L = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))`` with
  ``rho = exp(log pi - log pi_old)``. At ``rho = 1`` (on-policy) its gradient
  is ``-A grad log pi``, the REINFORCE gradient with baseline-corrected
  advantage.

  References:
    Schulman et al., "Proximal Policy Optimization Algorithms",
    arXiv:1707.06347.
    Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at
    Scale", arXiv:2503.14476 (decoupled ``eps_low`` / ``eps_high``).

  Args:
    logprobs: ``[B,T]`` current log-probs (differentiable).
    old_logprobs: ``[B,T]`` behaviour log-probs (treated as constants).
    advantages: ``[B,T]`` advantages (treated as constants).
    eps_low: lower clip range, ``rho >= 1 - eps_low``.
    eps_high: upper clip range, ``rho <= 1 + eps_high``.
    log_ratio_clip: clamp of the log-ratio before ``exp``; ``None`` disables.

  Returns:
    ``(loss [B,T], {"clipfrac": [B,T], "ratio": [B,T]})``.
  """
  chex.assert_rank([logprobs, old_logprobs, advantages], 2)
  chex.assert_equal_shape([logprobs, old_logprobs, advantages])
  if eps_low < 0 or eps_high < 0:
    raise ValueError(f"eps_low and eps_high must be >= 0, got {eps_low},"
                     f" {eps_high}.")
  old = jax.lax.stop_gradient(old_logprobs)
  adv = jax.lax.stop_gradient(advantages)
  rho = jnp.exp(log_ratio(logprobs, old, log_ratio_clip))
  unclipped = -adv * rho
  clipped = -adv * jnp.clip(rho, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(unclipped, clipped)
  clipfrac = (clipped > unclipped).astype(jnp.float32)
  return loss, {"clipfrac": clipfrac, "ratio": jax.lax.stop_gradient(rho)}


def behaviour_logprobs(batch: Batch) -> Array:
  """``batch.old_logprobs``, or ``stop_gradient(logprobs)`` when on-policy."""
  if batch.old_logprobs is None:
    return jax.lax.stop_gradient(batch.logprobs)
  return batch.old_logprobs


@register("surrogate", "ppo_clip")
def ppo_clip_part(batch: Batch, advantages: Array, *, eps_low: float = 0.2,
                  eps_high: float = 0.2,
                  log_ratio_clip: float | None = 20.0):
  """PPO clip against ``pi_old``; see ``ppo_clip``."""
  return ppo_clip(batch.logprobs, behaviour_logprobs(batch), advantages,
                  eps_low=eps_low, eps_high=eps_high,
                  log_ratio_clip=log_ratio_clip)
