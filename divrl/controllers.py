"""Coefficient controllers as optax-style pure ``(init, update)`` pairs.

A controller's state is a small pytree of jnp scalars, so it can live in the
training state, be updated inside ``jit`` or ``lax.scan``, and drive a
regularizer through ``objective(batch, coefs={label: value})``::

  kl_ctrl = controllers.adaptive_kl(init_coef=0.001, target=0.1,
                                    horizon=10000)
  state = kl_ctrl.init()
  loss, metrics = objective(batch, coefs={"kl": state.coef})
  state = kl_ctrl.update(state, observed_kl, n_steps=batch_size)

  ent_ctrl = controllers.adaptive_entropy(target=0.2)
  est = ent_ctrl.init()
  loss, metrics = objective(batch, coefs={"entropy": ent_ctrl.loss_coef(est)})
  est = ent_ctrl.update(est, metrics["entropy"])

``update`` returns only the new state (there are no updates to transform).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


class KLControllerState(NamedTuple):
  """The current KL coefficient ``beta`` (float32 scalar)."""

  coef: Array


class KLController(NamedTuple):
  """``init() -> state``; ``update(state, observed_kl, n_steps) -> state``."""

  init: Callable[[], KLControllerState]
  update: Callable[[KLControllerState, Any, Any], KLControllerState]


def fixed_kl(coef: float = 0.001) -> KLController:
  """A constant KL coefficient (verl ``kl_ctrl.type="fixed"``, default
  ``kl_coef=0.001``); ``update`` returns the state unchanged."""
  if coef < 0:
    raise ValueError(f"coef must be >= 0, got {coef}.")

  def init():
    return KLControllerState(coef=jnp.asarray(coef, jnp.float32))

  def update(state, observed_kl=None, n_steps=None):
    del observed_kl, n_steps
    return state

  return KLController(init=init, update=update)


def adaptive_kl(init_coef: float = 0.001, target: float = 0.1,
                horizon: float = 10000) -> KLController:
  """Adaptive KL coefficient of Ziegler et al.

  ``beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps /
  horizon)``, where ``KL`` is the observed KL of the current policy to the
  reference and ``n_steps`` the number of samples (or steps) since the last
  update. Defaults are verl's (``kl_coef=0.001``, ``target_kl=0.1``,
  ``horizon=10000``).

  Reference: Ziegler et al., "Fine-Tuning Language Models from Human
  Preferences", arXiv:1909.08593 (Section 2.2, adaptive KL control).

  Args:
    init_coef: initial ``beta >= 0``.
    target: target KL, ``> 0``.
    horizon: ``> 0``; larger is slower.

  Returns:
    A ``KLController``.
  """
  if init_coef < 0:
    raise ValueError(f"init_coef must be >= 0, got {init_coef}.")
  if target <= 0:
    raise ValueError(f"target must be > 0, got {target}.")
  if horizon <= 0:
    raise ValueError(f"horizon must be > 0, got {horizon}.")

  def init():
    return KLControllerState(coef=jnp.asarray(init_coef, jnp.float32))

  def update(state, observed_kl, n_steps=1):
    kl = jnp.asarray(observed_kl, jnp.float32)
    chex.assert_rank(kl, 0)
    error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
    mult = 1.0 + error * jnp.asarray(n_steps, jnp.float32) / horizon
    return KLControllerState(coef=state.coef * mult)

  return KLController(init=init, update=update)


class EntropyControllerState(NamedTuple):
  """Bonus magnitude ``coef >= 0`` and whether the bonus is applied."""

  coef: Array
  active: Array


class EntropyController(NamedTuple):
  """``init``, ``update(state, entropy)``, ``effective_coef(state)`` (the
  bonus magnitude) and ``loss_coef(state)`` (its negative, for the
  ``entropy`` regularizer)."""

  init: Callable[[], EntropyControllerState]
  update: Callable[[EntropyControllerState, Any], EntropyControllerState]
  effective_coef: Callable[[EntropyControllerState], Array]
  loss_coef: Callable[[EntropyControllerState], Array]


def effective_entropy_coef(state: EntropyControllerState) -> Array:
  """The bonus magnitude applied this step: ``coef`` if active, else 0."""
  return jnp.where(state.active, state.coef, jnp.zeros_like(state.coef))


def adaptive_entropy(init_coef: float = 0.0, target: float = 0.2,
                     delta: float = 0.005, coef_min: float = 0.0,
                     coef_max: float = 1.0,
                     init_active: bool = True) -> EntropyController:
  """Adaptive entropy bonus of Skywork-OR1 as implemented in TRL.

  ``update(state, H)``, with ``H`` the measured entropy (TRL: the global
  token mean over the loss tokens of the last optimizer step):
  ``coef <- min(coef + delta, coef_max)`` if ``H <= target``, else
  ``coef <- max(coef - delta, coef_min)``; ``active <- H <= target``. The
  bonus applied at the next step is ``effective_coef(state) = coef if active
  else 0`` (the bonus acts only if the previous ``H <= target``), i.e. the
  loss gets ``- effective_coef * agg(H)``: pass ``coefs={"entropy":
  loss_coef(state)}`` with ``loss_coef = -effective_coef`` to the
  ``entropy`` regularizer (whose coef is negative for a bonus).

  Defaults are TRL's (``entropy_coef=0.0``, ``entropy_target=0.2``,
  ``entropy_coef_delta=0.005``, ``entropy_coef_min/max=0.0/1.0``).
  ``init_active=True`` applies ``init_coef`` before the first measurement
  (our choice; TRL's initial flag was not checked).

  Reference: He et al., "Skywork Open Reasoner 1 Technical Report",
  arXiv:2505.22312 (adaptive entropy control).

  Returns:
    An ``EntropyController``.
  """
  if delta < 0:
    raise ValueError(f"delta must be >= 0, got {delta}.")
  if not 0 <= coef_min <= coef_max:
    raise ValueError(f"need 0 <= coef_min <= coef_max, got coef_min="
                     f"{coef_min}, coef_max={coef_max}.")
  if not coef_min <= init_coef <= coef_max:
    raise ValueError(f"init_coef must lie in [coef_min, coef_max] = "
                     f"[{coef_min}, {coef_max}], got {init_coef}.")

  def init():
    return EntropyControllerState(coef=jnp.asarray(init_coef, jnp.float32),
                                  active=jnp.asarray(bool(init_active)))

  def update(state, entropy):
    h = jnp.asarray(entropy, jnp.float32)
    chex.assert_rank(h, 0)
    low = h <= target
    coef = jnp.where(low, jnp.minimum(state.coef + delta, coef_max),
                     jnp.maximum(state.coef - delta, coef_min))
    return EntropyControllerState(coef=coef.astype(jnp.float32), active=low)

  def loss_coef(state):
    return -effective_entropy_coef(state)

  return EntropyController(init=init, update=update,
                           effective_coef=effective_entropy_coef,
                           loss_coef=loss_coef)


def effective_coef(state: EntropyControllerState) -> Array:
  """Alias of ``effective_entropy_coef``: the entropy bonus magnitude to apply
  this step (``coef`` if the previous entropy was ``<= target``, else 0)."""
  return effective_entropy_coef(state)


# --- Reference-model refresh -------------------------------------------------


def reference_mixup(params: Any, ref_params: Any, alpha: float = 0.6) -> Any:
  """Soft reference update ``ref <- alpha * params + (1 - alpha) * ref``.

  A pure function of two pytrees with the same structure; every leaf of the
  result has the dtype of the corresponding ``ref_params`` leaf (the mix is
  computed in float32 or wider). ``alpha = 1`` copies the policy (a hard
  reference reset), ``alpha = 0`` keeps the reference. How often to apply it
  is the caller's choice: TRL's ``sync_ref_model`` applies it every
  ``ref_model_sync_steps = 512`` optimizer steps with ``ref_model_mixup_alpha
  = 0.6``; inside ``jit`` use ``lax.cond(step % k == 0, ...)``.

  Reference: Gorbatovski et al., "Learn Your Reference Model for Real Good
  Alignment", arXiv:2404.09656 (TR-DPO soft update, ``alpha`` weighting the
  current policy).

  Args:
    params: the current policy parameters (any pytree of arrays).
    ref_params: the reference parameters, same tree structure and shapes.
    alpha: mixing weight of the policy, in ``[0, 1]``.

  Returns:
    The new reference parameters.

  Raises:
    ValueError: if a concrete ``alpha`` is outside ``[0, 1]`` or the trees
      differ (a traced ``alpha`` is not checked).
  """
  if not isinstance(alpha, jax.core.Tracer) and not 0.0 <= float(alpha) <= 1.0:
    raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
  p_leaves, p_def = jax.tree.flatten(params)
  r_leaves, r_def = jax.tree.flatten(ref_params)
  if p_def != r_def:
    raise ValueError("reference_mixup needs params and ref_params with the"
                     f" same tree structure, got {p_def} and {r_def}.")
  out = []
  for p, r in zip(p_leaves, r_leaves):
    p, r = jnp.asarray(p), jnp.asarray(r)
    chex.assert_equal_shape([p, r])
    dtype = jnp.promote_types(r.dtype, jnp.float32)
    mixed = (alpha * p.astype(dtype) + (1.0 - alpha) * r.astype(dtype))
    out.append(mixed.astype(r.dtype))
  return jax.tree.unflatten(r_def, out)
