"""The reliability campaign: kills, a full disk, corrupt checkpoints, fuzzing.

  python -m scripts.reliability                 # the long profile (~10 min)
  python -m scripts.reliability --kills 4 --fuzz-examples 0   # a quick one

What it does, each part against a real training run of the training CLI
(``scripts/train.py``, a small Countdown GRPO run, ``RUN_FLAGS``):

* **Kills.** An uninterrupted reference run, then ``--kills`` runs killed
  with SIGKILL, in turn: at a random moment of the whole run (start-up
  included), a random moment (0-0.5 s) after a random step is logged, and
  in the middle of a random checkpoint write (the step's temporary
  directory exists). After each
  kill the checkpoint directory must restore, the run is started again with
  the same command and resumes, and its final checkpoint (parameters,
  optimizer state, PRNG key) and ``metrics.jsonl`` must be byte-identical to
  the reference's. The steps lost (logged before the kill, redone after)
  must be at most one checkpoint interval.
* **Full disk.** Once a run's first checkpoint is committed, its file-size
  limit (``RLIMIT_FSIZE``, set from outside with ``prlimit``) drops below
  the size of a checkpoint file, so the next write fails as on a full disk:
  the run must stop with ``CheckpointWriteError`` naming the last good step,
  and that checkpoint must restore.
* **Corrupt checkpoints.** The newest checkpoint of a finished run is cut
  short or has a byte flipped; a resumed run must name it, fall back to the
  one before, and end byte-identical to the reference.
* **Fuzzing.** With ``--fuzz-examples N`` the property tests (objective
  parts, recipes, verifiers; ``tests/fuzzing.py``) run with ``N`` examples
  each and their counts are collected.

Results go to ``results/reliability.{json,md}``, and the figures table of
``docs/reliability.md`` (between its ``reliability:begin/end`` markers) is
rewritten from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts import _bench  # noqa: E402  pylint: disable=g-import-not-at-top

CONFIG = "experiments/countdown/grpo.py"
STEPS, EVERY = 6, 2
# A small run: 16 rollouts of 10 tokens a step, a checkpoint every 2 steps.
RUN_FLAGS = (
    "--config.task.kwargs.countdown.num_count=3",
    "--config.task.kwargs.countdown.max_number=9",
    "--config.task.kwargs.countdown.min_target=5",
    "--config.task.kwargs.countdown.max_target=20",
    "--config.task.train_size=64", "--config.task.test_size=16",
    "--config.base.pretrain.steps=60", "--config.base.pretrain.num_targets=512",
    "--config.sampling.num_prompts=4", "--config.sampling.num_samples=4",
    "--config.sampling.max_new_tokens=10",
    f"--config.train.steps={STEPS}", "--config.eval.every=3",
    "--config.eval.num_prompts=4", "--config.eval.num_samples=8",
    f"--config.checkpoint.every={EVERY}", "--config.checkpoint.max_to_keep=2",
    "--config.log.progress=False", "--config.log.plot=False",
    "--config.log.tensorboard=False", "--config.mesh.data=1",
)
DOC = os.path.join(ROOT, "docs", "reliability.md")
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


@dataclasses.dataclass
class Campaign:
  """Where the runs go and what they share.

  Attributes:
    root: a scratch directory for the runs.
    cache_root: the pre-trained base and the task data (shared).
    timeout: seconds a run may take.
  """

  root: str
  cache_root: str
  timeout: float = 900.0

  def command(self, workdir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scripts.train", "--config", CONFIG,
            f"--config.workdir={workdir}",
            f"--config.base.cache_root={self.cache_root}",
            f"--config.task.data_dir={os.path.join(self.cache_root, 'tfds')}",
            *RUN_FLAGS, *extra]

  def env(self) -> dict[str, str]:
    # One compilation cache for every run: a restarted run loads its
    # programs instead of compiling them (the numbers do not change).
    return dict(os.environ, JAX_PLATFORMS="cpu",
                JAX_COMPILATION_CACHE_DIR=os.path.join(self.cache_root, "xla"),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

  def start(self, workdir: str, *extra: str, preexec=None) -> subprocess.Popen:
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    log = open(os.path.join(os.path.dirname(workdir),
                            os.path.basename(workdir) + ".log"), "ab")
    return subprocess.Popen(self.command(workdir, *extra), cwd=ROOT,
                            env=self.env(), stdout=log, stderr=log,
                            preexec_fn=preexec)

  def run(self, workdir: str, *extra: str) -> subprocess.CompletedProcess:
    """Runs the CLI to the end; raises with the log tail if it fails."""
    proc = self.start(workdir, *extra)
    try:
      proc.wait(timeout=self.timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      raise
    if proc.returncode:
      raise RuntimeError(f"run {workdir} failed ({proc.returncode}):\n"
                         + log_tail(workdir))
    return proc


def log_tail(workdir: str, n: int = 3000) -> str:
  path = workdir + ".log"
  if not os.path.exists(path):
    return ""
  with open(path, "rb") as f:
    return f.read()[-n:].decode(errors="replace")


# ------------------------------------------------------------ observations --

def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def read_final(workdir: str, step: int = STEPS) -> dict[str, Any]:
  """The run's checkpoint ``step`` as ``{path: numpy array}``."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from divrl.rl.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  with Checkpointer(checkpoint_dir(workdir), save_every=1) as ckpt:
    state, meta = ckpt.restore(step)
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  out = {jax.tree_util.keystr(p): np.asarray(
      jax.random.key_data(x) if jax.dtypes.issubdtype(
          getattr(x, "dtype", np.float32), jax.dtypes.prng_key) else x)
         for p, x in flat}
  out["meta/step"] = np.asarray(meta["step"])
  return out


