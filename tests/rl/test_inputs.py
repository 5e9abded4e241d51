"""Tests for divrl.rl.inputs: a declared input the run cannot provide is an
error when the trainer is built, before any pre-training or sampling, naming
the part, the input and the config key."""

import pytest

import divrl
from divrl import config as config_lib
from divrl import tasks, types
from divrl.rl import inputs
from divrl.rl.trainer import Trainer


@divrl.declare(reads=("reference_samples", "ref_logprobs"))
def rehearsal(batch):
  return (batch.sample_source == 1)[:, None] * batch.ref_logprobs


@divrl.declare(reads=("token_rewards",))
def dense(batch):
  return batch.token_rewards


def _config(**objective):
  c = config_lib.default_config()
  c.base.cache_root = "/nonexistent/never-used"   # the error comes first
  c.objective = {"advantage": "grpo", "surrogate": "ppo_clip",
                 "transforms": [], "token_weights": {}, "regularizers": {},
                 "aggregation": "token-mean", **objective}
  return c


def test_reference_samples_need_a_reference_share():
  c = _config()
  c.objective.regularizers = {"dph": {"fn": rehearsal, "coef": 0.1}}
  with pytest.raises(ValueError, match=r"regularizer 'dph' reads "
                     r"'reference_samples'.*sampling\.ref_share > 0"):
    Trainer(c)
  c.sampling.ref_share = 0.25
  inputs.check(divrl.from_config(c.objective), c,
               tasks.get_task("countdown"))   # provided now


def test_token_rewards_are_provided_by_no_task():
  c = _config(regularizers={"dense": {"fn": dense, "coef": 0.1}})
  with pytest.raises(ValueError, match=r"regularizer 'dense' reads "
                     r"'token_rewards'.*config key task\.name"):
    Trainer(c)


def test_reward_components_need_a_task_with_several():
  class OneReward:
    REWARD_COMPONENTS = ("correct",)
  objective = divrl.recipes.build("gdpo")
  c = _config()
  with pytest.raises(ValueError, match=r"advantage 'gdpo' reads "
                     r"'reward_components'.*task\.name"):
    inputs.check(objective, c, OneReward())
  inputs.check(objective, c, tasks.get_task("countdown"))


def test_gae_needs_a_part_that_trains_the_value_head():
  c = _config(advantage="gae")
  with pytest.raises(ValueError, match=r"advantage 'gae' reads 'values'"
                     r".*no part trains the head.*value_loss.*ppo_gae"):
    Trainer(c)
  c.objective.regularizers = {"value_loss": {"coef": 0.5}}
  inputs.check(divrl.from_config(c.objective), c,
               tasks.get_task("countdown"))
  inputs.check(divrl.recipes.build("ppo_gae"), c, tasks.get_task("countdown"))


def test_provided_inputs_follow_the_run():
  c = config_lib.default_config()
  task = tasks.get_task("countdown")
  got = inputs.provided(c, task)
  assert got == set(types.INPUTS) - {"token_rewards", "reference_samples"}
  c.sampling.ref_share = 0.5
  assert "reference_samples" in inputs.provided(c, task)


def test_every_registered_part_trains_from_a_default_run():
  # With the defaults (and ref_share where a part rehearses), a default run
  # provides every input that the library's own parts declare.
  c = config_lib.default_config()
  c.sampling.ref_share = 0.25
  available = inputs.provided(c, tasks.get_task("countdown"))
  for kind in divrl.registry.KINDS:
    for name in divrl.registry.names(kind):
      reads = divrl.registry.declaration(
          divrl.registry.lookup(kind, name)).reads
      assert reads <= available, (kind, name, reads - available)
