"""Independent NumPy references for ``divrl/advantages.py``.

Written from the formulas in the task brief and the cited papers (plain Python
loops, float64), never calling JAX or divrl code. Masks are 0/1; a position
is *valid* where ``mask > 0``. These references are the golden values of
``tests/test_advantages.py`` (and of the composed objectives in
``tests/test_objective.py``, ``tests/test_masks.py`` and
``tests/test_shaping.py``).
"""

import numpy as np


WHITEN_EPS = 1e-8


def _groups(group_ids):
    g = np.asarray(group_ids)
    return {int(k): [int(i) for i in np.flatnonzero(g == k)]
            for k in np.unique(g)}


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _sample_var(values, ddof):
    """sum((x - mean)^2) / (n - ddof), or 0 when n - ddof <= 0."""
    n = len(values)
    if n - ddof <= 0:
        return 0.0
    mean = sum(values) / n
    return sum((v - mean) ** 2 for v in values) / (n - ddof)


def masked_whiten(x, mask, eps=WHITEN_EPS):
    """(x - mean) / sqrt(var + eps) over valid tokens, zero elsewhere.

    mean and the unbiased variance (divide by n_valid - 1; 0 when that is
    <= 0) are taken over every valid token of the whole batch; the mean is
    not added back.
    """
    x, mask = _f64(x), _f64(mask)
    vals = [x[i, t] for i in range(x.shape[0]) for t in range(x.shape[1])
            if mask[i, t] > 0]
    out = np.zeros_like(x)
    if not vals:
        return out
    mean = sum(vals) / len(vals)
    var = _sample_var(vals, 1)
    for i in range(x.shape[0]):
        for t in range(x.shape[1]):
            if mask[i, t] > 0:
                out[i, t] = (x[i, t] - mean) / np.sqrt(var + eps)
    return out


def last_token_rewards(rewards, mask):
    """Scalar reward r_i on the last valid token of row i; 0 elsewhere."""
    r, mask = _f64(rewards), _f64(mask)
    out = np.zeros_like(mask)
    for i in range(mask.shape[0]):
        valid = [t for t in range(mask.shape[1]) if mask[i, t] > 0]
        if valid:
            out[i, valid[-1]] = r[i]
    return out


def clean_token_rewards(token_rewards, mask):
    tr, mask = _f64(token_rewards), _f64(mask)
    return np.where(mask > 0, tr, 0.0)


# --- 0. GRPO and RLOO with group statistics ---------------------------------


def _grpo_group_scope(rewards, group_ids, *, eps=1e-6, ddof=1,
                      eps_placement="std", singleton="zero", scale_by_std=True):
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


# --- 1. GRPO with the batch std -----------------------------------------------


def grpo_advantages(rewards, group_ids, *, eps=1e-6, ddof=1,
                    eps_placement="std", singleton="zero", scale_by_std=True,
                    std_scope="group"):
    """GRPO; std_scope="batch" divides by the std of all rewards of the batch.

    batch scope: A_i = (r_i - mean_g) / (std_batch + eps), std_batch =
    sqrt(sum_j (r_j - mean_all)^2 / (B - ddof)); singletons get 0
    ("zero") or mean 0 ("reward"). A zero scale gives 0.
    """
    if std_scope == "group":
        return _grpo_group_scope(
            rewards, group_ids, eps=eps, ddof=ddof, eps_placement=eps_placement,
            singleton=singleton, scale_by_std=scale_by_std)
    assert std_scope == "batch"
    r = _f64(rewards)
    var = _sample_var(list(r), ddof)
    scale = (np.sqrt(var) + eps if eps_placement == "std"
             else np.sqrt(var + eps))
    out = np.zeros_like(r)
    for idx in _groups(group_ids).values():
        n = len(idx)
        if n == 1 and singleton == "zero":
            continue
        mean = 0.0 if n == 1 else sum(r[j] for j in idx) / n
        for i in idx:
            dev = r[i] - mean
            if not scale_by_std:
                out[i] = dev
            else:
                out[i] = dev / scale if scale > 0 else 0.0
    return out


# --- 2. REINFORCE++ -----------------------------------------------------------


def discounted_returns(token_rewards, mask, gamma):
    """G_t = R_t + gamma G_next on valid tokens; mask-0 carries G, gives 0."""
    tr, mask = clean_token_rewards(token_rewards, mask), _f64(mask)
    b, t_len = tr.shape
    out = np.zeros_like(tr)
    for i in range(b):
        g = 0.0
        for t in reversed(range(t_len)):
            if mask[i, t] > 0:
                g = tr[i, t] + gamma * g
                out[i, t] = g
    return out


def reinforce_pp(token_rewards, mask, *, gamma=1.0, whiten=True):
    g = discounted_returns(token_rewards, mask, gamma)
    if whiten:
        return masked_whiten(g, mask)
    return g * (_f64(mask) > 0)


# --- 3. REINFORCE++ with a group baseline -------------------------------------


