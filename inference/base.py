"""What every inference combinator shares: option checks, one jit per run, input checks.

A combinator is configured once (``infer.importance(num_samples=1000)``) and run with
``.run(key, model, *args, **kwargs)``. The pure core of a run is compiled once per model and
per static structure of its arguments: array arguments and Python floats are traced (as
``jax.jit`` does: data given as a list of numbers, or a scale swept over many runs, reuse
one compiled run), Python ints and bools and every other non-array argument are static (so
a model may use them as sizes).

A model that needs its data as concrete values (``len(np.unique(dept))``,
``int(np.max(y))``, as NumPyro's example models do; NumPyro closes over model arguments)
runs unchanged: when tracing raises one of JAX's concretization errors
(:data:`CONCRETIZATION_ERRORS`), the run is compiled again with every argument closed over
as a constant, and the combinator remembers that this model (with this argument
structure) needs concrete data, so later calls go straight there. Such a run is compiled
once per distinct data (keyed by the arrays' contents, shapes and dtypes; the last
:data:`MAX_CONCRETE_RUNS` are kept); new data means a new compilation. A concretization
error that the concrete data does not cure, e.g. ``if mu > 0:`` on a sampled ``mu``, is
raised as a :class:`~ppl.errors.TracedControlFlowError` naming the line and the site
(:mod:`ppl.inference.tracer_errors`). Pass such data as numpy arrays, as NumPyro's
examples do: on a jax array ``np.max(y)`` dispatches to ``jnp.max``, which inside ``jit``
is traced even on a constant (NumPyro's ``MCMC`` raises there too).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from typing import NamedTuple

import jax
import numpy as np
from ppl.inference.progress import guarded_run
from ppl.inference.tracer_errors import CONCRETIZATION_ERRORS, traced_control_flow_error

from ppl.errors import (  # noqa: F401  (re-exported for the combinators)
    ArgumentTypeError,
    InvalidArgumentError,
    NonFiniteWeightError,
    UnknownOptionError,
    check_count,
    check_nonnegative,
    check_number,
    check_positive,
    check_probability,
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
    ``num_warmup`` sweeps are dropped), else an :class:`InvalidArgumentError` naming them."""
    num_sweeps = check_count("num_sweeps", num_sweeps)
    num_warmup = check_nonnegative("num_warmup", num_warmup)
    if num_warmup >= num_sweeps:
        raise InvalidArgumentError(
            f"num_warmup must be smaller than num_sweeps (the first num_warmup sweeps are "
            f"dropped), got num_warmup={num_warmup}, num_sweeps={num_sweeps}"
        )
    return num_sweeps, num_warmup


def _is_typed_key(key) -> bool:
    return jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)


def _key_help() -> str:
    impl = jax.config.jax_default_prng_impl
    return (
        "run() needs a jax.random key as its first argument, as in .run(key, model, *args): "
        "a typed key (jax.random.key(0), any implementation) or a raw key of the default "
        f"implementation ({impl!r}: jax.random.PRNGKey(0))"
    )


def check_key(key):
    """``key`` as a scalar *typed* key (:func:`jax.random.key`), or a clear error.

    Accepted: a typed key of any implementation (threefry2x32, rbg, unsafe_rbg, ...; its
    implementation is kept) and a raw ``uint32`` key (``jax.random.PRNGKey(0)``) of the
    default implementation (``jax_default_prng_impl``: shape ``(2,)`` for threefry, ``(4,)``
    for rbg and unsafe_rbg), which is wrapped with :func:`jax.random.wrap_key_data`. Every
    run works on typed keys, so NumPyro's ``seed`` (which takes only typed keys and raw
    threefry keys) sees one whatever the implementation; a raw key and its typed wrapping
    give the same answer.
    """
    if _is_typed_key(key):
        if np.shape(key) != ():
            raise ArgumentTypeError(
                f"{_key_help()}; got a typed key array of shape {np.shape(key)} (one key, "
                "shape (), is needed: pass keys[0], not a batch of keys)"
            )
        return key
    try:
        shape, dtype = np.shape(key), np.dtype(key.dtype)
    except (AttributeError, TypeError):
        raise ArgumentTypeError(
            f"{_key_help()}; got {key!r:.80} (a {type(key).__name__})"
        ) from None
    if dtype != np.uint32 or len(shape) != 1:
        raise ArgumentTypeError(
            f"{_key_help()}; got an array of shape {shape} and dtype {dtype}"
        )
    try:
        return jax.random.wrap_key_data(key)
    except (TypeError, ValueError) as err:
        raise ArgumentTypeError(
            f"{_key_help()}; got a raw key of shape {shape}, which is not a key of the "
            f"default implementation (made under another jax_default_prng_impl? pass a typed "
            f"key, jax.random.key(0, impl=...), instead)"
        ) from err


#: How many compiled runs with concrete (closed-over) data one combinator keeps.
MAX_CONCRETE_RUNS = 8


