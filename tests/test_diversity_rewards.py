"""Group diversity rewards (DARLING, Vendi, RepExp, DSDR, TTRV) and the
confidence-aware corrections (ACE, noisy-verifier backward correction),
against NumPy references written here from the papers' formulas."""

import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import confidence
from divrl import diversity
from divrl import registry

T = 4


def _batch(rewards, group_ids, *, solution_ids=None, embeddings=None,
           lengths=None, seed=0):
  rng = np.random.default_rng(seed)
  b = len(rewards)
  lengths = np.full(b, T) if lengths is None else np.asarray(lengths)
  mask = np.arange(T)[None] < lengths[:, None]
  extra = {}
  if solution_ids is not None:
    extra["solution_ids"] = jnp.asarray(solution_ids, jnp.int32)
  if embeddings is not None:
    extra["embeddings"] = jnp.asarray(embeddings, jnp.float32)
  lp = -rng.uniform(0.1, 2.0, (b, T))
  return divrl.Batch(
      logprobs=jnp.asarray(lp, jnp.float32), response_mask=jnp.asarray(mask),
      rewards=jnp.asarray(rewards, jnp.float32),
      group_ids=jnp.asarray(group_ids, jnp.int32),
      ref_logprobs=jnp.asarray(lp + rng.normal(0, 0.5, lp.shape),
                               jnp.float32),
      num_groups=int(max(group_ids)) + 1, **extra)


def _transform(name, **kw):
  return registry.make("transform", {"name": name, **kw})


# --- DARLING ----------------------------------------------------------------


def np_darling(q, classes, gid, among, floor=0.1):
  out = np.array(q, np.float64)
  for i in range(len(q)):
    if not among[i]:
      continue
    mates = [j for j in range(len(q)) if gid[j] == gid[i] and among[j]]
    n = len(mates)
    size = sum(classes[j] == classes[i] for j in mates)
    div = 1.0 if n == 1 else max(floor, (n - size) / (n - 1))
    out[i] = q[i] * div
  return out


def test_darling_from_solution_ids_matches_numpy():
  gid = [0, 0, 0, 0, 0, 1, 1, 1, 2]
  q = [1, 1, 1, 0, 1, 1, 0, 1, 1]
  ids = [3, 3, 5, -1, 7, 2, -1, 2, 4]
  b = _batch(q, gid, solution_ids=ids)
  got = _transform("darling")(b).rewards
  # Wrong answers (-1) are each a class of their own.
  classes = [i if ids[i] < 0 else 100 + ids[i] for i in range(len(ids))]
  np.testing.assert_allclose(got, np_darling(q, classes, gid, [True] * 9),
                             rtol=1e-6)
  correct = np.array(q) > 0
  got_c = _transform("darling", correct_only=True)(b).rewards
  np.testing.assert_allclose(got_c, np_darling(q, classes, gid, correct),
                             rtol=1e-6)


def test_darling_with_all_samples_distinct_is_quality_alone():
  q = [0.3, 1.0, 0.0, 0.7, 1.0, 0.5]
  gid = [0, 0, 0, 1, 1, 1]
  b = _batch(q, gid, solution_ids=[0, 1, 2, 3, 4, 5],
             embeddings=np.eye(6))
  np.testing.assert_allclose(_transform("darling")(b).rewards, q, rtol=1e-6)
  np.testing.assert_allclose(
      _transform("darling_embeddings", threshold=0.5)(b).rewards, q,
      rtol=1e-6)


def test_darling_embeddings_partition_is_the_transitive_closure():
  # 0~1 (cos 0.95) and 1~2 (cos 0.95) but 0 !~ 2 directly: one class.
  a = np.array([1.0, 0.0, 0.0])
  b_ = np.array([0.95, np.sqrt(1 - 0.95 ** 2), 0.0])
  c = np.array([0.95 ** 2 - np.sqrt(1 - 0.95 ** 2) ** 2,
                2 * 0.95 * np.sqrt(1 - 0.95 ** 2), 0.0])
  emb = np.stack([a, b_, c, [0, 0, 1.0]])
  assert float(a @ c) < 0.9
  labels = diversity.connected_classes(
      jnp.asarray(diversity.cosine_similarity(jnp.asarray(emb)) > 0.9))
  np.testing.assert_array_equal(labels, [0, 0, 0, 3])
  batch = _batch([1, 1, 1, 1], [0, 0, 0, 0], embeddings=emb)
  got = _transform("darling_embeddings", threshold=0.9)(batch).rewards
  np.testing.assert_allclose(got, [1 / 3, 1 / 3, 1 / 3, 1.0], rtol=1e-6)


# --- Vendi ------------------------------------------------------------------


def np_vendi(emb):
  e = np.asarray(emb, np.float64)
  u = e / np.linalg.norm(e, axis=1, keepdims=True)
  lam = np.clip(np.linalg.eigvalsh(u @ u.T / len(e)), 0, None)
  lam = lam[lam > 1e-12]
  return float(np.exp(-np.sum(lam * np.log(lam))))


