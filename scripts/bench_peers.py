"""divrl against tunix (JAX) and TRL (PyTorch), side by side in one run.

NOT a test; CI runs it only on a tiny shape with divrl alone
(``tests/scripts/test_bench_peers.py``). Usage, from the repository root::

  python -m scripts.bench_peers --install   # peers into .venv-peers, once
  python -m scripts.bench_peers             # all comparisons
  python -m scripts.bench_peers --only sampler,objective --repeats 5
  python -m scripts.bench_peers --render-only   # the page from the JSON

``--install`` creates ``.venv-peers`` (ignored by git) beside the project's
``.venv`` and installs the pinned peers there (``PEERS``; torch's CPU build
first, as TRL would otherwise pull a CUDA build), so that the project's
environment stays clean. Without the peer environment only divrl's side
runs, and every peer row says why it is missing.

**How the sides are compared.** Each library runs in its own worker process
(``scripts/peers/``: ``divrl_worker`` in ``.venv``, ``tunix_worker`` and
``trl_worker`` in ``.venv-peers``), started once per comparison and warmed
up (compiled) before timing. The parent then asks each side for one
repetition in turn (divrl, tunix, TRL, divrl, ...): while one side runs, the
others wait on their pipe, so they never share the cores, and a slow drift
of this noisy machine hits every side alike. The report gives each side's
median and range, and the ratio peer/divrl repetition by repetition (above
1: divrl faster), with its median and range. Every side runs the same spec
(``scripts/peers/protocol.py``): the same Qwen2-architecture model shape
with random weights, batch, group size, prompt and generation lengths
(exactly ``gen_len`` tokens, no stop token), float32, and the same
objective; each side's ``info`` lists what it could not match, and the
report prints it. A side that cannot run a configuration keeps its row,
with the reason.

Writes ``results/bench_peers.json`` (exact commands, versions, machine,
every repetition) and ``results/bench_peers.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from scripts import _bench  # noqa: E402
from scripts.peers import protocol  # noqa: E402

PEER_VENV = os.path.join(ROOT, ".venv-peers")
# Installed in this order; torch first so that TRL finds its CPU build.
PEERS = (("torch==2.13.0",), ("trl==1.16.0", "google-tunix==0.1.7"))
PEER_PACKAGES = ("google-tunix", "trl", "torch", "transformers", "jax",
                 "jaxlib", "flax", "optax", "accelerate", "numpy")
SIDE_NAMES = {"divrl": "divrl", "tunix": "tunix", "trl": "TRL",
              "torch": "torch"}

# A comparison: a name, the spec every side gets, and the (side, bench) rows.
# The first row is divrl's; ratios are taken against it.
TINY_MODEL = dict(protocol.MODEL, vocab_size=256, hidden_size=64,
                  num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                  intermediate_size=128)


def comparisons(quick: bool) -> list[dict[str, Any]]:
  """Every comparison the benchmark runs (``quick``: tiny shapes)."""
  model = TINY_MODEL if quick else protocol.MODEL
  grpo = dict(protocol.GRPO)
  if quick:
    grpo.update(prompts=2, group=4, prompt_len=8, gen_len=8)
  out = [{"name": "grpo_step", "title": "The full GRPO step",
          "spec": {**model, **grpo},
          "rows": [("divrl", "grpo_step"), ("divrl", "grpo_step_scored"),
                   ("tunix", "grpo_step"), ("trl", "grpo_step"),
                   ("trl", "grpo_step_defaults")]}]
  shapes = [(1, 16), (8, 16)] if quick else [(1, 32), (1, 128), (8, 32),
                                             (8, 128), (32, 32), (32, 128)]
  for batch, gen_len in shapes:
    out.append({"name": f"sampler_b{batch}_n{gen_len}",
                "title": f"The sampler alone, B = {batch}, N = {gen_len}",
                "spec": {**model, "batch": batch, "prompt_len": 16,
                         "gen_len": gen_len, "temperature": 1.0, "seed": 0},
                "rows": [("divrl", "sampler"), ("tunix", "sampler"),
                         ("trl", "sampler")]})
  stats = ({"vocab_size": 1024, "hidden_size": 64, "tokens": 256}
           if quick else {"vocab_size": 151936, "hidden_size": 896,
                          "tokens": 1024})
  out.append({"name": "token_stats",
              "title": (f"Token statistics, V = {stats['vocab_size']:,}, "
                        f"d = {stats['hidden_size']}, "
                        f"N = {stats['tokens']}"),
              "spec": {**stats, "seed": 0, "dtype": "float32"},
              "rows": [("divrl", "token_stats"),
                       ("divrl", "token_stats_naive"),
                       ("tunix", "token_stats")]})
  objective = dict(protocol.OBJECTIVE)
  if quick:
    objective.update(batch=8, length=16, group=4)
  out.append({"name": "objective",
              "title": (f"The objective alone, [B,T] = "
                        f"[{objective['batch']},{objective['length']}]"),
              "spec": objective,
              "rows": [("divrl", "objective"), ("tunix", "objective"),
                       ("trl", "objective"), ("trl", "objective_trl")]})
  return out


# ----------------------------------------------------------------------------
# Environments and workers
# ----------------------------------------------------------------------------


def peer_python() -> str:
  return os.path.join(PEER_VENV, "bin", "python")


def install(log=sys.stderr) -> None:
  """Creates ``.venv-peers`` and installs ``PEERS`` into it."""
  if not os.path.exists(peer_python()):
    subprocess.run(["python3", "-m", "venv", PEER_VENV], check=True)
  pip = [peer_python(), "-m", "pip", "install", "-q"]
  subprocess.run(pip + ["--upgrade", "pip"], check=True, stdout=log)
  for group in PEERS:
    subprocess.run(pip + list(group), check=True, stdout=log)
  subprocess.run([peer_python(), "-c", "import tunix, trl, torch"],
                 check=True)


def worker_argv(side: str) -> list[str] | None:
  """The command of a side's worker, or None if its venv is missing."""
  if side == "divrl":
    return [sys.executable, "-m", "scripts.peers.divrl_worker"]
  if not os.path.exists(peer_python()):
    return None
  module = {"tunix": "tunix_worker", "trl": "trl_worker",
            "torch": "torch_worker"}[side]
  return [peer_python(), "-m", f"scripts.peers.{module}"]


