"""Errors raised by ppl, and the argument checks that raise them. Each names the site or
argument at fault."""

import re

import numpy as np


class PPLError(ValueError):
    """Base class of every error ppl raises about a program or its input."""


class ObserveWithoutValueError(PPLError):
    """`observe` was called with ``value=None``."""


class DuplicateSiteError(PPLError):
    """Two random choices in one program run share a name."""


class ShapeMismatchError(PPLError):
    """Observed data (or a markov carry) does not have the shape the model implies."""


class NonFiniteWeightError(PPLError):
    """A log weight is NaN or +inf."""


class UnknownOptionError(PPLError):
    """An option was given a value outside its allowed set."""


class UnsupportedModelError(PPLError):
    """The program is outside the class a representation or algorithm handles."""


class InvalidDistributionError(PPLError):
    """A distribution's parameter violates its constraint in a way that would give a silent
    wrong answer (``Categorical`` probs that do not sum to 1, say)."""


def check_count(argument: str, value) -> int:
    """An integer count >= 1 (particles, samples, chains, steps)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{argument} must be >= 1, got {value}")
    return int(value)


def check_nonnegative(argument: str, value) -> int:
    """An integer count >= 0 (warm-up iterations)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{argument} must be >= 0, got {value}")
    return int(value)


def improper_base(d):
    """The ``ImproperUniform`` that ``d`` is (through ``Independent``, ``Expanded`` and
    ``Masked`` wrappers, as ``to_event``, ``expand`` and plates build them), or None.

    Such a distribution has a log density (a constant on its support) and a support with a
    bijection to unconstrained space, but no sampler: NumPyro's way to write Stan's flat
    and ``ordered`` priors."""
    from numpyro.distributions import ImproperUniform
    from numpyro.distributions.distribution import (
        ExpandedDistribution,
        Independent,
        MaskedDistribution,
    )

    while isinstance(d, (Independent, ExpandedDistribution, MaskedDistribution)):
        d = d.base_dist
    return d if isinstance(d, ImproperUniform) else None


def improper_prior_error(name: str, d, consequence: str | None = None) -> UnsupportedModelError:
    """The :class:`UnsupportedModelError` for drawing site ``name`` of improper prior ``d``
    from its prior; ``consequence`` says what that stops (by default: any method that
    samples the prior)."""
    from numpyro.distributions import constraints

    base = improper_base(d)
    support = base.support if base is not None else d.support
    while type(support) is constraints._IndependentConstraint:  # not real_vector etc.
        support = support.base_constraint
    constraint = re.sub(r"(?<!^)(?=[A-Z])", "_", type(support).__name__.lstrip("_")).lower()
    if consequence is None:
        consequence = (
            "it cannot be drawn from the prior, as importance, smc, mh, exact and the other "
            "methods that sample the prior need"
        )
    return UnsupportedModelError(
        f"sample('{name}'): ImproperUniform({constraint}) has no sampler, so {consequence}; "
        f"give '{name}' a proper prior or use infer.nuts / infer.hmc / infer.svi (which "
        "start in unconstrained space)"
    )


class ConvergenceWarning(UserWarning):
    """Several MCMC chains that do not look converged: split R-hat above 1.01, bulk ESS
    below 100 per chain, or divergent transitions (see ``Posterior.diagnostics``)."""


class ParticleCollapseWarning(ConvergenceWarning):
    """A particle method's population collapsed: its MCMC moves stopped accepting, or its
    final particles are a few repeated values, so the posterior's spread is underestimated
    (e.g. ``tempered_smc`` with a prior-proposal ``infer.mh`` move). A
    :class:`ConvergenceWarning`, so one filter silences both."""
