"""scripts/profile_update.py: HLO parsing, scope attribution, and a real
profile of the tiny model's update."""

from scripts import profile_update as pu

_HLO = """HloModule jit_f, entry_computation_layout={(f32[4,4]{1,0})->f32[4]{0}}

%fused_dot (p0: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  ROOT %dot.1 = f32[4,4]{1,0} dot(%p0, %p0), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(f)/transpose(jvp(mlp))/dot_general"}
}

%body (t: (s32[], f32[4,4])) -> (s32[], f32[4,4]) {
  %t = (s32[], f32[4,4]{1,0}) parameter(0)
  ROOT %tuple.2 = (s32[], f32[4,4]{1,0}) tuple(%t, %t)
}

ENTRY %main.3 (x: f32[4,4]) -> f32[4] {
  %x = f32[4,4]{1,0} parameter(0)
  %fusion.1 = f32[4,4]{1,0} fusion(%x), kind=kOutput, calls=%fused_dot, metadata={op_name="jit(f)/transpose(jvp(mlp))/dot_general"}
  %while.6 = (s32[], f32[4,4]{1,0}) while(%x), condition=%c, body=%body
  %copy.2 = f32[4,4]{0,1} copy(%fusion.1), metadata={op_name="jit(f)/jvp(attend)/transpose"}
  ROOT %add.9 = f32[4] add(%x, %x), metadata={op_name="jit(f)/jvp(rms_norm)/add"}
}
"""


def test_hlo_ops_parses_fusions_loops_and_metadata():
  ops = pu.hlo_ops(_HLO)
  assert ops["fusion.1"]["has_dot"] and ops["fusion.1"]["op"] == "fusion"
  assert pu.kind_of(ops["fusion.1"]) == "matmul"
  assert pu.pass_of(ops["fusion.1"]) == "bwd"
  assert ops["while.6"]["op"] == "while" and not ops["while.6"]["has_dot"]
  assert pu.kind_of(ops["copy.2"]) == "copy"
  assert pu.pass_of(ops["copy.2"]) == "fwd"
  assert pu.scope_of(ops["copy.2"]["op_name"]) == "attend"
  assert pu.scope_of(ops["add.9"]["op_name"]) == "rms_norm"
  assert pu.module_name(_HLO) == "jit_f"


def test_scope_of_takes_the_innermost_known_scope():
  assert pu.scope_of("jit(backward)/transpose(jvp(mlp))/dot_general") == "mlp"
  assert pu.scope_of(
      "jit(forward)/jvp(token_statistics)/while/body/closed_call/dot_general"
  ) == "token_statistics"
  assert pu.scope_of("jit(apply)/add.3") == "(unscoped) add"


def test_attribute_sums_by_program_pass_kind_and_scope():
  ops = {"f": pu.hlo_ops(_HLO)}
  times = {("jit_f", "fusion.1"): {"ns": 30.0, "count": 1},
           ("jit_f", "add.9"): {"ns": 10.0, "count": 2},
           ("jit_f", "nope"): {"ns": 5.0, "count": 1},
           ("jit_other", "add.9"): {"ns": 99.0, "count": 1}}
  rows = pu.attribute(times, ops, {"jit_f": "f"})
  by = {(r["pass"], r["kind"], r["source"]): r["ns"] for r in rows}
  assert by == {("bwd", "matmul", "mlp"): 30.0,
                ("fwd", "other", "rms_norm"): 10.0,
                ("?", "other", "(op nope)"): 5.0}


def test_profile_of_the_tiny_update_attributes_its_time():
  res = pu.profile("tiny", rows=8, group=4, prompt_len=4, response_len=4,
                   repeats=1)
  rows = res["rows_by_source"]
  total = sum(r["ns"] for r in rows)
  assert total > 0 and len(res["wall_s"]) == 1
  programs = {r["program"] for r in rows}
  assert {"forward", "backward", "apply"} <= programs
  scoped = {r["source"] for r in rows if r["program"] == "backward"
            and r["pass"] == "bwd" and r["kind"] == "matmul"}
  assert {"attend", "mlp", "qkv", "o_proj", "token_statistics"} <= scoped
  # Nearly all of the time maps to an instruction of a known program.
  lost = sum(r["ns"] for r in rows if r["source"].startswith("(op "))
  assert lost < 0.2 * total, (lost, total)
  from scripts import _bench
  assert "By model part" in pu.render(
      {**res, "command": "test", "machine": _bench.machine(("jax",))})
