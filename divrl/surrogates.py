"""Per-token policy-gradient surrogates.

A surrogate maps per-token log-probs, behaviour log-probs and advantages
``[B,T]`` to a per-token loss ``[B,T]`` (to be minimised), plus per-token
diagnostics. Aggregation over tokens and sequences is a separate step
(``divrl.aggregation``).

Notation: ``l = log pi`` (differentiable), ``o = log pi_old`` (behaviour,
``behaviour_logprobs``), ``r = log pi_roll`` (sampler), ``Delta = l - o``,
``rho = exp(Delta)``, ``A`` the advantage, ``sg`` stop-gradient, ``|y_i|`` the
number of valid tokens (``mask > 0``) of sequence ``i``.

Sequence-level losses (GSPO, GMPO, LUSPO) put the sequence loss ``L_i`` on
every valid token of sequence ``i``; the ``seq-mean-token-mean`` aggregation
then gives ``mean_i L_i`` exactly. Each docstring names the aggregation that
reproduces the source library.

Log-ratio clamps are hyperparameters (``log_ratio_clip``): verl clamps
``Delta`` to ``[-20, 20]`` in vanilla PPO, SAPO, CISPO and DPPO, so those
default to 20; it does not clamp in GSPO (only ``log s <= 10`` in the token
form), GMPO, Clip-Cov or KL-Cov, so those default to ``None``. TRL clamps
nothing in its main path (``log_ratio_clip=None`` reproduces it).

The array functions do not clean padding; the objective replaces padded
per-token values by 0 first (``objective.clean_padding``). Functions that sum
over a sequence take the ``mask``, ignore padded entries themselves and
return 0 on padding.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from divrl.registry import FINITE, above, at_least, defaults_from, register
from divrl.sequences import (sequence_lengths, sequence_mean, sequence_sum,
                             valid)
from divrl.types import Batch
from divrl.types import behaviour_logprobs  # noqa: F401  (re-exported)

Array = jax.Array
sg = jax.lax.stop_gradient


# --- helpers ----------------------------------------------------------------


def log_ratio(logprobs: Array, old_logprobs: Array,
              clip: float | None = 20.0) -> Array:
  """``log pi - log pi_old``, optionally clamped to ``[-clip, clip]``.

  verl clamps at 20 before ``exp`` in most losses; TRL does not clamp. The
  clamp keeps ``exp`` finite for extreme gaps and zeroes the gradient
  beyond it.
  """
  d = logprobs - old_logprobs
  return d if clip is None else jnp.clip(d, -clip, clip)


def _check_2d(*xs: Array) -> None:
  chex.assert_rank(list(xs), 2)
  chex.assert_equal_shape(list(xs))


def check_eps(eps_low: float, eps_high: float) -> None:
  if eps_low < 0:
    raise ValueError(f"eps_low must be >= 0, got {eps_low}.")
  if eps_high < 0:
    raise ValueError(f"eps_high must be >= 0, got {eps_high}.")


def _check_positive(name: str, value) -> None:
  if value is None or not value > 0:
    raise ValueError(f"{name} must be > 0, got {value}.")


def check_clip(log_ratio_clip) -> None:
  if log_ratio_clip is not None and not log_ratio_clip > 0:
    raise ValueError(f"log_ratio_clip must be > 0 or None, got"
                     f" {log_ratio_clip}.")


def _f32(x: Array) -> Array:
  return x.astype(jnp.float32)


# --- PPO clip ---------------------------------------------------------------


def ppo_clip(logprobs: Array, old_logprobs: Array, advantages: Array, *,
             eps_low: float = 0.2, eps_high: float = 0.2,
             log_ratio_clip: float | None = 20.0,
             clip_ratio_c: float | None = None, delta: float | None = None):
  """PPO clipped surrogate with clip-higher, optional dual clip and delta cap.

  ``L = max(-A c, -A clip(c, 1 - eps_low, 1 + eps_high))`` with ``c = rho``,
  or ``c = min(rho, delta)`` when ``delta`` is set (TRL's two-sided clip,
  INTELLECT-2). With the dual clip constant ``clip_ratio_c`` (verl), tokens
  with ``A < 0`` get ``L = min(L, -A clip_ratio_c)``, so their loss is capped
  at ``|A| clip_ratio_c`` (and has no gradient there). At ``rho = 1``
  (on-policy) the gradient is ``-A grad log pi``.

  ``delta`` must be ``>= 1 + eps_high``; then taking ``min(rho, delta)``
  before or after the clip gives the same loss (TRL clips ``rho``, not the
  capped ratio). Both extensions are off by default; verl's ``vanilla`` loss
  is ``clip_ratio_c=3.0``.

  References:
    Schulman et al., "Proximal Policy Optimization Algorithms",
    arXiv:1707.06347.
    Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at
    Scale", arXiv:2503.14476 (decoupled ``eps_low`` / ``eps_high``).
    Ye et al., "Mastering Complex Control in MOBA Games with Deep
    Reinforcement Learning", arXiv:1912.09729 (dual clip).
    Prime Intellect, "INTELLECT-2: A Reasoning Model Trained Through
    Globally Decentralized Reinforcement Learning", arXiv:2505.07291
    (two-sided clip ``delta``).

  Args:
    logprobs: ``[B,T]`` current log-probs (differentiable).
    old_logprobs: ``[B,T]`` behaviour log-probs (treated as constants).
    advantages: ``[B,T]`` advantages (treated as constants).
    eps_low: lower clip range, ``rho >= 1 - eps_low``.
    eps_high: upper clip range, ``rho <= 1 + eps_high``.
    log_ratio_clip: clamp of the log-ratio before ``exp``; ``None`` disables.
    clip_ratio_c: dual-clip constant ``> 1`` for ``A < 0``; ``None`` is off.
    delta: cap ``>= 1 + eps_high`` on the ratio; ``None`` is off.

  Returns:
    ``(loss [B,T], {"clipfrac", "ratio"[, "clipfrac_lower"]})``.
  """
  _check_2d(logprobs, old_logprobs, advantages)
  check_eps(eps_low, eps_high)
  check_clip(log_ratio_clip)
  if clip_ratio_c is not None and not clip_ratio_c > 1.0:
    raise ValueError(f"clip_ratio_c must be > 1 (dual clip), got"
                     f" {clip_ratio_c}.")
  if delta is not None and not delta >= 1.0 + eps_high:
    raise ValueError(f"delta must be >= 1 + eps_high = {1.0 + eps_high},"
                     f" got {delta}.")
  old = sg(old_logprobs)
  adv = sg(advantages)
  rho = jnp.exp(log_ratio(logprobs, old, log_ratio_clip))
  coef = rho if delta is None else jnp.minimum(rho, delta)
  unclipped = -adv * coef
  clipped = -adv * jnp.clip(rho, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(unclipped, clipped)
  diagnostics = {"clipfrac": (clipped > unclipped).astype(jnp.float32),
                 "ratio": sg(rho)}
  if clip_ratio_c is not None:
    cap = -adv * clip_ratio_c
    lower = (adv < 0) & (loss > cap)
    loss = jnp.where(adv < 0, jnp.minimum(loss, cap), loss)
    diagnostics["clipfrac_lower"] = lower.astype(jnp.float32)
  return loss, diagnostics


@register("surrogate", "ppo_clip",
          domains={"eps_low": at_least(0), "eps_high": at_least(0),
                   "log_ratio_clip": above(0), "clip_ratio_c": above(1),
                   "delta": at_least(1)})
@defaults_from(ppo_clip)
def ppo_clip_part(batch: Batch, advantages: Array, *, eps_low, eps_high,
                  log_ratio_clip, clip_ratio_c, delta):
  """PPO clip against ``pi_old``; see ``ppo_clip``."""
  return ppo_clip(batch.logprobs, behaviour_logprobs(batch), advantages,
                  eps_low=eps_low, eps_high=eps_high,
                  log_ratio_clip=log_ratio_clip, clip_ratio_c=clip_ratio_c,
                  delta=delta)


# --- GSPO -------------------------------------------------------------------


def clipped_pg(ratio: Array, adv: Array, eps_low: float, eps_high: float):
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  return (jnp.maximum(unclipped, clipped),
          (clipped > unclipped).astype(jnp.float32))


def gspo_sequence(logprobs: Array, old_logprobs: Array, advantages: Array,
                  mask: Array, *, eps_low: float = 3e-4,
                  eps_high: float = 4e-4,
                  max_log_ratio: float | None = None):
  """GSPO with the sequence ratio and the full gradient through it (TRL).

  ``log s_i = sum_t m Delta / |y_i|`` (optionally clamped above at
  ``max_log_ratio``), ``L_it = max(-A_it s_i, -A_it clip(s_i, 1 - eps_low,
  1 + eps_high))``. ``s_i`` depends on every token of sequence ``i``, so the
  gradient of ``L_it`` reaches all of them: ``d s_i / d l_it' = s_i /
  |y_i|``. With sequence-constant ``A`` and ``seq-mean-token-mean`` this is
  the GSPO objective ``mean_i max(-A_i s_i, -A_i clip(s_i))``, TRL's
  ``importance_sampling_level="sequence"`` with ``loss_type="grpo"``. TRL
  does not clamp (``max_log_ratio=None``). Defaults ``3e-4`` / ``4e-4`` are
  the paper's clip ranges (section 5.1), which TRL's and verl's GSPO
  examples set; the libraries' generic defaults are 0.2.

  References:
    Zheng et al., "Group Sequence Policy Optimization", arXiv:2507.18071.

  Args:
    logprobs, old_logprobs, advantages, mask: ``[B,T]``.
    eps_low, eps_high: clip ranges of ``s_i``.
    max_log_ratio: upper clamp of ``log s_i``; ``None`` disables.

  Returns:
    ``(loss [B,T], {"clipfrac", "seq_ratio"})``.
  """
  _check_2d(logprobs, old_logprobs, advantages, mask)
  check_eps(eps_low, eps_high)
  log_s = sequence_mean(logprobs - sg(old_logprobs), mask)
  if max_log_ratio is not None:
    log_s = jnp.minimum(log_s, max_log_ratio)
  s = jnp.broadcast_to(jnp.exp(log_s), logprobs.shape)
  loss, clipfrac = clipped_pg(s, sg(advantages), eps_low, eps_high)
  return (jnp.where(valid(mask), loss, 0.0),
          {"clipfrac": clipfrac, "seq_ratio": sg(s)})


def gspo_token(logprobs: Array, old_logprobs: Array, advantages: Array,
               mask: Array, *, eps_low: float = 3e-4, eps_high: float = 4e-4,
               max_log_ratio: float | None = 10.0):
  """GSPO-token: sequence-ratio value with a per-token straight-through gradient.

  ``log s_it = l_it - sg(l_it) + sg(log s_i)`` with ``log s_i = sum_t m
  Delta / |y_i|``, clamped above at ``max_log_ratio`` (verl: 10; the clamp
  acts on ``log s_it``, so where ``log s_i > 10`` the token has no
  gradient, as in verl). The value of ``s_it`` is ``s_i`` and its gradient is
  ``s_i grad l_it``. ``L_it = max(-A_it s_it, -A_it clip(s_it, 1 - eps_low,
  1 + eps_high))``, which allows token-level advantages. With
  sequence-constant ``A`` and ``seq-mean-token-mean`` it has the value and
  the gradient of ``gspo_sequence``. The aggregation is the objective's, as
  for every surrogate. verl's ``compute_policy_loss_gspo`` in v0.6.0 to
  v0.9.0 and on main of Aug 2026 passes ``seq-mean-token-mean`` whatever its
  ``loss_agg_mode`` says: use ``seq-mean-token-mean`` to reproduce those
  versions (and TRL's experimental GSPO-token). A verl release that honours
  ``loss_agg_mode`` (0.9.1 is reported to) is reproduced by the divrl
  aggregation of the same name.

  References:
    Zheng et al., "Group Sequence Policy Optimization", arXiv:2507.18071
    (GSPO-token, eq. 13-18).

  Args:
    logprobs, old_logprobs, advantages, mask: ``[B,T]``.
    eps_low, eps_high: clip ranges (paper defaults ``3e-4`` / ``4e-4``).
    max_log_ratio: upper clamp of ``log s_it``; ``None`` disables.

  Returns:
    ``(loss [B,T], {"clipfrac", "seq_ratio"})``.
  """
  _check_2d(logprobs, old_logprobs, advantages, mask)
  check_eps(eps_low, eps_high)
  log_s = sg(sequence_mean(logprobs - old_logprobs, mask))
  log_st = logprobs - sg(logprobs) + log_s
  if max_log_ratio is not None:
    log_st = jnp.minimum(log_st, max_log_ratio)
  s = jnp.exp(log_st)
  loss, clipfrac = clipped_pg(s, sg(advantages), eps_low, eps_high)
  return (jnp.where(valid(mask), loss, 0.0),
          {"clipfrac": clipfrac, "seq_ratio": sg(s)})


@register("surrogate", "gspo_seq",
          domains={"eps_low": at_least(0), "eps_high": at_least(0)})
@defaults_from(gspo_sequence)
def gspo_seq_part(batch: Batch, advantages: Array, *, eps_low, eps_high,
                  max_log_ratio):
  """GSPO, sequence ratio with full gradient (TRL); see ``gspo_sequence``."""
  return gspo_sequence(batch.logprobs, behaviour_logprobs(batch), advantages,
                       batch.mask, eps_low=eps_low, eps_high=eps_high,
                       max_log_ratio=max_log_ratio)


@register("surrogate", "gspo_token",
          domains={"eps_low": at_least(0), "eps_high": at_least(0)})
@defaults_from(gspo_token)
def gspo_token_part(batch: Batch, advantages: Array, *, eps_low, eps_high,
                    max_log_ratio):
  """GSPO-token, straight-through sequence ratio (verl); see ``gspo_token``."""
  return gspo_token(batch.logprobs, behaviour_logprobs(batch), advantages,
                    batch.mask, eps_low=eps_low, eps_high=eps_high,
                    max_log_ratio=max_log_ratio)


def luspo(logprobs: Array, old_logprobs: Array, advantages: Array,
          mask: Array, *, eps_low: float = 3e-4, eps_high: float = 4e-4,
          max_log_ratio: float | None = None):
  """LUSPO: the GSPO sequence loss scaled by the sequence length.

  ``L_it = |y_i| max(-A_it s_i, -A_it clip(s_i, 1 - eps_low, 1 + eps_high))``
  with ``s_i`` as in ``gspo_sequence`` (full gradient). Under
  ``seq-mean-token-mean`` this gives ``mean_i |y_i| L_i`` for
  sequence-constant ``A``, TRL's ``loss_type="luspo"`` with
  ``importance_sampling_level="sequence"`` (TRL divides by the number of
  gradient-accumulation steps, which ``seq-mean-token-mean`` over the whole
  batch does by construction). Inspired by the paper; the clip defaults are
  GSPO's (our choice: we did not check the paper's values).

  References:
    "Length-Unbiased Sequence Policy Optimization: Revealing and Controlling
    Response Length Variation in RLVR", arXiv:2602.05261.

  Returns:
    ``(loss [B,T], {"clipfrac", "seq_ratio"})``.
  """
  loss, diag = gspo_sequence(logprobs, old_logprobs, advantages, mask,
                             eps_low=eps_low, eps_high=eps_high,
                             max_log_ratio=max_log_ratio)
  return loss * sequence_lengths(mask, loss.dtype)[:, None], diag


@register("surrogate", "luspo",
          domains={"eps_low": at_least(0), "eps_high": at_least(0)})
@defaults_from(luspo)
def luspo_part(batch: Batch, advantages: Array, *, eps_low, eps_high,
               max_log_ratio):
  """Length-scaled GSPO sequence loss (TRL); see ``luspo``."""
  return luspo(batch.logprobs, behaviour_logprobs(batch), advantages,
               batch.mask, eps_low=eps_low, eps_high=eps_high,
               max_log_ratio=max_log_ratio)


# --- GMPO -------------------------------------------------------------------


def gmpo(logprobs: Array, old_logprobs: Array, advantages: Array,
         mask: Array, *, eps_low: float = 0.4, eps_high: float = 0.4,
         log_ratio_clip: float | None = None):
  """GMPO: geometric mean of sign-aware clipped token ratios, per sequence.

  ``Dt = sgn(A) min(sgn(A) Delta, sgn(A) clip(Delta, -eps_low, eps_high))``
  (a clip in log space that only binds in the direction the advantage
  pushes), ``R_i = exp(sum_t m Dt / |y_i|)``, ``Abar_i = mean_t A``, and the
  sequence loss ``L_i = -Abar_i R_i`` on every valid token. verl's
  ``geo_mean`` takes a plain mean over sequences, which
  ``seq-mean-token-mean`` reproduces (rows without valid tokens are dropped
  rather than counted as 0). ``eps_low`` / ``eps_high`` are log-space bounds:
  the default 0.4 is the paper's ``(e^-0.4, e^0.4)``, verl's GMPO example
  and TRL's experimental GMPO. verl's ``geo_mean`` passes
  ``clip_ratio_low`` as ``eps_low`` and ``clip_ratio_high`` as ``eps_high``
  (each falls back to ``clip_ratio``; all default to 0.2 in verl's actor
  config).

  References:
    Zhao et al., "Geometric-Mean Policy Optimization", arXiv:2507.20673.

  Returns:
    ``(loss [B,T], {"clipfrac", "seq_ratio"})``.
  """
  _check_2d(logprobs, old_logprobs, advantages, mask)
  check_eps(eps_low, eps_high)
  check_clip(log_ratio_clip)
  adv = sg(advantages)
  d = log_ratio(logprobs, sg(old_logprobs), log_ratio_clip)
  sgn = jnp.sign(adv)
  dc = jnp.clip(d, -eps_low, eps_high)
  dt = sgn * jnp.minimum(sgn * d, sgn * dc)
  r = jnp.exp(sequence_mean(dt, mask))
  abar = sequence_mean(adv, mask)
  loss = jnp.where(valid(mask), -abar * r, 0.0)
  clipfrac = (sgn * d > sgn * dc).astype(jnp.float32)
  return loss, {"clipfrac": clipfrac,
                "seq_ratio": sg(jnp.broadcast_to(r, logprobs.shape))}


@register("surrogate", "gmpo",
          domains={"eps_low": at_least(0), "eps_high": at_least(0),
                   "log_ratio_clip": above(0)})
@defaults_from(gmpo)
def gmpo_part(batch: Batch, advantages: Array, *, eps_low, eps_high,
              log_ratio_clip):
  """Geometric-mean policy optimisation (verl ``geo_mean``); see ``gmpo``."""
  return gmpo(batch.logprobs, behaviour_logprobs(batch), advantages,
              batch.mask, eps_low=eps_low, eps_high=eps_high,
              log_ratio_clip=log_ratio_clip)


# --- weighted REINFORCE family (detached weights) ----------------------------


def cispo_weight(logprobs: Array, old_logprobs: Array, *,
                 bound: str = "two_sided", eps_low: float = 0.2,
                 eps_high: float = 0.2, max_ratio: float = 5.0,
                 log_ratio_clip: float | None = 20.0) -> Array:
  """The detached CISPO weight ``w [B,T]``; see ``cispo``."""
  _check_2d(logprobs, old_logprobs)
  if bound not in ("two_sided", "upper"):
    raise ValueError(f"bound must be 'two_sided' or 'upper', got {bound!r}.")
  check_eps(eps_low, eps_high)
  _check_positive("max_ratio", max_ratio)
  check_clip(log_ratio_clip)
  rho = jnp.exp(log_ratio(sg(logprobs), sg(old_logprobs), log_ratio_clip))
  if bound == "two_sided":
    return jnp.clip(rho, 1.0 - eps_low, 1.0 + eps_high)
  return jnp.minimum(rho, max_ratio)


def cispo(logprobs: Array, old_logprobs: Array, advantages: Array, *,
          bound: str = "two_sided", eps_low: float = 0.2,
          eps_high: float = 0.2, max_ratio: float = 5.0,
          log_ratio_clip: float | None = 20.0):
  """CISPO: REINFORCE with a clipped, detached importance weight.

  ``L = -w A l`` with ``w = sg(clip(rho, 1 - eps_low, 1 + eps_high))`` for
  ``bound="two_sided"`` (verl ``cispo``, defaults 0.2 / 0.2) or ``w =
  sg(min(rho, max_ratio))`` for ``bound="upper"`` (TRL ``loss_type="cispo"``,
  whose ``epsilon_high`` is the absolute cap ``max_ratio``, 5.0 as ScaleRL
  recommends). Every token keeps a gradient ``-w A grad l``; clipping only
  bounds its size. The paper uses a large upper bound and no lower bound. verl
  and TRL both aggregate with a global token mean (``token-mean``).
  ``log_ratio_clip=20`` is verl's clamp; with ``bound="upper"`` and a cap
  below ``e^20`` it only changes weights below ``e^-20``.

  References:
    MiniMax, "MiniMax-M1: Scaling Test-Time Compute Efficiently with
    Lightning Attention", arXiv:2506.13585.

  Returns:
    ``(loss [B,T], {"clipfrac", "ratio", "weight"})``.
  """
  _check_2d(logprobs, old_logprobs, advantages)
  w = cispo_weight(logprobs, old_logprobs, bound=bound, eps_low=eps_low,
                   eps_high=eps_high, max_ratio=max_ratio,
                   log_ratio_clip=log_ratio_clip)
  rho = jnp.exp(log_ratio(sg(logprobs), sg(old_logprobs), log_ratio_clip))
  loss = -w * sg(advantages) * logprobs
  return loss, {"clipfrac": (w != rho).astype(jnp.float32), "ratio": rho,
                "weight": w}


@register("surrogate", "cispo",
          domains={"eps_low": at_least(0), "eps_high": at_least(0),
                   "max_ratio": above(0), "log_ratio_clip": above(0)})
@defaults_from(cispo)
def cispo_part(batch: Batch, advantages: Array, *, bound, eps_low, eps_high,
               max_ratio, log_ratio_clip):
  """Clipped IS-weight policy optimisation (verl / TRL); see ``cispo``."""
  return cispo(batch.logprobs, behaviour_logprobs(batch), advantages,
               bound=bound, eps_low=eps_low, eps_high=eps_high,
               max_ratio=max_ratio, log_ratio_clip=log_ratio_clip)


def sapo(logprobs: Array, old_logprobs: Array, advantages: Array, *,
         tau_pos: float = 1.0, tau_neg: float = 1.05,
         log_ratio_clip: float | None = 20.0):
  """SAPO: a smooth sigmoid gate on the ratio instead of a hard clip.

  ``f(rho) = sigmoid(tau (rho - 1)) 4 / tau`` with ``tau = tau_pos`` where
  ``A > 0`` and ``tau_neg`` otherwise; ``L = -f(rho) A``. ``f(1) = 2 / tau``
  and ``df/drho = 4 sigma (1 - sigma)``, which is 1 at ``rho = 1``, so
  on-policy the gradient is the REINFORCE gradient ``-A grad l``; away from
  ``rho = 1`` it decays smoothly. Defaults 1.0 / 1.05 and the ``+-20``
  clamp are verl's (TRL: same temperatures, no clamp). Both libraries
  aggregate with ``seq-mean-token-mean``.

  References:
    "Soft Adaptive Policy Optimization", arXiv:2511.20347.

  Returns:
    ``(loss [B,T], {"ratio", "gate"})``.
  """
  _check_2d(logprobs, old_logprobs, advantages)
  _check_positive("tau_pos", tau_pos)
  _check_positive("tau_neg", tau_neg)
  check_clip(log_ratio_clip)
  adv = sg(advantages)
  rho = jnp.exp(log_ratio(logprobs, sg(old_logprobs), log_ratio_clip))
  tau = jnp.where(adv > 0, tau_pos, tau_neg).astype(rho.dtype)
  gate = jax.nn.sigmoid(tau * (rho - 1.0)) * (4.0 / tau)
  return -gate * adv, {"ratio": sg(rho), "gate": sg(gate)}


@register("surrogate", "sapo",
          domains={"tau_pos": above(0), "tau_neg": above(0),
                   "log_ratio_clip": above(0)})
@defaults_from(sapo)
def sapo_part(batch: Batch, advantages: Array, *, tau_pos, tau_neg,
              log_ratio_clip):
  """Soft adaptive policy optimisation (verl / TRL); see ``sapo``."""
  return sapo(batch.logprobs, behaviour_logprobs(batch), advantages,
              tau_pos=tau_pos, tau_neg=tau_neg, log_ratio_clip=log_ratio_clip)


def dppo_mask(logprobs: Array, old_logprobs: Array, advantages: Array, *,
              divergence: str = "tv", delta_low: float = 0.2,
              delta_high: float = 0.2) -> Array:
  """DPPO's binary trust-region mask ``M [B,T]`` in {0, 1}; see ``dppo``."""
  _check_2d(logprobs, old_logprobs, advantages)
  if divergence not in ("tv", "kl"):
    raise ValueError(f"divergence must be 'tv' or 'kl', got {divergence!r}.")
  _check_positive("delta_low", delta_low)
  _check_positive("delta_high", delta_high)
  # Probabilities of the sampled token; a log-prob above 0 (invalid, e.g.
  # garbage) is read as 0 so that 1 - p stays in [0, 1].
  l = jnp.minimum(sg(logprobs), 0.0)
  o = jnp.minimum(sg(old_logprobs), 0.0)
  adv = sg(advantages)
  p, po = jnp.exp(l), jnp.exp(o)
  if divergence == "tv":
    keep_pos = p - po <= delta_high
    keep_neg = p - po >= -delta_low
  else:
    d = po * (o - l) + (1.0 - po) * jnp.log((1.0 - po + 1e-8) /
                                            (1.0 - p + 1e-8))
    keep_pos = (d <= delta_high) | (p <= po)
    keep_neg = (d <= delta_low) | (p >= po)
  return jnp.where(adv > 0, keep_pos, keep_neg).astype(jnp.float32)


