"""Config safety: out-of-range or wrong-typed part hyperparameters are refused
when the objective is built from its config, before anything is traced.

Parts declare the domains of their numeric hyperparameters next to their
definition (``register(..., domains=...)``, see ``divrl.registry``). The
tests below run over every declared domain, read from the registry, so a
new declaration is covered without editing a list.
"""

import inspect
import math
import re

import pytest

import divrl
from divrl import docgen, registry
from tests.conftest import REQUIRED, one_part_config

BASE = {"advantage": "grpo", "surrogate": "ppo_clip"}

# Probe values: each domain is checked to refuse exactly those outside it.
PROBES = (-1e9, -2.0, -1.0, -0.5, -0.1, 0.0, 1e-9, 0.1, 0.5, 1.0, 1.5, 2.0,
          1e9, -1, 0, 1, 2, 7, math.inf, -math.inf, math.nan)


def _slot(kind, name):
  if kind == "transform":
    return "objective.transforms[0]"
  if kind == "token_weight":
    return f"objective.token_weights.{name}"
  if kind == "regularizer":
    return f"objective.regularizers.{name}"
  return f"objective.{kind}"


def _config(kind, name, **values):
  """``BASE`` with part ``name`` in its slot, set up with ``REQUIRED`` and
  ``values``."""
  return one_part_config(kind, name, BASE, values=values)


def _types(kind, name, key):
  """The type names ``key`` accepts (None: any), as the registry reads them
  from the annotation or the default."""
  fn = registry.lookup(kind, name)
  return registry._expected_types(fn, key)  # pylint: disable=protected-access


def _inside(kind, name, key, domain, value):
  """Whether ``value`` is a valid setting: its type, then its domain."""
  types = _types(kind, name, key)
  if isinstance(value, float) and (
      domain.integer or types is not None and "float" not in types):
    return False
  return math.isfinite(value) and bool(domain.test(value))


DOMAINS = [(kind, name, key, domain)
           for kind in registry.KINDS for name in docgen.library_parts(kind)
           for key, domain in sorted(registry.declaration(
               registry.lookup(kind, name)).domains.items())]


def test_domains_are_declared_across_the_library():
  parts = {(kind, name) for kind, name, _, _ in DOMAINS}
  assert len(parts) >= 100 and len(DOMAINS) >= 250, (len(parts),
                                                      len(DOMAINS))


@pytest.mark.parametrize("kind,name,key,domain", DOMAINS,
                         ids=[f"{n}-{k}" for _, n, k, _ in DOMAINS])
def test_each_domain_refuses_exactly_the_values_outside_it(kind, name, key,
                                                           domain):
  where = re.escape(f"{_slot(kind, name)} ({name})")
  refused = 0
  for value in PROBES:
    if _inside(kind, name, key, domain, value):
      divrl.from_config(_config(kind, name, **{key: value}))
    else:
      with pytest.raises(ValueError, match=rf"^{where}: {key} must be"):
        divrl.from_config(_config(kind, name, **{key: value}))
      refused += 1
  assert 3 <= refused < len(PROBES)  # at least +-inf and nan


@pytest.mark.parametrize("kind", registry.KINDS)
def test_every_default_passes_when_given_explicitly(kind):
  for name in docgen.library_parts(kind):
    values = {k: v for k, v in registry.hyperparameters(
        registry.lookup(kind, name)).items()
              if v is not inspect.Parameter.empty}
    values.update(REQUIRED.get((kind, name), {}))
    divrl.from_config(_config(kind, name, **values))


@pytest.mark.parametrize("kind", registry.KINDS)
def test_a_wrong_typed_value_is_refused(kind):
  checked = 0
  for name in docgen.library_parts(kind):
    for key in registry.hyperparameters(registry.lookup(kind, name)):
      types = _types(kind, name, key)
      if types is None:
        continue  # a default of None and no annotation: any type
      if "float" in types or "int" in types:
        wrong = ["0.5", True]  # a string; a bool is not a number
        if "float" not in types:
          wrong.append(2.0)    # a float where an int is expected
      elif types == ["bool"]:
        wrong = [1, "yes"]
      elif types == ["str"]:
        wrong = [1.0, None]
      else:
        continue
      for value in wrong:
        with pytest.raises(ValueError, match="^" + re.escape(
            f"{_slot(kind, name)} ({name}): {key} must be")):
          divrl.from_config(_config(kind, name, **{key: value}))
        checked += 1
  assert checked


