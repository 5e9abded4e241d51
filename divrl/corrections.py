"""Off-policy corrections as token weights.

Token-weight parts return ``[B,T]`` weights that multiply the surrogate's
per-token loss (the objective applies ``stop_gradient`` to them; they are
detached here as well). They correct for the gap between the sampler
(``pi_roll``, ``Batch.rollout_logprobs``), the behaviour policy the trainer
recomputed (``pi_old``, ``Batch.old_logprobs``) and the current policy:

* ``rollout_is``: the decoupled train/inference importance weight
  ``sg(pi_old / pi_roll)``, truncated (TIS) or masked (IcePop), per token or
  per sequence. It multiplies a surrogate whose ratio is to ``pi_old``
  (verl's three-policy mode). In bypass mode (``bypass_ppo``,
  ``bypass_reinforce`` in ``divrl.surrogates``) the ratio is to ``pi_roll``
  already: do not add ``rollout_is`` there.
* ``off_policy_sequence_mask``: drops sequences with a negative advantage
  whose sampling policy drifted too far from the current one (DeepSeek-V3.2).

Padding always gets weight 0.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl.registry import FINITE, above, defaults_from, register
from divrl.sequences import sequence_mean, sequence_sum
from divrl.surrogates import log_ratio
from divrl.types import Batch, behaviour_logprobs

Array = jax.Array
sg = jax.lax.stop_gradient

LEVELS = ("token", "sequence")
MODES = ("truncate", "mask")


def rollout_is_weights(old_logprobs: Array, rollout_logprobs: Array,
                       mask: Array, *, level: str = "token",
                       mode: str = "truncate", threshold: float = 2.0,
                       mask_low: float = 0.5, mask_high: float = 5.0,
                       log_ratio_clip: float | None = 20.0,
                       batch_normalize: bool = False,
                       axis_name=None) -> Array:
  """Decoupled train/inference importance weights ``w = sg(pi_old / pi_roll)``.

  ``level="token"``: ``w_t = exp(clamp(o_t - r_t))``; ``level="sequence"``:
  ``w_i = exp(clamp(sum_t m (o - r)))`` broadcast over the sequence's tokens
  (``clamp`` to ``+-log_ratio_clip``, verl's safety bound 20, in log space).
  Then ``mode="truncate"`` (TIS): ``min(w, threshold)``; ``mode="mask"``
  (IcePop): ``w`` where ``mask_low <= w <= mask_high``, else 0 (the weight
  is kept inside the band, as verl does; the response mask and hence the
  denominators are unchanged). Padding gets 0. With ``batch_normalize`` the
  weights are divided by their mean over the valid tokens (token level) or
  the valid sequences (sequence level) of the whole batch (``psum`` over
  ``axis_name``), when that mean exceeds ``1e-8``.

  Defaults: ``threshold=2.0`` is verl's ``rollout_is_threshold`` and tunix's
  ``sampler_is_threshold``; ``[0.5, 5.0]`` is verl's IcePop preset;
  ``level="token"`` is tunix's ``sampler_is="token"`` and verl's
  ``decoupled_token_is`` preset (verl's class default is ``"sequence"``).
  TRL's ``vllm_importance_sampling_mode="token_truncate"`` is ``level="token"``
  with ``threshold=3.0`` and ``log_ratio_clip=None``.

  References:
    Yao et al., "Your Efficient RL Framework Secretly Brings You Off-Policy
    RL Training" (2025), https://fengyao.notion.site/off-policy-rl (TIS).
    Ling Team, "Every Step Evolves: Scaling Reinforcement Learning for
    Trillion-Scale Thinking Model", arXiv:2510.18855 (IcePop).

  Args:
    old_logprobs: ``[B,T]`` log-probs of ``pi_old``.
    rollout_logprobs: ``[B,T]`` log-probs reported by the sampler.
    mask: ``[B,T]`` response mask.
    level: ``"token"`` or ``"sequence"``.
    mode: ``"truncate"`` or ``"mask"``.
    threshold: truncation cap ``C > 0`` (``mode="truncate"``).
    mask_low, mask_high: kept band ``0 < lo <= hi`` (``mode="mask"``).
    log_ratio_clip: clamp of the log weight; ``None`` disables.
    batch_normalize: rescale the weights to mean 1 over the batch.
    axis_name: mesh axis for the batch mean inside ``shard_map``.

  Returns:
    ``[B,T]`` detached weights, 0 on padding.
  """
  chex.assert_rank([old_logprobs, rollout_logprobs, mask], 2)
  chex.assert_equal_shape([old_logprobs, rollout_logprobs, mask])
  if level not in LEVELS:
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  if not threshold > 0:
    raise ValueError(f"threshold must be > 0, got {threshold}.")
  if not 0 < mask_low <= mask_high:
    raise ValueError(f"mask_low and mask_high must satisfy 0 < mask_low <="
                     f" mask_high, got {mask_low}, {mask_high}.")
  if log_ratio_clip is not None and not log_ratio_clip > 0:
    raise ValueError(f"log_ratio_clip must be > 0 or None, got"
                     f" {log_ratio_clip}.")
  valid = mask > 0
  d = sg(old_logprobs) - sg(rollout_logprobs)
  if level == "sequence":
    d = jnp.broadcast_to(sequence_sum(d, mask), d.shape)
  w = jnp.exp(log_ratio(d, 0.0, log_ratio_clip))
  w = jnp.where(valid, w, 0.0)
  if mode == "truncate":
    w = jnp.minimum(w, threshold)
  else:
    w = jnp.where((w >= mask_low) & (w <= mask_high), w, 0.0)
  if batch_normalize:
    if level == "token":
      stats = jnp.stack([jnp.sum(w), jnp.sum(valid).astype(w.dtype)])
    else:
      rows = jnp.any(valid, axis=-1)
      first = jnp.max(w, axis=-1)  # the row's constant weight
      stats = jnp.stack([jnp.sum(jnp.where(rows, first, 0.0)),
                         jnp.sum(rows).astype(w.dtype)])
    if axis_name is not None:
      stats = jax.lax.psum(stats, axis_name)
    mean = stats[0] / jnp.maximum(stats[1], 1.0)
    w = jnp.where(mean > 1e-8, w / jnp.where(mean > 1e-8, mean, 1.0), w)
  return sg(w)


@register("token_weight", "rollout_is", reads=("rollout_logprobs",),
          domains={"threshold": above(0), "mask_low": above(0),
                   "mask_high": above(0), "log_ratio_clip": above(0)})
@defaults_from(rollout_is_weights)
def rollout_is_part(batch: Batch, advantages: Array, *, axis_name=None, level,
                    mode, threshold, mask_low, mask_high, log_ratio_clip,
                    batch_normalize) -> Array:
  """Train/inference IS weight ``sg(pi_old / pi_roll)``, truncated (TIS) or
  masked (IcePop); see ``rollout_is_weights``. Needs
  ``Batch.rollout_logprobs``; ``pi_old`` is ``Batch.old_logprobs`` (or the
  detached current log-probs when on-policy)."""
  del advantages
  return rollout_is_weights(behaviour_logprobs(batch), batch.rollout_logprobs,
                            batch.response_mask, level=level, mode=mode,
                            threshold=threshold, mask_low=mask_low,
                            mask_high=mask_high,
                            log_ratio_clip=log_ratio_clip,
                            batch_normalize=batch_normalize,
                            axis_name=axis_name)


def off_policy_sequence_mask_weights(logprobs: Array,
                                     sampling_logprobs: Array,
                                     advantages: Array, mask: Array, *,
                                     delta: float) -> Array:
  """Masks negative-advantage sequences whose sampler drifted: ``[B,T]``.

  ``M_i = 1`` if ``Abar_i >= 0`` or ``mean_t (l_samp - sg(l)) <= delta``,
  else 0, on the valid tokens of sequence ``i`` (0 on padding).
  ``mean_t (l_samp - l)`` is the per-token k1 estimate of ``KL(pi_samp ||
  pi)`` on the sampled sequence, and ``Abar_i`` the mean advantage over the
  sequence's valid tokens (the sequence advantage for outcome rewards; our
  choice for token-level advantages). Rows without valid tokens get 0.

  References:
    DeepSeek-AI, "DeepSeek-V3.2: Pushing the Frontier of Open Large Language
    Models", arXiv:2512.02556 (off-policy sequence masking); TRL
    ``off_policy_mask_threshold``.

  Args:
    logprobs: ``[B,T]`` current log-probs (detached here).
    sampling_logprobs: ``[B,T]`` log-probs of the sampling policy.
    advantages: ``[B,T]`` advantages.
    mask: ``[B,T]`` response mask.
    delta: threshold on the mean log-ratio (any float).

  Returns:
    ``[B,T]`` weights in {0, 1}.
  """
  chex.assert_rank([logprobs, sampling_logprobs, advantages, mask], 2)
  chex.assert_equal_shape([logprobs, sampling_logprobs, advantages, mask])
  if delta is None:
    raise ValueError("delta must be a float, got None.")
  valid = mask > 0
  kl = sequence_mean(sg(sampling_logprobs) - sg(logprobs), mask)
  abar = sequence_mean(sg(advantages), mask)
  keep = (abar >= 0) | (kl <= delta)
  return (keep & valid).astype(jnp.float32)


@register("token_weight", "off_policy_sequence_mask",
          domains={"delta": FINITE})
def off_policy_sequence_mask_part(batch: Batch, advantages: Array, *,
                                  delta: float = 0.5) -> Array:
  """DeepSeek-V3.2 off-policy sequence mask (TRL
  ``off_policy_mask_threshold``); see ``off_policy_sequence_mask_weights``.
  The sampling log-probs are ``Batch.rollout_logprobs`` when given, else
  ``pi_old``. ``delta=0.5`` is the starting point TRL's documentation
  suggests (the paper gives no value; TRL's option is off by default)."""
  samp = (batch.rollout_logprobs if batch.rollout_logprobs is not None
          else behaviour_logprobs(batch))
  return off_policy_sequence_mask_weights(batch.logprobs, samp, advantages,
                                          batch.response_mask, delta=delta)
