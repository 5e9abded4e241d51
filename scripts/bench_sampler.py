"""Benchmark: the compiled divrl group sampler vs Hugging Face ``generate``.

NOT a test; not run in CI. For the ``tiny`` and ``small25m`` decoder presets a
random float32 ``divrl.models.Decoder`` is built, written with ``save_hf`` to
a temporary directory and loaded into ``transformers`` (float32, eval mode,
``torch.inference_mode``), so both sides hold the same weights. Then, side by
side in this one process:

* generation: random prompts of 16 tokens (no padding, no stop tokens, so
  both sides generate exactly ``N`` tokens), temperature-1 sampling without
  top-k/top-p filtering, for every batch size ``B`` and length ``N``. divrl
  calls ``divrl.models.sample`` (one compiled prefill + ``lax.while_loop``);
  Hugging Face calls ``generate(do_sample=True, temperature=1.0, top_k=0,
  top_p=1.0, max_new_tokens=N, min_new_tokens=N, pad_token_id=0)`` with its
  default (dynamic) KV cache. Throughput is ``B * N / wall time`` of one full
  call, prefill included;
* prefill: the same calls with ``max_new_tokens=1``, for prompt lengths 16
  and 128;
* a roofline for each generation configuration (``roofline_s``): a lower
  bound on the time of any float32 implementation, from this machine's read
  bandwidth and matmul rate measured at the start of every pass
  (``machine_limits``). HF time / roofline bounds the ratio any float32
  sampler can reach here (``--no-roofline`` skips it);
* a kernel bound for the same presets (``kernel_families``,
  ``kernel_times``, ``kernel_bound_s``): the weight matmuls alone of one
  call, each part run with the fastest kernel family available here (XLA
  dots, ``skinny_matmul`` or PyTorch's ``F.linear``). HF time / bound is the highest ratio a sampler
  built on these kernels can reach, with attention, norms and sampling for
  free (``--no-roofline`` skips it too);
* a control for the shapes where divrl decodes with ``skinny_matmul``: the
  same sampler with ``decode_matmul="dot"`` (``--no-dot-control`` skips
  it).

The reference side is HF with ``torch.set_num_threads(2)`` (all cores, as
JAX uses). Because OpenMP thread teams can degrade badly when the cores are
shared with other processes, HF is also timed with one torch thread as a
control (``--no-hf1`` skips it); the target ratio is judged against both.

Every measurement is warm and is the median of ``--repeats`` timed calls.
divrl's first call of a configuration compiles; its wall time is recorded
separately and excluded. HF is warmed up with a 2-token ``generate`` of the
same batch (it compiles nothing). The calls of one configuration alternate
(divrl, HF, HF 1 thread, divrl, ...), so slow drifts of a noisy machine hit
all sides alike. JAX runs with its default float32 matmul precision.

Usage (one pass takes about 3.5 minutes on 2 idle CPU cores and much longer
when they are shared, most of it in HF ``generate`` of the 25M model):

  python -m scripts.bench_sampler [--runs K]

``--runs K`` repeats the whole pass K times and reports medians over the
passes, with the range of each ratio.

``--render-only [--reading FILE]`` rewrites results/sampler.md from
results/sampler.json (optionally storing a new reading paragraph) without
measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from scripts import _bench  # noqa: E402

TARGET_RATIO = 3.0
PROMPT_LEN = 16
HF_THREADS = 2
HEAD_COPIES = 3   # unembedding copies cycled by kernel_times (see there)


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------


def build_models(preset: str, seed: int, tmpdir: str):
  """A random divrl decoder and the same weights loaded in transformers."""
  import torch
  import transformers
  from flax import nnx

  from divrl.models.decoder import Decoder, DecoderConfig, param_count
  from divrl.models.hf import save_hf

  config = DecoderConfig.preset(preset)
  model = Decoder(config, rngs=nnx.Rngs(seed))
  path = os.path.join(tmpdir, preset)
  save_hf(model, path)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=torch.float32).eval()
  return model, hf, param_count(config)


# ----------------------------------------------------------------------------
# One call on each side
# ----------------------------------------------------------------------------


def _divrl_call(model, tokens, mask, key, n, decode_matmul="auto"):
  """A zero-argument function running one ``sample`` call to completion."""
  import jax

  from divrl.models.sampler import SamplingConfig, sample

  config = SamplingConfig(max_new_tokens=n, num_samples=1, temperature=1.0,
                          top_k=0, top_p=1.0, decode_matmul=decode_matmul)

  def run():
    return jax.block_until_ready(sample(model, tokens, mask, key, config))

  return run


def _hf_call(hf, tokens, mask, n, threads):
  """A zero-argument function running one ``generate`` call."""
  import torch

  def run():
    torch.set_num_threads(threads)
    with torch.inference_mode():
      return hf.generate(
          input_ids=tokens, attention_mask=mask, do_sample=True,
          temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
          min_new_tokens=n, pad_token_id=0)

  return run


def machine_limits(repeats: int = 7) -> dict:
  """This machine's float32 limits, measured now: read bandwidth and matmul.

  ``read_gb_s``: a jitted ``jnp.sum`` over a 512 MB float32 array (far larger
  than any cache), best of ``repeats``. ``matmul_gflop_s``: jitted square
  float32 matmuls of n = 1024 and 2048, best of ``repeats`` each. Both are
  the most favourable values seen, so the roofline built on them is a lower
  bound on time.
  """
  import jax
  import jax.numpy as jnp

  big = jnp.ones((128 * 2**20,), jnp.float32)
  read = big.size * 4 / _best_s(jax.jit(jnp.sum), big, repeats=repeats) / 1e9
  del big
  flops = _bench.matmul_rate((1024, 2048), repeats)["peak_flops_per_s"]
  return {"read_gb_s": read, "matmul_gflop_s": flops / 1e9}


def _best_s(fn, *args, repeats: int) -> float:
  """Seconds of the fastest of ``repeats`` calls ``fn(*args)``, each run to
  completion (JAX arrays are waited for), after one untimed warm-up call."""
  return _bench.best_of(lambda: fn(*args), repeats)


def _llc_bytes() -> int | None:
  """The last-level cache size from sysfs, or None."""
  for index in (3, 2):
    try:
      with open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size") as f:
        text = f.read().strip()
    except OSError:
      continue
    scale = {"K": 2**10, "M": 2**20}.get(text[-1], 1)
    return int(text.rstrip("KM")) * scale
  return None


def roofline_s(config, b: int, s: int, n: int, limits: dict) -> float:
  """A lower bound on the time of one float32 generation call.

  Each phase takes at least ``max(FLOPs / matmul rate, bytes / read
  bandwidth)``: the prefill of ``B*S`` positions (weight matmuls, causal
  attention, the unembedding of the last position; it reads every weight
  once), then ``N-1`` decode steps of ``B`` rows, each reading every weight
  matrix and the ``B x (S+t)`` cached keys and values once. Only matmul
  FLOPs and these reads count (no norms, sampling or writes), and the rates
  are this machine's best measured ones, so no float32 implementation can
  be faster, as long as the weights do not fit in the caches (tiny's do;
  its bound is not reported).
  """
  c = config
  d, hd, v = c.hidden_size, c.head_dim, c.vocab_size
  kv = c.num_kv_heads * hd
  layer_params, weights = _matmul_params(c)
  rate, bw = 1e9 * limits["matmul_gflop_s"], 1e9 * limits["read_gb_s"]

  def attn_flops(rows, queries, keys):   # scores and weighted values
    return 4 * c.num_layers * c.num_heads * hd * rows * queries * keys

  pre_flops = (2 * b * s * c.num_layers * layer_params + 2 * b * d * v
               + attn_flops(b, s, (s + 1) / 2))
  total = max(pre_flops / rate, 4 * weights / bw)
  for t in range(1, n):
    keys = s + t
    flops = 2 * b * weights + attn_flops(b, 1, keys)
    reads = 4 * (weights + 2 * c.num_layers * b * keys * kv)
    total += max(flops / rate, reads / bw)
  return total


# ----------------------------------------------------------------------------
# Kernel bound: the weight matmuls alone, with the fastest kernels available
# ----------------------------------------------------------------------------


def _weights(model) -> tuple[list[dict], "np.ndarray"]:
  """Per-layer float32 ``[in, out]`` kernels and the ``[d, V]`` unembedding."""
  import numpy as np
  layers = []
  for layer in model.layers:
    a, m = layer.attn, layer.mlp
    layers.append({name: np.asarray(dense.kernel[...], np.float32)
                   for name, dense in (("q", a.q_proj), ("k", a.k_proj),
                                       ("v", a.v_proj), ("o", a.o_proj),
                                       ("gate", m.gate_proj),
                                       ("up", m.up_proj),
                                       ("down", m.down_proj))})
  return layers, np.asarray(model.unembedding(), np.float32)


def _xla_chains(layers, head, kernels: str):
  """Jitted ``(x, steps) -> x`` chains of one step's weight matmuls in XLA.

  ``kernels="dot"``: XLA dots over the stored ``[in, out]`` kernels, one per
  projection. ``"skinny"``: ``skinny_matmul`` over stacked, transposed
  kernels, as ``use_decoding_layout`` builds them. Every product feeds the
  next step (a scalar of the k/v and logit outputs is added), so nothing is
  dead code. Returns ``(layers_fn, head_fn)``.
  """
  import functools

  import jax
  import jax.numpy as jnp
  import numpy as np

  from divrl.models.decoder import skinny_matmul

  if kernels == "dot":
    ws = [{k: jnp.asarray(v) for k, v in w.items()} for w in layers]
    h = jnp.asarray(head)
    mm = jnp.dot

    def proj(w, x):
      return (mm(x, w["q"]), mm(x, w["k"]), mm(x, w["v"]),
              lambda a: mm(a, w["o"]),
              lambda y: (mm(y, w["gate"]), mm(y, w["up"])),
              lambda z: mm(z, w["down"]))
  else:
    ws = [{"qkv": jnp.asarray(np.concatenate([w["q"], w["k"], w["v"]],
                                             1).T.copy()),
           "o": jnp.asarray(w["o"].T.copy()),
           "gu": jnp.asarray(np.concatenate([w["gate"], w["up"]],
                                            1).T.copy()),
           "down": jnp.asarray(w["down"].T.copy())} for w in layers]
    h = jnp.asarray(head.T.copy())
    mm = skinny_matmul

    def proj(w, x):
      nq = w["o"].shape[1]                     # o is [d, q]
      nk = (w["qkv"].shape[0] - nq) // 2       # qkv is [q + 2 kv, d]
      q, k, v = jnp.split(mm(x, w["qkv"]), [nq, nq + nk], axis=1)
      return (q, k, v, lambda a: mm(a, w["o"]),
              lambda y: jnp.split(mm(y, w["gu"]), 2, axis=1),
              lambda z: mm(z, w["down"]))

  def one_step(x, ws):
    for w in ws:
      q, k, v, o, gate_up, down = proj(w, x)
      x = x + 1e-3 * o(q) + 1e-6 * (jnp.mean(k) + jnp.mean(v))
      g, u = gate_up(x)
      x = x + 1e-3 * down(g * u)
    return x

  @functools.partial(jax.jit, static_argnums=1)
  def layers_fn(x, steps, ws):
    return jax.lax.fori_loop(0, steps, lambda i, x: one_step(x, ws), x)

  # Alone, one unembedding can stay in the last-level cache from one step
  # to the next (in a decode step the layers evict it): cycle over copies.
  heads = [h] + [h.copy() for _ in range(HEAD_COPIES - 1)]

  @functools.partial(jax.jit, static_argnums=1)
  def head_fn(x, steps, heads):
    def body(i, x):
      for hc in heads:
        x = x + 1e-6 * jnp.max(mm(x, hc))
      return x
    return jax.lax.fori_loop(0, steps // len(heads), body, x)

  return (lambda x, steps: layers_fn(x, steps, ws),
          lambda x, steps: head_fn(x, steps, heads))


def _torch_chains(hf):
  """The same chains with ``torch.nn.functional.linear`` on HF's modules."""
  import torch
  fl = torch.nn.functional.linear
  mods = [(l.self_attn, l.mlp) for l in hf.model.layers]
  heads = [hf.lm_head.weight.detach().clone() for _ in range(HEAD_COPIES)]

  def layers_fn(x, steps):
    with torch.inference_mode():
      for _ in range(steps):
        for a, m in mods:
          q, k, v = (fl(x, a.q_proj.weight), fl(x, a.k_proj.weight),
                     fl(x, a.v_proj.weight))
          x = x + 1e-3 * fl(q, a.o_proj.weight) + 1e-6 * (k.mean() + v.mean())
          x = x + 1e-3 * fl(fl(x, m.gate_proj.weight)
                            * fl(x, m.up_proj.weight), m.down_proj.weight)
    return x

  def head_fn(x, steps):
    with torch.inference_mode():
      for _ in range(steps // len(heads)):
        for head in heads:
          x = x + 1e-6 * fl(x, head).max()
    return x

  return layers_fn, head_fn


def kernel_families(model, hf) -> dict:
  """``{family: (layers_fn, head_fn)}`` for ``kernel_times``: XLA dots
  (``"dot"``), ``skinny_matmul`` over stacked transposed kernels
  (``"skinny"``, for models at least ``SKINNY_MIN_DEPTH`` wide) and
  PyTorch's ``F.linear`` on HF's modules (``"torch"``, the kernels HF runs).
  Built once per model: the weight copies are reused for every row count."""
  from divrl.models.decoder import SKINNY_MIN_DEPTH

  layers, head = _weights(model)
  families = {"dot": _xla_chains(layers, head, "dot"),
              "torch": _torch_chains(hf)}
  if model.config.hidden_size >= SKINNY_MIN_DEPTH:
    families["skinny"] = _xla_chains(layers, head, "skinny")
  return families


def kernel_times(families: dict, width: int, rows: int,
                 repeats: int = 5) -> dict:
  """Seconds of one pass of the weight matmuls over ``rows`` rows.

  ``{"layers": {family: s}, "head": {family: s}}``: every layer's
  projections (q, k, v, o, gate, up, down) and, separately, the
  unembedding, each timed per family of ``kernel_families`` (of a model
  ``width`` wide); ``"skinny"`` only where ``is_skinny_shape`` holds, as in
  the sampler. Each is the fastest of ``repeats`` timed runs of a chain of a
  few steps, divided by the steps, so that a bound built on these times is
  a lower bound. No attention, norms, sampling or cache.
  """
  import jax
  import numpy as np
  import torch

  from divrl.models.decoder import is_skinny_shape

  x0 = np.random.default_rng(rows).standard_normal(
      (rows, width)).astype(np.float32)
  steps = HEAD_COPIES * max(1, min(7, 683 // rows))
  out = {"layers": {}, "head": {}}
  for name, (layers_fn, head_fn) in families.items():
    if name == "skinny" and not is_skinny_shape(rows, width):
      continue
    x = torch.from_numpy(x0) if name == "torch" else jax.numpy.asarray(x0)
    for part, fn in (("layers", layers_fn), ("head", head_fn)):
      out[part][name] = _best_s(fn, x, steps, repeats=repeats) / steps
  return out


def kernel_bound_s(decode: dict, prefill: dict, n: int) -> tuple[float, dict]:
  """The weight-matmul time of one call with the fastest kernel for each part.

  ``prefill``: ``kernel_times`` at ``B*S`` rows (its layers; the prefill
  unembeds only the last position, so the head counts at ``B`` rows);
  ``decode``: at ``B`` rows, for each of the ``N-1`` decode steps. Returns
  ``(seconds, {part: fastest kernel family})``.
  """
  best = {}
  for part, times in (("prefill_layers", prefill["layers"]),
                      ("decode_layers", decode["layers"]),
                      ("head", decode["head"])):
    best[part] = min(times, key=times.get)
  t = (prefill["layers"][best["prefill_layers"]]
       + decode["head"][best["head"]]
       + (n - 1) * (decode["layers"][best["decode_layers"]]
                    + decode["head"][best["head"]]))
  return t, best


def _matmul_params(config) -> tuple[int, int]:
  """Weight-matrix parameters ``(per layer, all with the unembedding)``."""
  c = config
  d, hd = c.hidden_size, c.head_dim
  q, kv = c.num_heads * hd, c.num_kv_heads * hd
  layer = d * (q + 2 * kv) + q * d + 3 * d * c.intermediate_size
  return layer, c.num_layers * layer + d * c.vocab_size


def weight_bytes(config) -> int:
  """Bytes of the float32 weight matrices one decode step reads."""
  return 4 * _matmul_params(config)[1]


def measure(model, hf, b: int, s: int, n: int, repeats: int, seed: int,
            hf1: bool, limits: dict | None = None,
            dot_control: bool = False) -> dict:
  """Warm median wall times of each side for one ``(B, S, N)``."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  vocab = model.config.vocab_size
  rng = np.random.default_rng([seed, b, s, n])
  prompts = rng.integers(1, vocab, size=(b, s), dtype=np.int64)
  j_tokens = jnp.asarray(prompts, jnp.int32)
  j_mask = jnp.ones((b, s), bool)
  t_tokens = torch.from_numpy(prompts)
  t_mask = torch.ones((b, s), dtype=torch.long)
  torch.manual_seed(seed)

  divrl_runs = [_divrl_call(model, j_tokens, j_mask,
                            jax.random.key(seed + i), n)
                for i in range(repeats + 1)]
  sides = {"divrl": None, "hf": _hf_call(hf, t_tokens, t_mask, n, HF_THREADS)}
  if hf1:
    sides["hf1"] = _hf_call(hf, t_tokens, t_mask, n, 1)
  if dot_control:   # the same sampler with XLA dots for every decode matmul
    sides["divrl_dot"] = _divrl_call(model, j_tokens, j_mask,
                                     jax.random.key(seed), n, "dot")

  first_s, out = _bench.timed(divrl_runs[0])     # compiles
  assert out.tokens.shape == (b, n)
  assert bool(jnp.all(out.lengths == n)), "divrl stopped early"
  if dot_control:
    sides["divrl_dot"]()                   # compiles
  for name in sides:
    if name.startswith("hf"):
      _hf_call(hf, t_tokens, t_mask, min(n, 2),
               1 if name == "hf1" else HF_THREADS)()

  times = {name: [] for name in sides}
  for i in range(repeats):
    for name, run in sides.items():
      dt, out = _bench.timed(divrl_runs[i + 1] if name == "divrl" else run)
      if name.startswith("hf"):
        assert tuple(out.shape) == (b, s + n), out.shape
      times[name].append(dt)
  torch.set_num_threads(HF_THREADS)
  res = {"B": b, "S": s, "N": n, "divrl_first_call_s": first_s}
  for name, ts in times.items():
    med = statistics.median(ts)
    res[f"{name}_times_s"] = ts
    res[f"{name}_s"] = med
    res[f"{name}_tok_s"] = b * n / med
  res["ratio"] = res["hf_s"] / res["divrl_s"]
  if hf1:
    res["ratio_hf1"] = res["hf1_s"] / res["divrl_s"]
  if dot_control:
    res["skinny_speedup"] = res["divrl_dot_s"] / res["divrl_s"]
  if limits is not None:
    res["limits"] = limits
    res["roofline_s"] = roofline_s(model.config, b, s, n, limits)
    res["ceiling"] = res["hf_s"] / res["roofline_s"]
    res["divrl_over_roofline"] = res["divrl_s"] / res["roofline_s"]
  return res


def aggregate(runs: list[dict], sides: list[str]) -> dict:
  """One configuration over ``--runs`` passes: medians of the per-run medians.

  The ratios are the median over runs of each run's own ratio (both sides
  measured in the same pass), with their range.
  """
  first = runs[0]
  res = {"B": first["B"], "S": first["S"], "N": first["N"],
         "divrl_first_call_s": first["divrl_first_call_s"],
         "runs": runs}
  for side in sides:
    med = statistics.median(r[f"{side}_s"] for r in runs)
    res[f"{side}_s"] = med
    res[f"{side}_tok_s"] = first["B"] * first["N"] / med
  for name in ("roofline_s", "divrl_dot_s", "kernel_bound_s",
               "kernel_decode_step_s"):
    if name in first:
      res[name] = statistics.median(r[name] for r in runs)
  if "kernel_best" in first:
    res["kernel_best"] = [r["kernel_best"] for r in runs]
  for name in ("ratio", "ratio_hf1", "ceiling", "divrl_over_roofline",
               "skinny_speedup", "kernel_ceiling",
               "divrl_over_kernel_bound"):
    if name in first:
      vals = [r[name] for r in runs]
      res[name] = statistics.median(vals)
      res[f"{name}_range"] = [min(vals), max(vals)]
  return res


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------


def _fmt(x: float) -> str:
  if x >= 100:
    return f"{x:,.0f}"
  if x >= 10:
    return f"{x:.1f}"
  return f"{x:.2f}"


def _ms(x: float) -> str:
  return _fmt(1000 * x)


def _yes(ratio: float) -> str:
  return "yes" if ratio >= TARGET_RATIO else "**no**"


def _ratio(r: dict, name: str, digits: int) -> str:
  """A ratio cell: the median, plus the range over runs if there are any."""
  lo, hi = r.get(f"{name}_range", (r[name], r[name]))
  cell = f"{r[name]:.{digits}f}×"
  if len(r.get("runs", ())) > 1:
    cell += f" ({lo:.{digits}f}–{hi:.{digits}f})"
  return cell


def growth(generate: list[dict], sides: list[str]) -> dict:
  """Wall-time ratios along batch size and along generation length."""
  by = {(r["preset"], r["B"], r["N"]): r for r in generate}
  presets = list(dict.fromkeys(r["preset"] for r in generate))
  bs = sorted({r["B"] for r in generate})
  ns = sorted({r["N"] for r in generate})
  batch, length = [], []
  for p in presets:
    for n in ns:
      for side in sides:
        base = by[(p, bs[0], n)][f"{side}_s"]
        batch.append({"preset": p, "N": n, "side": side, "over_B": bs[0],
                      "ratios": {str(b): by[(p, b, n)][f"{side}_s"] / base
                                 for b in bs[1:]}})
    for b in bs:
      for side in sides:
        length.append({"preset": p, "B": b, "side": side,
                       "N_hi": ns[-1], "N_lo": ns[0],
                       "ratio": (by[(p, b, ns[-1])][f"{side}_s"]
                                 / by[(p, b, ns[0])][f"{side}_s"])})
  return {"batch": batch, "length": length}


SIDE_NAMES = {"divrl": "divrl", "hf": f"HF ({HF_THREADS} threads)",
              "hf1": "HF (1 thread)"}


def render(res: dict) -> str:
  """The markdown section for ``results/sampler.md``."""
  m = res["machine"]
  v = m.get("versions", m)     # results written before scripts/_bench.py
  hf1 = res["hf1"]
  lines = [
      "## Sampler throughput (issue 5)",
      "",
      "The compiled divrl group sampler (`divrl.models.sample`: one prefill "
      "plus a `lax.while_loop` of KV-cache decode steps) against Hugging Face "
      "`generate` (its default dynamic KV cache) on the same random float32 "
      "weights (`save_hf`, then `AutoModelForCausalLM.from_pretrained`). "
      f"Measured side by side in one process on {m['cpu_count']} CPU cores "
      f"({m['processor']}; 1-minute load average "
      f"{m['loadavg_start'][0]:.1f} at the start, "
      f"{m['loadavg_end'][0]:.1f} at the end; other jobs may share the "
      f"cores), jax {v['jax']} (default matmul precision), "
      f"torch {v['torch']}, transformers {v['transformers']}, {m['date']}.",
      "",
      "```",
      res["command"],
      "```",
      "",
      f"Prompt length {res['prompt_len']}, temperature 1, top-k 0, top-p 1, "
      "no stop tokens (every row generates exactly N tokens), one sample per "
      "prompt. Tokens/s = B·N / wall time of one whole call (prefill "
      f"included), warm, median of {res['repeats']} calls; the sides' calls "
      "alternate. Ratio = divrl tokens/s / HF tokens/s, computed within "
      "each pass over all configurations"
      + (f"; {res['runs']} passes, times and ratios are medians over the "
         "passes, the ratio range over passes is in parentheses"
         if res.get("runs", 1) > 1 else "")
      + f". The target is ≥ {TARGET_RATIO:g}×. The reference is HF with "
      f"`torch.set_num_threads({HF_THREADS})`"
      + ("; HF with one thread is a control (see the reading)." if hf1
         else "."),
      "",
      "### Generation",
      "",
  ]
  head = ["preset", "B", "N", "divrl tok/s", f"HF {HF_THREADS}t tok/s",
          "ratio", "≥3×"]
  align = ["---", "--:", "--:", "--:", "--:", "--:", ":-:"]
  if hf1:
    head += ["HF 1t tok/s", "ratio vs 1t", "≥3× vs 1t"]
    align += ["--:", "--:", ":-:"]
  head += ["divrl ms/call", f"HF {HF_THREADS}t ms/call"]
  align += ["--:", "--:"]
  lines += ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
  for r in res["generate"]:
    row = [r["preset"], str(r["B"]), str(r["N"]), _fmt(r["divrl_tok_s"]),
           _fmt(r["hf_tok_s"]), _ratio(r, "ratio", 1), _yes(r["ratio"])]
    if hf1:
      row += [_fmt(r["hf1_tok_s"]), _ratio(r, "ratio_hf1", 1),
              _yes(r["ratio_hf1"])]
    row += [_ms(r["divrl_s"]), _ms(r["hf_s"])]
    lines.append("| " + " | ".join(row) + " |")

  roofs = [r for r in res["generate"]
           if "roofline_s" in r and r["preset"] in res.get("roofline_presets",
                                                          ())]
  if roofs:
    lim = res["limits"]
    lines += [
        "",
        "### Roofline: the highest ratio this machine allows",
        "",
        "A lower bound on the time of any float32 implementation of one call "
        "(`roofline_s`): the prefill and each of the N-1 decode steps take "
        "at least max(matmul FLOPs / matmul rate, bytes read / read "
        "bandwidth), where a decode step reads every weight matrix and the "
        "cached keys and values once. The rates are this machine's best in "
        "the run (`machine_limits`, measured at the start of every pass): "
        f"read bandwidth {lim['read_gb_s_min']:.1f}–{lim['read_gb_s']:.1f} "
        "GB/s (jitted sum over 512 MB), float32 matmul "
        f"{lim['matmul_gflop_s_min']:.0f}–{lim['matmul_gflop_s']:.0f} "
        "GFLOP/s (n = 1024, 2048); each pass uses its own. HF time / "
        "roofline is the *ceiling*: no float32 sampler can beat HF by more "
        "on this machine. Only presets whose weights exceed the last-level "
        f"cache ({res.get('llc_mb', '?')} MB) are listed; tiny's weights fit "
        "in it, so the bandwidth term does not bound them.",
        "",
        "| preset | B | N | weights MB | roofline ms/call | divrl ms/call "
        "| divrl / roofline | HF 2t ms/call | ceiling (HF / roofline) "
        "| ceiling ≥3× |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for r in roofs:
      lines.append(
          f"| {r['preset']} | {r['B']} | {r['N']} | "
          f"{res['models'][r['preset']]['weight_mb']:.0f} | "
          f"{_ms(r['roofline_s'])} | {_ms(r['divrl_s'])} | "
          f"{_ratio(r, 'divrl_over_roofline', 2)} | {_ms(r['hf_s'])} | "
          f"{_ratio(r, 'ceiling', 1)} | {_yes(r['ceiling'])} |")

  bounds = [r for r in res["generate"] if "kernel_bound_s" in r]
  if bounds:
    lines += [
        "",
        "### Kernel bound: the weight matmuls alone, fastest kernels",
        "",
        "The roofline assumes kernels that reach the machine's peak bandwidth "
        "or matmul rate at every shape. This bound instead times the weight "
        "matmuls of one call with the kernels that exist here "
        "(`kernel_times`, measured in every pass): each layer's q, k, v, o, "
        "gate, up and down projections, and the unembedding, as XLA dots, as "
        "`skinny_matmul` over stacked transposed kernels (2..32 rows), and "
        "as PyTorch `F.linear` with 2 threads (HF's own kernels); the "
        "fastest of 5 runs of each, and for each part the fastest family. "
        "Bound = prefill layers at B·16 rows + (N-1) decode steps at B rows "
        "+ N unembeddings at B rows. Attention, norms, sampling and the "
        "cache count zero, so a sampler built on these kernels is slower "
        "than the bound, and HF / bound is the highest ratio it could "
        "reach.",
        "",
        "| preset | B | N | fastest (prefill / decode / unembed) "
        "| decode step matmuls ms | bound ms/call | divrl ms/call "
        "| divrl / bound | HF 2t ms/call | HF / bound | ≥3× |",
        "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for r in bounds:
      fams = sorted({" / ".join((kb["prefill_layers"], kb["decode_layers"],
                                 kb["head"])) for kb in r["kernel_best"]})
      lines.append(
          f"| {r['preset']} | {r['B']} | {r['N']} | {'; '.join(fams)} | "
          f"{1e3 * r['kernel_decode_step_s']:.2f} | "
          f"{_ms(r['kernel_bound_s'])} | {_ms(r['divrl_s'])} | "
          f"{_ratio(r, 'divrl_over_kernel_bound', 2)} | {_ms(r['hf_s'])} | "
          f"{_ratio(r, 'kernel_ceiling', 1)} | {_yes(r['kernel_ceiling'])} |")

  controls = [r for r in res["generate"] if "divrl_dot_s" in r]
  if controls:
    lines += [
        "",
        "### Control: XLA dots for the decode matmuls",
        "",
        "The same divrl sampler with `decode_matmul=\"dot\"` (every decode "
        "matmul an XLA dot over the stored `[in, out]` kernels), timed in the "
        "same alternation, for the shapes where `\"auto\"` uses "
        "`skinny_matmul` (2..32 rows, model at least 256 wide).",
        "",
        "| preset | B | N | divrl auto ms/call | divrl dot ms/call "
        "| dot / auto |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in controls:
      lines.append(
          f"| {r['preset']} | {r['B']} | {r['N']} | {_ms(r['divrl_s'])} | "
          f"{_ms(r['divrl_dot_s'])} | {_ratio(r, 'skinny_speedup', 2)} |")

  lines += ["", "### Prefill (`max_new_tokens=1`)", ""]
  head = ["preset", "B", "prompt len", "divrl ms", f"HF {HF_THREADS}t ms",
          "HF / divrl"]
  align = ["---", "--:", "--:", "--:", "--:", "--:"]
  if hf1:
    head += ["HF 1t ms", "HF 1t / divrl"]
    align += ["--:", "--:"]
  lines += ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
  for r in res["prefill"]:
    row = [r["preset"], str(r["B"]), str(r["S"]), _ms(r["divrl_s"]),
           _ms(r["hf_s"]), _ratio(r, "ratio", 2)]
    if hf1:
      row += [_ms(r["hf1_s"]), _ratio(r, "ratio_hf1", 2)]
    lines.append("| " + " | ".join(row) + " |")
  lines += ["", "divrl with `max_new_tokens=1` runs the prefill and draws one "
            "token; no decode step."]

  g = res["growth"]
  bs = sorted({int(k) for row in g["batch"] for k in row["ratios"]})
  lines += [
      "",
      "### Cost growth",
      "",
      f"Wall time of one call relative to B={g['batch'][0]['over_B']} (same "
      "preset, N and side); B-fold growth would mean no batching benefit.",
      "",
      "| preset | N | side | " + " | ".join(f"B={b}" for b in bs) + " |",
      "|---|--:|---|" + "--:|" * len(bs),
  ]
  for row in g["batch"]:
    lines.append(f"| {row['preset']} | {row['N']} | "
                 f"{SIDE_NAMES[row['side']]} | "
                 + " | ".join(f"{row['ratios'][str(b)]:.2f}" for b in bs)
                 + " |")
  n_hi, n_lo = g["length"][0]["N_hi"], g["length"][0]["N_lo"]
  lines += [
      "",
      f"Wall time at N={n_hi} relative to N={n_lo} (same preset, B and side; "
      f"{n_hi / n_lo:.1f} would be linear in N).",
      "",
      "| preset | B | " + " | ".join(SIDE_NAMES[s] for s in res["sides"])
      + " |",
      "|---|--:|" + "--:|" * len(res["sides"]),
  ]
  by = {(r["preset"], r["B"], r["side"]): r["ratio"] for r in g["length"]}
  for p, b in dict.fromkeys((r["preset"], r["B"]) for r in g["length"]):
    lines.append(f"| {p} | {b} | "
                 + " | ".join(f"{by[(p, b, s)]:.2f}" for s in res["sides"])
                 + " |")

  firsts = [r for r in res["generate"]]
  lines += ["", "divrl first call (compilation + one run, excluded above): "
            + ", ".join(f"{r['preset']} B={r['B']} N={r['N']} "
                        f"{r['divrl_first_call_s']:.1f} s" for r in firsts)
            + "."]
  if res.get("reading"):
    lines += ["", "### Reading", "", res["reading"]]
  lines += ["", f"Benchmark wall time: {res['wall_s'] / 60:.1f} min.", ""]
  return "\n".join(lines)


def machine_info() -> dict:
  """Versions and machine facts stored with the numbers."""
  import jax
  info = _bench.machine(("jax", "jaxlib", "torch", "transformers"))
  info.update(
      jax_backend=jax.default_backend(),
      jax_default_matmul_precision=str(
          jax.config.jax_default_matmul_precision),
      torch_threads=HF_THREADS)
  return info


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--presets", default="tiny,small25m")
  parser.add_argument("--batch-sizes", default="1,8,32")
  parser.add_argument("--lengths", default="32,128",
                      help="generation lengths N")
  parser.add_argument("--prefill-lengths", default="16,128",
                      help="prompt lengths of the prefill measurement")
  parser.add_argument("--repeats", type=int, default=3,
                      help="timed calls per side and configuration per run")
  parser.add_argument("--runs", type=int, default=1,
                      help="passes over all configurations (medians over "
                           "passes are reported, with the ratio range)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-hf1", action="store_true",
                      help="skip the one-thread HF control")
  parser.add_argument("--no-roofline", action="store_true",
                      help="skip measuring the machine's limits and the "
                           "kernel bound")
  parser.add_argument("--no-dot-control", action="store_true",
                      help="skip the decode_matmul='dot' control")
  parser.add_argument("--out", default=os.path.join(ROOT, "results",
                                                    "sampler.json"))
  parser.add_argument("--doc", default=os.path.join(ROOT, "results",
                                                    "sampler.md"))
  parser.add_argument("--reading", default=None,
                      help="file with the reading paragraph to embed")
  parser.add_argument("--render-only", action="store_true")
  args = parser.parse_args(argv)
  if args.repeats < 3:
    parser.error("--repeats must be at least 3")

  if args.render_only:
    with open(args.out) as f:
      res = json.load(f)
    if args.reading:
      with open(args.reading) as f:
        res["reading"] = f.read().strip()
      with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    with open(args.doc, "w") as f:
      f.write(render(res))
    return 0

  sys.path.insert(0, ROOT)
  import torch

  from divrl.models.decoder import SKINNY_MIN_DEPTH
  torch.set_num_threads(HF_THREADS)

  t_start = time.perf_counter()
  hf1 = not args.no_hf1
  sides = ["divrl", "hf"] + (["hf1"] if hf1 else [])
  presets = args.presets.split(",")
  bs = [int(x) for x in args.batch_sizes.split(",")]
  ns = [int(x) for x in args.lengths.split(",")]
  prefill_lens = [int(x) for x in args.prefill_lengths.split(",")]
  res = {
      "command": " ".join(["python -m scripts.bench_sampler"]
                          + (sys.argv[1:] if argv is None else list(argv))),
      "machine": machine_info(), "repeats": args.repeats, "runs": args.runs,
      "seed": args.seed,
      "target_ratio": TARGET_RATIO, "prompt_len": PROMPT_LEN,
      "hf_generate": {"do_sample": True, "temperature": 1.0, "top_k": 0,
                      "top_p": 1.0, "min_new_tokens": "N",
                      "pad_token_id": 0, "cache": "default (DynamicCache)"},
      "hf1": hf1, "sides": sides,
      "models": {}, "generate": [], "prefill": [],
  }
  with tempfile.TemporaryDirectory() as tmpdir:
    for preset in presets:
      model, hf, params = build_models(preset, args.seed, tmpdir)
      res["models"][preset] = {"params": params,
                               "attn_implementation":
                                   hf.config._attn_implementation}
      print(f"== {preset}: {params / 1e6:.2f}M parameters", flush=True)
      configs = ([("generate", b, PROMPT_LEN, n) for n in ns for b in bs]
                 + [("prefill", b, s, 1) for s in prefill_lens for b in bs])
      llc = _llc_bytes()
      res["llc_mb"] = None if llc is None else llc / 2**20
      res["models"][preset]["weight_mb"] = weight_bytes(model.config) / 2**20
      if llc is not None and weight_bytes(model.config) > llc:
        res.setdefault("roofline_presets", []).append(preset)
      per_run = {c: [] for c in configs}
      families = (kernel_families(model, hf)
                  if not args.no_roofline
                  and preset in res.get("roofline_presets", ()) else None)
      for run in range(args.runs):
        limits = None
        if not args.no_roofline:
          limits = machine_limits()
          res.setdefault("limits_per_pass", []).append(limits)
          print(f"machine: read {limits['read_gb_s']:.1f} GB/s, matmul "
                f"{limits['matmul_gflop_s']:.0f} GFLOP/s", flush=True)
        kernels = None
        if families is not None:
          t0 = time.perf_counter()
          kernels = {rows: kernel_times(families, model.config.hidden_size,
                                        rows)
                     for rows in sorted({x for b in bs
                                         for x in (b, b * PROMPT_LEN)})}
          res.setdefault("kernel_times", {}).setdefault(preset, []).append(
              {str(k): v for k, v in kernels.items()})
          print(f"kernel times ({time.perf_counter() - t0:.0f} s): "
                + "; ".join(f"{rows} rows " + ", ".join(
                    f"{name} {1e3 * (t + v['head'][name]):.2f}"
                    for name, t in v["layers"].items()) + " ms"
                    for rows, v in kernels.items()), flush=True)
        for kind, b, s, n in configs:
          t0 = time.perf_counter()
          r = measure(model, hf, b, s, n, args.repeats,
                      args.seed + 1000 * run, hf1,
                      limits=limits if kind == "generate" else None,
                      dot_control=(kind == "generate" and b >= 2
                                   and model.config.hidden_size
                                   >= SKINNY_MIN_DEPTH
                                   and not args.no_dot_control))
          if kernels is not None and kind == "generate":
            bound, best = kernel_bound_s(kernels[b], kernels[b * s], n)
            step = kernels[b]["layers"][best["decode_layers"]] + kernels[b][
                "head"][best["head"]]
            r.update(kernel_bound_s=bound, kernel_best=best,
                     kernel_decode_step_s=step,
                     kernel_ceiling=r["hf_s"] / bound,
                     divrl_over_kernel_bound=r["divrl_s"] / bound)
          per_run[(kind, b, s, n)].append(r)
          extra = (f", HF1 ratio {r['ratio_hf1']:5.2f}" if hf1 else "")
          if "skinny_speedup" in r:
            extra += f", dot/auto {r['skinny_speedup']:4.2f}"
          if "ceiling" in r:
            extra += (f", roofline {1e3 * r['roofline_s']:9.2f} ms, "
                      f"ceiling {r['ceiling']:5.2f}")
          if "kernel_ceiling" in r:
            extra += (f", kernel bound {1e3 * r['kernel_bound_s']:9.2f} ms, "
                      f"HF/bound {r['kernel_ceiling']:5.2f}")
          print(f"run {run} {kind:8s} {preset} B={b:3d} S={s:4d} N={n:4d}: "
                f"divrl {1e3 * r['divrl_s']:9.2f} ms, HF "
                f"{1e3 * r['hf_s']:9.2f} ms, ratio {r['ratio']:5.2f}{extra} "
                f"({time.perf_counter() - t0:.0f} s)", flush=True)
      for (kind, b, s, n), runs in per_run.items():
        r = aggregate(runs, sides)
        r["preset"] = preset
        res[kind].append(r)
      del model, hf, families
  res["growth"] = growth(res["generate"], sides)
  if res.get("limits_per_pass"):
    per = res["limits_per_pass"]
    res["limits"] = {
        "read_gb_s": max(x["read_gb_s"] for x in per),
        "read_gb_s_min": min(x["read_gb_s"] for x in per),
        "matmul_gflop_s": max(x["matmul_gflop_s"] for x in per),
        "matmul_gflop_s_min": min(x["matmul_gflop_s"] for x in per)}
  res["machine"]["loadavg_end"] = list(os.getloadavg())
  res["wall_s"] = time.perf_counter() - t_start
  if args.reading:
    with open(args.reading) as f:
      res["reading"] = f.read().strip()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")
  with open(args.doc, "w") as f:
    f.write(render(res))
  print(f"wrote {args.out} and {args.doc} ({res['wall_s']:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
