"""Traced: a program as ``key -> trace``, with replay and regeneration for MH.

The traced representation of Ścibior et al. (POPL 2018, section 7): a run is recorded as
the map from site names to values and log densities. Replaying a trace re-runs the program
with the recorded latent values (recomputing every density); regenerating a set of sites
re-draws those from their prior given the rest. For a proposal that regenerates the sites
S from the prior, the Metropolis-Hastings log acceptance ratio is

    log a = sum_{s not in S} [log p'(s) - log p(s)]

(the densities of the regenerated sites cancel against the proposal's; monad-bayes'
``mhTrans`` with a fixed site set). The returned ``log_ratio`` is that quantity.
"""

from __future__ import annotations

import jax
from ppl.semantics.trace import FACTOR, LATENT, OBSERVED, Trace, record

from ppl.errors import UnsupportedModelError


def regeneration_log_ratio(new: Trace, old: Trace, regenerated) -> object:
    """MH log acceptance ratio for regenerating ``regenerated`` sites from the prior."""
    log_ratio = 0.0
    for name in new.names(LATENT, OBSERVED, FACTOR):
        if name in regenerated:
            continue
        log_ratio = log_ratio + new.log_probs[name].sum()
        if name in old.log_probs:
            log_ratio = log_ratio - old.log_probs[name].sum()
    for name in old.names(LATENT, OBSERVED, FACTOR):
        if name not in regenerated and name not in new.log_probs:
            log_ratio = log_ratio - old.log_probs[name].sum()
    return log_ratio


class Traced:
    """Record, replay and regenerate traces of ``model``."""

    def __init__(self, model):
        self.model = model

    def __call__(self, key, *args, **kwargs) -> Trace:
        """A trace drawn from the prior (observed sites conditioned on their data)."""
        return record(self.model, key, args, kwargs)[1]

    def replay(self, trace: Trace, *args, **kwargs) -> Trace:
        """Re-run the program with the latent values of ``trace``; recompute densities."""
        new = record(
            self.model, jax.random.key(0), args, kwargs, substitutions=trace.select(LATENT)
        )[1]
        missing = set(new.latent_names) - set(trace.latent_names)
        if missing:
            raise UnsupportedModelError(
                f"replay: the trace has no value for latent site(s) {sorted(missing)}"
            )
        return new

    def regenerate(self, key, trace: Trace, sites, *args, **kwargs):
        """Redraw ``sites`` from the prior given the rest; return ``(new trace, log a)``."""
        sites = (sites,) if isinstance(sites, str) else tuple(sites)
        unknown = [s for s in sites if s not in trace.latent_names]
        if unknown:
            raise UnsupportedModelError(
                f"regenerate: {unknown} are not latent sites of the program "
                f"(latent sites: {trace.latent_names})"
            )
        kept = {n: v for n, v in trace.select(LATENT).items() if n not in sites}
        new = record(self.model, key, args, kwargs, substitutions=kept)[1]
        regenerated = set(new.latent_names) - set(kept)
        return new, regeneration_log_ratio(new, trace, regenerated)
