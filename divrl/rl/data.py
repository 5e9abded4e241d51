"""Task data for training: examples, tokenised prompts, a resumable stream.

Examples come from the task's TFDS builder (array_record, read through
``as_data_source``) when ``use_tfds`` is set, or straight from
``task.generate`` otherwise; both give the same examples for the same seed.
Prompts are ``<bos> + prompt text`` with a character tokenizer over the
task's alphabet, left-padded to a fixed width so that every step compiles
once.

``PromptStream`` hands out prompts in a seeded order, one reshuffle per pass
over the split; its only state is an integer ``position`` (saved in
checkpoints), so a resumed run sees exactly the prompts the uninterrupted
run would have seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from divrl import tasks as tasks_lib
from divrl.models.tokenizer import CharTokenizer


def make_tokenizer(task) -> CharTokenizer:
  """The character tokenizer for a toy task (pad=0, bos=1, eos=2)."""
  return CharTokenizer(task.alphabet)


def load_examples(task, task_name: str, task_kwargs: Mapping[str, Any],
                  split: str, *, train_size: int, test_size: int, seed: int,
                  use_tfds: bool = True,
                  data_dir: str | None = None) -> list[dict[str, Any]]:
  """The examples of ``split`` ("train" or "test") of ``task``.

  ``task_name`` and ``task_kwargs`` name the task's TFDS builder config
  (the task object itself is built once by the caller).

  With ``use_tfds`` they are read through the task's TFDS builder
  (array_record, ``as_data_source``; prepared into ``data_dir`` on first
  use). Without it they come from ``task.generate`` with the builder's own
  seeding (``divrl.tasks.builders.split_rng``), so both paths give the same
  examples.
  """
  if split not in ("train", "test"):
    raise ValueError(f"split: unknown split {split!r}; use train or test")
  size = train_size if split == "train" else test_size
  if use_tfds:
    if not data_dir:
      raise ValueError("data_dir: needed when use_tfds is set")
    source = tasks_lib.load_split(task_name, split, data_dir, seed=seed,
                                  num_train=train_size, num_test=test_size,
                                  **dict(task_kwargs))
    return [task.from_record(source[i]) for i in range(len(source))]
  from divrl.tasks import builders  # pylint: disable=g-import-not-at-top
  return task.generate(builders.split_rng(seed, split), size)


def encode_prompts(tokenizer: CharTokenizer, texts: Sequence[str],
                   width: int) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded ``(tokens int32 [N,width], mask bool [N,width])``."""
  toks = np.full((len(texts), width), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(texts), width), bool)
  for i, text in enumerate(texts):
    ids = [tokenizer.bos_id] + tokenizer.encode(text)
    if len(ids) > width:
      raise ValueError(f"prompt {i} has {len(ids)} tokens, more than the "
                       f"prompt width {width}")
    toks[i, width - len(ids):] = ids
    mask[i, width - len(ids):] = True
  return toks, mask


def prompt_width(tokenizer: CharTokenizer, task, examples) -> int:
  """Tokens of the longest ``<bos> + prompt`` among ``examples``."""
  return 1 + max(len(tokenizer.encode(task.prompt(e))) for e in examples)


@dataclasses.dataclass
class PromptStream:
  """Seeded, resumable order over a list of examples."""
  num_examples: int
  seed: int
  position: int = 0

  def _order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(
        self.num_examples)

  def indices(self, count: int, position: int | None = None) -> np.ndarray:
    """The next ``count`` example indices from ``position`` (no advance)."""
    pos = self.position if position is None else position
    out = []
    while len(out) < count:
      epoch, offset = divmod(pos, self.num_examples)
      take = min(count - len(out), self.num_examples - offset)
      out.extend(self._order(epoch)[offset:offset + take].tolist())
      pos += take
    return np.asarray(out, np.int64)

  def next(self, count: int) -> np.ndarray:
    out = self.indices(count)
    self.position += count
    return out
