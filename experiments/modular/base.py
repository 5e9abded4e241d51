"""Shared settings of the modular-sum experiments (imported by the others).

The ``modular`` task: give ``num_terms`` residues whose sum is a target
modulo ``p``; every prompt has many unordered solutions, so distinct
solutions and pass@k at large k measure how much of the solution set a
policy keeps. Task knobs are the defaults (``divrl.tasks.modular``); the
other settings are those of every experiment (``experiments.common``).

Variants every modular experiment takes after ``:`` in ``--config``:
``seed`` (int), ``steps`` (RL steps, int; 0 keeps the default 100).
"""

from experiments import common

VARIANTS = common.VARIANTS


def modular_config(arg=None, **extra_variants):
  """``(config, variants)``: the modular-task base config and the parsed
  variants; ``extra_variants`` are an experiment file's own keys."""
  return common.task_config("modular", arg, max_new_tokens=12,
                            **extra_variants)
