"""Sequential Monte Carlo over ``ppl.markov`` programs (a particle filter).

A program read by :class:`~ppl.semantics.Sequential` is a state-space model

    theta ~ p(theta);  x_0 = init(theta);  x_t ~ m_theta(x_{t-1}, .),  weight *= g_theta(x_t, y_t)

and SMC approximates the filtering distributions p(theta, x_t | y_{1:t}) and the evidence
p(y_{1:T}) with ``N`` weighted particles. Following Ścibior et al. (POPL 2018, section 6),
the algorithm is the composition ``smc = sequentially (resample . advance)`` of small
building blocks, each below with its source:

* :func:`init_particles` — each particle draws its global sites from the prior and starts
  from the ``init`` carry; global ``observe``/``factor`` sites give the initial weights;
* :func:`resample_step` — adaptive resampling when the ESS falls below a threshold
  (Chopin & Papaspiliopoulos 2020, *An Introduction to Sequential Monte Carlo*,
  Algorithm 10.3);
* :func:`advance` — propagate every particle one step through the transition and multiply
  its weight by the step's likelihood (the bootstrap filter of Gordon, Salmond & Smith
  1993), or through a guided ``proposal`` with weight ``m g / q`` (Algorithm 10.1);
* :func:`particle_key` — the per-particle keys of one draw, derived from a key shared by
  the population (Salmon et al. 2011), so a step's randomness costs what a hand-written
  filter's does;
* :func:`trace_ancestry` — rebuild each final particle's path from the genealogy;
* :func:`run_smc` — the driver: one ``lax.scan`` over time, ``vmap`` over particles;
  ``history=False`` keeps no genealogy when only the evidence and the final filter are
  wanted (``benchmarks/bench_pf.py`` times both against a hand-written JAX filter).

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
from jax.scipy.special import logsumexp
from numpyro.primitives import Messenger
from ppl.inference.base import CompiledRuns, check_count, check_key, check_log_weights
from ppl.inference.progress import progress_scan
from ppl.inference.resampling import adaptive_resample, get_scheme
from ppl.inference.sharding import check_divisible, particle_mesh, shard_particles, to_host
from ppl.semantics.sequential import Sequential, StepResult
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, OBSERVED, record

from ppl.errors import NonFiniteWeightError, UnsupportedModelError
from ppl.posterior import Posterior
from ppl.primitives import check_carry, step_index

__all__ = [
    "SMC",
    "ParticleState",
    "SMCOutput",
    "StepRecord",
    "advance",
    "init_particles",
    "normalise",
    "particle_key",
    "resample_step",
    "run_smc",
    "smc",
    "smc_info",
    "trace_ancestry",
]

_REPLAY_KEY = jax.random.PRNGKey(0)  # globals and latents are all substituted: unused


# --------------------------------------------------------------------------- state


class ParticleState(NamedTuple):
    """A population between two steps: per-particle global latent values and carries,
    normalised log weights (``logsumexp == 0``), all with a leading N axis."""

    params: dict
    carry: object
    log_weights: jnp.ndarray


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


# --------------------------------------------------------------------------- blocks


def normalise(log_weights):
    """``(log_weights - logsumexp(log_weights), logsumexp(log_weights))``.

    If the total is not finite (all ``-inf``, or a NaN / ``+inf``) the weights are handed
    back unchanged, so the problem reaches the final weights and the evidence estimate
    instead of turning into NaN here; :meth:`SMC.run` then reports it.
    """
    total = logsumexp(log_weights)
    finite = jnp.isfinite(total)
    return jnp.where(finite, log_weights - jnp.where(finite, total, 0.0), log_weights), total


def _state_space(model, args, kwargs, params=None, key=_REPLAY_KEY):
    return Sequential(model).state_space(key, *args, params=params, **kwargs)


def init_particles(key, model, args, kwargs, num_particles: int, params=None):
    """Draw ``num_particles`` initial particles; returns ``(state, l_init)``.

    Each particle draws the program's global sites (those before the ``markov`` call) from
    the prior, independently (``vmap`` of :meth:`Sequential.state_space`), and starts from
    the ``init`` carry the program builds from them. Its initial log weight is the sum of
    the global ``observe``/``factor`` terms, i.e. importance sampling from the prior
    (likelihood weighting); ``l_init = logsumexp(log w_0) - log N`` starts the evidence
    estimate (0 without global observations). This is step 0 of the bootstrap filter
    (Gordon, Salmond & Smith 1993) with the parameters as part of the state.

    ``params`` (a dict site -> value, optional) fixes those global latent sites to the same
    value in every particle; the other global sites are still drawn per particle. The run
    then estimates p(y | params) (the likelihood PMMH and SMC^2 need).
    """

    def one(k):
        ssm = _state_space(model, args, kwargs, params=params, key=k)
        return ssm.params, ssm.init, ssm.globals.log_likelihood

    params, carry, log_w = jax.vmap(one)(jax.random.split(key, num_particles))
    log_w, total = normalise(log_w)
    return ParticleState(params, carry, log_w), total - math.log(num_particles)


def resample_step(key, state: ParticleState, scheme, ess_threshold):
    """Adaptive resampling of the whole population: ``(state, ancestors, resampled)``.

    If ``ESS(W) < ess_threshold * N`` draw ancestor indices with ``scheme`` and give every
    particle weight ``1/N``; otherwise keep the population (ancestors ``arange(N)``).
    Every particle field (global values, carry) is permuted with the same indices
    (Chopin & Papaspiliopoulos 2020, Algorithm 10.3, via
    :func:`ppl.inference.resampling.adaptive_resample`). The weights stay normalised.

    A threshold known when tracing (a Python number) of 0 or of 1 decides statically:
    0 never resamples (the population is returned as is), 1 resamples at every step
    (the resampling step of the bootstrap filter), so neither computes the ESS nor
    branches with ``lax.cond``. Resampling equal weights is valid, so "at every step"
    estimates the same measure as the ESS rule ``ESS < N``, which skips only exactly
    equal weights.
    """
    lw = state.log_weights
    n = lw.shape[0]
    static = isinstance(ess_threshold, int | float) and not isinstance(ess_threshold, bool)
    if static and ess_threshold <= 0.0:
        return state, jnp.arange(n, dtype=jnp.int32), jnp.asarray(False)
    if static and ess_threshold >= 1.0:
        idx = get_scheme(scheme)(key, lw)
        # lw is normalised (see advance), so the new weights are 1/N: no logsumexp. (Had
        # the weights gone non-finite, the increment of that step already carries it
        # into the evidence estimate, which SMC.run checks.)
        log_w = jnp.full((n,), -math.log(n), dtype=lw.dtype)
        resampled = jnp.asarray(True)
    else:
        idx, log_w, resampled = adaptive_resample(key, lw, scheme, ess_threshold)

    def take(a):
        return jnp.take(a, idx, axis=0)

    return (
        ParticleState(jax.tree.map(take, state.params), jax.tree.map(take, state.carry), log_w),
        idx,
        resampled,
    )


# --------------------------------------------------------------------------- randomness


def particle_key(key, index):
    """The key of particle ``index`` for a draw whose key, shared by the population, is
    ``key``: ``key`` with ``index`` XOR-ed into its last 32-bit word.

    Threefry is a keyed counter-based generator (Salmon, Moraes, Dror & Shaw 2011,
    "Parallel random numbers: as easy as 1, 2, 3", SC'11): distinct keys give streams
    that are independent for every practical purpose, and a key made of a random part
    and a stream identifier (here the particle index) is the parallel use it was designed
    for, the same as ``jax.random.PRNGKey(n)`` being ``(0, n)``. Deriving the N particle
    keys this way costs an integer XOR instead of the N threefry evaluations of
    ``jax.random.split(key, N)``; with ``key`` fresh (one split per site and time step,
    never used for a draw itself), every (site, step, particle) draws from its own key.
    Same key, same answer; typed keys (``jax.random.key``) keep their implementation.
    """
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    data = jax.random.key_data(key) if typed else key
    index = jnp.asarray(index).astype(data.dtype)
    data = jnp.concatenate([data[..., :-1], (data[..., -1] ^ index)[..., None]], axis=-1)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key)) if typed else data


class _ParticleSeed(Messenger):
    """NumPyro's ``seed`` for particle ``index`` of a population that shares ``key``.

    Every message ``seed`` would give a key (``sample`` sites without a value,
    ``prng_key``, ``plate``, ``control_flow``) gets :func:`particle_key` of a fresh split
    of ``key``. Under ``vmap`` over the particle index, ``key`` and its splits are not
    batched, so the per-site splits are computed once per step for the whole population
    (NumPyro's ``seed`` would split every particle's key at every site), and each draw
    costs the particle one threefry evaluation, as a hand-written ``normal(key, (N,))``.
    Placed inside ``record``'s ``seed`` (it wraps the step function), it acts first, and
    ``seed`` then leaves the keyed messages alone.
    """

    def __init__(self, fn, key, index):
        self.key = key
        self.index = index
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] not in ("sample", "prng_key", "plate", "control_flow"):
            return
        if msg["kwargs"].get("rng_key") is not None or msg["value"] is not None:
            return
        self.key, site_key = jax.random.split(self.key)
        msg["kwargs"]["rng_key"] = particle_key(site_key, self.index)


def _seeded(fn, key, index):
    """``fn`` with its draws keyed per particle (:class:`_ParticleSeed`), a fresh handler
    per call so that the same key gives the same draws."""

    def seeded(*args, **kwargs):
        return _ParticleSeed(fn, key, index)(*args, **kwargs)

    return seeded


def _draw_step(ssm, key, index, t, carry) -> StepResult:
    """Particle ``index``'s draw of step ``t`` from the transition given ``carry``:
    :meth:`StateSpace.step` with the population's shared ``key`` (see
    :class:`_ParticleSeed`)."""
    with step_index(t):
        new_carry, trace, _ = record(
            _seeded(ssm.step_fn, key, index), key, (carry, ssm.inputs(t))
        )
    new_carry = jax.tree.map(jnp.asarray, new_carry)
    check_carry(carry, new_carry)
    return StepResult(new_carry, trace.select(LATENT), trace.log_likelihood, trace.log_prior)


def _propose(ssm, key, t, carry, proposal, index=None):
    """One particle's move: ``(StepResult, log incremental weight)``.

    Bootstrap (``proposal=None``): draw from the transition m, weight g. Guided: draw the
    step's latent sites from ``proposal(t, carry, x)`` (x the step's input), score them
    under the model with :meth:`StateSpace.replay_step`, weight ``m g / q``. With
    ``index`` (particle ``index`` of a population), ``key`` is the population's and the
    draws are keyed per particle (:class:`_ParticleSeed`); without, ``key`` is this
    particle's own.
    """
    if proposal is None:
        result = ssm.step(key, t, carry) if index is None else _draw_step(
            ssm, key, index, t, carry
        )
        return result, result.log_weight
    program = proposal if index is None else _seeded(proposal, key, index)
    _, q_trace, _ = record(program, key, (t, carry, ssm.inputs(t)))
    proposed = q_trace.select(LATENT)
    result = ssm.replay_step(t, carry, proposed)
    missing = sorted(set(result.values) - set(proposed))
    extra = sorted(set(proposed) - set(result.values))
    if missing or extra:
        raise UnsupportedModelError(
            f"smc: the proposal must sample exactly the latent sites of one markov step "
            f"{sorted(result.values)}; it misses {missing} and samples unknown {extra}"
        )
    return result, result.log_weight + result.log_transition - q_trace.log_prior


def advance(key, t, state: ParticleState, model, args, kwargs, proposal=None):
    """Move every particle one step and reweight: ``(state, values, log G, l_t)``.

    ``vmap`` over particles of :meth:`StateSpace.step` (the bootstrap filter of Gordon,
    Salmond & Smith 1993: propose from the transition, weight by the likelihood g) or of
    a guided proposal with weight ``m g / q`` (Chopin & Papaspiliopoulos 2020, Algorithm
    10.1). Each particle's state space is rebuilt from its own global values
    (``params=``), which costs only tracing. The ``vmap`` runs over the particle index
    with ``key`` shared: particle n's draws use :func:`particle_key` of per-site splits
    of ``key``, so no per-particle key is split. Returns the new state with normalised
    log weights, the step's latent values, the incremental log weights and
    ``l_t = log sum_n W^n G^n`` (the log of the weighted mean incremental weight).
    """
    num_particles = state.log_weights.shape[0]

    def one(index, params, carry):
        ssm = _state_space(model, args, kwargs, params=params)
        return _propose(ssm, key, t, carry, proposal, index)

    index = jnp.arange(num_particles, dtype=jnp.uint32)
    result, log_g = jax.vmap(one)(index, state.params, state.carry)
    log_w, increment = normalise(state.log_weights + log_g)
    return ParticleState(state.params, result.carry, log_w), result.values, log_g, increment


def _weighted_mean(log_weights, x):
    return _mean_under(jnp.exp(log_weights), x)


def _mean_under(weights, x):
    """``sum_n weights[n] x[n]`` (normalised ``weights``); integer sites as floats."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(weights.dtype)
    return jnp.tensordot(weights.astype(x.dtype), x, axes=(0, 0))


