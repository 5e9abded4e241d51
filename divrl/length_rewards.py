"""Length-aware rewards: correctness-gated length penalties, positive-only
length weighting, truncation, length-bias removal and a step-count bonus.

Lengths are counted in tokens, ``|y_i| = #{t : m_it > 0}``
(``divrl.sequences.sequence_lengths``). A row is *valid* when its response
mask has a positive entry; an all-padding row takes no part in any group or
batch statistic and keeps its reward (its advantage is 0). A response is
*correct* when its reward is ``> 0`` (0/1 and -1/+1 verifiers alike). Every
part needs scalar rewards ``[B]``; reduce reward components first.

* ``grpo_lambda_length`` (transform): GRPO-lambda's group gate. Groups with
  a high share of correct rows get a length-penalised reward (Kimi k1.5's
  length reward on top of 0/1 correctness); the others get plain 0/1
  correctness, so hard prompts are never pushed to be shorter.
* ``drpo`` (advantage): DRPO's decoupled weights. Correct rows of a mixed
  group are weighted by a softmax of a length reward over the group's correct
  rows only, wrong rows by a softmax of their mean log-prob over the wrong
  rows; a correct row never gets a negative advantage.
* ``dler_truncation`` (transform): DLER's truncation penalty, ``r`` kept up
  to ``max_length`` tokens and scaled by ``over_scale`` (default 0) beyond.
* ``fimi_length_debias`` (transform): fits ``f(|y|)`` by ridge-regularised
  polynomial least squares on the batch and subtracts it (FiMi-RM).
* ``rlsp_step_reward`` (transform): RLSP's exploration bonus ``lambda *
  #steps`` with steps counted as delimiter token ids in ``Batch.tokens``.

References:
  Dai, Liu and Si, "Stable Reinforcement Learning for Efficient Reasoning",
  arXiv:2505.18086 (GRPO-lambda).
  Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs",
  arXiv:2501.12599 (the length reward).
  Li, Chen, Lin and Yang, "DRPO: Efficient Reasoning via Decoupled Reward
  Policy Optimization", arXiv:2510.04474,
  https://github.com/Optimization-AI/DRPO (DRPO).
  Liu et al., "DLER: Doing Length pEnalty Right - Incentivizing More
  Intelligence per Token via Reinforcement Learning", arXiv:2510.15110,
  https://github.com/NVlabs/DLER (DLER).
  Zhao et al., "Bias Fitting to Mitigate Length Bias of Reward Model in
  RLHF", arXiv:2505.12843 (FiMi-RM).
  Ye et al., "On the Emergence of Thinking in LLMs I: Searching for the Right
  Intuition", arXiv:2502.06773 (RLSP).
"""

from __future__ import annotations

import fractions
import operator
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import (above, at_least, between, defaults_from, integer,
                            register)
from divrl.sequences import (per_token, sequence_lengths, sequence_mean,
                             valid_rows)
from divrl.types import Batch, behaviour_logprobs, scalar_rewards_of

Array = jax.Array
sg = jax.lax.stop_gradient



def _group_softmax(logits: Array, member: Array, group_ids: Array,
                   num_groups: int, axis_name=None) -> Array:
  """``exp(l_i) / sum_{j in g(i), member} exp(l_j)`` on members, else 0."""
  masked = jnp.where(member, logits, -jnp.inf)
  lse = groups.broadcast(groups.group_logsumexp(masked, group_ids,
                                                num_groups, axis_name),
                         group_ids)
  safe = jnp.where(member & jnp.isfinite(lse), lse, 0.0)
  return jnp.where(member, jnp.exp(jnp.where(member, logits, 0.0) - safe),
                   0.0)


# --- Kimi k1.5 length reward --------------------------------------------------


