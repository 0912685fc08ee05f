"""The primitives of the ppl DSL, built on NumPyro's effect handlers.

Every primitive emits an ordinary NumPyro message, so a ppl program runs unchanged under
NumPyro's handlers (``seed``, ``trace``, ``substitute``, enumeration) and a program written
with ``numpyro.sample`` is a valid ppl program. The two additions are checks (a clear error
for an ``observe`` without data, for data whose shape does not match the distribution, for a
non-finite ``factor``) and the :func:`markov` combinator, which lowers to NumPyro's ``scan``
but can also be intercepted by a representation that wants to step through it one time step
at a time (:class:`ppl.semantics.Sequential`).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.contrib.control_flow import scan as _numpyro_scan
from numpyro.distributions.batch_util import promote_batch_shape
from numpyro.primitives import _PYRO_STACK, Messenger

from ppl.errors import (
    DuplicateSiteError,
    InvalidDistributionError,
    NonFiniteWeightError,
    ObserveWithoutValueError,
    PPLError,
    ShapeMismatchError,
)

#: ``site["infer"]["ppl"]`` tags the kind of an observed site: "observe" or "factor".
KIND_KEY = "ppl"

_STEP_INDEX = contextvars.ContextVar("ppl_step_index", default=None)
_STEP_WRAPPERS = contextvars.ContextVar("ppl_step_wrappers", default=())
_MARKOV_INTERCEPTORS: list = []


def _handler_active(predicate) -> bool:
    return any(predicate(h) for h in _PYRO_STACK)


def _enumerating() -> bool:
    """True inside NumPyro's funsor enumeration, where batch shapes gain enumeration dims."""
    return _handler_active(lambda h: type(h).__name__ == "enum")


def _predictive() -> bool:
    """True inside :class:`ppl.semantics.Sampler` with ``predictive=True``."""
    return _handler_active(lambda h: getattr(h, "ppl_predictive", False))


def _constrained_arguments(d, prefix=""):
    """``(parameter path, value, constraint)`` of every argument ``d`` was built with (not
    the lazily derived ones, NumPyro's ``get_args``), and of the distributions it wraps
    (``base_dist`` of ``expand``/``to_event``/``mask``, a mixture's components)."""
    if not isinstance(d, numpyro.distributions.Distribution):
        return
    try:
        args = d.get_args()
    except (AttributeError, NotImplementedError):  # a user-written distribution
        args = {}
    for param, value in args.items():
        yield prefix + param, value, d.arg_constraints.get(param)
    for attr, inner in vars(d).items():
        inners = inner if isinstance(inner, (list, tuple)) else (inner,)
        for i, sub in enumerate(inners):
            if isinstance(sub, numpyro.distributions.Distribution):
                path = f"{attr}[{i}]" if isinstance(inner, (list, tuple)) else attr
                yield from _constrained_arguments(sub, f"{prefix}{path}.")


