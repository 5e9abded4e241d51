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
improbable. ``solution_families`` plants it: it gives the rare family the
share ``rare_weight`` (default 0.05) of every prompt's correct pretraining
answers and the sums the rest, and ``divrl.rl.pretrain`` builds the base
model's mixture from it, for every prompt and whatever ``max_solutions``
(each family is capped separately, so the products, which ``solutions``
lists last, are never cut off). ``rare_weight=0`` leaves the products out
of pretraining. Whether an RL objective keeps (or rediscovers) the product
mode, or collapses onto sums, is then measured by ``is_rare`` on the
canonical forms of its correct samples. Nothing in the prompt hints at the
product mode.

**Distinct solutions.** Order does not matter (``+`` and ``*`` commute): the
canonical form is ``min op max`` without spaces, e.g. ``"17+18"``, ``"5*7"``;
it is itself a valid answer.

**Splits.** An instance is its target (the prompt is ``make <target>:``).
The targets are the products of ``num_factors`` distinct primes in
``[min_target, max_target]`` whose smallest prime is at least ``min_term``
(83 with the defaults); for a dataset seed they are split by a seeded
permutation into ``held_out_count(n, test_fraction)`` test targets (21 with
the defaults) and train targets, so no test target, and no test prompt, is
ever seen in training (``targets``). A product answer for a test prompt is
then one that pretraining never showed for that target.

Generation: the target is uniform over the targets of the split (over all of
them without a split); the reference solution is a uniformly random *common*
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


@functools.lru_cache(maxsize=64)
def _split_targets(targets: tuple[int, ...], test_fraction: float, seed: int,
                   split: str) -> tuple[int, ...]:
  index = base.split_members(len(targets), seed, split, test_fraction)
  return tuple(targets[i] for i in index)


@dataclasses.dataclass(frozen=True)
class RareTask(base.Task):
  """Sum-or-product pairs with a planted rare product mode.

  Attributes:
    min_target: smallest target, >= 4.
    max_target: largest target, <= 10**6; there must be at least two
      targets (one per split).
    num_factors: number of distinct prime factors of the target, in [2, 4];
      the rare family then has ``2**(num_factors-1) - 1`` members.
    min_term: smallest allowed term or factor, >= 2.
    test_fraction: the share of the targets held out for the "test" split,
      in (0, 1).
    rare_weight: the share of every prompt's correct pretraining answers
      that are products (the rare family), in [0, 1]; see
      ``solution_families``. Only the pretraining mixture depends on it.
  """

  min_target: int = 20
  max_target: int = 299
  num_factors: int = 2
  min_term: int = 2
  test_fraction: float = 0.25
  rare_weight: float = 0.05

  name: ClassVar[str] = "rare"
  FIELDS: ClassVar[dict[str, str]] = {
      "target": "int", "factors": "ints", "solution": "str"}
  max_completion_chars: ClassVar[int] = 64

  def __post_init__(self):
    base.check_int("min_target", self.min_target, 4, 10**6)
    base.check_int("max_target", self.max_target, self.min_target, 10**6)
    base.check_int("num_factors", self.num_factors, 2, 4)
    base.check_int("min_term", self.min_term, 2, 1000)
    base.check_fraction("test_fraction", self.test_fraction)
    if (isinstance(self.rare_weight, bool)
        or not isinstance(self.rare_weight, (int, float))
        or not 0.0 <= self.rare_weight <= 1.0):
      raise ValueError(f"rare_weight must be a number in [0, 1], got "
                       f"{self.rare_weight!r}.")
    count = len(_targets(self.min_target, self.max_target, self.num_factors,
                         self.min_term))
    if count < 2:
      raise ValueError(
          f"{count} target(s) in [min_target, max_target] = "
          f"[{self.min_target}, {self.max_target}] are products of "
          f"num_factors={self.num_factors} distinct primes >= "
          f"min_term={self.min_term}; the train and test splits need at "
          f"least two: widen the range.")

  def targets(self, seed: int | None = None,
              split: str | None = None) -> tuple[int, ...]:
    """The targets, ascending: all of them, or those of ``split`` ("train"
    or "test") for the dataset ``seed`` (see the module docstring)."""
    out = _targets(self.min_target, self.max_target, self.num_factors,
                   self.min_term)
    if split is None:
      return out
    if seed is None:
      raise ValueError("targets: a split needs the dataset seed.")
    return _split_targets(out, float(self.test_fraction), seed, split)

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
    them; ``solution_families`` keeps the two families apart.
    """
    ex = self.check_example(example)
    if limit is not None:
      base.check_int("limit", limit, 0)
    t, m = ex["target"], self.min_term
    out = [f"{a}+{t - a}" for a in range(m, t // 2 + 1)]
    out += [f"{d}*{t // d}" for d in range(m, math.isqrt(t) + 1)
            if t % d == 0 and t // d >= m]
    return out if limit is None else out[:limit]

  def solution_families(self, example, limit: int | None = None
                        ) -> list[tuple[str, float, list[str]]]:
    """``("common", 1 - rare_weight, sums)`` and ``("rare", rare_weight,
    products)``: the pretraining weights of the two families.

    ``limit`` caps each family on its own (the sums by first term), so the
    rare family keeps its weight whatever the limit. A family with weight 0
    or no member is left out and the weights of the others renormalised
    (``rare_weight=0``: sums only).
    """
    sols = self.solutions(example)
    if limit is not None:
      base.check_int("limit", limit, 0)
    families = [("common", 1.0 - self.rare_weight,
                 [s for s in sols if "+" in s]),
                ("rare", float(self.rare_weight),
                 [s for s in sols if "*" in s])]
    families = [(name, weight, members[:limit])
                for name, weight, members in families
                if weight > 0 and members[:limit]]
    total = sum(weight for _, weight, _ in families)
    return [(name, weight / total, members)
            for name, weight, members in families]

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
    targets = self.targets(*(base.split_of(rng) or ()))
    out = []
    for _ in range(n):
      t = targets[int(rng.integers(len(targets)))]
      a = int(rng.integers(self.min_term, t // 2 + 1))
      out.append({"target": t, "factors": _factorize(t),
                  "solution": f"{a}+{t - a}"})
    return out
