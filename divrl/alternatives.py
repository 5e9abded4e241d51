"""Alternative objectives of the seed papers: ROVER's uniform-policy Q
regression, NFT's implicit negative policy, and the off-policy group
REINFORCE family (REC, AsymRE).

References:
  "Random Policy Valuation is Enough for LLM Reasoning with Verifiable
  Rewards", https://github.com/yuxiaooye/ROVER (ROVER).
  Chen et al., "Bridging Supervised Learning and Reinforcement Learning in
  Math Reasoning", arXiv:2505.18116, https://github.com/NVlabs/NFT (NFT).
  Yao et al., "Group-Relative REINFORCE Is Secretly an Off-Policy Algorithm:
  Demystifying Some Myths About GRPO and Its Friends", arXiv:2509.24203
  (REC, OPMD, AsymRE).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import FINITE, above, at_least, between, register
from divrl.sequences import valid_rows
from divrl.types import Batch, behaviour_logprobs, scalar_rewards_of

Array = jax.Array
sg = jax.lax.stop_gradient


# --- ROVER ------------------------------------------------------------------


def _next(x: Array, mask: Array) -> Array:
  """``x[:, t+1]`` where position ``t+1`` is a valid token, else 0."""
  shifted = jnp.concatenate([x[:, 1:], jnp.zeros_like(x[:, :1])], axis=1)
  m = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
  return jnp.where(m > 0, shifted, 0.0)


def rover_loss(logprobs: Array, old_logprobs: Array, vocab_mean: Array,
               old_vocab_mean: Array, advantages: Array, mask: Array, *,
               temperature: float = 1.0) -> Array:
  """ROVER's per-token regression ``(Q_t - sg(target_t))^2``.

  ``Q_t = rho (l_t - l_old_t)`` (the policy's log-ratio as a Q-value of the
  uniform policy, ``rho`` the ``temperature``), ``target_t = A + rho
  (Vbar(s_{t+1}) - Vbar_old(s_{t+1}))``, ``Vbar`` the vocabulary-mean
  log-prob of the next position (0 after the last valid token), ``A`` the
  sequence's advantage (ROVER's group-centred reward).
  """
  chex.assert_equal_shape([logprobs, old_logprobs, vocab_mean,
                           old_vocab_mean, advantages, mask])
  q = temperature * (logprobs - old_logprobs)
  v_next = temperature * (_next(vocab_mean, mask) - _next(old_vocab_mean,
                                                          mask))
  target = sg(advantages + v_next)
  return (q - target) ** 2


@register("surrogate", "rover",
          reads=("vocab_mean_logprob", "old_vocab_mean_logprob"),
          domains={"temperature": above(0)})
def rover_part(batch: Batch, advantages: Array, *,
               temperature: float = 1.0) -> Array:
  """ROVER: regress the uniform-policy Q-value ``rho (log pi - log pi_old)``
  onto ``A + rho (Vbar - Vbar_old)`` of the next state (``rover_loss``),
  replacing the policy gradient. ``Vbar`` is ``Batch.vocab_mean_logprob``
  (current parameters) and ``Vbar_old`` ``Batch.old_vocab_mean_logprob``
  (the behaviour policy). Use it with a group-centred advantage (``dr_grpo``)
  and token-mean aggregation. Inspired by ROVER: Q, V and the target follow
  the released actor; the squared loss and ``temperature = 1`` are our
  choice (the released loss function and its ``rover_t`` were not read).

  References:
    "Random Policy Valuation is Enough for LLM Reasoning with Verifiable
    Rewards", https://github.com/yuxiaooye/ROVER.
  """
  return rover_loss(batch.logprobs, behaviour_logprobs(batch),
                    batch.vocab_mean_logprob, batch.old_vocab_mean_logprob,
                    advantages, batch.mask, temperature=temperature)


# --- NFT --------------------------------------------------------------------


def nft_loss(logprobs: Array, old_logprobs: Array, correct: Array,
             accuracy: Array, *, negative_weight: float = 1.0,
             log_ratio_max: float = 10.0, accuracy_clip: float = 0.02,
             floor: float = 1e-6) -> Array:
  """NFT per token: ``-log R`` on correct rows, ``negative_weight * -log((1 -
  r R) / (1 - r))`` on wrong rows, ``R = exp(min(l - l_old, log_ratio_max))``,
  ``r`` the group accuracy clipped to ``[accuracy_clip, 1 -
  accuracy_clip]``; ``1 - r R`` is floored at ``floor``, its gradient kept
  (``d(1 - r R) / max(1 - r R, floor)``), as the code clamps the argument
  while preserving the gradient."""
  chex.assert_equal_shape([logprobs, old_logprobs])
  d = jnp.minimum(logprobs - old_logprobs, log_ratio_max)
  r = jnp.clip(accuracy, accuracy_clip, 1.0 - accuracy_clip)[:, None]
  arg = 1.0 - r * jnp.exp(d)
  safe = sg(jnp.maximum(arg, floor))
  # Value log(max(arg, floor)); gradient d arg / max(arg, floor).
  log_arg = jnp.log(safe) + (arg - sg(arg)) / safe
  negative = -(log_arg - jnp.log(1.0 - r))
  return jnp.where(correct[:, None], -d, negative_weight * negative)


@register("surrogate", "nft",
          domains={"negative_weight": at_least(0),
                   "accuracy_clip": between(0, 0.5, low_open=True)})
def nft_part(batch: Batch, advantages: Array, *,
             negative_weight: float = 1.0, log_ratio_max: float = 10.0,
             accuracy_clip: float = 0.02, axis_name=None) -> Array:
  """NFT (Negative-aware Fine-Tuning): a likelihood loss on the correct
  samples and, on the wrong ones, on the implicit negative policy ``(pi_old
  - r pi) / (1 - r)`` (``nft_loss``; ``r`` the group accuracy from
  ``Batch.rewards > 0``). Ignores ``advantages``. Strictly on-policy its
  gradient is ``dr_grpo``'s divided by ``1 - r`` per prompt (tested). The
  code reduces by a token sum / 1000: ``aggregation="token-sum"`` with a
  ``coef``-free scale.

  References:
    "Bridging Supervised Learning and Reinforcement Learning in Math
    Reasoning", arXiv:2505.18116.
  """
  del advantages
  r = scalar_rewards_of(batch, "nft")
  valid = valid_rows(batch.response_mask)
  acc = groups.broadcast(groups.group_pass_rate(
      r, batch.group_ids, batch.groups, valid=valid, axis_name=axis_name),
                         batch.group_ids)
  return nft_loss(batch.logprobs, behaviour_logprobs(batch), r > 0, acc,
                  negative_weight=negative_weight,
                  log_ratio_max=log_ratio_max, accuracy_clip=accuracy_clip)


# --- REC / AsymRE -------------------------------------------------------------

REC_MASKS = ("none", "one_side", "two_side", "ring")


def rec_mask(ratio: Array, advantages: Array, *, mode: str = "one_side",
             eps_low: float = 0.2, eps_high: float = 0.2,
             ring_low: float = 0.6, ring_high: float = 2.0) -> Array:
  """Which tokens REINFORCE keeps, by their ratio ``rho = pi / pi_old``.

  ``"none"``: all. ``"one_side"``: drop the tokens PPO's clip would freeze
  (``A > 0`` with ``rho > 1 + eps_high``, ``A < 0`` with ``rho < 1 -
  eps_low``). ``"two_side"``: keep ``1 - eps_low <= rho <= 1 + eps_high``.
  ``"ring"``: the two-sided band, plus the tokens far on the side the update
  would move back toward it: ``A >= 0`` with ``rho <= 1 - ring_low`` and
  ``A <= 0`` with ``rho >= 1 + ring_high`` (the released code's rule).
  """
  if mode == "ring":
    band = (ratio >= 1.0 - eps_low) & (ratio <= 1.0 + eps_high)
    return (band | ((advantages >= 0) & (ratio <= 1.0 - ring_low))
            | ((advantages <= 0) & (ratio >= 1.0 + ring_high)))
  if mode == "none":
    return jnp.ones_like(ratio, bool)
  if mode == "one_side":
    frozen = (((advantages > 0) & (ratio > 1.0 + eps_high))
              | ((advantages < 0) & (ratio < 1.0 - eps_low)))
    return ~frozen
  if mode == "two_side":
    return (ratio >= 1.0 - eps_low) & (ratio <= 1.0 + eps_high)
  raise ValueError(f"mode must be one of {REC_MASKS}, got {mode!r}.")


@register("surrogate", "rec",
          domains={"eps_low": at_least(0), "eps_high": at_least(0),
                   "ring_low": at_least(0), "ring_high": at_least(0),
                   "tau": at_least(0), "log_ratio_clip": above(0)})
def rec_part(batch: Batch, advantages: Array, *, mode: str = "one_side",
             eps_low: float = 0.2, eps_high: float = 0.2,
             ring_low: float = 0.6, ring_high: float = 2.0, tau: float = 0.0,
             log_ratio_clip: float | None = 20.0) -> Array:
  """REC: off-policy group REINFORCE ``-sg(A) log pi`` on the tokens
  ``rec_mask`` keeps, plus ``tau/2 (log pi - log pi_old)^2`` (OPMD's
  proximal term; 0 by default).

  With ``mode="one_side"`` the gradient of every kept token equals PPO
  clip's at ``rho = 1``: the policy gradient without the importance ratio.
  The four masks follow the released code (Trinity-RFT's ``rec`` loss; its
  ring bounds default to ``ring_low = 0.6``, ``ring_high = 2``); its ``k2``
  regularizer ``c (log pi - log pi_old)^2`` is our ``tau = 2 c``. Inspired
  by the REC family for the rest: the code averages the loss over all
  tokens (``token-mean``), and its sequence-ratio and advantage-weighted
  variants are not built.

  References:
    "Group-Relative REINFORCE Is Secretly an Off-Policy Algorithm:
    Demystifying Some Myths About GRPO and Its Friends", arXiv:2509.24203.
  """
  d = batch.logprobs - behaviour_logprobs(batch)
  if log_ratio_clip is not None:
    d = jnp.clip(d, -log_ratio_clip, log_ratio_clip)
  keep = rec_mask(jnp.exp(sg(d)), sg(advantages), mode=mode, eps_low=eps_low,
                  eps_high=eps_high, ring_low=ring_low, ring_high=ring_high)
  loss = jnp.where(keep, -sg(advantages) * batch.logprobs, 0.0)
  if tau:
    loss = loss + 0.5 * tau * d * d
  return loss


@register("advantage", "asymre",
          domains={"shift": FINITE})
def asymre_part(batch: Batch, *, shift: float = 0.1,
                axis_name=None) -> Array:
  """AsymRE: ``A_i = r_i - (mean_group(r) - shift)``, a baseline below the
  group mean (``shift > 0`` favours reinforcing over penalising), placed on
  every token. Inspired by AsymRE (the shift is a hyperparameter; 0.1 is our
  default).

  References:
    "Group-Relative REINFORCE Is Secretly an Off-Policy Algorithm:
    Demystifying Some Myths About GRPO and Its Friends", arXiv:2509.24203.
  """
  r = scalar_rewards_of(batch, "asymre")
  valid = valid_rows(batch.response_mask)
  total = groups.group_sum(jnp.where(valid, r, 0.0), batch.group_ids,
                           batch.groups, axis_name)
  count = groups.group_sum(valid.astype(r.dtype), batch.group_ids,
                           batch.groups, axis_name)
  mean = groups.broadcast(total / jnp.maximum(count, 1.0), batch.group_ids)
  adv = jnp.where(valid, r - (mean - shift), 0.0)
  return adv[:, None] * batch.mask
