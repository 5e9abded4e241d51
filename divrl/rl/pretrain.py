"""Supervised pre-training of a toy "base model" with skewed coverage.

Real base models put broad but uneven mass on the correct solutions of a
problem, plus some on wrong ones; RL then sharpens or preserves that spread.
This stage makes a toy base with the same property (docs/design.md section 4).
The mixture (``sft_mixture``) gives every training example the same mass;
within it, a wrong answer gets the share ``wrong_share``, and the correct
answers the rest, split over the task's solution families
(``task.solution_families``: one family for most tasks; the rare task's
planted product family gets its ``rare_weight``). Each family enumerates up
to ``max_solutions`` distinct correct solutions, shuffles them, and gives
the ``i``-th the weight ``(i + 1) ** -skew`` (a Zipf law, so one or two
solutions dominate and the tail is rare). ``sft_targets`` draws
``num_targets`` training pairs from it, stratified by prompt and family. The
model is trained with next-token cross-entropy on ``answer + <eos>`` given
``<bos> + prompt``.

``pretrain(config)`` returns the parameters and writes them, the tokenizer
and the config to ``config.base.dir`` (orbax checkpoint), from which every
experiment starts; ``load_base`` reads them back.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from divrl.rl.checkpoint import Checkpointer
from divrl.models.decoder import Decoder, DecoderConfig
from divrl.models.tokenizer import CharTokenizer
from divrl.rl import data as data_lib
from divrl.rl import scoring
from divrl import config as config_lib
from divrl import tasks as tasks_lib


def model_config(config, tokenizer: CharTokenizer) -> DecoderConfig:
  """The decoder config: the preset with the tokenizer's vocabulary size."""
  overrides = dict(config.model.get("overrides", {}) or {})
  overrides.setdefault("vocab_size", tokenizer.vocab_size)
  return DecoderConfig.preset(config.model.preset, **overrides)


class Mixture(NamedTuple):
  """The pre-training mixture as data: a distribution over answers.

  Row ``r`` is the answer ``answer[r]`` to ``examples[example[r]]``, of the
  solution family ``family[r]``, with probability ``prob[r] > 0`` (the
  probabilities sum to 1; each example has mass ``1 / len(examples)``). The
  row of family ``"wrong"`` has ``answer[r] = None``: each draw of it is a
  fresh ``task.wrong_answer``.
  """

  example: np.ndarray
  answer: list[str | None]
  family: list[str]
  prob: np.ndarray


def _families(task, example, max_solutions: int):
  """``(name, weight, answers)`` families of one example (weights sum to 1).

  ``task.solution_families`` when the task has it, else one family of
  ``task.solutions``; the reference answer when there is no solution.
  """
  if hasattr(task, "solution_families"):
    families = list(task.solution_families(example, limit=max_solutions))
  else:
    sols = list(task.solutions(example, limit=max_solutions))
    families = [("all", 1.0, sols)] if sols else []
  families = [(n, float(w), list(a)) for n, w, a in families if w > 0 and a]
  if not families:
    return [("reference", 1.0, [task.reference(example)])]
  total = sum(w for _, w, _ in families)
  return [(n, w / total, a) for n, w, a in families]


def sft_mixture(task, examples, rng: np.random.Generator, *, skew: float,
                wrong_share: float, max_solutions: int) -> Mixture:
  """The skewed mixture of the module docstring, as exact probabilities.

  Example ``i`` has mass ``1 / N``: its wrong answers ``wrong_share / N``
  and family ``(name, w, answers)`` of ``task.solution_families(ex,
  limit=max_solutions)`` the mass ``(1 - wrong_share) * w / N``, spread
  over ``answers`` in an order shuffled by ``rng`` with weights
  proportional to ``(j + 1) ** -skew``. Rows of probability 0 are left out.
  """
  if not examples:
    raise ValueError("sft_mixture: no examples.")
  if not 0.0 <= float(wrong_share) <= 1.0:
    raise ValueError(f"wrong_share must be in [0, 1], got {wrong_share}.")
  n = len(examples)
  index, answers, families, probs = [], [], [], []

  def add(i, answer, family, prob):
    if prob > 0:
      index.append(i)
      answers.append(answer)
      families.append(family)
      probs.append(prob)

  for i, ex in enumerate(examples):
    for name, weight, members in _families(task, ex, max_solutions):
      order = rng.permutation(len(members))
      zipf = (np.arange(len(members)) + 1.0) ** -float(skew)
      zipf /= zipf.sum()
      for j, k in enumerate(order):
        add(i, members[k], name, (1.0 - wrong_share) * weight * zipf[j] / n)
    add(i, None, "wrong", float(wrong_share) / n)
  return Mixture(np.asarray(index, np.int64), answers, families,
                 np.asarray(probs, np.float64))


