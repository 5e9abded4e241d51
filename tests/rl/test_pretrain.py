"""Pre-training of the toy base model (divrl.rl.pretrain): the skewed SFT
mixture, the config hash and base directory, and the cached base (a tiny
1-layer model pre-trained for 3 steps into the session's ``cache_root``)."""

import json
import os
from collections import Counter

import jax
import numpy as np
import pytest
from flax import nnx

from divrl import tasks
from divrl.config import default_config
from divrl.models.decoder import DecoderConfig
from divrl.models.tokenizer import CharTokenizer
from divrl.rl import data as data_lib
from divrl.rl import pretrain

KWARGS = dict(num_count=3, max_number=9, min_target=5, max_target=20)


class _FakeTask:
  """Examples ``{"sols": [...], "ref": str}``; records the limits asked."""

  def __init__(self):
    self.limits = []

  def solutions(self, example, limit=None):
    self.limits.append(limit)
    return list(example["sols"])[:limit]

  def reference(self, example):
    return example["ref"]

  def wrong_answer(self, example, rng):
    return f"wrong{int(rng.integers(3))}"


def _targets(examples, seed=0, task=None, **kw):
  kw = {"num_targets": 10000, "skew": 1.5, "wrong_share": 0.0,
        "max_solutions": 16, **kw}
  return pretrain.sft_targets(task or _FakeTask(), examples,
                              np.random.default_rng(seed), **kw)


def _zipf(k, skew):
  w = (np.arange(k) + 1.0) ** -skew
  return w / w.sum()


def _shares(answers):
  counts = Counter(answers)
  return np.array(sorted(counts.values(), reverse=True)) / len(answers)


# --- sft_targets -------------------------------------------------------------


@pytest.mark.parametrize("skew", [0.0, 1.0, 1.5])
def test_sft_targets_follow_the_zipf_weights(skew):
  examples = [{"sols": ["a", "b", "c", "d"], "ref": "a"}]
  pairs = _targets(examples, skew=skew)
  assert len(pairs) == 10000
  assert {i for i, _ in pairs} == {0}
  assert {a for _, a in pairs} == {"a", "b", "c", "d"}
  # The shuffle hides which solution gets which weight; the sorted shares
  # are the Zipf weights (1, 2^-s, 3^-s, 4^-s) / sum.
  np.testing.assert_allclose(_shares([a for _, a in pairs]), _zipf(4, skew),
                             atol=0.02)


def test_sft_targets_draw_wrong_answers_at_about_wrong_share():
  examples = [{"sols": ["a", "b", "c"], "ref": "a"}] * 5
  pairs = _targets(examples, num_targets=5000, wrong_share=0.3)
  wrong = np.mean([a.startswith("wrong") for _, a in pairs])
  assert 0.26 < wrong < 0.34
  # The correct ones still follow the Zipf weights.
  right = [a for _, a in pairs if not a.startswith("wrong")]
  assert set(right) <= {"a", "b", "c"}
  all_wrong = _targets(examples, num_targets=200, wrong_share=1.0)
  assert all(a.startswith("wrong") for _, a in all_wrong)
  none_wrong = _targets(examples, num_targets=200, wrong_share=0.0)
  assert not any(a.startswith("wrong") for _, a in none_wrong)


def test_sft_targets_cover_the_examples_uniformly():
  examples = [{"sols": [f"s{i}"], "ref": f"s{i}"} for i in range(5)]
  pairs = _targets(examples, num_targets=5000)
  counts = Counter(i for i, _ in pairs)
  assert sorted(counts) == [0, 1, 2, 3, 4]
  assert all(800 < c < 1200 for c in counts.values())
  # The answer belongs to its example.
  assert all(a == f"s{i}" for i, a in pairs)


def test_sft_targets_shuffle_the_solutions_of_every_example():
  """Which solution dominates differs between examples: over many examples
  every solution gets about the same share (unshuffled, "a" would get
  _zipf(4, 1.5)[0] ~ 0.6)."""
  examples = [{"sols": ["a", "b", "c", "d"], "ref": "a"}] * 1000
  pairs = _targets(examples)
  shares = Counter(a for _, a in pairs)
  for answer in "abcd":
    assert abs(shares[answer] / len(pairs) - 0.25) < 0.06, shares


