"""Device meshes, parameter/batch shardings and host transfers for training.

The trainer's mesh has the axes ``('data', 'fsdp', 'tensor')``. Batches are
split over ``('data', 'fsdp')`` on their leading axis; parameters follow the
``out_sharding`` annotations of ``divrl.models.Decoder`` (``fsdp`` and
``tensor``), i.e. replicated over ``data``. Optimizer state inherits the
parameters' shardings through ``jit``.

Everything that moves host data onto the mesh goes through
``jax.make_array_from_callback``, and everything that brings it back through
``to_host``; both work unchanged when the mesh spans several processes
(``jax.distributed``), as long as every process holds the same host data (the
trainer makes the data identical on every process by construction: same
seeds, same task files).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from divrl.sharding import leading_axis_spec, make_mesh

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def make_train_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
                    devices=None) -> jax.sharding.Mesh:
  """A ``('data','fsdp','tensor')`` mesh; one size may be -1 (the rest).

  Explicit sizes whose product is below the device count use the first
  devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(data), int(fsdp), int(tensor)]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis size may be -1, got {sizes}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh: {len(devices)} devices are not divisible by "
                       f"{known}")
    sizes[sizes.index(-1)] = len(devices) // known
  need = int(np.prod(sizes))
  if need > len(devices):
    raise ValueError(f"mesh: axis sizes {dict(zip(AXES, sizes))} need "
                     f"{need} devices, {len(devices)} exist")
  # Fewer than all devices: use the first ones (e.g. a 1-device run).
  return make_mesh(sizes, AXES, devices=devices[:need])


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int) -> NamedSharding:
  """Leading axis over ``('data','fsdp')``, the rest replicated."""
  return NamedSharding(mesh, leading_axis_spec(ndim, BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_size_multiple(mesh: jax.sharding.Mesh) -> int:
  """Batch sizes must be multiples of this (the ``data * fsdp`` size)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def put(x, sharding: NamedSharding) -> jax.Array:
  """Places a host array (identical on every process) with ``sharding``."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def put_batch(tree, mesh: jax.sharding.Mesh):
  """``put`` every leaf of ``tree`` sharded on its leading axis."""
  def one(x):
    x = np.asarray(x)
    if x.ndim == 0:
      return put(x, replicated(mesh))
    if x.shape[0] % batch_size_multiple(mesh):
      raise ValueError(
          f"batch: leading size {x.shape[0]} is not a multiple of the "
          f"mesh's data*fsdp = {batch_size_multiple(mesh)}")
    return put(x, batch_sharding(mesh, x.ndim))
  return jax.tree.map(one, tree)


def param_shardings(state: nnx.State, mesh: jax.sharding.Mesh):
  """``NamedSharding``s from the parameters' ``out_sharding`` annotations."""
  specs = nnx.get_partition_spec(state)
  return jax.tree.map(lambda s: NamedSharding(mesh, s if s is not None
                                              else P()),
                      specs, is_leaf=lambda x: isinstance(x, P) or x is None)


def put_params(state: nnx.State, mesh: jax.sharding.Mesh) -> nnx.State:
  """Places a host/local parameter state onto ``mesh`` per its annotations."""
  shardings = param_shardings(state, mesh)
  return jax.tree.map(lambda x, s: put(np.asarray(x), s), state, shardings)


def to_host(x) -> np.ndarray:
  """A global array as NumPy on every process (all-gathers if needed)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def tree_to_host(tree: Mapping | object):
  return jax.tree.map(to_host, tree)
