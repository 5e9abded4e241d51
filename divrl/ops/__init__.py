"""Memory-efficient per-token ops on policy heads (``[N,V]`` logits never
materialised). See ``divrl.ops.token_stats``."""

from divrl.ops.token_stats import OUTPUTS
from divrl.ops.token_stats import REF_OUTPUTS
from divrl.ops.token_stats import sequence_statistics
from divrl.ops.token_stats import token_statistics

__all__ = ["OUTPUTS", "REF_OUTPUTS", "sequence_statistics", "token_statistics"]
