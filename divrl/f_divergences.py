"""f-divergence regularizers: exact over the vocabulary, or sampled.

Every divergence here is ``D_f(pi || ref) = sum_y ref(y) f(pi(y) / ref(y))``
for a convex generator ``f`` with ``f(1) = 0``, per position (the next-token
distributions given the prefix). With ``u = pi / ref``:

=====================  =================================================  ======  =======
name                   ``f(u)``                                           f'(1)   f''(1)
=====================  =================================================  ======  =======
``reverse_kl``         ``u log u`` (``KL(pi || ref)``)                    1       1
``forward_kl``         ``-log u`` (``KL(ref || pi)``)                     -1      1
``js``                 ``(u log u - (1+u) log((1+u)/2)) / 2``             0       1/4
``alpha``              ``(u^(1-a) - (1-a) u - a) / (a (a-1))``            0       1
``chi_square``         ``(u - 1)^2`` (Pearson)                            0       2
``total_variation``    ``|u - 1| / 2``                                    0       --
``hellinger``          ``(sqrt(u) - 1)^2 / 2`` (squared Hellinger)        0       1/4
=====================  =================================================  ======  =======

The alpha family is DPH-RL's (``a -> 0`` reverse KL, ``a -> 1`` forward KL,
``a = 1/2`` four times the squared Hellinger, ``a = -1`` half the chi-square).
``js`` is the standard Jensen-Shannon divergence (at most ``log 2``); DPH-RL's
code uses twice this generator (``u log u - (u+1) log((u+1)/2)``), so its
``eta`` is our ``coef / 2``.

**Exact** (``exact_<name>`` regularizers). The data path serves each of these
per token over the whole vocabulary (``Batch.reverse_kl`` ... ``hellinger``,
``divrl.ops.token_statistics`` with the reference hidden states), recomputed
from the current parameters in the update: the regularizer's gradient is the
analytic gradient of the per-position divergence. A general generator ``f``
is served by ``divrl.ops.token_statistics(outputs="f_divergence",
generator=f)`` (see its docstring for where float32 overflows), not from a
config: the data path serves named divergences.

**Sampled** (``f_divergence_estimate``, ``sampled_f_divergence``,
``dph_rehearsal``). From the log-ratio ``d = log pi(y) - log ref(y)`` at a
sampled token (``u = exp(d)``):

==================  ====================================  =====================================
estimator           on samples of ``pi``                  on samples of ``ref``
==================  ====================================  =====================================
``direct``          ``f(u) / u``                          ``f(u)``
``cv``              ``(f(u) - f'(1) (u - 1)) / u``        ``f(u) - f'(1) (u - 1)``
``quadratic``       ``f''(1) d^2 / 2``                    ``f''(1) d^2 / 2``
==================  ====================================  =====================================

Bias and variance, per position:

* ``direct`` is unbiased (``E_pi[f(u)/u] = E_ref[f(u)] = D_f``). Near
  ``pi = ref`` it is ``f'(1) d + O(d^2)``: variance ``f'(1)^2 Var(d)``,
  first order in the log-ratio, and it takes both signs (for the KLs this is
  Schulman's ``k1``).
* ``cv`` adds the zero-mean control variate ``f'(1) (1/u - 1)`` (``E_pi[1/u]
  = 1``; ``E_ref[u] = 1`` on reference samples): still unbiased, and
  non-negative by convexity (``f(u) >= f'(1)(u - 1)``). Near ``pi = ref`` it
  is ``f''(1) d^2 / 2 + O(d^3)``: variance of order ``E[d^4]``. For the
  reverse KL on policy samples it is ``k3 = e^-d - 1 + d``; for the forward
  KL on reference samples it is DPH-RL's ``u - log u - 1``. Where ``f'(1) =
  0`` it equals ``direct``. Far from ``pi = ref`` the variance is that of
  ``f(u)/u`` and can be infinite (chi-square on policy samples has second
  moment ``sum pi^3 / ref^2``).
* ``quadratic`` is biased: its mean is ``D_f`` to second order in ``d`` (bias
  ``O(E|d|^3)``), with the low variance of ``d^2`` (the KLs' ``k2``). It is
  refused for ``total_variation`` (``f`` is not twice differentiable at 1).

**Gradients.** On reference samples the sampling distribution does not
depend on the parameters, so the estimator placed in the loss has expected
gradient ``grad D_f`` (per position). On policy samples it does not (the
loss-placed ``k3`` gives ``grad KL(ref || pi)``, see ``divrl.divergences``):
``sampled_f_divergence`` therefore returns, by default
(``gradient="score"``), the estimate's value plus the score-function term
``sg(f'(u)) (log pi - sg(log pi))``, whose expected gradient is exactly
``grad D_f = E_pi[f'(u) grad log pi]`` (``tests/test_f_divergences.py``
checks it by enumeration); ``gradient="pathwise"`` differentiates the
estimate with the sample held fixed, as verl and TRL do for the KL.

References:
  Ali and Silvey, "A General Class of Coefficients of Divergence of One
  Distribution from Another" (1966) (f-divergences).
  Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/
  kl-approx.html (k1, k2, k3).
  Li et al., "The Choice of Divergence: A Neglected Key to Mitigating
  Diversity Collapse in Reinforcement Learning with Verifiable Reward",
  arXiv:2509.07430 (DPH-RL: generators on reference samples).
  Laidlaw et al., "Correlated Proxies: A New Definition and Improved
  Mitigation for Reward Hacking", arXiv:2403.03185 (chi-square
  regularization toward the base policy).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from divrl import groups
from divrl.registry import above, at_least, between, excluding, register
from divrl.sequences import on_last_token
from divrl.surrogates import ppo_clip
from divrl.types import Batch, behaviour_logprobs

sg = jax.lax.stop_gradient

Array = jax.Array

ESTIMATORS = ("direct", "cv", "quadratic")
SAMPLES = ("policy", "reference")


@dataclasses.dataclass(frozen=True)
class Generator:
  """A convex ``f`` with ``f(1) = 0``, in log space.

  Attributes:
    name: the table name.
    f_log: ``f(exp(d))`` as a function of ``d = log u`` (stable forms).
    df1: ``f'(1)``.
    d2f1: ``f''(1)``, or None where ``f`` is not twice differentiable at 1.
    dfu_log: ``f'(exp(d))`` as a function of ``d`` (the score weight).
  """

  name: str
  f_log: Callable[[Array], Array]
  df1: float
  d2f1: float | None
  dfu_log: Callable[[Array], Array]


def _js(d):
  # (u log u - (1+u) log((1+u)/2)) / 2 with u = e^d.
  return 0.5 * (jnp.exp(d) * d - (1.0 + jnp.exp(d)) * (
      jnp.logaddexp(0.0, d) - math.log(2.0)))


def generator(name: str, *, alpha: float = 0.5) -> Generator:
  """The generator ``name`` of the module table (``alpha`` for ``"alpha"``).

  Raises:
    ValueError: for an unknown name, or ``alpha`` in ``{0, 1}`` or not finite.
  """
  if name == "reverse_kl":
    return Generator(name, lambda d: jnp.exp(d) * d, 1.0, 1.0,
                     lambda d: d + 1.0)
  if name == "forward_kl":
    return Generator(name, lambda d: -d, -1.0, 1.0, lambda d: -jnp.exp(-d))
  if name == "js":
    return Generator(name, _js, 0.0, 0.25,
                     lambda d: 0.5 * (math.log(2.0) + d
                                      - jnp.logaddexp(0.0, d)))
  if name == "alpha":
    a = float(alpha)
    if not math.isfinite(a) or a in (0.0, 1.0):
      raise ValueError(f"alpha must be finite and not 0 or 1 (0 is"
                       f" reverse_kl, 1 is forward_kl), got {alpha!r}.")
    return Generator(
        name, lambda d: (jnp.exp((1.0 - a) * d) - (1.0 - a) * jnp.exp(d) - a)
        / (a * (a - 1.0)), 0.0, 1.0,
        lambda d: (jnp.exp(-a * d) - 1.0) / (-a))
  if name == "chi_square":
    return Generator(name, lambda d: jnp.expm1(d) ** 2, 0.0, 2.0,
                     lambda d: 2.0 * jnp.expm1(d))
  if name == "total_variation":
    return Generator(name, lambda d: 0.5 * jnp.abs(jnp.expm1(d)), 0.0, None,
                     lambda d: 0.5 * jnp.sign(d))
  if name == "hellinger":
    return Generator(name, lambda d: 0.5 * jnp.expm1(0.5 * d) ** 2, 0.0,
                     0.25, lambda d: 0.5 * (1.0 - jnp.exp(-0.5 * d)))
  raise ValueError(f"generator: unknown divergence {name!r}; known: "
                   f"{', '.join(GENERATORS)}.")


GENERATORS = ("reverse_kl", "forward_kl", "js", "alpha", "chi_square",
              "total_variation", "hellinger")


def f_divergence_estimate(logprobs: Array, ref_logprobs: Array,
                          divergence: str = "reverse_kl", *,
                          estimator: str = "cv", samples: str = "policy",
                          alpha: float = 0.5,
                          log_ratio_clip: float | None = None) -> Array:
  """Per-token sampled estimate of ``D_f(pi || ref)`` (the module tables).

  Args:
    logprobs: ``[B,T]`` log-probs of the sampled tokens under ``pi``.
    ref_logprobs: ``[B,T]`` log-probs of the same tokens under ``ref``.
    divergence: a ``GENERATORS`` name.
    estimator: ``"direct"``, ``"cv"`` or ``"quadratic"``.
    samples: ``"policy"`` (tokens drawn from ``pi``) or ``"reference"``
      (drawn from ``ref``, e.g. rehearsal samples).
    alpha: the order of ``"alpha"``.
    log_ratio_clip: clip ``d`` to ``[-c, c]`` first (a bias where it
      binds, and no gradient there), or None. The estimators grow like
      ``e^|d|`` (chi-square like ``e^2|d|``): unclipped they overflow float32
      for ``|d|`` above about 44.

  Returns:
    ``[B,T]`` float32 estimates (differentiable in ``logprobs``).

  Raises:
    ValueError: for an unknown name, or ``quadratic`` with a generator
      that is not twice differentiable at 1.
  """
  chex.assert_equal_shape([logprobs, ref_logprobs])
  gen = generator(divergence, alpha=alpha)
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got"
                     f" {estimator!r}.")
  if samples not in SAMPLES:
    raise ValueError(f"samples must be one of {SAMPLES}, got {samples!r}.")
  d = (logprobs - ref_logprobs).astype(jnp.float32)
  if log_ratio_clip is not None:
    d = jnp.clip(d, -log_ratio_clip, log_ratio_clip)
  if estimator == "quadratic":
    if gen.d2f1 is None:
      raise ValueError(f"estimator 'quadratic' needs f''(1); the"
                       f" {divergence!r} generator has none.")
    return 0.5 * gen.d2f1 * d * d
  value = gen.f_log(d)
  if estimator == "cv" and gen.df1:
    value = value - gen.df1 * jnp.expm1(d)
  if samples == "policy":
    value = value * jnp.exp(-d)
  return value


@register("regularizer", "sampled_f_divergence", reads=("ref_logprobs",),
          domains={"alpha": excluding(0, 1), "log_ratio_clip": above(0),
                   "coef": at_least(0)})
def sampled_f_divergence_part(batch: Batch, *, divergence: str = "reverse_kl",
                              estimator: str = "cv", alpha: float = 0.5,
                              gradient: str = "score",
                              log_ratio_clip: float | None = 20.0) -> Array:
  """A sampled f-divergence to the reference on the policy's own tokens.

  The value is ``f_divergence_estimate(..., samples="policy")`` (see the
  module docstring for the bias and variance of each ``estimator``). With
  ``gradient="score"`` the term ``sg(f'(u)) (log pi - sg(log pi))`` is added
  (value 0), so that the expected gradient of the per-token loss is the
  gradient of the per-position ``D_f(pi || ref)``; ``"pathwise"``
  differentiates the estimate with the sample fixed (for ``reverse_kl`` with
  ``cv`` that is verl's ``low_var_kl``, whose expected gradient is that of
  ``KL(ref || pi)``). ``log_ratio_clip`` (verl's 20 for ``low_var_kl``)
  bounds the log-ratio first; see ``f_divergence_estimate``.

  References:
    "Approximating KL Divergence" (2020); Ali and Silvey (1966); see the
    module docstring.
  """
  if gradient not in ("score", "pathwise"):
    raise ValueError(f"gradient must be 'score' or 'pathwise', got"
                     f" {gradient!r}.")
  lp = batch.logprobs
  kw = dict(estimator=estimator, alpha=alpha, log_ratio_clip=log_ratio_clip)
  if gradient == "pathwise":
    return f_divergence_estimate(lp, batch.ref_logprobs, divergence, **kw)
  d = jax.lax.stop_gradient(lp - batch.ref_logprobs)
  if log_ratio_clip is not None:
    d = jnp.clip(d, -log_ratio_clip, log_ratio_clip)
  value = f_divergence_estimate(jax.lax.stop_gradient(lp),
                                batch.ref_logprobs, divergence, **kw)
  weight = generator(divergence, alpha=alpha).dfu_log(d)
  return value + weight * (lp - jax.lax.stop_gradient(lp))


def reference_rows(batch: Batch) -> Array:
  """``[B]`` bool: rows sampled from the reference (``sample_source == 1``)."""
  return batch.sample_source == 1


@register("regularizer", "dph_rehearsal",
          reads=("reference_samples", "ref_logprobs"),
          domains={"alpha": excluding(0, 1), "log_ratio_clip": above(0),
                   "coef": at_least(0)})
def dph_rehearsal_part(batch: Batch, *, divergence: str = "forward_kl",
                       alpha: float = 0.5,
                       log_ratio_clip: float | None = 20.0) -> Array:
  """DPH-RL rehearsal: a mass-covering f-divergence on reference samples.

  On the rows sampled from the reference policy (``Batch.sample_source ==
  1``, with the reference log-probs the data path stores), the per-token
  ``cv`` estimate ``f(u) - f'(1)(u - 1)``, ``u = pi / ref`` at the token;
  0 on the policy's rows. Reference samples do not depend on the
  parameters, so its expected gradient is ``grad D_f(pi || ref)`` per
  position. ``forward_kl`` gives DPH-F's ``u - log u - 1``; ``js`` the
  standard JS generator (half of DPH's ``js_low_var``); ``alpha`` DPH's
  alpha generator. DPH-RL adds it with ``coef`` ``eta = 0.01`` (token mean
  over rehearsal tokens) to a PPO loss on the policy's rows: pair it with the
  ``policy_samples_only`` token weight (recipe ``dph_rl``).
  ``log_ratio_clip``: as verl's ``low_var_kl``, which DPH's code calls.

  References:
    "The Choice of Divergence: A Neglected Key to Mitigating Diversity
    Collapse in Reinforcement Learning with Verifiable Reward",
    arXiv:2509.07430.
  """
  if divergence not in ("forward_kl", "js", "alpha"):
    raise ValueError(f"divergence must be a mass-covering generator"
                     f" ('forward_kl', 'js' or 'alpha'), got {divergence!r}.")
  value = f_divergence_estimate(batch.logprobs, batch.ref_logprobs,
                                divergence, estimator="cv",
                                samples="reference", alpha=alpha,
                                log_ratio_clip=log_ratio_clip)
  return jnp.where(reference_rows(batch)[:, None], value, 0.0)


@register("token_weight", "policy_samples_only", reads=("reference_samples",))
def policy_samples_only_part(batch: Batch, advantages: Array) -> Array:
  """Token weight 1 on the policy's own samples and 0 on reference samples
  (``Batch.sample_source == 1``): the policy-gradient surrogate learns from
  the policy's rows only, as DPH-RL's ``L_exp`` (rehearsal rows enter
  through ``dph_rehearsal``).

  References:
    "The Choice of Divergence: A Neglected Key to Mitigating Diversity
    Collapse in Reinforcement Learning with Verifiable Reward",
    arXiv:2509.07430.
  """
  del advantages
  keep = ~reference_rows(batch)
  return jnp.broadcast_to(keep[:, None], batch.logprobs.shape).astype(
      jnp.float32)


@register("regularizer", "sequence_chi_square", reads=("ref_logprobs",),
          domains={"log_ratio_clip": above(0), "coef": at_least(0)})
def sequence_chi_square_part(batch: Batch, *, log_ratio_clip: float = 20.0
                             ) -> Array:
  """Sequence-level ``chi^2(pi || ref)`` from the policy's samples.

  ``chi^2 = E_pi[pi(y) / ref(y)] - 1``: each sampled sequence contributes
  ``u_i - 1`` with ``u_i = exp(sum_t m (log pi - log ref))`` (unbiased), on
  its last valid token; its gradient is the score-function form ``sg(2 u_i)
  sum_t m log pi`` (``grad chi^2 = 2 E_pi[u grad log pi(y)]``), placed on
  every token. With ``aggregation="seq-mean-token-sum"`` the loss is the
  mean over sequences of ``u_i - 1`` and its expected gradient is exactly
  ``grad chi^2`` of the sequence distributions; other aggregations rescale
  it. ``log_ratio_clip`` bounds the summed log-ratio before ``exp`` (the
  estimator is unbounded; the clip is a bias, stated).

  Inspired by Correlated Proxies' occupancy-measure chi-square
  regularization (they estimate it with a discriminator); we chose the
  sequence-level likelihood-ratio estimate.

  References:
    "Correlated Proxies: A New Definition and Improved Mitigation for Reward
    Hacking", arXiv:2403.03185.
  """
  mask = batch.mask
  d = jnp.sum(mask * (batch.logprobs - batch.ref_logprobs), axis=1)
  d = jax.lax.stop_gradient(jnp.clip(d, -log_ratio_clip, log_ratio_clip))
  u = jnp.exp(d)
  value = on_last_token(u - 1.0, batch.response_mask)
  lp = batch.logprobs
  score = (2.0 * u)[:, None] * (lp - jax.lax.stop_gradient(lp)) * mask
  return value + score


def _exact_part(name: str, field: str, formula: str):
  def part(batch: Batch) -> Array:
    return getattr(batch, field)

  part.__name__ = f"exact_{name}_part"
  part.__qualname__ = part.__name__
  part.__doc__ = (
      f"The exact per-token {formula} over the whole vocabulary "
      f"(``Batch.{field}``), recomputed from the current parameters in the "
      "update: its gradient is the analytic gradient of the per-position "
      "divergence. The loss adds ``coef`` times it.\n\n"
      "  References:\n"
      "    Ali and Silvey, \"A General Class of Coefficients of Divergence of"
      " One Distribution from Another\" (1966); DPH-RL, arXiv:2509.07430.\n")
  return register("regularizer", f"exact_{name}", reads=(field,),
                  domains={"coef": at_least(0)})(part)


EXACT = {
    "reverse_kl": ("reverse_kl", "reverse KL ``KL(pi || ref)``"),
    "forward_kl": ("forward_kl", "forward KL ``KL(ref || pi)``"),
    "js": ("js", "Jensen-Shannon divergence (at most ``log 2``)"),
    "alpha": ("alpha_divergence", "alpha-divergence (DPH-RL's family, order"
              " ``statistics.alpha``)"),
    "chi_square": ("chi_square", "Pearson chi-square ``sum (pi - ref)^2 /"
                   " ref``"),
    "total_variation": ("total_variation", "total variation ``0.5 sum |pi -"
                        " ref|`` (at most 1)"),
    "hellinger": ("hellinger", "squared Hellinger distance ``1 - sum sqrt(pi"
                  " ref)`` (at most 1)"),
}
for _name, (_field, _formula) in EXACT.items():
  _exact_part(_name, _field, _formula)
del _name, _field, _formula

__all__ = ["ESTIMATORS", "EXACT", "GENERATORS", "Generator",
           "f_divergence_estimate", "generator", "reference_rows"]


# --- Lp-Reg -----------------------------------------------------------------


def lp_reg_selection(logprobs: Array, proxy_logprobs: Array,
                     advantages: Array, mask: Array, *,
                     quantile: float = 0.01, axis_name=None) -> Array:
  """Lp-Reg's regularised tokens, bool ``[B,T]``.

  A valid token is selected when its advantage is negative, its log-prob is
  at most the ``quantile`` of the log-probs of the valid negative-advantage
  tokens (NumPy's linear quantile, over the whole batch slice, all devices
  of ``axis_name``), and it is below the proxy's (``log pi < log q``, so
  tokens the proxy drops, ``log q = -inf``, never qualify). The selection is
  a constant of the parameters (it reads ``stop_gradient`` log-probs).
  """
  chex.assert_equal_shape([logprobs, proxy_logprobs, advantages, mask])
  lp = jax.lax.stop_gradient(logprobs)
  negative = (mask > 0) & (advantages < 0)
  threshold = groups.masked_quantile(
      groups.all_gather(lp, axis_name).reshape(-1),
      groups.all_gather(negative, axis_name).reshape(-1), quantile)
  # No negative token anywhere: the quantile is NaN and nothing is selected.
  return negative & (lp <= threshold) & (lp < proxy_logprobs)


def lp_reg_loss(logprobs: Array, old_logprobs: Array, proxy_logprobs: Array,
                advantages: Array, mask: Array, *, coef: float = 1.0,
                quantile: float = 0.01, eps_low: float = 0.2,
                eps_high: float = 0.2, log_ratio_clip: float | None = 20.0,
                axis_name=None):
  """Lp-Reg per token: PPO clip, except on the selected tokens
  (``lp_reg_selection``), which get ``-A rho + coef * k3(log pi, log q)``
  (unclipped ratio ``rho = pi / pi_old``; ``k3(l, l_q) = exp(l_q - l) - (l_q
  - l) - 1``, the low-variance estimate of ``KL(q || pi)`` at the sampled
  token). Returns ``(loss [B,T], diagnostics)`` with the selected share as
  ``"lp_reg_frac"``.
  """
  if coef < 0:
    raise ValueError(f"coef must be >= 0, got {coef}.")
  if not 0.0 <= quantile <= 1.0:
    raise ValueError(f"quantile must lie in [0, 1], got {quantile}.")
  clipped, diagnostics = ppo_clip(
      logprobs, old_logprobs, advantages, eps_low=eps_low, eps_high=eps_high,
      log_ratio_clip=log_ratio_clip)
  selected = lp_reg_selection(logprobs, proxy_logprobs, advantages, mask,
                              quantile=quantile, axis_name=axis_name)
  rho = diagnostics["ratio"] * jnp.exp(logprobs - sg(logprobs))
  lq = jnp.where(selected, proxy_logprobs, sg(logprobs))   # finite everywhere
  d = lq - logprobs
  regularised = -sg(advantages) * rho + coef * (jnp.exp(d) - d - 1.0)
  loss = jnp.where(selected, regularised, clipped)
  diagnostics = dict(diagnostics, lp_reg_frac=selected.astype(jnp.float32))
  return loss, diagnostics


@register("surrogate", "lp_reg", reads=("old_min_p_logprob",),
          domains={"coef": at_least(0), "quantile": between(0, 1),
                   "eps_low": at_least(0), "eps_high": at_least(0),
                   "log_ratio_clip": above(0)})
def lp_reg_part(batch: Batch, advantages: Array, *, coef: float = 1.0,
                quantile: float = 0.01, eps_low: float = 0.2,
                eps_high: float = 0.2, log_ratio_clip: float | None = 20.0,
                axis_name=None):
  """Lp-Reg: PPO clip, but the lowest-probability negative-advantage tokens
  are pulled toward a min-p proxy of the behaviour policy instead of being
  pushed down (``lp_reg_loss``). The proxy ``q`` is ``pi_old`` min-p
  filtered at ``statistics.min_p`` (``kappa = 0.02``) and renormalised
  (``Batch.old_min_p_logprob``); on the tokens with ``A < 0``, ``log pi`` in
  the lowest ``quantile`` (1%) of the negative tokens of the batch slice and
  ``log pi < log q``, the loss is ``-A rho + coef k3(log pi, log q)``
  (``coef = 1``), elsewhere the clipped surrogate. Exact to the released
  code (``compute_policy_loss_lp_reg``, ``apply_min_p``): its positive
  branch is off by default and not built; its on-policy scripts set the
  clip range to ``[0, 10]`` (clipping off), ours defaults to PPO's 0.2, and
  the quantile is over the micro-batch as in the code. Use token-mean
  aggregation.

  References:
    "Low-probability Tokens Sustain Exploration in Reinforcement Learning
    with Verifiable Reward", arXiv:2510.03222.
  """
  return lp_reg_loss(batch.logprobs, behaviour_logprobs(batch),
                     batch.old_min_p_logprob, advantages, batch.mask,
                     coef=coef, quantile=quantile, eps_low=eps_low,
                     eps_high=eps_high, log_ratio_clip=log_ratio_clip,
                     axis_name=axis_name)