def restorable_steps(workdir: str) -> list[int]:
  """Every committed step of the run, each restored; raises if one fails."""
  from divrl.rl.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(checkpoint_dir(workdir)):
    return []
  with Checkpointer(checkpoint_dir(workdir), save_every=1) as ckpt:
    steps = ckpt.all_steps()
    for s in steps:
      ckpt.restore(s)
  return steps


def logged_steps(workdir: str) -> list[int]:
  """The training steps in ``metrics.jsonl`` (lines with a reward), in file
  order; a line cut short by a kill is ignored."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        continue
      if "reward" in rec:
        out.append(rec["step"])
  return out


def metrics_bytes(workdir: str) -> bytes:
  with open(os.path.join(workdir, "metrics.jsonl"), "rb") as f:
    return f.read()


def same_state(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
  """The leaves that differ (bitwise) between two ``read_final`` results."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if a.keys() != b.keys():
    return sorted(set(a) ^ set(b))
  return [k for k in a if a[k].dtype != b[k].dtype
          or a[k].tobytes() != b[k].tobytes()]


# ------------------------------------------------------------------ kills --

def _writing(workdir: str, step: int | None = None) -> bool:
  """Whether a checkpoint write (of ``step``, or any) is under way."""
  name = f"{step}." if step is not None else ""
  return bool(glob.glob(os.path.join(checkpoint_dir(workdir),
                                     f"{name}*orbax-checkpoint-tmp*")))


