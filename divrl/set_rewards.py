"""Set-level diversity signals: what a rollout adds to its group.

Every part here scores a rollout against the other rollouts of its group
(the samples of one prompt, ``Batch.group_ids``):

* ``distinct_n_reward`` (transform, ``Batch.tokens``): the rollout's share of
  its group's distinct n-grams, counted exactly (inspired by MultiRole-R1's
  lexical diversity reward);
* ``submodular_credit`` (transform, ``Batch.embeddings``): SubPO's greedy
  marginal gain of a facility-location coverage function over the group, in
  batch order (inspired by Submodular RL);
* ``knn_novelty`` (transform, ``Batch.embeddings``): novelty search's mean
  distance to the k nearest other rollouts (inspired by the QD thesis);
* ``gardo_advantage`` (advantage, ``Batch.embeddings``): GARDO's
  diversity-aware advantage shaping, as in the authors' released code;
* ``dsdr_local`` (regularizer, ``Batch.embeddings`` and ``Batch.entropy``):
  DSDR's local entropy term on correct rollouts, allocated by a softmax of
  their distinctiveness.

Shared conventions. A row whose response mask is all zero is not a rollout
of its group: it takes no part in any other row's value and gets no credit.
Inside ``shard_map`` pass ``axis_name``: the rows are all-gathered over it,
each part computes on the global batch (group ids must be global) and
returns this device's rows, so the values do not depend on the sharding.
Embeddings are read under ``stop_gradient``. Cosine similarities come from
``divrl.diversity.cosine_similarity`` (0 for a zero vector).

References:
  "Diversity-Enhanced Reasoning for Subjective Questions" (MultiRole-R1),
  arXiv:2507.20187.
  Prajapat et al., "Submodular Reinforcement Learning", arXiv:2307.13372.
  Paolo, "Learning in Sparse Rewards settings through Quality-Diversity
  algorithms", arXiv:2203.01027.
  He et al., "GARDO: Reinforcing Diffusion Models without Reward Hacking",
  arXiv:2512.24138, https://github.com/tinnerhrhe/GARDO.
  Wan et al., "DSDR: Dual-Scale Diversity Regularization for Exploration in
  LLM Reasoning", arXiv:2602.19895.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import advantages
from divrl import diversity
from divrl import groups
from divrl import shaping
from divrl.registry import above, at_least, defaults_from, integer, register
from divrl.sequences import per_token, valid_rows
from divrl.types import Batch, scalar_rewards_of

Array = jax.Array

CREDITS = ("unique_share", "leave_one_out")
METRICS = ("cosine", "euclidean")

# Helpers of sibling modules.
same_group = diversity.same_group
compact_valid = shaping.compact_valid


# --- Shared helpers ----------------------------------------------------------


def _peers(group_ids: Array, valid: Array) -> Array:
  """``[N,N]``: both rows valid and in the same group (diagonal included)."""
  return same_group(group_ids, valid)


def _others(group_ids: Array, valid: Array) -> Array:
  """``_peers`` without the diagonal."""
  return _peers(group_ids, valid) & ~jnp.eye(group_ids.shape[0], dtype=bool)


def _valid_or_all(valid: Array | None, n_rows: int) -> Array:
  return jnp.ones((n_rows,), bool) if valid is None else valid.astype(bool)


def _gather(axis_name, *xs):
  return tuple(groups.all_gather(x, axis_name) for x in xs)


def _local(x: Array, batch_size: int, axis_name) -> Array:
  return x[groups.global_index(batch_size, axis_name)]


def _check_coef(coef) -> None:
  if not coef >= 0:
    raise ValueError(f"coef must be >= 0, got {coef!r}.")


def _check_int(name: str, value, low: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")


def _ratio(num: Array, den: Array) -> Array:
  """``num / den`` for a count ``den``: 0 where ``den`` is 0 (float32)."""
  num, den = num.astype(jnp.float32), den.astype(jnp.float32)
  return jnp.where(den > 0, num / jnp.maximum(den, 1.0), 0.0)


def _bonus_part(batch: Batch, name: str, credit_fn, coef: float,
                axis_name) -> Batch:
  """``r + coef * credit`` with ``credit_fn(embeddings, group_ids, valid)``
  evaluated on the gathered batch."""
  _check_coef(coef)
  r = scalar_rewards_of(batch, name)
  emb, g, v = _gather(axis_name, jax.lax.stop_gradient(batch.embeddings),
                      batch.group_ids, valid_rows(batch.response_mask))
  credit = _local(credit_fn(emb, g, v), r.shape[0], axis_name)
  return batch.replace(rewards=(r + coef * credit).astype(r.dtype))


# --- Group distinct-n --------------------------------------------------------


def _window_keys(tokens: Array, valid: Array, n: int):
  """The ``n`` token columns of every window ``[B * W]`` over each row's
  valid tokens (compacted, in order), with row ids and in-range flags."""
  b, t = tokens.shape
  w = t - n + 1
  total = jnp.maximum(jnp.sum(valid, axis=1, dtype=jnp.int32) - n + 1, 0)
  s = compact_valid(tokens.astype(jnp.int32), valid)
  cols = [s[:, j:j + w].reshape(-1) for j in range(n)]
  row = jnp.repeat(jnp.arange(b, dtype=jnp.int32), w)
  ok = (jnp.arange(w)[None, :] < total[:, None]).reshape(-1)
  return cols, row, ok


def _sorted_runs(cols, row, ok, gid):
  """Sorts the windows by (in range, group, n-gram, row) and marks, in
  sorted order, the first window of each (group, n-gram) type (``start``)
  and the windows whose type another row of the group also has
  (``shared``)."""
  bad = (~ok).astype(jnp.int32)
  order = jnp.lexsort((row, *reversed(cols), gid, bad))
  ok, gid, row = ok[order], gid[order], row[order]
  same = ok[1:] & ok[:-1] & (gid[1:] == gid[:-1])
  for col in cols:
    col = col[order]
    same = same & (col[1:] == col[:-1])
  same = jnp.concatenate([jnp.zeros((1,), bool), same])
  start = ok & ~same
  n_win = ok.shape[0]
  run = jnp.where(ok, jnp.cumsum(start) - 1, n_win)
  switch = same & (row != jnp.concatenate([row[:1], row[:-1]]))
  shared = jax.ops.segment_max(switch.astype(jnp.int32), run,
                               num_segments=n_win + 1)[run] > 0
  return start, shared, row, gid


def group_ngram_counts(tokens: Array, mask: Array, group_ids: Array,
                       num_groups: int, n: int = 2):
  """Exact n-gram counts of each row within its group.

  The valid tokens (``mask > 0``) of a row, in order, form its sequence; its
  n-grams are the windows of ``n`` consecutive valid tokens (a row with
  fewer than ``n`` valid tokens has none). Each window is encoded as the
  tuple of its token ids; the windows of the whole batch are sorted with
  ``jnp.lexsort`` on (group, token ids, row) and equal neighbours are
  compared, so counting is exact (no hashing).

  Returns:
    ``(total [B], own [B], distinct [num_groups], count [num_groups])``
    int32: ``total_i`` the n-grams of row ``i``; ``own_i`` the n-gram
    *types* of row ``i`` that no other row of its group contains;
    ``distinct_g`` the n-gram types over the rows of group ``g``; ``count_g
    = sum_{i in g} total_i``.
  """
  chex.assert_rank([tokens, mask, group_ids], [2, 2, 1])
  chex.assert_equal_shape([tokens, mask])
  _check_int("n", n)
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be integer token ids, got {tokens.dtype}.")
  b, t = tokens.shape
  valid = mask > 0
  total = jnp.maximum(jnp.sum(valid, axis=1, dtype=jnp.int32) - n + 1, 0)
  count = jax.ops.segment_sum(total, group_ids, num_segments=num_groups)
  if t < n:
    return (total, jnp.zeros((b,), jnp.int32),
            jnp.zeros((num_groups,), jnp.int32), count)
  cols, row, ok = _window_keys(tokens, valid, n)
  gid = jnp.repeat(group_ids.astype(jnp.int32), t - n + 1)
  start, shared, row_s, gid_s = _sorted_runs(cols, row, ok, gid)
  own = jax.ops.segment_sum((start & ~shared).astype(jnp.int32), row_s,
                            num_segments=b)
  distinct = jax.ops.segment_sum(start.astype(jnp.int32), gid_s,
                                 num_segments=num_groups)
  return total, own, distinct, count


def distinct_n_credit(tokens: Array, mask: Array, group_ids: Array,
                      num_groups: int, *, n: int = 2,
                      credit: str = "unique_share") -> Array:
  """Each row's lexical contribution to its group's distinct-n, ``[B]``.

  With the counts of ``group_ngram_counts`` and ``D(S) = #distinct n-grams
  / #n-grams`` of a set of rows (0 without n-grams, as
  ``divrl.metrics.distinct_n``):

  * ``credit="unique_share"``: ``own_i / total_i``, the share of row ``i``'s
    n-grams (per n-gram of the row) whose type no other row of the group
    contains, i.e. the leave-one-out drop of the group's *distinct count*
    per n-gram of the row. In ``[0, 1]``: 0 for a row every n-gram of which
    another row has (a copy), 1 for a row of all-new, non-repeating n-grams.
  * ``credit="leave_one_out"``: ``D(group) - D(group minus i)``, the
    leave-one-out change of the group's distinct-n ratio (``distinct - own_i``
    types over ``count - total_i`` n-grams without row ``i``). It is 0 when
    all rows are disjoint and free of repeats, and negative for duplicates.

  Rows without n-grams (fewer than ``n`` valid tokens, or empty) get 0.
  """
  if credit not in CREDITS:
    raise ValueError(f"credit must be one of {CREDITS}, got {credit!r}.")
  total, own, distinct, count = group_ngram_counts(tokens, mask, group_ids,
                                                   num_groups, n)
  if credit == "unique_share":
    return _ratio(own, total)
  u, m = distinct[group_ids], count[group_ids]
  return _ratio(u, m) - _ratio(u - own, m - total)


@register("transform", "distinct_n_reward", reads=("tokens",),
          domains={"n": integer(1), "coef": at_least(0)})
@defaults_from(distinct_n_credit)
def distinct_n_reward_part(batch: Batch, *, n, credit, coef: float = 0.1,
                           axis_name=None) -> Batch:
  """``r + coef * credit_i``: each rollout's exact share of its group's
  distinct n-grams (``distinct_n_credit`` on ``Batch.tokens``; default the
  share of its n-grams whose type no other rollout of the group has).
  Inspired by MultiRole-R1 (our choices below).

  Inspired by MultiRole-R1: its GRPO reward adds a lexical diversity term
  ``(1 - delta) R_div``, ``R_div`` an equal-weight mean of eight per-response
  text diversity scores, one of them distinct bigrams ``U_n / M_n`` of the
  response alone; the shaping weight that worked best was 0.1. Our choices:
  the score is group-relative (an n-gram counts as new only if no other
  rollout of the prompt has it) instead of within the response (that is
  ``ngram_repetition_penalty``), on token ids instead of words, and added
  to the reward with ``coef = 0.1``; ``n = 2`` (their bigram score).

  References:
    "Diversity-Enhanced Reasoning for Subjective Questions",
    arXiv:2507.20187; Li et al., "A Diversity-Promoting Objective Function
    for Neural Conversation Models", arXiv:1510.03055 (distinct-n).
  """
  _check_coef(coef)
  r = scalar_rewards_of(batch, "distinct_n_reward")
  tok, m, g = _gather(axis_name, batch.tokens, batch.response_mask,
                      batch.group_ids)
  c = distinct_n_credit(tok, m, g, batch.groups, n=n, credit=credit)
  c = _local(c, r.shape[0], axis_name)
  return batch.replace(rewards=(r + coef * c).astype(r.dtype))


# --- Submodular marginal gains -----------------------------------------------


def facility_location_gains(embeddings: Array, group_ids: Array, *,
                            valid: Array | None = None) -> Array:
  """Greedy marginal gains ``F(S_<i + {i}) - F(S_<i)``, ``[N]``.

  ``F(S) = (1/n_g) sum_{j in g} max_{s in S} sim(j, s)`` (``F(empty) =
  0``) is the facility-location coverage of group ``g`` by the set ``S``,
  with ``sim = max(cos, 0)`` and ``n_g`` the group's valid rows; ``S_<i``
  are the valid rows of ``i``'s group before ``i`` in batch order. The gains
  of a group telescope to ``F(group)``, the share of its rows with a
  non-zero embedding (1 usually). A row identical to an earlier one gains
  0; mutually orthogonal rows gain ``1/n_g`` each. Rows that are not valid
  gain 0 and cover nothing. One scan over the rows, ``O(N^2)``.
  """
  chex.assert_rank([embeddings, group_ids], [2, 1])
  n_rows = embeddings.shape[0]
  valid = _valid_or_all(valid, n_rows)
  peers = _peers(group_ids, valid)
  cos = diversity.cosine_similarity(embeddings)
  sim = jnp.where(peers, jnp.maximum(cos, 0.0), 0.0)
  size = jnp.sum(peers, axis=1).astype(jnp.float32)

  def step(cover, col):
    gain = jnp.sum(jnp.maximum(col - cover, 0.0))
    return jnp.maximum(cover, col), gain

  # zeros_like keeps sim's sharding type (varying inside shard_map).
  _, gains = jax.lax.scan(step, jnp.zeros_like(sim[0]), sim.T)
  return jnp.where(valid, gains / jnp.maximum(size, 1.0), 0.0)


@register("transform", "submodular_credit", reads=("embeddings",),
          domains={"coef": at_least(0)})
def submodular_credit_part(batch: Batch, *, coef: float = 0.1,
                           axis_name=None) -> Batch:
  """``r + coef * (F(S_<i + {y_i}) - F(S_<i))``: the greedy marginal gain
  of each rollout to a facility-location coverage of its group
  (``facility_location_gains`` on ``Batch.embeddings``, rollouts taken in
  batch order). Inspired by SubPO (our choices below).

  Inspired by Submodular RL: SubPO optimises a submodular set reward by
  crediting each step with its marginal gain over the states visited
  before. Our choices: the "trajectory" is the group's rollouts in batch
  order (so earlier rollouts get larger credits for the same content), the
  set function is a facility location ``F`` on cosine similarities clipped
  at 0 and normalised by the group size (the paper's ``F`` is any
  submodular function), and the credit is a reward bonus with ``coef =
  0.1``.

  References:
    Prajapat et al., "Submodular Reinforcement Learning",
    arXiv:2307.13372.
  """
  return _bonus_part(
      batch, "submodular_credit",
      lambda e, g, v: facility_location_gains(e, g, valid=v), coef,
      axis_name)


# --- k-NN novelty ------------------------------------------------------------


def _euclidean(embeddings: Array) -> Array:
  """``[N,N]`` Euclidean distances, row by row (exact, finite gradient)."""
  e = embeddings.astype(jnp.float32)

  def row(x):
    sq = jnp.sum((e - x) ** 2, axis=1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)

  return jax.lax.map(row, e)


def _check_metric(metric: str) -> None:
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")


def pairwise_distances(embeddings: Array, metric: str = "cosine") -> Array:
  """``[N,N]`` distances: ``1 - cos`` (``"cosine"``, in ``[0, 2]``; a zero
  vector is at distance 1 from everything) or ``"euclidean"``."""
  _check_metric(metric)
  if metric == "cosine":
    return 1.0 - diversity.cosine_similarity(embeddings)
  return _euclidean(embeddings)


def knn_novelty(embeddings: Array, group_ids: Array, *, k: int = 3,
                metric: str = "cosine",
                valid: Array | None = None) -> Array:
  """Novelty search's ``rho_i = (1/m_i) sum_{j in kNN(i)} dist(i, j)``, the
  mean distance to the ``m_i = min(k, n_i - 1)`` nearest other valid rows
  of ``i``'s group (``pairwise_distances``), ``[N]``; 0 for a row without
  another valid row in its group, and for rows that are not valid."""
  _check_int("k", k)
  chex.assert_rank([embeddings, group_ids], [2, 1])
  n_rows = embeddings.shape[0]
  others = _others(group_ids, _valid_or_all(valid, n_rows))
  dist = pairwise_distances(embeddings, metric)
  nearest = jnp.sort(jnp.where(others, dist, jnp.inf), axis=1)
  m = jnp.minimum(jnp.sum(others, axis=1), k)
  take = jnp.arange(n_rows)[None, :] < m[:, None]
  return _ratio(jnp.sum(jnp.where(take, nearest, 0.0), axis=1), m)


@register("transform", "knn_novelty", reads=("embeddings",),
          domains={"k": integer(1), "coef": at_least(0)})
@defaults_from(knn_novelty)
def knn_novelty_part(batch: Batch, *, k, metric, coef: float = 0.1,
                     axis_name=None) -> Batch:
  """``r + coef * rho_i``: the mean distance of each rollout's embedding to
  its ``k`` nearest other rollouts of the group (``knn_novelty`` on
  ``Batch.embeddings``; fewer neighbours in a smaller group, 0 alone).
  Inspired by novelty search (our choices below).

  Inspired by "Learning in Sparse Rewards settings through Quality-Diversity
  algorithms": its novelty search (TAXONS, SERENE, STAX) scores a policy
  by the mean distance of its behaviour descriptor to the k nearest ones
  among the population and an archive. Our choices: the
  behaviour space is the response embedding, the neighbours are the other
  rollouts of the prompt (no archive), the distance is ``1 - cos`` by
  default, ``k = 3`` and the novelty is a reward bonus with ``coef = 0.1``.

  References:
    Paolo, "Learning in Sparse Rewards settings through Quality-Diversity
    algorithms", arXiv:2203.01027; Lehman and Stanley, "Abandoning
    Objectives: Evolution Through the Search for Novelty Alone" (2011).
  """
  _check_int("k", k)
  _check_metric(metric)
  return _bonus_part(
      batch, "knn_novelty",
      lambda e, g, v: knn_novelty(e, g, k=k, metric=metric, valid=v), coef,
      axis_name)


# --- GARDO diversity-aware advantage -----------------------------------------


def nearest_neighbour_distance(embeddings: Array, group_ids: Array, *,
                               valid: Array | None = None) -> Array:
  """GARDO's ``d_i = min_{j != i} (1 - cos(e_i, e_j))`` over the other valid
  rows of ``i``'s group (cosine clipped to ``[-1, 1]``), ``[N]``; 0 for a
  row without another valid row."""
  chex.assert_rank([embeddings, group_ids], [2, 1])
  others = _others(group_ids, _valid_or_all(valid, embeddings.shape[0]))
  dist = 1.0 - jnp.clip(diversity.cosine_similarity(embeddings), -1.0, 1.0)
  d = jnp.min(jnp.where(others, dist, jnp.inf), axis=1)
  return jnp.where(jnp.any(others, axis=1), d, 0.0)


def gardo_values(rewards: Array, embeddings: Array, group_ids: Array,
                 num_groups: int, *, scale_by_std: bool = False,
                 normalize: bool = True,
                 valid: Array | None = None) -> Array:
  """GARDO's shaped advantages ``A_i * s_i`` (``s_i`` only where ``A_i >
  0``), ``[N]``, on one device's whole batch.

  ``A = advantages.grpo(rewards, ..., scale_by_std=scale_by_std)`` (with
  ``False``, GARDO's default: ``r_i - mean_g``, every row of the group in
  the mean), ``d = nearest_neighbour_distance`` among the valid rows, and
  ``s_i = d_i / mean_{j in g} d_j`` (``normalize``, the released code; the
  mean over the group's valid rows) or ``s_i = d_i`` (the paper's equation).
  Rows with ``A_i <= 0``, rows without another valid row, and groups whose
  mean ``d`` is 0 (all embeddings parallel) keep ``A_i``.
  """
  chex.assert_rank([rewards, group_ids], 1)
  a = advantages.grpo(rewards, group_ids, num_groups,
                      scale_by_std=scale_by_std)
  valid = _valid_or_all(valid, rewards.shape[0])
  d = nearest_neighbour_distance(embeddings, group_ids, valid=valid)
  others = _others(group_ids, valid)
  scale = d
  if normalize:
    peers = _peers(group_ids, valid).astype(jnp.float32)
    mean_d = _ratio(peers @ d, jnp.sum(peers, axis=1))
    pos = mean_d > 0
    scale = jnp.where(pos, d / jnp.where(pos, mean_d, 1.0), 1.0)
  shaped = (a > 0) & jnp.any(others, axis=1)
  return jnp.where(shaped, a * scale, a)


@register("advantage", "gardo_advantage", reads=("embeddings",))
@defaults_from(gardo_values, advantages.scalar_rewards)
def gardo_advantage_part(batch: Batch, *, scale_by_std, normalize,
                         reward_weights, axis_name=None) -> Array:
  """GARDO's diversity-aware advantages, per token: a positive group
  advantage is multiplied by the rollout's isolation, the cosine distance
  ``d_i`` of its embedding to the nearest other rollout of the group over
  the group's mean ``d``; other advantages are unchanged (``gardo_values``).

  Exact to the released code (``PerPromptStatTracker.update`` with
  ``type='gardo'``: ``(r - mean) * where(r - mean < 0, 1, d / mean(d))``,
  no std). The paper writes ``A_i d_i if A_i > 0`` (``normalize=False``);
  it also reports that dropping the std from GRPO's normalisation curbs
  reward hacking (``scale_by_std=False``, the default). The embeddings are
  ``Batch.embeddings`` (the paper uses DINOv3 image features); empty
  responses take no part in ``d``. GARDO's gated KL and reference resets
  are not part of this advantage.

  References:
    He et al., "GARDO: Reinforcing Diffusion Models without Reward
    Hacking", arXiv:2512.24138, https://github.com/tinnerhrhe/GARDO.
  """
  r = advantages.scalar_rewards(batch.rewards, reward_weights)
  rg, emb, g, v = _gather(axis_name, r,
                          jax.lax.stop_gradient(batch.embeddings),
                          batch.group_ids, valid_rows(batch.response_mask))
  adv = gardo_values(rg, emb, g, batch.groups, scale_by_std=scale_by_std,
                     normalize=normalize, valid=v)
  return per_token(_local(adv, r.shape[0], axis_name), batch.response_mask)


# --- DSDR local term ---------------------------------------------------------


def dsdr_distinctiveness(embeddings: Array, group_ids: Array, *,
                         valid: Array | None = None) -> Array:
  """DSDR's semantic score ``D_emb(o_i) = mean_{j != i} (1 - cos(e_i,
  e_j)) / 2`` over the other valid rows of ``i``'s group, in ``[0, 1]``,
  ``[N]``; 0 for a row without another valid row."""
  chex.assert_rank([embeddings, group_ids], [2, 1])
  others = _others(group_ids, _valid_or_all(valid, embeddings.shape[0]))
  dist = (1.0 - diversity.cosine_similarity(embeddings)) / 2.0
  return _ratio(jnp.sum(jnp.where(others, dist, 0.0), axis=1),
                jnp.sum(others, axis=1))


def dsdr_allocation(scores: Array, correct: Array, group_ids: Array,
                    num_groups: int, *, tau: float = 5.0) -> Array:
  """DSDR's coupling weights ``w_i = exp(tau s_i) / sum_{j in P_g}
  exp(tau s_j)`` over the correct rows ``P_g`` of ``i``'s group, 0 on the
  other rows, ``[N]`` (each group's weights sum to 1 when it has a correct
  row)."""
  chex.assert_rank([scores, correct, group_ids], 1)
  correct = correct.astype(bool)
  z = jnp.where(correct, tau * scores.astype(jnp.float32), -jnp.inf)
  lse = groups.broadcast(groups.group_logsumexp(z, group_ids, num_groups),
                         group_ids)
  return jnp.where(correct, jnp.exp(jnp.where(correct, z - lse, 0.0)), 0.0)


def _check_dsdr(rewards: Array, tau, clip) -> None:
  if rewards.ndim != 1:
    raise ValueError("the 'dsdr_local' regularizer needs scalar"
                     f" Batch.rewards of shape [B], got {rewards.shape}.")
  if not tau > 0:
    raise ValueError(f"tau must be > 0, got {tau!r}.")
  if not clip > 0:
    raise ValueError(f"clip must be > 0, got {clip!r}.")


def dsdr_row_scales(embeddings: Array, rewards: Array, group_ids: Array,
                    num_groups: int, *, tau: float = 5.0, clip: float = 1.0,
                    valid: Array | None = None) -> Array:
  """``n_g w_i`` per row, ``[N]``: DSDR's allocation ``w`` (``dsdr_allocation``
  of ``min(dsdr_distinctiveness, clip)`` over the valid rows with reward
  > 0) times the number ``n_g`` of valid rows of the group."""
  valid = _valid_or_all(valid, rewards.shape[0])
  d = jnp.clip(dsdr_distinctiveness(embeddings, group_ids, valid=valid), 0.0,
               clip)
  w = dsdr_allocation(d, valid & (rewards > 0), group_ids, num_groups,
                      tau=tau)
  size = jnp.sum(_peers(group_ids, valid), axis=1).astype(jnp.float32)
  return w * size


@register("regularizer", "dsdr_local", reads=("embeddings", "entropy"),
          domains={"tau": above(0), "clip": above(0), "coef": at_least(0)})
@defaults_from(dsdr_row_scales)
def dsdr_local_part(batch: Batch, *, tau, clip, axis_name=None) -> Array:
  """DSDR's local term: ``-n_g w_i H_it`` on the valid tokens of correct
  rollouts (reward > 0), 0 elsewhere, so the loss gains an entropy bonus
  allocated to the more distinctive correct rollouts. Inspired by DSDR (our
  choices below).

  ``w`` is DSDR's softmax over the group's correct rollouts of ``tau d_i``
  (``dsdr_allocation``), ``d_i = min(D_emb(o_i), clip)`` with ``D_emb`` the
  mean of ``(1 - cos) / 2`` to the group's other rollouts
  (``dsdr_distinctiveness`` on ``Batch.embeddings``, no gradient), ``H =
  Batch.entropy`` (the gradient flows through it) and ``n_g`` the group's
  non-empty rollouts. Under ``aggregation="seq-mean-token-mean"`` the loss
  adds ``coef * sum_g (n_g / B_seq) L_g`` with ``L_g = -sum_{i in P_g} w_i
  mean_t H_it``: with equal group sizes, ``coef`` times the mean over groups
  of DSDR's ``-J_local``, so ``coef`` is the paper's ``lambda_l`` (0.001).
  Other aggregations weight the tokens differently.

  Inspired by DSDR: the allocation (Eq. 11, ``tau = 5``) and the
  length-invariant correct-only entropy (Eqs. 12, 15) are the paper's. Our
  choices: ``d`` keeps only the paper's semantic half (the formula half
  needs extracted formulas), ``clip`` stands for the unstated ``sigma_d``
  (1 = no clip), the exact per-token entropy replaces the paper's
  importance-sampled estimate ``rho log pi`` (its expectation), and correct
  means reward > 0. The weights use the groups present in the slice the
  regularizer receives: keep whole groups in a micro-batch for the exact
  form.

  References:
    Wan et al., "DSDR: Dual-Scale Diversity Regularization for Exploration
    in LLM Reasoning", arXiv:2602.19895.
  """
  _check_dsdr(batch.rewards, tau, clip)
  sg = jax.lax.stop_gradient
  emb, r, g, v = _gather(axis_name, sg(batch.embeddings), sg(batch.rewards),
                         batch.group_ids, valid_rows(batch.response_mask))
  scale = dsdr_row_scales(emb, r, g, batch.groups, tau=tau, clip=clip,
                          valid=v)
  scale = _local(scale, batch.batch_size, axis_name)
  return jnp.where(batch.mask > 0, -scale[:, None] * batch.entropy, 0.0)
