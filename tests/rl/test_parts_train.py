"""The data path: every registered part and every recipe trains from a run
config, with nothing wired by hand.

For each part of the registry (every advantage, surrogate, token weight,
regularizer, transform and aggregation, with its defaults plus the minimal
settings of ``tests.conftest.REQUIRED``) and each recipe, a ``Trainer`` is
built from a config on tiny Countdown and runs two steps: the loss must be
finite and the parameters must change. The trainer computes exactly what the
part declares, so a part whose inputs the data path cannot serve fails here.
A newly registered part is covered without editing this file.

Speed: one shared setup (a one-layer decoder pre-trained once, the task and
its examples), one device, 4 prompts x 8 samples of at most 6 tokens; the
sampler compiles once for all trainers.
"""

import jax
import numpy as np
import pytest

from divrl import config as config_lib
from divrl import recipes, registry
from divrl.objective import Objective
from divrl.rl import mesh as mesh_lib
from divrl.rl.trainer import RunSetup, Trainer
from tests.conftest import one_part_config

BASE_OBJECTIVE = dict(advantage="grpo", surrogate="ppo_clip", transforms=[],
                      token_weights={}, regularizers={},
                      aggregation="token-mean")


def _config(objective, root):
  c = config_lib.default_config()
  c.workdir = str(root / "run")
  c.base.cache_root = str(root / "bases")
  c.task.kwargs.countdown.update(num_count=2, max_number=5, min_target=1,
                                 max_target=10)
  c.task.use_tfds = False
  c.task.train_size = 64
  c.task.test_size = 8
  c.model.overrides = {"num_layers": 1}
  c.base.pretrain.update(steps=220, batch_size=32, num_targets=512)
  c.sampling.update(num_prompts=4, num_samples=8, max_new_tokens=6)
  c.train.learning_rate = 1e-2
  c.eval.update(num_prompts=4, num_samples=8)
  # No logged statistics: the steps compute only what the part reads.
  c.log.update(tensorboard=False, progress=False, plot=False, entropy=False,
               kl_ref=False)
  c.objective = objective
  return c


# Parts whose defaults are valid but cannot move a policy on this task's
# binary rewards, with the setting that can, and why.
TRAINS_WITH = {
    # PF-PPO's default "pow" resamples rows with probability |r|^2: with
    # 0/1 rewards only correct rows survive, every group is all-correct and
    # group-relative advantages are 0. "max_min" keeps both ends.
    ("transform", "pf_ppo"): {"mode": "max_min"},
    # A group's lower CVaR at alpha is flat (0) under 0/1 rewards whenever
    # at least alpha * n of its samples fail: every group of this weak base
    # at the default 0.2. At 0.9 every group with a success moves.
    ("advantage", "cvar"): {"alpha": 0.9},
    # The smoothed VaR moves only groups whose failure count puts the gap
    # between a 0 and a 1 inside the band: a wide band for a robust test.
    ("advantage", "var"): {"width": 0.8},
    # Defaults that are the identity on this task's responses of at most 6
    # tokens: a cap inside that range, and the Countdown operator ids as
    # step delimiters, so that the mechanism is what trains.
    ("transform", "dler_truncation"): {"max_length": 4},
    ("transform", "rlsp_step_reward"): {"step_token": [7, 9, 6], "coef": 0.1},
}


def _with(config, kind, name):
  extra = TRAINS_WITH.get((kind, name))
  if extra:
    config = dict(config)
    if kind == "transform":
      config["transforms"] = [{**config["transforms"][0], **extra}]
    else:
      spec = config[kind]
      spec = {"name": spec} if isinstance(spec, str) else dict(spec)
      config[kind] = {**spec, **extra}
  return config


def _cases():
  out = [pytest.param(_with(one_part_config(kind, name, BASE_OBJECTIVE),
                            kind, name), id=f"{kind}-{name}")
         for kind in registry.KINDS for name in registry.names(kind)]
  out += [pytest.param(recipes.get(name).to_dict(), id=f"recipe-{name}")
          for name in recipes.names()]
  return out


# Inputs that need a run setting; everything else the trainer always serves.
PROVIDING = {"reference_samples": {"ref_share": 0.25}}
# A part that reads the value head needs a companion that trains it (a
# config-time error otherwise, tests/rl/test_inputs.py).
CRITIC = {"value_loss": {"coef": 0.5}}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  root = tmp_path_factory.mktemp("parts")
  config = _config(BASE_OBJECTIVE, root)
  setup = RunSetup.build(config, log=lambda *a: None)
  return root, setup, mesh_lib.make_train_mesh(data=1)


@pytest.mark.parametrize("objective", _cases())
def test_part_trains_two_steps(shared, objective):
  root, setup, mesh = shared
  config = _config(objective, root)
  requires = Objective.from_config(config.objective).requires
  for name in requires.inputs:
    config.sampling.update(PROVIDING.get(name, {}))
  if ({"values", "old_values"} & requires.inputs
      and "values" not in requires.update):
    config.objective.regularizers.update(CRITIC)
  trainer = Trainer(config, mesh=mesh, setup=setup, log=lambda *a: None)
  before = jax.tree.leaves(trainer.state["params"])
  before = [np.asarray(x).copy() for x in before]
  losses = [trainer.train_step()["objective/loss"] for _ in range(2)]
  assert np.all(np.isfinite(losses)), losses
  after = [np.asarray(x) for x in jax.tree.leaves(trainer.state["params"])]
  assert any(not np.array_equal(a, b) for a, b in zip(before, after)), (
      "the parameters did not change")


def test_the_shared_setup_gives_varied_rewards(shared):
  # Otherwise every advantage is 0 and "the parameters change" tests nothing.
  root, setup, mesh = shared
  trainer = Trainer(_config(BASE_OBJECTIVE, root), mesh=mesh, setup=setup,
                    log=lambda *a: None)
  for step in range(2):
    _, info = trainer.rollout(step)
    groups = info.rewards.reshape(4, 8)
    assert any(g.min() < g.max() for g in groups), (step, groups)
