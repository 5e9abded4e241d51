"""tunix's side of ``scripts.bench_peers`` (runs in the peer venv).

Every bench calls google-tunix's public API (read from its installed
source, version in ``info()``). Benches (specs in ``protocol.py``):

* ``grpo_step``: one step of ``tunix.rl.grpo.grpo_learner.GRPOLearner`` on
  an ``RLCluster`` (actor = trainable ``tunix.models.qwen2.Qwen2``,
  reference = a frozen copy, rollout = tunix's vanilla JAX sampler), driven
  through ``GRPOLearner.train`` on one batch of ``prompts`` prompts. Phases
  are timed by wrapping three methods on the instances (see ``GrpoStep``).
* ``sampler``: ``tunix.generate.sampler.Sampler`` alone.
* ``token_stats``: tunix's per-token path from logits,
  ``tunix.rl.common.selective_log_softmax`` (log-prob of the target) and
  ``tunix.rl.algo_core.compute_entropy_from_logits`` (the entropy its GRPO
  loss computes every step), forward + backward in ``h`` and ``W`` of
  ``logits = h @ W``.
* ``objective``: the GRPO loss on ``protocol.objective_inputs`` from
  tunix's loss pieces, forward + backward in the log-probs.

tunix needs a tokenizer (prompts and completions are strings); ``IdTokenizer``
maps token ids to space-separated decimal numbers and back, so the reward is
``protocol.reward`` on exactly the generated ids.

Run from the repository root with the peer venv::

  .venv-peers/bin/python -m scripts.peers.tunix_worker
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from scripts import _bench  # noqa: E402
from scripts.peers import protocol  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PACKAGES = ("google-tunix", "jax", "jaxlib", "flax", "optax", "numpy")


def _versions() -> dict[str, str | None]:
  return _bench.machine(PACKAGES)["versions"]


# ---------------------------------------------------------------- helpers


class IdTokenizer:
  """The smallest tokenizer tunix accepts (``encode``, ``decode``,
  ``bos_id``, ``eos_id``, ``pad_id``): a text is token ids written as
  space-separated decimal numbers. No BOS; EOS and PAD are ids outside the
  vocabulary (``vocab_size`` and ``vocab_size + 1``), so the sampler can
  never emit them: every response has exactly ``gen_len`` tokens and no
  generated token is ever taken for padding."""

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def encode(self, text: str, **kwargs) -> list[int]:
    del kwargs
    return [int(t) for t in text.split()]

  def decode(self, ids, **kwargs) -> str:
    del kwargs
    return " ".join(str(int(t)) for t in ids)

  def bos_id(self):
    return None

  def eos_id(self) -> int:
    return self.vocab_size

  def pad_id(self) -> int:
    return self.vocab_size + 1


def random_prompts(spec, count: int) -> np.ndarray:
  """``count`` random prompts of exactly ``prompt_len`` ids in [1, vocab)."""
  rng = np.random.default_rng(spec["seed"])
  return rng.integers(1, spec["vocab_size"], size=(count, spec["prompt_len"]),
                      dtype=np.int64).astype(np.int32)


def prompt_strings(ids: np.ndarray) -> list[str]:
  return [" ".join(str(int(t)) for t in row) for row in ids]


def qwen2_config(spec):
  """``tunix.models.qwen2.ModelConfig`` of a ``protocol.MODEL`` spec."""
  from tunix.models.qwen2 import model as qwen2
  if not spec["qkv_bias"]:
    raise NotImplementedError("tunix's Qwen2 always has q/k/v biases; "
                              "qkv_bias=False is not expressible")
  dtype = DTYPES[spec.get("dtype", "float32")]
  return qwen2.ModelConfig(
      num_layers=spec["num_layers"], vocab_size=spec["vocab_size"],
      embed_dim=spec["hidden_size"], hidden_dim=spec["intermediate_size"],
      num_heads=spec["num_heads"], head_dim=spec["head_dim"],
      num_kv_heads=spec["num_kv_heads"], rope_theta=spec["rope_theta"],
      norm_eps=spec["rms_norm_eps"],
      use_tied_embedding=bool(spec["tie_word_embeddings"]),
      dtype=dtype, param_dtype=dtype)


def random_qwen2(spec):
  """A ``tunix.models.qwen2.Qwen2`` of the spec's shape with seeded random
  weights: every matrix and bias ~ N(0, 0.02), RMSNorm scales 1.

  (tunix's own initialisers give N(0, 1) embeddings, Glorot attention, and
  all-zero MLP matrices and q/k/v biases, which would make the MLP a no-op
  at step 0; the values do not change the FLOPs.)"""
  from tunix.models.qwen2 import model as qwen2
  config = qwen2_config(spec)
  model = qwen2.Qwen2(config, rngs=nnx.Rngs(spec["seed"]))
  state = nnx.state(model, nnx.Param)
  key = jax.random.key(spec["seed"])
  counter = [0]

  def init(path, x):
    names = "/".join(str(getattr(p, "key", p)) for p in path)
    counter[0] += 1
    if "norm" in names:
      return jnp.ones_like(x)
    k = jax.random.fold_in(key, counter[0])
    return (0.02 * jax.random.normal(k, x.shape, jnp.float32)).astype(x.dtype)

  nnx.update(model, jax.tree_util.tree_map_with_path(init, state))
  return model


def _block(x):
  return jax.block_until_ready(x)


# ---------------------------------------------------------------- sampler


class Sampler:
  """``tunix.generate.sampler.Sampler.__call__`` on a random Qwen2:
  ``batch`` prompts (times ``group`` if given), exactly ``gen_len`` new
  tokens, temperature sampling over the full vocabulary (``top_p=1.0``,
  ``top_k=None``: tunix's fast path, one ``jax.random.categorical``)."""

  def __init__(self, spec):
    from tunix.generate import sampler as sampler_lib
    self.spec = spec
    self.model = random_qwen2(spec)
    self.tokenizer = IdTokenizer(spec["vocab_size"])
    self.rows = spec["batch"] * spec.get("group", 1)
    ids = np.repeat(random_prompts(spec, spec["batch"]), spec.get("group", 1),
                    axis=0)
    self.prompts = prompt_strings(ids)
    self.cache = sampler_lib.CacheConfig(
        cache_size=spec["prompt_len"] + spec["gen_len"],
        num_layers=spec["num_layers"], num_kv_heads=spec["num_kv_heads"],
        head_dim=spec["head_dim"])
    self.sampler = sampler_lib.Sampler(self.model, self.tokenizer, self.cache)
    self.kwargs = dict(
        max_generation_steps=spec["gen_len"],
        max_prompt_length=spec["prompt_len"], echo=False,
        temperature=float(spec["temperature"]), top_p=1.0, top_k=None,
        eos_tokens=[self.tokenizer.eos_id()], pad_output=False)
    self.calls = 0
    # Warm-up, two untimed calls: the first compiles prefill and decode, the
    # second was still slower than the later ones in testing.
    self.run()
    self.run()

  def info(self):
    return {
        "versions": _versions(),
        "api": ("tunix.generate.sampler.Sampler(Qwen2, IdTokenizer, "
                f"CacheConfig(cache_size={self.cache.cache_size}))(prompts, "
                f"{self.kwargs}, seed=seed+call)"),
        "rows": self.rows,
        "differs": [
            "prompts and outputs are strings in tunix's API: each call "
            "encodes the prompts and decodes the outputs with IdTokenizer "
            "(space-separated ids) on the host; included in the time",
            "no stop token: eos_tokens=[vocab_size] (an id the model cannot "
            "sample), pad_id=vocab_size+1",
            "Sampler prefill computes logits at every prompt position "
            "(Qwen2 has no decode_only_last_token) and the decode "
            "while_loop runs gen_len steps after the prefill token, the last "
            "one's token discarded (tunix's loop bounds)",
            "weights: N(0,0.02) matrices and biases, RMSNorm 1 (tunix's "
            "init has zero MLP and biases)",
        ],
    }

  def run(self):
    seed = self.spec["seed"] * 100003 + self.calls
    self.calls += 1
    seconds, out = _bench.timed(lambda: self.sampler(
        self.prompts, seed=seed, **self.kwargs))
    tokens = int(sum(len(t) for t in out.tokens))
    expected = self.rows * self.spec["gen_len"]
    if tokens != expected:
      raise RuntimeError(f"generated {tokens} tokens, expected {expected}")
    return {"seconds": seconds, "tokens": tokens}


# ---------------------------------------------------------------- grpo step


class GrpoStep:
  """One GRPO step with tunix's learner.

  ``GRPOLearner(RLCluster(actor=Qwen2, reference=frozen copy,
  rollout_engine="vanilla"), GRPOConfig(num_generations=group,
  num_iterations=1, beta=kl_coef, epsilon, kl_loss_mode="low_var_kl",
  loss_agg_mode="token-mean"), reward_fns=[ids reward])`` with
  ``optax.adam(learning_rate)``; ``run()`` calls
  ``learner.train([{"prompts": prompts}])`` with ``max_steps`` one more
  than the steps done, i.e. exactly one global step (one rollout of
  prompts*group rows, one reference forward, one optimizer update on one
  mini-batch of all rows).

  Phases (timed by replacing three bound methods on the instances with
  timing wrappers that call the originals):

  * ``sample``: ``RLCluster.generate`` (the vanilla sampler, incl. the
    host encode/decode of strings);
  * ``score``: the rest of ``GRPOLearner._generate_and_compute_advantage``
    (reference per-token log-probs, rewards, advantages), blocked on its
    output;
  * ``update``: ``RLCluster.update_actor`` (the jitted policy forward +
    backward + adam update; tunix's trainer waits for the loss).

  ``seconds`` is the wall time of the whole ``train`` call; the rest of it
  (``overhead``: data-queue thread, metric buffering, ``rl_cluster.close``
  which ``train`` always calls at its end) is reported apart.
  """

  def __init__(self, spec):
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner
    from tunix.rl.rollout import base_rollout
    self.spec = spec
    p, g = spec["prompts"], spec["group"]
    self.rows = p * g
    actor = random_qwen2(spec)
    graphdef, state = nnx.split(actor)
    reference = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
    self.tokenizer = IdTokenizer(spec["vocab_size"])
    self.prompts = prompt_strings(random_prompts(spec, p))
    # The empty mesh (what tunix's own CPU tests use): no sharding.
    mesh = jax.sharding.Mesh(np.empty((), dtype=object), ())
    Role = rl_cluster_lib.Role
    self.rollout_config = base_rollout.RolloutConfig(
        max_tokens_to_generate=spec["gen_len"],
        max_prompt_length=spec["prompt_len"],
        kv_cache_size=spec["prompt_len"] + spec["gen_len"],
        temperature=float(spec["temperature"]), top_p=1.0, top_k=None,
        eos_tokens=[self.tokenizer.eos_id()], seed=0,
        data_type=DTYPES[spec.get("dtype", "float32")])
    self.training_config = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=optax.adam(spec["learning_rate"]),
        eval_every_n_steps=10**9, max_steps=1)
    cluster_config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={Role.ACTOR: mesh, Role.REFERENCE: mesh,
                      Role.ROLLOUT: mesh},
        rollout_engine="vanilla", offload_to_cpu=False,
        training_config=self.training_config,
        rollout_config=self.rollout_config)
    self.cluster = rl_cluster_lib.RLCluster(
        actor=actor, reference=reference, tokenizer=self.tokenizer,
        cluster_config=cluster_config)
    self.algo_config = grpo_learner.GRPOConfig(
        num_generations=g, num_iterations=1, beta=float(spec["kl_coef"]),
        epsilon=float(spec["epsilon"]), kl_loss_mode="low_var_kl",
        loss_agg_mode="token-mean")
    self.rewards_seen = []

    def ids_reward(prompts, completions, **kwargs):
      """protocol.reward on the generated ids (parsed back from the
      IdTokenizer text, which is exactly the ids)."""
      del prompts, kwargs
      ids = [[int(t) for t in c.split()] for c in completions]
      r = protocol.reward(ids)
      self.rewards_seen.append(r)
      return r

    self.learner = grpo_learner.GRPOLearner(
        rl_cluster=self.cluster, algo_config=self.algo_config,
        reward_fns=[ids_reward])
    if self.learner.should_sync_weights:
      raise RuntimeError("actor and rollout do not share weights")
    self._wrap()
    self.steps = 0
    # Warm-up, two untimed steps: the first compiles the sampler (prefill
    # and decode), the reference forward and the train step; the second
    # still compiles one small host-side op on first use and ran slower
    # than the steps after it in testing.
    self.run()
    self.run()

  def _wrap(self):
    timers = self.timers = {}
    cluster, learner = self.cluster, self.learner
    gen = cluster.generate
    prep = learner._generate_and_compute_advantage  # pylint: disable=protected-access
    upd = cluster.update_actor

    def generate(*args, **kwargs):
      t0 = time.perf_counter()
      out = gen(*args, **kwargs)
      timers["sample"] = timers.get("sample", 0.0) + time.perf_counter() - t0
      timers["tokens"] = timers.get("tokens", 0) + int(
          sum(len(t) for t in out.tokens))
      return out

    def generate_and_compute_advantage(*args, **kwargs):
      t0 = time.perf_counter()
      out = _block(prep(*args, **kwargs))
      timers["prepare"] = (timers.get("prepare", 0.0)
                           + time.perf_counter() - t0)
      timers["completion_mask"] = int(np.asarray(out.completion_mask).sum())
      return out

    def update_actor(*args, **kwargs):
      t0 = time.perf_counter()
      out = upd(*args, **kwargs)
      _block(nnx.state(cluster.actor_trainer.model, nnx.Param))
      timers["update"] = timers.get("update", 0.0) + time.perf_counter() - t0
      return out

    cluster.generate = generate
    learner._generate_and_compute_advantage = generate_and_compute_advantage  # pylint: disable=protected-access
    cluster.update_actor = update_actor

  def info(self):
    c = self.algo_config
    return {
        "versions": _versions(),
        "api": ("tunix.rl.grpo.grpo_learner.GRPOLearner(RLCluster(actor="
                "tunix.models.qwen2.Qwen2, reference=frozen copy, "
                "rollout_engine='vanilla', RLTrainingConfig(actor_optimizer="
                f"optax.adam({self.spec['learning_rate']})), RolloutConfig("
                f"max_tokens_to_generate={self.rollout_config.max_tokens_to_generate}, "
                f"max_prompt_length={self.rollout_config.max_prompt_length}, "
                f"temperature={self.rollout_config.temperature}, top_p=1.0, "
                "top_k=None, eos_tokens=[vocab_size])), GRPOConfig("
                f"num_generations={c.num_generations}, num_iterations="
                f"{c.num_iterations}, beta={c.beta}, epsilon={c.epsilon}, "
                f"kl_loss_mode={c.kl_loss_mode!r}, loss_agg_mode="
                f"{c.loss_agg_mode!r}, advantage_estimator="
                f"{c.advantage_estimator!r}), reward_fns=[ids_reward])"
                ".train([{'prompts': prompts}]) per step"),
        "phases": ("sample = RLCluster.generate; score = rest of "
                   "GRPOLearner._generate_and_compute_advantage (reference "
                   "log-probs + reward + advantages); update = "
                   "RLCluster.update_actor; timed by wrapping those bound "
                   "methods on the instances"),
        "differs": [
            "KL: tunix's default kl_loss_mode='kl' is k1 (logp - ref); set "
            "'low_var_kl' = k3 exp(ref-lp)-(ref-lp)-1 as the spec asks",
            "aggregation: tunix's default loss_agg_mode "
            "'sequence-mean-token-mean'; set 'token-mean' (the same value "
            "here: every response has gen_len tokens)",
            "advantage: tunix's 'grpo' estimator (r-mean)/(std(ddof=1)+1e-6)"
            " is not configurable; kept (the spec's reference has +1e-4, "
            "a relative difference of ~1e-4 in the advantages; same cost)",
            "no behaviour log-prob pass: with num_iterations=1 tunix sets "
            "old log-probs = stop_gradient(current) inside the loss (ratio "
            "1), so 'score' is the reference forward only",
            "the loss also computes the token entropy of the full logits "
            "(aux metric, always on), clips the log-ratio to [-20, 20] and "
            "computes logits at every prompt+response position; the "
            "trainer computes the global gradient norm each step",
            "reward inside 'score' (tunix's advantage_computation span), "
            "computed from IdTokenizer text = the generated ids",
            "rollout and policy share one model (same mesh, no weight "
            "sync); the rollout seed changes every step",
            "weights: N(0,0.02) matrices and biases, RMSNorm 1 (tunix's "
            "init has zero MLP and biases); no mesh (single CPU device)",
            "tokenizer: IdTokenizer, eos=vocab_size, pad=vocab_size+1 "
            "(never sampled), no BOS",
        ],
    }

  def run(self):
    self.timers.clear()
    self.rewards_seen.clear()
    self.rollout_config.seed = self.spec["seed"] * 100003 + self.steps
    before = self.cluster.actor_trainer.train_steps
    self.training_config.max_steps = before + 1
    t0 = time.perf_counter()
    self.learner.train([{"prompts": np.asarray(self.prompts)}])
    seconds = time.perf_counter() - t0
    self.steps += 1
    if self.cluster.actor_trainer.train_steps != before + 1:
      raise RuntimeError("train() did not run exactly one optimizer step")
    t = self.timers
    expected = self.rows * self.spec["gen_len"]
    if t.get("tokens") != expected or t.get("completion_mask") != expected:
      raise RuntimeError(f"generated {t.get('tokens')} tokens "
                         f"({t.get('completion_mask')} in the mask), "
                         f"expected {expected}")
    sample, update = t["sample"], t["update"]
    score = t["prepare"] - sample
    loss = self.cluster.actor_trainer.metrics_logger.get_metric_history(
        "actor", "loss", "train")
    return {"seconds": seconds,
            "phases": {"sample": sample, "score": score, "update": update},
            "overhead": seconds - sample - score - update,
            "tokens": t["tokens"],
            "loss": float(np.asarray(loss[-1])) if len(loss) else None,
            "mean_reward": float(np.mean(self.rewards_seen[-1]))}


