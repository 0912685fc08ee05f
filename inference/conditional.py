"""Conditional SMC and particle Gibbs for the states of a ``ppl.markov`` program.

Given fixed global sites ``params`` (the ``fixed=`` option: the parameters theta of the
state-space model read by :class:`~ppl.semantics.Sequential`), the *conditional* SMC
kernel (Andrieu, Doucet & Holenstein 2010, "Particle Markov chain Monte Carlo methods",
JRSS B 72(3), section 2.4.3 and Appendix: the conditional SMC update) runs a bootstrap
particle filter in which one particle is frozen to a *reference path* x*_{0:T-1}; a new
path is then drawn from the particle system, either by ancestor tracing (the original
particle Gibbs sampler) or by backward sampling (Whiteley 2010, discussion of Andrieu et
al.; Lindsten & Schön 2013, "Backward simulation methods for Monte Carlo statistical
inference", Found. Trends ML 6(1), Algorithm 5 "PG with backward simulation"). Either way
the kernel leaves the smoothing distribution p(x_{0:T-1} | y, theta) invariant, so
iterating it is a Gibbs sampler for the states: ``infer.csmc(...).run`` returns the chain
of paths.

Index convention
----------------
The reference path occupies particle index ``REFERENCE_INDEX = 0`` at every step: its
ancestor at step t is particle 0 of step t-1 (``ancestors[t, 0] == 0``) and its values at
step t are the reference's. The other N-1 particles are resampled multinomially from all N
(the reference included) and moved by the transition, as in Andrieu et al. (2010) with
their index N moved to 0 (Chopin & Papaspiliopoulos 2020, *An Introduction to SMC*,
Algorithm 12.1 uses index 1: the position is immaterial under multinomial resampling).

Time steps are 0-based: step ``t`` (t = 0..T-1) maps the carry c_{t-1} to c_t, with
c_{-1} the ``init`` carry of the ``markov`` call. A global site the step does not read
(``x0`` in ``markov(step, init=x0)``) is the state at time 0: each particle draws it from
its prior (M0 of :class:`~ppl.inference.engine.FeynmanKac`), the reference keeps its own,
and the backward pass goes down to the initial particles. A *path* is a dict: each step
latent site -> array (T, ...) and each time-0 state site -> its value, the layout of one
draw of ``Posterior.samples`` of :func:`smc`.

Backward sampling and the Markov assumption
-------------------------------------------
Backward sampling (and PaRIS, :mod:`ppl.inference.smoothing`) treat the carry as the Markov
state: the backward kernel at step t weighs particle k of step t-1 by
``w_{t-1}^k m(c_{t-1}^k, x_t)``, which is right when the new carry and the step's
likelihood g depend on the previous carry only through the step's latent values (as in
every model of the zoo: ``x = sample(...); observe(..., x); return x``). Every forward
step checks this cheaply by replaying each particle's values from another particle's
previous carry (``markov_gap``); ``run`` raises a clear error when it fails.

The algorithm is a composition over the particle engine (:mod:`ppl.inference.engine`):

* :func:`conditional_model` — the program as a Feynman–Kac model given ``fixed``;
* :func:`csmc_sweep` — the engine's time driver with conditional resampling (the engine's
  ``resample(conditional=True)`` and ``propagate`` with the reference replayed) and the
  :class:`SweepCollector`, which keeps the particle system;
* :func:`ancestor_path`, :func:`backward_path` — a new path from a sweep (categorical draws
  of :func:`ppl.inference.resampling.categorical`, backward weights of the engine);
* :func:`csmc_kernel` — one particle Gibbs update reference -> new reference;
* :func:`run_particle_gibbs` — the chain (``lax.scan`` over iterations).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ppl.inference.base import (
    CompiledRuns,
    check_count,
    check_key,
    check_option,
    check_sweeps,
)
from ppl.inference.engine import (
    REFERENCE_INDEX,
    FeynmanKac,
    ParticleState,
    RunOutput,
    backward_log_weights,
    markov_gap,
    run_particles,
    take,
)
from ppl.inference.kernels import sample_chain
from ppl.inference.resampling import categorical
from ppl.semantics.trace import LATENT, PARAM

from ppl.errors import (
    ArgumentTypeError,
    NonFiniteWeightError,
    ShapeMismatchError,
    UnsupportedModelError,
)
from ppl.posterior import Posterior

__all__ = [
    "CSMC",
    "REFERENCE_INDEX",
    "SweepCollector",
    "SweepRecord",
    "ancestor_path",
    "backward_path",
    "check_markov_gap",
    "check_reference",
    "conditional_model",
    "csmc",
    "csmc_kernel",
    "csmc_sweep",
    "global_values",
    "path_at",
    "path_shapes",
    "run_particle_gibbs",
]

#: Relative tolerance of the Markov-state check (:func:`markov_gap`).
MARKOV_TOLERANCE = 1e-4
NEW_PATHS = ("backward", "ancestor")


# --------------------------------------------------------------------------- model


def conditional_model(model, args, kwargs, fixed=None, who="csmc") -> FeynmanKac:
    """The :class:`~ppl.inference.engine.FeynmanKac` model of ``model(*args, **kwargs)``
    given the global sites held ``fixed`` (a dict site -> value): the smoothers' reading.

    Smoothing is conditional on the parameters, so every global latent site the markov
    step reads must be fixed: a missing one raises :class:`UnsupportedModelError` naming it
    (static, at trace time). A global site the step does not read (the initial state, as
    ``x0`` in ``markov(step, init=x0)``) is drawn per particle from its prior: it is the
    state at time 0 and part of every path. ``ppl.param`` sites keep their ``init`` value
    unless ``fixed`` gives them one."""
    return FeynmanKac(model, args, kwargs, fixed=fixed, states_only=True, who=who)


def global_values(fk: FeynmanKac) -> dict:
    """The values of the held global latent and ``ppl.param`` sites: the ``params`` dict
    the user's functional receives (the time-0 state sites are not among them)."""
    values = fk.shared.globals.select(LATENT, PARAM)
    return {n: v for n, v in values.items() if n not in fk.per_particle}


