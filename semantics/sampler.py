"""Sampler: a program as a random element ``key -> (value, choices)``.

In the quasi-Borel reading of "Denotational validation of higher-order Bayesian inference"
(Ścibior et al., POPL 2018, section 4), a sampler is a measurable function from the
randomness source to values; the measure it denotes is the push-forward of the source.
Here the source is a ``jax.random`` key and the push-forward is the program's *prior*
(``observe`` and ``factor`` are ignored as weights), or, with ``predictive=True``, its
prior predictive: observed sites are drawn instead of conditioned on.
"""

from __future__ import annotations

from typing import NamedTuple

from ppl.semantics.trace import DETERMINISTIC, LATENT, OBSERVED, record


class Draw(NamedTuple):
    """One draw: the program's return value and its random choices (site -> value)."""

    value: object
    choices: dict


class Sampler:
    """The prior (or prior predictive) of ``model`` as a pure function of a key."""

    def __init__(self, model, predictive: bool = False):
        self.model = model
        self.predictive = bool(predictive)

    def __call__(self, key, *args, **kwargs) -> Draw:
        value, trace, _ = record(self.model, key, args, kwargs, predictive=self.predictive)
        kinds = (LATENT, DETERMINISTIC, OBSERVED) if self.predictive else (LATENT, DETERMINISTIC)
        return Draw(value, trace.select(*kinds))
