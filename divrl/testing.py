"""Exact-expectation tools for checking objectives on enumerable policies.

A tabular autoregressive softmax policy over all ``V**T`` sequences of length
``T`` lets one compute expectations exactly, with no sampling noise: the
expected gradient of a sampled surrogate, ``E_{y ~ pi}[grad L(theta; y)]``
with the samples held fixed, can be compared with the analytic gradient of the
objective a paper states (the verification ladder, docs/design.md section 3, step 2). Use it for new losses too::

  policy = TabularPolicy(vocab=3, length=2)
  params = policy.init(jax.random.key(0))
  loss_fn = objective_loss(policy, objective, rewards=rewards)
  g = expected_group_gradient(policy, params, group_size=3, loss_fn=loss_fn)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from divrl.types import Batch

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TabularPolicy:
  """``pi(y_t | y_<t) = softmax(theta_t[y_<t])`` with a table per position.

  ``params`` is a tuple: ``params[t]`` has shape ``[V] * t + [V]``, the logits
  of token ``t`` indexed by the full prefix.
  """

  vocab: int
  length: int

  def init(self, key: Array, scale: float = 1.0) -> tuple[Array, ...]:
    keys = jax.random.split(key, self.length)
    return tuple(scale * jax.random.normal(k, (self.vocab,) * (t + 1))
                 for t, k in enumerate(keys))

  def sequences(self) -> Array:
    """All ``V**T`` sequences ``[N, T]``, lexicographic (first token major)."""
    seqs = list(itertools.product(range(self.vocab), repeat=self.length))
    return jnp.asarray(np.array(seqs, dtype=np.int32))

  def logprobs(self, params, tokens: Array) -> Array:
    """Per-token log-probs ``[N, T]`` of ``tokens [N, T]``."""
    out = []
    for t in range(self.length):
      logits = params[t][tuple(tokens[:, s] for s in range(t))]
      logits = jnp.broadcast_to(logits, (tokens.shape[0], self.vocab))
      logp = jax.nn.log_softmax(logits, axis=-1)
      out.append(jnp.take_along_axis(logp, tokens[:, t:t + 1], axis=-1)[:, 0])
    return jnp.stack(out, axis=1)

  def probs(self, params) -> Array:
    """Probabilities ``[N]`` of all sequences, in ``sequences()`` order."""
    return jnp.exp(jnp.sum(self.logprobs(params, self.sequences()), axis=1))


def expected_group_gradient(policy: TabularPolicy, params, group_size: int,
                            loss_fn: Callable[[Any, Array], Array]):
  """``E[grad loss_fn(params, group)]`` over i.i.d. groups, exactly.

  Enumerates all ``N**group_size`` ordered groups of sequence indices (keep it
  small). ``loss_fn(params, seq_idx [G]) -> scalar`` computes the sampled loss
  of one group; its gradient is averaged with weights ``prod_j pi(y_j)``, the
  sampling distribution held fixed.
  """
  n = policy.vocab ** policy.length
  tuples = jnp.asarray(np.array(
      list(itertools.product(range(n), repeat=group_size)), dtype=np.int32))
  probs = jax.lax.stop_gradient(policy.probs(params))
  weights = jnp.prod(probs[tuples], axis=1)

  def total(p):
    losses = jax.vmap(lambda idx: loss_fn(p, idx))(tuples)
    return jnp.sum(weights * losses)

  # One compiled program: eagerly, the vmapped objective dispatches each of
  # its operations one at a time (tens of seconds for a small objective).
  return jax.jit(jax.grad(total))(params)


def group_batch(policy: TabularPolicy, params, seq_idx: Array, *,
                rewards: Array | None = None, ref_params=None) -> Batch:
  """The ``Batch`` of one group: the sequences ``seq_idx [G]`` of
  ``policy`` (indices into ``policy.sequences()``), every token valid.

  ``rewards`` (``[V**T]``, one per sequence) gives the group's rewards
  (0 when None); ``ref_params`` the reference log-probs (none when None).
  """
  tokens = policy.sequences()[seq_idx]
  return Batch(
      logprobs=policy.logprobs(params, tokens),
      response_mask=jnp.ones(tokens.shape, bool),
      rewards=(jnp.zeros(seq_idx.shape, jnp.float32) if rewards is None
               else rewards[seq_idx]),
      group_ids=jnp.zeros(seq_idx.shape, jnp.int32),
      ref_logprobs=(None if ref_params is None
                    else policy.logprobs(ref_params, tokens)),
      num_groups=1)


def objective_loss(policy: TabularPolicy, objective, *,
                   rewards: Array | None = None, ref_params=None):
  """``loss_fn(params, seq_idx)``: ``objective``'s loss on ``group_batch``,
  the ``loss_fn`` of ``expected_group_gradient``."""
  def loss_fn(params, seq_idx):
    return objective(group_batch(policy, params, seq_idx, rewards=rewards,
                                 ref_params=ref_params))[0]
  return loss_fn


def expected_value(policy: TabularPolicy, params, values: Array) -> Array:
  """``E_{y ~ pi}[values(y)]`` for per-sequence ``values [N]``."""
  return jnp.sum(policy.probs(params) * values)
