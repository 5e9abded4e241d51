"""The typed, pure RL step: ``Rollout`` -> ``prepare`` -> ``update``.

One training step of ``divrl.rl.trainer.Trainer`` is:

1. **Sampling and verification** (host): a ``Rollout``, the device arrays of
   one batch of sampled, verified responses.
2. ``prepare(state, rollout, key)``: the scoring forward of the behaviour
   policy (and of the reference when needed), computing exactly the token
   statistics that ``plan`` names, then ``Objective.prepare`` (transforms,
   advantages, the carry update). Returns a ``Prepared`` batch, the new
   carry and device metrics.
3. ``update(params, opt_state, ref_params, carry, prepared, rows, key)``:
   one optimizer step on the rows ``rows`` of the prepared batch, split into
   micro-batches; each micro-batch recomputes, from the current parameters,
   the statistics the update-stage parts read.

``make_prepare`` and ``make_update`` build these pure functions; they close
over the model graph, the optimizer, the objective and the ``Plan`` only, in
the spirit of big_vision's ``update_fn``. The caller jits them.

**Compiled apart.** The trainer runs the same computation as ``SplitPrepare``
and ``SplitUpdate``: the model's programs (scoring forward; per micro-batch,
statistics forward with ``jax.vjp`` and its backward) depend only on the
model graph and the ``Plan``, and are built once per pair and shared; each
objective compiles only its own small program on the statistics (``Batch``
in, ``Aggregate`` and the statistics' cotangent out). Swapping the loss in
a sweep or a notebook recompiles no model code. The RL step benchmark times
the one-program and the split step side by side.

**What is computed** (``Plan``, from ``Objective.requires`` and the logged
metrics): every per-token statistic is a ``divrl.ops.token_statistics``
output of the policy whose log-probs ``Batch.logprobs`` holds, computed in
token chunks from the hidden states (no ``[N,V]`` logits). A statistic that
no part reads and no metric logs is not computed, and the reference forward
runs only when something reads the reference.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax import struct

from divrl import aggregation as agg
from divrl import metrics as metrics_lib
from divrl.objective import Objective
from divrl.rl.scoring import model_statistics, response_hidden
from divrl.rl.scoring import MODEL_FIELDS
from divrl.types import REFERENCE_DIVERGENCES, Batch

Array = jax.Array

@struct.dataclass
class Rollout:
  """One batch of sampled, verified responses on the device (leading ``B``).

  Attributes:
    prompt_tokens: ``[B,S]`` int32 left-padded prompts (repeated per sample).
    prompt_mask: ``[B,S]`` bool, True on real prompt tokens.
    tokens: ``[B,T]`` int32 response tokens.
    response_mask: ``[B,T]`` bool, True on response tokens (stop included).
    rollout_logprobs: ``[B,T]`` float32 log-probs the sampler drew with.
    truncated: ``[B]`` bool, no stop token within the length limit.
    rewards: ``[B]`` float32 rewards, or ``[B,K]`` reward components when the
      objective reads ``"reward_components"``.
    group_ids: ``[B]`` int32 prompt index.
    sample_source: ``[B]`` int32, 0 = policy sample, 1 = reference sample.
    solution_ids: ``[B]`` int32 canonical solution class, -1 when wrong.
    baseline_rewards: ``[B]`` float32 reward of the prompt's greedy decode,
      or None when nothing reads it.
    num_groups: static number of prompts.
  """

  prompt_tokens: Array
  prompt_mask: Array
  tokens: Array
  response_mask: Array
  rollout_logprobs: Array
  truncated: Array
  rewards: Array
  group_ids: Array
  sample_source: Array
  solution_ids: Array
  baseline_rewards: Array | None = None
  num_groups: int = struct.field(pytree_node=False, default=1)


@struct.dataclass
class Prepared:
  """A prepared batch: the objective's ``Batch`` (advantages set) plus the
  model inputs the update needs (all with leading axis ``B``).

  Attributes:
    batch: the objective's batch after ``Objective.prepare``.
    prompt_tokens: ``[B,S]`` prompts.
    prompt_mask: ``[B,S]`` prompt mask.
    ref_hidden: ``[B,T,d]`` reference hidden states, kept only when an
      update-stage part reads an exact divergence to the reference.
  """

  batch: Batch
  prompt_tokens: Array
  prompt_mask: Array
  ref_hidden: Array | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
  """Which statistics a step computes (static).

  Attributes:
    score: model fields of the prepare batch (``MODEL_FIELDS`` names).
    update: model fields recomputed per micro-batch from the current
      parameters.
    reference: run the reference forward when preparing.
    temperature: the sampling temperature (the policy is
      ``softmax(logits / temperature)``).
    top_p: nucleus of ``top_p_entropy``.
    alpha: order of ``alpha_divergence``.
    min_p: threshold of ``min_p_logprob``.
    log_entropy: report the batch's token entropy.
    log_kl_ref: report the batch's KL to the reference.
    score_policy: run the behaviour policy's forward when preparing. False
      only for an on-policy update (``on_policy_plan``): the behaviour log-probs
      are then the detached log-probs the update computes anyway
      (``types.behaviour_logprobs``), and the logged entropy and KL to the
      reference are computed in the update, from the same parameters.
    row_shards: the number of devices the rows of every model program are
      split over (the mesh's batch axes, ``data * fsdp``), so that each
      device computes the token statistics of its own rows
      (``divrl.ops.sequence_statistics``). The values do not depend on it.
  """

  score: tuple[str, ...] = ()
  update: tuple[str, ...] = ()
  reference: bool = False
  temperature: float = 1.0
  top_p: float = 0.8
  alpha: float = 0.5
  log_entropy: bool = False
  log_kl_ref: bool = False
  min_p: float = 0.02
  score_policy: bool = True
  row_shards: int = 1

  @classmethod
  def of(cls, objective: Objective, *, temperature: float = 1.0,
         top_p: float = 0.8, alpha: float = 0.5,
         log_entropy: bool = False, log_kl_ref: bool = False,
         min_p: float = 0.02, row_shards: int = 1) -> "Plan":
    """The plan that serves exactly ``objective.requires`` and the metrics."""
    req = objective.requires
    score = set(req.prepare) & set(MODEL_FIELDS)
    if "old_values" in req.inputs:
      score.add("values")
    if "old_vocab_mean_logprob" in req.inputs:
      score.add("vocab_mean_logprob")
    if "old_min_p_logprob" in req.inputs:
      score.add("min_p_logprob")
    if log_entropy:
      score.add("entropy")
    update = set(req.update) & set(MODEL_FIELDS)
    divergences = set(REFERENCE_DIVERGENCES) & (score | update)
    reference = bool(divergences or log_kl_ref or {"ref_logprobs",
                                                   "reference_samples"}
                     & req.inputs)
    order = lambda names: tuple(n for n in MODEL_FIELDS if n in names)
    return cls(order(score), order(update), reference, float(temperature),
               float(top_p), float(alpha), bool(log_entropy),
               bool(log_kl_ref), float(min_p), row_shards=int(row_shards))

  @property
  def value_head(self) -> bool:
    return "values" in self.score + self.update

  @property
  def keep_ref_hidden(self) -> bool:
    return bool(set(REFERENCE_DIVERGENCES) & set(self.update))

  @property
  def entropy_in_update(self) -> bool:
    """The logged entropy comes from the update's statistics."""
    return self.log_entropy and not self.score_policy

  @property
  def kl_ref_in_update(self) -> bool:
    """The logged KL to the reference comes from the update."""
    return self.log_kl_ref and not self.score_policy


@struct.dataclass
class Scored:
  """The scoring forward's outputs (``make_score``).

  Attributes:
    stats: ``{Batch field: array}`` of the behaviour policy: ``logprobs`` and
      the model fields ``plan.score``.
    ref_logprobs: ``[B,T]`` reference log-probs, or None without reference.
    ref_hidden: ``[B,T,d]`` reference hidden states, or None (kept only when
      an update-stage part reads an exact divergence to the reference).
  """

  stats: dict[str, Array]
  ref_logprobs: Array | None = None
  ref_hidden: Array | None = None


@struct.dataclass
class ModelInputs:
  """What the model reads to score a response (leading axis ``B``).

  Attributes:
    prompt_tokens: ``[B,S]`` prompts.
    prompt_mask: ``[B,S]`` prompt mask.
    tokens: ``[B,T]`` response tokens.
    response_mask: ``[B,T]`` response mask.
    ref_hidden: ``[B,T,d]`` reference hidden states or None.
  """

  prompt_tokens: Array
  prompt_mask: Array
  tokens: Array
  response_mask: Array
  ref_hidden: Array | None = None

  @classmethod
  def of(cls, prepared: Prepared) -> "ModelInputs":
    b = prepared.batch
    return cls(prepared.prompt_tokens, prepared.prompt_mask, b.tokens,
               b.response_mask, prepared.ref_hidden)


def make_score(graphdef, plan: Plan):
  """The scoring forward of the prepare step: model work only.

  Returns:
    ``score(params, ref_params, rollout) -> Scored``. It depends on the
    model and the plan, not on the objective: objectives with one plan share
    its compiled program. Without ``plan.score_policy`` only the reference
    runs (and nothing at all without ``plan.reference``).
  """

  def score(params, ref_params, rollout: Rollout) -> Scored:
    model = nnx.merge(graphdef, params)
    args = (rollout.prompt_tokens, rollout.prompt_mask, rollout.tokens,
            rollout.response_mask)
    ref_hidden = ref_w = ref_logprobs = None
    if plan.reference:
      ref_model = nnx.merge(graphdef, ref_params)
      ref_hidden = response_hidden(ref_model, *args)
      ref_w = ref_model.unembedding()
      ref_logprobs = model_statistics(
          ref_model, ref_hidden, rollout.tokens, rollout.response_mask, (),
          temperature=plan.temperature, top_p=plan.top_p, min_p=plan.min_p,
          alpha=plan.alpha, row_shards=plan.row_shards)["logprobs"]
    stats = {}
    if plan.score_policy:
      stats = model_statistics(
          model, response_hidden(model, *args), rollout.tokens,
          rollout.response_mask, plan.score, temperature=plan.temperature,
          top_p=plan.top_p, min_p=plan.min_p, alpha=plan.alpha,
          ref_hidden=ref_hidden, ref_unembedding=ref_w,
          row_shards=plan.row_shards)
    return Scored(stats, ref_logprobs,
                  ref_hidden if plan.keep_ref_hidden else None)

  return score


def make_objective_prepare(objective: Objective, plan: Plan):
  """The objective half of the prepare step: no model work.

  Returns:
    ``objective_prepare(scored, carry, rollout, key) -> (Prepared, carry,
    metrics)``: the ``Batch`` of ``rollout`` and ``scored``, then
    ``Objective.prepare`` (transforms, advantages, the carry update).
  """

  def objective_prepare(scored: Scored, carry, rollout: Rollout, key):
    stats = dict(scored.stats)
    old_logprobs = stats.get("logprobs")
    if not plan.score_policy:
      # On-policy (``on_policy_plan`` checked that no prepare-stage part
      # reads them): the update recomputes the log-probs, and the behaviour
      # log-probs are their detached copy. The sampler's log-probs only
      # fill the required field.
      stats["logprobs"] = rollout.rollout_logprobs
    batch = Batch(
        rewards=rollout.rewards, group_ids=rollout.group_ids,
        response_mask=rollout.response_mask, old_logprobs=old_logprobs,
        ref_logprobs=scored.ref_logprobs,
        rollout_logprobs=rollout.rollout_logprobs,
        truncated=rollout.truncated, tokens=rollout.tokens,
        sample_source=rollout.sample_source,
        solution_ids=rollout.solution_ids,
        task_ids=jnp.zeros_like(rollout.group_ids),
        baseline_rewards=rollout.baseline_rewards,
        old_values=stats.get("values"),
        old_vocab_mean_logprob=stats.get("vocab_mean_logprob"),
        old_min_p_logprob=stats.get("min_p_logprob"),
        num_groups=rollout.num_groups, **stats)
    batch, carry = objective.prepare(batch, key, carry=carry)
    mask = rollout.response_mask
    metrics = {"response_length": jnp.mean(jnp.sum(mask, axis=1)
                                           .astype(jnp.float32))}
    if plan.log_entropy and not plan.entropy_in_update:
      metrics["entropy"] = metrics_lib.token_entropy_summary(stats["entropy"],
                                                             mask)
    if plan.log_kl_ref and not plan.kl_ref_in_update:
      metrics["kl_ref"] = metrics_lib.kl_to_base(
          stats["logprobs"], scored.ref_logprobs, mask).k3
    prepared = Prepared(batch=batch, prompt_tokens=rollout.prompt_tokens,
                        prompt_mask=rollout.prompt_mask,
                        ref_hidden=scored.ref_hidden)
    return prepared, carry, metrics

  return objective_prepare


def make_prepare(graphdef, objective: Objective, plan: Plan):
  """The pure prepare step (see the module docstring): ``make_score`` then
  ``make_objective_prepare`` in one function.

  Returns:
    ``prepare(params, ref_params, carry, rollout, key) -> (Prepared, carry,
    metrics)``.
  """
  score = make_score(graphdef, plan)
  objective_prepare = make_objective_prepare(objective, plan)

  def prepare(params, ref_params, carry, rollout: Rollout, key):
    return objective_prepare(score(params, ref_params, rollout), carry,
                             rollout, key)

  return prepare


def _depends_on_first_input(closed_jaxpr) -> bool:
  """Whether any output of ``closed_jaxpr`` depends on its first input.

  Forward taint propagation over the equations; an equation with a tainted
  input taints all its outputs (conservative for sub-programs).
  """
  jaxpr = closed_jaxpr.jaxpr
  tainted = {id(jaxpr.invars[0])}
  for eqn in jaxpr.eqns:
    if any(id(v) in tainted for v in eqn.invars):
      tainted.update(id(v) for v in eqn.outvars)
  return any(id(v) in tainted for v in jaxpr.outvars)


def prepare_reads_behaviour(objective: Objective, plan: Plan,
                            rollout: Rollout, carry=None) -> bool:
  """Whether ``objective``'s prepare stage reads the behaviour policy's
  log-probs (``Batch.logprobs`` or ``old_logprobs`` before the update).

  Decided from the traced program on ``rollout``'s shapes, not from
  declarations: ``logprobs`` is a core field that parts read without
  declaring it (a KL-in-reward transform, OTB's or DRPO's advantage, a
  rejection filter). The prepared batch's own ``logprobs`` and
  ``old_logprobs`` fields, which only carry the input through, do not
  count.
  """
  probe = dataclasses.replace(plan, score=(), log_entropy=False,
                              log_kl_ref=False, score_policy=True)
  objective_prepare = make_objective_prepare(objective, probe)
  carry = objective.init_carry() if carry is None else carry
  t = rollout.tokens.shape[1]

  def outputs(logprobs, ref, rollout, carry, key):
    prepared, new_carry, metrics = objective_prepare(
        Scored({"logprobs": logprobs}, ref), carry, rollout, key)
    batch = prepared.batch.replace(logprobs=None, old_logprobs=None)
    return prepared.replace(batch=batch), new_carry, metrics

  abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
  token = jax.ShapeDtypeStruct((rollout.tokens.shape[0], t), jnp.float32)
  closed = jax.make_jaxpr(outputs)(
      token, token if plan.reference else None,
      jax.tree.map(abstract, rollout), jax.tree.map(abstract, carry),
      jax.random.key(0))
  return _depends_on_first_input(closed)


def on_policy_plan(plan: Plan, objective: Objective, rollout: Rollout,
                   carry=None) -> Plan:
  """``plan`` without the behaviour policy's scoring forward, where exact.

  When each batch gets one optimizer step (one PPO epoch, one minibatch),
  the update runs on the parameters that sampled, so the behaviour
  log-probs are the update's own log-probs, detached; the scoring forward
  of the policy repeats what the update's forward computes. This plan
  drops it: the update takes ``stop_gradient(logprobs)`` as the behaviour
  log-probs (``types.behaviour_logprobs``), and the logged entropy and KL to
  the reference come from the update's statistics (same parameters, same
  values). The reference forward stays when something reads the reference.

  The forward stays (``plan`` is returned unchanged) when the prepare stage
  reads a policy statistic (``plan.score`` beyond the logged entropy) or the
  behaviour log-probs (``prepare_reads_behaviour``).

  Args:
    plan: the plan of ``objective`` (``Plan.of``).
    objective: the objective.
    rollout: a rollout of the training shapes (values unused).
    carry: the objective's carry (default ``init_carry()``).

  Returns:
    The on-policy plan, or ``plan``.
  """
  logged = {"entropy"} if (plan.log_entropy and "entropy" not in
                           objective.requires.prepare) else set()
  if not plan.score_policy or set(plan.score) - logged:
    return plan
  if prepare_reads_behaviour(objective, plan, rollout, carry):
    return plan
  update = set(plan.update) | ({"entropy"} if plan.log_entropy else set())
  return dataclasses.replace(
      plan, score=(), score_policy=False,
      update=tuple(n for n in MODEL_FIELDS if n in update))


def _update_logs(batch: Batch, plan: Plan) -> dict[str, agg.Aggregate]:
  """The logged statistics an on-policy plan computes in the update, as
  ``Aggregate``s (so that micro-batches and devices sum exactly). The
  entropy needs nothing here: ``Objective.aggregates`` reports the
  ``entropy`` the update computes."""
  out = {}
  if plan.kl_ref_in_update:
    per_sequence = metrics_lib.kl_to_base(
        jax.lax.stop_gradient(batch.logprobs), batch.ref_logprobs,
        batch.response_mask, reduce=False).k3
    valid = jnp.any(batch.response_mask > 0, axis=1).astype(jnp.float32)
    out["kl_ref"] = agg.Aggregate(jnp.sum(per_sequence * valid),
                                  jnp.sum(valid))
  return out


def _for_update(batch: Batch, plan: Plan) -> Batch:
  """The prepare batch without model fields the update does not recompute
  (they belong to the behaviour policy; no update-stage part reads them)."""
  drop = {n: None for n in MODEL_FIELDS
          if n not in plan.update and getattr(batch, n) is not None}
  return batch.replace(**drop)


def split_micro_batches(prepared: Prepared, rows: Array, plan: Plan,
                        k: int) -> tuple[ModelInputs, Batch]:
  """The rows ``rows`` of ``prepared`` as ``k`` micro-batches: model inputs
  and objective batch, each leaf with a leading ``[k]`` axis."""
  take = lambda x: jnp.take(x, rows, axis=0)  # noqa: E731
  split = lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:])  # noqa
  mb = jax.tree.map(take, prepared.replace(
      batch=_for_update(prepared.batch, plan)))
  return (jax.tree.map(split, ModelInputs.of(mb)),
          jax.tree.map(split, mb.batch))


