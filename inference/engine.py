"""The particle engine: one Feynman–Kac model, one SMC step, one time driver.

Every sequential algorithm of ``ppl.inference`` is a composition over this module
(Ścibior et al., POPL 2018, "Denotational validation of higher-order Bayesian inference",
section 6: ``smc = sequentially (resample . advance)``; Chopin & Papaspiliopoulos 2020,
*An Introduction to Sequential Monte Carlo*, Algorithm 10.3 and the ``FeynmanKac`` /
``SMC.__next__`` of their ``particles`` library):

* :class:`FeynmanKac` — a ``ppl.markov`` program read as M0 (the global sites drawn per
  particle: the time-0 state, and in SMC the parameters too), M_t (the step's transition,
  drawn or scored) and G_t (the step's ``observe``/``factor`` terms), given the global
  values held ``fixed``;
* :func:`resample` — adaptive, always, never, or conditional on a reference particle
  (Andrieu, Doucet & Holenstein 2010, conditional SMC step 2(a));
* :func:`propagate` — the bootstrap move (Gordon, Salmond & Smith 1993) or a guided
  proposal weighted ``m g / q``, with a reference particle replayed in conditional SMC;
* :func:`smc_step` — resample, propagate, reweight: one step of every filter here;
* :func:`run_particles` — the one time driver: a ``lax.scan`` over the steps of
  :func:`smc_step` with a pluggable *collector* (genealogy, the conditional sweep's
  particle system, the PaRIS statistics), or, for an evidence estimate over a traced
  number of steps (SMC^2), a ``fori_loop`` with no collector;
* :func:`markov_gap`, :func:`backward_log_weights` — what backward kernels (FFBS, PaRIS)
  need: the check that the carry is the Markov state and the backward log weights.

Order inside step t (0-based): the population of step t-1 (for t = 0 the initial one) is
resampled if its ESS is below ``ess_threshold * N`` (always in conditional SMC), then
propagated and reweighted; ``ancestors[t, n]`` is the parent of particle n of step t among
the particles of step t-1 (for t = 0, among the initial particles). The increment
``l_t = log sum_n W~_{t-1}^n G_t^n`` estimates log p(y_t | y_{<t}) and the evidence is
``log Z = l_init + sum_t l_t`` with ``l_init`` the log mean of the initial weights
(Chopin & Papaspiliopoulos 2020, Proposition 16.3).

A Feynman–Kac model is any object with ``num_steps``, ``initial(key, N, reference) ->
(ParticleState, l_init)`` and ``propagate(key, t, state, proposal, reference_t) ->
(StepResult, log G)``: :class:`FeynmanKac` reads one from a program; SMC^2's outer model
(:class:`ppl.inference.smc_squared.ThetaModel`) is one whose particles are parameters
with their inner filters.

A collector is any object with ``init(fk, state) -> carry`` and
``step(key, t, carry, prev, out, new) -> (carry, record)``: ``prev`` is the population
before step t (normalised weights), ``out`` the :class:`StepOutput`, ``new`` the population
after it; the records are stacked over time. ``uses_key = True`` asks for a key of its own
at every step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.primitives import Messenger
from ppl.inference.progress import progress_scan
from ppl.inference.resampling import adaptive_resample, get_scheme
from ppl.inference.sharding import replicate, shard_particles
from ppl.semantics.sequential import Sequential, StepResult, replay_key, step_reads
from ppl.semantics.trace import LATENT, PARAM, record

from ppl import weights
from ppl.errors import UnknownOptionError, UnsupportedModelError
from ppl.primitives import check_carry, step_index

__all__ = [
    "REFERENCE_INDEX",
    "FeynmanKac",
    "ParticleState",
    "RunOutput",
    "StepOutput",
    "backward_log_weights",
    "draw_step",
    "markov_gap",
    "particle_key",
    "propagate",
    "resample",
    "run_particles",
    "seeded",
    "smc_step",
    "take",
]

#: Particle index of the frozen reference path in conditional SMC, at every step.
REFERENCE_INDEX = 0


class ParticleState(NamedTuple):
    """A population between two steps: the global values drawn per particle
    (site -> (N, ...)), the carries (N, ...) and normalised log weights (N,); ``paths``,
    when not None, is a path buffer site -> (N, T, ...) that every step writes its latent
    values into (at index t) and resampling permutes with the particles: the particles of
    resample-move SMC carry their paths this way, so that a move can change them."""

    params: dict
    carry: object
    log_weights: jnp.ndarray
    paths: dict | None = None


class StepOutput(NamedTuple):
    """What :func:`smc_step` did at one step."""

    ancestors: jnp.ndarray  # (N,) int32 parents among the previous particles
    resampled: jnp.ndarray  # bool
    parents: ParticleState  # the population after resampling, before the move
    result: StepResult  # batched: new carries, the step's latent values, log g, log m
    log_potential: jnp.ndarray  # (N,) log G_t (g, or m g / q with a proposal)
    increment: jnp.ndarray  # l_t
    move_info: object = None  # what the move reported (resample-move SMC)


def take(tree, idx):
    """``tree`` indexed along its leading (particle) axis."""
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), tree)


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
    batched, so the per-site splits are computed once per step for the whole population,
    and each draw costs the particle one threefry evaluation, as a hand-written
    ``normal(key, (N,))``. Placed inside ``record``'s ``seed`` (it wraps the step
    function), it acts first, and ``seed`` then leaves the keyed messages alone.
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


def seeded(fn, key, index):
    """``fn`` with its draws keyed per particle (:class:`_ParticleSeed`), a fresh handler
    per call so that the same key gives the same draws."""

    def program(*args, **kwargs):
        return _ParticleSeed(fn, key, index)(*args, **kwargs)

    return program


def draw_step(ssm, key, index, t, carry) -> StepResult:
    """Particle ``index``'s draw of step ``t`` from the transition given ``carry``, with
    the population's shared ``key`` (see :class:`_ParticleSeed`)."""
    with step_index(t):
        new_carry, trace, _ = record(seeded(ssm.step_fn, key, index), key, (carry, ssm.inputs(t)))
    new_carry = jax.tree.map(jnp.asarray, new_carry)
    check_carry(carry, new_carry)
    return StepResult(new_carry, trace.select(LATENT), trace.log_likelihood, trace.log_prior)


