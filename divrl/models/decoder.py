"""A decoder-only transformer (Llama / Qwen2 family) in Flax NNX.

Architecture: token embedding -> ``num_layers`` pre-norm blocks
(RMSNorm -> grouped-query attention with RoPE -> residual, RMSNorm -> SwiGLU
MLP -> residual) -> final RMSNorm -> unembedding (tied to the embedding or a
separate ``[d,V]`` matrix).

Calling ``model(tokens, positions=None, attention_mask=None,
return_hidden=False)`` returns logits ``[B,S,V]``, or the final normed hidden
states ``[B,S,d]`` with ``return_hidden=True``. The latter together with
``model.unembedding()`` feeds ``divrl.ops.token_statistics`` so that full
``[B,S,V]`` logits never need to exist.

Masking. Attention is always causal in the *sequence index*. ``attention_mask``
is either ``[B,S]`` (True/1 = real token, used as a key mask; padding keys are
never attended to) or a full ``[B,S,S]`` query-by-key mask that is combined
with the causal mask. ``positions [B,S]`` give the RoPE positions; for
left-padded prompts pass e.g. ``positions = max(cumsum(mask) - 1, 0)``. Rows
whose keys are all masked (pad queries) produce finite garbage, never NaN.

Sharding. Every parameter carries an ``out_sharding`` PartitionSpec over the
mesh axes ``'fsdp'`` and ``'tensor'`` (read them with
``nnx.get_partition_spec(nnx.state(model))``). When the model is built under
``jax.set_mesh(mesh)`` (and NNX eager sharding is on, the default) the
parameters are placed accordingly at creation; without a mesh they are plain
arrays.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

Array = jax.Array

FSDP = "fsdp"
TENSOR = "tensor"


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 style RoPE frequency scaling."""
  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Shape and numerics of a decoder-only transformer (hashable)."""
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  intermediate_size: int
  head_dim: int | None = None  # defaults to hidden_size // num_heads
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | Mapping[str, Any] | None = None
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = True
  qkv_bias: bool = False
  max_position_embeddings: int = 4096
  dtype: Any = jnp.float32        # compute dtype
  param_dtype: Any = jnp.float32
  initializer_range: float = 0.02
  value_head: bool = False  # a linear critic V(s_t) = h_t . w (see values())
  # Recompute each block's activations in the backward pass (jax.checkpoint
  # per block) instead of keeping them: the teacher-forced forward then
  # keeps one [B,S,d] residual per layer for the backward. Same values.
  remat: bool = False

  def __post_init__(self):
    if self.head_dim is None:
      if self.hidden_size % self.num_heads:
        raise ValueError("hidden_size must be divisible by num_heads when "
                         "head_dim is not given")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    if isinstance(self.rope_scaling, Mapping):
      rs = dict(self.rope_scaling)
      rs.pop("rope_type", None)
      object.__setattr__(self, "rope_scaling", RopeScaling(
          factor=float(rs["factor"]),
          low_freq_factor=float(rs["low_freq_factor"]),
          high_freq_factor=float(rs["high_freq_factor"]),
          original_max_position_embeddings=int(
              rs["original_max_position_embeddings"])))
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")

  @classmethod
  def preset(cls, name: str, **overrides) -> "DecoderConfig":
    """A named configuration; ``overrides`` replace individual fields."""
    if name not in PRESETS:
      raise ValueError(f"unknown decoder preset {name!r}; known: "
                       f"{sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, DecoderConfig] = {
    "tiny": DecoderConfig(
        vocab_size=64, hidden_size=64, num_layers=2, num_heads=4,
        num_kv_heads=2, intermediate_size=128, max_position_embeddings=512),
    # ~25.4M parameters (tied embeddings).
    "small25m": DecoderConfig(
        vocab_size=8192, hidden_size=512, num_layers=6, num_heads=8,
        num_kv_heads=4, intermediate_size=1792, max_position_embeddings=2048),
    # Shapes from the public Hugging Face config.json files.
    "qwen2.5-0.5b": DecoderConfig(
        vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14,
        num_kv_heads=2, intermediate_size=4864, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, qkv_bias=True,
        max_position_embeddings=32768),
    "qwen2.5-1.5b": DecoderConfig(
        vocab_size=151936, hidden_size=1536, num_layers=28, num_heads=12,
        num_kv_heads=2, intermediate_size=8960, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, qkv_bias=True,
        max_position_embeddings=32768),
    "qwen2.5-7b": DecoderConfig(
        vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28,
        num_kv_heads=4, intermediate_size=18944, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=False, qkv_bias=True,
        max_position_embeddings=32768),
    "llama-3.2-1b": DecoderConfig(
        vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32,
        num_kv_heads=8, intermediate_size=8192, head_dim=64,
        rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=32.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0,
                                 original_max_position_embeddings=8192),
        rms_norm_eps=1e-5, tie_word_embeddings=True, qkv_bias=False,
        max_position_embeddings=131072),
}


def param_count(config: DecoderConfig) -> int:
  """Number of parameters of ``Decoder(config)``, computed analytically."""
  c = config
  d, hd = c.hidden_size, c.head_dim
  q, kv = c.num_heads * hd, c.num_kv_heads * hd
  attn = d * q + 2 * d * kv + q * d
  if c.qkv_bias:
    attn += q + 2 * kv
  mlp = 3 * d * c.intermediate_size
  block = attn + mlp + 2 * d
  total = c.vocab_size * d + c.num_layers * block + d
  if not c.tie_word_embeddings:
    total += d * c.vocab_size
  return total


# ----------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------

def rope_frequencies(head_dim: int, theta: float,
                     scaling: RopeScaling | None = None) -> Array:
  """Inverse frequencies ``[head_dim // 2]`` (float32), optionally scaled."""
  inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32)
                         / head_dim))
  if scaling is None:
    return inv
  old = scaling.original_max_position_embeddings
  low_wavelen = old / scaling.low_freq_factor
  high_wavelen = old / scaling.high_freq_factor
  wavelen = 2.0 * math.pi / inv
  # Interpolation weight between "fully scaled" (0) and "unscaled" (1).
  smooth = ((old / wavelen - scaling.low_freq_factor)
            / (scaling.high_freq_factor - scaling.low_freq_factor))
  mixed = (1.0 - smooth) * inv / scaling.factor + smooth * inv
  return jnp.where(wavelen > low_wavelen, inv / scaling.factor,
                   jnp.where(wavelen < high_wavelen, inv, mixed))


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
  """Rotates ``x [B,S,H,D]`` by angles ``positions[b,s] * inv_freq``.

  Uses the "rotate half" layout: dimension ``i`` pairs with ``i + D/2``.
  """
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,S,D/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class LayerCache(NamedTuple):
  """One layer's key/value cache: ``k [B,K,D,L]`` and ``v [B,K,L,D]``.

  ``K`` kv heads, ``D`` head dim, ``L`` slots. Heads lead so that the
  attention contractions take (batch, head) as batch dimensions and read the
  cache as stored (a ``[B,L,K,D]`` cache was copied into that layout by every
  layer at every decode step). Keys put the slots last, so that single-query
  scores reduce over a non-minor axis (``Attention._attend_one``).
  """
  k: Array
  v: Array

  @property
  def length(self) -> int:
    return self.v.shape[2]