def _ess_normalised(weights, total):
    """Kish ESS ``1 / sum_n W_n^2`` of weights ``W`` normalised by :func:`normalise`, whose
    log total was ``total``: :func:`ppl.inference.resampling.ess` without its two
    ``logsumexp`` passes (``W <= 1`` cannot overflow). As there, 0 when every weight is
    zero (``total = -inf``) and NaN when the total is NaN or ``+inf``."""
    value = 1.0 / jnp.sum(weights * weights)
    fallback = jnp.where(jnp.isneginf(total), 0.0, jnp.nan).astype(value.dtype)
    return jnp.where(jnp.isfinite(total), value, fallback)


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


def _step_trace(ssm, t, carry, values):
    """Replay step ``t`` with its latent ``values`` and return ``(carry, Trace)`` (with
    per-site log densities, unlike :meth:`StateSpace.replay_step`)."""
    with step_index(t):
        new_carry, trace, _ = record(
            ssm.step_fn, _REPLAY_KEY, (carry, ssm.inputs(t)), substitutions=values
        )
    return jax.tree.map(jnp.asarray, new_carry), trace


def replay_lineages(model, args, kwargs, params, paths):
    """Replay each final lineage through the program: ``(global values, step
    deterministic sites, pointwise log-likelihood, observed data, factor log weights)``.

    Rebuilds each final particle's state space from its global latent values and scans
    its path with every latent site fixed (``vmap`` over particles, ``lax.scan`` over
    time), recovering what the forward pass does not keep: global and per-step
    deterministic sites, the pointwise log density of every observed site (global
    (N, ...), per step (N, T, ...)) and of every factor, and the data."""

    def one(params_n, path_n):
        ssm = _state_space(model, args, kwargs, params=params_n)

        def body(carry, step):
            t, values = step
            carry, trace = _step_trace(ssm, t, carry, values)
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