def kill_point(camp: Campaign, name: str, *, delay: float = 0.0,
               after_step: int | None = None,
               write_step: int | None = None) -> dict[str, Any]:
  """Starts a run and SIGKILLs it: ``delay`` seconds in; or ``delay``
  seconds after it logs step ``after_step``; or while it writes checkpoint
  ``write_step``. Records what the kill left."""
  workdir = os.path.join(camp.root, name)
  shutil.rmtree(workdir, ignore_errors=True)
  proc = camp.start(workdir)
  t0 = time.perf_counter()
  start = None if after_step is not None or write_step is not None else t0
  while proc.poll() is None and time.perf_counter() - t0 < camp.timeout:
    if write_step is not None and _writing(workdir, write_step):
      break
    if (start is None and after_step is not None
        and after_step in logged_steps(workdir)):
      start = time.perf_counter()
    if start is not None and time.perf_counter() - start >= delay:
      break
    time.sleep(0.002)
  was_writing = _writing(workdir)
  killed = proc.poll() is None
  if killed:
    proc.send_signal(signal.SIGKILL)
  proc.wait()
  return {"name": name, "killed": killed,
          "at_s": round(time.perf_counter() - t0, 3),
          "during_write": was_writing and killed,
          "mode": ("write" if write_step else
                   "step" if after_step is not None else "time"),
          "last_logged": max(logged_steps(workdir), default=0)}


def random_kill(camp: Campaign, name: str, mode: str, rng: random.Random,
                run_s: float, *, time_span: float = 1.0,
                step_delay: float = 0.5, draws: int = 3) -> dict[str, Any]:
  """A ``kill_point`` at a random place of kind ``mode``: ``"time"``, a
  moment in the first ``time_span`` of ``run_s`` seconds (start-up
  included); ``"step"``, up to ``step_delay`` s after a random step is
  logged; ``"write"``, during a random checkpoint write. A point whose run
  ended first is drawn again, up to ``draws`` times (``attempts`` says how
  many it took; ``killed`` stays False if every draw missed)."""
  for attempt in range(1, draws + 1):
    if mode == "time":
      kw = dict(delay=rng.uniform(0.0, time_span * run_s))
    elif mode == "step":
      kw = dict(after_step=rng.randint(1, STEPS - 1),
                delay=rng.uniform(0.0, step_delay))
    elif mode == "write":
      kw = dict(write_step=EVERY * rng.randint(1, STEPS // EVERY))
    else:
      raise ValueError(f"mode must be 'time', 'step' or 'write', got"
                       f" {mode!r}.")
    p = kill_point(camp, name, **kw)
    if p["killed"]:
      break
  p["attempts"] = attempt
  return p


def check_resume(camp: Campaign, point: dict[str, Any],
                 reference: dict[str, Any], ref_metrics: bytes
                 ) -> dict[str, Any]:
  """Checks the killed run's checkpoints, resumes it, compares the end."""
  workdir = os.path.join(camp.root, point["name"])
  steps = restorable_steps(workdir)   # raises if a committed step is bad
  resumed_from = max(steps, default=0)
  camp.run(workdir)
  diff = same_state(read_final(workdir), reference)
  same_metrics = metrics_bytes(workdir) == ref_metrics
  logged = logged_steps(workdir)
  lost = max(point["last_logged"] - resumed_from, 0)
  ok = (not diff and same_metrics and lost <= EVERY
        and logged == list(range(1, STEPS + 1)))
  return {**point, "checkpoints_after_kill": steps,
          "resumed_from": resumed_from, "steps_lost": lost,
          "state_differs": diff[:5], "metrics_identical": same_metrics,
          "steps_logged_once": logged == list(range(1, STEPS + 1)),
          "ok": ok}


def reference_run(camp: Campaign, name: str = "reference"
                  ) -> tuple[dict[str, Any], bytes, float]:
  """An uninterrupted run: its final checkpoint, metrics bytes and time."""
  workdir = os.path.join(camp.root, name)
  shutil.rmtree(workdir, ignore_errors=True)
  t0 = time.perf_counter()
  camp.run(workdir)
  return read_final(workdir), metrics_bytes(workdir), time.perf_counter() - t0


def kill_campaign(camp: Campaign, kills: int, *, seed: int = 0,
                  reference=None, log=_bench.log) -> dict[str, Any]:
  """``kills`` kill points against one reference run.

  The first reference run pre-trains the base and fills the compilation
  cache; a second, warm one gives the run time that the random moments are
  drawn from (and must match the first byte for byte). A point whose run
  ended before its moment came is drawn again (up to 3 times) and counted
  as not killed if it still ends first.
  """
  ref, ref_metrics, cold_s = reference or reference_run(camp)
  again, again_metrics, warm_s = reference_run(camp, "reference_warm")
  repeat_identical = again_metrics == ref_metrics and not same_state(again,
                                                                     ref)
  log(f"reference run: {cold_s:.1f} s cold, {warm_s:.1f} s warm, identical"
      f" {repeat_identical}")
  rng = random.Random(seed)
  points = []
  for i in range(kills):
    p = random_kill(camp, f"kill{i}", ("time", "step", "write")[i % 3], rng,
                    warm_s)
    r = check_resume(camp, p, ref, ref_metrics)
    points.append(r)
    log(f"kill {i}: {r['mode']} at {r['at_s']} s, killed {r['killed']}, "
        f"during write {r['during_write']}, last logged {r['last_logged']},"
        f" resumed from {r['resumed_from']}, lost {r['steps_lost']}, ok "
        f"{r['ok']}")
    shutil.rmtree(os.path.join(camp.root, p["name"]), ignore_errors=True)
  return {"reference_s": cold_s, "warm_s": warm_s,
          "repeat_identical": repeat_identical, "points": points,
          "killed": sum(p["killed"] for p in points),
          "survived": sum(p["ok"] and p["killed"] for p in points)}


# ------------------------------------------------------ disk, corruption --

def fill_disk(camp: Campaign, limit_bytes: int = 100_000) -> dict[str, Any]:
  """A run whose file-size limit drops to ``limit_bytes`` (``prlimit`` on
  the running process; Python ignores SIGXFSZ, so a write past it fails
  with EFBIG, as on a full disk) once its first checkpoint is committed:
  it must stop with CheckpointWriteError, and that checkpoint must
  restore."""
  workdir = os.path.join(camp.root, "full_disk")
  shutil.rmtree(workdir, ignore_errors=True)
  proc = camp.start(workdir)
  first = os.path.join(checkpoint_dir(workdir), str(EVERY))
  limited = False
  while proc.poll() is None:
    if not limited and os.path.isdir(first) and not _writing(workdir):
      hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)[1]
      resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit_bytes, hard))
      limited = True
    time.sleep(0.005)
  tail = log_tail(workdir, 10**7)
  steps = restorable_steps(workdir)
  message = next((line for line in tail.splitlines()
                  if "CheckpointWriteError:" in line), "")
  named = f"last good checkpoint is step {EVERY}" in message
  ok = limited and proc.returncode != 0 and named and steps == [EVERY]
  return {"limit_bytes": limit_bytes, "returncode": proc.returncode,
          "error_named": named, "checkpoints_restorable": steps, "ok": ok,
          "message": message[:2000]}


