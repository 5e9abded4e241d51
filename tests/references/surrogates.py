"""Independent NumPy references for ``divrl/surrogates.py``.

Written from the formulas in the papers and in verl's and TRL's policy
losses, never from the JAX code: plain Python loops over ``(i, t)`` in float64. Inputs are
``[B,T]`` arrays ``logp`` (current), ``old`` (pi_old), ``adv`` (advantages),
``mask`` (response mask, 0/1) and optionally ``roll`` (pi_roll). Sequence
losses return the sequence value on every valid token and 0 on padding; token
losses return 0 on padding too, so comparisons can be restricted to the mask.
Analytic gradients ``d loss[i,t] summed / d logp[i,t]`` are given where a test
needs them (``*_grad``). ``ppo_clip_token_loss`` and ``ppo_clip_fraction``
take unmasked ``[B,T]`` arrays (and ``[B]`` advantages, broadcast).
"""

import math

import numpy as np

from tests.references._common import _clamp, _n, _shape, _valid


def _f(x):
    return np.asarray(x, dtype=np.float64)


def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# -- PPO clip family ----------------------------------------------------------


def ppo_token(rho, a, eps_low, eps_high, clip_ratio_c=None, delta=None):
    """One token of the PPO clip loss for a ratio ``rho`` and advantage ``a``.

    unclipped = -a * min(rho, delta)   (TRL: delta caps the unclipped ratio)
    clipped   = -a * clip(rho, 1 - eps_low, 1 + eps_high)
    L = max(unclipped, clipped); if clip_ratio_c and a < 0: L = min(L, -a c).
    """
    r1 = rho if delta is None else min(rho, delta)
    r2 = min(max(rho, 1.0 - eps_low), 1.0 + eps_high)
    loss = max(-a * r1, -a * r2)
    if clip_ratio_c is not None and a < 0:
        loss = min(loss, -a * clip_ratio_c)
    return loss


def ppo_token_grad(rho, a, eps_low, eps_high, clip_ratio_c=None, delta=None):
    """d L / d log pi for one token (the ratio's derivative is rho)."""
    r1 = rho if delta is None else min(rho, delta)
    r2 = min(max(rho, 1.0 - eps_low), 1.0 + eps_high)
    u, c = -a * r1, -a * r2
    if u >= c:  # the unclipped branch is active
        g = -a * rho if (delta is None or rho < delta) else 0.0
        val = u
    else:
        g = 0.0
        val = c
    if clip_ratio_c is not None and a < 0 and -a * clip_ratio_c < val:
        g = 0.0
    return g


def ppo_clip(logp, old, adv, mask, *, eps_low=0.2, eps_high=0.2,
             log_ratio_clip=20.0, clip_ratio_c=None, delta=None):
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            d = logp[i][t] - old[i][t]
            if log_ratio_clip is not None:
                d = _clamp(d, -log_ratio_clip, log_ratio_clip)
            out[i, t] = ppo_token(_exp(d), adv[i][t], eps_low, eps_high,
                                  clip_ratio_c, delta)
    return out


def ppo_clip_grad(logp, old, adv, mask, *, eps_low=0.2, eps_high=0.2,
                  log_ratio_clip=20.0, clip_ratio_c=None, delta=None):
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            d = logp[i][t] - old[i][t]
            if log_ratio_clip is not None and abs(d) > log_ratio_clip:
                continue  # clamped: no gradient
            out[i, t] = ppo_token_grad(_exp(d), adv[i][t], eps_low, eps_high,
                                       clip_ratio_c, delta)
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


# -- GSPO / LUSPO --------------------------------------------------------------


def seq_log_ratio(logp, old, mask, i):
    """log s_i = sum_t m (logp - old) / max(|y_i|, 1)."""
    n = _n(mask, i)
    s = 0.0
    for t in range(len(mask[i])):
        if _valid(mask, i, t):
            s += mask[i][t] * (logp[i][t] - old[i][t])
    return s / max(n, 1.0)


