"""The training CLI (scripts/train.py): unknown config keys are refused and
overrides reach the run.

The tiny base model is pre-trained once per session (``cache_root``, see
``tests/conftest.py``).
"""

import json

from divrl.rl import logging as rl_logging
from tests.scripts import run_script


def _run_cli(*args, timeout=600):
  return run_script("scripts.train", *args, timeout=timeout)


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
      "--config.task.kwargs.countdown.num_count=3",
      "--config.task.kwargs.countdown.max_number=9",
      "--config.task.kwargs.countdown.min_target=5",
      "--config.task.kwargs.countdown.max_target=20",
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
