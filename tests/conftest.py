"""Test setup: 8 simulated CPU devices, set before jax is imported."""

import os
import socket

# The suite is dominated by compilation of small programs: LLVM's backend
# optimisations (-O0) roughly halve XLA:CPU compile times here, at a runtime
# cost the tiny test shapes do not notice. Benchmarks and runs keep -O2.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8"
                      " --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Many tests (and both xdist workers) compile the same sampler / update
# functions; a persistent compilation cache shared by the workers of one run
# compiles each of them once. DIVRL_TEST_JAX_CACHE="" disables it.
_CACHE = os.environ.get("DIVRL_TEST_JAX_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache",
    "jax-tests"))
if _CACHE:
  jax.config.update("jax_compilation_cache_dir", _CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import divrl  # noqa: E402


def make_batch(seed=0, b=12, t=7, num_groups=4, ragged=True, garbage=True,
               with_old=True, with_ref=True, reward_kind="normal"):
  """A random batch with ragged groups, variable lengths and garbage padding."""
  rng = np.random.default_rng(seed)
  if ragged:
    group_ids = rng.integers(0, num_groups, size=b)
  else:
    group_ids = np.repeat(np.arange(num_groups), b // num_groups)
  lengths = rng.integers(1, t + 1, size=b)
  mask = (np.arange(t)[None, :] < lengths[:, None])
  logprobs = -rng.uniform(0.05, 3.0, size=(b, t))
  old = logprobs + rng.normal(0, 0.3, size=(b, t))
  ref = logprobs + rng.normal(0, 0.5, size=(b, t))
  if reward_kind == "binary":
    rewards = rng.integers(0, 2, size=b).astype(np.float64)
  else:
    rewards = rng.normal(size=b)
  if garbage:
    pad = ~mask
    for x in (logprobs, old, ref):
      x[pad] = rng.choice([1e4, -1e4, np.nan, np.inf, -np.inf, 37.0],
                          size=pad.sum())
  return divrl.Batch(
      logprobs=jax.numpy.asarray(logprobs, jax.numpy.float32),
      response_mask=jax.numpy.asarray(mask),
      rewards=jax.numpy.asarray(rewards, jax.numpy.float32),
      group_ids=jax.numpy.asarray(group_ids, jax.numpy.int32),
      old_logprobs=jax.numpy.asarray(old, jax.numpy.float32) if with_old else None,
      ref_logprobs=jax.numpy.asarray(ref, jax.numpy.float32) if with_ref else None,
      num_groups=num_groups,
  )


@pytest.fixture
def batch():
  return make_batch()


def _np(x):
  return np.asarray(x, np.float64)


def _clean(x, mask):
  return np.where(np.asarray(mask) > 0, _np(x), 0.0)


def _with_extras(seed=0, b=12, t=7, num_groups=4, vocab=3, ties=True,
                 empty_rows=(0,), **kw):
  """make_batch plus entropy (with ties), tokens, truncation, empty rows."""
  batch = make_batch(seed, b=b, t=t, num_groups=num_groups, **kw)
  rng = np.random.default_rng(seed + 100)
  mask = np.asarray(batch.response_mask).copy()
  for i in empty_rows:
    mask[i] = False
  ent = rng.uniform(0.0, 3.0, size=(b, t))
  if ties:
    ent = np.round(ent, 1)  # many exactly equal entropies
  ent[~mask] = rng.choice([np.nan, 1e6, -5.0], size=(~mask).sum())
  tokens = rng.integers(0, vocab, size=(b, t))
  tokens[~mask] = rng.integers(-1000, 1000, size=(~mask).sum())
  truncated = rng.random(b) < 0.3
  return batch.replace(response_mask=jnp.asarray(mask),
                       entropy=jnp.asarray(ent, jnp.float32),
                       tokens=jnp.asarray(tokens, jnp.int32),
                       truncated=jnp.asarray(truncated))


# The RL tests (tests/rl/, tests/scripts/test_train.py) pre-train a tiny base
# model once per session, cached by config hash in this directory.
@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
  return tmp_path_factory.mktemp("rl_cache")


# Each XLA:CPU executable holds about 20 memory mappings for as long as a jit
# cache keeps it, and Linux refuses a process more than vm.max_map_count of
# them (65530 here). Past that, LLVM cannot allocate ("LLVM compilation error:
# Cannot allocate memory") and the worker segfaults in a compile. A worker of
# the whole suite compiles several thousand programs, so after any test that
# leaves the process above half the limit, the jit caches are cleared (8371 ->
# 567 mappings for 400 small programs here). Executables that a fixture holds
# stay; recompiles mostly hit the persistent cache above.
def _max_map_count(default=65530):
  try:
    with open("/proc/sys/vm/max_map_count") as f:
      return int(f.read())
  except (OSError, ValueError):
    return default


MAPS_HIGH = _max_map_count() // 2


def map_count():
  """The number of memory mappings of this process (0 off Linux)."""
  try:
    with open("/proc/self/maps", "rb") as f:
      return f.read().count(b"\n")
  except OSError:
    return 0


def release_mappings(high=None):
  """``jax.clear_caches()`` if this process has more than ``high`` mappings
  (default ``MAPS_HIGH``); returns whether it cleared."""
  if map_count() <= (MAPS_HIGH if high is None else high):
    return False
  jax.clear_caches()
  return True


def pytest_runtest_teardown(item, nextitem):  # pylint: disable=unused-argument
  release_mappings()


def free_port():
  """A TCP port on 127.0.0.1 that was free a moment ago (for the
  coordinator of a multi-process ``jax.distributed`` test)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def pytest_configure(config):
  config.addinivalue_line("markers",
                          "hf: needs torch and transformers (the hf extra)")


# Hyperparameters a registered part needs to be valid (no default, or a
# default that is off); every other hyperparameter keeps its default. The
# registry-wide tests (fuzz, declarations, the data path) read this table.
REQUIRED = {
    ("surrogate", "dro"): {"beta": 0.1},
    ("transform", "kl_in_reward"): {"coef": 0.1},
}


def one_part_config(kind, name, base, coef=0.1, values=None):
  """``base`` (an objective config) with the registered part ``name`` of
  ``kind`` in its slot, set up with ``REQUIRED`` and then ``values`` (its
  hyperparameters; a regularizer's ``"coef"`` among them overrides
  ``coef``)."""
  spec = {"name": name, **REQUIRED.get((kind, name), {}), **(values or {})}
  config = dict(base)
  if kind == "transform":
    config["transforms"] = [spec]
  elif kind == "token_weight":
    config["token_weights"] = {name: spec}
  elif kind == "regularizer":
    config["regularizers"] = {name: {"coef": coef, **spec}}
  else:
    config[kind] = spec
  return config


def pytest_sessionfinish(session):
  # The property tests' example counts (tests/fuzzing.py), per process.
  from tests import fuzzing  # pylint: disable=g-import-not-at-top
  worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
  fuzzing.write_report(worker)
