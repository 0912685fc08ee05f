"""Exact inference by enumeration: the :class:`~ppl.semantics.Enumerated` representation
as a combinator (NumPyro's funsor enumeration; variable elimination and, through
``ppl.markov``, the forward algorithm)."""

from __future__ import annotations

import jax
from ppl.inference.base import check_count, check_key
from ppl.semantics.enumerated import Enumerated

from ppl.posterior import Posterior


class Exact:
    """``exact(num_samples=1000)``; see :func:`exact`."""

    def __init__(self, num_samples: int = 1000):
        self.num_samples = check_count("num_samples", num_samples)

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Exact log evidence, marginals and ``num_samples`` joint posterior draws."""
        key = check_key(key)
        enumerated = Enumerated(model)
        log_z = jax.jit(lambda: enumerated.log_evidence(*args, **kwargs))()
        marginals = jax.jit(lambda: enumerated.marginals(*args, **kwargs))()
        samples = jax.jit(lambda k: enumerated.sample(k, self.num_samples, *args, **kwargs))(key)
        return Posterior(
            samples, log_evidence=log_z, method="exact", info={"marginals": marginals}
        )

    def __repr__(self):
        return f"exact(num_samples={self.num_samples})"


def exact(num_samples: int = 1000) -> Exact:
    """Exact inference by enumeration of every (finite discrete) latent site.

    ``.run(key, model, *args)`` returns a :class:`~ppl.Posterior` whose ``log_evidence`` is
    exact, whose ``info["marginals"]`` maps each site to its exact posterior marginal
    probabilities (last axis: the site's values), and whose ``samples`` are
    ``num_samples`` exact joint posterior draws.
    """
    return Exact(num_samples)
