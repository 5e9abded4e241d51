"""divrl.ops.token_statistics against plain autodiff of full logits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import sharding
from divrl.ops import OUTPUTS, token_statistics
from jax.sharding import PartitionSpec as P

ALL = tuple(k for k in OUTPUTS if k != "top_p_entropy")
TOP_P = 0.8
ALPHA = 0.3
MIN_P = 0.05


def jeffreys(u):
  """The generator of KL(pi || ref) + KL(ref || pi)."""
  return (u - 1.0) * jnp.log(u)


# The order and the generator of the alpha and general f outputs, and the
# min-p threshold.
F_KW = dict(alpha=ALPHA, generator=jeffreys, min_p=MIN_P)


def _finite(x):
  """``min_p_logprob`` is ``-inf`` for dropped targets (no gradient): leave
  those out of the test losses."""
  return jnp.where(jnp.isfinite(x), x, 0.0)


# ----------------------------------------------------------------------------
# Naive references.
# ----------------------------------------------------------------------------


def _np_top_p_set(logits, top_p):
  """Float64 NumPy top-p set: smallest prefix (by decreasing p, ties by id)."""
  z = np.asarray(logits, np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  keep = np.zeros(p.shape, bool)
  for i in range(p.shape[0]):
    order = np.argsort(-p[i], kind="stable")
    before = np.cumsum(p[i][order]) - p[i][order]
    sel = before < top_p
    sel[0] = True
    keep[i, order[sel]] = True
  return keep, p


def np_top_p_entropy(logits, top_p):
  keep, p = _np_top_p_set(logits, top_p)
  q = np.where(keep, p, 0.0)
  q /= q.sum(-1, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    return -np.sum(np.where(keep, q * np.log(q), 0.0), -1)


def naive(h, w, tgt, *, mask=None, b=None, temperature=1.0, outputs=ALL,
          top_p=None, hr=None, wr=None, br=None, top_p_set=None):
  """Full ``[N,V]`` logits, jax.nn.log_softmax and plain autodiff."""
  def logits(h, w, b):
    z = jnp.dot(h, w, preferred_element_type=jnp.float32)
    if b is not None:
      z = z + b.astype(jnp.float32)
    return z / temperature
  z = logits(h, w, b)
  logp = jax.nn.log_softmax(z)
  p = jnp.exp(logp)
  out = {}
  v = z.shape[-1]
  for name in outputs:
    if name == "logprob":
      out[name] = jnp.take_along_axis(logp, tgt[:, None], -1)[:, 0]
    elif name == "entropy":
      out[name] = -jnp.sum(p * logp, -1)
    elif name == "sum_pi_squared":
      out[name] = jnp.sum(p * p, -1)
    elif name == "vocab_mean_logprob":
      out[name] = jnp.sum(logp, -1) / v
    elif name == "min_p_logprob":
      kept = logp >= jnp.max(logp, -1, keepdims=True) + np.log(MIN_P)
      logq = jax.nn.log_softmax(jnp.where(kept, z, -jnp.inf))
      lt = jnp.take_along_axis(jnp.where(kept, logq, 0.0), tgt[:, None],
                               -1)[:, 0]
      kept_t = jnp.take_along_axis(kept, tgt[:, None], -1)[:, 0]
      out[name] = jnp.where(kept_t, lt, -jnp.inf)
    elif name == "top_p_entropy":
      logq = jax.nn.log_softmax(jnp.where(top_p_set, z, -jnp.inf))
      logq = jnp.where(top_p_set, logq, 0.0)  # no 0 * inf in the gradient
      q = jnp.where(top_p_set, jnp.exp(logq), 0.0)
      out[name] = -jnp.sum(jnp.where(top_p_set, q * logq, 0.0), -1)
    else:
      logr = jax.nn.log_softmax(logits(hr, wr, br))
      r = jnp.exp(logr)
      if name == "reverse_kl":
        out[name] = jnp.sum(p * (logp - logr), -1)
      elif name == "forward_kl":
        out[name] = jnp.sum(r * (logr - logp), -1)
      elif name == "js":
        logm = jnp.logaddexp(logp, logr) - jnp.log(2.0)
        out[name] = 0.5 * (jnp.sum(p * (logp - logm), -1)
                           + jnp.sum(r * (logr - logm), -1))
      elif name == "alpha_divergence":
        u = p / r
        f = (u ** (1 - ALPHA) - (1 - ALPHA) * u - ALPHA) / (
            ALPHA * (ALPHA - 1))
        out[name] = jnp.sum(r * f, -1)
      elif name == "chi_square":
        out[name] = jnp.sum((p - r) ** 2 / r, -1)
      elif name == "total_variation":
        out[name] = 0.5 * jnp.sum(jnp.abs(p - r), -1)
      elif name == "hellinger":
        out[name] = 0.5 * jnp.sum((jnp.sqrt(p) - jnp.sqrt(r)) ** 2, -1)
      elif name == "f_divergence":
        out[name] = jnp.sum(r * jeffreys(p / r), -1)
  if mask is not None:
    out = {k: jnp.where(mask > 0, x, 0.0) for k, x in out.items()}
  return out


def make_inputs(seed=0, n=23, d=16, v=257, dtype=jnp.float32, scale=1.5,
                dr=12):
  rng = np.random.default_rng(seed)
  f = lambda *s: rng.normal(size=s)  # noqa: E731
  x = dict(
      h=f(n, d), w=f(d, v) * scale / np.sqrt(d), b=f(v) * 0.3,
      hr=f(n, dr), wr=f(dr, v) * scale / np.sqrt(dr), br=f(v) * 0.3)
  x = {k: jnp.asarray(a, dtype) for k, a in x.items()}
  x["tgt"] = jnp.asarray(rng.integers(0, v, size=n), jnp.int32)
  x["mask"] = jnp.asarray(rng.uniform(size=n) > 0.25)
  x["g"] = {k: jnp.asarray(rng.normal(size=n), jnp.float32) for k in OUTPUTS}
  return x


DIFF = ("h", "w", "b", "hr", "wr", "br")


def _fused_loss(x, g, **kw):
  def loss(params):
    out = token_statistics(
        params["h"], params["w"], x["tgt"], mask=x.get("mask"),
        bias=params.get("b"), ref_hidden=params.get("hr"),
        ref_unembedding=params.get("wr"), ref_bias=params.get("br"),
        **F_KW, **kw)
    return sum(jnp.sum(g[k] * _finite(out[k])) for k in out), out
  return loss


def _naive_loss(x, g, top_p_set=None, **kw):
  kw = dict(kw)
  kw.pop("token_chunk", None)
  def loss(params):
    out = naive(params["h"], params["w"], x["tgt"], mask=x.get("mask"),
                b=params.get("b"), hr=params.get("hr"), wr=params.get("wr"),
                br=params.get("br"), top_p_set=top_p_set, **kw)
    return sum(jnp.sum(g[k] * _finite(out[k])) for k in out), out
  return loss


def _assert_close(actual, expected, rtol, atol, what=""):
  actual = np.asarray(jnp.asarray(actual, jnp.float32), np.float64)
  expected = np.asarray(jnp.asarray(expected, jnp.float32), np.float64)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                             err_msg=what)


# ----------------------------------------------------------------------------
# Values and gradients.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("n,chunk,temperature,with_bias,masked", [
    (23, 5, 1.0, True, True),      # N not a multiple of the chunk
    (23, 8, 0.7, False, True),     # temperature != 1, no bias
    (16, 64, 1.3, True, False),    # one chunk larger than N, no mask
])
def test_values_and_gradients_match_naive(dtype, n, chunk, temperature,
                                          with_bias, masked):
  x = make_inputs(1, n=n, dtype=dtype)
  if not masked:
    x.pop("mask")
  params = {k: x[k] for k in DIFF if with_bias or k not in ("b", "br")}
  outputs = ALL + ("top_p_entropy",)
  # The top-p set from the float32 logits, held fixed for the naive gradient.
  z32 = (np.asarray(x["h"], np.float32) @ np.asarray(x["w"], np.float32)
         + (np.asarray(x["b"], np.float32) if with_bias else 0)) / temperature
  top_set, _ = _np_top_p_set(z32, TOP_P)
  kw = dict(temperature=temperature, outputs=outputs, top_p=TOP_P)
  (lf, of), gf = jax.value_and_grad(
      _fused_loss(x, x["g"], token_chunk=chunk, **kw), has_aux=True)(params)
  (ln, on), gn = jax.value_and_grad(
      _naive_loss(x, x["g"], top_p_set=jnp.asarray(top_set), **kw),
      has_aux=True)(params)
  if dtype == jnp.float32:
    rtol, atol = 2e-5, 2e-5
  else:
    rtol, atol = 2e-2, 2e-2
  assert set(of) == set(outputs)
  for k in outputs:
    assert of[k].shape == (n,) and of[k].dtype == jnp.float32
    _assert_close(of[k], on[k], rtol, atol, k)
  _assert_close(lf, ln, rtol, atol * n, "loss")
  for k in params:
    assert gf[k].dtype == params[k].dtype, k
    scale = float(jnp.max(jnp.abs(gn[k].astype(jnp.float32))))
    _assert_close(gf[k], gn[k], rtol, atol * max(scale, 1.0), f"d{k}")
  if masked:
    m = ~np.asarray(x["mask"])
    for k in outputs:
      assert np.all(np.asarray(of[k])[m] == 0.0)
    assert np.all(np.asarray(gf["h"].astype(jnp.float32))[m] == 0.0)
    assert np.all(np.asarray(gf["hr"].astype(jnp.float32))[m] == 0.0)


@pytest.mark.parametrize("name", OUTPUTS)
def test_each_output_alone(name):
  """Each statistic alone (its gradient is not masked by the others)."""
  x = make_inputs(2, n=11)
  params = {k: x[k] for k in DIFF}
  z = np.asarray(x["h"]) @ np.asarray(x["w"]) + np.asarray(x["b"])
  top_set, _ = _np_top_p_set(z, TOP_P)
  kw = dict(outputs=(name,), top_p=TOP_P)
  (_, of), gf = jax.value_and_grad(
      _fused_loss(x, x["g"], token_chunk=4, **kw), has_aux=True)(params)
  (_, on), gn = jax.value_and_grad(
      _naive_loss(x, x["g"], top_p_set=jnp.asarray(top_set), **kw),
      has_aux=True)(params)
  _assert_close(of[name], on[name], 2e-5, 2e-5, name)
  for k in params:
    _assert_close(gf[k], gn[k], 2e-5, 2e-5, f"d{k}")


def test_masked_garbage_gives_zero_values_and_gradients():
  x = make_inputs(3, n=10)
  mask = np.asarray(x["mask"]).copy()
  mask[:3] = False
  h = np.asarray(x["h"]).copy()
  h[0] = np.nan
  h[1] = np.inf
  tgt = np.asarray(x["tgt"]).copy()
  tgt[2] = 10 ** 6  # out of range on a masked token
  def f(h, w):
    out = token_statistics(h, w, jnp.asarray(tgt), mask=jnp.asarray(mask),
                           outputs=("logprob", "entropy"), token_chunk=4)
    return jnp.sum(out["logprob"] + out["entropy"]), out
  (loss, out), (dh, dw) = jax.value_and_grad(f, (0, 1), has_aux=True)(
      jnp.asarray(h), x["w"])
  assert np.isfinite(float(loss))
  assert np.all(np.asarray(out["logprob"])[~mask] == 0.0)
  assert np.all(np.asarray(dh)[~mask] == 0.0)
  assert np.all(np.isfinite(np.asarray(dw)))
  clean = np.where(mask[:, None], h, 0.0)
  (loss2, _), (_, dw2) = jax.value_and_grad(f, (0, 1), has_aux=True)(
      jnp.asarray(clean), x["w"])
  np.testing.assert_allclose(loss, loss2, rtol=1e-6)
  np.testing.assert_allclose(dw, dw2, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("top_p", [1e-4, 0.3, 0.8, 0.95, 1.0])
def test_top_p_entropy_matches_numpy(top_p):
  x = make_inputs(4, n=19, scale=4.0)
  out = token_statistics(x["h"], x["w"], x["tgt"], bias=x["b"],
                         outputs=("top_p_entropy", "entropy"), top_p=top_p,
                         token_chunk=6)
  z = np.asarray(x["h"], np.float64) @ np.asarray(x["w"], np.float64) + \
      np.asarray(x["b"], np.float64)
  np.testing.assert_allclose(out["top_p_entropy"], np_top_p_entropy(z, top_p),
                             rtol=1e-4, atol=1e-5)
  if top_p == 1.0:
    np.testing.assert_allclose(out["top_p_entropy"], out["entropy"],
                               rtol=1e-5, atol=1e-6)
  if top_p == 1e-4:
    np.testing.assert_array_equal(out["top_p_entropy"], 0.0)


def np_min_p_logprob(logits, targets, min_p):
  """Float64 loop reference of Lp-Reg's min-p proxy log-prob."""
  out = []
  for z, t in zip(np.asarray(logits, np.float64), np.asarray(targets)):
    p = np.exp(z - z.max())
    p /= p.sum()
    kept = [v for v in range(len(p)) if p[v] >= min_p * p.max()]
    out.append(np.log(p[t] / sum(p[v] for v in kept)) if t in kept
               else -np.inf)
  return np.array(out)


