"""The batch pytree (divrl.types): validation names the offending field,
declared inputs are checked, micro-batch splitting, and the INPUTS list."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import types
from tests.conftest import make_batch

B, T, D = 6, 5, 3


def _full_batch(seed=0):
  """A valid batch with every optional field set (B=6, T=5, 3 groups)."""
  rng = np.random.default_rng(seed)

  def tok():
    return jnp.asarray(rng.normal(size=(B, T)), jnp.float32)

  lengths = np.array([5, 3, 1, 4, 2, 5])
  return divrl.Batch(
      logprobs=-jnp.abs(tok()),
      response_mask=jnp.asarray(np.arange(T)[None] < lengths[:, None]),
      rewards=jnp.asarray(rng.normal(size=B), jnp.float32),
      group_ids=jnp.asarray([0, 0, 1, 1, 2, 2], jnp.int32),
      old_logprobs=tok(), ref_logprobs=tok(), rollout_logprobs=tok(),
      entropy=tok(), top_p_entropy=tok(), sum_pi_squared=tok(),
      vocab_mean_logprob=tok(), reverse_kl=tok(), forward_kl=tok(), js=tok(),
      alpha_divergence=tok(), chi_square=tok(), total_variation=tok(),
      hellinger=tok(), old_vocab_mean_logprob=tok(), min_p_logprob=tok(),
      old_min_p_logprob=tok(),
      task_ids=jnp.asarray([0, 1, 0, 1, 1, 0], jnp.int32),
      embeddings=jnp.asarray(rng.normal(size=(B, D)), jnp.float32),
      sample_source=jnp.asarray([0, 1, 0, 1, 0, 0], jnp.int32),
      solution_ids=jnp.asarray([0, -1, 2, 2, -1, 1], jnp.int32),
      advantages=tok(), token_rewards=tok(), values=tok(), old_values=tok(),
      baseline_rewards=jnp.asarray(rng.normal(size=B), jnp.float32),
      truncated=jnp.asarray([False, True, False, False, True, False]),
      tokens=jnp.asarray(rng.integers(0, 9, size=(B, T)), jnp.int32),
      num_groups=3)


# --- validate ----------------------------------------------------------------


def test_dtypes_and_group_range():
  batch = make_batch(0)
  with pytest.raises(ValueError, match="Batch.group_ids.*integer"):
    divrl.validate(batch.replace(group_ids=batch.group_ids.astype(
        jnp.float32)))
  with pytest.raises(ValueError, match="Batch.rewards.*floating"):
    divrl.validate(batch.replace(rewards=batch.rewards.astype(jnp.int32)))
  with pytest.raises(ValueError, match="Batch.group_ids must lie in"):
    divrl.validate(batch.replace(group_ids=batch.group_ids + 10))
  with pytest.raises(ValueError, match="Batch.group_ids must lie in"):
    divrl.validate(batch.replace(group_ids=batch.group_ids - 10))
  with pytest.raises(ValueError, match="Batch.logprobs.*floating"):
    divrl.validate(batch.replace(logprobs=batch.logprobs.astype(jnp.int32)))
  with pytest.raises(ValueError, match="num_micro_batches"):
    types.split(batch, 5)


def test_validate_accepts_a_full_batch_and_returns_it_unchanged():
  batch = _full_batch()
  assert divrl.validate(batch) is batch
  # [B,K] reward components, int and float masks, num_groups=None.
  divrl.validate(batch.replace(rewards=jnp.ones((B, 4))))
  divrl.validate(batch.replace(response_mask=batch.response_mask.astype(
      jnp.int32)))
  divrl.validate(batch.replace(response_mask=batch.mask * 0.5))
  divrl.validate(batch.replace(num_groups=None))
  # Non-finite values in padded token_rewards are fine.
  tr = np.asarray(batch.token_rewards).copy()
  tr[~np.asarray(batch.response_mask)] = np.nan
  divrl.validate(batch.replace(token_rewards=jnp.asarray(tr)))


def _bad_shapes():
  b = _full_batch()
  cases = {name: (name, getattr(b, name)[:, :-1]) for name in
           types.TOKEN_FIELDS}
  cases.update({
      "response_mask": ("response_mask", b.response_mask[:-1]),
      "rewards_rows": ("rewards", b.rewards[:-1]),
      "rewards_rank3": ("rewards", jnp.zeros((B, 2, 2))),
      "group_ids": ("group_ids", b.group_ids[:, None]),
      "embeddings_rows": ("embeddings", b.embeddings[:-1]),
      "embeddings_rank1": ("embeddings", b.embeddings[:, 0]),
      "baseline_rewards": ("baseline_rewards", b.baseline_rewards[:-1]),
      "truncated": ("truncated", b.truncated[:, None]),
      "tokens": ("tokens", b.tokens[:, :-1]),
      "sample_source": ("sample_source", b.sample_source[:-1]),
      "solution_ids": ("solution_ids", b.solution_ids[:-1]),
      "task_ids": ("task_ids", b.task_ids[:-1]),
  })
  return cases


@pytest.mark.parametrize("case", sorted(_bad_shapes()))
def test_validate_names_the_field_of_a_wrong_shape(case):
  field, value = _bad_shapes()[case]
  with pytest.raises(ValueError, match=rf"Batch\.{field} must have shape"):
    divrl.validate(_full_batch().replace(**{field: value}))


def test_validate_names_a_wrong_rank_of_logprobs():
  batch = _full_batch()
  with pytest.raises(ValueError,
                     match=r"Batch\.logprobs must have rank 2 \[B,T\], got"
                     r" shape \(6,\)"):
    divrl.validate(batch.replace(logprobs=batch.logprobs[:, 0]))
  with pytest.raises(ValueError, match=r"shape \(6, 1\), got \(6, 5\)"):
    divrl.validate(make_batch(0, b=6, t=1).replace(
        response_mask=batch.response_mask))


def _bad_dtypes():
  b = _full_batch()
  cases = {name: (name, getattr(b, name).astype(jnp.int32), "floating")
           for name in types.TOKEN_FIELDS}
  cases.update({
      "logprobs": ("logprobs", b.logprobs.astype(jnp.int32), "floating"),
      "response_mask": ("response_mask",
                        b.response_mask.astype(jnp.complex64),
                        "bool, integer or float"),
      "rewards": ("rewards", b.rewards.astype(jnp.int32), "floating"),
      "group_ids": ("group_ids", b.group_ids.astype(jnp.float32), "integer"),
      "embeddings": ("embeddings", b.embeddings.astype(jnp.int32),
                     "floating"),
      "baseline_rewards": ("baseline_rewards",
                           b.baseline_rewards.astype(jnp.int32), "floating"),
      "truncated": ("truncated", b.truncated.astype(jnp.int32), "bool"),
      "tokens": ("tokens", b.tokens.astype(jnp.float32), "integer"),
      "sample_source": ("sample_source", b.sample_source.astype(jnp.float32),
                        "integer"),
      "solution_ids": ("solution_ids", b.solution_ids.astype(jnp.float32),
                       "integer"),
      "task_ids": ("task_ids", b.task_ids.astype(jnp.float32), "integer"),
  })
  return cases


@pytest.mark.parametrize("case", sorted(_bad_dtypes()))
def test_validate_names_the_field_of_a_wrong_dtype(case):
  field, value, word = _bad_dtypes()[case]
  with pytest.raises(ValueError, match=rf"Batch\.{field} must .*{word}"):
    divrl.validate(_full_batch().replace(**{field: value}))


def test_validate_counts_non_finite_rewards_and_names_the_first():
  batch = _full_batch()
  r = np.asarray(batch.rewards).copy()
  r[[1, 4]] = [np.nan, -np.inf]
  with pytest.raises(ValueError, match=r"Batch\.rewards has 2 non-finite"
                     r" value\(s\) \(NaN or inf\), first at index \(1,\)"):
    divrl.validate(batch.replace(rewards=jnp.asarray(r)))
  rk = np.ones((B, 3), np.float32)
  rk[2, 1] = np.inf
  with pytest.raises(ValueError, match=r"Batch\.rewards has 1 non-finite"
                     r" .*first at index \(2, 1\)"):
    divrl.validate(batch.replace(rewards=jnp.asarray(rk)))
  br = np.asarray(batch.baseline_rewards).copy()
  br[5] = np.nan
  with pytest.raises(ValueError, match=r"Batch\.baseline_rewards has 1"
                     r" non-finite .*index \(5,\)"):
    divrl.validate(batch.replace(baseline_rewards=jnp.asarray(br)))
  # token_rewards: only the response tokens must be finite; row 2 has one.
  tr = np.asarray(batch.token_rewards).copy()
  tr[2, 0] = np.inf
  with pytest.raises(ValueError, match=r"Batch\.token_rewards has 1"
                     r" non-finite .*index \(2, 0\)"):
    divrl.validate(batch.replace(token_rewards=jnp.asarray(tr)))


def test_validate_checks_group_ids_against_num_groups():
  batch = _full_batch()   # num_groups=3
  with pytest.raises(ValueError, match=r"Batch\.group_ids must lie in \[0,"
                     r" num_groups=3\), got values in \[0, 3\]"):
    divrl.validate(batch.replace(group_ids=batch.group_ids.at[0].set(3)))
  with pytest.raises(ValueError, match=r"got values in \[-1, 2\]"):
    divrl.validate(batch.replace(group_ids=batch.group_ids.at[0].set(-1)))
  # num_groups=None means B groups: ids up to B - 1 are valid, B is not.
  ids = jnp.arange(B, dtype=jnp.int32)
  divrl.validate(batch.replace(group_ids=ids, num_groups=None))
  with pytest.raises(ValueError, match=r"num_groups=6\), got values in"
                     r" \[1, 6\]"):
    divrl.validate(batch.replace(group_ids=ids + 1, num_groups=None))
  for bad in (0, -2, 2.0):
    with pytest.raises(ValueError, match=r"Batch\.num_groups must be a"
                       r" positive int"):
      divrl.validate(batch.replace(num_groups=bad))


def test_validate_under_jit_checks_shapes_but_not_values():
  batch = _full_batch()
  r = np.asarray(batch.rewards).copy()
  r[0] = np.nan
  bad_values = batch.replace(rewards=jnp.asarray(r),
                             group_ids=batch.group_ids.at[0].set(7))
  out = jax.jit(divrl.validate)(bad_values)   # values are not concrete
  assert np.isnan(np.asarray(out.rewards)[0])
  with pytest.raises(ValueError, match="non-finite"):
    divrl.validate(bad_values)
  with pytest.raises(ValueError, match=r"Batch\.old_logprobs must have"
                     r" shape"):
    jax.jit(divrl.validate)(batch.replace(old_logprobs=batch.logprobs[:, 1:]))


def test_validate_rejects_a_non_batch():
  with pytest.raises(ValueError, match="expected a divrl.Batch, got dict"):
    divrl.validate({"logprobs": jnp.zeros((2, 2))})


# --- Batch -------------------------------------------------------------------


def test_batch_properties_and_pytree_leaves():
  batch = _full_batch()
  assert (batch.batch_size, batch.length, batch.groups) == (B, T, 3)
  assert batch.replace(num_groups=None).groups == B
  assert batch.mask.dtype == jnp.float32
  np.testing.assert_array_equal(batch.mask,
                                np.asarray(batch.response_mask, np.float32))
  # num_groups is static: not a leaf, kept through tree.map.
  leaves = jax.tree.leaves(batch)
  assert len(leaves) == len(types.CORE_FIELDS) + len(types.OPTIONAL_FIELDS)
  assert jax.tree.map(lambda x: x, batch).num_groups == 3
  assert len(jax.tree.leaves(make_batch(0, with_old=False,
                                        with_ref=False))) == 4


# --- Input names -------------------------------------------------------------


def test_inputs_are_the_optional_fields_but_advantages_plus_derived():
  fields = [f.name for f in dataclasses.fields(divrl.Batch)]
  optional = [f.name for f in dataclasses.fields(divrl.Batch)
              if f.default is None and f.name != "num_groups"]
  assert list(types.OPTIONAL_FIELDS) == optional
  assert set(types.CORE_FIELDS) | set(optional) | {"num_groups"} == set(
      fields)
  assert set(types.INPUTS) == {
      "old_logprobs", "ref_logprobs", "rollout_logprobs", "entropy",
      "top_p_entropy", "sum_pi_squared", "vocab_mean_logprob",
      "old_vocab_mean_logprob", "min_p_logprob", "old_min_p_logprob",
      "reverse_kl",
      "forward_kl", "js", "alpha_divergence", "chi_square",
      "total_variation", "hellinger", "embeddings", "sample_source",
      "solution_ids", "task_ids",
      "token_rewards", "values", "old_values", "baseline_rewards",
      "truncated", "tokens", "reward_components", "reference_samples"}
  assert len(types.INPUTS) == len(set(types.INPUTS)) == 29
  assert "advantages" not in types.INPUTS
  assert set(types.DERIVED_INPUTS) == {"reward_components",
                                       "reference_samples"}
  assert set(types.TOKEN_FIELDS) <= set(optional)


# --- check_inputs ------------------------------------------------------------

FIELD_INPUTS = [n for n in types.INPUTS if n not in types.DERIVED_INPUTS]


@pytest.mark.parametrize("name", FIELD_INPUTS)
def test_check_inputs_names_the_part_and_the_missing_field(name):
  batch = _full_batch()
  types.check_inputs(batch, [name], "advantage 'x'")   # present: no error
  with pytest.raises(ValueError, match=rf"the advantage 'x' reads"
                     rf" Batch\.{name}, which is None\."):
    types.check_inputs(batch.replace(**{name: None}), [name],
                       "advantage 'x'")


def test_check_inputs_derived_inputs_and_order():
  batch = _full_batch()
  types.check_inputs(batch, types.INPUTS, "surrogate 'y'")
  types.check_inputs(batch, (), "surrogate 'y'")
  no_source = batch.replace(sample_source=None)
  with pytest.raises(ValueError, match=r"the regularizer 'z' reads reference"
                     r" samples, marked by Batch\.sample_source, which is"
                     r" None\."):
    types.check_inputs(no_source, ["reference_samples"], "regularizer 'z'")
  # reward_components accepts [B] rewards (K = 1) and [B,K].
  bare = make_batch(0, with_old=False, with_ref=False)
  types.check_inputs(bare, ["reward_components"], "p")
  types.check_inputs(bare.replace(rewards=jnp.ones((12, 2))),
                     ["reward_components"], "p")
  # The first missing input in declaration order is named.
  with pytest.raises(ValueError, match=r"Batch\.values"):
    types.check_inputs(bare, ["reward_components", "values", "entropy"], "p")


# --- small helpers -----------------------------------------------------------


def test_scalar_rewards_of():
  batch = _full_batch()
  assert types.scalar_rewards_of(batch, "t") is batch.rewards
  with pytest.raises(ValueError, match=r"the 'clip' transform needs scalar"
                     r" Batch\.rewards of shape \[B\], got \(6, 2\)"):
    types.scalar_rewards_of(batch.replace(rewards=jnp.ones((B, 2))), "clip")


def test_behaviour_logprobs_is_old_or_stopped_logprobs():
  batch = _full_batch()
  assert types.behaviour_logprobs(batch) is batch.old_logprobs
  on_policy = batch.replace(old_logprobs=None)
  np.testing.assert_array_equal(types.behaviour_logprobs(on_policy),
                                batch.logprobs)
  grad = jax.grad(lambda lp: jnp.sum(types.behaviour_logprobs(
      on_policy.replace(logprobs=lp))))(batch.logprobs)
  np.testing.assert_array_equal(grad, np.zeros((B, T)))
  grad_old = jax.grad(lambda lp: jnp.sum(types.behaviour_logprobs(
      batch.replace(old_logprobs=lp))))(batch.logprobs)
  np.testing.assert_array_equal(grad_old, np.ones((B, T)))


# --- split -------------------------------------------------------------------


@pytest.mark.parametrize("num", [1, 2, 3, 6])
def test_split_stacks_equal_slices_of_the_leading_axis(num):
  batch = _full_batch().replace(rewards=jnp.arange(B * 2.0).reshape(B, 2))
  micro = types.split(batch, num)
  size = B // num
  assert micro.num_groups == 3
  for name in types.CORE_FIELDS + types.OPTIONAL_FIELDS:
    x, m = np.asarray(getattr(batch, name)), np.asarray(getattr(micro, name))
    assert m.shape == (num, size) + x.shape[1:], name
    for i in range(num):
      np.testing.assert_array_equal(m[i], x[i * size:(i + 1) * size])


def test_split_keeps_absent_fields_absent_and_rejects_non_divisors():
  batch = make_batch(0, b=12, with_old=False, with_ref=False)
  micro = types.split(batch, 4)
  assert micro.old_logprobs is None and micro.ref_logprobs is None
  assert micro.logprobs.shape == (4, 3, 7)
  np.testing.assert_array_equal(micro.group_ids[2], batch.group_ids[6:9])
  for bad in (5, 0, -1, 24):
    with pytest.raises(ValueError, match=rf"num_micro_batches={bad} must"
                       r" divide the batch size B=12"):
      types.split(batch, bad)


# --- check_values: the checked mode's value checks ---------------------------


def _checked_batch():
  b = _full_batch()
  neg = lambda x: -jnp.abs(x) - 0.01   # valid log-probabilities
  return b.replace(old_logprobs=neg(b.old_logprobs),
                   ref_logprobs=neg(b.ref_logprobs),
                   rollout_logprobs=neg(b.rollout_logprobs),
                   sum_pi_squared=jnp.clip(jnp.abs(b.sum_pi_squared), 0, 1))


def test_check_values_accepts_a_valid_batch_and_returns_it():
  b = _checked_batch()
  assert divrl.check_values(b) is b
  # Padding may hold anything: the checks read response tokens only.
  mask = np.asarray(b.response_mask)
  lp = np.where(mask, np.asarray(b.logprobs), np.nan)
  divrl.check_values(b.replace(logprobs=jnp.asarray(lp, jnp.float32)))


@pytest.mark.parametrize("field,value,what", [
    ("logprobs", 0.5, "above 0 (a probability above 1)"),
    ("old_logprobs", np.nan, "that are NaN or inf"),
    ("ref_logprobs", np.inf, "that are NaN or inf"),
    ("rollout_logprobs", 3.0, "above 0 (a probability above 1)"),
    ("sum_pi_squared", 1.5, "outside [0, 1]"),
    ("sum_pi_squared", -0.1, "outside [0, 1]"),
])
def test_check_values_names_the_field_index_and_value(field, value, what):
  b = _checked_batch()
  x = np.array(getattr(b, field))
  x[1, 2] = value          # row 1 has 3 response tokens
  with pytest.raises(ValueError) as e:
    divrl.check_values(b.replace(**{field: jnp.asarray(x, jnp.float32)}))
  assert str(e.value).startswith(f"Batch.{field} has 1 value(s) {what}")
  assert "first at index (1, 2)" in str(e.value)


def test_check_values_tolerates_float32_rounding_of_a_sure_token():
  b = _checked_batch()
  x = np.array(b.logprobs)
  x[0, 0] = 1e-7           # log-softmax of a p = 1 token, rounded
  divrl.check_values(b.replace(logprobs=jnp.asarray(x)))


def test_check_values_refuses_an_empty_batch_nan_rewards_and_bad_groups():
  b = _checked_batch()
  with pytest.raises(ValueError, match="Batch.response_mask is empty"):
    divrl.check_values(b.replace(response_mask=jnp.zeros_like(
        b.response_mask)))
  with pytest.raises(ValueError, match="Batch.rewards has 1 non-finite"):
    divrl.check_values(b.replace(rewards=b.rewards.at[3].set(jnp.nan)))
  with pytest.raises(ValueError, match="Batch.group_ids must lie in"):
    divrl.check_values(b.replace(group_ids=b.group_ids.at[0].set(7)))


def test_check_values_under_jit_is_a_clear_error():
  with pytest.raises(TypeError, match="outside jax.jit"):
    jax.jit(divrl.check_values)(_checked_batch())


def test_check_values_counts_group_sizes_against_pass_at_k():
  b = _checked_batch()          # 3 groups of 2
  divrl.check_values(b, min_group_size=2)
  with pytest.raises(ValueError) as e:
    divrl.check_values(b, min_group_size=3, needed_by="objective.advantage"
                       " (pkpo): k = 3")
  assert str(e.value) == (
      "Batch.group_ids: 3 group(s) have fewer than 3 samples, first group 0"
      " with 2; objective.advantage (pkpo): k = 3 needs at least 3.")
  # The objective passes its parts' need.
  o = divrl.from_config({"advantage": {"name": "pkpo", "k": 3},
                         "surrogate": "ppo_clip", "aggregation": "token-mean"})
  with pytest.raises(ValueError, match="k = 3 needs at least 3"):
    o.check_values(b)
  ok = divrl.from_config({"advantage": {"name": "pkpo", "k": 2},
                          "surrogate": "ppo_clip", "aggregation": "token-mean"})
  assert ok.check_values(b) is b
