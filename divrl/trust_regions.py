"""PPO-style clipped surrogates with adaptive trust regions: BAPO, ETR and
GRPO-Guard.

* **BAPO** (``bapo`` surrogate): explicit ratio bounds ``[c_low, c_high]``
  searched per batch on a static grid until the positive-advantage tokens
  carry a target share of the loss, then dual-clip PPO with those bounds.
* **ETR** (``etr`` surrogate): a per-token clip range scaled up for large
  advantages and for groups of high reward variance (inspired by the paper;
  the scaling functions are our choice).
* **GRPO-Guard** (``grpo_guard`` surrogate): the log-ratio is standardised
  per response position before PPO clipping, so that the clip is centred
  (inspired by the flow-matching paper; the transfer to language models is
  ours).

All three follow ``divrl.surrogates.ppo_clip``'s conventions: the per-token
loss is to be minimised, ``rho = exp(clamp(l - o))``, advantages and
behaviour log-probs are constants, and on tokens inside the clip range the
gradient of the loss with respect to ``l`` is ``-A rho``. Batch-global
statistics (BAPO's contributions, ETR's means, GRPO-Guard's per-position
moments) are ``psum``-ed over ``axis_name`` inside ``shard_map``, so every
shard uses the same bounds. They are taken over the batch the surrogate is
called on: with micro-batches, over each micro-batch.

References:
  Xi et al., "BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs
  via Balanced Policy Optimization with Adaptive Clipping", arXiv:2510.18927;
  the authors' code: https://github.com/WooooDyy/BAPO
  Zhang et al., "ETR: Outcome-Guided Elastic Trust Regions for Policy
  Optimization", arXiv:2601.03723.
  Wang et al., "GRPO-Guard: Mitigating Implicit Over-Optimization in Flow
  Matching via Regulated Clipping", arXiv:2510.22319.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from divrl import groups
from divrl.registry import above, at_least, between, defaults_from, register
from divrl.sequences import valid
from divrl.surrogates import check_clip, check_eps, clipped_pg, log_ratio
from divrl.surrogates import ppo_clip
from divrl.types import Batch, behaviour_logprobs

Array = jax.Array
sg = jax.lax.stop_gradient

_TINY = 1e-12


def _check_2d(*xs: Array) -> None:
  chex.assert_rank(list(xs), 2)
  chex.assert_equal_shape(list(xs))


def _check_dual_clip(clip_ratio_c) -> None:
  if clip_ratio_c is not None and not clip_ratio_c > 1.0:
    raise ValueError(f"clip_ratio_c must be > 1 (dual clip) or None, got"
                     f" {clip_ratio_c}.")


def clipped_loss(rho: Array, advantages: Array, low: Array, high: Array,
                 clip_ratio_c: float | None = None):
  """PPO clip with explicit, possibly traced or per-token, ratio bounds.

  ``L = max(-A rho, -A clip(rho, low, high))``, then with the dual clip
  ``L = min(L, -A clip_ratio_c)`` where ``A < 0``: ``ppo_clip`` with
  ``eps_low = 1 - low`` and ``eps_high = high - 1`` (its ``clipped_pg``),
  for bounds that are arrays rather than Python floats.

  Returns:
    ``(loss, {"clipfrac"[, "clipfrac_lower"]})``.
  """
  adv = sg(advantages)
  loss, clipfrac = clipped_pg(rho, adv, 1.0 - low, high - 1.0)
  diagnostics = {"clipfrac": clipfrac}
  if clip_ratio_c is not None:
    cap = -adv * clip_ratio_c
    diagnostics["clipfrac_lower"] = ((adv < 0) & (loss > cap)).astype(
        jnp.float32)
    loss = jnp.where(adv < 0, jnp.minimum(loss, cap), loss)
  return loss, diagnostics


# --- BAPO -------------------------------------------------------------------


def bound_path(start: float, maximum: float, step: float) -> list[float]:
  """The values a bound takes when raised from ``start`` by ``step`` up to
  ``maximum`` (the last step is cut at ``maximum``), as BAPO's search loop
  does: ``[start, start + step, ..., maximum]``."""
  values = [float(start)]
  while values[-1] < maximum:
    values.append(min(values[-1] + step, float(maximum)))
  return values


def search_path(lower_start: float, lower_max: float, lower_step: float,
                upper_start: float, upper_max: float, upper_step: float):
  """BAPO's candidate bounds in search order, as static NumPy arrays.

  First ``c_low`` is raised with ``c_high`` at its start, then ``c_high``
  with ``c_low`` at its maximum: ``(lows, highs, low_index, high_index)``
  where candidate ``k`` is ``(lows[low_index[k]], highs[high_index[k]])``.
  """
  lows = bound_path(lower_start, lower_max, lower_step)
  highs = bound_path(upper_start, upper_max, upper_step)
  low_index = list(range(len(lows))) + [len(lows) - 1] * (len(highs) - 1)
  high_index = [0] * len(lows) + list(range(1, len(highs)))
  return (np.asarray(lows), np.asarray(highs), np.asarray(low_index),
          np.asarray(high_index))


def _check_bapo(target_share, lower_start, lower_max, lower_step,
                upper_start, upper_max, upper_step, measure) -> None:
  if not 0.0 <= target_share <= 1.0:
    raise ValueError(f"target_share must be in [0, 1], got {target_share}.")
  if not 0.0 <= lower_start <= 1.0:
    raise ValueError(f"lower_start must be in [0, 1], got {lower_start}.")
  if not lower_start <= lower_max <= 1.0:
    raise ValueError(f"lower_max must be in [lower_start, 1] ="
                     f" [{lower_start}, 1], got {lower_max}.")
  if not upper_start >= 1.0:
    raise ValueError(f"upper_start must be >= 1, got {upper_start}.")
  if not upper_max >= upper_start:
    raise ValueError(f"upper_max must be >= upper_start = {upper_start},"
                     f" got {upper_max}.")
  for name, value in (("lower_step", lower_step), ("upper_step", upper_step)):
    if not value > 0:
      raise ValueError(f"{name} must be > 0, got {value}.")
  if measure not in ("loss", "gradient"):
    raise ValueError(f"measure must be 'loss' or 'gradient', got"
                     f" {measure!r}.")


def bapo_contributions(rho: Array, advantages: Array, mask: Array,
                       lows: Array, highs: Array, *, measure: str = "loss",
                       clip_ratio_c: float | None = 3.0, axis_name=None):
  """Positive contributions ``P(c_high)`` for each ``c_high`` in ``highs``
  and negative ones ``N(c_low)`` for each ``c_low`` in ``lows``, summed over
  the valid tokens of the whole batch (``psum`` over ``axis_name``).

  ``measure="loss"`` (BAPO's code): with ``rho_bar = min(rho, c_high)``
  where ``A >= 0`` and ``max(rho, c_low)`` otherwise, ``P = sum m max(rho_bar
  A, 0)`` and ``N = sum m max(-rho_bar A, 0)``. ``measure="gradient"`` (our
  option): the size of each token's gradient ``|A| rho`` counted only where
  the clipped loss has one, ``P = sum_{A > 0} m A rho [rho <= c_high]``,
  ``N = sum_{A < 0} m |A| rho [c_low <= rho <= clip_ratio_c]``. The bounds
  loop (``lax.map``), so memory stays ``O(B T)``. Padding is ignored.

  Returns:
    ``(P [len(highs)], N [len(lows)])``.
  """
  _check_2d(rho, advantages, mask)
  v = valid(mask)
  w = jnp.where(v, mask.astype(jnp.float32), 0.0)
  rho = jnp.where(v, sg(rho), 1.0).astype(jnp.float32)
  adv = jnp.where(v, sg(advantages), 0.0).astype(jnp.float32)
  pos = w * jnp.maximum(adv, 0.0)
  neg = w * jnp.maximum(-adv, 0.0)
  cap = jnp.inf if clip_ratio_c is None else clip_ratio_c

  if measure == "loss":
    def p_of(hi):
      return jnp.sum(pos * jnp.minimum(rho, hi))

    def n_of(lo):
      return jnp.sum(neg * jnp.maximum(rho, lo))
  else:
    def p_of(hi):
      return jnp.sum(pos * rho * (rho <= hi))

    def n_of(lo):
      return jnp.sum(neg * rho * ((rho >= lo) & (rho <= cap)))

  p = jax.lax.map(p_of, jnp.asarray(highs, jnp.float32))
  n = jax.lax.map(n_of, jnp.asarray(lows, jnp.float32))
  total = groups.psum(jnp.concatenate([p, n]), axis_name)
  return total[:p.shape[0]], total[p.shape[0]:]


def bapo_bounds(rho: Array, advantages: Array, mask: Array, *,
                target_share: float = 0.5, lower_start: float = 0.6,
                lower_max: float = 0.9, lower_step: float = 0.05,
                upper_start: float = 1.2, upper_max: float = 3.0,
                upper_step: float = 0.05, measure: str = "loss",
                clip_ratio_c: float | None = 3.0, axis_name=None):
  """BAPO's bound search: the first candidate of ``search_path`` whose
  positive share ``P / (P + N)`` (``bapo_contributions``) reaches
  ``target_share``, tested as ``P >= target_share (P + N)`` (so ``P = N = 0``
  passes); the last candidate ``(lower_max, upper_max)`` when none does.

  Every candidate of the static grid is evaluated at once and the first
  passing one is picked, which is what the paper's sequential loop returns.
  The bounds carry no gradient, and with ``axis_name`` every shard picks the
  same ones.

  Returns:
    ``(c_low, c_high, share)``: scalars; ``share`` is ``P / (P + N)`` at the
    chosen bounds (1 when ``P + N = 0``).
  """
  _check_bapo(target_share, lower_start, lower_max, lower_step, upper_start,
              upper_max, upper_step, measure)
  lows, highs, li, hi = search_path(lower_start, lower_max, lower_step,
                                    upper_start, upper_max, upper_step)
  p, n = bapo_contributions(rho, advantages, mask, lows, highs,
                            measure=measure, clip_ratio_c=clip_ratio_c,
                            axis_name=axis_name)
  p_k, n_k = p[hi], n[li]
  ok = p_k >= target_share * (p_k + n_k)
  k = jnp.where(jnp.any(ok), jnp.argmax(ok), ok.shape[0] - 1)
  low = jnp.asarray(lows, jnp.float32)[jnp.asarray(li)[k]]
  high = jnp.asarray(highs, jnp.float32)[jnp.asarray(hi)[k]]
  tot = p_k[k] + n_k[k]
  share = jnp.where(tot > 0, p_k[k] / jnp.where(tot > 0, tot, 1.0), 1.0)
  return sg(low), sg(high), sg(share)


def bapo(logprobs: Array, old_logprobs: Array, advantages: Array,
         mask: Array, *, target_share: float = 0.5, lower_start: float = 0.6,
         lower_max: float = 0.9, lower_step: float = 0.05,
         upper_start: float = 1.2, upper_max: float = 3.0,
         upper_step: float = 0.05, clip_ratio_c: float | None = 3.0,
         measure: str = "loss", log_ratio_clip: float | None = 20.0,
         axis_name=None):
  """BAPO: dual-clip PPO with ratio bounds searched per batch for balance.

  ``[c_low, c_high]`` are explicit ratio bounds (not ``1 +- eps``). Starting
  from ``(lower_start, upper_start)``, ``c_low`` is raised by
  ``lower_step`` up to ``lower_max``, then ``c_high`` by ``upper_step`` up to
  ``upper_max``, stopping at the first pair where the positive-advantage
  tokens' share of the contributions ``P / (P + N)`` reaches
  ``target_share`` (``bapo_bounds``; with ``measure="loss"`` the
  contributions are ``rho_bar A`` with ``rho_bar = min(rho, c_high)`` for ``A
  >= 0`` and ``max(rho, c_low)`` otherwise). The loss is then ``L =
  max(-A rho, -A clip(rho, c_low, c_high))``, with ``L = min(L, -A
  clip_ratio_c)`` where ``A < 0``.

  Checked against the authors' released code (``recipe/bapo/policy_loss.py``
  of github.com/WooooDyy/BAPO): the same bounds, contributions, search order
  and dual clip (``clip_ratio_c`` 3.0), ``rho = exp(clamp(Delta, +-20))``,
  ``token-mean`` aggregation, and contributions all-reduced over data-parallel
  ranks. Differences: the code tests ``P / (N + 1e-8) >= adv_ratio_target``
  (1.0 by default, i.e. a share of 0.5; a code target ``T`` is
  ``target_share = T / (1 + T)``), which differs from ``P >= target_share (P
  + N)`` only at exact ties. Defaults are the paper's as the authors' README
  states them (``rho_0 = 0.5``, ``c_low`` in ``[0.6, 0.9]``, ``c_high`` in
  ``[1.2, 3.0]``); the step 0.05 is the code's (its config uses ``[0.6, 0.8]``
  and ``[1.2, 2.0]``). With the code's measure, raising ``c_low`` can only
  increase ``N`` (a clipped negative token counts ``c_low |A|``), so when the
  start fails the search always ends with ``c_low = lower_max``.
  ``measure="gradient"`` (our option, not the code's) counts a token only
  where it has a gradient, so that raising ``c_low`` removes low-ratio
  negative tokens from ``N``, as the paper describes the mechanism.

  References:
    Xi et al., "BAPO: Stabilizing Off-Policy Reinforcement Learning for LLMs
    via Balanced Policy Optimization with Adaptive Clipping",
    arXiv:2510.18927; the authors' code: https://github.com/WooooDyy/BAPO

  Returns:
    ``(loss [B,T], {"clipfrac", "ratio", "clip_low", "clip_high",
    "positive_share"[, "clipfrac_lower"]})``; the last three are the chosen
    scalars broadcast to ``[B,T]``.
  """
  _check_2d(logprobs, old_logprobs, advantages, mask)
  check_clip(log_ratio_clip)
  _check_dual_clip(clip_ratio_c)
  rho = jnp.exp(log_ratio(logprobs, sg(old_logprobs), log_ratio_clip))
  low, high, share = bapo_bounds(
      rho, advantages, mask, target_share=target_share,
      lower_start=lower_start, lower_max=lower_max, lower_step=lower_step,
      upper_start=upper_start, upper_max=upper_max, upper_step=upper_step,
      measure=measure, clip_ratio_c=clip_ratio_c, axis_name=axis_name)
  loss, diagnostics = clipped_loss(rho, advantages, low, high, clip_ratio_c)
  shape = rho.shape
  diagnostics.update(ratio=sg(rho),
                     clip_low=jnp.broadcast_to(low, shape),
                     clip_high=jnp.broadcast_to(high, shape),
                     positive_share=jnp.broadcast_to(share, shape))
  return jnp.where(valid(mask), loss, 0.0), diagnostics


@register("surrogate", "bapo",
          domains={"target_share": between(0, 1), "lower_start": between(0, 1),
                   "lower_max": between(0, 1), "lower_step": above(0),
                   "upper_start": at_least(1), "upper_max": at_least(1),
                   "upper_step": above(0), "clip_ratio_c": above(1),
                   "log_ratio_clip": above(0)})
@defaults_from(bapo)
def bapo_part(batch: Batch, advantages: Array, *, axis_name=None,
              target_share, lower_start, lower_max, lower_step, upper_start,
              upper_max, upper_step, clip_ratio_c, measure, log_ratio_clip):
  """Dual-clip PPO with per-batch adaptive ratio bounds (BAPO); see
  ``bapo``."""
  return bapo(batch.logprobs, behaviour_logprobs(batch), advantages,
              batch.mask, target_share=target_share, lower_start=lower_start,
              lower_max=lower_max, lower_step=lower_step,
              upper_start=upper_start, upper_max=upper_max,
              upper_step=upper_step, clip_ratio_c=clip_ratio_c,
              measure=measure, log_ratio_clip=log_ratio_clip,
              axis_name=axis_name)


# --- ETR --------------------------------------------------------------------


def _row_group_std(rewards: Array, rows: Array, group_ids: Array,
                   num_groups: int, axis_name=None) -> Array:
  """Population std of ``rewards [B]`` over the ``rows`` (bool) of each
  group, gathered back to ``[B]``; 0 for a group without such rows."""
  w = rows.astype(jnp.float32)
  r = jnp.where(rows, rewards, 0.0).astype(jnp.float32)
  n = groups.group_sum(w, group_ids, num_groups, axis_name)
  mean = groups.group_sum(w * r, group_ids, num_groups, axis_name) / (
      jnp.maximum(n, 1.0))
  dev = jnp.where(rows, r - groups.broadcast(mean, group_ids), 0.0)
  ss = groups.group_sum(dev * dev, group_ids, num_groups, axis_name)
  var = ss / jnp.maximum(n, 1.0)
  return jnp.sqrt(groups.broadcast(var, group_ids))


def _relative(x: Array, v: Array, axis_name) -> Array:
  """``x / mean_valid(x)`` (token mean over the batch, ``psum``-ed); 1
  everywhere when that mean is 0."""
  stats = groups.psum(jnp.stack([jnp.sum(jnp.where(v, x, 0.0)),
                           jnp.sum(v).astype(jnp.float32)]), axis_name)
  mean = stats[0] / jnp.maximum(stats[1], 1.0)
  ok = mean > _TINY
  return jnp.where(ok, x / jnp.where(ok, mean, 1.0), 1.0)


def etr_clip_scale(advantages: Array, mask: Array, rewards: Array,
                   group_ids: Array, num_groups: int, *,
                   adv_coef: float = 0.5, var_coef: float = 0.5,
                   min_scale: float = 0.5, max_scale: float = 2.0,
                   axis_name=None) -> Array:
  """ETR-style clip-range multiplier ``f [B,T]``; see ``etr``.

  ``f = clip((1 + adv_coef (|A| / mean|A| - 1)) (1 + var_coef (sigma_g /
  mean sigma - 1)), min_scale, max_scale)``, the means over the batch's
  valid tokens, ``sigma_g`` the population std of the rewards of the row's
  group (over rows with a valid token). No gradient; 0 on padding.
  """
  _check_2d(advantages, mask)
  chex.assert_shape([rewards, group_ids], (advantages.shape[0],))
  for name, value in (("adv_coef", adv_coef), ("var_coef", var_coef)):
    if not value >= 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  if not 0 <= min_scale <= 1.0:
    raise ValueError(f"min_scale must be in [0, 1], got {min_scale}.")
  if not max_scale >= 1.0:
    raise ValueError(f"max_scale must be >= 1, got {max_scale}.")
  v = valid(mask)
  a = jnp.abs(jnp.where(v, sg(advantages), 0.0)).astype(jnp.float32)
  micro = 1.0 + adv_coef * (_relative(a, v, axis_name) - 1.0)
  rows = jnp.any(v, axis=1)
  sigma = _row_group_std(sg(rewards), rows, group_ids, num_groups, axis_name)
  sigma = jnp.broadcast_to(sigma[:, None], a.shape)
  macro = 1.0 + var_coef * (_relative(sigma, v, axis_name) - 1.0)
  f = jnp.clip(micro * macro, min_scale, max_scale)
  return jnp.where(v, f, 0.0)


def etr(logprobs: Array, old_logprobs: Array, advantages: Array, mask: Array,
        rewards: Array, group_ids: Array, num_groups: int, *,
        eps_low: float = 0.2, eps_high: float = 0.2, adv_coef: float = 0.5,
        var_coef: float = 0.5, min_scale: float = 0.5,
        max_scale: float = 2.0, clip_ratio_c: float | None = None,
        log_ratio_clip: float | None = 20.0, axis_name=None):
  """ETR-style PPO clip with a per-token clip range: wider for larger
  advantages and for groups of larger reward variance.

  ``L = max(-A rho, -A clip(rho, 1 - eps_low f, 1 + eps_high f))`` (optional
  dual clip ``clip_ratio_c``), with the multiplier ``f =
  etr_clip_scale(...)`` = ``clip(phi psi, min_scale, max_scale)``: the micro
  factor ``phi = 1 + adv_coef (|A_it| / mean|A| - 1)`` grows with the
  advantage's size relative to the batch's mean ``|A|`` (high-confidence
  paths get a larger trust region), and the macro factor ``psi = 1 +
  var_coef (sigma_g / mean sigma - 1)`` with the std ``sigma_g`` of the
  rewards of the row's group (for 0/1 rewards ``sigma_g^2 = p_g (1 - p_g)``,
  largest at pass rate 1/2, the "optimal learning zone"). Both means are
  token means over the batch's valid tokens (``psum`` over ``axis_name``);
  a zero mean makes its factor 1. ``adv_coef = var_coef = 0`` is
  ``ppo_clip``.

  Inspired by ETR: the paper scales the clip boundaries with the advantage
  magnitude (micro level) and uses the group (pass-rate) variance to give
  larger update budgets to groups in the optimal learning zone (macro
  level); its exact functions and defaults were not available to us. Our
  choices: both factors are affine in the ratio to the batch mean, they
  multiply, the product is clipped to ``[min_scale, max_scale]``
  (defaults 0.5 and 2, ``adv_coef = var_coef = 0.5``), the same ``f`` scales
  both sides of the clip, and ``eps_low = eps_high = 0.2`` are GRPO's. The
  group statistics use the rows the surrogate sees: whole groups unless the
  batch is split into micro-batches.

  References:
    Zhang et al., "ETR: Outcome-Guided Elastic Trust Regions for Policy
    Optimization", arXiv:2601.03723.

  Returns:
    ``(loss [B,T], {"clipfrac", "ratio", "clip_scale"[,
    "clipfrac_lower"]})``.
  """
  _check_2d(logprobs, old_logprobs, advantages, mask)
  check_eps(eps_low, eps_high)
  check_clip(log_ratio_clip)
  _check_dual_clip(clip_ratio_c)
  f = etr_clip_scale(advantages, mask, rewards, group_ids, num_groups,
                     adv_coef=adv_coef, var_coef=var_coef,
                     min_scale=min_scale, max_scale=max_scale,
                     axis_name=axis_name)
  rho = jnp.exp(log_ratio(logprobs, sg(old_logprobs), log_ratio_clip))
  loss, diagnostics = clipped_loss(rho, advantages, 1.0 - eps_low * f,
                                   1.0 + eps_high * f, clip_ratio_c)
  diagnostics.update(ratio=sg(rho), clip_scale=f)
  return jnp.where(valid(mask), loss, 0.0), diagnostics


@register("surrogate", "etr",
          domains={"eps_low": at_least(0), "eps_high": at_least(0),
                   "adv_coef": at_least(0), "var_coef": at_least(0),
                   "min_scale": between(0, 1), "max_scale": at_least(1),
                   "clip_ratio_c": above(1), "log_ratio_clip": above(0)})
@defaults_from(etr)
def etr_part(batch: Batch, advantages: Array, *, axis_name=None, eps_low,
             eps_high, adv_coef, var_coef, min_scale, max_scale, clip_ratio_c,
             log_ratio_clip):
  """PPO clip with an advantage- and group-variance-scaled clip range,
  inspired by ETR; see ``etr``. Needs scalar rewards ``[B]``."""
  if batch.rewards.ndim != 1:
    raise ValueError(f"the surrogate 'etr' needs scalar Batch.rewards of shape"
                     f" [B], got {tuple(batch.rewards.shape)}.")
  return etr(batch.logprobs, behaviour_logprobs(batch), advantages,
             batch.mask, batch.rewards, batch.group_ids, batch.groups,
             eps_low=eps_low, eps_high=eps_high, adv_coef=adv_coef,
             var_coef=var_coef, min_scale=min_scale, max_scale=max_scale,
             clip_ratio_c=clip_ratio_c, log_ratio_clip=log_ratio_clip,
             axis_name=axis_name)


# --- GRPO-Guard ---------------------------------------------------------------


GUARD_LEVELS = ("position", "sequence", "batch")


def _unit_moments(d: Array, v: Array, axis: int | None, axis_name):
  """Mean and population variance of ``d`` over the valid entries of each
  unit (per position: ``axis=0``, psum-ed; per row: ``axis=1``; the whole
  batch: ``None``, psum-ed), broadcast to ``[B,T]``, and the counts."""
  def reduce_(x):
    s = jnp.sum(x, axis=axis, keepdims=True)
    return s if axis == 1 else groups.psum(s, axis_name)

  n = reduce_(v.astype(jnp.float32))
  mean = reduce_(jnp.where(v, d, 0.0)) / jnp.maximum(n, 1.0)
  dev = jnp.where(v, d - mean, 0.0)
  var = reduce_(dev * dev) / jnp.maximum(n, 1.0)
  full = lambda x: jnp.broadcast_to(x, d.shape)  # noqa: E731
  return full(mean), full(var), full(n)


def normalized_log_ratio(delta: Array, mask: Array, *,
                         level: str = "position", rescale: bool = True,
                         axis_name=None) -> Array:
  """GRPO-Guard-style standardised log-ratio ``[B,T]`` (no gradient).

  With ``mu_u``, ``s_u`` the mean and population std of ``delta`` over the
  valid tokens of each unit ``u`` (``level="position"``: the tokens at one
  response position across the batch, ``psum`` over ``axis_name``;
  ``"sequence"``: one row's tokens; ``"batch"``: all of them): ``z = k_u
  (delta - mu_u)`` with ``k_u = s_pool / s_u`` when ``rescale`` and ``s_u >
  0``, else ``k_u = 1``. ``s_pool^2`` is the within-unit variance pooled
  over all valid tokens, so the centred log-ratios keep their overall spread
  and every unit gets the same one. A unit with one token gets ``z = 0``.
  0 on padding.
  """
  _check_2d(delta, mask)
  if level not in GUARD_LEVELS:
    raise ValueError(f"level must be one of {GUARD_LEVELS}, got {level!r}.")
  v = valid(mask)
  d = jnp.where(v, sg(delta), 0.0).astype(jnp.float32)
  axis = {"position": 0, "sequence": 1, "batch": None}[level]
  mean, var, _ = _unit_moments(d, v, axis, axis_name)
  z = jnp.where(v, d - mean, 0.0)
  if rescale:
    stats = groups.psum(jnp.stack([jnp.sum(z * z), jnp.sum(v).astype(
        jnp.float32)]), axis_name)
    pooled = stats[0] / jnp.maximum(stats[1], 1.0)
    ok = var > _TINY
    k = jnp.where(ok, jnp.sqrt(pooled / jnp.where(ok, var, 1.0)), 1.0)
    z = z * k
  return jnp.where(v, z, 0.0)


def grpo_guard(logprobs: Array, old_logprobs: Array, advantages: Array,
               mask: Array, *, level: str = "position", rescale: bool = True,
               eps_low: float = 0.2, eps_high: float = 0.2,
               clip_ratio_c: float | None = None,
               log_ratio_clip: float | None = 20.0, axis_name=None):
  """PPO clip on a ratio whose log is standardised per response position.

  ``z = normalized_log_ratio(clamp(l - o), mask, level, rescale)``: the
  log-ratio minus its mean over the batch's valid tokens at the same
  position, rescaled so that every position has the same (pooled) spread.
  The ratio ``rho_n = exp(z + l - sg(l))`` has the value ``e^z`` and the
  gradient ``rho_n grad l``, and the loss is ``ppo_clip`` on it: ``L =
  max(-A rho_n, -A clip(rho_n, 1 - eps_low, 1 + eps_high))`` (optional dual
  clip). Unclipped tokens get the gradient ``-A rho_n``; on-policy (``l =
  o``) it is PPO exactly.

  Inspired by GRPO-Guard: a method for flow-matching image models, where
  the per-step importance ratios drift left (mean below 1) with variances
  that differ across denoising steps, so positive-advantage samples never
  reach the upper clip, and its RatioNorm recentres and rescales each step's
  log-ratio before clipping, while a gradient reweighting equalises the
  steps' gradient sizes. For an autoregressive LM the analogue of the step
  is the response position (``E_old[l - o] = -KL(pi_old || pi) <= 0`` there
  too). Our choices: the per-position statistics are empirical (over the
  batch's tokens, not a closed form for Gaussian denoising steps), centring
  is of the log-ratio, the spread is equalised to the pooled within-position
  std, the statistics are constants, and the gradient goes straight through
  the normalisation (``d z / d l = 1``), our stand-in for the reweighting.
  ``level="sequence"`` standardises within each response instead;
  ``"batch"`` only recentres. The clip ranges default to PPO's 0.2 (the
  paper's flow-matching values do not transfer).

  References:
    Wang et al., "GRPO-Guard: Mitigating Implicit Over-Optimization in Flow
    Matching via Regulated Clipping", arXiv:2510.22319.

  Returns:
    ``(loss [B,T], {"clipfrac", "ratio", "raw_ratio"[,
    "clipfrac_lower"]})``; ``ratio`` is ``e^z``.
  """
  _check_2d(logprobs, old_logprobs, advantages, mask)
  check_clip(log_ratio_clip)
  d = log_ratio(sg(logprobs), sg(old_logprobs), log_ratio_clip)
  z = normalized_log_ratio(d, mask, level=level, rescale=rescale,
                           axis_name=axis_name)
  # ppo_clip's log-ratio of (l - sg(l), -z) is z in value with gradient 1.
  loss, diagnostics = ppo_clip(logprobs - sg(logprobs), -z, advantages,
                               eps_low=eps_low, eps_high=eps_high,
                               log_ratio_clip=log_ratio_clip,
                               clip_ratio_c=clip_ratio_c)
  diagnostics["raw_ratio"] = jnp.exp(d)
  return jnp.where(valid(mask), loss, 0.0), diagnostics


@register("surrogate", "grpo_guard",
          domains={"eps_low": at_least(0), "eps_high": at_least(0),
                   "clip_ratio_c": above(1), "log_ratio_clip": above(0)})
@defaults_from(grpo_guard)
def grpo_guard_part(batch: Batch, advantages: Array, *, axis_name=None,
                    level, rescale, eps_low, eps_high, clip_ratio_c,
                    log_ratio_clip):
  """PPO clip on a per-position standardised log-ratio, inspired by
  GRPO-Guard; see ``grpo_guard``."""
  return grpo_guard(batch.logprobs, behaviour_logprobs(batch), advantages,
                    batch.mask, level=level, rescale=rescale,
                    eps_low=eps_low, eps_high=eps_high,
                    clip_ratio_c=clip_ratio_c, log_ratio_clip=log_ratio_clip,
                    axis_name=axis_name)
