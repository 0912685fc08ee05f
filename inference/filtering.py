"""Sequential Monte Carlo over ``ppl.markov`` programs (a particle filter).

A program read by :class:`~ppl.semantics.Sequential` is a state-space model

    theta ~ p(theta);  x_0 = init(theta);  x_t ~ m_theta(x_{t-1}, .),  weight *= g_theta(x_t, y_t)

and SMC approximates the filtering distributions p(theta, x_t | y_{1:t}) and the evidence
p(y_{1:T}) with ``N`` weighted particles. Following Ścibior et al. (POPL 2018, section 6),
``smc = sequentially (resample . advance)``; here that composition is the particle engine
(:mod:`ppl.inference.engine`) with one collector:

* :class:`~ppl.inference.engine.FeynmanKac` — the program as M0 (each particle draws the
  global sites not held ``fixed`` from the prior and starts from the ``init`` carry; global
  ``observe``/``factor`` sites weight it), M_t and G_t (the step's transition and its
  ``observe``/``factor`` terms);
* :func:`~ppl.inference.engine.run_particles` — the one time driver: a ``lax.scan`` of
  :func:`~ppl.inference.engine.smc_step` (adaptive :func:`~ppl.inference.engine.resample`,
  Chopin & Papaspiliopoulos 2020, *An Introduction to Sequential Monte Carlo*, Algorithm
  10.3; :func:`~ppl.inference.engine.propagate` by the bootstrap move of Gordon, Salmond &
  Smith 1993 or a guided ``proposal`` weighted ``m g / q``, Algorithm 10.1; reweight);
* :class:`GenealogyCollector` — what SMC keeps of each step: the particles, their
  ancestors and weights (the genealogy), the ESS, the evidence increment and the filter
  means (the ``collect`` of ``particles``' ``SMC``); ``history=False`` keeps only the
  per-step scalars and the newest step's particles, nothing of size T x N
  (``benchmarks/bench_pf.py`` times both against a hand-written JAX filter);
* :func:`trace_ancestry` — each final particle's path read back through the genealogy;
* :func:`replay_lineages` — each lineage replayed through the program for what the forward
  pass does not keep (deterministic sites, pointwise log-likelihoods, the data);
* :func:`run_smc` — the composition of the above.

Order inside one time step (Chopin & Papaspiliopoulos 2020, Algorithm 10.3): at step t the
population carried over from step t-1 is first resampled *if* its ESS is below
``ess_threshold * N``, then advanced and reweighted. So ``info["ancestors"][t, n]`` is the
index (among the particles of step t-1; for t = 0, among the initial particles) of the
parent of particle n of step t, and ``info["resampled"][t]`` says whether step t began by
resampling. The final population is not resampled.

Log-evidence with adaptive resampling
-------------------------------------
Keep normalised weights ``W_{t-1}`` (summing to one) after step t-1. Resampling replaces
them by uniform weights ``1/N`` on the selected particles (else it leaves them alone); call
the result ``W~_{t-1}``. Either way ``sum_n W~^n f(x^n)`` is an unbiased estimate of the
same integral, conditionally on the past. Advancing multiplies by ``G_t^n = g`` (or
``m g / q``), and

    l_t = log sum_n W~_{t-1}^n G_t^n        (``info["log_evidence_increments"][t]``)

is the log of the weighted mean incremental weight, an estimate of log p(y_t | y_{1:t-1}).
The evidence estimate is ``log Z = l_init + sum_t l_t``, with ``l_init`` = ``logsumexp(log
g_0) - log N`` the initial weights from global observe/factor sites (0 if there are none).
``Z = exp(log Z)`` is unbiased for any resampling pattern decided from the weights
(Del Moral 2004; Chopin & Papaspiliopoulos 2020, Proposition 16.3), so on the log scale
``E[log Z] <= log p(y)`` (Jensen). Equivalently: with unnormalised running weights, where
resampling sets every weight to the current mean weight (which keeps their sum),
``log Z = logsumexp(final log weights) - log N``; that is the scale of the returned
``Posterior.log_weights`` (so the population ``(1/N) sum_n w_n delta_{x_n}`` has total mass
``Z``, as in :mod:`ppl.semantics.population`). Inside the scan only normalised weights
and the running sum of the ``l_t`` are kept, which avoids the loss of float32 precision
of log weights that grow with t.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ppl.inference.base import CompiledRuns, check_count, check_key, check_log_weights
from ppl.inference.data_annealing import (
    AnnealedOutput,
    annealed_posterior,
    calls_markov,
    run_annealed_smc,
)
from ppl.inference.engine import FeynmanKac, propagate, run_particles
from ppl.inference.resampling import get_scheme
from ppl.inference.sharding import check_divisible, particle_mesh, to_host
from ppl.semantics.sequential import Sequential, replay_key
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, OBSERVED

from ppl import weights
from ppl.errors import (
    ArgumentTypeError,
    NonFiniteWeightError,
    UnsupportedModelError,
    UnsupportedOptionError,
    check_probability,
)
from ppl.posterior import Posterior

__all__ = [
    "SMC",
    "GenealogyCollector",
    "SMCOutput",
    "StepRecord",
    "replay_globals",
    "replay_lineages",
    "run_smc",
    "smc",
    "smc_info",
    "smc_output",
    "smc_posterior",
    "trace_ancestry",
]

# --------------------------------------------------------------------------- records


class StepRecord(NamedTuple):
    """What one time step records (stacked over time by the scan)."""

    values: dict  # the step's latent sites, (N, ...)
    ancestors: jnp.ndarray  # (N,) int32, parents among the previous step's particles
    resampled: jnp.ndarray  # bool
    ess: jnp.ndarray  # ESS after reweighting at this step
    log_evidence_increment: jnp.ndarray  # l_t
    log_weights: jnp.ndarray  # (N,) normalised log weights after reweighting
    filter_means: dict  # weighted mean of each latent site at this step


class SMCOutput(NamedTuple):
    """Everything one SMC run returns (a pytree: the output of the jitted core)."""

    globals: dict  # global latent + deterministic sites of the final particles, (N, ...)
    paths: dict  # step latent + deterministic sites along each final lineage, (N, T, ...)
    log_weights: jnp.ndarray  # (N,) unnormalised: logsumexp - log N == log_evidence
    log_evidence: jnp.ndarray
    log_evidence_init: jnp.ndarray
    steps: StepRecord  # stacked over time: leading T axis
    log_likelihood: dict  # observed site -> pointwise log density along each lineage
    observed_data: dict  # observed site -> data
    factor_log_probs: dict  # factor site -> log weight along each lineage


class GenealogyCollector:
    """The collector of :func:`run_smc` (see :mod:`ppl.inference.engine` for the
    protocol): at every step a :class:`StepRecord` of the particles' latent values, their
    ancestors, whether the step resampled, the ESS, the evidence increment ``l_t``, the
    normalised log weights and the filter means ``sum_n W_t^n x_t^n`` (the genealogy and
    the filter of Chopin & Papaspiliopoulos 2020, sections 10.2 and 12.1).

    ``history=False`` records only the scalars and the filter means (``values``,
    ``ancestors`` and ``log_weights`` are empty) and carries the newest step's values
    instead, so nothing of size T x N is kept; ``proposal`` (the run's) gives their
    shapes."""

    uses_key = False

    def __init__(self, history=True, proposal=None):
        self.history = history
        self.proposal = proposal

    def init(self, fk: FeynmanKac, state):
        """``None`` with the genealogy; without, zeros shaped as one step's values (N, ...)."""
        if self.history:
            return None
        shapes = jax.eval_shape(
            lambda s: propagate(replay_key(), 0, fk, s, self.proposal)[0].values, state
        )
        return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

    def step(self, key, t, carry, prev, out, new):
        """The record of step ``t``; the carry becomes its values when ``history=False``."""
        values = out.result.values
        w = jnp.exp(new.log_weights)  # normalised: one exp for the ESS and the means
        record_t = StepRecord(
            values=values if self.history else {},
            ancestors=out.ancestors if self.history else None,
            resampled=out.resampled,
            ess=weights.ess_normalised(w, out.increment),
            log_evidence_increment=out.increment,
            log_weights=new.log_weights if self.history else None,
            filter_means={n: weights.weighted_mean(w, v) for n, v in values.items()},
        )
        return (None if self.history else values), record_t


# --------------------------------------------------------------------------- paths


def _state_space(model, args, kwargs, params=None):
    """The state space of the program with its global latent sites set to ``params``
    (every site substituted: the key is unused)."""
    return Sequential(model).state_space(replay_key(), *args, params=params, **kwargs)


def trace_ancestry(history: dict, ancestors):
    """Paths of the final particles through the genealogy, by a reverse ``lax.scan``.

    ``history[site]`` has shape (T, N, ...) (particle n of step t), ``ancestors`` (T, N)
    with ``ancestors[t, n]`` the parent of particle n of step t among those of step t-1.
    Returns ``site -> (N, T, ...)``: row n is the lineage of final particle n, read back
    from the last step (the ancestral path of Kitagawa 1996 / Chopin & Papaspiliopoulos
    2020, section 12.1). Also returns the indices, among the initial particles, of each
    final particle's root.
    """
    num_particles = ancestors.shape[1]

    def body(idx, step):
        values_t, ancestors_t = step
        return ancestors_t[idx], jax.tree.map(lambda a: a[idx], values_t)

    final = jnp.arange(num_particles, dtype=ancestors.dtype)
    roots, paths = jax.lax.scan(body, final, (history, ancestors), reverse=True)
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), paths), roots


