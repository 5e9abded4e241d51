"""divrl's update and forward against PyTorch, and its RL step against TRL.

NOT a test; CI runs it only on a tiny shape with divrl alone
(``tests/scripts/test_bench_update.py``). Usage, from the repository root::

  python -m scripts.bench_peers --install   # torch, TRL (and tunix), once
  python -m scripts.bench_update            # everything, ~25 min
  python -m scripts.bench_update --only update,forward --repeats 5
  python -m scripts.bench_update --render-only

Three measurements, each a ``scripts.bench_peers`` comparison (the same
harness: every side in its own warm worker process, repetitions taken in
turn, ratios pair by pair; see that script's docstring):

1. **The update** (``update_<preset>``): one optimizer step on a fixed
   batch (``protocol.UPDATE``: 64 rows of 32 prompt + 32 response tokens,
   float32, the on-policy GRPO surrogate, token mean, gradient clipping at
   1.0, AdamW), divrl's ``SplitUpdate`` against the same step in plain
   PyTorch, eager and under ``torch.compile``
   (``scripts/peers/torch_worker.py``).
2. **The forward** (``forward_<preset>``): the response tokens' log-probs,
   divrl's scoring forward against PyTorch eager and compiled.
3. **The whole GRPO step** (``grpo_step``): divrl against TRL's
   ``GRPOTrainer`` with matched settings (k3 KL on, one pass per batch) and
   with TRL's defaults (no KL, so no reference forward).

Both sides of 1 and 2 hold the same weights: divrl's worker writes its
model with ``save_hf`` and the torch worker loads it with ``transformers``;
the report checks that both compute the same log-probs and the same first
gradient norm. The presets are Qwen2-shaped (q/k/v bias, which
``transformers``' Qwen2 always has): ``small25m``'s widths
(``protocol.MODEL``) and ``tiny``'s.

The report states each target of the update-speed work and whether it is
met: the update at least as fast as ``torch.compile``; the update at most
3x the forward; the GRPO step at least 1.5x TRL's matched and ahead of
TRL's defaults. Writes ``results/update_vs_torch.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from scripts import _bench  # noqa: E402
from scripts import bench_peers  # noqa: E402
from scripts.peers import protocol  # noqa: E402

PRESETS = {
    "small25m": dict(protocol.MODEL),
    "tiny": dict(protocol.MODEL, vocab_size=64, hidden_size=64, num_layers=2,
                 num_heads=4, num_kv_heads=2, head_dim=16,
                 intermediate_size=128),
}
QUICK_UPDATE = {"rows": 8, "group": 4, "prompt_len": 8, "gen_len": 8}
# The targets' bounds (ratios of times; see ``targets``).
UPDATE_RATIO_BOUND = 3.0
STEP_MATCHED_BOUND = 1.5


def comparisons(quick: bool) -> list[dict[str, Any]]:
  """Every comparison (``quick``: the tiny preset and a tiny batch)."""
  out = []
  for preset in (("tiny",) if quick else ("small25m", "tiny")):
    spec = {**PRESETS[preset], **protocol.UPDATE,
            **(QUICK_UPDATE if quick else {}), "preset": preset}
    rows = protocol.UPDATE["rows"] if not quick else QUICK_UPDATE["rows"]
    shape = f"{rows} x ({spec['prompt_len']} + {spec['gen_len']}) tokens"
    out.append({"name": f"update_{preset}",
                "title": f"The update, {preset}, {shape}", "spec": spec,
                "rows": [("divrl", "update"), ("torch", "update_eager"),
                         ("torch", "update_compile")]})
    out.append({"name": f"forward_{preset}",
                "title": f"The forward, {preset}, {shape}", "spec": spec,
                "rows": [("divrl", "forward"), ("torch", "forward_eager"),
                         ("torch", "forward_compile")]})
  step = bench_peers.comparisons(quick)[0]
  assert step["name"] == "grpo_step"
  step["rows"] = [("divrl", "grpo_step"), ("trl", "grpo_step"),
                  ("trl", "grpo_step_defaults")]
  out.append(step)
  return out


def _median(res, comp: str, row: str) -> float | None:
  for c in res["comparisons"]:
    if c["name"] == comp:
      r = c["rows"].get(row, {})
      return None if "error" in r else r["seconds"]["median"]
  return None


def _paired(res, comp: str, row: str) -> float | None:
  for c in res["comparisons"]:
    if c["name"] == comp:
      r = c["rows"].get(row, {})
      return r["ratio"]["median"] if "ratio" in r else None
  return None


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
  """Each target, its measured ratio and whether it is met (None: not
  measured)."""
  out = []
  for preset in PRESETS:
    ratio = _paired(res, f"update_{preset}", "torch/update_compile")
    out.append({"target": f"{preset}: the update at least as fast as "
                          "torch.compile",
                "measure": "torch.compile time / divrl time (paired median)",
                "value": ratio, "bound": 1.0,
                "met": None if ratio is None else ratio >= 1.0})
    up = _median(res, f"update_{preset}", "divrl/update")
    fw = _median(res, f"forward_{preset}", "divrl/forward")
    ratio = None if up is None or fw is None else up / fw
    torch_up = _median(res, f"update_{preset}", "torch/update_compile")
    torch_fw = _median(res, f"forward_{preset}", "torch/forward_compile")
    note = (None if torch_up is None or torch_fw is None
            else f"torch.compile's: {torch_up / torch_fw:.2f}")
    out.append({"target": f"{preset}: the update at most "
                          f"{UPDATE_RATIO_BOUND:g}x the forward",
                "measure": "divrl update / divrl forward (medians)",
                "value": ratio, "bound": UPDATE_RATIO_BOUND, "note": note,
                "met": None if ratio is None
                else ratio <= UPDATE_RATIO_BOUND})
  for row, bound, what in (
      ("trl/grpo_step", STEP_MATCHED_BOUND, "TRL's matched (KL on)"),
      ("trl/grpo_step_defaults", 1.0, "TRL's defaults")):
    ratio = _paired(res, "grpo_step", row)
    out.append({"target": f"the GRPO step at least {bound:g}x {what}",
                "measure": "TRL time / divrl time (paired median)",
                "value": ratio, "bound": bound,
                "met": None if ratio is None else ratio >= bound})
  return out


# What the sides must agree on at the first step. Not the loss: with
# group-centred advantages, equal lengths and a ratio of 1 the token-mean
# loss is 0 up to rounding on every side.
AGREE = ("grad_norm", "logprob_sum")


def agreement(comp: dict[str, Any]) -> list[str]:
  """What each torch row computed at its first step, against divrl's."""
  rows = comp["rows"]
  base = next(iter(rows.values()))   # divrl's row comes first
  ref = base.get("info", {}).get("first_step")
  if not ref:
    return []
  lines = []
  for label, row in rows.items():
    mine = row.get("info", {}).get("first_step")
    if row is base or not mine:
      continue
    parts = []
    for k, v in ref.items():
      if k in AGREE and k in mine and v:
        parts.append(f"{k} {mine[k]:.6g} vs divrl's {v:.6g} "
                     f"(relative difference {abs(mine[k] - v) / abs(v):.1e})")
    if parts:
      lines.append(f"- {label}: " + "; ".join(parts))
  return lines


