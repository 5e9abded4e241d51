"""Writes docs/objectives.md from the part registry."""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from divrl import docgen  # noqa: E402

if __name__ == "__main__":
  out = ROOT / "docs" / "objectives.md"
  out.write_text(docgen.render(ROOT / "tests"))
  print(f"wrote {out}")
