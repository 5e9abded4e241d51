"""NumPy references for divrl.likelihood_losses (float64, plain loops).

Each group loss is written from its definition: the loss of a batch under
``seq-mean-token-mean`` is ``sum_g (n_g / B_seq) L_g`` (``n_g`` valid members
of group ``g``, ``B_seq`` valid rows), and its gradient with respect to the
sequence log-likelihoods ``S_i`` is derived by hand from the pair or group
loss. The per-row shares (``n_g / P_g`` times half the losses of the pairs
a row is in) are checked separately. Inputs are indexed ``x[i][t]``.
"""

import math

import numpy as np

from tests.references._common import _valid


def _rows(mask):
  return [i for i in range(len(mask))
          if any(_valid(mask, i, t) for t in range(len(mask[i])))]


def members(group_ids, mask):
  """{group: [valid rows]} in row order."""
  out = {}
  for i in _rows(mask):
    out.setdefault(int(group_ids[i]), []).append(i)
  return out


def seq_sum(x, mask, gamma=1.0):
  """sum over the valid tokens of row i of gamma^k x[i][t], k the valid-token
  index; 0 for an empty row."""
  out = []
  for i in range(len(mask)):
    s, k = 0.0, 0
    for t in range(len(mask[i])):
      if _valid(mask, i, t):
        s += gamma ** k * float(x[i][t])
        k += 1
    out.append(s)
  return np.array(out)


def token_powers(mask, gamma=1.0):
  """gamma^k at each valid token (dS_i / dl_it), 0 at padding."""
  out = np.zeros(np.shape(mask))
  for i in range(len(mask)):
    k = 0
    for t in range(len(mask[i])):
      if _valid(mask, i, t):
        out[i][t] = gamma ** k
        k += 1
  return out


def _softplus(x):
  return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def redi(logp, rewards, mask, negative_weight=0.8, threshold=0.0):
  """Per-token REDI loss and its seq-mean-token-mean value."""
  out = np.zeros(np.shape(mask))
  means = []
  for i in _rows(mask):
    pos = rewards[i] > threshold
    vals = []
    for t in range(len(mask[i])):
      if _valid(mask, i, t):
        out[i][t] = -logp[i][t] if pos else negative_weight * logp[i][t]
        vals.append(out[i][t])
    means.append(sum(vals) / len(vals))
  return out, sum(means) / len(means)


def _finish(group_ids, mask, group_loss, group_grad, shares, num):
  """Total loss, dTotal/dS and per-row values from per-group pieces."""
  rows = _rows(mask)
  b_seq = len(rows)
  total, grad = 0.0, np.zeros(len(mask))
  values = np.zeros(len(mask))
  for g, idx in members(group_ids, mask).items():
    n_g = len(idx)
    if num[g] == 0:
      continue
    total += n_g / b_seq * group_loss[g]
    for i in idx:
      grad[i] += n_g / b_seq * group_grad[g].get(i, 0.0)
      values[i] = n_g * shares[i] / num[g]
  return total, grad, values


def cpl(logp, rewards, group_ids, mask, alpha=0.1, lam=0.5, gamma=1.0):
  """(total, dTotal/dS, per-row values) of CPL over the ordered pairs
  r_i > r_j of each group. Pair loss softplus(-z), z = alpha (S_i - lam
  S_j); d/dS_i = -alpha sigma(-z), d/dS_j = alpha lam sigma(-z)."""
  s = seq_sum(logp, mask, gamma)
  loss, grads, num = {}, {}, {}
  shares = np.zeros(len(mask))
  for g, idx in members(group_ids, mask).items():
    total, grad, count = 0.0, {}, 0
    for i in idx:
      for j in idx:
        if rewards[i] > rewards[j]:
          z = alpha * (s[i] - lam * s[j])
          ell = _softplus(-z)
          total += ell
          count += 1
          shares[i] += 0.5 * ell
          shares[j] += 0.5 * ell
          grad[i] = grad.get(i, 0.0) - alpha * _sigmoid(-z)
          grad[j] = grad.get(j, 0.0) + alpha * lam * _sigmoid(-z)
    num[g] = count
    loss[g] = total / count if count else 0.0
    grads[g] = {k: v / count for k, v in grad.items()} if count else {}
  return _finish(group_ids, mask, loss, grads, shares, num)