def make_statistics(graphdef, plan: Plan):
  """The parameter-dependent ``Batch`` fields of a micro-batch.

  Returns:
    ``statistics(params, ref_params, inputs: ModelInputs) -> {field:
    array}``: ``logprobs`` and the model fields ``plan.update`` of the
    current parameters (differentiable in ``params``).
  """

  def statistics(params, ref_params, inputs: ModelInputs):
    model = nnx.merge(graphdef, params)
    ref_w = (nnx.merge(graphdef, ref_params).unembedding()
             if plan.keep_ref_hidden else None)
    hidden = response_hidden(model, inputs.prompt_tokens, inputs.prompt_mask,
                             inputs.tokens, inputs.response_mask)
    return model_statistics(model, hidden, inputs.tokens,
                            inputs.response_mask, plan.update,
                            temperature=plan.temperature, top_p=plan.top_p,
                            min_p=plan.min_p, alpha=plan.alpha,
                            ref_hidden=inputs.ref_hidden,
                            ref_unembedding=ref_w,
                            row_shards=plan.row_shards)

  return statistics


def _apply_gradients(tx, params, opt_state, loss, grads, metrics):
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  metrics = dict(metrics)
  metrics["loss"] = loss
  metrics["grad_norm"] = optax.tree.norm(grads)
  return params, opt_state, metrics


