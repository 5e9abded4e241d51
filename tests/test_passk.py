"""Tests for divrl.passk: PKPO (arXiv:2505.15201) and the closed-form pass@k
advantage (arXiv:2508.10751)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import advantages, passk
from divrl.sharding import make_mesh
from tests.references import passk as ref

# Ragged groups: continuous with ties (6), binary (5), singleton, all equal.
REWARDS = np.array([0.3, 0.9, 0.1, 0.9, 0.5, -0.2,
                    1.0, 0.0, 0.0, 1.0, 0.0,
                    0.7,
                    0.4, 0.4, 0.4], np.float32)
GROUPS = np.array([0] * 6 + [1] * 5 + [2] + [3] * 3, np.int32)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("baseline", passk.PKPO_BASELINES)
def test_pkpo_matches_subset_enumeration(k, baseline):
  if baseline == "loo_minus_one" and k < 2:
    pytest.skip("needs k >= 2")
  got = passk.pkpo_advantages(jnp.asarray(REWARDS), jnp.asarray(GROUPS), 4,
                              k=k, baseline=baseline)
  want = ref.grouped(lambda g: ref.pkpo(g, k, baseline), REWARDS, GROUPS)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_pkpo_binary_rewards_are_the_papers_closed_form():
  # n/k times (k/n if correct, (k/n) rho(n-1, c, k-1) if wrong).
  r = jnp.asarray([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
  for k in (1, 2, 3, 7):
    got = passk.pkpo_advantages(r, jnp.zeros(7, jnp.int32), 1, k=k,
                                baseline="none")
    rho = 1 - math.comb(7 - 1 - 2, k - 1) / math.comb(7 - 1, k - 1)
    np.testing.assert_allclose(got, np.where(np.asarray(r) > 0, 1.0, rho),
                               rtol=1e-5)


def test_pkpo_at_k1_is_rloo_and_at_kn_is_passk_best():
  r, g = jnp.asarray(REWARDS), jnp.asarray(GROUPS)
  np.testing.assert_allclose(
      passk.pkpo_advantages(r, g, 4, k=1, baseline="loo"),
      advantages.rloo(r, g, 4, singleton="reward"), rtol=1e-5, atol=1e-6)
  # One group of 6: k = n with the leave-one-out-minus-one baseline.
  r6, g6 = r[:6], g[:6]
  np.testing.assert_allclose(
      passk.pkpo_advantages(r6, g6, 1, k=6, baseline="loo_minus_one"),
      advantages.passk_best(r6, g6, 1, scale_by_std=False), atol=1e-6)


@pytest.mark.parametrize("n", range(1, 9))
def test_the_passk_estimator_is_unbiased(n):
  # E_c[1 - C(n-c, k)/C(n, k)] over c ~ Bin(n, p) is 1 - (1-p)^k, every k.
  for p in (0.1, 0.5, 0.83):
    for k in range(1, n + 1):
      c = np.arange(n + 1)
      prob = np.array([math.comb(n, x) * p ** x * (1 - p) ** (n - x)
                       for x in c])
      est = np.asarray(passk.passk_estimate(jnp.full(n + 1, n), c, k))
      np.testing.assert_allclose(np.sum(prob * est), 1 - (1 - p) ** k,
                                 rtol=1e-5)


@pytest.mark.parametrize("k,baseline", [(1, "none"), (1, "loo"),
                                        (2, "none"), (2, "loo"),
                                        (2, "loo_minus_one"),
                                        (3, "loo"), (4, "loo_minus_one")])
def test_pkpo_is_an_unbiased_gradient_of_max_at_k(k, baseline):
  # Tabular policy over 3 answers with rewards 0, 0.5, 1; groups of n = 4.
  # Enumerating all 3^4 groups: E[(1/n) sum_i A_i grad log pi(y_i)] must be
  # grad max@k / k, with max@k = sum_v v (F(v)^k - F(v-)^k).
  n, vals = 4, np.array([0.0, 0.5, 1.0], np.float32)
  theta = jnp.asarray([0.3, -0.5, 0.1])
  pi = np.asarray(jax.nn.softmax(theta))
  tuples = np.array(list(itertools.product(range(3), repeat=n)))
  rewards = jnp.asarray(vals[tuples].reshape(-1))
  gids = jnp.asarray(np.repeat(np.arange(len(tuples)), n), jnp.int32)
  fn = jax.jit(passk.pkpo_advantages,
               static_argnames=("num_groups", "k", "baseline"))
  adv = np.asarray(fn(rewards, gids, num_groups=len(tuples), k=k,
                      baseline=baseline)).reshape(-1, n)
  prob = np.prod(pi[tuples], axis=1)
  grad_logpi = np.eye(3)[tuples] - pi                  # [tuples, n, 3]
  expected = np.einsum("t,ti,tia->a", prob, adv, grad_logpi) / n

  def max_at_k(t):
    p = jax.nn.softmax(t)
    cdf = jnp.cumsum(p)
    below = jnp.concatenate([jnp.zeros(1), cdf[:-1]])
    return jnp.sum(jnp.asarray(vals) * (cdf ** k - below ** k))

  np.testing.assert_allclose(expected, jax.grad(max_at_k)(theta) / k,
                             rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_closed_form_matches_reference(k):
  got = passk.passk_closed_form(jnp.asarray(REWARDS), jnp.asarray(GROUPS), 4,
                                k=k)
  want = ref.grouped(lambda g: ref.closed_form(g, k), REWARDS, GROUPS)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # All-correct and all-wrong groups give 0.
  z = passk.passk_closed_form(jnp.asarray([1.0, 1.0, 0.0, 0.0]),
                              jnp.asarray([0, 0, 1, 1]), 2, k=2)
  np.testing.assert_allclose(z, 0.0, atol=1e-6)


def test_sharded_matches_single_device():
  mesh = make_mesh((8,), ("data",))
  r = np.concatenate([REWARDS, np.float32([0.2])])        # 16 rows
  g = np.concatenate([GROUPS, np.int32([3])])
  for fn in (lambda r, g, ax: passk.pkpo_advantages(r, g, 4, k=2,
                                                    axis_name=ax),
             lambda r, g, ax: passk.passk_closed_form(r, g, 4, k=2,
                                                      axis_name=ax)):
    sharded = jax.jit(jax.shard_map(
        lambda r, g, fn=fn: fn(r, g, "data"), mesh=mesh,
        in_specs=(P("data"), P("data")), out_specs=P("data")))(
            jnp.asarray(r), jnp.asarray(g))
    single = jax.jit(lambda r, g, fn=fn: fn(r, g, None))(jnp.asarray(r),
                                                          jnp.asarray(g))
    np.testing.assert_allclose(sharded, single, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", [{"name": "pkpo", "k": 2},
                                  {"name": "passk_closed_form", "k": 2}])
def test_registered_parts_broadcast_to_tokens(spec):
  batch = divrl.Batch(logprobs=jnp.zeros((15, 2)),
                      response_mask=jnp.ones((15, 2)),
                      rewards=jnp.asarray(REWARDS),
                      group_ids=jnp.asarray(GROUPS), num_groups=4)
  got = divrl.registry.make("advantage", spec)(batch)
  fn = (passk.pkpo_advantages if spec["name"] == "pkpo"
        else passk.passk_closed_form)
  want = fn(jnp.asarray(REWARDS), jnp.asarray(GROUPS), 4, k=2)
  np.testing.assert_allclose(got, np.stack([want, want], 1), rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=0), "k must be"), (dict(baseline="mean"), "baseline"),
    (dict(k=1, baseline="loo_minus_one"), "k >= 2")])
def test_bad_settings_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    passk.pkpo_advantages(jnp.zeros(2), jnp.zeros(2, jnp.int32), 1, **kwargs)


def test_pass_at_k_parts_declare_the_group_size_they_need():
  from divrl import registry  # pylint: disable=g-import-not-at-top
  for name in ("pkpo", "passk_closed_form"):
    o = divrl.from_config({"advantage": {"name": name, "k": 8},
                           "surrogate": "ppo_clip",
                           "aggregation": "token-mean"})
    assert o.min_group_size == (8, f"objective.advantage ({name}): k = 8")
    default = divrl.from_config({"advantage": name, "surrogate": "ppo_clip",
                                 "aggregation": "token-mean"})
    assert default.min_group_size[0] == 4
  grpo = divrl.from_config({"advantage": "grpo", "surrogate": "ppo_clip",
                            "aggregation": "token-mean"})
  assert grpo.min_group_size == (1, None)
  with pytest.raises(ValueError, match="group_size names 'n'"):
    registry.declare(group_size="n")(lambda batch, *, k=1: batch)
