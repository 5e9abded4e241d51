"""Any named recipe of ``divrl.recipes`` on the rare task: one file, one
variant per published method, e.g. for a table over methods.

Run (with the default ``name=grpo`` it is ``grpo.py``'s run; measured on this
2-core CPU, an AMD EPYC: 42 s on first use, including the base's pre-training)::

  python -m scripts.train --config experiments/rare/recipe.py:name=dapo

Variants: ``name`` (a recipe of ``divrl.recipes``, default ``grpo``), ``seed``
and ``steps``. The run directory is ``runs/rare/<name>``.
"""

from divrl import config as config_lib
from experiments.rare import base


def get_config(arg=None):
  c, arg = base.rare_config(arg, name="grpo")
  c.workdir = f"runs/rare/{arg.name}"
  c.objective = config_lib.recipe(arg.name)
  return c
