"""Per-token statistics of sampled responses under a model.

``response_statistics`` runs the model once over ``prompt + response``
(teacher forcing) and computes the requested token statistics from the hidden
states with ``divrl.ops.sequence_statistics``, so ``[B,T,V]`` logits never
exist. The hidden state at column ``S-1+t`` predicts response token ``t``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from divrl.models.decoder import Decoder
from divrl.models.sampler import concat_prompt_response
from divrl.ops import sequence_statistics

Array = jax.Array


def response_statistics(model: Decoder, prompt_tokens: Array,
                        prompt_mask: Array, tokens: Array,
                        response_mask: Array, *,
                        outputs: Sequence[str] = ("logprob",),
                        temperature: float = 1.0) -> dict[str, Array]:
  """``{name: [B,T]}`` statistics of the response tokens (0 on padding).

  Args:
    model: the policy (or reference) decoder.
    prompt_tokens: ``[B,S]`` left-padded prompts.
    prompt_mask: ``[B,S]`` True on real prompt tokens.
    tokens: ``[B,T]`` response tokens.
    response_mask: ``[B,T]`` True on response tokens.
    outputs: names accepted by ``divrl.ops.token_statistics`` (``logprob``,
      ``entropy``, ``sum_pi_squared``, ...).
    temperature: the sampling temperature (the policy is
      ``softmax(logits / temperature)``).
  """
  s = prompt_tokens.shape[1]
  full, mask, positions = concat_prompt_response(
      prompt_tokens, prompt_mask, tokens, response_mask)
  hidden = model(full, positions=positions, attention_mask=mask,
                 return_hidden=True)[:, s - 1:-1]
  return sequence_statistics(hidden, model.unembedding(), tokens,
                             response_mask, outputs=tuple(outputs),
                             temperature=float(temperature))
