"""Population: N weighted samples of a program, drawn in parallel with ``vmap``.

A population of weighted particles {(x_i, w_i)} denotes the measure (1/N) sum_i w_i
delta_{x_i}; its total mass (1/N) sum_i w_i is an unbiased estimate of the evidence,
computed in log space as ``logsumexp(log w) - log N`` (Ścibior et al., POPL 2018, section 6).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from ppl.semantics.trace import Trace
from ppl.semantics.weighted import Weighted

from ppl.errors import check_count
from ppl.weights import ess, log_mean_exp

#: log of the mean weight, ``logsumexp(lw) - log N``: the evidence estimate
log_evidence = log_mean_exp
#: Kish's effective sample size ``(sum w)^2 / sum w^2``
effective_sample_size = ess


class Particles(NamedTuple):
    """A weighted population: return values, log weights and traces with a leading N axis."""

    value: object
    log_weights: jnp.ndarray
    trace: Trace

    @property
    def log_evidence(self):
        return log_evidence(self.log_weights)

    @property
    def ess(self):
        return effective_sample_size(self.log_weights)


class Population:
    """``num_particles`` independent draws of a :class:`Weighted` program, vmapped."""

    def __init__(self, weighted, num_particles: int):
        if not isinstance(weighted, Weighted):
            weighted = Weighted(weighted)
        self.weighted = weighted
        self.num_particles = check_count("num_particles", num_particles)

    def __call__(self, key, *args, **kwargs) -> Particles:
        keys = jax.random.split(key, self.num_particles)
        draws = jax.vmap(lambda k: self.weighted(k, *args, **kwargs))(keys)
        return Particles(draws.value, draws.log_weight, draws.trace)
