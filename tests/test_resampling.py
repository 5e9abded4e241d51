"""PF-PPO resampling (divrl/resampling.py): weights, sampling frequencies and
the row-consistent transform."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import resampling
from tests.conftest import make_batch


def test_pf_ppo_weights_and_sampling_frequencies():
  r = jnp.asarray([0.0, 1.0, -2.0, 0.5])
  np.testing.assert_allclose(resampling.pf_ppo_weights(r, power=2.0),
                             [0, 1, 4, 0.25])
  np.testing.assert_allclose(resampling.pf_ppo_weights(r, mode="max_min"),
                             [0, 1, 1, 0])
  np.testing.assert_allclose(resampling.pf_ppo_weights(r, mode="max_random"),
                             [0.1, 0.4, 0.1, 0.1])
  keys = jax.random.split(jax.random.key(0), 4000)
  idx = jax.vmap(lambda k: resampling.pf_ppo_indices(k, r))(keys).ravel()
  freq = np.bincount(np.asarray(idx), minlength=4) / idx.size
  np.testing.assert_allclose(freq, [0, 1 / 5.25, 4 / 5.25, 0.25 / 5.25],
                             atol=0.01)
  uniform = resampling.pf_ppo_indices(jax.random.key(1), jnp.zeros(4))
  assert uniform.shape == (4,)
  with pytest.raises(ValueError, match="mode"):
    resampling.pf_ppo_weights(r, mode="top")


def test_pf_ppo_transform_keeps_rows_consistent():
  batch = make_batch(0, garbage=False)
  obj = divrl.build("rloo", "ppo_clip",
                    transforms=[{"name": "pf_ppo", "mode": "max_min"}])
  out, _ = obj.prepare(batch, jax.random.key(3))
  r = np.asarray(batch.rewards)
  kept = np.asarray(out.rewards)
  assert set(kept) <= {r.max(), r.min()}
  # Every row moved as a unit.
  for i in range(out.batch_size):
    j = int(np.flatnonzero(r == kept[i])[0])
    np.testing.assert_array_equal(out.response_mask[i],
                                  batch.response_mask[j])
