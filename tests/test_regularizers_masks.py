"""KL placements, entropy, controllers, masks, filters and reward shaping
against the NumPy references in ``tests/reference_regularizers.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import controllers, divergences, masks, sharding, shaping
from tests import numpy_reference as nref
from tests import reference_regularizers as ref
from tests.conftest import make_batch


def _np(x):
  return np.asarray(x, np.float64)


def _clean(x, mask):
  return np.where(np.asarray(mask) > 0, _np(x), 0.0)


def _with_extras(seed=0, b=12, t=7, num_groups=4, vocab=3, ties=True,
                 empty_rows=(0,), **kw):
  """make_batch plus entropy (with ties), tokens, truncation, empty rows."""
  batch = make_batch(seed, b=b, t=t, num_groups=num_groups, **kw)
  rng = np.random.default_rng(seed + 100)
  mask = np.asarray(batch.response_mask).copy()
  for i in empty_rows:
    mask[i] = False
  ent = rng.uniform(0.0, 3.0, size=(b, t))
  if ties:
    ent = np.round(ent, 1)  # many exactly equal entropies
  ent[~mask] = rng.choice([np.nan, 1e6, -5.0], size=(~mask).sum())
  tokens = rng.integers(0, vocab, size=(b, t))
  tokens[~mask] = rng.integers(-1000, 1000, size=(~mask).sum())
  truncated = rng.random(b) < 0.3
  return batch.replace(response_mask=jnp.asarray(mask),
                       entropy=jnp.asarray(ent, jnp.float32),
                       tokens=jnp.asarray(tokens, jnp.int32),
                       truncated=jnp.asarray(truncated))


# --- KL: importance-corrected, in the loss ------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "abs", "k2", "k3"])
def test_is_corrected_kl_values(estimator):
  batch = make_batch(1)
  m = np.asarray(batch.response_mask)
  got = divergences.kl_part(divrl.objective.clean_padding(batch),
                            estimator=estimator, is_correction=True)
  want = ref.is_corrected_kl(_clean(batch.logprobs, m),
                             _clean(batch.old_logprobs, m),
                             _clean(batch.ref_logprobs, m), m, estimator)
  np.testing.assert_allclose(_clean(got, m), want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("detach", [False, True])
def test_is_corrected_k3_gradient_per_token(detach):
  rng = np.random.default_rng(0)
  lp, old, lr = (jnp.asarray(-rng.uniform(0.1, 3, (4, 5)), jnp.float32)
                 for _ in range(3))
  g = jax.grad(lambda x: jnp.sum(divergences.importance_corrected_kl(
      x, lr, old, "k3", detach_ratio=detach, is_log_ratio_clip=None)))(lp)
  rho = np.exp(_np(lp) - _np(old))
  u = _np(lp) - _np(lr)
  k3 = np.exp(-u) + u - 1.0
  # d/dl [rho k3] = rho k3 (through rho) + rho (1 - e^{-u}) (through k3).
  want = rho * (1.0 - np.exp(-u)) + (0.0 if detach else rho * k3)
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_is_corrected_on_policy_value_equals_plain_estimate():
  batch = make_batch(2, with_old=False)
  clean = divrl.objective.clean_padding(batch)
  a = divergences.kl_part(clean, estimator="k3", is_correction=True)
  b = divergences.kl_part(clean, estimator="k3")
  np.testing.assert_allclose(a, b, rtol=1e-6)
  # ...but the ratio's gradient still acts unless detached.
  ga = jax.grad(lambda lp: jnp.sum(divergences.kl_part(
      clean.replace(logprobs=lp), estimator="k3", is_correction=True)))(
          clean.logprobs)
  gb = jax.grad(lambda lp: jnp.sum(divergences.kl_part(
      clean.replace(logprobs=lp), estimator="k3")))(clean.logprobs)
  np.testing.assert_allclose(ga - gb, b, rtol=1e-5, atol=1e-6)


def test_kl_bad_inputs_are_named():
  batch = make_batch(0, with_ref=False)
  with pytest.raises(ValueError, match="Batch.ref_logprobs"):
    divergences.kl_part(batch)
  with pytest.raises(ValueError, match="Batch.ref_logprobs"):
    divergences.kl_in_reward(batch)
  with pytest.raises(ValueError, match="estimator"):
    divergences.kl_in_reward(make_batch(0), estimator="k9")
  multi = make_batch(0).replace(rewards=jnp.zeros((12, 2)))
  with pytest.raises(ValueError, match="Batch.rewards"):
    divergences.kl_in_reward(multi)


# --- KL in the reward ------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize("with_token_rewards", [False, True])
@pytest.mark.parametrize("on_policy", [False, True])
def test_kl_in_reward_values(estimator, with_token_rewards, on_policy):
  batch = _with_extras(3, with_old=not on_policy, empty_rows=(0, 5))
  m = np.asarray(batch.response_mask)
  tr = None
  if with_token_rewards:
    tr = np.random.default_rng(0).normal(size=m.shape)
    tr[~m] = np.nan  # garbage on padding
    batch = batch.replace(token_rewards=jnp.asarray(tr, jnp.float32))
  coef = 0.3
  out = jax.jit(lambda b: divergences.kl_in_reward(
      b, coef=coef, estimator=estimator))(batch)
  old = batch.logprobs if on_policy else batch.old_logprobs
  want_r, want_tr = ref.kl_in_reward(
      _np(batch.rewards), None if tr is None else np.where(m, tr, 0.0), m,
      _clean(old, m), _clean(batch.ref_logprobs, m), coef, estimator)
  np.testing.assert_allclose(out.rewards, want_r, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(_clean(out.token_rewards, m), want_tr, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.token_rewards)[~m], 0.0)
  # The empty rows keep their reward and get no token rewards.
  np.testing.assert_allclose(out.rewards[0], batch.rewards[0])


def test_kl_in_reward_traced_coef_under_jit():
  batch = make_batch(4)
  f = jax.jit(lambda b, c: divergences.kl_in_reward(b, coef=c).rewards)
  np.testing.assert_allclose(f(batch, jnp.float32(0.2)),
                             divergences.kl_in_reward(batch, coef=0.2).rewards,
                             rtol=1e-6)


# --- Entropy regularizer -------------------------------------------------------------


def test_entropy_regularizer_in_objective_token_mean():
  batch = _with_extras(5, ties=False)
  objective = divrl.build(
      "grpo", "ppo_clip", aggregation="token-mean",
      regularizers=[divrl.regularizer({"name": "entropy", "coef": -0.1})])
  loss, metrics = objective(batch)
  m = np.asarray(batch.response_mask)
  mean_h = _clean(batch.entropy, m).sum() / m.sum()
  np.testing.assert_allclose(metrics["regularizer/entropy"], mean_h, rtol=1e-5)
  np.testing.assert_allclose(loss, metrics["loss/policy"] - 0.1 * mean_h,
                             rtol=1e-5, atol=1e-6)
  # A controller drives it at call time, under jit.
  ctrl = controllers.adaptive_entropy(init_coef=0.3)
  loss2, _ = jax.jit(lambda b, s: objective(
      b, coefs={"entropy": ctrl.loss_coef(s)}))(batch, ctrl.init())
  np.testing.assert_allclose(loss2, metrics["loss/policy"] - 0.3 * mean_h,
                             rtol=1e-5, atol=1e-6)


def test_entropy_regularizer_needs_entropy():
  with pytest.raises(ValueError, match="Batch.entropy"):
    divergences.entropy_part(make_batch(0))


# --- Controllers ------------------------------------------------------------------


def test_adaptive_kl_sequence_eager_and_scan():
  kls = np.array([0.05, 0.1, 0.3, 0.02, 0.12, 1.0, 0.0, 0.099])
  steps = np.array([256, 512, 128, 1024, 64, 2048, 100, 1])
  ctrl = controllers.adaptive_kl(init_coef=0.05, target=0.1, horizon=1000)
  want = ref.adaptive_kl_sequence(0.05, 0.1, 1000, kls, steps)
  state, got = ctrl.init(), []
  for kl, n in zip(kls, steps):
    state = ctrl.update(state, kl, int(n))
    got.append(float(state.coef))
  np.testing.assert_allclose(got, want, rtol=1e-6)

  def step(state, xs):
    state = ctrl.update(state, *xs)
    return state, state.coef

  final, coefs = jax.jit(lambda s, k, n: jax.lax.scan(step, s, (k, n)))(
      ctrl.init(), jnp.asarray(kls, jnp.float32), jnp.asarray(steps))
  np.testing.assert_allclose(coefs, want, rtol=1e-6)
  np.testing.assert_allclose(final.coef, want[-1], rtol=1e-6)


def test_fixed_kl_is_constant_and_drives_objective():
  ctrl = controllers.fixed_kl(0.2)
  state = ctrl.update(ctrl.init(), 5.0, 10)
  assert float(state.coef) == pytest.approx(0.2)
  objective = divrl.build("grpo", "ppo_clip", regularizers=[
      divrl.regularizer({"name": "kl", "estimator": "k3", "coef": 0.0})])
  batch = make_batch(0)
  a = jax.jit(lambda b, s: objective(b, coefs={"kl": s.coef})[0])(batch, state)
  b = divrl.build("grpo", "ppo_clip", regularizers=[
      divrl.regularizer({"name": "kl", "estimator": "k3", "coef": 0.2})])(
          batch)[0]
  np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("init_active", [True, False])
def test_adaptive_entropy_sequence_eager_and_scan(init_active):
  ents = np.array([0.1, 0.15, 0.3, 0.2, 0.5, 0.6, 0.05, 0.0, 0.25, 0.19])
  kw = dict(init_coef=0.004, target=0.2, delta=0.003, coef_min=0.001,
            coef_max=0.008)
  ctrl = controllers.adaptive_entropy(**kw, init_active=init_active)
  applied, coefs = ref.adaptive_entropy_sequence(
      0.004, 0.2, 0.003, 0.001, 0.008, init_active, ents)
  state = ctrl.init()
  got_applied = [float(ctrl.effective_coef(state))]
  got_coefs = []
  for h in ents:
    state = ctrl.update(state, h)
    got_coefs.append(float(state.coef))
    got_applied.append(float(ctrl.effective_coef(state)))
  np.testing.assert_allclose(got_coefs, coefs, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(got_applied, applied, rtol=1e-6, atol=1e-9)
  assert float(ctrl.loss_coef(state)) == -got_applied[-1]
  assert float(controllers.effective_coef(state)) == got_applied[-1]

  def step(state, h):
    state = ctrl.update(state, h)
    return state, (state.coef, ctrl.effective_coef(state))

  _, (c, a) = jax.jit(lambda s, e: jax.lax.scan(step, s, e))(
      ctrl.init(), jnp.asarray(ents, jnp.float32))
  np.testing.assert_allclose(c, coefs, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(a, applied[1:], rtol=1e-6, atol=1e-9)


def test_controller_bad_arguments_are_named():
  with pytest.raises(ValueError, match="target"):
    controllers.adaptive_kl(target=0.0)
  with pytest.raises(ValueError, match="horizon"):
    controllers.adaptive_kl(horizon=-1)
  with pytest.raises(ValueError, match="init_coef"):
    controllers.adaptive_kl(init_coef=-1.0)
  with pytest.raises(ValueError, match="coef"):
    controllers.fixed_kl(-0.1)
  with pytest.raises(ValueError, match="delta"):
    controllers.adaptive_entropy(delta=-1.0)
  with pytest.raises(ValueError, match="coef_min"):
    controllers.adaptive_entropy(coef_min=0.5, coef_max=0.1)
  with pytest.raises(ValueError, match="init_coef"):
    controllers.adaptive_entropy(init_coef=2.0)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 0.37])
def test_reference_mixup_matches_reference_and_jit(alpha):
  rng = np.random.default_rng(3)
  params = {"w": rng.normal(size=(3, 4)), "b": (rng.normal(size=(4,)),),
            "s": rng.normal(size=())}
  ref_params = jax.tree.map(lambda x: x + rng.normal(size=np.shape(x)),
                            params)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  ref_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), ref_params)
  want = ref.reference_mixup(jax.tree.leaves(params),
                             jax.tree.leaves(ref_params), alpha)
  for out in (controllers.reference_mixup(params, ref_params, alpha),
              jax.jit(controllers.reference_mixup)(params, ref_params,
                                                   alpha)):
    assert jax.tree.structure(out) == jax.tree.structure(ref_params)
    for got, w in zip(jax.tree.leaves(out), want):
      np.testing.assert_allclose(np.ravel(got), w, rtol=1e-6, atol=1e-6)


def test_reference_mixup_keeps_ref_dtype_and_checks_inputs():
  p = {"a": jnp.ones((2,), jnp.float32)}
  r = {"a": jnp.zeros((2,), jnp.bfloat16)}
  out = controllers.reference_mixup(p, r)
  assert out["a"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out["a"], np.float32), 0.6,
                             rtol=1e-2)
  with pytest.raises(ValueError, match="alpha"):
    controllers.reference_mixup(p, r, alpha=1.5)
  with pytest.raises(ValueError, match="ref_params"):
    controllers.reference_mixup(p, {"b": jnp.zeros((2,))})


# --- High-entropy token mask -------------------------------------------------------


@pytest.mark.parametrize("rho", [1.0, 0.8, 0.5, 0.35, 0.2, 0.05, 0.0])
@pytest.mark.parametrize("ties", [False, True])
def test_high_entropy_matches_reference(rho, ties):
  for seed in range(3):
    batch = _with_extras(seed, ties=ties, empty_rows=(0, 3))
    m = np.asarray(batch.response_mask)
    got = jax.jit(lambda b: masks.high_entropy(b, None, rho=rho))(batch)
    want = ref.high_entropy_mask(_np(batch.entropy), m, rho)
    np.testing.assert_array_equal(np.asarray(got), want)
  if rho == 1.0:
    np.testing.assert_array_equal(np.asarray(got), m.astype(float))


def test_high_entropy_quantile_value_is_numpy_linear():
  batch = _with_extras(7, ties=False)
  m = np.asarray(batch.response_mask)
  vals = _np(batch.entropy)[m]
  for q in [0.0, 0.1, 0.37, 0.5, 0.8, 1.0]:
    got = masks.masked_quantile(batch.entropy, batch.response_mask > 0, q)
    np.testing.assert_allclose(got, np.quantile(vals, q), rtol=1e-6)


def test_high_entropy_empty_batch_and_bad_inputs():
  batch = _with_extras(0).replace(
      response_mask=jnp.zeros((12, 7), bool))
  np.testing.assert_array_equal(masks.high_entropy(batch, None, rho=0.2), 0.0)
  with pytest.raises(ValueError, match="rho"):
    masks.high_entropy(batch, None, rho=1.5)
  with pytest.raises(ValueError, match="Batch.entropy"):
    masks.high_entropy(make_batch(0), None, rho=0.2)


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
  got = masks.high_entropy(batch, None)
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
  adv = nref.grpo_advantages(_np(batch.rewards), np.asarray(batch.group_ids))
  per_tok = nref.ppo_clip_token_loss(_clean(batch.logprobs, m),
                                     _clean(batch.old_logprobs, m),
                                     adv[:, None] * m)
  want = (per_tok * keep * m).sum() / m.sum()  # denominator: all tokens
  np.testing.assert_allclose(masked(batch)[0], want, rtol=1e-5, atol=1e-6)
  assert abs(float(masked(batch)[0]) - float(base(batch)[0])) > 1e-4


# --- Truncation and zero-variance filters ------------------------------------------


def test_mask_truncated_values_and_group_statistics():
  batch = _with_extras(9, ties=False)
  m = np.asarray(batch.response_mask)
  out = masks.mask_truncated(batch)
  np.testing.assert_array_equal(
      _np(out.response_mask), ref.mask_truncated(m, np.asarray(batch.truncated)))
  assert out.response_mask.dtype == batch.response_mask.dtype
  np.testing.assert_array_equal(out.rewards, batch.rewards)
  # Composed: truncated rows leave the loss and the denominator, but their
  # rewards still enter the group statistics.
  objective = divrl.build("grpo", "ppo_clip", aggregation="token-mean",
                          transforms=["mask_truncated"])
  m2 = ref.mask_truncated(m, np.asarray(batch.truncated))
  adv = nref.grpo_advantages(_np(batch.rewards), np.asarray(batch.group_ids))
  per_tok = nref.ppo_clip_token_loss(_clean(batch.logprobs, m2),
                                     _clean(batch.old_logprobs, m2),
                                     adv[:, None] * m2)
  want = nref.finalize(*nref.aggregate(per_tok, m2, "token-mean"))
  np.testing.assert_allclose(objective(batch)[0], want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="Batch.truncated"):
    masks.mask_truncated(make_batch(0))


@pytest.mark.parametrize("atol", [0.0, 0.6])
def test_filter_zero_variance_groups_values(atol):
  for seed in range(4):
    batch = make_batch(seed, b=14, num_groups=6, reward_kind="binary")
    r = _np(batch.rewards)
    if seed == 0:  # a group with distinct but close rewards
      r = np.where(np.asarray(batch.group_ids) == 1, r * 0.5, r)
      batch = batch.replace(rewards=jnp.asarray(r, jnp.float32))
    out = jax.jit(lambda b: masks.filter_zero_variance_groups(
        b, atol=atol))(batch)
    want = ref.filter_zero_variance(np.asarray(batch.response_mask), r,
                                    np.asarray(batch.group_ids), atol)
    np.testing.assert_array_equal(_np(out.response_mask), want)


def test_filter_zero_variance_groups_multi_reward_and_errors():
  batch = make_batch(1, reward_kind="binary")
  comps = jnp.stack([batch.rewards, 1.0 - batch.rewards], axis=1)
  out = masks.filter_zero_variance_groups(batch.replace(rewards=comps),
                                          reward_weights=[1.0, 0.0])
  want = masks.filter_zero_variance_groups(batch)
  np.testing.assert_array_equal(out.response_mask, want.response_mask)
  with pytest.raises(ValueError, match="atol"):
    masks.filter_zero_variance_groups(batch, atol=-1.0)


# --- Sharded == single device -------------------------------------------------------


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("data",))


@pytest.mark.parametrize("rho", [0.2, 0.5, 1.0])
def test_high_entropy_shard_map_equals_single_device(mesh, rho):
  batch = _with_extras(11, b=16, num_groups=5, empty_rows=(2,))
  want = masks.high_entropy(batch, None, rho=rho)
  spec = sharding.batch_spec(batch)
  fn = jax.shard_map(
      lambda b: masks.high_entropy(b, None, axis_name="data", rho=rho),
      mesh=mesh, in_specs=(spec,), out_specs=P("data", None))
  got = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  if rho < 1.0:  # the threshold is global: a local one would differ
    local = np.concatenate([np.asarray(masks.high_entropy(
        jax.tree.map(lambda x: x[i:i + 2], batch), None, rho=rho))
                            for i in range(0, 16, 2)])
    assert not np.array_equal(local, np.asarray(want))


def test_filter_zero_variance_shard_map_equals_single_device(mesh):
  batch = make_batch(12, b=16, num_groups=4, reward_kind="binary")
  want = masks.filter_zero_variance_groups(batch).response_mask
  spec = sharding.batch_spec(batch)
  fn = jax.shard_map(
      lambda b: masks.filter_zero_variance_groups(
          b, axis_name="data").response_mask,
      mesh=mesh, in_specs=(spec,), out_specs=P("data", None))
  got = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


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


# --- Reward shaping ------------------------------------------------------------------


def _length_batch(lengths, t, rewards=None, seed=0):
  rng = np.random.default_rng(seed)
  b = len(lengths)
  mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
  r = rng.normal(size=b) if rewards is None else np.asarray(rewards, float)
  return divrl.Batch(
      logprobs=jnp.asarray(-rng.uniform(0.1, 2, (b, t)), jnp.float32),
      response_mask=jnp.asarray(mask), rewards=jnp.asarray(r, jnp.float32),
      group_ids=jnp.zeros((b,), jnp.int32), num_groups=1)


def test_overlong_penalty_values():
  lengths = [0, 5, 10, 11, 13, 16, 17, 20, 24]
  batch = _length_batch(lengths, 24)
  out = shaping.overlong_penalty(batch, max_length=16, cache_length=6,
                                 factor=0.5)
  want = _np(batch.rewards) + ref.overlong(np.asarray(batch.response_mask),
                                           16, 6, 0.5)
  np.testing.assert_allclose(out.rewards, want, rtol=1e-6, atol=1e-7)
  # Boundaries: 0 up to L_max - L_cache, -factor at L_max and beyond.
  pen = _np(out.rewards) - _np(batch.rewards)
  assert pen[2] == 0 and pen[5] == pytest.approx(-0.5) and pen[8] == -0.5
  with pytest.raises(ValueError, match="cache_length"):
    shaping.overlong_penalty(batch, max_length=16, cache_length=0)
  with pytest.raises(ValueError, match="max_length"):
    shaping.overlong_penalty(batch, max_length=4, cache_length=6)


def test_overlong_penalty_counts_tokens_not_positions():
  batch = _length_batch([8, 8], 8)
  gappy = batch.response_mask.at[0, 1:4].set(False)  # 5 valid tokens
  out = shaping.overlong_penalty(batch.replace(response_mask=gappy),
                                 max_length=8, cache_length=4)
  np.testing.assert_allclose(_np(out.rewards) - _np(batch.rewards),
                             [-0.25, -1.0], rtol=1e-6)


def test_cosine_length_reward_replaces_reward():
  lengths = [0, 1, 4, 7, 10, 15, 0, 3, 10, 12]
  rewards = [1, 1, 1, 0.7, 1, 1, 0, 0, 0, 0.5]
  batch = _length_batch(lengths, 15, rewards)
  out = jax.jit(lambda b: shaping.cosine_length_reward(
      b, max_length=10, threshold=0.5))(batch)
  want = ref.cosine(rewards, np.asarray(batch.response_mask), 10, 0.5)
  np.testing.assert_allclose(out.rewards, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.rewards)[[0, 4, 6, 8]], [1.0, 0.5, -1.0, -0.5],
                             atol=1e-6)
  with pytest.raises(ValueError, match="max_length"):
    shaping.cosine_length_reward(batch, max_length=0)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_repetition_penalty_values(n):
  for seed in range(3):
    batch = _with_extras(seed, b=10, t=9, vocab=2 + seed, empty_rows=(1,))
    m = np.asarray(batch.response_mask).copy()
    m[2, 1:3] = False  # a gap inside a response
    batch = batch.replace(response_mask=jnp.asarray(m))
    out = jax.jit(lambda b: shaping.ngram_repetition_penalty(
        b, n=n, penalty=-0.7))(batch)
    want = _np(batch.rewards) + ref.ngram_penalty(
        np.asarray(batch.tokens), m, n, -0.7)
    np.testing.assert_allclose(out.rewards, want, rtol=1e-5, atol=1e-6)


def test_ngram_repetition_edge_cases():
  tokens = jnp.asarray([[5, 5, 5, 5, 5, 5], [1, 2, 3, 4, 5, 6],
                        [1, 2, 9, 9, 9, 9], [7, 7, 7, 7, 0, 0]], jnp.int32)
  lengths = [6, 6, 2, 0]
  batch = _length_batch(lengths, 6, [0.0] * 4).replace(tokens=tokens)
  out = shaping.ngram_repetition_penalty(batch)  # n=3, penalty=-1
  # 4 identical trigrams: 1 - 1/4; all distinct: 0; shorter than n: 0.
  np.testing.assert_allclose(out.rewards, [-0.75, 0.0, 0.0, 0.0], atol=1e-7)
  # Padded length shorter than n.
  short = _length_batch([2], 2, [0.0]).replace(
      tokens=jnp.asarray([[1, 1]], jnp.int32))
  np.testing.assert_allclose(shaping.ngram_repetition_penalty(short).rewards,
                             [0.0])
  with pytest.raises(ValueError, match="Batch.tokens"):
    shaping.ngram_repetition_penalty(batch.replace(tokens=None))
  with pytest.raises(ValueError, match="penalty"):
    shaping.ngram_repetition_penalty(batch, penalty=0.5)
  with pytest.raises(ValueError, match="n must"):
    shaping.ngram_repetition_penalty(batch, n=0)
  with pytest.raises(ValueError, match="Batch.rewards"):
    shaping.overlong_penalty(batch.replace(rewards=jnp.zeros((4, 2))))


def test_shaping_transforms_composed_in_objective():
  """Shaped rewards feed the advantage; the loss matches a NumPy pipeline."""
  batch = _with_extras(14, b=12, t=8, num_groups=3, empty_rows=())
  m = np.asarray(batch.response_mask)
  objective = divrl.build(
      "grpo", "ppo_clip", aggregation="seq-mean-token-mean",
      transforms=[{"name": "cosine_length_reward", "max_length": 6,
                   "threshold": 0.0},
                  {"name": "overlong_penalty", "max_length": 7,
                   "cache_length": 3},
                  {"name": "ngram_repetition_penalty", "n": 2},
                  {"name": "kl_in_reward", "coef": 0.1, "estimator": "k3"}])
  r = ref.cosine(_np(batch.rewards), m, 6, 0.0)
  r = r + ref.overlong(m, 7, 3, 1.0)
  r = r + ref.ngram_penalty(np.asarray(batch.tokens), m, 2, -1.0)
  r, _ = ref.kl_in_reward(r, None, m, _clean(batch.old_logprobs, m),
                          _clean(batch.ref_logprobs, m), 0.1, "k3")
  adv = nref.grpo_advantages(r, np.asarray(batch.group_ids))
  per_tok = nref.ppo_clip_token_loss(_clean(batch.logprobs, m),
                                     _clean(batch.old_logprobs, m),
                                     adv[:, None] * m)
  want = nref.finalize(*nref.aggregate(per_tok, m, "seq-mean-token-mean"))
  np.testing.assert_allclose(jax.jit(objective)(batch)[0], want, rtol=1e-4,
                             atol=1e-6)


def test_adaptive_kl_drives_kl_in_reward_under_jit():
  batch = make_batch(2, garbage=False)
  obj = divrl.build("grpo", "ppo_clip",
                    transforms=[{"name": "kl_in_reward", "coef": 0.01}])
  assert obj.coef_labels() == ("kl_in_reward",)
  ctrl = divrl.controllers.adaptive_kl(0.05, target=0.01, horizon=10)
  state = ctrl.update(ctrl.init(), jnp.asarray(1.0), 1)
  run = jax.jit(lambda b, c: obj(b, coefs={"kl_in_reward": c})[0])
  rebuilt = divrl.build("grpo", "ppo_clip", transforms=[{
      "name": "kl_in_reward", "coef": float(state.coef)}])
  np.testing.assert_allclose(run(batch, state.coef), rebuilt(batch)[0],
                             rtol=1e-6)
  assert float(run(batch, state.coef)) != float(obj(batch)[0])
  with pytest.raises(ValueError, match="unknown regularizer label"):
    obj(batch, coefs={"kl": 0.1})
