"""divrl.tables: rows to verdicts, results files, and the support metrics.

The verdict machinery is checked on synthetic runs whose answer is known: a
planted effect (reproduced), a planted null (inconclusive) and a planted
reversal (not reproduced), each through the same path a table's runs take
(rows -> ``outcomes`` -> the results file).
"""

import math

import numpy as np
import pytest

from divrl import tables, verdicts


def _table(**kw):
  defaults = dict(
      name="synthetic", title="Table S: synthetic", claim="A claim.",
      protocol="Synthetic rows.", methods=("base", "effect", "null",
                                           "reversal"),
      claims=(tables.Claim("effect", "pass@1", "effect", "base", "greater"),
              tables.Claim("null", "pass@1", "null", "base", "greater"),
              tables.Claim("reversal", "pass@1", "reversal", "base",
                           "greater"),
              tables.Claim("lower is claimed", "distinct", "effect", "base",
                           "less")),
      seeds=6)
  defaults.update(kw)
  return tables.Table(**defaults)


def _rows(seeds=6, rng_seed=0):
  """Per seed a base value b_s (varying a lot between seeds, as bases do);
  the effect method is b_s + 0.2, the null b_s + tiny noise of both signs,
  the reversal b_s - 0.2. ``distinct`` falls under the effect method."""
  rng = np.random.default_rng(rng_seed)
  rows = []
  for s in range(seeds):
    b = 0.3 + 0.2 * rng.random()
    noise = rng.normal(0, 0.01, size=3)
    values = {"base": b, "effect": b + 0.2 + noise[0],
              "null": b + (0.02 if s % 2 else -0.02) + noise[1] * 0.1,
              "reversal": b - 0.2 + noise[2]}
    for m, v in values.items():
      rows.append({"table": "synthetic", "method": m, "seed": s,
                   "key": f"{m}{s}", "steps": 10, "commit": "abc",
                   "dirty": False, "wall_time": 1.0, "machine": "test",
                   "pass@1": v, "pass@2": min(1.0, 2 * v),
                   "distinct": 3.0 - (1.0 if m == "effect" else 0.0)
                   + 0.1 * s})
  return rows


def test_known_effect_null_and_reversal():
  out = tables.outcomes(_table(), _rows())
  assert [o.verdict for o in out] == ["reproduced", "inconclusive",
                                      "not reproduced", "reproduced"]
  effect = out[0]
  assert effect.seeds == 6
  assert effect.lo > 0 and abs(effect.difference - 0.2) < 0.02
  # The interval is the t-interval of the paired differences.
  rows = _rows()
  d = [r["pass@1"] for r in rows if r["method"] == "effect"]
  b = [r["pass@1"] for r in rows if r["method"] == "base"]
  assert (effect.difference, effect.lo, effect.hi) == pytest.approx(
      verdicts.paired_t_interval(d, b))


def test_pairing_is_by_seed_not_row_order():
  rows = _rows()
  shuffled = [rows[i] for i in np.random.default_rng(1).permutation(
      len(rows))]
  a = tables.outcomes(_table(), rows)
  b = tables.outcomes(_table(), shuffled)
  assert [(o.difference, o.lo, o.hi) for o in a] == [
      (o.difference, o.lo, o.hi) for o in b]


def test_unpaired_differences_would_be_inconclusive():
  # The seed-to-seed spread of the base (0.2) dwarfs the null's +-0.02, and
  # the effect is found only because pairing removes that spread: an
  # unpaired interval on the same numbers is much wider.
  rows = _rows()
  d = np.array([r["pass@1"] for r in rows if r["method"] == "effect"])
  b = np.array([r["pass@1"] for r in rows if r["method"] == "base"])
  _, lo, hi = verdicts.paired_t_interval(d, b)
  paired_width = hi - lo
  unpaired_width = 2 * 2.571 * math.sqrt(d.var(ddof=1) / 6
                                         + b.var(ddof=1) / 6)
  assert unpaired_width > 5 * paired_width


def test_one_seed_gives_no_verdict():
  out = tables.outcomes(_table(), _rows(seeds=1))
  assert all(isinstance(o, str) and "at least 2 seeds" in o for o in out)


def test_markdown_names_protocol_commits_claims_and_verdicts():
  table = _table()
  text = tables.markdown(table, _rows(), protocol_commit="p123",
                         run_commits=["r1", "r1", "r2"], command="cmd",
                         wall_time=120.0, machine="cpu")
  for needle in ("# Table S: synthetic", "Synthetic rows.",
                 "protocol commit: `p123`", "`r1`, `r2`", "command: `cmd`",
                 "2.0 minutes", "`pass@1(effect) > pass@1(base)`",
                 "`distinct(effect) < distinct(base)`",
                 "verdict: **reproduced**", "verdict: **inconclusive**",
                 "verdict: **not reproduced**", "paired t-interval"):
    assert needle in text, needle
  # The summary cell of the base: the mean and its t-interval.
  b = [r["pass@1"] for r in _rows() if r["method"] == "base"]
  mean, lo, hi = verdicts.mean_interval(b)
  assert f"| base | {mean:.3f} [{lo:.3f}, {hi:.3f}]" in text
  assert "Quick run" not in text
  assert "Quick run" in tables.markdown(
      table, _rows(), protocol_commit="p", run_commits=["r"], command="c",
      wall_time=1.0, machine="m", quick=True)


