"""GRPO on the math_word task (DeepSeekMath, arXiv 2402.03300): group mean/std
advantages, PPO clip, token-mean aggregation, no KL.

Run::

  python -m scripts.train --config experiments/math_word/grpo.py

RUNTIME

Variants: ``--config experiments/math_word/grpo.py:seed=1,steps=50``. Any part
can be swapped from the command line, e.g.
``--config.objective.advantage=rloo``.
"""

from experiments.math_word import base


def get_config(arg=None):
  c, _ = base.math_word_config(arg)
  c.workdir = "runs/math_word/grpo"
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  return c
