"""Tests for divrl.rl.checkpoint: bitwise round trips, sharding, resume, errors."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from divrl.rl import checkpoint
from divrl.rl.checkpoint import Checkpointer
from divrl.models.decoder import Decoder, DecoderConfig
from divrl.sharding import make_mesh
from tests.conftest import free_port

CONFIG = DecoderConfig.preset("tiny")
TX = optax.adamw(1e-2, weight_decay=0.1)
META = {"data_position": 123, "epoch": 2}


def _loss(graphdef, params, tokens):
  logits = nnx.merge(graphdef, params)(tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, tokens[:, 1:]).mean()


def _train_step(graphdef, params, opt_state, rng):
  """One adamw step on random tokens drawn from (and advancing) ``rng``."""
  rng, sub = jax.random.split(rng)
  tokens = jax.random.randint(sub, (2, 9), 0, CONFIG.vocab_size)
  grads = jax.grad(lambda p: _loss(graphdef, p, tokens))(params)
  updates, opt_state = TX.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, rng


_jit_step = jax.jit(_train_step, static_argnums=0)


def _fresh(seed):
  """``(graphdef, params, opt_state)`` of a new tiny decoder."""
  graphdef, params = nnx.split(Decoder(CONFIG, rngs=nnx.Rngs(seed)))
  return graphdef, params, TX.init(params)


def _train_state(seed=0, steps=2, key_seed=11):
  """A training state after ``steps`` real updates (non-zero moments)."""
  graphdef, params, opt_state = _fresh(seed)
  rng = jax.random.key(key_seed)
  for _ in range(3):
    rng, _ = jax.random.split(rng)
  for _ in range(steps):
    params, opt_state, rng = _jit_step(graphdef, params, opt_state, rng)
  return graphdef, {"params": params, "opt_state": opt_state, "rng": rng,
                    "step": 7}


def _bits(x):
  return np.ascontiguousarray(np.asarray(x)).reshape(-1).view(np.uint8)


def assert_bitwise_equal(got, want):
  """Same pytree structure, same leaf types/dtypes/shapes, identical bits."""
  got_leaves, got_def = jax.tree_util.tree_flatten(got)
  want_leaves, want_def = jax.tree_util.tree_flatten(want)
  assert got_def == want_def
  for g, w in zip(got_leaves, want_leaves):
    if isinstance(w, (bool, int, float)):
      assert type(g) is type(w) and g == w
      continue
    assert g.dtype == w.dtype and g.shape == w.shape
    if jax.dtypes.issubdtype(w.dtype, jax.dtypes.prng_key):
      assert jax.random.key_impl(g) == jax.random.key_impl(w)
      g, w = jax.random.key_data(g), jax.random.key_data(w)
    assert np.array_equal(_bits(g), _bits(w))


def _assert_nonzero_moments(opt_state):
  adam = opt_state[0]
  assert int(adam.count) == 2
  assert all(np.abs(np.asarray(m)).max() > 0 for m in jax.tree.leaves(adam.mu))


# ----------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------

def test_round_trip_bitwise(tmp_path):
  _, state = _train_state()
  _assert_nonzero_moments(state["opt_state"])
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    assert ckpt.save(7, state, META)
  _, target = _train_state(seed=1, steps=0, key_seed=5)
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    restored, meta = ckpt.restore(target=target)
  assert meta == META
  assert isinstance(restored["params"], nnx.State)
  assert type(restored["opt_state"][0]) is type(state["opt_state"][0])
  assert jnp.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
  assert np.array_equal(jax.random.key_data(restored["rng"]),
                        jax.random.key_data(state["rng"]))
  assert_bitwise_equal(restored, state)

  # Into a model: the restored params reproduce the saved model's logits.
  graphdef, _ = nnx.split(Decoder(CONFIG, rngs=nnx.Rngs(0)))
  model = Decoder(CONFIG, rngs=nnx.Rngs(3))
  checkpoint.restore_into(model, restored["params"])
  assert_bitwise_equal(checkpoint.nnx_state(model), state["params"])
  tokens = jnp.arange(8)[None] % CONFIG.vocab_size
  assert np.array_equal(model(tokens),
                        nnx.merge(graphdef, state["params"])(tokens))


def test_pure_dict_raw_key_and_no_target(tmp_path):
  _, state = _train_state()
  state = {"params": nnx.to_pure_dict(state["params"]),
           "opt_state": state["opt_state"],
           "rng": jax.random.PRNGKey(42),        # raw uint32 key
           "step": 7, "lr": 0.5, "done": False,
           "host": np.arange(3, dtype=np.int64)}
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(7, state, META)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
        if isinstance(x, jax.Array) else x, state)
    restored, meta = ckpt.restore(target=target)
    assert_bitwise_equal(restored, state)
    assert meta == META
    # Without a target: nested string-keyed dicts, kinds preserved.
    raw, _ = ckpt.restore()
  assert raw["step"] == 7 and raw["lr"] == 0.5 and raw["done"] is False
  assert np.array_equal(raw["rng"], state["rng"])
  assert np.array_equal(raw["opt_state"]["0"]["nu"]["embedding"],
                        state["opt_state"][0].nu["embedding"])
  assert set(raw["params"]["layers"]) == {"0", "1"}

  # An nnx.State target restores a checkpoint saved from the pure dict.
  model = Decoder(CONFIG, rngs=nnx.Rngs(9))
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    got, _ = ckpt.restore(target=dict(target, params=nnx.state(model)))
  checkpoint.restore_into(model, got["params"])
  checkpoint.restore_into(model, state["params"])  # pure dict works too
  assert_bitwise_equal(nnx.to_pure_dict(nnx.state(model)), state["params"])


def test_sharded_round_trip(tmp_path):
  mesh = make_mesh((4, 2), ("fsdp", "tensor"))
  graphdef, state = _train_state()

  def place(params, opt_state):
    specs = nnx.get_partition_spec(params)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    params = jax.device_put(params, shardings)
    opt_shardings = optax.tree_map_params(
        TX, lambda _, s: s, opt_state, shardings,
        transform_non_params=lambda _: NamedSharding(mesh, P()))
    return params, jax.device_put(opt_state, opt_shardings)

  params, opt_state = place(state["params"], state["opt_state"])
  worker_keys = jax.device_put(jax.random.split(jax.random.key(4), 4),
                               NamedSharding(mesh, P("fsdp")))
  state = dict(state, params=params, opt_state=opt_state,
               worker_keys=worker_keys)
  kernel = params["layers"][0]["attn"]["q_proj"]["kernel"][...]
  assert kernel.sharding.spec == P("fsdp", "tensor")
  assert len(kernel.sharding.device_set) == 8
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(7, state, META)

    # Abstract target carrying the shardings (no memory for a second copy).
    _, fresh = _train_state(seed=1, steps=0, key_seed=5)
    fresh_params, fresh_opt = place(fresh["params"], fresh["opt_state"])
    fresh = dict(fresh, params=fresh_params, opt_state=fresh_opt,
                 worker_keys=jax.device_put(jax.random.split(
                     jax.random.key(0), 4), NamedSharding(mesh, P("fsdp"))))
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, jax.Array) else x, fresh)
    restored, meta = ckpt.restore(target=target)
    assert meta == META
    assert_bitwise_equal(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(fresh)):
      if isinstance(want, jax.Array):
        assert got.sharding == want.sharding

    # Resharding on restore: another mesh layout, and a single device.
    mesh2 = make_mesh((2, 4), ("fsdp", "tensor"))
    target2 = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=NamedSharding(mesh2, x.sharding.spec))
        if isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding)
        else x, state)
    restored2, _ = ckpt.restore(7, target=target2)
    assert_bitwise_equal(restored2, state)
    k2 = restored2["params"]["embedding"][...]
    assert k2.sharding == NamedSharding(mesh2, P("tensor", "fsdp"))
    host = jax.tree.map(lambda x: jax.device_put(x, jax.devices()[0])
                        if isinstance(x, jax.Array) else x, fresh)
    restored3, _ = ckpt.restore(target=host)
    assert_bitwise_equal(restored3, state)
    assert len(restored3["params"]["embedding"][...].sharding.device_set) == 1


def test_async_save(tmp_path):
  _, state = _train_state()
  with Checkpointer(tmp_path, save_every=2, async_save=True) as ckpt:
    assert not ckpt.maybe_save(1, state, META)
    assert ckpt.maybe_save(2, state, META)
    ckpt.wait()
    assert ckpt.latest_step() == 2
    restored, meta = ckpt.restore(target=state)
  assert_bitwise_equal(restored, state)
  assert meta == META


# ----------------------------------------------------------------------------
# Save policy, pruning, atomicity, resume
# ----------------------------------------------------------------------------

def _small(v):
  return {"w": jnp.full((3,), v, jnp.float32), "step": int(v)}


def _step_dirs(path):
  return sorted(int(n) for n in os.listdir(path) if n.isdigit())


def test_maybe_save_and_save_semantics(tmp_path):
  d = tmp_path / "run"
  ckpt = Checkpointer(d, save_every=3, max_to_keep=None)
  assert ckpt.latest_step() is None
  saved = [s for s in range(1, 8) if ckpt.maybe_save(s, _small(s), {"s": s})]
  assert saved == [3, 6]
  assert not ckpt.maybe_save(3, _small(3))    # at or below latest: skipped
  assert ckpt.latest_step() == 6 and ckpt.all_steps() == [3, 6]
  # save() ignores save_every; an existing step is a no-op unless forced.
  assert ckpt.save(7, _small(7), {"s": 7})
  assert not ckpt.save(7, _small(70), {"s": 70})
  assert ckpt.restore(target=_small(0))[0]["step"] == 7
  assert ckpt.save(7, _small(70), {"s": 70}, force=True)
  state, meta = ckpt.restore(target=_small(0))
  assert state["step"] == 70 and meta == {"s": 70}
  assert ckpt.restore(3, target=_small(0))[1] == {"s": 3}
  ckpt.close()
  ckpt.close()  # idempotent
  with pytest.raises(RuntimeError, match="closed"):
    ckpt.latest_step()


def test_max_to_keep_prunes_oldest(tmp_path):
  with Checkpointer(tmp_path, save_every=1, max_to_keep=2) as ckpt:
    for s in range(1, 6):
      assert ckpt.maybe_save(s, _small(s))
      assert ckpt.latest_step() == s
    assert ckpt.all_steps() == [4, 5]
  assert _step_dirs(tmp_path) == [4, 5]
  with Checkpointer(tmp_path, save_every=1, max_to_keep=2) as ckpt:
    assert ckpt.latest_step() == 5  # a new instance sees the same steps
    ckpt.save(6, _small(6))
  assert _step_dirs(tmp_path) == [5, 6]


def test_uncommitted_step_is_never_latest(tmp_path):
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(3, _small(3))
    # Synchronous save: committed when save() returns, no temporary left.
    assert ckpt.latest_step() == 3
    assert os.listdir(tmp_path) == ["3"]
  # A crash mid-write leaves a temporary directory (here: even a complete
  # copy of a step) that was never renamed to its final name.
  shutil.copytree(tmp_path / "3", tmp_path / "6.orbax-checkpoint-tmp-1234")
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    assert ckpt.latest_step() == 3
    assert ckpt.restore(target=_small(0))[0]["step"] == 3
    assert ckpt.maybe_save(6, _small(6))
    assert ckpt.latest_step() == 6
    assert ckpt.restore(target=_small(0))[0]["step"] == 6


def test_resume_is_bitwise_identical(tmp_path):
  graphdef, params, opt_state = _fresh(0)
  rng = jax.random.key(0)
  with Checkpointer(tmp_path, save_every=3) as ckpt:
    for step in range(1, 7):
      params, opt_state, rng = _jit_step(graphdef, params, opt_state, rng)
      ckpt.maybe_save(step, {"params": params, "opt_state": opt_state,
                             "rng": rng, "step": step},
                      {"data_position": 2 * step})
    assert ckpt.all_steps() == [3, 6]
  uninterrupted = {"params": params, "opt_state": opt_state, "rng": rng,
                   "step": 6}

  # Resume from step 3 into a freshly initialised (different seed) state.
  _, params1, opt1 = _fresh(1)
  target = {"params": params1, "opt_state": opt1, "rng": jax.random.key(1),
            "step": 0}
  with Checkpointer(tmp_path, save_every=3) as ckpt:
    state, meta = ckpt.restore(3, target=target)
    assert meta == {"data_position": 6} and state["step"] == 3
    params, opt_state, rng = state["params"], state["opt_state"], state["rng"]
    for step in range(state["step"] + 1, 7):
      params, opt_state, rng = _jit_step(graphdef, params, opt_state, rng)
    resumed = {"params": params, "opt_state": opt_state, "rng": rng,
               "step": step}
    assert_bitwise_equal(resumed, uninterrupted)
    assert_bitwise_equal(ckpt.restore(target=target)[0], uninterrupted)


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------

def test_restore_from_missing_or_empty_directory(tmp_path):
  missing = tmp_path / "no_such_run"
  with Checkpointer(missing, save_every=1) as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError, match="no_such_run.*does not exist"):
      ckpt.restore(target=_small(0))
  assert not missing.exists()  # restoring never creates the directory
  empty = tmp_path / "empty_run"
  empty.mkdir()
  with Checkpointer(empty, save_every=1) as ckpt:
    with pytest.raises(FileNotFoundError, match="empty_run"):
      ckpt.restore()
    ckpt.save(2, _small(2))
    with pytest.raises(FileNotFoundError, match=r"step 5 .*empty_run.*\[2\]"):
      ckpt.restore(5, target=_small(0))


def test_structure_mismatch_names_paths(tmp_path):
  _, state = _train_state(steps=0)
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(1, state, META)
    bad = dict(state, extra_thing=jnp.zeros(2))
    del bad["rng"]
    with pytest.raises(ValueError) as e:
      ckpt.restore(target=bad)
    msg = str(e.value)
    assert "'extra_thing'" in msg and "'rng'" in msg and str(tmp_path) in msg

    deeper = Decoder(DecoderConfig.preset("tiny", num_layers=3),
                     rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="params/layers/2/attn/k_proj/kernel"):
      ckpt.restore(target=dict(state, params=nnx.state(deeper)))

    wider = Decoder(DecoderConfig.preset("tiny", vocab_size=32),
                    rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"shape mismatch at 'params/embed"):
      ckpt.restore(target=dict(state, params=nnx.state(wider)))

    with pytest.raises(ValueError, match="'step' is a typed PRNG key"):
      ckpt.restore(target=dict(state, step=jax.random.key(0)))


def test_argument_errors(tmp_path):
  with pytest.raises(ValueError, match="save_every"):
    Checkpointer(tmp_path, save_every=0)
  with pytest.raises(TypeError, match="save_every"):
    Checkpointer(tmp_path, save_every=2.0)
  with pytest.raises(ValueError, match="max_to_keep"):
    Checkpointer(tmp_path, save_every=1, max_to_keep=0)
  with pytest.raises(TypeError, match="directory"):
    Checkpointer(None, save_every=1)
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    with pytest.raises(TypeError, match="meta must be JSON"):
      ckpt.save(1, _small(1), {"bad": object()})
    with pytest.raises(TypeError, match="meta must be a dict"):
      ckpt.save(1, _small(1), [1, 2])
    with pytest.raises(TypeError, match="'opt/name'"):
      ckpt.save(1, {"opt": {"name": "adam"}})
    with pytest.raises(ValueError, match="step must be >= 0"):
      ckpt.maybe_save(-1, _small(1))
    with pytest.raises(TypeError, match="step must be an int"):
      ckpt.save(1.0, _small(1))
    assert ckpt.latest_step() is None
  with pytest.raises(TypeError, match="model must be an nnx.Module"):
    checkpoint.nnx_state({"a": 1})
  model = Decoder(CONFIG, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="'not_a_param'"):
    checkpoint.restore_into(model, {"not_a_param": jnp.zeros(2)})


# ----------------------------------------------------------------------------
# Integrity: corrupt files, failed writes, interrupted pruning
# ----------------------------------------------------------------------------

def _largest_data_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir / "state")
           for f in fs if os.path.basename(r) == "d"]
  return max(files, key=os.path.getsize)


def _big(v):
  return {"w": jax.random.normal(jax.random.key(v), (20000,)),
          "step": int(v)}


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta"])
def test_a_damaged_step_is_named_at_restore(tmp_path, damage):
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(1, _big(1), {"s": 1})
    ckpt.save(2, _big(2), {"s": 2})
  if damage == "meta":
    # Valid JSON, wrong value: only the recorded CRC-32 can tell.
    path = tmp_path / "2" / "meta" / "metadata"
    path.write_text(path.read_text().replace("2", "3"))
  else:
    path = _largest_data_file(tmp_path / "2")
    data = bytearray(open(path, "rb").read())
    if damage == "flip":   # still decompresses: only the CRC-32 can tell
      data[len(data) // 2] ^= 0x01
    else:
      data = data[:len(data) // 3]
    open(path, "wb").write(bytes(data))
  want = {"flip": "leaf 'w' does not match its CRC-32",
          "truncate": "it cannot be read",
          "meta": "its metadata does not match its CRC-32"}[damage]
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    for target in (_big(0), None):
      with pytest.raises(checkpoint.CorruptCheckpointError) as e:
        ckpt.restore(target=target)
      assert f"checkpoint step 2 at '{tmp_path / '2'}' is corrupt" in str(
          e.value)
      assert want in str(e.value)
      assert e.value.step == 2
    # The fallback: the newest good step, the bad one set aside.
    logs = []
    state, meta, bad = ckpt.restore_latest_good(target=_big(0),
                                                log=logs.append)
    assert meta == {"s": 1} and bad == [2] and state["step"] == 1
    assert_bitwise_equal(state, _big(1))
    assert "step 2" in logs[0] and "trying the previous" in logs[0]
    assert ckpt.all_steps() == [1]
    # Saving step 2 again works (it is no longer "at or below the latest").
    assert ckpt.maybe_save(2, _big(2), {"s": 2})
    assert ckpt.restore(target=_big(0))[1] == {"s": 2}
  assert os.listdir(str(tmp_path) + ".corrupt") == ["2"]


def test_every_step_corrupt_raises_the_newest_error(tmp_path):
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    ckpt.save(1, _big(1))
  path = _largest_data_file(tmp_path / "1")
  open(path, "wb").write(b"garbage")
  with Checkpointer(tmp_path, save_every=1) as ckpt:
    with pytest.raises(checkpoint.CorruptCheckpointError, match="step 1"):
      ckpt.restore_latest_good(target=_big(0), log=lambda m: None)
  with Checkpointer(tmp_path / "none", save_every=1) as ckpt:
    with pytest.raises(FileNotFoundError):
      ckpt.restore_latest_good()


_FULL_DISK_SCRIPT = r"""
import json, os, resource, signal, sys
import jax
from divrl.rl import checkpoint
from divrl.rl.checkpoint import Checkpointer
assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN   # Python's
big = lambda v: {"w": jax.random.normal(jax.random.key(v), (20000,)),
                 "step": int(v)}
