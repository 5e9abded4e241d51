"""The task interface shared by every verifiable task.

A task is a small frozen dataclass whose fields are its difficulty knobs. It
needs neither TFDS nor JAX: ``divrl.tasks.builders`` wraps each task in a
TFDS builder, but a training loop only needs the task object to make prompts
and score completions.

Conventions for every task:

* **Examples** are plain dicts of ``int``, ``str`` and ``list[int]`` (the keys
  are the task's ``FIELDS``). The methods also accept the records of a TFDS
  data source, whose strings are ``bytes`` and whose integers are NumPy
  scalars and arrays: ``from_record`` converts them.
* **Completions** are the decoded text the model wrote after the prompt, with
  the end-of-sequence token already removed. Leading and trailing ASCII spaces
  are ignored by the toy tasks.
* **Verdicts** have ``error is None`` exactly when ``correct`` is true. The
  error names what went wrong and starts with a category: ``format:`` (not an
  answer of the documented form), ``invalid:`` (well formed but breaks a
  rule, such as reusing a number) or ``wrong:`` (a valid answer with the
  wrong value). A bug in a verifier becomes ``internal: ...`` instead of an
  exception: a reward function must not crash an RL loop whatever the policy
  writes. ``verify`` never raises for any completion; it does raise
  ``ValueError`` for a malformed *example*, which is a programming error.
* **Canonical forms.** ``Verdict.canonical`` identifies the solution: two
  correct completions are the same solution iff their canonical strings are
  equal. Each task documents what "the same solution" means.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np

# Field kinds of FIELDS, as stored by the TFDS builders.
FIELD_KINDS = ("int", "ints", "str")


class Verdict(NamedTuple):
  """The score of one completion.

  Attributes:
    reward: 1.0 when correct, else 0.0.
    correct: whether the completion is a correct solution.
    canonical: the canonical form of the solution when correct, else None.
    error: None when correct, else ``"<category>: <reason>"``.
  """

  reward: float
  correct: bool
  canonical: str | None
  error: str | None


def correct(canonical: str) -> Verdict:
  """A correct verdict with the given canonical form."""
  return Verdict(1.0, True, canonical, None)


def incorrect(error: str) -> Verdict:
  """An incorrect verdict; ``error`` says why."""
  return Verdict(0.0, False, None, error)


def as_rng(rng: np.random.Generator | int) -> np.random.Generator:
  """``rng`` itself, or a new ``np.random.default_rng(rng)`` for an int seed."""
  if isinstance(rng, np.random.Generator):
    return rng
  if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
    return np.random.default_rng(int(rng))
  raise TypeError(f"rng must be a numpy Generator or an int seed, got "
                  f"{type(rng).__name__}.")


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
  """Returns ``value`` as an int in ``[low, high]``; ValueError names it."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an int, got {value!r}.")
  value = int(value)
  if value < low or (high is not None and value > high):
    bound = f"[{low}, {high}]" if high is not None else f">= {low}"
    raise ValueError(f"{name} must be in {bound}, got {value}.")
  return value


def _as_str(name: str, value: Any) -> str:
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, str):
    return value
  raise ValueError(f"example[{name!r}] must be a str, got "
                   f"{type(value).__name__}.")


def _as_int(name: str, value: Any) -> int:
  if isinstance(value, np.ndarray) and value.shape == ():
    value = value.item()
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"example[{name!r}] must be an int, got {value!r}.")
  return int(value)


def _as_ints(name: str, value: Any) -> list[int]:
  if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
    raise ValueError(f"example[{name!r}] must be a list of ints, got "
                     f"{type(value).__name__}.")
  return [_as_int(name, v) for v in value]


_CONVERTERS = {"int": _as_int, "ints": _as_ints, "str": _as_str}


