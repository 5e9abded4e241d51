"""divrl's side of ``scripts.bench_peers`` (runs in the project's ``.venv``).

Every bench calls divrl's public functions, the ones the trainer composes:
``divrl.models.make_sampler``, ``divrl.rl.step.SplitPrepare`` and
``SplitUpdate`` (the trainer's compiled-apart step), ``divrl.Objective``
and ``divrl.ops.token_statistics``. Benches (see ``protocol.py`` for the
specs):

* ``grpo_step``: sample a group per prompt, reward on the host, score
  (behaviour and reference log-probs), one update; phases timed apart.
* ``sampler``: the group sampler alone.
* ``token_stats`` / ``token_stats_naive``: per-token log-prob and entropy
  from hidden states, forward + backward, fused op / plain autodiff of the
  full ``[N,V]`` logits.
* ``objective``: GRPO advantage, clip, k3 KL and token-mean on fixed
  ``[B,T]`` arrays, forward + backward.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import divrl  # noqa: E402
from divrl.models import Decoder, DecoderConfig, SamplingConfig  # noqa: E402
from divrl.models import make_sampler  # noqa: E402
from divrl.models.hf import save_hf  # noqa: E402
from divrl.ops import token_statistics  # noqa: E402
from divrl.rl import step as step_lib  # noqa: E402
from divrl.types import Batch  # noqa: E402
from scripts import _bench  # noqa: E402
from scripts.peers import protocol  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _versions() -> dict[str, str | None]:
  return _bench.machine(("divrl", "jax", "jaxlib", "flax", "optax",
                         "numpy"))["versions"]


def model_config(spec) -> DecoderConfig:
  """The ``DecoderConfig`` of a ``protocol.MODEL``-style spec."""
  dtype = DTYPES[spec.get("dtype", "float32")]
  length = spec.get("prompt_len", 0) + spec.get("gen_len", 0)
  return DecoderConfig(
      vocab_size=spec["vocab_size"], hidden_size=spec["hidden_size"],
      num_layers=spec["num_layers"], num_heads=spec["num_heads"],
      num_kv_heads=spec["num_kv_heads"], head_dim=spec["head_dim"],
      intermediate_size=spec["intermediate_size"],
      rope_theta=spec["rope_theta"], rms_norm_eps=spec["rms_norm_eps"],
      tie_word_embeddings=spec["tie_word_embeddings"],
      qkv_bias=spec["qkv_bias"], dtype=dtype, param_dtype=dtype,
      max_position_embeddings=max(length, 64))


def grpo_objective(spec) -> divrl.Objective:
  """The benchmark's objective: GRPO (TRL's eps 1e-4, ddof 1), PPO clip,
  k3 KL to the reference with ``kl_coef``, token mean."""
  eps = spec["epsilon"]
  return divrl.Objective.from_config({
      "advantage": {"name": "grpo", "eps": 1e-4, "ddof": 1},
      "surrogate": {"name": "ppo_clip", "eps_low": eps, "eps_high": eps},
      "regularizers": {"kl": {"estimator": "k3", "coef": spec["kl_coef"]}},
      "aggregation": "token-mean",
  })


def random_prompts(spec, count: int) -> np.ndarray:
  rng = np.random.default_rng(spec["seed"])
  return rng.integers(1, spec["vocab_size"], size=(count, spec["prompt_len"]),
                      dtype=np.int64).astype(np.int32)


class Sampler:
  """``make_sampler`` on a random model: ``batch`` prompts, one sample
  each, exactly ``gen_len`` tokens (no stop token)."""

  def __init__(self, spec):
    self.spec = spec
    model = Decoder(model_config(spec), rngs=nnx.Rngs(spec["seed"]))
    self.graphdef, self.params = nnx.split(model)
    self.config = SamplingConfig(max_new_tokens=spec["gen_len"],
                                 num_samples=spec.get("group", 1),
                                 temperature=spec["temperature"])
    self.sampler = make_sampler(self.graphdef, self.config)
    n = spec["batch"]
    self.tokens = jnp.asarray(random_prompts(spec, n))
    self.mask = jnp.ones(self.tokens.shape, bool)
    self.calls = 0
    self.run()

  def _keys(self):
    key = jax.random.fold_in(jax.random.key(self.spec["seed"]), self.calls)
    self.calls += 1
    return jax.random.key_data(jax.random.split(key, self.tokens.shape[0]))

  def info(self):
    return {"versions": _versions(),
            "api": "divrl.models.make_sampler(graphdef, SamplingConfig("
                   f"{self.config}))"}

  def run(self):
    seconds, out = _bench.timed(lambda: self.sampler(
        self.params, self.tokens, self.mask, self._keys()))
    tokens = int(out.response_mask.sum())
    expected = self.tokens.shape[0] * self.config.num_samples * self.spec[
        "gen_len"]
    if tokens != expected:
      raise RuntimeError(f"generated {tokens} tokens, expected {expected}")
    return {"seconds": seconds, "tokens": tokens}


class GrpoStep:
  """One GRPO step from divrl's public pieces, as the trainer runs it:
  ``make_sampler`` -> host reward -> ``SplitPrepare`` (reference log-probs,
  advantages) -> ``SplitUpdate`` (one optimizer step, one micro-batch) with
  ``optax.adam``. One update per batch, so the plan is
  ``step.on_policy_plan``'s (no behaviour forward), as in the trainer;
  ``GrpoStepScored`` keeps the behaviour forward (the step before that
  change)."""

  on_policy = True

  def __init__(self, spec):
    self.spec = spec
    p, g = spec["prompts"], spec["group"]
    model = Decoder(model_config(spec), rngs=nnx.Rngs(spec["seed"]))
    self.graphdef, params = nnx.split(model)
    self.ref_params = params
    self.params = jax.tree.map(jnp.copy, params)
    self.tx = optax.adam(spec["learning_rate"])
    self.opt_state = self.tx.init(self.params)
    self.objective = grpo_objective(spec)
    self.plan = step_lib.Plan.of(self.objective,
                                 temperature=spec["temperature"])
    self.carry = self.objective.init_carry()
    self.sampling = SamplingConfig(max_new_tokens=spec["gen_len"],
                                   num_samples=g,
                                   temperature=spec["temperature"])
    self.sampler = make_sampler(self.graphdef, self.sampling)
    self.prompts = jnp.asarray(random_prompts(spec, p))
    self.prompt_mask = jnp.ones(self.prompts.shape, bool)
    self.rows = jnp.arange(p * g, dtype=jnp.int32)
    self.group_ids = jnp.asarray(np.repeat(np.arange(p, dtype=np.int32), g))
    self.calls = 0
    if self.on_policy:
      rollout, _ = self._rollout(jax.random.key(spec["seed"]))
      self.plan = step_lib.on_policy_plan(self.plan, self.objective, rollout)
    self.prepare = step_lib.SplitPrepare(self.graphdef, self.objective,
                                         self.plan)
    self.update = step_lib.SplitUpdate(self.graphdef, self.tx,
                                       self.objective, self.plan)
    self.run()   # compiles every program

  def _rollout(self, key):
    """Samples the batch and rewards it on the host."""
    prompt_keys = jax.random.key_data(jax.random.split(
        key, self.prompts.shape[0]))
    out = self.sampler(self.params, self.prompts, self.prompt_mask,
                       prompt_keys)
    rewards = np.asarray(protocol.reward(np.asarray(out.tokens).tolist()),
                         np.float32)
    rollout = step_lib.Rollout(
        prompt_tokens=out.prompt_tokens, prompt_mask=out.prompt_mask,
        tokens=out.tokens, response_mask=out.response_mask,
        rollout_logprobs=out.logprobs, truncated=out.truncated,
        rewards=jnp.asarray(rewards), group_ids=self.group_ids,
        sample_source=jnp.zeros_like(self.group_ids),
        solution_ids=jnp.full_like(self.group_ids, -1),
        num_groups=self.prompts.shape[0])
    return rollout, int(out.response_mask.sum())

  def info(self):
    return {"versions": _versions(),
            "api": "divrl.models.make_sampler, divrl.rl.step.SplitPrepare, "
                   "divrl.rl.step.SplitUpdate, optax.adam",
            "plan": str(self.plan)}

  def run(self):
    spec = self.spec
    key = jax.random.fold_in(jax.random.key(spec["seed"]), self.calls)
    self.calls += 1
    k_sample, k_prep, k_upd = jax.random.split(key, 3)
    t_sample, (rollout, tokens) = _bench.timed(lambda: self._rollout(
        k_sample))
    t_score, (prepared, carry, _) = _bench.timed(lambda: self.prepare(
        self.params, self.ref_params, self.carry, rollout, k_prep))
    t_update, (params, opt_state, metrics) = _bench.timed(
        lambda: self.update(self.params, self.opt_state, self.ref_params,
                            carry, prepared, self.rows, k_upd))
    self.params, self.opt_state, self.carry = params, opt_state, carry
    expected = int(self.rows.shape[0]) * spec["gen_len"]
    if tokens != expected:
      raise RuntimeError(f"generated {tokens} tokens, expected {expected}")
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
      raise FloatingPointError(f"non-finite loss {loss}")
    return {"seconds": t_sample + t_score + t_update,
            "phases": {"sample": t_sample, "score": t_score,
                       "update": t_update},
            "tokens": tokens, "loss": loss}


class GrpoStepScored(GrpoStep):
  """``GrpoStep`` with the behaviour policy's scoring forward kept (the
  plan without ``step.on_policy_plan``)."""

  on_policy = False


class TokenStats:
  """Per-token log-prob + entropy of ``softmax(h @ W)``, forward and
  backward of ``sum(logprob + entropy)`` in ``h [N,d]`` and ``W [d,V]``:
  ``divrl.ops.token_statistics`` (fused) or plain autodiff of the full
  ``[N,V]`` float32 logits (naive)."""

  naive = False

  def __init__(self, spec):
    dtype = DTYPES[spec.get("dtype", "float32")]
    n, d, v = spec["tokens"], spec["hidden_size"], spec["vocab_size"]
    k1, k2, k3 = jax.random.split(jax.random.key(spec["seed"]), 3)
    self.h = jax.random.normal(k1, (n, d), dtype)
    self.w = (jax.random.normal(k2, (d, v), jnp.float32) / np.sqrt(d)
              ).astype(dtype)
    self.targets = jax.random.randint(k3, (n,), 0, v)

    def loss(h, w):
      if self.naive:
        logits = jnp.dot(h, w, preferred_element_type=jnp.float32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        lp = jnp.take_along_axis(logp, self.targets[:, None], axis=-1)[:, 0]
        ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
      else:
        out = token_statistics(h, w, self.targets,
                               outputs=("logprob", "entropy"))
        lp, ent = out["logprob"], out["entropy"]
      return jnp.sum(lp) + jnp.sum(ent)

    self.fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    self.memory = _bench.compiled_memory(self.fn, self.h, self.w)
    self.run()

  def info(self):
    return {"versions": _versions(), **self.memory,
            "api": ("jax.value_and_grad of log_softmax(h @ W) (full logits)"
                    if self.naive else
                    "divrl.ops.token_statistics(outputs=('logprob', "
                    "'entropy'))")}

  def run(self):
    seconds, (value, _) = _bench.timed(lambda: self.fn(self.h, self.w))
    return {"seconds": seconds, "value": float(value), **self.memory}


class TokenStatsNaive(TokenStats):
  naive = True


class ObjectiveAlone:
  """``grpo_objective`` on ``protocol.objective_inputs``: prepare (the
  group advantage) and the loss, forward + backward in the log-probs."""

  def __init__(self, spec):
    self.spec = spec
    x = protocol.objective_inputs(spec)
    b = x["rewards"].shape[0]
    g = x["group"]
    self.objective = grpo_objective(spec)
    self.batch = Batch(
        rewards=jnp.asarray(x["rewards"]),
        group_ids=jnp.asarray(np.repeat(np.arange(b // g), g), jnp.int32),
        response_mask=jnp.asarray(x["mask"]),
        logprobs=jnp.asarray(x["logprobs"]),
        old_logprobs=jnp.asarray(x["old_logprobs"]),
        ref_logprobs=jnp.asarray(x["ref_logprobs"]), num_groups=b // g)

    def loss(logprobs, batch):
      prepared, _ = self.objective.prepare(batch)
      value, _ = self.objective(prepared.replace(logprobs=logprobs))
      return value

    self.fn = jax.jit(jax.value_and_grad(loss))
    value = float(self.fn(self.batch.logprobs, self.batch)[0])
    expected = protocol.objective_reference(spec)
    if not np.isclose(value, expected, rtol=1e-5, atol=1e-7):
      raise AssertionError(f"divrl objective {value} != reference "
                           f"{expected}")
    self.run()

  def info(self):
    return {"versions": _versions(),
            "api": "divrl.Objective.from_config(grpo eps 1e-4 ddof 1, "
                   "ppo_clip, kl k3, token-mean): prepare + __call__, "
                   "jax.value_and_grad in the log-probs"}

  def run(self):
    seconds, (value, _) = _bench.timed(
        lambda: self.fn(self.batch.logprobs, self.batch))
    return {"seconds": seconds, "loss": float(value)}


def update_objective(spec) -> divrl.Objective:
  """The update comparison's loss: GRPO (eps 1e-4, ddof 1), PPO clip, token
  mean, no KL."""
  eps = spec["epsilon"]
  return divrl.Objective.from_config({
      "advantage": {"name": "grpo", "eps": 1e-4, "ddof": 1},
      "surrogate": {"name": "ppo_clip", "eps_low": eps, "eps_high": eps},
      "aggregation": "token-mean",
  })


def update_setup(spec):
  """The update/forward benches' model and batch: a seeded ``Decoder``
  (written with ``save_hf`` to ``spec["weights_dir"]`` if given, for the
  torch side to load) and ``protocol.update_batch`` as a ``Rollout``.
  Returns ``(graphdef, params, rollout, batch)``."""
  model = Decoder(model_config(spec), rngs=nnx.Rngs(spec["seed"]))
  if spec.get("weights_dir"):
    save_hf(model, spec["weights_dir"])
  graphdef, params = nnx.split(model)
  x = protocol.update_batch(spec)
  b = x["prompts"].shape[0]
  rollout = step_lib.Rollout(
      prompt_tokens=jnp.asarray(x["prompts"]),
      prompt_mask=jnp.ones(x["prompts"].shape, bool),
      tokens=jnp.asarray(x["responses"]),
      response_mask=jnp.ones(x["responses"].shape, bool),
      rollout_logprobs=jnp.zeros(x["responses"].shape, jnp.float32),
      truncated=jnp.zeros((b,), bool), rewards=jnp.asarray(x["rewards"]),
      group_ids=jnp.asarray(np.arange(b) // spec["group"], jnp.int32),
      sample_source=jnp.zeros((b,), jnp.int32),
      solution_ids=jnp.full((b,), -1, jnp.int32),
      num_groups=b // spec["group"])
  return graphdef, params, rollout, x


class Update:
  """One optimizer step of the trainer's ``SplitUpdate`` on
  ``protocol.update_batch`` (one micro-batch, the on-policy plan: the
  behaviour log-probs are the update's own), with
  ``clip_by_global_norm`` + ``optax.adamw``. The model is written with
  ``save_hf`` to ``spec["weights_dir"]`` (if given) so that the torch side
  loads the same weights."""

  def __init__(self, spec):
    self.spec = spec = {**protocol.UPDATE, **spec}
    self.graphdef, self.params, self.rollout, x = update_setup(spec)
    b = x["prompts"].shape[0]
    self.objective = update_objective(spec)
    self.tokens = int(x["responses"].size)
    self.rows = jnp.arange(b, dtype=jnp.int32)
    self.key = jax.random.key(spec["seed"])
    plan = step_lib.Plan.of(self.objective, temperature=1.0)
    self.plan = step_lib.on_policy_plan(plan, self.objective, self.rollout)
    self.tx = optax.chain(
        optax.clip_by_global_norm(spec["max_grad_norm"]),
        optax.adamw(spec["learning_rate"], eps=1e-8,
                    weight_decay=spec["weight_decay"]))
    self.opt_state = self.tx.init(self.params)
    prepare = step_lib.SplitPrepare(self.graphdef, self.objective,
                                    self.plan)
    self.prepared, self.carry, _ = prepare(
        self.params, self.params, self.objective.init_carry(), self.rollout,
        self.key)
    advantages = np.asarray(self.prepared.batch.advantages)
    if not np.allclose(advantages, x["advantages"][:, None] *
                       np.ones_like(advantages), atol=1e-5):
      raise AssertionError("divrl's GRPO advantages differ from "
                           "protocol.update_batch's")
    self.update = step_lib.SplitUpdate(self.graphdef, self.tx,
                                       self.objective, self.plan)
    self.first = self.run()   # compiles

  def info(self):
    return {"versions": _versions(), "plan": str(self.plan),
            "first_step": {k: self.first[k] for k in ("loss", "grad_norm")},
            "api": "divrl.rl.step.SplitUpdate (forward + VJP, objective, "
                   "backward, apply) with optax.chain(clip_by_global_norm, "
                   "adamw)"}

  def run(self):
    seconds, (params, opt_state, metrics) = _bench.timed(
        lambda: self.update(self.params, self.opt_state, self.params,
                            self.carry, self.prepared, self.rows, self.key))
    self.params, self.opt_state = params, opt_state
    loss, norm = float(metrics["loss"]), float(metrics["grad_norm"])
    if not (np.isfinite(loss) and np.isfinite(norm)):
      raise FloatingPointError(f"non-finite loss {loss} or grad norm {norm}")
    return {"seconds": seconds, "tokens": self.tokens, "loss": loss,
            "grad_norm": norm}


class Forward:
  """The scoring forward alone (``step.make_score``, jitted): the response
  tokens' log-probs of ``protocol.update_batch`` under the same model as
  ``Update`` (fused token statistics, no ``[B,T,V]`` logits)."""

  def __init__(self, spec):
    self.spec = spec = {**protocol.UPDATE, **spec}
    graphdef, self.params, self.rollout, x = update_setup(spec)
    self.tokens = int(x["responses"].size)
    self.plan = step_lib.Plan.of(update_objective(spec), temperature=1.0)
    self.score = jax.jit(step_lib.make_score(graphdef, self.plan))
    self.first = self.run()

  def info(self):
    return {"versions": _versions(), "plan": str(self.plan),
            "first_step": {"logprob_sum": self.first["value"]},
            "api": "jax.jit(divrl.rl.step.make_score(graphdef, plan)): "
                   "the trainer's scoring forward"}

  def run(self):
    seconds, scored = _bench.timed(
        lambda: self.score(self.params, self.params, self.rollout))
    return {"seconds": seconds, "tokens": self.tokens,
            "value": float(jnp.sum(scored.stats["logprobs"]))}


BENCHES = {"grpo_step": GrpoStep, "grpo_step_scored": GrpoStepScored,
           "sampler": Sampler,
           "token_stats": TokenStats, "token_stats_naive": TokenStatsNaive,
           "objective": ObjectiveAlone, "update": Update,
           "forward": Forward}

if __name__ == "__main__":
  protocol.serve(BENCHES)
