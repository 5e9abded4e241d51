"""NumPy references for ``divrl.groups``: loops over the members of each
group, written from the definitions (no vectorised tricks)."""

import numpy as np


def members(group_ids, g, valid=None):
  ids = np.asarray(group_ids)
  ok = np.ones(len(ids), bool) if valid is None else np.asarray(valid, bool)
  return [j for j in range(len(ids)) if ids[j] == g and ok[j]]


def group_ranks(x, group_ids, ties="ordinal", valid=None):
  """0-based ascending ranks within each group, and the group sizes."""
  x = np.asarray(x, np.float64)
  ids = np.asarray(group_ids)
  ok = np.ones(len(x), bool) if valid is None else np.asarray(valid, bool)
  rank = np.zeros(len(x))
  size = np.zeros(len(x))
  for i in range(len(x)):
    peers = members(ids, ids[i], ok)
    size[i] = len(peers)
    if not ok[i]:
      continue
    lower = sum(x[j] < x[i] for j in peers)
    equal = [j for j in peers if x[j] == x[i]]
    if ties == "ordinal":
      rank[i] = lower + sum(j < i for j in equal)
    elif ties == "min":
      rank[i] = lower
    elif ties == "max":
      rank[i] = lower + len(equal) - 1
    else:  # average: the midrank, scipy.stats.rankdata(method="average") - 1
      rank[i] = lower + (len(equal) - 1) / 2
  return rank, size


def group_quantile(x, group_ids, num_groups, q, valid=None):
  out = np.full(num_groups, np.nan)
  for g in range(num_groups):
    vals = [x[j] for j in members(group_ids, g, valid)]
    if vals:
      out[g] = np.quantile(np.asarray(vals, np.float64), q)
  return out


def group_logsumexp(x, group_ids, num_groups):
  out = np.full(num_groups, -np.inf)
  for g in range(num_groups):
    vals = np.asarray([x[j] for j in members(group_ids, g)], np.float64)
    if len(vals):
      m = vals.max()
      out[g] = m + np.log(np.exp(vals - m).sum())
  return out
