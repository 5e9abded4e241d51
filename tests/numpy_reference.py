"""Independent NumPy reference implementations of the divrl RL objectives.

These functions were written directly from the written formulas (not from the
JAX code) in plain Python/NumPy with float64 and explicit loops, favouring
clarity over speed.  They serve as golden values for the JAX tests.
"""
import itertools

import numpy as np


def _groups(group_ids):
    g = np.asarray(group_ids)
    return {k: np.flatnonzero(g == k) for k in np.unique(g)}


def grpo_advantages(rewards, group_ids, *, eps=1e-6, ddof=1, eps_placement="std",
                    singleton="zero", scale_by_std=True):
    """GRPO group-normalised advantages, shape [B].

    n>1:  mean_g = mean(r_group), var_g = sum((r_j-mean_g)^2)/(n-ddof)
          not scale_by_std: A_i = r_i - mean_g                (Dr.GRPO)
          "std": A_i = (r_i-mean_g)/(sqrt(var_g)+eps)
          "var": A_i = (r_i-mean_g)/sqrt(var_g+eps)
    n==1: singleton="zero" -> 0; "reward" -> mean=0, std=1, i.e.
          r_i/(1+eps) ("std"), r_i/sqrt(1+eps) ("var"), r_i if not scale_by_std.
    """
    r = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(r)
    for idx in _groups(group_ids).values():
        n = len(idx)
        if n == 1:
            i = idx[0]
            if singleton == "zero":
                out[i] = 0.0
            elif singleton == "reward":
                if not scale_by_std:
                    out[i] = r[i]
                elif eps_placement == "std":
                    out[i] = r[i] / (1.0 + eps)
                elif eps_placement == "var":
                    out[i] = r[i] / np.sqrt(1.0 + eps)
                else:
                    raise ValueError(eps_placement)
            else:
                raise ValueError(singleton)
            continue
        mean = sum(r[j] for j in idx) / n
        var = sum((r[j] - mean) ** 2 for j in idx) / (n - ddof)
        for i in idx:
            if not scale_by_std:
                out[i] = r[i] - mean
            elif eps_placement == "std":
                out[i] = (r[i] - mean) / (np.sqrt(var) + eps)
            elif eps_placement == "var":
                out[i] = (r[i] - mean) / np.sqrt(var + eps)
            else:
                raise ValueError(eps_placement)
    return out


def rloo_advantages(rewards, group_ids, *, singleton="zero"):
    """RLOO advantages [B]: n>1: A_i = r_i - mean_{j in group, j!=i} r_j.
    n==1: "zero" -> 0, "reward" -> r_i."""
    r = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(r)
    for idx in _groups(group_ids).values():
        n = len(idx)
        for i in idx:
            if n == 1:
                out[i] = {"zero": 0.0, "reward": r[i]}[singleton]
            else:
                out[i] = r[i] - sum(r[j] for j in idx if j != i) / (n - 1)
    return out


def _ppo_terms(logp, old_logp, adv, eps_low, eps_high, log_ratio_clip):
    logp = np.asarray(logp, dtype=np.float64)
    delta = logp - np.asarray(old_logp, dtype=np.float64)
    if log_ratio_clip is not None:
        delta = np.clip(delta, -log_ratio_clip, log_ratio_clip)
    rho = np.exp(delta)
    adv = np.asarray(adv, dtype=np.float64)
    if adv.ndim == 1:
        adv = adv[:, None]
    adv = np.broadcast_to(adv, logp.shape)
    unclipped = -adv * rho
    clipped = -adv * np.clip(rho, 1.0 - eps_low, 1.0 + eps_high)
    return unclipped, clipped


def ppo_clip_token_loss(logp, old_logp, adv, *, eps_low=0.2, eps_high=0.2, log_ratio_clip=20.0):
    """PPO clipped token loss [B,T].
    delta = clip(logp-old_logp, -c, c) (if c not None); rho = exp(delta);
    L = max(-adv*rho, -adv*clip(rho, 1-eps_low, 1+eps_high)); adv [B] broadcast to [B,T]."""
    u, c = _ppo_terms(logp, old_logp, adv, eps_low, eps_high, log_ratio_clip)
    return np.maximum(u, c)


def ppo_clip_fraction(logp, old_logp, adv, *, eps_low=0.2, eps_high=0.2, log_ratio_clip=20.0):
    """[B,T] float: 1.0 where -adv*clip(rho) > -adv*rho (strictly), else 0.0."""
    u, c = _ppo_terms(logp, old_logp, adv, eps_low, eps_high, log_ratio_clip)
    return (c > u).astype(np.float64)


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
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0], [0, 0], eps=0.0), [s, -s], rtol=1e-12)
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0, 5.0], [3, 3, 7]), [0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.0], rtol=1e-12)
    np.testing.assert_allclose(grpo_advantages([2.0], [0], singleton="reward", eps_placement="var"), [2 / np.sqrt(1 + 1e-6)])
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0], [0, 0], ddof=0, eps=0.0), [1.0, -1.0])
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0], [0, 0], scale_by_std=False), [0.5, -0.5])
    np.testing.assert_allclose(rloo_advantages([1.0, 2.0, 3.0], [5, 5, 5]), [-1.5, 0.0, 1.5])
    np.testing.assert_allclose(rloo_advantages([4.0], [1], singleton="reward"), [4.0])
    # PPO: rho = e^0.5 > 1.2 with adv=1 -> clipped branch -1.2 is larger; adv=-1 -> unclipped e^0.5
    lp, olp = np.array([[0.5, 0.5]]), np.zeros((1, 2))
    np.testing.assert_allclose(ppo_clip_token_loss(lp, olp, np.array([[1.0, -1.0]])), [[-1.2, np.exp(0.5)]])
    np.testing.assert_allclose(ppo_clip_fraction(lp, olp, np.array([1.0])), [[1.0, 1.0]])
    assert kl_estimate(0.3, 0.3, "k3") == 0.0
    np.testing.assert_allclose(kl_estimate(1.0, 0.5, "k2"), 0.125)
    L = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = np.array([[1, 1, 0], [1, 0, 0]])
    assert aggregate(L, m, "seq-mean-token-mean") == (1.5 + 4.0, 2.0)
    assert aggregate(L, m, "token-mean") == (7.0, 3.0)
    assert aggregate(L, m, "seq-mean-token-sum-norm") == (7.0 / 3, 2.0)
    assert aggregate(L, np.array([[1, 1, 0], [0, 0, 0]]), "seq-mean-token-mean") == (1.5, 1.0)
    assert finalize(3.0, 0.0) == 3.0 and finalize(3.0, 2.0) == 1.5
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
    print("numpy_reference self-test: all checks passed")


if __name__ == "__main__":
    _self_test()
