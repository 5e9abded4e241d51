"""Property test over every registered part: finite loss and gradients.

For valid random inputs, including extreme log-prob gaps (up to +-50 between
the policy, behaviour, rollout and reference log-probs), each registered part
is composed with default parts for the other stages and the loss and its
gradient with respect to the log-probs must be finite. The parts are read
from the registry, so a newly registered part is fuzzed automatically.
"""

import functools

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import docgen, registry
from divrl.types import REFERENCE_DIVERGENCES
from tests.conftest import one_part_config

B, T, G = 8, 6, 3

BASE = {"advantage": "grpo", "surrogate": "ppo_clip",
        "aggregation": "seq-mean-token-mean"}


def _objective(kind, name):
  return divrl.from_config(one_part_config(kind, name, BASE, coef=0.5))


def _all_parts():
  return [(kind, name) for kind in registry.KINDS
          for name in docgen.library_parts(kind)]


def _batch(logprobs, gaps, rewards, lengths, entropy):
  mask = np.arange(T)[None] < lengths[:, None]
  old = logprobs + gaps[0]
  roll = logprobs + gaps[1]
  ref = logprobs + gaps[2]
  f = lambda x: jnp.asarray(x, jnp.float32)
  return divrl.Batch(
      logprobs=f(logprobs), response_mask=jnp.asarray(mask),
      rewards=f(rewards), group_ids=jnp.asarray(np.arange(B) % G, jnp.int32),
      old_logprobs=f(old), rollout_logprobs=f(roll), ref_logprobs=f(ref),
      entropy=f(entropy), token_rewards=f(np.zeros((B, T))),
      values=f(rewards[:, None] * 0.5 + np.zeros((B, T))),
      old_values=f(rewards[:, None] * 0.25 + np.zeros((B, T))),
      baseline_rewards=f(rewards[::-1].copy()),
      sum_pi_squared=f(np.exp(np.minimum(logprobs, 0.0)) ** 2),
      truncated=jnp.asarray(lengths == T),
      tokens=jnp.asarray((np.arange(B * T).reshape(B, T) * 7) % 5, jnp.int32),
      sample_source=jnp.asarray(np.arange(B) % 3 == 1, jnp.int32),
      solution_ids=jnp.asarray(np.where(rewards > 0, np.arange(B) % 2, -1),
                               jnp.int32),
      # Every other per-token statistic the data path serves.
      vocab_mean_logprob=f(-entropy - 1.0),
      old_vocab_mean_logprob=f(-entropy - 1.0 + gaps[0] * 0.01),
      # The min-p proxy is above the log-prob where kept, -inf where not.
      min_p_logprob=f(np.where(lengths[:, None] % 2 == 0, -np.inf,
                               np.minimum(logprobs + 0.5, 0.0))),
      old_min_p_logprob=f(np.where(np.arange(T)[None] % 3 == 2, -np.inf,
                                   np.minimum(old + 0.5, 0.0))),
      task_ids=jnp.zeros((B,), jnp.int32),
      embeddings=f(np.stack([np.cos(np.arange(B) * 0.7 + rewards),
                             np.sin(np.arange(B) * 1.3), rewards], 1)),
      **{n: f(entropy * (i + 1) / 8.0) for i, n in enumerate(
          ("top_p_entropy",) + REFERENCE_DIVERGENCES)},
      num_groups=G)


@functools.lru_cache(maxsize=None)
def _loss_and_grad(kind, name):
  objective = _objective(kind, name)

  def f(batch, key):
    def loss(lp):
      return objective(batch.replace(logprobs=lp), key)[0]
    return jax.value_and_grad(loss)(batch.logprobs)

  return jax.jit(f)


floats = functools.partial(st.floats, allow_nan=False, allow_infinity=False,
                           width=32)


@pytest.mark.parametrize("kind,name", _all_parts())
@hypothesis.settings(max_examples=15, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(
    logprobs=hnp.arrays(np.float64, (B, T), elements=floats(-60.0, -0.0009765625)),
    gaps=hnp.arrays(np.float64, (3, B, T), elements=floats(-50.0, 50.0)),
    rewards=hnp.arrays(np.float64, (B,), elements=st.sampled_from(
        [0.0, 1.0, -1.0, 0.5, 3.0])),
    lengths=hnp.arrays(np.int64, (B,), elements=st.integers(0, T)),
    entropy=hnp.arrays(np.float64, (B, T), elements=floats(0.0, 10.0)),
)
def test_loss_and_gradient_are_finite(kind, name, logprobs, gaps, rewards,
                                      lengths, entropy):
  batch = _batch(logprobs, gaps, rewards, lengths, entropy)
  if "reward_components" in _objective(kind, name).requires.inputs:
    r = batch.rewards
    batch = batch.replace(rewards=jnp.stack([r, 0.5 * r, -r[::-1]], axis=1))
  loss, grad = _loss_and_grad(kind, name)(batch, jax.random.key(0))
  assert np.isfinite(float(loss)), (kind, name, float(loss))
  assert np.all(np.isfinite(np.asarray(grad))), (kind, name)
  mask = np.asarray(batch.response_mask)
  assert np.all(np.asarray(grad)[~mask] == 0), (kind, name)


def test_every_kind_has_parts():
  for kind in registry.KINDS:
    if kind in ("transform", "token_weight"):
      continue  # populated by the objective library modules
    assert registry.names(kind), kind
