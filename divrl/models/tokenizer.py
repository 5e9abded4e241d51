"""Tokenizers: a small protocol, a character tokenizer and a HF wrapper.

``Tokenizer`` is the interface the rest of divrl relies on: ``encode(text)``
returns plain token ids (no special tokens are added; prepend ``bos_id``
yourself, or use ``encode_batch(..., add_bos=True)``), ``decode(ids)`` turns
ids back into text, and ``vocab_size``, ``pad_id``, ``bos_id`` (may be None)
and ``eos_id`` describe the special tokens.

Decoding rule (shared by both implementations). ``decode`` is meant for
sampler output, i.e. a left-padded prompt and/or a response that ends with
``eos_id`` followed by padding:

1. leading ``pad_id`` tokens are dropped (left padding; this also makes the
   rule work when ``pad_id == eos_id``);
2. decoding stops at the first ``eos_id`` (exclusive) unless
   ``stop_at_eos=False``;
3. all remaining special tokens (pad, bos, eos and, for ``HFTokenizer``,
   every token the tokenizer marks as special) are skipped.

``CharTokenizer(alphabet)`` maps one character to one id, after the special
tokens ``("<pad>", "<bos>", "<eos>")`` at ids 0, 1, 2. It is deterministic and
persists as JSON (``to_dict``/``from_dict``, ``save``/``load``), so toy
experiments can record the exact vocabulary.

``HFTokenizer.from_file(path)`` wraps a ``tokenizers.Tokenizer`` read from a
local ``tokenizer.json`` (or a directory holding one); pad/bos/eos tokens come
from the arguments, else ``tokenizer_config.json``, else
``special_tokens_map.json`` beside it. Nothing is downloaded. If no pad token
is known, ``pad_id`` falls back to ``eos_id`` (common for Llama checkpoints).
Note that a model's embedding may have more rows than ``vocab_size`` (Qwen2
pads it), which is harmless.

``encode_batch(tokenizer, texts, max_len=L)`` returns numpy ``ids int32
[N, L]`` and ``mask bool [N, L]`` with every row padded to exactly ``L``
(static shapes for jit), on the left by default as the sampler expects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import tokenizers

DEFAULT_SPECIALS = ("<pad>", "<bos>", "<eos>")


@runtime_checkable
class Tokenizer(Protocol):
  """What divrl needs from a tokenizer; see the module docstring."""

  @property
  def vocab_size(self) -> int:
    """Number of token ids (ids are ``0 .. vocab_size - 1``)."""
    ...

  @property
  def pad_id(self) -> int:
    """Id used for padding."""
    ...

  @property
  def bos_id(self) -> int | None:
    """Id of the beginning-of-sequence token, or None if there is none."""
    ...

  @property
  def eos_id(self) -> int:
    """Id of the end-of-sequence token."""
    ...

  def encode(self, text: str) -> list[int]:
    """Token ids of ``text``, without any special tokens added."""
    ...

  def decode(self, ids: Iterable[int]) -> str:
    """Text of ``ids``, following the decoding rule of the module docstring."""
    ...


def _as_id_list(ids: Any) -> list[int]:
  arr = np.asarray(ids)
  if arr.ndim != 1:
    raise ValueError(f"ids must be a 1-D sequence, got shape {arr.shape}")
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
  return [int(i) for i in arr]


def _strip(ids: list[int], pad_id: int, eos_id: int,
           stop_at_eos: bool) -> list[int]:
  """Steps 1 and 2 of the decoding rule."""
  start = 0
  while start < len(ids) and ids[start] == pad_id:
    start += 1
  ids = ids[start:]
  if stop_at_eos and eos_id in ids:
    ids = ids[:ids.index(eos_id)]
  return ids


# ----------------------------------------------------------------------------
# CharTokenizer
# ----------------------------------------------------------------------------

class CharTokenizer:
  """One id per character after the special tokens; see the module docstring.

  Attributes:
    alphabet: The characters, in id order (character ``alphabet[j]`` has id
      ``num_specials + j``).
    specials: ``(pad, bos, eos)`` token names; ``bos`` may be None for a
      tokenizer without a BOS token, in which case ``eos`` gets id 1.
  """

  def __init__(self, alphabet: str, *,
               specials: Sequence[str | None] = DEFAULT_SPECIALS):
    """Builds the tokenizer.

    Args:
      alphabet: Non-empty string of distinct characters.
      specials: ``(pad, bos, eos)`` names; pad and eos are required strings,
        bos may be None.

    Raises:
      ValueError: naming the offending argument (a duplicate character and
        its positions, a malformed ``specials``).
    """
    if not isinstance(alphabet, str) or not alphabet:
      raise ValueError(f"alphabet must be a non-empty string, got "
                       f"{alphabet!r}")
    first: dict[str, int] = {}
    for i, ch in enumerate(alphabet):
      if ch in first:
        raise ValueError(f"alphabet has the character {ch!r} twice, at "
                         f"positions {first[ch]} and {i}")
      first[ch] = i
    specials = tuple(specials)
    if len(specials) != 3:
      raise ValueError("specials must be (pad, bos, eos) names, got "
                       f"{specials!r}")
    pad, bos, eos = specials
    for role, name in (("pad", pad), ("eos", eos), ("bos", bos)):
      if name is None and role == "bos":
        continue
      if not isinstance(name, str) or not name:
        raise ValueError(f"specials: the {role} token must be a non-empty "
                         f"string, got {name!r}")
    present = [s for s in specials if s is not None]
    if len(set(present)) != len(present):
      raise ValueError(f"specials must be distinct, got {specials!r}")
    self.alphabet = alphabet
    self.specials = specials
    self._pad_id = 0
    self._bos_id = None if bos is None else 1
    self._eos_id = len(present) - 1
    self._offset = len(present)
    self._char_to_id = {ch: self._offset + i for i, ch in enumerate(alphabet)}

  @property
  def vocab_size(self) -> int:
    """Number of specials plus the alphabet size."""
    return self._offset + len(self.alphabet)

  @property
  def pad_id(self) -> int:
    """Always 0."""
    return self._pad_id

  @property
  def bos_id(self) -> int | None:
    """1, or None when ``specials[1]`` is None."""
    return self._bos_id

  @property
  def eos_id(self) -> int:
    """The last special id (2 by default)."""
    return self._eos_id

  def encode(self, text: str) -> list[int]:
    """One id per character of ``text``; no special tokens are added.

    Raises:
      ValueError: for a character outside the alphabet, naming it and its
        position in ``text``.
    """
    if not isinstance(text, str):
      raise ValueError(f"text must be a str, got {type(text).__name__}")
    out = []
    for i, ch in enumerate(text):
      tid = self._char_to_id.get(ch)
      if tid is None:
        raise ValueError(f"character {ch!r} at position {i} of text is not "
                         "in the tokenizer's alphabet")
      out.append(tid)
    return out

  def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
    """The text of ``ids`` (see the decoding rule in the module docstring).

    Raises:
      ValueError: for an id outside ``[0, vocab_size)``, naming it and its
        position.
    """
    ids = _as_id_list(ids)
    for i, tid in enumerate(ids):
      if not 0 <= tid < self.vocab_size:
        raise ValueError(f"id {tid} at position {i} is outside "
                         f"[0, {self.vocab_size})")
    ids = _strip(ids, self.pad_id, self.eos_id, stop_at_eos)
    return "".join(self.alphabet[t - self._offset] for t in ids
                   if t >= self._offset)

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable description; ``from_dict`` inverts it."""
    return {"type": "CharTokenizer", "alphabet": self.alphabet,
            "specials": list(self.specials)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "CharTokenizer":
    """Rebuilds a tokenizer from ``to_dict()`` output."""
    if d.get("type") != "CharTokenizer":
      raise ValueError(f"not a CharTokenizer dict: type={d.get('type')!r}")
    if "alphabet" not in d:
      raise ValueError("CharTokenizer dict lacks the field 'alphabet'")
    return cls(d["alphabet"], specials=tuple(d.get("specials",
                                                   DEFAULT_SPECIALS)))

  def save(self, path: str | os.PathLike) -> None:
    """Writes ``to_dict()`` as JSON to the file ``path``."""
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self.to_dict(), f, ensure_ascii=False, indent=2)
      f.write("\n")

  @classmethod
  def load(cls, path: str | os.PathLike) -> "CharTokenizer":
    """Reads a tokenizer written by ``save``."""
    with open(path, encoding="utf-8") as f:
      return cls.from_dict(json.load(f))

  def __eq__(self, other):
    return (isinstance(other, CharTokenizer)
            and self.to_dict() == other.to_dict())

  def __hash__(self):
    return hash((self.alphabet, self.specials))

  def __repr__(self):
    return (f"CharTokenizer(alphabet={self.alphabet!r}, "
            f"specials={self.specials!r})")


