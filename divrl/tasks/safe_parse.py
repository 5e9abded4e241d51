"""Safe parsing of untrusted arithmetic and numbers written by a model.

Verifiers read model output, which is adversarial in the worst case (a policy
trained against a reward will find any crash, hang or exploit). Nothing here
calls ``eval``, ``exec``, ``ast`` or ``compile``; the only conversion of text
to numbers is ``int()`` on strings that were first checked to be short runs of
the ASCII digits ``0-9``. Design choices:

* **Hard limits checked first.** The input length is compared with
  ``Limits.max_length`` before a single character is looked at, so a 10 MB
  string costs O(1). Then every character is checked against an explicit ASCII
  set: ``str.isdigit`` is never used, because it is true for ``'３'``, ``'٣'``
  and ``'²'``, and ``int('３') == 3``.
* **Recursive descent with a depth budget.** Every ``(`` and every unary minus
  spends one unit of ``Limits.max_depth`` *before* recursing, and
  ``max_depth`` itself is capped at ``MAX_DEPTH_CAP``, so the Python stack
  stays far below its recursion limit whatever the input (``'(' * 100000`` is
  rejected by the length check or, with a large ``max_length``, by the depth
  check). ``max_nodes`` is capped at ``MAX_NODES_CAP`` too, because a long
  flat chain ``1+1+...+1`` nests only at depth 1 but builds a tree as tall as
  it is long, and code that walks the tree recursively must stay safe.
  ``RecursionError`` is caught anyway as a second line of defence.
* **Exact evaluation while parsing.** Each node carries its value as a
  ``fractions.Fraction`` computed bottom-up when the node is built, so there
  is no separate (recursive) evaluation pass, and ``1/3*3 == 1`` exactly.
  After every operation ``|numerator|`` and ``denominator`` are checked
  against ``Limits.max_magnitude``; with the per-literal digit limit this
  bounds the size of every integer the parser ever touches, so no operation
  can be slow. Division by zero is a parse error.
* **Errors are values.** ``parse`` and ``parse_number`` return a
  ``ParseResult`` whose ``error`` is a short message naming the position and
  the offending character (non-printable or non-ASCII characters are shown as
  ``U+XXXX``, never echoed raw); they never raise for any ``str`` input, and
  return an error for non-``str`` input as well.

Grammar of ``parse`` (spaces allowed between tokens when
``Limits.allow_spaces``)::

  expr    := term (('+' | '-') term)*
  term    := unary (('*' | '/') unary)*
  unary   := '-' unary | primary          (only with allow_unary_minus)
  primary := INTEGER | '(' expr ')'

``+`` and ``-`` (and ``*`` and ``/``) are left-associative, ``*`` and ``/``
bind tighter than ``+`` and ``-``. There is no exponentiation, no unary plus,
no decimals and no names of any kind.

``parse_number`` reads a single number as written at the end of a math
solution: ``72``, ``-3``, ``1,234,567`` (comma groups of three), ``3.25``,
``.5``, ``7/4``, ``-7/4``, ``\\frac{7}{4}`` (also ``\\dfrac``/``\\tfrac``, and
``-\\frac{7}{4}``).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import NamedTuple

DIGITS = "0123456789"
OPERATORS = "+-*/"
# Hard ceilings on Limits.max_depth and Limits.max_nodes. The descent uses
# about four Python frames per nesting level, and every recursive operation on
# a finished tree (repr, ==, to_string, a verifier's canonicalisation) a few
# frames per level of tree height, which is at most max_nodes / 2 plus the
# unary-minus nesting; these caps keep both far below the default recursion
# limit of 1000.
MAX_DEPTH_CAP = 100
MAX_NODES_CAP = 256


def describe_char(c: str) -> str:
  """A safe, short description of one character for error messages."""
  if " " <= c <= "~":
    return repr(c)
  return f"U+{ord(c):04X}"


@dataclasses.dataclass(frozen=True)
class Limits:
  """Hard limits of ``parse``; every violation is a parse error.

  Attributes:
    max_length: most characters of input (checked before anything else).
    max_depth: most nested parentheses plus unary minuses on any path; at most
      ``MAX_DEPTH_CAP``.
    max_digits: most digits in one integer literal.
    max_magnitude: bound on ``|numerator|`` and ``denominator`` of every
      literal and every intermediate result.
    max_nodes: most nodes (literals, operators, negations) in the tree; at
      most ``MAX_NODES_CAP``.
    allow_unary_minus: whether ``-x`` is accepted.
    allow_leading_zeros: whether literals such as ``007`` are accepted.
    allow_spaces: whether ASCII spaces between tokens are accepted (no other
      whitespace ever is).
  """

  max_length: int = 256
  max_depth: int = 32
  max_digits: int = 18
  max_magnitude: int = 10**18
  max_nodes: int = 128
  allow_unary_minus: bool = True
  allow_leading_zeros: bool = False
  allow_spaces: bool = True

  def __post_init__(self):
    for name in ("max_length", "max_depth", "max_digits", "max_magnitude",
                 "max_nodes"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Limits.{name} must be a positive int, got "
                         f"{value!r}.")
    if self.max_nodes > MAX_NODES_CAP:
      raise ValueError(f"Limits.max_nodes must be <= {MAX_NODES_CAP}, got "
                       f"{self.max_nodes}.")
    if self.max_depth > MAX_DEPTH_CAP:
      raise ValueError(f"Limits.max_depth must be <= {MAX_DEPTH_CAP}, got "
                       f"{self.max_depth}.")
    if self.max_digits > 1000:
      raise ValueError(f"Limits.max_digits must be <= 1000, got "
                       f"{self.max_digits}.")


DEFAULT_LIMITS = Limits()


@dataclasses.dataclass(frozen=True)
class Num:
  """An integer literal."""

  value: Fraction


@dataclasses.dataclass(frozen=True)
class Neg:
  """Unary minus."""

  operand: Node
  value: Fraction


@dataclasses.dataclass(frozen=True)
class BinOp:
  """A binary operation; ``op`` is one of ``+ - * /``."""

  op: str
  left: Node
  right: Node
  value: Fraction


Node = Num | Neg | BinOp


class ParseResult(NamedTuple):
  """Outcome of ``parse`` / ``parse_number``: a value or an error message.

  Attributes:
    value: the exact value, or None on error.
    tree: the expression tree (``parse`` only), or None.
    error: None on success, else a short description of the first problem.
  """

  value: Fraction | None
  tree: Node | None
  error: str | None

  @property
  def ok(self) -> bool:
    return self.error is None


class _ParseError(Exception):
  pass


def _failure(message: str) -> ParseResult:
  return ParseResult(None, None, message)


def _tokenize(text: str, limits: Limits) -> list[tuple[str, int, int]]:
  """Splits ``text`` into (kind, int value, position) tokens."""
  tokens = []
  i, n = 0, len(text)
  while i < n:
    c = text[i]
    if c == " ":
      if not limits.allow_spaces:
        raise _ParseError(f"space at position {i} is not allowed")
      i += 1
    elif c in DIGITS:
      j = i
      while j < n and text[j] in DIGITS:
        j += 1
        if j - i > limits.max_digits:
          raise _ParseError(f"literal at position {i} has more than "
                            f"{limits.max_digits} digits")
      literal = text[i:j]
      if (len(literal) > 1 and literal[0] == "0"
          and not limits.allow_leading_zeros):
        raise _ParseError(f"literal at position {i} has a leading zero")
      value = int(literal)
      if value > limits.max_magnitude:
        raise _ParseError(f"literal at position {i} exceeds the magnitude "
                          f"limit {limits.max_magnitude}")
      tokens.append(("num", value, i))
      i = j
    elif c in OPERATORS or c in "()":
      tokens.append((c, 0, i))
      i += 1
    else:
      raise _ParseError(f"unexpected character {describe_char(c)} at "
                        f"position {i}")
  return tokens


class _Parser:
  """Recursive descent over a token list with depth and node budgets."""

  def __init__(self, tokens, limits: Limits):
    self._tokens = tokens
    self._pos = 0
    self._depth = 0
    self._nodes = 0
    self._limits = limits

  def _peek(self) -> str | None:
    if self._pos < len(self._tokens):
      return self._tokens[self._pos][0]
    return None

  def _where(self) -> str:
    if self._pos < len(self._tokens):
      return f"position {self._tokens[self._pos][2]}"
    return "end of input"

  def _enter(self) -> None:
    self._depth += 1
    if self._depth > self._limits.max_depth:
      raise _ParseError(f"nesting deeper than {self._limits.max_depth} at "
                        f"{self._where()}")

  def _count(self) -> None:
    self._nodes += 1
    if self._nodes > self._limits.max_nodes:
      raise _ParseError(f"more than {self._limits.max_nodes} nodes")

  def _check(self, value: Fraction) -> Fraction:
    bound = self._limits.max_magnitude
    if abs(value.numerator) > bound or value.denominator > bound:
      raise _ParseError(f"intermediate result exceeds the magnitude limit "
                        f"{bound}")
    return value

  def parse(self) -> Node:
    if not self._tokens:
      raise _ParseError("empty expression")
    tree = self._expr()
    if self._pos != len(self._tokens):
      kind = self._tokens[self._pos][0]
      shown = "number" if kind == "num" else repr(kind)
      raise _ParseError(f"unexpected {shown} at {self._where()}")
    return tree

  def _expr(self) -> Node:
    left = self._term()
    while self._peek() in ("+", "-"):
      op = self._tokens[self._pos][0]
      self._pos += 1
      left = self._binop(op, left, self._term())
    return left

  def _term(self) -> Node:
    left = self._unary()
    while self._peek() in ("*", "/"):
      op = self._tokens[self._pos][0]
      self._pos += 1
      left = self._binop(op, left, self._unary())
    return left

  def _unary(self) -> Node:
    if self._peek() == "-":
      if not self._limits.allow_unary_minus:
        raise _ParseError(f"unary minus at {self._where()} is not allowed")
      self._pos += 1
      self._enter()
      operand = self._unary()
      self._depth -= 1
      self._count()
      return Neg(operand, -operand.value)
    return self._primary()

  def _primary(self) -> Node:
    kind = self._peek()
    if kind == "num":
      value = self._tokens[self._pos][1]
      self._pos += 1
      self._count()
      return Num(Fraction(value))
    if kind == "(":
      self._pos += 1
      self._enter()
      inner = self._expr()
      if self._peek() != ")":
        raise _ParseError(f"expected ')' at {self._where()}")
      self._pos += 1
      self._depth -= 1
      return inner
    raise _ParseError(f"expected a number or '(' at {self._where()}")

  def _binop(self, op: str, left: Node, right: Node) -> Node:
    a, b = left.value, right.value
    if op == "+":
      value = a + b
    elif op == "-":
      value = a - b
    elif op == "*":
      value = a * b
    else:
      if b == 0:
        raise _ParseError("division by zero")
      value = a / b
    self._count()
    return BinOp(op, left, right, self._check(value))


def parse(text: str, limits: Limits = DEFAULT_LIMITS) -> ParseResult:
  """Parses and exactly evaluates an arithmetic expression.

  Args:
    text: untrusted input; anything that is not a ``str`` is an error.
    limits: the hard limits (see ``Limits``).

  Returns:
    A ``ParseResult`` with the tree and its ``Fraction`` value, or with an
    error message. Never raises for any ``str`` (or other) ``text``.
  """
  if not isinstance(limits, Limits):
    raise TypeError(f"limits must be a Limits, got {type(limits).__name__}.")
  if not isinstance(text, str):
    return _failure(f"expected str, got {type(text).__name__}")
  if len(text) > limits.max_length:
    return _failure(f"input longer than {limits.max_length} characters")
  try:
    tree = _Parser(_tokenize(text, limits), limits).parse()
  except _ParseError as e:
    return _failure(str(e))
  except RecursionError:  # Unreachable with max_depth <= MAX_DEPTH_CAP.
    return _failure("nesting too deep")
  return ParseResult(tree.value, tree, None)


def to_string(tree: Node) -> str:
  """Renders a tree with the fewest parentheses that keep its structure."""
  if isinstance(tree, Num):
    return str(tree.value)
  if isinstance(tree, Neg):
    inner = to_string(tree.operand)
    if isinstance(tree.operand, BinOp):
      inner = f"({inner})"
    return f"-{inner}"
  prec = {"+": 1, "-": 1, "*": 2, "/": 2}
  left, right = to_string(tree.left), to_string(tree.right)
  if isinstance(tree.left, BinOp) and prec[tree.left.op] < prec[tree.op]:
    left = f"({left})"
  if isinstance(tree.right, BinOp) and prec[tree.right.op] <= prec[tree.op]:
    right = f"({right})"
  if isinstance(tree.right, Neg):
    right = f"({right})"
  return f"{left}{tree.op}{right}"


# --- Single numbers ----------------------------------------------------------

_FRAC_PREFIXES = ("\\frac{", "\\dfrac{", "\\tfrac{")


def _unsigned_decimal(text: str, max_digits: int) -> Fraction:
  """``123``, ``1,234``, ``3.25``, ``.5`` (ASCII only) as a Fraction."""
  if not text:
    raise _ParseError("empty number")
  whole, dot, frac = text.partition(".")
  if dot and not frac:
    raise _ParseError("no digits after '.'")
  if not whole and not frac:
    raise _ParseError("no digits")
  if "," in whole:
    groups = whole.split(",")
    if not 1 <= len(groups[0]) <= 3 or any(len(g) != 3 for g in groups[1:]):
      raise _ParseError("commas must separate groups of three digits")
    whole = "".join(groups)
  for part in (whole, frac):
    for i, c in enumerate(part):
      if c not in DIGITS:
        raise _ParseError(f"unexpected character {describe_char(c)}")
  if len(whole) + len(frac) > max_digits:
    raise _ParseError(f"more than {max_digits} digits")
  value = Fraction(int(whole) if whole else 0)
  if frac:
    value += Fraction(int(frac), 10**len(frac))
  return value


def _unsigned_number(text: str, max_digits: int) -> Fraction:
  for prefix in _FRAC_PREFIXES:
    if text.startswith(prefix):
      body = text[len(prefix):]
      num, sep, rest = body.partition("}{")
      if not sep or not rest.endswith("}"):
        raise _ParseError("malformed \\frac{a}{b}")
      den = rest[:-1]
      sign = 1
      if num.startswith("-"):
        sign, num = -1, num[1:]
      a = _unsigned_decimal(num, max_digits)
      b = _unsigned_decimal(den, max_digits)
      if b == 0:
        raise _ParseError("division by zero")
      return sign * a / b
  if "/" in text:
    num, _, den = text.partition("/")
    a = _unsigned_decimal(num, max_digits)
    b = _unsigned_decimal(den, max_digits)
    if b == 0:
      raise _ParseError("division by zero")
    return a / b
  return _unsigned_decimal(text, max_digits)


def parse_number(text: str, *, max_length: int = 64,
                 max_digits: int = 40) -> ParseResult:
  """Parses one number: integer, decimal, comma groups, ``a/b``, ``\\frac``.

  Args:
    text: untrusted input with no surrounding spaces (see the module
      docstring for the accepted forms). Anything else, including exponents,
      unicode digits and expressions, is an error.
    max_length: most characters of ``text``.
    max_digits: most digits in each of the (at most two) literals.

  Returns:
    A ``ParseResult`` with ``tree=None``. Never raises for any ``text``.
  """
  if not isinstance(text, str):
    return _failure(f"expected str, got {type(text).__name__}")
  if len(text) > max_length:
    return _failure(f"number longer than {max_length} characters")
  for i, c in enumerate(text):
    if not " " <= c <= "~":
      return _failure(f"unexpected character {describe_char(c)} at "
                      f"position {i}")
  sign = 1
  body = text
  if body[:1] in ("-", "+"):
    sign = -1 if body[0] == "-" else 1
    body = body[1:]
  try:
    value = sign * _unsigned_number(body, max_digits)
  except _ParseError as e:
    return _failure(f"{e} in number {text[:20]!r}")
  return ParseResult(value, None, None)


def format_fraction(value: Fraction) -> str:
  """``72``, ``-3/4``: the canonical text of an exact number."""
  return str(value)
