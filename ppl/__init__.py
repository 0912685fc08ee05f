"""ppl: a probabilistic programming language on JAX and NumPyro.

Write a model with the primitives below, pick inference from :mod:`ppl.inference`, and
analyse the :class:`Posterior` with ArviZ.
"""

import numpyro.distributions as dist

from ppl import check
from ppl.errors import (
    ArgumentTypeError,
    ConvergenceWarning,
    DuplicateSiteError,
    InvalidArgumentError,
    InvalidDistributionError,
    LargeRunWarning,
    NonFiniteWeightError,
    NotFittedError,
    ObserveWithoutValueError,
    ParticleCollapseWarning,
    PPLError,
    ResourceError,
    ShapeMismatchError,
    TracedControlFlowError,
    UnknownOptionError,
    UnsupportedModelError,
    UnsupportedOptionError,
)
from ppl.model import Model, model
from ppl.posterior import Posterior
from ppl.primitives import (
    current_step,
    deterministic,
    factor,
    markov,
    observe,
    param,
    plate,
    sample,
)
from ppl.sde import brownian, fbm, sde

__all__ = [
    "ArgumentTypeError",
    "ConvergenceWarning",
    "DuplicateSiteError",
    "InvalidArgumentError",
    "InvalidDistributionError",
    "LargeRunWarning",
    "Model",
    "NonFiniteWeightError",
    "NotFittedError",
    "ObserveWithoutValueError",
    "PPLError",
    "ResourceError",
    "ParticleCollapseWarning",
    "Posterior",
    "ShapeMismatchError",
    "TracedControlFlowError",
    "UnknownOptionError",
    "UnsupportedModelError",
    "UnsupportedOptionError",
    "brownian",
    "check",
    "current_step",
    "deterministic",
    "dist",
    "factor",
    "fbm",
    "markov",
    "model",
    "observe",
    "param",
    "plate",
    "sample",
    "sde",
]
__version__ = "0.1.0"
