"""scripts.reproduce's machinery: a table's --quick grid end to end, the run
cache shared between tables, and the pre-registration guards.

The quick grid is Table 0 (experiments/tables/calibration.py) at 1 seed with
the quick overrides (a base pre-trained 30 steps, 3 RL steps, 8 prompts x 16
samples): it checks that every results file is written and consistent with
the runs, not any number.
"""

import importlib
import json
import os
import pathlib
import subprocess

import pytest

from divrl import config as config_lib
from divrl import tables
from divrl.rl import reproduce

ROOT = pathlib.Path(__file__).resolve().parents[2]
TABLE_FILES = sorted(p.stem for p in (ROOT / "experiments" / "tables").glob(
    "*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("reproduce")
  module = importlib.import_module("experiments.tables.calibration")
  paths = reproduce.run_table(module, root=str(ROOT), out_dir=str(root / "out"),
                              cache=str(root / "cache"), seeds=1, quick=True,
                              command="test", log=lambda *_: None)
  return module, root, paths


def test_quick_table_writes_every_file(quick_run):
  module, _, paths = quick_run
  table = module.TABLE
  for kind in ("md", "csv", "curves", "png"):
    assert os.path.getsize(paths[kind]) > 0, kind
  rows = tables.read_csv(paths["csv"])
  assert [r["method"] for r in rows] == list(table.methods)
  assert all(r["seed"] == 0 for r in rows)
  # The base cells train 0 steps, the GRPO cells the quick cap (3).
  steps = {r["method"]: r["steps"] for r in rows}
  assert steps == {"countdown_base": 0, "countdown_grpo": 3, "rare_base": 0,
                   "rare_grpo": 3}
  assert len({r["key"] for r in rows}) == 4
  for r in rows:
    assert 0 <= r["pass@1"] <= r["pass@16"] <= 1
    assert r["commit"] and r["machine"] and r["wall_time"] > 0
    assert r["new_solutions"] >= 0
  text = pathlib.Path(paths["md"]).read_text()
  assert "Quick run" in text and table.title in text
  # The protocol is the table file and the experiment modules it is built
  # from.
  for f in ("experiments/tables/calibration.py", "experiments/common.py",
            "experiments/countdown/base.py", "experiments/rare/base.py"):
    assert f"`{f}`" in text, f
  for claim in table.claims:
    assert f"### {claim.name}" in text
  assert text.count("a paired test needs at least 2 seeds") == len(
      table.claims)
  curves = tables.read_csv(paths["curves"])
  assert {(c["method"], c["step"]) for c in curves} >= {
      ("countdown_grpo", 0), ("countdown_grpo", 3)}


def test_the_cache_serves_a_second_run(quick_run, monkeypatch):
  module, root, first = quick_run
  def no_training(*a, **k):
    raise AssertionError("a cached run was trained again")
  monkeypatch.setattr(reproduce.experiment, "Trainer", no_training)
  paths = reproduce.run_table(module, root=str(ROOT),
                              out_dir=str(root / "again"),
                              cache=str(root / "cache"), seeds=1, quick=True,
                              command="test", log=lambda *_: None)
  assert (pathlib.Path(paths["csv"]).read_text()
          == pathlib.Path(first["csv"]).read_text())
  record = json.loads(next((root / "cache").glob("*/record.json"))
                      .read_text())
  for field in ("key", "config", "commit", "dirty", "machine", "wall_time",
                "evals", "history", "solutions"):
    assert field in record, field


def test_run_key_ignores_locations_not_hyperparameters():
  c = config_lib.default_config()
  key = reproduce.run_key(c)
  c.workdir, c.task.data_dir, c.base.cache_root = "a", "b", "c"
  c.log.tensorboard, c.checkpoint.every = False, 7
  assert reproduce.run_key(c) == key
  c.train.learning_rate = 1e-5
  assert reproduce.run_key(c) != key
  assert reproduce.run_key(config_lib.default_config(), "m") != key


def test_overrides_name_unknown_keys():
  c = config_lib.default_config()
  reproduce.apply_overrides(c, {"train.steps": 4})
  assert c.train.steps == 4
  with pytest.raises(ValueError, match="nope"):
    reproduce.apply_overrides(c, {"train.nope": 1})


def _git(cwd, *args):
  subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_preregistration_guards(tmp_path):
  repo = tmp_path / "repo"
  (repo / "experiments" / "tables").mkdir(parents=True)
  table_file = repo / "experiments" / "tables" / "t.py"
  table_file.write_text("x = 1\n")
  _git(repo, "init", "-q")
  _git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "add", ".")
  _git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm",
       "protocol")
  rel = "experiments/tables/t.py"
  assert not reproduce.path_is_dirty(str(repo), rel)
  protocol = reproduce.last_commit_of(str(repo), rel)
  assert len(protocol) == 40
  table_file.write_text("x = 2\n")
  assert reproduce.path_is_dirty(str(repo), rel)

  class Module:
    __file__ = str(table_file)
    TABLE = tables.Table(name="t", title="T", claim="c", protocol="p",
                         methods=("a",))
    get_config = staticmethod(lambda arg=None: config_lib.default_config())

  assert reproduce.protocol_files(Module, str(repo)) == [rel]
  with pytest.raises(ValueError, match="uncommitted changes"):
    reproduce.run_table(Module, root=str(repo), out_dir=str(tmp_path / "o"),
                        cache=str(tmp_path / "c"))
  table_file.write_text("x = 1\n")
  (tmp_path / "o").mkdir()
  (tmp_path / "o" / "t.md").write_text("- protocol commit: `other`\n")
  with pytest.raises(ValueError, match="another protocol commit"):
    reproduce.run_table(Module, root=str(repo), out_dir=str(tmp_path / "o"),
                        cache=str(tmp_path / "c"))