@pytest.mark.parametrize("min_p", [0.02, 0.3, 1.0])
def test_min_p_logprob_matches_numpy(min_p):
  x = make_inputs(8, n=40, v=37, scale=3.0)
  z = np.asarray(x["h"], np.float64) @ np.asarray(x["w"], np.float64)
  # Half the targets are the argmax, always in the set.
  tgt = np.asarray(x["tgt"]).copy()
  tgt[::2] = np.argmax(z, -1)[::2]
  out = token_statistics(x["h"], x["w"], jnp.asarray(tgt),
                         outputs=("min_p_logprob", "logprob"), min_p=min_p,
                         token_chunk=16)
  ref = np_min_p_logprob(z, tgt, min_p)
  got = np.asarray(out["min_p_logprob"])
  np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
  kept = np.isfinite(ref)
  assert kept[::2].all()
  if min_p >= 0.3:
    assert (~kept).any()
  np.testing.assert_allclose(got[kept], ref[kept], rtol=1e-5, atol=1e-5)
  # Renormalising over a subset raises the kept targets' log-probs.
  assert np.all(got[kept] >= np.asarray(out["logprob"])[kept] - 1e-6)
  if min_p == 1.0:   # only the argmax is left: log q = 0
    np.testing.assert_allclose(got[kept], 0.0, atol=1e-6)


