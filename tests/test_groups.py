"""Tests for divrl.groups: ranks, quantiles and log-sum-exp over ragged
groups, against loop-based NumPy references, with ties, empty groups,
excluded rows and sharding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from divrl import groups
from divrl.sharding import make_mesh
from tests.conftest import _np, _with_extras
from tests.references import groups as ref


def _ragged(seed, b=24, num_groups=5, ties=True):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, num_groups - 1, b)   # the last group stays empty
  x = (rng.integers(0, 4, b).astype(np.float64) if ties
       else rng.normal(size=b))
  valid = rng.random(b) > 0.2
  return x, ids.astype(np.int32), valid


@pytest.mark.parametrize("ties", groups.RANK_TIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_ranks_match_reference(ties, seed):
  x, ids, valid = _ragged(seed)
  for v in (None, valid):
    rank, size = groups.group_ranks(jnp.asarray(x, jnp.float32),
                                    jnp.asarray(ids), 5, ties=ties,
                                    valid=None if v is None else jnp.asarray(v))
    want_rank, want_size = ref.group_ranks(x, ids, ties, v)
    np.testing.assert_array_equal(np.asarray(rank), want_rank)
    np.testing.assert_array_equal(np.asarray(size), want_size)


def test_ordinal_ranks_are_a_permutation_and_ties_follow_index():
  scores = jnp.asarray([0.5, 0.5, -1.0, 2.0, 0.5, 0.0])
  gid = jnp.asarray([0, 0, 0, 1, 1, 1])
  rank, size = groups.group_ranks(scores, gid, 2)
  np.testing.assert_array_equal(rank, [1, 2, 0, 2, 1, 0])
  np.testing.assert_array_equal(size, 3)


def test_average_ranks_are_midranks():
  x = jnp.asarray([3.0, 1.0, 1.0, 1.0, 7.0])
  rank, _ = groups.group_ranks(x, jnp.zeros(5, jnp.int32), 1, ties="average")
  np.testing.assert_array_equal(rank, [3.0, 1.0, 1.0, 1.0, 4.0])


def test_ranks_are_permutation_equivariant():
  x, ids, _ = _ragged(3)
  perm = np.random.default_rng(0).permutation(len(x))
  rank, _ = groups.group_ranks(jnp.asarray(x), jnp.asarray(ids), 5,
                               ties="average")
  prank, _ = groups.group_ranks(jnp.asarray(x[perm]), jnp.asarray(ids[perm]),
                                5, ties="average")
  np.testing.assert_array_equal(np.asarray(rank)[perm], prank)


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0, 1.0 / 3.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_group_quantile_matches_numpy(q, seed):
  x, ids, valid = _ragged(seed, ties=False)
  for v in (None, valid):
    got = groups.group_quantile(jnp.asarray(x, jnp.float32), jnp.asarray(ids),
                                5, q, valid=None if v is None else
                                jnp.asarray(v))
    want = ref.group_quantile(x.astype(np.float32), ids, 5, q, v)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)
    assert np.isnan(np.asarray(got)[4])  # the empty group


def test_masked_quantile_is_numpy_linear():
  batch = _with_extras(7, ties=False)
  m = np.asarray(batch.response_mask)
  vals = _np(batch.entropy)[m]
  for q in [0.0, 0.1, 0.37, 0.5, 0.8, 1.0]:
    got = groups.masked_quantile(batch.entropy, batch.response_mask > 0, q)
    np.testing.assert_allclose(got, np.quantile(vals, q), rtol=1e-6)


def test_group_logsumexp_matches_reference_and_is_stable():
  x, ids, _ = _ragged(4, ties=False)
  got = groups.group_logsumexp(jnp.asarray(x * 300, jnp.float32),
                               jnp.asarray(ids), 5)
  want = ref.group_logsumexp((x * 300).astype(np.float32), ids, 5)
  np.testing.assert_allclose(np.asarray(got)[:4], want[:4], rtol=1e-6)
  assert np.asarray(got)[4] == -np.inf


def test_bad_ties_is_named():
  with pytest.raises(ValueError, match="ties"):
    groups.group_ranks(jnp.zeros(3), jnp.zeros(3, jnp.int32), 1, ties="dense")


@pytest.fixture(scope="module")
def mesh():
  return make_mesh((8,), ("data",))


def test_ranks_quantiles_and_logsumexp_shard_map_equal_one_device(mesh):
  x, ids, valid = _ragged(5, b=24, ties=True)
  args = (jnp.asarray(x, jnp.float32), jnp.asarray(ids), jnp.asarray(valid))

  def f(x, ids, v, axis_name=None):
    rank, size = groups.group_ranks(x, ids, 5, ties="average", valid=v,
                                    axis_name=axis_name)
    # Per-row views of the per-group results (the all-gathered quantile is
    # typed as varying over the axis, though every device holds the same).
    q = groups.group_quantile(x, ids, 5, 0.3, valid=v, axis_name=axis_name)
    lse = groups.group_logsumexp(x, ids, 5, axis_name=axis_name)
    return rank, size, q[ids], lse[ids]

  want = f(*args)
  sharded = jax.shard_map(functools.partial(f, axis_name="data"), mesh=mesh,
                          in_specs=(P("data"),) * 3,
                          out_specs=(P("data"),) * 4)
  got = jax.jit(sharded)(*args)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6)


def test_segment_cumsum_restarts_at_each_segment():
  x = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
  starts = jnp.asarray([True, False, True, False, False, True])
  np.testing.assert_array_equal(groups.segment_cumsum(x, starts),
                                [1.0, 3.0, 3.0, 7.0, 12.0, 6.0])


def test_group_pass_rate_counts_valid_rows_with_positive_reward():
  r = jnp.asarray([1.0, 0.0, 2.0, -1.0, 0.5, 0.0], jnp.float32)
  g = jnp.asarray([0, 0, 0, 1, 1, 2], jnp.int32)
  valid = jnp.asarray([True, True, False, True, True, False])
  # Group 0: rows 0, 1 valid, one positive; group 1: 1 of 2; group 2: none.
  np.testing.assert_array_equal(
      groups.group_pass_rate(r, g, 4, valid=valid), [0.5, 0.5, 0.0, 0.0])
  np.testing.assert_allclose(groups.group_pass_rate(r, g, 3),
                             [2 / 3, 0.5, 0.0])


def test_valid_group_stats_matches_numpy_over_the_valid_rows():
  x = np.array([3.0, 5.0, 100.0, 2.0, 2.0, 7.0, 1.0])
  g = np.array([0, 0, 0, 1, 1, 2, 3])
  valid = np.array([True, True, False, True, True, True, False])
  n, mean, std, dev = groups.valid_group_stats(
      jnp.asarray(x, jnp.float32), jnp.asarray(valid), jnp.asarray(g), 4)
  np.testing.assert_array_equal(n, [2, 2, 1, 0])
  np.testing.assert_allclose(mean, [4.0, 2.0, 7.0, 0.0])
  np.testing.assert_allclose(std, [np.std([3.0, 5.0], ddof=1), 0.0, 0.0,
                                   0.0])
  np.testing.assert_array_equal(std[1], 0.0)   # all-equal group: exactly 0
  np.testing.assert_allclose(dev, [-1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
