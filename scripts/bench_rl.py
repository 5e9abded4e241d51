"""Benchmark of one RL step: throughput, update MFU and objective overhead.

NOT a test; not run in CI. Issue 6 asks for three numbers, all measured in one
process so that they share this machine's (noisy) load:

1. **RL step throughput.** The real ``divrl.rl.trainer.Trainer`` on a
   Countdown config (``experiments/countdown/base.py`` with 16 prompts x 8
   samples, a 20-step toy pre-training and the objective of 3. below) for the
   ``tiny`` and ``small25m`` presets (the preset's vocabulary is replaced by
   the tokenizer's, as the trainer does by default). Warm-up step(s) that
   compile (``--warmup-steps``, default 1), then median seconds of
   ``time/sample``, ``time/score`` and ``time/update`` and response tokens
   per second of the step and of each phase. The largest preset also runs
   the step as it was before ``step.on_policy_plan`` (the behaviour
   policy's scoring forward kept, ``Trainer(on_policy_plan=False)``), the
   two trainers taking their timed steps in turn: the score phase and the
   step before and after.
2. **Update MFU.** The dense float32 matmul rate of this machine (jitted
   ``a @ b``, ``2 n^3`` flops) against the model FLOP/s of the update of
   ``small25m``, both for the trainer's own batch and for a standalone batch
   of 64 sequences x (32 prompt + 32 response) tokens that goes through the
   public step functions the trainer jits (``divrl.rl.step.make_prepare``,
   ``make_update``, with the same objective, optimizer and mesh). Model
   FLOPs of a forward +
   backward pass::

     3 * (2 N_ne P + 4 L H d_h S P + 2 d V R)

   with ``N_ne`` the non-embedding parameters, ``P = rows * S`` the
   processed (prompt + response) positions, ``S`` the sequence length,
   ``L, H, d_h`` layers, heads and head size (dense ``S x S`` attention, as
   implemented), ``R = rows * T`` the response positions whose logits the
   ``d x V`` unembedding produces. A forward alone is a third of that. The
   MFU is the median over repetitions of the update rate divided by the
   matmul rate (the faster of n = 1024, 2048) measured in the same
   repetition. The trainer's phases get the same treatment, and the whole
   step's model FLOP/s adds sampling (``sampling_flops``: each prompt's
   prefill once per group, as the sampler shares it, every response
   position through the layers with causal attention over the keys before
   it, the unembedding of each generated token) and the scoring forwards
   the plan runs, over the step's time.
3. **Objective overhead.** GRPO advantages + ``high_entropy`` token weights
   + ``ppo_clip`` + ``kl`` (k3, coef 0.01) + ``token-mean``, as a share of the
   update: (a) update with that objective minus update with a minimal
   objective (``-sum(logprobs * stop_gradient(adv))``), interleaved; (b) the
   jitted objective's forward + backward on precomputed ``[B,T]`` log-probs
   alone, divided by the update time.

4. **Statistics cost.** The prepare and update steps when nothing reads a
   per-token statistic (no statistic and no reference forward are computed)
   against the same steps when one part reads every statistic the data path
   serves, and against the trainer's own plan.

5. **Compiled apart.** The trainer runs the step as ``step.SplitUpdate``
   (model programs shared across objectives with one plan, each objective
   compiled alone). The standalone update of 2. and 3. is the one-program
   ``make_update``; this section times the split update on the same batch
   (steady-state ratio, interleaved) and the first call of each for a new
   objective with the trainer's plan (what a sweep or a notebook pays).

The standalone section also times the pieces of the update (forward only,
forward + backward without optimizer, the optimizer, the fused token-stats
op) and the update with ``train.micro_batches = 4``, to locate the time.

Usage (from the repo root, about 8-9 minutes on 2 CPU cores)::

  .venv/bin/python -m scripts.bench_rl

writes ``results/rl_step.json`` and ``results/rl_step.md``.
``--render-only`` rewrites the Markdown from an existing JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import divrl  # noqa: E402
from divrl import aggregation as agg  # noqa: E402
from divrl.models import decoder  # noqa: E402
from divrl.ops import sequence_statistics  # noqa: E402
from divrl.objective import Objective  # noqa: E402
from divrl.rl import mesh as mesh_lib  # noqa: E402
from divrl.rl import scoring  # noqa: E402
from divrl.rl import step as step_lib  # noqa: E402
from divrl.rl.trainer import Trainer  # noqa: E402
from experiments.countdown import base as countdown_base  # noqa: E402
from scripts import _bench  # noqa: E402

COMMAND = ".venv/bin/python -m scripts.bench_rl"

FULL_OBJECTIVE = {
    "advantage": "grpo",
    "token_weights": {"high_entropy": {}},
    "surrogate": "ppo_clip",
    "regularizers": {"kl": {"estimator": "k3", "coef": 0.01}},
    "aggregation": "token-mean",
}
MFU_TARGET = 0.40
STEP_MFU_TARGET = 0.50     # the whole step, all phases (issue 17)
OVERHEAD_TARGET = 0.03

_log = _bench.log


def _timed(fn: Callable[[], Any]) -> float:
  """Seconds of ``fn()`` including ``block_until_ready`` of its result."""
  return _bench.timed(fn)[0]


# ----------------------------------------------------------------------------
# Machine: dense float32 matmul rate.
# ----------------------------------------------------------------------------


class Matmul:
  """A jitted ``a @ b`` of ``n x n`` float32 matrices."""

  def __init__(self, n: int):
    self.n = n
    self.a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    self.b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    self.fn = jax.jit(jnp.matmul)
    jax.block_until_ready(self.fn(self.a, self.b))

  def rate(self, repeats: int) -> float:
    """Median FLOP/s over ``repeats`` calls."""
    t = _bench.median([_timed(lambda: self.fn(self.a, self.b))
                 for _ in range(repeats)])
    return 2.0 * self.n ** 3 / t


def measure_matmul(matmuls: list[Matmul], repeats: int = 10
                   ) -> dict[str, Any]:
  """Median FLOP/s of each matmul size and the best of them."""
  out = {}
  for m in matmuls:
    out[str(m.n)] = m.rate(repeats)
    _log(f"matmul {m.n}: {out[str(m.n)] / 1e9:.1f} GFLOP/s")
  return {"flops_per_s": out, "peak_flops_per_s": max(out.values()),
          "repeats": repeats}


# ----------------------------------------------------------------------------
# FLOP model.
# ----------------------------------------------------------------------------


def model_flops(mcfg, rows: int, prompt_len: int, response_len: int, *,
                backward: bool = True) -> dict[str, float]:
  """Model FLOPs of a (forward [+ backward]) pass; see the module docstring."""
  d, v = mcfg.hidden_size, mcfg.vocab_size
  embed = v * d * (1 if mcfg.tie_word_embeddings else 2)
  n_ne = decoder.param_count(mcfg) - embed
  s = prompt_len + response_len
  positions = rows * s
  dense = 2.0 * n_ne * positions
  attention = 4.0 * mcfg.num_layers * mcfg.num_heads * mcfg.head_dim * s * (
      positions)
  head = 2.0 * d * v * rows * response_len
  mult = 3.0 if backward else 1.0
  return {"dense": mult * dense, "attention": mult * attention,
          "unembedding": mult * head,
          "total": mult * (dense + attention + head),
          "positions": positions, "non_embedding_params": n_ne}


# ----------------------------------------------------------------------------
# 1. The real trainer.
# ----------------------------------------------------------------------------


def countdown_config(preset: str, root: str, *, num_prompts: int,
                     num_samples: int, pretrain_steps: int):
  """``experiments/countdown/base.py`` sized for a speed measurement."""
  c, _ = countdown_base.countdown_config()
  c.workdir = os.path.join(root, f"run-{preset}")
  c.task.train_size = 256
  c.task.test_size = 16
  c.task.use_tfds = False
  c.model.preset = preset
  c.base.cache_root = os.path.join(root, "bases")
  c.base.pretrain.steps = pretrain_steps
  c.base.pretrain.batch_size = 16
  c.base.pretrain.num_targets = 512
  c.sampling.num_prompts = num_prompts
  c.sampling.num_samples = num_samples
  c.objective = FULL_OBJECTIVE
  c.eval.every = 0
  c.eval.num_prompts = min(c.eval.num_prompts, c.task.test_size)
  c.checkpoint.every = 0
  c.log.progress = False
  c.log.tensorboard = False
  c.log.plot = False
  return c


def sampling_flops(mcfg, rows: int, prompt_len: int, response_len: int,
                   group: int = 1) -> float:
  """Model FLOPs of sampling ``rows`` responses, ``group`` per prompt, as
  the sampler runs them: each of the ``rows / group`` prompts prefilled
  once (``S x S`` causal attention, as implemented) and shared by its
  group's rows, then every response position through the layers with
  attention over the positions before it, and the ``d x V`` unembedding
  for each generated token."""
  d, v = mcfg.hidden_size, mcfg.vocab_size
  n_ne = decoder.param_count(mcfg) - v * d * (
      1 if mcfg.tie_word_embeddings else 2)
  s, t = prompt_len, response_len
  prompts = rows / group
  dense = 2.0 * n_ne * (prompts * s + rows * t)
  attention = 4.0 * mcfg.num_layers * mcfg.num_heads * mcfg.head_dim * (
      prompts * s * s + rows * (t * s + t * (t + 1) / 2))
  return dense + attention + 2.0 * d * v * rows * t


def _step_record(trainer, rows: int, warmup: bool) -> dict[str, Any]:
  t0 = time.perf_counter()
  m = trainer.train_step()
  rec = {k: float(m[k]) for k in ("time/sample", "time/score", "time/update",
                                  "tokens/s", "response_length")}
  rec["wall"] = time.perf_counter() - t0
  rec["response_tokens"] = rec["response_length"] * rows
  rec["warmup"] = warmup
  return rec


def _trainer_results(trainer, preset: str, history, *, on_policy_plan: bool,
                     init_s: float, warmup: int, steps: int
                     ) -> dict[str, Any]:
  rows = trainer.config.sampling.num_prompts * (
      trainer.config.sampling.num_samples)
  timed = [h for h in history if not h["warmup"]]
  mcfg = trainer.model_config
  prompt_len = trainer.prompt_width
  response_len = trainer.config.sampling.max_new_tokens
  med = {k: _bench.median([h[k] for h in timed])
         for k in ("time/sample", "time/score", "time/update", "tokens/s",
                   "response_tokens", "wall")}
  step_s = [h["time/sample"] + h["time/score"] + h["time/update"]
            for h in timed]
  per_phase = {
      name: _bench.median([h["response_tokens"] / h[f"time/{name}"] for h in timed])
      for name in ("sample", "score", "update")}
  upd = model_flops(mcfg, rows, prompt_len, response_len)
  fwd = model_flops(mcfg, rows, prompt_len, response_len, backward=False)
  forwards = int(trainer.plan.score_policy) + int(trainer.plan.reference)
  sample_fl = sampling_flops(mcfg, rows, prompt_len, response_len,
                             trainer.config.sampling.num_samples)
  step_fl = sample_fl + forwards * fwd["total"] + upd["total"]
  return {
      "preset": preset, "on_policy_plan": on_policy_plan,
      "score_forwards": forwards,
      "model_config": {k: getattr(mcfg, k) for k in (
          "vocab_size", "hidden_size", "num_layers", "num_heads",
          "num_kv_heads", "intermediate_size", "head_dim")},
      "params": decoder.param_count(mcfg),
      "non_embedding_params": upd["non_embedding_params"],
      "rows": rows, "prompt_len": prompt_len, "response_len": response_len,
      "positions_per_update": upd["positions"],
      "init_s": init_s, "warmup_steps": warmup, "timed_steps": steps,
      "history": history,
      "median_s": {"sample": med["time/sample"], "score": med["time/score"],
                   "update": med["time/update"], "step": _bench.median(step_s)},
      "step_s": step_s,
      "median_response_tokens": med["response_tokens"],
      "tokens_per_s": {"step": med["tokens/s"], **per_phase},
      "update_model_flops": upd["total"],
      "update_flops_per_s": upd["total"] / med["time/update"],
      "score_model_flops": forwards * fwd["total"],
      "score_flops_per_s": forwards * fwd["total"] / med["time/score"],
      "sample_model_flops": sample_fl,
      "sample_flops_per_s": sample_fl / med["time/sample"],
      "step_model_flops": step_fl,
      "step_flops_per_s": step_fl / _bench.median(step_s),
  }


def bench_trainer(preset: str, root: str, *, warmup: int, steps: int,
                  num_prompts: int, num_samples: int, pretrain_steps: int,
                  variants: dict[str, bool]):
  """Trainers of one preset, one per variant ``{name: on_policy_plan}``
  (``Trainer(on_policy_plan=False)`` keeps the behaviour policy's scoring
  forward: the step before that change). Each runs ``warmup`` steps, then
  the variants take their ``steps`` timed steps in turn.

  Returns ``(the first variant's trainer, {name: results})``.
  """
  config = countdown_config(preset, root, num_prompts=num_prompts,
                            num_samples=num_samples,
                            pretrain_steps=pretrain_steps)
  rows = num_prompts * num_samples
  trainers, init_s, history = {}, {}, {}
  for name, on_policy in variants.items():
    t0 = time.perf_counter()
    trainers[name] = Trainer(config, log=lambda *a: None,
                             on_policy_plan=on_policy)
    init_s[name] = time.perf_counter() - t0
    _log(f"{preset}/{name}: trainer built in {init_s[name]:.1f}s (incl. "
         f"{pretrain_steps}-step pre-training, cached after the first)")
    history[name] = [_step_record(trainers[name], rows, True)
                     for _ in range(warmup)]
  for i in range(steps):
    for name, trainer in trainers.items():
      rec = _step_record(trainer, rows, False)
      history[name].append(rec)
      _log(f"{preset}/{name} step {i}: sample {rec['time/sample']:.3f}s "
           f"score {rec['time/score']:.3f}s update "
           f"{rec['time/update']:.3f}s  {rec['tokens/s']:.0f} tok/s")
  results = {name: _trainer_results(
      trainers[name], preset, history[name], on_policy_plan=on_policy,
      init_s=init_s[name], warmup=warmup, steps=steps)
             for name, on_policy in variants.items()}
  first = next(iter(trainers))
  return trainers[first], results


def before_after(scored: dict[str, Any], on_policy: dict[str, Any]
                 ) -> dict[str, Any]:
  """The step with the behaviour forward (before) against without (after):
  phase medians and the per-step ratio, steps taken in turn."""
  out = {"score_s": [scored["median_s"]["score"],
                     on_policy["median_s"]["score"]],
         "step_s": [scored["median_s"]["step"], on_policy["median_s"]["step"]],
         "step_ratio": _bench.paired_ratios(scored["step_s"],
                                            on_policy["step_s"])}
  return out


# ----------------------------------------------------------------------------
# 2./3. Standalone update on a realistic batch, from the trainer's pieces.
# ----------------------------------------------------------------------------


class MinimalObjective:
  """``-sum(logprobs * stop_gradient(adv))`` with no metrics (a baseline).

  Duck-typed for ``step.make_update``: it only needs ``aggregates``.
  """

  def aggregates(self, batch, key=None, *, carry=None):
    del key, carry
    adv = jax.lax.stop_gradient(batch.advantages)
    num = -jnp.sum(jnp.where(batch.response_mask, batch.logprobs * adv, 0.0))
    return agg.Aggregate(num, jnp.zeros((), jnp.float32)), {}


# Every per-token statistic the data path can serve, read by one regularizer
# (so that XLA cannot drop any of them): the "all statistics" objective.
ALL_STATISTICS = ("entropy", "top_p_entropy", "sum_pi_squared",
                  "vocab_mean_logprob", "reverse_kl", "forward_kl", "js")


@divrl.declare(reads=ALL_STATISTICS)
def every_statistic(batch):
  return sum(getattr(batch, n) for n in ALL_STATISTICS)


def _jit_update(trainer, objective, plan, micro_batches):
  """``jax.jit(step.make_update(...))``, donating and pinning the trainer's
  state shardings so that feeding the state back does not recompile."""
  shardings = jax.tree.map(lambda x: x.sharding,
                           (trainer.state["params"],
                            trainer.state["opt_state"]))
  fn = step_lib.make_update(trainer.graphdef, trainer.tx, objective, plan,
                            micro_batches=micro_batches)
  return jax.jit(fn, donate_argnums=(0, 1), out_shardings=shardings + (
      mesh_lib.replicated(trainer.mesh),))


def _split_update(trainer, objective, plan, micro_batches):
  """``step.SplitUpdate`` (what the trainer runs), with the trainer's state
  shardings."""
  shardings = jax.tree.map(lambda x: x.sharding,
                           (trainer.state["params"],
                            trainer.state["opt_state"]))
  return step_lib.SplitUpdate(
      trainer.graphdef, trainer.tx, objective, plan,
      micro_batches=micro_batches, state_shardings=shardings,
      metric_sharding=mesh_lib.replicated(trainer.mesh))


def synthetic_rollout(trainer, rows: int, group: int, prompt_len: int,
                      response_len: int, seed: int = 0) -> step_lib.Rollout:
  """A ``step.Rollout`` shaped like the trainer's (random tokens)."""
  rng = np.random.default_rng(seed)
  vocab = trainer.model_config.vocab_size
  pad = trainer.tokenizer.pad_id
  plen = rng.integers(prompt_len // 2, prompt_len + 1, size=rows)
  pmask = np.arange(prompt_len)[None] >= prompt_len - plen[:, None]
  ptoks = np.where(pmask, rng.integers(3, vocab, (rows, prompt_len)), pad)
  rlen = rng.integers(response_len // 4, response_len + 1, size=rows)
  rmask = np.arange(response_len)[None] < rlen[:, None]
  toks = np.where(rmask, rng.integers(3, vocab, (rows, response_len)), pad)
  host = {
      "prompt_tokens": ptoks.astype(np.int32), "prompt_mask": pmask,
      "tokens": toks.astype(np.int32), "response_mask": rmask,
      "rollout_logprobs": np.zeros((rows, response_len), np.float32),
      "truncated": rlen == response_len,
      "rewards": rng.integers(0, 2, rows).astype(np.float32),
      "group_ids": np.repeat(np.arange(rows // group, dtype=np.int32), group),
      "sample_source": np.zeros(rows, np.int32),
      "solution_ids": np.full(rows, -1, np.int32),
  }
  return step_lib.Rollout(num_groups=rows // group,
                          **mesh_lib.put_batch(host, trainer.mesh))


def bench_standalone(trainer, *, rows: int, group: int, prompt_len: int,
                     response_len: int, repeats: int,
                     matmuls: list[Matmul],
                     micro_batches: tuple[int, ...]) -> dict[str, Any]:
  """Times the public step functions and their pieces on a synthetic batch.

  ``step.make_prepare`` and ``step.make_update`` (the functions the trainer
  jits) for the trainer's objective, a minimal objective, and the
  statistics cost: the same steps when nothing reads a statistic (plan of
  the minimal objective, no reference forward) against a plan that serves
  every statistic of ``ALL_STATISTICS`` (one part reads them all).
  """

  mesh = trainer.mesh
  graphdef = trainer.graphdef
  temperature = float(trainer.config.sampling.temperature)
  rollout = synthetic_rollout(trainer, rows, group, prompt_len, response_len)
  key = jax.random.key(123)
  params = trainer.state["params"]
  ref_params = trainer.state["ref_params"]
  carry = trainer.state["carry"]

  def copy_tree(tree):
    return jax.tree.map(jnp.copy, tree)

  def forward(params, r):
    model = nnx.merge(graphdef, params)
    hidden = scoring.response_hidden(model, r.prompt_tokens, r.prompt_mask,
                                     r.tokens, r.response_mask)
    return scoring.model_statistics(model, hidden, r.tokens, r.response_mask,
                                    ("entropy",), temperature=temperature)

  fwd = jax.jit(forward)
  compile_s = {}
  t0 = time.perf_counter()
  jax.block_until_ready(fwd(params, rollout))
  compile_s["forward"] = time.perf_counter() - t0

  # Prepare: the trainer's plan, and the two ends of the statistics cost:
  # one objective with a part that reads every statistic, the same one
  # without it.
  none_objective = divrl.build("grpo", "ppo_clip", aggregation="token-mean")
  minimal_plan = step_lib.Plan.of(none_objective, temperature=temperature)
  all_objective = divrl.build(
      "grpo", "ppo_clip", aggregation="token-mean",
      regularizers=[divrl.regularizer(every_statistic, coef=1e-3,
                                      label="every_statistic")])
  all_plan = step_lib.Plan.of(all_objective, temperature=temperature)
  prepares = {
      "trainer": jax.jit(step_lib.make_prepare(graphdef, trainer.objective,
                                               trainer.plan)),
      "no_statistics": jax.jit(step_lib.make_prepare(
          graphdef, none_objective, minimal_plan)),
      "all_statistics": jax.jit(step_lib.make_prepare(
          graphdef, all_objective, all_plan)),
  }
  prepared = {}
  for name, fn in prepares.items():
    t0 = time.perf_counter()
    prepared[name] = jax.block_until_ready(
        fn(params, ref_params, carry, rollout, jax.random.fold_in(key, 1)))[0]
    compile_s[f"prepare_{name}"] = time.perf_counter() - t0
  batch = prepared["trainer"].batch
  if batch.entropy is None:    # the on-policy plan computes it in the update
    batch = batch.replace(entropy=fwd(params, rollout)["entropy"])
  row_ids = mesh_lib.put(np.arange(rows, dtype=np.int32),
                         mesh_lib.replicated(mesh))
  adv = batch.advantages

  def minimal_grad(params, r):
    def loss(p):
      return -jnp.sum(forward(p, r)["logprobs"] * adv)
    return jax.value_and_grad(loss)(params)

  fwd_bwd = jax.jit(minimal_grad)
  t0 = time.perf_counter()
  jax.block_until_ready(fwd_bwd(params, rollout))
  compile_s["forward_backward"] = time.perf_counter() - t0

  # Optimizer alone (clip + adamw on parameter-shaped gradients).
  tx = trainer.tx

  def opt_step(grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_fn = jax.jit(opt_step)
  opt_state = trainer.state["opt_state"]
  fake_grads = jax.tree.map(lambda x: 1e-3 * x, params)
  jax.block_until_ready(opt_fn(fake_grads, opt_state, params))

  # The fused token-stats op alone (forward + backward w.r.t. h and W).
  model = nnx.merge(graphdef, params)
  w = model.unembedding()
  hid = jax.random.normal(jax.random.key(2),
                          (rows, response_len, w.shape[0]), jnp.float32)

  def tok_loss(h, w):
    out = sequence_statistics(h, w, batch.tokens, batch.response_mask,
                              outputs=("logprob", "entropy"),
                              temperature=temperature)
    return jnp.sum(out["logprob"] * adv)

  tok_fn = jax.jit(jax.value_and_grad(tok_loss, argnums=(0, 1)))
  jax.block_until_ready(tok_fn(hid, w))

  # The objective alone on precomputed [B,T] log-probs (forward + backward).
  def objective_fn(objective):
    def loss(lp):
      b = batch.replace(logprobs=lp)
      total, metrics = objective.aggregates(b, key)
      return agg.finalize(total), metrics
    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    jax.block_until_ready(f(batch.logprobs))
    return f

  obj_full = objective_fn(trainer.objective)
  obj_min = objective_fn(MinimalObjective())
  inner = 20   # the objective alone takes ~ms: time `inner` calls at once

  def time_inner(f, *args):
    def run():
      out = None
      for _ in range(inner):
        out = f(*args)
      return out
    return _timed(run) / inner

  # Updates: the trainer's objective, the minimal one, micro-batching, and
  # the statistics cost (update-stage statistics of the two plans).
  k0 = trainer.config.train.micro_batches
  variants = {
      "full": (_jit_update(trainer, trainer.objective, trainer.plan, k0),
               "trainer"),
      "minimal": (_jit_update(trainer, MinimalObjective(), minimal_plan, k0),
                  "trainer"),
      "no_statistics": (_jit_update(trainer, none_objective, minimal_plan,
                                    k0), "no_statistics"),
      "all_statistics": (_jit_update(trainer, all_objective, all_plan, k0),
                         "all_statistics"),
  }
  for k in micro_batches:
    if k != k0:
      variants[f"full_mb{k}"] = (_jit_update(trainer, trainer.objective,
                                             trainer.plan, k), "trainer")
  # The trainer's split step (model and objective compiled apart) on the
  # same objective: its steady-state cost against the one-program step.
  variants["split"] = (_split_update(trainer, trainer.objective,
                                     trainer.plan, k0), "trainer")
  states = {}
  for name, (fn, source) in variants.items():
    p, o = copy_tree(params), copy_tree(opt_state)
    t0 = time.perf_counter()
    p, o, _ = jax.block_until_ready(fn(p, o, ref_params, carry,
                                       prepared[source], row_ids, key))
    compile_s[f"update_{name}"] = time.perf_counter() - t0
    states[name] = (p, o)
    _log(f"standalone: update[{name}] first call "
         f"{compile_s[f'update_{name}']:.1f}s")

  # A second objective with the trainer's plan (a new Objective, as in a
  # sweep or a notebook): its first call compiles everything in one program,
  # but only the objective's program when split.
  for name, make in (("one_program", _jit_update),
                     ("split", _split_update)):
    fresh = Objective.from_config(trainer.config.objective)
    fn = make(trainer, fresh, trainer.plan, k0)
    p, o = copy_tree(params), copy_tree(opt_state)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(p, o, ref_params, carry, prepared["trainer"],
                             row_ids, key))
    compile_s[f"new_objective_{name}"] = time.perf_counter() - t0
    _log(f"standalone: new objective, {name}: first call "
         f"{compile_s[f'new_objective_{name}']:.1f}s")

  times = {k: [] for k in ["matmul_flops_per_s", "forward",
                           "forward_backward", "optimizer", "token_stats",
                           "objective_full", "objective_minimal"]
           + [f"prepare_{n}" for n in prepares]
           + [f"update_{n}" for n in variants]}
  for rep in range(repeats):
    times["matmul_flops_per_s"].append(max(m.rate(3) for m in matmuls))
    times["forward"].append(_timed(lambda: fwd(params, rollout)))
    times["forward_backward"].append(_timed(lambda: fwd_bwd(params, rollout)))
    times["optimizer"].append(
        _timed(lambda: opt_fn(fake_grads, opt_state, params)))
    times["token_stats"].append(time_inner(tok_fn, hid, w))
    times["objective_full"].append(time_inner(obj_full, batch.logprobs))
    times["objective_minimal"].append(time_inner(obj_min, batch.logprobs))
    # Alternate the order of the compared variants between repetitions.
    order = (lambda xs: xs) if rep % 2 == 0 else (lambda xs: xs[::-1])
    for name in order(list(prepares)):
      times[f"prepare_{name}"].append(_timed(lambda: prepares[name](
          params, ref_params, carry, rollout, jax.random.fold_in(key, 1))))
    for name in order(list(variants)):
      fn, source = variants[name]
      p, o = states[name]
      t0 = time.perf_counter()
      p, o, _ = jax.block_until_ready(
          fn(p, o, ref_params, carry, prepared[source], row_ids, key))
      times[f"update_{name}"].append(time.perf_counter() - t0)
      states[name] = (p, o)
    _log(f"standalone rep {rep}: " + ", ".join(
        f"{k} {v[-1]:.3g}" for k, v in times.items()))

  mcfg = trainer.model_config
  flops = model_flops(mcfg, rows, prompt_len, response_len)
  fflops = model_flops(mcfg, rows, prompt_len, response_len, backward=False)
  med = {k: _bench.median(v) for k, v in times.items()}
  mm = times["matmul_flops_per_s"]

  def per_rep(flop, name):
    return _bench.median([flop / t / r for t, r in zip(times[name], mm)])

  def ratio(a, b):
    return _bench.median([x / y for x, y in zip(times[a], times[b])])

  upd = med["update_full"]
  diffs = [(a - b) / a for a, b in zip(times["update_full"],
                                       times["update_minimal"])]
  res = {
      "rows": rows, "group": group, "prompt_len": prompt_len,
      "response_len": response_len, "positions": flops["positions"],
      "repeats": repeats, "objective_inner_calls": inner,
      "compile_or_first_call_s": compile_s,
      "times": times, "median": med,
      "model_flops": {"forward_backward": flops, "forward": fflops},
      "flops_per_s": {
          "update": flops["total"] / upd,
          "forward_backward": flops["total"] / med["forward_backward"],
          "forward": fflops["total"] / med["forward"],
      },
      "mfu": {
          "update": per_rep(flops["total"], "update_full"),
          "forward_backward": per_rep(flops["total"], "forward_backward"),
          "forward": per_rep(fflops["total"], "forward"),
      },
      "share_of_update": {
          "forward": med["forward"] / upd,
          "backward": (med["forward_backward"] - med["forward"]) / upd,
          "optimizer": med["optimizer"] / upd,
          "token_stats": med["token_stats"] / upd,
          "objective_full": med["objective_full"] / upd,
          "rest": (upd - med["forward_backward"] - med["optimizer"]) / upd,
      },
      "objective_overhead": {
          "update_difference": _bench.median(diffs),
          "update_difference_of_medians": (upd - med["update_minimal"]) / upd,
          "update_difference_per_rep": diffs,
          "objective_alone": med["objective_full"] / upd,
          "objective_alone_minus_minimal": (
              med["objective_full"] - med["objective_minimal"]) / upd,
      },
      "statistics_cost": {
          "plans": {"trainer": dataclasses.asdict(trainer.plan),
                    "no_statistics": dataclasses.asdict(minimal_plan),
                    "all_statistics": dataclasses.asdict(all_plan)},
          "prepare_all_over_none": ratio("prepare_all_statistics",
                                         "prepare_no_statistics"),
          "prepare_trainer_over_none": ratio("prepare_trainer",
                                             "prepare_no_statistics"),
          "update_all_over_none": ratio("update_all_statistics",
                                        "update_no_statistics"),
      },
      "split": {
          "update_split_over_one_program": ratio("update_split",
                                                 "update_full"),
          "new_objective_first_call_s": {
              "one_program": compile_s["new_objective_one_program"],
              "split": compile_s["new_objective_split"]},
      },
  }
  for name in variants:
    if name.startswith("full_mb"):
      res.setdefault("micro_batches", {})[name[len("full_mb"):]] = {
          "update_s": med[f"update_{name}"],
          "ratio_to_mb1": med[f"update_{name}"] / upd}
  return res


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


def _g(x: float) -> str:
  return f"{x / 1e9:.1f}"


def _pct(x: float) -> str:
  """A percentage with enough digits for small shares."""
  if abs(x) >= 0.001 or x == 0:
    return f"{100 * x:.1f}%"
  return f"{100 * x:.2g}%"


def _trainer_table(r: dict[str, Any]) -> list[str]:
  lines = ["| preset | params (non-emb.) | rows x (prompt+resp.) | resp. "
           "tokens/step | sample s | score s | update s | step s | "
           "tokens/s step | sample | score | update |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  runs = list(r["trainer"].values()) + [
      dict(t, preset=f"{t['preset']}, behaviour forward kept")
      for t in r.get("trainer_scored", {}).values()]
  for t in runs:
    s, tp = t["median_s"], t["tokens_per_s"]
    lines.append(
        f"| {t['preset']} | {t['params'] / 1e6:.2f}M "
        f"({t['non_embedding_params'] / 1e6:.2f}M) | {t['rows']} x "
        f"({t['prompt_len']}+{t['response_len']}) | "
        f"{t['median_response_tokens']:.0f} | {s['sample']:.3f} | "
        f"{s['score']:.3f} | {s['update']:.3f} | {s['step']:.3f} | "
        f"{tp['step']:.0f} | {tp['sample']:.0f} | {tp['score']:.0f} | "
        f"{tp['update']:.0f} |")
  ba = r.get("before_after")
  if ba:
    lines += ["", "The step with the behaviour policy's scoring forward "
              "(before `step.on_policy_plan`) against without it, steps "
              "taken in turn: score phase "
              f"{ba['score_s'][0]:.3f} s -> {ba['score_s'][1]:.3f} s, step "
              f"{ba['step_s'][0]:.3f} s -> {ba['step_s'][1]:.3f} s; step "
              f"time before / after {_bench.ratio_cell(ba['step_ratio'])}."]
  lines += ["", "First steps (seconds per phase; step 0 compiles):", "",
            "| preset | step | sample s | score s | update s |",
            "|---|---|---|---|---|"]
  for t in runs:
    for i, h in enumerate(t["history"][:t["warmup_steps"] + 1]):
      tag = " (warm-up)" if h["warmup"] else " (first timed)"
      lines.append(f"| {t['preset']} | {i}{tag} | {h['time/sample']:.2f} | "
                   f"{h['time/score']:.2f} | {h['time/update']:.2f} |")
  return lines


def _mfu_table(r: dict[str, Any]) -> list[str]:
  sa = r["standalone"]
  big = r["trainer"].get(sa["preset"])
  peak = r["matmul"]["peak_flops_per_s"]
  lines = ["| measurement | batch | positions | model GFLOP | seconds | "
           "GFLOP/s | MFU |", "|---|---|---|---|---|---|---|"]
  if big:
    shape = (f"{big['rows']} x ({big['prompt_len']}+{big['response_len']})")
    scored = r.get("trainer_scored", {}).get(sa["preset"])
    entries = [
        ("trainer `time/update`", big["update_model_flops"],
         big["median_s"]["update"], big["update_flops_per_s"]),
        (f"trainer `time/score` ({big['score_forwards']} forward(s))",
         big["score_model_flops"], big["median_s"]["score"],
         big["score_flops_per_s"]),
        ("trainer `time/sample` (KV-cache decode)",
         big["sample_model_flops"], big["median_s"]["sample"],
         big["sample_flops_per_s"]),
        ("trainer whole step (sample + score + update)",
         big["step_model_flops"], big["median_s"]["step"],
         big["step_flops_per_s"])]
    if scored:
      entries.append(
          ("whole step, behaviour forward kept", scored["step_model_flops"],
           scored["median_s"]["step"], scored["step_flops_per_s"]))
    for label, fl, sec, rate in entries:
      lines.append(f"| {label} | {shape} | {big['positions_per_update']} | "
                   f"{fl / 1e9:.0f} | {sec:.2f} | {_g(rate)} | "
                   f"{_pct(rate / peak)} |")
  shape = f"{sa['rows']} x ({sa['prompt_len']}+{sa['response_len']})"
  fb = sa["model_flops"]["forward_backward"]["total"]
  ff = sa["model_flops"]["forward"]["total"]
  rows = [("standalone update (`step.make_update`, full objective)",
           "update_full", "update", fb),
          ("standalone forward + backward, no optimizer",
           "forward_backward", "forward_backward", fb),
          ("standalone forward only", "forward", "forward", ff)]
  for label, key, short, fl in rows:
    lines.append(
        f"| {label} | {shape} | {sa['positions']} | {fl / 1e9:.0f} | "
        f"{sa['median'][key]:.2f} | {_g(sa['flops_per_s'][short])} | "
        f"{_pct(sa['mfu'][short])} |")
  return lines


def _pieces_table(sa: dict[str, Any]) -> list[str]:
  med, sh = sa["median"], sa["share_of_update"]
  upd = med["update_full"]
  rows = [
      ("forward (model + token stats)", med["forward"], sh["forward"]),
      ("backward (fwd+bwd minus fwd)",
       med["forward_backward"] - med["forward"], sh["backward"]),
      ("optimizer (clip + adamw + apply)", med["optimizer"],
       sh["optimizer"]),
      ("rest (update - fwd+bwd - optimizer; noisy)",
       upd - med["forward_backward"] - med["optimizer"], sh["rest"]),
      ("  inside fwd+bwd: fused token-stats op, fwd+bwd",
       med["token_stats"], sh["token_stats"]),
      ("  inside fwd+bwd: full objective, fwd+bwd", med["objective_full"],
       sh["objective_full"]),
  ]
  lines = ["| piece | seconds | share of update |", "|---|---|---|"]
  for label, sec, share in rows:
    lines.append(f"| {label} | {sec:.4g} | {_pct(share)} |")
  for k, v in sa.get("micro_batches", {}).items():
    lines.append(f"| whole update with `train.micro_batches={k}` | "
                 f"{v['update_s']:.4g} | {v['ratio_to_mb1']:.2f}x of 1 |")
  return lines


def _statistics_table(sa: dict[str, Any]) -> list[str]:
  st = sa.get("statistics_cost")
  if not st:
    return []
  med = sa["median"]
  p = st["plans"]

  def fmt(plan, stage):
    names = list(plan[stage])
    if stage == "score" and plan["reference"]:
      names.append("reference forward")
    return ", ".join(names) or "nothing"
  return [
      f"### 4. Statistics served only when read (`{sa['preset']}`, "
      "standalone batch)", "",
      "The step computes the per-token statistics the objective declares "
      "(and the logged metrics), nothing else. Three plans of the same "
      "prepare and update steps: the benchmark trainer's objective; "
      "`grpo + ppo_clip` (reads no statistic, no reference forward); and "
      "the same plus one regularizer that reads every statistic (entropy, "
      "top-p entropy, sum pi^2, vocabulary-mean log-prob, exact reverse KL, "
      "forward KL and JS to the reference). Medians of interleaved "
      "repetitions; the ratios are per repetition.", "",
      "| plan | prepare computes | update computes | prepare s | "
      "update s |",
      "|---|---|---|---|---|",
      f"| trainer | {fmt(p['trainer'], 'score')} | "
      f"{fmt(p['trainer'], 'update')} | "
      f"{med['prepare_trainer']:.4g} | {med['update_full']:.4g} |",
      f"| nothing read | {fmt(p['no_statistics'], 'score')} | "
      f"{fmt(p['no_statistics'], 'update')} | "
      f"{med['prepare_no_statistics']:.4g} | "
      f"{med['update_no_statistics']:.4g} |",
      f"| every statistic read | {fmt(p['all_statistics'], 'score')} | "
      f"{fmt(p['all_statistics'], 'update')} | "
      f"{med['prepare_all_statistics']:.4g} | "
      f"{med['update_all_statistics']:.4g} |", "",
      f"Reading every statistic costs {st['prepare_all_over_none']:.2f}x "
      "the prepare step of the plan that reads none and "
      f"{st['update_all_over_none']:.2f}x its update. In the prepare step "
      "nearly all of it is the reference forward that the exact divergences "
      "need (the statistics themselves are computed in the update, where "
      "the regularizer reads them); the trainer's plan, whose logged KL "
      "also needs the reference forward, costs "
      f"{st['prepare_trainer_over_none']:.2f}x. A plan that reads nothing "
      "runs no reference forward and no statistic."]


def _split_table(sa: dict[str, Any]) -> list[str]:
  sp = sa.get("split")
  if not sp:
    return []
  first = sp["new_objective_first_call_s"]
  return [
      "", f"### 5. Model and objective compiled apart (`{sa['preset']}`, "
      "standalone batch)", "",
      "The trainer runs the update as `step.SplitUpdate`: per micro-batch "
      "the model's forward (with `jax.vjp`), the objective's program on "
      "the statistics, the model's backward, then the optimizer. The model "
      "programs are shared by every objective with the same plan.", "",
      "| measure | one program (`make_update`) | split (`SplitUpdate`) |",
      "|---|---|---|",
      f"| steady-state update s (median) | {sa['median']['update_full']:.4g}"
      f" | {sa['median']['update_split']:.4g} |",
      "| first call for a new objective with the same plan, s | "
      f"{first['one_program']:.3g} | {first['split']:.3g} |", "",
      f"The split update takes {sp['update_split_over_one_program']:.2f}x "
      "the one-program update (median of per-repetition ratios)."]


def render_markdown(r: dict[str, Any]) -> str:
  """The ``## RL step (issue 6)`` section from the JSON results."""
  mm = r["matmul"]
  sa = r["standalone"]
  ov = sa["objective_overhead"]
  lines = [
      "## RL step (issue 6)", "",
      f"Command (from the repo root; {r['runtime_s'] / 60:.1f} min):", "",
      "```", r["command"], "```", "",
      f"Machine: {_bench.machine_line(r['machine'])} Absolute times are "
      "noisy on this machine; the ratios below are measured within this "
      "run (interleaved where they are compared). The reading of these "
      "numbers is in `docs/performance.md`.", "",
      "### Machine: dense float32 matmul (jitted `a @ b`, `2 n^3` flops)", "",
      f"| n | GFLOP/s (median of {mm['repeats']}) |", "|---|---|"]
  lines += [f"| {n} | {_g(v)} |" for n, v in mm["flops_per_s"].items()]
  lines += [
      "", "### 1. RL step throughput (real `Trainer`, Countdown, "
      f"{r['num_prompts']} prompts x {r['num_samples']} samples, full "
      "objective of 3.)", "",
      f"Median over the timed steps after {r['warmup_steps']} warm-up "
      "step(s). Tokens are response tokens (mask sum) of the step; a "
      "phase's tokens/s is those tokens over that phase's time. `step s` = "
      "sample + score + update.", ""]
  lines += _trainer_table(r)
  lines += [
      "", f"### 2. Update MFU, `{sa['preset']}`", "",
      "Model FLOPs of forward + backward = "
      "`3 * (2 N_ne P + 4 L H d_h S P + 2 d V R)`: `N_ne` non-embedding "
      "parameters, `P` processed (prompt + response) positions, `S` "
      "sequence length (dense `S x S` attention, as implemented), `R` "
      "response positions through the `d x V` unembedding; a forward alone "
      "is a third of it. MFU = model FLOP/s / jitted-matmul FLOP/s (the "
      "faster of n = 1024 and 2048). For the "
      "standalone batch (synthetic tokens, the public step functions "
      "`step.make_prepare` and `step.make_update` jitted as the trainer "
      "does, same objective, optimizer and mesh) "
      "the matmul rate is re-measured in each repetition and the median of "
      "the per-repetition ratios is reported; the trainer rows use the "
      "matmul peak of the start of the run.", ""]
  lines += _mfu_table(r)
  lines += ["", f"Where the standalone update's "
            f"{sa['median']['update_full']:.2f} s go (medians of "
            f"{sa['repeats']} interleaved repetitions):", ""]
  lines += _pieces_table(sa)
  lines += [
      "", f"### 3. Objective overhead (`{sa['preset']}`, standalone batch)",
      "", "Objective: grpo advantages, `high_entropy` token weights, "
      "`ppo_clip`, `kl` (k3, coef 0.01), `token-mean`. Minimal objective: "
      "`-sum(logprobs * stop_gradient(adv))` (no metrics).", "",
      "| method | share of update | target |", "|---|---|---|",
      "| (a) [update(full) - update(minimal)] / update(full), median over "
      "interleaved repetitions | "
      f"{_pct(ov['update_difference'])} (per repetition: "
      + ", ".join(_pct(x) for x in ov["update_difference_per_rep"])
      + f") | <= {_pct(OVERHEAD_TARGET)} |",
      "| (b) objective fwd+bwd alone on precomputed [B,T] log-probs / "
      f"update | {_pct(ov['objective_alone'])} | "
      f"<= {_pct(OVERHEAD_TARGET)} |",
      "| (b') (b) minus the minimal objective alone | "
      f"{_pct(ov['objective_alone_minus_minimal'])} | |", ""]
  lines += _statistics_table(sa)
  lines += _split_table(sa)
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# Main.
# ----------------------------------------------------------------------------


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=os.path.join(ROOT, "results",
                                                    "rl_step.json"))
  parser.add_argument("--md", default=os.path.join(ROOT, "results",
                                                   "rl_step.md"))
  parser.add_argument("--presets", default="tiny,small25m")
  parser.add_argument("--num-prompts", type=int, default=16)
  parser.add_argument("--num-samples", type=int, default=8)
  parser.add_argument("--pretrain-steps", type=int, default=20)
  parser.add_argument("--warmup-steps", type=int, default=1)
  parser.add_argument("--tiny-steps", type=int, default=5)
  parser.add_argument("--steps", type=int, default=3,
                      help="timed trainer steps of the larger presets")
  parser.add_argument("--repeats", type=int, default=3,
                      help="repetitions of the standalone measurements")
  parser.add_argument("--standalone-rows", type=int, default=64)
  parser.add_argument("--standalone-prompt", type=int, default=32)
  parser.add_argument("--standalone-response", type=int, default=32)
  parser.add_argument("--micro-batches", default="",
                      help="extra train.micro_batches values to time "
                      "(comma-separated, empty for none)")
  parser.add_argument("--render-only", action="store_true")
  args = parser.parse_args(argv)

  if args.render_only:
    with open(args.out) as f:
      res = json.load(f)
    with open(args.md, "w") as f:
      f.write(render_markdown(res))
    return

  start = time.perf_counter()
  res = {
      "command": COMMAND,
      "machine": _bench.machine(("divrl", "jax", "jaxlib", "flax", "optax",
                                 "numpy")),
      "devices": [str(d) for d in jax.devices()],
      "objective": FULL_OBJECTIVE,
      "targets": {"mfu": MFU_TARGET, "step_mfu": STEP_MFU_TARGET,
                  "objective_overhead": OVERHEAD_TARGET},
      "trainer": {},
      "num_prompts": args.num_prompts, "num_samples": args.num_samples,
      "warmup_steps": args.warmup_steps,
  }
  matmuls = [Matmul(n) for n in (1024, 2048)]
  res["matmul"] = measure_matmul(matmuls)
  root = tempfile.mkdtemp(prefix="bench_rl_")
  try:
    presets = [p for p in args.presets.split(",") if p]
    for preset in presets:
      steps = args.tiny_steps if preset == "tiny" else args.steps
      # The largest preset also runs the step before step.on_policy_plan
      # (behaviour forward kept), in alternation with the current one.
      variants = ({"on_policy": True, "scored": False}
                  if preset == presets[-1] else {"on_policy": True})
      trainer, runs = bench_trainer(
          preset, root, warmup=args.warmup_steps, steps=steps,
          num_prompts=args.num_prompts, num_samples=args.num_samples,
          pretrain_steps=args.pretrain_steps, variants=variants)
      res["trainer"][preset] = runs["on_policy"]
      if "scored" in runs:
        res["trainer_scored"] = {preset: runs["scored"]}
        res["before_after"] = before_after(runs["scored"],
                                           runs["on_policy"])
      if preset == presets[-1]:
        _log(f"standalone update on {preset}")
        mbs = tuple(int(k) for k in args.micro_batches.split(",") if k)
        res["standalone"] = bench_standalone(
            trainer, rows=args.standalone_rows, group=args.num_samples,
            prompt_len=args.standalone_prompt,
            response_len=args.standalone_response, repeats=args.repeats,
            matmuls=matmuls, micro_batches=mbs)
        res["standalone"]["preset"] = preset
      del trainer
  finally:
    shutil.rmtree(root, ignore_errors=True)
  res["runtime_s"] = time.perf_counter() - start
  res["machine"]["loadavg_end"] = list(os.getloadavg())
  _bench.write(res, args.out, args.md, render_markdown)
  _log(f"wrote {args.out} and {args.md} ({res['runtime_s'] / 60:.1f} min)")
  print(render_markdown(res))


if __name__ == "__main__":
  main()
