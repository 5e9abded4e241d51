"""Coefficient controllers and the reference mix-up (divrl/controllers.py)
against the NumPy references in ``tests/references/controllers.py``, eager
and under ``jit``/``scan``, and driving an objective's coefficients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import controllers
from tests.conftest import make_batch
from tests.references import controllers as ref


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
