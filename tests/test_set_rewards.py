"""divrl.set_rewards: group distinct-n credit, submodular marginal gains,
k-NN novelty, GARDO's diversity-aware advantage and DSDR's local term,
against the NumPy references in ``tests/references/set_rewards.py`` (sets
and loops), plus the identities each mechanism implies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import divrl
from divrl import aggregation, metrics, registry
from divrl import set_rewards as sr
from divrl.sharding import make_mesh
from tests.references import set_rewards as ref

T = 7
# Ragged groups: sizes 4, 3, 1 (singleton) and 4; row 9 is all padding.
GIDS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 3])
LENGTHS = np.array([7, 5, 7, 2, 6, 6, 1, 4, 7, 0, 3, 7])
B = len(GIDS)


def _mask(lengths, t=T):
  return np.arange(t)[None] < np.asarray(lengths)[:, None]


def _batch(rewards, group_ids=GIDS, lengths=LENGTHS, *, tokens=None,
           embeddings=None, entropy=None, mask=None, seed=0):
  rng = np.random.default_rng(seed)
  b = len(group_ids)
  mask = _mask(lengths) if mask is None else np.asarray(mask)
  t = mask.shape[1]
  extra = {}
  if tokens is not None:
    extra["tokens"] = jnp.asarray(tokens, jnp.int32)
  if embeddings is not None:
    extra["embeddings"] = jnp.asarray(embeddings, jnp.float32)
  if entropy is not None:
    extra["entropy"] = jnp.asarray(entropy, jnp.float32)
  return divrl.Batch(
      logprobs=jnp.asarray(-rng.uniform(0.1, 2.0, (b, t)), jnp.float32),
      response_mask=jnp.asarray(mask),
      rewards=jnp.asarray(rewards, jnp.float32),
      group_ids=jnp.asarray(group_ids, jnp.int32),
      num_groups=int(max(group_ids)) + 1, **extra)


def _make(kind, name, **kw):
  return registry.make(kind, {"name": name, **kw})


def _tokens(seed, vocab=3, b=B, t=T):
  """Small vocabulary (many shared n-grams) and garbage on padding."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, vocab, (b, t))


def _sharded(fn, batch):
  mesh = make_mesh((4,), ("data",), devices=jax.devices()[:4])
  spec = jax.tree.map(lambda x: P("data"), batch)
  placed = jax.device_put(batch, jax.tree.map(
      lambda s: NamedSharding(mesh, s), spec))
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(spec,),
                               out_specs=P("data")))(placed)


# --- distinct_n_reward -------------------------------------------------------


@pytest.mark.parametrize("credit", ["unique_share", "leave_one_out"])
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distinct_n_matches_the_set_reference(credit, n, seed):
  tokens = _tokens(seed)
  mask = _mask(LENGTHS)
  mask[2, 3] = False  # a gap: the n-grams run over the valid tokens only
  r = np.random.default_rng(seed).integers(0, 2, B).astype(float)
  batch = _batch(r, tokens=tokens, mask=mask)
  out = _make("transform", "distinct_n_reward", n=n, credit=credit,
              coef=0.5)(batch)
  want = ref.distinct_n_credit(tokens, mask, GIDS, n, credit)
  np.testing.assert_allclose(out.rewards, r + 0.5 * want, rtol=1e-6,
                             atol=1e-6)
  # Padding (row 9, and rows shorter than n) gets exactly nothing.
  got = np.asarray(out.rewards) - r
  short = mask.sum(1) < n
  assert np.all(got[short] == 0)


def test_distinct_n_identical_rows_get_no_unique_credit():
  row = [1, 2, 3, 1, 2]
  tokens = np.array([row] * 4)
  mask = np.ones((4, 5), bool)
  gid = np.zeros(4, int)
  u = sr.distinct_n_credit(jnp.asarray(tokens), jnp.asarray(mask),
                           jnp.asarray(gid), 1, n=2)
  np.testing.assert_array_equal(u, np.zeros(4))
  # The ratio: 3 distinct bigrams of 4 per row; D(k rows) = 3 / (4k).
  loo = sr.distinct_n_credit(jnp.asarray(tokens), jnp.asarray(mask),
                             jnp.asarray(gid), 1, n=2, credit="leave_one_out")
  np.testing.assert_allclose(loo, np.full(4, 3 / 16 - 3 / 12), rtol=1e-6)


