"""divrl.consistency (COPO) against the NumPy reference in
``tests/references/consistency.py`` on ragged groups with a singleton, an
all-equal-reward group and an all-padding row; the identities of the
authors' code (the entropy gate, the consistent groups' global signal, the
batch standardisation, the consistency coefficient); the blended advantage
under PPO clip against the code's two separately clipped losses; and
equality under ``shard_map``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import divrl
from divrl import consistency as cons
from divrl import registry, sharding
from divrl.surrogates import ppo_clip
from tests.references import consistency as ref

T = 5
# Groups: 0 (5 rows, mixed), 1 (3 rows, all correct, one answer: all-equal
# rewards), 2 (a singleton), 3 (3 rows, one of them all padding).
GID = [0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 3]
REWARDS = [1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0]
ANSWERS = [0, -1, 0, 1, -1, 2, 2, 2, 3, 4, 4, -1]
LENGTHS = [5, 2, 4, 3, 5, 2, 5, 3, 4, 0, 5, 1]


def _batch(rewards=REWARDS, gid=GID, answers=ANSWERS, lengths=LENGTHS, *,
           t=T, seed=0, num_groups=None, old_gap=0.0):
  rng = np.random.default_rng(seed)
  b = len(rewards)
  mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
  lp = -rng.uniform(0.05, 3.0, (b, t))
  old = lp + old_gap * rng.normal(size=(b, t))
  f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  return divrl.Batch(
      logprobs=f(lp), response_mask=jnp.asarray(mask), rewards=f(rewards),
      group_ids=jnp.asarray(gid, jnp.int32), old_logprobs=f(old),
      solution_ids=jnp.asarray(answers, jnp.int32),
      num_groups=num_groups or int(max(gid)) + 1)


def _random(seed, b=14, groups=4, binary=True, t=T):
  rng = np.random.default_rng(seed)
  gid = rng.integers(0, groups, b)
  gid[-1] = groups  # a singleton group
  r = (rng.integers(0, 2, b).astype(float) if binary
       else rng.choice([0.0, 1.0, -1.0, 0.5], b))
  answers = np.where(r > 0, rng.integers(0, 3, b), -1)
  answers[r < 0] = rng.integers(0, 3, int(np.sum(r < 0)))
  lengths = rng.integers(1, t + 1, b)
  lengths[seed % b] = 0  # one all-padding row
  return _batch(r, gid, answers, lengths, seed=seed, t=t)


def _np(x):
  return np.asarray(x, np.float64)


def _valid(batch):
  return _np(batch.response_mask).sum(1) > 0


def _copo(batch, **kw):
  return registry.make("advantage", {"name": "copo", **kw})(batch)


def _reference(batch, **kw):
  return ref.copo(_np(batch.rewards).tolist(),
                  np.asarray(batch.group_ids).tolist(),
                  np.asarray(batch.solution_ids).tolist(),
                  _valid(batch).tolist(), **kw)


def _components(batch, **kw):
  return [_np(x) for x in cons.copo_components(
      batch.rewards, batch.group_ids, batch.groups, batch.solution_ids,
      valid=jnp.asarray(_valid(batch)), **kw)]


# --- Values against the reference ---------------------------------------------


@pytest.mark.parametrize("blend", cons.BLENDS)
@pytest.mark.parametrize("consistency_coef", [False, True])
@pytest.mark.parametrize("wrong_answers", cons.WRONG_ANSWERS)
def test_copo_matches_numpy(blend, consistency_coef, wrong_answers):
  kw = dict(blend=blend, consistency_coef=consistency_coef,
            wrong_answers=wrong_answers)
  batch = _batch()
  got = _np(_copo(batch, **kw))
  want, local, glob, weight, ent = (np.asarray(x) for x in
                                    _reference(batch, **kw))
  mask = _np(batch.response_mask)
  np.testing.assert_allclose(got, want[:, None] * mask, rtol=1e-5,
                             atol=1e-6)
  for g, w in zip(_components(batch, **kw), (local, glob, weight, ent)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  assert np.all(got[9] == 0)  # the padding row


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("binary", [True, False])
def test_copo_matches_numpy_on_random_batches(seed, binary):
  kw = dict(k=2.0, b=0.7, global_coef=0.5, consistency_coef=seed == 2,
            blend=("soft_with_zero", "soft", "soft_with_forced")[seed - 1])
  batch = _random(seed, binary=binary)
  want = np.asarray(_reference(batch, **kw)[0])
  np.testing.assert_allclose(_np(_copo(batch, **kw)),
                             want[:, None] * _np(batch.response_mask),
                             rtol=1e-5, atol=1e-6)


# --- The identities of the code -----------------------------------------------


def _gate_batch():
  # Group 0: 1 correct + 7 different wrong answers (H = 3 bits, maximal for
  # 8 rows); group 1: 4 correct (one answer) + 4 wrong; groups 2 and 3: all
  # correct with one answer and all wrong.
  gid = [0] * 8 + [1] * 8 + [2] * 4 + [3] * 4
  rewards = [1] + [0] * 7 + [1] * 4 + [0] * 4 + [1] * 4 + [0] * 4
  answers = [0] + [-1] * 7 + [5] * 4 + [-1] * 4 + [7] * 4 + [-1] * 4
  return _batch(rewards, gid, answers, [T] * 24)


def test_maximal_entropy_mixed_group_is_local_dominated():
  batch = _gate_batch()
  s = 1.0 / (1.0 + math.exp(-5.0 * (3.0 - 1.0)))  # sigmoid(k (H - b))
  for blend, rows in (("soft_with_zero", [0]), ("soft", range(8))):
    local, glob, w, ent = _components(batch, blend=blend)
    adv = _np(_copo(batch, blend=blend))[:, 0]
    np.testing.assert_allclose(ent[:8], 3.0, rtol=1e-6)
    for i in rows:
      np.testing.assert_allclose(w[i], s, rtol=1e-6)
      assert abs(adv[i] - local[i]) <= 2 * (1 - s) * (abs(local[i])
                                                       + abs(glob[i]))
      assert abs(adv[i] - local[i]) < 1e-3 * abs(local[i] - glob[i])
  # soft_with_zero: wrong rows take the global advantage alone.
  local, glob, w, _ = _components(batch)
  adv = _np(_copo(batch))[:, 0]
  np.testing.assert_array_equal(w[1:8], 0.0)
  np.testing.assert_allclose(adv[1:8], glob[1:8], rtol=1e-6)
  assert adv[0] > 0 > adv[1]


def test_entropy_at_the_threshold_gives_an_even_blend():
  # Group 1 with the wrong answers as one answer: H = 1 bit = b, w = 1/2.
  batch = _gate_batch()
  local, glob, w, ent = _components(batch, wrong_answers="same")
  np.testing.assert_allclose(ent[8:16], 1.0, rtol=1e-6)
  np.testing.assert_allclose(w[8:12], 0.5, rtol=1e-6)
  adv = _np(_copo(batch, wrong_answers="same"))[:, 0]
  np.testing.assert_allclose(adv[8:12], 0.5 * (local[8:12] + glob[8:12]),
                             rtol=1e-5)
  # Wrong rows: no gate in "soft_with_zero", the even blend in "soft".
  np.testing.assert_allclose(adv[12:16], glob[12:16], rtol=1e-6)
  soft = _np(_copo(batch, wrong_answers="same", blend="soft"))[:, 0]
  np.testing.assert_allclose(soft[8:16], 0.5 * (local[8:16] + glob[8:16]),
                             rtol=1e-5)


def test_consistent_groups_get_a_signal_where_grpo_gets_none():
  batch = _gate_batch()
  grpo = _np(registry.make("advantage", "grpo")(batch))[:, 0]
  np.testing.assert_array_equal(grpo[16:], 0.0)
  local, glob, w, ent = _components(batch)
  adv = _np(_copo(batch))[:, 0]
  np.testing.assert_array_equal(local[16:], 0.0)
  np.testing.assert_array_equal(ent[16:20], 0.0)  # one answer
  assert np.all(adv[16:20] > 0) and np.all(adv[20:] < 0)
  # All correct, one answer: H = 0, local weight sigmoid(-k b).
  s = 1.0 / (1.0 + math.exp(5.0))
  np.testing.assert_allclose(adv[16:20], (1 - s) * glob[16:20], rtol=1e-6)
  # All wrong: reward 0, the global advantage alone (any blend but "soft").
  np.testing.assert_allclose(adv[20:], glob[20:], rtol=1e-6)


def test_global_advantage_standardises_group_accuracies():
  batch = _batch()
  adv = _np(_copo(batch, blend="global"))[:, 0]
  valid = _valid(batch)
  gid = np.asarray(GID)
  acc = {g: np.mean(np.asarray(REWARDS)[(gid == g) & valid])
         for g in range(4)}
  a = np.array([acc[g] for g in range(4)])
  want = (a - a.mean()) / (a.std(ddof=1) + 1e-6)
  np.testing.assert_allclose(adv[valid], want[gid[valid]], rtol=1e-5)
  per_group = np.array([adv[valid & (gid == g)][0] for g in range(4)])
  np.testing.assert_allclose(per_group.sum(), 0.0, atol=1e-6)
  np.testing.assert_allclose(per_group.std(ddof=1), 1.0, rtol=1e-5)


def test_consistency_coefficient():
  # Group 0 all correct with one answer (H = 0, c = 1); group 1 two correct
  # (one answer) and two different wrong answers: H = 1.5 bits, lambda_4 =
  # (3/4) / 2, c = 1 - 0.375 * 1.5; group 2 all wrong (R = 0). A group of n
  # different answers has c = 1 / n.
  batch = _batch([1] * 4 + [1, 1, 0, 0] + [0] * 4, [0] * 4 + [1] * 4 + [2] * 4,
                 [3] * 4 + [5, 5, -1, -1] + [-1] * 4, [T] * 12)
  got = _np(_copo(batch, blend="global", consistency_coef=True))[::4, 0]
  r = np.array([1.0, 0.5 * (1 - 0.375 * 1.5), 0.0])
  np.testing.assert_allclose(got, (r - r.mean()) / (r.std(ddof=1) + 1e-6),
                             rtol=1e-5)
  wide = _batch([1] * 4 + [1, 0, 0, 0], [0] * 4 + [1] * 4,
                [3] * 4 + [5, -1, -1, -1], [T] * 8)
  got = _np(_copo(wide, blend="global", consistency_coef=True))[::4, 0]
  r = np.array([1.0, 0.25 * 0.25])  # H = 2 bits, c = 1/4
  np.testing.assert_allclose(got, (r - r.mean()) / (r.std(ddof=1) + 1e-6),
                             rtol=1e-5)


def test_padding_row_changes_nothing_and_gets_zero():
  batch = _batch()
  keep = [i for i in range(12) if i != 9]
  pick = lambda x: [x[i] for i in keep]  # noqa: E731
  short = _batch(pick(REWARDS), pick(GID), pick(ANSWERS), pick(LENGTHS))
  for blend in cons.BLENDS:
    full = _np(_copo(batch, blend=blend, consistency_coef=True))
    np.testing.assert_array_equal(full[9], 0.0)
    np.testing.assert_allclose(
        full[keep], _np(_copo(short, blend=blend, consistency_coef=True)),
        rtol=1e-6, atol=1e-7)


def test_degenerate_batches_are_finite():
  # One group: the global advantage is 0 (no other group to compare with).
  one = _batch([1, 0, 1], [0, 0, 0], [0, -1, 0], [T] * 3)
  local, glob, _, _ = _components(one)
  np.testing.assert_array_equal(glob, 0.0)
  adv = _np(_copo(one))[:, 0]
  np.testing.assert_allclose(adv, local * _components(one)[2], rtol=1e-6)
  # Every group all-equal (and eps = 0): all zeros, no NaN.
  same = _batch([1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [T] * 4)
  for eps in (0.0, 1e-6):
    np.testing.assert_array_equal(_np(_copo(same, eps=eps)), 0.0)
  # Every row padding.
  empty = _batch([1, 0], [0, 1], [0, -1], [0, 0])
  np.testing.assert_array_equal(_np(_copo(empty)), 0.0)


# --- The blended advantage against the code's two clipped losses -------------


def _code_loss(batch, local, glob, w, **clip):
  """The authors' per-token loss ``w L(A_local) + (1 - w) L(A_global)``."""
  rho = np.exp(_np(batch.logprobs) - _np(batch.old_logprobs))
  out = np.zeros(rho.shape)
  for i in range(rho.shape[0]):
    for t in range(rho.shape[1]):
      out[i, t] = (w[i] * ref.ppo_clip_loss(rho[i, t], local[i], **clip)
                   + (1 - w[i]) * ref.ppo_clip_loss(rho[i, t], glob[i],
                                                    **clip))
  return out


