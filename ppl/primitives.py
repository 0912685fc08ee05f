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

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.contrib.control_flow import scan as _numpyro_scan
from numpyro.primitives import _PYRO_STACK, Messenger

from ppl.errors import NonFiniteWeightError, ObserveWithoutValueError, ShapeMismatchError

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


def sample(name: str, d, *, sample_shape=(), infer=None):
    """A latent random choice named ``name`` drawn from distribution ``d``."""
    return numpyro.sample(name, d, sample_shape=sample_shape, infer=infer)


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


def observe(name: str, d, value):
    """Condition on ``value`` being drawn from ``d``: adds ``d.log_prob(value)`` to the weight.

    Raises :class:`ObserveWithoutValueError` if ``value`` is None (use :func:`sample` for a
    latent choice) and :class:`ShapeMismatchError` if the data's shape does not match ``d``.
    Under :class:`ppl.semantics.Sampler` with ``predictive=True`` the value is drawn instead,
    with the data's shape.
    """
    if value is None:
        if not _predictive():
            raise ObserveWithoutValueError(
                f"observe('{name}', ...) was given value=None; pass the observed data, "
                f"or use ppl.sample('{name}', ...) for a latent choice"
            )
    else:
        _check_observed_shape(name, d, value)
        if _predictive() and not _enumerating():
            # the data's batch shape may be larger than d's (d broadcasts against it);
            # a predictive draw stands in for the data, so it must have the data's shape
            value_batch = tuple(jnp.shape(value))[: jnp.ndim(value) - len(d.event_shape)]
            if tuple(d.batch_shape) != value_batch:
                d = d.expand(value_batch)
        with _CheckPlatedShape():
            return numpyro.sample(name, d, obs=value, infer={KIND_KEY: "observe"})
    return numpyro.sample(name, d, obs=value, infer={KIND_KEY: "observe"})


def factor(name: str, log_weight):
    """Add an arbitrary ``log_weight`` to the program's weight (a soft constraint)."""
    log_weight = jnp.asarray(log_weight)
    if not isinstance(log_weight, jax.core.Tracer):
        bad = np.isnan(log_weight) | np.isposinf(log_weight)
        if np.any(bad):
            raise NonFiniteWeightError(
                f"factor('{name}') was given a non-finite log weight {np.asarray(log_weight)}"
            )
    unit = numpyro.distributions.Unit(log_weight)
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


def _sequence_length(xs, length):
    if xs is None:
        if length is None:
            raise ValueError("markov needs the inputs `xs` or a `length`")
        if int(length) < 1:
            raise ValueError(f"markov: length must be >= 1, got {length}")
        return int(length)
    lengths = {int(jnp.shape(leaf)[0]) if jnp.ndim(leaf) else -1 for leaf in jax.tree.leaves(xs)}
    if -1 in lengths or len(lengths) != 1:
        raise ShapeMismatchError(
            f"markov: every array in `xs` needs the same leading (time) axis; got lengths "
            f"{sorted(lengths)}"
        )
    (n,) = lengths
    if length is not None and int(length) != n:
        raise ShapeMismatchError(f"markov: length={length} but xs has {n} steps")
    return n


def check_carry(before, after):
    """Raise :class:`ShapeMismatchError` if a markov step changed its carry's structure."""
    tree_before, tree_after = jax.tree.structure(before), jax.tree.structure(after)
    if tree_before != tree_after:
        raise ShapeMismatchError(
            f"markov: the step returned a carry of structure {tree_after} but received "
            f"{tree_before}; a step must return a carry shaped like its input"
        )
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        if jnp.shape(a) != jnp.shape(b):
            raise ShapeMismatchError(
                f"markov: the step changed the carry's shape from {jnp.shape(a)} to "
                f"{jnp.shape(b)}; a step must return a carry shaped like its input"
            )


def markov(step, init, xs=None, length=None):
    """Unfold ``carry = step(carry, x)`` over time and return the stacked carries.

    ``xs`` is a pytree of per-step inputs with a leading time axis (or None, with ``length``
    steps, in which case ``x`` is None). The random choices made inside one call of ``step``
    are that step's; in the program's trace each site is stacked along a leading time axis.
    Read as a whole program this is NumPyro's ``scan`` (so NUTS, SVI and enumeration see it);
    :class:`ppl.semantics.Sequential` reads it step by step as a state-space model.
    """
    num_steps = _sequence_length(xs, length)
    init = jax.tree.map(jnp.asarray, init)
    if _MARKOV_INTERCEPTORS:
        return _MARKOV_INTERCEPTORS[-1](step, init, xs, num_steps)

    def body(carry, t_and_x):
        t, x = t_and_x
        wrapped = step
        for wrapper in _STEP_WRAPPERS.get():
            wrapped = wrapper(wrapped)
        with step_index(t):
            new_carry = wrapped(carry, x)
        new_carry = jax.tree.map(jnp.asarray, new_carry)
        if not _enumerating():
            check_carry(carry, new_carry)
        return new_carry, new_carry

    _, carries = _numpyro_scan(body, init, (jnp.arange(num_steps), xs), length=num_steps)
    return carries
