"""The batch pytree that every objective reads, and its validation.

Shapes (docs/design.md section 2): ``B`` sequences, ``T`` response tokens, ``K`` reward
components, ``D`` embedding width. Groups are given by integer ``group_ids``
with a static ``num_groups``, so groups may be ragged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

Array = jax.Array


@struct.dataclass
class Batch:
  """One batch of sampled responses, as the objective layer sees it.

  Core fields (always set):

  Attributes:
    logprobs: ``[B,T]`` float. Log-probability of each response token under the
      policy (differentiable in the update). In the prepare stage (transforms,
      advantages) this is the behaviour policy; in the update stage (token
      weights, surrogate, regularizers) the parameters being trained.
    response_mask: ``[B,T]`` bool, int or float. 1 (or a non-negative weight)
      on response tokens that enter the loss, 0 on padding.
    rewards: ``[B]`` or ``[B,K]`` float. Sequence rewards, or ``K`` reward
      components per sequence (declared input ``"reward_components"``).
    group_ids: ``[B]`` integer in ``[0, num_groups)``. Samples with the same id
      come from the same prompt.

  Optional fields (``None`` unless a part declares it reads them; see
  ``INPUTS``). Per-token statistics of the policy (``entropy`` to
  ``vocab_mean_logprob`` and the exact divergences) belong to the same policy
  as ``logprobs``: the trainer computes them in the scoring forward for the
  prepare stage and again, from the current parameters, for the update.

  Attributes:
    old_logprobs: ``[B,T]``. Log-probs of the behaviour policy that the trainer
      recomputed (``pi_old``). ``None`` means on-policy: ``stop_gradient
      (logprobs)`` is used.
    ref_logprobs: ``[B,T]``. Log-probs under the reference policy.
    rollout_logprobs: ``[B,T]``. Log-probs reported by the sampler
      (``pi_roll``), for train/inference mismatch corrections.
    entropy: ``[B,T]``. Entropy ``H_t = -sum_v pi(v) log pi(v)`` of the
      policy's next-token distribution at each response position.
    top_p_entropy: ``[B,T]``. Entropy of the policy's next-token distribution
      restricted to its top-``p`` nucleus and renormalised (``p`` is the
      trainer's ``statistics.top_p``; see ``divrl.ops.token_statistics``).
    sum_pi_squared: ``[B,T]``. ``sum_v pi(v | prefix)^2`` per token (the
      optimal token baseline reads it in the prepare stage, i.e. of
      ``pi_old``).
    vocab_mean_logprob: ``[B,T]``. ``(1/V) sum_v log pi(v | prefix)``, the
      log-prob averaged over the vocabulary (uniform-policy values).
    old_vocab_mean_logprob: ``[B,T]``. ``vocab_mean_logprob`` of the
      behaviour policy (``pi_old``), from the scoring forward.
    min_p_logprob: ``[B,T]``. ``log q(y_t)``, ``q`` the policy's next-token
      distribution min-p filtered (tokens with ``pi_v >= min_p max pi``;
      ``min_p`` is the trainer's ``statistics.min_p``) and renormalised;
      ``-inf`` where the filter drops the sampled token (Lp-Reg's proxy; see
      ``divrl.ops.token_statistics``).
    old_min_p_logprob: ``[B,T]``. ``min_p_logprob`` of the behaviour policy
      (``pi_old``), from the scoring forward.
    reverse_kl: ``[B,T]``. Exact ``KL(pi || ref)`` of the next-token
      distributions at each position, summed over the whole vocabulary.
    forward_kl: ``[B,T]``. Exact ``KL(ref || pi)`` per position.
    js: ``[B,T]``. Exact Jensen-Shannon divergence between ``pi`` and ``ref``
      per position (natural log, at most ``log 2``).
    alpha_divergence: ``[B,T]``. Exact alpha-divergence ``sum_v ref_v
      f_a(pi_v / ref_v)``, ``f_a(u) = (u^(1-a) - (1-a) u - a) / (a (a-1))``
      (DPH-RL's family; ``a`` is the trainer's ``statistics.alpha``; ``a ->
      0`` is ``reverse_kl``, ``a -> 1`` is ``forward_kl``).
    chi_square: ``[B,T]``. Exact Pearson ``chi^2(pi || ref) = sum_v (pi_v -
      ref_v)^2 / ref_v`` per position (unbounded).
    total_variation: ``[B,T]``. Exact ``0.5 sum_v |pi_v - ref_v|`` per
      position (in ``[0, 1]``).
    hellinger: ``[B,T]``. Exact squared Hellinger distance ``1 - sum_v
      sqrt(pi_v ref_v)`` per position (in ``[0, 1]``).
    embeddings: ``[B,D]``. A per-sequence embedding (diversity); the trainer
      gives the policy's final hidden state averaged over the response tokens.
    sample_source: ``[B]`` integer: 0 for a sample of the policy, 1 for a
      sample of the reference policy (rehearsal, see ``"reference_samples"``).
    solution_ids: ``[B]`` integer. The task's canonical solution class of
      each sample, from the verifier's canonical form: equal ids within a
      batch mean the same solution; -1 marks a wrong answer.
    task_ids: ``[B]`` integer. The task of each sample's prompt, in ``[0,
      num_tasks)``, for per-task statistics; a divrl run trains on one task,
      so the data path serves 0 everywhere.
    advantages: ``[B,T]``. Precomputed advantages. Objectives compute them
      from whole groups when absent; set them before splitting a batch into
      micro-batches (see ``Objective.with_advantages``).
    token_rewards: ``[B,T]``. Per-token rewards for token-level estimators
      (REINFORCE++, ReMax, GAE, OTB). When ``None`` those estimators place the
      scalar reward on the last valid token.
    values: ``[B,T]``. Critic values ``V(s_t)`` of the same parameters as
      ``logprobs`` (the value head).
    old_values: ``[B,T]``. Critic values at rollout time (the clipped value
      loss is relative to them).
    baseline_rewards: ``[B]``. Reward of a baseline response for the same
      prompt, e.g. the greedy decode of ReMax.
    truncated: ``[B]`` bool. True where the response hit the length limit
      without a stop token.
    tokens: ``[B,T]`` integer response token ids (reward shaping such as
      n-gram repetition penalties).
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
  top_p_entropy: Array | None = None
  sum_pi_squared: Array | None = None
  vocab_mean_logprob: Array | None = None
  old_vocab_mean_logprob: Array | None = None
  min_p_logprob: Array | None = None
  old_min_p_logprob: Array | None = None
  reverse_kl: Array | None = None
  forward_kl: Array | None = None
  js: Array | None = None
  alpha_divergence: Array | None = None
  chi_square: Array | None = None
  total_variation: Array | None = None
  hellinger: Array | None = None
  embeddings: Array | None = None
  sample_source: Array | None = None
  solution_ids: Array | None = None
  task_ids: Array | None = None
  advantages: Array | None = None
  token_rewards: Array | None = None
  values: Array | None = None
  old_values: Array | None = None
  baseline_rewards: Array | None = None
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


# Per-token statistics of the policy that ``divrl.ops`` computes from hidden
# states (same policy as ``Batch.logprobs``).
POLICY_STATISTICS = ("entropy", "top_p_entropy", "sum_pi_squared",
                     "vocab_mean_logprob", "min_p_logprob")
# Exact per-token divergences between the policy and the reference.
REFERENCE_DIVERGENCES = ("reverse_kl", "forward_kl", "js", "alpha_divergence",
                         "chi_square", "total_variation", "hellinger")

TOKEN_FIELDS = (("old_logprobs", "ref_logprobs", "rollout_logprobs")
                + POLICY_STATISTICS + REFERENCE_DIVERGENCES
                + ("old_vocab_mean_logprob", "old_min_p_logprob",
                   "advantages", "token_rewards",
                   "values", "old_values"))
SEQUENCE_INT_FIELDS = ("sample_source", "solution_ids", "task_ids")
CORE_FIELDS = ("logprobs", "response_mask", "rewards", "group_ids")
OPTIONAL_FIELDS = tuple(f.name for f in dataclasses.fields(Batch)
                        if f.name not in CORE_FIELDS + ("num_groups",))

# Inputs a part may declare that are not a single optional field.
DERIVED_INPUTS = {
    "reward_components": "Batch.rewards holds K reward components, [B,K]"
                         " (a [B] batch is the K = 1 case)",
    "reference_samples": "rows sampled from the reference policy, marked by"
                         " Batch.sample_source == 1",
}
# Everything a part may declare it reads (``divrl.registry.declare``).
INPUTS = tuple(f for f in OPTIONAL_FIELDS if f != "advantages") + tuple(
    DERIVED_INPUTS)


def _is_concrete(x: Any) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_floating(name: str, x: Array) -> None:
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"Batch.{name} must have a floating dtype, got {x.dtype}.")


