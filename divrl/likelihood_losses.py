"""Likelihood losses on sampled responses: REDI, CPL, trajectory balance
(Flow of Reasoning), REFUEL, BRAIn, and RPO's SFT regularizer.

The surrogates here replace the policy-gradient loss and ignore the
advantages: each is a loss on the log-likelihoods of the sampled responses
given their rewards. With ``l_it`` the log-prob of token ``t`` of row ``i``
under the policy (``Batch.logprobs``) and ``m_it`` the response mask, the
sequence log-likelihood is ``S_i = sum_t m_it l_it``.

**Aggregation.** Every part here is exact under ``aggregation=
"seq-mean-token-mean"`` (0/1 masks):

* ``redi`` and the ``rpo_sft`` regularizer are per-token losses (``+-l_it``),
  so that aggregation gives each sequence's token mean, the papers'
  length-normalised ``(1/|y|) sum_t log pi``, averaged over sequences;
* the sequence-level surrogates (``cpl``, ``trajectory_balance``,
  ``refuel``, ``brain``) put a per-row value ``v_i`` on every valid token
  (``divrl.sequences.per_token``), so that aggregation gives ``(1/B_seq)
  sum_i v_i``. The group losses (pairs, self-normalised weights) give each
  valid member of group ``g`` a share with ``sum_{i in g} v_i = n_g L_g``
  (``n_g`` valid members), so the loss is ``sum_g (n_g / B_seq) L_g``: the
  mean of the per-group losses ``L_g`` when groups have equal sizes.

Other aggregations weight rows by their length (``token-mean``) or do not
normalise (``token-sum``); the gradient direction within a row is the same.

**Groups.** A group is the samples of one prompt (``Batch.group_ids``); rows
without valid tokens take no part in any pair or group statistic and get 0.
A group with no pair (a singleton, or all rewards equal for ``cpl``) gives 0.
The group losses read every member of a group: each update slice must hold
whole groups (``train.num_minibatches = train.micro_batches = 1``, the
defaults). Inside ``shard_map`` pass ``axis_name``: the pair terms all-gather
the sequence statistics over it (memory ``O(B_local * B_global)``).

References:
  Xu et al., "Harnessing Negative Signals: Reinforcement Distillation from
  Teacher Data for LLM Reasoning", arXiv:2505.24850 (REDI).
  Hejna et al., "Contrastive Preference Learning: Learning from Human
  Feedback without RL", arXiv:2310.13639 (CPL).
  Yu et al., "Flow of Reasoning: Efficient Training of LLM Policy with
  Divergent Thinking", arXiv:2406.05673 (FoR); Malkin et al., "Trajectory
  Balance: Improved Credit Assignment in GFlowNets", arXiv:2201.13259; the
  log-partition variance (VarGrad) loss, arXiv:2302.05446.
  Gao et al., "Regressing the Relative Future: Efficient Policy Optimization
  for Multi-turn RLHF", arXiv:2410.04612 (REFUEL).
  Pandey et al., "BRAIn: Bayesian Reward-conditioned Amortized Inference for
  natural language generation from feedback", arXiv:2402.02479 (BRAIn).
  Liu et al., "Provably Mitigating Overoptimization in RLHF: Your SFT Loss is
  Implicitly an Adversarial Regularizer", arXiv:2405.16436 (RPO).
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import (FINITE, above, at_least, between, defaults_from,
                            register)
from divrl.sequences import per_token, sequence_sum, valid, valid_rows
from divrl.types import Batch, behaviour_logprobs, scalar_rewards_of

Array = jax.Array
sg = jax.lax.stop_gradient


# --- helpers -----------------------------------------------------------------


def _number(name: str, value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number, got {value!r}.") from None


def _check_positive(name: str, value) -> None:
  v = _number(name, value)
  if not (math.isfinite(v) and v > 0):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def _check_unit(name: str, value) -> None:
  if not 0.0 < _number(name, value) <= 1.0:
    raise ValueError(f"{name} must lie in (0, 1], got {value!r}.")


def sequence_logprob(logprobs: Array, mask: Array) -> Array:
  """``S_i = sum_t m_it l_it`` over the valid tokens, ``[B]`` (0 if none)."""
  return sequence_sum(logprobs, mask)[:, 0]


def discounted_logprob(logprobs: Array, mask: Array,
                       gamma: float = 1.0) -> Array:
  """``sum_t gamma^k_t l_it``, ``k_t`` the number of valid tokens before
  ``t`` (the response's action index), ``[B]``."""
  chex.assert_equal_shape([logprobs, mask])
  if gamma == 1.0:
    return sequence_logprob(logprobs, mask)
  v = valid(mask)
  k = jnp.cumsum(v.astype(jnp.float32), axis=1) - 1.0
  w = jnp.power(jnp.float32(gamma), jnp.maximum(k, 0.0))
  return jnp.sum(jnp.where(v, w * logprobs, 0.0), axis=1)


def same_group_pairs(group_ids: Array, ok: Array, axis_name=None) -> Array:
  """``[B, B_global]`` bool: local row ``i`` and global row ``j`` are two
  distinct valid members of one group (``j`` over the rows all-gathered
  over ``axis_name``, in device order)."""
  chex.assert_rank([group_ids, ok], 1)
  idx = groups.global_index(group_ids.shape[0], axis_name)
  all_ids = groups.all_gather(group_ids, axis_name)
  all_ok = groups.all_gather(ok, axis_name)
  all_idx = groups.all_gather(idx, axis_name)
  return ((group_ids[:, None] == all_ids[None, :]) & ok[:, None]
          & all_ok[None, :] & (idx[:, None] != all_idx[None, :]))


def spread_group_loss(share: Array, pairs: Array, ok: Array,
                      group_ids: Array, num_groups: int,
                      axis_name=None) -> Array:
  """Per-row values ``v_i = n_g share_i / P_g`` (0 where ``P_g = 0``).

  ``share_i`` is row ``i``'s part of its group's summed pair losses
  (``sum_{i in g} share_i`` = the group's total), ``pairs_i`` its part of
  the pair count ``P_g = sum_{i in g} pairs_i`` and ``n_g`` the group's
  valid members; then ``sum_{i in g} v_i = n_g * (mean pair loss of g)``.
  """
  n = groups.group_count(group_ids, num_groups, axis_name,
                         weights=ok.astype(jnp.float32))
  p = groups.group_sum(pairs.astype(jnp.float32), group_ids, num_groups,
                       axis_name)
  scale = jnp.where(p > 0, n / jnp.where(p > 0, p, 1.0), 0.0)
  return jnp.where(ok, share * groups.broadcast(scale, group_ids), 0.0)


# --- REDI -------------------------------------------------------------------


def redi_loss(logprobs: Array, positive: Array, mask: Array, *,
              negative_weight: float = 0.8) -> Array:
  """REDI per token: ``-l_it`` on positive rows, ``negative_weight * l_it``
  on the others, 0 at padding."""
  chex.assert_equal_shape([logprobs, mask])
  chex.assert_shape(positive, logprobs.shape[:1])
  value = jnp.where(positive[:, None], -logprobs, negative_weight * logprobs)
  return jnp.where(valid(mask), value, 0.0)


@register("surrogate", "redi",
          domains={"negative_weight": at_least(0), "threshold": FINITE})
@defaults_from(redi_loss)
def redi_part(batch: Batch, advantages: Array, *, negative_weight: float,
              threshold: float = 0.0) -> Array:
  """REDI: raise the log-likelihood of positive responses (``reward >
  threshold``) and lower that of the others with the asymmetric weight
  ``negative_weight`` (``redi_loss``). Ignores ``advantages``.

  Per token the loss is ``-l`` on positive rows and ``negative_weight * l``
  on negative rows; with ``aggregation="seq-mean-token-mean"`` the loss is
  the mean over sequences of REDI's length-normalised terms ``-(1/|y+|) sum_t
  l`` and ``negative_weight (1/|y-|) sum_t l``. The released code
  (``loss_type="reinforce"``, recipe ``redi_1_08``) has the same terms with
  ``c+ = 1``, ``c- = 0.8`` and averages them over (positive, negative)
  pairs: with as many positives as negatives that is twice our mean over
  sequences. Its optional negative re-weighting (``use_neg_weighting``) is
  not implemented. REDI is offline (teacher traces after an SFT stage);
  here the traces are the policy's samples.

  References:
    "Harnessing Negative Signals: Reinforcement Distillation from Teacher
    Data for LLM Reasoning", arXiv:2505.24850.
  """
  del advantages
  w = _number("negative_weight", negative_weight)
  if not (math.isfinite(w) and w >= 0):
    raise ValueError(f"negative_weight must be a finite number >= 0, got"
                     f" {negative_weight!r}.")
  if not math.isfinite(_number("threshold", threshold)):
    raise ValueError(f"threshold must be a finite number, got"
                     f" {threshold!r}.")
  r = scalar_rewards_of(batch, "redi")
  return redi_loss(batch.logprobs, r > threshold, batch.mask,
                   negative_weight=negative_weight)


# --- CPL --------------------------------------------------------------------


def cpl_pair_loss(s_win: Array, s_lose: Array, *, alpha: float = 0.1,
                  lam: float = 0.5) -> Array:
  """``-log sigmoid(alpha (s_win - lam s_lose))`` (stable softplus form)."""
  return jax.nn.softplus(-alpha * (s_win - lam * s_lose))


def cpl_values(scores: Array, rewards: Array, ok: Array, group_ids: Array,
               num_groups: int, *, alpha: float = 0.1, lam: float = 0.5,
               axis_name=None) -> Array:
  """Per-row CPL values ``v_i`` ``[B]`` (see ``spread_group_loss``).

  The pairs of a group are its ordered pairs ``(i, j)`` of valid members
  with ``r_i > r_j`` (ties are no preference); each pair's loss
  ``cpl_pair_loss(S_i, S_j)`` is shared half and half by its two rows.
  """
  chex.assert_rank([scores, rewards, ok, group_ids], 1)
  same = same_group_pairs(group_ids, ok, axis_name)
  all_s = groups.all_gather(scores, axis_name)
  all_r = groups.all_gather(rewards, axis_name)
  win = same & (rewards[:, None] > all_r[None, :])
  lose = same & (rewards[:, None] < all_r[None, :])
  as_winner = cpl_pair_loss(scores[:, None], all_s[None, :], alpha=alpha,
                            lam=lam)
  as_loser = cpl_pair_loss(all_s[None, :], scores[:, None], alpha=alpha,
                           lam=lam)
  share = 0.5 * (jnp.sum(jnp.where(win, as_winner, 0.0), axis=1)
                 + jnp.sum(jnp.where(lose, as_loser, 0.0), axis=1))
  return spread_group_loss(share, jnp.sum(win, axis=1), ok, group_ids,
                           num_groups, axis_name)


@register("surrogate", "cpl",
          domains={"alpha": above(0), "lam": between(0, 1, low_open=True),
                   "gamma": between(0, 1, low_open=True)})
@defaults_from(cpl_values, discounted_logprob)
def cpl_part(batch: Batch, advantages: Array, *, alpha: float, lam: float,
             gamma: float, axis_name=None) -> Array:
  """CPL: the contrastive preference loss ``-log sigmoid(alpha (S_i - lam
  S_j))`` averaged over the ordered pairs ``r_i > r_j`` of each group, with
  ``S = sum_t gamma^t l_t`` (CPL's advantage ``alpha log pi`` summed over the
  segment). Ignores ``advantages``.

  ``lam < 1`` is the paper's conservative bias ``CPL(lambda)`` (the code's
  ``contrastive_bias``): it favours raising the likelihood of both members.
  The released code's ranked-score loss (``biased_bce_with_scores``)
  averages this over all pairs of a batch sorted by score, without a
  discount; we average over the pairs of each group, exclude tied rewards,
  and allow ``gamma`` (the paper's discount; the code's default is 1).
  Defaults are the released Meta-World configs (``alpha = 0.1``,
  ``contrastive_bias = 0.5``). The row values go on every valid token: use
  ``aggregation="seq-mean-token-mean"`` (module docstring). There is no
  reference policy (CPL's reference-free form); the code's optional BC
  term is not implemented (add a likelihood regularizer if wanted).

  References:
    "Contrastive Preference Learning: Learning from Human Feedback without
    RL", arXiv:2310.13639.
  """
  del advantages
  _check_positive("alpha", alpha)
  _check_unit("lam", lam)
  _check_unit("gamma", gamma)
  r = scalar_rewards_of(batch, "cpl")
  ok = valid_rows(batch.mask)
  s = discounted_logprob(batch.logprobs, batch.mask, gamma)
  v = cpl_values(s, r, ok, batch.group_ids, batch.groups, alpha=alpha,
                 lam=lam, axis_name=axis_name)
  return per_token(v, batch.mask)


# --- Trajectory balance -------------------------------------------------------


def log_reward(rewards: Array, *, reward_floor: float = 1e-3,
               temperature: float = 1.0) -> Array:
  """``log R = log(max(r, reward_floor)) / temperature`` (``R = max(r,
  floor)^(1/T)``; rewards at or below the floor all get ``log floor / T``)."""
  return jnp.log(jnp.maximum(rewards, reward_floor)) / temperature


def trajectory_balance_values(scores: Array, log_rewards: Array, ok: Array,
                              group_ids: Array, num_groups: int, *,
                              axis_name=None) -> Array:
  """Per-row ``(log Z_g + S_i - log R_i)^2`` with the group estimate ``log
  Z_g = sg(mean_{j in g} (log R_j - S_j))`` over valid members, ``[B]``."""
  chex.assert_rank([scores, log_rewards, ok, group_ids], 1)
  delta = jnp.where(ok, scores - log_rewards, 0.0)
  total = groups.group_sum(sg(delta), group_ids, num_groups, axis_name)
  n = groups.group_count(group_ids, num_groups, axis_name,
                         weights=ok.astype(jnp.float32))
  log_z = -groups.broadcast(total / jnp.maximum(n, 1.0), group_ids)
  return jnp.where(ok, (log_z + delta) ** 2, 0.0)


@register("surrogate", "trajectory_balance",
          domains={"reward_floor": above(0), "temperature": above(0)})
@defaults_from(log_reward)
def trajectory_balance_part(batch: Batch, advantages: Array, *,
                            reward_floor: float, temperature: float,
                            axis_name=None) -> Array:
  """Inspired by Flow of Reasoning: GFlowNet trajectory balance ``(log Z +
  S - log R)^2`` per sequence, with ``log Z`` the group estimate
  ``sg(mean_g(log R - S))``: the policy learns to sample responses with
  probability proportional to ``R``. Ignores ``advantages``.

  Our choices: FoR trains a learned scalar ``log Z`` (its own learning
  rate) with the trajectory balance loss over reasoning steps; a pure part
  cannot own parameters, so we use the VarGrad / log-partition-variance
  estimate ``log Z_g = sg(mean_{j in g}(log R_j - S_j))`` over the valid
  members of each prompt's group. Within a group the residuals then sum to
  0, so the gradient equals that of the group variance of ``log R - S``
  (the stop-gradient does not change it); a singleton group gives 0.
  ``S`` is summed over tokens (the response is one trajectory of token
  actions). ``log R = log(max(r, reward_floor)) /
  temperature``: rewards may be 0 or negative, so they are floored (FoR's
  Game24 reward is 100 on success and 0.001 otherwise, a ratio of 1e5; our
  floor 1e-3 with 0/1 rewards gives 1e3), and ``temperature`` tempers
  ``R^(1/T)``. Row values go on every valid token (module docstring:
  ``seq-mean-token-mean`` gives FoR's batch mean of squared residuals).

  References:
    "Flow of Reasoning: Efficient Training of LLM Policy with Divergent
    Thinking", arXiv:2406.05673; "Trajectory Balance: Improved Credit
    Assignment in GFlowNets", arXiv:2201.13259; log-partition variance
    loss, arXiv:2302.05446.
  """
  del advantages
  _check_positive("reward_floor", reward_floor)
  _check_positive("temperature", temperature)
  r = scalar_rewards_of(batch, "trajectory_balance")
  ok = valid_rows(batch.mask)
  s = sequence_logprob(batch.logprobs, batch.mask)
  lr = log_reward(r, reward_floor=reward_floor, temperature=temperature)
  v = trajectory_balance_values(s, lr, ok, batch.group_ids, batch.groups,
                                axis_name=axis_name)
  return per_token(v, batch.mask)


# --- REFUEL -------------------------------------------------------------------


def refuel_values(log_ratios: Array, rewards: Array, ok: Array,
                  group_ids: Array, num_groups: int, *, eta: float = 1.0,
                  axis_name=None) -> Array:
  """Per-row REFUEL values ``[B]`` over all pairs of each group.

  ``log_ratios_i = S_i - S_old_i``; the pair loss is ``((d_i - d_j) / eta -
  (r_i - r_j))^2`` for every unordered pair of valid members (tied rewards
  included: their target difference is 0), shared half and half.
  """
  chex.assert_rank([log_ratios, rewards, ok, group_ids], 1)
  same = same_group_pairs(group_ids, ok, axis_name)
  all_d = groups.all_gather(log_ratios, axis_name)
  all_r = groups.all_gather(rewards, axis_name)
  err = ((log_ratios[:, None] - all_d[None, :]) / eta
         - (rewards[:, None] - all_r[None, :]))
  share = 0.5 * jnp.sum(jnp.where(same, err * err, 0.0), axis=1)
  pairs = 0.5 * jnp.sum(same, axis=1)
  return spread_group_loss(share, pairs, ok, group_ids, num_groups,
                           axis_name)


@register("surrogate", "refuel",
          domains={"eta": above(0)})
@defaults_from(refuel_values)
def refuel_part(batch: Batch, advantages: Array, *, eta: float,
                axis_name=None) -> Array:
  """REFUEL: regress the difference of two responses' sequence log-ratios
  to the behaviour policy onto their reward difference, ``((1/eta)[(S -
  S_old)(y) - (S - S_old)(y')] - (R(y) - R(y')))^2``, averaged over all
  pairs of each group. Ignores ``advantages``.

  The pair loss is the paper's; the released code regresses ``(S - S_old)(y)
  - (S - S_old)(y') - eta (R(y) - R(y'))``, i.e. ``eta^2`` times it, with
  ``eta = 1`` by default (our default). REFUEL draws two continuations per
  state; with ``n`` samples per prompt we average over all ``n (n - 1) / 2``
  pairs (our choice; for ``n = 2`` it is the paper's loss). Here a response
  is one turn, so the relative future return is the reward difference.
  ``S_old`` is ``Batch.old_logprobs`` (on-policy: the stop-gradient of the
  log-probs). The code's optional NLL term is not implemented. Row values
  go on every valid token: use ``aggregation="seq-mean-token-mean"``.

  References:
    "Regressing the Relative Future: Efficient Policy Optimization for
    Multi-turn RLHF", arXiv:2410.04612.
  """
  del advantages
  _check_positive("eta", eta)
  r = scalar_rewards_of(batch, "refuel")
  ok = valid_rows(batch.mask)
  d = sequence_logprob(batch.logprobs - behaviour_logprobs(batch),
                       batch.mask)
  v = refuel_values(d, r, ok, batch.group_ids, batch.groups, eta=eta,
                    axis_name=axis_name)
  return per_token(v, batch.mask)


# --- BRAIn --------------------------------------------------------------------


def group_log_softmax(x: Array, ok: Array, group_ids: Array, num_groups: int,
                      axis_name=None) -> Array:
  """``x_i - log sum_{j in g, valid} exp(x_j)`` on valid rows, 0 elsewhere."""
  xs = jnp.where(ok, x, -jnp.inf)
  lse = groups.group_logsumexp(xs, group_ids, num_groups, axis_name)
  lse_i = jnp.where(ok, groups.broadcast(lse, group_ids), 0.0)
  return jnp.where(ok, x - lse_i, 0.0)


def brain_values(scores: Array, proposal: Array, ref: Array, rewards: Array,
                 ok: Array, group_ids: Array, num_groups: int, *,
                 beta: float = 1.0, baseline: bool = True,
                 axis_name=None) -> Array:
  """Per-row BRAIn values ``[B]``.

  Posterior weights ``alpha = softmax_g(sg(S_ref - S_q + r / beta))``; with
  the self-normalised baseline ``v_i = -n_g alpha_i log softmax_g(S - S_q)_i``
  (the cross-entropy from ``alpha`` to the policy's self-normalised weights),
  without it ``v_i = -n_g alpha_i S_i``.
  """
  chex.assert_rank([scores, proposal, ref, rewards, ok, group_ids], 1)
  log_w = sg(ref - proposal + rewards / beta)
  weights = jnp.exp(group_log_softmax(log_w, ok, group_ids, num_groups,
                                      axis_name))
  if baseline:
    fit = group_log_softmax(scores - proposal, ok, group_ids, num_groups,
                            axis_name)
  else:
    fit = scores
  n = groups.group_count(group_ids, num_groups, axis_name,
                         weights=ok.astype(jnp.float32))
  return jnp.where(ok, -groups.broadcast(n, group_ids) * weights * fit, 0.0)


@register("surrogate", "brain", reads=("ref_logprobs",),
          domains={"beta": above(0)})
@defaults_from(brain_values)
def brain_part(batch: Batch, advantages: Array, *, beta: float,
               baseline: bool, axis_name=None) -> Array:
  """Inspired by BRAIn: distil the reward-conditioned posterior ``p(y | x,
  G=1)``, proportional to ``ref(y|x) exp(r / beta)``, into the policy by
  self-normalised importance sampling over each group: weights ``alpha_i =
  softmax_g(S_ref - S_q + r / beta)`` (stop-gradient, ``q`` the behaviour
  policy that drew the samples), loss ``-sum_i alpha_i log softmax_g(S -
  S_q)_i`` with the self-normalised baseline (``baseline=True``), or the
  plain SNIS distillation ``-sum_i alpha_i S_i``. Ignores ``advantages``.

  Our choices: the posterior, the SNIS weights and a self-normalised
  baseline are the paper's; the exact form is our reading, not confirmed
  from the paper's equations (no code is released): the baseline's
  gradient is ``-sum_i (alpha_i - b_i) grad S_i`` with ``b_i =
  softmax_g(S - S_q)_i`` the policy's self-normalised weights (on-policy
  ``1/n``), which is the gradient of the cross-entropy above. We choose
  ``log p(G=1 | x, y) = r / beta`` (the Bradley-Terry / PPO-optimal tilt;
  ``beta = 1`` default, ours). With two samples and ``alpha`` a hard
  argmax this is DPO with the proposal as reference, as the paper notes.
  Groups are weighted by size (module docstring); a singleton gives 0 with
  the baseline. Use ``aggregation="seq-mean-token-mean"``.

  References:
    "BRAIn: Bayesian Reward-conditioned Amortized Inference for natural
    language generation from feedback", arXiv:2402.02479.
  """
  del advantages
  _check_positive("beta", beta)
  if not isinstance(baseline, bool):
    raise ValueError(f"baseline must be True or False, got {baseline!r}.")
  r = scalar_rewards_of(batch, "brain")
  mask = batch.mask
  ok = valid_rows(mask)
  s = sequence_logprob(batch.logprobs, mask)
  s_q = sequence_logprob(behaviour_logprobs(batch), mask)
  s_ref = sequence_logprob(batch.ref_logprobs, mask)
  v = brain_values(s, s_q, s_ref, r, ok, batch.group_ids, batch.groups,
                   beta=beta, baseline=baseline, axis_name=axis_name)
  return per_token(v, mask)


# --- RPO's SFT regularizer ---------------------------------------------------


@register("regularizer", "rpo_sft", reads=("reference_samples",),
          domains={"coef": at_least(0)})
def rpo_sft_part(batch: Batch) -> Array:
  """RPO's SFT term: the negative log-likelihood ``-l_t`` of the tokens of
  the baseline responses, here the rows sampled from the reference policy
  (``Batch.sample_source == 1``); 0 on the policy's rows. It is a forward
  KL ``KL(ref || pi)`` up to the reference's entropy, in expectation.

  With ``aggregation="seq-mean-token-mean"`` it is RPO's average SFT loss
  ``-(1/|y|) sum_t log pi(y_base)`` (the OpenRLHF variant of the released
  code, ``eta = 0.2`` with DPO), times the share of reference rows (the
  ``coef`` absorbs it); with ``token-mean`` a token-level NLL. RPO adds it
  to DPO with the chosen response as baseline; here it regularizes any
  policy-gradient objective (pair it with the ``policy_samples_only`` token
  weight and ``sampling.ref_share > 0``, as ``dph_rehearsal``).

  References:
    "Provably Mitigating Overoptimization in RLHF: Your SFT Loss is
    Implicitly an Adversarial Regularizer", arXiv:2405.16436.
  """
  rows = batch.sample_source == 1
  keep = rows[:, None] & valid(batch.mask)
  return jnp.where(keep, -batch.logprobs, 0.0)


__all__ = ["brain_values", "cpl_pair_loss", "cpl_values",
           "discounted_logprob", "group_log_softmax", "log_reward",
           "redi_loss", "refuel_values", "same_group_pairs",
           "sequence_logprob", "spread_group_loss",
           "trajectory_balance_values"]
