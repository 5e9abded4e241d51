"""GRPO on the rare task (DeepSeekMath, arXiv 2402.03300): group mean/std
advantages, PPO clip, token-mean aggregation, no KL.

Run::

  python -m scripts.train --config experiments/rare/grpo.py

Measured on this 2-core CPU (an AMD EPYC): 42 s on first use, including
the base's pre-training; held-out pass@1 0.30 -> 0.51, distinct correct
solutions per prompt 8.1 -> 5.1, rare_found 0.06 -> 0 (seed 0).

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
