"""NumPy references for divrl.risk, written from the formulas (loops over
groups and distinct values, float64), independent of the JAX code."""

import math

import numpy as np


def _members(group_ids, valid, g):
  return [i for i in range(len(group_ids)) if group_ids[i] == g and valid[i]]


def cvar_lower_value(x, alpha):
  """Mean of the worst alpha share: sum over sorted x of x_(m) * weight."""
  s = np.sort(np.asarray(x, np.float64))
  n = len(s)
  total = 0.0
  for m in range(1, n + 1):
    lo, hi = (m - 1) / n, m / n
    total += s[m - 1] * max(0.0, min(hi, alpha) - lo) / alpha
  return total


def distortion_value(x, w, cdf):
  """L-statistic sum_m x_(m) (H(W_m) - H(W_{m-1})) with weights w."""
  x = np.asarray(x, np.float64)
  w = np.asarray(w, np.float64) / np.sum(w)
  order = np.argsort(x, kind="stable")
  cum = 0.0
  total = 0.0
  for i in order:
    total += x[i] * (cdf(cum + w[i]) - cdf(cum))
    cum += w[i]
  return total


def distortion_advantage(x, w, density, baseline):
  """A(r) = sum over distinct values v < r of phi(F(v)) (next(v) - v)."""
  x = np.asarray(x, np.float64)
  w = np.asarray(w, np.float64) / np.sum(w)
  values = sorted(set(x.tolist()))
  adv = np.zeros(len(x))
  for i, r in enumerate(x):
    a = 0.0
    for k, v in enumerate(values[:-1]):
      if v < r:
        f = float(np.sum(w[x <= v]))
        a += density(f) * (values[k + 1] - v)
    adv[i] = a
  if baseline == "mean":
    adv -= np.sum(w * adv)
  elif baseline == "max":
    adv -= adv[np.argmax(x)]
  return adv


def grouped(fn, rewards, group_ids, valid=None, weights=None):
  """Applies ``fn(x, w) -> [n]`` per group of valid rows; 0 elsewhere."""
  n = len(rewards)
  valid = np.ones(n, bool) if valid is None else np.asarray(valid)
  weights = np.ones(n) if weights is None else np.asarray(weights)
  out = np.zeros(n)
  for g in sorted(set(np.asarray(group_ids).tolist())):
    idx = _members(group_ids, valid, g)
    if idx:
      out[idx] = fn(np.asarray(rewards)[idx], weights[idx])
  return out


def entropic_advantage(x, w, gamma):
  w = np.asarray(w, np.float64) / np.sum(w)
  e = np.exp(-gamma * np.asarray(x, np.float64))
  return (1.0 - e / np.sum(w * e)) / gamma


def entropic_value(x, w, gamma):
  w = np.asarray(w, np.float64) / np.sum(w)
  return -math.log(np.sum(w * np.exp(-gamma * np.asarray(x, np.float64)))) / (
      gamma)


def mean_deviation_advantage(x, w, lam, deviation, eps=1e-6):
  w = np.asarray(w, np.float64) / np.sum(w)
  x = np.asarray(x, np.float64)
  mu = np.sum(w * x)
  v = np.sum(w * (x - mu) ** 2)
  pen = (x - mu) ** 2 - v
  if deviation == "std":
    pen = pen / (2 * math.sqrt(v) + eps)
  return (x - mu) - lam * pen


def torch_quantile(x, q):
  """Linear interpolation between order statistics (torch.quantile)."""
  s = np.sort(np.asarray(x, np.float64))
  p = q * (len(s) - 1)
  lo = math.floor(p)
  hi = min(lo + 1, len(s) - 1)
  return s[lo] + (p - lo) * (s[hi] - s[lo])


def riskpo(rewards, group_ids, bundle_size, *, alpha=0.2, beta=0.9,
           mode="mixed", w_mix=1.5, upper_weight=1.5, scale_by_std=True,
           credit="std", tracked=None, quantiles="track", eps=1e-6):
  """RiskPO's advantages, bundle by bundle, from the released code's
  description: papers are the j-th responses of each question."""
  rewards = np.asarray(rewards, np.float64)
  group_ids = np.asarray(group_ids)
  adv = np.zeros(len(rewards))
  questions = sorted(set(group_ids.tolist()))
  q_std = {}
  for q in questions:
    r = rewards[group_ids == q]
    s = np.std(r, ddof=1) if len(r) > 1 else float("nan")
    q_std[q] = s if s > 1e-3 else 1.0
  bundles = {}
  for q in questions:
    bundles.setdefault(q // bundle_size, []).append(q)
  relu = lambda v: max(v, 0.0)
  for _, qs in sorted(bundles.items()):
    rows = [list(np.nonzero(group_ids == q)[0]) for q in qs]
    n_papers = min(len(r) for r in rows)
    papers = [[r[j] for r in rows] for j in range(n_papers)]
    scores = [sum(rewards[i] for i in p) for p in papers]
    if len(scores) == 1:
      b_lo = b_hi = scores[0]
      std = 1.0
    else:
      b_lo, b_hi = torch_quantile(scores, alpha), torch_quantile(scores, beta)
      std = np.std(scores, ddof=1)
    lo, hi = b_lo, b_hi
    if tracked is not None and quantiles != "batch":
      lo, hi = tracked
      if quantiles == "mix":
        lo, hi = (lo + b_lo) / 2, (hi + b_hi) / 2
    for p, s in zip(papers, scores):
      a = (relu(s - lo) - relu(s - hi) + lo - hi) / (beta - alpha + eps)
      if mode == "mixed":
        c = -relu(lo - s) / (alpha + eps)
        a = (w_mix * c + a) / (w_mix + 1)
      elif mode == "upper":
        u = relu(s - hi) / (1 - beta + eps)
        a = (upper_weight * u + a) / (upper_weight + 1)
      if scale_by_std:
        a = a / (std + eps)
      for i in p:
        adv[i] = a / (q_std[group_ids[i]] + eps) if credit == "std" else a
  return adv
