"""Adaptive tempered SMC for static models (an SMC sampler from prior to posterior).

A static program (no ``ppl.markov``, continuous latent sites only) denotes the measure
p(x) L(x) dx with prior p and likelihood L (every ``observe`` and ``factor`` term). Tempered
SMC (Del Moral, Doucet & Jasra 2006, "Sequential Monte Carlo samplers", JRSS B 68(3),
section 3.3.2 and the "annealed" example of section 4) moves N particles through the
bridge of targets

    pi_b(x) ∝ p(x) L(x)^b,      0 = b_0 < b_1 < ... < b_T = 1,

with the exponents chosen on the fly (Jasra, Stephens, Doucet & Tsagaris 2011, "Inference
for Lévy-driven stochastic volatility models via adaptive sequential Monte Carlo", Scand.
J. Stat. 38; the same rule as BlackJAX's ``adaptive_tempered_smc``). One step t of the
algorithm, each line one building block below:

1. :func:`next_exponent` — choose b_t by bisection so that the ESS of the incremental
   weights ``w^n = L(x^n)^(b_t - b_{t-1})`` is ``target_ess * N``. Particles are equally
   weighted at the start of every step (step 4 always resamples), so this ESS is also the
   *conditional* ESS of Zhou, Johansen & Aston (2016, "Toward automatic model comparison:
   an adaptive sequential Monte Carlo approach", JCGS 25, section 3).
2. :func:`incremental_weights` — ``log w^n = (b_t - b_{t-1}) log L(x^n)``, the incremental
   weight ``pi_t(x) / pi_{t-1}(x)`` of an MCMC forward kernel with its time-reversal as
   backward kernel (Del Moral et al. 2006, section 3.3.2.3), and the log evidence increment
   ``log (1/N) sum_n w^n`` (their section 3.2.1, ratio of normalising constants).
3. :func:`proposal_scale` — the weighted covariance of the particles, which sets the scale
   of the MCMC proposal (Chopin 2002, "A sequential particle filter method for static
   models", Biometrika 89; the usual SMC-sampler trick).
4. :func:`resample_particles` — resample by the incremental weights.
5. :func:`mutate` — ``num_mcmc_steps`` moves of an MCMC kernel invariant for pi_{b_t}, on
   the unconstrained coordinates: :func:`random_walk_step` (Gaussian random walk
   Metropolis) or :func:`hmc_step` (Hamiltonian Monte Carlo, Neal 2011, "MCMC using
   Hamiltonian dynamics", with a diagonal mass matrix from the particle variances); or
   :func:`mutate_mh`, an ``infer.mh(...)`` trace kernel run on the tempered program
   (``proposal="prior"`` or a proposal program; ``infer.mh(proposal="random_walk")`` is
   the particle-adapted :func:`random_walk_step`, since a random walk needs a scale and
   the particles give it). Each
   is a kernel ``(key, state) -> (state, info)`` of :mod:`ppl.inference.kernels` (its
   shared accept step, random walk and change of variables), applied to every particle
   by :func:`ppl.inference.kernels.as_smc_move`.

The log evidence is the sum of the increments of step 2: ``log Z = sum_t log (1/N) sum_n
w_t^n``, unbiased on the natural scale for a fixed schedule (Del Moral 2004, *Feynman-Kac
Formulae*, chapter 7) and consistent when the exponents and kernel scales are adapted from
the particles (Beskos, Jasra, Kantas & Thiery 2016, "On the convergence of adaptive
sequential Monte Carlo methods", Ann. Appl. Prob.; the tests check that its bias is below
the Monte Carlo error). The whole run is one :func:`jax.lax.while_loop` until b = 1
(:func:`run_tempered_smc`), inside one ``jit``.

Coordinates. Particles live in the unconstrained space of NumPyro's ``biject_to`` of each
site's support, flattened to one vector of dimension D. :func:`tempering_parts` evaluates
the two halves of the target there: ``log p(T(u)) + log |det dT/du|`` (the prior with its
Jacobian, the b = 0 target) and ``log L(T(u))`` (what the exponent b multiplies).

Output. The final population is resampled and moved, so it is *equally weighted*: the
returned :class:`~ppl.Posterior` has ``log_weights=None``, ``log_evidence`` and, in
``info``, the padded exponent schedule and per-step diagnostics.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.special import logsumexp
from numpyro.primitives import Messenger
from ppl.inference.base import (
    CompiledRuns,
    check_count,
    check_key,
    check_log_weights,
    check_option,
    per_structure,
)
from ppl.inference.kernels import (
    MHState,
    as_smc_move,
    constrain_site,
    mh_accept,
    random_walk_mh,
    unconstrain,
)
from ppl.inference.resampling import SCHEMES, ess, get_scheme
from ppl.inference.trace_mh import MH
from ppl.semantics.sequential import replay_key
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, OBSERVED, feasible_improper, record

from ppl.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    NonFiniteWeightError,
    ParticleCollapseWarning,
    UnsupportedModelError,
    improper_base,
    improper_prior_error,
)
from ppl.posterior import Posterior
from ppl.primitives import intercept_markov

__all__ = [
    "COLLAPSE_ACCEPT",
    "COLLAPSE_UNIQUE",
    "COLLAPSE_WINDOW",
    "MOVES",
    "TemperedOutput",
    "TemperedSMC",
    "check_collapse",
    "distinct_values",
    "hmc_step",
    "incremental_weights",
    "mutate",
    "mutate_mh",
    "next_exponent",
    "prior_particle",
    "proposal_scale",
    "random_walk_step",
    "resample_particles",
    "run_tempered_smc",
    "tempered_density",
    "tempered_program",
    "tempered_smc",
    "tempering_parts",
]

#: The MCMC moves accepted as strings, with the acceptance rate their step size adapts to
#: (0.25 for random walk Metropolis: Roberts, Gelman & Gilks 1997; 0.65 for HMC: Beskos,
#: Pillai, Roberts, Sanz-Serna & Stuart 2013).
MOVES = {"random_walk": 0.25, "hmc": 0.65}

_NUM_BISECTION = 50  # halvings of [0, 1 - b]: exponent resolution 2^-50, below float64 eps

#: ``infer.mh``'s default ``step_size``: an mh random-walk move's ``step_size`` is read
#: relative to it (:func:`_mh_relative_step_size`).
_MH_DEFAULT_STEP_SIZE = inspect.signature(MH).parameters["step_size"].default


# --------------------------------------------------------------------------- the model


def _reject_markov(step, init, xs, length):
    raise UnsupportedModelError(
        "tempered_smc handles static models only; this program calls ppl.markov (use "
        "infer.smc for state-space models)"
    )


def check_static(model, args, kwargs):
    """The program's raw trace from one prior draw, after checking that it is static:
    no ``ppl.markov``, at least one latent site, every latent site continuous and with a
    proper prior (the reference distribution the particles start from; an
    ``ImproperUniform`` site has none). Raises :class:`UnsupportedModelError` naming the
    offending sites."""
    with intercept_markov(_reject_markov):
        _, trace, raw = record(feasible_improper(model), replay_key(), args, kwargs,
                               densities=False)
    latent = trace.latent_names
    for name in latent:
        if improper_base(raw[name]["fn"]) is not None:
            raise improper_prior_error(
                name, raw[name]["fn"],
                "tempered_smc cannot draw its particles from the prior (the reference "
                "distribution at exponent 0)",
            )
    if not latent:
        raise UnsupportedModelError(
            "tempered_smc: the program has no latent sites (nothing to infer; its evidence is "
            "its likelihood)"
        )
    discrete = [n for n in latent if raw[n]["fn"].support.is_discrete]
    if discrete:
        raise UnsupportedModelError(
            f"tempered_smc needs continuous latent sites; site(s) {discrete} are discrete "
            "(marginalise them, or use infer.smc / infer.exact)"
        )
    return raw


def _unconstrain(raw, names) -> dict:
    """site -> ``T^{-1}(x)`` for the named latent sites of a raw NumPyro trace
    (:func:`ppl.inference.kernels.unconstrain` with ``T = biject_to(support)`` of the site's
    distribution as drawn, so a support that depends on earlier sites is handled)."""
    return unconstrain({n: raw[n]["fn"].support for n in names},
                       {n: raw[n]["value"] for n in names})


def prior_particle(key, model, args, kwargs) -> dict:
    """One draw from the prior, in unconstrained coordinates (site -> ``T^{-1}(x)``)."""
    _, trace, raw = record(model, key, args, kwargs)
    return _unconstrain(raw, trace.latent_names)


class _Unconstrain(Messenger):
    """Set every latent site to ``T(u)`` for given unconstrained ``u`` and accumulate
    ``sum log |det dT/du|`` (change of variables; NumPyro's ``potential_energy`` does the
    same through a factor site, which would land in the likelihood here)."""

    def __init__(self, fn, unconstrained):
        self.unconstrained = unconstrained
        self.log_det = jnp.zeros(())
        super().__init__(fn)

    def process_message(self, msg):
        name = msg.get("name")
        if msg["type"] != "sample" or msg["is_observed"] or name not in self.unconstrained:
            return
        value, log_det = constrain_site(msg["fn"].support, self.unconstrained[name])
        self.log_det = self.log_det + log_det
        msg["value"] = value


def tempering_parts(model, args, kwargs, unconstrained):
    """``(log prior, log likelihood, trace)`` at unconstrained latent values ``u``.

    log prior = ``sum_latent log p(T(u)) + log |det dT/du|`` (the density of the prior
    push-forward in u, the b = 0 target); log likelihood = every observed and factor site.
    The tempered target is ``log prior + b * log likelihood``.
    """
    handler = _Unconstrain(model, unconstrained)
    _, trace, _ = record(handler, replay_key(), args, kwargs)
    return trace.log_prior + handler.log_det, trace.log_likelihood, trace


class _Temper(Messenger):
    """Scale the log density of every observed and factor site by ``beta``: the program
    then denotes ``p(x) L(x)^beta``, the tempered target (used to hand an ``infer.mh``
    kernel the target pi_b)."""

    def __init__(self, fn, beta):
        self.beta = beta
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            scale = msg.get("scale")
            msg["scale"] = self.beta if scale is None else self.beta * scale


def tempered_program(model, beta):
    """The program ``model`` with its likelihood raised to the power ``beta``."""

    def program(*args, **kwargs):
        return _Temper(model, beta)(*args, **kwargs)

    return program


def _safe(x):
    """NaN -> -inf: a proposal at which the density cannot be evaluated is rejected."""
    return jnp.where(jnp.isnan(x), -jnp.inf, x)


# --------------------------------------------------------------------------- blocks


def tempered_log_weights(log_lik, delta):
    """``delta * log L`` with ``0 * (-inf) = 0`` (a zero exponent leaves every weight 1)."""
    return jnp.where(delta > 0, delta * log_lik, 0.0)


def next_exponent(log_lik, beta, target_ess):
    """The next exponent b' in (b, 1] (Jasra et al. 2011).

    b' solves ``ESS(L^(b' - b)) = target_ess * N`` (Kish ESS of the incremental weights,
    non-increasing in b'), found by bisection on ``[0, 1 - b]`` with a fixed number of
    halvings in ``lax.fori_loop``; if even b' = 1 keeps the ESS above target, b' = 1. The
    lower end of the final bracket is taken (ESS >= target), or its upper end if the lower
    one never moved off 0, and b' is at least the next float above b (so the schedule
    always advances; ``max_steps`` bounds it in any case).
    """
    target = target_ess * log_lik.shape[0]
    max_delta = 1.0 - beta

    def ok(delta):
        return ess(tempered_log_weights(log_lik, delta)) >= target

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        good = ok(mid)
        return jnp.where(good, mid, lo), jnp.where(good, hi, mid)

    zero = jnp.zeros_like(beta)
    lo, hi = jax.lax.fori_loop(0, _NUM_BISECTION, halve, (zero, max_delta))
    delta = jnp.where(lo > 0, lo, hi)
    step = jnp.maximum(beta + delta, jnp.nextafter(beta, jnp.ones_like(beta) * 2))
    return jnp.where(ok(max_delta), jnp.ones_like(beta), jnp.minimum(step, 1.0))


def incremental_weights(log_lik, beta, beta_next):
    """``(log w, log evidence increment)``: ``log w^n = (b' - b) log L(x^n)`` is the
    incremental weight ``pi_b'(x) / pi_b(x)`` up to constants (Del Moral et al. 2006,
    section 3.3.2.3, for an MCMC forward kernel), and ``logsumexp(log w) - log N`` estimates
    ``log Z_b' / Z_b`` for equally weighted particles."""
    log_w = tempered_log_weights(log_lik, beta_next - beta)
    return log_w, logsumexp(log_w) - math.log(log_lik.shape[0])


