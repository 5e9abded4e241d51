"""Evaluation metrics against brute-force and NumPy references."""

import fractions
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divrl import metrics


# ---------------------------------------------------------------------------
# pass@k
# ---------------------------------------------------------------------------


def _brute_pass_at_k(n, c, k):
  """Fraction of k-subsets of n samples (first c correct) with a correct one."""
  subsets = list(itertools.combinations(range(n), k))
  hits = sum(any(i < c for i in s) for s in subsets)
  return fractions.Fraction(hits, len(subsets))


def _exact_pass_at_k(n, c, k):
  """1 - C(n-c, k) / C(n, k) in exact rational arithmetic."""
  return 1 - fractions.Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_subset_enumeration():
  for n in range(1, 8):
    for c in range(n + 1):
      for k in range(1, n + 1):
        got = metrics.pass_at_k(n, c, k)
        want = float(_brute_pass_at_k(n, c, k))
        assert got == pytest.approx(want, rel=1e-13, abs=1e-15), (n, c, k)


def test_pass_at_k_vectorised_over_prompts_and_ks():
  rng = np.random.default_rng(0)
  n = rng.integers(8, 40, size=23)
  c = rng.integers(0, n + 1)
  ks = [1, 3, 8]
  got = metrics.pass_at_k(n, c, ks)
  assert got.shape == (23, 3) and got.dtype == np.float64
  for p in range(23):
    for j, k in enumerate(ks):
      want = float(_exact_pass_at_k(int(n[p]), int(c[p]), k))
      assert got[p, j] == pytest.approx(want, rel=1e-12, abs=1e-15)
  # An int k drops the k axis; the columns agree.
  np.testing.assert_array_equal(metrics.pass_at_k(n, c, 3), got[:, 1])
  # A scalar n broadcasts against c.
  np.testing.assert_array_equal(
      metrics.pass_at_k(40, c, ks), metrics.pass_at_k(np.full(23, 40), c, ks))


def test_pass_at_k_edge_cases():
  n = 16
  ks = list(range(1, n + 1))
  np.testing.assert_array_equal(metrics.pass_at_k(n, 0, ks), 0.0)
  assert not np.any(np.signbit(metrics.pass_at_k(n, 0, ks)))  # no -0.0
  np.testing.assert_array_equal(metrics.pass_at_k(n, n, ks), 1.0)
  # k = n: any correct sample makes it 1.
  np.testing.assert_array_equal(
      metrics.pass_at_k(np.full(n, n), np.arange(1, n + 1), n), 1.0)
  # k = 1 is the fraction correct, exactly.
  c = np.arange(n + 1)
  np.testing.assert_allclose(metrics.pass_at_k(n, c, 1), c / n, rtol=1e-15)
  # Nondecreasing in k for every c.
  table = metrics.pass_at_k(np.full(n + 1, n), c, ks)
  assert np.all(np.diff(table, axis=1) >= 0)
  # Nondecreasing in c for every k.
  assert np.all(np.diff(table, axis=0) >= 0)


def test_pass_at_k_large_n_is_stable_and_exact():
  n = 256
  ks = [1, 2, 4, 8, 16, 32, 64, 128, 256]
  c = np.arange(n + 1)
  got = metrics.pass_at_k(n, c, ks)
  assert np.all(np.isfinite(got))
  assert np.all((got >= 0) & (got <= 1))
  for ci in range(0, n + 1, 7):
    for j, k in enumerate(ks):
      want = float(_exact_pass_at_k(n, ci, k))
      assert got[ci, j] == pytest.approx(want, rel=1e-12, abs=1e-300)
  # c = 1: pass@k = k / n exactly, tiny values keep relative precision.
  np.testing.assert_allclose(got[1], np.asarray(ks) / n, rtol=1e-13)
  # Far beyond float64 binomials: C(10^6, 500) overflows, the estimate does
  # not.
  big = metrics.pass_at_k(10**6, [0, 1, 3, 10**6 - 600], [1, 500])
  assert np.all(np.isfinite(big))
  np.testing.assert_allclose(big[1], [1e-6, 500e-6], rtol=1e-12)
  assert big[3, 1] == 1.0


def test_pass_at_k_errors_name_the_argument():
  with pytest.raises(ValueError, match="k=5 exceeds num_samples=4"):
    metrics.pass_at_k([8, 4], [1, 1], [1, 5])
  with pytest.raises(ValueError, match="k must be >= 1"):
    metrics.pass_at_k(4, 1, 0)
  with pytest.raises(ValueError, match="num_correct"):
    metrics.pass_at_k(4, 5, 1)
  with pytest.raises(ValueError, match="num_correct"):
    metrics.pass_at_k(4, -1, 1)
  with pytest.raises(ValueError, match="num_samples"):
    metrics.pass_at_k(0, 0, 1)
  with pytest.raises(ValueError, match="num_samples"):
    metrics.pass_at_k(4.5, 1, 1)
  with pytest.raises(ValueError, match="do not broadcast"):
    metrics.pass_at_k([4, 4, 4], [1, 1], 1)