def test_distinct_n_disjoint_rows():
  # Disjoint vocabularies: every n-gram is new. Without internal repeats the
  # share is 1 and the leave-one-out ratio change 0; a row repeating itself
  # gets its own distinct-n (2 distinct bigrams of 4).
  tokens = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 11, 12, 11]])
  mask = np.ones_like(tokens, bool)
  gid = np.zeros(3, int)
  u = sr.distinct_n_credit(jnp.asarray(tokens), jnp.asarray(mask),
                           jnp.asarray(gid), 1, n=2)
  np.testing.assert_allclose(u, [1.0, 1.0, 0.5], rtol=1e-6)
  loo = sr.distinct_n_credit(jnp.asarray(tokens[:2]), jnp.asarray(mask[:2]),
                             jnp.asarray(gid[:2]), 1, n=2,
                             credit="leave_one_out")
  np.testing.assert_allclose(loo, [0.0, 0.0], atol=1e-7)


def test_distinct_n_groups_do_not_see_each_other():
  # The same row in two groups: alone in its group it is all new.
  tokens = np.array([[4, 5, 6], [4, 5, 6], [4, 5, 6]])
  mask = np.ones_like(tokens, bool)
  u = sr.distinct_n_credit(jnp.asarray(tokens), jnp.asarray(mask),
                           jnp.asarray([0, 0, 1]), 2, n=2)
  np.testing.assert_allclose(u, [0.0, 0.0, 1.0])


def test_group_distinct_n_equals_the_metric():
  tokens = _tokens(5, vocab=4)
  mask = _mask(LENGTHS)
  total, own, distinct, count = sr.group_ngram_counts(
      jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(GIDS), 4, n=2)
  for g in range(4):
    texts = [" ".join(str(x) for x in tokens[i][mask[i]])
             for i in np.flatnonzero(GIDS == g)]
    want = metrics.distinct_n(texts, 2)
    got = float(distinct[g]) / max(int(count[g]), 1)
    assert got == pytest.approx(want, abs=1e-12), g
  np.testing.assert_array_equal(total, np.maximum(mask.sum(1) - 1, 0))
  assert np.all(np.asarray(own) <= np.asarray(total))


def test_distinct_n_ignores_padding_tokens_and_is_permutation_equivariant():
  tokens = _tokens(7)
  mask = _mask(LENGTHS)
  r = np.zeros(B)
  fn = _make("transform", "distinct_n_reward", coef=1.0)
  a = np.asarray(fn(_batch(r, tokens=tokens)).rewards)
  garbage = np.where(mask, tokens, 10_000 + np.arange(B * T).reshape(B, T))
  np.testing.assert_array_equal(fn(_batch(r, tokens=garbage)).rewards, a)
  perm = np.random.default_rng(0).permutation(B)
  c = fn(_batch(r, GIDS[perm], LENGTHS[perm], tokens=tokens[perm]))
  np.testing.assert_allclose(c.rewards, a[perm], rtol=1e-6)
  # Large token ids are exact too (no hashing).
  big = tokens + 2 ** 30
  np.testing.assert_array_equal(fn(_batch(r, tokens=big)).rewards, a)


