"""Composable objectives: advantage -> token weights -> surrogate ->
regularizers -> aggregation -> ``(loss, metrics)``.

An ``Objective`` is built from parts, either functions or registered names
(``divrl.registry``). The parts and what the objective passes them:

==============  ==================================================  =========
kind            call                                                returns
==============  ==================================================  =========
transform       ``fn(batch, key=..., axis_name=...)``               ``Batch``
advantage       ``fn(batch, axis_name=...)``                        ``[B,T]``
token_weight    ``fn(batch, advantages, key=..., axis_name=...)``   ``[B,T]``
surrogate       ``fn(batch, advantages, key=..., axis_name=...)``   ``[B,T]``
                                                                    or
                                                                    ``([B,T],
                                                                    dict)``
regularizer     ``fn(batch, axis_name=...)``                        ``[B,T]``
aggregation     ``fn(loss, mask)``                                  ``Aggregate``
==============  ==================================================  =========

``axis_name`` and ``key`` are passed only to parts whose signature has them,
so a user part can be a plain ``def my_part(batch): ...``. Transforms run
first, on whole groups, and may change rewards (reward shaping, KL in the
reward) or the response mask (filters; the mask is also every aggregation's
denominator). Token weights multiply the surrogate's per-token loss (not the
denominators, and not the regularizers). The total per-token loss ``surrogate
* weights + sum_j coef_j * regularizer_j`` is aggregated once with the
objective's mode. Sequence-level losses (GSPO, GMPO, ...) put the sequence
loss on every valid token; ``seq-mean-token-mean`` then averages them over
sequences exactly.

Usage::

  objective = divrl.Objective.from_config({
      "advantage": {"name": "grpo", "eps": 1e-6},
      "surrogate": {"name": "ppo_clip", "eps_high": 0.28},
      "regularizers": [{"name": "kl", "estimator": "k3", "coef": 1e-3}],
      "aggregation": "token-mean",
  })
  loss, metrics = jax.jit(objective)(batch)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

# Importing the part modules registers their parts.
from divrl import advantages as _advantages  # noqa: F401
from divrl import aggregation as agg
from divrl import divergences as _divergences  # noqa: F401
from divrl import diversity as _diversity  # noqa: F401
from divrl import controllers as _controllers  # noqa: F401
from divrl import corrections as _corrections  # noqa: F401
from divrl import masks as _masks  # noqa: F401
from divrl import rejection as _rejection  # noqa: F401
from divrl import resampling as _resampling  # noqa: F401
from divrl import shaping as _shaping  # noqa: F401
from divrl import surrogates as _surrogates  # noqa: F401
from divrl import registry
from divrl.types import TOKEN_FIELDS, Batch, validate

Array = jax.Array


@functools.lru_cache(maxsize=None)
def _accepts(fn: Callable[..., Any]) -> frozenset[str]:
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return frozenset()
  if any(p.kind is p.VAR_KEYWORD for p in params):
    return frozenset({"key", "axis_name"})
  return frozenset(p.name for p in params)


def _call(fn: Callable[..., Any], *args, **context):
  accepted = _accepts(fn)
  return fn(*args, **{k: v for k, v in context.items() if k in accepted})


def _label(fn: Callable[..., Any]) -> str:
  return getattr(fn, "__name__", type(fn).__name__)


@dataclasses.dataclass(frozen=True)
class Regularizer:
  """A per-token regularizer scaled by ``coef`` in the loss."""

  fn: Callable[..., Array]
  coef: float
  label: str


_TOKEN_FIELDS = ("logprobs",) + TOKEN_FIELDS


def clean_padding(batch: Batch) -> Batch:
  """Replaces per-token values at masked positions by 0.

  Padding may hold any garbage, including inf or NaN. Zeroing it with
  ``where`` before any arithmetic keeps both values and gradients of padded
  positions exactly zero.
  """
  keep = batch.response_mask.astype(jnp.float32) > 0
  updates = {}
  for name in _TOKEN_FIELDS:
    x = getattr(batch, name)
    if x is not None:
      updates[name] = jnp.where(keep, x, jnp.zeros((), x.dtype))
  return batch.replace(**updates)


@dataclasses.dataclass(frozen=True)
class Objective:
  """A policy objective composed from parts; see the module docstring."""

  advantage: Callable[..., Array]
  surrogate: Callable[..., Any]
  regularizers: tuple[Regularizer, ...] = ()
  token_weights: tuple[Callable[..., Array], ...] = ()
  aggregation: Callable[..., agg.Aggregate] = agg.token_mean
  transforms: tuple[Callable[..., Batch], ...] = ()

  @classmethod
  def from_config(cls, config: Any) -> "Objective":
    """Builds an objective from a mapping or ``ml_collections.ConfigDict``.

    Keys: ``advantage``, ``surrogate`` (required), ``transforms`` (a list of
    specs), ``regularizers`` (a list of specs, each with a ``coef`` and
    optionally a ``label``), ``token_weights`` (a list of specs) and
    ``aggregation`` (default ``"token-mean"``). Each
    spec is a registered name, a mapping ``{"name": ..., **hyperparameters}``,
    or a callable.
    """
    if hasattr(config, "to_dict"):
      config = config.to_dict()
    if not isinstance(config, Mapping):
      raise ValueError("objective config must be a mapping, got"
                       f" {type(config).__name__}.")
    allowed = {"transforms", "advantage", "surrogate", "regularizers",
               "token_weights", "aggregation"}
    for key in config:
      if key not in allowed:
        raise ValueError(f"unknown objective config key {key!r}; allowed:"
                         f" {', '.join(sorted(allowed))}.")
    for key in ("advantage", "surrogate"):
      if key not in config:
        raise ValueError(f"objective config needs an {key!r} entry.")
    regs = []
    for spec in config.get("regularizers", ()) or ():
      regs.append(_make_regularizer(spec))
    weights = tuple(registry.make("token_weight", s)
                    for s in config.get("token_weights", ()) or ())
    transforms = tuple(registry.make("transform", s)
                       for s in config.get("transforms", ()) or ())
    return cls(
        transforms=transforms,
        advantage=registry.make("advantage", config["advantage"]),
        surrogate=registry.make("surrogate", config["surrogate"]),
        regularizers=tuple(regs),
        token_weights=weights,
        aggregation=registry.make("aggregation",
                                  config.get("aggregation", "token-mean")),
    )

  # -- stages ---------------------------------------------------------------

  def transform(self, batch: Batch, key: Array | None = None, *,
                axis_name=None, coefs: Mapping[str, Any] | None = None
                ) -> Batch:
    """Applies the transforms in order (on whole groups).

    Transforms whose signature has ``coefs`` receive the call-time
    coefficient overrides (e.g. ``kl_in_reward`` reads ``"kl_in_reward"``).
    """
    for fn, k in zip(self.transforms, self._keys("transforms", key)):
      batch = _call(fn, batch, key=k, axis_name=axis_name, coefs=coefs)
      if not isinstance(batch, Batch):
        raise ValueError(f"transform {_label(fn)!r} must return a Batch, got"
                         f" {type(batch).__name__}.")
    return batch

  def advantages(self, batch: Batch, *, axis_name=None) -> Array:
    """Per-token advantages ``[B,T]`` of an already transformed batch."""
    if batch.advantages is not None:
      return batch.advantages
    adv = _call(self.advantage, batch, axis_name=axis_name)
    if adv.shape != batch.logprobs.shape:
      raise ValueError(f"advantage part {_label(self.advantage)!r} returned"
                       f" shape {adv.shape}, expected {batch.logprobs.shape}.")
    return jax.lax.stop_gradient(adv) * batch.mask

  def with_advantages(self, batch: Batch, key: Array | None = None, *,
                      axis_name=None,
                      coefs: Mapping[str, Any] | None = None) -> Batch:
    """Transforms ``batch`` and fills in its advantages, ready to be split.

    The returned batch carries the transformed rewards and mask; the
    objective does not transform a batch whose advantages are set.
    """
    validate(batch)
    batch = clean_padding(batch)
    tkey = None if key is None else jax.random.fold_in(key, 1)
    self._check_coefs(coefs)
    if self.transforms:  # transforms may change the mask: clean again
      batch = clean_padding(self.transform(batch, tkey, axis_name=axis_name,
                                           coefs=coefs))
    return batch.replace(advantages=self.advantages(batch,
                                                    axis_name=axis_name))

  def aggregates(self, batch: Batch, key: Array | None = None, *,
                 axis_name=None, coefs: Mapping[str, Any] | None = None):
    """The loss and metrics as un-normalised ``Aggregate``s.

    Sum these over micro-batches (``aggregation.combine``) or mesh axes
    (``aggregation.psum``), then ``aggregation.finalize`` them.

    Args:
      batch: the batch; if its advantages are unset it must hold whole groups.
      key: PRNG key, needed when a part is random.
      axis_name: mesh axis to reduce over inside ``shard_map``.
      coefs: overrides of regularizer coefficients by label, e.g. from an
        adaptive controller's state (may be traced values).

    Returns:
      ``(loss Aggregate, {metric name: Aggregate})``.
    """
    if batch.advantages is None:
      batch = self.with_advantages(batch, key, axis_name=axis_name,
                                   coefs=coefs)
    else:
      validate(batch)
      batch = clean_padding(batch)
    mask = batch.mask
    adv = batch.advantages
    self._check_coefs(coefs)
    coefs = dict(coefs or {})

    weights = jnp.ones_like(mask)
    for fn, k in zip(self.token_weights, self._keys("token_weights", key)):
      w = _call(fn, batch, adv, key=k, axis_name=axis_name)
      weights = weights * jax.lax.stop_gradient(w)

    (skey,) = self._keys("surrogate", key)
    out = _call(self.surrogate, batch, adv, key=skey, axis_name=axis_name)
    pg, diagnostics = out if isinstance(out, tuple) else (out, {})
    if pg.shape != mask.shape:
      raise ValueError(f"surrogate {_label(self.surrogate)!r} returned shape"
                       f" {pg.shape}, expected {mask.shape}.")
    pg = pg * weights
    total = pg
    metrics = {"loss/policy": self.aggregation(pg, mask)}
    for reg in self.regularizers:
      value = _call(reg.fn, batch, axis_name=axis_name)
      if value.shape != mask.shape:
        raise ValueError(f"regularizer {reg.label!r} returned shape"
                         f" {value.shape}, expected {mask.shape}.")
      total = total + coefs.get(reg.label, reg.coef) * value
      metrics[f"regularizer/{reg.label}"] = self.aggregation(value, mask)

    loss = self.aggregation(total, mask)
    metrics["loss"] = loss
    token_mean = agg.token_mean
    for name, value in diagnostics.items():
      metrics[f"surrogate/{name}"] = token_mean(value, mask)
    metrics["advantage/mean"] = token_mean(adv, mask)
    metrics["token_weight/mean"] = token_mean(weights, mask)
    if batch.entropy is not None:
      metrics["entropy"] = token_mean(batch.entropy, mask)
    return loss, metrics

  def __call__(self, batch: Batch, key: Array | None = None, *,
               axis_name=None, coefs: Mapping[str, Any] | None = None):
    """``(loss, metrics)`` for one whole batch.

    Inside ``shard_map`` pass ``axis_name``: group statistics and the
    aggregates are summed over that axis before normalising.
    """
    loss, metrics = self.aggregates(batch, key, axis_name=axis_name,
                                    coefs=coefs)
    if axis_name is not None:
      loss, metrics = agg.psum((loss, metrics), axis_name)
    return agg.finalize(loss), agg.finalize_tree(metrics)

  def coef_labels(self) -> tuple[str, ...]:
    """Keys accepted by ``coefs=``: regularizer labels and transform keys."""
    labels = [r.label for r in self.regularizers]
    for fn in self.transforms:
      labels += list(getattr(fn, "coef_keys", ()))
    return tuple(labels)

  def _check_coefs(self, coefs) -> None:
    unknown = set(coefs or {}) - set(self.coef_labels())
    if unknown:
      raise ValueError(f"coefs names unknown regularizer label(s)"
                       f" {sorted(unknown)}; known: {list(self.coef_labels())}.")

  def _keys(self, stage: str, key: Array | None) -> list[Array | None]:
    """One key per part of ``stage``, independent across stages."""
    fns = {"transforms": self.transforms, "token_weights": self.token_weights,
           "surrogate": (self.surrogate,)}[stage]
    needs = [("key" in _accepts(fn)) for fn in fns]
    if not any(needs):
      return [None] * len(fns)
    if key is None:
      names = [_label(f) for f, n in zip(fns, needs) if n]
      raise ValueError(f"part(s) {names} need a PRNG key; pass key= to the"
                       " objective.")
    stage_key = jax.random.fold_in(key, {"transforms": 1, "token_weights": 2,
                                         "surrogate": 3}[stage])
    return list(jax.random.split(stage_key, len(fns)))


def _make_regularizer(spec: Any) -> Regularizer:
  if isinstance(spec, Regularizer):
    return spec
  if hasattr(spec, "to_dict"):
    spec = spec.to_dict()
  if not isinstance(spec, Mapping):
    raise ValueError("a regularizer spec must be a mapping with 'name' (or"
                     f" 'fn') and 'coef', got {type(spec).__name__}.")
  params = dict(spec)
  if "coef" not in params:
    raise ValueError(f"regularizer spec {spec!r} needs a 'coef' entry.")
  coef = float(params.pop("coef"))
  label = params.pop("label", None)
  if "fn" in params:
    fn = params.pop("fn")
    if params:
      raise ValueError(f"unexpected keys {sorted(params)} next to 'fn' in a"
                       " regularizer spec.")
  else:
    fn = registry.make("regularizer", params)
  return Regularizer(fn=fn, coef=coef, label=label or spec.get("name")
                     or _label(fn))


def regularizer(spec: Any, coef: float | None = None,
                label: str | None = None) -> Regularizer:
  """Builds a ``Regularizer`` from a name, mapping or callable."""
  if isinstance(spec, Mapping) or hasattr(spec, "to_dict"):
    return _make_regularizer(spec)
  if coef is None:
    raise ValueError("regularizer needs a coef.")
  fn = registry.make("regularizer", spec)
  return Regularizer(fn=fn, coef=float(coef),
                     label=label or (spec if isinstance(spec, str)
                                     else _label(fn)))


def from_config(config: Any) -> Objective:
  """Alias of ``Objective.from_config``."""
  return Objective.from_config(config)


def build(advantage: Any, surrogate: Any, *,
          regularizers: Sequence[Any] = (), token_weights: Sequence[Any] = (),
          aggregation: Any = "token-mean",
          transforms: Sequence[Any] = ()) -> Objective:
  """Builds an objective from specs (names, mappings or callables)."""
  return Objective.from_config({
      "transforms": list(transforms),
      "advantage": advantage, "surrogate": surrogate,
      "regularizers": list(regularizers), "token_weights": list(token_weights),
      "aggregation": aggregation})