def make_update(graphdef, tx: optax.GradientTransformation,
                objective: Objective, plan: Plan, *, micro_batches: int = 1,
                micro_sharding=None):
  """The pure update step (see the module docstring), as one program.

  ``micro_sharding``: as ``SplitUpdate``'s (on a mesh, ``P(None, batch
  axes)`` keeps each device on its share of the selected rows).

  Returns:
    ``update(params, opt_state, ref_params, carry, prepared, rows, key) ->
    (params, opt_state, metrics)``: the gradient of the rows ``rows`` of
    ``prepared`` (accumulated over ``micro_batches`` micro-batches, the loss
    normalised once) applied with ``tx``. ``SplitUpdate`` computes the same
    with the model and the objective compiled apart.
  """
  statistics = make_statistics(graphdef, plan)
  k = micro_batches

  def update(params, opt_state, ref_params, carry, prepared: Prepared, rows,
             key):
    micro = split_micro_batches(prepared, rows, plan, k)
    if micro_sharding is not None:
      micro = jax.tree.map(
          lambda x: jax.lax.with_sharding_constraint(x, micro_sharding),
          micro)

    def aggregate_fn(p, m):
      inputs, b = m
      b = b.replace(**statistics(p, ref_params, inputs))
      loss, metrics = objective.aggregates(b, key, carry=carry)
      return loss, {**metrics, **_update_logs(b, plan)}

    loss, grads, metrics = agg.micro_batched_value_and_grad(
        aggregate_fn, params, micro)
    return _apply_gradients(tx, params, opt_state, loss, grads, metrics)

  return update


