"""Numerical-safety property test: every registered part and every recipe
gives a finite loss and finite gradients on valid but extreme batches.

Each registered part is composed with default parts for the other stages
(``BASE``); each recipe of ``divrl.recipes`` runs as configured. The parts
are read from the registry and the recipes from ``recipes.names()``, so a new
one is fuzzed automatically. For random valid batches the loss and its
gradient with respect to ``logprobs`` must be finite, and the gradient must
be exactly 0 on masked tokens.

What the random batches hold (hypothesis draws every one of these):

* group structure: contiguous groups cut at random points (sizes 1 to ``B``,
  so singleton groups and one whole-batch group) or arbitrary group ids
  (ragged, non-contiguous, some of the ``num_groups`` ids empty);
* rewards per sample, constant per group (every group has zero variance) or
  binary;
* response lengths 0 to ``T`` per row: all-masked rows, rows of length 1, a
  batch with no valid token at all;
* log-prob gaps up to +-50 between the policy and the behaviour, rollout and
  reference log-probs, and log-probs down to -60;
* a layout: ``T = 6`` in float32 or bfloat16, or ``T = 1`` (every response
  of length <= 1) in bfloat16.

**bfloat16.** A model run in bfloat16 produces bfloat16 log-probs and
per-token statistics, so in the bfloat16 layouts every field computed from
a model's forward pass is bfloat16: ``logprobs``, ``old_logprobs``,
``rollout_logprobs``, ``ref_logprobs``, the policy statistics (``entropy``,
``sum_pi_squared``, ...), the exact divergences, ``values``/``old_values``
and ``embeddings``. Rewards (``rewards``, ``token_rewards``,
``baseline_rewards``) come from verifiers on the host and stay float32,
as the trainer builds them (``divrl.rl.trainer``).

Compilation dominates the cost: the jitted loss is cached per part, and jit
compiles it once per layout (three shapes and dtypes), so a new layout costs
one compile of every part and recipe. Examples per test come from
``tests/fuzzing.py`` (CI or the long profile).
"""

import dataclasses
import functools

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import docgen, recipes, registry
from divrl.types import REFERENCE_DIVERGENCES
from tests import fuzzing
from tests.conftest import one_part_config

B = 8
G = B  # room for B singleton groups; unused ids are empty groups

BASE = {"advantage": "grpo", "surrogate": "ppo_clip",
        "aggregation": "seq-mean-token-mean"}


@dataclasses.dataclass(frozen=True)
class Layout:
  t: int
  dtype: str  # of the model-computed fields (see the module docstring)


# T = 1 only in bfloat16: each layout costs a compile of every part, and
# rows of length 1 in float32 come up in the T = 6 layout.
LAYOUTS = (Layout(6, "float32"), Layout(6, "bfloat16"), Layout(1, "bfloat16"))

# Fields a model computes: bfloat16 in the bfloat16 layouts.
MODEL_FIELDS = frozenset(
    ("logprobs", "old_logprobs", "rollout_logprobs", "ref_logprobs",
     "entropy", "top_p_entropy", "sum_pi_squared", "vocab_mean_logprob",
     "old_vocab_mean_logprob", "min_p_logprob", "old_min_p_logprob",
     "values", "old_values", "embeddings") + REFERENCE_DIVERGENCES)

REWARDS = (0.0, 1.0, -1.0, 0.5, 3.0)


def _all_parts():
  return [(kind, name) for kind in registry.KINDS
          for name in docgen.library_parts(kind)]


floats = functools.partial(st.floats, allow_nan=False, allow_infinity=False,
                           width=32)


@st.composite
def _group_ids(draw):
  """Contiguous groups of random sizes, or arbitrary ids in [0, G)."""
  if draw(st.booleans()):
    cuts = draw(hnp.arrays(np.bool_, (B - 1,)))
    return np.concatenate([[0], np.cumsum(cuts)])
  return draw(hnp.arrays(np.int64, (B,), elements=st.integers(0, G - 1)))


@st.composite
def _rewards(draw, group_ids):
  mode = draw(st.sampled_from(("sample", "group", "binary")))
  if mode == "group":  # every group has zero variance
    per_group = draw(hnp.arrays(np.float64, (G,),
                                elements=st.sampled_from(REWARDS)))
    return per_group[group_ids]
  values = (0.0, 1.0) if mode == "binary" else REWARDS
  return draw(hnp.arrays(np.float64, (B,), elements=st.sampled_from(values)))


@st.composite
def examples(draw):
  """The numpy arrays of one batch and its layout (see ``_batch``)."""
  layout = draw(st.sampled_from(LAYOUTS))
  t = layout.t
  group_ids = draw(_group_ids())
  return dict(
      layout=layout, group_ids=group_ids,
      rewards=draw(_rewards(group_ids)),
      logprobs=draw(hnp.arrays(np.float64, (B, t),
                               elements=floats(-60.0, -0.0009765625))),
      gaps=draw(hnp.arrays(np.float64, (3, B, t),
                           elements=floats(-50.0, 50.0))),
      lengths=draw(hnp.arrays(np.int64, (B,), elements=st.integers(0, t))),
      entropy=draw(hnp.arrays(np.float64, (B, t),
                              elements=floats(0.0, 10.0))))


