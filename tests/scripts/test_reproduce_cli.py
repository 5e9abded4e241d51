"""The reproduction CLI (scripts/reproduce.py): an unknown table is refused
with the list of known ones, and the --quick flavour runs a table file end
to end into the directory it is given (the machinery itself is tested in
tests/rl/test_reproduce.py)."""

from tests.scripts import run_script


def _run_cli(*args, timeout=600):
  return run_script("scripts.reproduce", *args, timeout=timeout)


def test_unknown_table_names_the_known_ones():
  proc = _run_cli("--table", "no_such_table")
  assert proc.returncode != 0
  assert "no_such_table" in proc.stderr
  assert "calibration" in proc.stderr and "sharpening" in proc.stderr


def test_quick_run_writes_the_results_files(tmp_path):
  out, cache = tmp_path / "out", tmp_path / "runs" / "cache"
  proc = _run_cli("--table", "sharpening", "--quick", f"--out={out}",
                  f"--cache={cache}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ("sharpening.md", "sharpening.csv", "sharpening.curves.csv",
               "sharpening.png"):
    assert (out / name).stat().st_size > 0, name
  text = (out / "sharpening.md").read_text()
  assert "Quick run" in text
  assert "command: `python -m scripts.reproduce --table sharpening --quick" \
      in text
  # The quick base was pre-trained beside the cache, not in runs/.
  assert (tmp_path / "runs" / "bases").is_dir()
