"""Independent NumPy references for ``divrl/divergences.py``: the KL
estimators, the importance-corrected KL in the loss and KL in the reward.

Written from the formulas in the brief and the papers (not from the JAX
code): plain Python/NumPy, float64, loops over rows and tokens. A token is
valid when its mask is > 0.
"""

import math

import numpy as np


def kl_estimate(logp, ref_logp, estimator):
    """Per-token KL estimate, u = logp - ref_logp:
    k1 = u; abs = |u|; k2 = 0.5*u^2; k3 = exp(-u) + u - 1."""
    u = np.asarray(logp, dtype=np.float64) - np.asarray(ref_logp, dtype=np.float64)
    if estimator == "k1":
        return u
    if estimator == "abs":
        return np.abs(u)
    if estimator == "k2":
        return 0.5 * u ** 2
    if estimator == "k3":
        return np.exp(-u) + u - 1.0
    raise ValueError(estimator)


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


def _self_test():
    assert kl_estimate(0.3, 0.3, "k3") == 0.0
    np.testing.assert_allclose(kl_estimate(1.0, 0.5, "k2"), 0.125)
    print("references.divergences self-test: all checks passed")


if __name__ == "__main__":
    _self_test()
