"""Particle marginal Metropolis-Hastings (PMMH) over the global parameters of a ``markov``
program.

Andrieu, Doucet & Holenstein (2010), "Particle Markov chain Monte Carlo methods", JRSS B
72(3), section 2.4: to sample p(theta | y_{1:T}) for a state-space model whose likelihood
p(y_{1:T} | theta) is intractable, run Metropolis-Hastings on theta with the likelihood
replaced by the unbiased SMC estimate p-hat(y_{1:T} | theta):

    theta* ~ q(. | theta);   run SMC with theta* fixed  ->  Z* = p-hat(y | theta*)
    accept with probability  min(1, p(theta*) Z* q(theta | theta*) / (p(theta) Z q(theta* | theta)))

and, on acceptance, keep (theta*, Z*). The estimate Z of the *current* state is stored
with it and never recomputed: the chain then targets, exactly, an extended distribution
whose theta-marginal is p(theta | y) (Andrieu, Doucet & Holenstein 2010, Theorem 4;
Andrieu & Roberts 2009, "The pseudo-marginal approach"). Recomputing Z every iteration
(the "Monte Carlo within Metropolis" variant) is *not* exact.

Here the proposal is a Gaussian random walk on unconstrained coordinates ``u`` of the
named global sites: ``theta = T(u)`` with ``T = numpyro.distributions.biject_to(support)``
of each site (read from a trace of the program's global sites), so the target density in
``u`` is ``p(T(u)) |det dT/du| p-hat(y | T(u))``. The SMC run is the given ``infer.smc``
combinator with the parameters fixed in every particle: its pure core
``SMC.core(..., fixed=theta)`` when paths are returned, otherwise the engine's time driver
without the genealogy and lineage replay (:func:`particle_filter`, cheaper; the same
estimator, and from the same key the same estimate).

Building blocks, each a small function:

* :class:`ParamSpace` — the named global sites: validation, their unconstrained
  coordinates, the prior density plus log-Jacobian at ``u``;
* :func:`particle_filter` — the SMC of ``likelihood`` for its evidence only: the engine's
  time driver with no collector (optionally stopped after t steps, for SMC^2);
* :func:`estimate_likelihood` — one SMC run at ``theta = T(u)``: a :class:`PMMHState`;
* :func:`pmmh_step` — one PMMH iteration: the random walk on ``u``
  (:func:`ppl.inference.kernels.random_walk`), the SMC at the proposal, the
  Metropolis-Hastings accept step (:func:`ppl.inference.kernels.mh_accept`);
* :func:`pmmh_kernel` — :func:`pmmh_step` as a kernel of the one MCMC kernel protocol
  (``kernel(key, state, step size multiplier) -> (state, PMMHInfo)``);
* :func:`warmup_adaptation` — Robbins-Monro adaptation of the step size during warmup
  (:func:`ppl.inference.kernels.robbins_monro`);
* :func:`run_pmmh` — the driver: the one chain driver
  :func:`ppl.inference.kernels.run_chain` (``lax.scan`` over iterations, ``vmap`` over
  chains).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from ppl.inference import kernels
from ppl.inference.base import (
    CompiledRuns,
    check_count,
    check_key,
    check_nonnegative,
    check_option,
)
from ppl.inference.engine import FeynmanKac, run_particles
from ppl.inference.filtering import SMC
from ppl.semantics.sequential import Sequential, replay_key
from ppl.semantics.trace import record

from ppl.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    NonFiniteWeightError,
    UnsupportedModelError,
    check_probability,
)
from ppl.posterior import Posterior
from ppl.primitives import stub_markov

__all__ = [
    "PMMH",
    "PMMHInfo",
    "PMMHState",
    "ParamSpace",
    "check_param_names",
    "estimate_likelihood",
    "particle_filter",
    "pmmh",
    "pmmh_kernel",
    "pmmh_step",
    "run_pmmh",
    "warmup_adaptation",
]

_PROPOSALS = ("random_walk",)


# --------------------------------------------------------------------------- parameters


def _global_sites(model, args, kwargs, key=None, substitutions=None, substitute_fn=None):
    """Run the program up to its ``markov`` call; returns the raw NumPyro trace (with each
    site's distribution, hence its support) and the :class:`Trace` of the global sites."""
    key = replay_key() if key is None else key
    fn = model
    if substitute_fn is not None:
        fn = numpyro.handlers.substitute(fn, substitute_fn=substitute_fn)
    with stub_markov():  # the global sites are all we need
        _, trace, raw = record(fn, key, args, kwargs, substitutions=substitutions)
    return trace, raw


def check_param_names(params, who):
    """The ``params`` argument as a tuple of distinct site names (a single name is allowed)."""
    if isinstance(params, str):
        params = [params]
    if not isinstance(params, (list, tuple)) or not params or not all(
        isinstance(p, str) for p in params
    ):
        raise ArgumentTypeError(
            f"{who}: params must be a non-empty list of global latent site names, "
            f"got {params!r}"
        )
    dup = sorted({p for p in params if list(params).count(p) > 1})
    if dup:
        raise InvalidArgumentError(f"{who}: params names site(s) {dup} more than once")
    return tuple(params)


class ParamSpace:
    """The named global latent sites ``params`` of a ``markov`` program, in unconstrained
    coordinates ``u`` (``theta = T(u)``, ``T = biject_to(support)`` site by site: the
    change of variables of :mod:`ppl.inference.kernels`).

    Built at trace time (inside ``jit``); the constructor checks, with clear errors, that
    the program has one ``markov`` call (:class:`UnsupportedModelError`), that every name
    is a global latent site (``ValueError``), that no other global latent site comes
    before a named one (the prior density of the named sites must not depend on the
    others, which the SMC draws per particle: :class:`UnsupportedModelError`), and that
    every named site is continuous.
    """

    def __init__(self, model, args, kwargs, params, who="pmmh"):
        self.model, self.args, self.kwargs = model, args, kwargs
        self.names = check_param_names(params, who)
        try:
            ssm = Sequential(model).state_space(replay_key(), *args, **kwargs)
        except UnsupportedModelError as e:
            raise UnsupportedModelError(f"{who}: {e}") from e
        latent = ssm.globals.latent_names
        unknown = [n for n in self.names if n not in latent]
        if unknown:
            raise InvalidArgumentError(
                f"{who}: params {unknown} are not global latent sites of the program (sites "
                f"sampled before its ppl.markov call); the global latent sites are {latent}"
            )
        last = max(latent.index(n) for n in self.names)
        before = [n for n in latent[:last] if n not in self.names]
        if before:
            raise UnsupportedModelError(
                f"{who}: the global latent site(s) {before} are sampled before a site in "
                f"params {list(self.names)}; add them to params or sample them after"
            )
        self.num_steps = ssm.num_steps
        _, raw = _global_sites(model, args, kwargs)
        for n in self.names:
            try:
                kernels.bijection(raw[n]["fn"].support)
            except UnsupportedModelError as e:
                raise UnsupportedModelError(
                    f"{who}: param '{n}' has support {raw[n]['fn'].support}, which has no "
                    "bijection to unconstrained space; a random walk needs continuous params"
                ) from e

    def init(self, key, init_params=None) -> dict:
        """Unconstrained coordinates of a prior draw of the named sites (or of the given
        ``init_params``, a dict site -> constrained value)."""
        subs = None if init_params is None else {
            n: jnp.asarray(v) for n, v in init_params.items()
        }
        _, raw = _global_sites(self.model, self.args, self.kwargs, key, substitutions=subs)
        supports = {n: raw[n]["fn"].support for n in self.names}
        return kernels.unconstrain(supports, {n: raw[n]["value"] for n in self.names})

    def constrain(self, u: Mapping):
        """``(theta, log p(theta) + log |det dT/du|)`` at unconstrained ``u``.

        Runs the global sites with each named site set to ``T(u)``
        (:func:`ppl.inference.kernels.constrain_site` with the support the site has when it
        is drawn, so a support that depends on an earlier named site is handled) and sums
        the named sites' prior log densities and log-Jacobians.
        """
        log_det = {}

        def substitute(msg):
            name = msg["name"]
            if msg["type"] != "sample" or msg["is_observed"] or name not in u:
                return None
            value, log_det[name] = kernels.constrain_site(msg["fn"].support, u[name])
            return value

        trace, _ = _global_sites(self.model, self.args, self.kwargs, substitute_fn=substitute)
        theta = {n: trace.values[n] for n in self.names}
        log_prior = sum(jnp.sum(trace.log_probs[n]) + log_det[n] for n in self.names)
        return theta, log_prior


# --------------------------------------------------------------------------- blocks


class PMMHState(NamedTuple):
    """The state of one PMMH chain: unconstrained and constrained params, ``log p(theta)
    + log|J|``, the SMC estimate ``log p-hat(y | theta)`` (kept, never recomputed) and the
    path drawn from that SMC run's final particles (``{}`` unless paths are returned)."""

    u: dict
    params: dict
    log_prior: jnp.ndarray
    log_likelihood: jnp.ndarray
    path: dict


def particle_filter(key, likelihood: SMC, model, args, kwargs, params, num_active=None):
    """The SMC of ``likelihood`` run for its evidence only: ``(final ParticleState, log
    p-hat(y_{1:t} | params))``, with ``params`` fixed in every particle.

    The engine's time driver (:func:`~ppl.inference.engine.run_particles`, Chopin &
    Papaspiliopoulos 2020, Algorithm 10.3) on the :class:`~ppl.inference.engine.FeynmanKac`
    model given ``params``, with no collector: no genealogy and no lineage replay, which
    PMMH and SMC^2 do not need. With ``num_active = t + 1`` (a traced integer) only the
    first ``t + 1`` steps are run (every array keeps its shape): the filter of y_{1:t+1}
    that the SMC^2 rejuvenation step reruns (Chopin, Jacob & Papaspiliopoulos 2013,
    section 3). Same key, same answer: the key of step ``s`` does not depend on
    ``num_active``, and :meth:`SMC.core` with ``fixed=params`` estimates the same
    evidence from the same key.
    """
    fk = FeynmanKac(model, args, kwargs, fixed=params)
    run = run_particles(key, fk, likelihood.num_particles, likelihood.resample,
                        likelihood.ess_threshold, None, likelihood.proposal,
                        num_active=num_active)
    return run.final, run.log_evidence


def estimate_likelihood(key, u, space: ParamSpace, likelihood: SMC, return_paths=False):
    """One SMC run at ``theta = T(u)`` (every particle shares ``theta``): a
    :class:`PMMHState` with ``log_likelihood = log p-hat(y_{1:T} | theta)``, the unbiased
    estimate of Andrieu, Doucet & Holenstein (2010, section 2.4.2, step 2(b)).

    With ``return_paths`` one final particle is drawn with probability proportional to its
    weight and its whole path (step sites (T, ...)) and other global sites are kept, as
    the X*_{1:T} ~ p-hat(. | y, theta*) of their PMMH sampler (so the chain also targets
    p(theta, x_{1:T} | y)).
    """
    key_smc, key_pick = jax.random.split(key)
    theta, log_prior = space.constrain(u)
    model, args, kwargs = space.model, space.args, space.kwargs
    if not return_paths and getattr(likelihood, "move", None) is None:
        _, log_z = particle_filter(key_smc, likelihood, model, args, kwargs, theta)
        return PMMHState(u, theta, log_prior, log_z, {})
    out = likelihood.core(key_smc, model, args, kwargs, fixed=theta)
    path = {}
    if return_paths:
        n = jax.random.categorical(key_pick, out.log_weights)
        sites = {**out.globals, **out.paths}
        path = {k: v[n] for k, v in sites.items() if k not in theta}
    return PMMHState(u, theta, log_prior, out.log_evidence, path)


class PMMHInfo(NamedTuple):
    """What one PMMH iteration reports: the :class:`~ppl.inference.kernels.MHInfo` fields
    and the proposal's SMC estimate ``log p-hat(y | theta*)`` (for the NaN / +inf check)."""

    accepted: jnp.ndarray
    accept_prob: jnp.ndarray
    proposed_log_likelihood: jnp.ndarray


def pmmh_step(key, state: PMMHState, estimate, scale):
    """One PMMH iteration (Andrieu, Doucet & Holenstein 2010, section 2.4.2, step 2):
    ``(state, PMMHInfo)``.

    (a) propose ``u* = u + scale * N(0, I)`` (:func:`ppl.inference.kernels.random_walk`,
    symmetric, so ``q`` cancels in the ratio); (b) run the SMC at ``T(u*)``
    (``estimate(key, u)``, a partial :func:`estimate_likelihood`); (c) accept with
    :func:`ppl.inference.kernels.mh_accept` at ``log a = [log p(theta*) + log Z*] - [log
    p(theta) + log Z]`` (densities in ``u``, so with the log-Jacobians). On acceptance the
    proposed state, *with its estimate Z**, replaces the current one, otherwise the current
    one and its estimate are kept (never recomputed: Andrieu & Roberts 2009). A NaN ratio
    (a NaN estimate) rejects; :meth:`PMMH.run` reports NaN proposals."""
    key_move, key_smc, key_accept = jax.random.split(key, 3)
    proposed = estimate(key_smc, kernels.random_walk(key_move, state.u, scale))
    log_alpha = (proposed.log_prior + proposed.log_likelihood) - (
        state.log_prior + state.log_likelihood
    )
    new, info = kernels.mh_accept(key_accept, state, proposed, log_alpha)
    return new, PMMHInfo(info.accepted, info.accept_prob, proposed.log_likelihood)


def pmmh_kernel(estimate, scale: dict):
    """The PMMH kernel of the one MCMC kernel protocol (:mod:`ppl.inference.kernels`):
    ``kernel(key, state, multiplier=1.0) -> (state, PMMHInfo)``, a :func:`pmmh_step` with
    the per-param step sizes ``scale`` times ``multiplier`` (the parameter the warm-up
    adaptation tunes). :func:`pmmh_step` is looked up when the kernel is traced."""

    def kernel(key, state: PMMHState, multiplier=1.0):
        step_scale = {n: s * multiplier for n, s in scale.items()}
        return pmmh_step(key, state, estimate, step_scale)

    return kernel


def warmup_adaptation(target_accept, adapt_step_size=True) -> kernels.Adaptation:
    """The warm-up :class:`~ppl.inference.kernels.Adaptation` of :func:`run_pmmh`: its
    state is ``(log m, started)`` with ``m`` the step size multiplier.

    The driver's first warm-up iteration is the initial SMC run at ``u_0`` (Andrieu,
    Doucet & Holenstein 2010, section 2.4.2, step 1): there the multiplier is 0 (the
    proposal is ``u_0`` itself) and only ``started`` is set. Every later warm-up iteration
    ``i`` (from 1) runs with ``m = exp(log m)`` and, with ``adapt_step_size``, takes one
    Robbins-Monro step :func:`ppl.inference.kernels.robbins_monro` ``(log m, a, i - 1,
    target_accept)`` towards acceptance probability ``target_accept`` (Andrieu & Thoms
    2008, section 5.1). After warm-up ``m`` is fixed, so the kept draws are a homogeneous
    PMMH chain."""

    def update(a, iteration, state, info):
        log_m, started = a
        if adapt_step_size:
            new = kernels.robbins_monro(log_m, info.accept_prob, iteration - 1, target_accept)
            log_m = jnp.where(started, new, log_m)
        return log_m, jnp.ones((), bool)

    def parameters(a):
        log_m, started = a
        return jnp.where(started, jnp.exp(log_m), 0.0)

    return kernels.Adaptation((jnp.zeros(()), jnp.zeros((), bool)), update, parameters)


def _kept(state: PMMHState):
    """What a kept draw records (the chain driver's ``collect``)."""
    return {**state.params, **state.path}, state.log_likelihood


def run_pmmh(key, model, args, kwargs, params, likelihood: SMC, num_samples, num_warmup=0,
             num_chains=1, step_size=0.1, target_accept=0.25, adapt_step_size=True,
             init_params=None, return_paths=False, progress_bar=False):
    """The PMMH driver: :func:`pmmh_kernel` run by the one chain driver
    :func:`ppl.inference.kernels.run_chain` (``vmap`` over chains of one ``lax.scan`` over
    iterations), with :func:`warmup_adaptation` of the step size during the first
    ``num_warmup`` iterations; then it is fixed.

    Each chain starts one iteration early, from the state ``(u_0, log p-hat = -inf)`` with
    a zero step: that extra warm-up iteration "proposes" ``u_0`` itself and always accepts
    it, which is exactly the initial SMC run of Andrieu, Doucet & Holenstein (2010, section
    2.4.2, step 1) and keeps a single copy of the SMC in the compiled program. ``u_0`` is a
    prior draw (or ``init_params``) with the chain's init key. Returns ``(draws,
    accept_prob, log_likelihood, proposed_log_likelihood, step size multiplier)`` for the
    kept iterations, each with leading axes (num_chains, num_samples) (the multiplier:
    (num_chains,)). ``progress_bar``: one tqdm bar for all chains, labelled ``pmmh``.
    """
    space = ParamSpace(model, args, kwargs, params)
    scale = _scale_tree(step_size, space.names)

    def estimate(k, u):
        return estimate_likelihood(k, u, space, likelihood, return_paths)

    def init(k):
        u0 = space.init(k, init_params)
        # the shapes of a state, for the iteration that runs the first SMC
        shapes = jax.eval_shape(estimate, k, u0)
        state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        dtype = shapes.log_likelihood.dtype
        return state._replace(u=u0, log_likelihood=jnp.full((), -jnp.inf, dtype))

    adaptation = warmup_adaptation(target_accept, adapt_step_size)
    chains = kernels.run_chain(
        key, pmmh_kernel(estimate, scale), init, num_samples, num_warmup + 1, num_chains,
        adapt=adaptation, collect=_kept, progress_bar=progress_bar, desc="pmmh",
    )
    draws, log_likelihood = chains.states
    info = chains.infos
    return (draws, info.accept_prob, log_likelihood, info.proposed_log_likelihood,
            adaptation.parameters(chains.adapt_state))


def _scale_tree(step_size, names):
    if isinstance(step_size, Mapping):
        missing = [n for n in names if n not in step_size]
        if missing:
            raise InvalidArgumentError(f"pmmh: step_size has no entry for params {missing}")
        return {n: jnp.asarray(step_size[n]) for n in names}
    return {n: jnp.asarray(step_size) for n in names}


def _check_step_size(step_size):
    values = step_size.values() if isinstance(step_size, Mapping) else [step_size]
    for v in values:
        if isinstance(v, (bool, str, bytes)) or v is None:
            raise ArgumentTypeError(
                f"step_size must be a positive number (or a dict param -> positive "
                f"numbers), got {step_size!r}; pass numbers, not strings"
            )
        try:
            arr = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            arr = np.asarray(np.nan)
        if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
            raise InvalidArgumentError(
                f"step_size must be a positive number (or a dict param -> positive "
                f"numbers), got {step_size!r}"
            )
    return step_size


# --------------------------------------------------------------------------- combinator


class PMMH:
    """``pmmh(params, likelihood, num_samples, ...)``; see :func:`pmmh`."""

    def __init__(self, params, likelihood, num_samples: int, num_warmup: int = 0,
                 num_chains: int = 1, proposal="random_walk", step_size=0.1,
                 target_accept=0.25, adapt_step_size=True, init_params=None,
                 return_paths=False, progress_bar=False):
        self.progress_bar = bool(progress_bar)
        self.params = check_param_names(params, "pmmh")
        if not isinstance(likelihood, SMC):
            raise ArgumentTypeError(
                f"pmmh: likelihood must be an SMC combinator, e.g. infer.smc(num_particles="
                f"200), whose log-evidence estimate is the likelihood; got {likelihood!r}"
            )
        self.likelihood = likelihood
        self.num_samples = check_count("num_samples", num_samples)
        self.num_warmup = check_nonnegative("num_warmup", num_warmup)
        self.num_chains = check_count("num_chains", num_chains)
        self.proposal = check_option("proposal", proposal, _PROPOSALS)
        self.step_size = _check_step_size(step_size)
        self.target_accept = check_probability("target_accept", target_accept)
        self.adapt_step_size = bool(adapt_step_size)
        if init_params is not None and not isinstance(init_params, Mapping):
            raise ArgumentTypeError(
                f"init_params must be a dict param -> value, got {init_params!r}"
            )
        unknown = sorted(set(init_params or {}) - set(self.params))
        if unknown:
            raise InvalidArgumentError(
                f"pmmh: init_params names {unknown}, which are not in params"
            )
        self.init_params = None if init_params is None else dict(init_params)
        self.return_paths = bool(return_paths)
        self._runs = CompiledRuns(self.core)

    def core(self, key, model, args, kwargs):
        """The pure, jittable run (:func:`run_pmmh` with this combinator's options)."""
        return run_pmmh(
            key, model, args, kwargs, self.params, self.likelihood, self.num_samples,
            self.num_warmup, self.num_chains, self.step_size, self.target_accept,
            self.adapt_step_size, self.init_params, self.return_paths, self.progress_bar,
        )

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run ``num_chains`` PMMH chains on ``model(*args, **kwargs)``; returns an
        unweighted :class:`~ppl.Posterior` of the params (and paths)."""
        draws, accept_prob, log_lik, proposed, multiplier = self._runs(
            check_key(key), model, args, kwargs
        )
        _check_estimates(log_lik, proposed)

        def flat(a):
            a = np.asarray(a)
            return a.reshape((-1, *a.shape[2:]))

        scale = _scale_tree(self.step_size, self.params)
        return Posterior(
            {k: flat(v) for k, v in draws.items()},
            num_chains=self.num_chains,
            sample_stats={
                "accept_prob": flat(accept_prob),
                "log_likelihood_estimate": flat(log_lik),
            },
            method="pmmh",
            info={
                "accept_rate": np.asarray(accept_prob).mean(axis=1),
                "step_size": {n: np.asarray(s) * np.asarray(multiplier) for n, s in
                              scale.items()},
                "params": list(self.params),
                "num_particles": self.likelihood.num_particles,
            },
        )

    def __repr__(self):
        return (
            f"pmmh(params={list(self.params)}, likelihood={self.likelihood!r}, "
            f"num_samples={self.num_samples}, num_warmup={self.num_warmup}, "
            f"num_chains={self.num_chains}, proposal={self.proposal!r}, "
            f"step_size={self.step_size!r})"
        )


def _check_estimates(log_lik, proposed):
    """Raise :class:`NonFiniteWeightError` when a kept draw's likelihood estimate is not
    finite (its chain had not found a state possible under the data) or a proposal's
    estimate is NaN or +inf."""
    log_lik, proposed = np.asarray(log_lik), np.asarray(proposed)
    stuck = np.flatnonzero(~np.isfinite(log_lik).all(axis=1))
    if stuck.size:
        raise NonFiniteWeightError(
            f"pmmh: the SMC log-likelihood estimate of chain(s) {stuck.tolist()} is not "
            "finite (the chain never reached a state with positive likelihood); start it "
            "elsewhere with init_params= or give the SMC more particles"
        )
    bad = np.isnan(proposed) | np.isposinf(proposed)
    if bad.any():
        raise NonFiniteWeightError(
            f"pmmh: {int(bad.sum())} proposal(s) got a NaN or +inf SMC log-likelihood "
            "estimate (check the model's densities at those params)"
        )


def pmmh(params, likelihood, num_samples: int, num_warmup: int = 0, num_chains: int = 1,
         proposal="random_walk", step_size=0.1, target_accept=0.25, adapt_step_size=True,
         init_params=None, return_paths=False, progress_bar=False) -> PMMH:
    """Particle marginal Metropolis-Hastings (Andrieu, Doucet & Holenstein 2010, section
    2.4) over the global latent sites ``params`` of a program with one ``ppl.markov`` call.

    The likelihood p(y | theta) is the log-evidence estimate of ``likelihood`` (an
    ``infer.smc(...)`` combinator, run with ``theta`` fixed in every particle); the
    estimate of the current state is kept, which makes the chain exact for any number of
    particles. ``proposal="random_walk"``: a Gaussian random walk on each param's
    unconstrained coordinates (NumPyro's ``biject_to`` of its support, with the
    log-Jacobian), of standard deviation ``step_size`` (a number, or a dict param ->
    number or array). During the ``num_warmup`` iterations (discarded) the step size is
    scaled by a Robbins-Monro adaptation towards acceptance rate ``target_accept``
    (``adapt_step_size=False`` to keep it fixed); the kept ``num_samples`` iterations per
    chain use the final step size. ``num_chains`` independent chains (``vmap``), each
    started from a prior draw of the params (or from ``init_params``, a dict param ->
    value). Global latent sites not in ``params`` are integrated out by the SMC (each
    particle draws them), and must be sampled after the params.

    ``.run(key, model, *args, **kwargs)`` returns an unweighted :class:`~ppl.Posterior`
    (chain-major, ``num_chains * num_samples`` draws) of the params; with
    ``return_paths=True`` each draw also has a path of every step site (T, ...) and the
    other global sites, drawn from the final particles of the SMC run of the current state
    (so the draws target p(theta, x_{1:T} | y)). ``sample_stats``: ``accept_prob`` (the MH
    acceptance probability of each iteration's proposal) and ``log_likelihood_estimate``
    (the kept estimate log p-hat(y | theta) of each draw); ``info``: per-chain
    ``accept_rate`` (mean acceptance probability) and the final ``step_size``.
    ``progress_bar=True`` shows a tqdm bar (one for all chains) through host callbacks,
    without leaving jit.
    """
    return PMMH(params, likelihood, num_samples, num_warmup, num_chains, proposal,
                step_size, target_accept, adapt_step_size, init_params, return_paths,
                progress_bar)

