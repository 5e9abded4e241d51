"""Reproduction tables: what a table file declares, and how its runs become
a results table with confidence intervals and verdicts.

A table file, ``experiments/tables/<name>.py``, is an experiment file (it has
``get_config(arg)``, so ``scripts.train`` runs any one cell of it) that also
defines ``TABLE = Table(...)``: the grid of methods x seeds, the metrics,
and the claims with the test each rests on. ``scripts.reproduce`` runs the
grid (``divrl.rl.reproduce``) and hands the runs to the functions below,
which write ``<name>.md``, ``<name>.csv``, ``<name>.curves.csv`` and
``<name>.png``. See ``docs/reproducing.md``.

Everything in this module is NumPy, SciPy and (for the plot) matplotlib; a
table file that imports it loads no JAX.

A *run record* is one trained and evaluated config, as the run cache stores
it: ``{"key", "config", "commit", "dirty", "machine", "wall_time", "evals":
[[step, {metric: value}], ...], "history": [...], "extras": {...}}``. A *row*
is a run record flattened for one table: ``method``, ``seed``, the final
metrics (``pass@k`` for k = 1 ... 256, ``distinct``, ``token_entropy``,
``kl_base``, ...) and the table's extras.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from divrl import verdicts
from divrl.verdicts import Claim  # noqa: F401  (re-exported for table files)

# The summary columns of every table, in order, when a run reports them.
COLUMNS = ("pass@1", "pass@16", "pass@256", "distinct", "token_entropy",
           "kl_base", "rare_found")
# Curves over training, from the evaluations during a run.
CURVES = ("pass@1", "pass@256", "distinct", "token_entropy", "kl_base",
          "rare_found")
# Metric names of the CSV that are not metrics.
ID_FIELDS = ("table", "method", "seed", "key", "steps", "commit", "dirty",
             "wall_time", "machine")


@dataclasses.dataclass(frozen=True)
class Table:
  """A pre-registered reproduction table.

  Attributes:
    name: the file stem (``experiments/tables/<name>.py``) and the results
      stem (``results/tables/<name>.*``).
    title: one line, e.g. ``"Table 1: sharpening"``.
    claim: the paper's claim in words, with its source.
    protocol: task, base, steps, hyperparameters, metrics and test, in
      words; the results file prints it verbatim.
    methods: the grid's rows; ``get_config("method=<m>,seed=<s>")`` builds
      each cell.
    seeds: seeds ``0 ... seeds - 1``; every method runs every seed, and seed
      ``s`` fixes the base, the data split and the prompt order, so two
      methods pair seed by seed.
    claims: the claims and their tests (``divrl.verdicts.Claim``).
    columns: the summary columns (defaults to ``COLUMNS``); extras the table
      file measures may be named here.
    quick: config overrides (dotted keys) of ``--quick``: a smoke run of the
      grid in a few minutes, never a result.
  """

  name: str
  title: str
  claim: str
  protocol: str
  methods: tuple[str, ...]
  claims: tuple[verdicts.Claim, ...] = ()
  seeds: int = 3
  columns: tuple[str, ...] = COLUMNS
  quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.methods or len(set(self.methods)) != len(self.methods):
      raise ValueError(f"Table {self.name!r}: methods must be distinct and"
                       f" non-empty, got {self.methods}.")
    if self.seeds < 1:
      raise ValueError(f"Table {self.name!r}: seeds must be >= 1, got"
                       f" {self.seeds}.")
    for c in self.claims:
      for role in ("treatment", "control"):
        if role == "control" and c.control is None:
          continue
        if getattr(c, role) not in self.methods:
          raise ValueError(
              f"Table {self.name!r}, claim {c.name!r}: {role}"
              f" {getattr(c, role)!r} is not one of the methods"
              f" {self.methods}.")


# Quick overrides every table gets (a table's own ``quick`` wins).
QUICK = {"train.steps": 3, "eval.every": 0, "eval.num_prompts": 8,
         "eval.num_samples": 16, "base.pretrain.steps": 30}


def quick_overrides(table: Table) -> dict[str, Any]:
  return {**QUICK, **dict(table.quick)}


# ------------------------------------------------------------ records --


def _metric_name(name: str) -> str | None:
  """``eval/pass@4`` -> ``pass@4``; ``eval/kl_base_k3`` -> ``kl_base``."""
  if not name.startswith("eval/"):
    return None
  short = name[len("eval/"):]
  if short == "kl_base_k3":
    return "kl_base"
  if short == "kl_base_k1":
    return None
  return short


def eval_metrics(evaluation: Mapping[str, float]) -> dict[str, float]:
  """The short metric names of one ``Trainer.evaluate()`` dict."""
  out = {}
  for name, value in evaluation.items():
    short = _metric_name(name)
    if short is not None:
      out[short] = float(value)
  return out


def support_metrics(solutions: Mapping[str, Sequence[Sequence[str]]]
                    ) -> dict[str, float]:
  """What a policy finds against its base's draw, from a record's
  ``solutions`` (``{"base": sets, "final": sets}``, one set of distinct
  correct solutions per held-out prompt):

  * ``new_solutions``: distinct correct solutions per prompt in the final
    draw but not in the base's (for a 0-step run, a second base draw: what
    resampling alone finds);
  * ``base_kept``: the share of the base draw's solutions that the final
    draw also finds (over prompts where the base found any).
  """
  base, final = solutions["base"], solutions["final"]
  if len(base) != len(final):
    raise ValueError(f"solutions: {len(base)} base prompts and {len(final)}"
                     " final prompts.")
  new = [len(set(f) - set(b)) for b, f in zip(base, final)]
  kept = [len(set(f) & set(b)) / len(b) for b, f in zip(base, final) if b]
  return {"new_solutions": sum(new) / max(len(new), 1),
          "base_kept": sum(kept) / len(kept) if kept else float("nan")}


def row_of(record: Mapping[str, Any], *, table: str, method: str,
           seed: int) -> dict[str, Any]:
  """One CSV row: the run's ids, its final metrics and its extras."""
  step, final = record["evals"][-1]
  return {"table": table, "method": method, "seed": int(seed),
          "key": record["key"], "steps": int(step),
          "commit": record["commit"], "dirty": bool(record["dirty"]),
          "wall_time": round(float(record["wall_time"]), 1),
          "machine": record["machine"],
          **eval_metrics(final),
          **(support_metrics(record["solutions"])
             if record.get("solutions") else {}),
          **{k: float(v) for k, v in record.get("extras", {}).items()}}


