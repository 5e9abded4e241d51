"""Verdicts on reproduction claims: paired intervals over seeds, and the rule.

A reproduction table compares a method with a control on the same bases, the
same prompt order and the same seeds, so each seed gives one paired
difference ``d_s = metric(method, s) - metric(control, s)``. A claim states
the side of 0 the paper puts the difference on (``"greater"``: the method is
higher; ``"less"``: lower), and the rule is fixed before the results exist:

* ``"reproduced"`` when the confidence interval of the mean difference lies
  entirely on the claimed side of 0;
* ``"not reproduced"`` when it lies entirely on the other side;
* ``"inconclusive"`` otherwise (it contains 0).

Two intervals are available: the paired t-interval (``paired_t_interval``,
exact under normal differences) and the paired percentile bootstrap
(``paired_bootstrap_interval``, resampling seeds with replacement, seeded).
With few seeds the bootstrap is too narrow (3 seeds give at most 10 distinct
resampled means); prefer the t-interval below 10 seeds.

Everything here is NumPy and SciPy (a dependency of JAX), no JAX.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

DIRECTIONS = ("greater", "less")
TESTS = ("paired_t", "paired_bootstrap")
VERDICTS = ("reproduced", "not reproduced", "inconclusive")


def _as_values(name: str, x: Sequence[float]) -> np.ndarray:
  arr = np.asarray(x, dtype=np.float64)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be one value per seed (rank 1), got shape"
                     f" {arr.shape}.")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} has non-finite values: {arr.tolist()}.")
  return arr


def _differences(treatment, control) -> np.ndarray:
  a = _as_values("treatment", treatment)
  b = _as_values("control", control)
  if a.shape != b.shape:
    raise ValueError(f"treatment and control must pair seed by seed, got"
                     f" {a.size} and {b.size} values.")
  if a.size < 2:
    raise ValueError(f"a paired interval needs at least 2 seeds, got"
                     f" {a.size}.")
  return a - b


def _check_confidence(confidence: float) -> None:
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")


def mean_interval(values: Sequence[float], *, confidence: float = 0.95
                  ) -> tuple[float, float, float]:
  """``(mean, lo, hi)``: the mean over seeds and its t-interval (a table
  cell). One value gives ``(v, nan, nan)``."""
  _check_confidence(confidence)
  x = _as_values("values", values)
  if x.size == 0:
    raise ValueError("values is empty.")
  mean = float(x.mean())
  if x.size < 2:
    return mean, math.nan, math.nan
  # Imported here: the registry imports every divrl module, and SciPy's
  # stats module is slow to import.
  from scipy import stats  # pylint: disable=g-import-not-at-top
  half = (stats.t.ppf(0.5 + confidence / 2, x.size - 1)
          * x.std(ddof=1) / math.sqrt(x.size))
  return mean, mean - float(half), mean + float(half)


def paired_t_interval(treatment: Sequence[float], control: Sequence[float],
                      *, confidence: float = 0.95
                      ) -> tuple[float, float, float]:
  """``(mean difference, lo, hi)``: the t-interval of the mean of the paired
  differences, ``mean(d) +- t_{(1+c)/2, n-1} sd(d) / sqrt(n)``."""
  _check_confidence(confidence)
  return mean_interval(_differences(treatment, control),
                       confidence=confidence)


def paired_bootstrap_interval(treatment: Sequence[float],
                              control: Sequence[float], *,
                              confidence: float = 0.95,
                              num_resamples: int = 10_000, seed: int = 0
                              ) -> tuple[float, float, float]:
  """``(mean difference, lo, hi)``: the percentile interval of the mean
  difference over ``num_resamples`` resamplings of the seeds with
  replacement (``numpy.random.default_rng(seed)``)."""
  _check_confidence(confidence)
  if num_resamples < 1:
    raise ValueError(f"num_resamples must be >= 1, got {num_resamples}.")
  d = _differences(treatment, control)
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, d.size, size=(num_resamples, d.size))
  means = d[idx].mean(axis=1)
  lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
  return float(d.mean()), float(lo), float(hi)


def verdict(lo: float, hi: float, direction: str) -> str:
  """The rule of the module docstring for an interval ``[lo, hi]`` of
  ``treatment - control`` and the claimed ``direction``."""
  if direction not in DIRECTIONS:
    raise ValueError(f"direction must be one of {DIRECTIONS}, got"
                     f" {direction!r}.")
  if math.isnan(lo) or math.isnan(hi) or lo > hi:
    raise ValueError(f"need an interval lo <= hi, got [{lo}, {hi}].")
  above, below = lo > 0.0, hi < 0.0
  if direction == "less":
    above, below = below, above
  if above:
    return "reproduced"
  if below:
    return "not reproduced"
  return "inconclusive"


@dataclasses.dataclass(frozen=True)
class Claim:
  """One claim of a table: ``metric(treatment) <direction> metric(control)``.

  Attributes:
    name: how the results file names it.
    metric: the metric compared (a column of the table, e.g. ``"pass@256"``).
    treatment: the method the paper claims something about.
    control: what it is compared with (e.g. the base or plain GRPO).
    direction: ``"greater"`` or ``"less"``.
    test: ``"paired_t"`` or ``"paired_bootstrap"``.
    confidence: the interval's level.
    control_metric: the control's metric when it is not ``metric`` (e.g.
      two estimators measured in the same run: ``metric`` = ``"bnpo/var"``
      of a run against ``control_metric`` = ``"grpo/var"`` of the same run).
    value: with ``control=None``, the constant the metric is compared with
      (``metric(treatment) > value``): the interval is then the one-sample
      t-interval (or bootstrap) of ``metric - value`` over seeds.
  """

  name: str
  metric: str
  treatment: str
  control: str | None = None
  direction: str = "greater"
  test: str = "paired_t"
  confidence: float = 0.95
  control_metric: str | None = None
  value: float = 0.0

  @property
  def metrics(self) -> tuple[str, str]:
    """``(treatment's metric, control's metric)``."""
    return self.metric, self.control_metric or self.metric

  def __post_init__(self):
    if self.direction not in DIRECTIONS:
      raise ValueError(f"Claim {self.name!r}: direction must be one of"
                       f" {DIRECTIONS}, got {self.direction!r}.")
    if self.test not in TESTS:
      raise ValueError(f"Claim {self.name!r}: test must be one of {TESTS},"
                       f" got {self.test!r}.")
    _check_confidence(self.confidence)


@dataclasses.dataclass(frozen=True)
class Outcome:
  """A claim's result: the mean paired difference, its interval, the
  verdict and the number of seeds."""

  claim: Claim
  difference: float
  lo: float
  hi: float
  verdict: str
  seeds: int


def evaluate(claim: Claim,
             results: Mapping[str, Mapping[str, Sequence[float]]]
             ) -> Outcome:
  """Applies ``claim`` to ``results[method][metric]``, one value per seed in
  the same seed order for every method.

  Raises:
    ValueError: naming a method or metric missing from ``results``.
  """
  values = {}
  for role, metric in zip(("treatment", "control"), claim.metrics):
    method = getattr(claim, role)
    if method is None:   # a constant control
      continue
    if method not in results:
      raise ValueError(f"Claim {claim.name!r}: no results for {role}"
                       f" {method!r}; have {sorted(results)}.")
    if metric not in results[method]:
      raise ValueError(f"Claim {claim.name!r}: {method!r} has no metric"
                       f" {metric!r}; have {sorted(results[method])}.")
    values[role] = results[method][metric]
  if claim.control is None:
    values["control"] = [claim.value] * len(values["treatment"])
  interval = (paired_t_interval if claim.test == "paired_t"
              else paired_bootstrap_interval)
  diff, lo, hi = interval(values["treatment"], values["control"],
                          confidence=claim.confidence)
  return Outcome(claim, diff, lo, hi, verdict(lo, hi, claim.direction),
                 len(values["treatment"]))