def _propose(ssm, key, t, carry, proposal, index):
    """One particle's move: ``(StepResult, log G)``. Bootstrap (``proposal=None``): draw
    from the transition m, G = g. Guided: draw the step's latent sites from
    ``proposal(t, carry, x)``, score them under the model, G = m g / q (Chopin &
    Papaspiliopoulos 2020, Algorithm 10.1)."""
    if proposal is None:
        result = draw_step(ssm, key, index, t, carry)
        return result, result.log_weight
    _, q_trace, _ = record(seeded(proposal, key, index), key, (t, carry, ssm.inputs(t)))
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


# --------------------------------------------------------------------------- the model


class FeynmanKac:
    """A ``ppl.markov`` program as a Feynman–Kac model (M0, M_t, G_t) given ``fixed``.

    The global latent sites not in ``fixed`` are drawn per particle by M0, from their
    prior given the fixed ones (:meth:`initial`); those the step reads
    (:func:`~ppl.semantics.sequential.step_reads`) are parameters carried by each particle
    (SMC over parameters and states, as in :func:`~ppl.inference.smc`), the others the
    state at time 0. ``states_only=True`` (the smoothers, which condition on the
    parameters) refuses a program whose step reads a global site that is not fixed,
    naming it. When the step reads no per-particle site, every particle shares one reading
    of the program (:attr:`shared`), so a step costs what a hand-written filter's does.
    """

    def __init__(self, model, args, kwargs, fixed=None, states_only=False, who="smc"):
        self.model, self.args, self.kwargs = model, tuple(args), dict(kwargs)
        self.fixed = dict(fixed or {})
        self.shared = Sequential(model).state_space(
            replay_key(), *args, params=self.fixed, **kwargs
        )
        self.num_steps = self.shared.num_steps
        known = set(self.shared.globals.names(LATENT, PARAM))
        unknown = sorted(set(self.fixed) - known)
        if unknown:
            raise UnknownOptionError(
                f"{who}: fixed= names {unknown}, which are not global latent or ppl.param "
                f"sites drawn before the markov call (those are {sorted(known)})"
            )
        self.per_particle = tuple(
            n for n in self.shared.globals.names(LATENT) if n not in self.fixed
        )
        self.reads = step_reads(model, args, kwargs, self.fixed) if self.per_particle else ()
        if states_only and self.reads:
            names = ", ".join(repr(n) for n in self.reads)
            raise UnsupportedModelError(
                f"{who}: the markov step reads global latent site(s) {list(self.reads)} "
                f"drawn before it; smoothing is conditional on the parameters: pass "
                f"fixed={{...}} fixing {names} (for Bayesian inference on them use "
                f"infer.particle_gibbs or infer.pmmh). Sites that only set the initial "
                f"carry, such as x0 in markov(step, init=x0), are the time-0 state and "
                f"need no value"
            )

    def state_space(self, params):
        """The state space of one particle with per-particle global values ``params``."""
        if not self.reads:
            return self.shared
        return Sequential(self.model).state_space(
            replay_key(), *self.args, params={**self.fixed, **params}, **self.kwargs
        )

    def initial(self, key, num_particles: int, reference=None, mesh=None):
        """M0 and G0: ``(state, l_init)``. Each particle draws its global sites from the
        prior (``vmap`` over ``num_particles`` keys), starts from the ``init`` carry built
        from them, and is weighted by the global ``observe``/``factor`` terms (likelihood
        weighting); ``l_init = log mean exp(log G0)``. With ``reference`` (its initial
        site values) particle :data:`REFERENCE_INDEX` starts from them instead. ``mesh``:
        G0 is made whole on every device before it is normalised (as in :func:`smc_step`)."""

        def start(ssm):
            drawn = {n: ssm.globals.values[n] for n in self.per_particle}
            return drawn, ssm.init, ssm.globals.log_likelihood

        def draw(k):
            return start(Sequential(self.model).state_space(
                k, *self.args, params=self.fixed, **self.kwargs))

        params, carry, log_g0 = jax.vmap(draw)(jax.random.split(key, num_particles))
        if reference is not None:
            values = {**self.fixed, **{n: reference[n] for n in self.per_particle}}
            ref = start(Sequential(self.model).state_space(
                replay_key(), *self.args, params=values, **self.kwargs))
            params, carry, log_g0 = jax.tree.map(
                lambda a, r: a.at[REFERENCE_INDEX].set(jnp.asarray(r, a.dtype)),
                (params, carry, log_g0), ref,
            )
        log_w, total = weights.normalise(replicate(log_g0, mesh))
        return ParticleState(params, carry, log_w), total - math.log(num_particles)

    def propagate(self, key, t, state: ParticleState, proposal=None, reference_t=None):
        """M_t and G_t for every particle: ``(batched StepResult, log G)``.

        ``vmap`` over the particle index with ``key`` shared (per-particle draws by
        :func:`particle_key`) of the bootstrap draw or of a guided ``proposal(t, carry,
        x)``. With ``reference_t`` (the reference's latent values at step t) particle
        :data:`REFERENCE_INDEX` is replayed with them (conditional SMC, Andrieu et al.
        2010, step 2(b))."""
        n = state.log_weights.shape[0]
        index = jnp.arange(n, dtype=jnp.uint32)

        def one(i, params, carry):
            return _propose(self.state_space(params), key, t, carry, proposal, i)

        result, log_g = jax.vmap(one)(index, state.params, state.carry)
        if reference_t is None:
            return result, log_g
        params0 = take(state.params, REFERENCE_INDEX)
        ref = self.state_space(params0).replay_step(t, take(state.carry, REFERENCE_INDEX),
                                                     reference_t)
        result = jax.tree.map(
            lambda a, r: a.at[REFERENCE_INDEX].set(jnp.asarray(r, a.dtype)), result, ref
        )
        return result, log_g.at[REFERENCE_INDEX].set(ref.log_weight.astype(log_g.dtype))

    def log_transition(self, t, params, carry, values):
        """log m_t(carry, values) for one particle with global values ``params``."""
        return self.state_space(params).log_transition(t, carry, values)

    def step_shapes(self):
        """Shapes and dtypes of one step's latent sites (static)."""
        return jax.eval_shape(lambda: self.shared.step(replay_key(), 0, self.shared.init).values)