def replay_lineages(model, args, kwargs, params, paths, fixed=None):
    """Replay each final lineage through the program: ``(global values, step
    deterministic sites, pointwise log-likelihood, observed data, factor log weights)``.

    Rebuilds each final particle's state space from its global latent values ``params``
    (site -> (N, ...)) and those held ``fixed`` (shared), and scans its path with every
    latent site fixed (``vmap`` over particles, ``lax.scan`` over time), recovering what
    the forward pass does not keep: global (fixed ones included, replicated per particle)
    and per-step deterministic sites, the pointwise log density of every observed site
    (global (N, ...), per step (N, T, ...)) and of every factor, and the data."""
    fixed = dict(fixed or {})

    def one(params_n, path_n):
        ssm = _state_space(model, args, kwargs, params={**fixed, **params_n})

        def body(carry, step):
            t, values = step
            carry, trace = ssm.step_trace(replay_key(), t, carry, values)
            out = (
                trace.select(DETERMINISTIC),
                {n: trace.log_probs[n] for n in trace.names(OBSERVED)},
                trace.select(OBSERVED),
                {n: trace.log_probs[n] for n in trace.names(FACTOR)},
            )
            return carry, out

        steps = (jnp.arange(ssm.num_steps), path_n)
        _, (det, loglik, data, factors) = jax.lax.scan(body, ssm.init, steps)
        g = ssm.globals
        return (
            g.select(LATENT, DETERMINISTIC),
            det,
            {**{n: g.log_probs[n] for n in g.names(OBSERVED)}, **loglik},
            {**g.select(OBSERVED), **data},
            {**{n: g.log_probs[n] for n in g.names(FACTOR)}, **factors},
        )

    global_values, step_det, loglik, data, factors = jax.vmap(one)(params, paths)
    data = jax.tree.map(lambda a: a[0], data)
    return global_values, step_det, loglik, data, factors


