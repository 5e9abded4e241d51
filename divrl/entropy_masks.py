"""Entropy masks and weights of the seed papers: SIREN, STEER, D3S, and
entropy-based advantage shaping.

* **SIREN** (``siren`` regularizer): a self-anchored squared penalty on the
  top-p entropy of each response's peak-entropy tokens.
* **STEER** (``steer`` token weight): down-weights the tokens whose update
  would change the entropy most.
* **D3S** (``d3s_rollouts`` and ``d3s_tokens`` token weights): per group the
  rollout subset of maximal advantage variance, and the tokens of highest
  ``|A| H``, with a keep ratio relaxed over training (a step counter in the
  carry).
* **Entropy band** (``entropy_band`` regularizer): a hinge that keeps the
  policy's entropy inside ``[low, high]`` (G^2RPO's entropy shaping).
* **Entropy-based advantage shaping** (``entropy_advantage`` token weight):
  ``A + min(alpha sg(H), |A| / kappa)``, written as the equivalent weight on
  a surrogate that is positively homogeneous in ``A`` per token.

References:
  Jiang et al., "Rethinking Entropy Regularization in Large Reasoning
  Models", arXiv:2509.25133 (SIREN).
  "Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective"
  (2025), https://github.com/zz-haooo/STEER (STEER).
  "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework for
  Efficient Policy Optimization" (2025) (D3S).
  Cheng et al., "Reasoning with Exploration: An Entropy Perspective",
  arXiv:2506.14758.
  "OpenVLThinkerV2: A Generalist Multimodal Reasoning Model for
  Multi-domain Visual Tasks", arXiv:2604.08539 (entropy band).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl import risk
from divrl.registry import (FINITE, State, above, at_least, between, integer,
                            register)
from divrl.sequences import valid_rows
from divrl.types import Batch, behaviour_logprobs

Array = jax.Array


# --- SIREN ------------------------------------------------------------------


def row_quantile(values: Array, mask: Array, q: float) -> Array:
  """Per row, the ``q``-quantile of ``values`` over its valid tokens
  (linear interpolation between order statistics, NumPy's default); 0 for a
  row without valid tokens. ``[B,T] -> [B]``."""
  chex.assert_equal_shape([values, mask])
  valid = mask > 0
  n = jnp.sum(valid, axis=1)
  srt = jnp.sort(jnp.where(valid, values, jnp.inf), axis=1)
  pos = q * jnp.maximum(n - 1, 0).astype(jnp.float32)
  lo = jnp.floor(pos).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  a = jnp.take_along_axis(srt, lo[:, None], axis=1)[:, 0]
  b = jnp.take_along_axis(srt, hi[:, None], axis=1)[:, 0]
  out = a + (pos - lo) * (b - a)
  return jnp.where(n > 0, out, 0.0)


def peak_entropy_mask(entropy: Array, mask: Array,
                      quantile: float = 0.8) -> Array:
  """SIREN's peak-entropy mask: ``1[H_t > q_quantile(H_i)]`` per response
  (the top ``1 - quantile`` share of each response's tokens), ``[B,T]``
  float, 0 on padding. Piecewise constant: no gradient."""
  h = jax.lax.stop_gradient(entropy)
  threshold = row_quantile(h, mask, quantile)
  return ((h > threshold[:, None]) & (mask > 0)).astype(jnp.float32)


def selected_entropy(entropy: Array, selected: Array, axis_name=None) -> Array:
  """``H_sel``: the mean over responses with a selected token of the mean of
  ``entropy`` over their selected tokens (seq-mean-token-mean over the
  mask), over the whole batch (``psum`` over ``axis_name``)."""
  count = jnp.sum(selected, axis=1)
  row = jnp.sum(selected * entropy, axis=1) / jnp.maximum(count, 1.0)
  has = (count > 0).astype(jnp.float32)
  num = groups.psum(jnp.sum(row * has), axis_name)
  den = groups.psum(jnp.sum(has), axis_name)
  return num / jnp.maximum(den, 1.0)


def _siren_h_sel(batch: Batch, quantile: float, axis_name=None) -> Array:
  h = batch.top_p_entropy
  sel = peak_entropy_mask(h, batch.mask, quantile)
  return selected_entropy(h, sel, axis_name)


def _siren_init(quantile: float = 0.8):
  del quantile
  return {"anchor": jnp.zeros((), jnp.float32),
          "set": jnp.zeros((), bool)}


def _siren_update(carry, batch: Batch, quantile: float = 0.8,
                  axis_name=None):
  h_sel = jax.lax.stop_gradient(_siren_h_sel(batch, quantile, axis_name))
  return {"anchor": jnp.where(carry["set"], carry["anchor"], h_sel),
          "set": jnp.ones((), bool)}


@register("regularizer", "siren", reads=("top_p_entropy",),
          state=State(_siren_init, _siren_update),
          domains={"quantile": between(0, 1), "coef": at_least(0)})
def siren_part(batch: Batch, *, quantile: float = 0.8, carry=None,
               axis_name=None) -> Array:
  """SIREN's self-anchored selective entropy penalty ``(H_sel - H_anchor)^2``.

  ``H_sel`` is the seq-mean-token-mean of the top-p entropy
  (``Batch.top_p_entropy``, the run's ``statistics.top_p``, SIREN's 0.8)
  over each response's peak-entropy tokens (``peak_entropy_mask``, the top
  20% at ``quantile=0.8``). ``H_anchor`` is carried: the behaviour policy's
  ``H_sel`` at the first step, then fixed. The batch-level penalty is placed
  on every valid token, so that under a mean aggregation (``token-mean``,
  ``seq-mean-token-mean``) the loss adds exactly ``coef * (H_sel -
  H_anchor)^2`` (SIREN's ``c = 0.005``); token-sum aggregations scale it.
  With micro-batches each micro-batch's ``H_sel`` is penalised (their
  token-weighted mean).

  References:
    "Rethinking Entropy Regularization in Large Reasoning Models",
    arXiv:2509.25133.
  """
  carry = _siren_init() if carry is None else carry
  h_sel = _siren_h_sel(batch, quantile, axis_name)
  anchor = jnp.where(carry["set"], carry["anchor"],
                     jax.lax.stop_gradient(h_sel))
  penalty = (h_sel - anchor) ** 2
  return penalty * batch.mask


# --- STEER ------------------------------------------------------------------


def entropy_change(logprobs: Array, old_logprobs: Array, entropy: Array,
                   advantages: Array) -> Array:
  """STEER's per-token predicted entropy change magnitude
  ``|(A / p_old) p (1 - p) (log p + H)|`` (``p`` the token's probability
  under the current policy, ``H`` its entropy), ``[B,T]``. ``p / p_old`` is
  computed as ``exp(min(log p - log p_old, 40))``: finite where ``p_old``
  underflows (the weights only use the order and range of ``Omega``)."""
  p = jnp.exp(logprobs)
  ratio = jnp.exp(jnp.minimum(logprobs - old_logprobs, 40.0))
  return jnp.abs(advantages * ratio * (1.0 - p) * (logprobs + entropy))


@register("token_weight", "steer", reads=("entropy",),
          domains={"w_min": at_least(0), "w_max": at_least(0), "k": FINITE})
def steer_part(batch: Batch, advantages: Array, *, w_min: float = 0.8,
               w_max: float = 1.2, mode: str = "linear", k: float = 1.0,
               axis_name=None) -> Array:
  """STEER's entropy-change-aware token weights.

  ``Omega = entropy_change(...)`` on the batch's valid tokens (no
  gradient). ``mode="linear"`` (the code's default): ``w = w_max - (Omega -
  Omega_min) (w_max - w_min) / (Omega_max - Omega_min)`` with the batch's
  min and max (``w_max`` everywhere when they are equal), so the token whose
  update would change the entropy most gets ``w_min``. ``mode="exp"``:
  ``w = clip(exp(-k Omega), w_min, 1)`` (``k`` is our default; the code's
  value was not checked). STEER applies the weights to a dual-clip PPO loss
  with token-mean aggregation.

  References:
    "Rethinking Entropy Interventions in RLVR: An Entropy Change
    Perspective" (2025), https://github.com/zz-haooo/STEER.
  """
  if mode not in ("linear", "exp"):
    raise ValueError(f"mode must be 'linear' or 'exp', got {mode!r}.")
  sg = jax.lax.stop_gradient
  omega = entropy_change(sg(batch.logprobs), behaviour_logprobs(batch),
                         sg(batch.entropy), sg(advantages))
  valid = batch.mask > 0
  if mode == "exp":
    return jnp.where(valid, jnp.clip(jnp.exp(-k * omega), w_min, 1.0), 0.0)
  lo = jnp.min(jnp.where(valid, omega, jnp.inf))
  hi = jnp.max(jnp.where(valid, omega, -jnp.inf))
  if axis_name is not None:
    lo = jax.lax.pmin(lo, axis_name)
    hi = jax.lax.pmax(hi, axis_name)
  span = hi - lo
  scaled = jnp.where(span > 0, (omega - lo) / jnp.where(span > 0, span, 1.0),
                     0.0)
  w = jnp.clip(w_max - scaled * (w_max - w_min), w_min, w_max)
  return jnp.where(valid, w, 0.0)


# --- D3S --------------------------------------------------------------------


def keep_ratio(step: Array, start: float, end: float, steps: int) -> Array:
  """A keep ratio moved linearly from ``start`` to ``end`` over ``steps``
  steps, then held (D3S's relaxing schedule; its exact form is
  unpublished, this is our choice)."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(steps), 1), 0.0,
                  1.0)
  return start + (end - start) * frac


