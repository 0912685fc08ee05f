"""Parameter learning for ``ppl.markov`` programs with PaRIS particle Gibbs (PPG).

Three algorithms built on the conditional PaRIS sweep of :mod:`ppl.inference.smoothing` and
the conditional SMC of :mod:`ppl.inference.conditional`:

* :func:`score_ascent` — maximum likelihood for the program's ``ppl.param`` sites by
  stochastic gradient ascent on log p_theta(y). The score is, by Fisher's identity
  (Cappé, Moulines & Rydén 2005, *Inference in Hidden Markov Models*, Proposition 10.1.6),
  the smoothed expectation of the additive functional

      psi_t(x_{t-1}, x_t) = grad_theta log[ m_theta(x_{t-1}, x_t) g_theta(x_t, y_t) ],

  taken with gradients of the log densities at fixed particles (never through the
  sampler), and is estimated by PPG with the reference path carried over between
  parameter updates (Cardoso, Janati, Le Corff, Moulines & Olsson 2023, "State and
  parameter learning with PaRIS particle Gibbs", ICML, arXiv 2301.00900, section 4,
  the PPG score-ascent algorithm);
* :func:`score_climbing` — Markov score climbing (Naesseth, Lindsten & Blei 2020, "Markovian
  score climbing", NeurIPS, Algorithm 1) for a variational family of the states given as a
  ``guide`` program with ``ppl.param`` sites: minimises KL(p(x | y) || q_lambda(x)) with
  the gradient E_p[grad_lambda log q_lambda(x_{0:T})], an additive functional when the
  guide is Markov, estimated by PPG (the Markov kernel of MSC is the PPG chain of paths);
* :func:`particle_gibbs` — the Bayesian counterpart: particle Gibbs for states and global
  latent sites jointly (Andrieu, Doucet & Holenstein 2010, section 2.4.3), conditional SMC
  with backward sampling for the states (Lindsten & Schön 2013, Algorithm 5) and
  random-walk Metropolis on the unconstrained global sites given the path.

Optimisation (both learners): the parameters live in unconstrained coordinates
u = T^{-1}(theta) (NumPyro's ``biject_to`` of each site's constraint); the optimiser
(optax, default Adam, Kingma & Ba 2015) receives the *negative* estimated gradient divided
by the number of time steps T (so step sizes do not depend on the series length; Adam is
invariant to that scale anyway). The default step-size schedule is Robbins-Monro
(:func:`robbins_monro`): ``step_size`` for the first quarter of the iterations, then
decaying as ``n^-0.6`` (sum of steps infinite, sum of squares finite). The returned estimate
is the Polyak-Ruppert average (Polyak & Juditsky 1992) of the iterates u_n over the last
``average`` fraction of the iterations, mapped back to the constrained space. The whole
optimisation is one ``jit``: a ``lax.scan`` over iterations (with an optional progress
bar, :func:`ppl.inference.progress.progress_scan`), each iteration ``num_sweeps`` PPG
sweeps (a ``lax.scan``) at the current parameters whose estimates after the first
``num_warmup`` are averaged (Cardoso et al. 2023, the bias-reduced estimator Pi_{k0,k}).

Step functionals. PaRIS in :mod:`ppl.inference.smoothing` feeds the user's functional the
carries ``psi(t, x_prev, x, params)``. The score needs the step's latent *values* (the
carry need not contain them), so this module's sweep (:func:`conditional_sweep`) feeds a
*step functional* ``phi(t, z_prev, prev_carry, carry, values)`` (``z_prev``: the previous
particle's time-0 state sites); it is the same PaRIS sweep
(:func:`~ppl.inference.smoothing.paris_sweep`: the engine's time driver with the
:class:`~ppl.inference.smoothing.ParisCollector`) with that functional.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from ppl.inference.base import (
    CompiledRuns,
    check_count,
    check_key,
    check_option,
    check_sweeps,
)
from ppl.inference.conditional import (
    check_markov_gap,
    check_reference,
    conditional_model,
    csmc_kernel,
)
from ppl.inference.kernels import (
    constrain,
    init_mh_state,
    random_walk_mh,
    repeat,
    sample_chain,
    unconstrain,
)
from ppl.inference.progress import progress_scan
from ppl.inference.smoothing import BACKWARD, ParisCollector, paris_sweep
from ppl.semantics.sequential import Sequential, replay_key, step_reads
from ppl.semantics.trace import LATENT, PARAM, from_numpyro, record

from ppl.errors import (
    ArgumentTypeError,
    NonFiniteWeightError,
    UnsupportedModelError,
    check_nonnegative,
    check_number,
    check_positive,
)
from ppl.posterior import Posterior
from ppl.primitives import stub_markov

__all__ = [
    "LearningResult",
    "ParticleGibbs",
    "ScoreAscent",
    "ScoreClimbing",
    "conditional_sweep",
    "fisher_score",
    "global_sites",
    "guide_score_functional",
    "particle_gibbs",
    "ppg_estimate",
    "robbins_monro",
    "run_particle_gibbs_params",
    "run_ppg_learning",
    "score_ascent",
    "score_climbing",
    "score_functional",
]


# --------------------------------------------------------------------------- global sites


class GlobalSite(NamedTuple):
    """A site before the ``markov`` call: its kind (latent / param), constraint, value."""

    kind: str
    constraint: object
    value: jnp.ndarray


def global_sites(model, args, kwargs, substitutions=None) -> dict:
    """The global latent and ``ppl.param`` sites of ``model`` (those before its ``markov``
    call), with their constraints (a latent site's support, a param's ``constraint``) and
    values (a prior draw at a fixed key / the param's init, or ``substitutions``)."""

    with stub_markov():
        _, _, raw = record(model, replay_key(), args, kwargs, substitutions=substitutions)
    trace = from_numpyro(raw)
    out = {}
    for name in trace.names(LATENT, PARAM):
        site = raw[name]
        if trace.kind(name) == PARAM:
            constraint = site["kwargs"].get("constraint", constraints.real)
        else:
            constraint = site["fn"].support
        out[name] = GlobalSite(trace.kind(name), constraint, jnp.asarray(site["value"]))
    return out


def _supports(sites, names) -> dict:
    return {n: sites[n].constraint for n in names}


def _constrain(sites, names, unconstrained: dict) -> dict:
    """The named sites at constrained values (:func:`ppl.inference.kernels.constrain`)."""
    return constrain(_supports(sites, names), {n: unconstrained[n] for n in names})[0]


def _unconstrain(sites, names, values: dict) -> dict:
    return unconstrain(_supports(sites, names), {n: values[n] for n in names})


# --------------------------------------------------------------------------- sweeps


def conditional_sweep(key, fk, num_particles, num_backward, phi, reference=None,
                      backward="exact", max_trials=16, block_size=256):
    """One conditional PaRIS sweep of PPG for a step functional ``phi(t, z_prev, c_prev,
    carry, values) -> array`` (``z_prev`` the previous particle's time-0 state sites;
    Cardoso et al. 2023, arXiv 2301.00900, Algorithm 2; PaRIS update of Olsson &
    Westerborn 2017, eq. (3.3)): :func:`~ppl.inference.smoothing.paris_sweep` with the
    PaRIS collector, conditional on ``reference`` (a plain bootstrap filter when None),
    drawing a new path through the backward indices. Returns ``(estimate, new path,
    markov gap, bound excess)`` (the last two are diagnostics: 0 and <= 0 when all is
    well). Pure and jittable."""
    if reference is not None:
        reference = check_reference(fk, reference, who="ppg")
    ssm = fk.shared
    z0 = {n: ssm.globals.values[n] for n in fk.per_particle}
    spec = jax.eval_shape(
        lambda: phi(0, z0, ssm.init, ssm.init, ssm.step(replay_key(), 0, ssm.init).values)
    )

    def functional(t, z_prev, prev, new):
        return phi(t, z_prev, prev, new[0], new[1])

    collector = ParisCollector(fk, functional, spec, num_backward, backward, max_trials,
                               None, block_size, draw_path=True)
    run, path = paris_sweep(key, fk, num_particles, collector, reference)
    return (run.records.estimate[-1], path, jnp.max(run.records.markov_gap),
            jnp.max(run.records.bound_excess))


def ppg_estimate(key, fk, num_particles, num_backward, phi, reference, num_sweeps=1,
                 num_warmup=0, backward="exact", max_trials=16, block_size=256):
    """``num_sweeps`` PPG sweeps (:func:`conditional_sweep`) from ``reference``; returns
    ``(estimate, last path, gap, bound excess)`` with the estimate the average of the sweeps
    ``num_warmup + 1 .. num_sweeps`` (Cardoso et al. 2023, the bias-reduced estimator
    Pi_{k0,k}): a chain of the sweep kernel run by the one chain driver
    (:func:`ppl.inference.kernels.sample_chain`)."""

    def sweep(key_k, ref):
        est, path, gap, excess = conditional_sweep(key_k, fk, num_particles, num_backward,
                                                   phi, ref, backward, max_trials,
                                                   block_size)
        return path, (est, gap, excess)

    chain = sample_chain(key, sweep, reference, num_sweeps)
    estimates, gaps, excess = chain.infos
    return (jnp.mean(estimates[num_warmup:], axis=0), chain.final_state, jnp.max(gaps),
            jnp.max(excess))


# --------------------------------------------------------------------------- functionals


def score_functional(model, args, kwargs, sites, names, fixed, unravel):
    """``u -> phi``: the step functional of Fisher's identity at unconstrained parameters
    ``u`` (flat), ``phi(t, z, c_prev, c, x) = grad_u log[m_theta(c_prev, x) g_theta(x, y_t)]``
    with theta = T(u) (Cappé, Moulines & Rydén 2005, Prop. 10.1.6; Cardoso et al. 2023,
    section 4). The gradient is of the step's log densities at the fixed particle values.
    At step 0 the previous carry is the init carry *as a function of theta* (and of the
    time-0 state ``z`` the particle drew), and the step also carries the score of the
    global terms, ``grad_u log[p_theta(z) g_theta^0(z)]`` (the density of the time-0 state
    sites and the global observe / factor sites), so the smoothed sum is the whole score of
    log p_theta(y)."""

    def log_step(u, t, z, c_prev, values):
        held = {**fixed, **_constrain(sites, names, unravel(u)), **z}
        ssm = Sequential(model).state_space(replay_key(), *args, params=held, **kwargs)
        c_prev = jax.tree.map(lambda a, b: jnp.where(t == 0, a, b), ssm.init, c_prev)
        result = ssm.replay_step(t, c_prev, values)
        g = ssm.globals
        initial = g.log_likelihood + sum((jnp.sum(g.log_probs[n]) for n in z), jnp.zeros(()))
        return result.log_weight + result.log_transition + jnp.where(t == 0, initial, 0.0)

    def at(u):
        def phi(t, z, c_prev, c, values):
            return jax.grad(log_step)(u, t, z, c_prev, values)

        return phi

    return at


def guide_score_functional(guide, args, kwargs, sites, names, unravel):
    """``u -> phi``: the step functional of Markov score climbing,
    ``phi(t, c_prev, c, x) = grad_u log q_lambda(x_t = x | c_prev)`` with lambda = T(u) the
    guide's ``ppl.param`` sites (Naesseth, Lindsten & Blei 2020, eq. (4): the gradient of
    KL(p || q) is -E_p[grad log q], additive over steps for a Markov guide). The guide's
    step is replayed from the *model's* previous carry."""

    def log_q(u, t, c_prev, values):
        params = _constrain(sites, names, unravel(u))
        gssm = Sequential(guide).state_space(replay_key(), *args, params=params, **kwargs)
        c_prev = jax.tree.map(lambda a, b: jnp.where(t == 0, a, b), gssm.init, c_prev)
        return gssm.replay_step(t, c_prev, values).log_transition

    def at(u):
        def phi(t, z, c_prev, c, values):
            return jax.grad(log_q)(u, t, c_prev, values)

        return phi

    return at


def fisher_score(key, model, args, kwargs, params, num_particles=100, num_backward=2,
                 num_sweeps=5, num_warmup=1, backward="exact", reference=None):
    """The PPG estimate of the score grad_theta log p_theta(y) at ``params`` (site ->
    value, constrained coordinates; every ``ppl.param`` and global latent site given), by
    Fisher's identity: :func:`ppg_estimate` of the smoothed sum of
    grad_theta log[m_theta g_theta] (:func:`score_functional`) over ``num_sweeps`` sweeps
    after the first ``num_warmup``, from ``reference`` (default: a path from an
    unconditional sweep).
    Returns ``(score dict site -> gradient, last path)``. Pure and jittable."""
    sites = global_sites(model, args, kwargs, params)
    names = [n for n in sites if n in params]
    real = {n: GlobalSite(s.kind, constraints.real, s.value) for n, s in sites.items()}
    fixed = {n: v for n, v in params.items() if n not in names}
    theta, unravel = ravel_pytree({n: jnp.asarray(params[n]) for n in names})
    phi_at = score_functional(model, args, kwargs, real, names, fixed, unravel)
    fk = conditional_model(model, args, kwargs, params, who="fisher_score")
    key_init, key_run = jax.random.split(key)
    if reference is None:
        _, reference, _, _ = conditional_sweep(key_init, fk, num_particles, num_backward,
                                               phi_at(theta), None, backward)
    est, last, _, _ = ppg_estimate(key_run, fk, num_particles, num_backward, phi_at(theta),
                                   reference, num_sweeps, num_warmup, backward)
    return unravel(est), last


# --------------------------------------------------------------------------- schedule


def robbins_monro(step_size, num_steps, exponent=0.6, constant_fraction=0.25):
    """The default step-size schedule: ``step_size`` for the first ``constant_fraction``
    of the iterations (n < n0), then ``step_size (n0 / n)^exponent`` (Robbins & Monro 1951
    conditions for exponent in (0.5, 1]: the steps sum to infinity, their squares do not).
    An optax schedule (a function of the iteration count)."""
    n0 = max(1, int(constant_fraction * num_steps))

    def schedule(count):
        n = jnp.maximum(count, 1).astype(jnp.result_type(float))
        return step_size * jnp.minimum(1.0, (n0 / n) ** exponent)

    return schedule


# --------------------------------------------------------------------------- driver


class LearningOutput(NamedTuple):
    """One optimisation (a pytree: the output of the jitted core)."""

    trajectory: jnp.ndarray  # (num_steps + 1, D) unconstrained iterates, u_0 first
    gradients: jnp.ndarray  # (num_steps, D) the gradient estimates (per step: / T)
    estimate: jnp.ndarray  # (D,) Polyak-Ruppert average of the unconstrained iterates
    reference: dict  # the last path
    markov_gap: jnp.ndarray
    bound_excess: jnp.ndarray  # accept-reject: max log m - log bound (<= 0 if valid)


def run_ppg_learning(key, fk_at, phi_at, u0, optimizer, num_steps, num_particles,
                     num_backward=2, num_sweeps=1, num_warmup=0, backward="exact",
                     max_trials=16, block_size=256, average=0.5, extra_gradient=None,
                     progress_bar=False, desc="ppg learning"):
    """The learning loop shared by :func:`score_ascent` and :func:`score_climbing`
    (Cardoso et al. 2023, section 4): at iteration n, build the Feynman–Kac model at the
    current unconstrained parameters (``fk_at(u)``), estimate the smoothed expectation of
    the step functional ``phi_at(u)`` by :func:`ppg_estimate` from the reference path carried over
    from iteration n-1, and take an optimiser step on ``-estimate / T``. The first
    reference is drawn from an unconditional PaRIS sweep at u_0. One ``lax.scan`` over the
    iterations; pure and jittable. ``extra_gradient(u)`` adds a term known exactly (the
    score of global observe sites)."""
    opt_state = optimizer.init(u0)
    fk0 = fk_at(u0)
    key_init, key_loop = jax.random.split(key)
    _, reference, gap0, excess0 = conditional_sweep(key_init, fk0, num_particles, num_backward,
                                           phi_at(u0), None, backward, max_trials, block_size)
    num_time_steps = fk0.num_steps

    def body(carry, key_n):
        u, opt_state, ref = carry
        fk = fk_at(u)
        est, ref, gap, excess = ppg_estimate(key_n, fk, num_particles, num_backward,
                                             phi_at(u), ref, num_sweeps, num_warmup, backward,
                                             max_trials, block_size)
        if extra_gradient is not None:
            est = est + extra_gradient(u)
        grad = est / num_time_steps
        updates, opt_state = optimizer.update(-grad, opt_state, u)
        u = optax.apply_updates(u, updates)
        return (u, opt_state, ref), (u, grad, gap, excess)

    (_, _, reference), (us, grads, gaps, excess) = progress_scan(
        body, (u0, opt_state, reference), jax.random.split(key_loop, num_steps),
        desc=desc, enable=progress_bar,
    )
    trajectory = jnp.concatenate([u0[None], us], axis=0)
    start = min(num_steps - 1, int(math.floor((1.0 - average) * num_steps)))
    return LearningOutput(
        trajectory=trajectory,
        gradients=grads,
        estimate=jnp.mean(us[start:], axis=0),
        reference=reference,
        markov_gap=jnp.maximum(gap0, jnp.max(gaps)),
        bound_excess=jnp.maximum(excess0, jnp.max(excess)),
    )


# --------------------------------------------------------------------------- result


class LearningResult(Posterior):
    """A :class:`~ppl.Posterior` whose draws are the iterates of an optimisation (one
    chain, draw n = the parameters after n updates, draw 0 the initial values), with the
    final (Polyak-Ruppert averaged) estimate as :attr:`estimate`."""

    @property
    def estimate(self) -> dict:
        """The learnt parameters: site -> value (constrained)."""
        return self.info["estimate"]

    @property
    def trajectory(self) -> dict:
        """site -> (num_steps + 1, ...) constrained iterates."""
        return self.samples


def _check_optimizer(optimizer):
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise ArgumentTypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-2)), got "
            f"{optimizer!r}"
        )
    return optimizer