def dppo(logprobs: Array, old_logprobs: Array, advantages: Array, *,
         divergence: str = "tv", delta_low: float = 0.2,
         delta_high: float = 0.2, max_ratio: float = 3.0,
         log_ratio_clip: float | None = 20.0):
  """DPPO: truncated-IS REINFORCE inside a binary divergence trust region.

  ``L = -A sg(min(rho, C)) l sg(M)`` with ``C = max_ratio``. The mask uses
  the token probabilities ``p = e^l``, ``p_old = e^o`` of the sampled token
  (log-probs above 0, which are invalid, are read as 0):

  * ``divergence="tv"`` (binary total variation): ``M = [p - p_old <=
    delta_high]`` where ``A > 0``, else ``M = [p - p_old >= -delta_low]``.
  * ``divergence="kl"`` (binary KL of Bernoulli(p_old) to Bernoulli(p)):
    ``D = p_old (o - l) + (1 - p_old) log((1 - p_old + 1e-8) / (1 - p +
    1e-8))``; ``M = [D <= delta_high or p <= p_old]`` where ``A > 0``, else
    ``M = [D <= delta_low or p >= p_old]``.

  Defaults reproduce verl with its ActorConfig defaults: ``delta_*`` =
  ``clip_ratio_low/high`` = 0.2 and ``C`` = ``clip_ratio_c`` = 3.0 (the
  paper's example scripts use 0.15 for TV, 0.05 for KL and a very large
  ``C``; verl's code comment recommends a large ``C``). verl aggregates with
  ``token-mean`` by default.

  References:
    Qi et al., "Rethinking the Trust Region in LLM Reinforcement Learning",
    arXiv:2602.04879.

  Returns:
    ``(loss [B,T], {"clipfrac", "ratio", "weight"})``; ``clipfrac`` is
    ``1 - M``.
  """
  _check_2d(logprobs, old_logprobs, advantages)
  _check_positive("max_ratio", max_ratio)
  check_clip(log_ratio_clip)
  m = dppo_mask(logprobs, old_logprobs, advantages, divergence=divergence,
                delta_low=delta_low, delta_high=delta_high)
  rho = jnp.exp(log_ratio(sg(logprobs), sg(old_logprobs), log_ratio_clip))
  w = jnp.minimum(rho, max_ratio)
  loss = -sg(advantages) * w * logprobs * m
  return loss, {"clipfrac": 1.0 - m, "ratio": rho, "weight": w * m}


