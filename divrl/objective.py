"""Composable objectives: advantage -> token weights -> surrogate ->
regularizers -> aggregation -> ``(loss, metrics)``.

An ``Objective`` is built from parts, either functions or registered names
(``divrl.registry``). The parts and what the objective passes them:

==============  ==================================================  =========
kind            call                                                returns
==============  ==================================================  =========
transform       ``fn(batch, key=..., axis_name=..., carry=...)``    ``Batch``
advantage       ``fn(batch, axis_name=..., carry=...)``             ``[B,T]``
token_weight    ``fn(batch, advantages, key=..., axis_name=...)``   ``[B,T]``
surrogate       ``fn(batch, advantages, key=..., axis_name=...)``   ``[B,T]``
                                                                    or
                                                                    ``([B,T],
                                                                    dict)``
regularizer     ``fn(batch, axis_name=..., carry=...)``             ``[B,T]``
aggregation     ``fn(loss, mask)``                                  ``Aggregate``
==============  ==================================================  =========

``axis_name``, ``key``, ``coefs`` and ``carry`` are passed only to parts whose
signature has them, so a user part can be a plain ``def my_part(batch): ...``.

**Two stages.** The *prepare* stage runs once per batch, on whole groups:
the transforms in order (they may change rewards, e.g. reward shaping or KL
in the reward, or the response mask, e.g. filters; the mask is also every
aggregation's denominator), then the advantage (``Objective.prepare``). The
*update* stage runs on any slice of the prepared batch (micro-batches,
devices): token weights multiply the surrogate's per-token loss (not the
denominators, and not the regularizers), and the total per-token loss
``surrogate * weights + sum_j coef_j * regularizer_j`` is aggregated once with
the objective's mode. Sequence-level losses (GSPO, GMPO, ...) put the
sequence loss on every valid token; ``seq-mean-token-mean`` then averages
them over sequences exactly.

**Inputs.** Each part declares the batch inputs it reads
(``divrl.registry.declare``); ``Objective.requires`` is their union, split by
stage, so that a trainer computes exactly those statistics.

**Carried state.** Parts with a ``divrl.registry.State`` keep a carry across
steps: ``init_carry()`` creates it, ``prepare`` updates it once per batch and
returns the new carry, and the update stage reads it. The carry is a dict
keyed by the part's place in the objective (``"advantage"``,
``"transforms[0]"``, ``"regularizers[kl]"``, ...).

Usage::

  objective = divrl.Objective.from_config({
      "advantage": {"name": "grpo", "eps": 1e-6},
      "surrogate": {"name": "ppo_clip", "eps_high": 0.28},
      "regularizers": {"kl": {"estimator": "k3", "coef": 1e-3}},
      "aggregation": "token-mean",
  })
  loss, metrics = jax.jit(objective)(batch)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from divrl import aggregation as agg
from divrl import registry
from divrl.types import TOKEN_FIELDS, Batch, check_inputs, check_values, validate

Array = jax.Array

PREPARE_KINDS = ("transform", "advantage")
UPDATE_KINDS = ("token_weight", "surrogate", "regularizer")


@functools.lru_cache(maxsize=None)
def _accepts(fn: Callable[..., Any]) -> frozenset[str]:
  return registry._accepts(fn)  # pylint: disable=protected-access


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


@dataclasses.dataclass(frozen=True)
class PartUse:
  """One part of an objective, as ``Objective.parts`` lists them."""

  kind: str
  slot: str           # carry key: "advantage", "transforms[0]", ...
  label: str          # how errors name it
  fn: Callable[..., Any]

  @property
  def declaration(self) -> registry.Declaration:
    return registry.declaration(self.fn)

  @property
  def stage(self) -> str:
    return "prepare" if self.kind in PREPARE_KINDS else "update"


@dataclasses.dataclass(frozen=True)
class Requirements:
  """The union of what an objective's parts declare they read.

  Attributes:
    prepare: inputs read by the transforms and the advantage, on the batch
      of the behaviour policy, and by the carry updates of stateful
      update-stage parts (they run in the prepare stage).
    update: inputs read by the token weights, the surrogate and the
      regularizers, on the parameters being trained.
    key: some part needs a PRNG key.
    stateful: some part keeps a carry across steps.
    readers: input name -> labels of the parts that read it.
  """

  prepare: frozenset[str]
  update: frozenset[str]
  key: bool
  stateful: bool
  readers: Mapping[str, tuple[str, ...]]

  @property
  def inputs(self) -> frozenset[str]:
    return self.prepare | self.update


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

    The one form (``docs/objective_api.md``):

    * ``advantage``, ``surrogate`` (required) and ``aggregation`` (default
      ``"token-mean"``): a spec, i.e. a registered name, a mapping ``{"name":
      ..., **hyperparameters}``, or a callable;
    * ``transforms``: a **list** of specs, applied in order (order matters:
      a filter before or after a shaping sees different rewards);
    * ``token_weights``: a **mapping** ``{label: spec}`` (they multiply, so
      order does not matter; the label addresses them from the command line);
    * ``regularizers``: a **mapping** ``{label: spec}`` whose specs also hold
      a ``coef``.

    In the two mappings a spec without ``"name"`` uses its label as the
    registered name: ``{"kl": {"estimator": "k3", "coef": 0.01}}``.
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
    transforms = config.get("transforms") or []
    if isinstance(transforms, Mapping) or isinstance(transforms, str):
      raise ValueError("objective config 'transforms' must be a list of specs"
                       " (applied in order), got"
                       f" {type(transforms).__name__}.")
    regs = [_make_regularizer(spec, label) for label, spec in
            _labelled(config, "regularizers").items()]
    weights = [registry.make("token_weight", _named(spec, label),
                             where=f"objective.token_weights.{label}")
               for label, spec in _labelled(config, "token_weights").items()]
    return cls(
        transforms=tuple(registry.make("transform", s,
                                       where=f"objective.transforms[{i}]")
                         for i, s in enumerate(transforms)),
        advantage=registry.make("advantage", config["advantage"],
                                where="objective.advantage"),
        surrogate=registry.make("surrogate", config["surrogate"],
                                where="objective.surrogate"),
        regularizers=tuple(regs),
        token_weights=tuple(weights),
        aggregation=registry.make("aggregation",
                                  config.get("aggregation", "token-mean"),
                                  where="objective.aggregation"),
    )

  # -- what the parts need ----------------------------------------------------

  @property
  def parts(self) -> tuple[PartUse, ...]:
    """Every part with its kind, carry slot and label, in call order."""
    out = [PartUse("transform", f"transforms[{i}]", _part_label(fn), fn)
           for i, fn in enumerate(self.transforms)]
    out.append(PartUse("advantage", "advantage", _part_label(self.advantage),
                       self.advantage))
    out += [PartUse("token_weight", f"token_weights[{i}]", _part_label(fn), fn)
            for i, fn in enumerate(self.token_weights)]
    out.append(PartUse("surrogate", "surrogate", _part_label(self.surrogate),
                       self.surrogate))
    out += [PartUse("regularizer", f"regularizers[{r.label}]", r.label, r.fn)
            for r in self.regularizers]
    return tuple(out)

  @property
  def min_group_size(self) -> tuple[int, str | None]:
    """The smallest group the parts can learn from, and the part that sets
    it: the largest value of a ``group_size`` hyperparameter (pass@k's
    ``k``), or ``(1, None)``."""
    best = (1, None)
    for p in self.parts:
      key = p.declaration.group_size
      if key is None:
        continue
      value = registry.bound_value(p.fn, key)
      if isinstance(value, int) and value > best[0]:
        best = (value, f"objective.{p.slot} ({p.label}): {key} = {value}")
    return best

  def check_values(self, batch: Batch) -> Batch:
    """The checked mode for this objective: ``divrl.check_values`` on the
    host, with the group size its parts need (``min_group_size``). Call it
    outside ``jit``, before a compiled step; returns ``batch``."""
    need, part = self.min_group_size
    return check_values(batch, min_group_size=need, needed_by=part or "")

  @property
  def requires(self) -> Requirements:
    """The union of the parts' declarations, split by stage."""
    stages = {"prepare": set(), "update": set()}
    readers: dict[str, list[str]] = {}
    key = stateful = False
    for p in self.parts:
      decl = p.declaration
      stages[p.stage] |= decl.reads
      if decl.state is not None:
        stages["prepare"] |= decl.reads
      for name in sorted(decl.reads):
        readers.setdefault(name, []).append(f"{p.kind} {p.label!r}")
      key |= decl.key
      stateful |= decl.state is not None
    return Requirements(frozenset(stages["prepare"]),
                        frozenset(stages["update"]), key, stateful,
                        {k: tuple(v) for k, v in readers.items()})

  def init_carry(self) -> dict[str, Any]:
    """The initial carry of every stateful part, keyed by slot."""
    return {p.slot: p.declaration.state.init() for p in self.parts
            if p.declaration.state is not None}

  # -- stages ---------------------------------------------------------------

  def prepare(self, batch: Batch, key: Array | None = None, *,
              carry: Mapping[str, Any] | None = None, axis_name=None,
              coefs: Mapping[str, Any] | None = None
              ) -> tuple[Batch, dict[str, Any]]:
    """The prepare stage: transforms, advantages and the carry update.

    Args:
      batch: whole groups (group statistics are taken over it).
      key: PRNG key, needed when a part is random.
      carry: the carry of the stateful parts (default ``init_carry()``).
      axis_name: mesh axis to reduce over inside ``shard_map``.
      coefs: call-time overrides of coefficients (see ``aggregates``).

    Returns:
      ``(batch, carry)``: the transformed batch with its advantages set,
      ready to be split into micro-batches, and the updated carry.
    """
    validate(batch)
    self._check_coefs(coefs)
    carry = dict(self.init_carry() if carry is None else carry)
    batch = clean_padding(batch)
    tkey = None if key is None else jax.random.fold_in(key, 1)
    uses = {p.slot: p for p in self.parts}
    for i, (fn, k) in enumerate(zip(self.transforms,
                                    self._keys("transforms", tkey))):
      use = uses[f"transforms[{i}]"]
      state = self._advance(use, carry, batch, axis_name)
      batch = _call(fn, batch, key=k, axis_name=axis_name, coefs=coefs,
                    carry=state)
      if not isinstance(batch, Batch):
        raise ValueError(f"transform {use.label!r} must return a Batch, got"
                         f" {type(batch).__name__}.")
    if self.transforms:  # transforms may change the mask: clean again
      batch = clean_padding(batch)
    use = uses["advantage"]
    state = self._advance(use, carry, batch, axis_name)
    adv = _call(self.advantage, batch, axis_name=axis_name, carry=state)
    if adv.shape != batch.logprobs.shape:
      raise ValueError(f"advantage part {use.label!r} returned shape"
                       f" {adv.shape}, expected {batch.logprobs.shape}.")
    batch = batch.replace(advantages=jax.lax.stop_gradient(adv) * batch.mask)
    for use in self.parts:
      if use.stage == "update" and use.declaration.state is not None:
        self._advance(use, carry, batch, axis_name)
    return batch, carry

  def with_advantages(self, batch: Batch, key: Array | None = None, *,
                      axis_name=None,
                      coefs: Mapping[str, Any] | None = None,
                      carry: Mapping[str, Any] | None = None) -> Batch:
    """``prepare`` without the carry: the batch with its advantages set.

    The returned batch carries the transformed rewards and mask; the
    objective does not transform a batch whose advantages are set.
    """
    return self.prepare(batch, key, carry=carry, axis_name=axis_name,
                        coefs=coefs)[0]

  def aggregates(self, batch: Batch, key: Array | None = None, *,
                 axis_name=None, coefs: Mapping[str, Any] | None = None,
                 carry: Mapping[str, Any] | None = None):
    """The loss and metrics as un-normalised ``Aggregate``s.

    Sum these over micro-batches (``aggregation.combine``) or mesh axes
    (``aggregation.psum``), then ``aggregation.finalize`` them.

    Args:
      batch: the batch; if its advantages are unset it must hold whole groups
        (it is prepared first).
      key: PRNG key, needed when a part is random.
      axis_name: mesh axis to reduce over inside ``shard_map``.
      coefs: overrides of regularizer coefficients by label, e.g. from an
        adaptive controller's state (may be traced values).
      carry: the carry after ``prepare`` (read by stateful update-stage
        parts; default ``init_carry()``).

    Returns:
      ``(loss Aggregate, {metric name: Aggregate})``.
    """
    if batch.advantages is None:
      batch, carry = self.prepare(batch, key, carry=carry,
                                  axis_name=axis_name, coefs=coefs)
    else:
      validate(batch)
      batch = clean_padding(batch)
    carry = self.init_carry() if carry is None else carry
    uses = {p.slot: p for p in self.parts}
    mask = batch.mask
    adv = batch.advantages
    self._check_coefs(coefs)
    coefs = dict(coefs or {})

    weights = jnp.ones_like(mask)
    for i, (fn, k) in enumerate(zip(self.token_weights,
                                    self._keys("token_weights", key))):
      state = self._read(uses[f"token_weights[{i}]"], carry, batch)
      w = _call(fn, batch, adv, key=k, axis_name=axis_name, carry=state)
      weights = weights * jax.lax.stop_gradient(w)

    (skey,) = self._keys("surrogate", key)
    state = self._read(uses["surrogate"], carry, batch)
    out = _call(self.surrogate, batch, adv, key=skey, axis_name=axis_name,
                carry=state)
    pg, diagnostics = out if isinstance(out, tuple) else (out, {})
    if pg.shape != mask.shape:
      raise ValueError(f"surrogate {uses['surrogate'].label!r} returned shape"
                       f" {pg.shape}, expected {mask.shape}.")
    pg = pg * weights
    total = pg
    metrics = {"loss/policy": self.aggregation(pg, mask)}
    for reg in self.regularizers:
      state = self._read(uses[f"regularizers[{reg.label}]"], carry, batch)
      value = _call(reg.fn, batch, axis_name=axis_name, carry=state)
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
               axis_name=None, coefs: Mapping[str, Any] | None = None,
               carry: Mapping[str, Any] | None = None):
    """``(loss, metrics)`` for one whole batch.

    Inside ``shard_map`` pass ``axis_name``: group statistics and the
    aggregates are summed over that axis before normalising. Stateful parts
    start from ``carry`` (default ``init_carry()``); the updated carry is not
    returned (use ``prepare``).
    """
    loss, metrics = self.aggregates(batch, key, axis_name=axis_name,
                                    coefs=coefs, carry=carry)
    if axis_name is not None:
      loss, metrics = agg.psum((loss, metrics), axis_name)
    return agg.finalize(loss), agg.finalize_tree(metrics)

  def coef_labels(self) -> tuple[str, ...]:
    """Keys accepted by ``coefs=``: regularizer labels and transform keys."""
    labels = [r.label for r in self.regularizers]
    for fn in self.transforms:
      labels += list(getattr(fn, "coef_keys", ()))
    return tuple(labels)

  # -- helpers ----------------------------------------------------------------

  def _check_coefs(self, coefs) -> None:
    unknown = set(coefs or {}) - set(self.coef_labels())
    if unknown:
      raise ValueError(f"coefs names unknown regularizer label(s)"
                       f" {sorted(unknown)}; known:"
                       f" {list(self.coef_labels())}.")

  @staticmethod
  def _advance(use: PartUse, carry: dict[str, Any], batch: Batch, axis_name):
    """Checks ``use``'s inputs; updates and returns its carry (or None)."""
    check_inputs(batch, use.declaration.reads, f"{use.kind} {use.label!r}")
    state = use.declaration.state
    if state is None:
      return None
    if use.slot not in carry:
      raise ValueError(f"carry has no entry {use.slot!r} for the stateful"
                       f" {use.kind} {use.label!r}; start from"
                       " Objective.init_carry().")
    carry[use.slot] = _call(state.update, carry[use.slot], batch,
                            axis_name=axis_name)
    return carry[use.slot]

  @staticmethod
  def _read(use: PartUse, carry: Mapping[str, Any], batch: Batch):
    check_inputs(batch, use.declaration.reads, f"{use.kind} {use.label!r}")
    if use.declaration.state is None:
      return None
    if use.slot not in carry:
      raise ValueError(f"carry has no entry {use.slot!r} for the stateful"
                       f" {use.kind} {use.label!r}.")
    return carry[use.slot]

  def _keys(self, stage: str, key: Array | None) -> list[Array | None]:
    """One key per part of ``stage``, independent across stages."""
    fns = {"transforms": self.transforms, "token_weights": self.token_weights,
           "surrogate": (self.surrogate,)}[stage]
    needs = [registry.declaration(fn).key for fn in fns]
    if not any(needs):
      return [None] * len(fns)
    if key is None:
      names = [_part_label(f) for f, n in zip(fns, needs) if n]
      raise ValueError(f"part(s) {names} need a PRNG key; pass key= to the"
                       " objective.")
    stage_key = jax.random.fold_in(key, {"transforms": 1, "token_weights": 2,
                                         "surrogate": 3}[stage])
    return list(jax.random.split(stage_key, len(fns)))


