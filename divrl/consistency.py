"""Consistency-aware advantages: COPO's global, prompt-level signal blended
with GRPO's local one by the entropy of each group's answers.

GRPO's group-relative advantage vanishes on a group whose samples all agree
(all right or all wrong). COPO adds a *global* advantage: the group's mean
reward (its accuracy under 0/1 rewards), standardised over the groups of the
batch, so a consistent group still moves against the others; and an entropy
gate ``w = sigmoid(k (H_g - b))``, ``H_g`` the entropy (bits) of the group's
answer distribution, that gives the local loss weight ``w`` and the global
one ``1 - w``: diverse groups learn from their internal contrast, consistent
groups from the batch.

A row is *valid* when its response mask has a positive entry; an all-padding
row takes no part in any group or batch statistic and gets advantage 0.
Answers are ``Batch.solution_ids`` (equal ids in a group are the same
answer; a negative id, a wrong or unparsed answer, is its own answer unless
``wrong_answers="same"``).

References:
  Han et al., "COPO: Consistency-Aware Policy Optimization",
  arXiv:2508.04138; code https://github.com/hijih/copo-code (COPO).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.diversity import majority_frequency
from divrl.registry import FINITE, at_least, register
from divrl.sequences import per_token, valid_rows
from divrl.types import Batch, scalar_rewards_of

Array = jax.Array

BLENDS = ("soft_with_zero", "soft", "soft_with_forced", "only_zero",
          "only_forced", "global")
WRONG_ANSWERS = ("distinct", "same")
_NO_ID = jnp.iinfo(jnp.int32).max  # one shared class for all wrong answers


def _check(*, k, b, eps, global_coef, blend, wrong_answers) -> None:
  if not (math.isfinite(k) and k >= 0):
    raise ValueError(f"k must be a finite number >= 0, got {k}.")
  if not math.isfinite(b):
    raise ValueError(f"b must be finite, got {b}.")
  if not (math.isfinite(eps) and eps >= 0):
    raise ValueError(f"eps must be a finite number >= 0, got {eps}.")
  if not (math.isfinite(global_coef) and global_coef >= 0):
    raise ValueError(f"global_coef must be a finite number >= 0, got"
                     f" {global_coef}.")
  if blend not in BLENDS:
    raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}.")
  if wrong_answers not in WRONG_ANSWERS:
    raise ValueError(f"wrong_answers must be one of {WRONG_ANSWERS}, got"
                     f" {wrong_answers!r}.")


def _safe_div(x: Array, y: Array) -> Array:
  return jnp.where(y > 0, x / jnp.where(y > 0, y, 1.0), 0.0)


def answer_entropy(answer_ids: Array, group_ids: Array, valid: Array, *,
                   wrong_answers: str = "distinct", axis_name=None) -> Array:
  """Per row, the entropy in bits ``H_g = -sum_a p_a log2 p_a`` of the
  answers of its group's valid rows (0 for an invalid row).

  Equal non-negative ids are the same answer; a negative id is its own
  answer (``wrong_answers="distinct"``) or all negative ids of a group are
  one answer (``"same"``). Under ``shard_map`` the rows are gathered over
  ``axis_name`` (group ids must be global).
  """
  chex.assert_rank([answer_ids, group_ids, valid], 1)
  chex.assert_equal_shape([answer_ids, group_ids, valid])
  if wrong_answers not in WRONG_ANSWERS:
    raise ValueError(f"wrong_answers must be one of {WRONG_ANSWERS}, got"
                     f" {wrong_answers!r}.")
  ids = answer_ids.astype(jnp.int32)
  if wrong_answers == "same":
    ids = jnp.where(ids < 0, _NO_ID, ids)
  ids, gid, ok = (groups.all_gather(x, axis_name)
                  for x in (ids, group_ids, valid.astype(bool)))
  _, nats = majority_frequency(ids, gid, valid=ok)
  local = nats[groups.global_index(answer_ids.shape[0], axis_name)]
  return local / math.log(2.0)


def _standardise_groups(values: Array, present: Array, eps: float) -> Array:
  """``(v_g - mean) / (std + eps)`` over the present groups (unbiased std,
  0 with fewer than two groups); 0 for absent groups."""
  m = jnp.sum(present.astype(values.dtype))
  lo = jnp.min(jnp.where(present, values, jnp.inf))
  lo = jnp.where(m > 0, lo, 0.0)
  xs = jnp.where(present, values - lo, 0.0)
  dev = jnp.where(present, xs - jnp.sum(xs) / jnp.maximum(m, 1.0), 0.0)
  var = jnp.sum(dev * dev) / jnp.maximum(m - 1.0, 1.0)
  std = jnp.where(m > 1, jnp.sqrt(var), 0.0)
  return _safe_div(dev, std + eps)


def copo_components(rewards: Array, group_ids: Array, num_groups: int,
                    answer_ids: Array, *, valid: Array | None = None,
                    k: float = 5.0, b: float = 1.0,
                    blend: str = "soft_with_zero",
                    consistency_coef: bool = False,
                    wrong_answers: str = "distinct", eps: float = 1e-6,
                    axis_name=None) -> tuple[Array, Array, Array, Array]:
  """COPO's local advantage, global advantage, local weight and answer
  entropy per row (all ``[B]``, 0 on invalid rows).

  * local (verl GRPO): ``(r_i - mean_g) / (std_g + eps)``, unbiased std; a
    singleton group has mean 0 and std 1, ``r_i / (1 + eps)``.
  * global: the group's reward ``R_g = mean_g(r) * c_g``, ``c_g = 1`` or,
    with ``consistency_coef``, ``c_g = 1 - lambda_n H_g`` with ``lambda_n =
    (1 - 1/n) / log2 n`` (0 for ``n = 1``); then ``(R_g - mean(R)) /
    (std(R) + eps)`` over the non-empty groups of the batch (each group
    counted once, unbiased std, 0 with fewer than two groups).
  * local weight ``w_i`` from ``s_g = sigmoid(k (H_g - b))``, by ``blend``:
    ``soft_with_zero`` ``s_g 1[r_i != 0]``, ``soft`` ``s_g``,
    ``soft_with_forced`` ``s_g 1[A_local_i != 0]``, ``only_zero``
    ``1[r_i != 0]``, ``only_forced`` ``1[A_local_i != 0]``, ``global`` 0.
  """
  chex.assert_rank([rewards, group_ids, answer_ids], 1)
  chex.assert_equal_shape([rewards, group_ids, answer_ids])
  _check(k=k, b=b, eps=eps, global_coef=1.0, blend=blend,
         wrong_answers=wrong_answers)
  r = jax.lax.stop_gradient(rewards).astype(jnp.float32)
  ok = (jnp.ones(r.shape, bool) if valid is None else valid.astype(bool))
  n, mean, std, dev = groups.valid_group_stats(r, ok, group_ids, num_groups,
                                      axis_name)
  single = n[group_ids] <= 1
  local = jnp.where(single, r / (1.0 + eps),
                    _safe_div(dev, std[group_ids] + eps))
  local = jnp.where(ok, local, 0.0)

  ent = answer_entropy(answer_ids, group_ids, ok,
                       wrong_answers=wrong_answers, axis_name=axis_name)
  ent_g = groups.group_max(jnp.where(ok, ent, -jnp.inf), group_ids,
                           num_groups, axis_name)
  present = n > 0
  ent_g = jnp.where(present, ent_g, 0.0)
  reward_g = mean
  if consistency_coef:
    lam = jnp.where(n > 1, (1.0 - 1.0 / jnp.maximum(n, 1.0))
                    / jnp.log2(jnp.maximum(n, 2.0)), 0.0)
    reward_g = mean * (1.0 - lam * ent_g)
  glob = jnp.where(ok, _standardise_groups(reward_g, present, eps)[group_ids],
                   0.0)

  soft = jax.nn.sigmoid(k * (ent_g[group_ids] - b))
  nonzero = (r != 0).astype(jnp.float32)
  forced = (local != 0).astype(jnp.float32)
  w = {"soft_with_zero": soft * nonzero, "soft": soft,
       "soft_with_forced": soft * forced, "only_zero": nonzero,
       "only_forced": forced, "global": jnp.zeros_like(soft)}[blend]
  w = jnp.where(ok, w, 0.0)
  return local, glob, w, jnp.where(ok, ent, 0.0)


def copo_advantage(rewards: Array, group_ids: Array, num_groups: int,
                   answer_ids: Array, *, valid: Array | None = None,
                   k: float = 5.0, b: float = 1.0,
                   blend: str = "soft_with_zero",
                   consistency_coef: bool = False, global_coef: float = 1.0,
                   wrong_answers: str = "distinct", eps: float = 1e-6,
                   axis_name=None) -> Array:
  """``A_i = w_i A_local_i + (1 - w_i) global_coef A_global_g``, ``[B]``
  (see ``copo_components``; 0 on invalid rows)."""
  _check(k=k, b=b, eps=eps, global_coef=global_coef, blend=blend,
         wrong_answers=wrong_answers)
  local, glob, w, _ = copo_components(
      rewards, group_ids, num_groups, answer_ids, valid=valid, k=k, b=b,
      blend=blend, consistency_coef=consistency_coef,
      wrong_answers=wrong_answers, eps=eps, axis_name=axis_name)
  return w * local + (1.0 - w) * global_coef * glob


@register("advantage", "copo", reads=("solution_ids",),
          domains={"k": at_least(0), "b": FINITE, "global_coef": at_least(0),
                   "eps": at_least(0)})
def copo_part(batch: Batch, *, k: float = 5.0, b: float = 1.0,
              blend: str = "soft_with_zero", consistency_coef: bool = False,
              global_coef: float = 1.0, wrong_answers: str = "distinct",
              eps: float = 1e-6, axis_name=None) -> Array:
  """COPO: ``w A_local + (1 - w) A_global`` per token, with ``A_local``
  GRPO's group advantage, ``A_global`` the group's accuracy standardised
  over the batch's groups (so all-correct and all-wrong groups still get a
  signal) and
  the local weight ``w = sigmoid(k (H_g - b))`` of the group's answer
  entropy ``H_g`` (bits), by default only on rows with a non-zero reward
  (wrong rows take the global advantage alone).

  Inspired by COPO. Confirmed in the authors' code
  (``verl/trainer/ppo/core_algos.py``: ``compute_score_global``,
  ``compute_grpo_outcome_advantage_with_global``,
  ``compute_policy_loss_with_global``) and taken as is: verl's GRPO local
  advantage (unbiased std, ``eps = 1e-6``, singleton ``r / (1 + eps)``);
  the global reward as the group's mean reward, optionally times the
  consistency coefficient ``1 - (1 - 1/n) H_g / log2 n``
  (``consistency_coef``, the code's ``reward_coef_flg``, off in the released
  run script); its standardisation over the batch's groups (each group once,
  unbiased std); ``H_g`` in bits over the group's answers; the gate
  ``sigmoid(k (H_g - b))`` on the *local* loss; and the code's blends
  (``global_flg``: ``soft-with-zero`` is ``blend="soft_with_zero"``, the
  default, ``only-soft`` ``"soft"``, ``soft-with-forced``, ``only-zero``,
  ``only-forced``, ``only-global``; ``only-soft-with-coef`` is ``"soft"``
  with ``global_coef``). Defaults are the released ``run_copo.sh``: ``k =
  5``, ``b = 1``, ``soft-with-zero``, no consistency coefficient (with
  ``rollout.n = 6``, clip 0.2 / 0.2, verl's dual clip ``c = 3`` and
  ``seq-mean-token-mean``, set in the surrogate and aggregation).

  Our choices: (1) the code blends two PPO losses, ``w L(A_local) + (1 - w)
  L(A_global)``, each clipped on its own; with one advantage slot we blend
  the advantages. Both losses have the same clipped form, which is linear in
  ``A`` for a fixed sign, so the two agree whenever the two advantages of a
  row have the same sign or its ratio is unclipped (on-policy, ``rho = 1``,
  always); they differ only on clipped tokens of rows whose local and
  global advantages disagree in sign (correct rows of a below-average
  group). (2) The answers are ``Batch.solution_ids`` instead of the
  extracted answer strings, a negative id (wrong) counting as its own
  answer (``wrong_answers="same"`` makes the wrong answers of a group one
  answer); where a task's correct solutions have several canonical forms
  (Countdown), distinct correct solutions count as distinct answers. (3)
  The code takes ``-sum p log2(p + 1e-8)``; we drop the ``1e-8`` (about
  ``1.4e-8`` bits per distinct answer). (4) Padding rows
  are left out of every statistic; a batch with one group gets global
  advantage 0 (the code's unbiased std of one value is NaN).

  References:
    Han et al., "COPO: Consistency-Aware Policy Optimization",
    arXiv:2508.04138; code https://github.com/hijih/copo-code (released).
  """
  r = scalar_rewards_of(batch, "copo")
  valid = valid_rows(batch.response_mask)
  adv = copo_advantage(
      r, batch.group_ids, batch.groups, batch.solution_ids, valid=valid,
      k=k, b=b, blend=blend, consistency_coef=consistency_coef,
      global_coef=global_coef, wrong_answers=wrong_answers, eps=eps,
      axis_name=axis_name)
  return per_token(adv.astype(r.dtype), batch.response_mask)
