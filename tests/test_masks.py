"""Token masks and filters (divrl/masks.py): the high-entropy token mask,
truncation and the zero-variance group filter, against the NumPy references
in ``tests/references/masks.py``, in composed objectives and under
``shard_map``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import masks, sharding
from tests.conftest import _clean, _np, _with_extras, make_batch
from tests.references import advantages as advantages_ref
from tests.references import aggregation as aggregation_ref
from tests.references import masks as ref
from tests.references import surrogates as surrogates_ref


# --- High-entropy token mask --------------------------------------------------


@pytest.mark.parametrize("rho", [1.0, 0.8, 0.5, 0.35, 0.2, 0.05, 0.0])
@pytest.mark.parametrize("ties", [False, True])
def test_high_entropy_matches_reference(rho, ties):
  for seed in range(3):
    batch = _with_extras(seed, ties=ties, empty_rows=(0, 3))
    m = np.asarray(batch.response_mask)
    got = jax.jit(lambda b: masks.high_entropy_part(b, None, rho=rho))(batch)
    want = ref.high_entropy_mask(_np(batch.entropy), m, rho)
    np.testing.assert_array_equal(np.asarray(got), want)
  if rho == 1.0:
    np.testing.assert_array_equal(np.asarray(got), m.astype(float))


def test_high_entropy_empty_batch_and_bad_inputs():
  batch = _with_extras(0).replace(
      response_mask=jnp.zeros((12, 7), bool))
  np.testing.assert_array_equal(masks.high_entropy_part(batch, None, rho=0.2), 0.0)
  with pytest.raises(ValueError, match="rho"):
    masks.high_entropy_part(batch, None, rho=1.5)
  with pytest.raises(ValueError, match="Batch.entropy"):
    masks.high_entropy_part(make_batch(0), None, rho=0.2)


@pytest.mark.parametrize("shape", [(1000, 1001), (999, 1001)])
def test_high_entropy_is_exact_for_a_million_tokens(shape):
  """The virtual index q (n - 1) is exact for large n (no float32 rounding):
  n - 1 = 1000999 makes 0.8 (n - 1) non-integral by 0.2, which a float32
  index would snap to an integer and keep one token too many."""
  rng = np.random.default_rng(11)
  h = (rng.permutation(shape[0] * shape[1]).reshape(shape) / 7.0).astype(
      np.float32)
  m = np.ones(shape, bool)
  fn = jax.jit(masks.high_entropy_mask, static_argnums=2)
  for rho in (0.2, 0.05):
    got = np.asarray(fn(jnp.asarray(h), jnp.asarray(m), rho))
    want = h >= np.quantile(h.astype(np.float64).ravel(), 1.0 - rho)
    np.testing.assert_array_equal(got > 0, want)


def test_high_entropy_default_keeps_top_fifth():
  batch = _with_extras(9, ties=False, empty_rows=())
  m = np.asarray(batch.response_mask)
  got = masks.high_entropy_part(batch, None)
  np.testing.assert_array_equal(
      got, ref.high_entropy_mask(_np(batch.entropy), m, 0.2))
  assert 0 < float(np.sum(got)) < 0.3 * m.sum()


def test_high_entropy_in_objective_multiplies_surrogate_only():
  batch = _with_extras(8, ties=False)
  base = divrl.build("grpo", "ppo_clip", aggregation="token-mean")
  masked = divrl.build("grpo", "ppo_clip", aggregation="token-mean",
                       token_weights=[{"name": "high_entropy", "rho": 0.2}])
  m = np.asarray(batch.response_mask)
  keep = ref.high_entropy_mask(_np(batch.entropy), m, 0.2)
  adv = advantages_ref.grpo_advantages(_np(batch.rewards),
                                       np.asarray(batch.group_ids))
  per_tok = surrogates_ref.ppo_clip_token_loss(_clean(batch.logprobs, m),
                                               _clean(batch.old_logprobs, m),
                                               adv[:, None] * m)
  want = (per_tok * keep * m).sum() / m.sum()  # denominator: all tokens
  np.testing.assert_allclose(masked(batch)[0], want, rtol=1e-5, atol=1e-6)
  assert abs(float(masked(batch)[0]) - float(base(batch)[0])) > 1e-4


# --- Truncation and zero-variance filters -------------------------------------


def test_mask_truncated_values_and_group_statistics():
  batch = _with_extras(9, ties=False)
  m = np.asarray(batch.response_mask)
  out = masks.mask_truncated_part(batch)
  np.testing.assert_array_equal(
      _np(out.response_mask), ref.mask_truncated(m, np.asarray(batch.truncated)))
  assert out.response_mask.dtype == batch.response_mask.dtype
  np.testing.assert_array_equal(out.rewards, batch.rewards)
  # Composed: truncated rows leave the loss and the denominator, but their
  # rewards still enter the group statistics.
  objective = divrl.build("grpo", "ppo_clip", aggregation="token-mean",
                          transforms=["mask_truncated"])
  m2 = ref.mask_truncated(m, np.asarray(batch.truncated))
  adv = advantages_ref.grpo_advantages(_np(batch.rewards),
                                       np.asarray(batch.group_ids))
  per_tok = surrogates_ref.ppo_clip_token_loss(_clean(batch.logprobs, m2),
                                               _clean(batch.old_logprobs, m2),
                                               adv[:, None] * m2)
  want = aggregation_ref.finalize(*aggregation_ref.aggregate(per_tok, m2,
                                                             "token-mean"))
  np.testing.assert_allclose(objective(batch)[0], want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="Batch.truncated"):
    masks.mask_truncated_part(make_batch(0))


@pytest.mark.parametrize("atol", [0.0, 0.6])
def test_filter_zero_variance_groups_values(atol):
  for seed in range(4):
    batch = make_batch(seed, b=14, num_groups=6, reward_kind="binary")
    r = _np(batch.rewards)
    if seed == 0:  # a group with distinct but close rewards
      r = np.where(np.asarray(batch.group_ids) == 1, r * 0.5, r)
      batch = batch.replace(rewards=jnp.asarray(r, jnp.float32))
    out = jax.jit(lambda b: masks.filter_zero_variance_groups_part(
        b, atol=atol))(batch)
    want = ref.filter_zero_variance(np.asarray(batch.response_mask), r,
                                    np.asarray(batch.group_ids), atol)
    np.testing.assert_array_equal(_np(out.response_mask), want)


def test_filter_zero_variance_groups_multi_reward_and_errors():
  batch = make_batch(1, reward_kind="binary")
  comps = jnp.stack([batch.rewards, 1.0 - batch.rewards], axis=1)
  out = masks.filter_zero_variance_groups_part(batch.replace(rewards=comps),
                                          reward_weights=[1.0, 0.0])
  want = masks.filter_zero_variance_groups_part(batch)
  np.testing.assert_array_equal(out.response_mask, want.response_mask)
  with pytest.raises(ValueError, match="atol"):
    masks.filter_zero_variance_groups_part(batch, atol=-1.0)


# --- Sharded == single device -------------------------------------------------


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("data",))


@pytest.mark.parametrize("rho", [0.2, 0.5, 1.0])
def test_high_entropy_shard_map_equals_single_device(mesh, rho):
  batch = _with_extras(11, b=16, num_groups=5, empty_rows=(2,))
  want = masks.high_entropy_part(batch, None, rho=rho)
  spec = sharding.batch_spec(batch)
  fn = jax.shard_map(
      lambda b: masks.high_entropy_part(b, None, axis_name="data", rho=rho),
      mesh=mesh, in_specs=(spec,), out_specs=P("data", None))
  got = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  if rho < 1.0:  # the threshold is global: a local one would differ
    local = np.concatenate([np.asarray(masks.high_entropy_part(
        jax.tree.map(lambda x: x[i:i + 2], batch), None, rho=rho))
                            for i in range(0, 16, 2)])
    assert not np.array_equal(local, np.asarray(want))


def test_filter_zero_variance_shard_map_equals_single_device(mesh):
  batch = make_batch(12, b=16, num_groups=4, reward_kind="binary")
  want = masks.filter_zero_variance_groups_part(batch).response_mask
  spec = sharding.batch_spec(batch)
  fn = jax.shard_map(
      lambda b: masks.filter_zero_variance_groups_part(
          b, axis_name="data").response_mask,
      mesh=mesh, in_specs=(spec,), out_specs=P("data", None))
  got = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
