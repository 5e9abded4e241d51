"""Tests for divrl.models.hf (Hugging Face checkpoint interop).

Tests marked ``hf`` compare against torch/transformers and are skipped when
the hf extra is not installed; the others need neither (they write
safetensors files and config.json by hand).
"""

import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from divrl.models import (CheckpointError, CheckpointNotFoundError, Decoder,
                          DecoderConfig, RopeScaling, config_from_hf,
                          config_to_hf, load_hf, save_hf)
from divrl.sharding import make_mesh

TOL = 1e-4


@functools.partial(nnx.jit)
def _forward(model, tokens, positions, attention_mask):
  return model(tokens, positions=positions, attention_mask=attention_mask)


def _logits(model, tokens, attention_mask=None):
  tokens = jnp.asarray(tokens, jnp.int32)
  if attention_mask is None:
    attention_mask = np.ones(tokens.shape, bool)
  mask = np.asarray(attention_mask, bool)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return np.asarray(_forward(model, tokens, jnp.asarray(positions, jnp.int32),
                             jnp.asarray(mask)))


def _params(model):
  return {"/".join(map(str, p)): np.asarray(v.get_value())
          for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _assert_bitwise_equal(a, b):
  pa, pb = _params(a), _params(b)
  assert pa.keys() == pb.keys()
  for k in pa:
    assert pa[k].dtype == pb[k].dtype, k
    assert pa[k].shape == pb[k].shape, k
    np.testing.assert_array_equal(pa[k].view(np.uint8), pb[k].view(np.uint8),
                                  err_msg=k)


def _random_decoder(config, seed=0):
  """A Decoder with every parameter (norm scales and biases too) random."""
  # Abstract init plus numpy draws: no per-shape compilation of random ops.
  model = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(seed)))
  state = nnx.state(model, nnx.Param)
  paths_leaves, treedef = jax.tree.flatten_with_path(state)
  rng = np.random.default_rng(seed)
  new = []
  for path, x in paths_leaves:
    noise = rng.normal(size=x.shape).astype(np.float32)
    is_scale = "scale" in jax.tree_util.keystr(path)
    new.append(jnp.asarray(1.0 + 0.3 * noise if is_scale else 0.2 * noise,
                           x.dtype))
  nnx.update(model, jax.tree.unflatten(treedef, new))
  return model


def _tiny(**overrides):
  base = dict(vocab_size=37, hidden_size=32, num_layers=2, num_heads=4,
              num_kv_heads=2, intermediate_size=48, head_dim=16,
              max_position_embeddings=128, rms_norm_eps=1e-5)
  base.update(overrides)
  return DecoderConfig(**base)


# ------------------------------------------------------- save/load (no torch)

ROUND_TRIP_CONFIGS = {
    "llama_tied_f32": _tiny(),
    "qwen2_untied_bf16": _tiny(qkv_bias=True, tie_word_embeddings=False,
                               param_dtype=jnp.bfloat16,
                               rope_theta=1000000.0),
    "llama3_rope_untied": _tiny(tie_word_embeddings=False, rope_scaling=(
        RopeScaling(8.0, 1.0, 4.0, 32))),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CONFIGS))
@pytest.mark.parametrize("max_shard_bytes", [None, 3000])
def test_save_load_round_trip_is_bitwise(tmp_path, name, max_shard_bytes):
  config = ROUND_TRIP_CONFIGS[name]
  model = _random_decoder(config)
  save_hf(model, tmp_path, max_shard_bytes=max_shard_bytes)
  sharded = os.path.exists(tmp_path / "model.safetensors.index.json")
  assert sharded == (max_shard_bytes is not None)
  assert os.path.exists(tmp_path / "model.safetensors") == (not sharded)
  loaded = load_hf(tmp_path, param_dtype=config.param_dtype)
  assert loaded.config == config
  _assert_bitwise_equal(model, loaded)