def check_distribution_arguments(name: str, d):
    """Raise :class:`~ppl.errors.InvalidDistributionError` naming site ``name`` if a
    concrete parameter of ``d`` constrained to the simplex (``Categorical``,
    ``OneHotCategorical``, ``Multinomial`` ``probs``, ...: any ``d.arg_constraints`` entry
    ``constraints.simplex``, in ``d`` or a distribution it wraps) has a negative entry or
    does not sum to 1 over its last axis.

    NumPyro scores ``Categorical(probs=p)`` as ``log p[k]`` without normalising, so
    unnormalised ``probs`` silently give a wrong evidence and posterior. The sums are taken
    in float64 and allowed ``max(1e-5, K * eps)`` from 1 (``K`` categories, ``eps`` the
    parameter's float precision: the worst-case rounding of normalising in float32).

    A parameter that is a JAX tracer (computed under ``jit``/``vmap``/``scan`` from traced
    values, as every value a model computes inside a jitted ``.run`` is) is not checked:
    its value is unknown while tracing, and checking it at run time would need a host
    callback in the hot path. Runs that check their program once outside ``jit`` first
    (:func:`ppl.semantics.trace.check_arguments`) see the values.
    """
    simplex = numpyro.distributions.constraints.simplex
    for param, value, constraint in _constrained_arguments(d):
        if constraint is not simplex or isinstance(value, jax.core.Tracer):
            continue
        p = np.asarray(value)
        if p.ndim < 1 or p.shape[-1] == 0:
            continue
        dtype = p.dtype if np.issubdtype(p.dtype, np.floating) else np.dtype(np.float32)
        tolerance = max(1e-5, p.shape[-1] * float(np.finfo(dtype).eps))
        p = p.astype(np.float64)
        sums = p.sum(-1)
        negative = np.any(p < 0, axis=-1)
        bad = negative | ~(np.abs(sums - 1.0) <= tolerance)
        if not np.any(bad):
            continue
        where = np.argwhere(bad)[0] if bad.ndim else ()
        at = f" (at batch index {tuple(int(i) for i in where)})" if bad.ndim else ""
        problem = "has a negative entry and sums" if negative[tuple(where)] else "sums"
        raise InvalidDistributionError(
            f"site '{name}': {type(d).__name__} parameter '{param}' must lie on the simplex "
            f"(non-negative, summing to 1 over its last axis), but it {problem} to "
            f"{sums[tuple(where)]:.6g}{at}; NumPyro would score it unnormalised and silently "
            f"give a wrong answer. Normalise it, probs / probs.sum(-1, keepdims=True), or "
            f"pass logits= (normalised for you)"
        )


def sample(name: str, d, *, sample_shape=(), infer=None):
    """A latent random choice named ``name`` drawn from distribution ``d``.

    ``d`` may be improper (``dist.ImproperUniform(support, ...)``, NumPyro's flat and
    Stan's ``ordered`` priors): methods that never draw from the prior (``infer.nuts``,
    ``infer.hmc``, ``infer.svi``) run it; where a method would draw it from the prior,
    :class:`~ppl.errors.UnsupportedModelError` names the site instead of NumPyro's bare
    ``NotImplementedError``.
    """
    check_distribution_arguments(name, d)
    from ppl.errors import improper_base, improper_prior_error

    try:
        return numpyro.sample(name, d, sample_shape=sample_shape, infer=infer)
    except NotImplementedError as e:
        if improper_base(d) is None:
            raise
        raise improper_prior_error(name, d) from e


def _check_observed_shape(name, d, value):
    """Raise if ``value`` cannot be the observation of ``d`` without silent broadcasting."""
    value_shape = tuple(jnp.shape(value))
    event_shape = tuple(d.event_shape)
    n_event = len(event_shape)
    if n_event and value_shape[len(value_shape) - n_event :] != event_shape:
        raise ShapeMismatchError(
            f"observe('{name}'): value has shape {value_shape} but the distribution's event "
            f"shape is {event_shape}"
        )
    value_batch = value_shape[: len(value_shape) - n_event]
    dist_batch = tuple(d.batch_shape)
    if _enumerating():
        # enumeration adds dims to the left of the plates; compare the overlapping tail only
        dist_batch = dist_batch[len(dist_batch) - len(value_batch) :] if value_batch else ()
    try:
        joint = np.broadcast_shapes(value_batch, dist_batch)
    except ValueError:
        joint = None
    if joint != value_batch:
        result = "they do not broadcast" if joint is None else f"broadcasting them gives {joint}"
        raise ShapeMismatchError(
            f"observe('{name}'): data of shape {value_shape} does not match the distribution's "
            f"batch shape {tuple(d.batch_shape)} (event shape {event_shape}); "
            f"{result}. Reshape the data or the distribution's parameters."
        )


class _CheckPlatedShape(Messenger):
    """Re-check observed data against the distribution as the enclosing plates expanded it.

    ``observe`` sees ``d`` before any ``plate`` has broadcast it; this innermost handler's
    ``postprocess_message`` runs after every plate has acted, so data of shape (3,) under a
    plate of size 5 (or (1,) that would silently broadcast to 5) is caught here.
    """

    def postprocess_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"] and msg.get("cond_indep_stack"):
            _check_observed_shape(msg["name"], msg["fn"], msg["value"])


