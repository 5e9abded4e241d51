"""Main job (placeholder until the trainer lands): prints the objective table.

  scripts/run.sh                        # via the venv bootstrap
  python scripts/demo.py --config=experiments/demo.py --config.seed=1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from divrl import demo  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 "experiments", "demo.py"),
    "Experiment config module.")


def main(argv):
  del argv
  rows = demo.run(_CONFIG.value)
  print(demo.format_table(rows))
  bad = [r["name"] for r in rows
         if r["fd_rel_err"] > 1e-2 or abs(r["scale"] - r["theory"]) > 1e-3 *
         max(1.0, abs(r["theory"])) or r["cos"] < 0.9999]
  if bad:
    print(f"gradient checks FAILED for: {', '.join(bad)}")
    return 1
  print("all gradient checks passed")
  return 0


if __name__ == "__main__":
  app.run(main)