def grow_cache(cache: list[LayerCache], length: int) -> list[LayerCache]:
  """``cache`` with zero slots appended up to ``length`` slots."""
  def grow(c: LayerCache) -> LayerCache:
    extra = length - c.length
    if extra < 0:
      raise ValueError(f"length {length} is shorter than the cache "
                       f"({c.length} slots)")
    return LayerCache(
        jnp.pad(c.k, ((0, 0), (0, 0), (0, 0), (0, extra))),
        jnp.pad(c.v, ((0, 0), (0, 0), (0, extra), (0, 0))))
  return [grow(c) for c in cache]


# ----------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------

def _param(value: Array, spec: tuple) -> nnx.Param:
  """A Param annotated with ``spec``; sharded eagerly only under a mesh."""
  eager = (nnx.using_eager_sharding()
           and not jax.sharding.get_abstract_mesh().empty)
  return nnx.Param(value, out_sharding=P(*spec), eager_sharding=eager)


def gather_fsdp(w: Array, spec: tuple) -> Array:
  """``w`` with its ``'fsdp'`` shards gathered, just before it is used.

  Fully sharded data parallelism stores each weight split over ``'fsdp'``
  and gathers it for the matmul; the gradient then reduce-scatters back to
  the shards. Without this constraint GSPMD may instead contract over the
  sharded model dimension and all-reduce the activations of the whole batch
  (``docs/scaling.md`` measures both). Only under a mesh with an ``'fsdp'``
  axis of size > 1 (``jax.set_mesh``); the identity otherwise.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if (mesh.empty or FSDP not in spec or FSDP not in mesh.axis_names
      or mesh.shape[FSDP] == 1):
    return w
  keep = set(mesh.axis_names) - {FSDP}
  return jax.lax.with_sharding_constraint(
      w, P(*(a if a in keep else None for a in spec)))


def _normal(rngs: nnx.Rngs, shape, std, dtype):
  return std * jax.random.normal(rngs.params(), shape, dtype)


class RMSNorm(nnx.Module):
  """``x / sqrt(mean(x^2) + eps) * scale``, computed in float32."""

  def __init__(self, dim: int, eps: float, param_dtype=jnp.float32):
    self.eps = eps
    self.scale = _param(jnp.ones((dim,), param_dtype), (None,))

  @jax.named_scope("rms_norm")
  def __call__(self, x: Array) -> Array:
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True)
                            + self.eps)
    return (xf * self.scale[...].astype(jnp.float32)).astype(x.dtype)


# XLA:CPU runs a float32 ``[M,K] @ [K,N]`` dot with a few rows M (2..32, the
# rows of one decode step) far below both its matmul peak and the memory
# bound. In exploratory timings (not kept in the repo) the weight matmuls of
# one small25m decode step took 24.5 ms as dots at M=8 and 10.2 ms as the
# multiply-reduce of ``skinny_matmul`` over ``[N,K]`` kernels (41 vs 22 ms at
# M=32), tying at M=64; one row (a matrix-vector product) is as fast as a
# dot. End to end, the sampler is 1.30-1.63x faster this way (control table
# in docs/performance.md). Short reductions (small K) cost more than the
# dot: the tiny preset (K = 64) decoded 32 rows 1.5x slower this way
# (exploratory).
SKINNY_MIN_ROWS, SKINNY_MAX_ROWS = 2, 32
SKINNY_MIN_DEPTH = 256


def is_skinny_shape(rows: int, depth: int, row_shards: int = 1) -> bool:
  """Whether a ``[rows, depth]`` input, its rows split over ``row_shards``
  devices, goes through ``skinny_matmul``: 2..32 rows per device and
  ``depth >= 256``."""
  return (SKINNY_MIN_ROWS <= rows // row_shards <= SKINNY_MAX_ROWS
          and depth >= SKINNY_MIN_DEPTH)


def skinny_matmul(x: Array, w_t: Array) -> Array:
  """``x [M,K] @ w_t.T`` for ``w_t [N,K]`` as a multiply and a row reduction.

  The same sums as the dot (in a different order, so float32 results agree
  to rounding). XLA fuses the ``[N,M,K]`` product into the reduction, reads
  each kernel row once for all M rows and vectorizes along K; with the kernel
  in ``[in, out]`` layout the same trick reads it with a stride and is slower
  than the dot, hence ``use_decoding_layout``.
  """
  return jnp.sum(w_t[:, None, :] * x[None, :, :], axis=-1).T


def _is_skinny(x: Array, row_shards: int) -> bool:
  """``is_skinny_shape`` of a 2-D input ``x [M,K]``."""
  return is_skinny_shape(x.shape[0], x.shape[1], row_shards)


class Dense(nnx.Module):
  """``x @ kernel (+ bias)`` with an annotated ``[in, out]`` kernel.

  ``use_decoding_layout`` may add ``kernel_t``, a transposed copy used for
  few-row inputs (``skinny_matmul``) inside one jitted function.
  """

  def __init__(self, din: int, dout: int, spec: tuple, *, use_bias: bool,
               config: DecoderConfig, rngs: nnx.Rngs):
    self.dtype = config.dtype
    self.spec = tuple(spec)
    self.kernel = _param(_normal(rngs, (din, dout), config.initializer_range,
                                 config.param_dtype), spec)
    self.bias = (_param(jnp.zeros((dout,), config.param_dtype), (spec[1],))
                 if use_bias else None)
    self.kernel_t = nnx.data(None)
    self.row_shards = 1

  def __call__(self, x: Array) -> Array:
    # A 2-D dot: with [B,S,d] inputs XLA:CPU writes transposed copies of the
    # activation gradients in the backward pass; flattening first made
    # forward + backward 1.25x faster, same values (results/rl_step.md as of
    # commit ce466b9, measured by a diagnostic since removed).
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).astype(self.dtype)
    if self.kernel_t is not None and _is_skinny(x2, self.row_shards):
      y = skinny_matmul(x2, self.kernel_t[...].astype(self.dtype))
    else:
      y = jnp.dot(x2, gather_fsdp(self.kernel[...], self.spec).astype(
          self.dtype))
    y = y.reshape(*lead, y.shape[-1])
    if self.bias is not None:
      y = y + gather_fsdp(self.bias[...], self.spec[1:]).astype(self.dtype)
    return y


class Attention(nnx.Module):
  """Grouped-query self-attention with RoPE."""

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
    c = config
    self.num_heads, self.num_kv_heads, self.head_dim = (
        c.num_heads, c.num_kv_heads, c.head_dim)
    self.dtype = c.dtype
    d = c.hidden_size
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    self.q_proj = Dense(d, q, (FSDP, TENSOR), use_bias=c.qkv_bias, config=c,
                        rngs=rngs)
    self.k_proj = Dense(d, kv, (FSDP, TENSOR), use_bias=c.qkv_bias, config=c,
                        rngs=rngs)
    self.v_proj = Dense(d, kv, (FSDP, TENSOR), use_bias=c.qkv_bias, config=c,
                        rngs=rngs)
    self.o_proj = Dense(q, d, (TENSOR, FSDP), use_bias=False, config=c,
                        rngs=rngs)
    # Set by use_decoding_layout: q/k/v kernels stacked [q + 2 kv, d].
    self.qkv_t = nnx.data(None)
    self.qkv_bias = nnx.data(None)

  @jax.named_scope("qkv")
  def project(self, x: Array, positions: Array,
              inv_freq: Array) -> tuple[Array, Array, Array]:
    """Queries ``[B,S,H,D]`` and keys/values ``[B,S,K,D]`` (RoPE applied)."""
    b, s, _ = x.shape
    h, k, hd = self.num_heads, self.num_kv_heads, self.head_dim
    x2 = x.reshape(b * s, -1).astype(self.dtype)
    if self.qkv_t is None or not _is_skinny(x2, self.o_proj.row_shards):
      q, kk, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
    else:
      qkv = skinny_matmul(x2, self.qkv_t[...].astype(self.dtype))
      if self.qkv_bias is not None:
        qkv = qkv + self.qkv_bias[...].astype(self.dtype)
      q, kk, v = jnp.split(qkv.reshape(b, s, -1), [h * hd, (h + k) * hd],
                           axis=-1)
    q = apply_rope(q.reshape(b, s, h, hd), positions, inv_freq)
    kk = apply_rope(kk.reshape(b, s, k, hd), positions, inv_freq)
    return q, kk, v.reshape(b, s, k, hd)

  def attend(self, q: Array, kk: Array, v: Array, mask: Array,
             kv_layout: str = "bskd") -> Array:
    """Attention of ``q [B,Sq,H,D]`` over keys and values ``kk, v``.

    ``kv_layout="bskd"``: ``kk, v`` are ``[B,Sk,K,D]``; ``"cache"``: the
    ``LayerCache`` layout, ``kk [B,K,D,Sk]`` and ``v [B,K,Sk,D]``.
    ``mask [B,Sq,Sk]`` is True where a query may attend to a key. Masked
    scores get the most negative float32, so their softmax weight is exactly
    zero whenever a query has at least one allowed key.
    """
    specs = {"bskd": ("bskd", "bskd"), "cache": ("bkds", "bksd")}
    if kv_layout not in specs:
      raise ValueError(f"kv_layout must be one of {sorted(specs)}, got "
                       f"{kv_layout!r}")
    b, sq = q.shape[:2]
    h, k, hd = self.num_heads, self.num_kv_heads, self.head_dim
    g = h // k
    if sq == 1 and kv_layout == "cache":
      with jax.named_scope("attend"):
        out = self._attend_one(q, kk, v, mask).reshape(b, 1, -1)
      with jax.named_scope("o_proj"):
        return self.o_proj(out)
    key_spec, value_spec = specs[kv_layout]
    with jax.named_scope("attend"):
      out = _attention_recomputed(q.reshape(b, sq, k, g, hd), kk, v, mask,
                                  key_spec, value_spec, self.dtype)
    with jax.named_scope("o_proj"):
      return self.o_proj(out.reshape(b, sq, h * hd))

  def _attend_one(self, q: Array, kk: Array, v: Array, mask: Array) -> Array:
    """One query per row over a cache (``kk [B,K,D,Sk]``, ``v [B,K,Sk,D]``).

    Returns ``[B,K,G,D]``. The same sums as ``attend``'s einsums, written as
    multiply-reductions over non-minor axes, which XLA:CPU vectorizes along
    the minor one. The einsums ran as 2 x B*K tiny batched dots per layer at
    a few GB/s; reducing the scores over the minor head dim (a ``[B,K,Sk,D]``
    key cache) paid one horizontal sum per score. Measured end to end on
    small25m in docs/performance.md.
    """
    b = q.shape[0]
    k, hd = self.num_kv_heads, self.head_dim
    g = self.num_heads // k
    q = q.reshape(b, k, g, hd, 1).astype(jnp.float32)
    scores = jnp.sum(q * kk[:, :, None].astype(jnp.float32), axis=3)
    scores = scores / math.sqrt(hd)                            # [B,K,G,Sk]
    scores = jnp.where(mask[:, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    return jnp.sum(probs[..., None] * v[:, :, None].astype(self.dtype),
                   axis=3)                                     # [B,K,G,D]

  def __call__(self, x: Array, positions: Array, mask: Array,
               inv_freq: Array) -> Array:
    q, kk, v = self.project(x, positions, inv_freq)
    return self.attend(q, kk, v, mask)


def _attention(q: Array, kk: Array, v: Array, mask: Array, key_spec: str,
               value_spec: str, dtype) -> Array:
  """Softmax attention of grouped queries ``q [B,Sq,K,G,D]`` (head
  ``k * G + g`` uses kv head ``k``) over ``kk, v`` in ``key_spec`` /
  ``value_spec`` layouts; ``[B,Sq,K,G,D]``."""
  hd = q.shape[-1]
  scores = jnp.einsum(f"bqkgd,{key_spec}->bkgqs", q, kk,
                      preferred_element_type=jnp.float32)
  scores = scores / math.sqrt(hd)
  big_neg = jnp.finfo(jnp.float32).min
  scores = jnp.where(mask[:, None, None, :, :], scores, big_neg)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
  return jnp.einsum(f"bkgqs,{value_spec}->bqkgd", probs, v.astype(dtype))


def _swiglu(gate: Array, up: Array) -> Array:
  return jax.nn.silu(gate) * up


# Recomputed in the backward pass instead of kept from the forward: the
# attention scores and probabilities (the backward keeps q, k, v) and the
# SwiGLU's intermediates (it keeps gate and up). Same values; the forward
# writes, and the backward reads, 4 [B,H,S,S] and 4 [B*S,f] arrays fewer per
# layer, for one more QK^T and PV product and a few elementwise ops.
# Measured on small25m in docs/performance.md.
_attention_recomputed = jax.checkpoint(_attention, static_argnums=(4, 5, 6))
_swiglu_recomputed = jax.checkpoint(_swiglu)


class MLP(nnx.Module):
  """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
    c = config
    d, f = c.hidden_size, c.intermediate_size
    self.gate_proj = Dense(d, f, (FSDP, TENSOR), use_bias=False, config=c,
                           rngs=rngs)
    self.up_proj = Dense(d, f, (FSDP, TENSOR), use_bias=False, config=c,
                         rngs=rngs)
    self.down_proj = Dense(f, d, (TENSOR, FSDP), use_bias=False, config=c,
                           rngs=rngs)
    # Set by use_decoding_layout: gate/up kernels stacked [2 f, d].
    self.gate_up_t = nnx.data(None)

  @jax.named_scope("mlp")
  def __call__(self, x: Array) -> Array:
    dtype = self.down_proj.dtype
    x2 = x.reshape(-1, x.shape[-1]).astype(dtype)
    if self.gate_up_t is None or not _is_skinny(x2, self.down_proj.row_shards):
      gate, up = self.gate_proj(x), self.up_proj(x)
    else:
      gu = skinny_matmul(x2, self.gate_up_t[...].astype(dtype))
      gate, up = jnp.split(gu.reshape(*x.shape[:-1], -1), 2, axis=-1)
    return self.down_proj(_swiglu_recomputed(gate, up))


