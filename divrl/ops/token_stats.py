"""Per-token statistics of a softmax policy head, without ``[N,V]`` logits.

``token_statistics`` takes the final hidden states ``h [N,d]`` and the
unembedding ``W [d,V]`` (optionally a bias ``b [V]``) and returns per-token
statistics of ``pi = softmax(z)`` with ``z = (h @ W + b) / temperature``:

=====================  ===================================================
name                   value per token
=====================  ===================================================
``logprob``            ``log pi(target)``
``entropy``            ``H = -sum_v pi_v log pi_v``
``top_p_entropy``      entropy of ``pi`` renormalised over the top-p set
``sum_pi_squared``     ``S = sum_v pi_v^2`` (optimal token baseline)
``vocab_mean_logprob`` ``(1/V) sum_v log pi_v`` (ROVER)
``min_p_logprob``      ``log q(target)``, ``q`` = ``pi`` min-p filtered and
                       renormalised (Lp-Reg's proxy); ``-inf`` if dropped
``reverse_kl``         ``KL(pi || ref) = sum_v pi_v (log pi_v - log ref_v)``
``forward_kl``         ``KL(ref || pi) = sum_v ref_v (log ref_v - log pi_v)``
``js``                 ``0.5 KL(pi || M) + 0.5 KL(ref || M)``,
                       ``M = (pi + ref) / 2``
``alpha_divergence``   ``sum_v ref_v f_a(pi_v / ref_v)``,
                       ``f_a(u) = (u^(1-a) - (1-a) u - a) / (a (a-1))``
``chi_square``         ``sum_v (pi_v - ref_v)^2 / ref_v`` (Pearson)
``total_variation``    ``0.5 sum_v |pi_v - ref_v|``
``hellinger``          ``1 - sum_v sqrt(pi_v ref_v)`` (squared Hellinger)
``f_divergence``       ``sum_v ref_v f(pi_v / ref_v)`` for a generator ``f``
=====================  ===================================================

Every divergence is ``D_f(pi || ref) = sum_v ref_v f(pi_v / ref_v)`` for a
convex ``f`` with ``f(1) = 0``: reverse KL ``f = u log u``, forward KL
``f = -log u``, JS ``f = (u log u - (1+u) log((1+u)/2)) / 2``. The alpha
family follows DPH-RL's generator (arXiv:2509.07430): ``a -> 0`` is the
reverse KL, ``a -> 1`` the forward KL, ``a = 1/2`` is ``4 * hellinger``, and
``a = -1`` is ``chi_square / 2``; ``a`` in ``{0, 1}`` is refused (use the KL
outputs). The named divergences are evaluated in log space per vocabulary
entry (``exp(a log pi + b log ref)``), never through ``u = pi / ref``.
``f_divergence`` evaluates the caller's ``f`` at ``u = exp(log pi - log
ref)``: that is where a general generator cannot be served exactly in
float32 — ``u`` overflows to ``inf`` where ``ref_v < pi_v e^-88`` and then
``ref_v f(u)`` is ``inf`` or ``0 * inf = NaN`` for any ``f`` growing faster
than linearly; use a named output there. ``chi_square`` and the alpha family
for ``a < 0`` are unbounded and overflow to ``inf`` the same way where the
reference puts (almost) no mass on a token the policy likes.
Their gradients: with ``g_v`` the per-entry term (``out = sum_v g_v``),
``dz = a - p sum_v a_v`` with ``a_v = d g_v / d log pi_v`` and ``dz' = b - r
sum_v b_v`` with ``b_v = d g_v / d log ref_v`` (``d`` of ``jnp.abs`` at 0 is
taken as 0 for the total variation).

The reference distribution ``ref = softmax((h' @ W' + b') / temperature)`` is
given by ``ref_hidden``, ``ref_unembedding`` and (optionally) ``ref_bias``.

Memory. The tokens are processed in chunks of ``token_chunk`` rows with
``lax.map`` / ``lax.scan``, so only ``[token_chunk, V]`` float32 logits (and a
few element-wise temporaries of that shape) exist at a time. The function has a
``jax.custom_vjp``: the forward pass saves only the inputs and per-token
statistics (log-sum-exp and the output values); the backward pass recomputes
each chunk's logits and applies the analytic cotangent ``dz`` (see
``_chunk_backward``), then ``dh = dz W^T / T``, ``dW += h^T dz / T`` and
``db += sum_tokens dz / T``. The backward therefore does one more
``[chunk,d] x [d,V]`` matmul than plain autodiff (4 instead of 3), and the
``dW`` accumulator is a float32 ``[d,V]`` carry. We do **not** chunk over the
vocabulary (no online log-sum-exp): on CPU a ``[token_chunk, V]`` tile is
already small for moderate ``token_chunk``, and vocabulary tiling would add a
second pass over ``W`` per token chunk. With ``vocab_axis_name`` the
vocabulary is sharded across devices instead (see below).

Precision. Logits are accumulated in float32 (``preferred_element_type``)
for bfloat16 (or any float) inputs; all softmax arithmetic is float32. In the
backward, ``dz`` is rounded to the dtype of ``W`` (resp. ``h``) before the
matmuls, which accumulate in float32; the returned cotangents have the dtype
of the corresponding input.

Masking. Tokens with ``mask <= 0`` return 0 for every output and receive an
exactly zero gradient; their hidden rows and targets may hold garbage
(including NaN): they are replaced by zeros before any arithmetic. The mask
only selects tokens; it does not weight them.

Top-p entropy. The top-p set of a token is the smallest set of tokens, taken
in order of decreasing probability (ties broken by the lower token id), whose
total mass is ``>= top_p``. The output is the entropy of ``pi`` restricted to
that set and renormalised, i.e. of ``softmax(z_K)``. The set is a
piecewise-constant function of the logits and is **held fixed** for the
gradient: ``dz_v = -g q_v (log q_v + H_K)`` for ``v`` in the set, 0 outside.
It needs a sort over the vocabulary (forward and again in the backward); with
``vocab_axis_name`` each token chunk's log-probs are all-gathered for it, so
this output costs ``[token_chunk, V]`` per device under vocabulary sharding.

Min-p proxy. The min-p set keeps the tokens with ``pi_v >= min_p * max_u
pi_u`` (``min_p`` in ``(0, 1]``; the argmax is always kept), and ``q`` is
``pi`` restricted to it and renormalised: ``min_p_logprob = log pi_t - log
sum_{v in set} pi_v`` when the target is in the set, ``-inf`` (no proxy
mass) when it is not. The set is held fixed for the gradient: ``dz = g
(onehot - q)`` on the set for a kept target, 0 for a dropped one.

Vocabulary sharding. Inside ``jax.shard_map`` with ``W`` (and ``b``, ``W'``,
``b'``) sharded on the vocabulary axis over the mesh axis ``vocab_axis_name``
and the hidden states and targets replicated, pass ``vocab_axis_name``. The
per-shard max, sum-exp and sums are combined with ``lax.pmax`` / ``lax.psum``;
``targets`` are global token ids. Outputs are replicated; ``dh`` is
``psum``-ed inside the backward, ``dW`` and ``db`` stay sharded.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

OUTPUTS = ("logprob", "entropy", "top_p_entropy", "sum_pi_squared",
           "vocab_mean_logprob", "min_p_logprob", "reverse_kl", "forward_kl", "js",
           "alpha_divergence", "chi_square", "total_variation", "hellinger",
           "f_divergence")
REF_OUTPUTS = ("reverse_kl", "forward_kl", "js", "alpha_divergence",
               "chi_square", "total_variation", "hellinger", "f_divergence")
# Divergences evaluated as a sum of per-entry terms g(log pi, log ref).
TERM_OUTPUTS = ("alpha_divergence", "chi_square", "total_variation",
                "hellinger", "f_divergence")
DEFAULT_TOKEN_CHUNK = 256

_LOG2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class _Config:
  outputs: tuple[str, ...]
  temperature: float
  top_p: float | None
  axis_name: str | None
  has_bias: bool
  has_ref: bool
  has_ref_bias: bool
  alpha: float | None = None
  generator: object = None   # a hashable callable f(u), for f_divergence
  min_p: float | None = None


def _term(cfg: _Config, name: str, logp, logr, p, r):
  """The per-entry term ``g(log pi, log ref)`` of a ``TERM_OUTPUTS``
  divergence and its partials ``(g, dg/dlog pi, dg/dlog ref)``."""
  if name == "alpha_divergence":
    a = cfg.alpha
    e = jnp.exp((1.0 - a) * logp + a * logr)
    g = (e - (1.0 - a) * p - a * r) / (a * (a - 1.0))
    return g, (p - e) / a, (e - r) / (a - 1.0)
  if name == "chi_square":
    e = jnp.exp(2.0 * logp - logr)
    return e - 2.0 * p + r, 2.0 * (e - p), r - e
  if name == "total_variation":
    sign = jnp.sign(p - r)
    return 0.5 * jnp.abs(p - r), 0.5 * sign * p, -0.5 * sign * r
  if name == "hellinger":
    e = jnp.exp(0.5 * (logp + logr))
    return 0.5 * (p + r) - e, 0.5 * (p - e), 0.5 * (r - e)
  if name == "f_divergence":
    f = cfg.generator

    def g_of(lp, lr):
      return jnp.exp(lr) * f(jnp.exp(lp - lr))

    g, vjp = jax.vjp(g_of, logp, logr)
    da, db = vjp(jnp.ones_like(g))
    return g, da, db
  raise ValueError(name)


# ----------------------------------------------------------------------------
# Per-chunk forward and backward.
# ----------------------------------------------------------------------------


def _psum(x, axis_name):
  return x if axis_name is None else lax.psum(x, axis_name)


def _logits(h, w, b, temperature):
  z = jnp.dot(h, w, preferred_element_type=jnp.float32)
  if b is not None:
    z = z + b.astype(jnp.float32)[None, :]
  return z / temperature if temperature != 1.0 else z


def _lse(z, axis_name):
  m = jnp.max(z, axis=-1)
  if axis_name is not None:
    m = lax.pmax(m, axis_name)
  m = lax.stop_gradient(m)
  s = _psum(jnp.sum(jnp.exp(z - m[:, None]), axis=-1), axis_name)
  return m + jnp.log(s)


def _vocab_sizes(w, axis_name):
  v_local = w.shape[1]
  if axis_name is None:
    return v_local, v_local, 0
  size = lax.axis_size(axis_name)
  return v_local, v_local * size, lax.axis_index(axis_name) * v_local


def _top_p_set(logp, top_p):
  """Bool ``[c,V]`` membership of the top-p set (ties: lower id first)."""
  order = jnp.argsort(-logp, axis=-1, stable=True)
  p_sorted = jnp.exp(jnp.take_along_axis(logp, order, axis=-1))
  mass_before = jnp.cumsum(p_sorted, axis=-1) - p_sorted
  in_sorted = mass_before < top_p
  in_sorted = in_sorted.at[:, 0].set(True)
  rows = jnp.arange(logp.shape[0])[:, None]
  return jnp.zeros(logp.shape, bool).at[rows, order].set(in_sorted)


def _top_p_parts(logp, top_p):
  keep = _top_p_set(logp, top_p)
  masked = jnp.where(keep, logp, -jnp.inf)
  log_z = jax.nn.logsumexp(masked, axis=-1)
  logq = jnp.where(keep, logp - log_z[:, None], 0.0)
  q = jnp.where(keep, jnp.exp(logq), 0.0)
  h_top = -jnp.sum(q * logq, axis=-1)
  return keep, logq, q, h_top


def _top_p_local(logp, top_p, axis_name, offset, v_local):
  """``_top_p_parts`` on the whole vocabulary, sliced to this shard.

  Under vocabulary sharding the chunk's log-probs are all-gathered (a
  ``[chunk, V]`` array per device, bounded by the token chunk), the set is
  found on the full row (global token ids, so ties break as on one device),
  and the per-token ``(keep, log q, q)`` are sliced back to the local shard.
  """
  if axis_name is None:
    return _top_p_parts(logp, top_p)
  full = lax.all_gather(logp, axis_name, axis=1, tiled=True)
  keep, logq, q, h_top = _top_p_parts(full, top_p)
  # Identical on every shard; pmax is exact and marks it replicated.
  h_top = lax.pmax(h_top, axis_name)
  local = lambda x: lax.dynamic_slice_in_dim(x, offset, v_local, axis=1)  # noqa: E731
  return local(keep), local(logq), local(q), h_top


def _target_logp(logp, tgt, offset, v_local, axis_name):
  """``logp[n, tgt[n]]`` with global target ids (vocabulary-sharded)."""
  local = tgt - offset
  inside = (local >= 0) & (local < v_local)
  idx = jnp.clip(local, 0, v_local - 1)
  zt = jnp.take_along_axis(logp, idx[:, None], axis=-1)[:, 0]
  return _psum(jnp.where(inside, zt, 0.0), axis_name)


def _min_p_parts(logp, target_logp, min_p, axis_name):
  """The min-p set (bool ``[c,V]``), its log-mass ``[c]`` and whether each
  target (of log-prob ``target_logp [c]``) is in it."""
  lmax = jnp.max(logp, axis=-1)
  if axis_name is not None:
    lmax = lax.pmax(lmax, axis_name)
  threshold = lmax + math.log(min_p)
  kept = logp >= threshold[:, None]
  mass = _psum(jnp.sum(jnp.where(kept, jnp.exp(logp), 0.0), axis=-1),
               axis_name)
  return kept, jnp.log(mass), target_logp >= threshold


def _chunk_forward(cfg: _Config, h, w, b, tgt, keep, hr, wr, br):
  """Per-token statistics of one chunk; returns (outputs, residual stats)."""
  ax = cfg.axis_name
  h = jnp.where(keep[:, None] > 0, h, jnp.zeros((), h.dtype))
  z = _logits(h, w, b, cfg.temperature)
  lse = _lse(z, ax)
  logp = z - lse[:, None]
  p = jnp.exp(logp)
  v_local, v_global, offset = _vocab_sizes(w, ax)
  out, res = {}, {"lse": lse}
  want = set(cfg.outputs)
  if {"logprob", "min_p_logprob"} & want:
    lt = _target_logp(logp, tgt, offset, v_local, ax)
  if "logprob" in want:
    out["logprob"] = lt
  if "min_p_logprob" in want:
    _, log_mass, target_kept = _min_p_parts(logp, lt, cfg.min_p, ax)
    out["min_p_logprob"] = jnp.where(target_kept, lt - log_mass, -jnp.inf)
  if "entropy" in want:
    out["entropy"] = -_psum(jnp.sum(p * logp, axis=-1), ax)
  if "sum_pi_squared" in want:
    out["sum_pi_squared"] = _psum(jnp.sum(p * p, axis=-1), ax)
  if "vocab_mean_logprob" in want:
    out["vocab_mean_logprob"] = _psum(jnp.sum(logp, axis=-1), ax) / v_global
  if "top_p_entropy" in want:
    out["top_p_entropy"] = _top_p_local(logp, cfg.top_p, ax, offset,
                                        v_local)[3]
  if cfg.has_ref and any(k in want for k in REF_OUTPUTS):
    hr = jnp.where(keep[:, None] > 0, hr, jnp.zeros((), hr.dtype))
    zr = _logits(hr, wr, br, cfg.temperature)
    lse_r = _lse(zr, ax)
    res["lse_ref"] = lse_r
    logr = zr - lse_r[:, None]
    r = jnp.exp(logr)
    if "reverse_kl" in want:
      out["reverse_kl"] = _psum(jnp.sum(p * (logp - logr), axis=-1), ax)
    if "forward_kl" in want:
      out["forward_kl"] = _psum(jnp.sum(r * (logr - logp), axis=-1), ax)
    if "js" in want:
      logm = jnp.logaddexp(logp, logr) - _LOG2
      kl_pm = _psum(jnp.sum(p * (logp - logm), axis=-1), ax)
      kl_rm = _psum(jnp.sum(r * (logr - logm), axis=-1), ax)
      out["js"] = 0.5 * (kl_pm + kl_rm)
      res["kl_pm"], res["kl_rm"] = kl_pm, kl_rm
    for name in TERM_OUTPUTS:
      if name in want:
        g = _term(cfg, name, logp, logr, p, r)[0]
        out[name] = _psum(jnp.sum(g, axis=-1), ax)
  k = keep > 0
  out = {name: jnp.where(k, v, 0.0) for name, v in out.items()}
  res.update(out)
  return out, res


def _chunk_backward(cfg: _Config, h, w, b, tgt, keep, hr, wr, br, res, g):
  """Analytic ``dz`` (and ``dz'`` for the reference) of one chunk.

  With ``p = softmax(z)``, ``g`` the output cotangent and per token:
    logprob             dz = g (onehot - p)
    entropy             dz = -g p (log p + H)
    sum_pi_squared      dz = 2 g p (p - S)
    vocab_mean_logprob  dz = g (1/V - p)
    top_p_entropy       dz = -g q (log q + H_K) on the set K (held fixed)
    min_p_logprob       dz = g (onehot - q) on the min-p set, for a kept
                        target (held fixed)
    reverse_kl          dz = g p (log p - log r - KL),  dz' = g (r - p)
    forward_kl          dz = g (p - r),  dz' = g r (log r - log p - KL_f)
    js                  dz = g p (u - sum p u),  u = 0.5 log(p / M);
                        dz' = g r (u' - sum r u'),  u' = 0.5 log(r / M)
    TERM_OUTPUTS        dz = g (a - p sum a),  dz' = g (b - r sum b), with
                        a, b the partials of the per-entry term (_term)
  """
  ax = cfg.axis_name
  kb = keep[:, None] > 0
  h = jnp.where(kb, h, jnp.zeros((), h.dtype))
  z = _logits(h, w, b, cfg.temperature)
  logp = z - res["lse"][:, None]
  p = jnp.exp(logp)
  v_local, v_global, offset = _vocab_sizes(w, ax)
  want = set(cfg.outputs)
  # dz = p * a + c, with a, c built up per output (one fused element-wise
  # pass in XLA).
  a = jnp.zeros_like(z)
  c = jnp.zeros_like(z)
  col = lambda x: x[:, None]  # noqa: E731
  if "logprob" in want:
    gl = col(g["logprob"])
    local = tgt - offset
    onehot = (lax.broadcasted_iota(jnp.int32, z.shape, 1)
              == col(local).astype(jnp.int32))
    c = c + jnp.where(onehot, gl, 0.0)
    a = a - gl
  if "entropy" in want:
    ge = col(g["entropy"])
    a = a - ge * (logp + col(res["entropy"]))
  if "sum_pi_squared" in want:
    gs = col(g["sum_pi_squared"])
    a = a + 2.0 * gs * (p - col(res["sum_pi_squared"]))
  if "vocab_mean_logprob" in want:
    gv = col(g["vocab_mean_logprob"])
    c = c + gv / v_global
    a = a - gv
  if "top_p_entropy" in want:
    ks, logq, q, _ = _top_p_local(logp, cfg.top_p, ax, offset, v_local)
    gt = col(g["top_p_entropy"])
    c = c + jnp.where(ks, -gt * q * (logq + col(res["top_p_entropy"])), 0.0)
  if "min_p_logprob" in want:
    kept, log_mass, target_kept = _min_p_parts(
        logp, _target_logp(logp, tgt, offset, v_local, ax), cfg.min_p, ax)
    gm = jnp.where(target_kept, g["min_p_logprob"], 0.0)[:, None]
    q = jnp.where(kept, jnp.exp(logp - log_mass[:, None]), 0.0)
    onehot = (lax.broadcasted_iota(jnp.int32, z.shape, 1)
              == col(tgt - offset).astype(jnp.int32))
    c = c + gm * (jnp.where(onehot, 1.0, 0.0) - q)
  dz_ref = None
  if cfg.has_ref and any(k in want for k in REF_OUTPUTS):
    hr = jnp.where(kb, hr, jnp.zeros((), hr.dtype))
    zr = _logits(hr, wr, br, cfg.temperature)
    logr = zr - res["lse_ref"][:, None]
    r = jnp.exp(logr)
    ar = jnp.zeros_like(zr)
    cr = jnp.zeros_like(zr)
    if "reverse_kl" in want:
      gk = col(g["reverse_kl"])
      a = a + gk * (logp - logr - col(res["reverse_kl"]))
      cr = cr + gk * (r - p)
    if "forward_kl" in want:
      gf = col(g["forward_kl"])
      c = c - gf * r
      a = a + gf
      ar = ar + gf * (logr - logp - col(res["forward_kl"]))
    if "js" in want:
      gj = col(g["js"])
      logm = jnp.logaddexp(logp, logr) - _LOG2
      a = a + gj * (0.5 * (logp - logm) - 0.5 * col(res["kl_pm"]))
      ar = ar + gj * (0.5 * (logr - logm) - 0.5 * col(res["kl_rm"]))
    for name in TERM_OUTPUTS:
      if name in want:
        gt = col(g[name])
        _, da, db = _term(cfg, name, logp, logr, p, r)
        c = c + gt * da
        a = a - gt * col(_psum(jnp.sum(da, axis=-1), ax))
        cr = cr + gt * db
        ar = ar - gt * col(_psum(jnp.sum(db, axis=-1), ax))
    dz_ref = jnp.where(kb, r * ar + cr, 0.0)
    if cfg.temperature != 1.0:
      dz_ref = dz_ref / cfg.temperature
  dz = jnp.where(kb, p * a + c, 0.0)
  if cfg.temperature != 1.0:
    dz = dz / cfg.temperature
  return h, hr, dz, dz_ref


# ----------------------------------------------------------------------------
# custom_vjp over all chunks.  Arrays are pre-chunked: h [C,c,d], tgt [C,c].
# ----------------------------------------------------------------------------


def _forward_all(cfg, h, w, b, tgt, keep, hr, wr, br):
  def body(xs):
    hc, tc, kc, hrc = xs
    return _chunk_forward(cfg, hc, w, b, tc, kc, hrc, wr, br)
  return lax.map(body, (h, tgt, keep, hr))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(cfg, h, w, b, tgt, keep, hr, wr, br):
  return _forward_all(cfg, h, w, b, tgt, keep, hr, wr, br)[0]


def _fused_fwd(cfg, h, w, b, tgt, keep, hr, wr, br):
  out, res = _forward_all(cfg, h, w, b, tgt, keep, hr, wr, br)
  return out, (h, w, b, tgt, keep, hr, wr, br, res)


def _varying_zeros(shape, axis_name):
  z = jnp.zeros(shape, jnp.float32)
  return z if axis_name is None else lax.pcast(z, axis_name, to="varying")


def _matmul(x, y):
  return jnp.dot(x, y, preferred_element_type=jnp.float32)


def _fused_bwd(cfg, saved, g):
  h, w, b, tgt, keep, hr, wr, br, res = saved
  ax = cfg.axis_name
  use_ref = cfg.has_ref and any(k in cfg.outputs for k in REF_OUTPUTS)
  carry0 = {"w": _varying_zeros(w.shape, ax)}
  if b is not None:
    carry0["b"] = _varying_zeros(b.shape, ax)
  if use_ref:
    carry0["wr"] = _varying_zeros(wr.shape, ax)
    if br is not None:
      carry0["br"] = _varying_zeros(br.shape, ax)

  def body(carry, xs):
    hc, tc, kc, hrc, rc, gc = xs
    hc, hrc, dz, dzr = _chunk_backward(cfg, hc, w, b, tc, kc, hrc, wr, br,
                                       rc, gc)
    dh = _matmul(dz.astype(w.dtype), w.T)
    dh = _psum(dh, ax).astype(h.dtype)
    carry = dict(carry)
    carry["w"] = carry["w"] + _matmul(hc.T, dz.astype(hc.dtype))
    if b is not None:
      carry["b"] = carry["b"] + jnp.sum(dz, axis=0)
    dhr = None
    if use_ref:
      dhr = _psum(_matmul(dzr.astype(wr.dtype), wr.T), ax).astype(hr.dtype)
      carry["wr"] = carry["wr"] + _matmul(hrc.T, dzr.astype(hrc.dtype))
      if br is not None:
        carry["br"] = carry["br"] + jnp.sum(dzr, axis=0)
    return carry, (dh, dhr)

  carry, (dh, dhr) = lax.scan(body, carry0, (h, tgt, keep, hr, res, g))
  dw = carry["w"].astype(w.dtype)
  db = None if b is None else carry["b"].astype(b.dtype)
  if hr is None:
    dhr_out = None
  elif use_ref:
    dhr_out = dhr
  else:
    dhr_out = jnp.zeros_like(hr)
  dwr = dbr = None
  if wr is not None:
    dwr = carry["wr"].astype(wr.dtype) if use_ref else jnp.zeros_like(wr)
  if br is not None:
    dbr = carry["br"].astype(br.dtype) if use_ref else jnp.zeros_like(br)
  dtgt = np.zeros(tgt.shape, jax.dtypes.float0)
  return (dh, dw, db, dtgt, jnp.zeros_like(keep), dhr_out, dwr, dbr)


_fused.defvjp(_fused_fwd, _fused_bwd)


# ----------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------


def _check_float(name, x):
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must have a floating dtype, got {x.dtype}.")


def token_statistics(
    hidden: Array,
    unembedding: Array,
    targets: Array,
    *,
    mask: Array | None = None,
    bias: Array | None = None,
    temperature: float = 1.0,
    outputs: Sequence[str] | str = ("logprob",),
    top_p: float | None = None,
    min_p: float | None = None,
    alpha: float | None = None,
    generator=None,
    ref_hidden: Array | None = None,
    ref_unembedding: Array | None = None,
    ref_bias: Array | None = None,
    token_chunk: int = DEFAULT_TOKEN_CHUNK,
    vocab_axis_name: str | None = None,
) -> dict[str, Array]:
  """Per-token statistics of ``softmax((hidden @ unembedding + bias) / T)``.

  Memory-efficient (chunked over tokens, custom VJP with a recomputing
  analytic backward); see the module docstring for the exact definitions,
  gradients, precision, masking and sharding rules.

  Args:
    hidden: ``[N,d]`` float hidden states (flatten ``[B,T,d]`` first).
    unembedding: ``[d,V]`` float unembedding (``V`` local under vocab
      sharding).
    targets: ``[N]`` integer (global) token ids.
    mask: optional ``[N]``; tokens with ``mask <= 0`` return 0 and get zero
      gradient.
    bias: optional ``[V]`` logit bias.
    temperature: static positive Python float dividing the logits.
    outputs: names from ``OUTPUTS`` (a string or a sequence).
    top_p: in ``(0, 1]``; required for ``"top_p_entropy"``.
    min_p: in ``(0, 1]``; required for ``"min_p_logprob"``.
    alpha: static Python float, not 0 or 1; required for
      ``"alpha_divergence"``.
    generator: a hashable elementwise JAX callable ``f(u)``, convex with
      ``f(1) = 0``; required for ``"f_divergence"`` (see the module
      docstring for where it overflows).
    ref_hidden: ``[N,d']`` reference hidden states (for the divergences).
    ref_unembedding: ``[d',V]`` reference unembedding.
    ref_bias: optional ``[V]`` reference logit bias.
    token_chunk: tokens per chunk; only ``[token_chunk, V]`` logits exist at
      once.
    vocab_axis_name: mesh axis over which the vocabulary is sharded (inside
      ``shard_map``), or ``None``.

  Returns:
    A dict mapping each requested name to a ``[N]`` float32 array.

  Raises:
    ValueError: naming the offending argument.
  """
  if isinstance(outputs, str):
    outputs = (outputs,)
  outputs = tuple(outputs)
  if not outputs:
    raise ValueError("outputs must name at least one statistic.")
  for name in outputs:
    if name not in OUTPUTS:
      raise ValueError(f"outputs: unknown statistic {name!r}; allowed:"
                       f" {', '.join(OUTPUTS)}.")
  if len(set(outputs)) != len(outputs):
    raise ValueError(f"outputs has duplicate names: {outputs}.")
  if hidden.ndim != 2:
    raise ValueError(f"hidden must have rank 2 [N,d], got shape"
                     f" {tuple(hidden.shape)}.")
  if unembedding.ndim != 2:
    raise ValueError(f"unembedding must have rank 2 [d,V], got shape"
                     f" {tuple(unembedding.shape)}.")
  _check_float("hidden", hidden)
  _check_float("unembedding", unembedding)
  n, d = hidden.shape
  v = unembedding.shape[1]
  if unembedding.shape[0] != d:
    raise ValueError(f"unembedding must have shape [d={d}, V], got"
                     f" {tuple(unembedding.shape)}.")
  chex.assert_shape(targets, (n,))
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise ValueError(f"targets must be integer, got {targets.dtype}.")
  if mask is not None:
    chex.assert_shape(mask, (n,))
  if bias is not None:
    chex.assert_shape(bias, (v,))
    _check_float("bias", bias)
  if not isinstance(temperature, (int, float)) or isinstance(
      temperature, bool) or not temperature > 0:
    raise ValueError(f"temperature must be a positive Python float, got"
                     f" {temperature!r}.")
  if not isinstance(token_chunk, int) or token_chunk < 1:
    raise ValueError(f"token_chunk must be a positive int, got"
                     f" {token_chunk!r}.")
  if "top_p_entropy" in outputs:
    if top_p is None:
      raise ValueError("top_p must be set for outputs 'top_p_entropy'.")
    if not 0.0 < float(top_p) <= 1.0:
      raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}.")
  if "min_p_logprob" in outputs:
    if min_p is None:
      raise ValueError("min_p must be set for outputs 'min_p_logprob'.")
    if not 0.0 < float(min_p) <= 1.0:
      raise ValueError(f"min_p must lie in (0, 1], got {min_p!r}.")
  if "alpha_divergence" in outputs:
    if (not isinstance(alpha, (int, float)) or isinstance(alpha, bool)
        or not math.isfinite(alpha) or alpha in (0, 1)):
      raise ValueError(f"alpha must be a finite Python float other than 0"
                       f" and 1 for 'alpha_divergence' (0 is the reverse KL,"
                       f" 1 the forward KL), got {alpha!r}.")
  if "f_divergence" in outputs and not callable(generator):
    raise ValueError(f"generator must be a callable f(u) for"
                     f" 'f_divergence', got {generator!r}.")
  need_ref = any(k in outputs for k in REF_OUTPUTS)
  if need_ref:
    for name, x in (("ref_hidden", ref_hidden),
                    ("ref_unembedding", ref_unembedding)):
      if x is None:
        raise ValueError(f"{name} is required for outputs"
                         f" {[k for k in outputs if k in REF_OUTPUTS]}.")
    if ref_hidden.ndim != 2 or ref_hidden.shape[0] != n:
      raise ValueError(f"ref_hidden must have shape [N={n}, d'], got"
                       f" {tuple(ref_hidden.shape)}.")
    if ref_unembedding.shape != (ref_hidden.shape[1], v):
      raise ValueError(f"ref_unembedding must have shape"
                       f" [{ref_hidden.shape[1]}, {v}], got"
                       f" {tuple(ref_unembedding.shape)}.")
    _check_float("ref_hidden", ref_hidden)
    _check_float("ref_unembedding", ref_unembedding)
    if ref_bias is not None:
      chex.assert_shape(ref_bias, (v,))
      _check_float("ref_bias", ref_bias)
  else:
    # Reference inputs are unused; keep them out of the computation.
    ref_hidden = ref_unembedding = ref_bias = None

  cfg = _Config(outputs=outputs, temperature=float(temperature),
                top_p=None if top_p is None else float(top_p),
                axis_name=vocab_axis_name, has_bias=bias is not None,
                has_ref=need_ref, has_ref_bias=ref_bias is not None,
                alpha=(float(alpha) if "alpha_divergence" in outputs
                       else None),
                generator=generator if "f_divergence" in outputs else None,
                min_p=(float(min_p) if "min_p_logprob" in outputs
                       else None))
  if n == 0:
    return {k: jnp.zeros((0,), jnp.float32) for k in outputs}
  chunk = min(token_chunk, n)
  num = -(-n // chunk)
  pad = num * chunk - n
  keep = (jnp.ones((n,), jnp.float32) if mask is None
          else (mask > 0).astype(jnp.float32))

  def chunked(x):
    if x is None:
      return None
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((num, chunk) + x.shape[1:])

  with jax.named_scope("token_statistics"):
    out = _fused(cfg, chunked(hidden), unembedding, bias,
                 chunked(targets.astype(jnp.int32)), chunked(keep),
                 chunked(ref_hidden), ref_unembedding, ref_bias)
  return {k: out[k].reshape(-1)[:n] for k in outputs}


def sequence_statistics(hidden: jax.Array, unembedding: jax.Array,
                        tokens: jax.Array, mask: jax.Array, *,
                        row_shards: int = 1, **kwargs):
  """``token_statistics`` on ``[B,T]`` responses, returning ``[B,T]`` arrays.

  ``hidden [B,T,d]`` are the states that predict ``tokens [B,T]`` (already
  shifted by the caller); ``mask [B,T]`` is the response mask. The outputs
  map onto ``divrl.Batch`` fields: ``logprob`` -> ``logprobs`` (or
  ``ref_logprobs`` from the reference model), ``entropy`` -> ``entropy``,
  ``sum_pi_squared`` -> ``sum_pi_squared``. ``ref_hidden`` in ``kwargs`` may
  be ``[B,T,d]`` too.

  ``row_shards``: split the rows into this many contiguous blocks, each
  scanned on its own (``vmap`` over the blocks; ``B`` must divide). Under
  ``jit`` with the rows sharded over ``n`` devices (GSPMD, e.g. data
  parallelism), pass ``row_shards=n``: each device then scans its own rows'
  token chunks and the unembedding gradient is summed across devices once,
  after the scan. With one block the scan runs over the flattened,
  row-sharded token axis, which GSPMD cannot split across loop iterations:
  every device would compute the unembedding for every token. The values
  are the same either way (``tests/ops/test_token_stats.py``).
  """
  chex.assert_rank([hidden, tokens, mask], [3, 2, 2])
  b, t, d = hidden.shape
  if (not isinstance(row_shards, int) or isinstance(row_shards, bool)
      or row_shards < 1):
    raise ValueError(f"row_shards must be a positive int, got"
                     f" {row_shards!r}.")
  if b % row_shards:
    raise ValueError(f"row_shards = {row_shards} must divide the number of"
                     f" rows of hidden, {b}.")
  ref_hidden = kwargs.pop("ref_hidden", None)
  if ref_hidden is not None:
    chex.assert_rank(ref_hidden, 3)
    chex.assert_equal_shape_prefix([hidden, ref_hidden], 2)

  def one(h, tok, m, hr):
    rows = h.shape[0]
    if hr is not None:
      hr = hr.reshape(rows * t, -1)
    out = token_statistics(h.reshape(rows * t, d), unembedding,
                           tok.reshape(rows * t), mask=m.reshape(rows * t),
                           ref_hidden=hr, **kwargs)
    return {k: v.reshape(rows, t) for k, v in out.items()}

  if row_shards == 1:
    return one(hidden, tokens, mask, ref_hidden)
  blocks = lambda x: None if x is None else x.reshape(
      (row_shards, b // row_shards) + x.shape[1:])
  out = jax.vmap(one)(blocks(hidden), blocks(tokens), blocks(mask),
                      blocks(ref_hidden))
  return {k: v.reshape(b, t) for k, v in out.items()}