def _check_mask(name, d, value, mask):
    """``mask`` as a boolean JAX array, checked against the batch shape of ``value``.

    Raises :class:`PPLError` for a mask that is not boolean and
    :class:`ShapeMismatchError` (naming the site) for one that does not broadcast to the
    data's batch shape (the data's shape without ``d``'s event dims)."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise PPLError(
            f"observe('{name}'): mask must be a boolean array (True = observed, False = "
            f"missing), got dtype {mask.dtype}; e.g. mask=~jnp.isnan(y)"
        )
    n_event = len(d.event_shape)
    value_shape = tuple(jnp.shape(value))
    value_batch = value_shape[: len(value_shape) - n_event]
    try:
        joint = np.broadcast_shapes(tuple(mask.shape), value_batch)
    except ValueError:
        joint = None
    if joint != value_batch:
        raise ShapeMismatchError(
            f"observe('{name}'): mask of shape {tuple(mask.shape)} does not broadcast to the "
            f"data's batch shape {value_batch} (data shape {value_shape}, event shape "
            f"{tuple(d.event_shape)}); give one True/False per observation"
        )
    return mask


def _check_nan_data(name, value):
    """Raise :class:`NonFiniteWeightError` if concrete ``value`` holds NaN (missing data
    given without a mask). Traced data are checked after the run, from the weights."""
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        return
    missing = np.isnan(arr)
    if missing.any():
        first = tuple(int(i) for i in np.argwhere(missing)[0])
        raise NonFiniteWeightError(
            f"observe('{name}'): non-finite data: the data hold NaN at {int(missing.sum())} of "
            f"{arr.size} entries (first at index {first}); if they are missing values, pass "
            f"mask=~jnp.isnan(y) to ppl.observe('{name}', d, y, mask=...) so that they "
            "contribute nothing"
        )


def _mask_missing(d, value, mask):
    """``(d.mask(mask), value)``: masked-out entries contribute exactly 0 to the log density.

    NumPyro's ``MaskedDistribution`` scores a masked entry at a feasible point of the
    support (``support.feasible_like``) before zeroing it (the double ``where``), so a NaN
    placeholder in the data yields neither a NaN log density nor a NaN gradient and the
    site keeps the data as given. For a support without a feasible point the placeholder is
    replaced by 0 here instead."""
    masked = d.mask(mask)
    try:
        d.support.feasible_like(value)
    except (NotImplementedError, AttributeError):
        event_mask = jnp.reshape(mask, mask.shape + (1,) * len(d.event_shape))
        value = jnp.where(event_mask, value, jnp.zeros_like(value))
    except Exception:  # noqa: BLE001  (shape trouble: the masked log_prob handles it)
        pass
    return masked, value


def observe(name: str, d, value, mask=None):
    """Condition on ``value`` being drawn from ``d``: adds ``d.log_prob(value)`` to the weight.

    ``mask`` (optional) is a boolean array broadcastable to the data's batch shape: entries
    where it is False are missing and contribute exactly 0 to the log density (NumPyro's
    ``d.mask(mask)``); their data are never read, so they may hold NaN. ppl marginalises
    the missing entries out (no latent site is created for them, unlike NumPyro's
    ``obs_mask``); impute them by posterior predictive: the predictive
    :class:`ppl.semantics.Sampler` of the program conditioned on a posterior draw draws
    every entry, the missing ones included. Inside a :func:`markov` step the mask is that
    step's (pass it through ``xs``, e.g. ``xs=(ys, mask)``).

    Raises :class:`ObserveWithoutValueError` if ``value`` is None (use :func:`sample` for a
    latent choice), :class:`ShapeMismatchError` if the data's (or the mask's) shape does not
    match ``d``, and :class:`NonFiniteWeightError` for concrete data holding NaN without a
    mask. Under :class:`ppl.semantics.Sampler` with ``predictive=True`` the value is drawn
    instead, with the data's shape.
    """
    check_distribution_arguments(name, d)
    if value is None:
        if not _predictive():
            raise ObserveWithoutValueError(
                f"observe('{name}', ...) was given value=None; pass the observed data, "
                f"or use ppl.sample('{name}', ...) for a latent choice"
            )
    else:
        _check_observed_shape(name, d, value)
        if mask is not None:
            mask = _check_mask(name, d, value, mask)
        elif not _predictive():
            _check_nan_data(name, value)
        if _predictive() and not _enumerating():
            # the data's batch shape may be larger than d's (d broadcasts against it);
            # a predictive draw stands in for the data, so it must have the data's shape
            value_batch = tuple(jnp.shape(value))[: jnp.ndim(value) - len(d.event_shape)]
            if tuple(d.batch_shape) != value_batch:
                d = d.expand(value_batch)
        if mask is not None:
            d, value = _mask_missing(d, jnp.asarray(value), mask)
        with _CheckPlatedShape():
            return numpyro.sample(name, d, obs=value, infer={KIND_KEY: "observe"})
    return numpyro.sample(name, d, obs=value, infer={KIND_KEY: "observe"})


class FactorWeight(numpyro.distributions.Unit):
    """The distribution of a :func:`factor` site: NumPyro's ``Unit`` (log density
    ``log_factor``, an empty value), whose batch shape follows ``log_factor`` when a
    ``markov`` step's sites are stacked over time.

    NumPyro's ``promote_batch_shape`` leaves a ``Unit`` unchanged, so after ``scan`` stacks
    a factor site its value and ``log_factor`` have a leading time axis but its batch shape
    does not; enumeration then puts the site's time dim on the wrong axis and funsor fails
    ("Expected the joint log density is a scalar"). Registering the promotion for this
    subclass (below) gives a factor inside a step the time and enumeration dims an
    ``observe`` there gets, without changing ``Unit`` for other NumPyro programs.
    """


@promote_batch_shape.register(FactorWeight)
def _promote_factor_batch_shape(d: FactorWeight):
    promoted = copy.copy(d)
    promoted._batch_shape = tuple(np.broadcast_shapes(d.batch_shape, jnp.shape(d.log_factor)))
    return promoted


class _FactorsInStep(Messenger):
    """Give a ``numpyro.factor`` site written inside a markov step (a plain ``Unit``) the
    :class:`FactorWeight` of :func:`factor`, so it too is stacked over time correctly."""

    def process_message(self, msg):
        if msg["type"] == "sample" and type(msg["fn"]) is numpyro.distributions.Unit:
            msg["fn"] = FactorWeight(msg["fn"].log_factor)


def factor(name: str, log_weight):
    """Add an arbitrary ``log_weight`` to the program's weight (a soft constraint)."""
    log_weight = jnp.asarray(log_weight)
    if not isinstance(log_weight, jax.core.Tracer):
        bad = np.isnan(log_weight) | np.isposinf(log_weight)
        if np.any(bad):
            raise NonFiniteWeightError(
                f"factor('{name}') was given a non-finite log weight {np.asarray(log_weight)}"
            )
    unit = FactorWeight(log_weight)
    return numpyro.sample(name, unit, obs=unit.sample(None), infer={KIND_KEY: "factor"})