def _check_shape(name: str, x: Array, shape: tuple[int, ...]) -> None:
  if tuple(x.shape) != tuple(shape):
    raise ValueError(
        f"Batch.{name} must have shape {tuple(shape)}, got {tuple(x.shape)}.")


def _raise_if_any(name: str, bad: np.ndarray, what: str,
                  values: np.ndarray | None = None) -> None:
  """A ``ValueError`` naming ``Batch.<name>``, how many entries are ``bad``,
  the first one's index and (given ``values``) its value; nothing if none."""
  if bad.any():
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    shown = "" if values is None else f": {float(values[first])!r}"
    raise ValueError(f"Batch.{name} has {int(bad.sum())} {what}, first at"
                     f" index {first}{shown}.")


def _check_finite(name: str, x: Array) -> None:
  if _is_concrete(x):
    _raise_if_any(name, ~np.isfinite(np.asarray(x, dtype=np.float64)),
                  "non-finite value(s) (NaN or inf)")


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
  for name in SEQUENCE_INT_FIELDS:
    x = getattr(batch, name)
    if x is not None:
      _check_shape(name, x, (b,))
      if not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(f"Batch.{name} must be integer, got {x.dtype}.")
  return batch


# Log-probability fields: each is log p of a token, so at most 0 (p <= 1).
LOGPROB_FIELDS = ("logprobs", "old_logprobs", "ref_logprobs",
                  "rollout_logprobs")
