"""Off-policy token weights (divrl/corrections.py): "rollout_is" and
"off_policy_sequence_mask".

Values against the loop references in ``tests/references/corrections.py`` on
the datasets of ``tests/test_surrogates.py``; the options ``batch_normalize``
(also under ``shard_map``) and ``log_ratio_clip`` of the IS weights against a
float64 loop reference written here from the formulas.
"""

import math

import jax
import numpy as np
import pytest

from divrl import corrections, registry, sharding
from tests.conftest import make_batch
from tests.references import corrections as ref
from tests.test_surrogates import (DATASETS, WEIGHT_CASES, _batch, _call,
                                   _case_id, _close, _data, _ratio_inputs, f32)


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("case", WEIGHT_CASES, ids=_case_id)
def test_token_weight_values_match_reference(case, dataset):
  name, kw, want_fn = case
  d = _data(seed=1 + hash(dataset) % 1000, **DATASETS[dataset])
  w, _ = _call("token_weight", name, _batch(d), **kw)
  _close(w, want_fn(d), d.mask)
  assert np.all(np.asarray(w)[~d.mask] == 0), "padding must get weight 0"


def test_off_policy_mask_falls_back_to_behaviour_logprobs():
  d = _data(seed=4)
  w, _ = _call("token_weight", "off_policy_sequence_mask",
               _batch(d, with_roll=False), delta=0.0)
  _close(w, ref.off_policy_sequence_mask(d.logp, d.old, d.adv, d.mask,
                                         delta=0.0), d.mask)


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
  _, o, r, _, m = _ratio_inputs(0)
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
