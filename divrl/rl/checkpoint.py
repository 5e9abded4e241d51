"""Checkpointing of training state on top of ``orbax.checkpoint``.

A training state is any pytree of arrays, for example::

  state = {"params": nnx_state(model),       # nnx.State or a pure dict
           "opt_state": opt_state,           # any optax state
           "rng": jax.random.key(0),         # typed or raw uint32 key
           "step": 7}                        # Python scalars are fine
  meta = {"data_position": 123, "epoch": 2}  # anything JSON-serialisable

``Checkpointer`` is a thin layer over ``ocp.CheckpointManager``; every step
directory holds three items, written with
``ocp.args.Composite(state=ocp.args.StandardSave(...),
meta=ocp.args.JsonSave(...), layout=ocp.args.JsonSave(...))``::

  ckpt = Checkpointer("/ckpt", save_every=100, max_to_keep=3)
  for step in range(start, num_steps + 1):
    ...
    ckpt.maybe_save(step, state, {"data_position": pos})
  ckpt.save(num_steps, state, meta)  # unconditional; no-op if already saved
  ckpt.close()

  state, meta = Checkpointer("/ckpt", save_every=100).restore(target=state)

Choices:

* Storage format. The state is flattened with ``jax.tree_util`` key paths and
  stored as a nested dict of arrays keyed by strings (dict keys, sequence
  indices and attribute names, e.g. ``params/layers/0/attn/q_proj/kernel`` or
  ``opt_state/0/mu/embedding``). ``nnx.Variable`` wrappers are transparent, so
  an ``nnx.State`` and the equivalent ``nnx.to_pure_dict`` store identically
  and either can be restored into the other. Optax NamedTuples, NNX
  containers and Variable metadata are never serialised: on restore the
  pytree structure comes from ``target``. Typed PRNG keys are stored as
  ``jax.random.key_data`` and re-wrapped with ``jax.random.wrap_key_data``;
  Python scalars are stored as 0-d NumPy arrays and converted back. A small
  JSON ``layout`` item records every stored leaf's path, kind, shape and
  dtype, which gives readable errors and lets ``restore`` run without a
  target.
* Restore is driven by ``target`` (concrete arrays or ``jax.ShapeDtypeStruct``
  leaves, e.g. from ``nnx.eval_shape``): each array is read straight into the
  target leaf's sharding (a ``NamedSharding`` over an 8-device mesh stays that
  sharding) and dtype (orbax casts if the stored dtype differs). Shapes must
  match exactly and the set of leaf paths must be equal; otherwise a
  ``ValueError`` names the offending paths. Restores are bitwise exact.
* Saving is synchronous by default: when ``save``/``maybe_save`` return, the
  step is committed. With ``async_save=True`` orbax copies the arrays to host
  and writes in a background thread; ``wait()`` blocks until it is committed,
  and ``latest_step``, ``restore`` and ``close`` wait first. Either way a
  step is written to a temporary directory and renamed (or marked with
  ``commit_success.txt`` on object stores) only when complete, so a crash
  mid-write never yields a step that ``latest_step`` or ``restore`` pick up.
* ``maybe_save`` saves when ``step % save_every == 0`` (orbax
  ``FixedIntervalPolicy``) or a preemption signal was received (orbax
  ``PreemptionCheckpointingPolicy``), and never for a step at or below the
  latest saved one (orbax rule). Unlike orbax's default policy it does not
  additionally save the very first step. ``save`` ignores ``save_every``.
* ``max_to_keep`` keeps the newest checkpoints (``None`` keeps all).
* Integrity. The layout records a CRC-32 of every leaf's bytes and of the
  metadata; ``restore`` recomputes them, so a garbled or truncated file is
  found at restore
  (``CorruptCheckpointError``, naming the step directory and the leaf), not
  a step later as a NaN. ``restore_latest_good`` falls back to the newest
  step that restores and moves the corrupt ones aside. A failed write (a
  full disk, a file-size limit) raises ``CheckpointWriteError`` naming the
  step, the directory and the last good step, which stays intact: a step
  only becomes visible once it is complete.
* Several processes (``jax.distributed``). Every process saves and restores
  (orbax's rule). A leaf sharded across processes is gathered one leaf at a
  time for its CRC-32 (``multihost_utils.process_allgather``, so each host
  briefly holds that whole leaf); a replicated one is read from this
  process's copy, so every process sees a CRC-32 mismatch and
  ``restore_latest_good`` falls back on all of them together. A file that
  cannot be read fails only on the processes that read it: they move the
  step aside and raise, and the restarted job resumes from the step before.
* The checkpoint directory is created on the first save, so a ``Checkpointer``
  used only to restore never creates directories.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

PyTree = Any

_FORMAT = "divrl.checkpoint/1"
_STATE, _META, _LAYOUT = "state", "meta", "layout"
_TODELETE = ".deleted"

# Leaf kinds recorded in the layout.
_ARRAY = "array"      # jax.Array
_NUMPY = "numpy"      # np.ndarray or NumPy scalar
_KEY = "prng_key"     # typed PRNG key, stored as its key_data
_SCALARS = {"bool": bool, "int": int, "float": float}

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------
# NNX helpers
# ----------------------------------------------------------------------------

def nnx_state(model: nnx.Module, *filters) -> nnx.State:
  """The variables of ``model`` (all of them, or those matching ``filters``).

  The same arrays as the state half of ``nnx.split(model, *filters)``, ready
  to be placed in a training state and saved; ``restore_into`` writes them
  back.

  Args:
    model: An NNX module.
    *filters: Optional NNX filters, e.g. ``nnx.Param``.

  Returns:
    ``nnx.state(model, *filters)`` (a tuple of states for several filters).

  Raises:
    TypeError: if ``model`` is not an ``nnx.Module``.
  """
  if not isinstance(model, nnx.Module):
    raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
  return nnx.state(model, *filters)


def restore_into(model: nnx.Module, state: nnx.State | Mapping) -> None:
  """Writes ``state`` (an ``nnx.State`` or a pure dict) into ``model``.

  Args:
    model: An NNX module; updated in place with ``nnx.update``.
    state: The restored variables, e.g. ``Checkpointer.restore(...)[0]
      ["params"]``; may cover a subset of the model's variables.

  Raises:
    TypeError: if ``model`` or ``state`` has the wrong type.
    ValueError: if a path in a pure-dict ``state`` is not in ``model``.
  """
  if not isinstance(model, nnx.Module):
    raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
  if isinstance(state, nnx.State):
    nnx.update(model, state)
    return
  if not isinstance(state, Mapping):
    raise TypeError("state must be an nnx.State or a pure dict, got "
                    f"{type(state).__name__}")
  current = nnx.state(model)
  known = {p for p, _ in _flatten(current)}
  unknown = sorted(p for p, _ in _flatten(dict(state)) if p not in known)
  if unknown:
    raise ValueError(f"state has paths that model does not: "
                     f"{_fmt_paths(unknown)}")
  nnx.replace_by_pure_dict(current, dict(state))
  nnx.update(model, current)


# ----------------------------------------------------------------------------
# Flattening
# ----------------------------------------------------------------------------

def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def _entry_name(entry) -> str:
  if isinstance(entry, jax.tree_util.DictKey):
    return str(entry.key)
  if isinstance(entry, jax.tree_util.SequenceKey):
    return str(entry.idx)
  if isinstance(entry, jax.tree_util.GetAttrKey):
    return entry.name
  if isinstance(entry, jax.tree_util.FlattenedIndexKey):
    return str(entry.key)
  return str(entry)


def _names(path) -> tuple[str, ...]:
  return tuple(_entry_name(e) for e in path)


def _fmt(path: Sequence[str]) -> str:
  return "/".join(path) if path else "<root>"


def _fmt_paths(paths, limit: int = 10) -> str:
  shown = ", ".join(repr(_fmt(p)) for p in paths[:limit])
  more = f" (+{len(paths) - limit} more)" if len(paths) > limit else ""
  return f"[{shown}]{more}"


def _flatten(tree: PyTree) -> list[tuple[tuple[str, ...], Any]]:
  """``(path, leaf)`` pairs in ``jax.tree.leaves`` order, Variables unwrapped.

  Paths are tuples of strings; an ``nnx.Variable`` contributes no path entry,
  so an ``nnx.State`` has the same paths as its pure dict.
  """
  pairs = []
  outer, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)
  for path, leaf in outer:
    prefix = _names(path)
    if _is_variable(leaf):
      inner, _ = jax.tree_util.tree_flatten_with_path(leaf.get_value())
      pairs.extend((prefix + _names(p), x) for p, x in inner)
    else:
      pairs.append((prefix, leaf))
  if len(pairs) != jax.tree_util.tree_structure(tree).num_leaves:
    raise AssertionError("internal error: Variable flattening mismatch")
  seen = set()
  for path, _ in pairs:
    if path in seen:
      raise ValueError(f"two leaves of the state map to the same path "
                       f"{_fmt(path)!r} (e.g. keys 0 and '0')")
    seen.add(path)
  return pairs


def _nest(pairs) -> dict:
  """A nested dict from ``(path, value)`` pairs."""
  root: dict = {}
  for path, value in pairs:
    if not path:
      raise ValueError("the state must be a container (e.g. a dict), not a "
                       "single array")
    node = root
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = value
  return root


def _lookup(nested: Mapping, path: Sequence[str]):
  for name in path:
    nested = nested[name]
  return nested


def _is_typed_key(x) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _encode(state: PyTree) -> tuple[dict, dict]:
  """The storable nested dict of ``state`` and its JSON layout."""
  pairs, leaves = [], []
  for path, x in _flatten(state):
    entry: dict[str, Any] = {"path": list(path)}
    if isinstance(x, jax.core.Tracer):
      raise TypeError(f"state leaf {_fmt(path)!r} is a tracer; save outside "
                      "jax.jit")
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
      entry["kind"] = type(x).__name__
      value = np.asarray(x)
    elif _is_typed_key(x):
      entry["kind"], entry["impl"] = _KEY, str(jax.random.key_impl(x))
      value = jax.random.key_data(x)
    elif isinstance(x, jax.Array):
      entry["kind"], value = _ARRAY, x
    elif isinstance(x, (np.ndarray, np.generic)):
      entry["kind"], value = _NUMPY, np.asarray(x)
    else:
      raise TypeError(f"state leaf {_fmt(path)!r} has unsupported type "
                      f"{type(x).__name__}; expected arrays, PRNG keys or "
                      "Python scalars")
    entry["shape"], entry["dtype"] = list(value.shape), str(value.dtype)
    entry["crc32"] = _crc32(value)
    pairs.append((path, value))
    leaves.append(entry)
  return _nest(pairs), {"format": _FORMAT, "leaves": leaves}


# ----------------------------------------------------------------------------
# Restore targets
# ----------------------------------------------------------------------------

def _key_data_sharding(sharding, ndim: int):
  """The sharding of ``key_data`` for keys with ``sharding`` and ``ndim``."""
  if isinstance(sharding, NamedSharding):
    spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
    return NamedSharding(sharding.mesh, P(*spec, None))
  if isinstance(sharding, jax.sharding.SingleDeviceSharding):
    return sharding
  return None


def _abstract_leaf(path, target, stored: Mapping):
  """The orbax restore target for one leaf and a function finishing it."""
  where = _fmt(path)
  if _is_typed_key(target):
    if stored["kind"] != _KEY:
      raise ValueError(f"target leaf {where!r} is a typed PRNG key but the "
                       f"checkpoint holds a leaf of kind {stored['kind']!r}")
    if isinstance(target, jax.Array):
      impl = str(jax.random.key_impl(target))
      if impl != stored["impl"]:
        raise ValueError(f"target leaf {where!r} is a {impl} key but the "
                         f"checkpoint holds a {stored['impl']} key")
    else:
      impl = stored["impl"]
    data = jax.eval_shape(jax.random.key_data, target)
    sharding = _key_data_sharding(getattr(target, "sharding", None),
                                  len(target.shape))
    abstract = jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    return abstract, lambda d: jax.random.wrap_key_data(d, impl=impl)
  if isinstance(target, (bool, int, float)) and not isinstance(
      target, np.generic):
    kind = type(target)
    return np.asarray(target), lambda d: kind(np.asarray(d)[()])
  if isinstance(target, np.generic):
    return np.asarray(target), lambda d: np.asarray(d)[()]
  if isinstance(target, np.ndarray):
    return target, lambda d: d
  if isinstance(target, jax.Array):
    return (jax.ShapeDtypeStruct(target.shape, target.dtype,
                                 sharding=target.sharding), lambda d: d)
  if isinstance(target, jax.ShapeDtypeStruct):
    return target, lambda d: d
  raise TypeError(f"target leaf {where!r} has unsupported type "
                  f"{type(target).__name__}; expected arrays, "
                  "jax.ShapeDtypeStruct, PRNG keys or Python scalars")


def _from_layout(entry: Mapping, value):
  """Converts a stored leaf back to its saved kind (restore without target)."""
  kind = entry["kind"]
  if kind == _KEY:
    return jax.random.wrap_key_data(value, impl=entry["impl"])
  if kind in _SCALARS:
    return _SCALARS[kind](np.asarray(value)[()])
  if kind == _NUMPY:
    return np.asarray(value)
  return value


# ----------------------------------------------------------------------------
# Checkpointer
# ----------------------------------------------------------------------------

class CorruptCheckpointError(RuntimeError):
  """A checkpoint step that cannot be read back as it was written.

  Attributes:
    step: the step.
    path: the step's directory.
    unreadable: a file of the step could not be read (rather than read back
      with a wrong CRC-32). With several processes, only the processes that
      read that file know it.
  """

  def __init__(self, step: int, path, reason: str, unreadable: bool = False):
    self.step, self.path, self.unreadable = step, str(path), unreadable
    super().__init__(f"checkpoint step {step} at '{path}' is corrupt: "
                     f"{reason}")


class CheckpointWriteError(OSError):
  """Writing a checkpoint failed (e.g. the disk is full); the step was not
  committed and the earlier steps are intact."""


def _host_value(value) -> np.ndarray:
  """The whole of ``value`` as a NumPy array on this host.

  An array sharded across processes is gathered: a collective, which every
  process must call for the same leaves in the same order (saves and
  restores run on every process, leaf by leaf in layout order).
  """
  if isinstance(value, jax.Array) and not value.is_fully_addressable:
    if value.is_fully_replicated:
      return np.asarray(value.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(value, tiled=True))
  return np.asarray(value)


def _crc32(value) -> int:
  """CRC-32 of the bytes of the whole array ``value`` (C order)."""
  arr = np.ascontiguousarray(_host_value(value))
  return zlib.crc32(arr.reshape(-1).view(np.uint8))


def _meta_crc32(meta) -> int:
  return zlib.crc32(json.dumps(meta, sort_keys=True,
                               allow_nan=True).encode())


def _check_meta(meta) -> dict:
  if meta is None:
    return {}
  if not isinstance(meta, Mapping):
    raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
  try:
    json.dumps(meta, allow_nan=True)
  except (TypeError, ValueError) as e:
    raise TypeError(f"meta must be JSON-serialisable: {e}") from e
  return dict(meta)


def _check_step(step) -> int:
  if isinstance(step, (bool, np.bool_)) or not isinstance(
      step, (int, np.integer)):
    raise TypeError(f"step must be an int, got {type(step).__name__}")
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}")
  return int(step)


class Checkpointer:
  """Saves and restores training state with ``ocp.CheckpointManager``.

  See the module docstring for the storage format and semantics.

  Attributes:
    directory: The checkpoint root directory (an ``epath.Path``).
    save_every: ``maybe_save`` saves when ``step % save_every == 0``.
    max_to_keep: How many of the newest checkpoints are kept (None = all).
  """

  def __init__(self, directory: str | os.PathLike, *, save_every: int,
               max_to_keep: int | None = 3, async_save: bool = False):
    """Creates a checkpointer; the directory is created on the first save.

    Args:
      directory: Root directory; step ``s`` is written to ``directory/s``.
      save_every: Positive save interval in steps for ``maybe_save``.
      max_to_keep: Positive number of checkpoints kept, or None to keep all.
      async_save: Write in a background thread (see ``wait``).

    Raises:
      TypeError / ValueError: naming the bad argument.
    """
    if isinstance(save_every, bool) or not isinstance(save_every, int):
      raise TypeError(f"save_every must be an int, got {save_every!r}")
    if save_every < 1:
      raise ValueError(f"save_every must be >= 1, got {save_every}")
    if max_to_keep is not None and (isinstance(max_to_keep, bool)
                                    or not isinstance(max_to_keep, int)
                                    or max_to_keep < 1):
      raise ValueError(f"max_to_keep must be None or an int >= 1, got "
                       f"{max_to_keep!r}")
    if not isinstance(directory, (str, os.PathLike)):
      raise TypeError(f"directory must be a path, got "
                      f"{type(directory).__name__}")
    path = os.fspath(directory)
    if "://" not in path:
      path = os.path.abspath(os.path.expanduser(path))
    self.directory = epath.Path(path)
    self.save_every = save_every
    self.max_to_keep = max_to_keep
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
    ])
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_decision_policy=policy,
        enable_async_checkpointing=async_save,
        # An old step is renamed away in one step and removed after, so a
        # kill mid-removal never leaves a half-deleted step that lists as
        # a checkpoint (found by scripts/reliability.py).
        todelete_subdir=_TODELETE,
        create=False)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=(_STATE, _META, _LAYOUT))
    self._closed = False

  # -- context manager -------------------------------------------------------

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __repr__(self) -> str:
    return (f"Checkpointer({str(self.directory)!r}, save_every="
            f"{self.save_every}, max_to_keep={self.max_to_keep})")

  def _check_open(self) -> None:
    if self._closed:
      raise RuntimeError(f"{self!r} is closed")

  # -- saving ----------------------------------------------------------------

  def _write(self, step: int, state: PyTree, meta) -> None:
    stored, layout = _encode(state)
    layout["meta_crc32"] = _meta_crc32(meta)
    try:
      self.directory.mkdir(parents=True, exist_ok=True)
      self._manager.save(step, args=ocp.args.Composite(**{
          _STATE: ocp.args.StandardSave(stored),
          _META: ocp.args.JsonSave(meta),
          _LAYOUT: ocp.args.JsonSave(layout),
      }), force=True)
    except Exception as e:  # orbax and tensorstore raise many kinds
      raise self._write_error(step, e) from e
    self._purge_deleted()

  def _purge_deleted(self) -> None:
    """Removes the steps ``max_to_keep`` renamed away (``_TODELETE``)."""
    if jax.process_index() == 0:
      shutil.rmtree(os.fspath(self.directory / _TODELETE), ignore_errors=True)

  def _write_error(self, step: int, error: BaseException
                   ) -> CheckpointWriteError:
    try:
      good = sorted(self._manager.all_steps())
    except Exception:  # pylint: disable=broad-except
      good = []
    last = (f"the last good checkpoint is step {good[-1]}, intact" if good
            else "there is no earlier checkpoint")
    return CheckpointWriteError(
        f"writing checkpoint step {step} to '{self.directory}' failed"
        f" ({type(error).__name__}: {error}); {last}. Free space on that"
        " disk (or raise its limits) and resume.")

  def maybe_save(self, step: int, state: PyTree, meta: Mapping | None = None
                 ) -> bool:
    """Saves if ``step % save_every == 0`` (or on preemption).

    Nothing is saved for a step at or below the latest saved step.

    Args:
      step: The training step (the checkpoint's name).
      state: The training-state pytree.
      meta: A JSON-serialisable dict stored alongside (e.g. data position).

    Returns:
      Whether a checkpoint was written.
    """
    self._check_open()
    step = _check_step(step)
    meta = _check_meta(meta)
    if not self._manager.should_save(step):
      return False
    self._write(step, state, meta)
    return True

  def save(self, step: int, state: PyTree, meta: Mapping | None = None,
           force: bool = False) -> bool:
    """Saves ``state`` at ``step`` regardless of ``save_every``.

    Args:
      step: The training step (the checkpoint's name).
      state: The training-state pytree.
      meta: A JSON-serialisable dict stored alongside.
      force: Replace an existing checkpoint for ``step``. Without it, saving
        an existing step is a no-op that returns False (e.g. a final save
        right after ``maybe_save`` wrote the same step).

    Returns:
      Whether a checkpoint was written.
    """
    self._check_open()
    step = _check_step(step)
    meta = _check_meta(meta)
    self._manager.wait_until_finished()
    if step in self._manager.all_steps():
      if not force:
        _log.info("checkpoint for step %d already exists in %s; not saving",
                  step, self.directory)
        return False
      self._manager.delete(step)
    self._write(step, state, meta)
    return True

  def wait(self) -> None:
    """Blocks until pending (async) saves are committed.

    Raises:
      CheckpointWriteError: a background write failed.
    """
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(-1, e) from e

  def close(self) -> None:
    """Waits for pending saves and releases resources (idempotent)."""
    if not self._closed:
      self._manager.wait_until_finished()
      self._manager.close()
      self._purge_deleted()
      self._closed = True

  # -- querying --------------------------------------------------------------

  def all_steps(self) -> list[int]:
    """The committed checkpoint steps, ascending."""
    self._check_open()
    self._manager.wait_until_finished()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest committed step, or None if there is none."""
    self._check_open()
    self._manager.wait_until_finished()
    return self._manager.latest_step()

  # -- restoring -------------------------------------------------------------

  def restore(self, step: int | None = None, *, target: PyTree = None
              ) -> tuple[PyTree, dict]:
    """Restores ``(state, meta)`` from ``step`` (default: the latest).

    Args:
      step: The step to restore; None means ``latest_step()``.
      target: A pytree with the structure of the saved state whose leaves are
        arrays or ``jax.ShapeDtypeStruct``s (typed keys and Python scalars
        too). The result has ``target``'s pytree structure (NamedTuples, NNX
        containers and Variable metadata included), its shardings and its
        dtypes. Without a target the state comes back as nested dicts keyed by
        strings, arrays with their saved shardings.

    Returns:
      The restored state and the metadata dict.

    Raises:
      FileNotFoundError: no checkpoint in the directory, or no such step.
      ValueError: ``target`` does not match the checkpoint (names the paths).
      CorruptCheckpointError: a file of the step cannot be read, or a leaf
        or the metadata does not match the CRC-32 recorded when it was
        written.
    """
    self._check_open()
    self._manager.wait_until_finished()
    steps = sorted(self._manager.all_steps())
    if step is None:
      if not steps:
        missing = "" if self.directory.exists() else " (it does not exist)"
        raise FileNotFoundError(f"no checkpoint found in directory "
                                f"'{self.directory}'{missing}")
      step = steps[-1]
    else:
      step = _check_step(step)
      if step not in steps:
        raise FileNotFoundError(f"no checkpoint for step {step} in directory "
                                f"'{self.directory}'; available steps: "
                                f"{steps}")
    info = self._read(step, ocp.args.Composite(**{
        _META: ocp.args.JsonRestore(), _LAYOUT: ocp.args.JsonRestore()}))
    meta, layout = info[_META], info[_LAYOUT]
    if not isinstance(layout, Mapping) or layout.get("format") != _FORMAT:
      raise ValueError(f"step {step} in '{self.directory}' was not written "
                       f"by divrl.checkpoint (layout {layout!r:.80})")
    if "meta_crc32" in layout and _meta_crc32(meta) != layout["meta_crc32"]:
      raise CorruptCheckpointError(step, self.step_path(step),
                                   "its metadata does not match its CRC-32")
    entries = {tuple(e["path"]): e for e in layout["leaves"]}

    if target is None:
      stored = self._read(step, ocp.args.Composite(**{
          _STATE: ocp.args.StandardRestore()}))[_STATE]
      self._verify(step, entries, stored)
      state = _nest((p, _from_layout(e, _lookup(stored, p)))
                    for p, e in entries.items())
      return state, meta

    pairs = _flatten(target)
    self._check_structure(step, pairs, entries)
    abstract, finishers = [], []
    for path, leaf in pairs:
      a, finish = _abstract_leaf(path, leaf, entries[path])
      shape = tuple(entries[path]["shape"])
      if tuple(a.shape) != shape:
        raise ValueError(
            f"shape mismatch at {_fmt(path)!r}: checkpoint step {step} in "
            f"'{self.directory}' stores {shape}, target needs "
            f"{tuple(a.shape)}")
      abstract.append((path, a))
      finishers.append(finish)
    stored = self._read(step, ocp.args.Composite(**{
        _STATE: ocp.args.StandardRestore(_nest(abstract))}))[_STATE]
    self._verify(step, entries, stored)
    leaves = [finish(_lookup(stored, path))
              for (path, _), finish in zip(pairs, finishers)]
    treedef = jax.tree_util.tree_structure(target)
    return jax.tree_util.tree_unflatten(treedef, leaves), meta

  def step_path(self, step: int) -> epath.Path:
    """The directory of checkpoint ``step``."""
    return self.directory / str(step)

  def _read(self, step: int, args):
    """``self._manager.restore``, its failures as CorruptCheckpointError.

    With several processes, each reads only its own shards, so a damaged
    file fails on the processes that read it while the others wait in
    orbax's closing barrier (see ``restore_latest_good``).
    """
    try:
      return self._manager.restore(step, args=args)
    except Exception as e:  # orbax, tensorstore and json raise many kinds
      first = str(e).strip().splitlines()[0] if str(e).strip() else ""
      raise CorruptCheckpointError(
          step, self.step_path(step),
          f"it cannot be read ({type(e).__name__}: {first:.200})",
          unreadable=True) from e

  def _verify(self, step: int, entries, stored) -> None:
    """Compares each restored leaf with the CRC-32 the layout recorded."""
    for path, entry in entries.items():
      want = entry.get("crc32")
      if want is None:
        continue
      value = _lookup(stored, path)
      if str(getattr(value, "dtype", "")) != entry["dtype"]:
        continue   # cast on restore: the bytes differ by design
      if _crc32(value) != want:
        raise CorruptCheckpointError(
            step, self.step_path(step),
            f"leaf {_fmt(path)!r} does not match its CRC-32 (the file that"
            " holds it was changed or cut short)")

  def restore_latest_good(self, *, target: PyTree = None, log=_log.warning
                          ) -> tuple[PyTree, dict, list[int]]:
    """Restores the newest step that reads back intact.

    A corrupt step (``CorruptCheckpointError``) is reported through ``log``
    and moved to ``<directory>.corrupt/<step>``, out of the way of later
    saves; the next older step is tried.

    With several processes, a CRC-32 mismatch is seen by every process (the
    sums cover whole leaves), so all of them fall back together. A file that
    cannot be read fails only on the processes that read it, while the
    others wait in orbax's barrier: those processes move the step aside and
    raise, the job stops (launchers end a job when a process fails), and the
    next start resumes from the previous step.

    Returns:
      ``(state, meta, corrupt_steps)``.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
      CorruptCheckpointError: every step is corrupt (the newest one's error).
    """
    self._check_open()
    corrupt, first_error = [], None
    steps = self.all_steps()
    if not steps:
      return self.restore(target=target) + ([],)   # raises FileNotFoundError
    for step in reversed(steps):
      try:
        state, meta = self.restore(step, target=target)
      except CorruptCheckpointError as e:
        if e.unreadable and jax.process_count() > 1:
          dest = self._set_aside(step, here_only=True)
          log(f"{e}; moved to '{dest}'. Other processes cannot be told and "
              "wait in orbax's barrier: stop the job and start it again to "
              "resume from the previous checkpoint")
          raise
        log(f"{e}; trying the previous checkpoint")
        first_error = first_error or e
        corrupt.append(step)
        self._set_aside(step)
        continue
      return state, meta, corrupt
    raise first_error

  def _set_aside(self, step: int, here_only: bool = False) -> str | None:
    """Moves ``step`` to ``<directory>.corrupt/``; returns where to.

    Process 0 moves it and every process waits for that, or, with
    ``here_only``, this process moves it and nobody waits.
    """
    dest = None
    if here_only or jax.process_index() == 0:
      aside = epath.Path(str(self.directory) + ".corrupt")
      aside.mkdir(parents=True, exist_ok=True)
      dest = aside / str(step)
      n = 1
      while dest.exists():
        dest = aside / f"{step}-{n}"
        n += 1
      try:
        shutil.move(str(self.step_path(step)), str(dest))
      except FileNotFoundError:   # another failed process moved it first
        pass
    if jax.process_count() > 1 and not here_only:
      multihost_utils.sync_global_devices(f"divrl_set_aside_{step}")
    self._manager.reload()
    return None if dest is None else str(dest)

  def _check_structure(self, step, pairs, entries) -> None:
    have = set(entries)
    want = {p for p, _ in pairs}
    missing = sorted(want - have)
    extra = sorted(have - want)
    if missing or extra:
      parts = []
      if missing:
        parts.append(f"in target but missing from the checkpoint: "
                     f"{_fmt_paths(missing)}")
      if extra:
        parts.append(f"in the checkpoint but not in target: "
                     f"{_fmt_paths(extra)}")
      raise ValueError(f"target does not match checkpoint step {step} in "
                       f"'{self.directory}'; " + "; ".join(parts))
