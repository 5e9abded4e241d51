"""GRPO on the math_word task (DeepSeekMath, arXiv 2402.03300): group mean/std
advantages, PPO clip, token-mean aggregation, no KL.

Run::

  python -m scripts.train --config experiments/math_word/grpo.py

Measured on this 2-core CPU (an AMD EPYC, shared with other jobs): 10.7
minutes on first use, most of it pre-training the base (96-token answers). At these settings the
run collapses: held-out pass@1 0.026 -> 0 with a KL to the base of 341 (seed
0); the tiny character model barely solves the templated problems, and
their rewards are too sparse for this learning rate. Use it as a pipeline
check, not as a result.

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
