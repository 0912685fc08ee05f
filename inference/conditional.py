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
c_{-1} the ``init`` carry of the ``markov`` call. A *path* is a dict step latent site ->
array of shape (T, ...), the layout of one draw of ``Posterior.samples`` of :func:`smc`.

Backward sampling and the Markov assumption
-------------------------------------------
Backward sampling (and PaRIS, :mod:`ppl.inference.smoothing`) treat the carry as the Markov
state: the backward kernel at step t weighs particle k of step t-1 by
``w_{t-1}^k m(c_{t-1}^k, x_t)``, which is right when the new carry and the step's
likelihood g depend on the previous carry only through the step's latent values (as in
every model of the zoo: ``x = sample(...); observe(..., x); return x``). Every forward
step checks this cheaply by replaying each particle's values from another particle's
previous carry (``markov_gap``); ``run`` raises a clear error when it fails.

Building blocks (each a pure function, jittable, with explicit keys):

* :func:`shared_state_space` — the program's state space with its global sites fixed;
* :func:`draw_indices` — categorical draws by inverse CDF (log weights in, indices out);
* :func:`conditional_ancestors` — resampling with the reference's ancestor frozen;
* :func:`propagate` — the bootstrap move of every particle, the reference replayed;
* :func:`forward_step` — resample, move, reweight (one step of the forward filter);
* :func:`csmc_sweep` — the forward pass over all steps (``lax.scan``);
* :func:`ancestor_path`, :func:`backward_path` — a new path from a sweep;
* :func:`csmc_kernel` — one particle Gibbs update reference -> new reference;
* :func:`run_particle_gibbs` — the chain (``lax.scan`` over iterations).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ppl.inference.base import (
    CompiledRuns,
    check_count,
    check_key,
    check_nonnegative,
    check_option,
)
from ppl.inference.filtering import _draw_step, _state_space, normalise
from ppl.inference.progress import progress_scan
from ppl.inference.resampling import get_scheme
from ppl.semantics.trace import LATENT, PARAM

from ppl.errors import NonFiniteWeightError, ShapeMismatchError, UnsupportedModelError
from ppl.posterior import Posterior

__all__ = [
    "CSMC",
    "REFERENCE_INDEX",
    "Population",
    "SweepRecord",
    "ancestor_path",
    "backward_path",
    "check_markov_gap",
    "check_reference",
    "conditional_ancestors",
    "csmc",
    "csmc_kernel",
    "csmc_sweep",
    "draw_indices",
    "forward_step",
    "global_values",
    "initial_population",
    "propagate",
    "run_particle_gibbs",
    "shared_state_space",
]

#: Particle index of the frozen reference path at every step (see the module docstring).
REFERENCE_INDEX = 0
#: Relative tolerance of the Markov-state check (:func:`markov_gap`).
MARKOV_TOLERANCE = 1e-4
NEW_PATHS = ("backward", "ancestor")


# --------------------------------------------------------------------------- state space


def shared_state_space(model, args, kwargs, params=None, who="csmc"):
    """The :class:`~ppl.semantics.sequential.StateSpace` of ``model(*args, **kwargs)`` with
    its global latent sites fixed to ``params`` (a dict site -> value), shared by every
    particle.

    Smoothing is conditional on the parameters, so every global latent site must be given:
    a missing one raises :class:`UnsupportedModelError` naming it (the check is static,
    made when the core is traced). ``ppl.param`` sites keep their ``init`` value unless
    ``params`` gives them one.
    """
    params = dict(params or {})
    ssm = _state_space(model, args, kwargs, params=params)
    missing = [n for n in ssm.globals.names(LATENT) if n not in params]
    if missing:
        raise UnsupportedModelError(
            f"{who}: the program draws global latent site(s) {missing} before its markov "
            f"call; smoothing is conditional on them: pass fixed={{...}} holding "
            f"{', '.join(repr(n) for n in missing)} (for Bayesian inference on them use "
            "particle Gibbs on the parameters or infer.pmmh)"
        )
    return ssm


def global_values(ssm) -> dict:
    """The values of the global latent and ``ppl.param`` sites: the ``params`` dict the
    user's functional receives."""
    return ssm.globals.select(LATENT, PARAM)


class Population(NamedTuple):
    """The particles of one step: carries (N, ...) and normalised log weights (N,)."""

    carry: object
    log_weights: jnp.ndarray


def initial_population(ssm, num_particles: int) -> Population:
    """N copies of the ``init`` carry with equal weights: the population "before step 0"
    (every particle of step 0 descends from the fixed x_{-1} = init)."""
    carry = jax.tree.map(
        lambda c: jnp.broadcast_to(c, (num_particles, *jnp.shape(c))), ssm.init
    )
    dtype = jnp.result_type(float)
    return Population(carry, jnp.full((num_particles,), -math.log(num_particles), dtype))


