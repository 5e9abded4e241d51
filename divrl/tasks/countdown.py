"""Countdown: reach a target from given numbers with + - * / and parentheses.

Prompt and answer::

  prompt:  "countdown 3,5,2,7 to 16:"
  answer:  "(3+5)*2"            (then end-of-sequence)

The answer is one arithmetic expression over ASCII digits, ``+ - * /``,
parentheses and optional spaces (grammar of ``safe_parse.parse``, without
unary minus and without leading zeros).

Rules, chosen so that validity is easy to state and to check:

* Each given number is used at most once (as a multiset: a number given twice
  may be used twice); with ``use_all=True`` every number exactly once.
* Every intermediate result must be an integer: each ``/`` must divide
  exactly. Negative and zero intermediates are allowed (``3-5+4`` is fine,
  as is ``(3-5)*(2-9)``); evaluation is exact over the integers.
* Intermediate magnitudes never exceed ``10**24``; the knob bounds
  (``num_count <= 6``, ``max_number <= 1000``) make this unreachable.

**Distinct solutions.** Two expressions are the same solution iff they have
the same canonical form: the expression tree in which

* ``+`` and ``-`` chains are flattened into one sum node with a multiset of
  added and a multiset of subtracted terms (so ``a-(b-c)`` is ``a+c-b``),
* ``*`` and ``/`` chains are flattened into one product node with a multiset
  of multiplied and a multiset of divided factors (``a/(b/c)`` is
  ``a*c/b``),
* and the multisets are sorted.

That is, equality up to commutativity and associativity of + and *, and the
sign/inverse rules that move a subtraction or division into its enclosing
chain. Nothing else is identified: different numbers (``8*2`` vs ``4*4``),
distributivity (``(a+b)*c`` vs ``a*c+b*c``) or identities (``x*1`` vs
``x/1``) give different solutions, and a number is identified by its value
(which of two equal given numbers is used does not matter).

The canonical string prints sum nodes as ``p1+p2-n1-n2`` and product nodes as
``f1*f2/d1/d2``, parenthesising only sums inside products; children are in
a fixed order (products, then sums, then numbers ascending). It is injective
and is itself a valid answer whose canonical form is itself (for an
integer-valued product chain, the left-to-right evaluation of the canonical
order ``f1*...*fk/d1/.../dm`` only has integer intermediates).

Generation: draw ``num_count`` numbers uniformly from ``[min_number,
max_number]``, compute every value reachable under the rules by dynamic
programming over subsets, and draw the target uniformly among reachable
values in ``[min_target, max_target]`` that are not one of the given numbers
(trivial instances are excluded), redrawing the numbers if there is none. So
every instance has at least one solution. The reference solution is the
canonical form of one of them.

**Splits.** An instance is the multiset of the numbers with the target
(the prompt up to the order of the numbers, which changes no solution). For
a dataset seed, the instance space is split by a seeded hash of ``(sorted
numbers, target)`` (``base.hashed_split``): each instance is a test instance
with probability ``test_fraction``. Generation for a split draws the target
among the reachable values whose instance is in that split (redrawing the
numbers when there is none), so no test instance is a training instance.

Uniform targets are often reachable in only one or two ways; the
``min_solutions`` knob keeps only targets with at least that many distinct
solutions (for diversity experiments), and then the reference solution is the
shortest one.

Costs (this 2-core machine, per instance): generation and ``solutions``
enumerate all valid expressions, with duplicates removed per subset of the
numbers. About 2 ms for ``num_count=4``, 20-50 ms for 5 (numbers up to 50),
and 0.1-1.5 s for 6.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, ClassVar

import numpy as np

from divrl.tasks import base
from divrl.tasks import safe_parse

PROMPT_PREFIX = "countdown "
# Canonical nodes are nested tuples, totally ordered by tuple comparison:
#   ("n", value)                      a number
#   ("+", added, subtracted)          a sum node (children: numbers, products)
#   ("*", multiplied, divided)        a product node (children: numbers, sums)
# The kind strings order products < sums < numbers.
Canon = tuple


def _leaf(value: int) -> Canon:
  return ("n", value)


def _combine(op: str, a: Canon, b: Canon) -> Canon:
  """The canonical node of ``a op b`` from the canonical nodes of a and b."""
  kind = "+" if op in "+-" else "*"
  a_pos, a_neg = (a[1], a[2]) if a[0] == kind else ((a,), ())
  b_pos, b_neg = (b[1], b[2]) if b[0] == kind else ((b,), ())
  if op in "+*":
    pos, neg = a_pos + b_pos, a_neg + b_neg
  else:
    pos, neg = a_pos + b_neg, a_neg + b_pos
  return (kind, tuple(sorted(pos)), tuple(sorted(neg)))


def _apply(op: str, a: int, b: int) -> int:
  """``a op b`` on integers; '/' only when exact (the caller checks)."""
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  return a // b


def render(node: Canon) -> str:
  """The canonical string of a canonical node."""
  kind = node[0]
  if kind == "n":
    return str(node[1])
  if kind == "+":
    return ("+".join(render(c) for c in node[1])
            + "".join("-" + render(c) for c in node[2]))

  def factor(c):
    text = render(c)
    return f"({text})" if c[0] == "+" else text

  return ("*".join(factor(c) for c in node[1])
          + "".join("/" + factor(c) for c in node[2]))


def _canonical_tree(tree: safe_parse.Node) -> tuple[Canon | None, list[int]]:
  """Canonical node and used literals, or (None, ...) on an inexact '/'."""
  leaves = []

  def walk(node):
    if node.value.denominator != 1:
      return None
    if isinstance(node, safe_parse.Num):
      leaves.append(int(node.value))
      return _leaf(int(node.value))
    left = walk(node.left)
    right = walk(node.right)
    if left is None or right is None:
      return None
    return _combine(node.op, left, right)

  return walk(tree), leaves


def _subset_table(numbers: list[int], keep: str) -> list[dict]:
  """For each subset mask, the valid expressions over exactly that subset.

  With ``keep="values"`` the table maps value -> one canonical node; with
  ``keep="canon"`` it maps every distinct canonical node -> its value.
  """
  n = len(numbers)
  table = [dict() for _ in range(1 << n)]
  for i, v in enumerate(numbers):
    if keep == "values":
      table[1 << i][v] = _leaf(v)
    else:
      table[1 << i][_leaf(v)] = v
  for mask in range(1, 1 << n):
    if (mask & (mask - 1)) == 0:
      continue
    out = table[mask]
    sub = (mask - 1) & mask
    while sub:
      other = mask ^ sub
      left, right = table[sub], table[other]
      symmetric = sub < other
      if keep == "values":
        for va, ca in left.items():
          for vb, cb in right.items():
            results = [(va - vb, "-")]
            if symmetric:
              results += [(va + vb, "+"), (va * vb, "*")]
            if vb != 0 and va % vb == 0:
              results.append((va // vb, "/"))
            for value, op in results:
              if value not in out:
                out[value] = _combine(op, ca, cb)
      else:
        for ca, va in left.items():
          for cb, vb in right.items():
            out.setdefault(_combine("-", ca, cb), va - vb)
            if symmetric:
              out.setdefault(_combine("+", ca, cb), va + vb)
              out.setdefault(_combine("*", ca, cb), va * vb)
            if vb != 0 and va % vb == 0:
              out.setdefault(_combine("/", ca, cb), va // vb)
      sub = (sub - 1) & mask
  return table


@dataclasses.dataclass(frozen=True)
class CountdownTask(base.Task):
  """Countdown with exact integer arithmetic (see the module docstring).

  Attributes:
    num_count: how many numbers are given, in [2, 6].
    min_number: smallest given number, >= 1.
    max_number: largest given number, <= 1000.
    min_target: smallest target, >= 1.
    max_target: largest target, <= 10**6.
    use_all: whether every number must be used exactly once (else at most
      once).
    min_solutions: only targets with at least this many distinct solutions
      are drawn, >= 1.
    test_fraction: the share of the instances held out for the "test"
      split, in (0, 1).
  """

  num_count: int = 4
  min_number: int = 1
  max_number: int = 20
  min_target: int = 10
  max_target: int = 100
  use_all: bool = False
  min_solutions: int = 1
  test_fraction: float = 0.25

  name: ClassVar[str] = "countdown"
  FIELDS: ClassVar[dict[str, str]] = {
      "numbers": "ints", "target": "int", "solution": "str"}
  max_completion_chars: ClassVar[int] = 256

  def __post_init__(self):
    base.check_int("num_count", self.num_count, 2, 6)
    base.check_int("min_number", self.min_number, 1, 1000)
    base.check_int("max_number", self.max_number, self.min_number, 1000)
    base.check_int("min_target", self.min_target, 1, 10**6)
    base.check_int("max_target", self.max_target, self.min_target, 10**6)
    if not isinstance(self.use_all, bool):
      raise ValueError(f"use_all must be a bool, got {self.use_all!r}.")
    base.check_int("min_solutions", self.min_solutions, 1, 10**6)
    base.check_fraction("test_fraction", self.test_fraction)

  def split(self, example, seed: int) -> str:
    """The split ("train" or "test") that ``example`` belongs to for the
    dataset ``seed`` (see the module docstring)."""
    ex = self.check_example(example)
    return base.hashed_split((tuple(sorted(ex["numbers"])), ex["target"]),
                             seed, self.test_fraction)

  @property
  def alphabet(self) -> str:
    return "".join(sorted(set(PROMPT_PREFIX + "to:," + safe_parse.DIGITS
                              + "+-*/() ")))

  @property
  def limits(self) -> safe_parse.Limits:
    """The parser limits used on answers."""
    return safe_parse.Limits(
        max_length=self.max_completion_chars, max_depth=32, max_digits=4,
        max_magnitude=10**24, max_nodes=64, allow_unary_minus=False,
        allow_leading_zeros=False, allow_spaces=True)

  def check_example(self, example):
    ex = self.from_record(example)
    if not ex["numbers"]:
      raise ValueError("example['numbers'] must not be empty.")
    if any(v < 1 for v in ex["numbers"]):
      raise ValueError(f"example['numbers'] must be positive, got "
                       f"{ex['numbers']}.")
    return ex

  def prompt(self, example) -> str:
    ex = self.check_example(example)
    numbers = ",".join(str(v) for v in ex["numbers"])
    return f"{PROMPT_PREFIX}{numbers} to {ex['target']}:"

  def canonicalize(self, expression: str) -> tuple[str | None, str | None]:
    """(canonical string, None), or (None, error) for a malformed/inexact one.

    Only the form is checked here, not the numbers or the target.
    """
    result = safe_parse.parse(expression.strip(" "), self.limits)
    if not result.ok:
      return None, f"format: {result.error}"
    canon, _ = _canonical_tree(result.tree)
    if canon is None:
      return None, "invalid: a division is not exact"
    return render(canon), None

  def _verify(self, example: dict[str, Any], completion: str) -> base.Verdict:
    result = safe_parse.parse(completion.strip(" "), self.limits)
    if not result.ok:
      return base.incorrect(f"format: {result.error}")
    canon, leaves = _canonical_tree(result.tree)
    if canon is None:
      return base.incorrect("invalid: a division is not exact")
    given = collections.Counter(example["numbers"])
    used = collections.Counter(leaves)
    extra = used - given
    if extra:
      shown = ", ".join(str(v) for v in sorted(extra))
      return base.incorrect(f"invalid: uses {shown} more often than given")
    if self.use_all and used != given:
      return base.incorrect("invalid: must use every number exactly once")
    if result.value != example["target"]:
      return base.incorrect(f"wrong: value {result.value}, target "
                            f"{example['target']}")
    return base.correct(render(canon))

  def solutions(self, example, limit: int | None = None) -> list[str]:
    """All distinct solutions as canonical strings, shortest first."""
    ex = self.check_example(example)
    if limit is not None:
      base.check_int("limit", limit, 0)
    numbers, target = ex["numbers"], ex["target"]
    table = _subset_table(numbers, keep="canon")
    full = (1 << len(numbers)) - 1
    masks = [full] if self.use_all else range(1, full + 1)
    found = {render(c) for m in masks for c, v in table[m].items()
             if v == target}
    out = sorted(found, key=lambda s: (len(s), s))
    return out if limit is None else out[:limit]

  def wrong_answer(self, example, rng) -> str:
    ex = self.check_example(example)
    rng = base.as_rng(rng)
    numbers, target = ex["numbers"], ex["target"]
    for _ in range(100):
      if self.use_all:
        chosen = list(rng.permutation(numbers))
      else:
        size = int(rng.integers(1, len(numbers) + 1))
        chosen = list(rng.permutation(numbers))[:size]
      nodes = [(_leaf(int(v)), int(v)) for v in chosen]
      while len(nodes) > 1:
        i, j = rng.choice(len(nodes), size=2, replace=False)
        (ca, va), (cb, vb) = nodes[i], nodes[j]
        ops = ["+", "-", "*"] + (["/"] if vb != 0 and va % vb == 0 else [])
        op = ops[int(rng.integers(len(ops)))]
        value = _apply(op, va, vb)
        nodes = [x for k, x in enumerate(nodes) if k not in (i, j)]
        nodes.append((_combine(op, ca, cb), value))
      if nodes[0][1] != target:
        return render(nodes[0][0])
    # A single number: never the target, by construction of the instances.
    return str(numbers[0]) if numbers[0] != target else f"{target}+{target}"

  def _targets(self, numbers: list[int]) -> dict[int, str]:
    """Allowed target -> reference solution, for these numbers."""
    full = (1 << len(numbers)) - 1
    masks = [full] if self.use_all else range(1, full + 1)

    def allowed(value):
      return (self.min_target <= value <= self.max_target
              and (self.use_all or value not in numbers))

    if self.min_solutions == 1:
      table = _subset_table(numbers, keep="values")
      out = {}
      for m in masks:
        for value, canon in table[m].items():
          if allowed(value) and value not in out:
            out[value] = render(canon)
      return out
    table = _subset_table(numbers, keep="canon")
    found = collections.defaultdict(set)
    for m in masks:
      for canon, value in table[m].items():
        if allowed(value):
          found[value].add(render(canon))
    return {value: min(texts, key=lambda s: (len(s), s))
            for value, texts in found.items()
            if len(texts) >= self.min_solutions}

  def _draw(self, rng: np.random.Generator,
            where: tuple[int, str] | None) -> dict[str, Any]:
    for _ in range(1000):
      numbers = [int(v) for v in rng.integers(self.min_number,
                                              self.max_number + 1,
                                              size=self.num_count)]
      reachable = self._targets(numbers)
      if where:
        seed, split = where
        key = tuple(sorted(numbers))
        reachable = {
            t: sol for t, sol in reachable.items()
            if base.hashed_split((key, t), seed, self.test_fraction) == split}
      if reachable:
        targets = sorted(reachable)
        target = targets[int(rng.integers(len(targets)))]
        return {"numbers": numbers, "target": target,
                "solution": reachable[target]}
    split = f" of split {where[1]!r}" if where else ""
    raise ValueError(
        f"no countdown instance{split} with >= min_solutions="
        f"{self.min_solutions} solutions found in 1000 draws; widen "
        f"[min_target, max_target] = [{self.min_target}, {self.max_target}] "
        f"or lower min_solutions.")

  def generate(self, rng, n: int) -> list[dict[str, Any]]:
    rng = base.as_rng(rng)
    base.check_int("n", n, 0)
    where = base.split_of(rng)
    return [self._draw(rng, where) for _ in range(n)]
