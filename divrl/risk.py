"""Risk measures over a group's returns, and their policy gradients as
advantages.

A group of ``n`` sampled returns ``r_1..r_n`` (optionally weighted by ``w``)
is an empirical distribution ``F``. The mean objective of GRPO-style training
is one functional of ``F``; a *risk measure* weighs its regions differently.

**Distortion (spectral) risk measures.** With a distortion ``H: [0,1] ->
[0,1]`` (increasing, ``H(0) = 0``, ``H(1) = 1``) and its density (the risk
spectrum) ``phi = H'``::

  rho_H(F) = sum_m r_(m) [H(W_m) - H(W_{m-1})]          (an L-statistic)

over the sorted returns ``r_(1) <= ... <= r_(n)`` with cumulative weights
``W_m`` (``m / n`` for equal weights). The identity ``H(u) = u`` is the mean;
``H(u) = min(u / alpha, 1)`` the lower-tail CVaR. The score-function gradient
of ``rho_H`` for a policy ``pi`` that samples the returns is (Tamar, Glassner
and Mannor, "Optimizing the CVaR via Sampling", AAAI 2015, for CVaR; the
general form follows from ``rho_H = -int H'(F(x)) dF(x)`` differentiated in
``F``)::

  grad rho_H = E_pi[ A(y) grad log pi(y) ],   A(y) = int_{-inf}^{r(y)} phi(F(x)) dx

With the empirical ``F`` (constant ``W_m`` between ``r_(m)`` and
``r_(m+1)``), the advantage is a sum over the order statistics' gaps::

  A(r_(j)) = sum_{m < j} phi(W_m) (r_(m+1) - r_(m))

so it is the *per-sample weight over the group's order statistics* of the
gradient. ``phi`` is taken right-continuous, which makes the CVaR advantage
``-(q - r)_+ / alpha`` with ``q = r_(ceil(alpha n))`` (the lower empirical
quantile). Any per-group constant may be added (it leaves the expected
gradient unchanged); ``baseline`` picks it. On a tabular policy, with the
policy's own probabilities as weights, ``sum_y grad pi(y) A(y)`` equals the
exact gradient of ``rho_H`` wherever it is differentiable (tested).

Siblings that are not distortions: the entropic risk
``-(1/gamma) log E[exp(-gamma r)]`` and mean minus ``lambda`` times the
variance or the standard deviation, each with its exact advantage.

**RiskPO** (Ren et al., "RiskPO: Risk-based Policy Optimization via
Verifiable Reward for LLM Post-Training", arXiv:2510.00911; formulas checked
against the authors' released code, ``compute_grpo_bundle_rvar_outcome_
advantage_quantile_tracking``): bundles of questions, "papers" made of the
``j``-th response to each question of a bundle, a Mixed-VaR advantage of the
paper scores from quantiles tracked across steps (``quantile_tracker_*``, a
carried state).

Rows are compared within their group (``group_ids``, ragged, static
``num_groups``); ``valid`` excludes rows. Inside ``shard_map``, pass
``axis_name``: the rows are all-gathered (a risk measure needs the whole
group), so memory is ``O(B_global)`` per device.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.advantages import group_advantage_part, scalar_rewards
from divrl.registry import (State, above, at_least, between, defaults_from,
                            excluding, integer, register)
from divrl.sequences import per_token
from divrl.types import Batch

Array = jax.Array

BASELINES = ("mean", "min", "max")


class Distortion(NamedTuple):
  """A distortion risk measure.

  Attributes:
    name: for messages and metrics.
    cdf: ``H(u)``, increasing on ``[0, 1]`` with ``H(0) = 0``, ``H(1) = 1``.
    density: ``phi(u)``, the right derivative of ``H`` (the risk spectrum),
      ``>= 0``. Both map a float array to an array of its shape.
  """

  name: str
  cdf: Callable[[Array], Array]
  density: Callable[[Array], Array]


def _check_level(name: str, value: float, low_open=True) -> None:
  if not (0.0 < value <= 1.0 if low_open else 0.0 <= value < 1.0):
    raise ValueError(f"{name} must lie in (0, 1], got {value}.")


def identity() -> Distortion:
  """``H(u) = u``: the risk measure is the mean (risk neutral)."""
  return Distortion("mean", lambda u: u, jnp.ones_like)


def cvar(alpha: float, tail: str = "lower") -> Distortion:
  """Conditional value at risk: the mean of the worst (``tail="lower"``) or
  best (``"upper"``) ``alpha`` share of the returns.

  Lower: ``H(u) = min(u / alpha, 1)``, ``phi(u) = 1[u < alpha] / alpha``.
  Upper: ``H(u) = max(u - (1 - alpha), 0) / alpha``, ``phi(u) = 1[u >= 1 -
  alpha] / alpha``. ``alpha = 1`` is the mean.
  """
  _check_level("alpha", alpha)
  a = float(alpha)
  if tail == "lower":
    return Distortion(f"cvar_lower({a})",
                      lambda u: jnp.minimum(u / a, 1.0),
                      lambda u: jnp.where(u < a, 1.0 / a, 0.0))
  if tail == "upper":
    lo = 1.0 - a
    return Distortion(f"cvar_upper({a})",
                      lambda u: jnp.maximum(u - lo, 0.0) / a,
                      lambda u: jnp.where(u >= lo, 1.0 / a, 0.0))
  raise ValueError(f"tail must be 'lower' or 'upper', got {tail!r}.")


def rvar(lo: float, hi: float) -> Distortion:
  """Range value at risk: the mean of the returns between the ``lo`` and
  ``hi`` quantile levels, ``H(u) = clip((u - lo) / (hi - lo), 0, 1)``.

  ``rvar(0, alpha)`` is the lower CVaR, ``rvar(1 - alpha, 1)`` the upper.
  """
  if not 0.0 <= lo < hi <= 1.0:
    raise ValueError(f"rvar needs 0 <= lo < hi <= 1, got lo={lo}, hi={hi}.")
  lo, hi = float(lo), float(hi)
  w = hi - lo
  return Distortion(f"rvar({lo},{hi})",
                    lambda u: jnp.clip((u - lo) / w, 0.0, 1.0),
                    lambda u: jnp.where((u >= lo) & (u < hi), 1.0 / w, 0.0))


def var(level: float, width: float = 0.1) -> Distortion:
  """Value at risk at ``level``, smoothed: the range VaR over ``[level -
  width / 2, level + width / 2]`` (clipped to ``[0, 1]``).

  VaR itself (``width -> 0``) is a distortion with a step ``H`` and no
  density, so its score-function gradient needs the density of the returns
  at the quantile, which a group of discrete rewards does not have; the
  band is the sibling we choose. Its value tends to the ``level``-quantile
  as ``width`` shrinks.
  """
  _check_level("level", level)
  if not width > 0:
    raise ValueError(f"width must be > 0, got {width}.")
  return rvar(max(level - width / 2, 0.0), min(level + width / 2, 1.0))


def mixture(weights: Sequence[float],
            distortions: Sequence[Distortion]) -> Distortion:
  """The convex combination ``sum_k w_k H_k`` (``w`` normalised to sum 1).

  RiskPO's Mixed-VaR is ``mixture([w, 1], [cvar(alpha), rvar(alpha,
  beta)])``.
  """
  if len(weights) != len(distortions) or not distortions:
    raise ValueError("mixture needs one weight per distortion, got "
                     f"{len(weights)} weights and {len(distortions)}.")
  if any(w < 0 for w in weights) or not sum(weights) > 0:
    raise ValueError(f"mixture weights must be >= 0 with a positive sum, got"
                     f" {list(weights)}.")
  w = [float(x) / float(sum(weights)) for x in weights]
  ds = tuple(distortions)
  name = "+".join(f"{wk:.3g}*{d.name}" for wk, d in zip(w, ds))
  return Distortion(name,
                    lambda u: sum(wk * d.cdf(u) for wk, d in zip(w, ds)),
                    lambda u: sum(wk * d.density(u) for wk, d in zip(w, ds)))


DISTORTIONS = {"mean": identity, "cvar": cvar, "rvar": rvar, "var": var}


# --- Sorted groups ----------------------------------------------------------


class _Sorted(NamedTuple):
  """All rows sorted by ``(group, return)``; invalid rows last in a group."""
  r: Array          # [N] returns (0 for invalid rows)
  group: Array      # [N] group ids
  ok: Array         # [N] bool, valid
  w: Array          # [N] weight normalised within the group (0 if invalid)
  cum: Array        # [N] cumulative normalised weight W_m (inclusive)
  prev: Array       # [N] W_{m-1}
  gap: Array        # [N] r_(m+1) - r_(m) to the next valid row of the group
  pos: Array        # [N] float 0-based position among the group's rows
  n: Array          # [N] float number of valid rows of the group
  order: Array      # [N] the sorting permutation of the gathered rows
  local: Array      # [B] positions of this device's rows in the gathered ones


def _check(rewards: Array, group_ids: Array, weights, valid) -> None:
  chex.assert_rank([rewards, group_ids], 1)
  chex.assert_type(rewards, float)
  chex.assert_type(group_ids, int)
  chex.assert_equal_shape([rewards, group_ids])
  if weights is not None:
    chex.assert_equal_shape([rewards, weights])
  if valid is not None:
    chex.assert_equal_shape([rewards, valid])


def sort_groups(rewards: Array, group_ids: Array, num_groups: int,
                weights=None, valid=None, axis_name=None) -> _Sorted:
  """All rows (gathered over ``axis_name``) sorted by ``(group, reward)``,
  invalid rows last in their group, ties in batch order; see ``_Sorted``."""
  _check(rewards, group_ids, weights, valid)
  b = rewards.shape[0]
  ok = jnp.ones((b,), bool) if valid is None else valid.astype(bool)
  r = groups.all_gather(rewards.astype(jnp.float32), axis_name)
  g = groups.all_gather(group_ids, axis_name)
  ok = groups.all_gather(ok, axis_name)
  order = jnp.lexsort((jnp.where(ok, r, jnp.inf), ~ok, g))
  rs, gs, oks = r[order], g[order], ok[order]
  rs = jnp.where(oks, rs, 0.0)
  n = jax.ops.segment_sum(oks.astype(jnp.int32), gs, num_segments=num_groups)
  size = jax.ops.segment_sum(jnp.ones_like(gs), gs, num_segments=num_groups)
  first = jnp.cumsum(size) - size                       # first sorted row
  pos = jnp.arange(gs.shape[0]) - first[gs]             # 0-based in group
  if weights is None:
    # Exact W_m = m / n from integer counts (a level such as alpha = 0.2 is
    # then hit exactly, which matters for the right-continuous density).
    nf = jnp.maximum(n[gs], 1).astype(jnp.float32)
    ws = jnp.where(oks, 1.0 / nf, 0.0)
    cum = jnp.where(oks, (pos + 1).astype(jnp.float32) / nf, 0.0)
    prev = jnp.where(oks, pos.astype(jnp.float32) / nf, 0.0)
  else:
    wv = groups.all_gather(weights.astype(jnp.float32), axis_name)[order]
    wv = jnp.where(oks, wv, 0.0)
    total = jax.ops.segment_sum(wv, gs, num_segments=num_groups)[gs]
    ws = wv / jnp.where(total > 0, total, 1.0)
    cum = groups.segment_cumsum(ws, pos == 0)
    prev = cum - ws
  nxt_same = jnp.concatenate([(gs[1:] == gs[:-1]) & oks[1:],
                              jnp.zeros((1,), bool)])
  nxt = jnp.concatenate([rs[1:], jnp.zeros((1,), rs.dtype)])
  gap = jnp.where(nxt_same & oks, nxt - rs, 0.0)
  local = groups.global_index(b, axis_name)
  return _Sorted(rs, gs, oks, ws, cum, prev, gap, pos.astype(jnp.float32),
                 n[gs].astype(jnp.float32), order, local)


def unsort(s: _Sorted, values: Array) -> Array:
  """Sorted per-row values back to this device's rows, 0 for invalid."""
  out = jnp.zeros_like(values).at[s.order].set(jnp.where(s.ok, values, 0.0))
  return out[s.local]