def test_blend_equals_the_code_loss_unless_clipped_with_opposite_signs():
  batch = _gate_batch()
  batch = batch.replace(old_logprobs=batch.logprobs + jnp.asarray(
      np.random.default_rng(3).normal(0.0, 0.4, batch.logprobs.shape),
      jnp.float32))
  # Wrong answers as one answer: group 0 has H = h(1/8) = 0.54 bits, so its
  # correct row blends A_local > 0 with A_global < 0 at w = 0.09.
  kw = dict(wrong_answers="same")
  local, glob, w, _ = _components(batch, **kw)
  adv = _copo(batch, **kw)
  ours = _np(ppo_clip(batch.logprobs, batch.old_logprobs, adv,
                      clip_ratio_c=3.0)[0])
  code = _code_loss(batch, local, glob, w)
  rho = np.exp(_np(batch.logprobs) - _np(batch.old_logprobs))
  inside = (rho >= 0.8) & (rho <= 1.2)
  # L(c A) = c L(A) for c >= 0: a row whose two advantages do not disagree
  # in sign (or that takes one of them alone) gets the code's loss.
  agree = (local * glob >= 0) | (w == 0) | (w == 1)
  same = inside | agree[:, None]
  np.testing.assert_allclose(ours[same], code[same], rtol=1e-5, atol=1e-6)
  assert local[0] > 0 > glob[0] and 0.05 < w[0] < 0.2
  assert np.sum(~same) > 0
  assert not np.allclose(ours[~same], code[~same], rtol=1e-3)