# --------------------------------------------------------------------------- one step


def resample(key, state: ParticleState, scheme, ess_threshold, conditional=False):
    """Resample the population: ``(state, ancestors, resampled)``.

    Adaptive: if ``ESS < ess_threshold * N`` draw ancestors with ``scheme`` and give
    every particle weight ``1/N``, else keep the population (Chopin & Papaspiliopoulos
    2020, Algorithm 10.3). A threshold known when tracing of 0 never resamples and of 1
    always resamples, with no ESS test or ``lax.cond`` (resampling equal weights is valid,
    so "always" estimates what the ESS rule ``ESS < N`` does). ``conditional`` resamples at
    every step with the reference's ancestor frozen (``a^0 = 0``; Andrieu, Doucet &
    Holenstein 2010, conditional SMC step 2(a)); it needs multinomial resampling, which the
    combinators enforce. The weights stay normalised."""
    lw = state.log_weights
    n = lw.shape[0]
    static = isinstance(ess_threshold, int | float) and not isinstance(ess_threshold, bool)
    if static and ess_threshold <= 0.0 and not conditional:
        return state, jnp.arange(n, dtype=jnp.int32), jnp.asarray(False)
    if conditional or (static and ess_threshold >= 1.0):
        idx = get_scheme(scheme)(key, lw)
        if conditional:
            idx = idx.at[REFERENCE_INDEX].set(REFERENCE_INDEX)
        # lw is normalised, so the new weights are 1/N (had the weights gone non-finite,
        # the increment of that step already carries it into the evidence estimate)
        log_w = jnp.full((n,), -math.log(n), dtype=lw.dtype)
        resampled = jnp.asarray(True)
    else:
        idx, log_w, resampled = adaptive_resample(key, lw, scheme, ess_threshold)
    moved = ParticleState(take(state.params, idx), take(state.carry, idx), log_w,
                          None if state.paths is None else take(state.paths, idx))
    return moved, idx, resampled


