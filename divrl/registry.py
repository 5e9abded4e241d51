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

**Discovery.** Every module of the ``divrl`` package is imported the first
time the registry is read, so a part module registers its parts without
anything importing it by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
class Declaration:
  """What a part reads: optional batch inputs, a PRNG key, carried state."""

  reads: frozenset[str] = frozenset()
  key: bool = False
  state: State | None = None


def _accepts(fn: Callable[..., Any]) -> frozenset[str]:
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return frozenset()
  return frozenset(p.name for p in params)


def declare(reads: Sequence[str] = (), *, state: State | None = None):
  """Decorator that records what ``fn`` reads (see the module docstring).

  Works on any part function, registered or not, so that a part written in a
  notebook states its inputs as the library's do. The key requirement is read
  from the signature (an argument named ``key``).
  """
  reads = (reads,) if isinstance(reads, str) else tuple(reads)
  unknown = [r for r in reads if r not in INPUTS]
  if unknown:
    raise ValueError(f"reads names unknown input(s) {unknown}; known inputs:"
                     f" {', '.join(INPUTS)}.")
  if state is not None and not isinstance(state, State):
    raise ValueError(f"state must be a divrl.registry.State, got"
                     f" {type(state).__name__}.")

  def decorator(fn):
    fn.declaration = Declaration(frozenset(reads), "key" in _accepts(fn),
                                 state)
    return fn

  return decorator


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
             state: State | None = None, override: bool = False):
  """Decorator that declares ``fn`` (``declare``) and registers it as part
  ``name`` of ``kind``.

  Calling the registered function on a batch that lacks one of ``reads``
  raises a ValueError naming the part and the input.
  """
  _check_kind(kind)

  def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
    if name in _REGISTRY[kind] and not override:
      raise ValueError(f"{kind} {name!r} is already registered; pass"
                       " override=True to replace it.")
    if reads or state is not None or not hasattr(fn, "declaration"):
      declare(reads, state=state)(fn)
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


def _bind_subset(fn: Callable[..., Any], params: Mapping[str, Any]):
  accepted = _accepts(fn)
  sub = {k: v for k, v in params.items() if k in accepted}
  return functools.partial(fn, **sub) if sub else fn


def bind(kind: str, fn: Callable[..., Any], params: Mapping[str, Any],
         label: str) -> Callable[..., Any]:
  """Binds ``params`` to ``fn``'s keyword-only hyperparameters.

  The part's carried-state functions, if any, get the subset of ``params``
  they accept.
  """
  allowed = hyperparameters(fn)
  for key in params:
    if key not in allowed:
      raise ValueError(
          f"{kind} {label!r} has no hyperparameter {key!r}; its"
          f" hyperparameters are: {', '.join(sorted(allowed)) or '(none)'}.")
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


def make(kind: str, spec: Any) -> Callable[..., Any]:
  """Builds a part from a spec.

  Args:
    kind: one of ``KINDS``.
    spec: a callable (returned unchanged), a registered name, or a mapping
      with a ``name`` entry plus hyperparameters (an ``ml_collections``
      ``ConfigDict`` works too).

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
    return bind(kind, lookup(kind, name), params, name)
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
