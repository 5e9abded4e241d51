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
* a float32 matmul floor for each generation configuration: only the weight
  matmuls of one call, compiled with XLA (``_floor_call``). HF time / floor
  time bounds the ratio any float32 XLA sampler can reach on this machine
  (``--no-floor`` skips it).

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
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_RATIO = 3.0
PROMPT_LEN = 16
HF_THREADS = 2


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


def _divrl_call(model, tokens, mask, key, n):
  """A zero-argument function running one ``sample`` call to completion."""
  import jax

  from divrl.models.sampler import SamplingConfig, sample

  config = SamplingConfig(max_new_tokens=n, num_samples=1, temperature=1.0,
                          top_k=0, top_p=1.0)

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


def _floor_call(config, b, s, n, seed):
  """A zero-argument function running only the sampler's weight matmuls.

  The float32 dots one ``sample`` call must do at least: the prefill of
  ``B*S`` positions through every layer's q/k/v/o, gate/up/down kernels (the
  unembedding for the last position only), then ``N-1`` decode steps of
  ``B`` rows through the same kernels and the unembedding, in a compiled
  ``fori_loop``. No attention, norms, RoPE or sampling: a lower bound on the
  time of any XLA implementation that computes these dots in float32 (only
  an RMS rescale keeps the chained activations finite).
  """
  import jax
  import jax.numpy as jnp

  c = config
  d, f = c.hidden_size, c.intermediate_size
  q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  keys = iter(jax.random.split(jax.random.key(seed), 8 * c.num_layers + 1))
  mk = lambda *shape: 0.02 * jax.random.normal(next(keys), shape)
  layers = [dict(q=mk(d, q), k=mk(d, kv), v=mk(d, kv), o=mk(q, d),
                 g=mk(d, f), u=mk(d, f), dn=mk(f, d))
            for _ in range(c.num_layers)]
  head = mk(d, c.vocab_size)

  def rms(x):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)

  def layer(x, w):
    qq, kk, vv = x @ w["q"], x @ w["k"], x @ w["v"]
    rep = q // kv
    x = rms(x + (qq + jnp.tile(kk + vv, (1, rep))) @ w["o"])
    return rms(x + (jax.nn.silu(x @ w["g"]) * (x @ w["u"])) @ w["dn"])

  @jax.jit
  def run_floor(layers, head, x0):
    x = x0.reshape(b * s, d)
    for w in layers:
      x = layer(x, w)
    logits = x.reshape(b, s, d)[:, -1] @ head

    def step(_, carry):
      x, logits = carry
      x = x + 1e-3 * logits[:, :d]     # depends on the previous step
      for w in layers:
        x = layer(x, w)
      return x, x @ head

    return jax.lax.fori_loop(0, n - 1, step, (x.reshape(b, s, d)[:, -1],
                                              logits))[1]

  x0 = jax.random.normal(next(keys), (b, s, d))

  def run():
    return jax.block_until_ready(run_floor(layers, head, x0))

  return run


def _timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return time.perf_counter() - t0, out


def measure(model, hf, b: int, s: int, n: int, repeats: int, seed: int,
            hf1: bool, floor: bool = False) -> dict:
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
  if floor:
    sides["floor"] = _floor_call(model.config, b, s, n, seed)

  first_s, out = _timed(divrl_runs[0])     # compiles
  assert out.tokens.shape == (b, n)
  assert bool(jnp.all(out.lengths == n)), "divrl stopped early"
  if floor:
    sides["floor"]()                     # compiles
  for name in sides:
    if name.startswith("hf"):
      _hf_call(hf, t_tokens, t_mask, min(n, 2),
               1 if name == "hf1" else HF_THREADS)()

  times = {name: [] for name in sides}
  for i in range(repeats):
    for name, run in sides.items():
      dt, out = _timed(divrl_runs[i + 1] if name == "divrl" else run)
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
  if floor:
    res["ceiling"] = res["hf_s"] / res["floor_s"]
    res["divrl_over_floor"] = res["divrl_s"] / res["floor_s"]
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
  if "floor_s" in first:
    res["floor_s"] = statistics.median(r["floor_s"] for r in runs)
  for name in ("ratio", "ratio_hf1", "ceiling", "divrl_over_floor"):
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
      f"cores), jax {m['jax']} (default matmul precision), "
      f"torch {m['torch']}, transformers {m['transformers']}, {m['date']}.",
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

  floors = [r for r in res["generate"] if "floor_s" in r]
  if floors:
    lines += [
        "",
        "### Float32 matmul floor",
        "",
        "The weight matmuls alone of one call (prefill of B·S positions, "
        "then N-1 decode steps of B rows through every layer's q, k, v, o, "
        "gate, up and down kernels and the unembedding) in one compiled "
        "`fori_loop` with the same shapes: no attention, norms or sampling "
        "(`_floor_call`). No XLA float32 implementation of the sampler can "
        "be faster, so HF time / floor time is the highest ratio reachable "
        "in float32 on this machine (the *ceiling*). Timed in the same "
        "alternation as the two sides.",
        "",
        "| preset | B | N | floor ms/call | divrl ms/call | divrl / floor "
        "| HF 2t ms/call | ceiling (HF / floor) | ceiling ≥3× |",
        "|---|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for r in floors:
      lines.append(
          f"| {r['preset']} | {r['B']} | {r['N']} | {_ms(r['floor_s'])} | "
          f"{_ms(r['divrl_s'])} | {_ratio(r, 'divrl_over_floor', 2)} | "
          f"{_ms(r['hf_s'])} | {_ratio(r, 'ceiling', 1)} | "
          f"{_yes(r['ceiling'])} |")

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
  import torch
  import transformers
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "processor": cpu,
      "cpu_count": os.cpu_count(),
      "loadavg_start": list(os.getloadavg()),
      "jax": jax.__version__,
      "jaxlib": getattr(__import__("jaxlib"), "__version__", None),
      "jax_backend": jax.default_backend(),
      "jax_default_matmul_precision": str(
          jax.config.jax_default_matmul_precision),
      "torch": torch.__version__,
      "torch_threads": HF_THREADS,
      "transformers": transformers.__version__,
  }


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
  parser.add_argument("--no-floor", action="store_true",
                      help="skip the float32 matmul floor")
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
      per_run = {c: [] for c in configs}
      for run in range(args.runs):
        for kind, b, s, n in configs:
          t0 = time.perf_counter()
          r = measure(model, hf, b, s, n, args.repeats,
                      args.seed + 1000 * run, hf1,
                      floor=kind == "generate" and not args.no_floor)
          per_run[(kind, b, s, n)].append(r)
          extra = (f", HF1 ratio {r['ratio_hf1']:5.2f}" if hf1 else "")
          if "ceiling" in r:
            extra += (f", floor {1e3 * r['floor_s']:9.2f} ms, ceiling "
                      f"{r['ceiling']:5.2f}")
          print(f"run {run} {kind:8s} {preset} B={b:3d} S={s:4d} N={n:4d}: "
                f"divrl {1e3 * r['divrl_s']:9.2f} ms, HF "
                f"{1e3 * r['hf_s']:9.2f} ms, ratio {r['ratio']:5.2f}{extra} "
                f"({time.perf_counter() - t0:.0f} s)", flush=True)
      for (kind, b, s, n), runs in per_run.items():
        r = aggregate(runs, sides)
        r["preset"] = preset
        res[kind].append(r)
      del model, hf
  res["growth"] = growth(res["generate"], sides)
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