def replay_globals(model, args, kwargs, params, num_particles):
    """The global sites of each final particle, rebuilt from its global latent values:
    ``(global latent and deterministic values, pointwise log-likelihood of the global
    observed sites, their data, factor log weights)``, each site with a leading N axis
    (the data without). The part of :func:`replay_lineages` that needs no path."""

    def one(params_n):
        g = _state_space(model, args, kwargs, params=params_n).globals
        return (
            g.select(LATENT, DETERMINISTIC),
            {n: g.log_probs[n] for n in g.names(OBSERVED)},
            g.select(OBSERVED),
            {n: g.log_probs[n] for n in g.names(FACTOR)},
        )

    values, loglik, data, factors = jax.vmap(one, axis_size=num_particles)(params)
    return values, loglik, jax.tree.map(lambda a: a[0], data), factors


def run_smc(key, model, args, kwargs, num_particles, scheme="systematic",
            ess_threshold=0.5, proposal=None, params=None, mesh=None,
            history=True, progress_bar=False) -> SMCOutput:
    """The SMC driver: ``sequentially (resample . advance)`` (Ścibior et al. 2018).

    :func:`init_particles`, then one ``lax.scan`` over the T steps of the program's
    ``markov`` call whose body is :func:`resample_step` followed by :func:`advance`
    (Chopin & Papaspiliopoulos 2020, Algorithm 10.3), then :func:`trace_ancestry`. Pure
    JAX: no Python loop over time or particles, so it can be jitted, vmapped over keys or
    nested in another algorithm (PMMH, SMC^2). ``params`` fixes global latent sites to
    values shared by every particle (see :func:`init_particles`). ``mesh`` (a
    :func:`ppl.inference.sharding.particle_mesh`) splits the particles across its devices.

    ``history=False`` keeps no genealogy: the scan records only the per-step scalars
    (ESS, resampled, ``l_t``, filtering means), nothing of size T x N, and ``paths`` holds
    the final particles' last-step latent values (N, ...) instead of their paths; the
    evidence estimate and the final weighted particles are those of ``history=True``
    (same key, same numbers). ``progress_bar`` shows a tqdm bar over the time steps
    (:func:`~ppl.inference.progress.progress_scan`).
    """
    key_init, key_steps = jax.random.split(key)
    num_steps = _state_space(model, args, kwargs, params=params, key=key_init).num_steps
    state, log_z_init = init_particles(key_init, model, args, kwargs, num_particles, params)
    state = shard_particles(state, mesh)  # no-op when mesh is None

    def body(carry, step):
        state, _ = carry
        t, key_t = step
        key_resample, key_advance = jax.random.split(key_t)
        state, ancestors, resampled = resample_step(key_resample, state, scheme, ess_threshold)
        state = shard_particles(state, mesh)
        state, values, _, increment = advance(
            key_advance, t, state, model, args, kwargs, proposal
        )
        state = shard_particles(state, mesh)
        weights = jnp.exp(state.log_weights)  # normalised: one exp for ESS and means
        record_t = StepRecord(
            values=values if history else {},
            ancestors=ancestors if history else None,
            resampled=resampled,
            ess=_ess_normalised(weights, increment),
            log_evidence_increment=increment,
            log_weights=state.log_weights if history else None,
            filter_means={n: _mean_under(weights, v) for n, v in values.items()},
        )
        return (state, None if history else values), record_t

    last = None
    if not history:  # carry the newest step's values, to return the final particles'
        shapes = jax.eval_shape(
            lambda s: advance(key_steps, 0, s, model, args, kwargs, proposal)[1], state
        )
        last = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
    steps = (jnp.arange(num_steps), jax.random.split(key_steps, num_steps))
    (state, last), records = progress_scan(body, (state, last), steps, desc="smc",
                                           enable=progress_bar)
    log_evidence = log_z_init + jnp.sum(records.log_evidence_increment)
    if history:
        paths, _ = trace_ancestry(records.values, records.ancestors)
        global_values, step_det, loglik, data, factors = replay_lineages(
            model, args, kwargs, state.params, paths
        )
        paths = {**paths, **step_det}
    else:
        paths = last
        global_values, loglik, data, factors = replay_globals(
            model, args, kwargs, state.params, num_particles
        )
    return SMCOutput(
        globals=global_values,
        paths=paths,
        log_weights=state.log_weights + log_evidence + math.log(num_particles),
        log_evidence=log_evidence,
        log_evidence_init=log_z_init,
        steps=records,
        log_likelihood=loglik,
        observed_data=data,
        factor_log_probs=factors,
    )


