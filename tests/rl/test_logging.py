"""Run logging: JSONL/TensorBoard round trips, progress line, table, plots."""

import io
import json
import math
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from divrl.rl import logging as rl_logging

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
crc32c = pytest.importorskip("tensorboardX.crc32c").crc32c


def _masked_crc(data):
  """TFRecord's masked CRC-32C of ``data``."""
  crc = crc32c(data) & 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_tfrecords(path):
  """Payloads of a TFRecord file: u64 length, u32 crc, data, u32 crc each."""
  payloads = []
  with open(path, "rb") as f:
    while header := f.read(12):
      assert len(header) == 12, "truncated record header"
      (length,) = struct.unpack("<Q", header[:8])
      (length_crc,) = struct.unpack("<I", header[8:])
      assert length_crc == _masked_crc(header[:8])
      data = f.read(length)
      (data_crc,) = struct.unpack("<I", f.read(4))
      assert data_crc == _masked_crc(data)
      payloads.append(data)
  return payloads


def _scalars(logdir):
  """{tag: [(step, value)]} from every event file in ``logdir``."""
  out = {}
  files = sorted(logdir.glob("events.out.tfevents.*"))
  assert files, f"no event file in {logdir}"
  for path in files:
    for data in _read_tfrecords(path):
      event = event_pb2.Event()
      event.ParseFromString(data)
      if event.HasField("summary"):
        for value in event.summary.value:
          out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def _records():
  return [
      (0, {"reward": 0.25, "pass@1": np.float32(0.125), "tokens/s": 1234}),
      (1, {"reward": jnp.float32(0.5), "pass@1": jnp.asarray([0.375]),
           "tokens/s": np.int64(4321)}),
      (jnp.int32(2), {"reward": float("nan"), "pass@1": np.float64(math.inf),
                      "tokens/s": -math.inf}),
  ]


def _same(a, b):
  return (math.isnan(a) and math.isnan(b)) or a == b


def test_jsonl_round_trip(tmp_path):
  records = _records()
  with rl_logging.MetricsLogger(tmp_path, use_tensorboard=False) as logger:
    for step, metrics in records:
      logger.log(step, metrics)
  assert logger.closed
  path = tmp_path / "metrics.jsonl"
  lines = path.read_text().splitlines()
  assert len(lines) == 3
  # Strict JSON: no bare NaN/Infinity tokens.
  def no_constants(name):
    raise AssertionError(f"non-standard JSON constant {name}")
  parsed = [json.loads(line, parse_constant=no_constants) for line in lines]
  assert parsed[2]["reward"] == "NaN"
  assert parsed[2]["pass@1"] == "Infinity"
  timings = [json.loads(line, parse_constant=no_constants)
             for line in (tmp_path / "timings.jsonl").read_text().splitlines()]
  assert timings[2]["tokens/s"] == "-Infinity"
  back = rl_logging.read_jsonl(path)
  back_t = rl_logging.read_jsonl(tmp_path / "timings.jsonl")
  assert [r["step"] for r in back] == [r["step"] for r in back_t] == [0, 1, 2]
  for got, got_t, (_, metrics) in zip(back, back_t, records):
    # The clock (wall_time, time/*, tokens/s) is in timings.jsonl only.
    timing = {k for k in metrics if k.startswith("time/") or k == "tokens/s"}
    assert set(got) == {"step", *metrics} - timing
    assert set(got_t) == {"step", "wall_time", *timing}
    assert isinstance(got_t["wall_time"], float)
    for key, value in metrics.items():
      want = float(np.asarray(value).reshape(()))
      have = got_t[key] if key in timing else got[key]
      assert isinstance(have, float)
      assert _same(have, want), (key, have, want)
  assert back[0]["pass@1"] == float(np.float32(0.125))
  # Append mode: a reopened logger continues the file.
  with rl_logging.MetricsLogger(tmp_path, use_tensorboard=False) as logger:
    logger.log(3, {"reward": 1.0})
  assert [r["step"] for r in rl_logging.read_jsonl(path)] == [0, 1, 2, 3]
  assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_offsets_and_truncate_logs(tmp_path):
  with rl_logging.MetricsLogger(tmp_path, use_tensorboard=False) as logger:
    logger.log(1, {"reward": 0.5, "time/update": 1.0})
    offsets = logger.offsets()
    logger.log(2, {"reward": 0.25, "time/update": 2.0})
  assert offsets == {"metrics.jsonl": len('{"step": 1, "reward": 0.5}\n'),
                     "timings.jsonl": (tmp_path / "timings.jsonl").read_text()
                     .index("\n") + 1}
  # A crash mid-line after the checkpoint: the partial line goes too.
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 3, "rew')
  rl_logging.truncate_logs(tmp_path, offsets)
  for name in ("metrics.jsonl", "timings.jsonl"):
    assert [r["step"] for r in rl_logging.read_jsonl(tmp_path / name)] == [1]
  # A fresh run (no checkpoint) starts new logs.
  rl_logging.truncate_logs(tmp_path, None)
  assert (tmp_path / "metrics.jsonl").read_text() == ""
  # A file shorter than the checkpoint saw is kept, with a warning.
  with pytest.warns(UserWarning, match="metrics.jsonl holds 0 bytes"):
    rl_logging.truncate_logs(tmp_path, {"metrics.jsonl": 10})
  with pytest.raises(ValueError, match="bad entry '../x'"):
    rl_logging.truncate_logs(tmp_path, {"../x": 0})


