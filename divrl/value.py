"""Critic loss for GAE-based PPO, and the ``"value_loss"`` regularizer.

References:
  Schulman et al., "Proximal Policy Optimization Algorithms",
  arXiv:1707.06347 (clipped value objective as used in the OpenAI baselines).
  verl's critic uses the same form, aggregated with the actor's mode.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl.advantages import gae, scalar_rewards, token_rewards_of
from divrl.registry import above, at_least, between, defaults_from, register
from divrl.types import Batch

Array = jax.Array


def clipped_value_loss(values: Array, old_values: Array, returns: Array, *,
                       clip: float | None = 0.5):
  """Per-token ``0.5 * max((V - G)^2, (V_clip - G)^2)``.

  ``V_clip = old_V + clip(V - old_V, -clip, clip)``; ``clip=None`` gives the
  plain squared error ``0.5 (V - G)^2``. Aggregate the result with any mode
  of ``divrl.aggregation`` (verl uses the actor's ``loss_agg_mode``).

  Args:
    values: ``[B,T]`` predicted values (differentiable).
    old_values: ``[B,T]`` values at rollout time (constants).
    returns: ``[B,T]`` value targets, e.g. ``divrl.advantages.gae``'s
      returns (constants).
    clip: clip range ``c`` (verl ``cliprange_value`` 0.5, tunix 0.2).

  Returns:
    ``(loss [B,T], {"clipfrac": [B,T]})``.
  """
  chex.assert_rank([values, old_values, returns], 2)
  chex.assert_equal_shape([values, old_values, returns])
  old = jax.lax.stop_gradient(old_values)
  target = jax.lax.stop_gradient(returns)
  err = (values - target) ** 2
  if clip is None:
    return 0.5 * err, {"clipfrac": jnp.zeros_like(err)}
  if clip <= 0:
    raise ValueError(f"clip must be > 0 or None, got {clip}.")
  clipped = old + jnp.clip(values - old, -clip, clip)
  err_clipped = (clipped - target) ** 2
  return 0.5 * jnp.maximum(err, err_clipped), {
      "clipfrac": (err_clipped > err).astype(jnp.float32)}


@register("regularizer", "value_loss", reads=("values", "old_values"),
          domains={"clip": above(0), "gamma": between(0, 1),
                   "lam": between(0, 1), "coef": at_least(0)})
@defaults_from(clipped_value_loss, gae, scalar_rewards)
def value_loss_part(batch: Batch, *, clip, gamma, lam,
                    reward_weights) -> Array:
  """The critic's clipped value loss against GAE returns, as a regularizer.

  ``returns = gae(R, V_old).returns``, computed from the rollout-time values
  ``Batch.old_values`` (constants), and ``clipped_value_loss(V, V_old,
  returns)`` with the current values ``Batch.values``. Give ``gamma`` and
  ``lam`` the values of the ``"gae"`` advantage. Its ``coef`` is PPO's value
  coefficient (``c_1`` of Schulman et al., 2017). With divrl's critic, a
  linear head on the policy's trunk (``DecoderConfig.value_head``), the
  value loss also shapes the shared layers.
  """
  _, returns = gae(token_rewards_of(batch, reward_weights), batch.old_values,
                   batch.response_mask, gamma=gamma, lam=lam)
  loss, _ = clipped_value_loss(batch.values, batch.old_values, returns,
                               clip=clip)
  return loss
