"""The README main job: a small real RL experiment on CPU.

1. pre-trains (or loads) a tiny base model on Countdown;
2. runs GRPO and GRPO + unlikeliness reward from that base, 400 RL steps
   each;
3. evaluates the base and both policies on 64 held-out prompts x 256
   samples, and prints pass@1, pass@16, distinct correct solutions and
   entropy, then the pass@k curve up to k = 256 (256 samples make pass@k an
   unbiased estimate for every k <= 256; at k = n it is "any sample
   correct");
4. saves the plot to ``<workdir>/quickstart.png``.

  scripts/run.sh                                  # via the venv bootstrap
  python -m scripts.quickstart --steps=40 --workdir=runs/quickstart
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from divrl.rl import experiment  # noqa: E402
from divrl.rl import logging as rl_logging  # noqa: E402
from divrl.rl.trainer import entropy_curve, pass_at_k_of  # noqa: E402
from experiments.countdown import grpo, unlikeliness  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Output dir.")
_STEPS = flags.DEFINE_integer("steps", None, "RL steps per run (default: "
                              "the experiment's).")
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", None,
                                       "Base pre-training steps.")
_EVAL = flags.DEFINE_integer("eval_samples", 256, "Samples per eval prompt.")

STEPS = 400          # RL steps per run (the experiment files' default is 100)
CURVE_KS = (1, 4, 16, 64, 256)
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")

RUNS = {"grpo": grpo, "unlikeliness": unlikeliness}


def configure(module, name):
  c = module.get_config()
  c.seed = _SEED.value
  c.workdir = os.path.join(_WORKDIR.value, name)
  c.base.cache_root = os.path.join(_WORKDIR.value, "bases")
  c.task.data_dir = os.path.join(_WORKDIR.value, "tfds")
  c.checkpoint.every = 0
  c.train.steps = STEPS if _STEPS.value is None else _STEPS.value
  c.eval.every = max(1, c.train.steps // 4)
  if _PRETRAIN_STEPS.value is not None:
    c.base.pretrain.steps = _PRETRAIN_STEPS.value
  if _EVAL.value is not None:
    c.eval.num_samples = _EVAL.value
  c.log.plot = False
  return c


def pass_at_k_table(results) -> str:
  """pass@k for ``CURVE_KS`` (those the sample count allows) of the base
  and each run's final policy."""
  rows = {}
  for name, result in results.items():
    if "base" not in rows and result["evals"][0][0] == 0:
      rows["base"] = pass_at_k_of(result["evals"][0][1])
    rows[name] = pass_at_k_of(result["final"])
  ks = [k for k in CURVE_KS if all(k in r for r in rows.values())]
  table = {name: {f"pass@{k}": r[k] for k in ks} for name, r in rows.items()}
  return rl_logging.summary_table(table, [f"pass@{k}" for k in ks])


def main(argv):
  experiment.quiet_logs()
  del argv
  t0 = time.perf_counter()
  results = {}
  for name, module in RUNS.items():
    print(f"\n== {name} ==", flush=True)
    config = configure(module, name)
    results[name] = experiment.run_experiment(config)
  print("\nHeld-out Countdown prompts "
        f"({config.eval.num_prompts} prompts x {config.eval.num_samples} "
        "samples; distinct = distinct correct solutions per prompt):")
  print(experiment.results_table(results))
  print("\npass@k on the same samples:")
  print(pass_at_k_table(results))
  curves, entropy = {}, {}
  for name, result in results.items():
    if "base" not in curves:
      curves["base"] = pass_at_k_of(result["evals"][0][1])
    curves[name] = pass_at_k_of(result["final"])
    entropy[name] = entropy_curve(result)
  path = rl_logging.save_plots(os.path.join(_WORKDIR.value, "quickstart.png"),
                               curves, entropy)
  print(f"\nplot: {path}\ntotal time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
  app.run(main)