def gspo_seq(logp, old, adv, mask, *, eps_low=3e-4, eps_high=4e-4,
             max_log_ratio=None):
    """TRL sequence-level IS: per token PPO clip with ratio s_i, token A."""
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        ls = seq_log_ratio(logp, old, mask, i)
        if max_log_ratio is not None:
            ls = min(ls, max_log_ratio)
        s = _exp(ls)
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = ppo_token(s, adv[i][t], eps_low, eps_high)
    return out


def gspo_seq_grad(logp, old, adv, mask, *, eps_low=3e-4, eps_high=4e-4):
    """d sum_{t'} L_{i,t'} / d logp_{i,t} = sum_{t'} L'_{t'}(s) s m_t / n_i."""
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        n = max(_n(mask, i), 1.0)
        s = _exp(seq_log_ratio(logp, old, mask, i))
        total = 0.0
        for t in range(t_):
            if _valid(mask, i, t):
                total += ppo_token_grad(s, adv[i][t], eps_low, eps_high)
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = total * mask[i][t] / n
    return out


def gspo_token(logp, old, adv, mask, *, eps_low=3e-4, eps_high=4e-4,
               max_log_ratio=10.0):
    """verl GSPO-token: value of s_i (log s_i <= log_ratio_max) per token."""
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        ls = seq_log_ratio(logp, old, mask, i)
        if max_log_ratio is not None:
            ls = min(ls, max_log_ratio)
        s = _exp(ls)
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = ppo_token(s, adv[i][t], eps_low, eps_high)
    return out


def gspo_token_grad(logp, old, adv, mask, *, eps_low=3e-4, eps_high=4e-4,
                    max_log_ratio=10.0):
    """Per token: the PPO branch gradient at ratio s_i (d s_it / d l_it = s_i)."""
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        ls = seq_log_ratio(logp, old, mask, i)
        if max_log_ratio is not None:
            ls = min(ls, max_log_ratio)
        s = _exp(ls)
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = ppo_token_grad(s, adv[i][t], eps_low, eps_high)
                if max_log_ratio is not None and ls >= max_log_ratio:
                    out[i, t] = 0.0  # clamped: no gradient
    return out


def luspo(logp, old, adv, mask, *, eps_low=3e-4, eps_high=4e-4):
    """GSPO-sequence per-token loss times |y_i|."""
    base = gspo_seq(logp, old, adv, mask, eps_low=eps_low, eps_high=eps_high)
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        n = _n(mask, i)
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = base[i, t] * n
    return out


# -- GMPO ----------------------------------------------------------------------


def _sgn(x):
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def gmpo(logp, old, adv, mask, *, eps_low=0.4, eps_high=0.4):
    # (log_ratio_clip=None, the default, only: no clamp of d.)
    """L_i = -mean_t(A) exp(mean_t dtilde), dtilde sign-aware log clip."""
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        n = _n(mask, i)
        tot_d, tot_a = 0.0, 0.0
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            d = logp[i][t] - old[i][t]
            sg = _sgn(adv[i][t])
            dc = _clamp(d, -eps_low, eps_high)
            dt = sg * min(sg * d, sg * dc)
            tot_d += mask[i][t] * dt
            tot_a += mask[i][t] * adv[i][t]
        r = _exp(tot_d / max(n, 1.0))
        abar = tot_a / max(n, 1.0)
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = -abar * r
    return out


def gmpo_grad(logp, old, adv, mask, *, eps_low=0.4, eps_high=0.4):
    """d L_i / d logp_it = -Abar_i R_i [token t unclipped] m_t / n_i.

    (Gradient of the per-sequence loss L_i itself, i.e. of one copy.)
    """
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    val = gmpo(logp, old, adv, mask, eps_low=eps_low, eps_high=eps_high)
    for i in range(b):
        n = max(_n(mask, i), 1.0)
        li = 0.0
        for t in range(t_):
            if _valid(mask, i, t):
                li = val[i, t]
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            d = logp[i][t] - old[i][t]
            sg = _sgn(adv[i][t])
            dc = _clamp(d, -eps_low, eps_high)
            # dtilde follows d (slope 1) unless the clip binds in the
            # direction of the advantage; A = 0 gives dtilde = 0.
            passes = sg != 0 and sg * d <= sg * dc
            out[i, t] = li * mask[i][t] / n if passes else 0.0
    return out