def test_timings_file_names_are_checked(tmp_path):
  with pytest.raises(ValueError, match="must differ"):
    rl_logging.MetricsLogger(tmp_path, use_tensorboard=False,
                             timings_name="metrics.jsonl")
  with pytest.raises(ValueError, match="timings_name"):
    rl_logging.MetricsLogger(tmp_path, use_tensorboard=False,
                             timings_name="a/b.jsonl")


def test_logger_errors_name_the_problem(tmp_path):
  logger = rl_logging.MetricsLogger(tmp_path, use_tensorboard=False,
                                    jsonl_name="run.jsonl")
  with pytest.raises(ValueError, match="'step' is reserved"):
    logger.log(0, {"step": 1.0})
  with pytest.raises(ValueError, match="'vec' must be a scalar"):
    logger.log(0, {"vec": np.ones(3)})
  with pytest.raises(TypeError, match="'name' must be a number"):
    logger.log(0, {"name": "text"})
  with pytest.raises(TypeError, match="step must be an int"):
    logger.log(1.5, {"reward": 1.0})
  logger.close()
  logger.close()  # idempotent
  with pytest.raises(RuntimeError, match="closed"):
    logger.log(0, {"reward": 1.0})
  assert (tmp_path / "run.jsonl").read_text() == ""
  with pytest.raises(ValueError, match="jsonl_name"):
    rl_logging.MetricsLogger(tmp_path, jsonl_name="sub/x.jsonl")


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
  logdir = tmp_path / "run"
  records = _records()
  with rl_logging.MetricsLogger(logdir) as logger:
    for step, metrics in records:
      logger.log(step, metrics)
  scalars = _scalars(logdir)
  # tensorboardX cleans tags: "pass@1" -> "pass_1"; "/" is kept.
  assert set(scalars) == {"reward", "pass_1", "tokens/s"}
  for tag, key in [("reward", "reward"), ("pass_1", "pass@1"),
                   ("tokens/s", "tokens/s")]:
    got = scalars[tag]
    assert [s for s, _ in got] == [0, 1, 2]
    for (_, value), (_, metrics) in zip(got, records):
      want = float(np.float32(np.asarray(metrics[key]).reshape(())))
      assert _same(value, want), (tag, value, want)