def render(res: dict[str, Any]) -> str:
  lines = [
      "# divrl's update against PyTorch, and its RL step against TRL",
      "",
      "Generated by `scripts/bench_update.py` (not a test; not run in CI). "
      "The harness is `scripts/bench_peers.py`'s; the reading is in "
      "`docs/performance.md`.",
      "", "```", res["command"], "```", "",
      f"Machine: {_bench.machine_line(res['machine'])}", ""]
  if res.get("peer_versions"):
    lines += ["Peer environment (`.venv-peers`): " + ", ".join(
        f"{k} {v}" for k, v in res["peer_versions"].items() if v) + ".", ""]
  lines += [f"{res['repeats']} timed repetitions per side, after a warm-up "
            "that compiles; ratio = the other side's time / divrl's in the "
            "same repetition (above 1: divrl faster).", "",
            "## Targets", ""]
  body = []
  for t in res["targets"]:
    met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
    value = "–" if t["value"] is None else f"{t['value']:.2f}"
    body.append([t["target"], t["measure"], value, met,
                 t.get("note") or ""])
  lines += _bench.table(["target", "measure", "value", "", "note"], body)
  lines += [""]
  for c in res["comparisons"]:
    lines += bench_peers.render_comparison(c)
    agree = agreement(c)
    if agree:
      lines += ["Same weights, same batch (first step):", ""] + agree + [""]
  lines += [f"Benchmark wall time: {res['wall_s'] / 60:.1f} min.", ""]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sides", default="divrl,torch,trl")
  parser.add_argument("--only", default="",
                      help="comma-separated comparison name prefixes")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--settle", type=float, default=0.2)
  parser.add_argument("--quick", action="store_true",
                      help="tiny shapes (what CI runs)")
  parser.add_argument("--out", default=os.path.join(ROOT, "results",
                                                    "update_vs_torch.json"))
  parser.add_argument("--md", default=None, help="default: --out with .md")
  parser.add_argument("--render-only", action="store_true")
  args = parser.parse_args(argv)
  md = args.md or os.path.splitext(args.out)[0] + ".md"
  if args.render_only:
    import json
    with open(args.out) as f:
      res = json.load(f)
    res["targets"] = targets(res)
    _bench.write(res, args.out, md, render)
    return 0
  sides, comps = bench_peers.select(parser, args, comparisons(args.quick))
  start = time.perf_counter()
  res: dict[str, Any] = {
      "command": " ".join(["python -m scripts.bench_update"]
                          + (sys.argv[1:] if argv is None else list(argv))),
      "machine": _bench.machine(("jax", "jaxlib", "flax", "optax", "numpy")),
      "peer_versions": bench_peers._peer_versions(),
      "repeats": args.repeats, "settle_s": args.settle,
      "sides": sorted(sides), "quick": args.quick, "comparisons": []}
  log_path = os.path.splitext(args.out)[0] + ".log"
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  weights: dict[str, str] = {}
  try:
    with open(log_path, "w") as log:
      for comp in comps:
        preset = comp["spec"].get("preset")
        if preset is not None:
          # divrl's worker (the first row, set up first) writes the weights
          # the torch worker then loads.
          if preset not in weights:
            weights[preset] = tempfile.mkdtemp(prefix=f"divrl_{preset}_")
          comp["spec"]["weights_dir"] = weights[preset]
        _bench.log(f"== {comp['name']}")
        out = bench_peers.run_comparison(comp, args.repeats, sides, log,
                                         args.settle)
        out["spec"] = {k: v for k, v in out["spec"].items()
                       if k != "weights_dir"}
        res["comparisons"].append(out)
  finally:
    for path in weights.values():
      shutil.rmtree(path, ignore_errors=True)
  res["machine"]["loadavg_end"] = list(os.getloadavg())
  res["wall_s"] = time.perf_counter() - start
  res["targets"] = targets(res)
  _bench.write(res, args.out, md, render)
  _bench.log(f"wrote {args.out} and {md} ({res['wall_s'] / 60:.1f} min; "
             f"worker logs in {log_path})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
