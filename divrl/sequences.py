"""Masked reductions over the tokens of each sequence.

Every function here takes a ``[B,T]`` response mask whose positive entries
mark the valid tokens of each row. Values at other positions (padding, or
observation tokens inside a multi-turn response) are selected away with
``where`` before any arithmetic, so garbage there, including inf and NaN,
reaches neither a value nor a gradient. A row without valid tokens gives 0.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def valid(mask: Array) -> Array:
  """``[B,T]`` bool: the valid tokens (``mask > 0``)."""
  return mask > 0


def valid_rows(mask: Array) -> Array:
  """``[B]`` bool: rows with at least one valid token."""
  chex.assert_rank(mask, 2)
  return jnp.any(valid(mask), axis=1)


def sequence_sum(x: Array, mask: Array) -> Array:
  """``sum_t x_it`` over the valid tokens of each row, ``[B,1]``."""
  chex.assert_equal_shape([x, mask])
  return jnp.sum(jnp.where(valid(mask), x, 0.0), axis=-1, keepdims=True)


def sequence_lengths(mask: Array, dtype=jnp.float32) -> Array:
  """``|y_i| = #{t : m_it > 0}``, ``[B]`` in ``dtype``."""
  chex.assert_rank(mask, 2)
  return jnp.sum(valid(mask), axis=-1).astype(dtype)


def sequence_mean(x: Array, mask: Array) -> Array:
  """Mean of ``x`` over the valid tokens of each row, ``[B,1]`` (0 if none)."""
  n = sequence_lengths(mask, x.dtype)[:, None]
  return sequence_sum(x, mask) / jnp.maximum(n, 1.0)


def per_token(values: Array, mask: Array) -> Array:
  """Sequence values ``[B]`` on every token, times the mask: ``[B,T]``."""
  chex.assert_rank([values, mask], [1, 2])
  chex.assert_equal_shape_prefix([values, mask], 1)
  return jnp.where(valid(mask), values[:, None], 0.0) * mask.astype(
      values.dtype)


def on_last_token(values: Array, mask: Array) -> Array:
  """Sequence values ``[B]`` on the last valid token of each row: ``[B,T]``.

  The last valid token is the last position with ``mask > 0``; a row
  without valid tokens gets zeros. This is how token-level estimators read a
  scalar outcome reward when ``Batch.token_rewards`` is absent.
  """
  chex.assert_rank([values, mask], [1, 2])
  chex.assert_equal_shape_prefix([values, mask], 1)
  t = mask.shape[1]
  v = valid(mask)
  last = t - 1 - jnp.argmax(v[:, ::-1], axis=1)
  onehot = (jnp.arange(t)[None, :] == last[:, None]) & jnp.any(
      v, axis=1, keepdims=True)
  return jnp.where(onehot, values[:, None], jnp.zeros((), values.dtype))


def pooled_mean(x: Array, mask: Array) -> Array:
  """Mean of features ``x [B,T,D]`` over the valid tokens: ``[B,D]``."""
  chex.assert_rank([x, mask], [3, 2])
  chex.assert_equal_shape_prefix([x, mask], 2)
  v = valid(mask)
  n = jnp.sum(v, axis=1, keepdims=True).astype(x.dtype)
  return jnp.sum(jnp.where(v[..., None], x, 0.0), axis=1) / jnp.maximum(n,
                                                                         1.0)
