"""A fully compiled group sampler: batched prefill, then KV-cache decoding.

``sample(model, prompt_tokens, prompt_mask, key, config)`` draws
``config.num_samples`` continuations of every prompt inside one jitted
function: one prefill over the ``P`` prompts, the key/value cache repeated to
``B = P * num_samples`` rows, then a ``lax.while_loop`` of single-token decode
steps that stops when every row has emitted a stop token or
``max_new_tokens`` is reached. There is no Python work per token. Decode
steps attend only to the cache slots written so far, rounded up to a multiple
of 64 slots: the loop is split into a few static segments (at most 8), and
the cache grows by zero slots between segments, so each segment's loop
carries and reads exactly the slots it attends to (about half the attention
work of attending to the whole cache at every step, and no per-step copy).

On CPU, decode steps with 2..32 rows per device run their weight matmuls as
multiply-reductions over kernels transposed once per call
(``SamplingConfig.decode_matmul``, ``decoder.use_decoding_layout``), which
XLA:CPU executes faster than its few-row dots; this changes float32
rounding only (same tokens in the tests).

Prompts are **left-padded**: ``prompt_mask [P,S]`` is False on a prefix of
padding and True on the real tokens. RoPE positions count real tokens only
(``max(cumsum(mask) - 1, 0)``) and padding keys are never attended to, so a
prompt gives the same continuation whatever padding it is batched with (up to
float rounding in reductions of different lengths; tested).

Randomness is per row. The key (one key, or one per prompt) is split into one
key per prompt; sample ``j`` of prompt ``p`` at decode step ``t`` uses
``fold_in(fold_in(prompt_key[p], j), t)``. A row's tokens therefore depend only
on its prompt, its own key and the model, never on the rest of the batch.

On a device mesh, ``make_sampler(..., mesh=, batch_axes=)`` splits the
decode rows over the given axes after the prefill (data-parallel sampling);
because keys are per row, the draws are the same as unsplit.

Token filtering, in this order (the order of Hugging Face ``generate``):
temperature, then top-k, then top-p (nucleus: keep the smallest prefix of the
sorted distribution whose mass reaches ``top_p``; the most likely token is
always kept), then min-p (keep tokens with ``p >= min_p * p_max``, Nguyen et
al. 2024, arXiv 2407.01082). ``temperature == 0`` is greedy decoding.

Outputs (``SampleOutput``), all with ``B = P * num_samples`` rows in
prompt-major order (the samples of prompt 0 first):

* ``tokens [B,N]``: generated tokens, ``pad_id`` after the stop token;
* ``response_mask [B,N]``: True on generated tokens, including the stop token;
* ``logprobs [B,N]``: log-probability of each token under the distribution it
  was actually drawn from (after temperature and truncation; 0 for greedy) --
  the behaviour policy for train/inference importance corrections;
* ``model_logprobs [B,N]``: ``log_softmax(logits / temperature)`` without
  truncation (the quantity a trainer recomputes; equals ``logprobs`` when no
  top-k/top-p/min-p filter is active);
* ``lengths [B]``, ``truncated [B]`` (no stop token within ``max_new_tokens``),
  ``group_ids [B]`` (the prompt index), plus the repeated prompt tokens/mask.
"""

from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax import struct
from jax.sharding import PartitionSpec as P

from divrl.models import decoder as decoder_lib
from divrl.models.decoder import Decoder
from divrl.sharding import leading_axis_spec

Array = jax.Array


