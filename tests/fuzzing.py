"""Shared settings and example counts of the property (fuzz) tests.

Two profiles, chosen by the environment:

* CI (default): each property test runs its own small ``ci`` number of
  examples, derandomized, so CI is fast and repeatable.
* Long (``DIVRL_FUZZ_EXAMPLES=N``): every property test runs up to ``N``
  examples from a random seed; ``scripts/reliability.py`` sets it.

Each property test calls ``count(label)`` once per example it runs, so the
figures reported are the examples that ran, not the ``max_examples``
asked for (hypothesis may stop early on a small search space). With
``DIVRL_FUZZ_REPORT_DIR`` set, every pytest process writes its counts to
``<dir>/<worker>.json`` when the session ends (``tests/conftest.py``).
"""

from __future__ import annotations

import collections
import json
import os

import hypothesis

COUNTS: collections.Counter[str] = collections.Counter()


def long_examples() -> int:
  """The long profile's examples per test, or 0 in the CI profile."""
  text = os.environ.get("DIVRL_FUZZ_EXAMPLES", "")
  try:
    return max(int(text), 0) if text else 0
  except ValueError:
    raise ValueError(
        f"DIVRL_FUZZ_EXAMPLES must be an int, got {text!r}.") from None


def settings(ci: int) -> hypothesis.settings:
  """``hypothesis.settings`` for a property test: ``ci`` examples in CI,
  ``DIVRL_FUZZ_EXAMPLES`` in the long profile."""
  n = long_examples()
  return hypothesis.settings(
      max_examples=n or ci, deadline=None, derandomize=not n,
      database=None,
      suppress_health_check=list(hypothesis.HealthCheck))


def count(label: str) -> None:
  """Records one example of the property test ``label``."""
  COUNTS[label] += 1


def write_report(worker: str) -> None:
  """Writes ``COUNTS`` to ``$DIVRL_FUZZ_REPORT_DIR/<worker>.json``."""
  out = os.environ.get("DIVRL_FUZZ_REPORT_DIR")
  if not out or not COUNTS:
    return
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, f"{worker}.json"), "w", encoding="utf-8") as f:
    json.dump(dict(sorted(COUNTS.items())), f, indent=1)