def test_pass_at_k_curve():
  rng = np.random.default_rng(1)
  correct = rng.random((9, 12)) < rng.random((9, 1))
  curve = metrics.pass_at_k_curve(correct)
  assert list(curve) == [1, 2, 4, 8]  # 16 .. 256 exceed n = 12
  c = correct.sum(axis=1)
  for k, value in curve.items():
    want = np.mean([float(_exact_pass_at_k(12, int(ci), k)) for ci in c])
    assert value == pytest.approx(want, rel=1e-12)
    assert isinstance(value, float)
  assert curve[1] == pytest.approx(metrics.accuracy(correct), rel=1e-12)
  # Explicit ks: order and duplicates do not matter, too-large ks are dropped.
  assert list(metrics.pass_at_k_curve(correct, ks=(12, 3, 3, 13))) == [3, 12]
  assert metrics.pass_at_k_curve(correct, ks=(64,)) == {}
  # 0/1 integers are accepted as well as bools.
  assert metrics.pass_at_k_curve(correct.astype(int)) == curve
  with pytest.raises(ValueError, match="correct"):
    metrics.pass_at_k_curve(correct[0])
  with pytest.raises(ValueError, match="ks"):
    metrics.pass_at_k_curve(correct, ks=(0, 1))


def test_accuracy_and_mean_reward():
  assert metrics.accuracy([[True, False], [True, True]]) == 0.75
  assert metrics.accuracy(np.zeros((0, 4), bool)) == 0.0
  assert metrics.mean_reward(jnp.asarray([1.0, 0.0, 0.5])) == pytest.approx(0.5)
  assert metrics.mean_reward([]) == 0.0
  assert math.isnan(metrics.mean_reward([1.0, float("nan")]))


# ---------------------------------------------------------------------------
# Diversity
# ---------------------------------------------------------------------------


def _plogp_entropy(counts):
  q = np.asarray(counts, np.float64) / np.sum(counts)
  return float(-np.sum(q * np.log(q)))


def test_distinct_correct_hand_examples():
  canonicals = [
      ["a", "a", "b", None, "c"],  # correct: a, a, b, (None ignored)
      ["x", "y", "z"],             # nothing correct
      ["x", "x", "x"],             # one class
      ["p", "q", "r", "s", "p"],   # four classes, "p" counted once (wrong)
      [],                          # no samples
  ]
  correct = [
      [True, True, True, True, False],
      [False, False, False],
      [True, True, True],
      [True, True, True, True, False],
      [],
  ]
  out = metrics.distinct_correct(canonicals, correct)
  np.testing.assert_array_equal(out.counts, [2, 0, 1, 4, 0])
  want = [_plogp_entropy([2, 1]), 0.0, 0.0, math.log(4), 0.0]
  np.testing.assert_allclose(out.entropy, want, rtol=1e-15)
  assert out.mean_count == pytest.approx(7 / 5)
  assert out.mean_entropy == pytest.approx(np.mean(want))
  assert out.counts.dtype == np.int64


def test_distinct_correct_random_vs_numpy():
  rng = np.random.default_rng(2)
  p, n = 11, 16
  labels = rng.integers(0, 6, size=(p, n))
  correct = rng.random((p, n)) < 0.6
  canonicals = [[f"sol{v}" for v in row] for row in labels]
  out = metrics.distinct_correct(canonicals, correct)
  for i in range(p):
    _, counts = np.unique(labels[i][correct[i]], return_counts=True)
    assert out.counts[i] == len(counts)
    want = _plogp_entropy(counts) if len(counts) > 1 else 0.0
    assert out.entropy[i] == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert out.entropy[i] <= math.log(max(len(counts), 1)) + 1e-12


def test_distinct_correct_checks_lengths():
  with pytest.raises(ValueError, match="prompts"):
    metrics.distinct_correct([["a"]], [[True], [False]])
  with pytest.raises(ValueError, match="prompt 0"):
    metrics.distinct_correct([["a", "b"]], [[True]])
  empty = metrics.distinct_correct([], [])
  assert empty.mean_count == 0.0 and empty.counts.shape == (0,)


def test_distinct_n():
  assert metrics.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
  assert metrics.distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
  # Pooled over texts: the bigram (a, b) repeats across the two texts.
  assert metrics.distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
  assert metrics.distinct_n(["one", ""], 2) == 0.0
  assert metrics.distinct_n(["abcab"], 2, tokenize=list) == pytest.approx(3 / 4)
  with pytest.raises(ValueError, match="n must be"):
    metrics.distinct_n(["a"], 0)
  with pytest.raises(TypeError, match="texts"):
    metrics.distinct_n("a b c", 1)


