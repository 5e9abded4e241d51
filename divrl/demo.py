"""The placeholder main job: build objectives from config names, evaluate them
on a synthetic batch, check their gradients, and print a table.

Two gradient checks per objective:

* ``fd``: ``jax.grad`` of the loss on a synthetic batch against a central
  finite difference along a random direction of the log-probs (relative
  error).
* ``E[grad]/grad J``: on a tabular softmax policy (3 tokens, length 2) the
  exact expected gradient of the objective's policy-gradient part (its
  advantage, surrogate and aggregation, without regularizers) is projected on
  the analytic ``grad J`` of the expected binary reward. ``theory`` is the
  scale stated in ``divrl.advantages`` times the aggregation's constant
  factor; ``cos`` is the cosine between ``E[grad]`` and the predicted
  ``theory * grad J`` (1 means it points exactly where the theory says; the
  loss is minimised, so the prediction is along ``-grad J``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from divrl import aggregation, objective as objective_lib, testing
from divrl.types import Batch


def synthetic_batch(seed: int, batch_size: int, length: int,
                    num_groups: int) -> Batch:
  """Ragged groups, variable lengths and NaN/inf garbage in the padding."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, length + 1, size=batch_size)
  mask = np.arange(length)[None] < lengths[:, None]
  logp = -rng.uniform(0.05, 3.0, size=(batch_size, length))
  old = logp + rng.normal(0, 0.2, size=logp.shape)
  ref = logp + rng.normal(0, 0.4, size=logp.shape)
  for x in (logp, old, ref):
    x[~mask] = rng.choice([np.nan, np.inf, -1e4], size=(~mask).sum())
  return Batch(
      logprobs=jnp.asarray(logp, jnp.float32),
      response_mask=jnp.asarray(mask),
      rewards=jnp.asarray(rng.integers(0, 2, batch_size), jnp.float32),
      group_ids=jnp.asarray(rng.integers(0, num_groups, batch_size),
                            jnp.int32),
      old_logprobs=jnp.asarray(old, jnp.float32),
      ref_logprobs=jnp.asarray(ref, jnp.float32),
      num_groups=num_groups)


def finite_difference_error(objective, batch: Batch, seed: int,
                            h: float = 1e-6) -> float:
  """Relative error of ``<grad, v>`` against a central finite difference.

  Runs in float64 so that the difference quotient is accurate.
  """
  with jax.enable_x64(True):
    batch = jax.tree.map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(
            x.dtype, jnp.floating) else x, batch)
    return _fd_error(objective, batch, seed, h)


def _fd_error(objective, batch: Batch, seed: int, h: float) -> float:
  mask = batch.mask
  v = jax.random.normal(jax.random.key(seed), batch.logprobs.shape,
                        batch.logprobs.dtype) * mask
  f = jax.jit(lambda lp: objective(batch.replace(logprobs=lp))[0])
  g = jax.grad(lambda lp: objective(batch.replace(logprobs=lp))[0])(
      batch.logprobs)
  clean = jnp.where(mask > 0, batch.logprobs, 0.0)
  fd = (f(clean + h * v) - f(clean - h * v)) / (2 * h)
  analytic = jnp.sum(jnp.where(mask > 0, g * v, 0.0))
  return float(jnp.abs(fd - analytic) / jnp.maximum(jnp.abs(analytic), 1e-8))


def _grpo_weight(p: float, g: int, eps: float) -> float:
  def adv(x, c):
    k = c + x
    if k in (0, g):
      return 0.0
    mu = k / g
    var = (k * (1 - mu) ** 2 + (g - k) * mu ** 2) / (g - 1)
    return (x - mu) / (math.sqrt(var) + eps)
  return sum(math.comb(g - 1, c) * p ** c * (1 - p) ** (g - 1 - c)
             * (adv(1, c) - adv(0, c)) for c in range(g))