_DECODE_MATMULS = ("auto", "dot", "skinny")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Static sampling options (hashable; a new value recompiles).

  Attributes:
    max_new_tokens: maximum response length ``N``.
    num_samples: samples per prompt (group size ``G``).
    temperature: softmax temperature; 0 means greedy.
    top_k: keep the ``top_k`` most likely tokens; 0 disables.
    top_p: nucleus mass in ``(0, 1]``; 1 disables.
    min_p: keep tokens with ``p >= min_p * max p``; 0 disables.
    stop_tokens: token ids that end a response (kept in the response).
    pad_id: token written after a response has stopped.
    decode_matmul: how decode steps multiply by the weights. ``"dot"``: the
      model as stored. ``"skinny"``: ``decoder.use_decoding_layout`` (the
      kernels are copied transposed once per call; matmuls with 2..32 rows
      per device become multiply-reductions, which XLA:CPU runs up to 2x
      faster). ``"auto"``:
      ``"skinny"`` on CPU when each device decodes 2..32 rows and the model
      is at least 256 wide, else ``"dot"``. The choice changes float32
      rounding only.
  """
  max_new_tokens: int
  num_samples: int = 1
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  min_p: float = 0.0
  stop_tokens: tuple[int, ...] = ()
  pad_id: int = 0
  decode_matmul: str = "auto"

  def __post_init__(self):
    object.__setattr__(self, "stop_tokens",
                       tuple(int(t) for t in self.stop_tokens))
    if int(self.max_new_tokens) < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got "
                       f"{self.max_new_tokens}")
    if int(self.num_samples) < 1:
      raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
    if not self.temperature >= 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if int(self.top_k) < 0:
      raise ValueError(f"top_k must be >= 0 (0 disables), got {self.top_k}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if not 0 <= self.min_p < 1:
      raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")
    if self.decode_matmul not in _DECODE_MATMULS:
      raise ValueError(f"decode_matmul must be one of {_DECODE_MATMULS}, "
                       f"got {self.decode_matmul!r}")


@struct.dataclass
class SampleOutput:
  """What ``sample`` returns; see the module docstring."""
  tokens: Array
  response_mask: Array
  logprobs: Array
  model_logprobs: Array
  lengths: Array
  truncated: Array
  group_ids: Array
  prompt_tokens: Array
  prompt_mask: Array


# ----------------------------------------------------------------------------
# Token filtering
# ----------------------------------------------------------------------------

def filter_logits(logits: Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, min_p: float = 0.0) -> Array:
  """Scaled and truncated logits ``[..., V]``; removed tokens get ``-inf``.

  ``temperature`` must be > 0 here (greedy decoding does not filter).
  """
  if not temperature > 0:
    raise ValueError(f"filter_logits needs temperature > 0, got {temperature}")
  z = logits.astype(jnp.float32) / temperature
  neg_inf = jnp.asarray(-jnp.inf, z.dtype)
  v = z.shape[-1]
  if 0 < top_k < v:
    kth = jax.lax.top_k(z, top_k)[0][..., -1:]
    z = jnp.where(z >= kth, z, neg_inf)
  if top_p < 1.0:
    order = jnp.argsort(-z, axis=-1)
    z_sorted = jnp.take_along_axis(z, order, axis=-1)
    p_sorted = jax.nn.softmax(z_sorted, axis=-1)
    mass_before = jnp.cumsum(p_sorted, axis=-1) - p_sorted
    keep_sorted = mass_before < top_p
    keep_sorted = keep_sorted.at[..., 0].set(True)
    keep = jnp.zeros_like(keep_sorted)
    keep = jnp.put_along_axis(keep, order, keep_sorted, axis=-1,
                              inplace=False)
    z = jnp.where(keep, z, neg_inf)
  if min_p > 0.0:
    logp = jax.nn.log_softmax(z, axis=-1)
    threshold = jnp.max(logp, axis=-1, keepdims=True) + jnp.log(min_p)
    z = jnp.where(logp >= threshold, z, neg_inf)
  return z


def _argmax(x: Array) -> Array:
  """``jnp.argmax(x, axis=-1)`` (first maximum; a NaN counts as maximal).

  Two plain reductions, which XLA:CPU runs several times faster than the
  variadic (value, index) reduction of ``jnp.argmax``.
  """
  top = jnp.max(x, axis=-1, keepdims=True)
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  hit = (x == top) | jnp.isnan(x)
  return jnp.min(jnp.where(hit, index, x.shape[-1]), axis=-1)


def _categorical(key: Array, z: Array) -> Array:
  """``jax.random.categorical(key, z)`` for one row ``z [V]``, same draws."""
  return _argmax(jax.random.gumbel(key, z.shape, z.dtype) + z)


def _choose(logits: Array, key_per_row: Array, config: SamplingConfig):
  """One token per row: ``(token [B], logprob [B], model_logprob [B])``."""
  if config.temperature == 0:
    token = _argmax(logits).astype(jnp.int32)
    model_logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(model_logp, token[:, None], axis=-1)[:, 0]
    return token, jnp.zeros_like(picked), picked
  z = filter_logits(logits, temperature=config.temperature,
                    top_k=config.top_k, top_p=config.top_p, min_p=config.min_p)
  token = jax.vmap(_categorical)(key_per_row, z).astype(jnp.int32)
  logp = jax.nn.log_softmax(z, axis=-1)
  model_logp = jax.nn.log_softmax(
      logits.astype(jnp.float32) / config.temperature, axis=-1)
  take = lambda a: jnp.take_along_axis(a, token[:, None], axis=-1)[:, 0]
  return token, take(logp), take(model_logp)


# ----------------------------------------------------------------------------
# The compiled loop
# ----------------------------------------------------------------------------

def _positions(mask: Array) -> Array:
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


# Decoding attends only to the cache slots written so far, rounded up to a
# multiple of this many slots (one compiled loop per multiple, at most
# _MAX_SEGMENTS loops; the chunk grows for long caches).
_SEGMENT_SLOTS = 64
_MAX_SEGMENTS = 8


def _decode_segments(s: int, n: int) -> list[tuple[int, int]]:
  """Static ``(t_end, lm)`` pairs splitting decode steps ``1 <= t < n``.

  Consecutive segments cover ``t`` up to ``t_end`` (exclusive); step ``t``
  feeds token ``t - 1`` into slot ``s + t - 1`` and needs slots
  ``[0, s + t)``, so a segment ending at ``t_end`` attends to
  ``lm = s + t_end - 1`` slots (at most the cache length ``s + n - 1``).
  """
  total = s + n - 1
  chunk = max(_SEGMENT_SLOTS, -(-total // _MAX_SEGMENTS))
  segments = []
  t = 1
  while t < n:
    lm = -(-(s + t) // chunk) * chunk
    if lm + chunk // 4 >= total:   # no separate loop for a short remainder
      lm = total
    t_end = lm - s + 1
    segments.append((t_end, lm))
    t = t_end
  return segments


def _row_constraint(row_sharding):
  """``fn(tree)`` pinning every array's leading (row) axis to ``row_sharding``.

  ``row_sharding`` is ``(mesh, axes)``; ``None`` gives the identity.
  """
  if row_sharding is None:
    return lambda tree: tree
  mesh, axes = row_sharding

  def one(x):
    return jax.lax.with_sharding_constraint(
        x, jax.sharding.NamedSharding(mesh, leading_axis_spec(x.ndim, axes)))

  return lambda tree: jax.tree.map(one, tree)


def _cache_constraint(row_sharding, num_kv_heads: int):
  """``fn(cache)`` pinning a key/value cache's rows to the batch axes and,
  on a mesh with a ``'tensor'`` axis that divides ``num_kv_heads``, its
  heads to ``'tensor'``: the heads' projections are computed there
  (``Dense`` kernels are split over ``'tensor'`` on their output), so each
  decode step writes and reads its own heads' slots. A cache replicated over
  ``'tensor'`` would be all-gathered on every step (``docs/scaling.md``).
  """
  if row_sharding is None:
    return lambda cache: cache
  mesh, axes = row_sharding
  t = mesh.shape.get(decoder_lib.TENSOR, 1)
  heads = decoder_lib.TENSOR if t > 1 and num_kv_heads % t == 0 else None
  sharding = jax.sharding.NamedSharding(mesh, P(axes, heads, None, None))
  return lambda cache: jax.tree.map(
      lambda x: jax.lax.with_sharding_constraint(x, sharding), cache)


def _row_shards(row_sharding) -> int:
  if row_sharding is None:
    return 1
  mesh, axes = row_sharding
  return int(np.prod([mesh.shape[a] for a in axes]))


def _use_skinny(config: SamplingConfig, model: Decoder, rows: int,
                row_sharding) -> bool:
  """Whether decoding uses ``decoder.use_decoding_layout``."""
  if config.decode_matmul != "auto":
    return config.decode_matmul == "skinny"
  platform = (jax.default_backend() if row_sharding is None
              else row_sharding[0].devices.flat[0].platform)
  return platform == "cpu" and decoder_lib.is_skinny_shape(
      rows, model.config.hidden_size, _row_shards(row_sharding))


def _sample_impl(model: Decoder, prompt_tokens, prompt_mask, prompt_keys,
                 config: SamplingConfig, row_sharding=None) -> SampleOutput:
  """The traced sampler; ``model`` is this trace's own copy (mutable)."""
  # (No decode step when max_new_tokens == 1: nothing to gain.)
  if config.max_new_tokens > 1 and _use_skinny(
      config, model, prompt_tokens.shape[0] * config.num_samples,
      row_sharding):
    decoder_lib.use_decoding_layout(model, _row_shards(row_sharding))
  # With a mesh, the B decode rows are split over its batch axes (the prefill
  # of the P prompts stays as the inputs are placed).
  shard_rows = _row_constraint(row_sharding)
  shard_cache = _cache_constraint(row_sharding, model.config.num_kv_heads)
  p, s = prompt_tokens.shape
  n, g = config.max_new_tokens, config.num_samples
  # Slots [0, S) hold the prompt, S + t token t; the last token is never fed
  # back, so S + N - 1 slots suffice (the last segment's cache length).
  b = p * g
  prompt_mask = prompt_mask.astype(bool)

  # Prefill the P prompts over slots [0, S); they attend to those slots only.
  key_mask = jnp.concatenate([prompt_mask, jnp.zeros((p, n - 1), bool)],
                             axis=1)
  causal = jnp.arange(s)[None, :] <= jnp.arange(s)[:, None]   # [S,S]
  prefill_mask = causal[None] & prompt_mask[:, None, :]
  # The cache grows segment by segment (see _decode_segments): each decode
  # loop carries exactly the slots it attends to, so no step copies a prefix.
  cache = model.init_cache(p, s)
  logits, cache = model.cached_forward(
      prompt_tokens, _positions(prompt_mask), cache, jnp.int32(0),
      prefill_mask)
  last_logits = logits[:, -1]

  # Repeat everything to B = P * G rows (prompt-major).
  rep = lambda x: jnp.repeat(x, g, axis=0)
  cache = jax.tree.map(rep, cache)
  last_logits, key_mask = rep(last_logits), rep(key_mask)
  next_position = rep(jnp.sum(prompt_mask, axis=-1).astype(jnp.int32))
  row_keys = jax.vmap(
      lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(g))
  )(prompt_keys).reshape((b,) + prompt_keys.shape[1:])
  last_logits, key_mask, next_position, row_keys = shard_rows(
      (last_logits, key_mask, next_position, row_keys))
  cache = shard_cache(cache)
  stop = jnp.asarray(config.stop_tokens or (-1,), jnp.int32)

  # Token t of row r is drawn with fold_in(row key r, t). The keys of all
  # steps are derived here, in one call: inside the loop each fold_in would be
  # a nested loop of its own on CPU (threefry's rolled lowering).
  step_keys_all = shard_rows(jax.vmap(
      lambda k: jax.vmap(lambda t: jax.random.fold_in(k, t))(jnp.arange(n))
  )(row_keys))

  def emit(t, logits, tokens, logps, model_logps, done):
    """Draws token ``t`` of every row from ``logits [B,V]`` and records it."""
    step_keys = jax.lax.dynamic_index_in_dim(step_keys_all, t, axis=1,
                                             keepdims=False)
    token, logp, model_logp = _choose(logits, step_keys, config)
    live = ~done
    token = jnp.where(live, token, config.pad_id)
    tokens = tokens.at[:, t].set(token)
    logps = logps.at[:, t].set(jnp.where(live, logp, 0.0))
    model_logps = model_logps.at[:, t].set(jnp.where(live, model_logp, 0.0))
    done = done | (live & jnp.any(token[:, None] == stop[None, :], axis=-1))
    return token, tokens, logps, model_logps, done

  # Token 0 comes from the prefill logits. Each loop step then feeds the
  # previous token back and draws the next one, so no forward pass is spent
  # on the last token (whose logits would never be used).
  token, tokens, logps, model_logps, done = shard_rows(emit(
      jnp.int32(0), last_logits, jnp.full((b, n), config.pad_id, jnp.int32),
      jnp.zeros((b, n), jnp.float32), jnp.zeros((b, n), jnp.float32),
      jnp.zeros((b,), bool)))

  def segment(carry, t_end, lm):
    """Decode steps ``t < t_end`` attending to the first ``lm`` cache slots."""

    def cond(carry):
      t, done = carry[0], carry[5]
      return (t < t_end) & ~jnp.all(done)

    def body(carry):
      t, token, tokens, logps, model_logps, done, cache, key_mask = carry
      # Token t - 1 occupies cache slot S + t - 1.
      slot = s + t - 1
      key_mask = key_mask.at[:, slot].set(True)
      logits, cache = model.cached_forward(
          token[:, None], (next_position + t - 1)[:, None], cache, slot,
          key_mask[:, None, :lm])
      token, tokens, logps, model_logps, done = emit(
          t, logits[:, 0], tokens, logps, model_logps, done)
      return ((t + 1,) + shard_rows((token, tokens, logps, model_logps,
                                     done)) + (shard_cache(cache),
                                               shard_rows(key_mask)))

    return jax.lax.while_loop(cond, body, carry)

  carry = (jnp.int32(1), token, tokens, logps, model_logps, done, cache,
           key_mask)
  for t_end, lm in _decode_segments(s, n):
    cache = shard_cache(decoder_lib.grow_cache(carry[6], lm))
    carry = carry[:6] + (cache,) + carry[7:]
    carry = segment(carry, t_end, lm)
  t_end, _, tokens, logps, model_logps, done, _, _ = carry
  del t_end
  # A row is live at step t iff it had not stopped before t.
  stopped_at = jnp.where(
      done,
      jnp.argmax(jnp.any(tokens[:, :, None] == stop[None, None, :], axis=-1),
                 axis=-1),
      n - 1)
  response_mask = jnp.arange(n)[None, :] <= stopped_at[:, None]
  return SampleOutput(
      tokens=tokens, response_mask=response_mask, logprobs=logps,
      model_logprobs=model_logps,
      lengths=jnp.sum(response_mask, axis=-1).astype(jnp.int32),
      truncated=~done,
      group_ids=jnp.repeat(jnp.arange(p, dtype=jnp.int32), g),
      prompt_tokens=rep(prompt_tokens), prompt_mask=rep(prompt_mask))