def test_save_hf_shards_respect_max_bytes_and_resave_replaces(tmp_path):
  model = _random_decoder(_tiny(tie_word_embeddings=False))
  limit = 5000
  save_hf(model, tmp_path, max_shard_bytes=limit)
  with open(tmp_path / "model.safetensors.index.json") as f:
    index = json.load(f)
  files = sorted(set(index["weight_map"].values()))
  assert len(files) > 1
  assert files == sorted(f for f in os.listdir(tmp_path)
                         if f.startswith("model-"))
  total = 0
  for file in files:
    tensors = load_file(tmp_path / file)
    size = sum(t.nbytes for t in tensors.values())
    total += size
    assert size <= limit or len(tensors) == 1
    for k in tensors:
      assert index["weight_map"][k] == file
  assert index["metadata"]["total_size"] == total
  # Tied models store no lm_head; untied ones do, as [V, d].
  assert load_file(tmp_path / index["weight_map"]["lm_head.weight"])[
      "lm_head.weight"].shape == (37, 32)
  # Saving again unsharded removes the old shards and the index.
  save_hf(model, tmp_path)
  assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
  _assert_bitwise_equal(model, load_hf(tmp_path))


def test_load_under_mesh_shards_parameters(tmp_path):
  # Vocabulary and every other axis divisible by the mesh axes.
  model = _random_decoder(_tiny(vocab_size=40, tie_word_embeddings=False,
                                qkv_bias=True))
  save_hf(model, tmp_path)
  mesh = make_mesh((2, 2, 2), ("data", "fsdp", "tensor"))
  with jax.set_mesh(mesh):
    loaded = load_hf(tmp_path)
    q = loaded.layers[0].attn.q_proj.kernel[...]
    assert q.sharding.spec == P("fsdp", "tensor")
    assert loaded.embedding[...].sharding.spec == P("tensor", "fsdp")
    assert loaded.lm_head[...].sharding.spec == P("fsdp", "tensor")
    assert len(q.sharding.device_set) == 8
  _assert_bitwise_equal(model, loaded)


def test_save_hf_rejects_model_type_that_contradicts_qkv_bias(tmp_path):
  model = _random_decoder(_tiny(qkv_bias=True))
  with pytest.raises(ValueError, match="model_type='llama'.*qkv_bias"):
    save_hf(model, tmp_path, model_type="llama")
  with pytest.raises(ValueError, match="model_type='gpt2'"):
    save_hf(model, tmp_path, model_type="gpt2")
  with pytest.raises(ValueError, match="max_shard_bytes"):
    save_hf(model, tmp_path, max_shard_bytes=0)


# ---------------------------------------------------------- config mapping --

def _hf_config(model_type="llama", **overrides):
  cfg = dict(model_type=model_type, vocab_size=11, hidden_size=8,
             intermediate_size=12, num_hidden_layers=2,
             num_attention_heads=2, num_key_value_heads=1,
             rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True,
             max_position_embeddings=64, hidden_act="silu")
  cfg.update(overrides)
  return cfg


def test_config_from_hf_fields():
  c = config_from_hf(_hf_config("qwen2", rope_theta=1e6,
                                tie_word_embeddings=False),
                     dtype=jnp.bfloat16)
  assert (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_layers,
          c.num_heads, c.num_kv_heads, c.head_dim) == (11, 8, 12, 2, 2, 1, 4)
  assert c.qkv_bias and not c.tie_word_embeddings
  assert c.rope_theta == 1e6 and c.rope_scaling is None
  assert c.max_position_embeddings == 64 and c.rms_norm_eps == 1e-6
  assert c.dtype == jnp.bfloat16 and c.param_dtype == jnp.float32
  llama = config_from_hf(_hf_config(head_dim=8, attention_bias=False))
  assert not llama.qkv_bias and llama.head_dim == 8
  # num_key_value_heads defaults to the number of heads.
  mha = _hf_config()
  del mha["num_key_value_heads"]
  assert config_from_hf(mha).num_kv_heads == 2


def test_config_rope_legacy_and_rope_parameters_agree():
  rs = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=32)
  legacy = config_from_hf(_hf_config(rope_theta=5e5, rope_scaling=dict(
      rs, rope_type="llama3")))
  older = config_from_hf(_hf_config(rope_theta=5e5, rope_scaling=dict(
      rs, type="llama3")))
  new_cfg = _hf_config(rope_parameters=dict(rs, rope_type="llama3",
                                            rope_theta=5e5))
  del new_cfg["rope_theta"]
  new = config_from_hf(new_cfg)
  assert legacy == older == new
  assert new.rope_theta == 5e5
  assert new.rope_scaling == RopeScaling(8.0, 1.0, 4.0, 32)
  plain = _hf_config(rope_parameters={"rope_type": "default",
                                      "rope_theta": 123.0})
  del plain["rope_theta"]
  assert config_from_hf(plain).rope_scaling is None
  assert config_from_hf(plain).rope_theta == 123.0
  # config_to_hf writes keys that config_from_hf reads back.
  assert config_from_hf(config_to_hf(new)) == new


