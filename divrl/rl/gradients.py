"""Policy-gradient estimates of a trainer's policy, for measuring them.

``gradient_fn(trainer, objective)`` gives the gradient that one update of
``objective`` would take on a rollout (the same prepare and loss as the
trainer's step, without the optimizer), flattened to one vector.
``estimator_statistics`` draws fresh rollouts from the trainer's current
policy and accumulates, for several objectives on the *same* rollouts, the
statistics of their gradient estimates: the mean gradient, the total
variance and the relative variance ``tr Cov[g] / ||E g||^2``.

With ``n`` draws, ``||mean(g)||^2`` overestimates ``||E g||^2`` by
``tr Cov[g] / n``; the relative variance here subtracts that bias
(``||E g||^2 ~ ||mean g||^2 - tr Cov_hat / n``), and is ``inf`` when the
corrected squared norm is not positive (the mean gradient is lost in the
noise at this ``n``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from divrl import aggregation as agg
from divrl.objective import Objective
from divrl.rl import step as step_lib


def gradient_fn(trainer, objective: Objective
                ) -> Callable[[step_lib.Rollout, jax.Array], np.ndarray]:
  """``grad(rollout, key) -> [num_params]`` float64 gradient of
  ``objective``'s loss at the trainer's current parameters (one minibatch of
  the whole rollout, as ``train_step`` with 1 minibatch takes it)."""
  sc = trainer.config.sampling
  st = trainer.config.statistics
  plan = step_lib.Plan.of(objective, temperature=sc.temperature,
                          top_p=st.top_p, alpha=st.alpha, min_p=st.min_p)
  prepare = step_lib.SplitPrepare(trainer.graphdef, objective, plan)
  statistics = step_lib.make_statistics(trainer.graphdef, plan)
  carry0 = objective.init_carry()

  @jax.jit
  def grad(params, ref_params, carry, prepared, rows, key):
    micro = step_lib.split_micro_batches(prepared, rows, plan, 1)

    def aggregate_fn(p, m):
      inputs, b = m
      stats = statistics(p, ref_params, inputs)
      return objective.aggregates(b.replace(**stats), key, carry=carry)

    _, grads, _ = agg.micro_batched_value_and_grad(aggregate_fn, params,
                                                   micro)
    return ravel_pytree(grads)[0]

  def run(rollout: step_lib.Rollout, key: jax.Array) -> np.ndarray:
    params = trainer.state["params"]
    ref = trainer.state["ref_params"]
    prepared, carry, _ = prepare(params, ref, carry0, rollout,
                                 jax.random.fold_in(key, 1))
    rows = jnp.arange(rollout.tokens.shape[0], dtype=jnp.int32)
    g = grad(params, ref, carry, prepared, rows, jax.random.fold_in(key, 2))
    return np.asarray(g, dtype=np.float64)

  return run


def relative_variance(sum_g: np.ndarray, sum_sq: float, n: int
                      ) -> dict[str, float]:
  """From ``sum_i g_i`` and ``sum_i ||g_i||^2`` over ``n`` draws:
  ``mean_norm`` (``||E g||``, bias-corrected), ``total_variance`` (``tr
  Cov``, unbiased), ``relative_variance`` (their ratio, see the module
  docstring), ``noise_share`` (``tr Cov / E ||g||^2``, in [0, 1] and always
  finite) and ``mean_sq_norm`` (``E ||g||^2``)."""
  if n < 2:
    raise ValueError(f"n must be >= 2 draws, got {n}.")
  mean = sum_g / n
  mean_sq = float(mean @ mean)
  second = sum_sq / n
  trace = (second - mean_sq) * n / (n - 1)
  signal = mean_sq - trace / n
  return {"mean_norm": float(np.sqrt(max(signal, 0.0))),
          "total_variance": trace,
          "relative_variance": trace / signal if signal > 0 else np.inf,
          "noise_share": trace / second if second > 0 else np.nan,
          "mean_sq_norm": second}


def estimator_statistics(trainer, objectives: Mapping[str, Objective], *,
                         num_batches: int, seed_offset: int = 10**5,
                         log=None) -> dict[str, Any]:
  """Gradient statistics of each objective over ``num_batches`` fresh
  rollouts of the trainer's current policy, every objective on the same
  rollouts (paired). Returns ``{"<name>/<stat>": value}`` with the stats of
  ``relative_variance``, plus ``"<name>/zero_variance_share"``: the share of
  groups whose rewards are all equal."""
  if num_batches < 2:
    raise ValueError(f"num_batches must be >= 2, got {num_batches}.")
  fns = {name: gradient_fn(trainer, obj) for name, obj in objectives.items()}
  sums = {name: None for name in fns}
  sqs = {name: 0.0 for name in fns}
  flat = 0
  groups = 0
  for b in range(num_batches):
    rollout, info = trainer.rollout(trainer.step + seed_offset + b)
    r = np.asarray(info.rewards).reshape(rollout.num_groups, -1)
    flat += int(np.sum(np.all(r == r[:, :1], axis=1)))
    groups += r.shape[0]
    key = jax.random.fold_in(trainer.root_key, seed_offset + b)
    for name, fn in fns.items():
      g = fn(rollout, key)
      sums[name] = g if sums[name] is None else sums[name] + g
      sqs[name] += float(g @ g)
    if log and (b + 1) % 50 == 0:
      log(f"gradient draws: {b + 1}/{num_batches}")
  out = {}
  for name in fns:
    for stat, value in relative_variance(sums[name], sqs[name],
                                         num_batches).items():
      out[f"{name}/{stat}"] = value
  out["zero_variance_share"] = flat / groups
  return out


def group_rollout(rollout: step_lib.Rollout, group: int
                  ) -> step_lib.Rollout:
  """The rows of one group of ``rollout`` as a one-group rollout."""
  ids = np.asarray(rollout.group_ids)
  rows = np.flatnonzero(ids == group)
  if rows.size == 0:
    raise ValueError(f"group {group} has no rows in the rollout.")
  take = lambda x: None if x is None else x[rows]
  sub = jax.tree.map(take, rollout)
  return sub.replace(group_ids=jnp.zeros((rows.size,), jnp.int32),
                     num_groups=1)


def group_gradient_norms(trainer, objectives: Mapping[str, Objective], *,
                         num_batches: int, seed_offset: int = 2 * 10**5
                         ) -> dict[str, np.ndarray]:
  """Per group of ``num_batches`` fresh rollouts: the reward variance
  ``p (1 - p)`` (``"variance"``, population variance of the group's
  rewards) and, for each objective, the norm of the gradient of that
  group's own loss (``"<name>"``; the group alone as the batch)."""
  fns = {name: gradient_fn(trainer, obj) for name, obj in objectives.items()}
  out = {"variance": []}
  out.update({name: [] for name in fns})
  for b in range(num_batches):
    rollout, info = trainer.rollout(trainer.step + seed_offset + b)
    rewards = np.asarray(info.rewards)
    ids = np.asarray(rollout.group_ids)
    key = jax.random.fold_in(trainer.root_key, seed_offset + b)
    for g in range(rollout.num_groups):
      sub = group_rollout(rollout, g)
      out["variance"].append(float(np.var(rewards[ids == g])))
      for name, fn in fns.items():
        grad = fn(sub, jax.random.fold_in(key, g))
        out[name].append(float(np.sqrt(grad @ grad)))
  return {k: np.asarray(v) for k, v in out.items()}
