"""End-to-end tests of the RL loop (divrl.rl): a few real steps on Countdown.

A session-wide tiny base model is pre-trained once (cached by config hash in
a shared directory); each test then trains from it.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from divrl.rl import experiment
from divrl.rl import logging as rl_logging
from divrl.rl.trainer import Trainer, default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(workdir, cache_root, **train):
  c = default_config()
  c.workdir = str(workdir)
  c.task.name = "countdown"
  c.task.kwargs = dict(num_count=3, max_number=9, min_target=5,
                       max_target=20)
  c.task.train_size = 64
  c.task.test_size = 16
  c.task.use_tfds = True
  c.task.data_dir = os.path.join(str(cache_root), "tfds")
  c.base.cache_root = str(cache_root)
  c.base.pretrain.steps = 60
  c.base.pretrain.num_targets = 512
  c.sampling.num_prompts = 4
  c.sampling.num_samples = 4
  c.sampling.max_new_tokens = 10
  c.train.steps = 3
  c.train.learning_rate = 1e-3
  c.eval.num_prompts = 4
  c.eval.num_samples = 8
  c.log.progress = False
  for k, v in train.items():
    c.train[k] = v
  return c


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
  return tmp_path_factory.mktemp("rl_cache")


def _params(trainer):
  return [np.asarray(mesh_leaf) for mesh_leaf in
          jax.tree.leaves(jax.tree.map(
              lambda x: np.asarray(x.addressable_data(0))
              if not x.is_fully_addressable else np.asarray(x),
              trainer.state["params"]))]


def test_end_to_end_run_writes_metrics_plot_and_events(tmp_path, cache_root):
  c = small_config(tmp_path / "run", cache_root, ppo_epochs=2,
                   num_minibatches=2, micro_batches=2)
  c.objective.regularizers = {"kl": {"estimator": "k3", "coef": 0.01}}
  c.mesh.data = 1
  result = experiment.run_experiment(c, log=lambda *a: None)
  final = result["final"]
  assert set(final) >= {"eval/pass@1", "eval/pass@8", "eval/accuracy",
                        "eval/distinct", "eval/solution_entropy",
                        "eval/token_entropy", "eval/kl_base_k1",
                        "eval/kl_base_k3", "eval/mean_reward"}
  assert all(np.isfinite(v) for v in final.values())
  assert 0 <= final["eval/pass@1"] <= final["eval/pass@8"] <= 1
  assert len(result["history"]) == 3
  for h in result["history"]:
    assert np.isfinite(h["objective/loss"]) and h["time/update"] > 0
    assert 0 <= h["pass@1"] <= 1 and h["entropy"] > 0
  # After real updates the policy has moved away from the base.
  assert final["eval/kl_base_k1"] != 0.0
  records = rl_logging.read_jsonl(tmp_path / "run" / "metrics.jsonl")
  assert [r["step"] for r in records if "reward" in r] == [1, 2, 3]
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(tmp_path / "run"))
  assert (tmp_path / "run" / "plot.png").stat().st_size > 10_000
  table = experiment.results_table({"run": result})
  assert "base" in table and "pass@16" in table


def _history(result):
  return [{k: v for k, v in h.items() if not k.startswith("time/")
           and k != "tokens/s"} for h in result["history"]]


def _compare(a, b, atol):
  ha, hb = _history(a), _history(b)
  assert len(ha) == len(hb)
  for x, y in zip(ha, hb):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_allclose(x[k], y[k], atol=atol, rtol=atol,
                                 err_msg=k)
  for k in a["final"]:
    np.testing.assert_allclose(a["final"][k], b["final"][k], atol=atol,
                               rtol=atol, err_msg=k)


def test_one_device_and_eight_device_meshes_agree(tmp_path, cache_root):
  """1 device, 8-way data parallel and 2x4 data x fsdp give one run."""
  results = {}
  for shape in ((1, 1), (8, 1), (2, 4)):
    c = small_config(tmp_path / f"m{shape}", cache_root, num_minibatches=2)
    c.mesh.data, c.mesh.fsdp = shape
    trainer = Trainer(c, log=lambda *a: None)
    assert trainer.mesh.devices.size == shape[0] * shape[1]
    results[shape] = trainer.run()
  _compare(results[(1, 1)], results[(8, 1)], atol=1e-4)
  _compare(results[(1, 1)], results[(2, 4)], atol=1e-4)


def test_resume_reaches_the_same_params_bitwise(tmp_path, cache_root):
  full = small_config(tmp_path / "full", cache_root, steps=4)
  full.checkpoint.every = 2
  full.mesh.data = 1
  a = Trainer(full, log=lambda *a: None)
  a.run()
  part = small_config(tmp_path / "part", cache_root, steps=4, stop_after=2)
  part.checkpoint.every = 2
  part.mesh.data = 1
  first = Trainer(part, log=lambda *a: None)
  first.run()
  assert first.step == 2
  part.train.stop_after = -1
  resumed = Trainer(part, log=lambda *a: None)
  resumed.run()
  assert resumed.step == 4
  for x, y in zip(_params(a), _params(resumed)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)
  assert a.stream.position == resumed.stream.position


def test_dynamic_sampling_and_ref_reset_run(tmp_path, cache_root):
  c = small_config(tmp_path / "dyn", cache_root, steps=2,
                   dynamic_sampling=True, max_sampling_rounds=3,
                   ref_reset_every=1)
  c.mesh.data = 1
  t = Trainer(c, log=lambda *a: None)
  t.run()
  assert all(1 <= h["sampling_rounds"] <= 3 for h in t.history)
  # The reference was reset to the policy after the last step.
  for x, y in zip(jax.tree.leaves(t.state["params"]),
                  jax.tree.leaves(t.state["ref_params"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_batch_geometry_is_refused(tmp_path, cache_root):
  c = small_config(tmp_path / "bad", cache_root)
  c.sampling.num_prompts = 3          # 12 rows on 8 devices
  c.mesh.data = 8
  with pytest.raises(ValueError, match="num_prompts"):
    Trainer(c, log=lambda *a: None)


def _run_cli(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "scripts.train", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_cli_refuses_unknown_config_key():
  proc = _run_cli("--config", "experiments/countdown/grpo.py",
                  "--config.train.no_such_option=3")
  assert proc.returncode != 0
  assert "no_such_option" in proc.stderr


def test_cli_overrides_reach_the_run(tmp_path, cache_root):
  proc = _run_cli(
      "--config", "experiments/countdown/grpo_kl.py",
      f"--config.workdir={tmp_path / 'cli'}",
      f"--config.base.cache_root={cache_root}",
      f"--config.task.data_dir={cache_root / 'tfds'}",
      "--config.task.kwargs.num_count=3", "--config.task.kwargs.max_number=9",
      "--config.task.kwargs.min_target=5",
      "--config.task.kwargs.max_target=20",
      "--config.task.train_size=64", "--config.task.test_size=16",
      "--config.base.pretrain.steps=60",
      "--config.base.pretrain.num_targets=512",
      "--config.sampling.num_prompts=4", "--config.sampling.num_samples=4",
      "--config.sampling.max_new_tokens=10",
      "--config.train.steps=2", "--config.eval.every=0",
      "--config.eval.num_prompts=4", "--config.eval.num_samples=8",
      "--config.checkpoint.every=0", "--config.log.progress=False",
      "--config.objective.regularizers.kl.coef=0.5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "pass@16" in proc.stdout
  records = rl_logging.read_jsonl(tmp_path / "cli" / "metrics.jsonl")
  steps = [r for r in records if "reward" in r]
  assert len(steps) == 2
  final = json.loads((tmp_path / "cli" / "final_eval.json").read_text())
  assert final["final"]["eval/accuracy"] >= 0
