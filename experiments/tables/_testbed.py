"""The testbed shared by the reproduction tables after Table 0.

Every table builds its runs from these functions, so that two tables that
need the same run (the base, or plain GRPO on the same task and seed) define
the same config and share it through the run cache. The step counts come
from Table 0 (``results/tables/calibration.md``), which runs only the base
and plain GRPO; see ``docs/reproducing.md``.

Settings (beyond the task's own, ``experiments/<task>/base.py``): held-out
evaluation on 64 test prompts x 256 samples, four times during training and
at the end; 8 prompts x 16 samples per RL step; learning rate 3e-4.
"""

from experiments import common

# RL steps per task, read from Table 0's curves over GRPO training
# (results/tables/calibration.md, mean of 3 seeds). Countdown: held-out
# pass@1 rises 0.036 -> 0.108 (200) -> 0.117 (400) -> 0.148 (600) -> 0.173
# (800) -> 0.176 (1000) -> 0.181 (1200): at 800 steps it has reached 96% of
# its 1200-step value, pass@256 has fallen 0.776 -> 0.625 and distinct
# solutions 1.88 -> 0.89. Rare: pass@1 0.217 -> 0.533 (200) -> 0.622 (400)
# -> 0.555 (600), its peak at 400, where the products are gone (rare_found
# 0.151 -> 0) and distinct solutions have fallen 11.0 -> 1.0. Longer runs
# would also not fit the tables' 30-minute budget.
STEPS = {"countdown": 800, "rare": 400}
EVAL_SAMPLES = 256


def policy(task: str, seed: int, *, steps: int | None = None):
  """A run on ``task`` for ``seed`` with plain GRPO (``grpo`` advantages,
  ``ppo_clip``, ``token-mean``, no KL): a table swaps the parts its method
  changes."""
  c = common.testbed_config(task, seed)
  c.train.steps = STEPS[task] if steps is None else steps
  c.eval.num_samples = EVAL_SAMPLES
  c.eval.every = max(1, c.train.steps // 4)
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  c.objective.aggregation = "token-mean"
  c.workdir = f"runs/tables/{task}/{seed}"
  return c


def base(task: str, seed: int):
  """The base model of ``task`` for ``seed``, evaluated (0 RL steps)."""
  c = policy(task, seed)
  c.train.steps = 0
  c.eval.every = 0
  return c
