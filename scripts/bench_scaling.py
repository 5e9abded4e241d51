"""Benchmark: how the RL step's cost grows, here and on simulated meshes.

NOT a test; not run in CI (``tests/scripts/test_bench_scaling.py`` runs it
on tiny shapes). Two parts, either or both per call:

``--local``: one GRPO step on this machine, built from divrl's public pieces
exactly as ``scripts.peers.divrl_worker.GrpoStep`` builds it
(``make_sampler`` -> host reward -> ``step.SplitPrepare`` -> ``SplitUpdate``
with ``optax.adam``, the ``step.on_policy_plan`` plan, one update per
batch). The model is ``scripts.peers.protocol.MODEL`` (Qwen2's
architecture: GQA with q/k/v bias, RoPE theta 1e6, tied embeddings; the
width of the ``small25m`` preset, which has no q/k/v bias), 4 prompts of 32
tokens, float32. The group size G goes over 2..64 at a generation length of
64 tokens, and the generation length N over 16..512 at G = 8. Per point
the step is built and run once (compiles, untimed), then ``--repeats``
times; each phase's median is reported:

* ``sample``: the sampler plus the host reward (``protocol.reward``);
* ``score``: the prepare step (the reference model's forward, GRPO
  advantages; the behaviour forward is dropped by the on-policy plan);
* ``update``: one optimizer step (forward, backward, Adam).

The growth exponent of each phase is the least-squares slope of log time
against log G (and log N). A log-log plot goes to ``results/scaling.png``.

``--meshes``: the training update and the sampler, each lowered and
compiled -- never run -- for simulated meshes of CPU devices (8, 64 and 256
by default). Every mesh size runs in a subprocess of its own with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX is
imported. All inputs are abstract (``nnx.eval_shape`` for the model,
``jax.ShapeDtypeStruct`` with ``NamedSharding``s for everything else): no
weights are allocated. Programs:

* ``update``: ``step.make_update`` jitted with ``in_shardings`` /
  ``out_shardings`` (GRPO + PPO clip + k3 KL as ``divrl_worker.GrpoStep``,
  the on-policy plan, ``optax.adam`` with float32 state, one micro-batch,
  parameters and Adam state sharded per their annotations and donated, the
  prepared batch and the row indices split over ``('data','fsdp')``);
  Traced under ``jax.set_mesh`` with ``make_update(micro_sharding=P(None,
  ('data','fsdp')))``, as the trainer runs its update;
* ``update_remat``: the same with ``DecoderConfig(remat=True)`` (each
  block's activations recomputed in the backward);
* ``update_trainer_rows``: the update with the row indices replicated, as
  ``Trainer.train_step`` passes them (first batch size only): the micro-batch
  sharding keeps each device on its rows;
* ``sampler``: ``make_sampler(..., mesh=, batch_axes=('data','fsdp'))``'s
  jitted function (replicated prompts, no stop token, temperature 1,
  ``decode_matmul="dot"``: the accelerator kernels, not the CPU-only
  multiply-reductions).

Per program the subprocess records XLA's ``cost_analysis()`` (FLOPs, bytes
accessed), ``memory_analysis()`` (argument, output, alias, temp bytes;
``peak`` = argument + output + temp - alias), the lowering and compile
times and the collectives and matmul FLOPs parsed from
``compiled.as_text()`` (``hlo_summary``), and sets each against an analytic
expectation (``expected_update``, ``expected_sampler``). Layouts
(``layout_sizes``):

* ``dp``: ``data=N``;
* ``fsdp``: ``fsdp=N`` (the largest divisor of N that divides every
  dimension the parameters split over ``fsdp``, e.g. 128 for the 896-wide
  0.5B model on 256 devices; the rest goes to ``data``);
* ``tp``: ``tensor=t``, ``data=N/t``, with ``t`` the largest divisor of
  ``num_kv_heads`` that also divides ``num_heads`` and every other dimension
  split over ``tensor`` (2 for both Qwen2.5 presets): every device keeps
  whole k/v heads;
* ``single``: one device, the same global batch (the measured reference
  for the per-device FLOPs ratio), compiled at the first batch size only.

The global batch is ``b * N`` rows for ``b`` in ``--batches`` (1, 2, 4:
rows per data-parallel device under dp and fsdp; the same global batch
under tp), each row a ``--prompt-len`` prompt and a ``--gen-len`` response
(512 + 512 by default), in groups of ``--group`` (8) samples per prompt.
The peak bytes are fitted linearly in ``b`` (least squares over the compiled
sizes); the largest ``b`` whose fitted peak stays within 16 GiB and 80 GiB
is reported (an extrapolation, linear in ``b``).

What ``hlo_summary`` counts (per device: the compiled SPMD program is one
device's program):

* matmul FLOPs: ``2 * prod(result dims) * prod(contracting dims)`` of every
  ``dot``, each computation weighted by how often it runs: a ``while`` body
  by its ``known_trip_count`` (XLA's ``cost_analysis`` counts every loop body
  once). The sampler's decode loops stop early on stop tokens, so XLA knows
  no trip count; with no stop token they run the sampler's static segments
  (``sampler._decode_segments``), which are used when the number of
  unknown loops matches (``loops_with_hinted_trips``); other unknown loops
  count once (``loops_counted_once``).
* collectives: ``all-reduce``, ``all-gather``, ``reduce-scatter``,
  ``all-to-all``, ``collective-permute`` (and their ``-start`` halves; the
  ``-done`` halves are skipped), weighted like the matmuls. ``bytes``: the
  full buffer each acts on -- the reduced operand (all-reduce), the gathered
  result (all-gather), the operand before scattering (reduce-scatter), the
  operand (all-to-all, collective-permute). ``wire_bytes``: what one device
  sends under ring algorithms over a group of ``n`` devices:
  ``2(n-1)/n * bytes`` (all-reduce), ``(n-1)/n * bytes`` (all-gather,
  reduce-scatter, all-to-all), ``bytes`` (collective-permute).

The subprocesses compile with ``--xla_backend_optimization_level=0`` (LLVM
-O0) unless ``--llvm-o2``: the programs are never run, and the HLO passes
that decide the FLOPs, the buffers and the collectives do not depend on it
(the test checks that both give the same analyses). They also turn off
XLA:CPU's concurrency-optimised scheduler unless
``--concurrency-scheduler`` (see ``worker_env``): the memory-minimising
schedule is the closer stand-in for an accelerator's peak memory.

Usage (from the repo root)::

  .venv/bin/python -m scripts.bench_scaling --local
  .venv/bin/python -m scripts.bench_scaling --meshes [--devices 8,64]
  .venv/bin/python -m scripts.bench_scaling --local --meshes --quick

writes ``results/scaling.json`` and ``results/scaling.md`` (a part not run
keeps its results from an existing JSON file). ``--quick`` runs tiny shapes
(the tiny preset, 8 devices) in a minute. ``--render-only`` rewrites the
Markdown page from the JSON file.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from scripts import _bench  # noqa: E402

_log = _bench.log

GIB = 2 ** 30
ACCELERATORS_GIB = (16, 80)
LOCAL_GROUPS = (2, 4, 8, 16, 32, 64)
LOCAL_LENGTHS = (16, 32, 64, 128, 256, 512)
LOCAL_FIXED = {"group": 8, "gen_len": 64}
PHASES = ("sample", "score", "update")
LAYOUTS = ("dp", "fsdp", "tp")
MESH_PRESETS = ("qwen2.5-0.5b", "qwen2.5-1.5b")
DEFAULT_DEVICES = (8, 64, 256)
PACKAGES = ("divrl", "jax", "jaxlib", "flax", "optax", "numpy", "matplotlib")

# --quick: every shape tiny.
QUICK_LOCAL_MODEL = {
    "vocab_size": 256, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
    "num_kv_heads": 2, "head_dim": 16, "intermediate_size": 128,
}
QUICK_LOCAL = {"groups": (2, 4), "lengths": (4, 8),
               "fixed": {"group": 2, "gen_len": 8}, "prompts": 2,
               "prompt_len": 8, "repeats": 2}
QUICK_MESHES = {"devices": (8,), "presets": ("tiny",), "batches": (1, 2),
                "prompt_len": 16, "gen_len": 16, "group": 4}


# ============================================================================
# HLO text: matmul FLOPs and collectives, loops weighted by trip count.
# (Standard library only.)
# ============================================================================

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2,
                "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
                "f64": 8, "c64": 8, "c128": 16}
_SHAPE = re.compile(r"\b(pred|bf16|f8e\w+|[sufc]\d+)\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([^\s(]+)\s*\(")
_NAME = re.compile(r"\s*(?:ROOT\s+)?%?([^\s=]+)\s*=\s*")
_OPCODE = re.compile(r"\s*([\w\-]+)\(")
_COMMENT = re.compile(r"/\*.*?\*/")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")


def shapes(text: str) -> list[tuple[str, tuple[int, ...]]]:
  """Every ``dtype[dims]`` array shape in ``text``, in order."""
  return [(m.group(1), tuple(int(d) for d in m.group(2).split(",") if d))
          for m in _SHAPE.finditer(text)]


def _nbytes(dtype: str, dims: Sequence[int]) -> int:
  size = _DTYPE_BYTES.get(dtype, 1)   # f8 types: 1 byte
  return int(math.prod(dims)) * size


def shape_bytes(text: str) -> int:
  """Total bytes of the array shapes in ``text`` (a tuple sums them)."""
  return sum(_nbytes(t, d) for t, d in shapes(text))


def _close(text: str, start: int) -> int:
  """Index of the parenthesis closing the one at ``text[start]``."""
  depth = 0
  for i in range(start, len(text)):
    if text[i] == "(":
      depth += 1
    elif text[i] == ")":
      depth -= 1
      if depth == 0:
        return i
  raise ValueError(f"unbalanced parentheses: {text[start:start + 80]!r}")


def parse_instruction(line: str) -> dict[str, str] | None:
  """``{name, type, op, operands, attrs}`` of one HLO instruction line."""
  line = _COMMENT.sub("", line)
  m = _NAME.match(line)
  if not m or "(" not in line:
    return None
  rest = line[m.end():]
  if rest.startswith("("):
    j = _close(rest, 0)
    type_, rest = rest[:j + 1], rest[j + 1:]
  else:
    parts = rest.split(None, 1)
    if len(parts) < 2:
      return None
    type_, rest = parts[0], " " + parts[1]
  op = _OPCODE.match(rest)
  if not op:
    return None
  k = _close(rest, op.end() - 1)
  return {"name": m.group(1), "type": type_, "op": op.group(1),
          "operands": rest[op.end():k], "attrs": rest[k + 1:]}


def parse_module(text: str) -> tuple[dict[str, list[dict]], list[str], str]:
  """``(computations, names in text order, entry name)`` of an HLO module.

  Every instruction gets ``operand_types``: the types of its operands, read
  inline when printed, else from the instruction that defines them.
  """
  comps: dict[str, list[dict]] = {}
  order: list[str] = []
  types: dict[str, str] = {}
  entry, current = None, None
  for line in text.splitlines():
    if not line.strip():
      continue
    if not line[0].isspace():
      if line.startswith("}"):
        current = None
        continue
      m = _HEADER.match(line)
      if m and line.rstrip().endswith("{"):
        current = m.group(2)
        comps[current] = []
        order.append(current)
        if m.group(1):
          entry = current
      continue
    if current is not None:
      ins = parse_instruction(line)
      if ins is not None:
        comps[current].append(ins)
        types[ins["name"]] = ins["type"]
  if entry is None:
    raise ValueError("no ENTRY computation in the HLO text")
  for instructions in comps.values():
    for ins in instructions:
      ins["operand_types"] = [
          item if _SHAPE.search(item) else types.get(
              item.strip().split()[-1].lstrip("%") if item.strip() else "",
              "")
          for item in _split_top(ins["operands"])]
  return comps, order, entry


def _split_top(text: str) -> list[str]:
  """``text`` split at the commas outside brackets."""
  items, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    if ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      items.append(text[start:i])
      start = i + 1
  if text[start:].strip():
    items.append(text[start:])
  return items


_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_CALLEES = re.compile(
    r"\b(calls|to_apply|body|condition|branch_computations|"
    r"true_computation|false_computation|called_computations)="
    r"(\{[^}]*\}|%?[\w.\-]+)")


def multipliers(comps: Mapping[str, list[dict]], order: Sequence[str],
                entry: str, trip_hints: Sequence[int] | None = None
                ) -> tuple[dict[str, float], dict[str, int]]:
  """How many times each computation runs per call of ``entry``.

  A ``while`` body runs ``known_trip_count`` times its caller; loops without
  one take ``trip_hints`` in program order when their number matches
  (else once). Reduction bodies (``to_apply`` of reduce, sort, scatter,
  all-reduce, ...) are scalar code and are not followed.
  """
  # Text order is post-order (callees first), so reversed it puts every
  # caller before its callees.
  unknown = [ins["name"] for c in reversed(order)
             for ins in comps[c] if ins["op"] == "while"
             and not _TRIP.search(ins["attrs"])]
  hints = {}
  if trip_hints is not None and len(trip_hints) == len(unknown):
    hints = dict(zip(unknown, trip_hints))
  mult: dict[str, float] = collections.defaultdict(float)
  mult[entry] = 1.0
  for c in reversed(order):
    m = mult.get(c, 0.0)
    if not m:
      continue
    for ins in comps[c]:
      for kind, targets in _CALLEES.findall(ins["attrs"]):
        names = re.findall(r"%?([\w.\-]+)", targets.strip("{}"))
        if kind == "to_apply" and ins["op"] != "call":
          continue
        if kind == "condition":
          continue
        factor = 1.0
        if kind == "body":
          trip = _TRIP.search(ins["attrs"])
          factor = float(trip.group(1)) if trip else float(
              hints.get(ins["name"], 1))
        for name in names:
          if name in comps:
            mult[name] += m * factor
  info = {"loops": sum(ins["op"] == "while" for c in comps
                       for ins in comps[c]),
          "loops_with_hinted_trips": len(hints),
          "loops_counted_once": len(unknown) - len(hints)}
  return dict(mult), info


def group_size(attrs: str, num_devices: int) -> int:
  """Devices per replica group of a collective (``replica_groups``)."""
  m = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}", attrs)
  if m:                          # mesh form: mesh['a'=2,'b'=4] {'b'}
    sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'=(\d+)",
                                               m.group(1))}
    size = 1
    for axis in re.findall(r"'([^']+)'(?::\((\d+)\)(\d+))?", m.group(2)):
      name, _, sub = axis
      size *= int(sub) if sub else sizes.get(name, 1)
    return size
  m = re.search(r"replica_groups=\[([\d,]+)\]<=", attrs)
  if m:                          # iota form: [groups, size]<=[...]
    return int(m.group(1).split(",")[-1])
  m = re.search(r"replica_groups=\{(\{[^}]*\})", attrs)
  if m:
    return len([x for x in m.group(1).strip("{}").split(",") if x.strip()])
  return num_devices             # {} : all devices


def _collective(ins: dict, num_devices: int) -> tuple[str, float, float
                                                      ] | None:
  op = ins["op"]
  if op.endswith("-done"):
    return None
  kind = op[:-len("-start")] if op.endswith("-start") else op
  if kind not in COLLECTIVES:
    return None
  operand = sum(shape_bytes(t) for t in ins["operand_types"])
  if kind == "collective-permute":
    return kind, operand, operand
  n = group_size(ins["attrs"], num_devices)
  if kind == "all-reduce":
    return kind, operand, 2.0 * (n - 1) / n * operand
  full = operand * n if kind == "all-gather" else operand
  return kind, full, (n - 1) / n * full


def _dot_flops(ins: dict) -> float:
  result = shapes(ins["type"])
  operand = shapes(ins["operand_types"][0]) if ins["operand_types"] else []
  if not result or not operand:
    return 0.0
  m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins["attrs"])
  dims = [int(d) for d in m.group(1).split(",") if d] if m else []
  lhs = operand[0][1]
  return 2.0 * math.prod(result[0][1]) * math.prod(lhs[d] for d in dims)


def hlo_summary(text: str, num_devices: int,
                trip_hints: Sequence[int] | None = None, top: int = 6
                ) -> dict[str, Any]:
  """Matmul FLOPs and collectives of one device's compiled program (see the
  module docstring for what is counted); ``largest_collectives``: the
  ``top`` collective instructions by wire bytes, with the JAX operation
  they come from (``op_name`` metadata)."""
  comps, order, entry = parse_module(text)
  mult, info = multipliers(comps, order, entry, trip_hints)
  flops = 0.0
  kinds = {k: {"count": 0.0, "bytes": 0.0, "wire_bytes": 0.0}
           for k in COLLECTIVES}
  biggest = []
  for c, instructions in comps.items():
    m = mult.get(c, 0.0)
    if not m:
      continue
    for ins in instructions:
      if ins["op"] == "dot":
        flops += m * _dot_flops(ins)
        continue
      coll = _collective(ins, num_devices)
      if coll:
        kind, nbytes, wire = coll
        kinds[kind]["count"] += m
        kinds[kind]["bytes"] += m * nbytes
        kinds[kind]["wire_bytes"] += m * wire
        source = _OP_NAME.search(ins["attrs"])
        biggest.append({"kind": kind, "type": ins["type"][:120],
                        "runs": m, "wire_bytes": m * wire,
                        "op_name": source.group(1)[-160:] if source
                        else ""})
  biggest.sort(key=lambda x: -x["wire_bytes"])
  return {"dot_flops": flops, "collectives": kinds,
          "collective_bytes": sum(k["bytes"] for k in kinds.values()),
          "wire_bytes": sum(k["wire_bytes"] for k in kinds.values()),
          "largest_collectives": biggest[:top], **info}


# ============================================================================
# Analytic expectations.
# ============================================================================


def _cfg_numbers(cfg: Mapping[str, Any]) -> dict[str, float]:
  d, v, hd = cfg["hidden_size"], cfg["vocab_size"], cfg["head_dim"]
  q, kv = cfg["num_heads"] * hd, cfg["num_kv_heads"] * hd
  attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if cfg["qkv_bias"] else 0)
  block = attn + 3 * d * cfg["intermediate_size"] + 2 * d
  embed = v * d * (1 if cfg["tie_word_embeddings"] else 2)
  return {"params": embed + cfg["num_layers"] * block + d,
          "non_embedding": cfg["num_layers"] * block + d,
          "d": d, "v": v, "kv": kv,
          "attn_width": cfg["num_layers"] * cfg["num_heads"] * hd}


def update_flops(cfg: Mapping[str, Any], rows: int, prompt_len: int,
                 gen_len: int) -> dict[str, float]:
  """Matmul FLOPs of the update's forward + backward, as implemented:
  ``3 * (2 N_ne P + 4 L H d_h S P) + 4 * 2 d V R`` (``P = rows * S``
  positions, dense ``S x S`` attention, the unembedding on the ``R = rows *
  T`` response positions only, its backward recomputing the logits:
  ``divrl.ops.token_statistics``)."""
  n = _cfg_numbers(cfg)
  s = prompt_len + gen_len
  positions = rows * s
  dense = 2.0 * n["non_embedding"] * positions
  attention = 4.0 * n["attn_width"] * s * positions
  head = 2.0 * n["d"] * n["v"] * rows * gen_len
  return {"dense": 3 * dense, "attention": 3 * attention,
          "unembedding": 4 * head,
          "total": 3 * (dense + attention) + 4 * head}


def sampler_flops(cfg: Mapping[str, Any], prompts: int, rows: int,
                  prompt_len: int, gen_len: int) -> dict[str, float]:
  """Matmul FLOPs of sampling: the prefill of ``prompts`` prompts (dense
  ``S x S`` attention, the last position unembedded), then ``gen_len - 1``
  decode steps of ``rows`` rows, each attending to the cache up to its
  position."""
  n = _cfg_numbers(cfg)
  s, t = prompt_len, gen_len
  prefill = (2.0 * n["non_embedding"] * prompts * s
             + 4.0 * n["attn_width"] * prompts * s * s
             + 2.0 * n["d"] * n["v"] * prompts)
  keys = sum(s + i for i in range(1, t))
  decode = ((t - 1) * rows * 2.0 * (n["non_embedding"] + n["d"] * n["v"])
            + 4.0 * n["attn_width"] * rows * keys)
  return {"prefill": prefill, "decode": decode, "total": prefill + decode}


def _ring_all_reduce(nbytes: float, n: int) -> float:
  return 2.0 * (n - 1) / n * nbytes if n > 1 else 0.0


def _ring_gather(nbytes: float, n: int) -> float:
  return (n - 1) / n * nbytes if n > 1 else 0.0


def expected_update(cfg: Mapping[str, Any], sizes: Mapping[str, int],
                    rows: int, prompt_len: int, gen_len: int,
                    param_bytes: int = 4) -> dict[str, Any]:
  """Per-device expectations of the update on a ``sizes`` mesh.

  FLOPs: model FLOPs / devices. State: parameters, gradients and the two
  Adam moments, ``4 * P * param_bytes`` over the ``fsdp * tensor`` shards.
  Wire bytes per device (ring): data-parallel gradient all-reduce
  ``2(D-1)/D`` of the local gradient shard; fsdp: all-gather of the
  parameters in the forward and again in the backward plus a
  reduce-scatter of the gradients, ``3 (F-1)/F * param bytes``; tensor:
  4 activation all-reduces per layer (Megatron: after o_proj and down_proj
  forward, before q/k/v and gate/up backward) plus the vocabulary-split
  embedding (forward) and unembedding (backward) of ``[rows/D, S, d]``
  float32 activations.
  """
  c = _cfg_numbers(cfg)
  devices = sizes["data"] * sizes["fsdp"] * sizes["tensor"]
  d_, f, t = sizes["data"], sizes["fsdp"], sizes["tensor"]
  pbytes = c["params"] * param_bytes
  shard = pbytes / (f * t)
  wire = {"data_grad_all_reduce": _ring_all_reduce(shard, d_),
          "fsdp_param_all_gather": 2 * _ring_gather(pbytes / t, f),
          "fsdp_grad_reduce_scatter": _ring_gather(pbytes / t, f)}
  local_rows = rows / (d_ * f)
  act = local_rows * (prompt_len + gen_len) * c["d"] * 4
  wire["tensor_activation_all_reduce"] = (
      (4 * cfg["num_layers"] + 2) * _ring_all_reduce(act, t))
  flops = update_flops(cfg, rows, prompt_len, gen_len)
  return {"flops": flops["total"] / devices,
          "state_bytes": 4 * shard, "argument_state_bytes": 3 * shard,
          "wire_bytes": sum(wire.values()), "wire": wire}


def expected_sampler(cfg: Mapping[str, Any], sizes: Mapping[str, int],
                     prompts: int, rows: int, prompt_len: int, gen_len: int,
                     param_bytes: int = 4) -> dict[str, Any]:
  """Per-device expectations of the sampler on a ``sizes`` mesh.

  FLOPs: model FLOPs / devices (the prompts of the prefill split like the
  decode rows; fewer prompts than batch shards cannot be). Bytes: the
  parameters over the ``fsdp * tensor`` shards plus the float32 KV cache
  of the device's rows. Wire bytes: fsdp gathers the parameters once
  (``(F-1)/F``); tensor all-reduces two ``[rows, d]`` activations per layer
  and step (and ``[prompts, S, d]`` ones in the prefill, for the data
  shard's prompts, at least one).
  """
  c = _cfg_numbers(cfg)
  d_, f, t = sizes["data"], sizes["fsdp"], sizes["tensor"]
  devices = d_ * f * t
  flops = sampler_flops(cfg, prompts, rows, prompt_len, gen_len)
  local_rows = rows / (d_ * f)
  cache = (local_rows * cfg["num_layers"] * 2 * c["kv"] / t
           * (prompt_len + gen_len - 1) * 4)
  pbytes = c["params"] * param_bytes
  wire = {"fsdp_param_all_gather": _ring_gather(pbytes / t, f)}
  per_step = 2 * cfg["num_layers"] * _ring_all_reduce(local_rows * c["d"] * 4,
                                                      t)
  # Each data shard prefills its own prompts, at least one whole prompt.
  local_prompts = max(prompts / (d_ * f), 1.0)
  prefill = 2 * cfg["num_layers"] * _ring_all_reduce(
      local_prompts * prompt_len * c["d"] * 4, t)
  wire["tensor_activation_all_reduce"] = prefill + (gen_len - 1) * per_step
  return {"flops": flops["total"] / devices,
          "state_bytes": pbytes / (f * t) + cache,
          "wire_bytes": sum(wire.values()), "wire": wire}


# ============================================================================
# --meshes: the subprocess that compiles (one mesh size, one preset).
# ============================================================================


def _divisor_at_most(n: int, ok) -> int:
  return max(k for k in range(1, n + 1) if n % k == 0 and ok(k))


def _split_dims(state, axis: str) -> list[int]:
  """Sizes of every parameter dimension annotated with mesh axis ``axis``."""
  import jax
  from flax import nnx
  from jax.sharding import PartitionSpec as P
  specs = nnx.get_partition_spec(state)
  dims = []
  for x, spec in zip(jax.tree.leaves(state), jax.tree.leaves(
      specs, is_leaf=lambda s: isinstance(s, P) or s is None)):
    for size, name in zip(x.shape, tuple(spec or ())):
      if name == axis:
        dims.append(size)
  return dims


def layout_sizes(layout: str, n: int, cfg, state) -> dict[str, int]:
  """Mesh sizes ``{data, fsdp, tensor}`` of ``layout`` on ``n`` devices."""
  if layout == "single":
    return {"data": 1, "fsdp": 1, "tensor": 1}
  if layout == "dp":
    return {"data": n, "fsdp": 1, "tensor": 1}
  if layout == "fsdp":
    dims = _split_dims(state, "fsdp")
    f = _divisor_at_most(n, lambda k: all(x % k == 0 for x in dims))
    return {"data": n // f, "fsdp": f, "tensor": 1}
  if layout == "tp":
    dims = _split_dims(state, "tensor")
    t = _divisor_at_most(n, lambda k: cfg.num_kv_heads % k == 0
                         and cfg.num_heads % k == 0
                         and all(x % k == 0 for x in dims))
    return {"data": n // t, "fsdp": 1, "tensor": t}
  raise ValueError(f"unknown layout {layout!r}")


def _memory(compiled) -> dict[str, int]:
  """``memory_analysis()`` in bytes; ``peak`` = arguments + outputs + temp
  - aliased (donated) outputs (XLA:CPU's own ``peak_memory_in_bytes``,
  kept as ``xla_peak``, does not include the temporaries)."""
  m = compiled.memory_analysis()
  out = {"argument": int(m.argument_size_in_bytes),
         "output": int(m.output_size_in_bytes),
         "alias": int(m.alias_size_in_bytes),
         "temp": int(m.temp_size_in_bytes),
         "xla_peak": int(getattr(m, "peak_memory_in_bytes", 0) or 0)}
  out["peak"] = (out["argument"] + out["output"] + out["temp"]
                 - out["alias"])
  return out


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return {"flops": float(cost.get("flops", float("nan"))),
          "bytes_accessed": float(cost.get("bytes accessed",
                                           float("nan")))}


def _compile(fn_jit, args, num_devices: int, trip_hints=None
             ) -> dict[str, Any]:
  t0 = time.perf_counter()
  lowered = fn_jit.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  text = compiled.as_text()
  return {"lower_s": t1 - t0, "compile_s": t2 - t1,
          "cost": _cost(compiled), "memory": _memory(compiled),
          "hlo": hlo_summary(text, num_devices, trip_hints),
          "hlo_chars": len(text)}


class MeshCase:
  """The abstract model, objective and plan of one preset (built once per
  subprocess); ``update`` and ``sampler`` compile one program each."""

  def __init__(self, preset: str, prompt_len: int, gen_len: int, group: int):
    import jax
    import optax
    from flax import nnx

    from divrl.models import Decoder, DecoderConfig
    from divrl.rl import step as step_lib
    from scripts.peers import divrl_worker, protocol

    self.preset, self.group = preset, group
    self.prompt_len, self.gen_len = prompt_len, gen_len
    self.config = DecoderConfig.preset(
        preset, max_position_embeddings=max(
            prompt_len + gen_len, DecoderConfig.preset(
                preset).max_position_embeddings))
    abstract = nnx.eval_shape(lambda: Decoder(self.config,
                                              rngs=nnx.Rngs(0)))
    self.graphdef, self.state = nnx.split(abstract)
    self.tx = optax.adam(1e-6)
    self.objective = divrl_worker.grpo_objective(protocol.GRPO)
    self.plan = step_lib.Plan.of(self.objective, temperature=1.0)
    self.carry = self.objective.init_carry()
    self.key = jax.eval_shape(lambda: jax.random.key(0))

  def cfg_dict(self) -> dict[str, Any]:
    c = self.config
    return {k: getattr(c, k) for k in (
        "vocab_size", "hidden_size", "num_layers", "num_heads",
        "num_kv_heads", "head_dim", "intermediate_size", "qkv_bias",
        "tie_word_embeddings")}

  # -- abstract inputs --------------------------------------------------

  def _params(self, mesh):
    import jax
    from divrl.rl import mesh as mesh_lib
    shardings = mesh_lib.param_shardings(self.state, mesh)
    params = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        self.state, shardings)
    return params, shardings

  def _rollout(self, rows: int):
    import jax
    import jax.numpy as jnp
    from divrl.rl import step as step_lib
    sds = jax.ShapeDtypeStruct
    s, t = self.prompt_len, self.gen_len
    return step_lib.Rollout(
        prompt_tokens=sds((rows, s), jnp.int32),
        prompt_mask=sds((rows, s), jnp.bool_),
        tokens=sds((rows, t), jnp.int32),
        response_mask=sds((rows, t), jnp.bool_),
        rollout_logprobs=sds((rows, t), jnp.float32),
        truncated=sds((rows,), jnp.bool_), rewards=sds((rows,), jnp.float32),
        group_ids=sds((rows,), jnp.int32),
        sample_source=sds((rows,), jnp.int32),
        solution_ids=sds((rows,), jnp.int32),
        num_groups=rows // self.group)

  def update(self, mesh, rows: int, num_devices: int,
             row_ids: str = "batch", remat: bool = False) -> dict[str, Any]:
    """Compiles ``make_update`` for one minibatch of all ``rows`` rows:
    parameters and Adam state sharded per their annotations and donated,
    the prepared batch split over ``('data','fsdp')``. The row indices are
    split like the batch (``row_ids="batch"``) or replicated
    (``"replicated"``, as ``Trainer.train_step`` passes them). ``remat``:
    the model with ``DecoderConfig(remat=True)`` (each block recomputed in
    the backward)."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from flax import nnx

    from divrl.models import Decoder
    from divrl.rl import mesh as mesh_lib
    from divrl.rl import step as step_lib

    params, p_sh = self._params(mesh)
    rep = mesh_lib.replicated(mesh)
    rollout = self._rollout(rows)
    plan = step_lib.on_policy_plan(self.plan, self.objective, rollout,
                                   self.carry)
    # As the trainer: each batch-axis device scores its own rows.
    plan = dataclasses.replace(
        plan, row_shards=mesh_lib.batch_size_multiple(mesh))
    prepare = step_lib.make_prepare(self.graphdef, self.objective, plan)
    ref = params if plan.reference else None
    prepared, carry, _ = jax.eval_shape(prepare, params, ref, self.carry,
                                        rollout, self.key)

    def batch_sharding(x):
      if x.ndim and x.shape[0] == rows:
        return NamedSharding(mesh, P(mesh_lib.BATCH_AXES,
                                     *([None] * (x.ndim - 1))))
      return rep
    prep_sh = jax.tree.map(batch_sharding, prepared)
    prepared = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        prepared, prep_sh)
    opt = jax.eval_shape(self.tx.init, params)
    opt_sh = optax.tree_map_params(self.tx, lambda _, s: s, opt, p_sh,
                                   transform_non_params=lambda _: rep)
    opt = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        opt, opt_sh)
    carry_sh = jax.tree.map(lambda _: rep, carry)
    ids_sh = rep if row_ids == "replicated" else batch_sharding(
        jax.ShapeDtypeStruct((rows,), jnp.int32))
    row_ids = jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=ids_sh)
    # As the trainer's SplitUpdate: the selected rows stay on their devices.
    graphdef = self.graphdef if not remat else nnx.split(nnx.eval_shape(
        lambda: Decoder(dataclasses.replace(self.config, remat=True),
                        rngs=nnx.Rngs(0))))[0]
    update = step_lib.make_update(
        graphdef, self.tx, self.objective, plan,
        micro_sharding=NamedSharding(mesh, P(None, mesh_lib.BATCH_AXES)))
    # ref_params: read by no update-stage part of this plan (None).
    fn = jax.jit(update,
                 in_shardings=(p_sh, opt_sh, None, carry_sh, prep_sh, ids_sh,
                               rep),
                 out_shardings=(p_sh, opt_sh, rep), donate_argnums=(0, 1))
    out = _compile(fn, (params, opt, None, carry, prepared, row_ids,
                        self.key), num_devices)
    out["plan"] = str(plan)
    return out

  def sampler(self, mesh, rows: int, num_devices: int) -> dict[str, Any]:
    """Compiles ``make_sampler`` on ``mesh`` (decode rows over
    ``('data','fsdp')``, replicated prompts, no stop token, temperature 1,
    ``decode_matmul="dot"``: the accelerator kernels, not the CPU-only
    multiply-reductions)."""
    import jax
    import jax.numpy as jnp

    from divrl.models import SamplingConfig, make_sampler
    from divrl.models import sampler as sampler_lib
    from divrl.rl import mesh as mesh_lib

    params, _ = self._params(mesh)
    rep = mesh_lib.replicated(mesh)
    prompts = rows // self.group
    config = SamplingConfig(max_new_tokens=self.gen_len,
                            num_samples=self.group, temperature=1.0,
                            decode_matmul="dot")
    sampler = make_sampler(self.graphdef, config, mesh=mesh,
                           batch_axes=mesh_lib.BATCH_AXES)
    sds = jax.ShapeDtypeStruct
    args = (params, sds((prompts, self.prompt_len), jnp.int32, sharding=rep),
            sds((prompts, self.prompt_len), jnp.bool_, sharding=rep),
            sds((prompts, 2), jnp.uint32, sharding=rep))
    # The decode loops' trip counts without stop tokens (XLA cannot know
    # them): the sampler's static segments.
    segments = sampler_lib._decode_segments(  # pylint: disable=protected-access
        self.prompt_len, self.gen_len)
    trips, start = [], 1
    for t_end, _ in segments:
      trips.append(t_end - start)
      start = t_end
    return _compile(sampler.jitted, args, num_devices, trip_hints=trips)


