"""GRPO on Countdown (DeepSeekMath, arXiv 2402.03300): group mean/std
advantages, PPO clip, token-mean aggregation, no KL.

Run (measured on a 2-core Intel Xeon CPU, before the held-out splits: 5.1
minutes on first use, of which about 3.4 minutes pre-train the shared base; 1.7
minutes once the base is cached)::

  python -m scripts.train --config experiments/countdown/grpo.py

Variants: ``--config experiments/countdown/grpo.py:seed=1,steps=50``. Any
part can be swapped from the command line, e.g.
``--config.objective.advantage=otb``.
"""

from experiments.countdown import base


def get_config(arg=None):
  c, _ = base.countdown_config(arg)
  c.workdir = "runs/countdown/grpo"
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  return c
