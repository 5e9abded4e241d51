"""How verl, TRL and tunix compute a few quantities, emulated in NumPy.

Written from ../shared/reference/anchors_verl_trl.md and anchors_tunix_rlax.md
(the formulas restated there), not from divrl's code. Groups here are
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
