"""Tests for divrl.registry: declarations, registration, discovery, binding,
and the one-default rule.

The declaration tests run over every registered part, read from the
registry, so a new part is covered without editing a list:

* a part runs on a batch that holds only the core fields and its declared
  inputs (every other optional field None);
* dropping any one declared input fails, at call time with an error naming
  the part and the field, and at config time (``divrl.rl.inputs``) with an
  error naming the part, the input and the config key.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import registry, types
from divrl.rl import inputs as inputs_lib
from tests.conftest import one_part_config

B, T, G, K, D = 8, 5, 2, 3, 4


def _field(name, rng):
  """A valid value of an optional Batch field for a [B,T] batch."""
  f = lambda x: jnp.asarray(x, jnp.float32)
  lp = -rng.uniform(0.1, 2.0, (B, T))
  if name in ("old_logprobs", "ref_logprobs", "rollout_logprobs"):
    return f(lp + rng.normal(0, 0.1, lp.shape))
  if name in (types.POLICY_STATISTICS + types.REFERENCE_DIVERGENCES
               + ("old_vocab_mean_logprob", "old_min_p_logprob")):
    return f(rng.uniform(0.0, 0.5, (B, T)))
  if name in ("values", "old_values", "token_rewards"):
    return f(rng.normal(size=(B, T)))
  if name == "embeddings":
    return f(rng.normal(size=(B, D)))
  if name == "baseline_rewards":
    return f(rng.integers(0, 2, B))
  if name == "task_ids":   # the default num_tasks is 1
    return jnp.zeros((B,), jnp.int32)
  if name in ("sample_source", "solution_ids"):
    return jnp.asarray(rng.integers(0, 2, B), jnp.int32)
  if name == "truncated":
    return jnp.asarray(rng.random(B) < 0.3)
  if name == "tokens":
    return jnp.asarray(rng.integers(0, 5, (B, T)), jnp.int32)
  raise AssertionError(name)


def _batch(inputs, seed=0):
  rng = np.random.default_rng(seed)
  components = "reward_components" in inputs
  rewards = rng.integers(0, 2, (B, K) if components else B).astype(float)
  fields = {}
  for name in inputs:
    if name == "reference_samples":
      fields["sample_source"] = jnp.asarray(np.arange(B) % 4 == 3, jnp.int32)
    elif name != "reward_components":
      fields[name] = _field(name, rng)
  return divrl.Batch(
      logprobs=jnp.asarray(-rng.uniform(0.1, 2.0, (B, T)), jnp.float32),
      response_mask=jnp.asarray(np.arange(T)[None] < rng.integers(
          1, T + 1, B)[:, None]),
      rewards=jnp.asarray(rewards, jnp.float32),
      group_ids=jnp.asarray(np.arange(B) // (B // G), jnp.int32),
      num_groups=G, **fields)


def _objective(kind, name):
  return divrl.from_config(one_part_config(
      kind, name, {"advantage": "grpo", "surrogate": "ppo_clip"}))


PARTS = [(k, n) for k in registry.KINDS for n in registry.names(k)
         if k != "aggregation"]
DECLARED = [(k, n, i) for k, n in PARTS
            for i in sorted(registry.declaration(registry.lookup(k, n)).reads)]


@pytest.mark.parametrize("kind,name", PARTS)
def test_part_runs_on_its_declared_inputs_only(kind, name):
  objective = _objective(kind, name)
  batch = _batch(objective.requires.inputs)
  loss, _ = objective(batch, jax.random.key(0))
  assert np.isfinite(float(loss))


@pytest.mark.parametrize("kind,name,missing", DECLARED)
def test_dropping_a_declared_input_fails_at_call_and_config_time(
    kind, name, missing):
  objective = _objective(kind, name)
  part = f"{kind} {name!r}"
  if missing == "reward_components":
    pass  # a [B] batch is the one-component case; only the run can lack it
  else:
    batch = _batch(objective.requires.inputs)
    field = "sample_source" if missing == "reference_samples" else missing
    with pytest.raises(ValueError, match=rf"{part} reads .*{field}"):
      objective(batch.replace(**{field: None}), jax.random.key(0))
  available = set(types.INPUTS) - {missing}
  problems = inputs_lib.missing(objective, available)
  assert (part, missing, inputs_lib.PROVIDERS[missing].config_key) in problems


def test_every_input_has_a_provider_and_a_config_key_where_optional():
  assert set(inputs_lib.PROVIDERS) == set(types.INPUTS)
  for name in ("token_rewards", "reward_components", "reference_samples"):
    assert inputs_lib.PROVIDERS[name].config_key


def test_declare_validates_names_and_reads_the_key_from_the_signature():
  @divrl.declare(reads=("entropy",))
  def part(batch, advantages, *, key):
    return advantages * batch.entropy

  decl = registry.declaration(part)
  assert decl.reads == frozenset({"entropy"}) and decl.key
  assert not registry.declaration(lambda batch: batch.logprobs).key
  with pytest.raises(ValueError, match="unknown input"):
    divrl.declare(reads=("entropies",))
  objective = divrl.build("grpo", "reinforce", token_weights=[part])
  assert objective.requires.update == frozenset({"entropy"})
  assert objective.requires.readers["entropy"] == ("token_weight 'part'",)


def test_requires_splits_the_stages():
  objective = divrl.from_config({
      "advantage": "otb", "surrogate": "bypass_ppo",
      "transforms": [{"name": "kl_in_reward", "coef": 0.1}],
      "token_weights": {"high_entropy": {}},
      "regularizers": {"kl": {"coef": 0.1}}})
  req = objective.requires
  assert req.prepare == {"sum_pi_squared", "ref_logprobs"}
  assert req.update == {"entropy", "rollout_logprobs", "ref_logprobs"}
  assert not req.key and not req.stateful
  stateful = divrl.from_config({"advantage": "ema_std_grpo",
                                "surrogate": "clip_cov"})
  assert stateful.requires.stateful and stateful.requires.key


def test_every_part_module_registers_without_being_imported_by_hand():
  # objective.py imports no part module; the registry discovers them all.
  source = inspect.getsource(divrl.objective)
  for module in ("advantages", "surrogates", "masks", "diversity",
                 "shaping", "corrections", "rejection", "resampling",
                 "divergences", "value"):
    assert f"import {module}" not in source
    assert f"from divrl.{module}" not in source
  assert "ema_std_grpo" in registry.names("advantage")
  assert "value_loss" in registry.names("regularizer")


def test_adapters_are_named_after_their_part_and_state_defaults_once():
  for kind, name in PARTS:
    fn = registry.lookup(kind, name)
    if fn.__module__.startswith("divrl."):
      assert fn.__name__ == name.replace("-", "_") + "_part", (kind, name)
    sources = getattr(fn, "defaults_from", ())
    for hp, default in registry.hyperparameters(fn).items():
      for source in sources:
        params = inspect.signature(source).parameters
        if hp in params and params[hp].default is not params[hp].empty:
          assert params[hp].default == default, (kind, name, hp)
          break


def test_defaults_from_fills_defaults_and_refuses_a_restated_one():
  def array_fn(x, *, scale=2.0, shift=0.5):
    return x * scale + shift

  @registry.defaults_from(array_fn)
  def adapter(batch, *, scale, shift, own=3):
    return array_fn(batch, scale=scale, shift=shift) + own

  assert registry.hyperparameters(adapter) == {"scale": 2.0, "shift": 0.5,
                                               "own": 3}
  assert adapter(1.0) == 1.0 * 2.0 + 0.5 + 3
  with pytest.raises(ValueError, match="restates the default"):
    registry.defaults_from(array_fn)(lambda batch, *, scale=2.0: batch)
  with pytest.raises(ValueError, match="has no default"):
    registry.defaults_from(array_fn)(lambda batch, *, other: batch)


def test_bind_passes_hyperparameters_to_the_state_functions():
  part = registry.make("advantage", {"name": "ema_std_grpo", "decay": 0.5})
  state = registry.declaration(part).state
  batch = _batch(())
  carry = state.update(state.init(), batch)
  np.testing.assert_allclose(carry["weight"], 0.5)  # 1 - decay
  with pytest.raises(ValueError, match="no hyperparameter 'decays'"):
    registry.make("advantage", {"name": "ema_std_grpo", "decays": 0.5})


def test_register_refuses_duplicates_and_unknown_kinds():
  with pytest.raises(ValueError, match="already registered"):
    registry.register("advantage", "grpo")(lambda batch: batch.logprobs)
  with pytest.raises(ValueError, match="unknown part kind"):
    registry.register("loss", "x")