def _check_fraction(name, value, low_open=True):
    return check_number(name, value, 0.0, 1.0, low_open=low_open)


def _constrained(out, sites, names, unravel):
    """``(trajectory, estimate)`` of a learning run at constrained values (jittable: the
    compiled run returns them, so ``run`` does no eager pass)."""
    trajectory = jax.vmap(lambda u: _constrain(sites, names, unravel(u)))(out.trajectory)
    return trajectory, _constrain(sites, names, unravel(out.estimate))


def _result(out, constrained, method, info):
    trajectory, estimate = constrained
    grads = np.asarray(out.gradients)
    gnorm = np.concatenate([[np.nan], np.linalg.norm(grads, axis=-1)])
    return LearningResult(
        {n: np.asarray(v) for n, v in trajectory.items()},
        method=method,
        sample_stats={"gradient_norm": gnorm},
        info={"estimate": {n: np.asarray(v) for n, v in estimate.items()},
              "gradients": grads, "reference": out.reference,
              "unconstrained_estimate": np.asarray(out.estimate), **info},
    )


class _PPGLearner:
    """Options shared by :class:`ScoreAscent` and :class:`ScoreClimbing`."""

    def __init__(self, num_particles, num_backward, num_steps, num_sweeps, num_warmup,
                 optimizer, step_size, backward, max_trials, block_size, average,
                 progress_bar):
        self.num_particles = check_count("num_particles", num_particles)
        self.num_backward = check_count("num_backward", num_backward)
        self.num_steps = check_count("num_steps", num_steps)
        self.num_sweeps, self.num_warmup = check_sweeps(num_sweeps, num_warmup)
        self.step_size = check_positive("step_size", step_size)
        self.optimizer = _check_optimizer(optimizer) or optax.adam(
            robbins_monro(self.step_size, self.num_steps)
        )
        self.backward = check_option("backward", backward, BACKWARD)
        self.max_trials = check_count("max_trials", max_trials)
        self.block_size = check_count("block_size", block_size)
        self.average = _check_fraction("average", average)
        self.progress_bar = bool(progress_bar)

    def _loop(self, key, fk_at, phi_at, u0, extra_gradient=None, desc=""):
        return run_ppg_learning(
            key, fk_at, phi_at, u0, self.optimizer, self.num_steps,
            self.num_particles, self.num_backward, self.num_sweeps, self.num_warmup,
            self.backward, self.max_trials, self.block_size, self.average, extra_gradient,
            self.progress_bar, desc,
        )

    def _info(self):
        return {"num_particles": self.num_particles, "num_backward": self.num_backward,
                "num_steps": self.num_steps, "num_sweeps": self.num_sweeps,
                "num_warmup": self.num_warmup, "backward": self.backward, "average": self.average}


