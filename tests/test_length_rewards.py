"""divrl.length_rewards (GRPO-lambda, DRPO, DLER, FiMi-RM, RLSP) against the
NumPy references in ``tests/references/length_rewards.py``, on ragged groups
with a singleton, an all-equal-reward group and an all-padding row; plus
the identities the papers imply, DRPO's gradient against the closed form of
the authors' loss, and equality under ``shard_map``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import length_rewards as lr
from divrl import registry, sharding
from tests.references import length_rewards as ref

T = 6
# Groups: 0 (5 rows, mixed), 1 (3 rows, all correct: all-equal rewards),
# 2 (a singleton), 3 (3 rows, one of them all padding).
GID = [0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3]
REWARDS = [1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0]
LENGTHS = [6, 2, 4, 3, 5, 2, 5, 3, 4, 0, 6, 1]


def _batch(rewards=REWARDS, gid=GID, lengths=LENGTHS, *, t=T, seed=0,
           tokens=None, num_groups=None):
  rng = np.random.default_rng(seed)
  b = len(rewards)
  lengths = np.asarray(lengths)
  mask = np.arange(t)[None] < lengths[:, None]
  lp = -rng.uniform(0.05, 3.0, (b, t))
  lp[~mask] = np.nan  # garbage in the padding
  extra = {}
  if tokens is not None:
    extra["tokens"] = jnp.asarray(tokens, jnp.int32)
  return divrl.Batch(
      logprobs=jnp.asarray(lp, jnp.float32), response_mask=jnp.asarray(mask),
      rewards=jnp.asarray(rewards, jnp.float32),
      group_ids=jnp.asarray(gid, jnp.int32),
      num_groups=num_groups or int(max(gid)) + 1, **extra)


def _random(seed, b=14, groups=4, binary=True, t=T):
  rng = np.random.default_rng(seed)
  gid = rng.integers(0, groups, b)
  gid[-1] = groups  # a singleton group
  r = (rng.integers(0, 2, b).astype(float) if binary
       else rng.normal(size=b))
  lengths = rng.integers(1, t + 1, b)
  lengths[seed % b] = 0  # one all-padding row
  return _batch(r, gid, lengths, seed=seed, t=t)


def _np(x):
  return np.asarray(x, np.float64)


def _valid(batch):
  return _np(batch.response_mask).sum(1) > 0


def _lengths(batch):
  return _np(batch.response_mask).sum(1)


def _transform(name, batch, **kw):
  return np.asarray(registry.make("transform", {"name": name, **kw})(
      batch).rewards)


# --- Kimi length reward and GRPO-lambda ---------------------------------------


def test_kimi_length_reward_values_by_hand():
  correct = jnp.asarray([True, True, True, False, False, True, True])
  lengths = jnp.asarray([2, 4, 6, 2, 6, 3, 3])
  gid = jnp.asarray([0, 0, 0, 0, 0, 1, 1])
  got = lr.kimi_length_reward(correct, lengths, gid, 2)
  # Group 0 spans [2, 6]: lambda = 0.5, 0, -0.5, 0.5, -0.5; group 1 has one
  # length, so 0.
  np.testing.assert_allclose(got, [0.5, 0.0, -0.5, 0.0, -0.5, 0.0, 0.0])


@pytest.mark.parametrize("fraction,tau", [(0.5, 0.5), (1.0, 0.0), (0.25, 0.0),
                                          (1.0, 0.6), (0.75, 0.5),
                                          (0.5, 1.0)])
def test_grpo_lambda_matches_reference(fraction, tau):
  batches = [_batch()] + [_random(s) for s in range(4)]
  for batch in batches:
    got = _transform("grpo_lambda_length", batch, fraction=fraction, tau=tau,
                     coef=0.7)
    want = ref.grpo_lambda(_np(batch.rewards), _lengths(batch),
                           list(np.asarray(batch.group_ids)), _valid(batch),
                           fraction, tau, 0.7)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_grpo_lambda_gate_on_the_fixed_batch():
  # Accuracies: g0 3/5, g1 1, g2 1 (singleton), g3 1/2 (padding excluded).
  batch = _batch()
  got = _transform("grpo_lambda_length", batch, fraction=1.0, tau=0.6)
  correct = np.asarray(REWARDS, float)
  # g3 (0.5 < tau) gets plain correctness; the padded row keeps its reward.
  np.testing.assert_array_equal(got[9:], [1.0, 1.0, 0.0])
  # g0 is gated in: shortest correct (len 3 of [2, 6]) gets 1 + 0.25, the
  # short wrong row (len 2) min(0, 0.5) = 0, the long wrong row -0.25.
  np.testing.assert_allclose(got[:5], [0.5, 0.0, 1.0, 1.25, -0.25],
                             rtol=1e-6)
  # g1 spans [2, 5]; the singleton has one length, so no bonus.
  np.testing.assert_allclose(got[5:9], [1.5, 0.5, 1 + 0.5 - 1 / 3, 1.0],
                             rtol=1e-6)
  # Top-lambda: the top quarter of 4 groups is 1 group, but g1 and g2 tie
  # at accuracy 1, so both keep the penalty and g0 is plain correctness.
  top = _transform("grpo_lambda_length", batch, fraction=0.25, tau=0.0)
  np.testing.assert_array_equal(top[:5], correct[:5])
  np.testing.assert_allclose(top[5:9], got[5:9], rtol=1e-6)


def test_grpo_lambda_without_selected_groups_is_binary_correctness():
  batch = _random(7, binary=False)
  got = _transform("grpo_lambda_length", batch, coef=0.0)
  r = _np(batch.rewards)
  want = np.where(_valid(batch), (r > 0).astype(float), r)
  np.testing.assert_array_equal(got, want)
  # No group reaches tau = 1 with mixed outcomes: only all-correct groups
  # are gated, and there the bonus of the shortest row is the largest.
  gated = _transform("grpo_lambda_length", _batch(), fraction=1.0, tau=1.0)
  np.testing.assert_array_equal(gated[:5], np.asarray(REWARDS[:5], float))


def test_grpo_lambda_correct_rows_stay_above_wrong_rows():
  for seed in range(5):
    batch = _random(seed)
    got = _transform("grpo_lambda_length", batch, fraction=1.0, tau=0.0)
    r, v, g = _np(batch.rewards), _valid(batch), np.asarray(batch.group_ids)
    for k in set(g):
      c = got[(g == k) & v & (r > 0)]
      w = got[(g == k) & v & ~(r > 0)]
      if c.size and w.size:
        assert c.min() >= 0.5 and w.max() <= 0.0 and c.min() > w.max()


@pytest.mark.parametrize("kw,arg", [({"fraction": 0.0}, "fraction"),
                                    ({"fraction": 1.5}, "fraction"),
                                    ({"tau": -0.1}, "tau"),
                                    ({"tau": 1.1}, "tau"),
                                    ({"coef": -1.0}, "coef")])
def test_grpo_lambda_rejects_bad_hyperparameters(kw, arg):
  with pytest.raises(ValueError, match=arg):
    _transform("grpo_lambda_length", _batch(), **kw)


# --- DRPO ---------------------------------------------------------------------


def _drpo(batch, **kw):
  return np.asarray(registry.make("advantage", {"name": "drpo", **kw})(batch))


def _scores(batch):
  m = _np(batch.response_mask)
  lp = np.where(m > 0, _np(batch.logprobs), 0.0)
  return lp.sum(1) / np.maximum(m.sum(1), 1.0)


@pytest.mark.parametrize("kw", [{}, {"lam": 0.5, "tau": 1.0},
                                {"max_length": 4.0, "lam": 0.05}])
def test_drpo_matches_reference(kw):
  for batch in [_batch()] + [_random(s) for s in range(4)]:
    got = _drpo(batch, **kw)
    want = ref.drpo(_np(batch.rewards), _lengths(batch), _scores(batch),
                    list(np.asarray(batch.group_ids)), _valid(batch),
                    kw.get("max_length", T), kw.get("lam", 0.1),
                    kw.get("tau", 10.0))
    m = _np(batch.response_mask)
    np.testing.assert_allclose(got, want[:, None] * m, rtol=1e-5, atol=1e-6)


def test_drpo_decouples_positives_from_negatives():
  batch = _batch()
  adv = _drpo(batch)[:, 0]
  # Mixed group 0 (5 rows): positives sum to n_g, negatives to -n_g.
  np.testing.assert_allclose(adv[[0, 2, 3]].sum(), 5.0, rtol=1e-6)
  np.testing.assert_allclose(adv[[1, 4]].sum(), -5.0, rtol=1e-6)
  # Correct rows are never negative; shorter correct rows weigh more.
  assert adv[3] > adv[2] > adv[0] > 0
  # All-correct group 1, the singleton and the padded row get 0; group 3
  # (one correct, one wrong valid row) is mixed.
  np.testing.assert_array_equal(adv[5:10], 0.0)
  np.testing.assert_allclose(adv[[10, 11]], [2.0, -2.0], rtol=1e-6)
  # The negatives' weights do not depend on the positives' lengths.
  longer = _batch(lengths=[6, 2, 6, 6, 5, 2, 5, 3, 4, 0, 6, 1])
  np.testing.assert_allclose(_drpo(longer)[[1, 4], 0], adv[[1, 4]],
                             rtol=1e-6)
  # A very large lambda makes the positives uniform.
  flat = _drpo(batch, lam=1e6)[:, 0]
  np.testing.assert_allclose(flat[[0, 2, 3]], 5.0 / 3.0, rtol=1e-5)


def test_drpo_padded_row_changes_no_other_row():
  batch = _batch()
  flipped = batch.replace(rewards=batch.rewards.at[9].set(0.0))
  np.testing.assert_array_equal(_drpo(batch), _drpo(flipped))


def test_drpo_gradient_equals_the_authors_loss_gradient():
  # The released loss (without DisCO's KL penalty), with s_i the mean token
  # log-prob and equal-size groups of 4 (Q groups):
  #   L = -(1/Q) sum_g [sum_{P_g} wbar_i s_i - tau log sum_{N_g} e^(s_j/tau)]
  # so dL/dlogprob_it = -(1/Q) wbar_i / |y_i| on positives and
  # +(1/Q) softmax(s/tau)_j / |y_j| on negatives.
  gid = np.repeat(np.arange(3), 4)
  rewards = [1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0]
  lengths = [6, 2, 3, 5, 2, 4, 6, 1, 3, 3, 6, 2]
  batch = _batch(rewards, gid, lengths, seed=3)
  batch = batch.replace(logprobs=jnp.where(batch.response_mask,
                                           batch.logprobs, 0.0))
  obj = divrl.from_config({"advantage": {"name": "drpo", "lam": 0.2},
                           "surrogate": "reinforce",
                           "aggregation": "seq-mean-token-mean"})
  grad = jax.grad(lambda lp: obj(batch.replace(logprobs=lp))[0])(
      batch.logprobs)
  m = _np(batch.response_mask)
  s = _scores(batch)
  n = m.sum(1)
  want = np.zeros_like(m)
  q = 3
  for g in range(q):
    rows = np.flatnonzero(gid == g)
    pos = [i for i in rows if rewards[i] > 0]
    neg = [i for i in rows if rewards[i] <= 0]
    if not pos or not neg:
      continue
    wp = np.exp((1 - np.array([lengths[i] for i in pos]) / T) / 0.2)
    wn = np.exp(s[neg] / 10.0)
    for i, w in zip(pos, wp / wp.sum()):
      want[i] = -w / (q * n[i]) * m[i]
    for j, w in zip(neg, wn / wn.sum()):
      want[j] = w / (q * n[j]) * m[j]
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-5, atol=1e-7)

  # The same gradient by autodiff of the authors' loss written directly.
  def authors_loss(lp):
    mm = batch.response_mask
    sc = jnp.sum(jnp.where(mm, lp, 0.0), 1) / jnp.sum(mm, 1)
    total = 0.0
    for g in range(q):
      rows = np.flatnonzero(gid == g)
      pos = [i for i in rows if rewards[i] > 0]
      neg = [i for i in rows if rewards[i] <= 0]
      if not pos or not neg:
        continue
      w = jnp.exp((1 - jnp.asarray([lengths[i] for i in pos]) / T) / 0.2)
      total += jnp.sum(w / w.sum() * sc[jnp.asarray(pos)]) - 10.0 * (
          jax.nn.logsumexp(sc[jnp.asarray(neg)] / 10.0))
    return -total / q

  np.testing.assert_allclose(np.asarray(grad), np.asarray(
      jax.grad(authors_loss)(batch.logprobs)), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kw,arg", [({"lam": 0.0}, "lam"),
                                    ({"tau": -1.0}, "tau"),
                                    ({"max_length": 0.0}, "max_length")])
def test_drpo_rejects_bad_hyperparameters(kw, arg):
  with pytest.raises(ValueError, match=arg):
    _drpo(_batch(), **kw)


# --- DLER ---------------------------------------------------------------------


def test_dler_truncation_matches_reference_and_the_indicator():
  for batch in [_batch()] + [_random(s, binary=False) for s in range(3)]:
    for max_length, scale in ((3, 0.0), (4, 0.1), (1, 0.5)):
      got = _transform("dler_truncation", batch, max_length=max_length,
                       over_scale=scale)
      want = ref.dler_truncation(_np(batch.rewards), _lengths(batch),
                                 max_length, scale)
      np.testing.assert_allclose(got, want, rtol=1e-6)
  # 0/1 rewards: r = 1[correct and |y| <= L].
  batch = _batch()
  got = _transform("dler_truncation", batch, max_length=4)
  want = ((np.asarray(REWARDS) > 0) & (np.asarray(LENGTHS) <= 4))
  np.testing.assert_array_equal(got, want.astype(float))
  # A limit above every length is the identity (the default, 4000 tokens).
  np.testing.assert_array_equal(_transform("dler_truncation", batch),
                                np.asarray(REWARDS, float))


@pytest.mark.parametrize("kw,arg", [({"max_length": 0}, "max_length"),
                                    ({"max_length": 2.5}, "max_length"),
                                    ({"over_scale": 1.5}, "over_scale"),
                                    ({"over_scale": -0.1}, "over_scale")])
def test_dler_rejects_bad_hyperparameters(kw, arg):
  with pytest.raises(ValueError, match=arg):
    _transform("dler_truncation", _batch(), **kw)


# --- FiMi-RM ------------------------------------------------------------------


@pytest.mark.parametrize("degree,ridge,keep_mean", [(1, 1e-3, True),
                                                    (2, 1e-2, True),
                                                    (3, 1e-3, False),
                                                    (1, 0.5, False)])
def test_fimi_matches_reference(degree, ridge, keep_mean):
  for batch in [_batch()] + [_random(s, binary=False, b=20, t=9)
                             for s in range(4)]:
    got = _transform("fimi_length_debias", batch, degree=degree, ridge=ridge,
                     keep_mean=keep_mean)
    want = ref.fimi_debias(_np(batch.rewards), _lengths(batch),
                           _valid(batch), degree, ridge, keep_mean)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fimi_removes_a_polynomial_length_bias_exactly():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 10, 16)
  lengths[3] = 0
  for degree, r in ((1, 0.3 + 0.2 * lengths),
                    (2, 1.0 - 0.5 * lengths + 0.05 * lengths ** 2)):
    r = r.astype(float)
    r[3] = 7.0  # the padded row's reward
    batch = _batch(r, [0] * 16, lengths, t=9)
    got = _transform("fimi_length_debias", batch, degree=degree, ridge=1e-9)
    valid = lengths > 0
    np.testing.assert_allclose(got[valid], r[valid].mean(), atol=1e-4)
    assert got[3] == 7.0
    low = _transform("fimi_length_debias", batch, degree=degree, ridge=1e-9,
                     keep_mean=False)
    np.testing.assert_allclose(low[valid], 0.0, atol=1e-4)


def test_fimi_residuals_are_uncorrelated_with_length():
  batch = _random(5, binary=False, b=24, t=12)
  got = _transform("fimi_length_debias", batch, ridge=1e-8)
  v, n = _valid(batch), _lengths(batch)
  r = _np(batch.rewards)
  np.testing.assert_allclose(got[v].mean(), r[v].mean(), atol=1e-5)
  np.testing.assert_allclose(np.sum((got[v] - got[v].mean()) * (n[v] - n[v]
                                                                .mean())),
                             0.0, atol=1e-3)


def test_fimi_constant_length_and_padding_are_left_alone():
  r = np.array([0.3, -1.0, 2.0, 0.5, 0.7])
  batch = _batch(r, [0, 0, 1, 1, 1], [4, 4, 0, 4, 4])
  np.testing.assert_allclose(_transform("fimi_length_debias", batch), r,
                             rtol=1e-6)
  # The padded row's reward does not enter the fit.
  base = _random(2, binary=False)
  pad = int(np.flatnonzero(~_valid(base))[0])
  moved = base.replace(rewards=base.rewards.at[pad].set(100.0))
  a = _transform("fimi_length_debias", base, degree=2)
  b = _transform("fimi_length_debias", moved, degree=2)
  keep = np.arange(len(a)) != pad
  np.testing.assert_allclose(a[keep], b[keep], rtol=1e-6)
  assert b[pad] == 100.0


@pytest.mark.parametrize("kw,arg", [({"degree": 0}, "degree"),
                                    ({"degree": 1.5}, "degree"),
                                    ({"ridge": 0.0}, "ridge")])
def test_fimi_rejects_bad_hyperparameters(kw, arg):
  with pytest.raises(ValueError, match=arg):
    _transform("fimi_length_debias", _batch(), **kw)


# --- RLSP ---------------------------------------------------------------------


def _token_batch(seed=0, step_ids=(7,)):
  rng = np.random.default_rng(seed)
  b = len(REWARDS)
  tokens = rng.integers(0, 10, (b, T))
  mask = np.arange(T)[None] < np.asarray(LENGTHS)[:, None]
  tokens[~mask] = step_ids[0]  # padding that must not count as steps
  return _batch(tokens=tokens), tokens, mask


@pytest.mark.parametrize("step_token,coef,max_steps",
                         [(7, 0.01, 32), ([7, 3], 0.5, 2), ((1,), 1.0, None)])
def test_rlsp_matches_reference(step_token, coef, max_steps):
  ids = [step_token] if isinstance(step_token, int) else list(step_token)
  batch, tokens, mask = _token_batch(1, ids)
  got = _transform("rlsp_step_reward", batch, step_token=step_token,
                   coef=coef, max_steps=max_steps)
  want = ref.rlsp_step_reward(REWARDS, tokens, mask, ids, coef, max_steps)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_rlsp_counts_delimiters_on_valid_tokens_only():
  tokens = np.full((2, T), 5)
  tokens[0, [0, 2, 5]] = 9
  tokens[1, [1, 4, 5]] = 9  # rows of length 6 and 3: one step in row 1
  batch = _batch([1.0, 0.0], [0, 0], [6, 3], tokens=tokens)
  np.testing.assert_array_equal(
      lr.step_counts(batch.tokens, batch.response_mask, 9), [3, 1])
  np.testing.assert_allclose(
      _transform("rlsp_step_reward", batch, step_token=9, coef=0.1,
                 max_steps=2), [1.2, 0.1], rtol=1e-6)


def test_rlsp_needs_tokens_and_valid_hyperparameters():
  with pytest.raises(ValueError, match="tokens"):
    _transform("rlsp_step_reward", _batch())
  batch, _, _ = _token_batch()
  for kw, arg in (({"step_token": "x"}, "step_token"),
                  ({"step_token": []}, "step_token"),
                  ({"step_token": True}, "step_token"),
                  ({"coef": -0.1}, "coef"),
                  ({"max_steps": 0}, "max_steps")):
    with pytest.raises(ValueError, match=arg):
      _transform("rlsp_step_reward", batch, **kw)


# --- Sharded batches ----------------------------------------------------------


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("data",))


@pytest.mark.parametrize("kind,spec", [
    ("transform", {"name": "grpo_lambda_length", "fraction": 0.5,
                   "tau": 0.0}),
    ("transform", {"name": "fimi_length_debias", "degree": 2}),
    ("advantage", {"name": "drpo"}),
])
def test_shard_map_equals_single_device(mesh, kind, spec):
  batch = _random(11, b=16, groups=5, t=8)
  batch = batch.replace(logprobs=jnp.where(batch.response_mask,
                                           batch.logprobs, -1.0))
  part = registry.make(kind, spec)
  out = (lambda b: part(b).rewards) if kind == "transform" else part
  sharded_out = ((lambda b: part(b, axis_name="data").rewards)
                 if kind == "transform"
                 else (lambda b: part(b, axis_name="data")))
  want = np.asarray(out(batch))
  fn = jax.shard_map(sharded_out, mesh=mesh,
                     in_specs=(sharding.batch_spec(batch),),
                     out_specs=P("data") if kind == "transform"
                     else P("data", None))
  got = np.asarray(jax.jit(fn)(sharding.shard_batch(batch, mesh)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The statistics are global: two rows per device alone would differ.
  local = np.concatenate([np.asarray(out(jax.tree.map(
      lambda x: x[i:i + 2], batch))) for i in range(0, 16, 2)])
  assert not np.allclose(local, want)