def proposal_scale(x, log_w):
    """``(mean, covariance)`` of the particles ``x`` (N, D) under normalised weights
    ``softmax(log_w)`` (Chopin 2002: the MCMC proposal is scaled by the current particle
    approximation of the target's covariance)."""
    total = logsumexp(log_w)
    w = jnp.exp(log_w - jnp.where(jnp.isfinite(total), total, 0.0))
    w = jnp.where(jnp.isfinite(total), w, 1.0 / x.shape[0]).astype(x.dtype)
    mean = w @ x
    centred = x - mean
    return mean, (centred * w[:, None]).T @ centred


def resample_particles(key, particles, log_w, scheme):
    """Resample every per-particle array of ``particles`` (leading N axis) by
    ``softmax(log_w)`` with ``scheme`` (a name in :data:`ppl.inference.resampling.SCHEMES`);
    the result is equally weighted."""
    idx = get_scheme(scheme)(key, log_w)
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), particles)


class Particle(NamedTuple):
    """One particle (or, batched, the population): unconstrained position, log prior
    (with Jacobian) and log likelihood there."""

    x: jnp.ndarray
    log_prior: jnp.ndarray
    log_lik: jnp.ndarray


def tempered_density(parts, beta):
    """``x -> (log pi_b(x), (log prior, log likelihood))``: the tempered target ``log p~(x) +
    b log L(x)`` in unconstrained coordinates, with its two halves as the kernels' ``aux``
    (the next exponent needs the likelihood alone)."""

    def log_density(x):
        log_prior, log_lik = parts(x)
        return log_prior + beta * log_lik, (log_prior, log_lik)

    return log_density


