"""TFDS builders for the tasks, stored as array_record for random access.

Each builder is a ``tfds.core.GeneratorBasedBuilder`` meant to be prepared
with ``file_format="array_record"`` and read with
``builder.as_data_source(split=...)``: random access through ``array_record``,
no ``tf.data`` and no TensorFlow (TFDS only imports TensorFlow lazily, for
``tf.data`` pipelines, which are never built here). ``divrl.tasks.load_split``
does all of this in one call.

Design choices:

* **Local, deterministic generation.** The toy builders ignore the download
  manager: split ``s`` of a config is ``task.generate(split_rng(seed, s), n)``
  with ``split_rng`` seeding NumPy from ``(seed, crc32(s))``, so a test can
  regenerate exactly what was written. ``disable_shuffling=True`` keeps the
  records in generation order, so record ``i`` of the data source is example
  ``i``. ``split_rng`` returns a ``base.SplitRng``, which names its split:
  the task then draws train and test from disjoint parts of its instance
  space (its ``test_fraction`` knob; see ``divrl.tasks.base``), so no test
  instance is a training instance. Within a split, instances may repeat when
  the space is small.
* **Configs.** ``CountdownConfig`` etc. are ``tfds.core.BuilderConfig``
  subclasses holding the task object (its difficulty knobs), the seed and the
  split sizes. A config built without a ``name`` is named after all of its
  values (e.g. ``num_count4-...-seed0-train1000-test100``), so two different
  configs never share a prepared directory. ``BUILDER_CONFIGS`` lists a few
  presets; the first is the default.
* **Features.** Strings are ``tfds.features.Text`` (decoded to ``bytes`` by
  the data source, without TensorFlow), integers are ``np.int64`` scalars,
  integer lists are ``Tensor(shape=(None,), dtype=np.int64)`` (decoded to
  NumPy arrays). ``task.from_record`` turns a record back into the plain
  example dict, and every task method accepts records directly.
* **Not registered.** The classes pass ``skip_registration=True``, so
  importing this module never collides with TFDS's global dataset registry
  (``tfds.builder("...")`` does not know them); construct the classes or use
  ``divrl.tasks.load_split``.
* **math_word** reads ``<split>.jsonl`` from the TFDS ``manual_dir``; a
  missing directory or file raises ``FileNotFoundError`` naming the expected
  path. Prepared data is reused as is: after changing the JSONL files, use a
  new ``data_dir`` (or delete the prepared directory).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from divrl.tasks import base
from divrl.tasks.countdown import CountdownTask
from divrl.tasks.math_word import MANUAL_DOWNLOAD_INSTRUCTIONS
from divrl.tasks.math_word import MathWordTask
from divrl.tasks.math_word import parse_jsonl_line
from divrl.tasks.modular import ModularTask
from divrl.tasks.rare import RareTask

FILE_FORMAT = "array_record"
TOY_SPLITS = ("train", "test")


def split_rng(seed: int, split: str) -> base.SplitRng:
  """The generator that produces ``split`` of a toy config with ``seed``.

  It draws the numbers of ``np.random.default_rng([seed, crc32(split)])``
  and names ``seed`` and ``split``, so that ``task.generate`` draws only
  that split's instances.
  """
  return base.SplitRng(seed, split)


def features(task: base.Task) -> tfds.features.FeaturesDict:
  """The TFDS features of a task's examples (from ``task.FIELDS``)."""
  kinds = {
      "int": lambda: np.int64,
      "ints": lambda: tfds.features.Tensor(shape=(None,), dtype=np.int64),
      "str": tfds.features.Text,
  }
  return tfds.features.FeaturesDict(
      {key: kinds[kind]() for key, kind in task.FIELDS.items()})


def _task_name_part(task: base.Task) -> str:
  parts = []
  for field in dataclasses.fields(task):
    value = getattr(task, field.name)
    if isinstance(value, bool):
      value = int(value)
    parts.append(f"{field.name}{value}")
  return "-".join(parts)


