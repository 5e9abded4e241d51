"""GRPO on Countdown (DeepSeekMath, arXiv 2402.03300): group mean/std
advantages, PPO clip, token-mean aggregation, no KL."""

from experiments.countdown import base


def get_config():
  c = base.get_config()
  c.workdir = "runs/countdown/grpo"
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  return c
