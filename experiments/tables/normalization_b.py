"""Table 12b: loss aggregation. With a vanilla PPO loss, token-level
aggregation (token-mean) beats sequence-level aggregation
(seq-mean-token-mean) on a base model; the other three aggregation modes
are reported beside them (Lite PPO; Part I: Tricks or Traps? A Deep Dive
into RL for LLM Reasoning, arXiv 2508.08221).

Table 12 is split in two files because it cannot fit in 30 minutes at the
testbed's 800 steps (7 new rows x 3 seeds x about 130 s, 46 minutes); this
file holds the five aggregations at reward scale 1 with the group std,
``normalization_a`` the normalisations across reward scales.

Run::

  python -m scripts.reproduce --table normalization_b

One cell: ``python -m scripts.train --config
experiments/tables/normalization_b.py:method=seq_mean_token_mean,seed=1``.
Measured on a 2-core AMD EPYC: about 26 minutes (estimate before the run;
the results file has the measured time).
"""

from divrl import tables
from experiments import common
from experiments.tables import _testbed

# method -> aggregation mode; `grpo` is the testbed's token-mean run.
AGGREGATIONS = {
    "seq_mean_token_mean": "seq-mean-token-mean",
    "token_sum": "token-sum",
    "seq_mean_token_sum": "seq-mean-token-sum",
    "seq_mean_token_sum_norm": "seq-mean-token-sum-norm",
}

PROTOCOL = """
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`), one base per seed: a tiny decoder
  pre-trained on solutions, not aligned (Lite PPO finds token-level
  aggregation better for base models and sequence-level for aligned ones).
- **Methods.** All with group mean/std advantages, PPO clip 0.2 (vanilla
  PPO loss), no KL, reward scale 1, learning rate 3e-4 (Adam, gradient
  clip 1), 8 prompts x 16 samples per step, `_testbed.STEPS["countdown"]`
  = 800 RL steps; only the aggregation of the per-token loss L over the
  mask m (n_i tokens in response i, B responses) differs:
  `base` (0 RL steps) and `grpo` (`token-mean`: sum L m / sum m) are the
  cached testbed rows of Tables 1 and 3;
  `seq_mean_token_mean`: mean over responses of each response's token mean
  (the original GRPO loss);
  `token_sum`: sum L m, no normaliser;
  `seq_mean_token_sum`: sum L m / B;
  `seq_mean_token_sum_norm`: sum L m / (B T), T = 16 the padded response
  length (Dr. GRPO's constant normaliser).
  The three sum modes give the gradient of token-mean times a factor
  (sum m, sum m / B, sum m / (B T)) that varies only with the batch's
  token count; under Adam and the gradient-norm clip they differ from
  token-mean through that factor alone. seq-mean-token-mean weights the
  tokens of a response by 1 / n_i, a different direction.
- **Evaluation.** 64 held-out prompts x 256 samples at temperature 1.
- **Seeds.** 0, 1, 2.
- **Claim and test** (paired t-interval over seeds, 95%). Lite PPO:
  token-level aggregation beats sequence-level aggregation with a vanilla
  PPO loss on a base model: pass@1(grpo) > pass@1(seq_mean_token_mean).
  The three sum modes are reported without a claim (the paper compares
  token-level with sequence-level aggregation).
"""

METHODS = ("base", "grpo", *AGGREGATIONS)

TABLE = tables.Table(
    name="normalization_b",
    title="Table 12b: loss aggregation",
    claim=("With a vanilla PPO loss on a base model, token-level loss"
           " aggregation beats sequence-level aggregation (Lite PPO; Part I:"
           " Tricks or Traps? A Deep Dive into RL for LLM Reasoning, arXiv"
           " 2508.08221)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=(
        tables.Claim("token-mean beats seq-mean-token-mean", "pass@1",
                     "grpo", "seq_mean_token_mean", "greater"),
    ),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  if arg.method == "base":
    return _testbed.base("countdown", arg.seed)
  c = _testbed.policy("countdown", arg.seed)
  if arg.method in AGGREGATIONS:
    c.objective.aggregation = AGGREGATIONS[arg.method]
  return c