def test_on_policy_gradient_equals_the_code_loss_gradient():
  batch = _gate_batch()
  batch = batch.replace(old_logprobs=batch.logprobs)
  local, glob, w, _ = (jnp.asarray(x, jnp.float32)
                       for x in _components(batch))
  adv = _copo(batch)
  m = batch.mask

  def loss(a):
    return lambda lp: jnp.sum(ppo_clip(lp, jax.lax.stop_gradient(lp), a,
                                       clip_ratio_c=3.0)[0] * m)

  ours = jax.grad(loss(adv))(batch.logprobs)
  code = (w[:, None] * jax.grad(loss(local[:, None] * m))(batch.logprobs)
          + (1 - w[:, None]) * jax.grad(loss(glob[:, None] * m))(
              batch.logprobs))
  np.testing.assert_allclose(ours, code, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours, -adv * m, rtol=1e-6, atol=1e-7)


# --- Errors -------------------------------------------------------------------


@pytest.mark.parametrize("arg,kw", [
    ("k", {"k": -1.0}), ("k", {"k": float("inf")}), ("b", {"b": float("nan")}),
    ("eps", {"eps": -1e-6}), ("global_coef", {"global_coef": -0.5}),
    ("blend", {"blend": "hard"}), ("wrong_answers", {"wrong_answers": "x"}),
])
def test_bad_hyperparameters(arg, kw):
  with pytest.raises(ValueError, match=arg):
    _copo(_batch(), **kw)


