"""Independent NumPy references for ``divrl/trust_regions.py`` (BAPO, ETR,
GRPO-Guard).

Written from the formulas (BAPO: the sequential search loop of the authors'
``recipe/bapo/policy_loss.py``; ETR and GRPO-Guard: the forms documented in
the module, which are our choices), never from the JAX code: plain Python
loops over ``(i, t)`` in float64. Inputs are ``[B,T]`` arrays ``logp``,
``old``, ``adv`` and ``mask`` (0/1); losses are 0 on padding. ``*_grad``
functions give ``d loss[i,t] / d logp[i,t]``.
"""

import math

import numpy as np


def _f(x):
  return np.asarray(x, dtype=np.float64)


def _ratio(lp, o, clip=20.0):
  d = lp - o
  if clip is not None:
    d = min(max(d, -clip), clip)
  return math.exp(d)


def clipped_token(rho, a, low, high, clip_ratio_c=None):
  """``max(-a rho, -a clip(rho, low, high))``, then ``min(., -a c)`` for
  ``a < 0``; and its derivative in ``log pi`` (``d rho = rho``)."""
  unclipped = -a * rho
  clipped = -a * min(max(rho, low), high)
  if unclipped >= clipped:
    loss, grad = unclipped, -a * rho
  else:
    loss, grad = clipped, 0.0
  if clip_ratio_c is not None and a < 0 and -a * clip_ratio_c < loss:
    loss, grad = -a * clip_ratio_c, 0.0
  return loss, grad


# --- BAPO -------------------------------------------------------------------


def bapo_share(rho, adv, mask, low, high, measure="loss", clip_ratio_c=3.0):
  """``(P, N)`` of the positive and negative tokens."""
  p = n = 0.0
  cap = math.inf if clip_ratio_c is None else clip_ratio_c
  b, t_ = np.shape(adv)
  for i in range(b):
    for t in range(t_):
      if mask[i][t] <= 0:
        continue
      r, a, w = rho[i][t], adv[i][t], mask[i][t]
      if measure == "loss":
        rbar = min(r, high) if a >= 0 else max(r, low)
        p += w * max(rbar * a, 0.0)
        n += w * max(-rbar * a, 0.0)
      else:
        if a > 0 and r <= high:
          p += w * a * r
        if a < 0 and low <= r <= cap:
          n += w * -a * r
  return p, n


def bapo_search(logp, old, adv, mask, *, target_share=0.5, lower_start=0.6,
                lower_max=0.9, lower_step=0.05, upper_start=1.2,
                upper_max=3.0, upper_step=0.05, measure="loss",
                clip_ratio_c=3.0, log_ratio_clip=20.0):
  """The authors' loop: raise ``c_low`` while the share is below target,
  then ``c_high``; returns ``(c_low, c_high)``."""
  logp, old, adv, mask = _f(logp), _f(old), _f(adv), _f(mask)
  b, t_ = logp.shape
  rho = [[_ratio(logp[i, t], old[i, t], log_ratio_clip) if mask[i, t] > 0
          else 1.0 for t in range(t_)] for i in range(b)]

  def passes(low, high):
    p, n = bapo_share(rho, adv, mask, low, high, measure, clip_ratio_c)
    share = p / (p + n) if p + n > 0 else 1.0
    return share >= target_share

  low, high = lower_start, upper_start
  ok = passes(low, high)
  while not ok and low < lower_max:
    low = min(low + lower_step, lower_max)
    ok = passes(low, high)
  while not ok and high < upper_max:
    high = min(high + upper_step, upper_max)
    ok = passes(low, high)
  return low, high


def bapo(logp, old, adv, mask, *, clip_ratio_c=3.0, log_ratio_clip=20.0,
         **search):
  """``(loss [B,T], grad [B,T], (c_low, c_high))``."""
  low, high = bapo_search(logp, old, adv, mask, clip_ratio_c=clip_ratio_c,
                          log_ratio_clip=log_ratio_clip, **search)
  logp, old, adv, mask = _f(logp), _f(old), _f(adv), _f(mask)
  loss, grad = np.zeros(logp.shape), np.zeros(logp.shape)
  for i in range(logp.shape[0]):
    for t in range(logp.shape[1]):
      if mask[i, t] > 0:
        rho = _ratio(logp[i, t], old[i, t], log_ratio_clip)
        loss[i, t], grad[i, t] = clipped_token(rho, adv[i, t], low, high,
                                               clip_ratio_c)
  return loss, grad, (low, high)


# --- ETR --------------------------------------------------------------------


