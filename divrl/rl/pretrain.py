"""Supervised pre-training of a toy "base model" with skewed coverage.

Real base models put broad but uneven mass on the correct solutions of a
problem, plus some on wrong ones; RL then sharpens or preserves that spread.
This stage makes a toy base with the same property (docs/design.md section 4): for
every training prompt it enumerates up to ``max_solutions`` distinct correct
solutions, shuffles them, and gives the ``i``-th the weight
``(i + 1) ** -skew`` (a Zipf law, so one or two solutions dominate and the
tail is rare); with probability ``wrong_share`` a target is a wrong answer
instead. The model is trained with next-token cross-entropy on
``answer + <eos>`` given ``<bos> + prompt``.

``pretrain(config)`` returns the parameters and writes them, the tokenizer
and the config to ``config.base.dir`` (orbax checkpoint), from which every
experiment starts; ``load_base`` reads them back.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

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
from divrl import tasks as tasks_lib


def model_config(config, tokenizer: CharTokenizer) -> DecoderConfig:
  """The decoder config: the preset with the tokenizer's vocabulary size."""
  overrides = dict(config.model.get("overrides", {}) or {})
  overrides.setdefault("vocab_size", tokenizer.vocab_size)
  return DecoderConfig.preset(config.model.preset, **overrides)


def sft_targets(task, examples, rng: np.random.Generator, *,
                num_targets: int, skew: float, wrong_share: float,
                max_solutions: int) -> list[tuple[int, str]]:
  """``(example index, answer)`` pairs of the skewed mixture."""
  weights = []
  pools = []
  for ex in examples:
    sols = list(task.solutions(ex, limit=max_solutions))
    if not sols:
      sols = [task.reference(ex)]
    order = rng.permutation(len(sols))
    pools.append([sols[i] for i in order])
    w = (np.arange(len(sols)) + 1.0) ** -float(skew)
    weights.append(w / w.sum())
  out = []
  for _ in range(num_targets):
    i = int(rng.integers(len(examples)))
    if rng.random() < wrong_share:
      out.append((i, task.wrong_answer(examples[i], rng)))
    else:
      j = int(rng.choice(len(pools[i]), p=weights[i]))
      out.append((i, pools[i][j]))
  return out


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
  """A short hash of everything that determines the base model."""
  keys = {"task": config.task.to_dict(), "model": config.model.to_dict(),
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
    task = tasks_lib.get_task(config.task.name, **config.task.kwargs.to_dict())
  tokenizer = data_lib.make_tokenizer(task)
  examples = data_lib.load_examples(
      task, config.task.name, config.task.kwargs, "train",
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
    task = tasks_lib.get_task(config.task.name, **config.task.kwargs.to_dict())
  tokenizer = data_lib.make_tokenizer(task)
  mcfg = model_config(config, tokenizer)
  if os.path.exists(os.path.join(path, "summary.json")):
    log(f"base model: loading {path}")
    return load_base(path, mcfg), tokenizer, path
  log(f"base model: pre-training into {path}")
  model, tokenizer, summary = pretrain(config, task, log=log)
  save_base(path, model, tokenizer, summary)
  return model, tokenizer, path
