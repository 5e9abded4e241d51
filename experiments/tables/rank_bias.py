"""Table 2: rank bias. On the planted-rare task, the unlikeliness reward
keeps the pass@N that GRPO loses and keeps more of the rare solutions; two
PPO epochs per batch instead of one are a second mitigation (Rewarding the
Unlikely: Lifting GRPO Beyond Distribution Sharpening, arXiv 2506.02355).

Run::

  python -m scripts.reproduce --table rank_bias

One cell: ``python -m scripts.train --config
experiments/tables/rank_bias.py:method=unlikeliness,seed=1``.
Measured on a 2-core AMD EPYC: about 11 minutes (estimate before the run;
the results file has the measured time).
"""

from divrl import tables
from experiments import common
from experiments.tables import _testbed

PROTOCOL = """
- **Task and base.** The planted-rare task and its bases as in Table 0
  (`experiments/tables/_testbed.py`): make a target as a sum (common) or a
  product (rare, 5% of the pre-training answers); one base per seed.
  `rare_found` is the share of held-out prompts with a correct product among
  the 256 samples; held-out targets are never seen in pre-training.
- **Methods.** All with PPO clip 0.2, token-mean, no KL, learning rate
  3e-4, 8 prompts x 16 samples, `_testbed.STEPS["rare"]` RL steps:
  `base` (0 RL steps); `grpo` (group mean/std, 1 PPO epoch);
  `unlikeliness` (GRPO on the unlikeliness reward, beta = 0.25 as in the
  released code: the correct sample of likelihood rank rho in its group gets
  reward 1 - 0.25 rho / G; 1 PPO epoch); `grpo_2epochs` (GRPO with 2 PPO
  epochs over each batch, one minibatch per epoch).
- **Evaluation.** 64 held-out prompts x 256 samples at temperature 1.
- **Seeds.** 0, 1, 2.
- **Claims and test** (paired t-interval over seeds, 95%):
  1. GRPO loses pass@256 on this task: pass@256(grpo) < pass@256(base)
     (the premise of the paper);
  2. the unlikeliness reward keeps pass@256: pass@256(unlikeliness) >
     pass@256(grpo);
  3. it keeps more rare solutions: rare_found(unlikeliness) >
     rare_found(grpo);
  4. two PPO epochs mitigate the loss: pass@256(grpo_2epochs) >
     pass@256(grpo).
"""

METHODS = ("base", "grpo", "unlikeliness", "grpo_2epochs")

TABLE = tables.Table(
    name="rank_bias",
    title="Table 2: rank bias",
    claim=("GRPO reinforces highly probable solutions and neglects rare"
           " ones, so pass@N at large N falls below the base's; the"
           " unlikeliness reward (beta = 0.25) keeps pass@N and the rare"
           " solutions, and more updates per batch (PPO epochs) are a second"
           " mitigation (Rewarding the Unlikely: Lifting GRPO Beyond"
           " Distribution Sharpening, arXiv 2506.02355)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=(
        tables.Claim("GRPO loses pass@256", "pass@256", "grpo", "base",
                     "less"),
        tables.Claim("unlikeliness keeps pass@256", "pass@256",
                     "unlikeliness", "grpo", "greater"),
        tables.Claim("unlikeliness keeps rare solutions", "rare_found",
                     "unlikeliness", "grpo", "greater"),
        tables.Claim("two PPO epochs keep pass@256", "pass@256",
                     "grpo_2epochs", "grpo", "greater"),
    ),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  if arg.method == "base":
    return _testbed.base("rare", arg.seed)
  c = _testbed.policy("rare", arg.seed)
  if arg.method == "unlikeliness":
    c.objective.transforms = [{"name": "unlikeliness_reward", "beta": 0.25}]
  elif arg.method == "grpo_2epochs":
    c.train.ppo_epochs = 2
  return c
