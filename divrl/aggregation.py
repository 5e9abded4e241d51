"""Loss aggregation as ``(numerator, denominator)`` pairs.

Every mode reduces a per-token loss ``L [B,T]`` with mask ``m [B,T]`` to an
``Aggregate(numerator, denominator)``. Both are sums over sequences, so the
pairs of micro-batches and of devices add up; the scalar
``numerator / denominator`` is formed once, by ``finalize``, after all sums.
The same global batch therefore gives the same loss and gradient whether it is
evaluated whole, split into micro-batches, or sharded over a mesh.

With ``n_i = sum_t m_it`` and ``B_seq = #{i : n_i > 0}``:

=============================  =================================  ==========
mode                           numerator                          denominator
=============================  =================================  ==========
``token-mean``                 ``sum_it L m``                     ``sum_it m``
``token-sum``                  ``sum_it L m``                     ``0`` (none)
``seq-mean-token-mean``        ``sum_i (sum_t L m) / n_i``        ``B_seq``
``seq-mean-token-sum``         ``sum_it L m``                     ``B_seq``
``seq-mean-token-sum-norm``    ``sum_it L m / S``                 ``B_seq``
=============================  =================================  ==========

The sequence modes take ``count="nonempty"`` (default, verl's ``B_seq``) or
``count="rows"``, which counts every row including all-masked ones (TRL's
``grpo``/``dr_grpo`` and tunix's ``sequence-mean-token-sum-norm`` divide by
the number of rows).

``S`` is the constant ``norm`` (default: the padded length ``T``), as in
Dr.GRPO (Liu et al., arXiv:2503.20783) and verl's ``loss_scale_factor``.
``token-mean`` is DAPO's token-level loss (Yu et al., arXiv:2503.14476),
``seq-mean-token-mean`` the original GRPO loss (Shao et al.,
arXiv:2402.03300). A zero denominator means "no normaliser": ``finalize``
returns the numerator (``token-sum``, or an empty batch whose numerator is 0).
Denominators are counts of the mask and carry no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from divrl.registry import above, register

Array = jax.Array


class Aggregate(NamedTuple):
  """A reduced loss or metric before normalisation."""

  numerator: Array
  denominator: Array


def combine(*aggregates: Any) -> Any:
  """Adds pytrees of ``Aggregate``s leaf by leaf."""
  return jax.tree.map(lambda *xs: sum(xs[1:], xs[0]), *aggregates)


def psum(aggregates: Any, axis_name) -> Any:
  """Sums a pytree of ``Aggregate``s over a mesh axis (inside shard_map)."""
  return jax.lax.psum(aggregates, axis_name)


def finalize(aggregate: Aggregate) -> Array:
  """``numerator / denominator``, or the numerator where the denominator is 0.

  Uses the double-``where`` form so the gradient is finite everywhere.
  """
  num, den = aggregate
  safe = jnp.where(den > 0, den, 1.0)
  return num / safe


def finalize_tree(aggregates: Any) -> Any:
  """Applies ``finalize`` to every ``Aggregate`` in a pytree."""
  return jax.tree.map(finalize, aggregates,
                      is_leaf=lambda x: isinstance(x, Aggregate))


def _prepare(loss: Array, mask: Array):
  chex.assert_rank([loss, mask], 2)
  chex.assert_equal_shape([loss, mask])
  dtype = jnp.promote_types(loss.dtype, jnp.float32)  # f32 or wider
  m = jax.lax.stop_gradient(mask.astype(dtype))
  # where, not multiply: padded positions may hold inf or NaN garbage.
  lm = jnp.where(m > 0, loss.astype(dtype), 0.0) * m
  return lm, m


def _num_sequences(m: Array, count: str) -> Array:
  if count == "nonempty":
    return jnp.sum((jnp.sum(m, axis=-1) > 0).astype(m.dtype))
  if count == "rows":
    return jnp.asarray(m.shape[0], m.dtype)
  raise ValueError(f"count must be 'nonempty' or 'rows', got {count!r}.")


@register("aggregation", "token-mean")
def token_mean(loss: Array, mask: Array) -> Aggregate:
  """Global token mean: ``sum L m / sum m`` (DAPO, verl's default)."""
  lm, m = _prepare(loss, mask)
  return Aggregate(jnp.sum(lm), jnp.sum(m))


@register("aggregation", "token-sum")
def token_sum(loss: Array, mask: Array) -> Aggregate:
  """Unnormalised sum over tokens: ``sum L m`` (denominator 0)."""
  lm, _ = _prepare(loss, mask)
  return Aggregate(jnp.sum(lm), jnp.zeros((), lm.dtype))


@register("aggregation", "seq-mean-token-mean")
def seq_mean_token_mean(loss: Array, mask: Array, *,
                        count: str = "nonempty") -> Aggregate:
  """Mean over sequences of per-sequence token means (original GRPO)."""
  lm, m = _prepare(loss, mask)
  n = jnp.sum(m, axis=-1)
  per_seq = jnp.sum(lm, axis=-1) / jnp.where(n > 0, n, 1.0)
  return Aggregate(jnp.sum(per_seq), _num_sequences(m, count))


@register("aggregation", "seq-mean-token-sum")
def seq_mean_token_sum(loss: Array, mask: Array, *,
                       count: str = "nonempty") -> Aggregate:
  """Mean over sequences of per-sequence token sums."""
  lm, m = _prepare(loss, mask)
  return Aggregate(jnp.sum(lm), _num_sequences(m, count))


@register("aggregation", "seq-mean-token-sum-norm",
          domains={"norm": above(0)})
def seq_mean_token_sum_norm(loss: Array, mask: Array, *,
                            norm: float | None = None,
                            count: str = "nonempty") -> Aggregate:
  """Token sums over a constant ``norm``, averaged over sequences (Dr.GRPO).

  ``norm`` defaults to the padded length ``T`` of ``loss``; set it explicitly
  when micro-batches may be padded to different lengths.
  """
  lm, m = _prepare(loss, mask)
  s = float(loss.shape[-1] if norm is None else norm)
  if s <= 0:
    raise ValueError(f"norm must be > 0, got {norm}.")
  return Aggregate(jnp.sum(lm) / s, _num_sequences(m, count))


MODES = ("token-mean", "token-sum", "seq-mean-token-mean",
         "seq-mean-token-sum", "seq-mean-token-sum-norm")


def micro_batched_value_and_grad(
    aggregate_fn: Callable[[Any, Any], tuple[Aggregate, Any]],
    params: Any, micro_batches: Any):
  """Loss and gradient of a global batch evaluated in micro-batches.

  ``aggregate_fn(params, micro_batch) -> (Aggregate, metric_aggregates)``.
  The gradients of the numerators and the denominators (which must not
  depend on ``params``) are summed over micro-batches with ``lax.scan``, and
  divided once at the end, so the result equals the full-batch value.

  Args:
    aggregate_fn: the per-micro-batch reduction.
    params: the differentiated pytree.
    micro_batches: a pytree whose leaves have a leading micro-batch axis
      (see ``divrl.types.split``).

  Returns:
    ``(loss, grads, metrics)`` with metrics finalised.
  """

  def one(params, mb):
    def num_fn(p):
      agg, metrics = aggregate_fn(p, mb)
      return agg.numerator, (agg.denominator, metrics)

    (num, (den, metrics)), g = jax.value_and_grad(num_fn, has_aux=True)(params)
    return Aggregate(num, den), metrics, g

  first = jax.tree.map(lambda x: x[0], micro_batches)
  carry0 = one(params, first)
  if jax.tree.leaves(micro_batches)[0].shape[0] == 1:
    total, metrics, grads = carry0  # one micro-batch: no loop to compile
  else:
    rest = jax.tree.map(lambda x: x[1:], micro_batches)

    def step(carry, mb):
      return combine(carry, one(params, mb)), None

    (total, metrics, grads), _ = jax.lax.scan(step, carry0, rest)
  scale = jnp.where(total.denominator > 0, total.denominator, 1.0)
  grads = jax.tree.map(lambda g: g / scale, grads)
  return finalize(total), grads, finalize_tree(metrics)
