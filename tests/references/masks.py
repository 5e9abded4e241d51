"""Independent NumPy references for ``divrl/masks.py``: the high-entropy token
mask, truncation and the zero-variance group filter.

Written from the formulas in the brief and the papers (not from the JAX
code): plain Python loops over rows and tokens, float64. A token is valid
when its mask is > 0.
"""

import numpy as np


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