def _is_array(leaf) -> bool:
    """Whether an argument leaf is traced: an array or a float (Python's or a NumPy
    scalar); ints and bools stay static: a model may use them as sizes or switches."""
    return isinstance(leaf, (jax.Array, np.ndarray, float, np.floating))


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
    is remembered so later calls go straight to the concrete path. Arguments that are
    themselves tracers (``.run`` under an outer ``jit``) cannot be made concrete. A
    concretization error that concrete data does not cure (``if mu > 0:`` on a sampled
    ``mu``, say) is raised as a :class:`~ppl.errors.TracedControlFlowError` chained from
    JAX's, naming the user's source line and the site(s) the value depends on
    (:func:`~ppl.inference.tracer_errors.traced_control_flow_error`); other errors
    propagate unchanged.
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
        except CONCRETIZATION_ERRORS as err:
            traced = any(isinstance(a, jax.core.Tracer) for a in split.arrays)
            if not split.arrays or traced:  # nothing to make concrete: the model's own error
                raise traced_control_flow_error(err, model, args, kwargs, traced) from err
    concrete = split_arguments(model, args, kwargs, concrete=True)
    try:
        entry = cached(cache.concrete, concrete.cache_key)
        if entry is None:
            entry = build(concrete)
        result = call(entry, concrete)
    except CONCRETIZATION_ERRORS as err:  # concrete data did not cure it: the model's own
        raise traced_control_flow_error(err, model, args, kwargs) from err
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
            # memory estimate, then the run with Ctrl-C -> KeyboardInterrupt (progress.py)
            lambda fn, split: guarded_run(fn, key, split.arrays, what=self.core),
        )


def per_structure(cache: dict, model, args, kwargs, compute):
    """``compute()`` once per model and argument structure (the tree, array shapes and
    dtypes, the other leaves themselves; as a run is compiled once), cached in ``cache``;
    for eager checks and static facts about a program (its site names) that do not depend
    on the values of its array arguments. With an unhashable argument it is computed on
    every call."""
    from ppl.semantics.trace import _structure

    try:
        structure = _structure(model, args, kwargs or {})
        if structure in cache:
            return cache[structure]
    except TypeError:  # an unhashable argument: no caching
        return compute()
    cache[structure] = value = compute()
    return value


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


