"""Hugging Face interop for the Llama and Qwen2 families.

``load_hf(path)`` turns a local Hugging Face checkpoint directory
(``config.json`` plus ``model.safetensors`` or sharded
``model-XXXXX-of-YYYYY.safetensors`` files listed in
``model.safetensors.index.json``) into a ``divrl.models.Decoder``;
``save_hf(model, path)`` writes a directory that
``transformers.AutoModelForCausalLM.from_pretrained`` loads and that
``load_hf`` reads back bitwise. Neither function needs torch or transformers,
and nothing is ever downloaded: ``path`` must be a local directory.

Config mapping (``config_from_hf``). ``hidden_size``, ``intermediate_size``,
``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``
(defaults to the number of heads), ``head_dim`` (defaults to
``hidden_size // num_attention_heads``), ``rms_norm_eps``,
``tie_word_embeddings`` (defaults to False, as in both transformers config
classes), ``vocab_size`` and ``max_position_embeddings`` map one to one. The
RoPE base comes from the top-level ``rope_theta`` (older configs) or from
``rope_parameters["rope_theta"]`` (transformers >= 5); the RoPE type from
``rope_scaling`` or ``rope_parameters`` (``rope_type`` or legacy ``type``):
``"default"``/absent means no scaling, ``"llama3"`` becomes a
``RopeScaling``, anything else is rejected. Qwen2 always has q/k/v biases
(``qkv_bias=True``). Llama's ``attention_bias=True`` also puts a bias on
``o_proj``, which this architecture lacks, so it is rejected, as are
``mlp_bias=True``, a ``hidden_act`` other than SiLU and Qwen2 sliding-window
attention.

Tensor mapping. Hugging Face ``nn.Linear`` weights are ``[out, in]``; divrl
kernels are ``[in, out]``, so they are transposed on the way in and out::

  model.embed_tokens.weight                   embedding            [V, d]
  model.layers.{i}.input_layernorm.weight     layers[i].input_norm.scale
  model.layers.{i}.self_attn.{q,k,v,o}_proj.weight
                                              layers[i].attn.*_proj.kernel (T)
  model.layers.{i}.self_attn.{q,k,v}_proj.bias
                                              layers[i].attn.*_proj.bias
  model.layers.{i}.post_attention_layernorm.weight
                                              layers[i].post_attention_norm
  model.layers.{i}.mlp.{gate,up,down}_proj.weight
                                              layers[i].mlp.*_proj.kernel (T)
  model.norm.weight                           final_norm.scale
  lm_head.weight                              lm_head [d, V] (T), untied only

Strictness. Every tensor the model needs must be present with exactly the
shape the config implies, and every tensor in the checkpoint must be used;
otherwise a ``CheckpointError`` (a ``ValueError``) names the tensor (and the
expected and actual shapes). Two exceptions: ``rotary_emb.inv_freq`` buffers
(``model.rotary_emb.inv_freq`` or ``model.layers.{i}.self_attn.rotary_emb.
inv_freq``), which older transformers versions saved although they are
recomputed from the config, are ignored; and a tied model may carry an
``lm_head.weight``, which is accepted only if it equals the embedding
(a differing one would be silently dropped, so it is an error that suggests
setting ``tie_word_embeddings`` to false).

Reading. The safetensors header is validated with ``safetensors.safe_open``
and then parsed directly, and tensors are memory-mapped with numpy. This
handles dtypes numpy lacks (bfloat16, float8) through ``ml_dtypes`` (a jax
dependency), and reads only what is needed. Tensors are cast to
``param_dtype`` on the host. The model is built abstractly with
``nnx.eval_shape`` (no random initialisation) and then filled. Under an
active mesh (``jax.set_mesh``) each parameter is created directly with the
``NamedSharding`` of its annotation, each device reading only its slice.

Writing. ``save_hf`` writes parameters in their own dtype, omits
``lm_head.weight`` for tied models (as transformers does), writes the legacy
``rope_theta``/``rope_scaling`` keys that both transformers 4.x and 5.x read,
and replaces any weight files of a previous save in ``path``
(``model.safetensors``, ``model-*-of-*.safetensors`` and the index). Arrays
are gathered to the host, so it is meant for single-process use.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from divrl.models.decoder import Decoder, DecoderConfig, RopeScaling

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

_SHARD_RE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_IGNORABLE_RE = re.compile(
    r"^model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq$")

# safetensors dtype codes -> numpy dtypes (ml_dtypes for the ones numpy lacks).
_ST_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


class CheckpointError(ValueError):
  """A checkpoint or config that does not fit the model; names the culprit."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
  """A required checkpoint file (config.json, weights) does not exist."""