def _learnt_names(sites, kind, exclude, who):
    names = [n for n, s in sites.items() if s.kind == kind and n not in exclude]
    if not names:
        raise UnsupportedModelError(
            f"{who}: the program has no ppl.param site before its markov call to learn"
        )
    return names


def _check_gap(out, who):
    excess = float(np.asarray(out.bound_excess))
    if excess > 1e-4 * (1.0 + abs(excess)):
        raise UnsupportedModelError(
            f"{who}: the upper bound of the transition density was violated in an "
            f"accept-reject backward draw; use backward='exact'"
        )
    check_markov_gap(out.markov_gap, who)


def _check_run(out, who, non_finite):
    """A finished optimisation: :func:`_check_gap`, and a finite trajectory (else
    ``NonFiniteWeightError`` with the ``non_finite`` explanation)."""
    _check_gap(out, who)
    if not np.all(np.isfinite(np.asarray(out.trajectory))):
        raise NonFiniteWeightError(f"{who}: {non_finite}")


class ScoreAscent(_PPGLearner):
    """``score_ascent(num_particles, ...)``; see :func:`score_ascent`."""

    def __init__(self, num_particles=100, num_backward=2, num_steps=500, num_sweeps=1,
                 num_warmup=0, optimizer=None, step_size=0.05, backward="exact", max_trials=16,
                 block_size=256, average=0.5, init=None, fixed=None, progress_bar=False):
        super().__init__(num_particles, num_backward, num_steps, num_sweeps, num_warmup,
                         optimizer, step_size, backward, max_trials, block_size, average,
                         progress_bar)
        self.init = dict(init or {})
        self.fixed = dict(fixed or {})
        self._runs = CompiledRuns(self._core)

    def _setup(self, model, args, kwargs):
        sites = global_sites(model, args, kwargs, {**self.fixed, **self.init})
        names = _learnt_names(sites, PARAM, self.fixed, "score_ascent")
        u0, unravel = ravel_pytree(
            _unconstrain(sites, names, {n: sites[n].value for n in names})
        )
        return sites, names, u0, unravel

    def core(self, key, model, args, kwargs, u0=None, setup=None) -> LearningOutput:
        """The pure jittable optimisation (:func:`run_ppg_learning` with the score
        functional); ``u0`` (flat unconstrained parameters) overrides the start."""
        sites, names, start, unravel = setup or self._setup(model, args, kwargs)
        u0 = start if u0 is None else u0
        fixed = self.fixed

        def fk_at(u):
            params = {**fixed, **_constrain(sites, names, unravel(u))}
            return conditional_model(model, args, kwargs, params, who="score_ascent")

        phi_at = score_functional(model, args, kwargs, sites, names, fixed, unravel)
        return self._loop(key, fk_at, phi_at, u0, None, "score ascent")

    def _core(self, key, model, args, kwargs):
        setup = self._setup(model, args, kwargs)
        out = self.core(key, model, args, kwargs, setup=setup)
        return out, _constrained(out, setup[0], setup[1], setup[3])

    def run(self, key, model, *args, **kwargs) -> LearningResult:
        """Maximise the likelihood of ``model(*args, **kwargs)`` over its ``ppl.param``
        sites; returns a :class:`LearningResult` (trajectory and estimate)."""
        out, constrained = self._runs(check_key(key), model, args, kwargs)
        _check_run(out, "score_ascent", "the parameters became non-finite (a NaN score: a "
                   "log density is NaN at some particle, or the step size is too large)")
        return _result(out, constrained, "score_ascent", self._info())