def replay_globals(model, args, kwargs, params, num_particles, fixed=None):
    """The global sites of each final particle, rebuilt from its global latent values
    ``params`` and the ``fixed`` ones: ``(global latent and deterministic values,
    pointwise log-likelihood of the global observed sites, their data, factor log
    weights)``, each site with a leading N axis (the data without). The part of
    :func:`replay_lineages` that needs no path."""
    fixed = dict(fixed or {})

    def one(params_n):
        g = _state_space(model, args, kwargs, params={**fixed, **params_n}).globals
        return (
            g.select(LATENT, DETERMINISTIC),
            {n: g.log_probs[n] for n in g.names(OBSERVED)},
            g.select(OBSERVED),
            {n: g.log_probs[n] for n in g.names(FACTOR)},
        )

    values, loglik, data, factors = jax.vmap(one, axis_size=num_particles)(params)
    return values, loglik, jax.tree.map(lambda a: a[0], data), factors


# --------------------------------------------------------------------------- driver


def run_smc(key, model, args, kwargs, num_particles, scheme="systematic",
            ess_threshold=0.5, proposal=None, fixed=None, mesh=None,
            history=True, progress_bar=False) -> SMCOutput:
    """SMC as a composition over the engine: ``sequentially (resample . advance)``
    (Ścibior et al. 2018; Chopin & Papaspiliopoulos 2020, Algorithm 10.3).

    The :class:`~ppl.inference.engine.FeynmanKac` model of the program given ``fixed``
    (global latent sites held at values shared by every particle: the likelihood PMMH
    and SMC^2 need), :func:`~ppl.inference.engine.run_particles` with the
    :class:`GenealogyCollector`, then :func:`trace_ancestry` and :func:`replay_lineages`.
    Pure JAX: no Python loop over time or particles, so it can be jitted, vmapped over
    keys or nested in another algorithm. ``mesh`` (a
    :func:`ppl.inference.sharding.particle_mesh`) splits the particles across its devices.

    ``history=False`` keeps no genealogy: the scan records only the per-step scalars
    (ESS, resampled, ``l_t``, filtering means), nothing of size T x N, and ``paths`` holds
    the final particles' last-step latent values (N, ...) instead of their paths; the
    evidence estimate and the final weighted particles are those of ``history=True``
    (same key, same numbers). ``progress_bar`` shows a tqdm bar over the time steps.
    """
    fixed = dict(fixed or {})
    fk = FeynmanKac(model, args, kwargs, fixed=fixed)
    run = run_particles(key, fk, num_particles, scheme, ess_threshold,
                        GenealogyCollector(history, proposal), proposal, mesh=mesh,
                        progress_bar=progress_bar, desc="smc")
    records, params = run.records, run.final.params
    if history:
        paths, _ = trace_ancestry(records.values, records.ancestors)
        replayed = replay_lineages(model, args, kwargs, params, paths, fixed)
    else:
        paths = run.collected
        global_values, loglik, data, factors = replay_globals(
            model, args, kwargs, params, num_particles, fixed
        )
        replayed = (global_values, {}, loglik, data, factors)
    return smc_output(run, records, paths, replayed)