def estimator_scale(theory: str, p: float, group_size: int) -> float:
  """``E[sum_i A_i grad log pi(y_i)] / (G grad J)`` for each estimator."""
  if theory == "rloo":
    return 1.0
  if theory == "dr_grpo":
    return (group_size - 1) / group_size
  if theory == "grpo":
    return _grpo_weight(p, group_size, 1e-6)
  raise ValueError(f"unknown theory {theory!r}; expected rloo, dr_grpo or"
                   " grpo.")


def expected_gradient_check(objective, theory: str, group_size: int,
                            seed: int):
  """``(measured scale, theoretical scale, cosine)`` on a tabular policy."""
  policy = testing.TabularPolicy(vocab=3, length=2)
  params = policy.init(jax.random.key(seed))
  seqs = policy.sequences()
  rewards = jnp.asarray([1, 0, 0, 1, 1, 0, 0, 0, 1], jnp.float32)
  pg_only = objective_lib.Objective(objective.advantage, objective.surrogate,
                                    aggregation=objective.aggregation)

  def loss_fn(p, idx):
    tokens = seqs[idx]
    batch = Batch(logprobs=policy.logprobs(p, tokens),
                  response_mask=jnp.ones(tokens.shape, bool),
                  rewards=rewards[idx],
                  group_ids=jnp.zeros(idx.shape, jnp.int32), num_groups=1)
    return pg_only(batch)[0]

  g = testing.expected_group_gradient(policy, params, group_size, loss_fn)
  gj = jax.grad(lambda p: testing.expected_value(policy, p, rewards))(params)
  g, gj = (jnp.concatenate([x.ravel() for x in jax.tree.leaves(t)])
           for t in (g, gj))
  measured = float(jnp.dot(g, gj) / jnp.dot(gj, gj))
  # Constant factor of the aggregation for full-length sequences.
  ones = jnp.ones((group_size, policy.length))
  factor = float(aggregation.finalize(objective.aggregation(ones, ones))) / (
      group_size * policy.length)
  p = float(testing.expected_value(policy, params, rewards))
  want = -factor * group_size * estimator_scale(theory, p, group_size)
  # Cosine between E[grad] and the predicted direction want * grad J.
  cos = float(jnp.sign(want) * jnp.dot(g, gj)
              / (jnp.linalg.norm(g) * jnp.linalg.norm(gj)))
  return measured, want, cos


def run(config: Any) -> list[dict[str, Any]]:
  """Evaluates every objective in ``config.objectives``; returns table rows."""
  batch = synthetic_batch(config.seed, config.batch_size, config.length,
                          config.num_groups)
  rows = []
  for i, entry in enumerate(config.objectives):
    objective = objective_lib.from_config(entry.objective)
    loss, metrics = jax.jit(objective)(batch)
    fd = finite_difference_error(objective, batch, config.seed + i)
    measured, want, cos = expected_gradient_check(
        objective, entry.theory, config.group_size, config.seed + i)
    rows.append(dict(name=entry.name, loss=float(loss),
                     kl=float(metrics.get("regularizer/kl", jnp.nan)),
                     clipfrac=float(metrics["surrogate/clipfrac"]),
                     fd_rel_err=fd, scale=measured, theory=want, cos=cos))
  return rows


def _opt(x: float) -> str:
  return "-" if math.isnan(x) else f"{x:.4f}"


def format_table(rows: list[dict[str, Any]]) -> str:
  header = (f"{'objective':<10} {'loss':>9} {'kl':>8} {'clipfrac':>8}"
            f" {'fd err':>8} {'E[g]/gJ':>9} {'theory':>9} {'cos':>7}")
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(
        f"{r['name']:<10} {r['loss']:>9.5f} {_opt(r['kl']):>8}"
        f" {r['clipfrac']:>8.3f} {r['fd_rel_err']:>8.1e} {r['scale']:>9.5f}"
        f" {r['theory']:>9.5f} {r['cos']:>7.4f}")
  return "\n".join(lines)
