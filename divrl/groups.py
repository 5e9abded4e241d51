"""Group statistics over ragged groups given by integer ids.

The one home of divrl's group math: sums, counts, extrema, moments,
log-sum-exp, ranks with ties, and quantiles (per group, or of the valid
entries of a whole batch). Every group function takes a static
``num_groups`` and an optional ``axis_name``.
Under ``jax.jit`` with a sharded batch the reductions are global already;
inside ``shard_map`` pass the mesh axis the batch is split on, and the
per-group sums are ``psum``-ed so every shard sees whole-group statistics
(group ids must then be global ids).
"""

from __future__ import annotations

import fractions

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def psum(x: Array, axis_name: str | tuple[str, ...] | None) -> Array:
  """``x`` summed over the devices of ``axis_name`` (``x`` when None)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def group_sum(x: Array, group_ids: Array, num_groups: int,
              axis_name=None) -> Array:
  """Per-group sums ``[num_groups, ...]`` of ``x [B, ...]``."""
  s = jax.ops.segment_sum(x, group_ids, num_segments=num_groups)
  return psum(s, axis_name)


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


def group_pass_rate(rewards: Array, group_ids: Array, num_groups: int, *,
                    valid: Array | None = None, axis_name=None) -> Array:
  """Per group ``[num_groups]``, the share of its ``valid`` rows (all rows
  when None) with reward ``> 0``; 0 for a group without valid rows. A
  float32 ``k / n``, so it equals a float32 threshold written as the same
  fraction."""
  ok = (jnp.ones(rewards.shape, bool) if valid is None
        else valid.astype(bool))
  hits = group_sum(((rewards > 0) & ok).astype(jnp.float32), group_ids,
                   num_groups, axis_name)
  count = group_count(group_ids, num_groups, axis_name, weights=ok)
  return hits / jnp.maximum(count, 1.0)


def valid_group_stats(x: Array, valid: Array, group_ids: Array,
                      num_groups: int, axis_name=None):
  """Per group (``[num_groups]``) the count, mean and unbiased std of ``x``
  over the ``valid`` rows (std 0 below two rows), and per row the deviation
  from its group's mean (0 on invalid rows). Shifted by the group minimum,
  so that an all-equal group has exactly zero deviations and std."""
  v = valid.astype(x.dtype)
  n = group_sum(v, group_ids, num_groups, axis_name)
  lo = group_min(jnp.where(valid, x, jnp.inf), group_ids, num_groups,
                 axis_name)
  lo = jnp.where(n > 0, lo, 0.0)
  xs = jnp.where(valid, x - lo[group_ids], 0.0)
  mean_s = group_sum(xs, group_ids, num_groups, axis_name) / jnp.maximum(
      n, 1.0)
  dev = jnp.where(valid, xs - mean_s[group_ids], 0.0)
  ss = group_sum(dev * dev, group_ids, num_groups, axis_name)
  std = jnp.sqrt(jnp.where(n > 1, ss / jnp.maximum(n - 1.0, 1.0), 0.0))
  return n, mean_s + lo, std, dev


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
  n = psum(jnp.sum(w), axis_name)
  mean = psum(jnp.sum(w * x), axis_name) / jnp.maximum(n, 1.0)
  ss = psum(jnp.sum(w * (x - mean) ** 2), axis_name)
  dof = n - ddof
  var = jnp.where(dof > 0, ss / jnp.where(dof > 0, dof, 1.0), 0.0)
  return mean, var


def all_gather(x: Array, axis_name=None) -> Array:
  """``x`` concatenated over the devices of ``axis_name`` (leading axis,
  device order); ``x`` itself when ``axis_name`` is None."""
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def global_index(batch_size: int, axis_name=None) -> Array:
  """``[B]`` int32 position of each local row in the global batch.

  Inside ``shard_map`` the batch is split into contiguous blocks over
  ``axis_name``, so the global index is ``axis_index * B_local + i``.
  """
  index = jnp.arange(batch_size, dtype=jnp.int32)
  if axis_name is not None:
    index = index + jax.lax.axis_index(axis_name).astype(jnp.int32) * (
        batch_size)
  return index


def group_logsumexp(x: Array, group_ids: Array, num_groups: int,
                    axis_name=None) -> Array:
  """Per-group ``log sum_j exp(x_j)`` ``[num_groups]`` (``-inf`` if empty).

  Stable: the group maximum is subtracted before ``exp``.
  """
  m = group_max(x, group_ids, num_groups, axis_name)
  safe = jnp.where(jnp.isfinite(m), m, 0.0)
  s = group_sum(jnp.exp(x - broadcast(safe, group_ids)), group_ids,
                num_groups, axis_name)
  return jnp.where(s > 0, jnp.log(jnp.where(s > 0, s, 1.0)) + safe, -jnp.inf)


RANK_TIES = ("ordinal", "average", "min", "max")


def group_ranks(x: Array, group_ids: Array, num_groups: int, *,
                ties: str = "ordinal", valid: Array | None = None,
                axis_name=None) -> tuple[Array, Array]:
  """Ascending 0-based ranks of ``x [B]`` within each group, and group sizes.

  With ``L_i = #{j in g(i) : x_j < x_i}`` and ``E_i = #{j in g(i) : x_j =
  x_i}`` (``i`` included) over the *valid* members of the group:

  * ``ties="ordinal"``: ``L_i`` plus the number of equal members with a
    lower global batch index (a permutation of ``0..n_g-1``);
  * ``"average"``: the midrank ``L_i + (E_i - 1) / 2`` (SciPy's ``rankdata``
    minus 1);
  * ``"min"``: ``L_i``; ``"max"``: ``L_i + E_i - 1``.

  ``valid [B]`` bool excludes rows (e.g. empty responses) from every other
  row's rank and from the group size; an excluded row gets rank 0. Inside
  ``shard_map`` pass ``axis_name``: values and ids are all-gathered over it
  (a rank needs every member of the group), so memory is ``O(B_local *
  B_global)``.

  Returns:
    ``(rank [B] float32, size [B] float32)``: the rank, and the number of
    valid members of the row's group.
  """
  chex.assert_rank([x, group_ids], 1)
  chex.assert_equal_shape([x, group_ids])
  if ties not in RANK_TIES:
    raise ValueError(f"ties must be one of {RANK_TIES}, got {ties!r}.")
  b = x.shape[0]
  ok = jnp.ones((b,), bool) if valid is None else valid.astype(bool)
  chex.assert_shape(ok, (b,))
  idx = global_index(b, axis_name)
  all_x, all_ids = all_gather(x, axis_name), all_gather(group_ids, axis_name)
  all_ok, all_idx = all_gather(ok, axis_name), all_gather(idx, axis_name)
  peer = (group_ids[:, None] == all_ids[None, :]) & all_ok[None, :]
  lower = jnp.sum(peer & (all_x[None, :] < x[:, None]), axis=1)
  same = peer & (all_x[None, :] == x[:, None])
  equal = jnp.sum(same, axis=1)
  if ties == "ordinal":
    rank = lower + jnp.sum(same & (all_idx[None, :] < idx[:, None]), axis=1)
  elif ties == "min":
    rank = lower
  elif ties == "max":
    rank = lower + jnp.maximum(equal - 1, 0)
  else:
    rank = lower + jnp.maximum(equal - 1, 0) / 2.0
  size = broadcast(group_count(group_ids, num_groups, axis_name,
                               weights=ok.astype(jnp.float32)), group_ids)
  return jnp.where(ok, rank, 0).astype(jnp.float32), size


# Quantile levels that are fractions with a denominator up to this bound get
# an exact (integer arithmetic) virtual index; see ``quantile_index``.
_MAX_DENOMINATOR = 32768
# Fallback only: float32 virtual indices this close to an integer are snapped.
_SNAP = 1e-6


def quantile_index(q: float, n: Array):
  """NumPy's virtual index ``p = q (n - 1)`` as ``(floor(p), p - floor(p))``.

  When ``q`` is (within 1e-12) a fraction ``a / d`` with ``d <= 32768``, e.g.
  every level with up to four decimals, ``p`` is computed exactly in int32
  arithmetic (``n - 1 = A d + b``, ``p = a A + (a b) / d``), so an integral
  ``p`` is recognised for any sample size. Otherwise ``p`` is computed in
  float32 and snapped to an integer within a relative 1e-6 (exact only for
  small ``n``). NumPy computes ``p`` in float64; where that rounds an exactly
  integral ``p`` by an ulp the linear interpolation returns the order
  statistic up to a last-bit difference, which this matches.

  Args:
    q: the level, a Python float in ``[0, 1]``.
    n: int array of sample counts (any shape).

  Returns:
    ``(lo int32, frac float32)`` with ``0 <= frac < 1``, shaped like ``n``.
  """
  n1 = jnp.maximum(n - 1, 0).astype(jnp.int32)
  frac_q = fractions.Fraction(q).limit_denominator(_MAX_DENOMINATOR)
  if abs(float(frac_q) - q) <= 1e-12:
    num, den = frac_q.numerator, frac_q.denominator
    a, b = n1 // den, n1 % den
    nb = num * b
    lo = num * a + nb // den
    frac = (nb % den).astype(jnp.float32) / float(den)
    return lo.astype(jnp.int32), frac
  p = jnp.asarray(q, jnp.float32) * n1.astype(jnp.float32)
  r = jnp.round(p)
  p = jnp.where(jnp.abs(p - r) <= _SNAP * jnp.maximum(p, 1.0), r, p)
  lo = jnp.floor(p)
  return lo.astype(jnp.int32), (p - lo).astype(jnp.float32)


def sorted_valid(values: Array, valid: Array):
  """``(sorted values with invalid ones last as +inf, number valid)``."""
  flat = values.reshape(-1).astype(jnp.float32)
  ok = valid.reshape(-1)
  n = jnp.sum(ok.astype(jnp.int32))
  s = jnp.sort(jnp.where(ok, flat, jnp.inf))
  return s, n


def _interpolate(v_lo: Array, v_hi: Array, f: Array) -> Array:
  """NumPy's two-sided linear interpolation between order statistics."""
  diff = v_hi - v_lo
  interp = jnp.where(f < 0.5, v_lo + diff * f, v_hi - diff * (1.0 - f))
  return jnp.where(f > 0, jnp.clip(interp, v_lo, v_hi), v_lo)


