"""Independent NumPy references for ``divrl/testing.py``: exact expectations
over every sequence of a tabular softmax policy, and their finite-difference
gradients.

Written directly from the formulas (not from the JAX code) in plain
Python/NumPy with float64 and explicit loops.
"""

import itertools

import numpy as np


def enumerate_sequences(vocab, length):
    """All vocab**length sequences [N, length], lexicographic (first token most significant)."""
    return np.array(list(itertools.product(range(vocab), repeat=length)), dtype=np.int64).reshape(-1, length)


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    mx = np.max(x)
    return x - (mx + np.log(np.sum(np.exp(x - mx))))


def sequence_logprobs(theta_list, seqs):
    """Per-token log pi(y_t | y_<t), [N, length]; logits for token t are
    theta_list[t][y_0, ..., y_{t-1}] (a [V] vector; theta_list[0] is [V])."""
    seqs = np.asarray(seqs)
    N, length = seqs.shape
    out = np.zeros((N, length))
    for k in range(N):
        for t in range(length):
            logits = np.asarray(theta_list[t], dtype=np.float64)[tuple(seqs[k, :t])]
            out[k, t] = _log_softmax(logits)[seqs[k, t]]
    return out


def expected_reward(theta_list, reward_fn_table):
    """E_pi[R] = sum_y pi(y) R(y), reward table aligned with enumerate_sequences."""
    V = np.asarray(theta_list[0]).shape[-1]
    seqs = enumerate_sequences(V, len(theta_list))
    logp = sequence_logprobs(theta_list, seqs).sum(axis=1)
    return float(np.sum(np.exp(logp) * np.asarray(reward_fn_table, dtype=np.float64)))


def expected_reward_grad_fd(theta_list, reward_table, h=1e-6):
    """Central FD gradient: dE/dθ_k ≈ (E(θ + h e_k) - E(θ - h e_k)) / (2h), same structure as theta_list."""
    theta = [np.array(th, dtype=np.float64, copy=True) for th in theta_list]
    grads = [np.zeros_like(th) for th in theta]
    for a, th in enumerate(theta):
        for idx in np.ndindex(th.shape):
            orig = th[idx]
            th[idx] = orig + h
            fp = expected_reward(theta, reward_table)
            th[idx] = orig - h
            fm = expected_reward(theta, reward_table)
            th[idx] = orig
            grads[a][idx] = (fp - fm) / (2.0 * h)
    return grads


def _self_test():
    assert enumerate_sequences(2, 2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    th = [np.array([0.3, -0.2]), np.array([[0.1, 0.5], [-1.0, 0.2]])]
    lp2 = sequence_logprobs(th, enumerate_sequences(2, 2))
    np.testing.assert_allclose(np.exp(lp2.sum(1)).sum(), 1.0)
    # vocab=2, length=1: dE/dθ_j = π_j (R_j - E)
    theta, R = np.array([0.3, -0.7]), np.array([1.0, 2.5])
    pi = np.exp(theta) / np.exp(theta).sum()
    E = pi @ R
    np.testing.assert_allclose(expected_reward([theta], R), E, rtol=1e-12)
    np.testing.assert_allclose(expected_reward_grad_fd([theta], R)[0], pi * (R - E), atol=1e-8)
    print("references.testing self-test: all checks passed")


if __name__ == "__main__":
    _self_test()