def _gather_fsdp_once(state, row_sharding):
  """The parameters with their ``'fsdp'`` shards gathered, once per call.

  Decoding reads every weight once per token: gathering FSDP shards inside
  the decode loop would repeat the gather every step, and leaving them
  sharded makes XLA all-reduce activations every step instead
  (``docs/scaling.md``). One gather before the loop costs one copy of the
  weights per device, as data-parallel sampling does anyway.
  """
  if row_sharding is None:
    return state
  mesh = row_sharding[0]
  if mesh.shape.get(decoder_lib.FSDP, 1) == 1:
    return state

  keep = set(mesh.axis_names) - {decoder_lib.FSDP}

  def drop(axis):
    if isinstance(axis, tuple):
      return tuple(a for a in axis if a in keep) or None
    return axis if axis in keep else None

  def one(x, spec):
    spec = P() if spec is None else P(*(drop(a) for a in spec))
    return jax.lax.with_sharding_constraint(
        x, jax.sharding.NamedSharding(mesh, spec))

  specs = nnx.get_partition_spec(state)
  return jax.tree.map(one, state, specs,
                      is_leaf=lambda x: isinstance(x, P) or x is None)


def _sample_split(graphdef, state, prompt_tokens, prompt_mask, prompt_keys,
                  config: SamplingConfig, row_sharding=None) -> SampleOutput:
  state = _gather_fsdp_once(state, row_sharding)
  return _sample_impl(nnx.merge(graphdef, state), prompt_tokens, prompt_mask,
                      prompt_keys, config, row_sharding)


