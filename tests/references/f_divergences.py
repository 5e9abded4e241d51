"""NumPy references for divrl.f_divergences: f-divergences of discrete
distributions, their analytic gradients in the policy's logits (derived by
hand, one closed form per divergence), and the sampled estimators."""

import numpy as np

LOG2 = np.log(2.0)


def softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def generator(name, u, alpha=0.5):
  """f(u) of the module table (float64)."""
  u = np.asarray(u, np.float64)
  if name == "reverse_kl":
    return u * np.log(u)
  if name == "forward_kl":
    return -np.log(u)
  if name == "js":
    return 0.5 * (u * np.log(u) - (1 + u) * np.log((1 + u) / 2))
  if name == "alpha":
    a = alpha
    return (u ** (1 - a) - (1 - a) * u - a) / (a * (a - 1))
  if name == "chi_square":
    return (u - 1) ** 2
  if name == "total_variation":
    return 0.5 * np.abs(u - 1)
  if name == "hellinger":
    return 0.5 * (np.sqrt(u) - 1) ** 2
  raise ValueError(name)


DF1 = {"reverse_kl": 1.0, "forward_kl": -1.0, "js": 0.0, "alpha": 0.0,
       "chi_square": 0.0, "total_variation": 0.0, "hellinger": 0.0}
D2F1 = {"reverse_kl": 1.0, "forward_kl": 1.0, "js": 0.25, "alpha": 1.0,
        "chi_square": 2.0, "hellinger": 0.25}


def divergence(name, p, r, alpha=0.5):
  """D_f(p || r) = sum_v r f(p / r), over the last axis, in closed form."""
  p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
  if name == "reverse_kl":
    return np.sum(p * np.log(p / r), -1)
  if name == "forward_kl":
    return np.sum(r * np.log(r / p), -1)
  if name == "js":
    m = 0.5 * (p + r)
    return 0.5 * np.sum(p * np.log(p / m), -1) + 0.5 * np.sum(
        r * np.log(r / m), -1)
  if name == "alpha":
    a = alpha
    return (np.sum(p ** (1 - a) * r ** a, -1) - 1) / (a * (a - 1))
  if name == "chi_square":
    return np.sum((p - r) ** 2 / r, -1)
  if name == "total_variation":
    return 0.5 * np.sum(np.abs(p - r), -1)
  if name == "hellinger":
    return 1 - np.sum(np.sqrt(p * r), -1)
  raise ValueError(name)


def gradient(name, p, r, alpha=0.5):
  """d D_f(softmax(z) || r) / dz, closed forms by hand."""
  p, r = np.asarray(p, np.float64), np.asarray(r, np.float64)
  s = lambda x: np.sum(x, -1, keepdims=True)  # noqa: E731
  if name == "reverse_kl":
    lr = np.log(p / r)
    return p * (lr - s(p * lr))
  if name == "forward_kl":
    return p - r
  if name == "js":
    lm = np.log(p / (0.5 * (p + r)))
    return 0.5 * p * (lm - s(p * lm))
  if name == "alpha":
    e = p ** (1 - alpha) * r ** alpha
    return -(e - p * s(e)) / alpha
  if name == "chi_square":
    return 2 * p * (p / r - s(p * p / r))
  if name == "total_variation":
    sg = np.sign(p - r)
    return 0.5 * p * (sg - s(p * sg))
  if name == "hellinger":
    e = np.sqrt(p * r)
    return -0.5 * e + 0.5 * p * s(e)
  raise ValueError(name)


def estimate(name, logp, logr, estimator, samples, alpha=0.5):
  """The sampled estimators of the module table, float64."""
  d = np.asarray(logp, np.float64) - np.asarray(logr, np.float64)
  u = np.exp(d)
  if estimator == "quadratic":
    return 0.5 * D2F1[name] * d * d
  value = generator(name, u, alpha)
  if estimator == "cv":
    value = value - DF1[name] * (u - 1)
  if samples == "policy":
    value = value / u
  return value
