"""The peer benchmark's harness: protocol, alternation, ratios, report.

The peers themselves (tunix, TRL) live in a separate environment that CI
does not install; here the harness runs every comparison on tiny shapes
with divrl alone, and the peer rows must say why they are missing.
"""

import json
import os
import sys

import numpy as np
import pytest

from scripts import _bench
from scripts import bench_peers
from scripts.peers import protocol
from tests.scripts import ROOT, run_script


def test_paired_ratios_are_taken_repetition_by_repetition():
  r = _bench.paired_ratios([2.0, 9.0, 3.0], [1.0, 3.0, 3.0])
  assert r["values"] == [2.0, 3.0, 1.0]
  assert (r["median"], r["min"], r["max"]) == (2.0, 1.0, 3.0)
  with pytest.raises(ValueError, match="3 times against 2"):
    _bench.paired_ratios([1.0, 2.0, 3.0], [1.0, 2.0])


def test_objective_reference_matches_an_independent_loop():
  spec = dict(protocol.OBJECTIVE, batch=8, length=5, group=4)
  x = protocol.objective_inputs(spec)
  total = count = 0.0
  for i in range(8):
    group = x["rewards"][(i // 4) * 4:(i // 4) * 4 + 4].astype(float)
    mean = sum(group) / 4
    std = (sum((r - mean) ** 2 for r in group) / 3) ** 0.5
    adv = (x["rewards"][i] - mean) / (std + 1e-4)
    for t in range(5):
      if not x["mask"][i, t]:
        continue
      lp = float(x["logprobs"][i, t])
      rho = np.exp(lp - float(x["old_logprobs"][i, t]))
      clipped = min(max(rho, 0.8), 1.2)
      d = float(x["ref_logprobs"][i, t]) - lp
      kl = np.exp(d) - d - 1
      total += -(min(rho * adv, clipped * adv) - 0.04 * kl)
      count += 1
  assert protocol.objective_reference(spec) == pytest.approx(total / count,
                                                             rel=1e-12)


def test_worker_reports_what_it_cannot_do():
  w = protocol.Worker("divrl", [sys.executable, "-m",
                                "scripts.peers.divrl_worker"], cwd=ROOT,
                      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  try:
    answer = w.setup("no_such_bench", {})
    assert not answer["ok"] and "no bench 'no_such_bench'" in answer["error"]
    answer = w.run()
    assert not answer["ok"] and "run before setup" in answer["error"]
    # A spec that breaks the bench: the error names the missing key.
    answer = w.setup("objective", {"batch": 6, "length": 4, "group": 4,
                                   "epsilon": 0.2, "kl_coef": 0.0,
                                   "seed": 0})
    assert not answer["ok"] and "not a multiple of group" in answer["error"]
  finally:
    w.close()
  assert w.proc.returncode == 0


def test_quick_run_with_divrl_alone(tmp_path):
  out = tmp_path / "peers.json"
  md = tmp_path / "peers.md"
  proc = run_script("scripts.bench_peers", "--quick", "--sides", "divrl",
                    "--repeats", "2", "--out", str(out), "--md", str(md))
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  names = [c["name"] for c in res["comparisons"]]
  assert names == [c["name"] for c in bench_peers.comparisons(quick=True)]
  for comp in res["comparisons"]:
    rows = comp["rows"]
    for label, row in rows.items():
      if row["side"] == "divrl":
        assert "error" not in row, (label, row.get("error"))
        assert len(row["seconds"]["values"]) == 2
        assert row["seconds"]["min"] <= row["seconds"]["median"] <= row[
            "seconds"]["max"]
      else:
        assert row["error"] == "not requested (--sides)"
  step = res["comparisons"][0]["rows"]["divrl/grpo_step"]
  spec = res["comparisons"][0]["spec"]
  assert step["tokens"] == spec["prompts"] * spec["group"] * spec["gen_len"]
  assert set(step["phases"]) == {"sample", "score", "update"}
  for rep in step["repetitions"]:     # the phases add up to the step
    assert sum(rep["phases"].values()) == pytest.approx(rep["seconds"])
  objective = res["comparisons"][-1]["rows"]["divrl/objective"]
  assert objective["loss"] == pytest.approx(
      protocol.objective_reference(res["comparisons"][-1]["spec"]),
      rel=1e-5)
  stats = res["comparisons"][-2]["rows"]
  naive = stats["divrl/token_stats_naive"]
  assert naive["value"] == pytest.approx(stats["divrl/token_stats"]["value"],
                                         rel=1e-5)
  assert len(naive["ratio"]["values"]) == 2    # paired with divrl's row
  scored = res["comparisons"][0]["rows"]["divrl/grpo_step_scored"]
  assert scored["tokens"] == step["tokens"]
  assert len(scored["ratio"]["values"]) == 2    # paired with grpo_step
  text = md.read_text()
  assert "### The full GRPO step" in text
  assert "not requested (--sides)" in text
  # The page can be rebuilt from the JSON alone.
  md.unlink()
  proc = run_script("scripts.bench_peers", "--render-only", "--out",
                    str(out), "--md", str(md))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert md.read_text() == text
