"""GRPO with a reverse-KL penalty to the base (k3 estimator in the loss, the
DeepSeekMath/verl default).

Run (measured on a 2-core Intel Xeon CPU, before the held-out splits: 1.7
minutes once the base is cached, about 5 minutes on first use, which pre-trains
it)::

  python -m scripts.train --config experiments/countdown/grpo_kl.py

Variants: ``seed``, ``steps`` and ``kl_coef`` (float, default 0.01), e.g.
``--config experiments/countdown/grpo_kl.py:kl_coef=0.05,seed=2``; the
coefficient is also addressable as
``--config.objective.regularizers.kl.coef``.
"""

from experiments.countdown import base


def get_config(arg=None):
  c, arg = base.countdown_config(arg, kl_coef=0.01)
  c.workdir = "runs/countdown/grpo_kl"
  c.objective.regularizers = {"kl": {"estimator": "k3",
                                     "coef": arg.kl_coef}}
  return c
