"""Sequential: a ``markov`` program read as a state-space model, one step at a time.

The sequential representation of Ścibior et al. (POPL 2018, section 6): a program that can
be suspended between observations. A program of the form

    theta ~ globals                     (sites before the markov call: parameters)
    x_0 = init                          (a fixed carry)
    for t = 1..T:  x_t ~ m_theta(x_{t-1}, .) ;  weight *= g_theta(x_t, y_t)

denotes the measure p(theta) prod_t m_theta(x_{t-1}, dx_t) g_theta(x_t, y_t). Here the
*state* at time t is the set of latent sites of step t (and the carry the step returns);
``m`` is the density of those sites given the previous carry and ``g`` is the product of
the step's ``observe``/``factor`` terms. :class:`StateSpace` exposes the transition (draw,
and density of given values), the per-step log weight, and the whole-path log joint, so
an algorithm can advance a population one step at a time inside ``lax.scan``.

The state at time 0. A global latent site whose value the step never reads (it only flows
into the ``init`` carry, as ``x0 = sample("x0", ...)`` in ``markov(step, init=x0, ...)``)
belongs to the initial law M0, not to the parameters: :func:`step_reads` finds, by following
the step's jaxpr, which global sites the step depends on, and :meth:`Sequential.initial_sites`
names the others. So the program reads as the Feynman-Kac model (Del Moral 2004; Chopin &
Papaspiliopoulos 2020, section 5.1, the ``FeynmanKac`` of their ``particles``)

    M0(d(z, c_{-1})) = p(z | theta) with c_{-1} = init(theta, z),  G0 = global observe terms,
    M_t(c_{t-1}, dx_t) = m_theta(c_{t-1}, x_t),                     G_t = g_theta(x_t, y_t),

with z the initial sites and theta the parameters (the other global sites, held fixed by a
smoother or drawn per particle by SMC).

Restrictions, checked with clear errors: exactly one ``markov`` call, and no ``sample`` or
``observe`` site after it (a deterministic site after it is dropped: it would depend on
the path, which this reading does not build).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.primitives import _PYRO_STACK
from ppl.semantics.trace import DETERMINISTIC, LATENT, Trace, _Recorder, from_numpyro, record

from ppl.errors import UnsupportedModelError
from ppl.primitives import step_index, stub_markov


def replay_key():
    """The key of replays and of structure-only runs (every draw substituted or unused);
    built on call, in the default PRNG implementation, so no key exists at import time."""
    return jax.random.key(0)


class StepResult(NamedTuple):
    """One transition: new carry, the step's latent values, log g and log m."""

    carry: object
    values: dict
    log_weight: jnp.ndarray
    log_transition: jnp.ndarray


def _slice(tree, t):
    # jnp.asarray: a numpy ``xs`` (closed over as concrete data) indexed by a traced ``t``
    return None if tree is None else jax.tree.map(lambda a: jnp.asarray(a)[t], tree)


