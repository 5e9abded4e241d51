"""The update-against-torch benchmark: its batch, its divrl side, its report.

The torch side lives in the peer environment, which CI does not install;
here divrl's benches are checked against a plain-autodiff JAX reference of
the same loss, and the harness runs on tiny shapes with divrl alone.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from divrl.rl.scoring import response_hidden
from scripts import bench_update
from scripts.peers import divrl_worker
from scripts.peers import protocol
from tests.scripts import run_script

SPEC = {**bench_update.PRESETS["tiny"], **protocol.UPDATE,
        **bench_update.QUICK_UPDATE}


def test_update_batch_advantages_match_an_independent_loop():
  x = protocol.update_batch(SPEC)
  g = SPEC["group"]
  assert x["prompts"].shape == (SPEC["rows"], SPEC["prompt_len"])
  assert x["responses"].shape == (SPEC["rows"], SPEC["gen_len"])
  assert x["responses"].min() >= 1
  for i in range(SPEC["rows"]):
    group = [float(r) for r in x["rewards"][(i // g) * g:(i // g + 1) * g]]
    mean = sum(group) / g
    std = (sum((r - mean) ** 2 for r in group) / (g - 1)) ** 0.5
    share = sum(int(t) % 2 == 0 for t in x["responses"][i]) / SPEC["gen_len"]
    assert x["rewards"][i] == pytest.approx(share)
    assert x["advantages"][i] == pytest.approx((share - mean) / (std + 1e-4),
                                               rel=1e-5)
  with pytest.raises(ValueError, match="rows 6 is not a multiple of group"):
    protocol.update_batch(dict(SPEC, rows=6))


def _reference_step(spec):
  """Loss, gradient norm and new parameters of the same step by plain
  autodiff of the full logits (no divrl step code)."""
  graphdef, params, rollout, x = divrl_worker.update_setup(spec)
  adv = jnp.asarray(x["advantages"])[:, None]
  eps = spec["epsilon"]

  def loss(params):
    model = nnx.merge(graphdef, params)
    h = response_hidden(model, rollout.prompt_tokens, rollout.prompt_mask,
                        rollout.tokens, rollout.response_mask)
    logits = jnp.einsum("btd,dv->btv", h, model.unembedding())
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits),
                             rollout.tokens[..., None], -1)[..., 0]
    rho = jnp.exp(lp - jax.lax.stop_gradient(lp))
    surrogate = jnp.minimum(rho * adv, jnp.clip(rho, 1 - eps, 1 + eps) * adv)
    return -jnp.mean(surrogate), jnp.sum(lp)

  (value, lp_sum), grads = jax.value_and_grad(loss, has_aux=True)(params)
  tx = optax.chain(optax.clip_by_global_norm(spec["max_grad_norm"]),
                   optax.adamw(spec["learning_rate"], eps=1e-8,
                               weight_decay=spec["weight_decay"]))
  updates, _ = tx.update(grads, tx.init(params), params)
  return (float(value), float(optax.tree.norm(grads)), float(lp_sum),
          optax.apply_updates(params, updates))


def test_divrl_update_and_forward_are_the_reference_step(tmp_path):
  spec = dict(SPEC, weights_dir=str(tmp_path / "w"), learning_rate=1e-3)
  loss, norm, lp_sum, new_params = _reference_step(spec)
  update = divrl_worker.Update(spec)
  # The first run() (in __init__) took one step from the seeded weights.
  assert update.first["loss"] == pytest.approx(loss, abs=1e-6)
  assert update.first["grad_norm"] == pytest.approx(norm, rel=1e-4)
  assert norm > spec["max_grad_norm"]          # so the clip is exercised
  # Adam's first step is about lr * sign(g): equal within a tenth of a step
  # (gradients near 0 differ in float32 round-off, and eps scales those).
  for a, b in zip(jax.tree.leaves(update.params),
                  jax.tree.leaves(new_params)):
    np.testing.assert_allclose(a, b, atol=0.1 * spec["learning_rate"])
  forward = divrl_worker.Forward(spec)
  assert forward.first["value"] == pytest.approx(lp_sum, rel=1e-5)
  # The weights the torch side loads are these.
  assert (tmp_path / "w" / "config.json").exists()


def test_targets_and_agreement_from_a_result():
  def comp(name, rows):
    return {"name": name, "rows": rows}

  def row(median, ratio=None, first=None):
    r = {"seconds": {"median": median}}
    if ratio is not None:
      r["ratio"] = {"median": ratio}
    if first is not None:
      r["info"] = {"first_step": first}
    return r

  res = {"comparisons": [
      comp("update_tiny", {"divrl/update": row(1.0, first={"grad_norm": 2.0}),
                           "torch/update_compile": row(
                               0.8, 0.8, first={"grad_norm": 2.002})}),
      comp("forward_tiny", {"divrl/forward": row(0.25),
                            "torch/forward_compile": row(0.4, 1.6)}),
      comp("grpo_step", {"divrl/grpo_step": row(1.0),
                         "trl/grpo_step": row(2.0, 2.0),
                         "trl/grpo_step_defaults": {"error": "x"}})]}
  t = {x["target"]: x for x in bench_update.targets(res)}
  fast = t["tiny: the update at least as fast as torch.compile"]
  assert (fast["value"], fast["met"]) == (0.8, False)
  ratio = t["tiny: the update at most 3x the forward"]
  assert (ratio["value"], ratio["met"]) == (4.0, False)
  assert ratio["note"] == "torch.compile's: 2.00"
  assert t["small25m: the update at least as fast as torch.compile"][
      "met"] is None
  assert t["the GRPO step at least 1.5x TRL's matched (KL on)"]["met"]
  assert t["the GRPO step at least 1x TRL's defaults"]["met"] is None
  (line,) = bench_update.agreement(res["comparisons"][0])
  assert "grad_norm 2.002 vs divrl's 2" in line and "1.0e-03" in line


def test_quick_run_with_divrl_alone(tmp_path):
  out = tmp_path / "u.json"
  proc = run_script("scripts.bench_update", "--quick", "--sides", "divrl",
                    "--repeats", "2", "--out", str(out))
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  assert [c["name"] for c in res["comparisons"]] == [
      "update_tiny", "forward_tiny", "grpo_step"]
  for c in res["comparisons"]:
    assert "weights_dir" not in c["spec"]
    for label, r in c["rows"].items():
      if r["side"] == "divrl":
        assert "error" not in r, (label, r.get("error"))
        assert len(r["seconds"]["values"]) == 2
      else:
        assert r["error"] == "not requested (--sides)"
  t = {x["target"]: x for x in res["targets"]}
  measured = t["tiny: the update at most 3x the forward"]
  assert measured["value"] > 1 and measured["met"] in (True, False)
  assert t["tiny: the update at least as fast as torch.compile"][
      "met"] is None
  text = (tmp_path / "u.md").read_text()
  assert "## Targets" in text and "not measured" in text
  (tmp_path / "u.md").unlink()
  proc = run_script("scripts.bench_update", "--render-only", "--out",
                    str(out))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "u.md").read_text() == text
