"""Run configs: the defaults every experiment file starts from, and variants.

This module imports ``ml_collections`` and, for the task defaults, the
pure-Python ``divrl.tasks`` (NumPy), so an experiment file that imports it
stays light: ``import experiments.countdown.grpo`` loads no JAX and no TFDS.

An experiment file (``experiments/<task>/<name>.py``) defines
``get_config(arg=None)``. ``arg`` is the text after ``:`` in
``--config experiments/countdown/grpo.py:seed=2,steps=50``; ``parse_arg``
turns it into typed values, so one file describes a grid of runs::

  def get_config(arg=None):
    arg = config.parse_arg(arg, seed=0, objective="grpo")
    c = config.default_config()
    c.seed = arg.seed
    ...
    return c

The objective lives in ``config.objective`` in one form (see
``divrl.objective.Objective.from_config``): ``advantage``, ``surrogate`` and
``aggregation`` are specs (a registered name, or a mapping ``{"name": ...,
**hyperparameters}``); ``transforms`` is a list of specs applied in order;
``token_weights`` and ``regularizers`` are mappings ``{label: spec}``, the
regularizer specs with a ``coef``. A spec in a mapping without ``"name"``
uses its label as the registered name.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections


def recipe(name: str) -> ml_collections.ConfigDict:
  """The objective config of the named recipe (``divrl.recipes``), to assign
  to ``config.objective``; an unknown name is an error that lists them."""
  from divrl import recipes  # pylint: disable=g-import-not-at-top
  out = recipes.get(name)
  return ml_collections.ConfigDict(out.to_dict(), type_safe=False)


def task_defaults() -> dict[str, dict]:
  """``{task name: {knob: default}}`` for every task of ``divrl.tasks``."""
  from divrl import tasks  # pylint: disable=g-import-not-at-top
  return {name: {f.name: f.default for f in dataclasses.fields(cls)
                 if f.default is not dataclasses.MISSING}
          for name, cls in tasks.TASKS.items()}


def task_kwargs(config: ml_collections.ConfigDict) -> dict:
  """The knobs of the run's task: ``config.task.kwargs[config.task.name]``.

  ``config.task.kwargs`` holds one mapping per task, filled with that task's
  defaults, so switching ``task.name`` takes the new task's defaults (not
  another task's knobs) and every knob can be set key by key:
  ``--config.task.kwargs.rare.max_target=500``. An unknown knob is refused
  when the config is overridden (the key does not exist) and by
  ``divrl.tasks.get_task``.

  Raises:
    ValueError: when ``config.task.name`` is not a known task.
  """
  name = config.task.name
  if name not in config.task.kwargs:
    raise ValueError(f"config.task.name: unknown task {name!r}; known tasks:"
                     f" {', '.join(sorted(config.task.kwargs))}.")
  return config.task.kwargs[name].to_dict()


def default_config() -> ml_collections.ConfigDict:
  """Every option of a run, with defaults; experiment files override them."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""
  # task.kwargs: one mapping of knobs per task, each task's defaults; the
  # run uses task.kwargs[task.name] (see task_kwargs).
  c.task = ml_collections.ConfigDict(dict(
      name="countdown", kwargs=task_defaults(), train_size=256, test_size=64,
      use_tfds=True, data_dir=""))
  c.model = ml_collections.ConfigDict(dict(preset="tiny", overrides={}))
  c.base = ml_collections.ConfigDict(dict(
      dir="", cache_root="runs/bases",
      pretrain=dict(steps=600, batch_size=64, learning_rate=3e-3,
                    weight_decay=0.0, num_targets=4096, skew=1.5,
                    wrong_share=0.2, max_solutions=16)))
  # Not type-safe: a slot holds a name or a spec mapping, so an experiment
  # may replace "grpo" by {"name": "grpo", "eps": 1e-4}. From the command
  # line, a string slot takes a name (--config.objective.advantage=otb) and a
  # mapping slot a dict literal or its keys (...advantage.eps=1e-4).
  c.objective = ml_collections.ConfigDict(dict(
      advantage="grpo", surrogate="ppo_clip", transforms=[],
      token_weights={}, regularizers={}, aggregation="token-mean"),
                                          type_safe=False)
  # ref_share: the share of each group's samples drawn from the reference
  # (base) policy instead of the policy (rehearsal; 0 = policy only).
  c.sampling = ml_collections.ConfigDict(dict(
      num_prompts=8, num_samples=8, max_new_tokens=24, temperature=1.0,
      top_k=0, top_p=1.0, min_p=0.0, ref_share=0.0))
  # top_p: the nucleus of Batch.top_p_entropy (SIREN's 0.8); alpha: the
  # order of Batch.alpha_divergence (DPH-RL's family; not 0 or 1); min_p:
  # the threshold of Batch.min_p_logprob (Lp-Reg's proxy, kappa = 0.02).
  c.statistics = ml_collections.ConfigDict(dict(top_p=0.8, alpha=0.5,
                                                min_p=0.02))
  c.train = ml_collections.ConfigDict(dict(
      steps=20, learning_rate=1e-3, weight_decay=0.0, grad_clip=1.0,
      warmup_steps=0, ppo_epochs=1, num_minibatches=1, micro_batches=1,
      dynamic_sampling=False, max_sampling_rounds=3, ref_reset_every=0,
      stop_after=-1, skip_nonfinite=False, check_inputs=True,
      verify_timeout=10.0))
  c.eval = ml_collections.ConfigDict(dict(
      every=0, num_prompts=16, num_samples=32, split="test",
      score_rows=256))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.checkpoint = ml_collections.ConfigDict(dict(every=0, max_to_keep=2))
  # entropy / kl_ref: log the token entropy and the KL to the reference of
  # every training batch (they cost a statistic and the reference forward
  # when no part of the objective needs them).
  c.log = ml_collections.ConfigDict(dict(tensorboard=True, progress=True,
                                         plot=True, entropy=True,
                                         kl_ref=True))
  return c


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _convert(key: str, text: str, default):
  if isinstance(default, bool):
    low = text.lower()
    if low not in _TRUE + _FALSE:
      raise ValueError(f"config arg {key!r} must be a bool, got {text!r}.")
    return low in _TRUE
  for kind, what in ((int, "an int"), (float, "a float")):
    if isinstance(default, kind):
      try:
        return kind(text)
      except ValueError:
        raise ValueError(f"config arg {key!r} must be {what}, got"
                         f" {text!r}.") from None
  return text


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses ``"key=value,key=value"`` into the typed values of ``defaults``.

  Each key must be one of ``defaults``; its value is converted to the type
  of the default (bool, int, float or str). Keys not in ``arg`` keep their
  default. ``None`` or ``""`` gives the defaults.

  Raises:
    ValueError: for an unknown key, a malformed item or a value of the wrong
      type, naming it.
  """
  out = dict(defaults)
  for item in (arg or "").split(","):
    if not item.strip():
      continue
    if "=" not in item:
      raise ValueError(f"config arg {item!r} must be key=value; known keys:"
                       f" {', '.join(sorted(defaults))}.")
    key, text = (part.strip() for part in item.split("=", 1))
    if key not in defaults:
      raise ValueError(f"unknown config arg {key!r}; known keys:"
                       f" {', '.join(sorted(defaults))}.")
    out[key] = _convert(key, text, defaults[key])
  return ml_collections.ConfigDict(out)


# -------------------------------------------------------------- validation --

def _ge(lo):
  return (lambda v: v >= lo), f">= {lo}"


def _gt(lo):
  return (lambda v: v > lo), f"> {lo}"


def _within(lo, hi, *, lo_open=False, hi_open=False):
  def ok(v):
    return (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
  return ok, (("(" if lo_open else "[") + f"{lo}, {hi}"
              + (")" if hi_open else "]"))


def _one_of(*values):
  return (lambda v: v in values), f"one of {', '.join(map(repr, values))}"


# The domain of every numeric (and enumerated) run option; the objective's
# part hyperparameters are checked by the registry when the objective is
# built. A key missing here has no constraint beyond its type.
RANGES = {
    "train.steps": _ge(0), "train.learning_rate": _gt(0),
    "train.weight_decay": _ge(0), "train.grad_clip": _ge(0),
    "train.warmup_steps": _ge(0), "train.ppo_epochs": _ge(1),
    "train.num_minibatches": _ge(1), "train.micro_batches": _ge(1),
    "train.max_sampling_rounds": _ge(1), "train.ref_reset_every": _ge(0),
    "train.stop_after": _ge(-1), "train.verify_timeout": _ge(0),
    "sampling.num_prompts": _ge(1), "sampling.num_samples": _ge(1),
    "sampling.max_new_tokens": _ge(1), "sampling.temperature": _gt(0),
    "sampling.top_k": _ge(0),
    "sampling.top_p": _within(0, 1, lo_open=True),
    "sampling.min_p": _within(0, 1, hi_open=True),
    "sampling.ref_share": _within(0, 1, hi_open=True),
    "statistics.top_p": _within(0, 1, lo_open=True),
    "statistics.alpha": ((lambda v: v not in (0, 1)), "not 0 or 1"),
    "statistics.min_p": _within(0, 1, lo_open=True, hi_open=True),
    "eval.every": _ge(0), "eval.num_prompts": _ge(1),
    "eval.num_samples": _ge(1), "eval.split": _one_of("train", "test"),
    "eval.score_rows": _ge(1),
    "mesh.data": ((lambda v: v == -1 or v >= 1), "-1 (all devices) or >= 1"),
    "mesh.fsdp": _ge(1), "mesh.tensor": _ge(1),
    "checkpoint.every": _ge(0), "checkpoint.max_to_keep": _ge(1),
    "task.train_size": _ge(1), "task.test_size": _ge(1),
    "base.pretrain.steps": _ge(0), "base.pretrain.batch_size": _ge(1),
    "base.pretrain.learning_rate": _gt(0),
}
# Subtrees whose keys are free: specs and per-task knobs (checked where
# they are used: the registry, the task's constructor, the model preset).
_FREE = ("objective", "task.kwargs", "model.overrides")


def _type_ok(value, default) -> bool:
  if isinstance(default, bool):
    return isinstance(value, bool)
  if isinstance(default, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(default, str):
    return isinstance(value, str)
  return True


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks a run config against ``default_config()``; returns it.

  Every key must exist in the defaults (except under ``objective``,
  ``task.kwargs`` and ``model.overrides``, checked where they are used),
  hold a value of the default's type (an int where a float is expected is
  fine) and lie in its domain (``RANGES``). The trainer calls this before
  it builds anything, so a bad value fails before any compile.

  Raises:
    ValueError: naming the key, the value and what was expected; every
      problem found is listed.
  """
  problems = []

  def walk(node, ref, prefix):
    for key in node.keys():
      path = f"{prefix}{key}"
      value = node[key]
      if any(path == f or path.startswith(f + ".") for f in _FREE):
        continue
      if key not in ref:
        problems.append(f"{path}: unknown key; known keys here: "
                        f"{', '.join(sorted(ref.keys()))}")
        continue
      default = ref[key]
      if isinstance(default, ml_collections.ConfigDict):
        if isinstance(value, (ml_collections.ConfigDict, dict)):
          walk(ml_collections.ConfigDict(value) if isinstance(value, dict)
               else value, default, path + ".")
        else:
          problems.append(f"{path}: must be a mapping, got {value!r}")
        continue
      if not _type_ok(value, default):
        problems.append(f"{path}: must be {type(default).__name__}, got "
                        f"{type(value).__name__} {value!r}")
        continue
      if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{path}: must be finite, got {value!r}")
        continue
      if path in RANGES:
        ok, what = RANGES[path]
        if not ok(value):
          problems.append(f"{path}: must be {what}, got {value!r}")

  walk(config, default_config(), "")
  if problems:
    raise ValueError("invalid run config:\n  " + "\n  ".join(problems))
  return config