@pytest.mark.parametrize("overrides,match", [
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "yarn"),
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0}), "linear"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 4.0}),
     "low_freq_factor"),
    (dict(rope_theta=1.0, rope_parameters={"rope_theta": 2.0}), "rope_theta"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(mlp_bias=True), "mlp_bias"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(hidden_size=None), "hidden_size"),
    (dict(model_type="gpt2"), "model_type='gpt2'"),
    (dict(model_type="qwen2", use_sliding_window=True), "use_sliding_window"),
])
def test_config_from_hf_rejects_unsupported(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_from_hf(_hf_config(**overrides))


# ------------------------------------------------- bad checkpoints (no torch)

def _hand_tensors(cfg, seed=0):
  """Tensors with HF names and shapes for ``cfg`` from ``_hf_config``."""
  rng = np.random.default_rng(seed)
  d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
  hd = d // cfg["num_attention_heads"]
  q, kv = d, cfg["num_key_value_heads"] * hd
  shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
  if not cfg["tie_word_embeddings"]:
    shapes["lm_head.weight"] = (v, d)
  for i in range(cfg["num_hidden_layers"]):
    pre = f"model.layers.{i}."
    shapes.update({
        pre + "input_layernorm.weight": (d,),
        pre + "post_attention_layernorm.weight": (d,),
        pre + "self_attn.q_proj.weight": (q, d),
        pre + "self_attn.k_proj.weight": (kv, d),
        pre + "self_attn.v_proj.weight": (kv, d),
        pre + "self_attn.o_proj.weight": (d, q),
        pre + "mlp.gate_proj.weight": (f, d),
        pre + "mlp.up_proj.weight": (f, d),
        pre + "mlp.down_proj.weight": (d, f),
    })
    if cfg["model_type"] == "qwen2":
      shapes.update({pre + "self_attn.q_proj.bias": (q,),
                     pre + "self_attn.k_proj.bias": (kv,),
                     pre + "self_attn.v_proj.bias": (kv,)})
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def _write(path, cfg, tensors):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(cfg, f)
  save_file(tensors, os.path.join(path, "model.safetensors"),
            metadata={"format": "pt"})


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_hand_written_checkpoint_loads_with_transposed_kernels(tmp_path,
                                                                model_type):
  cfg = _hf_config(model_type, tie_word_embeddings=False)
  tensors = _hand_tensors(cfg)
  # A stale rotary buffer saved by old transformers versions is ignored.
  tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(
      2, np.float32)
  _write(tmp_path, cfg, tensors)
  model = load_hf(tmp_path)
  np.testing.assert_array_equal(model.embedding[...],
                                tensors["model.embed_tokens.weight"])
  np.testing.assert_array_equal(model.lm_head[...],
                                tensors["lm_head.weight"].T)
  np.testing.assert_array_equal(
      model.layers[1].attn.k_proj.kernel[...],
      tensors["model.layers.1.self_attn.k_proj.weight"].T)
  np.testing.assert_array_equal(
      model.layers[1].mlp.down_proj.kernel[...],
      tensors["model.layers.1.mlp.down_proj.weight"].T)
  np.testing.assert_array_equal(
      model.layers[0].post_attention_norm.scale[...],
      tensors["model.layers.0.post_attention_layernorm.weight"])
  if model_type == "qwen2":
    np.testing.assert_array_equal(
        model.layers[0].attn.v_proj.bias[...],
        tensors["model.layers.0.self_attn.v_proj.bias"])


def test_missing_tensor_is_named(tmp_path):
  cfg = _hf_config()
  tensors = _hand_tensors(cfg)
  del tensors["model.layers.1.mlp.up_proj.weight"]
  _write(tmp_path, cfg, tensors)
  with pytest.raises(ValueError,
                     match=re.escape("model.layers.1.mlp.up_proj.weight")):
    load_hf(tmp_path)


def test_missing_bias_for_qwen2_is_named(tmp_path):
  cfg = _hf_config("qwen2")
  tensors = _hand_tensors(cfg)
  del tensors["model.layers.0.self_attn.k_proj.bias"]
  _write(tmp_path, cfg, tensors)
  with pytest.raises(ValueError,
                     match=re.escape("model.layers.0.self_attn.k_proj.bias")):
    load_hf(tmp_path)


@pytest.mark.parametrize("name", [
    "model.layers.0.self_attn.extra.weight",
    "model.layers.2.input_layernorm.weight",   # one layer too many
    "model.layers.0.self_attn.o_proj.bias",    # llama has no o_proj bias
])
def test_unknown_tensor_is_named(tmp_path, name):
  cfg = _hf_config()
  tensors = _hand_tensors(cfg)
  tensors[name] = np.zeros(8, np.float32)
  _write(tmp_path, cfg, tensors)
  with pytest.raises(ValueError, match=re.escape(name)):
    load_hf(tmp_path)


def test_wrong_shape_names_tensor_and_both_shapes(tmp_path):
  cfg = _hf_config()
  tensors = _hand_tensors(cfg)
  name = "model.layers.0.self_attn.k_proj.weight"
  tensors[name] = np.zeros((8, 8), np.float32)  # expected (4, 8): GQA
  _write(tmp_path, cfg, tensors)
  with pytest.raises(ValueError, match=re.escape(name) + r".*\(8, 8\).*"
                     r"\(4, 8\)"):
    load_hf(tmp_path)


def test_non_float_tensor_is_named(tmp_path):
  cfg = _hf_config()
  tensors = _hand_tensors(cfg)
  tensors["model.norm.weight"] = np.ones(8, np.int32)
  _write(tmp_path, cfg, tensors)
  with pytest.raises(ValueError, match=re.escape("model.norm.weight")):
    load_hf(tmp_path)


def test_missing_config_names_path(tmp_path):
  save_file(_hand_tensors(_hf_config()), tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match=re.escape(
      os.path.join(str(tmp_path), "config.json"))) as info:
    load_hf(tmp_path)
  assert isinstance(info.value, FileNotFoundError)
  assert isinstance(info.value, CheckpointNotFoundError)


def test_missing_weights_name_directory(tmp_path):
  with open(tmp_path / "config.json", "w") as f:
    json.dump(_hf_config(), f)
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    load_hf(tmp_path)


def test_unknown_model_type_is_named(tmp_path):
  cfg = _hf_config("gpt2")
  _write(tmp_path, cfg, _hand_tensors(_hf_config()))
  with pytest.raises(CheckpointError, match="gpt2"):
    load_hf(tmp_path)


def test_tied_lm_head_must_equal_embedding(tmp_path):
  cfg = _hf_config()
  tensors = _hand_tensors(cfg)
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
  _write(tmp_path / "same", cfg, tensors)
  model = load_hf(tmp_path / "same")
  assert model.lm_head is None
  tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1
  _write(tmp_path / "differs", cfg, tensors)
  with pytest.raises(ValueError, match="lm_head.weight.*tie_word_embeddings"):
    load_hf(tmp_path / "differs")


def test_sharded_index_errors_name_tensor(tmp_path):
  cfg = _hf_config()
  tensors = _hand_tensors(cfg)
  names = sorted(tensors)
  with open(tmp_path / "config.json", "w") as f:
    json.dump(cfg, f)
  half = len(names) // 2
  save_file({k: tensors[k] for k in names[:half]},
            tmp_path / "model-00001-of-00002.safetensors")
  save_file({k: tensors[k] for k in names[half:]},
            tmp_path / "model-00002-of-00002.safetensors")
  weight_map = {k: ("model-00001-of-00002.safetensors" if i < half else
                    "model-00002-of-00002.safetensors")
                for i, k in enumerate(names)}
  with open(tmp_path / "model.safetensors.index.json", "w") as f:
    json.dump({"weight_map": weight_map}, f)
  model = load_hf(tmp_path)
  np.testing.assert_array_equal(model.final_norm.scale[...],
                                tensors["model.norm.weight"])
  # The index points a tensor at the wrong shard.
  weight_map[names[0]] = "model-00002-of-00002.safetensors"
  with open(tmp_path / "model.safetensors.index.json", "w") as f:
    json.dump({"weight_map": weight_map}, f)
  with pytest.raises(ValueError, match=re.escape(names[0])):
    load_hf(tmp_path)


def test_bf16_safetensors_without_torch(tmp_path):
  cfg = _hf_config(tie_word_embeddings=False)
  tensors = {k: v.astype(ml_dtypes.bfloat16)
             for k, v in _hand_tensors(cfg).items()}
  _write(tmp_path, cfg, tensors)
  as_f32 = load_hf(tmp_path)
  as_bf16 = load_hf(tmp_path, param_dtype=jnp.bfloat16)
  w = tensors["model.layers.0.self_attn.q_proj.weight"]
  assert as_bf16.layers[0].attn.q_proj.kernel[...].dtype == jnp.bfloat16
  np.testing.assert_array_equal(
      np.asarray(as_bf16.layers[0].attn.q_proj.kernel[...]).view(np.uint16),
      w.T.view(np.uint16))
  np.testing.assert_array_equal(as_f32.layers[0].attn.q_proj.kernel[...],
                                w.T.astype(np.float32))


# ------------------------------------------------ against transformers (hf) --

def _hf_cases():
  """Tiny transformers configs: (kind, kwargs)."""
  return {
      "qwen2_tied_gqa": ("qwen2", dict(
          vocab_size=97, hidden_size=48, intermediate_size=80,
          num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
          tie_word_embeddings=True, rope_theta=1000000.0,
          max_position_embeddings=128, rms_norm_eps=1e-6)),
      "llama3_untied_gqa": ("llama", dict(
          vocab_size=97, hidden_size=64, intermediate_size=96,
          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
          head_dim=16, tie_word_embeddings=False, rope_theta=10000.0,
          rope_scaling=dict(rope_type="llama3", factor=8.0,
                            low_freq_factor=1.0, high_freq_factor=4.0,
                            original_max_position_embeddings=32),
          max_position_embeddings=256, rms_norm_eps=1e-5)),
      "llama_tied_mha_head_dim": ("llama", dict(
          vocab_size=61, hidden_size=32, intermediate_size=64,
          num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
          head_dim=16, tie_word_embeddings=True, rope_theta=500000.0,
          max_position_embeddings=128, rms_norm_eps=1e-5)),
  }


HF_CASES = sorted(_hf_cases())


def _hf_model(case, seed=0):
  """A tiny random transformers model with all weights (norms too) random."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  kind, kwargs = _hf_cases()[case]
  if kind == "qwen2":
    config = transformers.Qwen2Config(**kwargs)
    cls = transformers.Qwen2ForCausalLM
  else:
    config = transformers.LlamaConfig(**kwargs)
    cls = transformers.LlamaForCausalLM
  torch.manual_seed(seed)
  model = cls(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      else:
        p.copy_(0.2 * torch.randn_like(p))
  return model.eval()


def _torch_logits(model, tokens, attention_mask=None):
  import torch  # pylint: disable=g-import-not-at-top
  kwargs = {}
  if attention_mask is not None:
    mask = np.asarray(attention_mask, np.int64)
    kwargs["attention_mask"] = torch.tensor(mask)
    kwargs["position_ids"] = torch.tensor(
        np.maximum(np.cumsum(mask, axis=1) - 1, 0))
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens, np.int64)),
                 **kwargs).logits.float().numpy()


def _tokens(vocab, b=3, s=40, seed=0):
  return np.random.default_rng(seed).integers(0, vocab, (b, s))


@pytest.mark.hf
@pytest.mark.parametrize("case", HF_CASES)
def test_logits_match_transformers(tmp_path, case):
  hf = _hf_model(case)
  hf.save_pretrained(tmp_path / "single")
  hf.save_pretrained(tmp_path / "sharded", max_shard_size="8KB")
  assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
  model = load_hf(tmp_path / "single")
  _assert_bitwise_equal(model, load_hf(tmp_path / "sharded"))
  assert (model.lm_head is None) == hf.config.tie_word_embeddings
  tokens = _tokens(hf.config.vocab_size)
  ref = _torch_logits(hf, tokens)
  out = _logits(model, tokens)
  diff = float(np.abs(out - ref).max())
  print(f"{case}: max abs logit diff {diff:.3g} (logit scale "
        f"{np.abs(ref).max():.3g})")
  assert np.abs(ref).max() > 1.0  # Not a trivially small comparison.
  assert diff < TOL


@pytest.mark.hf
@pytest.mark.parametrize("case", ["qwen2_tied_gqa", "llama3_untied_gqa"])
def test_left_padded_logits_match_transformers(tmp_path, case):
  hf = _hf_model(case, seed=1)
  hf.save_pretrained(tmp_path)
  model = load_hf(tmp_path)
  tokens = _tokens(hf.config.vocab_size, b=4, s=36, seed=1)
  lengths = np.array([36, 20, 5, 33])
  mask = np.arange(36)[None, :] >= (36 - lengths)[:, None]
  ref = _torch_logits(hf, tokens, mask)
  out = _logits(model, tokens, mask)
  diff = float(np.abs(out - ref)[mask].max())
  print(f"{case} left-padded: max abs logit diff {diff:.3g}")
  assert diff < TOL
  # Each row equals the unpadded forward of its real tokens.
  row = 2
  alone = _logits(model, tokens[row:row + 1, 36 - lengths[row]:])
  np.testing.assert_allclose(out[row, 36 - lengths[row]:], alone[0],
                             atol=TOL, rtol=0)


@pytest.mark.hf
def test_bf16_checkpoint_matches_transformers(tmp_path):
  torch = pytest.importorskip("torch")
  hf = _hf_model("llama3_untied_gqa", seed=2)
  hf.to(torch.bfloat16).save_pretrained(tmp_path)
  # Reference: bf16-rounded weights, float32 compute. (Not hf.to(float32):
  # .to(bfloat16) also rounded the rotary inv_freq buffer.)
  hf_rounded = _hf_model("llama3_untied_gqa", seed=2)
  with torch.no_grad():
    for p in hf_rounded.parameters():
      p.copy_(p.to(torch.bfloat16).to(torch.float32))
  model = load_hf(tmp_path)
  tokens = _tokens(hf.config.vocab_size, seed=2)
  diff = float(np.abs(_logits(model, tokens)
                      - _torch_logits(hf_rounded, tokens)).max())
  print(f"bf16 checkpoint: max abs logit diff {diff:.3g}")
  assert diff < TOL
  as_bf16 = load_hf(tmp_path, param_dtype=jnp.bfloat16)
  sd = {k: v.to(torch.bfloat16).view(torch.int16).numpy()
        for k, v in hf.state_dict().items()}
  np.testing.assert_array_equal(
      np.asarray(as_bf16.layers[1].mlp.gate_proj.kernel[...]).view(np.int16),
      sd["model.layers.1.mlp.gate_proj.weight"].T)
  np.testing.assert_array_equal(
      np.asarray(as_bf16.embedding[...]).view(np.int16),
      sd["model.embed_tokens.weight"])


@pytest.mark.hf
@pytest.mark.parametrize("case", ["qwen2_tied_gqa", "llama3_untied_gqa"])
@pytest.mark.parametrize("max_shard_bytes", [None, 10_000])
def test_save_hf_loads_in_transformers(tmp_path, case, max_shard_bytes):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  hf = _hf_model(case, seed=3)
  hf.save_pretrained(tmp_path / "orig")
  model = load_hf(tmp_path / "orig")
  save_hf(model, tmp_path / "ours", max_shard_bytes=max_shard_bytes)
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours")
  assert type(back) is type(hf)
  assert back.config.tie_word_embeddings == hf.config.tie_word_embeddings
  orig_sd, back_sd = hf.state_dict(), back.state_dict()
  assert orig_sd.keys() == back_sd.keys()
  for k in orig_sd:
    assert torch.equal(orig_sd[k], back_sd[k]), k
  tokens = _tokens(hf.config.vocab_size, seed=3)
  ref = _torch_logits(hf, tokens)
  diff_back = float(np.abs(_torch_logits(back.eval(), tokens) - ref).max())
  diff_ours = float(np.abs(_logits(model, tokens) - ref).max())
  print(f"{case} save_hf: transformers-reloaded diff {diff_back:.3g}, "
        f"divrl diff {diff_ours:.3g}")
  assert diff_back < TOL and diff_ours < TOL


@pytest.mark.hf
@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CONFIGS))
def test_save_hf_of_divrl_decoder_matches_transformers(tmp_path, name):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = ROUND_TRIP_CONFIGS[name]
  model = _random_decoder(config, seed=4)
  save_hf(model, tmp_path)
  # Upcast bf16 parameters exactly; both sides then compute in float32.
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, dtype=torch.float32).eval()
  assert hf.config.head_dim == config.head_dim
  tokens = _tokens(config.vocab_size, s=48, seed=4)  # past 32 (llama3 RoPE)
  ref = _torch_logits(hf, tokens)
  diff = float(np.abs(_logits(model, tokens) - ref).max())
  print(f"{name} divrl -> transformers: max abs logit diff {diff:.3g} "
        f"(logit scale {np.abs(ref).max():.3g})")
  assert np.abs(ref).max() > 1.0
  assert diff < TOL
