"""divrl.likelihood_losses (REDI, CPL, trajectory balance, REFUEL, BRAIn,
RPO's SFT term) against tests/references/likelihood_losses.py on ragged
groups with a singleton, an all-equal-reward group, an empty group and an
all-padding row (garbage in the padding); gradients against closed forms;
the identities each paper implies; sharding; bad hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import aggregation as agg
from divrl import likelihood_losses as ll
from divrl import registry
from divrl.sharding import make_mesh
from tests.references import likelihood_losses as ref

B, T = 10, 5
# Groups: 0 = rows {0, 2, 5, 8} (rewards 1, 0, 1, 0.5: one tie), 1 = {1, 4,
# 7} (all 0.3), 2 = {3} (singleton), 3 = {6, 9} with row 9 all padding, 4
# empty.
IDS = np.array([0, 1, 0, 2, 1, 0, 3, 1, 0, 3])
REWARDS = np.array([1.0, 0.3, 0.0, 2.0, 0.3, 1.0, 0.7, 0.3, 0.5, 1.0])
LENGTHS = np.array([5, 3, 4, 2, 5, 1, 3, 4, 2, 0])
SURROGATES = ("redi", "cpl", "trajectory_balance", "refuel", "brain")


def _batch(seed=0, rewards=REWARDS, on_policy=False, garbage=True):
  rng = np.random.default_rng(seed)
  mask = np.arange(T)[None] < LENGTHS[:, None]
  lp = -rng.uniform(0.1, 2.0, (B, T))
  old = lp if on_policy else lp + rng.normal(0, 0.3, lp.shape)
  rf = lp + rng.normal(0, 0.5, lp.shape)
  if garbage:
    lp, old, rf = lp.copy(), old.copy(), rf.copy()
    for x in (lp, old, rf):
      x[~mask] = rng.choice([np.nan, np.inf, -1e4, 37.0], (~mask).sum())
  f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  return divrl.Batch(
      logprobs=f(lp), response_mask=jnp.asarray(mask), rewards=f(rewards),
      group_ids=jnp.asarray(IDS, jnp.int32), old_logprobs=f(old),
      ref_logprobs=f(rf),
      sample_source=jnp.asarray(np.arange(B) % 3 == 1, jnp.int32),
      num_groups=5)


def _np(batch, field):
  return np.asarray(getattr(batch, field), np.float64)


def _part(kind, name, **kw):
  return registry.make(kind, {"name": name, **kw})


def _loss_and_grad(fn, batch):
  """seq-mean-token-mean loss of ``fn(batch)`` and its gradient in the
  log-probs."""
  def loss(lp):
    out = fn(batch.replace(logprobs=lp))
    return agg.finalize(agg.seq_mean_token_mean(out, batch.mask))
  value, grad = jax.value_and_grad(loss)(batch.logprobs)
  return float(value), np.asarray(grad, np.float64)


def _check_against(fn, batch, total, grad_s, values, gamma=1.0):
  mask = np.asarray(batch.response_mask)
  out = np.asarray(fn(batch), np.float64)
  np.testing.assert_allclose(out, values[:, None] * mask, rtol=2e-5,
                             atol=1e-6)
  got, grad = _loss_and_grad(fn, batch)
  np.testing.assert_allclose(got, total, rtol=2e-5, atol=1e-6)
  want = grad_s[:, None] * ref.token_powers(mask, gamma)
  np.testing.assert_allclose(grad, want, rtol=2e-5, atol=1e-6)
  assert np.all(grad[~mask] == 0)


# --- values and gradients against the reference ---------------------------


@pytest.mark.parametrize("kw", [{}, {"negative_weight": 0.5,
                                     "threshold": 0.4}])
def test_redi_matches_reference(kw):
  b = _batch(1)
  fn = lambda x: _part("surrogate", "redi", **kw)(x, None)  # noqa: E731
  mask = np.asarray(b.response_mask)
  want, total = ref.redi(_np(b, "logprobs"), REWARDS, mask, **kw)
  out = np.asarray(fn(b))
  np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)
  got, grad = _loss_and_grad(fn, b)
  np.testing.assert_allclose(got, total, rtol=1e-5)
  # d/dl: -1/n_i on positive tokens, +w/n_i on negative ones.
  n = mask.sum(1)
  w = kw.get("negative_weight", 0.8)
  pos = REWARDS > kw.get("threshold", 0.0)
  coef = np.where(pos, -1.0, w) / np.maximum(n, 1) / (n > 0).sum()
  np.testing.assert_allclose(grad, coef[:, None] * mask, rtol=1e-5,
                             atol=1e-7)


@pytest.mark.parametrize("kw", [{}, {"alpha": 0.7, "lam": 1.0,
                                     "gamma": 0.8}])
def test_cpl_matches_reference(kw):
  b = _batch(2)
  fn = lambda x: _part("surrogate", "cpl", **kw)(x, None)  # noqa: E731
  total, grad_s, values = ref.cpl(_np(b, "logprobs"), REWARDS, IDS,
                                  np.asarray(b.response_mask), **kw)
  _check_against(fn, b, total, grad_s, values, kw.get("gamma", 1.0))
  # No pairs: the all-equal group, the singleton, the padded group, padding.
  np.testing.assert_array_equal(values[[1, 4, 7, 3, 6, 9]], 0.0)


@pytest.mark.parametrize("kw", [{}, {"reward_floor": 0.1,
                                     "temperature": 0.5}])
def test_trajectory_balance_matches_reference(kw):
  b = _batch(3)
  fn = lambda x: _part("surrogate", "trajectory_balance", **kw)(  # noqa
      x, None)
  total, grad_s, values = ref.trajectory_balance(
      _np(b, "logprobs"), REWARDS, IDS, np.asarray(b.response_mask), **kw)
  _check_against(fn, b, total, grad_s, values)
  np.testing.assert_array_equal(values[[3, 6, 9]], 0.0)  # singletons


@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_refuel_matches_reference(eta):
  b = _batch(4)
  fn = lambda x: _part("surrogate", "refuel", eta=eta)(x, None)  # noqa
  total, grad_s, values = ref.refuel(
      _np(b, "logprobs"), _np(b, "old_logprobs"), REWARDS, IDS,
      np.asarray(b.response_mask), eta=eta)
  _check_against(fn, b, total, grad_s, values)
  assert np.all(values[[1, 4, 7]] > 0)  # equal rewards still regress
  np.testing.assert_array_equal(values[[3, 6, 9]], 0.0)


@pytest.mark.parametrize("kw", [{}, {"beta": 0.25, "baseline": False}])
def test_brain_matches_reference(kw):
  b = _batch(5)
  fn = lambda x: _part("surrogate", "brain", **kw)(x, None)  # noqa: E731
  total, grad_s, values = ref.brain(
      _np(b, "logprobs"), _np(b, "old_logprobs"), _np(b, "ref_logprobs"),
      REWARDS, IDS, np.asarray(b.response_mask), **kw)
  _check_against(fn, b, total, grad_s, values)
  assert values[9] == 0.0


def test_rpo_sft_matches_reference_and_is_zero_on_policy_rows():
  b = _batch(6)
  fn = _part("regularizer", "rpo_sft")
  mask = np.asarray(b.response_mask)
  src = np.asarray(b.sample_source)
  want = ref.rpo_sft(_np(b, "logprobs"), src, mask)
  out = np.asarray(fn(b), np.float64)
  np.testing.assert_allclose(out, want, rtol=1e-6)
  assert np.all(out[src == 0] == 0)
  grad = np.asarray(jax.grad(lambda lp: jnp.sum(
      fn(b.replace(logprobs=lp)) * b.mask))(b.logprobs))
  np.testing.assert_array_equal(
      grad, -((src == 1)[:, None] & mask).astype(np.float32))


# --- closed forms and identities ------------------------------------------


def _pair_batch(lp, rewards, old=None, rf=None, mask=None):
  lp = np.asarray(lp, np.float32)
  mask = np.ones(lp.shape, bool) if mask is None else mask
  f = lambda x: None if x is None else jnp.asarray(x, jnp.float32)  # noqa
  return divrl.Batch(
      logprobs=f(lp), response_mask=jnp.asarray(mask),
      rewards=f(rewards), group_ids=jnp.zeros(lp.shape[0], jnp.int32),
      old_logprobs=f(old), ref_logprobs=f(rf), num_groups=1)


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_cpl_pair_gradient_is_sigmoid_of_minus_the_margin(lam):
  # One preferred pair: L = -log sigma(alpha (S_w - lam S_l)), so
  # dL/dS_w = -alpha sigma(-alpha d), dL/dS_l = alpha lam sigma(-alpha d).
  lp = np.array([[-0.3, -1.2, -0.4], [-0.9, -0.2, -2.0]])
  b = _pair_batch(lp, [1.0, 0.0])
  alpha = 0.6
  fn = lambda x: ll.cpl_part(x, None, alpha=alpha, lam=lam)  # noqa: E731
  value, grad = _loss_and_grad(fn, b)
  s_w, s_l = lp.sum(1)
  d = s_w - lam * s_l
  sig = 1 / (1 + np.exp(alpha * d))
  np.testing.assert_allclose(value, np.log1p(np.exp(-alpha * d)), rtol=1e-6)
  np.testing.assert_allclose(grad[0], -alpha * sig * np.ones(3), rtol=1e-5)
  np.testing.assert_allclose(grad[1], alpha * lam * sig * np.ones(3),
                             rtol=1e-5)


def test_cpl_without_bias_is_shift_invariant_and_ignores_ties():
  b = _batch(7)
  fn = lambda x: _part("surrogate", "cpl", lam=1.0)(x, None)  # noqa: E731
  base, _ = _loss_and_grad(fn, b)
  # Adding c to the first token of every row of group 0 shifts each S by c.
  lp = np.asarray(b.logprobs).copy()
  lp[IDS == 0, 0] += 0.7
  shifted, _ = _loss_and_grad(fn, b.replace(logprobs=jnp.asarray(lp)))
  np.testing.assert_allclose(shifted, base, rtol=1e-5)
  # Making rows 0 and 5 (tied) unequal adds exactly one pair.
  r = REWARDS.copy()
  r[5] = 1.5
  _, _, values = ref.cpl(_np(b, "logprobs"), r, IDS,
                         np.asarray(b.response_mask), lam=1.0)
  out = np.asarray(fn(b.replace(rewards=jnp.asarray(r, jnp.float32))))
  np.testing.assert_allclose(out[:, 0], values * (LENGTHS > 0), rtol=2e-5)


def test_redi_is_half_the_released_pairwise_loss():
  # Released REDI: mean over (positive, negative) pairs of -lp+/|y+| +
  # 0.8 lp-/|y-|; with one pair per group our mean over sequences is half.
  rng = np.random.default_rng(8)
  lens = np.array([4, 2, 3, 5])
  mask = np.arange(5)[None] < lens[:, None]
  lp = -rng.uniform(0.1, 2.0, (4, 5))
  b = divrl.Batch(logprobs=jnp.asarray(lp, jnp.float32),
                  response_mask=jnp.asarray(mask),
                  rewards=jnp.asarray([1.0, 0.0, 0.0, 1.0]),
                  group_ids=jnp.asarray([0, 0, 1, 1]), num_groups=2)
  value, _ = _loss_and_grad(lambda x: ll.redi_part(x, None), b)
  norm = (lp * mask).sum(1) / lens
  released = np.mean([-norm[0] + 0.8 * norm[1], -norm[3] + 0.8 * norm[2]])
  np.testing.assert_allclose(2 * value, released, rtol=1e-5)


def test_trajectory_balance_gradient_is_the_group_variance_gradient():
  # With log Z_g the stop-gradient group mean, the gradient equals that of
  # the group variance of log R - S (no stop-gradient), since residuals sum
  # to 0 in every group.
  b = _batch(9, garbage=False)
  ok = np.asarray(b.response_mask).any(1)

  def variance(lp):
    s = ll.sequence_logprob(lp, b.mask)
    zeta = ll.log_reward(b.rewards) - s
    total = 0.0
    for g in range(5):
      sel = jnp.asarray((IDS == g) & ok)
      n = jnp.sum(sel)
      mean = jnp.sum(jnp.where(sel, zeta, 0.0)) / jnp.maximum(n, 1)
      total = total + jnp.sum(jnp.where(sel, (zeta - mean) ** 2, 0.0))
    return total / ok.sum()

  _, grad = _loss_and_grad(lambda x: ll.trajectory_balance_part(x, None), b)
  want = np.asarray(jax.grad(variance)(b.logprobs))
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


def test_trajectory_balance_is_zero_when_the_policy_is_proportional_to_r():
  # S_i = log R_i + c_g in every group: the trajectory balance holds.
  rewards = np.array([1.0, 0.25, 0.0, 0.5])
  log_r = np.log(np.maximum(rewards, 1e-3))
  lp = np.stack([np.full(4, (lr - 3.0) / 4) for lr in log_r])
  b = _pair_batch(lp, rewards)
  out = np.asarray(ll.trajectory_balance_part(b, None))
  np.testing.assert_allclose(out, 0.0, atol=1e-5)


def test_refuel_pair_gradient_and_released_scale():
  lp = np.array([[-0.3, -1.2], [-0.9, -0.2]])
  old = lp + np.array([[0.1, -0.3], [0.2, 0.05]])
  b = _pair_batch(lp, [1.0, 0.0], old=old)
  eta = 0.5
  fn = lambda x: ll.refuel_part(x, None, eta=eta)  # noqa: E731
  value, grad = _loss_and_grad(fn, b)
  d = (lp - old).sum(1)
  e = (d[0] - d[1]) / eta - 1.0
  np.testing.assert_allclose(value, e * e, rtol=1e-5)  # the paper's loss
  released = ((d[0] - d[1]) - eta * 1.0) ** 2  # the code's form
  np.testing.assert_allclose(value * eta ** 2, released, rtol=1e-5)
  np.testing.assert_allclose(grad[0], 2 * e / eta * np.ones(2), rtol=1e-5)
  np.testing.assert_allclose(grad[1], -2 * e / eta * np.ones(2), rtol=1e-5)


def test_refuel_on_policy_pushes_the_better_response_up():
  b = _batch(10, on_policy=True)
  fn = lambda x: _part("surrogate", "refuel")(x, None)  # noqa: E731
  value, grad = _loss_and_grad(fn, b.replace(old_logprobs=None))
  # On-policy every log-ratio is 0: the loss is the size-weighted mean of
  # the groups' mean squared reward differences.
  ok = LENGTHS > 0
  want = 0.0
  for g in range(5):
    r = REWARDS[(IDS == g) & ok]
    if len(r) > 1:
      pairs = [(a - c) ** 2 for k, a in enumerate(r) for c in r[k + 1:]]
      want += len(r) / ok.sum() * np.mean(pairs)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  g0 = np.flatnonzero(IDS == 0)
  best, worst = g0[np.argmax(REWARDS[g0])], g0[np.argmin(REWARDS[g0])]
  assert grad[best, 0] < 0 < grad[worst, 0]


def test_brain_on_policy_gradient_is_weights_minus_uniform():
  b = _batch(11, on_policy=True, garbage=False)
  fn = lambda x: _part("surrogate", "brain")(x, None)  # noqa: E731
  _, grad = _loss_and_grad(fn, b)
  mask = np.asarray(b.response_mask)
  ok = mask.any(1)
  s_ref = (np.asarray(b.ref_logprobs) * mask).sum(1)
  s_q = (np.asarray(b.logprobs) * mask).sum(1)
  for g in range(5):
    rows = np.flatnonzero((IDS == g) & ok)
    if not len(rows):
      continue
    logw = s_ref[rows] - s_q[rows] + REWARDS[rows]
    alpha = np.exp(logw - logw.max())
    alpha /= alpha.sum()
    want = -(alpha - 1 / len(rows)) * len(rows) / ok.sum()
    np.testing.assert_allclose(grad[rows, 0], want, rtol=1e-4, atol=1e-7)


def test_brain_with_a_hard_posterior_is_dpo_against_the_proposal():
  # Two samples and beta -> 0 (alpha -> one-hot on the winner): the loss is
  # -log sigmoid((S_w - S_q,w) - (S_l - S_q,l)), DPO with the proposal as
  # reference and beta_DPO = 1.
  lp = np.array([[-0.3, -1.2], [-0.9, -0.2]])
  old = lp + np.array([[0.4, -0.3], [0.2, -0.5]])
  b = _pair_batch(lp, [1.0, 0.0], old=old, rf=old)
  value, _ = _loss_and_grad(lambda x: ll.brain_part(x, None, beta=1e-3), b)
  h = (lp - old).sum(1)
  np.testing.assert_allclose(value, np.log1p(np.exp(-(h[0] - h[1]))),
                             rtol=1e-5)


def test_padding_rows_do_not_change_other_rows():
  b = _batch(12)
  keep = LENGTHS > 0
  small = jax.tree.map(lambda x: x[keep], b)
  for name in SURROGATES:
    fn = _part("surrogate", name)
    full = np.asarray(fn(b, None))
    part = np.asarray(fn(small, None))
    np.testing.assert_allclose(full[keep], part, rtol=1e-5, atol=1e-6,
                               err_msg=name)
    assert np.all(full[~keep] == 0), name
    _, grad = _loss_and_grad(lambda x, fn=fn: fn(x, None), b)
    assert np.all(np.isfinite(grad)), name


@pytest.mark.parametrize("name", ("cpl", "trajectory_balance", "refuel",
                                  "brain"))
def test_shard_map_matches_single_device(name):
  mesh = make_mesh((2,), ("data",))
  b = _batch(13, garbage=False)
  fn = registry.lookup("surrogate", name)
  spec = jax.tree.map(lambda x: P("data"), b)
  placed = jax.device_put(b, jax.tree.map(
      lambda s: jax.sharding.NamedSharding(mesh, s), spec))
  sharded = jax.jit(jax.shard_map(
      lambda x: fn(x, None, axis_name="data"), mesh=mesh, in_specs=(spec,),
      out_specs=P("data")))(placed)
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(fn(b, None)),
                             rtol=1e-5, atol=1e-6)


# --- bad hyperparameters ------------------------------------------------------


@pytest.mark.parametrize("name,kw,arg", [
    ("redi", {"negative_weight": -0.1}, "negative_weight"),
    ("redi", {"threshold": float("nan")}, "threshold"),
    ("cpl", {"alpha": 0.0}, "alpha"),
    ("cpl", {"lam": 1.5}, "lam"),
    ("cpl", {"gamma": 0.0}, "gamma"),
    ("trajectory_balance", {"reward_floor": 0.0}, "reward_floor"),
    ("trajectory_balance", {"temperature": -1.0}, "temperature"),
    ("refuel", {"eta": 0.0}, "eta"),
    ("brain", {"beta": -2.0}, "beta"),
    ("brain", {"baseline": "yes"}, "baseline"),
])
def test_bad_hyperparameters_are_refused(name, kw, arg):
  with pytest.raises(ValueError, match=arg):
    _part("surrogate", name, **kw)(_batch(), None)


def test_surrogates_need_scalar_rewards():
  b = _batch()
  b = b.replace(rewards=jnp.stack([b.rewards, b.rewards], 1))
  for name in SURROGATES:
    with pytest.raises(ValueError, match=name):
      _part("surrogate", name)(b, None)
