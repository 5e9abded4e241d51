"""Tests for divrl.risk: distortion risk measures and their advantages, the
entropic and mean-deviation siblings, and RiskPO (arXiv:2510.00911)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import risk
from divrl.sharding import make_mesh
from tests.references import risk as ref

# Ragged groups: sizes 5, 1 (singleton), 4 (all equal), 6 (ties), 3; the
# last two rows are invalid (padding) in the tests that pass ``valid``.
REWARDS = np.array([0.3, -1.2, 2.0, 0.7, 0.3,      # group 0
                    1.5,                          # group 1: singleton
                    1.0, 1.0, 1.0, 1.0,           # group 2: all equal
                    0.0, 1.0, 1.0, 0.0, 1.0, 0.5,  # group 3: ties
                    4.0, -2.0, 9.0], np.float32)  # group 4
GROUPS = np.array([0] * 5 + [1] + [2] * 4 + [3] * 6 + [4] * 3, np.int32)
VALID = np.ones(len(REWARDS), bool)
VALID[[3, 18]] = False
NUM_GROUPS = 5

DISTORTIONS = {
    "mean": (risk.identity(), lambda u: u, lambda u: 1.0),
    "cvar_lower_0.25": (risk.cvar(0.25), lambda u: min(u / 0.25, 1.0),
                        lambda u: 4.0 if u < 0.25 else 0.0),
    "cvar_upper_0.4": (risk.cvar(0.4, "upper"),
                       lambda u: max(u - 0.6, 0.0) / 0.4,
                       lambda u: 2.5 if u >= 0.6 else 0.0),
    "rvar_0.2_0.9": (risk.rvar(0.2, 0.9),
                     lambda u: min(max((u - 0.2) / 0.7, 0.0), 1.0),
                     lambda u: 1 / 0.7 if 0.2 <= u < 0.9 else 0.0),
}


def _jnp(*xs):
  return [jnp.asarray(x) for x in xs]


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
@pytest.mark.parametrize("use_valid", [False, True])
def test_distortion_value_matches_reference(name, use_valid):
  d, cdf, _ = DISTORTIONS[name]
  valid = VALID if use_valid else None
  got = risk.distortion_risk(*_jnp(REWARDS, GROUPS), NUM_GROUPS, d,
                             valid=None if valid is None else
                             jnp.asarray(valid))
  ok = VALID if use_valid else np.ones_like(VALID)
  want = [ref.distortion_value(REWARDS[(GROUPS == g) & ok],
                               np.ones(np.sum((GROUPS == g) & ok)), cdf)
          for g in range(NUM_GROUPS)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
@pytest.mark.parametrize("baseline", risk.BASELINES)
@pytest.mark.parametrize("use_valid", [False, True])
def test_distortion_advantages_match_reference(name, baseline, use_valid):
  d, _, density = DISTORTIONS[name]
  valid = VALID if use_valid else None
  got = risk.distortion_advantages(
      *_jnp(REWARDS, GROUPS), NUM_GROUPS, d, baseline=baseline,
      valid=None if valid is None else jnp.asarray(valid))
  want = ref.grouped(lambda x, w: ref.distortion_advantage(
      x, w, density, baseline), REWARDS, GROUPS, valid)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Singleton and all-equal groups get 0; ties get equal advantages.
  np.testing.assert_array_equal(np.asarray(got)[5:10], 0.0)
  assert got[11] == got[12] == got[14] and got[10] == got[13]


def test_weighted_distortion_matches_reference():
  w = np.random.default_rng(0).uniform(0.1, 2.0, len(REWARDS))
  d, cdf, density = DISTORTIONS["rvar_0.2_0.9"]
  got = risk.distortion_advantages(*_jnp(REWARDS, GROUPS), NUM_GROUPS, d,
                                   weights=jnp.asarray(w, jnp.float32))
  want = ref.grouped(lambda x, ww: ref.distortion_advantage(
      x, ww, density, "mean"), REWARDS, GROUPS, weights=w)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  value = risk.distortion_risk(*_jnp(REWARDS, GROUPS), NUM_GROUPS, d,
                               weights=jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(value, [ref.distortion_value(
      REWARDS[GROUPS == g], w[GROUPS == g], cdf)
                                     for g in range(NUM_GROUPS)], rtol=1e-5)


def test_cvar_at_one_and_the_identity_are_the_mean():
  r, g = _jnp(REWARDS, GROUPS)
  mean = [REWARDS[GROUPS == k].mean() for k in range(NUM_GROUPS)]
  for d in (risk.cvar(1.0), risk.cvar(1.0, "upper"), risk.identity(),
            risk.rvar(0.0, 1.0)):
    np.testing.assert_allclose(risk.distortion_risk(r, g, NUM_GROUPS, d),
                               mean, rtol=1e-6)
    np.testing.assert_allclose(
        risk.distortion_advantages(r, g, NUM_GROUPS, d),
        REWARDS - np.asarray(mean)[GROUPS], atol=1e-6)


def test_cvar_is_the_mean_of_the_tail_and_rvar_generalises_it():
  x = np.array([5.0, -1.0, 3.0, 0.0, 2.0, 7.0, 1.0, 4.0, -3.0, 6.0],
               np.float32)
  g = np.zeros(10, np.int32)
  for a in (0.1, 0.2, 0.25, 0.5, 0.9):
    got = risk.distortion_risk(*_jnp(x, g), 1, risk.cvar(a))
    np.testing.assert_allclose(got, [ref.cvar_lower_value(x, a)], rtol=1e-6)
    np.testing.assert_allclose(
        got, risk.distortion_risk(*_jnp(x, g), 1, risk.rvar(0.0, a)),
        rtol=1e-6)
  # Upper CVaR of x is minus the lower CVaR of -x.
  np.testing.assert_allclose(
      risk.distortion_risk(*_jnp(x, g), 1, risk.cvar(0.3, "upper")),
      -risk.distortion_risk(*_jnp(-x, g), 1, risk.cvar(0.3)), rtol=1e-6)


def test_cvar_advantage_is_riskpos_form_with_the_empirical_quantile():
  # baseline="max": A = -(q - r)_+ / alpha with q = r_(ceil(alpha n)).
  x = np.array([5.0, -1.0, 3.0, 0.0, 2.0, 7.0, 1.0, 4.0, -3.0, 6.0],
               np.float32)
  g = np.zeros(10, np.int32)
  for a in (0.2, 0.25, 0.5):
    q = np.sort(x)[int(np.ceil(a * 10)) - 1]
    got = risk.distortion_advantages(*_jnp(x, g), 1, risk.cvar(a),
                                     baseline="max")
    np.testing.assert_allclose(got, -np.maximum(q - x, 0) / a, rtol=1e-6)
    q_hi = np.sort(x)[int(np.ceil(0.95 * 10)) - 1]
    paper = risk.riskpo_paper_advantages(jnp.asarray(x), q, q_hi, alpha=a,
                                         beta=0.95, mode="mixed", w_mix=1.0,
                                         eps=0.0)
    rv = risk.distortion_advantages(*_jnp(x, g), 1, risk.rvar(a, 0.95),
                                    baseline="max")
    np.testing.assert_allclose(paper, (got + rv) / 2, rtol=1e-5, atol=1e-6)


def _tabular(theta, rewards):
  pi = jax.nn.softmax(theta)
  return pi, jnp.asarray(rewards, jnp.float32), jnp.zeros(len(rewards),
                                                          jnp.int32)


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_distortion_advantage_is_the_exact_gradient_on_a_tabular_policy(
    name):
  # pi = softmax(theta) over 6 outcomes with distinct rewards. With the
  # policy's own probabilities as weights, sum_y grad pi(y) A(y) must equal
  # grad rho(pi(theta)) (no cumulative probability sits on a kink here).
  d = DISTORTIONS[name][0]
  theta = jnp.asarray([0.3, -0.2, 0.9, 0.1, -0.7, 0.4], jnp.float32)
  rewards = [1.0, -0.5, 2.5, 0.2, 3.0, -1.5]

  def rho(t):
    pi, r, g = _tabular(t, rewards)
    return risk.distortion_risk(r, g, 1, d, weights=pi)[0]

  pi, r, g = _tabular(theta, rewards)
  adv = jax.jit(lambda r, g, pi: risk.distortion_advantages(
      r, g, 1, d, weights=pi))(r, g, pi)
  jac = jax.jacobian(lambda t: jax.nn.softmax(t))(theta)
  grad = jax.jit(jax.grad(rho))(theta)
  np.testing.assert_allclose(jac.T @ adv, grad, rtol=1e-4, atol=1e-6)
  assert np.abs(grad).max() > 1e-3   # not trivially zero


@pytest.mark.parametrize("which", ["entropic+", "entropic-", "var", "std"])
def test_sibling_advantages_are_exact_gradients(which):
  theta = jnp.asarray([0.3, -0.2, 0.9, 0.1, -0.7], jnp.float32)
  rewards = [1.0, -0.5, 2.5, 0.2, 3.0]
  if which.startswith("entropic"):
    gamma = 0.7 if which.endswith("+") else -0.7
    value = lambda r, g, pi: risk.entropic_risk(r, g, 1, gamma, weights=pi)
    advf = lambda r, g, pi: risk.entropic_advantages(r, g, 1, gamma,
                                                     weights=pi)
  else:
    value = lambda r, g, pi: risk.mean_deviation_risk(
        r, g, 1, 0.3, deviation=which, weights=pi)
    advf = lambda r, g, pi: risk.mean_deviation_advantages(
        r, g, 1, 0.3, deviation=which, eps=0.0, weights=pi)

  def rho(t):
    pi, r, g = _tabular(t, rewards)
    return value(r, g, pi)[0]

  pi, r, g = _tabular(theta, rewards)
  jac = jax.jacobian(lambda t: jax.nn.softmax(t))(theta)
  np.testing.assert_allclose(jac.T @ advf(r, g, pi), jax.grad(rho)(theta),
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, -2.0])
def test_entropic_values_and_advantages_match_reference(gamma):
  r, g, v = _jnp(REWARDS, GROUPS, VALID)
  got = risk.entropic_advantages(r, g, NUM_GROUPS, gamma, valid=v)
  want = ref.grouped(lambda x, w: ref.entropic_advantage(x, w, gamma),
                     REWARDS, GROUPS, VALID)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  value = risk.entropic_risk(r, g, NUM_GROUPS, gamma, valid=v)
  np.testing.assert_allclose(value, [ref.entropic_value(
      REWARDS[(GROUPS == k) & VALID], np.ones(np.sum((GROUPS == k) & VALID)),
      gamma) for k in range(NUM_GROUPS)], rtol=1e-5)
  # Stable far out: a group with rewards 1000 apart stays finite.
  big = risk.entropic_advantages(jnp.asarray([0.0, 1000.0]),
                                 jnp.zeros(2, jnp.int32), 1, 1.0)
  assert np.all(np.isfinite(big))


@pytest.mark.parametrize("deviation", risk.DEVIATIONS)
def test_mean_deviation_matches_reference(deviation):
  r, g, v = _jnp(REWARDS, GROUPS, VALID)
  got = risk.mean_deviation_advantages(r, g, NUM_GROUPS, 0.4,
                                       deviation=deviation, valid=v)
  want = ref.grouped(lambda x, w: ref.mean_deviation_advantage(
      x, w, 0.4, deviation), REWARDS, GROUPS, VALID)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_group_permutation_moves_advantages_with_their_rows():
  perm = np.random.default_rng(1).permutation(len(REWARDS))
  for fn in (lambda r, g: risk.distortion_advantages(r, g, NUM_GROUPS,
                                                     risk.cvar(0.3)),
             lambda r, g: risk.entropic_advantages(r, g, NUM_GROUPS, 1.0),
             lambda r, g: risk.mean_deviation_advantages(r, g, NUM_GROUPS,
                                                         0.5)):
    a = fn(*_jnp(REWARDS, GROUPS))
    b = fn(*_jnp(REWARDS[perm], GROUPS[perm]))
    np.testing.assert_allclose(np.asarray(a)[perm], b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec,array_fn", [
    ({"name": "cvar", "alpha": 0.4, "scale_by_std": True},
     lambda r, g: risk.cvar_advantages(r, g, NUM_GROUPS, alpha=0.4,
                                       scale_by_std=True)),
    ({"name": "rvar", "lo": 0.1, "hi": 0.6},
     lambda r, g: risk.rvar_advantages(r, g, NUM_GROUPS, lo=0.1, hi=0.6)),
    ({"name": "var", "level": 0.3},
     lambda r, g: risk.distortion_advantages(r, g, NUM_GROUPS,
                                             risk.rvar(0.2, 0.4))),
    ({"name": "entropic_risk", "gamma": -1.5},
     lambda r, g: risk.entropic_advantages(r, g, NUM_GROUPS, -1.5)),
    ({"name": "mean_deviation", "lam": 0.2, "deviation": "var"},
     lambda r, g: risk.mean_deviation_advantages(r, g, NUM_GROUPS, 0.2,
                                                 deviation="var")),
])
def test_registered_parts_are_their_array_functions_per_token(spec,
                                                              array_fn):
  mask = np.ones((len(REWARDS), 3), np.float32)
  mask[2, 1:] = 0
  batch = divrl.Batch(logprobs=jnp.zeros(mask.shape),
                      response_mask=jnp.asarray(mask),
                      rewards=jnp.asarray(REWARDS),
                      group_ids=jnp.asarray(GROUPS), num_groups=NUM_GROUPS)
  got = divrl.registry.make("advantage", spec)(batch)
  want = np.asarray(array_fn(*_jnp(REWARDS, GROUPS)))[:, None] * mask
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# --- RiskPO -----------------------------------------------------------------

# 7 questions x 5 responses, bundles of 3 (the last bundle has one question).
RNG = np.random.default_rng(3)
RP_REWARDS = RNG.integers(0, 2, 35).astype(np.float32)
RP_REWARDS[:5] = 1.0                     # question 0: all correct (std 0)
RP_GROUPS = np.repeat(np.arange(7), 5).astype(np.int32)


@pytest.mark.parametrize("mode", risk.RISKPO_MODES)
@pytest.mark.parametrize("credit", risk.RISKPO_CREDIT)
@pytest.mark.parametrize("scale_by_std", [True, False])
def test_riskpo_matches_reference_with_batch_quantiles(mode, credit,
                                                       scale_by_std):
  kw = dict(alpha=0.2, beta=0.9, mode=mode, scale_by_std=scale_by_std,
            credit=credit)
  got = risk.riskpo_advantages(*_jnp(RP_REWARDS, RP_GROUPS), 7,
                               bundle_size=3, quantiles="batch", **kw)
  want = ref.riskpo(RP_REWARDS, RP_GROUPS, 3, **kw)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.abs(want).max() > 0


def test_riskpo_papers_skip_responses_beyond_the_smallest_group():
  # Question 1 has 3 responses, so bundle {0, 1} has 3 papers; question 0's
  # 4th and 5th responses belong to none and get 0.
  r = np.array([1, 0, 1, 1, 0, 1, 1, 0], np.float32)
  g = np.array([0, 0, 0, 0, 0, 1, 1, 1], np.int32)
  p = risk.bundle_papers(*_jnp(r, g), 2, 2)
  np.testing.assert_array_equal(p.row_valid, [1, 1, 1, 0, 0, 1, 1, 1])
  np.testing.assert_allclose(np.asarray(p.score)[np.asarray(p.valid)],
                             [2.0, 1.0, 1.0])
  got = risk.riskpo_advantages(*_jnp(r, g), 2, bundle_size=2,
                               quantiles="batch")
  np.testing.assert_allclose(got, ref.riskpo(r, g, 2), rtol=1e-5, atol=1e-6)


def test_quantile_tracker_starts_at_the_batch_quantiles_then_takes_sgd_steps():
  scores = jnp.asarray([0.0, 1.0, 2.0, 3.0, 4.0, 9.0])
  valid = jnp.asarray([1, 1, 1, 1, 1, 0], bool)
  c = risk.quantile_tracker_init((0.2, 0.9))
  c = risk.quantile_tracker_update(c, scores, valid, (0.2, 0.9), lr=0.1)
  np.testing.assert_allclose(c["q"], [ref.torch_quantile([0, 1, 2, 3, 4], a)
                                      for a in (0.2, 0.9)], rtol=1e-6)
  np.testing.assert_array_equal(c["q_prev"], [0.0, 0.0])
  q1 = np.asarray(c["q"])
  c = risk.quantile_tracker_update(c, scores, valid, (0.2, 0.9), lr=0.1)
  below = [np.mean(np.array([0, 1, 2, 3, 4]) < q) for q in q1]
  np.testing.assert_allclose(c["q"], q1 + 0.1 * (np.array([0.2, 0.9]) -
                                                 below), rtol=1e-6)
  np.testing.assert_allclose(c["q_prev"], q1)
  assert int(c["steps"]) == 2


@pytest.mark.parametrize("quantiles", ["track", "mix"])
def test_riskpo_part_uses_the_quantiles_tracked_before_the_step(quantiles):
  batch = divrl.Batch(
      logprobs=jnp.zeros((35, 3)), response_mask=jnp.ones((35, 3)),
      rewards=jnp.asarray(RP_REWARDS), group_ids=jnp.asarray(RP_GROUPS),
      num_groups=7)
  obj = divrl.build({"name": "riskpo", "bundle_size": 3,
                     "quantiles": quantiles}, "ppo_clip")
  carry = obj.init_carry()
  # Step 1: no tracked value yet, the bundles' own quantiles.
  b1, carry = obj.prepare(batch, carry=carry)
  np.testing.assert_allclose(b1.advantages[:, 0], ref.riskpo(
      RP_REWARDS, RP_GROUPS, 3), rtol=1e-5, atol=1e-5)
  tracked = np.asarray(carry["advantage"]["q"])
  # Step 2 (other rewards): the quantiles tracked after step 1.
  r2 = RP_REWARDS[::-1].copy()
  b2, carry = obj.prepare(batch.replace(rewards=jnp.asarray(r2)),
                          carry=carry)
  np.testing.assert_allclose(b2.advantages[:, 0], ref.riskpo(
      r2, RP_GROUPS, 3, tracked=tuple(tracked), quantiles=quantiles),
                             rtol=1e-5, atol=1e-5)


def test_sharded_risk_matches_single_device():
  mesh = make_mesh((8,), ("data",))
  r = np.concatenate([RP_REWARDS, RNG.normal(size=5).astype(np.float32)])
  g = np.concatenate([RP_GROUPS, np.full(5, 7, np.int32)])   # 40 rows
  fns = {
      "cvar": lambda r, g, ax: risk.distortion_advantages(
          r, g, 8, risk.cvar(0.3), axis_name=ax),
      "entropic": lambda r, g, ax: risk.entropic_advantages(
          r, g, 8, 0.5, axis_name=ax),
      "riskpo": lambda r, g, ax: risk.riskpo_advantages(
          r, g, 8, bundle_size=3, quantiles="batch", axis_name=ax),
  }
  for name, fn in fns.items():
    sharded = jax.jit(jax.shard_map(
        lambda r, g, fn=fn: fn(r, g, "data"), mesh=mesh,
        in_specs=(P("data"), P("data")), out_specs=P("data")))(*_jnp(r, g))
    single = jax.jit(lambda r, g, fn=fn: fn(r, g, None))(*_jnp(r, g))
    np.testing.assert_allclose(sharded, single, rtol=1e-6, atol=1e-6,
                               err_msg=name)


@pytest.mark.parametrize("call,match", [
    (lambda: risk.cvar(0.0), "alpha"),
    (lambda: risk.cvar(0.2, "middle"), "tail"),
    (lambda: risk.rvar(0.5, 0.5), "rvar"),
    (lambda: risk.var(0.5, 0.0), "width"),
    (lambda: risk.mixture([1.0], []), "mixture"),
    (lambda: risk.entropic_advantages(jnp.zeros(2), jnp.zeros(2, jnp.int32),
                                      1, 0.0), "gamma"),
    (lambda: risk.distortion_advantages(jnp.zeros(2), jnp.zeros(2, jnp.int32),
                                        1, risk.identity(),
                                        baseline="median"), "baseline"),
    (lambda: risk.riskpo_paper_advantages(jnp.zeros(2), 0.0, 1.0,
                                          alpha=0.9, beta=0.2), "alpha"),
    (lambda: risk.riskpo_advantages(jnp.zeros(2), jnp.zeros(2, jnp.int32),
                                    1, quantiles="ema"), "quantiles"),
    (lambda: risk.bundle_papers(jnp.zeros(2), jnp.zeros(2, jnp.int32), 1, 0),
     "bundle_size"),
])
def test_bad_settings_are_refused_by_name(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_integer_rewards_are_refused():
  with pytest.raises(AssertionError):
    risk.distortion_advantages(jnp.zeros(2, jnp.int32),
                               jnp.zeros(2, jnp.int32), 1, risk.identity())


# --- Risk over reward heads ---------------------------------------------------

HEADS = np.random.default_rng(5).normal(size=(16, 4)).astype(np.float32)
HEADS[:, 2] -= 1.0          # head 2 has the lowest batch mean


def test_head_reductions_match_numpy():
  r = jnp.asarray(HEADS)
  np.testing.assert_allclose(risk.worst_case_heads(r), HEADS.min(1))
  np.testing.assert_allclose(risk.median_heads(r), np.median(HEADS, 1),
                             rtol=1e-6)
  np.testing.assert_allclose(risk.uncertainty_weighted_heads(r, lam=0.3),
                             HEADS.mean(1) - 0.3 * HEADS.var(1), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(risk.maxmin_heads(r), HEADS[:, 2])
  means = HEADS.mean(0)
  w = np.exp(-means / 0.5) / np.exp(-means / 0.5).sum()
  np.testing.assert_allclose(risk.maxmin_heads(r, temperature=0.5),
                             HEADS @ w, rtol=1e-5, atol=1e-6)
  # A soft minimum tends to the hard one as the temperature shrinks.
  np.testing.assert_allclose(risk.maxmin_heads(r, temperature=1e-3),
                             HEADS[:, 2], atol=1e-4)


def test_maxmin_picks_the_worst_head_of_the_global_batch_when_sharded():
  mesh = make_mesh((8,), ("data",))
  h = HEADS.copy()
  h[:2, 0] -= 50.0   # head 0 is the worst overall, through two rows only
  fn = lambda r: risk.maxmin_heads(r, temperature=0.0, axis_name="data")
  got = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P("data"),),
                              out_specs=P("data")))(jnp.asarray(h))
  np.testing.assert_allclose(got, h[:, 0])


@pytest.mark.parametrize("name,want", [
    ("worst_case_heads", lambda h: h.min(1)),
    ("median_heads", lambda h: np.median(h, 1)),
    ("uncertainty_weighted_heads", lambda h: h.mean(1) - 0.1 * h.var(1)),
    ("maxmin_heads", lambda h: h[:, 2]),
])
def test_head_transforms_reduce_reward_components(name, want):
  batch = divrl.Batch(logprobs=jnp.zeros((16, 2)),
                      response_mask=jnp.ones((16, 2)),
                      rewards=jnp.asarray(HEADS),
                      group_ids=jnp.repeat(jnp.arange(4), 4), num_groups=4)
  part = divrl.registry.make("transform", name)
  assert "reward_components" in divrl.registry.declaration(part).reads
  np.testing.assert_allclose(part(batch).rewards, want(HEADS), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match=f"{name}.*reward components"):
    part(batch.replace(rewards=jnp.asarray(HEADS[:, 0])))