@register("surrogate", "dppo_tv",
          domains={"delta_low": above(0), "delta_high": above(0),
                   "max_ratio": above(0), "log_ratio_clip": above(0)})
@defaults_from(dppo)
def dppo_tv_part(batch: Batch, advantages: Array, *, delta_low, delta_high,
                 max_ratio, log_ratio_clip):
  """DPPO with the binary total-variation mask (verl); see ``dppo``."""
  return dppo(batch.logprobs, behaviour_logprobs(batch), advantages,
              divergence="tv", delta_low=delta_low, delta_high=delta_high,
              max_ratio=max_ratio, log_ratio_clip=log_ratio_clip)


@register("surrogate", "dppo_kl",
          domains={"delta_low": above(0), "delta_high": above(0),
                   "max_ratio": above(0), "log_ratio_clip": above(0)})
@defaults_from(dppo)
def dppo_kl_part(batch: Batch, advantages: Array, *, delta_low, delta_high,
                 max_ratio, log_ratio_clip):
  """DPPO with the binary KL mask (verl); see ``dppo``."""
  return dppo(batch.logprobs, behaviour_logprobs(batch), advantages,
              divergence="kl", delta_low=delta_low, delta_high=delta_high,
              max_ratio=max_ratio, log_ratio_clip=log_ratio_clip)


