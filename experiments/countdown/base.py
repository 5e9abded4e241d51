"""Shared settings of the Countdown experiments (imported by the others).

Countdown with 4 numbers in 1..9 and targets 10..30 (about 4.5 distinct
solutions per prompt), a small decoder pre-trained on a Zipf-skewed mixture
of solutions plus 20% wrong answers, 8 prompts x 8 samples per step.
"""

from divrl.rl.trainer import default_config


def get_config():
  c = default_config()
  c.task.name = "countdown"
  c.task.kwargs = dict(num_count=4, max_number=9, min_target=10,
                       max_target=30)
  c.task.train_size = 1000
  c.task.test_size = 64
  c.model.preset = "tiny"
  c.base.pretrain.steps = 1000
  c.sampling.max_new_tokens = 16
  c.sampling.num_prompts = 8
  c.sampling.num_samples = 8
  c.train.steps = 40
  c.train.learning_rate = 3e-4
  c.eval.num_prompts = 32
  c.eval.num_samples = 32
  c.eval.every = 10
  c.checkpoint.every = 20
  return c
