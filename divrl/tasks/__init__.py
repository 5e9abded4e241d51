"""Toy verifiable tasks with exact solution counting, and their TFDS builders.

Tasks (each a frozen dataclass of difficulty knobs; see its module):

* ``"countdown"`` (``countdown.CountdownTask``): reach a target from given
  numbers with ``+ - * /``; exact integer arithmetic; solutions identified up
  to commutativity/associativity.
* ``"modular"`` (``modular.ModularTask``): residues with a given sum mod p;
  many solutions, unordered.
* ``"rare"`` (``rare.RareTask``): sums (common) or a product (planted rare
  mode) that make a target; ``is_rare`` tells the modes apart.
* ``"math_word"`` (``math_word.MathWordTask``): GSM8K / MATH-style word
  problems with a safe numeric final-answer check; data from JSONL files.

Every task has ``alphabet``, ``prompt``, ``verify -> Verdict``,
``solutions``, ``solution_families``, ``wrong_answer`` and ``generate``
(``base.Task``); ``generate`` with ``builders.split_rng(seed, split)`` draws
"train" and "test" from disjoint parts of the task's instances (its
``test_fraction`` knob), so no test prompt is a training prompt; and all of
its parsing of model output goes through ``safe_parse`` or plain character
checks (never ``eval``). The toy tasks' alphabets, and ``TOY_ALPHABET``, their
union, fit a character-level tokenizer of fewer than 61 symbols.

Importing this package does not import TFDS; ``make_builder`` and
``load_split`` import ``divrl.tasks.builders`` on first use.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from divrl.tasks import base
from divrl.tasks import countdown
from divrl.tasks import math_word
from divrl.tasks import modular
from divrl.tasks import rare
from divrl.tasks import safe_parse
from divrl.tasks.base import Task
from divrl.tasks.base import Verdict
from divrl.tasks.base import safe_verify
from divrl.tasks.countdown import CountdownTask
from divrl.tasks.math_word import MathWordTask
from divrl.tasks.modular import ModularTask
from divrl.tasks.rare import RareTask

TASKS: dict[str, type[Task]] = {
    "countdown": CountdownTask,
    "modular": ModularTask,
    "rare": RareTask,
    "math_word": MathWordTask,
}
TOY_TASKS = ("countdown", "modular", "rare")
# BuilderConfig bookkeeping fields that make_builder does not expose.
_TFDS_CONFIG_FIELDS = frozenset({"version", "release_notes",
                                 "supported_versions", "description", "tags"})
TOY_ALPHABET = "".join(sorted(set().union(
    *(TASKS[name]().alphabet for name in TOY_TASKS))))


def _task_class(name: str) -> type[Task]:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; known tasks: "
                     f"{', '.join(sorted(TASKS))}.")
  return TASKS[name]


def get_task(name: str, /, **kwargs) -> Task:
  """The task ``name`` with difficulty knobs ``kwargs``.

  Raises:
    ValueError: for an unknown name (the message lists the known ones), an
      unknown knob or a bad knob value.
  """
  cls = _task_class(name)
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - known)
  if unknown:
    raise ValueError(f"unknown argument(s) {unknown} for task {name!r}; "
                     f"known: {sorted(known)}.")
  return cls(**kwargs)


def make_builder(name: str, data_dir: str | os.PathLike, /, **config):
  """The TFDS builder of task ``name`` (array_record), not yet prepared.

  Args:
    name: a task name (positional, so that ``name=`` in ``config`` is the
      config name).
    data_dir: where TFDS stores the prepared data.
    **config: fields of the task's config (``seed``, ``num_train``,
      ``num_test``, ``name`` for the toy tasks; ``splits``, ``question_key``,
      ``answer_key`` for math_word) and knobs of the task itself, which may
      be mixed; a ready ``task=`` object is accepted too. No arguments
      select the default preset, ``name=`` alone a preset of the builder's
      ``BUILDER_CONFIGS`` (e.g. "easy"); otherwise a config without ``name``
      is named after its values.

  Raises:
    ValueError: for an unknown task name or an argument that is neither a
      config field nor a task knob.
  """
  from divrl.tasks import builders  # pylint: disable=g-import-not-at-top

  cls = _task_class(name)
  config_cls = builders.CONFIGS[name]
  config_fields = ({f.name for f in dataclasses.fields(config_cls)}
                   - _TFDS_CONFIG_FIELDS)
  task_fields = {f.name for f in dataclasses.fields(cls)}
  config_kwargs, task_kwargs = {}, {}
  for key, value in config.items():
    if key in task_fields:
      task_kwargs[key] = value
    elif key in config_fields:
      config_kwargs[key] = value
    else:
      raise ValueError(
          f"unknown argument {key!r} for task {name!r}; config fields: "
          f"{sorted(config_fields)}, task knobs: {sorted(task_fields)}.")
  builder_cls = builders.BUILDERS[name]
  presets = {c.name: c for c in builder_cls.BUILDER_CONFIGS}
  if not config:
    config_obj = builder_cls.BUILDER_CONFIGS[0]
  elif config_kwargs.get("name") in presets:
    if len(config) > 1:
      raise ValueError(
          f"name={config_kwargs['name']!r} is a preset config of task "
          f"{name!r}; pass no other arguments with it (presets: "
          f"{sorted(presets)}).")
    config_obj = presets[config_kwargs["name"]]
  else:
    if task_kwargs:
      if "task" in config_kwargs:
        raise ValueError("pass either task= or task knobs, not both.")
      config_kwargs["task"] = cls(**task_kwargs)
    config_obj = config_cls(**config_kwargs)
  return builder_cls(data_dir=os.fspath(data_dir), config=config_obj,
                     file_format=builders.FILE_FORMAT)


def load_split(name: str, split: str, data_dir: str | os.PathLike, /, *,
               manual_dir: str | os.PathLike | None = None, **config):
  """Prepares task ``name`` if needed and returns a random-access data source.

  Args:
    name: a task name.
    split: a split name ("train" or "test" for the toy tasks).
    data_dir: where TFDS stores (or finds) the prepared data.
    manual_dir: the directory of the JSONL files (math_word only).
    **config: as for ``make_builder``.

  Returns:
    ``builder.as_data_source(split=split)``: ``len(ds)`` and ``ds[i]`` give
    records in generation (or file) order; ``task.from_record`` turns one
    into an example dict.

  Raises:
    ValueError: for unknown names or arguments, or an unknown split.
    FileNotFoundError: for missing math_word JSONL files.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = make_builder(name, data_dir, **config)
  if name == "math_word" and not builder.is_prepared():
    # The TFDS default manual_dir is <data_dir>/downloads/manual.
    directory = pathlib.Path(manual_dir if manual_dir is not None else
                             pathlib.Path(data_dir) / "downloads" / "manual")
    missing = [str(directory / f"{s}.jsonl")
               for s in builder.builder_config.splits
               if not (directory / f"{s}.jsonl").is_file()]
    if missing:
      raise FileNotFoundError(
          f"math_word: missing manual file(s) {', '.join(missing)}.\n"
          f"{math_word.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else os.fspath(manual_dir)))
  if split not in builder.info.splits:
    raise ValueError(f"unknown split {split!r} for task {name!r}; splits: "
                     f"{sorted(builder.info.splits)}.")
  return builder.as_data_source(split=split)


__all__ = [
    "CountdownTask",
    "MathWordTask",
    "ModularTask",
    "RareTask",
    "TASKS",
    "TOY_ALPHABET",
    "TOY_TASKS",
    "Task",
    "Verdict",
    "base",
    "countdown",
    "get_task",
    "load_split",
    "make_builder",
    "math_word",
    "modular",
    "rare",
    "safe_parse",
    "safe_verify",
]