# ---------------------------------------------------------------- token stats


class TokenStats:
  """tunix's per-token path from logits: ``selective_log_softmax(logits,
  targets)`` (tunix.rl.common; what ``compute_per_token_logps`` calls) and
  ``compute_entropy_from_logits(logits)`` (tunix.rl.algo_core; computed by
  the GRPO loss every step), on ``logits = h @ W`` materialised in full
  (tunix has no chunked / fused variant); ``jax.jit(jax.value_and_grad)``
  of ``sum(logprob) + sum(entropy)`` in ``h [N,d]`` and ``W [d,V]``."""

  def __init__(self, spec):
    from tunix.rl import algo_core
    from tunix.rl import common
    dtype = DTYPES[spec.get("dtype", "float32")]
    n, d, v = spec["tokens"], spec["hidden_size"], spec["vocab_size"]
    k1, k2, k3 = jax.random.split(jax.random.key(spec["seed"]), 3)
    self.h = jax.random.normal(k1, (n, d), dtype)
    self.w = (jax.random.normal(k2, (d, v), jnp.float32) / np.sqrt(d)
              ).astype(dtype)
    self.targets = jax.random.randint(k3, (n,), 0, v)
    targets = self.targets

    def loss(h, w):
      # tunix's Qwen2 computes the tied-embedding logits as jnp.dot and
      # returns them in float32.
      logits = jnp.dot(h, w).astype(jnp.float32)
      lp = common.selective_log_softmax(logits, targets)
      ent = algo_core.compute_entropy_from_logits(logits)
      return jnp.sum(lp) + jnp.sum(ent)

    self.fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    self.memory = _bench.compiled_memory(self.fn, self.h, self.w)
    self.run()

  def info(self):
    return {"versions": _versions(), **self.memory,
            "api": ("jax.jit(jax.value_and_grad(sum(tunix.rl.common."
                    "selective_log_softmax(h @ W, targets)) + sum(tunix.rl."
                    "algo_core.compute_entropy_from_logits(h @ W))))"),
            "differs": [
                "tunix has no chunked or fused log-prob/entropy op: the "
                "full [N,V] float32 logits are materialised",
                "compute_entropy_from_logits applies softmax to the "
                "log_softmax output (one more pass over [N,V])",
            ]}

  def run(self):
    seconds, (value, _) = _bench.timed(lambda: self.fn(self.h, self.w))
    return {"seconds": seconds, "value": float(value), **self.memory}


