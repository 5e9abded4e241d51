"""Pre-train (or load) the base model of an experiment:
``python -m scripts.pretrain --config experiments/countdown/grpo.py``.

The base is cached under ``config.base.cache_root`` by a hash of the task,
model and pre-training settings (or at ``config.base.dir``); ``scripts.train``
and the quickstart reuse it. Prints where it is and its held-out metrics.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from divrl.rl import experiment  # noqa: E402
from divrl.rl import logging as rl_logging  # noqa: E402
from divrl.rl.trainer import Trainer  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config module.", lock_config=True)


def main(argv):
  experiment.quiet_logs()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required")
  trainer = Trainer(_CONFIG.value)
  print(f"base model: {trainer.base_path}")
  row = experiment.table_row(trainer.evaluate())
  print(rl_logging.summary_table({"base": row},
                                 list(experiment.TABLE_COLUMNS)))


if __name__ == "__main__":
  app.run(main)
