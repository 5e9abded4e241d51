"""Every experiment file builds its config and trains one step.

Each file under ``experiments/<task>/`` (but ``base.py``) is loaded as
``scripts.train`` loads it, then shrunk to the shared small-model path (a
one-layer decoder pre-trained for a few steps, a handful of prompts and
samples, no TFDS) and trained for one step: the loss must be finite and the
parameters must change. A new experiment file is covered without editing
this file.
"""

import importlib
import pathlib

import jax
import numpy as np
import pytest

from divrl import config as config_lib
from divrl.rl.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Table files (experiments/tables) are grids, run by tests/rl/test_reproduce.
FILES = sorted(p for p in (ROOT / "experiments").glob("*/*.py")
               if p.name not in ("__init__.py", "base.py")
               and p.parent.name != "tables")


def test_every_task_has_an_experiment_file():
  tasks = {p.parent.name for p in FILES}
  assert tasks >= set(config_lib.task_defaults()), tasks


def _small(c, root):
  c.workdir = str(root / "run")
  c.base.cache_root = str(root / "bases")
  c.task.use_tfds = False
  c.task.train_size, c.task.test_size = 32, 4
  c.model.overrides = {"num_layers": 1}
  c.base.pretrain.update(steps=20, batch_size=16, num_targets=128)
  c.sampling.update(num_prompts=2, num_samples=4)
  # A barely pre-trained base solves nothing, and equal rewards in a group
  # leave the parameters where they are: a length penalty ramping over the
  # whole response (-|y| / L) varies within every group.
  width = c.sampling.max_new_tokens
  c.objective["transforms"] = list(c.objective.get("transforms") or []) + [
      {"name": "overlong_penalty", "max_length": width,
       "cache_length": width}]
  c.train.steps = 1
  c.eval.update(every=0, num_prompts=4, num_samples=2)
  c.checkpoint.every = 0
  c.log.update(tensorboard=False, progress=False, plot=False)
  return c


@pytest.mark.parametrize("path", FILES,
                         ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_experiment_file_trains_one_step(path, tmp_path_factory):
  module = importlib.import_module(
      f"experiments.{path.parent.name}.{path.stem}")
  config = module.get_config()
  assert config.task.name == path.parent.name
  assert config.eval.num_prompts <= config.task.test_size
  config = _small(config, tmp_path_factory.mktemp(path.stem))
  trainer = Trainer(config, log=lambda *a: None)
  before = [np.asarray(x).copy()
            for x in jax.tree.leaves(trainer.state["params"])]
  loss = trainer.train_step()["objective/loss"]
  assert np.isfinite(loss)
  after = [np.asarray(x) for x in jax.tree.leaves(trainer.state["params"])]
  assert any(not np.array_equal(a, b) for a, b in zip(before, after))
