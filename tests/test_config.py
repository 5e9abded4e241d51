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
          "heavy = [m for m in ('jax', 'jaxlib', 'flax', 'optax', 'numpy')"
          " if m in sys.modules]\n"
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


@pytest.mark.parametrize("name", sorted(
    f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments", "countdown"))
    if f.endswith(".py") and f not in ("__init__.py", "base.py")))
def test_experiment_docstrings_state_the_command_and_its_time(name):
  import importlib
  doc = importlib.import_module(f"experiments.countdown.{name}").__doc__
  assert (f"python -m scripts.train --config experiments/countdown/{name}.py"
          in doc), name
  assert re.search(r"measured on this 2-core CPU.*?\d minutes", doc,
                   re.S), name
