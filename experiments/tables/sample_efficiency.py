"""Table 9b: fewer samples. Dynamic sampling (drop zero-variance groups and
sample again) and D3S (dual-level down-sampling) reach GRPO's final
held-out accuracy with fewer samples than GRPO, counting every sampling
round (DAPO, arXiv 2503.14476; Learning More with Less: A Dynamic
Dual-Level Down-Sampling Framework for Efficient Policy Optimization, 2025).

Run::

  python -m scripts.reproduce --table sample_efficiency

One cell: ``python -m scripts.train --config
experiments/tables/sample_efficiency.py:method=dynamic_sampling,seed=1``.
Measured on a 2-core AMD EPYC: about 28 minutes (estimate before the run;
the results file has the measured time).
"""

import math

from divrl import tables
from experiments import common
from experiments.tables import _testbed

METHODS = ("grpo", "dynamic_sampling", "d3s")
EVAL_EVERY = 100

PROTOCOL = f"""
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`), one base per seed.
- **Methods.** All with group mean/std advantages, PPO clip 0.2,
  token-mean, no KL, learning rate 3e-4, 8 prompts x 16 samples per
  update, `_testbed.STEPS["countdown"]` RL steps, held-out evaluation every
  {EVAL_EVERY} steps (so these runs are not the other tables' GRPO runs):
  `grpo`; `dynamic_sampling` (DAPO's: groups whose 16 rewards are all equal
  are dropped and new prompts sampled, up to 3 sampling rounds per step,
  `train.dynamic_sampling`); `d3s` (D3S's two levels as token weights:
  `d3s_rollouts`, per group the rollouts whose advantages have the largest
  variance, and `d3s_tokens`, the tokens with the largest |A| x entropy, both
  keeping a share that grows from 0.5 to 1 over the first 100 steps; the
  schedule's form is divrl's choice, the paper's was not available).
- **Metric.** `samples_to_grpo_final`: the number of sampled responses,
  counting every sampling round, that a method has drawn when its held-out
  pass@1 (64 prompts x 256 samples) first reaches the GRPO run's final
  held-out pass@1 on the same seed; infinite when it never does within the
  run (then the claim has no interval and the table says so). `samples`: all
  responses a run sampled.
- **Seeds.** 0, 1, 2.
- **Claims and test** (paired t-interval over seeds, 95%):
  `samples_to_grpo_final` of `dynamic_sampling` < `grpo`'s, and of `d3s` <
  `grpo`'s.
"""

TABLE = tables.Table(
    name="sample_efficiency",
    title="Table 9b: samples to reach GRPO's accuracy",
    claim=("Filtering out zero-variance groups (dynamic sampling) or"
           " down-sampling to the most informative rollouts and tokens (D3S)"
           " reaches GRPO's accuracy with fewer samples (DAPO: An Open-Source"
           " LLM Reinforcement Learning System at Scale, arXiv 2503.14476;"
           " D3S, 2025)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=(
        tables.Claim("dynamic sampling needs fewer samples",
                     "samples_to_grpo_final", "dynamic_sampling", "grpo",
                     "less"),
        tables.Claim("D3S needs fewer samples", "samples_to_grpo_final",
                     "d3s", "grpo", "less"),
    ),
    columns=("pass@1", "pass@256", "token_entropy", "samples",
             "samples_to_grpo_final"),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  c = _testbed.policy("countdown", arg.seed)
  c.eval.every = EVAL_EVERY
  if arg.method == "dynamic_sampling":
    c.train.dynamic_sampling = True
    c.train.max_sampling_rounds = 3
  elif arg.method == "d3s":
    c.objective.token_weights = {"d3s_rollouts": {}, "d3s_tokens": {}}
  return c


def _cumulative_samples(record):
  """``{step: responses sampled up to and including it}``."""
  c = record["config"]["sampling"]
  per_round = c["num_prompts"] * c["num_samples"]
  out, total = {0: 0}, 0
  for h in record["history"]:
    total += int(h["sampling_rounds"]) * per_round
    out[int(h["step"])] = total
  return out


def derive(records):
  """Per run: ``samples`` and ``samples_to_grpo_final`` (see PROTOCOL)."""
  out = {}
  for (method, seed), rec in records.items():
    cum = _cumulative_samples(rec)
    grpo = records.get(("grpo", seed))
    row = {"samples": float(cum[max(cum)])}
    if grpo is not None:
      target = grpo["evals"][-1][1]["eval/pass@1"]
      reached = [step for step, e in rec["evals"]
                 if step > 0 and e["eval/pass@1"] >= target]
      row["samples_to_grpo_final"] = (float(cum[min(reached)]) if reached
                                      else math.inf)
    out[(method, seed)] = row
  return out
