"""The clipped critic loss (divrl/value.py) against a NumPy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divrl import value


def test_clipped_value_loss_matches_loop_and_gradient():
  rng = np.random.default_rng(0)
  v, old, ret = (rng.normal(size=(4, 5)) for _ in range(3))
  loss, diag = value.clipped_value_loss(*(jnp.asarray(x, jnp.float32)
                                          for x in (v, old, ret)), clip=0.3)
  want = np.zeros_like(v)
  for i in range(4):
    for t in range(5):
      vc = old[i, t] + min(max(v[i, t] - old[i, t], -0.3), 0.3)
      want[i, t] = 0.5 * max((v[i, t] - ret[i, t]) ** 2,
                             (vc - ret[i, t]) ** 2)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  assert 0 < float(diag["clipfrac"].mean()) < 1
  g = jax.grad(lambda x: value.clipped_value_loss(
      x, jnp.asarray(old), jnp.asarray(ret), clip=None)[0].sum())(
          jnp.asarray(v))
  np.testing.assert_allclose(g, v - ret, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="clip"):
    value.clipped_value_loss(jnp.asarray(v), jnp.asarray(old),
                             jnp.asarray(ret), clip=0.0)


def test_value_loss_regularizer_uses_gae_returns_of_the_old_values():
  import divrl
  from tests.references import advantages as adv_ref
  rng = np.random.default_rng(1)
  b, t = 5, 6
  lengths = np.array([6, 4, 1, 0, 3])
  mask = np.arange(t)[None] < lengths[:, None]
  v, old = rng.normal(size=(b, t)), rng.normal(size=(b, t))
  rewards = rng.normal(size=b)
  batch = divrl.Batch(
      logprobs=jnp.zeros((b, t)), response_mask=jnp.asarray(mask),
      rewards=jnp.asarray(rewards, jnp.float32),
      group_ids=jnp.zeros(b, jnp.int32), values=jnp.asarray(v, jnp.float32),
      old_values=jnp.asarray(old, jnp.float32), num_groups=1)
  part = divrl.registry.make("regularizer", {"name": "value_loss",
                                             "clip": 0.2, "gamma": 0.9,
                                             "lam": 0.8})
  got = np.asarray(part(batch))
  _, returns = adv_ref.gae(adv_ref.last_token_rewards(rewards, mask), old,
                           mask, gamma=0.9, lam=0.8)
  want, _ = value.clipped_value_loss(jnp.asarray(v, jnp.float32),
                                     jnp.asarray(old, jnp.float32),
                                     jnp.asarray(returns, jnp.float32),
                                     clip=0.2)
  np.testing.assert_allclose(got[mask], np.asarray(want)[mask], rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="reads Batch.old_values"):
    part(batch.replace(old_values=None))