def deterministic(name: str, value):
    """Record ``value`` under ``name`` in the trace; it adds nothing to the weight."""
    return numpyro.deterministic(name, value)


def param(name: str, init=None, constraint=None, **kwargs):
    """A learnable parameter (maximum likelihood, variational inference, score climbing)."""
    if constraint is None:
        constraint = numpyro.distributions.constraints.real
    return numpyro.param(name, init, constraint=constraint, **kwargs)


def plate(name: str, size: int, subsample_size=None, dim=None):
    """Conditional independence over ``size`` elements (NumPyro's ``plate``)."""
    return numpyro.plate(name, size, subsample_size=subsample_size, dim=dim)


def current_step():
    """The time index of the :func:`markov` step being run, or None outside one."""
    return _STEP_INDEX.get()


@contextlib.contextmanager
def step_index(t):
    """Set the value :func:`current_step` returns while a markov step runs."""
    token = _STEP_INDEX.set(t)
    try:
        yield
    finally:
        _STEP_INDEX.reset(token)


@contextlib.contextmanager
def intercept_markov(interceptor):
    """Route :func:`markov` calls to ``interceptor(step, init, xs, length)`` within the block."""
    _MARKOV_INTERCEPTORS.append(interceptor)
    try:
        yield
    finally:
        _MARKOV_INTERCEPTORS.pop()


