"""Advantage estimators (divrl/advantages.py) against the independent NumPy
references in ``tests/references/advantages.py``.

GRPO and RLOO over their flags. The extended estimators: golden values on
random ragged batches (singleton groups, all-equal rewards, an all-masked row,
mask-0 observation tokens inside responses, garbage in every masked
position), padding invariance, permutation equivariance, shard_map against
one device, jit, and named errors for bad flags. Exact expected gradients of
RLOO, Dr.GRPO and GRPO on a tabular softmax policy (the ladder of docs/design.md, step 2): every
sequence (and every ordered group of sequences) is enumerated, so there is no
sampling noise and the checks are equalities up to float32 rounding.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import advantages, registry, sharding, testing
from tests.references import advantages as ref


def _random_groups(seed, b=17, num_groups=6):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, num_groups, size=b)
  ids[0] = num_groups - 1  # at least one id at the top of the range
  rewards = rng.normal(size=b)
  rewards[ids == ids[1]] = 0.75  # an all-equal group
  return rewards, ids, num_groups


FLAGS = list(itertools.product([0, 1], [0.0, 1e-6, 1e-4], ["std", "var"],
                               ["zero", "reward"], [True, False]))


@pytest.mark.filterwarnings("ignore:invalid value")
@pytest.mark.parametrize("ddof,eps,placement,singleton,scale", FLAGS)
def test_grpo_matches_reference(ddof, eps, placement, singleton, scale):
  for seed in range(3):
    r, ids, g = _random_groups(seed)
    got = advantages.grpo(jnp.asarray(r, jnp.float32), jnp.asarray(ids), g,
                          eps=eps, ddof=ddof, eps_placement=placement,
                          singleton=singleton, scale_by_std=scale)
    want = ref.grpo_advantages(r, ids, eps=eps, ddof=ddof,
                               eps_placement=placement, singleton=singleton,
                               scale_by_std=scale)
    if eps == 0.0 and scale:
      # All-equal groups give 0/0 in the reference; ours defines them as 0.
      finite = np.isfinite(want)
      assert (~finite).any()
      np.testing.assert_allclose(np.asarray(got)[finite], want[finite],
                                 rtol=2e-5, atol=2e-6)
      np.testing.assert_array_equal(np.asarray(got)[~finite], 0.0)
    else:
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("singleton", ["zero", "reward"])
def test_rloo_matches_reference(singleton):
  for seed in range(3):
    r, ids, g = _random_groups(seed)
    got = advantages.rloo(jnp.asarray(r, jnp.float32), jnp.asarray(ids), g,
                          singleton=singleton)
    want = ref.rloo_advantages(r, ids, singleton=singleton)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_edge_cases_hand_values():
  # Groups: {0: [1, 0]}, {1: [2]} singleton, {2: [3, 3, 3]} all-equal.
  r = jnp.array([1.0, 0.0, 2.0, 3.0, 3.0, 3.0])
  ids = jnp.array([0, 0, 1, 2, 2, 2])
  a = advantages.grpo(r, ids, 3, eps=0.0, singleton="zero")
  np.testing.assert_allclose(a, [2 ** -0.5, -2 ** -0.5, 0, 0, 0, 0],
                             atol=1e-6)
  a = advantages.grpo(r, ids, 3, eps=1e-6, singleton="reward")
  np.testing.assert_allclose(a[2], 2.0 / (1 + 1e-6), rtol=1e-6)
  np.testing.assert_allclose(a[3:], 0.0)
  a = advantages.rloo(r, ids, 3, singleton="reward")
  np.testing.assert_allclose(a, [1, -1, 2, 0, 0, 0])


def test_permutation_equivariance():
  r, ids, g = _random_groups(7)
  perm = np.random.default_rng(1).permutation(len(r))
  for fn in (advantages.grpo, advantages.rloo):
    a = fn(jnp.asarray(r, jnp.float32), jnp.asarray(ids), g)
    ap = fn(jnp.asarray(r[perm], jnp.float32), jnp.asarray(ids[perm]), g)
    np.testing.assert_allclose(np.asarray(a)[perm], ap, rtol=1e-6, atol=1e-7)


def test_group_relabelling_invariance():
  r, ids, g = _random_groups(3)
  relabel = np.random.default_rng(0).permutation(g)
  a = advantages.grpo(jnp.asarray(r, jnp.float32), jnp.asarray(ids), g)
  b = advantages.grpo(jnp.asarray(r, jnp.float32), jnp.asarray(relabel[ids]),
                      g)
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_multi_reward_weights_sum_then_normalise():
  rng = np.random.default_rng(0)
  rk = rng.normal(size=(8, 3))
  w = np.array([1.0, 0.5, -2.0])
  got = advantages.scalar_rewards(jnp.asarray(rk, jnp.float32), w)
  np.testing.assert_allclose(got, rk @ w, rtol=1e-5)
  with pytest.raises(ValueError, match="reward_weights"):
    advantages.scalar_rewards(jnp.asarray(rk, jnp.float32), [1.0, 2.0])


def test_bad_flags_are_named():
  r, ids = jnp.zeros(4), jnp.zeros(4, jnp.int32)
  with pytest.raises(ValueError, match="eps_placement"):
    advantages.grpo(r, ids, 1, eps_placement="inside")
  with pytest.raises(ValueError, match="singleton"):
    advantages.rloo(r, ids, 1, singleton="nan")


def test_jit_and_vmap():
  r, ids, g = _random_groups(2)
  r = jnp.asarray(r, jnp.float32)
  f = jax.jit(lambda r: advantages.grpo(r, jnp.asarray(ids), g))
  np.testing.assert_allclose(f(r), advantages.grpo(r, jnp.asarray(ids), g))
  stacked = jnp.stack([r, 2 * r])
  out = jax.vmap(lambda x: advantages.grpo(x, jnp.asarray(ids), g,
                                           eps=0.0))(stacked)
  np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-6)


# --- The extended estimators -------------------------------------------------


P = jax.sharding.PartitionSpec


GARBAGE = np.array([np.nan, np.inf, -np.inf, 1e4, -1e4, 37.0])


def _data(seed=0, b=16, t=8, num_groups=6, k=3, distinct=False):
  """NumPy arrays of a ragged batch with every edge case (float32 values)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, num_groups, size=b)
  ids[0] = 0                      # group 0: a singleton
  ids[[1, 9]] = 1                 # group 1: all-equal rewards, across shards
  lengths = rng.integers(1, t + 1, size=b)
  lengths[[4, 5, 11]] = t         # long rows that get holes
  mask = np.arange(t)[None, :] < lengths[:, None]
  mask[2] = False                 # an all-masked row
  mask[4, 2:4] = False            # observation tokens inside a response
  mask[5, 1] = False
  mask[11, 3] = False
  rewards = rng.normal(size=b)
  rewards[[1, 9]] = 0.75
  rewards[[6, 13]] = 0.0          # exact zeros (GPG's alpha)
  if distinct:
    rewards = rewards + 1e-2 * np.arange(b)
  rk = rng.normal(size=(b, k))
  rk[[1, 9]] = rk[1]
  data = dict(
      ids=ids.astype(np.int32), mask=mask, num_groups=num_groups,
      rewards=rewards.astype(np.float32),
      rewards_k=rk.astype(np.float32),
      token_rewards=rng.normal(size=(b, t)).astype(np.float32),
      values=rng.normal(size=(b, t)).astype(np.float32),
      logprobs=(-rng.uniform(0.05, 3.0, size=(b, t))).astype(np.float32),
      old_logprobs=(-rng.uniform(0.05, 3.0, size=(b, t))).astype(np.float32),
      sum_pi_squared=rng.uniform(0.0, 1.0, size=(b, t)).astype(np.float32),
      baseline_rewards=rng.normal(size=b).astype(np.float32),
  )
  for name in ("token_rewards", "values", "logprobs", "old_logprobs",
               "sum_pi_squared"):
    data[name][~mask] = rng.choice(GARBAGE, size=(~mask).sum())
  return data