def smc_output(run, records, paths, replayed) -> SMCOutput:
    """The :class:`SMCOutput` of an engine run: the final particles' ``paths`` and what
    :func:`replay_lineages` rebuilt from them (``replayed``: global values, step
    deterministic sites, pointwise log-likelihood, data, factor log weights), the weights
    on the evidence scale (``logsumexp - log N == log_evidence``) and the per-step
    ``records``. Shared by SMC and resample-move SMC."""
    global_values, step_det, loglik, data, factors = replayed
    num_particles = run.final.log_weights.shape[0]
    return SMCOutput(
        globals=global_values,
        paths={**paths, **step_det},
        log_weights=run.final.log_weights + run.log_evidence + math.log(num_particles),
        log_evidence=run.log_evidence,
        log_evidence_init=run.log_evidence_init,
        steps=records,
        log_likelihood=loglik,
        observed_data=data,
        factor_log_probs=factors,
    )


# --------------------------------------------------------------------------- combinator


class SMC:
    """``smc(num_particles, resample, ess_threshold, proposal, move)``; see :func:`smc`."""

    def __init__(self, num_particles: int, resample="systematic", ess_threshold=0.5,
                 proposal=None, move=None, devices=None, history=True, progress_bar=False,
                 batch_size=1):
        self.num_particles = check_count("num_particles", num_particles)
        self.batch_size = check_count("batch_size", batch_size)
        get_scheme(resample)  # UnknownOptionError naming `resample`
        self.resample = resample
        # a fraction of num_particles
        self.ess_threshold = check_probability("ess_threshold", ess_threshold, closed=True)
        if proposal is not None and not callable(proposal):
            raise ArgumentTypeError(
                f"proposal must be a program proposal(t, carry, x) sampling one step's "
                f"latent sites, got {proposal!r}"
            )
        self.proposal = proposal
        if move is not None:
            raise UnsupportedOptionError(
                f"smc(move=...): a move must be an infer.mh(...) combinator (resample-move "
                f"SMC, infer.rmsmc), got {move!r}"
            )
        self.move = move
        self.devices = devices  # None: no sharding; "all" or a list: see inference/sharding.py
        self.mesh = None if devices is None else particle_mesh(devices)
        if self.mesh is not None:
            check_divisible(self.num_particles, self.mesh)
        if not isinstance(history, bool):
            raise ArgumentTypeError(
                f"history must be True (keep the genealogy: paths and per-step particles) "
                f"or False (evidence, final particles and per-step summaries only), got "
                f"{history!r}"
            )
        self.history = history
        self.progress_bar = bool(progress_bar)
        self._runs = CompiledRuns(self.core)

    def core(self, key, model, args, kwargs, fixed=None) -> SMCOutput:
        """The pure, jittable run (:func:`run_smc` with this combinator's options);
        ``fixed`` (site -> value) holds global latent sites for every particle (PMMH).
        A static program (no ``ppl.markov``) runs data-annealed SMC
        (:func:`~ppl.inference.data_annealing.run_annealed_smc`)."""
        if fixed is None and not calls_markov(model, args, kwargs):
            if self.proposal is not None:
                raise UnsupportedModelError(
                    "smc(proposal=...) proposes one markov step's sites; this program does "
                    "not call ppl.markov (on a static program smc introduces the "
                    "observations one batch at a time from prior particles)"
                )
            return run_annealed_smc(key, model, args, kwargs, self.num_particles,
                                    self.resample, self.ess_threshold, None, self.batch_size,
                                    self.mesh, self.progress_bar)
        return run_smc(key, model, args, kwargs, self.num_particles, self.resample,
                       self.ess_threshold, self.proposal, fixed=fixed, mesh=self.mesh,
                       history=self.history, progress_bar=self.progress_bar)

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run SMC on ``model(*args, **kwargs)`` (one ``ppl.markov`` call after its global
        sites) and return a weighted :class:`~ppl.Posterior`."""
        out = to_host(self._runs(check_key(key), model, args, kwargs))  # multi-host: gather
        info = {"num_particles": self.num_particles, "resample": self.resample,
                "ess_threshold": self.ess_threshold, "history": self.history}
        if isinstance(out, AnnealedOutput):
            return annealed_posterior(out, "smc", {**info, "batch_size": self.batch_size})
        return smc_posterior(out, "smc", info, self.history)

    def __repr__(self):
        return (
            f"smc(num_particles={self.num_particles}, resample={self.resample!r}, "
            f"ess_threshold={self.ess_threshold}, proposal={self.proposal!r}, "
            f"history={self.history}, batch_size={self.batch_size})"
        )


def smc_posterior(out: SMCOutput, method: str, info: dict, history=True) -> Posterior:
    """The weighted :class:`~ppl.Posterior` of an SMC run (after
    :func:`_check_weights`): each final particle's global sites and path, its weight, the
    evidence, the pointwise log-likelihood and data, and ``info`` with the per-step
    records (:func:`smc_info`). Shared by SMC and resample-move SMC."""
    _check_weights(out)
    return Posterior(
        {**out.globals, **out.paths},
        log_weights=out.log_weights,
        log_evidence=out.log_evidence,
        observed_data=out.observed_data,
        log_likelihood=out.log_likelihood,
        method=method,
        info={**smc_info(out, history), **info},
    )


def smc_info(out: SMCOutput, history=True) -> dict:
    """The per-step records of an SMC run as a ``Posterior``'s ``info``: ``ess``,
    ``resampled``, ``log_evidence_increments``, ``log_evidence_init`` and
    ``filter_means``, plus, with the genealogy kept (``history``), ``ancestors``,
    ``filter_log_weights`` and ``particles``. Shared by SMC and resample-move SMC."""
    steps = out.steps
    info = {
        "ess": steps.ess,
        "resampled": steps.resampled,
        "log_evidence_increments": steps.log_evidence_increment,
        "log_evidence_init": out.log_evidence_init,
        "filter_means": steps.filter_means,
    }
    if history:
        info.update(ancestors=steps.ancestors, filter_log_weights=steps.log_weights,
                    particles=steps.values)
    return info


def _check_weights(out: SMCOutput):
    """Raise :class:`NonFiniteWeightError` naming the step and the sites when the run's
    weights went NaN / +inf or all -inf."""
    increments = np.asarray(out.steps.log_evidence_increment)
    bad = np.flatnonzero(~np.isfinite(increments))
    if np.isfinite(np.asarray(out.log_evidence_init)) and not bad.size:
        return
    where = (
        f"first at step t={int(bad[0])}" if bad.size else "at the global sites before markov"
    )
    log_probs = {**out.log_likelihood, **out.factor_log_probs}
    check_log_weights(out.log_weights, log_probs, what=f"SMC log weight ({where})")
    raise NonFiniteWeightError(f"SMC: the log-evidence estimate is not finite ({where})")


def smc(num_particles: int, resample="systematic", ess_threshold=0.5, proposal=None,
        move=None, devices=None, history=True, progress_bar=False, batch_size=1):
    """Sequential Monte Carlo (a particle filter) over a program with one ``ppl.markov``.

    ``num_particles`` particles; ``resample`` one of ``"systematic"`` (default),
    ``"stratified"``, ``"residual"``, ``"multinomial"``; resampling happens when the ESS
    falls below ``ess_threshold * num_particles`` (0: never, i.e. sequential importance
    sampling; 1: at every step). ``proposal=None`` is the bootstrap filter (the transition
    as proposal); a program ``proposal(t, carry, x)`` that samples every latent site of
    step ``t`` given the previous carry and the step's input ``x`` gives a guided filter.
    With ``move=infer.mh(...)`` this is resample-move SMC: the result of
    ``infer.rmsmc(num_particles, move=move, ...)`` (see :mod:`ppl.inference.resample_move`).

    ``.run(key, model, *args, **kwargs)`` returns a weighted :class:`~ppl.Posterior`:
    ``samples`` holds each final particle's global sites (N, ...) and its whole path of
    every step site (N, T, ...), traced back through the genealogy; ``log_weights`` are
    the final weights (``logsumexp - log N == log_evidence``); ``info`` has per-step
    ``ess``, ``resampled``, ``log_evidence_increments``, ``ancestors`` (T, N),
    ``filter_means`` (site -> (T, ...), the filtering means E[x_t | y_{1:t}]),
    ``filter_log_weights`` (T, N) and ``particles`` (site -> (T, N, ...)): with these,
    any filtering expectation is ``sum_n exp(filter_log_weights[t, n]) f(particles[t, n])``.
    ``devices="all"`` (or a list of devices) splits the particles across devices
    (:mod:`ppl.inference.sharding`; ``num_particles`` a multiple of their number).

    Memory: ``history=True`` keeps, for every step and particle, the ancestor index, the
    log weight, each latent value twice (the particles and the traced-back paths) and the
    pointwise log-likelihood: ``4 (2 + 2 d + o) T N`` bytes in float32 for ``d`` latent and
    ``o`` observed scalars per step, so 20 T N bytes (2 GB at T = N = 10^4) for one of
    each. A run whose outputs cannot fit in the free memory is refused before compiling
    (:class:`~ppl.errors.ResourceError`; :mod:`ppl.inference.memory`), with a warning
    above half of it. ``history=False`` is for when the evidence (or the filter at the last
    step) is all that is wanted: no genealogy is kept, so nothing of size T x N is
    recorded or traced back (memory O(N + T)). ``samples`` then hold each final
    particle's global sites and the latent sites of the last step only (N, ...),
    ``log_likelihood`` / ``observed_data`` the global observed sites only, and ``info``
    has ``ess``, ``resampled``, ``log_evidence_increments`` and ``filter_means`` but no
    ``ancestors``, ``particles`` or ``filter_log_weights``. The evidence and final weights
    are those of ``history=True`` for the same key.

    A static program (no ``ppl.markov``) is run by data annealing
    (:mod:`ppl.inference.data_annealing`; Chopin 2002): every particle draws the latent
    sites from the prior, and the observations come in one step at a time (``batch_size``
    units per step: every entry of every observed and factor site, in program order and
    along the site's plates), each step weighting the particles by their
    likelihood and resampling adaptively, as monad-bayes' SMC suspends at each factor.
    ``samples`` then hold the latent and deterministic sites of the final particles (N,
    ...), ``log_evidence`` estimates log p(y), and ``info`` has the per-step ``ess``,
    ``resampled`` and ``log_evidence_increments``. Without moves the particles keep their
    prior draws, so on many observations few distinct values survive; add MCMC
    rejuvenation with ``move=infer.mh(...)`` (IBIS; :func:`ppl.inference.rmsmc`).

    Cost: with ``ess_threshold`` 0 or 1 the resampling decision is static (no ESS test,
    no ``lax.cond``), and the particles' draws share one key per site and step
    (:func:`~ppl.inference.engine.particle_key`), so a step costs about what a
    hand-written filter's does.
    ``progress_bar=True`` shows a tqdm bar over the time steps without leaving jit.
    """
    from ppl.inference.trace_mh import MH  # rmsmc builds on this module: import late

    if isinstance(move, MH):
        from ppl.inference.resample_move import RMSMC

        if history is not True:
            raise UnsupportedOptionError(
                "smc(history=False) is not supported with move= (resample-move SMC carries "
                "the particles' paths by construction)"
            )
        return RMSMC(num_particles, move, resample, ess_threshold, proposal,
                     devices=devices, progress_bar=progress_bar, batch_size=batch_size)
    return SMC(num_particles, resample, ess_threshold, proposal, move, devices, history,
               progress_bar, batch_size)