def max_variance_subset(values: Array, group_ids: Array, num_groups: int,
                        keep: Array | float, *, valid: Array | None = None,
                        axis_name=None) -> Array:
  """Per group, the ``k = ceil(keep * n)`` rows whose ``values`` have the
  largest variance, ``[B]`` bool.

  A variance-maximising subset of scalars is made of the ``a`` smallest and
  the ``k - a`` largest values for some ``a`` (moving a chosen middle value
  outward never lowers the variance); ``a`` is found by a scan over the
  sorted group with prefix sums. Ties between equal variances go to the
  smallest ``a``; invalid rows are never selected.
  """
  s = risk.sort_groups(values, group_ids, num_groups, valid=valid,
                       axis_name=axis_name)
  r = jnp.where(s.ok, s.r, 0.0)
  start = s.pos == 0
  c1 = groups.segment_cumsum(r, start) - r          # exclusive prefix sums
  c2 = groups.segment_cumsum(r * r, start) - r * r
  t1 = jax.ops.segment_sum(r, s.group, num_segments=num_groups)[s.group]
  t2 = jax.ops.segment_sum(r * r, s.group, num_segments=num_groups)[s.group]
  idx = jnp.arange(r.shape[0])
  first = idx - s.pos.astype(jnp.int32)
  n = s.n.astype(jnp.int32)
  k = jnp.clip(jnp.ceil(keep * s.n).astype(jnp.int32), jnp.minimum(n, 1), n)

  def prefix(c, total, j):      # sum of the j smallest values (j <= n)
    inside = jnp.clip(first + j, 0, r.shape[0] - 1)
    return jnp.where(j >= n, total, c[inside])

  a = s.pos.astype(jnp.int32)    # this sorted row as candidate a
  cand = s.ok & (a <= k)
  hi_from = n - k + a
  s1 = prefix(c1, t1, a) + t1 - prefix(c1, t1, hi_from)
  s2 = prefix(c2, t2, a) + t2 - prefix(c2, t2, hi_from)
  kf = jnp.maximum(k, 1).astype(jnp.float32)
  var = s2 / kf - (s1 / kf) ** 2
  var = jnp.where(cand, var, -jnp.inf)
  best = jax.ops.segment_max(var, s.group, num_segments=num_groups)[s.group]
  # Relative slack for the float rounding of equal variances.
  tol = 1e-6 * jnp.maximum(jnp.abs(best), 1e-12)
  at_best = cand & (var >= best - tol)
  big = jnp.iinfo(jnp.int32).max
  a_star = jax.ops.segment_min(jnp.where(at_best, a, big), s.group,
                               num_segments=num_groups)[s.group]
  pos = s.pos.astype(jnp.int32)
  chosen = s.ok & ((pos < a_star) | (pos >= n - k + a_star))
  return risk.unsort(s, chosen.astype(jnp.float32)) > 0