# ----------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------

def _require(hf_config: Mapping[str, Any], key: str) -> Any:
  if hf_config.get(key) is None:
    raise CheckpointError(f"Hugging Face config is missing the required "
                          f"field {key!r}")
  return hf_config[key]


def _rope_from_hf(hf_config: Mapping[str, Any]
                  ) -> tuple[float, RopeScaling | None]:
  """``(rope_theta, rope_scaling)`` from legacy or ``rope_parameters`` keys."""
  params = hf_config.get("rope_parameters")
  if params is not None:
    if not isinstance(params, Mapping) or any(
        isinstance(v, Mapping) for v in params.values()):
      raise CheckpointError(
          "rope_parameters must be a single flat dict (per-layer-type RoPE "
          f"parameters are not supported), got {params!r}")
  legacy_scaling = hf_config.get("rope_scaling")
  if legacy_scaling is not None and not isinstance(legacy_scaling, Mapping):
    raise CheckpointError(f"rope_scaling must be a dict or null, got "
                          f"{legacy_scaling!r}")

  theta = hf_config.get("rope_theta")
  if params is not None and params.get("rope_theta") is not None:
    if theta is not None and float(theta) != float(params["rope_theta"]):
      raise CheckpointError(
          f"rope_theta={theta} disagrees with rope_parameters['rope_theta']="
          f"{params['rope_theta']}")
    theta = params["rope_theta"]
  theta = 10000.0 if theta is None else float(theta)

  # The scaling dict: rope_parameters when it says more than the default,
  # else the legacy rope_scaling.
  field, scaling = "rope_parameters", params
  if legacy_scaling is not None and (
      params is None
      or params.get("rope_type", params.get("type", "default")) == "default"):
    field, scaling = "rope_scaling", legacy_scaling
  if scaling is None:
    return theta, None
  rope_type = scaling.get("rope_type", scaling.get("type", "default"))
  if rope_type == "default":
    return theta, None
  if rope_type != "llama3":
    raise CheckpointError(
        f"{field} has rope_type={rope_type!r}; only 'default' and 'llama3' "
        "RoPE are supported")
  try:
    return theta, RopeScaling(
        factor=float(scaling["factor"]),
        low_freq_factor=float(scaling["low_freq_factor"]),
        high_freq_factor=float(scaling["high_freq_factor"]),
        original_max_position_embeddings=int(
            scaling["original_max_position_embeddings"]))
  except KeyError as e:
    raise CheckpointError(f"{field} of rope_type 'llama3' lacks the field "
                          f"{e.args[0]!r}") from None


