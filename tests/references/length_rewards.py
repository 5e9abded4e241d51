"""Independent NumPy references for ``divrl/length_rewards.py``.

Written from the formulas of the papers (and, for DRPO, the authors' released
loss), not from the JAX code: plain Python loops over rows and groups,
float64. ``valid[i]`` marks rows with at least one valid token; invalid rows
keep their reward (advantage 0) and take no part in any statistic. A row is
correct when its reward is > 0.
"""

import math

import numpy as np


def _members(group_ids, valid, g):
    return [j for j in range(len(group_ids))
            if group_ids[j] == g and valid[j]]


def kimi_length_reward(correct, lengths, group_ids, valid):
    """Kimi k1.5: lambda = 0.5 - (len - min) / (max - min) over the group's
    valid rows (0 when max == min); correct -> lambda, wrong ->
    min(0, lambda)."""
    out = np.zeros(len(lengths))
    for i in range(len(lengths)):
        if not valid[i]:
            continue
        lens = [lengths[j] for j in _members(group_ids, valid, group_ids[i])]
        lo, hi = min(lens), max(lens)
        lam = 0.0 if hi == lo else 0.5 - (lengths[i] - lo) / (hi - lo)
        out[i] = lam if correct[i] else min(0.0, lam)
    return out


def grpo_lambda(rewards, lengths, group_ids, valid, fraction=0.5, tau=0.5,
                coef=1.0):
    """GRPO-lambda gate: the groups among the top ``fraction`` by accuracy
    (k-th largest accuracy of the non-empty groups, ties kept) with accuracy
    >= tau get 1[correct] + coef * Kimi length reward, the others
    1[correct]."""
    correct = [r > 0 for r in rewards]
    acc = {}
    for g in sorted(set(group_ids)):
        members = _members(group_ids, valid, g)
        if members:
            acc[g] = sum(correct[j] for j in members) / len(members)
    ranked = sorted(acc.values(), reverse=True)
    k = max(1, math.ceil(fraction * len(ranked) - 1e-6))
    kth = ranked[k - 1] if ranked else math.inf
    chosen = {g for g, a in acc.items() if a >= kth and a >= tau}
    bonus = kimi_length_reward(correct, lengths, group_ids, valid)
    out = np.array(rewards, np.float64)
    for i in range(len(rewards)):
        if valid[i]:
            out[i] = float(correct[i]) + (
                coef * bonus[i] if group_ids[i] in chosen else 0.0)
    return out


def drpo(rewards, lengths, scores, group_ids, valid, max_length, lam=0.1,
         tau=10.0):
    """DRPO weights as in the authors' ``compute_policy_loss_drpo``:
    positives weighted exp((1 - len / L) / lam) normalised over the group's
    positives, negatives by softmax(score / tau) over the group's negatives;
    groups without both outcomes are dropped. Returned times the group's
    number of valid rows, negatives with a minus sign."""
    out = np.zeros(len(rewards))
    for g in sorted(set(group_ids)):
        members = _members(group_ids, valid, g)
        pos = [j for j in members if rewards[j] > 0]
        neg = [j for j in members if not rewards[j] > 0]
        if not pos or not neg:
            continue
        wp = {j: math.exp((1.0 - lengths[j] / max_length) / lam) for j in pos}
        zp = sum(wp.values())
        m = max(scores[j] / tau for j in neg)
        wn = {j: math.exp(scores[j] / tau - m) for j in neg}
        zn = sum(wn.values())
        for j in pos:
            out[j] = len(members) * wp[j] / zp
        for j in neg:
            out[j] = -len(members) * wn[j] / zn
    return out


def dler_truncation(rewards, lengths, max_length, over_scale=0.0):
    return np.array([r if n <= max_length else over_scale * r
                     for r, n in zip(rewards, lengths)], np.float64)


def fimi_debias(rewards, lengths, valid, degree=1, ridge=1e-3,
                keep_mean=True):
    """r - f(z) (+ mean r), f the ridge least-squares polynomial in the
    standardised length z over the valid rows (intercept not penalised,
    ridge scaled by the number of valid rows)."""
    idx = [i for i in range(len(rewards)) if valid[i]]
    out = np.array(rewards, np.float64)
    if not idx:
        return out
    n = len(idx)
    x = np.array([float(lengths[i]) for i in idx])
    r = np.array([float(rewards[i]) for i in idx])
    mu = sum(x) / n
    sd = math.sqrt(sum((v - mu) ** 2 for v in x) / n)
    z = [(v - mu) / sd if sd > 0 else 0.0 for v in x]
    d = degree + 1
    a = np.zeros((d, d))
    b = np.zeros(d)
    for zi, ri in zip(z, r):
        phi = [zi ** p for p in range(d)]
        for p in range(d):
            b[p] += phi[p] * ri
            for q in range(d):
                a[p, q] += phi[p] * phi[q]
    for p in range(1, d):
        a[p, p] += ridge * n
    beta = np.linalg.solve(a, b)
    mean_r = sum(r) / n
    for k, i in enumerate(idx):
        fit = sum(beta[p] * z[k] ** p for p in range(d))
        out[i] = rewards[i] - fit + (mean_r if keep_mean else 0.0)
    return out


def rlsp_step_reward(rewards, tokens, mask, step_ids, coef=0.01,
                     max_steps=32):
    out = np.array(rewards, np.float64)
    for i in range(len(rewards)):
        steps = sum(1 for t in range(len(tokens[i]))
                    if mask[i][t] > 0 and tokens[i][t] in step_ids)
        if max_steps is not None:
            steps = min(steps, max_steps)
        out[i] = rewards[i] + coef * steps
    return out
