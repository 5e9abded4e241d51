"""Any named recipe of ``divrl.recipes`` on the modular task: one file, one
variant per published method, e.g. for a table over methods.

Run (with the default ``name=grpo`` it is ``grpo.py``'s run; measured on this
2-core CPU, an AMD EPYC: 1.3 minutes on first use, including the base's pre-
training)::

  python -m scripts.train --config experiments/modular/recipe.py:name=dapo

Variants: ``name`` (a recipe of ``divrl.recipes``, default ``grpo``), ``seed``
and ``steps``. The run directory is ``runs/modular/<name>``.
"""

from divrl import config as config_lib
from experiments.modular import base


def get_config(arg=None):
  c, arg = base.modular_config(arg, name="grpo")
  c.workdir = f"runs/modular/{arg.name}"
  c.objective = config_lib.recipe(arg.name)
  return c