def propagate(key, t, fk, state: ParticleState, proposal=None, reference_t=None):
    """Move every particle one step: ``(batched StepResult, log G)``, the model's
    ``fk.propagate`` (:meth:`FeynmanKac.propagate` for a program; SMC^2's outer model
    advances each parameter particle's inner filter). The one place a step's move is
    called from, so a test can break it for every algorithm at once."""
    return fk.propagate(key, t, state, proposal, reference_t)


def write_paths(paths, t, values):
    """The path buffer with step ``t``'s latent values written in (None stays None)."""
    if paths is None:
        return None
    return jax.tree.map(lambda p, v: p.at[:, t].set(v.astype(p.dtype)), paths, values)


def smc_step(key, t, fk, state: ParticleState, scheme="systematic",
             ess_threshold=0.5, proposal=None, reference_t=None, move=None, mesh=None):
    """One step of SMC: :func:`resample`, an optional ``move``, :func:`propagate`,
    reweight. Returns the new population (normalised weights) and the
    :class:`StepOutput`; ``l_t`` is ``log sum_n W~^n G^n``, the log of the weighted mean
    incremental weight.

    ``move(key, t, state, parents, resampled) -> (parents, info)`` is an MCMC move of the
    resampled population ``parents`` (``state``: the population before resampling) that
    leaves the target of step t-1 invariant (resample-move SMC, Gilks & Berzuini 2001;
    the moves of :func:`ppl.inference.kernels.as_smc_move`); it keeps the weights, so the
    evidence estimate is unchanged. Its ``info`` goes to ``StepOutput.move_info``.

    ``mesh`` (particles split across devices, :mod:`ppl.inference.sharding`): the weights
    are made whole on every device before resampling and before normalising, so both run
    in a single device's order and the step is bitwise that of an unsharded run."""
    state = shard_particles(state, mesh)
    key_resample, key_move = jax.random.split(key)
    conditional = reference_t is not None
    parents, ancestors, resampled = resample(key_resample, state, scheme, ess_threshold,
                                             conditional)
    move_info = None
    if move is not None:
        key_rejuvenate, key_move = jax.random.split(key_move)
        parents, move_info = move(key_rejuvenate, t, state, parents, resampled)
    result, log_g = propagate(key_move, t, fk, parents, proposal, reference_t)
    log_w, increment = weights.normalise(parents.log_weights + replicate(log_g, mesh))
    new = ParticleState(parents.params, result.carry, log_w,
                        write_paths(parents.paths, t, result.values))
    return new, StepOutput(ancestors, resampled, parents, result, log_g, increment, move_info)


# --------------------------------------------------------------------------- driver


class RunOutput(NamedTuple):
    """One run of :func:`run_particles`."""

    initial: ParticleState  # the population at time 0 (after M0, weighted by G0)
    final: ParticleState
    log_evidence: jnp.ndarray
    log_evidence_init: jnp.ndarray
    increments: jnp.ndarray  # (T,) l_t (empty with num_active)
    collected: object  # the collector's final carry
    records: object  # the collector's per-step records, stacked over time


