"""Meshes and batch placement (divrl.sharding): Auto axis types, leading-axis
partition specs, and batches sharded on their first axis."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from divrl import sharding
from tests.conftest import make_batch


@pytest.fixture(autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"


def test_make_mesh_shape_names_and_auto_axes():
  mesh = sharding.make_mesh((2, 4), ("data", "fsdp"))
  assert mesh.axis_names == ("data", "fsdp")
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
  assert tuple(mesh.axis_types) == (AxisType.Auto, AxisType.Auto)
  assert mesh.devices.shape == (2, 4)
  assert set(mesh.devices.flat) == set(jax.devices())
  mesh1 = sharding.make_mesh([8], ["data"])
  assert dict(mesh1.shape) == {"data": 8}
  assert tuple(mesh1.axis_types) == (AxisType.Auto,)


def test_make_mesh_on_given_devices():
  devices = jax.devices()[4:]
  mesh = sharding.make_mesh((2, 2), ("a", "b"), devices=devices)
  assert mesh.devices.size == 4
  assert set(mesh.devices.flat) == set(devices)


def test_leading_axis_spec():
  assert sharding.leading_axis_spec(1) == P("data")
  assert sharding.leading_axis_spec(3) == P("data", None, None)
  assert sharding.leading_axis_spec(2, "x") == P("x", None)
  assert sharding.leading_axis_spec(2, ("data", "fsdp")) == P(
      ("data", "fsdp"), None)


def test_batch_spec_follows_the_batch_structure():
  batch = make_batch(0, with_ref=False).replace(rewards=jnp.ones((12, 2)))
  spec = sharding.batch_spec(batch)
  assert spec.num_groups == batch.num_groups
  assert spec.logprobs == P("data", None)
  assert spec.old_logprobs == P("data", None)
  assert spec.rewards == P("data", None)
  assert spec.group_ids == P("data")
  assert spec.ref_logprobs is None
  spec2 = sharding.batch_spec({"a": np.zeros((4, 2, 3))}, ("data", "fsdp"))
  assert spec2 == {"a": P(("data", "fsdp"), None, None)}


def test_shard_batch_places_rows_over_the_axis_values_unchanged():
  mesh = sharding.make_mesh((8,), ("data",))
  batch = make_batch(1, b=16, num_groups=5)
  sharded = sharding.shard_batch(batch, mesh)
  assert sharded.num_groups == 5
  for name in ("logprobs", "response_mask", "rewards", "group_ids",
               "old_logprobs", "ref_logprobs"):
    x, y = getattr(batch, name), getattr(sharded, name)
    assert y.sharding == NamedSharding(mesh, sharding.leading_axis_spec(
        x.ndim)), name
    assert y.sharding.shard_shape(y.shape) == (2,) + x.shape[1:]
    assert len(y.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_shard_batch_over_two_axes():
  mesh = sharding.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"))
  tree = {"x": np.arange(8 * 3.0).reshape(8, 3), "y": np.arange(8)}
  sharded = sharding.shard_batch(tree, mesh, ("data", "fsdp"))
  # 4 row blocks of 2, replicated over the 2 tensor devices.
  assert sharded["x"].sharding.shard_shape((8, 3)) == (2, 3)
  assert sharded["x"].sharding.spec == P(("data", "fsdp"), None)
  shards = {tuple(s.data.shape) for s in sharded["y"].addressable_shards}
  assert shards == {(2,)}
  rows = sorted({tuple(np.asarray(s.data)) for s in
                 sharded["y"].addressable_shards})
  assert rows == [(0, 1), (2, 3), (4, 5), (6, 7)]
  np.testing.assert_array_equal(np.asarray(sharded["x"]), tree["x"])


def test_segment_sum_over_a_sharded_batch_under_jit():
  """The mesh's Auto axes let GSPMD propagate through segment_sum."""
  mesh = sharding.make_mesh((8,), ("data",))
  batch = make_batch(2, b=16, num_groups=3)

  def group_sums(b):
    return jax.ops.segment_sum(b.rewards, b.group_ids,
                               num_segments=b.num_groups)

  want = np.zeros(3)
  np.add.at(want, np.asarray(batch.group_ids), np.asarray(batch.rewards))
  got = jax.jit(group_sums)(sharding.shard_batch(batch, mesh))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