def path_shapes(fk: FeynmanKac) -> dict:
    """``site -> ShapeDtypeStruct`` of a path: each step latent site (T, ...) and each
    time-0 state site (...)."""
    steps = {n: jax.ShapeDtypeStruct((fk.num_steps, *v.shape), v.dtype)
             for n, v in fk.step_shapes().items()}
    initial = {n: jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v))
               for n, v in fk.shared.globals.values.items() if n in fk.per_particle}
    return {**initial, **steps}


def check_reference(fk: FeynmanKac, reference, who="csmc"):
    """Raise a clear error unless ``reference`` is a path of this program: a dict with
    exactly the step's latent sites, each (T, *site_shape), and the time-0 state sites.
    Returns it with arrays cast to the sites' dtypes."""
    shapes = path_shapes(fk)
    if not isinstance(reference, dict):
        raise ArgumentTypeError(
            f"{who}: reference must be a dict site -> array (step sites (T, ...), time-0 "
            f"state sites as drawn), got {type(reference).__name__}"
        )
    if set(reference) != set(shapes):
        raise ShapeMismatchError(
            f"{who}: reference has site(s) {sorted(reference)} but a path of the program "
            f"has site(s) {sorted(shapes)}"
        )
    out = {}
    for name, spec in shapes.items():
        value = jnp.asarray(reference[name], dtype=spec.dtype)
        if value.shape != spec.shape:
            raise ShapeMismatchError(
                f"{who}: reference site '{name}' has shape {value.shape}, expected "
                f"{spec.shape} (T = {fk.num_steps} steps)"
            )
        out[name] = value
    return out


# --------------------------------------------------------------------------- sweep


class SweepRecord(NamedTuple):
    """What a conditional sweep keeps at every step (leading axis T): the population
    before the step (for t = 0 the initial one), the ancestors and the new latent values."""

    prev: ParticleState  # (T, N, ...) the population of step t-1, normalised weights
    ancestors: jnp.ndarray  # (T, N)
    values: dict  # site -> (T, N, ...)
    markov_gap: jnp.ndarray  # (T,)