def step_keys(key, num_steps):
    """The key of step t is ``fold_in(key, t)``: the same whatever the number of steps
    run (so a filter stopped after t steps draws what the full one draws up to t)."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(num_steps))


def run_particles(key, fk, num_particles: int, scheme="systematic",
                  ess_threshold=0.5, collector=None, proposal=None, reference=None,
                  mesh=None, num_active=None, progress_bar=False, desc="smc", move=None,
                  paths=None) -> RunOutput:
    """The time driver: M0, then :func:`smc_step` for t = 0..T-1 in one ``lax.scan``,
    with ``collector`` recording what the algorithm needs (see the module docstring).

    ``reference`` (a path: step site -> (T, ...) and each initial site's value) makes it
    conditional SMC. ``mesh`` splits the particles across devices
    (:mod:`ppl.inference.sharding`). ``num_active`` (a traced integer, no collector) runs
    only the first ``num_active`` steps in a ``fori_loop``: the filter of y_{0:t} that the
    SMC^2 rejuvenation reruns. ``move`` rejuvenates the resampled particles at every step
    (see :func:`smc_step`); ``paths`` (site -> (N, T, ...) zeros) makes the particles carry
    their paths (:class:`ParticleState`). ``progress_bar`` shows a tqdm bar (label
    ``desc``) over the steps (:func:`~ppl.inference.progress.progress_scan`). Pure JAX: jit
    it, vmap it over keys, nest it."""
    key_init, key_steps = jax.random.split(key)
    if mesh is not None and isinstance(fk, FeynmanKac):  # others' M0 takes no mesh
        state, log_z_init = fk.initial(key_init, num_particles, reference, mesh=mesh)
    else:
        state, log_z_init = fk.initial(key_init, num_particles, reference)
    state = shard_particles(state._replace(paths=paths), mesh)
    step_ref = None
    if reference is not None:
        step_ref = {n: v for n, v in reference.items() if n not in fk.per_particle}

    def advance(key_t, t, state, ref_t):
        new, out = smc_step(key_t, t, fk, state, scheme, ess_threshold, proposal, ref_t, move,
                            mesh)
        return shard_particles(new, mesh), out

    if num_active is not None:
        def loop(t, carry):
            state, log_z = carry
            state, out = advance(jax.random.fold_in(key_steps, t), t, state, None)
            return state, log_z + out.increment

        final, log_z = jax.lax.fori_loop(0, num_active, loop, (state, log_z_init))
        return RunOutput(state, final, log_z, log_z_init, jnp.zeros((0,)), None, None)

    uses_key = getattr(collector, "uses_key", False)

    def body(carry, xs):
        state, collected = carry
        t, key_t, ref_t = xs
        key_collect = None
        if uses_key:
            key_t, key_collect = jax.random.split(key_t)
        new, out = advance(key_t, t, state, ref_t)
        rec = None
        if collector is not None:
            collected, rec = collector.step(key_collect, t, collected, state, out, new)
        return (new, collected), (out.increment, rec)

    collected = None if collector is None else collector.init(fk, state)
    xs = (jnp.arange(fk.num_steps), step_keys(key_steps, fk.num_steps), step_ref)
    (final, collected), (increments, records) = progress_scan(
        body, (state, collected), xs, desc=desc, enable=progress_bar
    )
    log_z = log_z_init + jnp.sum(increments)
    return RunOutput(state, final, log_z, log_z_init, increments, collected, records)


# --------------------------------------------------------------------------- backward kernels


def backward_log_weights(fk: FeynmanKac, t, prev: ParticleState, values):
    """``log w_{t-1}^k + log m_t(c_{t-1}^k, x_t)`` for every particle k of the previous
    population: the unnormalised backward kernel of FFBS (Godsill, Doucet & West 2004)
    and PaRIS (Olsson & Westerborn 2017, eq. (2.6)) for one new state with latent
    ``values``."""
    log_m = jax.vmap(lambda p, c: fk.log_transition(t, p, c, values))(prev.params, prev.carry)
    return prev.log_weights + log_m


def markov_gap(fk: FeynmanKac, t, parents: ParticleState, result: StepResult):
    """How far the step is from using the carry as its Markov state: replay particle n's
    values from particle n+1's previous carry and return the largest relative change of
    the new carry or of log g (0 when the step only reads the previous carry through its
    latent values, the assumption of backward sampling and PaRIS)."""
    shifted = jax.tree.map(lambda a: jnp.roll(a, -1, axis=0), parents.carry)
    alt = jax.vmap(
        lambda p, c, v: fk.state_space(p).replay_step(t, c, v)
    )(parents.params, shifted, result.values)

    def gap(a, b):
        a, b = jnp.asarray(a, jnp.result_type(float)), jnp.asarray(b, jnp.result_type(float))
        d = jnp.where(a == b, 0.0, jnp.abs(a - b) / (1.0 + jnp.abs(b)))
        return jnp.max(jnp.where(jnp.isnan(d), jnp.inf, d)) if d.size else jnp.zeros(())

    gaps = [gap(a, b) for a, b in zip(jax.tree.leaves(alt.carry),
                                      jax.tree.leaves(result.carry), strict=True)]
    gaps.append(gap(alt.log_weight, result.log_weight))
    return jnp.max(jnp.stack(gaps))