def step_sites(ssm):
    """``(names, shapes/dtypes)`` of the latent sites of one step (static: traced once)."""
    shapes = jax.eval_shape(
        lambda: ssm.step(jax.random.PRNGKey(0), 0, ssm.init).values
    )
    return shapes


def check_reference(ssm, reference, who="csmc"):
    """Raise a clear error unless ``reference`` is a path of this program: a dict with
    exactly the step's latent sites, each of shape (T, *site_shape). Returns it with
    arrays cast to the sites' dtypes."""
    shapes = step_sites(ssm)
    if not isinstance(reference, dict):
        raise TypeError(
            f"{who}: reference must be a dict step site -> (T, ...) array, got "
            f"{type(reference).__name__}"
        )
    if set(reference) != set(shapes):
        raise ShapeMismatchError(
            f"{who}: reference has site(s) {sorted(reference)} but a step of the program "
            f"has latent site(s) {sorted(shapes)}"
        )
    out = {}
    for name, spec in shapes.items():
        value = jnp.asarray(reference[name], dtype=spec.dtype)
        expected = (ssm.num_steps, *spec.shape)
        if value.shape != expected:
            raise ShapeMismatchError(
                f"{who}: reference site '{name}' has shape {value.shape}, expected "
                f"{expected} (T = {ssm.num_steps} steps)"
            )
        out[name] = value
    return out


# --------------------------------------------------------------------------- draws


def draw_indices(key, log_weights, shape=()):
    """Indices drawn i.i.d. from ``Categorical(softmax(log_weights))`` by inverting the
    CDF at uniforms (``O(N + M log N)``; weights normalised in log space first). A weight
    of zero is never drawn. Returns int32 of ``shape``."""
    lw = log_weights - jax.scipy.special.logsumexp(log_weights)
    cdf = jnp.cumsum(jnp.exp(lw))
    u = jax.random.uniform(key, shape, dtype=cdf.dtype) * cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right")
    return jnp.clip(idx, 0, lw.shape[0] - 1).astype(jnp.int32)


def conditional_ancestors(key, log_weights, conditional: bool, scheme="multinomial"):
    """Ancestor indices of one step: ``scheme`` resampling from the weights, and with
    ``conditional`` the reference's ancestor frozen (``a^0 = 0``; Andrieu et al. 2010,
    conditional SMC step 2(a)). Conditional resampling must be multinomial (the other
    N-1 ancestors i.i.d. from the weights); the combinators enforce it."""
    idx = get_scheme(scheme)(key, log_weights)
    if conditional:
        idx = idx.at[REFERENCE_INDEX].set(REFERENCE_INDEX)
    return idx


def _take(tree, idx):
    return jax.tree.map(lambda a: jnp.take(a, idx, axis=0), tree)


def propagate(key, ssm, t, carry, reference_t=None):
    """Move every particle one step through the transition (the bootstrap filter of
    Gordon, Salmond & Smith 1993); with ``reference_t`` (the reference's latent values at
    step t) particle :data:`REFERENCE_INDEX` is instead replayed with those values
    (conditional SMC, Andrieu et al. 2010, step 2(b)). Returns the batched
    :class:`~ppl.semantics.sequential.StepResult` (carry, values, log g, log m)."""
    n = jax.tree.leaves(carry)[0].shape[0]
    index = jnp.arange(n, dtype=jnp.uint32)
    result = jax.vmap(lambda i, c: _draw_step(ssm, key, i, t, c))(index, carry)
    if reference_t is None:
        return result
    ref = ssm.replay_step(t, _take(carry, REFERENCE_INDEX), reference_t)
    return jax.tree.map(
        lambda a, r: a.at[REFERENCE_INDEX].set(jnp.asarray(r, a.dtype)), result, ref
    )


def markov_gap(ssm, t, carry, result):
    """How far the step is from using the carry as its Markov state: replay particle n's
    values from particle n+1's previous carry and return the largest relative change of
    the new carry or of log g (0 when the step only reads the previous carry through
    its latent values, the assumption of backward sampling and PaRIS)."""
    shifted = jax.tree.map(lambda a: jnp.roll(a, -1, axis=0), carry)
    alt = jax.vmap(lambda c, v: ssm.replay_step(t, c, v))(shifted, result.values)

    def gap(a, b):
        a, b = jnp.asarray(a, jnp.result_type(float)), jnp.asarray(b, jnp.result_type(float))
        d = jnp.where(a == b, 0.0, jnp.abs(a - b) / (1.0 + jnp.abs(b)))
        return jnp.max(jnp.where(jnp.isnan(d), jnp.inf, d)) if d.size else jnp.zeros(())

    gaps = [gap(a, b) for a, b in zip(jax.tree.leaves(alt.carry),
                                      jax.tree.leaves(result.carry), strict=True)]
    gaps.append(gap(alt.log_weight, result.log_weight))
    return jnp.max(jnp.stack(gaps))


