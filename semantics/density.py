"""Density: the log joint of a program as a function of its latent values.

The density representation is the Radon-Nikodym derivative of the program's unnormalised
posterior with respect to the product of base measures of its latent sites:
``log p(x, y) = sum_latent log p(x_s | ...) + sum_observed log p(y_s | ...) + factors``.
In unconstrained coordinates u = T^{-1}(x) (NumPyro's ``biject_to`` of each site's
support) it gains the log-Jacobian, ``log p(T(u), y) + log |det dT/du|``, which is what
HMC and Gaussian variational families need.
"""

from __future__ import annotations

import jax
from numpyro.infer.util import constrain_fn, potential_energy, unconstrain_fn
from ppl.semantics.trace import Trace, record

from ppl.errors import UnsupportedModelError


class Density:
    """Evaluate ``log p(x, y)`` of ``model`` at given latent values ``x``."""

    def __init__(self, model):
        self.model = model

    def trace(self, values, *args, **kwargs) -> Trace:
        """The trace of the program with its latent sites fixed to ``values``."""
        _, trace, _ = record(
            self.model, jax.random.key(0), args, kwargs, substitutions=values
        )
        missing = [n for n in trace.latent_names if n not in values]
        if missing:
            raise UnsupportedModelError(
                f"Density needs a value for every latent site; missing {missing}"
            )
        return trace

    def log_joint(self, values, *args, **kwargs):
        """log p(x, y) in constrained coordinates."""
        return self.trace(values, *args, **kwargs).log_joint

    __call__ = log_joint

    def to_unconstrained(self, values, *args, **kwargs) -> dict:
        """Map latent values to unconstrained coordinates, site by site."""
        return unconstrain_fn(self.model, args, kwargs, values)

    def to_constrained(self, unconstrained, *args, **kwargs) -> dict:
        """Map unconstrained coordinates back to the latent sites' supports."""
        return constrain_fn(self.model, args, kwargs, unconstrained)

    def log_joint_unconstrained(self, unconstrained, *args, **kwargs):
        """log p(T(u), y) + log |det dT/du|: the density HMC and VI work with."""
        return -potential_energy(self.model, args, kwargs, unconstrained)
