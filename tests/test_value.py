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
