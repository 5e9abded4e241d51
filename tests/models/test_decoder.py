"""Tests for divrl.models.decoder (Flax NNX decoder-only transformer)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from divrl.models import (PRESETS, Decoder, DecoderConfig, RopeScaling,
                          apply_rope, param_count, rope_frequencies)
from divrl.sharding import make_mesh


def _tiny(**overrides):
  return DecoderConfig.preset("tiny", **overrides)


def _model(config=None, seed=0):
  return Decoder(config or _tiny(), rngs=nnx.Rngs(seed))


def _tokens(b=2, s=7, vocab=64, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, (b, s)),
                     jnp.int32)


@functools.partial(nnx.jit, static_argnames="return_hidden")
def _call(model, tokens, positions=None, attention_mask=None,
          return_hidden=False):
  """Jitted forward (eager op-by-op dispatch is slow on CPU)."""
  return model(tokens, positions=positions, attention_mask=attention_mask,
               return_hidden=return_hidden)


def _num_params(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# ---------------------------------------------------------------- configs --

def test_unknown_preset_raises_naming_it():
  with pytest.raises(ValueError, match="no-such-model"):
    DecoderConfig.preset("no-such-model")


@pytest.mark.parametrize("name", ["tiny", "small25m"])
def test_small_presets_build_and_param_count_matches(name):
  config = DecoderConfig.preset(name)
  model = Decoder(config, rngs=nnx.Rngs(0))
  assert _num_params(model) == param_count(config)
  if name == "tiny":
    assert (config.vocab_size, config.hidden_size, config.num_layers,
            config.num_heads, config.num_kv_heads) == (64, 64, 2, 4, 2)
  else:
    assert 24e6 <= param_count(config) <= 26.5e6


@pytest.mark.parametrize("overrides", [
    dict(tie_word_embeddings=False), dict(qkv_bias=True),
    dict(num_kv_heads=4), dict(num_kv_heads=1, head_dim=8)])
def test_param_count_matches_instantiated_variants(overrides):
  config = _tiny(**overrides)
  assert _num_params(_model(config)) == param_count(config)


@pytest.mark.parametrize("name,expected", [
    ("qwen2.5-0.5b", 494.0e6), ("qwen2.5-1.5b", 1.54e9),
    ("qwen2.5-7b", 7.62e9), ("llama-3.2-1b", 1.24e9)])
def test_big_preset_param_counts(name, expected):
  assert abs(param_count(DecoderConfig.preset(name)) / expected - 1) < 0.02


def test_big_preset_shapes():
  q05 = PRESETS["qwen2.5-0.5b"]
  assert (q05.hidden_size, q05.num_layers, q05.num_heads, q05.num_kv_heads,
          q05.intermediate_size, q05.vocab_size, q05.head_dim) == (
              896, 24, 14, 2, 4864, 151936, 64)
  assert q05.qkv_bias and q05.tie_word_embeddings
  assert q05.rope_theta == 1e6
  q15 = PRESETS["qwen2.5-1.5b"]
  assert (q15.hidden_size, q15.num_layers, q15.num_heads, q15.num_kv_heads,
          q15.intermediate_size) == (1536, 28, 12, 2, 8960)
  q7 = PRESETS["qwen2.5-7b"]
  assert (q7.hidden_size, q7.num_layers, q7.num_heads, q7.num_kv_heads,
          q7.intermediate_size, q7.vocab_size) == (3584, 28, 28, 4, 18944,
                                                   152064)
  assert not q7.tie_word_embeddings and q7.qkv_bias
  ll = PRESETS["llama-3.2-1b"]
  assert (ll.hidden_size, ll.num_layers, ll.num_heads, ll.num_kv_heads,
          ll.intermediate_size, ll.vocab_size, ll.head_dim) == (
              2048, 16, 32, 8, 8192, 128256, 64)
  assert ll.rope_theta == 5e5 and ll.tie_word_embeddings and not ll.qkv_bias
  assert ll.rope_scaling == RopeScaling(32.0, 1.0, 4.0, 8192)


def test_config_is_hashable_and_accepts_rope_scaling_dict():
  config = _tiny(rope_scaling={"rope_type": "llama3", "factor": 8.0,
                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 64})
  assert config.rope_scaling == RopeScaling(8.0, 1.0, 4.0, 64)
  hash(config)
  assert DecoderConfig.preset("tiny") == DecoderConfig.preset("tiny")
  with pytest.raises(ValueError):
    _tiny(num_kv_heads=3)


# ---------------------------------------------------------------- forward --

def test_forward_shapes_and_finite():
  model = _model()
  tokens = _tokens(3, 5)
  logits = _call(model, tokens)
  hidden = _call(model, tokens, return_hidden=True)
  assert logits.shape == (3, 5, 64) and logits.dtype == jnp.float32
  assert hidden.shape == (3, 5, 64)
  assert np.isfinite(np.asarray(logits)).all()
  assert model.unembedding().shape == (64, 64)
  assert model.unembedding_bias() is None


def test_causality():
  model = _model()
  tokens = _tokens(2, 8)
  changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % 64)
  a, b = _call(model, tokens), _call(model, changed)
  np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-6, atol=1e-6)
  assert not np.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("tied", [True, False])
def test_hidden_times_unembedding_is_logits(tied):
  model = _model(_tiny(tie_word_embeddings=tied))
  tokens = _tokens()
  hidden = _call(model, tokens, return_hidden=True)
  w, bias = model.unembedding(), model.unembedding_bias()
  logits = hidden @ w + (0.0 if bias is None else bias)
  np.testing.assert_allclose(logits, _call(model, tokens), rtol=1e-5,
                             atol=1e-5)


def test_tied_vs_untied_unembedding():
  tied = _model(_tiny(tie_word_embeddings=True))
  untied = _model(_tiny(tie_word_embeddings=False))
  assert tied.lm_head is None
  np.testing.assert_array_equal(tied.unembedding(), tied.embedding[...].T)
  assert untied.lm_head is not None
  assert untied.unembedding().shape == (64, 64)
  assert not np.allclose(untied.unembedding(), untied.embedding[...].T)
  # Tying makes the output matrix follow the embedding.
  tied.embedding[...] = tied.embedding[...] * 2.0
  np.testing.assert_array_equal(tied.unembedding(), tied.embedding[...].T)


def test_jit_matches_eager():
  model = _model(_tiny(qkv_bias=True))
  tokens = _tokens()

  @nnx.jit
  def f(m, t):
    return m(t)

  np.testing.assert_allclose(f(model, tokens), model(tokens), rtol=1e-5,
                             atol=1e-5)
  graphdef, state = nnx.split(model)
  g = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t, return_hidden=True))
  np.testing.assert_allclose(g(state, tokens),
                             model(tokens, return_hidden=True), rtol=1e-5,
                             atol=1e-5)


def test_grad_through_model():
  model = _model()
  tokens = _tokens()

  def loss(m):
    return jnp.mean(jax.nn.logsumexp(m(tokens), axis=-1))

  grads = nnx.jit(nnx.grad(loss))(model)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert any(np.abs(np.asarray(g)).sum() > 0 for g in leaves)


@pytest.mark.parametrize("config_kw", [dict(qkv_bias=True),
                                       dict(num_kv_heads=1)])
def test_left_padding_with_positions_matches_unpadded(config_kw):
  model = _model(_tiny(**config_kw))
  real = _tokens(1, 6, seed=3)
  pad = 3
  padded = jnp.concatenate(
      [jnp.full((1, pad), 17, jnp.int32), real], axis=1)
  mask = jnp.concatenate([jnp.zeros((1, pad), bool), jnp.ones((1, 6), bool)],
                         axis=1)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  out = _call(model, padded, positions=positions, attention_mask=mask)
  assert np.isfinite(np.asarray(out)).all()
  np.testing.assert_allclose(out[:, pad:], _call(model, real), rtol=1e-5,
                             atol=1e-5)
  # Batched with an unpadded row, too.
  batch = jnp.concatenate([padded, _tokens(1, 9, seed=4)], axis=0)
  bmask = jnp.concatenate([mask, jnp.ones((1, 9), bool)], axis=0)
  bpos = jnp.maximum(jnp.cumsum(bmask, axis=1) - 1, 0)
  out2 = _call(model, batch, positions=bpos, attention_mask=bmask)
  np.testing.assert_allclose(out2[0, pad:], _call(model, real)[0], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(out2[1], _call(model, batch[1:])[0], rtol=1e-5,
                             atol=1e-5)


def test_full_attention_mask_is_combined_with_causal():
  model = _model()
  tokens = _tokens(2, 6)
  ones = jnp.ones((2, 6, 6), bool)
  np.testing.assert_allclose(_call(model, tokens, attention_mask=ones),
                             _call(model, tokens), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------- reference checks --

def _np_rope(x, pos, inv):
  ang = pos[..., None] * inv
  cos, sin = np.cos(ang)[:, :, None], np.sin(ang)[:, :, None]
  half = x.shape[-1] // 2
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def _np_rmsnorm(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * scale


def test_rope_against_numpy_and_properties():
  rng = np.random.default_rng(0)
  d = 16
  inv = np.asarray(rope_frequencies(d, 10000.0), np.float64)
  np.testing.assert_allclose(inv, 10000.0 ** (-np.arange(0, d, 2) / d),
                             rtol=1e-6)
  x = rng.normal(size=(2, 5, 3, d)).astype(np.float32)
  pos = rng.integers(0, 100, (2, 5)).astype(np.float32)
  out = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(pos),
                              jnp.asarray(inv, jnp.float32)))
  np.testing.assert_allclose(out, _np_rope(x, pos, inv), rtol=1e-4,
                             atol=1e-4)
  # Rotation preserves norms.
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1),
                             np.linalg.norm(x, axis=-1), rtol=1e-5)
  # q . k depends only on the position difference.
  q = rng.normal(size=(1, 1, 1, d)).astype(np.float32)
  k = rng.normal(size=(1, 1, 1, d)).astype(np.float32)

  def dot(pq, pk):
    rq = apply_rope(jnp.asarray(q), jnp.full((1, 1), pq, jnp.float32),
                    jnp.asarray(inv, jnp.float32))
    rk = apply_rope(jnp.asarray(k), jnp.full((1, 1), pk, jnp.float32),
                    jnp.asarray(inv, jnp.float32))
    return float(jnp.sum(rq * rk))

  np.testing.assert_allclose(dot(7, 3), dot(24, 20), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dot(0, 0), float(np.sum(q * k)), rtol=1e-5)


def test_llama3_rope_scaling_frequencies():
  d, theta = 64, 500000.0
  s = RopeScaling(32.0, 1.0, 4.0, 8192)
  base = 1.0 / theta ** (np.arange(0, d, 2) / d)
  got = np.asarray(rope_frequencies(d, theta, s), np.float64)
  wavelen = 2 * np.pi / base
  high = wavelen < 8192 / 4.0  # short wavelengths: unchanged
  low = wavelen > 8192 / 1.0   # long wavelengths: divided by factor
  mid = ~high & ~low
  assert high.any() and low.any() and mid.any()
  np.testing.assert_allclose(got[high], base[high], rtol=1e-5)
  np.testing.assert_allclose(got[low], base[low] / 32.0, rtol=1e-5)
  smooth = (8192 / wavelen[mid] - 1.0) / (4.0 - 1.0)
  np.testing.assert_allclose(
      got[mid], (1 - smooth) * base[mid] / 32.0 + smooth * base[mid],
      rtol=1e-5)
  # A scaled config runs.
  model = _model(_tiny(rope_scaling=RopeScaling(8.0, 1.0, 4.0, 16)))
  assert np.isfinite(np.asarray(_call(model, _tokens()))).all()


def _np_forward(model, tokens):
  """Independent NumPy (float64) forward pass of a Decoder."""
  c = model.config
  a = lambda v: np.asarray(v[...], np.float64)  # noqa: E731
  b, s = tokens.shape
  h, kvh, hd = c.num_heads, c.num_kv_heads, c.head_dim
  inv = 1.0 / c.rope_theta ** (np.arange(0, hd, 2) / hd)
  pos = np.broadcast_to(np.arange(s, dtype=np.float64), (b, s))
  x = a(model.embedding)[np.asarray(tokens)]
  for layer in model.layers:
    at = layer.attn
    y = _np_rmsnorm(x, a(layer.input_norm.scale), c.rms_norm_eps)

    def proj(dense, inp):
      out = inp @ a(dense.kernel)
      return out + a(dense.bias) if dense.bias is not None else out

    q = proj(at.q_proj, y).reshape(b, s, h, hd)
    k = proj(at.k_proj, y).reshape(b, s, kvh, hd)
    v = proj(at.v_proj, y).reshape(b, s, kvh, hd)
    q, k = _np_rope(q, pos, inv), _np_rope(k, pos, inv)
    heads = []
    for i in range(h):
      j = i // (h // kvh)
      sc = q[:, :, i] @ np.swapaxes(k[:, :, j], 1, 2) / np.sqrt(hd)
      sc = np.where(np.tril(np.ones((s, s), bool)), sc, -np.inf)
      p = np.exp(sc - sc.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      heads.append(p @ v[:, :, j])
    x = x + np.stack(heads, 2).reshape(b, s, h * hd) @ a(at.o_proj.kernel)
    y = _np_rmsnorm(x, a(layer.post_attention_norm.scale), c.rms_norm_eps)
    m = layer.mlp
    gate = y @ a(m.gate_proj.kernel)
    silu = gate / (1 + np.exp(-gate))
    x = x + (silu * (y @ a(m.up_proj.kernel))) @ a(m.down_proj.kernel)
  x = _np_rmsnorm(x, a(model.final_norm.scale), c.rms_norm_eps)
  w = a(model.embedding).T if model.lm_head is None else a(model.lm_head)
  return x @ w


@pytest.mark.parametrize("config_kw", [
    dict(num_kv_heads=4), dict(num_kv_heads=2, qkv_bias=True),
    dict(num_kv_heads=1, tie_word_embeddings=False)])
def test_forward_matches_numpy_reference(config_kw):
  model = _model(_tiny(**config_kw), seed=1)
  # Non-trivial norm scales and biases so that they are exercised.
  rng = np.random.default_rng(5)
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param) and path[-1] in ("scale", "bias"):
      var[...] = jnp.asarray(
          rng.normal(1.0 if path[-1] == "scale" else 0.0, 0.3,
                     var[...].shape), jnp.float32)
  tokens = _tokens(2, 6, seed=2)
  np.testing.assert_allclose(_call(model, tokens), _np_forward(model, tokens),
                             rtol=2e-4, atol=2e-4)


# --------------------------------------------------------------- sharding --

def test_parameters_carry_sharding_annotations():
  specs = nnx.get_partition_spec(nnx.state(_model(_tiny(
      tie_word_embeddings=False, qkv_bias=True))))
  flat = {tuple(map(str, k)): v for k, v in
          nnx.to_flat_state(specs)}
  assert flat[("embedding",)].get_value() == P("tensor", "fsdp")
  assert flat[("lm_head",)].get_value() == P("fsdp", "tensor")
  layer0 = ("layers", "0")
  assert flat[layer0 + ("attn", "q_proj", "kernel")].get_value() == P(
      "fsdp", "tensor")
  assert flat[layer0 + ("attn", "q_proj", "bias")].get_value() == P("tensor")
  assert flat[layer0 + ("attn", "o_proj", "kernel")].get_value() == P(
      "tensor", "fsdp")
  assert flat[layer0 + ("mlp", "down_proj", "kernel")].get_value() == P(
      "tensor", "fsdp")
  for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)):
    assert set(a for a in spec if a is not None) <= {"fsdp", "tensor"}


def test_sharded_init_and_forward_on_mesh():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices")
  mesh = make_mesh((2, 2, 2), ("data", "fsdp", "tensor"))
  config = _tiny(tie_word_embeddings=False)
  with jax.set_mesh(mesh):
    model = Decoder(config, rngs=nnx.Rngs(0))
    kernel = model.layers[0].mlp.gate_proj.kernel[...]
    assert kernel.sharding.spec == P("fsdp", "tensor")
    tokens = jax.device_put(_tokens(4, 6),
                            jax.sharding.NamedSharding(mesh, P("data")))

    @nnx.jit
    def f(m, t):
      return m(t)

    sharded = f(model, tokens)
  reference = Decoder(config, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(sharded, _call(reference, _tokens(4, 6)),
                             rtol=1e-5, atol=1e-5)


def test_remat_gives_the_same_values_and_gradients_and_keeps_less():
  """``DecoderConfig(remat=True)``: the same loss and gradients, and the
  backward keeps one residual stream per block instead of every block's
  activations (JAX's saved residuals; what an accelerator's memory-aware
  scheduler then frees)."""
  from jax._src.ad_checkpoint import saved_residuals  # pylint: disable=import-outside-toplevel
  tokens = _tokens(2, 24)
  out = {}
  for remat in (False, True):
    model = _model(_tiny(remat=remat, num_layers=3))
    graphdef, state = nnx.split(model)

    def loss(state):
      hidden = nnx.merge(graphdef, state)(tokens, return_hidden=True)
      return jnp.mean(hidden ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(state)
    kept = sum(int(np.prod(a.shape)) * a.dtype.itemsize
               for a, why in saved_residuals(loss, state)
               if "argument" not in why)
    out[remat] = (value, grads, kept)
  np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(out[True][1]),
                  jax.tree.leaves(out[False][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
  assert out[True][2] < out[False][2] / 4, (out[True][2], out[False][2])


def _wire_bytes(compiled, num_devices):
  """Collective bytes on the wire per device of a compiled program."""
  from scripts.bench_scaling import hlo_summary  # pylint: disable=import-outside-toplevel
  return hlo_summary(compiled.as_text(), num_devices)["wire_bytes"]


def test_fsdp_gathers_weights_instead_of_reducing_activations():
  """Under ``jax.set_mesh`` with an ``fsdp`` axis, each weight is gathered
  before its matmul; without the mesh context GSPMD contracts over the
  sharded model dimension and all-reduces activations, whose bytes grow
  with the batch. Same values and gradients either way."""
  mesh = make_mesh((1, 4, 1), ("data", "fsdp", "tensor"),
                   devices=jax.devices()[:4])
  config = _tiny(tie_word_embeddings=False)
  with jax.set_mesh(mesh):
    model = Decoder(config, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  rows = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))

  def loss(state, tokens):
    out = nnx.merge(graphdef, state)(tokens, return_hidden=True)
    return jnp.mean(out ** 2)

  grad = jax.jit(jax.value_and_grad(loss))
  wire = {}
  for batch in (8, 64):
    tokens = jax.device_put(_tokens(batch, 16), rows)
    wire[batch, "plain"] = _wire_bytes(grad.lower(state, tokens).compile(),
                                       4)
    with jax.set_mesh(mesh):
      wire[batch, "mesh"] = _wire_bytes(
          grad.lower(state, tokens).compile(), 4)
      got = grad(state, tokens)
    want = grad(state, tokens)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  # Gathering weights costs the same at any batch; reducing activations
  # grows with it.
  assert wire[64, "mesh"] <= wire[8, "mesh"] * 1.05, wire
  assert wire[64, "plain"] >= wire[8, "plain"] * 3, wire
  assert wire[64, "mesh"] < wire[64, "plain"] / 2, wire


def test_positions_are_used_and_shift_invariant():
  model = _model()
  tokens = _tokens(2, 6)
  base = jnp.broadcast_to(jnp.arange(6), (2, 6))
  np.testing.assert_allclose(_call(model, tokens, positions=base),
                             _call(model, tokens), rtol=1e-6, atol=1e-6)
  # RoPE depends on relative positions only: a constant shift changes nothing,
  # a change of spacing does.
  np.testing.assert_allclose(_call(model, tokens, positions=base + 11),
                             _call(model, tokens), rtol=1e-4, atol=1e-4)
  assert not np.allclose(_call(model, tokens, positions=base * 3),
                         _call(model, tokens), atol=1e-3)


def test_backward_recomputes_attention_probabilities_and_swiglu():
  """The backward keeps q, k, v and the SwiGLU's gate and up, and
  recomputes the attention scores/probabilities and the SwiGLU's
  intermediates: no float residual has the ``[.., S, S]`` shape (the
  boolean mask, shared by the layers, is kept), and at most gate, up and
  the down projection's input have the MLP width. The values and gradients
  equal those of keeping everything."""
  from jax._src.ad_checkpoint import saved_residuals  # pylint: disable=import-outside-toplevel
  from divrl.models import decoder as decoder_lib  # pylint: disable=import-outside-toplevel
  b, s, layers = 2, 24, 3
  config = _tiny(num_layers=layers)
  tokens = _tokens(b, s)
  graphdef, state = nnx.split(_model(config))

  def loss(state):
    hidden = nnx.merge(graphdef, state)(tokens, return_hidden=True)
    return jnp.mean(hidden ** 2)

  def run():
    value, grads = jax.jit(jax.value_and_grad(loss))(state)
    shapes = [a.shape for a, why in saved_residuals(loss, state)
              if "argument" not in why and a.dtype != jnp.bool_]
    return value, grads, shapes

  value, grads, shapes = run()
  assert not [x for x in shapes if x[-2:] == (s, s)], shapes
  wide = [x for x in shapes if x[-1:] == (config.intermediate_size,)]
  assert len(wide) <= 3 * layers, wide
  patch = pytest.MonkeyPatch()
  with patch.context() as m:     # keep everything: the plain functions
    m.setattr(decoder_lib, "_attention_recomputed", decoder_lib._attention)
    m.setattr(decoder_lib, "_swiglu_recomputed", decoder_lib._swiglu)
    kept_value, kept_grads, kept_shapes = run()
  assert [x for x in kept_shapes if x[-2:] == (s, s)]    # the test can fail
  assert len([x for x in kept_shapes
              if x[-1:] == (config.intermediate_size,)]) > 3 * layers
  np.testing.assert_allclose(value, kept_value, rtol=1e-6)
  for a, c in zip(jax.tree.leaves(grads), jax.tree.leaves(kept_grads)):
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
