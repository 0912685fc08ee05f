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

Restrictions, checked with clear errors: exactly one ``markov`` call, and no ``sample`` or
``observe`` site after it (a deterministic site after it is dropped: it would depend on
the path, which this reading does not build).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.primitives import _PYRO_STACK
from ppl.semantics.trace import DETERMINISTIC, LATENT, Trace, _Recorder, from_numpyro, record

from ppl.errors import UnsupportedModelError
from ppl.primitives import check_carry, intercept_markov, step_index


class StepResult(NamedTuple):
    """One transition: new carry, the step's latent values, log g and log m."""

    carry: object
    values: dict
    log_weight: jnp.ndarray
    log_transition: jnp.ndarray


def _slice(tree, t):
    return None if tree is None else jax.tree.map(lambda a: a[t], tree)


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

    def _run(self, key, t, carry, values):
        with step_index(t):
            new_carry, trace, _ = record(
                self.step_fn, key, (carry, self.inputs(t)), substitutions=values
            )
        new_carry = jax.tree.map(jnp.asarray, new_carry)
        check_carry(carry, new_carry)
        return StepResult(new_carry, trace.select(LATENT), trace.log_likelihood, trace.log_prior)

    def step(self, key, t, carry) -> StepResult:
        """Draw step ``t``'s latent sites from the transition given ``carry``."""
        return self._run(key, t, carry, None)

    def replay_step(self, t, carry, values) -> StepResult:
        """Run step ``t`` from ``carry`` with its latent sites fixed to ``values``."""
        return self._run(jax.random.PRNGKey(0), t, carry, values)

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
            return jax.tree.map(lambda c: jnp.zeros((num_steps, *jnp.shape(c)), c.dtype), init)

        with intercept_markov(interceptor):
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
