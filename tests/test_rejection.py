"""Rollout rejection (divrl/rejection.py) against a NumPy loop; the transform
and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import rejection
from tests.conftest import make_batch


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
  out, _ = obj.prepare(b)
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