def test_vendi_identical_is_one_and_orthogonal_is_n():
  for n in (1, 3, 5):
    same = jnp.ones((n, n))
    np.testing.assert_allclose(diversity.vendi_score(same, jnp.ones(n)), 1.0,
                               rtol=1e-5)
    np.testing.assert_allclose(diversity.vendi_score(jnp.eye(n),
                                                     jnp.ones(n)), n,
                               rtol=1e-5)


def test_vendi_credit_matches_numpy_leave_one_out():
  rng = np.random.default_rng(3)
  emb = rng.normal(size=(7, 5))
  gid = np.array([0, 0, 0, 0, 1, 1, 1])
  got = np.asarray(diversity.vendi_credit(jnp.asarray(emb, jnp.float32),
                                          jnp.asarray(gid, jnp.int32)))
  for i in range(7):
    members = np.flatnonzero(gid == gid[i])
    rest = members[members != i]
    want = np_vendi(emb[members]) - np_vendi(emb[rest])
    np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-5)
  r = rng.uniform(size=7)
  b = _batch(r, gid, embeddings=emb)
  np.testing.assert_allclose(_transform("vendi_reward", coef=0.3)(b).rewards,
                             r + 0.3 * got, rtol=1e-5, atol=1e-6)


# --- RepExp and DSDR ----------------------------------------------------------


def test_elliptical_bonus_and_dsdr_match_numpy():
  rng = np.random.default_rng(4)
  emb = rng.normal(size=(6, 3))
  gid = np.array([0, 0, 0, 1, 1, 1])
  r = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
  b = _batch(r, gid, embeddings=emb)
  want = []
  for i in range(6):
    members = np.flatnonzero(gid == gid[i])
    phi = emb[members] - emb[members].mean(0)
    phi = phi / np.linalg.norm(phi, axis=1, keepdims=True)
    cov = 0.5 * np.eye(3) + phi.T @ phi
    p = phi[list(members).index(i)]
    want.append(p @ np.linalg.solve(cov, p))
  got = _transform("repexp_bonus", coef=2.0, ridge=0.5)(b).rewards
  np.testing.assert_allclose(got, r + 2.0 * np.array(want), rtol=1e-4)
  u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  d = np.zeros(6)
  for i in range(6):
    mates = [j for j in range(6) if gid[j] == gid[i] and r[j] > 0 and j != i]
    if r[i] > 0 and mates:
      d[i] = 1 - np.mean([u[i] @ u[j] for j in mates])
  got = _transform("dsdr_global", coef=0.5)(b).rewards
  np.testing.assert_allclose(got, r + 0.5 * d, rtol=1e-5, atol=1e-6)


# --- TTRV -------------------------------------------------------------------