class StateSpace:
    """A markov program with its global sites drawn (or fixed): steppable in ``lax.scan``."""

    def __init__(self, step_fn, init, xs, num_steps, globals_trace: Trace, value=None):
        self.step_fn = step_fn
        self.init = init
        self.xs = xs
        self.num_steps = num_steps
        self.globals = globals_trace
        self.value = value

    @property
    def params(self) -> dict:
        """Values of the global latent sites (the parameters of the state-space model)."""
        return self.globals.select(LATENT)

    def inputs(self, t):
        """The per-step input ``x`` passed to step ``t`` (0-based)."""
        return _slice(self.xs, t)

    def step_trace(self, key, t, carry, values=None):
        """Run step ``t`` from ``carry`` (its latent sites drawn with ``key``, or fixed to
        ``values``): ``(new carry, the step's Trace)``, every site of the step recorded
        (latent, observed, factor and deterministic, with their log densities)."""
        with step_index(t):
            new_carry, trace, _ = record(
                self.step_fn, key, (carry, self.inputs(t)), substitutions=values
            )
        # the step checks its carry (ppl.primitives.check_carry) in every interpretation
        return jax.tree.map(jnp.asarray, new_carry), trace

    def _run(self, key, t, carry, values):
        new_carry, trace = self.step_trace(key, t, carry, values)
        return StepResult(new_carry, trace.select(LATENT), trace.log_likelihood, trace.log_prior)

    def carry_flows(self) -> bool:
        """Whether the carry a step returns depends on the carry it was given once the
        step's latent values are fixed (follows the step's jaxpr, conservatively).

        When it does not (``return x`` for a state ``x`` the step samples, or any function
        of the step's own draws and input), step t's choices touch only step t's and step
        t+1's densities: the Markov blanket a local MH move needs."""
        values = jax.eval_shape(lambda: self.step(replay_key(), 0, self.init).values)

        def new_carry(carry, values):
            return self.replay_step(0, carry, values).carry

        closed = jax.make_jaxpr(new_carry)(_abstract(self.init), values)
        flags = [True] * len(jax.tree.leaves(self.init))
        flags += [False] * (len(closed.jaxpr.invars) - len(flags))
        return _reaches_outputs(closed.jaxpr, flags)

    def step(self, key, t, carry) -> StepResult:
        """Draw step ``t``'s latent sites from the transition given ``carry``."""
        return self._run(key, t, carry, None)

    def replay_step(self, t, carry, values) -> StepResult:
        """Run step ``t`` from ``carry`` with its latent sites fixed to ``values``."""
        return self._run(replay_key(), t, carry, values)

    def log_transition(self, t, carry, values):
        """log m(carry, values): density of step ``t``'s latent values given ``carry``."""
        return self.replay_step(t, carry, values).log_transition

    def log_joint(self, path: dict):
        """log p(theta, x_{1:T}, y_{1:T}) for a path (site -> values stacked over time)."""

        def body(carry, t):
            result = self.replay_step(t, carry, _slice(path, t))
            return result.carry, result.log_weight + result.log_transition

        _, per_step = jax.lax.scan(body, self.init, jnp.arange(self.num_steps))
        return self.globals.log_joint + per_step.sum()

    def simulate(self, key):
        """Run the transition forward from ``init``: ``(path, carries, per-step log g)``."""

        def body(carry, key_t):
            key, t = key_t
            result = self.step(key, t, carry)
            return result.carry, (result.values, result.carry, result.log_weight)

        keys = jax.random.split(key, self.num_steps)
        _, (path, carries, log_weights) = jax.lax.scan(
            body, self.init, (keys, jnp.arange(self.num_steps))
        )
        return path, carries, log_weights


def _innermost_recorder():
    return next(h for h in reversed(_PYRO_STACK) if isinstance(h, _Recorder))


class Sequential:
    """Read ``model`` (one ``ppl.markov`` call after its global sites) step by step."""

    def __init__(self, model):
        self.model = model

    def state_space(self, key, *args, params=None, **kwargs) -> StateSpace:
        """Draw the global sites from the prior (or fix them to ``params``) and return the
        :class:`StateSpace` of the markov call."""
        captured = {}

        def interceptor(step, init, xs, num_steps):
            if captured:
                raise UnsupportedModelError(
                    "Sequential reads a program with exactly one ppl.markov call; "
                    "this one calls markov twice"
                )
            captured.update(
                step=step, init=init, xs=xs, num_steps=num_steps,
                sites_before=len(_innermost_recorder().trace),
            )

        with stub_markov(interceptor):
            value, _, raw = record(self.model, key, args, kwargs, substitutions=params)
        if not captured:
            raise UnsupportedModelError(
                "Sequential needs a program that calls ppl.markov; this one does not"
            )
        globals_trace = self._global_sites(raw, captured["sites_before"])
        return StateSpace(
            captured["step"], captured["init"], captured["xs"], captured["num_steps"],
            globals_trace, value,
        )

    def initial_sites(self, *args, fixed=None, **kwargs) -> tuple[str, ...]:
        """The global latent sites (not in ``fixed``) that form the state at time 0: those
        the markov step does not read (see :func:`step_reads`), in program order."""
        fixed = dict(fixed or {})
        ssm = self.state_space(replay_key(), *args, params=fixed, **kwargs)
        read = set(step_reads(self.model, args, kwargs, fixed))
        return tuple(n for n in ssm.globals.names(LATENT) if n not in fixed and n not in read)

    @staticmethod
    def _global_sites(raw, sites_before) -> Trace:
        trace = from_numpyro(raw)
        names = list(raw)
        before = set(names[:sites_before])
        after = [n for n in trace.names() if n not in before]
        late = [n for n in after if trace.kind(n) != DETERMINISTIC]
        if late:
            raise UnsupportedModelError(
                f"Sequential: site(s) {late} come after the ppl.markov call; move them "
                "before it or into the step"
            )
        kinds = tuple((n, k) for n, k in trace.kinds if n in before)
        values = {n: trace.values[n] for n, _ in kinds}
        log_probs = {n: lp for n, lp in trace.log_probs.items() if n in before}
        return Trace(values, log_probs, kinds)