class Block(nnx.Module):
  """Pre-norm transformer block."""

  def __init__(self, config: DecoderConfig, rngs: nnx.Rngs):
    c = config
    self.input_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.param_dtype)
    self.attn = Attention(c, rngs)
    self.post_attention_norm = RMSNorm(c.hidden_size, c.rms_norm_eps,
                                       c.param_dtype)
    self.mlp = MLP(c, rngs)

  def __call__(self, x, positions, mask, inv_freq):
    x = x + self.attn(self.input_norm(x), positions, mask, inv_freq)
    return x + self.mlp(self.post_attention_norm(x))

  def cached(self, x, positions, mask, inv_freq, cache: "LayerCache",
             index: Array) -> tuple[Array, "LayerCache"]:
    """Writes this chunk's keys/values at ``index`` and attends over the cache.

    ``mask [B,Sq,Lm]`` covers the first ``Lm <= L`` cache slots; only those
    are read (``Lm = L``: the whole cache).
    """
    q, kk, v = self.attn.project(self.input_norm(x), positions, inv_freq)
    # [B,Sq,K,D] -> keys [B,K,D,Sq], values [B,K,Sq,D].
    ck = jax.lax.dynamic_update_slice_in_dim(
        cache.k, jnp.transpose(kk, (0, 2, 3, 1)).astype(cache.k.dtype), index,
        axis=3)
    cv = jax.lax.dynamic_update_slice_in_dim(
        cache.v, jnp.swapaxes(v, 1, 2).astype(cache.v.dtype), index, axis=2)
    lm = mask.shape[-1]
    x = x + self.attn.attend(q, ck[..., :lm], cv[:, :, :lm], mask,
                             kv_layout="cache")
    return x + self.mlp(self.post_attention_norm(x)), LayerCache(ck, cv)