def mesh_worker(spec: Mapping[str, Any]) -> dict[str, Any]:
  """Compiles every layout and batch size of one (mesh size, preset)."""
  import jax

  from divrl.rl import mesh as mesh_lib

  n = int(spec["devices"])
  if jax.device_count() != n:
    raise RuntimeError(f"expected {n} devices, JAX sees "
                       f"{jax.device_count()} (XLA_FLAGS="
                       f"{os.environ.get('XLA_FLAGS')!r})")
  case = MeshCase(spec["preset"], spec["prompt_len"], spec["gen_len"],
                  spec["group"])
  cfg = case.cfg_dict()
  out = {"devices": n, "preset": spec["preset"], "config": cfg,
         "params": _cfg_numbers(cfg)["params"], "programs": []}
  batches = list(spec["batches"])
  todo = [(layout, b, program) for layout in spec["layouts"]
          for b in batches for program in spec["programs"]]
  if spec.get("single", True):
    todo[:0] = [("single", batches[0], program)
                for program in spec["programs"]]
  if spec.get("trainer_rows", True) and "update" in spec["programs"]:
    todo += [(layout, batches[0], "update_trainer_rows")
             for layout in spec["layouts"]]
  for layout, b, program in todo:
    sizes = layout_sizes(layout, n, case.config, case.state)
    mesh = mesh_lib.make_train_mesh(**sizes)
    used = int(mesh.devices.size)
    rows = b * n
    rec = {"layout": layout, "mesh": sizes, "program": program,
           "per_device_rows": b, "rows": rows, "devices_used": used}
    _log(f"{n} devices {spec['preset']} {program} {layout} {sizes} "
         f"rows {rows}")
    try:
      if program == "sampler":
        rec.update(case.sampler(mesh, rows, used))
      else:
        # As the trainer: traced under the mesh (FSDP gathers weights).
        with jax.set_mesh(mesh):
          rec.update(case.update(mesh, rows, used, (
              "replicated" if program == "update_trainer_rows"
              else "batch"), remat=program == "update_remat"))
    except Exception as e:  # pylint: disable=broad-except
      rec["error"] = f"{type(e).__name__}: {str(e)[:800]}"
      _log(f"  failed: {rec['error'][:200]}")
      out["programs"].append(rec)
      continue
    if program == "sampler":
      rec["expected"] = expected_sampler(cfg, sizes, rows // case.group, rows,
                                         case.prompt_len, case.gen_len)
    else:
      rec["expected"] = expected_update(cfg, sizes, rows, case.prompt_len,
                                        case.gen_len)
    _log(f"  compile {rec['compile_s']:.1f}s, dot GFLOP/device "
         f"{rec['hlo']['dot_flops'] / 1e9:.4g} (expected "
         f"{rec['expected']['flops'] / 1e9:.4g}), peak "
         f"{rec['memory']['peak'] / GIB:.3f} GiB, wire "
         f"{rec['hlo']['wire_bytes'] / 2**20:.4g} MiB (expected "
         f"{rec['expected']['wire_bytes'] / 2**20:.4g})")
    out["programs"].append(rec)
  return out


