"""Tests for divrl.normalizations: BNPO, Gaussian rank, stratified."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import advantages
from divrl import normalizations as nz
from divrl.sharding import make_mesh
from tests.references import normalizations as ref

# Ragged groups: binary (4), binary (5), all equal (3), singleton, ties (5).
REWARDS = np.array([1, 0, 1, 1,  0, 0, 0, 1, 0,  1, 1, 1,  0.5,
                    0.2, 0.8, 0.2, 0.6, 0.8], np.float32)
GROUPS = np.array([0] * 4 + [1] * 5 + [2] * 3 + [3] + [4] * 5, np.int32)
G = 5


def _j(*xs):
  return [jnp.asarray(x) for x in xs]


@pytest.mark.parametrize("ab", [None, (1.0, 1.0), (2.5, 1.3)])
def test_bnpo_matches_reference(ab):
  kw = {} if ab is None else dict(alpha=ab[0], beta=ab[1])
  got = nz.bnpo(*_j(REWARDS, GROUPS), G, **kw)
  np.testing.assert_allclose(got, ref.bnpo(REWARDS, GROUPS, **kw),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got)[9:13], 0.0)  # equal, single


def test_bnpo_beta_1_1_is_reinforce_with_the_group_mean():
  got = nz.bnpo(*_j(REWARDS, GROUPS), G, alpha=1.0, beta=1.0)
  want = advantages.grpo(*_j(REWARDS, GROUPS), G, scale_by_std=False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bnpo_beta_3_2_is_grpo_up_to_a_constant_on_binary_rewards():
  # pdf(p; 3/2, 3/2) = sqrt(p (1 - p)) / B(3/2, 3/2) and B(3/2, 3/2) = pi/8.
  r, g = REWARDS[:9], GROUPS[:9]
  got = nz.bnpo(*_j(r, g), 2, alpha=1.5, beta=1.5)
  z = advantages.grpo(*_j(r, g), 2, ddof=0, eps=0.0)
  np.testing.assert_allclose(got, math.pi / 8 * np.asarray(z), rtol=1e-4)


def test_bnpo_decomposes_reward_components():
  heads = np.stack([REWARDS, 1.0 - REWARDS], 1)
  batch = divrl.Batch(logprobs=jnp.zeros((18, 2)),
                      response_mask=jnp.ones((18, 2)),
                      rewards=jnp.asarray(heads),
                      group_ids=jnp.asarray(GROUPS), num_groups=G)
  got = divrl.registry.make("advantage", "bnpo")(batch)[:, 0]
  want = (ref.bnpo(heads[:, 0], GROUPS) + ref.bnpo(heads[:, 1], GROUPS)) / 2
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_gaussian_rank_matches_reference_and_ignores_the_scale():
  got = nz.gaussian_rank(*_j(REWARDS, GROUPS), G)
  np.testing.assert_allclose(got, ref.gaussian_rank(REWARDS, GROUPS),
                             rtol=1e-5, atol=1e-6)
  # Any increasing map of the rewards gives the same advantages.
  np.testing.assert_allclose(
      nz.gaussian_rank(jnp.asarray(np.exp(3 * REWARDS)), jnp.asarray(GROUPS),
                       G), got, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(got)[9:13], 0.0)
  batch = divrl.Batch(logprobs=jnp.zeros((18, 1)),
                      response_mask=jnp.ones((18, 1)),
                      rewards=jnp.asarray(REWARDS),
                      group_ids=jnp.asarray(GROUPS), num_groups=G)
  np.testing.assert_allclose(
      divrl.registry.make("advantage", "gaussian_rank")(batch)[:, 0], got)


@pytest.mark.parametrize("blend", [0.0, 0.3, 1.0])
def test_stratified_matches_reference(blend):
  strata = (np.arange(len(REWARDS)) % 2).astype(np.int32)
  got = nz.stratified(*_j(REWARDS, GROUPS), G, jnp.asarray(strata), 2,
                      blend=blend)
  np.testing.assert_allclose(got, ref.stratified(REWARDS, GROUPS, strata,
                                                 blend), rtol=1e-5, atol=1e-5)
  if blend == 0.0:
    np.testing.assert_allclose(got, advantages.grpo(*_j(REWARDS, GROUPS), G),
                               rtol=1e-6)


def test_stratified_part_takes_strata_from_lengths():
  mask = np.ones((18, 4), np.float32)
  mask[::2, 2:] = 0                               # even rows: 2 tokens
  batch = divrl.Batch(logprobs=jnp.zeros((18, 4)),
                      response_mask=jnp.asarray(mask),
                      rewards=jnp.asarray(REWARDS),
                      group_ids=jnp.asarray(GROUPS), num_groups=G)
  strata = np.asarray(nz.length_strata(jnp.asarray(mask), 2))
  np.testing.assert_array_equal(strata, (np.arange(18) % 2))
  got = divrl.registry.make("advantage", {"name": "stratified",
                                          "blend": 0.7})(batch)[:, 0]
  np.testing.assert_allclose(got, ref.stratified(REWARDS, GROUPS, strata,
                                                 0.7), rtol=1e-5, atol=1e-5)


def test_sharded_matches_single_device():
  mesh = make_mesh((8,), ("data",))
  r = np.concatenate([REWARDS, np.float32([0.3] * 6)])    # 24 rows
  g = np.concatenate([GROUPS, np.int32([5] * 6)])
  for fn in (lambda r, g, ax: nz.bnpo(r, g, 6, axis_name=ax),
             lambda r, g, ax: nz.gaussian_rank(r, g, 6, axis_name=ax)):
    sharded = jax.jit(jax.shard_map(
        lambda r, g, fn=fn: fn(r, g, "data"), mesh=mesh,
        in_specs=(P("data"), P("data")), out_specs=P("data")))(*_j(r, g))
    single = jax.jit(lambda r, g, fn=fn: fn(r, g, None))(*_j(r, g))
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="high > low"):
    nz.bnpo(*_j(REWARDS, GROUPS), G, low=1.0, high=1.0)
  with pytest.raises(ValueError, match="blend"):
    nz.stratified(*_j(REWARDS, GROUPS), G, jnp.zeros(18, jnp.int32), 1,
                  blend=1.5)
