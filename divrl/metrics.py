"""Evaluation metrics for sampled responses: pass@k, diversity, entropy, KL.

Two kinds of functions live here:

* Host-side NumPy functions on per-prompt sample counts, correctness tables
  and strings (``float64``, not jitted): ``pass_at_k``, ``pass_at_k_curve``,
  ``distinct_correct``, ``distinct_n``, ``accuracy``, ``mean_reward``.
* Jittable JAX functions on ``[B,T]`` token arrays with a response mask:
  ``token_entropy_summary``, ``kl_to_base``. Positions where the mask is 0
  never change a result: their values are replaced by 0 with ``where``
  before any arithmetic, so NaN or inf padding garbage is harmless.

All functions are pure. Invalid arguments raise ``ValueError`` (or
``TypeError``) naming the argument.

References:
  Chen et al., "Evaluating Large Language Models Trained on Code",
  arXiv:2107.03374 (the unbiased pass@k estimator).
  Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/
  kl-approx.html (k1 and k3 estimators).
  Li et al., "A Diversity-Promoting Objective Function for Neural
  Conversation Models", arXiv:1510.03055 (distinct-n).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from divrl.divergences import kl_estimator

Array = jax.Array

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# ---------------------------------------------------------------------------
# pass@k
# ---------------------------------------------------------------------------


def _as_int_array(name: str, x) -> np.ndarray:
  """``x`` as an int64 array; raises if any entry is not integral."""
  arr = np.asarray(x)
  if arr.dtype == bool:
    raise TypeError(f"{name} must hold integers, got a bool array.")
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    if not np.issubdtype(arr.dtype, np.floating):
      raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}.")
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
      raise ValueError(f"{name} must hold integers, got {arr!r}.")
  return arr.astype(np.int64)


_BLOCK_ELEMENTS = 1 << 20  # bounds the temporary [P, block] array


def _log_fail_ratio(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
  """``log(C(n-c, k) / C(n, k)) = sum_{i=n-c+1}^{n} log(1 - k/i)`` (1-D).

  Needs ``n - c >= k``: then every ``i > k``, each factor is in ``(0, 1)``
  and ``log1p`` is finite, so nothing overflows for any ``n``. The ``c``
  terms are summed directly (no difference of large partial sums), so a
  small result keeps its relative precision. Columns are processed in blocks
  to bound memory.
  """
  total = np.zeros(n.shape, np.float64)
  max_c = int(c.max()) if c.size else 0
  block = max(1, _BLOCK_ELEMENTS // max(n.size, 1))
  first = (n - c + 1).astype(np.float64)[:, None]
  for start in range(0, max_c, block):
    j = np.arange(start, min(start + block, max_c))
    terms = np.log1p(-k / (first + j[None, :]))  # i > k even where j >= c
    total += np.sum(np.where(j[None, :] < c[:, None], terms, 0.0), axis=1)
  return total


def pass_at_k(num_samples, num_correct, k):
  """Unbiased pass@k estimate per prompt (Chen et al. 2021, eq. 1).

  ``pass@k = 1 - C(n - c, k) / C(n, k)``: the probability that a uniformly
  random ``k``-subset of the ``n`` samples of a prompt holds at least one of
  its ``c`` correct samples. It is an unbiased estimate of ``1 - (1 - p)^k``
  for a prompt with success probability ``p``.

  Computed without binomial coefficients, as in the paper's reference code:
  ``C(n - c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)``, summed in log
  space (``log1p``, ``c`` terms summed directly) and returned as
  ``-expm1(sum)``: accurate to a few float64 ulps, also in relative terms for
  tiny values, and no overflow at any ``n`` (``n = 256`` or ``n = 10^6``).
  The cost is ``O(sum of c)`` per ``k``. When ``n - c < k`` every
  ``k``-subset contains a correct sample and the result is exactly 1.

  References:
    Chen et al., "Evaluating Large Language Models Trained on Code",
    arXiv:2107.03374.

  Args:
    num_samples: ``n``, int scalar or ``[P]`` array, samples per prompt
      (``n >= 1``).
    num_correct: ``c``, int scalar or ``[P]`` array, correct samples per
      prompt (``0 <= c <= n``). Broadcast against ``num_samples``.
    k: a positive int, or a sequence of them.

  Returns:
    float64 array of the broadcast shape of ``n`` and ``c`` for an int
    ``k``; with an extra trailing axis of size ``len(k)`` for a sequence.

  Raises:
    ValueError: if ``k > n`` for some prompt (pass@k is undefined there; it
      is not silently reported as NaN or clipped), ``k < 1``, ``n < 1``,
      ``c < 0``, ``c > n``, or the arguments are not integral.
  """
  scalar_k = np.ndim(k) == 0
  ks = _as_int_array("k", np.atleast_1d(np.asarray(k)))
  if ks.ndim != 1 or ks.size == 0:
    raise ValueError(
        f"k must be an int or a non-empty 1-D sequence, got {k!r}.")
  n = _as_int_array("num_samples", num_samples)
  c = _as_int_array("num_correct", num_correct)
  try:
    n, c = np.broadcast_arrays(n, c)
  except ValueError as e:
    raise ValueError(
        f"num_samples {np.shape(num_samples)} and num_correct "
        f"{np.shape(num_correct)} do not broadcast.") from e
  if np.any(ks < 1):
    raise ValueError(f"k must be >= 1, got {k!r}.")
  if np.any(n < 1):
    raise ValueError(f"num_samples must be >= 1, got {num_samples!r}.")
  if np.any(c < 0) or np.any(c > n):
    raise ValueError(
        f"num_correct must be in [0, num_samples], got {num_correct!r} with "
        f"num_samples {num_samples!r}.")
  k_max = int(ks.max())
  if n.size and k_max > int(n.min()):
    where = np.unravel_index(int(np.argmax(n < k_max)), n.shape)
    raise ValueError(
        f"k={k_max} exceeds num_samples={int(n[where])} at index "
        f"{tuple(int(i) for i in where)}; pass@k needs k <= n (drop those "
        "k, as pass_at_k_curve does).")
  flat_n, flat_c = n.reshape(-1), c.reshape(-1)
  out = np.empty((flat_n.size, ks.size), np.float64)
  for j, kk in enumerate(ks.tolist()):
    # Every k-subset holds a correct sample when fewer than k are wrong.
    active = flat_n - flat_c >= kk
    col = np.ones(flat_n.size, np.float64)
    log_ratio = _log_fail_ratio(flat_n[active], flat_c[active], kk)
    col[active] = -np.expm1(log_ratio) + 0.0  # + 0.0: no -0.0 for c = 0
    out[:, j] = col
  out = out.reshape(n.shape + (ks.size,))
  return out[..., 0] if scalar_k else out


def _as_correct_table(correct) -> np.ndarray:
  arr = np.asarray(correct)
  if arr.ndim != 2:
    raise ValueError(
        f"correct must be a [P, n] array, got shape {arr.shape}.")
  if arr.dtype != bool:
    if not (np.issubdtype(arr.dtype, np.number)
            and np.all(np.isin(arr, (0, 1)))):
      raise ValueError("correct must be boolean (or hold only 0 and 1).")
    arr = arr.astype(bool)
  return arr


def pass_at_k_curve(correct,
                    ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
  """Mean unbiased pass@k over prompts, for each ``k <= n``.

  Args:
    correct: ``[P, n]`` bool, whether sample ``j`` of prompt ``p`` is correct
      (the same ``n`` for every prompt).
    ks: the ``k`` values; those with ``k > n`` are skipped (not an error
      here), duplicates are dropped.

  Returns:
    ``{k: mean over prompts of pass@k}`` with int keys in increasing order.
    Empty when no ``k`` fits or there are no prompts.
  """
  table = _as_correct_table(correct)
  p, n = table.shape
  ks_arr = _as_int_array("ks", np.atleast_1d(np.asarray(ks)))
  if np.any(ks_arr < 1):
    raise ValueError(f"ks must be >= 1, got {ks!r}.")
  kept = sorted({int(k) for k in ks_arr.tolist() if k <= n})
  if not kept or p == 0:
    return {}
  c = table.sum(axis=1)
  values = pass_at_k(np.full(p, n), c, kept)
  return {k: float(v) for k, v in zip(kept, values.mean(axis=0))}


def accuracy(correct) -> float:
  """Fraction of correct samples, ``mean(correct)`` (= mean pass@1).

  Args:
    correct: bool array of any shape, e.g. ``[P, n]``.

  Returns:
    The mean as a float; 0.0 for an empty array.
  """
  arr = np.asarray(correct)
  if arr.size == 0:
    return 0.0
  return float(np.mean(arr.astype(np.float64)))


def mean_reward(rewards) -> float:
  """Mean of a reward array of any shape in float64; 0.0 when empty.

  A NaN reward propagates (the mean is NaN) rather than being dropped, so a
  broken reward function is visible in the logs.
  """
  arr = np.asarray(rewards, np.float64)
  if arr.size == 0:
    return 0.0
  return float(np.mean(arr))


# ---------------------------------------------------------------------------
# Diversity
# ---------------------------------------------------------------------------


class DistinctCorrect(NamedTuple):
  """Result of ``distinct_correct``.

  Attributes:
    counts: ``[P]`` int64, distinct correct solution classes per prompt.
    entropy: ``[P]`` float64, Shannon entropy in nats of the empirical
      distribution of the correct samples over those classes.
    mean_count: mean of ``counts`` over prompts (0.0 with no prompts).
    mean_entropy: mean of ``entropy`` over prompts (0.0 with no prompts).
  """

  counts: np.ndarray
  entropy: np.ndarray
  mean_count: float
  mean_entropy: float


def _shannon_entropy(counts: Sequence[int]) -> float:
  """``-sum q log q`` (nats), ``q = counts / sum(counts)``; 0 if <= 1 class."""
  total = sum(counts)
  if len(counts) <= 1 or total == 0:
    return 0.0
  q = np.asarray(counts, np.float64) / total
  return float(-np.sum(q * np.log(q)))


def distinct_correct(canonicals: Sequence[Sequence[str | None]],
                     correct) -> DistinctCorrect:
  """Distinct correct solutions per prompt and their entropy.

  Each sample of a prompt has a canonical form (a string that is equal for
  solutions considered the same, e.g. a normalised program or derivation).
  Among the correct samples of a prompt, the classes are the distinct
  canonical forms; the count is their number and the entropy is ``H = -sum_s
  q_s log q_s`` (nats) with ``q_s`` the fraction of the prompt's correct
  samples in class ``s``. ``H`` is 0 when there are 0 or 1 classes and at most
  ``log(count)``, reached when the correct samples are spread evenly.

  Incorrect samples are ignored whatever their canonical form. A correct
  sample whose canonical form is ``None`` (it could not be canonicalised) is
  also ignored: it adds no class and does not count in ``q``.

  Args:
    canonicals: ``P`` lists of canonical strings (or ``None``), one per
      sample. Prompts may have different numbers of samples.
    correct: ``[P, n]`` bool array, or ``P`` bool sequences with the same
      lengths as ``canonicals``.

  Returns:
    A ``DistinctCorrect`` with per-prompt ``counts`` and ``entropy`` and their
    means over prompts.

  Raises:
    ValueError: if the numbers of prompts or of samples of a prompt differ
      between ``canonicals`` and ``correct``.
  """
  if len(canonicals) != len(correct):
    raise ValueError(
        f"canonicals has {len(canonicals)} prompts but correct has "
        f"{len(correct)}.")
  counts, entropies = [], []
  for p, (forms, ok) in enumerate(zip(canonicals, correct)):
    ok = np.asarray(ok)
    if ok.ndim != 1 or len(forms) != ok.shape[0]:
      raise ValueError(
          f"prompt {p}: canonicals has {len(forms)} samples but correct has "
          f"shape {ok.shape}.")
    classes = collections.Counter(
        s for s, good in zip(forms, ok.tolist()) if good and s is not None)
    counts.append(len(classes))
    entropies.append(_shannon_entropy(list(classes.values())))
  counts_arr = np.asarray(counts, np.int64)
  ent_arr = np.asarray(entropies, np.float64)
  if not counts:
    return DistinctCorrect(counts_arr, ent_arr, 0.0, 0.0)
  return DistinctCorrect(counts_arr, ent_arr, float(counts_arr.mean()),
                         float(ent_arr.mean()))


def distinct_n(texts: Sequence[str], n: int = 2, *,
               tokenize: Callable[[str], Sequence[str]] = str.split) -> float:
  """Distinct-n: unique n-grams over all n-grams of a set of texts.

  ``|unique n-grams| / |n-grams|``, pooled over all ``texts`` (Li et al.
  2016). 1.0 means no n-gram repeats within or across the texts; lower means
  more lexical repetition. Texts shorter than ``n`` tokens contribute no
  n-grams.

  References:
    Li et al., "A Diversity-Promoting Objective Function for Neural
    Conversation Models", arXiv:1510.03055.

  Args:
    texts: the strings, e.g. the samples of one prompt.
    n: n-gram order, ``>= 1``.
    tokenize: maps a string to tokens (default: whitespace split).

  Returns:
    The ratio in ``[0, 1]``; 0.0 when there are no n-grams at all.
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"n must be an int >= 1, got {n!r}.")
  if isinstance(texts, str):
    raise TypeError("texts must be a sequence of strings, not one string.")
  total = 0
  unique = set()
  for text in texts:
    tokens = tuple(tokenize(text))
    grams = [tokens[i:i + n] for i in range(len(tokens) - n + 1)]
    total += len(grams)
    unique.update(grams)
  return len(unique) / total if total else 0.0


