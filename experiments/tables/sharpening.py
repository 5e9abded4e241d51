"""Table 1: sharpening. RLVR with GRPO raises pass@1 but lowers pass@k at
large k and the number of distinct correct solutions, and does not find
solutions outside the base's reach (The Invisible Leash, arXiv 2507.14843;
DPH-RL and ProGRPO make the same claim).

Run (5 seeds)::

  python -m scripts.reproduce --table sharpening

One cell: ``python -m scripts.train --config
experiments/tables/sharpening.py:method=grpo,seed=1``.
Measured on a 2-core AMD EPYC: about 16 minutes (estimate before the run;
the results file has the measured time).
"""

from divrl import tables
from experiments import common
from experiments.tables import _testbed

PROTOCOL = """
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`): the tiny decoder pre-trained 2000
  steps on a Zipf-skewed (1.5) mixture of solutions with 20% wrong answers,
  one base per seed.
- **Methods.** `base` (0 RL steps) and `grpo`: group mean/std advantages,
  PPO clip 0.2, token-mean, no KL, learning rate 3e-4, 8 prompts x 16
  samples per step, `_testbed.STEPS["countdown"]` RL steps (read from
  Table 0's curves).
- **Evaluation.** 64 held-out prompts x 256 samples at temperature 1.
  `new_solutions`: distinct correct solutions per prompt that the base's
  256-sample draw on the same prompts did not contain. For the base row it is
  measured on a second, independent 256-sample draw of the base, so it says
  how many "new" solutions resampling alone finds.
- **Seeds.** 0 ... 4 (5 seeds: the table has only two methods).
- **Claims and test** (paired t-interval over seeds, 95%): GRPO's pass@1 is
  above the base's; its pass@256 and its distinct correct solutions are
  below the base's; and it finds fewer solutions outside the base's draw
  than a second draw of the base does (support does not grow).
"""

METHODS = ("base", "grpo")

TABLE = tables.Table(
    name="sharpening",
    title="Table 1: sharpening",
    claim=("RLVR with GRPO raises pass@1 but lowers pass@k at large k and"
           " the number of distinct correct solutions relative to the base;"
           " solutions the base never produces stay absent (The Invisible"
           " Leash: Why RLVR May Not Escape Its Origin, arXiv 2507.14843;"
           " also DPH-RL and ProGRPO)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=5,
    claims=(
        tables.Claim("GRPO raises pass@1", "pass@1", "grpo", "base",
                     "greater"),
        tables.Claim("GRPO lowers pass@256", "pass@256", "grpo", "base",
                     "less"),
        tables.Claim("GRPO lowers the distinct correct solutions",
                     "distinct", "grpo", "base", "less"),
        tables.Claim("GRPO finds fewer solutions outside the base's draw"
                     " than a second base draw", "new_solutions", "grpo",
                     "base", "less"),
    ),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  if arg.method == "base":
    return _testbed.base("countdown", arg.seed)
  return _testbed.policy("countdown", arg.seed)
