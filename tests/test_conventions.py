"""The flag settings in docs/conventions.md reproduce verl, TRL and tunix.

Each test compares divrl, configured as the doc says, with a NumPy emulation
of the other library written from the anchor notes
(tests/references/libraries.py).
"""

import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import advantages, aggregation, registry
from tests.references import libraries as lib


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


# --- Policy losses, KL, IS weights -----------------------------------------


def _tokens(seed=3, b=6, t=5, gap=0.6):
  rng = np.random.default_rng(seed)
  lp = -rng.uniform(0.1, 2.0, (b, t))
  old = lp + rng.normal(0, gap, (b, t))
  adv = rng.normal(size=(b, t))
  return lp, old, adv


def _token_batch(lp, mask=None, **fields):
  """One group; float32 per-token ``fields`` (old_logprobs=..., ...)."""
  mask = np.ones_like(lp) if mask is None else mask
  return divrl.Batch(logprobs=jnp.asarray(lp, jnp.float32),
                     response_mask=jnp.asarray(mask),
                     rewards=jnp.zeros(lp.shape[0]),
                     group_ids=jnp.zeros(lp.shape[0], jnp.int32),
                     **{k: jnp.asarray(v, jnp.float32)
                        for k, v in fields.items()})


def _surrogate(spec, lp, old, adv, mask=None):
  batch = _token_batch(lp, mask, old_logprobs=old)
  out = registry.make("surrogate", spec)(batch, jnp.asarray(adv, jnp.float32))
  return np.asarray(out[0] if isinstance(out, tuple) else out)


