"""The sampler benchmark's kernel bound times the computation it claims to.

``scripts/bench_sampler.kernel_times`` times chains of one decode step's
weight matmuls with different kernel families; a bound built on them is only
meaningful if every family computes the same products. These tests run one
step of each chain on a small model and compare with a NumPy forward of the
same chain, and check the bound's arithmetic.
"""

import numpy as np
import pytest
from flax import nnx

from divrl.models.decoder import Decoder, DecoderConfig
from scripts import bench_sampler as bench


def _model():
  cfg = DecoderConfig.preset("tiny", hidden_size=256, num_heads=4,
                             num_kv_heads=2, intermediate_size=384)
  return Decoder(cfg, rngs=nnx.Rngs(3))


def _numpy_chain(layers, head, x, head_copies):
  """One step of the layers chain, and ``head_copies`` steps of the head
  chain, both from ``x``, in float64."""
  x = y = x.astype(np.float64)
  for w in layers:
    w = {k: v.astype(np.float64) for k, v in w.items()}
    q, k, v = x @ w["q"], x @ w["k"], x @ w["v"]
    x = x + 1e-3 * (q @ w["o"]) + 1e-6 * (k.mean() + v.mean())
    x = x + 1e-3 * (((x @ w["gate"]) * (x @ w["up"])) @ w["down"])
  for _ in range(head_copies):
    y = y + 1e-6 * (y @ head.astype(np.float64)).max()
  return x, y


@pytest.mark.parametrize("kernels", ["dot", "skinny"])
def test_xla_chains_compute_the_step(kernels):
  model = _model()
  layers, head = bench._weights(model)
  assert head.shape == (256, model.config.vocab_size)
  x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
  # Scale the weights up so that every product moves x measurably.
  # (The head chain adds 1e-6 * max(logits) per step, hence its factor.)
  layers = [{k: 30 * v for k, v in w.items()} for w in layers]
  head = 3000 * head
  layers_fn, head_fn = bench._xla_chains(layers, head, kernels)
  want_layers, want_head = _numpy_chain(layers, head, x, bench.HEAD_COPIES)
  got_layers = np.asarray(layers_fn(x, 1))
  assert np.abs(want_layers - x).max() > 1e-2
  np.testing.assert_allclose(got_layers, want_layers, rtol=1e-4, atol=1e-4)
  got_head = np.asarray(head_fn(x, bench.HEAD_COPIES))
  assert np.abs(want_head - x).min() > 1e-3
  np.testing.assert_allclose(got_head - x, want_head - x, rtol=1e-4)


@pytest.mark.hf
def test_torch_chains_compute_the_step(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from divrl.models.hf import save_hf
  model = _model()
  save_hf(model, str(tmp_path))
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), dtype=torch.float32).eval()
  layers, head = bench._weights(model)
  with torch.no_grad():           # as in the XLA test, for the head chain
    hf.lm_head.weight.mul_(3000)
  head = 3000 * head
  x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
  layers_fn, head_fn = bench._torch_chains(hf)
  want_layers, want_head = _numpy_chain(layers, head, x, bench.HEAD_COPIES)
  got = layers_fn(torch.from_numpy(x), 1).numpy()
  assert np.abs(want_layers - x).max() > 1e-4
  np.testing.assert_allclose(got, want_layers, rtol=1e-6, atol=1e-6)
  got = head_fn(torch.from_numpy(x), bench.HEAD_COPIES).numpy()
  assert np.abs(want_head - x).min() > 1e-3
  np.testing.assert_allclose(got - x, want_head - x, rtol=1e-4)


def test_kernel_bound_picks_the_fastest_family_per_part():
  decode = {"layers": {"dot": 5.0, "skinny": 3.0, "torch": 4.0},
            "head": {"dot": 1.0, "skinny": 2.0, "torch": 1.5}}
  prefill = {"layers": {"dot": 20.0, "torch": 18.0},
             "head": {"dot": 9.0, "torch": 9.0}}
  bound, best = bench.kernel_bound_s(decode, prefill, n=4)
  assert best == {"prefill_layers": "torch", "decode_layers": "skinny",
                  "head": "dot"}
  # Prefill layers + one unembedding, then 3 decode steps of layers + head.
  assert bound == pytest.approx(18.0 + 1.0 + 3 * (3.0 + 1.0))