def _env() -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
             PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  return env


# ----------------------------------------------------------------------------
# One comparison
# ----------------------------------------------------------------------------


def run_comparison(comp: dict[str, Any], repeats: int, sides: set[str],
                   log, settle_s: float = 0.0) -> dict[str, Any]:
  """Sets up every row's worker, then runs them in turn ``repeats`` times,
  pausing ``settle_s`` before each repetition (thread pools that spin
  after their last task, OpenMP's and XLA's, go idle before the next side
  starts)."""
  rows: dict[str, dict[str, Any]] = {}
  workers: dict[str, protocol.Worker] = {}
  for side, bench in comp["rows"]:
    label = f"{side}/{bench}"
    row = {"side": side, "bench": bench}
    rows[label] = row
    if side not in sides:
      row["error"] = "not requested (--sides)"
      continue
    argv = worker_argv(side)
    if argv is None:
      row["error"] = ("peer environment missing: run "
                      "`python -m scripts.bench_peers --install`")
      continue
    worker = protocol.Worker(label, argv, cwd=ROOT, env=_env(), log=log)
    answer = worker.setup(bench, comp["spec"])
    if not answer.get("ok"):
      row["error"] = answer.get("error", "setup failed")
      row["traceback"] = answer.get("traceback")
      worker.close()
      continue
    row.update(info=answer.get("info", {}), setup_s=answer["setup_s"])
    workers[label] = worker
    _bench.log(f"{comp['name']}: {label} ready ({answer['setup_s']:.1f} s)")
  results: dict[str, list[dict[str, Any]]] = {k: [] for k in workers}
  try:
    for _ in range(repeats):
      for label, worker in workers.items():
        if "error" in rows[label]:
          continue
        time.sleep(settle_s)
        answer = worker.run()
        if not answer.get("ok"):
          rows[label]["error"] = answer.get("error", "run failed")
          continue
        results[label].append(answer["result"])
  finally:
    for w in workers.values():
      w.close()
  for label, reps in results.items():
    row = rows[label]
    row["repetitions"] = reps
    if "error" in row:
      continue
    row["seconds"] = _bench.summary([r["seconds"] for r in reps])
    phases = sorted({p for r in reps for p in r.get("phases", {})})
    if phases:
      row["phases"] = {p: _bench.summary([r["phases"][p] for r in reps])
                       for p in phases}
    if reps and "tokens" in reps[0]:
      row["tokens"] = reps[0]["tokens"]
      row["tokens_per_s"] = row["tokens"] / row["seconds"]["median"]
    for key in ("temp_bytes", "loss", "value"):
      if reps and key in reps[0]:
        row[key] = reps[0][key]
  base = rows[f"{comp['rows'][0][0]}/{comp['rows'][0][1]}"]
  if "error" not in base:
    for label, row in rows.items():
      if row is base or "error" in row:
        continue
      row["ratio"] = _bench.paired_ratios(
          row["seconds"]["values"], base["seconds"]["values"])
  return {"name": comp["name"], "title": comp["title"], "spec": comp["spec"],
          "repeats": repeats, "rows": rows}


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------


