"""The scaling benchmark measures what it says, on tiny shapes.

``scripts/bench_scaling.py --meshes`` compiles the update and the sampler
for simulated meshes and reads FLOPs, memory and collectives from XLA; its
tables are only meaningful if (a) the HLO parser counts collectives and
loop bodies correctly, (b) a data-parallel program really splits the work,
(c) FSDP really shards the state. These tests check each on programs small
enough to compile in seconds: toy jitted functions for the parser, the
``tiny`` preset on 8 simulated devices (the script's own subprocess) for the
rest, and the ``--local`` sweep on a tiny model.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from divrl.rl import mesh as mesh_lib
from scripts import bench_scaling as bench
from tests.scripts import run_script

N = 8


def _mesh():
  assert jax.device_count() >= N, "conftest sets 8 simulated devices"
  return mesh_lib.make_train_mesh(data=N)


def _summary(fn, *args, **jit_kwargs):
  compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
  return bench.hlo_summary(compiled.as_text(), N), compiled


def test_parser_counts_a_known_all_reduce_and_all_gather():
  mesh = _mesh()
  split = NamedSharding(mesh, P("data", None))
  rep = NamedSharding(mesh, P())
  x = jax.ShapeDtypeStruct((N, 1000), jnp.float32, sharding=split)
  # Each device sums its row; the [1000] float32 partial sums are
  # all-reduced over the 8 devices: 4000 bytes, 2 * 7/8 of that on the wire.
  s, _ = _summary(lambda x: x.sum(0), x, out_shardings=rep)
  ar = s["collectives"]["all-reduce"]
  assert ar["count"] == 1
  assert ar["bytes"] == 4000
  assert ar["wire_bytes"] == pytest.approx(2 * 7 / 8 * 4000)
  assert s["collective_bytes"] == 4000
  # Replicating the split array gathers all 8 rows: a 32000-byte result.
  s, _ = _summary(lambda x: x * 2, x, out_shardings=rep)
  ag = s["collectives"]["all-gather"]
  assert (ag["count"], ag["bytes"]) == (1, 32000)
  assert ag["wire_bytes"] == pytest.approx(7 / 8 * 32000)
  assert s["collectives"]["all-reduce"]["count"] == 0


def test_parser_weights_loop_bodies_by_their_trip_count():
  mesh = _mesh()

  def psum_loop(x):
    def body(_, c):
      return c + jax.lax.psum(c, "data")
    return jax.lax.fori_loop(0, 5, body, x)

  fn = jax.shard_map(psum_loop, mesh=mesh, in_specs=P("data"),
                     out_specs=P("data"))
  x = jax.ShapeDtypeStruct((N, 1000), jnp.float32,
                           sharding=NamedSharding(mesh, P("data", None)))
  s, _ = _summary(fn, x)
  ar = s["collectives"]["all-reduce"]
  assert ar["count"] == 5 and ar["bytes"] == 5 * 4000

  # XLA's cost analysis counts a loop body once; the parser by trip count.
  def matmuls(a, w):
    return jax.lax.fori_loop(0, 10, lambda i, a: a @ w, a)

  a = jax.ShapeDtypeStruct((64, 64), jnp.float32)
  s, compiled = _summary(matmuls, a, a)
  one = 2 * 64 ** 3
  assert s["dot_flops"] == 10 * one
  assert s["loops"] >= 1 and s["loops_counted_once"] == 0
  xla_flops = compiled.cost_analysis()
  xla_flops = (xla_flops[0] if isinstance(xla_flops, (list, tuple))
               else xla_flops)["flops"]
  assert xla_flops < 2 * one


def test_replica_group_formats():
  mesh_form = ("replica_groups=mesh['axis_0'=2,'axis_1'=1,'axis_2'=4], "
               "device_ids=([4,2]T(1,0)) {'axis_2'}, use_global_device_ids")
  assert bench.group_size(mesh_form, 8) == 4
  assert bench.group_size("replica_groups=mesh['axis_0'=2,'axis_1'=4] "
                          "{'axis_0','axis_1'}, to_apply", 8) == 8
  assert bench.group_size("replica_groups=[2,4]<=[8], dims", 8) == 4
  assert bench.group_size("replica_groups={{0,1},{2,3}}, x", 4) == 2
  assert bench.group_size("replica_groups={}, x", 16) == 16


def test_fits_and_slopes_are_least_squares():
  assert bench.fit_line([1, 2, 4], [5, 7, 11]) == pytest.approx((3, 2))
  xs = [2, 4, 8, 16]
  assert bench.slope_loglog(xs, [3 * x ** 2 for x in xs]) == pytest.approx(2)
  progs = [{"layout": "dp", "program": "update", "mesh": {"data": 8},
            "per_device_rows": b, "memory": {"peak": (4 + 2 * b) * 2**30}}
           for b in (1, 2, 4)]
  (fit,) = bench.fits(progs)
  assert fit["intercept_bytes"] == pytest.approx(4 * 2**30)
  assert fit["bytes_per_row"] == pytest.approx(2 * 2**30)
  # (16 - 4) / 2 = 6 rows; (80 - 4) / 2 = 38 rows.
  assert fit["max_rows_per_device"] == {"16": 6, "80": 38}


@pytest.fixture(scope="module")
def quick_meshes(tmp_path_factory):
  out = tmp_path_factory.mktemp("scaling") / "scaling.json"
  proc = run_script("scripts.bench_scaling", "--meshes", "--quick",
                    "--programs", "update,sampler", "--layouts", "dp,fsdp",
                    "--out", str(out), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out) as f:
    res = json.load(f)
  with open(str(out)[:-5] + ".md") as f:
    page = f.read()
  return res["meshes"], page


def _programs(meshes):
  (run,) = meshes["runs"]
  assert run["devices"] == N and run["preset"] == "tiny"
  progs = run["programs"]
  errors = [p["error"] for p in progs if "error" in p]
  assert not errors, errors
  return run, {(p["program"], p["layout"], p["per_device_rows"]): p
               for p in progs}


def test_data_parallel_splits_the_flops_of_the_same_global_batch(
    quick_meshes):
  _, progs = _programs(quick_meshes[0])
  for program in ("update", "sampler"):
    single = progs[(program, "single", 1)]
    dp = progs[(program, "dp", 1)]
    assert single["devices_used"] == 1 and dp["devices_used"] == N
    assert single["rows"] == dp["rows"]
    if program == "update":
      # Every matmul of the update is split over the 8 devices.
      assert dp["hlo"]["dot_flops"] * N == pytest.approx(
          single["hlo"]["dot_flops"], rel=0.02)
      assert dp["cost"]["flops"] * N == pytest.approx(
          single["cost"]["flops"], rel=0.15)
      # ... and the analytic model FLOPs describe the program.
      assert single["hlo"]["dot_flops"] == pytest.approx(
          single["expected"]["flops"], rel=0.1)
    else:
      # The decode rows are split; the 2 prompts' prefill cannot be 8-way.
      assert single["hlo"]["loops_with_hinted_trips"] >= 1
      assert single["hlo"]["loops_counted_once"] == 0
      assert 3 < single["hlo"]["dot_flops"] / dp["hlo"]["dot_flops"] < N


def test_fsdp_shards_the_state_and_dp_all_reduces_the_gradients(
    quick_meshes):
  run, progs = _programs(quick_meshes[0])
  params = run["params"]
  dp, fsdp = progs[("update", "dp", 1)], progs[("update", "fsdp", 1)]
  # Arguments: parameters + 2 Adam moments (+ a small batch).
  assert dp["memory"]["argument"] == pytest.approx(12 * params, rel=0.05)
  assert fsdp["memory"]["argument"] == pytest.approx(12 * params / N,
                                                     rel=0.1)
  assert fsdp["memory"]["argument"] * N == pytest.approx(
      dp["memory"]["argument"], rel=0.1)
  # Donated: the new state reuses the old one's buffers.
  assert dp["memory"]["alias"] >= 0.95 * dp["memory"]["output"]
  # One ring all-reduce of the float32 gradients, 2 (N-1)/N x 4 P bytes.
  ring = 2 * (N - 1) / N * 4 * params
  assert 0.95 < dp["hlo"]["wire_bytes"] / ring < 1.2
  # Per-device bytes grow with the per-device batch; the fit says so.
  fit = {(f["layout"], f["program"]): f for f in run["fits"]}
  f = fit[("dp", "update")]
  assert f["batches"] == [1, 2] and f["bytes_per_row"] > 0
  assert f["max_rows_per_device"]["80"] > f["max_rows_per_device"]["16"] > 0


def test_page_and_the_rest_of_the_report(quick_meshes):
  meshes, page = quick_meshes
  assert meshes["settings"]["llvm_opt_level"] == 0
  assert "64 devices (add to --devices)" in meshes["not_run"]
  assert "256 devices (add to --devices)" in meshes["not_run"]
  _, progs = _programs(meshes)
  assert ("update_trainer_rows", "dp", 1) in progs
  for p in progs.values():
    assert p["compile_s"] > 0 and p["lower_s"] > 0
  for heading in ("## Meshes: compiled, not run", "### Fit per device",
                  "### Compile times", "Not run: 64 devices"):
    assert heading in page


def test_llvm_opt_level_does_not_change_the_analyses(quick_meshes,
                                                     tmp_path):
  _, progs = _programs(quick_meshes[0])
  out = tmp_path / "o2.json"
  proc = run_script("scripts.bench_scaling", "--meshes", "--quick",
                    "--llvm-o2", "--programs", "update", "--layouts", "dp",
                    "--batches", "1", "--no-single", "--no-trainer-rows",
                    "--out", str(out), timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out) as f:
    (o2,) = json.load(f)["meshes"]["runs"][0]["programs"]
  o0 = progs[("update", "dp", 1)]
  assert o2["hlo"]["dot_flops"] == o0["hlo"]["dot_flops"]
  assert o2["hlo"]["collectives"] == o0["hlo"]["collectives"]
  assert o2["cost"] == o0["cost"]
  for k in ("argument", "output", "alias", "temp"):
    assert o2["memory"][k] == o0["memory"][k], k


def test_local_sweep_on_a_tiny_model(tmp_path):
  args = argparse.Namespace(quick=True)
  local = bench.run_local(args)
  q = bench.QUICK_LOCAL
  assert [p["group"] for p in local["sweeps"]["group"]] == list(q["groups"])
  assert [p["gen_len"] for p in local["sweeps"]["gen_len"]] == list(
      q["lengths"])
  for sweep in local["sweeps"].values():
    for p in sweep:
      assert p["rows"] == q["prompts"] * p["group"]
      assert p["tokens"] == p["rows"] * p["gen_len"]
      ph = p["phases"]
      assert all(ph[k]["median"] > 0 for k in bench.PHASES)
      assert ph["total"]["median"] == pytest.approx(
          sum(ph[k]["median"] for k in bench.PHASES), rel=0.5)
  for axis in ("group", "gen_len"):
    assert set(local["slopes"][axis]) == set(bench.PHASES) | {"total"}
    assert all(v == v for v in local["slopes"][axis].values())
  png = tmp_path / "scaling.png"
  bench.plot_local(local, str(png))
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  page = bench.render({"local": {**local, "command": "x", "wall_s": 1.0,
                                 "machine": {**_machine()}}})
  assert "### Sweep over G" in page and "### Sweep over N" in page


def _machine():
  from scripts import _bench
  return _bench.machine(())


def test_fits_fall_back_to_the_row_floor_when_the_peak_does_not_grow():
  """A peak flat in b (set by batch-independent buffers) extrapolates from
  the largest compiled peak by the bytes a row cannot avoid."""
  progs = [{"layout": "dp", "program": "update_remat", "mesh": {"data": 8},
            "per_device_rows": b, "memory": {"peak": 10 * 2**30}}
           for b in (1, 2, 4)]
  floor = 0.5 * 2**30
  (fit,) = bench.fits(progs, {("dp", "update_remat"): floor})
  assert fit["slope_from"] == "floor" and fit["bytes_per_row"] == floor
  # 10 GiB at b = 4, then 0.5 GiB a row: (16 - 10) / 0.5 + 4 = 16 rows.
  assert fit["max_rows_per_device"] == {"16": 16, "80": 144}
  cfg = {"hidden_size": 8, "vocab_size": 16, "head_dim": 2, "num_heads": 4,
         "num_kv_heads": 2, "qkv_bias": False, "intermediate_size": 16,
         "tie_word_embeddings": True, "num_layers": 3}
  # Update: L * S * d * 4 bytes (times tensor); sampler: the KV cache row.
  assert bench.row_floor(cfg, "update", {"tensor": 2}, 5, 3) == (
      2 * 3 * 8 * 8 * 4)
  assert bench.row_floor(cfg, "sampler", {"tensor": 1}, 5, 3) == (
      3 * 2 * 4 * 7 * 4)


def test_resume_keeps_finished_workers_of_the_same_settings(monkeypatch):
  calls = []

  def worker(spec, **_):
    calls.append((spec["devices"], spec["preset"]))
    return {"devices": spec["devices"], "preset": spec["preset"],
            "programs": [], "new": True}

  monkeypatch.setattr(bench, "run_mesh_worker", worker)
  monkeypatch.setattr(bench, "run_fits", lambda out, base: [])

  def run(previous):
    args = bench.parse_args(["--meshes", "--quick", "--devices", "8,64",
                             "--resume"])
    args.checkpoint, args.previous = None, previous
    return bench.run_meshes(args)

  first = run(None)
  assert calls == [(8, "tiny"), (64, "tiny")]
  # An interrupted run: the 8-device worker finished, the 64 did not.
  cut = {**first, "runs": [dict(first["runs"][0], new=False)]}
  calls.clear()
  again = run(json.loads(json.dumps(cut)))
  assert calls == [(64, "tiny")]
  assert [r["new"] for r in again["runs"]] == [False, True]
  # Different settings: nothing is kept.
  calls.clear()
  other = dict(cut, settings=dict(cut["settings"], gen_len=1))
  run(json.loads(json.dumps(other)))
  assert calls == [(8, "tiny"), (64, "tiny")]
