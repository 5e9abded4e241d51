"""GRPO with the unlikeliness reward (He et al. 2025, arXiv 2506.02355):
correct samples are rewarded less the more likely they are within their
group (beta = 0.25, the paper's setting), which counters GRPO's rank bias
and preserves rare solutions."""

from experiments.countdown import base


def get_config():
  c = base.get_config()
  c.workdir = "runs/countdown/unlikeliness"
  c.objective.transforms = [{"name": "unlikeliness_reward", "beta": 0.25}]
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  return c
