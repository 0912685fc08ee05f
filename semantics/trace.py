"""Traces: the record of one run of a program, and the handlers that make them.

A :class:`Trace` holds, for every site of one run, its value and its elementwise log
density (scaled and masked as the program says), and statically the kind of each site:
``latent`` (``sample``), ``observed`` (``observe``), ``factor``, ``deterministic`` or
``param``. It is a JAX pytree, so traces pass through ``jit``, ``vmap`` and ``lax.scan``;
a batch of traces (a population of particles) is a trace whose leaves have leading axes.

:func:`record` runs a program under NumPyro's ``seed``, ``substitute`` and ``trace``
handlers and is the single entry point every representation uses.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpyro
from numpyro.distributions import Unit
from numpyro.primitives import Messenger

from ppl.errors import DuplicateSiteError
from ppl.primitives import KIND_KEY, in_markov_step, wrap_markov_steps

LATENT, OBSERVED, FACTOR, DETERMINISTIC, PARAM = (
    "latent",
    "observed",
    "factor",
    "deterministic",
    "param",
)


@jax.tree_util.register_pytree_node_class
class Trace:
    """Values and elementwise log densities of every site of one program run."""

    def __init__(self, values: Mapping, log_probs: Mapping, kinds: tuple):
        self.values = dict(values)
        self.log_probs = dict(log_probs)
        self.kinds = tuple(kinds)

    # -- pytree protocol --------------------------------------------------------------
    def tree_flatten(self):
        return (self.values, self.log_probs), self.kinds

    @classmethod
    def tree_unflatten(cls, kinds, children):
        values, log_probs = children
        return cls(values, log_probs, kinds)

    # -- structure ----------------------------------------------------------------------
    def kind(self, name: str) -> str:
        return dict(self.kinds)[name]

    def names(self, *kinds: str) -> list[str]:
        """Site names of the given kinds, in program order (all names if none given)."""
        return [n for n, k in self.kinds if not kinds or k in kinds]

    @property
    def latent_names(self) -> list[str]:
        return self.names(LATENT)

    @property
    def observed_names(self) -> list[str]:
        return self.names(OBSERVED)

    def select(self, *kinds: str) -> dict:
        """Values of the sites of the given kinds."""
        return {n: self.values[n] for n in self.names(*kinds)}

    # -- densities ----------------------------------------------------------------------
    def log_prob_sum(self, *kinds: str, batch_ndims: int = 0) -> jnp.ndarray:
        """Sum of the log densities of the sites of the given kinds (all sample sites if
        none given), keeping ``batch_ndims`` leading axes (for batched traces)."""
        names = self.names(*(kinds or (LATENT, OBSERVED, FACTOR)))
        total = jnp.zeros(())
        for n in names:
            lp = self.log_probs[n]
            axes = tuple(range(batch_ndims, jnp.ndim(lp)))
            total = total + jnp.sum(lp, axis=axes)
        return total

    @property
    def log_joint(self):
        """log p(latents, data): every latent, observed and factor site."""
        return self.log_prob_sum(LATENT, OBSERVED, FACTOR)

    @property
    def log_prior(self):
        """log p(latents): the latent sites only."""
        return self.log_prob_sum(LATENT)

    @property
    def log_likelihood(self):
        """log p(data | latents): the observed and factor sites (the importance weight)."""
        return self.log_prob_sum(OBSERVED, FACTOR)

    def __repr__(self):
        shapes = ", ".join(f"{n}:{k}{tuple(jnp.shape(self.values[n]))}" for n, k in self.kinds)
        return f"Trace({shapes})"


def site_kind(site: Mapping) -> str | None:
    """The kind of a NumPyro trace site, or None for sites that are not choices (plates)."""
    if site["type"] == "deterministic":
        return DETERMINISTIC
    if site["type"] == "param":
        return PARAM
    if site["type"] != "sample":
        return None
    if not site["is_observed"]:
        return LATENT
    tag = site.get("infer", {}).get(KIND_KEY)
    if tag == "factor" or (tag is None and isinstance(site["fn"], Unit)):
        return FACTOR
    return OBSERVED


def site_log_prob(site: Mapping) -> jnp.ndarray:
    """Elementwise log density of a sample site, with its scale applied."""
    log_prob = site["fn"].log_prob(site["value"])
    scale = site.get("scale")
    if scale is not None:
        log_prob = scale * log_prob
    return log_prob


def from_numpyro(numpyro_trace: Mapping) -> Trace:
    """Convert a NumPyro trace (an ordered dict of messages) to a :class:`Trace`."""
    values, log_probs, kinds = {}, {}, []
    for name, site in numpyro_trace.items():
        kind = site_kind(site)
        if kind is None:
            continue
        kinds.append((name, kind))
        values[name] = site["value"]
        if kind in (LATENT, OBSERVED, FACTOR):
            log_probs[name] = site_log_prob(site)
    return Trace(values, log_probs, tuple(kinds))


class _Recorder(numpyro.handlers.trace):
    """NumPyro's ``trace`` with a clear error for a site name used twice."""

    def postprocess_message(self, msg):
        if "name" not in msg or msg["type"] == "plate":
            return super().postprocess_message(msg)
        if msg["type"] in ("sample", "deterministic", "param") and msg["name"] in self.trace:
            raise DuplicateSiteError(
                f"the site name '{msg['name']}' is used twice in one run of the program; "
                "give every random choice a unique name (inside ppl.markov a step's sites "
                "are stacked over time and must not reuse a name from outside the step)"
            )
        self.trace[msg["name"]] = msg.copy()


class Unobserve(Messenger):
    """Treat observed sites as latent: draw them instead of conditioning on data."""

    ppl_predictive = True

    def process_message(self, msg):
        if msg["type"] != "sample" or not msg["is_observed"] or in_markov_step(msg):
            return
        if site_kind(msg) == FACTOR:
            return
        msg["is_observed"] = False
        msg["value"] = None


def record(model, key, args=(), kwargs=None, substitutions=None, predictive=False):
    """Run ``model(*args, **kwargs)`` once and return ``(return value, Trace, raw trace)``.

    ``substitutions`` fixes the values of the named latent sites; every other latent site
    is drawn from its prior with randomness from ``key``. With ``predictive=True`` observed
    sites are drawn too (prior predictive simulation).
    """
    kwargs = kwargs or {}
    fn = model
    if substitutions:
        fn = numpyro.handlers.substitute(fn, data=dict(substitutions))
    if predictive:
        fn = Unobserve(fn)
    fn = numpyro.handlers.seed(fn, key)
    recorder = _Recorder(fn)
    if predictive:
        with wrap_markov_steps(Unobserve):
            value = recorder(*args, **kwargs)
    else:
        value = recorder(*args, **kwargs)
    return value, from_numpyro(recorder.trace), recorder.trace
