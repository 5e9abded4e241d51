"""Named objective recipes: published methods and library defaults as configs.

Each recipe is a plain objective config (see ``Objective.from_config``); get a
fresh copy with ``recipes.get(name)``, change what you like, and build it.
Hyperparameters follow the cited paper, or the named library's defaults as
described in ``docs/conventions.md``. Toy-scale experiments should revisit
length constants (e.g. DAPO's 20480/4096 token overlong buffer).
"""

from __future__ import annotations

import copy
from typing import Any

import ml_collections

_KL_K3 = {"kl": {"estimator": "k3", "coef": 0.04}}

RECIPES: dict[str, dict[str, Any]] = {
    # "DeepSeekMath", arXiv:2402.03300: group z-score, PPO clip, k3 KL in
    # the loss, per-sequence token mean.
    "grpo": dict(advantage="grpo", surrogate="ppo_clip",
                 regularizers=_KL_K3, aggregation="seq-mean-token-mean"),
    # "Understanding R1-Zero-Like Training", arXiv:2503.20783.
    "dr_grpo": dict(advantage="dr_grpo", surrogate="ppo_clip",
                    aggregation="seq-mean-token-sum-norm"),
    # "DAPO", arXiv:2503.14476: clip-higher, token mean, dynamic sampling
    # (as weights), overlong reward shaping, no KL.
    "dapo": dict(transforms=["filter_zero_variance_groups",
                             "overlong_penalty"],
                 advantage="grpo",
                 surrogate={"name": "ppo_clip", "eps_high": 0.28},
                 aggregation="token-mean"),
    # "Beyond the 80/20 Rule", arXiv:2506.01939: DAPO on the top-20% entropy
    # tokens.
    "high_entropy_dapo": dict(
        transforms=["filter_zero_variance_groups"], advantage="grpo",
        token_weights={"high_entropy": {"rho": 0.2}},
        surrogate={"name": "ppo_clip", "eps_high": 0.28},
        aggregation="token-mean"),
    # "Part I: Tricks or Traps?", arXiv:2508.08221 (Lite PPO).
    "lite_ppo": dict(advantage={"name": "grpo", "std_scope": "batch"},
                     surrogate="ppo_clip", aggregation="token-mean"),
    # "Group Sequence Policy Optimization", arXiv:2507.18071; the paper's
    # clip ranges (the surrogate's defaults) and the aggregation verl uses.
    "gspo": dict(advantage="grpo", surrogate="gspo_token",
                 aggregation="seq-mean-token-mean"),
    # "Geometric-Mean Policy Optimization", arXiv:2507.20673.
    "gmpo": dict(advantage="grpo", surrogate="gmpo",
                 aggregation="seq-mean-token-mean"),
    # "MiniMax-M1", arXiv:2506.13585: CISPO with an upper cap.
    "cispo": dict(advantage="grpo",
                  surrogate={"name": "cispo", "bound": "upper",
                             "max_ratio": 5.0},
                  aggregation="token-mean"),
    # SAPO, arXiv:2511.20347.
    "sapo": dict(advantage="grpo", surrogate="sapo",
                 aggregation="seq-mean-token-mean"),
    # "The Entropy Mechanism of RL for Reasoning LMs", arXiv:2505.22617, as
    # the authors ran it (their 7B training scripts): Clip-Cov with both PPO
    # clip ratios at 1 and r = 2e-4, (lb, ub) = (1, 5); KL-Cov with
    # kappa = 1 and k = 2e-3 (2e-4 at 32B).
    "clip_cov": dict(advantage="grpo",
                     surrogate={"name": "clip_cov", "eps_low": 1.0,
                                "eps_high": 1.0, "ratio": 2e-4, "lb": 1.0,
                                "ub": 5.0},
                     aggregation="token-mean"),
    "kl_cov": dict(advantage="grpo",
                   surrogate={"name": "kl_cov", "kappa": 1.0,
                              "ratio": 2e-3},
                   aggregation="token-mean"),
    # The same two surrogates with verl's generic defaults (actor config:
    # clip_cov_ratio 2e-4, clip_cov_lb 1, clip_cov_ub 5 with PPO's 0.2 clip;
    # kl_cov_ratio 2e-4, ppo_kl_coef 0.1).
    "verl_clip_cov": dict(advantage="grpo", surrogate="clip_cov",
                          aggregation="token-mean"),
    "verl_kl_cov": dict(advantage="grpo", surrogate="kl_cov",
                        aggregation="token-mean"),
    # DPPO, arXiv:2602.04879.
    "dppo_tv": dict(advantage="grpo", surrogate="dppo_tv",
                    aggregation="token-mean"),
    "dppo_kl": dict(advantage="grpo", surrogate="dppo_kl",
                    aggregation="token-mean"),
    # Quadratic log-ratio penalty (verl's `dro`).
    "dro": dict(advantage="grpo", surrogate={"name": "dro", "beta": 0.1},
                aggregation="token-mean"),
    # VESPO and LUSPO as in TRL.
    "vespo": dict(advantage="grpo", surrogate="vespo",
                  aggregation="token-mean"),
    "luspo": dict(advantage="grpo", surrogate="luspo",
                  aggregation="seq-mean-token-mean"),
    # "Back to Basics", arXiv:2402.14740.
    "rloo": dict(advantage="rloo", surrogate="ppo_clip",
                 aggregation="seq-mean-token-mean"),
    # "REINFORCE++", arXiv:2501.03262: KL in the reward.
    "reinforce_pp": dict(transforms=[{"name": "kl_in_reward", "coef": 0.001}],
                         advantage="reinforce_pp", surrogate="ppo_clip",
                         aggregation="token-mean"),
    "reinforce_pp_baseline": dict(advantage="reinforce_pp_baseline",
                                  surrogate="ppo_clip",
                                  regularizers={"kl": {"estimator": "k3",
                                                       "coef": 0.001}},
                                  aggregation="token-mean"),
    # "ReMax", arXiv:2310.10505: the baseline is the reward of the greedy
    # decode (the trainer draws it when an objective reads it).
    "remax": dict(advantage="remax", surrogate="reinforce",
                  aggregation="token-mean"),
    # OPO, arXiv:2505.23585.
    "opo": dict(advantage="opo", surrogate="reinforce",
                aggregation="token-mean"),
    # "GPG", arXiv:2504.02546: scaled advantage and plain REINFORCE.
    "gpg": dict(advantage="gpg", surrogate="reinforce",
                aggregation="token-mean"),
    # Best-of-group credit of Tang et al., "Optimizing Language Models for
    # Inference Time Objectives using RL", arXiv:2503.19595, as verl's
    # `grpo_passk` (which also divides by the group std: verl's choice).
    "passk_best": dict(advantage="passk_best", surrogate="ppo_clip",
                       aggregation="seq-mean-token-mean"),
    # Optimal token baseline (verl); reads sum_v pi_old^2 per token.
    "otb": dict(advantage="otb", surrogate="ppo_clip",
                aggregation="token-mean"),
    # GDPO, arXiv:2601.05242: reward components [B,K] normalised one by one.
    "gdpo": dict(advantage="gdpo", surrogate="ppo_clip",
                 aggregation="token-mean"),
    # PPO with GAE (arXiv:1506.02438), dual clip (arXiv:1912.09729), KL in
    # the reward and a critic: the value head trained by the clipped value
    # loss (coefficient 0.5, PPO's c_1).
    "ppo_gae": dict(transforms=[{"name": "kl_in_reward", "coef": 0.001}],
                    advantage="gae",
                    surrogate={"name": "ppo_clip", "clip_ratio_c": 3.0},
                    regularizers={"value_loss": {"coef": 0.5}},
                    aggregation="token-mean"),
    # Train/inference mismatch corrections (arXiv:2512.23075).
    "grpo_tis": dict(advantage="grpo", surrogate="ppo_clip",
                     token_weights={"rollout_is": {"mode": "truncate",
                                                   "threshold": 2.0}},
                     aggregation="token-mean"),
    "grpo_icepop": dict(advantage="grpo", surrogate="ppo_clip",
                        token_weights={"rollout_is": {"mode": "mask"}},
                        aggregation="token-mean"),
    "grpo_bypass": dict(advantage="grpo", surrogate="bypass_ppo",
                        aggregation="token-mean"),
    # "The Choice of Divergence" (DPH-RL), arXiv:2509.07430: PPO clip-higher
    # on the policy's samples without KL, plus the forward-KL generator on
    # reference samples (eta = 0.01, token mean); needs sampling.ref_share
    # > 0 (the rehearsal rows).
    "dph_rl": dict(advantage="grpo",
                   surrogate={"name": "ppo_clip", "eps_high": 0.28},
                   token_weights={"policy_samples_only": {}},
                   regularizers={"dph_rehearsal": {"divergence": "forward_kl",
                                                   "coef": 0.01}},
                   aggregation="token-mean"),
    # "Jointly Reinforcing Diversity and Quality" (DARLING),
    # arXiv:2509.02534: quality times partition diversity, group mean
    # baseline without the std (the released math scripts).
    "darling": dict(transforms=["darling"], advantage="dr_grpo",
                    surrogate="ppo_clip", aggregation="token-mean"),
    # Library defaults (docs/conventions.md).
    "verl_grpo": dict(
        advantage={"name": "grpo", "singleton": "reward"},
        surrogate={"name": "ppo_clip", "clip_ratio_c": 3.0},
        regularizers={"kl": {"estimator": "k3", "coef": 0.001,
                             "log_ratio_clip": 20.0, "value_clip": 10.0}},
        aggregation="token-mean"),
    "trl_grpo": dict(advantage={"name": "grpo", "eps": 1e-4},
                     surrogate={"name": "ppo_clip", "log_ratio_clip": None},
                     aggregation="token-mean"),
    "tunix_grpo": dict(advantage="grpo", surrogate="ppo_clip",
                       regularizers={"kl": {"estimator": "k1",
                                            "coef": 0.04}},
                       aggregation="seq-mean-token-mean"),
}


def names() -> tuple[str, ...]:
  return tuple(sorted(RECIPES))


def get(name: str) -> ml_collections.ConfigDict:
  """A fresh, editable copy of recipe ``name`` as a ``ConfigDict``."""
  if name not in RECIPES:
    raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(names())}.")
  return ml_collections.ConfigDict(copy.deepcopy(RECIPES[name]))


def build(name: str):
  """The ``Objective`` of recipe ``name``."""
  from divrl import objective  # pylint: disable=g-import-not-at-top
  return objective.from_config(get(name))
