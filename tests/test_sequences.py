"""Tests for divrl.sequences: masked per-sequence reductions against NumPy
loops, with garbage (inf, NaN) in padding and rows without valid tokens."""

import jax
import jax.numpy as jnp
import numpy as np

from divrl import sequences


def _data(seed=0, b=5, t=6, d=3):
  rng = np.random.default_rng(seed)
  lengths = np.array([6, 3, 0, 1, 4])[:b]
  mask = np.arange(t)[None] < lengths[:, None]
  x = rng.normal(size=(b, t))
  x[~mask] = np.inf  # garbage in padding
  x[2, 0] = np.nan
  feats = rng.normal(size=(b, t, d))
  feats[~mask] = np.nan
  return x, mask, feats, lengths


def test_sums_means_and_lengths_match_loops():
  x, mask, _, lengths = _data()
  xs = jnp.asarray(x, jnp.float32)
  want_sum = np.array([sum(x[i, t] for t in range(6) if mask[i, t])
                       for i in range(5)])
  want_mean = np.array([want_sum[i] / n if n else 0.0
                        for i, n in enumerate(lengths)])
  np.testing.assert_allclose(sequences.sequence_sum(xs, mask)[:, 0],
                             want_sum, rtol=1e-6)
  np.testing.assert_allclose(sequences.sequence_mean(xs, mask)[:, 0],
                             want_mean, rtol=1e-6)
  np.testing.assert_array_equal(sequences.sequence_lengths(mask), lengths)
  # Padding garbage reaches no gradient either.
  g = jax.grad(lambda v: sequences.sequence_mean(v, mask).sum())(xs)
  assert np.all(np.isfinite(np.asarray(g)))
  np.testing.assert_array_equal(np.asarray(g)[~mask], 0.0)


def test_per_token_and_last_token_placement():
  _, mask, _, lengths = _data()
  values = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0])
  weights = mask * 0.5
  got = np.asarray(sequences.per_token(values, weights))
  np.testing.assert_allclose(got, np.where(mask, 0.5 * values[:, None], 0.0))
  last = np.asarray(sequences.on_last_token(values, mask))
  for i, n in enumerate(lengths):
    want = np.zeros(6)
    if n:
      want[n - 1] = values[i]
    np.testing.assert_array_equal(last[i], want)


def test_pooled_mean_averages_features_over_valid_tokens():
  _, mask, feats, lengths = _data()
  got = np.asarray(sequences.pooled_mean(jnp.asarray(feats, jnp.float32),
                                         mask))
  for i, n in enumerate(lengths):
    want = feats[i, :n].mean(0) if n else np.zeros(3)
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-7)
