"""The surrogate library (divrl/surrogates.py).

PPO clip against the NumPy references; every surrogate's values against the
loop references in ``tests/references/surrogates.py`` (including +-50
log-prob gaps, empty rows and on-policy inputs), gradients (stop-gradient
definitions), the GSPO sequence/token equivalence, Clip-Cov's random
selection, sharded == single device for Clip-Cov / KL-Cov, ``jit``,
hyperparameter validation, and the sequence-level truncated weight of bypass
REINFORCE.

Registered names covered: "ppo_clip", "bypass_ppo", "gspo_seq",
"gspo_token", "luspo", "gmpo", "cispo", "sapo", "dppo_tv", "dppo_kl", "dro",
"reinforce", "bypass_reinforce", "vespo", "clip_cov", "kl_cov". The token
weights "rollout_is" and "off_policy_sequence_mask" share the inputs, ``jit``
and validation tables here; their values are checked in
``tests/test_corrections.py``.
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import corrections  # noqa: F401  (registers the token weights)
from divrl import registry, sharding, surrogates
from tests.conftest import make_batch
from tests.references import corrections as corrections_ref
from tests.references import surrogates as ref


# -- PPO clip ------------------------------------------------------------------


def _inputs(seed=0, b=5, t=6, gap=1.0):
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0.1, 3, size=(b, t))
  old = logp + rng.normal(0, gap, size=(b, t))
  adv = rng.normal(size=(b, t))
  return logp, old, adv


@pytest.mark.parametrize("eps_low,eps_high,clip", [(0.2, 0.2, 20.0),
                                                   (0.2, 0.28, 20.0),
                                                   (0.1, 0.5, None),
                                                   (0.2, 0.2, 0.5)])
def test_ppo_clip_matches_reference(eps_low, eps_high, clip):
  logp, old, adv = _inputs()
  loss, diag = surrogates.ppo_clip(
      jnp.asarray(logp, jnp.float32), jnp.asarray(old, jnp.float32),
      jnp.asarray(adv, jnp.float32), eps_low=eps_low, eps_high=eps_high,
      log_ratio_clip=clip)
  kw = dict(eps_low=eps_low, eps_high=eps_high, log_ratio_clip=clip)
  np.testing.assert_allclose(loss, ref.ppo_clip_token_loss(logp, old, adv, **kw),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(diag["clipfrac"],
                             ref.ppo_clip_fraction(logp, old, adv, **kw))
  assert 0 < float(np.mean(diag["clipfrac"])) < 1  # both branches exercised


def test_ppo_clip_gradient():
  logp, old, adv = (jnp.asarray(x, jnp.float32) for x in _inputs(gap=0.5))
  g = jax.grad(lambda l: jnp.sum(surrogates.ppo_clip(l, old, adv)[0]))(logp)
  rho = jnp.exp(logp - old)
  clipped = surrogates.ppo_clip(logp, old, adv)[1]["clipfrac"] > 0
  np.testing.assert_allclose(g, jnp.where(clipped, 0.0, -adv * rho),
                             rtol=1e-5, atol=1e-6)
  # On-policy the gradient is -A (the REINFORCE gradient).
  g0 = jax.grad(lambda l: jnp.sum(surrogates.ppo_clip(
      l, jax.lax.stop_gradient(l), adv)[0]))(logp)
  np.testing.assert_allclose(g0, -adv, rtol=1e-6)


def test_ppo_clip_rejects_negative_eps():
  x = jnp.zeros((1, 1))
  with pytest.raises(ValueError, match="eps_low"):
    surrogates.ppo_clip(x, x, x, eps_low=-0.1)


# -- inputs --------------------------------------------------------------------


P = jax.sharding.PartitionSpec


def _data(seed=0, b=6, t=7, gap=0.5, extreme=False, seq_adv=False,
          on_policy=False):
  """Random inputs rounded to float32 (the references see the same numbers).

  Row 0 is full length, the last row is empty. ``extreme`` puts +-50 gaps
  between the policy, behaviour and rollout log-probs on a third of tokens.
  """
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[0], lengths[-1] = t, 0
  mask = np.arange(t)[None, :] < lengths[:, None]
  logp = -rng.uniform(0.05, 3.0, size=(b, t))
  old = logp + rng.normal(0, gap, size=(b, t))
  roll = old + rng.normal(0, gap, size=(b, t))
  if extreme:
    logp = -rng.uniform(0.0, 60.0, size=(b, t))
    big = lambda: rng.choice([-50.0, 50.0], size=(b, t)) * (
        rng.uniform(size=(b, t)) < 1 / 3)
    old = logp + big() + rng.normal(0, gap, size=(b, t))
    roll = old + big() + rng.normal(0, gap, size=(b, t))
  if on_policy:
    old = logp.copy()
    roll = logp.copy()
  if seq_adv:
    adv = np.repeat(rng.normal(size=(b, 1)), t, axis=1)
  else:
    adv = rng.normal(size=(b, t))
  adv = adv * mask
  r32 = lambda x: np.asarray(np.asarray(x, np.float32), np.float64)
  return types.SimpleNamespace(logp=r32(logp), old=r32(old), roll=r32(roll),
                               adv=r32(adv), mask=mask)


def _batch(d, with_old=True, with_roll=True):
  f = lambda x: jnp.asarray(x, jnp.float32)
  b = d.logp.shape[0]
  return divrl.Batch(
      logprobs=f(d.logp), response_mask=jnp.asarray(d.mask),
      rewards=jnp.zeros((b,), jnp.float32),
      group_ids=jnp.zeros((b,), jnp.int32),
      old_logprobs=f(d.old) if with_old else None,
      rollout_logprobs=f(d.roll) if with_roll else None,
      advantages=f(d.adv), num_groups=1)


def _call(kind, name, batch, key=None, **kw):
  part = registry.lookup(kind, name)
  extra = {"key": key} if name == "clip_cov" else {}
  out = part(batch, batch.advantages, **extra, **kw)
  return out if isinstance(out, tuple) else (out, {})


def _close(got, want, mask, rtol=1e-4, atol=1e-5):
  got = np.where(mask, np.asarray(got, np.float64), 0.0)
  want = np.where(mask, want, 0.0)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# -- values --------------------------------------------------------------------


W = ref.weighted_reinforce


SURROGATE_CASES = [
    ("ppo_clip", {}, lambda d: ref.ppo_clip(d.logp, d.old, d.adv, d.mask)),
    ("ppo_clip", {"clip_ratio_c": 3.0}, lambda d: ref.ppo_clip(
        d.logp, d.old, d.adv, d.mask, clip_ratio_c=3.0)),
    ("ppo_clip", {"delta": 1.5, "eps_high": 0.28}, lambda d: ref.ppo_clip(
        d.logp, d.old, d.adv, d.mask, delta=1.5, eps_high=0.28)),
    ("ppo_clip", {"log_ratio_clip": None, "clip_ratio_c": 2.0, "delta": 4.0},
     lambda d: ref.ppo_clip(d.logp, d.old, d.adv, d.mask, log_ratio_clip=None,
                            clip_ratio_c=2.0, delta=4.0)),
    ("bypass_ppo", {"clip_ratio_c": 3.0}, lambda d: ref.ppo_clip(
        d.logp, d.roll, d.adv, d.mask, clip_ratio_c=3.0)),
    ("gspo_seq", {}, lambda d: ref.gspo_seq(d.logp, d.old, d.adv, d.mask)),
    ("gspo_seq", {"eps_low": 0.2, "eps_high": 0.2}, lambda d: ref.gspo_seq(
        d.logp, d.old, d.adv, d.mask, eps_low=0.2, eps_high=0.2)),
    ("gspo_seq", {"max_log_ratio": 0.1}, lambda d: ref.gspo_seq(
        d.logp, d.old, d.adv, d.mask, max_log_ratio=0.1)),
    ("gspo_token", {}, lambda d: ref.gspo_token(d.logp, d.old, d.adv,
                                                d.mask)),
    ("gspo_token", {"eps_low": 0.2, "eps_high": 0.3}, lambda d: ref.gspo_token(
        d.logp, d.old, d.adv, d.mask, eps_low=0.2, eps_high=0.3)),
    ("luspo", {}, lambda d: ref.luspo(d.logp, d.old, d.adv, d.mask)),
    ("luspo", {"eps_low": 0.2, "eps_high": 0.2}, lambda d: ref.luspo(
        d.logp, d.old, d.adv, d.mask, eps_low=0.2, eps_high=0.2)),
    ("gmpo", {}, lambda d: ref.gmpo(d.logp, d.old, d.adv, d.mask)),
    ("gmpo", {"eps_low": 0.1, "eps_high": 0.2}, lambda d: ref.gmpo(
        d.logp, d.old, d.adv, d.mask, eps_low=0.1, eps_high=0.2)),
    ("cispo", {}, lambda d: W(d.logp, d.adv, ref.cispo_weight(d.logp, d.old),
                              d.mask)),
    ("cispo", {"bound": "upper"}, lambda d: W(d.logp, d.adv, ref.cispo_weight(
        d.logp, d.old, bound="upper"), d.mask)),
    ("cispo", {"bound": "upper", "max_ratio": 1.5, "log_ratio_clip": None},
     lambda d: W(d.logp, d.adv, ref.cispo_weight(
         d.logp, d.old, bound="upper", max_ratio=1.5, log_ratio_clip=None),
                 d.mask)),
    ("sapo", {}, lambda d: ref.sapo(d.logp, d.old, d.adv, d.mask)),
    ("sapo", {"tau_pos": 2.0, "tau_neg": 0.5}, lambda d: ref.sapo(
        d.logp, d.old, d.adv, d.mask, tau_pos=2.0, tau_neg=0.5)),
    ("dppo_tv", {}, lambda d: W(d.logp, d.adv, ref.dppo_weight(
        d.logp, d.old, d.adv, kind="tv"), d.mask)),
    ("dppo_tv", {"delta_low": 0.05, "delta_high": 0.1, "max_ratio": 1.5},
     lambda d: W(d.logp, d.adv, ref.dppo_weight(
         d.logp, d.old, d.adv, kind="tv", delta_low=0.05, delta_high=0.1,
         max_ratio=1.5), d.mask)),
    ("dppo_kl", {}, lambda d: W(d.logp, d.adv, ref.dppo_weight(
        d.logp, d.old, d.adv, kind="kl"), d.mask)),
    ("dppo_kl", {"delta_low": 0.01, "delta_high": 0.02}, lambda d: W(
        d.logp, d.adv, ref.dppo_weight(d.logp, d.old, d.adv, kind="kl",
                                       delta_low=0.01, delta_high=0.02),
        d.mask)),
    ("dro", {"beta": 0.1}, lambda d: ref.dro(d.logp, d.old, d.adv, d.mask,
                                             beta=0.1)),
    ("reinforce", {}, lambda d: ref.reinforce(d.logp, d.adv, d.mask)),
    ("bypass_reinforce", {}, lambda d: W(
        d.logp, d.adv, ref.bypass_reinforce_weight(d.logp, d.roll), d.mask)),
    ("bypass_reinforce", {"max_ratio": 1.2}, lambda d: W(
        d.logp, d.adv, ref.bypass_reinforce_weight(d.logp, d.roll,
                                                   max_ratio=1.2), d.mask)),
    ("vespo", {}, lambda d: W(d.logp, d.adv, ref.vespo_weight(
        d.logp, d.old, d.adv, d.mask, d.roll), d.mask)),
    ("vespo", {"k_pos": 1.0, "lambda_neg": 0.5}, lambda d: W(
        d.logp, d.adv, ref.vespo_weight(d.logp, d.old, d.adv, d.mask, d.roll,
                                        k_pos=1.0, lambda_neg=0.5), d.mask)),
    ("kl_cov", {}, lambda d: ref.kl_cov(d.logp, d.old, d.adv, d.mask)[0]),
    ("kl_cov", {"ratio": 0.1, "kappa": 0.5}, lambda d: ref.kl_cov(
        d.logp, d.old, d.adv, d.mask, ratio=0.1, kappa=0.5)[0]),
    # Detached tokens keep their value: the loss is PPO clip, unclamped.
    ("clip_cov", {"ratio": 0.2, "lb": -100.0, "ub": 100.0}, lambda d:
     ref.ppo_clip(d.logp, d.old, d.adv, d.mask, log_ratio_clip=None)),
]


WEIGHT_CASES = [
    ("rollout_is", {}, lambda d: corrections_ref.rollout_is(d.old, d.roll,
                                                            d.mask)),
    ("rollout_is", {"level": "sequence"}, lambda d: corrections_ref.rollout_is(
        d.old, d.roll, d.mask, level="sequence")),
    ("rollout_is", {"mode": "mask"}, lambda d: corrections_ref.rollout_is(
        d.old, d.roll, d.mask, mode="mask")),
    ("rollout_is", {"level": "sequence", "mode": "mask", "mask_low": 0.2,
                    "mask_high": 3.0}, lambda d: corrections_ref.rollout_is(
        d.old, d.roll, d.mask, level="sequence", mode="mask", mask_low=0.2,
        mask_high=3.0)),
    ("rollout_is", {"threshold": 1.1}, lambda d: corrections_ref.rollout_is(
        d.old, d.roll, d.mask, threshold=1.1)),
    ("off_policy_sequence_mask", {}, lambda d:
     corrections_ref.off_policy_sequence_mask(d.logp, d.roll, d.adv, d.mask)),
    ("off_policy_sequence_mask", {"delta": 0.0}, lambda d:
     corrections_ref.off_policy_sequence_mask(d.logp, d.roll, d.adv, d.mask,
                                              delta=0.0)),
]


DATASETS = {
    "moderate": dict(gap=0.5),
    "small_gap": dict(gap=0.05),
    "extreme": dict(extreme=True),
    "seq_adv": dict(gap=0.3, seq_adv=True),
    "on_policy": dict(on_policy=True),
}


def _case_id(case):
  name, kw, _ = case
  return name + ("" if not kw else "-" + "-".join(f"{k}={v}"
                                                  for k, v in kw.items()))


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("case", SURROGATE_CASES, ids=_case_id)
def test_surrogate_values_match_reference(case, dataset):
  name, kw, want_fn = case
  d = _data(seed=hash(dataset) % 1000, **DATASETS[dataset])
  loss, diag = _call("surrogate", name, _batch(d), key=jax.random.key(0),
                     **kw)
  assert loss.shape == d.mask.shape
  _close(loss, want_fn(d), d.mask)
  for value in diag.values():
    assert value.shape == d.mask.shape
    assert np.all(np.isfinite(np.asarray(value)[d.mask]))


def test_references_exercise_both_branches():
  """Sanity: the moderate data clips some tokens and leaves others."""
  d = _data(gap=0.5)
  clipped = ref.ppo_clip(d.logp, d.old, d.adv, d.mask) != -d.adv * np.exp(
      np.clip(d.logp - d.old, -20, 20))
  assert 0 < clipped[d.mask].mean() < 1
  w = ref.dppo_weight(d.logp, d.old, d.adv, kind="tv", delta_low=0.05,
                      delta_high=0.05)
  assert 0 < np.mean(w[d.mask] == 0) < 1
  m = corrections_ref.off_policy_sequence_mask(d.logp, d.roll, d.adv, d.mask,
                                               delta=0.0)
  assert 0 < np.mean(m[d.mask]) < 1


def test_vespo_without_rollout_logprobs_uses_no_sampler_factor():
  d = _data(seed=3)
  loss, diag = _call("surrogate", "vespo", _batch(d, with_roll=False))
  w = ref.vespo_weight(d.logp, d.old, d.adv, d.mask, None)
  _close(loss, W(d.logp, d.adv, w, d.mask), d.mask)
  _close(diag["weight"], w, d.mask)


def test_sequence_losses_ignore_padding_garbage():
  d = _data(seed=5, gap=0.3)
  clean = _batch(d)
  junk = np.where(d.mask, 0.0, np.nan)
  dirty = clean.replace(logprobs=clean.logprobs + junk,
                        old_logprobs=clean.old_logprobs + junk,
                        rollout_logprobs=clean.rollout_logprobs - junk)
  for kind, name, kw in [("surrogate", "gspo_seq", {}),
                         ("surrogate", "gspo_token", {}),
                         ("surrogate", "luspo", {}), ("surrogate", "gmpo", {}),
                         ("surrogate", "vespo", {}),
                         ("token_weight", "rollout_is", {"level": "sequence"}),
                         ("token_weight", "off_policy_sequence_mask", {})]:
    a, _ = _call(kind, name, clean, **kw)
    b, _ = _call(kind, name, dirty, **kw)
    np.testing.assert_array_equal(np.asarray(a)[d.mask],
                                  np.asarray(b)[d.mask], err_msg=name)


@pytest.mark.parametrize("name", ["ppo_clip", "gspo_seq", "gspo_token",
                                  "luspo", "gmpo", "cispo", "sapo", "dppo_tv",
                                  "dppo_kl", "dro", "reinforce",
                                  "bypass_reinforce", "bypass_ppo", "vespo",
                                  "clip_cov", "kl_cov"])
def test_objective_is_invariant_to_padding_garbage(name):
  """Through the objective (clean_padding), NaN/inf padding changes nothing."""
  kw = {"beta": 0.1} if name == "dro" else {}
  objective = divrl.build("grpo", {"name": name, **kw},
                          aggregation="seq-mean-token-mean")
  rng = np.random.default_rng(0)

  def with_roll(batch):
    roll = batch.old_logprobs + jnp.asarray(rng.normal(0, 0.2, (12, 7)),
                                            jnp.float32)
    roll = jnp.where(batch.response_mask, roll, jnp.nan)
    return batch.replace(rollout_logprobs=roll)

  clean = with_roll(make_batch(11, garbage=False))
  rng = np.random.default_rng(0)
  dirty = with_roll(make_batch(11, garbage=True))
  key = jax.random.key(1)
  lg = lambda b: jax.value_and_grad(
      lambda lp: objective(b.replace(logprobs=lp), key)[0])(b.logprobs)
  (l0, g0), (l1, g1) = lg(clean), lg(dirty)
  assert np.isfinite(float(l1))
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  np.testing.assert_allclose(g1, g0, rtol=1e-6, atol=1e-9)
  assert np.all(np.asarray(g1)[~np.asarray(dirty.response_mask)] == 0)


# -- sequence losses through the objective -------------------------------------


def _objective_loss_and_grad(name, batch, aggregation, key=None, **kw):
  objective = divrl.build("grpo", {"name": name, **kw},
                          aggregation=aggregation)
  return jax.value_and_grad(lambda lp: objective(
      batch.replace(logprobs=lp), key)[0])(batch.logprobs)


def test_seq_mean_token_mean_gives_mean_of_sequence_losses():
  d = _data(seed=6, gap=0.3, seq_adv=True)
  batch = _batch(d)
  nonempty = d.mask.any(axis=1)
  for name, want in [
      ("gmpo", ref.gmpo(d.logp, d.old, d.adv, d.mask)),
      ("gspo_seq", ref.gspo_seq(d.logp, d.old, d.adv, d.mask, eps_low=0.2,
                                eps_high=0.2)),
  ]:
    kw = {"eps_low": 0.2, "eps_high": 0.2} if name == "gspo_seq" else {}
    loss, _ = _objective_loss_and_grad(name, batch, "seq-mean-token-mean",
                                       **kw)
    per_seq = want[np.arange(len(want)), 0]  # L_i sits on every valid token
    np.testing.assert_allclose(loss, per_seq[nonempty].mean(), rtol=1e-5)


def test_luspo_is_length_weighted_gspo():
  """LUSPO under seq-mean-token-mean = mean_i |y_i| L_i = GSPO under
  seq-mean-token-sum (value and gradient)."""
  d = _data(seed=7, gap=0.3, seq_adv=True)
  batch = _batch(d)
  kw = {"eps_low": 0.2, "eps_high": 0.2}
  l_lu, g_lu = _objective_loss_and_grad("luspo", batch, "seq-mean-token-mean",
                                        **kw)
  l_gs, g_gs = _objective_loss_and_grad("gspo_seq", batch,
                                        "seq-mean-token-sum", **kw)
  gs = ref.gspo_seq(d.logp, d.old, d.adv, d.mask, **kw)[:, 0]
  n = d.mask.sum(1)
  np.testing.assert_allclose(l_lu, np.mean((gs * n)[n > 0]), rtol=1e-5)
  np.testing.assert_allclose(l_lu, l_gs, rtol=1e-6)
  np.testing.assert_allclose(g_lu, g_gs, rtol=1e-5, atol=1e-8)


def test_gspo_seq_and_gspo_token_agree_for_sequence_constant_advantages():
  """Same value always; same gradient for sequence-constant A with
  seq-mean-token-mean (make_batch: GRPO advantages, ragged lengths)."""
  batch = make_batch(8, b=12, t=7)
  objective = divrl.build("grpo", "ppo_clip")
  batch = objective.with_advantages(batch)
  kw = {"eps_low": 0.2, "eps_high": 0.2}
  seq, _ = _call("surrogate", "gspo_seq", batch, **kw)
  tok, _ = _call("surrogate", "gspo_token", batch, **kw)
  m = np.asarray(batch.response_mask)
  _close(tok, np.asarray(seq, np.float64), m, rtol=1e-6)
  l_s, g_s = _objective_loss_and_grad("gspo_seq", batch,
                                      "seq-mean-token-mean", **kw)
  l_t, g_t = _objective_loss_and_grad("gspo_token", batch,
                                      "seq-mean-token-mean", **kw)
  np.testing.assert_allclose(l_t, l_s, rtol=1e-6)
  np.testing.assert_allclose(g_t, g_s, rtol=1e-5, atol=1e-8)
  assert np.abs(np.asarray(g_s)).max() > 1e-3  # not all clipped
  # With token-varying advantages the gradients differ (documented).
  d = _data(seed=9, gap=0.05)
  tb = _batch(d)
  g1 = _objective_loss_and_grad("gspo_seq", tb, "seq-mean-token-mean",
                                **kw)[1]
  g2 = _objective_loss_and_grad("gspo_token", tb, "seq-mean-token-mean",
                                **kw)[1]
  assert not np.allclose(g1, g2, atol=1e-4)


# -- gradients -----------------------------------------------------------------


def _grad(kind, name, batch, key=None, **kw):
  return jax.grad(lambda lp: jnp.sum(_call(
      kind, name, batch.replace(logprobs=lp), key=key, **kw)[0]))(
          batch.logprobs)


def test_gspo_token_gradient_is_sequence_ratio_times_grad_logprob():
  d = _data(seed=10, gap=0.3)
  batch = _batch(d)
  # No clipping: d L_it / d l_it = -A_it s_i, and nothing reaches other tokens.
  g = _grad("surrogate", "gspo_token", batch, eps_low=10.0, eps_high=10.0)
  s = np.array([np.exp(ref.seq_log_ratio(d.logp, d.old, d.mask, i))
                for i in range(d.mask.shape[0])])
  _close(g, -d.adv * s[:, None], d.mask, rtol=1e-5)
  # With clipping, against the reference (clipped tokens get 0).
  kw = {"eps_low": 0.05, "eps_high": 0.05}
  _close(_grad("surrogate", "gspo_token", batch, **kw),
         ref.gspo_token_grad(d.logp, d.old, d.adv, d.mask, **kw), d.mask,
         rtol=1e-5)
  # Through a parameter: grad_theta sum L = sum_t -A_t s_i grad_theta l_t.
  theta = jnp.asarray(np.random.default_rng(0).normal(size=d.mask.shape),
                      jnp.float32)
  scale = jnp.asarray(d.logp, jnp.float32)

  def loss(th):
    lp = scale + 0.1 * jnp.tanh(th)
    return jnp.sum(_call("surrogate", "gspo_token", batch.replace(
        logprobs=lp), eps_low=10.0, eps_high=10.0)[0])

  g_theta = jax.grad(loss)(theta)
  lp = scale + 0.1 * jnp.tanh(theta)
  s_th = np.array([np.exp(ref.seq_log_ratio(np.asarray(lp, np.float64),
                                            d.old, d.mask, i))
                   for i in range(d.mask.shape[0])])
  dl = 0.1 * (1 - np.tanh(np.asarray(theta, np.float64)) ** 2)
  _close(g_theta, -d.adv * s_th[:, None] * dl, d.mask, rtol=1e-4)


def test_gspo_seq_gradient_reaches_every_token_of_the_sequence():
  d = _data(seed=11, gap=0.1)
  kw = {"eps_low": 0.05, "eps_high": 0.05}
  g = _grad("surrogate", "gspo_seq", _batch(d), **kw)
  _close(g, ref.gspo_seq_grad(d.logp, d.old, d.adv, d.mask, **kw), d.mask,
         rtol=1e-4, atol=1e-6)


def test_gmpo_gradient():
  d = _data(seed=12, gap=0.3)
  # Sum of the per-token copies = |y_i| L_i; its gradient is |y_i| x ref.
  g = _grad("surrogate", "gmpo", _batch(d), eps_low=0.2, eps_high=0.2)
  want = ref.gmpo_grad(d.logp, d.old, d.adv, d.mask, eps_low=0.2,
                       eps_high=0.2) * d.mask.sum(1, keepdims=True)
  _close(g, want, d.mask, rtol=1e-4, atol=1e-6)
  assert 0 < np.mean(np.asarray(g)[d.mask] == 0) < 1  # some clipped


@pytest.mark.parametrize("kw", [{}, {"clip_ratio_c": 3.0}, {"delta": 1.3},
                                {"clip_ratio_c": 1.5, "delta": 2.0,
                                 "eps_high": 0.28}])
def test_ppo_clip_gradient_with_dual_clip_and_delta(kw):
  d = _data(seed=13, gap=1.0)
  _close(_grad("surrogate", "ppo_clip", _batch(d), **kw),
         ref.ppo_clip_grad(d.logp, d.old, d.adv, d.mask, **kw), d.mask,
         rtol=1e-5, atol=1e-6)


def test_dual_clip_caps_negative_advantage_loss():
  d = _data(seed=14, gap=2.0)
  batch = _batch(d)
  c = 3.0
  loss, diag = _call("surrogate", "ppo_clip", batch, clip_ratio_c=c)
  loss, adv = np.asarray(loss), d.adv
  neg = d.mask & (adv < 0)
  assert np.all(loss[neg] <= np.abs(adv[neg]) * c * (1 + 1e-6))
  capped = neg & (np.asarray(diag["clipfrac_lower"]) > 0)
  assert capped.any()
  np.testing.assert_allclose(loss[capped], np.abs(adv[capped]) * c,
                             rtol=1e-6)
  g = np.asarray(_grad("surrogate", "ppo_clip", batch, clip_ratio_c=c))
  assert np.all(g[capped] == 0)
  # Without the dual clip the same tokens exceed the cap.
  plain, _ = _call("surrogate", "ppo_clip", batch)
  assert np.all(np.asarray(plain)[capped] > np.abs(adv[capped]) * c)


def test_delta_caps_the_ratio():
  d = _data(seed=15, gap=2.0)
  loss, _ = _call("surrogate", "ppo_clip", _batch(d), delta=2.0)
  loss = np.asarray(loss)
  assert np.all(loss[d.mask] <= 2.0 * np.abs(d.adv[d.mask]) * (1 + 1e-6))


def test_sapo_slope_is_one_at_ratio_one():
  d = _data(seed=16, on_policy=True)
  for kw in [{}, {"tau_pos": 3.0, "tau_neg": 0.3}]:
    g = _grad("surrogate", "sapo", _batch(d), **kw)
    _close(g, -d.adv, d.mask, rtol=1e-6)  # -A f'(1) rho = -A
  # df/drho = 1 at rho = 1, directly:
  f = lambda rho, tau: jax.nn.sigmoid(tau * (rho - 1.0)) * 4.0 / tau
  for tau in (0.5, 1.0, 1.05, 4.0):
    np.testing.assert_allclose(jax.grad(f)(1.0, tau), 1.0, rtol=1e-6)
  d = _data(seed=17, gap=0.7)
  _close(_grad("surrogate", "sapo", _batch(d)),
         ref.sapo_grad(d.logp, d.old, d.adv, d.mask), d.mask, rtol=1e-5,
         atol=1e-7)


WEIGHT_GRAD_CASES = [
    ("cispo", {}, lambda d: ref.cispo_weight(d.logp, d.old)),
    ("cispo", {"bound": "upper", "max_ratio": 1.5},
     lambda d: ref.cispo_weight(d.logp, d.old, bound="upper", max_ratio=1.5)),
    ("dppo_tv", {}, lambda d: ref.dppo_weight(d.logp, d.old, d.adv,
                                              kind="tv")),
    ("dppo_kl", {"delta_low": 0.01, "delta_high": 0.01},
     lambda d: ref.dppo_weight(d.logp, d.old, d.adv, kind="kl",
                               delta_low=0.01, delta_high=0.01)),
    ("vespo", {}, lambda d: ref.vespo_weight(d.logp, d.old, d.adv, d.mask,
                                             d.roll)),
    ("bypass_reinforce", {}, lambda d: ref.bypass_reinforce_weight(d.logp,
                                                                   d.roll)),
    ("reinforce", {}, lambda d: np.ones_like(d.logp)),
]


@pytest.mark.parametrize("case", WEIGHT_GRAD_CASES, ids=_case_id)
def test_weights_carry_no_gradient(case):
  """grad = -w A exactly: the weight is a constant."""
  name, kw, w_fn = case
  d = _data(seed=18, gap=0.6)
  g = _grad("surrogate", name, _batch(d), **kw)
  _close(g, ref.weighted_reinforce_grad(d.adv, w_fn(d), d.mask), d.mask,
         rtol=1e-5, atol=1e-7)


def test_dro_gradient():
  d = _data(seed=19, gap=0.6)
  g = _grad("surrogate", "dro", _batch(d), beta=0.3)
  _close(g, -(d.adv - 0.3 * (d.logp - d.old)), d.mask, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ppo_clip", "bypass_ppo", "gspo_seq",
                                  "gspo_token", "luspo", "gmpo", "cispo",
                                  "sapo", "dppo_tv", "dppo_kl", "dro",
                                  "reinforce", "bypass_reinforce", "vespo",
                                  "clip_cov", "kl_cov"])
def test_on_policy_gradient_is_reinforce(name):
  """At pi = pi_old = pi_roll with sequence-constant A, the summed per-token
  loss has gradient -A per token (LUSPO: -|y_i| A)."""
  d = _data(seed=20, on_policy=True, seq_adv=True)
  kw = {"beta": 0.1} if name == "dro" else {}
  if name == "clip_cov":  # keep the random detaching out of this check
    kw = {"lb": 1e3, "ub": 1e4}
  g = _grad("surrogate", name, _batch(d), key=jax.random.key(0), **kw)
  want = -d.adv * (d.mask.sum(1, keepdims=True) if name == "luspo" else 1.0)
  _close(g, want, d.mask, rtol=1e-5, atol=1e-6)


def test_kl_cov_gradient_adds_kappa_sign_on_selected_tokens():
  d = _data(seed=21, gap=0.4)
  batch = _batch(d)
  loss, diag = _call("surrogate", "kl_cov", batch, ratio=0.1, kappa=0.5)
  _, top = ref.kl_cov(d.logp, d.old, d.adv, d.mask, ratio=0.1, kappa=0.5)
  sel = np.asarray(diag["cov_selected"]) > 0
  assert {(int(i), int(t)) for i, t in zip(*np.nonzero(sel))} == top
  assert len(top) == ref.num_selected(0.1, int(d.mask.sum()))
  g = _grad("surrogate", "kl_cov", batch, ratio=0.1, kappa=0.5)
  delta = d.logp - d.old
  want = -d.adv * np.exp(delta) + np.where(sel, 0.5 * np.sign(delta), 0.0)
  _close(g, want, d.mask, rtol=1e-5, atol=1e-6)


# -- Clip-Cov selection --------------------------------------------------------


COV_KW = {"ratio": 0.15, "lb": -100.0, "ub": 100.0}


def test_clip_cov_detaches_selected_tokens():
  d = _data(seed=22, b=8, t=9, gap=0.4)
  batch = _batch(d)
  key = jax.random.key(3)
  loss, diag = _call("surrogate", "clip_cov", batch, key=key, **COV_KW)
  sel = np.asarray(diag["cov_selected"]) > 0
  eligible, n = ref.clip_cov_eligible(d.logp, d.old, d.adv, d.mask,
                                      lb=-100.0, ub=100.0)
  k = ref.num_selected(0.15, n)
  assert sel.sum() == min(k, eligible.sum()) and sel.sum() >= 2
  assert np.all(eligible[sel])
  # Same value as plain PPO clip (no clamp), zero gradient where selected.
  _close(loss, ref.ppo_clip(d.logp, d.old, d.adv, d.mask,
                            log_ratio_clip=None), d.mask, rtol=1e-6)
  g = np.asarray(_grad("surrogate", "clip_cov", batch, key=key, **COV_KW))
  want = ref.ppo_clip_grad(d.logp, d.old, d.adv, d.mask, log_ratio_clip=None)
  assert np.all(g[sel] == 0) and np.any(want[sel] != 0)
  _close(g, np.where(sel, 0.0, want), d.mask, rtol=1e-5, atol=1e-7)


def test_clip_cov_respects_covariance_bounds_and_defaults():
  d = _data(seed=23, b=8, t=9, gap=0.4)
  batch = _batch(d)
  for lb, ub in [(0.05, 0.5), (-0.5, 0.0)]:
    _, diag = _call("surrogate", "clip_cov", batch, key=jax.random.key(0),
                    ratio=0.5, lb=lb, ub=ub)
    sel = np.asarray(diag["cov_selected"]) > 0
    eligible, n = ref.clip_cov_eligible(d.logp, d.old, d.adv, d.mask, lb=lb,
                                        ub=ub)
    assert eligible.sum() > 0
    assert np.all(eligible[sel])
    assert sel.sum() == min(ref.num_selected(0.5, n), eligible.sum())
  # Defaults (ratio 2e-4, 1 < c < 5): at most one token.
  _, diag = _call("surrogate", "clip_cov", batch, key=jax.random.key(0))
  assert np.asarray(diag["cov_selected"]).sum() <= 1


def test_clip_cov_is_deterministic_given_a_key_and_varies_with_it():
  d = _data(seed=24, b=8, t=9, gap=0.4)
  batch = _batch(d)
  sel = lambda k: np.asarray(_call("surrogate", "clip_cov", batch,
                                   key=jax.random.key(k), **COV_KW)[1][
                                       "cov_selected"])
  np.testing.assert_array_equal(sel(5), sel(5))
  picks = {tuple(sel(k).ravel()) for k in range(6)}
  assert len(picks) > 1
  with pytest.raises(ValueError, match="key"):
    _call("surrogate", "clip_cov", batch, key=None)
  with pytest.raises(ValueError, match="key"):
    divrl.build("grpo", "clip_cov")(make_batch(0))


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("data",))


@pytest.mark.parametrize("spec,mode", [
    ({"name": "clip_cov", **COV_KW}, "token-mean"),
    ({"name": "clip_cov", "ratio": 0.3, "lb": -0.2, "ub": 0.5},
     "seq-mean-token-mean"),
    ({"name": "kl_cov", "ratio": 0.1, "kappa": 0.5}, "seq-mean-token-mean"),
    ({"name": "kl_cov"}, "token-mean"),
])
def test_cov_selection_sharded_equals_single_device(mesh, spec, mode):
  """Selection is global: shard_map on 8 devices == one device."""
  objective = divrl.build("grpo", spec, aggregation=mode)
  batch = make_batch(7, b=16, t=7, num_groups=3)
  batch = batch.replace(old_logprobs=batch.logprobs + 0.4 * jnp.asarray(
      np.random.default_rng(1).normal(size=(16, 7)), jnp.float32))
  key = jax.random.key(42)

  def loss_and_grad(b, axis_name=None):
    return jax.value_and_grad(lambda lp: objective(
        b.replace(logprobs=lp), key, axis_name=axis_name)[0])(b.logprobs)

  def selected(b, axis_name=None):
    b = objective.with_advantages(b, key, axis_name=axis_name)
    skey = objective._keys("surrogate", key)[0]
    kw = {"key": skey} if spec["name"] == "clip_cov" else {}
    out = registry.make("surrogate", spec)(
        divrl.objective.clean_padding(b), b.advantages, axis_name=axis_name,
        **kw)
    return out[1]["cov_selected"]

  loss, grad = loss_and_grad(batch)
  sel = selected(batch)
  assert float(jnp.sum(sel)) >= 1
  bspec = sharding.batch_spec(batch)
  fn = jax.shard_map(lambda b: (*loss_and_grad(b, "data"),
                                selected(b, "data")),
                     mesh=mesh, in_specs=(bspec,),
                     out_specs=(P(), bspec.logprobs, bspec.logprobs))
  loss8, grad8, sel8 = jax.jit(fn)(sharding.shard_batch(batch, mesh))
  np.testing.assert_array_equal(sel8, sel)
  np.testing.assert_allclose(loss8, loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad8, grad, rtol=1e-5, atol=1e-7)


# -- jit -----------------------------------------------------------------------


def _first_per_name(cases):
  seen, out = set(), []
  for case in cases:
    if case[0] not in seen:
      seen.add(case[0])
      out.append(case)
  return out


@pytest.mark.parametrize(
    "kind,case",
    [("surrogate", c) for c in _first_per_name(SURROGATE_CASES)]
    + [("token_weight", c) for c in _first_per_name(WEIGHT_CASES)],
    ids=lambda x: x if isinstance(x, str) else _case_id(x))
def test_jit_matches_eager(kind, case):
  name, kw, _ = case
  d = _data(seed=25, gap=0.5)
  batch = _batch(d)
  key = jax.random.key(0)
  eager = _call(kind, name, batch, key=key, **kw)[0]
  jitted = jax.jit(lambda b, k: _call(kind, name, b, key=k, **kw)[0])(
      batch, key)
  np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)


# -- validation ----------------------------------------------------------------


BAD = [
    ("surrogate", "ppo_clip", {"clip_ratio_c": 1.0}, "clip_ratio_c"),
    ("surrogate", "ppo_clip", {"delta": 1.1}, "delta"),
    ("surrogate", "ppo_clip", {"eps_low": -0.1}, "eps_low"),
    ("surrogate", "bypass_ppo", {"clip_ratio_c": 0.5}, "clip_ratio_c"),
    ("surrogate", "gspo_seq", {"eps_high": -1.0}, "eps_high"),
    ("surrogate", "gspo_token", {"eps_low": -1.0}, "eps_low"),
    ("surrogate", "luspo", {"eps_low": -1.0}, "eps_low"),
    ("surrogate", "gmpo", {"eps_low": -0.1}, "eps_low"),
    ("surrogate", "gmpo", {"log_ratio_clip": 0.0}, "log_ratio_clip"),
    ("surrogate", "cispo", {"bound": "lower"}, "bound"),
    ("surrogate", "cispo", {"bound": "upper", "max_ratio": 0.0}, "max_ratio"),
    ("surrogate", "sapo", {"tau_pos": 0.0}, "tau_pos"),
    ("surrogate", "sapo", {"tau_neg": -1.0}, "tau_neg"),
    ("surrogate", "dppo_tv", {"delta_low": 0.0}, "delta_low"),
    ("surrogate", "dppo_kl", {"delta_high": -1.0}, "delta_high"),
    ("surrogate", "dppo_kl", {"max_ratio": 0.0}, "max_ratio"),
    ("surrogate", "clip_cov", {"ratio": 0.0}, "ratio"),
    ("surrogate", "clip_cov", {"lb": 5.0, "ub": 1.0}, "lb"),
    ("surrogate", "kl_cov", {"kappa": -1.0}, "kappa"),
    ("surrogate", "kl_cov", {"ratio": -1.0}, "ratio"),
    ("surrogate", "dro", {}, "beta"),
    ("surrogate", "dro", {"beta": 0.0}, "beta"),
    ("surrogate", "vespo", {"k_pos": -1.0}, "k_pos"),
    ("surrogate", "vespo", {"lambda_neg": -1.0}, "lambda_neg"),
    ("surrogate", "bypass_reinforce", {"max_ratio": 0.0}, "max_ratio"),
    ("surrogate", "bypass_reinforce", {"level": "batch"}, "level"),
    ("token_weight", "rollout_is", {"mode": "clip"}, "mode"),
    ("token_weight", "rollout_is", {"level": "batch"}, "level"),
    ("token_weight", "rollout_is", {"threshold": 0.0}, "threshold"),
    ("token_weight", "rollout_is", {"mask_low": 2.0, "mask_high": 1.0},
     "mask_low"),
    ("token_weight", "off_policy_sequence_mask", {"delta": None}, "delta"),
]


@pytest.mark.parametrize("kind,name,kw,match", BAD,
                         ids=[f"{b[1]}-{b[3]}" for b in BAD])
def test_bad_hyperparameters_raise_naming_the_argument(kind, name, kw, match):
  batch = _batch(_data(seed=26))
  with pytest.raises(ValueError, match=match):
    _call(kind, name, batch, key=jax.random.key(0), **kw)
  # Also when the part is bound from a config: out of its declared domain
  # when it is built, else (choices, pairs of bounds) when it runs.
  spec = {"name": name, **kw}
  with pytest.raises(ValueError, match=match):
    if kind == "surrogate":
      objective = divrl.build("grpo", spec)
    else:
      objective = divrl.build("grpo", "ppo_clip", token_weights=[spec])
    objective(make_batch(0).replace(
        rollout_logprobs=make_batch(0).old_logprobs), jax.random.key(0))


@pytest.mark.parametrize("kind,name", [("surrogate", "bypass_ppo"),
                                       ("surrogate", "bypass_reinforce"),
                                       ("token_weight", "rollout_is")])
def test_missing_rollout_logprobs_is_named(kind, name):
  batch = _batch(_data(seed=27), with_roll=False)
  with pytest.raises(ValueError, match=r"Batch\.rollout_logprobs"):
    _call(kind, name, batch)


def test_unknown_hyperparameter_is_named():
  with pytest.raises(ValueError, match="clip_ratio"):
    divrl.build("grpo", {"name": "gspo_token", "clip_ratio": 3.0})


# -- bypass REINFORCE, sequence level ------------------------------------------


f32 = lambda x: jnp.asarray(x, jnp.float32)


def _ratio_inputs(seed, b=8, t=6, gap=0.4):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, t + 1, size=b)
  lengths[-1] = 0
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float64)
  l = -rng.uniform(0.05, 3.0, size=(b, t))
  o = l + rng.normal(0, gap, size=(b, t))
  r = o + rng.normal(0, gap, size=(b, t))
  a = rng.normal(size=(b, t))
  r32 = lambda x: np.asarray(np.asarray(x, np.float32), np.float64)
  return r32(l), r32(o), r32(r), r32(a), mask


def test_bypass_reinforce_sequence_level_value_and_gradient():
  l, _, r, a, m = _ratio_inputs(1, gap=0.2)
  b, t = l.shape
  w = np.zeros((b, t))
  for i in range(b):
    ts = [j for j in range(t) if m[i, j] > 0]
    s = math.exp(min(max(sum(l[i, j] - r[i, j] for j in ts), -20.0), 20.0))
    for j in ts:
      w[i, j] = min(s, 1.1)
  fn = lambda x: surrogates.bypass_reinforce(x, f32(r), f32(a), f32(m),
                                             level="sequence",
                                             max_ratio=1.1)[0]
  v = m > 0
  np.testing.assert_allclose(np.asarray(fn(f32(l)))[v], (-w * a * l)[v],
                             rtol=1e-5)
  g = jax.grad(lambda x: jnp.sum(jnp.where(f32(m) > 0, fn(x), 0.0)))(f32(l))
  np.testing.assert_allclose(np.asarray(g)[v], (-w * a)[v], rtol=1e-5)
  assert 0 < np.mean(w[v] == 1.1) < 1  # truncation binds on some rows
