"""Shared settings of the word-problem experiments (imported by the others).

The ``math_word`` task with its built-in templated two-step problems (GSM8K
style; ``use_tfds=False``, so no data files are needed): one correct final
answer per problem, checked by the safe numeric verifier. To train on real
GSM8K / MATH JSONL files, prepare the task's TFDS builder from a manual
directory (``divrl.tasks.builders.MathWordBuilder``) and set
``task.use_tfds=True``. Answers are up to about 90 characters, hence 96 new
tokens, and pre-training takes 600 steps (a step costs about 6x a Countdown
step; the templated answers are learned by then). The other settings are those
of every experiment (``experiments.common``).

Variants every word-problem experiment takes after ``:`` in ``--config``:
``seed`` (int), ``steps`` (RL steps, int; 0 keeps the default 100).
"""

from experiments import common

VARIANTS = common.VARIANTS


def math_word_config(arg=None, **extra_variants):
  """``(config, variants)``: the word-problem base config and the parsed
  variants; ``extra_variants`` are an experiment file's own keys."""
  c, arg = common.task_config("math_word", arg, max_new_tokens=96,
                              pretrain_steps=600, **extra_variants)
  c.task.use_tfds = False
  return c, arg
