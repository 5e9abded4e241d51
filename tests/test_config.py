"""Tests for divrl.config and the experiment files built on it: light
imports (no JAX), typed variants, and every key overridable from the
command line."""

import os
import re
import subprocess
import sys

import pytest

from divrl import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_experiment_files_do_not_import_jax():
  code = ("import sys\n"
          "import experiments.countdown.grpo, experiments.countdown.grpo_kl\n"
          "import experiments.countdown.unlikeliness\n"
          "import experiments.countdown.recipe\n"
          "experiments.countdown.grpo.get_config('seed=3')\n"
          "experiments.countdown.recipe.get_config('name=ppo_gae')\n"
          # NumPy comes with the task defaults (divrl.tasks); JAX and TFDS
          # stay out.
          "heavy = [m for m in ('jax', 'jaxlib', 'flax', 'optax',"
          " 'tensorflow_datasets') if m in sys.modules]\n"
          "assert not heavy, heavy\n")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                 env={**os.environ, "PYTHONPATH": ROOT})


def test_parse_arg_types_values_like_their_defaults():
  arg = config_lib.parse_arg("seed=2,beta=0.5,name=nsr,flag=true",
                             seed=0, beta=0.25, name="grpo", flag=False,
                             steps=10)
  assert (arg.seed, arg.beta, arg.name, arg.flag, arg.steps) == (
      2, 0.5, "nsr", True, 10)
  assert config_lib.parse_arg(None, seed=1).seed == 1
  assert config_lib.parse_arg("", seed=1).seed == 1


@pytest.mark.parametrize("arg,match", [
    ("sed=2", "unknown config arg 'sed'"),
    ("seed", "must be key=value"),
    ("seed=two", "'seed' must be an int"),
    ("beta=x", "'beta' must be a float"),
    ("flag=maybe", "'flag' must be a bool"),
])
def test_parse_arg_names_bad_items(arg, match):
  with pytest.raises(ValueError, match=match):
    config_lib.parse_arg(arg, seed=0, beta=0.1, flag=False)


def test_variants_reach_the_config():
  from experiments.countdown import grpo, grpo_kl, unlikeliness  # pylint: disable=g-import-not-at-top
  c = grpo.get_config("seed=4,steps=7")
  assert (c.seed, c.train.steps) == (4, 7)
  assert grpo.get_config().train.steps == 100
  assert grpo_kl.get_config("kl_coef=0.2").objective.regularizers.kl.coef == (
      0.2)
  t = unlikeliness.get_config("beta=0.5").objective.transforms
  assert t == [{"name": "unlikeliness_reward", "beta": 0.5}]


def test_default_config_has_the_documented_objective_form():
  o = config_lib.default_config().objective
  assert isinstance(o.transforms, list)
  assert dict(o.token_weights) == {} and dict(o.regularizers) == {}
  assert o.advantage == "grpo" and o.aggregation == "token-mean"


def test_objective_slots_take_a_name_or_a_spec():
  c = config_lib.default_config()
  c.objective.advantage = {"name": "grpo", "eps": 1e-4}
  c.objective.surrogate = "reinforce"
  c.objective.advantage.eps = 1e-3
  assert c.objective.advantage.to_dict() == {"name": "grpo", "eps": 1e-3}


def test_the_recipe_experiment_runs_every_recipe_by_name():
  from divrl import recipes
  from experiments.countdown import recipe
  for name in recipes.names():
    c = recipe.get_config(f"name={name},seed=2")
    assert c.objective.to_dict() == recipes.get(name).to_dict(), name
    assert (c.seed, c.workdir) == (2, f"runs/countdown/{name}")
  with pytest.raises(ValueError, match="unknown recipe 'nope'"):
    recipe.get_config("name=nope")


EXPERIMENT_FILES = sorted(
    f"{task}/{f[:-3]}" for task in os.listdir(os.path.join(ROOT, "experiments"))
    if os.path.isdir(os.path.join(ROOT, "experiments", task))
    and not task.startswith("__")
    for f in os.listdir(os.path.join(ROOT, "experiments", task))
    if f.endswith(".py") and f not in ("__init__.py", "base.py")
    and not f.startswith("_"))


@pytest.mark.parametrize("name", EXPERIMENT_FILES)
def test_experiment_docstrings_state_the_command_and_its_time(name):
  import importlib
  doc = importlib.import_module(
      f"experiments.{name.replace('/', '.')}").__doc__
  folder, stem = name.split("/")
  # A table file (experiments/tables) states the command of the table.
  command = (f"python -m scripts.reproduce --table {stem}"
             if folder == "tables" else
             f"python -m scripts.train --config experiments/{name}.py")
  assert command in doc, name
  assert re.search(r"[Mm]easured on .*?\d+(\.\d+)?\s+(minutes|s)\b", doc,
                   re.S), name


# --- Task knobs from the command line ---------------------------------------


