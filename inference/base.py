"""What every inference combinator shares: option checks, one jit per run, input checks.

A combinator is configured once (``infer.importance(num_samples=1000)``) and run with
``.run(key, model, *args, **kwargs)``. The pure core of a run is compiled once per model and
per static structure of its arguments: array arguments are traced, Python scalars and
other non-array arguments are static (so a model may use them as sizes).

A model that needs its data as concrete values (``len(np.unique(dept))``,
``int(np.max(y))``, as NumPyro's example models do; NumPyro closes over model arguments)
runs unchanged: when tracing raises one of JAX's concretization errors
(:data:`CONCRETIZATION_ERRORS`), the run is compiled again with every argument closed over
as a constant, and the combinator remembers that this model (with this argument
structure) needs concrete data, so later calls go straight there. Such a run is compiled
once per distinct data (keyed by the arrays' contents, shapes and dtypes; the last
:data:`MAX_CONCRETE_RUNS` are kept); new data means a new compilation. A concretization
error that the concrete data does not cure, e.g. ``if mu > 0:`` on a sampled ``mu``, is
raised as it is. Pass such data as numpy arrays, as NumPyro's examples do: on a jax array
``np.max(y)`` dispatches to ``jnp.max``, which inside ``jit`` is traced even on a constant
(NumPyro's ``MCMC`` raises there too).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import NamedTuple

import jax
import numpy as np

from ppl.errors import (  # noqa: F401  (re-exported for the combinators)
    NonFiniteWeightError,
    UnknownOptionError,
    check_count,
    check_nonnegative,
)


def check_option(argument: str, value, allowed):
    """Raise :class:`UnknownOptionError` naming ``argument`` if ``value`` is not allowed."""
    if value not in allowed:
        raise UnknownOptionError(
            f"unknown {argument}={value!r}; choose one of {sorted(map(str, allowed))}"
        )
    return value


def check_sweeps(num_sweeps, num_warmup):
    """``(num_sweeps, num_warmup)`` checked for the conditional-SMC family (csmc, ppg,
    score ascent): positive ``num_sweeps`` and ``0 <= num_warmup < num_sweeps`` (the first
    ``num_warmup`` sweeps are dropped), else a ``ValueError`` naming them."""
    num_sweeps = check_count("num_sweeps", num_sweeps)
    num_warmup = check_nonnegative("num_warmup", num_warmup)
    if num_warmup >= num_sweeps:
        raise ValueError(
            f"num_warmup must be smaller than num_sweeps (the first num_warmup sweeps are "
            f"dropped), got num_warmup={num_warmup}, num_sweeps={num_sweeps}"
        )
    return num_sweeps, num_warmup


def check_key(key):
    """Raise a clear error unless ``key`` is a JAX PRNG key."""
    try:
        shape = np.shape(key)
        typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    except AttributeError:
        typed, shape = False, None
    if not typed and shape != (2,):
        raise TypeError(
            f"run() needs a jax.random key as its first argument (jax.random.PRNGKey(0) or "
            f"jax.random.key(0)); got {type(key).__name__}"
        )
    return key


#: JAX's errors for a traced value used where a concrete one is needed (``int(x)``,
#: ``np.asarray(x)``, ``if x:``, ``x[mask]``); ``TracerBoolConversionError`` is a
#: ``ConcretizationTypeError``.
CONCRETIZATION_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)

#: How many compiled runs with concrete (closed-over) data one combinator keeps.
MAX_CONCRETE_RUNS = 8


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray))


class SplitArguments(NamedTuple):
    """``(args, kwargs)`` split into traced arrays and the static rest (see the module)."""

    treedef: object
    is_array: tuple
    static: tuple
    arrays: list
    cache_key: tuple


def _fingerprint(leaf):
    """A hashable stand-in for a concrete array: type, shape, dtype, weak type, contents."""
    a = np.asarray(leaf)
    if a.dtype.hasobject:
        return leaf  # unhashable: such a run is not cached
    digest = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).hexdigest()
    return (type(leaf), a.shape, a.dtype.str, bool(getattr(leaf, "weak_type", False)), digest)


def split_arguments(model, args, kwargs, concrete: bool = False) -> SplitArguments:
    """Separate array leaves (traced) from the other leaves (static, part of the key).

    With ``concrete=True`` every leaf is static, arrays included (closed over as
    constants); the key then holds each array's :func:`_fingerprint`.
    """
    leaves, treedef = jax.tree.flatten((args, kwargs))
    if concrete:
        is_array = (False,) * len(leaves)
        key = tuple(_fingerprint(leaf) if _is_array(leaf) else leaf for leaf in leaves)
        return SplitArguments(treedef, is_array, tuple(leaves), [],
                              (model, treedef, "concrete", key))
    is_array = tuple(_is_array(leaf) for leaf in leaves)
    static = tuple(None if a else leaf for a, leaf in zip(is_array, leaves, strict=True))
    arrays = [leaf for leaf, a in zip(leaves, is_array, strict=True) if a]
    return SplitArguments(treedef, is_array, static, arrays, (model, treedef, is_array, static))


def cached(cache: dict, cache_key):
    """The cached entry, or None (also for an unhashable static argument: no caching)."""
    try:
        return cache.get(cache_key)
    except TypeError:
        return None


def store(cache: dict, cache_key, value):
    """Cache ``value`` unless the key is unhashable."""
    try:
        cache[cache_key] = value
    except TypeError:
        pass


class RunCache(dict):
    """A combinator's compiled runs: traced-argument entries (the dict itself), and the
    runs with concrete data (``concrete``, the last :data:`MAX_CONCRETE_RUNS`) with the
    argument structures known to need them (``needs_concrete``)."""

    def __init__(self):
        super().__init__()
        self.concrete = OrderedDict()
        self.needs_concrete = set()


def compile_and_call(cache: RunCache, model, args, kwargs, build, call):
    """``call(entry, split)`` with ``entry = build(split)`` cached per argument structure.

    The one place where a run meets its arguments: first with array arguments traced
    (``split_arguments``); if building or calling raises one of
    :data:`CONCRETIZATION_ERRORS`, again with every argument closed over as a constant
    (``split_arguments(..., concrete=True)``), and, when that works, the argument structure
    is remembered so later calls go straight to the concrete path. An error there (a
    concretization error from a sampled value, say) propagates unchanged. Arguments that
    are themselves tracers (``.run`` under an outer ``jit``) cannot be made concrete: the
    first error is raised.
    """
    split = split_arguments(model, args, kwargs)
    try:
        known = split.cache_key in cache.needs_concrete
    except TypeError:  # an unhashable static argument: nothing is cached
        known = False
    if not known:
        try:
            entry = cached(cache, split.cache_key)
            if entry is None:
                entry = build(split)
                store(cache, split.cache_key, entry)
            return call(entry, split)
        except CONCRETIZATION_ERRORS:
            if not split.arrays or any(isinstance(a, jax.core.Tracer) for a in split.arrays):
                raise  # nothing to make concrete: the error is the model's own
    concrete = split_arguments(model, args, kwargs, concrete=True)
    entry = cached(cache.concrete, concrete.cache_key)
    if entry is None:
        entry = build(concrete)
    result = call(entry, concrete)  # an error here is raised as it is
    try:
        cache.concrete[concrete.cache_key] = entry
        cache.concrete.move_to_end(concrete.cache_key)
        while len(cache.concrete) > MAX_CONCRETE_RUNS:
            cache.concrete.popitem(last=False)
    except TypeError:
        pass  # an unhashable argument (an object array, say): not cached
    try:
        cache.pop(split.cache_key, None)  # the traced entry cannot run
        cache.needs_concrete.add(split.cache_key)
    except TypeError:
        pass
    return result


class CompiledRuns:
    """Cache of jitted ``core(key, model, args, kwargs)`` per model and argument structure
    (array arguments traced, or closed over when the model needs them concrete; see
    :func:`compile_and_call`)."""

    def __init__(self, core):
        self.core = core
        self._cache = RunCache()

    def _build(self, model, split):
        treedef, is_array, static = split.treedef, split.is_array, split.static

        def run(key, arrays):
            it = iter(arrays)
            full = [next(it) if a else s for a, s in zip(is_array, static, strict=True)]
            a, kw = jax.tree.unflatten(treedef, full)
            return self.core(key, model, a, kw)

        return jax.jit(run)

    def __call__(self, key, model, args, kwargs):
        return compile_and_call(
            self._cache, model, args, kwargs,
            lambda split: self._build(model, split),
            lambda fn, split: fn(key, split.arrays),
        )


def nonfinite_sites(log_probs: dict) -> list[str]:
    """Names of sites whose log density has a NaN or +inf anywhere."""
    bad = []
    for name, lp in log_probs.items():
        lp = np.asarray(lp)
        if np.any(np.isnan(lp) | np.isposinf(lp)):
            bad.append(name)
    return bad


def _per_draw_sum(log_prob):
    """Sum a batched log density over every axis but the leading (draw) axis."""
    log_prob = np.asarray(log_prob)
    return log_prob.sum(axis=tuple(range(1, log_prob.ndim)))


def check_log_weights(log_weights, log_probs: dict, what: str = "log weight"):
    """Raise :class:`NonFiniteWeightError` naming the sites responsible for a NaN/+inf
    log weight, or for every weight being -inf (no sample is possible under the data).

    A site with an entry whose log density is NaN or -inf in every draw most likely
    observes NaN data there (missing values; NumPyro scores NaN as NaN or, validating the
    support, -inf): the message then says so and suggests ``mask=~jnp.isnan(y)``."""
    lw = np.asarray(log_weights)
    always_bad = [
        n for n, lp in log_probs.items()
        if np.ndim(lp) and np.any(np.all(np.isnan(lp) | np.isneginf(lp), axis=0))
    ]
    hint = "".join(
        f"; site '{n}' has a NaN or -inf log density at the same entries in every draw: if "
        f"the data observed at site '{n}' hold NaN there (missing values), pass "
        f"mask=~jnp.isnan(y) to ppl.observe('{n}', d, y, mask=...) so they contribute nothing"
        for n in always_bad
    )
    if np.any(np.isnan(lw) | np.isposinf(lw)):
        raise NonFiniteWeightError(
            f"non-finite {what} (NaN or +inf); site(s) with non-finite log density: "
            f"{nonfinite_sites(log_probs) or 'none found (check factor terms)'}{hint}"
        )
    if lw.size and np.all(np.isneginf(lw)):
        impossible = [n for n, lp in log_probs.items() if np.all(np.isneginf(_per_draw_sum(lp)))]
        raise NonFiniteWeightError(
            f"every {what} is -inf: no draw is possible under the data; site(s) with zero "
            f"density in every draw: {impossible or 'several jointly'}{hint}"
        )
