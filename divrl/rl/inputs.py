"""What the trainer provides for each input a part may declare.

Parts declare their inputs next to their definition
(``divrl.registry.declare``); this table says where the trainer gets each
one and which config key provides it. ``check`` compares the two when a run
is built, so that a part whose input the experiment cannot provide fails
before the first step, with an error that names the part, the input and the
config key.
"""

from __future__ import annotations

import dataclasses

from divrl.objective import Objective
from divrl.types import INPUTS


@dataclasses.dataclass(frozen=True)
class Provider:
  """How the trainer fills one input.

  Attributes:
    source: where the values come from (documentation).
    config_key: the config key that provides it, or None when it is always
      available.
  """

  source: str
  config_key: str | None = None


PROVIDERS = {
    "old_logprobs": Provider("the scoring forward of the behaviour policy"),
    "ref_logprobs": Provider("the reference forward"),
    "rollout_logprobs": Provider("the sampler"),
    "entropy": Provider("divrl.ops.token_statistics"),
    "top_p_entropy": Provider("divrl.ops.token_statistics, nucleus"
                              " statistics.top_p"),
    "sum_pi_squared": Provider("divrl.ops.token_statistics"),
    "vocab_mean_logprob": Provider("divrl.ops.token_statistics"),
    "old_vocab_mean_logprob": Provider("divrl.ops.token_statistics in the"
                                       " scoring forward"),
    "min_p_logprob": Provider("divrl.ops.token_statistics, threshold"
                              " statistics.min_p"),
    "old_min_p_logprob": Provider("divrl.ops.token_statistics in the"
                                  " scoring forward, threshold"
                                  " statistics.min_p"),
    "reverse_kl": Provider("divrl.ops.token_statistics with the reference"
                           " hidden states"),
    "forward_kl": Provider("divrl.ops.token_statistics with the reference"
                           " hidden states"),
    "js": Provider("divrl.ops.token_statistics with the reference hidden"
                   " states"),
    "alpha_divergence": Provider("divrl.ops.token_statistics with the"
                                 " reference hidden states, order"
                                 " statistics.alpha"),
    "chi_square": Provider("divrl.ops.token_statistics with the reference"
                           " hidden states"),
    "total_variation": Provider("divrl.ops.token_statistics with the"
                                " reference hidden states"),
    "hellinger": Provider("divrl.ops.token_statistics with the reference"
                          " hidden states"),
    "embeddings": Provider("the policy's final hidden states, averaged over"
                           " the response tokens"),
    "sample_source": Provider("the sampler (0 = policy, 1 = reference)"),
    "solution_ids": Provider("the task verifier's canonical forms"),
    "task_ids": Provider("the run's task: 0 for every sample (a run trains"
                         " on one task)"),
    "token_rewards": Provider("no divrl task gives per-token rewards",
                              "task.name"),
    "values": Provider("the value head (added to the decoder when a part"
                       " reads values)"),
    "old_values": Provider("the value head in the scoring forward"),
    "baseline_rewards": Provider("a greedy decode of each prompt, verified"),
    "truncated": Provider("the sampler"),
    "tokens": Provider("the sampler"),
    "reward_components": Provider("the task's reward_components", "task.name"),
    "reference_samples": Provider("samples of the reference policy",
                                  "sampling.ref_share"),
}
assert set(PROVIDERS) == set(INPUTS), sorted(set(INPUTS) ^ set(PROVIDERS))


def provided(config, task) -> frozenset[str]:
  """The inputs a run with ``config`` and ``task`` can serve."""
  out = set(INPUTS) - {"token_rewards"}  # no divrl task gives token rewards
  if len(getattr(task, "REWARD_COMPONENTS", ())) < 2:
    out.discard("reward_components")
  if not config.sampling.ref_share > 0:
    out.discard("reference_samples")
  return frozenset(out)


def missing(objective: Objective, available) -> list[tuple[str, str, str]]:
  """``(part, input, config key)`` for every declared input not in
  ``available``."""
  return [(part, name, PROVIDERS[name].config_key)
          for name, readers in sorted(objective.requires.readers.items())
          if name not in available for part in readers]


_HINTS = {
    "token_rewards": "no task in divrl gives per-token rewards; choose a task"
                     " that does (config key {key})",
    "reward_components": "the task defines fewer than two reward components;"
                         " choose a task that defines several (config key"
                         " {key})",
    "reference_samples": "set {key} > 0 so that part of each group is sampled"
                         " from the reference policy",
}


def check(objective: Objective, config, task) -> None:
  """Raises a ValueError if the run cannot provide a declared input.

  The message names each part, the input it reads and the config key that
  provides it.
  """
  problems = missing(objective, provided(config, task))
  lines = [f"{part} reads {name!r}, which this run does not provide: "
           + _HINTS.get(name, "set config key {key}").format(key=key) + "."
           for part, name, key in problems]
  requires = objective.requires
  if "values" not in requires.update:
    # The value head starts at zero and only an update-stage part that reads
    # "values" (the value loss) trains it; without one, GAE silently runs
    # with a critic that predicts 0 for every state.
    lines += [f"{part} reads {name!r} from the value head, but no part"
              " trains the head: add the 'value_loss' regularizer (config"
              " key objective.regularizers, e.g. {'value_loss': {'coef':"
              " 0.5}}) or use the 'ppo_gae' recipe."
              for name in ("values", "old_values")
              for part in requires.readers.get(name, ())]
  if not lines:
    return
  raise ValueError("the objective needs inputs the experiment does not"
                   " provide:\n  " + "\n  ".join(lines))
