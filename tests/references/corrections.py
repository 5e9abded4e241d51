"""Independent NumPy references for ``divrl/corrections.py`` (token weights).

Written from the formulas in the papers and in verl's and TRL's
documentation (the rollout importance-sampling options), never from the JAX
code: plain Python loops over ``(i, t)`` in float64. Inputs are
``[B,T]`` arrays ``old`` (pi_old), ``roll`` (pi_roll), ``logp`` (current),
``samp`` (the sampling policy), ``adv`` (advantages) and ``mask`` (response
mask, 0/1); the weights are 0 on padding.
"""

import math

import numpy as np

from tests.references._common import _clamp, _n, _shape, _valid


def rollout_is(old, roll, mask, *, level="token", mode="truncate",
               threshold=2.0, mask_low=0.5, mask_high=5.0):
    b, t_ = np.shape(old)
    w = np.zeros((b, t_))
    for i in range(b):
        if level == "sequence":
            s = 0.0
            for t in range(t_):
                if _valid(mask, i, t):
                    s += mask[i][t] * (old[i][t] - roll[i][t])
            seq_w = math.exp(_clamp(s, -20.0, 20.0))
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            if level == "token":
                x = math.exp(_clamp(old[i][t] - roll[i][t], -20.0, 20.0))
            else:
                x = seq_w
            if mode == "truncate":
                w[i, t] = min(x, threshold)
            else:
                w[i, t] = x if mask_low <= x <= mask_high else 0.0
    return w


def off_policy_sequence_mask(logp, samp, adv, mask, *, delta=0.5):
    """M_i = 1 if mean_t A >= 0 or mean_t (l_samp - l) <= delta, else 0."""
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        n = _n(mask, i)
        s, sa = 0.0, 0.0
        for t in range(t_):
            if _valid(mask, i, t):
                s += samp[i][t] - logp[i][t]
                sa += adv[i][t]
        drift = s / max(n, 1.0)
        abar = sa / max(n, 1.0)
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = 1.0 if (abar >= 0 or drift <= delta) else 0.0
    return out