def vespo_weight(logprobs: Array, old_logprobs: Array, advantages: Array,
                 mask: Array, rollout_logprobs: Array | None = None, *,
                 k_pos: float = 2.0, lambda_pos: float = 3.0,
                 k_neg: float = 3.0, lambda_neg: float = 2.0) -> Array:
  """The detached VESPO weight ``phi [B,T]``; see ``vespo``."""
  _check_2d(logprobs, old_logprobs, advantages, mask)
  for name, value in (("k_pos", k_pos), ("lambda_pos", lambda_pos),
                      ("k_neg", k_neg), ("lambda_neg", lambda_neg)):
    if not value >= 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  l, o = sg(logprobs), sg(old_logprobs)
  log_w = sequence_sum(jnp.clip(l - o, -20.0, 20.0), mask)
  if rollout_logprobs is not None:
    chex.assert_equal_shape([logprobs, rollout_logprobs])
    log_w = log_w + sequence_sum(o - sg(rollout_logprobs), mask)
  log_w = jnp.clip(log_w, math.log(1e-8), 20.0)
  pos = sg(advantages) >= 0
  k = jnp.where(pos, k_pos, k_neg).astype(log_w.dtype)
  lam = jnp.where(pos, lambda_pos, lambda_neg).astype(log_w.dtype)
  phi = jnp.exp(lam + k * log_w - lam * jnp.exp(log_w))
  return sg(jnp.where(jnp.isfinite(phi), phi, 0.0))


