"""NumPy/SciPy references for divrl.normalizations, group by group."""

import numpy as np
from scipy import stats


def bnpo(rewards, group_ids, low=0.0, high=1.0, alpha=None, beta=None,
         max_weight=1e6):
  r = (np.asarray(rewards, np.float64) - low) / (high - low)
  ids = sorted(set(np.asarray(group_ids).tolist()))
  means = {g: r[group_ids == g].mean() for g in ids}
  if alpha is None:
    p = np.array([means[g] for g in ids])
    if len(p) > 1:
      m, v = p.mean(), p.var(ddof=1)
    else:
      m, v = 0.0, 1.0
    if v > 0:
      a = (m * (1 - m) / v - 1) * m
      b = (m * (1 - m) / v - 1) * (1 - m)
      alpha, beta = max(1 + a / 3, 1.0), max(1 + b / 3, 1.0)
    else:
      alpha = beta = 1.0
  out = np.zeros(len(r))
  for i, g in enumerate(group_ids):
    if np.sum(group_ids == g) < 2:
      continue
    pdf = stats.beta.pdf(means[g], alpha, beta)
    w = max_weight if pdf == 0 else min(1 / pdf, max_weight)
    out[i] = w * (r[i] - means[g])
  return out


def gaussian_rank(rewards, group_ids):
  out = np.zeros(len(rewards))
  for g in set(np.asarray(group_ids).tolist()):
    idx = np.nonzero(group_ids == g)[0]
    ranks = stats.rankdata(np.asarray(rewards)[idx])          # 1-based mid
    out[idx] = stats.norm.ppf((ranks - 0.5) / len(idx))
  return out


def _z(x, eps):
  if len(x) < 2:
    return np.zeros(len(x))
  return (x - x.mean()) / (x.std(ddof=1) + eps)


def stratified(rewards, group_ids, strata, blend, eps=1e-6):
  r = np.asarray(rewards, np.float64)
  within, overall = np.zeros(len(r)), np.zeros(len(r))
  for g in set(np.asarray(group_ids).tolist()):
    idx = np.nonzero(group_ids == g)[0]
    overall[idx] = _z(r[idx], eps)
    for s in set(np.asarray(strata)[idx].tolist()):
      cell = idx[np.asarray(strata)[idx] == s]
      within[cell] = _z(r[cell], eps)
  return blend * within + (1 - blend) * overall