def reinforce_pp_baseline(rewards, group_ids, mask, *, singleton="zero",
                          whiten=True):
    """s_i = r_i - mean_g (singleton: s = r or 0), over tokens, whitened."""
    r, mask = _f64(rewards), _f64(mask)
    s = np.zeros_like(r)
    for idx in _groups(group_ids).values():
        if len(idx) == 1:
            s[idx[0]] = r[idx[0]] if singleton == "reward" else 0.0
            continue
        mean = sum(r[j] for j in idx) / len(idx)
        for i in idx:
            s[i] = r[i] - mean
    x = np.zeros_like(mask)
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[i, t] > 0:
                x[i, t] = s[i]
    return masked_whiten(x, mask) if whiten else x


# --- 4. ReMax -----------------------------------------------------------------


def remax(token_rewards, mask, baseline_rewards):
    """A_t = (sum_{s >= t} R_s m_s - b_i) on valid tokens, 0 elsewhere."""
    tr, mask = clean_token_rewards(token_rewards, mask), _f64(mask)
    b = _f64(baseline_rewards)
    out = np.zeros_like(tr)
    for i in range(tr.shape[0]):
        for t in range(tr.shape[1]):
            if mask[i, t] > 0:
                ret = sum(tr[i, s] * mask[i, s] for s in range(t, tr.shape[1]))
                out[i, t] = ret - b[i]
    return out


# --- 5. OPO -------------------------------------------------------------------


def opo(rewards, group_ids, lengths, *, singleton="zero"):
    """A_i = r_i - sum_j |y_j| r_j / sum_j |y_j| (0 if the lengths sum to 0)."""
    r, lengths = _f64(rewards), _f64(lengths)
    out = np.zeros_like(r)
    for idx in _groups(group_ids).values():
        if len(idx) == 1:
            out[idx[0]] = r[idx[0]] if singleton == "reward" else 0.0
            continue
        tot = sum(lengths[j] for j in idx)
        base = (sum(lengths[j] * r[j] for j in idx) / tot) if tot > 0 else 0.0
        for i in idx:
            out[i] = r[i] - base
    return out


# --- 6. GPG -------------------------------------------------------------------


def gpg(rewards, group_ids, *, f_norm=1.0, singleton="zero"):
    """A_i = alpha (r_i - mean_g) / f_norm, alpha = B / max(1, #{r != 0})."""
    r = _f64(rewards)
    nonzero = sum(1 for v in r if v != 0.0)
    alpha = len(r) / max(1, nonzero)
    out = np.zeros_like(r)
    for idx in _groups(group_ids).values():
        if len(idx) == 1:
            mean = 0.0
            if singleton == "zero":
                continue
        else:
            mean = sum(r[j] for j in idx) / len(idx)
        for i in idx:
            out[i] = alpha * (r[i] - mean) / f_norm
    return out


# --- 7. GDPO ------------------------------------------------------------------


def gdpo(rewards, group_ids, mask, *, weights=None, batch_norm="tokens",
         batch_eps=1e-4, eps=1e-6, ddof=1, eps_placement="std",
         singleton="zero", scale_by_std=True, std_scope="group"):
    """Normalise each reward component per group, weighted sum, batch norm."""
    rk = _f64(rewards)
    if rk.ndim == 1:
        rk = rk[:, None]
    k = rk.shape[1]
    w = np.ones(k) if weights is None else _f64(weights)
    s = np.zeros(rk.shape[0])
    for c in range(k):
        z = grpo_advantages(rk[:, c], group_ids, eps=eps, ddof=ddof,
                            eps_placement=eps_placement, singleton=singleton,
                            scale_by_std=scale_by_std, std_scope=std_scope)
        s = s + w[c] * z
    mask = _f64(mask)
    if batch_norm == "samples":
        mean = sum(s) / len(s)
        std = np.sqrt(_sample_var(list(s), 1))
        scale = std + batch_eps
        s = np.array([(v - mean) / scale if scale > 0 else 0.0 for v in s])
    x = np.zeros_like(mask)
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[i, t] > 0:
                x[i, t] = s[i]
    if batch_norm == "tokens":
        return masked_whiten(x, mask)
    return x


# --- 8. pass@k: only the best sample of a group learns ------------------------


def passk_best(rewards, group_ids, *, scale_by_std=True, eps=1e-6, ddof=1):
    """Top sample (lowest index among maxima) gets r_(1) - r_(2); others 0."""
    r = _f64(rewards)
    out = np.zeros_like(r)
    for idx in _groups(group_ids).values():
        if len(idx) < 2:
            continue
        order = sorted(idx, key=lambda j: (-r[j], j))  # stable: lowest index
        top, second = order[0], order[1]
        adv = r[top] - r[second]
        if scale_by_std:
            scale = np.sqrt(_sample_var([r[j] for j in idx], ddof)) + eps
            adv = adv / scale if scale > 0 else 0.0
        out[top] = adv
    return out


# --- 9. Optimal token baseline ------------------------------------------------


