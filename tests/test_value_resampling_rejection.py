"""Critic loss, PF-PPO resampling and rollout rejection vs NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import rejection, resampling, value
from tests.conftest import make_batch


def test_clipped_value_loss_matches_loop_and_gradient():
  rng = np.random.default_rng(0)
  v, old, ret = (rng.normal(size=(4, 5)) for _ in range(3))
  loss, diag = value.clipped_value_loss(*(jnp.asarray(x, jnp.float32)
                                          for x in (v, old, ret)), clip=0.3)
  want = np.zeros_like(v)
  for i in range(4):
    for t in range(5):
      vc = old[i, t] + min(max(v[i, t] - old[i, t], -0.3), 0.3)
      want[i, t] = 0.5 * max((v[i, t] - ret[i, t]) ** 2,
                             (vc - ret[i, t]) ** 2)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  assert 0 < float(diag["clipfrac"].mean()) < 1
  g = jax.grad(lambda x: value.clipped_value_loss(
      x, jnp.asarray(old), jnp.asarray(ret), clip=None)[0].sum())(
          jnp.asarray(v))
  np.testing.assert_allclose(g, v - ret, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="clip"):
    value.clipped_value_loss(jnp.asarray(v), jnp.asarray(old),
                             jnp.asarray(ret), clip=0.0)


def test_pf_ppo_weights_and_sampling_frequencies():
  r = jnp.asarray([0.0, 1.0, -2.0, 0.5])
  np.testing.assert_allclose(resampling.pf_ppo_weights(r, power=2.0),
                             [0, 1, 4, 0.25])
  np.testing.assert_allclose(resampling.pf_ppo_weights(r, mode="max_min"),
                             [0, 1, 1, 0])
  np.testing.assert_allclose(resampling.pf_ppo_weights(r, mode="max_random"),
                             [0.1, 0.4, 0.1, 0.1])
  keys = jax.random.split(jax.random.key(0), 4000)
  idx = jax.vmap(lambda k: resampling.pf_ppo_indices(k, r))(keys).ravel()
  freq = np.bincount(np.asarray(idx), minlength=4) / idx.size
  np.testing.assert_allclose(freq, [0, 1 / 5.25, 4 / 5.25, 0.25 / 5.25],
                             atol=0.01)
  uniform = resampling.pf_ppo_indices(jax.random.key(1), jnp.zeros(4))
  assert uniform.shape == (4,)
  with pytest.raises(ValueError, match="mode"):
    resampling.pf_ppo_weights(r, mode="top")


def test_pf_ppo_transform_keeps_rows_consistent():
  batch = make_batch(0, garbage=False)
  obj = divrl.build("rloo", "ppo_clip",
                    transforms=[{"name": "pf_ppo", "mode": "max_min"}])
  out = obj.transform(divrl.objective.clean_padding(batch), jax.random.key(3))
  r = np.asarray(batch.rewards)
  kept = np.asarray(out.rewards)
  assert set(kept) <= {r.max(), r.min()}
  # Every row moved as a unit.
  for i in range(out.batch_size):
    j = int(np.flatnonzero(r == kept[i])[0])
    np.testing.assert_array_equal(out.response_mask[i],
                                  batch.response_mask[j])


def _reject_loop(d, m, criterion, lo, hi):
  b, t = d.shape
  out = np.zeros((b, t))
  level, kind = criterion.rsplit("_", 1)
  def k(x):
    return 0.5 * x * x if kind == "k2" else np.exp(x) - 1 - x
  for i in range(b):
    valid = [s for s in range(t) if m[i, s]]
    if level == "token":
      for s in valid:
        ok = (lo <= np.exp(d[i, s]) <= hi) if kind == "k1" else k(d[i, s]) <= hi
        out[i, s] = float(ok)
      continue
    if kind == "k1":
      tot = sum(d[i, s] for s in valid)
      stat = tot / max(len(valid), 1) if level == "seq_mean" else tot
      ok = lo <= np.exp(stat) <= hi
    else:
      vals = [k(d[i, s]) for s in valid] or [0.0]
      stat = {"seq_sum": sum(vals), "seq_mean": sum(vals) / max(len(valid), 1),
              "seq_max": max(vals)}[level]
      ok = stat <= hi
    for s in valid:
      out[i, s] = float(ok)
  return out


@pytest.mark.parametrize("criterion", rejection.CRITERIA)
def test_rejection_matches_loop(criterion):
  rng = np.random.default_rng(1)
  old = -rng.uniform(0.1, 2, (6, 5))
  roll = old + rng.normal(0, 0.4, (6, 5))
  m = rng.random((6, 5)) < 0.8
  lo, hi = (0.8, 1.25) if criterion.endswith("k1") else (0.0, 0.05)
  if criterion == "seq_mean_k1":
    lo, hi = 0.95, 1.05
  got = rejection.rejection_mask(jnp.asarray(old), jnp.asarray(roll),
                                 jnp.asarray(m), criterion, lo=lo, hi=hi)
  want = _reject_loop(old - roll, m, criterion, lo, hi)
  np.testing.assert_array_equal(got, want)
  assert 0 < want.sum() < m.sum()  # the criterion both keeps and rejects


def test_rejection_transform_and_errors():
  batch = make_batch(2, garbage=False)
  roll = batch.old_logprobs + 0.3 * jax.random.normal(jax.random.key(0),
                                                      batch.old_logprobs.shape)
  b = batch.replace(rollout_logprobs=roll)
  obj = divrl.build("grpo", "ppo_clip", transforms=[{
      "name": "rollout_rejection", "criteria": "token_k1,seq_max_k3",
      "lo": 0.7, "hi": 1.4}])
  out = obj.transform(b)
  keep = (rejection.rejection_mask(b.old_logprobs, roll, b.response_mask,
                                   "token_k1", lo=0.7, hi=1.4)
          * rejection.rejection_mask(b.old_logprobs, roll, b.response_mask,
                                     "seq_max_k3", lo=0.7, hi=1.4))
  np.testing.assert_array_equal(out.response_mask, keep)
  with pytest.raises(ValueError, match="rollout_logprobs"):
    obj(batch)
  with pytest.raises(ValueError, match="criterion"):
    rejection.rejection_mask(roll, roll, b.response_mask, "token_k4")
  with pytest.raises(ValueError, match="lo"):
    rejection.rejection_mask(roll, roll, b.response_mask, "token_k1", lo=2.0,
                             hi=1.0)
