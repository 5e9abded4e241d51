"""Task data for training (divrl.rl.data): the tokenizer, examples from TFDS
or ``task.generate``, left-padded prompts, and the seeded, resumable
``PromptStream``."""

import dataclasses

import numpy as np
import pytest

from divrl import tasks
from divrl.models.tokenizer import CharTokenizer
from divrl.rl import data
from divrl.tasks import builders

KWARGS = dict(num_count=3, max_number=9, min_target=5, max_target=20)


@dataclasses.dataclass
class _PromptTask:
  alphabet: str = "abc"

  def prompt(self, example):
    return example["p"]


# --- tokenizer and prompts ---------------------------------------------------


def test_make_tokenizer_is_a_char_tokenizer_over_the_task_alphabet():
  task = tasks.get_task("countdown", **KWARGS)
  tok = data.make_tokenizer(task)
  assert isinstance(tok, CharTokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.alphabet == task.alphabet
  assert tok.vocab_size == 3 + len(task.alphabet)
  ex = task.generate(0, 1)[0]
  assert tok.decode(tok.encode(task.prompt(ex))) == task.prompt(ex)


def test_encode_prompts_left_pads_after_bos():
  tok = CharTokenizer("abc")   # a=3, b=4, c=5
  toks, mask = data.encode_prompts(tok, ["ab", "", "c", "abc"], 4)
  assert toks.dtype == np.int32 and mask.dtype == bool
  np.testing.assert_array_equal(toks, [[0, 1, 3, 4],
                                       [0, 0, 0, 1],
                                       [0, 0, 1, 5],
                                       [1, 3, 4, 5]])
  np.testing.assert_array_equal(mask, [[0, 1, 1, 1],
                                       [0, 0, 0, 1],
                                       [0, 0, 1, 1],
                                       [1, 1, 1, 1]])
  empty_toks, empty_mask = data.encode_prompts(tok, [], 3)
  assert empty_toks.shape == empty_mask.shape == (0, 3)


def test_encode_prompts_rejects_a_too_long_prompt():
  tok = CharTokenizer("abc")
  with pytest.raises(ValueError, match="prompt 1 has 5 tokens, more than the"
                     " prompt width 4"):
    data.encode_prompts(tok, ["ab", "abca"], 4)
  with pytest.raises(ValueError, match="'x' at position 1"):
    data.encode_prompts(tok, ["ax"], 8)


def test_prompt_width_is_bos_plus_the_longest_prompt():
  tok = CharTokenizer("abc")
  examples = [{"p": "ab"}, {"p": "abcab"}, {"p": "c"}]
  assert data.prompt_width(tok, _PromptTask(), examples) == 6
  assert data.prompt_width(tok, _PromptTask(), [{"p": ""}]) == 1
  width = data.prompt_width(tok, _PromptTask(), examples)
  toks, mask = data.encode_prompts(tok, [e["p"] for e in examples], width)
  assert mask[1].all() and mask.sum() == 1 * 3 + 2 + 5 + 1


# --- load_examples -----------------------------------------------------------


def test_load_examples_from_generate():
  task = tasks.get_task("countdown", **KWARGS)
  kw = dict(train_size=10, test_size=4, seed=3, use_tfds=False)
  train = data.load_examples(task, "countdown", KWARGS, "train", **kw)
  test = data.load_examples(task, "countdown", KWARGS, "test", **kw)
  assert train == task.generate(builders.split_rng(3, "train"), 10)
  assert test == task.generate(builders.split_rng(3, "test"), 4)
  assert len(train) == 10 and len(test) == 4
  assert train[:4] != test
  assert data.load_examples(task, "countdown", KWARGS, "train",
                            **{**kw, "seed": 4}) != train


def test_load_examples_from_tfds_equals_generate(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  task = tasks.get_task("countdown", **KWARGS)
  kw = dict(train_size=6, test_size=3, seed=1)
  for split in ("train", "test"):
    got = data.load_examples(task, "countdown", KWARGS, split, **kw,
                             use_tfds=True, data_dir=str(tmp_path))
    want = data.load_examples(task, "countdown", KWARGS, split, **kw,
                              use_tfds=False)
    assert got == want
    assert len(got) == (6 if split == "train" else 3)


def test_load_examples_errors():
  task = tasks.get_task("countdown", **KWARGS)
  kw = dict(train_size=4, test_size=2, seed=0)
  with pytest.raises(ValueError, match="split: unknown split 'validation';"
                     " use train or test"):
    data.load_examples(task, "countdown", KWARGS, "validation", **kw,
                       use_tfds=False)
  with pytest.raises(ValueError, match="data_dir: needed when use_tfds is"
                     " set"):
    data.load_examples(task, "countdown", KWARGS, "train", **kw,
                       use_tfds=True)


# --- PromptStream ------------------------------------------------------------


def test_stream_passes_are_seeded_permutations():
  stream = data.PromptStream(7, seed=5)
  got = stream.next(21)
  assert got.dtype == np.int64
  for epoch in range(3):
    np.testing.assert_array_equal(
        got[7 * epoch:7 * (epoch + 1)],
        np.random.default_rng([5, epoch]).permutation(7))
  assert stream.position == 21


def test_stream_reshuffles_every_pass():
  stream = data.PromptStream(20, seed=0)
  passes = stream.next(60).reshape(3, 20)
  for p in passes:
    assert sorted(p.tolist()) == list(range(20))
  assert not np.array_equal(passes[0], passes[1])
  assert not np.array_equal(passes[1], passes[2])


def test_stream_seed_changes_the_order():
  a = data.PromptStream(30, seed=0).next(30)
  b = data.PromptStream(30, seed=0).next(30)
  c = data.PromptStream(30, seed=1).next(30)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_stream_indices_do_not_advance_and_next_does():
  stream = data.PromptStream(5, seed=2)
  first = stream.indices(3)
  np.testing.assert_array_equal(stream.indices(3), first)
  assert stream.position == 0
  np.testing.assert_array_equal(stream.next(3), first)
  assert stream.position == 3
  np.testing.assert_array_equal(stream.indices(4, position=0)[:3], first)
  assert stream.position == 3
  assert stream.next(0).shape == (0,)
  assert stream.position == 3


def test_stream_resumes_from_position_across_pass_boundaries():
  full = data.PromptStream(7, seed=9)
  chunks = [full.next(3) for _ in range(8)]   # 24 prompts, 3+ passes
  np.testing.assert_array_equal(
      np.concatenate(chunks), data.PromptStream(7, seed=9).indices(24))
  resumed = data.PromptStream(7, seed=9, position=9)
  for chunk in chunks[3:]:
    np.testing.assert_array_equal(resumed.next(3), chunk)
  assert resumed.position == full.position == 24
  # One call larger than the split wraps over several passes.
  long = data.PromptStream(3, seed=1).indices(10)
  for epoch in range(3):
    assert sorted(long[3 * epoch:3 * epoch + 3].tolist()) == [0, 1, 2]
  np.testing.assert_array_equal(
      long[9:], np.random.default_rng([1, 3]).permutation(3)[:1])
