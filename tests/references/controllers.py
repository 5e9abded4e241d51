"""Independent NumPy references for ``divrl/controllers.py``: the adaptive KL
and entropy coefficient sequences and the TR-DPO reference mix-up.

Written from the formulas in the brief and the papers (not from the JAX
code): plain Python loops, float64.
"""

import numpy as np


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