def test_sft_targets_limit_solutions_and_fall_back_to_the_reference():
  task = _FakeTask()
  examples = [{"sols": ["a", "b", "c", "d"], "ref": "a"}]
  pairs = _targets(examples, task=task, max_solutions=2)
  assert task.limits == [2]
  answers = [a for _, a in pairs]
  assert len(set(answers)) == 2 and set(answers) <= {"a", "b", "c", "d"}
  np.testing.assert_allclose(_shares(answers), _zipf(2, 1.5), atol=0.02)
  no_solutions = _targets([{"sols": [], "ref": "r"}], num_targets=50)
  assert [a for _, a in no_solutions] == ["r"] * 50


def test_sft_targets_are_seeded():
  examples = [{"sols": ["a", "b", "c"], "ref": "a"}] * 4
  kw = dict(num_targets=100, wrong_share=0.2)
  assert _targets(examples, seed=3, **kw) == _targets(examples, seed=3, **kw)
  assert _targets(examples, seed=3, **kw) != _targets(examples, seed=4, **kw)


def test_sft_targets_on_countdown_are_correct_or_wrong_answers():
  task = tasks.get_task("countdown", **KWARGS)
  examples = task.generate(0, 8)
  pairs = _targets(examples, task=task, num_targets=300, wrong_share=0.5,
                   max_solutions=4)
  wrong = 0
  for i, answer in pairs:
    verdict = task.verify(examples[i], answer)
    if verdict.correct:
      assert answer in task.solutions(examples[i], limit=4)
    else:
      wrong += 1
  assert 0.35 < wrong / len(pairs) < 0.65


# --- config_hash, base_dir, model_config -------------------------------------


def _change(c, key, value):
  node = c
  *parents, last = key.split(".")
  for p in parents:
    node = node[p]
  node[last] = value
  return c


@pytest.mark.parametrize("key, value", [
    ("task.name", "modular"), ("task.kwargs.countdown.max_number", 7),
    ("task.train_size", 17), ("task.test_size", 5),
    ("model.preset", "small25m"), ("model.overrides", {"num_layers": 1}),
    ("base.pretrain.steps", 7), ("base.pretrain.skew", 0.5),
    ("base.pretrain.wrong_share", 0.0), ("base.pretrain.num_targets", 9),
    ("base.pretrain.learning_rate", 1e-4), ("seed", 1),
    ("sampling.max_new_tokens", 12),
])
def test_config_hash_changes_with_what_determines_the_base(key, value):
  base = pretrain.config_hash(default_config())
  assert len(base) == 12 and int(base, 16) >= 0
  assert pretrain.config_hash(default_config()) == base
  assert pretrain.config_hash(_change(default_config(), key, value)) != base


@pytest.mark.parametrize("key, value", [
    ("train.steps", 3), ("train.learning_rate", 0.5), ("workdir", "/x"),
    ("objective.advantage", "rloo"), ("base.cache_root", "/elsewhere"),
    ("base.dir", "/some/base"), ("eval.num_samples", 3), ("mesh.data", 1),
    ("sampling.num_prompts", 2), ("sampling.temperature", 0.5),
    ("checkpoint.every", 5), ("log.progress", False),
    # Where the files live, and knobs of tasks the run does not use.
    ("task.data_dir", "/data/elsewhere"), ("task.use_tfds", False),
    ("task.kwargs.rare.max_target", 500),
])
def test_config_hash_ignores_the_rest(key, value):
  assert pretrain.config_hash(_change(default_config(), key, value)) == (
      pretrain.config_hash(default_config()))


def test_base_dir(tmp_path, monkeypatch):
  c = default_config()
  c.base.cache_root = str(tmp_path / "bases")
  assert pretrain.base_dir(c) == os.path.join(
      str(tmp_path), "bases", f"countdown-tiny-{pretrain.config_hash(c)}")
  c.seed = 3
  assert pretrain.base_dir(c).endswith(f"-{pretrain.config_hash(c)}")
  monkeypatch.chdir(tmp_path)
  c.base.cache_root = "rel"
  assert pretrain.base_dir(c) == os.path.join(
      str(tmp_path), "rel", f"countdown-tiny-{pretrain.config_hash(c)}")
  c.base.dir = "mine/base"
  assert pretrain.base_dir(c) == os.path.join(str(tmp_path), "mine", "base")


