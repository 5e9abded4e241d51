"""Profile: where one update step's time goes, by program, pass and source.

Runs the trainer's compiled-apart update (``divrl.rl.step.SplitUpdate``:
the model's forward with its VJP, the objective's gradient, the model's
backward, the optimizer) on a random model and a synthetic batch, under
``jax.profiler.trace``, and attributes every XLA operation's time on this
machine's CPU threads to

* the program it ran in (``forward``, ``objective``, ``backward``,
  ``apply``, ``select``);
* the pass (``fwd`` or ``bwd``: the op's JAX name holds ``transpose(`` in
  the backward);
* the kind of operation (``matmul``: the op is, or fuses, a ``dot``;
  ``copy``/``transpose``; ``other`` elementwise and reductions);
* the model part it was traced from: the innermost ``jax.named_scope`` in
  its JAX name (``qkv``, ``attend``, ``o_proj``, ``mlp``, ``rms_norm``,
  ``embed``, ``token_statistics``), else its primitive.

The trace is read with ``jax.profiler.ProfileData``; no extra package is
needed. Timings are this machine's, noisy: the script reports shares of
the measured step and the number of repetitions, never a pass/fail.

  python -m scripts.profile_update --preset small25m --rows 64 \\
      --prompt-len 32 --response-len 32 --repeats 3

Writes ``results/profile_update.{json,md}`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from scripts import _bench  # noqa: E402

_META = re.compile(r'op_name="([^"]*)"')
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s.*?\s([a-z][\w\-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply|body)=%?([\w.\-]+)")


# ----------------------------------------------------------------------------
# HLO: what each top-level op is.
# ----------------------------------------------------------------------------


def hlo_ops(text: str) -> dict[str, dict[str, Any]]:
  """``{instruction name: {op, op_name, has_dot}}`` of a compiled module's
  text, for every instruction (fusion
  instructions inherit ``has_dot`` from the computation they call)."""
  comps: dict[str, list[str]] = {}
  current = None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if head and not line.startswith(" "):
      current = head.group(1)
      comps[current] = []
      continue
    if current is not None:
      comps[current].append(line)

  @functools.lru_cache(maxsize=None)
  def has_dot(comp: str) -> bool:
    for line in comps.get(comp, ()):
      m = _INSTR.match(line)
      if m and m.group(2) in ("dot", "convolution"):
        return True
      for callee in _CALLS.findall(line):
        if callee in comps and has_dot(callee):
          return True
    return False

  ops = {}
  for lines in comps.values():
    for line in lines:
      m = _INSTR.match(line)
      if not m:
        continue
      name, op = m.groups()
      meta = _META.search(line)
      dot = op in ("dot", "convolution") or any(
          has_dot(c) for c in _CALLS.findall(line) if c in comps)
      ops[name] = {"op": op, "has_dot": dot,
                   "op_name": meta.group(1) if meta else ""}
  return ops


# The model's named scopes (``jax.named_scope`` in divrl/models/decoder.py
# and divrl/ops/token_stats.py), most specific first.
SCOPES = ("token_statistics", "attend", "o_proj", "qkv", "mlp", "rms_norm",
          "embed")


def scope_of(op_name: str) -> str:
  """The innermost model scope in an op's JAX name, else its last
  primitive (``(adam) add``, ``(other) select_n``)."""
  found = [(op_name.rfind(f"({sc})"), sc) for sc in SCOPES]
  found += [(op_name.rfind(f"/{sc}/"), sc) for sc in SCOPES]
  pos, sc = max(found)
  if pos >= 0:
    return sc
  prim = re.sub(r"\.\d+$", "", op_name.rsplit("/", 1)[-1]) or "?"
  return f"(unscoped) {prim}"


def kind_of(op: dict[str, Any]) -> str:
  if op["has_dot"]:
    return "matmul"
  if op["op"] in ("copy", "transpose", "copy-start", "copy-done"):
    return op["op"].split("-")[0]
  return "other"


def pass_of(op: dict[str, Any]) -> str:
  return "bwd" if "transpose(" in op["op_name"] else "fwd"


# ----------------------------------------------------------------------------
# The trace.
# ----------------------------------------------------------------------------


def op_times(xplane: str) -> dict[tuple[str, str], dict[str, float]]:
  """``{(hlo_module, hlo_op): {"ns": total, "count": n}}`` over every CPU
  thread of a trace (an op split over threads counts each thread)."""
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  data = ProfileData.from_file(xplane)
  out: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(
      lambda: {"ns": 0.0, "count": 0})
  for plane in data.planes:
    for line in plane.lines:
      for ev in line.events:
        stats = dict(ev.stats)
        if "hlo_op" not in stats:
          continue
        key = (str(stats.get("hlo_module", "")), str(stats["hlo_op"]))
        out[key]["ns"] += float(ev.duration_ns)
        out[key]["count"] += 1
  return dict(out)


def attribute(times, modules: dict[str, dict[str, dict[str, Any]]],
              programs: dict[str, str]) -> list[dict[str, Any]]:
  """One row per (program, pass, kind, source function) with its time."""
  rows: dict[tuple, float] = collections.defaultdict(float)
  for (module, name), t in times.items():
    program = next((p for m, p in programs.items() if module.startswith(m)),
                   None)
    if program is None:
      continue
    op = modules[program].get(name)
    if op is None:
      key = (program, "?", "other", f"(op {name})")
    else:
      key = (program, pass_of(op), kind_of(op), scope_of(op["op_name"]))
    rows[key] += t["ns"]
  return [{"program": k[0], "pass": k[1], "kind": k[2], "source": k[3],
           "ns": v} for k, v in sorted(rows.items(), key=lambda kv: -kv[1])]


# ----------------------------------------------------------------------------
# The step.
# ----------------------------------------------------------------------------


def build(preset: str, rows: int, group: int, prompt_len: int,
          response_len: int, seed: int = 0):
  """A random ``preset`` model, a GRPO objective (PPO clip 0.2, token mean;
  no KL, so no reference), AdamW, a synthetic prepared batch, and the
  trainer's ``SplitUpdate``."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  import divrl  # pylint: disable=import-outside-toplevel
  from divrl.models import Decoder, DecoderConfig  # pylint: disable=import-outside-toplevel
  from divrl.rl import step as step_lib  # pylint: disable=import-outside-toplevel

  config = DecoderConfig.preset(preset)
  model = Decoder(config, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(model)
  objective = divrl.Objective.from_config({
      "advantage": "grpo", "surrogate": {"name": "ppo_clip"},
      "aggregation": "token-mean"})
  rng = np.random.default_rng(seed)
  v = config.vocab_size
  rollout = step_lib.Rollout(
      prompt_tokens=jnp.asarray(rng.integers(1, v, (rows, prompt_len)),
                                jnp.int32),
      prompt_mask=jnp.ones((rows, prompt_len), bool),
      tokens=jnp.asarray(rng.integers(1, v, (rows, response_len)), jnp.int32),
      response_mask=jnp.ones((rows, response_len), bool),
      rollout_logprobs=jnp.zeros((rows, response_len), jnp.float32),
      truncated=jnp.zeros((rows,), bool),
      rewards=jnp.asarray(rng.integers(0, 2, rows), jnp.float32),
      group_ids=jnp.repeat(jnp.arange(rows // group, dtype=jnp.int32), group),
      sample_source=jnp.zeros((rows,), jnp.int32),
      solution_ids=jnp.zeros((rows,), jnp.int32),
      num_groups=rows // group)
  plan = step_lib.Plan.of(objective)
  carry = objective.init_carry()
  plan = step_lib.on_policy_plan(plan, objective, rollout, carry)
  key = jax.random.key(seed)
  prepared, carry, _ = step_lib.SplitPrepare(graphdef, objective, plan)(
      params, None, carry, rollout, key)
  tx = optax.adamw(1e-6, weight_decay=0.0)
  update = step_lib.SplitUpdate(graphdef, tx, objective, plan)
  ids = jnp.arange(rows, dtype=jnp.int32)
  state = {"params": params, "opt": tx.init(params)}

  def step():
    p, o, _ = update(state["params"], state["opt"], None, carry, prepared,
                     ids, key)
    jax.block_until_ready(p)
    state["params"], state["opt"] = p, o

  def texts() -> dict[str, str]:
    """The compiled text of each program, by the trainer's names."""
    m = update._model  # pylint: disable=protected-access
    inputs, batch = m.select(prepared, ids)
    fwd_args = (state["params"], None, inputs, 0)
    stats, vjp = m.forward(*fwd_args)
    (agg, _), dstats = update._objective(stats, batch, 0, key, carry)  # pylint: disable=protected-access
    grads = m.backward(vjp, dstats)
    out = {
        "select": m.select.lower(prepared, ids).compile().as_text(),
        "forward": m.forward.lower(*fwd_args).compile().as_text(),
        "objective": update._objective.lower(  # pylint: disable=protected-access
            stats, batch, 0, key, carry).compile().as_text(),
        "backward": m.backward.lower(vjp, dstats).compile().as_text(),
        "apply": update._apply.lower(  # pylint: disable=protected-access
            state["params"], state["opt"], grads, agg, {}).compile(
                ).as_text(),
    }
    return out

  return config, step, texts


def module_name(text: str) -> str:
  m = re.search(r"^HloModule\s+([\w.\-]+)", text, re.M)
  return m.group(1) if m else ""


def profile(preset: str, rows: int, group: int, prompt_len: int,
            response_len: int, repeats: int) -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel
  config, step, texts = build(preset, rows, group, prompt_len, response_len)
  for _ in range(2):
    step()                                      # compile, then warm
  programs_text = texts()
  modules = {p: hlo_ops(t) for p, t in programs_text.items()}
  names = {module_name(t): p for p, t in programs_text.items()}
  walls = []
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(repeats):
        walls.append(_bench.timed(step)[0])
    xplane = sorted(glob.glob(os.path.join(d, "**", "*.xplane.pb"),
                              recursive=True))[-1]
    times = op_times(xplane)
  rows_out = attribute(times, modules, names)
  total = sum(r["ns"] for r in rows_out)
  return {"preset": preset, "rows": rows, "group": group,
          "prompt_len": prompt_len, "response_len": response_len,
          "repeats": repeats, "wall_s": walls,
          "op_seconds_per_step": total / 1e9 / repeats,
          "model": {k: getattr(config, k) for k in (
              "vocab_size", "hidden_size", "num_layers", "num_heads",
              "num_kv_heads", "intermediate_size")},
          "rows_by_source": rows_out}


# ----------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------


def summarise(rows, keys) -> list[tuple[tuple, float]]:
  out: dict[tuple, float] = collections.defaultdict(float)
  for r in rows:
    out[tuple(r[k] for k in keys)] += r["ns"]
  return sorted(out.items(), key=lambda kv: -kv[1])


def render(res: dict[str, Any]) -> str:
  rows = res["rows_by_source"]
  total = sum(r["ns"] for r in rows) or 1.0
  per = res["repeats"]
  lines = [
      "# Where the update's time goes", "",
      f"Generated by `scripts/profile_update.py` (`{res['command']}`); "
      f"{_bench.machine_line(res['machine'])}.", "",
      f"Preset `{res['preset']}` ({res['model']}), {res['rows']} rows x "
      f"({res['prompt_len']} prompt + {res['response_len']} response) "
      f"tokens, float32; GRPO, PPO clip, token mean, AdamW; the trainer's "
      f"`SplitUpdate`. {per} profiled steps: wall "
      f"{_bench.fmt(_bench.median(res['wall_s']))} s per step (median), "
      f"op time {_bench.fmt(res['op_seconds_per_step'])} s per step summed "
      "over threads (an op that runs on two threads counts twice).", ""]

  def table(title, keys):
    lines.extend([f"## {title}", "",
                  "| " + " | ".join(keys) + " | s per step | share |",
                  "|" + "---|" * (len(keys) + 2)])
    for k, ns in summarise(rows, keys)[:25]:
      lines.append("| " + " | ".join(k) + f" | {ns / 1e9 / per:.4g} | "
                   f"{100 * ns / total:.1f}% |")
    lines.append("")

  table("By program and pass", ("program", "pass"))
  table("By program, pass and kind", ("program", "pass", "kind"))
  table("By model part (top 25)", ("program", "pass", "kind", "source"))
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", default="small25m")
  parser.add_argument("--rows", type=int, default=64)
  parser.add_argument("--group", type=int, default=8)
  parser.add_argument("--prompt-len", type=int, default=32)
  parser.add_argument("--response-len", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(
      ROOT, "results", "profile_update.json"))
  args = parser.parse_args(argv)
  t0 = time.perf_counter()
  res = profile(args.preset, args.rows, args.group, args.prompt_len,
                args.response_len, args.repeats)
  res["command"] = "python -m scripts.profile_update " + " ".join(
      sys.argv[1:] if argv is None else argv)
  res["machine"] = _bench.machine(("divrl", "jax", "jaxlib", "flax",
                                   "optax"))
  res["seconds"] = time.perf_counter() - t0
  md = os.path.splitext(args.out)[0] + ".md"
  _bench.write(res, args.out, md, render)
  print(render(res))


if __name__ == "__main__":
  main()
