"""KL estimators, KL placements and the entropy regularizer
(divrl/divergences.py).

Values against the NumPy references in ``tests/references/divergences.py``;
straight-through (``+``) and importance-corrected KL gradients; KL in the
reward; the entropy regularizer. Exact expected gradients on a tabular policy:

1. KL estimators placed in the loss, per position with the prefix
   distribution held fixed: k1 gives 0; k2 and every ``+`` form give
   ``grad KL(pi||ref)``; k3 gives ``grad KL(ref||pi)``; not the sequence-level
   gradient for ``T > 1``.
2. KL in the reward (``kl_in_reward``, k1) with an RLOO advantage and the
   on-policy PPO-clip (= REINFORCE) surrogate, ``seq-mean-token-sum``, zero
   task reward: ``E[grad loss] = beta * grad KL_seq(pi || ref)``, the full
   sequence-level reverse KL including the prefix term. Derivation: the
   shaped reward is ``r(y) = -beta log(pi(y)/ref(y))`` (a constant in the
   loss); RLOO is unbiased, so ``E[grad loss] = -sum_y grad pi(y) r(y) =
   beta sum_y grad pi(y) log(pi/ref) = beta grad KL_seq`` because the
   remaining term of ``grad KL_seq`` is ``beta sum_y pi grad log pi = 0``.
   Dr.GRPO scales it by ``(G-1)/G``.
3. Importance-corrected KL in the loss (DeepSeek-V3.2, TRL
   ``use_bias_correction_kl``), samples from ``pi_old != pi``: for k1 and k3
   with the ratio not detached, ``E_{pi_old}[grad(rho k)] = grad sum_t
   E_{prefix ~ pi_old} KL(pi_t || ref_t)``; with the ratio detached, k3 gives
   the forward ``KL(ref_t || pi_t)`` instead.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import controllers, divergences, testing
from tests.conftest import _clean, _np, _with_extras, make_batch
from tests.references import divergences as ref
from tests.test_surrogates import _inputs


# --- KL estimators ------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "abs", "k2", "k3"])
def test_kl_estimates_match_reference(estimator):
  logp, refl, _ = _inputs(seed=3, gap=2.0)
  got = divergences.kl_estimate(jnp.asarray(logp, jnp.float32),
                                jnp.asarray(refl, jnp.float32), estimator)
  np.testing.assert_allclose(got, ref.kl_estimate(logp, refl, estimator),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", ["k1", "abs", "k2", "k3"])
def test_straight_through_kl_has_value_of_base_and_gradient_of_k2(estimator):
  logp, refl, _ = (jnp.asarray(x, jnp.float32) for x in _inputs(seed=4))
  plus = lambda l: divergences.kl_estimate(l, refl, estimator + "+")
  np.testing.assert_allclose(plus(logp),
                             divergences.kl_estimate(logp, refl, estimator),
                             rtol=1e-6)
  g_plus = jax.grad(lambda l: jnp.sum(plus(l)))(logp)
  np.testing.assert_allclose(g_plus, logp - refl, rtol=1e-5, atol=1e-6)


def test_kl_gradients_per_token():
  logp, refl, _ = (jnp.asarray(x, jnp.float32) for x in _inputs(seed=5))
  grad = lambda e: jax.grad(lambda l: jnp.sum(
      divergences.kl_estimate(l, refl, e)))(logp)
  np.testing.assert_allclose(grad("k1"), jnp.ones_like(logp))
  np.testing.assert_allclose(grad("k2"), logp - refl, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad("k3"), 1 - jnp.exp(refl - logp), rtol=1e-5,
                             atol=1e-6)


def test_unknown_estimator_named():
  x = jnp.zeros((1, 1))
  with pytest.raises(ValueError, match="estimator"):
    divergences.kl_estimate(x, x, "k4")


# --- KL: importance-corrected, in the loss ------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "abs", "k2", "k3"])
def test_is_corrected_kl_values(estimator):
  batch = make_batch(1)
  m = np.asarray(batch.response_mask)
  got = divergences.kl_part(divrl.objective.clean_padding(batch),
                            estimator=estimator, is_correction=True)
  want = ref.is_corrected_kl(_clean(batch.logprobs, m),
                             _clean(batch.old_logprobs, m),
                             _clean(batch.ref_logprobs, m), m, estimator)
  np.testing.assert_allclose(_clean(got, m), want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("detach", [False, True])
def test_is_corrected_k3_gradient_per_token(detach):
  rng = np.random.default_rng(0)
  lp, old, lr = (jnp.asarray(-rng.uniform(0.1, 3, (4, 5)), jnp.float32)
                 for _ in range(3))
  g = jax.grad(lambda x: jnp.sum(divergences.importance_corrected_kl(
      x, lr, old, "k3", detach_ratio=detach, is_log_ratio_clip=None)))(lp)
  rho = np.exp(_np(lp) - _np(old))
  u = _np(lp) - _np(lr)
  k3 = np.exp(-u) + u - 1.0
  # d/dl [rho k3] = rho k3 (through rho) + rho (1 - e^{-u}) (through k3).
  want = rho * (1.0 - np.exp(-u)) + (0.0 if detach else rho * k3)
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_is_corrected_on_policy_value_equals_plain_estimate():
  batch = make_batch(2, with_old=False)
  clean = divrl.objective.clean_padding(batch)
  a = divergences.kl_part(clean, estimator="k3", is_correction=True)
  b = divergences.kl_part(clean, estimator="k3")
  np.testing.assert_allclose(a, b, rtol=1e-6)
  # ...but the ratio's gradient still acts unless detached.
  ga = jax.grad(lambda lp: jnp.sum(divergences.kl_part(
      clean.replace(logprobs=lp), estimator="k3", is_correction=True)))(
          clean.logprobs)
  gb = jax.grad(lambda lp: jnp.sum(divergences.kl_part(
      clean.replace(logprobs=lp), estimator="k3")))(clean.logprobs)
  np.testing.assert_allclose(ga - gb, b, rtol=1e-5, atol=1e-6)


def test_kl_bad_inputs_are_named():
  batch = make_batch(0, with_ref=False)
  with pytest.raises(ValueError, match="Batch.ref_logprobs"):
    divergences.kl_part(batch)
  with pytest.raises(ValueError, match="Batch.ref_logprobs"):
    divergences.kl_in_reward_part(batch)
  with pytest.raises(ValueError, match="estimator"):
    divergences.kl_in_reward_part(make_batch(0), estimator="k9")
  multi = make_batch(0).replace(rewards=jnp.zeros((12, 2)))
  with pytest.raises(ValueError, match="Batch.rewards"):
    divergences.kl_in_reward_part(multi)


# --- KL in the reward ---------------------------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "k3"])
@pytest.mark.parametrize("with_token_rewards", [False, True])
@pytest.mark.parametrize("on_policy", [False, True])
def test_kl_in_reward_values(estimator, with_token_rewards, on_policy):
  batch = _with_extras(3, with_old=not on_policy, empty_rows=(0, 5))
  m = np.asarray(batch.response_mask)
  tr = None
  if with_token_rewards:
    tr = np.random.default_rng(0).normal(size=m.shape)
    tr[~m] = np.nan  # garbage on padding
    batch = batch.replace(token_rewards=jnp.asarray(tr, jnp.float32))
  coef = 0.3
  out = jax.jit(lambda b: divergences.kl_in_reward_part(
      b, coef=coef, estimator=estimator))(batch)
  old = batch.logprobs if on_policy else batch.old_logprobs
  want_r, want_tr = ref.kl_in_reward(
      _np(batch.rewards), None if tr is None else np.where(m, tr, 0.0), m,
      _clean(old, m), _clean(batch.ref_logprobs, m), coef, estimator)
  np.testing.assert_allclose(out.rewards, want_r, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(_clean(out.token_rewards, m), want_tr, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(np.asarray(out.token_rewards)[~m], 0.0)
  # The empty rows keep their reward and get no token rewards.
  np.testing.assert_allclose(out.rewards[0], batch.rewards[0])


def test_kl_in_reward_traced_coef_under_jit():
  batch = make_batch(4)
  f = jax.jit(lambda b, c: divergences.kl_in_reward_part(b, coef=c).rewards)
  np.testing.assert_allclose(f(batch, jnp.float32(0.2)),
                             divergences.kl_in_reward_part(batch, coef=0.2).rewards,
                             rtol=1e-6)


# --- Entropy regularizer ------------------------------------------------------


def test_entropy_regularizer_in_objective_token_mean():
  batch = _with_extras(5, ties=False)
  objective = divrl.build(
      "grpo", "ppo_clip", aggregation="token-mean",
      regularizers=[divrl.regularizer({"name": "entropy", "coef": -0.1})])
  loss, metrics = objective(batch)
  m = np.asarray(batch.response_mask)
  mean_h = _clean(batch.entropy, m).sum() / m.sum()
  np.testing.assert_allclose(metrics["regularizer/entropy"], mean_h, rtol=1e-5)
  np.testing.assert_allclose(loss, metrics["loss/policy"] - 0.1 * mean_h,
                             rtol=1e-5, atol=1e-6)
  # A controller drives it at call time, under jit.
  ctrl = controllers.adaptive_entropy(init_coef=0.3)
  loss2, _ = jax.jit(lambda b, s: objective(
      b, coefs={"entropy": ctrl.loss_coef(s)}))(batch, ctrl.init())
  np.testing.assert_allclose(loss2, metrics["loss/policy"] - 0.3 * mean_h,
                             rtol=1e-5, atol=1e-6)


def test_entropy_regularizer_needs_entropy():
  with pytest.raises(ValueError, match="Batch.entropy"):
    divergences.entropy_part(make_batch(0))


# --- Exact expected gradients: KL estimators placed in the loss ---------------


POLICY = testing.TabularPolicy(vocab=3, length=2)


SEQS = POLICY.sequences()


def _assert_tree_close(a, b, rtol=2e-4, atol=2e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def _kl_objective(estimator):
  zero = lambda batch: jnp.zeros_like(batch.logprobs)
  return divrl.build(zero, lambda batch, adv: jnp.zeros_like(adv),
                     regularizers=[divrl.regularizer(
                         {"name": "kl", "estimator": estimator, "coef": 1.0})],
                     aggregation="seq-mean-token-sum")


def _expected_kl_grad(policy, params, ref_params, estimator):
  loss_fn = testing.objective_loss(policy, _kl_objective(estimator),
                                   ref_params=ref_params)
  return testing.expected_group_gradient(policy, params, 1, loss_fn)


def _conditional_kls(policy, params, ref_params, prefix_params, reverse):
  """sum_t E_{prefix ~ pi(prefix_params)} KL_t of the conditionals."""
  total = 0.0
  for t in range(policy.length):
    logp = jax.nn.log_softmax(params[t], axis=-1)
    logq = jax.nn.log_softmax(ref_params[t], axis=-1)
    if reverse:  # KL(pi || ref)
      kl = jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)
    else:  # KL(ref || pi)
      kl = jnp.sum(jnp.exp(logq) * (logq - logp), axis=-1)
    if t == 0:
      total = total + kl
      continue
    # Probability of each prefix under the (fixed) sampling policy.
    prefixes = list(itertools.product(range(policy.vocab), repeat=t))
    for prefix in prefixes:
      pr = 1.0
      for s, tok in enumerate(prefix):
        pr = pr * jax.nn.softmax(prefix_params[s][prefix[:s]])[tok]
      total = total + jax.lax.stop_gradient(pr) * kl[prefix]
  return total


@pytest.mark.parametrize("length", [1, 2])
def test_k1_in_loss_has_zero_expected_gradient(length):
  policy = testing.TabularPolicy(vocab=4, length=length)
  params, ref_params = policy.init(jax.random.key(7)), policy.init(
      jax.random.key(8))
  g = _expected_kl_grad(policy, params, ref_params, "k1")
  for leaf in jax.tree.leaves(g):
    np.testing.assert_allclose(leaf, 0.0, atol=2e-6)


@pytest.mark.parametrize("estimator,reverse", [("k2", True), ("k3", False),
                                               ("k1+", True), ("k3+", True)])
@pytest.mark.parametrize("length", [1, 2])
def test_k2_gives_reverse_and_k3_forward_kl_gradient(estimator, reverse,
                                                     length):
  policy = testing.TabularPolicy(vocab=4, length=length)
  params, ref_params = policy.init(jax.random.key(9)), policy.init(
      jax.random.key(10))
  g = _expected_kl_grad(policy, params, ref_params, estimator)
  want = jax.grad(lambda p: _conditional_kls(policy, p, ref_params, params,
                                             reverse))(params)
  _assert_tree_close(g, want)


def test_per_token_k2_is_not_the_full_sequence_kl_gradient():
  """Documented limitation: the prefix-distribution term is missing (T > 1)."""
  policy = testing.TabularPolicy(vocab=4, length=2)
  params, ref_params = policy.init(jax.random.key(11)), policy.init(
      jax.random.key(12))
  g = _expected_kl_grad(policy, params, ref_params, "k2")

  def seq_kl(p):
    seqs = policy.sequences()
    lp = jnp.sum(policy.logprobs(p, seqs), 1)
    lq = jnp.sum(policy.logprobs(ref_params, seqs), 1)
    return jnp.sum(jnp.exp(lp) * (lp - lq))

  full = jax.grad(seq_kl)(params)
  # Same gradient for the last position's table, different for the first.
  np.testing.assert_allclose(g[1], full[1], rtol=2e-4, atol=2e-6)
  assert float(jnp.max(jnp.abs(g[0] - full[0]))) > 1e-2


# --- Exact expected gradients: KL in the reward -------------------------------


def _seq_kl(policy, params, ref_params):
  seqs = policy.sequences()
  lp = jnp.sum(policy.logprobs(params, seqs), 1)
  lq = jnp.sum(policy.logprobs(ref_params, seqs), 1)
  return jnp.sum(jnp.exp(lp) * (lp - lq))


def _kl_in_reward_grad(advantage, params, ref_params, beta, group_size):
  objective = divrl.build(
      advantage, "ppo_clip", aggregation="seq-mean-token-sum",
      transforms=[{"name": "kl_in_reward", "coef": beta,
                   "estimator": "k1"}])
  loss_fn = testing.objective_loss(POLICY, objective, ref_params=ref_params)
  return testing.expected_group_gradient(POLICY, params, group_size, loss_fn)


@pytest.mark.parametrize("group_size", [2, 3])
def test_k1_in_reward_with_rloo_gives_sequence_kl_gradient(group_size):
  params = POLICY.init(jax.random.key(0))
  ref_params = POLICY.init(jax.random.key(1))
  beta = 0.3
  g = _kl_in_reward_grad("rloo", params, ref_params, beta, group_size)
  want = jax.grad(lambda p: beta * _seq_kl(POLICY, p, ref_params))(params)
  _assert_tree_close(g, want)
  # The prefix term is present: the first position's table gets the full
  # sequence-level gradient, not the per-position conditional one.
  assert float(jnp.max(jnp.abs(want[0]))) > 1e-2


def test_k1_in_reward_with_dr_grpo_is_scaled_by_g_minus_1_over_g():
  params = POLICY.init(jax.random.key(2))
  ref_params = POLICY.init(jax.random.key(3))
  beta, group_size = 0.5, 3
  g = _kl_in_reward_grad("dr_grpo", params, ref_params, beta, group_size)
  scale = beta * (group_size - 1) / group_size
  want = jax.grad(lambda p: scale * _seq_kl(POLICY, p, ref_params))(params)
  _assert_tree_close(g, want)


def test_kl_in_reward_carries_no_gradient_itself():
  params = POLICY.init(jax.random.key(4))
  ref_params = POLICY.init(jax.random.key(5))
  tokens = SEQS[jnp.arange(4)]

  def shaped_sum(p):
    batch = divrl.Batch(
        logprobs=POLICY.logprobs(p, tokens),
        response_mask=jnp.ones(tokens.shape, bool),
        rewards=jnp.zeros((4,)), group_ids=jnp.zeros((4,), jnp.int32),
        ref_logprobs=POLICY.logprobs(ref_params, tokens), num_groups=1)
    out = divergences.kl_in_reward_part(batch, coef=0.7)
    return jnp.sum(out.rewards) + jnp.sum(out.token_rewards)

  for leaf in jax.tree.leaves(jax.grad(shaped_sum)(params)):
    np.testing.assert_array_equal(leaf, 0.0)


# --- Importance-corrected KL in the loss, off-policy samples -----------------


def _prefix_weighted_kls(policy, params, ref_params, prefix_params, reverse):
  """sum_t E_{prefix ~ pi(prefix_params)} KL_t (prefix weights constant)."""
  total = 0.0
  for t in range(policy.length):
    logp = jax.nn.log_softmax(params[t], axis=-1)
    logq = jax.nn.log_softmax(ref_params[t], axis=-1)
    if reverse:
      kl = jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)
    else:
      kl = jnp.sum(jnp.exp(logq) * (logq - logp), axis=-1)
    if t == 0:
      total = total + kl
      continue
    for prefix in itertools.product(range(policy.vocab), repeat=t):
      pr = 1.0
      for s, tok in enumerate(prefix):
        pr = pr * jax.nn.softmax(prefix_params[s][prefix[:s]])[tok]
      total = total + jax.lax.stop_gradient(pr) * kl[prefix]
  return total


def _expected_is_kl_grad(params, old_params, ref_params, estimator,
                         detach_ratio):
  objective = divrl.build(
      lambda batch: jnp.zeros_like(batch.logprobs),
      lambda batch, adv: jnp.zeros_like(adv),
      regularizers=[divrl.regularizer({
          "name": "kl", "estimator": estimator, "coef": 1.0,
          "is_correction": True, "detach_ratio": detach_ratio})],
      aggregation="seq-mean-token-sum")
  old_probs = POLICY.probs(old_params)
  old_lp = POLICY.logprobs(old_params, SEQS)
  ref_lp = POLICY.logprobs(ref_params, SEQS)

  def total(p):
    def one(i):
      batch = divrl.Batch(
          logprobs=POLICY.logprobs(p, SEQS[i][None]),
          response_mask=jnp.ones((1, POLICY.length), bool),
          rewards=jnp.zeros((1,)), group_ids=jnp.zeros((1,), jnp.int32),
          old_logprobs=old_lp[i][None], ref_logprobs=ref_lp[i][None],
          num_groups=1)
      return objective(batch)[0]
    losses = jax.vmap(one)(jnp.arange(SEQS.shape[0]))
    return jnp.sum(old_probs * losses)

  return jax.grad(total)(params)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_is_corrected_kl_gives_reverse_kl_gradient_off_policy(estimator):
  params = POLICY.init(jax.random.key(6))
  old_params = POLICY.init(jax.random.key(7))
  ref_params = POLICY.init(jax.random.key(8))
  g = _expected_is_kl_grad(params, old_params, ref_params, estimator, False)
  want = jax.grad(lambda p: _prefix_weighted_kls(
      POLICY, p, ref_params, old_params, reverse=True))(params)
  _assert_tree_close(g, want)


def test_is_corrected_k3_with_detached_ratio_gives_forward_kl_gradient():
  params = POLICY.init(jax.random.key(9))
  old_params = POLICY.init(jax.random.key(10))
  ref_params = POLICY.init(jax.random.key(11))
  g = _expected_is_kl_grad(params, old_params, ref_params, "k3", True)
  want = jax.grad(lambda p: _prefix_weighted_kls(
      POLICY, p, ref_params, old_params, reverse=False))(params)
  _assert_tree_close(g, want)