def _to_state(particle: Particle, beta) -> MHState:
    """A particle (or the population) as the :class:`~ppl.inference.kernels.MHState` of a
    kernel targeting ``pi_b``."""
    log_density = particle.log_prior + beta * particle.log_lik
    return MHState(particle.x, log_density, (particle.log_prior, particle.log_lik))


def _from_state(state: MHState) -> Particle:
    """The particle (or population) of a kernel state built by :func:`_to_state`."""
    return Particle(state.position, *state.aux)


def random_walk_step(key, state: MHState, log_density_fn, chol, step_size):
    """One Gaussian random-walk Metropolis step for ``pi_b`` (Metropolis et al. 1953):
    propose ``x' = x + step_size * chol @ z`` with ``z ~ N(0, I)`` and accept with
    probability ``min(1, pi_b(x') / pi_b(x))``: :func:`ppl.inference.kernels.random_walk_mh` with a
    Cholesky factor. A kernel ``(key, state) -> (state, MHInfo)`` once its other arguments
    are bound (``log_density_fn`` from :func:`tempered_density`)."""
    kernel = random_walk_mh(log_density_fn, step_size, cholesky=chol, has_aux=True)
    return kernel(key, state)


def hmc_step(key, state: MHState, log_density_fn, inv_mass, step_size, num_leapfrog):
    """One HMC step for ``pi_b`` (Neal 2011, section 5.3): momentum ``p = z / sqrt(
    inv_mass) ~ N(0, M)`` (diagonal ``M = diag(1 / inv_mass)``, ``z ~ N(0, I)``),
    ``num_leapfrog`` leapfrog steps of size ``step_size`` on the gradient of ``log pi_b``,
    accepted by :func:`ppl.inference.kernels.mh_accept` at the change of ``-H``, ``H =
    -log pi_b(x) + p^T M^{-1} p / 2``. A kernel ``(key, state) -> (state, MHInfo)`` once
    its other arguments are bound."""
    key_momentum, key_accept = jax.random.split(key)
    grad = jax.grad(lambda x: log_density_fn(x)[0])
    p0 = jax.random.normal(key_momentum, state.position.shape, state.position.dtype)
    p0 = p0 / jnp.sqrt(inv_mass)

    def leapfrog(_, s):
        x, p, g = s
        p = p + 0.5 * step_size * g
        x = x + step_size * inv_mass * p
        g = grad(x)
        return x, p + 0.5 * step_size * g, g

    start = (state.position, p0, grad(state.position))
    x_new, p_new, _ = jax.lax.fori_loop(0, num_leapfrog, leapfrog, start)
    log_density, aux = log_density_fn(x_new)
    kinetic = lambda p: 0.5 * jnp.sum(inv_mass * p**2)
    log_alpha = log_density - kinetic(p_new) - state.log_density + kinetic(p0)
    return mh_accept(key_accept, state, MHState(x_new, log_density, aux), log_alpha)