# --------------------------------------------------------------------------- dependencies


def _is_literal(var) -> bool:
    return type(var).__name__ == "Literal"


def _reaches_outputs(jaxpr, dependent_inputs) -> bool:
    """Whether any output of ``jaxpr`` depends on the flagged inputs (forward reachability
    over the equations; an equation with one dependent input taints all its outputs, so a
    nested scan or cond counts as a whole: conservative, never a false "independent")."""
    tainted = {v for v, d in zip(jaxpr.invars, dependent_inputs, strict=True) if d}
    for eqn in jaxpr.eqns:
        if any(not _is_literal(v) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    return any(not _is_literal(v) and v in tainted for v in jaxpr.outvars)


def _abstract(tree):
    """Array leaves as ``ShapeDtypeStruct`` (so tracers of an enclosing jit can be read)."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
        if isinstance(a, (jax.Array, np.ndarray)) else a, tree
    )


def step_reads(model, args, kwargs, fixed=None) -> tuple[str, ...]:
    """The global latent sites (not in ``fixed``) whose values the markov step reads.

    Traces the program with its global values as inputs and its first step from an
    independent carry, and follows the jaxpr: a site is read when the step's draws, log
    densities or new carry depend on it other than through the carry. The others only flow
    into the ``init`` carry (or nowhere): they are the state at time 0.
    """
    fixed = dict(fixed or {})
    ssm = Sequential(model).state_space(replay_key(), *args, params=fixed, **kwargs)
    free = [n for n in ssm.globals.names(LATENT) if n not in fixed]
    if not free:
        return ()
    values = {n: ssm.globals.values[n] for n in free}
    leaves, treedef = jax.tree.flatten((args, kwargs))
    # tracers of an enclosing jit / scan are inputs; concrete arrays are closed over (a
    # model may need its data concrete, as in ``int(np.max(y))``)
    arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.core.Tracer)]

    def first_step(values, carry, array_leaves, held):
        full = list(leaves)
        for i, a in zip(arrays, array_leaves, strict=True):
            full[i] = a
        a, k = jax.tree.unflatten(treedef, full)
        inner = Sequential(model).state_space(replay_key(), *a, params={**held, **values}, **k)
        result = inner.step(replay_key(), 0, carry)
        return result.carry, result.log_weight, result.log_transition, result.values

    # every traced input abstract, so that tracers of an enclosing jit are never closed over
    closed = jax.make_jaxpr(first_step)(
        _abstract(values), _abstract(ssm.init), _abstract([leaves[i] for i in arrays]),
        _abstract(fixed),
    )
    counts = [len(jax.tree.leaves(values[n])) for n in free]
    read = []
    start = 0
    for name, count in zip(free, counts, strict=True):
        flags = [False] * len(closed.jaxpr.invars)
        flags[start:start + count] = [True] * count
        start += count
        if _reaches_outputs(closed.jaxpr, flags):
            read.append(name)
    return tuple(read)
