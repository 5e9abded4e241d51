"""Train one experiment: ``python -m scripts.train --config <file>``.

  python -m scripts.train --config experiments/countdown/grpo.py \
      --config.train.steps=50 --config.objective.regularizers.kl.coef=0.01

Every ``--config.<path>=<value>`` override must name an existing key; an
unknown key is an error that names it. The run writes ``metrics.jsonl``,
TensorBoard events, checkpoints (``checkpoint.every``) and ``plot.png`` to
``config.workdir`` and prints a summary table.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from divrl.rl import experiment  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config module (experiments/<task>/<name>.py).",
    lock_config=True)


def main(argv):
  experiment.quiet_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required")
  result = experiment.run_experiment(_CONFIG.value)
  print(experiment.results_table({_CONFIG.value.workdir: result}))


if __name__ == "__main__":
  app.run(main)