def test_examples_of_the_issue():
  cases = [
      (_config("surrogate", "ppo_clip", eps_low=-0.1),
       r"objective.surrogate \(ppo_clip\): eps_low must be >= 0, got -0.1"),
      (_config("surrogate", "cispo", eps_high=-1.0), "eps_high must be >= 0"),
      (_config("surrogate", "gspo_token", eps_low=-1e-4),
       "eps_low must be >= 0"),
      (_config("regularizer", "sampled_f_divergence", divergence="alpha",
               alpha=1.0), r"alpha must be a number not in \{0, 1\}"),
      (_config("regularizer", "dph_rehearsal", divergence="alpha",
               alpha=0.0), r"alpha must be a number not in \{0, 1\}"),
      (_config("advantage", "pkpo", k=0), "k must be >= 1, got 0"),
      (_config("advantage", "passk_closed_form", k=2.0),
       "k must be int, got float"),
      (_config("advantage", "cvar", alpha=0.0), r"alpha must be in \(0, 1\]"),
      (_config("advantage", "riskpo", beta=1.0), r"beta must be in \(0, 1\)"),
      (_config("surrogate", "rover", temperature=0.0),
       "temperature must be > 0"),
      (_config("surrogate", "trajectory_balance", temperature=-1.0),
       "temperature must be > 0"),
      (_config("regularizer", "kl", coef=-0.1),
       r"objective.regularizers.kl \(kl\): coef must be >= 0, got -0.1"),
      (_config("transform", "kl_in_reward", coef=-0.001),
       r"objective.transforms\[0\] \(kl_in_reward\): coef must be >= 0"),
      (_config("regularizer", "kl", coef=math.inf), "coef must be finite"),
      (_config("regularizer", "entropy", coef=math.nan),
       "coef must be finite"),
      (_config("regularizer", "kl", coef="0.1"), "coef must be a number"),
      (_config("surrogate", "ppo_clip", eps_high="0.28"),
       "eps_high must be float, got str"),
      (_config("surrogate", "ppo_clip", eps_low=None),
       "eps_low must be float, got NoneType"),
      # NaN is refused for any float, declared domain or not.
      (_config("surrogate", "gspo_token", max_log_ratio=math.nan),
       "max_log_ratio must be a number, got nan"),
  ]
  for config, match in cases:
    with pytest.raises(ValueError, match=match):
      divrl.from_config(config)


def test_valid_settings_still_build():
  for config in [
      _config("surrogate", "ppo_clip", log_ratio_clip=None, eps_high=0.28,
              clip_ratio_c=3),     # None where "float | None"; an int float
      _config("regularizer", "entropy", coef=-0.01),  # a bonus: any sign
      _config("advantage", "entropic_risk", gamma=-2.0),
      _config("advantage", "grpo", eps=0.0, ddof=0),
      _config("transform", "rollout_rejection", criteria="token_k1,seq_max_k3"),
      _config("transform", "rollout_rejection", criteria=["token_k1"]),
  ]:
    divrl.from_config(config)
  divrl.Objective.from_config(divrl.recipes.get("clip_cov"))


def test_domain_helpers():
  at = registry
  cases = [
      (at.at_least(0), {0: True, -0.1: False, 5: True}, ">= 0"),
      (at.above(1), {1: False, 1.5: True}, "> 1"),
      (at.at_most(0), {0: True, 0.1: False}, "<= 0"),
      (at.between(0, 1), {0: True, 1: True, 1.1: False}, "in [0, 1]"),
      (at.between(0, 1, low_open=True), {0: False, 1: True}, "in (0, 1]"),
      (at.between(0, 1, high_open=True), {0: True, 1: False}, "in [0, 1)"),
      (at.excluding(0, 1), {0: False, 1: False, 0.5: True, -3: True},
       "a number not in {0, 1}"),
      (at.integer(1), {1: True, 0: False}, ">= 1"),
  ]
  for domain, expect, text in cases:
    assert domain.text == text
    for value, ok in expect.items():
      assert (domain.problem(value) is None) == ok, (text, value)
  assert "an int" in registry.integer(1).problem(1.0)
  assert "finite" in registry.at_least(0).problem(math.inf)


def test_declarations_are_checked_when_made():
  def part(batch, *, scale: float = 1.0, steps: int = 3):
    del steps
    return batch * scale

  with pytest.raises(ValueError, match="not a hyperparameter"):
    registry.declare(domains={"scales": registry.above(0)})(part)
  with pytest.raises(ValueError, match="the default of scale must be > 2"):
    registry.declare(domains={"scale": registry.above(2)})(part)
  with pytest.raises(ValueError, match="must be a divrl.registry.Domain"):
    registry.declare(domains={"scale": lambda x: x > 0})
  with pytest.raises(ValueError, match="only a regularizer"):
    registry.register("surrogate", "__domain_test__",
                      domains={"coef": registry.at_least(0)})(part)
  declared = registry.declare(domains={"scale": registry.above(0),
                                       "steps": registry.integer(1)})(part)
  bound = registry.bind("surrogate", declared, {"scale": 2.0}, "part",
                        where="objective.surrogate")
  assert bound(1.0) == 2.0
  assert registry.declaration(bound).domains == declared.declaration.domains
  with pytest.raises(ValueError, match=r"^objective.surrogate \(part\):"
                     " scale must be > 0, got 0.0"):
    registry.bind("surrogate", declared, {"scale": 0.0}, "part",
                  where="objective.surrogate")
  with pytest.raises(ValueError, match=r"^surrogate \(part\): steps must be"
                     " int, got float"):
    registry.bind("surrogate", declared, {"steps": 2.0}, "part")
