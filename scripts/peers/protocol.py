"""How ``scripts.bench_peers`` talks to the processes that run each library.

Each library runs in its own worker process (divrl in the project's
``.venv``, tunix and TRL in ``.venv-peers``), started once and kept warm, so
that the parent can run the sides of a pair in alternation: side A one
repetition, side B one repetition, A, B, ... While one side runs, the others
wait on their pipe, so the sides never share the cores and a slow drift of
the machine hits both alike. This module is standard library only, so that
every virtual environment can import it.

Messages are JSON lines. The parent writes to the worker's stdin::

  {"op": "setup", "bench": NAME, "spec": {...}}   build, compile, warm up
  {"op": "run"}                                   one timed repetition
  {"op": "close"}                                 drop the current bench
  {"op": "quit"}

and the worker answers each with one line on the protocol pipe::

  {"ok": true, "info": {...}, "setup_s": s}        after setup
  {"ok": true, "result": {"seconds": s, ...}}      after run
  {"ok": false, "error": "..."}                    anything it cannot do

A peer that cannot run a configuration answers ``ok: false`` with the
reason, and the parent keeps the row with that reason rather than dropping
it. The worker's own stdout is redirected to its stderr (libraries print),
so the protocol pipe carries nothing but answers.

A bench is a class: ``Bench(spec)`` builds and warms up (compiles), ``info()``
says what the side actually ran (versions, settings that differ from the
spec), ``run()`` does one repetition and returns ``{"seconds": wall time,
...}`` with optional ``"phases": {name: seconds}`` and other numbers.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# The model every side builds: Qwen2's architecture (GQA attention with q/k/v
# bias, SwiGLU MLP, RMSNorm, RoPE, tied embeddings) at a CPU-sized width.
# Every side gets exactly these numbers.
MODEL = {
    "vocab_size": 8192, "hidden_size": 512, "num_layers": 6,
    "num_heads": 8, "num_kv_heads": 4, "head_dim": 64,
    "intermediate_size": 1792, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "qkv_bias": True,
    "dtype": "float32",
}

# One GRPO step: ``prompts`` random prompts of ``prompt_len`` tokens (no
# padding), ``group`` samples each of exactly ``gen_len`` tokens (no stop
# token), a reward computed on the host from the tokens, one optimizer step
# (one epoch, one minibatch) of the clipped GRPO surrogate with a k3 KL to
# the reference.
GRPO = {
    "prompts": 4, "group": 8, "prompt_len": 32, "gen_len": 64,
    "temperature": 1.0, "epsilon": 0.2, "kl_coef": 0.04,
    "learning_rate": 1e-6, "seed": 0,
}


def reward(tokens) -> list[float]:
  """The benchmark's reward: the share of even token ids in each response.

  Every side scores with this one function (a host-side Python loop over
  the ``[B,N]`` token ids, like a verifier), so that rewards differ across
  samples and the group advantages are not all zero.
  """
  return [sum(1 for t in row if int(t) % 2 == 0) / max(len(row), 1)
          for row in tokens]


class Channel:
  """The worker's end: answers go to a private copy of the original stdout;
  fd 1 then points at stderr, so that prints from any library do not
  corrupt the protocol."""

  def __init__(self):
    self._out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

  def send(self, message: Mapping[str, Any]) -> None:
    self._out.write(json.dumps(message) + "\n")
    self._out.flush()


def serve(benches: Mapping[str, Callable[[dict], Any]]) -> None:
  """Runs a worker: reads requests from stdin until ``quit`` or EOF."""
  channel = Channel()
  bench = None
  for line in sys.stdin:
    if not line.strip():
      continue
    request = json.loads(line)
    op = request.get("op")
    try:
      if op == "quit":
        channel.send({"ok": True})
        return
      if op == "close":
        bench = None
        channel.send({"ok": True})
      elif op == "setup":
        name = request["bench"]
        if name not in benches:
          raise NotImplementedError(
              f"this side has no bench {name!r} (it has "
              f"{sorted(benches)})")
        bench = None
        t0 = time.perf_counter()
        bench = benches[name](dict(request.get("spec", {})))
        info = bench.info() if hasattr(bench, "info") else {}
        channel.send({"ok": True, "info": info,
                      "setup_s": time.perf_counter() - t0})
      elif op == "run":
        if bench is None:
          raise RuntimeError("run before setup")
        result = bench.run()
        if "seconds" not in result:
          raise RuntimeError("a bench's run() must return 'seconds'")
        channel.send({"ok": True, "result": result})
      else:
        raise ValueError(f"unknown op {op!r}")
    except Exception as e:  # noqa: BLE001 - reported to the parent
      channel.send({"ok": False, "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(limit=8)})


OBJECTIVE = {"batch": 64, "length": 256, "group": 8, "epsilon": 0.2,
             "kl_coef": 0.04, "seed": 0}


def objective_inputs(spec: Mapping[str, Any]) -> dict[str, Any]:
  """The fixed ``[B,T]`` arrays of the objective-alone bench (NumPy).

  Every side draws the same arrays from ``spec["seed"]``: log-probs of the
  current, old and reference policies (float32, within 0.1 of each other),
  rewards ``[B]`` in groups of ``spec["group"]`` consecutive rows, and a
  response mask with lengths between T/4 and T.
  """
  import numpy as np
  b, t, g = spec["batch"], spec["length"], spec["group"]
  if b % g:
    raise ValueError(f"batch {b} is not a multiple of group {g}")
  rng = np.random.default_rng(spec["seed"])
  old = -rng.gamma(2.0, 1.0, size=(b, t)).astype(np.float32)
  logprobs = (old + rng.uniform(-0.1, 0.1, (b, t))).astype(np.float32)
  ref = (old + rng.uniform(-0.1, 0.1, (b, t))).astype(np.float32)
  rewards = rng.integers(0, 2, size=b).astype(np.float32)
  lengths = rng.integers(t // 4, t + 1, size=b)
  mask = np.arange(t)[None, :] < lengths[:, None]
  return {"logprobs": logprobs, "old_logprobs": old, "ref_logprobs": ref,
          "rewards": rewards, "mask": mask, "group": g}


def objective_reference(spec: Mapping[str, Any]) -> float:
  """The objective-alone loss in plain NumPy (float64): what every side
  must compute on ``objective_inputs(spec)``.

  GRPO advantages ``(r - mean_g) / (std_g + 1e-4)`` (the unbiased std,
  ``ddof=1``, over the group: TRL's convention), the clipped surrogate
  ``min(rho A, clip(rho, 1-eps, 1+eps) A)``
  with ``rho = exp(logprobs - old_logprobs)``, the k3 KL ``exp(ref - lp) -
  (ref - lp) - 1`` weighted by ``kl_coef``, and the token mean over the
  batch's response tokens of ``-(surrogate - kl_coef * k3)``.
  """
  import numpy as np
  x = objective_inputs(spec)
  g = x["group"]
  r = x["rewards"].astype(np.float64).reshape(-1, g)
  std = r.std(1, ddof=1, keepdims=True)
  adv = ((r - r.mean(1, keepdims=True)) / (std + 1e-4)).reshape(-1, 1)
  lp = x["logprobs"].astype(np.float64)
  rho = np.exp(lp - x["old_logprobs"])
  eps = spec["epsilon"]
  surrogate = np.minimum(rho * adv, np.clip(rho, 1 - eps, 1 + eps) * adv)
  d = x["ref_logprobs"] - lp
  k3 = np.exp(d) - d - 1
  per_token = -(surrogate - spec["kl_coef"] * k3)
  m = x["mask"]
  return float((per_token * m).sum() / m.sum())


# The update and the forward alone, on a fixed batch (the update-speed
# comparison): ``rows`` sequences of ``prompt_len`` prompt and ``gen_len``
# response tokens (no padding), in groups of ``group``; the on-policy GRPO
# loss (one pass, so the ratio is 1 and the clip inactive, as in a trainer's
# first epoch), the token mean, gradient clipping at ``max_grad_norm`` and
# AdamW.
UPDATE = {"rows": 64, "group": 8, "prompt_len": 32, "gen_len": 32,
          "epsilon": 0.2, "learning_rate": 1e-6, "weight_decay": 0.01,
          "max_grad_norm": 1.0, "seed": 0}


def update_batch(spec: Mapping[str, Any]) -> dict[str, Any]:
  """The fixed batch of the update/forward benches (NumPy): ``prompts``
  ``[B,P]`` and ``responses`` ``[B,N]`` int32 ids in ``[1, vocab)``,
  ``rewards`` ``[B]`` (``reward`` of the responses) and ``advantages``
  ``[B]`` (GRPO: ``(r - mean_g) / (std_g + 1e-4)``, ``ddof=1``, as in
  ``objective_reference``)."""
  import numpy as np
  b, g = spec["rows"], spec["group"]
  if b % g:
    raise ValueError(f"rows {b} is not a multiple of group {g}")
  rng = np.random.default_rng(spec["seed"])
  v = spec["vocab_size"]
  prompts = rng.integers(1, v, size=(b, spec["prompt_len"])).astype(np.int32)
  responses = rng.integers(1, v, size=(b, spec["gen_len"])).astype(np.int32)
  rewards = np.asarray(reward(responses.tolist()), np.float32)
  r = rewards.astype(np.float64).reshape(-1, g)
  adv = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True)
                                           + 1e-4)
  return {"prompts": prompts, "responses": responses, "rewards": rewards,
          "advantages": adv.reshape(-1).astype(np.float32)}


class Worker:
  """The parent's end: one worker process and its pipes."""

  def __init__(self, name: str, argv: Sequence[str], *, cwd: str,
               env: Mapping[str, str] | None = None, log=None):
    import subprocess
    self.name = name
    self.proc = subprocess.Popen(
        list(argv), cwd=cwd, env=None if env is None else dict(env),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        text=True, bufsize=1)

  def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
    """Sends one request and waits for its answer."""
    if self.proc.poll() is not None:
      return {"ok": False,
              "error": f"{self.name} worker exited ({self.proc.returncode})"}
    self.proc.stdin.write(json.dumps(message) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      return {"ok": False, "error": f"{self.name} worker exited "
                                    f"({self.proc.returncode}) without an "
                                    "answer; see its log"}
    return json.loads(line)

  def setup(self, bench: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return self.request({"op": "setup", "bench": bench, "spec": dict(spec)})

  def run(self) -> dict[str, Any]:
    return self.request({"op": "run"})

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.request({"op": "quit"})
      finally:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