def kimi_length_reward(correct: Array, lengths: Array, group_ids: Array,
                       num_groups: int, *, valid: Array | None = None,
                       axis_name=None) -> Array:
  """Kimi k1.5's length reward ``[B]``.

  With ``lambda_i = 0.5 - (|y_i| - min_g) / (max_g - min_g)``, ``min_g`` and
  ``max_g`` the shortest and longest valid response of ``i``'s group, a
  correct row gets ``lambda_i`` (in ``[-0.5, 0.5]``, shorter is better) and a
  wrong row ``min(0, lambda_i)``. A group whose valid rows all have one
  length gets 0 (as open-r1's ``len_reward``); invalid rows get 0.

  Reference: "Kimi k1.5: Scaling Reinforcement Learning with LLMs",
  arXiv:2501.12599, section 2.3.3.
  """
  chex.assert_rank([correct, lengths, group_ids], 1)
  chex.assert_equal_shape([correct, lengths, group_ids])
  ok = (jnp.ones(lengths.shape, bool) if valid is None
        else valid.astype(bool))
  x = lengths.astype(jnp.float32)
  lo = groups.broadcast(groups.group_min(jnp.where(ok, x, jnp.inf),
                                         group_ids, num_groups, axis_name),
                        group_ids)
  hi = groups.broadcast(groups.group_max(jnp.where(ok, x, -jnp.inf),
                                         group_ids, num_groups, axis_name),
                        group_ids)
  lo = jnp.where(ok, lo, 0.0)
  span = jnp.where(ok, hi, 0.0) - lo
  has_span = ok & (span > 0)
  lam = jnp.where(has_span,
                  0.5 - (x - lo) / jnp.where(has_span, span, 1.0), 0.0)
  return jnp.where(correct, lam, jnp.minimum(lam, 0.0))


# --- GRPO-lambda --------------------------------------------------------------


def select_groups(accuracy: Array, nonempty: Array, *, fraction: float,
                  tau: float) -> Array:
  """Groups that keep the length penalty, ``[G]`` bool.

  A non-empty group is selected when its accuracy is at least ``tau`` and
  at least the ``k``-th largest accuracy among the non-empty groups, ``k =
  max(1, ceil(fraction * n_nonempty))`` (computed exactly for fractions
  with a denominator up to 1000; ties at the boundary are all selected, so
  the rule does not depend on the order of the groups).
  """
  chex.assert_rank([accuracy, nonempty], 1)
  n = jnp.sum(nonempty.astype(jnp.int32))
  frac = fractions.Fraction(fraction).limit_denominator(1000)
  if abs(float(frac) - fraction) <= 1e-12:  # exact integer ceil
    k = (frac.numerator * n + frac.denominator - 1) // frac.denominator
  else:
    k = jnp.ceil(fraction * n.astype(jnp.float32) - 1e-6).astype(jnp.int32)
  k = jnp.clip(k, 1, accuracy.shape[0])
  ranked = -jnp.sort(-jnp.where(nonempty, accuracy, -jnp.inf))
  kth = ranked[k - 1]
  return nonempty & (accuracy >= kth) & (accuracy >= tau)


def grpo_lambda_values(rewards: Array, lengths: Array, group_ids: Array,
                       num_groups: int, *, fraction: float = 0.5,
                       tau: float = 0.5, coef: float = 1.0,
                       valid: Array | None = None, axis_name=None) -> Array:
  """GRPO-lambda's gated reward ``[B]``.

  With ``c_i = 1[r_i > 0]`` and ``acc_g`` the share of correct rows among
  the valid rows of group ``g``, the groups of ``select_groups`` (top
  ``fraction`` of the batch's groups by accuracy, and ``acc_g >= tau``) get
  ``c_i + coef * len_i`` (``kimi_length_reward``); every other group gets
  ``c_i``. Invalid rows keep ``r_i`` and take no part in ``acc_g`` or in the
  length range.
  """
  chex.assert_rank([rewards, lengths, group_ids], 1)
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")
  if not 0.0 <= tau <= 1.0:
    raise ValueError(f"tau must lie in [0, 1], got {tau}.")
  if coef < 0:
    raise ValueError(f"coef must be >= 0, got {coef}.")
  ok = (jnp.ones(rewards.shape, bool) if valid is None
        else valid.astype(bool))
  correct = rewards > 0
  f = lambda x: x.astype(jnp.float32)  # noqa: E731
  n = groups.group_count(group_ids, num_groups, axis_name, weights=ok)
  accuracy = groups.group_pass_rate(rewards, group_ids, num_groups, valid=ok,
                                    axis_name=axis_name)
  chosen = select_groups(accuracy, n > 0, fraction=fraction, tau=tau)
  chosen = groups.broadcast(chosen, group_ids) & ok
  bonus = kimi_length_reward(correct, lengths, group_ids, num_groups,
                             valid=ok, axis_name=axis_name)
  out = f(correct) + jnp.where(chosen, coef * bonus, 0.0)
  return jnp.where(ok, out.astype(rewards.dtype), rewards)


