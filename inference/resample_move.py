"""Resample-move SMC: SMC whose particles carry their traces, rejuvenated by MH moves.

Gilks & Berzuini (2001, "Following a moving target — Monte Carlo inference for dynamic
Bayesian models", JRSS B 63(1)) add to each step of a particle filter, after resampling,
a few MCMC moves that leave the current target invariant. monad-bayes writes it
(Ścibior et al. 2018, section 7) as

    rmsmc k n = sequentially (composeCopies k mhStep . resample) . hoistFirst (withParticles n)

For a ``markov`` program (see :mod:`ppl.inference.filtering`) the target after step t is

    p_t(theta, x_{1:t} | y_{1:t})
        ∝ p(theta) g_0(theta) prod_{s<=t} m_theta(x_{s-1}, x_s) g_theta(x_s, y_s).

A particle is its global latent values ``theta``, its whole path as full (T, ...) arrays
(entries after the current step are unused) and the carry after step t. Its partial log
joint ``log p_t`` is evaluated by :func:`path_log_joint`, a masked ``lax.scan`` over all T
steps (steps after t contribute 0), so a move costs O(T), as in monad-bayes, and a run
O(T^2). When the step's new carry is a function of its own draws
(:func:`~ppl.inference.local_moves.markov_layout`), a step move is scored on its Markov
blanket instead (steps s and s+1; :func:`~ppl.inference.local_moves.path_step_move`) and a
move of a global site the step does not read (the time-0 state) on the globals and step 0
(:func:`~ppl.inference.local_moves.initial_site_move`): O(1) per move, O(T) per run
(moves of global parameters the step reads stay O(T)). One step of
:func:`run_rmsmc` is the engine's :func:`~ppl.inference.engine.smc_step` with a move:

1. adaptive resampling (ESS below ``ess_threshold * N``) of the particles of step t-1,
   which permutes their paths with the same ancestor indices;
2. :func:`rejuvenate` — ``num_mcmc_steps`` MH moves per particle, each invariant for
   p_{t-1} (at t = 0, moves of the global sites only);
3. propagate and reweight (bootstrap or guided); the new step's values are written into
   each particle's path at index t.

Moves do not change the weights (an MH kernel invariant for p_t maps a weighted sample of
p_t to one), so the evidence estimate is SMC's, ``log Z = l_init + sum_t l_t``, and stays
unbiased. The moves (the ``move=infer.mh(...)`` option; only its ``proposal``,
``num_mcmc_steps`` and ``step_size`` count):

* ``proposal="prior"``: regenerate one block from the prior given the rest. The blocks
  are the global latent sites (one each) and, with ``regenerate="all"`` (default) or
  ``"steps"``, the steps s = 0..t taken so far (all latent sites of step s at once).
  A block is chosen uniformly (monad-bayes' ``mhTrans`` picks a random choice uniformly).
  Regenerating a global site is :func:`~ppl.inference.trace_mh.regenerate_site_step` on the
  program *conditioned on the path* (:func:`conditioned_on_path`, whose only latent sites
  are the globals and whose ``factor`` is the path's log density up to t); regenerating
  step s redraws x_s ~ m_theta(x_{s-1}, .) with x_{s+1:t} kept, ``log a`` = the change of
  the log joint minus that of the regenerated step's transition density
  (:func:`regenerate_step_move`).
* ``proposal="random_walk"``: :func:`~ppl.inference.trace_mh.random_walk_step` on the
  unconstrained globals of the conditioned program (continuous globals only).
* a program ``proposal(current_global_values, *args, **kwargs)`` sampling some global
  sites: :func:`~ppl.inference.trace_mh.program_step` on the conditioned program.

Static programs (no ``markov``) raise :class:`UnsupportedModelError` pointing to
``infer.tempered_smc`` (or ``infer.mh``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from ppl.inference.base import CompiledRuns, check_key, check_option
from ppl.inference.data_annealing import (
    AnnealedOutput,
    annealed_posterior,
    calls_markov,
    run_annealed_smc,
)
from ppl.inference.engine import FeynmanKac, run_particles
from ppl.inference.filtering import (
    SMC,
    GenealogyCollector,
    SMCOutput,
    _state_space,
    replay_lineages,
    smc_output,
    smc_posterior,
)
from ppl.inference.local_moves import (
    initial_site_move,
    markov_layout,
    path_step_move,
    previous_carry,
)
from ppl.inference.resampling import get_scheme
from ppl.inference.sharding import to_host
from ppl.inference.trace_mh import (
    MH,
    metropolis_hastings,
    program_step,
    random_walk_step,
    regenerate_site_step,
)
from ppl.semantics.sequential import StateSpace, replay_key
from ppl.semantics.trace import LATENT, record

from ppl import primitives
from ppl.errors import ArgumentTypeError, UnsupportedModelError
from ppl.posterior import Posterior

__all__ = [
    "RMSMC",
    "PathScore",
    "conditioned_on_path",
    "empty_paths",
    "global_move",
    "move_particle",
    "path_log_joint",
    "regenerate_step_move",
    "rejuvenate",
    "rmsmc",
    "run_rmsmc",
]

REGENERATE = ("all", "globals", "steps")
#: Name of the factor site carrying the path's log density in :func:`conditioned_on_path`.
PATH_FACTOR = "_rmsmc_path_log_joint"


# --------------------------------------------------------------------------- the target


class PathScore(NamedTuple):
    """A (possibly partly regenerated) path scored up to step t."""

    path: dict  # site -> (T, ...)
    log_joint: jnp.ndarray  # sum_{s<=t} log m(x_{s-1}, x_s) + log g(x_s, y_s)
    log_transition: jnp.ndarray  # log m at the regenerated step (0 if none)
    carry: object  # the carry after step t


def _where(pred, a, b):
    return jax.tree.map(lambda x, y: jnp.where(pred, x, jnp.asarray(y, jnp.result_type(x))), a, b)


def path_log_joint(ssm: StateSpace, path: dict, t, at=-1, key=None) -> PathScore:
    """Score ``path`` up to step ``t`` with a masked ``lax.scan`` over all T steps.

    Step s <= t contributes ``log m_theta(x_{s-1}, x_s) + log g_theta(x_s, y_s)``
    (:meth:`StateSpace.replay_step`); steps after t contribute 0 and leave the carry
    alone. ``log_transition`` is ``log m`` at step ``at``. With a ``key``, step ``at`` is
    redrawn from the transition (:meth:`StateSpace.step`) instead of replayed and the
    later steps are replayed from the new carry (the single-step regeneration of
    monad-bayes' ``mhTrans``)."""

    def body(carry, step):
        s, key_s = step
        result = ssm.replay_step(s, carry, jax.tree.map(lambda a: a[s], path))
        here = s == at
        if key is not None:
            result = _where(here, ssm.step(key_s, s, carry), result)
        active = s <= t
        log_joint = jnp.where(active, result.log_weight + result.log_transition, 0.0)
        log_transition = jnp.where(here, result.log_transition, 0.0)
        carry = _where(active, result.carry, carry)
        return carry, (result.values, log_joint, log_transition)

    keys = jax.random.split(replay_key() if key is None else key, ssm.num_steps)
    steps = (jnp.arange(ssm.num_steps), keys)
    carry, (values, log_joint, log_transition) = jax.lax.scan(body, ssm.init, steps)
    values = jax.tree.map(lambda new, old: new.astype(old.dtype), values, path)
    return PathScore(values, log_joint.sum(), log_transition.sum(), carry)


def conditioned_on_path(model, path: dict, t):
    """The program ``model`` with its ``markov`` call replaced by ``factor(log p(x_{1:t},
    y_{1:t} | theta))`` for the fixed ``path``: a static program whose latent sites are the
    globals and whose density is the target p_t as a function of theta. The step sites are
    hidden from the handlers outside (``numpyro.handlers.block``)."""

    def program(*args, **kwargs):
        def score_path(step, init, xs, num_steps):
            ssm = StateSpace(step, init, xs, num_steps, globals_trace=None)
            score = numpyro.handlers.block(path_log_joint)(ssm, path, t)
            primitives.factor(PATH_FACTOR, score.log_joint)

        with primitives.stub_markov(score_path):
            return model(*args, **kwargs)

    return program


def empty_paths(model, args, kwargs, num_particles: int) -> dict:
    """Zero arrays ``site -> (N, T, ...)`` for the latent sites of one markov step."""
    ssm = _state_space(model, args, kwargs)
    values = jax.eval_shape(lambda: ssm.step(replay_key(), 0, ssm.init).values)
    return {
        n: jnp.zeros((num_particles, ssm.num_steps, *v.shape), v.dtype) for n, v in values.items()
    }


# --------------------------------------------------------------------------- moves


class Move(NamedTuple):
    """One particle after one MH move."""

    params: dict
    path: dict
    accepted: jnp.ndarray
    accept_prob: jnp.ndarray


def global_move(key, params, path, t, model, args, kwargs, proposal, step_size=0.5,
                index=None) -> Move:
    """An MH move of the global sites, targeting p_t: a kernel of :mod:`ppl.inference.trace_mh`
    on :func:`conditioned_on_path`. ``proposal="prior"`` regenerates the global site
    ``index`` (uniform if None); ``"random_walk"`` and programs as in ``mh``."""
    program = conditioned_on_path(model, path, t)
    trace = record(program, replay_key(), args, kwargs, substitutions=params)[1]
    if proposal == "prior":
        if index is None:
            index = jax.random.randint(key, (), 0, len(trace.latent_names))
            key = jax.random.fold_in(key, 1)
        result = regenerate_site_step(key, trace, index, args, kwargs, program)
    elif proposal == "random_walk":
        result = random_walk_step(key, trace, args, kwargs, program, step_size)
    else:
        result = program_step(key, trace, args, kwargs, program, proposal)
    return Move(result.trace.select(LATENT), path, result.accepted, result.accept_prob)


def regenerate_step_move(key, params, path, t, model, args, kwargs, s, local=False) -> Move:
    """MH regenerating the latent sites of step ``s <= t`` from the transition given the
    rest: ``log a = [log p_t(x') - log m(x'_s)] - [log p_t(x) - log m(x_s)]`` (the
    proposal density cancels the regenerated step's own transition term; Wingate et al.
    2011, section 3). Two masked scans, O(T); with ``local`` (the program's carry does not
    flow, :func:`~ppl.inference.local_moves.markov_layout`) the same ratio from step s's
    Markov blanket (:func:`~ppl.inference.local_moves.path_step_move`), O(1)."""
    ssm = _state_space(model, args, kwargs, params=params)
    key_prop, key_accept = jax.random.split(key)
    if local:
        proposed, log_alpha = path_step_move(key_prop, ssm, path, s, t)
        result = metropolis_hastings(key_accept, path, proposed, log_alpha)
        return Move(params, result.trace, result.accepted, result.accept_prob)
    old = path_log_joint(ssm, path, t, at=s)
    new = path_log_joint(ssm, path, t, at=s, key=key_prop)
    log_alpha = (new.log_joint - new.log_transition) - (old.log_joint - old.log_transition)
    result = metropolis_hastings(key_accept, path, new.path, log_alpha)
    return Move(params, result.trace, result.accepted, result.accept_prob)


def initial_global_move(key, params, path, t, model, args, kwargs, sites, index) -> Move:
    """MH regenerating the global site ``sites[index]``, one the step does not read (part
    of the time-0 state), from its prior: O(1) in T
    (:func:`~ppl.inference.local_moves.initial_site_move`)."""
    key_prop, key_accept = jax.random.split(key)

    def branch(site):
        return lambda k: initial_site_move(k, model, args, kwargs, params, path, site, t)

    proposed, log_alpha = jax.lax.switch(index, [branch(s) for s in sites], key_prop)
    result = metropolis_hastings(key_accept, params, proposed, log_alpha)
    return Move(result.trace, path, result.accepted, result.accept_prob)


def move_particle(key, params, path, t, model, args, kwargs, move: MH, regenerate: str,
                  num_globals: int, layout=None) -> Move:
    """One MH move of one particle targeting p_t (see the module docstring); with a
    ``layout`` (:func:`~ppl.inference.local_moves.markov_layout`), step moves and moves of
    global sites the step does not read cost O(1) in T."""
    if move.proposal != "prior":
        return global_move(key, params, path, t, model, args, kwargs, move.proposal,
                           move.step_size)
    key_block, key_global, key_step = jax.random.split(key, 3)
    first = num_globals if regenerate == "steps" else 0
    last = num_globals if regenerate == "globals" else num_globals + t + 1
    block = jax.random.randint(key_block, (), first, last)
    local = layout is not None
    if regenerate == "steps" or not num_globals:
        return regenerate_step_move(key_step, params, path, t, model, args, kwargs,
                                    block - num_globals, local)
    index = jnp.minimum(block, num_globals - 1)
    if local and set(layout.initial_sites) == set(layout.global_sites):
        g = initial_global_move(key_global, params, path, t, model, args, kwargs,
                                layout.global_sites, index)
    else:
        g = global_move(key_global, params, path, t, model, args, kwargs, "prior",
                        index=index)
    if regenerate == "globals":
        return g
    x = regenerate_step_move(key_step, params, path, t, model, args, kwargs,
                             block - num_globals, local)
    return _where(block < num_globals, g, x)


def rejuvenate(key, params, paths, t, model, args, kwargs, move: MH, regenerate: str,
               num_globals: int, num_particles: int, layout=None):
    """``move.num_mcmc_steps`` MH moves of every particle (``vmap`` over particles, ``lax.scan``
    over moves); returns ``(params, paths, carries, accepted fraction, accept prob)``, the
    carries recomputed after step t from the moved particles."""

    def one(k, params_n, path_n):
        def body(state, k_m):
            m = move_particle(k_m, *state, t, model, args, kwargs, move, regenerate,
                              num_globals, layout)
            return (m.params, m.path), (m.accepted, m.accept_prob)

        (params_n, path_n), (accepted, prob) = jax.lax.scan(
            body, (params_n, path_n), jax.random.split(k, move.num_mcmc_steps)
        )
        ssm = _state_space(model, args, kwargs, params=params_n)
        if layout is None:
            carry = path_log_joint(ssm, path_n, t).carry
        else:  # the carry after step t is a function of step t's values alone
            carry = previous_carry(ssm, path_n, t + 1)
        return params_n, path_n, carry, accepted.astype(prob.dtype).mean(), prob.mean()

    return jax.vmap(one)(jax.random.split(key, num_particles), params, paths)


# --------------------------------------------------------------------------- driver


class RMSMCOutput(NamedTuple):
    """One resample-move SMC run: SMC's output plus the moves' acceptance per step."""

    smc: SMCOutput
    accept_rate: jnp.ndarray  # (T,) fraction of accepted moves at each step
    accept_prob: jnp.ndarray  # (T,) mean acceptance probability at each step
    moved: jnp.ndarray  # (T,) whether step t moved its particles (not at t = 0 without
    # global sites to move)


def _markov_program_info(model, args, kwargs):
    """``(num_steps, global latent site names)``; a clear error for a static program."""
    calls = []

    with primitives.stub_markov(lambda step, init, xs, num_steps: calls.append(num_steps)):
        record(model, replay_key(), args, kwargs)
    if not calls:
        raise UnsupportedModelError(
            "rmsmc runs on programs with a ppl.markov call (a state-space model); this "
            "program has none. For a static program use infer.tempered_smc(num_particles, "
            "move=infer.mh(...)) or infer.mh(...)"
        )
    ssm = _state_space(model, args, kwargs)
    return ssm.num_steps, tuple(ssm.globals.latent_names)


def _check_move_sites(move: MH, regenerate: str, global_sites):
    if global_sites:
        return
    if move.proposal != "prior":
        raise UnsupportedModelError(
            f"rmsmc: move=mh(proposal={move.proposal!r}) moves the global latent sites (those "
            "before the ppl.markov call) and this program has none; use proposal='prior' "
            "with regenerate='steps' or 'all'"
        )
    if regenerate == "globals":
        raise UnsupportedModelError(
            "rmsmc(regenerate='globals'): this program has no global latent site (before "
            "the ppl.markov call) to regenerate; use regenerate='steps' or 'all'"
        )


def rejuvenation(model, args, kwargs, move: MH, regenerate: str, num_globals: int,
                 num_particles: int, layout=None):
    """The engine move of resample-move SMC (``move`` of
    :func:`~ppl.inference.engine.smc_step`): at step t, after resampling, every particle
    makes ``move.num_mcmc_steps`` MH moves (:func:`rejuvenate`) invariant for the target
    of step t-1, p_{t-1}(theta, x_{0:t-1} | y_{0:t-1}), and its carry is rebuilt from the
    moved path. At t = 0 only the global sites can move (none with ``regenerate="steps"``
    or without global latent sites: the move is then skipped). Reports ``(accepted
    fraction, acceptance probability, moved)``."""
    moves_at_start = num_globals > 0 and regenerate != "steps"

    def apply(key, t, state, parents, resampled):
        params, paths, carries, accepted, prob = rejuvenate(
            key, parents.params, parents.paths, t - 1, model, args, kwargs, move, regenerate,
            num_globals, num_particles, layout,
        )
        moved = parents._replace(params=params, paths=paths, carry=carries)
        active = jnp.asarray(True) if moves_at_start else t > 0
        if not moves_at_start:
            moved = jax.tree.map(lambda a, b: jnp.where(active, a, b), moved, parents)
        return moved, (accepted.mean(), prob.mean(), active)

    return apply


class _WithMoves:
    """A collector that records what the engine's collector records plus the move's
    report at every step."""

    def __init__(self, inner):
        self.inner = inner
        self.uses_key = inner.uses_key

    def init(self, fk, state):
        return self.inner.init(fk, state)

    def step(self, key, t, carry, prev, out, new):
        carry, record_t = self.inner.step(key, t, carry, prev, out, new)
        return carry, (record_t, out.move_info)


def run_rmsmc(key, model, args, kwargs, num_particles, move: MH, scheme="systematic",
              ess_threshold=0.5, proposal=None, regenerate="all", mesh=None,
              progress_bar=False) -> RMSMCOutput:
    """Resample-move SMC (Gilks & Berzuini 2001) as a composition over the engine: the
    time driver :func:`~ppl.inference.engine.run_particles` with the particles carrying
    their paths (a path buffer, permuted by resampling), the :func:`rejuvenation` move
    after every resampling, and SMC's genealogy collector. So ``info["ancestors"][t]``
    means what it means for :func:`~ppl.inference.filtering.smc`: step t resamples the
    particles of step t-1, moves them, then propagates. ``mesh`` (a
    :func:`ppl.inference.sharding.particle_mesh`) splits the particles, with their paths,
    across its devices. ``progress_bar`` shows a tqdm bar over the time steps."""
    _, global_sites = _markov_program_info(model, args, kwargs)
    _check_move_sites(move, regenerate, global_sites)
    fk = FeynmanKac(model, args, kwargs)
    layout = markov_layout(model, args, kwargs)[0] if move.block == "step" else None
    rejuvenate_step = rejuvenation(model, args, kwargs, move, regenerate, len(global_sites),
                                   num_particles, layout)
    run = run_particles(key, fk, num_particles, scheme, ess_threshold,
                        _WithMoves(GenealogyCollector(True, proposal)), proposal, mesh=mesh,
                        progress_bar=progress_bar, desc="rmsmc", move=rejuvenate_step,
                        paths=empty_paths(model, args, kwargs, num_particles))
    records, (accepted, prob, active) = run.records
    final = run.final
    replayed = replay_lineages(model, args, kwargs, final.params, final.paths)
    out = smc_output(run, records, final.paths, replayed)
    return RMSMCOutput(out, accepted, prob, active)


# --------------------------------------------------------------------------- combinator


class RMSMC:
    """``rmsmc(num_particles, move, resample, ess_threshold, proposal, regenerate)``; see
    :func:`rmsmc`."""

    def __init__(self, num_particles: int, move=None, resample="systematic",
                 ess_threshold=0.5, proposal=None, regenerate="all", devices=None,
                 progress_bar=False, batch_size=1):
        base = SMC(num_particles, resample, ess_threshold, proposal,
                   devices=devices, batch_size=batch_size)  # checks the options
        self.batch_size = base.batch_size
        self.num_particles = base.num_particles
        self.resample = base.resample
        self.ess_threshold = base.ess_threshold
        self.proposal = base.proposal
        self.devices, self.mesh = devices, base.mesh
        if move is None:
            move = MH(num_mcmc_steps=1)
        if not isinstance(move, MH):
            raise ArgumentTypeError(f"move must be an infer.mh(...) combinator, got {move!r}")
        self.move = move
        self.regenerate = check_option("regenerate", regenerate, REGENERATE)
        self.progress_bar = bool(progress_bar)
        get_scheme(self.resample)
        self._runs = CompiledRuns(self.core)

    def core(self, key, model, args, kwargs) -> RMSMCOutput:
        """The pure, jittable run (:func:`run_rmsmc` with this combinator's options; on a
        static program, IBIS: :func:`~ppl.inference.data_annealing.run_annealed_smc`
        with this move)."""
        if not calls_markov(model, args, kwargs):
            if self.proposal is not None or self.regenerate != "all":
                raise UnsupportedModelError(
                    "rmsmc(proposal=...) and rmsmc(regenerate=...) are about a ppl.markov "
                    "program's steps; this program does not call ppl.markov"
                )
            return run_annealed_smc(key, model, args, kwargs, self.num_particles,
                                    self.resample, self.ess_threshold, self.move,
                                    self.batch_size, self.mesh, self.progress_bar, "rmsmc")
        return run_rmsmc(key, model, args, kwargs, self.num_particles, self.move,
                         self.resample, self.ess_threshold, self.proposal, self.regenerate,
                         mesh=self.mesh, progress_bar=self.progress_bar)

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run resample-move SMC on ``model(*args, **kwargs)`` (one ``ppl.markov`` call
        after its global sites) and return a weighted :class:`~ppl.Posterior`."""
        result = to_host(self._runs(check_key(key), model, args, kwargs))
        if isinstance(result, AnnealedOutput):
            info = {"num_particles": self.num_particles, "resample": self.resample,
                    "ess_threshold": self.ess_threshold, "move": repr(self.move),
                    "batch_size": self.batch_size}
            return annealed_posterior(result, "rmsmc", info)
        accept_rate = np.asarray(result.accept_rate)
        moved = np.asarray(result.moved)
        info = {
            "accept_rate": float(accept_rate[moved].mean()) if moved.any() else np.nan,
            "accept_rate_per_step": accept_rate,
            "accept_prob_per_step": np.asarray(result.accept_prob),
            "num_particles": self.num_particles,
            "resample": self.resample,
            "ess_threshold": self.ess_threshold,
            "move": repr(self.move),
            "regenerate": self.regenerate,
        }
        return smc_posterior(result.smc, "rmsmc", info)

    def __repr__(self):
        return (
            f"rmsmc(num_particles={self.num_particles}, move={self.move!r}, "
            f"resample={self.resample!r}, ess_threshold={self.ess_threshold}, "
            f"proposal={self.proposal!r}, regenerate={self.regenerate!r})"
        )


def rmsmc(num_particles: int, move=None, resample="systematic", ess_threshold=0.5,
          proposal=None, regenerate="all", devices=None, progress_bar=False,
          batch_size=1) -> RMSMC:
    """Resample-move SMC (Gilks & Berzuini 2001; monad-bayes' ``rmsmc``) over a program
    with one ``ppl.markov`` call.

    Each step advances the ``num_particles`` particles (bootstrap, or the guided
    ``proposal(t, carry, x)`` as in :func:`ppl.inference.filtering`), resamples when the ESS
    falls below ``ess_threshold * num_particles`` (``resample`` scheme), then applies
    ``move.num_mcmc_steps`` MH moves to every particle, each invariant for the posterior of
    the globals and the path so far (``move`` defaults to ``infer.mh(num_mcmc_steps=1)``;
    only its ``proposal``, ``num_mcmc_steps`` and ``step_size`` count). With
    ``proposal="prior"`` a move regenerates one block chosen uniformly: a global latent site
    or one past step (``regenerate="all"``, monad-bayes), a global site only
    (``"globals"``) or a step only (``"steps"``). ``"random_walk"`` and proposal programs
    move the globals.

    ``.run(key, model, *args, **kwargs)`` returns a weighted :class:`~ppl.Posterior` laid
    out as :func:`ppl.inference.filtering`'s (globals (N, ...), paths (N, T, ...), final log
    weights with ``logsumexp - log N == log_evidence``), with ``info`` as SMC's plus
    ``accept_rate`` (overall fraction of accepted moves), ``accept_rate_per_step`` and
    ``accept_prob_per_step`` (T,). Here ``ancestors[t]`` and ``resampled[t]`` describe
    the resampling *after* step t, and ``filter_log_weights[t]`` / ``particles[t]`` the
    weighted particles before it.

    On a static program (no ``ppl.markov``) this is IBIS (Chopin 2002): data-annealed SMC
    (:func:`ppl.inference.smc`, ``batch_size`` observation units per step) where, after
    every resampling, each particle makes ``move.num_mcmc_steps`` MH moves invariant for
    the posterior of the observations so far. With ``proposal="random_walk"`` the walk is
    scaled to the particles (covariance ``h^2`` times theirs, ``h = 2.38 / sqrt(D)`` at
    ``infer.mh``'s default ``step_size`` of 0.5, in proportion to it otherwise, as in
    tempered SMC); ``"prior"`` regenerates one latent site (discrete sites too) and a proposal
    program proposes as in :func:`ppl.inference.mh`. ``info`` then has ``ess``,
    ``resampled``, ``log_evidence_increments``, ``accept_rate`` and
    ``accept_rate_per_step`` (NaN where no move ran).
    ``devices="all"`` (or a list of devices) splits the particles and their paths across
    devices (:mod:`ppl.inference.sharding`; ``num_particles`` a multiple of their number).
    ``progress_bar=True`` shows a tqdm bar over the time steps without leaving jit.
    """
    return RMSMC(num_particles, move, resample, ess_threshold, proposal, regenerate, devices,
                 progress_bar, batch_size)