def trajectory_balance(logp, rewards, group_ids, mask, reward_floor=1e-3,
                       temperature=1.0):
  """(total, dTotal/dS, per-row values): residual rho_i = S_i - log R_i -
  mean_g(S - log R); total (1/B_seq) sum rho^2; d/dS_i = 2 rho_i / B_seq
  (the residuals of a group sum to 0, so the mean's gradient cancels)."""
  s = seq_sum(logp, mask)
  rows = _rows(mask)
  b_seq = len(rows)
  log_r = [math.log(max(float(r), reward_floor)) / temperature
           for r in rewards]
  values, grad = np.zeros(len(mask)), np.zeros(len(mask))
  for idx in members(group_ids, mask).values():
    mean = sum(s[i] - log_r[i] for i in idx) / len(idx)
    for i in idx:
      rho = s[i] - log_r[i] - mean
      values[i] = rho * rho
      grad[i] = 2.0 * rho / b_seq
  return sum(values) / b_seq, grad, values


def refuel(logp, old, rewards, group_ids, mask, eta=1.0):
  """(total, dTotal/dS, per-row values) over the unordered pairs of each
  group: e = (d_i - d_j) / eta - (r_i - r_j), d = S - S_old, loss e^2;
  d e^2 / dS_i = 2 e / eta, d e^2 / dS_j = -2 e / eta."""
  d = seq_sum(logp, mask) - seq_sum(old, mask)
  loss, grads, num = {}, {}, {}
  shares = np.zeros(len(mask))
  for g, idx in members(group_ids, mask).items():
    total, grad, count = 0.0, {}, 0
    for a in range(len(idx)):
      for b in range(a + 1, len(idx)):
        i, j = idx[a], idx[b]
        e = (d[i] - d[j]) / eta - (rewards[i] - rewards[j])
        total += e * e
        count += 1
        shares[i] += 0.5 * e * e
        shares[j] += 0.5 * e * e
        grad[i] = grad.get(i, 0.0) + 2 * e / eta
        grad[j] = grad.get(j, 0.0) - 2 * e / eta
    num[g] = count
    loss[g] = total / count if count else 0.0
    grads[g] = {k: v / count for k, v in grad.items()} if count else {}
  return _finish(group_ids, mask, loss, grads, shares, num)


def _softmax(x):
  m = max(x)
  e = [math.exp(v - m) for v in x]
  z = sum(e)
  return [v / z for v in e]


def brain(logp, old, ref, rewards, group_ids, mask, beta=1.0,
          baseline=True):
  """(total, dTotal/dS, per-row values). alpha = softmax_g(S_ref - S_q +
  r / beta); with the baseline L_g = -sum_i alpha_i log b_i, b =
  softmax_g(S - S_q), dL_g/dS_i = -(alpha_i - b_i); without it L_g = -sum_i
  alpha_i S_i, dL_g/dS_i = -alpha_i."""
  s, s_q, s_ref = seq_sum(logp, mask), seq_sum(old, mask), seq_sum(ref, mask)
  loss, grads, num = {}, {}, {}
  shares = np.zeros(len(mask))
  for g, idx in members(group_ids, mask).items():
    alpha = _softmax([s_ref[i] - s_q[i] + rewards[i] / beta for i in idx])
    b = _softmax([s[i] - s_q[i] for i in idx])
    total, grad = 0.0, {}
    for k, i in enumerate(idx):
      fit = math.log(b[k]) if baseline else s[i]
      total -= alpha[k] * fit
      shares[i] = -alpha[k] * fit
      grad[i] = -(alpha[k] - b[k]) if baseline else -alpha[k]
    loss[g], grads[g], num[g] = total, grad, 1
  return _finish(group_ids, mask, loss, grads, shares, num)


def rpo_sft(logp, sample_source, mask):
  """-l on the valid tokens of reference rows, 0 elsewhere."""
  out = np.zeros(np.shape(mask))
  for i in range(len(mask)):
    if sample_source[i] == 1:
      for t in range(len(mask[i])):
        if _valid(mask, i, t):
          out[i][t] = -logp[i][t]
  return out