@register("transform", "grpo_lambda_length",
          domains={"fraction": between(0, 1, low_open=True),
                   "tau": between(0, 1), "coef": at_least(0)})
@defaults_from(grpo_lambda_values)
def grpo_lambda_length_part(batch: Batch, *, fraction, tau, coef,
                            axis_name=None) -> Batch:
  """GRPO-lambda: a length penalty only for the groups of high accuracy.
  Replaces each reward by ``1[r > 0] + coef * len_i`` in the top
  ``fraction`` of the batch's groups by accuracy (share of rows with ``r >
  0``) that also reach ``acc_g >= tau``, and by ``1[r > 0]`` elsewhere;
  ``len_i`` is Kimi k1.5's length reward (``lambda_i = 0.5 - (|y_i| -
  min_g)/(max_g - min_g)`` for correct rows, ``min(0, lambda_i)`` for wrong
  ones).

  Inspired by GRPO-lambda: the paper gates a length-penalised reward by the
  group's correctness ratio with a batch-wise top-lambda selection of
  groups; the exact length reward and the value of lambda were not
  confirmed. Our choices: the length-penalised reward is Kimi k1.5's (the
  paper cites it as the typical length penalty), with ``coef = 1``; the
  selection keeps the top ``fraction = 0.5`` of the non-empty groups (ties
  at the boundary included) and also requires ``acc_g >= tau = 0.5``
  (``fraction=1`` gives a pure threshold gate, ``tau=0`` a pure top-lambda
  one). Rows with an empty mask keep their reward.

  References:
    "Stable Reinforcement Learning for Efficient Reasoning",
    arXiv:2505.18086.
    "Kimi k1.5: Scaling Reinforcement Learning with LLMs",
    arXiv:2501.12599.
  """
  r = scalar_rewards_of(batch, "grpo_lambda_length")
  new = grpo_lambda_values(r, sequence_lengths(batch.response_mask),
                           batch.group_ids, batch.groups, fraction=fraction,
                           tau=tau, coef=coef,
                           valid=valid_rows(batch.response_mask),
                           axis_name=axis_name)
  return batch.replace(rewards=new)


# --- DRPO ---------------------------------------------------------------------


def drpo_advantages(rewards: Array, lengths: Array, scores: Array,
                    group_ids: Array, num_groups: int, *, max_length: float,
                    lam: float = 0.1, tau: float = 10.0,
                    valid: Array | None = None, axis_name=None) -> Array:
  """DRPO's per-sequence advantages ``[B]``.

  In a group ``g`` with both correct (``P_g``: ``r > 0``) and wrong
  (``N_g``) valid rows, with ``n_g = |P_g| + |N_g|``:

    A_i = n_g * softmax_{P_g}(-|y|/(lam L))_i      for i in P_g
    A_j = -n_g * softmax_{N_g}(s/tau)_j             for j in N_g

  ``L`` is ``max_length``, ``s_j`` the mean per-token log-prob of row ``j``
  under the behaviour policy. Groups without both kinds of rows, and
  invalid rows, get 0. The positives' weights are the authors' ``exp((1 -
  |y|/L)/lam)`` normalised over ``P_g`` (the constant ``1/lam`` cancels).
  """
  chex.assert_rank([rewards, lengths, scores, group_ids], 1)
  if lam <= 0:
    raise ValueError(f"lam must be > 0, got {lam}.")
  if tau <= 0:
    raise ValueError(f"tau must be > 0, got {tau}.")
  if max_length <= 0:
    raise ValueError(f"max_length must be > 0, got {max_length}.")
  ok = (jnp.ones(rewards.shape, bool) if valid is None
        else valid.astype(bool))
  pos = ok & (rewards > 0)
  neg = ok & ~(rewards > 0)
  f = lambda x: x.astype(jnp.float32)  # noqa: E731
  n_pos = groups.group_sum(f(pos), group_ids, num_groups, axis_name)
  n_neg = groups.group_sum(f(neg), group_ids, num_groups, axis_name)
  mixed = groups.broadcast((n_pos > 0) & (n_neg > 0), group_ids)
  size = groups.broadcast(n_pos + n_neg, group_ids)
  x = f(lengths) / float(max_length)
  w = _group_softmax(-x / lam, pos, group_ids, num_groups, axis_name)
  q = _group_softmax(f(scores) / tau, neg, group_ids, num_groups, axis_name)
  return jnp.where(mixed, size * (w - q), 0.0)