def vespo(logprobs: Array, old_logprobs: Array, advantages: Array,
          mask: Array, rollout_logprobs: Array | None = None, *,
          k_pos: float = 2.0, lambda_pos: float = 3.0, k_neg: float = 3.0,
          lambda_neg: float = 2.0):
  """VESPO: REINFORCE weighted by a Gamma-shaped kernel of the sequence ratio.

  ``log W_i = clamp(sum_t m clamp(Delta, +-20) + sum_t m log IS_t, [log
  1e-8, 20])`` (the product ratio, a sum, not a mean), where ``log IS_t = o
  - r`` is the trainer/sampler mismatch when ``rollout_logprobs`` are given
  (TRL folds its vLLM IS factor in here) and 0 otherwise. ``phi = W^k
  e^(lambda (1 - W))`` (so ``phi(1) = 1``), with ``(k, lambda) = (k_pos,
  lambda_pos)`` where ``A >= 0`` and ``(k_neg, lambda_neg)`` otherwise;
  ``phi`` is detached and non-finite values become 0. ``L = -phi A l``.
  Defaults (2, 3, 3, 2) and the clamps are TRL's ``loss_type="vespo"``,
  which aggregates with a global token mean (``token-mean``). Our choice:
  ``log IS`` is the raw ``o - r`` (TRL may first truncate or mask its vLLM
  ratio according to ``vllm_importance_sampling_mode``).

  References:
    "VESPO: Variational Sequence-Level Soft Policy Optimization for Stable
    Off-Policy LLM Training", arXiv:2602.10693 (the kernel); the sequence
    ratio, the clamps and the vLLM factor follow TRL's ``loss_type="vespo"``.

  Returns:
    ``(loss [B,T], {"weight"})``.
  """
  phi = vespo_weight(logprobs, old_logprobs, advantages, mask,
                     rollout_logprobs, k_pos=k_pos, lambda_pos=lambda_pos,
                     k_neg=k_neg, lambda_neg=lambda_neg)
  return -phi * sg(advantages) * logprobs, {"weight": phi}


