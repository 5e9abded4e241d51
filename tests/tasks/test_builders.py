"""TFDS builders: array_record round trips via as_data_source, no TensorFlow.

Each test prepares a tiny dataset in ``tmp_path`` and reads it back by random
access; the records must equal what ``task.generate`` produces (toy tasks) or
what the fixture JSONL holds (math_word).
"""

import json
import sys

import numpy as np
import pytest

from divrl import tasks
from divrl.tasks import builders

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("name", tasks.TOY_TASKS)
def test_toy_round_trip_matches_generate(name, tmp_path):
  task = tasks.get_task(name)
  for split, n in (("train", 12), ("test", 5)):
    ds = tasks.load_split(name, split, tmp_path, seed=3, num_train=12,
                          num_test=5)
    assert len(ds) == n
    records = [ds[i] for i in range(len(ds))]
    got = [task.from_record(r) for r in records]
    assert got == task.generate(builders.split_rng(3, split), n)
    # Records are usable directly: bytes strings, NumPy integers.
    assert all(task.verify(r, task.reference(r)).correct for r in records)
    assert isinstance(records[0][task.REFERENCE_FIELD], bytes)
  # Train and test are different draws.
  train = tasks.load_split(name, "train", tmp_path, seed=3, num_train=12,
                           num_test=5)
  assert task.from_record(train[0]) != got[0] or n == 0
  assert "tensorflow" not in sys.modules


def test_builder_is_prepared_once_and_configs_are_separate(tmp_path):
  a = tasks.make_builder("modular", tmp_path, num_train=4, num_test=2)
  b = tasks.make_builder("modular", tmp_path, num_train=4, num_test=2,
                         max_modulus=50)
  assert a.builder_config.name != b.builder_config.name
  assert "max_modulus50" in b.builder_config.name
  a.download_and_prepare(
      download_config=tfds.download.DownloadConfig())
  assert a.is_prepared() and not b.is_prepared()
  ds = tasks.load_split("modular", "train", tmp_path, num_train=4, num_test=2)
  assert len(ds) == 4
  # A ready task object is accepted as well.
  c = tasks.make_builder("modular", tmp_path,
                         task=tasks.ModularTask(max_modulus=50),
                         num_train=4, num_test=2)
  assert c.builder_config.name == b.builder_config.name


def test_presets_and_argument_errors(tmp_path):
  easy = tasks.make_builder("countdown", tmp_path, name="easy")
  assert easy.builder_config.task.num_count == 3
  default = tasks.make_builder("countdown", tmp_path)
  assert default.builder_config.name == "default"
  with pytest.raises(ValueError, match="preset"):
    tasks.make_builder("countdown", tmp_path, name="easy", seed=1)
  with pytest.raises(ValueError, match="num_trian"):
    tasks.make_builder("countdown", tmp_path, num_trian=5)
  with pytest.raises(ValueError, match="known tasks"):
    tasks.make_builder("nope", tmp_path)
  with pytest.raises(ValueError, match="num_train"):
    tasks.make_builder("countdown", tmp_path, num_train=0)
  with pytest.raises(ValueError, match="unknown split 'validation'"):
    tasks.load_split("rare", "validation", tmp_path, num_train=2, num_test=2)


def test_features_decode_without_tensorflow(tmp_path):
  ds = tasks.load_split("countdown", "test", tmp_path, num_train=3,
                        num_test=3, num_count=3)
  record = ds[2]
  assert isinstance(record["numbers"], np.ndarray)
  assert record["numbers"].dtype == np.int64 and record["numbers"].shape == (3,)
  assert isinstance(record["solution"], bytes)
  assert int(record["target"]) >= 10
  assert [r["target"] for r in ds.__getitems__([0, 2])] == [
      ds[0]["target"], ds[2]["target"]]
  assert "tensorflow" not in sys.modules


def _write_jsonl(path, examples, **extra):
  with open(path, "w", encoding="utf-8") as f:
    for ex in examples:
      f.write(json.dumps({"question": ex["question"], "answer": ex["answer"],
                          **extra}) + "\n")
    f.write("\n")  # a blank line is skipped


@pytest.mark.parametrize("style", ["gsm8k", "math"])
def test_math_word_round_trip_from_manual_jsonl(style, tmp_path):
  task = tasks.get_task("math_word", style=style)
  manual = tmp_path / "manual"
  manual.mkdir()
  train, test = task.generate(1, 7), task.generate(2, 3)
  _write_jsonl(manual / "train.jsonl", train, id=1)
  _write_jsonl(manual / "test.jsonl", test)
  for split, want in (("train", train), ("test", test)):
    ds = tasks.load_split("math_word", split, tmp_path / "data",
                          manual_dir=manual)
    got = [task.from_record(ds[i]) for i in range(len(ds))]
    assert got == want
    for r in (ds[i] for i in range(len(ds))):
      assert task.verify(r, task.reference(r)).correct
  assert "tensorflow" not in sys.modules


def test_math_word_other_keys_and_splits(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  with open(manual / "dev.jsonl", "w", encoding="utf-8") as f:
    f.write(json.dumps({"problem": "1+1?", "solution": "$\\boxed{2}$"}) + "\n")
  ds = tasks.load_split("math_word", "dev", tmp_path / "data",
                        manual_dir=manual, splits=("dev",),
                        question_key="problem", answer_key="solution")
  assert len(ds) == 1 and ds[0]["final"] == b"2"


def test_math_word_missing_files_name_the_expected_path(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError, match=str(missing / "train.jsonl")):
    tasks.load_split("math_word", "train", tmp_path / "data",
                     manual_dir=missing)
  # The TFDS default manual dir, when none is given.
  with pytest.raises(FileNotFoundError,
                     match=str(tmp_path / "data" / "downloads" / "manual")):
    tasks.load_split("math_word", "train", tmp_path / "data")
  # The builder itself, used without load_split.
  manual = tmp_path / "partial"
  manual.mkdir()
  _write_jsonl(manual / "train.jsonl",
               tasks.get_task("math_word").generate(0, 2))
  builder = tasks.make_builder("math_word", tmp_path / "data2")
  with pytest.raises(FileNotFoundError, match=str(manual / "test.jsonl")):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def test_math_word_bad_line_names_file_and_line(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "train.jsonl").write_text(
      json.dumps({"question": "q", "answer": "#### 1"}) + "\n"
      + json.dumps({"question": "q", "answer": "no marker"}) + "\n")
  with pytest.raises(ValueError, match=r"train\.jsonl:2: .*no final answer"):
    tasks.load_split("math_word", "train", tmp_path / "data",
                     manual_dir=manual, splits=("train",))
