"""How verl, TRL and tunix compute a few quantities, emulated in NumPy.

Written from the libraries' own formulas (verl's ``core_algos``, TRL's
``GRPOTrainer`` and tunix's GRPO learner, as docs/conventions.md describes
them), not from divrl's code. Groups here are
contiguous blocks of the batch, as the libraries lay them out.
"""

import numpy as np


def _groups(group_ids):
  return {g: np.flatnonzero(group_ids == g) for g in np.unique(group_ids)}


def verl_grpo(r, group_ids, norm_adv_by_std=True, eps=1e-6):
  """verl `grpo`: unbiased torch.std + 1e-6; singleton -> mean 0, std 1."""
  a = np.zeros_like(r, dtype=np.float64)
  for idx in _groups(group_ids).values():
    if len(idx) == 1:
      mean, std = 0.0, 1.0
    else:
      mean, std = r[idx].mean(), r[idx].std(ddof=1)
    a[idx] = (r[idx] - mean) / (std + eps) if norm_adv_by_std else r[idx] - mean
  return a


def trl_grpo(r, group_size, scale_rewards="group", eps=1e-4):
  """TRL GRPOTrainer: fixed-size groups; unbiased std + 1e-4; 'batch' uses
  the std of the whole batch (PPO-Lite)."""
  g = r.reshape(-1, group_size)
  mean = np.repeat(g.mean(1), group_size)
  if scale_rewards == "none":
    return r - mean
  if scale_rewards == "group":
    std = np.repeat(g.std(1, ddof=1), group_size)
  else:
    std = np.full_like(r, r.std(ddof=1))
  return (r - mean) / (std + eps)


def tunix_grpo(r, group_size):
  """tunix `compute_advantages`: numpy std(ddof=1) + 1e-6 per group."""
  g = r.reshape(-1, group_size)
  return ((g - g.mean(1, keepdims=True))
          / (g.std(1, ddof=1, keepdims=True) + 1e-6)).ravel()


def verl_rloo(r, group_ids, vectorized):
  """verl `rloo` (loop: singleton keeps r) and `rloo_vectorized` (singleton 0)."""
  a = np.zeros_like(r, dtype=np.float64)
  for idx in _groups(group_ids).values():
    n = len(idx)
    if n == 1:
      a[idx] = 0.0 if vectorized else r[idx]
    else:
      a[idx] = n / (n - 1) * (r[idx] - r[idx].mean())
  return a


def verl_seq_mean_token_sum_norm(loss, mask, loss_scale_factor=None):
  """verl >= Feb 2026: sum L m / (B_seq * S), S = T unless set."""
  s = loss.shape[1] if loss_scale_factor is None else loss_scale_factor
  b_seq = np.sum(mask.sum(1) > 0)
  return np.sum(loss * mask) / (b_seq * s)


def trl_dr_grpo(loss, mask, max_completion_length):
  """TRL loss_type='dr_grpo': sum L m / (B_local * max_completion_length)."""
  return np.sum(loss * mask) / (loss.shape[0] * max_completion_length)


def trl_grpo_loss(loss, mask):
  """TRL loss_type='grpo': mean over rows of sum_t L m / max(sum_t m, 1)."""
  return np.mean(np.sum(loss * mask, 1) / np.maximum(mask.sum(1), 1))


def tunix_sequence_mean_token_scale(loss, mask):
  """tunix: sum_i (sum_t L m / T) / #non-empty sequences."""
  nonempty = np.sum(mask.sum(1) > 0)
  return np.sum(np.sum(loss * mask, 1) / loss.shape[1]) / nonempty


def tunix_sequence_mean_token_sum_norm(loss, mask):
  """tunix: sum over all tokens / B (rows)."""
  return np.sum(loss * mask) / loss.shape[0]


def trl_bnpo(micro_losses, micro_masks):
  """TRL 'bnpo': token mean per micro-batch, averaged over accumulation."""
  return np.mean([np.sum(l * m) / max(m.sum(), 1)
                  for l, m in zip(micro_losses, micro_masks)])