def test_distinct_n_under_jit_and_shard_map():
  tokens = _tokens(3)
  r = np.random.default_rng(3).normal(size=B)
  batch = _batch(r, tokens=tokens)
  want = sr.distinct_n_reward_part(batch, coef=0.3).rewards
  jitted = jax.jit(lambda b: sr.distinct_n_reward_part(b, coef=0.3))(batch)
  np.testing.assert_allclose(jitted.rewards, want, rtol=1e-6)
  got = _sharded(lambda b: sr.distinct_n_reward_part(
      b, coef=0.3, axis_name="data").rewards, batch)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_distinct_n_bad_hyperparameters():
  batch = _batch(np.zeros(B), tokens=_tokens(0))
  for kw, arg in (({"n": 0}, "n"), ({"credit": "ratio"}, "credit"),
                  ({"coef": -0.1}, "coef")):
    with pytest.raises(ValueError, match=arg):
      sr.distinct_n_reward_part(batch, **kw)
  with pytest.raises(ValueError, match="tokens"):
    sr.group_ngram_counts(jnp.zeros((2, 3)), jnp.ones((2, 3)),
                          jnp.zeros(2, jnp.int32), 1)


# --- submodular_credit -------------------------------------------------------


def _embeddings(seed, b=B, d=4):
  rng = np.random.default_rng(seed)
  e = rng.normal(size=(b, d))
  e[5] = 0.0  # a zero vector: similar to nothing
  e[2] = 2.5 * e[0]  # parallel to an earlier row of its group
  return e


@pytest.mark.parametrize("seed", [0, 1])
def test_submodular_credit_matches_reference(seed):
  e = _embeddings(seed)
  r = np.random.default_rng(seed).integers(0, 2, B).astype(float)
  batch = _batch(r, embeddings=e)
  out = _make("transform", "submodular_credit", coef=0.7)(batch)
  want = ref.facility_location_gains(e, GIDS, ref._valid(_mask(LENGTHS)))
  np.testing.assert_allclose(out.rewards, r + 0.7 * want, rtol=1e-5,
                             atol=1e-6)


def test_submodular_gains_telescope_and_diminish():
  e = _embeddings(2)
  valid = LENGTHS > 0
  gains = np.asarray(sr.facility_location_gains(
      jnp.asarray(e, jnp.float32), jnp.asarray(GIDS), valid=jnp.asarray(
          valid)))
  for g in range(4):
    members = np.flatnonzero((GIDS == g) & valid)
    nonzero = np.linalg.norm(e[members], axis=1) > 0
    # F(group) = share of rows that cover themselves.
    assert gains[members].sum() == pytest.approx(nonzero.mean(), abs=1e-5)
  assert gains[2] == pytest.approx(0.0, abs=1e-6)  # a copy of row 0
  assert gains[9] == 0.0  # padding
  orth = jnp.eye(3)
  np.testing.assert_allclose(
      sr.facility_location_gains(orth, jnp.zeros(3, jnp.int32)), [1 / 3] * 3,
      rtol=1e-6)


def test_submodular_credit_follows_batch_order_and_padding_is_inert():
  e = _embeddings(4)
  r = np.zeros(B)
  fn = _make("transform", "submodular_credit", coef=1.0)
  a = np.asarray(fn(_batch(r, embeddings=e)).rewards)
  # Reversing a group's order changes the credits but not their sum.
  idx = np.arange(B)
  idx[:4] = idx[:4][::-1]
  c = np.asarray(fn(_batch(r, GIDS[idx], LENGTHS[idx],
                           embeddings=e[idx])).rewards)
  assert abs(c[:4].sum() - a[:4].sum()) < 1e-5
  assert np.max(np.abs(c[:4] - a[idx[:4]])) > 1e-3
  np.testing.assert_allclose(c[4:], a[4:], rtol=1e-6)
  # Dropping the padded row 9 changes nothing else.
  keep = np.flatnonzero(LENGTHS > 0)
  d = fn(_batch(r[keep], GIDS[keep], LENGTHS[keep], embeddings=e[keep]))
  np.testing.assert_allclose(d.rewards, a[keep], rtol=1e-6, atol=1e-7)


def test_submodular_credit_under_shard_map():
  batch = _batch(np.zeros(B), embeddings=_embeddings(6))
  want = sr.submodular_credit_part(batch, coef=1.0).rewards
  got = _sharded(lambda b: sr.submodular_credit_part(
      b, coef=1.0, axis_name="data").rewards, batch)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="coef"):
    sr.submodular_credit_part(batch, coef=-1.0)