@register("advantage", "drpo",
          domains={"lam": above(0), "tau": above(0), "max_length": above(0)})
@defaults_from(drpo_advantages)
def drpo_part(batch: Batch, *, lam, tau, max_length: float | None = None,
              axis_name=None) -> Array:
  """DRPO: length weights normalised over the correct rows only. Per-token
  advantages ``A_i = n_g softmax_{P_g}(-|y|/(lam L))_i`` on the correct rows
  ``P_g`` of a group with both outcomes, ``-n_g softmax_{N_g}(s/tau)_j`` on
  its wrong rows ``N_g`` (``s`` the mean per-token behaviour log-prob,
  ``n_g`` the group's valid rows); 0 for groups with one outcome. A correct
  row is never pushed down, however long.

  The weights are the authors' code (``compute_policy_loss_drpo``): ``exp((1
  - |y|/L)/lam)`` over the positives, ``L`` the padded response width
  (``max_length=None`` uses ``T``), the negatives' log-sum-exp at
  temperature ``tau``; defaults ``lam = 0.1``, ``tau = 10`` are their
  scripts'. As an advantage with ``surrogate="reinforce"`` (or ``ppo_clip``
  at ratio 1) and ``aggregation="seq-mean-token-mean"`` its gradient at the
  behaviour policy equals the gradient of their discriminative loss (exactly
  for equal-size groups; a group weighs ``n_g / B`` rather than ``1 /
  #groups`` when sizes differ). Differences: off-policy steps keep the
  behaviour policy's softmax over the negatives (the code recomputes it),
  and DisCO's KL trust-region penalty ``max(0, beta (kl - delta)) kl`` is
  not part of this advantage (add a KL regularizer). Correct means ``r >
  0`` (the code: ``r == 1`` positive, ``r == 0`` negative).

  References:
    "DRPO: Efficient Reasoning via Decoupled Reward Policy Optimization",
    arXiv:2510.04474, https://github.com/Optimization-AI/DRPO
  """
  r = batch.rewards
  if r.ndim != 1:
    raise ValueError("the 'drpo' advantage needs scalar Batch.rewards of"
                     f" shape [B], got {tuple(r.shape)}.")
  mask = batch.response_mask
  scores = sequence_mean(sg(behaviour_logprobs(batch)), mask)[:, 0]
  width = float(batch.length if max_length is None else max_length)
  adv = drpo_advantages(r, sequence_lengths(mask), scores, batch.group_ids,
                        batch.groups, max_length=width, lam=lam, tau=tau,
                        valid=valid_rows(mask), axis_name=axis_name)
  return per_token(adv, mask)


# --- DLER ---------------------------------------------------------------------


def dler_truncation_values(rewards: Array, lengths: Array, *,
                           max_length: int = 4000,
                           over_scale: float = 0.0) -> Array:
  """DLER's truncation reward ``[B]``: ``r_i`` if ``|y_i| <= max_length``,
  else ``over_scale * r_i``. With 0/1 rewards and ``over_scale = 0`` it is
  ``1[correct and |y| <= L]``."""
  chex.assert_rank([rewards, lengths], 1)
  if not isinstance(max_length, int) or isinstance(max_length, bool) or (
      max_length < 1):
    raise ValueError(f"max_length must be a positive int, got"
                     f" {max_length!r}.")
  if not 0.0 <= over_scale <= 1.0:
    raise ValueError(f"over_scale must lie in [0, 1], got {over_scale}.")
  over = lengths > max_length
  return jnp.where(over, jnp.asarray(over_scale, rewards.dtype) * rewards,
                   rewards)


@register("transform", "dler_truncation",
          domains={"max_length": integer(1), "over_scale": between(0, 1)})
