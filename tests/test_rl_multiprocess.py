"""The RL loop as 2 jax.distributed processes (gloo, 127.0.0.1, 4 CPU devices
each) gives the single-process metrics."""

import json
import os
import socket
import subprocess
import sys

import pytest

from divrl.rl.trainer import Trainer
from tests.test_rl import ROOT, _compare, small_config


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
      [sys.executable, os.path.join(ROOT, "tests", "multiprocess_worker.py"),
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
