"""Benchmark: the compiled divrl group sampler vs Hugging Face ``generate``.

NOT a test; not run in CI. For the ``tiny`` and ``small25m`` decoder presets a
random float32 ``divrl.models.Decoder`` is built, written with ``save_hf`` to
a temporary directory and loaded into ``transformers`` (float32, eval mode,
two torch threads, ``torch.inference_mode``), so both sides hold the same
weights. Then, side by side in this one process:

* generation: random prompts of 16 tokens (no padding, no stop tokens, so
  both sides generate exactly ``N`` tokens), temperature-1 sampling without
  top-k/top-p filtering, for every batch size ``B`` and length ``N``. divrl
  calls ``divrl.models.sample`` (one compiled prefill + ``lax.while_loop``);
  Hugging Face calls ``generate(do_sample=True, temperature=1.0, top_k=0,
  top_p=1.0, max_new_tokens=N, min_new_tokens=N, pad_token_id=0)`` with its
  default (dynamic) KV cache. Throughput is ``B * N / wall time`` of one full
  call, prefill included;
* prefill: the same calls with ``max_new_tokens=1`` for prompt lengths 16
  and 128.

Every measurement is warm (one untimed call first; for divrl that call
compiles) and is the median of ``--repeats`` timed calls. The divrl and
Hugging Face calls of one configuration alternate, so slow drifts of a noisy
machine hit both sides alike. JAX runs with its default float32 matmul
precision.

Usage (the run behind results/sampler.md, a few minutes on 2 CPU cores):

  .venv/bin/python -m scripts.bench_sampler

``--render-only`` rewrites results/sampler.md from results/sampler.json.
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
PREFILL_LENS = (16, 128)


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------


def build_models(preset: str, seed: int, tmpdir: str):
  """A random divrl decoder and the same weights in transformers."""
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
  """Returns a zero-argument function running one warm ``sample`` call."""
  import jax

  from divrl.models.sampler import SamplingConfig, sample

  config = SamplingConfig(max_new_tokens=n, num_samples=1, temperature=1.0,
                          top_k=0, top_p=1.0)

  def run():
    out = sample(model, tokens, mask, key, config)
    jax.block_until_ready(out)
    return out

  return run


def _hf_call(hf, tokens, mask, n):
  """Returns a zero-argument function running one ``generate`` call."""
  import torch

  def run():
    with torch.inference_mode():
      return hf.generate(
          input_ids=tokens, attention_mask=mask, do_sample=True,
          temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
          min_new_tokens=n, pad_token_id=0)

  return run


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def measure_pair(model, hf, b: int, s: int, n: int, repeats: int,
                 seed: int) -> dict:
  """Warm median wall times of divrl and HF for one ``(B, S, N)``."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  vocab = model.config.vocab_size
  rng = np.random.default_rng(seed)
  prompts = rng.integers(1, vocab, size=(b, s), dtype=np.int64)
  j_tokens = jnp.asarray(prompts, jnp.int32)
  j_mask = jnp.ones((b, s), bool)
  t_tokens = torch.from_numpy(prompts)
  t_mask = torch.ones((b, s), dtype=torch.long)
  torch.manual_seed(seed)

  divrl_runs = [_divrl_call(model, j_tokens, j_mask, jax.random.key(seed + i),
                            n) for i in range(repeats + 1)]
  hf_run = _hf_call(hf, t_tokens, t_mask, n)

  out = divrl_runs[0]()                    # warm-up
  assert out.tokens.shape == (b, n)
  assert bool(jnp.all(out.lengths == n))
  gen = hf_run()                           # warm-up
  assert tuple(gen.shape) == (b, s + n), gen.shape

  divrl_times, hf_times = [], []
  for i in range(repeats):
    divrl_times.append(_timed(divrl_runs[i + 1]))
    hf_times.append(_timed(hf_run))
  d_med, h_med = statistics.median(divrl_times), statistics.median(hf_times)
  return {
      "B": b, "S": s, "N": n,
      "divrl_times_s": divrl_times, "hf_times_s": hf_times,
      "divrl_s": d_med, "hf_s": h_med,
      "divrl_tok_s": b * n / d_med, "hf_tok_s": b * n / h_med,
      "ratio": h_med / d_med,
  }


