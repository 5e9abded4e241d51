"""Reward shaping (divrl/shaping.py): the overlong penalty, the cosine length
reward and the n-gram repetition penalty against the NumPy references in
``tests/references/shaping.py``, alone and composed in an objective."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import shaping
from tests.conftest import _clean, _np, _with_extras
from tests.references import advantages as advantages_ref
from tests.references import aggregation as aggregation_ref
from tests.references import divergences as divergences_ref
from tests.references import shaping as ref
from tests.references import surrogates as surrogates_ref


def _length_batch(lengths, t, rewards=None, seed=0):
  rng = np.random.default_rng(seed)
  b = len(lengths)
  mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
  r = rng.normal(size=b) if rewards is None else np.asarray(rewards, float)
  return divrl.Batch(
      logprobs=jnp.asarray(-rng.uniform(0.1, 2, (b, t)), jnp.float32),
      response_mask=jnp.asarray(mask), rewards=jnp.asarray(r, jnp.float32),
      group_ids=jnp.zeros((b,), jnp.int32), num_groups=1)


def test_overlong_penalty_values():
  lengths = [0, 5, 10, 11, 13, 16, 17, 20, 24]
  batch = _length_batch(lengths, 24)
  out = shaping.overlong_penalty_part(batch, max_length=16, cache_length=6,
                                 factor=0.5)
  want = _np(batch.rewards) + ref.overlong(np.asarray(batch.response_mask),
                                           16, 6, 0.5)
  np.testing.assert_allclose(out.rewards, want, rtol=1e-6, atol=1e-7)
  # Boundaries: 0 up to L_max - L_cache, -factor at L_max and beyond.
  pen = _np(out.rewards) - _np(batch.rewards)
  assert pen[2] == 0 and pen[5] == pytest.approx(-0.5) and pen[8] == -0.5
  with pytest.raises(ValueError, match="cache_length"):
    shaping.overlong_penalty_part(batch, max_length=16, cache_length=0)
  with pytest.raises(ValueError, match="max_length"):
    shaping.overlong_penalty_part(batch, max_length=4, cache_length=6)


def test_overlong_penalty_counts_tokens_not_positions():
  batch = _length_batch([8, 8], 8)
  gappy = batch.response_mask.at[0, 1:4].set(False)  # 5 valid tokens
  out = shaping.overlong_penalty_part(batch.replace(response_mask=gappy),
                                 max_length=8, cache_length=4)
  np.testing.assert_allclose(_np(out.rewards) - _np(batch.rewards),
                             [-0.25, -1.0], rtol=1e-6)


def test_cosine_length_reward_replaces_reward():
  lengths = [0, 1, 4, 7, 10, 15, 0, 3, 10, 12]
  rewards = [1, 1, 1, 0.7, 1, 1, 0, 0, 0, 0.5]
  batch = _length_batch(lengths, 15, rewards)
  out = jax.jit(lambda b: shaping.cosine_length_reward_part(
      b, max_length=10, threshold=0.5))(batch)
  want = ref.cosine(rewards, np.asarray(batch.response_mask), 10, 0.5)
  np.testing.assert_allclose(out.rewards, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.rewards)[[0, 4, 6, 8]], [1.0, 0.5, -1.0, -0.5],
                             atol=1e-6)
  with pytest.raises(ValueError, match="max_length"):
    shaping.cosine_length_reward_part(batch, max_length=0)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_repetition_penalty_values(n):
  for seed in range(3):
    batch = _with_extras(seed, b=10, t=9, vocab=2 + seed, empty_rows=(1,))
    m = np.asarray(batch.response_mask).copy()
    m[2, 1:3] = False  # a gap inside a response
    batch = batch.replace(response_mask=jnp.asarray(m))
    out = jax.jit(lambda b: shaping.ngram_repetition_penalty_part(
        b, n=n, penalty=-0.7))(batch)
    want = _np(batch.rewards) + ref.ngram_penalty(
        np.asarray(batch.tokens), m, n, -0.7)
    np.testing.assert_allclose(out.rewards, want, rtol=1e-5, atol=1e-6)


def test_ngram_repetition_edge_cases():
  tokens = jnp.asarray([[5, 5, 5, 5, 5, 5], [1, 2, 3, 4, 5, 6],
                        [1, 2, 9, 9, 9, 9], [7, 7, 7, 7, 0, 0]], jnp.int32)
  lengths = [6, 6, 2, 0]
  batch = _length_batch(lengths, 6, [0.0] * 4).replace(tokens=tokens)
  out = shaping.ngram_repetition_penalty_part(batch)  # n=3, penalty=-1
  # 4 identical trigrams: 1 - 1/4; all distinct: 0; shorter than n: 0.
  np.testing.assert_allclose(out.rewards, [-0.75, 0.0, 0.0, 0.0], atol=1e-7)
  # Padded length shorter than n.
  short = _length_batch([2], 2, [0.0]).replace(
      tokens=jnp.asarray([[1, 1]], jnp.int32))
  np.testing.assert_allclose(shaping.ngram_repetition_penalty_part(short).rewards,
                             [0.0])
  with pytest.raises(ValueError, match="Batch.tokens"):
    shaping.ngram_repetition_penalty_part(batch.replace(tokens=None))
  with pytest.raises(ValueError, match="penalty"):
    shaping.ngram_repetition_penalty_part(batch, penalty=0.5)
  with pytest.raises(ValueError, match="n must"):
    shaping.ngram_repetition_penalty_part(batch, n=0)
  with pytest.raises(ValueError, match="Batch.rewards"):
    shaping.overlong_penalty_part(batch.replace(rewards=jnp.zeros((4, 2))))


def test_shaping_transforms_composed_in_objective():
  """Shaped rewards feed the advantage; the loss matches a NumPy pipeline."""
  batch = _with_extras(14, b=12, t=8, num_groups=3, empty_rows=())
  m = np.asarray(batch.response_mask)
  objective = divrl.build(
      "grpo", "ppo_clip", aggregation="seq-mean-token-mean",
      transforms=[{"name": "cosine_length_reward", "max_length": 6,
                   "threshold": 0.0},
                  {"name": "overlong_penalty", "max_length": 7,
                   "cache_length": 3},
                  {"name": "ngram_repetition_penalty", "n": 2},
                  {"name": "kl_in_reward", "coef": 0.1, "estimator": "k3"}])
  r = ref.cosine(_np(batch.rewards), m, 6, 0.0)
  r = r + ref.overlong(m, 7, 3, 1.0)
  r = r + ref.ngram_penalty(np.asarray(batch.tokens), m, 2, -1.0)
  r, _ = divergences_ref.kl_in_reward(r, None, m,
                                      _clean(batch.old_logprobs, m),
                                      _clean(batch.ref_logprobs, m), 0.1, "k3")
  adv = advantages_ref.grpo_advantages(r, np.asarray(batch.group_ids))
  per_tok = surrogates_ref.ppo_clip_token_loss(_clean(batch.logprobs, m),
                                               _clean(batch.old_logprobs, m),
                                               adv[:, None] * m)
  want = aggregation_ref.finalize(*aggregation_ref.aggregate(
      per_tok, m, "seq-mean-token-mean"))
  np.testing.assert_allclose(jax.jit(objective)(batch)[0], want, rtol=1e-4,
                             atol=1e-6)


# --- reward_map ---------------------------------------------------------------


def test_reward_map_defaults_are_the_identity_and_maps_compose_in_order():
  r = jnp.asarray([0.0, 1.0, 0.25, 1.0, 0.0])
  np.testing.assert_array_equal(shaping.reward_map(r), r)
  np.testing.assert_allclose(shaping.reward_map(r, scale=2.0, shift=-1.0),
                             2 * np.asarray(r) - 1)
  # Sign split around 0.5, then affine: 2 * (0.5 + 0.1 (r-0.5)_+ - 3 (0.5-r)_+).
  x = np.asarray(r)
  split = 0.5 + 0.1 * np.maximum(x - 0.5, 0) - 3 * np.maximum(0.5 - x, 0)
  np.testing.assert_allclose(
      shaping.reward_map(r, center=0.5, pos_scale=0.1, neg_scale=3.0,
                         scale=2.0), 2 * split, rtol=1e-6)


def test_reward_map_flips_outcomes_at_their_rates():
  n = 20000
  clean = jnp.asarray(np.arange(n) % 2, jnp.float32)     # half correct
  noisy = np.asarray(shaping.reward_map(
      clean, jax.random.key(0), false_positive_rate=0.1,
      false_negative_rate=0.3))
  c = np.asarray(clean) > 0.5
  fn, fp = np.mean(noisy[c] == 0), np.mean(noisy[~c] == 1)
  sd = lambda p: 3 * np.sqrt(p * (1 - p) / (n / 2))
  assert abs(fn - 0.3) < sd(0.3) and abs(fp - 0.1) < sd(0.1), (fn, fp)
  assert set(np.unique(noisy)) <= {0.0, 1.0}


def test_random_rewards_ignore_the_answer():
  n = 20000
  clean = jnp.asarray(np.arange(n) % 2, jnp.float32)
  rand = np.asarray(shaping.reward_map(clean, jax.random.key(1),
                                       random_rate=0.3, low=-1.0))
  assert set(np.unique(rand)) == {-1.0, 1.0}
  c = np.asarray(clean) > 0.5
  for part in (rand[c], rand[~c]):   # the same rate on right and wrong
    assert abs(np.mean(part == 1.0) - 0.3) < 3 * np.sqrt(0.21 / (n / 2))


@pytest.mark.parametrize("kwargs,match", [
    (dict(false_positive_rate=0.2), "PRNG key"),
    (dict(random_rate=0.5), "PRNG key"),
])
def test_reward_map_needs_a_key_for_noise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    shaping.reward_map(jnp.zeros(3), **kwargs)


def test_reward_map_rejects_bad_rates():
  with pytest.raises(ValueError, match="false_negative_rate"):
    shaping.reward_map(jnp.zeros(3), jax.random.key(0),
                       false_negative_rate=1.5)


def test_reward_map_transform_runs_in_an_objective_with_its_key():
  batch = divrl.Batch(logprobs=jnp.zeros((8, 2)),
                      response_mask=jnp.ones((8, 2)),
                      rewards=jnp.asarray([0.0, 1.0] * 4),
                      group_ids=jnp.repeat(jnp.arange(2), 4), num_groups=2)
  obj = divrl.build("grpo", "ppo_clip",
                    transforms=[{"name": "reward_map", "random_rate": 0.5}])
  assert obj.requires.key
  out, _ = obj.prepare(batch, jax.random.key(3))
  again, _ = obj.prepare(batch, jax.random.key(3))
  np.testing.assert_array_equal(out.rewards, again.rewards)
  assert set(np.unique(out.rewards)) <= {0.0, 1.0}
