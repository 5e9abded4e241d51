"""Sample and prompt selection from rewards: difficulty bands, PF-PPO's
per-prompt picks, Pareto fronts, uncertainty weights, and VeRPO's
difficulty-weighted partial credit.

* **Filters** (``transform`` parts that zero ``Batch.response_mask``):
  ``difficulty_band`` keeps the groups whose pass rate lies in a band,
  ``pf_ppo_select`` keeps the best row of each group plus a random or the
  worst one, ``pareto_front`` keeps the rows whose reward vectors are not
  dominated. A masked row leaves the loss *and* every aggregation
  denominator, as if it had been dropped from the batch, while shapes stay
  static. Rewards are unchanged, so masked rows still take part in the group
  statistics of the advantage (a GRPO mean and std include them).
* **Weights** (``token_weight``): ``ctrl_u`` down-weights groups whose
  rewards vary a lot (Ctrl-U's uncertainty weighting).
* **Reward transforms**: ``verpo`` reduces a pass matrix ``[B,J]`` (rewards
  as components) to one dense reward per row.

Rows whose response mask is all 0 (padding) take no part in any group
statistic here (pass rates, maxima, variances, dominance), so they never
change another row's value; filters leave them at mask 0. Inside
``shard_map`` pass ``axis_name``: group sums, extrema and, for the Pareto
front, the rows themselves are combined over the mesh axis, so a sharded
batch gives the result of one device (group ids must be global).

References:
  Bae et al., "Online Difficulty Filtering for Reasoning Oriented
  Reinforcement Learning", arXiv:2504.03380.
  Zhang, Shen et al., "Policy Filtration in RLHF to Fine-Tune LLM for Code
  Generation", arXiv:2409.06957 (PF-PPO; later "Policy Filtration for RLHF
  to Mitigate Noise in Reward Models").
  Zhang et al., "Ctrl-U: Robust Conditional Image Generation via
  Uncertainty-aware Reward Modeling", arXiv:2410.11236,
  https://github.com/grenoble-zhang/Ctrl-U (released code).
  Lee et al., "Parrot: Pareto-optimal Multi-Reward Reinforcement Learning
  Framework for Text-to-Image Generation", arXiv:2401.05675.
  Wang et al., "VeRPO: Verifiable Dense Reward Policy Optimization for Code
  Generation", arXiv:2601.03525.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.advantages import scalar_rewards
from divrl.registry import at_least, between, defaults_from, register
from divrl.sequences import valid_rows
from divrl.types import Batch

Array = jax.Array

_BIG = jnp.iinfo(jnp.int32).max



def _ok(valid: Array | None, b: int) -> Array:
  out = jnp.ones((b,), bool) if valid is None else valid.astype(bool)
  chex.assert_shape(out, (b,))
  return out


def _zero_rows(mask: Array, drop: Array) -> Array:
  """``mask`` with the rows where ``drop [B]`` is True set to 0."""
  return jnp.where(drop[:, None], jnp.zeros((), mask.dtype), mask)


def _count(ok: Array, group_ids: Array, num_groups: int, axis_name) -> Array:
  """Per-sample number of valid rows in the sample's group, ``[B]``."""
  return groups.broadcast(groups.group_count(
      group_ids, num_groups, axis_name, weights=ok.astype(jnp.float32)),
                          group_ids)


# --- Online difficulty filtering -------------------------------------------