def test_jit_matches_eager():
  x = make_inputs(5)
  f = functools.partial(token_statistics, outputs=ALL, token_chunk=7, **F_KW)
  args = (x["h"], x["w"], x["tgt"])
  kw = dict(mask=x["mask"], bias=x["b"], ref_hidden=x["hr"],
            ref_unembedding=x["wr"], ref_bias=x["br"])
  eager = f(*args, **kw)
  jitted = jax.jit(lambda *a, **k: f(*a, **k))(*args, **kw)
  for k in ALL:
    np.testing.assert_allclose(jitted[k], eager[k], rtol=1e-6, atol=1e-6)
  gfn = lambda h: jnp.sum(f(h, x["w"], x["tgt"], **kw)["entropy"])  # noqa
  np.testing.assert_allclose(jax.jit(jax.grad(gfn))(x["h"]),
                             jax.grad(gfn)(x["h"]), rtol=1e-6, atol=1e-7)


def test_reference_inputs_unused_get_zero_or_no_gradient():
  x = make_inputs(6, n=8)
  def f(h, hr):
    return jnp.sum(token_statistics(h, x["w"], x["tgt"], ref_hidden=hr,
                                    ref_unembedding=x["wr"],
                                    outputs="entropy")["entropy"])
  dh, dhr = jax.grad(f, (0, 1))(x["h"], x["hr"])
  assert np.all(np.asarray(dhr) == 0.0)
  assert np.any(np.asarray(dh) != 0.0)