# -- Weighted REINFORCE family ---------------------------------------------------


def cispo_weight(logp, old, *, bound="two_sided", eps_low=0.2, eps_high=0.2,
                 max_ratio=5.0, log_ratio_clip=20.0):
    b, t_ = _shape(logp)
    w = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            d = logp[i][t] - old[i][t]
            if log_ratio_clip is not None:
                d = _clamp(d, -log_ratio_clip, log_ratio_clip)
            rho = _exp(d)
            if bound == "two_sided":
                w[i, t] = min(max(rho, 1.0 - eps_low), 1.0 + eps_high)
            else:
                w[i, t] = min(rho, max_ratio)
    return w


def weighted_reinforce(logp, adv, w, mask):
    """L = -w A logp on valid tokens (w a constant)."""
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = -w[i][t] * adv[i][t] * logp[i][t]
    return out


def weighted_reinforce_grad(adv, w, mask):
    b, t_ = np.shape(adv)
    out = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if _valid(mask, i, t):
                out[i, t] = -w[i][t] * adv[i][t]
    return out


def reinforce(logp, adv, mask):
    return weighted_reinforce(logp, adv, np.ones(np.shape(logp)), mask)


def dppo_weight(logp, old, adv, *, kind, delta_low=0.2, delta_high=0.2,
                max_ratio=3.0, log_ratio_clip=20.0):
    """w = min(rho, C) * M with the binary-TV or binary-KL trust-region mask."""
    b, t_ = _shape(logp)
    w = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            d = _clamp(logp[i][t] - old[i][t], -log_ratio_clip, log_ratio_clip)
            rho = min(_exp(d), max_ratio)
            p = math.exp(min(logp[i][t], 0.0))
            q = math.exp(min(old[i][t], 0.0))
            a = adv[i][t]
            if kind == "tv":
                ok = (p - q <= delta_high) if a > 0 else (p - q >= -delta_low)
            else:
                lp = min(logp[i][t], 0.0)
                lq = min(old[i][t], 0.0)
                kl = q * (lq - lp) + (1 - q) * math.log((1 - q + 1e-8)
                                                        / (1 - p + 1e-8))
                if a > 0:
                    ok = kl <= delta_high or p <= q
                else:
                    ok = kl <= delta_low or p >= q
            w[i, t] = rho * (1.0 if ok else 0.0)
    return w


def sapo(logp, old, adv, mask, *, tau_pos=1.0, tau_neg=1.05,
         log_ratio_clip=20.0):
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            d = logp[i][t] - old[i][t]
            if log_ratio_clip is not None:
                d = _clamp(d, -log_ratio_clip, log_ratio_clip)
            rho = _exp(d)
            a = adv[i][t]
            tau = tau_pos if a > 0 else tau_neg
            out[i, t] = -_sigmoid(tau * (rho - 1.0)) * 4.0 / tau * a
    return out


def sapo_grad(logp, old, adv, mask, *, tau_pos=1.0, tau_neg=1.05):
    """d/dl of -f(rho) A = -A f'(rho) rho with f' = 4 sig (1 - sig)."""
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            rho = _exp(logp[i][t] - old[i][t])
            a = adv[i][t]
            tau = tau_pos if a > 0 else tau_neg
            s = _sigmoid(tau * (rho - 1.0))
            out[i, t] = -a * 4.0 * s * (1.0 - s) * rho
    return out


def dro(logp, old, adv, mask, *, beta):
    b, t_ = _shape(logp)
    out = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if _valid(mask, i, t):
                d = logp[i][t] - old[i][t]
                out[i, t] = -(adv[i][t] * logp[i][t] - 0.5 * beta * d * d)
    return out


def bypass_reinforce_weight(logp, roll, *, max_ratio=2.0,
                            log_ratio_clip=20.0):
    b, t_ = _shape(logp)
    w = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            d = _clamp(logp[i][t] - roll[i][t], -log_ratio_clip,
                       log_ratio_clip)
            w[i, t] = min(_exp(d), max_ratio)
    return w