def forward_step(key, ssm, t, population: Population, reference_t=None,
                 scheme="multinomial"):
    """One step of the (conditional) bootstrap filter: resample every step
    (:func:`conditional_ancestors`), move (:func:`propagate`), reweight by g.

    Returns ``(ancestors, result, new population, l_t, gap)``: the previous population is
    kept by the caller (the backward kernel needs its weights). With resampling at every
    step the new weights are ``g`` normalised and ``l_t = logsumexp(log g) - log N``
    estimates log p(y_t | y_{0:t-1}) (Chopin & Papaspiliopoulos 2020, Algorithm 10.1)."""
    key_resample, key_move = jax.random.split(key)
    conditional = reference_t is not None
    ancestors = conditional_ancestors(key_resample, population.log_weights, conditional, scheme)
    carry = _take(population.carry, ancestors)
    result = propagate(key_move, ssm, t, carry, reference_t)
    log_w, total = normalise(result.log_weight)
    n = log_w.shape[0]
    gap = markov_gap(ssm, t, carry, result)
    return ancestors, result, Population(result.carry, log_w), total - math.log(n), gap


# --------------------------------------------------------------------------- sweep


class SweepRecord(NamedTuple):
    """One forward pass, stacked over the T steps (leading axis T)."""

    ancestors: jnp.ndarray  # (T, N)
    values: dict  # site -> (T, N, ...)
    carries: object  # (T, N, ...) carries after each step
    log_weights: jnp.ndarray  # (T, N) normalised filter weights
    log_evidence_increments: jnp.ndarray  # (T,)
    markov_gap: jnp.ndarray  # (T,)


def csmc_sweep(key, ssm, num_particles: int, reference=None) -> SweepRecord:
    """The forward pass of conditional SMC (``reference`` a path) or of the bootstrap
    filter (``reference=None``): :func:`forward_step` in a ``lax.scan`` over the steps,
    keeping the whole particle system for the path draws."""
    keys = jax.random.split(key, ssm.num_steps)
    steps = jnp.arange(ssm.num_steps)

    def body(population, xs):
        t, key_t, ref_t = xs
        ancestors, result, population, increment, gap = forward_step(
            key_t, ssm, t, population, ref_t
        )
        return population, SweepRecord(
            ancestors, result.values, result.carry, population.log_weights, increment, gap
        )

    _, record = jax.lax.scan(
        body, initial_population(ssm, num_particles), (steps, keys, reference)
    )
    return record


def _select(values, index):
    """``values[t][index[t]]`` for every step: site -> (T, ...)."""
    return jax.tree.map(lambda a: jax.vmap(lambda v, i: v[i])(a, index), values)


def ancestor_path(key, record: SweepRecord):
    """A new path by ancestor tracing: draw the final index from the final weights and
    follow the ancestors back (Andrieu et al. 2010, conditional SMC, last step; Kitagawa
    1996). Returns ``(path, indices (T,))``."""
    last = draw_indices(key, record.log_weights[-1])

    def body(b, ancestors_t):
        return ancestors_t[b], b

    _, index = jax.lax.scan(body, last, record.ancestors, reverse=True)
    return _select(record.values, index), index


def backward_log_weights_row(ssm, t, population: Population, values):
    """``log w_{t-1}^k + log m(c_{t-1}^k, x_t)`` for every particle k of the previous
    step: the (unnormalised) backward kernel of FFBS (Godsill, Doucet & West 2004, JASA 99)
    for one new state ``x_t`` (the step's latent ``values``)."""
    log_m = jax.vmap(lambda c: ssm.log_transition(t, c, values))(population.carry)
    return population.log_weights + log_m