def corrupt_checkpoint(camp: Campaign, how: str, reference) -> dict[str, Any]:
  """Stops a run at step ``STEPS - EVERY``, damages that newest checkpoint
  (``how``: "truncate" halves its largest data file, "flip" flips one byte
  of it), resumes, and checks that the run names the step, falls back to
  the one before and ends byte-identical to the reference."""
  workdir = os.path.join(camp.root, f"corrupt_{how}")
  shutil.rmtree(workdir, ignore_errors=True)
  bad = STEPS - EVERY
  camp.run(workdir, f"--config.train.stop_after={bad}")
  newest = os.path.join(checkpoint_dir(workdir), str(bad))
  files = [f for f in glob.glob(os.path.join(newest, "state", "**", "d", "*"),
                                recursive=True) if os.path.isfile(f)]
  target = max(files, key=os.path.getsize)
  with open(target, "rb") as f:
    data = bytearray(f.read())
  if how == "truncate":
    data = data[:len(data) // 2]
  else:
    data[len(data) // 2] ^= 0x5A
  with open(target, "wb") as f:
    f.write(bytes(data))
  camp.run(workdir)
  tail = log_tail(workdir, 10**7)
  named = any(f"checkpoint step {bad} at" in line and "is corrupt" in line
              for line in tail.splitlines())
  diff = same_state(read_final(workdir), reference[0])
  same_metrics = metrics_bytes(workdir) == reference[1]
  return {"how": how, "file": os.path.relpath(target, workdir),
          "error_named": named, "state_differs": diff[:5],
          "metrics_identical": same_metrics,
          "set_aside": sorted(os.listdir(checkpoint_dir(workdir)
                                         + ".corrupt")),
          "ok": named and not diff and same_metrics}


# ---------------------------------------------------------------- fuzzing --

def fuzz(examples: int, out_dir: str, log=_bench.log) -> dict[str, Any]:
  """Runs the property tests with ``examples`` each; returns the counts."""
  shutil.rmtree(out_dir, ignore_errors=True)
  env = dict(os.environ, DIVRL_FUZZ_EXAMPLES=str(examples),
             DIVRL_FUZZ_REPORT_DIR=out_dir, JAX_PLATFORMS="cpu")
  tests = ["tests/test_fuzz.py", "tests/tasks/test_verifier_fuzz.py"]
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2",
                         "-p", "no:cacheprovider", *tests], cwd=ROOT, env=env,
                        capture_output=True, text=True)
  seconds = time.perf_counter() - t0
  counts: dict[str, int] = {}
  for path in glob.glob(os.path.join(out_dir, "*.json")):
    with open(path, encoding="utf-8") as f:
      for k, v in json.load(f).items():
        counts[k] = counts.get(k, 0) + v
  summary = proc.stdout.strip().splitlines()[-1] if proc.stdout else ""
  log(f"fuzz: {summary} in {seconds:.0f} s")
  return {"examples_asked": examples, "seconds": seconds,
          "passed": proc.returncode == 0, "pytest": summary,
          "counts": dict(sorted(counts.items())),
          "failures": proc.stdout[-4000:] if proc.returncode else ""}


