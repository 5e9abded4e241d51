"""Tests for divrl.models.sampler (compiled KV-cache group sampler)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from divrl.models import Decoder, DecoderConfig
from divrl.models.sampler import (SamplingConfig, _choose,
                                  concat_prompt_response, filter_logits,
                                  sample)


@pytest.fixture(scope="module")
def model():
  return Decoder(DecoderConfig.preset("tiny"), rngs=nnx.Rngs(0))


def _left_pad(prompts, width=None, pad=0):
  width = width or max(len(p) for p in prompts)
  toks = np.full((len(prompts), width), pad, np.int32)
  mask = np.zeros((len(prompts), width), bool)
  for i, p in enumerate(prompts):
    toks[i, width - len(p):] = p
    mask[i, width - len(p):] = True
  return jnp.asarray(toks), jnp.asarray(mask)


def _teacher_forced_logits(model, out):
  """Full-sequence (no cache) logits aligned with the response tokens."""
  full, mask, pos = concat_prompt_response(out.prompt_tokens, out.prompt_mask,
                                           out.tokens, out.response_mask)
  s = out.prompt_tokens.shape[1]
  logits = nnx.jit(lambda m, t, p, a: m(t, positions=p, attention_mask=a))(
      model, full, pos, mask)
  return np.asarray(logits[:, s - 1:-1], np.float64)


PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [3]]


# ------------------------------------------------------------ consistency --

def test_model_logprobs_match_full_forward(model):
  toks, mask = _left_pad(PROMPTS)
  cfg = SamplingConfig(max_new_tokens=10, num_samples=2, temperature=0.7)
  out = sample(model, toks, mask, jax.random.key(1), cfg)
  logits = _teacher_forced_logits(model, out) / 0.7
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  ref = np.take_along_axis(logp, np.asarray(out.tokens)[..., None], -1)[..., 0]
  m = np.asarray(out.response_mask)
  np.testing.assert_allclose(np.asarray(out.model_logprobs)[m], ref[m],
                             atol=2e-5)
  # No filter active: the sampling distribution is the tempered model.
  np.testing.assert_array_equal(out.logprobs, out.model_logprobs)


def test_greedy_is_argmax_of_full_forward(model):
  toks, mask = _left_pad(PROMPTS)
  out = sample(model, toks, mask, jax.random.key(0),
               SamplingConfig(max_new_tokens=8, temperature=0.0))
  logits = _teacher_forced_logits(model, out)
  np.testing.assert_array_equal(np.argmax(logits, -1), out.tokens)
  np.testing.assert_array_equal(out.logprobs, 0.0)


def test_shapes_groups_and_keys(model):
  toks, mask = _left_pad(PROMPTS)
  cfg = SamplingConfig(max_new_tokens=6, num_samples=4)
  out = sample(model, toks, mask, jax.random.key(3), cfg)
  assert out.tokens.shape == (12, 6) and out.tokens.dtype == jnp.int32
  for x in (out.response_mask, out.logprobs, out.model_logprobs):
    assert x.shape == (12, 6)
  np.testing.assert_array_equal(out.group_ids, np.repeat(np.arange(3), 4))
  np.testing.assert_array_equal(out.prompt_tokens, np.repeat(toks, 4, 0))
  # Samples within a group use different keys.
  first = np.asarray(out.tokens).reshape(3, 4, 6)
  assert all(len({tuple(r) for r in grp}) > 1 for grp in first)


def test_deterministic_per_key(model):
  toks, mask = _left_pad(PROMPTS)
  cfg = SamplingConfig(max_new_tokens=8, num_samples=3, top_p=0.9)
  a = sample(model, toks, mask, jax.random.key(7), cfg)
  b = sample(model, toks, mask, jax.random.key(7), cfg)
  c = sample(model, toks, mask, jax.random.key(8), cfg)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.tokens, c.tokens)


def test_raw_and_typed_per_prompt_keys_agree(model):
  toks, mask = _left_pad(PROMPTS)
  cfg = SamplingConfig(max_new_tokens=5, num_samples=2)
  typed = jax.random.split(jax.random.key(4), 3)
  raw = jax.random.key_data(typed)
  a = sample(model, toks, mask, typed, cfg)
  b = sample(model, toks, mask, raw, cfg)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  with pytest.raises(ValueError, match="key"):
    sample(model, toks, mask, typed[:2], cfg)


@pytest.mark.parametrize("temperature,top_p", [(0.8, 0.95), (0.0, 1.0)])
def test_left_padding_invariance(model, temperature, top_p):
  """A prompt gives the same continuation alone, padded, or batched."""
  cfg = SamplingConfig(max_new_tokens=12, num_samples=2,
                       temperature=temperature, top_p=top_p)
  keys = jax.random.split(jax.random.key(11), len(PROMPTS))
  batched = sample(model, *_left_pad(PROMPTS), keys, cfg)
  padded = sample(model, *_left_pad(PROMPTS, width=12), keys, cfg)
  for i, p in enumerate(PROMPTS):
    alone = sample(model, *_left_pad([p]), keys[i:i + 1], cfg)
    rows = slice(2 * i, 2 * i + 2)
    for other in (batched, padded):
      np.testing.assert_array_equal(other.tokens[rows], alone.tokens)
      np.testing.assert_array_equal(other.response_mask[rows],
                                    alone.response_mask)
      np.testing.assert_allclose(other.logprobs[rows], alone.logprobs,
                                 atol=1e-5)
      np.testing.assert_allclose(other.model_logprobs[rows],
                                 alone.model_logprobs, atol=1e-5)


# -------------------------------------------------------------- stopping --

def test_stop_tokens_end_rows_and_are_kept(model):
  toks, mask = _left_pad(PROMPTS)
  free = sample(model, toks, mask, jax.random.key(0),
                SamplingConfig(max_new_tokens=8))
  g = np.asarray(free.tokens)
  # Same keys, so the run with a stop token follows the free run until it
  # stops. Stop on the first token of row 0 not emitted before.
  first_new = next(i for i in range(1, 8) if g[0, i] not in g[0, :i])
  stop_tok = int(g[0, first_new])
  out = sample(model, toks, mask, jax.random.key(0),
               SamplingConfig(max_new_tokens=8, stop_tokens=(stop_tok,),
                              pad_id=1))
  t = np.asarray(out.tokens)
  m = np.asarray(out.response_mask)
  for r in range(3):
    hits = np.nonzero(g[r] == stop_tok)[0]
    expected_len = hits[0] + 1 if hits.size else 8
    assert out.lengths[r] == expected_len
    assert bool(out.truncated[r]) == (hits.size == 0)
    np.testing.assert_array_equal(t[r, :expected_len], g[r, :expected_len])
    np.testing.assert_array_equal(m[r], np.arange(8) < expected_len)
    np.testing.assert_array_equal(t[r, expected_len:], 1)
    np.testing.assert_array_equal(np.asarray(out.logprobs)[r, expected_len:],
                                  0.0)
  assert out.lengths[0] == first_new + 1 and not out.truncated[0]


def test_all_rows_stopping_ends_the_loop_early(model):
  toks, mask = _left_pad(PROMPTS)
  out = sample(model, toks, mask, jax.random.key(0),
               SamplingConfig(max_new_tokens=40, temperature=1.0,
                              stop_tokens=tuple(range(64))))
  np.testing.assert_array_equal(out.lengths, 1)
  np.testing.assert_array_equal(out.tokens[:, 1:], 0)
  assert not np.any(out.truncated)


# ------------------------------------------------------------- filtering --

def _np_filter(z, temperature, top_k, top_p, min_p):
  """Independent NumPy reference: the kept-token set per row."""
  z = np.asarray(z, np.float64) / temperature
  keep = np.ones_like(z, bool)
  for r in range(z.shape[0]):
    zr = z[r].copy()
    if 0 < top_k < zr.size:
      keep[r] &= zr >= np.sort(zr)[::-1][top_k - 1]
    zr = np.where(keep[r], zr, -np.inf)
    if top_p < 1:
      p = np.exp(zr - zr.max())
      p /= p.sum()
      order = np.argsort(-p, kind="stable")
      cum = 0.0
      nucleus = np.zeros_like(keep[r])
      for i in order:
        if cum >= top_p and nucleus.any():
          break
        nucleus[i] = True
        cum += p[i]
      keep[r] &= nucleus
    zr = np.where(keep[r], zr, -np.inf)
    if min_p > 0:
      p = np.exp(zr - zr.max())
      p /= p.sum()
      keep[r] &= p >= min_p * p.max()
  return keep


@pytest.mark.parametrize("top_k,top_p,min_p", [
    (0, 1.0, 0.0), (5, 1.0, 0.0), (0, 0.8, 0.0), (0, 0.3, 0.0),
    (0, 1.0, 0.1), (7, 0.9, 0.05), (1, 1.0, 0.0), (0, 1e-6, 0.0)])
def test_filter_logits_matches_numpy(top_k, top_p, min_p):
  rng = np.random.default_rng(0)
  z = rng.normal(0, 2.0, size=(16, 40)).astype(np.float32)
  out = filter_logits(jnp.asarray(z), temperature=0.9, top_k=top_k,
                      top_p=top_p, min_p=min_p)
  keep = _np_filter(z, 0.9, top_k, top_p, min_p)
  np.testing.assert_array_equal(np.isfinite(np.asarray(out)), keep)
  np.testing.assert_allclose(np.asarray(out)[keep], (z / 0.9)[keep],
                             rtol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(top_p=0.7), dict(min_p=0.2),
                                    dict(top_k=3)])
def test_sampling_frequencies_match_truncated_distribution(kwargs):
  logits = jnp.asarray([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]])
  cfg = SamplingConfig(max_new_tokens=1, temperature=1.0, **kwargs)
  n = 20000
  keys = jax.random.split(jax.random.key(0), n)
  tokens, logp, _ = jax.jit(jax.vmap(
      lambda k: _choose(logits, k[None], cfg)))(keys)
  keep = _np_filter(np.asarray(logits), 1.0, kwargs.get("top_k", 0),
                    kwargs.get("top_p", 1.0), kwargs.get("min_p", 0.0))[0]
  p = np.where(keep, np.exp(np.asarray(logits[0], np.float64)), 0.0)
  p /= p.sum()
  freq = np.bincount(np.asarray(tokens)[:, 0], minlength=8) / n
  assert np.all(freq[~keep] == 0)
  # 5 standard errors of a binomial proportion.
  np.testing.assert_array_less(np.abs(freq - p),
                               5 * np.sqrt(p * (1 - p) / n) + 1e-9)
  np.testing.assert_allclose(np.exp(np.asarray(logp)[:, 0]),
                             p[np.asarray(tokens)[:, 0]], rtol=1e-5)


def test_sampled_tokens_stay_in_nucleus(model):
  toks, mask = _left_pad(PROMPTS)
  cfg = SamplingConfig(max_new_tokens=10, num_samples=4, temperature=1.3,
                       top_p=0.5, min_p=0.02)
  out = sample(model, toks, mask, jax.random.key(5), cfg)
  logits = _teacher_forced_logits(model, out)
  m = np.asarray(out.response_mask)
  t = np.asarray(out.tokens)
  for r in range(t.shape[0]):
    keep = _np_filter(logits[r], 1.3, 0, 0.5, 0.02)
    assert all(keep[i, t[r, i]] for i in range(t.shape[1]) if m[r, i])
  # Truncation renormalises: sampled-under probabilities are never smaller.
  assert np.all(np.asarray(out.logprobs)[m]
                >= np.asarray(out.model_logprobs)[m] - 1e-6)


# -------------------------------------------------------------- bad input --

def test_prompt_longer_than_context_is_refused():
  small = Decoder(DecoderConfig.preset("tiny", max_position_embeddings=16),
                  rngs=nnx.Rngs(0))
  toks, mask = _left_pad([list(range(1, 18))])
  with pytest.raises(ValueError, match="longer than the model's context"):
    sample(small, toks, mask, jax.random.key(0),
           SamplingConfig(max_new_tokens=1))
  toks, mask = _left_pad([list(range(1, 12))])
  with pytest.raises(ValueError, match="max_new_tokens=6"):
    sample(small, toks, mask, jax.random.key(0),
           SamplingConfig(max_new_tokens=6))


def test_bad_prompts_and_configs_are_refused(model):
  toks, mask = _left_pad(PROMPTS)
  cfg = SamplingConfig(max_new_tokens=2)
  with pytest.raises(ValueError, match="not left-padded"):
    sample(model, toks, mask[:, ::-1], jax.random.key(0), cfg)
  with pytest.raises(ValueError, match="empty"):
    sample(model, toks, mask.at[2].set(False), jax.random.key(0), cfg)
  with pytest.raises(ValueError, match="outside"):
    sample(model, toks.at[0, -1].set(64), mask, jax.random.key(0), cfg)
  with pytest.raises(ValueError, match="stop_tokens"):
    sample(model, toks, mask, jax.random.key(0),
           SamplingConfig(max_new_tokens=2, stop_tokens=(99,)))
  with pytest.raises(ValueError, match="prompt_tokens must be integer"):
    sample(model, toks.astype(jnp.float32), mask, jax.random.key(0), cfg)
  for bad, name in [(dict(top_p=0.0), "top_p"), (dict(min_p=1.0), "min_p"),
                    (dict(temperature=-1.0), "temperature"),
                    (dict(top_k=-1), "top_k"), (dict(num_samples=0),
                                                "num_samples")]:
    with pytest.raises(ValueError, match=name):
      SamplingConfig(max_new_tokens=2, **bad)
  with pytest.raises(ValueError, match="max_new_tokens"):
    SamplingConfig(max_new_tokens=0)


# ---------------------------------------------------- data-parallel rows --

def _mesh(shape):
  devices = np.asarray(jax.devices()[:shape[0] * shape[1]]).reshape(shape)
  return jax.sharding.Mesh(devices, ("data", "fsdp"))


@pytest.mark.parametrize("shape", [(8, 1), (2, 4)])
def test_row_sharded_sampler_matches_unsharded(model, shape):
  """Decode rows split over the batch axes: same draws, less work each."""
  from divrl.models.sampler import make_sampler
  mesh = _mesh(shape)
  toks, mask = _left_pad([[5, 6, 7], [9, 10, 11, 12], [3], [8, 8]])
  cfg = SamplingConfig(max_new_tokens=12, num_samples=4, temperature=1.0,
                       top_p=0.9, stop_tokens=(2,))
  graphdef, state = nnx.split(model)
  keys = jax.random.split(jax.random.key(3), 4)
  plain = make_sampler(graphdef, cfg)
  split = make_sampler(graphdef, cfg, mesh=mesh, batch_axes=("data", "fsdp"))
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  args = [jax.device_put(x, repl) for x in (state, toks, mask, keys)]
  ref, out = plain(state, toks, mask, keys), split(*args)
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_array_equal(out.response_mask, ref.response_mask)
  np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)
  np.testing.assert_array_equal(out.group_ids, ref.group_ids)
  # The rows, not copies of the whole batch, live on each device.
  assert out.tokens.sharding.shard_shape(out.tokens.shape) == (2, 12)
  # Per-device work: the replicated sampler decodes all 16 rows on every
  # device; the split one 2 rows each.
  flops = lambda fn: fn.lower(*args).compile().cost_analysis()["flops"]
  ratio = flops(split.jitted) / flops(plain.jitted)
  assert ratio < 0.3, ratio


def _sampler_collectives(model, mesh_kw, n):
  """(tokens, logprobs, unsharded reference, per-kind collective counts and
  wire bytes per device) of a sampler on a train mesh, ``n`` new tokens."""
  from divrl.models import sampler as sampler_lib
  from divrl.models.sampler import make_sampler
  from divrl.rl import mesh as mesh_lib
  from scripts.bench_scaling import hlo_summary
  mesh = mesh_lib.make_train_mesh(**mesh_kw)
  graphdef, state = nnx.split(model)
  params = mesh_lib.put_params(state, mesh)
  toks, mask = _left_pad([[5, 6, 7], [9, 10, 11, 12]])
  keys = jax.random.split(jax.random.key(4), 2)
  repl = mesh_lib.replicated(mesh)
  args = [jax.device_put(x, repl) for x in (toks, mask, keys)]
  cfg = SamplingConfig(max_new_tokens=n, num_samples=4, temperature=1.0)
  split = make_sampler(graphdef, cfg, mesh=mesh, batch_axes=("data", "fsdp"))
  text = split.jitted.lower(params, *args).compile().as_text()
  # The decode loops' trip counts (no stop token), as bench_scaling does.
  trips, start = [], 1
  for t_end, _ in sampler_lib._decode_segments(toks.shape[1], n):  # pylint: disable=protected-access
    trips.append(t_end - start)
    start = t_end
  summary = hlo_summary(text, 8, trip_hints=trips)
  assert summary["loops_counted_once"] == 0, summary
  out = split(params, *args)
  ref = make_sampler(graphdef, cfg)(state, toks, mask, keys)
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)
  return summary


def test_fsdp_sampler_gathers_the_weights_once(model):
  """With FSDP-sharded parameters the sampler gathers each weight once,
  before decoding: the collective bytes do not grow with the number of
  decode steps, and the draws equal the unsharded sampler's."""
  wire = {n: _sampler_collectives(model, dict(data=2, fsdp=4), n)[
      "wire_bytes"] for n in (4, 16)}
  assert 0 < wire[16] <= wire[4] * 1.05, wire