def kernel_parameters(move, cov):
    """The per-step preconditioner: the Cholesky factor of the particle covariance for the
    random walk (with jitter, falling back to its diagonal if the factorisation fails), the
    diagonal of the covariance (an inverse mass matrix) for HMC."""
    d = cov.shape[0]
    var = jnp.maximum(jnp.diag(cov), 0.0)
    jitter = 1e-6 * jnp.mean(var) + jnp.finfo(cov.dtype).tiny
    if move == "hmc":
        var = var + jitter
        return jnp.where(jnp.all(jnp.isfinite(var)), var, jnp.ones_like(var))
    chol = jnp.linalg.cholesky(cov + jitter * jnp.eye(d, dtype=cov.dtype))
    diag = jnp.diag(jnp.sqrt(var + jitter))
    chol = jnp.where(jnp.all(jnp.isfinite(chol)), chol, diag)
    return jnp.where(jnp.all(jnp.isfinite(chol)), chol, jnp.eye(d, dtype=cov.dtype))


def mutate(key, particles: Particle, parts, beta, move, precond, step_size, num_mcmc_steps,
           num_leapfrog):
    """``num_mcmc_steps`` moves of the ``move`` kernel (invariant for ``pi_b``) on every
    particle: the MCMC forward kernel of Del Moral et al. (2006, section 3.3.2.3), through
    :func:`ppl.inference.kernels.as_smc_move` (``vmap`` over particles, ``lax.scan`` over
    steps). Returns ``(particles, acceptance rate)``."""
    log_density = tempered_density(parts, beta)
    if move == "hmc":
        kernel = lambda k, s: hmc_step(k, s, log_density, precond, step_size, num_leapfrog)
    else:
        kernel = lambda k, s: random_walk_step(k, s, log_density, precond, step_size)
    states, info = as_smc_move(kernel, num_mcmc_steps)(key, _to_state(particles, beta))
    return _from_state(states), jnp.mean(info.accepted).astype(particles.x.dtype)


def mutate_mh(key, particles: Particle, parts, beta, move, model, args, kwargs, unravel):
    """``move.num_mcmc_steps`` moves of an ``infer.mh(...)`` trace kernel on every particle, made
    invariant for ``pi_b`` by giving it the tempered program (:func:`tempered_program`):
    each particle's unconstrained position becomes a trace of that program, the kernel
    runs on the trace (``lax.scan``), and the new latent values go back to unconstrained
    coordinates. Returns ``(particles, acceptance rate)``."""
    program = tempered_program(model, beta)
    kernel = move.kernel(program)

    def to_trace(x):
        _, _, trace = tempering_parts(model, args, kwargs, unravel(x))
        return record(program, replay_key(), args, kwargs, substitutions=trace.select(LATENT))[1]

    def to_position(trace, x):
        _, _, raw = record(model, replay_key(), args, kwargs, substitutions=trace.select(LATENT))
        return ravel_pytree(_unconstrain(raw, trace.latent_names))[0].astype(x.dtype)

    traces = jax.vmap(to_trace)(particles.x)
    step = as_smc_move(lambda k, tr: kernel(k, tr, args, kwargs), move.num_mcmc_steps)
    traces, accepted = step(key, traces)
    x = jax.vmap(to_position)(traces, particles.x)
    log_prior, log_lik = jax.vmap(parts)(x)
    return Particle(x, log_prior, log_lik), jnp.mean(accepted).astype(x.dtype)


# --------------------------------------------------------------------------- the driver