# ---------------------------------------------------------------- objective


def tunix_grpo_loss(logprobs, old_logprobs, ref_logprobs, rewards, mask,
                    group: int, epsilon: float, beta: float):
  """The GRPO loss from tunix's pieces, on given log-probs.

  * advantage: ``tunix.rl.algo_core.compute_drgrpo_advantages`` (tunix's
    group centring ``r - mean_g``) divided by ``std_g(ddof=1) + 1e-4``
    (tunix's own ``compute_advantages`` divides by ``std(ddof=1) + 1e-6``
    and takes no options, so the division is restated here with the spec's
    1e-4);
  * surrogate: the clipped-ratio lines of ``algo_core.grpo_loss_fn``
    (tunix exposes them only inside that model-bound loss, so they are
    restated here verbatim: log-ratio clipped to [-20, 20], ``max(-A rho,
    -A clip(rho, 1-eps, 1+eps))``, the dual clip disabled);
  * KL: ``tunix.rl.common.compute_kl_divergence(method="low_var_kl")`` (k3);
  * aggregation: ``tunix.rl.common.aggregate_loss(..., "token-mean")`` of
    the policy loss plus ``beta`` times that of the KL, as
    ``grpo_loss_fn`` adds them.
  """
  from tunix.rl import algo_core
  from tunix.rl import common
  r = rewards.astype(jnp.float32)
  centred = algo_core.compute_drgrpo_advantages(r, group)
  std = r.reshape(-1, group).std(axis=-1, ddof=1).repeat(group)
  advantages = centred / (std + 1e-4)

  per_token_logps = logprobs.astype(jnp.float32)
  log_ratio = per_token_logps - old_logprobs.astype(jnp.float32)
  log_ratio = jnp.clip(log_ratio, max=20.0, min=-20.0)
  is_ratio = jnp.exp(log_ratio)
  adv = jnp.expand_dims(advantages, 1)
  pg_loss_1 = -adv * is_ratio
  pg_loss_2 = -adv * jnp.clip(is_ratio, 1 - epsilon, 1 + epsilon)
  per_token_loss = jnp.maximum(pg_loss_1, pg_loss_2).astype(jnp.float32)
  loss = common.aggregate_loss(per_token_loss, mask, "token-mean")
  kl = common.compute_kl_divergence(per_token_logps, ref_logprobs,
                                    "low_var_kl")
  kl_loss = common.aggregate_loss(kl, mask, "token-mean")
  return loss + beta * kl_loss


