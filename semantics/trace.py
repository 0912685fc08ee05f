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

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.distributions import Unit, biject_to
from numpyro.primitives import Messenger

from ppl.errors import DuplicateSiteError, InvalidDistributionError, PPLError, improper_base
from ppl.primitives import (
    KIND_KEY,
    _constrained_arguments,
    in_markov_step,
    step_index,
    stub_markov,
    wrap_markov_steps,
)

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


def from_numpyro(numpyro_trace: Mapping, densities: bool = True) -> Trace:
    """Convert a NumPyro trace (an ordered dict of messages) to a :class:`Trace`; with
    ``densities=False`` its ``log_probs`` stay empty (sites, kinds and values only)."""
    values, log_probs, kinds = {}, {}, []
    for name, site in numpyro_trace.items():
        kind = site_kind(site)
        if kind is None:
            continue
        kinds.append((name, kind))
        values[name] = site["value"]
        if densities and kind in (LATENT, OBSERVED, FACTOR):
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


def _feasible_if_improper(msg):
    """``biject_to(support)(0)`` for a latent site without a sampler; None (leave the site
    alone) for every other message."""
    if msg["type"] != "sample" or msg["is_observed"] or msg["value"] is not None:
        return None
    fn = msg["fn"]
    if improper_base(fn) is None:
        return None
    transform = biject_to(fn.support)
    shape = transform.inverse_shape(fn.shape(msg["kwargs"].get("sample_shape") or ()))
    return transform(jnp.zeros(shape))


def feasible_improper(model):
    """``model`` with every latent site that has no sampler (an ``ImproperUniform`` prior,
    :func:`ppl.errors.improper_base`) set to the feasible point ``biject_to(support)(0)`` of
    its support (NumPyro's ``init_to_feasible``); every other site is drawn as usual.

    For the runs that only read a program's structure (its sites, their supports and
    shapes, its data) in the methods that never draw from the prior (NUTS, HMC, SVI: they
    start from points in unconstrained space), so improper priors pass those runs; a
    prior-sampling method that runs ``model`` itself still gets the named error of
    :func:`ppl.sample`."""
    return numpyro.handlers.substitute(model, substitute_fn=_feasible_if_improper)


def record(model, key, args=(), kwargs=None, substitutions=None, predictive=False,
           densities=True):
    """Run ``model(*args, **kwargs)`` once and return ``(return value, Trace, raw trace)``.

    ``substitutions`` fixes the values of the named latent sites; every other latent site
    is drawn from its prior with randomness from ``key``. With ``predictive=True`` observed
    sites are drawn too (prior predictive simulation). ``densities=False`` leaves the
    Trace's log densities out: for the eager runs that only read a program's structure
    (outside ``jit`` each density is a few more ops to compile, one at a time).
    """
    kwargs = kwargs or {}
    recorder = _recorder(model, key, substitutions, predictive)
    try:
        value = _run(recorder, args, kwargs, predictive)
    except ValueError as error:
        if isinstance(error, PPLError) or not _INVALID_PARAMETER.match(str(error)):
            raise
        raise _invalid_parameter_error(error, recorder.trace, model, key, args, kwargs,
                                       substitutions, predictive) from error
    return value, from_numpyro(recorder.trace, densities), recorder.trace