def _parse_cli(monkeypatch, *overrides,
               file="experiments/countdown/grpo.py"):
  """The config ``scripts.train`` would build from these arguments."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ["train", f"--config={file}", *overrides]
  monkeypatch.setattr("sys.argv", argv)   # config_flags reads sys.argv
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  lock_config=True)
  values(argv)
  return values.config


def test_switching_the_task_name_takes_that_tasks_defaults(monkeypatch):
  from divrl import tasks  # pylint: disable=g-import-not-at-top
  c = _parse_cli(monkeypatch, "--config.task.name=rare")
  assert config_lib.task_kwargs(c) == config_lib.task_defaults()["rare"]
  assert tasks.get_task(c.task.name, **config_lib.task_kwargs(c)) == (
      tasks.RareTask())
  # The experiment's Countdown knobs are kept for Countdown, not carried over.
  assert c.task.kwargs.countdown.max_target == 30


def test_task_knobs_are_set_key_by_key_and_unknown_ones_refused(monkeypatch):
  c = _parse_cli(monkeypatch, "--config.task.name=rare",
                 "--config.task.kwargs.rare.max_target=150")
  assert config_lib.task_kwargs(c)["max_target"] == 150
  # A knob the experiment file does not set is there with its default.
  c = _parse_cli(monkeypatch, "--config.task.kwargs.countdown.use_all=True")
  kw = config_lib.task_kwargs(c)
  assert kw["use_all"] is True and kw["max_target"] == 30
  with pytest.raises(AttributeError, match="no_such_knob"):
    _parse_cli(monkeypatch, "--config.task.kwargs.rare.no_such_knob=1")
  c = config_lib.default_config()
  c.task.name = "sudoku"
  with pytest.raises(ValueError, match="task.name"):
    config_lib.task_kwargs(c)


# --- validate: keys, types and ranges, before anything is built -------------

# A value outside the domain of each key of config_lib.RANGES.
BAD = {
    "train.steps": -1, "train.learning_rate": 0.0, "train.weight_decay": -0.1,
    "train.grad_clip": -1.0, "train.warmup_steps": -1, "train.ppo_epochs": 0,
    "train.num_minibatches": 0, "train.micro_batches": 0,
    "train.max_sampling_rounds": 0, "train.ref_reset_every": -1,
    "train.stop_after": -2, "train.verify_timeout": -1.0,
    "sampling.num_prompts": 0,
    "sampling.num_samples": 0, "sampling.max_new_tokens": 0,
    "sampling.temperature": 0.0, "sampling.top_k": -1, "sampling.top_p": 0.0,
    "sampling.min_p": 1.0, "sampling.ref_share": 1.0,
    "statistics.top_p": 1.5, "statistics.alpha": 1.0, "statistics.min_p": 0.0,
    "eval.every": -1, "eval.num_prompts": 0, "eval.num_samples": 0,
    "eval.split": "validation", "eval.score_rows": 0, "mesh.data": 0,
    "mesh.fsdp": 0, "mesh.tensor": 0, "checkpoint.every": -1,
    "checkpoint.max_to_keep": 0, "task.train_size": 0, "task.test_size": 0,
    "base.pretrain.steps": -1, "base.pretrain.batch_size": 0,
    "base.pretrain.learning_rate": -1e-3,
}


def _set(c, path, value):
  *head, last = path.split(".")
  node = c
  for k in head:
    node = node[k]
  node[last] = value


def test_every_range_has_a_bad_value_here():
  assert set(BAD) == set(config_lib.RANGES)


@pytest.mark.parametrize("path", sorted(BAD))
def test_an_out_of_range_value_is_refused_naming_the_key(path):
  c = config_lib.default_config()
  config_lib.validate(c)   # the defaults are valid
  _set(c, path, BAD[path])
  with pytest.raises(ValueError,
                     match=rf"\n  {re.escape(path)}: must be .*, got"):
    config_lib.validate(c)


def test_unknown_keys_wrong_types_and_non_finite_values_are_refused():
  c = config_lib.default_config()
  c.train.no_such_option = 3            # an unlocked ConfigDict takes it
  c.train.learning_rate = float("inf")  # the right type, not finite
  c.sampling = dict(c.sampling.to_dict(), num_samples="8")   # a str
  c.log = {"tensorboard": 1}            # int for a bool
  with pytest.raises(ValueError) as e:
    config_lib.validate(c)
  msg = str(e.value)
  assert "train.no_such_option: unknown key; known keys here:" in msg
  assert "sampling.num_samples: must be int, got str '8'" in msg
  assert "log.tensorboard: must be bool, got int 1" in msg
  assert "train.learning_rate: must be finite, got inf" in msg


def test_free_subtrees_are_left_to_their_owners():
  c = config_lib.default_config()
  c.objective.advantage = {"name": "grpo", "eps": 1e-4}
  c.model.overrides = {"num_layers": 3}
  config_lib.validate(c)


def test_every_experiment_file_gives_a_valid_config():
  import glob  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  files = sorted(glob.glob(os.path.join(root, "experiments", "*", "*.py")))
  checked = 0
  for f in files:
    mod = importlib.import_module(os.path.relpath(f, root)[:-3]
                                  .replace(os.sep, "."))
    if hasattr(mod, "get_config"):
      config_lib.validate(mod.get_config())
      checked += 1
  assert checked >= 20