# ----------------------------------------------------------------------------
# The step as separately compiled programs (what the trainer runs).
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _model_programs(graphdef, plan: Plan, k: int, micro_sharding=None):
  """The jitted model programs of one (model graph, plan, micro-batch count,
  micro-batch sharding): shared by every objective with that plan (in
  memory, so not even traced again).

  ``micro_sharding`` (a ``NamedSharding`` of the ``[k, rows/k, ...]``
  micro-batch leaves, e.g. ``P(None, ('data', 'fsdp'))``) pins the selected
  rows to the batch axes: without it, selecting rows with replicated
  indices leaves every selected row on every device, and each device then
  computes the whole minibatch."""
  statistics = make_statistics(graphdef, plan)

  def forward(params, ref_params, inputs: ModelInputs, i):
    one = jax.tree.map(lambda x: x[i], inputs)
    return jax.vjp(lambda p: statistics(p, ref_params, one), params)

  def backward(vjp, dstats):
    return vjp(dstats)[0]

  return SimpleNamespace(
      score=jax.jit(make_score(graphdef, plan)),
      select=jax.jit(functools.partial(split_micro_batches, plan=plan, k=k),
                     out_shardings=micro_sharding),
      forward=jax.jit(forward),
      backward=jax.jit(backward))


@jax.jit
def _accumulate(acc, new):
  return jax.tree.map(jnp.add, acc, new)