def test_tensor_parallel_sampler_keeps_the_cache_split_over_heads(model):
  """Under tensor parallelism each device keeps its own key/value heads in
  the cache: no all-gather runs per decode step (the per-layer all-reduce
  of the attention and MLP outputs does, as tensor parallelism needs)."""
  gathers = {n: _sampler_collectives(model, dict(data=4, tensor=2), n)[
      "collectives"] for n in (4, 16)}
  assert gathers[16]["all-gather"]["count"] == gathers[4]["all-gather"][
      "count"], gathers
  assert gathers[16]["all-reduce"]["count"] > gathers[4]["all-reduce"][
      "count"], gathers


def test_row_sharded_sampler_refuses_bad_geometry(model):
  from divrl.models.sampler import make_sampler
  graphdef, state = nnx.split(model)
  cfg = SamplingConfig(max_new_tokens=4, num_samples=3)
  with pytest.raises(ValueError, match="batch_axes"):
    make_sampler(graphdef, cfg, mesh=_mesh((8, 1)), batch_axes=("rows",))
  split = make_sampler(graphdef, cfg, mesh=_mesh((8, 1)),
                       batch_axes=("data", "fsdp"))
  toks, mask = _left_pad([[5, 6], [7, 8]])
  with pytest.raises(ValueError, match="prompt_tokens: 2 prompts x "
                     "num_samples=3 = 6 rows"):
    split(state, toks, mask, jax.random.split(jax.random.key(0), 2))


