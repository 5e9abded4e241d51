"""The RL loop: a thin driver of the pure step functions of ``divrl.rl.step``.

One training step:

1. **Prompts.** ``num_prompts`` examples from the seeded ``PromptStream``.
2. **Sampling.** ``divrl.models.sampler`` draws ``num_samples`` responses per
   prompt (one compiled call); with ``sampling.ref_share > 0`` that share of
   each group is drawn from the reference policy instead and marked by
   ``Batch.sample_source == 1``. When a part reads ``baseline_rewards`` the
   greedy decode of every prompt is drawn and verified too (ReMax).
3. **Rewards.** The task's verifier scores each decoded response on the host
   (reward, reward components, canonical solution). With
   ``train.dynamic_sampling`` (DAPO, arXiv 2503.14476) groups whose rewards
   are all equal are dropped and more prompts are drawn, up to
   ``train.max_sampling_rounds`` rounds; if too few groups survive, the batch
   is topped up with dropped groups so that shapes stay static.
4. ``step.prepare``: the scoring forward of the behaviour policy (and of the
   reference when something reads it), computing exactly the statistics the
   objective declares, then ``Objective.prepare`` on the whole batch (groups
   intact), which also updates the carried state of stateful parts. With
   one optimizer step per batch (one PPO epoch, one minibatch) and no
   prepare-stage part that reads the behaviour policy, the policy's
   forward is skipped: the update's own log-probs, detached, are the
   behaviour log-probs (``step.on_policy_plan``).
5. ``step.update``: ``train.ppo_epochs`` passes over ``train.num_minibatches``
   shuffled minibatches; each minibatch's gradient is accumulated over
   ``train.micro_batches`` micro-batches (the loss is normalised once, so
   micro-batching does not change it) and applied with optax.
6. **Reference.** Fixed at the base model, or reset to the policy every
   ``train.ref_reset_every`` steps.

The objective is entirely ``config.objective`` (``Objective.from_config``).
The task, the tokenizer and the base model are built once, here, and handed
to the pieces that need them. A declared input that the run cannot provide
is an error when the trainer is built (``divrl.rl.inputs``).

Determinism and resumption: every random draw is keyed by
``fold_in(key(seed), step)``, and the prompt stream's position and the carry
are saved, so a run resumed from a checkpoint replays exactly the steps of
the uninterrupted run.

Sharding: a ``('data','fsdp','tensor')`` mesh; parameters follow their
annotations; rollout batches are split over ``('data','fsdp')``; the carry
is replicated; sampling takes replicated prompts, prefills them and splits
the decode rows over ``('data','fsdp')``. Host data is identical on every
process, so the same code runs as several ``jax.distributed`` processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
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

from divrl import config as config_lib
from divrl import metrics as metrics_lib
from divrl import tasks as tasks_lib
from divrl.config import default_config
from divrl.models.decoder import Decoder
from divrl.models.sampler import SamplingConfig, make_sampler
from divrl.objective import Objective
from divrl.types import Batch, check_values
from divrl.rl import data as data_lib
from divrl.rl import inputs as inputs_lib
from divrl.rl import mesh as mesh_lib
from divrl.rl import pretrain as pretrain_lib
from divrl.rl import scoring
from divrl.rl import step as step_lib
from divrl.rl.checkpoint import Checkpointer
from divrl.rl.logging import MetricsLogger, ProgressBar, truncate_logs

__all__ = ["Trainer", "default_config", "entropy_curve", "log2_ks",
           "make_optimizer", "pass_at_k_of"]


def make_optimizer(tc) -> optax.GradientTransformation:
  if tc.warmup_steps > 0:
    lr = optax.linear_schedule(0.0, tc.learning_rate, tc.warmup_steps)
  else:
    lr = tc.learning_rate
  parts = []
  if tc.grad_clip and tc.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(tc.grad_clip))
  parts.append(optax.adamw(lr, weight_decay=tc.weight_decay))
  tx = optax.chain(*parts)
  if tc.get("skip_nonfinite", False):
    # An update whose gradients are not all finite leaves the parameters
    # and the optimizer state as they were, and counts itself
    # (``total_notfinite``); it never gives up and applies one.
    tx = optax.apply_if_finite(tx, max_consecutive_errors=2**31 - 1)
  return tx


def nonfinite_skips(opt_state) -> int | None:
  """Updates skipped for non-finite gradients so far, or None when the
  optimizer does not skip (``train.skip_nonfinite`` off)."""
  if isinstance(opt_state, optax.ApplyIfFiniteState):
    return int(opt_state.total_notfinite)
  return None


@dataclasses.dataclass
class RolloutInfo:
  """What the host keeps of a rollout for reporting."""
  correct: np.ndarray           # [B] bool
  rewards: np.ndarray           # [B] scalar rewards
  canonicals: list[str | None]
  sample_source: np.ndarray     # [B] int
  response_tokens: int
  rounds: int


def solution_ids(canonicals, group_ids) -> np.ndarray:
  """``[B]`` int32 ids of the canonical solutions (-1 when wrong).

  Equal ids mean the same canonical solution of the same prompt; ids are
  numbered in order of first appearance over the batch.
  """
  table: dict[tuple[int, str], int] = {}
  out = np.full(len(canonicals), -1, np.int32)
  for i, (c, g) in enumerate(zip(canonicals, group_ids)):
    if c is not None:
      out[i] = table.setdefault((int(g), c), len(table))
  return out


@dataclasses.dataclass
class RunSetup:
  """What a run builds once from its config and hands down.

  Attributes:
    task: the task object.
    tokenizer: its character tokenizer.
    base: the base (and reference) model.
    base_path: where the base is cached.
    train_examples, eval_examples: the task's examples of the two splits.
    prompt_width: the padded prompt length (longest ``<bos> + prompt``).
  """
  task: Any
  tokenizer: Any
  base: Decoder
  base_path: str
  train_examples: list
  eval_examples: list
  prompt_width: int

  @classmethod
  def build(cls, config, *, task=None, workdir: str | None = None,
            log=print) -> "RunSetup":
    """Builds the task (unless given), tokenizer, base model and examples of
    ``config``.

    Several trainers whose configs share ``task``, ``model``, ``base`` and
    ``seed`` may share one setup (the quickstart's experiments, tests).
    """
    workdir = os.path.abspath(workdir or config.workdir or "runs/default")
    if task is None:
      task = tasks_lib.get_task(config.task.name,
                                **config_lib.task_kwargs(config))
    base, tokenizer, base_path = pretrain_lib.get_or_pretrain_base(
        config, task, log=log)
    load = functools.partial(
        data_lib.load_examples, task, config.task.name,
        config_lib.task_kwargs(config),
        train_size=config.task.train_size, test_size=config.task.test_size,
        seed=config.seed, use_tfds=config.task.use_tfds,
        data_dir=config.task.data_dir or os.path.join(workdir, "tfds"))
    train, evals = load("train"), load(config.eval.split)
    width = max(data_lib.prompt_width(tokenizer, task, train),
                data_lib.prompt_width(tokenizer, task, evals))
    return cls(task, tokenizer, base, base_path, train, evals, width)


def with_value_head(model: Decoder) -> Decoder:
  """``model`` with a (zero) value head added, its other weights shared."""
  if model.value_head is not None:
    return model
  out = Decoder(dataclasses.replace(model.config, value_head=True),
                rngs=nnx.Rngs(0))
  nnx.update(out, nnx.state(model))
  return out


class Trainer:
  """Builds everything a run needs from a config; ``run()`` trains.

  ``on_policy_plan=False`` keeps the behaviour policy's scoring forward even
  when one update per batch makes it redundant (``step.on_policy_plan``):
  the step as it was before that change, for benchmarks and for comparisons
  with runs made then. It changes float rounding only.
  """

  def __init__(self, config: ml_collections.ConfigDict, *,
               mesh: jax.sharding.Mesh | None = None,
               setup: RunSetup | None = None, log=print,
               on_policy_plan: bool = True):
    config_lib.validate(config)   # keys, types and ranges, before any work
    self.config = config
    self.log = log
    self.workdir = os.path.abspath(config.workdir or "runs/default")
    tc, sc = config.train, config.sampling
    self.objective = Objective.from_config(config.objective)
    task = setup.task if setup else tasks_lib.get_task(
        config.task.name, **config_lib.task_kwargs(config))
    inputs_lib.check(self.objective, config, task)  # before any heavy work
    need, part = self.objective.min_group_size
    if need > config.sampling.num_samples:
      raise ValueError(
          f"{part} needs groups of at least {need} samples, but"
          f" sampling.num_samples = {config.sampling.num_samples}: every"
          " group would get a zero advantage. Raise sampling.num_samples or"
          " lower the part's k.")
    split_size = (config.task.test_size if config.eval.split == "test"
                  else config.task.train_size)
    if config.eval.num_prompts > split_size:
      raise ValueError(
          f"eval.num_prompts = {config.eval.num_prompts} is more than the"
          f" {config.eval.split} split holds (task.{config.eval.split}_size"
          f" = {split_size}); lower eval.num_prompts or raise"
          f" task.{config.eval.split}_size.")
    self.plan = step_lib.Plan.of(
        self.objective, temperature=sc.temperature,
        top_p=config.statistics.top_p, alpha=config.statistics.alpha,
        min_p=config.statistics.min_p,
        log_entropy=config.log.entropy,
        log_kl_ref=config.log.kl_ref)
    # Built once per run and handed down.
    setup = setup or RunSetup.build(config, task=task, workdir=self.workdir,
                                    log=log)
    self.task, self.tokenizer = setup.task, setup.tokenizer
    self.base_path = setup.base_path
    self.train_examples = setup.train_examples
    self.eval_examples = setup.eval_examples
    self.prompt_width = setup.prompt_width
    base = with_value_head(setup.base) if self.plan.value_head else setup.base
    self.model_config = base.config
    self.stream = data_lib.PromptStream(len(self.train_examples),
                                        seed=config.seed)
    reads = self.objective.requires.inputs
    self.components = "reward_components" in reads
    self.greedy_baseline = "baseline_rewards" in reads

    self.mesh = mesh or mesh_lib.make_train_mesh(**config.mesh.to_dict())
    multiple = mesh_lib.batch_size_multiple(self.mesh)
    # Each batch-axis device computes the token statistics of its own rows.
    self.plan = dataclasses.replace(self.plan, row_shards=multiple)
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
    self.num_ref_samples = self._ref_samples(sc, multiple)

    self.graphdef, base_state = nnx.split(base)
    with jax.set_mesh(self.mesh):
      self.base_params = mesh_lib.put_params(base_state, self.mesh)
    self.tx = make_optimizer(tc)
    self.root_key = jax.random.key(config.seed)
    replicated = mesh_lib.replicated(self.mesh)
    self.state = {
        "params": self.base_params,
        "ref_params": self.base_params,
        "opt_state": self._init_opt_state(self.base_params),
        "carry": jax.device_put(self.objective.init_carry(), replicated),
        "rng": self.root_key,
    }
    self.step = 0
    self._make_samplers(sc)
    self._build_step()
    # One optimizer step per batch: the first rollout decides whether the
    # behaviour policy's scoring forward can go (step.on_policy_plan).
    self._on_policy_pending = (on_policy_plan and tc.ppo_epochs == 1
                               and tc.num_minibatches == 1)
    self._score_eval = jax.jit(functools.partial(
        _eval_statistics, self.graphdef,
        temperature=float(sc.temperature), row_shards=multiple))
    self.history: list[dict[str, float]] = []
    self._log_offsets = None   # the resumed checkpoint's, for truncate_logs
    # {step: per held-out prompt, the sorted distinct correct solutions}
    # of each evaluation of the policy (run() and evaluate() fill it).
    self.eval_solutions: dict[int, list[list[str]]] = {}

  def _build_step(self) -> None:
    """The compiled prepare and update of ``self.plan``."""
    replicated = mesh_lib.replicated(self.mesh)
    # The model's programs are shared by every objective with this plan;
    # the objective compiles only its own (divrl.rl.step.SplitUpdate).
    self._prepare = step_lib.SplitPrepare(
        self.graphdef, self.objective, self.plan,
        out_shardings=(None, replicated, replicated))
    # Pin the updated state to the input shardings: otherwise GSPMD may pick
    # other output shardings and the second step recompiles.
    self._update = step_lib.SplitUpdate(
        self.graphdef, self.tx, self.objective, self.plan,
        micro_batches=self.config.train.micro_batches,
        state_shardings=(self._param_shardings, self._opt_shardings),
        metric_sharding=replicated,
        micro_sharding=jax.sharding.NamedSharding(
            self.mesh, jax.sharding.PartitionSpec(None,
                                                  mesh_lib.BATCH_AXES)))

  def _use_on_policy_plan(self, rollout: step_lib.Rollout) -> None:
    """Drops the behaviour policy's scoring forward where that is exact
    (``step.on_policy_plan``: one update per batch, and no prepare-stage
    part reads the behaviour policy)."""
    self._on_policy_pending = False
    plan = step_lib.on_policy_plan(self.plan, self.objective, rollout,
                                   self.state["carry"])
    if plan != self.plan:
      self.plan = plan
      self._build_step()

  @staticmethod
  def _ref_samples(sc, multiple: int) -> int:
    share = float(sc.ref_share)
    if not 0.0 <= share < 1.0:
      raise ValueError(f"sampling.ref_share must lie in [0, 1), got {share}")
    n = share * sc.num_samples
    if abs(n - round(n)) > 1e-9:
      raise ValueError(
          f"sampling.ref_share * sampling.num_samples = {n:g} must be a whole"
          " number of reference samples per group")
    n = int(round(n))
    if n and (sc.num_prompts * n) % multiple:
      raise ValueError(
          f"sampling.num_prompts * reference samples per group ="
          f" {sc.num_prompts * n} must be a multiple of data*fsdp"
          f" ({multiple})")
    return n

  def _make_samplers(self, sc) -> None:
    eos = self.tokenizer.eos_id
    common = dict(max_new_tokens=sc.max_new_tokens, temperature=sc.temperature,
                  top_k=sc.top_k, top_p=sc.top_p, min_p=sc.min_p,
                  stop_tokens=(eos,), pad_id=self.tokenizer.pad_id)
    # Data-parallel sampling: each device decodes its share of the rows.
    sampler_for = functools.partial(make_sampler, self.graphdef,
                                    mesh=self.mesh,
                                    batch_axes=mesh_lib.BATCH_AXES)
    n_ref = self.num_ref_samples
    self.sampling_config = SamplingConfig(num_samples=sc.num_samples - n_ref,
                                          **common)
    self._train_sampler = sampler_for(self.sampling_config)
    self._ref_sampler = (sampler_for(SamplingConfig(num_samples=n_ref,
                                                    **common))
                         if n_ref else None)
    self.eval_sampling_config = SamplingConfig(
        num_samples=self.config.eval.num_samples, **common)
    self._eval_sampler = sampler_for(self.eval_sampling_config)
    self._greedy_sampler = None
    if self.greedy_baseline:
      greedy = SamplingConfig(num_samples=1, **{**common, "temperature": 0.0})
      split = sc.num_prompts % mesh_lib.batch_size_multiple(self.mesh) == 0
      self._greedy_sampler = (sampler_for(greedy) if split else
                              make_sampler(self.graphdef, greedy))

  def _init_opt_state(self, params):
    """Optimizer state on the mesh: moments like their parameters, scalars
    (step counts) replicated."""
    self._param_shardings = jax.tree.map(lambda x: x.sharding, params)
    abstract = jax.eval_shape(self.tx.init, params)
    self._opt_shardings = optax.tree_map_params(
        self.tx, lambda _, s: s, abstract, self._param_shardings,
        transform_non_params=lambda _: mesh_lib.replicated(self.mesh))
    return jax.jit(self.tx.init, out_shardings=self._opt_shardings)(params)

  # ------------------------------------------------------------- rollouts --

  def _keys(self, key, count):
    return jax.random.key_data(jax.random.split(key, count))

  def _sample(self, sampler, params, examples, key, num_samples):
    """Samples ``num_samples`` responses per example and verifies them."""
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
    timeout = self.config.train.get("verify_timeout") or None
    for r in range(host.tokens.shape[0]):
      ids = host.tokens[r][host.response_mask[r]]
      text = self.tokenizer.decode(ids)
      verdicts.append(tasks_lib.safe_verify(
          self.task, examples[r // num_samples], text, timeout=timeout))
    errors = [v.error for v in verdicts
              if v.error and v.error.startswith(tasks_lib.base.VERIFIER_ERROR)]
    if errors:
      self.log(f"step {self.step + 1}: the verifier raised on "
               f"{len(errors)} of {len(verdicts)} completions (scored 0); "
               f"first: {errors[0]}")
    return host, verdicts

  def _groups(self, examples, key):
    """``[(host, rows, verdicts, source)]`` parts of each prompt's group."""
    p, g = len(examples), self.config.sampling.num_samples
    n_pol, n_ref = g - self.num_ref_samples, self.num_ref_samples
    host, verdicts = self._sample(self._train_sampler, self.state["params"],
                                  examples, key, n_pol)
    parts = [[(host, slice(j * n_pol, (j + 1) * n_pol),
               verdicts[j * n_pol:(j + 1) * n_pol], 0)] for j in range(p)]
    if n_ref:
      rhost, rverdicts = self._sample(
          self._ref_sampler, self.state["ref_params"], examples,
          jax.random.fold_in(key, 1), n_ref)
      for j in range(p):
        parts[j].append((rhost, slice(j * n_ref, (j + 1) * n_ref),
                         rverdicts[j * n_ref:(j + 1) * n_ref], 1))
    return parts

  def rollout(self, step: int) -> tuple[step_lib.Rollout, RolloutInfo]:
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
      parts = self._groups(examples, jax.random.fold_in(step_key, rounds))
      rounds += 1
      for j, group in enumerate(parts):
        rewards = np.asarray([v.reward for _, _, vs, _ in group for v in vs])
        entry = (examples[j], group)
        if tc.dynamic_sampling and np.all(rewards == rewards[0]):
          dropped.append(entry)
        else:
          kept.append(entry)
    chosen = (kept + dropped)[:p]
    parts = [part for _, group in chosen for part in group]
    baseline = (np.repeat(self._greedy_rewards([e for e, _ in chosen],
                                               step_key), g)
                if self.greedy_baseline else None)
    return self._assemble(parts, np.repeat(np.arange(p, dtype=np.int32), g),
                          p, rounds, baseline)

  def _assemble(self, parts, group_ids, num_groups, rounds=1, baseline=None,
                where=None, training=True):
    """The typed device ``Rollout`` (and its host info) of sampled rows.

    ``parts`` are ``(host SampleOutput, rows, verdicts, source)`` in batch
    order; ``group_ids`` numbers their prompts.
    """
    def cat(get):
      return np.concatenate([get(host)[rows] for host, rows, _, _ in parts])

    verdicts = [v for _, _, vs, _ in parts for v in vs]
    source = np.concatenate([np.full(len(vs), src, np.int32)
                             for _, _, vs, src in parts])
    rewards = np.asarray([v.reward for v in verdicts], np.float32)
    canon = [v.canonical for v in verdicts]
    arrays = dict(
        prompt_tokens=cat(lambda h: h.prompt_tokens),
        prompt_mask=cat(lambda h: h.prompt_mask),
        tokens=cat(lambda h: h.tokens),
        response_mask=cat(lambda h: h.response_mask),
        rollout_logprobs=cat(lambda h: h.logprobs),
        truncated=cat(lambda h: h.truncated),
        rewards=(np.asarray([self.task.reward_components(v)
                             for v in verdicts], np.float32)
                 if self.components else rewards),
        group_ids=np.asarray(group_ids, np.int32), sample_source=source,
        solution_ids=solution_ids(canon, group_ids))
    if baseline is not None:
      arrays["baseline_rewards"] = np.asarray(baseline, np.float32)
    if self.config.train.check_inputs:
      # Evaluation rows are scored in chunks that may split a group, and
      # no objective reads them: no group-size check there.
      check_rollout(self.objective if training else None, arrays,
                    num_groups, where or f"step {self.step + 1}")
    rollout = step_lib.Rollout(num_groups=num_groups,
                               **mesh_lib.put_batch(arrays, self.mesh))
    info = RolloutInfo(
        correct=np.asarray([v.correct for v in verdicts]), rewards=rewards,
        canonicals=canon, sample_source=source,
        response_tokens=int(arrays["response_mask"].sum()), rounds=rounds)
    return rollout, info

  def _greedy_rewards(self, examples, key) -> np.ndarray:
    """``[P]`` rewards of the greedy decode of each prompt (ReMax)."""
    _, verdicts = self._sample(self._greedy_sampler, self.state["params"],
                               examples, jax.random.fold_in(key, 7), 1)
    return np.asarray([v.reward for v in verdicts], np.float32)

  # --------------------------------------------------------------- update --

  def train_step(self) -> dict[str, float]:
    """One rollout and its updates; returns host metrics."""
    tc = self.config.train
    step = self.step
    t0 = time.perf_counter()
    rollout, info = self.rollout(step)
    if self._on_policy_pending:
      self._use_on_policy_plan(rollout)
    t1 = time.perf_counter()
    step_key = jax.random.fold_in(self.root_key, step)
    # The model programs trace under the mesh: FSDP gathers each weight
    # before its matmul (divrl.models.decoder.gather_fsdp).
    with jax.set_mesh(self.mesh):
      prepared, carry, prep_metrics = self._prepare(
          self.state["params"], self.state["ref_params"], self.state["carry"],
          rollout, jax.random.fold_in(step_key, 1000))
    jax.block_until_ready(prepared)
    t2 = time.perf_counter()
    b = rollout.tokens.shape[0]
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
        with jax.set_mesh(self.mesh):
          params, opt_state, met = self._update(
              params, opt_state, self.state["ref_params"], carry, prepared,
              mesh_lib.put(rows, mesh_lib.replicated(self.mesh)),
              jax.random.fold_in(step_key, 2000 + epoch * 97 + m))
        step_metrics.append(met)
    self.state.update(params=params, opt_state=opt_state, carry=carry)
    self.step = step + 1
    if tc.ref_reset_every and self.step % tc.ref_reset_every == 0:
      self.state["ref_params"] = jax.tree.map(jnp.copy, params)
    last, prep = mesh_lib.tree_to_host(
        (step_metrics[-1], {**prep_metrics,
                            **step_lib.carry_metrics(carry)}))
    t3 = time.perf_counter()
    policy = info.sample_source == 0
    out = {f"objective/{k}": float(v) for k, v in last.items()}
    out.update({k: float(v) for k, v in prep.items()})
    # An on-policy plan logs these from the update (same parameters).
    if self.plan.entropy_in_update:
      out["entropy"] = out["objective/entropy"]
    if self.plan.kl_ref_in_update:
      out["kl_ref"] = out.pop("objective/kl_ref")
    out.update({
        "reward": float(np.mean(info.rewards[policy])),
        "pass@1": float(np.mean(info.correct[policy])),
        "sampling_rounds": float(info.rounds),
        "time/sample": t1 - t0, "time/score": t2 - t1, "time/update": t3 - t2,
        "tokens/s": info.response_tokens / max(t3 - t0, 1e-9),
    })
    return out

  # ----------------------------------------------------------- evaluation --

  def evaluate(self, params=None, *, key=None) -> dict[str, Any]:
    """pass@k, accuracy, diversity, entropy and KL to the base on held-out
    prompts (``config.eval``).

    The distinct correct solutions of each prompt are kept in
    ``self.last_solutions`` (and, for the policy at the default key, in
    ``self.eval_solutions[step]``).
    """
    ec = self.config.eval
    own = params is None and key is None
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
    self.last_solutions = [
        sorted({c for c, ok in zip(canon[i], correct[i])
                if ok and c is not None}) for i in range(p)]
    if own:
      self.eval_solutions[self.step] = self.last_solutions
    # Entropy and KL to the base, scored on the device in chunks of rows.
    ent_sum = tok = 0.0
    k1, k3 = [], []
    rows = host.tokens.shape[0]
    multiple = mesh_lib.batch_size_multiple(self.mesh)
    chunk = max(multiple, ec.score_rows - ec.score_rows % multiple)
    for start in range(0, rows, chunk):
      sl = slice(start, min(rows, start + chunk))
      ids = np.arange(sl.start, sl.stop) // n
      rollout, _ = self._assemble(
          [(host, sl, verdicts[sl], 0)], ids - ids[0],
          int(ids[-1] - ids[0] + 1), where=f"evaluation at step {self.step}",
          training=False)
      with jax.set_mesh(self.mesh):
        s = self._score_eval(params, self.base_params, rollout)
      s = mesh_lib.tree_to_host(s)
      ent_sum += float(s["entropy_sum"])
      tok += float(s["tokens"])
      k1.append(np.asarray(s["k1"]))
      k3.append(np.asarray(s["k3"]))
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
    return out

  # ----------------------------------------------------------------- run --

  def _checkpointer(self):
    cc = self.config.checkpoint
    if not cc.every:
      return None
    return Checkpointer(os.path.join(self.workdir, "checkpoints"),
                        save_every=int(cc.every), max_to_keep=cc.max_to_keep)

  def _checkpoint_state(self):
    keys = ("params", "ref_params", "opt_state", "rng")
    if self.state["carry"]:  # stateless objectives keep the old layout
      keys += ("carry",)
    return {k: self.state[k] for k in keys}

  def maybe_resume(self, ckpt) -> bool:
    """Restores the newest intact checkpoint, if any (a corrupt newer one
    is reported and set aside: ``Checkpointer.restore_latest_good``)."""
    self._log_offsets = None
    if ckpt is None or ckpt.latest_step() is None:
      return False
    state, meta, corrupt = ckpt.restore_latest_good(
        target=self._checkpoint_state(), log=self.log)
    self.state.update(state)
    self.step = int(meta["step"])
    self.stream.position = int(meta["data_position"])
    self._log_offsets = meta.get("log_offsets")
    skipped = (f"; corrupt step(s) {corrupt} moved to {ckpt.directory}"
               ".corrupt" if corrupt else "")
    self.log(f"resumed from step {self.step} "
             f"({os.path.join(self.workdir, 'checkpoints')}){skipped}")
    return True

  def run(self) -> dict[str, Any]:
    """Trains ``train.steps`` steps (resuming if a checkpoint exists),
    evaluating every ``eval.every`` steps and at the end."""
    os.makedirs(self.workdir, exist_ok=True)
    # One live run per workdir (process 0 holds the lock for all processes
    # of a jax.distributed run); the kernel drops it if the run dies.
    lock = (WorkdirLock(self.workdir) if jax.process_index() == 0
            else contextlib.nullcontext())
    with lock:
      return self._run()

  def _run(self) -> dict[str, Any]:
    ckpt = self._checkpointer()
    resumed = self.maybe_resume(ckpt)
    is_main = jax.process_index() == 0
    logger = None
    if is_main:
      # The logs continue from the checkpoint: lines logged after it (the
      # steps this run repeats) go; a run from step 0 starts new logs. (A
      # checkpoint written before log offsets were stored keeps them all.)
      if not resumed or self._log_offsets is not None:
        truncate_logs(self.workdir, self._log_offsets)
      logger = MetricsLogger(
          self.workdir, use_tensorboard=self.config.log.tensorboard,
          purge_step=self.step + 1 if resumed else None)
    try:
      return self._loop(ckpt, logger)
    finally:
      if ckpt is not None:
        ckpt.close()   # commits earlier saves
      if logger:
        logger.close()

  def _loop(self, ckpt, logger) -> dict[str, Any]:
    tc, ec = self.config.train, self.config.eval
    is_main = logger is not None
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
      skips_before = nonfinite_skips(self.state["opt_state"])
      m = self.train_step()
      bad = first_nonfinite(m)
      if skips_before is not None:
        skips = nonfinite_skips(self.state["opt_state"])
        m["nonfinite_skips"] = float(skips)
        if skips > skips_before:   # skipped: the parameters are unchanged
          self.log(f"step {self.step}: update skipped, metric {bad!r} is "
                   f"not finite ({skips} skipped so far)")
          m = {k: v for k, v in m.items()
               if first_nonfinite({k: v}) is None}
          bad = None
      if bad is not None:
        raise NonFiniteError(
            f"step {self.step}: metric {bad!r} is {m[bad]}; the run stops "
            "before logging or checkpointing this step (the last "
            "checkpoint, if any, is intact)")
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
        meta = {"step": self.step, "data_position": self.stream.position}
        if logger:
          meta["log_offsets"] = logger.offsets()
        ckpt.maybe_save(self.step, self._checkpoint_state(), meta)
    if bar:
      bar.close()
    final = None
    if self.step >= tc.steps and evals and evals[-1][0] == self.step:
      final = evals[-1][1]   # train.steps = 0: the base's evaluation
    elif self.step >= tc.steps:
      final = self.evaluate()
      evals.append((self.step, final))
      if logger:
        logger.log(self.step, final)
    return {"final": final, "evals": evals, "history": self.history,
            "workdir": self.workdir}


class WorkdirLock:
  """An exclusive ``flock`` on ``<workdir>/.lock`` for a ``with`` block.

  A second run on the same workdir is refused with the holder's pid; the
  lock goes away with its process, so a killed run leaves none behind.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, ".lock")
    self._fd = None

  def __enter__(self):
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
      os.close(fd)
      raise RuntimeError(
          f"workdir {os.path.dirname(self.path)} is in use by another live "
          f"run (pid {holder}); wait for it, or give this run another "
          "workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    self._fd = fd
    return self

  def __exit__(self, *exc):
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None
    return False


def check_rollout(objective: Objective | None,
                  arrays: dict[str, np.ndarray], num_groups: int,
                  where: str) -> None:
  """The checked mode (``train.check_inputs``) on a rollout's host arrays:
  ``Objective.check_values`` (finite rewards, group ids in range, sampler
  log-probs finite and at most 0, a non-empty response mask, groups as
  large as the parts need; ``divrl.check_values`` without an objective),
  the error naming ``where`` (the step)."""
  batch = Batch(
      logprobs=arrays["rollout_logprobs"],
      response_mask=arrays["response_mask"], rewards=arrays["rewards"],
      group_ids=arrays["group_ids"], num_groups=num_groups,
      rollout_logprobs=arrays["rollout_logprobs"],
      baseline_rewards=arrays.get("baseline_rewards"))
  try:
    if objective is None:
      check_values(batch)
    else:
      objective.check_values(batch)
  except ValueError as e:
    raise ValueError(f"{where}: the rollout fails the input checks"
                     f" (train.check_inputs): {e}") from None


class NonFiniteError(FloatingPointError):
  """A training step produced a non-finite loss, gradient or metric."""


def first_nonfinite(metrics: dict[str, float]) -> str | None:
  """The first metric (in insertion order) that is NaN or infinite."""
  for name, value in metrics.items():
    if isinstance(value, (int, float)) and not math.isfinite(value):
      return name
  return None


def _eval_statistics(graphdef, params, base_params,
                     rollout: step_lib.Rollout, *, temperature: float,
                     row_shards: int = 1) -> dict[str, jax.Array]:
  """Entropy and sampled KL-to-base sums of evaluation responses (device)."""
  args = (rollout.prompt_tokens, rollout.prompt_mask, rollout.tokens,
          rollout.response_mask)
  mask = rollout.response_mask
  stats = {}
  for name, p, names in (("policy", params, ("entropy",)),
                         ("base", base_params, ())):
    model = nnx.merge(graphdef, p)
    hidden = scoring.response_hidden(model, *args)
    stats[name] = scoring.model_statistics(
        model, hidden, rollout.tokens, mask, names, temperature=temperature,
        row_shards=row_shards)
  valid = mask > 0
  kl = metrics_lib.kl_to_base(stats["policy"]["logprobs"],
                              stats["base"]["logprobs"], mask, reduce=False)
  return {"entropy_sum": jnp.sum(jnp.where(valid, stats["policy"]["entropy"],
                                           0.0)),
          "tokens": jnp.sum(valid.astype(jnp.float32)),
          "k1": kl.k1, "k3": kl.k3}


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
