"""NumPy references for divrl.passk, by explicit enumeration of subsets."""

import itertools
import math

import numpy as np


def pkpo(g, k, baseline):
  """(n/k) * PKPO advantages of one group by enumerating its k-subsets."""
  g = [float(x) for x in g]
  n = len(g)
  if n < k:
    return np.zeros(n)
  out = np.zeros(n)
  subsets = list(itertools.combinations(range(n), k))
  for i in range(n):
    total = 0.0
    for s in subsets:
      if i not in s:
        continue
      best = max(g[j] for j in s)
      if baseline == "loo_minus_one":
        rest = [g[j] for j in s if j != i]
        best -= max(rest)
      total += best
    out[i] = total / math.comb(n, k)
    if baseline == "loo" and n > k:
      others = [j for j in range(n) if j != i]
      est = np.mean([max(g[j] for j in s)
                     for s in itertools.combinations(others, k)])
      out[i] -= k / n * est
  return out * n / k


def closed_form(g, k, eps=1e-6):
  """Chen et al. (arXiv:2508.10751), group by group, with math.comb."""
  n = len(g)
  if n < k:
    return np.zeros(n)
  neg = sum(1 for x in g if not x > 0.5)
  r = 1 - math.comb(neg, k) / math.comb(n, k)
  sigma = math.sqrt(r * (1 - r)) + eps
  a_pos = (1 - r) / sigma
  a_neg = (1 - r - (math.comb(neg - 1, k - 1) / math.comb(n - 1, k - 1)
                    if neg >= 1 else 0.0)) / sigma
  return np.array([a_pos if x > 0.5 else a_neg for x in g])


def grouped(fn, rewards, group_ids):
  out = np.zeros(len(rewards))
  for gid in sorted(set(np.asarray(group_ids).tolist())):
    idx = np.nonzero(np.asarray(group_ids) == gid)[0]
    out[idx] = fn(np.asarray(rewards)[idx])
  return out