# ------------------------------------------------- decoding matmul layout --

def _wide(**overrides):
  """A model at least SKINNY_MIN_DEPTH wide, so skinny matmuls are used."""
  cfg = DecoderConfig.preset("tiny", hidden_size=256, num_heads=4,
                             num_kv_heads=2, intermediate_size=384,
                             **overrides)
  return Decoder(cfg, rngs=nnx.Rngs(7))


def test_skinny_matmul_matches_numpy():
  from divrl.models.decoder import skinny_matmul
  rng = np.random.default_rng(0)
  x = rng.standard_normal((5, 300)).astype(np.float32)
  w_t = rng.standard_normal((70, 300)).astype(np.float32)
  got = np.asarray(jax.jit(skinny_matmul)(x, w_t))
  assert got.shape == (5, 70)
  np.testing.assert_allclose(got, x.astype(np.float64) @ w_t.T.astype(
      np.float64), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("overrides", [
    dict(), dict(qkv_bias=True, tie_word_embeddings=False)])
@pytest.mark.parametrize("rows", [1, 4, 64])
def test_decoding_layout_keeps_the_forward(overrides, rows):
  """Transposed/stacked kernels give the same logits (skinny and dot paths)."""
  from divrl.models.decoder import use_decoding_layout
  model = _wide(**overrides)
  if overrides:   # make the biases non-zero so that their stacking counts
    for layer in model.layers:
      for proj in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj):
        proj.bias[...] = 0.1 * jax.random.normal(
            jax.random.key(proj.bias[...].shape[0]), proj.bias[...].shape)
  graphdef, state = nnx.split(model)
  tokens = jax.random.randint(jax.random.key(1), (rows, 3), 0, 64)

  @jax.jit
  def both(state, tokens):
    plain = nnx.merge(graphdef, state)
    decoding = use_decoding_layout(nnx.merge(graphdef, state))
    assert decoding.layers[0].attn.qkv_t is not None
    return plain(tokens), decoding(tokens)

  ref, got = both(state, tokens)
  assert float(jnp.max(jnp.abs(ref))) > 0.1
  np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [
    dict(), dict(qkv_bias=True, tie_word_embeddings=False)])
