"""Plain PyTorch's side of ``scripts.bench_update`` (runs in the peer venv).

Run from the repository root as
``nice -n 19 <peer venv>/bin/python -m scripts.peers.torch_worker`` and
drive it with ``protocol.Worker``. The model is ``transformers``'
``Qwen2ForCausalLM`` loaded from the directory that divrl's side wrote with
``save_hf`` (``spec["weights_dir"]``), so both sides hold the same weights;
without it, a seeded random model (``info()["differs"]`` says so). Benches:

* ``update_eager`` / ``update_compile``: one optimizer step on
  ``protocol.update_batch``: forward with ``logits_to_keep`` (the response
  positions only, as TRL does), ``log_softmax`` and gather, the on-policy
  GRPO surrogate ``min(rho A, clip(rho) A)`` with ``rho = exp(lp -
  lp.detach())``, token mean, ``backward()``, ``clip_grad_norm_`` and
  ``torch.optim.AdamW``; ``_compile`` wraps the loss (model forward
  included; AOTAutograd compiles its backward) in ``torch.compile``.
* ``forward_eager`` / ``forward_compile``: the response tokens' log-probs
  under ``inference_mode``.

Nothing here imports divrl; only ``scripts.peers.protocol``,
``scripts._bench`` (standard library) and ``trl_worker``'s model helpers
from the project.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scripts import _bench  # noqa: E402
from scripts.peers import protocol  # noqa: E402
from scripts.peers import trl_worker  # noqa: E402


def load_model(spec):
  """``(model, differs)``: the weights divrl wrote, else a random model."""
  path = spec.get("weights_dir")
  if path and os.path.exists(os.path.join(path, "config.json")):
    from transformers import Qwen2ForCausalLM
    trl_worker._check_model_spec(spec)
    model = Qwen2ForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, []
  return trl_worker.random_model(spec), [
      "random weights (no weights_dir from divrl's side): timings only"]


class _Base:
  compiled = False

  def __init__(self, spec):
    self.spec = spec = {**protocol.UPDATE, **spec}
    self.threads = trl_worker._threads(spec)
    self.model, self.differs = load_model(spec)
    x = protocol.update_batch(spec)
    self.prompt_len = x["prompts"].shape[1]
    self.gen_len = x["responses"].shape[1]
    self.ids = torch.from_numpy(np.concatenate(
        [x["prompts"], x["responses"]], axis=1).astype(np.int64))
    self.targets = self.ids[:, self.prompt_len:]
    self.advantages = torch.from_numpy(x["advantages"])[:, None]
    self.tokens = int(x["responses"].size)

  def logprobs(self, ids):
    """``[B,N]`` log-probs of the response tokens (logits of the response
    positions only)."""
    logits = self.model(input_ids=ids,
                        logits_to_keep=self.gen_len + 1).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, ids[:, self.prompt_len:, None]).squeeze(-1)

  def info(self):
    return {"versions": trl_worker._versions(),
            "torch_num_threads": torch.get_num_threads(),
            "attn_implementation": self.model.config._attn_implementation,
            "first_step": self.first_step, "differs": self.differs,
            "api": self.api}


class UpdateEager(_Base):
  api = ("transformers Qwen2ForCausalLM (train mode), log_softmax + gather "
         "of the response positions, on-policy clipped GRPO surrogate, "
         "token mean, backward, clip_grad_norm_, torch.optim.AdamW")

  def __init__(self, spec):
    super().__init__(spec)
    self.model.train()
    spec = self.spec
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.opt = torch.optim.AdamW(self.params, lr=spec["learning_rate"],
                                 eps=1e-8, weight_decay=spec["weight_decay"])
    self.loss = torch.compile(self._loss) if self.compiled else self._loss
    if self.compiled:
      self.api = "torch.compile(loss) [" + self.api + "]"
    first = self._step()
    self.first_step = {"loss": first[0], "grad_norm": first[1]}
    self._step()   # a second call: recompiles that depend on grads settle

  def _loss(self, ids, advantages):
    lp = self.logprobs(ids)
    rho = torch.exp(lp - lp.detach())
    eps = self.spec["epsilon"]
    surrogate = torch.minimum(rho * advantages,
                              rho.clamp(1 - eps, 1 + eps) * advantages)
    return -surrogate.mean()

  def _step(self):
    self.opt.zero_grad(set_to_none=True)
    loss = self.loss(self.ids, self.advantages)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(self.params,
                                          self.spec["max_grad_norm"])
    self.opt.step()
    return float(loss.detach()), float(norm)

  def run(self):
    seconds, (loss, norm) = _bench.timed(self._step)
    if not (np.isfinite(loss) and np.isfinite(norm)):
      raise FloatingPointError(f"non-finite loss {loss} or grad norm {norm}")
    return {"seconds": seconds, "tokens": self.tokens, "loss": loss,
            "grad_norm": norm}


class UpdateCompile(UpdateEager):
  compiled = True


class ForwardEager(_Base):
  api = ("transformers Qwen2ForCausalLM (eval mode) under inference_mode: "
         "log_softmax + gather of the response positions")

  def __init__(self, spec):
    super().__init__(spec)
    self.model.eval()
    self.fn = torch.compile(self.logprobs) if self.compiled else self.logprobs
    if self.compiled:
      self.api = "torch.compile(logprobs) [" + self.api + "]"
    self.first_step = {"logprob_sum": self._forward()}
    self._forward()

  def _forward(self):
    with torch.inference_mode():
      return float(self.fn(self.ids).sum())

  def run(self):
    seconds, value = _bench.timed(self._forward)
    return {"seconds": seconds, "tokens": self.tokens, "value": value}


class ForwardCompile(ForwardEager):
  compiled = True


BENCHES = {"update_eager": UpdateEager, "update_compile": UpdateCompile,
           "forward_eager": ForwardEager, "forward_compile": ForwardCompile}

if __name__ == "__main__":
  protocol.serve(BENCHES)