def typed_key(key):
    """``key`` as a typed key: a raw ``uint32`` key (``jax.random.PRNGKey``) is wrapped in
    the default implementation, so NumPyro's ``seed`` (typed keys, or raw threefry keys only)
    takes keys of every implementation (rbg, unsafe_rbg, ...)."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _recorder(model, key, substitutions, predictive, check=False):
    fn = _CheckParameters(model) if check else model
    if substitutions:
        fn = numpyro.handlers.substitute(fn, data=dict(substitutions))
    if predictive:
        fn = Unobserve(fn)
    return _Recorder(numpyro.handlers.seed(fn, typed_key(key)))


def _run(recorder, args, kwargs, predictive):
    if predictive:
        with wrap_markov_steps(Unobserve):
            return recorder(*args, **kwargs)
    return recorder(*args, **kwargs)


#: NumPyro's ``validate_args`` error for a concrete parameter outside its constraint.
_INVALID_PARAMETER = re.compile(r"^(\w+) distribution got invalid (\w+) parameter\.$")


def invalid_parameter(name: str, d):
    """Raise :class:`InvalidDistributionError` naming site ``name`` if a concrete
    parameter of ``d`` (or of a distribution it wraps) lies outside its constraint (a
    negative scale, say): NumPyro's own check says only "Normal distribution got invalid
    scale parameter". Tracer parameters (inside ``jit``) are not checked."""
    from numpyro.distributions import constraints

    for param, value, constraint in _constrained_arguments(d):
        if (constraint is None or constraints.is_dependent(constraint)
                or isinstance(value, jax.core.Tracer)):
            continue
        try:
            ok = np.asarray(constraint(value))
        except Exception:  # noqa: BLE001  (a constraint that cannot judge this value)
            continue
        if np.all(ok):
            continue
        arr = np.asarray(value)
        at, shown = "", arr
        if ok.ndim and arr.ndim >= ok.ndim:
            first = tuple(int(i) for i in np.argwhere(~ok)[0])
            at, shown = f" at index {first}", arr[first]
        shown = np.array2string(np.asarray(shown), precision=4, threshold=6)
        raise InvalidDistributionError(
            f"site '{name}': {type(d).__name__} parameter '{param}' must satisfy "
            f"{constraint!r}, but it is {shown}{at} in this run; NumPyro refuses such a "
            "distribution. A parameter computed from a latent site must lie in its "
            "constraint for every value that site can take: give the latent site a prior on "
            "that support (dist.HalfNormal or dist.LogNormal for a scale, say) or map it "
            "there (jnp.exp, jax.nn.softplus)"
        )


class _CheckParameters(Messenger):
    """Raise :func:`invalid_parameter` at the first sample site with an invalid parameter."""

    def process_message(self, msg):
        if msg["type"] == "sample":
            invalid_parameter(msg["name"], msg["fn"])


def _invalid_parameter_error(error, partial, model, key, args, kwargs, substitutions,
                             predictive) -> InvalidDistributionError:
    """The :class:`InvalidDistributionError` naming the site for NumPyro's bare
    ``ValueError`` about an invalid parameter, raised while a distribution was built
    (before its site is reached): the same run again (same key and substitutions, so the
    same values) with NumPyro's validation off and every site's parameters checked
    (:func:`invalid_parameter`); if no site has one (the distribution never reached a
    site), the error names the last site recorded before it."""
    try:
        with numpyro.validation_enabled(False):
            _run(_recorder(model, key, substitutions, predictive, check=True), args,
                 kwargs, predictive)
    except InvalidDistributionError as named:
        return named
    except Exception:  # noqa: BLE001  (no better diagnosis: fall back below)
        pass
    last = [n for n, s in partial.items() if s.get("type") == "sample"]
    after = f"after site '{last[-1]}'" if last else "before any site"
    return InvalidDistributionError(
        f"{error} (raised while building a distribution {after}; a parameter computed from "
        "a latent site must lie in its constraint for every value that site can take)"
    )


def _structure(model, args, kwargs):
    """A hashable key of ``model`` and its arguments' structure: tree, array shapes and
    dtypes, the other leaves themselves."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    shapes = tuple(
        (jnp.shape(leaf), jnp.result_type(leaf)) if isinstance(leaf, jax.Array | np.ndarray)
        else leaf
        for leaf in leaves
    )
    return model, treedef, shapes


def check_arguments(model, args=(), kwargs=None, checked=None):
    """Run ``model`` once outside ``jit`` so that the value checks of its primitives see
    concrete values (:func:`ppl.primitives.check_distribution_arguments`: ``probs`` that are
    not normalised, say); raises their named error.

    Inside a jitted run every value a program computes is a tracer and those checks cannot
    run, so a method that draws from the prior calls this before compiling. The program's
    global sites are drawn from the prior (key 0); each ``markov`` step is run once,
    eagerly, on the initial carry and the first input (not scanned: nothing is compiled).
    NumPyro's own argument validation is off during this run, so the error is ppl's, naming
    the site, rather than NumPyro's. Does nothing when an argument is a tracer (``.run``
    under an outer ``jit``). With a dict ``checked`` (a combinator's), a program is checked
    once per argument structure (shapes and dtypes, not values), as it is compiled once.
    """
    kwargs = kwargs or {}
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
        return
    if checked is not None:
        try:
            structure = _structure(model, args, kwargs)
            if structure in checked:
                return
        except TypeError:  # an unhashable argument: check every run
            checked, structure = None, None

    def first_step(step, init, xs, num_steps):
        x = None if xs is None else jax.tree.map(lambda leaf: leaf[0], xs)
        with step_index(0):
            step(init, x)

    with numpyro.validation_enabled(False), stub_markov(first_step):
        record(model, jax.random.key(0), args, kwargs, densities=False)
    if checked is not None:
        checked[structure] = True
