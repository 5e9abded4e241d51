"""GRPO with a reverse-KL penalty to the base (k3 estimator in the loss, the
DeepSeekMath/verl default); the coefficient is addressable from the command
line as ``--config.objective.regularizers.kl.coef``."""

from experiments.countdown import base


def get_config():
  c = base.get_config()
  c.workdir = "runs/countdown/grpo_kl"
  c.objective.regularizers = {"kl": {"estimator": "k3", "coef": 0.01}}
  return c