# --- Distortion risk --------------------------------------------------------


def distortion_risk(rewards: Array, group_ids: Array, num_groups: int,
                    distortion: Distortion, *, weights: Array | None = None,
                    valid: Array | None = None, axis_name=None) -> Array:
  """``rho_H`` of each group's returns, ``[num_groups]`` (0 for a group with
  no valid row); see the module docstring.

  Args:
    rewards: ``[B]`` float returns.
    group_ids: ``[B]`` int group ids in ``[0, num_groups)``.
    num_groups: static number of groups.
    distortion: a ``Distortion`` (``cvar``, ``rvar``, ``var``,
      ``identity``, ``mixture``, or your own).
    weights: optional ``[B]`` nonnegative sample weights (normalised within
      each group); default equal weights.
    valid: optional ``[B]`` bool; invalid rows are left out.
    axis_name: mesh axis inside ``shard_map``.
  """
  s = sort_groups(rewards, group_ids, num_groups, weights, valid, axis_name)
  h = distortion.cdf(s.cum) - distortion.cdf(jnp.maximum(s.prev, 0.0))
  return jax.ops.segment_sum(jnp.where(s.ok, s.r * h, 0.0), s.group,
                             num_segments=num_groups)


def distortion_advantages(rewards: Array, group_ids: Array, num_groups: int,
                          distortion: Distortion, *,
                          weights: Array | None = None,
                          baseline: str = "mean",
                          valid: Array | None = None,
                          axis_name=None) -> Array:
  """Per-sample advantages whose score-function gradient is that of
  ``distortion_risk``: ``A(r_(j)) = sum_{m<j} phi(W_m) (r_(m+1) - r_(m))``
  plus a per-group constant.

  Args:
    rewards, group_ids, num_groups, distortion, weights, valid, axis_name:
      as in ``distortion_risk``.
    baseline: the constant. ``"mean"``: the group's (weighted) mean
      advantage is 0; ``"min"``: the group's lowest return gets 0;
      ``"max"``: the highest gets 0 (so the lower CVaR advantage is RiskPO's
      ``-(q - r)_+ / alpha``).

  Returns:
    ``[B]`` float32 advantages, 0 for invalid rows. Ties get equal
    advantages, a group of one or of equal returns gets 0.
  """
  if baseline not in BASELINES:
    raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}.")
  s = sort_groups(rewards, group_ids, num_groups, weights, valid, axis_name)
  step = jnp.where(s.gap > 0, distortion.density(s.cum) * s.gap, 0.0)
  start = jnp.concatenate([jnp.ones((1,), bool), s.group[1:] != s.group[:-1]])
  adv = groups.segment_cumsum(step, start) - step     # exclusive: m < j
  if baseline == "mean":
    base = jax.ops.segment_sum(s.w * adv, s.group, num_segments=num_groups)
  elif baseline == "max":
    base = jax.ops.segment_max(jnp.where(s.ok, adv, -jnp.inf), s.group,
                               num_segments=num_groups)
    base = jnp.where(jnp.isfinite(base), base, 0.0)
  else:
    base = jnp.zeros((num_groups,), adv.dtype)
  return unsort(s, adv - base[s.group])


