"""The RL loop: prompts -> group sampling -> rewards -> scoring -> objective
-> optax update, with evaluation, sharding, checkpoints and logging.

One training step:

1. **Prompts.** ``num_prompts`` examples from the seeded ``PromptStream``.
2. **Sampling.** ``divrl.models.sampler`` draws ``num_samples`` responses per
   prompt (one compiled call); the behaviour log-probabilities are kept as
   ``rollout_logprobs``.
3. **Rewards.** The task's verifier scores each decoded response on the host.
   With ``train.dynamic_sampling`` (DAPO, arXiv 2503.14476) groups whose
   rewards are all equal are dropped and more prompts are drawn, up to
   ``train.max_sampling_rounds`` rounds; if too few groups survive, the batch
   is topped up with dropped groups so that shapes stay static.
4. **Scoring.** One forward of the current policy gives ``old_logprobs`` and
   the token entropy; one of the reference model gives ``ref_logprobs``.
5. **Objective.** ``Objective.with_advantages`` on the whole batch (groups
   intact), then ``train.ppo_epochs`` passes over ``train.num_minibatches``
   shuffled minibatches; each minibatch's gradient is accumulated over
   ``train.micro_batches`` micro-batches (``aggregation.micro_batched_value_
   and_grad``: the loss is normalised once, so micro-batching does not change
   it) and applied with optax.
6. **Reference.** Fixed at the base model, or reset to the policy every
   ``train.ref_reset_every`` steps.

The objective is entirely ``config.objective`` (``Objective.from_config``).

Determinism and resumption: every random draw is keyed by
``fold_in(key(seed), step)``, and the prompt stream's position is saved, so a
run resumed from a checkpoint replays exactly the steps of the uninterrupted
run.

Sharding: a ``('data','fsdp','tensor')`` mesh; parameters follow their
annotations; rollout batches are split over ``('data','fsdp')``; sampling
takes replicated prompts, prefills them and splits the decode rows over
``('data','fsdp')``. Host data is identical on every process, so the
same code runs as several ``jax.distributed`` processes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from divrl import aggregation as agg
from divrl import metrics as metrics_lib
from divrl import tasks as tasks_lib
from divrl.checkpoint import Checkpointer
from divrl.models.sampler import SamplingConfig, make_sampler
from divrl.objective import Objective
from divrl.rl import data as data_lib
from divrl.rl import mesh as mesh_lib
from divrl.rl import pretrain as pretrain_lib
from divrl.rl.logging import MetricsLogger, ProgressBar
from divrl.rl.scoring import response_statistics
from divrl.types import Batch


def default_config() -> ml_collections.ConfigDict:
  """Every option of a run, with defaults; experiment files override them."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""
  c.task = ml_collections.ConfigDict(dict(
      name="countdown", kwargs={}, train_size=256, test_size=64,
      use_tfds=True, data_dir=""))
  c.model = ml_collections.ConfigDict(dict(preset="tiny", overrides={}))
  c.base = ml_collections.ConfigDict(dict(
      dir="", cache_root="runs/bases",
      pretrain=dict(steps=600, batch_size=64, learning_rate=3e-3,
                    weight_decay=0.0, num_targets=4096, skew=1.5,
                    wrong_share=0.2, max_solutions=16)))
  c.objective = ml_collections.ConfigDict(dict(
      advantage="grpo", surrogate="ppo_clip", regularizers={},
      token_weights=[], transforms=[], aggregation="token-mean"))
  c.sampling = ml_collections.ConfigDict(dict(
      num_prompts=8, num_samples=8, max_new_tokens=24, temperature=1.0,
      top_k=0, top_p=1.0, min_p=0.0))
  c.train = ml_collections.ConfigDict(dict(
      steps=20, learning_rate=1e-3, weight_decay=0.0, grad_clip=1.0,
      warmup_steps=0, ppo_epochs=1, num_minibatches=1, micro_batches=1,
      dynamic_sampling=False, max_sampling_rounds=3, ref_reset_every=0,
      stop_after=-1))
  c.eval = ml_collections.ConfigDict(dict(
      every=0, num_prompts=16, num_samples=32, split="test",
      score_rows=256))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.checkpoint = ml_collections.ConfigDict(dict(every=0, max_to_keep=2))
  c.log = ml_collections.ConfigDict(dict(tensorboard=True, progress=True,
                                         plot=True))
  return c


