"""A task with a planted rare solution family: sums are common, products rare.

Prompt and answer::

  prompt:  "make 35:"
  answer:  "17+18"  or  "5*7"   (then end-of-sequence)

The answer is two integers joined by ``+`` or ``*`` (spaces around the
operator allowed; plain decimal, no sign, no leading zeros), each at least
``min_term`` (default 2, so ``1*35`` and ``0+35`` do not count), whose sum
or product is the target.

**Design.** The target is planted as a product of ``num_factors`` distinct
primes. Then

* the *common* family, sums ``a+b``, has ``t // 2 - min_term + 1`` members
  (for ``t = 35``: 16), and is what a model would write by default;
* the *rare* family, products ``a*b``, has exactly one member for two prime
  factors (``5*7``), and ``2**(num_factors-1) - 1`` members in general (the
  ways to split the prime factors into two non-empty groups).

Both families earn the same reward, so the set of correct answers is
multi-modal with a mode that a pretraining mixture can make arbitrarily
improbable: build the mixture from ``solutions`` with a tiny weight on the
answers where ``is_rare`` is true. Whether an RL objective keeps (or
rediscovers) the product mode, or collapses onto sums, is then measured by
``is_rare`` on the canonical forms of its correct samples. Nothing in the
prompt hints at the product mode.

**Distinct solutions.** Order does not matter (``+`` and ``*`` commute): the
canonical form is ``min op max`` without spaces, e.g. ``"17+18"``, ``"5*7"``;
it is itself a valid answer.

Generation: the target is uniform over the products of ``num_factors``
distinct primes in ``[min_target, max_target]`` whose smallest prime is at
least ``min_term``; the reference solution is a uniformly random *common*
solution (the rare one is recoverable from ``factors``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

from divrl.tasks import base
from divrl.tasks import safe_parse

_MAX_TERM_DIGITS = 7


def _factorize(n: int) -> list[int]:
  factors, d = [], 2
  while d * d <= n:
    while n % d == 0:
      factors.append(d)
      n //= d
    d += 1
  if n > 1:
    factors.append(n)
  return factors


@functools.lru_cache(maxsize=32)
def _targets(min_target: int, max_target: int, num_factors: int,
             min_term: int) -> tuple[int, ...]:
  out = []
  for t in range(min_target, max_target + 1):
    f = _factorize(t)
    if (len(f) == num_factors and len(set(f)) == num_factors
        and f[0] >= min_term):
      out.append(t)
  return tuple(out)


def _parse_answer(text: str) -> tuple[tuple[str, int, int] | None, str | None]:
  """``"a+b"`` / ``"a*b"`` -> ((op, a, b), None), or (None, error)."""
  text = text.strip(" ")
  ops = [i for i, c in enumerate(text) if c in "+*"]
  if len(ops) != 1:
    return None, (f"format: expected exactly one '+' or '*', found "
                  f"{len(ops)}")
  i = ops[0]
  terms = []
  for name, part in (("first", text[:i]), ("second", text[i + 1:])):
    part = part.strip(" ")
    if not part:
      return None, f"format: {name} term is empty"
    bad = next((c for c in part if c not in safe_parse.DIGITS), None)
    if bad is not None:
      return None, (f"format: unexpected character "
                    f"{safe_parse.describe_char(bad)} in the {name} term")
    if len(part) > _MAX_TERM_DIGITS:
      return None, (f"invalid: {name} term has more than {_MAX_TERM_DIGITS} "
                    f"digits")
    if len(part) > 1 and part[0] == "0":
      return None, f"format: {name} term has a leading zero"
    terms.append(int(part))
  return (text[i], terms[0], terms[1]), None


@dataclasses.dataclass(frozen=True)
class RareTask(base.Task):
  """Sum-or-product pairs with a planted rare product mode.

  Attributes:
    min_target: smallest target, >= 4.
    max_target: largest target, <= 10**6.
    num_factors: number of distinct prime factors of the target, in [2, 4];
      the rare family then has ``2**(num_factors-1) - 1`` members.
    min_term: smallest allowed term or factor, >= 2.
  """

  min_target: int = 20
  max_target: int = 99
  num_factors: int = 2
  min_term: int = 2

  name: ClassVar[str] = "rare"
  FIELDS: ClassVar[dict[str, str]] = {
      "target": "int", "factors": "ints", "solution": "str"}
  max_completion_chars: ClassVar[int] = 64

  def __post_init__(self):
    base.check_int("min_target", self.min_target, 4, 10**6)
    base.check_int("max_target", self.max_target, self.min_target, 10**6)
    base.check_int("num_factors", self.num_factors, 2, 4)
    base.check_int("min_term", self.min_term, 2, 1000)
    if not _targets(self.min_target, self.max_target, self.num_factors,
                    self.min_term):
      raise ValueError(
          f"no target in [min_target, max_target] = [{self.min_target}, "
          f"{self.max_target}] is a product of num_factors={self.num_factors} "
          f"distinct primes >= min_term={self.min_term}.")

  @property
  def alphabet(self) -> str:
    return "".join(sorted(set("make :+*" + safe_parse.DIGITS)))

  def check_example(self, example):
    ex = self.from_record(example)
    base.check_int("example['target']", ex["target"], 4, 10**7)
    if math.prod(ex["factors"]) != ex["target"]:
      raise ValueError(f"example['factors'] {ex['factors']} do not multiply "
                       f"to example['target'] {ex['target']}.")
    return ex

  def prompt(self, example) -> str:
    return f"make {self.check_example(example)['target']}:"

  def _verify(self, example: dict[str, Any], completion: str) -> base.Verdict:
    parsed, error = _parse_answer(completion)
    if error:
      return base.incorrect(error)
    op, a, b = parsed
    if min(a, b) < self.min_term:
      return base.incorrect(f"invalid: terms must be >= {self.min_term}")
    value = a + b if op == "+" else a * b
    if value != example["target"]:
      return base.incorrect(f"wrong: {a}{op}{b} = {value}, target "
                            f"{example['target']}")
    return base.correct(f"{min(a, b)}{op}{max(a, b)}")

  def is_rare(self, example, canonical: str | None) -> bool:
    """Whether ``canonical`` is a correct solution of the rare (product) family.

    False for None, for a wrong answer and for a common (sum) solution.
    """
    if not isinstance(canonical, str):
      return False
    verdict = self.verify(example, canonical)
    return verdict.correct and "*" in verdict.canonical

  def solutions(self, example, limit: int | None = None) -> list[str]:
    """Common (sum) solutions by first term, then rare (product) ones.

    The rare solutions come last, so a ``limit`` below the total count drops
    them: to give the rare mode a small but non-zero share of a mixture, take
    all solutions and weight them with ``is_rare``.
    """
    ex = self.check_example(example)
    if limit is not None:
      base.check_int("limit", limit, 0)
    t, m = ex["target"], self.min_term
    out = [f"{a}+{t - a}" for a in range(m, t // 2 + 1)]
    out += [f"{d}*{t // d}" for d in range(m, math.isqrt(t) + 1)
            if t % d == 0 and t // d >= m]
    return out if limit is None else out[:limit]

  def wrong_answer(self, example, rng) -> str:
    ex = self.check_example(example)
    rng = base.as_rng(rng)
    t, m = ex["target"], self.min_term
    offset = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 else -1)
    if rng.random() < 0.8:
      a = int(rng.integers(m, max(m, t // 2) + 1))
      b = max(m, t - a + offset)
      if a + b == t:
        b += 1
      return f"{a}+{b}"
    a = int(rng.choice(ex["factors"]))
    b = max(m, t // a + offset)
    if a * b == t:
      b += 1
    return f"{a}*{b}"

  def generate(self, rng, n: int) -> list[dict[str, Any]]:
    rng = base.as_rng(rng)
    base.check_int("n", n, 0)
    targets = _targets(self.min_target, self.max_target, self.num_factors,
                       self.min_term)
    out = []
    for _ in range(n):
      t = targets[int(rng.integers(len(targets)))]
      a = int(rng.integers(self.min_term, t // 2 + 1))
      out.append({"target": t, "factors": _factorize(t),
                  "solution": f"{a}+{t - a}"})
    return out
