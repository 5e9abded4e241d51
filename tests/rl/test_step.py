"""Tests for divrl.rl.step: the plan computes what the objective reads, and
every statistic it serves (prepare stage and update stage) equals a direct
full-logits computation on the same batch.

The reference here runs the decoder to full ``[B,S+T,V]`` logits and computes
each statistic in float64 NumPy from them (top-p entropy with the NumPy set
of ``tests/ops/test_token_stats.py``), never through ``divrl.ops``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import divrl
from divrl import types
from divrl.models.decoder import Decoder, DecoderConfig
from divrl.models.sampler import concat_prompt_response
from divrl.rl import step as step_lib
from tests.ops.test_token_stats import np_top_p_entropy

B, S, T, V, G = 6, 4, 5, 13, 3
TEMPERATURE = 0.7
TOP_P = 0.8
STATS = types.POLICY_STATISTICS + types.REFERENCE_DIVERGENCES


def _model(seed):
  config = DecoderConfig.preset("tiny", vocab_size=V, num_layers=1,
                                value_head=True)
  model = Decoder(config, rngs=nnx.Rngs(seed))
  model.value_head[...] = jax.random.normal(jax.random.key(seed + 7),
                                            (config.hidden_size,))
  return model


def _rollout(seed=0):
  rng = np.random.default_rng(seed)
  plen = np.array([4, 2, 3, 4, 1, 2])
  pmask = np.arange(S)[None] >= S - plen[:, None]
  rlen = np.array([5, 3, 1, 4, 5, 2])
  rmask = np.arange(T)[None] < rlen[:, None]
  return step_lib.Rollout(
      prompt_tokens=jnp.asarray(np.where(pmask, rng.integers(3, V, (B, S)),
                                         0), jnp.int32),
      prompt_mask=jnp.asarray(pmask),
      tokens=jnp.asarray(np.where(rmask, rng.integers(3, V, (B, T)), 0),
                         jnp.int32),
      response_mask=jnp.asarray(rmask),
      rollout_logprobs=jnp.asarray(-rng.uniform(0.5, 2.0, (B, T)),
                                   jnp.float32),
      truncated=jnp.asarray(rlen == T),
      rewards=jnp.asarray([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
      group_ids=jnp.asarray(np.arange(B) // (B // G), jnp.int32),
      sample_source=jnp.zeros(B, jnp.int32),
      solution_ids=jnp.asarray([0, -1, 1, -1, -1, 2], jnp.int32),
      num_groups=G)


def _finite(x):
  return np.where(np.isfinite(x), x, 0.0)


def _np_min_p(logp, tok, min_p):
  """log q(target), q = pi min-p filtered and renormalised; -inf if
  dropped."""
  kept = logp >= logp.max(-1, keepdims=True) + np.log(min_p)
  log_mass = np.log(np.where(kept, np.exp(logp), 0.0).sum(-1))
  lt = np.take_along_axis(logp, tok[..., None], -1)[..., 0]
  k = np.take_along_axis(kept, tok[..., None], -1)[..., 0]
  return np.where(k, lt - log_mass, -np.inf)


def _full_reference(model, ref_model, r):
  """Every statistic from full logits, float64 NumPy, ``[B,T]`` (or
  ``[B,D]`` for embeddings)."""
  full, mask, positions = concat_prompt_response(
      r.prompt_tokens, r.prompt_mask, r.tokens, r.response_mask)

  def logits_and_hidden(m):
    z = m(full, positions=positions, attention_mask=mask)[:, S - 1:-1]
    h = m(full, positions=positions, attention_mask=mask,
          return_hidden=True)[:, S - 1:-1]
    return (np.asarray(z, np.float64) / TEMPERATURE,
            np.asarray(h, np.float64))

  z, h = logits_and_hidden(model)
  zr, _ = logits_and_hidden(ref_model)
  logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1,
                                                              keepdims=True))
  logp -= z.max(-1, keepdims=True)
  logr = zr - zr.max(-1, keepdims=True)
  logr -= np.log(np.exp(logr).sum(-1, keepdims=True))
  p, q = np.exp(logp), np.exp(logr)
  m = 0.5 * (p + q)
  tok = np.asarray(r.tokens)
  out = {
      "logprobs": np.take_along_axis(logp, tok[..., None], -1)[..., 0],
      "ref_logprobs": np.take_along_axis(logr, tok[..., None], -1)[..., 0],
      "entropy": -(p * logp).sum(-1),
      "top_p_entropy": np_top_p_entropy(z.reshape(-1, V), TOP_P).reshape(
          B, T),
      "sum_pi_squared": (p * p).sum(-1),
      "vocab_mean_logprob": logp.mean(-1),
      # Plan's default min-p threshold 0.02 (Lp-Reg's kappa).
      "min_p_logprob": _np_min_p(logp, tok, 0.02),
      "reverse_kl": (p * (logp - logr)).sum(-1),
      "forward_kl": (q * (logr - logp)).sum(-1),
      "js": 0.5 * (p * (logp - np.log(m))).sum(-1)
            + 0.5 * (q * (logr - np.log(m))).sum(-1),
      # Plan's default order 0.5 (DPH's generator; 4 x squared Hellinger).
      "alpha_divergence": 4.0 * (1.0 - np.sqrt(p * q).sum(-1)),
      "chi_square": ((p - q) ** 2 / q).sum(-1),
      "total_variation": 0.5 * np.abs(p - q).sum(-1),
      "hellinger": 1.0 - np.sqrt(p * q).sum(-1),
      "values": h @ np.asarray(model.value_head[...], np.float64),
  }
  valid = np.asarray(r.response_mask)
  out["embeddings"] = np.stack([h[i][valid[i]].mean(0) for i in range(B)])
  return out, valid


def _reads(names, stage_label):
  """A part that reads ``names`` (a regularizer: update stage, or a
  transform: prepare stage) and does nothing with them."""

  @divrl.declare(reads=names)
  def probe(batch):
    if stage_label == "transform":
      return batch
    return sum(getattr(batch, n) for n in names if n != "embeddings") * 0.0

  probe.__name__ = f"probe_{stage_label}"
  return probe


@pytest.fixture(scope="module")
def models():
  return _model(0), _model(1)


def test_prepare_serves_every_statistic_exactly(models):
  model, ref_model = models
  names = STATS + ("values", "embeddings")
  objective = divrl.build("grpo", "ppo_clip",
                          transforms=[_reads(names, "transform")])
  plan = step_lib.Plan.of(objective, temperature=TEMPERATURE, top_p=TOP_P)
  assert set(plan.score) == set(names) and plan.reference
  assert plan.update == ()
  graphdef, params = nnx.split(model)
  _, ref_params = nnx.split(ref_model)
  prepare = jax.jit(step_lib.make_prepare(graphdef, objective, plan))
  r = _rollout()
  prepared, carry, _ = prepare(params, ref_params, {}, r, jax.random.key(0))
  want, valid = _full_reference(model, ref_model, r)
  batch = prepared.batch
  for name in names + ("logprobs", "ref_logprobs"):
    got = np.asarray(getattr(batch, name))
    if name == "embeddings":
      np.testing.assert_allclose(got, want[name], rtol=1e-5, atol=1e-5,
                                 err_msg=name)
    else:
      np.testing.assert_allclose(got[valid], want[name][valid], rtol=1e-5,
                                 atol=1e-5, err_msg=name)
  # The behaviour log-probs and the rollout-time values are kept too.
  np.testing.assert_array_equal(batch.old_logprobs, batch.logprobs)
  np.testing.assert_array_equal(batch.old_values, batch.values)
  assert carry == {}


def test_update_recomputes_what_the_update_stage_reads(models):
  model, ref_model = models
  names = STATS + ("values",)
  regs = [divrl.regularizer(_single(n), coef=0.0, label=n) for n in names]
  objective = divrl.build("grpo", "reinforce", regularizers=regs)
  plan = step_lib.Plan.of(objective, temperature=TEMPERATURE, top_p=TOP_P)
  assert set(plan.update) == set(names) and plan.score == ()
  assert plan.keep_ref_hidden and plan.reference
  graphdef, params = nnx.split(model)
  _, ref_params = nnx.split(ref_model)
  r = _rollout(1)
  prepared, carry, _ = jax.jit(step_lib.make_prepare(graphdef, objective,
                                                     plan))(
      params, ref_params, {}, r, jax.random.key(0))
  tx = optax.sgd(0.0)
  update = jax.jit(step_lib.make_update(graphdef, tx, objective, plan))
  _, _, metrics = update(params, tx.init(params), ref_params, carry, prepared,
                         jnp.arange(B), jax.random.key(1))
  want, valid = _full_reference(model, ref_model, r)
  for name in names:   # regularizer metrics: token means, current params
    np.testing.assert_allclose(metrics[f"regularizer/{name}"],
                               _finite(want[name][valid]).mean(), rtol=1e-5,
                               atol=1e-6,
                               err_msg=name)


def _single(name):
  @divrl.declare(reads=(name,))
  def part(batch):
    x = getattr(batch, name)   # min_p_logprob is -inf where dropped
    return jnp.where(jnp.isfinite(x), x, 0.0)
  part.__name__ = name
  return part


def test_plan_computes_nothing_that_nothing_reads():
  grpo = divrl.build("grpo", "ppo_clip")
  plan = step_lib.Plan.of(grpo)
  assert plan.score == () and plan.update == () and not plan.reference
  logged = step_lib.Plan.of(grpo, log_entropy=True, log_kl_ref=True)
  assert logged.score == ("entropy",) and logged.reference
  assert logged.update == ()
  kl = step_lib.Plan.of(divrl.recipes.build("grpo"))
  assert kl.reference and kl.score == () and kl.update == ()
  otb = step_lib.Plan.of(divrl.recipes.build("otb"))
  assert otb.score == ("sum_pi_squared",) and otb.update == ()
  masked = step_lib.Plan.of(divrl.recipes.build("high_entropy_dapo"))
  assert masked.score == () and masked.update == ("entropy",)
  gae = step_lib.Plan.of(divrl.recipes.build("ppo_gae"))
  assert gae.value_head and gae.score == ("values",)
  assert gae.update == ("values",)


def test_update_batch_drops_behaviour_statistics_it_does_not_recompute():
  plan = step_lib.Plan(score=("entropy", "sum_pi_squared"),
                       update=("entropy",))
  batch = divrl.Batch(logprobs=jnp.zeros((2, 3)),
                      response_mask=jnp.ones((2, 3)), rewards=jnp.zeros(2),
                      group_ids=jnp.zeros(2, jnp.int32),
                      entropy=jnp.ones((2, 3)),
                      sum_pi_squared=jnp.ones((2, 3)))
  out = step_lib._for_update(batch, plan)  # pylint: disable=protected-access
  assert out.entropy is not None and out.sum_pi_squared is None


def test_carry_metrics_names_the_floating_scalars():
  carry = {"advantage": {"ema": jnp.float32(0.5), "weight": jnp.float32(1.0),
                         "count": jnp.int32(3)}}
  got = step_lib.carry_metrics(carry)
  assert set(got) == {"carry/advantage/ema", "carry/advantage/weight"}


def test_rollout_is_a_pytree_with_static_groups():
  r = _rollout()
  leaves, treedef = jax.tree.flatten(r)
  again = jax.tree.unflatten(treedef, leaves)
  assert again.num_groups == G and len(leaves) == 10
  assert dataclasses.replace(r, num_groups=2).num_groups == 2


def _one_step(update, params, opt_state, ref_params, carry, prepared, rows):
  params, opt_state, metrics = update(
      jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, opt_state),
      ref_params, carry, prepared, rows, jax.random.key(3))
  return params, metrics


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_split_step_equals_the_one_program_step(models, micro_batches):
  # The trainer's SplitPrepare / SplitUpdate compute what jax.jit of
  # make_prepare / make_update computes: same prepared batch, same new
  # parameters and metrics, here with an update-stage statistic, the value
  # head, an exact reference divergence and a prepare-stage one.
  model, ref_model = models
  regs = [divrl.regularizer(_single(n), coef=c, label=n)
          for n, c in (("entropy", 0.1), ("reverse_kl", 0.2))]
  regs.append(divrl.regularizer("value_loss", coef=0.5))
  objective = divrl.build("otb", "ppo_clip", regularizers=regs)
  plan = step_lib.Plan.of(objective, temperature=TEMPERATURE, top_p=TOP_P)
  assert plan.score and plan.update and plan.keep_ref_hidden
  graphdef, params = nnx.split(model)
  _, ref_params = nnx.split(ref_model)
  r, key = _rollout(2), jax.random.key(0)
  one = jax.jit(step_lib.make_prepare(graphdef, objective, plan))(
      params, ref_params, {}, r, key)
  split = step_lib.SplitPrepare(graphdef, objective, plan)(
      params, ref_params, {}, r, key)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(split)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  prepared, carry, _ = one
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  rows = jnp.asarray([5, 0, 3, 1], jnp.int32)
  want = _one_step(jax.jit(step_lib.make_update(
      graphdef, tx, objective, plan, micro_batches=micro_batches)),
                   params, opt_state, ref_params, carry, prepared, rows)
  got = _one_step(step_lib.SplitUpdate(graphdef, tx, objective, plan,
                                       micro_batches=micro_batches),
                  params, opt_state, ref_params, carry, prepared, rows)
  assert set(got[1]) == set(want[1])
  for name in want[1]:
    np.testing.assert_allclose(got[1][name], want[1][name], rtol=1e-5,
                               atol=1e-7, err_msg=name)
  for a, b in zip(jax.tree.leaves(want[0]), jax.tree.leaves(got[0])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(got[0]))]
  assert any(moved)


def test_objectives_with_one_plan_share_the_model_programs(models):
  # A second objective with the same plan reuses the traced and compiled
  # model programs: only its own objective program is new.
  model, ref_model = models
  graphdef, params = nnx.split(model)
  _, ref_params = nnx.split(ref_model)
  tx = optax.sgd(1e-2)
  r = _rollout(3)
  a = divrl.build("grpo", "ppo_clip")
  b = divrl.build("rloo", "cispo")
  plan = step_lib.Plan.of(a)
  assert step_lib.Plan.of(b) == plan
  programs = step_lib._model_programs(graphdef, plan, 1, None)  # pylint: disable=protected-access
  for objective in (a, b):
    prepared, carry, _ = step_lib.SplitPrepare(graphdef, objective, plan)(
        params, ref_params, {}, r, jax.random.key(0))
    step_lib.SplitUpdate(graphdef, tx, objective, plan)(
        jax.tree.map(jnp.copy, params), tx.init(params), ref_params, carry,
        prepared, jnp.arange(B), jax.random.key(1))
  for name in ("score", "select", "forward", "backward"):
    assert getattr(programs, name)._cache_size() == 1, name  # pylint: disable=protected-access


def _reads_logprobs_undeclared(batch):
  """A user transform that reads the core field ``logprobs`` without
  declaring it: rewards shaped by the mean behaviour log-prob."""
  lp = jnp.where(batch.response_mask, batch.logprobs, 0.0).sum(1)
  return batch.replace(rewards=batch.rewards - 0.01 * lp)


@pytest.mark.parametrize("name,objective,drops", [
    ("grpo", lambda: divrl.build("grpo", "ppo_clip"), True),
    ("grpo k3 KL", lambda: divrl.recipes.build("grpo"), True),
    ("entropy mask", lambda: divrl.recipes.build("high_entropy_dapo"), True),
    ("OTB reads sum_pi_squared", lambda: divrl.recipes.build("otb"), False),
    ("KL in the reward", lambda: divrl.Objective.from_config({
        "advantage": "grpo", "surrogate": "ppo_clip",
        "transforms": ["kl_in_reward"]}), False),
    ("DRPO ranks by log-prob", lambda: divrl.Objective.from_config({
        "advantage": "drpo", "surrogate": "ppo_clip"}), False),
    ("rollout rejection", lambda: divrl.Objective.from_config({
        "advantage": "grpo", "surrogate": "ppo_clip",
        "transforms": ["rollout_rejection"]}), False),
    ("undeclared read", lambda: divrl.build(
        "grpo", "ppo_clip", transforms=[_reads_logprobs_undeclared]), False),
])
def test_on_policy_plan_drops_the_forward_only_where_exact(name, objective,
                                                            drops):
  objective = objective()
  plan = step_lib.Plan.of(objective, log_entropy=True, log_kl_ref=True)
  got = step_lib.on_policy_plan(plan, objective, _rollout())
  if not drops:
    assert got == plan, name
    return
  assert not got.score_policy and got.score == (), name
  assert "entropy" in got.update and got.reference == plan.reference
  assert got.entropy_in_update and got.kl_ref_in_update
  assert step_lib.on_policy_plan(got, objective, _rollout()) == got


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_on_policy_step_equals_the_scored_step(models, micro_batches):
  # Without the behaviour forward, one update from the sampling parameters
  # gives the same parameters, loss and logged entropy and KL to the
  # reference as the step that scores the behaviour policy first.
  model, ref_model = models
  objective = divrl.Objective.from_config({
      "advantage": "grpo", "surrogate": "ppo_clip",
      "regularizers": {"kl": {"estimator": "k3", "coef": 0.3}}})
  plan = step_lib.Plan.of(objective, temperature=TEMPERATURE,
                          log_entropy=True, log_kl_ref=True)
  r, key = _rollout(4), jax.random.key(0)
  fast = step_lib.on_policy_plan(plan, objective, r)
  assert plan.score == ("entropy",) and not fast.score_policy
  graphdef, params = nnx.split(model)
  _, ref_params = nnx.split(ref_model)
  tx = optax.sgd(1.0)     # linear in the gradient, so rounding stays small
  opt_state = tx.init(params)
  rows = jnp.arange(B, dtype=jnp.int32)
  out = {}
  for label, p in (("scored", plan), ("on-policy", fast)):
    prepared, carry, prep_metrics = step_lib.SplitPrepare(
        graphdef, objective, p)(params, ref_params, {}, r, key)
    new, metrics = _one_step(step_lib.SplitUpdate(
        graphdef, tx, objective, p, micro_batches=micro_batches),
                             params, opt_state, ref_params, carry, prepared,
                             rows)
    one, one_metrics = _one_step(jax.jit(step_lib.make_update(
        graphdef, tx, objective, p, micro_batches=micro_batches)),
                                 params, opt_state, ref_params, carry,
                                 prepared, rows)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(one)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert set(metrics) == set(one_metrics)
    out[label] = (new, {**prep_metrics, **metrics})
  (want, want_m), (got, got_m) = out["scored"], out["on-policy"]
  assert prepared.batch.old_logprobs is None
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(params),
                                                   jax.tree.leaves(got)))
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for name in ("loss", "regularizer/kl", "entropy", "kl_ref"):
    np.testing.assert_allclose(got_m[name], want_m[name], rtol=1e-5,
                               atol=1e-7, err_msg=name)
  # The logged values are the full-logits reference's (sampling params).
  ref, valid = _full_reference(model, ref_model, r)
  np.testing.assert_allclose(got_m["entropy"], ref["entropy"][valid].mean(),
                             rtol=1e-5)
  u = ref["logprobs"] - ref["ref_logprobs"]
  k3 = np.where(valid, np.exp(-u) + u - 1, 0.0).sum(1)
  np.testing.assert_allclose(got_m["kl_ref"], k3.mean(), rtol=1e-5,
                             atol=1e-7)


def test_skipping_the_reference_forward_changes_no_loss_or_gradient(models):
  # GRPO without a KL part reads nothing of the reference: the plan without
  # the logged KL skips its forward, and the step equals the one that runs
  # it for the metric.
  model, ref_model = models
  objective = divrl.build("grpo", "ppo_clip")
  skip = step_lib.Plan.of(objective, temperature=TEMPERATURE)
  run = step_lib.Plan.of(objective, temperature=TEMPERATURE, log_kl_ref=True)
  assert not skip.reference and run.reference
  r, key = _rollout(4), jax.random.key(0)
  graphdef, params = nnx.split(model)
  _, ref_params = nnx.split(ref_model)
  tx = optax.sgd(1.0)
  rows = jnp.arange(B, dtype=jnp.int32)
  out = {}
  for label, p in (("skip", skip), ("run", run)):
    # Without the reference forward, no reference parameters are needed.
    prepared, carry, prep_metrics = step_lib.SplitPrepare(
        graphdef, objective, p)(params, ref_params if p.reference else None,
                                {}, r, key)
    assert (prepared.batch.ref_logprobs is None) == (not p.reference)
    new, metrics = _one_step(step_lib.SplitUpdate(graphdef, tx, objective,
                                                  p),
                             params, tx.init(params), ref_params, carry,
                             prepared, rows)
    out[label] = (new, {**prep_metrics, **metrics})
  (want, want_m), (got, got_m) = out["run"], out["skip"]
  assert "kl_ref" in want_m and "kl_ref" not in got_m
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(params),
                                                   jax.tree.leaves(got)))
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(got_m["loss"], want_m["loss"])


def test_selected_rows_stay_split_over_the_batch_axes(models):
  # With replicated row indices (as the trainer passes them), selecting the
  # minibatch must not leave every row on every device: each device keeps
  # its share, so the model programs compute rows / devices per device.
  from divrl.rl import mesh as mesh_lib
  model, ref_model = models
  mesh = mesh_lib.make_train_mesh(data=2, devices=jax.devices()[:2])
  objective = divrl.build("grpo", "ppo_clip")
  plan = step_lib.Plan.of(objective)
  graphdef, params = nnx.split(model)
  _, ref_params = nnx.split(ref_model)
  r = _rollout(5)
  prepared, carry, _ = step_lib.SplitPrepare(graphdef, objective, plan)(
      params, ref_params, {}, r, jax.random.key(0))
  prepared = jax.tree.map(
      lambda x: jax.device_put(x, mesh_lib.batch_sharding(mesh, x.ndim)),
      prepared)
  rows = jax.device_put(jnp.arange(B, dtype=jnp.int32),
                        mesh_lib.replicated(mesh))
  tx = optax.sgd(1e-2)
  micro = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, mesh_lib.BATCH_AXES))
  split = step_lib.SplitUpdate(graphdef, tx, objective, plan,
                               micro_sharding=micro)
  inputs, batch = split._model.select(prepared, rows)  # pylint: disable=protected-access
  for leaf in jax.tree.leaves((inputs, batch)):
    assert {s.data.shape[1] for s in leaf.addressable_shards} == {B // 2}
  plain = step_lib.SplitUpdate(graphdef, tx, objective, plan)
  inputs, _ = plain._model.select(prepared, rows)  # pylint: disable=protected-access
  assert {s.data.shape[1] for s in inputs.tokens.addressable_shards} == {B}
  # Same update either way.
  got = _one_step(split, params, tx.init(params), ref_params, carry,
                  prepared, rows)
  want = _one_step(plain, params, tx.init(params), ref_params, carry,
                   prepared, rows)
  for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(want[0])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # The one-program update takes the same micro_sharding: each device
  # computes its half of the rows (about half the matmul FLOPs of the
  # unpinned program), and the update is the same.
  from scripts.bench_scaling import hlo_summary
  flops = {}
  for name, sharding in (("pinned", micro), ("plain", None)):
    fused = jax.jit(step_lib.make_update(graphdef, tx, objective, plan,
                                         micro_sharding=sharding))
    args = (params, tx.init(params), ref_params, carry, prepared, rows,
            jax.random.key(3))
    flops[name] = hlo_summary(fused.lower(*args).compile().as_text(),
                              2)["dot_flops"]
    got = _one_step(fused, params, tx.init(params), ref_params, carry,
                    prepared, rows)
    for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(want[0])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert flops["pinned"] < 0.6 * flops["plain"], flops
