"""divrl.selection (online difficulty band, PF-PPO per-prompt selection,
Ctrl-U uncertainty weights, Parrot's Pareto front, VeRPO rewards) against
the NumPy references in tests/references/selection.py, on ragged groups with
a singleton group, an all-equal group and a padding row; plus the
identities the papers imply, gradients through an objective, sharded runs
and refused settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import groups
from divrl import registry
from divrl import selection as sel
from divrl.sharding import make_mesh
from tests.references import selection as ref

T = 4
# Groups: 0 (4 rows, row 3 is padding), 1 (3 rows), 2 (singleton),
# 3 (3 rows, all-equal rewards in _REWARDS), 4 (5 rows).
GID = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 4, 4, 4, 4])
LENGTHS = np.array([4, 2, 3, 0, 1, 4, 2, 3, 4, 4, 1, 2, 3, 4, 1, 2])
_REWARDS = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1.0])


def _batch(rewards=_REWARDS, gid=GID, lengths=LENGTHS, seed=0):
  rng = np.random.default_rng(seed)
  b = len(gid)
  mask = np.arange(T)[None] < np.asarray(lengths)[:, None]
  lp = -rng.uniform(0.1, 2.0, (b, T))
  return divrl.Batch(
      logprobs=jnp.asarray(lp, jnp.float32), response_mask=jnp.asarray(mask),
      rewards=jnp.asarray(rewards, jnp.float32),
      group_ids=jnp.asarray(gid, jnp.int32),
      num_groups=int(np.max(gid)) + 1)


def _valid(lengths=LENGTHS):
  return [bool(n > 0) for n in lengths]


def _kept(batch):
  return np.asarray(batch.response_mask).any(axis=1)


def _transform(name, **kw):
  return registry.make("transform", {"name": name, **kw})


def _reinforce_grad(objective, batch, key=None):
  return np.asarray(jax.grad(lambda lp: objective(
      batch.replace(logprobs=lp), key)[0])(batch.logprobs))


ADV = np.random.default_rng(9).normal(size=(len(GID), T))


def _fixed_advantage(batch):
  return jnp.asarray(ADV, jnp.float32) * batch.mask


# --- difficulty_band --------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("band", [(0.25, 0.75), (0.0, 1.0), (0.5, 0.5),
                                  (0.2, 0.6), (0.0, 0.0)])
def test_difficulty_band_matches_numpy(seed, band):
  rewards = np.random.default_rng(seed).integers(0, 2, len(GID)).astype(float)
  rewards[8:11] = 1.0   # group 3 all-equal
  b = _batch(rewards)
  out = _transform("difficulty_band", p_low=band[0], p_high=band[1])(b)
  want = ref.difficulty_band(rewards, GID, _valid(), *band)
  np.testing.assert_array_equal(_kept(out), want)
  np.testing.assert_array_equal(out.rewards, b.rewards)
  # Kept rows keep their mask unchanged.
  np.testing.assert_array_equal(
      np.asarray(out.response_mask)[want], np.asarray(b.response_mask)[want])


def test_difficulty_band_ignores_padding_rows_and_keeps_fractions():
  b = _batch()
  # Group 0 has valid rewards (1, 0, 1): p_hat = 2/3 whatever the padding
  # row's reward is; 2/3 is kept by a band ending at 2/3 exactly.
  for pad in (0.0, 1.0):
    r = _REWARDS.copy()
    r[3] = pad
    p = groups.group_pass_rate(jnp.asarray(r, jnp.float32), b.group_ids,
                               b.groups, valid=jnp.asarray(_valid()))
    assert float(p[0]) == pytest.approx(2 / 3)
    out = _transform("difficulty_band", p_low=0.0, p_high=2 / 3)(
        b.replace(rewards=jnp.asarray(r, jnp.float32)))
    assert _kept(out)[:3].all() and not _kept(out)[3]


def test_difficulty_band_with_a_one_over_n_band_is_dapo_filtering():
  n = 4
  gid = np.repeat(np.arange(5), n)
  rng = np.random.default_rng(3)
  for _ in range(5):
    r = rng.integers(0, 2, gid.size).astype(float)
    b = _batch(r, gid, np.full(gid.size, T))
    band = _transform("difficulty_band", p_low=1 / n, p_high=1 - 1 / n)(b)
    dapo = _transform("filter_zero_variance_groups")(b)
    np.testing.assert_array_equal(band.response_mask, dapo.response_mask)


def test_difficulty_band_gradient_is_the_kept_rows_only():
  b = _batch()
  objective = divrl.build(_fixed_advantage, "reinforce", transforms=[
      {"name": "difficulty_band"}], aggregation="token-sum")
  keep = np.asarray(ref.difficulty_band(_REWARDS, GID, _valid(), 0.25, 0.75))
  want = -ADV * np.asarray(b.response_mask) * keep[:, None]
  np.testing.assert_allclose(_reinforce_grad(objective, b), want, rtol=1e-6)
  assert keep.any() and not keep.all()


@pytest.mark.parametrize("kw,match", [
    (dict(p_low=-0.1), "p_low"), (dict(p_low=1.5, p_high=1.5), "p_low"),
    (dict(p_low=0.6, p_high=0.4), "p_high"), (dict(p_high=1.2), "p_high")])
def test_difficulty_band_refuses_bad_bands(kw, match):
  with pytest.raises(ValueError, match=match):
    _transform("difficulty_band", **kw)(_batch())


# --- pf_ppo_select ----------------------------------------------------------


def _uniforms(key, b):
  return [float(jax.random.uniform(jax.random.fold_in(key, i)))
          for i in range(b)]


@pytest.mark.parametrize("mode", ["best", "best_random", "best_worst"])
@pytest.mark.parametrize("seed", range(4))
def test_pf_ppo_select_matches_numpy(mode, seed):
  rng = np.random.default_rng(seed)
  rewards = rng.integers(0, 3, len(GID)).astype(float)   # many ties
  rewards[8:11] = 0.5   # all-equal group
  b = _batch(rewards)
  key = jax.random.key(seed)
  out = _transform("pf_ppo_select", mode=mode)(b, key=key)
  want = ref.pf_ppo(rewards, GID, _valid(), mode, _uniforms(key, len(GID)))
  np.testing.assert_array_equal(_kept(out), want)
  np.testing.assert_array_equal(out.rewards, b.rewards)


def test_pf_ppo_select_counts_ties_and_singletons():
  b = _batch()
  valid = np.array(_valid())
  for mode, per_group in [("best", 1), ("best_worst", 2),
                          ("best_random", 2)]:
    kept = _kept(_transform("pf_ppo_select", mode=mode)(
        b, key=jax.random.key(1)))
    for g in range(5):
      n = int(valid[GID == g].sum())
      assert kept[GID == g].sum() == min(per_group, n), (mode, g)
    assert not kept[~valid].any()
    # The best row (highest reward, lowest index) is always kept: row 0 of
    # group 0 (ties with row 2), row 6 of group 1, the singleton, row 8 of
    # the all-equal group, row 12 of group 4.
    assert kept[[0, 6, 7, 8, 12]].all()


def test_pf_ppo_best_random_draws_uniformly_among_the_others():
  # Group 1: rows 4, 5 (reward 0) and 6 (the best), so the random pick is
  # row 4 or 5 with probability 1/2 each; group 4: row 12 is the best, rows
  # 11, 13, 14, 15 each get 1/4. 2000 draws: bounds at about 4 sigma.
  b = _batch()
  keys = jax.random.split(jax.random.key(0), 2000)
  part = registry.make("transform", {"name": "pf_ppo_select"})
  kept = jax.vmap(lambda k: part(b, key=k).response_mask.any(axis=1))(keys)
  kept = np.asarray(kept)
  assert kept[:, [6, 12]].all()
  assert np.all(kept[:, [4, 5]].sum(1) == 1)
  assert np.all(kept[:, [11, 13, 14, 15]].sum(1) == 1)
  assert 0.455 < kept[:, 4].mean() < 0.545
  assert np.all(np.abs(kept[:, [11, 13, 14, 15]].mean(0) - 0.25) < 0.04)


def test_pf_ppo_select_gradient_is_the_kept_rows_only():
  b = _batch()
  objective = divrl.build(_fixed_advantage, "reinforce", transforms=[
      {"name": "pf_ppo_select", "mode": "best_worst"}],
                          aggregation="token-sum")
  keep = np.asarray(ref.pf_ppo(_REWARDS, GID, _valid(), "best_worst"))
  want = -ADV * np.asarray(b.response_mask) * keep[:, None]
  np.testing.assert_allclose(_reinforce_grad(objective, b,
                                             jax.random.key(0)), want,
                             rtol=1e-6)


@pytest.mark.parametrize("kw,match", [(dict(mode="top"), "mode"),
                                      (dict(mode="best_random"), "key")])
def test_pf_ppo_select_refuses_bad_settings(kw, match):
  with pytest.raises(ValueError, match=match):
    _transform("pf_ppo_select", **kw)(_batch(), key=None)


# --- ctrl_u -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exp", "inverse"])
@pytest.mark.parametrize("k", [0.1, 1.0, 4.0])
def test_ctrl_u_weights_match_numpy(mode, k):
  rewards = np.random.default_rng(5).normal(size=len(GID))
  rewards[8:11] = 0.7   # all-equal group
  b = _batch(rewards)
  part = registry.make("token_weight", {"name": "ctrl_u", "k": k,
                                        "mode": mode})
  got = np.asarray(part(b, jnp.zeros_like(b.logprobs)))
  mask = np.asarray(b.response_mask)
  np.testing.assert_allclose(got, ref.ctrl_u(rewards, GID, mask, k, mode),
                             rtol=1e-5, atol=1e-7)
  # Singleton and all-equal groups are certain: weight exactly 1.
  assert np.all(got[7][mask[7]] == 1.0) and np.all(got[8:11][mask[8:11]]
                                                      == 1.0)
  assert np.all(got[~mask] == 0.0)


def test_ctrl_u_padding_row_does_not_change_the_group_variance():
  b = _batch()
  part = registry.make("token_weight", "ctrl_u")
  adv = jnp.zeros_like(b.logprobs)
  w0 = np.asarray(part(b, adv))
  w1 = np.asarray(part(b.replace(rewards=b.rewards.at[3].set(100.0)), adv))
  np.testing.assert_array_equal(w0, w1)
  # Group 0's valid rewards (1, 0, 1): variance 2/9, weight exp(-2/9).
  assert w0[0, 0] == pytest.approx(np.exp(-2 / 9), rel=1e-6)


def test_ctrl_u_weight_decreases_with_the_group_spread():
  gid = np.repeat(np.arange(4), 4)
  r = np.concatenate([s * np.array([-1, 1, -1, 1.0]) for s in
                      (0.0, 0.5, 1.0, 2.0)])
  b = _batch(r, gid, np.full(16, T))
  for mode in ("exp", "inverse"):
    w = np.asarray(sel.uncertainty_weights(b.rewards, b.group_ids, 4,
                                           mode=mode))[::4]
    assert w[0] == 1.0 and np.all(np.diff(w) < 0), (mode, w)
  # k = 0 switches the weighting off.
  np.testing.assert_array_equal(
      sel.uncertainty_weights(b.rewards, b.group_ids, 4, k=0.0), 1.0)


def test_ctrl_u_scales_the_policy_gradient_by_the_weight():
  b = _batch()
  objective = divrl.build(_fixed_advantage, "reinforce", token_weights=[
      {"name": "ctrl_u", "k": 2.0}], aggregation="token-sum")
  var = np.array(ref.group_variance(_REWARDS, GID, _valid()))
  want = -ADV * np.asarray(b.response_mask) * np.exp(-2.0 * var)[:, None]
  np.testing.assert_allclose(_reinforce_grad(objective, b), want, rtol=1e-5,
                             atol=1e-7)


@pytest.mark.parametrize("kw,match", [(dict(k=-1.0), "k"),
                                      (dict(mode="log"), "mode")])
def test_ctrl_u_refuses_bad_settings(kw, match):
  b = _batch()
  with pytest.raises(ValueError, match=match):  # k: at config time
    part = registry.make("token_weight", {"name": "ctrl_u", **kw})
    part(b, jnp.zeros_like(b.logprobs))


# --- pareto_front -----------------------------------------------------------


@pytest.mark.parametrize("scope", ["group", "batch"])
@pytest.mark.parametrize("seed", range(4))
def test_pareto_front_matches_numpy(scope, seed):
  rng = np.random.default_rng(seed)
  r = rng.integers(0, 3, (len(GID), 3)).astype(float)   # ties and equal rows
  r[8:11] = r[8]   # all-equal group
  b = _batch(r)
  out = _transform("pareto_front", scope=scope)(b)
  want = ref.pareto(r, GID, _valid(), scope)
  np.testing.assert_array_equal(_kept(out), want)
  np.testing.assert_array_equal(out.rewards, b.rewards)
  if scope == "group":   # the singleton and the all-equal rows are fronts
    assert _kept(out)[8:11].all() and _kept(out)[7]


def test_pareto_front_with_one_component_keeps_each_groups_best():
  b = _batch()
  for rewards in (b.rewards, b.rewards[:, None]):
    kept = _kept(_transform("pareto_front")(b.replace(rewards=rewards)))
    for g in range(5):
      rows = np.flatnonzero((GID == g) & np.array(_valid()))
      best = _REWARDS[rows].max()
      np.testing.assert_array_equal(kept[rows], _REWARDS[rows] == best)


def test_every_dropped_row_is_dominated_by_a_kept_row():
  rng = np.random.default_rng(11)
  r = rng.normal(size=(len(GID), 2)).round(1)
  keep = np.asarray(sel.pareto_mask(jnp.asarray(r, jnp.float32),
                                    jnp.asarray(GID, jnp.int32),
                                    valid=jnp.asarray(_valid())))
  for i in np.flatnonzero(np.array(_valid()) & ~keep):
    mates = np.flatnonzero(keep & (GID == GID[i]))
    assert any(np.all(r[j] >= r[i]) and np.any(r[j] > r[i]) for j in mates)
  for g in range(5):
    assert keep[GID == g].any()
  # Permuting the rows permutes the front.
  perm = rng.permutation(len(GID))
  again = np.asarray(sel.pareto_mask(
      jnp.asarray(r[perm], jnp.float32), jnp.asarray(GID[perm], jnp.int32),
      valid=jnp.asarray(np.array(_valid())[perm])))
  np.testing.assert_array_equal(again, keep[perm])


def test_pareto_front_refuses_an_unknown_scope():
  with pytest.raises(ValueError, match="scope"):
    _transform("pareto_front", scope="prompt")(_batch())


# --- verpo ------------------------------------------------------------------


@pytest.mark.parametrize("a", [0.0, 0.5, 1.0, 0.3])
@pytest.mark.parametrize("seed", range(3))
def test_verpo_matches_numpy(a, seed):
  rng = np.random.default_rng(seed)
  p = rng.integers(0, 2, (len(GID), 4)).astype(float)
  p[8:11] = 1.0                       # a group that passes everything
  p[12, 1] = 0.5                      # partial credit on one test
  p[13, 2] = 1.7                      # clipped to 1
  b = _batch(p)
  out = _transform("verpo", outcome_weight=a)(b)
  assert out.rewards.shape == (len(GID),)
  np.testing.assert_allclose(out.rewards, ref.verpo(p, GID, _valid(), a),
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(out.response_mask, b.response_mask)


def test_verpo_identities():
  gid = np.zeros(4, int)
  # Test 0 is easy (3 of 4 pass), test 1 hard (1 of 4).
  p = np.array([[1, 0], [1, 0], [1, 0], [0, 1.0]])
  r = np.asarray(sel.verpo_rewards(jnp.asarray(p, jnp.float32),
                                   jnp.asarray(gid, jnp.int32), 1,
                                   outcome_weight=0.0))
  # w = (1/4, 3/4): passing the hard test alone is worth 3 times the easy.
  np.testing.assert_allclose(r, [0.25, 0.25, 0.25, 0.75], rtol=1e-6)
  # One 0/1 test: the reward is the pass bit, for any outcome weight.
  b = _batch()
  for a in (0.0, 0.5, 1.0):
    got = _transform("verpo", outcome_weight=a)(
        b.replace(rewards=b.rewards[:, None])).rewards
    np.testing.assert_allclose(got, _REWARDS, rtol=1e-6)
  # outcome_weight = 1 is the all-pass outcome alone.
  p = np.random.default_rng(2).integers(0, 2, (len(GID), 3)).astype(float)
  got = _transform("verpo", outcome_weight=1.0)(_batch(p)).rewards
  np.testing.assert_array_equal(got, p.min(axis=1))


def test_verpo_padding_row_does_not_change_other_rows():
  p = np.random.default_rng(4).integers(0, 2, (len(GID), 3)).astype(float)
  b = _batch(p)
  r0 = np.asarray(_transform("verpo")(b).rewards)
  p[3] = 1 - p[3]
  r1 = np.asarray(_transform("verpo")(_batch(p)).rewards)
  valid = np.array(_valid())
  np.testing.assert_array_equal(r0[valid], r1[valid])


def test_verpo_refuses_a_bad_outcome_weight():
  with pytest.raises(ValueError, match="outcome_weight"):
    _transform("verpo", outcome_weight=1.5)(_batch(np.ones((len(GID), 2))))


# --- sharded runs -----------------------------------------------------------


def _array_fns(r1, rk, gid, valid, key, ax):
  return {
      "band": lambda: sel.difficulty_band_mask(
          r1, gid, 5, p_low=0.2, p_high=0.8, valid=valid, axis_name=ax),
      "pf_random": lambda: sel.pf_ppo_selection(
          r1, gid, 5, mode="best_random", key=key, valid=valid,
          axis_name=ax),
      "pf_worst": lambda: sel.pf_ppo_selection(
          r1, gid, 5, mode="best_worst", valid=valid, axis_name=ax),
      "ctrl_u": lambda: sel.uncertainty_weights(r1, gid, 5, valid=valid,
                                                axis_name=ax),
      "pareto": lambda: sel.pareto_mask(rk, gid, valid=valid, axis_name=ax),
      "pareto_batch": lambda: sel.pareto_mask(rk, gid, scope="batch",
                                              valid=valid, axis_name=ax),
      "verpo": lambda: sel.verpo_rewards(rk, gid, 5, valid=valid,
                                         axis_name=ax),
  }


@pytest.mark.parametrize("name", ["band", "pf_random", "pf_worst", "ctrl_u",
                                  "pareto", "pareto_batch", "verpo"])
def test_sharded_runs_match_one_device(name):
  mesh = make_mesh((8,), ("data",))
  rng = np.random.default_rng(7)
  rows = (jnp.asarray(rng.integers(0, 3, 32), jnp.float32),
          jnp.asarray(rng.integers(0, 2, (32, 3)), jnp.float32),
          jnp.asarray(rng.integers(0, 5, 32), jnp.int32),
          jnp.asarray(rng.random(32) < 0.85))
  key = jax.random.key(3)
  single = _array_fns(*rows, key, None)[name]()
  local = lambda *shard: _array_fns(*shard, key, "data")[name]()  # noqa: E731
  got = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"),) * 4,
                              out_specs=P("data")))(*rows)
  np.testing.assert_allclose(np.asarray(got, np.float64),
                             np.asarray(single, np.float64), rtol=1e-6,
                             atol=1e-7)
