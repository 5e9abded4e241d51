"""divrl.rl.experiment end to end: a few real steps on Countdown write the
metrics, the plot and the TensorBoard events, and the results table.

The tiny base model is pre-trained once per session (``cache_root``, see
``tests/conftest.py``).
"""

import os

import numpy as np

from divrl.rl import experiment
from divrl.rl import logging as rl_logging
from tests.rl.test_trainer import small_config


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


def _evaluation(**extra):
  out = {"eval/pass@1": 0.1, "eval/pass@16": 0.5, "eval/distinct": 1.5,
         "eval/solution_entropy": 0.2, "eval/token_entropy": 0.6,
         "eval/kl_base_k3": 0.0, "eval/accuracy": 0.1}
  return {**out, **{f"eval/{k}": v for k, v in extra.items()}}


def test_results_table_shows_rare_found_when_the_task_reports_it():
  rare = {"evals": [(0, _evaluation(rare_found=0.125))],
          "final": _evaluation(rare_found=0.375)}
  table = experiment.results_table({"grpo": rare})
  header, _, base, run = table.splitlines()
  assert header.split()[-1] == "rare_found"
  assert base.split()[-1] == "0.125" and run.split()[-1] == "0.375"
  plain = {"evals": [(0, _evaluation())], "final": _evaluation()}
  assert "rare_found" not in experiment.results_table({"grpo": plain})