def stacked_placeholder(init, num_steps):
    """Zeros shaped like ``markov``'s result (the carry stacked over ``num_steps``): what an
    intercepted ``markov`` returns to the rest of the program."""
    return jax.tree.map(lambda c: jnp.zeros((num_steps, *jnp.shape(c)), jnp.result_type(c)),
                        init)


@contextlib.contextmanager
def stub_markov(on_call=None):
    """Within the block, a :func:`markov` call runs no step: it calls
    ``on_call(step, init, xs, num_steps)`` (when given; e.g. to capture the step or add a
    factor) and returns :func:`stacked_placeholder`. The one "markov stub" of the
    representations and algorithms that read a program's global sites only."""

    def interceptor(step, init, xs, num_steps):
        if on_call is not None:
            on_call(step, init, xs, num_steps)
        return stacked_placeholder(init, num_steps)

    with intercept_markov(interceptor):
        yield


@contextlib.contextmanager
def wrap_markov_steps(wrapper):
    """Apply ``wrapper(step) -> step`` to every markov step run within the block.

    NumPyro's ``scan`` hides the sites of its body from the handlers outside it; a
    representation whose handler must act inside each step (predictive simulation, the
    tilts of exact enumeration) registers it here.
    """
    token = _STEP_WRAPPERS.set(_STEP_WRAPPERS.get() + (wrapper,))
    try:
        yield
    finally:
        _STEP_WRAPPERS.reset(token)


def in_markov_step(msg) -> bool:
    """True for a site message that comes from inside a markov step (or NumPyro scan)."""
    return "_scan_current_index" in msg.get("infer", {})


def _step_name(step) -> str:
    """How errors name a markov step: its function's name (``step``, ``<lambda>``)."""
    while isinstance(step, functools.partial):
        step = step.func
    return getattr(step, "__name__", None) or type(step).__name__


def _is_jax_leaf(leaf) -> bool:
    """Whether ``lax.scan`` takes ``leaf`` as it is (a JAX or NumPy array, a number)."""
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def _is_number_list(node) -> bool:
    """A non-empty list or tuple of numbers (Python numbers, 0-d arrays or tracers)."""
    return isinstance(node, (list, tuple)) and len(node) > 0 and all(
        not isinstance(e, (list, tuple, dict)) and jnp.ndim(e) == 0 for e in node
    )


def _is_list_of_number_lists(node) -> bool:
    return isinstance(node, list) and len(node) > 0 and all(_is_number_list(e) for e in node)


def per_step_inputs(xs, step=None):
    """``xs`` as ``markov`` scans it. A list or tuple of numbers, as data often arrive,
    becomes one array whose leading axis is time (as a pytree its leaves would be T
    scalars, none with a time axis), wherever it sits in ``xs`` (``(ys, us)`` with two such
    lists is two sequences); a leaf JAX does not take but NumPy can read (a pandas
    ``Series``, an xarray ``DataArray``) becomes a NumPy array. A list of lists of numbers
    is refused with a :class:`ShapeMismatchError`: rows of a (T, d) table and d sequences
    of length T look the same (``np.asarray(rows)`` or a tuple of arrays says which).
    Anything else is left to :func:`_sequence_length`'s checks."""

    def convert(node):
        if _is_number_list(node):
            return jnp.asarray(node)
        if _is_list_of_number_lists(node):
            where = f"markov(step '{_step_name(step)}')" if step is not None else "markov"
            raise ShapeMismatchError(
                f"{where}: `xs` holds a list of {len(node)} lists of numbers, which could be "
                "the rows of a table (time first) or several sequences; pass "
                "np.asarray(rows) for rows (shape (T, d)), or a tuple or dict of arrays for "
                "several sequences"
            )
        if not _is_jax_leaf(node) and hasattr(node, "__array__"):
            return np.asarray(node)
        return node

    return jax.tree.map(
        convert, xs, is_leaf=lambda n: _is_number_list(n) or _is_list_of_number_lists(n)
    )


