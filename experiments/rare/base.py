"""Shared settings of the planted-rare experiments (imported by the others).

The ``rare`` task: make a target as a sum ``a+b`` (the common family) or a
product ``a*b`` (the planted rare family); both earn reward 1. The base is
pre-trained on a mixture in which the product family is rare, not absent
(``divrl.tasks.rare``); the results table's ``rare_found`` is the share of
held-out prompts with a correct product among the samples. The other
settings are those of every experiment (``experiments.common``).

Variants every rare experiment takes after ``:`` in ``--config``: ``seed``
(int), ``steps`` (RL steps, int; 0 keeps the default 100).
"""

from experiments import common

VARIANTS = common.VARIANTS


def rare_config(arg=None, **extra_variants):
  """``(config, variants)``: the rare-task base config and the parsed
  variants; ``extra_variants`` are an experiment file's own keys."""
  return common.task_config("rare", arg, max_new_tokens=12,
                            **extra_variants)
