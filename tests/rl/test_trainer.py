"""The RL trainer (divrl.rl.trainer): a few real steps on Countdown.

A session-wide tiny base model is pre-trained once (cached by config hash in
the shared ``cache_root`` directory, see ``tests/conftest.py``); each test
then trains from it. 1 device, 8-way data parallel and 2x4 data x fsdp give
one run, and so do 2 jax.distributed processes (gloo, 127.0.0.1, 4 CPU
devices each; the workers run ``tests/rl/multiprocess_worker.py``); resume is
bitwise; dynamic sampling and reference resets run; bad batch geometry is
refused.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from divrl.rl.trainer import Trainer, default_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def small_config(workdir, cache_root, **train):
  c = default_config()
  c.workdir = str(workdir)
  c.task.name = "countdown"
  c.task.kwargs.countdown.update(num_count=3, max_number=9, min_target=5,
                                 max_target=20)
  c.task.train_size = 64
  c.task.test_size = 16
  c.task.use_tfds = True
  c.task.data_dir = os.path.join(str(cache_root), "tfds")
  c.base.cache_root = str(cache_root)
  c.base.pretrain.steps = 60
  c.base.pretrain.num_targets = 512
  c.sampling.num_prompts = 4
  c.sampling.num_samples = 4
  c.sampling.max_new_tokens = 10
  c.train.steps = 3
  c.train.learning_rate = 1e-3
  c.eval.num_prompts = 4
  c.eval.num_samples = 8
  c.log.progress = False
  for k, v in train.items():
    c.train[k] = v
  return c


def _params(trainer):
  return [np.asarray(mesh_leaf) for mesh_leaf in
          jax.tree.leaves(jax.tree.map(
              lambda x: np.asarray(x.addressable_data(0))
              if not x.is_fully_addressable else np.asarray(x),
              trainer.state["params"]))]


def _history(result):
  return [{k: v for k, v in h.items() if not k.startswith("time/")
           and k != "tokens/s"} for h in result["history"]]


def _compare(a, b, atol):
  ha, hb = _history(a), _history(b)
  assert len(ha) == len(hb)
  for x, y in zip(ha, hb):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_allclose(x[k], y[k], atol=atol, rtol=atol,
                                 err_msg=k)
  for k in a["final"]:
    np.testing.assert_allclose(a["final"][k], b["final"][k], atol=atol,
                               rtol=atol, err_msg=k)


def test_one_device_and_eight_device_meshes_agree(tmp_path, cache_root):
  """1 device, 8-way data parallel and 2x4 data x fsdp give one run."""
  results = {}
  for shape in ((1, 1), (8, 1), (2, 4)):
    c = small_config(tmp_path / f"m{shape}", cache_root, num_minibatches=2)
    c.mesh.data, c.mesh.fsdp = shape
    trainer = Trainer(c, log=lambda *a: None)
    assert trainer.mesh.devices.size == shape[0] * shape[1]
    # Each batch-axis device computes its own rows' token statistics.
    assert trainer.plan.row_shards == shape[0] * shape[1]
    results[shape] = trainer.run()
  _compare(results[(1, 1)], results[(8, 1)], atol=1e-4)
  _compare(results[(1, 1)], results[(2, 4)], atol=1e-4)


def test_resume_reaches_the_same_params_bitwise(tmp_path, cache_root):
  full = small_config(tmp_path / "full", cache_root, steps=4)
  full.checkpoint.every = 2
  full.mesh.data = 1
  a = Trainer(full, log=lambda *a: None)
  a.run()
  # Stopped at step 3, one step past its last checkpoint (2): the resumed
  # run redoes step 3 and must not log it twice.
  part = small_config(tmp_path / "part", cache_root, steps=4, stop_after=3)
  part.checkpoint.every = 2
  part.mesh.data = 1
  first = Trainer(part, log=lambda *a: None)
  first.run()
  assert first.step == 3
  part.train.stop_after = -1
  resumed = Trainer(part, log=lambda *a: None)
  resumed.run()
  assert resumed.step == 4
  for x, y in zip(_params(a), _params(resumed)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)
  assert a.stream.position == resumed.stream.position
  # metrics.jsonl: each step once, byte for byte the uninterrupted run's.
  logged = (tmp_path / "part" / "metrics.jsonl").read_bytes()
  assert logged == (tmp_path / "full" / "metrics.jsonl").read_bytes()
  steps = [json.loads(line)["step"] for line in logged.splitlines()
           if b'"reward"' in line]
  assert steps == [1, 2, 3, 4]
  timings = (tmp_path / "part" / "timings.jsonl").read_text().splitlines()
  assert [json.loads(t)["step"] for t in timings] == [0, 1, 2, 3, 4, 4]


@pytest.mark.parametrize("shape", [(1, 1), (8, 1), (2, 4)])
def test_the_same_seed_twice_gives_byte_identical_metrics(tmp_path, cache_root,
                                                          shape):
  """Determinism: two runs of one config and seed, on 1 device, the 8-way
  data-parallel mesh and 2x4 data x fsdp: the same metrics.jsonl bytes and
  the same parameters bit for bit."""
  runs = []
  for name in ("a", "b"):
    c = small_config(tmp_path / name, cache_root, steps=2)
    c.mesh.data, c.mesh.fsdp = shape
    c.eval.every = 1
    trainer = Trainer(c, log=lambda *a: None)
    trainer.run()
    runs.append(((tmp_path / name / "metrics.jsonl").read_bytes(),
                 _params(trainer)))
  (ma, pa), (mb, pb) = runs
  assert ma == mb
  assert len(ma.splitlines()) == 1 + 2 * 2   # base, 2 x (step, eval)
  for x, y in zip(pa, pb):
    np.testing.assert_array_equal(x, y)


def test_dynamic_sampling_and_ref_reset_run(tmp_path, cache_root):
  c = small_config(tmp_path / "dyn", cache_root, steps=2,
                   dynamic_sampling=True, max_sampling_rounds=3,
                   ref_reset_every=1)
  c.mesh.data = 1
  t = Trainer(c, log=lambda *a: None)
  t.run()
  assert all(1 <= h["sampling_rounds"] <= 3 for h in t.history)
  # The reference was reset to the policy after the last step.
  for x, y in zip(jax.tree.leaves(t.state["params"]),
                  jax.tree.leaves(t.state["ref_params"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_batch_geometry_is_refused(tmp_path, cache_root):
  c = small_config(tmp_path / "bad", cache_root)
  c.sampling.num_prompts = 3          # 12 rows on 8 devices
  c.mesh.data = 8
  with pytest.raises(ValueError, match="num_prompts"):
    Trainer(c, log=lambda *a: None)


def test_more_eval_prompts_than_the_split_holds_is_an_error(tmp_path,
                                                            cache_root):
  c = small_config(tmp_path / "eval", cache_root)
  c.eval.num_prompts = 17           # the test split holds 16
  with pytest.raises(ValueError, match=r"eval.num_prompts = 17 .*test_size"):
    Trainer(c, log=lambda *a: None)


# --- 2 processes -------------------------------------------------------------


def test_two_processes_match_one_process(tmp_path):
  cache_root = tmp_path / "cache"
  c = small_config(tmp_path / "single", cache_root, num_minibatches=2)
  c.mesh.data = 8
  single = Trainer(c, log=lambda *a: None).run()   # also caches the base
  # Not imported at the top: multiprocess_worker.py imports this module,
  # and tests.conftest configures the compilation cache on import.
  from tests.conftest import free_port  # pylint: disable=g-import-not-at-top
  port = free_port()
  out = tmp_path / "multi.json"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen(
      [sys.executable,
       os.path.join(ROOT, "tests", "rl", "multiprocess_worker.py"),
       str(port), "2", str(i), "4", str(tmp_path / "multi"), str(cache_root),
       str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=900)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("multi-process run timed out")
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]
  multi = json.loads(out.read_text())
  assert multi["processes"] == 2 and multi["devices"] == 8
  _compare(single, multi, atol=1e-4)


# --- The data path: what the trainer serves ---------------------------------


def test_stateful_part_resumes_bitwise_with_its_carry(tmp_path, cache_root):
  def config(name, **train):
    c = small_config(tmp_path / name, cache_root, steps=4, **train)
    c.checkpoint.every = 2
    c.mesh.data = 1
    c.objective.advantage = {"name": "ema_std_grpo", "decay": 0.5}
    return c

  a = Trainer(config("full"), log=lambda *a: None)
  a.run()
  first = Trainer(config("part", stop_after=2), log=lambda *a: None)
  first.run()
  resumed = Trainer(config("part"), log=lambda *a: None)
  assert resumed.maybe_resume(resumed._checkpointer())  # pylint: disable=protected-access
  assert resumed.step == 2
  jax.tree.map(np.testing.assert_array_equal, resumed.state["carry"],
               first.state["carry"])
  resumed.run()
  assert resumed.step == 4
  for x, y in zip(_params(a), _params(resumed)):
    np.testing.assert_array_equal(x, y)
  jax.tree.map(np.testing.assert_array_equal, a.state["carry"],
               resumed.state["carry"])
  assert float(a.state["carry"]["advantage"]["weight"]) == 1 - 0.5 ** 4
  assert "carry/advantage/ema" in a.history[-1]


def test_reference_rehearsal_samples_a_quarter_from_the_reference(
    tmp_path, cache_root):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from divrl.rl import scoring, step as step_lib  # pylint: disable=g-import-not-at-top
  c = small_config(tmp_path / "ref", cache_root, steps=2, learning_rate=3e-2)
  c.sampling.num_prompts = 8
  c.sampling.ref_share = 0.25
  # The entropy bonus moves the policy even when no sample is rewarded.
  c.objective.regularizers = {"kl": {"estimator": "k3", "coef": 0.01},
                              "entropy": {"coef": -0.01}}
  t = Trainer(c, log=lambda *a: None)
  for _ in range(2):   # the policy moves away from the reference
    t.train_step()
  rollout, info = t.rollout(2)
  source = info.sample_source.reshape(8, 4)
  assert source.mean() == 0.25
  np.testing.assert_array_equal(source, [[0, 0, 0, 1]] * 8)
  prepare = jax.jit(step_lib.make_prepare(t.graphdef, t.objective, t.plan))
  prepared, _, _ = prepare(t.state["params"], t.state["ref_params"],
                           t.state["carry"], rollout, jax.random.key(0))

  def fresh(params):
    model = nnx.merge(t.graphdef, params)
    hidden = scoring.response_hidden(model, rollout.prompt_tokens,
                                     rollout.prompt_mask, rollout.tokens,
                                     rollout.response_mask)
    return np.asarray(scoring.model_statistics(
        model, hidden, rollout.tokens, rollout.response_mask, ())["logprobs"])

  mask = np.asarray(rollout.response_mask)
  ref_rows = info.sample_source == 1
  ref_lp, pol_lp = fresh(t.state["ref_params"]), fresh(t.state["params"])
  stored = np.asarray(prepared.batch.ref_logprobs)
  np.testing.assert_allclose(stored[mask], ref_lp[mask], rtol=2e-6,
                             atol=1e-6)
  # The sampler drew the marked rows from the reference, the rest from the
  # policy: its log-probs match that model's, not the other one's.
  roll = np.asarray(rollout.rollout_logprobs)
  m_ref, m_pol = mask & ref_rows[:, None], mask & ~ref_rows[:, None]
  np.testing.assert_allclose(roll[m_ref], ref_lp[m_ref], atol=2e-5)
  np.testing.assert_allclose(roll[m_pol], pol_lp[m_pol], atol=2e-5)
  assert np.abs(ref_lp[m_pol] - pol_lp[m_pol]).max() > 1e-3
  # Reward and pass@1 metrics count the policy's samples only.
  m = t.train_step()
  assert 0.0 <= m["pass@1"] <= 1.0


def test_rollout_serves_solution_ids_components_and_greedy_baselines(
    tmp_path, cache_root):
  c = small_config(tmp_path / "task", cache_root, steps=1)
  c.mesh.data = 1
  c.objective.advantage = "remax"
  c.objective.transforms = []
  t = Trainer(c, log=lambda *a: None)
  rollout, info = t.rollout(0)
  ids = np.asarray(rollout.solution_ids)
  canon = info.canonicals
  groups = np.asarray(rollout.group_ids)
  for i in range(len(ids)):
    assert (ids[i] == -1) == (canon[i] is None)
    for j in range(len(ids)):
      if canon[i] is not None and canon[j] is not None:
        same = canon[i] == canon[j] and groups[i] == groups[j]
        assert (ids[i] == ids[j]) == same
  # remax reads the greedy decode's reward, one per prompt.
  base = np.asarray(rollout.baseline_rewards).reshape(4, 4)
  assert np.all(base == base[:, :1])
  examples = [t.train_examples[i] for i in t.stream.indices(4, 0)]
  greedy = t._greedy_rewards(examples, jax.random.key(0))  # pylint: disable=protected-access
  np.testing.assert_array_equal(base[:, 0], greedy)
  # gdpo reads reward components: [B,K], the first is the task's reward.
  c2 = small_config(tmp_path / "gdpo", cache_root, steps=1)
  c2.mesh.data = 1
  c2.objective.advantage = "gdpo"
  t2 = Trainer(c2, log=lambda *a: None)
  rollout2, info2 = t2.rollout(0)
  rewards = np.asarray(rollout2.rewards)
  assert rewards.shape == (16, len(t2.task.REWARD_COMPONENTS))
  np.testing.assert_array_equal(rewards[:, 0], info2.rewards)
  assert np.all(rewards[:, 0] <= rewards[:, 2]) and np.all(
      rewards[:, 2] <= rewards[:, 1])


def test_on_policy_plan_drops_the_behaviour_forward_and_keeps_the_logs(
    tmp_path, cache_root):
  # One update per batch: after its first rollout the trainer runs without
  # the policy's scoring forward; its first step equals the scored step's
  # (same parameters, same rollout) and logs the same entropy and KL.
  def trainer(name, on_policy_plan=True, **train):
    c = small_config(tmp_path / name, cache_root, steps=1, **train)
    # The entropy bonus moves the policy even when no sample is rewarded.
    c.objective.regularizers = {"kl": {"estimator": "k3", "coef": 0.1},
                                "entropy": {"coef": -0.01}}
    return Trainer(c, log=lambda *a: None, on_policy_plan=on_policy_plan)

  fast, scored = trainer("fast"), trainer("scored", on_policy_plan=False)
  assert fast.plan.score_policy          # decided on the first rollout
  fast.train_step(), scored.train_step()
  assert not fast.plan.score_policy and fast.plan.entropy_in_update
  assert scored.plan.score_policy
  # The second step: the policy has moved away from the reference.
  a, b = fast.train_step(), scored.train_step()
  assert a["kl_ref"] > 0
  for k in ("objective/loss", "objective/grad_norm", "objective/regularizer/kl",
            "entropy", "kl_ref", "reward"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
  # The same metrics (the update reports the entropy it computes).
  assert set(a) == set(b) and "objective/entropy" in a
  several = trainer("mb", num_minibatches=2)
  several.train_step()
  assert several.plan.score_policy       # two updates: the forward stays


def test_a_nan_stops_the_run_naming_the_step_and_never_checkpoints_it(
    tmp_path, cache_root):
  from divrl.rl.trainer import NonFiniteError, first_nonfinite
  assert first_nonfinite({"a": 1.0, "b": float("inf"),
                          "c": float("nan")}) == "b"
  assert first_nonfinite({"a": 1.0, "n": 3}) is None
  c = small_config(tmp_path / "nan", cache_root, steps=4)
  c.checkpoint.every = 1
  c.mesh.data = 1
  t = Trainer(c, log=lambda *a: None)
  t.run()                                   # 4 good steps, 4 checkpoints
  c.train.steps = 6
  t = Trainer(c, log=lambda *a: None)
  # Inject: one parameter becomes NaN, so step 5's loss and gradients do.
  leaves, treedef = jax.tree.flatten(t.state["params"])
  leaves[0] = leaves[0] * np.nan
  t.state["params"] = jax.tree.unflatten(treedef, leaves)
  t.maybe_resume = lambda ckpt: setattr(t, "step", 4) or True
  # The checked mode (on by default) sees the NaN first, in the sampler's
  # log-probs of step 5's rollout.
  with pytest.raises(ValueError, match=r"^step 5: the rollout fails the input"
                     r" checks \(train.check_inputs\): Batch.logprobs has"):
    t.run()
  # Without it, the step's metrics are the last line of defence.
  c.train.check_inputs = False
  with pytest.raises(NonFiniteError, match=r"step 5: metric 'objective/"):
    t.run()
  steps = sorted(int(d) for d in os.listdir(tmp_path / "nan" / "checkpoints")
                 if d.isdigit())
  assert 5 not in steps and 4 in steps, steps
  with open(tmp_path / "nan" / "metrics.jsonl") as f:
    logged = [json.loads(line).get("step") for line in f]
  assert 5 not in logged


def test_skip_nonfinite_skips_the_update_and_counts_it(tmp_path, cache_root):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  c = small_config(tmp_path / "skip", cache_root, steps=3,
                   skip_nonfinite=True)
  c.mesh.data = 1
  # The entropy bonus moves the policy even when no sample is rewarded.
  c.objective.regularizers = {"kl": {"estimator": "k3", "coef": 0.01},
                              "entropy": {"coef": -0.01}}
  t = Trainer(c, log=lambda *a: None)
  seen = []

  def poison(update):
    def poisoned(params, opt_state, ref, carry, prepared, rows, key):
      seen.append([np.asarray(x) for x in jax.tree.leaves(params)])
      if len(seen) == 2:         # step 2's float inputs, so its loss, NaN
        prepared = prepared.replace(batch=jax.tree.map(
            lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating)
            else x, prepared.batch))
      return update(params, opt_state, ref, carry, prepared, rows, key)
    return poisoned

  build = t._build_step          # pylint: disable=protected-access

  def build_poisoned():          # the trainer rebuilds its step once
    build()
    t._update = poison(t._update)  # pylint: disable=protected-access

  t._build_step = build_poisoned   # pylint: disable=protected-access
  t._update = poison(t._update)    # pylint: disable=protected-access
  result = t.run()
  skips = [h["nonfinite_skips"] for h in result["history"]]
  assert skips == [0.0, 1.0, 1.0]
  assert "objective/loss" not in result["history"][1]
  assert np.isfinite(result["history"][2]["objective/loss"])
  for a, b in zip(seen[1], seen[2]):   # step 2 left the parameters alone
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, b) for a, b in zip(seen[0], seen[1]))


def test_a_second_run_on_a_live_workdir_is_refused(tmp_path, cache_root):
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from divrl.rl.trainer import WorkdirLock  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "busy"
  os.makedirs(workdir)
  c = small_config(workdir, cache_root, steps=1)
  c.mesh.data = 1
  t = Trainer(c, log=lambda *a: None)
  with WorkdirLock(str(workdir)):
    with pytest.raises(RuntimeError, match=(
        rf"workdir {workdir} is in use by another live run "
        rf"\(pid {os.getpid()}\)")):
      t.run()
  assert t.step == 0
  # A holder killed with SIGKILL leaves no lock behind.
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time; from divrl.rl.trainer import WorkdirLock\n"
       f"with WorkdirLock({str(workdir)!r}):\n"
       "  print('held', flush=True); time.sleep(600)"],
      cwd=ROOT, stdout=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(RuntimeError, match=rf"pid {holder.pid}\)"):
    t.run()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  time.sleep(0.1)
  t.run()
  assert t.step == 1


def test_a_bad_config_is_refused_before_anything_is_built(tmp_path,
                                                          cache_root,
                                                          monkeypatch):
  from divrl.rl import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  def no_build(*a, **k):
    raise AssertionError("the run was set up despite a bad config")
  monkeypatch.setattr(trainer_lib.RunSetup, "build", no_build)
  c = small_config(tmp_path / "bad", cache_root)
  c.sampling.num_samples = 0              # a zero group size
  c.train.clip_eps = 0.2                  # not a run option
  with pytest.raises(ValueError) as e:
    Trainer(c, log=lambda *a: None)
  assert "sampling.num_samples: must be >= 1, got 0" in str(e.value)
  assert "train.clip_eps: unknown key" in str(e.value)
  # Part hyperparameters: out of their domain, or pass@k's k above the
  # group size (every group would get a zero advantage).
  c = small_config(tmp_path / "bad", cache_root)
  c.objective.surrogate = {"name": "ppo_clip", "eps_low": -0.2}
  with pytest.raises(ValueError, match=r"objective.surrogate \(ppo_clip\): "
                     r"eps_low must be >= 0, got -0.2"):
    Trainer(c, log=lambda *a: None)
  c = small_config(tmp_path / "bad", cache_root)
  c.objective.advantage = {"name": "pkpo", "k": 8}
  with pytest.raises(ValueError, match=r"objective.advantage \(pkpo\): k = 8 "
                     r"needs groups of at least 8 samples, but "
                     r"sampling.num_samples = 4"):
    Trainer(c, log=lambda *a: None)


def test_checked_rollouts_and_a_raising_verifier(tmp_path, cache_root,
                                                 monkeypatch):
  """train.check_inputs (on by default) stops a NaN reward before the
  compiled step, naming the step; a verifier that raises, or hangs past
  train.verify_timeout, scores 0 and the run goes on."""
  from divrl.tasks import base as task_base  # pylint: disable=import-outside-toplevel
  c = small_config(tmp_path / "checked", cache_root, steps=1)
  c.mesh.data = 1
  logs = []
  t = Trainer(c, log=logs.append)
  assert c.train.check_inputs
  cls = type(t.task)
  real = cls.verify
  calls = []

  def raising(self, example, text):
    calls.append(text)
    if len(calls) % 3 == 0:
      raise ZeroDivisionError("the verifier divided by zero")
    return real(self, example, text)

  monkeypatch.setattr(cls, "verify", raising)
  m = t.train_step()                     # no crash
  assert np.isfinite(m["reward"])
  assert any("the verifier raised on" in line and "ZeroDivisionError" in line
             for line in logs)

  # A verifier that hangs on every fifth completion: each is cut at
  # train.verify_timeout and scored 0.
  t.config.train.verify_timeout = 0.05
  calls.clear()

  def hanging(self, example, text):
    calls.append(text)
    while len(calls) % 5 == 0:
      pass
    return real(self, example, text)

  monkeypatch.setattr(cls, "verify", hanging)
  logs.clear()
  m = t.train_step()
  assert np.isfinite(m["reward"])
  hung = [line for line in logs if "the verifier raised on" in line]
  assert hung and "VerifierTimeout: verify took longer than 0.05 s" in hung[0]
  assert f"on {len(calls) // 5} of {len(calls)} completions" in hung[0]

  def nan_reward(self, example, text):
    return task_base.Verdict(float("nan"), False, None, "nan")

  monkeypatch.setattr(cls, "verify", nan_reward)
  with pytest.raises(ValueError) as e:
    t.train_step()
  assert str(e.value).startswith(
      "step 3: the rollout fails the input checks (train.check_inputs): "
      "Batch.rewards has 16 non-finite value(s)")
  assert t.step == 2                     # nothing was updated


def test_safe_verify_turns_an_exception_into_a_rejection():
  from divrl import tasks  # pylint: disable=import-outside-toplevel
  task = tasks.get_task("countdown")

  class Broken(type(task)):
    def verify(self, example, completion):
      raise RecursionError("x" * 1000)

  v = tasks.safe_verify(Broken(), {}, "1+1")
  assert (v.reward, v.correct, v.canonical) == (0.0, False, None)
  assert v.error.startswith("verifier_error: RecursionError: xxx")
  assert len(v.error) < 260


def test_safe_verify_bounds_the_time_of_a_verifier():
  import signal  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from divrl import tasks  # pylint: disable=import-outside-toplevel
  task = tasks.get_task("countdown")

  class Slow:
    """``task``'s verifier, after spinning or sleeping if told to."""

    def __init__(self, how):
      self.how = how

    def verify(self, example, completion):
      if self.how == "spin":
        while True:
          pass
      if self.how == "sleep":
        time.sleep(30)
      return task.verify(example, completion)

  def mine(signum, frame):  # pylint: disable=unused-argument
    raise AssertionError("the caller's handler ran")

  previous = signal.signal(signal.SIGALRM, mine)
  try:
    for how in ("spin", "sleep"):
      start = time.perf_counter()
      v = tasks.safe_verify(Slow(how), {}, "1+1", timeout=0.2)
      assert time.perf_counter() - start < 5
      assert (v.reward, v.correct) == (0.0, False)
      assert v.error == ("verifier_error: VerifierTimeout: verify took longer"
                         " than 0.2 s"), v.error
      # The caller's handler is back, and no timer is left running.
      assert signal.getsignal(signal.SIGALRM) is mine
      assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    # A fast verifier is unaffected and leaves no timer either.
    example = task.generate(0, 4)[0]
    v = tasks.safe_verify(Slow("fast"), example, "1+1", timeout=5)
    assert v == task.verify(example, "1+1")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
  finally:
    signal.signal(signal.SIGALRM, previous)
  for bad in (-1.0, float("inf"), float("nan")):
    with pytest.raises(ValueError, match="timeout must be None or a finite"):
      tasks.safe_verify(task, {}, "1+1", timeout=bad)
  # Off the main thread there is no SIGALRM: verify runs unbounded.
  out = []
  thread = threading.Thread(target=lambda: out.append(
      tasks.safe_verify(Slow("fast"), example, "1+1", timeout=0.01)))
  thread.start()
  thread.join()
  assert out == [task.verify(example, "1+1")]