def _sequence_length(xs, length, step=None):
    """The number of time steps T of a markov call (``xs``'s leading axis or ``length``).

    Raises a named error for a missing, disagreeing or empty time axis: T = 0 (an empty
    ``xs`` or ``length=0``) would leave every interpretation of the program without a
    step (no state, no transition to read), so it is refused here, at the markov call,
    whatever runs the program."""
    where = f"markov(step '{_step_name(step)}')" if step is not None else "markov"
    leaves = [] if xs is None else jax.tree.leaves(xs)
    if not leaves:
        if length is None:
            raise PPLError(f"{where} needs the per-step inputs `xs` or a `length`")
        if int(length) < 1:
            raise ShapeMismatchError(
                f"{where}: length must be >= 1, got length={length} (T = {int(length)} time "
                "steps); a markov call needs at least one step"
            )
        return int(length)
    lengths = {int(jnp.shape(leaf)[0]) if jnp.ndim(leaf) else -1 for leaf in leaves}
    if -1 in lengths or len(lengths) != 1:
        raise ShapeMismatchError(
            f"{where}: every array in `xs` needs the same leading (time) axis; got lengths "
            f"{sorted(lengths)}"
        )
    (n,) = lengths
    if length is not None and int(length) != n:
        raise ShapeMismatchError(f"{where}: length={length} but xs has {n} steps")
    if n == 0:
        shapes = [tuple(jnp.shape(leaf)) for leaf in leaves]
        raise ShapeMismatchError(
            f"{where}: xs is empty (leading axis of length 0, shape(s) {shapes}), so T = 0 "
            "time steps; a markov call needs at least one step. Skip the markov call (or "
            "the whole run) when there are no data"
        )
    return n


def _promotes_to(init_leaf, dtype) -> bool:
    """Whether ``lax.scan`` lets a carry that starts as ``init_leaf`` take ``dtype``: a
    weakly typed leaf (a Python number given as ``init``) that JAX's type promotion with
    ``dtype`` turns into ``dtype`` (``init=0`` may become float32, ``init=0.0`` may not
    become int32)."""
    try:
        weak = bool(jax.typeof(init_leaf).weak_type)
    except (AttributeError, TypeError):
        return False
    return weak and jnp.result_type(init_leaf, dtype) == dtype


