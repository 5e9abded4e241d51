"""The main job's table: every row's gradient checks hold."""

import subprocess
import sys

from divrl import demo
from experiments import demo as demo_config


def test_demo_rows_match_theory():
  config = demo_config.get_config()
  rows = demo.run(config)
  assert [r["name"] for r in rows] == ["grpo", "dr_grpo", "rloo"]
  for r in rows:
    assert r["fd_rel_err"] < 1e-6, r
    assert abs(r["scale"] - r["theory"]) < 1e-3 * abs(r["theory"]), r
    assert r["cos"] > 0.9999, r
  table = demo.format_table(rows)
  assert table.count("\n") == len(rows) + 1


def test_demo_script_fails_on_unknown_config_name(tmp_path):
  cfg = tmp_path / "bad.py"
  cfg.write_text(
      "from experiments.demo import get_config as base\n"
      "def get_config():\n"
      "  c = base()\n"
      "  c.objectives[0].objective.surrogate.name = 'ppo_clipp'\n"
      "  return c\n")
  proc = subprocess.run([sys.executable, "scripts/demo.py", f"--config={cfg}"],
                        capture_output=True, text=True, timeout=300,
                        env={"PYTHONPATH": ".", "JAX_PLATFORMS": "cpu",
                             "PATH": "/usr/bin:/bin"})
  assert proc.returncode != 0
  assert "unknown surrogate name 'ppo_clipp'" in proc.stderr
