"""The objectives, found by name through one registry.

Adding an objective: write one module with a config dataclass (subclass of
:class:`ObjectiveConfig`) and a loss function decorated with :func:`register_objective`, and
import it below.
"""

from . import crmvae, mmjsd, mmvae, mopoe, mvae, mvtcae  # noqa: F401  (registration)
from .base import (
    OBJECTIVES,
    ObjectiveConfig,
    ObjectiveContext,
    ObjectiveEntry,
    ObjectiveOutput,
    build_objective_config,
    get_objective,
    objective_params,
    register_objective,
)

__all__ = [
    "OBJECTIVES",
    "ObjectiveConfig",
    "ObjectiveContext",
    "ObjectiveEntry",
    "ObjectiveOutput",
    "build_objective_config",
    "get_objective",
    "objective_params",
    "register_objective",
]