@register("surrogate", "vespo",
          domains={"k_pos": at_least(0), "lambda_pos": at_least(0),
                   "k_neg": at_least(0), "lambda_neg": at_least(0)})
@defaults_from(vespo)
def vespo_part(batch: Batch, advantages: Array, *, k_pos, lambda_pos, k_neg,
               lambda_neg):
  """Gamma-kernel sequence-weighted REINFORCE (TRL); see ``vespo``. Uses
  ``Batch.rollout_logprobs`` for the sampler mismatch when present."""
  return vespo(batch.logprobs, behaviour_logprobs(batch), advantages,
               batch.mask, batch.rollout_logprobs, k_pos=k_pos,
               lambda_pos=lambda_pos, k_neg=k_neg, lambda_neg=lambda_neg)


def dro(logprobs: Array, old_logprobs: Array, advantages: Array, *,
        beta: float, log_ratio_clip: float | None = None) -> Array:
  """DRO-style REINFORCE with a quadratic log-ratio penalty to ``pi_old``.

  ``L = -(A l - (beta / 2) Delta^2)``, whose gradient is ``-(A - beta
  Delta) grad l``: the advantage is shrunk by ``beta`` times the log-ratio to
  the behaviour policy (a k2 penalty to ``pi_old``), as in verl's ``dro``
  loss (``policy_loss.dro_beta``, which must be set, > 0). Any aggregation;
  verl uses its ``loss_agg_mode`` (default ``token-mean``).

  References:
    Inspired by verl's documentation of its ``dro`` policy loss ("Direct
    Reward Optimization"), which links no paper; the formula above is verl's
    per-token loss as we read it. Direct Reward Optimisation is introduced
    in Richemond et al., "Offline Regularised Reinforcement Learning for
    Large Language Models Alignment", arXiv:2405.19107: its squared residual
    ``(r - V - beta log(pi / pi_ref))^2 / 2`` has the policy gradient ``-(A -
    beta log(pi / pi_ref)) grad l`` with ``A = r - V``, the same form with
    ``pi_ref`` in place of ``pi_old`` (our reading, not a verl statement).

  Args:
    beta: penalty strength, ``> 0`` (required).
    log_ratio_clip: optional clamp of ``Delta``; verl does not clamp.
  """
  _check_2d(logprobs, old_logprobs, advantages)
  _check_positive("beta", beta)
  check_clip(log_ratio_clip)
  d = log_ratio(logprobs, sg(old_logprobs), log_ratio_clip)
  return -(sg(advantages) * logprobs - 0.5 * beta * d * d)


@register("surrogate", "dro",
          domains={"beta": above(0), "log_ratio_clip": above(0)})
@defaults_from(dro)
def dro_part(batch: Batch, advantages: Array, *, beta: float | None = None,
             log_ratio_clip) -> Array:
  """REINFORCE with a quadratic penalty to ``pi_old`` (verl ``dro``);
  see ``dro``. ``beta`` has no default and must be given."""
  return dro(batch.logprobs, behaviour_logprobs(batch), advantages,
             beta=beta, log_ratio_clip=log_ratio_clip)


def reinforce(logprobs: Array, advantages: Array) -> Array:
  """REINFORCE: ``L = -A l``, the score-function policy gradient.

  No ratio and no clip (verl ``gpg``; the ``reinforce`` loss of verl's bypass
  mode without IS weights). With group-relative advantages and
  ``seq-mean-token-sum`` this is the estimator analysed in
  ``docs/objective_api.md``.

  References:
    Williams, "Simple Statistical Gradient-Following Algorithms for
    Connectionist Reinforcement Learning" (1992).
    Chu et al., "GPG: A Simple and Strong Reinforcement Learning Baseline
    for Model Reasoning", arXiv:2504.02546.
  """
  _check_2d(logprobs, advantages)
  return -sg(advantages) * logprobs


@register("surrogate", "reinforce")
def reinforce_part(batch: Batch, advantages: Array) -> Array:
  """Plain policy gradient ``-A log pi``; see ``reinforce``."""
  return reinforce(batch.logprobs, advantages)


# --- bypass mode (pi_old := pi_roll) ----------------------------------------


def truncated_is_weight(logprobs: Array, base_logprobs: Array, mask: Array,
                        *, max_ratio: float = 2.0, level: str = "token",
                        log_ratio_clip: float | None = 20.0) -> Array:
  """``sg(min(pi / pi_base, C))`` per token, or per sequence (broadcast).

  ``level="token"``: ``exp(clamp(l - b))``; ``level="sequence"``:
  ``exp(clamp(sum_t m (l - b)))``. Padding gets 0.
  """
  _check_2d(logprobs, base_logprobs, mask)
  if level not in ("token", "sequence"):
    raise ValueError(f"level must be 'token' or 'sequence', got {level!r}.")
  _check_positive("max_ratio", max_ratio)
  check_clip(log_ratio_clip)
  d = sg(logprobs) - sg(base_logprobs)
  if level == "sequence":
    d = jnp.broadcast_to(sequence_sum(d, mask), d.shape)
  w = jnp.minimum(jnp.exp(log_ratio(d, 0.0, log_ratio_clip)), max_ratio)
  return jnp.where(valid(mask), w, 0.0)