# --- knn_novelty -------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 2, 10])
def test_knn_novelty_matches_reference(metric, k):
  e = _embeddings(k)
  r = np.random.default_rng(k).normal(size=B)
  batch = _batch(r, embeddings=e)
  out = _make("transform", "knn_novelty", k=k, metric=metric, coef=0.4)(batch)
  want = ref.knn_novelty(e, GIDS, ref._valid(_mask(LENGTHS)), k, metric)
  np.testing.assert_allclose(out.rewards, r + 0.4 * want, rtol=1e-5,
                             atol=1e-5)


def test_knn_novelty_identities():
  e = _embeddings(9)
  valid = jnp.asarray(LENGTHS > 0)
  g = jnp.asarray(GIDS)
  ej = jnp.asarray(e, jnp.float32)
  nov = np.asarray(sr.knn_novelty(ej, g, k=B, valid=valid))
  # k >= n - 1: the mean distance to the whole rest of the group.
  dist = 1 - np.asarray(divrl.diversity.cosine_similarity(ej))
  for i in (0, 4, 10):
    mates = [j for j in np.flatnonzero(GIDS == GIDS[i]) if j != i
             and LENGTHS[j] > 0]
    assert nov[i] == pytest.approx(dist[i, mates].mean(), abs=1e-6)
  assert nov[7] == 0.0 and nov[9] == 0.0  # singleton, padding
  same = sr.knn_novelty(jnp.ones((3, 2)), jnp.zeros(3, jnp.int32), k=2)
  np.testing.assert_allclose(same, np.zeros(3), atol=1e-6)
  k1 = np.asarray(sr.knn_novelty(ej, g, k=1, valid=valid))
  assert k1[0] == pytest.approx(min(dist[0, [1, 2, 3]]), abs=1e-6)


def test_knn_novelty_permutation_and_errors():
  e = _embeddings(11)
  r = np.zeros(B)
  fn = _make("transform", "knn_novelty", coef=1.0, metric="euclidean")
  a = np.asarray(fn(_batch(r, embeddings=e)).rewards)
  perm = np.random.default_rng(1).permutation(B)
  c = fn(_batch(r, GIDS[perm], LENGTHS[perm], embeddings=e[perm]))
  np.testing.assert_allclose(c.rewards, a[perm], rtol=1e-5, atol=1e-6)
  batch = _batch(r, embeddings=e)
  for kw, arg in (({"k": 0}, "k"), ({"metric": "l1"}, "metric"),
                  ({"coef": -1.0}, "coef")):
    with pytest.raises(ValueError, match=arg):
      sr.knn_novelty_part(batch, **kw)


# --- gardo_advantage ---------------------------------------------------------


