"""Table 0: testbed calibration. The base and plain GRPO only, never a
method under test.

Run (all of it, 3 seeds)::

  python -m scripts.reproduce --table calibration

One cell: ``python -m scripts.train --config
experiments/tables/calibration.py:method=countdown_grpo,seed=1``.
Measured on a 2-core AMD EPYC: about 25 minutes for the full table, bases
included (estimate before the run; the results file has the measured time).
"""

from divrl import tables
from experiments import common

STEPS = {"countdown": 1200, "rare": 600}

PROTOCOL = """
This table fixes the testbed that the other tables use: it shows whether the
bases and plain GRPO reach the regime the seed papers describe (a base whose
pass@1 is far below its pass@256, and RL that raises pass@1 while the number
of distinct correct solutions falls). It never runs a method under test.

- **Tasks.** `countdown` (4 numbers in 1..9, targets 10..30, at least 3
  solutions per prompt; the knobs of `experiments/countdown`) and `rare`
  (targets 20..299 made as a sum or, rarely, a product; products are 5% of
  the pre-training answers; `experiments/rare`). `modular` is left out (no
  table uses it; its base is in docs/testbed.md) and so is `math_word` (one
  answer per problem).
- **Base.** The tiny decoder pre-trained 2000 steps on the task's
  Zipf-skewed mixture (skew 1.5 over each prompt's solutions, 20% wrong
  answers), the testbed default. One base per seed: seed `s` fixes the base,
  the train/test split and the prompt order, so methods pair seed by seed.
  No other skew is tried here.
- **GRPO.** `grpo` advantages (group mean and std), `ppo_clip` (eps 0.2),
  `token-mean` aggregation, no KL; Adam, learning rate 3e-4, gradient
  clip 1; 8 prompts x 16 samples per step, temperature 1; 16 new tokens
  (12 on `rare`). Countdown trains 1200 steps, rare 600, evaluated every
  200 steps.
- **Evaluation.** 64 held-out test prompts x 256 samples at temperature 1:
  pass@k for k = 1 ... 256 (unbiased estimator), distinct correct
  solutions per prompt, held-out token entropy, KL to the base (k3), and
  on `rare` the share of prompts with a correct product (`rare_found`).
- **Seeds.** 0, 1, 2.
- **Checks** (paired t-interval over seeds, 95%): on each task GRPO's
  pass@1 is above the base's, its distinct correct solutions are below the
  base's, and its pass@256 is below the base's. They say whether the regime
  is reached; they test no paper.
- **What it decides.** The RL step count of the tables that follow is read
  from the curves over training here (where pass@1 has risen and
  pass@256 and distinct solutions have fallen), not from any table's
  results.
"""

METHODS = ("countdown_base", "countdown_grpo", "rare_base", "rare_grpo")

TABLE = tables.Table(
    name="calibration",
    title="Table 0: testbed calibration",
    claim=("Not a paper's claim: the testbed reaches the regime the seed"
           " papers describe (The Invisible Leash, arXiv 2507.14843; Does"
           " Reinforcement Learning Really Incentivize Reasoning Capacity,"
           " arXiv 2504.13837): RL raises pass@1 and lowers pass@k at large"
           " k and the distinct correct solutions."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=tuple(
        c for task in ("countdown", "rare") for c in (
            tables.Claim(f"{task}: GRPO raises pass@1", "pass@1",
                         f"{task}_grpo", f"{task}_base", "greater"),
            tables.Claim(f"{task}: GRPO lowers distinct solutions",
                         "distinct", f"{task}_grpo", f"{task}_base", "less"),
            tables.Claim(f"{task}: GRPO lowers pass@256", "pass@256",
                         f"{task}_grpo", f"{task}_base", "less"))),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  task, kind = arg.method.rsplit("_", 1)
  c = common.testbed_config(task, arg.seed)
  c.workdir = f"runs/tables/calibration/{arg.method}/{arg.seed}"
  c.train.steps = STEPS[task] if kind == "grpo" else 0
  c.eval.num_samples = 256
  c.eval.every = 200
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  c.objective.aggregation = "token-mean"
  return c
