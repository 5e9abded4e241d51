"""divrl.f_divergences and the divergence outputs of divrl.ops: values and
analytic gradients against tests/references/f_divergences.py, geometry,
sampled estimators (exact expectations and convergence), expected gradients
on tabular policies, DPH-RL rehearsal and the sequence-level chi-square."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divrl
from divrl import f_divergences as fd
from divrl import testing
from divrl.ops import token_statistics
from tests.references import f_divergences as ref

V = 7
ALPHA = 0.3
# Each exact divergence: ops output name, reference name.
OPS = {"reverse_kl": "reverse_kl", "forward_kl": "forward_kl", "js": "js",
       "alpha_divergence": "alpha", "chi_square": "chi_square",
       "total_variation": "total_variation", "hellinger": "hellinger"}


def _tabular(z, zr, outputs, **kw):
  """token_statistics of the distributions softmax(z[i]) vs softmax(zr[i]):
  one-hot hidden states, the logits as the unembedding (a tabular head)."""
  n = z.shape[0]
  eye = jnp.eye(n)
  return token_statistics(eye, z, jnp.zeros(n, jnp.int32),
                          ref_hidden=eye, ref_unembedding=zr,
                          outputs=outputs, alpha=ALPHA, **kw)


def _logits(seed, n=5, scale=1.5):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, V)) * scale, jnp.float32),
          jnp.asarray(rng.normal(size=(n, V)) * scale, jnp.float32))


@pytest.mark.parametrize("name", list(OPS))
def test_exact_divergence_values_and_analytic_gradients(name):
  z, zr = _logits(0)
  p, r = ref.softmax(z), ref.softmax(zr)
  out = _tabular(z, zr, (name,))[name]
  np.testing.assert_allclose(out, ref.divergence(OPS[name], p, r, ALPHA),
                             rtol=2e-5, atol=2e-6)
  # The gradient in the policy's logits (the unembedding here) is the
  # hand-derived closed form of each divergence.
  grad = jax.grad(lambda w: jnp.sum(_tabular(w, zr, (name,))[name]))(z)
  np.testing.assert_allclose(grad, ref.gradient(OPS[name], p, r, ALPHA),
                             rtol=2e-4, atol=2e-6)


def test_general_generator_matches_the_named_divergences():
  z, zr = _logits(1)
  for name, f in (("chi_square", lambda u: (u - 1.0) ** 2),
                  ("hellinger", lambda u: 0.5 * (jnp.sqrt(u) - 1.0) ** 2),
                  ("reverse_kl", lambda u: u * jnp.log(u))):
    got = jax.value_and_grad(lambda w, f=f: jnp.sum(_tabular(
        w, zr, ("f_divergence",), generator=f)["f_divergence"]))(z)
    want = jax.value_and_grad(lambda w, n=name: jnp.sum(_tabular(
        w, zr, (n,))[n]))(z)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-6,
                               err_msg=name)


def test_alpha_family_limits_and_special_cases():
  z, zr = _logits(2)
  p, r = ref.softmax(z), ref.softmax(zr)
  for a, want in ((1e-4, ref.divergence("reverse_kl", p, r)),
                  (1 - 1e-4, ref.divergence("forward_kl", p, r)),
                  (0.5, 4 * ref.divergence("hellinger", p, r)),
                  (-1.0, 0.5 * ref.divergence("chi_square", p, r))):
    np.testing.assert_allclose(ref.divergence("alpha", p, r, a), want,
                               rtol=2e-3, atol=1e-6)
    got = token_statistics(jnp.eye(5), z, jnp.zeros(5, jnp.int32),
                           ref_hidden=jnp.eye(5), ref_unembedding=zr,
                           outputs="alpha_divergence", alpha=a)
    np.testing.assert_allclose(got["alpha_divergence"], want, rtol=2e-3,
                               atol=1e-5)


def test_geometry_symmetry_bounds_and_zero_at_equality():
  z, zr = _logits(3, n=6, scale=4.0)
  names = tuple(OPS)
  ab = _tabular(z, zr, names)
  ba = _tabular(zr, z, names)
  same = _tabular(z, z, names)
  for name in ("js", "total_variation", "hellinger"):
    np.testing.assert_allclose(ab[name], ba[name], rtol=1e-5, atol=1e-6,
                               err_msg=name)
  assert np.all(np.asarray(ab["js"]) <= np.log(2.0) + 1e-6)
  assert np.all(np.asarray(ab["total_variation"]) <= 1.0 + 1e-6)
  assert np.all(np.asarray(ab["hellinger"]) <= 1.0 + 1e-6)
  for name in names:
    assert np.all(np.asarray(ab[name]) > 0), name
    np.testing.assert_allclose(same[name], 0.0, atol=1e-6, err_msg=name)
  # Disjoint supports reach the bounds: JS = log 2, TV = H^2 = 1.
  far = jnp.asarray([[30.0, -30.0]]), jnp.asarray([[-30.0, 30.0]])
  out = token_statistics(jnp.eye(1), far[0], jnp.zeros(1, jnp.int32),
                         ref_hidden=jnp.eye(1), ref_unembedding=far[1],
                         outputs=("js", "total_variation", "hellinger"))
  np.testing.assert_allclose(out["js"], np.log(2.0), rtol=1e-5)
  np.testing.assert_allclose(out["total_variation"], 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["hellinger"], 1.0, rtol=1e-5)


def test_bad_alpha_and_generator_are_named():
  z, zr = _logits(4)
  for a in (0.0, 1.0, None, float("nan")):
    with pytest.raises(ValueError, match="alpha"):
      token_statistics(jnp.eye(5), z, jnp.zeros(5, jnp.int32),
                       ref_hidden=jnp.eye(5), ref_unembedding=zr,
                       outputs="alpha_divergence", alpha=a)
  with pytest.raises(ValueError, match="generator"):
    token_statistics(jnp.eye(5), z, jnp.zeros(5, jnp.int32),
                     ref_hidden=jnp.eye(5), ref_unembedding=zr,
                     outputs="f_divergence")
  with pytest.raises(ValueError, match="unknown divergence"):
    fd.generator("kl")
  with pytest.raises(ValueError, match="quadratic"):
    fd.f_divergence_estimate(jnp.zeros((1, 2)), jnp.zeros((1, 2)),
                             "total_variation", estimator="quadratic")


# --- Sampled estimators -------------------------------------------------------

CASES = [(n, e, s) for n in fd.GENERATORS for e in fd.ESTIMATORS
         for s in fd.SAMPLES if not (n == "total_variation"
                                     and e == "quadratic")]


@pytest.mark.parametrize("name,estimator,samples", CASES)
def test_estimator_values_and_exact_expectations(name, estimator, samples):
  z, zr = _logits(5, n=1)
  p, r = ref.softmax(z)[0], ref.softmax(zr)[0]
  logp, logr = np.log(p), np.log(r)
  got = fd.f_divergence_estimate(
      jnp.asarray(logp[None], jnp.float32), jnp.asarray(logr[None],
                                                         jnp.float32),
      name, estimator=estimator, samples=samples, alpha=ALPHA)[0]
  want = ref.estimate(name, logp, logr, estimator, samples, ALPHA)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
  # Expectation over every token of the sampling distribution.
  weights = p if samples == "policy" else r
  mean = float(np.sum(weights * want))
  exact = float(ref.divergence(name, p, r, ALPHA))
  if estimator == "quadratic":
    assert abs(mean - exact) > 1e-3   # biased, as documented
  else:
    np.testing.assert_allclose(mean, exact, rtol=1e-9)
  if estimator == "cv":
    assert np.all(want >= -1e-12)      # non-negative by convexity


@pytest.mark.parametrize("name", fd.GENERATORS)
def test_sampled_estimators_converge_to_the_exact_divergence(name):
  z, zr = _logits(6, n=1, scale=0.8)
  p, r = ref.softmax(z)[0], ref.softmax(zr)[0]
  exact = float(ref.divergence(name, p, r, ALPHA))
  rng = np.random.default_rng(0)
  for samples, dist in (("policy", p), ("reference", r)):
    for n in (100, 10_000, 1_000_000):
      y = rng.choice(V, size=n, p=dist)
      est = np.asarray(fd.f_divergence_estimate(
          jnp.asarray(np.log(p)[y][None], jnp.float32),
          jnp.asarray(np.log(r)[y][None], jnp.float32), name,
          estimator="cv", samples=samples, alpha=ALPHA), np.float64)
      error = abs(est.mean() - exact)
      bound = 5 * est.std() / np.sqrt(n) + 1e-6
      assert error < bound, (samples, n, error, bound)
    assert error < 0.02 * exact, (samples, error, exact)


def test_quadratic_bias_vanishes_faster_than_the_divergence():
  # Bias O(|d|^3) against D_f of order d^2: relative bias -> 0 as pi -> ref.
  rel = []
  for scale in (0.4, 0.1, 0.025):
    z, zr = _logits(7, n=1, scale=scale)
    p, r = ref.softmax(z)[0], ref.softmax(zr)[0]
    q = ref.estimate("reverse_kl", np.log(p), np.log(r), "quadratic",
                     "policy")
    exact = ref.divergence("reverse_kl", p, r)
    rel.append(abs(np.sum(p * q) - exact) / exact)
  assert rel[0] > rel[1] > rel[2] and rel[2] < 0.02, rel


# --- Expected gradients on tabular policies ------------------------------------


def _regularizer_objective(spec):
  zero = lambda batch: jnp.zeros_like(batch.logprobs)
  return divrl.build(zero, lambda batch, adv: jnp.zeros_like(adv),
                     regularizers=[divrl.regularizer({**spec, "coef": 1.0})],
                     aggregation="seq-mean-token-sum")


def _conditional_divergence(policy, params, ref_params, name):
  """Sum over positions of E_{prefix ~ pi (held fixed)} D_f of the
  next-token distributions (what a per-token estimator targets)."""
  probs = jax.lax.stop_gradient(policy.probs(params))
  seqs = policy.sequences()
  total = 0.0
  for t in range(policy.length):
    logp = jax.nn.log_softmax(params[t], -1)
    logr = jax.nn.log_softmax(ref_params[t], -1)
    d = jnp.sum(jnp.exp(logr) * fd.generator(name, alpha=ALPHA).f_log(
        logp - logr), -1)
    # E over prefixes = sum over full sequences of prob(seq) d[prefix].
    idx = tuple(seqs[:, s] for s in range(t))
    per_seq = d[idx] if t else jnp.broadcast_to(d, probs.shape)
    total = total + jnp.sum(probs * per_seq)
  return total


@pytest.mark.parametrize("name", ["reverse_kl", "forward_kl", "js",
                                  "chi_square", "hellinger", "alpha"])
def test_score_form_sampled_divergence_has_the_divergence_gradient(name):
  policy = testing.TabularPolicy(vocab=3, length=2)
  params = policy.init(jax.random.key(1))
  ref_params = policy.init(jax.random.key(2))
  objective = _regularizer_objective(
      {"name": "sampled_f_divergence", "divergence": name, "alpha": ALPHA})
  loss_fn = testing.objective_loss(policy, objective,
                                   ref_params=ref_params)

  got = jax.jit(lambda p: testing.expected_group_gradient(
      policy, p, 1, loss_fn))(params)
  want = jax.grad(lambda p: _conditional_divergence(policy, p, ref_params,
                                                    name))(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("name", ["forward_kl", "js", "alpha"])
def test_rehearsal_on_reference_samples_has_the_divergence_gradient(name):
  policy = testing.TabularPolicy(vocab=4, length=1)
  params = policy.init(jax.random.key(3))
  ref_params = policy.init(jax.random.key(4))
  seqs = policy.sequences()
  n = seqs.shape[0]

  def expected(p):
    batch = divrl.Batch(
        logprobs=policy.logprobs(p, seqs),
        response_mask=jnp.ones(seqs.shape, bool), rewards=jnp.zeros(n),
        group_ids=jnp.zeros(n, jnp.int32),
        ref_logprobs=policy.logprobs(ref_params, seqs),
        sample_source=jnp.ones(n, jnp.int32), num_groups=1)
    per_seq = fd.dph_rehearsal_part(batch, divergence=name,
                                    alpha=ALPHA)[:, 0]
    return jnp.sum(policy.probs(ref_params) * per_seq)

  p, r = np.asarray(policy.probs(params)), np.asarray(policy.probs(
      ref_params))
  np.testing.assert_allclose(expected(params),
                             ref.divergence(name, p, r, ALPHA), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(expected)(params)[0],
                             ref.gradient(name, p, r, ALPHA), rtol=1e-4,
                             atol=1e-6)


def test_dph_rehearsal_values_rows_and_generators():
  rng = np.random.default_rng(8)
  lp = -rng.uniform(0.1, 3.0, (4, 3))
  lr = -rng.uniform(0.1, 3.0, (4, 3))
  source = np.array([0, 1, 1, 0])
  batch = divrl.Batch(logprobs=jnp.asarray(lp, jnp.float32),
                      response_mask=jnp.ones((4, 3), bool),
                      rewards=jnp.zeros(4), group_ids=jnp.zeros(4, jnp.int32),
                      ref_logprobs=jnp.asarray(lr, jnp.float32),
                      sample_source=jnp.asarray(source, jnp.int32))
  u = np.exp(lp - lr)
  dph = {"forward_kl": u - np.log(u) - 1,
         "js": 0.5 * (u * np.log(u) - (u + 1) * np.log((u + 1) / 2)),
         "alpha": (u ** (1 - ALPHA) - (1 - ALPHA) * u - ALPHA) / (
             ALPHA * (ALPHA - 1))}
  for name, want in dph.items():
    got = np.asarray(divrl.registry.make(
        "regularizer", {"name": "dph_rehearsal", "divergence": name,
                        "alpha": ALPHA})(batch))
    np.testing.assert_allclose(got[source == 1], want[source == 1],
                               rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.all(got[source == 0] == 0.0)
  weights = np.asarray(divrl.registry.make(
      "token_weight", "policy_samples_only")(batch, None))
  np.testing.assert_array_equal(weights, (source == 0)[:, None]
                                * np.ones((4, 3)))
  with pytest.raises(ValueError, match="mass-covering"):
    fd.dph_rehearsal_part(batch, divergence="reverse_kl")


def test_sequence_chi_square_value_and_gradient_by_enumeration():
  policy = testing.TabularPolicy(vocab=3, length=2)
  params = policy.init(jax.random.key(5), scale=0.7)
  ref_params = policy.init(jax.random.key(6), scale=0.7)
  objective = _regularizer_objective({"name": "sequence_chi_square"})
  loss_fn = testing.objective_loss(policy, objective,
                                   ref_params=ref_params)

  def chi2(p):
    return jnp.sum(policy.probs(p) ** 2 / policy.probs(ref_params)) - 1.0

  probs = policy.probs(params)
  value = sum(float(probs[i]) * float(loss_fn(params, jnp.asarray([i])))
              for i in range(probs.shape[0]))
  np.testing.assert_allclose(value, chi2(params), rtol=1e-5)
  got = jax.jit(lambda p: testing.expected_group_gradient(
      policy, p, 1, loss_fn))(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(jax.grad(chi2)(
      params))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


# --- Mode seeking and mass covering --------------------------------------------


def test_forward_kl_covers_both_modes_and_reverse_kl_seeks_one():
  # A bimodal target on a grid, fitted by a discretised Gaussian family
  # (logits w0 x + w1 x^2) through the exact per-token divergences.
  x = jnp.linspace(-4.0, 4.0, 41)
  target = jnp.logaddexp(-0.5 * ((x + 2.0) / 0.5) ** 2,
                         -0.5 * ((x - 2.0) / 0.5) ** 2)
  features = jnp.stack([x, x * x])            # [2, V]
  ref_w = target[None]                         # [1, V]

  def fit(name):
    def loss(h):
      return token_statistics(h[None], features, jnp.zeros(1, jnp.int32),
                              ref_hidden=jnp.ones((1, 1)),
                              ref_unembedding=ref_w, outputs=name)[name][0]

    step = jax.jit(lambda h: h - 0.02 * jax.grad(loss)(h))
    h = jnp.asarray([1.0, -0.5])   # both fits start right of centre
    for _ in range(3000):
      h = step(h)
    return np.asarray(jax.nn.softmax(h @ features))

  left, right = np.asarray(x < 0), np.asarray(x > 0)
  cover = fit("forward_kl")
  assert cover[left].sum() > 0.3 and cover[right].sum() > 0.3, cover
  seek = fit("reverse_kl")
  assert max(seek[left].sum(), seek[right].sum()) > 0.95, seek
  # The mode-seeking fit sits on a mode; the covering one between them.
  assert abs(float(np.sum(seek * np.asarray(x)))) > 1.5
  assert abs(float(np.sum(cover * np.asarray(x)))) < 1.0


@pytest.mark.parametrize("part,field", [
    ("exact_reverse_kl", "reverse_kl"), ("exact_forward_kl", "forward_kl"),
    ("exact_js", "js"), ("exact_alpha", "alpha_divergence"),
    ("exact_chi_square", "chi_square"),
    ("exact_total_variation", "total_variation"),
    ("exact_hellinger", "hellinger")])
def test_exact_regularizers_add_their_batch_field(part, field):
  rng = np.random.default_rng(9)
  mask = np.arange(3)[None] < np.array([[3], [1], [2], [3]])
  values = rng.uniform(0.0, 1.0, (4, 3))
  batch = divrl.Batch(logprobs=jnp.asarray(-values, jnp.float32),
                      response_mask=jnp.asarray(mask), rewards=jnp.zeros(4),
                      group_ids=jnp.zeros(4, jnp.int32),
                      **{field: jnp.asarray(values, jnp.float32)})
  objective = _regularizer_objective({"name": part})
  objective = divrl.build(objective.advantage, objective.surrogate,
                          regularizers=[divrl.regularizer({"name": part,
                                                           "coef": 0.5})],
                          aggregation="token-mean")
  loss, metrics = objective(batch)
  np.testing.assert_allclose(loss, 0.5 * values[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics[f"regularizer/{part}"],
                             values[mask].mean(), rtol=1e-5)
  assert objective.requires.update >= {field}
  with pytest.raises(ValueError, match=field):
    objective(batch.replace(**{field: None}))


# --- Lp-Reg (arXiv:2510.03222) ----------------------------------------------


def _lp_reg_case(seed=0):
  rng = np.random.default_rng(seed)
  b, t = 6, 8
  lp = -rng.uniform(0.05, 6.0, (b, t))
  old = lp + rng.normal(0, 0.2, (b, t))
  proxy = np.minimum(old + rng.uniform(0.0, 1.0, (b, t)), 0.0)
  proxy[rng.random((b, t)) < 0.3] = -np.inf      # tokens the filter drops
  adv = np.repeat(rng.normal(size=(b, 1)), t, 1)
  mask = np.arange(t)[None] < np.array([8, 5, 8, 3, 0, 7])[:, None]
  return lp, old, proxy, adv, mask


def _np_lp_reg(lp, old, proxy, adv, mask, *, coef, quantile, eps=0.2):
  negative = mask & (adv < 0)
  threshold = np.quantile(lp[negative], quantile)
  sel = negative & (lp <= threshold) & (lp < proxy)
  rho = np.exp(old * 0 + lp - old)
  clipped = np.maximum(-adv * rho, -adv * np.clip(rho, 1 - eps, 1 + eps))
  d = np.where(sel, proxy, lp) - lp
  reg = -adv * rho + coef * (np.exp(d) - d - 1)
  return np.where(sel, reg, clipped), sel


@pytest.mark.parametrize("quantile,coef", [(0.01, 1.0), (0.3, 0.5),
                                           (1.0, 2.0)])
def test_lp_reg_values_and_gradient_match_numpy(quantile, coef):
  lp, old, proxy, adv, mask = _lp_reg_case(1)
  f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  batch = divrl.Batch(logprobs=f(lp), old_logprobs=f(old),
                      old_min_p_logprob=f(proxy), response_mask=mask,
                      rewards=f(np.zeros(6)), group_ids=jnp.zeros(6, int))
  part = divrl.registry.make("surrogate", {"name": "lp_reg", "coef": coef,
                                           "quantile": quantile})
  loss, diag = part(batch, f(adv))
  want, sel = _np_lp_reg(lp, old, proxy, adv, mask, coef=coef,
                         quantile=quantile)
  assert sel.any()
  np.testing.assert_array_equal(np.asarray(diag["lp_reg_frac"]) > 0, sel)
  np.testing.assert_allclose(np.asarray(loss)[mask], want[mask], rtol=1e-5,
                             atol=1e-5)
  # d loss / d log pi on the selected tokens: -A rho + coef (1 - q / pi).
  grad = jax.grad(lambda x: jnp.sum(part(batch.replace(logprobs=x), f(adv))[0]
                                    * mask))(f(lp))
  rho = np.exp(lp - old)
  np.testing.assert_allclose(
      np.asarray(grad)[sel],
      (-adv * rho + coef * (1.0 - np.exp(proxy - lp)))[sel], rtol=1e-4,
      atol=1e-5)
  # The regulariser pulls the selected tokens up (negative gradient of the
  # KL term), whatever their advantage push.
  assert np.all((1.0 - np.exp(proxy - lp))[sel] < 0)


def test_lp_reg_never_selects_dropped_positive_or_likely_tokens():
  lp, old, proxy, adv, mask = _lp_reg_case(2)
  sel = np.asarray(fd.lp_reg_selection(jnp.asarray(lp), jnp.asarray(proxy),
                                       jnp.asarray(adv), jnp.asarray(mask),
                                       quantile=0.5))
  assert sel.any()
  assert not sel[np.isinf(proxy)].any()       # the proxy has no mass there
  assert not sel[adv >= 0].any() and not sel[~mask].any()
  assert not sel[lp >= proxy].any()
  # Without negative tokens it is PPO clip exactly.
  kw = dict(coef=1.0, quantile=0.5)
  loss, _ = fd.lp_reg_loss(jnp.asarray(lp), jnp.asarray(old),
                           jnp.asarray(proxy), jnp.abs(jnp.asarray(adv)),
                           jnp.asarray(mask, jnp.float32), **kw)
  ppo, _ = divrl.surrogates.ppo_clip(jnp.asarray(lp), jnp.asarray(old),
                                     jnp.abs(jnp.asarray(adv)))
  np.testing.assert_array_equal(loss, ppo)


def test_lp_reg_selection_is_the_same_on_sharded_rows():
  lp, _, proxy, adv, mask = _lp_reg_case(3)
  mesh = jax.make_mesh((2,), ("data",))
  spec = jax.sharding.PartitionSpec("data")
  fn = jax.jit(jax.shard_map(
      lambda *a: fd.lp_reg_selection(*a, quantile=0.2, axis_name="data"),
      mesh=mesh, in_specs=spec, out_specs=spec))
  args = [jnp.asarray(x) for x in (lp, proxy, adv, mask.astype(np.float32))]
  placed = [jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))
            for x in args]
  np.testing.assert_array_equal(
      fn(*placed), fd.lp_reg_selection(*args, quantile=0.2))


@pytest.mark.parametrize("kw,name", [({"coef": -1.0}, "coef"),
                                     ({"quantile": 1.5}, "quantile")])
def test_lp_reg_refuses_bad_hyperparameters(kw, name):
  lp, old, proxy, adv, mask = _lp_reg_case(0)
  with pytest.raises(ValueError, match=name):
    fd.lp_reg_loss(jnp.asarray(lp), jnp.asarray(old), jnp.asarray(proxy),
                   jnp.asarray(adv), jnp.asarray(mask, jnp.float32), **kw)
