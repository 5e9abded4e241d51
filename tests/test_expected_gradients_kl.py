"""Exact expected gradients of KL placements on a tabular policy.

1. KL in the reward (``kl_in_reward``, k1) with an RLOO advantage and the
   on-policy PPO-clip (= REINFORCE) surrogate, ``seq-mean-token-sum``, zero
   task reward: ``E[grad loss] = beta * grad KL_seq(pi || ref)``, the full
   sequence-level reverse KL including the prefix term. Derivation: the
   shaped reward is ``r(y) = -beta log(pi(y)/ref(y))`` (a constant in the
   loss); RLOO is unbiased, so ``E[grad loss] = -sum_y grad pi(y) r(y) =
   beta sum_y grad pi(y) log(pi/ref) = beta grad KL_seq`` because the
   remaining term of ``grad KL_seq`` is ``beta sum_y pi grad log pi = 0``.
   Dr.GRPO scales it by ``(G-1)/G``.
2. Importance-corrected KL in the loss (DeepSeek-V3.2, TRL
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
from divrl import divergences  # noqa: F401  (registers kl_in_reward)
from divrl import testing

POLICY = testing.TabularPolicy(vocab=3, length=2)
SEQS = POLICY.sequences()


def _assert_tree_close(a, b, rtol=2e-4, atol=2e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


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

  def loss_fn(p, idx):
    tokens = SEQS[idx]
    batch = divrl.Batch(
        logprobs=POLICY.logprobs(p, tokens),
        response_mask=jnp.ones(tokens.shape, bool),
        rewards=jnp.zeros(idx.shape, jnp.float32),
        group_ids=jnp.zeros(idx.shape, jnp.int32),
        ref_logprobs=POLICY.logprobs(ref_params, tokens), num_groups=1)
    return objective(batch)[0]

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
    out = divergences.kl_in_reward(batch, coef=0.7)
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
