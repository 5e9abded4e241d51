"""Independent NumPy references for ``divrl/selection.py``: the difficulty
band, PF-PPO's per-prompt picks, the within-group variance weights, the
Pareto front and VeRPO's rewards.

Written from the formulas (plain Python loops over rows, float64), not from
the JAX code. A row is *valid* when it has at least one response token;
invalid rows take part in no statistic and are never kept.
"""

import math

import numpy as np


def _members(group_ids, valid, g):
    return [j for j in range(len(group_ids)) if group_ids[j] == g and valid[j]]


def valid_rows(mask):
    return [bool(np.any(np.asarray(row) > 0)) for row in mask]


def difficulty_band(rewards, group_ids, valid, p_low, p_high):
    """keep[i]: i valid and p_low <= #{j: r_j > 0} / n <= p_high."""
    keep = []
    for i in range(len(rewards)):
        mates = _members(group_ids, valid, group_ids[i])
        if not valid[i] or not mates:
            keep.append(False)
            continue
        # Compare the fraction as the float32 ratio, like the thresholds.
        p = np.float32(sum(rewards[j] > 0 for j in mates)) / np.float32(
            len(mates))
        keep.append(bool(np.float32(p_low) <= p <= np.float32(p_high)))
    return keep


def pf_ppo(rewards, group_ids, valid, mode, uniforms=None):
    """Best (max reward, lowest index) plus, per mode, the other valid row
    with the largest uniform draw or the lowest reward (lowest index)."""
    keep = [False] * len(rewards)
    for g in sorted(set(group_ids)):
        mates = _members(group_ids, valid, g)
        if not mates:
            continue
        best = mates[0]
        for j in mates:
            if rewards[j] > rewards[best]:
                best = j
        keep[best] = True
        others = [j for j in mates if j != best]
        if mode == "best" or not others:
            continue
        second = others[0]
        for j in others:
            if mode == "best_worst" and rewards[j] < rewards[second]:
                second = j
            if mode == "best_random" and uniforms[j] > uniforms[second]:
                second = j
        keep[second] = True
    return keep


def group_variance(rewards, group_ids, valid):
    out = []
    for i in range(len(rewards)):
        mates = _members(group_ids, valid, group_ids[i])
        if not mates:
            out.append(0.0)
            continue
        mean = sum(float(rewards[j]) for j in mates) / len(mates)
        out.append(sum((float(rewards[j]) - mean) ** 2 for j in mates)
                   / len(mates))
    return out


def ctrl_u(rewards, group_ids, mask, k, mode):
    valid = valid_rows(mask)
    var = group_variance(rewards, group_ids, valid)
    b, t = np.shape(mask)
    out = np.zeros((b, t))
    for i in range(b):
        w = math.exp(-k * var[i]) if mode == "exp" else 1.0 / (1.0 + k * var[i])
        for s in range(t):
            if mask[i][s] > 0:
                out[i, s] = w
    return out


def pareto(rewards, group_ids, valid, scope="group"):
    """keep[i]: i valid and no valid peer j with R_j >= R_i, R_j != R_i."""
    r = [np.atleast_1d(np.asarray(x, np.float64)) for x in rewards]
    keep = []
    for i in range(len(r)):
        if not valid[i]:
            keep.append(False)
            continue
        dominated = False
        for j in range(len(r)):
            if not valid[j] or (scope == "group"
                                and group_ids[j] != group_ids[i]):
                continue
            if all(r[j][c] >= r[i][c] for c in range(len(r[i]))) and any(
                    r[j][c] > r[i][c] for c in range(len(r[i]))):
                dominated = True
        keep.append(not dominated)
    return keep


def verpo(passes, group_ids, valid, outcome_weight):
    p = [[min(max(float(x), 0.0), 1.0) for x in np.atleast_1d(row)]
         for row in passes]
    n_tests = len(p[0])
    out = []
    for i in range(len(p)):
        mates = _members(group_ids, valid, group_ids[i])
        w = []
        for t in range(n_tests):
            rho = (sum(p[j][t] for j in mates) / len(mates)) if mates else 0.0
            w.append(1.0 - rho)
        total = sum(w)
        if total > 0:
            dense = sum(w[t] * p[i][t] for t in range(n_tests)) / total
        else:
            dense = sum(p[i]) / n_tests
        outcome = 1.0 if all(x >= 1.0 for x in p[i]) else 0.0
        out.append(outcome_weight * outcome + (1 - outcome_weight) * dense)
    return out