def curve_rows(record: Mapping[str, Any], *, method: str,
               seed: int) -> list[dict[str, Any]]:
  """The evaluations over training: one row per evaluated step."""
  out = []
  for step, evaluation in record["evals"]:
    m = eval_metrics(evaluation)
    out.append({"method": method, "seed": int(seed), "step": int(step),
                **{c: m[c] for c in CURVES if c in m}})
  return out


def pass_ks(rows: Sequence[Mapping[str, Any]]) -> list[int]:
  """The ``k`` of every ``pass@k`` column all rows have, ascending."""
  ks = None
  for r in rows:
    have = {int(n[len("pass@"):]) for n in r
            if n.startswith("pass@") and n[len("pass@"):].isdigit()}
    ks = have if ks is None else ks & have
  return sorted(ks or ())


def by_method(rows: Sequence[Mapping[str, Any]]
              ) -> dict[str, dict[str, list[float]]]:
  """``{method: {metric: [value per seed, in seed order]}}``."""
  out: dict[str, dict[str, list[float]]] = {}
  for r in sorted(rows, key=lambda r: (r["method"], int(r["seed"]))):
    cell = out.setdefault(r["method"], {})
    for name, value in r.items():
      if name in ID_FIELDS or value is None or value == "":
        continue
      cell.setdefault(name, []).append(float(value))
  return out


def outcomes(table: Table, rows: Sequence[Mapping[str, Any]]
             ) -> list[verdicts.Outcome | str]:
  """Each claim's outcome, or a sentence saying why it has none (fewer
  than 2 paired seeds, as in ``--quick``)."""
  results = by_method(rows)
  out = []
  for claim in table.claims:
    pair = (claim.treatment, claim.control or claim.treatment)
    seeds = {m: {int(r["seed"]) for r in rows if r["method"] == m}
             for m in pair}
    if len(seeds[pair[0]] & seeds[pair[1]]) < 2:
      out.append("none: a paired test needs at least 2 seeds.")
      continue
    bad = [f"{m}: {metric}" for m, metric in zip(pair, claim.metrics)
           if not all(math.isfinite(v)
                      for v in results.get(m, {}).get(metric, []))]
    if bad:
      out.append("none: non-finite values (" + "; ".join(bad) + ").")
      continue
    out.append(verdicts.evaluate(claim, results))
  return out


