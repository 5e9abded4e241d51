"""The batch pytree that every objective reads, and its validation.

Shapes (see DESIGN.md §2): ``B`` sequences, ``T`` response tokens, ``K`` reward
components, ``D`` embedding width. Groups are given by integer ``group_ids``
with a static ``num_groups``, so groups may be ragged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


@struct.dataclass
class Batch:
  """One batch of sampled responses, as the objective layer sees it.

  Attributes:
    logprobs: ``[B,T]`` float. Log-probability of each response token under the
      policy being trained (differentiable).
    response_mask: ``[B,T]`` bool, int or float. 1 (or a non-negative weight)
      on response tokens that enter the loss, 0 on padding.
    rewards: ``[B]`` or ``[B,K]`` float. Sequence rewards, or ``K`` reward
      components per sequence.
    group_ids: ``[B]`` integer in ``[0, num_groups)``. Samples with the same id
      come from the same prompt.
    old_logprobs: optional ``[B,T]``. Log-probs of the behaviour policy that
      the trainer recomputed (``pi_old``). ``None`` means on-policy:
      ``stop_gradient(logprobs)`` is used.
    ref_logprobs: optional ``[B,T]``. Log-probs under the reference policy.
    rollout_logprobs: optional ``[B,T]``. Log-probs reported by the sampler
      (``pi_roll``), for train/inference mismatch corrections.
    entropy: optional ``[B,T]``. Per-token entropy of the policy.
    embeddings: optional ``[B,D]``. A per-sequence embedding (diversity).
    sample_source: optional ``[B]`` integer flag, e.g. 0 = on-policy sample,
      1 = replayed or off-policy sample.
    advantages: optional ``[B,T]``. Precomputed advantages. Objectives compute
      them from whole groups when absent; set them before splitting a batch
      into micro-batches (see ``Objective.with_advantages``).
    token_rewards: optional ``[B,T]``. Per-token rewards for token-level
      estimators (REINFORCE++, ReMax, GAE, OTB). When ``None`` those
      estimators place the scalar reward on the last valid token.
    values: optional ``[B,T]``. Critic values ``V(s_t)`` for GAE.
    baseline_rewards: optional ``[B]``. Reward of a baseline response, e.g.
      the greedy decode of ReMax.
    sum_pi_squared: optional ``[B,T]``. ``sum_v pi_old(v | prefix)^2`` per
      token, for the optimal token baseline (``divrl.ops`` computes it).
    truncated: optional ``[B]`` bool. True where the response hit the length
      limit without a stop token.
    tokens: optional ``[B,T]`` integer response token ids (reward shaping
      such as n-gram repetition penalties).
    num_groups: static int, an upper bound on the number of groups. ``None``
      means ``B`` (always valid for ids in ``[0, B)``).
  """

  logprobs: Array
  response_mask: Array
  rewards: Array
  group_ids: Array
  old_logprobs: Array | None = None
  ref_logprobs: Array | None = None
  rollout_logprobs: Array | None = None
  entropy: Array | None = None
  embeddings: Array | None = None
  sample_source: Array | None = None
  advantages: Array | None = None
  token_rewards: Array | None = None
  values: Array | None = None
  baseline_rewards: Array | None = None
  sum_pi_squared: Array | None = None
  truncated: Array | None = None
  tokens: Array | None = None
  num_groups: int | None = struct.field(pytree_node=False, default=None)

  @property
  def batch_size(self) -> int:
    return self.logprobs.shape[0]

  @property
  def length(self) -> int:
    return self.logprobs.shape[1]

  @property
  def groups(self) -> int:
    """The static number of groups used for segment reductions."""
    return self.num_groups if self.num_groups is not None else self.batch_size

  @property
  def mask(self) -> Array:
    """The response mask as float32 weights."""
    return self.response_mask.astype(jnp.float32)


TOKEN_FIELDS = ("old_logprobs", "ref_logprobs", "rollout_logprobs", "entropy",
                 "advantages", "token_rewards", "values", "sum_pi_squared")


def _is_concrete(x: Any) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_floating(name: str, x: Array) -> None:
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"Batch.{name} must have a floating dtype, got {x.dtype}.")


def _check_shape(name: str, x: Array, shape: tuple[int, ...]) -> None:
  if tuple(x.shape) != tuple(shape):
    raise ValueError(
        f"Batch.{name} must have shape {tuple(shape)}, got {tuple(x.shape)}.")


def _check_finite(name: str, x: Array) -> None:
  if _is_concrete(x):
    bad = ~np.isfinite(np.asarray(x, dtype=np.float64))
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(
          f"Batch.{name} has {int(bad.sum())} non-finite value(s) (NaN or inf),"
          f" first at index {first}.")


def validate(batch: Batch) -> Batch:
  """Checks ranks, shapes and dtypes of ``batch``; returns it unchanged.

  Shape and dtype checks run always (also while tracing under ``jit``). Value
  checks (non-finite rewards, group ids out of range) run when the arrays are
  concrete, i.e. outside ``jit``; call ``validate`` on the host before handing
  a batch to a compiled step.

  Raises:
    ValueError: naming the offending field.
  """
  if not isinstance(batch, Batch):
    raise ValueError(f"expected a divrl.Batch, got {type(batch).__name__}.")
  lp = batch.logprobs
  if lp.ndim != 2:
    raise ValueError(f"Batch.logprobs must have rank 2 [B,T], got shape"
                     f" {tuple(lp.shape)}.")
  _check_floating("logprobs", lp)
  b, t = lp.shape
  _check_shape("response_mask", batch.response_mask, (b, t))
  m = batch.response_mask
  if not (m.dtype == jnp.bool_ or jnp.issubdtype(m.dtype, jnp.integer)
          or jnp.issubdtype(m.dtype, jnp.floating)):
    raise ValueError(
        f"Batch.response_mask must be bool, integer or float, got {m.dtype}.")
  r = batch.rewards
  if r.ndim not in (1, 2) or r.shape[0] != b:
    raise ValueError(
        f"Batch.rewards must have shape [B] or [B,K] with B={b}, got"
        f" {tuple(r.shape)}.")
  _check_floating("rewards", r)
  _check_finite("rewards", r)
  _check_shape("group_ids", batch.group_ids, (b,))
  if not jnp.issubdtype(batch.group_ids.dtype, jnp.integer):
    raise ValueError(
        f"Batch.group_ids must be integer, got {batch.group_ids.dtype}.")
  if batch.num_groups is not None and (
      not isinstance(batch.num_groups, int) or batch.num_groups < 1):
    raise ValueError(
        f"Batch.num_groups must be a positive int, got {batch.num_groups!r}.")
  if _is_concrete(batch.group_ids) and b:
    ids = np.asarray(batch.group_ids)
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= batch.groups:
      raise ValueError(
          f"Batch.group_ids must lie in [0, num_groups={batch.groups}), got"
          f" values in [{lo}, {hi}].")
  for name in TOKEN_FIELDS:
    x = getattr(batch, name)
    if x is not None:
      _check_shape(name, x, (b, t))
      _check_floating(name, x)
  if batch.embeddings is not None:
    e = batch.embeddings
    if e.ndim != 2 or e.shape[0] != b:
      raise ValueError(f"Batch.embeddings must have shape [B,D] with B={b},"
                       f" got {tuple(e.shape)}.")
    _check_floating("embeddings", e)
  if batch.baseline_rewards is not None:
    _check_shape("baseline_rewards", batch.baseline_rewards, (b,))
    _check_floating("baseline_rewards", batch.baseline_rewards)
    _check_finite("baseline_rewards", batch.baseline_rewards)
  if batch.token_rewards is not None:
    _check_finite("token_rewards", jnp.where(batch.response_mask > 0,
                                             batch.token_rewards, 0.0)
                  if _is_concrete(batch.token_rewards) else
                  batch.token_rewards)
  if batch.truncated is not None:
    _check_shape("truncated", batch.truncated, (b,))
    if batch.truncated.dtype != jnp.bool_:
      raise ValueError(f"Batch.truncated must be bool, got"
                       f" {batch.truncated.dtype}.")
  if batch.tokens is not None:
    _check_shape("tokens", batch.tokens, (b, t))
    if not jnp.issubdtype(batch.tokens.dtype, jnp.integer):
      raise ValueError(f"Batch.tokens must be integer, got {batch.tokens.dtype}.")
  if batch.sample_source is not None:
    _check_shape("sample_source", batch.sample_source, (b,))
    if not jnp.issubdtype(batch.sample_source.dtype, jnp.integer):
      raise ValueError("Batch.sample_source must be integer, got"
                       f" {batch.sample_source.dtype}.")
  return batch


def scalar_rewards_of(batch: Batch, part: str) -> Array:
  """``Batch.rewards`` if it is ``[B]``; else a ValueError naming ``part``."""
  if batch.rewards.ndim != 1:
    raise ValueError(f"the {part!r} transform needs scalar Batch.rewards of"
                     f" shape [B], got {tuple(batch.rewards.shape)}; reduce"
                     " reward components first.")
  return batch.rewards


def behaviour_logprobs(batch: Batch) -> Array:
  """``batch.old_logprobs``, or ``stop_gradient(logprobs)`` when on-policy."""
  if batch.old_logprobs is None:
    return jax.lax.stop_gradient(batch.logprobs)
  return batch.old_logprobs


def split(batch: Batch, num_micro_batches: int) -> Batch:
  """Stacks ``batch`` into ``num_micro_batches`` equal slices along ``B``.

  Every array leaf gets a new leading axis of size ``num_micro_batches``; the
  result is meant for ``lax.scan`` or a Python loop over micro-batches.
  Advantages should be computed on the whole batch first.
  """
  b = batch.batch_size
  if num_micro_batches < 1 or b % num_micro_batches:
    raise ValueError(
        f"num_micro_batches={num_micro_batches} must divide the batch size"
        f" B={b}.")
  return jax.tree.map(
      lambda x: x.reshape((num_micro_batches, b // num_micro_batches)
                          + x.shape[1:]), batch)