def objective_spec(objective_config) -> dict[str, Any]:
  """``config.objective`` as ``Objective.from_config`` input.

  ``regularizers`` may be a list of specs or a mapping ``{label: spec}``;
  the mapping form makes each term addressable from the command line
  (``--config.objective.regularizers.kl.coef=0.01``). A spec without a
  ``name`` uses its label as the registered name.
  """
  spec = (objective_config.to_dict() if hasattr(objective_config, "to_dict")
          else dict(objective_config))
  regs = spec.get("regularizers") or []
  if isinstance(regs, dict):
    spec["regularizers"] = [
        {"name": r.get("name", label), **{k: v for k, v in r.items()
                                          if k != "name"}, "label": label}
        for label, r in regs.items()]
  return spec


def make_optimizer(tc) -> optax.GradientTransformation:
  if tc.warmup_steps > 0:
    lr = optax.linear_schedule(0.0, tc.learning_rate, tc.warmup_steps)
  else:
    lr = tc.learning_rate
  parts = []
  if tc.grad_clip and tc.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(tc.grad_clip))
  parts.append(optax.adamw(lr, weight_decay=tc.weight_decay))
  return optax.chain(*parts)


@dataclasses.dataclass
class Rollout:
  """One rollout batch: device arrays plus what the host needs to report."""
  arrays: dict[str, Any]        # device, leading axis B
  correct: np.ndarray           # [B] bool
  rewards: np.ndarray           # [B]
  canonicals: list[str | None]
  num_groups: int
  response_tokens: int
  rounds: int


