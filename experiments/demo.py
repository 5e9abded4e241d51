"""Three objectives named entirely by config, for the placeholder main job.

Override from the command line, e.g.
  scripts/run.sh --config.objectives.0.objective.surrogate.eps_high=0.28
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 32
  c.length = 16
  c.num_groups = 8
  c.group_size = 3  # for the tabular expected-gradient check
  c.objectives = [
      ml_collections.ConfigDict(dict(
          name="grpo", theory="grpo",
          objective=dict(
              advantage=dict(name="grpo", eps=1e-6, ddof=1),
              surrogate=dict(name="ppo_clip", eps_low=0.2, eps_high=0.2),
              regularizers=[dict(name="kl", estimator="k3", coef=0.04)],
              aggregation=dict(name="seq-mean-token-mean")))),
      ml_collections.ConfigDict(dict(
          name="dr_grpo", theory="dr_grpo",
          objective=dict(
              advantage=dict(name="dr_grpo"),
              surrogate=dict(name="ppo_clip", eps_low=0.2, eps_high=0.28),
              regularizers=[],
              aggregation=dict(name="seq-mean-token-sum-norm", norm=16.0)))),
      ml_collections.ConfigDict(dict(
          name="rloo", theory="rloo",
          objective=dict(
              advantage=dict(name="rloo"),
              surrogate=dict(name="ppo_clip", eps_low=0.2, eps_high=0.2),
              regularizers=[dict(name="kl", estimator="k2", coef=0.01)],
              aggregation=dict(name="token-mean")))),
  ]
  return c
