"""The reliability campaign (scripts/reliability.py), a few points of it.

Real training runs of the CLI, as subprocesses: SIGKILLed at a random
moment, within a step and during a checkpoint write, then resumed, must end
byte-identical to an uninterrupted run (parameters, optimizer state, key and
``metrics.jsonl``) with at most one checkpoint interval lost; a full disk
stops the run with a named error and keeps the last checkpoint; a truncated
or garbled checkpoint is named and the run falls back to the one before.
``python -m scripts.reliability`` runs the long version (20 kill points).
"""

import json
import os
import random
import time

import pytest

from scripts import reliability


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, cache_root):
  """The reference run, and a second (warm) run of the same command: the
  time the random kill moments are drawn from."""
  camp = reliability.Campaign(root=str(tmp_path_factory.mktemp("rel")),
                              cache_root=str(cache_root))
  ref = reliability.reference_run(camp)
  again = reliability.reference_run(camp, "again")
  return camp, ref, again


def test_reference_run_logs_each_step_once_and_is_deterministic(campaign):
  camp, (ref, ref_metrics, _), (again, again_metrics, _) = campaign
  ref_dir = os.path.join(camp.root, "reference")
  assert reliability.logged_steps(ref_dir) == list(
      range(1, reliability.STEPS + 1))
  # Timings live in their own file; metrics.jsonl holds no clock.
  assert b"wall_time" not in ref_metrics and b"tokens/s" not in ref_metrics
  assert reliability.restorable_steps(ref_dir) == [4, 6]   # max_to_keep 2
  # A second run of the same command: byte for byte the same.
  assert again_metrics == ref_metrics
  assert not reliability.same_state(again, ref)


@pytest.mark.parametrize("mode", ["time", "step", "write"])
def test_a_killed_run_resumes_to_the_same_end(campaign, mode):
  camp, (ref, ref_metrics, _), (_, _, warm_s) = campaign
  # A different moment each CI run (the seed is in the failure message);
  # drawn again if the run ends before it.
  seed = time.time_ns() % 100_000
  point = reliability.random_kill(camp, f"kill_{mode}", mode,
                                  random.Random(seed), warm_s,
                                  time_span=0.9, step_delay=0.3)
  point["seed"] = seed
  assert point["killed"], point
  if mode == "write":
    assert point["killed"] and point["during_write"], point
  r = reliability.check_resume(camp, point, ref, ref_metrics)
  assert r["ok"], json.dumps(r, indent=1)
  assert r["steps_lost"] <= reliability.EVERY


def test_a_full_disk_stops_the_run_and_keeps_the_last_checkpoint(campaign):
  camp, _, _ = campaign
  r = reliability.fill_disk(camp)
  assert r["ok"], json.dumps(r, indent=1)
  assert "CheckpointWriteError" in r["message"]
  assert "File too large" in r["message"]


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_corrupt_checkpoint_is_named_and_skipped(campaign, how):
  camp, reference, _ = campaign
  r = reliability.corrupt_checkpoint(camp, how, reference[:2])
  assert r["ok"], json.dumps(r, indent=1)
  assert r["set_aside"] == [str(reliability.STEPS - reliability.EVERY)]


def test_render_and_doc_markers(tmp_path, monkeypatch):
  doc = tmp_path / "reliability.md"
  doc.write_text(f"intro\n{reliability.BEGIN}\nOLD BLOCK\n{reliability.END}\nend\n")
  monkeypatch.setattr(reliability, "DOC", str(doc))
  res = {"date": "2026-12-03", "commit": "abc", "command": "c",
         "machine": {"processor": "cpu"},
         "kills": {"survived": 2, "killed": 2, "reference_s": 20.0,
                   "warm_s": 7.0, "repeat_identical": True, "points": [
             {"during_write": True, "steps_lost": 2, "killed": True,
              "mode": "write"},
             {"during_write": False, "steps_lost": 0, "killed": True,
              "mode": "time"},
             {"during_write": False, "steps_lost": 0, "killed": False,
              "mode": "time"}]},
         "fuzz": {"pytest": "3 passed", "seconds": 60.0,
                  "examples_asked": 5,
                  "counts": {"parts/advantage/grpo": 5,
                             "parts/advantage/otb": 4, "recipes/grpo": 5}}}
  reliability.update_doc(reliability.render(res))
  text = doc.read_text()
  assert text.startswith("intro\n") and text.endswith("end\n")
  assert "OLD BLOCK" not in text
  assert ("Kill points survived: 2 of 2 SIGKILLs** (1 at a random moment of"
          " the run, 0 just after a random step, 1 aimed at a checkpoint"
          " write; 1 landed during a write). 1 point(s) ended before") in text
  assert "(warm compilation cache, 7.0 s against 20.0 s cold) matched" in text
  assert "| parts/advantage | 2 | 4 | 5 | 9 |" in text