def _remat_block(layer: Block, x, positions, mask, inv_freq):
  """``layer(x, ...)`` with its activations recomputed in the backward."""
  graphdef, state = nnx.split(layer)

  def block(state, x):
    return nnx.merge(graphdef, state)(x, positions, mask, inv_freq)

  return jax.checkpoint(block)(state, x)


class Decoder(nnx.Module):
  """Decoder-only transformer; see the module docstring."""

  def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
    c = config
    self.config = c
    # [V, d]: vocab over 'tensor', model dim over 'fsdp'.
    self.embedding = _param(
        _normal(rngs, (c.vocab_size, c.hidden_size), c.initializer_range,
                c.param_dtype), (TENSOR, FSDP))
    self.layers = nnx.List([Block(c, rngs) for _ in range(c.num_layers)])
    self.final_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.param_dtype)
    # [d, V] when untied.
    self.lm_head = (None if c.tie_word_embeddings else _param(
        _normal(rngs, (c.hidden_size, c.vocab_size), c.initializer_range,
                c.param_dtype), (FSDP, TENSOR)))
    # [d]: the critic's weights on the final normed hidden state, zero at
    # initialisation (so V = 0 until it is trained).
    self.value_head = (_param(jnp.zeros((c.hidden_size,), c.param_dtype),
                              (FSDP,)) if c.value_head else None)
    # Set by use_decoding_layout: the [V, d] output matrix is used for
    # few-row inputs (the embedding itself when tied, else a copy).
    self.skinny_head = False
    self.lm_head_t = nnx.data(None)
    self.row_shards = 1

  def unembedding(self) -> Array:
    """The ``[d, V]`` output matrix (the transposed embedding when tied)."""
    if self.lm_head is None:
      return self._embedding().T
    return gather_fsdp(self.lm_head[...], (FSDP, TENSOR))

  def _embedding(self) -> Array:
    """The ``[V, d]`` embedding, ``'fsdp'`` shards gathered."""
    return gather_fsdp(self.embedding[...], (TENSOR, FSDP))

  def unembedding_bias(self) -> Array | None:
    """The output bias ``[V]``; always None for this architecture."""
    return None

  def values(self, hidden: Array) -> Array:
    """Critic values ``[...]`` from final normed hidden states ``[..., d]``.

    A linear head on the policy's own trunk (``DecoderConfig.value_head``):
    ``V(s_t) = h_t . w``, where ``h_t`` is the hidden state that predicts the
    next token, so the critic shares every layer with the policy.
    """
    if self.value_head is None:
      raise ValueError("this decoder has no value head; build it with"
                       " DecoderConfig(value_head=True).")
    return jnp.einsum("...d,d->...", hidden.astype(jnp.float32),
                      gather_fsdp(self.value_head[...], (FSDP,)).astype(
                          jnp.float32))

  def __call__(self, tokens: Array, positions: Array | None = None,
               attention_mask: Array | None = None,
               return_hidden: bool = False) -> Array:
    c = self.config
    b, s = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    causal = jnp.tril(jnp.ones((s, s), dtype=bool))[None]
    if attention_mask is None:
      mask = causal
    else:
      am = jnp.asarray(attention_mask).astype(bool)
      if am.ndim == 2:
        mask = causal & am[:, None, :]
      elif am.ndim == 3:
        mask = causal & am
      else:
        raise ValueError("attention_mask must be [B,S] or [B,S,S], got "
                         f"shape {am.shape}")
    mask = jnp.broadcast_to(mask, (b, s, s))
    inv_freq = rope_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
    with jax.named_scope("embed"):
      x = jnp.take(self._embedding(), tokens, axis=0).astype(c.dtype)
    for layer in self.layers:
      if c.remat:
        x = _remat_block(layer, x, positions, mask, inv_freq)
      else:
        x = layer(x, positions, mask, inv_freq)
    return self._head(x, return_hidden)

  def _head(self, x: Array, return_hidden: bool) -> Array:
    x = self.final_norm(x)
    if return_hidden:
      return x
    dtype = self.config.dtype
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).astype(dtype)
    if self.skinny_head and _is_skinny(x2, self.row_shards):
      w_t = (self.embedding if self.lm_head is None else self.lm_head_t)[...]
      logits = skinny_matmul(x2, w_t.astype(dtype))
      return logits.reshape(*lead, -1).astype(jnp.float32)
    w = self.unembedding().astype(dtype)
    return jnp.einsum("bsd,dv->bsv", x, w,
                      preferred_element_type=jnp.float32)

  def init_cache(self, batch_size: int, length: int,
                 dtype: Any = None) -> list[LayerCache]:
    """An all-zero key/value cache with ``length`` slots per sequence."""
    c = self.config
    b, k, d = batch_size, c.num_kv_heads, c.head_dim
    dtype = dtype or c.dtype
    return [LayerCache(jnp.zeros((b, k, d, length), dtype),
                       jnp.zeros((b, k, length, d), dtype))
            for _ in range(c.num_layers)]

  def cached_forward(self, tokens: Array, positions: Array,
                     cache: list[LayerCache], index: Array, mask: Array,
                     return_hidden: bool = False
                     ) -> tuple[Array, list[LayerCache]]:
    """Forward over a chunk of ``Sq`` new tokens with a key/value cache.

    Args:
      tokens: ``[B,Sq]`` new tokens, written to cache slots
        ``index .. index+Sq-1`` (the same slots for every row).
      positions: ``[B,Sq]`` their RoPE positions.
      cache: per-layer caches from ``init_cache`` or a previous call.
      index: scalar int, the first slot to write.
      mask: ``[B,Sq,L]`` True where a query may attend to a cache slot (the
        caller combines causality and padding; slots not yet written must be
        False). It may also be ``[B,Sq,Lm]`` with ``Lm < L``: then only the
        first ``Lm`` slots are attended to (and read), which saves work while
        the later slots are all masked, e.g. early in decoding.
      return_hidden: return normed hidden states instead of logits.

    Returns:
      ``(logits [B,Sq,V] or hidden [B,Sq,d], updated cache)``. Prefill is one
      call with the whole (left-padded) prompt; decoding is one call per token.
    """
    c = self.config
    if len(cache) != c.num_layers:
      raise ValueError(f"cache has {len(cache)} layers, the model "
                       f"{c.num_layers}")
    if cache and mask.shape[-1] > cache[0].length:
      raise ValueError(f"mask covers {mask.shape[-1]} cache slots, the cache "
                       f"has {cache[0].length}")
    inv_freq = rope_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
    with jax.named_scope("embed"):
      x = jnp.take(self._embedding(), tokens, axis=0).astype(c.dtype)
    new_cache = []
    for layer, layer_cache in zip(self.layers, cache):
      x, layer_cache = layer.cached(x, positions, mask, inv_freq, layer_cache,
                                    index)
      new_cache.append(layer_cache)
    return self._head(x, return_hidden), new_cache