def difficulty_band_mask(rewards: Array, group_ids: Array, num_groups: int,
                         *, p_low: float = 0.25, p_high: float = 0.75,
                         valid: Array | None = None,
                         axis_name=None) -> Array:
  """``[B]`` bool: keep the valid rows of groups with ``p_low <= p_hat <=
  p_high`` (``p_hat`` from ``groups.group_pass_rate``; both ends inclusive).

  Groups without a valid row are dropped. ``p_low > 0`` and ``p_high < 1``
  drop the all-wrong and all-right groups, whose group-relative advantages
  are 0 anyway.
  """
  p_low, p_high = float(p_low), float(p_high)
  if not 0.0 <= p_low <= 1.0:
    raise ValueError(f"p_low must lie in [0, 1], got {p_low}.")
  if not p_low <= p_high <= 1.0:
    raise ValueError(f"p_high must lie in [p_low, 1] = [{p_low}, 1], got"
                     f" {p_high}.")
  ok = _ok(valid, rewards.shape[0])
  p = groups.broadcast(groups.group_pass_rate(
      rewards, group_ids, num_groups, valid=ok, axis_name=axis_name),
                       group_ids)
  n = _count(ok, group_ids, num_groups, axis_name)
  return ok & (n > 0) & (p >= jnp.float32(p_low)) & (p <= jnp.float32(p_high))


@register("transform", "difficulty_band",
          domains={"p_low": between(0, 1), "p_high": between(0, 1)})
@defaults_from(difficulty_band_mask, scalar_rewards)
def difficulty_band_part(batch: Batch, *, axis_name=None, p_low, p_high,
                         reward_weights) -> Batch:
  """Online difficulty (accuracy-band) filtering: the rows of prompts whose
  pass rate ``p_hat`` (share of the group's rows with reward ``> 0``) lies
  outside ``[p_low, p_high]`` get ``response_mask = 0``.

  Inspired by Bae et al.'s balanced online difficulty filtering, which keeps
  the prompts of intermediate accuracy when it builds each batch (and
  refills the batch by sampling more prompts; here shapes stay static and
  the batch shrinks instead). Our choices: ``p_hat`` over the group's
  non-padding rows, success is ``reward > 0`` (of the scalar reward, see
  ``advantages.scalar_rewards``), both band ends inclusive. The defaults
  ``p_low = 0.25``, ``p_high = 0.75`` (a band around ``p_hat = 0.5``, where
  the paper's variance bound ``p (1 - p)`` peaks) are ours: the paper's
  thresholds could not be confirmed. ``p_low = 1 / n``, ``p_high = 1 - 1 /
  n`` for groups of ``n`` is DAPO's ``0 < p_hat < 1``.

  References:
    "Online Difficulty Filtering for Reasoning Oriented Reinforcement
    Learning", arXiv:2504.03380.
  """
  r = scalar_rewards(batch.rewards, reward_weights)
  keep = difficulty_band_mask(r, batch.group_ids, batch.groups, p_low=p_low,
                              p_high=p_high,
                              valid=valid_rows(batch.response_mask),
                              axis_name=axis_name)
  return batch.replace(response_mask=_zero_rows(batch.response_mask, ~keep))


# --- PF-PPO per-prompt selection -------------------------------------------


def group_pick(score: Array, candidates: Array, group_ids: Array,
               num_groups: int, *, largest: bool = True,
               axis_name=None) -> Array:
  """``[B]`` bool: per group, the one candidate row with the largest (or
  smallest) ``score``; ties go to the lowest global batch index. Groups
  without candidates pick nothing."""
  chex.assert_equal_shape([score, candidates, group_ids])
  s = score if largest else -score
  s = jnp.where(candidates, s, -jnp.inf)
  top = groups.broadcast(groups.group_max(s, group_ids, num_groups,
                                          axis_name), group_ids)
  at = candidates & (s == top)
  idx = groups.global_index(score.shape[0], axis_name)
  first = groups.broadcast(groups.group_min(
      jnp.where(at, idx, _BIG), group_ids, num_groups, axis_name), group_ids)
  return at & (idx == first)


PF_PPO_MODES = ("best", "best_random", "best_worst")


