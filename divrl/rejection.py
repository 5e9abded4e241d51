"""Rejection of tokens or sequences whose rollout policy drifted from pi_old.

Inspired by verl's ``algorithm.rollout_correction.rollout_rs`` (see "When
Speed Kills Stability", arXiv:2512.23075, and the IcePop/MIS line of work).
With the log-ratio ``d_t = log pi_old(y_t) - log pi_roll(y_t)`` per token:

* ``k1`` criteria bound a ratio to ``[lo, hi]``: per token ``exp(d_t)``;
  per sequence ``exp(sum_t d_t)`` (``seq_sum``) or the geometric mean
  ``exp(mean_t d_t)`` (``seq_mean``).
* ``k2 = d^2 / 2`` and ``k3 = exp(d) - 1 - d`` (both ``>= 0``; the sampled
  estimators of ``KL(pi_roll || pi_old)`` of ``divergences.kl_estimator``
  with ``u = -d``) must not exceed ``hi``, per token, or summed / averaged /
  maximised over the sequence.

Token criteria zero the rejected tokens' mask; sequence criteria zero the whole
row. Every criterion must pass. The exact threshold semantics of verl are not
specified beyond its option names; these are ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp

from divrl.divergences import kl_estimator
from divrl.registry import above, at_least, defaults_from, register
from divrl.types import Batch, behaviour_logprobs

Array = jax.Array

CRITERIA = ("token_k1", "token_k2", "token_k3", "seq_sum_k1", "seq_sum_k2",
            "seq_sum_k3", "seq_mean_k1", "seq_mean_k2", "seq_mean_k3",
            "seq_max_k2", "seq_max_k3")


def _k(d: Array, kind: str) -> Array:
  """``k2`` or ``k3`` of ``KL(pi_roll || pi_old)`` at the sampled tokens."""
  return kl_estimator(-d, kind)  # u = log pi_roll - log pi_old = -d


def rejection_mask(old_logprobs: Array, rollout_logprobs: Array, mask: Array,
                   criterion: str, *, lo: float = 0.5,
                   hi: float = 2.0) -> Array:
  """``[B,T]`` float mask: 1 where the tokens pass ``criterion``.

  Args:
    old_logprobs: ``[B,T]`` trainer log-probs of the behaviour policy.
    rollout_logprobs: ``[B,T]`` sampler log-probs.
    mask: ``[B,T]`` response mask.
    criterion: one of ``CRITERIA``.
    lo: lower ratio bound for ``k1`` criteria.
    hi: upper ratio bound for ``k1``, upper divergence bound for ``k2/k3``.
  """
  chex.assert_equal_shape([old_logprobs, rollout_logprobs, mask])
  if criterion not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got"
                     f" {criterion!r}.")
  if criterion.endswith("k1") and not 0 < lo <= hi:
    raise ValueError(f"k1 criteria need 0 < lo <= hi, got lo={lo}, hi={hi}.")
  m = (mask > 0).astype(jnp.float32)
  d = jax.lax.stop_gradient(
      jnp.clip(old_logprobs - rollout_logprobs, -20.0, 20.0)) * m
  level, kind = criterion.rsplit("_", 1)
  if level == "token":
    if kind == "k1":
      ok = (d >= jnp.log(lo)) & (d <= jnp.log(hi))
    else:
      ok = _k(d, kind) <= hi
    return m * ok.astype(jnp.float32)
  n = jnp.sum(m, axis=-1)
  if kind == "k1":
    stat = jnp.sum(d, -1)
    if level == "seq_mean":
      stat = stat / jnp.maximum(n, 1.0)
    ok = (stat >= jnp.log(lo)) & (stat <= jnp.log(hi))
  else:
    k = _k(d, kind) * m
    if level == "seq_sum":
      stat = jnp.sum(k, -1)
    elif level == "seq_mean":
      stat = jnp.sum(k, -1) / jnp.maximum(n, 1.0)
    else:
      stat = jnp.max(k, -1)
    ok = stat <= hi
  return m * ok.astype(jnp.float32)[:, None]


@register("transform", "rollout_rejection", reads=("rollout_logprobs",),
          domains={"lo": above(0), "hi": at_least(0)})
@defaults_from(rejection_mask)
def rollout_rejection_part(batch: Batch, *,
                           criteria: str | Sequence[str] = ("token_k1",),
                           lo, hi) -> Batch:
  """Zeroes the mask of rejected tokens/sequences; needs rollout log-probs.

  ``criteria`` is a sequence of ``CRITERIA`` names (or one name, or a
  comma-separated string as in verl); one ``lo``/``hi`` pair applies to all.
  """
  if isinstance(criteria, str):
    criteria = tuple(c.strip() for c in criteria.split(","))
  old = behaviour_logprobs(batch)
  keep = batch.mask
  for c in criteria:
    keep = keep * rejection_mask(old, batch.rollout_logprobs, batch.mask, c,
                                 lo=lo, hi=hi)
  return batch.replace(response_mask=keep)