def _gardo_rewards(seed):
  r = np.random.default_rng(seed).integers(0, 2, B).astype(float)
  r[8:] = 1.0  # group 3 all equal: advantages 0
  return r


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("scale_by_std", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_gardo_matches_the_released_rule(normalize, scale_by_std, seed):
  e = _embeddings(seed + 20)
  r = _gardo_rewards(seed)
  batch = _batch(r, embeddings=e)
  adv = _make("advantage", "gardo_advantage", normalize=normalize,
              scale_by_std=scale_by_std)(batch)
  want = ref.gardo(r, e, GIDS, ref._valid(_mask(LENGTHS)),
                   scale_by_std=scale_by_std, normalize=normalize)
  mask = _mask(LENGTHS)
  np.testing.assert_allclose(adv, np.where(mask, want[:, None], 0.0),
                             rtol=1e-5, atol=1e-6)


def test_gardo_shapes_only_positive_advantages():
  e = _embeddings(30)
  r = _gardo_rewards(3)
  batch = _batch(r, embeddings=e)
  base = np.asarray(_make("advantage", "dr_grpo")(batch))
  adv = np.asarray(_make("advantage", "gardo_advantage")(batch))
  neg = base <= 0
  np.testing.assert_allclose(adv[neg], base[neg], rtol=1e-6)
  # Equally isolated rollouts (orthogonal embeddings): d / mean(d) = 1, so
  # GARDO is Dr.GRPO; the paper's unnormalised form scales by d = 1 too.
  orth = _batch(r, embeddings=np.eye(B))
  np.testing.assert_allclose(_make("advantage", "gardo_advantage")(orth),
                             _make("advantage", "dr_grpo")(orth), rtol=1e-6)


def test_gardo_hand_example():
  # One group: rewards (1, 1, 0, 0), mean 0.5. Rows 0 and 2 are parallel
  # (d = 0), rows 1 and 3 orthogonal to everything but each other at 60
  # degrees: d = (0, 0.5, 0, 0.5), mean d = 0.25.
  c, s = 0.5, np.sqrt(3) / 2
  e = np.array([[1, 0, 0], [0, 1, 0], [2, 0, 0], [0, c, s]], float)
  batch = _batch([1, 1, 0, 0], [0, 0, 0, 0], [3, 3, 3, 3], embeddings=e)
  adv = _make("advantage", "gardo_advantage")(batch)
  np.testing.assert_allclose(adv[:, 0], [0.0, 0.5 * 2.0, -0.5, -0.5],
                             atol=1e-6)
  paper = _make("advantage", "gardo_advantage", normalize=False)(batch)
  np.testing.assert_allclose(paper[:, 0], [0.0, 0.25, -0.5, -0.5], atol=1e-6)


def test_gardo_permutation_and_shard_map():
  e = _embeddings(40)
  r = _gardo_rewards(4)
  batch = _batch(r, embeddings=e)
  fn = _make("advantage", "gardo_advantage")
  a = np.asarray(fn(batch))
  perm = np.random.default_rng(2).permutation(B)
  c = fn(_batch(r[perm], GIDS[perm], LENGTHS[perm], embeddings=e[perm]))
  np.testing.assert_allclose(c, a[perm], rtol=1e-5, atol=1e-6)
  got = _sharded(lambda b: sr.gardo_advantage_part(b, axis_name="data"),
                 batch)
  np.testing.assert_allclose(got, a, rtol=1e-5, atol=1e-6)


# --- dsdr_local --------------------------------------------------------------


def _dsdr_batch(seed, garbage=False):
  rng = np.random.default_rng(seed)
  r = rng.integers(0, 2, B).astype(float)
  r[[0, 1]] = 1.0
  r[4:7] = 0.0  # group 1 has no correct rollout
  h = rng.uniform(0.0, 3.0, (B, T))
  if garbage:
    h[~_mask(LENGTHS)] = np.nan
  return r, h, _batch(r, embeddings=_embeddings(seed + 50), entropy=h)


@pytest.mark.parametrize("tau,clip", [(5.0, 1.0), (1.0, 0.3), (20.0, 1.0)])
def test_dsdr_local_matches_reference(tau, clip):
  r, h, batch = _dsdr_batch(int(tau))
  got = _make("regularizer", "dsdr_local", tau=tau, clip=clip)(batch)
  want = ref.dsdr_local(r, _embeddings(int(tau) + 50), h, _mask(LENGTHS),
                        GIDS, tau=tau, clip=clip)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(got)[4:7] == 0)  # no correct rollout


def test_dsdr_allocation_is_a_softmax_over_correct_rows():
  scores = jnp.asarray([0.1, 0.5, 0.3, 0.9, 0.2, 0.4])
  correct = jnp.asarray([True, True, False, True, False, False])
  gid = jnp.asarray([0, 0, 0, 0, 1, 1])
  w = np.asarray(sr.dsdr_allocation(scores, correct, gid, 2, tau=5.0))
  e = np.exp(5.0 * np.array([0.1, 0.5, 0.9]))
  np.testing.assert_allclose(w[[0, 1, 3]], e / e.sum(), rtol=1e-6)
  assert w[2] == 0 and np.all(w[4:] == 0)
  flat = np.asarray(sr.dsdr_allocation(scores, correct, gid, 2, tau=1e-6))
  np.testing.assert_allclose(flat[[0, 1, 3]], [1 / 3] * 3, rtol=1e-5)
  sharp = np.asarray(sr.dsdr_allocation(scores, correct, gid, 2, tau=200.0))
  assert sharp[3] == pytest.approx(1.0, abs=1e-6)