def test_ppo_clip_dual_clip_and_delta_conventions():
  lp, old, adv = _tokens(gap=1.5)
  np.testing.assert_allclose(
      _surrogate({"name": "ppo_clip", "clip_ratio_c": 3.0}, lp, old, adv),
      lib.verl_vanilla(lp, old, adv), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      _surrogate({"name": "ppo_clip", "log_ratio_clip": None, "delta": 3.0},
                 lp, old, adv),
      lib.trl_grpo_token_loss(lp, old, adv, delta=3.0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      _surrogate({"name": "ppo_clip", "log_ratio_clip": None}, lp, old, adv),
      lib.trl_grpo_token_loss(lp, old, adv), rtol=1e-5, atol=1e-6)


def test_cispo_bound_conventions():
  lp, old, adv = _tokens(gap=1.5)
  np.testing.assert_allclose(
      _surrogate({"name": "cispo", "bound": "two_sided"}, lp, old, adv),
      lib.verl_cispo(lp, old, adv), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      _surrogate({"name": "cispo", "bound": "upper", "max_ratio": 5.0,
                  "log_ratio_clip": None}, lp, old, adv),
      lib.trl_cispo(lp, old, adv), rtol=1e-5, atol=1e-6)


def test_sapo_conventions_with_aggregation():
  lp, old, adv = _tokens(gap=1.0)
  loss, mask = _loss_mask(4, b=6, t=5)
  for spec, clamp, count in (("sapo", True, "nonempty"),
                             ({"name": "sapo", "log_ratio_clip": None}, False,
                              "rows")):
    per_token = _surrogate(spec, lp, old, adv, mask)
    want_tok = lib.sapo(lp, old, adv, clamp)
    np.testing.assert_allclose(per_token * mask, want_tok * mask, rtol=1e-5,
                               atol=1e-6)
    got = _agg({"name": "seq-mean-token-mean", "count": count}, per_token,
               mask)
    want = (lib.trl_grpo_loss(want_tok, mask) if count == "rows" else
            np.sum(np.sum(want_tok * mask, 1)[mask.sum(1) > 0]
                   / mask.sum(1)[mask.sum(1) > 0]) / np.sum(mask.sum(1) > 0))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gspo_forms_agree_in_value():
  lp, old, adv = _tokens(gap=0.01)
  _, mask = _loss_mask(5, b=6, t=5)
  want = lib.gspo_value(lp, old, adv, mask, 3e-4, 4e-4) * mask
  for name in ("gspo_seq", "gspo_token"):
    np.testing.assert_allclose(_surrogate(name, lp, old, adv, mask) * mask,
                               want, rtol=1e-5, atol=1e-6)


def test_kl_conventions():
  lp, ref, _ = _tokens(seed=6, gap=4.0)
  _, old, _ = _tokens(seed=7, gap=0.5)
  def kl(spec):
    batch = _token_batch(lp, old_logprobs=old, ref_logprobs=ref)
    return np.asarray(registry.make("regularizer", spec)(batch))
  np.testing.assert_allclose(
      kl({"name": "kl", "estimator": "k3", "log_ratio_clip": 20.0,
          "value_clip": 10.0}), lib.verl_low_var_kl(lp, ref), rtol=1e-5)
  np.testing.assert_allclose(
      kl({"name": "kl", "estimator": "k3", "is_correction": True,
          "is_log_ratio_clip": None}),
      lib.trl_k3_bias_corrected(lp, ref, old), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(kl({"name": "kl", "estimator": "k1"}),
                             lib.tunix_kl(lp, ref), rtol=1e-5)
  np.testing.assert_allclose(
      kl({"name": "kl", "estimator": "k1", "value_clip": 1.0}),
      lib.tunix_kl(lp, ref, clamp=1.0), rtol=1e-5)


def test_token_tis_convention():
  lp, old, adv = _tokens(seed=8, gap=1.0)
  roll = old + np.random.default_rng(9).normal(0, 0.7, old.shape)
  batch = _token_batch(lp, old_logprobs=old, rollout_logprobs=roll)
  w = registry.make("token_weight", {"name": "rollout_is", "level": "token",
                                     "mode": "truncate", "threshold": 2.0})(
                                         batch, jnp.asarray(adv))
  np.testing.assert_allclose(w, lib.verl_token_tis(old, roll), rtol=1e-5)


def test_gdpo_trl_normalize_then_sum():
  rng = np.random.default_rng(10)
  rk = rng.integers(0, 3, (12, 2)).astype(float)
  w = np.array([1.0, 0.5])
  batch = divrl.Batch(logprobs=jnp.zeros((12, 3)),
                      response_mask=jnp.ones((12, 3), bool),
                      rewards=jnp.asarray(rk, jnp.float32),
                      group_ids=jnp.asarray(np.repeat(np.arange(3), 4),
                                            jnp.int32), num_groups=3)
  adv = registry.make("advantage", {
      "name": "gdpo", "eps": 1e-4, "batch_norm": "samples", "batch_eps": 1e-4,
      "reward_weights": list(w)})(batch)
  np.testing.assert_allclose(adv[:, 0], lib.trl_gdpo(rk, w, 4), rtol=1e-4,
                             atol=1e-5)


def test_trl_entropy_bonus_as_a_second_token_mean_objective():
  lp, old, adv = _tokens(seed=11)
  _, mask = _loss_mask(12, b=6, t=5)
  ent = np.random.default_rng(13).uniform(0, 3, lp.shape)
  batch = divrl.Batch(logprobs=jnp.asarray(lp, jnp.float32),
                      response_mask=jnp.asarray(mask),
                      rewards=jnp.asarray(np.arange(6.0)),
                      group_ids=jnp.asarray([0, 0, 0, 1, 1, 1], jnp.int32),
                      old_logprobs=jnp.asarray(old, jnp.float32),
                      entropy=jnp.asarray(ent, jnp.float32), num_groups=2)
  zero = lambda b, a: jnp.zeros_like(a)
  bonus = divrl.build("grpo", zero, aggregation="token-mean",
                      regularizers=[{"name": "entropy", "coef": -0.01}])
  np.testing.assert_allclose(bonus(batch)[0],
                             lib.trl_entropy_bonus(ent, mask, 0.01), rtol=1e-5)
