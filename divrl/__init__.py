"""divrl: verified, composable policy-gradient objectives for RL post-training in JAX.

Submodules and the names below are imported on first use, so that light
modules such as ``divrl.config`` (what experiment files import) do not pull in
JAX.
"""

import importlib

# Public names defined in submodules: name -> module.
_EXPORTS = {
    "Aggregate": "divrl.aggregation",
    "Objective": "divrl.objective",
    "Regularizer": "divrl.objective",
    "build": "divrl.objective",
    "from_config": "divrl.objective",
    "regularizer": "divrl.objective",
    "declare": "divrl.registry",
    "register": "divrl.registry",
    "State": "divrl.registry",
    "Batch": "divrl.types",
    "validate": "divrl.types",
    "check_values": "divrl.types",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
  else:
    try:
      value = importlib.import_module(f"divrl.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"divrl.{name}":
        raise
      raise AttributeError(f"module 'divrl' has no attribute {name!r}"
                           ) from None
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