def test_model_config_uses_the_preset_overrides_and_vocabulary():
  c = default_config()
  tok = CharTokenizer("0123456789")
  mcfg = pretrain.model_config(c, tok)
  assert mcfg == DecoderConfig.preset("tiny", vocab_size=13)
  c.model.overrides = {"num_layers": 1, "hidden_size": 32}
  mcfg = pretrain.model_config(c, tok)
  assert (mcfg.num_layers, mcfg.hidden_size, mcfg.vocab_size) == (1, 32, 13)
  c.model.overrides = {"vocab_size": 40}
  assert pretrain.model_config(c, tok).vocab_size == 40


# --- The cached base ---------------------------------------------------------


def tiny_config(cache_root):
  c = default_config()
  c.task.name = "countdown"
  c.task.kwargs.countdown.update(KWARGS)
  c.task.train_size = 16
  c.task.test_size = 4
  c.model.overrides = {"num_layers": 1}
  c.base.cache_root = str(cache_root)
  c.base.pretrain.steps = 3
  c.base.pretrain.num_targets = 64
  c.base.pretrain.batch_size = 8
  c.sampling.max_new_tokens = 10
  return c


def _leaves(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


@pytest.fixture(scope="module")
def base(cache_root):
  config = tiny_config(cache_root)
  logs = []
  model, tokenizer, path = pretrain.get_or_pretrain_base(config,
                                                         log=logs.append)
  return config, model, tokenizer, path, logs


def test_get_or_pretrain_base_pretrains_then_loads(base):
  config, model, tokenizer, path, logs = base
  assert path == pretrain.base_dir(config)
  assert logs[0] == f"base model: cache miss, pre-training into {path}"
  assert [l.split("  ")[0] for l in logs[1:]] == [
      "pretrain step 1/3", "pretrain step 2/3", "pretrain step 3/3"]
  assert sorted(os.listdir(path)) == ["params", "summary.json",
                                      "tokenizer.json"]
  again = []
  model2, tokenizer2, path2 = pretrain.get_or_pretrain_base(config,
                                                            log=again.append)
  assert again == [f"base model: cache hit, loading {path}"]
  assert path2 == path
  assert tokenizer2.alphabet == tokenizer.alphabet
  for x, y in zip(_leaves(model), _leaves(model2), strict=True):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


def test_saved_summary_tokenizer_and_load_base(base):
  config, model, tokenizer, path, _ = base
  summary = json.loads(open(os.path.join(path, "summary.json")).read())
  assert summary["hash"] == pretrain.config_hash(config)
  assert summary["num_targets"] == 64
  assert np.isfinite(summary["final_loss"]) and summary["final_loss"] > 0
  task = tasks.get_task("countdown", **KWARGS)
  assert tokenizer.alphabet == data_lib.make_tokenizer(task).alphabet
  assert CharTokenizer.load(os.path.join(path, "tokenizer.json")) == tokenizer
  mcfg = pretrain.model_config(config, tokenizer)
  assert model.config == mcfg
  loaded = pretrain.load_base(path, mcfg)
  for x, y in zip(_leaves(model), _leaves(loaded), strict=True):
    np.testing.assert_array_equal(x, y)


def test_pretrain_is_seeded_and_moves_the_params(base):
  config, model, _, _, _ = base
  again, _, summary = pretrain.pretrain(config, log=lambda *a: None)
  for x, y in zip(_leaves(model), _leaves(again), strict=True):
    np.testing.assert_array_equal(x, y)
  init = nnx.state(type(model)(model.config, rngs=nnx.Rngs(config.seed)))
  moved = [not np.array_equal(np.asarray(a), b) for a, b in
           zip(jax.tree.leaves(init), _leaves(model), strict=True)]
  assert any(moved)
  assert summary["hash"] == pretrain.config_hash(config)


def test_the_same_base_is_found_from_two_workdirs_and_data_dirs(base,
                                                               tmp_path):
  config, _, _, path, _ = base
  other = tiny_config(config.base.cache_root)
  other.workdir = str(tmp_path / "another_run")
  other.task.data_dir = str(tmp_path / "another_tfds")
  other.task.use_tfds = not config.task.use_tfds
  logs = []
  _, _, path2 = pretrain.get_or_pretrain_base(other, log=logs.append)
  assert path2 == path and logs == [f"base model: cache hit, loading {path}"]
