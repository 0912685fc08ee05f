"""Local single-site MH moves on ``markov`` programs: one time step per move, O(1) in T.

A trace-MH move that regenerates a latent choice from its prior is accepted with the ratio
of the densities of every *other* site (Wingate, Stuhlmüller & Goodman 2011, section 3;
monad-bayes' ``mhTrans``, Ścibior et al. 2018, section 7). On a state-space program

    theta ~ p(theta),  c_{-1} = init(theta),
    for t = 0..T-1:  x_t ~ m_theta(c_{t-1}, .),  c_t = f(c_{t-1}, x_t),
                     weight *= g_theta(c_{t-1}, x_t, y_t)

regenerating step s's choices x_s ~ m_theta(c_{s-1}, .) changes c_s, hence step s's
``observe``/``factor`` terms and the densities of step s+1, and nothing else *when the new
carry does not depend on the old one once the step's choices are fixed*
(:meth:`~ppl.semantics.sequential.StateSpace.carry_flows` is False: ``c_t = f(x_t, y_t)``,
as in ``return x`` for the state ``x`` a step samples). Then

    log a = [log g(c_{s-1}, x'_s, y_s) - log g(c_{s-1}, x_s, y_s)]
          + [log p_{s+1}(x_{s+1}, y_{s+1} | c'_s) - log p_{s+1}(x_{s+1}, y_{s+1} | c_s)]     (*)

(the second bracket: every site of step s+1; absent at the last step), the Markov blanket of
step s. Each term is a run of one step, so a move costs O(1) in T. The previous carry
c_{s-1} is f(., x_{s-1}, y_{s-1}) of the stored path, recomputed by replaying step s-1
(from any carry: the criterion says it does not matter).

:func:`markov_layout` decides, once per program and argument shapes, whether a program can
be moved this way (one ``markov`` call, no site after it, the criterion above, step sites
stacked as one step records them); :func:`step_move` is the move on a whole program's
:class:`~ppl.semantics.trace.Trace` (used by :func:`ppl.inference.mh`), and
:func:`path_step_move` / :func:`initial_site_move` the moves on a resample-move particle's
path up to step t (used by :func:`ppl.inference.rmsmc`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from ppl.semantics.sequential import Sequential, StateSpace, replay_key, step_reads
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, OBSERVED, Trace

from ppl.errors import PPLError

__all__ = [
    "MarkovLayout",
    "initial_site_move",
    "markov_layout",
    "path_step_move",
    "previous_carry",
    "propose_step",
    "step_move",
    "write_steps",
]

SCORED = (OBSERVED, FACTOR)


class MarkovLayout(NamedTuple):
    """Static facts about a ``markov`` program that local moves need."""

    num_steps: int
    global_sites: tuple  # latent sites before the markov call, program order
    step_sites: tuple  # every site of one step (any kind), program order
    step_latents: tuple  # the latent ones among them
    initial_sites: tuple  # global sites the step does not read (the time-0 state)


def state_space(model, args, kwargs, params=None) -> StateSpace:
    """The program's :class:`StateSpace` with its global latent sites fixed to ``params``
    (the program up to its ``markov`` call; O(1) in T)."""
    return Sequential(model).state_space(replay_key(), *args, params=params, **kwargs)


def markov_layout(model, args, kwargs, trace: Trace | None = None):
    """``(MarkovLayout, None)`` when every step of ``model`` can be moved locally, else
    ``(None, reason)``.

    Local moves need: exactly one ``ppl.markov`` call and no site after it; a carry that
    does not flow (:meth:`StateSpace.carry_flows`); and, if ``trace`` (a whole-program
    trace) is given, its step sites stacked as ``(T, *one step's shape)``."""
    try:
        ssm = state_space(model, args, kwargs)
    except PPLError as error:
        return None, str(error)
    T = ssm.num_steps
    _, step = jax.eval_shape(lambda: ssm.step_trace(replay_key(), 0, ssm.init))
    globals_ = tuple(ssm.globals.names())
    if trace is not None:
        extra = [n for n in trace.names() if n not in globals_ and n not in step.names()]
        if extra:
            return None, f"site(s) {extra} are outside the markov step and after it"
        for n in step.names():
            if n not in trace.values:
                return None, f"step site {n!r} is not in the program's trace"
            for what, whole, one in (("value", trace.values, step.values),
                                     ("log density", trace.log_probs, step.log_probs)):
                if n in one and _shape(whole[n]) != (T, *_shape(one[n])):
                    return None, (f"the {what} of step site {n!r} is not stacked over the "
                                  f"{T} steps as one step records it")
    if ssm.carry_flows():
        return None, ("the carry a step returns depends on the carry it was given (beyond "
                      "the step's own draws)")
    global_latents = tuple(ssm.globals.latent_names)
    read = set(step_reads(model, args, kwargs)) if global_latents else set()
    layout = MarkovLayout(
        num_steps=T,
        global_sites=global_latents,
        step_sites=tuple(step.names()),
        step_latents=tuple(step.latent_names),
        initial_sites=tuple(n for n in global_latents if n not in read),
    )
    return layout, None


# --------------------------------------------------------------------------- pieces


def _shape(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else jnp.shape(x)


def _at(tree: dict, t) -> dict:
    return {n: jnp.asarray(v)[t] for n, v in tree.items()}


def previous_carry(ssm: StateSpace, path: dict, s):
    """c_{s-1}: ``init`` at s = 0, else the carry step s-1 returns on the path's values
    (replayed from ``init``: under the local-move criterion the carry it was given does not
    matter)."""
    prev = jnp.maximum(s - 1, 0)
    carry = ssm.replay_step(prev, ssm.init, _at(path, prev)).carry
    return jax.tree.map(lambda a, b: jnp.where(s == 0, b, a), carry, ssm.init)


def _put(stacked, t, value):
    value = jnp.reshape(jnp.asarray(value), jnp.shape(stacked)[1:])
    return stacked.at[t].set(value.astype(stacked.dtype))


def _write_step(trace: Trace, t, step: Trace) -> Trace:
    """``trace`` with step ``t``'s latent / deterministic values and every log density
    replaced by the one-step trace ``step``'s (observed values stay the data). Writes in
    place: O(1) in T inside a compiled loop."""
    values, log_probs = dict(trace.values), dict(trace.log_probs)
    for n in step.names():
        if step.kind(n) in (LATENT, DETERMINISTIC):
            values[n] = _put(values[n], t, step.values[n])
        if n in step.log_probs:
            log_probs[n] = _put(log_probs[n], t, step.log_probs[n])
    return Trace(values, log_probs, trace.kinds)


def _slice_trace(trace: Trace, t, names) -> Trace:
    """Step ``t``'s part of a whole-program trace, as a one-step trace."""
    kinds = tuple((n, trace.kind(n)) for n in names)
    return Trace({n: trace.values[n][t] for n in names},
                 {n: trace.log_probs[n][t] for n in names if n in trace.log_probs}, kinds)


def _like(step: Trace, reference: Trace) -> Trace:
    """``step`` with the shapes and dtypes of ``reference`` (a slice of the stacked trace)."""
    return jax.tree.map(lambda a, r: jnp.reshape(a, jnp.shape(r)).astype(jnp.result_type(r)),
                        step, reference)


# --------------------------------------------------------------------------- mh


class StepProposal(NamedTuple):
    """A local move's two touched steps, s and s+1 (s itself again at the last step), as
    one-step traces: as they are, as proposed, and the log acceptance ratio."""

    current: tuple
    proposed: tuple
    log_alpha: jnp.ndarray


def propose_step(key, trace: Trace, s, layout: MarkovLayout, ssm: StateSpace) -> StepProposal:
    """Propose regenerating step ``s``'s latent sites from the transition given the
    previous carry, with the Markov-blanket ratio (*) of the module docstring. O(1) in T:
    three runs of one step (c_{s-1}, the new step s, step s+1 rescored)."""
    T = layout.num_steps
    path = {n: trace.values[n] for n in layout.step_latents}
    carry, new_s = ssm.step_trace(key, s, previous_carry(ssm, path, s))
    nxt = jnp.minimum(s + 1, T - 1)
    has_next = s + 1 < T
    _, new_n = ssm.step_trace(replay_key(), nxt, carry, _at(path, nxt))
    old_s = _slice_trace(trace, s, layout.step_sites)
    old_n = _slice_trace(trace, nxt, layout.step_sites)
    new_s, new_n = _like(new_s, old_s), _like(new_n, old_n)
    log_alpha = new_s.log_prob_sum(*SCORED) - old_s.log_prob_sum(*SCORED)
    blanket = new_n.log_prob_sum(LATENT, *SCORED) - old_n.log_prob_sum(LATENT, *SCORED)
    log_alpha = log_alpha + jnp.where(has_next, blanket, 0.0)
    new_n = jax.tree.map(lambda a, b: jnp.where(has_next, a, b), new_n, old_n)
    return StepProposal((old_s, old_n), (new_s, new_n), log_alpha)


def write_steps(trace: Trace, s, steps: tuple, num_steps: int) -> Trace:
    """Write the one-step traces ``steps = (step s, step s+1)`` into ``trace`` (at the last
    step, where both are step s, step s's).

    Each stacked buffer gets one update of the window of steps ``[start, start + 1]``,
    ``start = min(s, T - 2)``, so that XLA updates it in place: two overlapping writes
    (s + 1, then s) made it keep the old buffer for the second and copy every buffer of
    the trace at every move, O(T)."""
    if num_steps < 2:
        return _write_step(trace, s, steps[0])
    start = jnp.minimum(s, num_steps - 2)
    last = s == num_steps - 1
    values, log_probs = dict(trace.values), dict(trace.log_probs)
    now, after = steps

    def window(stacked, here, there):
        here = jnp.reshape(jnp.asarray(here), jnp.shape(stacked)[1:]).astype(stacked.dtype)
        there = jnp.reshape(jnp.asarray(there), jnp.shape(stacked)[1:]).astype(stacked.dtype)
        kept = jax.lax.dynamic_index_in_dim(stacked, start, keepdims=False)
        pair = jnp.where(last, jnp.stack([kept, here]), jnp.stack([here, there]))
        return jax.lax.dynamic_update_slice_in_dim(stacked, pair, start, axis=0)

    for n in now.names():
        if now.kind(n) in (LATENT, DETERMINISTIC):
            values[n] = window(values[n], now.values[n], after.values[n])
        if n in now.log_probs:
            log_probs[n] = window(log_probs[n], now.log_probs[n], after.log_probs[n])
    return Trace(values, log_probs, trace.kinds)


def step_move(key, trace: Trace, s, layout: MarkovLayout, ssm: StateSpace):
    """``(proposed whole-program trace, log a)`` of :func:`propose_step`."""
    proposal = propose_step(key, trace, s, layout, ssm)
    return write_steps(trace, s, proposal.proposed, layout.num_steps), proposal.log_alpha


# --------------------------------------------------------------------------- rmsmc


def _step_score(ssm: StateSpace, t, carry, values, kinds):
    carry, trace = ssm.step_trace(replay_key(), t, carry, values)
    return carry, trace.log_prob_sum(*kinds)


def path_step_move(key, ssm: StateSpace, path: dict, s, t):
    """Propose regenerating step ``s <= t`` of a particle's ``path`` (site -> (T, ...))
    for the target p_t of resample-move SMC: ``(proposed path, log a)``, (*) with step
    s+1's bracket only when s + 1 <= t. O(1) in T (five runs of one step)."""
    carry_prev = previous_carry(ssm, path, s)
    carry_old, old_s = _step_score(ssm, s, carry_prev, _at(path, s), SCORED)
    carry_new, new_trace = ssm.step_trace(key, s, carry_prev)
    new_s = new_trace.log_prob_sum(*SCORED)
    nxt = jnp.minimum(s + 1, ssm.num_steps - 1)
    everything = (LATENT, *SCORED)
    _, old_n = _step_score(ssm, nxt, carry_old, _at(path, nxt), everything)
    _, new_n = _step_score(ssm, nxt, carry_new, _at(path, nxt), everything)
    log_alpha = new_s - old_s + jnp.where(s + 1 <= t, new_n - old_n, 0.0)
    proposed = {
        n: _put(v, s, new_trace.values[n]) for n, v in path.items()
    }
    return proposed, log_alpha


def initial_site_move(key, model, args, kwargs, params: dict, path: dict, site: str, t):
    """Propose regenerating the global ``site`` (one the step does not read: part of the
    time-0 state) from its prior given the other global sites, for the target p_t:
    ``(proposed params, log a)``. The move changes the ``init`` carry, so the ratio is the
    change of the other global sites' densities plus, when t >= 0, that of step 0's (all
    its sites). O(1) in T: the program up to its ``markov`` call twice and step 0 twice."""
    kept = {n: v for n, v in params.items() if n != site}
    new = Sequential(model).state_space(key, *args, params=kept, **kwargs)
    old = state_space(model, args, kwargs, params=params)
    others = [n for n in old.globals.names(LATENT, *SCORED) if n != site]

    def globals_score(ssm):
        return sum((jnp.sum(ssm.globals.log_probs[n]) for n in others), jnp.zeros(()))

    everything = (LATENT, *SCORED)
    _, old_0 = _step_score(old, 0, old.init, _at(path, 0), everything)
    _, new_0 = _step_score(new, 0, new.init, _at(path, 0), everything)
    log_alpha = globals_score(new) - globals_score(old) + jnp.where(t >= 0, new_0 - old_0, 0.0)
    proposed = {n: jnp.asarray(new.params[n]).astype(jnp.result_type(v))
                for n, v in params.items()}
    return proposed, log_alpha