def check_log_weights(log_weights, log_probs: dict, what: str = "log weight",
                      data: dict | None = None):
    """Raise :class:`NonFiniteWeightError` naming the sites responsible for a NaN/+inf
    log weight, or for every weight being -inf (no sample is possible under the data).

    A site with an entry whose log density is NaN or -inf in every draw most likely
    observes NaN data there (missing values; NumPyro scores NaN as NaN or, validating the
    support, -inf): the message then says so and suggests ``mask=~jnp.isnan(y)``. With
    ``data`` (observed site -> its data) a site whose data hold NaN is named as having
    "NaN data" outright, and an all -inf weight is put down to them."""
    lw = np.asarray(log_weights)
    nan_data = [
        n for n, v in (data or {}).items()
        if n in log_probs and np.issubdtype(np.asarray(v).dtype, np.floating)
        and np.isnan(np.asarray(v)).any()
    ]
    always_bad = [
        n for n, lp in log_probs.items()
        if n not in nan_data and np.ndim(lp)
        and np.any(np.all(np.isnan(lp) | np.isneginf(lp), axis=0))
    ]
    hint = "".join(
        f"; site '{n}': NaN data (the data observed there hold NaN; if they are missing "
        f"values, pass mask=~jnp.isnan(y) to ppl.observe('{n}', d, y, mask=...) so they "
        "contribute nothing)"
        for n in nan_data
    ) + "".join(
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
        if nan_data:
            raise NonFiniteWeightError(
                f"every {what} is -inf because of NaN data at site(s) {nan_data}{hint}"
            )
        impossible = [n for n, lp in log_probs.items() if np.all(np.isneginf(_per_draw_sum(lp)))]
        raise NonFiniteWeightError(
            f"every {what} is -inf: no draw is possible under the data; site(s) with zero "
            f"density in every draw: {impossible or 'several jointly'}{hint}"
        )


def _entries_text(mask) -> str:
    """``"at index (i, ...)"`` of the first True entry of ``mask`` (empty for a scalar)."""
    if not np.ndim(mask):
        return ""
    first = tuple(int(i) for i in np.argwhere(mask)[0])
    return f" (first at index {first})"


def describe_site(name: str, site: dict, include_neginf: bool = False) -> str | None:
    """One line about a sample site of a NumPyro trace of one (unbatched) run whose log
    density is NaN or +inf somewhere (also -inf with ``include_neginf``), or None.

    Says which step for a site inside a ``markov`` step (its leading axis is time), and
    "NaN data" (or "infinite data") when the observed data hold NaN (inf) where the log
    density is not finite, with the ``mask=`` remedy; for a finite datum it says the
    parameters of the distribution are to blame; a +inf factor is named as such."""
    from ppl.semantics.trace import FACTOR, OBSERVED, site_kind, site_log_prob

    from ppl.primitives import in_markov_step

    if site.get("type") != "sample":
        return None
    kind = site_kind(site)
    try:
        lp = np.asarray(site_log_prob(site))
    except Exception:  # noqa: BLE001  (a value the distribution cannot score: no verdict)
        return None
    bad = np.isnan(lp) | np.isposinf(lp)
    if include_neginf:
        bad = bad | np.isneginf(lp)
    if not np.any(bad):
        return None
    where, step = "", None
    if in_markov_step(site) and lp.ndim:
        steps = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
        step = int(steps[0])
        more = f" (and {steps.size - 1} later step(s))" if steps.size > 1 else ""
        where = f" at step t={step}{more}"

    def entries(mask):  # the first entry, within the step for a markov site
        return _entries_text(mask if step is None else mask[step])

    values = lp[bad]
    what = "NaN" if np.isnan(values).any() else ("+inf" if np.isposinf(values).any() else "-inf")
    if kind == OBSERVED:
        data = np.asarray(site.get("value"))
        if np.issubdtype(data.dtype, np.floating) and data.ndim >= lp.ndim:
            event_axes = tuple(range(lp.ndim, data.ndim))
            nan_data = np.isnan(data).any(axis=event_axes) if event_axes else np.isnan(data)
            inf_data = np.isinf(data).any(axis=event_axes) if event_axes else np.isinf(data)
            try:
                nan_data = np.broadcast_to(nan_data, lp.shape) & bad
                inf_data = np.broadcast_to(inf_data, lp.shape) & bad
            except ValueError:
                nan_data = inf_data = np.zeros(lp.shape, bool)
            if nan_data.any():
                return (
                    f"site '{name}'{where}: NaN data (the data observed there hold NaN"
                    f"{entries(nan_data)}; if they are missing values, pass "
                    f"mask=~jnp.isnan(y) to ppl.observe('{name}', d, y, mask=...) so that "
                    "they contribute nothing)"
                )
            if inf_data.any():
                return (
                    f"site '{name}'{where}: infinite data (the data observed there hold "
                    f"inf{entries(inf_data)})"
                )
        if what == "-inf":
            return (f"site '{name}'{where}: log density -inf (the data are impossible "
                    "under its distribution there)")
        return (
            f"site '{name}'{where}: log density {what} with finite data (a parameter of its "
            f"{type(site['fn']).__name__} is NaN or outside its constraint there, e.g. a "
            "negative or NaN scale computed from a latent value)"
        )
    if kind == FACTOR:
        return (
            f"site '{name}'{where}: factor log weight {what} (a factor must be finite, or "
            "-inf to rule a point out)"
        )
    if what == "-inf":
        return (f"site '{name}'{where}: log density -inf at its value{entries(bad)} (outside "
                "the support of its distribution)")
    return (
        f"site '{name}'{where}: log density {what} at its value{entries(bad)} (a "
        f"parameter of its {type(site['fn']).__name__} is NaN or outside its constraint)"
    )


def nonfinite_sites_at(model, args, kwargs, values=None, include_neginf=False) -> list[str]:
    """The :func:`describe_site` lines of every site whose log density is NaN or +inf
    (also -inf with ``include_neginf``) in one eager run of ``model`` with its latent
    sites set to ``values`` (site -> value, unbatched; sites not given are drawn from the
    prior, improper ones put at a feasible point). The one place where a method that saw
    a non-finite log density, log weight, potential energy or loss finds the sites to
    blame: at the point where it got stuck (NUTS's initial point), at the initial or last
    finite parameters of an optimiser, at a prior run of a smoother.

    A named ppl error raised by the run itself (NaN data at a global ``observe``, a
    non-finite ``factor``, an invalid distribution parameter) is the explanation: its
    message is returned as the one line. Returns ``[]`` when an argument is a tracer (a
    run under an outer ``jit``) or the run fails otherwise."""
    from ppl.semantics.sequential import replay_key
    from ppl.semantics.trace import feasible_improper, record

    from ppl.errors import PPLError

    kwargs = kwargs or {}
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs, values))):
        return []
    try:
        values = jax.tree.map(jax.numpy.asarray, dict(values or {}))  # scan indexes them
        with warnings.catch_warnings():  # NumPyro's out-of-support warning for NaN data
            warnings.simplefilter("ignore")
            _, _, raw = record(feasible_improper(model), replay_key(), args, kwargs,
                               substitutions=values or None)
    except PPLError as e:
        return [str(e)]
    except Exception:  # noqa: BLE001  (no diagnosis: the caller's own message stands)
        return []
    lines = [describe_site(n, s, include_neginf) for n, s in raw.items()]
    return [line for line in lines if line]


def sites_text(lines: list[str]) -> str:
    """The :func:`nonfinite_sites_at` lines joined for an error message."""
    return "; ".join(lines)
