"""RL run logging: JSONL + TensorBoard, a progress line, a table, plots.

* ``MetricsLogger`` writes one JSON object per ``log`` call to
  ``<logdir>/metrics.jsonl``, the timings of the call (``wall_time``,
  ``time/*``, ``tokens/s``) to ``<logdir>/timings.jsonl``, and, optionally,
  TensorBoard scalars (event files in ``logdir``, via ``tensorboardX``).
  ``read_jsonl`` reads either file back. Keeping the clock out of
  ``metrics.jsonl`` makes it byte-identical between two runs of the same
  config and seed (docs/reliability.md).
* ``ProgressBar`` prints a one-line progress summary to stderr: redrawn in
  place with ``\\r`` on a terminal, one plain line every few steps otherwise
  (CI logs stay readable).
* ``summary_table`` formats a fixed-width plain-text table, one row per run.
* ``save_plots`` draws pass@k against ``k`` (log2 axis) and token entropy
  against the training step into one PNG, with matplotlib's Agg canvas (no
  display, and the global pyplot backend is left alone).

``tensorboardX`` and ``matplotlib`` are imported only when used.

JSONL encoding: every metric value is converted to a Python float (from
Python, NumPy or JAX scalars or size-1 arrays). JSON has no NaN or infinity,
so those are written as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (what ``float()`` parses); ``read_jsonl`` turns them back into
floats, so a round trip is lossless.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import os
import pathlib
import re
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np

_RESERVED = ("step", "wall_time")
# Metrics that measure the clock, not the run: they go to timings.jsonl.
# An entry ending in "/" is a prefix.
DEFAULT_TIMING_KEYS = ("time/", "tokens/s")
_NONFINITE_TO_STR = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_STR_TO_NONFINITE = {"NaN": math.nan, "Infinity": math.inf,
                     "-Infinity": -math.inf}
DEFAULT_PROGRESS_KEYS = ("reward", "pass@1", "entropy", "tokens/s")


def _to_step(step: Any) -> int:
  """An int step from a Python/NumPy/JAX integer scalar."""
  if isinstance(step, (bool, np.bool_)):
    raise TypeError(f"step must be an int, got {step!r}.")
  if hasattr(step, "shape"):  # NumPy or JAX scalar / 0-d array
    arr = np.asarray(step)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
      raise TypeError(
          f"step must be an int, got {arr.dtype} of shape {arr.shape}.")
    return int(arr)
  try:
    return operator.index(step)
  except TypeError as e:
    raise TypeError(f"step must be an int, got {step!r}.") from e


def _to_float(key: str, value: Any) -> float:
  """A Python float from a Python/NumPy/JAX scalar or size-1 array."""
  if isinstance(value, numbers.Real):
    return float(value)
  try:
    arr = np.asarray(value)
  except Exception as e:
    raise TypeError(
        f"metric {key!r} must be a number, got {type(value).__name__}.") from e
  if arr.size != 1:
    raise ValueError(
        f"metric {key!r} must be a scalar, got shape {arr.shape}.")
  if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
    raise TypeError(f"metric {key!r} must be a number, got dtype {arr.dtype}.")
  if np.iscomplexobj(arr):
    raise TypeError(f"metric {key!r} must be real, got {arr.dtype}.")
  return float(arr.reshape(()))


def _json_value(x: float) -> float | str:
  return x if math.isfinite(x) else _NONFINITE_TO_STR[repr(x)]


def tensorboard_tag(name: str) -> str:
  """``name`` with characters TensorBoard does not allow replaced by ``_``.

  The same rule tensorboardX applies (it logs a line for every rename);
  doing it here keeps the logs quiet. ``pass@1`` becomes ``pass_1``.
  """
  return re.sub(r"[^-/\w\.]", "_", name)


class MetricsLogger:
  """Writes metrics to two JSONL files and TensorBoard.

  Each ``log(step, metrics)`` call appends one line ``{"step": step, <name>:
  <value>, ...}`` to ``<logdir>/<jsonl_name>`` and one line ``{"step": step,
  "wall_time": <unix seconds>, <timing name>: <value>, ...}`` to
  ``<logdir>/<timings_name>``; the metrics named by ``timing_keys`` (clock
  readings such as ``time/update`` and ``tokens/s``) go only to the second.
  Both are flushed at once, so they are readable while the run goes on. With
  ``use_tensorboard``, every metric is also a TensorBoard scalar with the
  metric name as the tag.

  The files are opened in append mode, so a resumed run continues them;
  ``offsets()`` gives their sizes (a checkpoint stores them) and
  ``truncate_logs`` cuts them back to a checkpoint's sizes before a resumed
  run reopens them, so no step is logged twice. ``purge_step`` tells
  TensorBoard to drop events at or after that step from earlier event files.
  See the module docstring for how NaN and infinities are encoded in JSONL;
  TensorBoard receives them as they are (tensorboardX logs a warning for
  each).

  TensorBoard tags: tensorboardX replaces characters other than letters,
  digits, ``-``, ``/``, ``_`` and ``.`` by ``_`` (``pass@1`` becomes
  ``pass_1``); the JSONL keys keep the names as given.

  Usage::

    with MetricsLogger("runs/grpo") as logger:
      for step in range(num_steps):
        ...
        logger.log(step, {"reward": r, "entropy": h})

  Attributes:
    logdir: the directory (created if missing).
    jsonl_path: path of the metrics JSONL file.
    timings_path: path of the timings JSONL file.
  """

  def __init__(self, logdir: str | os.PathLike, *, use_tensorboard: bool = True,
               jsonl_name: str = "metrics.jsonl",
               timings_name: str = "timings.jsonl",
               timing_keys: Sequence[str] = DEFAULT_TIMING_KEYS,
               purge_step: int | None = None):
    """Opens the JSONL files and, optionally, a TensorBoard writer.

    Args:
      logdir: output directory, created if missing.
      use_tensorboard: also write TensorBoard event files to ``logdir``
        (needs ``tensorboardX``).
      jsonl_name: file name of the metrics JSONL log inside ``logdir``.
      timings_name: file name of the timings JSONL log inside ``logdir``.
      timing_keys: metric names (or prefixes ending in ``/``) that are
        timings.
      purge_step: a resumed run's first step: TensorBoard discards the
        events of earlier files at or after it.

    Raises:
      ValueError: if a file name is empty, has a directory part, or the two
        are equal.
      ImportError: if ``use_tensorboard`` and ``tensorboardX`` is missing.
    """
    for arg, name in (("jsonl_name", jsonl_name),
                      ("timings_name", timings_name)):
      if not name or pathlib.Path(name).name != name:
        raise ValueError(f"{arg} must be a plain file name, got {name!r}.")
    if jsonl_name == timings_name:
      raise ValueError(f"jsonl_name and timings_name must differ, both are"
                       f" {jsonl_name!r}.")
    self.logdir = pathlib.Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    self.jsonl_path = self.logdir / jsonl_name
    self.timings_path = self.logdir / timings_name
    self.timing_keys = tuple(timing_keys)
    self._writer = None
    if use_tensorboard:
      try:
        from tensorboardX import SummaryWriter
      except ImportError as e:
        raise ImportError(
            "use_tensorboard=True needs tensorboardX (pip install "
            "tensorboardX), or pass use_tensorboard=False.") from e
      self._writer = SummaryWriter(logdir=str(self.logdir),
                                   purge_step=purge_step)
    self._file = open(self.jsonl_path, "a", encoding="utf-8")
    self._timings = open(self.timings_path, "a", encoding="utf-8")

  def is_timing(self, key: str) -> bool:
    """Whether the metric ``key`` is a timing (goes to the timings file)."""
    return any(key.startswith(t) if t.endswith("/") else key == t
               for t in self.timing_keys)

  def offsets(self) -> dict[str, int]:
    """``{file name: size in bytes}`` of both JSONL files, as written so far
    (what a checkpoint stores, for ``truncate_logs``)."""
    if self.closed:
      raise RuntimeError("offsets() called on a closed MetricsLogger.")
    return {self.jsonl_path.name: self._file.tell(),
            self.timings_path.name: self._timings.tell()}

  @property
  def closed(self) -> bool:
    return self._file is None

  def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Writes one step's metrics.

    Args:
      step: the training step (an int; also the TensorBoard global step).
      metrics: metric name -> number (Python, NumPy or JAX scalar, or a
        size-1 array). Names may not be ``"step"`` or ``"wall_time"``.

    Returns:
      The record written: ``step``, ``wall_time`` and every metric (before
      NaN/inf encoding).

    Raises:
      RuntimeError: if the logger is closed.
      TypeError, ValueError: for a non-int step, a non-string or reserved
        name, or a value that is not a real scalar (the message names it).
    """
    if self.closed:
      raise RuntimeError("log() called on a closed MetricsLogger.")
    step = _to_step(step)
    values = {}
    for key, value in metrics.items():
      if not isinstance(key, str):
        raise TypeError(f"metric names must be strings, got {key!r}.")
      if key in _RESERVED:
        raise ValueError(f"metric name {key!r} is reserved ({_RESERVED}).")
      values[key] = _to_float(key, value)
    wall_time = time.time()
    timings = {k: v for k, v in values.items() if self.is_timing(k)}
    record = {"step": step, **{k: v for k, v in values.items()
                               if k not in timings}}
    timing = {"step": step, "wall_time": wall_time, **timings}
    for f, rec in ((self._file, record), (self._timings, timing)):
      f.write(json.dumps({k: _json_value(v) if k in values else v
                          for k, v in rec.items()}, allow_nan=False) + "\n")
      f.flush()
    if self._writer is not None:
      for key, value in values.items():
        self._writer.add_scalar(tensorboard_tag(key), value, global_step=step,
                                walltime=wall_time)
      self._writer.flush()
    return {"step": step, "wall_time": wall_time, **values}

  def flush(self) -> None:
    """Flushes the JSONL files and the TensorBoard writer."""
    if self.closed:
      return
    self._file.flush()
    self._timings.flush()
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    """Flushes and closes both outputs; calling it again does nothing."""
    if self.closed:
      return
    self._file.close()
    self._timings.close()
    self._file = self._timings = None
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> MetricsLogger:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def truncate_logs(logdir: str | os.PathLike,
                  offsets: Mapping[str, int] | None) -> None:
  """Cuts the JSONL logs in ``logdir`` back to ``offsets`` (from
  ``MetricsLogger.offsets()``, stored with a checkpoint), before a resumed
  run reopens them: the lines logged after that checkpoint (and a line cut
  short by a crash) go, and the resumed run logs those steps again.
  ``offsets=None`` (a fresh run, no checkpoint) empties every file of the
  default names, so a run that starts at step 0 starts a new log.

  A file shorter than its offset (lines the checkpoint saw are missing:
  the file was edited, moved, or the disk lost them) is left as it is, with
  a warning that names it; the resumed run appends to it.

  Raises:
    ValueError: an offset is not a non-negative int, or its name is not a
      plain file name.
  """
  logdir = pathlib.Path(logdir)
  if offsets is None:
    offsets = {"metrics.jsonl": 0, "timings.jsonl": 0}
  for name, size in offsets.items():
    if (pathlib.Path(name).name != name or isinstance(size, bool)
        or not isinstance(size, int) or size < 0):
      raise ValueError(f"log offsets: bad entry {name!r}: {size!r}.")
    path = logdir / name
    have = path.stat().st_size if path.exists() else 0
    if have < size:
      warnings.warn(f"{path} holds {have} bytes but the checkpoint saw"
                    f" {size}: lines logged before the checkpoint are"
                    " missing; the resumed run appends to what is there.")
    elif have > size:
      with open(path, "r+b") as f:
        f.truncate(size)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads a JSONL metrics file written by ``MetricsLogger``.

  Blank lines are skipped; the strings ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"`` are turned back into floats.

  Args:
    path: the file.

  Returns:
    One dict per line, in file order.

  Raises:
    ValueError: for a line that is not a JSON object (names the line).
  """
  records = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from e
      if not isinstance(obj, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object.")
      records.append({k: _STR_TO_NONFINITE.get(v, v) if isinstance(v, str)
                      else v for k, v in obj.items()})
  return records


def format_value(value: Any, digits: int = 4) -> str:
  """Short text for a metric: ``digits`` significant digits for floats.

  Ints (and integral NumPy scalars) print in full, floats with ``g``
  formatting (``0.5123``, ``1234``, ``1.235e+04``), NaN as ``nan``, ``None``
  as ``-``; anything else with ``str``.
  """
  if value is None:
    return "-"
  if isinstance(value, (bool, np.bool_)):
    return str(bool(value))
  if isinstance(value, (numbers.Integral, np.integer)):
    return str(int(value))
  if isinstance(value, str):
    return value
  try:
    x = _to_float("value", value)
  except (TypeError, ValueError):
    return str(value)
  if math.isnan(x):
    return "nan"
  return f"{x:.{digits}g}"


class ProgressBar:
  """A one-line training progress display on stderr.

  Shows ``step s/total (pct%)``, the chosen metric keys that are present in
  the last update, elapsed time and an ETA, e.g.::

    step  40/200  20% | reward 0.4125 | pass@1 0.375 | entropy 0.81 | 0:20<1:20

  On a terminal (``stream.isatty()``) the line is redrawn in place with
  ``\\r`` (at most every ``min_interval`` seconds, and always on the last
  step). Otherwise, e.g. in CI, a full line is printed on the first update,
  every ``every`` steps and on the last step. No tqdm dependency.

  Usage::

    with ProgressBar(num_steps) as bar:
      for step in range(1, num_steps + 1):
        ...
        bar.update(step, {"reward": r, "pass@1": p})
  """

  def __init__(self, total_steps: int,
               keys: Sequence[str] = DEFAULT_PROGRESS_KEYS, *,
               stream: TextIO | None = None, every: int | None = None,
               min_interval: float = 0.1, digits: int = 4):
    """Creates the display.

    Args:
      total_steps: number of steps of the run (``>= 1``).
      keys: metric names to show, in order; missing ones are left out.
      stream: output stream (default: ``sys.stderr`` at construction).
      every: when not on a terminal, print every ``every`` steps (default:
        ``max(1, total_steps // 20)``, about 20 lines per run).
      min_interval: on a terminal, minimum seconds between redraws.
      digits: significant digits of the metric values.

    Raises:
      ValueError: if ``total_steps`` or ``every`` is not a positive int.
    """
    if isinstance(total_steps, bool) or not isinstance(
        total_steps, numbers.Integral) or total_steps < 1:
      raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}.")
    if every is not None and (isinstance(every, bool) or not isinstance(
        every, numbers.Integral) or every < 1):
      raise ValueError(f"every must be None or an int >= 1, got {every!r}.")
    if isinstance(keys, str):
      raise TypeError("keys must be a sequence of names, not one string.")
    self.total_steps = int(total_steps)
    self.keys = tuple(keys)
    self.stream = stream if stream is not None else sys.stderr
    try:
      self.is_tty = bool(self.stream.isatty())
    except (AttributeError, ValueError):
      self.is_tty = False
    self.every = int(every) if every is not None else max(
        1, self.total_steps // 20)
    self.min_interval = float(min_interval)
    self.digits = digits
    self._start = time.monotonic()
    self._last_draw = -math.inf
    self._last_width = 0
    self._printed_any = False
    self._pending_newline = False

  def format_line(self, step: int, metrics: Mapping[str, Any] | None = None,
                  elapsed: float | None = None) -> str:
    """The text of the progress line (without ``\\r`` or newline)."""
    metrics = metrics or {}
    width = len(str(self.total_steps))
    pct = int(100 * min(max(step, 0), self.total_steps) / self.total_steps)
    parts = [f"step {step:>{width}}/{self.total_steps} {pct:3d}%"]
    for key in self.keys:
      if key in metrics:
        parts.append(f"{key} {format_value(metrics[key], self.digits)}")
    if elapsed is not None:
      timing = _clock(elapsed)
      if 0 < step < self.total_steps:
        timing += "<" + _clock(elapsed / step * (self.total_steps - step))
      parts.append(timing)
    return " | ".join(parts)

  def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
    """Shows progress after ``step`` completed steps (``1..total_steps``).

    Args:
      step: steps completed so far.
      metrics: current metric values; the names in ``keys`` are shown.
    """
    step = _to_step(step)
    now = time.monotonic()
    last = step >= self.total_steps
    if self.is_tty:
      if not last and now - self._last_draw < self.min_interval:
        return
      line = self.format_line(step, metrics, now - self._start)
      pad = " " * max(0, self._last_width - len(line))
      self.stream.write("\r" + line + pad)
      self._last_width = len(line)
      self._pending_newline = True
      if last:
        self.stream.write("\n")
        self._pending_newline = False
    else:
      if self._printed_any and not last and step % self.every:
        return
      self.stream.write(self.format_line(step, metrics, now - self._start)
                        + "\n")
    self._printed_any = True
    self._last_draw = now
    self.stream.flush()

  def close(self) -> None:
    """Ends an in-place line with a newline (terminal mode)."""
    if self._pending_newline:
      self.stream.write("\n")
      self.stream.flush()
      self._pending_newline = False

  def __enter__(self) -> ProgressBar:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _clock(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def summary_table(rows: Mapping[str, Mapping[str, Any]],
                  columns: Sequence[str], *, name_header: str = "run",
                  digits: int = 4) -> str:
  """A fixed-width plain-text table, one row per run, for the end of a run.

  The first column holds the row names (left aligned); the others the values
  of ``columns`` (right aligned), formatted by ``format_value`` (``digits``
  significant digits; ``-`` where a row has no such column). A dashed rule
  separates the header. Rows keep the order of ``rows``.

  Example::

    run       reward  pass@1
    --------  ------  ------
    grpo       0.512    0.25
    pass@k     0.498  0.2812

  Args:
    rows: row name (run or objective) -> {column name -> value}.
    columns: the columns to show, in order.
    name_header: header of the first column.
    digits: significant digits for floats.

  Returns:
    The table, lines joined with ``\\n`` (no trailing newline).
  """
  if isinstance(columns, str):
    raise TypeError("columns must be a sequence of names, not one string.")
  columns = list(columns)
  for name, row in rows.items():
    if not isinstance(row, Mapping):
      raise TypeError(
          f"rows[{name!r}] must be a mapping of column -> value, got "
          f"{type(row).__name__}.")
  header = [name_header] + [str(c) for c in columns]
  body = [[str(name)] + [format_value(row.get(c), digits) for c in columns]
          for name, row in rows.items()]
  widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

  def fmt(cells):
    out = [cells[0].ljust(widths[0])]
    out += [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:])]
    return "  ".join(out).rstrip()

  lines = [fmt(header), "  ".join("-" * w for w in widths)]
  lines += [fmt(r) for r in body]
  return "\n".join(lines)


def _sorted_points(points: Iterable[tuple[Any, Any]], what: str):
  xs, ys = [], []
  for point in points:
    try:
      x, y = point
    except (TypeError, ValueError) as e:
      raise ValueError(
          f"{what} must hold (x, value) pairs, got {point!r}.") from e
    xs.append(float(x) if isinstance(x, str) else _to_float(what, x))
    ys.append(_to_float(what, y))
  order = np.argsort(xs, kind="stable")
  return np.asarray(xs)[order], np.asarray(ys)[order]


def save_plots(path_png: str | os.PathLike,
               pass_at_k: Mapping[str, Mapping[int, float]],
               entropy_over_training: Mapping[str, Sequence[tuple[int, float]]],
               *, title: str | None = None, dpi: int = 100) -> pathlib.Path:
  """Saves one PNG with two panels: pass@k vs ``k`` and entropy vs step.

  Left: the pass@k curve of every run against ``k`` on a log2 axis (ticks at
  the ``k`` values). Right: token-mean entropy against the training step.
  Drawn on a standalone ``Figure`` with the Agg canvas, so it works without a
  display and does not touch pyplot's global state. A panel with no data
  says so.

  Args:
    path_png: output file (parent directories are created).
    pass_at_k: run name -> {k -> pass@k}, e.g. from
      ``divrl.metrics.pass_at_k_curve``.
    entropy_over_training: run name -> ``[(step, entropy), ...]``.
    title: optional figure title.
    dpi: resolution.

  Returns:
    The path written, as a ``pathlib.Path``.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import FixedLocator, NullLocator

  path = pathlib.Path(path_png)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig = Figure(figsize=(11, 4.2), dpi=dpi, layout="constrained")
  FigureCanvasAgg(fig)
  ax_k, ax_h = fig.subplots(1, 2)

  all_ks = set()
  for name, curve in pass_at_k.items():
    ks, vals = _sorted_points(curve.items(), f"pass_at_k[{name!r}]")
    if np.any(ks <= 0):
      raise ValueError(f"pass_at_k[{name!r}] has a k <= 0: {ks.tolist()}.")
    all_ks.update(ks.tolist())
    ax_k.plot(ks, vals, marker="o", label=str(name))
  ax_k.set_title("pass@k")
  ax_k.set_xlabel("k")
  ax_k.set_ylabel("pass@k")
  if all_ks:
    ax_k.set_xscale("log", base=2)
    ticks = sorted(all_ks)
    ax_k.xaxis.set_major_locator(FixedLocator(ticks))
    ax_k.xaxis.set_minor_locator(NullLocator())
    ax_k.set_xticklabels([f"{t:g}" for t in ticks])
    ax_k.legend(fontsize="small")
  else:
    ax_k.text(0.5, 0.5, "no data", ha="center", va="center",
              transform=ax_k.transAxes)
  ax_k.grid(True, alpha=0.3)

  drew = False
  for name, points in entropy_over_training.items():
    steps, vals = _sorted_points(points, f"entropy_over_training[{name!r}]")
    ax_h.plot(steps, vals, label=str(name))
    drew = True
  ax_h.set_title("token entropy")
  ax_h.set_xlabel("step")
  ax_h.set_ylabel("entropy (nats)")
  if drew:
    ax_h.legend(fontsize="small")
  else:
    ax_h.text(0.5, 0.5, "no data", ha="center", va="center",
              transform=ax_h.transAxes)
  ax_h.grid(True, alpha=0.3)

  if title:
    fig.suptitle(title)
  fig.savefig(path, format="png")
  return path


__all__ = [
    "DEFAULT_PROGRESS_KEYS",
    "MetricsLogger",
    "ProgressBar",
    "format_value",
    "read_jsonl",
    "save_plots",
    "truncate_logs",
    "summary_table",
]


def cpu_model() -> str:
  """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()``
  where that is missing), recorded with benchmark and table results."""
  import platform  # pylint: disable=g-import-not-at-top
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()