_LOGPROB_SLACK = 1e-4   # float32 log-softmax may round a p = 1 to +1e-7


def check_values(batch: Batch, *, min_group_size: int = 1,
                 needed_by: str = "") -> Batch:
  """The value checks of the checked mode; returns ``batch`` unchanged.

  ``validate`` checks shapes and dtypes always and, on concrete arrays, that
  rewards are finite and group ids in range. This adds what a model or a
  task may get wrong at run time, on the host before a compiled step (the
  trainer runs it on every rollout while ``train.check_inputs`` is on):

  * ``validate``'s checks;
  * every log-probability field finite and at most 0 on response tokens (a
    log-probability above 0 is a probability above 1);
  * ``sum_pi_squared`` (the sum of squared token probabilities) in [0, 1];
  * at least one response token in the batch;
  * every non-empty group at least ``min_group_size`` samples (pass@k's
    ``k``: a smaller group gets no signal; ``Objective.check_values`` passes
    its parts' need, named by ``needed_by``).

  Raises:
    ValueError: naming the field, the count and the first offending index
      and value.
    TypeError: for traced arrays (call it outside ``jit``).
  """
  validate(batch)
  if not _is_concrete(batch.logprobs):
    raise TypeError("check_values needs concrete arrays; call it outside"
                    " jax.jit, before the compiled step.")
  mask = np.asarray(batch.response_mask) > 0
  if mask.size and not mask.any():
    raise ValueError("Batch.response_mask is empty: no response token in"
                     f" the whole batch of shape {mask.shape}.")

  def report(name, bad, x, what):
    _raise_if_any(name, bad, f"value(s) {what} on response tokens", x)

  for name in LOGPROB_FIELDS:
    x = getattr(batch, name)
    if x is None:
      continue
    x = np.asarray(x, np.float64)
    report(name, mask & ~np.isfinite(x), x, "that are NaN or inf")
    report(name, mask & (x > _LOGPROB_SLACK), x,
           "above 0 (a probability above 1)")
  if batch.sum_pi_squared is not None:
    x = np.asarray(batch.sum_pi_squared, np.float64)
    report("sum_pi_squared", mask & ~((x >= 0) & (x <= 1 + _LOGPROB_SLACK)),
           x, "outside [0, 1]")
  if min_group_size > 1:
    sizes = np.bincount(np.asarray(batch.group_ids), minlength=batch.groups)
    small = np.flatnonzero((sizes > 0) & (sizes < min_group_size))
    if small.size:
      g = int(small[0])
      raise ValueError(
          f"Batch.group_ids: {small.size} group(s) have fewer than"
          f" {min_group_size} samples, first group {g} with {int(sizes[g])}"
          + (f"; {needed_by} needs at least {min_group_size}" if needed_by
             else "") + ".")
  return batch


def check_inputs(batch: Batch, inputs, part: str) -> None:
  """Raises a ValueError naming ``part`` if ``batch`` lacks a declared input.

  Args:
    batch: the batch a part is about to read.
    inputs: names from ``INPUTS``.
    part: how to name the part in the message, e.g. ``"advantage 'otb'"``.
  """
  for name in inputs:
    if name == "reward_components":
      continue  # [B,K], or [B] for one component (validate checks shapes)
    if name == "reference_samples":
      if batch.sample_source is None:
        raise ValueError(f"the {part} reads reference samples, marked by"
                         " Batch.sample_source, which is None.")
    elif getattr(batch, name) is None:
      raise ValueError(f"the {part} reads Batch.{name}, which is None.")


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
