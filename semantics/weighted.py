"""Weighted: a program as a weighted sampler ``key -> (value, log weight, trace)``.

The weighted-sampler representation of Ścibior et al. (POPL 2018, section 5): choices are
drawn from the prior (or from a proposal program q) and every ``observe``/``factor`` adds
to a log weight, so that for any test function f,

    E[w f(x)] = integral f dP_unnormalised,   with  w = p(x, y) / q(x)

and E[w] is the evidence p(y). With the prior as proposal, w = p(y | x) (likelihood
weighting); with a proposal program q, w = p(x, y) / q(x) on the sites q proposes (sites
q leaves out are drawn from the prior and their density cancels).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
from ppl.semantics.trace import FACTOR, LATENT, OBSERVED, Trace, record

from ppl.errors import UnsupportedModelError


class WeightedDraw(NamedTuple):
    """One weighted draw: return value, log importance weight, and the model's trace."""

    value: object
    log_weight: object
    trace: Trace


def proposal_log_weight(model_trace: Trace, proposal_trace: Trace):
    """log p(x, y) - log q(x) over the sites q proposed; prior-drawn sites cancel."""
    proposed = proposal_trace.latent_names
    log_weight = model_trace.log_prob_sum(OBSERVED, FACTOR)
    for name in proposed:
        log_weight = log_weight + model_trace.log_probs[name].sum()
        log_weight = log_weight - proposal_trace.log_probs[name].sum()
    return log_weight


def check_proposal_sites(model_trace: Trace, proposal_trace: Trace):
    """Raise if the proposal samples a site that is not a latent site of the model."""
    latent = set(model_trace.latent_names)
    unknown = [n for n in proposal_trace.latent_names if n not in latent]
    if unknown:
        raise UnsupportedModelError(
            f"the proposal samples site(s) {unknown} that are not latent sites of the model "
            f"(latent sites: {sorted(latent)})"
        )


class Weighted:
    """Likelihood weighting, or importance weighting against a ``proposal`` program.

    The proposal is a program taking the model's arguments and sampling (some of) its
    latent sites under the same names.
    """

    def __init__(self, model, proposal=None):
        self.model = model
        self.proposal = proposal

    def __call__(self, key, *args, **kwargs) -> WeightedDraw:
        if self.proposal is None:
            value, trace, _ = record(self.model, key, args, kwargs)
            return WeightedDraw(value, trace.log_likelihood, trace)
        key_q, key_p = jax.random.split(key)
        _, q_trace, _ = record(self.proposal, key_q, args, kwargs)
        value, trace, _ = record(
            self.model, key_p, args, kwargs, substitutions=q_trace.select(LATENT)
        )
        check_proposal_sites(trace, q_trace)
        return WeightedDraw(value, proposal_log_weight(trace, q_trace), trace)
