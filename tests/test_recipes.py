"""Recipes run, and every objective option of verl, TRL and tunix is
expressible as a divrl objective config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import recipes

B, T, G = 8, 6, 2


def _full_batch(k_rewards=None, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, T + 1, B)
  mask = np.arange(T)[None] < lengths[:, None]
  lp = -rng.uniform(0.1, 2.0, (B, T))
  f = lambda x: jnp.asarray(x, jnp.float32)
  # Continuous rewards: with binary ones, a group with two successes gives
  # passk_best a zero advantage everywhere (r(1) - r(2) = 0).
  rewards = rng.uniform(0, 1, B if k_rewards is None else (B, k_rewards))
  return divrl.Batch(
      logprobs=f(lp), response_mask=jnp.asarray(mask), rewards=f(rewards),
      group_ids=jnp.asarray(np.arange(B) // (B // G), jnp.int32),
      old_logprobs=f(lp + rng.normal(0, 0.1, lp.shape)),
      ref_logprobs=f(lp + rng.normal(0, 0.3, lp.shape)),
      rollout_logprobs=f(lp + rng.normal(0, 0.1, lp.shape)),
      entropy=f(rng.uniform(0, 3, lp.shape)),
      values=f(rng.normal(size=lp.shape)),
      old_values=f(rng.normal(size=lp.shape)),
      baseline_rewards=f(rng.integers(0, 2, B)),
      sum_pi_squared=f(np.exp(lp) ** 2),
      truncated=jnp.asarray(lengths == T),
      tokens=jnp.asarray(rng.integers(0, 4, (B, T)), jnp.int32),
      sample_source=jnp.asarray(np.arange(B) % 4 == 3, jnp.int32),
      solution_ids=jnp.asarray(np.where(rewards > 0.5, np.arange(B) % 3, -1)
                               if k_rewards is None else np.arange(B) % 3,
                               jnp.int32),
      num_groups=G)


def _run(objective, batch):
  loss_fn = lambda lp: objective(batch.replace(logprobs=lp),
                                 jax.random.key(0))[0]
  loss, grad = jax.value_and_grad(loss_fn)(batch.logprobs)
  assert np.isfinite(float(loss))
  assert np.all(np.isfinite(np.asarray(grad)))
  return float(loss), np.asarray(grad)


@pytest.mark.parametrize("name", recipes.names())
def test_recipe_runs(name):
  batch = _full_batch(k_rewards=2 if name == "gdpo" else None)
  loss, grad = _run(recipes.build(name), batch)
  assert np.abs(grad).sum() > 0, name  # it trains something


def test_recipes_are_fresh_copies_and_unknown_names_are_named():
  c = recipes.get("dapo")
  c.surrogate.eps_high = 0.5
  assert recipes.get("dapo").surrogate.eps_high == 0.28
  with pytest.raises(ValueError, match="unknown recipe 'dapoo'"):
    recipes.get("dapoo")


# The objective options of verl, TRL and tunix (their feature lists), each
# with a recipe name or an objective config. Engine features (kernels,
# packing, vLLM, parallelism) live in divrl.ops, divrl.models and divrl.rl;
# features none of the three has (risk measures, diversity, unlikeliness)
# are divrl's own parts.
_PG = {"advantage": "grpo", "surrogate": "ppo_clip", "aggregation": "token-mean"}


def _with(**kw):
  return {**_PG, **kw}


FEATURES = {
    "GRPO group mean/std advantage": "grpo",
    "Dr. GRPO (no std)": "dr_grpo",
    "group-mean / batch-std scaling (PPO-Lite)": "lite_ppo",
    "RLOO leave-one-out baseline": "rloo",
    "REINFORCE++ (discounted, batch-whitened)": "reinforce_pp",
    "REINFORCE++-baseline": "reinforce_pp_baseline",
    "ReMax (greedy baseline)": "remax",
    "OPO length-weighted baseline": "opo",
    "GPG advantage scaling + loss": "gpg",
    "GAE + critic": "ppo_gae",
    "Optimal token baseline": "otb",
    "Multi-reward decoupled normalisation (GDPO)": "gdpo",
    "Reward weights across functions": _with(
        advantage={"name": "grpo", "reward_weights": [1.0, 0.5]}),
    "pass@k advantage": "passk_best",
    "PF-PPO resampling by score": _with(advantage="gae",
                                        transforms=["pf_ppo"]),
    "Dynamic sampling (drop zero-variance groups)": "dapo",
    "PPO clip, asymmetric eps": _with(surrogate={"name": "ppo_clip",
                                                 "eps_low": 0.2,
                                                 "eps_high": 0.28}),
    "Dual clip": _with(surrogate={"name": "ppo_clip", "clip_ratio_c": 3.0}),
    "Two-sided delta clip (TRL)": _with(surrogate={"name": "ppo_clip",
                                                   "delta": 1.5}),
    "GSPO sequence ratio": _with(surrogate="gspo_seq",
                                 aggregation="seq-mean-token-mean"),
    "GSPO token straight-through": "gspo",
    "GMPO geometric mean": "gmpo",
    "CISPO (two-sided)": _with(surrogate="cispo"),
    "CISPO (upper cap)": "cispo",
    "SAPO soft gate": "sapo",
    "VESPO Gamma kernel": "vespo",
    "LUSPO length-scaled sequence loss": "luspo",
    "DPPO binary-TV mask": "dppo_tv",
    "DPPO binary-KL mask": "dppo_kl",
    "Clip-Cov": "clip_cov",
    "KL-Cov": "kl_cov",
    "DRO quadratic log-ratio penalty": "dro",
    "Plain REINFORCE": _with(surrogate="reinforce"),
    "Aggregation: per-seq mean then batch mean": _with(
        aggregation="seq-mean-token-mean"),
    "Aggregation: global token mean": _with(aggregation="token-mean"),
    "Aggregation: constant normaliser": _with(
        aggregation={"name": "seq-mean-token-sum-norm", "norm": 512.0}),
    "Aggregation: seq-mean of token sums": _with(
        aggregation="seq-mean-token-sum"),
    "Aggregation: token sum": _with(aggregation="token-sum"),
    "KL k1": _with(regularizers={"kl": {"estimator": "k1", "coef": 0.1}}),
    "KL abs": _with(regularizers={"kl": {"estimator": "abs", "coef": 0.1}}),
    "KL k2": _with(regularizers={"kl": {"estimator": "k2", "coef": 0.1}}),
    "KL k3": _with(regularizers={"kl": {"estimator": "k3", "coef": 0.1}}),
    "KL straight-through +": _with(regularizers={"kl": {"estimator": "k3+",
                                                          "coef": 0.1}}),
    "KL IS bias correction (V3.2)": _with(regularizers={"kl": {
        "estimator": "k3", "is_correction": True, "coef": 0.1}}),
    "KL in reward": "reinforce_pp",
    "Adaptive KL controller": "ADAPTIVE_KL",
    "Reference refresh (TR-DPO mixup)": "REFERENCE_MIXUP",
    "Entropy bonus": _with(regularizers={"entropy": {"coef": -0.01}}),
    "Adaptive entropy coefficient": "ADAPTIVE_ENTROPY",
    "High-entropy token mask (80/20)": "high_entropy_dapo",
    "Mask truncated completions": _with(transforms=["mask_truncated"]),
    "Overlong soft penalty": _with(transforms=[{
        "name": "overlong_penalty", "max_length": 6, "cache_length": 3}]),
    "Length-shaped correctness (cosine)": _with(transforms=[{
        "name": "cosine_length_reward", "max_length": 6}]),
    "Repetition (n-gram) penalty reward": _with(transforms=[
        "ngram_repetition_penalty"]),
    "Multi-turn observation-token masking": "reinforce_pp",
    "Off-policy sequence mask": _with(token_weights={
        "off_policy_sequence_mask": {}}),
    "Train-infer IS correction (TIS)": "grpo_tis",
    "IS masking (IcePop)": "grpo_icepop",
    "Rejection sampling by k1/k2/k3": _with(transforms=[{
        "name": "rollout_rejection", "criteria": ["token_k1", "seq_max_k3"],
        "hi": 3.0}]),
    "Bypass (pi_old := pi_roll) mode": "grpo_bypass",
    "tunix GRPO defaults (k1 in loss)": "tunix_grpo",
    "tunix KL clamp": _with(regularizers={"kl": {"estimator": "k3", "value_clip": 10.0,
                                                  "coef": 0.1}}),
    "tunix sampler IS (token truncate)": "grpo_tis",
    "tunix PPO (GAE, dual clip, KL in reward)": "ppo_gae",
    "verl defaults": "verl_grpo",
    "TRL defaults": "trl_grpo",
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_feature_is_expressible(feature):
  spec = FEATURES[feature]
  batch = _full_batch(k_rewards=2 if spec in ("gdpo",) or "weights" in
                      feature else None)
  if spec == "ADAPTIVE_KL":
    ctrl = divrl.controllers.adaptive_kl(0.1, target=0.05, horizon=10)
    state = ctrl.update(ctrl.init(), jnp.asarray(0.2), 1)
    obj = divrl.from_config(_with(regularizers={"kl": {"coef": 0.1}}))
    loss = obj(batch, coefs={"kl": state.coef})[0]
    assert float(state.coef) > 0.1 and np.isfinite(float(loss))
  elif spec == "ADAPTIVE_ENTROPY":
    ctrl = divrl.controllers.adaptive_entropy(0.0, target=2.0, delta=0.01)
    state = ctrl.update(ctrl.init(), jnp.asarray(1.0))
    obj = divrl.from_config(_with(regularizers={"entropy": {"coef": 0.0}}))
    coef = divrl.controllers.effective_coef(state)
    assert float(coef) > 0
    _run(obj, batch)
  elif spec == "REFERENCE_MIXUP":
    p = {"w": jnp.ones(3)}
    r = {"w": jnp.zeros(3)}
    np.testing.assert_allclose(
        divrl.controllers.reference_mixup(p, r, alpha=0.6)["w"], 0.6)
  elif isinstance(spec, str):
    _run(recipes.build(spec), batch)
  else:
    _run(divrl.from_config(spec), batch)
