"""The README main job (scripts/quickstart.py) on a few steps."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_small_path_prints_table_and_saves_plot(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, "-m", "scripts.quickstart", f"--workdir={tmp_path}",
       "--steps=2", "--pretrain_steps=30", "--eval_samples=8"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  header = next(i for i, l in enumerate(lines) if l.startswith("run "))
  assert all(c in lines[header] for c in ("pass@1", "pass@16", "distinct",
                                          "token_entropy"))
  rows = [l.split()[0] for l in lines[header + 2:header + 5]]
  assert rows == ["base", "grpo", "unlikeliness"]
  for l in lines[header + 2:header + 5]:
    float(l.split()[1])   # pass@1 is a number
  # The pass@k table: the ks the 8 samples allow, base <= nothing assumed.
  curve = lines.index("pass@k on the same samples:") + 1
  assert lines[curve].split() == ["run", "pass@1", "pass@4"]
  for l in lines[curve + 2:curve + 5]:
    name, p1, p4 = l.split()
    assert name in ("base", "grpo", "unlikeliness")
    assert 0 <= float(p1) <= float(p4) <= 1
  assert (tmp_path / "quickstart.png").stat().st_size > 10_000
  for run in ("grpo", "unlikeliness"):
    assert (tmp_path / run / "metrics.jsonl").exists()
