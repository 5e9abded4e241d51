"""Aggregation modes against the NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divrl import aggregation, registry
from tests.references import aggregation as ref


def _loss_mask(seed=0, b=6, t=5):
  rng = np.random.default_rng(seed)
  loss = rng.normal(size=(b, t))
  mask = rng.random((b, t)) < 0.6
  mask[2] = False  # an all-masked row
  mask[0] = True
  return loss, mask


@pytest.mark.parametrize("mode", aggregation.MODES)
@pytest.mark.parametrize("weighted", [False, True])
def test_modes_match_reference(mode, weighted):
  loss, mask = _loss_mask()
  m = mask * (np.random.default_rng(1).uniform(0.5, 2, mask.shape)
              if weighted else 1.0)
  agg = registry.lookup("aggregation", mode)(jnp.asarray(loss, jnp.float32),
                                             jnp.asarray(m, jnp.float32))
  num, den = ref.aggregate(loss, m, mode)
  np.testing.assert_allclose(agg.numerator, num, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(agg.denominator, den, rtol=1e-6)
  np.testing.assert_allclose(aggregation.finalize(agg), ref.finalize(num, den),
                             rtol=1e-5, atol=1e-6)


def test_norm_constant():
  loss, mask = _loss_mask()
  agg = aggregation.seq_mean_token_sum_norm(jnp.asarray(loss), jnp.asarray(mask),
                                            norm=512)
  num, den = ref.aggregate(loss, mask.astype(float), "seq-mean-token-sum-norm",
                           norm=512)
  np.testing.assert_allclose(agg, (num, den), rtol=1e-5)
  with pytest.raises(ValueError, match="norm"):
    aggregation.seq_mean_token_sum_norm(jnp.asarray(loss), jnp.asarray(mask),
                                        norm=0)


@pytest.mark.parametrize("mode", aggregation.MODES)
def test_split_sums_equal_whole(mode):
  loss, mask = _loss_mask(seed=3, b=8)
  fn = registry.lookup("aggregation", mode)
  whole = fn(jnp.asarray(loss), jnp.asarray(mask))
  parts = [fn(jnp.asarray(loss[i:i + 2]), jnp.asarray(mask[i:i + 2]))
           for i in range(0, 8, 2)]
  np.testing.assert_allclose(aggregation.finalize(aggregation.combine(*parts)),
                             aggregation.finalize(whole), rtol=1e-5)


def test_empty_batch_is_zero_with_finite_gradient():
  loss = jnp.ones((2, 3))
  mask = jnp.zeros((2, 3))
  for mode in aggregation.MODES:
    fn = registry.lookup("aggregation", mode)
    value, g = jax.value_and_grad(
        lambda l: aggregation.finalize(fn(l, mask)))(loss)
    assert float(value) == 0.0
    assert np.all(np.asarray(g) == 0.0)


def test_denominator_has_no_gradient():
  loss, mask = _loss_mask()
  m = jnp.asarray(mask, jnp.float32)
  g = jax.grad(lambda mm: aggregation.token_mean(jnp.asarray(loss), mm)
               .denominator)(m)
  assert np.all(np.asarray(g) == 0.0)


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "seq-mean-token-sum",
                                  "seq-mean-token-sum-norm"])
def test_count_rows_includes_all_masked_rows(mode):
  loss, mask = _loss_mask()
  assert not mask[2].any()
  fn = registry.make("aggregation", {"name": mode, "count": "rows"})
  agg = fn(jnp.asarray(loss), jnp.asarray(mask))
  num, _ = ref.aggregate(loss, mask.astype(float), mode)
  np.testing.assert_allclose(agg.numerator, num, rtol=1e-5)
  assert float(agg.denominator) == loss.shape[0]
  with pytest.raises(ValueError, match="count"):
    registry.make("aggregation", {"name": mode, "count": "all"})(
        jnp.asarray(loss), jnp.asarray(mask))
