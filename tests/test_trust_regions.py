"""divrl.trust_regions ("bapo", "etr", "grpo_guard") against the NumPy
references of tests/references/trust_regions.py, on ragged groups with a
singleton group, an all-equal-reward group and a padded row; the analytic
gradients (-A rho inside the clip range, 0 outside); the reduction to
ppo_clip at the identity (rho = 1) and at zero elasticity; BAPO's search
(bounds moved, c_low driven to its maximum under the code's measure, stopped
early under the gradient measure); and shard_map against one device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import registry, sharding
from divrl import trust_regions as tr
from divrl.surrogates import ppo_clip
from tests.conftest import make_batch
from tests.references import trust_regions as ref

B, T = 10, 6
# Group 2 is a singleton, group 3 has equal rewards, row 6 is padding.
GROUP_IDS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3])
REWARDS = np.array([1, 0, 0, 1, 1, 0, 0, 1, 1, 1], float)
LENGTHS = np.array([6, 3, 5, 1, 6, 4, 0, 2, 6, 5])


def _batch(seed=0, noise=0.4, on_policy=False):
  rng = np.random.default_rng(seed)
  mask = np.arange(T)[None] < LENGTHS[:, None]
  lp = -rng.uniform(0.1, 2.5, (B, T))
  old = lp if on_policy else lp + rng.normal(0, noise, lp.shape)
  f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  return divrl.Batch(
      logprobs=f(lp), response_mask=jnp.asarray(mask), rewards=f(REWARDS),
      group_ids=jnp.asarray(GROUP_IDS, jnp.int32), old_logprobs=f(old),
      num_groups=4)


def _adv(seed=0, shift=0.0, per_token=True):
  rng = np.random.default_rng(seed + 1000)
  a = rng.normal(size=(B, T)) if per_token else np.repeat(
      rng.normal(size=(B, 1)), T, 1)
  return jnp.asarray(a + shift, jnp.float32)


def _surrogate(name, **kw):
  return registry.make("surrogate", {"name": name, **kw})


def _np(x):
  return np.asarray(x, np.float64)


def _grad(part, batch, adv):
  """d sum_valid loss / d logprobs."""
  def total(lp):
    loss, _ = part(batch.replace(logprobs=lp), adv)
    return jnp.sum(jnp.where(batch.mask > 0, loss, 0.0))
  return jax.grad(total)(batch.logprobs)


def _check(got, want, mask, rtol=1e-5, atol=1e-6):
  m = np.asarray(mask) > 0
  np.testing.assert_allclose(_np(got)[m], want[m], rtol=rtol, atol=atol)
  assert np.all(_np(got)[~m] == 0)


# --- BAPO -------------------------------------------------------------------


BAPO_CASES = [
    dict(shift=0.0), dict(shift=-0.05), dict(shift=-0.1), dict(shift=-0.6),
    dict(shift=0.0, measure="gradient"), dict(shift=-0.1, measure="gradient"),
    dict(shift=-0.2, target_share=0.4, upper_max=2.0, lower_max=0.8),
    dict(shift=0.3, target_share=0.6, clip_ratio_c=None),
]


@pytest.mark.parametrize("case", BAPO_CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_bapo_bounds_loss_and_gradient_match_reference(case, seed):
  kw = dict(case)
  shift = kw.pop("shift")
  b, adv = _batch(seed, noise=0.8), _adv(seed, shift)
  part = _surrogate("bapo", **kw)
  loss, diag = part(b, adv)
  want, want_grad, (low, high) = ref.bapo(b.logprobs, b.old_logprobs, adv,
                                          b.mask, **kw)
  assert float(diag["clip_low"][0, 0]) == pytest.approx(low, abs=1e-6)
  assert float(diag["clip_high"][0, 0]) == pytest.approx(high, abs=1e-6)
  _check(loss, want, b.mask)
  _check(_grad(part, b, adv), want_grad, b.mask)


def test_bapo_search_moves_the_bounds_and_reaches_the_target():
  b = _batch(1, noise=0.8)
  found = []
  for shift in (0.0, -0.05, -0.1, -0.3):
    _, diag = _surrogate("bapo")(b, _adv(1, shift))
    low, high = float(diag["clip_low"][0, 0]), float(diag["clip_high"][0, 0])
    share = float(diag["positive_share"][0, 0])
    found.append((low, high))
    assert share >= 0.5 or high == pytest.approx(3.0)
    # Under the code's measure c_low only raises N: a failed start always
    # ends with c_low at its maximum, then c_high moves.
    assert (low, high) == pytest.approx((0.6, 1.2)) or low == pytest.approx(
        0.9)
  assert found[0] == pytest.approx((0.6, 1.2))
  assert 1.2 < found[1][1] < found[2][1] < 3.0, found
  assert found[3] == pytest.approx((0.9, 3.0))


def _gradient_case():
  # One positive token (rho 1); negative tokens with rho 0.62 ... 0.95.
  rhos = np.array([[1.0, 0.62, 0.67, 0.72, 0.77, 0.95]])
  adv = np.array([[1.0, -1.0, -1.0, -1.0, -1.0, -1.0]])
  old = -np.ones((1, 6))
  f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  b = divrl.Batch(logprobs=f(old + np.log(rhos)), old_logprobs=f(old),
                  response_mask=jnp.ones((1, 6), bool), rewards=f([1.0]),
                  group_ids=jnp.zeros(1, jnp.int32), num_groups=1)
  return b, f(adv)


def test_bapo_gradient_measure_stops_c_low_early_the_loss_measure_does_not():
  b, adv = _gradient_case()
  _, diag = _surrogate("bapo", measure="gradient")(b, adv)
  # c_low = 0.8 removes every negative token with rho < 0.8: N = 0.95 < P.
  assert float(diag["clip_low"][0, 0]) == pytest.approx(0.8)
  assert float(diag["clip_high"][0, 0]) == pytest.approx(1.2)
  assert ref.bapo_search(b.logprobs, b.old_logprobs, adv, b.mask,
                         measure="gradient") == pytest.approx((0.8, 1.2))
  _, diag = _surrogate("bapo")(b, adv)
  # The code's measure: N = sum max(rho, c_low) never falls; P = 1 is
  # capped by rho itself, so nothing passes and the last bounds are taken.
  assert float(diag["clip_low"][0, 0]) == pytest.approx(0.9)
  assert float(diag["clip_high"][0, 0]) == pytest.approx(3.0)
  assert float(diag["positive_share"][0, 0]) < 0.5


def test_bapo_dual_clip_caps_negative_tokens_without_gradient():
  old = jnp.zeros((1, 3))
  lp = jnp.log(jnp.asarray([[4.0, 0.5, 1.0]]))
  adv = jnp.asarray([[-2.0, -1.0, 1.0]])
  loss, _ = tr.bapo(lp, old, adv, jnp.ones((1, 3)))
  g = jax.grad(lambda x: jnp.sum(tr.bapo(x, old, adv, jnp.ones((1, 3)))[0]))(
      lp)
  assert float(loss[0, 0]) == pytest.approx(6.0)  # 3 |A|, not 4 |A|
  assert float(g[0, 0]) == 0.0
  assert float(g[0, 2]) == pytest.approx(-1.0)    # inside: -A rho


def test_search_path_is_the_sequential_loop():
  lows, highs, li, hi = tr.search_path(0.6, 0.8, 0.05, 1.2, 1.3, 0.07)
  np.testing.assert_allclose(lows, [0.6, 0.65, 0.7, 0.75, 0.8])
  np.testing.assert_allclose(highs, [1.2, 1.27, 1.3])
  np.testing.assert_array_equal(li, [0, 1, 2, 3, 4, 4, 4])
  np.testing.assert_array_equal(hi, [0, 0, 0, 0, 0, 1, 2])


# --- ETR --------------------------------------------------------------------


ETR_CASES = [dict(), dict(adv_coef=1.5, var_coef=0.0),
             dict(adv_coef=0.0, var_coef=1.0, max_scale=3.0),
             dict(clip_ratio_c=2.0, eps_high=0.28, min_scale=0.2)]


@pytest.mark.parametrize("case", ETR_CASES)
@pytest.mark.parametrize("per_token", [True, False])
def test_etr_scale_loss_and_gradient_match_reference(case, per_token):
  b, adv = _batch(2), _adv(2, 0.1, per_token)
  part = _surrogate("etr", **case)
  loss, diag = part(b, adv)
  want, want_grad, f = ref.etr(b.logprobs, b.old_logprobs, adv, b.mask,
                               b.rewards, GROUP_IDS, **case)
  _check(diag["clip_scale"], f, b.mask)
  _check(loss, want, b.mask)
  _check(_grad(part, b, adv), want_grad, b.mask)
  m = np.asarray(b.mask) > 0
  assert np.ptp(_np(diag["clip_scale"])[m]) > 0.1  # really elastic


def test_etr_scale_grows_with_advantage_and_group_variance():
  b = _batch(3)
  adv = jnp.ones((B, T))
  f = _np(tr.etr_clip_scale(adv, b.mask, b.rewards, b.group_ids, 4))
  # Same |A|: group 0 (rewards 1,0,0,1: sigma 1/2) beats group 1 (valid
  # rows 1,0: sigma 1/2, equal) and the equal-reward group 3 (sigma 0).
  assert f[0, 0] == pytest.approx(f[4, 0])
  assert f[0, 0] > f[8, 0] > 0
  adv = adv.at[0].set(3.0)
  f2 = _np(tr.etr_clip_scale(adv, b.mask, b.rewards, b.group_ids, 4))
  assert f2[0, 0] > f2[2, 0]


def test_etr_padded_row_does_not_change_other_rows():
  b, adv = _batch(4), _adv(4)
  loss, _ = _surrogate("etr")(b, adv)
  # Row 6 is padding with reward 0: changing its reward changes nothing.
  b2 = b.replace(rewards=b.rewards.at[6].set(7.0))
  loss2, _ = _surrogate("etr")(b2, adv)
  np.testing.assert_array_equal(loss, loss2)
  assert np.all(_np(loss)[6] == 0)


def test_etr_without_elasticity_is_ppo_clip():
  b, adv = _batch(5), _adv(5)
  loss, _ = _surrogate("etr", adv_coef=0.0, var_coef=0.0,
                       clip_ratio_c=3.0)(b, adv)
  want, _ = ppo_clip(b.logprobs, b.old_logprobs, adv, clip_ratio_c=3.0)
  m = np.asarray(b.mask) > 0
  np.testing.assert_array_equal(_np(loss)[m], _np(want)[m])


# --- GRPO-Guard ---------------------------------------------------------------


@pytest.mark.parametrize("level", ["position", "sequence", "batch"])
@pytest.mark.parametrize("rescale", [True, False])
def test_guard_loss_and_gradient_match_reference(level, rescale):
  b, adv = _batch(6, noise=0.5), _adv(6)
  part = _surrogate("grpo_guard", level=level, rescale=rescale)
  loss, diag = part(b, adv)
  want, want_grad, z = ref.grpo_guard(b.logprobs, b.old_logprobs, adv,
                                      b.mask, level=level, rescale=rescale)
  _check(jnp.where(b.mask > 0, jnp.log(diag["ratio"]), 0.0), z, b.mask,
         atol=2e-6)
  _check(loss, want, b.mask)
  _check(_grad(part, b, adv), want_grad, b.mask)


def test_guard_positions_are_centred_with_one_spread():
  b = _batch(7, noise=0.6)
  d = b.logprobs - b.old_logprobs
  z = _np(tr.normalized_log_ratio(d, b.mask))
  m = np.asarray(b.mask) > 0
  pooled = []
  for t in range(T):
    col = z[m[:, t], t]
    assert abs(col.mean()) < 1e-5
    if col.size > 1:
      pooled.append(col.std())
  np.testing.assert_allclose(pooled, pooled[0], rtol=1e-4)
  raw = _np(d)
  centred = np.concatenate([raw[m[:, t], t] - raw[m[:, t], t].mean()
                            for t in range(T)])
  assert pooled[0] == pytest.approx(centred.std(), rel=1e-4)


def test_guard_removes_a_uniform_drift_of_the_ratio():
  # Every ratio is 0.7 (a left-shifted ratio): PPO clips the negative
  # tokens (no gradient); after recentring the guard is on-policy PPO.
  b, adv = _batch(8, on_policy=True), _adv(8)
  drift = b.replace(old_logprobs=b.logprobs - jnp.log(0.7))
  g_guard = _grad(_surrogate("grpo_guard"), drift, adv)
  g_on = _grad(_surrogate("ppo_clip"), b, adv)
  m = np.asarray(b.mask) > 0
  np.testing.assert_allclose(_np(g_guard)[m], _np(-adv)[m], rtol=1e-6)
  np.testing.assert_allclose(_np(g_guard)[m], _np(g_on)[m], rtol=1e-6)
  g_ppo = _np(_grad(_surrogate("ppo_clip"), drift, adv))
  assert np.all(g_ppo[m & (_np(adv) < 0)] == 0)


# --- All three ----------------------------------------------------------------


NAMES = ["bapo", "etr", "grpo_guard"]


@pytest.mark.parametrize("name", NAMES)
def test_identity_is_ppo_clip_in_value_and_gradient(name):
  b, adv = _batch(9, on_policy=True), _adv(9, -0.7)
  loss, _ = _surrogate(name)(b, adv)
  want, _ = ppo_clip(b.logprobs, b.old_logprobs, adv)
  _check(loss, _np(want), b.mask, rtol=1e-6)
  _check(_grad(_surrogate(name), b, adv), -_np(adv), b.mask, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_objective_with_garbage_padding_is_finite(name):
  batch = make_batch(3, b=12)  # NaN / inf in padded log-probs
  objective = divrl.from_config({"advantage": "grpo", "surrogate": name,
                                 "aggregation": "token-mean"})

  def loss(lp):
    return objective(batch.replace(logprobs=lp))[0]

  value, grad = jax.jit(jax.value_and_grad(loss))(batch.logprobs)
  assert np.isfinite(float(value))
  m = np.asarray(batch.response_mask)
  assert np.all(np.isfinite(_np(grad))) and np.all(_np(grad)[~m] == 0)
  assert np.any(_np(grad)[m] != 0)


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("data",))


SHARDED = [("bapo", {}), ("bapo", {"measure": "gradient"}), ("etr", {}),
           ("grpo_guard", {}), ("grpo_guard", {"level": "sequence"})]


@pytest.mark.parametrize("name,kw", SHARDED)
def test_shard_map_equals_single_device(mesh, name, kw):
  batch = make_batch(5, b=16, num_groups=5, garbage=False)
  adv = jnp.asarray(np.random.default_rng(5).normal(size=(16, 7)) - 0.8,
                    jnp.float32)
  batch = batch.replace(advantages=adv)
  part = _surrogate(name, **kw)
  keys = {"bapo": ("clip_low", "clip_high"), "etr": ("clip_scale",),
          "grpo_guard": ("ratio",)}[name]

  def run(b, axis_name=None):
    loss, diag = part(b, b.advantages, axis_name=axis_name)
    return (loss,) + tuple(diag[k] for k in keys)

  want = run(batch)
  spec = sharding.batch_spec(batch)
  fn = jax.shard_map(functools.partial(run, axis_name="data"), mesh=mesh,
                     in_specs=(spec,),
                     out_specs=(P("data", None),) * (1 + len(keys)))
  got = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
  if name == "bapo":  # the search did move: a non-trivial global decision
    assert float(want[1][0, 0]) > 0.6 or float(want[2][0, 0]) > 1.2


# --- Bad hyperparameters ------------------------------------------------------


@pytest.mark.parametrize("name,kw,arg", [
    ("bapo", {"target_share": 1.5}, "target_share"),
    ("bapo", {"lower_start": -0.1}, "lower_start"),
    ("bapo", {"lower_max": 0.5}, "lower_max"),
    ("bapo", {"upper_start": 0.9}, "upper_start"),
    ("bapo", {"upper_max": 1.1}, "upper_max"),
    ("bapo", {"lower_step": 0.0}, "lower_step"),
    ("bapo", {"upper_step": -0.05}, "upper_step"),
    ("bapo", {"measure": "grad"}, "measure"),
    ("bapo", {"clip_ratio_c": 1.0}, "clip_ratio_c"),
    ("bapo", {"log_ratio_clip": 0.0}, "log_ratio_clip"),
    ("etr", {"eps_low": -0.1}, "eps_low"),
    ("etr", {"adv_coef": -1.0}, "adv_coef"),
    ("etr", {"var_coef": -0.5}, "var_coef"),
    ("etr", {"min_scale": 1.5}, "min_scale"),
    ("etr", {"max_scale": 0.5}, "max_scale"),
    ("etr", {"clip_ratio_c": 0.5}, "clip_ratio_c"),
    ("grpo_guard", {"level": "token"}, "level"),
    ("grpo_guard", {"eps_high": -1.0}, "eps_high"),
    ("grpo_guard", {"clip_ratio_c": 1.0}, "clip_ratio_c"),
])
def test_bad_hyperparameters_raise(name, kw, arg):
  b, adv = _batch(0), _adv(0)
  with pytest.raises(ValueError, match=arg):
    _surrogate(name, **kw)(b, adv)


def test_etr_needs_scalar_rewards():
  b, adv = _batch(0), _adv(0)
  b = b.replace(rewards=jnp.stack([b.rewards, b.rewards], 1))
  with pytest.raises(ValueError, match="rewards"):
    _surrogate("etr")(b, adv)
