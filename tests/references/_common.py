"""Helpers shared by the loop references of several modules.

Inputs are indexed ``x[i][t]`` (row ``i``, token ``t``); a position is valid
where ``mask > 0``.
"""

import numpy as np


def _clamp(x, lo, hi):
    if lo is not None and x < lo:
        return lo
    if hi is not None and x > hi:
        return hi
    return x


def _shape(logp):
    b, t = np.shape(logp)
    return b, t


def _valid(mask, i, t):
    return mask[i][t] > 0


def _n(mask, i):
    return sum(1.0 for t in range(len(mask[i])) if mask[i][t] > 0)