class TemperedOutput(NamedTuple):
    """Everything one run returns (a pytree: the output of the jitted core). Per-step
    arrays are padded to ``max_steps`` (``betas`` to ``max_steps + 1``) with NaN."""

    samples: dict  # latent + deterministic sites of the final particles, (N, ...)
    log_likelihood: dict  # observed site -> pointwise log density, (N, ...)
    observed_data: dict  # observed site -> data
    factor_log_probs: dict  # factor site -> log weight, (N, ...)
    log_evidence: jnp.ndarray
    num_steps: jnp.ndarray  # int32: number of tempering steps T
    betas: jnp.ndarray  # (max_steps + 1,): b_0 = 0, ..., b_T = 1, then NaN
    ess: jnp.ndarray  # (max_steps,): ESS of the incremental weights of each step
    accept_rate: jnp.ndarray  # (max_steps,): mean MCMC acceptance of each step
    log_evidence_increments: jnp.ndarray  # (max_steps,)
    step_size: jnp.ndarray  # (max_steps,): the kernel's step size used at each step
    forced_final: jnp.ndarray  # bool: the last step was forced to b = 1 by max_steps


class _LoopState(NamedTuple):
    t: jnp.ndarray
    beta: jnp.ndarray
    particles: Particle
    log_evidence: jnp.ndarray
    step_size: jnp.ndarray
    forced: jnp.ndarray
    betas: jnp.ndarray
    ess: jnp.ndarray
    acceptance: jnp.ndarray
    increments: jnp.ndarray
    step_sizes: jnp.ndarray


def _default_step_size(move, dim):
    """2.38 / sqrt(D) for the random walk (Roberts, Gelman & Gilks 1997), D^(-1/4) for HMC
    (Beskos et al. 2013), both relative to the particle covariance."""
    return 2.38 / math.sqrt(dim) if move == "random_walk" else dim**-0.25


def _mh_relative_step_size(move: MH, dim: int) -> float:
    """The initial random-walk step size for an ``infer.mh(proposal="random_walk",
    step_size=s)`` move: ``(s / s0) * 2.38 / sqrt(D)`` relative to the particle covariance,
    with ``s0`` the default step size of ``infer.mh`` (so the default starts where the
    default ``"random_walk"`` move starts, and a step size the user set scales it)."""
    return move.step_size / _MH_DEFAULT_STEP_SIZE * _default_step_size("random_walk", dim)


def run_tempered_smc(key, model, args, kwargs, num_particles, move="random_walk",
                     num_mcmc_steps=5, step_size=None, target_ess=0.5, resample="systematic",
                     max_steps=200, num_leapfrog=10, adapt_step_size=True) -> TemperedOutput:
    """The adaptive tempered SMC driver (Del Moral, Doucet & Jasra 2006, the generic SMC
    sampler of section 3.1 with resampling at every step; exponents by
    :func:`next_exponent`).

    Particles start from the prior; then one ``lax.while_loop`` runs, while b < 1,
    :func:`next_exponent` -> :func:`incremental_weights` -> :func:`proposal_scale` ->
    :func:`resample_particles` -> :func:`mutate` (or :func:`mutate_mh` when ``move`` is an
    ``infer.mh(...)`` combinator with a ``"prior"`` or program proposal; an
    ``infer.mh(proposal="random_walk")`` move is :func:`mutate` with the random walk, its
    own ``num_mcmc_steps`` and ``adapt_step_size``, and the initial step size of
    :func:`_mh_relative_step_size`). The loop also stops if the log evidence is no longer
    finite (every particle impossible: :meth:`TemperedSMC.run` reports it). Step
    ``max_steps`` is forced to b = 1 (still a valid SMC sampler, only a noisier one;
    ``forced_final`` reports it). With
    ``adapt_step_size`` the kernel's step size is multiplied after each step by
    ``exp(2 (acceptance - a*))`` (a* from :data:`MOVES`): a function of the past
    population only, so each move stays invariant for its target. Pure JAX.
    """
    jax.eval_shape(lambda: _no_output(check_static, model, args, kwargs))  # errors, no ops
    key_init, key_loop = jax.random.split(key)
    draw = lambda k: ravel_pytree(prior_particle(k, model, args, kwargs))[0]
    template = jax.eval_shape(lambda: prior_particle(key_init, model, args, kwargs))
    _, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), template))
    step_keys = jax.random.split(key_loop, (max_steps, 2))

    def parts(x):
        lp, ll, _ = tempering_parts(model, args, kwargs, unravel(x))
        return _safe(lp), ll  # a NaN likelihood is kept: it reaches the evidence, reported

    x0 = jax.vmap(draw)(jax.random.split(key_init, num_particles))
    lp0, ll0 = jax.vmap(parts)(x0)
    dtype = x0.dtype
    dim = x0.shape[1]
    if isinstance(move, MH) and move.proposal == "random_walk":
        # the mh combinator's random walk, in this context, is the particle-adapted one
        num_mcmc_steps, adapt_step_size = move.num_mcmc_steps, move.adapt_step_size
        step_size = _mh_relative_step_size(move, dim)
        move = "random_walk"
    is_mh = not isinstance(move, str)
    if is_mh:
        step_size, adapt_step_size = move.step_size, False
    target_acc = 0.0 if is_mh else MOVES[move]
    size0 = _default_step_size(move, dim) if step_size is None else step_size
    nan = jnp.full((max_steps,), jnp.nan, dtype)

    def body(s: _LoopState) -> _LoopState:
        k_res, k_move = step_keys[s.t]
        last = s.t == max_steps - 1
        adaptive = next_exponent(s.particles.log_lik, s.beta, target_ess)
        beta_next = jnp.where(last, jnp.ones_like(adaptive), adaptive)
        forced = last & (adaptive < 1.0)
        log_w, increment = incremental_weights(s.particles.log_lik, s.beta, beta_next)
        particles = resample_particles(k_res, s.particles, log_w, resample)
        if is_mh:
            particles, acc = mutate_mh(k_move, particles, parts, beta_next, move, model, args,
                                       kwargs, unravel)
        else:
            _, cov = proposal_scale(s.particles.x, log_w)
            precond = kernel_parameters(move, cov)
            particles, acc = mutate(k_move, particles, parts, beta_next, move, precond,
                                    s.step_size, num_mcmc_steps, num_leapfrog)
        factor = jnp.exp(2.0 * (acc - target_acc)) if adapt_step_size else 1.0
        new_size = jnp.clip(s.step_size * factor, 1e-3 * size0, 1e3 * size0)
        return _LoopState(
            s.t + 1, beta_next, particles, s.log_evidence + increment,
            new_size.astype(dtype), forced,
            s.betas.at[s.t + 1].set(beta_next), s.ess.at[s.t].set(ess(log_w)),
            s.acceptance.at[s.t].set(acc), s.increments.at[s.t].set(increment),
            s.step_sizes.at[s.t].set(s.step_size),
        )

    def cond(s: _LoopState):
        return (s.beta < 1.0) & (s.t < max_steps) & jnp.isfinite(s.log_evidence)

    betas = jnp.full((max_steps + 1,), jnp.nan, dtype).at[0].set(0.0)
    init = _LoopState(
        jnp.zeros((), jnp.int32), jnp.zeros((), dtype), Particle(x0, lp0, ll0),
        jnp.zeros((), dtype), jnp.asarray(size0, dtype), jnp.zeros((), bool),
        betas, nan, nan, nan, nan,
    )
    final = jax.lax.while_loop(cond, body, init)
    return _finish(final, model, args, kwargs, unravel)