class SweepCollector:
    """The engine collector of conditional SMC: the whole particle system, for the path
    draws, and the Markov-state check of every step."""

    uses_key = False

    def __init__(self, fk: FeynmanKac):
        self.fk = fk

    def init(self, fk, state):
        return None

    def step(self, key, t, carry, prev, out, new):
        gap = markov_gap(self.fk, t, out.parents, out.result)
        return carry, SweepRecord(prev, out.ancestors, out.result.values, gap)


def csmc_sweep(key, fk: FeynmanKac, num_particles: int, reference=None) -> RunOutput:
    """The forward pass of conditional SMC (``reference`` a path) or of the bootstrap
    filter (``reference=None``): the engine's time driver resampling multinomially at
    every step, the reference at particle :data:`REFERENCE_INDEX`, with the
    :class:`SweepCollector`. ``records`` is a :class:`SweepRecord`."""
    return run_particles(key, fk, num_particles, "multinomial", 1.0,
                         SweepCollector(fk), reference=reference)


def _select(values, index):
    """``values[t][index[t]]`` for every step: site -> (T, ...)."""
    return jax.tree.map(lambda a: jax.vmap(lambda v, i: v[i])(a, index), values)


def path_at(run: RunOutput, index, first):
    """The path through the particles ``index`` (T,) whose time-0 state is initial
    particle ``first``: step sites (T, ...) and time-0 state sites."""
    return {**take(run.initial.params, first), **_select(run.records.values, index)}


def ancestor_path(key, run: RunOutput):
    """A new path by ancestor tracing: draw the final index from the final weights and
    follow the ancestors back to the initial particles (Andrieu et al. 2010, conditional
    SMC, last step; Kitagawa 1996). Returns ``(path, indices (T,))``."""
    last = categorical(key, run.final.log_weights)

    def body(b, ancestors_t):
        return ancestors_t[b], b

    first, index = jax.lax.scan(body, last, run.records.ancestors, reverse=True)
    return path_at(run, index, first), index


def backward_path(key, fk: FeynmanKac, run: RunOutput):
    """A new path by backward sampling: ``b_{T-1} ~ w_{T-1}``, then for t = T-1..0
    ``b_{t-1} ~ w_{t-1}^k m(c_{t-1}^k, x_t^{b_t})`` (the backward simulation smoother of
    Godsill, Doucet & West 2004; inside particle Gibbs, Whiteley 2010 and Lindsten & Schön
    2013, Algorithm 5), down to the initial particles, so the time-0 state is drawn too.
    O(N) per step. Returns ``(path, indices (T,))``."""
    key_last, key_back = jax.random.split(key)
    last = categorical(key_last, run.final.log_weights)
    records = run.records
    xs = (jnp.arange(fk.num_steps), jax.random.split(key_back, fk.num_steps), records.prev,
          records.values)

    def body(b, step):
        t, key_t, prev_t, values_t = step
        x_t = jax.tree.map(lambda a: a[b], values_t)
        b_prev = categorical(key_t, backward_log_weights(fk, t, prev_t, x_t))
        return b_prev, b

    first, index = jax.lax.scan(body, last, xs, reverse=True)
    return path_at(run, index, first), index


def csmc_kernel(key, fk: FeynmanKac, num_particles: int, reference, new_path="backward"):
    """One particle Gibbs update of the states: a conditional SMC sweep given
    ``reference`` (or a plain bootstrap sweep when ``reference`` is None, to start a
    chain), then a new path by ``new_path`` = ``"backward"`` (:func:`backward_path`) or
    ``"ancestor"`` (:func:`ancestor_path`). Returns ``(new path, RunOutput)``."""
    key_sweep, key_path = jax.random.split(key)
    run = csmc_sweep(key_sweep, fk, num_particles, reference)
    if new_path == "backward":
        path, _ = backward_path(key_path, fk, run)
    else:
        path, _ = ancestor_path(key_path, run)
    return path, run


