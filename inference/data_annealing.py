"""SMC on static programs: the observations introduced one batch at a time (data annealing).

A static program (no ``ppl.markov``) denotes ``p(z) prod_i l_i(z)``: latent sites ``z`` with
prior ``p`` and observation units ``l_i`` (every ``observe`` and ``factor`` term). Read as a
sequence of its observations, in program order and along the outermost axis of each
observed site (its outermost plate), it is a Feynman–Kac model whose targets

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
from ppl.inference.kernels import MHState, as_smc_move, random_walk_mh
from ppl.inference.tempered import _safe, _Unconstrain, _unconstrain, kernel_parameters
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
    program order, ``(name, offset, num_units, shape)`` (its units are the entries of the
    outermost axis of its pointwise log density ``shape``; a scalar site is one unit), and
    how they are grouped into steps."""

    sites: tuple
    num_units: int
    batch_size: int

    @property
    def num_steps(self) -> int:
        return -(-self.num_units // self.batch_size)

    def unit_steps(self, name):
        """The step at which each unit of site ``name`` is introduced, shaped to
        broadcast against the site's pointwise log density."""
        for site, offset, n, shape in self.sites:
            if site == name:
                steps = (offset + jnp.arange(n)) // self.batch_size
                return steps.reshape((n,) + (1,) * max(len(shape) - 1, 0)) if shape else steps[0]
        raise KeyError(name)


def observation_layout(trace, batch_size: int) -> ObservationLayout:
    """The :class:`ObservationLayout` of a recorded run of a static program. Raises
    :class:`UnsupportedModelError` when the program observes nothing."""
    sites, offset = [], 0
    for name in trace.names(OBSERVED, FACTOR):
        shape = tuple(jnp.shape(trace.log_probs[name]))
        n = shape[0] if shape else 1
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
        units.append(jnp.reshape(lp, (n, -1)).sum(-1) if shape else jnp.reshape(lp, (1,)))
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


# --------------------------------------------------------------------------- rejuvenation


def _random_walk_move(fk: AnnealedModel, key, t, parents: ParticleState, num_mcmc_steps):
    """``num_mcmc_steps`` random-walk Metropolis moves of every particle on the
    unconstrained coordinates, invariant for pi_{t-1}, with proposal covariance
    ``(2.38^2 / D)`` times the particles' covariance (Chopin 2002, section 3)."""
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

    weights_ = jnp.exp(parents.log_weights - jax.scipy.special.logsumexp(parents.log_weights))
    mean = weights_ @ x
    cov = ((x - mean) * weights_[:, None]).T @ (x - mean)
    chol = kernel_parameters("random_walk", cov)
    kernel = random_walk_mh(log_density, 2.38 / math.sqrt(dim), cholesky=chol, has_aux=True)
    states = jax.vmap(lambda p: MHState(p, *log_density(p)))(x)
    states, info = as_smc_move(kernel, num_mcmc_steps)(key, states)
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


def rejuvenation(fk: AnnealedModel, move):
    """The engine move (``move`` of :func:`~ppl.inference.engine.smc_step`) of IBIS: at
    step t, if the population was just resampled (and t > 0), ``move.num_mcmc_steps`` MH
    moves of every particle invariant for pi_{t-1} (:func:`_random_walk_move` for
    ``proposal="random_walk"``, else :func:`_trace_move`); otherwise the particles are left
    as they are. Reports ``(accepted fraction, moved)``."""
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
            if move.proposal == "random_walk":
                new, accepted = _random_walk_move(fk, key, t, parents, move.num_mcmc_steps)
            else:
                new, accepted = _trace_move(fk, key, t, parents, move)
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
                        move=None if move is None else rejuvenation(fk, move))
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