def use_decoding_layout(model: Decoder, row_shards: int = 1) -> Decoder:
  """Adds ``[out, in]`` kernel copies to ``model`` for few-row decode steps.

  Meant for a model merged inside a jitted function (as the sampler does):
  it mutates ``model`` in place, once, before the decode loop. Each layer
  gets its q/k/v kernels stacked and transposed into one ``[q + 2 kv, d]``
  matrix, gate and up into one ``[2 f, d]``, and transposed o/down kernels;
  an untied ``lm_head`` is transposed (a tied embedding already is
  ``[V, d]``). Matmuls with 2..32 rows per device and an input at least 256
  wide then run as ``skinny_matmul`` over these copies; all others (one row,
  the prefill) use the original kernels. Stacking matters: two
  multiply-reductions of the same input would share one materialized
  ``[N, M, K]`` broadcast, which is slower than the dot. Outputs change by
  float32 rounding only. The copies cost one pass over the weights and their
  memory, so use this only where few-row matmuls dominate (XLA:CPU
  decoding); training and checkpoints never see them. ``row_shards``: the
  rows are split over this many devices (data-parallel decoding), so a
  matmul of ``M`` rows runs ``M / row_shards`` per device. Returns
  ``model``.
  """
  def transposed(*denses: Dense) -> nnx.Param:
    return nnx.Param(jnp.concatenate([d.kernel[...].T for d in denses],
                                     axis=0))

  for layer in model.layers:
    attn, mlp = layer.attn, layer.mlp
    projs = (attn.q_proj, attn.k_proj, attn.v_proj)
    attn.qkv_t = transposed(*projs)
    if attn.q_proj.bias is not None:
      attn.qkv_bias = nnx.Param(jnp.concatenate(
          [p.bias[...] for p in projs], axis=0))
    mlp.gate_up_t = transposed(mlp.gate_proj, mlp.up_proj)
    for dense in (attn.o_proj, mlp.down_proj):
      dense.kernel_t = transposed(dense)
      dense.row_shards = row_shards
  if model.lm_head is not None:
    model.lm_head_t = nnx.Param(model.lm_head[...].T)
  model.skinny_head = True
  model.row_shards = row_shards
  return model