def _scaled(adv: Array, rewards: Array, group_ids: Array, num_groups: int,
            scale_by_std: bool, eps: float, axis_name) -> Array:
  """``adv`` divided by the group's unbiased reward std plus ``eps``."""
  if not scale_by_std:
    return adv
  _, v, _ = groups.group_moments(rewards.astype(jnp.float32), group_ids,
                                 num_groups, ddof=1, axis_name=axis_name)
  return adv / (jnp.sqrt(v) + eps)


def cvar_advantages(rewards: Array, group_ids: Array, num_groups: int, *,
                    alpha: float = 0.2, tail: str = "lower",
                    baseline: str = "mean", scale_by_std: bool = False,
                    eps: float = 1e-6, valid: Array | None = None,
                    axis_name=None) -> Array:
  """The CVaR advantage of each group (``distortion_advantages`` of
  ``cvar(alpha, tail)``), optionally divided by the group's reward std.

  Lower tail (risk averse): only the worst ``alpha`` share of a group gets a
  gradient, toward raising its returns (Tamar et al., AAAI 2015; RiskPO's
  CVaR term, arXiv:2510.00911). Upper tail: risk seeking.
  """
  adv = distortion_advantages(rewards, group_ids, num_groups,
                              cvar(alpha, tail), baseline=baseline,
                              valid=valid, axis_name=axis_name)
  return _scaled(adv, rewards, group_ids, num_groups, scale_by_std, eps,
                 axis_name)


