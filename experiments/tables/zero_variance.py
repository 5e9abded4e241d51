"""Table 9a: zero-variance groups. A group whose rewards are all equal gives
exactly zero GRPO gradient, and a group's reward variance tracks the size of
its gradient ("reward variance lower-bounds the expected policy gradient
magnitude": MMR1, Enhancing Multimodal Reasoning with Variance-Aware
Sampling and Open Resources (2025); the same
observation drives dynamic sampling in DAPO, arXiv 2503.14476).

Measured directly, with no training comparison.

Run::

  python -m scripts.reproduce --table zero_variance

One cell (trains to the checkpoint with ``scripts.train``, without the
measurement): ``python -m scripts.train --config
experiments/tables/zero_variance.py:method=step400,seed=1``.
Measured on a 2-core AMD EPYC: about 12 minutes (estimate before the run;
the results file has the measured time).
"""

import numpy as np

from divrl import tables
from experiments import common
from experiments.tables import _testbed

NUM_BATCHES = 40
QUICK_BATCHES = 2
CHECKPOINTS = (0, _testbed.STEPS["countdown"] // 2)
METHODS = tuple(f"step{s}" for s in CHECKPOINTS)
ESTIMATORS = {"grpo": "grpo", "mean_baseline": "dr_grpo"}

PROTOCOL = f"""
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`), one base per seed.
- **Checkpoints.** The base (step 0) and the testbed's plain GRPO after
  {CHECKPOINTS[1]} steps (half of its run).
- **Measurement.** At each checkpoint, {NUM_BATCHES} fresh batches of 8
  training prompts x 16 samples ({NUM_BATCHES * 8} groups). For every group:
  its reward variance `p (1 - p)` and the norm of the gradient of that group's
  own loss (the group alone as the batch; PPO clip 0.2, token-mean) with
  `grpo` advantages and, as a second column, with `dr_grpo` (mean baseline,
  no std). Metrics per run: the Spearman correlation between variance and
  gradient norm over the groups with nonzero variance (`spearman_grpo`,
  `spearman_mean_baseline`), the share of zero-variance groups, and the
  largest gradient norm of a zero-variance group (`zero_group_max_norm_*`).
- **Seeds.** 0, 1, 2 (seed = base, data split and prompt order).
- **Claims and test.** At each checkpoint, `spearman_grpo > 0` (one-sample
  t-interval over seeds, 95%). The zero-gradient claim is exact, not
  statistical: `zero_group_max_norm_grpo` must be 0.0 in every run (the
  results table shows it; any nonzero value refutes it).
"""

TABLE = tables.Table(
    name="zero_variance",
    title="Table 9a: zero-variance groups",
    claim=("Groups with zero reward variance give zero gradient, and reward"
           " variance lower-bounds the policy-gradient magnitude (MMR1:"
           " Enhancing Multimodal Reasoning with Variance-Aware Sampling and"
           " Open Resources (2025))."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=tuple(
        tables.Claim(f"{m}: group reward variance tracks the GRPO gradient"
                     " norm", "spearman_grpo", m, direction="greater")
        for m in METHODS),
    columns=("pass@1", "zero_variance_share", "zero_group_max_norm_grpo",
             "zero_group_max_norm_mean_baseline", "spearman_grpo",
             "spearman_mean_baseline"),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  return _testbed.policy("countdown", arg.seed,
                         steps=int(arg.method[len("step"):]))


def measure(trainer, quick=False):
  """Trains to the checkpoint, evaluates, then measures every group."""
  # pylint: disable=g-import-not-at-top
  from scipy import stats
  from divrl.objective import Objective
  from divrl.rl import gradients, reproduce
  evals = reproduce.train_to_checkpoint(trainer)
  spec = trainer.config.objective.to_dict()
  norms = gradients.group_gradient_norms(
      trainer, {name: Objective.from_config({**spec, "advantage": adv})
                for name, adv in ESTIMATORS.items()},
      num_batches=QUICK_BATCHES if quick else NUM_BATCHES)
  var = norms["variance"]
  zero = var == 0
  extras = {"zero_variance_share": float(np.mean(zero)),
            "groups": float(var.size)}
  for name in ESTIMATORS:
    extras[f"zero_group_max_norm_{name}"] = (
        float(np.max(norms[name][zero])) if zero.any() else 0.0)
    if np.sum(~zero) >= 3 and np.ptp(var[~zero]) > 0:
      extras[f"spearman_{name}"] = float(
          stats.spearmanr(var[~zero], norms[name][~zero]).statistic)
    else:
      extras[f"spearman_{name}"] = float("nan")
  return {"evals": evals, "history": trainer.history, "extras": extras}
