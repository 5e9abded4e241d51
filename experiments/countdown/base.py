"""Shared settings of the Countdown experiments (imported by the others).

Countdown with 4 numbers in 1..9, targets 10..30 and at least 3 distinct
solutions per prompt; the tiny decoder pre-trained on a Zipf-skewed mixture
of solutions plus 20% wrong answers (held-out pass@1 about 5%, pass@16 about
39%); 8 prompts x 16 samples per step; held-out evaluation on 64 prompts
x 64 samples.

Variants every Countdown experiment takes after ``:`` in ``--config``:
``seed`` (int), ``steps`` (RL steps, int; 0 keeps the default 100).
"""

from divrl import config as config_lib

VARIANTS = dict(seed=0, steps=0)


def countdown_config(arg=None, **extra_variants):
  """``(config, variants)``: the Countdown base config and the parsed
  variants; ``extra_variants`` are an experiment file's own keys."""
  arg = config_lib.parse_arg(arg, **VARIANTS, **extra_variants)
  c = config_lib.default_config()
  c.seed = arg.seed
  c.task.name = "countdown"
  c.task.kwargs = dict(num_count=4, max_number=9, min_target=10,
                       max_target=30, min_solutions=3)
  c.task.train_size = 2000
  c.task.test_size = 64
  c.model.preset = "tiny"
  c.base.pretrain.steps = 2000
  c.sampling.max_new_tokens = 16
  c.sampling.num_prompts = 8
  c.sampling.num_samples = 16
  c.train.steps = arg.steps or 100
  c.train.learning_rate = 3e-4
  c.eval.num_prompts = 64
  c.eval.num_samples = 64
  c.eval.every = 25
  c.checkpoint.every = 20
  return c, arg
