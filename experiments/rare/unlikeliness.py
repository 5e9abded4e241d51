"""GRPO with the unlikeliness reward (He et al. 2025, arXiv 2506.02355) on
the planted-rare task: correct samples are rewarded less the more likely
they are within their group, which should keep (or find) the rare product
family that plain GRPO sharpens away; compare ``rare_found`` with
``experiments/rare/grpo.py``.

Run::

  python -m scripts.train --config experiments/rare/unlikeliness.py

Measured on this 2-core CPU (an AMD EPYC): 27 s with the base cached;
held-out pass@1 0.30 -> 0.37, distinct correct solutions per prompt 8.1 ->
8.4, rare_found 0.06 -> 0 (seed 0).

Variants: ``seed``, ``steps`` and ``beta`` (float, default 0.25, the
paper's setting), e.g.
``--config experiments/rare/unlikeliness.py:beta=0.5``.
"""

from experiments.rare import base


def get_config(arg=None):
  c, arg = base.rare_config(arg, beta=0.25)
  c.workdir = "runs/rare/unlikeliness"
  c.objective.transforms = [{"name": "unlikeliness_reward",
                             "beta": arg.beta}]
  c.objective.advantage = "grpo"
  c.objective.surrogate = "ppo_clip"
  return c