def bypass_reinforce(logprobs: Array, rollout_logprobs: Array,
                     advantages: Array, mask: Array, *,
                     max_ratio: float = 2.0, level: str = "token",
                     log_ratio_clip: float | None = 20.0):
  """Bypass-mode REINFORCE with a truncated IS weight to the sampler.

  ``L = -A l w`` with ``w = sg(min(pi / pi_roll, C))`` (``C = max_ratio``,
  default 2.0 as verl's ``rollout_is_threshold``), per token or, with
  ``level="sequence"``, the sequence product broadcast. In verl's bypass
  mode ``pi_old`` is replaced by ``pi_roll`` (two policies, no recomputed
  ``pi_old``) and the IS weight is computed inside the loss, so do not add a
  ``rollout_is`` token weight as well.

  References:
    "When Speed Kills Stability: Demystifying RL Collapse from the
    Training-Inference Mismatch", arXiv:2512.23075
    (https://richardli.xyz/rl-collapse)
    (verl ``bypass_mode``, ``loss_type="reinforce"``).

  Returns:
    ``(loss [B,T], {"weight"})``.
  """
  _check_2d(logprobs, rollout_logprobs, advantages, mask)
  w = truncated_is_weight(logprobs, rollout_logprobs, mask,
                          max_ratio=max_ratio, level=level,
                          log_ratio_clip=log_ratio_clip)
  return -sg(advantages) * logprobs * w, {"weight": w}


@register("surrogate", "bypass_reinforce", reads=("rollout_logprobs",),
          domains={"max_ratio": above(0), "log_ratio_clip": above(0)})
@defaults_from(bypass_reinforce)
def bypass_reinforce_part(batch: Batch, advantages: Array, *, max_ratio, level,
                          log_ratio_clip):
  """REINFORCE with ``sg(min(pi/pi_roll, C))``; see ``bypass_reinforce``.
  Needs ``Batch.rollout_logprobs``."""
  return bypass_reinforce(batch.logprobs, batch.rollout_logprobs, advantages, batch.mask,
                          max_ratio=max_ratio, level=level,
                          log_ratio_clip=log_ratio_clip)


@register("surrogate", "bypass_ppo", reads=("rollout_logprobs",),
          domains={"eps_low": at_least(0), "eps_high": at_least(0),
                   "log_ratio_clip": above(0), "clip_ratio_c": above(1),
                   "delta": at_least(1)})
@defaults_from(ppo_clip)
def bypass_ppo_part(batch: Batch, advantages: Array, *, eps_low, eps_high,
                    log_ratio_clip, clip_ratio_c, delta):
  """PPO clip with the ratio to the sampler, ``pi / pi_roll`` (verl bypass
  mode, "When Speed Kills Stability: Demystifying RL Collapse from the
  Training-Inference Mismatch", arXiv:2512.23075);
  see ``ppo_clip``. Needs ``Batch.rollout_logprobs``; ignores
  ``Batch.old_logprobs``. verl's bypass ``ppo_clip`` is its vanilla loss,
  so ``clip_ratio_c=3.0`` reproduces it."""
  return ppo_clip(batch.logprobs, batch.rollout_logprobs, advantages, eps_low=eps_low,
                  eps_high=eps_high, log_ratio_clip=log_ratio_clip,
                  clip_ratio_c=clip_ratio_c, delta=delta)


# --- covariance-based token selection (Clip-Cov, KL-Cov) ---------------------


def _global_flat(x: Array, axis_name) -> Array:
  """``x [B,T]`` flattened; inside ``shard_map`` the concatenation over the
  devices of ``axis_name`` (``all_gather``, tiled, in device order)."""
  flat = x.reshape(-1)
  if axis_name is None:
    return flat
  return jax.lax.all_gather(flat, axis_name, axis=0, tiled=True)


def _local_part(global_flat: Array, shape, axis_name) -> Array:
  """This device's slice of a gathered flat array, reshaped to ``shape``."""
  size = math.prod(shape)
  if axis_name is None:
    return global_flat.reshape(shape)
  start = jax.lax.axis_index(axis_name) * size
  return jax.lax.dynamic_slice(global_flat, (start,), (size,)).reshape(shape)


def _rank(keys: Array) -> Array:
  """Position of each entry in the ascending stable sort of ``keys``."""
  order = jnp.argsort(keys, stable=True)
  return jnp.zeros(keys.shape, jnp.int32).at[order].set(
      jnp.arange(keys.shape[0], dtype=jnp.int32))


def selection_count(ratio: float, n_valid: Array) -> Array:
  """``max(1, floor(ratio * N))`` (0 if ``N = 0``), as an int32 array.

  ``ratio * N`` is computed in float32 and snapped to the nearest integer
  within a relative 1e-6 before the floor, so ``0.1 * 70`` gives 7.
  """
  p = jnp.asarray(ratio, jnp.float32) * n_valid.astype(jnp.float32)
  r = jnp.round(p)
  p = jnp.where(jnp.abs(p - r) <= 1e-6 * jnp.maximum(p, 1.0), r, p)
  k = jnp.maximum(jnp.floor(p), 1.0).astype(jnp.int32)
  return jnp.where(n_valid > 0, k, 0)


def token_covariance(logprobs: Array, advantages: Array, mask: Array, *,
                     axis_name=None) -> Array:
  """``c = (A - mean A)(sg(l) - mean sg(l))`` per token, ``[B,T]``.

  The means are over the valid tokens of the whole batch: inside
  ``shard_map`` the sums and counts are ``psum``-ed over ``axis_name``.
  Padding gets 0. This is the per-token term of the covariance between the
  log-prob and the advantage that drives the entropy change (arXiv:2505.22617).
  """
  _check_2d(logprobs, advantages, mask)
  v = valid(mask)
  a = jnp.where(v, sg(advantages), 0.0)
  l = jnp.where(v, sg(logprobs), 0.0)
  stats = jnp.stack([jnp.sum(v).astype(jnp.float32), jnp.sum(_f32(a)),
                     jnp.sum(_f32(l))])
  if axis_name is not None:
    stats = jax.lax.psum(stats, axis_name)
  n = jnp.maximum(stats[0], 1.0)
  c = (_f32(a) - stats[1] / n) * (_f32(l) - stats[2] / n)
  return jnp.where(v, c, 0.0)


