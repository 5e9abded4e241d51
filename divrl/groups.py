"""Group statistics over ragged groups given by integer ids.

Every function takes a static ``num_groups`` and an optional ``axis_name``.
Under ``jax.jit`` with a sharded batch the reductions are global already;
inside ``shard_map`` pass the mesh axis the batch is split on, and the
per-group sums are ``psum``-ed so every shard sees whole-group statistics
(group ids must then be global ids).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _psum(x: Array, axis_name: str | tuple[str, ...] | None) -> Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def group_sum(x: Array, group_ids: Array, num_groups: int,
              axis_name=None) -> Array:
  """Per-group sums ``[num_groups, ...]`` of ``x [B, ...]``."""
  s = jax.ops.segment_sum(x, group_ids, num_segments=num_groups)
  return _psum(s, axis_name)


def group_min(x: Array, group_ids: Array, num_groups: int,
              axis_name=None) -> Array:
  """Per-group minima ``[num_groups]`` (``+inf`` for empty groups)."""
  m = jax.ops.segment_min(x, group_ids, num_segments=num_groups)
  return m if axis_name is None else jax.lax.pmin(m, axis_name)


def group_max(x: Array, group_ids: Array, num_groups: int,
              axis_name=None) -> Array:
  """Per-group maxima ``[num_groups]`` (``-inf`` for empty groups)."""
  m = jax.ops.segment_max(x, group_ids, num_segments=num_groups)
  return m if axis_name is None else jax.lax.pmax(m, axis_name)


def group_count(group_ids: Array, num_groups: int, axis_name=None,
                weights: Array | None = None) -> Array:
  """Per-group sample counts ``[num_groups]`` (or weight sums)."""
  w = jnp.ones(group_ids.shape, jnp.float32) if weights is None else weights
  return group_sum(w.astype(jnp.float32), group_ids, num_groups, axis_name)


def broadcast(per_group: Array, group_ids: Array) -> Array:
  """Gathers per-group values back to samples: ``[num_groups] -> [B]``."""
  return per_group[group_ids]


def group_moments(x: Array, group_ids: Array, num_groups: int, *,
                  ddof: int = 0, axis_name=None):
  """Per-sample group mean, variance and group size of ``x [B]``.

  The variance is ``sum((x - mean)^2) / (n - ddof)``, computed in two passes
  on data shifted by the group minimum, so that a group of equal values has
  exactly zero deviations and variance. Where ``n - ddof <= 0`` the variance
  is 0; callers decide what singleton groups get.

  Returns:
    ``(mean [B], var [B], n [B])``, each gathered back to the samples.
  """
  n = group_count(group_ids, num_groups, axis_name)
  shift = broadcast(group_min(x, group_ids, num_groups, axis_name), group_ids)
  xs = x - shift
  mean_s = group_sum(xs, group_ids, num_groups, axis_name) / jnp.maximum(n, 1.0)
  dev = xs - broadcast(mean_s, group_ids)
  mean = broadcast(mean_s, group_ids) + shift
  ss = group_sum(dev * dev, group_ids, num_groups, axis_name)
  dof = n - ddof
  var = jnp.where(dof > 0, ss / jnp.where(dof > 0, dof, 1.0), 0.0)
  return mean, broadcast(var, group_ids), broadcast(n, group_ids)


def batch_moments(x: Array, *, weights: Array | None = None, ddof: int = 0,
                  axis_name=None):
  """Mean and variance of ``x`` over the whole (possibly sharded) batch.

  ``weights`` (same shape as ``x``) select or weight the entries, e.g. a token
  mask. The variance divides by ``sum(weights) - ddof``.
  """
  w = jnp.ones_like(x) if weights is None else weights.astype(x.dtype)
  n = _psum(jnp.sum(w), axis_name)
  mean = _psum(jnp.sum(w * x), axis_name) / jnp.maximum(n, 1.0)
  ss = _psum(jnp.sum(w * (x - mean) ** 2), axis_name)
  dof = n - ddof
  var = jnp.where(dof > 0, ss / jnp.where(dof > 0, dof, 1.0), 0.0)
  return mean, var