def _label(row: dict[str, Any]) -> str:
  name = SIDE_NAMES.get(row["side"], row["side"])
  return f"{name} `{row['bench']}`"


def render_comparison(c: dict[str, Any]) -> list[str]:
  rows = list(c["rows"].values())
  phases = sorted({p for r in rows for p in r.get("phases", {})})
  tokens = any("tokens_per_s" in r for r in rows)
  memory = any("temp_bytes" in r for r in rows)
  header = (["side", "median s", "range s"] + [f"{p} s" for p in phases]
            + (["tokens/s"] if tokens else [])
            + (["temp MiB"] if memory else []) + ["time / divrl's (range)"])
  body = []
  for r in rows:
    if "error" in r:
      body.append([_label(r), "–", r["error"].splitlines()[0][:160]]
                  + ["–"] * (len(header) - 3))
      continue
    s = r["seconds"]
    cells = [_label(r), _bench.fmt(s["median"]),
             f"{_bench.fmt(s['min'])}–{_bench.fmt(s['max'])}"]
    cells += [_bench.fmt(r["phases"][p]["median"]) if p in r.get("phases", {})
              else "–" for p in phases]
    if tokens:
      cells.append(_bench.fmt(r.get("tokens_per_s")))
    if memory:
      cells.append(_bench.fmt(r["temp_bytes"] / 2**20)
                   if "temp_bytes" in r else "–")
    cells.append(_bench.ratio_cell(r["ratio"]) if "ratio" in r else
                 "(baseline)")
    body.append(cells)
  lines = [f"### {c['title']}", ""] + _bench.table(header, body)
  notes: dict[str, list[str]] = {}     # one line per note, its rows
  for r in rows:
    for item in r.get("info", {}).get("differs", []) or []:
      notes.setdefault(item, []).append(_label(r))
  if notes:
    lines += ["", "Settings that differ from the spec:", ""]
    lines += [f"- {', '.join(labels)}: {item}"
              for item, labels in notes.items()]
  return lines + [""]