def vespo_weight(logp, old, adv, mask, roll=None, *, k_pos=2.0,
                 lambda_pos=3.0, k_neg=3.0, lambda_neg=2.0):
    """phi = W^k exp(lambda (1 - W)) with the sequence product ratio W_i."""
    b, t_ = _shape(logp)
    w = np.zeros((b, t_))
    for i in range(b):
        s = 0.0
        for t in range(t_):
            if _valid(mask, i, t):
                s += mask[i][t] * _clamp(logp[i][t] - old[i][t], -20.0, 20.0)
                if roll is not None:
                    s += mask[i][t] * (old[i][t] - roll[i][t])
        log_w = _clamp(s, math.log(1e-8), 20.0)
        big_w = math.exp(log_w)
        for t in range(t_):
            a = adv[i][t]
            k, lam = (k_pos, lambda_pos) if a >= 0 else (k_neg, lambda_neg)
            phi = math.exp(k * log_w + lam * (1.0 - big_w))
            w[i, t] = phi if math.isfinite(phi) else 0.0
    return w


# -- Clip-Cov / KL-Cov -----------------------------------------------------------


def token_covariance(logp, adv, mask):
    """c = (A - mean A)(l - mean l), means over valid tokens of the batch."""
    b, t_ = _shape(logp)
    n, sa, sl = 0.0, 0.0, 0.0
    for i in range(b):
        for t in range(t_):
            if _valid(mask, i, t):
                n += 1
                sa += adv[i][t]
                sl += logp[i][t]
    ma, ml = sa / max(n, 1.0), sl / max(n, 1.0)
    c = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if _valid(mask, i, t):
                c[i, t] = (adv[i][t] - ma) * (logp[i][t] - ml)
    return c, int(n)


def clip_cov_eligible(logp, old, adv, mask, *, lb=1.0, ub=5.0, eps_low=0.2,
                      eps_high=0.2):
    """Valid tokens that PPO does not clip and with lb < cov < ub."""
    c, n = token_covariance(logp, adv, mask)
    b, t_ = _shape(logp)
    ok = np.zeros((b, t_), dtype=bool)
    for i in range(b):
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            rho = _exp(logp[i][t] - old[i][t])
            a = adv[i][t]
            r2 = min(max(rho, 1.0 - eps_low), 1.0 + eps_high)
            clipped = -a * r2 > -a * rho
            ok[i, t] = (not clipped) and lb < c[i, t] < ub
    return ok, n


def num_selected(ratio, n_valid):
    return max(1, int(math.floor(ratio * n_valid)))


def kl_cov(logp, old, adv, mask, *, ratio=2e-4, kappa=0.1):
    """Top-k covariance tokens get -A rho + kappa |d|, the rest -A rho."""
    c, n = token_covariance(logp, adv, mask)
    b, t_ = _shape(logp)
    cand = [(c[i, t], i, t) for i in range(b) for t in range(t_)
            if _valid(mask, i, t)]
    cand.sort(key=lambda x: -x[0])
    k = num_selected(ratio, n) if n else 0
    top = {(i, t) for _, i, t in cand[:k]}
    out = np.zeros((b, t_))
    for i in range(b):
        for t in range(t_):
            if not _valid(mask, i, t):
                continue
            d = logp[i][t] - old[i][t]
            out[i, t] = -adv[i][t] * _exp(d)
            if (i, t) in top:
                out[i, t] += kappa * abs(d)
    return out, top


def _self_test():
    # PPO: rho = e^0.5 > 1.2 with adv=1 -> clipped branch -1.2 is larger; adv=-1 -> unclipped e^0.5
    lp, olp = np.array([[0.5, 0.5]]), np.zeros((1, 2))
    np.testing.assert_allclose(ppo_clip_token_loss(lp, olp, np.array([[1.0, -1.0]])), [[-1.2, np.exp(0.5)]])
    np.testing.assert_allclose(ppo_clip_fraction(lp, olp, np.array([1.0])), [[1.0, 1.0]])
    print("references.surrogates self-test: all checks passed")


if __name__ == "__main__":
    _self_test()
