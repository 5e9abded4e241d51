"""NumPy references for divrl.set_rewards, written from the formulas with
plain loops, Python sets and float64, independent of the JAX code.

A row is valid when its mask has a positive entry; ``valid`` rows alone form
the groups of the embedding-based scores.
"""

import math

import numpy as np


def _valid(mask):
  return [bool(np.any(np.asarray(row) > 0)) for row in mask]


def _mates(group_ids, valid, i, self_too=False):
  """The valid rows of i's group (without i unless self_too)."""
  return [j for j in range(len(group_ids))
          if group_ids[j] == group_ids[i] and valid[j]
          and (self_too or j != i)]


def _unit(e):
  e = np.asarray(e, np.float64)
  n = np.linalg.norm(e)
  return e / n if n > 0 else e


def cos(a, b):
  return float(_unit(a) @ _unit(b))


# --- distinct-n --------------------------------------------------------------


def ngrams(tokens, mask, n):
  """The list of n-gram tuples of the row's valid tokens, in order."""
  seq = [int(x) for x, m in zip(tokens, mask) if m > 0]
  return [tuple(seq[j:j + n]) for j in range(len(seq) - n + 1)]


def distinct_n(rows):
  """#distinct n-grams / #n-grams over a list of n-gram lists (0 if none)."""
  grams = [g for row in rows for g in row]
  return len(set(grams)) / len(grams) if grams else 0.0


def distinct_n_credit(tokens, mask, group_ids, n, credit):
  rows = [ngrams(t, m, n) for t, m in zip(tokens, mask)]
  out = []
  for i, mine in enumerate(rows):
    others = [rows[j] for j in range(len(rows))
              if group_ids[j] == group_ids[i] and j != i]
    if credit == "unique_share":
      seen = set(g for row in others for g in row)
      own = set(mine) - seen
      out.append(len(own) / len(mine) if mine else 0.0)
    else:
      out.append(distinct_n(others + [mine]) - distinct_n(others))
  return np.array(out)


# --- submodular facility location --------------------------------------------


def facility_location(emb, members, chosen):
  """(1/|members|) sum_{j in members} max_{s in chosen} max(cos, 0)."""
  if not chosen:
    return 0.0
  total = 0.0
  for j in members:
    total += max(max(cos(emb[j], emb[s]), 0.0) for s in chosen)
  return total / len(members)


def facility_location_gains(emb, group_ids, valid):
  out = np.zeros(len(group_ids))
  for i in range(len(group_ids)):
    if not valid[i]:
      continue
    members = _mates(group_ids, valid, i, self_too=True)
    before = [j for j in members if j < i]
    out[i] = (facility_location(emb, members, before + [i])
              - facility_location(emb, members, before))
  return out


# --- k-NN novelty ------------------------------------------------------------


def distance(a, b, metric):
  if metric == "cosine":
    return 1.0 - cos(a, b)
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  return float(math.sqrt(float(d @ d)))


def knn_novelty(emb, group_ids, valid, k, metric):
  out = np.zeros(len(group_ids))
  for i in range(len(group_ids)):
    if not valid[i]:
      continue
    dists = sorted(distance(emb[i], emb[j], metric)
                   for j in _mates(group_ids, valid, i))
    near = dists[:k]
    out[i] = sum(near) / len(near) if near else 0.0
  return out


# --- GARDO -------------------------------------------------------------------


def grpo(rewards, group_ids, scale_by_std, eps=1e-6):
  """(r - mean_g) [/ (std_g (ddof 1) + eps)] over every row of the group;
  0 for a group of one."""
  r = np.asarray(rewards, np.float64)
  out = np.zeros(len(r))
  for i in range(len(r)):
    g = [r[j] for j in range(len(r)) if group_ids[j] == group_ids[i]]
    if len(g) < 2:
      continue
    out[i] = r[i] - np.mean(g)
    if scale_by_std:
      out[i] /= np.std(g, ddof=1) + eps
  return out


def gardo(rewards, emb, group_ids, valid, scale_by_std=False,
          normalize=True):
  """GARDO's released rule: A * d / mean_g(d) where A > 0, else A, with d
  the cosine distance to the nearest other valid row of the group."""
  a = grpo(rewards, group_ids, scale_by_std)
  d = np.zeros(len(a))
  for i in range(len(a)):
    mates = _mates(group_ids, valid, i)
    if valid[i] and mates:
      d[i] = min(1.0 - min(max(cos(emb[i], emb[j]), -1.0), 1.0)
                 for j in mates)
  out = a.copy()
  for i in range(len(a)):
    if not (valid[i] and _mates(group_ids, valid, i) and a[i] > 0):
      continue
    if not normalize:
      out[i] = a[i] * d[i]
      continue
    mean_d = np.mean([d[j] for j in _mates(group_ids, valid, i, True)])
    out[i] = a[i] * d[i] / mean_d if mean_d > 0 else a[i]
  return out


# --- DSDR local term ---------------------------------------------------------


def dsdr_scores(emb, group_ids, valid):
  """D_emb(o_i) = mean over the other valid rows of (1 - cos) / 2."""
  out = np.zeros(len(group_ids))
  for i in range(len(group_ids)):
    mates = _mates(group_ids, valid, i)
    if valid[i] and mates:
      out[i] = np.mean([(1.0 - cos(emb[i], emb[j])) / 2.0 for j in mates])
  return out


def dsdr_weights(scores, correct, group_ids, tau):
  w = np.zeros(len(scores))
  for i in range(len(scores)):
    if not correct[i]:
      continue
    pos = [j for j in range(len(scores))
           if group_ids[j] == group_ids[i] and correct[j]]
    w[i] = math.exp(tau * scores[i]) / sum(math.exp(tau * scores[j])
                                           for j in pos)
  return w


def dsdr_local(rewards, emb, entropy, mask, group_ids, tau=5.0, clip=1.0):
  """Per-token -n_g w_i H_it on valid tokens (0 elsewhere)."""
  valid = _valid(mask)
  d = np.minimum(dsdr_scores(emb, group_ids, valid), clip)
  correct = [valid[i] and rewards[i] > 0 for i in range(len(rewards))]
  w = dsdr_weights(d, correct, group_ids, tau)
  out = np.zeros(np.shape(entropy))
  for i in range(len(rewards)):
    n_g = len(_mates(group_ids, valid, i, self_too=True))
    for t in range(len(mask[i])):
      if mask[i][t] > 0:
        out[i][t] = -n_g * w[i] * entropy[i][t]
  return out