def sft_targets(task, examples, rng: np.random.Generator, *,
                num_targets: int, skew: float, wrong_share: float,
                max_solutions: int) -> list[tuple[int, str]]:
  """``num_targets`` ``(example index, answer)`` pairs of ``sft_mixture``.

  The draws are stratified by (prompt, family): the rows of the mixture are
  grouped by the prompt of their example (``task.prompt``; the example
  index for a task without prompts) and their family, and systematic
  sampling over the groups, in a random order, gives a group of
  probability ``q`` either ``floor(num_targets * q)`` or
  ``ceil(num_targets * q)`` pairs (in expectation exactly
  ``num_targets * q``); within a group the pairs are drawn independently
  by probability. So a family of a prompt appears in the pairs as soon as
  its expected count is at least 1: for the rare task's products, as soon
  as ``num_targets * (1 - wrong_share) * rare_weight * m >= 1`` for a
  prompt of mass ``m`` (its share of the examples). The pairs come in a
  random order.
  """
  if num_targets < 0:
    raise ValueError(f"num_targets must be >= 0, got {num_targets}.")
  mix = sft_mixture(task, examples, rng, skew=skew, wrong_share=wrong_share,
                    max_solutions=max_solutions)
  if hasattr(task, "prompt"):
    where = [task.prompt(ex) for ex in examples]
  else:
    where = list(range(len(examples)))
  groups: dict[Any, list[int]] = {}
  for r, (i, family) in enumerate(zip(mix.example, mix.family)):
    groups.setdefault((where[i], family), []).append(r)
  rows = [np.asarray(groups[key]) for key in groups]
  rows = [rows[g] for g in rng.permutation(len(rows))]
  mass = np.cumsum([mix.prob[r].sum() for r in rows])
  edges = np.floor(np.concatenate([[0.0], mass / mass[-1] * num_targets])
                   + rng.random())
  edges = np.minimum(edges, num_targets).astype(np.int64)
  edges[0] = 0
  out = []
  for r, count in zip(rows, np.diff(edges)):
    if count <= 0:
      continue
    p = mix.prob[r] / mix.prob[r].sum()
    for k in rng.choice(len(r), size=int(count), p=p):
      i = int(mix.example[r[k]])
      answer = mix.answer[r[k]]
      if answer is None:
        answer = task.wrong_answer(examples[i], rng)
      out.append((i, answer))
  return [out[k] for k in rng.permutation(len(out))]


def _encode_pairs(tokenizer, task, examples, pairs, width_prompt,
                  width_answer):
  prompts = [task.prompt(examples[i]) for i, _ in pairs]
  ptoks, pmask = data_lib.encode_prompts(tokenizer, prompts, width_prompt)
  atoks = np.full((len(pairs), width_answer), tokenizer.pad_id, np.int32)
  amask = np.zeros((len(pairs), width_answer), bool)
  for r, (_, answer) in enumerate(pairs):
    ids = tokenizer.encode(answer)[:width_answer - 1] + [tokenizer.eos_id]
    atoks[r, :len(ids)] = ids
    amask[r, :len(ids)] = True
  return ptoks, pmask, atoks, amask


def config_hash(config) -> str:
  """A short hash of everything that determines the base model, and nothing
  else: the task and its knobs (those of ``config.task.name`` only), the
  train/test sizes (they fix the pre-training prompts), the model, the
  pre-training config, the seed and the answer width. Where files live
  (``task.data_dir``, ``base.cache_root``, the workdir) and how examples are
  read (``task.use_tfds``, which gives the same examples) are not in it."""
  keys = {"task": {"name": config.task.name,
                   "kwargs": config_lib.task_kwargs(config),
                   "train_size": config.task.train_size,
                   "test_size": config.task.test_size},
          "model": config.model.to_dict(),
          "pretrain": config.base.pretrain.to_dict(), "seed": config.seed,
          "max_new_tokens": config.sampling.max_new_tokens}
  blob = json.dumps(keys, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:12]


