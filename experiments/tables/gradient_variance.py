"""Table 11: gradient variance. BNPO's policy gradient has a lower relative
variance than GRPO's, and GRPO's lower than mean-baseline REINFORCE's
(BNPO: Beta Normalization Policy Optimization, arXiv 2506.02864).

Measured directly, with no training comparison: at the base and at two
checkpoints of GRPO training, 200 fresh batches are drawn from the policy
and each estimator's gradient is computed on the same batches.

Run::

  python -m scripts.reproduce --table gradient_variance

One cell (trains to the checkpoint with ``scripts.train``, without the
measurement): ``python -m scripts.train --config
experiments/tables/gradient_variance.py:method=step0,seed=1``.
Measured on a 2-core AMD EPYC: about 25 minutes (estimate before the run;
the results file has the measured time).
"""

from divrl import tables
from divrl.objective import Objective
from experiments import common
from experiments.tables import _testbed

NUM_BATCHES = 200
QUICK_BATCHES = 4
CHECKPOINTS = (0, _testbed.STEPS["countdown"] // 2,
               _testbed.STEPS["countdown"])
METHODS = tuple(f"step{s}" for s in CHECKPOINTS)
# The estimators: only the advantage differs (PPO clip, token-mean, on the
# policy's own samples, so the clip is inactive and the gradient is the
# policy gradient of each advantage).
ESTIMATORS = {"mean_baseline": "dr_grpo", "grpo": "grpo", "bnpo": "bnpo"}

PROTOCOL = f"""
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`), one base per seed.
- **Checkpoints.** The base (step 0) and the policy after
  {CHECKPOINTS[1]} and {CHECKPOINTS[2]} steps of the testbed's plain GRPO
  (the GRPO run of Tables 1 and 3, retrained to the checkpoint).
- **Measurement.** At each checkpoint, {NUM_BATCHES} fresh batches of 8
  training prompts x 16 samples from the policy. On every batch, the
  gradient of one update (PPO clip 0.2, token-mean, one minibatch) of three
  estimators that differ only in the advantage: `mean_baseline`
  (`dr_grpo`: r - group mean, the REINFORCE baseline), `grpo` (group mean
  and std) and `bnpo` (Beta-normalised, its defaults). The metric is the
  relative variance `tr Cov[g] / ||E g||^2` over the batches, with the
  squared mean norm corrected for its `tr Cov / n` bias
  (`divrl.rl.gradients`); the share of zero-variance groups is reported
  too.
- **Seeds.** 0, 1, 2 (seed = base, data split and prompt order).
- **Claims and test** (paired t-interval over seeds, 95%), at each
  checkpoint: relative variance of `bnpo` < `grpo`, and of `grpo` <
  `mean_baseline`.
"""


def _claims():
  out = []
  for m in METHODS:
    out.append(tables.Claim(
        f"{m}: BNPO's relative variance is below GRPO's",
        "bnpo/relative_variance", m, m, "less",
        control_metric="grpo/relative_variance"))
    out.append(tables.Claim(
        f"{m}: GRPO's relative variance is below mean-baseline REINFORCE's",
        "grpo/relative_variance", m, m, "less",
        control_metric="mean_baseline/relative_variance"))
  return tuple(out)


TABLE = tables.Table(
    name="gradient_variance",
    title="Table 11: gradient variance",
    claim=("BNPO's adaptive Beta normalisation reduces the variance of the"
           " policy-gradient estimate relative to GRPO's group std, which in"
           " turn is below a mean baseline (BNPO: Beta Normalization Policy"
           " Optimization, arXiv 2506.02864)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=_claims(),
    columns=("pass@1", "pass@256", "token_entropy", "zero_variance_share",
             "mean_baseline/relative_variance", "grpo/relative_variance",
             "bnpo/relative_variance"),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  return _testbed.policy("countdown", arg.seed,
                         steps=int(arg.method[len("step"):]))


def measure(trainer, quick=False):
  """Trains to the checkpoint, evaluates, then measures the estimators."""
  # pylint: disable=g-import-not-at-top
  from divrl.rl import gradients, reproduce
  evals = reproduce.train_to_checkpoint(trainer)
  stats = gradients.estimator_statistics(
      trainer, {name: Objective.from_config(
          {**trainer.config.objective.to_dict(), "advantage": adv})
                for name, adv in ESTIMATORS.items()},
      num_batches=QUICK_BATCHES if quick else NUM_BATCHES)
  return {"evals": evals, "history": trainer.history, "extras": stats}
