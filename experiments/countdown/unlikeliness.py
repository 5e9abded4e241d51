"""GRPO with the unlikeliness reward (He et al. 2025, arXiv 2506.02355):
correct samples are rewarded less the more likely they are within their
group, which counters GRPO's rank bias and preserves rare solutions.

Run (measured on a 2-core Intel Xeon CPU, before the held-out splits: 1.7
minutes once the base is cached, about 5 minutes on first use, which pre-trains
it)::

  python -m scripts.train --config experiments/countdown/unlikeliness.py

Variants: ``seed``, ``steps`` and ``beta`` (float, default 0.25, the
paper's setting), e.g.
``--config experiments/countdown/unlikeliness.py:beta=0.5``.
"""

from experiments.countdown import base


def get_config(arg=None):
  c, arg = base.countdown_config(arg, beta=0.25)
  c.workdir = "runs/countdown/unlikeliness"
  c.objective.transforms = [{"name": "unlikeliness_reward",
                             "beta": arg.beta}]
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  return c