def check_carry(before, after, step=None, shapes=True, init=None):
    """Raise :class:`ShapeMismatchError` naming the markov ``step`` if it returned a carry
    whose structure or shape (when ``shapes``; not under enumeration, which adds dims)
    differs from the carry it received, or, given the markov call's ``init``, whose dtype
    does: what ``lax.scan`` would refuse with a bare ``TypeError`` (as there, a carry that
    starts from a Python number may take the dtype type promotion gives it)."""
    where = f"markov(step '{_step_name(step)}')" if step is not None else "markov"
    tree_before, tree_after = jax.tree.structure(before), jax.tree.structure(after)
    if tree_before != tree_after:
        raise ShapeMismatchError(
            f"{where}: the step returned a carry of structure {tree_after} but received "
            f"{tree_before}; a step must return a carry shaped like its input"
        )
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(before)[0]]
    init_leaves = None if init is None else jax.tree.leaves(init)
    leaves = zip(paths, jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    for i, (path, a, b) in enumerate(leaves):
        leaf = f"the carry{path}" if path else "the carry"
        if shapes and jnp.shape(a) != jnp.shape(b):
            raise ShapeMismatchError(
                f"{where}: the step changed the shape of {leaf} from {jnp.shape(a)} to "
                f"{jnp.shape(b)}; a step must return a carry shaped like its input (give "
                f"`init` the shape the step returns, e.g. init=jnp.zeros({jnp.shape(b)}))"
            )
        if init is None:
            continue
        dtype_a, dtype_b = jnp.asarray(a).dtype, jnp.asarray(b).dtype
        if dtype_a != dtype_b and not _promotes_to(init_leaves[i], dtype_b):
            raise ShapeMismatchError(
                f"{where}: the step changed the dtype of {leaf} from {dtype_a} to {dtype_b} "
                f"(shape {jnp.shape(b)}); a step must return a carry of its input's dtype. "
                f"Give `init` the dtype the step returns (e.g. init=jnp.asarray(0.0) or "
                f"init=jnp.asarray(init, jnp.{dtype_b})), or cast the returned carry "
                f"(carry.astype(jnp.{dtype_a}))"
            )


def _step_batch_shape(fn) -> tuple:
    """The batch shape NumPyro's ``scan`` gives a step's distribution once its sites are
    stacked over time, less the time axis: ``promote_batch_shape``'s, read from the
    parameters' shapes (a ``mask`` is dropped, as there)."""
    try:
        return tuple(promote_batch_shape(fn).batch_shape)
    except Exception:  # noqa: BLE001  (a user-written distribution NumPyro cannot promote)
        return tuple(fn.batch_shape)


def _check_step_observed_shape(where, name, fn, value):
    """Inside a markov step the data of one step must have exactly the distribution's
    batch shape (after the step's plates) + event shape.

    Outside ``markov`` data may have more batch dims than the distribution (it broadcasts
    against them, as (T, 1) data under a scalar ``Normal``). Inside a step that gives
    wrong answers as soon as the steps are stacked over time (NumPyro's ``scan``, which
    importance, mh, nuts, svi and exact read the program through): the stacked
    distribution has batch shape (T,) + its own, the stacked data (T,) + the step's, and
    their broadcast scores every step's data under every step's distribution."""
    event_shape = tuple(fn.event_shape)
    value_shape = tuple(jnp.shape(value))
    value_batch = value_shape[: len(value_shape) - len(event_shape)]
    dist_batch = _step_batch_shape(fn)
    if _enumerating():
        # enumeration adds dims to the left of the step's plates; compare the tail
        dist_batch = dist_batch[len(dist_batch) - len(value_batch) :] if value_batch else ()
    if value_batch == dist_batch:
        return
    fix = (
        f"pass the data so that one step's slice has the distribution's shape (e.g. "
        f"xs=ys of shape (T,) for a scalar observation per step, not ys[:, None]), or give "
        f"the distribution the data's batch shape: observe under a plate of that size in "
        f"the step, or d.expand({value_batch}) (d.expand({value_batch})"
        f".to_event({len(value_batch)}) to score them as one event)"
    )
    raise ShapeMismatchError(
        f"{where}: observe('{name}'): the step's data has shape {value_shape} but the "
        f"distribution's batch shape is {dist_batch} (event shape {event_shape}); inside a "
        f"markov step they must agree exactly, as stacking the steps over time would "
        f"broadcast them wrongly. Fix: {fix}"
    )


def _names_outside_step() -> tuple:
    """The sample and deterministic sites the traces around a markov call have recorded
    so far (up to a ``block``, which hides what is inside from the traces beyond it), each
    trace's with the ``scope`` handlers between the call and it (which prefix a step
    site's name before that trace sees it): ``((scopes, names), ...)``."""
    seen, scopes = [], []
    for handler in reversed(_PYRO_STACK):
        if isinstance(handler, numpyro.handlers.block):
            break
        if isinstance(handler, numpyro.handlers.scope):
            scopes.append(handler)
        elif isinstance(handler, numpyro.handlers.trace):
            names = frozenset(
                n for n, site in handler.trace.items()
                if site.get("type") in ("sample", "deterministic")
            )
            if names:
                seen.append((tuple(scopes), names))
    return tuple(seen)


def _reuses_outside_name(msg, outside) -> bool:
    """Whether site ``msg`` of a step, named as each trace outside will name it, is
    already in that trace (see :func:`_names_outside_step`)."""
    for scopes, names in outside:
        name = msg["name"]
        for s in scopes:
            if msg["type"] not in s.hide_types:
                name = f"{s.prefix}{s.divider}{name}"
        if name in names:
            return True
    return False


class _StepChecks(Messenger):
    """The checks one run of a markov step passes under every interpretation of the
    program (NumPyro's ``scan``, :class:`ppl.semantics.Sequential` stepping, enumeration,
    the eager first step of :func:`ppl.semantics.trace.check_arguments`): a site name used
    twice in the step or reusing a name from outside the step
    (:class:`~ppl.errors.DuplicateSiteError`, before NumPyro's bare ``AssertionError``),
    and observed data whose shape is not the distribution's
    (:class:`ShapeMismatchError`, :func:`_check_step_observed_shape`). Its
    ``process_message`` runs after the step's plates have expanded the distribution and
    before any trace outside the step records the site.

    Only the step's own sites are checked: a site that a handler outside the step adds
    while it processes one of them (the tilts of :class:`ppl.semantics.Enumerated`,
    which observe an enumerated value) arrives while that site is still in flight, and
    is the handler's, not the program's."""

    def __init__(self, fn, where, outside):
        self.where = where
        self.outside = outside
        self.seen = set()
        self.in_flight = None  # the step's site being processed
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] not in ("sample", "deterministic") or "name" not in msg:
            return
        if self.in_flight is not None:
            return
        self.in_flight = msg
        name = msg["name"]
        if name in self.seen:
            raise DuplicateSiteError(
                f"{self.where}: the site name '{name}' is used twice in one step; give "
                "every random choice of the step a unique name"
            )
        if _reuses_outside_name(msg, self.outside):
            raise DuplicateSiteError(
                f"{self.where}: the step's site '{name}' reuses the name of a site outside "
                "the step; a step's sites are stacked over time and need names of their own "
                f"(rename one of the two, e.g. '{name}_t')"
            )
        self.seen.add(name)
        if (
            msg["type"] == "sample" and msg["is_observed"] and msg["value"] is not None
            and not isinstance(msg["fn"], numpyro.distributions.Unit)
        ):
            _check_step_observed_shape(self.where, name, msg["fn"], msg["value"])

    def postprocess_message(self, msg):
        if msg is self.in_flight:
            self.in_flight = None