def rvar_advantages(rewards: Array, group_ids: Array, num_groups: int, *,
                    lo: float = 0.2, hi: float = 0.9, baseline: str = "mean",
                    scale_by_std: bool = False, eps: float = 1e-6,
                    valid: Array | None = None, axis_name=None) -> Array:
  """The range-VaR advantage (``rvar(lo, hi)``; RiskPO's RVaR term with its
  default levels), optionally divided by the group's reward std."""
  adv = distortion_advantages(rewards, group_ids, num_groups, rvar(lo, hi),
                              baseline=baseline, valid=valid,
                              axis_name=axis_name)
  return _scaled(adv, rewards, group_ids, num_groups, scale_by_std, eps,
                 axis_name)


def var_advantages(rewards: Array, group_ids: Array, num_groups: int, *,
                   level: float = 0.5, width: float = 0.2,
                   baseline: str = "mean", scale_by_std: bool = False,
                   eps: float = 1e-6, valid: Array | None = None,
                   axis_name=None) -> Array:
  """The smoothed VaR advantage (``var(level, width)``, a range VaR around
  the quantile; see ``var`` for why), optionally divided by the std."""
  adv = distortion_advantages(rewards, group_ids, num_groups,
                              var(level, width), baseline=baseline,
                              valid=valid, axis_name=axis_name)
  return _scaled(adv, rewards, group_ids, num_groups, scale_by_std, eps,
                 axis_name)


# --- Siblings: entropic risk, mean-deviation --------------------------------


def _weighted(rewards, group_ids, num_groups, weights, valid, axis_name):
  """``(r, w)`` with ``w`` normalised within each valid group (0 if
  invalid), for the local rows, via global group sums."""
  _check(rewards, group_ids, weights, valid)
  ok = (jnp.ones(rewards.shape, bool) if valid is None
        else valid.astype(bool))
  w = (jnp.ones(rewards.shape, jnp.float32) if weights is None
       else weights.astype(jnp.float32))
  w = jnp.where(ok, w, 0.0)
  total = groups.broadcast(groups.group_sum(w, group_ids, num_groups,
                                            axis_name), group_ids)
  r = jnp.where(ok, rewards.astype(jnp.float32), 0.0)
  return r, w / jnp.where(total > 0, total, 1.0), ok


def entropic_risk(rewards: Array, group_ids: Array, num_groups: int,
                  gamma: float, *, weights: Array | None = None,
                  valid: Array | None = None, axis_name=None) -> Array:
  """``-(1/gamma) log sum_i w_i exp(-gamma r_i)`` per group,
  ``[num_groups]`` (Howard and Matheson, "Risk-sensitive Markov decision
  processes", 1972).

  ``gamma > 0`` is risk averse (tends to the minimum), ``gamma < 0`` risk
  seeking (to the maximum), ``gamma -> 0`` the mean (``gamma = 0`` is
  rejected: use the mean).
  """
  if gamma == 0:
    raise ValueError("gamma must be nonzero (gamma -> 0 is the mean).")
  r, w, ok = _weighted(rewards, group_ids, num_groups, weights, valid,
                       axis_name)
  x = jnp.where(ok & (w > 0), -gamma * r + jnp.log(jnp.where(w > 0, w, 1.0)),
                -jnp.inf)
  lse = groups.group_logsumexp(x, group_ids, num_groups, axis_name)
  return jnp.where(jnp.isfinite(lse), -lse / gamma, 0.0)


def entropic_advantages(rewards: Array, group_ids: Array, num_groups: int,
                        gamma: float, *, weights: Array | None = None,
                        valid: Array | None = None, axis_name=None) -> Array:
  """The exact advantage of ``entropic_risk``: ``A_i = (1 - exp(-gamma r_i)
  / Z) / gamma`` with ``Z = sum_j w_j exp(-gamma r_j)`` (weighted mean 0).

  Computed from the group's log-sum-exp, so large ``|gamma r|`` is stable.
  """
  if gamma == 0:
    raise ValueError("gamma must be nonzero (gamma -> 0 is the mean).")
  r, w, ok = _weighted(rewards, group_ids, num_groups, weights, valid,
                       axis_name)
  x = jnp.where(ok & (w > 0), -gamma * r + jnp.log(jnp.where(w > 0, w, 1.0)),
                -jnp.inf)
  lse = groups.broadcast(groups.group_logsumexp(x, group_ids, num_groups,
                                                axis_name), group_ids)
  ratio = jnp.exp(-gamma * r - jnp.where(jnp.isfinite(lse), lse, 0.0))
  return jnp.where(ok, (1.0 - ratio) / gamma, 0.0)


DEVIATIONS = ("std", "var")


def mean_deviation_risk(rewards: Array, group_ids: Array, num_groups: int,
                        lam: float, *, deviation: str = "std",
                        weights: Array | None = None,
                        valid: Array | None = None, axis_name=None) -> Array:
  """``mean - lam * std`` (or ``- lam * var``) of each group's returns,
  ``[num_groups]``, population moments (Markowitz, "Portfolio Selection",
  1952; for policy gradients, Tamar, Di Castro and Mannor, "Policy
  Gradients with Variance Related Risk Criteria", ICML 2012)."""
  if deviation not in DEVIATIONS:
    raise ValueError(f"deviation must be one of {DEVIATIONS}, got"
                     f" {deviation!r}.")
  r, w, _ = _weighted(rewards, group_ids, num_groups, weights, valid,
                      axis_name)
  mean = groups.group_sum(w * r, group_ids, num_groups, axis_name)
  d = r - groups.broadcast(mean, group_ids)
  v = groups.group_sum(w * d * d, group_ids, num_groups, axis_name)
  return mean - lam * (jnp.sqrt(v) if deviation == "std" else v)


