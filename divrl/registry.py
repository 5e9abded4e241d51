"""Name registry for objective parts, and what each part declares it reads.

A part is a plain function. Its hyperparameters are keyword-only arguments
with defaults; ``make`` binds them from a config mapping. User code registers
its own parts with ``register`` without editing the library::

  @divrl.register("surrogate", "my_pg", reads=("entropy",))
  def my_pg(batch, advantages, *, scale=1.0):
    return -scale * advantages * batch.logprobs * batch.entropy

The kinds and their call signatures are documented in ``divrl.objective``.

**Declarations.** A part states, next to its definition, what it reads
beyond the core batch fields (``logprobs``, ``response_mask``, ``rewards``,
``group_ids``): names from ``divrl.types.INPUTS`` (optional ``Batch`` fields,
per-token statistics such as ``"entropy"``, and ``"reward_components"`` or
``"reference_samples"``), whether it needs a PRNG key (a ``key`` argument in
its signature), and whether it keeps state across steps (``state=``). The
objective takes the union (``Objective.requires``), the trainer computes
exactly that, and a part called on a batch without a declared input fails
with an error that names the part and the input.

**Carried state** is an ``optax``-style pure pair, ``State(init, update)``:
``init(**hyperparameters) -> carry`` and ``update(carry, batch, **
hyperparameters) -> carry``. Each takes the subset of the part's
hyperparameters it names (and ``axis_name`` if it has it). The objective
calls ``update`` once per step on the whole batch, just before the part runs
in the prepare stage (or, for the update-stage parts, once the advantages
are set), and hands the new carry to the part as ``carry=``.

**Domains.** A part may also declare the valid values of its numeric
hyperparameters where the formula fixes them (``domains=``, a mapping from
hyperparameter to a ``Domain`` such as ``at_least(0)`` or ``between(0, 1,
low_open=True)``). ``make`` and ``bind`` check every configured value before
anything is traced: its type against the hyperparameter's annotation (else
its default's type; an ``int`` is accepted where a ``float`` is expected, a
``bool`` never counts as a number), then its domain (NaN and infinities are
in no domain). The error names the slot and the key::

  objective.surrogate (ppo_clip): eps_low must be >= 0, got -0.1

For a regularizer, ``domains`` may also hold ``"coef"``: the objective's
coefficient on it (e.g. ``at_least(0)`` for a divergence penalty). Checks
that tie two hyperparameters together (``lo < hi``) stay in the part's
array function, which runs them when it is traced.

**Discovery.** Every module of the ``divrl`` package is imported the first
time the registry is read, so a part module registers its parts without
anything importing it by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import math
import numbers
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from divrl.types import INPUTS, check_inputs

KINDS = ("transform", "advantage", "token_weight", "surrogate", "regularizer",
         "aggregation")

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {k: {} for k in KINDS}

# Arguments that the objective passes at call time; configs may not bind them.
_CALL_ARGS = frozenset({"batch", "advantages", "key", "axis_name", "loss",
                        "mask", "coefs", "carry"})


@dataclasses.dataclass(frozen=True)
class State:
  """A part's carried state: ``init(**hp) -> carry``, ``update(carry, batch,
  **hp) -> carry`` (both pure)."""

  init: Callable[..., Any]
  update: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Domain:
  """The valid values of a numeric hyperparameter.

  ``test(x)`` sees finite numbers only (NaN and infinities are in no
  domain); ``text`` completes "must be ..." in the error message;
  ``integer`` also requires an ``int``.
  """

  text: str
  test: Callable[[Any], bool]
  integer: bool = False

  def problem(self, value: Any) -> str | None:
    """Why ``value`` is outside the domain, or None if it is inside."""
    if self.integer and not _is_int(value):
      return f"must be an int {self.text}, got {value!r}"
    if not math.isfinite(value):
      return f"must be finite and {self.text}, got {value!r}"
    if not self.test(value):
      return f"must be {self.text}, got {value!r}"
    return None


def _num(x: float) -> str:
  return f"{x:g}"


def at_least(low: float) -> Domain:
  """``x >= low``."""
  return Domain(f">= {_num(low)}", lambda x: x >= low)


def above(low: float) -> Domain:
  """``x > low``."""
  return Domain(f"> {_num(low)}", lambda x: x > low)


def at_most(high: float) -> Domain:
  """``x <= high``."""
  return Domain(f"<= {_num(high)}", lambda x: x <= high)


def between(low: float, high: float, *, low_open: bool = False,
            high_open: bool = False) -> Domain:
  """``x`` in ``[low, high]``, or with the ``*_open`` ends open."""
  text = (f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}"
          f"{')' if high_open else ']'}")
  return Domain(text, lambda x: (x > low if low_open else x >= low) and (
      x < high if high_open else x <= high))


def excluding(*values: float) -> Domain:
  """Any finite number but ``values`` (e.g. the poles of a formula)."""
  text = "a number not in {" + ", ".join(_num(v) for v in values) + "}"
  return Domain(text, lambda x: all(x != v for v in values))


def integer(low: int) -> Domain:
  """An ``int >= low``."""
  return Domain(f">= {low}", lambda x: x >= low, integer=True)


FINITE = Domain("finite", lambda x: True)


@dataclasses.dataclass(frozen=True)
class Declaration:
  """What a part reads (optional batch inputs, a PRNG key, carried state)
  and the domains of its hyperparameters."""

  reads: frozenset[str] = frozenset()
  key: bool = False
  state: State | None = None
  domains: Mapping[str, Domain] = dataclasses.field(
      default_factory=dict, hash=False)
  # The hyperparameter that every group must reach in size (pass@k's k):
  # a trainer whose groups are smaller refuses the objective.
  group_size: str | None = None


def _accepts(fn: Callable[..., Any]) -> frozenset[str]:
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return frozenset()
  return frozenset(p.name for p in params)


def declare(reads: Sequence[str] = (), *, state: State | None = None,
            domains: Mapping[str, Domain] | None = None,
            group_size: str | None = None):
  """Decorator that records what ``fn`` reads and the domains of its
  hyperparameters (see the module docstring).

  Works on any part function, registered or not, so that a part written in a
  notebook states its inputs as the library's do. The key requirement is read
  from the signature (an argument named ``key``). A domain must name a
  hyperparameter of ``fn`` (or ``"coef"``, see ``register``) and hold its
  default. ``group_size`` names the hyperparameter that each group's size
  must reach (pass@k's ``k``: a smaller group gets no signal at all).
  """
  reads = (reads,) if isinstance(reads, str) else tuple(reads)
  unknown = [r for r in reads if r not in INPUTS]
  if unknown:
    raise ValueError(f"reads names unknown input(s) {unknown}; known inputs:"
                     f" {', '.join(INPUTS)}.")
  if state is not None and not isinstance(state, State):
    raise ValueError(f"state must be a divrl.registry.State, got"
                     f" {type(state).__name__}.")

  domains = dict(domains or {})
  for key, domain in domains.items():
    if not isinstance(domain, Domain):
      raise ValueError(f"domains[{key!r}] must be a divrl.registry.Domain,"
                       f" got {type(domain).__name__}.")

  def decorator(fn):
    hps = hyperparameters(fn)
    for key, domain in domains.items():
      if key == "coef" and key not in hps:
        continue  # a regularizer's coefficient in the objective
      if key not in hps:
        raise ValueError(f"{_qualname(fn)}: domains names {key!r}, which is"
                         " not a hyperparameter; its hyperparameters are:"
                         f" {', '.join(sorted(hps)) or '(none)'}.")
      default = hps[key]
      if default is not None and default is not inspect.Parameter.empty:
        why = _value_problem(fn, key, default, domain)
        if why:
          raise ValueError(f"{_qualname(fn)}: the default of {key} {why}.")
    if group_size is not None and group_size not in hps:
      raise ValueError(f"{_qualname(fn)}: group_size names {group_size!r},"
                       " which is not a hyperparameter.")
    fn.declaration = Declaration(frozenset(reads), "key" in _accepts(fn),
                                 state, domains, group_size)
    return fn

  return decorator


def bound_value(fn: Callable[..., Any], key: str) -> Any:
  """The value of hyperparameter ``key`` of a part as ``make`` built it:
  the configured value, else the default."""
  keywords = getattr(fn, "keywords", None)   # bind's functools.partial
  if isinstance(keywords, Mapping) and key in keywords:
    return keywords[key]
  return hyperparameters(fn).get(key)


def _qualname(fn: Callable[..., Any]) -> str:
  return getattr(fn, "__qualname__", type(fn).__name__)


def declaration(fn: Callable[..., Any]) -> Declaration:
  """The declaration of ``fn``; undeclared functions read only the core
  fields (their key requirement still comes from the signature)."""
  decl = getattr(fn, "declaration", None)
  if isinstance(decl, Declaration):
    return decl
  return Declaration(key="key" in _accepts(fn))


def _check_kind(kind: str) -> None:
  if kind not in _REGISTRY:
    raise ValueError(f"unknown part kind {kind!r}; known kinds: {KINDS}.")


def _with_input_check(fn: Callable[..., Any], kind: str, name: str):
  """``fn`` behind a check of its declared inputs (its signature is kept)."""
  reads = tuple(sorted(declaration(fn).reads))
  if not reads:
    return fn

  @functools.wraps(fn)
  def part(batch, *args, **kwargs):
    check_inputs(batch, reads, f"{kind} {name!r}")
    return fn(batch, *args, **kwargs)

  return part


def register(kind: str, name: str, *, reads: Sequence[str] = (),
             state: State | None = None,
             domains: Mapping[str, Domain] | None = None,
             group_size: str | None = None,
             override: bool = False):
  """Decorator that declares ``fn`` (``declare``) and registers it as part
  ``name`` of ``kind``.

  Calling the registered function on a batch that lacks one of ``reads``
  raises a ValueError naming the part and the input. ``domains`` (see the
  module docstring) are checked when a config binds the hyperparameters; a
  regularizer's may include ``"coef"``, its coefficient in the objective.
  """
  _check_kind(kind)

  def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
    if name in _REGISTRY[kind] and not override:
      raise ValueError(f"{kind} {name!r} is already registered; pass"
                       " override=True to replace it.")
    if domains and "coef" in domains and kind != "regularizer" and (
        "coef" not in hyperparameters(fn)):
      raise ValueError(f"{kind} {name!r}: domains names 'coef', but only a"
                       " regularizer has an objective coefficient and it has"
                       " no hyperparameter 'coef'.")
    if (reads or state is not None or domains or group_size
        or not hasattr(fn, "declaration")):
      old = declaration(fn)
      declare(reads or tuple(old.reads), state=state or old.state,
              domains={**old.domains, **(domains or {})},
              group_size=group_size or old.group_size)(fn)
    part = fn if kind == "aggregation" else _with_input_check(fn, kind, name)
    part.registered_as = (kind, name)
    _REGISTRY[kind][name] = part
    return part

  return decorator


_DISCOVERED = False


def _discover() -> None:
  """Imports every module of the ``divrl`` package once (they register)."""
  global _DISCOVERED
  if _DISCOVERED:
    return
  _DISCOVERED = True
  import divrl  # pylint: disable=g-import-not-at-top
  for info in pkgutil.iter_modules(divrl.__path__):
    if not info.ispkg and not info.name.startswith("_"):
      importlib.import_module(f"divrl.{info.name}")


def names(kind: str) -> tuple[str, ...]:
  """The registered names of ``kind``, sorted."""
  _check_kind(kind)
  _discover()
  return tuple(sorted(_REGISTRY[kind]))


def lookup(kind: str, name: str) -> Callable[..., Any]:
  """Returns the registered function; raises ValueError for unknown names."""
  _check_kind(kind)
  _discover()
  try:
    return _REGISTRY[kind][name]
  except KeyError:
    raise ValueError(f"unknown {kind} name {name!r}; registered {kind} names:"
                     f" {', '.join(names(kind))}.") from None


def hyperparameters(fn: Callable[..., Any]) -> dict[str, Any]:
  """The bindable keyword-only hyperparameters of ``fn`` and their defaults."""
  out = {}
  for p in inspect.signature(fn).parameters.values():
    if p.kind is p.KEYWORD_ONLY and p.name not in _CALL_ARGS:
      out[p.name] = p.default
  return out


# Annotation names -> the Python types a configured value may have.
_TYPE_NAMES = {
    "float": (numbers.Real,), "int": (numbers.Integral,),
    "bool": (bool, np.bool_), "str": (str,), "None": (type(None),),
    "tuple": (tuple, list), "list": (tuple, list), "Sequence": (tuple, list),
}


def _annotation(fn: Callable[..., Any], key: str) -> Any:
  """``key``'s annotation on ``fn`` or, for an adapter, its array function."""
  for source in (fn,) + tuple(getattr(fn, "defaults_from", ())):
    try:
      p = inspect.signature(source).parameters.get(key)
    except (TypeError, ValueError):
      continue
    if p is not None and p.annotation is not p.empty:
      return p.annotation
  return inspect.Parameter.empty


def _expected_types(fn: Callable[..., Any], key: str) -> list[str] | None:
  """The type names ``key`` accepts, or None when they are unknown.

  From the annotation (``"float | None"``), else from the default's type; a
  default of None (an "off" value) says nothing about the type.
  """
  ann = _annotation(fn, key)
  if ann is inspect.Parameter.empty:
    default = hyperparameters(fn).get(key)
    if default is None or default is inspect.Parameter.empty:
      return None
    ann = type(default).__name__
  if not isinstance(ann, str):
    ann = getattr(ann, "__name__", None) or str(ann)
  names_ = [a.strip().split("[")[0] for a in ann.split("|")]
  names_ = [n.rsplit(".", 1)[-1] for n in names_]
  return names_ if all(n in _TYPE_NAMES for n in names_) else None


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(
      value, (bool, np.bool_))


def _value_problem(fn: Callable[..., Any], key: str, value: Any,
                   domain: Domain | None) -> str | None:
  """Why ``value`` is not a valid ``key`` of ``fn``, or None."""
  types = _expected_types(fn, key)
  if types is not None:
    is_bool = isinstance(value, (bool, np.bool_))
    ok = any(isinstance(value, _TYPE_NAMES[t]) and (t == "bool" or not is_bool)
             for t in types)
    if not ok:
      return (f"must be {' or '.join(types)}, got {type(value).__name__}"
              f" {value!r}")
  is_number = isinstance(value, numbers.Real) and not isinstance(
      value, (bool, np.bool_))
  if is_number and math.isnan(value):
    return f"must be a number, got {value!r}"  # NaN is never a setting
  if domain is None or value is None:
    return None
  if not is_number:
    return (f"must be a number {domain.text}, got {type(value).__name__}"
            f" {value!r}")
  return domain.problem(value)


def check_value(fn: Callable[..., Any], key: str, value: Any,
                where: str) -> None:
  """Checks one configured value of ``fn``'s ``key`` (its type and
  declared domain); raises a ValueError that starts with ``where``."""
  why = _value_problem(fn, key, value, declaration(fn).domains.get(key))
  if why:
    raise ValueError(f"{where}: {key} {why}.")


def _bind_subset(fn: Callable[..., Any], params: Mapping[str, Any]):
  accepted = _accepts(fn)
  sub = {k: v for k, v in params.items() if k in accepted}
  return functools.partial(fn, **sub) if sub else fn


def bind(kind: str, fn: Callable[..., Any], params: Mapping[str, Any],
         label: str, *, where: str | None = None) -> Callable[..., Any]:
  """Binds ``params`` to ``fn``'s keyword-only hyperparameters.

  Each value is checked against its type and declared domain first (see the
  module docstring); errors start with ``where`` (e.g. the config slot,
  ``"objective.surrogate"``; default ``kind``) and ``label``. The part's
  carried-state functions, if any, get the subset of ``params`` they accept.
  """
  allowed = hyperparameters(fn)
  for key in params:
    if key not in allowed:
      raise ValueError(
          f"{kind} {label!r} has no hyperparameter {key!r}; its"
          f" hyperparameters are: {', '.join(sorted(allowed)) or '(none)'}.")
  for key, value in params.items():
    check_value(fn, key, value, f"{where or kind} ({label})")
  if not params:
    return fn
  bound = functools.partial(fn, **dict(params))
  functools.update_wrapper(bound, fn)
  decl = declaration(fn)
  if decl.state is not None:
    bound.declaration = dataclasses.replace(decl, state=State(
        _bind_subset(decl.state.init, params),
        _bind_subset(decl.state.update, params)))
  return bound


def make(kind: str, spec: Any, *, where: str | None = None
         ) -> Callable[..., Any]:
  """Builds a part from a spec.

  Args:
    kind: one of ``KINDS``.
    spec: a callable (returned unchanged), a registered name, or a mapping
      with a ``name`` entry plus hyperparameters (an ``ml_collections``
      ``ConfigDict`` works too).
    where: how errors name the spec's place (e.g. ``"objective.surrogate"``;
      default ``kind``).

  Returns:
    The part function with its hyperparameters bound.
  """
  _check_kind(kind)
  if callable(spec) and not isinstance(spec, Mapping) and not hasattr(
      spec, "to_dict"):
    return spec
  if isinstance(spec, str):
    return lookup(kind, spec)
  if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict
    spec = spec.to_dict()
  if isinstance(spec, Mapping):
    params = dict(spec)
    if "name" not in params:
      raise ValueError(f"{kind} spec {spec!r} needs a 'name' entry.")
    name = params.pop("name")
    return bind(kind, lookup(kind, name), params, name, where=where)
  raise ValueError(f"{kind} spec must be a name, a mapping with 'name', or a"
                   f" callable; got {type(spec).__name__}.")


def defaults_from(*array_fns: Callable[..., Any]):
  """Gives an adapter's hyperparameters the defaults of its array function.

  A registered part adapts an array function to a ``Batch``. Its keyword-only
  hyperparameters are written without defaults; this decorator fills each in
  from the first of ``array_fns`` that has a parameter of the same name, so
  every default is stated once, in the array function. A hyperparameter that
  no array function has must keep a default in the adapter; one that the
  adapter gives a default *and* an array function also defines is an error
  (the two could drift apart).
  """

  def decorator(adapter):
    sig = inspect.signature(adapter)
    defaults = dict(adapter.__kwdefaults__ or {})
    sources = [inspect.signature(f).parameters for f in array_fns]
    for p in sig.parameters.values():
      if p.kind is not p.KEYWORD_ONLY or p.name in _CALL_ARGS:
        continue
      found = [s[p.name] for s in sources
               if p.name in s and s[p.name].default is not p.empty]
      if p.default is not p.empty:
        if found:
          raise ValueError(
              f"{adapter.__qualname__}: hyperparameter {p.name!r} restates"
              " the default of its array function; drop it from the"
              " adapter.")
        continue
      if not found:
        raise ValueError(f"{adapter.__qualname__}: hyperparameter {p.name!r}"
                         " has no default here or in its array function.")
      defaults[p.name] = found[0].default
    adapter.__kwdefaults__ = defaults
    adapter.defaults_from = tuple(array_fns)
    return adapter

  return decorator
