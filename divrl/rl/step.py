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
the spirit of big_vision's ``update_fn``. The caller jits them (the trainer
pins their shardings; the RL step benchmark times the same functions).

**What is computed** (``Plan``, from ``Objective.requires`` and the logged
metrics): every per-token statistic is a ``divrl.ops.token_statistics``
output of the policy whose log-probs ``Batch.logprobs`` holds, computed in
token chunks from the hidden states (no ``[N,V]`` logits). A statistic that
no part reads and no metric logs is not computed, and the reference forward
runs only when something reads the reference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
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
    log_entropy: report the batch's token entropy.
    log_kl_ref: report the batch's KL to the reference.
  """

  score: tuple[str, ...] = ()
  update: tuple[str, ...] = ()
  reference: bool = False
  temperature: float = 1.0
  top_p: float = 0.8
  log_entropy: bool = False
  log_kl_ref: bool = False

  @classmethod
  def of(cls, objective: Objective, *, temperature: float = 1.0,
         top_p: float = 0.8, log_entropy: bool = False,
         log_kl_ref: bool = False) -> "Plan":
    """The plan that serves exactly ``objective.requires`` and the metrics."""
    req = objective.requires
    score = set(req.prepare) & set(MODEL_FIELDS)
    if "old_values" in req.inputs:
      score.add("values")
    if log_entropy:
      score.add("entropy")
    update = set(req.update) & set(MODEL_FIELDS)
    divergences = set(REFERENCE_DIVERGENCES) & (score | update)
    reference = bool(divergences or log_kl_ref or {"ref_logprobs",
                                                   "reference_samples"}
                     & req.inputs)
    order = lambda names: tuple(n for n in MODEL_FIELDS if n in names)
    return cls(order(score), order(update), reference, float(temperature),
               float(top_p), bool(log_entropy), bool(log_kl_ref))

  @property
  def value_head(self) -> bool:
    return "values" in self.score + self.update

  @property
  def keep_ref_hidden(self) -> bool:
    return bool(set(REFERENCE_DIVERGENCES) & set(self.update))


def make_prepare(graphdef, objective: Objective, plan: Plan):
  """The pure prepare step (see the module docstring).

  Returns:
    ``prepare(params, ref_params, carry, rollout, key) -> (Prepared, carry,
    metrics)``.
  """

  def prepare(params, ref_params, carry, rollout: Rollout, key):
    model = nnx.merge(graphdef, params)
    args = (rollout.prompt_tokens, rollout.prompt_mask, rollout.tokens,
            rollout.response_mask)
    hidden = response_hidden(model, *args)
    ref_hidden = ref_w = ref_logprobs = None
    if plan.reference:
      ref_model = nnx.merge(graphdef, ref_params)
      ref_hidden = response_hidden(ref_model, *args)
      ref_w = ref_model.unembedding()
      ref_logprobs = model_statistics(
          ref_model, ref_hidden, rollout.tokens, rollout.response_mask, (),
          temperature=plan.temperature, top_p=plan.top_p)["logprobs"]
    stats = model_statistics(model, hidden, rollout.tokens,
                             rollout.response_mask, plan.score,
                             temperature=plan.temperature, top_p=plan.top_p,
                             ref_hidden=ref_hidden, ref_unembedding=ref_w)
    old = stats["logprobs"]
    batch = Batch(
        rewards=rollout.rewards, group_ids=rollout.group_ids,
        response_mask=rollout.response_mask, old_logprobs=old,
        ref_logprobs=ref_logprobs, rollout_logprobs=rollout.rollout_logprobs,
        truncated=rollout.truncated, tokens=rollout.tokens,
        sample_source=rollout.sample_source,
        solution_ids=rollout.solution_ids,
        baseline_rewards=rollout.baseline_rewards,
        old_values=stats.get("values"), num_groups=rollout.num_groups,
        **stats)
    batch, carry = objective.prepare(batch, key, carry=carry)
    mask = rollout.response_mask
    metrics = {"response_length": jnp.mean(jnp.sum(mask, axis=1)
                                           .astype(jnp.float32))}
    if plan.log_entropy:
      metrics["entropy"] = metrics_lib.token_entropy_summary(stats["entropy"],
                                                             mask)
    if plan.log_kl_ref:
      metrics["kl_ref"] = metrics_lib.kl_to_base(old, ref_logprobs, mask).k3
    prepared = Prepared(batch=batch, prompt_tokens=rollout.prompt_tokens,
                        prompt_mask=rollout.prompt_mask,
                        ref_hidden=(ref_hidden if plan.keep_ref_hidden
                                    else None))
    return prepared, carry, metrics

  return prepare


def _for_update(batch: Batch, plan: Plan) -> Batch:
  """The prepare batch without model fields the update does not recompute
  (they belong to the behaviour policy; no update-stage part reads them)."""
  drop = {n: None for n in MODEL_FIELDS
          if n not in plan.update and getattr(batch, n) is not None}
  return batch.replace(**drop)


def make_update(graphdef, tx: optax.GradientTransformation,
                objective: Objective, plan: Plan, *, micro_batches: int = 1):
  """The pure update step (see the module docstring).

  Returns:
    ``update(params, opt_state, ref_params, carry, prepared, rows, key) ->
    (params, opt_state, metrics)``: the gradient of the rows ``rows`` of
    ``prepared`` (accumulated over ``micro_batches`` micro-batches, the loss
    normalised once) applied with ``tx``.
  """

  def update(params, opt_state, ref_params, carry, prepared: Prepared, rows,
             key):
    take = lambda x: jnp.take(x, rows, axis=0)
    mb = jax.tree.map(take, prepared.replace(
        batch=_for_update(prepared.batch, plan)))
    k = micro_batches
    micro = jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k)
                                             + x.shape[1:]), mb)
    ref_w = (nnx.merge(graphdef, ref_params).unembedding()
             if plan.keep_ref_hidden else None)

    def aggregate_fn(p, m: Prepared):
      model = nnx.merge(graphdef, p)
      b = m.batch
      hidden = response_hidden(model, m.prompt_tokens, m.prompt_mask,
                               b.tokens, b.response_mask)
      stats = model_statistics(model, hidden, b.tokens, b.response_mask,
                               plan.update, temperature=plan.temperature,
                               top_p=plan.top_p, ref_hidden=m.ref_hidden,
                               ref_unembedding=ref_w)
      return objective.aggregates(b.replace(**stats), key, carry=carry)

    loss, grads, metrics = agg.micro_batched_value_and_grad(
        aggregate_fn, params, micro)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    return params, opt_state, metrics

  return update


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