# ---------------------------------------------------------------------------
# Token statistics (JAX)
# ---------------------------------------------------------------------------


def _check_token_arrays(values: Array, mask: Array, names: str) -> None:
  chex.assert_rank([values, mask], 2, custom_message=names)
  chex.assert_equal_shape([values, mask], custom_message=names)


def token_entropy_summary(entropy: Array, mask: Array) -> Array:
  """Token-mean policy entropy over the valid tokens of a batch.

  ``sum_{b,t} H_{b,t} m_{b,t} / sum_{b,t} m_{b,t}``: every valid token counts
  once (long responses weigh more than short ones). Padding values are
  replaced by 0 with ``where`` first, so NaN or inf garbage there does not
  matter.

  Args:
    entropy: ``[B,T]`` per-token entropies (nats), e.g. from
      ``divrl.ops``.
    mask: ``[B,T]`` response mask (nonzero = valid).

  Returns:
    float32 (or wider) scalar; 0 when no token is valid.
  """
  entropy = jnp.asarray(entropy)
  mask = jnp.asarray(mask)
  _check_token_arrays(entropy, mask, "entropy and mask")
  dtype = jnp.promote_types(entropy.dtype, jnp.float32)
  valid = mask > 0
  total = jnp.sum(jnp.where(valid, entropy.astype(dtype), 0.0))
  count = jnp.sum(valid.astype(dtype))
  return total / jnp.where(count > 0, count, 1.0)


