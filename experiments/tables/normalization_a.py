"""Table 12a: advantage normalisation across reward scales. Group-mean
advantages divided by the batch-level std (Lite PPO) beat the group std
and no std, at reward scale 1 and at reward scale 10 (Part I: Tricks or
Traps? A Deep Dive into RL for LLM Reasoning, arXiv 2508.08221).

Table 12 is split in two files because it cannot fit in 30 minutes at the
testbed's 800 steps: the distinct runs of its grid (below) are 7 new rows x
3 seeds x about 130 s, 46 minutes. This file holds the normalisations x
reward scales (token-mean); ``normalization_b`` holds the five loss
aggregations.

Run::

  python -m scripts.reproduce --table normalization_a

One cell: ``python -m scripts.train --config
experiments/tables/normalization_a.py:method=batch_std,seed=1``.
Measured on a 2-core AMD EPYC: about 26 minutes (estimate before the run;
the results file has the measured time).
"""

from divrl import tables
from experiments import common
from experiments.tables import _testbed

SCALE = 10.0

PROTOCOL = f"""
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`), one base per seed. Rewards are 1
  (correct) or 0.
- **Methods.** All with PPO clip 0.2 (Lite PPO's vanilla PPO loss),
  token-mean aggregation, no KL, learning rate 3e-4 (Adam, gradient clip
  1), 8 prompts x 16 samples per step, `_testbed.STEPS["countdown"]` = 800
  RL steps; only the advantage's normalisation and the reward scale
  differ:
  `base` (0 RL steps) and `grpo` (group mean, group std: (r - mean_g) /
  (std_g + 1e-6)) are the cached testbed rows of Tables 1 and 3;
  `batch_std`: group mean, std of the whole batch's rewards (`grpo` with
  `std_scope="batch"`, the `lite_ppo` recipe's advantage; the std is taken
  over the raw rewards of all 128 samples, TRL's `scale_rewards="batch"`);
  `no_std`: group mean, no std (`dr_grpo`: r - mean_g);
  `batch_std_x10`, `no_std_x10`: the same at reward scale {SCALE:g}
  (`reward_map` transform, scale {SCALE:g}: rewards 0 or 10).
- **Which scale-10 runs exist.** A positive reward scale c leaves both
  std-normalised advantages unchanged: (c r - c m) / (c s + eps) = (r - m)
  / (s + eps / c). With eps = 1e-6 the scale-10 advantages differ from the
  scale-1 ones by at most 1.4e-5 (group std) and 5.5e-6 (batch std) on a
  0/1 batch (checked on a random batch of 8 x 16 before this protocol).
  The group-std run at scale 10 would therefore repeat `grpo` up to
  rounding, and we do not run it: `grpo` stands for group std at both
  scales. `batch_std_x10` is run once as the scale-10 row of the method
  under test. Only `no_std` really changes with the scale (its advantages
  are 10 times larger; Adam and the gradient clip absorb part of it).
- **Evaluation.** 64 held-out prompts x 256 samples at temperature 1.
- **Seeds.** 0, 1, 2.
- **Claims and test** (paired t-interval over seeds, 95%). Lite PPO: group
  mean with batch-level std is the most robust normalisation across reward
  scales. Tested on pass@1:
  1. scale 1: pass@1(batch_std) > pass@1(grpo);
  2. scale 1: pass@1(batch_std) > pass@1(no_std);
  3. scale {SCALE:g}: pass@1(batch_std_x10) > pass@1(grpo) (`grpo` as the
     group-std row at scale {SCALE:g}, see above);
  4. scale {SCALE:g}: pass@1(batch_std_x10) > pass@1(no_std_x10).
  Lite PPO's second ingredient, token-level aggregation, is Table 12b
  (`normalization_b`).
"""

METHODS = ("base", "grpo", "batch_std", "no_std", "batch_std_x10",
           "no_std_x10")

TABLE = tables.Table(
    name="normalization_a",
    title="Table 12a: advantage normalisation across reward scales",
    claim=("Advantage normalisation with the group mean and the batch-level"
           " standard deviation is the most robust across reward scales,"
           " ahead of the group-level std and of no std (Lite PPO; Part I:"
           " Tricks or Traps? A Deep Dive into RL for LLM Reasoning, arXiv"
           " 2508.08221)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=(
        tables.Claim("scale 1: batch std beats group std", "pass@1",
                     "batch_std", "grpo", "greater"),
        tables.Claim("scale 1: batch std beats no std", "pass@1",
                     "batch_std", "no_std", "greater"),
        tables.Claim(f"scale {SCALE:g}: batch std beats group std", "pass@1",
                     "batch_std_x10", "grpo", "greater"),
        tables.Claim(f"scale {SCALE:g}: batch std beats no std", "pass@1",
                     "batch_std_x10", "no_std_x10", "greater"),
    ),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  if arg.method == "base":
    return _testbed.base("countdown", arg.seed)
  c = _testbed.policy("countdown", arg.seed)
  if arg.method.startswith("batch_std"):
    c.objective.advantage = {"name": "grpo", "std_scope": "batch"}
  elif arg.method.startswith("no_std"):
    c.objective.advantage = "dr_grpo"
  if arg.method.endswith("_x10"):
    c.objective.transforms = [{"name": "reward_map", "scale": SCALE}]
  return c