def test_skinny_decoding_draws_the_same_tokens(overrides):
  from divrl.models.sampler import make_sampler
  model = _wide(**overrides)
  graphdef, state = nnx.split(model)
  toks, mask = _left_pad([[5, 6, 7], [9, 10, 11, 12], [3], [8, 8]])
  keys = jax.random.split(jax.random.key(3), 4)
  outs = {}
  for mode in ("dot", "skinny", "auto"):
    cfg = SamplingConfig(max_new_tokens=20, num_samples=2, temperature=1.0,
                         decode_matmul=mode)
    outs[mode] = make_sampler(graphdef, cfg)(state, toks, mask, keys)
  for mode in ("skinny", "auto"):
    np.testing.assert_array_equal(outs[mode].tokens, outs["dot"].tokens)
    np.testing.assert_allclose(outs[mode].logprobs, outs["dot"].logprobs,
                               atol=1e-5)
  # The draws are not degenerate (a constant row would hide a broken path).
  assert len(np.unique(np.asarray(outs["dot"].tokens))) > 10


def test_auto_decode_matmul_rule(model):
  from divrl.models import decoder as decoder_lib
  from divrl.models.sampler import _use_skinny
  wide = _wide()
  cfg = SamplingConfig(max_new_tokens=4)
  assert _use_skinny(cfg, wide, 8, None) == (jax.default_backend() == "cpu")
  assert not _use_skinny(cfg, wide, 1, None)       # one row: a mat-vec dot
  assert not _use_skinny(cfg, wide, decoder_lib.SKINNY_MAX_ROWS + 1, None)
  assert not _use_skinny(cfg, model, 8, None)      # 64 wide: dots are faster
  # Rows split over 8 devices: 128 rows are 16 per device.
  assert _use_skinny(cfg, wide, 128, (_mesh((8, 1)), ("data", "fsdp")))
  forced = SamplingConfig(max_new_tokens=4, decode_matmul="skinny")
  assert _use_skinny(forced, model, 1, None)
  with pytest.raises(ValueError, match="decode_matmul"):
    SamplingConfig(max_new_tokens=4, decode_matmul="fast")