def etr_scale(adv, mask, rewards, group_ids, *, adv_coef=0.5, var_coef=0.5,
              min_scale=0.5, max_scale=2.0):
  """``f[i,t] = clip(phi psi, min_scale, max_scale)`` (0 on padding)."""
  adv, mask, rewards = _f(adv), _f(mask), _f(rewards)
  b, t_ = adv.shape
  cells = [(i, t) for i in range(b) for t in range(t_) if mask[i, t] > 0]
  rows = [i for i in range(b) if any(mask[i, t] > 0 for t in range(t_))]
  sigma = np.zeros(b)
  for i in range(b):
    members = [j for j in rows if group_ids[j] == group_ids[i]]
    if members:
      mu = sum(rewards[j] for j in members) / len(members)
      sigma[i] = math.sqrt(sum((rewards[j] - mu) ** 2 for j in members)
                           / len(members))
  mean_a = sum(abs(adv[i, t]) for i, t in cells) / max(len(cells), 1)
  mean_s = sum(sigma[i] for i, _ in cells) / max(len(cells), 1)
  f = np.zeros((b, t_))
  for i, t in cells:
    phi = 1.0 + adv_coef * ((abs(adv[i, t]) / mean_a if mean_a > 0 else 1.0)
                            - 1.0)
    psi = 1.0 + var_coef * ((sigma[i] / mean_s if mean_s > 0 else 1.0)
                            - 1.0)
    f[i, t] = min(max(phi * psi, min_scale), max_scale)
  return f


def etr(logp, old, adv, mask, rewards, group_ids, *, eps_low=0.2,
        eps_high=0.2, clip_ratio_c=None, log_ratio_clip=20.0, **scale):
  """``(loss [B,T], grad [B,T], f [B,T])``."""
  f = etr_scale(adv, mask, rewards, group_ids, **scale)
  logp, old, adv, mask = _f(logp), _f(old), _f(adv), _f(mask)
  loss, grad = np.zeros(logp.shape), np.zeros(logp.shape)
  for i in range(logp.shape[0]):
    for t in range(logp.shape[1]):
      if mask[i, t] > 0:
        rho = _ratio(logp[i, t], old[i, t], log_ratio_clip)
        loss[i, t], grad[i, t] = clipped_token(
            rho, adv[i, t], 1.0 - eps_low * f[i, t], 1.0 + eps_high * f[i, t],
            clip_ratio_c)
  return loss, grad, f


# --- GRPO-Guard ---------------------------------------------------------------


def guard_z(delta, mask, *, level="position", rescale=True):
  """Per-unit centred (and rescaled to the pooled within-unit std)
  log-ratios; 0 on padding."""
  delta, mask = _f(delta), _f(mask)
  b, t_ = delta.shape
  if level == "position":
    units = [[(i, t) for i in range(b) if mask[i, t] > 0] for t in range(t_)]
  elif level == "sequence":
    units = [[(i, t) for t in range(t_) if mask[i, t] > 0] for i in range(b)]
  else:
    units = [[(i, t) for i in range(b) for t in range(t_) if mask[i, t] > 0]]
  z = np.zeros((b, t_))
  var = {}
  for u, cells in enumerate(units):
    if not cells:
      continue
    mu = sum(delta[c] for c in cells) / len(cells)
    var[u] = sum((delta[c] - mu) ** 2 for c in cells) / len(cells)
    for c in cells:
      z[c] = delta[c] - mu
  if rescale:
    n = sum(len(cells) for cells in units)
    pooled = sum(z[c] ** 2 for cells in units for c in cells) / max(n, 1)
    for u, cells in enumerate(units):
      if cells and var[u] > 1e-12:
        for c in cells:
          z[c] *= math.sqrt(pooled / var[u])
  return z


def grpo_guard(logp, old, adv, mask, *, level="position", rescale=True,
               eps_low=0.2, eps_high=0.2, clip_ratio_c=None,
               log_ratio_clip=20.0):
  """``(loss [B,T], grad [B,T], z [B,T])``; the ratio is ``e^z`` and its
  derivative in ``log pi`` is ``e^z``."""
  logp, old, adv, mask = _f(logp), _f(old), _f(adv), _f(mask)
  delta = logp - np.where(mask > 0, old, logp)
  if log_ratio_clip is not None:
    delta = np.clip(delta, -log_ratio_clip, log_ratio_clip)
  z = guard_z(np.where(mask > 0, delta, 0.0), mask, level=level,
              rescale=rescale)
  loss, grad = np.zeros(logp.shape), np.zeros(logp.shape)
  for i in range(logp.shape[0]):
    for t in range(logp.shape[1]):
      if mask[i, t] > 0:
        loss[i, t], grad[i, t] = clipped_token(
            math.exp(z[i, t]), adv[i, t], 1.0 - eps_low, 1.0 + eps_high,
            clip_ratio_c)
  return loss, grad, z