# ============================================================================
# --meshes: the parent.
# ============================================================================


def worker_env(devices: int, llvm_o2: bool = False,
               concurrency_scheduler: bool = False) -> dict[str, str]:
  """The environment of a subprocess simulating ``devices`` CPU devices.

  XLA:CPU's default scheduler orders a program for concurrency on the
  host's threads and keeps more buffers alive than a memory-minimising
  schedule: the 0.5B update's peak grew 5.5 GiB per row of 1024 tokens
  under it against 4.1 GiB without it, and it ignored rematerialisation
  (the same peak with and without ``DecoderConfig(remat=True)``). The
  memory-minimising schedule is the closer stand-in for an accelerator's,
  so it is the default here (``concurrency_scheduler=True`` restores XLA's).
  """
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith(("--xla_force_host_platform_device_count",
                                "--xla_backend_optimization_level",
                                "--xla_cpu_enable_concurrency_optimized"))]
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  if not concurrency_scheduler:
    flags.append("--xla_cpu_enable_concurrency_optimized_scheduler=false")
  if not llvm_o2:
    flags.append("--xla_backend_optimization_level=0")
  return dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")


def run_mesh_worker(spec: Mapping[str, Any], llvm_o2: bool = False,
                    timeout: float | None = None,
                    concurrency_scheduler: bool = False) -> dict[str, Any]:
  """Runs ``mesh_worker(spec)`` in a fresh process; its stderr passes
  through, its JSON answer comes back on stdout."""
  cmd = [sys.executable, "-m", "scripts.bench_scaling", "--mesh-worker",
         json.dumps(dict(spec))]
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, env=worker_env(
      spec["devices"], llvm_o2, concurrency_scheduler),
                        stdout=subprocess.PIPE, text=True, timeout=timeout)
  if proc.returncode:
    raise RuntimeError(f"mesh worker {spec} exited with {proc.returncode}")
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  out["process_s"] = time.perf_counter() - t0
  return out


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
  """``(intercept, slope)`` of the least-squares line through the points."""
  n = len(xs)
  if n < 2:
    return float(ys[0]) if ys else float("nan"), float("nan")
  mx, my = sum(xs) / n, sum(ys) / n
  sxx = sum((x - mx) ** 2 for x in xs)
  slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
  return my - slope * mx, slope


