"""docs/objectives.md is generated from the registry and must be current."""

import pathlib

from divrl import docgen, registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_objectives_doc_is_up_to_date():
  want = docgen.render(ROOT / "tests")
  got = (ROOT / "docs" / "objectives.md").read_text()
  assert got == want, "run: python scripts/objectives_doc.py"


def test_every_part_is_cited_and_tested():
  text = docgen.render(ROOT / "tests")
  checked = False
  for line in text.splitlines():
    cells = [c.strip() for c in line.split(" | ")]
    if line.startswith("| `") and len(cells) == 6:  # part rows
      assert cells[2], f"no citation for {cells[0]}"
      assert cells[3] in ("exact", "inspired by"), cells[0]
      assert "**none**" not in cells[5], f"no test names {cells[0]}"
      checked = True
  assert checked


def test_every_registered_part_is_listed():
  text = (ROOT / "docs" / "objectives.md").read_text()
  for kind in registry.KINDS:
    for name in docgen.library_parts(kind):
      assert f"| `{name}` |" in text, (kind, name)


def test_formula_column_follows_the_docstrings():
  assert docgen.formula_status("Exact to the released code.") == "exact"
  assert docgen.formula_status(None, "We chose ... Inspired by\n  X: the"
                               " form is ours.") == "inspired by"
  rows = {line.split(" | ")[0][3:-1]: line.split(" | ")[3]
          for line in docgen.render(ROOT / "tests").splitlines()
          if line.startswith("| `") and len(line.split(" | ")) == 6}
  # A part whose docstring says "Inspired by", and one checked against code.
  assert rows["ttrv_reward"] == "inspired by"
  assert rows["lp_reg"] == "exact"