# --------------------------------------------------------------------------- combinator


class SMC:
    """``smc(num_particles, resample, ess_threshold, proposal, move)``; see :func:`smc`."""

    def __init__(self, num_particles: int, resample="systematic", ess_threshold=0.5,
                 proposal=None, move=None, devices=None, history=True, progress_bar=False):
        self.num_particles = check_count("num_particles", num_particles)
        get_scheme(resample)  # UnknownOptionError naming `resample`
        self.resample = resample
        try:
            t = None if isinstance(ess_threshold, bool) else np.asarray(ess_threshold, float)
        except (TypeError, ValueError):
            t = None
        if t is None or t.ndim != 0 or not np.isfinite(t) or not 0.0 <= float(t) <= 1.0:
            raise ValueError(
                f"ess_threshold must be a number in [0, 1] (a fraction of num_particles), "
                f"got {ess_threshold!r}"
            )
        self.ess_threshold = float(t)
        if proposal is not None and not callable(proposal):
            raise TypeError(
                f"proposal must be a program proposal(t, carry, x) sampling one step's "
                f"latent sites, got {proposal!r}"
            )
        self.proposal = proposal
        if move is not None:
            raise NotImplementedError(
                f"smc(move=...): a move must be an infer.mh(...) combinator (resample-move "
                f"SMC, infer.rmsmc), got {move!r}"
            )
        self.move = move
        self.devices = devices  # None: no sharding; "all" or a list: see inference/sharding.py
        self.mesh = None if devices is None else particle_mesh(devices)
        if self.mesh is not None:
            check_divisible(self.num_particles, self.mesh)
        if not isinstance(history, bool):
            raise TypeError(
                f"history must be True (keep the genealogy: paths and per-step particles) "
                f"or False (evidence, final particles and per-step summaries only), got "
                f"{history!r}"
            )
        self.history = history
        self.progress_bar = bool(progress_bar)
        self._runs = CompiledRuns(self.core)

    def core(self, key, model, args, kwargs, fixed=None) -> SMCOutput:
        """The pure, jittable run (:func:`run_smc` with this combinator's options);
        ``fixed`` (site -> value) holds global latent sites for every particle (PMMH)."""
        return run_smc(key, model, args, kwargs, self.num_particles, self.resample,
                       self.ess_threshold, self.proposal, params=fixed, mesh=self.mesh,
                       history=self.history, progress_bar=self.progress_bar)

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run SMC on ``model(*args, **kwargs)`` (one ``ppl.markov`` call after its global
        sites) and return a weighted :class:`~ppl.Posterior`."""
        out = to_host(self._runs(check_key(key), model, args, kwargs))  # multi-host: gather
        _check_weights(out)
        info = {**smc_info(out, self.history), "num_particles": self.num_particles,
                "resample": self.resample, "ess_threshold": self.ess_threshold,
                "history": self.history}
        return Posterior(
            {**out.globals, **out.paths},
            log_weights=out.log_weights,
            log_evidence=out.log_evidence,
            observed_data=out.observed_data,
            log_likelihood=out.log_likelihood,
            method="smc",
            info=info,
        )

    def __repr__(self):
        return (
            f"smc(num_particles={self.num_particles}, resample={self.resample!r}, "
            f"ess_threshold={self.ess_threshold}, proposal={self.proposal!r}, "
            f"history={self.history})"
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
        move=None, devices=None, history=True, progress_bar=False):
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

    ``history=False`` is for when the evidence (or the filter at the last step) is all
    that is wanted: no genealogy is kept, so nothing of size T x N is recorded or traced
    back. ``samples`` then hold each final particle's global sites and the latent sites
    of the last step only (N, ...), ``log_likelihood`` / ``observed_data`` the global
    observed sites only, and ``info`` has ``ess``, ``resampled``,
    ``log_evidence_increments`` and ``filter_means`` but no ``ancestors``, ``particles``
    or ``filter_log_weights``. The evidence and final weights are those of
    ``history=True`` for the same key.

    Cost: with ``ess_threshold`` 0 or 1 the resampling decision is static (no ESS test,
    no ``lax.cond``), and the particles' draws share one key per site and step
    (:func:`particle_key`), so a step costs about what a hand-written filter's does.
    ``progress_bar=True`` shows a tqdm bar over the time steps without leaving jit.
    """
    from ppl.inference.trace_mh import MH  # rmsmc builds on this module: import late

    if isinstance(move, MH):
        from ppl.inference.resample_move import RMSMC

        if history is not True:
            raise NotImplementedError(
                "smc(history=False) is not supported with move= (resample-move SMC carries "
                "the particles' paths by construction)"
            )
        return RMSMC(num_particles, move, resample, ess_threshold, proposal,
                     devices=devices, progress_bar=progress_bar)
    return SMC(num_particles, resample, ess_threshold, proposal, move, devices, history,
               progress_bar)