# ------------------------------------------------------------ writing --


def _cell(values: Sequence[float], digits: int = 3) -> str:
  if not all(math.isfinite(v) for v in values):
    return "non-finite: " + ", ".join(f"{v:.{digits}g}" for v in values)
  mean, lo, hi = verdicts.mean_interval(values)
  if math.isnan(lo):
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in body]
  return "\n".join(lines)


def _sign(direction: str) -> str:
  return ">" if direction == "greater" else "<"


def claim_text(claim: verdicts.Claim) -> str:
  mt, mc = claim.metrics
  right = (f"{mc}({claim.control})" if claim.control is not None
           else f"{claim.value:g}")
  return f"{mt}({claim.treatment}) {_sign(claim.direction)} {right}"


def test_text(claim: verdicts.Claim) -> str:
  kind = ("t-interval" if claim.test == "paired_t"
          else "percentile bootstrap")
  if claim.control is None:
    return (f"one-sample {kind} of the mean of {claim.metric} -"
            f" {claim.value:g} over seeds, {claim.confidence:.0%}")
  return (f"paired {kind} of the mean difference over seeds, "
          f"{claim.confidence:.0%}")


def markdown(table: Table, rows: Sequence[Mapping[str, Any]], *,
             protocol_commit: str, run_commits: Sequence[str],
             command: str, wall_time: float, machine: str,
             quick: bool = False, plot: str | None = None,
             protocol_files: Sequence[str] = (),
             new_wall_time: float | None = None) -> str:
  """The results file: protocol, the summary table with 95% t-intervals,
  the pass@k curve, and each claim with its test and verdict."""
  results = by_method(rows)
  methods = [m for m in table.methods if m in results]
  seeds = sorted({int(r["seed"]) for r in rows})
  out = [f"# {table.title}", ""]
  if quick:
    out += ["**Quick run (`--quick`): a smoke test of the grid, not a"
            " result.**", ""]
  out += [f"**Claim.** {table.claim}", "",
          "## Protocol", "", table.protocol.strip(), "",
          f"- protocol commit: `{protocol_commit}` (the last commit of the"
          " protocol's files before these runs: "
          + (", ".join(f"`{p}`" for p in protocol_files)
             or f"`experiments/tables/{table.name}.py`") + ")",
          f"- runs made at commit(s): "
          + ", ".join(f"`{c}`" for c in sorted(set(run_commits))),
          f"- command: `{command}`",
          f"- seeds: {', '.join(map(str, seeds))}; machine: {machine};"
          f" wall time of the runs: {wall_time / 60:.1f} minutes"
          + ("" if new_wall_time is None
             or abs(new_wall_time - wall_time) < 1e-6 else
             " (every run came from the run cache)" if new_wall_time == 0
             else f" ({new_wall_time / 60:.1f} minutes for the runs this"
             " command made; the others came from the run cache, shared"
             " with other tables)"), ""]
  cols = [c for c in table.columns
          if any(c in results[m] for m in methods)]
  out += ["## Results", "",
          "Mean over seeds [95% t-interval]; the CSV has every run.", ""]
  body = [[m] + [_cell(results[m][c]) if c in results[m] else "-"
                 for c in cols] for m in methods]
  out += [_md_table(["method"] + cols, body), ""]
  ks = pass_ks(rows)
  if ks:
    out += ["pass@k, mean over seeds [95% t-interval]:", ""]
    body = [[m] + [_cell(results[m][f"pass@{k}"]) for k in ks]
            for m in methods]
    out += [_md_table(["method"] + [f"k={k}" for k in ks], body), ""]
  if plot:
    out += [f"![pass@k, entropy and distinct solutions]({plot})", ""]
  out += ["## Claims", ""]
  for claim, outcome in zip(table.claims, outcomes(table, rows)):
    out.append(f"### {claim.name}")
    out.append("")
    out.append(f"- claim: `{claim_text(claim)}`")
    out.append(f"- test: {test_text(claim)}")
    if isinstance(outcome, str):
      out.append(f"- verdict: {outcome}")
    else:
      out.append(f"- difference: {outcome.difference:+.4f}"
                 f" [{outcome.lo:+.4f}, {outcome.hi:+.4f}]"
                 f" over {outcome.seeds} seeds")
      out.append(f"- verdict: **{outcome.verdict}**")
    out.append("")
  return "\n".join(out)


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]
              ) -> None:
  """Rows to CSV; the header is the union of the rows' keys, ids first."""
  names = [n for n in ID_FIELDS if any(n in r for r in rows)]
  for r in rows:
    names += [n for n in r if n not in names]
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
  writer.writeheader()
  for r in rows:
    writer.writerow(r)
  pathlib.Path(path).write_text(buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
  """A CSV written by ``write_csv``: numbers as floats, ids as written."""
  out = []
  with open(path, newline="") as f:
    for r in csv.DictReader(f):
      row = {}
      for name, text in r.items():
        if name in ("table", "method", "key", "commit", "machine") or text == "":
          row[name] = text
        elif name == "dirty":
          row[name] = text == "True"
        else:
          row[name] = float(text)
      out.append(row)
  return out


def _band(values_by_seed: Sequence[Sequence[float]]):
  """Per point: mean and t-interval over seeds (the mean when one seed)."""
  means, los, his = [], [], []
  for column in zip(*values_by_seed):
    mean, lo, hi = verdicts.mean_interval(column)
    means.append(mean)
    los.append(mean if math.isnan(lo) else lo)
    his.append(mean if math.isnan(hi) else hi)
  return means, los, his


def save_plot(path: str | os.PathLike, table: Table,
              rows: Sequence[Mapping[str, Any]],
              curves: Sequence[Mapping[str, Any]], *,
              dpi: int = 100) -> pathlib.Path:
  """Three panels: pass@k (log2 k) with 95% t-bands over seeds; token
  entropy and distinct correct solutions over training (mean over seeds,
  with bands)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig = Figure(figsize=(15, 4.2))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 3)
  ks = pass_ks(rows)
  methods = [m for m in table.methods if any(r["method"] == m for r in rows)]
  cycle = [f"C{i % 10}" for i in range(len(methods))]
  colors = dict(zip(methods, cycle))
  for m in methods:
    mine = sorted((r for r in rows if r["method"] == m),
                  key=lambda r: r["seed"])
    if ks:
      mean, lo, hi = _band([[r[f"pass@{k}"] for k in ks] for r in mine])
      line, = axes[0].plot(ks, mean, marker="o", ms=3, label=m,
                           color=colors[m])
      axes[0].fill_between(ks, lo, hi, color=line.get_color(), alpha=0.2)
    for ax, metric in ((axes[1], "token_entropy"), (axes[2], "distinct")):
      per_seed = {}
      for c in curves:
        if c["method"] == m and metric in c and c[metric] != "":
          per_seed.setdefault(int(c["seed"]), {})[int(c["step"])] = float(
              c[metric])
      if not per_seed:
        continue
      steps = sorted(set.intersection(*(set(v) for v in per_seed.values())))
      if not steps:
        continue
      mean, lo, hi = _band([[v[s] for s in steps] for v in per_seed.values()])
      if steps == [0]:   # an untrained row (the base): a level, not a curve
        ax.axhline(mean[0], ls="--", lw=1, color=colors[m], label=m)
        continue
      line, = ax.plot(steps, mean, marker="o", ms=3, label=m,
                      color=colors[m])
      ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
  axes[0].set_xscale("log", base=2)
  axes[0].set(xlabel="k", ylabel="pass@k", title="pass@k (95% band)")
  axes[1].set(xlabel="RL step", ylabel="nats / token",
              title="held-out token entropy")
  axes[2].set(xlabel="RL step", ylabel="per prompt",
              title="distinct correct solutions")
  for ax in axes:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(table.title)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  return path


def load_table(module) -> Table:
  """The ``TABLE`` of a table file's module, checked."""
  table = getattr(module, "TABLE", None)
  if not isinstance(table, Table):
    raise ValueError(f"{getattr(module, '__file__', module)} defines no"
                     " TABLE = divrl.tables.Table(...).")
  if not callable(getattr(module, "get_config", None)):
    raise ValueError(f"{getattr(module, '__file__', module)} defines no"
                     " get_config(arg).")
  return table