def masked_quantile(values: Array, valid: Array, q: float) -> Array:
  """The ``q``-quantile of ``values[valid]``, linear interpolation.

  The convention is NumPy's default (``method="linear"``, type 7 of Hyndman
  and Fan): with the ``n`` valid values sorted as ``v_0 <= ... <= v_{n-1}``
  and the virtual index ``p = q (n - 1)``, the quantile is ``v_lo + (p - lo)
  (v_hi - v_lo)`` with ``lo = floor(p)``, ``hi = ceil(p)``. ``p`` is computed
  exactly for the usual levels (see ``quantile_index``), and the
  interpolation uses NumPy's two-sided form (``v_hi - (1 - f) (v_hi - v_lo)``
  for ``f >= 0.5``). Returns NaN when no value is valid. Jit-able; ``n`` may
  be traced.
  """
  chex.assert_equal_shape([values, valid])
  s, n = sorted_valid(values, valid)
  lo, f = quantile_index(q, n)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  return jnp.where(n > 0, _interpolate(s[lo], s[hi], f), jnp.nan)


def group_quantile(x: Array, group_ids: Array, num_groups: int, q: float, *,
                   valid: Array | None = None, axis_name=None) -> Array:
  """Per-group ``q``-quantile of ``x [B]``, ``[num_groups]`` (NaN if empty).

  The convention of ``masked_quantile`` (NumPy's ``method="linear"``) within
  each group's valid members. Rows are sorted by ``(group, value)`` once;
  inside ``shard_map`` they are all-gathered over ``axis_name`` first.
  """
  chex.assert_rank([x, group_ids], 1)
  chex.assert_equal_shape([x, group_ids])
  ok = (jnp.ones(x.shape, bool) if valid is None else valid.astype(bool))
  all_x = all_gather(x, axis_name).astype(jnp.float32)
  all_ids = all_gather(group_ids, axis_name)
  all_ok = all_gather(ok, axis_name)
  # Invalid rows sort to the end of their group (+inf) and are not counted.
  order = jnp.lexsort((jnp.where(all_ok, all_x, jnp.inf), all_ids))
  s = jnp.where(all_ok, all_x, jnp.inf)[order]
  n = jax.ops.segment_sum(all_ok.astype(jnp.int32), all_ids,
                          num_segments=num_groups)
  size = jax.ops.segment_sum(jnp.ones_like(all_ids), all_ids,
                             num_segments=num_groups)
  start = jnp.cumsum(size) - size
  lo, f = quantile_index(q, n)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  last = s.shape[0] - 1
  v_lo = s[jnp.clip(start + lo, 0, last)]
  v_hi = s[jnp.clip(start + hi, 0, last)]
  return jnp.where(n > 0, _interpolate(v_lo, v_hi, f), jnp.nan)


def segment_cumsum(x: Array, starts: Array) -> Array:
  """Inclusive cumulative sum of ``x [N]`` that restarts where ``starts
  [N]`` (bool) is True. Each segment is summed on its own (no cross-segment
  rounding)."""
  chex.assert_equal_shape([x, starts])

  def op(a, b):
    va, fa = a
    vb, fb = b
    return jnp.where(fb, vb, va + vb), fa | fb

  out, _ = jax.lax.associative_scan(op, (x, starts))
  return out