# --- Policy losses ---------------------------------------------------------


def verl_vanilla(lp, old, adv, eps_low=0.2, eps_high=0.2, c=3.0):
  """verl `vanilla`: Δ clamped ±20; dual clip caps the A<0 loss at -A·c."""
  rho = np.exp(np.clip(lp - old, -20, 20))
  l = np.maximum(-adv * rho, -adv * np.clip(rho, 1 - eps_low, 1 + eps_high))
  return np.where(adv < 0, np.minimum(l, -adv * c), l)


def trl_grpo_token_loss(lp, old, adv, eps=0.2, eps_high=0.2, delta=None):
  """TRL token loss: no clamp; coef capped at δ if set."""
  coef = np.exp(lp - old)
  c2 = np.clip(coef, 1 - eps, 1 + eps_high)
  if delta is not None:
    coef = np.minimum(coef, delta)
  return -np.minimum(coef * adv, c2 * adv)


def verl_cispo(lp, old, adv, eps_low=0.2, eps_high=0.2):
  rho = np.exp(np.clip(lp - old, -20, 20))
  return -np.clip(rho, 1 - eps_low, 1 + eps_high) * adv * lp


def trl_cispo(lp, old, adv, eps_high=5.0):
  return -np.minimum(np.exp(lp - old), eps_high) * adv * lp


def sapo(lp, old, adv, clamp):
  d = lp - old
  rho = np.exp(np.clip(d, -20, 20) if clamp else d)
  tau = np.where(adv > 0, 1.0, 1.05)
  return -1 / (1 + np.exp(-tau * (rho - 1))) * 4 / tau * adv


def gspo_value(lp, old, adv, mask, eps_low, eps_high):
  """Both GSPO forms: PPO clip on s_i = exp(mean_t Δ) per token."""
  n = np.maximum(mask.sum(1, keepdims=True), 1)
  s = np.exp(np.sum((lp - old) * mask, 1, keepdims=True) / n)
  return np.maximum(-adv * s, -adv * np.clip(s, 1 - eps_low, 1 + eps_high))


# --- KL ---------------------------------------------------------------------


def verl_low_var_kl(lp, ref):
  """verl k3: -u clamped to [-20, 20], the result to [-10, 10]."""
  u = np.clip(ref - lp, -20, 20)
  return np.clip(np.exp(u) - u - 1, -10, 10)


def trl_k3_bias_corrected(lp, ref, old):
  """TRL with use_bias_correction_kl: k3 times exp(l - l_old), no clamps."""
  return (np.exp(ref - lp) - (ref - lp) - 1) * np.exp(lp - old)


def tunix_kl(lp, ref, clamp=None):
  """tunix method='kl': x - y, optionally clamped symmetrically."""
  k = lp - ref
  return k if clamp is None else np.clip(k, -clamp, clamp)


# --- Rollout IS -------------------------------------------------------------


def verl_token_tis(old, roll, threshold=2.0):
  return np.minimum(np.exp(np.clip(old - roll, -20, 20)), threshold)


def trl_gdpo(rewards_k, weights, group_size, eps=1e-4):
  """TRL normalize_then_sum: per-function group z-score, weighted sum,
  then a batch z-score (unbiased std + 1e-4)."""
  z = np.zeros_like(rewards_k)
  for k in range(rewards_k.shape[1]):
    g = rewards_k[:, k].reshape(-1, group_size)
    z[:, k] = ((g - g.mean(1, keepdims=True))
               / (g.std(1, ddof=1, keepdims=True) + eps)).ravel()
  r = z @ weights
  return (r - r.mean()) / (r.std(ddof=1) + eps)


def trl_entropy_bonus(entropy, mask, coef):
  """TRL: -coef times the token mean of H over the loss mask."""
  return -coef * np.sum(entropy * mask) / np.sum(mask)