def test_row_sharded_skinny_sampler_matches_unsharded():
  from divrl.models.sampler import make_sampler
  mesh = _mesh((8, 1))
  graphdef, state = nnx.split(_wide())
  toks, mask = _left_pad([[5, 6, 7], [9, 10, 11, 12], [3], [8, 8]])
  keys = jax.random.split(jax.random.key(3), 4)
  cfg = SamplingConfig(max_new_tokens=12, num_samples=8, temperature=1.0,
                       decode_matmul="skinny")
  ref = make_sampler(graphdef, cfg)(state, toks, mask, keys)
  split = make_sampler(graphdef, cfg, mesh=mesh, batch_axes=("data", "fsdp"))
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  out = split(*[jax.device_put(x, repl) for x in (state, toks, mask, keys)])
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)


def test_single_query_attention_matches_einsum_path():
  """``attend`` over the cache layout with one query: same as [B,S,K,D]."""
  model = _wide()
  attn = model.layers[0].attn
  b, s, k, h, d = 3, 9, attn.num_kv_heads, attn.num_heads, attn.head_dim
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (b, 1, h, d))
  kk = jax.random.normal(keys[1], (b, s, k, d))
  v = jax.random.normal(keys[2], (b, s, k, d))
  mask = jnp.asarray(np.random.default_rng(0).random((b, 1, s)) < 0.7)
  mask = mask.at[:, :, 0].set(True)
  to_k = lambda a: jnp.transpose(a, (0, 2, 3, 1))      # [B,K,D,S]
  to_v = lambda a: jnp.swapaxes(a, 1, 2)                 # [B,K,S,D]
  ref = attn.attend(q, kk, v, mask)                                 # einsum
  got = attn.attend(q, to_k(kk), to_v(v), mask, kv_layout="cache")  # reduce
  np.testing.assert_allclose(got, ref, atol=1e-5)
  # Several queries over the cache layout take the einsum path: same values.
  q3 = jnp.concatenate([q, 2 * q, -q], axis=1)
  mask3 = jnp.repeat(mask, 3, axis=1)
  np.testing.assert_allclose(
      attn.attend(q3, to_k(kk), to_v(v), mask3, kv_layout="cache"),
      attn.attend(q3, kk, v, mask3), atol=1e-5)
  # Masked keys have no influence.
  v2 = jnp.where(mask[:, 0, :, None, None], v, 1e3)
  got2 = attn.attend(q, to_k(kk), to_v(v2), mask, kv_layout="cache")
  np.testing.assert_allclose(got2, got, atol=1e-5)
  with pytest.raises(ValueError, match="kv_layout"):
    attn.attend(q, kk, v, mask, kv_layout="bdsk")
