"""divrl.alternatives (ROVER, NFT, REC, AsymRE) against NumPy references
written here, and the identities: NFT is GRPO without the std up to the
per-prompt factor 1 / (1 - accuracy) on-policy; ROVER on-policy is
REINFORCE with 2 rho A; REC's kept tokens get PPO clip's gradient over the
ratio."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import alternatives as alt
from divrl import registry

B, T = 8, 5


def _batch(seed=0, rewards=None, on_policy=False):
  rng = np.random.default_rng(seed)
  lengths = np.array([5, 3, 4, 1, 5, 2, 5, 4])
  mask = np.arange(T)[None] < lengths[:, None]
  lp = -rng.uniform(0.1, 2.0, (B, T))
  old = lp if on_policy else lp + rng.normal(0, 0.3, lp.shape)
  vm = -rng.uniform(2.0, 4.0, (B, T))
  r = (np.array([1, 0, 1, 1, 0, 1, 0, 0], float) if rewards is None
       else np.asarray(rewards, float))
  f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  return divrl.Batch(
      logprobs=f(lp), response_mask=jnp.asarray(mask), rewards=f(r),
      group_ids=jnp.asarray(np.arange(B) // 4, jnp.int32),
      old_logprobs=f(old), vocab_mean_logprob=f(vm),
      old_vocab_mean_logprob=f(vm if on_policy
                               else vm + rng.normal(0, 0.2, vm.shape)),
      num_groups=2)


def _surrogate(name, **kw):
  return registry.make("surrogate", {"name": name, **kw})


def _token_grad(loss_fn, batch):
  """d sum_tokens loss / d logprobs (padding masked)."""
  m = batch.mask
  return jax.grad(lambda lp: jnp.sum(loss_fn(batch.replace(logprobs=lp))
                                     * m))(batch.logprobs)


# --- NFT --------------------------------------------------------------------


def test_nft_values_match_numpy():
  b = _batch(1)
  got = np.asarray(_surrogate("nft", negative_weight=0.7)(b, None))
  lp, old = np.asarray(b.logprobs, np.float64), np.asarray(b.old_logprobs,
                                                           np.float64)
  r = np.asarray(b.rewards)
  acc = np.repeat([r[:4].mean(), r[4:].mean()], 4)
  acc = np.clip(acc, 0.02, 0.98)[:, None]
  big_r = np.exp(np.minimum(lp - old, 10.0))
  want = np.where(r[:, None] > 0, -np.log(big_r),
                  0.7 * -np.log((1 - acc * big_r) / (1 - acc)))
  m = np.asarray(b.response_mask)
  np.testing.assert_allclose(got[m], want[m], rtol=1e-5, atol=1e-6)


def test_nft_is_dr_grpo_over_one_minus_accuracy_on_policy():
  b = _batch(2, on_policy=True)
  nft = _token_grad(lambda x: _surrogate("nft")(x, None), b)
  adv = registry.make("advantage", "dr_grpo")(b)
  pg = _token_grad(lambda x: _surrogate("reinforce")(x, adv), b)
  r = np.asarray(b.rewards)
  acc = np.repeat([r[:4].mean(), r[4:].mean()], 4)
  np.testing.assert_allclose(nft, np.asarray(pg) / (1 - acc)[:, None],
                             rtol=1e-5, atol=1e-6)


# --- ROVER ------------------------------------------------------------------


def test_rover_values_match_numpy():
  b = _batch(3)
  adv = np.random.default_rng(0).normal(size=B)
  a = jnp.asarray(np.repeat(adv[:, None], T, 1), jnp.float32) * b.mask
  got = np.asarray(_surrogate("rover", temperature=0.5)(b, a))
  lp, old = np.asarray(b.logprobs), np.asarray(b.old_logprobs)
  vm, ovm = np.asarray(b.vocab_mean_logprob), np.asarray(
      b.old_vocab_mean_logprob)
  m = np.asarray(b.response_mask)
  want = np.zeros((B, T))
  for i in range(B):
    for t in range(T):
      if not m[i, t]:
        continue
      nxt = 0.0
      if t + 1 < T and m[i, t + 1]:
        nxt = 0.5 * (vm[i, t + 1] - ovm[i, t + 1])
      q = 0.5 * (lp[i, t] - old[i, t])
      want[i, t] = (q - (adv[i] + nxt)) ** 2
  np.testing.assert_allclose(got[m], want[m], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_rover_on_policy_is_reinforce_with_two_rho_a(temperature):
  b = _batch(4, on_policy=True)
  adv = registry.make("advantage", "dr_grpo")(b)
  rover = _token_grad(lambda x: _surrogate(
      "rover", temperature=temperature)(x, adv), b)
  pg = _token_grad(lambda x: _surrogate("reinforce")(x, adv), b)
  np.testing.assert_allclose(rover, 2 * temperature * np.asarray(pg),
                             rtol=1e-5, atol=1e-6)


# --- REC / AsymRE -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "one_side", "two_side", "ring"])
def test_rec_masks_and_gradients(mode):
  b = _batch(5)
  adv = jnp.asarray(np.random.default_rng(1).normal(size=(B, T)),
                    jnp.float32) * b.mask
  ring = dict(ring_low=0.3, ring_high=0.3) if mode == "ring" else {}
  got = _token_grad(lambda x: _surrogate("rec", mode=mode, **ring)(x, adv),
                    b)
  rho = np.exp(np.asarray(b.logprobs) - np.asarray(b.old_logprobs))
  a = np.asarray(adv)
  if mode == "none":
    keep = np.ones_like(rho, bool)
  elif mode == "one_side":
    keep = ~(((a > 0) & (rho > 1.2)) | ((a < 0) & (rho < 0.8)))
  elif mode == "two_side":
    keep = (rho >= 0.8) & (rho <= 1.2)
  else:   # the band, and the far side each sign's update moves back from
    keep = (((rho >= 0.8) & (rho <= 1.2)) | ((a >= 0) & (rho <= 0.7))
            | ((a <= 0) & (rho >= 1.3)))
  m = np.asarray(b.response_mask)
  if mode == "ring":   # both extra arms are exercised, and the gap between
    band = (rho >= 0.8) & (rho <= 1.2)
    assert (m & ~band & keep).any() and (m & ~keep).any()
  np.testing.assert_allclose(np.asarray(got)[m], np.where(keep, -a, 0.0)[m],
                             rtol=1e-5, atol=1e-6)
  if mode == "one_side":
    # Kept tokens: PPO clip's gradient -A rho divided by rho.
    ppo = _token_grad(lambda x: _surrogate("ppo_clip")(x, adv)[0], b)
    np.testing.assert_allclose(np.asarray(ppo)[m & keep] / rho[m & keep],
                               np.asarray(got)[m & keep], rtol=1e-4,
                               atol=1e-6)
    assert (~keep & m).any() and (keep & m).any()


def test_rec_proximal_term_and_bad_mode():
  b = _batch(6)
  adv = jnp.zeros((B, T))
  got = np.asarray(_surrogate("rec", tau=0.4)(b, adv))
  d = np.asarray(b.logprobs) - np.asarray(b.old_logprobs)
  m = np.asarray(b.response_mask)
  np.testing.assert_allclose(got[m], (0.2 * d * d)[m], rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="mode"):
    _surrogate("rec", mode="rings")(b, adv)


def test_asymre_shifts_the_group_mean_baseline():
  b = _batch(7)
  got = np.asarray(registry.make("advantage", {"name": "asymre",
                                               "shift": 0.25})(b))
  r = np.asarray(b.rewards)
  mean = np.repeat([r[:4].mean(), r[4:].mean()], 4)
  m = np.asarray(b.response_mask)
  np.testing.assert_allclose(got, ((r - mean + 0.25)[:, None]) * m,
                             rtol=1e-6, atol=1e-7)
  zero = np.asarray(registry.make("advantage", {"name": "asymre",
                                                "shift": 0.0})(b))
  np.testing.assert_allclose(zero, registry.make("advantage", "dr_grpo")(b),
                             rtol=1e-6, atol=1e-7)
  assert alt.REC_MASKS == ("none", "one_side", "two_side", "ring")