# ----------------------------------------------------------------- report --

def _group_counts(counts: dict[str, int]) -> list[list[str]]:
  groups: dict[str, list[int]] = {}
  for k, v in counts.items():
    head = "/".join(k.split("/")[:2]) if k.startswith("parts/") else \
        k.split("/")[0]
    groups.setdefault(head, []).append(v)
  return [[g, str(len(v)), str(min(v)), str(max(v)), str(sum(v))]
          for g, v in sorted(groups.items())]


def render(res: dict[str, Any]) -> str:
  lines = [f"Last run: {res['date']} at commit `{res['commit']}`, "
           f"{res['machine']['processor']}, `{res['command']}`.", ""]
  k = res.get("kills")
  if k:
    pts = k["points"]
    killed = [p for p in pts if p["killed"]]
    writing = [p for p in killed if p["during_write"]]
    by_mode = {m: sum(p["mode"] == m for p in killed)
               for m in ("time", "step", "write")}
    lines += [
        f"- **Kill points survived: {k['survived']} of {len(killed)} "
        f"SIGKILLs** ({by_mode['time']} at a random moment of the run, "
        f"{by_mode['step']} just after a random step, {by_mode['write']} "
        f"aimed at a checkpoint write; {len(writing)} landed during a "
        f"write). "
        + (f"{len(pts) - len(killed)} point(s) ended before their moment "
           "in 3 draws and are not counted. " if len(pts) > len(killed)
           else "")
        + f"Steps redone per kill: at most "
        f"{max((p['steps_lost'] for p in killed), default=0)} (the "
        f"checkpoint interval is {EVERY}). Every resumed run ended with the "
        "reference's parameters, optimizer state, PRNG key and "
        "`metrics.jsonl`, byte for byte"
        + ("" if k["survived"] == len(killed) else ", except the failed"
           " points listed in `results/reliability.json`") + ".",
        f"- **Same numbers twice:** a second uninterrupted run (warm "
        f"compilation cache, {k.get('warm_s', 0):.1f} s against "
        f"{k['reference_s']:.1f} s cold) "
        + ("matched the first byte for byte." if k.get("repeat_identical")
           else "DID NOT match the first.")]
  d = res.get("full_disk")
  if d:
    lines.append("- **Full disk:** " + (
        f"the write of the second checkpoint failed at a {d['limit_bytes']}"
        "-byte file limit; the run stopped with `CheckpointWriteError` "
        "naming the last good step, which restored" if d["ok"]
        else "FAILED (see `results/reliability.json`)") + ".")
  for c in res.get("corrupt", []):
    lines.append(f"- **Corrupt checkpoint ({c['how']}):** "
                 + ("named at restore, fell back to the previous one, ended "
                    "byte-identical" if c["ok"] else "FAILED") + ".")
  f = res.get("fuzz")
  if f and f["counts"]:
    lines += ["", f"Fuzzing ({f['pytest']}, {f['seconds'] / 60:.1f} min, "
              f"asked {f['examples_asked']} examples per test):", ""]
    lines += _bench.table(
        ["tests", "properties", "min examples", "max examples", "total"],
        _group_counts(f["counts"]))
  return "\n".join(lines) + "\n"


