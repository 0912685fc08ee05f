"""Importance sampling: a :class:`~ppl.semantics.Population` of weighted draws.

Likelihood weighting draws the latent sites from the prior and weights by p(y | x); with a
proposal program q, weights are p(x, y) / q(x) (Kahn & Marshall 1953; Ścibior et al., POPL
2018, section 6: ``importance = population . weighted``). The evidence estimate is
``logsumexp(log w) - log N``.
"""

from __future__ import annotations

import jax.numpy as jnp
from ppl.inference.base import (
    ArgumentTypeError,
    CompiledRuns,
    check_count,
    check_key,
    check_log_weights,
)
from ppl.semantics.population import Population, effective_sample_size, log_evidence
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, OBSERVED, check_arguments
from ppl.semantics.weighted import Weighted

from ppl.posterior import Posterior


def particle_summary(particles) -> tuple:
    """``(log evidence, ESS of shape (1,), observed data)`` of a population (traces with a
    leading N axis); jittable, so a core can return it with the particles."""
    trace = particles.trace
    return (
        log_evidence(particles.log_weights),
        jnp.reshape(effective_sample_size(particles.log_weights), (1,)),
        {n: trace.values[n][0] for n in trace.names(OBSERVED)},
    )


def posterior_from_particles(particles, method: str, summary=None, **extra) -> Posterior:
    """A weighted :class:`Posterior` from a population (traces with a leading N axis);
    ``info["ess"]`` has one entry per step, as SMC's: here one step, shape ``(1,)``.
    ``summary`` is :func:`particle_summary`'s (computed here, eagerly, when not given)."""
    trace = particles.trace
    log_z, ess, observed_data = particle_summary(particles) if summary is None else summary
    return Posterior(
        trace.select(LATENT, DETERMINISTIC),
        log_weights=particles.log_weights,
        log_evidence=log_z,
        observed_data=observed_data,
        log_likelihood={n: trace.log_probs[n] for n in trace.names(OBSERVED)},
        method=method,
        info={"ess": ess, **extra},
    )


class Importance:
    """``importance(num_samples, proposal=None)``; see :func:`importance`."""

    def __init__(self, num_samples: int, proposal=None):
        self.num_samples = check_count("num_samples", num_samples)
        if proposal is not None and not callable(proposal):
            raise ArgumentTypeError(f"proposal must be a program (a callable), got {proposal!r}")
        self.proposal = proposal
        self._runs = CompiledRuns(self._core)
        self._checked = {}

    def _core(self, key, model, args, kwargs):
        population = Population(Weighted(model, self.proposal), self.num_samples)
        particles = population(key, *args, **kwargs)
        return particles, particle_summary(particles)

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Draw ``num_samples`` weighted samples of ``model(*args, **kwargs)``."""
        key = check_key(key)
        check_arguments(model, args, kwargs, checked=self._checked)
        particles, summary = self._runs(key, model, args, kwargs)
        trace = particles.trace
        check_log_weights(
            particles.log_weights,
            {n: trace.log_probs[n] for n in trace.names(LATENT, OBSERVED, FACTOR)},
        )
        return posterior_from_particles(particles, "importance", summary)

    def __repr__(self):
        return f"importance(num_samples={self.num_samples}, proposal={self.proposal!r})"


def importance(num_samples: int, proposal=None) -> Importance:
    """Importance sampling with ``num_samples`` draws from the prior or a ``proposal``.

    Returns a combinator; ``.run(key, model, *args, **kwargs)`` gives a weighted
    :class:`~ppl.Posterior` with ``log_weights``, ``log_evidence`` and ``info["ess"]`` (per
    step, as every combinator's: one step, shape ``(1,)``; ``Posterior.ess`` is the
    scalar).
    """
    return Importance(num_samples, proposal)


__all__ = ["Importance", "importance", "particle_summary", "posterior_from_particles"]