def _batch(d, *, multi=False, token_rewards=True, old=True):
  f = lambda x: jnp.asarray(x, jnp.float32)
  return divrl.Batch(
      logprobs=f(d["logprobs"]), response_mask=jnp.asarray(d["mask"]),
      rewards=f(d["rewards_k"] if multi else d["rewards"]),
      group_ids=jnp.asarray(d["ids"]),
      old_logprobs=f(d["old_logprobs"]) if old else None,
      token_rewards=f(d["token_rewards"]) if token_rewards else None,
      values=f(d["values"]), sum_pi_squared=f(d["sum_pi_squared"]),
      baseline_rewards=f(d["baseline_rewards"]), num_groups=d["num_groups"])


def _token_rewards(d, use_token_rewards):
  if use_token_rewards:
    return d["token_rewards"]
  return ref.last_token_rewards(d["rewards"], d["mask"])


def _per_token(seq, mask):
  return np.asarray(seq, np.float64)[:, None] * mask


def _expected(name, kw, d, *, use_token_rewards=True, multi=False, old=True):
  """The reference advantages [B,T] of part ``name`` with hyperparameters kw."""
  kw = dict(kw)
  m, ids, r = d["mask"], d["ids"], d["rewards"]
  lengths = m.sum(axis=1)
  tr = _token_rewards(d, use_token_rewards)
  if name == "grpo":
    return _per_token(ref.grpo_advantages(r, ids, **kw), m)
  if name == "reinforce_pp":
    return ref.reinforce_pp(tr, m, **kw)
  if name == "reinforce_pp_baseline":
    return ref.reinforce_pp_baseline(r, ids, m, **kw)
  if name == "remax":
    return ref.remax(tr, m, d["baseline_rewards"])
  if name == "opo":
    return _per_token(ref.opo(r, ids, lengths, **kw), m)
  if name == "gpg":
    return _per_token(ref.gpg(r, ids, **kw), m)
  if name == "gdpo":
    kw["weights"] = kw.pop("reward_weights", None)
    return ref.gdpo(d["rewards_k"] if multi else r, ids, m, **kw)
  if name == "passk_best":
    return _per_token(ref.passk_best(r, ids, **kw), m)
  if name == "otb":
    lp = d["old_logprobs"] if old else d["logprobs"]
    return ref.otb(tr, m, lp, d["sum_pi_squared"], ids, **kw)
  if name == "gae":
    whiten = kw.pop("whiten", True)
    adv, _ = ref.gae(tr, d["values"], m, **kw)
    return ref.masked_whiten(adv, m) if whiten else adv
  raise AssertionError(name)


