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
* **Held-out splits.** ``generate`` given a ``SplitRng`` (what
  ``divrl.tasks.builders.split_rng(seed, split)`` returns, and so what the
  TFDS builders and ``divrl.rl.data`` use) draws only instances of that
  split: each generated task partitions its instance space, deterministically
  by the seed, into a "train" and a "test" part (a share ``test_fraction``
  for test), so the two splits never share an instance. Each task documents
  what "the same instance" is (at least: the same prompt) and how it splits.
  Given an int seed or a plain Generator, ``generate`` draws from the whole
  space.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import math
import signal
import threading
import zlib
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np

# Field kinds of FIELDS, as stored by the TFDS builders.
FIELD_KINDS = ("int", "ints", "str")
# The splits of a generated task; they share no instance.
SPLITS = ("train", "test")
# Salts the seeded partitions of the instance spaces (not the example draws).
_PARTITION_SALT = 0x5EED5


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


# The error prefix of a verdict whose verifier raised (safe_verify).
VERIFIER_ERROR = "verifier_error"


class VerifierTimeout(Exception):
  """A verifier ran past ``safe_verify``'s ``timeout``."""


def safe_verify(task: "Task", example: Mapping[str, Any], completion: Any,
                timeout: float | None = None) -> Verdict:
  """``task.verify``, with an exception or a timeout turned into a rejection.

  The model's text is untrusted and a task's verifier may have a bug that
  some text finds: the run must not die or hang of it. The rejection's error
  is ``"verifier_error: <exception type>: <message>"`` (the message cut to
  200 characters), reward 0; past ``timeout`` it is ``"verifier_error:
  VerifierTimeout: ..."``.

  Args:
    task: the task whose ``verify`` to call.
    example: the example the completion answers.
    completion: the model's text.
    timeout: seconds, or None (or 0) for no bound. The bound is a
      ``SIGALRM`` timer, so it holds in the main thread of a Unix process
      (elsewhere ``verify`` runs unbounded) and interrupts Python code, not a
      single long C call, which is interrupted when it returns. divrl's own
      verifiers bound their work by input limits instead (well under 1 s on
      any text; ``tests/tasks/test_verifier_fuzz.py``).
  """
  if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
    raise ValueError(f"timeout must be None or a finite number >= 0, got "
                     f"{timeout!r}.")
  alarm = (bool(timeout) and hasattr(signal, "setitimer")
           and threading.current_thread() is threading.main_thread())
  if alarm:
    def expire(signum, frame):  # pylint: disable=unused-argument
      raise VerifierTimeout(f"verify took longer than {timeout:g} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
  try:
    try:
      verdict = task.verify(example, completion)
    finally:   # an alarm up to here is caught below; none can come after
      if alarm:
        signal.setitimer(signal.ITIMER_REAL, 0)
  except Exception as e:  # pylint: disable=broad-except
    verdict = incorrect(
        f"{VERIFIER_ERROR}: {type(e).__name__}: {str(e)[:200]}")
  finally:
    if alarm:
      signal.signal(signal.SIGALRM, previous)
  return verdict


def as_rng(rng: np.random.Generator | int) -> np.random.Generator:
  """``rng`` itself, or a new ``np.random.default_rng(rng)`` for an int seed."""
  if isinstance(rng, np.random.Generator):
    return rng
  if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
    return np.random.default_rng(int(rng))
  raise TypeError(f"rng must be a numpy Generator or an int seed, got "
                  f"{type(rng).__name__}.")


class SplitRng(np.random.Generator):
  """The random generator of one split of a seeded dataset; it names both.

  ``SplitRng(seed, split)`` draws exactly the numbers of
  ``np.random.default_rng([seed, zlib.crc32(split.encode())])`` and carries
  ``seed`` and ``split``, which a task's ``generate`` reads (``split_of``) to
  draw only the instances of that split (see the module docstring).

  Attributes:
    seed: the dataset seed, >= 0.
    split: the split name.
  """

  def __init__(self, seed: int, split: str):
    seed = check_int("seed", seed, 0)
    if not isinstance(split, str):
      raise ValueError(f"split must be a str, got {split!r}.")
    super().__init__(np.random.PCG64([seed, zlib.crc32(split.encode())]))
    self.seed = seed
    self.split = split


def split_of(rng: Any) -> tuple[int, str] | None:
  """``(seed, split)`` of a ``SplitRng``; None for anything else.

  Raises:
    ValueError: for a ``SplitRng`` of a split other than "train" or "test"
      (generated tasks have only those two).
  """
  if not isinstance(rng, SplitRng):
    return None
  if rng.split not in SPLITS:
    raise ValueError(f"unknown split {rng.split!r}: generated tasks have the "
                     f"splits {', '.join(SPLITS)}.")
  return rng.seed, rng.split


def check_fraction(name: str, value: Any) -> float:
  """Returns ``value`` as a float in the open interval (0, 1)."""
  if isinstance(value, bool) or not isinstance(value, (int, float,
                                                       np.integer,
                                                       np.floating)):
    raise ValueError(f"{name} must be a number, got {value!r}.")
  if not 0.0 < float(value) < 1.0:
    raise ValueError(f"{name} must be in (0, 1), got {value}.")
  return float(value)


def held_out_count(n: int, test_fraction: float) -> int:
  """How many of ``n >= 2`` enumerated instances are held out for "test":
  ``round(test_fraction * n)``, clipped to ``[1, n - 1]`` so that neither
  split is empty."""
  check_int("n", n, 2)
  return min(n - 1, max(1, round(check_fraction("test_fraction",
                                                test_fraction) * n)))


def split_members(n: int, seed: int, split: str, test_fraction: float,
                  *salt: int) -> np.ndarray:
  """The indices in ``range(n)`` of the instances of ``split``, ascending.

  The partition of an enumerable instance space: a permutation of
  ``range(n)`` seeded by ``(seed, *salt)``, whose first
  ``held_out_count(n, test_fraction)`` entries are "test" and the rest
  "train". The two parts are disjoint, non-empty and cover ``range(n)``.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  k = held_out_count(n, test_fraction)
  order = np.random.default_rng(
      [check_int("seed", seed, 0), _PARTITION_SALT, *salt]).permutation(n)
  return np.sort(order[:k] if split == "test" else order[k:])


def hashed_split(key: Hashable, seed: int, test_fraction: float) -> str:
  """The split ("train" or "test") of the instance identified by ``key``.

  The partition of an instance space too large to enumerate: "test" iff
  ``u < test_fraction``, with ``u`` in [0, 1) the BLAKE2b hash of
  ``repr((seed, key))`` (so ``key`` must have a stable ``repr``: ints,
  strings and tuples of them). Each instance is "test" with probability
  ``test_fraction`` over seeds, independently of the others.
  """
  check_fraction("test_fraction", test_fraction)
  digest = hashlib.blake2b(repr((check_int("seed", seed, 0), key)).encode(),
                           digest_size=8).digest()
  u = int.from_bytes(digest, "big") / 2.0**64
  return "test" if u < test_fraction else "train"


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
    """``n`` examples drawn with ``rng`` (a Generator or an int seed).

    With a ``SplitRng``, only instances of its split (module docstring).
    """

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

  def solution_families(self, example: Mapping[str, Any],
                        limit: int | None = None
                        ) -> list[tuple[str, float, list[str]]]:
    """The correct answers grouped into families, with pretraining weights.

    ``divrl.rl.pretrain`` builds a base model's mixture from them: family
    ``(name, weight, answers)`` gets the share ``weight`` of the example's
    correct pretraining answers, spread over ``answers`` with a Zipf law.

    Args:
      example: the instance.
      limit: at most this many answers per family (None: all of them).

    Returns:
      ``(name, weight, answers)`` triples with positive weights summing to 1
      and non-empty lists of distinct solutions (no triple when there is no
      solution). By default one family, ``"all"``: ``solutions(example,
      limit)``; a task with a planted mode overrides this.
    """
    sols = self.solutions(example, limit=limit)
    return [("all", 1.0, sols)] if sols else []

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
