"""divrl.entropy_masks (SIREN, STEER, D3S, entropy-based advantage shaping)
against NumPy references written here from the papers' formulas, plus the
D3S extremes identity by brute force over all subsets."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import entropy_masks as em
from divrl import registry

B, T = 8, 6


def _batch(seed=0, **extra):
  rng = np.random.default_rng(seed)
  lengths = np.array([6, 3, 1, 5, 6, 2, 4, 6])
  mask = np.arange(T)[None] < lengths[:, None]
  f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  lp = -rng.uniform(0.05, 3.0, (B, T))
  return divrl.Batch(
      logprobs=f(lp), response_mask=jnp.asarray(mask),
      rewards=f(rng.integers(0, 2, B)),
      group_ids=jnp.asarray(np.arange(B) // 4, jnp.int32),
      old_logprobs=f(lp + rng.normal(0, 0.2, lp.shape)),
      entropy=f(rng.uniform(0.0, 3.0, (B, T))),
      top_p_entropy=f(rng.uniform(0.0, 2.0, (B, T))), num_groups=2, **extra)


def np_row_quantile(values, mask, q):
  out = []
  for v, m in zip(np.asarray(values), np.asarray(mask)):
    out.append(np.quantile(v[m], q) if m.any() else 0.0)
  return np.array(out)


# --- SIREN ------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.5, 0.8, 1.0])
def test_row_quantile_matches_numpy(q):
  b = _batch(1)
  got = em.row_quantile(b.entropy, b.mask, q)
  np.testing.assert_allclose(got, np_row_quantile(b.entropy,
                                                  b.response_mask, q),
                             rtol=1e-6, atol=1e-6)


def _np_h_sel(h, mask, q):
  h, mask = np.asarray(h, np.float64), np.asarray(mask)
  thr = np_row_quantile(h, mask, q)
  rows = []
  for i in range(h.shape[0]):
    sel = mask[i] & (h[i] > thr[i])
    if sel.any():
      rows.append(h[i][sel].mean())
  return np.mean(rows), thr


def test_peak_mask_and_selected_entropy_match_numpy():
  b = _batch(2)
  sel = em.peak_entropy_mask(b.top_p_entropy, b.mask, 0.8)
  want, thr = _np_h_sel(b.top_p_entropy, b.response_mask, 0.8)
  np.testing.assert_array_equal(
      np.asarray(sel) > 0, np.asarray(b.response_mask)
      & (np.asarray(b.top_p_entropy) > thr[:, None]))
  np.testing.assert_allclose(em.selected_entropy(b.top_p_entropy, sel), want,
                             rtol=1e-6)


def test_siren_anchor_value_and_gradient():
  b = _batch(3)
  objective = divrl.build("grpo", "reinforce", regularizers=[
      divrl.regularizer({"name": "siren", "coef": 0.005})],
                          aggregation="token-mean")
  carry = objective.init_carry()
  prepared, carry = objective.prepare(b, carry=carry)
  h_sel, _ = _np_h_sel(b.top_p_entropy, b.response_mask, 0.8)
  np.testing.assert_allclose(carry["regularizers[siren]"]["anchor"], h_sel,
                             rtol=1e-6)
  # A later batch (another policy): penalty (H_sel' - anchor)^2 exactly,
  # under token-mean, with the analytic gradient in the top-p entropy.
  b2 = _batch(4)
  h2, thr2 = _np_h_sel(b2.top_p_entropy, b2.response_mask, 0.8)
  p2, carry2 = objective.prepare(b2, carry=carry)
  assert float(carry2["regularizers[siren]"]["anchor"]) == pytest.approx(
      h_sel, rel=1e-6)

  def reg(h):
    _, metrics = objective(p2.replace(top_p_entropy=h), carry=carry2)
    return metrics["regularizer/siren"]

  value, grad = jax.value_and_grad(reg)(b2.top_p_entropy)
  np.testing.assert_allclose(value, (h2 - h_sel) ** 2, rtol=1e-5)
  h, m = np.asarray(b2.top_p_entropy), np.asarray(b2.response_mask)
  sel = m & (h > thr2[:, None])
  rows = sel.any(1)
  want = 2 * (h2 - h_sel) * sel / np.maximum(sel.sum(1, keepdims=True),
                                              1) / rows.sum()
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-7)


# --- STEER ------------------------------------------------------------------


def _np_steer(b, adv, w_min=0.8, w_max=1.2, mode="linear", k=1.0):
  lp = np.asarray(b.logprobs, np.float64)
  old = np.asarray(b.old_logprobs, np.float64)
  h = np.asarray(b.entropy, np.float64)
  p = np.exp(lp)
  omega = np.abs(adv / np.exp(old) * p * (1 - p) * (lp + h))
  m = np.asarray(b.response_mask)
  if mode == "exp":
    return np.where(m, np.clip(np.exp(-k * omega), w_min, 1.0), 0.0), omega
  lo, hi = omega[m].min(), omega[m].max()
  w = w_max - (omega - lo) * (w_max - w_min) / (hi - lo)
  return np.where(m, np.clip(w, w_min, w_max), 0.0), omega


@pytest.mark.parametrize("mode", ["linear", "exp"])
def test_steer_weights_match_numpy(mode):
  b = _batch(5)
  adv = np.random.default_rng(0).normal(size=(B, T))
  part = registry.make("token_weight", {"name": "steer", "mode": mode})
  got = np.asarray(part(b, jnp.asarray(adv, jnp.float32)))
  want, omega = _np_steer(b, adv, mode=mode)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  if mode == "linear":
    m = np.asarray(b.response_mask)
    flat = np.where(m, omega, np.nan)
    assert got.flat[np.nanargmax(flat)] == pytest.approx(0.8, rel=1e-5)
    assert got.flat[np.nanargmin(flat)] == pytest.approx(1.2, rel=1e-5)


# --- D3S --------------------------------------------------------------------


def _brute_max_var(values, k):
  best = -1.0
  for s in itertools.combinations(range(len(values)), k):
    best = max(best, float(np.var(values[list(s)])))
  return best


@pytest.mark.parametrize("seed", range(6))
def test_max_variance_subset_is_extremes_and_optimal(seed):
  rng = np.random.default_rng(seed)
  sizes = [1, 2, 5, 7, 8]
  gid = np.concatenate([np.full(n, g) for g, n in enumerate(sizes)])
  values = rng.normal(size=gid.size).round(1 if seed % 2 else 6)  # ties
  keep = [0.3, 0.5, 0.75][seed % 3]
  chosen = np.asarray(em.max_variance_subset(
      jnp.asarray(values, jnp.float32), jnp.asarray(gid, jnp.int32),
      len(sizes), keep))
  for g, n in enumerate(sizes):
    v = values[gid == g]
    c = chosen[gid == g]
    k = max(min(int(np.ceil(keep * n)), n), 1)
    assert c.sum() == k, (g, c)
    np.testing.assert_allclose(np.var(v[c]), _brute_max_var(v, k),
                               rtol=1e-5, atol=1e-7)
    # Extremes: the chosen rows are a lowest prefix plus a highest suffix.
    order = np.argsort(v, kind="stable")
    picked = c[order]
    a = int(np.argmin(picked)) if not picked.all() else n
    assert picked[:a].all() and picked[n - (k - a):].all()


def test_max_variance_subset_skips_invalid_rows_and_is_permutation_equivariant():
  rng = np.random.default_rng(7)
  gid = np.array([0, 1, 0, 1, 0, 1, 0, 1])
  values = rng.normal(size=8)
  valid = np.array([1, 1, 0, 1, 1, 1, 1, 0], bool)
  args = dict(valid=jnp.asarray(valid))
  chosen = np.asarray(em.max_variance_subset(
      jnp.asarray(values, jnp.float32), jnp.asarray(gid, jnp.int32), 2, 0.5,
      **args))
  assert not chosen[~valid].any()
  perm = rng.permutation(8)
  again = np.asarray(em.max_variance_subset(
      jnp.asarray(values[perm], jnp.float32), jnp.asarray(gid[perm],
                                                          jnp.int32), 2, 0.5,
      valid=jnp.asarray(valid[perm])))
  np.testing.assert_array_equal(again, chosen[perm])


def test_keep_ratio_schedule_and_step_carry():
  np.testing.assert_allclose(
      [em.keep_ratio(s, 0.5, 1.0, 10) for s in (0, 5, 10, 20)],
      [0.5, 0.75, 1.0, 1.0])
  objective = divrl.build("grpo", "reinforce", token_weights=[
      {"name": "d3s_rollouts", "keep_start": 0.5, "keep_end": 1.0,
       "schedule_steps": 1}], aggregation="token-mean")
  b = _batch(6)
  carry = objective.init_carry()
  weights = []
  for _ in range(2):
    prepared, carry = objective.prepare(b, carry=carry)
    _, metrics = objective(prepared, carry=carry)
    weights.append(float(metrics["token_weight/mean"]))
  assert int(carry["token_weights[0]"]["step"]) == 2
  assert weights[0] < 1.0 and weights[1] == pytest.approx(1.0)


def test_d3s_tokens_keep_the_top_abs_a_times_h():
  b = _batch(7)
  adv = jnp.asarray(np.random.default_rng(1).normal(size=(B, T)),
                    jnp.float32)
  part = registry.make("token_weight", {"name": "d3s_tokens",
                                        "keep_start": 0.3,
                                        "schedule_steps": 10})
  got = np.asarray(part(b, adv))
  m = np.asarray(b.response_mask)
  score = np.abs(np.asarray(adv)) * np.asarray(b.entropy)
  thr = np.quantile(score[m], 0.7)
  np.testing.assert_array_equal(got > 0, m & (score >= thr))
  assert 0.25 <= got[m].mean() <= 0.35


# --- Entropy-based advantage shaping ----------------------------------------


def test_entropy_advantage_weight_equals_the_shaped_advantage():
  b = _batch(8)
  rng = np.random.default_rng(2)
  adv = rng.normal(size=(B, T))
  adv[0, :3] = 0.0
  part = registry.make("token_weight", {"name": "entropy_advantage",
                                        "alpha": 0.4, "kappa": 2.0})
  w = np.asarray(part(b, jnp.asarray(adv, jnp.float32)))
  h = np.asarray(b.entropy, np.float64)
  shaped = adv + np.minimum(0.4 * h, np.abs(adv) / 2.0)
  m = np.asarray(b.response_mask)
  np.testing.assert_allclose((w * adv)[m], shaped[m], rtol=1e-5, atol=1e-6)
  assert np.all(np.sign(shaped[m]) == np.sign(adv[m]))
  assert np.all((w[m] >= 0.5 - 1e-6) & (w[m] <= 1.5 + 1e-6))
  with pytest.raises(ValueError, match="kappa"):
    em.entropy_shaped_advantages(jnp.ones(2), jnp.ones(2), kappa=1.0)
  # Through an objective with REINFORCE, the weighted loss is the loss of the
  # shaped advantages.
  objective = divrl.build(lambda batch: jnp.asarray(adv, jnp.float32),
                          "reinforce", token_weights=[
                              {"name": "entropy_advantage"}],
                          aggregation="token-sum")
  plain = divrl.build(lambda batch: jnp.asarray(shaped, jnp.float32),
                      "reinforce", aggregation="token-sum")
  g1 = jax.grad(lambda lp: objective(b.replace(logprobs=lp))[0])(b.logprobs)
  g2 = jax.grad(lambda lp: plain(b.replace(logprobs=lp))[0])(b.logprobs)
  np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-6)


# --- Entropy band -----------------------------------------------------------


@pytest.mark.parametrize("scope", ["token", "batch"])
def test_entropy_band_is_a_hinge_on_the_entropy(scope):
  b = _batch(4)
  part = registry.make("regularizer", {"name": "entropy_band", "low": 1.0,
                                       "high": 2.0, "scope": scope})
  got = np.asarray(part(b))
  h, m = np.asarray(b.entropy, np.float64), np.asarray(b.response_mask)
  if scope == "batch":
    h = np.full_like(h, h[m].mean())
  want = (np.maximum(1.0 - h, 0) + np.maximum(h - 2.0, 0)) * m
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Gradient: -1 below the band, +1 above, 0 inside (token scope); the
  # batch hinge spreads its slope over the valid tokens.
  grad = np.asarray(jax.grad(lambda e: jnp.sum(em.entropy_band(
      e, b.mask, low=1.0, high=2.0, scope=scope)))(b.entropy))
  if scope == "token":
    want_g = (np.where(h < 1.0, -1.0, 0.0) + np.where(h > 2.0, 1.0, 0.0)) * m
  else:
    mean = h[m].mean() if m.any() else 0.0
    slope = -1.0 if mean < 1.0 else (1.0 if mean > 2.0 else 0.0)
    want_g = slope * m
  np.testing.assert_allclose(grad, want_g, atol=1e-6)


def test_entropy_band_batch_mean_is_the_same_sharded_and_refuses_bad_bands():
  b = _batch(5)
  mesh = jax.make_mesh((2,), ("data",))
  spec = jax.sharding.PartitionSpec("data")
  fn = jax.jit(jax.shard_map(
      lambda e, m: em.entropy_band(e, m, low=1.4, high=1.6,
                                   axis_name="data"),
      mesh=mesh, in_specs=spec, out_specs=spec))
  put = lambda x: jax.device_put(  # noqa: E731
      x, jax.sharding.NamedSharding(mesh, spec))
  np.testing.assert_allclose(
      fn(put(b.entropy), put(b.mask)),
      em.entropy_band(b.entropy, b.mask, low=1.4, high=1.6), rtol=1e-6)
  with pytest.raises(ValueError, match="low"):
    em.entropy_band(b.entropy, b.mask, low=2.0, high=1.0)
  with pytest.raises(ValueError, match="scope"):
    em.entropy_band(b.entropy, b.mask, scope="rows")
