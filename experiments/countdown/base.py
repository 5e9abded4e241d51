"""Shared settings of the Countdown experiments (imported by the others).

Countdown with 4 numbers in 1..9, targets 10..30 and at least 3 distinct
solutions per prompt; the tiny decoder pre-trained on a Zipf-skewed mixture
of solutions plus 20% wrong answers (held-out pass@1 3.7%, pass@16 36%,
pass@256 84% at 256 samples per prompt, seed 0); 8 prompts x 16 samples per
step; held-out evaluation on 64 prompts x 64 samples.

Variants every Countdown experiment takes after ``:`` in ``--config``:
``seed`` (int), ``steps`` (RL steps, int; 0 keeps the default 100).
"""

from experiments import common

VARIANTS = common.VARIANTS


def countdown_config(arg=None, **extra_variants):
  """``(config, variants)``: the Countdown base config and the parsed
  variants; ``extra_variants`` are an experiment file's own keys."""
  return common.task_config(
      "countdown", arg, knobs=dict(num_count=4, max_number=9, min_target=10,
                                   max_target=30, min_solutions=3),
      **extra_variants)
