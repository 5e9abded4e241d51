"""Tests for divrl.rl.scoring: hidden states line up with the response
tokens, and model_statistics returns exactly the fields it is asked for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from divrl.models.decoder import Decoder, DecoderConfig
from divrl.rl import scoring

V = 11


@pytest.fixture(scope="module")
def model():
  return Decoder(DecoderConfig.preset("tiny", vocab_size=V, num_layers=1,
                                      value_head=True), rngs=nnx.Rngs(0))


def _inputs():
  ptoks = jnp.asarray([[0, 3, 4], [5, 6, 7]], jnp.int32)
  pmask = jnp.asarray([[False, True, True], [True, True, True]])
  toks = jnp.asarray([[8, 9, 0, 0], [3, 3, 4, 2]], jnp.int32)
  rmask = jnp.asarray([[True, True, False, False], [True, True, True, True]])
  return ptoks, pmask, toks, rmask


def test_logprobs_are_the_teacher_forced_log_softmax(model):
  ptoks, pmask, toks, rmask = _inputs()
  hidden = scoring.response_hidden(model, ptoks, pmask, toks, rmask)
  stats = scoring.model_statistics(model, hidden, toks, rmask, (),
                                   temperature=1.0)
  assert set(stats) == {"logprobs"}
  # Row 0 one token at a time: the log-prob of each response token given
  # the prompt and the tokens before it.
  for t in range(2):
    seq = jnp.concatenate([ptoks[0, 1:], toks[0, :t]])[None]
    logits = model(seq)[0, -1]
    want = jax.nn.log_softmax(logits)[toks[0, t]]
    np.testing.assert_allclose(stats["logprobs"][0, t], want, rtol=1e-5,
                               atol=1e-5)


def test_values_and_embeddings_come_from_the_hidden_states(model):
  ptoks, pmask, toks, rmask = _inputs()
  hidden = scoring.response_hidden(model, ptoks, pmask, toks, rmask)
  stats = scoring.model_statistics(model, hidden, toks, rmask,
                                   ("values", "embeddings", "entropy"))
  assert set(stats) == {"logprobs", "values", "embeddings", "entropy"}
  w = np.asarray(model.value_head[...])
  np.testing.assert_allclose(stats["values"], np.asarray(hidden) @ w,
                             rtol=1e-5, atol=1e-6)
  h = np.asarray(hidden)
  np.testing.assert_allclose(stats["embeddings"][0], h[0, :2].mean(0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["embeddings"][1], h[1].mean(0),
                             rtol=1e-5, atol=1e-6)


def test_a_model_without_a_value_head_says_so():
  plain = Decoder(DecoderConfig.preset("tiny", vocab_size=V, num_layers=1),
                  rngs=nnx.Rngs(0))
  ptoks, pmask, toks, rmask = _inputs()
  hidden = scoring.response_hidden(plain, ptoks, pmask, toks, rmask)
  with pytest.raises(ValueError, match="no value head"):
    scoring.model_statistics(plain, hidden, toks, rmask, ("values",))
