"""The flag settings in docs/conventions.md reproduce verl, TRL and tunix.

Each test compares divrl, configured as the doc says, with a NumPy emulation
of the other library written from the anchor notes (tests/reference_libraries.py).
"""

import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import advantages, aggregation, registry
from tests import reference_libraries as lib


def _rewards(seed, n_groups=4, g=4, binary=False):
  rng = np.random.default_rng(seed)
  r = (rng.integers(0, 2, n_groups * g).astype(float) if binary
       else rng.normal(size=n_groups * g))
  return r, np.repeat(np.arange(n_groups), g)


def _grpo(r, ids, **flags):
  return np.asarray(advantages.grpo(jnp.asarray(r, jnp.float32),
                                    jnp.asarray(ids, jnp.int32),
                                    int(ids.max()) + 1, **flags))


@pytest.mark.parametrize("binary", [False, True])
def test_std_conventions(binary):
  r, ids = _rewards(0, binary=binary)
  # verl grpo, including a singleton group (the last sample alone).
  ids_s = ids.copy()
  ids_s[-1] = ids.max() + 1
  np.testing.assert_allclose(
      _grpo(r, ids_s, ddof=1, eps=1e-6, singleton="reward"),
      lib.verl_grpo(r, ids_s), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      _grpo(r, ids_s, scale_by_std=False, singleton="reward"),
      lib.verl_grpo(r, ids_s, norm_adv_by_std=False), rtol=1e-5, atol=1e-6)
  # TRL scale_rewards group / none.
  np.testing.assert_allclose(_grpo(r, ids, ddof=1, eps=1e-4),
                             lib.trl_grpo(r, 4), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_grpo(r, ids, scale_by_std=False),
                             lib.trl_grpo(r, 4, "none"), rtol=1e-5, atol=1e-6)
  # tunix.
  np.testing.assert_allclose(_grpo(r, ids, ddof=1, eps=1e-6),
                             lib.tunix_grpo(r, 4), rtol=1e-5, atol=1e-6)


def test_rloo_singleton_conventions():
  r, ids = _rewards(1)
  ids[-1] = ids.max() + 1
  for singleton, vectorized in (("reward", False), ("zero", True)):
    got = advantages.rloo(jnp.asarray(r, jnp.float32), jnp.asarray(ids),
                          int(ids.max()) + 1, singleton=singleton)
    np.testing.assert_allclose(got, lib.verl_rloo(r, ids, vectorized),
                               rtol=1e-5, atol=1e-6)


def _loss_mask(seed=0, b=6, t=8):
  rng = np.random.default_rng(seed)
  loss = rng.normal(size=(b, t))
  mask = (np.arange(t)[None] < rng.integers(1, t + 1, b)[:, None]).astype(float)
  mask[3] = 0.0  # one all-masked row: the conventions differ on it
  return loss, mask


def _agg(spec, loss, mask):
  return float(aggregation.finalize(registry.make("aggregation", spec)(
      jnp.asarray(loss), jnp.asarray(mask))))


def test_normaliser_conventions():
  loss, mask = _loss_mask()
  t = loss.shape[1]
  np.testing.assert_allclose(
      _agg("seq-mean-token-sum-norm", loss, mask),
      lib.verl_seq_mean_token_sum_norm(loss, mask), rtol=1e-5)
  np.testing.assert_allclose(
      _agg({"name": "seq-mean-token-sum-norm", "norm": 512.0}, loss, mask),
      lib.verl_seq_mean_token_sum_norm(loss, mask, 512.0), rtol=1e-5)
  np.testing.assert_allclose(
      _agg({"name": "seq-mean-token-sum-norm", "norm": 1024.0,
            "count": "rows"}, loss, mask),
      lib.trl_dr_grpo(loss, mask, 1024), rtol=1e-5)
  np.testing.assert_allclose(
      _agg({"name": "seq-mean-token-mean", "count": "rows"}, loss, mask),
      lib.trl_grpo_loss(loss, mask), rtol=1e-5)
  np.testing.assert_allclose(
      _agg({"name": "seq-mean-token-sum-norm", "norm": float(t)}, loss, mask),
      lib.tunix_sequence_mean_token_scale(loss, mask), rtol=1e-5)
  np.testing.assert_allclose(
      _agg({"name": "seq-mean-token-sum", "count": "rows"}, loss, mask),
      lib.tunix_sequence_mean_token_sum_norm(loss, mask), rtol=1e-5)
  # The mode names collide: tunix's "sequence-mean-token-sum-norm" is not
  # verl's "seq-mean-token-sum-norm".
  assert abs(_agg("seq-mean-token-sum-norm", loss, mask)
             - lib.tunix_sequence_mean_token_sum_norm(loss, mask)) > 1e-3


def test_trl_bnpo_is_a_per_micro_batch_mean_not_the_global_token_mean():
  loss, mask = _loss_mask(2, b=8)
  halves = [(loss[:4], mask[:4]), (loss[4:], mask[4:])]
  global_mean = _agg("token-mean", loss, mask)
  per_micro = np.mean([_agg("token-mean", l, m) for l, m in halves])
  np.testing.assert_allclose(per_micro, lib.trl_bnpo(*zip(*halves)), rtol=1e-5)
  assert abs(per_micro - global_mean) > 1e-3
