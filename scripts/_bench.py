"""What every benchmark script shares: timing, the machine, tables, files.

Standard library only at import (JAX and torch are imported where a function
needs them), so that worker processes in any virtual environment can use it.

* ``timed(fn)``: wall seconds of one call, waiting for JAX arrays.
* ``summary(times)``, ``median(times)`` and ``paired_ratios(num, den)``:
  median and range, and the ratio repetition by repetition (each pair
  measured back to back).
* ``machine(packages)``: the processor, cores, load average, platform and
  package versions stored with every result.
* ``matmul_rate()``: this machine's dense float32 matmul rate (JAX);
  ``compiled_memory(jitted, *args)``: XLA's memory analysis.
* ``table(header, rows)`` and ``fmt``: Markdown tables and numbers.
* ``write(res, json_path, md_path, render)``: the JSON file and its page.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

_T0 = time.perf_counter()


def log(msg: str) -> None:
  """A progress line on stderr with the seconds since the script started."""
  print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr,
        flush=True)


def _block(out: Any) -> Any:
  if "jax" in sys.modules:
    import jax
    return jax.block_until_ready(out)
  return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  """``(seconds, result)`` of one ``fn()``, waiting for JAX results."""
  t0 = time.perf_counter()
  out = _block(fn())
  return time.perf_counter() - t0, out


def best_of(fn: Callable[[], Any], repeats: int) -> float:
  """Seconds of the fastest of ``repeats`` calls after one warm-up call."""
  _block(fn())
  return min(timed(fn)[0] for _ in range(repeats))


def summary(values: Sequence[float]) -> dict[str, Any]:
  """Median, min, max and the values (empty input gives NaN)."""
  vals = [float(v) for v in values]
  if not vals:
    nan = float("nan")
    return {"median": nan, "min": nan, "max": nan, "values": []}
  return {"median": float(statistics.median(vals)), "min": min(vals),
          "max": max(vals), "values": vals}


def median(values: Sequence[float]) -> float:
  """The median of ``values`` (NaN when empty)."""
  return summary(values)["median"]


def paired_ratios(num: Sequence[float], den: Sequence[float]
                  ) -> dict[str, Any]:
  """``num[i] / den[i]`` for each repetition ``i``, summarised.

  With ``num`` the peer's times and ``den`` divrl's, a ratio above 1 means
  divrl was faster in that pair.
  """
  if len(num) != len(den):
    raise ValueError(f"paired_ratios: {len(num)} times against {len(den)}")
  return summary([a / b for a, b in zip(num, den)])


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpu_model() -> str:
  """The processor's name from /proc/cpuinfo, else ``platform.processor``."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine(packages: Iterable[str] = ("jax", "jaxlib", "flax", "optax",
                                       "numpy")) -> dict[str, Any]:
  """The facts stored with every benchmark result."""
  info = {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"),
      "processor": cpu_model(), "machine": platform.machine(),
      "platform": platform.platform(), "python": platform.python_version(),
      "cpu_count": os.cpu_count(),
      "cpu_affinity": len(os.sched_getaffinity(0)),
      "loadavg_start": list(os.getloadavg()),
      "versions": {p: _version(p) for p in packages},
  }
  try:
    with open("/proc/meminfo") as f:
      kb = int(f.readline().split()[1])
    info["memory_gib"] = round(kb / 2**20, 1)
  except (OSError, ValueError, IndexError):
    pass
  return info


def machine_line(m: Mapping[str, Any]) -> str:
  """One sentence describing ``machine()``'s facts for a results page."""
  versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()
                       if v)
  load = m.get("loadavg_start", [float("nan")])[0]
  end = m.get("loadavg_end")
  load_s = f"1-minute load {load:.1f} at the start"
  if end:
    load_s += f", {end[0]:.1f} at the end"
  return (f"{m['cpu_count']} CPU cores ({m['processor']}), "
          f"{m.get('memory_gib', '?')} GiB, Python {m['python']}; "
          f"{versions}; {load_s}; {m['date']}.")


def matmul_rate(sizes: Sequence[int] = (1024, 2048), repeats: int = 7
                ) -> dict[str, Any]:
  """This machine's dense float32 matmul rate: jitted square ``a @ b``
  (``2 n^3`` FLOPs), best of ``repeats`` calls per size, and the best size.
  """
  import jax
  import jax.numpy as jnp
  rates = {}
  for n in sizes:
    a = jax.random.normal(jax.random.key(n), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    rates[str(n)] = 2.0 * n**3 / best_of(lambda: f(a, a), repeats)
  return {"flops_per_s": rates, "peak_flops_per_s": max(rates.values()),
          "repeats": repeats}


def compiled_memory(jitted, *args) -> dict[str, int]:
  """XLA's memory analysis of ``jitted`` compiled for ``args``: the bytes
  of its temporaries, arguments and outputs (per device)."""
  mem = jitted.lower(*args).compile().memory_analysis()
  return {"temp_bytes": int(mem.temp_size_in_bytes),
          "argument_bytes": int(mem.argument_size_in_bytes),
          "output_bytes": int(mem.output_size_in_bytes)}


def fmt(x: float | None, digits: int = 3) -> str:
  """A number with ``digits`` significant digits, thousands separated."""
  if x is None or x != x:
    return "–"
  if x == 0:
    return "0"
  if abs(x) >= 10 ** digits:
    return f"{x:,.0f}"
  return f"{x:.{digits}g}"


def ratio_cell(r: Mapping[str, Any], digits: int = 2) -> str:
  """``median× (min–max)`` of a ``summary``."""
  if r is None or r["median"] != r["median"]:
    return "–"
  cell = f"{r['median']:.{digits}f}×"
  if len(r.get("values", ())) > 1:
    cell += f" ({r['min']:.{digits}f}–{r['max']:.{digits}f})"
  return cell


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
  """A Markdown table as lines."""
  out = ["| " + " | ".join(header) + " |",
         "|" + "|".join("---" for _ in header) + "|"]
  for row in rows:
    out.append("| " + " | ".join(str(c) for c in row) + " |")
  return out


def write(res: Mapping[str, Any], json_path: str, md_path: str | None,
          render: Callable[[Mapping[str, Any]], str] | None = None) -> None:
  """Writes ``res`` as JSON and, with ``render``, its Markdown page."""
  os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
  with open(json_path, "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")
  if md_path and render is not None:
    with open(md_path, "w") as f:
      f.write(render(res))