@defaults_from(dler_truncation_values)
def dler_truncation_part(batch: Batch, *, max_length, over_scale) -> Batch:
  """DLER truncation penalty: a response longer than ``max_length`` tokens
  keeps only ``over_scale`` (default 0) of its reward.

  With 0/1 rewards this is the paper's ``r = 1[correct and |y| <= L]``. The
  released recipe gets it from the generation cap (``max_response_length =
  4000``, our default ``max_length``) and multiplies the score of responses
  that did not stop by ``0.1`` (``over_scale=0.1``); it pairs the reward
  with batch-normalised advantages (``grpo`` with ``std_scope="batch"``),
  ``ppo_clip`` with ``eps_high = 0.28`` and ``filter_zero_variance_groups``.
  The difficulty-aware length limit of the paper is not implemented.

  References:
    "DLER: Doing Length pEnalty Right - Incentivizing More Intelligence per
    Token via Reinforcement Learning", arXiv:2510.15110,
    https://github.com/NVlabs/DLER
  """
  r = scalar_rewards_of(batch, "dler_truncation")
  new = dler_truncation_values(r, sequence_lengths(batch.response_mask,
                                                   jnp.int32),
                               max_length=max_length, over_scale=over_scale)
  return batch.replace(rewards=new)


# --- FiMi-RM ------------------------------------------------------------------


def length_bias_fit(rewards: Array, lengths: Array, *, degree: int = 1,
                    ridge: float = 1e-3, valid: Array | None = None,
                    axis_name=None) -> tuple[Array, Array]:
  """Least-squares polynomial fit of the reward on the length.

  The valid rows' lengths are standardised, ``z = (|y| - mean) / std`` (``z
  = 0`` when all lengths are equal), and ``f(z) = sum_{p<=degree} b_p z^p``
  minimises ``sum_i (r_i - f(z_i))^2 + ridge * n * sum_{p>=1} b_p^2`` over
  the ``n`` valid rows (normal equations, a ``(degree+1)^2`` solve; the
  intercept is not penalised, so the residuals sum to 0). All sums are
  ``psum``-ed over ``axis_name``.

  Returns:
    ``(f(z_i) [B], mean reward of the valid rows)``.
  """
  chex.assert_rank([rewards, lengths], 1)
  if not isinstance(degree, int) or isinstance(degree, bool) or degree < 1:
    raise ValueError(f"degree must be an int >= 1, got {degree!r}.")
  if not ridge > 0:
    raise ValueError(f"ridge must be > 0, got {ridge}.")
  ok = (jnp.ones(rewards.shape, bool) if valid is None
        else valid.astype(bool))
  w = ok.astype(jnp.float32)
  r = jnp.where(ok, rewards.astype(jnp.float32), 0.0)
  x = jnp.where(ok, lengths.astype(jnp.float32), 0.0)
  n = groups.psum(jnp.sum(w), axis_name)
  mean_x = groups.psum(jnp.sum(w * x), axis_name) / jnp.maximum(n, 1.0)
  var_x = groups.psum(jnp.sum(w * (x - mean_x) ** 2), axis_name) / jnp.maximum(
      n, 1.0)
  std = jnp.sqrt(var_x)
  z = jnp.where(ok & (std > 0), (x - mean_x) / jnp.where(std > 0, std, 1.0),
                0.0)
  phi = jnp.stack([z ** p for p in range(degree + 1)], axis=-1)
  a = groups.psum(jnp.einsum("bi,b,bj->ij", phi, w, phi), axis_name)
  penalty = jnp.concatenate([jnp.zeros((1,)), jnp.ones((degree,))])
  a = a + jnp.diag(ridge * n * penalty + jnp.where(n > 0, 0.0, 1.0))
  b = groups.psum(jnp.einsum("bi,b->i", phi, w * r), axis_name)
  coef = jnp.linalg.solve(a, b)
  mean_r = groups.psum(jnp.sum(w * r), axis_name) / jnp.maximum(n, 1.0)
  return phi @ coef, mean_r


@register("transform", "fimi_length_debias",
          domains={"degree": integer(1), "ridge": above(0)})
