"""Tests for divrl.models.tokenizer."""

import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from divrl.models import CharTokenizer, HFTokenizer, Tokenizer, encode_batch

ALPHABET = "abcdefghij +=0123456789"


# ---------------------------------------------------------- CharTokenizer --

def test_char_tokenizer_ids_and_round_trip():
  tok = CharTokenizer(ALPHABET)
  assert isinstance(tok, Tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.vocab_size == 3 + len(ALPHABET)
  assert tok.encode("ab") == [3, 4]
  assert tok.encode("") == []
  text = "12+30=42 abc"
  ids = tok.encode(text)
  assert all(3 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text
  assert tok.decode(np.asarray(ids, np.int32)) == text
  # Deterministic: a second instance gives the same ids.
  assert CharTokenizer(ALPHABET).encode(text) == ids


def test_char_tokenizer_decode_rule_for_specials():
  tok = CharTokenizer(ALPHABET)
  pad, bos, eos = tok.pad_id, tok.bos_id, tok.eos_id
  ids = [pad, pad, bos] + tok.encode("1+1=") + tok.encode("2") + [
      eos, pad, pad]
  assert tok.decode(ids) == "1+1=2"
  # Stops at the first eos; the rest is ignored.
  assert tok.decode(tok.encode("ab") + [eos] + tok.encode("cd")) == "ab"
  assert tok.decode(tok.encode("ab") + [eos] + tok.encode("cd"),
                    stop_at_eos=False) == "abcd"
  with pytest.raises(ValueError, match="id 99 at position 1"):
    tok.decode([3, 99])
  with pytest.raises(ValueError, match="1-D"):
    tok.decode([[3, 4]])


def test_char_tokenizer_unknown_character_named_with_position():
  tok = CharTokenizer(ALPHABET)
  with pytest.raises(ValueError, match=r"'X' at position 3"):
    tok.encode("abcX")


def test_char_tokenizer_custom_specials_and_no_bos():
  tok = CharTokenizer("xy", specials=("[P]", None, "[E]"))
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, None, 1,
                                                                  4)
  assert tok.encode("yx") == [3, 2]
  assert tok.decode([0, 3, 2, 1, 3]) == "yx"
  custom = CharTokenizer("xy", specials=("<p>", "<s>", "</s>"))
  # Special names are not characters: '<' is not in the alphabet.
  with pytest.raises(ValueError, match="'<' at position 0"):
    custom.encode("<s>")


@pytest.mark.parametrize("alphabet,specials,match", [
    ("", ("<pad>", "<bos>", "<eos>"), "alphabet"),
    ("abca", ("<pad>", "<bos>", "<eos>"), r"'a' twice, at positions 0 and 3"),
    ("ab", ("<pad>", "<eos>"), "specials"),
    ("ab", ("<pad>", "<bos>", None), "eos"),
    ("ab", ("<x>", "<bos>", "<x>"), "distinct"),
])
def test_char_tokenizer_bad_arguments(alphabet, specials, match):
  with pytest.raises(ValueError, match=match):
    CharTokenizer(alphabet, specials=specials)


def test_char_tokenizer_json_save_load(tmp_path):
  tok = CharTokenizer("hélo wrd", specials=("<pad>", None, "<eos>"))
  path = tmp_path / "tok.json"
  tok.save(path)
  loaded = CharTokenizer.load(path)
  assert loaded == tok
  assert loaded.encode("héllo world") == tok.encode("héllo world")
  assert CharTokenizer.from_dict(json.loads(path.read_text())) == tok
  assert CharTokenizer.from_dict(tok.to_dict()) == tok
  with pytest.raises(ValueError, match="type"):
    CharTokenizer.from_dict({"type": "Other", "alphabet": "ab"})


# ------------------------------------------------------------ HFTokenizer --

CORPUS = ["the quick brown fox jumps over the lazy dog",
          "a tiny corpus for a tiny byte level bpe tokenizer",
          "the fox and the dog are friends"] * 5
SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>"]


def _bpe(tmp_path, *, config=None, special_map=None):
  """A small byte-level BPE saved as tmp_path/tokenizer.json."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=300, special_tokens=SPECIALS,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False)
  tok.train_from_iterator(CORPUS, trainer=trainer)
  tok.save(str(tmp_path / "tokenizer.json"))
  if config is not None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
  if special_map is not None:
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(special_map))
  return tok


def test_hf_tokenizer_agrees_with_tokenizers(tmp_path):
  raw = _bpe(tmp_path, config={
      "bos_token": "<|bos|>",
      "eos_token": {"__type": "AddedToken", "content": "<|eos|>"},
      "pad_token": "<|pad|>"})
  for path in (tmp_path, tmp_path / "tokenizer.json"):
    tok = HFTokenizer.from_file(path)
    assert isinstance(tok, Tokenizer)
    assert tok.pad_id == raw.token_to_id("<|pad|>")
    assert tok.bos_id == raw.token_to_id("<|bos|>")
    assert tok.eos_id == raw.token_to_id("<|eos|>")
    assert tok.vocab_size == raw.get_vocab_size()
    for text in ["the quick dog", "unseen wörds 123!", ""]:
      ids = tok.encode(text)
      assert ids == raw.encode(text).ids
      assert tok.decode(ids) == raw.decode(ids) == text
  # Decoding: leading pads and specials dropped, stop at eos.
  ids = tok.encode("the fox")
  seq = [tok.pad_id, tok.pad_id, tok.bos_id] + ids + [
      tok.eos_id] + tok.encode(" dog") + [tok.pad_id]
  assert tok.decode(seq) == "the fox"
  assert tok.decode(seq, stop_at_eos=False) == "the fox dog"


def test_hf_tokenizer_specials_from_map_args_and_fallbacks(tmp_path):
  _bpe(tmp_path, special_map={"eos_token": {"content": "<|eos|>"},
                              "bos_token": "<|bos|>"})
  tok = HFTokenizer.from_file(tmp_path)
  # No pad token anywhere: falls back to eos; decode still works.
  assert tok.pad_id == tok.eos_id
  ids = [tok.pad_id, tok.pad_id] + tok.encode("a dog") + [tok.eos_id] * 3
  assert tok.decode(ids) == "a dog"
  # Arguments override the files.
  tok = HFTokenizer.from_file(tmp_path, pad_token="<|pad|>",
                              eos_token="<|pad|>", bos_token=None)
  assert tok.eos_id == tok.pad_id
  assert tok.bos_id is not None  # from the map file
  tok = HFTokenizer.from_file(tmp_path, eos_token=5)
  assert tok.eos_id == 5
  with pytest.raises(ValueError, match="pad_token='<nope>'"):
    HFTokenizer.from_file(tmp_path, pad_token="<nope>")


def test_hf_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    HFTokenizer.from_file(tmp_path)
  _bpe(tmp_path)  # No config files: eos must be given.
  with pytest.raises(ValueError, match="eos_token"):
    HFTokenizer.from_file(tmp_path)
  tok = HFTokenizer.from_file(tmp_path, eos_token="<|eos|>")
  assert tok.bos_id is None
  with pytest.raises(ValueError, match=f"id {tok.vocab_size} at position 0"):
    tok.decode([tok.vocab_size])


def test_hf_tokenizer_add_special_tokens_uses_post_processor(tmp_path):
  raw = _bpe(tmp_path)
  raw.post_processor = tokenizers.processors.TemplateProcessing(
      single="<|bos|> $A", special_tokens=[("<|bos|>",
                                            raw.token_to_id("<|bos|>"))])
  raw.save(str(tmp_path / "tokenizer.json"))
  plain = HFTokenizer.from_file(tmp_path, eos_token="<|eos|>")
  with_bos = HFTokenizer.from_file(tmp_path, eos_token="<|eos|>",
                                   add_special_tokens=True)
  assert with_bos.encode("the dog") == raw.encode("the dog").ids
  assert with_bos.encode("the dog") == [raw.token_to_id("<|bos|>")] + (
      plain.encode("the dog"))
  assert with_bos.decode(with_bos.encode("the dog")) == "the dog"


# ----------------------------------------------------------- encode_batch --

def test_encode_batch_left_and_right_padding():
  tok = CharTokenizer(ALPHABET)
  texts = ["1+2=", "", "10+20="]
  ids, mask = encode_batch(tok, texts, max_len=8)
  assert ids.dtype == np.int32 and mask.dtype == bool
  assert ids.shape == mask.shape == (3, 8)
  np.testing.assert_array_equal(mask.sum(1), [4, 0, 6])
  assert mask[0].tolist() == [False] * 4 + [True] * 4  # left padded
  assert ids[0, :4].tolist() == [tok.pad_id] * 4
  for i, text in enumerate(texts):
    assert ids[i][mask[i]].tolist() == tok.encode(text)
    assert tok.decode(ids[i]) == text
  right_ids, right_mask = encode_batch(tok, texts, max_len=8,
                                       pad_side="right")
  assert right_mask[0].tolist() == [True] * 4 + [False] * 4
  for i in range(3):
    assert right_ids[i][right_mask[i]].tolist() == ids[i][mask[i]].tolist()
  bos_ids, bos_mask = encode_batch(tok, texts, max_len=8, add_bos=True)
  assert bos_ids[2, 1] == tok.bos_id and bos_mask.sum() == mask.sum() + 3
  empty_ids, _ = encode_batch(tok, [], max_len=4)
  assert empty_ids.shape == (0, 4)


def test_encode_batch_errors():
  tok = CharTokenizer(ALPHABET)
  with pytest.raises(ValueError, match="text 1 has 6 tokens.*max_len=5"):
    encode_batch(tok, ["1+1", "12+34", "1"], max_len=5, add_bos=True)
  with pytest.raises(ValueError, match="pad_side"):
    encode_batch(tok, ["1"], max_len=4, pad_side="middle")
  with pytest.raises(ValueError, match="max_len"):
    encode_batch(tok, ["1"], max_len=0)
  with pytest.raises(ValueError, match="single str"):
    encode_batch(tok, "1+1", max_len=4)
  no_bos = CharTokenizer("ab", specials=("<pad>", None, "<eos>"))
  with pytest.raises(ValueError, match="bos"):
    encode_batch(no_bos, ["ab"], max_len=4, add_bos=True)


def test_encode_batch_with_hf_tokenizer(tmp_path):
  raw = _bpe(tmp_path, config={"eos_token": "<|eos|>",
                               "pad_token": "<|pad|>"})
  tok = HFTokenizer.from_file(tmp_path)
  texts = ["the lazy dog", "a fox"]
  ids, mask = encode_batch(tok, texts, max_len=12)
  for i, text in enumerate(texts):
    n = len(raw.encode(text).ids)
    assert mask[i].tolist() == [False] * (12 - n) + [True] * n
    assert ids[i, 12 - n:].tolist() == raw.encode(text).ids
    assert tok.decode(ids[i]) == text