def render(res: dict[str, Any]) -> str:
  m = res["machine"]
  lines = [
      "# divrl against its peers, side by side",
      "",
      "Generated by `scripts/bench_peers.py` (not a test; not run in CI). "
      "How the sides alternate and what \"equal work\" means: the script's "
      "docstring and `docs/performance.md`, which also holds the reading.",
      "",
      "```",
      res["command"],
      "```",
      "",
      f"Machine: {_bench.machine_line(m)}",
      "",
  ]
  if res.get("peer_versions"):
    lines += ["Peer environment (`.venv-peers`): " + ", ".join(
        f"{k} {v}" for k, v in res["peer_versions"].items() if v) + ".", ""]
  lines += [f"{res['repeats']} timed repetitions per side, after a warm-up "
            "that compiles; ratio = the peer's time / divrl's time in the "
            "same repetition (above 1: divrl faster), median and range.", ""]
  for c in res["comparisons"]:
    lines += render_comparison(c)
  lines += [f"Benchmark wall time: {res['wall_s'] / 60:.1f} min.", ""]
  return "\n".join(lines)


def select(parser, args, all_comparisons):
  """``(sides, comparisons)`` from ``--repeats``, ``--sides`` and ``--only``;
  a bad value is a parser error naming the flag."""
  if args.repeats < 1:
    parser.error("--repeats must be at least 1")
  sides = {s for s in args.sides.split(",") if s}
  unknown = sides - set(SIDE_NAMES)
  if unknown:
    parser.error(f"--sides: unknown {sorted(unknown)}; known "
                 f"{sorted(SIDE_NAMES)}")
  only = [p for p in args.only.split(",") if p]
  comps = [c for c in all_comparisons
           if not only or any(c["name"].startswith(p) for p in only)]
  if not comps:
    parser.error(f"--only {args.only!r} matches no comparison")
  return sides, comps


def _peer_versions() -> dict[str, str | None]:
  if not os.path.exists(peer_python()):
    return {}
  code = ("import importlib.metadata as m, json\n"
          f"names = {list(PEER_PACKAGES)!r}\n"
          "out = {}\n"
          "for n in names:\n"
          "  try: out[n] = m.version(n)\n"
          "  except m.PackageNotFoundError: out[n] = None\n"
          "print(json.dumps(out))")
  import json
  proc = subprocess.run([peer_python(), "-c", code], capture_output=True,
                        text=True, check=True)
  return json.loads(proc.stdout)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--install", action="store_true",
                      help="create .venv-peers and install the peers")
  parser.add_argument("--sides", default="divrl,tunix,trl")
  parser.add_argument("--only", default="",
                      help="comma-separated comparison name prefixes")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--settle", type=float, default=0.2,
                      help="seconds of pause before each repetition")
  parser.add_argument("--quick", action="store_true",
                      help="tiny shapes (what CI runs)")
  parser.add_argument("--out", default=os.path.join(ROOT, "results",
                                                    "bench_peers.json"))
  parser.add_argument("--md", default=os.path.join(ROOT, "results",
                                                   "bench_peers.md"))
  parser.add_argument("--render-only", action="store_true",
                      help="rewrite --md from an existing --out JSON")
  args = parser.parse_args(argv)
  if args.render_only:
    import json
    with open(args.out) as f:
      res = json.load(f)
    with open(args.md, "w") as f:
      f.write(render(res))
    return 0
  if args.install:
    install()
    return 0
  sides, comps = select(parser, args, comparisons(args.quick))
  start = time.perf_counter()
  res = {
      "command": " ".join(["python -m scripts.bench_peers"]
                          + (sys.argv[1:] if argv is None else list(argv))),
      "machine": _bench.machine(("jax", "jaxlib", "flax", "optax", "numpy")),
      "peer_versions": _peer_versions(),
      "repeats": args.repeats, "settle_s": args.settle,
      "sides": sorted(sides), "quick": args.quick,
      "comparisons": [],
  }
  log_path = os.path.splitext(args.out)[0] + ".log"
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(log_path, "w") as log:
    for comp in comps:
      _bench.log(f"== {comp['name']}")
      res["comparisons"].append(run_comparison(comp, args.repeats, sides,
                                               log, args.settle))
  res["machine"]["loadavg_end"] = list(os.getloadavg())
  res["wall_s"] = time.perf_counter() - start
  _bench.write(res, args.out, args.md, render)
  _bench.log(f"wrote {args.out} and {args.md} "
             f"({res['wall_s'] / 60:.1f} min; worker logs in {log_path})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