def pf_ppo_selection(rewards: Array, group_ids: Array, num_groups: int, *,
                     mode: str = "best_random", key: Array | None = None,
                     valid: Array | None = None, axis_name=None) -> Array:
  """PF-PPO's per-prompt selection, ``[B]`` bool.

  Among the valid rows of each group: the *best* row is the one with the
  highest reward (ties: lowest global batch index). ``mode="best"`` keeps it
  alone (best-of-N); ``"best_random"`` adds one of the group's other valid
  rows drawn uniformly with ``key``; ``"best_worst"`` adds the other row with
  the lowest reward (ties: lowest index). A singleton group keeps its row; an
  all-equal group keeps its lowest-index row (and, unless ``"best"``, one
  more). The random draw gives each row ``u_i = U(fold_in(key, global
  index))`` and takes the largest ``u`` among the candidates, so it does not
  depend on how the batch is sharded.
  """
  chex.assert_rank([rewards, group_ids], 1)
  chex.assert_equal_shape([rewards, group_ids])
  if mode not in PF_PPO_MODES:
    raise ValueError(f"mode must be one of {PF_PPO_MODES}, got {mode!r}.")
  if mode == "best_random" and key is None:
    raise ValueError("mode='best_random' needs a PRNG key (key=None).")
  ok = _ok(valid, rewards.shape[0])
  pick = lambda s, c, largest: group_pick(  # noqa: E731
      s, c, group_ids, num_groups, largest=largest, axis_name=axis_name)
  best = pick(rewards, ok, True)
  if mode == "best":
    return best
  others = ok & ~best
  if mode == "best_worst":
    return best | pick(rewards, others, False)
  idx = groups.global_index(rewards.shape[0], axis_name)
  u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(idx)
  return best | pick(u, others, True)


@register("transform", "pf_ppo_select")
@defaults_from(pf_ppo_selection, scalar_rewards)
def pf_ppo_select_part(batch: Batch, *, key=None, axis_name=None, mode,
                       reward_weights) -> Batch:
  """PF-PPO's per-prompt policy filtration: per group keep the best
  response alone (``mode="best"``, best-of-N), with one random other
  response (``"best_random"``) or with the worst one (``"best_worst"``);
  the other rows get ``response_mask = 0``.

  Inspired by PF-PPO's BoN / BR / BW strategies, which train only on the
  responses whose reward-model scores are most reliable. Our choices (the
  paper's exact sampling rules could not be confirmed): ties go to the
  lowest batch index, the random response is drawn uniformly among the
  group's other non-padding rows, the default mode is ``"best_random"``.
  Advantages are still computed from the whole group (the rewards are
  unchanged), so a kept best row keeps its group-relative advantage; the
  paper used PPO with a critic. verl's batch-global resampling variant is
  the ``pf_ppo`` transform. See ``pf_ppo_selection``.

  References:
    "Policy Filtration in RLHF to Fine-Tune LLM for Code Generation",
    arXiv:2409.06957.
  """
  r = scalar_rewards(batch.rewards, reward_weights)
  keep = pf_ppo_selection(r, batch.group_ids, batch.groups, mode=mode,
                          key=key, valid=valid_rows(batch.response_mask),
                          axis_name=axis_name)
  return batch.replace(response_mask=_zero_rows(batch.response_mask, ~keep))


# --- Ctrl-U: uncertainty (within-group variance) weights -------------------


def group_variance(rewards: Array, group_ids: Array, num_groups: int, *,
                   valid: Array | None = None, axis_name=None) -> Array:
  """Per sample, the population variance (``ddof = 0``) of the rewards of
  the valid rows of its group, ``[B]`` (0 for a group without valid rows).

  Computed on rewards shifted by the group minimum, so that a group of
  equal rewards has exactly 0 variance.
  """
  chex.assert_rank([rewards, group_ids], 1)
  chex.assert_equal_shape([rewards, group_ids])
  ok = _ok(valid, rewards.shape[0])
  w = ok.astype(jnp.float32)
  n = _count(ok, group_ids, num_groups, axis_name)
  lo = groups.broadcast(groups.group_min(jnp.where(ok, rewards, jnp.inf),
                                         group_ids, num_groups, axis_name),
                        group_ids)
  x = jnp.where(ok, rewards - jnp.where(jnp.isfinite(lo), lo, 0.0), 0.0)
  mean = groups.broadcast(groups.group_sum(w * x, group_ids, num_groups,
                                           axis_name), group_ids)
  mean = mean / jnp.maximum(n, 1.0)
  dev = w * (x - mean)
  ss = groups.broadcast(groups.group_sum(dev * dev, group_ids, num_groups,
                                         axis_name), group_ids)
  return jnp.where(n > 0, ss / jnp.maximum(n, 1.0), 0.0)