def otb(token_rewards, mask, old_logprobs, sum_pi_squared, group_ids, *,
        handle_zero_tail=True, eps=1e-8):
    """Per-position baseline B_t = sum_i G W m / (sum_i W m + eps) per group.

    G_{i,t} = sum_{s >= t} R_s m_s; w = 1 - 2 min(exp(old), 1) + sum_pi^2,
    at least (1 - min(exp(old), 1))^2;
    W_{i,t} = sum_{s <= t} w_s m_s. Singleton groups: B = 0. Zero tail: a
    uniquely longest row (length = number of valid tokens) has B_t = 0 for
    t >= the second-longest length.
    """
    tr, mask = clean_token_rewards(token_rewards, mask), _f64(mask)
    old, sps = _f64(old_logprobs), _f64(sum_pi_squared)
    b, t_len = tr.shape
    g_ret = np.zeros_like(tr)
    w_cum = np.zeros_like(tr)
    for i in range(b):
        for t in range(t_len):
            g_ret[i, t] = sum(tr[i, s] * mask[i, s] for s in range(t, t_len))
            acc = 0.0
            for s in range(t + 1):
                if mask[i, s] > 0:
                    p = min(np.exp(old[i, s]), 1.0)
                    acc += max(1.0 - 2.0 * p + sps[i, s], (1.0 - p) ** 2) * mask[i, s]
            w_cum[i, t] = acc
    base = np.zeros_like(tr)
    lengths = [sum(1 for t in range(t_len) if mask[i, t] > 0) for i in range(b)]
    for idx in _groups(group_ids).values():
        if len(idx) == 1:
            continue
        for t in range(t_len):
            num = sum(g_ret[i, t] * w_cum[i, t] * mask[i, t] for i in idx)
            den = sum(w_cum[i, t] * mask[i, t] for i in idx) + eps
            for i in idx:
                base[i, t] = num / den
        if handle_zero_tail:
            ls = sorted(lengths[i] for i in idx)
            longest = [i for i in idx if lengths[i] == ls[-1]]
            if len(longest) == 1 and ls[-1] > ls[-2]:
                base[longest[0], ls[-2]:] = 0.0
    return (g_ret - base) * mask


# --- 10. GAE ------------------------------------------------------------------


def gae(token_rewards, values, mask, *, gamma=1.0, lam=1.0):
    """GAE over valid tokens; returns (advantages, returns), 0 on mask-0.

    delta_t = R_t + gamma V_next - V_t with V_next the value at the next
    valid token (0 after the last one); A_t = delta_t + gamma lam A_next.
    """
    tr, mask = clean_token_rewards(token_rewards, mask), _f64(mask)
    v = np.where(mask > 0, _f64(values), 0.0)
    b, t_len = tr.shape
    adv = np.zeros_like(tr)
    ret = np.zeros_like(tr)
    for i in range(b):
        v_next, a_next = 0.0, 0.0
        for t in reversed(range(t_len)):
            if mask[i, t] <= 0:
                continue
            delta = tr[i, t] + gamma * v_next - v[i, t]
            a = delta + gamma * lam * a_next
            adv[i, t] = a
            ret[i, t] = a + v[i, t]
            v_next, a_next = v[i, t], a
    return adv, ret


def ema_std_grpo_steps(reward_batches, group_batches, *, decay=0.9, eps=1e-6,
                                              singleton="zero"):
    """EMA-std GRPO over a sequence of batches: the advantages of each step.

    Per step: ``std_t`` = unbiased std of the batch rewards; ``ema =
    decay ema + (1 - decay) std_t`` and ``weight = decay weight + (1 -
    decay)`` from 0; ``A = (r - mean_g) / (ema / weight + eps)``; singleton
    groups get 0.
    """
    ema = weight = 0.0
    out = []
    for r, ids in zip(reward_batches, group_batches):
        r = _f64(r)
        ema = decay * ema + (1 - decay) * _sample_var(r, 1) ** 0.5
        weight = decay * weight + (1 - decay)
        std = ema / weight
        dev = grpo_advantages(r, ids, scale_by_std=False, singleton=singleton)
        out.append(dev / (std + eps))
    return out


def _self_test():
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0], [0, 0], eps=0.0), [s, -s], rtol=1e-12)
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0, 5.0], [3, 3, 7]), [0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.0], rtol=1e-12)
    np.testing.assert_allclose(grpo_advantages([2.0], [0], singleton="reward", eps_placement="var"), [2 / np.sqrt(1 + 1e-6)])
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0], [0, 0], ddof=0, eps=0.0), [1.0, -1.0])
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0], [0, 0], scale_by_std=False), [0.5, -0.5])
    np.testing.assert_allclose(rloo_advantages([1.0, 2.0, 3.0], [5, 5, 5]), [-1.5, 0.0, 1.5])
    np.testing.assert_allclose(rloo_advantages([4.0], [1], singleton="reward"), [4.0])
    print("references.advantages self-test: all checks passed")


if __name__ == "__main__":
    _self_test()