def _part_label(fn: Callable[..., Any]) -> str:
  """The registered name of a part, else its function name."""
  reg = getattr(fn, "registered_as", None)
  return reg[1] if reg else _label(fn)


def _labelled(config: Mapping[str, Any], slot: str) -> dict[str, Any]:
  specs = config.get(slot) or {}
  if not isinstance(specs, Mapping):
    raise ValueError(
        f"objective config {slot!r} must be a mapping {{label: spec}}, got"
        f" {type(specs).__name__}; e.g. {{'kl': {{'estimator': 'k3',"
        " 'coef': 0.01}}.")
  return dict(specs)


def _named(spec: Any, label: str) -> Any:
  """A mapping spec gets ``name=label`` unless it names itself."""
  if hasattr(spec, "to_dict"):
    spec = spec.to_dict()
  if isinstance(spec, Mapping) and "name" not in spec and "fn" not in spec:
    return {"name": label, **spec}
  return spec


def _make_regularizer(spec: Any, label: str | None = None) -> Regularizer:
  if isinstance(spec, Regularizer):
    return spec
  if hasattr(spec, "to_dict"):
    spec = spec.to_dict()
  if not isinstance(spec, Mapping):
    raise ValueError("a regularizer spec must be a mapping with 'name' (or"
                     f" 'fn') and 'coef', got {type(spec).__name__}.")
  params = dict(_named(spec, label) if label else spec)
  if "coef" not in params:
    raise ValueError(f"regularizer spec {spec!r} needs a 'coef' entry.")
  coef = params.pop("coef")
  label = params.pop("label", None) or label
  if "fn" in params:
    fn = params.pop("fn")
    if params:
      raise ValueError(f"unexpected keys {sorted(params)} next to 'fn' in a"
                       " regularizer spec.")
  else:
    label = label or params.get("name")
    fn = registry.make("regularizer", params,
                       where=f"objective.regularizers.{label}")
  label = label or _label(fn)
  _check_coef(fn, coef, f"objective.regularizers.{label} ({_part_label(fn)})")
  return Regularizer(fn=fn, coef=float(coef), label=label)