def _row_values(advantages: Array, mask: Array) -> Array:
  m = mask > 0
  count = jnp.sum(m, axis=1)
  return jnp.sum(jnp.where(m, advantages, 0.0), axis=1) / jnp.maximum(count,
                                                                      1)


def _step_init():
  return {"step": jnp.zeros((), jnp.int32)}


def _step_update(carry, batch):
  del batch
  return {"step": carry["step"] + 1}


_STEP = State(_step_init, _step_update)


@register("token_weight", "d3s_rollouts", state=_STEP,
          domains={"keep_start": between(0, 1), "keep_end": between(0, 1),
                   "schedule_steps": integer(0)})
def d3s_rollouts_part(batch: Batch, advantages: Array, *,
                      keep_start: float = 0.5, keep_end: float = 1.0,
                      schedule_steps: int = 100, carry=None,
                      axis_name=None) -> Array:
  """D3S's sample-level down-sampling: per group, weight 1 on the
  ``ceil(keep * n)`` rollouts whose (sequence-mean) advantages have the
  largest variance (``max_variance_subset``), 0 on the others.

  ``keep`` follows ``keep_ratio(step, keep_start, keep_end,
  schedule_steps)`` with the step counted in the carry: aggressive first,
  relaxed later. Inspired by D3S: the selection rule is the paper's, the
  schedule's form and defaults are our choice (the paper's were not
  available to us).

  References:
    "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework
    for Efficient Policy Optimization" (2025).
  """
  step = (carry or _step_init())["step"]
  keep = keep_ratio(step - 1, keep_start, keep_end, schedule_steps)
  values = _row_values(jax.lax.stop_gradient(advantages), batch.mask)
  has = valid_rows(batch.mask)
  chosen = max_variance_subset(values, batch.group_ids, batch.groups, keep,
                               valid=has, axis_name=axis_name)
  return jnp.broadcast_to(chosen[:, None], batch.mask.shape).astype(
      jnp.float32) * batch.mask