class KLToBase(NamedTuple):
  """Result of ``kl_to_base``: two sampled estimates of ``KL(pi || base)``.

  Attributes:
    k1: ``sum_t u_t`` estimate (scalar mean, or ``[B]`` per sequence).
    k3: ``sum_t (exp(-u_t) + u_t - 1)`` estimate (same shape).
  """

  k1: Array
  k3: Array


def kl_to_base(logprobs: Array, base_logprobs: Array, mask: Array, *,
               reduce: bool = True) -> KLToBase:
  """Sampled estimates of ``KL(pi || base)`` of the response distribution.

  With ``u_t = log pi(y_t | y_<t) - log base(y_t | y_<t)`` for a response
  ``y ~ pi`` (the policy that sampled it):

  * ``k1 = sum_t u_t = log pi(y) - log base(y)``. Its expectation under
    ``pi`` is exactly the sequence-level ``KL(pi || base)``. Unbiased but
    high-variance, and negative for individual sequences.
  * ``k3 = sum_t (exp(-u_t) + u_t - 1)``. Each term is ``>= 0`` and its
    expectation given the prefix is the per-position ``KL(pi(.|y_<t) ||
    base(.|y_<t))``, so by the chain rule the sum is also an unbiased
    estimate of the sequence-level ``KL(pi || base)`` (not of ``KL(base ||
    pi)``), with lower variance when ``pi`` is close to ``base``.

  Both are unbiased only when the responses were sampled from ``pi`` itself
  (on-policy evaluation samples); they are not importance corrected. Padding
  values are replaced by 0 before any arithmetic, so NaN or inf garbage does
  not matter.

  References:
    Schulman, "Approximating KL Divergence" (2020),
    http://joschu.net/blog/kl-approx.html.

  Args:
    logprobs: ``[B,T]`` log-probabilities of the sampled tokens under the
      policy.
    base_logprobs: ``[B,T]`` log-probabilities of the same tokens under the
      base (reference) model.
    mask: ``[B,T]`` response mask (nonzero = valid).
    reduce: if True, average the per-sequence sums over the sequences that
      have at least one valid token (0 when none has); if False, return the
      ``[B]`` per-sequence sums (0 for an empty sequence).

  Returns:
    A ``KLToBase`` of two scalars (or two ``[B]`` arrays), in nats.
  """
  logprobs = jnp.asarray(logprobs)
  base_logprobs = jnp.asarray(base_logprobs)
  mask = jnp.asarray(mask)
  chex.assert_rank([logprobs, base_logprobs, mask], 2)
  chex.assert_equal_shape([logprobs, base_logprobs, mask])
  dtype = jnp.promote_types(
      jnp.promote_types(logprobs.dtype, base_logprobs.dtype), jnp.float32)
  valid = mask > 0
  lp = jnp.where(valid, logprobs.astype(dtype), 0.0)
  base = jnp.where(valid, base_logprobs.astype(dtype), 0.0)
  u = lp - base  # 0 on padding, so both estimators below are 0 there
  k1 = jnp.sum(kl_estimator(u, "k1"), axis=-1)
  k3 = jnp.sum(kl_estimator(u, "k3"), axis=-1)
  if not reduce:
    return KLToBase(k1, k3)
  nonempty = jnp.any(valid, axis=-1).astype(dtype)
  count = jnp.sum(nonempty)
  safe = jnp.where(count > 0, count, 1.0)
  return KLToBase(jnp.sum(k1 * nonempty) / safe,
                  jnp.sum(k3 * nonempty) / safe)


__all__ = [
    "DEFAULT_KS",
    "DistinctCorrect",
    "KLToBase",
    "accuracy",
    "distinct_correct",
    "distinct_n",
    "kl_to_base",
    "mean_reward",
    "pass_at_k",
    "pass_at_k_curve",
    "token_entropy_summary",
]