def update_doc(text: str) -> None:
  """Rewrites the block between the markers of docs/reliability.md."""
  with open(DOC, encoding="utf-8") as f:
    doc = f.read()
  if BEGIN not in doc or END not in doc:
    raise ValueError(f"{DOC} lacks the markers {BEGIN} / {END}.")
  head, rest = doc.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  with open(DOC, "w", encoding="utf-8") as f:
    f.write(head + BEGIN + "\n" + text + END + tail)


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
  except OSError:
    return "?"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--kills", type=int, default=20)
  ap.add_argument("--fuzz-examples", type=int, default=200)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--root", default=os.path.join(ROOT, "runs", "reliability"))
  ap.add_argument("--no-disk", action="store_true")
  ap.add_argument("--no-doc", action="store_true",
                  help="do not rewrite docs/reliability.md")
  ap.add_argument("--out", default=os.path.join(ROOT, "results",
                                                "reliability"))
  args = ap.parse_args(argv)
  os.makedirs(args.root, exist_ok=True)
  camp = Campaign(root=args.root, cache_root=os.path.join(args.root, "cache"))
  res: dict[str, Any] = {
      "command": "python -m scripts.reliability " + " ".join(
          sys.argv[1:] if argv is None else argv),
      "commit": _commit(), "date": time.strftime("%Y-%m-%d"),
      "machine": _bench.machine(["jax", "orbax-checkpoint", "hypothesis"])}
  if args.fuzz_examples:
    res["fuzz"] = fuzz(args.fuzz_examples, os.path.join(args.root, "fuzz"))
  reference = reference_run(camp)
  if args.kills:
    res["kills"] = kill_campaign(camp, args.kills, seed=args.seed,
                                 reference=reference)
  if not args.no_disk:
    res["full_disk"] = fill_disk(camp)
    _bench.log(f"full disk: {res['full_disk']}")
    res["corrupt"] = [corrupt_checkpoint(camp, how, reference)
                      for how in ("truncate", "flip")]
    _bench.log(f"corrupt: {[c['ok'] for c in res['corrupt']]}")
  _bench.write(res, args.out + ".json", args.out + ".md", render)
  if not args.no_doc:
    update_doc(render(res))
  ok = all([res.get("fuzz", {}).get("passed", True),
            res.get("kills", {}).get("survived", 0)
            == res.get("kills", {}).get("killed", -1),
            res.get("kills", {}).get("repeat_identical", True),
            res.get("full_disk", {}).get("ok", True),
            all(c["ok"] for c in res.get("corrupt", []))])
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