def _edge(layout):
  """A hand-made example per layout, run before the drawn ones: singleton
  groups, a zero-variance group, empty and length-1 rows, +-50 gaps."""
  t = layout.t
  lp = np.where(np.arange(B * t).reshape(B, t) % 2, -60.0, -0.0009765625)
  sign = np.where(np.arange(B * t).reshape(B, t) % 3, 50.0, -50.0)
  return dict(
      layout=layout, group_ids=np.array([0, 1, 2, 3, 4, 4, 4, 4]),
      rewards=np.array([1.0, 0.0, 3.0, -1.0, 1.0, 1.0, 1.0, 1.0]),
      logprobs=lp, gaps=np.stack([sign, -sign, sign[::-1]]),
      lengths=np.minimum(np.array([0, 1, 6, 1, 6, 0, 1, 3]), t),
      entropy=np.where(lp < -1.0, 10.0, 0.0))


def _edges(test):
  for layout in LAYOUTS:
    test = hypothesis.example(example=_edge(layout))(test)
  return test


def _batch(layout, group_ids, rewards, logprobs, gaps, lengths, entropy,
           components=False):
  t = layout.t
  mask = np.arange(t)[None] < lengths[:, None]
  old = logprobs + gaps[0]
  roll = logprobs + gaps[1]
  ref = logprobs + gaps[2]
  zeros = np.zeros((B, t))
  fields = dict(
      logprobs=logprobs, old_logprobs=old, rollout_logprobs=roll,
      ref_logprobs=ref, entropy=entropy,
      rewards=(np.stack([rewards, 0.5 * rewards, -rewards[::-1]], axis=1)
               if components else rewards),
      token_rewards=zeros,
      values=rewards[:, None] * 0.5 + zeros,
      old_values=rewards[:, None] * 0.25 + zeros,
      baseline_rewards=rewards[::-1].copy(),
      sum_pi_squared=np.exp(np.minimum(logprobs, 0.0)) ** 2,
      # Every other per-token statistic the data path serves.
      vocab_mean_logprob=-entropy - 1.0,
      old_vocab_mean_logprob=-entropy - 1.0 + gaps[0] * 0.01,
      # The min-p proxy is above the log-prob where kept, -inf where not.
      min_p_logprob=np.where(lengths[:, None] % 2 == 0, -np.inf,
                             np.minimum(logprobs + 0.5, 0.0)),
      old_min_p_logprob=np.where(np.arange(t)[None] % 3 == 2, -np.inf,
                                 np.minimum(old + 0.5, 0.0)),
      embeddings=np.stack([np.cos(np.arange(B) * 0.7 + rewards),
                           np.sin(np.arange(B) * 1.3), rewards], 1),
      **{n: entropy * (i + 1) / 8.0 for i, n in enumerate(
          ("top_p_entropy",) + REFERENCE_DIVERGENCES)})
  floats_ = {k: jnp.asarray(v, layout.dtype if k in MODEL_FIELDS
                            else jnp.float32) for k, v in fields.items()}
  i32 = lambda x: jnp.asarray(x, jnp.int32)
  return divrl.Batch(
      response_mask=jnp.asarray(mask), group_ids=i32(group_ids),
      truncated=jnp.asarray(lengths == t),
      tokens=i32((np.arange(B * t).reshape(B, t) * 7) % 5),
      sample_source=i32(np.arange(B) % 3 == 1),
      solution_ids=i32(np.where(rewards > 0, np.arange(B) % 2, -1)),
      task_ids=i32(np.zeros(B)), num_groups=G, **floats_)


def _loss_and_grad_fn(objective):
  def f(batch, key):
    def loss(lp):
      return objective(batch.replace(logprobs=lp), key)[0]
    return jax.value_and_grad(loss)(batch.logprobs)

  return jax.jit(f)


# One jitted function per part or recipe; jit caches one compile per layout.
@functools.lru_cache(maxsize=None)
def _part(kind, name):
  objective = divrl.from_config(one_part_config(kind, name, BASE, coef=0.5))
  return objective, _loss_and_grad_fn(objective)


@functools.lru_cache(maxsize=None)
def _recipe(name):
  objective = recipes.build(name)
  return objective, _loss_and_grad_fn(objective)


def _check(label, objective, fn, example):
  components = "reward_components" in objective.requires.inputs
  batch = _batch(components=components, **example)
  loss, grad = fn(batch, jax.random.key(0))
  layout = example["layout"]
  assert grad.shape == batch.logprobs.shape, (label, layout, grad.shape)
  grad = np.asarray(grad.astype(jnp.float32))
  assert np.isfinite(float(loss)), (label, layout, float(loss))
  assert np.all(np.isfinite(grad)), (label, layout, grad)
  mask = np.asarray(batch.response_mask)
  assert np.all(grad[~mask] == 0), (label, layout, grad)


@pytest.mark.parametrize("kind,name", _all_parts())
@fuzzing.settings(ci=15)
@_edges
@hypothesis.given(example=examples())
def test_part_loss_and_gradient_are_finite(kind, name, example):
  fuzzing.count(f"parts/{kind}/{name}")
  _check(f"{kind} {name}", *_part(kind, name), example)


@pytest.mark.parametrize("name", recipes.names())
@fuzzing.settings(ci=15)
@_edges
@hypothesis.given(example=examples())
def test_recipe_loss_and_gradient_are_finite(name, example):
  fuzzing.count(f"recipes/{name}")
  _check(f"recipe {name}", *_recipe(name), example)


def test_every_kind_has_parts():
  for kind in registry.KINDS:
    if kind in ("transform", "token_weight"):
      continue  # populated by the objective library modules
    assert registry.names(kind), kind
