"""Table 6: diversity reward. DARLING's quality-times-diversity reward
raises pass@1 and pass@k together relative to GRPO (Jointly Reinforcing
Diversity and Quality in Language Model Generations, arXiv 2509.02534);
DSDR's dual-scale diversity regularization is a second row (DSDR:
Dual-Scale Diversity Regularization for Exploration in LLM Reasoning, arXiv
2602.19895).

Run::

  python -m scripts.reproduce --table diversity_reward

One cell: ``python -m scripts.train --config
experiments/tables/diversity_reward.py:method=darling,seed=1``.
Measured on a 2-core AMD EPYC: about 21 minutes (estimate before the run;
the results file has the measured time). Arithmetic: the `base` and `grpo`
rows are the runs of Tables 1 and 3 (cached, 0 s); `darling` and `dr_grpo`
change only the rewards or the advantage (no extra statistic): 6 runs x
about 130 s; `dsdr` needs the response embeddings and the token entropy in
the update, taken as +25% per run: 3 runs x about 160 s. 780 s + 480 s =
21 minutes.
"""

from divrl import tables
from experiments import common
from experiments.tables import _testbed

# DSDR's weights. Local term: lambda_l = 0.001 and tau = 5 (the paper's;
# `dsdr_local`'s docstring). Global term: the paper adds 0.001 times the
# distinctiveness (1 - cos) / 2; `dsdr_global` adds coef times (1 - cos),
# so coef = 0.001 / 2.
DSDR_GLOBAL_COEF = 0.0005
DSDR_LOCAL = {"coef": 0.001, "tau": 5.0, "clip": 1.0}

PROTOCOL = """
- **Task and base.** Countdown and its bases as in Table 0
  (`experiments/tables/_testbed.py`), one base per seed.
- **Methods.** All with PPO clip 0.2, token-mean, no KL, learning rate
  3e-4, 8 prompts x 16 samples, `_testbed.STEPS["countdown"]` RL steps:
  `base` (0 RL steps); `grpo` (group mean/std; the run of Tables 1 and 3);
  `darling` (the `darling` recipe, as the authors' math scripts run it:
  the reward `r_i * div_i` with `div_i = max(0.1, (n - |C(i)|) / (n - 1))`,
  the share of the group's other rollouts outside `i`'s class, then the
  group-mean baseline without the std (`dr_grpo`); partition over all
  rollouts, `partition` not `partition_correct`, no min shift). The
  partition is the task's canonical solutions (`Batch.solution_ids`: two
  correct answers are one class when they are the same solution up to
  commutativity and associativity, each wrong answer a class of its own),
  which stands for DARLING's learned semantic-equivalence classifier and is
  the same partition `distinct` counts;
  `dr_grpo` (the `dr_grpo` advantage alone, group mean without the std,
  plain rewards): not a method of the paper but the control that separates
  DARLING's reward from its change of advantage;
  `dsdr` (GRPO plus both of DSDR's terms: `dsdr_global`, the reward of a
  correct rollout plus 0.0005 times its mean cosine dissimilarity `1 - cos`
  to the group's other correct rollouts, the paper's weight 0.001 on `(1 -
  cos) / 2`; and `dsdr_local`, an entropy bonus on the tokens of correct
  rollouts with lambda_l = 0.001, allocated by a softmax (tau = 5) of their
  embedding distinctiveness, no clip). The embeddings are the policy's
  final hidden states averaged over the response tokens.
- **Where DSDR differs from the paper.** Both parts are "inspired by" in
  divrl: `dsdr_global` takes the dissimilarity among the correct rollouts
  (the paper's is over all the group's rollouts, clipped), and the
  distinctiveness keeps only the paper's semantic half (the formula half
  needs extracted formulas). Under token-mean aggregation the local term's
  weight per rollout follows its length (the paper's is length-invariant;
  Countdown answers are at most 16 tokens). The paper's advantage is not
  stated in divrl; the row uses the testbed's GRPO advantage, so `dsdr` and
  `grpo` differ only by DSDR's two terms.
- **Evaluation.** 64 held-out prompts x 256 samples at temperature 1.
- **Seeds.** 0, 1, 2.
- **Claims and test** (paired t-interval over seeds, 95%):
  1. DARLING raises pass@1 over GRPO: pass@1(darling) > pass@1(grpo).
  2. DARLING raises pass@k over GRPO: pass@256(darling) > pass@256(grpo).
  3. and 4. The same two for DSDR: pass@1(dsdr) > pass@1(grpo) and
     pass@256(dsdr) > pass@256(grpo).
  5. and 6. DARLING's reward, the advantage held fixed: pass@1(darling) >
     pass@1(dr_grpo) and pass@256(darling) > pass@256(dr_grpo). These say
     whether claims 1-2 come from the diversity reward or from dropping
     the std; the paper compares with GRPO only.
"""

METHODS = ("base", "grpo", "darling", "dr_grpo", "dsdr")

TABLE = tables.Table(
    name="diversity_reward",
    title="Table 6: diversity reward",
    claim=("Reinforcing a quality reward multiplied by a semantic diversity"
           " reward over a partition of each group (DARLING) achieves higher"
           " pass@1 and higher pass@k than quality-only RL on competition"
           " math (Jointly Reinforcing Diversity and Quality in Language"
           " Model Generations, arXiv 2509.02534); DSDR's dual-scale"
           " diversity regularization among correct trajectories gives"
           " consistent improvements in accuracy and pass@k (DSDR:"
           " Dual-Scale Diversity Regularization for Exploration in LLM"
           " Reasoning, arXiv 2602.19895)."),
    protocol=PROTOCOL,
    methods=METHODS,
    seeds=3,
    claims=(
        tables.Claim("DARLING raises pass@1 over GRPO", "pass@1", "darling",
                     "grpo", "greater"),
        tables.Claim("DARLING raises pass@256 over GRPO", "pass@256",
                     "darling", "grpo", "greater"),
        tables.Claim("DSDR raises pass@1 over GRPO", "pass@1", "dsdr",
                     "grpo", "greater"),
        tables.Claim("DSDR raises pass@256 over GRPO", "pass@256", "dsdr",
                     "grpo", "greater"),
        tables.Claim("DARLING's reward raises pass@1 at the same advantage",
                     "pass@1", "darling", "dr_grpo", "greater"),
        tables.Claim("DARLING's reward raises pass@256 at the same"
                     " advantage", "pass@256", "darling", "dr_grpo",
                     "greater"),
    ),
)


def get_config(arg=None):
  arg = common.parse_table_arg(arg, METHODS)
  if arg.method == "base":
    return _testbed.base("countdown", arg.seed)
  c = _testbed.policy("countdown", arg.seed)
  if arg.method == "darling":
    c.objective.transforms = ["darling"]
    c.objective.advantage = "dr_grpo"
  elif arg.method == "dr_grpo":
    c.objective.advantage = "dr_grpo"
  elif arg.method == "dsdr":
    c.objective.transforms = [{"name": "dsdr_global",
                               "coef": DSDR_GLOBAL_COEF}]
    c.objective.regularizers = {"dsdr_local": dict(DSDR_LOCAL)}
  return c
