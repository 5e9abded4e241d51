"""Running experiments: one config to a trained, evaluated, reported run.

``run_experiment(config)`` builds a ``Trainer``, runs it (resuming from
``workdir/checkpoints`` when present), and saves ``plot.png`` (pass@k of the
base and the final policy, and held-out token entropy over training) next to
``metrics.jsonl``. ``results_table`` formats final evaluations side by side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax

from divrl import tables
from divrl.rl import logging as rl_logging
from divrl.rl.trainer import Trainer, entropy_curve, pass_at_k_of

TABLE_COLUMNS = ("pass@1", "pass@16", "distinct", "solution_entropy",
                 "token_entropy", "kl_base", "accuracy")
# Task-specific diversity columns, shown when a task reports them.
TASK_COLUMNS = ("rare_found",)


def quiet_logs() -> None:
  """Silences absl INFO/WARNING lines (TPU probing, TFDS configs) and TFDS
  progress bars in command-line runs; errors still print."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.ERROR)
  tfds.disable_progress_bar()


def table_row(evaluation: Mapping[str, float]) -> dict[str, float]:
  """The summary columns of one ``Trainer.evaluate()`` dict (and the task
  columns it has, e.g. ``rare_found``: the share of prompts with a correct
  sample of the planted rare family), named as ``divrl.tables`` names
  them (``kl_base`` is the k3 estimate)."""
  m = tables.eval_metrics(evaluation)
  row = {c: m.get(c, float("nan")) if c.startswith("pass@") else m[c]
         for c in TABLE_COLUMNS}
  row.update({c: m[c] for c in TASK_COLUMNS if c in m})
  return row


def run_experiment(config, *, trainer: Trainer | None = None,
                   log=print) -> dict[str, Any]:
  """Trains and evaluates ``config``; returns the ``Trainer.run`` result."""
  trainer = trainer or Trainer(config, log=log)
  result = trainer.run()
  if result["final"] is not None and jax.process_index() == 0:
    base = result["evals"][0][1] if result["evals"][0][0] == 0 else None
    curves = {"final": pass_at_k_of(result["final"])}
    if base is not None:
      curves = {"base": pass_at_k_of(base), **curves}
    if config.log.plot:
      rl_logging.save_plots(os.path.join(trainer.workdir, "plot.png"), curves,
                            {"policy": entropy_curve(result)})
    with open(os.path.join(trainer.workdir, "final_eval.json"), "w") as f:
      json.dump({"final": result["final"], "base": base}, f, indent=1)
  return result


def results_table(results: Mapping[str, Mapping[str, Any]], *,
                  include_base: bool = True) -> str:
  """A plain-text table of final evaluations (and the base, once)."""
  rows = {}
  for name, result in results.items():
    evals = result["evals"]
    if include_base and evals and evals[0][0] == 0 and "base" not in rows:
      rows["base"] = table_row(evals[0][1])
    if result["final"] is not None:
      rows[name] = table_row(result["final"])
  extra = [c for c in TASK_COLUMNS if any(c in r for r in rows.values())]
  return rl_logging.summary_table(rows, list(TABLE_COLUMNS) + extra)
