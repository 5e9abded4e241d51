"""The composed objective: golden values, invariances, transforms, errors; the
same global batch gives the same loss and gradient on 1 and 8 devices."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import aggregation, sharding, types
from tests.conftest import _with_extras, make_batch
from tests.references import advantages as advantages_ref
from tests.references import aggregation as aggregation_ref
from tests.references import divergences as divergences_ref
from tests.references import surrogates as surrogates_ref

CONFIGS = {
    "grpo": dict(advantage={"name": "grpo", "eps": 1e-6},
                 surrogate={"name": "ppo_clip", "eps_high": 0.28},
                 regularizers={"kl": {"estimator": "k3", "coef": 0.1}},
                 aggregation="seq-mean-token-mean"),
    "dr_grpo": dict(advantage="dr_grpo", surrogate="ppo_clip",
                    aggregation={"name": "seq-mean-token-sum-norm",
                                 "norm": 9.0}),
    "rloo": dict(advantage="rloo", surrogate="ppo_clip",
                 regularizers={"kl": {"estimator": "k2", "coef": 0.05}},
                 aggregation="token-mean"),
    "token_sum": dict(advantage="grpo", surrogate="ppo_clip",
                      regularizers={"kl": {"estimator": "k1", "coef": 0.2}},
                      aggregation="token-sum"),
    "seq_sum": dict(advantage="rloo", surrogate="ppo_clip",
                    aggregation="seq-mean-token-sum"),
}


def _numpy_loss(name, batch):
  """The whole pipeline in NumPy from the reference functions."""
  cfg = CONFIGS[name]
  mask = np.asarray(batch.response_mask, np.float64)
  clean = lambda x: np.where(mask > 0, np.asarray(x, np.float64), 0.0)
  logp, old, refl = (clean(x) for x in (batch.logprobs, batch.old_logprobs,
                                        batch.ref_logprobs))
  r, ids = np.asarray(batch.rewards, np.float64), np.asarray(batch.group_ids)
  adv_spec = cfg["advantage"]
  adv_name = adv_spec if isinstance(adv_spec, str) else adv_spec["name"]
  if adv_name == "grpo":
    a = advantages_ref.grpo_advantages(r, ids, eps=1e-6)
  elif adv_name == "dr_grpo":
    a = advantages_ref.grpo_advantages(r, ids, scale_by_std=False)
  else:
    a = advantages_ref.rloo_advantages(r, ids)
  adv = a[:, None] * mask
  eps_high = (cfg["surrogate"].get("eps_high", 0.2)
              if isinstance(cfg["surrogate"], dict) else 0.2)
  total = surrogates_ref.ppo_clip_token_loss(logp, old, adv, eps_high=eps_high)
  for reg in cfg.get("regularizers", {}).values():
    total = total + reg["coef"] * divergences_ref.kl_estimate(
        logp, refl, reg["estimator"])
  agg = cfg["aggregation"]
  mode = agg if isinstance(agg, str) else agg["name"]
  norm = None if isinstance(agg, str) else agg.get("norm")
  return aggregation_ref.finalize(*aggregation_ref.aggregate(total, mask, mode,
                                                             norm=norm))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loss_matches_numpy_pipeline(name):
  objective = divrl.from_config(CONFIGS[name])
  for seed in range(3):
    batch = make_batch(seed)
    loss, metrics = jax.jit(objective)(batch)
    np.testing.assert_allclose(loss, _numpy_loss(name, batch), rtol=2e-5,
                               atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], loss)
    # The total is the sum of its parts.
    parts = metrics["loss/policy"] + sum(
        r["coef"] * metrics["regularizer/kl"]
        for r in CONFIGS[name].get("regularizers", {}).values())
    np.testing.assert_allclose(parts, loss, rtol=1e-5, atol=1e-6)


def _pad_more(batch, extra, seed):
  """Appends ``extra`` padded positions holding garbage."""
  rng = np.random.default_rng(seed)
  def pad(x, fill):
    if x is None:
      return None
    g = rng.choice(fill, size=(x.shape[0], extra)).astype(np.asarray(x).dtype)
    return jnp.concatenate([x, jnp.asarray(g)], axis=1)
  garbage = [np.nan, np.inf, -np.inf, 1e6, -3.0]
  return batch.replace(
      logprobs=pad(batch.logprobs, garbage),
      old_logprobs=pad(batch.old_logprobs, garbage),
      ref_logprobs=pad(batch.ref_logprobs, garbage),
      response_mask=pad(batch.response_mask, [False]))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_padding_invariance_values_and_gradients(name):
  # dr_grpo sets its norm explicitly, so extra padding does not change S.
  objective = divrl.from_config(CONFIGS[name])
  batch = make_batch(1, garbage=True)
  padded = _pad_more(batch, 5, seed=2)

  def loss_of(logprobs, b):
    return objective(b.replace(logprobs=logprobs))[0]

  l0, g0 = jax.value_and_grad(loss_of)(batch.logprobs, batch)
  l1, g1 = jax.value_and_grad(loss_of)(padded.logprobs, padded)
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  mask = np.asarray(batch.response_mask)
  np.testing.assert_allclose(np.asarray(g1)[:, :batch.length][mask],
                             np.asarray(g0)[mask], rtol=1e-6)
  assert np.all(np.asarray(g1)[:, :batch.length][~mask] == 0)
  assert np.all(np.asarray(g1)[:, batch.length:] == 0)
  assert np.isfinite(l1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sample_permutation_invariance(name):
  objective = divrl.from_config(CONFIGS[name])
  batch = make_batch(4)
  perm = np.random.default_rng(0).permutation(batch.batch_size)
  permuted = jax.tree.map(lambda x: x[perm], batch)
  g = jax.grad(lambda lp, b: objective(b.replace(logprobs=lp))[0])
  np.testing.assert_allclose(objective(batch)[0], objective(permuted)[0],
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g(batch.logprobs, batch))[perm],
                             g(permuted.logprobs, permuted), rtol=1e-5,
                             atol=1e-7)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("num_micro", [2, 3, 6])
def test_micro_batches_equal_full_batch(name, num_micro):
  objective = divrl.from_config(CONFIGS[name])
  batch = objective.with_advantages(make_batch(5))
  full_loss, full_grad = jax.value_and_grad(
      lambda lp: objective(batch.replace(logprobs=lp))[0])(batch.logprobs)
  loss, grads, metrics = _micro(objective, batch, num_micro)
  np.testing.assert_allclose(loss, full_loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grads, full_grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(metrics["loss"], full_loss, rtol=1e-5, atol=1e-7)


def _micro(objective, batch, num_micro):
  """Micro-batched loss/grad w.r.t. the full ``logprobs`` array."""
  b = batch.batch_size
  size = b // num_micro
  micro = types.split(batch.replace(logprobs=jnp.zeros_like(batch.logprobs)),
                      num_micro)
  micro = (micro, jnp.arange(num_micro))

  def agg_fn(lp, mb_and_index):
    mb, i = mb_and_index
    rows = jax.lax.dynamic_slice_in_dim(lp, i * size, size)
    return objective.aggregates(mb.replace(logprobs=rows))

  return aggregation.micro_batched_value_and_grad(agg_fn, batch.logprobs,
                                                  micro)


def test_jit_grad_vmap():
  objective = divrl.from_config(CONFIGS["grpo"])
  b1, b2 = make_batch(0), make_batch(1)
  stacked = jax.tree.map(lambda x, y: jnp.stack([x, y]), b1, b2)
  losses, _ = jax.vmap(objective)(stacked)
  np.testing.assert_allclose(losses, [objective(b1)[0], objective(b2)[0]],
                             rtol=1e-6)
  g = jax.jit(jax.grad(lambda lp: objective(b1.replace(logprobs=lp))[0]))(
      b1.logprobs)
  assert np.all(np.isfinite(g)) and float(jnp.abs(g).sum()) > 0


def test_config_dict_and_build_agree():
  cfg = ml_collections.ConfigDict(CONFIGS["rloo"])
  a = divrl.from_config(cfg)
  b = divrl.build("rloo", "ppo_clip",
                  regularizers=[divrl.regularizer({"name": "kl",
                                                   "estimator": "k2",
                                                   "coef": 0.05})],
                  aggregation="token-mean")
  batch = make_batch(2)
  np.testing.assert_allclose(a(batch)[0], b(batch)[0], rtol=1e-7)


def test_user_defined_parts_plug_in():
  # A plain-function surrogate, advantage, token weight and regularizer.
  def my_surrogate(batch, advantages):
    return -advantages * batch.logprobs

  def my_advantage(batch):
    return jnp.broadcast_to(batch.rewards[:, None], batch.logprobs.shape)

  def keep_first_token(batch, advantages):
    return (jnp.arange(batch.length) == 0).astype(jnp.float32)[None].repeat(
        batch.batch_size, 0)

  objective = divrl.build(my_advantage, my_surrogate,
                          token_weights=[keep_first_token],
                          regularizers=[divrl.regularizer(
                              lambda b: b.logprobs ** 2, coef=0.5,
                              label="l2")],
                          aggregation="token-sum")
  batch = make_batch(3)
  mask = np.asarray(batch.response_mask, np.float64)
  lp = np.where(mask > 0, np.asarray(batch.logprobs, np.float64), 0)
  r = np.asarray(batch.rewards, np.float64)
  want = np.sum(mask[:, 0] * (-r * lp[:, 0])) + 0.5 * np.sum(mask * lp ** 2)
  np.testing.assert_allclose(objective(batch)[0], want, rtol=1e-5)

  # And a registered user part reachable from a config.
  @divrl.register("surrogate", "test_scaled_pg", override=True)
  def scaled_pg(batch, advantages, *, scale=1.0):
    return -scale * advantages * batch.logprobs

  via_cfg = divrl.from_config({"advantage": "rloo",
                               "surrogate": {"name": "test_scaled_pg",
                                             "scale": 3.0},
                               "aggregation": "token-mean"})
  base = divrl.from_config({"advantage": "rloo",
                            "surrogate": {"name": "test_scaled_pg"},
                            "aggregation": "token-mean"})
  np.testing.assert_allclose(via_cfg(batch)[0], 3 * base(batch)[0], rtol=1e-6)


def test_random_token_weight_needs_key():
  def dropout(batch, advantages, *, key):
    return jax.random.bernoulli(key, 0.5, batch.logprobs.shape).astype(
        jnp.float32)

  objective = divrl.build("grpo", "ppo_clip", token_weights=[dropout])
  batch = make_batch(0)
  with pytest.raises(ValueError, match="PRNG key"):
    objective(batch)
  k = jax.random.key(0)
  np.testing.assert_allclose(objective(batch, k)[0], objective(batch, k)[0])
  assert float(objective(batch, k)[0]) != float(
      objective(batch, jax.random.key(1))[0])


class TestBadInput:

  def test_nan_and_inf_rewards(self):
    batch = make_batch(0)
    objective = divrl.from_config(CONFIGS["grpo"])
    for bad in (np.nan, np.inf):
      r = np.asarray(batch.rewards).copy()
      r[3] = bad
      with pytest.raises(ValueError, match="Batch.rewards.*non-finite"):
        objective(batch.replace(rewards=jnp.asarray(r)))

  def test_unknown_names(self):
    with pytest.raises(ValueError, match="unknown advantage name 'grpoo'"):
      divrl.from_config({"advantage": "grpoo", "surrogate": "ppo_clip"})
    with pytest.raises(ValueError, match="unknown aggregation name"):
      divrl.from_config({"advantage": "grpo", "surrogate": "ppo_clip",
                         "aggregation": "mean"})
    with pytest.raises(ValueError, match="unknown regularizer name 'kll'"):
      divrl.from_config({"advantage": "grpo", "surrogate": "ppo_clip",
                         "regularizers": {"kll": {"coef": 1.0}}})
    with pytest.raises(ValueError, match="no hyperparameter 'epsilon'"):
      divrl.from_config({"advantage": {"name": "grpo", "epsilon": 0.1},
                         "surrogate": "ppo_clip"})
    with pytest.raises(ValueError, match="unknown objective config key"):
      divrl.from_config({"advantage": "grpo", "surrogate": "ppo_clip",
                         "loss_agg_mode": "token-mean"})
    with pytest.raises(ValueError, match="'coef'"):
      divrl.from_config({"advantage": "grpo", "surrogate": "ppo_clip",
                         "regularizers": {"kl": {}}})
    with pytest.raises(ValueError, match="unknown part kind"):
      divrl.registry.names("loss")

  def test_mismatched_shapes(self):
    batch = make_batch(0)
    objective = divrl.from_config(CONFIGS["grpo"])
    cases = {
        "response_mask": batch.replace(response_mask=batch.response_mask[:, 1:]),
        "rewards": batch.replace(rewards=batch.rewards[1:]),
        "group_ids": batch.replace(group_ids=batch.group_ids[:-1]),
        "old_logprobs": batch.replace(old_logprobs=batch.old_logprobs.T),
        "logprobs": batch.replace(logprobs=batch.logprobs[0]),
    }
    for field, bad in cases.items():
      with pytest.raises(ValueError, match=f"Batch.{field}"):
        objective(bad)

  def test_kl_without_reference(self):
    objective = divrl.from_config(CONFIGS["grpo"])
    with pytest.raises(ValueError, match="ref_logprobs"):
      objective(make_batch(0, with_ref=False))


def test_transforms_run_before_advantages_and_coefs_override():
  def flip_rewards(batch):
    return batch.replace(rewards=-batch.rewards)

  def drop_first_row(batch):
    return batch.replace(response_mask=batch.response_mask.at[0].set(False))

  base = divrl.from_config(CONFIGS["grpo"])
  flipped = divrl.Objective(base.advantage, base.surrogate, base.regularizers,
                            aggregation=base.aggregation,
                            transforms=(flip_rewards, drop_first_row))
  batch = make_batch(3)
  manual = batch.replace(rewards=-batch.rewards,
                         response_mask=batch.response_mask.at[0].set(False))
  np.testing.assert_allclose(flipped(batch)[0], base(manual)[0], rtol=1e-6)
  # with_advantages applies the transforms once; the result is not re-transformed.
  prepared = flipped.with_advantages(batch)
  np.testing.assert_allclose(flipped(prepared)[0], base(manual)[0], rtol=1e-6)
  assert not bool(prepared.response_mask[0].any())

  # Coefficient overrides by label (e.g. from an adaptive controller), under jit.
  loss_hi = jax.jit(lambda b, c: base(b, coefs={"kl": c})[0])(batch, 1.0)
  m = base(batch)[1]
  np.testing.assert_allclose(loss_hi, m["loss/policy"] + 1.0 * m["regularizer/kl"],
                             rtol=1e-5)
  with pytest.raises(ValueError, match="unknown regularizer label"):
    base(batch, coefs={"entropy": 0.1})
  with pytest.raises(ValueError, match="must return a Batch"):
    divrl.Objective(base.advantage, base.surrogate,
                    transforms=(lambda b: b.rewards,))(batch)


# --- Sharded == single device -------------------------------------------------


def _objective(mode, adv="grpo"):
  return divrl.from_config({
      "advantage": adv, "surrogate": {"name": "ppo_clip", "eps_high": 0.28},
      "regularizers": {"kl": {"estimator": "k3", "coef": 0.1}},
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


def test_composed_objective_shard_map_equals_single_device(mesh):
  batch = _with_extras(13, b=16, num_groups=3, ties=False)
  objective = divrl.build(
      "grpo", "ppo_clip", aggregation="token-mean",
      transforms=["filter_zero_variance_groups", "ngram_repetition_penalty",
                  {"name": "kl_in_reward", "coef": 0.05}],
      token_weights=[{"name": "high_entropy", "rho": 0.4}],
      regularizers=[{"name": "entropy", "coef": -0.01}])

  def loss_grad(b, **kw):
    return jax.value_and_grad(
        lambda lp: objective(b.replace(logprobs=lp), **kw)[0])(b.logprobs)

  loss, grad = loss_grad(batch)
  spec = sharding.batch_spec(batch)
  fn = jax.shard_map(lambda b: loss_grad(b, axis_name="data"), mesh=mesh,
                     in_specs=(spec,), out_specs=(P(), spec.logprobs))
  loss8, grad8 = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  np.testing.assert_allclose(loss8, loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad8, grad, rtol=1e-5, atol=1e-7)
