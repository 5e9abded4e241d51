"""Any named recipe of ``divrl.recipes`` on the math_word task: one file, one
variant per published method, e.g. for a table over methods.

Run (with the default ``name=grpo`` it is ``grpo.py``'s run; measured on this
2-core CPU, an AMD EPYC: 10.7 minutes on first use, including the base's pre-
training)::

  python -m scripts.train --config experiments/math_word/recipe.py:name=dapo

Variants: ``name`` (a recipe of ``divrl.recipes``, default ``grpo``), ``seed``
and ``steps``. The run directory is ``runs/math_word/<name>``.
"""

from divrl import config as config_lib
from experiments.math_word import base


def get_config(arg=None):
  c, arg = base.math_word_config(arg, name="grpo")
  c.workdir = f"runs/math_word/{arg.name}"
  c.objective = config_lib.recipe(arg.name)
  return c
