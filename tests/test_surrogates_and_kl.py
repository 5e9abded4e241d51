"""PPO clip and KL estimators against the NumPy references; gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divrl import divergences, surrogates
from tests import numpy_reference as ref


def _inputs(seed=0, b=5, t=6, gap=1.0):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0.1, 3, size=(b, t))
  old = logp + rng.normal(0, gap, size=(b, t))
  adv = rng.normal(size=(b, t))
  return logp, old, adv


@pytest.mark.parametrize("eps_low,eps_high,clip", [(0.2, 0.2, 20.0),
                                                   (0.2, 0.28, 20.0),
                                                   (0.1, 0.5, None),
                                                   (0.2, 0.2, 0.5)])
def test_ppo_clip_matches_reference(eps_low, eps_high, clip):
  logp, old, adv = _inputs()
  loss, diag = surrogates.ppo_clip(
      jnp.asarray(logp, jnp.float32), jnp.asarray(old, jnp.float32),
      jnp.asarray(adv, jnp.float32), eps_low=eps_low, eps_high=eps_high,
      log_ratio_clip=clip)
  kw = dict(eps_low=eps_low, eps_high=eps_high, log_ratio_clip=clip)
  np.testing.assert_allclose(loss, ref.ppo_clip_token_loss(logp, old, adv, **kw),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(diag["clipfrac"],
                             ref.ppo_clip_fraction(logp, old, adv, **kw))
  assert 0 < float(np.mean(diag["clipfrac"])) < 1  # both branches exercised


def test_ppo_clip_gradient():
  logp, old, adv = (jnp.asarray(x, jnp.float32) for x in _inputs(gap=0.5))
  g = jax.grad(lambda l: jnp.sum(surrogates.ppo_clip(l, old, adv)[0]))(logp)
  rho = jnp.exp(logp - old)
  clipped = surrogates.ppo_clip(logp, old, adv)[1]["clipfrac"] > 0
  np.testing.assert_allclose(g, jnp.where(clipped, 0.0, -adv * rho),
                             rtol=1e-5, atol=1e-6)
  # On-policy the gradient is -A (the REINFORCE gradient).
  g0 = jax.grad(lambda l: jnp.sum(surrogates.ppo_clip(
      l, jax.lax.stop_gradient(l), adv)[0]))(logp)
  np.testing.assert_allclose(g0, -adv, rtol=1e-6)


def test_ppo_clip_rejects_negative_eps():
  x = jnp.zeros((1, 1))
  with pytest.raises(ValueError, match="eps_low"):
    surrogates.ppo_clip(x, x, x, eps_low=-0.1)


@pytest.mark.parametrize("estimator", ["k1", "abs", "k2", "k3"])
def test_kl_estimates_match_reference(estimator):
  logp, refl, _ = _inputs(seed=3, gap=2.0)
  got = divergences.kl_estimate(jnp.asarray(logp, jnp.float32),
                                jnp.asarray(refl, jnp.float32), estimator)
  np.testing.assert_allclose(got, ref.kl_estimate(logp, refl, estimator),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["k1", "abs", "k2", "k3"])
def test_straight_through_kl_has_value_of_base_and_gradient_of_k2(estimator):
  logp, refl, _ = (jnp.asarray(x, jnp.float32) for x in _inputs(seed=4))
  plus = lambda l: divergences.kl_estimate(l, refl, estimator + "+")
  np.testing.assert_allclose(plus(logp),
                             divergences.kl_estimate(logp, refl, estimator),
                             rtol=1e-6)
  g_plus = jax.grad(lambda l: jnp.sum(plus(l)))(logp)
  np.testing.assert_allclose(g_plus, logp - refl, rtol=1e-5, atol=1e-6)


def test_kl_gradients_per_token():
  logp, refl, _ = (jnp.asarray(x, jnp.float32) for x in _inputs(seed=5))
  grad = lambda e: jax.grad(lambda l: jnp.sum(
      divergences.kl_estimate(l, refl, e)))(logp)
  np.testing.assert_allclose(grad("k1"), jnp.ones_like(logp))
  np.testing.assert_allclose(grad("k2"), logp - refl, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad("k3"), 1 - jnp.exp(refl - logp), rtol=1e-5,
                             atol=1e-6)


def test_unknown_estimator_named():
  x = jnp.zeros((1, 1))
  with pytest.raises(ValueError, match="estimator"):
    divergences.kl_estimate(x, x, "k4")