def backward_path(key, ssm, record: SweepRecord):
    """A new path by backward sampling: ``b_{T-1} ~ w_{T-1}``, then for t = T-1..1
    ``b_{t-1} ~ w_{t-1}^k m(c_{t-1}^k, x_t^{b_t})`` (the backward simulation smoother of
    Godsill, Doucet & West 2004; inside particle Gibbs, Whiteley 2010 and Lindsten & Schön 2013,
    Algorithm 5). O(N) per step. Returns ``(path, indices (T,))``."""
    num_steps = record.log_weights.shape[0]
    key_last, key_back = jax.random.split(key)
    last = draw_indices(key_last, record.log_weights[-1])
    if num_steps == 1:
        index = last[None]
        return _select(record.values, index), index
    prev = Population(
        jax.tree.map(lambda a: a[:-1], record.carries), record.log_weights[:-1]
    )
    new_values = jax.tree.map(lambda a: a[1:], record.values)
    xs = (jnp.arange(1, num_steps), jax.random.split(key_back, num_steps - 1), prev, new_values)

    def body(b, step):
        t, key_t, prev_t, values_t = step
        x_t = jax.tree.map(lambda a: a[b], values_t)
        b_prev = draw_indices(key_t, backward_log_weights_row(ssm, t, prev_t, x_t))
        return b_prev, b_prev

    _, earlier = jax.lax.scan(body, last, xs, reverse=True)
    index = jnp.concatenate([earlier, last[None]])
    return _select(record.values, index), index


def csmc_kernel(key, ssm, num_particles: int, reference, new_path="backward"):
    """One particle Gibbs update of the states: a conditional SMC sweep given
    ``reference`` (or a plain bootstrap sweep when ``reference`` is None, to start a
    chain), then a new path by ``new_path`` = ``"backward"`` (:func:`backward_path`) or
    ``"ancestor"`` (:func:`ancestor_path`). Returns ``(new path, SweepRecord)``."""
    key_sweep, key_path = jax.random.split(key)
    record = csmc_sweep(key_sweep, ssm, num_particles, reference)
    if new_path == "backward":
        path, _ = backward_path(key_path, ssm, record)
    else:
        path, _ = ancestor_path(key_path, record)
    return path, record


class CSMCOutput(NamedTuple):
    """A particle Gibbs chain (the output of the jitted core)."""

    paths: dict  # site -> (num_samples, T, ...)
    reference: dict  # the last path: site -> (T, ...), to continue the chain
    log_evidence: jnp.ndarray  # (num_samples,) the sweeps' log evidence estimates
    markov_gap: jnp.ndarray  # largest Markov-state gap of all sweeps (0 when fine)


def run_particle_gibbs(key, model, args, kwargs, num_particles: int, num_samples: int,
                       num_warmup=0, new_path="backward", params=None,
                       reference=None, progress_bar=False) -> CSMCOutput:
    """Particle Gibbs for the states (Andrieu, Doucet & Holenstein 2010, section 2.4.3):
    ``num_warmup + num_samples`` iterations of :func:`csmc_kernel` in a ``lax.scan``,
    keeping the last ``num_samples`` paths. Without ``reference`` the chain starts from a
    path drawn from an unconditional bootstrap sweep. Pure and jittable; ``params`` fixes
    the global latent sites (see :func:`shared_state_space`); ``progress_bar`` shows a
    tqdm bar over the sweeps (:func:`~ppl.inference.progress.progress_scan`)."""
    ssm = shared_state_space(model, args, kwargs, params, who="csmc")
    key_init, key_chain = jax.random.split(key)
    gaps = []
    if reference is None:
        reference, record = csmc_kernel(key_init, ssm, num_particles, None, new_path)
        gaps.append(jnp.max(record.markov_gap))
    else:
        reference = check_reference(ssm, reference, who="csmc")

    def body(ref, key_i):
        path, record = csmc_kernel(key_i, ssm, num_particles, ref, new_path)
        log_z = ssm.globals.log_likelihood + jnp.sum(record.log_evidence_increments)
        return path, (path, log_z, jnp.max(record.markov_gap))

    total = num_warmup + num_samples
    last, (paths, log_z, gap) = progress_scan(body, reference, jax.random.split(key_chain, total),
                                              desc="csmc", enable=progress_bar)
    gaps.append(jnp.max(gap))
    return CSMCOutput(
        paths=jax.tree.map(lambda a: a[num_warmup:], paths),
        reference=last,
        log_evidence=log_z[num_warmup:],
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
        self.num_sweeps = check_count("num_sweeps", num_sweeps)
        self.num_warmup = check_nonnegative("num_warmup", num_warmup)
        if self.num_warmup >= self.num_sweeps:
            raise ValueError(
                f"num_warmup must be smaller than num_sweeps (the first num_warmup of the "
                f"num_sweeps paths are dropped), got num_warmup={num_warmup}, "
                f"num_sweeps={num_sweeps}"
            )
        self.num_samples = self.num_sweeps - self.num_warmup  # kept paths per chain
        self.num_chains = check_count("num_chains", num_chains)
        self.new_path = check_option("new_path", new_path, NEW_PATHS)
        if fixed is not None and not isinstance(fixed, dict):
            raise TypeError(f"fixed must be a dict global site -> value, got {fixed!r}")
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
                                  params=fixed, reference=reference,
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