def _check_coef(fn: Callable[..., Any], coef: Any, where: str) -> None:
  """A regularizer's ``coef`` is a finite number in the regularizer's
  declared ``"coef"`` domain, if any."""
  domain = registry.declaration(fn).domains.get("coef", registry.FINITE)
  if isinstance(coef, (bool, str)) or not hasattr(coef, "__float__"):
    raise ValueError(f"{where}: coef must be a number, got"
                     f" {type(coef).__name__} {coef!r}.")
  why = domain.problem(float(coef))
  if why:
    raise ValueError(f"{where}: coef {why}.")


def regularizer(spec: Any, coef: float | None = None,
                label: str | None = None) -> Regularizer:
  """Builds a ``Regularizer`` from a name, mapping or callable."""
  if isinstance(spec, Mapping) or hasattr(spec, "to_dict"):
    return _make_regularizer(spec, label)
  if coef is None:
    raise ValueError("regularizer needs a coef.")
  fn = registry.make("regularizer", spec)
  label = label or (spec if isinstance(spec, str) else _part_label(fn))
  _check_coef(fn, coef, f"regularizer {label!r}")
  return Regularizer(fn=fn, coef=float(coef), label=label)


def from_config(config: Any) -> Objective:
  """Alias of ``Objective.from_config``."""
  return Objective.from_config(config)


def build(advantage: Any, surrogate: Any, *,
          regularizers: Sequence[Any] = (), token_weights: Sequence[Any] = (),
          aggregation: Any = "token-mean",
          transforms: Sequence[Any] = ()) -> Objective:
  """Builds an objective from Python specs (names, mappings or callables).

  ``regularizers`` are ``Regularizer``s or mappings with ``name`` and
  ``coef`` (see ``regularizer``); the others are part specs.
  """
  return Objective(
      transforms=tuple(registry.make("transform", s) for s in transforms),
      advantage=registry.make("advantage", advantage),
      surrogate=registry.make("surrogate", surrogate),
      regularizers=tuple(r if isinstance(r, Regularizer) else
                         _make_regularizer(r) for r in regularizers),
      token_weights=tuple(registry.make("token_weight", s)
                          for s in token_weights),
      aggregation=registry.make("aggregation", aggregation))