def row_floor(cfg: Mapping[str, Any], program: str, sizes: Mapping[str, int],
              prompt_len: int, gen_len: int) -> float:
  """Bytes per unit of ``b`` (rows per data-parallel device) that no
  schedule avoids: the sampler's float32 KV cache of a row (its heads split
  over ``tensor``); the update's one float32 ``[S, d]`` residual stream per
  block kept for the backward (what a rematerialised model keeps). Under
  tensor parallelism a unit of ``b`` is ``tensor`` rows per device."""
  c = _cfg_numbers(cfg)
  t = sizes.get("tensor", 1)
  s = prompt_len + gen_len
  if program == "sampler":
    return cfg["num_layers"] * 2 * c["kv"] * (s - 1) * 4.0
  return t * cfg["num_layers"] * s * c["d"] * 4.0


def fits(programs: Sequence[Mapping[str, Any]],
         floors: Mapping[tuple[str, str], float] | None = None
         ) -> list[dict[str, Any]]:
  """Per (layout, program): the peak bytes fitted linearly in the rows per
  device, and the largest rows per device within each accelerator size.

  ``floors``: per (layout, program), the bytes per row no schedule avoids
  (``row_floor``). Where the fitted growth is below it (the peak over the
  compiled sizes is set by something that does not grow with the batch,
  e.g. the optimizer's temporaries), the extrapolation uses the floor
  (``slope_from: "floor"``) rather than a flat line."""
  groups = collections.defaultdict(list)
  for p in programs:
    if "error" not in p and p["layout"] != "single":
      groups[(p["layout"], p["program"])].append(p)
  out = []
  for (layout, program), ps in sorted(groups.items()):
    xs = [p["per_device_rows"] for p in ps]
    if len(set(xs)) < 2:
      continue
    ys = [p["memory"]["peak"] for p in ps]
    a, slope = fit_line(xs, ys)
    floor = (floors or {}).get((layout, program), 0.0)
    used, source = slope, "fit"
    if floor and not slope >= floor:
      # The peak at the largest compiled b, growing by the floor from there.
      a, used, source = max(ys) - floor * max(xs), floor, "floor"
    rec = {"layout": layout, "program": program, "mesh": ps[0]["mesh"],
           "batches": xs, "peak_bytes": ys, "intercept_bytes": a,
           "bytes_per_row": used, "fitted_bytes_per_row": slope,
           "slope_from": source, "max_rows_per_device": {}}
    for gib in ACCELERATORS_GIB:
      cap = gib * GIB
      if not used == used or used <= 0:
        best = None
      else:
        best = int(math.floor((cap - a) / used + 1e-9))
      rec["max_rows_per_device"][str(gib)] = best if best and best > 0 else 0
    out.append(rec)
  return out


