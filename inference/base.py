"""What every inference combinator shares: option checks, one jit per run, input checks.

A combinator is configured once (``infer.importance(num_samples=1000)``) and run with
``.run(key, model, *args, **kwargs)``. The pure core of a run is compiled once per model and
per static structure of its arguments: array arguments are traced, Python scalars and
other non-array arguments are static (so a model may use them as sizes).
"""

from __future__ import annotations

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


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray))


class SplitArguments(NamedTuple):
    """``(args, kwargs)`` split into traced arrays and the static rest (see the module)."""

    treedef: object
    is_array: tuple
    static: tuple
    arrays: list
    cache_key: tuple


def split_arguments(model, args, kwargs) -> SplitArguments:
    """Separate array leaves (traced) from the other leaves (static, part of the key)."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
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


class CompiledRuns:
    """Cache of jitted ``core(key, model, args, kwargs)`` per model and argument structure."""

    def __init__(self, core):
        self.core = core
        self._cache = {}

    def __call__(self, key, model, args, kwargs):
        split = split_arguments(model, args, kwargs)
        fn = cached(self._cache, split.cache_key)
        if fn is None:
            treedef, is_array, static = split.treedef, split.is_array, split.static

            def run(key, arrays):
                it = iter(arrays)
                full = [next(it) if a else s for a, s in zip(is_array, static, strict=True)]
                a, kw = jax.tree.unflatten(treedef, full)
                return self.core(key, model, a, kw)

            fn = jax.jit(run)
            store(self._cache, split.cache_key, fn)
        return fn(key, split.arrays)


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
    log weight, or for every weight being -inf (no sample is possible under the data)."""
    lw = np.asarray(log_weights)
    if np.any(np.isnan(lw) | np.isposinf(lw)):
        raise NonFiniteWeightError(
            f"non-finite {what} (NaN or +inf); site(s) with non-finite log density: "
            f"{nonfinite_sites(log_probs) or 'none found (check factor terms)'}"
        )
    if lw.size and np.all(np.isneginf(lw)):
        impossible = [n for n, lp in log_probs.items() if np.all(np.isneginf(_per_draw_sum(lp)))]
        raise NonFiniteWeightError(
            f"every {what} is -inf: no draw is possible under the data; site(s) with zero "
            f"density in every draw: {impossible or 'several jointly'}"
        )
