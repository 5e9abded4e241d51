"""Advantage estimators against the independent NumPy references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divrl import advantages
from tests import numpy_reference as ref


def _random_groups(seed, b=17, num_groups=6):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, num_groups, size=b)
  ids[0] = num_groups - 1  # at least one id at the top of the range
  rewards = rng.normal(size=b)
  rewards[ids == ids[1]] = 0.75  # an all-equal group
  return rewards, ids, num_groups


FLAGS = list(itertools.product([0, 1], [0.0, 1e-6, 1e-4], ["std", "var"],
                               ["zero", "reward"], [True, False]))


@pytest.mark.filterwarnings("ignore:invalid value")
@pytest.mark.parametrize("ddof,eps,placement,singleton,scale", FLAGS)
def test_grpo_matches_reference(ddof, eps, placement, singleton, scale):
  for seed in range(3):
    r, ids, g = _random_groups(seed)
    got = advantages.grpo(jnp.asarray(r, jnp.float32), jnp.asarray(ids), g,
                          eps=eps, ddof=ddof, eps_placement=placement,
                          singleton=singleton, scale_by_std=scale)
    want = ref.grpo_advantages(r, ids, eps=eps, ddof=ddof,
                               eps_placement=placement, singleton=singleton,
                               scale_by_std=scale)
    if eps == 0.0 and scale:
      # All-equal groups give 0/0 in the reference; ours defines them as 0.
      finite = np.isfinite(want)
      assert (~finite).any()
      np.testing.assert_allclose(np.asarray(got)[finite], want[finite],
                                 rtol=2e-5, atol=2e-6)
      np.testing.assert_array_equal(np.asarray(got)[~finite], 0.0)
    else:
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("singleton", ["zero", "reward"])
def test_rloo_matches_reference(singleton):
  for seed in range(3):
    r, ids, g = _random_groups(seed)
    got = advantages.rloo(jnp.asarray(r, jnp.float32), jnp.asarray(ids), g,
                          singleton=singleton)
    want = ref.rloo_advantages(r, ids, singleton=singleton)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_edge_cases_hand_values():
  # Groups: {0: [1, 0]}, {1: [2]} singleton, {2: [3, 3, 3]} all-equal.
  r = jnp.array([1.0, 0.0, 2.0, 3.0, 3.0, 3.0])
  ids = jnp.array([0, 0, 1, 2, 2, 2])
  a = advantages.grpo(r, ids, 3, eps=0.0, singleton="zero")
  np.testing.assert_allclose(a, [2 ** -0.5, -2 ** -0.5, 0, 0, 0, 0],
                             atol=1e-6)
  a = advantages.grpo(r, ids, 3, eps=1e-6, singleton="reward")
  np.testing.assert_allclose(a[2], 2.0 / (1 + 1e-6), rtol=1e-6)
  np.testing.assert_allclose(a[3:], 0.0)
  a = advantages.rloo(r, ids, 3, singleton="reward")
  np.testing.assert_allclose(a, [1, -1, 2, 0, 0, 0])


def test_permutation_equivariance():
  r, ids, g = _random_groups(7)
  perm = np.random.default_rng(1).permutation(len(r))
  for fn in (advantages.grpo, advantages.rloo):
    a = fn(jnp.asarray(r, jnp.float32), jnp.asarray(ids), g)
    ap = fn(jnp.asarray(r[perm], jnp.float32), jnp.asarray(ids[perm]), g)
    np.testing.assert_allclose(np.asarray(a)[perm], ap, rtol=1e-6, atol=1e-7)


def test_group_relabelling_invariance():
  r, ids, g = _random_groups(3)
  relabel = np.random.default_rng(0).permutation(g)
  a = advantages.grpo(jnp.asarray(r, jnp.float32), jnp.asarray(ids), g)
  b = advantages.grpo(jnp.asarray(r, jnp.float32), jnp.asarray(relabel[ids]),
                      g)
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_multi_reward_weights_sum_then_normalise():
  rng = np.random.default_rng(0)
  rk = rng.normal(size=(8, 3))
  w = np.array([1.0, 0.5, -2.0])
  got = advantages.scalar_rewards(jnp.asarray(rk, jnp.float32), w)
  np.testing.assert_allclose(got, rk @ w, rtol=1e-5)
  with pytest.raises(ValueError, match="reward_weights"):
    advantages.scalar_rewards(jnp.asarray(rk, jnp.float32), [1.0, 2.0])


def test_bad_flags_are_named():
  r, ids = jnp.zeros(4), jnp.zeros(4, jnp.int32)
  with pytest.raises(ValueError, match="eps_placement"):
    advantages.grpo(r, ids, 1, eps_placement="inside")
  with pytest.raises(ValueError, match="singleton"):
    advantages.rloo(r, ids, 1, singleton="nan")


def test_jit_and_vmap():
  r, ids, g = _random_groups(2)
  r = jnp.asarray(r, jnp.float32)
  f = jax.jit(lambda r: advantages.grpo(r, jnp.asarray(ids), g))
  np.testing.assert_allclose(f(r), advantages.grpo(r, jnp.asarray(ids), g))
  stacked = jnp.stack([r, 2 * r])
  out = jax.vmap(lambda x: advantages.grpo(x, jnp.asarray(ids), g,
                                           eps=0.0))(stacked)
  np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-6)
