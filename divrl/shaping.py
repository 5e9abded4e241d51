"""Reward shaping transforms computed from the response itself.

Each shaping is a pure function of the response mask (lengths), the token
ids and the rewards, and a ``transform`` part (see ``divrl.objective``) that
returns the batch with new ``rewards``. Lengths are counted in *tokens*:
``|y| = #{t : m_t > 0}``, the number of valid response tokens (TRL's
reward functions and tunix count characters of the decoded text instead).

All of them need scalar rewards ``[B]``; reduce reward components first.
``overlong_penalty`` and ``ngram_repetition_penalty`` add to the reward;
``cosine_length_reward`` replaces it. They do not touch ``token_rewards``;
put shaping transforms before ``kl_in_reward`` when both are used.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl.registry import (FINITE, above, at_least, at_most, between,
                            defaults_from, integer, register)
from divrl.sequences import sequence_lengths
from divrl.types import Batch
from divrl.types import scalar_rewards_of

Array = jax.Array


# --- DAPO overlong penalty --------------------------------------------------


def overlong_penalty_values(lengths: Array, *, max_length: int,
                            cache_length: int, factor: float = 1.0) -> Array:
  """DAPO's soft overlong punishment ``[B]`` (Eq. 13).

  ``R_len = 0`` if ``|y| <= L_max - L_cache``;
  ``(L_max - L_cache - |y|) / L_cache * factor`` if ``L_max - L_cache < |y|
  <= L_max``; ``-factor`` if ``|y| > L_max``.

  Reference: Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning
  System at Scale", arXiv:2503.14476, Eq. 13 (``factor`` is verl's
  ``overlong_buffer.penalty_factor``; the paper uses 1).
  """
  chex.assert_rank(lengths, 1)
  if cache_length <= 0:
    raise ValueError(f"cache_length must be > 0, got {cache_length}.")
  if max_length < cache_length:
    raise ValueError(f"max_length must be >= cache_length, got max_length="
                     f"{max_length}, cache_length={cache_length}.")
  if factor < 0:
    raise ValueError(f"factor must be >= 0, got {factor}.")
  y = lengths.astype(jnp.float32)
  start = float(max_length - cache_length)
  ramp = (start - y) / float(cache_length) * factor
  return jnp.where(y <= start, 0.0, jnp.where(y <= max_length, ramp, -factor))


@register("transform", "overlong_penalty",
          domains={"max_length": above(0), "cache_length": above(0),
                   "factor": at_least(0)})
@defaults_from(overlong_penalty_values)
def overlong_penalty_part(batch: Batch, *, max_length: int = 20480,
                          cache_length: int = 4096, factor) -> Batch:
  """Adds DAPO's soft overlong punishment to the rewards.

  See ``overlong_penalty_values``. ``|y|`` counts valid tokens. Defaults are the
  DAPO paper's (``L_max = 20480``, ``L_cache = 4096``); set them to the
  generation limit of your task."""
  r = scalar_rewards_of(batch, "overlong_penalty")
  pen = overlong_penalty_values(sequence_lengths(batch.response_mask),
                                max_length=max_length,
                                cache_length=cache_length, factor=factor)
  return batch.replace(rewards=r + pen.astype(r.dtype))


# --- Cosine length-scaled correctness reward --------------------------------


def cosine_length_values(correct: Array, lengths: Array, *, max_length: int,
                         min_value_correct: float = 0.5,
                         max_value_correct: float = 1.0,
                         min_value_wrong: float = -1.0,
                         max_value_wrong: float = -0.5) -> Array:
  """Cosine length-scaled reward ``[B]``.

  ``R = v_min + (v_max - v_min) (1 + cos(pi min(|y| / L, 1))) / 2``, so
  ``R = v_max`` at ``|y| = 0`` and ``R = v_min`` at ``|y| >= L``. A correct
  response uses ``(v_min, v_max) = (min_value_correct, max_value_correct) =
  (0.5, 1.0)`` (short correct answers earn more); a wrong one the swapped
  bounds ``(v_min, v_max) = (max_value_wrong, min_value_wrong) = (-0.5,
  -1.0)`` (short wrong answers are penalised more).

  Inspired by Yeo et al., "Demystifying Long Chain-of-Thought Reasoning in
  LLMs", arXiv:2502.03373 (cosine reward), and TRL/open-r1's
  ``get_cosine_scaled_reward`` (same defaults, ``L = 1000``). Our choices:
  ``|y|`` counts tokens (TRL counts characters) and the progress is clipped
  at 1 (TRL does not clip, so its reward turns back up past ``L``).
  """
  chex.assert_rank([correct, lengths], 1)
  chex.assert_equal_shape([correct, lengths])
  if max_length <= 0:
    raise ValueError(f"max_length must be > 0, got {max_length}.")
  progress = jnp.minimum(lengths.astype(jnp.float32) / float(max_length), 1.0)
  cosine = jnp.cos(jnp.pi * progress)
  v_min = jnp.where(correct, min_value_correct, max_value_wrong)
  v_max = jnp.where(correct, max_value_correct, min_value_wrong)
  return v_min + 0.5 * (v_max - v_min) * (1.0 + cosine)


@register("transform", "cosine_length_reward",
          domains={"max_length": above(0), "threshold": FINITE,
                   "min_value_correct": FINITE, "max_value_correct": FINITE,
                   "min_value_wrong": FINITE, "max_value_wrong": FINITE})
@defaults_from(cosine_length_values)
def cosine_length_reward_part(batch: Batch, *, max_length: int = 1000,
                              threshold: float = 0.5, min_value_correct,
                              max_value_correct, min_value_wrong,
                              max_value_wrong) -> Batch:
  """*Replaces* the reward by the cosine length-scaled reward.

  See ``cosine_length_values``. A response is correct iff its reward is ``>
  threshold`` (default 0.5, for 0/1 correctness rewards); the original reward
  is then discarded. Put additive shapings after this transform."""
  r = scalar_rewards_of(batch, "cosine_length_reward")
  values = cosine_length_values(r > threshold,
                                sequence_lengths(batch.response_mask),
                                max_length=max_length,
                                min_value_correct=min_value_correct,
                                max_value_correct=max_value_correct,
                                min_value_wrong=min_value_wrong,
                                max_value_wrong=max_value_wrong)
  return batch.replace(rewards=values.astype(r.dtype))


# --- n-gram repetition penalty ----------------------------------------------


def compact_valid(tokens: Array, valid: Array) -> Array:
  """Moves the valid tokens of each row to the front, keeping their order."""
  order = jnp.argsort(jnp.logical_not(valid).astype(jnp.int32), axis=1,
                      stable=True)
  return jnp.take_along_axis(tokens, order, axis=1)


def ngram_counts(tokens: Array, mask: Array, n: int = 3):
  """Distinct and total ``n``-gram counts of each row's valid tokens.

  The valid tokens (``mask > 0``) of a row, in order, form one sequence
  ``s`` of length ``k``; its ``n``-grams are ``s[j:j+n]`` for ``j < k - n +
  1``. Uniqueness is exact: the windows are sorted lexicographically per row
  with ``lax.sort`` on ``n + 1`` keys (a validity flag first, then the ``n``
  token ids), and a window counts as new when it differs from its
  predecessor. No hashing, hence no collisions; jit-able for static ``n``.

  Returns:
    ``(distinct [B], total [B])`` int32 counts; both 0 when ``k < n``.
  """
  chex.assert_rank([tokens, mask], 2)
  chex.assert_equal_shape([tokens, mask])
  if not isinstance(n, int) or n < 1:
    raise ValueError(f"n must be a positive int, got {n!r}.")
  b, t = tokens.shape
  valid = mask > 0
  k = jnp.sum(valid.astype(jnp.int32), axis=1)
  total = jnp.maximum(k - n + 1, 0)
  if t < n:
    zeros = jnp.zeros((b,), jnp.int32)
    return zeros, zeros
  s = compact_valid(tokens.astype(jnp.int32), valid)
  w = t - n + 1
  windows = [s[:, j:j + w] for j in range(n)]
  invalid = (jnp.arange(w)[None, :] >= total[:, None]).astype(jnp.int32)
  sorted_keys = jax.lax.sort((invalid, *windows), dimension=1,
                             num_keys=n + 1)
  cols = sorted_keys[1:]
  differs = jnp.zeros((b, w - 1), bool)
  for c in cols:
    differs = differs | (c[:, 1:] != c[:, :-1])
  new = jnp.concatenate([jnp.ones((b, 1), bool), differs], axis=1)
  in_range = jnp.arange(w)[None, :] < total[:, None]
  distinct = jnp.sum((new & in_range).astype(jnp.int32), axis=1)
  return distinct, total


def ngram_repetition_values(tokens: Array, mask: Array, *, n: int = 3,
                            penalty: float = -1.0) -> Array:
  """``penalty * (1 - #distinct n-grams / #n-grams)`` per row ``[B]``.

  Over each row's valid tokens (see ``ngram_counts``); 0 when the row has
  fewer than ``n`` valid tokens. ``penalty <= 0``.

  Inspired by Yeo et al., "Demystifying Long Chain-of-Thought Reasoning in
  LLMs", arXiv:2502.03373 (Appendix C.2 repetition penalty), and TRL/open-r1
  ``get_repetition_penalty_reward`` (``ngram_size=3``, ``max_penalty=-1``),
  which counts lower-cased whitespace words; we count token ids.
  """
  if penalty > 0:
    raise ValueError(f"penalty must be <= 0, got {penalty}.")
  distinct, total = ngram_counts(tokens, mask, n)
  frac = distinct.astype(jnp.float32) / jnp.maximum(total, 1).astype(
      jnp.float32)
  return jnp.where(total > 0, penalty * (1.0 - frac), 0.0)


@register("transform", "ngram_repetition_penalty", reads=("tokens",),
          domains={"n": integer(1), "penalty": at_most(0)})
@defaults_from(ngram_repetition_values)
def ngram_repetition_penalty_part(batch: Batch, *, n, penalty) -> Batch:
  """Adds the n-gram repetition penalty of ``Batch.tokens`` to the rewards;
  see ``ngram_repetition_values``."""
  r = scalar_rewards_of(batch, "ngram_repetition_penalty")
  pen = ngram_repetition_values(batch.tokens, batch.response_mask, n=n,
                                penalty=penalty)
  return batch.replace(rewards=r + pen.astype(r.dtype))


# --- General reward map -----------------------------------------------------


def reward_map(rewards: Array, key: Array | None = None, *,
               scale: float = 1.0, shift: float = 0.0, center: float = 0.0,
               pos_scale: float = 1.0, neg_scale: float = 1.0,
               false_positive_rate: float = 0.0,
               false_negative_rate: float = 0.0,
               random_rate: float | None = None, low: float = 0.0,
               high: float = 1.0) -> Array:
  """A map of sequence rewards ``[B]``, applied in this order:

  1. **Verifier noise** on outcomes ``{low, high}`` (a sample is correct when
     ``r > (low + high) / 2``): a correct reward becomes ``low`` with
     probability ``false_negative_rate``, a wrong one ``high`` with
     probability ``false_positive_rate``: the stochastic reward channel of
     Cai et al., "Reinforcement Learning with Verifiable yet Noisy Rewards
     under Imperfect Verifiers", arXiv:2510.00915 (FN rate ``rho_1``, FP
     rate ``rho_0``).
  2. **Random rewards**: with ``random_rate`` set, every reward is replaced
     by ``high`` with probability ``random_rate``, else ``low``, whatever
     the answer (the random-reward control of Shao et al., "Spurious
     Rewards: Rethinking Training Signals in RLVR", arXiv:2506.10947).
  3. **Sign split** around ``center``: ``center + pos_scale (r - center)_+
     - neg_scale (center - r)_+`` (sign-asymmetric weighting, as in
     W-REINFORCE, arXiv:2506.01347).
  4. **Affine**: ``scale r + shift``.

  With the defaults it is the identity. ``key`` is needed when a rate is
  nonzero (1 and 2 draw independent uniforms).
  """
  chex.assert_rank(rewards, 1)
  chex.assert_type(rewards, float)
  for name, rate in (("false_positive_rate", false_positive_rate),
                     ("false_negative_rate", false_negative_rate),
                     ("random_rate", 0.0 if random_rate is None
                      else random_rate)):
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f"{name} must lie in [0, 1], got {rate}.")
  noisy = false_positive_rate > 0 or false_negative_rate > 0
  if (noisy or random_rate is not None) and key is None:
    raise ValueError("reward_map needs a PRNG key when a noise or random"
                     " rate is set.")
  r = rewards
  lo = jnp.asarray(low, r.dtype)
  hi = jnp.asarray(high, r.dtype)
  if noisy:
    key, sub = jax.random.split(key)
    u = jax.random.uniform(sub, r.shape)
    correct = r > (low + high) / 2
    r = jnp.where(correct & (u < false_negative_rate), lo, r)
    r = jnp.where(~correct & (u < false_positive_rate), hi, r)
  if random_rate is not None:
    u = jax.random.uniform(key, r.shape)
    r = jnp.where(u < random_rate, hi, lo)
  d = r - center
  r = center + pos_scale * jnp.maximum(d, 0.0) + neg_scale * jnp.minimum(d,
                                                                         0.0)
  return scale * r + shift


@register("transform", "reward_map",
          domains={"scale": FINITE, "shift": FINITE, "center": FINITE,
                   "pos_scale": FINITE, "neg_scale": FINITE,
                   "false_positive_rate": between(0, 1),
                   "false_negative_rate": between(0, 1),
                   "random_rate": between(0, 1), "low": FINITE,
                   "high": FINITE})
@defaults_from(reward_map)
def reward_map_part(batch: Batch, *, key: Array, scale, shift, center,
                    pos_scale, neg_scale, false_positive_rate,
                    false_negative_rate, random_rate, low, high) -> Batch:
  """Maps the rewards: verifier noise, random rewards, sign split, affine;
  see ``reward_map``."""
  r = scalar_rewards_of(batch, "reward_map")
  return batch.replace(rewards=reward_map(
      r, key, scale=scale, shift=shift, center=center, pos_scale=pos_scale,
      neg_scale=neg_scale, false_positive_rate=false_positive_rate,
      false_negative_rate=false_negative_rate, random_rate=random_rate,
      low=low, high=high))