def mean_deviation_advantages(rewards: Array, group_ids: Array,
                              num_groups: int, lam: float, *,
                              deviation: str = "std", eps: float = 1e-6,
                              weights: Array | None = None,
                              valid: Array | None = None,
                              axis_name=None) -> Array:
  """The exact advantage of ``mean_deviation_risk`` (weighted mean 0)::

    var: A_i = (r_i - mu) - lam ((r_i - mu)^2 - v)
    std: A_i = (r_i - mu) - lam ((r_i - mu)^2 - v) / (2 sqrt(v) + eps)

  since ``d v / d pi(y) = (r_y - mu)^2 - mu^2 + const``. ``eps`` keeps a
  group of equal returns finite (its advantage is then 0).
  """
  if deviation not in DEVIATIONS:
    raise ValueError(f"deviation must be one of {DEVIATIONS}, got"
                     f" {deviation!r}.")
  r, w, ok = _weighted(rewards, group_ids, num_groups, weights, valid,
                       axis_name)
  mean = groups.group_sum(w * r, group_ids, num_groups, axis_name)
  d = r - groups.broadcast(mean, group_ids)
  v = groups.broadcast(groups.group_sum(w * d * d, group_ids, num_groups,
                                        axis_name), group_ids)
  pen = d * d - v
  if deviation == "std":
    pen = pen / (2.0 * jnp.sqrt(v) + eps)
  return jnp.where(ok, d - lam * pen, 0.0)


# --- Risk over reward heads ---------------------------------------------------
#
# A task with several reward components (``Batch.rewards [B,K]``: reward
# models of an ensemble, or one head per user group) gives each sample K
# rewards; these reduce them to one, pessimistically.


def _check_heads(rewards: Array) -> None:
  chex.assert_rank(rewards, 2)
  chex.assert_type(rewards, float)


def worst_case_heads(rewards: Array) -> Array:
  """``min_k R_k`` per sample, ``[B]`` (WCO: Coste et al., "Reward Model
  Ensembles Help Mitigate Overoptimization", arXiv:2310.02743)."""
  _check_heads(rewards)
  return jnp.min(rewards, axis=-1)


def uncertainty_weighted_heads(rewards: Array, *, lam: float = 0.1) -> Array:
  """``mean_k R_k - lam Var_k R_k`` per sample, ``[B]`` (UWO, Coste et al.,
  arXiv:2310.02743); the variance over the ``K`` heads is the population one
  (``ddof=0``), our choice."""
  _check_heads(rewards)
  return jnp.mean(rewards, axis=-1) - lam * jnp.var(rewards, axis=-1)


def median_heads(rewards: Array) -> Array:
  """``median_k R_k`` per sample, ``[B]`` (the median aggregation of reward
  ensembles, as compared in "Helping or Herding? Reward Model Ensembles
  Mitigate but do not Eliminate Reward Hacking", Eisenstein et al.,
  arXiv:2312.09244)."""
  _check_heads(rewards)
  return jnp.median(rewards, axis=-1)


def maxmin_head_weights(rewards: Array, *, temperature: float = 0.0,
                        valid: Array | None = None,
                        axis_name=None) -> Array:
  """The weights ``[K]`` over heads of MaxMin-RLHF (Chakraborty et al.,
  "MaxMin-RLHF: Towards Equitable Alignment of Large Language Models with
  Diverse Human Preferences",
  arXiv:2402.08925): one-hot on the head with the lowest batch-mean reward
  (``temperature = 0``; ties go to the lowest index), else
  ``softmax(-mean_k / temperature)``, a soft minimum."""
  _check_heads(rewards)
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}.")
  ok = (jnp.ones(rewards.shape[:1], bool) if valid is None
        else valid.astype(bool))
  total = groups.psum(
      jnp.sum(jnp.where(ok[:, None], rewards, 0.0), axis=0), axis_name)
  n = groups.psum(jnp.sum(ok), axis_name)
  means = total / jnp.maximum(n, 1).astype(rewards.dtype)
  if temperature == 0:
    return jax.nn.one_hot(jnp.argmin(means), rewards.shape[-1],
                          dtype=rewards.dtype)
  return jax.nn.softmax(-means / temperature)


def maxmin_heads(rewards: Array, *, temperature: float = 0.0,
                 valid: Array | None = None, axis_name=None) -> Array:
  """The reward of MaxMin-RLHF's worst-off head, ``R @ w`` with ``w =
  maxmin_head_weights(...)``, ``[B]``: the policy step of its max-min
  objective, optimising the user group (head) whose average reward is
  lowest. The EM that learns one reward model per user group is out of
  scope (reward-model training).

  References:
    Chakraborty et al., "MaxMin-RLHF: Alignment with Diverse Human
    Preferences", arXiv:2402.08925.
  """
  w = maxmin_head_weights(rewards, temperature=temperature, valid=valid,
                          axis_name=axis_name)
  return rewards @ jax.lax.stop_gradient(w)


# --- RiskPO: bundles, papers, Mixed-VaR, quantile tracking -----------------


class Papers(NamedTuple):
  """RiskPO's papers of a batch (global, the same on every device).

  A bundle holds ``bundle_size`` consecutive groups (questions); paper ``j``
  of a bundle takes the ``j``-th response (batch order) of each of its
  questions, for ``j`` below the bundle's smallest group size.

  Attributes:
    score: ``[P]`` paper scores ``sum_q r_{q,j}`` (0 if not a paper).
    valid: ``[P]`` bool, the slot is a paper.
    bundle: ``[P]`` int bundle of each slot.
    row_paper: ``[B]`` int paper slot of each local row.
    row_valid: ``[B]`` bool, the row belongs to a paper.
  """

  score: Array
  valid: Array
  bundle: Array
  row_paper: Array
  row_valid: Array