# The model passes as a pytree: flattening it costs a tenth of nnx.split
# (0.14 vs 1.3 ms for tiny), which matters for short calls.
_sample_jit = jax.jit(_sample_impl, static_argnames=("config",))


@functools.lru_cache(maxsize=64)
def _jitted_sampler(graphdef, config: SamplingConfig, row_sharding):
  """One jitted sampler per (graph, config, row split): trainers built in
  one process (experiments of a quickstart, tests) share its compilation."""
  return jax.jit(functools.partial(_sample_split, graphdef, config=config,
                                   row_sharding=row_sharding))


def make_sampler(graphdef, config: SamplingConfig, *, mesh=None,
                 batch_axes=None):
  """A jitted ``fn(state, prompt_tokens, prompt_mask, prompt_keys)``.

  For training loops that keep the model split (``nnx.split``) and check
  their prompts once; ``sample`` is the checked, one-call entry point.

  With ``mesh`` and ``batch_axes`` (mesh axis names, e.g.
  ``('data', 'fsdp')``), the ``B = P * num_samples`` decode rows are split
  over those axes, so each device decodes only its share of the rows
  (data-parallel sampling); ``B`` must then be a multiple of their total
  size. Rows keep their own keys, so the draws do not depend on the split.
  """
  row_sharding, size = None, 1
  if mesh is not None:
    if not batch_axes:
      raise ValueError("make_sampler: batch_axes is required with a mesh")
    axes = tuple(batch_axes)
    for a in axes:
      if a not in mesh.shape:
        raise ValueError(f"batch_axes: {a!r} is not an axis of the mesh "
                         f"{dict(mesh.shape)}")
    row_sharding = (mesh, axes)
    size = _row_shards(row_sharding)
  fn = _jitted_sampler(graphdef, config, row_sharding)

  def sampler(state, prompt_tokens, prompt_mask, prompt_keys):
    rows = prompt_tokens.shape[0] * config.num_samples
    if rows % size:
      raise ValueError(
          f"prompt_tokens: {prompt_tokens.shape[0]} prompts x "
          f"num_samples={config.num_samples} = {rows} rows is not a "
          f"multiple of the batch axes {row_sharding[1]} (size {size})")
    return fn(state, prompt_tokens, prompt_mask, prompt_keys)

  sampler.jitted = fn
  return sampler


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_prompts(model: Decoder, prompt_tokens, prompt_mask,
                   config: SamplingConfig):
  chex.assert_rank(prompt_tokens, 2)
  chex.assert_equal_shape([prompt_tokens, prompt_mask])
  if not jnp.issubdtype(prompt_tokens.dtype, jnp.integer):
    raise ValueError(f"prompt_tokens must be integer, got "
                     f"{prompt_tokens.dtype}")
  max_pos = model.config.max_position_embeddings
  s = prompt_tokens.shape[1]
  if _is_concrete(prompt_tokens) and _is_concrete(prompt_mask):
    mask = np.asarray(prompt_mask).astype(bool)
    lengths = mask.sum(axis=1)
    if np.any(lengths == 0):
      raise ValueError(f"prompt_mask: prompt {int(np.argmin(lengths))} is "
                       "empty (at least one real token is needed)")
    if np.any(mask[:, :-1] & ~mask[:, 1:]):
      bad = int(np.nonzero(np.any(mask[:, :-1] & ~mask[:, 1:], axis=1))[0][0])
      raise ValueError(f"prompt_mask: prompt {bad} is not left-padded "
                       "(padding must come before the real tokens)")
    toks = np.asarray(prompt_tokens)
    vocab = model.config.vocab_size
    if np.any(mask & ((toks < 0) | (toks >= vocab))):
      raise ValueError(f"prompt_tokens: ids outside [0, {vocab})")
    longest = int(lengths.max())
  else:
    longest = s
  if longest > max_pos:
    raise ValueError(
        f"prompt_tokens: a prompt has {longest} tokens, longer than the "
        f"model's context of {max_pos} (max_position_embeddings)")
  if longest + config.max_new_tokens > max_pos:
    raise ValueError(
        f"prompt_tokens: the longest prompt ({longest} tokens) plus "
        f"max_new_tokens={config.max_new_tokens} exceeds the model's context "
        f"of {max_pos} (max_position_embeddings)")