@register("token_weight", "d3s_tokens", reads=("entropy",), state=_STEP,
          domains={"keep_start": between(0, 1), "keep_end": between(0, 1),
                   "schedule_steps": integer(0)})
def d3s_tokens_part(batch: Batch, advantages: Array, *,
                    keep_start: float = 0.5, keep_end: float = 1.0,
                    schedule_steps: int = 100, carry=None,
                    axis_name=None) -> Array:
  """D3S's token-level down-sampling: weight 1 on the tokens whose
  ``|A| H`` is at least the batch's ``(1 - keep)``-quantile (over valid
  tokens, gathered over ``axis_name``), 0 elsewhere; ``keep`` as in
  ``d3s_rollouts``. Inspired by D3S (the schedule is our choice).

  References:
    "Learning More with Less: A Dynamic Dual-Level Down-Sampling Framework
    for Efficient Policy Optimization" (2025).
  """
  step = (carry or _step_init())["step"]
  keep = keep_ratio(step - 1, keep_start, keep_end, schedule_steps)
  sg = jax.lax.stop_gradient
  score = jnp.abs(sg(advantages)) * sg(batch.entropy)
  valid = batch.mask > 0
  flat = groups.all_gather(jnp.where(valid, score, jnp.nan).reshape(-1),
                           axis_name)
  threshold = jnp.nanquantile(flat, 1.0 - keep)
  return jnp.where(valid & (score >= threshold), 1.0, 0.0)


# --- Entropy-based advantage shaping ------------------------------------------


def entropy_shaped_advantages(advantages: Array, entropy: Array, *,
                              alpha: float = 0.4, kappa: float = 2.0
                              ) -> Array:
  """``A + min(alpha sg(H), |A| / kappa)`` per token (arXiv:2506.14758).

  The clip ``|A| / kappa`` (``kappa > 1``) keeps the bonus below ``|A|``, so
  the shaped advantage never changes sign and is 0 where ``A`` is.
  """
  if not kappa > 1:
    raise ValueError(f"kappa must be > 1 (the bonus must not flip the sign of"
                     f" A), got {kappa!r}.")
  bonus = jnp.minimum(alpha * jax.lax.stop_gradient(entropy),
                      jnp.abs(advantages) / kappa)
  return advantages + bonus