def score_ascent(num_particles=100, num_backward=2, num_steps=500, num_sweeps=1,
                 num_warmup=0, optimizer=None, step_size=0.05, backward="exact", max_trials=16,
                 block_size=256, average=0.5, init=None, fixed=None, progress_bar=False):
    """Maximum likelihood for the ``ppl.param`` sites of a ``ppl.markov`` program by PPG
    score ascent (Cardoso et al. 2023, arXiv 2301.00900, section 4).

    Each of the ``num_steps`` iterations (optimiser steps) runs ``num_sweeps`` PPG sweeps
    (conditional PaRIS with ``num_particles`` N and ``num_backward`` Ñ, ``backward="exact"``
    or ``"reject"``) at the current parameters, from the reference path left by the
    previous iteration, estimates the score by Fisher's identity (the smoothed sum of
    grad log[m g] at fixed particles, averaging the sweeps after the first ``num_warmup``),
    and takes an ``optimizer`` step (optax; default Adam with :func:`robbins_monro` steps
    starting at ``step_size``) on the unconstrained parameters with gradient
    ``-score / T``. The estimate is the average of the last ``average`` fraction of the
    iterates. ``progress_bar=True`` shows a tqdm bar over the iterations.

    ``init`` (site -> value) overrides the params' init values; ``fixed`` (site -> value)
    holds params (not learnt) and global latent sites (which must all be fixed: MLE here
    is for params; use :func:`particle_gibbs` for latent globals). Param sites inside the
    markov step are not learnt. ``.run(key, model, *args, **kwargs)`` returns a
    :class:`LearningResult`: ``samples`` is the trajectory (draw n = after n updates),
    ``estimate`` the final dict, ``info["gradients"]`` the per-iteration gradient
    estimates (unconstrained, divided by T), ``info["reference"]`` the last path.
    """
    return ScoreAscent(num_particles, num_backward, num_steps, num_sweeps, num_warmup,
                       optimizer, step_size, backward, max_trials, block_size, average, init,
                       fixed, progress_bar)


