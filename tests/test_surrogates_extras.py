"""Options of "rollout_is" and "bypass_reinforce" not covered elsewhere.

``batch_normalize`` (also under ``shard_map``), ``log_ratio_clip`` of the IS
weights, and the sequence-level truncated weight of bypass REINFORCE, against
float64 loop references written here from the formulas.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divrl import corrections, registry, sharding, surrogates
from tests.conftest import make_batch

f32 = lambda x: jnp.asarray(x, jnp.float32)


def _data(seed, b=8, t=6, gap=0.4):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[-1] = 0
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float64)
  l = -rng.uniform(0.05, 3.0, size=(b, t))
  o = l + rng.normal(0, gap, size=(b, t))
  r = o + rng.normal(0, gap, size=(b, t))
  a = rng.normal(size=(b, t))
  r32 = lambda x: np.asarray(np.asarray(x, np.float32), np.float64)
  return r32(l), r32(o), r32(r), r32(a), mask


def _ref_is(o, r, mask, *, level, mode, threshold=2.0, lo=0.5, hi=5.0,
            clip=20.0, normalize=False):
  """w = exp(clamp(o - r)) per token or exp(clamp(sum_t (o - r))) per row;
  truncate: min(w, C); mask: w in [lo, hi] else 0; padding 0; normalize by
  the mean over valid tokens (token) or valid rows (sequence) if > 1e-8."""
  b, t = o.shape
  cl = (lambda x: x) if clip is None else (lambda x: min(max(x, -clip), clip))
  w = np.zeros((b, t))
  row_w = []
  for i in range(b):
    ts = [j for j in range(t) if mask[i, j] > 0]
    seq = math.exp(cl(sum(o[i, j] - r[i, j] for j in ts)))
    for j in ts:
      x = seq if level == "sequence" else math.exp(cl(o[i, j] - r[i, j]))
      if mode == "truncate":
        w[i, j] = min(x, threshold)
      else:
        w[i, j] = x if lo <= x <= hi else 0.0
    if ts:
      row_w.append(w[i, ts[0]])
  if normalize:
    vals = ([w[i, j] for i in range(b) for j in range(t) if mask[i, j] > 0]
            if level == "token" else row_w)
    mean = sum(vals) / max(len(vals), 1)
    if mean > 1e-8:
      w = w / mean
  return w


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("kw", [
    {"normalize": True}, {"mode": "mask", "normalize": True},
    {"clip": 0.3, "threshold": 1e6}, {"clip": None, "threshold": 1.5}])
def test_rollout_is_options(level, kw):
  _, o, r, _, m = _data(0)
  kw = {"mode": "truncate", **kw}
  got = corrections.rollout_is_weights(
      f32(o), f32(r), f32(m), level=level, mode=kw["mode"],
      threshold=kw.get("threshold", 2.0),
      log_ratio_clip=kw.get("clip", 20.0),
      batch_normalize=kw.get("normalize", False))
  want = _ref_is(o, r, m, level=level, **kw)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5,
                             atol=1e-7)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_rollout_is_batch_normalize_sharded_equals_single_device(level):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh((8,), ("data",))
  batch = make_batch(3, b=16, garbage=False)
  batch = batch.replace(rollout_logprobs=batch.old_logprobs + 0.1 * (
      batch.logprobs - batch.old_logprobs))
  fn = registry.make("token_weight", {"name": "rollout_is", "level": level,
                                      "batch_normalize": True})
  want = fn(batch, batch.logprobs)
  spec = sharding.batch_spec(batch)
  got = jax.jit(jax.shard_map(
      lambda b: fn(b, b.logprobs, axis_name="data"), mesh=mesh,
      in_specs=(spec,), out_specs=spec.logprobs))(
          sharding.shard_batch(batch, mesh))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  m = np.asarray(batch.mask) > 0
  assert not np.allclose(np.asarray(want)[m], 1.0)


def test_bypass_reinforce_sequence_level_value_and_gradient():
  l, _, r, a, m = _data(1, gap=0.2)
  b, t = l.shape
  w = np.zeros((b, t))
  for i in range(b):
    ts = [j for j in range(t) if m[i, j] > 0]
    s = math.exp(min(max(sum(l[i, j] - r[i, j] for j in ts), -20.0), 20.0))
    for j in ts:
      w[i, j] = min(s, 1.1)
  fn = lambda x: surrogates.bypass_reinforce(x, f32(r), f32(a), f32(m),
                                             level="sequence",
                                             max_ratio=1.1)[0]
  v = m > 0
  np.testing.assert_allclose(np.asarray(fn(f32(l)))[v], (-w * a * l)[v],
                             rtol=1e-5)
  g = jax.grad(lambda x: jnp.sum(jnp.where(f32(m) > 0, fn(x), 0.0)))(f32(l))
  np.testing.assert_allclose(np.asarray(g)[v], (-w * a)[v], rtol=1e-5)
  assert 0 < np.mean(w[v] == 1.1) < 1  # truncation binds on some rows