# ----------------------------------------------------------------------------
# Bad inputs.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(outputs=("logprob", "perplexity")), "outputs"),
    (dict(outputs=()), "outputs"),
    (dict(outputs=("top_p_entropy",)), "top_p"),
    (dict(outputs=("top_p_entropy",), top_p=1.5), "top_p"),
    (dict(outputs=("min_p_logprob",)), "min_p"),
    (dict(outputs=("min_p_logprob",), min_p=0.0), "min_p"),
    (dict(outputs=("reverse_kl",)), "ref_hidden"),
    (dict(outputs=("js",), ref_hidden="hr"), "ref_unembedding"),
    (dict(outputs=("js",), ref_hidden="hr", ref_unembedding="w"),
     "ref_unembedding"),
    (dict(temperature=0.0), "temperature"),
    (dict(token_chunk=0), "token_chunk"),
    (dict(hidden="hidden_3d"), "hidden"),
    (dict(hidden="hidden_int"), "hidden"),
    (dict(unembedding="w_bad"), "unembedding"),
    (dict(targets="tgt_float"), "targets"),
])
def test_bad_inputs_raise_naming_the_argument(kwargs, pattern):
  x = make_inputs(7, n=6)
  extra = {"hr": x["hr"], "w": x["w"], "hidden_3d": x["h"][None],
           "hidden_int": x["h"].astype(jnp.int32), "w_bad": x["w"][:3],
           "tgt_float": x["tgt"].astype(jnp.float32)}
  kwargs = {k: extra.get(v, v) if isinstance(v, str) and k not in (
      "vocab_axis_name",) else v for k, v in kwargs.items()}
  args = dict(hidden=x["h"], unembedding=x["w"], targets=x["tgt"])
  for k in list(args):
    if k in kwargs:
      args[k] = kwargs.pop(k)
  with pytest.raises(ValueError, match=pattern):
    token_statistics(args["hidden"], args["unembedding"], args["targets"],
                     **kwargs)