UNCERTAINTY_MODES = ("exp", "inverse")


def uncertainty_weights(rewards: Array, group_ids: Array, num_groups: int,
                        *, k: float = 1.0, mode: str = "exp",
                        valid: Array | None = None, axis_name=None) -> Array:
  """Per-sample weights ``[B]`` decreasing in the group's reward variance
  ``U_g`` (``group_variance``): ``exp(-k U_g)`` (``mode="exp"``) or ``1 /
  (1 + k U_g)`` (``"inverse"``). In ``(0, 1]``; 1 for equal rewards and
  singleton groups."""
  k = float(k)
  if not k >= 0.0:
    raise ValueError(f"k must be >= 0, got {k}.")
  if mode not in UNCERTAINTY_MODES:
    raise ValueError(f"mode must be one of {UNCERTAINTY_MODES}, got"
                     f" {mode!r}.")
  u = group_variance(jax.lax.stop_gradient(rewards), group_ids, num_groups,
                     valid=valid, axis_name=axis_name)
  if mode == "exp":
    return jnp.exp(-k * u)
  return 1.0 / (1.0 + k * u)


@register("token_weight", "ctrl_u",
          domains={"k": at_least(0)})
@defaults_from(uncertainty_weights, scalar_rewards)
def ctrl_u_part(batch: Batch, advantages: Array, *, axis_name=None, k, mode,
                reward_weights) -> Array:
  """Ctrl-U-style uncertainty weighting: every valid token of a group gets
  the weight ``exp(-k U_g)`` (or ``1 / (1 + k U_g)``), where ``U_g`` is the
  variance of the group's rewards over its non-padding rows.

  Inspired by Ctrl-U, whose released code multiplies the reward loss of
  each generation by ``exp(-u_scale U)``, with ``U`` the discrepancy of the
  reward model's predictions on two generations of the same condition
  (``u_scale`` 1 for ADE20K segmentation, 0.1 for the other conditions), and
  adds ``u_scale mean(U)`` to the loss. The exponential form is the code's;
  taking the within-group variance of the sequence rewards as ``U``, the
  ``"inverse"`` alternative and applying the weight to the policy-gradient
  surrogate are ours. The added ``mean(U)`` term is omitted: the rewards are
  constants of the policy, so it has no gradient here. Group statistics need
  whole groups in the slice the weight sees (micro-batches must not split a
  group).

  References:
    "Ctrl-U: Robust Conditional Image Generation via Uncertainty-aware
    Reward Modeling", arXiv:2410.11236; released code:
    https://github.com/grenoble-zhang/Ctrl-U
  """
  del advantages
  r = scalar_rewards(batch.rewards, reward_weights)
  valid = batch.mask > 0
  w = uncertainty_weights(r, batch.group_ids, batch.groups, k=k, mode=mode,
                          valid=jnp.any(valid, axis=1), axis_name=axis_name)
  return jnp.where(valid, w[:, None], 0.0)


# --- Parrot: Pareto non-dominated rows -------------------------------------


PARETO_SCOPES = ("group", "batch")


def _components(rewards: Array) -> Array:
  return rewards[:, None] if rewards.ndim == 1 else rewards