def pretrain(config: ml_collections.ConfigDict, task=None, *, log=print):
  """Trains the base model; returns ``(model, tokenizer, summary)``.

  ``task`` is the run's task object (built from ``config.task`` if None).
  """
  pc = config.base.pretrain
  if task is None:
    task = tasks_lib.get_task(config.task.name,
                                **config_lib.task_kwargs(config))
  tokenizer = data_lib.make_tokenizer(task)
  examples = data_lib.load_examples(
      task, config.task.name, config_lib.task_kwargs(config), "train",
      train_size=config.task.train_size, test_size=config.task.test_size,
      seed=config.seed, use_tfds=False)
  rng = np.random.default_rng([config.seed, 17])
  pairs = sft_targets(task, examples, rng, num_targets=pc.num_targets,
                      skew=pc.skew, wrong_share=pc.wrong_share,
                      max_solutions=pc.max_solutions)
  width_p = data_lib.prompt_width(tokenizer, task, examples)
  width_a = int(config.sampling.max_new_tokens)
  ptoks, pmask, atoks, amask = _encode_pairs(tokenizer, task, examples, pairs,
                                             width_p, width_a)
  mcfg = model_config(config, tokenizer)
  model = Decoder(mcfg, rngs=nnx.Rngs(config.seed))
  graphdef, params = nnx.split(model)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, pc.learning_rate, max(1, pc.steps // 20), pc.steps)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, weight_decay=pc.weight_decay))
  opt_state = tx.init(params)

  def loss_fn(params, pt, pm, at, am):
    m = nnx.merge(graphdef, params)
    lp = scoring.model_statistics(m, scoring.response_hidden(m, pt, pm, at, am),
                                  at, am, ())["logprobs"]
    return -jnp.sum(lp) / jnp.maximum(jnp.sum(am), 1)

  @jax.jit
  def step_fn(params, opt_state, pt, pm, at, am):
    loss, grads = jax.value_and_grad(loss_fn)(params, pt, pm, at, am)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  n = len(pairs)
  bs = int(pc.batch_size)
  t0 = time.perf_counter()
  losses = []
  for step in range(pc.steps):
    idx = rng.integers(n, size=bs)
    params, opt_state, loss = step_fn(params, opt_state, ptoks[idx],
                                      pmask[idx], atoks[idx], amask[idx])
    if step % max(1, pc.steps // 10) == 0 or step == pc.steps - 1:
      losses.append(float(loss))
      log(f"pretrain step {step + 1}/{pc.steps}  loss {float(loss):.4f}")
  summary = {"final_loss": float(loss), "seconds": time.perf_counter() - t0,
             "num_targets": n, "hash": config_hash(config)}
  model = nnx.merge(graphdef, params)
  return model, tokenizer, summary


def base_dir(config) -> str:
  """Where the base for ``config`` lives (``config.base.dir`` or a hash)."""
  if config.base.dir:
    return os.path.abspath(config.base.dir)
  return os.path.abspath(os.path.join(
      config.base.cache_root, f"{config.task.name}-{config.model.preset}-"
      f"{config_hash(config)}"))


def save_base(path: str, model: Decoder, tokenizer: CharTokenizer,
              summary: dict[str, Any]) -> None:
  os.makedirs(path, exist_ok=True)
  with Checkpointer(os.path.join(path, "params"), save_every=1,
                    max_to_keep=1) as ckpt:
    ckpt.save(0, {"params": nnx.state(model)}, summary, force=True)
  if jax.process_index() == 0:   # every process saves the checkpoint above
    tokenizer.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)


def load_base(path: str, mcfg: DecoderConfig) -> Decoder:
  """Reads a base saved by ``save_base`` into a fresh ``Decoder(mcfg)``."""
  model = Decoder(mcfg, rngs=nnx.Rngs(0))
  with Checkpointer(os.path.join(path, "params"), save_every=1) as ckpt:
    state, _ = ckpt.restore(target={"params": nnx.state(model)})
  nnx.update(model, state["params"])
  return model


def get_or_pretrain_base(config, task=None, *, log=print):
  """Loads the cached base for ``config``, pre-training it when missing.

  ``task`` is the run's task object (built from ``config.task`` if None).

  Returns:
    ``(model, tokenizer, path)``.
  """
  path = base_dir(config)
  if task is None:
    task = tasks_lib.get_task(config.task.name,
                                **config_lib.task_kwargs(config))
  tokenizer = data_lib.make_tokenizer(task)
  mcfg = model_config(config, tokenizer)
  if os.path.exists(os.path.join(path, "summary.json")):
    log(f"base model: cache hit, loading {path}")
    return load_base(path, mcfg), tokenizer, path
  log(f"base model: cache miss, pre-training into {path}")
  model, tokenizer, summary = pretrain(config, task, log=log)
  save_base(path, model, tokenizer, summary)
  return model, tokenizer, path
