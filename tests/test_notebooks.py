"""Every notebook's code cells run top to bottom with the public API."""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] /
                    "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path):
  cells = json.loads(path.read_text())["cells"]
  code = [("".join(c["source"])) for c in cells if c["cell_type"] == "code"]
  assert code
  namespace = {"__name__": "__notebook__"}
  for i, src in enumerate(code):
    assert "divrl._" not in src and "from divrl._" not in src
    exec(compile(src, f"{path.name}[cell {i}]", "exec"), namespace)


def test_there_is_a_notebook():
  assert NOTEBOOKS
