"""Table 10: length penalties. A length penalty applied to every group
(Kimi k1.5's) collapses accuracy early in training; GRPO-lambda's gate,
which applies it only to the groups that are already mostly correct, avoids
the collapse (Stable Reinforcement Learning for Efficient Reasoning,
arXiv 2505.18086).

Run::

  python -m scripts.reproduce --table length_penalty

One cell: ``python -m scripts.train --config
experiments/tables/length_penalty.py:method=grpo_lambda,seed=1``.
Measured on a 2-core AMD EPYC: about 14 minutes (estimate before the run;
the results file has the measured time).
"""

from divrl import tables
from experiments import common
from experiments.tables import _testbed

METHODS = ("base", "grpo", "naive_length", "grpo_lambda")
EARLY_STEP = _testbed.STEPS["countdown"] // 4

PROTOCOL = f"""
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`), one base per seed. Countdown answers
  may use two, three or four of the numbers (`use_all` is off), so correct
  answers differ in length and some prompts have no short solution: a
  longer answer can be the right one.
- **Methods.** All with group mean/std advantages, PPO clip 0.2, token-mean,
  no KL, learning rate 3e-4, 8 prompts x 16 samples,
  `_testbed.STEPS["countdown"]` RL steps: `base` (0 steps); `grpo` (no
  length term); `naive_length` (Kimi k1.5's length reward added in every
  group: `1[r > 0] + lambda_i`, `lambda_i = 0.5 - (|y_i| - min_g) / (max_g -
  min_g)` for correct rows and `min(0, lambda_i)` for wrong ones; the
  `grpo_lambda_length` transform with `fraction = 1, tau = 0`, i.e. no gate);
  `grpo_lambda` (the same transform with its defaults: the length term only
  in the top half of groups by accuracy that also have accuracy >= 0.5,
  `fraction = 0.5, tau = 0.5, coef = 1`; the paper's exact lambda was not
  confirmed, see the part's docstring).
- **Evaluation.** 64 held-out prompts x 256 samples, every
  {EARLY_STEP} steps and at the end. `pass@1_early`: held-out pass@1 at
  step {EARLY_STEP}; `response_length`: mean sampled response length (tokens)
  over the last 50 training steps.
- **Seeds.** 0, 1, 2.
- **Claims and test** (paired t-interval over seeds, 95%):
  1. the naive penalty collapses accuracy early: `pass@1_early(naive_length)
     < pass@1_early(grpo)`;
  2. GRPO-lambda avoids it: `pass@1_early(grpo_lambda) >
     pass@1_early(naive_length)`, and at the end `pass@1(grpo_lambda) >
     pass@1(naive_length)`;
  3. the penalties do shorten answers: `response_length(naive_length) <
     response_length(grpo)` (a check that the penalty acts at all).
"""

TABLE = tables.Table(
    name="length_penalty",
    title="Table 10: length penalties",
    claim=("Length penalties under GRPO give negative advantages to correct"
           " but long answers and collapse accuracy early in training;"
           " gating the penalty by group accuracy (GRPO-lambda) avoids it"
           " (Stable Reinforcement Learning for Efficient Reasoning,"
           " arXiv 2505.18086)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=(
        tables.Claim("the naive penalty collapses accuracy early",
                     "pass@1_early", "naive_length", "grpo", "less"),
        tables.Claim("GRPO-lambda avoids the early collapse", "pass@1_early",
                     "grpo_lambda", "naive_length", "greater"),
        tables.Claim("GRPO-lambda ends above the naive penalty", "pass@1",
                     "grpo_lambda", "naive_length", "greater"),
        tables.Claim("the naive penalty shortens answers", "response_length",
                     "naive_length", "grpo", "less"),
    ),
    columns=("pass@1_early", "pass@1", "pass@256", "distinct",
             "response_length", "token_entropy"),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  if arg.method == "base":
    return _testbed.base("countdown", arg.seed)
  c = _testbed.policy("countdown", arg.seed)
  if arg.method == "naive_length":
    c.objective.transforms = [{"name": "grpo_lambda_length",
                               "fraction": 1.0, "tau": 0.0}]
  elif arg.method == "grpo_lambda":
    c.objective.transforms = [{"name": "grpo_lambda_length"}]
  return c


def derive(records):
  """``pass@1_early`` and ``response_length`` of every run."""
  out = {}
  for key, rec in records.items():
    evals = dict((int(s), e) for s, e in rec["evals"])
    row = {}
    if EARLY_STEP in evals:
      row["pass@1_early"] = evals[EARLY_STEP]["eval/pass@1"]
    elif max(evals) == 0:   # the base: its only evaluation
      row["pass@1_early"] = evals[0]["eval/pass@1"]
    lengths = [h["response_length"] for h in rec["history"][-50:]]
    if lengths:
      row["response_length"] = sum(lengths) / len(lengths)
    out[key] = row
  return out
