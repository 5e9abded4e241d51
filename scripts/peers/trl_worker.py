"""TRL's side of ``scripts.bench_peers`` (PyTorch CPU, runs in the peer venv).

Run from the repository root as
``nice -n 19 <peer venv>/bin/python -m scripts.peers.trl_worker`` and drive
it with ``protocol.Worker``. Benches (see ``protocol.py`` for the specs):

* ``grpo_step``: one optimizer step of TRL's ``GRPOTrainer`` on a random
  ``Qwen2ForCausalLM`` of the ``MODEL`` shape, with the ``GRPO`` spec's
  settings (beta = kl_coef, k3 KL without TRL's importance weight, no
  gradient clipping, constant learning rate, no gradient checkpointing).
  The trainer's own loop (``trainer.train()``) runs in a background thread
  and a callback holds it at each ``on_step_begin`` until ``run()`` lets one
  step through; phases are timed by wrapping the trainer's methods.
* ``grpo_step_defaults``: the same, with TRL's defaults for everything the
  spec does not force (beta 0, gradient checkpointing, clipping at 1.0,
  linear schedule, KL importance weight): ``info()`` lists them.
* ``sampler``: ``transformers`` ``generate`` (sampling, temperature 1, no
  top-k/top-p, exactly ``gen_len`` new tokens) under ``inference_mode``.
* ``objective``: the GRPO objective of ``protocol.objective_reference`` in
  plain torch, forward + backward in the log-probs.
* ``objective_trl``: not available (TRL computes its GRPO loss only inside
  ``GRPOTrainer._compute_loss``, from a model forward): setup raises.

Nothing here imports divrl; only ``scripts.peers.protocol`` and
``scripts._bench`` (standard library) from the project.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import weakref

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scripts import _bench  # noqa: E402
from scripts.peers import protocol  # noqa: E402

PACKAGES = ("trl", "transformers", "torch", "accelerate", "datasets",
            "tokenizers", "numpy")


def _versions() -> dict:
  return _bench.machine(PACKAGES)["versions"]


def _threads(spec) -> int:
  n = int(spec.get("threads", 2))
  torch.set_num_threads(n)
  return n


def _check_model_spec(spec) -> None:
  if spec.get("dtype", "float32") != "float32":
    raise NotImplementedError(
        f"the TRL worker runs float32 only (spec dtype {spec['dtype']!r}); "
        "TRL's bf16/fp16 flags are autocast mixed precision, not a model of "
        "that dtype")
  if not spec.get("qkv_bias", True):
    raise NotImplementedError(
        "transformers' Qwen2 attention always has q/k/v bias "
        "(qkv_bias=False cannot be built with Qwen2ForCausalLM)")


def qwen2_config(spec, **extra):
  """A ``Qwen2Config`` of exactly the ``MODEL`` shape."""
  from transformers import Qwen2Config
  _check_model_spec(spec)
  return Qwen2Config(
      vocab_size=spec["vocab_size"], hidden_size=spec["hidden_size"],
      intermediate_size=spec["intermediate_size"],
      num_hidden_layers=spec["num_layers"],
      num_attention_heads=spec["num_heads"],
      num_key_value_heads=spec["num_kv_heads"], head_dim=spec["head_dim"],
      hidden_act="silu", rms_norm_eps=spec["rms_norm_eps"],
      rope_parameters={"rope_type": "default",
                       "rope_theta": float(spec["rope_theta"])},
      tie_word_embeddings=bool(spec["tie_word_embeddings"]),
      max_position_embeddings=max(
          64, spec.get("prompt_len", 0) + spec.get("gen_len", 0)),
      attention_dropout=0.0, use_sliding_window=False,
      pad_token_id=None, bos_token_id=None, eos_token_id=None,
      dtype="float32", **extra)


def random_model(spec):
  """Seeded random float32 ``Qwen2ForCausalLM`` (transformers' init)."""
  from transformers import Qwen2ForCausalLM
  torch.manual_seed(spec["seed"])
  model = Qwen2ForCausalLM(qwen2_config(spec)).to(torch.float32)
  heads = model.model.layers[0].self_attn
  assert heads.head_dim == spec["head_dim"], heads.head_dim
  assert heads.q_proj.bias is not None and heads.o_proj.bias is None
  if spec["tie_word_embeddings"]:
    assert (model.lm_head.weight.data_ptr()
            == model.model.embed_tokens.weight.data_ptr())
  return model


def random_prompts(spec, count: int) -> np.ndarray:
  """Random ids in ``[1, vocab)`` of exactly ``prompt_len`` (no padding)."""
  rng = np.random.default_rng(spec["seed"])
  return rng.integers(1, spec["vocab_size"],
                      size=(count, spec["prompt_len"]), dtype=np.int64)


def word_tokenizer(vocab_size: int):
  """A word-level ``PreTrainedTokenizerFast``: token ``i`` is the word
  ``t{i}`` for ``i < vocab_size``, plus one extra ``<eos>`` (id
  ``vocab_size``, also the pad token) that the model, with ``vocab_size``
  logits, can never sample. Encoding ``"t5 t7"`` gives ``[5, 7]`` with no
  special tokens added; decoding gives the words back."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  vocab = {f"t{i}": i for i in range(vocab_size)}
  vocab["<eos>"] = vocab_size
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return PreTrainedTokenizerFast(
      tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>",
      unk_token="<eos>", padding_side="left", truncation_side="left")


# ---------------------------------------------------------------- grpo_step


class _Stop(Exception):
  """Raised inside the trainer's thread to end ``trainer.train()``."""


class _StepGate:
  """Holds the trainer's own loop at each ``on_step_begin`` until ``run()``
  lets one optimizer step through; records when it began and ended.

  Holds no reference to the bench, so that dropping the bench runs its
  finalizer, which stops the loop."""

  def __init__(self):
    self.go = queue.Queue()
    self.events = queue.Queue()

  def stop(self):
    self.go.put("stop")

  def callback(self):
    from transformers import TrainerCallback
    gate = self

    class StepGate(TrainerCallback):

      def on_step_begin(self, args, state, control, **kwargs):
        gate.events.put(("ready", time.perf_counter()))
        if gate.go.get() == "stop":
          raise _Stop()
        gate.events.put(("begin", time.perf_counter()))

      def on_step_end(self, args, state, control, **kwargs):
        gate.events.put(("end", time.perf_counter()))

    return StepGate()

  def wait(self, kind: str, timeout: float | None = None) -> float:
    got, value = self.events.get(timeout=timeout)
    if got == "error":
      raise RuntimeError(f"the trainer's loop failed: {value}")
    if got != kind:
      raise RuntimeError(f"trainer loop: expected {kind!r}, got {got!r}")
    return value


class _PhaseClock:
  """Seconds spent inside the wrapped trainer methods during one step."""

  def __init__(self):
    self.reset()

  def reset(self):
    self.generate = 0.0        # GRPOTrainer._generate
    self.reward = 0.0          # the reward function
    self.gen_and_score = 0.0   # GRPOTrainer._generate_and_score_completions
    self.compute_loss = 0.0    # GRPOTrainer.compute_loss (forward + loss)
    self.completion_tokens = 0
    self.prompt_lengths = set()
    self.completion_lengths = set()
    self.loss = float("nan")


def _wrap(trainer, name, clock, attr, after=None):
  """Replaces ``trainer.<name>`` by a timed call adding to ``clock.<attr>``."""
  inner = getattr(trainer, name)

  def timed(*args, **kwargs):
    t0 = time.perf_counter()
    out = inner(*args, **kwargs)
    setattr(clock, attr, getattr(clock, attr) + time.perf_counter() - t0)
    if after is not None:
      after(out)
    return out

  setattr(trainer, name, timed)


def _name(x) -> str:
  """An enum's value (``SchedulerType.LINEAR`` -> ``linear``)."""
  return str(getattr(x, "value", x))


class GrpoStep:
  """One GRPO optimizer step of ``trl.GRPOTrainer``, spec-matched."""

  defaults = False

  def __init__(self, spec):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    spec = {**protocol.MODEL, **protocol.GRPO, **spec}
    self.spec = spec
    self.threads = _threads(spec)
    p, g = spec["prompts"], spec["group"]
    self.rows = p * g
    self.expected_tokens = self.rows * spec["gen_len"]
    self._tmp = tempfile.mkdtemp(prefix="trl-worker-")
    weakref.finalize(self, shutil.rmtree, self._tmp, True)

    # The model: built at random, saved and reloaded from a local folder,
    # because GRPOTrainer builds its reference model (beta != 0) with
    # from_pretrained(model.config._name_or_path).
    model_dir = os.path.join(self._tmp, "model")
    random_model(spec).save_pretrained(model_dir)
    from transformers import Qwen2ForCausalLM
    model = Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = word_tokenizer(spec["vocab_size"])

    # Dataset: 8 steps' worth of random prompts as text ("t12 t7 ..."),
    # which the word-level tokenizer maps back to exactly these ids.
    ids = random_prompts(spec, 8 * p)
    dataset = Dataset.from_dict(
        {"prompt": [" ".join(f"t{int(t)}" for t in row) for row in ids]})

    clock = _PhaseClock()
    self.clock = clock

    def even_share(completion_ids, **kwargs):
      """protocol.reward on the completion token ids TRL passes."""
      t0 = time.perf_counter()
      out = protocol.reward(completion_ids)
      clock.reward += time.perf_counter() - t0
      return out

    self.args_used = self._config_kwargs(spec)
    config = GRPOConfig(output_dir=os.path.join(self._tmp, "out"),
                        **self.args_used)
    self.gate = _StepGate()
    trainer = GRPOTrainer(model=model, reward_funcs=even_share, args=config,
                          train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[self.gate.callback()])
    shutil.rmtree(model_dir, ignore_errors=True)
    self.trainer = trainer
    self.resolved = {
        "beta": trainer.beta, "loss_type": trainer.loss_type,
        "scale_rewards": trainer.scale_rewards,
        "epsilon_low": trainer.epsilon_low,
        "epsilon_high": trainer.epsilon_high,
        "use_bias_correction_kl": config.use_bias_correction_kl,
        "importance_sampling_level": config.importance_sampling_level,
        "gradient_checkpointing": config.gradient_checkpointing,
        "max_grad_norm": config.max_grad_norm,
        "lr_scheduler_type": _name(config.lr_scheduler_type),
        "learning_rate": config.learning_rate, "optim": _name(config.optim),
        "weight_decay": config.weight_decay,
        "adam": [config.adam_beta1, config.adam_beta2, config.adam_epsilon],
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "num_generations": config.num_generations,
        "generation_batch_size": config.generation_batch_size,
        "steps_per_generation": config.steps_per_generation,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_iterations": config.num_iterations,
        "max_completion_length": config.max_completion_length,
        "temperature": config.temperature, "top_k": config.top_k,
        "top_p": config.top_p, "bf16": config.bf16, "fp16": config.fp16,
        "use_vllm": config.use_vllm, "use_cpu": config.use_cpu,
        "ref_model": type(trainer.ref_model).__name__
                     if trainer.ref_model is not None else None,
        "eos_token_ids": list(trainer.eos_token_ids),
        "pad_token_id": tokenizer.pad_token_id,
        "attn_implementation": model.config._attn_implementation,
        "device": str(config.device),
    }

    def check_generation(out):
      prompt_ids, completion_ids = out[0], out[1]
      clock.prompt_lengths.update(len(x) for x in prompt_ids)
      clock.completion_lengths.update(len(x) for x in completion_ids)
      clock.completion_tokens += sum(len(x) for x in completion_ids)

    def keep_loss(loss):
      clock.loss = float(loss.detach())

    _wrap(trainer, "_generate", clock, "generate", after=check_generation)
    _wrap(trainer, "_generate_and_score_completions", clock, "gen_and_score")
    _wrap(trainer, "compute_loss", clock, "compute_loss", after=keep_loss)

    gate = self.gate

    def train():
      try:
        trainer.train()
        gate.events.put(("error", "trainer.train() returned"))
      except _Stop:
        pass
      except BaseException as e:  # noqa: BLE001 - reported through run()
        gate.events.put(("error", f"{type(e).__name__}: {e}"))

    self.thread = threading.Thread(target=train, name="trl-train",
                                   daemon=True)
    self.thread.start()
    weakref.finalize(self, gate.stop)
    self.gate.wait("ready")
    self.steps = 0
    self.warmup = self.run()   # one untimed step: the warm-up

  def _config_kwargs(self, spec):
    p, g = spec["prompts"], spec["group"]
    forced = dict(
        # shape of the step: one optimizer step = one group batch
        per_device_train_batch_size=p * g, num_generations=g,
        gradient_accumulation_steps=1, num_iterations=1,
        max_completion_length=spec["gen_len"],
        # sampling: temperature 1, no top-k / top-p
        temperature=spec["temperature"], top_k=0, top_p=1.0, min_p=None,
        # precision and device
        bf16=False, fp16=False, use_cpu=True, use_vllm=False,
        # the loop runs until the bench is dropped; no I/O
        max_steps=10**9, report_to="none", logging_strategy="no",
        save_strategy="no", eval_strategy="no", disable_tqdm=True,
        log_completions=False, seed=spec["seed"], data_seed=spec["seed"],
        dataloader_num_workers=0,
    )
    if self.defaults:
      return forced
    return dict(
        forced,
        beta=spec["kl_coef"], epsilon=spec["epsilon"],
        learning_rate=spec["learning_rate"],
        loss_type="dapo",            # token mean over the batch (1 step)
        scale_rewards="group",       # (r - mean_g) / (std_g + 1e-4)
        use_bias_correction_kl=False,  # plain k3, as the spec
        importance_sampling_level="token",
        gradient_checkpointing=False,  # equal FLOPs: no recomputation
        max_grad_norm=0.0,           # no clipping (divrl: plain adam)
        lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0,
    )

  def info(self):
    trainer = self.trainer
    out = {
        "versions": _versions(),
        "torch_num_threads": torch.get_num_threads(),
        "threads_requested": self.threads,
        "api": ("trl.GRPOTrainer(model=transformers.Qwen2ForCausalLM, "
                "reward_funcs=[f(completion_ids)->protocol.reward], "
                "args=trl.GRPOConfig(...), train_dataset=datasets.Dataset("
                "prompt=text), processing_class=PreTrainedTokenizerFast("
                "WordLevel)).train() in a thread; a TrainerCallback holds "
                "the loop at on_step_begin, run() lets one optimizer step "
                "through and returns at the next on_step_begin"),
        "grpo_config": {k: v for k, v in self.args_used.items()},
        "resolved": self.resolved,
        "phases": {
            "sample": "GRPOTrainer._generate (tokenize the text prompts, "
                      "model.generate over prompts*group rows, EOS masking, "
                      "batch_decode, length metrics) + the reward function "
                      "(protocol.reward on completion_ids)",
            "score": "the rest of GRPOTrainer._generate_and_score_"
                     "completions: reference-model log-probs (no_grad "
                     "forward over prompt+completion, when beta != 0), "
                     "group advantages, padding, metrics; no old-policy "
                     "forward (TRL skips it when on-policy: see notes)",
            "update": "the rest of the optimizer step: _prepare_inputs' "
                      "shuffle/split, compute_loss (policy forward with "
                      "TRL's fused LM head: log-probs + entropy), backward, "
                      "grad-norm, AdamW step, scheduler step, zero_grad",
        },
        "reward": "reward function receives TRL's completion_ids (token "
                  "id lists) and applies protocol.reward; completions text "
                  "is ignored",
        "tokenizer": f"PreTrainedTokenizerFast over a WordLevel vocab "
                     f"t0..t{self.spec['vocab_size'] - 1} plus '<eos>' "
                     f"(id {self.spec['vocab_size']}, also pad), never "
                     "sampled since the model has vocab_size logits: "
                     "completions are exactly max_completion_length "
                     "tokens, no min_new_tokens processor",
        "warmup": self.warmup,
        "differs": self._differences(),
    }
    if self.defaults:
      out["trl_defaults_used"] = self._defaults_list()
    return out

  def _differences(self):
    spec = self.spec
    diffs = [
        "Advantage = (r - mean_g) / (std_g + 1e-4) with TRL's Bessel-"
        "corrected std (ddof 1, trl.trainer.utils.nanstd), as "
        "protocol.objective_reference.",
        "On-policy (num_iterations 1, gradient_accumulation_steps 1) TRL "
        "does not compute old-policy log-probs: it uses the policy's own "
        "log-probs .detach() as old (ratio exactly 1, same gradient); so "
        "the step has no separate behaviour-log-prob forward.",
        "Generation runs model.generate on prompts*group rows (each prompt "
        "repeated group times by TRL's RepeatSampler): the prompt prefill "
        "is done group times per prompt.",
        "TRL's fused LM head (trl add_fused_lm_head) on CPU scores every "
        "position of prompt+completion (labels of prompt positions masked, "
        "Triton compaction is CUDA/XPU only), in vocabulary chunks, and "
        "also computes the per-token entropy (for metrics) in the policy "
        "forward.",
        "The Trainer loop computes the global gradient norm each step "
        "(clip_grad_norm_, with max_norm inf when clipping is off).",
        f"Optimizer: transformers default '{self.resolved['optim']}' "
        "(AdamW, weight_decay 0, betas 0.9/0.999, eps 1e-8).",
        "Attention implementation: transformers default "
        f"'{self.resolved['attn_implementation']}'.",
        "Sampling RNG: torch's generator (seeded by GRPOConfig.seed), so "
        "the sampled tokens differ from other sides; the token count is "
        "equal.",
    ]
    if self.defaults:
      diffs.insert(0, "grpo_step_defaults: TRL defaults for everything "
                      "but shape/batch/group/lengths/sampling/precision "
                      "(see trl_defaults_used)")
    else:
      diffs += [
          "KL: TRL's per-token KL is k3 = exp(ref - lp) - (ref - lp) - 1 "
          "(checked in GRPOTrainer._compute_loss); with TRL's default "
          "use_bias_correction_kl=True it is multiplied by the ratio "
          "exp(lp - old); set False here to match the spec's plain k3.",
          "loss_type 'dapo' = sum of masked per-token loss / number of "
          "completion tokens in the batch = the spec's token mean for one "
          "micro-batch.",
          "No gradient checkpointing (TRL's default is on) and no gradient "
          "clipping (max_grad_norm 0; transformers' default is 1.0), "
          "constant learning rate (default is linear decay): so the step's "
          "FLOPs and update match a plain Adam step.",
      ]
    return diffs

  def _defaults_list(self):
    r = self.resolved
    return {
        "beta": r["beta"], "loss_type": r["loss_type"],
        "scale_rewards": r["scale_rewards"],
        "epsilon": [r["epsilon_low"], r["epsilon_high"]],
        "learning_rate": r["learning_rate"],
        "use_bias_correction_kl": r["use_bias_correction_kl"],
        "importance_sampling_level": r["importance_sampling_level"],
        "gradient_checkpointing": r["gradient_checkpointing"],
        "max_grad_norm": r["max_grad_norm"],
        "lr_scheduler_type": r["lr_scheduler_type"],
        "optim": r["optim"], "weight_decay": r["weight_decay"],
        "ref_model": r["ref_model"],
        "note": "beta 0.0 means no reference model and no KL term: the "
                "score phase has no forward pass at all; the spec's "
                "kl_coef, epsilon and learning_rate are not passed (TRL's "
                "epsilon and learning_rate defaults happen to be 0.2 and "
                "1e-6)",
    }

  def run(self):
    clock = self.clock
    clock.reset()
    self.gate.go.put("step")
    begin = self.gate.wait("begin")
    end = self.gate.wait("end")
    # Wait until the loop is held again, so that nothing of this side runs
    # while the other side of the pair is timed.
    self.gate.wait("ready")
    self.steps += 1
    seconds = end - begin
    tokens = clock.completion_tokens
    if tokens != self.expected_tokens:
      raise RuntimeError(f"generated {tokens} tokens, expected "
                         f"{self.expected_tokens}")
    if clock.prompt_lengths != {self.spec["prompt_len"]} or (
        clock.completion_lengths != {self.spec["gen_len"]}):
      raise RuntimeError(f"prompt lengths {clock.prompt_lengths}, "
                         f"completion lengths {clock.completion_lengths}")
    if not np.isfinite(clock.loss):
      raise FloatingPointError(f"non-finite loss {clock.loss}")
    sample = clock.generate + clock.reward
    score = clock.gen_and_score - sample
    update = seconds - clock.gen_and_score
    return {"seconds": seconds,
            "phases": {"sample": sample, "score": score, "update": update},
            "tokens": tokens, "loss": clock.loss,
            "global_step": int(self.trainer.state.global_step),
            "torch_num_threads": torch.get_num_threads()}


class GrpoStepDefaults(GrpoStep):
  """``grpo_step`` with TRL's own defaults for what the spec leaves open."""

  defaults = True


# ------------------------------------------------------------------ sampler


class Sampler:
  """``transformers`` ``generate`` sampling on a random Qwen2 model:
  ``batch`` prompts (``group`` samples each, default 1), exactly
  ``gen_len`` new tokens."""

  def __init__(self, spec):
    spec = {**protocol.MODEL, **spec}
    self.spec = spec
    self.threads = _threads(spec)
    self.model = random_model(spec).eval()
    self.group = int(spec.get("group", 1))
    self.prompts = torch.from_numpy(random_prompts(spec, spec["batch"]))
    self.mask = torch.ones_like(self.prompts)
    self.kwargs = dict(do_sample=True, temperature=spec["temperature"],
                       top_k=0, top_p=1.0, max_new_tokens=spec["gen_len"],
                       min_new_tokens=spec["gen_len"],
                       num_return_sequences=self.group)
    self.expected = spec["batch"] * self.group * spec["gen_len"]
    torch.manual_seed(spec["seed"])
    self.warmup = self.run()

  def info(self):
    gc = self.model.generation_config
    return {
        "versions": _versions(),
        "torch_num_threads": torch.get_num_threads(),
        "api": "transformers.Qwen2ForCausalLM.generate(input_ids, "
               "attention_mask, " + ", ".join(
                   f"{k}={v!r}" for k, v in self.kwargs.items())
               + ") under torch.inference_mode()",
        "attn_implementation": self.model.config._attn_implementation,
        "cache": "transformers default (DynamicCache)",
        "generation_config": {"eos_token_id": gc.eos_token_id,
                              "pad_token_id": gc.pad_token_id},
        "warmup": self.warmup,
        "differs": [
            "The model config has no eos_token_id, so nothing can stop a "
            "row early; min_new_tokens=gen_len is passed as asked but has "
            "no EOS to suppress.",
            "Sampling RNG: torch's global generator (seeded once), so the "
            "tokens differ from other sides; the count is equal.",
        ],
    }

  def run(self):
    def go():
      with torch.inference_mode():
        return self.model.generate(self.prompts, attention_mask=self.mask,
                                   **self.kwargs)

    seconds, out = _bench.timed(go)
    tokens = (out.shape[1] - self.prompts.shape[1]) * out.shape[0]
    if tokens != self.expected:
      raise RuntimeError(f"generated {tokens} tokens, expected "
                         f"{self.expected}")
    return {"seconds": seconds, "tokens": int(tokens)}


# ---------------------------------------------------------------- objective


def grpo_objective_torch(logprobs, old, ref, rewards, mask, group, epsilon,
                         kl_coef):
  """``protocol.objective_reference`` in torch: GRPO advantages with the
  unbiased group std (ddof 1, TRL's convention), PPO clip, k3 KL, token
  mean of the negated objective."""
  r = rewards.view(-1, group)
  mean = r.mean(dim=1, keepdim=True)
  std = r.std(dim=1, keepdim=True, correction=1)
  adv = ((r - mean) / (std + 1e-4)).reshape(-1, 1)
  rho = torch.exp(logprobs - old)
  surrogate = torch.minimum(
      rho * adv, torch.clamp(rho, 1 - epsilon, 1 + epsilon) * adv)
  d = ref - logprobs
  k3 = torch.exp(d) - d - 1
  per_token = -(surrogate - kl_coef * k3)
  return (per_token * mask).sum() / mask.sum()


class Objective:
  """The objective alone on ``protocol.objective_inputs``: forward and
  backward in the log-probs (plain torch, eager)."""

  def __init__(self, spec):
    spec = {**protocol.OBJECTIVE, **spec}
    self.spec = spec
    self.threads = _threads(spec)
    x = protocol.objective_inputs(spec)
    self.logprobs = torch.from_numpy(x["logprobs"]).requires_grad_(True)
    self.old = torch.from_numpy(x["old_logprobs"])
    self.ref = torch.from_numpy(x["ref_logprobs"])
    self.rewards = torch.from_numpy(x["rewards"])
    self.mask = torch.from_numpy(x["mask"]).to(torch.float32)
    self.group = x["group"]
    value = self._step()
    expected = protocol.objective_reference(spec)
    if not abs(value - expected) <= 1e-5 * abs(expected):
      raise AssertionError(f"torch objective {value} != reference "
                           f"{expected} (relative tolerance 1e-5)")
    self.check = {"loss": value, "reference": expected,
                  "relative_error": abs(value - expected) / abs(expected)}
    self.run()

  def _step(self) -> float:
    self.logprobs.grad = None
    loss = grpo_objective_torch(
        self.logprobs, self.old, self.ref, self.rewards, self.mask,
        self.group, self.spec["epsilon"], self.spec["kl_coef"])
    loss.backward()
    return float(loss.detach())

  def info(self):
    return {
        "versions": _versions(),
        "torch_num_threads": torch.get_num_threads(),
        "api": "plain torch (eager, float32): GRPO advantage (unbiased "
               "group std, ddof 1, +1e-4), PPO clip, k3 KL, token mean; "
               "loss.backward() into logprobs (requires_grad)",
        "check_against_reference": self.check,
        "differs": [
            "Not TRL code: TRL has no GRPO loss callable on arrays (see "
            "objective_trl); this is the formula in plain torch, computed "
            "in float32 (the reference is float64)."],
    }

  def run(self):
    seconds, value = _bench.timed(self._step)
    return {"seconds": seconds, "loss": value}


class ObjectiveTrl:
  """Not available: see the reason raised."""

  def __init__(self, spec):
    raise NotImplementedError(
        "TRL 1.16.0 has no GRPO loss callable on arrays: the clipped "
        "surrogate, k3 KL and aggregation live inside the private "
        "GRPOTrainer._compute_loss(model, inputs), which first runs the "
        "model forward (_get_per_token_logps_and_entropies) to get the "
        "log-probs, and the group advantages are computed inside "
        "GRPOTrainer._generate_and_score_completions; calling them on "
        "arrays would need a stand-in trainer and model, i.e. not TRL's "
        "public API (the grpo_step bench runs this code path for real)")


BENCHES = {"grpo_step": GrpoStep, "grpo_step_defaults": GrpoStepDefaults,
           "sampler": Sampler, "objective": Objective,
           "objective_trl": ObjectiveTrl}

if __name__ == "__main__":
  protocol.serve(BENCHES)