def pareto_mask(rewards: Array, group_ids: Array, *, scope: str = "group",
                valid: Array | None = None, axis_name=None) -> Array:
  """``[B]`` bool: the valid rows whose reward vector is not dominated.

  Row ``i`` (rewards ``R_i``, ``[K]``) is dominated when another valid row
  ``j`` of the same group (``scope="group"``) or of the whole batch
  (``"batch"``) has ``R_j >= R_i`` in every component and ``R_j != R_i``.
  Equal vectors do not dominate each other, so ties on the front are all
  kept. With one component (``rewards [B]`` or ``[B,1]``) this keeps the
  rows with the group's (batch's) highest reward. Inside ``shard_map`` the
  rows are all-gathered over ``axis_name`` (memory ``O(B_local B_global
  K)``).
  """
  if scope not in PARETO_SCOPES:
    raise ValueError(f"scope must be one of {PARETO_SCOPES}, got {scope!r}.")
  r = _components(jax.lax.stop_gradient(rewards))
  chex.assert_rank([r, group_ids], [2, 1])
  b = r.shape[0]
  ok = _ok(valid, b)
  all_r = groups.all_gather(r, axis_name)
  all_ids = groups.all_gather(group_ids, axis_name)
  all_ok = groups.all_gather(ok, axis_name)
  peer = all_ok[None, :]
  if scope == "group":
    peer = peer & (group_ids[:, None] == all_ids[None, :])
  geq = jnp.all(all_r[None, :, :] >= r[:, None, :], axis=-1)
  gt = jnp.any(all_r[None, :, :] > r[:, None, :], axis=-1)
  dominated = jnp.any(peer & geq & gt, axis=1)
  return ok & ~dominated


@register("transform", "pareto_front", reads=("reward_components",))
@defaults_from(pareto_mask)
def pareto_front_part(batch: Batch, *, axis_name=None, scope) -> Batch:
  """Parrot's Pareto selection: rows whose reward vector ``[K]`` is
  dominated by another row of their group (``scope="group"``) or of the
  batch (``"batch"``) get ``response_mask = 0``; the non-dominated set
  trains.

  Row ``i`` is dominated when some ``j`` has ``R_j >= R_i`` elementwise and
  ``R_j != R_i``; padding rows neither dominate nor are kept. A transform,
  not a token weight: Parrot updates on the non-dominated samples only, and
  a zero mask removes the others from the loss and from every aggregation
  denominator, as if they were not in the batch. Rewards are unchanged (the
  advantage still reads all ``K`` components, e.g. their sum for GRPO).
  Parrot selects over its batch of text-to-image samples (``scope="batch"``);
  the per-prompt default is ours, for group-relative advantages. With
  ``K = 1`` it keeps each group's best rows. Inspired by Parrot: the
  dominance rule and the update on the non-dominated set follow its
  abstract (its method text and code were not available to us). See
  ``pareto_mask``.

  References:
    "Parrot: Pareto-optimal Multi-Reward Reinforcement Learning Framework
    for Text-to-Image Generation", arXiv:2401.05675.
  """
  keep = pareto_mask(batch.rewards, batch.group_ids, scope=scope,
                     valid=valid_rows(batch.response_mask),
                     axis_name=axis_name)
  return batch.replace(response_mask=_zero_rows(batch.response_mask, ~keep))


# --- VeRPO: difficulty-weighted partial credit ------------------------------


def verpo_test_weights(passes: Array, group_ids: Array, num_groups: int, *,
                       valid: Array | None = None, axis_name=None) -> Array:
  """Per-sample difficulty weights of the tests, ``[B,J]``: ``w_j = 1 -
  rho_j`` with ``rho_j`` the mean of ``clip(P_ij, 0, 1)`` over the valid
  rows ``i`` of the sample's group (1 for a group without valid rows, so
  that ``rho_j = 0``)."""
  p = jnp.clip(_components(passes), 0.0, 1.0)
  chex.assert_rank([p, group_ids], [2, 1])
  ok = _ok(valid, p.shape[0])
  w = ok.astype(jnp.float32)[:, None]
  n = groups.group_count(group_ids, num_groups, axis_name,
                         weights=ok.astype(jnp.float32))
  rho = groups.group_sum(w * p, group_ids, num_groups, axis_name)
  rho = rho / jnp.maximum(n, 1.0)[:, None]
  return groups.broadcast(1.0 - rho, group_ids)