def config_from_hf(hf_config: Mapping[str, Any], *, dtype: Any = jnp.float32,
                   param_dtype: Any = jnp.float32) -> DecoderConfig:
  """Maps a Hugging Face ``config.json`` dict to a ``DecoderConfig``.

  Args:
    hf_config: The parsed ``config.json`` of a ``llama`` or ``qwen2`` model.
    dtype: Compute dtype of the resulting config.
    param_dtype: Parameter dtype of the resulting config.

  Returns:
    The equivalent ``DecoderConfig`` (see the module docstring for the field
    mapping).

  Raises:
    CheckpointError: (a ``ValueError``) naming the field that is missing, has
      an unknown value (e.g. ``model_type``, ``rope_type``) or asks for a
      feature this architecture lacks.
  """
  model_type = hf_config.get("model_type")
  if model_type not in _ARCHITECTURES:
    raise CheckpointError(
        f"unsupported model_type={model_type!r}; supported: "
        f"{sorted(_ARCHITECTURES)}")
  act = hf_config.get("hidden_act", "silu")
  if act != "silu":
    raise CheckpointError(f"hidden_act={act!r} is not supported (only 'silu')")
  if model_type == "llama":
    if hf_config.get("attention_bias", False):
      raise CheckpointError(
          "attention_bias=True is not supported: Llama then also has an "
          "o_proj bias, which this decoder lacks")
    if hf_config.get("mlp_bias", False):
      raise CheckpointError("mlp_bias=True is not supported")
    qkv_bias = False
  else:
    if hf_config.get("use_sliding_window", False):
      raise CheckpointError("use_sliding_window=True (sliding-window "
                            "attention) is not supported")
    layer_types = hf_config.get("layer_types") or ()
    if any(t != "full_attention" for t in layer_types):
      raise CheckpointError(f"layer_types={list(layer_types)!r}: only "
                            "'full_attention' layers are supported")
    qkv_bias = True

  num_heads = int(_require(hf_config, "num_attention_heads"))
  num_kv_heads = hf_config.get("num_key_value_heads")
  rope_theta, rope_scaling = _rope_from_hf(hf_config)
  head_dim = hf_config.get("head_dim")
  extra = {}
  if hf_config.get("max_position_embeddings") is not None:
    extra["max_position_embeddings"] = int(
        hf_config["max_position_embeddings"])
  if hf_config.get("rms_norm_eps") is not None:
    extra["rms_norm_eps"] = float(hf_config["rms_norm_eps"])
  if hf_config.get("initializer_range") is not None:
    extra["initializer_range"] = float(hf_config["initializer_range"])
  return DecoderConfig(
      vocab_size=int(_require(hf_config, "vocab_size")),
      hidden_size=int(_require(hf_config, "hidden_size")),
      num_layers=int(_require(hf_config, "num_hidden_layers")),
      num_heads=num_heads,
      num_kv_heads=num_heads if num_kv_heads is None else int(num_kv_heads),
      intermediate_size=int(_require(hf_config, "intermediate_size")),
      head_dim=None if head_dim is None else int(head_dim),
      rope_theta=rope_theta,
      rope_scaling=rope_scaling,
      tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
      qkv_bias=qkv_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      **extra)


def config_to_hf(config: DecoderConfig, *, model_type: str | None = None
                 ) -> dict[str, Any]:
  """The Hugging Face ``config.json`` dict for ``config``.

  Args:
    config: The decoder configuration.
    model_type: ``"llama"`` or ``"qwen2"``; by default ``"qwen2"`` when
      ``config.qkv_bias`` else ``"llama"``. Must agree with ``qkv_bias``
      (Qwen2 always has q/k/v biases, Llama here never does).

  Returns:
    A JSON-serialisable dict.

  Raises:
    CheckpointError: for an unknown ``model_type`` or one that contradicts
      ``config.qkv_bias``.
  """
  c = config
  if model_type is None:
    model_type = "qwen2" if c.qkv_bias else "llama"
  if model_type not in _ARCHITECTURES:
    raise CheckpointError(f"unsupported model_type={model_type!r}; "
                          f"supported: {sorted(_ARCHITECTURES)}")
  if (model_type == "qwen2") != bool(c.qkv_bias):
    raise CheckpointError(
        f"model_type={model_type!r} cannot represent qkv_bias={c.qkv_bias} "
        "(qwen2 always has q/k/v biases, llama has none here)")
  rope_scaling = None
  if c.rope_scaling is not None:
    rs = c.rope_scaling
    rope_scaling = {
        "rope_type": "llama3", "factor": rs.factor,
        "low_freq_factor": rs.low_freq_factor,
        "high_freq_factor": rs.high_freq_factor,
        "original_max_position_embeddings":
            rs.original_max_position_embeddings}
  out = {
      "architectures": [_ARCHITECTURES[model_type]],
      "model_type": model_type,
      "vocab_size": c.vocab_size,
      "hidden_size": c.hidden_size,
      "intermediate_size": c.intermediate_size,
      "num_hidden_layers": c.num_layers,
      "num_attention_heads": c.num_heads,
      "num_key_value_heads": c.num_kv_heads,
      "head_dim": c.head_dim,
      "hidden_act": "silu",
      "max_position_embeddings": c.max_position_embeddings,
      "rms_norm_eps": c.rms_norm_eps,
      "rope_theta": c.rope_theta,
      "rope_scaling": rope_scaling,
      "tie_word_embeddings": c.tie_word_embeddings,
      "initializer_range": c.initializer_range,
      "attention_dropout": 0.0,
      "torch_dtype": np.dtype(c.param_dtype).name,
  }
  if model_type == "llama":
    out.update(attention_bias=False, mlp_bias=False)
  else:
    out.update(use_sliding_window=False, sliding_window=None)
  return out