class ScoreClimbing(_PPGLearner):
    """``score_climbing(guide, num_particles, ...)``; see :func:`score_climbing`."""

    def __init__(self, guide, num_particles=100, num_backward=2, num_steps=500,
                 num_sweeps=1, num_warmup=0, optimizer=None, step_size=0.05, backward="exact",
                 max_trials=16, block_size=256, average=0.5, init=None, fixed=None,
                 progress_bar=False):
        if not callable(guide):
            raise ArgumentTypeError(f"guide must be a ppl program (a function), got {guide!r}")
        super().__init__(num_particles, num_backward, num_steps, num_sweeps, num_warmup,
                         optimizer, step_size, backward, max_trials, block_size, average,
                         progress_bar)
        self.guide = guide
        self.init = dict(init or {})
        self.fixed = dict(fixed or {})
        self._runs = CompiledRuns(self._core)

    def _setup(self, args, kwargs):
        sites = global_sites(self.guide, args, kwargs, self.init)
        names = _learnt_names(sites, PARAM, (), "score_climbing (guide)")
        u0, unravel = ravel_pytree(
            _unconstrain(sites, names, {n: sites[n].value for n in names})
        )
        return sites, names, u0, unravel

    def core(self, key, model, args, kwargs, u0=None, setup=None) -> LearningOutput:
        """The pure jittable optimisation of the guide's params (model fixed)."""
        sites, names, start, unravel = setup or self._setup(args, kwargs)
        u0 = start if u0 is None else u0
        fk = conditional_model(model, args, kwargs, self.fixed, who="score_climbing")
        phi_at = guide_score_functional(self.guide, args, kwargs, sites, names, unravel)
        return self._loop(key, lambda u: fk, phi_at, u0, None, "score climbing")

    def _core(self, key, model, args, kwargs):
        setup = self._setup(args, kwargs)
        out = self.core(key, model, args, kwargs, setup=setup)
        return out, _constrained(out, setup[0], setup[1], setup[3])

    def run(self, key, model, *args, **kwargs) -> LearningResult:
        """Fit the guide to the smoothing distribution of ``model(*args, **kwargs)``;
        returns a :class:`LearningResult` over the guide's params."""
        out, constrained = self._runs(check_key(key), model, args, kwargs)
        _check_run(out, "score_climbing", "the guide's params became non-finite (a NaN "
                   "gradient of log q, or the step size is too large)")
        return _result(out, constrained, "score_climbing", self._info())