def _no_output(fn, *args):
    fn(*args)


def _finish(final: _LoopState, model, args, kwargs, unravel) -> TemperedOutput:
    """Read the final particles back through the program: their constrained latent and
    deterministic values, the pointwise log-likelihood of each observed site, the data."""

    def one(x):
        _, _, trace = tempering_parts(model, args, kwargs, unravel(x))
        return (
            trace.select(LATENT, DETERMINISTIC),
            {n: trace.log_probs[n] for n in trace.names(OBSERVED)},
            trace.select(OBSERVED),
            {n: trace.log_probs[n] for n in trace.names(FACTOR)},
        )

    samples, loglik, data, factors = jax.vmap(one)(final.particles.x)
    return TemperedOutput(
        samples, loglik, jax.tree.map(lambda a: a[0], data), factors, final.log_evidence,
        final.t, final.betas, final.ess, final.acceptance, final.increments,
        final.step_sizes, final.forced,
    )


# --------------------------------------------------------------------------- combinator


def _check_fraction(argument, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ArgumentTypeError(f"{argument} must be a number in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise InvalidArgumentError(
            f"{argument} must lie strictly between 0 and 1, got {value}"
        )
    return float(value)


def _check_step_size(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise ArgumentTypeError(f"step_size must be a positive number or None, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise InvalidArgumentError(f"step_size must be a positive finite number, got {value}")
    return float(value)


class TemperedSMC:
    """``tempered_smc(num_particles, move="random_walk", ...)``; see :func:`tempered_smc`."""

    def __init__(self, num_particles, move="random_walk", num_mcmc_steps=5, step_size=None,
                 target_ess=0.5, resample="systematic", max_steps=200, num_leapfrog=10,
                 adapt_step_size=True):
        self.num_particles = check_count("num_particles", num_particles)
        if self.num_particles < 2:
            raise InvalidArgumentError(
                f"num_particles must be >= 2 for tempered SMC (the proposal scale is the "
                f"particles' covariance), got {num_particles}"
            )
        if isinstance(move, MH):
            self.move = move
        elif isinstance(move, str):
            self.move = check_option("move", move, tuple(MOVES))
        else:
            raise ArgumentTypeError(
                f"tempered_smc: move must be 'random_walk', 'hmc' or an infer.mh(...) "
                f"combinator, got {move!r}"
            )
        self.num_mcmc_steps = check_count("num_mcmc_steps", num_mcmc_steps)
        if isinstance(move, MH):
            self.num_mcmc_steps = move.num_mcmc_steps
        self.step_size = _check_step_size(step_size)
        self.target_ess = _check_fraction("target_ess", target_ess)
        self.resample = check_option("resample", resample, tuple(SCHEMES))
        self.max_steps = check_count("max_steps", max_steps)
        self.num_leapfrog = check_count("num_leapfrog", num_leapfrog)
        self.adapt_step_size = bool(adapt_step_size)
        self._runs = CompiledRuns(self.core)
        self._checked = {}  # argument structure -> latent site names (check_static)

    def core(self, key, model, args, kwargs) -> TemperedOutput:
        """The pure, jittable run (:func:`run_tempered_smc` with this combinator's options)."""
        return run_tempered_smc(
            key, model, args, kwargs, self.num_particles, self.move, self.num_mcmc_steps,
            self.step_size, self.target_ess, self.resample, self.max_steps,
            self.num_leapfrog, self.adapt_step_size,
        )

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run tempered SMC on the static program ``model(*args, **kwargs)`` and return an
        equally weighted :class:`~ppl.Posterior` with ``log_evidence``."""
        latent = per_structure(  # clear errors before compiling; once per structure
            self._checked, model, args, kwargs,
            lambda: [n for n, site in check_static(model, args, kwargs).items()
                     if site["type"] == "sample" and not site["is_observed"]])
        out = self._runs(check_key(key), model, args, kwargs)
        _check_output(out)
        num_unique = {n: distinct_values(out.samples[n]) for n in latent}
        check_collapse(out, num_unique, self.num_particles, self.move, self.num_mcmc_steps)
        n = int(out.num_steps)
        if bool(out.forced_final):
            warnings.warn(
                f"tempered_smc: the exponent had not reached 1 after {self.max_steps - 1} "
                f"adaptive step(s), so step max_steps={self.max_steps} jumped to b = 1 (the "
                "evidence estimate stays unbiased but is noisier; raise max_steps)",
                RuntimeWarning,
                stacklevel=2,
            )
        return Posterior(
            out.samples,
            log_evidence=out.log_evidence,
            observed_data=out.observed_data,
            log_likelihood=out.log_likelihood,
            method="tempered_smc",
            info={
                "num_steps": n,
                "betas": out.betas,
                "schedule": np.asarray(out.betas[: n + 1]),
                "ess": out.ess,
                "accept_rate": out.accept_rate,
                "log_evidence_increments": out.log_evidence_increments,
                "step_size": out.step_size,
                "forced_final": bool(out.forced_final),
                "num_particles": self.num_particles,
                "move": self.move if isinstance(self.move, str) else repr(self.move),
                "num_mcmc_steps": self.num_mcmc_steps,
                "target_ess": self.target_ess,
                "resample": self.resample,
                "num_unique": num_unique,
            },
        )

    def __repr__(self):
        return (
            f"tempered_smc(num_particles={self.num_particles}, move={self.move!r}, "
            f"num_mcmc_steps={self.num_mcmc_steps}, step_size={self.step_size}, "
            f"target_ess={self.target_ess}, resample={self.resample!r}, "
            f"max_steps={self.max_steps})"
        )


#: A population counts as collapsed when the moves' mean acceptance over the last
#: ``COLLAPSE_WINDOW`` tempering steps is below ``COLLAPSE_ACCEPT``, or when some latent
#: coordinate takes fewer than ``COLLAPSE_UNIQUE * N`` distinct values among the final N
#: particles (a healthy run has nearly N: each resampled copy is moved apart).
COLLAPSE_ACCEPT = 0.02
COLLAPSE_UNIQUE = 0.5
COLLAPSE_WINDOW = 3


def distinct_values(values) -> int:
    """The fewest distinct values any coordinate of a site takes over the particles
    (``values`` with a leading particle axis); a population of copies of a few particles
    has few."""
    flat = np.asarray(values).reshape(np.shape(values)[0], -1)
    if flat.shape[1] == 0:
        return flat.shape[0]
    ordered = np.sort(flat, axis=0)
    return int(np.min(1 + np.sum(ordered[1:] != ordered[:-1], axis=0)))


def check_collapse(out: TemperedOutput, num_unique, num_particles, move, num_mcmc_steps):
    """Warn (:class:`~ppl.ParticleCollapseWarning`) with the figures when the moves'
    acceptance collapsed late in the schedule or the final population is a few repeated
    values (:data:`COLLAPSE_ACCEPT`, :data:`COLLAPSE_UNIQUE`); returns the problems
    found (empty when none)."""
    n = int(out.num_steps)
    late = np.asarray(out.accept_rate[max(n - COLLAPSE_WINDOW, 0): n], np.float64)
    problems = []
    if late.size and np.mean(late) < COLLAPSE_ACCEPT:
        problems.append(
            f"the moves accepted {100 * np.mean(late):.2g}% of proposals over the last "
            f"{late.size} tempering step(s) (per step: "
            f"{', '.join(f'{100 * a:.2g}%' for a in late)})"
        )
    few = {k: v for k, v in num_unique.items() if v < COLLAPSE_UNIQUE * num_particles}
    if few:
        problems.append(
            "the final population has only "
            + ", ".join(f"{v} distinct value(s) of site '{k}'" for k, v in few.items())
            + f" among {num_particles} particles"
        )
    if problems:
        what = move if isinstance(move, str) else repr(move)
        warnings.warn(
            f"tempered_smc: the particle population collapsed: {'; '.join(problems)}. The "
            "posterior it returns is then a few points near where the moves got stuck, its "
            f"spread underestimated. With move={what} ({num_mcmc_steps} MCMC step(s) per "
            "tempering step): raise num_mcmc_steps (so that acceptance x num_mcmc_steps is "
            "well above 1 per tempering step), or use a move that adapts to the particles: "
            "move='random_walk' (or infer.mh(proposal='random_walk')) or move='hmc'.",
            ParticleCollapseWarning,
            stacklevel=3,
        )
    return problems


def _check_output(out: TemperedOutput):
    """Raise :class:`NonFiniteWeightError` naming the sites when the evidence estimate or
    a step's increment is NaN / infinite (e.g. every particle impossible under the data)."""
    if np.isfinite(np.asarray(out.log_evidence)):
        return
    n = int(out.num_steps)
    bad = np.flatnonzero(~np.isfinite(np.asarray(out.log_evidence_increments[:n])))
    where = f"first at tempering step {int(bad[0]) + 1}" if bad.size else "at the end"
    log_probs = {**out.log_likelihood, **out.factor_log_probs}
    total = sum(
        (jnp.sum(lp.reshape(lp.shape[0], -1), axis=1) for lp in log_probs.values()),
        jnp.zeros(()),
    )
    check_log_weights(total, log_probs, what=f"tempered SMC log-likelihood ({where})")
    raise NonFiniteWeightError(
        f"tempered_smc: the log-evidence estimate is not finite ({where}); check the "
        "observe/factor sites for NaN or zero-density data"
    )


def tempered_smc(num_particles: int, move="random_walk", num_mcmc_steps=5, step_size=None,
                 target_ess=0.5, resample="systematic", max_steps=200, num_leapfrog=10,
                 adapt_step_size=True) -> TemperedSMC:
    """Adaptive tempered SMC for static programs (Del Moral, Doucet & Jasra 2006).

    ``num_particles`` (>= 2) particles go from the prior to the posterior through
    ``p(x) L(x)^b``, with each next b chosen so that the ESS of the incremental weights is
    ``target_ess * num_particles`` (in (0, 1); smaller means fewer, bigger steps), then
    resampled with ``resample`` (``"systematic"``, ``"stratified"``, ``"residual"``,
    ``"multinomial"``) and moved by ``num_mcmc_steps`` MCMC steps of ``move``:

    * ``"random_walk"`` (default): Gaussian random walk Metropolis with proposal covariance
      ``step_size^2 * Sigma`` (Sigma the weighted particle covariance; default step size
      ``2.38 / sqrt(D)``);
    * ``"hmc"``: HMC with ``num_leapfrog`` leapfrog steps of size ``step_size`` (default
      ``D^(-1/4)``) and inverse mass matrix ``diag(Sigma)``.

    With ``adapt_step_size`` (default) the step size is retuned after each step towards
    acceptance 0.25 (random walk) or 0.65 (HMC). ``max_steps`` bounds the number of
    tempering steps: the last one jumps to b = 1 (with a warning).

    ``move`` may also be an ``infer.mh(...)`` combinator, run its own ``num_mcmc_steps``
    times per tempering step (the ``num_mcmc_steps``, ``step_size`` and
    ``adapt_step_size`` given here are then ignored; so are the mh object's
    ``num_samples``, ``num_warmup`` and ``num_chains``):

    * ``infer.mh(proposal="random_walk", step_size=s, adapt_step_size=a)`` *is* the
      particle-adapted random walk above (a fixed-scale walk on a posterior whose scale
      shrinks by orders of magnitude from prior to posterior collapses the population).
      Its ``step_size`` is read relative to ``infer.mh``'s default 0.5: the first step
      size is ``(s / 0.5) * 2.38 / sqrt(D)`` in units of the particle covariance (the
      default ``s = 0.5`` starts where ``move="random_walk"`` does, ``s = 1`` twice as
      wide), then retuned towards acceptance 0.25 after each step unless ``a`` is False
      (then it stays at that multiple of the particle covariance);
    * ``proposal="prior"`` (single-site regeneration from the prior) or a proposal
      program: the ``infer.mh`` trace kernel, unscaled, run on the tempered program
      ``p(x) L(x)^b`` (every observe/factor site scaled by b). On a posterior much
      narrower than the prior its acceptance vanishes late in the schedule: see the
      collapse warning below.

    After the run a :class:`~ppl.ParticleCollapseWarning` reports a collapsed population:
    mean acceptance of the moves below 2% over the last (up to) 3 tempering steps, or a
    latent coordinate taking fewer than ``N / 2`` distinct values among the final N
    particles (``info["num_unique"]``: site -> the fewest distinct values of any of its
    coordinates); the fix is more ``num_mcmc_steps`` or a move that adapts to the
    particles (``"random_walk"``, ``"hmc"``).
    Programs with ``ppl.markov`` or discrete latent sites raise
    :class:`~ppl.UnsupportedModelError`.

    ``.run(key, model, *args, **kwargs)`` returns an *equally weighted*
    :class:`~ppl.Posterior` (the final population is resampled and moved;
    ``log_weights=None``) with ``log_evidence`` (unbiased for p(data) on the natural
    scale) and ``info``: ``num_steps`` T, ``schedule`` (b_0 = 0 < ... < b_T = 1),
    ``betas`` (the schedule padded with NaN to ``max_steps + 1``), and per step, padded to
    ``max_steps``: ``ess``, ``accept_rate``, ``log_evidence_increments``,
    ``step_size``; also ``forced_final``.
    """
    return TemperedSMC(num_particles, move, num_mcmc_steps, step_size, target_ess, resample,
                       max_steps, num_leapfrog, adapt_step_size)
