"""Tests for divrl.diversity (unlikeliness reward, He et al. 2025)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import diversity
from divrl.sharding import make_mesh
from tests.conftest import make_batch


def _np_unlikeliness(rewards, scores, group_ids, beta):
  """Independent reference: explicit per-group sort."""
  out = np.array(rewards, np.float64)
  for g in np.unique(group_ids):
    members = np.nonzero(group_ids == g)[0]
    # Stable sort by score: ties keep batch order, least likely first.
    order = members[np.argsort(scores[members], kind="stable")]
    for rank, i in enumerate(order):
      out[i] = rewards[i] * (1 - beta * rank / len(members))
  return out


def _np_mean_logprob(lp, mask):
  lp = np.where(mask, lp, 0.0)
  n = mask.sum(1)
  return np.where(n > 0, lp.sum(1) / np.maximum(n, 1), 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0])
def test_unlikeliness_reward_matches_numpy(seed, beta):
  batch = make_batch(seed=seed, b=16, t=6, num_groups=4, reward_kind="binary")
  out = divrl.registry.make("transform", {"name": "unlikeliness_reward", "beta": beta})(
      batch)
  mask = np.asarray(batch.response_mask)
  scores = _np_mean_logprob(np.asarray(batch.old_logprobs, np.float64), mask)
  ref = _np_unlikeliness(np.asarray(batch.rewards, np.float64), scores,
                         np.asarray(batch.group_ids), beta)
  np.testing.assert_allclose(out.rewards, ref, rtol=1e-6, atol=1e-7)


def test_most_likely_correct_sample_loses_most():
  # One group, all correct: rewards fall linearly with likelihood rank.
  rewards = jnp.ones(4)
  scores = jnp.asarray([-3.0, -0.1, -1.0, -2.0])
  out = diversity.unlikeliness_values(rewards, scores, jnp.zeros(4, jnp.int32),
                                      1, beta=0.25)
  np.testing.assert_allclose(out, [1.0, 1 - 0.25 * 3 / 4, 1 - 0.25 * 2 / 4,
                                   1 - 0.25 / 4], rtol=1e-6)


def test_permutation_invariance_and_padding():
  batch = make_batch(seed=3, b=12, t=5, num_groups=3)
  perm = np.random.default_rng(0).permutation(12)
  fn = divrl.registry.make("transform", "unlikeliness_reward")
  out = fn(batch).rewards
  permuted = jax.tree.map(lambda x: x[perm], batch)
  np.testing.assert_allclose(fn(permuted).rewards, np.asarray(out)[perm],
                             rtol=1e-6)


def test_shard_map_matches_single_device():
  batch = make_batch(seed=4, b=16, t=5, num_groups=4, garbage=False)
  mesh = make_mesh((8,), ("data",))
  fn = lambda b: diversity.unlikeliness_reward_part(b, axis_name="data").rewards
  spec = jax.tree.map(lambda x: P("data"), batch)
  placed = jax.device_put(batch, jax.tree.map(
      lambda s: jax.sharding.NamedSharding(mesh, s), spec))
  sharded = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(spec,),
                                  out_specs=P("data")))(placed)
  np.testing.assert_allclose(sharded, diversity.unlikeliness_reward_part(
      batch).rewards, rtol=1e-6)


def test_bad_beta_is_refused():
  with pytest.raises(ValueError, match="beta"):
    diversity.unlikeliness_reward_part(make_batch(), beta=1.5)


def test_empty_responses_take_no_part_in_the_ranking():
  # Row 1 has an all-zero mask: its mean log-prob (0) would make it the most
  # likely sample. It keeps its reward, and the other rows rank among
  # themselves as if it were not there.
  lp = np.array([[-1.0, -1.0], [-9.0, -9.0], [-0.5, -0.5], [-2.0, -2.0]])
  mask = np.array([[1, 1], [0, 0], [1, 1], [1, 0]], bool)
  batch = divrl.Batch(logprobs=jnp.asarray(lp, jnp.float32),
                      response_mask=jnp.asarray(mask),
                      rewards=jnp.ones(4), group_ids=jnp.zeros(4, jnp.int32),
                      num_groups=1)
  out = divrl.registry.make("transform", {"name": "unlikeliness_reward",
                                          "beta": 0.5})(batch)
  # Valid rows 0, 2, 3 ranked by mean log-prob: 3 (-2) < 0 (-1) < 2 (-0.5).
  want = [1 - 0.5 * 1 / 3, 1.0, 1 - 0.5 * 2 / 3, 1.0]
  np.testing.assert_allclose(out.rewards, want, rtol=1e-6)
  kept = _np_unlikeliness(np.ones(3), _np_mean_logprob(lp[mask.any(1)],
                                                       mask[mask.any(1)]),
                          np.zeros(3, int), 0.5)
  np.testing.assert_allclose(np.asarray(out.rewards)[mask.any(1)], kept,
                             rtol=1e-6)
