"""Run a reproduction table: ``python -m scripts.reproduce --table NAME``.

  python -m scripts.reproduce --table sharpening            # the full table
  python -m scripts.reproduce --table sharpening --seeds 5  # more seeds
  python -m scripts.reproduce --table sharpening --quick    # a smoke run

``NAME`` is a table file, ``experiments/tables/NAME.py`` (see
``docs/reproducing.md``). The grid of methods x seeds runs once: every run is
cached under ``--cache`` by the hash of its config and shared between
tables. A full run writes ``results/tables/NAME.{md,csv,curves.csv,png}``
and refuses a table file with uncommitted changes (the protocol is committed
before its results); ``--quick`` (1 seed, a few steps, a small base) writes
to ``runs/tables/quick/`` and is never a result.
"""

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from divrl.rl import experiment  # noqa: E402
from divrl.rl import reproduce  # noqa: E402

_TABLE = flags.DEFINE_string("table", None, "Table file stem, "
                             "experiments/tables/<table>.py.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds (default: the table's; "
                              "1 with --quick).")
_QUICK = flags.DEFINE_bool("quick", False, "1 seed, a few steps, a small "
                           "base: a smoke run, written to runs/tables/quick.")
_OUT = flags.DEFINE_string("out", None, "Results directory (default "
                           "results/tables, or runs/tables/quick).")
_CACHE = flags.DEFINE_string("cache", "runs/tables/cache",
                             "The run cache shared by all tables.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _TABLE.value:
    raise app.UsageError("--table is required")
  experiment.quiet_logs()
  path = os.path.join(ROOT, "experiments", "tables", f"{_TABLE.value}.py")
  if not os.path.exists(path):
    known = sorted(f[:-3] for f in os.listdir(os.path.dirname(path))
                   if f.endswith(".py") and not f.startswith("_"))
    raise app.UsageError(f"--table: no table file {path}; known tables:"
                         f" {', '.join(known)}")
  module = importlib.import_module(f"experiments.tables.{_TABLE.value}")
  quick = _QUICK.value
  seeds = _SEEDS.value if _SEEDS.value is not None else (1 if quick else None)
  out = _OUT.value or os.path.join(
      ROOT, "runs/tables/quick" if quick else "results/tables")
  command = " ".join(["python -m scripts.reproduce"] + sys.argv[1:])
  paths = reproduce.run_table(
      module, root=ROOT, out_dir=out, cache=os.path.join(ROOT, _CACHE.value),
      seeds=seeds, quick=quick, command=command)
  with open(paths["md"]) as f:
    print(f.read())
  print("\n".join(f"wrote {p}" for p in paths.values()))


if __name__ == "__main__":
  app.run(main)
