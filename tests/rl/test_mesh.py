"""The trainer's mesh (divrl.rl.mesh): axis sizes and their errors, batch and
parameter shardings, host <-> mesh transfers."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from divrl.models.decoder import Decoder, DecoderConfig
from divrl.rl import mesh as mesh_lib


@pytest.fixture(autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"


def _sizes(mesh):
  return tuple(mesh.shape[a] for a in mesh_lib.AXES)


@pytest.mark.parametrize("kw, sizes", [
    ({}, (8, 1, 1)),
    (dict(fsdp=2), (4, 2, 1)),
    (dict(fsdp=2, tensor=2), (2, 2, 2)),
    (dict(data=2, fsdp=2, tensor=2), (2, 2, 2)),
    (dict(data=2, tensor=-1), (2, 1, 4)),
    (dict(data=1, fsdp=-1), (1, 8, 1)),
    (dict(data=8), (8, 1, 1)),
])
def test_make_train_mesh_axis_sizes(kw, sizes):
  mesh = mesh_lib.make_train_mesh(**kw)
  assert mesh.axis_names == mesh_lib.AXES == ("data", "fsdp", "tensor")
  assert _sizes(mesh) == sizes
  assert mesh.devices.size == 8


def test_make_train_mesh_uses_the_first_devices_when_sizes_are_smaller():
  one = mesh_lib.make_train_mesh(data=1)
  assert _sizes(one) == (1, 1, 1)
  assert list(one.devices.flat) == [jax.devices()[0]]
  four = mesh_lib.make_train_mesh(data=2, fsdp=2)
  assert set(four.devices.flat) == set(jax.devices()[:4])
  given = mesh_lib.make_train_mesh(data=-1, devices=jax.devices()[2:6])
  assert _sizes(given) == (4, 1, 1)
  assert set(given.devices.flat) == set(jax.devices()[2:6])


def test_make_train_mesh_errors():
  with pytest.raises(ValueError, match=r"mesh: at most one axis size may be"
                     r" -1, got \[-1, -1, 1\]"):
    mesh_lib.make_train_mesh(data=-1, fsdp=-1)
  with pytest.raises(ValueError, match="mesh: 8 devices are not divisible by"
                     " 3"):
    mesh_lib.make_train_mesh(data=-1, fsdp=3)
  with pytest.raises(ValueError, match=r"mesh: axis sizes \{'data': 4,"
                     r" 'fsdp': 4, 'tensor': 1\} need 16 devices, 8 exist"):
    mesh_lib.make_train_mesh(data=4, fsdp=4)
  with pytest.raises(ValueError, match="need 6 devices, 4 exist"):
    mesh_lib.make_train_mesh(data=3, tensor=2, devices=jax.devices()[:4])


def test_batch_size_multiple_is_data_times_fsdp():
  assert mesh_lib.batch_size_multiple(mesh_lib.make_train_mesh()) == 8
  assert mesh_lib.batch_size_multiple(
      mesh_lib.make_train_mesh(data=2, fsdp=2, tensor=2)) == 4
  assert mesh_lib.batch_size_multiple(
      mesh_lib.make_train_mesh(data=1, tensor=8)) == 1
  assert mesh_lib.batch_size_multiple(
      mesh_lib.make_train_mesh(data=1, fsdp=4)) == 4


def test_batch_sharding_and_replicated():
  mesh = mesh_lib.make_train_mesh(data=2, fsdp=2, tensor=2)
  assert mesh_lib.batch_sharding(mesh, 3) == NamedSharding(
      mesh, P(("data", "fsdp"), None, None))
  assert mesh_lib.batch_sharding(mesh, 1).spec == P(("data", "fsdp"))
  assert mesh_lib.replicated(mesh) == NamedSharding(mesh, P())


def test_put_places_a_host_array():
  mesh = mesh_lib.make_train_mesh(data=2, fsdp=2, tensor=2)
  x = np.arange(24, dtype=np.float32).reshape(8, 3)
  y = mesh_lib.put(x, mesh_lib.batch_sharding(mesh, 2))
  assert y.sharding == mesh_lib.batch_sharding(mesh, 2)
  assert y.sharding.shard_shape(y.shape) == (2, 3)
  np.testing.assert_array_equal(np.asarray(y), x)
  r = mesh_lib.put([1, 2, 3], mesh_lib.replicated(mesh))
  assert r.is_fully_replicated
  np.testing.assert_array_equal(np.asarray(r), [1, 2, 3])


def test_put_batch_shards_rows_and_replicates_scalars():
  mesh = mesh_lib.make_train_mesh(data=2, fsdp=2, tensor=2)
  tree = {"tokens": np.arange(8 * 5, dtype=np.int32).reshape(8, 5),
          "rewards": np.linspace(0, 1, 8, dtype=np.float32),
          "step": np.int32(7), "mask": np.ones((4, 2), bool)}
  out = mesh_lib.put_batch(tree, mesh)
  for k in ("tokens", "rewards", "mask"):
    assert out[k].sharding == mesh_lib.batch_sharding(mesh, tree[k].ndim), k
    rows = out[k].sharding.shard_shape(out[k].shape)[0]
    assert rows == tree[k].shape[0] // 4, k
    np.testing.assert_array_equal(np.asarray(out[k]), tree[k])
  assert out["step"].sharding == mesh_lib.replicated(mesh)
  assert int(out["step"]) == 7
  with pytest.raises(ValueError, match=r"batch: leading size 6 is not a"
                     r" multiple of the mesh's data\*fsdp = 4"):
    mesh_lib.put_batch({"x": np.zeros((6, 2))}, mesh)
  # A one-device-per-row mesh accepts any leading size that is a multiple.
  one = mesh_lib.make_train_mesh(data=1)
  np.testing.assert_array_equal(
      np.asarray(mesh_lib.put_batch({"x": np.arange(3)}, one)["x"]),
      np.arange(3))


def _tiny_state():
  config = DecoderConfig.preset("tiny", num_layers=1, vocab_size=16)
  return nnx.state(Decoder(config, rngs=nnx.Rngs(0)))


def test_param_shardings_and_put_params_follow_the_annotations():
  mesh = mesh_lib.make_train_mesh(data=2, fsdp=2, tensor=2)
  state = _tiny_state()
  specs = nnx.get_partition_spec(state)
  shardings = mesh_lib.param_shardings(state, mesh)
  placed = mesh_lib.put_params(state, mesh)
  flat_specs = dict(nnx.to_flat_state(specs))
  flat_shardings = dict(nnx.to_flat_state(shardings))
  flat_state = dict(nnx.to_flat_state(state))
  flat_placed = dict(nnx.to_flat_state(placed))
  assert flat_placed.keys() == flat_state.keys() == flat_shardings.keys()
  annotated = 0
  for path, var in flat_state.items():
    spec = flat_specs[path].get_value()
    want = NamedSharding(mesh, spec if spec is not None else P())
    assert flat_shardings[path].get_value() == want, path
    got = flat_placed[path].get_value()
    assert got.sharding == want, path
    np.testing.assert_array_equal(np.asarray(got),
                                  np.asarray(var.get_value()))
    annotated += spec is not None and spec != P()
  assert annotated > 0   # the decoder annotates fsdp/tensor shardings
  kernel = ("layers", 0, "mlp", "gate_proj", "kernel")
  assert flat_shardings[kernel].get_value().spec == P("fsdp", "tensor")


def test_to_host_and_tree_to_host():
  mesh = mesh_lib.make_train_mesh(data=2, fsdp=2, tensor=2)
  x = np.arange(16.0).reshape(8, 2)
  placed = mesh_lib.put(x, mesh_lib.batch_sharding(mesh, 2))
  host = mesh_lib.to_host(placed)
  assert isinstance(host, np.ndarray)
  np.testing.assert_array_equal(host, x)
  assert isinstance(mesh_lib.to_host([1, 2]), np.ndarray)
  tree = mesh_lib.tree_to_host({"a": placed, "b": (np.int32(3),
                                                   jax.numpy.ones(2))})
  assert all(isinstance(v, np.ndarray) for v in jax.tree.leaves(tree))
  np.testing.assert_array_equal(tree["a"], x)
  assert int(tree["b"][0]) == 3
  np.testing.assert_array_equal(tree["b"][1], [1.0, 1.0])
