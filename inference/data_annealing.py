"""SMC on static programs: the observations introduced one batch at a time (data annealing).

A static program (no ``ppl.markov``) denotes ``p(z) prod_i l_i(z)``: latent sites ``z`` with
prior ``p`` and observation units ``l_i`` (every ``observe`` and ``factor`` term: each
entry of a site's pointwise log density, i.e. one unit per element of its plates). Read as
a sequence of its observations, in program order and along the plates of each site (C
order: the outermost plate slowest), it is a Feynman–Kac model whose targets

    pi_t(z) ∝ p(z) prod_{i in units of steps 0..t} l_i(z),     t = 0..T-1,

add ``batch_size`` units per step (Chopin 2002, "A sequential particle filter method for
static models", Biometrika 89, the IBIS algorithm; Del Moral, Doucet & Jasra 2006,
"Sequential Monte Carlo samplers", section 3.3.2.3, data tempering). This is monad-bayes'
reading of a program under SMC (Ścibior et al., POPL 2018, section 6: suspend at each
factor), without a coroutine: every particle draws all its latent sites from the prior at
time 0 (a latent site that only future observations depend on is, in distribution, the same
draw as one made when its observation arrives), and the potential of step t is the
likelihood of that step's units. So the model is, for the particle engine
(:mod:`ppl.inference.engine`):

* :class:`AnnealedModel` — M0 = the prior (one run of the program per particle, which
  also caches the particle's per-step log-likelihoods ``g_t(z)``), M_t = the identity,
  G_t = ``exp g_t(z)``; a step costs O(1) per particle (a read of the cache);
* :func:`rejuvenation` — after each resampling, MCMC moves invariant for the current
  target pi_{t-1} (IBIS; Gilks & Berzuini 2001 resample-move), through the kernels of
  :mod:`ppl.inference.kernels`: a random walk scaled to the particle cloud (Chopin 2002,
  section 3: the proposal covariance from the current particles; scale ``2.38 / sqrt(D)``,
  Roberts, Gelman & Gilks 1997) for ``infer.mh(proposal="random_walk")``, or an
  ``infer.mh(...)`` trace kernel run on the program with the future observations masked
  (:func:`annealed_program`) for single-site regeneration and proposal programs (discrete
  sites too). A moved particle's cache is recomputed;
* :func:`run_annealed_smc` — the time driver :func:`~ppl.inference.engine.run_particles`
  over this model, and the final particles replayed for their deterministic sites and
  pointwise log-likelihoods.

The log evidence is the engine's ``log Z = sum_t log sum_n W_{t-1}^n G_t^n`` (unbiased on the
natural scale: the moves keep the target, Del Moral et al. 2006, section 3.2.1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.primitives import Messenger
from ppl.inference.base import check_log_weights
from ppl.inference.engine import ParticleState, run_particles
from ppl.inference.kernels import MHState, as_smc_move, mh_accept, random_walk_mh
from ppl.inference.tempered import (
    _mh_relative_step_size,
    _safe,
    _Unconstrain,
    _unconstrain,
    kernel_parameters,
    proposal_scale,
)
from ppl.semantics.sequential import StepResult, replay_key
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, OBSERVED, record

from ppl import weights
from ppl.errors import NonFiniteWeightError, UnsupportedModelError
from ppl.posterior import Posterior
from ppl.primitives import stub_markov

__all__ = [
    "AnnealedModel",
    "AnnealedOutput",
    "ObservationLayout",
    "annealed_posterior",
    "annealed_program",
    "calls_markov",
    "observation_layout",
    "rejuvenation",
    "run_annealed_smc",
    "step_log_likelihoods",
]


def calls_markov(model, args, kwargs) -> bool:
    """True if the program calls ``ppl.markov`` (one structure-only run, no step run)."""
    calls = []
    with stub_markov(lambda step, init, xs, num_steps: calls.append(num_steps)):
        record(model, replay_key(), args, kwargs)
    return bool(calls)


# --------------------------------------------------------------------------- observation units


class ObservationLayout(NamedTuple):
    """The observation units of a static program: for each observed or factor site, in
    program order, ``(name, offset, num_units, shape)`` (its units are the entries of its
    pointwise log density of shape ``shape``, in C order; a scalar site is one unit), and
    how they are grouped into steps (``batch_size`` consecutive units per step)."""

    sites: tuple
    num_units: int
    batch_size: int

    @property
    def num_steps(self) -> int:
        return -(-self.num_units // self.batch_size)

    def unit_steps(self, name):
        """The step at which each unit of site ``name`` is introduced, shaped like the
        site's pointwise log density."""
        for site, offset, n, shape in self.sites:
            if site == name:
                return ((offset + np.arange(n)) // self.batch_size).reshape(shape)
        raise KeyError(name)


def observation_layout(trace, batch_size: int) -> ObservationLayout:
    """The :class:`ObservationLayout` of a recorded run of a static program. Raises
    :class:`UnsupportedModelError` when the program observes nothing."""
    sites, offset = [], 0
    for name in trace.names(OBSERVED, FACTOR):
        shape = tuple(jnp.shape(trace.log_probs[name]))
        n = math.prod(shape)
        sites.append((name, offset, n, shape))
        offset += n
    if not offset:
        raise UnsupportedModelError(
            "smc on a static program introduces its observations one at a time, and this "
            "program has no observe or factor site (its posterior is its prior)"
        )
    return ObservationLayout(tuple(sites), offset, batch_size)


def step_log_likelihoods(trace, layout: ObservationLayout):
    """``g`` of shape (T,): the log-likelihood of each step's units in ``trace``."""
    units = []
    for name, _, n, shape in layout.sites:
        lp = jnp.broadcast_to(trace.log_probs[name], shape)
        units.append(jnp.reshape(lp, (n,)))
    units = jnp.concatenate(units)
    pad = layout.num_steps * layout.batch_size - layout.num_units
    units = jnp.concatenate([units, jnp.zeros((pad,), units.dtype)])
    return units.reshape(layout.num_steps, layout.batch_size).sum(-1)


class _MaskFuture(Messenger):
    """Scale each observation unit introduced at step ``>= t`` by 0 (the program then
    denotes pi_{t-1}: prior times the likelihood of the steps before t)."""

    def __init__(self, fn, layout: ObservationLayout, t):
        self.layout, self.t = layout, t
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample" or not msg["is_observed"]:
            return
        present = (self.layout.unit_steps(msg["name"]) < self.t).astype(jnp.result_type(float))
        scale = msg.get("scale")
        msg["scale"] = present if scale is None else present * scale


def annealed_program(model, layout: ObservationLayout, t):
    """``model`` with the observations of steps ``>= t`` removed: the target pi_{t-1}."""

    def program(*args, **kwargs):
        return _MaskFuture(model, layout, t)(*args, **kwargs)

    return program


# --------------------------------------------------------------------------- Feynman-Kac model


class AnnealedModel:
    """A static program as a Feynman–Kac model (see the module docstring): particles are
    the latent values (``params``: site -> (N, ...)) with their per-step log-likelihoods
    (``carry``: (N, T)); ``propagate`` at step t weights each particle by ``g_t``."""

    def __init__(self, model, args, kwargs, batch_size: int = 1):
        self.model, self.args, self.kwargs = model, args, kwargs
        _, trace, raw = record(model, replay_key(), args, kwargs)
        self.latent = tuple(trace.latent_names)
        self.discrete = tuple(n for n in self.latent if raw[n]["fn"].support.is_discrete)
        self.layout = observation_layout(trace, batch_size)
        self.num_steps = self.layout.num_steps
        self.per_particle = self.latent
        self.first_steps = latent_first_steps(raw, trace, self.layout)

    def replay(self, values):
        """The trace of one run with the latent sites set to ``values``."""
        return record(self.model, replay_key(), self.args, self.kwargs, substitutions=values)[1]

    def step_log_likelihoods(self, values):
        """``g(z)`` (T,) for one particle's latent values."""
        return step_log_likelihoods(self.replay(values), self.layout)

    def initial(self, key, num_particles: int, reference=None):
        """M0: every particle draws all its latent sites from the prior; equal weights
        (every observation comes in a later step), so ``l_init = 0``."""
        if reference is not None:
            raise UnsupportedModelError("conditional SMC needs a ppl.markov program")

        def draw(k):
            trace = record(self.model, k, self.args, self.kwargs)[1]
            return trace.select(LATENT), step_log_likelihoods(trace, self.layout)

        params, g = jax.vmap(draw)(jax.random.split(key, num_particles))
        log_w = jnp.full((num_particles,), -math.log(num_particles), g.dtype)
        return ParticleState(params, g, log_w), jnp.zeros((), g.dtype)

    def propagate(self, key, t, state: ParticleState, proposal=None, reference_t=None):
        """M_t is the identity, G_t = exp g_t: ``(StepResult, log G)``."""
        log_g = state.carry[:, t]
        return StepResult(state.carry, {}, log_g, jnp.zeros_like(log_g)), log_g


# ----------------------------------------------------------------- latent sites drawn late


def _plate_dims(site) -> dict:
    return {f.name: f.dim for f in site["cond_indep_stack"]}


def _first_step_from(latent_site, latent_shape, observed_site, steps):
    """The first step at which a unit of ``observed_site`` (whose units enter at
    ``steps``) may depend on each entry of the latent site: when the observed site sits in
    every plate of the latent one, entry i of a plate can only reach the units with the
    same index i (conditional independence, which is what a plate says), so the minimum
    runs over the observed site's other axes; otherwise every entry may reach every unit."""
    plates = _plate_dims(latent_site)
    observed_plates = _plate_dims(observed_site)
    k_o, k_l = steps.ndim, len(latent_shape)
    aligned = plates and all(observed_plates.get(n) == d for n, d in plates.items())
    if not aligned or any(-d > min(k_o, k_l) for d in plates.values()):
        return np.full(latent_shape, np.min(steps), np.int32)
    keep = {k_o + d for d in plates.values()}
    reduced = np.min(steps, axis=tuple(a for a in range(k_o) if a not in keep), keepdims=True)
    if k_o >= k_l:
        reduced = reduced.reshape(reduced.shape[k_o - k_l:])
    else:
        reduced = reduced.reshape((1,) * (k_l - k_o) + reduced.shape)
    return np.broadcast_to(reduced, latent_shape).astype(np.int32)


def latent_first_steps(raw, trace, layout: ObservationLayout) -> dict:
    """site -> (its pointwise log-density shape) the first step whose observations may
    depend on each entry of each latent site (read from the plates; static). An entry
    whose first step is after t is, under pi_{t-1}, still distributed as its prior given
    the rest: monad-bayes would not have drawn it yet (it suspends at each factor), and
    :func:`refresh_undrawn` redraws it after resampling to keep the particles distinct."""
    first = {}
    for name in trace.latent_names:
        shape = tuple(jnp.shape(trace.log_probs[name]))
        steps = [
            _first_step_from(raw[name], shape, raw[o], layout.unit_steps(o))
            for o, *_ in layout.sites
        ]
        first[name] = np.min(np.stack(steps), axis=0)
    return first


class _RedrawEntries(Messenger):
    """Redraw the entries ``masks[site]`` of the named latent sites from the site's
    distribution (given the values drawn before it in this run) and keep the others at
    ``values[site]``; every later site sees the combined value."""

    def __init__(self, fn, key, values, masks):
        self.key, self.values, self.masks = key, values, masks
        super().__init__(fn)

    def process_message(self, msg):
        name = msg.get("name")
        if msg["type"] != "sample" or msg["is_observed"] or name not in self.masks:
            return
        self.key, key = jax.random.split(self.key)
        fresh = msg["fn"](rng_key=key, sample_shape=msg["kwargs"].get("sample_shape", ()))
        old = self.values[name]
        mask = self.masks[name]
        mask = mask.reshape(mask.shape + (1,) * (jnp.ndim(old) - mask.ndim))
        msg["value"] = jnp.where(mask, fresh, old).astype(jnp.result_type(old))


def annealed_log_joint(trace, layout: ObservationLayout, t):
    """log pi_{t-1} of a (unscaled) trace: every latent site plus the observation units of
    the steps before t (a unit not yet introduced counts 0, even where it is -inf)."""
    total = trace.log_prior
    for name, *_ in layout.sites:
        present = layout.unit_steps(name) < t
        total = total + jnp.sum(jnp.where(present, trace.log_probs[name], 0.0))
    return total


def refresh_undrawn(fk: AnnealedModel, key, t, parents: ParticleState):
    """After resampling at step t, redraw in every particle the latent entries no
    observation so far depends on (:func:`latent_first_steps` after t - 1) from their
    prior given the rest: an MH move invariant for pi_{t-1} whose proposal is that prior,
    so ``log a = Δ log pi_{t-1} - Δ log p(redrawn entries)`` (1 when the plates hold:
    a Gibbs step). Duplicated particles thus differ in what the data have not reached, as
    if, like monad-bayes, the program had drawn those choices only now."""
    masks = {n: f >= t for n, f in fk.first_steps.items()}
    redrawn = {n: m for n, m in masks.items() if n in _late_sites(fk)}
    if not redrawn:
        return parents, jnp.zeros((), parents.carry.dtype)
    model, args, kwargs = fk.model, fk.args, fk.kwargs

    def one(k, values, g):
        key_draw, key_accept = jax.random.split(k)
        kept = {n: v for n, v in values.items() if n not in redrawn}
        program = _RedrawEntries(model, key_draw, values, redrawn)
        new = record(program, replay_key(), args, kwargs, substitutions=kept)[1]
        old = fk.replay(values)
        own = sum(jnp.sum(jnp.where(m, new.log_probs[n] - old.log_probs[n], 0.0))
                  for n, m in redrawn.items())
        log_alpha = (annealed_log_joint(new, fk.layout, t)
                     - annealed_log_joint(old, fk.layout, t) - own)
        proposed = (new.select(LATENT), step_log_likelihoods(new, fk.layout))
        (values, g), info = mh_accept(key_accept, (values, g), proposed, log_alpha)
        return values, g, info.accepted

    keys = jax.random.split(key, parents.log_weights.shape[0])
    params, carry, accepted = jax.vmap(one)(keys, parents.params, parents.carry)
    return parents._replace(params=params, carry=carry), jnp.mean(accepted)


def _late_sites(fk: AnnealedModel) -> tuple:
    """The latent sites with an entry some observation reaches only after step 0."""
    return tuple(n for n, f in fk.first_steps.items() if int(np.max(f)) > 0)


# --------------------------------------------------------------------------- rejuvenation


def _random_walk_move(fk: AnnealedModel, key, t, parents: ParticleState, move):
    """``move.num_mcmc_steps`` random-walk Metropolis moves of every particle on the
    unconstrained coordinates, invariant for pi_{t-1}, with proposal covariance ``h^2``
    times the particles' covariance (Chopin 2002, section 3), ``h = 2.38 / sqrt(D)`` for
    ``infer.mh``'s default ``step_size`` and in proportion to it otherwise (the rule of
    tempered SMC's moves, :func:`ppl.inference.tempered._mh_relative_step_size`)."""
    model, args, kwargs = fk.model, fk.args, fk.kwargs

    def to_position(values):
        raw = record(model, replay_key(), args, kwargs, substitutions=values)[2]
        return _unconstrain(raw, fk.latent)

    positions = jax.vmap(to_position)(parents.params)
    x = jax.vmap(lambda p: ravel_pytree(p)[0])(positions)
    unravel = ravel_pytree(jax.tree.map(lambda a: a[0], positions))[1]
    dim = x.shape[1]
    present = jnp.arange(fk.num_steps) < t

    def log_density(position):
        handler = _Unconstrain(model, unravel(position))
        trace = record(handler, replay_key(), args, kwargs)[1]
        g = step_log_likelihoods(trace, fk.layout)
        value = trace.log_prior + handler.log_det + jnp.sum(jnp.where(present, g, 0.0))
        return _safe(value), (g, trace.select(LATENT))

    chol = kernel_parameters("random_walk", proposal_scale(x, parents.log_weights)[1])
    step_size = _mh_relative_step_size(move, dim)
    kernel = random_walk_mh(log_density, step_size, cholesky=chol, has_aux=True)
    states = jax.vmap(lambda p: MHState(p, *log_density(p)))(x)
    states, info = as_smc_move(kernel, move.num_mcmc_steps)(key, states)
    g, values = states.aux
    params = jax.tree.map(lambda new, old: new.astype(old.dtype), values, parents.params)
    return parents._replace(params=params, carry=g.astype(parents.carry.dtype)), info.accepted


def _trace_move(fk: AnnealedModel, key, t, parents: ParticleState, move):
    """``move.num_mcmc_steps`` moves of an ``infer.mh(...)`` trace kernel on every particle,
    run on :func:`annealed_program` (invariant for pi_{t-1}); the cache is recomputed."""
    program = annealed_program(fk.model, fk.layout, t)
    kernel = move.kernel(program)
    args, kwargs = fk.args, fk.kwargs

    def to_trace(values):
        return record(program, replay_key(), args, kwargs, substitutions=values)[1]

    traces = jax.vmap(to_trace)(parents.params)
    step = as_smc_move(lambda k, tr: kernel(k, tr, args, kwargs), move.num_mcmc_steps)
    traces, accepted = step(key, traces)
    values = jax.tree.map(lambda new, old: new.astype(old.dtype), traces.select(LATENT),
                          parents.params)
    g = jax.vmap(fk.step_log_likelihoods)(values).astype(parents.carry.dtype)
    return parents._replace(params=values, carry=g), accepted


def rejuvenation(fk: AnnealedModel, move=None):
    """The engine move (``move`` of :func:`~ppl.inference.engine.smc_step`) of data-annealed
    SMC: at step t, if the population was just resampled (and t > 0),
    :func:`refresh_undrawn`, then, with ``move`` (an ``infer.mh(...)``: IBIS),
    ``move.num_mcmc_steps`` MH moves of every particle invariant for pi_{t-1}
    (:func:`_random_walk_move` for ``proposal="random_walk"``, else :func:`_trace_move`);
    otherwise the particles are left as they are. Reports ``(accepted fraction of the
    moves, moved)``."""
    if move is None:
        def apply(key, t, state, parents, resampled):
            def moved(parents):
                return refresh_undrawn(fk, key, t, parents)[0]

            active = resampled & (t > 0)
            parents = jax.lax.cond(active, moved, lambda p: p, parents)
            return parents, (jnp.zeros((), parents.carry.dtype), jnp.asarray(False))

        return apply
    if move.proposal == "random_walk" and fk.discrete:
        raise UnsupportedModelError(
            f"rmsmc(move=infer.mh(proposal='random_walk')) moves continuous sites only, and "
            f"the program has discrete latent site(s) {list(fk.discrete)}; use "
            f"proposal='prior' (single-site regeneration)"
        )
    if not fk.latent:
        raise UnsupportedModelError("rmsmc: the program has no latent site to move")

    def apply(key, t, state, parents, resampled):
        def moved(parents):
            key_refresh, key_move = jax.random.split(key)
            parents = refresh_undrawn(fk, key_refresh, t, parents)[0]
            if move.proposal == "random_walk":
                new, accepted = _random_walk_move(fk, key_move, t, parents, move)
            else:
                new, accepted = _trace_move(fk, key_move, t, parents, move)
            return new, jnp.mean(accepted).astype(parents.carry.dtype)

        def kept(parents):
            return parents, jnp.zeros((), parents.carry.dtype)

        active = resampled & (t > 0)
        parents, accept_rate = jax.lax.cond(active, moved, kept, parents)
        return parents, (accept_rate, active)

    return apply


# --------------------------------------------------------------------------- the run


class _Summaries:
    """Collector: the ESS after each step, whether it resampled, and what the move did."""

    def init(self, fk, state):
        return None

    def step(self, key, t, carry, prev, out, new):
        move_info = out.move_info
        if move_info is None:
            move_info = (jnp.zeros((), new.log_weights.dtype), jnp.asarray(False))
        return None, (weights.ess(new.log_weights), out.resampled) + tuple(move_info)


class AnnealedOutput(NamedTuple):
    """One run of :func:`run_annealed_smc` (a pytree: the jitted core's output)."""

    samples: dict  # latent and deterministic sites of the final particles, (N, ...)
    log_weights: jnp.ndarray  # (N,), logsumexp - log N == log_evidence
    log_evidence: jnp.ndarray
    log_likelihood: dict  # observed site -> pointwise log density, (N, ...)
    observed_data: dict
    factor_log_probs: dict
    ess: jnp.ndarray  # (T,)
    resampled: jnp.ndarray  # (T,)
    log_evidence_increments: jnp.ndarray  # (T,)
    accept_rate: jnp.ndarray  # (T,) 0 where no move ran
    moved: jnp.ndarray  # (T,)


def run_annealed_smc(key, model, args, kwargs, num_particles, scheme="systematic",
                     ess_threshold=0.5, move=None, batch_size=1, mesh=None,
                     progress_bar=False, desc="smc") -> AnnealedOutput:
    """Data-annealed SMC (IBIS) on a static program: :class:`AnnealedModel` run by the
    engine's time driver, with :func:`rejuvenation` when ``move`` (an ``infer.mh(...)``)
    is given; the final particles replayed for their deterministic sites and pointwise
    log-likelihoods."""
    fk = AnnealedModel(model, args, kwargs, batch_size)
    run = run_particles(key, fk, num_particles, scheme, ess_threshold, _Summaries(),
                        mesh=mesh, progress_bar=progress_bar, desc=desc,
                        move=rejuvenation(fk, move))
    ess, resampled, accept_rate, moved = run.records
    final = run.final
    traces = jax.vmap(fk.replay)(final.params)
    return AnnealedOutput(
        samples=traces.select(LATENT, DETERMINISTIC),
        log_weights=final.log_weights + run.log_evidence + math.log(num_particles),
        log_evidence=run.log_evidence,
        log_likelihood={n: traces.log_probs[n] for n in traces.names(OBSERVED)},
        observed_data=_observed(fk),
        factor_log_probs={n: traces.log_probs[n] for n in traces.names(FACTOR)},
        ess=ess, resampled=resampled, log_evidence_increments=run.increments,
        accept_rate=accept_rate, moved=moved,
    )


def _observed(fk: AnnealedModel) -> dict:
    """The observed data (one structure-only run)."""
    return record(fk.model, replay_key(), fk.args, fk.kwargs)[1].select(OBSERVED)


def annealed_posterior(out: AnnealedOutput, method: str, info: dict) -> Posterior:
    """The weighted :class:`~ppl.Posterior` of a data-annealed run, after checking that its
    weights are finite (a :class:`NonFiniteWeightError` naming the first bad step and the
    sites). ``info`` gains the per-step ``ess``, ``resampled``,
    ``log_evidence_increments``, and, with moves, ``accept_rate`` (over the steps that
    moved) and ``accept_rate_per_step``."""
    increments = np.asarray(out.log_evidence_increments)
    bad = np.flatnonzero(~np.isfinite(increments))
    if bad.size:
        log_probs = {**out.log_likelihood, **out.factor_log_probs}
        check_log_weights(out.log_weights, log_probs,
                          what=f"{method} log weight (first at step t={int(bad[0])})")
        raise NonFiniteWeightError(
            f"{method}: the log-evidence estimate is not finite (first at step t={int(bad[0])})"
        )
    moved = np.asarray(out.moved)
    accept_rate = np.asarray(out.accept_rate)
    steps = {
        "ess": out.ess,
        "resampled": out.resampled,
        "log_evidence_increments": out.log_evidence_increments,
        "data_annealing": True,
    }
    if method == "rmsmc":
        steps.update(
            accept_rate=float(accept_rate[moved].mean()) if moved.any() else np.nan,
            accept_rate_per_step=np.where(moved, accept_rate, np.nan),
        )
    return Posterior(
        out.samples,
        log_weights=out.log_weights,
        log_evidence=out.log_evidence,
        observed_data=out.observed_data,
        log_likelihood=out.log_likelihood,
        method=method,
        info={**steps, **info},
    )