def compile_time(model, b: int, s: int, n: int, seed: int) -> float:
  """Wall time of the first (compiling) ``sample`` call for a new shape."""
  import jax
  import jax.numpy as jnp

  tokens = jnp.full((b, s), 1, jnp.int32)
  return _timed(_divrl_call(model, tokens, jnp.ones((b, s), bool),
                            jax.random.key(seed), n))


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


def render(res: dict) -> str:
  """The markdown section for ``results/sampler.md``."""
  m = res["machine"]
  lines = [
      "## Sampler throughput (issue 5)",
      "",
      "Compiled divrl group sampler (`divrl.models.sample`: one prefill plus "
      "a `lax.while_loop` of KV-cache decode steps) against Hugging Face "
      "`generate` (dynamic KV cache) on the same random float32 weights "
      "(`save_hf` then `AutoModelForCausalLM.from_pretrained`), "
      f"measured side by side on {m['cpu_count']} CPU cores "
      f"({m['processor']}), jax {m['jax']}, torch {m['torch']} "
      f"({m['torch_threads']} threads), transformers {m['transformers']}, "
      f"{m['date']}.",
      "",
      "```",
      res["command"],
      "```",
      "",
      f"Prompt length {PROMPT_LEN}, temperature 1, no top-k/top-p, no stop "
      "tokens (exactly N tokens per row), one sample per prompt. Tokens/s = "
      "B·N / wall time of one whole call (prefill included), warm, median of "
      f"{res['repeats']} calls; divrl and HF calls alternate. Ratio = divrl "
      f"tokens/s / HF tokens/s; target ≥ {TARGET_RATIO:g}×.",
      "",
      "### Generation",
      "",
      "| preset | B | N | divrl tok/s | HF tok/s | ratio | target met | "
      "divrl ms/call | HF ms/call |",
      "|---|--:|--:|--:|--:|--:|:-:|--:|--:|",
  ]
  for r in res["generate"]:
    lines.append(
        f"| {r['preset']} | {r['B']} | {r['N']} | {_fmt(r['divrl_tok_s'])} "
        f"| {_fmt(r['hf_tok_s'])} | {r['ratio']:.2f}× | "
        f"{'yes' if r['ratio'] >= TARGET_RATIO else 'no'} | "
        f"{_ms(r['divrl_s'])} | {_ms(r['hf_s'])} |")
  lines += [
      "",
      "### Prefill (`max_new_tokens=1`)",
      "",
      "| preset | B | prompt len | divrl ms | HF ms | HF / divrl |",
      "|---|--:|--:|--:|--:|--:|",
  ]
  for r in res["prefill"]:
    lines.append(
        f"| {r['preset']} | {r['B']} | {r['S']} | {_ms(r['divrl_s'])} | "
        f"{_ms(r['hf_s'])} | {r['ratio']:.2f}× |")
  lines += [
      "",
      "### Cost growth",
      "",
      "Wall time of one call relative to B=1 (same preset and N), and of "
      "N=128 relative to N=32 (same preset and B; 4.0 would be linear).",
      "",
      "| preset | N | side | B=8 / B=1 | B=32 / B=1 |",
      "|---|--:|---|--:|--:|",
  ]
  for row in res["growth"]["batch"]:
    lines.append(f"| {row['preset']} | {row['N']} | {row['side']} | "
                 f"{row['B8']:.2f} | {row['B32']:.2f} |")
  lines += [
      "",
      "| preset | B | side | N=128 / N=32 |",
      "|---|--:|---|--:|",
  ]
  for row in res["growth"]["length"]:
    lines.append(f"| {row['preset']} | {row['B']} | {row['side']} | "
                 f"{row['N128_over_N32']:.2f} |")
  if res.get("compile_s"):
    lines += ["", "divrl compile time of the first call (excluded above): "
              + ", ".join(f"{c['preset']} B={c['B']} N={c['N']}: "
                          f"{c['seconds']:.1f} s" for c in res["compile_s"])
              + "."]
  if res.get("reading"):
    lines += ["", "### Reading", "", res["reading"]]
  lines += ["", f"Benchmark wall time: {res['wall_s']:.0f} s.", ""]
  return "\n".join(lines)


