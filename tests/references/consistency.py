"""Independent NumPy reference for ``divrl/consistency.py`` (COPO).

Written from the authors' released code (verl/trainer/ppo/core_algos.py of
https://github.com/hijih/copo-code: ``compute_score_global``,
``compute_grpo_outcome_advantage_with_global`` and the blends of
``compute_policy_loss_with_global``), not from the JAX code: plain Python
loops over rows and groups, float64. ``valid[i]`` marks rows with at least
one valid token; invalid rows get 0 and take no part in any statistic.
"""

import collections
import math


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _entropy_bits(labels):
    counts = collections.Counter(labels)
    n = len(labels)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _answer_label(i, answer_id, wrong_answers):
    if answer_id >= 0:
        return ("answer", answer_id)
    return ("wrong", i) if wrong_answers == "distinct" else ("wrong",)


def copo(rewards, group_ids, answer_ids, valid, *, k=5.0, b=1.0,
         blend="soft_with_zero", consistency_coef=False, global_coef=1.0,
         wrong_answers="distinct", eps=1e-6):
    """Returns ``(advantage, local, global, weight, entropy)`` per row."""
    n_rows = len(rewards)
    present = sorted({group_ids[i] for i in range(n_rows) if valid[i]})
    local = [0.0] * n_rows
    group_reward, group_entropy = {}, {}
    for g in present:
        rows = [i for i in range(n_rows) if valid[i] and group_ids[i] == g]
        n = len(rows)
        rs = [float(rewards[i]) for i in rows]
        mean = sum(rs) / n
        if n == 1:  # verl: mean 0, std 1
            m, s = 0.0, 1.0
        else:
            m = mean
            s = math.sqrt(sum((x - mean) ** 2 for x in rs) / (n - 1))
        for i in rows:
            local[i] = (rewards[i] - m) / (s + eps)
        h = _entropy_bits([_answer_label(i, answer_ids[i], wrong_answers)
                           for i in rows])
        coef = 1.0
        if consistency_coef and n > 1:
            coef = 1.0 - (1.0 - 1.0 / n) / math.log2(n) * h
        group_reward[g] = mean * coef
        group_entropy[g] = h
    values = [group_reward[g] for g in present]
    if len(values) > 1:
        gm = sum(values) / len(values)
        gs = math.sqrt(sum((v - gm) ** 2 for v in values) / (len(values) - 1))
        glob_g = {g: (group_reward[g] - gm) / (gs + eps) for g in present}
    else:
        glob_g = {g: 0.0 for g in present}
    adv, glob, weight, ent = ([0.0] * n_rows for _ in range(4))
    for i in range(n_rows):
        if not valid[i]:
            continue
        g = group_ids[i]
        s = _sigmoid(k * (group_entropy[g] - b))
        nonzero = 1.0 if rewards[i] != 0 else 0.0
        forced = 1.0 if local[i] != 0 else 0.0
        w = {"soft_with_zero": s * nonzero, "soft": s,
             "soft_with_forced": s * forced, "only_zero": nonzero,
             "only_forced": forced, "global": 0.0}[blend]
        glob[i], weight[i], ent[i] = glob_g[g], w, group_entropy[g]
        adv[i] = w * local[i] + (1.0 - w) * global_coef * glob_g[g]
    return adv, local, glob, weight, ent


def ppo_clip_loss(ratio, adv, eps_low=0.2, eps_high=0.2, clip_ratio_c=3.0):
    """verl's dual-clip PPO loss of one token (as in the authors' code)."""
    l1 = -adv * ratio
    l2 = -adv * min(max(ratio, 1.0 - eps_low), 1.0 + eps_high)
    clipped = max(l1, l2)
    if adv < 0:
        return min(-adv * clip_ratio_c, clipped)
    return clipped