@dataclasses.dataclass(kw_only=True, eq=False)
class ToyConfig(tfds.core.BuilderConfig):
  """Config of a generated task: the task, the seed and the split sizes.

  Attributes:
    name: the config (and directory) name; empty: derived from the values.
    task: the task object with its difficulty knobs.
    seed: the generation seed, >= 0.
    num_train: examples in the "train" split, >= 1.
    num_test: examples in the "test" split, >= 1.
  """

  TASK_CLASS: ClassVar[type[base.Task]] = base.Task

  name: str = ""
  task: Any = None
  seed: int = 0
  num_train: int = 1000
  num_test: int = 100

  def __post_init__(self):
    if self.task is None:
      self.task = self.TASK_CLASS()
    if not isinstance(self.task, self.TASK_CLASS):
      raise ValueError(f"task must be a {self.TASK_CLASS.__name__}, got "
                       f"{type(self.task).__name__}.")
    base.check_int("seed", self.seed, 0)
    base.check_int("num_train", self.num_train, 1)
    base.check_int("num_test", self.num_test, 1)
    if not self.name:
      self.name = (f"{_task_name_part(self.task)}-seed{self.seed}"
                   f"-train{self.num_train}-test{self.num_test}")

  def split_sizes(self) -> dict[str, int]:
    """Split name -> number of examples."""
    return {"train": self.num_train, "test": self.num_test}


@dataclasses.dataclass(kw_only=True, eq=False)
class CountdownConfig(ToyConfig):
  TASK_CLASS: ClassVar[type[base.Task]] = CountdownTask


@dataclasses.dataclass(kw_only=True, eq=False)
class ModularConfig(ToyConfig):
  TASK_CLASS: ClassVar[type[base.Task]] = ModularTask