out = {}
with Checkpointer(sys.argv[1], save_every=1) as ckpt:
  ckpt.save(1, big(1), {"s": 1})
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  # A file-size limit below one data file: the kernel refuses the write
  # (EFBIG), as a full disk does (ENOSPC).
  resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
  try:
    ckpt.save(2, big(2), {"s": 2})
    out["error"] = None
  except checkpoint.CheckpointWriteError as e:
    out["error"] = str(e)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
  out["steps"] = ckpt.all_steps()
  state, meta = ckpt.restore(target=big(0))
  out["meta"] = meta
  out["same"] = bool((state["w"] == big(1)["w"]).all())
  out["saved_again"] = ckpt.save(2, big(2), {"s": 2})
print("RESULT" + json.dumps(out))
"""


def test_a_failed_write_names_the_last_good_step(tmp_path):
  # In a subprocess: the file-size limit covers every file the process
  # writes (a test worker's compilation cache too).
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  proc = subprocess.run(
      [sys.executable, "-c", _FULL_DISK_SCRIPT, str(tmp_path)], cwd=root,
      env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""),
      capture_output=True, text=True, timeout=300)
  line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
  assert proc.returncode == 0 and line, proc.stderr[-3000:]
  out = json.loads(line[0][len("RESULT"):])
  msg = out["error"]
  assert msg is not None
  assert f"writing checkpoint step 2 to '{tmp_path}' failed" in msg
  assert "File too large" in msg
  assert "the last good checkpoint is step 1, intact" in msg
  assert out["steps"] == [1]
  assert out["meta"] == {"s": 1} and out["same"]
  # Space again: the same step saves (the leftover temporary goes).
  assert out["saved_again"]
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_pruning_renames_then_removes(tmp_path, monkeypatch):
  # An old step leaves in one rename (to .deleted) and is removed after:
  # a kill mid-removal leaves no half-deleted step that lists as one.
  removed = []
  real = checkpoint.shutil.rmtree
  monkeypatch.setattr(checkpoint.shutil, "rmtree",
                      lambda p, **kw: removed.append(os.listdir(p)
                                                     if os.path.isdir(p)
                                                     else None)
                      or real(p, **kw))
  with Checkpointer(tmp_path, save_every=1, max_to_keep=1) as ckpt:
    ckpt.save(1, _small(1))
    ckpt.save(2, _small(2))
    assert ckpt.all_steps() == [2]
  assert ["1"] in removed
  assert sorted(os.listdir(tmp_path)) == ["2"]


def _two_processes(tmp_path, mode, wait=None):
  """Runs ``multihost_checkpoint_worker.py`` in ``mode`` on 2 processes;
  returns their return codes, logs and findings (None if none written).

  With ``wait=i`` only process ``i`` must finish; the other gets 60 s and is
  then killed (it may be waiting in a barrier for a process that left).
  """
  port = free_port()
  out = tmp_path / f"{mode}.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  worker = os.path.join(os.path.dirname(__file__),
                        "multihost_checkpoint_worker.py")
  procs = [subprocess.Popen(
      [sys.executable, worker, str(port), str(i), str(tmp_path / "ckpt"),
       mode, str(out)], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = [None, None]
  order = range(2) if wait is None else (wait, 1 - wait)
  for i in order:
    timeout = 300 if wait in (None, i) else 60
    try:
      logs[i] = procs[i].communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      if wait in (None, i):
        pytest.fail(f"process {i} did not finish ({mode})")
      logs[i] = procs[i].communicate()[0]
  found = [json.loads(f.read_text()) if f.exists() else None
           for f in (tmp_path / f"{mode}.json.{i}" for i in range(2))]
  return [p.returncode for p in procs], logs, found


def _check_fell_back(r):
  assert r["bad"] in ([], [2]) and r["steps"] == [1]
  assert r["meta"] == {"s": 1} and r["step"] == 1
  assert r["equal"] == {"sharded": True, "replicated": True}


def test_two_processes_fall_back_from_a_flipped_shard(tmp_path):
  """A leaf sharded across two processes has its CRC-32 too. A bit flipped
  in a file of process 1's shard is named on both processes, and both fall
  back to step 1 together (``tests/rl/multihost_checkpoint_worker.py``)."""
  codes, logs, found = _two_processes(tmp_path, "flip")
  assert codes == [0, 0], [log[-3000:] for log in logs]
  assert "process_1" in found[0]["damaged"]
  for r in found:
    assert r["crc32"] == {"sharded": True, "replicated": True, "step": True}
    assert r["error"].startswith("checkpoint step 2 at "), r["error"]
    assert "leaf 'sharded' does not match its CRC-32" in r["error"]
    _check_fell_back(r)
    assert r["bad"] == [2]
  assert os.listdir(str(tmp_path / "ckpt") + ".corrupt") == ["2"]


def test_two_processes_resume_after_an_unreadable_shard(tmp_path):
  """A file of process 1's shard cut short fails only on process 1, which
  moves the step aside and raises (process 0 waits in orbax's barrier and
  is stopped, as a launcher would). The restarted job resumes from step 1."""
  codes, logs, found = _two_processes(tmp_path, "truncate", wait=1)
  assert codes[1] == 0, logs[1][-3000:]
  r = found[1]
  assert r["unreadable"], r
  assert "checkpoint step 2" in r["error"] and "cannot be read" in r["error"]
  assert "moved to" in r["logs"][0] and "start it again" in r["logs"][0]
  assert os.listdir(str(tmp_path / "ckpt") + ".corrupt") == ["2"]
  codes, logs, found = _two_processes(tmp_path, "resume")
  assert codes == [0, 0], [log[-3000:] for log in logs]
  for r in found:
    _check_fell_back(r)
    assert r["bad"] == []
