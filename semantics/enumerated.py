"""Enumerated: the exact posterior of a program whose latent sites are finite discrete.

The measure a program denotes, when every latent site ranges over a finite set, is a finite
sum; NumPyro's funsor-based enumeration computes it by variable elimination (sum-product
over a factor graph, with the time axis of ``ppl.markov`` contracted by the forward
algorithm of Rabiner 1989 / the parallel scan of Särkkä & García-Fernández 2021). We
enumerate every discrete latent site automatically: the user writes no annotation.

Exact marginals come from the same contraction: tilting each site's density by
``exp(theta_s[value] - logsumexp(theta_s))`` and differentiating the log evidence gives,
at ``theta = 0`` (K values),

    d log Z / d theta_s[k] = P(s = k | data) - 1/K

(the forward-backward algorithm as reverse-mode differentiation of the forward pass;
Eisner 2016, "Inside-outside and forward-backward algorithms are just backprop").
Exact posterior draws use NumPyro's ``infer_discrete`` (forward-filter backward-sample).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpy import prod as np_prod
from numpyro.contrib.funsor import config_enumerate, enum, infer_discrete
from numpyro.contrib.funsor import log_density as enum_log_density
from numpyro.primitives import Messenger
from ppl.semantics.trace import LATENT, record

from ppl.errors import UnsupportedModelError
from ppl.primitives import current_step, in_markov_step, wrap_markov_steps

TILT_PREFIX = "_ppl_tilt_"
#: the tilt that conditions an element on one value (finite, so gradients stay finite)
CONDITIONED_OUT = -1e30


class _Tilt(Messenger):
    """Add the factor ``theta_s[value] - logsumexp(theta_s)`` after each latent site ``s``
    named in ``thetas``; inside a markov step (``in_step``) ``theta_s`` is indexed by time."""

    def __init__(self, fn, thetas, in_step):
        self.thetas = thetas
        self.in_step = in_step
        super().__init__(fn)

    def postprocess_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        name = _unprefixed(msg["name"])
        if name not in self.thetas:
            return
        theta = self.thetas[name]
        if self.in_step:
            theta = theta[current_step()]
        # an observed Categorical(logits=theta) of the value: log-density theta[v] - lse(theta)
        numpyro.sample(TILT_PREFIX + msg["name"], dist.Categorical(logits=theta), obs=msg["value"])


def _unprefixed(name: str) -> str:
    """Undo the ``_PREV_`` prefixes NumPyro's enumerated scan gives its first steps' sites."""
    while name.startswith("_PREV_"):
        name = name[len("_PREV_") :]
    return name


def _support_size(site) -> int:
    return int(site["fn"].enumerate_support(expand=False).shape[0])


class Enumerated:
    """Exact log evidence, posterior marginals and posterior draws of ``model``."""

    def __init__(self, model):
        self.model = model

    # -- structure ----------------------------------------------------------------------
    def _discrete_sites(self, args, kwargs):
        """Latent sites with their support sizes, whether they are in a markov step, and
        the program's plate nesting; raises for a continuous latent site."""
        _, trace, raw = record(self.model, jax.random.key(0), args, kwargs)
        sites = {}
        for name in trace.latent_names:
            site = raw[name]
            if not site["fn"].has_enumerate_support:
                raise UnsupportedModelError(
                    f"exact enumeration needs finite discrete latent sites; '{name}' is "
                    f"{type(site['fn']).__name__}, which cannot be enumerated"
                )
            sites[name] = (jnp.shape(site["value"]), _support_size(site), in_markov_step(site))
        nesting = max(
            (len(s.get("cond_indep_stack", ())) for s in raw.values() if s["type"] == "sample"),
            default=0,
        )
        return sites, nesting

    def _enumerated(self, model, nesting):
        return enum(config_enumerate(model, default="parallel"), first_available_dim=-1 - nesting)

    # -- answers ------------------------------------------------------------------------
    def _log_evidence_tilted(self, thetas, sites, nesting, args, kwargs):
        outer = {n: th for n, th in thetas.items() if not sites[n][2]}
        inner = {n: th for n, th in thetas.items() if sites[n][2]}
        tilted = _Tilt(self.model, outer, in_step=False)
        with wrap_markov_steps(lambda f: config_enumerate(_Tilt(f, inner, in_step=True))):
            log_z, _ = enum_log_density(self._enumerated(tilted, nesting), args, kwargs, {})
        return log_z

    def log_evidence(self, *args, **kwargs):
        """log p(data), summing over every joint value of the latent sites."""
        _, nesting = self._discrete_sites(args, kwargs)
        with wrap_markov_steps(config_enumerate):
            log_z, _ = enum_log_density(self._enumerated(self.model, nesting), args, kwargs, {})
        return log_z

    def _tilted_marginals(self, thetas, sites, nesting, args, kwargs) -> dict:
        """Marginals of the program tilted by ``thetas`` (zero tilts: the posterior)."""
        grads = jax.grad(self._log_evidence_tilted)(thetas, sites, nesting, args, kwargs)
        return {n: g + jax.nn.softmax(thetas[n], axis=-1) for n, g in grads.items()}

    def marginals(self, *args, **kwargs) -> dict:
        """Posterior marginals: site -> array of shape ``site_shape + (K,)`` whose last axis
        is P(site = k | data) for each element (each time step inside ``markov``)."""
        sites, nesting = self._discrete_sites(args, kwargs)
        thetas = {n: jnp.zeros((*shape, k)) for n, (shape, k, _) in sites.items()}
        return self._tilted_marginals(thetas, sites, nesting, args, kwargs)

    def sample(self, key, num_samples: int, *args, **kwargs) -> dict:
        """``num_samples`` exact joint posterior draws of the latent sites.

        Programs without ``markov`` use NumPyro's ``infer_discrete`` (forward-filter
        backward-sample on the factor graph). NumPyro's ``infer_discrete`` does not reach
        inside ``scan``, so for ``markov`` programs we draw by sequential conditioning:
        element by element, draw from the exact marginal given the elements drawn so far
        (the chain rule), conditioning through the tilts. It costs one enumeration per
        latent element, so it suits programs of modest size (an HMM of a few hundred steps).
        """
        sites, nesting = self._discrete_sites(args, kwargs)
        if any(in_step for _, _, in_step in sites.values()):
            draw = lambda k: self._sample_by_conditioning(k, sites, nesting, args, kwargs)
        else:
            draw = lambda k: self._sample_infer_discrete(k, nesting, args, kwargs)
        return jax.vmap(draw)(jax.random.split(key, num_samples))

    def _sample_infer_discrete(self, key, nesting, args, kwargs) -> dict:
        fn = infer_discrete(
            config_enumerate(self.model, default="parallel"),
            first_available_dim=-1 - nesting,
            temperature=1,
            rng_key=key,
        )
        _, trace, _ = record(fn, key, args, kwargs)
        return trace.select(LATENT)

    def _sample_by_conditioning(self, key, sites, nesting, args, kwargs) -> dict:
        thetas = {n: jnp.zeros((*shape, k)) for n, (shape, k, _) in sites.items()}
        draws = {}
        for name, (shape, k, _) in sites.items():
            size = int(np_prod(shape))

            def condition_one(carry, i, name=name, shape=shape, k=k):
                thetas, key = carry
                key, sub = jax.random.split(key)
                probs = self._tilted_marginals(thetas, sites, nesting, args, kwargs)[name]
                value = jax.random.categorical(sub, jnp.log(probs.reshape(-1, k)[i]))
                flat = thetas[name].reshape(-1, k).at[i].set(
                    jnp.where(jnp.arange(k) == value, 0.0, CONDITIONED_OUT)
                )
                return ({**thetas, name: flat.reshape(*shape, k)}, key), value

            (thetas, key), values = jax.lax.scan(condition_one, (thetas, key), jnp.arange(size))
            draws[name] = values.reshape(shape)
        return draws