def prompt_keys_from(key: Array, num_prompts: int) -> Array:
  """One key per prompt: ``split(key, P)`` for one key, else ``key`` itself."""
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  single = key.ndim == (0 if typed else 1)
  if single:
    return jax.random.split(key, num_prompts)
  if key.shape[0] != num_prompts:
    raise ValueError(f"key: got {key.shape[0]} per-prompt keys for "
                     f"{num_prompts} prompts")
  return key


def sample(model: Decoder, prompt_tokens: Array, prompt_mask: Array,
           key: Array, config: SamplingConfig) -> SampleOutput:
  """Draws ``config.num_samples`` continuations of each left-padded prompt.

  Args:
    model: a ``Decoder``.
    prompt_tokens: ``[P,S]`` int token ids, left-padded.
    prompt_mask: ``[P,S]`` bool, True on real tokens.
    key: one PRNG key (split into one per prompt) or ``[P]`` per-prompt keys
      (typed or raw ``uint32[P,2]``).
    config: a ``SamplingConfig``.

  Returns:
    A ``SampleOutput`` with ``B = P * num_samples`` rows; see the module
    docstring.

  Raises:
    ValueError: empty or right-padded prompts, token ids outside the
      vocabulary, or a prompt that does not fit the model's context together
      with ``max_new_tokens``.
  """
  prompt_tokens = jnp.asarray(prompt_tokens)
  prompt_mask = jnp.asarray(prompt_mask)
  _check_prompts(model, prompt_tokens, prompt_mask, config)
  for t in config.stop_tokens:
    if not 0 <= t < model.config.vocab_size:
      raise ValueError(f"stop_tokens: {t} is outside the vocabulary "
                       f"[0, {model.config.vocab_size})")
  keys = prompt_keys_from(key, prompt_tokens.shape[0])
  return _sample_jit(model, prompt_tokens.astype(jnp.int32),
                     prompt_mask.astype(bool), keys, config=config)


@functools.partial(jax.jit, static_argnames=("pad_id",))
def concat_prompt_response(prompt_tokens: Array, prompt_mask: Array,
                           tokens: Array, response_mask: Array,
                           pad_id: int = 0):
  """Joins left-padded prompts and responses into one training sequence.

  Returns ``(tokens [B,S+N], attention_mask [B,S+N], positions [B,S+N])``.
  Logits at columns ``S-1 .. S+N-2`` predict the response tokens, so
  ``logits[:, S-1:-1]`` lines up with ``tokens``/``response_mask``.
  """
  full = jnp.concatenate(
      [prompt_tokens, jnp.where(response_mask, tokens, pad_id)], axis=1)
  mask = jnp.concatenate([prompt_mask.astype(bool),
                          response_mask.astype(bool)], axis=1)
  return full, mask, _positions(mask)
