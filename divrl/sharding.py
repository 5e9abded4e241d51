"""Meshes and batch placement for data-parallel objectives.

JAX >= 0.7 builds meshes with ``Explicit`` axis types by default, under which
``segment_sum`` over a sharded batch needs explicit out-shardings. divrl's
group statistics rely on GSPMD propagation, so its meshes use ``Auto`` axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P


def make_mesh(shape: Sequence[int], axis_names: Sequence[str],
              devices=None) -> jax.sharding.Mesh:
  """A device mesh with ``Auto`` axis types (GSPMD propagation)."""
  return jax.make_mesh(tuple(shape), tuple(axis_names),
                       axis_types=(AxisType.Auto,) * len(shape),
                       devices=devices)


def leading_axis_spec(ndim: int, axis: str | tuple[str, ...] = "data") -> P:
  """A ``PartitionSpec`` splitting the leading axis of an ``ndim``-D array
  over the mesh axis (or axes) ``axis``, the rest replicated."""
  return P(axis, *([None] * (ndim - 1)))


def shard_batch(batch, mesh: jax.sharding.Mesh, axis: str | tuple[str, ...] =
                "data"):
  """Places every leaf of ``batch`` sharded along its leading (batch) axis."""
  def place(x):
    return jax.device_put(
        x, NamedSharding(mesh, leading_axis_spec(x.ndim, axis)))
  return jax.tree.map(place, batch)


def batch_spec(batch, axis: str | tuple[str, ...] = "data"):
  """``PartitionSpec``s sharding every leaf of ``batch`` on its first axis."""
  return jax.tree.map(lambda x: leading_axis_spec(x.ndim, axis), batch)