@dataclasses.dataclass(kw_only=True, eq=False)
class RareConfig(ToyConfig):
  TASK_CLASS: ClassVar[type[base.Task]] = RareTask


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders here: works around a TFDS 4.9 import quirk."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    """None: there is no checksums file next to the code (nothing is fetched).

    The inherited property evaluates ``isinstance(path,
    importlib_resources.abc.Traversable)`` for every builder defined inside
    a package, but TFDS only depends on the ``importlib_resources`` backport
    for Python < 3.9, so on newer Pythons without it preparing such a builder
    raises ``ModuleNotFoundError``. The path is only used to find
    ``checksums.tsv`` for downloads, which these builders never make.
    """
    return None


class _ToyBuilder(_Builder, skip_registration=True):
  """Shared implementation of the generated-task builders."""

  def _info(self) -> tfds.core.DatasetInfo:
    task = self.builder_config.task
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"divrl {task.name} task, generated locally: {task!r}.",
        features=features(task),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.split_sizes().items()}

  def _generate_examples(self, split: str, n: int):
    config = self.builder_config
    examples = config.task.generate(split_rng(config.seed, split), n)
    for i, example in enumerate(examples):
      yield i, example


class CountdownBuilder(_ToyBuilder, skip_registration=True):
  """Countdown instances; see ``divrl.tasks.countdown``."""

  name = "divrl_countdown"
  BUILDER_CONFIGS: ClassVar[list[CountdownConfig]] = [
      CountdownConfig(name="default"),
      CountdownConfig(name="easy", task=CountdownTask(
          num_count=3, min_number=1, max_number=10, min_target=1,
          max_target=50)),
      CountdownConfig(name="hard", task=CountdownTask(
          num_count=5, min_number=1, max_number=50, min_target=100,
          max_target=999)),
  ]


class ModularBuilder(_ToyBuilder, skip_registration=True):
  """Modular-sum instances; see ``divrl.tasks.modular``."""

  name = "divrl_modular"
  BUILDER_CONFIGS: ClassVar[list[ModularConfig]] = [
      ModularConfig(name="default"),
      ModularConfig(name="three_terms", task=ModularTask(
          num_terms=3, min_modulus=5, max_modulus=17)),
  ]


class RareBuilder(_ToyBuilder, skip_registration=True):
  """Planted-rare-solution instances; see ``divrl.tasks.rare``."""

  name = "divrl_rare"
  BUILDER_CONFIGS: ClassVar[list[RareConfig]] = [
      RareConfig(name="default"),
      RareConfig(name="three_factors", task=RareTask(
          min_target=30, max_target=999, num_factors=3)),
  ]


@dataclasses.dataclass(kw_only=True, eq=False)
class MathWordConfig(tfds.core.BuilderConfig):
  """Config of the JSONL word-problem builder.

  Attributes:
    name: the config name; empty: derived from the values.
    task: the ``MathWordTask`` (its knobs only affect scoring).
    splits: the split names; split ``s`` is read from ``<manual_dir>/s.jsonl``.
    question_key: the JSON field of the question.
    answer_key: the JSON field of the reference solution.
  """

  name: str = ""
  task: Any = None
  splits: tuple[str, ...] = TOY_SPLITS
  question_key: str = "question"
  answer_key: str = "answer"

  def __post_init__(self):
    if self.task is None:
      self.task = MathWordTask()
    if not isinstance(self.task, MathWordTask):
      raise ValueError(f"task must be a MathWordTask, got "
                       f"{type(self.task).__name__}.")
    if isinstance(self.splits, str) or not self.splits:
      raise ValueError(f"splits must be a non-empty sequence of names, got "
                       f"{self.splits!r}.")
    self.splits = tuple(self.splits)
    for split in self.splits:
      if (not isinstance(split, str) or not split
          or not split.replace("_", "").isalnum() or not split.isascii()):
        raise ValueError(f"splits must be ASCII letters, digits and '_', got "
                         f"{split!r}.")
    for key in ("question_key", "answer_key"):
      if not isinstance(getattr(self, key), str):
        raise ValueError(f"{key} must be a str, got {getattr(self, key)!r}.")
    if not self.name:
      digest = hashlib.sha1(repr((self.splits, self.question_key,
                                  self.answer_key)).encode()).hexdigest()[:10]
      self.name = f"{'_'.join(self.splits)}-{digest}"


class MathWordBuilder(_Builder, skip_registration=True):
  """GSM8K/MATH-style JSONL files from the manual directory."""

  name = "divrl_math_word"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS: ClassVar[list[MathWordConfig]] = [
      MathWordConfig(name="default")]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Word problems with a final numeric answer, read from "
                    "user-supplied JSONL files.",
        features=features(self.builder_config.task),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    config = self.builder_config
    expected = ", ".join(f"{s}.jsonl" for s in config.splits)
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:  # TFDS signals a missing/empty dir this way.
      raise FileNotFoundError(
          f"math_word: expected {expected} in the manual directory, which is "
          f"missing or empty. TFDS says: {e}") from None
    out = {}
    for split in config.splits:
      path = manual_dir / f"{split}.jsonl"
      if not path.exists():
        raise FileNotFoundError(
            f"math_word: missing manual file {path} for split {split!r}.\n"
            f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
      out[split] = self._generate_examples(path)
    return out

  def _generate_examples(self, path):
    config = self.builder_config
    with path.open("r", encoding="utf-8") as f:
      for i, line in enumerate(f):
        if not line.strip():
          continue
        yield i, parse_jsonl_line(
            line, question_key=config.question_key,
            answer_key=config.answer_key, where=f"{path}:{i + 1}")


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "countdown": CountdownBuilder,
    "modular": ModularBuilder,
    "rare": RareBuilder,
    "math_word": MathWordBuilder,
}
CONFIGS: dict[str, type[tfds.core.BuilderConfig]] = {
    "countdown": CountdownConfig,
    "modular": ModularConfig,
    "rare": RareConfig,
    "math_word": MathWordConfig,
}