class Trainer:
  """Builds everything a run needs from a config; ``run()`` trains."""

  def __init__(self, config: ml_collections.ConfigDict, *,
               mesh: jax.sharding.Mesh | None = None, log=print):
    self.config = config
    self.log = log
    self.workdir = os.path.abspath(config.workdir or "runs/default")
    tc, sc = config.train, config.sampling
    self.task = tasks_lib.get_task(config.task.name,
                                   **config.task.kwargs.to_dict())
    base, self.tokenizer, self.base_path = pretrain_lib.get_or_pretrain_base(
        config, log=log)
    self.model_config = base.config
    load = functools.partial(
        data_lib.load_examples, config.task.name, config.task.kwargs,
        train_size=config.task.train_size, test_size=config.task.test_size,
        seed=config.seed, use_tfds=config.task.use_tfds,
        data_dir=config.task.data_dir or os.path.join(self.workdir, "tfds"))
    self.train_examples = load("train")
    self.eval_examples = load(config.eval.split)
    self.prompt_width = max(
        data_lib.prompt_width(self.tokenizer, self.task, self.train_examples),
        data_lib.prompt_width(self.tokenizer, self.task, self.eval_examples))
    self.stream = data_lib.PromptStream(len(self.train_examples),
                                        seed=config.seed)
    self.objective = Objective.from_config(objective_spec(config.objective))

    self.mesh = mesh or mesh_lib.make_train_mesh(**config.mesh.to_dict())
    multiple = mesh_lib.batch_size_multiple(self.mesh)
    rows = sc.num_prompts * sc.num_samples
    if rows % (multiple * tc.num_minibatches * tc.micro_batches):
      raise ValueError(
          f"sampling.num_prompts * sampling.num_samples = {rows} must be a "
          f"multiple of data*fsdp ({multiple}) * train.num_minibatches "
          f"({tc.num_minibatches}) * train.micro_batches "
          f"({tc.micro_batches})")
    if (config.eval.num_prompts * config.eval.num_samples) % multiple:
      raise ValueError("eval.num_prompts * eval.num_samples must be a "
                       f"multiple of data*fsdp ({multiple})")

    self.graphdef, base_state = nnx.split(base)
    with jax.set_mesh(self.mesh):
      self.base_params = mesh_lib.put_params(base_state, self.mesh)
    self.tx = make_optimizer(tc)
    self.root_key = jax.random.key(config.seed)
    self.state = {
        "params": self.base_params,
        "ref_params": self.base_params,
        "opt_state": self._init_opt_state(self.base_params),
        "rng": self.root_key,
    }
    self.step = 0
    eos = self.tokenizer.eos_id
    common = dict(max_new_tokens=sc.max_new_tokens, temperature=sc.temperature,
                  top_k=sc.top_k, top_p=sc.top_p, min_p=sc.min_p,
                  stop_tokens=(eos,), pad_id=self.tokenizer.pad_id)
    self.sampling_config = SamplingConfig(num_samples=sc.num_samples,
                                          **common)
    self.eval_sampling_config = SamplingConfig(
        num_samples=config.eval.num_samples, **common)
    # Data-parallel sampling: each device decodes its share of the rows.
    sampler_for = functools.partial(make_sampler, self.graphdef,
                                    mesh=self.mesh,
                                    batch_axes=mesh_lib.BATCH_AXES)
    self._train_sampler = sampler_for(self.sampling_config)
    self._eval_sampler = sampler_for(self.eval_sampling_config)
    self._score = jax.jit(functools.partial(self._score_impl,
                                            temperature=sc.temperature))
    self._prepare = jax.jit(self._prepare_impl,
                            static_argnames=("num_groups",))
    # Pin the updated state to the input shardings: otherwise GSPMD may pick
    # other output shardings and the second step recompiles.
    self._update = jax.jit(
        self._update_impl, donate_argnums=(0, 1),
        out_shardings=(self._param_shardings, self._opt_shardings,
                       mesh_lib.replicated(self.mesh)))
    self.history: list[dict[str, float]] = []

  def _init_opt_state(self, params):
    """Optimizer state on the mesh: moments like their parameters, scalars
    (step counts) replicated."""
    self._param_shardings = jax.tree.map(lambda x: x.sharding, params)
    abstract = jax.eval_shape(self.tx.init, params)
    self._opt_shardings = optax.tree_map_params(
        self.tx, lambda _, s: s, abstract, self._param_shardings,
        transform_non_params=lambda _: mesh_lib.replicated(self.mesh))
    return jax.jit(self.tx.init, out_shardings=self._opt_shardings)(params)

  # ------------------------------------------------------------------ jit --

  def _score_impl(self, params, ref_params, arrays, *, temperature):
    args = (arrays["prompt_tokens"], arrays["prompt_mask"], arrays["tokens"],
            arrays["response_mask"])
    policy = response_statistics(nnx.merge(self.graphdef, params), *args,
                                 outputs=("logprob", "entropy"),
                                 temperature=temperature)
    ref = response_statistics(nnx.merge(self.graphdef, ref_params), *args,
                              outputs=("logprob",), temperature=temperature)
    return policy["logprob"], policy["entropy"], ref["logprob"]

  def _prepare_impl(self, arrays, old, entropy, ref, key, *, num_groups):
    batch = Batch(
        logprobs=old, response_mask=arrays["response_mask"],
        rewards=arrays["rewards"], group_ids=arrays["group_ids"],
        old_logprobs=old, ref_logprobs=ref,
        rollout_logprobs=arrays["rollout_logprobs"], entropy=entropy,
        truncated=arrays["truncated"], tokens=arrays["tokens"],
        num_groups=num_groups)
    return self.objective.with_advantages(batch, key)

  def _update_impl(self, params, opt_state, batch, extras, rows, key):
    tc = self.config.train
    take = lambda x: jnp.take(x, rows, axis=0)
    mb, ex = jax.tree.map(take, batch), jax.tree.map(take, extras)
    k = tc.micro_batches
    micro = jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k)
                                             + x.shape[1:]), (mb, ex))
    temperature = self.config.sampling.temperature

    def aggregate_fn(p, m):
      b, e = m
      stats = response_statistics(
          nnx.merge(self.graphdef, p), e["prompt_tokens"], e["prompt_mask"],
          b.tokens, b.response_mask, outputs=("logprob", "entropy"),
          temperature=temperature)
      b = b.replace(logprobs=stats["logprob"], entropy=stats["entropy"])
      return self.objective.aggregates(b, key)

    loss, grads, metrics = agg.micro_batched_value_and_grad(
        aggregate_fn, params, micro)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = optax.tree.norm(grads)
    return params, opt_state, metrics

  # ------------------------------------------------------------- rollouts --

  def _keys(self, key, count):
    return jax.random.key_data(jax.random.split(key, count))

  def _sample(self, sampler, params, examples, key, num_samples):
    texts = [self.task.prompt(e) for e in examples]
    ptoks, pmask = data_lib.encode_prompts(self.tokenizer, texts,
                                           self.prompt_width)
    repl = mesh_lib.replicated(self.mesh)
    out = sampler(params, mesh_lib.put(ptoks, repl),
                  mesh_lib.put(pmask, repl),
                  mesh_lib.put(np.asarray(self._keys(key, len(examples))),
                               repl))
    host = mesh_lib.tree_to_host(out)
    verdicts = []
    for r in range(host.tokens.shape[0]):
      ids = host.tokens[r][host.response_mask[r]]
      text = self.tokenizer.decode(ids)
      verdicts.append(self.task.verify(examples[r // num_samples], text))
    return host, verdicts

  def rollout(self, step: int) -> Rollout:
    """Samples, verifies and (with dynamic sampling) filters one batch."""
    sc, tc = self.config.sampling, self.config.train
    p, g = sc.num_prompts, sc.num_samples
    step_key = jax.random.fold_in(self.root_key, step)
    kept, dropped = [], []
    rounds = 0
    max_rounds = tc.max_sampling_rounds if tc.dynamic_sampling else 1
    while len(kept) < p and rounds < max_rounds:
      idx = self.stream.next(p)
      examples = [self.train_examples[i] for i in idx]
      host, verdicts = self._sample(
          self._train_sampler, self.state["params"], examples,
          jax.random.fold_in(step_key, rounds), g)
      rounds += 1
      for j in range(p):
        rows = slice(j * g, (j + 1) * g)
        group = (host, rows, verdicts[rows])
        rewards = np.asarray([v.reward for v in verdicts[rows]])
        if tc.dynamic_sampling and np.all(rewards == rewards[0]):
          dropped.append(group)
        else:
          kept.append(group)
    groups = (kept + dropped)[:p]
    cols = {name: [] for name in ("prompt_tokens", "prompt_mask", "tokens",
                                  "response_mask", "rollout_logprobs",
                                  "truncated")}
    rewards, correct, canon = [], [], []
    for host, rows, verdicts in groups:
      cols["prompt_tokens"].append(host.prompt_tokens[rows])
      cols["prompt_mask"].append(host.prompt_mask[rows])
      cols["tokens"].append(host.tokens[rows])
      cols["response_mask"].append(host.response_mask[rows])
      cols["rollout_logprobs"].append(host.logprobs[rows])
      cols["truncated"].append(host.truncated[rows])
      rewards.extend(v.reward for v in verdicts)
      correct.extend(v.correct for v in verdicts)
      canon.extend(v.canonical for v in verdicts)
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    arrays["rewards"] = np.asarray(rewards, np.float32)
    arrays["group_ids"] = np.repeat(np.arange(p, dtype=np.int32), g)
    response_tokens = int(arrays["response_mask"].sum())
    return Rollout(arrays=mesh_lib.put_batch(arrays, self.mesh),
                   correct=np.asarray(correct), rewards=arrays["rewards"],
                   canonicals=canon, num_groups=p,
                   response_tokens=response_tokens, rounds=rounds)

  # --------------------------------------------------------------- update --

  def train_step(self) -> dict[str, float]:
    """One rollout and its updates; returns host metrics."""
    tc = self.config.train
    step = self.step
    t0 = time.perf_counter()
    ro = self.rollout(step)
    t1 = time.perf_counter()
    old, entropy, ref = self._score(self.state["params"],
                                    self.state["ref_params"], ro.arrays)
    step_key = jax.random.fold_in(self.root_key, step)
    batch = self._prepare(ro.arrays, old, entropy, ref,
                          jax.random.fold_in(step_key, 1000),
                          num_groups=ro.num_groups)
    jax.block_until_ready(batch)
    t2 = time.perf_counter()
    extras = {"prompt_tokens": ro.arrays["prompt_tokens"],
              "prompt_mask": ro.arrays["prompt_mask"]}
    b = ro.arrays["tokens"].shape[0]
    rows_per_mb = b // tc.num_minibatches
    step_metrics = []
    params, opt_state = self.state["params"], self.state["opt_state"]
    if params is self.state["ref_params"] or params is self.base_params:
      params = jax.tree.map(jnp.copy, params)   # donation must not alias
    for epoch in range(tc.ppo_epochs):
      perm = np.random.default_rng([self.config.seed, step, epoch]
                                   ).permutation(b)
      for m in range(tc.num_minibatches):
        rows = perm[m * rows_per_mb:(m + 1) * rows_per_mb].astype(np.int32)
        params, opt_state, met = self._update(
            params, opt_state, batch, extras,
            mesh_lib.put(rows, mesh_lib.replicated(self.mesh)),
            jax.random.fold_in(step_key, 2000 + epoch * 97 + m))
        step_metrics.append(met)
    self.state["params"], self.state["opt_state"] = params, opt_state
    self.step = step + 1
    if tc.ref_reset_every and self.step % tc.ref_reset_every == 0:
      self.state["ref_params"] = jax.tree.map(jnp.copy, params)
    last = mesh_lib.tree_to_host(step_metrics[-1])
    t3 = time.perf_counter()
    mask = mesh_lib.to_host(ro.arrays["response_mask"])
    ent = mesh_lib.to_host(entropy)
    oldh, refh = mesh_lib.to_host(old), mesh_lib.to_host(ref)
    out = {f"objective/{k}": float(v) for k, v in last.items()}
    out.update({
        "reward": float(np.mean(ro.rewards)),
        "pass@1": float(np.mean(ro.correct)),
        "entropy": float(metrics_lib.token_entropy_summary(ent, mask)),
        "kl_ref": float(metrics_lib.kl_to_base(oldh, refh, mask).k3),
        "response_length": float(mask.sum(1).mean()),
        "sampling_rounds": float(ro.rounds),
        "time/sample": t1 - t0, "time/score": t2 - t1, "time/update": t3 - t2,
        "tokens/s": ro.response_tokens / max(t3 - t0, 1e-9),
    })
    return out

  # ----------------------------------------------------------- evaluation --

  def evaluate(self, params=None, *, key=None) -> dict[str, Any]:
    """pass@k, accuracy, diversity, entropy and KL to the base on held-out
    prompts (``config.eval``)."""
    ec, sc = self.config.eval, self.config.sampling
    params = self.state["params"] if params is None else params
    key = jax.random.fold_in(self.root_key, 10**6) if key is None else key
    n = ec.num_samples
    examples = self.eval_examples[:ec.num_prompts]
    host, verdicts = self._sample(self._eval_sampler, params, examples, key, n)
    p = len(examples)
    correct = np.asarray([v.correct for v in verdicts]).reshape(p, n)
    rewards = np.asarray([v.reward for v in verdicts])
    canon = [[verdicts[i * n + j].canonical for j in range(n)]
             for i in range(p)]
    ks = [k for k in metrics_lib.DEFAULT_KS if k <= n]
    curve = metrics_lib.pass_at_k_curve(correct, ks)
    distinct = metrics_lib.distinct_correct(canon, correct)
    # Entropy and KL to the base, scored in chunks of rows.
    ent_sum = tok = 0.0
    k1, k3 = [], []
    rows = host.tokens.shape[0]
    chunk = max(mesh_lib.batch_size_multiple(self.mesh),
                ec.score_rows - ec.score_rows
                % mesh_lib.batch_size_multiple(self.mesh))
    for start in range(0, rows, chunk):
      sl = slice(start, min(rows, start + chunk))
      arrays = {"prompt_tokens": host.prompt_tokens[sl],
                "prompt_mask": host.prompt_mask[sl],
                "tokens": host.tokens[sl],
                "response_mask": host.response_mask[sl]}
      arrays = mesh_lib.put_batch(arrays, self.mesh)
      lp, ent, base_lp = mesh_lib.tree_to_host(self._score(
          params, self.base_params, arrays))
      mask = host.response_mask[sl]
      ent_sum += float(np.where(mask, ent, 0.0).sum())
      tok += float(mask.sum())
      kl = metrics_lib.kl_to_base(lp, base_lp, mask, reduce=False)
      k1.append(np.asarray(kl.k1))
      k3.append(np.asarray(kl.k3))
    out = {f"eval/pass@{k}": float(v) for k, v in curve.items()}
    out.update({
        "eval/accuracy": float(correct.mean()),
        "eval/mean_reward": float(rewards.mean()),
        "eval/distinct": float(distinct.mean_count),
        "eval/solution_entropy": float(distinct.mean_entropy),
        "eval/token_entropy": ent_sum / max(tok, 1.0),
        "eval/kl_base_k1": float(np.mean(np.concatenate(k1))),
        "eval/kl_base_k3": float(np.mean(np.concatenate(k3))),
    })
    if hasattr(self.task, "is_rare"):
      found = [any(c is not None and ok and self.task.is_rare(examples[i], c)
                   for c, ok in zip(canon[i], correct[i])) for i in range(p)]
      out["eval/rare_found"] = float(np.mean(found))
    del sc
    return out

  # ----------------------------------------------------------------- run --

  def _checkpointer(self):
    cc = self.config.checkpoint
    if not cc.every:
      return None
    return Checkpointer(os.path.join(self.workdir, "checkpoints"),
                        save_every=int(cc.every), max_to_keep=cc.max_to_keep)

  def _checkpoint_state(self):
    return {"params": self.state["params"],
            "ref_params": self.state["ref_params"],
            "opt_state": self.state["opt_state"],
            "rng": self.state["rng"]}

  def maybe_resume(self, ckpt) -> bool:
    if ckpt is None or ckpt.latest_step() is None:
      return False
    state, meta = ckpt.restore(target=self._checkpoint_state())
    self.state.update(state)
    self.step = int(meta["step"])
    self.stream.position = int(meta["data_position"])
    self.log(f"resumed from step {self.step} "
             f"({os.path.join(self.workdir, 'checkpoints')})")
    return True

  def run(self) -> dict[str, Any]:
    """Trains ``train.steps`` steps (resuming if a checkpoint exists),
    evaluating every ``eval.every`` steps and at the end."""
    tc, ec = self.config.train, self.config.eval
    os.makedirs(self.workdir, exist_ok=True)
    ckpt = self._checkpointer()
    self.maybe_resume(ckpt)
    is_main = jax.process_index() == 0
    logger = MetricsLogger(self.workdir, use_tensorboard=(
        self.config.log.tensorboard and is_main)) if is_main else None
    bar = (ProgressBar(tc.steps) if self.config.log.progress and is_main
           else None)
    evals = []
    if self.step == 0:
      base_eval = self.evaluate()
      evals.append((0, base_eval))
      if logger:
        logger.log(0, base_eval)
    stop_after = tc.stop_after if tc.stop_after >= 0 else tc.steps
    while self.step < min(tc.steps, stop_after):
      m = self.train_step()
      self.history.append({"step": self.step, **m})
      if logger:
        logger.log(self.step, m)
      if bar:
        bar.update(self.step, m)
      if ec.every and self.step % ec.every == 0 and self.step < tc.steps:
        e = self.evaluate()
        evals.append((self.step, e))
        if logger:
          logger.log(self.step, e)
      if ckpt is not None:
        ckpt.maybe_save(self.step, self._checkpoint_state(),
                        {"step": self.step,
                         "data_position": self.stream.position})
    if bar:
      bar.close()
    final = None
    if self.step >= tc.steps:
      final = self.evaluate()
      evals.append((self.step, final))
      if logger:
        logger.log(self.step, final)
    if ckpt is not None:
      ckpt.close()
    if logger:
      logger.close()
    return {"final": final, "evals": evals, "history": self.history,
            "workdir": self.workdir}


def pass_at_k_of(evaluation: dict[str, float]) -> dict[int, float]:
  """``{k: pass@k}`` from an ``evaluate()`` dict."""
  out = {}
  for name, value in evaluation.items():
    if name.startswith("eval/pass@"):
      out[int(name.split("@")[1])] = value
  return dict(sorted(out.items()))


def entropy_curve(result: dict[str, Any]) -> list[tuple[int, float]]:
  """``[(step, eval token entropy)]`` of a ``run()`` result."""
  return [(s, e["eval/token_entropy"]) for s, e in result["evals"]]


def log2_ks(n: int) -> list[int]:
  return [2 ** i for i in range(int(math.log2(n)) + 1)]
