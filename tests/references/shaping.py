"""Independent NumPy references for ``divrl/shaping.py``: the overlong
penalty, the cosine length reward and the n-gram repetition penalty.

Written from the formulas in the brief and the papers (not from the JAX
code): plain Python loops over rows and tokens, float64. A token is valid
when its mask is > 0; |y| is the number of valid tokens.
"""

import math

import numpy as np


def lengths(mask):
    return np.array([sum(1 for x in row if x > 0) for row in mask], np.float64)


def overlong(mask, max_length, cache_length, factor):
    out = []
    for y in lengths(mask):
        if y <= max_length - cache_length:
            out.append(0.0)
        elif y <= max_length:
            out.append((max_length - cache_length - y) / cache_length * factor)
        else:
            out.append(-factor)
    return np.array(out)


def cosine(rewards, mask, max_length, threshold, min_c=0.5, max_c=1.0,
           min_w=-1.0, max_w=-0.5):
    out = []
    for r, y in zip(rewards, lengths(mask)):
        if r > threshold:
            lo, hi = min_c, max_c
        else:
            lo, hi = max_w, min_w
        progress = min(y / max_length, 1.0)
        out.append(lo + 0.5 * (hi - lo) * (1.0 + math.cos(math.pi * progress)))
    return np.array(out)


def ngram_penalty(tokens, mask, n, penalty):
    out = []
    for row, m in zip(tokens, mask):
        seq = [int(x) for x, v in zip(row, m) if v > 0]
        grams = [tuple(seq[j:j + n]) for j in range(len(seq) - n + 1)]
        if len(seq) < n or not grams:
            out.append(0.0)
            continue
        out.append(penalty * (1.0 - len(set(grams)) / len(grams)))
    return np.array(out)