def _part(name, kw):
  return registry.make("advantage", {"name": name, **kw})


# (name, hyperparameters, multi-reward batch)
CASES = [
    ("grpo", {"std_scope": "batch"}, False),
    ("grpo", {"std_scope": "batch", "eps": 1e-4, "singleton": "reward",
              "eps_placement": "var", "ddof": 0}, False),
    ("grpo", {"std_scope": "group", "singleton": "reward"}, False),
    ("reinforce_pp", {}, False),
    ("reinforce_pp", {"gamma": 0.9}, False),
    ("reinforce_pp", {"gamma": 0.7, "whiten": False}, False),
    ("reinforce_pp_baseline", {}, False),
    ("reinforce_pp_baseline", {"singleton": "reward"}, False),
    ("reinforce_pp_baseline", {"singleton": "zero"}, False),
    ("reinforce_pp_baseline", {"whiten": False}, False),
    ("remax", {}, False),
    ("opo", {}, False),
    ("opo", {"singleton": "reward"}, False),
    ("gpg", {}, False),
    ("gpg", {"f_norm": 2.0, "singleton": "reward"}, False),
    ("gdpo", {}, True),
    ("gdpo", {"batch_norm": "samples", "eps": 1e-4}, True),
    ("gdpo", {"batch_norm": "none", "reward_weights": [1.0, 0.5, -2.0],
              "singleton": "reward"}, True),
    ("gdpo", {"batch_norm": "tokens", "std_scope": "batch",
              "scale_by_std": True, "reward_weights": [2.0, 1.0, 0.0]}, True),
    ("gdpo", {"batch_norm": "samples"}, False),   # [B] rewards: K = 1
    ("passk_best", {}, False),
    ("passk_best", {"scale_by_std": False}, False),
    ("passk_best", {"ddof": 0, "eps": 0.0}, False),
    ("otb", {}, False),
    ("otb", {"handle_zero_tail": False, "eps": 1e-6}, False),
    ("gae", {}, False),
    ("gae", {"gamma": 0.9, "lam": 0.95}, False),
    ("gae", {"gamma": 0.8, "lam": 0.5, "whiten": False}, False),
]


TOKEN_LEVEL = {"reinforce_pp", "remax", "otb", "gae"}


NAMES = ["grpo", "reinforce_pp", "reinforce_pp_baseline", "remax", "opo",
         "gpg", "gdpo", "passk_best", "otb", "gae"]


def _ids(case):
  name, kw, _ = case
  return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_parts_match_reference(case):
  name, kw, multi = case
  variants = [True, False] if name in TOKEN_LEVEL else [True]
  for seed in range(2):
    d = _data(seed)
    for use_tr in variants:
      batch = _batch(d, multi=multi, token_rewards=use_tr)
      got = np.asarray(_part(name, kw)(batch))
      want = _expected(name, kw, d, use_token_rewards=use_tr, multi=multi)
      assert np.all(np.isfinite(got)), (name, kw)
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5,
                                 err_msg=f"{name} {kw} token_rewards={use_tr}")
      assert np.all(got[~d["mask"]] == 0.0)


def test_otb_falls_back_to_logprobs_for_pi_old():
  d = _data(3)
  got = _part("otb", {})(_batch(d, old=False))
  np.testing.assert_allclose(got, _expected("otb", {}, d, old=False),
                             rtol=2e-5, atol=2e-5)