def test_ttrv_majority_frequency_and_entropy():
  gid = [0, 0, 0, 0, 1, 1]
  ids = [2, 2, 5, -1, 1, 1]
  b = _batch([0.0] * 6, gid, solution_ids=ids)
  got = _transform("ttrv_reward", entropy_coef=0.5)(b).rewards
  p0 = np.array([0.5, 0.25, 0.25])
  h0 = -np.sum(p0 * np.log(p0))
  want = np.array([0.5, 0.5, 0.25, 0.25, 1.0, 1.0]) - 0.5 * np.array(
      [h0] * 4 + [0.0] * 2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# --- ACE and the noisy verifier --------------------------------------------------


def test_ace_scales_negative_advantages_by_the_confidence_shift():
  b = _batch([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0], lengths=[4, 2, 3, 1])
  adv = jnp.asarray([[1.0] * T, [-1.0] * T, [-0.5] * T, [0.5] * T])
  w = np.asarray(registry.make("token_weight", {"name": "ace", "alpha": 0.5})(
      b, adv))
  m = np.asarray(b.response_mask)
  d = np.where(m, np.asarray(b.logprobs) - np.asarray(b.ref_logprobs), 0.0)
  c = d.sum(1)
  g = np.minimum(1 + 0.5 * np.maximum(c, 0), 10.0)
  want = np.where(np.asarray(adv) < 0, g[:, None], 1.0) * m
  np.testing.assert_allclose(w, want, rtol=1e-5)


@pytest.mark.parametrize("rho0,rho1", [(0.0, 0.0), (0.1, 0.2), (0.3, 0.05)])
def test_backward_correction_is_unbiased_by_enumeration(rho0, rho1):
  for clean in (0.0, 1.0):
    # Observed 1 with probability 1 - rho1 (clean 1) or rho0 (clean 0).
    p1 = 1 - rho1 if clean else rho0
    vals = confidence.backward_corrected_rewards(
        jnp.asarray([0.0, 1.0]), false_positive=rho0, false_negative=rho1)
    mean = (1 - p1) * float(vals[0]) + p1 * float(vals[1])
    assert mean == pytest.approx(clean, abs=1e-6)
  b = _batch([0.0, 1.0], [0, 0])
  got = _transform("noisy_verifier_correction", false_positive=rho0,
                   false_negative=rho1)(b).rewards
  np.testing.assert_allclose(got, [(0 - rho0) / (1 - rho0 - rho1),
                                   (1 - rho0) / (1 - rho0 - rho1)],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="false_positive"):
    confidence.backward_corrected_rewards(jnp.zeros(1), false_positive=0.6,
                                          false_negative=0.5)


def test_group_permutation_equivariance_of_the_pairwise_rewards():
  rng = np.random.default_rng(5)
  gid = np.array([0, 0, 0, 1, 1, 1, 1])
  r = rng.integers(0, 2, 7).astype(float)
  ids = np.where(r > 0, rng.integers(0, 3, 7), -1)
  emb = rng.normal(size=(7, 4))
  perm = rng.permutation(7)
  b = _batch(r, gid, solution_ids=ids, embeddings=emb)
  bp = _batch(r[perm], gid[perm], solution_ids=ids[perm],
              embeddings=emb[perm])
  for name, kw in (("darling", {}), ("darling_embeddings", {}),
                   ("vendi_reward", {}), ("repexp_bonus", {}),
                   ("dsdr_global", {}), ("ttrv_reward", {})):
    a = np.asarray(_transform(name, **kw)(b).rewards)
    c = np.asarray(_transform(name, **kw)(bp).rewards)
    np.testing.assert_allclose(c, a[perm], rtol=1e-4, atol=1e-5,
                               err_msg=name)


@pytest.mark.parametrize("rho0,rho1", [(0.0, 0.0), (0.1, 0.2), (0.3, 0.05)])
def test_forward_correction_aligns_with_the_clean_gradient(rho0, rho1):
  # E[w | clean r] over the verifier channel: 0 for r = 1 and
  # -(1 - rho0 - rho1) for r = 0, i.e. (1 - rho0 - rho1) (r - 1), whose
  # score-function update is the clean gradient times 1 - rho0 - rho1.
  w = confidence.forward_correction_weights(jnp.asarray([0.0, 1.0]),
                                            false_negative=rho1)
  for clean in (0.0, 1.0):
    p1 = 1 - rho1 if clean else rho0
    mean = (1 - p1) * float(w[0]) + p1 * float(w[1])
    assert mean == pytest.approx((1 - rho0 - rho1) * (clean - 1), abs=1e-6)
  # On a two-answer policy the expected update is exactly that direction.
  pi = np.array([0.3, 0.7])               # answer 0 wrong, answer 1 right
  score = np.eye(2) - pi[None]            # d log pi_y / d logits
  clean_grad = pi[1] * score[1]           # d pi_right / d logits
  noisy = sum(pi[y] * (p_obs * float(w[1]) + (1 - p_obs) * float(w[0]))
              * score[y]
              for y, p_obs in ((0, rho0), (1, 1 - rho1)))
  np.testing.assert_allclose(noisy, (1 - rho0 - rho1) * clean_grad,
                             atol=1e-6)
  b = _batch([0.0, 1.0, 1.0], [0, 0, 0], lengths=[6, 2, 0])
  adv = registry.make("advantage", {"name": "noisy_verifier_forward",
                                    "false_negative": rho1})(b)
  want = np.array([rho1 - 1, rho1, rho1])[:, None] * np.asarray(
      b.response_mask)
  np.testing.assert_allclose(adv, want, rtol=1e-6)
  with pytest.raises(ValueError, match="false_negative"):
    confidence.forward_correction_weights(jnp.zeros(1), false_negative=1.0)


def test_confidence_reweight_favours_unlikely_correct_answers():
  b = _batch([1.0, 1.0, 0.0, 1.0, 1.0, 0.0], [0, 0, 0, 1, 1, 2],
             lengths=[6, 3, 6, 4, 0, 5], seed=3)
  adv = jnp.asarray(np.repeat([[0.5], [0.5], [-1.0], [0.3], [0.3], [0.0]],
                              T, 1), jnp.float32)
  part = registry.make("token_weight", {"name": "confidence_reweight",
                                        "coef": 2.0, "floor": 0.2,
                                        "cap": 3.0})
  w = np.asarray(part(b, adv))
  m = np.asarray(b.response_mask)
  lp = np.asarray(b.logprobs)      # on-policy: the behaviour log-probs
  c = np.array([lp[i][m[i]].mean() if m[i].any() else 0.0 for i in range(6)])
  want = np.ones(6)
  # Group 0: rows 0 and 1 positive; group 1: row 3 only (row 4 is empty).
  mean0 = (c[0] + c[1]) / 2
  for i, mean in ((0, mean0), (1, mean0), (3, c[3])):
    want[i] = np.clip(1 + 2.0 * (mean - c[i]), 0.2, 3.0)
  np.testing.assert_allclose(w, want[:, None] * m, rtol=1e-5, atol=1e-6)
  less_confident = 0 if c[0] < c[1] else 1
  assert w[less_confident, 0] > 1 > w[1 - less_confident, 0]
  assert w[3, 0] == 1.0            # alone among its group's positives
  with pytest.raises(ValueError, match="coef"):
    confidence.confidence_weights(jnp.zeros(2), jnp.ones(2, bool),
                                  jnp.zeros(2, int), 1, coef=-1.0)
