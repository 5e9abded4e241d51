"""Independent NumPy references for ``divrl/aggregation.py``.

Written directly from the written formulas (not from the JAX code) in plain
Python/NumPy with float64 and explicit loops.
"""

import numpy as np


def aggregate(loss, mask, mode, *, norm=None):
    """Return (numerator, denominator); n_i = sum_t m_it, B_seq = #{i: n_i > 0}.
    token-mean:              num = sum L*m,                  den = sum m
    token-sum:               num = sum L*m,                  den = 0.0 (no normaliser)
    seq-mean-token-mean:     num = sum_{n_i>0} (sum_t L*m)/n_i, den = B_seq
    seq-mean-token-sum:      num = sum L*m,                  den = B_seq
    seq-mean-token-sum-norm: num = (sum L*m)/S, S = norm or T, den = B_seq
    """
    L = np.asarray(loss, dtype=np.float64)
    m = np.asarray(mask, dtype=np.float64)
    B, T = L.shape
    row_sum = [sum(L[i, t] * m[i, t] for t in range(T)) for i in range(B)]
    n = [sum(m[i, t] for t in range(T)) for i in range(B)]
    total = float(sum(row_sum))
    b_seq = float(sum(1 for i in range(B) if n[i] > 0))
    if mode == "token-mean":
        return total, float(sum(n))
    if mode == "token-sum":
        return total, 0.0
    if mode == "seq-mean-token-mean":
        return float(sum(row_sum[i] / n[i] for i in range(B) if n[i] > 0)), b_seq
    if mode == "seq-mean-token-sum":
        return total, b_seq
    if mode == "seq-mean-token-sum-norm":
        S = norm if norm is not None else T
        return total / S, b_seq
    raise ValueError(mode)


def finalize(num, den):
    """num/den if den > 0 else num."""
    return num / den if den > 0 else num


def _self_test():
    L = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = np.array([[1, 1, 0], [1, 0, 0]])
    assert aggregate(L, m, "seq-mean-token-mean") == (1.5 + 4.0, 2.0)
    assert aggregate(L, m, "token-mean") == (7.0, 3.0)
    assert aggregate(L, m, "seq-mean-token-sum-norm") == (7.0 / 3, 2.0)
    assert aggregate(L, np.array([[1, 1, 0], [0, 0, 0]]), "seq-mean-token-mean") == (1.5, 1.0)
    assert finalize(3.0, 0.0) == 3.0 and finalize(3.0, 2.0) == 1.5
    print("references.aggregation self-test: all checks passed")


if __name__ == "__main__":
    _self_test()
