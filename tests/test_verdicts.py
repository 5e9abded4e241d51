"""divrl.verdicts: paired intervals against hand-computed references, and the
verdict rule on synthetic numbers with a known effect, a known null and a
known reversal."""

import dataclasses
import math

import numpy as np
import pytest

from divrl import verdicts

# t_{0.975} quantiles by degrees of freedom, from a printed t table.
T975 = {2: 4.303, 4: 2.776, 9: 2.262}


def _reference_t(a, b, dof_quantile):
  d = [x - y for x, y in zip(a, b)]
  n = len(d)
  mean = sum(d) / n
  sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
  half = dof_quantile * sd / math.sqrt(n)
  return mean, mean - half, mean + half


@pytest.mark.parametrize("n", [3, 5, 10])
def test_paired_t_interval_matches_the_textbook_formula(n):
  rng = np.random.default_rng(n)
  a, b = rng.normal(1.0, 1.0, n), rng.normal(0.5, 1.0, n)
  got = verdicts.paired_t_interval(a, b)
  want = _reference_t(a.tolist(), b.tolist(), T975[n - 1])
  np.testing.assert_allclose(got, want, rtol=2e-3)
  # Pairing matters: a shared per-seed offset leaves the interval unchanged.
  offset = rng.normal(0, 100, n)
  np.testing.assert_allclose(verdicts.paired_t_interval(a + offset,
                                                        b + offset), got,
                             rtol=1e-9)


def test_the_rule_on_a_known_effect_a_null_and_a_reversal():
  base = [0.50, 0.52, 0.48, 0.51, 0.49]
  effect = [x + 0.1 + e for x, e in zip(base, [0.01, -0.01, 0.0, 0.02, -0.02])]
  null = [x + e for x, e in zip(base, [0.03, -0.03, 0.02, -0.02, 0.0])]
  reversal = [x - 0.1 + e for x, e in zip(base, [0.01, -0.01, 0.0, 0.02,
                                                  -0.02])]
  results = {"base": {"pass@1": base}, "effect": {"pass@1": effect},
             "null": {"pass@1": null}, "reversal": {"pass@1": reversal}}
  for test in verdicts.TESTS:
    claim = lambda method, direction="greater": verdicts.Claim(  # noqa: E731
        f"{method} beats base", "pass@1", method, "base", direction, test)
    assert verdicts.evaluate(claim("effect"), results).verdict == "reproduced"
    assert verdicts.evaluate(claim("null"), results).verdict == "inconclusive"
    assert verdicts.evaluate(claim("reversal"),
                             results).verdict == "not reproduced"
    # The same numbers under the opposite claim.
    assert verdicts.evaluate(claim("reversal", "less"),
                             results).verdict == "reproduced"
    out = verdicts.evaluate(claim("effect"), results)
    assert out.seeds == 5 and out.lo < out.difference < out.hi
    assert out.difference == pytest.approx(0.1)


def test_bootstrap_is_seeded_and_covers_the_mean_difference():
  a, b = [1.0, 2.0, 3.5, 2.5], [0.5, 1.0, 3.0, 2.0]
  one = verdicts.paired_bootstrap_interval(a, b, seed=3)
  assert one == verdicts.paired_bootstrap_interval(a, b, seed=3)
  diff, lo, hi = one
  assert diff == pytest.approx(0.625)
  # Percentiles of resampled means of d = (0.5, 1, 0.5, 0.5) lie in [0.5, 1].
  assert 0.5 <= lo <= diff <= hi <= 1.0


def test_mean_interval_and_verdict_edges():
  mean, lo, hi = verdicts.mean_interval([0.2, 0.4, 0.6])
  assert mean == pytest.approx(0.4)
  assert (lo, hi) == pytest.approx((0.4 - 4.303 * 0.2 / math.sqrt(3),
                                    0.4 + 4.303 * 0.2 / math.sqrt(3)),
                                   rel=1e-3)
  single = verdicts.mean_interval([0.3])
  assert single[0] == 0.3 and math.isnan(single[1])
  assert verdicts.verdict(0.0, 0.2, "greater") == "inconclusive"
  assert verdicts.verdict(-0.3, -0.1, "less") == "reproduced"


@pytest.mark.parametrize("call, match", [
    (lambda: verdicts.paired_t_interval([1.0], [0.0]), "at least 2 seeds"),
    (lambda: verdicts.paired_t_interval([1.0, 2.0], [0.0]), "pair"),
    (lambda: verdicts.paired_t_interval([1.0, float("nan")], [0.0, 1.0]),
     "treatment"),
    (lambda: verdicts.paired_t_interval([1.0, 2.0], [0.0, 1.0],
                                        confidence=1.0), "confidence"),
    (lambda: verdicts.verdict(0.1, 0.2, "higher"), "direction"),
    (lambda: verdicts.Claim("c", "pass@1", "a", "b", test="anova"), "test"),
    (lambda: verdicts.evaluate(verdicts.Claim("c", "pass@1", "a", "b"),
                               {"a": {"pass@1": [1.0, 2.0]}}), "control"),
    (lambda: verdicts.evaluate(verdicts.Claim("c", "pass@9", "a", "b"),
                               {"a": {"pass@1": [1.0]}, "b": {}}), "pass@9"),
])
def test_bad_input_is_refused_by_name(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_a_claim_can_compare_two_metrics_of_the_same_runs():
  # Two estimators measured in the same runs: the paired differences are
  # bnpo/var - grpo/var seed by seed.
  results = {"ckpt": {"bnpo/var": [1.0, 2.0, 3.0, 4.0],
                      "grpo/var": [1.5, 2.6, 3.4, 4.5]}}
  claim = verdicts.Claim("bnpo lower", "bnpo/var", "ckpt", "ckpt", "less",
                         control_metric="grpo/var")
  out = verdicts.evaluate(claim, results)
  assert out.verdict == "reproduced"
  assert (out.difference, out.lo, out.hi) == pytest.approx(
      verdicts.paired_t_interval([1.0, 2.0, 3.0, 4.0],
                                 [1.5, 2.6, 3.4, 4.5]))
  with pytest.raises(ValueError, match="no metric 'nope'"):
    verdicts.evaluate(dataclasses.replace(claim, control_metric="nope"),
                      results)


def test_a_claim_against_a_constant_is_a_one_sample_interval():
  results = {"m": {"corr": [0.4, 0.5, 0.45, 0.6]}}
  claim = verdicts.Claim("positive", "corr", "m", direction="greater")
  out = verdicts.evaluate(claim, results)
  mean, lo, hi = verdicts.mean_interval([0.4, 0.5, 0.45, 0.6])
  assert (out.difference, out.lo, out.hi) == pytest.approx((mean, lo, hi))
  assert out.verdict == "reproduced"
  shifted = dataclasses.replace(claim, value=0.7)
  assert verdicts.evaluate(shifted, results).verdict == "not reproduced"