def test_otb_is_finite_on_inconsistent_statistics_under_jit():
  # pi_old(y) = 1 with sum pi^2 ~ 0 (impossible for a real policy) made
  # w = -1 and, in a group with a w = 1 row, sum W + eps = 0 under jit: 0/0.
  lp = jnp.full((4, 2), -19.0).at[1, 0].set(0.0)
  mask = jnp.asarray([[True, False]] * 4)
  sps = jnp.exp(2 * jnp.full((4, 2), -19.0))
  fn = jax.jit(lambda r: advantages.otb(r, mask, lp, sps,
                                        jnp.asarray([0, 0, 1, 1]), 2))
  got = fn(jnp.asarray([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
  assert np.all(np.isfinite(np.asarray(got)))


def test_gae_returns_match_reference():
  d = _data(4)
  adv, ret = advantages.gae(jnp.asarray(d["token_rewards"]),
                            jnp.asarray(d["values"]), jnp.asarray(d["mask"]),
                            gamma=0.9, lam=0.8)
  want_adv, want_ret = ref.gae(d["token_rewards"], d["values"], d["mask"],
                               gamma=0.9, lam=0.8)
  np.testing.assert_allclose(adv, want_adv, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(ret, want_ret, rtol=2e-5, atol=2e-5)


# --- Hand-computed edge cases -------------------------------------------------


def test_observation_tokens_are_skipped_by_hand():
  mask = jnp.array([[True, False, True]])
  tr = jnp.array([[1.0, np.nan, 2.0]])
  g = advantages.reinforce_pp(tr, mask, gamma=0.5, whiten=False)
  np.testing.assert_allclose(g, [[2.0, 0.0, 2.0]])
  adv, ret = advantages.gae(jnp.array([[0.0, 9.0, 1.0]]),
                            jnp.array([[0.5, np.inf, 0.2]]), mask)
  # t=2: 1 + 0 - 0.2 = 0.8; t=0 (V_next = V_2): 0 + 0.2 - 0.5 + 0.8 = 0.5.
  np.testing.assert_allclose(adv, [[0.5, 0.0, 0.8]], atol=1e-6)
  np.testing.assert_allclose(ret, [[1.0, 0.0, 1.0]], atol=1e-6)


def test_passk_best_ties_and_singletons_by_hand():
  r = jnp.array([1.0, 1.0, 0.0, 0.0, 2.0, 1.0, 5.0])
  ids = jnp.array([0, 0, 0, 1, 1, 1, 2])
  a = advantages.passk_best(r, ids, 3, scale_by_std=False)
  # Group 0: tie at the top -> index 0 is the top, r1 - r2 = 0.
  # Group 1: index 4 gets 2 - 1. Group 2 is a singleton -> 0.
  np.testing.assert_allclose(a, [0, 0, 0, 0, 1.0, 0, 0])
  a = advantages.passk_best(r, ids, 3)
  np.testing.assert_allclose(a[4], 1.0 / (1.0 + 1e-6), rtol=1e-6)


def test_otb_zero_tail_by_hand():
  # One group: row 0 has 3 valid tokens, row 1 has 1. Beyond t >= 1 row 0 is
  # alone, so with handle_zero_tail its advantage is its return there.
  mask = jnp.array([[1, 1, 1], [1, 0, 0]], bool)
  tr = jnp.array([[0.0, 0.0, 1.0], [0.5, 0.0, 0.0]])
  old = jnp.log(jnp.full((2, 3), 0.5))
  sps = jnp.full((2, 3), 0.5)
  ids = jnp.array([0, 0])
  on = advantages.otb(tr, mask, old, sps, ids, 1)
  off = advantages.otb(tr, mask, old, sps, ids, 1, handle_zero_tail=False)
  np.testing.assert_allclose(on[0, 1:], [1.0, 1.0])
  np.testing.assert_allclose(off[0, 1:], [0.0, 0.0], atol=1e-6)
  # t = 0: w = 1 - 1 + 0.5 = 0.5 for both, B_0 = (1 + 0.5) / 2.
  np.testing.assert_allclose(on[:, 0], [1.0 - 0.75, 0.5 - 0.75], atol=1e-6)


def test_all_equal_groups_get_exactly_zero():
  r = jnp.array([0.3, 0.3, 0.3, 1.0, 2.0], jnp.float32)
  ids = jnp.array([0, 0, 0, 1, 1])
  lengths = jnp.array([3.0, 1.0, 7.0, 2.0, 2.0])
  for a in (advantages.opo(r, ids, 2, lengths), advantages.gpg(r, ids, 2),
            advantages.passk_best(r, ids, 2),
            advantages.grpo(r, ids, 2, std_scope="batch", eps=0.0)):
    np.testing.assert_array_equal(np.asarray(a)[:3], 0.0)


def test_consistency_with_existing_estimators():
  d = _data(5)
  batch = _batch(d)
  # GDPO with one component and no batch normalisation is GRPO.
  np.testing.assert_allclose(
      _part("gdpo", {"batch_norm": "none"})(batch),
      _part("grpo", {})(batch), rtol=1e-6, atol=1e-6)
  # REINFORCE++-baseline without whitening is Dr.GRPO, for either singleton
  # convention.
  for singleton in ("zero", "reward"):
    np.testing.assert_allclose(
        _part("reinforce_pp_baseline", {"whiten": False,
                                        "singleton": singleton})(batch),
        _part("dr_grpo", {"singleton": singleton})(batch), rtol=1e-6,
        atol=1e-6)
  # ReMax on an outcome reward is r_i - b_i on every valid token.
  out = _part("remax", {})(_batch(d, token_rewards=False))
  np.testing.assert_allclose(
      out, _per_token(d["rewards"] - d["baseline_rewards"], d["mask"]),
      rtol=1e-6, atol=1e-6)
  # GPG with no zero reward has alpha = 1: Dr.GRPO.
  b2 = batch.replace(rewards=batch.rewards + 10.0)
  np.testing.assert_allclose(_part("gpg", {})(b2), _part("dr_grpo", {})(b2),
                             rtol=1e-5, atol=1e-5)


# --- Invariances --------------------------------------------------------------


def _padded(d, extra, seed):
  """The same batch with other garbage and ``extra`` more padded columns."""
  rng = np.random.default_rng(seed + 100)
  out = dict(d)
  b, t = d["mask"].shape
  out["mask"] = np.concatenate([d["mask"], np.zeros((b, extra), bool)], 1)
  for name in ("token_rewards", "values", "logprobs", "old_logprobs",
               "sum_pi_squared"):
    x = np.concatenate([d[name], np.zeros((b, extra), np.float32)], 1)
    x[~out["mask"]] = rng.choice(GARBAGE, size=(~out["mask"]).sum())
    out[name] = x
  return out


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_padding_invariance(case):
  name, kw, multi = case
  d = _data(6)
  base = np.asarray(_part(name, kw)(_batch(d, multi=multi)))
  padded = np.asarray(_part(name, kw)(_batch(_padded(d, 3, 6), multi=multi)))
  t = d["mask"].shape[1]
  np.testing.assert_allclose(padded[:, :t], base, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(padded[:, t:], 0.0)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_permutation_equivariance_library(case):
  name, kw, multi = case
  d = _data(7, distinct=True)  # distinct rewards: passk_best has no ties
  perm = np.random.default_rng(7).permutation(len(d["ids"]))
  dp = {k: (v[perm] if isinstance(v, np.ndarray) else v)
        for k, v in d.items()}
  a = np.asarray(_part(name, kw)(_batch(d, multi=multi)))
  ap = np.asarray(_part(name, kw)(_batch(dp, multi=multi)))
  np.testing.assert_allclose(ap, a[perm], rtol=1e-5, atol=1e-5)


def test_group_relabelling_invariance_library():
  d = _data(8, distinct=True)
  relabel = np.random.default_rng(0).permutation(d["num_groups"])
  d2 = dict(d, ids=relabel[d["ids"]].astype(np.int32))
  for name in NAMES:
    np.testing.assert_allclose(_part(name, {})(_batch(d2)),
                               _part(name, {})(_batch(d)), rtol=1e-5,
                               atol=1e-5, err_msg=name)


# --- Sharding and jit ---------------------------------------------------------


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("data",))


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_shard_map_equals_single_device(mesh, case):
  """Batch split in 8 blocks of 2 rows; groups span devices."""
  name, kw, multi = case
  d = _data(9)
  # A tie at a group's top across devices: the lower global index wins.
  d["ids"][[3, 12]] = d["ids"][3]
  d["rewards"][[3, 12]] = 50.0
  batch = _batch(d, multi=multi)
  part = _part(name, kw)
  want = part(batch)
  spec = sharding.batch_spec(batch)
  fn = jax.shard_map(lambda b: part(b, axis_name="data"), mesh=mesh,
                     in_specs=(spec,), out_specs=P("data", None))
  got = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_passk_best_tie_across_devices_picks_lowest_global_index(mesh):
  r = jnp.zeros(16).at[jnp.array([5, 13])].set(2.0).at[7].set(1.0)
  ids = jnp.zeros(16, jnp.int32)
  fn = jax.shard_map(
      lambda r, i: advantages.passk_best(r, i, 1, scale_by_std=False,
                                         axis_name="data"),
      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data"))
  got = np.asarray(jax.jit(fn)(r, ids))
  assert got[5] == 0.0 and np.count_nonzero(got) == 0  # r1 - r2 = 0
  r = r.at[13].set(3.0)
  got = np.asarray(jax.jit(fn)(r, ids))
  np.testing.assert_allclose(got, np.eye(16)[13] * 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
  d = _data(10)
  multi = name == "gdpo"
  batch = _batch(d, multi=multi)
  part = _part(name, {})
  np.testing.assert_allclose(jax.jit(part)(batch), part(batch), rtol=1e-6,
                             atol=1e-6)


def test_parts_compose_into_an_objective():
  d = _data(11)
  batch = _batch(d)
  for name in NAMES:
    obj = divrl.from_config({"advantage": name, "surrogate": "ppo_clip"})
    loss, _ = obj(batch)
    assert np.isfinite(float(loss)), name


# --- Errors -------------------------------------------------------------------


def test_bad_flags_and_missing_fields_are_named():
  d = _data(12)
  batch = _batch(d)
  bad = [
      ("grpo", {"std_scope": "global"}, "std_scope"),
      ("gdpo", {"batch_norm": "batch"}, "batch_norm"),
      ("gdpo", {"std_scope": "tokens"}, "std_scope"),
      ("gdpo", {"reward_weights": [1.0, 2.0]}, "reward_weights"),
      ("opo", {"singleton": "one"}, "singleton"),
      ("gpg", {"singleton": "mean"}, "singleton"),
      ("gpg", {"f_norm": 0.0}, "f_norm"),
      ("reinforce_pp_baseline", {"singleton": "x"}, "singleton"),
      ("reinforce_pp", {"gamma": 1.5}, "gamma"),
      ("gae", {"gamma": -0.1}, "gamma"),
      ("gae", {"lam": 2.0}, "lam"),
      ("reinforce_pp", {"reward_weights": [1.0]}, "reward_weights"),
  ]
  for name, kw, word in bad:
    with pytest.raises(ValueError, match=word):
      _part(name, kw)(batch)
  for name, field in [("remax", "baseline_rewards"), ("gae", "values"),
                      ("otb", "sum_pi_squared")]:
    with pytest.raises(ValueError, match=f"Batch.{field}"):
      _part(name, {})(batch.replace(**{field: None}))
  with pytest.raises(ValueError, match="no hyperparameter"):
    _part("otb", {"gamma": 0.9})


# --- Exact expected gradients on a tabular policy -----------------------------


POLICY = testing.TabularPolicy(vocab=3, length=2)


def _expected_objective_grad(objective, params, rewards, group_size):
  loss_fn = testing.objective_loss(POLICY, objective, rewards=rewards)
  return testing.expected_group_gradient(POLICY, params, group_size, loss_fn)


def _grad_j(params, rewards):
  return jax.grad(lambda p: testing.expected_value(POLICY, p, rewards))(params)


def _assert_tree_close(a, b, rtol=2e-4, atol=2e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _objective(adv):
  # seq-mean-token-sum: loss = -(1/G) sum_i A_i log pi(y_i) on-policy.
  return divrl.from_config({"advantage": adv, "surrogate": "ppo_clip",
                            "aggregation": "seq-mean-token-sum"})


@pytest.mark.parametrize("group_size", [2, 3])
def test_rloo_is_unbiased(group_size):
  params = POLICY.init(jax.random.key(2))
  rewards = jax.random.normal(jax.random.key(3), (9,))
  g = _expected_objective_grad(_objective("rloo"), params, rewards, group_size)
  _assert_tree_close(g, jax.tree.map(lambda x: -x, _grad_j(params, rewards)))


@pytest.mark.parametrize("group_size", [2, 3])
def test_dr_grpo_is_scaled_by_g_minus_1_over_g(group_size):
  params = POLICY.init(jax.random.key(4))
  rewards = jax.random.normal(jax.random.key(5), (9,))
  g = _expected_objective_grad(_objective("dr_grpo"), params, rewards,
                               group_size)
  scale = -(group_size - 1) / group_size
  _assert_tree_close(g, jax.tree.map(lambda x: scale * x,
                                     _grad_j(params, rewards)))


def _grpo_weight(p, group_size, eps):
  """w_G(p) = sum_c Bin(c; G-1, p) (a(1, c) - a(0, c)), ddof=1, eps on std."""
  def adv(x, c):
    k = c + x
    if k in (0, group_size):
      return 0.0
    mu = k / group_size
    var = (k * (1 - mu) ** 2 + (group_size - k) * mu ** 2) / (group_size - 1)
    return (x - mu) / (math.sqrt(var) + eps)
  n = group_size - 1
  return sum(math.comb(n, c) * p ** c * (1 - p) ** (n - c) *
             (adv(1, c) - adv(0, c)) for c in range(n + 1))


@pytest.mark.parametrize("group_size", [2, 3])
def test_grpo_binary_reward_gradient_is_w_times_grad_j(group_size):
  params = POLICY.init(jax.random.key(6))
  rewards = jnp.asarray([1, 0, 0, 1, 1, 0, 0, 0, 1], jnp.float32)
  p = float(testing.expected_value(POLICY, params, rewards))
  eps = 1e-6
  objective = divrl.from_config({
      "advantage": {"name": "grpo", "eps": eps}, "surrogate": "ppo_clip",
      "aggregation": "seq-mean-token-sum"})
  g = _expected_objective_grad(objective, params, rewards, group_size)
  w = _grpo_weight(p, group_size, eps)
  assert w > 0
  _assert_tree_close(g, jax.tree.map(lambda x: -w * x,
                                     _grad_j(params, rewards)))


# --- Carried state: EMA-std GRPO --------------------------------------------


def test_ema_std_grpo_threads_its_carry_like_the_reference():
  objective = divrl.from_config({
      "advantage": {"name": "ema_std_grpo", "decay": 0.7},
      "surrogate": "reinforce"})
  assert objective.requires.stateful
  rng = np.random.default_rng(0)
  rewards, ids, got = [], [], []
  carry = objective.init_carry()
  prepare = jax.jit(objective.prepare)
  for step in range(4):
    r = rng.normal(size=9) * (step + 1)
    g = np.asarray([0, 0, 0, 1, 1, 1, 2, 2, 3], np.int32)  # group 3: one
    batch = divrl.Batch(
        logprobs=jnp.zeros((9, 3)), response_mask=jnp.ones((9, 3)),
        rewards=jnp.asarray(r, jnp.float32), group_ids=jnp.asarray(g),
        num_groups=4)
    prepared, carry = prepare(batch, carry=carry)
    rewards.append(r)
    ids.append(g)
    got.append(np.asarray(prepared.advantages[:, 0]))
  want = ref.ema_std_grpo_steps(rewards, ids, decay=0.7)
  for g_, w in zip(got, want):
    np.testing.assert_allclose(g_, w, rtol=1e-5, atol=1e-6)
  # The first step's tracked std is the first batch's std exactly.
  np.testing.assert_allclose(
      float(advantages.tracked_std(advantages.ema_std_update(
          advantages.ema_std_init(), divrl.Batch(
              logprobs=jnp.zeros((9, 1)), response_mask=jnp.ones((9, 1)),
              rewards=jnp.asarray(rewards[0], jnp.float32),
              group_ids=jnp.asarray(ids[0]), num_groups=4), decay=0.7))),
      np.std(rewards[0], ddof=1), rtol=1e-5)


def test_ema_std_grpo_needs_its_carry_slot_and_a_valid_decay():
  objective = divrl.from_config({"advantage": "ema_std_grpo",
                                 "surrogate": "reinforce"})
  batch = divrl.Batch(logprobs=jnp.zeros((4, 2)),
                      response_mask=jnp.ones((4, 2)),
                      rewards=jnp.asarray([0.0, 1.0, 0.0, 1.0]),
                      group_ids=jnp.asarray([0, 0, 1, 1]), num_groups=2)
  with pytest.raises(ValueError, match="carry has no entry 'advantage'"):
    objective.prepare(batch, carry={})
  # The config is refused before anything runs (the declared domain), and
  # the carry update checks it too when called directly.
  with pytest.raises(ValueError, match=r"objective.advantage \(ema_std_grpo\):"
                     r" decay must be in \[0, 1\), got 1.0"):
    divrl.from_config({"advantage": {"name": "ema_std_grpo", "decay": 1.0},
                       "surrogate": "reinforce"})
  with pytest.raises(ValueError, match="decay"):
    advantages.ema_std_update(advantages.ema_std_init(), batch, decay=1.0)


# --- W-REINFORCE, PSR, NSR (arXiv:2506.01347) --------------------------------


def test_w_reinforce_values():
  r = jnp.asarray([0.0, 1.0, 1.0, 0.0])
  np.testing.assert_allclose(advantages.w_reinforce(r), [-1, 0.1, 0.1, -1])
  np.testing.assert_allclose(advantages.w_reinforce(r, lam=0.5),
                             [-1, 0.5, 0.5, -1])
  np.testing.assert_allclose(advantages.w_reinforce(r, mode="psr"),
                             [0, 1, 1, 0])
  np.testing.assert_allclose(advantages.w_reinforce(r, mode="nsr"),
                             [-1, 0, 0, -1])
  with pytest.raises(ValueError, match="mode"):
    advantages.w_reinforce(r, mode="both")


@pytest.mark.parametrize("name,scale", [("w_reinforce", 1.1), ("psr", 1.0),
                                        ("nsr", 1.0)])
def test_sign_asymmetric_reinforce_ascends_the_success_probability(name,
                                                                   scale):
  # Tabular policy over 5 answers, answers 1 and 3 correct. The expected
  # gradient sum_y pi(y) A(y) grad log pi(y) is (1 + lam) grad p for
  # W-REINFORCE (lam = 0.1), and grad p for PSR and for NSR alone.
  theta = jnp.asarray([0.2, -0.4, 0.9, 0.0, -1.1])
  correct = jnp.asarray([0.0, 1.0, 0.0, 1.0, 0.0])
  pi = jax.nn.softmax(theta)
  batch = divrl.Batch(logprobs=jnp.zeros((5, 1)),
                      response_mask=jnp.ones((5, 1)), rewards=correct,
                      group_ids=jnp.zeros(5, jnp.int32), num_groups=1)
  adv = divrl.registry.make("advantage", name)(batch)[:, 0]
  grad_logpi = jax.jacobian(lambda t: jax.nn.log_softmax(t))(theta)
  expected = jnp.sum((pi * adv)[:, None] * grad_logpi, axis=0)
  grad_p = jax.grad(lambda t: jnp.sum(jax.nn.softmax(t) * correct))(theta)
  np.testing.assert_allclose(expected, scale * grad_p, rtol=1e-5, atol=1e-7)


def _ema_task_reference(reward_batches, group_batches, task_batches, masks,
                        *, num_tasks, decay, eps=1e-6):
  """Loop reference of EMA-GRPO per task: per step, update each task seen
  at least twice (non-empty rows), then (r - group mean) / (tracked + eps)
  (singleton groups and empty rows get 0)."""
  ema = [0.0] * num_tasks
  weight = [0.0] * num_tasks
  out = []
  for r, g, k, m in zip(reward_batches, group_batches, task_batches, masks):
    for task in range(num_tasks):
      vals = [r[i] for i in range(len(r)) if k[i] == task and m[i]]
      if len(vals) >= 2:
        ema[task] = decay * ema[task] + (1 - decay) * np.std(vals, ddof=1)
        weight[task] = decay * weight[task] + (1 - decay)
    adv = []
    for i in range(len(r)):
      members = [r[j] for j in range(len(r)) if g[j] == g[i]]
      std = ema[k[i]] / weight[k[i]] if weight[k[i]] > 0 else 0.0
      dev = 0.0 if len(members) == 1 else r[i] - np.mean(members)
      adv.append(dev / (std + eps) if m[i] else 0.0)
    out.append(np.array(adv))
  return out


def test_ema_task_std_grpo_tracks_one_std_per_task():
  objective = divrl.from_config({
      "advantage": {"name": "ema_task_std_grpo", "decay": 0.6,
                    "num_tasks": 3},
      "surrogate": "reinforce"})
  assert "task_ids" in objective.requires.inputs
  carry = objective.init_carry()
  assert carry["advantage"]["ema"].shape == (3,)
  prepare = jax.jit(objective.prepare)
  rng = np.random.default_rng(1)
  g = np.asarray([0, 0, 0, 1, 1, 1, 2, 2, 3], np.int32)   # group 3: one
  steps = []
  for step in range(4):
    # Task 0 is noisy, task 1 calm; task 2 appears only at step 2.
    k = np.asarray([0, 0, 0, 1, 1, 1, 0, 0, 1] if step != 2
                   else [0, 0, 0, 1, 1, 1, 2, 2, 2], np.int32)
    r = rng.normal(size=9) * np.where(k == 0, 5.0, 0.5)
    m = np.ones(9, bool)
    m[4] = step != 1                                     # an empty row
    batch = divrl.Batch(
        logprobs=jnp.zeros((9, 3)),
        response_mask=jnp.asarray(np.repeat(m[:, None], 3, 1)),
        rewards=jnp.asarray(r, jnp.float32), group_ids=jnp.asarray(g),
        task_ids=jnp.asarray(k), num_groups=4)
    prepared, carry = prepare(batch, carry=carry)
    steps.append((r, g, k, m, np.asarray(prepared.advantages[:, 0])))
  want = _ema_task_reference(*[[s[i] for s in steps] for i in range(4)],
                             num_tasks=3, decay=0.6)
  for s, w in zip(steps, want):
    np.testing.assert_allclose(s[4], w, rtol=1e-5, atol=1e-5)
  tracked = np.asarray(advantages.tracked_std(carry["advantage"]))
  assert tracked[0] > 4 * tracked[1] > 0 and tracked[2] > 0


def test_ema_task_std_grpo_with_one_task_is_ema_std_grpo():
  per_task = divrl.from_config({"advantage": {"name": "ema_task_std_grpo",
                                              "decay": 0.7},
                                "surrogate": "reinforce"})
  scalar = divrl.from_config({"advantage": {"name": "ema_std_grpo",
                                            "decay": 0.7},
                              "surrogate": "reinforce"})
  c1, c2 = per_task.init_carry(), scalar.init_carry()
  rng = np.random.default_rng(2)
  for _ in range(3):
    batch = divrl.Batch(
        logprobs=jnp.zeros((8, 2)), response_mask=jnp.ones((8, 2)),
        rewards=jnp.asarray(rng.normal(size=8), jnp.float32),
        group_ids=jnp.asarray(np.arange(8) // 4), task_ids=jnp.zeros(
            (8,), jnp.int32), num_groups=2)
    p1, c1 = per_task.prepare(batch, carry=c1)
    p2, c2 = scalar.prepare(batch, carry=c2)
    np.testing.assert_allclose(p1.advantages, p2.advantages, rtol=1e-5)


def test_ema_task_std_grpo_refuses_bad_tasks():
  objective = divrl.from_config({"advantage": {"name": "ema_task_std_grpo",
                                               "num_tasks": 2},
                                 "surrogate": "reinforce"})
  batch = divrl.Batch(logprobs=jnp.zeros((4, 2)),
                      response_mask=jnp.ones((4, 2)),
                      rewards=jnp.asarray([0.0, 1.0, 0.0, 1.0]),
                      group_ids=jnp.asarray([0, 0, 1, 1]),
                      task_ids=jnp.asarray([0, 1, 2, 1]), num_groups=2)
  with pytest.raises(ValueError, match="task_ids"):
    objective.prepare(batch, carry=objective.init_carry())
  with pytest.raises(ValueError, match="num_tasks"):
    divrl.from_config({"advantage": {"name": "ema_task_std_grpo",
                                     "num_tasks": 0},
                       "surrogate": "reinforce"}).init_carry()
