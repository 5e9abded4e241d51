"""The same global batch gives the same loss and gradient on 1 and 8 devices."""

import jax
import numpy as np
import pytest

import divrl
from divrl import aggregation, sharding
from tests.conftest import make_batch


def _objective(mode, adv="grpo"):
  return divrl.from_config({
      "advantage": adv, "surrogate": {"name": "ppo_clip", "eps_high": 0.28},
      "regularizers": [{"name": "kl", "estimator": "k3", "coef": 0.1}],
      "aggregation": mode})


def _loss_and_grad(objective, batch, **kw):
  return jax.value_and_grad(
      lambda lp: objective(batch.replace(logprobs=lp), **kw)[0])(batch.logprobs)


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("data",))


@pytest.mark.parametrize("mode", aggregation.MODES)
@pytest.mark.parametrize("adv", ["grpo", "rloo"])
def test_jit_over_sharded_batch_equals_single_device(mesh, mode, adv):
  objective = _objective(mode, adv)
  batch = make_batch(6, b=16, num_groups=5)
  loss, grad = jax.jit(lambda b: _loss_and_grad(objective, b))(batch)
  sharded = sharding.shard_batch(batch, mesh)
  assert len(sharded.logprobs.sharding.device_set) == 8
  loss8, grad8 = jax.jit(lambda b: _loss_and_grad(objective, b))(sharded)
  np.testing.assert_allclose(loss8, loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad8, grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", aggregation.MODES)
def test_shard_map_with_psum_equals_single_device(mesh, mode):
  """Groups span devices: group statistics and aggregates are psum-ed."""
  objective = _objective(mode)
  batch = make_batch(7, b=16, num_groups=3)
  loss, grad = _loss_and_grad(objective, batch)
  spec = sharding.batch_spec(batch)
  fn = jax.shard_map(lambda b: _loss_and_grad(objective, b, axis_name="data"),
                     mesh=mesh, in_specs=(spec,),
                     out_specs=(jax.sharding.PartitionSpec(),
                                spec.logprobs))
  loss8, grad8 = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  np.testing.assert_allclose(loss8, loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad8, grad, rtol=1e-5, atol=1e-7)
