"""Exact inference by enumeration: the :class:`~ppl.semantics.Enumerated` representation
as a combinator (NumPyro's funsor enumeration; variable elimination and, through
``ppl.markov``, the forward algorithm)."""

from __future__ import annotations

import jax
from ppl.inference.base import CompiledRuns, check_count, check_key
from ppl.inference.tracer_errors import control_flow_errors
from ppl.semantics.density import Density
from ppl.semantics.enumerated import Enumerated
from ppl.semantics.trace import DETERMINISTIC, LATENT, OBSERVED, check_arguments

from ppl.posterior import Posterior


class Exact:
    """``exact(num_samples=1000)``; see :func:`exact`."""

    def __init__(self, num_samples: int = 1000):
        self.num_samples = check_count("num_samples", num_samples)
        self._checked = {}
        self._runs = CompiledRuns(self.core)

    def core(self, key, model, args, kwargs):
        """The pure, jittable run: ``(log evidence, marginals, (samples, log_likelihood,
        observed data))``, compiled once per model and argument structure."""
        enumerated = Enumerated(model)
        return (
            enumerated.log_evidence(*args, **kwargs),
            enumerated.marginals(*args, **kwargs),
            self._draws(key, model, enumerated, args, kwargs),
        )

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Exact log evidence, marginals and ``num_samples`` joint posterior draws."""
        key = check_key(key)
        check_arguments(model, args, kwargs, checked=self._checked)
        with control_flow_errors(model, args, kwargs):  # `if z:` on a site: named error
            log_z, marginals, (samples, log_likelihood, observed) = self._runs(
                key, model, args, kwargs)
        return Posterior(
            samples,
            log_evidence=log_z,
            observed_data=observed,
            log_likelihood=log_likelihood,
            method="exact",
            info={"marginals": marginals},
        )

    def _draws(self, key, model, enumerated, args, kwargs):
        """Exact joint draws of the latent sites, replayed through the program (the
        :class:`~ppl.semantics.Density` trace, vmapped) for its deterministic sites and the
        pointwise log density of each observed site: ``(samples, log_likelihood, data)``."""
        latents = enumerated.sample(key, self.num_samples, *args, **kwargs)
        trace = jax.vmap(lambda v: Density(model).trace(v, *args, **kwargs))(latents)
        observed = trace.names(OBSERVED)
        return (
            trace.select(LATENT, DETERMINISTIC),
            {n: trace.log_probs[n] for n in observed},
            {n: trace.values[n][0] for n in observed},
        )

    def __repr__(self):
        return f"exact(num_samples={self.num_samples})"


def exact(num_samples: int = 1000) -> Exact:
    """Exact inference by enumeration of every (finite discrete) latent site.

    ``.run(key, model, *args)`` returns a :class:`~ppl.Posterior` whose ``log_evidence`` is
    exact, whose ``info["marginals"]`` maps each site to its exact posterior marginal
    probabilities (last axis: the site's values), and whose ``samples`` are
    ``num_samples`` exact joint posterior draws of the latent sites, with the program's
    ``deterministic`` sites computed at each draw (and, as other methods', the pointwise
    ``log_likelihood`` of each observed site at each draw).
    """
    return Exact(num_samples)
