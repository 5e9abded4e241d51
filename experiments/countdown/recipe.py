"""Any named recipe of ``divrl.recipes`` on Countdown: one file, one variant
per published method, e.g. for a table over methods.

Run (measured on a 2-core Intel Xeon CPU, before the held-out splits with
``name=ppo_gae``: 2.2 minutes once the base is cached, about 5 minutes on first
use, which pre-trains it)::

  python -m scripts.train --config experiments/countdown/recipe.py:name=ppo_gae

Variants: ``name`` (a recipe of ``divrl.recipes``, default ``grpo``), ``seed``
and ``steps``, e.g. ``--config
experiments/countdown/recipe.py:name=dapo,seed=2``. The run directory is
``runs/countdown/<name>``.
"""

from divrl import config as config_lib
from experiments.countdown import base


def get_config(arg=None):
  c, arg = base.countdown_config(arg, name="grpo")
  c.workdir = f"runs/countdown/{arg.name}"
  c.objective = config_lib.recipe(arg.name)
  return c