def test_reward_components_and_missing_solution_ids_are_rejected():
  batch = _batch()
  with pytest.raises(ValueError, match="copo"):
    _copo(batch.replace(rewards=jnp.stack([batch.rewards] * 2, axis=1)))
  objective = divrl.Objective.from_config(
      {"advantage": "copo", "surrogate": "ppo_clip"})
  assert "solution_ids" in objective.requires.prepare
  with pytest.raises(ValueError, match="solution_ids"):
    objective(batch.replace(solution_ids=None))


# --- Sharded batches ----------------------------------------------------------


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("data",))


@pytest.mark.parametrize("kw", [{}, {"blend": "soft",
                                     "consistency_coef": True,
                                     "wrong_answers": "same"}])
def test_shard_map_equals_single_device(mesh, kw):
  batch = _random(11, b=16, groups=5, t=8)
  part = registry.make("advantage", {"name": "copo", **kw})
  want = np.asarray(part(batch))
  fn = jax.shard_map(lambda b: part(b, axis_name="data"), mesh=mesh,
                     in_specs=(sharding.batch_spec(batch),),
                     out_specs=P("data", None))
  got = np.asarray(jax.jit(fn)(sharding.shard_batch(batch, mesh)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The statistics are global: two rows per device alone would differ.
  local = np.concatenate([np.asarray(part(jax.tree.map(
      lambda x: x[i:i + 2], batch))) for i in range(0, 16, 2)])
  assert not np.allclose(local, want)