def num_bundles(num_groups: int, bundle_size: int) -> int:
  """Static number of bundles."""
  return -(-num_groups // bundle_size)


def bundle_papers(rewards: Array, group_ids: Array, num_groups: int,
                  bundle_size: int, *, axis_name=None) -> Papers:
  """Groups bundled ``bundle_size`` at a time and their papers (see
  ``Papers``), as in RiskPO's released code (bundles of consecutive
  prompts, papers without replacement)."""
  _check(rewards, group_ids, None, None)
  if bundle_size < 1:
    raise ValueError(f"bundle_size must be >= 1, got {bundle_size}.")
  b = rewards.shape[0]
  b_global = b if axis_name is None else b * jax.lax.psum(1, axis_name)
  nb = num_bundles(num_groups, bundle_size)
  index = groups.global_index(b, axis_name).astype(jnp.float32)
  j, _ = groups.group_ranks(index, group_ids, num_groups,
                            axis_name=axis_name)
  bundle = group_ids // bundle_size
  count = groups.group_count(group_ids, num_groups, axis_name)
  group_bundle = jnp.arange(num_groups) // bundle_size
  papers_per_bundle = jax.ops.segment_min(
      jnp.where(count > 0, count, jnp.iinfo(jnp.int32).max).astype(jnp.int32),
      group_bundle, num_segments=nb)
  row_valid = j.astype(jnp.int32) < papers_per_bundle[bundle]
  row_paper = bundle * b_global + j.astype(jnp.int32)
  score = groups.psum(jax.ops.segment_sum(
      jnp.where(row_valid, rewards.astype(jnp.float32), 0.0), row_paper,
      num_segments=nb * b_global), axis_name)
  slot = jnp.arange(nb * b_global)
  slot_bundle = slot // b_global
  valid = (slot % b_global) < papers_per_bundle[slot_bundle]
  return Papers(jnp.where(valid, score, 0.0), valid, slot_bundle, row_paper,
                row_valid)


def quantile_tracker_init(levels: Sequence[float]) -> dict[str, Array]:
  """The carry of RiskPO's quantile tracker at ``levels`` (e.g. ``(alpha,
  beta)``): no estimate yet."""
  z = jnp.zeros((len(levels),), jnp.float32)
  return {"q": z, "q_prev": z, "steps": jnp.zeros((), jnp.int32)}


def quantile_tracker_update(carry: dict[str, Array], scores: Array,
                            valid: Array, levels: Sequence[float], *,
                            lr: float = 0.1) -> dict[str, Array]:
  """One step of RiskPO's quantile tracker.

  The first step sets ``q`` to the batch quantiles of ``scores[valid]``
  (linear interpolation); later steps take one SGD step on the quantile
  (pinball) loss, ``q <- q + lr (level - mean 1[s < q])``. ``q_prev`` keeps
  the estimate from before this step: RiskPO's advantage of step ``t`` uses
  the quantiles tracked up to step ``t - 1``.
  """
  chex.assert_equal_shape([scores, valid])
  lv = jnp.asarray(levels, jnp.float32)
  batch_q = jnp.stack([groups.masked_quantile(scores, valid, float(a))
                       for a in levels])
  n = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
  below = jnp.sum(valid[None, :] & (scores[None, :] < carry["q"][:, None]),
                  axis=1) / n
  sgd = carry["q"] + lr * (lv - below)
  q = jnp.where(carry["steps"] == 0, batch_q, sgd)
  return {"q": q, "q_prev": carry["q"], "steps": carry["steps"] + 1}


RISKPO_MODES = ("mixed", "upper", "rvar")
RISKPO_QUANTILES = ("track", "batch", "mix")
RISKPO_CREDIT = ("uniform", "std")


def riskpo_paper_advantages(scores: Array, q_lo: Array, q_hi: Array, *,
                            alpha: float = 0.2, beta: float = 0.9,
                            mode: str = "mixed", w_mix: float = 1.5,
                            upper_weight: float = 1.5,
                            eps: float = 1e-6) -> Array:
  """RiskPO's advantage of a paper score ``s`` from quantiles ``q_lo``
  (level ``alpha``) and ``q_hi`` (level ``beta``), elementwise::

    A_RVaR = [(s - q_lo)_+ - (s - q_hi)_+ + q_lo - q_hi] / (beta - alpha)
    mixed:  (w_mix A_CVaR + A_RVaR) / (w_mix + 1),   A_CVaR = -(q_lo - s)_+ / alpha
    upper:  (upper_weight A_up + A_RVaR) / (upper_weight + 1),
            A_up = (s - q_hi)_+ / (1 - beta)      (risk seeking)
    rvar:   A_RVaR

  Each denominator gets ``+ eps`` as in the released code. ``A_RVaR`` and
  ``A_CVaR`` are the ``distortion_advantages`` of ``rvar(alpha, beta)`` and
  ``cvar(alpha)`` with ``baseline="max"`` when the quantiles are order
  statistics (tested).
  """
  if mode not in RISKPO_MODES:
    raise ValueError(f"mode must be one of {RISKPO_MODES}, got {mode!r}.")
  if not 0.0 < alpha < beta < 1.0:
    raise ValueError(f"RiskPO needs 0 < alpha < beta < 1, got alpha={alpha},"
                     f" beta={beta}.")
  relu = jax.nn.relu
  rv = (relu(scores - q_lo) - relu(scores - q_hi) + q_lo - q_hi) / (
      beta - alpha + eps)
  if mode == "mixed":
    cv = -relu(q_lo - scores) / (alpha + eps)
    return (w_mix * cv + rv) / (w_mix + 1.0)
  if mode == "upper":
    up = relu(scores - q_hi) / (1.0 - beta + eps)
    return (upper_weight * up + rv) / (upper_weight + 1.0)
  return rv


def _bundle_std(p: Papers, nb: int) -> Array:
  """Unbiased std of each bundle's paper scores, 1 for a bundle of one."""
  ok = p.valid.astype(jnp.float32)
  n = jax.ops.segment_sum(ok, p.bundle, num_segments=nb)
  mean = jax.ops.segment_sum(ok * p.score, p.bundle, num_segments=nb) / (
      jnp.maximum(n, 1.0))
  d = jnp.where(p.valid, p.score - mean[p.bundle], 0.0)
  ss = jax.ops.segment_sum(d * d, p.bundle, num_segments=nb)
  return jnp.where(n > 1, jnp.sqrt(ss / jnp.maximum(n - 1.0, 1.0)), 1.0)


def riskpo_advantages(rewards: Array, group_ids: Array, num_groups: int,
                      tracker: dict[str, Array] | None = None, *,
                      bundle_size: int = 5, alpha: float = 0.2,
                      beta: float = 0.9, mode: str = "mixed",
                      w_mix: float = 1.5, upper_weight: float = 1.5,
                      quantiles: str = "track", scale_by_std: bool = True,
                      credit: str = "std", eps: float = 1e-6,
                      axis_name=None) -> Array:
  """RiskPO's per-response advantages (arXiv:2510.00911, released code).

  Papers from ``bundle_papers``; per bundle, the ``alpha`` and ``beta``
  quantiles of its paper scores (linear interpolation; a one-paper bundle
  uses its score) or the tracked ones (``tracker``, after
  ``quantile_tracker_update``: ``quantiles="track"`` uses them once they
  exist, ``"mix"`` averages them with the bundle's, ``"batch"`` ignores
  them); ``riskpo_paper_advantages``; divided by the bundle's paper-score
  std (unbiased, 1 for one paper) plus ``eps`` when ``scale_by_std``. Each
  response gets its paper's advantage (``credit="uniform"``) or that divided
  by its question's reward std (``"std"``: unbiased, 1 when ``<= 1e-3``)
  plus ``eps``. Responses outside every paper get 0.

  The defaults are the authors' MVaR script (``run_qwen2.5_1.5b_MVaR_
  math.sh``: alpha 0.2, beta 0.9, w_mix 1.5, bundles of 5, credit "std",
  tracked quantiles with lr 0.1). Not reproduced: the optional mean
  baselines (``use_mean_as_baseline``, off in the scripts) and the
  "score" / "sum-mean" credit modes.
  """
  if quantiles not in RISKPO_QUANTILES:
    raise ValueError(f"quantiles must be one of {RISKPO_QUANTILES}, got"
                     f" {quantiles!r}.")
  if credit not in RISKPO_CREDIT:
    raise ValueError(f"credit must be one of {RISKPO_CREDIT}, got"
                     f" {credit!r}.")
  p = bundle_papers(rewards, group_ids, num_groups, bundle_size,
                    axis_name=axis_name)
  nb = num_bundles(num_groups, bundle_size)
  q_lo = groups.group_quantile(p.score, p.bundle, nb, alpha, valid=p.valid)
  q_hi = groups.group_quantile(p.score, p.bundle, nb, beta, valid=p.valid)
  if tracker is not None and quantiles != "batch":
    have = tracker["steps"] > 1
    t_lo, t_hi = tracker["q_prev"][0], tracker["q_prev"][1]
    if quantiles == "mix":
      t_lo, t_hi = (t_lo + q_lo) / 2, (t_hi + q_hi) / 2
    q_lo = jnp.where(have, t_lo, q_lo)
    q_hi = jnp.where(have, t_hi, q_hi)
  adv = riskpo_paper_advantages(p.score, q_lo[p.bundle], q_hi[p.bundle],
                                alpha=alpha, beta=beta, mode=mode,
                                w_mix=w_mix, upper_weight=upper_weight,
                                eps=eps)
  if scale_by_std:
    adv = adv / (_bundle_std(p, nb)[p.bundle] + eps)
  row = adv[p.row_paper]
  if credit == "std":
    _, var_q, _ = groups.group_moments(rewards.astype(jnp.float32),
                                       group_ids, num_groups, ddof=1,
                                       axis_name=axis_name)
    std_q = jnp.sqrt(var_q)
    row = row / (jnp.where(std_q > 1e-3, std_q, 1.0) + eps)
  return jnp.where(p.row_valid, row, 0.0)


def riskpo_tracker_init() -> dict[str, Array]:
  """The carry of the ``riskpo`` part: a tracker of the ``(alpha, beta)``
  quantiles of the paper scores."""
  return quantile_tracker_init((0.0, 0.0))


@defaults_from(riskpo_advantages, quantile_tracker_update, scalar_rewards)
def riskpo_tracker_update(carry: dict[str, Array], batch: Batch, *,
                          alpha, beta, bundle_size, lr, reward_weights,
                          axis_name=None) -> dict[str, Array]:
  """One tracker step on the batch's paper scores (``bundle_papers``)."""
  r = scalar_rewards(batch.rewards, reward_weights)
  p = bundle_papers(r, batch.group_ids, batch.groups, bundle_size,
                    axis_name=axis_name)
  return quantile_tracker_update(carry, p.score, p.valid, (alpha, beta),
                                 lr=lr)


# --- Registered parts --------------------------------------------------------


@register("advantage", "cvar",
          domains={"alpha": between(0, 1, low_open=True), "eps": above(0)})
@defaults_from(cvar_advantages, scalar_rewards)
def cvar_part(batch: Batch, *, axis_name=None, alpha, tail, baseline,
              scale_by_std, eps, reward_weights) -> Array:
  """CVaR of the group's rewards as the objective; see ``cvar_advantages``."""
  return group_advantage_part(
      cvar_advantages, batch, reward_weights, alpha=alpha, tail=tail,
      baseline=baseline, scale_by_std=scale_by_std, eps=eps,
      axis_name=axis_name)


@register("advantage", "rvar",
          domains={"lo": between(0, 1, high_open=True),
                   "hi": between(0, 1, low_open=True), "eps": above(0)})
@defaults_from(rvar_advantages, scalar_rewards)
def rvar_part(batch: Batch, *, axis_name=None, lo, hi, baseline,
              scale_by_std, eps, reward_weights) -> Array:
  """Range VaR of the group's rewards; see ``rvar_advantages``."""
  return group_advantage_part(
      rvar_advantages, batch, reward_weights, lo=lo, hi=hi,
      baseline=baseline, scale_by_std=scale_by_std, eps=eps,
      axis_name=axis_name)


@register("advantage", "var",
          domains={"level": between(0, 1, low_open=True), "width": above(0),
                   "eps": above(0)})
@defaults_from(var_advantages, scalar_rewards)
def var_part(batch: Batch, *, axis_name=None, level, width, baseline,
             scale_by_std, eps, reward_weights) -> Array:
  """Smoothed VaR of the group's rewards; see ``var_advantages``."""
  return group_advantage_part(
      var_advantages, batch, reward_weights, level=level, width=width,
      baseline=baseline, scale_by_std=scale_by_std, eps=eps,
      axis_name=axis_name)


@register("advantage", "entropic_risk",
          domains={"gamma": excluding(0)})
@defaults_from(scalar_rewards)
def entropic_risk_part(batch: Batch, *, axis_name=None, gamma: float = 1.0,
                       reward_weights) -> Array:
  """Entropic risk of the group's rewards; see ``entropic_advantages``
  (``gamma > 0`` risk averse, ``< 0`` risk seeking)."""
  return group_advantage_part(entropic_advantages, batch, reward_weights,
                              gamma=gamma, axis_name=axis_name)


@register("advantage", "mean_deviation",
          domains={"eps": above(0)})
@defaults_from(mean_deviation_advantages, scalar_rewards)
def mean_deviation_part(batch: Batch, *, axis_name=None, lam: float = 0.5,
                        deviation, eps, reward_weights) -> Array:
  """Mean minus ``lam`` times the std (or variance) of the group's rewards;
  see ``mean_deviation_advantages``."""
  return group_advantage_part(mean_deviation_advantages, batch,
                              reward_weights, lam=lam, deviation=deviation,
                              eps=eps, axis_name=axis_name)


@register("advantage", "riskpo",
          state=State(init=riskpo_tracker_init, update=riskpo_tracker_update),
          domains={"bundle_size": integer(1),
                   "alpha": between(0, 1, low_open=True, high_open=True),
                   "beta": between(0, 1, low_open=True, high_open=True),
                   "w_mix": at_least(0), "upper_weight": at_least(0),
                   "eps": at_least(0), "lr": above(0)})
@defaults_from(riskpo_advantages, quantile_tracker_update, scalar_rewards)
def riskpo_part(batch: Batch, *, carry, axis_name=None, bundle_size, alpha,
                beta, mode, w_mix, upper_weight, quantiles, scale_by_std,
                credit, eps, lr, reward_weights) -> Array:
  """RiskPO's Mixed-VaR advantage with bundles and tracked quantiles
  (carried state); see ``riskpo_advantages``. ``mode="upper"`` is the
  authors' risk-seeking variant (their script sets ``beta = 0.8``)."""
  del lr  # used by the carry update
  r = scalar_rewards(batch.rewards, reward_weights)
  adv = riskpo_advantages(r, batch.group_ids, batch.groups, carry,
                          bundle_size=bundle_size, alpha=alpha, beta=beta,
                          mode=mode, w_mix=w_mix, upper_weight=upper_weight,
                          quantiles=quantiles, scale_by_std=scale_by_std,
                          credit=credit, eps=eps, axis_name=axis_name)
  return per_token(adv, batch.response_mask)


def _heads_of(batch: Batch, part: str) -> Array:
  if batch.rewards.ndim != 2:
    raise ValueError(f"the {part!r} transform needs reward components,"
                     f" Batch.rewards of shape [B,K]; got"
                     f" {tuple(batch.rewards.shape)}.")
  return batch.rewards


@register("transform", "worst_case_heads", reads=("reward_components",))
def worst_case_heads_part(batch: Batch) -> Batch:
  """Reduces the reward components to their minimum (WCO); see
  ``worst_case_heads``."""
  return batch.replace(rewards=worst_case_heads(_heads_of(
      batch, "worst_case_heads")))


@register("transform", "uncertainty_weighted_heads",
          reads=("reward_components",))
@defaults_from(uncertainty_weighted_heads)
def uncertainty_weighted_heads_part(batch: Batch, *, lam) -> Batch:
  """Reduces the reward components to mean minus ``lam`` times their
  variance (UWO); see ``uncertainty_weighted_heads``."""
  return batch.replace(rewards=uncertainty_weighted_heads(
      _heads_of(batch, "uncertainty_weighted_heads"), lam=lam))


@register("transform", "median_heads", reads=("reward_components",))
def median_heads_part(batch: Batch) -> Batch:
  """Reduces the reward components to their median; see
  ``median_heads``."""
  return batch.replace(rewards=median_heads(_heads_of(batch,
                                                      "median_heads")))


@register("transform", "maxmin_heads", reads=("reward_components",),
          domains={"temperature": at_least(0)})
@defaults_from(maxmin_heads)
def maxmin_heads_part(batch: Batch, *, axis_name=None,
                      temperature) -> Batch:
  """Keeps the reward component of the worst-off head (MaxMin-RLHF), or a
  soft minimum over heads; see ``maxmin_heads``."""
  return batch.replace(rewards=maxmin_heads(
      _heads_of(batch, "maxmin_heads"), temperature=temperature,
      axis_name=axis_name))