# ----------------------------------------------------------------------------
# Parameter names
# ----------------------------------------------------------------------------

_LAYER_NAMES = {
    ("input_norm", "scale"): ("input_layernorm.weight", False),
    ("post_attention_norm", "scale"): (
        "post_attention_layernorm.weight", False),
}
for _p in ("q_proj", "k_proj", "v_proj", "o_proj"):
  _LAYER_NAMES[("attn", _p, "kernel")] = (f"self_attn.{_p}.weight", True)
  _LAYER_NAMES[("attn", _p, "bias")] = (f"self_attn.{_p}.bias", False)
for _p in ("gate_proj", "up_proj", "down_proj"):
  _LAYER_NAMES[("mlp", _p, "kernel")] = (f"mlp.{_p}.weight", True)


def _hf_name(path: tuple) -> tuple[str, bool]:
  """``(hf_name, transposed)`` for a divrl parameter path."""
  if path == ("embedding",):
    return "model.embed_tokens.weight", False
  if path == ("lm_head",):
    return "lm_head.weight", True
  if path == ("final_norm", "scale"):
    return "model.norm.weight", False
  if len(path) >= 2 and path[0] == "layers" and tuple(path[2:]) in _LAYER_NAMES:
    name, transposed = _LAYER_NAMES[tuple(path[2:])]
    return f"model.layers.{int(path[1])}.{name}", transposed
  raise CheckpointError(f"divrl parameter {'.'.join(map(str, path))} has no "
                        "Hugging Face name")


def _param_items(state) -> list[tuple[tuple, Any]]:
  return [(tuple(p), v) for p, v in nnx.to_flat_state(state)]


# ----------------------------------------------------------------------------
# safetensors reading
# ----------------------------------------------------------------------------

class _TensorRef:
  """A tensor inside a safetensors file, read lazily through a memmap."""

  def __init__(self, name: str, file: str, dtype: str, shape: tuple,
               start: int, end: int):
    self.name, self.file, self.dtype_code = name, file, dtype
    self.shape, self.start, self.end = shape, start, end

  def numpy(self) -> np.ndarray:
    dt = _ST_DTYPES.get(self.dtype_code)
    if dt is None:
      raise CheckpointError(
          f"tensor {self.name!r} in {self.file} has dtype {self.dtype_code}; "
          f"supported: {sorted(_ST_DTYPES)}")
    n = math.prod(self.shape)
    if self.end - self.start != n * dt.itemsize:
      raise CheckpointError(
          f"tensor {self.name!r} in {self.file}: {self.end - self.start} "
          f"bytes do not fit shape {self.shape} of {self.dtype_code}")
    if n == 0:
      return np.zeros(self.shape, dt)
    return np.memmap(self.file, dtype=dt, mode="r", offset=self.start,
                     shape=self.shape)