def test_dsdr_local_gradient_and_aggregation():
  r, h, batch = _dsdr_batch(3, garbage=True)
  part = _make("regularizer", "dsdr_local")
  mask = _mask(LENGTHS)

  def total(entropy, emb):
    return jnp.sum(part(batch.replace(entropy=entropy, embeddings=emb)))

  g_h, g_e = jax.grad(total, argnums=(0, 1))(batch.entropy, batch.embeddings)
  scale = np.asarray(sr.dsdr_row_scales(
      batch.embeddings, batch.rewards, batch.group_ids, 4,
      valid=jnp.asarray(mask.any(1))))
  np.testing.assert_allclose(g_h, np.where(mask, -scale[:, None], 0.0),
                             rtol=1e-6)
  assert np.all(np.asarray(g_e) == 0)  # the weights carry no gradient
  assert np.all(np.isfinite(np.asarray(part(batch))))
  # seq-mean-token-mean over equal groups of non-empty rows: the mean over
  # groups of -sum_{i correct} w_i mean_t H_it.
  gid = np.repeat([0, 1, 2], 4)
  lengths = np.array([7, 3, 5, 2, 4, 7, 6, 1, 5, 5, 7, 3])
  rew = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1], float)
  emb = _embeddings(8)
  hh = np.random.default_rng(8).uniform(0, 2, (12, T))
  b2 = _batch(rew, gid, lengths, embeddings=emb, entropy=hh)
  loss = aggregation.finalize(aggregation.seq_mean_token_mean(
      part(b2), b2.mask))
  valid = [True] * 12
  w = ref.dsdr_weights(ref.dsdr_scores(emb, gid, valid), rew > 0, gid, 5.0)
  m2 = _mask(lengths)
  per_group = [-sum(w[i] * hh[i][m2[i]].mean()
                    for i in np.flatnonzero(gid == g)) for g in range(3)]
  assert float(loss) == pytest.approx(np.mean(per_group), rel=1e-5)


def test_dsdr_local_bad_inputs():
  _, _, batch = _dsdr_batch(1)
  for kw, arg in (({"tau": 0.0}, "tau"), ({"clip": -1.0}, "clip")):
    with pytest.raises(ValueError, match=arg):
      sr.dsdr_local_part(batch, **kw)
  two = batch.replace(rewards=jnp.stack([batch.rewards] * 2, axis=1))
  with pytest.raises(ValueError, match="scalar"):
    sr.dsdr_local_part(two)


def test_parts_compose_in_an_objective():
  rng = np.random.default_rng(0)
  r = rng.integers(0, 2, B).astype(float)
  batch = _batch(r, tokens=_tokens(0), embeddings=_embeddings(0),
                 entropy=rng.uniform(0, 2, (B, T)))
  config = {"advantage": "gardo_advantage", "surrogate": "ppo_clip",
            "transforms": [{"name": "distinct_n_reward"},
                           {"name": "submodular_credit"},
                           {"name": "knn_novelty"}],
            "regularizers": {"dsdr_local": {"coef": 1e-3}}}
  objective = divrl.from_config(config)
  assert {"tokens", "embeddings", "entropy"} <= set(objective.requires.inputs)
  loss, _ = jax.jit(objective)(batch)
  assert np.isfinite(float(loss))
  # The three transforms add their credits in turn before the advantage.
  shaped = batch
  for name in ("distinct_n_reward", "submodular_credit", "knn_novelty"):
    shaped = _make("transform", name)(shaped)
  prepared = objective.with_advantages(batch)
  np.testing.assert_allclose(
      prepared.advantages, _make("advantage", "gardo_advantage")(shaped),
      rtol=1e-5, atol=1e-6)