def test_markdown_marks_a_column_a_method_lacks():
  rows = _rows(seeds=2)
  for r in rows:
    if r["method"] == "base":
      r["rare_found"] = 0.5
  text = tables.markdown(_table(claims=()), rows, protocol_commit="p",
                         run_commits=["r"], command="c", wall_time=1.0,
                         machine="m")
  assert "| effect |" in text and "rare_found" in text
  line = next(l for l in text.splitlines() if l.startswith("| effect |"))
  assert line.rstrip().endswith("| - |")


def test_csv_round_trip(tmp_path):
  rows = _rows(seeds=2)
  rows[0]["extra"] = 1.5   # a column only some rows have
  path = tmp_path / "t.csv"
  tables.write_csv(path, rows)
  back = tables.read_csv(path)
  assert len(back) == len(rows)
  for r, b in zip(rows, back):
    for k, v in r.items():
      if isinstance(v, float):
        assert b[k] == pytest.approx(v)
      elif k in ("seed", "steps"):
        assert b[k] == v
      else:
        assert b[k] == v
  assert back[1]["extra"] == ""
  # The verdicts from the CSV are those from the rows.
  a = tables.outcomes(_table(claims=_table().claims[:3]), rows)
  c = tables.outcomes(_table(claims=_table().claims[:3]),
                      [{k: v for k, v in r.items() if k != "extra"}
                       for r in back])
  assert [o.verdict for o in a] == [o.verdict for o in c]


def test_plot_is_written(tmp_path):
  rows = _rows(seeds=3)
  curves = [{"method": r["method"], "seed": r["seed"], "step": step,
             "token_entropy": 1.0 - 0.001 * step, "distinct": 2.0}
            for r in rows for step in (0, 50, 100)]
  path = tables.save_plot(tmp_path / "p.png", _table(), rows, curves)
  assert path.stat().st_size > 10_000
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pass_ks_is_the_common_set():
  rows = [{"pass@1": 0, "pass@2": 0, "pass@4": 0, "pass@1_early": 0},
          {"pass@1": 0, "pass@2": 0}]
  assert tables.pass_ks(rows) == [1, 2]


def test_support_metrics():
  sols = {"base": [["a", "b"], [], ["x"]],
          "final": [["b", "c", "d"], ["y"], ["x"]]}
  m = tables.support_metrics(sols)
  # new: {c, d}, {y}, {} -> (2 + 1 + 0) / 3; kept: 1/2 and 1/1 over the two
  # prompts where the base found any.
  assert m["new_solutions"] == pytest.approx(1.0)
  assert m["base_kept"] == pytest.approx(0.75)
  with pytest.raises(ValueError, match="solutions"):
    tables.support_metrics({"base": [[]], "final": [[], []]})


def test_row_of_a_record():
  record = {"key": "k", "commit": "c", "dirty": False, "wall_time": 12.34,
            "machine": "m",
            "evals": [[0, {"eval/pass@1": 0.1, "eval/kl_base_k3": 0.0,
                           "eval/kl_base_k1": 0.0}],
                      [50, {"eval/pass@1": 0.3, "eval/kl_base_k3": 0.5,
                            "eval/kl_base_k1": 0.4}]],
            "solutions": {"base": [["a"]], "final": [["a", "b"]]},
            "extras": {"grad_var": 2}}
  row = tables.row_of(record, table="t", method="m", seed=3)
  assert row["pass@1"] == 0.3 and row["kl_base"] == 0.5
  assert "kl_base_k1" not in row
  assert row["steps"] == 50 and row["seed"] == 3 and row["grad_var"] == 2.0
  assert row["new_solutions"] == 1.0 and row["base_kept"] == 1.0
  curves = tables.curve_rows(record, method="m", seed=3)
  assert [c["step"] for c in curves] == [0, 50]
  assert curves[1]["kl_base"] == 0.5


@pytest.mark.parametrize("kw, match", [
    (dict(methods=("a", "a")), "distinct"),
    (dict(methods=()), "distinct"),
    (dict(seeds=0), "seeds"),
    (dict(methods=("base",), claims=(tables.Claim(
        "c", "pass@1", "nope", "base"),)), "treatment 'nope'"),
])
def test_table_rejects_bad_definitions(kw, match):
  with pytest.raises(ValueError, match=match):
    _table(**kw)


def test_load_table_requires_table_and_get_config():
  class M:
    __file__ = "m.py"
  with pytest.raises(ValueError, match="TABLE"):
    tables.load_table(M)
  M.TABLE = _table()
  with pytest.raises(ValueError, match="get_config"):
    tables.load_table(M)
  M.get_config = staticmethod(lambda arg=None: None)
  assert tables.load_table(M) is M.TABLE


def test_a_claim_against_a_constant_in_a_table():
  table = _table(claims=(tables.Claim("effect above 0.4", "pass@1", "effect",
                                      value=0.4),))
  out = tables.outcomes(table, _rows())
  assert out[0].verdict == "reproduced"
  text = tables.markdown(table, _rows(), protocol_commit="p",
                         run_commits=["r"], command="c", wall_time=1.0,
                         machine="m")
  assert "`pass@1(effect) > 0.4`" in text
  assert "one-sample t-interval of the mean of pass@1 - 0.4" in text
