"""Modular sums: give k residues whose sum is c modulo p. Many solutions.

Prompt and answer::

  prompt:  "mod 7: 2 terms sum to 3:"
  answer:  "5,5"                (then end-of-sequence)

The answer is ``num_terms`` integers separated by commas, each written in
plain decimal (ASCII digits, no sign, no leading zeros, ``0`` allowed), each
a *reduced residue* in ``[0, p)``, with ``sum % p == c``. Spaces around the
commas are allowed. Without the range rule every instance would have
infinitely many answers; with it the count is finite and exact.

**Distinct solutions.** The answer is an *unordered* multiset: ``1,2`` and
``2,1`` are the same solution. The canonical form is the residues sorted
ascending, joined by ``,`` without spaces (``"2,5"``), which is itself a valid
answer. For two terms and an odd modulus there are exactly ``(p + 1) / 2``
distinct solutions (``p`` ordered pairs, of which exactly one has ``a == b``);
in general, the number of size-``k`` multisets of ``Z_p`` with the given sum.

**Splits.** An instance is the pair ``(p, c)`` (``num_terms`` is fixed by
the task), i.e. the prompt. For a dataset seed, the residues of every
modulus ``p`` are split by a seeded permutation into
``held_out_count(p, test_fraction)`` test residues (at least one) and train
residues (at least one), so no test prompt is a training prompt and every
modulus occurs in both splits (``residues``).

Generation: ``p`` uniform in ``[min_modulus, max_modulus]``, ``c`` uniform in
``[0, p)`` (among the residues of the split, with a split); the reference
solution is the canonical form of uniformly random residues
``a_1..a_{k-1}`` completed by ``a_k = (c - sum) % p``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, ClassVar

from divrl.tasks import base
from divrl.tasks import safe_parse

_MAX_TERM_DIGITS = 6


@functools.lru_cache(maxsize=256)
def _split_residues(modulus: int, test_fraction: float, seed: int,
                    split: str) -> tuple[int, ...]:
  return tuple(int(c) for c in base.split_members(modulus, seed, split,
                                                  test_fraction, modulus))


@dataclasses.dataclass(frozen=True)
class ModularTask(base.Task):
  """Modular sums with unordered answers (see the module docstring).

  Attributes:
    num_terms: how many residues to give, in [1, 6].
    min_modulus: smallest modulus, >= 2.
    max_modulus: largest modulus, <= 100000.
    test_fraction: the share of each modulus's residues held out for the
      "test" split, in (0, 1).
  """

  num_terms: int = 2
  min_modulus: int = 5
  max_modulus: int = 23
  test_fraction: float = 0.25

  name: ClassVar[str] = "modular"
  FIELDS: ClassVar[dict[str, str]] = {
      "modulus": "int", "residue": "int", "num_terms": "int",
      "solution": "str"}
  max_completion_chars: ClassVar[int] = 256

  def __post_init__(self):
    base.check_int("num_terms", self.num_terms, 1, 6)
    base.check_int("min_modulus", self.min_modulus, 2, 10**5)
    base.check_int("max_modulus", self.max_modulus, self.min_modulus, 10**5)
    base.check_fraction("test_fraction", self.test_fraction)

  def residues(self, modulus: int, seed: int | None = None,
               split: str | None = None) -> tuple[int, ...]:
    """The target residues of ``modulus``, ascending: all of ``[0, p)``, or
    those of ``split`` ("train" or "test") for the dataset ``seed``."""
    base.check_int("modulus", modulus, 2, 10**5)
    if split is None:
      return tuple(range(modulus))
    if seed is None:
      raise ValueError("residues: a split needs the dataset seed.")
    return _split_residues(int(modulus), float(self.test_fraction), seed,
                           split)

  @property
  def alphabet(self) -> str:
    return "".join(sorted(set("mod: terms sum to" + "," + safe_parse.DIGITS)))

  def check_example(self, example):
    ex = self.from_record(example)
    base.check_int("example['modulus']", ex["modulus"], 2, 10**5)
    base.check_int("example['residue']", ex["residue"], 0, ex["modulus"] - 1)
    base.check_int("example['num_terms']", ex["num_terms"], 1, 6)
    return ex

  def prompt(self, example) -> str:
    ex = self.check_example(example)
    return (f"mod {ex['modulus']}: {ex['num_terms']} terms sum to "
            f"{ex['residue']}:")

  def _verify(self, example: dict[str, Any], completion: str) -> base.Verdict:
    p, k = example["modulus"], example["num_terms"]
    parts = completion.strip(" ").split(",")
    if len(parts) != k:
      return base.incorrect(f"format: expected {k} comma-separated terms, "
                            f"got {len(parts)}")
    terms = []
    for i, part in enumerate(parts):
      part = part.strip(" ")
      if not part:
        return base.incorrect(f"format: term {i} is empty")
      bad = next((c for c in part if c not in safe_parse.DIGITS), None)
      if bad is not None:
        return base.incorrect(f"format: unexpected character "
                              f"{safe_parse.describe_char(bad)} in term {i}")
      if len(part) > _MAX_TERM_DIGITS:
        return base.incorrect(f"invalid: term {i} has more than "
                              f"{_MAX_TERM_DIGITS} digits")
      if len(part) > 1 and part[0] == "0":
        return base.incorrect(f"format: term {i} has a leading zero")
      value = int(part)
      if value >= p:
        return base.incorrect(f"invalid: term {i} = {value} is not in "
                              f"[0, {p})")
      terms.append(value)
    if sum(terms) % p != example["residue"]:
      return base.incorrect(f"wrong: sum is {sum(terms) % p} mod {p}, want "
                            f"{example['residue']}")
    return base.correct(",".join(str(t) for t in sorted(terms)))

  def solutions(self, example, limit: int | None = None) -> list[str]:
    """Canonical solutions in lexicographic order of the sorted residues.

    Lazy: with a ``limit`` only that many are constructed, so this is cheap
    even when the full count (about ``p**(k-1) / k!``) is huge.
    """
    ex = self.check_example(example)
    if limit is not None:
      base.check_int("limit", limit, 0)
    p, c, k = ex["modulus"], ex["residue"], ex["num_terms"]
    out = []
    for head in itertools.combinations_with_replacement(range(p), k - 1):
      if limit is not None and len(out) >= limit:
        break
      last = (c - sum(head)) % p
      if not head or last >= head[-1]:
        out.append(",".join(str(t) for t in head + (last,)))
    return out

  def wrong_answer(self, example, rng) -> str:
    ex = self.check_example(example)
    rng = base.as_rng(rng)
    p, c, k = ex["modulus"], ex["residue"], ex["num_terms"]
    terms = [int(t) for t in rng.integers(0, p, size=k)]
    if sum(terms) % p == c:
      terms[-1] = (terms[-1] + 1) % p
    return ",".join(str(t) for t in terms)

  def generate(self, rng, n: int) -> list[dict[str, Any]]:
    rng = base.as_rng(rng)
    base.check_int("n", n, 0)
    where = base.split_of(rng) or ()
    out = []
    for _ in range(n):
      p = int(rng.integers(self.min_modulus, self.max_modulus + 1))
      if where:
        allowed = self.residues(p, *where)
        c = allowed[int(rng.integers(len(allowed)))]
      else:
        c = int(rng.integers(0, p))
      head = [int(t) for t in rng.integers(0, p, size=self.num_terms - 1)]
      terms = sorted(head + [(c - sum(head)) % p])
      out.append({"modulus": p, "residue": c, "num_terms": self.num_terms,
                  "solution": ",".join(str(t) for t in terms)})
    return out
