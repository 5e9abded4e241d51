"""The settings every experiment file shares, whatever its task.

``task_config(task, arg, ...)`` gives the default run config for ``task``
with the variants of ``arg`` parsed: ``seed`` (int) and ``steps`` (RL steps,
int; 0 keeps the default 100), plus an experiment file's own keys. A task's
``base.py`` fills in its knobs and sizes; the objective is the experiment
file's.
"""

from divrl import config as config_lib

VARIANTS = dict(seed=0, steps=0)


def task_config(task: str, arg=None, *, knobs=None, train_size=2000,
                test_size=64, pretrain_steps=2000, max_new_tokens=16,
                eval_samples=64, **extra_variants):
  """``(config, variants)`` for an experiment on ``task``.

  ``knobs`` update ``config.task.kwargs[task]`` (the task's defaults
  otherwise). 8 prompts x 16 samples per step, the tiny decoder, 100 RL
  steps at learning rate 3e-4, held-out evaluation on ``test_size`` prompts x
  ``eval_samples`` samples every 25 steps.
  """
  arg = config_lib.parse_arg(arg, **VARIANTS, **extra_variants)
  c = config_lib.default_config()
  c.seed = arg.seed
  c.task.name = task
  c.task.kwargs[task].update(knobs or {})
  c.task.train_size = train_size
  c.task.test_size = test_size
  c.model.preset = "tiny"
  c.base.pretrain.steps = pretrain_steps
  c.sampling.max_new_tokens = max_new_tokens
  c.sampling.num_prompts = 8
  c.sampling.num_samples = 16
  c.train.steps = arg.steps or 100
  c.train.learning_rate = 3e-4
  c.eval.num_prompts = test_size
  c.eval.num_samples = eval_samples
  c.eval.every = 25
  c.checkpoint.every = 20
  return c, arg


def parse_table_arg(arg, methods, **extra):
  """``method`` (one of ``methods``; the first by default) and ``seed`` of
  a table file's ``get_config`` arg; an unknown method is an error naming
  the known ones."""
  arg = config_lib.parse_arg(arg, method=methods[0], seed=0, **extra)
  if arg.method not in methods:
    raise ValueError(f"config arg 'method': unknown method {arg.method!r};"
                     f" known: {', '.join(methods)}.")
  return arg


def testbed_config(task: str, seed: int):
  """The run config of the testbed task ``task`` (``countdown``, ``rare``,
  ``modular`` or ``math_word``) exactly as its experiment files set it up,
  for ``seed``; the objective is still the default."""
  import importlib  # pylint: disable=g-import-not-at-top
  base = importlib.import_module(f"experiments.{task}.base")
  make = getattr(base, f"{task}_config")
  c, _ = make(f"seed={seed}")
  return c