class SplitPrepare:
  """``make_prepare`` as two compiled programs: the scoring forward (shared
  by every objective with the same model and plan) and the objective's
  prepare. Same signature and values as ``jax.jit(make_prepare(...))``."""

  def __init__(self, graphdef, objective: Objective, plan: Plan, *,
               out_shardings=None):
    self._score = _model_programs(graphdef, plan, 1, None).score
    self._objective = jax.jit(make_objective_prepare(objective, plan),
                              out_shardings=out_shardings)

  def __call__(self, params, ref_params, carry, rollout: Rollout, key):
    return self._objective(self._score(params, ref_params, rollout), carry,
                           rollout, key)


class SplitUpdate:
  """``make_update`` as separately compiled programs, so that a new
  objective compiles only its own (small) program.

  Per micro-batch: the model's forward returns the statistics and their VJP
  (``jax.vjp``; its residuals are what one fused program keeps between its
  forward and backward passes too), the objective program returns the
  micro-batch ``Aggregate`` and the cotangent of the statistics, and the
  model's backward turns that into parameter gradients, summed over
  micro-batches; a last program normalises once and applies ``tx``. The
  model programs depend on the model and the plan only and are shared by
  every objective with that plan. Same signature and values (to float
  rounding) as ``jax.jit(make_update(...))``; ``tests/rl/test_step.py``
  checks both.

  Args:
    graphdef, tx, objective, plan, micro_batches: as ``make_update``.
    state_shardings: optional ``(param shardings, opt_state shardings)`` to
      pin the updated state to (so that feeding it back does not recompile).
    metric_sharding: optional sharding of the metrics.
    micro_sharding: optional sharding of the selected micro-batches'
      ``[k, rows/k, ...]`` leaves; on a mesh, ``P(None, batch axes)`` keeps
      each device on its share of the rows (see ``_model_programs``).
  """

  def __init__(self, graphdef, tx: optax.GradientTransformation,
               objective: Objective, plan: Plan, *, micro_batches: int = 1,
               state_shardings=None, metric_sharding=None,
               micro_sharding=None):
    self.micro_batches = k = micro_batches
    self._model = _model_programs(graphdef, plan, k, micro_sharding)

    def objective_grad(stats, batch: Batch, i, key, carry):
      b = jax.tree.map(lambda x: x[i], batch)

      def numerator(s):
        full = b.replace(**s)
        total, metrics = objective.aggregates(full, key, carry=carry)
        metrics = {**metrics, **_update_logs(full, plan)}
        return total.numerator, (total.denominator, metrics)

      (num, (den, metrics)), dstats = jax.value_and_grad(
          numerator, has_aux=True)(stats)
      return (agg.Aggregate(num, den), metrics), dstats

    def apply(params, opt_state, grads, total, metrics):
      scale = jnp.where(total.denominator > 0, total.denominator, 1.0)
      grads = jax.tree.map(lambda g: g / scale, grads)
      return _apply_gradients(tx, params, opt_state, agg.finalize(total),
                              grads, agg.finalize_tree(metrics))

    self._objective = jax.jit(objective_grad)
    out = None
    if state_shardings is not None:
      out = tuple(state_shardings) + (metric_sharding,)
    self._apply = jax.jit(apply, donate_argnums=(0, 1), out_shardings=out)

  def __call__(self, params, opt_state, ref_params, carry, prepared: Prepared,
               rows, key):
    inputs, batch = self._model.select(prepared, rows)
    acc = None
    for i in range(self.micro_batches):
      i = np.int32(i)
      stats, vjp = self._model.forward(params, ref_params, inputs, i)
      (total, metrics), dstats = self._objective(stats, batch, i, key, carry)
      grads = self._model.backward(vjp, dstats)
      new = (grads, total, metrics)
      acc = new if acc is None else _accumulate(acc, new)
    return self._apply(params, opt_state, *acc)


def _key_name(entry) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def carry_metrics(carry: Mapping[str, Any]) -> dict[str, Array]:
  """The floating scalar leaves of a carry, named ``carry/<slot>/<path>``."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(carry):
    if jnp.ndim(leaf) == 0 and jnp.issubdtype(jnp.result_type(leaf),
                                              jnp.floating):
      out["/".join(["carry"] + [_key_name(e) for e in path])] = leaf
  return out