# ---------------------------------------------------------------------------
# Token statistics
# ---------------------------------------------------------------------------


def _token_arrays(seed=3, b=6, t=9, garbage=True):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, t + 1, size=b)
  lengths[0] = t
  lengths[1] = 0  # an empty sequence
  mask = np.arange(t)[None, :] < lengths[:, None]
  ent = rng.uniform(0.0, 3.0, size=(b, t))
  lp = -rng.uniform(0.05, 3.0, size=(b, t))
  base = lp + rng.normal(0.0, 0.5, size=(b, t))
  clean = [x.copy() for x in (ent, lp, base)]
  if garbage:
    for x in (ent, lp, base):
      x[~mask] = rng.choice([np.nan, np.inf, -np.inf, 1e30, -7.0],
                            size=(~mask).sum())
  return mask, clean, (ent, lp, base)


def test_token_entropy_summary_matches_numpy_and_ignores_padding():
  mask, (ent, _, _), (dirty, _, _) = _token_arrays()
  want = ent[mask].mean()
  got = metrics.token_entropy_summary(jnp.asarray(dirty, jnp.float32),
                                      jnp.asarray(mask))
  assert np.isfinite(got)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  jitted = jax.jit(metrics.token_entropy_summary)(
      jnp.asarray(dirty, jnp.float32), jnp.asarray(mask, jnp.float32))
  np.testing.assert_allclose(jitted, want, rtol=1e-6)
  empty = metrics.token_entropy_summary(jnp.asarray(dirty, jnp.float32),
                                        jnp.zeros(mask.shape, bool))
  assert float(empty) == 0.0
  with pytest.raises(AssertionError):
    metrics.token_entropy_summary(jnp.ones((2, 3)), jnp.ones((2, 4)))


def test_kl_to_base_matches_numpy_and_ignores_padding():
  mask, (_, lp, base), (_, dlp, dbase) = _token_arrays(seed=4)
  u = np.where(mask, lp - base, 0.0)
  k1_seq = u.sum(axis=1)
  k3_seq = (np.exp(-u) - 1.0 + u).sum(axis=1)
  nonempty = mask.any(axis=1)
  per_seq = metrics.kl_to_base(jnp.asarray(dlp, jnp.float32),
                               jnp.asarray(dbase, jnp.float32),
                               jnp.asarray(mask), reduce=False)
  np.testing.assert_allclose(per_seq.k1, k1_seq, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(per_seq.k3, k3_seq, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(per_seq.k3) >= 0)
  mean = jax.jit(metrics.kl_to_base)(jnp.asarray(dlp, jnp.float32),
                                     jnp.asarray(dbase, jnp.float32),
                                     jnp.asarray(mask))
  # The empty sequence is left out of the average.
  np.testing.assert_allclose(mean.k1, k1_seq[nonempty].mean(), rtol=1e-5)
  np.testing.assert_allclose(mean.k3, k3_seq[nonempty].mean(), rtol=1e-5)
  none = metrics.kl_to_base(dlp, dbase, np.zeros_like(mask))
  assert float(none.k1) == 0.0 and float(none.k3) == 0.0


def test_kl_to_base_expectation_is_sequence_kl_pi_base():
  """Exact enumeration: E_pi[k1] = E_pi[k3] = KL(pi || base) of sequences."""
  rng = np.random.default_rng(5)
  v = 3

  def random_dist(shape):
    x = rng.gamma(1.0, size=shape)
    return x / x.sum(axis=-1, keepdims=True)

  # Two-token autoregressive models: p(y1) and p(y2 | y1).
  pi1, pi2 = random_dist(v), random_dist((v, v))
  b1, b2 = random_dist(v), random_dist((v, v))
  seqs = list(itertools.product(range(v), repeat=2))
  lp = np.asarray([[np.log(pi1[a]), np.log(pi2[a, b])] for a, b in seqs])
  lb = np.asarray([[np.log(b1[a]), np.log(b2[a, b])] for a, b in seqs])
  weights = np.exp(lp.sum(axis=1))  # pi(y)
  out = metrics.kl_to_base(jnp.asarray(lp), jnp.asarray(lb),
                           jnp.ones(lp.shape, bool), reduce=False)
  joint_pi = weights
  joint_base = np.exp(lb.sum(axis=1))
  kl_pi_base = np.sum(joint_pi * np.log(joint_pi / joint_base))
  kl_base_pi = np.sum(joint_base * np.log(joint_base / joint_pi))
  e_k1 = np.sum(weights * np.asarray(out.k1, np.float64))
  e_k3 = np.sum(weights * np.asarray(out.k3, np.float64))
  np.testing.assert_allclose(e_k1, kl_pi_base, rtol=1e-5)
  np.testing.assert_allclose(e_k3, kl_pi_base, rtol=1e-5)
  assert abs(kl_pi_base - kl_base_pi) > 1e-2  # the two KLs differ here