def growth(generate: list[dict]) -> dict:
  """Time ratios along batch size and generation length."""
  by = {(r["preset"], r["B"], r["N"]): r for r in generate}
  presets = sorted({r["preset"] for r in generate},
                   key=[r["preset"] for r in generate].index)
  bs = sorted({r["B"] for r in generate})
  ns = sorted({r["N"] for r in generate})
  batch, length = [], []
  for p in presets:
    for n in ns:
      for side in ("divrl", "hf"):
        base = by[(p, bs[0], n)][f"{side}_s"]
        row = {"preset": p, "N": n, "side": side}
        for b in bs[1:]:
          row[f"B{b}"] = by[(p, b, n)][f"{side}_s"] / base
        batch.append(row)
    for b in bs:
      for side in ("divrl", "hf"):
        length.append({
            "preset": p, "B": b, "side": side,
            f"N{ns[-1]}_over_N{ns[0]}": (by[(p, b, ns[-1])][f"{side}_s"]
                                         / by[(p, b, ns[0])][f"{side}_s"])})
  return {"batch": batch, "length": length}


def machine_info() -> dict:
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
      "jax": jax.__version__,
      "jax_backend": jax.default_backend(),
      "jax_default_matmul_precision": str(
          jax.config.jax_default_matmul_precision),
      "torch": torch.__version__,
      "torch_threads": torch.get_num_threads(),
      "transformers": transformers.__version__,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default="tiny,small25m")
  parser.add_argument("--batch-sizes", default="1,8,32")
  parser.add_argument("--lengths", default="32,128")
  parser.add_argument("--prefill-lengths", default="16,128")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(ROOT, "results",
                                                    "sampler.json"))
  parser.add_argument("--doc", default=os.path.join(ROOT, "results",
                                                    "sampler.md"))
  parser.add_argument("--reading", default=None,
                      help="file with the reading paragraph to embed")
  parser.add_argument("--render-only", action="store_true")
  args = parser.parse_args(argv)

  if args.render_only:
    with open(args.out) as f:
      res = json.load(f)
    if args.reading:
      with open(args.reading) as f:
        res["reading"] = f.read().strip()
      with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    with open(args.doc, "w") as f:
      f.write(render(res))
    return 0

  import torch
  torch.set_num_threads(2)
  sys.path.insert(0, ROOT)

  t_start = time.perf_counter()
  presets = args.presets.split(",")
  bs = [int(x) for x in args.batch_sizes.split(",")]
  ns = [int(x) for x in args.lengths.split(",")]
  prefill_lens = [int(x) for x in args.prefill_lengths.split(",")]
  res = {
      "command": "python -m scripts.bench_sampler" + "".join(
          f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
      "machine": machine_info(), "repeats": args.repeats,
      "target_ratio": TARGET_RATIO, "prompt_len": PROMPT_LEN,
      "generate": [], "prefill": [], "compile_s": [], "models": {},
  }
  with tempfile.TemporaryDirectory() as tmpdir:
    for preset in presets:
      model, hf, params = build_models(preset, args.seed, tmpdir)
      res["models"][preset] = {"params": params}
      print(f"== {preset}: {params / 1e6:.2f}M parameters", flush=True)
      for n in ns:
        for b in bs:
          t0 = time.perf_counter()
          res["compile_s"].append({
              "preset": preset, "B": b, "N": n,
              "seconds": compile_time(model, b, PROMPT_LEN, n, args.seed)})
          r = measure_pair(model, hf, b, PROMPT_LEN, n, args.repeats,
                           args.seed)
          r["preset"] = preset
          res["generate"].append(r)
          print(f"gen  {preset} B={b:3d} N={n:4d}: divrl "
                f"{r['divrl_tok_s']:9.1f} tok/s, HF {r['hf_tok_s']:9.1f} "
                f"tok/s, ratio {r['ratio']:5.2f} "
                f"({time.perf_counter() - t0:.0f} s)", flush=True)
      for s in prefill_lens:
        for b in bs:
          r = measure_pair(model, hf, b, s, 1, args.repeats, args.seed)
          r["preset"] = preset
          res["prefill"].append(r)
          print(f"pre  {preset} B={b:3d} S={s:4d}: divrl "
                f"{1e3 * r['divrl_s']:8.2f} ms, HF {1e3 * r['hf_s']:8.2f} "
                f"ms, HF/divrl {r['ratio']:5.2f}", flush=True)
      del model, hf
  res["growth"] = growth(res["generate"])
  res["wall_s"] = time.perf_counter() - t_start
  if args.reading:
    with open(args.reading) as f:
      res["reading"] = f.read().strip()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  with open(args.doc, "w") as f:
    f.write(render(res))
  print(f"wrote {args.out} and {args.doc} ({res['wall_s']:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