def clip_cov(logprobs: Array, old_logprobs: Array, advantages: Array,
             mask: Array, key: Array, *, eps_low: float = 0.2,
             eps_high: float = 0.2, ratio: float = 2e-4, lb: float = 1.0,
             ub: float = 5.0, log_ratio_clip: float | None = None,
             axis_name=None):
  """Clip-Cov: PPO clip, with a random few high-covariance tokens detached.

  ``L^c = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))``. With the
  token covariance ``c`` of ``token_covariance`` (batch-global means), the
  candidates are the valid tokens not already clipped by PPO (``-A
  clip(rho) > -A rho``) with ``lb < c < ub``. Up to ``k = max(1,
  floor(ratio N_valid))`` of them are chosen uniformly at random without
  replacement (all of them if there are fewer) and detached: ``L =
  sg(L^c)`` there, so their value is unchanged and their gradient is 0.

  The selection is global and the same however the batch is sharded: each
  token gets a uniform priority from ``key`` drawn for the whole global
  batch, and the ``k`` candidates with the smallest priorities are chosen.
  Inside ``shard_map`` the covariances and candidate flags are
  ``all_gather``-ed over ``axis_name`` (O(global tokens) memory per device;
  our choice over a distributed threshold search), so ``key`` must be the
  same on every device.

  Differences from verl's ``clip_cov`` (defaults ``ratio=2e-4``, ``lb=1``,
  ``ub=5``, no log-ratio clamp, ``token-mean``): verl multiplies the
  selected tokens' loss by 0 (value and gradient), takes the means and
  ``N_valid`` over the local micro-batch, and draws with ``torch.randperm``.
  The gradients agree for the same selection; the loss values differ by the
  detached tokens' losses.

  References:
    Cui et al., "The Entropy Mechanism of Reinforcement Learning for
    Reasoning Language Models", arXiv:2505.22617.

  Returns:
    ``(loss [B,T], {"clipfrac", "ratio", "cov_selected"})``.
  """
  _check_2d(logprobs, old_logprobs, advantages, mask)
  check_eps(eps_low, eps_high)
  _check_positive("ratio", ratio)
  if not lb < ub:
    raise ValueError(f"lb must be < ub, got lb={lb}, ub={ub}.")
  check_clip(log_ratio_clip)
  if key is None:
    raise ValueError("clip_cov needs a PRNG key (key=...) to select tokens.")
  adv = sg(advantages)
  rho = jnp.exp(log_ratio(logprobs, sg(old_logprobs), log_ratio_clip))
  loss, clipfrac = clipped_pg(rho, adv, eps_low, eps_high)
  v = valid(mask)
  cov = token_covariance(logprobs, advantages, mask, axis_name=axis_name)
  cand = v & (clipfrac == 0) & (cov > lb) & (cov < ub)
  g_cand = _global_flat(cand, axis_name)
  g_valid = _global_flat(v, axis_name)
  k = selection_count(ratio, jnp.sum(g_valid))
  prio = jax.random.uniform(key, g_cand.shape)
  rank = _rank(jnp.where(g_cand, prio, 2.0))
  sel = _local_part(g_cand & (rank < k), v.shape, axis_name)
  loss = jnp.where(sel, sg(loss), loss)
  return loss, {"clipfrac": clipfrac, "ratio": sg(rho),
                "cov_selected": sel.astype(jnp.float32)}


@register("surrogate", "clip_cov",
          domains={"eps_low": at_least(0), "eps_high": at_least(0),
                   "ratio": above(0), "lb": FINITE, "ub": FINITE,
                   "log_ratio_clip": above(0)})
@defaults_from(clip_cov)
def clip_cov_part(batch: Batch, advantages: Array, *, key=None, axis_name=None,
                  eps_low, eps_high, ratio, lb, ub, log_ratio_clip):
  """PPO clip with random high-covariance tokens detached (verl
  ``clip_cov``); see ``clip_cov``. Needs a PRNG key."""
  return clip_cov(batch.logprobs, behaviour_logprobs(batch), advantages,
                  batch.mask, key, eps_low=eps_low, eps_high=eps_high,
                  ratio=ratio, lb=lb, ub=ub, log_ratio_clip=log_ratio_clip,
                  axis_name=axis_name)


def kl_cov(logprobs: Array, old_logprobs: Array, advantages: Array,
           mask: Array, *, ratio: float = 2e-4, kappa: float = 0.1,
           log_ratio_clip: float | None = None, axis_name=None):
  """KL-Cov: unclipped ratio loss, with an ``|Delta|`` penalty on top-cov tokens.

  Every valid token gets ``L = -A rho`` (no clipping); the ``k = max(1,
  floor(ratio N_valid))`` valid tokens with the largest covariance ``c``
  (``token_covariance``, batch-global means) get ``L = -A rho + kappa
  |Delta|`` instead. Ties are broken by position in the global batch
  (stable sort). The top-k is global: inside ``shard_map`` the covariances
  are ``all_gather``-ed over ``axis_name`` (O(global tokens) memory per
  device) and each device keeps its own slice of the selection.

  Defaults are verl's ``kl_cov`` (``kl_cov_ratio=2e-4``, ``ppo_kl_coef``
  0.1 from ActorConfig, no log-ratio clamp, ``token-mean``). verl selects
  over the local micro-batch; divrl over the whole batch.

  References:
    Cui et al., "The Entropy Mechanism of Reinforcement Learning for
    Reasoning Language Models", arXiv:2505.22617.

  Returns:
    ``(loss [B,T], {"ratio", "cov_selected"})``.
  """
  _check_2d(logprobs, old_logprobs, advantages, mask)
  _check_positive("ratio", ratio)
  if not kappa >= 0:
    raise ValueError(f"kappa must be >= 0, got {kappa}.")
  check_clip(log_ratio_clip)
  adv = sg(advantages)
  d = log_ratio(logprobs, sg(old_logprobs), log_ratio_clip)
  rho = jnp.exp(d)
  v = valid(mask)
  cov = token_covariance(logprobs, advantages, mask, axis_name=axis_name)
  g_cov = _global_flat(cov, axis_name)
  g_valid = _global_flat(v, axis_name)
  k = selection_count(ratio, jnp.sum(g_valid))
  rank = _rank(jnp.where(g_valid, -g_cov, jnp.inf))
  sel = _local_part(g_valid & (rank < k), v.shape, axis_name)
  # |d| as d sign(d): the same value, and gradient sign(d), which is 0 at
  # d = 0 (on-policy) as in PyTorch; jnp.abs has gradient 1 there.
  loss = -adv * rho + jnp.where(sel, kappa * d * jnp.sign(d), 0.0)
  return loss, {"ratio": sg(rho), "cov_selected": sel.astype(jnp.float32)}


@register("surrogate", "kl_cov",
          domains={"ratio": above(0), "kappa": at_least(0),
                   "log_ratio_clip": above(0)})
@defaults_from(kl_cov)
def kl_cov_part(batch: Batch, advantages: Array, *, axis_name=None, ratio,
                kappa, log_ratio_clip):
  """Unclipped ratio loss with a KL penalty on the top-covariance tokens
  (verl ``kl_cov``); see ``kl_cov``."""
  return kl_cov(batch.logprobs, behaviour_logprobs(batch), advantages,
                batch.mask, ratio=ratio, kappa=kappa,
                log_ratio_clip=log_ratio_clip, axis_name=axis_name)