@dataclasses.dataclass(frozen=True)
class Task(abc.ABC):
  """Base class of a verifiable task (see the module docstring).

  Subclasses are frozen dataclasses whose fields are difficulty knobs, and
  set the class attributes below.

  Attributes:
    name: the registry name.
    FIELDS: example key -> kind (``"int"``, ``"ints"`` or ``"str"``).
    REFERENCE_FIELD: the key of the reference completion in an example.
    max_completion_chars: completions longer than this are rejected before
      any parsing.
    REWARD_COMPONENTS: the names of the reward components that
      ``reward_components`` returns for a verdict (the ``K`` of
      ``Batch.rewards [B,K]``).
  """

  name: ClassVar[str] = ""
  REWARD_COMPONENTS: ClassVar[tuple[str, ...]] = ("correct", "well_formed",
                                                   "valid")
  FIELDS: ClassVar[Mapping[str, str]] = {}
  REFERENCE_FIELD: ClassVar[str] = "solution"
  max_completion_chars: ClassVar[int] = 256

  # --- Interface ------------------------------------------------------------

  @property
  @abc.abstractmethod
  def alphabet(self) -> str:
    """Every character that a prompt or a reference answer can contain."""

  @abc.abstractmethod
  def prompt(self, example: Mapping[str, Any]) -> str:
    """The prompt text; the model writes its answer right after it."""

  @abc.abstractmethod
  def _verify(self, example: dict[str, Any], completion: str) -> Verdict:
    """Scores a completion of bounded length for a checked example."""

  @abc.abstractmethod
  def solutions(self, example: Mapping[str, Any],
                limit: int | None = None) -> list[str]:
    """Distinct correct answers, one per canonical form, deterministic order.

    Args:
      example: the instance.
      limit: return at most this many (None: all of them).

    Returns:
      Completion strings whose ``verify`` verdicts are correct and have
      pairwise different canonical forms.
    """

  @abc.abstractmethod
  def wrong_answer(self, example: Mapping[str, Any],
                   rng: np.random.Generator | int) -> str:
    """A well-formed answer that ``verify`` scores as incorrect."""

  @abc.abstractmethod
  def generate(self, rng: np.random.Generator | int,
               n: int) -> list[dict[str, Any]]:
    """``n`` examples drawn with ``rng`` (a Generator or an int seed)."""

  # --- Shared behaviour -------------------------------------------------------

  def from_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
    """Converts an example or a TFDS record to a plain dict of FIELDS.

    Raises:
      ValueError: naming the missing key or the field of the wrong type.
    """
    if not isinstance(record, Mapping):
      raise ValueError(f"example must be a mapping, got "
                       f"{type(record).__name__}.")
    out = {}
    for key, kind in self.FIELDS.items():
      if key not in record:
        raise ValueError(f"example is missing key {key!r} of the {self.name} "
                         f"task (keys: {sorted(self.FIELDS)}).")
      out[key] = _CONVERTERS[kind](key, record[key])
    return out

  def check_example(self, example: Mapping[str, Any]) -> dict[str, Any]:
    """``from_record`` plus task-specific checks; ValueError if malformed."""
    return self.from_record(example)

  def reference(self, example: Mapping[str, Any]) -> str:
    """The reference completion stored in the example."""
    return self.from_record(example)[self.REFERENCE_FIELD]

  def reward_components(self, verdict: Verdict) -> tuple[float, ...]:
    """Several rewards of one verdict, named by ``REWARD_COMPONENTS``.

    The default, for every task: ``correct`` (the verdict's reward),
    ``well_formed`` (1 unless the error is a ``format:`` error) and ``valid``
    (1 unless it is a ``format:`` or ``invalid:`` error, i.e. the answer
    follows every rule and is at most wrong in value). They are the
    correctness and format rewards that multi-reward RL combines.
    """
    error = verdict.error or ""
    well_formed = not error.startswith(("format:", "internal:"))
    valid = well_formed and not error.startswith("invalid:")
    return (float(verdict.reward), float(well_formed), float(valid))

  def verify(self, example: Mapping[str, Any], completion: Any) -> Verdict:
    """Scores ``completion`` (the text after the prompt, without EOS).

    Never raises for any ``completion``; a completion that is not a ``str``
    or is longer than ``max_completion_chars`` is a ``format:`` error.

    Raises:
      ValueError: if ``example`` is malformed.
    """
    checked = self.check_example(example)
    if not isinstance(completion, str):
      return incorrect(f"format: completion must be a str, got "
                       f"{type(completion).__name__}")
    if len(completion) > self.max_completion_chars:
      return incorrect(f"format: completion longer than "
                       f"{self.max_completion_chars} characters")
    try:
      return self._verify(checked, completion)
    except Exception as e:  # pylint: disable=broad-except
      # Deliberately broad: see the module docstring.
      return incorrect(f"internal: {type(e).__name__} in {self.name} verifier")
