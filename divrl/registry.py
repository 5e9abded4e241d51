"""Name registry for objective parts, so that a config can name every part.

A part is a plain function. Its hyperparameters are keyword-only arguments
with defaults; ``make`` binds them from a config mapping. User code registers
its own parts with ``register`` without editing the library::

  @divrl.register("surrogate", "my_pg")
  def my_pg(batch, advantages, *, scale=1.0):
    return -scale * advantages * batch.logprobs

The kinds and their call signatures are documented in ``divrl.objective``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

KINDS = ("transform", "advantage", "token_weight", "surrogate", "regularizer",
         "aggregation")

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {k: {} for k in KINDS}

# Arguments that the objective passes at call time; configs may not bind them.
_CALL_ARGS = frozenset({"batch", "advantages", "key", "axis_name", "loss",
                        "mask", "coefs"})


def _check_kind(kind: str) -> None:
  if kind not in _REGISTRY:
    raise ValueError(f"unknown part kind {kind!r}; known kinds: {KINDS}.")


def register(kind: str, name: str, *, override: bool = False):
  """Decorator that registers ``fn`` as part ``name`` of ``kind``."""
  _check_kind(kind)

  def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
    if name in _REGISTRY[kind] and not override:
      raise ValueError(f"{kind} {name!r} is already registered; pass"
                       " override=True to replace it.")
    _REGISTRY[kind][name] = fn
    return fn

  return decorator


def names(kind: str) -> tuple[str, ...]:
  """The registered names of ``kind``, sorted."""
  _check_kind(kind)
  return tuple(sorted(_REGISTRY[kind]))


def lookup(kind: str, name: str) -> Callable[..., Any]:
  """Returns the registered function; raises ValueError for unknown names."""
  _check_kind(kind)
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


def bind(kind: str, fn: Callable[..., Any], params: Mapping[str, Any],
         label: str) -> Callable[..., Any]:
  """Binds ``params`` to ``fn``'s keyword-only hyperparameters."""
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
