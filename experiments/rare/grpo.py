"""GRPO on the rare task (DeepSeekMath, arXiv 2402.03300): group mean/std
advantages, PPO clip, token-mean aggregation, no KL.

Run::

  python -m scripts.train --config experiments/rare/grpo.py

RUNTIME

Variants: ``--config experiments/rare/grpo.py:seed=1,steps=50``. Any part
can be swapped from the command line, e.g.
``--config.objective.advantage=rloo``.
"""

from experiments.rare import base


def get_config(arg=None):
  c, _ = base.rare_config(arg)
  c.workdir = "runs/rare/grpo"
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  return c