def test_summary_table_contents_and_alignment():
  rows = {
      "run_a": {"reward": 0.512345, "pass@1": 0.25, "tokens": 12345678},
      "a_much_longer_run": {"reward": 1234567.0, "pass@1": float("nan")},
  }
  table = rl_logging.summary_table(rows, ["reward", "pass@1", "tokens"])
  lines = table.splitlines()
  assert len(lines) == 4
  header, rule, first, second = lines
  assert header.split() == ["run", "reward", "pass@1", "tokens"]
  assert set(rule.replace(" ", "")) == {"-"}
  assert first.split() == ["run_a", "0.5123", "0.25", "12345678"]
  assert second.split() == ["a_much_longer_run", "1.235e+06", "nan", "-"]
  # Fixed width: every column ends at the same offset in every row.
  assert len(header) == len(rule) == len(first) == len(second)

  def end(line, cell):
    return line.index(cell) + len(cell)

  assert end(header, "reward") == end(first, "0.5123") == end(
      second, "1.235e+06")
  assert end(header, "pass@1") == end(first, "0.25") == end(second, "nan")
  assert first.startswith("run_a ") and second.startswith("a_much_longer_run ")
  assert rl_logging.summary_table({}, ["x"]).splitlines()[0].split() == [
      "run", "x"]
  with pytest.raises(TypeError, match="rows\\['bad'\\]"):
    rl_logging.summary_table({"bad": 1.0}, ["x"])


def test_format_value():
  fmt = rl_logging.format_value
  assert fmt(0.123456) == "0.1235"
  assert fmt(np.float32(2.0)) == "2"
  assert fmt(jnp.float32(0.5)) == "0.5"
  assert fmt(7) == "7" and fmt(np.int64(7)) == "7"
  assert fmt(float("nan")) == "nan" and fmt(None) == "-"
  assert fmt(12345.6) == "1.235e+04"


class _FakeTTY(io.StringIO):

  def isatty(self):
    return True


def test_progress_bar_plain_stream_prints_every_n_lines():
  stream = io.StringIO()
  with rl_logging.ProgressBar(100, keys=("reward", "pass@1", "missing"),
                              stream=stream, every=25) as bar:
    for step in range(1, 101):
      bar.update(step, {"reward": step / 100, "pass@1": 0.125, "other": 9})
  text = stream.getvalue()
  assert "\r" not in text
  lines = text.splitlines()
  assert [line.split("|")[0].split()[1] for line in lines] == [
      "1/100", "25/100", "50/100", "75/100", "100/100"]
  assert "reward 0.25" in lines[1] and "pass@1 0.125" in lines[1]
  assert "missing" not in text and "other" not in text
  assert lines[-1].startswith("step 100/100 100%")


def test_progress_bar_tty_redraws_in_place():
  stream = _FakeTTY()
  bar = rl_logging.ProgressBar(5, stream=stream, min_interval=0.0)
  for step in range(1, 5):
    bar.update(step, {"reward": 1.0, "tokens/s": 2048.0})
  text = stream.getvalue()
  assert text.count("\r") == 4 and "\n" not in text
  bar.update(5, {"reward": 1.0})
  assert stream.getvalue().endswith("\n")
  bar.close()
  assert stream.getvalue().count("\n") == 1
  assert "tokens/s 2048" in text


def test_progress_bar_checks_arguments():
  with pytest.raises(ValueError, match="total_steps"):
    rl_logging.ProgressBar(0)
  with pytest.raises(ValueError, match="every"):
    rl_logging.ProgressBar(10, every=0)


def test_save_plots_writes_a_png(tmp_path):
  matplotlib_image = pytest.importorskip("matplotlib.image")
  curves = {
      "run_a": {1: 0.2, 2: 0.31, 4: 0.45, 8: 0.58, 16: 0.7},
      "run_b": {1: 0.25, 4: 0.4, 16: 0.55},
  }
  entropy = {
      "run_a": [(0, 1.2), (10, 0.9), (20, 0.7)],
      "run_b": [(20, 1.0), (0, 1.3), (10, 1.1)],  # unsorted on purpose
  }
  path = rl_logging.save_plots(tmp_path / "sub" / "plots.png", curves, entropy,
                               title="test")
  assert path == tmp_path / "sub" / "plots.png"
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(data) > 10_000
  image = matplotlib_image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
  assert image.std() > 0.01  # something was drawn
  # Empty inputs still produce a (labelled) figure.
  empty = rl_logging.save_plots(tmp_path / "empty.png", {}, {})
  assert matplotlib_image.imread(empty).ndim == 3
  with pytest.raises(ValueError, match="k <= 0"):
    rl_logging.save_plots(tmp_path / "bad.png", {"run_a": {0: 0.1}}, {})