class ObjectiveAlone:
  """``tunix_grpo_loss`` on ``protocol.objective_inputs``: advantage, clip,
  k3 KL and token mean, ``jax.jit(jax.value_and_grad)`` in the log-probs."""

  def __init__(self, spec):
    self.spec = spec
    x = protocol.objective_inputs(spec)
    self.x = {k: jnp.asarray(x[k]) for k in
              ("logprobs", "old_logprobs", "ref_logprobs", "rewards", "mask")}
    g, eps, beta = x["group"], float(spec["epsilon"]), float(spec["kl_coef"])

    def loss(logprobs, old, ref, rewards, mask):
      return tunix_grpo_loss(logprobs, old, ref, rewards, mask, g, eps, beta)

    self.fn = jax.jit(jax.value_and_grad(loss))
    value = float(self._call()[0])
    expected = protocol.objective_reference(spec)
    if not np.isclose(value, expected, rtol=1e-5, atol=1e-7):
      raise AssertionError(f"tunix objective {value} != reference "
                           f"{expected}")
    self.check = {"loss": value, "reference": expected}
    self.run()

  def _call(self):
    x = self.x
    return self.fn(x["logprobs"], x["old_logprobs"], x["ref_logprobs"],
                   x["rewards"], x["mask"])

  def info(self):
    return {
        "versions": _versions(), **self.check,
        "api": ("jax.jit(jax.value_and_grad(loss)) with tunix.rl.algo_core."
                "compute_drgrpo_advantages, the clipped surrogate of "
                "tunix.rl.algo_core.grpo_loss_fn, tunix.rl.common."
                "compute_kl_divergence('low_var_kl'), tunix.rl.common."
                "aggregate_loss('token-mean')"),
        "differs": [
            "advantage: tunix's GRPO estimator (algo_core.compute_advantages)"
            " is (r-mean)/(std(ddof=1) + 1e-6) with no options (the spec has "
            "+1e-4); used tunix's centring (compute_drgrpo_advantages) and "
            "divided by std(ddof=1) + 1e-4 here to match the reference",
            "surrogate: tunix has no standalone clipped-loss function (it is "
            "inline in the model-bound grpo_loss_fn); its lines are restated "
            "(incl. the log-ratio clip to [-20, 20], a no-op here)",
            "KL: tunix's GRPOConfig default kl_loss_mode='kl' (k1); used "
            "'low_var_kl' (k3)",
            "aggregation: tunix's default loss_agg_mode "
            "'sequence-mean-token-mean'; used 'token-mean' (differs here: "
            "lengths vary)",
            "advantages computed inside the jitted function (tunix's learner "
            "computes them on the host in NumPy)",
        ],
    }

  def run(self):
    seconds, (value, _) = _bench.timed(self._call)
    return {"seconds": seconds, "loss": float(value)}


BENCHES = {"grpo_step": GrpoStep, "sampler": Sampler,
           "token_stats": TokenStats, "objective": ObjectiveAlone}

if __name__ == "__main__":
  protocol.serve(BENCHES)