def score_climbing(guide, num_particles=100, num_backward=2, num_steps=500,
                   num_sweeps=1, num_warmup=0, optimizer=None, step_size=0.05,
                   backward="exact", max_trials=16, block_size=256, average=0.5, init=None,
                   fixed=None, progress_bar=False):
    """Markov score climbing (Naesseth, Lindsten & Blei 2020) of a Markov variational
    family of the states, with PPG as the Markov kernel (Cardoso et al. 2023, section 4).

    ``guide`` is a ppl program called with the model's arguments: ``ppl.param`` sites
    (lambda) before one ``ppl.markov`` call whose step samples the same latent sites as
    the model's step, given the previous carry (the *model's* carry is passed to it, so
    both carries must share a structure) and the step's input. The guide's params are
    moved along the PPG estimate of E_p[sum_t grad_lambda log q_lambda(x_t | x_{t-1})], the
    negative gradient of KL(p(x | y) || q_lambda), with the model's global latent sites
    held at ``fixed`` (site -> value). Options as in :func:`score_ascent`; ``init`` overrides the
    guide's param inits. Returns a :class:`LearningResult` over the guide's params.
    """
    return ScoreClimbing(guide, num_particles, num_backward, num_steps, num_sweeps,
                         num_warmup, optimizer, step_size, backward, max_trials, block_size,
                         average, init, fixed, progress_bar)


