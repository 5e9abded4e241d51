"""Table 3: the sign of the reinforcement. Negative samples alone (NSR) keep
pass@k across k at or above the base's; positive samples alone (PSR) give
the best pass@1 and a worse pass@256; W-REINFORCE is at least GRPO at large
k (The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning,
arXiv 2506.01347).

Run::

  python -m scripts.reproduce --table sign

One cell: ``python -m scripts.train --config
experiments/tables/sign.py:method=nsr,seed=1``.
Measured on a 2-core AMD EPYC: about 22 minutes after Table 1, whose GRPO runs it shares (estimate before the run;
the results file has the measured time).
"""

from divrl import tables
from experiments import common
from experiments.tables import _testbed

PROTOCOL = """
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`), one base per seed.
- **Methods.** All with PPO clip 0.2, token-mean, no KL, learning rate
  3e-4, 8 prompts x 16 samples, `_testbed.STEPS["countdown"]` RL steps; only
  the advantage differs:
  `base` (0 RL steps); `grpo` (group mean/std); `psr` (+1 on correct
  samples, 0 on wrong ones); `nsr` (-1 on wrong samples, 0 on correct
  ones); `w_reinforce` (lambda = 0.1 on correct samples, -1 on wrong ones,
  the paper's lambda). The paper's PSR/NSR drop the other samples from the
  batch; divrl gives them advantage 0, the same gradient direction with a
  token-mean denominator that still counts them.
- **Evaluation.** 64 held-out prompts x 256 samples at temperature 1.
- **Seeds.** 0, 1, 2.
- **Claims and test** (paired t-interval over seeds, 95%):
  1. NSR keeps pass@256 at or above the base's: tested as pass@256(nsr) >
     pass@256(base). "Reproduced" means above; an interval that contains 0
     ("inconclusive") is also what "at the base's" predicts; "not
     reproduced" means below.
  2. PSR has the best pass@1: pass@1(psr) > pass@1(m) for m = nsr, grpo,
     w_reinforce (three claims).
  3. PSR lowers pass@256: pass@256(psr) < pass@256(base).
  4. W-REINFORCE is at least GRPO at large k: pass@256(w_reinforce) >
     pass@256(grpo); as in 1, "inconclusive" is consistent with "equal".
"""

METHODS = ("base", "grpo", "psr", "nsr", "w_reinforce")

TABLE = tables.Table(
    name="sign",
    title="Table 3: the sign of the reinforcement",
    claim=("Training only on negative samples (NSR) keeps pass@k across the"
           " whole range of k at or above the base model's; positive-only"
           " training (PSR) improves pass@1 but hurts pass@k at large k;"
           " W-REINFORCE (lambda = 0.1) is at least as good as GRPO at large"
           " k (The Surprising Effectiveness of Negative Reinforcement in"
           " LLM Reasoning, arXiv 2506.01347)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=(
        tables.Claim("NSR keeps pass@256 at or above the base's",
                     "pass@256", "nsr", "base", "greater"),
        tables.Claim("PSR's pass@1 beats NSR's", "pass@1", "psr", "nsr",
                     "greater"),
        tables.Claim("PSR's pass@1 beats GRPO's", "pass@1", "psr", "grpo",
                     "greater"),
        tables.Claim("PSR's pass@1 beats W-REINFORCE's", "pass@1", "psr",
                     "w_reinforce", "greater"),
        tables.Claim("PSR lowers pass@256", "pass@256", "psr", "base",
                     "less"),
        tables.Claim("W-REINFORCE is at least GRPO at pass@256", "pass@256",
                     "w_reinforce", "grpo", "greater"),
    ),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  if arg.method == "base":
    return _testbed.base("countdown", arg.seed)
  c = _testbed.policy("countdown", arg.seed)
  if arg.method == "w_reinforce":
    c.objective.advantage = {"name": "w_reinforce", "lam": 0.1}
  elif arg.method in ("psr", "nsr"):
    c.objective.advantage = arg.method
  return c
