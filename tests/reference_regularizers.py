"""Independent NumPy references for KL placements, entropy, masks, shaping
and controllers.

Written from the formulas in the brief and the papers (not from the JAX
code): plain Python loops over rows and tokens, float64. A token is valid
when its mask is > 0; |y| is the number of valid tokens.
"""

import math

import numpy as np


# --- KL -----------------------------------------------------------------------


def kl_value(lp, lref, estimator):
    """One token's KL estimate with u = lp - lref."""
    u = lp - lref
    base = estimator.rstrip("+")
    if base == "k1":
        return u
    if base == "abs":
        return abs(u)
    if base == "k2":
        return 0.5 * u * u
    if base == "k3":
        return math.exp(-u) + u - 1.0
    raise ValueError(estimator)


def is_corrected_kl(lp, old, lref, mask, estimator):
    """exp(lp - old) * k(lp, lref) per valid token, 0 on padding."""
    b, t = lp.shape
    out = np.zeros((b, t))
    for i in range(b):
        for j in range(t):
            if mask[i, j] > 0:
                out[i, j] = math.exp(lp[i, j] - old[i, j]) * kl_value(
                    lp[i, j], lref[i, j], estimator)
    return out


def kl_in_reward(rewards, token_rewards, mask, old, lref, coef, estimator):
    """(rewards', token_rewards') after subtracting coef * kl_t * m_t."""
    b, t = mask.shape
    new_r = np.array(rewards, np.float64)
    new_tr = np.zeros((b, t))
    for i in range(b):
        valid = [j for j in range(t) if mask[i, j] > 0]
        if token_rewards is None:
            if valid:
                new_tr[i, valid[-1]] = rewards[i]
        else:
            for j in valid:
                new_tr[i, j] = token_rewards[i, j]
        for j in valid:
            pen = coef * kl_value(old[i, j], lref[i, j], estimator) * mask[i, j]
            new_tr[i, j] -= pen
            new_r[i] -= pen
    return new_r, new_tr


# --- Controllers ----------------------------------------------------------------


def adaptive_kl_sequence(init_coef, target, horizon, kls, n_steps):
    """Coefficients after each update (Ziegler et al.)."""
    beta = init_coef
    out = []
    for kl, n in zip(kls, n_steps):
        err = min(max(kl / target - 1.0, -0.2), 0.2)
        beta = beta * (1.0 + err * n / horizon)
        out.append(beta)
    return np.array(out)


def adaptive_entropy_sequence(init_coef, target, delta, cmin, cmax,
                              init_active, entropies):
    """(coef, active, applied bonus) before each step, then after updates.

    Returns the applied bonus at steps 0..S (S = len(entropies)) and the
    coefficients after each update.
    """
    coef, active = init_coef, init_active
    applied = [coef if active else 0.0]
    coefs = []
    for h in entropies:
        if h <= target:
            coef = min(coef + delta, cmax)
        else:
            coef = max(coef - delta, cmin)
        active = h <= target
        coefs.append(coef)
        applied.append(coef if active else 0.0)
    return np.array(applied), np.array(coefs)


def reference_mixup(params, ref_params, alpha):
    """TR-DPO soft update on flat lists of arrays, element by element."""
    out = []
    for p, r in zip(params, ref_params):
        p = np.asarray(p, np.float64).ravel()
        r = np.asarray(r, np.float64).ravel()
        mixed = np.zeros(len(r))
        for k in range(len(r)):
            mixed[k] = alpha * p[k] + (1.0 - alpha) * r[k]
        out.append(mixed)
    return out


# --- Masks -------------------------------------------------------------------------


def high_entropy_mask(entropy, mask, rho):
    """Keep valid tokens with H >= np.quantile(H_valid, 1 - rho) (linear)."""
    b, t = mask.shape
    vals = [entropy[i, j] for i in range(b) for j in range(t) if mask[i, j] > 0]
    out = np.zeros((b, t))
    if not vals:
        return out
    thr = np.quantile(np.array(vals, np.float64), 1.0 - rho)
    for i in range(b):
        for j in range(t):
            if mask[i, j] > 0 and entropy[i, j] >= thr:
                out[i, j] = 1.0
    return out


def mask_truncated(mask, truncated):
    out = np.array(mask, np.float64)
    for i in range(mask.shape[0]):
        if truncated[i]:
            out[i, :] = 0.0
    return out


def filter_zero_variance(mask, rewards, group_ids, atol=0.0):
    out = np.array(mask, np.float64)
    for i in range(mask.shape[0]):
        members = [rewards[j] for j in range(len(rewards))
                   if group_ids[j] == group_ids[i]]
        if max(members) - min(members) <= atol:
            out[i, :] = 0.0
    return out


# --- Shaping -------------------------------------------------------------------------


def lengths(mask):
    return np.array([sum(1 for x in row if x > 0) for row in mask], np.float64)


def overlong(mask, max_length, cache_length, factor):
    out = []
    for y in lengths(mask):
        if y <= max_length - cache_length:
            out.append(0.0)
        elif y <= max_length:
            out.append((max_length - cache_length - y) / cache_length * factor)
        else:
            out.append(-factor)
    return np.array(out)


def cosine(rewards, mask, max_length, threshold, min_c=0.5, max_c=1.0,
           min_w=-1.0, max_w=-0.5):
    out = []
    for r, y in zip(rewards, lengths(mask)):
        if r > threshold:
            lo, hi = min_c, max_c
        else:
            lo, hi = max_w, min_w
        progress = min(y / max_length, 1.0)
        out.append(lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * progress)))
    return np.array(out)


def ngram_penalty(tokens, mask, n, penalty):
    out = []
    for row, m in zip(tokens, mask):
        seq = [int(x) for x, v in zip(row, m) if v > 0]
        grams = [tuple(seq[j:j + n]) for j in range(len(seq) - n + 1)]
        if len(seq) < n or not grams:
            out.append(0.0)
            continue
        out.append(penalty * (1.0 - len(set(grams)) / len(grams)))
    return np.array(out)