@pytest.mark.parametrize("name", TABLE_FILES)
def test_every_table_file_builds_every_cell(name):
  module = importlib.import_module(f"experiments.tables.{name}")
  table = tables.load_table(module)
  assert table.name == name
  keys = set()
  for method in table.methods:
    c = module.get_config(f"method={method},seed=1")
    assert c.seed == 1
    keys.add(reproduce.run_key(c))
  assert len(keys) == len(table.methods)  # no two methods are the same run
  with pytest.raises(ValueError, match="method"):
    module.get_config("method=not_a_method")


def test_derive_adds_grid_metrics_without_new_runs(quick_run, monkeypatch):
  import types
  module, root, _ = quick_run

  def derive(records):
    # A cross-run metric: each run's final pass@1 minus its seed's base's.
    base = {s: r["evals"][-1][1]["eval/pass@1"]
            for (m, s), r in records.items() if m == "countdown_base"}
    return {(m, s): {"gain": r["evals"][-1][1]["eval/pass@1"] - base[s]}
            for (m, s), r in records.items() if m.startswith("countdown")}

  def no_training(*a, **k):
    raise AssertionError("a cached run was trained again")
  monkeypatch.setattr(reproduce.experiment, "Trainer", no_training)
  table_module = types.SimpleNamespace(TABLE=module.TABLE,
                                       get_config=module.get_config,
                                       derive=derive)
  paths = reproduce.run_table(table_module, root=str(ROOT),
                              out_dir=str(root / "derived"),
                              cache=str(root / "cache"), seeds=1, quick=True,
                              command="test", log=lambda *_: None)
  rows = {r["method"]: r for r in tables.read_csv(paths["csv"])}
  assert rows["countdown_base"]["gain"] == 0.0
  assert rows["countdown_grpo"]["gain"] == pytest.approx(
      rows["countdown_grpo"]["pass@1"] - rows["countdown_base"]["pass@1"])
  assert rows["rare_grpo"]["gain"] == ""