@register("token_weight", "entropy_advantage", reads=("entropy",),
          domains={"alpha": at_least(0), "kappa": above(1)})
def entropy_advantage_part(batch: Batch, advantages: Array, *,
                           alpha: float = 0.4, kappa: float = 2.0) -> Array:
  """Entropy-based advantage shaping as a token weight.

  The shaped advantage ``A' = entropy_shaped_advantages(A, H)`` has the sign
  of ``A``, so ``A' = w A`` with ``w = A' / A`` in ``[1 - 1/kappa, 1 +
  1/kappa]`` (1 where ``A = 0``). A token weight multiplies the surrogate's
  per-token loss, which equals replacing ``A`` by ``A'`` for any surrogate
  positively homogeneous in ``A`` per token (REINFORCE, PPO clip, CISPO).
  ``alpha`` and ``kappa`` are our defaults (0.4, 2).

  References:
    "Reasoning with Exploration: An Entropy Perspective",
    arXiv:2506.14758.
  """
  a = jax.lax.stop_gradient(advantages)
  shaped = entropy_shaped_advantages(a, batch.entropy, alpha=alpha,
                                     kappa=kappa)
  nonzero = a != 0
  w = jnp.where(nonzero, shaped / jnp.where(nonzero, a, 1.0), 1.0)
  return jnp.where(batch.mask > 0, w, 0.0)


# --- Entropy band -----------------------------------------------------------


def entropy_band(entropy: Array, mask: Array, *, low: float = 0.5,
                 high: float = 2.5, scope: str = "batch",
                 axis_name=None) -> Array:
  """``relu(low - H) + relu(H - high)``, per token ``[B,T]`` (0 on padding).

  ``scope="token"`` applies the hinge to each token's entropy;
  ``scope="batch"`` to the mean entropy over the valid tokens of the batch
  (all devices of ``axis_name``), placed on every valid token, so that a
  token-mean aggregation gives exactly the hinge of the mean.
  """
  chex.assert_equal_shape([entropy, mask])
  if not 0.0 <= low <= high:
    raise ValueError(f"need 0 <= low <= high, got low={low}, high={high}.")
  if scope not in ("token", "batch"):
    raise ValueError(f"scope must be 'token' or 'batch', got {scope!r}.")
  m = mask > 0
  h = jnp.where(m, entropy, 0.0)
  if scope == "batch":
    total = groups.psum(jnp.sum(h), axis_name)
    count = groups.psum(jnp.sum(m.astype(h.dtype)), axis_name)
    h = jnp.broadcast_to(total / jnp.maximum(count, 1.0), h.shape)
  band = jax.nn.relu(low - h) + jax.nn.relu(h - high)
  return jnp.where(m, band, 0.0)


@register("regularizer", "entropy_band", reads=("entropy",),
          domains={"low": at_least(0), "high": at_least(0),
                   "coef": at_least(0)})
def entropy_band_part(batch: Batch, *, low: float = 0.5, high: float = 2.5,
                      scope: str = "batch", axis_name=None) -> Array:
  """Keeps the policy's token entropy inside ``[low, high]`` nats: the hinge
  ``relu(low - H) + relu(H - high)`` (``entropy_band``) of the exact entropy
  ``Batch.entropy`` (current parameters), on the batch's mean entropy by
  default or per token, scaled by the regularizer's ``coef``. Zero inside
  the band: it pushes entropy up only when it collapses below ``low`` and
  down only when it blows past ``high``. Inspired by G^2RPO's entropy
  shaping of OpenVLThinkerV2 (the abstract names a band regulariser, not its
  form): the hinge, the scope and the band's defaults are our choices; use
  ``aggregation="token-mean"`` for the exact hinge of the mean.

  References:
    "OpenVLThinkerV2: A Generalist Multimodal Reasoning Model for
    Multi-domain Visual Tasks", arXiv:2604.08539.
  """
  return entropy_band(batch.entropy, batch.mask, low=low, high=high,
                      scope=scope, axis_name=axis_name)