def _read_header(file: str) -> dict[str, _TensorRef]:
  """The tensors of one safetensors file, validated, by name."""
  if not os.path.isfile(file):
    raise CheckpointNotFoundError(f"safetensors file {file} does not exist")
  try:
    with safe_open(file, framework="np") as f:  # Validates the header.
      names = set(f.keys())
  except (SafetensorError, OSError) as e:
    raise CheckpointError(f"{file} is not a valid safetensors file: "
                          f"{e}") from e
  with open(file, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
  base = 8 + n
  out = {}
  for name in names:
    entry = header[name]
    start, end = entry["data_offsets"]
    out[name] = _TensorRef(name, file, entry["dtype"], tuple(entry["shape"]),
                           base + start, base + end)
  return out


def _index_checkpoint(path: str) -> dict[str, _TensorRef]:
  """All tensors of the checkpoint in directory ``path``, by name."""
  single = os.path.join(path, WEIGHTS_NAME)
  index_file = os.path.join(path, WEIGHTS_INDEX_NAME)
  if os.path.isfile(single):  # Same preference as transformers.
    return _read_header(single)
  if not os.path.isfile(index_file):
    raise CheckpointNotFoundError(
        f"no weights in {path}: neither {WEIGHTS_NAME} nor "
        f"{WEIGHTS_INDEX_NAME} exists")
  with open(index_file) as f:
    try:
      weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise CheckpointError(f"{index_file} is not a valid index (needs a "
                            f"'weight_map'): {e!r}") from e
  tensors: dict[str, _TensorRef] = {}
  for file in sorted(set(weight_map.values())):
    for name, ref in _read_header(os.path.join(path, file)).items():
      if name in tensors:
        raise CheckpointError(f"tensor {name!r} appears in both "
                              f"{tensors[name].file} and {ref.file}")
      tensors[name] = ref
  for name, file in weight_map.items():
    if name not in tensors or os.path.basename(tensors[name].file) != file:
      raise CheckpointError(f"{index_file} places tensor {name!r} in {file}, "
                            "which does not contain it")
  return tensors


# ----------------------------------------------------------------------------
# load / save
# ----------------------------------------------------------------------------

def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
  """The parsed ``config.json`` of the checkpoint directory ``path``."""
  file = os.path.join(os.fspath(path), CONFIG_NAME)
  if not os.path.isfile(file):
    raise CheckpointNotFoundError(f"{file} does not exist (is {path} a "
                                  "Hugging Face checkpoint directory?)")
  with open(file) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise CheckpointError(f"{file} is not valid JSON: {e}") from e


def _place(name: str, host: np.ndarray, abstract, dtype) -> jax.Array:
  """``host`` as a device array, sharded like ``abstract`` under a mesh."""
  sharding = getattr(abstract, "sharding", None)
  get_mesh = getattr(jax.sharding, "get_mesh", None)  # Newer jax only.
  mesh = get_mesh() if get_mesh is not None else None
  if (isinstance(sharding, NamedSharding) and mesh is not None
      and not mesh.empty):
    concrete = NamedSharding(mesh, sharding.spec)
    try:
      return jax.make_array_from_callback(
          host.shape, concrete, lambda idx: np.array(host[idx], dtype=dtype))
    except ValueError as e:
      raise ValueError(f"tensor {name!r} of shape {host.shape} cannot be "
                       f"sharded as {sharding.spec} over the active mesh "
                       f"{dict(mesh.shape)}: {e}") from e
  # np.array copies, so the result never aliases the memory-mapped file.
  return jax.device_put(np.array(host, dtype=dtype))


def load_hf(path: str | os.PathLike, *, dtype: Any = jnp.float32,
            param_dtype: Any = jnp.float32) -> Decoder:
  """Loads a local Llama / Qwen2 Hugging Face checkpoint as a ``Decoder``.

  Args:
    path: A directory with ``config.json`` and ``model.safetensors`` or a
      sharded checkpoint (``model.safetensors.index.json``).
    dtype: Compute dtype of the model.
    param_dtype: Dtype the parameters are cast to (on the host).

  Returns:
    The filled ``Decoder``; under an active mesh its parameters are sharded
    according to their annotations.

  Raises:
    CheckpointNotFoundError: (a ``ValueError`` and ``FileNotFoundError``) when
      ``config.json`` or the weights are missing; the message has the path.
    CheckpointError: (a ``ValueError``) for an unsupported config field, a
      missing, unexpected or wrongly shaped tensor; the message names it.
  """
  path = os.fspath(path)
  config = config_from_hf(read_hf_config(path), dtype=dtype,
                          param_dtype=param_dtype)
  tensors = _index_checkpoint(path)

  abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  items = _param_items(state)

  expected = {}
  for p, var in items:
    name, transposed = _hf_name(p)
    shape = tuple(var.get_value().shape)
    expected[name] = (p, var, transposed,
                      shape[::-1] if transposed else shape)
  missing = [n for n in expected if n not in tensors]
  if missing:
    raise CheckpointError(
        f"checkpoint {path} lacks {len(missing)} tensor(s) the config "
        f"requires: {', '.join(missing[:8])}"
        + (" ..." if len(missing) > 8 else ""))
  unexpected = sorted(n for n in tensors if n not in expected
                      and not _IGNORABLE_RE.match(n)
                      and not (n == "lm_head.weight"
                               and config.tie_word_embeddings))
  if unexpected:
    raise CheckpointError(
        f"checkpoint {path} has {len(unexpected)} unexpected tensor(s): "
        f"{', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8
                                          else ""))
  for name, (_, _, _, shape) in expected.items():
    if tensors[name].shape != shape:
      raise CheckpointError(
          f"tensor {name!r} has shape {tensors[name].shape} but the config "
          f"expects {shape}")
  if config.tie_word_embeddings and "lm_head.weight" in tensors:
    head = tensors["lm_head.weight"]
    emb = tensors["model.embed_tokens.weight"]
    if head.shape != emb.shape or not np.array_equal(head.numpy(),
                                                     emb.numpy()):
      raise CheckpointError(
          "tensor 'lm_head.weight' differs from 'model.embed_tokens.weight' "
          "although tie_word_embeddings is true; set tie_word_embeddings to "
          "false in config.json to load it as a separate head")

  for name, (_, var, transposed, _) in expected.items():
    ref = tensors[name]
    host = ref.numpy()
    if transposed:
      host = host.T
    var.set_value(_place(name, host, var.get_value(), np.dtype(param_dtype)))
  return nnx.merge(graphdef, state)


