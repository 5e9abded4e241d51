"""divrl.rl.gradients: the measured gradient is the update's gradient, and
the relative variance is computed from the textbook moments."""

import jax
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from divrl.objective import Objective
from divrl.rl import gradients
from divrl.rl import step as step_lib
from divrl.rl.trainer import Trainer
from tests.rl.test_trainer import small_config


def test_relative_variance_from_moments():
  rng = np.random.default_rng(0)
  mu = np.array([3.0, -1.0, 0.5])
  g = mu + rng.normal(0, 2.0, size=(400, 3))
  out = gradients.relative_variance(g.sum(0), float((g * g).sum()), 400)
  trace = float(np.sum(np.var(g, axis=0, ddof=1)))
  mean = g.mean(0)
  signal = float(mean @ mean) - trace / 400
  assert out["total_variance"] == pytest.approx(trace)
  assert out["relative_variance"] == pytest.approx(trace / signal)
  assert out["mean_norm"] == pytest.approx(np.sqrt(signal))
  assert out["noise_share"] == pytest.approx(
      trace / float(np.mean(np.sum(g * g, axis=1))))
  # The population values: tr Cov = 12, ||mu||^2 = 10.25.
  assert out["relative_variance"] == pytest.approx(12 / 10.25, rel=0.15)
  # A mean lost in the noise: the corrected signal is not positive.
  z = rng.normal(0, 1.0, size=(50, 3))
  z -= z.mean(0)
  assert gradients.relative_variance(z.sum(0), float((z * z).sum()),
                                     50)["relative_variance"] == np.inf
  with pytest.raises(ValueError, match="n must be"):
    gradients.relative_variance(np.zeros(3), 0.0, 1)


def test_gradient_fn_is_the_update_gradient(tmp_path, cache_root):
  trainer = Trainer(small_config(tmp_path, cache_root), log=lambda *a: None)
  trainer.train_step()   # away from the base, so that rewards vary
  rollout, _ = trainer.rollout(5)
  key = jax.random.key(3)
  obj = trainer.objective
  g = gradients.gradient_fn(trainer, obj)(rollout, key)
  # The same loss through the trainer's own update program, with SGD at
  # learning rate 1: params_new - params = -grad.
  prepared, carry, _ = trainer._prepare(  # pylint: disable=protected-access
      trainer.state["params"], trainer.state["ref_params"],
      trainer.state["carry"], rollout, jax.random.fold_in(key, 1))
  tx = optax.sgd(1.0)
  update = jax.jit(step_lib.make_update(trainer.graphdef, tx, obj,
                                        trainer.plan))
  params = trainer.state["params"]
  rows = np.arange(rollout.tokens.shape[0], dtype=np.int32)
  new, _, _ = update(params, tx.init(params), trainer.state["ref_params"],
                     carry, prepared, rows, jax.random.fold_in(key, 2))
  expected = -(ravel_pytree(new)[0] - ravel_pytree(params)[0])
  assert np.linalg.norm(g) > 0
  np.testing.assert_allclose(g, np.asarray(expected), rtol=2e-3,
                             atol=1e-6 * np.abs(g).max())


def test_estimator_statistics_pairs_estimators_on_the_same_batches(
    tmp_path, cache_root):
  trainer = Trainer(small_config(tmp_path, cache_root), log=lambda *a: None)
  # A barely trained base solves nothing: a length penalty over the whole
  # response makes rewards vary within every group.
  width = trainer.config.sampling.max_new_tokens
  spec = {**trainer.config.objective.to_dict(),
          "transforms": [{"name": "overlong_penalty", "max_length": width,
                          "cache_length": width}]}
  objs = {"a": Objective.from_config(spec),
          "b": Objective.from_config(spec)}
  out = gradients.estimator_statistics(trainer, objs, num_batches=3)
  # The same estimator twice on the same batches: identical statistics.
  assert out["a/mean_sq_norm"] > 0
  for stat in ("total_variance", "mean_sq_norm", "noise_share"):
    assert out[f"a/{stat}"] == out[f"b/{stat}"], stat
  assert 0 <= out["zero_variance_share"] <= 1
  with pytest.raises(ValueError, match="num_batches"):
    gradients.estimator_statistics(trainer, objs, num_batches=1)


def test_group_gradient_norms_zero_variance_groups_give_zero(tmp_path,
                                                             cache_root):
  trainer = Trainer(small_config(tmp_path, cache_root), log=lambda *a: None)
  width = trainer.config.sampling.max_new_tokens
  spec = trainer.config.objective.to_dict()
  shaped = {**spec, "transforms": [{"name": "overlong_penalty",
                                    "max_length": width,
                                    "cache_length": width}]}
  out = gradients.group_gradient_norms(
      trainer, {"grpo": Objective.from_config(spec)}, num_batches=2)
  groups = 2 * trainer.config.sampling.num_prompts
  assert out["variance"].shape == out["grpo"].shape == (groups,)
  # The barely trained base solves nothing: every group's rewards are
  # equal, and GRPO's gradient is exactly zero for each.
  assert np.all(out["variance"] == 0)
  assert np.all(out["grpo"] == 0.0)
  # A reward that varies in every group gives every group a gradient.
  varied = gradients.group_gradient_norms(
      trainer, {"shaped": Objective.from_config(shaped)}, num_batches=1)
  assert np.all(varied["shaped"] > 0)
  rollout, _ = trainer.rollout(0)
  one = gradients.group_rollout(rollout, 1)
  assert one.num_groups == 1 and one.tokens.shape[0] == (
      trainer.config.sampling.num_samples)
  np.testing.assert_array_equal(one.tokens, np.asarray(rollout.tokens)[
      np.asarray(rollout.group_ids) == 1])