@defaults_from(length_bias_fit)
def fimi_length_debias_part(batch: Batch, *, degree, ridge,
                            keep_mean: bool = True, axis_name=None) -> Batch:
  """FiMi-RM style length debiasing: ``r_i - f(|y_i|) (+ mean r)`` with
  ``f`` a polynomial fitted to the batch's (length, reward) pairs.

  ``f`` is the ridge least-squares polynomial of degree ``degree`` (default
  1) in the standardised length (``length_bias_fit``: intercept not
  penalised, ``ridge = 1e-3`` times the number of rows on the other
  coefficients). ``keep_mean=True`` adds back the batch's mean reward, so
  the level of the rewards is kept and only the part explained by the length
  is removed; with ``False`` the residuals have mean 0. Rows with an empty
  mask are not fitted and keep their reward; the fit is over the whole
  (possibly sharded) batch.

  Inspired by FiMi-RM: the paper fits a small network (sinusoidal length
  encoding, a two-layer ResNet) to a reward model's scores by MSE plus a
  Pearson term and folds the fitted length-reward relation back into the
  reward model. We replace the network by a closed-form polynomial fitted
  on each batch and subtract it from the reward (no reward model training).

  References:
    "Bias Fitting to Mitigate Length Bias of Reward Model in RLHF",
    arXiv:2505.12843.
  """
  r = scalar_rewards_of(batch, "fimi_length_debias")
  ok = valid_rows(batch.response_mask)
  fit, mean_r = length_bias_fit(r, sequence_lengths(batch.response_mask),
                                degree=degree, ridge=ridge, valid=ok,
                                axis_name=axis_name)
  new = r.astype(jnp.float32) - fit + (mean_r if keep_mean else 0.0)
  return batch.replace(rewards=jnp.where(ok, new.astype(r.dtype), r))


# --- RLSP ---------------------------------------------------------------------


def _step_ids(step_token) -> tuple[int, ...]:
  items = (tuple(step_token) if isinstance(step_token, (list, tuple))
           else (step_token,))
  try:
    if any(isinstance(i, bool) for i in items):
      raise TypeError
    ids = tuple(operator.index(i) for i in items)
  except TypeError:
    ids = ()
  if not ids:
    raise ValueError("step_token must be an int token id or a non-empty"
                     f" sequence of them, got {step_token!r}.")
  return ids


def step_counts(tokens: Array, mask: Array, step_token) -> Array:
  """``[B]`` int32: valid tokens whose id is in ``step_token`` (an int or a
  sequence of ints)."""
  chex.assert_rank([tokens, mask], 2)
  chex.assert_equal_shape([tokens, mask])
  ids = jnp.asarray(_step_ids(step_token), tokens.dtype)
  hit = jnp.isin(tokens, ids) & (mask > 0)
  return jnp.sum(hit.astype(jnp.int32), axis=1)


def rlsp_values(rewards: Array, steps: Array, *, coef: float = 0.01,
                max_steps: int | None = 32) -> Array:
  """``r_i + coef * min(steps_i, max_steps)`` (``max_steps=None``: no
  cap)."""
  chex.assert_rank([rewards, steps], 1)
  if coef < 0:
    raise ValueError(f"coef must be >= 0, got {coef}.")
  if max_steps is not None and (not isinstance(max_steps, int) or isinstance(
      max_steps, bool) or max_steps < 1):
    raise ValueError(f"max_steps must be a positive int or None, got"
                     f" {max_steps!r}.")
  s = steps if max_steps is None else jnp.minimum(steps, max_steps)
  return rewards + jnp.asarray(coef, rewards.dtype) * s.astype(rewards.dtype)


@register("transform", "rlsp_step_reward", reads=("tokens",),
          domains={"coef": at_least(0), "max_steps": integer(1)})
@defaults_from(rlsp_values)
def rlsp_step_reward_part(batch: Batch, *, coef, max_steps,
                          step_token: int | Sequence[int] = 198) -> Batch:
  """RLSP exploration bonus: ``r_i + coef * min(#steps_i, max_steps)``,
  ``#steps_i`` the valid tokens of row ``i`` whose id is in ``step_token``.

  Inspired by RLSP: the paper adds an exploration reward, decoupled from
  correctness, that encourages more intermediate steps before the answer
  (``r = r_correct + lambda r_explore`` in PPO); its exact form was not
  confirmed. Our choices: a step is one occurrence of a delimiter token id
  (``step_token``, an int or a list; default 198, the newline of the
  GPT-2/Qwen byte-level BPE vocabularies: set it to your tokenizer's step
  delimiter), the count is capped at ``max_steps = 32`` so the bonus cannot
  grow without bound, and ``coef = 0.01`` keeps the full bonus (0.32) below
  a correct answer's reward. Every row gets the bonus, correct or not.

  References:
    "On the Emergence of Thinking in LLMs I: Searching for the Right
    Intuition", arXiv:2502.06773.
  """
  r = scalar_rewards_of(batch, "rlsp_step_reward")
  steps = step_counts(batch.tokens, batch.response_mask, step_token)
  return batch.replace(rewards=rlsp_values(r, steps, coef=coef,
                                           max_steps=max_steps))