class CSMCOutput(NamedTuple):
    """A particle Gibbs chain (the output of the jitted core)."""

    paths: dict  # site -> (num_samples, T, ...) (time-0 state sites (num_samples, ...))
    reference: dict  # the last path, to continue the chain
    log_evidence: jnp.ndarray  # (num_samples,) the sweeps' log evidence estimates
    markov_gap: jnp.ndarray  # largest Markov-state gap of all sweeps (0 when fine)


def run_particle_gibbs(key, model, args, kwargs, num_particles: int, num_samples: int,
                       num_warmup=0, new_path="backward", fixed=None,
                       reference=None, progress_bar=False) -> CSMCOutput:
    """Particle Gibbs for the states (Andrieu, Doucet & Holenstein 2010, section 2.4.3):
    ``num_warmup + num_samples`` iterations of the kernel :func:`csmc_kernel` run by the
    chain driver (:func:`ppl.inference.kernels.sample_chain`), keeping the last
    ``num_samples`` paths. Without ``reference`` the chain starts from a
    path drawn from an unconditional bootstrap sweep. Pure and jittable; ``fixed`` holds
    the global latent sites the step reads (see :func:`conditional_model`);
    ``progress_bar`` shows a tqdm bar over the sweeps
    (:func:`~ppl.inference.progress.progress_scan`)."""
    fk = conditional_model(model, args, kwargs, fixed, who="csmc")
    key_init, key_chain = jax.random.split(key)
    gaps = []
    if reference is None:
        reference, run = csmc_kernel(key_init, fk, num_particles, None, new_path)
        gaps.append(jnp.max(run.records.markov_gap))
    else:
        reference = check_reference(fk, reference, who="csmc")

    def kernel(key_i, ref):
        path, run = csmc_kernel(key_i, fk, num_particles, ref, new_path)
        return path, (run.log_evidence, jnp.max(run.records.markov_gap))

    chain = sample_chain(key_chain, kernel, reference, num_samples, num_warmup,
                         progress_bar=progress_bar, desc="csmc")
    log_z, gap = chain.infos
    gaps += [jnp.max(gap), jnp.max(chain.warmup_infos[1], initial=0.0)]
    return CSMCOutput(
        paths=chain.states,
        reference=chain.final_state,
        log_evidence=log_z,
        markov_gap=jnp.max(jnp.stack(gaps)),
    )


def check_markov_gap(gap, who):
    """Raise :class:`UnsupportedModelError` when a sweep found that a step's new carry or
    likelihood depends on the previous carry other than through its latent values."""
    gap = float(np.max(np.asarray(gap)))
    if not gap <= MARKOV_TOLERANCE:
        raise UnsupportedModelError(
            f"{who}: the markov step's returned carry or its observe/factor terms depend on "
            f"the previous carry other than through the step's latent sites (relative "
            f"change {gap:.3g} when a particle's values are replayed from another "
            f"particle's carry); backward sampling and PaRIS need the carry to be the "
            f"Markov state: return the step's latent values (or a function of them only) "
            f"as the carry, or use new_path='ancestor'"
        )


# --------------------------------------------------------------------------- combinator


