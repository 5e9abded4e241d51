"""The RL trainer (divrl.rl.trainer): a few real steps on Countdown.

A session-wide tiny base model is pre-trained once (cached by config hash in
the shared ``cache_root`` directory, see ``tests/conftest.py``); each test
then trains from it. 1 device, 8-way data parallel and 2x4 data x fsdp give
one run, and so do 2 jax.distributed processes (gloo, 127.0.0.1, 4 CPU
devices each; the workers run ``tests/rl/multiprocess_worker.py``); resume is
bitwise; dynamic sampling and reference resets run; bad batch geometry is
refused.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from divrl.rl.trainer import Trainer, default_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


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


def _params(trainer):
  return [np.asarray(mesh_leaf) for mesh_leaf in
          jax.tree.leaves(jax.tree.map(
              lambda x: np.asarray(x.addressable_data(0))
              if not x.is_fully_addressable else np.asarray(x),
              trainer.state["params"]))]


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


# --- 2 processes -------------------------------------------------------------


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
  cache_root = tmp_path / "cache"
  c = small_config(tmp_path / "single", cache_root, num_minibatches=2)
  c.mesh.data = 8
  single = Trainer(c, log=lambda *a: None).run()   # also caches the base
  port = _free_port()
  out = tmp_path / "multi.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen(
      [sys.executable,
       os.path.join(ROOT, "tests", "rl", "multiprocess_worker.py"),
       str(port), "2", str(i), "4", str(tmp_path / "multi"), str(cache_root),
       str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=900)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("multi-process run timed out")
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]
  multi = json.loads(out.read_text())
  assert multi["processes"] == 2 and multi["devices"] == 8
  _compare(single, multi, atol=1e-4)
