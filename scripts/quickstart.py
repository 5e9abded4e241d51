"""The README main job: a small real RL experiment on CPU.

1. pre-trains (or loads) a tiny base model on Countdown;
2. runs GRPO and GRPO + unlikeliness reward from that base;
3. prints pass@1, pass@16, distinct correct solutions and entropy on held-out
   prompts for the base and both policies;
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
_EVAL = flags.DEFINE_integer("eval_samples", None, "Samples per eval prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")

RUNS = {"grpo": grpo, "unlikeliness": unlikeliness}


def configure(module, name):
  c = module.get_config()
  c.seed = _SEED.value
  c.workdir = os.path.join(_WORKDIR.value, name)
  c.base.cache_root = os.path.join(_WORKDIR.value, "bases")
  c.task.data_dir = os.path.join(_WORKDIR.value, "tfds")
  c.checkpoint.every = 0
  if _STEPS.value is not None:
    c.train.steps = _STEPS.value
    c.eval.every = max(1, _STEPS.value // 4)
  if _PRETRAIN_STEPS.value is not None:
    c.base.pretrain.steps = _PRETRAIN_STEPS.value
  if _EVAL.value is not None:
    c.eval.num_samples = _EVAL.value
  c.log.plot = False
  return c


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