def refresh_expected(run: Mapping[str, Any],
                     settings: Mapping[str, Any]) -> None:
  """Recomputes each program's ``expected`` (the analytic formulas) from
  its recorded mesh and batch."""
  s, n, g = settings["prompt_len"], settings["gen_len"], settings["group"]
  for p in run["programs"]:
    if "error" in p:
      continue
    if p["program"] == "sampler":
      p["expected"] = expected_sampler(run["config"], p["mesh"],
                                       p["rows"] // g, p["rows"], s, n)
    else:
      p["expected"] = expected_update(run["config"], p["mesh"], p["rows"],
                                      s, n)


def run_fits(run: Mapping[str, Any], settings: Mapping[str, Any]
             ) -> list[dict[str, Any]]:
  """``fits`` of one (mesh size, preset) run, with its ``row_floor``s."""
  floors = {}
  for p in run["programs"]:
    if "error" not in p:
      program = "sampler" if p["program"] == "sampler" else "update"
      floors[(p["layout"], p["program"])] = row_floor(
          run["config"], program, p["mesh"], settings["prompt_len"],
          settings["gen_len"])
  return fits(run["programs"], floors)


def _pick(args, name: str, quick: Mapping[str, Any], full: Any) -> Any:
  """An explicit flag, else the ``--quick`` value, else the full one."""
  value = getattr(args, name, None)
  if value is not None:
    return value
  return quick[name] if getattr(args, "quick", False) else full


def resumable_runs(previous: Mapping[str, Any] | None,
                   settings: Mapping[str, Any]) -> dict[tuple[int, str], Any]:
  """Finished workers of an interrupted ``--meshes`` run, by (devices,
  preset), when the run used exactly ``settings``; else nothing."""
  if not previous or previous.get("settings") != json.loads(
      json.dumps(settings)):
    return {}
  return {(r["devices"], r["preset"]): r for r in previous.get("runs", [])
          if "error" not in r}


def run_meshes(args) -> dict[str, Any]:
  q = QUICK_MESHES
  devices = _pick(args, "devices", q, DEFAULT_DEVICES)
  presets = _pick(args, "presets", q, MESH_PRESETS)
  base = {"batches": _pick(args, "batches", q, (1, 2, 4)),
          "prompt_len": _pick(args, "prompt_len", q, 512),
          "gen_len": _pick(args, "gen_len", q, 512),
          "group": _pick(args, "group", q, 8),
          "layouts": args.layouts, "programs": args.programs,
          "single": not args.no_single,
          "trainer_rows": not args.no_trainer_rows}
  res = {"settings": {**base, "devices": list(devices),
                      "presets": list(presets),
                      "llvm_opt_level": 2 if args.llvm_o2 else 0,
                      "xla_cpu_scheduler": ("concurrency-optimised (XLA's "
                                            "default)"
                                            if args.concurrency_scheduler
                                            else "memory-minimising"),
                      "optimizer": "optax.adam(1e-6), float32 state",
                      "dtype": "float32"},
         "runs": [], "not_run": []}
  done = resumable_runs(getattr(args, "previous", None), res["settings"])
  for n in (8, 64, 256):
    if n not in devices:
      res["not_run"].append(f"{n} devices (add to --devices)")
  for n in devices:
    for preset in presets:
      spec = {**base, "devices": n, "preset": preset}
      if (n, preset) in done:
        _log(f"mesh worker: {n} devices, {preset}: kept from the last run")
        res["runs"].append(done[(n, preset)])
        continue
      _log(f"mesh worker: {n} devices, {preset}")
      try:
        out = run_mesh_worker(spec, llvm_o2=args.llvm_o2,
                              concurrency_scheduler=args.concurrency_scheduler,
                              timeout=args.worker_timeout)
      except (RuntimeError, subprocess.TimeoutExpired) as e:
        res["runs"].append({"devices": n, "preset": preset,
                            "error": str(e)[:800]})
        continue
      out["fits"] = run_fits(out, base)
      res["runs"].append(out)
      if args.checkpoint:
        args.checkpoint(res)
  return res


# ============================================================================
# --local: the GRPO step on this machine.
# ============================================================================


def slope_loglog(xs: Sequence[float], ys: Sequence[float]) -> float:
  """Least-squares slope of ``log y`` against ``log x``."""
  return fit_line([math.log(x) for x in xs], [math.log(y) for y in ys])[1]


def local_point(spec: Mapping[str, Any], repeats: int) -> dict[str, Any]:
  """Builds ``GrpoStep(spec)`` (compiles and runs once), then times
  ``repeats`` steps; medians per phase."""
  from scripts.peers import divrl_worker
  t0 = time.perf_counter()
  step = divrl_worker.GrpoStep(dict(spec))
  setup = time.perf_counter() - t0
  runs = [step.run() for _ in range(repeats)]
  phases = {ph: _bench.summary([r["phases"][ph] for r in runs])
            for ph in PHASES}
  phases["total"] = _bench.summary([r["seconds"] for r in runs])
  return {"group": spec["group"], "gen_len": spec["gen_len"],
          "rows": spec["prompts"] * spec["group"],
          "tokens": runs[-1]["tokens"], "setup_s": setup,
          "phases": phases, "plan": str(step.plan)}


def run_local(args) -> dict[str, Any]:
  from scripts.peers import protocol
  quick = getattr(args, "quick", False)
  q = QUICK_LOCAL
  model = dict(protocol.MODEL, **(QUICK_LOCAL_MODEL if quick else {}))
  grpo = dict(protocol.GRPO)
  if quick:
    grpo.update(prompts=q["prompts"], prompt_len=q["prompt_len"])
  groups = _pick(args, "groups", q, LOCAL_GROUPS)
  lengths = _pick(args, "lengths", q, LOCAL_LENGTHS)
  fixed = q["fixed"] if quick else LOCAL_FIXED
  repeats = _pick(args, "repeats", q, 3)
  cache: dict[tuple[int, int], dict] = {}

  def point(g, n):
    if (g, n) not in cache:
      _log(f"local: G={g} N={n}")
      cache[(g, n)] = local_point({**model, **grpo, "group": g,
                                   "gen_len": n}, repeats)
      ph = cache[(g, n)]["phases"]
      _log("  " + ", ".join(f"{k} {ph[k]['median']:.3f}s" for k in ph))
    return cache[(g, n)]

  sweeps = {"group": [point(g, fixed["gen_len"]) for g in groups],
            "gen_len": [point(fixed["group"], n) for n in lengths]}
  slopes = {}
  for axis, pts in sweeps.items():
    xs = [p[axis] for p in pts]
    slopes[axis] = {ph: slope_loglog(xs, [p["phases"][ph]["median"]
                                          for p in pts])
                    for ph in PHASES + ("total",)}
  return {"model": model, "grpo": grpo, "fixed": fixed, "repeats": repeats,
          "sweeps": sweeps, "slopes": slopes, "quick": bool(quick)}


def plot_local(local: Mapping[str, Any], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  names = {"group": "group size G", "gen_len": "generation length N"}
  for ax, (axis, pts) in zip(axes, local["sweeps"].items()):
    xs = [p[axis] for p in pts]
    for ph in PHASES + ("total",):
      ys = [p["phases"][ph]["median"] for p in pts]
      ax.plot(xs, ys, "o-", label=f"{ph} (slope "
              f"{local['slopes'][axis][ph]:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(names[axis])
    ax.set_ylabel("seconds (median)")
    other = "gen_len" if axis == "group" else "group"
    ax.set_title(f"{names[axis]} ({other} = {local['fixed'][other]})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ============================================================================
# The page.
# ============================================================================


def _gib(x: float | None) -> str:
  return "–" if x is None else f"{x / GIB:.3g}"


def _ratio(a: float, b: float) -> str:
  if not b or a != a or b != b:
    return "–"
  return f"{a / b:.2f}"


def _mesh_name(sizes: Mapping[str, int]) -> str:
  return "×".join(f"{k}{v}" for k, v in sizes.items() if v > 1) or "1"


def render_local(local: Mapping[str, Any]) -> list[str]:
  lines = ["## Local: one GRPO step on this machine", ""]
  m = local["model"]
  lines += [
      f"Model `protocol.MODEL`: d={m['hidden_size']}, "
      f"{m['num_layers']} layers, {m['num_heads']} heads "
      f"({m['num_kv_heads']} kv), vocab {m['vocab_size']}, q/k/v bias "
      f"{m.get('qkv_bias')}, {m.get('dtype', 'float32')}. "
      f"{local['grpo']['prompts']} prompts of {local['grpo']['prompt_len']} "
      f"tokens. Median of {local['repeats']} steps after a compiling one.",
      "",
      "- `sample`: sampler + host reward; `score`: prepare step (reference "
      "forward, advantages); `update`: forward, backward, Adam.",
      "- slope: least-squares slope of log(seconds) against log(G) or "
      "log(N).", ""]
  for axis, label in (("group", "G"), ("gen_len", "N")):
    other = "gen_len" if axis == "group" else "group"
    lines += [f"### Sweep over {label} ({other} = {local['fixed'][other]})",
              ""]
    rows = []
    for p in local["sweeps"][axis]:
      ph = p["phases"]
      rows.append([p[axis], p["rows"], p["tokens"]]
                  + [f"{ph[k]['median']:.4g}" for k in PHASES + ("total",)]
                  + [f"{p['setup_s']:.3g}"])
    rows.append(["slope", "", ""] + [f"{local['slopes'][axis][k]:.2f}"
                                     for k in PHASES + ("total",)] + [""])
    lines += _bench.table([label, "rows", "response tokens", "sample s",
                           "score s", "update s", "step s",
                           "first call s (compiles)"], rows)
    lines.append("")
  lines += [f"![time per phase]({local.get('png', 'scaling.png')})", ""]
  return lines


def render_meshes(meshes: Mapping[str, Any]) -> list[str]:
  st = meshes["settings"]
  lines = [
      "## Meshes: compiled, not run", "",
      f"Simulated CPU meshes of {', '.join(map(str, st['devices']))} "
      f"devices; presets {', '.join(st['presets'])}; rows = b × devices for "
      f"b in {st['batches']}, each {st['prompt_len']} prompt + "
      f"{st['gen_len']} response tokens, groups of {st['group']}; "
      f"{st['optimizer']}; {st['dtype']} parameters and activations; "
      f"LLVM -O{st['llvm_opt_level']}.", ""]
  if meshes.get("not_run"):
    lines += ["Not run: " + "; ".join(meshes["not_run"]) + ".", ""]
  lines += [
      "Definitions (per device):", "",
      "- `XLA GFLOP`: `compiled.cost_analysis()['flops']` (every loop body "
      "counted once).",
      "- `dot GFLOP`: matmul FLOPs from the HLO text, loop bodies weighted "
      "by trip count; `exp.`: analytic model FLOPs / devices; `single / "
      "dot`: the 1-device program's dot FLOPs (same global batch) over "
      "this one's.",
      "- `peak GiB`: `memory_analysis()` peak (arguments + outputs + temp − "
      "aliased). `state exp.`: update: (params + grads + 2 Adam moments) × "
      "4 bytes / (fsdp × tensor); sampler: params / (fsdp × tensor) + KV "
      "cache of the device's rows.",
      "- `coll. MiB`: full buffers of all-reduce, all-gather, "
      "reduce-scatter, all-to-all, collective-permute; `wire MiB`: bytes one "
      "device sends under ring algorithms; `wire exp.`: the analytic "
      "collectives (dp: gradient all-reduce; fsdp: all-gather of the "
      "parameters twice + reduce-scatter of the gradients; tp: 4L+2 "
      "activation all-reduces of the update, 2L per decode step).",
      "- `compile s`: `lowered.compile()` wall time (lowering separate).",
      ""]
  header = ["devices", "preset", "program", "layout", "mesh", "b", "rows",
            "compile s", "XLA GFLOP", "dot GFLOP", "dot / exp.",
            "single / dot", "peak GiB", "peak / state exp.", "coll. MiB",
            "wire MiB", "wire / exp."]
  rows = []
  errors = []
  for run in meshes["runs"]:
    if "error" in run:
      errors.append(f"{run['devices']} devices, {run['preset']}: "
                    f"{run['error']}")
      continue
    single = {p["program"]: p for p in run["programs"]
              if p["layout"] == "single" and "error" not in p}
    for p in run["programs"]:
      if "error" in p:
        errors.append(f"{run['devices']} devices, {run['preset']}, "
                      f"{p['program']}, {p['layout']} {p['mesh']}, b="
                      f"{p['per_device_rows']}: {p['error'][:300]}")
        continue
      e, h = p["expected"], p["hlo"]
      ref = single.get(p["program"])
      same_batch = ref is not None and ref["rows"] == p["rows"]
      rows.append([
          run["devices"], run["preset"], p["program"], p["layout"],
          _mesh_name(p["mesh"]), p["per_device_rows"], p["rows"],
          f"{p['compile_s']:.1f}", f"{p['cost']['flops'] / 1e9:.4g}",
          f"{h['dot_flops'] / 1e9:.4g}", _ratio(h["dot_flops"], e["flops"]),
          (_ratio(ref["hlo"]["dot_flops"], h["dot_flops"])
           if same_batch and p["layout"] != "single" else "–"),
          f"{p['memory']['peak'] / GIB:.3g}",
          _ratio(p["memory"]["peak"], e["state_bytes"]),
          f"{h['collective_bytes'] / 2**20:.4g}",
          f"{h['wire_bytes'] / 2**20:.4g}",
          _ratio(h["wire_bytes"], e["wire_bytes"])])
  lines += _bench.table(header, rows) + [""]
  lines += [
      "### Fit per device", "",
      "Peak bytes fitted as `intercept + slope × b` over the compiled b "
      "(least squares); `max b`: the largest rows per device whose fitted "
      "peak is within the accelerator's memory (0: none). `intercept / "
      "state exp.` compares the batch-independent part with the analytic "
      "state bytes. `(floor)`: the fitted growth was below the bytes per "
      "row no schedule avoids (the sampler's KV cache of a row; the "
      "update's `[S, d]` residual stream per block, what a rematerialised "
      "model keeps; `row_floor`), because the peak over the compiled sizes "
      "is set by batch-independent buffers; the extrapolation then starts "
      "from the largest compiled peak and grows by that floor.", ""]
  frows = []
  for run in meshes["runs"]:
    if "error" in run:
      continue
    exp_state = {}
    for p in run["programs"]:
      if "error" not in p:
        exp_state[(p["layout"], p["program"])] = p["expected"]["state_bytes"]
    for f in run.get("fits", []):
      frows.append([
          run["devices"], run["preset"], f["program"], f["layout"],
          _mesh_name(f["mesh"]), ", ".join(map(str, f["batches"])),
          _gib(f["intercept_bytes"]),
          _gib(f["bytes_per_row"]) + (" (floor)" if f.get("slope_from")
                                      == "floor" else ""),
          _ratio(f["intercept_bytes"],
                 exp_state.get((f["layout"], f["program"]), 0)),
          *[f["max_rows_per_device"][str(g)] for g in ACCELERATORS_GIB]])
  lines += _bench.table(["devices", "preset", "program", "layout", "mesh",
                         "b compiled", "intercept GiB", "GiB per row",
                         "intercept / state exp."]
                        + [f"max b, {g} GiB" for g in ACCELERATORS_GIB],
                        frows) + [""]
  lines += ["### Compile times", ""]
  crows = []
  for run in meshes["runs"]:
    if "error" in run:
      continue
    ok = [p for p in run["programs"] if "error" not in p]
    for program in ("update", "update_remat", "sampler"):
      ts = [p["compile_s"] for p in ok if p["program"] == program]
      ls = [p["lower_s"] for p in ok if p["program"] == program]
      if ts:
        crows.append([run["devices"], run["preset"], program, len(ts),
                      f"{min(ts):.1f}", f"{_bench.median(ts):.1f}",
                      f"{max(ts):.1f}", f"{_bench.median(ls):.1f}"])
    crows.append([run["devices"], run["preset"], "subprocess total", "",
                  "", "", "", f"{run.get('process_s', float('nan')):.0f}"])
  lines += _bench.table(["devices", "preset", "program", "programs",
                         "min compile s", "median compile s",
                         "max compile s", "median lower s"], crows) + [""]
  if errors:
    lines += ["### Failed", ""] + [f"- {e}" for e in errors] + [""]
  return lines


def render(res: Mapping[str, Any]) -> str:
  lines = ["# Scaling of the RL step", "",
           "Generated by `scripts/bench_scaling.py`; definitions in its "
           "module docstring.", ""]
  for part in ("local", "meshes"):
    if part in res:
      info = res[part]
      lines += [f"Command ({part}): `{info['command']}`; "
                f"{info['wall_s']:.0f} s. Machine: "
                f"{_bench.machine_line(info['machine'])}", ""]
  if "local" in res:
    lines += render_local(res["local"])
  if "meshes" in res:
    lines += render_meshes(res["meshes"])
  return "\n".join(lines).rstrip() + "\n"


# ============================================================================
# Main.
# ============================================================================


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(x) for x in text.split(",") if x)


def _names(text: str) -> tuple[str, ...]:
  return tuple(x for x in text.split(",") if x)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--local", action="store_true")
  p.add_argument("--meshes", action="store_true")
  p.add_argument("--quick", action="store_true",
                 help="tiny shapes for both parts")
  # Unset sizes take the --quick value with --quick, else the full one.
  p.add_argument("--repeats", type=int, default=None,
                 help="timed steps per point (default 3)")
  p.add_argument("--groups", type=_ints, default=None,
                 help="default " + ",".join(map(str, LOCAL_GROUPS)))
  p.add_argument("--lengths", type=_ints, default=None,
                 help="default " + ",".join(map(str, LOCAL_LENGTHS)))
  p.add_argument("--devices", type=_ints, default=None,
                 help="simulated mesh sizes (default 8,64,256)")
  p.add_argument("--presets", type=_names, default=None,
                 help="default " + ",".join(MESH_PRESETS))
  p.add_argument("--layouts", type=_names, default=LAYOUTS)
  p.add_argument("--programs", type=_names,
                 default=("update", "update_remat", "sampler"))
  p.add_argument("--batches", type=_ints, default=None,
                 help="rows per data-parallel device (default 1,2,4)")
  p.add_argument("--prompt-len", type=int, default=None,
                 help="default 512")
  p.add_argument("--gen-len", type=int, default=None, help="default 512")
  p.add_argument("--group", type=int, default=None, help="default 8")
  p.add_argument("--no-single", action="store_true",
                 help="skip the 1-device reference compile")
  p.add_argument("--no-trainer-rows", action="store_true",
                 help="skip the update with replicated row indices")
  p.add_argument("--concurrency-scheduler", action="store_true",
                 help="keep XLA:CPU's concurrency-optimised scheduler "
                      "(default: the memory-minimising one; see worker_env)")
  p.add_argument("--llvm-o2", action="store_true",
                 help="compile with LLVM -O2 (default -O0; same analyses)")
  p.add_argument("--worker-timeout", type=float, default=None,
                 help="seconds per (mesh size, preset) subprocess")
  p.add_argument("--out", default=os.path.join(ROOT, "results",
                                               "scaling.json"))
  p.add_argument("--md", default=None,
                 help="default: --out with .md")
  p.add_argument("--png", default=None,
                 help="default: --out with .png")
  p.add_argument("--render-only", action="store_true")
  p.add_argument("--resume", action="store_true",
                 help="--meshes: keep the workers an interrupted run of the "
                      "same settings finished in --out")
  p.add_argument("--mesh-worker", default=None, help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.mesh_worker is not None:
    out = mesh_worker(json.loads(args.mesh_worker))
    sys.stdout.write(json.dumps(out) + "\n")
    return
  stem = os.path.splitext(args.out)[0]
  md = args.md or stem + ".md"
  png = args.png or stem + ".png"
  res: dict[str, Any] = {}
  if os.path.exists(args.out):
    with open(args.out) as f:
      res = json.load(f)
  if args.render_only:
    # Expectations and fits follow the current formulas; the compiled
    # programs' analyses are what was recorded.
    for run in res.get("meshes", {}).get("runs", []):
      if "error" not in run:
        refresh_expected(run, res["meshes"]["settings"])
        run["fits"] = run_fits(run, res["meshes"]["settings"])
    _bench.write(res, args.out, md, render)
    return
  if not (args.local or args.meshes):
    raise SystemExit("nothing to do: pass --local and/or --meshes")
  command = "python -m scripts.bench_scaling " + " ".join(
      sys.argv[1:] if argv is None else argv)
  for part, fn in (("local", run_local), ("meshes", run_meshes)):
    if not getattr(args, part):
      continue
    t0 = time.perf_counter()
    info = {"command": command, "machine": _bench.machine(PACKAGES)}

    def checkpoint(partial, part=part, info=info, t0=t0):
      res[part] = {**info, **partial, "wall_s": time.perf_counter() - t0,
                   "complete": False}
      _bench.write(res, args.out, md, render)

    args.checkpoint = checkpoint
    args.previous = res.get(part) if args.resume else None
    out = fn(args)
    info["machine"]["loadavg_end"] = list(os.getloadavg())
    res[part] = {**info, **out, "wall_s": time.perf_counter() - t0,
                 "complete": True}
    if part == "local":
      res["local"]["png"] = os.path.relpath(png, os.path.dirname(
          os.path.abspath(md)))
      plot_local(res["local"], png)
    _bench.write(res, args.out, md, render)
  _log(f"wrote {args.out} and {md}")


if __name__ == "__main__":
  main()
