"""Diversity rewards: reward transforms that favour rare correct solutions.

``unlikeliness_reward`` -- He et al. 2025, "Rewarding the Unlikely: Lifting
GRPO Beyond Distribution Sharpening" (arXiv:2506.02355). GRPO has a rank
bias: the most likely correct samples are reinforced most, so the policy
sharpens and pass@N at large N falls below the base model's. The fix
multiplies each reward by a penalty that grows with the sample's likelihood
rank inside its group:

    rank_i = #{j in group(i) : s_j < s_i}      (least likely: rank 0)
    rho_i  = rank_i / G_i                      in [0, 1)
    r'_i   = r_i * (1 - beta * rho_i)

where ``s_i`` is the mean per-token log-probability of sample ``i`` under the
behaviour policy (``old_logprobs``, else the stop-gradient current
logprobs) and ``G_i`` the size of its group. Ties are
broken by batch index, so ranks are a permutation of ``0..G_i-1``. Rows with
an empty response (all-zero mask) are excluded from the ranking (our
choice: their mean log-prob of 0 would otherwise rank them as the most
likely samples). The authors' released code ranks by the mean per-token old
log-probability and uses ``beta = 0.25`` with GRPO normalisation afterwards;
that is our default.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import above, at_least, between, defaults_from, register
from divrl.sequences import sequence_mean, valid_rows
from divrl.types import Batch
from divrl.types import behaviour_logprobs
from divrl.types import scalar_rewards_of

Array = jax.Array


def unlikeliness_values(rewards: Array, scores: Array, group_ids: Array,
                        num_groups: int, *, beta: float = 0.25,
                        valid: Array | None = None, axis_name=None) -> Array:
  """``r_i * (1 - beta * rank_i / G_i)`` (He et al. 2025); see the module.

  ``rank_i`` is the ordinal rank of ``scores`` in the group (ties broken by
  global batch index, ``groups.group_ranks``) among the ``valid`` rows, and
  ``G_i`` the number of valid rows in the group. A row that is not valid
  (an empty response) takes no part in any rank and keeps its reward.
  """
  chex.assert_rank(rewards, 1)
  rank, size = groups.group_ranks(scores, group_ids, num_groups,
                                  ties="ordinal", valid=valid,
                                  axis_name=axis_name)
  rho = rank.astype(rewards.dtype) / jnp.maximum(size, 1).astype(rewards.dtype)
  return rewards * (1.0 - beta * rho)


@register("transform", "unlikeliness_reward",
          domains={"beta": between(0, 1)})
@defaults_from(unlikeliness_values)
def unlikeliness_reward_part(batch: Batch, *, beta, axis_name=None) -> Batch:
  """Scales rewards down by likelihood rank in the group (He et al. 2025).

  Rewarding the Unlikely, arXiv:2506.02355; see the module docstring.
  ``beta`` in ``[0, 1]``; the rank uses ``behaviour_logprobs(batch)``. Rows
  whose response mask is all zero are left out of the ranking.
  """
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")
  r = scalar_rewards_of(batch, "unlikeliness_reward")
  lp = jax.lax.stop_gradient(behaviour_logprobs(batch))
  mask = batch.response_mask
  scores = sequence_mean(lp, mask)[:, 0]
  new = unlikeliness_values(r, scores, batch.group_ids, batch.groups,
                            beta=beta, valid=valid_rows(mask),
                            axis_name=axis_name)
  return batch.replace(rewards=new.astype(r.dtype))


# --- Group-pairwise diversity rewards (DARLING, DSDR, RepExp, Vendi, TTRV) ---
#
# Every function here compares the rows of one group with each other through
# a [N, N] same-group mask over the batch gathered over ``axis_name`` (N rows
# in all), and returns this device's rows.


def _gather_rows(axis_name, *xs):
  return tuple(groups.all_gather(x, axis_name) for x in xs)


def _local(x: Array, batch_size: int, axis_name) -> Array:
  return x[groups.global_index(batch_size, axis_name)]


def same_group(group_ids: Array, valid: Array) -> Array:
  """``[B,B]`` bool: rows ``i`` and ``j`` are valid and in one group."""
  return ((group_ids[:, None] == group_ids[None, :]) & valid[:, None]
          & valid[None, :])


def connected_classes(adjacency: Array) -> Array:
  """Connected components of a symmetric boolean ``[N,N]`` graph: each node's
  label is the smallest node index of its component (min-label propagation
  to a fixed point; at most ``N`` rounds)."""
  n = adjacency.shape[0]
  adj = adjacency | jnp.eye(n, dtype=bool)
  labels0 = jnp.arange(n)

  def body(state):
    labels, _ = state
    new = jnp.min(jnp.where(adj, labels[None, :], n), axis=1)
    return new, jnp.any(new != labels)

  labels, _ = jax.lax.while_loop(lambda s: s[1], body,
                                 (labels0, jnp.asarray(True)))
  return labels


def class_sizes(labels: Array, same_group: Array) -> Array:
  """``|C(i)|``: rows of ``i``'s group with ``i``'s label, ``[N]``."""
  return jnp.sum(same_group & (labels[:, None] == labels[None, :]), axis=1)


def darling_values(quality: Array, labels: Array, group_ids: Array, *,
                   valid: Array | None = None, among: Array | None = None,
                   floor: float = 0.1, shift_min: bool = False) -> Array:
  """DARLING's ``q_i * div_i`` with ``div_i = max(floor, (n - |C(i)|) / (n -
  1))``, ``[N]`` (one device: call ``darling_rewards`` for a sharded batch).

  ``n`` counts the rows of ``i``'s group in ``among`` (default: the valid
  rows) and ``|C(i)|`` the rows of its class among them; a group of one has
  ``div = 1``. Rows outside ``among`` keep ``div = 1`` (for the correct-only
  variant they are the wrong rows, whose quality is 0 anyway).
  ``shift_min`` first subtracts the group's minimum quality (the code's
  option).
  """
  n_rows = quality.shape[0]
  valid = jnp.ones((n_rows,), bool) if valid is None else valid.astype(bool)
  among = valid if among is None else among.astype(bool) & valid
  same = same_group(group_ids, among)
  n = jnp.sum(same, axis=1).astype(jnp.float32)
  size = class_sizes(labels, same).astype(jnp.float32)
  div = jnp.where(n > 1, (n - size) / jnp.maximum(n - 1.0, 1.0), 1.0)
  div = jnp.where(among, jnp.maximum(div, floor), 1.0)
  if shift_min:
    g = same_group(group_ids, valid)
    low = jnp.min(jnp.where(g, quality[None, :], jnp.inf), axis=1)
    quality = quality - jnp.where(valid, low, 0.0)
  return jnp.where(valid, quality * div, quality)


def id_labels(ids: Array, distinct_negative: bool = True) -> Array:
  """Class labels from integer ids: equal ids share a class; with
  ``distinct_negative`` every negative id (a wrong answer) is its own
  class."""
  n = ids.shape[0]
  same = ids[:, None] == ids[None, :]
  if distinct_negative:
    same = same & (ids[:, None] >= 0) | jnp.eye(n, dtype=bool)
  return jnp.argmax(same, axis=1)   # first row of the class


def cosine_similarity(embeddings: Array) -> Array:
  """``[N,N]`` cosine similarities of ``[N,D]`` embeddings (0 for a zero
  vector)."""
  e = embeddings.astype(jnp.float32)
  norm = jnp.linalg.norm(e, axis=1, keepdims=True)
  u = e / jnp.where(norm > 0, norm, 1.0)
  return u @ u.T


def _darling_part(batch, labels_fn, *, correct_only, floor, shift_min,
                  axis_name):
  r = scalar_rewards_of(batch, "darling")
  b = r.shape[0]
  valid = valid_rows(batch.response_mask)
  rg, gg, vg = _gather_rows(axis_name, r, batch.group_ids, valid)
  labels = labels_fn(gg, vg)
  among = vg & (rg > 0) if correct_only else vg
  out = darling_values(rg, labels, gg, valid=vg, among=among, floor=floor,
                       shift_min=shift_min)
  return batch.replace(rewards=_local(out, b, axis_name).astype(r.dtype))


@register("transform", "darling", reads=("solution_ids",),
          domains={"floor": between(0, 1)})
def darling_part(batch: Batch, *, correct_only: bool = False,
                 floor: float = 0.1, shift_min: bool = False,
                 axis_name=None) -> Batch:
  """DARLING: reward ``q_i * div_i`` over a partition of each group.

  The classes are the task's canonical solutions (``Batch.solution_ids``;
  every wrong answer, id -1, is a class of its own). ``div_i = max(floor,
  (n - |C(i)|)/(n - 1))`` is the share of the group's other rollouts in a
  different class (``darling_values``); with all rollouts distinct it is 1
  and the reward is the quality alone. ``correct_only`` computes the
  diversity among the correct rollouts (the code's ``partition_correct``).
  The released scripts use GRPO advantages without the std (``dr_grpo``).

  References:
    "Jointly Reinforcing Diversity and Quality in Language Model
    Generations", arXiv:2509.02534.
  """
  ids = groups.all_gather(batch.solution_ids, axis_name)
  return _darling_part(batch, lambda g, v: id_labels(ids),
                       correct_only=correct_only, floor=floor,
                       shift_min=shift_min, axis_name=axis_name)


@register("transform", "darling_embeddings", reads=("embeddings",),
          domains={"threshold": between(-1, 1), "floor": between(0, 1)})
def darling_embeddings_part(batch: Batch, *, threshold: float = 0.9,
                            correct_only: bool = False, floor: float = 0.1,
                            shift_min: bool = False, axis_name=None) -> Batch:
  """DARLING with the partition from embeddings: two rollouts of a group are
  equivalent when their cosine similarity exceeds ``threshold``, and the
  classes are the connected components (the code merges a classifier's
  equivalent pairs by union-find, the same transitive closure). See
  ``darling``; inspired by DARLING for the similarity (a threshold on
  ``Batch.embeddings`` replaces its learned classifier).

  References:
    "Jointly Reinforcing Diversity and Quality in Language Model
    Generations", arXiv:2509.02534.
  """
  emb = groups.all_gather(batch.embeddings, axis_name)

  def labels(g, v):
    adj = (cosine_similarity(emb) > threshold) & same_group(g, v)
    return connected_classes(adj)

  return _darling_part(batch, labels, correct_only=correct_only, floor=floor,
                       shift_min=shift_min, axis_name=axis_name)


def vendi_score(kernel: Array, weights: Array) -> Array:
  """``exp(-sum_k l_k log l_k)``, ``l`` the eigenvalues of ``K / n`` over the
  rows with ``weights`` 1 (``K`` a PSD similarity with unit diagonal).
  ``[N,N], [N] -> scalar``."""
  n = jnp.sum(weights)
  k = kernel * weights[:, None] * weights[None, :] / jnp.maximum(n, 1.0)
  lam = jnp.clip(jnp.linalg.eigvalsh(k), 0.0, None)
  ent = -jnp.sum(jnp.where(lam > 0, lam * jnp.log(jnp.where(lam > 0, lam,
                                                            1.0)), 0.0))
  return jnp.exp(ent)


def vendi_credit(embeddings: Array, group_ids: Array, *,
                 valid: Array | None = None) -> Array:
  """Leave-one-out Vendi credit ``VS(S) - VS(S minus i)`` of each row in its
  group ``S`` (cosine-similarity kernel), ``[N]``. Costs ``N`` eigen-
  decompositions of ``[N,N]`` (``O(N^4)``): meant for per-prompt groups."""
  n_rows = embeddings.shape[0]
  valid = jnp.ones((n_rows,), bool) if valid is None else valid.astype(bool)
  kern = cosine_similarity(embeddings)
  same = same_group(group_ids, valid).astype(jnp.float32)

  def one(i):
    member = same[i]
    without = member * (jnp.arange(n_rows) != i)
    return vendi_score(kern, member) - vendi_score(kern, without)

  return jnp.where(valid, jax.vmap(one)(jnp.arange(n_rows)), 0.0)


@register("transform", "vendi_reward", reads=("embeddings",),
          domains={"coef": at_least(0)})
def vendi_reward_part(batch: Batch, *, coef: float = 0.1,
                      axis_name=None) -> Batch:
  """``r + coef * (VS(group) - VS(group minus i))``: the Vendi score's
  leave-one-out credit (``vendi_credit``) on ``Batch.embeddings``.

  The Vendi score of ``n`` identical items is 1 and of ``n`` orthogonal
  items ``n``. DRAGON rewards a generation with this credit; here it is a
  bonus on the reward (``coef``; our choice).

  References:
    Friedman and Dieng, "The Vendi Score: A Diversity Evaluation Metric for
    Machine Learning", arXiv:2210.02410; "DRAGON: Distributional Rewards
    Optimize Diffusion Generative Models" (2025).
  """
  r = scalar_rewards_of(batch, "vendi_reward")
  valid = valid_rows(batch.response_mask)
  emb, g, v = _gather_rows(axis_name, jax.lax.stop_gradient(
      batch.embeddings), batch.group_ids, valid)
  credit = _local(vendi_credit(emb, g, valid=v), r.shape[0], axis_name)
  return batch.replace(rewards=(r + coef * credit).astype(r.dtype))


def elliptical_bonus(embeddings: Array, group_ids: Array, *,
                     ridge: float = 1.0, valid: Array | None = None) -> Array:
  """RepExp's ``phi_i^T (ridge I + sum_{j in g} phi_j phi_j^T)^-1 phi_i``
  with ``phi`` the group-centred, unit-normalised embeddings, ``[N]``."""
  n_rows, d = embeddings.shape
  valid = jnp.ones((n_rows,), bool) if valid is None else valid.astype(bool)
  same = same_group(group_ids, valid).astype(jnp.float32)
  e = embeddings.astype(jnp.float32) * valid[:, None]
  mean = same @ e / jnp.maximum(same.sum(1, keepdims=True), 1.0)
  phi = e - mean
  norm = jnp.linalg.norm(phi, axis=1, keepdims=True)
  phi = phi / jnp.where(norm > 0, norm, 1.0) * valid[:, None]

  def one(i):
    cov = ridge * jnp.eye(d) + (phi * same[i][:, None]).T @ phi
    return phi[i] @ jnp.linalg.solve(cov, phi[i])

  return jnp.where(valid, jax.vmap(one)(jnp.arange(n_rows)), 0.0)


@register("transform", "repexp_bonus", reads=("embeddings",),
          domains={"coef": at_least(0), "ridge": above(0)})
def repexp_bonus_part(batch: Batch, *, coef: float = 0.1, ridge: float = 1.0,
                      axis_name=None) -> Batch:
  """RepExp: ``r + coef * b_i`` with the elliptical bonus ``b_i`` of each
  rollout's representation against its group (``elliptical_bonus``).
  Inspired by RepExp: the group is the whole covariance (the paper's
  Sherman-Morrison scan over the rollouts in order gives later rollouts the
  earlier ones only), and the projection is the identity.

  References:
    "Representation-Based Exploration for Language Models: From Test-Time
    to Post-Training", arXiv:2510.11686.
  """
  r = scalar_rewards_of(batch, "repexp_bonus")
  valid = valid_rows(batch.response_mask)
  emb, g, v = _gather_rows(axis_name, jax.lax.stop_gradient(
      batch.embeddings), batch.group_ids, valid)
  bonus = _local(elliptical_bonus(emb, g, ridge=ridge, valid=v), r.shape[0],
                 axis_name)
  return batch.replace(rewards=(r + coef * bonus).astype(r.dtype))


def correct_dissimilarity(embeddings: Array, group_ids: Array,
                          correct: Array) -> Array:
  """DSDR's ``d_i = 1 - mean_{j != i correct} cos(e_i, e_j)`` over the
  correct rows of ``i``'s group (0 for a wrong row or a lone correct row),
  ``[N]``."""
  same = same_group(group_ids, correct) & ~jnp.eye(correct.shape[0],
                                                    dtype=bool)
  cos = cosine_similarity(embeddings)
  count = jnp.sum(same, axis=1)
  mean = jnp.sum(jnp.where(same, cos, 0.0), axis=1) / jnp.maximum(count, 1)
  return jnp.where(correct & (count > 0), 1.0 - mean, 0.0)


@register("transform", "dsdr_global", reads=("embeddings",),
          domains={"coef": at_least(0)})
def dsdr_global_part(batch: Batch, *, coef: float = 0.1,
                     axis_name=None) -> Batch:
  """DSDR's global term: ``r + coef * d_i`` on correct rollouts, ``d_i`` the
  mean cosine dissimilarity to the group's other correct rollouts
  (``correct_dissimilarity``; correct means reward > 0). Inspired by DSDR:
  the form is inferred from its abstract.

  References:
    "DSDR: Dual-Scale Diversity Regularization for Exploration in LLM
    Reasoning", https://github.com/SUSTechBruce/DSDR.
  """
  r = scalar_rewards_of(batch, "dsdr_global")
  valid = valid_rows(batch.response_mask)
  emb, g, rg, v = _gather_rows(axis_name, jax.lax.stop_gradient(
      batch.embeddings), batch.group_ids, r, valid)
  d = _local(correct_dissimilarity(emb, g, v & (rg > 0)), r.shape[0],
             axis_name)
  return batch.replace(rewards=(r + coef * d).astype(r.dtype))


def majority_frequency(answer_ids: Array, group_ids: Array, *,
                       valid: Array | None = None) -> tuple[Array, Array]:
  """Per row ``p_hat(a_i)``, the frequency of its answer in its group, and
  per row the group's answer entropy ``H(p_hat)`` (negative ids are
  unparsed answers: each its own answer)."""
  n_rows = answer_ids.shape[0]
  valid = jnp.ones((n_rows,), bool) if valid is None else valid.astype(bool)
  same = same_group(group_ids, valid)
  labels = id_labels(answer_ids)
  match = same & (labels[:, None] == labels[None, :])
  n = jnp.maximum(jnp.sum(same, axis=1), 1).astype(jnp.float32)
  freq = jnp.sum(match, axis=1) / n
  # H = -sum_answers p log p = -mean_i log p_hat(a_i) over the group.
  logf = jnp.log(jnp.where(valid, freq, 1.0))
  ent = -jnp.sum(jnp.where(same, logf[None, :], 0.0), axis=1) / n
  return jnp.where(valid, freq, 0.0), jnp.where(valid, ent, 0.0)


@register("transform", "ttrv_reward", reads=("solution_ids",))
def ttrv_reward_part(batch: Batch, *, entropy_coef: float = 0.0,
                     axis_name=None) -> Batch:
  """TTRV's label-free reward ``p_hat(a_i) - entropy_coef * H(p_hat)``:
  the frequency of the rollout's answer among its group's (answer ids from
  ``Batch.solution_ids``; unparsed answers, -1, are each their own answer)
  minus a penalty on the group's answer entropy. Replaces the verifier's
  reward. Inspired by TTRV: the frequencies are of the current policy's
  samples (the abstract speaks of the base model's), ``entropy_coef`` is
  our default.

  References:
    "TTRV: Test-Time Reinforcement Learning for Vision Language Models"
    (2025).
  """
  r = scalar_rewards_of(batch, "ttrv_reward")
  valid = valid_rows(batch.response_mask)
  ids, g, v = _gather_rows(axis_name, batch.solution_ids, batch.group_ids,
                           valid)
  freq, ent = majority_frequency(ids, g, valid=v)
  new = _local(freq - entropy_coef * ent, r.shape[0], axis_name)
  return batch.replace(rewards=new.astype(r.dtype))
