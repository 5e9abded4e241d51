"""Running a reproduction table: its grid of runs, cached by config hash.

``run_table(module, ...)`` builds every cell ``get_config("method=<m>,
seed=<s>")`` of a table file, runs the ones the cache does not hold, and
writes the results files (``divrl.tables``). The cache, ``<cache>/<key>/
record.json``, is shared by every table: a run's key is the hash of its
config without where files live (the workdir, the data and base
directories) and without what only changes logging, so a GRPO baseline that
two tables define identically runs once. Each record keeps the git commit
(and whether the tree had uncommitted changes), the machine, the wall time,
the config, every evaluation and the training history.

A table file may define ``derive(records) -> {(method, seed): {name:
value}}``: metrics computed from the cached records of the whole grid (e.g.
the samples a method needs to reach the GRPO run's final reward on the same
seed); they do not change any run, so the runs stay shared.

A table file may define ``measure(trainer, quick) -> dict``: it replaces the
default ``trainer.run()`` and returns ``{"evals": [...], "history": [...],
"extras": {name: value}}`` (for a table that measures, say, gradient
variance at checkpoints rather than training to the end). Its records get
their own keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax

from divrl import tables as tables_lib
from divrl.rl import experiment
from divrl.rl import logging as rl_logging

# Config keys that say where files go or how much is logged, not what runs.
_NOT_IN_KEY = ("workdir", "log", "checkpoint")
_NOT_IN_KEY_TASK = ("data_dir", "use_tfds")
_NOT_IN_KEY_BASE = ("cache_root",)


def run_key(config, salt: str = "") -> str:
  """A short hash of everything in ``config`` that changes a run's numbers
  (and of ``salt``, e.g. a table's own measurement)."""
  d = config.to_dict()
  for k in _NOT_IN_KEY:
    d.pop(k, None)
  for k in _NOT_IN_KEY_TASK:
    d["task"].pop(k, None)
  for k in _NOT_IN_KEY_BASE:
    d["base"].pop(k, None)
  blob = json.dumps({"config": d, "salt": salt}, sort_keys=True,
                    default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def _git(root: str, *args: str) -> str | None:
  """The stripped output of ``git <args>`` in ``root``; None outside a git
  checkout (or when git fails)."""
  try:
    return subprocess.run(["git", *args], cwd=root, capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def git_state(root: str) -> tuple[str, bool]:
  """``(HEAD commit, whether tracked files differ from it)``; ``("unknown",
  False)`` outside a git checkout."""
  commit = _git(root, "rev-parse", "HEAD")
  status = _git(root, "status", "--porcelain", "--untracked-files=no")
  if commit is None or status is None:
    return "unknown", False
  return commit, bool(status)


def protocol_files(module, root: str) -> list[str]:
  """The table file and every module under ``<root>/experiments`` loaded
  when its cells were built (the task settings it is made of), relative to
  ``root``: together they are the protocol."""
  if getattr(module, "__file__", None) is None:
    return []   # a table defined in a notebook: never pre-registered
  own = os.path.relpath(module.__file__, root)
  found = {own}
  exp = os.path.join(os.path.abspath(root), "experiments") + os.sep
  for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f and os.path.abspath(f).startswith(exp) and not f.endswith(
        "__init__.py"):
      rel = os.path.relpath(os.path.abspath(f), root)
      # Other table files are other protocols.
      if not (rel.startswith(os.path.join("experiments", "tables", ""))
              and not os.path.basename(rel).startswith("_")):
        found.add(rel)
  return sorted(found)


def last_commit_of(root: str, *paths: str) -> str:
  """The last commit that touched any of ``paths`` (``"uncommitted"`` if
  none)."""
  out = _git(root, "log", "-1", "--format=%H", "--", *paths)
  if out is None:
    return "unknown"
  return out or "uncommitted"


def path_is_dirty(root: str, path: str) -> bool:
  """Whether ``path`` differs from HEAD or is untracked."""
  return bool(_git(root, "status", "--porcelain", "--", path))


def machine() -> str:
  """The CPU model, its core count and the JAX version."""
  return (f"{rl_logging.cpu_model()}, {os.cpu_count()} cores,"
          f" jax {jax.__version__}")


def _jsonable(x):
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if hasattr(x, "item"):
    return x.item()
  return x


def train_to_checkpoint(trainer) -> list:
  """Trains ``trainer`` to ``train.steps`` (its checkpoint), then evaluates
  once: the ``evals`` of a ``measure`` that measures at a checkpoint
  (``[(0, base evaluation)]`` for a 0-step checkpoint). The history is kept
  in ``trainer.history``."""
  while trainer.step < trainer.config.train.steps:
    trainer.history.append({"step": trainer.step + 1,
                            **trainer.train_step()})
  return [(trainer.step, trainer.evaluate())]


REDRAW_KEY = 10**6 + 1   # the base's second draw (the eval key is 10**6)


def solution_sets(trainer) -> dict[str, list[list[str]]]:
  """The distinct correct solutions per held-out prompt of the base
  (``"base"``, the run's step-0 evaluation) and of the final policy
  (``"final"``). For a run of 0 steps, ``"final"`` is a second, independent
  draw of the base's samples (eval key ``REDRAW_KEY``), so that what a
  policy finds outside the base's draw can be set against what resampling
  the base finds."""
  sets = trainer.eval_solutions
  out = {"base": sets[0]}
  if trainer.step == 0:
    trainer.evaluate(params=trainer.base_params,
                     key=jax.random.fold_in(trainer.root_key, REDRAW_KEY))
    out["final"] = trainer.last_solutions
  else:
    out["final"] = sets[trainer.step]
  return out


def run_cell(config, *, cache: str, root: str, salt: str = "",
             measure: Callable[..., Mapping[str, Any]] | None = None,
             code_state: tuple[str, bool] | None = None,
             quick: bool = False, log=print) -> tuple[dict[str, Any], bool]:
  """``(record, cached)``: the record of ``config``, from the cache
  (``cached`` True) or trained and stored.

  The run's workdir is ``<cache>/<key>/run``; nothing is checkpointed (a
  cut-off run starts again), and the record is written only when the run
  finished, so the cache never holds a partial run.
  """
  key = run_key(config, salt)
  path = os.path.join(cache, key, "record.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f), True
  config = config.copy_and_resolve_references()
  config.unlock()
  config.workdir = os.path.join(cache, key, "run")
  config.checkpoint.every = 0
  config.log.tensorboard = False
  config.log.progress = False
  config.log.plot = False
  # The code a process runs is the code it imported when it started.
  commit, dirty = code_state or git_state(root)
  t0 = time.perf_counter()
  trainer = experiment.Trainer(config, log=log)
  if measure is None:
    result = trainer.run()
    out = {"evals": result["evals"], "history": result["history"],
           "extras": {}, "solutions": solution_sets(trainer)}
  else:
    out = dict(measure(trainer, quick=quick))
  record = {"key": key, "config": config.to_dict(), "commit": commit,
            "dirty": dirty, "machine": machine(),
            "wall_time": time.perf_counter() - t0,
            "evals": out["evals"], "history": out.get("history", []),
            "extras": dict(out.get("extras", {})),
            "solutions": out.get("solutions", {})}
  record = _jsonable(record)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f)
  os.replace(tmp, path)
  return record, False


def apply_overrides(config, overrides: Mapping[str, Any]) -> None:
  """Sets dotted keys (``"train.steps": 3``); an unknown key is an error."""
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      if p not in node:
        raise ValueError(f"override {dotted!r}: no config key {p!r}.")
      node = node[p]
    if leaf not in node:
      raise ValueError(f"override {dotted!r}: no config key {leaf!r}.")
    node[leaf] = value


def cell_configs(module, table: tables_lib.Table, *, seeds: int,
                 quick: bool, data_dir: str, bases: str):
  """``[(method, seed, config)]`` of the grid, method-major."""
  out = []
  for method in table.methods:
    for seed in range(seeds):
      c = module.get_config(f"method={method},seed={seed}")
      if quick:
        overrides = tables_lib.quick_overrides(table)
        # A cap: a method that trains 0 steps (the base) keeps 0.
        overrides["train.steps"] = min(c.train.steps,
                                       overrides["train.steps"])
        apply_overrides(c, overrides)
      c.task.data_dir = data_dir
      c.base.cache_root = bases
      out.append((method, seed, c))
  return out


def run_table(module, *, root: str, out_dir: str, cache: str,
              seeds: int | None = None, quick: bool = False,
              command: str = "", log=print) -> dict[str, str]:
  """Runs (or reads from the cache) every cell of the table file
  ``module`` and writes ``<out_dir>/<name>.{md,csv,curves.csv,png}``.

  Returns the paths written. A full run (not ``quick``) refuses a
  protocol with uncommitted changes (the table file or an experiment module
  it is built from, ``protocol_files``): the protocol is committed before
  its results exist. It also refuses to overwrite results of another
  protocol commit.
  """
  table = tables_lib.load_table(module)
  seeds = table.seeds if seeds is None else seeds
  if seeds < 1:
    raise ValueError(f"seeds must be >= 1, got {seeds}.")
  # Bases and task data live beside the cache (runs/tables/{bases,tfds}).
  beside = os.path.dirname(cache.rstrip("/"))
  bases, data_dir = (os.path.join(beside, d) for d in ("bases", "tfds"))
  # Building the cells imports every experiment module the protocol uses.
  cells = cell_configs(module, table, seeds=seeds, quick=quick,
                       data_dir=data_dir, bases=bases)
  paths_used = protocol_files(module, root)
  if not paths_used and not quick:
    raise ValueError(
        f"table {table.name!r} has no file: only a table file under"
        " experiments/tables can be pre-registered and run in full; run it"
        " with quick=True.")
  protocol = (last_commit_of(root, *paths_used) if paths_used
              else "none (not a table file)")
  existing = os.path.join(out_dir, table.name + ".md")
  if not quick:
    dirty = [p for p in paths_used if path_is_dirty(root, p)]
    if dirty:
      raise ValueError(
          f"{', '.join(dirty)} has uncommitted changes: commit the protocol"
          " before running it (pre-registration), or use --quick for a"
          " smoke run.")
    if os.path.exists(existing):
      with open(existing) as f:
        text = f.read()
      if f"protocol commit: `{protocol}`" not in text:
        raise ValueError(
            f"{existing} holds results of another protocol commit than"
            f" {protocol}: a protocol is not changed after its results"
            " exist. Keep that file, and register the corrected protocol as"
            " a new table file (e.g. <name>_v2) whose results sit beside"
            " it.")
  measure = getattr(module, "measure", None)
  salt = f"{table.name}.measure" if measure is not None else ""
  code_state = git_state(root)
  records = {}
  rows, curves, commits = [], [], []
  wall = new_wall = 0.0
  for method, seed, config in cells:
    log(f"== {table.name}: {method}, seed {seed} ==")
    record, cached = run_cell(config, cache=cache, root=root, salt=salt,
                      measure=measure, code_state=code_state,
                      quick=quick, log=log)
    log(f"   {record['key']}: {record['wall_time']:.0f} s")
    records[(method, seed)] = record
    rows.append(tables_lib.row_of(record, table=table.name, method=method,
                                  seed=seed))
    curves += tables_lib.curve_rows(record, method=method, seed=seed)
    commits.append(record["commit"] + ("+dirty" if record["dirty"] else ""))
    wall += float(record["wall_time"])
    if not cached:
      new_wall += float(record["wall_time"])
  derive = getattr(module, "derive", None)
  if derive is not None:
    derived = derive(records)
    for row in rows:
      row.update({k: float(v) for k, v in
                  derived.get((row["method"], row["seed"]), {}).items()})
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, table.name)
  paths = {"csv": stem + ".csv", "curves": stem + ".curves.csv",
           "png": stem + ".png", "md": stem + ".md"}
  tables_lib.write_csv(paths["csv"], rows)
  tables_lib.write_csv(paths["curves"], curves)
  tables_lib.save_plot(paths["png"], table, rows, curves)
  md = tables_lib.markdown(
      table, rows, protocol_commit=protocol,
      run_commits=commits, command=command, wall_time=wall,
      new_wall_time=new_wall,
      machine=machine(), quick=quick, plot=os.path.basename(paths["png"]),
      protocol_files=paths_used)
  with open(paths["md"], "w") as f:
    f.write(md + "\n")
  return paths
