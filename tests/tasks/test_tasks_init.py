"""divrl.tasks (the package): the task registry, knob errors, and importing
the tasks without TFDS."""

import subprocess
import sys

import pytest

from divrl import tasks
from tests.tasks.test_base import ALL


def test_get_task_and_unknown_names():
  for name in ALL:
    task = tasks.get_task(name)
    assert task.name == name
  with pytest.raises(ValueError, match="countdown, math_word, modular, rare"):
    tasks.get_task("sudoku")
  with pytest.raises(ValueError, match="num_cont"):
    tasks.get_task("countdown", num_cont=3)


@pytest.mark.parametrize("name,kwargs,field", [
    ("countdown", {"num_count": 9}, "num_count"),
    ("countdown", {"min_number": 5, "max_number": 4}, "max_number"),
    ("countdown", {"use_all": 1}, "use_all"),
    ("modular", {"min_modulus": 1}, "min_modulus"),
    ("modular", {"num_terms": 0}, "num_terms"),
    ("rare", {"num_factors": 7}, "num_factors"),
    ("rare", {"min_target": 4, "max_target": 5}, "max_target"),
    ("rare", {"min_term": 1}, "min_term"),
    ("math_word", {"style": "latex"}, "style"),
])
def test_bad_knobs_name_the_argument(name, kwargs, field):
  with pytest.raises(ValueError, match=field):
    tasks.get_task(name, **kwargs)


def test_importing_the_tasks_does_not_import_tfds():
  code = ("import sys, divrl.tasks; "
          "assert 'tensorflow_datasets' not in sys.modules; "
          "assert 'tensorflow' not in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