def test_shape_asserts():
  x = make_inputs(8, n=6)
  with pytest.raises(AssertionError):
    token_statistics(x["h"], x["w"], x["tgt"][:5])
  with pytest.raises(AssertionError):
    token_statistics(x["h"], x["w"], x["tgt"], bias=x["b"][:5])
  with pytest.raises(AssertionError):
    token_statistics(x["h"], x["w"], x["tgt"], mask=x["mask"][:5])


# ----------------------------------------------------------------------------
# Vocabulary sharding.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tensor_mesh():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  return sharding.make_mesh((8,), ("tensor",))


def test_vocab_sharded_equals_single_device(tensor_mesh):
  """Every output, top-p entropy included, on 8 vocabulary shards."""
  v = 8 * 33
  x = make_inputs(9, n=21, v=v)
  params = {k: x[k] for k in DIFF}
  kw = dict(temperature=0.9, outputs=OUTPUTS, top_p=0.9, token_chunk=8)
  g = {k: x["g"][k] for k in OUTPUTS}

  def loss_fn(params, tgt, mask, axis_name=None):
    out = token_statistics(
        params["h"], params["w"], tgt, mask=mask, bias=params["b"],
        ref_hidden=params["hr"], ref_unembedding=params["wr"],
        ref_bias=params["br"], vocab_axis_name=axis_name, **F_KW, **kw)
    return sum(jnp.sum(g[k] * _finite(out[k])) for k in OUTPUTS), out

  (l1, o1), g1 = jax.value_and_grad(loss_fn, has_aux=True)(
      params, x["tgt"], x["mask"])
  spec = {"h": P(), "w": P(None, "tensor"), "b": P("tensor"), "hr": P(),
          "wr": P(None, "tensor"), "br": P("tensor")}

  def sharded(params, tgt, mask):
    return jax.value_and_grad(
        functools.partial(loss_fn, axis_name="tensor"), has_aux=True)(
            params, tgt, mask)

  fn = jax.shard_map(sharded, mesh=tensor_mesh, in_specs=(spec, P(), P()),
                     out_specs=((P(), {k: P() for k in OUTPUTS}), spec))
  (l8, o8), g8 = jax.jit(fn)(params, x["tgt"], x["mask"])
  assert len(g8["w"].sharding.device_set) == 8
  np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-5)
  for k in OUTPUTS:
    np.testing.assert_allclose(o8[k], o1[k], rtol=1e-5, atol=1e-5,
                               err_msg=k)
  assert float(jnp.abs(o1["top_p_entropy"] - o1["entropy"]).max()) > 1e-3
  for k in DIFF:
    # float32 sums in another order over 8 shards (observed 2.2e-5).
    np.testing.assert_allclose(g8[k], g1[k], rtol=5e-5, atol=5e-5,
                               err_msg=f"d{k}")
  # And the single-device fused result equals naive full logits.
  on = naive(x["h"], x["w"], x["tgt"], mask=x["mask"], b=x["b"], hr=x["hr"],
             wr=x["wr"], br=x["br"], temperature=0.9)
  for k in ALL:
    np.testing.assert_allclose(o8[k], on[k], rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------
# Integration with a divrl objective.
# ----------------------------------------------------------------------------


def test_objective_from_token_statistics_matches_naive_pipeline():
  b, t, d, v = 6, 5, 16, 257
  rng = np.random.default_rng(10)
  hidden = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
  ref_hidden = hidden + 0.3 * jnp.asarray(rng.normal(size=(b, t, d)),
                                          jnp.float32)
  w = jnp.asarray(rng.normal(size=(d, v)) / 2.0, jnp.float32)
  wr = w + 0.1 * jnp.asarray(rng.normal(size=(d, v)), jnp.float32)
  tokens = jnp.asarray(rng.integers(0, v, size=(b, t)), jnp.int32)
  lengths = rng.integers(1, t + 1, size=b)
  mask = jnp.asarray(np.arange(t)[None] < lengths[:, None])
  rewards = jnp.asarray(rng.normal(size=b), jnp.float32)
  group_ids = jnp.asarray([0, 0, 0, 1, 1, 1], jnp.int32)
  objective = divrl.build(
      "grpo", "ppo_clip",
      regularizers=[{"name": "entropy", "coef": -0.01},
                    {"name": "kl", "estimator": "k3", "coef": 0.1}])

  def pipeline(hidden, stats_fn):
    lp, ent, ref_lp = stats_fn(hidden)
    old = jax.lax.stop_gradient(lp) + 0.05
    batch = divrl.Batch(logprobs=lp, response_mask=mask, rewards=rewards,
                        group_ids=group_ids, old_logprobs=old,
                        ref_logprobs=jax.lax.stop_gradient(ref_lp),
                        entropy=ent, num_groups=2)
    return objective(batch)[0]

  def fused(hidden):
    out = token_statistics(hidden.reshape(b * t, d), w, tokens.reshape(-1),
                           mask=mask.reshape(-1),
                           outputs=("logprob", "entropy"), token_chunk=8)
    ref = token_statistics(ref_hidden.reshape(b * t, d), wr,
                           tokens.reshape(-1), mask=mask.reshape(-1),
                           outputs="logprob", token_chunk=8)
    return (out["logprob"].reshape(b, t), out["entropy"].reshape(b, t),
            ref["logprob"].reshape(b, t))

  def full(hidden):
    out = naive(hidden.reshape(b * t, d), w, tokens.reshape(-1),
                outputs=("logprob", "entropy"))
    ref = naive(ref_hidden.reshape(b * t, d), wr, tokens.reshape(-1),
                outputs=("logprob",))
    return (out["logprob"].reshape(b, t), out["entropy"].reshape(b, t),
            ref["logprob"].reshape(b, t))

  lf, gf = jax.jit(jax.value_and_grad(lambda h: pipeline(h, fused)))(hidden)
  ln, gn = jax.jit(jax.value_and_grad(lambda h: pipeline(h, full)))(hidden)
  assert np.isfinite(float(lf)) and float(jnp.abs(gn).max()) > 0
  np.testing.assert_allclose(lf, ln, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gf, gn, rtol=1e-4, atol=1e-6)


def test_sequence_statistics_reshapes_and_feeds_a_batch():
  x = make_inputs(11, n=12)
  h = x["h"].reshape(3, 4, -1)
  tgt = x["tgt"].reshape(3, 4)
  mask = x["mask"].reshape(3, 4)
  out = divrl.ops.sequence_statistics(h, x["w"], tgt, mask,
                                      outputs=("logprob", "entropy"),
                                      bias=x["b"])
  flat = token_statistics(x["h"], x["w"], x["tgt"], mask=x["mask"],
                          bias=x["b"], outputs=("logprob", "entropy"))
  for k in ("logprob", "entropy"):
    np.testing.assert_array_equal(out[k], flat[k].reshape(3, 4))
  batch = divrl.Batch(logprobs=out["logprob"], response_mask=mask,
                      rewards=jnp.arange(3.0),
                      group_ids=jnp.zeros(3, jnp.int32),
                      entropy=out["entropy"], num_groups=1)
  assert np.isfinite(float(divrl.build("rloo", "ppo_clip")(batch)[0]))


# ----------------------------------------------------------------------------
# Row blocks (data parallelism).
# ----------------------------------------------------------------------------


def _sequence_loss(x, b, row_shards, token_chunk=3):
  """A loss over every output of ``sequence_statistics`` on ``[b, n/b]``."""
  t = x["tgt"].shape[0] // b
  rows = lambda a: a.reshape((b, t) + a.shape[1:])  # noqa: E731

  def loss(params):
    out = divrl.ops.sequence_statistics(
        rows(params["h"]), params["w"], rows(x["tgt"]), rows(x["mask"]),
        row_shards=row_shards, outputs=OUTPUTS, bias=params["b"],
        ref_hidden=rows(params["hr"]), ref_unembedding=params["wr"],
        ref_bias=params["br"], top_p=TOP_P, token_chunk=token_chunk, **F_KW)
    return sum(jnp.sum(rows(x["g"][k]) * _finite(out[k]))
               for k in OUTPUTS), out
  return loss


@pytest.mark.parametrize("row_shards", [2, 4])
def test_row_shards_give_the_values_and_gradients_of_one_block(row_shards):
  x = make_inputs(12, n=24)
  params = {k: x[k] for k in DIFF}
  (l1, o1), g1 = jax.value_and_grad(_sequence_loss(x, 4, 1), has_aux=True)(
      params)
  (ls, os_), gs = jax.jit(jax.value_and_grad(
      _sequence_loss(x, 4, row_shards), has_aux=True))(params)
  np.testing.assert_allclose(ls, l1, rtol=1e-6, atol=1e-6)
  for k in OUTPUTS:
    np.testing.assert_allclose(os_[k], o1[k], rtol=1e-6, atol=1e-6,
                               err_msg=k)
  for k in DIFF:
    # The unembedding gradients are summed per block, then over blocks.
    np.testing.assert_allclose(gs[k], g1[k], rtol=1e-5, atol=1e-6,
                               err_msg=f"d{k}")


@pytest.mark.parametrize("row_shards, pattern", [
    (0, "row_shards must be a positive int"),
    (True, "row_shards must be a positive int"),
    (3, "row_shards = 3 must divide the number of rows of hidden, 4"),
])
def test_bad_row_shards_raise_naming_the_argument(row_shards, pattern):
  x = make_inputs(13, n=8)
  with pytest.raises(ValueError, match=pattern):
    divrl.ops.sequence_statistics(
        x["h"].reshape(4, 2, -1), x["w"], x["tgt"].reshape(4, 2),
        x["mask"].reshape(4, 2), row_shards=row_shards)


def _dot_flops_per_device(fn, args, num_devices):
  """Loop-aware matmul FLOPs per device of the compiled ``fn``."""
  from scripts.bench_scaling import hlo_summary  # pylint: disable=import-outside-toplevel
  text = fn.lower(*args).compile().as_text()
  return hlo_summary(text, num_devices)["dot_flops"]


def test_row_shards_split_the_unembedding_over_data_parallel_devices():
  """With the rows sharded over 4 devices, each device computes a quarter
  of the unembedding's matmuls with ``row_shards=4``; with one block, the
  scan over the sharded token axis makes every device compute far more."""
  mesh = sharding.make_mesh((4,), ("data",), devices=jax.devices()[:4])
  b, t, d, v = 8, 32, 16, 512
  rng = np.random.default_rng(14)
  h = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(d, v)) / 4, jnp.float32)
  tok = jnp.asarray(rng.integers(0, v, size=(b, t)), jnp.int32)
  mask = jnp.ones((b, t), bool)

  def grad_fn(row_shards):
    def loss(h, w):
      out = divrl.ops.sequence_statistics(
          h, w, tok, mask, row_shards=row_shards, token_chunk=16,
          outputs=("logprob", "entropy"))
      return jnp.sum(out["logprob"]) + jnp.sum(out["entropy"])
    return jax.grad(loss, argnums=(0, 1))

  rows = jax.sharding.NamedSharding(mesh, P("data"))
  rep = jax.sharding.NamedSharding(mesh, P())
  args = (jax.device_put(h, rows), jax.device_put(w, rep))
  single = _dot_flops_per_device(jax.jit(grad_fn(1)), (h, w), 1)
  flops = {}
  for row_shards in (1, 4):
    fn = jax.jit(grad_fn(row_shards), out_shardings=(rows, rep))
    flops[row_shards] = _dot_flops_per_device(fn, args, 4)
    got = fn(*args)
    want = grad_fn(1)(h, w)
    for a, e in zip(got, want):
      np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
  assert flops[4] <= single / 4 * 1.05, (flops, single)
  assert flops[1] >= single / 4 * 1.5, (flops, single)
