"""Per-token statistics of responses under a model, from its hidden states.

``response_hidden`` runs the model once over ``prompt + response`` (teacher
forcing); ``model_statistics`` turns the hidden states into the ``Batch``
fields the objective reads: log-probs and the token statistics of
``divrl.ops.sequence_statistics`` (computed in token chunks, so ``[B,T,V]``
logits never exist), critic values from the value head, and pooled
embeddings. The hidden state at column ``S-1+t`` predicts response token
``t``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from divrl.models.sampler import concat_prompt_response
from divrl.ops import sequence_statistics
from divrl.sequences import pooled_mean
from divrl.types import POLICY_STATISTICS, REFERENCE_DIVERGENCES

Array = jax.Array

# Batch fields computed from the model (the rest come from the sampler, the
# verifier or the trainer).
MODEL_FIELDS = POLICY_STATISTICS + REFERENCE_DIVERGENCES + ("values",
                                                            "embeddings")


def response_hidden(model, prompt_tokens: Array, prompt_mask: Array,
                    tokens: Array, response_mask: Array) -> Array:
  """Final normed hidden states ``[B,T,d]`` that predict the response tokens.

  One teacher-forced forward over ``prompt + response``; the state at column
  ``S-1+t`` predicts response token ``t``.
  """
  s = prompt_tokens.shape[1]
  full, mask, positions = concat_prompt_response(
      prompt_tokens, prompt_mask, tokens, response_mask)
  return model(full, positions=positions, attention_mask=mask,
               return_hidden=True)[:, s - 1:-1]


def model_statistics(model, hidden: Array, tokens: Array, mask: Array,
                     names: tuple[str, ...], *, temperature: float = 1.0,
                     top_p: float = 0.8, alpha: float = 0.5,
                     min_p: float = 0.02,
                     ref_hidden: Array | None = None,
                     ref_unembedding: Array | None = None,
                     row_shards: int = 1) -> dict[str, Array]:
  """``logprobs`` and the model fields ``names`` from hidden states.

  Token statistics go through ``divrl.ops.sequence_statistics`` (chunked);
  ``values`` through the model's value head; ``embeddings`` are the hidden
  states averaged over the valid response tokens, ``[B,d]``.
  ``row_shards``: the number of devices the rows are split over (see
  ``sequence_statistics``).

  Returns:
    ``{Batch field: array}``, always with ``logprobs``.
  """
  ops = [n for n in names if n in POLICY_STATISTICS + REFERENCE_DIVERGENCES]
  kwargs = {}
  if "top_p_entropy" in ops:
    kwargs["top_p"] = top_p
  if "alpha_divergence" in ops:
    kwargs["alpha"] = alpha
  if "min_p_logprob" in ops:
    kwargs["min_p"] = min_p
  if set(ops) & set(REFERENCE_DIVERGENCES):
    kwargs.update(ref_hidden=ref_hidden, ref_unembedding=ref_unembedding,
                  ref_bias=None)
  out = sequence_statistics(hidden, model.unembedding(), tokens, mask,
                            outputs=("logprob", *ops),
                            temperature=temperature,
                            bias=model.unembedding_bias(),
                            row_shards=row_shards, **kwargs)
  stats = {"logprobs": out.pop("logprob"), **out}
  if "values" in names:
    stats["values"] = model.values(hidden)
  if "embeddings" in names:
    stats["embeddings"] = pooled_mean(hidden.astype(jnp.float32), mask)
  return stats