# --------------------------------------------------------------------------- PG on params


class PGOutput(NamedTuple):
    """A particle Gibbs chain on states and global latent sites."""

    params: dict  # site -> (num_samples, ...)
    paths: dict  # step site -> (num_samples, T, ...)
    accept_prob: jnp.ndarray  # (num_samples,) mean MH acceptance of the iteration
    markov_gap: jnp.ndarray


def mh_params_step(key, log_target, u, step_size, num_mcmc_steps):
    """``num_mcmc_steps`` random-walk Metropolis steps (Metropolis et al. 1953;
    :func:`ppl.inference.kernels.random_walk_mh`) on the flat unconstrained parameters ``u``
    targeting ``log_target(u)`` (p(theta | x, y) in unconstrained coordinates). Returns
    ``(u, mean acceptance probability)``."""
    kernel = repeat(random_walk_mh(log_target, step_size), num_mcmc_steps)
    state, info = kernel(key, init_mh_state(log_target, u))
    return state.position, info.accept_prob


def run_particle_gibbs_params(key, model, args, kwargs, num_particles, num_samples,
                              num_warmup, step_size, num_mcmc_steps, init=None,
                              new_path="backward", progress_bar=False) -> PGOutput:
    """Particle Gibbs for states and global latent sites (Andrieu, Doucet & Holenstein
    2010, section 2.4.3; with backward sampling, Lindsten & Schön 2013, Algorithm 5):
    alternate x ~ CSMC(. | x, theta) (:func:`ppl.inference.conditional.csmc_kernel`) and
    ``num_mcmc_steps`` random-walk Metropolis steps on u = T^{-1}(theta) targeting
    p(theta, x, y) |dT/du| (:meth:`StateSpace.log_joint`: prior, global observations and
    the path's transition and observation densities). theta are the global latent sites
    the step reads; the others (an initial state drawn from its prior) are the time-0
    state, drawn with the path by conditional SMC. Pure and jittable; ``progress_bar``
    shows a tqdm bar over the iterations."""
    sites = global_sites(model, args, kwargs)
    read = set(step_reads(model, args, kwargs))
    names = [n for n, s in sites.items() if s.kind == LATENT and n in read]
    if not names:
        raise UnsupportedModelError(
            "particle_gibbs: the markov step reads no global latent site drawn before it "
            "(a site that only sets the initial carry is the time-0 state, sampled with the "
            "path); for the states alone use infer.csmc"
        )
    key_init, key_u, key_chain = jax.random.split(key, 3)
    start = Sequential(model).state_space(key_u, *args, **kwargs).params
    start = {**start, **(init or {})}
    u0, unravel = ravel_pytree(_unconstrain(sites, names, start))
    supports = _supports(sites, names)

    def fk_at_values(theta):
        return conditional_model(model, args, kwargs, theta, who="particle_gibbs")

    def fk_at(u):
        return fk_at_values(_constrain(sites, names, unravel(u)))

    def log_joint(theta, path):
        """log p(theta, z, x, y) of a path (its time-0 state sites z and step sites x)."""
        fk = fk_at_values(theta)
        z = {n: path[n] for n in fk.per_particle}
        steps = {n: v for n, v in path.items() if n not in z}
        ssm = Sequential(model).state_space(replay_key(), *args, params={**theta, **z},
                                            **kwargs)
        return ssm.log_joint(steps)

    ref0, run0 = csmc_kernel(key_init, fk_at(u0), num_particles, None, new_path)

    def kernel(key_i, state):
        u, ref = state
        k_x, k_u = jax.random.split(key_i)
        ref, run = csmc_kernel(k_x, fk_at(u), num_particles, ref, new_path)

        def log_target(v):
            theta, log_det = constrain(supports, unravel(v))
            return log_joint(theta, ref) + log_det

        u, prob = mh_params_step(k_u, log_target, u, step_size, num_mcmc_steps)
        return (u, ref), (prob, jnp.max(run.records.markov_gap))

    chain = sample_chain(key_chain, kernel, (u0, ref0), num_samples, num_warmup,
                         progress_bar=progress_bar, desc="particle_gibbs")
    us, paths = chain.states
    probs, gaps = chain.infos
    gap = jnp.max(jnp.stack([jnp.max(run0.records.markov_gap), jnp.max(gaps),
                             jnp.max(chain.warmup_infos[1], initial=0.0)]))
    params = jax.vmap(lambda u: _constrain(sites, names, unravel(u)))(us)
    return PGOutput(params, paths, probs, gap)


