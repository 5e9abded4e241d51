"""divrl: verified, composable policy-gradient objectives for RL post-training in JAX."""

from divrl import advantages
from divrl import aggregation
from divrl import controllers
from divrl import corrections
from divrl import divergences
from divrl import diversity
from divrl import groups
from divrl import masks
from divrl import ops
from divrl import recipes
from divrl import registry
from divrl import rejection
from divrl import resampling
from divrl import shaping
from divrl import sharding
from divrl import surrogates
from divrl import testing
from divrl import value
from divrl.aggregation import Aggregate
from divrl.objective import Objective
from divrl.objective import Regularizer
from divrl.objective import build
from divrl.objective import from_config
from divrl.objective import regularizer
from divrl.registry import register
from divrl.types import Batch
from divrl.types import validate

__all__ = [
    "advantages",
    "aggregation",
    "controllers",
    "corrections",
    "divergences",
    "diversity",
    "groups",
    "masks",
    "ops",
    "recipes",
    "registry",
    "rejection",
    "resampling",
    "shaping",
    "sharding",
    "surrogates",
    "testing",
    "value",
    "Aggregate",
    "Objective",
    "Regularizer",
    "build",
    "from_config",
    "regularizer",
    "register",
    "Batch",
    "validate",
]

__version__ = "0.1.0"