def _remove_old_weights(path: str) -> None:
  for entry in os.listdir(path):
    if entry in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) or _SHARD_RE.match(entry):
      os.remove(os.path.join(path, entry))


def save_hf(model: Decoder, path: str | os.PathLike, *,
            max_shard_bytes: int | None = None,
            model_type: str | None = None) -> None:
  """Saves ``model`` as a Hugging Face checkpoint directory.

  Args:
    model: The decoder to save.
    path: Output directory (created if needed). Weight files of an earlier
      save there are replaced; other files are left alone.
    max_shard_bytes: If given, tensors are packed in name order into
      ``model-XXXXX-of-YYYYY.safetensors`` files of at most this many bytes
      (a larger single tensor gets a shard of its own) listed in
      ``model.safetensors.index.json``, even if one shard suffices. Otherwise
      a single ``model.safetensors`` is written.
    model_type: ``"llama"`` or ``"qwen2"``; see ``config_to_hf``.

  Raises:
    CheckpointError: for an unrepresentable ``model_type`` (see
      ``config_to_hf``).
    ValueError: if ``max_shard_bytes`` is not positive.
  """
  if max_shard_bytes is not None and max_shard_bytes <= 0:
    raise ValueError(f"max_shard_bytes must be positive, got "
                     f"{max_shard_bytes}")
  hf_config = config_to_hf(model.config, model_type=model_type)
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)

  tensors = {}
  for p, var in _param_items(nnx.state(model, nnx.Param)):
    if p == ("value_head",):
      continue  # the critic has no Hugging Face CausalLM name; policy only
    name, transposed = _hf_name(p)
    host = np.asarray(jax.device_get(var.get_value()))
    tensors[name] = np.ascontiguousarray(host.T if transposed else host)
  tensors = dict(sorted(tensors.items()))
  metadata = {"format": "pt"}

  _remove_old_weights(path)
  if max_shard_bytes is None:
    save_file(tensors, os.path.join(path, WEIGHTS_NAME), metadata=metadata)
  else:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
      if shards[-1] and size + arr.nbytes > max_shard_bytes:
        shards.append({})
        size = 0
      shards[-1][name] = arr
      size += arr.nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
      file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      save_file(shard, os.path.join(path, file), metadata=metadata)
      weight_map.update({name: file for name in shard})
    index = {"metadata": {"total_size": sum(a.nbytes
                                            for a in tensors.values())},
             "weight_map": weight_map}
    with open(os.path.join(path, WEIGHTS_INDEX_NAME), "w") as f:
      json.dump(index, f, indent=2, sort_keys=True)
  with open(os.path.join(path, CONFIG_NAME), "w") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
    f.write("\n")
