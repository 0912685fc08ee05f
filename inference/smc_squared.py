"""SMC^2: sequential Monte Carlo over the global parameters of a ``markov`` program, each
parameter particle carrying its own particle filter over the states.

Chopin, Jacob & Papaspiliopoulos (2013), "SMC^2: an efficient algorithm for sequential
analysis of state space models", JRSS B 75(3), section 3. With ``M = num_theta``
parameter particles theta^m ~ p(theta), each with an inner SMC of ``N_x`` particles (the
given ``infer.smc`` combinator run with theta^m fixed), every time step t is, as
a composition over the particle engine (:mod:`ppl.inference.engine`): its time driver
``run_particles`` on the outer Feynman–Kac model :class:`ThetaModel`, whose step t is the
engine's ``smc_step``:

(c) if the ESS of the theta weights has fallen below ``ess_threshold * M``: resample the
    theta particles (each with its whole inner particle system and its running likelihood
    estimate), then rejuvenate each (:func:`rejuvenation`, the engine's move) by
    ``num_mcmc_steps`` PMMH moves invariant for the target after y_{<t}: propose theta* by
    a Gaussian random walk on unconstrained coordinates (covariance ``scale^2`` times the
    weighted covariance of the population before resampling), rerun its inner filter on
    y_{<t} (the engine's ``run_particles`` stopped after t steps: every array keeps its
    shape), and accept with the PMMH ratio of the whole estimates ``p(theta*)
    p-hat(y_{<t} | theta*) / (p(theta) p-hat(y_{<t} | theta))``; an accepted particle takes
    the new inner particle system (the PMMH kernel leaves the extended target invariant:
    Andrieu, Doucet & Holenstein 2010, section 2.4). The move is a kernel of the one MCMC
    kernel protocol (:mod:`ppl.inference.kernels`: its ``random_walk`` and ``mh_accept``)
    applied to every theta particle by :func:`ppl.inference.kernels.as_smc_move`;
(a) advance every inner filter one step (resample if its ESS is low, propagate, reweight:
    the engine's ``smc_step``, ``vmap`` over theta particles); each gives the estimate
    ``p-hat(y_t | y_{<t}, theta^m)`` (its log: ``l_t^m``);
(b) multiply the theta weights by it: ``omega^m *= p-hat(y_t | y_{<t}, theta^m)``; the
    evidence gains ``log p-hat(y_t | y_{<t}) = log sum_m W^m exp(l_t^m)`` (W the
    normalised theta weights before the update).

The evidence estimate ``p-hat(y_{1:T}) = prod_t sum_m W^m p-hat(y_t | y_{1:t-1},
theta^m)`` (times the initial term from global ``observe`` sites, if any) is unbiased
(Chopin, Jacob & Papaspiliopoulos 2013, section 3: SMC^2 is an SMC sampler on the
extended space of theta and the inner particle systems). The inner filter size ``N_x``
stays fixed (their automatic increase of N_x when the acceptance rate drops is not
implemented).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from ppl.inference import kernels
from ppl.inference.base import CompiledRuns, check_count, check_key
from ppl.inference.engine import FeynmanKac, ParticleState, run_particles, smc_step
from ppl.inference.filtering import SMC
from ppl.inference.marginal_mh import ParamSpace, check_param_names, particle_filter
from ppl.inference.resampling import get_scheme
from ppl.semantics.sequential import StepResult, replay_key

from ppl import weights
from ppl.errors import ArgumentTypeError, NonFiniteWeightError, check_positive, check_probability
from ppl.posterior import Posterior

__all__ = [
    "SMC2",
    "SMC2Output",
    "ThetaParticles",
    "ThetaModel",
    "inner_model",
    "pmmh_kernel",
    "proposal_cholesky",
    "rejuvenation",
    "run_smc2",
    "smc2",
]


class ThetaParticles(NamedTuple):
    """The theta particles (leading axis M): unconstrained and constrained params, ``log
    p(theta) + log|J|``, each one's inner particle system (leaves (M, N_x, ...)) and its
    running estimate ``log p-hat(y_{1:t} | theta)``. The field names match
    :class:`ppl.inference.marginal_mh.PMMHState` where the PMMH ratio reads them."""

    u: dict
    params: dict
    log_prior: jnp.ndarray
    log_likelihood: jnp.ndarray
    inner: ParticleState


class SMC2Output(NamedTuple):
    """What one SMC^2 run returns (the output of the jitted core)."""

    params: dict  # (M, ...) final theta particles
    log_weights: jnp.ndarray  # (M,) unnormalised: logsumexp - log M == log_evidence
    log_evidence: jnp.ndarray
    log_evidence_init: jnp.ndarray
    log_likelihood: jnp.ndarray  # (M,) log p-hat(y_{1:T} | theta^m)
    ess: jnp.ndarray  # (T,) theta ESS after reweighting at step t
    resampled: jnp.ndarray  # (T,) bool: step t began by resampling and moving the thetas
    accept_rate: jnp.ndarray  # (T,) mean acceptance prob. of the moves at step t
    log_evidence_increments: jnp.ndarray  # (T,)


def inner_model(space: ParamSpace, theta) -> FeynmanKac:
    """The Feynman–Kac model of the inner filter of the theta particle ``theta``: the
    program with the params held fixed (its other global sites drawn per inner particle)."""
    return FeynmanKac(space.model, space.args, space.kwargs, fixed=theta)


class ThetaModel:
    """The outer Feynman–Kac model of SMC^2 (Chopin, Jacob & Papaspiliopoulos 2013,
    section 3), run by the engine's time driver: a particle is a theta with its inner
    particle system (the :class:`ThetaParticles` carry of a
    :class:`~ppl.inference.engine.ParticleState`).

    * M0 (:meth:`initial`): ``theta^m ~ p(theta)`` and the initial inner particles of each
      (:meth:`~ppl.inference.engine.FeynmanKac.initial` of :func:`inner_model`), weighted by
      the inner initial evidence (global ``observe`` sites; uniform without them);
    * M_t and G_t (:meth:`propagate`, steps (a) and (b)): every inner filter takes step t
      (``vmap`` over theta of the engine's :func:`~ppl.inference.engine.smc_step` with the
      ``likelihood``'s options) and each theta is weighted by its ``p-hat(y_t | y_{<t},
      theta)``."""

    def __init__(self, space: ParamSpace, likelihood: SMC):
        self.space, self.likelihood = space, likelihood
        self.num_steps = space.num_steps

    def initial(self, key, num_theta: int, reference=None):
        """``(ParticleState, l_init)`` with ``l_init = log mean_m p-hat_0(theta^m)``."""
        space, likelihood = self.space, self.likelihood

        def one(k):
            key_theta, key_inner = jax.random.split(k)
            u = space.init(key_theta)
            theta, log_prior = space.constrain(u)
            inner, log_z = inner_model(space, theta).initial(key_inner,
                                                             likelihood.num_particles)
            return ThetaParticles(u, theta, log_prior, log_z, inner)

        particles = jax.vmap(one)(jax.random.split(key, num_theta))
        log_w, total = weights.normalise(particles.log_likelihood)
        return ParticleState({}, particles, log_w), total - math.log(num_theta)

    def propagate(self, key, t, state: ParticleState, proposal=None, reference_t=None):
        """Every inner filter takes step ``t``: ``(StepResult, log p-hat(y_t | y_{<t},
        theta^m))``."""
        particles, likelihood = state.carry, self.likelihood
        keys = jax.random.split(key, state.log_weights.shape[0])

        def one(k, theta, inner):
            new, out = smc_step(k, t, inner_model(self.space, theta), inner,
                                likelihood.resample, likelihood.ess_threshold,
                                likelihood.proposal)
            return new, out.increment

        inner, increments = jax.vmap(one)(keys, particles.params, particles.inner)
        moved = particles._replace(inner=inner,
                                   log_likelihood=particles.log_likelihood + increments)
        return StepResult(moved, {}, increments, jnp.zeros_like(increments)), increments


def _flat(u):
    return jax.vmap(lambda x: ravel_pytree(x)[0])(u)


def proposal_cholesky(particles: ThetaParticles, log_weights, scale):
    """Cholesky factor of the random-walk covariance ``scale^2 * Cov_W(u)``: the weighted
    covariance of the theta population on unconstrained coordinates (the population-scaled
    random walk Chopin, Jacob & Papaspiliopoulos 2013 suggest for the PMMH moves; scale
    2.38 / sqrt(dim) by default, Roberts & Rosenthal 2001), plus a tiny jitter so a
    collapsed population still moves."""
    flat = _flat(particles.u)
    w = jnp.exp(log_weights).astype(flat.dtype)
    mean = w @ flat
    centred = flat - mean
    cov = (centred * w[:, None]).T @ centred
    d = flat.shape[1]
    jitter = 1e-6 * (jnp.trace(cov) / d + 1e-6)
    return jnp.linalg.cholesky(scale**2 * cov + jitter * jnp.eye(d, dtype=flat.dtype))


def pmmh_kernel(t, likelihood: SMC, space):
    """The PMMH move of one theta particle at time ``t`` (step (c); Chopin, Jacob &
    Papaspiliopoulos 2013, section 3, with the PMMH kernel of Andrieu, Doucet & Holenstein
    2010, section 2.4.2), as a kernel of the one MCMC kernel protocol:
    ``kernel(key, particle, chol) -> (particle, MHInfo)``.

    Random walk ``u* = u + chol z`` (:func:`ppl.inference.kernels.random_walk` with the
    Cholesky factor of :func:`proposal_cholesky`), rerun of the inner filter on y_{1:t} at
    ``theta* = T(u*)`` (:func:`~ppl.inference.marginal_mh.particle_filter`: the engine's
    :func:`~ppl.inference.engine.run_particles` with ``num_active = t + 1``), and
    :func:`ppl.inference.kernels.mh_accept` on the whole particle (params, estimate and
    inner particle system) at ``log a = [log p(theta*) + log p-hat(y_{1:t} | theta*)] -
    [log p(theta) + log p-hat(y_{1:t} | theta)]``."""
    model, args, kwargs = space.model, space.args, space.kwargs

    def kernel(key, current: ThetaParticles, chol):
        key_move, key_filter, key_accept = jax.random.split(key, 3)
        u = kernels.random_walk(key_move, current.u, 1.0, cholesky=chol)
        theta, log_prior = space.constrain(u)
        inner, log_z = particle_filter(key_filter, likelihood, model, args, kwargs, theta,
                                       num_active=t + 1)
        proposed = ThetaParticles(u, theta, log_prior, log_z, inner)
        log_alpha = (proposed.log_prior + proposed.log_likelihood) - (
            current.log_prior + current.log_likelihood
        )
        return kernels.mh_accept(key_accept, current, proposed, log_alpha)

    return kernel


def rejuvenation(likelihood: SMC, space, num_mcmc_steps, scale):
    """Step (c) as the engine's move (``move`` of :func:`~ppl.inference.engine.smc_step`):
    when step t has just resampled the theta particles (each keeps its inner particle
    system and estimate), ``num_mcmc_steps`` moves of :func:`pmmh_kernel` invariant for
    p(theta | y_{<t}) for every particle (:func:`ppl.inference.kernels.as_smc_move`),
    with the proposal covariance of the weighted population before resampling. Reports
    the mean acceptance probability (0 when nothing moved)."""

    def apply(key, t, state, parents, resampled):
        def move(operand):
            prev, particles = operand
            chol = proposal_cholesky(prev.carry, prev.log_weights, scale)
            kernel = kernels.as_smc_move(pmmh_kernel(t - 1, likelihood, space),
                                         num_mcmc_steps)
            moved, info = kernel(key, particles.carry, chol)
            accept = jnp.mean(info.accept_prob).astype(prev.log_weights.dtype)
            return particles._replace(carry=moved), accept

        def keep(operand):
            prev, particles = operand
            return particles, jnp.zeros((), prev.log_weights.dtype)

        return jax.lax.cond(resampled, move, keep, (state, parents))

    return apply


class _ThetaRecord:
    """The engine collector of SMC^2: the theta ESS after reweighting at every step."""

    uses_key = False

    def init(self, fk, state):
        return None

    def step(self, key, t, carry, prev, out, new):
        ess_t = weights.ess_normalised(jnp.exp(new.log_weights), out.increment)
        return carry, (ess_t, out.resampled, out.move_info)


def run_smc2(key, model, args, kwargs, params, likelihood: SMC, num_theta, ess_threshold=0.5,
             resample="systematic", num_mcmc_steps=1, scale=None,
             progress_bar=False) -> SMC2Output:
    """SMC^2 as a composition over the engine: the time driver
    :func:`~ppl.inference.engine.run_particles` on the outer :class:`ThetaModel`, adaptive
    resampling of the theta particles (ESS below ``ess_threshold * num_theta``) followed
    by the PMMH :func:`rejuvenation`, and the theta ESS recorded. One pure function: jit
    it, or vmap it over keys. ``progress_bar`` shows a tqdm bar over the time steps."""
    space = ParamSpace(model, args, kwargs, params, who="smc2")
    if scale is None:
        d = sum(int(np.prod(np.shape(v))) for v in space.init(replay_key()).values())
        scale = 2.38 / math.sqrt(d)
    run = run_particles(key, ThetaModel(space, likelihood), num_theta, resample,
                        ess_threshold, _ThetaRecord(), progress_bar=progress_bar,
                        desc="smc2",
                        move=rejuvenation(likelihood, space, num_mcmc_steps, scale))
    ess_t, resampled, accept = run.records
    particles = run.final.carry
    return SMC2Output(
        params=particles.params,
        log_weights=run.final.log_weights + run.log_evidence + math.log(num_theta),
        log_evidence=run.log_evidence,
        log_evidence_init=run.log_evidence_init,
        log_likelihood=particles.log_likelihood,
        ess=ess_t,
        resampled=resampled,
        accept_rate=accept,
        log_evidence_increments=run.increments,
    )


# --------------------------------------------------------------------------- combinator


class SMC2:
    """``smc2(params, num_theta, likelihood, ...)``; see :func:`smc2`."""

    def __init__(self, params, num_theta: int, likelihood, ess_threshold=0.5,
                 resample="systematic", num_mcmc_steps: int = 1, scale=None,
                 progress_bar=False):
        self.params = check_param_names(params, "smc2")
        self.progress_bar = bool(progress_bar)
        self.num_theta = check_count("num_theta", num_theta)
        if not isinstance(likelihood, SMC) or getattr(likelihood, "move", None) is not None:
            raise ArgumentTypeError(
                f"smc2: likelihood must be an SMC combinator without move, e.g. "
                f"infer.smc(num_particles=100), the inner filter of each theta particle; got "
                f"{likelihood!r}"
            )
        self.likelihood = likelihood
        # a fraction of num_theta
        self.ess_threshold = check_probability("ess_threshold", ess_threshold, closed=True)
        get_scheme(resample)  # UnknownOptionError naming `resample`
        self.resample = resample
        self.num_mcmc_steps = check_count("num_mcmc_steps", num_mcmc_steps)
        self.scale = None if scale is None else check_positive("scale", scale)
        self._runs = CompiledRuns(self.core)

    def core(self, key, model, args, kwargs) -> SMC2Output:
        """The pure, jittable run (:func:`run_smc2` with this combinator's options)."""
        return run_smc2(key, model, args, kwargs, self.params, self.likelihood,
                        self.num_theta, self.ess_threshold, self.resample,
                        self.num_mcmc_steps, self.scale, self.progress_bar)

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run SMC^2 on ``model(*args, **kwargs)``; a weighted :class:`~ppl.Posterior` of
        the params with the log-evidence estimate."""
        out = self._runs(check_key(key), model, args, kwargs)
        _check(out)
        resampled = np.asarray(out.resampled)
        return Posterior(
            dict(out.params),
            log_weights=out.log_weights,
            log_evidence=out.log_evidence,
            method="smc2",
            info={
                "ess": out.ess,
                "resampled": out.resampled,
                "log_evidence_increments": out.log_evidence_increments,
                "log_evidence_init": out.log_evidence_init,
                "move_steps": np.flatnonzero(resampled),
                "accept_rate": np.asarray(out.accept_rate)[resampled],
                "log_likelihood_estimates": out.log_likelihood,
                "num_theta": self.num_theta,
                "num_particles": self.likelihood.num_particles,
            },
        )

    def __repr__(self):
        return (
            f"smc2(params={list(self.params)}, num_theta={self.num_theta}, "
            f"likelihood={self.likelihood!r}, ess_threshold={self.ess_threshold}, "
            f"resample={self.resample!r}, num_mcmc_steps={self.num_mcmc_steps}, "
            f"scale={self.scale})"
        )


def _check(out: SMC2Output):
    """Raise :class:`NonFiniteWeightError` naming the first step whose evidence increment
    is not finite."""
    increments = np.asarray(out.log_evidence_increments)
    bad = np.flatnonzero(~np.isfinite(increments))
    if np.isfinite(np.asarray(out.log_evidence_init)) and not bad.size:
        return
    where = f"first at step t={int(bad[0])}" if bad.size else "at the global sites"
    raise NonFiniteWeightError(
        f"smc2: the log-evidence estimate is not finite ({where}): every theta particle's "
        "inner filter gave weight zero (or NaN) to the data"
    )


def smc2(params, num_theta: int, likelihood, ess_threshold=0.5, resample="systematic",
         num_mcmc_steps: int = 1, scale=None, progress_bar=False) -> SMC2:
    """SMC^2 (Chopin, Jacob & Papaspiliopoulos 2013) over the global latent sites
    ``params`` of a program with one ``ppl.markov`` call.

    ``num_theta`` parameter particles drawn from the prior, each with an inner particle
    filter ``likelihood`` (an ``infer.smc(...)`` combinator: its ``num_particles``,
    ``resample``, ``ess_threshold`` and ``proposal``), advanced together one time step at
    a time. When the ESS of the theta weights falls below ``ess_threshold * num_theta``
    the theta particles are resampled (``resample`` scheme) and each gets ``num_mcmc_steps``
    PMMH moves: a Gaussian random walk on unconstrained coordinates (NumPyro's
    ``biject_to``) with covariance ``scale^2`` (default ``2.38^2 / dim``) times the
    weighted covariance of the population, the inner filter rerun on the data so far. Other
    global latent sites are drawn per inner particle (they must come after the params).

    ``.run(key, model, *args, **kwargs)`` returns a weighted :class:`~ppl.Posterior` of the
    params (``num_theta`` draws; ``logsumexp(log_weights) - log num_theta ==
    log_evidence``) with ``log_evidence`` the (unbiased on the natural scale) estimate of
    log p(y). ``info``: per step ``ess`` (of the theta weights, before any resampling),
    ``resampled``, ``log_evidence_increments``; ``move_steps`` (the steps that
    rejuvenated) and their ``accept_rate`` (mean acceptance probability);
    ``log_likelihood_estimates`` (each final theta particle's log p-hat(y | theta)).
    ``progress_bar=True`` shows a tqdm bar over the time steps, updated from inside the
    jitted run by host callbacks.
    """
    return SMC2(params, num_theta, likelihood, ess_threshold, resample, num_mcmc_steps,
                scale, progress_bar)