# ----------------------------------------------------------------------------
# HFTokenizer
# ----------------------------------------------------------------------------

def _token_content(value: Any) -> str | None:
  """A token string from a ``tokenizer_config.json`` entry (str or dict)."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, dict) and isinstance(value.get("content"), str):
    return value["content"]
  raise ValueError(f"cannot read a special token from {value!r}")


class HFTokenizer:
  """A ``tokenizers.Tokenizer`` behind the ``Tokenizer`` protocol."""

  def __init__(self, tokenizer, *, pad_token: str | int | None = None,
               bos_token: str | int | None = None,
               eos_token: str | int | None = None,
               add_special_tokens: bool = False):
    """Wraps ``tokenizer``.

    Args:
      tokenizer: A ``tokenizers.Tokenizer``.
      pad_token: Pad token string or id; defaults to the eos token.
      bos_token: BOS token string or id, or None for none.
      eos_token: EOS token string or id (required).
      add_special_tokens: Passed to ``tokenizer.encode``; True applies the
        tokenizer's post-processor (e.g. adds BOS), False (default) keeps
        ``encode`` free of special tokens as the protocol says.

    Raises:
      ValueError: naming a token that is not in the vocabulary, or
        ``eos_token`` when it is missing.
    """
    self.tokenizer = tokenizer
    self.add_special_tokens = add_special_tokens
    if eos_token is None:
      raise ValueError("eos_token is required (pass eos_token= or provide "
                       "tokenizer_config.json)")
    self._eos_id = self._resolve("eos_token", eos_token)
    self._bos_id = (None if bos_token is None
                    else self._resolve("bos_token", bos_token))
    self._pad_id = (self._eos_id if pad_token is None
                    else self._resolve("pad_token", pad_token))
    self._special_ids = {self._eos_id, self._pad_id}
    if self._bos_id is not None:
      self._special_ids.add(self._bos_id)
    self._special_ids.update(
        tid for tid, tok in tokenizer.get_added_tokens_decoder().items()
        if tok.special)

  def _resolve(self, arg: str, token: str | int) -> int:
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
      if not 0 <= int(token) < self.vocab_size:
        raise ValueError(f"{arg}={token} is outside [0, {self.vocab_size})")
      return int(token)
    tid = self.tokenizer.token_to_id(token)
    if tid is None:
      raise ValueError(f"{arg}={token!r} is not in the tokenizer's "
                       "vocabulary")
    return tid

  @classmethod
  def from_file(cls, path: str | os.PathLike, *,
                pad_token: str | int | None = None,
                bos_token: str | int | None = None,
                eos_token: str | int | None = None,
                add_special_tokens: bool = False) -> "HFTokenizer":
    """Loads ``tokenizer.json`` (a file, or a directory holding one).

    Special tokens not given as arguments are read from
    ``tokenizer_config.json``, else ``special_tokens_map.json``, next to the
    tokenizer file; an entry may be a string or a ``{"content": ...}`` dict.

    Raises:
      FileNotFoundError: naming the path when there is no tokenizer file.
      ValueError: see ``__init__``.
    """
    path = os.fspath(path)
    file = (os.path.join(path, "tokenizer.json") if os.path.isdir(path)
            else path)
    if not os.path.isfile(file):
      raise FileNotFoundError(f"tokenizer file {file} does not exist")
    tok = tokenizers.Tokenizer.from_file(file)
    folder = os.path.dirname(os.path.abspath(file))
    found: dict[str, str | None] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
      side = os.path.join(folder, name)
      if os.path.isfile(side):
        with open(side, encoding="utf-8") as f:
          data = json.load(f)
        for key in ("pad_token", "bos_token", "eos_token"):
          if key in data:  # Later files (tokenizer_config.json) win.
            try:
              found[key] = _token_content(data[key])
            except ValueError as e:
              raise ValueError(f"{side}: {key}: {e}") from None
    return cls(tok,
               pad_token=found.get("pad_token") if pad_token is None
               else pad_token,
               bos_token=found.get("bos_token") if bos_token is None
               else bos_token,
               eos_token=found.get("eos_token") if eos_token is None
               else eos_token,
               add_special_tokens=add_special_tokens)

  @property
  def vocab_size(self) -> int:
    """Vocabulary size including added tokens."""
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def pad_id(self) -> int:
    """Pad id (the eos id when no pad token is known)."""
    return self._pad_id

  @property
  def bos_id(self) -> int | None:
    """BOS id, or None."""
    return self._bos_id

  @property
  def eos_id(self) -> int:
    """EOS id."""
    return self._eos_id

  def encode(self, text: str) -> list[int]:
    """Token ids of ``text`` (special tokens only if ``add_special_tokens``)."""
    if not isinstance(text, str):
      raise ValueError(f"text must be a str, got {type(text).__name__}")
    return list(self.tokenizer.encode(
        text, add_special_tokens=self.add_special_tokens).ids)

  def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
    """The text of ``ids`` (see the decoding rule in the module docstring).

    Raises:
      ValueError: for an id outside ``[0, vocab_size)``, naming it and its
        position.
    """
    ids = _as_id_list(ids)
    for i, tid in enumerate(ids):
      if not 0 <= tid < self.vocab_size:
        raise ValueError(f"id {tid} at position {i} is outside "
                         f"[0, {self.vocab_size})")
    ids = _strip(ids, self.pad_id, self.eos_id, stop_at_eos)
    ids = [t for t in ids if t not in self._special_ids]
    return self.tokenizer.decode(ids, skip_special_tokens=True)


# ----------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------

def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], *, max_len: int,
                 pad_side: str = "left", add_bos: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Encodes and pads ``texts`` to exactly ``max_len`` tokens.

  Args:
    tokenizer: Any ``Tokenizer``.
    texts: The texts (a sequence of str, not a single str).
    max_len: Length ``L`` of every row.
    pad_side: ``"left"`` (default; prompts for the sampler) or ``"right"``.
    add_bos: Prepend ``tokenizer.bos_id`` to every text.

  Returns:
    ``(ids, mask)``: numpy ``int32 [N, L]`` ids with ``tokenizer.pad_id`` in
    the padding and ``bool [N, L]`` mask, True on real tokens.

  Raises:
    ValueError: when a text (with its BOS) is longer than ``max_len`` (naming
      its index and length), for a bad ``pad_side`` or ``max_len``, or
      ``add_bos`` without a BOS token.
  """
  if isinstance(texts, str):
    raise ValueError("texts must be a sequence of strings, not a single str")
  if pad_side not in ("left", "right"):
    raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
  if not isinstance(max_len, (int, np.integer)) or max_len < 1:
    raise ValueError(f"max_len must be a positive int, got {max_len!r}")
  if add_bos and tokenizer.bos_id is None:
    raise ValueError("add_bos=True but the tokenizer has no bos token")
  texts = list(texts)
  ids = np.full((len(texts), max_len), tokenizer.pad_id, np.int32)
  mask = np.zeros((len(texts), max_len), bool)
  for i, text in enumerate(texts):
    row = tokenizer.encode(text)
    if add_bos:
      row = [tokenizer.bos_id] + row
    n = len(row)
    if n > max_len:
      raise ValueError(f"text {i} has {n} tokens, more than max_len="
                       f"{max_len}")
    if n == 0:
      continue
    sl = slice(max_len - n, max_len) if pad_side == "left" else slice(0, n)
    ids[i, sl] = row
    mask[i, sl] = True
  return ids, mask