class ParticleGibbs:
    """``particle_gibbs(num_particles, ...)``; see :func:`particle_gibbs`."""

    def __init__(self, num_particles=100, num_samples=1000, num_warmup=200, num_chains=1,
                 step_size=0.1, num_mcmc_steps=5, init=None, new_path="backward",
                 progress_bar=False):
        self.num_particles = check_count("num_particles", num_particles)
        self.num_samples = check_count("num_samples", num_samples)
        self.num_warmup = check_nonnegative("num_warmup", num_warmup)
        self.num_chains = check_count("num_chains", num_chains)
        self.step_size = check_positive("step_size", step_size)
        self.num_mcmc_steps = check_count("num_mcmc_steps", num_mcmc_steps)
        self.init = dict(init or {})
        self.new_path = check_option("new_path", new_path, ("backward", "ancestor"))
        self.progress_bar = bool(progress_bar)
        self._runs = CompiledRuns(self._chains)

    def core(self, key, model, args, kwargs) -> PGOutput:
        """One chain (:func:`run_particle_gibbs_params`); pure and jittable."""
        return run_particle_gibbs_params(key, model, args, kwargs, self.num_particles,
                                         self.num_samples, self.num_warmup, self.step_size,
                                         self.num_mcmc_steps, self.init, self.new_path,
                                         self.progress_bar)

    def _chains(self, key, model, args, kwargs):
        keys = jax.random.split(key, self.num_chains)
        return jax.vmap(lambda k: self.core(k, model, args, kwargs))(keys)

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run ``num_chains`` chains; returns an unweighted :class:`~ppl.Posterior` with
        the global latent sites and the paths of the step's latent sites."""
        out = self._runs(check_key(key), model, args, kwargs)
        if self.new_path == "backward":
            check_markov_gap(out.markov_gap, "particle_gibbs(new_path='backward')")
        c, s = self.num_chains, self.num_samples
        samples = {n: np.asarray(v).reshape((c * s, *np.shape(v)[2:]))
                   for n, v in {**out.params, **out.paths}.items()}
        bad = [n for n, v in samples.items() if not np.all(np.isfinite(v))]
        if bad:
            raise NonFiniteWeightError(f"particle_gibbs: non-finite draws of site(s) {bad}")
        return Posterior(
            samples, num_chains=c, method="particle_gibbs",
            sample_stats={"accept_prob": np.asarray(out.accept_prob).reshape(c * s)},
            info={"num_particles": self.num_particles, "step_size": self.step_size,
                  "num_mcmc_steps": self.num_mcmc_steps, "new_path": self.new_path},
        )


def particle_gibbs(num_particles=100, num_samples=1000, num_warmup=200, num_chains=1,
                   step_size=0.1, num_mcmc_steps=5, init=None, new_path="backward",
                   progress_bar=False):
    """Particle Gibbs for the states and the global latent sites of a ``ppl.markov``
    program jointly (Andrieu, Doucet & Holenstein 2010, section 2.4.3): each iteration
    draws a new path by conditional SMC with ``num_particles`` particles and
    ``new_path="backward"`` sampling (Lindsten & Schön 2013, Algorithm 5) given the
    current parameters, then makes ``num_mcmc_steps`` Gaussian random-walk Metropolis steps of
    scale ``step_size`` on the unconstrained global sites given the path. The chain
    targets p(theta, x | y); ``init`` (site -> value) sets its start (default: a prior
    draw). ``.run`` returns an unweighted :class:`~ppl.Posterior` (chains of draws) with
    ``sample_stats["accept_prob"]``; ``progress_bar=True`` shows a tqdm bar over the
    iterations (one for all chains). The Bayesian counterpart of :func:`score_ascent`."""
    return ParticleGibbs(num_particles, num_samples, num_warmup, num_chains, step_size,
                         num_mcmc_steps, init, new_path, progress_bar)