def verpo_rewards(passes: Array, group_ids: Array, num_groups: int, *,
                  outcome_weight: float = 0.5, valid: Array | None = None,
                  axis_name=None) -> Array:
  """VeRPO-style rewards ``[B]`` from a pass matrix ``P [B,J]`` (or ``[B]``,
  one test).

  ``P`` is clipped to ``[0, 1]`` (1 = test passed). With the group's
  difficulty weights ``w_j`` (``verpo_test_weights``)::

    r_dense_i = sum_j w_j P_ij / sum_j w_j
    r_i = a 1[P_ij = 1 for all j] + (1 - a) r_dense_i,   a = outcome_weight

  Where ``sum_j w_j = 0`` (every valid row of the group passes every test)
  the weights are uniform, ``r_dense_i = mean_j P_ij``. A row that passes
  every test gets ``r = 1``; with 0/1 passes every other row gets less.
  """
  a = float(outcome_weight)
  if not 0.0 <= a <= 1.0:
    raise ValueError(f"outcome_weight must lie in [0, 1], got {a}.")
  p = jnp.clip(_components(jax.lax.stop_gradient(passes)), 0.0, 1.0)
  w = verpo_test_weights(p, group_ids, num_groups, valid=valid,
                         axis_name=axis_name)
  total = jnp.sum(w, axis=1)
  has = total > 0
  dense = jnp.where(has, jnp.sum(w * p, axis=1) / jnp.where(has, total, 1.0),
                    jnp.mean(p, axis=1))
  outcome = jnp.all(p >= 1.0, axis=1).astype(dense.dtype)
  return a * outcome + (1.0 - a) * dense


@register("transform", "verpo", reads=("reward_components",),
          domains={"outcome_weight": between(0, 1)})
@defaults_from(verpo_rewards)
def verpo_part(batch: Batch, *, axis_name=None, outcome_weight) -> Batch:
  """VeRPO-style dense verifiable reward: reduces a pass matrix (the reward
  components ``[B,J]``, one per unit test) to ``a 1[all pass] + (1 - a)
  r_dense``, where ``r_dense`` is the share of the tests a row passes,
  weighted by each test's difficulty ``1 - rho_j`` in its group (``rho_j``
  the test's pass rate over the group's non-padding rows).

  Inspired by VeRPO, which weighs each unit test by a difficulty estimated
  from the group's execution statistics (harder tests weigh more), sums the
  weights of the passed tests into a dense reward and integrates it with
  the all-tests-pass outcome. Our choices (the paper's weight function and
  combination could not be confirmed): ``psi(rho) = 1 - rho``, normalised
  by ``sum_j w_j`` (uniform weights when every test is passed by the whole
  group), and the convex combination with ``a = outcome_weight = 0.5``
  (the sum ``1[all pass] + lam r_dense`` is the same up to scale, which
  group-normalised advantages ignore). Passes are clipped to ``[0, 1]``.
  The later version's density calibration is not included. See
  ``verpo_rewards``.

  References:
    "VeRPO: Verifiable Dense Reward Policy Optimization for Code
    Generation", arXiv:2601.03525.
  """
  r = verpo_rewards(batch.rewards, batch.group_ids, batch.groups,
                    outcome_weight=outcome_weight,
                    valid=valid_rows(batch.response_mask),
                    axis_name=axis_name)
  return batch.replace(rewards=r.astype(batch.rewards.dtype))
