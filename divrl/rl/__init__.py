"""The RL loop (``trainer``), its data, pre-training, scoring, mesh helpers,
experiments and run logging.

``divrl.rl.trainer.Trainer(config).run()`` trains one experiment;
``divrl.rl.experiment.run_experiment`` adds the plot and the summary.
"""

from divrl.rl.logging import MetricsLogger
from divrl.rl.logging import ProgressBar
from divrl.rl.logging import read_jsonl
from divrl.rl.logging import save_plots
from divrl.rl.logging import summary_table

__all__ = [
    "MetricsLogger",
    "ProgressBar",
    "read_jsonl",
    "save_plots",
    "summary_table",
]