def _checked_step(step, init, outside):
    """``step`` wrapped so that each of its runs passes :class:`_StepChecks` and
    :func:`check_carry` (against the markov call's ``init``), whichever interpretation
    runs it."""
    where = f"markov(step '{_step_name(step)}')"

    @functools.wraps(step)
    def checked(carry, x):
        new_carry = _StepChecks(step, where, outside)(carry, x)
        new_carry = jax.tree.map(jnp.asarray, new_carry)
        check_carry(carry, new_carry, step, shapes=not _enumerating(), init=init)
        return new_carry

    return checked


def markov(step, init, xs=None, length=None):
    """Unfold ``carry = step(carry, x)`` over time and return the stacked carries.

    ``xs`` is a pytree of per-step inputs with a leading time axis (or None, with ``length``
    steps, in which case ``x`` is None); a plain list of numbers and a pandas ``Series``
    are read as arrays (:func:`per_step_inputs`). The random choices made inside one call
    of ``step`` are that step's; in the program's trace each site is stacked along a
    leading time axis. Read as a whole program this is NumPyro's ``scan`` (so NUTS, SVI
    and enumeration see it); :class:`ppl.semantics.Sequential` reads it step by step as a
    state-space model.

    Every interpretation runs the step through the same checks, so a bad program gets
    the same named error under every combinator: T = 0 steps and a step that changes its
    carry's shape or dtype (:class:`ShapeMismatchError`), a site name used twice in a step
    or shared with a site outside it (:class:`~ppl.errors.DuplicateSiteError`), and
    observed data whose per-step shape is not the distribution's
    (:class:`ShapeMismatchError`; inside a step, data must not broadcast against the
    distribution).
    """
    xs = per_step_inputs(xs, step)
    num_steps = _sequence_length(xs, length, step)
    init = jax.tree.map(jnp.asarray, init)
    step = _checked_step(step, init, _names_outside_step())
    if _MARKOV_INTERCEPTORS:
        return _MARKOV_INTERCEPTORS[-1](step, init, xs, num_steps)

    def body(carry, t_and_x):
        t, x = t_and_x
        wrapped = _FactorsInStep(step)
        for wrapper in _STEP_WRAPPERS.get():
            wrapped = wrapper(wrapped)
        with step_index(t):
            new_carry = wrapped(carry, x)
        new_carry = jax.tree.map(jnp.asarray, new_carry)
        return new_carry, new_carry

    _, carries = _numpyro_scan(body, init, (jnp.arange(num_steps), xs), length=num_steps)
    return carries
