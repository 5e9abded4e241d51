"""docs/catalog.md covers every seed paper in docs/seed_titles.txt.

The catalog is written by hand; these tests keep it honest: every seed title
has a row, every status is one of the four allowed values, and every name in
the parts column is a registered part or a recipe.
"""

import pathlib
import re

from divrl import recipes, registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
TITLES = ROOT / "docs" / "seed_titles.txt"
CATALOG = ROOT / "docs" / "catalog.md"

STATUSES = ("implemented", "partial", "not yet", "out of scope")
HEADER = ("paper (exact title)", "divrl parts / recipes", "status", "note")


def _titles():
  return [t for t in TITLES.read_text(encoding="utf-8").split("\n") if t]


def _rows():
  """The catalog table's rows as 4-tuples of stripped cells."""
  rows = []
  in_table = False
  for line in CATALOG.read_text(encoding="utf-8").splitlines():
    if not line.startswith("|"):
      in_table = False
      continue
    cells = tuple(c.strip() for c in line.strip().strip("|").split(" | "))
    if cells == HEADER:
      in_table = True
      continue
    if not in_table or set(line) <= set("|- "):
      continue
    assert len(cells) == 4, f"row without 4 cells: {line!r}"
    rows.append(cells)
  return rows


def test_seed_titles_file_is_sorted_and_unique():
  titles = _titles()
  assert titles, "docs/seed_titles.txt is empty"
  assert titles == sorted(set(titles))


def test_every_seed_title_is_in_the_catalog():
  text = CATALOG.read_text(encoding="utf-8")
  missing = [t for t in _titles() if t not in text]
  assert not missing, "seed titles missing from docs/catalog.md:\n" + (
      "\n".join(missing))


def test_one_row_per_seed_title():
  firsts = [r[0] for r in _rows()]
  titles = set(_titles())
  assert sorted(set(firsts)) == sorted(firsts), "duplicate rows"
  unknown = [f for f in firsts if f not in titles]
  assert not unknown, f"rows that are not seed titles: {unknown}"
  assert len(firsts) == len(titles)


def test_every_status_is_allowed():
  rows = _rows()
  assert rows
  bad = [(r[0], r[2]) for r in rows if r[2] not in STATUSES]
  assert not bad, f"statuses not in {STATUSES}: {bad}"


def test_every_named_part_is_registered():
  known = set(recipes.names())
  for kind in registry.KINDS:
    known.update(registry.names(kind))
  bad = []
  for title, parts, _, _ in _rows():
    for name in re.findall(r"`([^`]+)`", parts):
      if name not in known:
        bad.append((title, name))
  assert not bad, f"not a registered part or recipe: {bad}"


def test_the_counts_sentence_matches_the_table():
  text = " ".join(CATALOG.read_text(encoding="utf-8").split())
  m = re.search(r"In all, (\d+) seed papers: (\d+) implemented, (\d+)"
                r" partial, (\d+) not yet, (\d+) out of scope\.", text)
  assert m, "the 'In all, ...' sentence is missing from docs/catalog.md"
  statuses = [r[2] for r in _rows()]
  want = [len(statuses)] + [statuses.count(s) for s in STATUSES]
  assert [int(x) for x in m.groups()] == want