class CSMC:
    """``csmc(num_particles, num_sweeps, num_warmup, ...)``; see :func:`csmc`."""

    def __init__(self, num_particles: int, num_sweeps=1000, num_warmup=100, num_chains=1,
                 new_path="backward", fixed=None, progress_bar=False):
        self.num_particles = check_count("num_particles", num_particles)
        self.num_sweeps, self.num_warmup = check_sweeps(num_sweeps, num_warmup)
        self.num_samples = self.num_sweeps - self.num_warmup  # kept paths per chain
        self.num_chains = check_count("num_chains", num_chains)
        self.new_path = check_option("new_path", new_path, NEW_PATHS)
        if fixed is not None and not isinstance(fixed, dict):
            raise ArgumentTypeError(f"fixed must be a dict global site -> value, got {fixed!r}")
        self.fixed = fixed
        self.progress_bar = bool(progress_bar)
        self._runs = CompiledRuns(self._chains)

    def core(self, key, model, args, kwargs, fixed=None, reference=None) -> CSMCOutput:
        """One chain (:func:`run_particle_gibbs` with this combinator's options); pure and
        jittable. ``fixed`` (default: the combinator's) holds the global latent sites;
        ``reference`` (a path, site -> (T, ...)) starts the chain from it."""
        fixed = self.fixed if fixed is None else fixed
        return run_particle_gibbs(key, model, args, kwargs, self.num_particles,
                                  self.num_samples, self.num_warmup, self.new_path,
                                  fixed=fixed, reference=reference,
                                  progress_bar=self.progress_bar)

    def _chains(self, key, model, args, kwargs):
        keys = jax.random.split(key, self.num_chains)
        return jax.vmap(lambda k: self.core(k, model, args, kwargs))(keys)

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run ``num_chains`` particle Gibbs chains on ``model(*args, **kwargs)`` and return
        the paths as an unweighted :class:`~ppl.Posterior` (chains of draws)."""
        out = self._runs(check_key(key), model, args, kwargs)
        if self.new_path == "backward":
            check_markov_gap(out.markov_gap, "csmc(new_path='backward')")
        log_z = np.asarray(out.log_evidence)
        if not np.all(np.isfinite(log_z)):
            raise NonFiniteWeightError(
                "csmc: a conditional SMC sweep had non-finite weights (every particle "
                "impossible under the data at some step, or a NaN log density)"
            )
        c, s = self.num_chains, self.num_samples
        samples = {n: np.asarray(v).reshape((c * s, *np.shape(v)[2:]))
                   for n, v in out.paths.items()}
        return Posterior(
            samples,
            num_chains=c,
            method="csmc",
            sample_stats={"sweep_log_evidence": log_z.reshape(c * s)},
            info={
                "reference": out.reference,
                "num_particles": self.num_particles,
                "new_path": self.new_path,
                "num_sweeps": self.num_sweeps,
                "num_warmup": self.num_warmup,
                "reference_index": REFERENCE_INDEX,
            },
        )

    def __repr__(self):
        return (
            f"csmc(num_particles={self.num_particles}, num_sweeps={self.num_sweeps}, "
            f"num_warmup={self.num_warmup}, num_chains={self.num_chains}, "
            f"new_path={self.new_path!r})"
        )


def csmc(num_particles: int, num_sweeps=1000, num_warmup=100, num_chains=1,
         new_path="backward", fixed=None, progress_bar=False):
    """Conditional SMC, iterated: particle Gibbs for the states of a ``ppl.markov``
    program (Andrieu, Doucet & Holenstein 2010).

    Each iteration runs a bootstrap filter with ``num_particles`` particles in which
    particle 0 is frozen to the current path (see the module docstring for the index
    convention) and draws the next path by ``new_path="backward"`` (backward sampling,
    Lindsten & Schön 2013, Algorithm 5; better mixing, O(N T)) or ``"ancestor"``
    (ancestor tracing, the original particle Gibbs). The chain leaves p(x | y, params)
    invariant; each chain makes ``num_sweeps`` sweeps, drops the paths of the first
    ``num_warmup`` and keeps the other ``num_sweeps - num_warmup``, for ``num_chains``
    independent chains (``vmap``); ``progress_bar=True`` shows a tqdm bar over the sweeps
    (one for all chains) without leaving jit.

    ``fixed`` (site -> value) holds the program's global latent sites (all of them must be
    given; the states are sampled given them). ``.run(key, model, *args, **kwargs)``
    returns an unweighted :class:`~ppl.Posterior` with every step latent site as a path
    ``(num_chains * (num_sweeps - num_warmup), T, ...)``; ``info["reference"]`` holds each
    chain's last path to continue from. ``.core(key, model, args, kwargs, fixed,
    reference)`` is the pure jittable chain for composition (particle Gibbs on parameters,
    PPG learning).
    """
    return CSMC(num_particles, num_sweeps, num_warmup, num_chains, new_path, fixed,
                progress_bar)
