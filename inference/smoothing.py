"""PaRIS: the particle-based, rapid incremental smoother for additive functionals.

Olsson & Westerborn (2017), "Efficient particle-based online smoothing in general hidden
Markov models: the PaRIS algorithm", Bernoulli 23(3), 1951-1996. For a ``ppl.markov``
program with its global sites fixed to ``params`` (the ``fixed=`` option; the state-space
model of :class:`~ppl.semantics.Sequential`, time steps t = 0..T-1, carry c_t after step
t and c_{-1} the ``init`` carry) and an additive functional

    h(c_{-1:T-1}) = sum_t psi(t, c_{t-1}, c_t, params)        (vector-valued allowed),

PaRIS estimates the smoothed expectation E[h | y_{0:T-1}] online, in O(N Ñ) memory. Each
particle i of step t carries a statistic tau_t^i approximating E[h_t | c_t = c_t^i, y],
updated by (Olsson & Westerborn 2017, Algorithm 1, eq. (3.3); Cardoso et al. 2023,
arXiv 2301.00900, section 2, Algorithm 1):

    J_t^{i,j} ~ Lambda_t(i, k) ∝ w_{t-1}^k m(c_{t-1}^k, x_t^i)    j = 1..Ñ  (i.i.d.)
    tau_t^i   = Ñ^{-1} sum_j [ tau_{t-1}^{J} + psi(t, c_{t-1}^{J}, c_t^i, params) ]

with x_t^i the latent values of particle i at step t and w_{t-1} the filter weights of
step t-1; the estimate at step t is ``sum_i W_t^i tau_t^i`` (``info["online_estimates"]``).
The forward filter is the bootstrap filter resampling at every step (or, given a reference
path, the conditional SMC of :mod:`ppl.inference.conditional`, which makes one sweep of PPG).

Backward draws (``backward=``):

* ``"exact"``: Lambda_t(i, .) is computed for every i and k, O(N^2) per step, in blocks of
  ``block_size`` rows (``lax.map`` with ``batch_size``) so that memory stays O(N block);
* ``"reject"``: accept-reject with proposal w_{t-1} and an upper bound
  ``m(c_{t-1}, x_t) <= exp(log_bound)`` (Douc, Garivier, Moulines & Olsson 2011,
  Algorithm 1; Olsson & Westerborn 2017, section 5.1), with a fixed budget of
  ``max_trials`` proposals per draw and an exact O(N) draw for the draws that used it
  up: the hybrid rejection sampler of Dau & Chopin (2022, "On backward smoothing
  algorithms", arXiv 2207.00976, section 3: the "hybrid" algorithm), whose output law is
  exactly Lambda_t(i, .) and whose cost is O(N max_trials) per step plus O(N) per
  fallback. The bound is derived automatically when every latent site of the step is
  Normal or MultivariateNormal (the density at the mode, maximised over the particles of
  step t-1); otherwise pass ``log_bound(t, x, params)`` (an upper bound of
  ``log m(c_{t-1}, .)`` at the new carry ``x`` over every previous carry). A bound found
  violated during the run raises an error.

The carry must be the Markov state (the new carry and the step's likelihood read the
previous carry only through the step's latent values); every step checks it, see
:mod:`ppl.inference.conditional`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from ppl.inference.base import (
    CompiledRuns,
    check_count,
    check_key,
    check_option,
    nonfinite_sites_at,
    sites_text,
)
from ppl.inference.conditional import (
    check_markov_gap,
    check_reference,
    conditional_model,
    global_values,
    path_at,
)
from ppl.inference.engine import (
    FeynmanKac,
    ParticleState,
    RunOutput,
    backward_log_weights,
    markov_gap,
    particle_key,
    run_particles,
    take,
)
from ppl.inference.resampling import categorical, get_scheme
from ppl.semantics.sequential import replay_key
from ppl.semantics.trace import LATENT, record

from ppl.errors import ArgumentTypeError, NonFiniteWeightError, UnsupportedModelError
from ppl.posterior import Posterior
from ppl.primitives import step_index
from ppl.weights import ess_normalised

__all__ = [
    "BACKWARD",
    "FUNCTIONAL_SITE",
    "PaRIS",
    "ParisOutput",
    "ParisCollector",
    "ParisStep",
    "SmoothingPosterior",
    "exact_backward_indices",
    "gaussian_log_bound",
    "paris",
    "paris_update",
    "path_from_backward_indices",
    "reject_backward_indices",
    "paris_sweep",
    "run_paris",
]

BACKWARD = ("exact", "reject")
#: Name of the per-particle statistic tau in the samples of a PaRIS/PPG result.
FUNCTIONAL_SITE = "functional"
#: Relative slack before a bound is declared violated (float32 round-off).
BOUND_TOLERANCE = 1e-4


# --------------------------------------------------------------------------- backward kernel


def exact_backward_indices(key, fk: FeynmanKac, t, prev: ParticleState, values, num_backward,
                           block_size):
    """``J`` (N, Ñ): Ñ i.i.d. draws from Lambda_t(i, .) ∝ w_{t-1}^k m(c_{t-1}^k, x_t^i) for
    every particle i, computing the whole kernel (O(N^2) per step; Olsson & Westerborn
    2017, Algorithm 1, line 4) with the engine's
    :func:`~ppl.inference.engine.backward_log_weights`. Rows are processed ``block_size``
    at a time (``lax.map`` with ``batch_size``), so memory is O(N block_size)."""
    n = jax.tree.leaves(values)[0].shape[0]

    def row(args):
        i, v = args
        logits = backward_log_weights(fk, t, prev, v)
        return categorical(particle_key(key, i), logits, (num_backward,))

    index = jnp.arange(n, dtype=jnp.uint32)
    return jax.lax.map(row, (index, values), batch_size=min(block_size, n))


def _mode_log_density(fn):
    """log density of a Normal / MultivariateNormal (possibly expanded or made
    independent) at its mode, summed over its elements; None for other distributions."""
    base = fn
    while isinstance(base, dist.Independent | dist.ExpandedDistribution):
        base = base.base_dist
    if not isinstance(base, dist.Normal | dist.MultivariateNormal
                      | dist.LowRankMultivariateNormal):
        return None
    return jnp.sum(fn.log_prob(fn.mean))


def gaussian_log_bound(ssm, t, carry, values):
    """An upper bound of ``log m(c, x)`` over the previous carries ``c`` of the
    population (N, ...), derived when every latent site of the step is Gaussian: the
    density of each site at its mode, summed over sites, maximised over the population
    (``values`` (N, ...) only feed sites whose law reads earlier sites of the step; a
    bound that turns out too low is detected during the run). Raises
    :class:`UnsupportedModelError` when a site is not Normal / MultivariateNormal."""

    def one(c, v):
        with step_index(t):
            _, trace, raw = record(ssm.step_fn, replay_key(), (c, ssm.inputs(t)),
                                   substitutions=v)
        total = jnp.zeros(())
        for name in trace.names(LATENT):
            site = raw[name]
            mode = _mode_log_density(site["fn"])
            if mode is None:
                raise UnsupportedModelError(
                    f"paris(backward='reject') needs an upper bound of the transition "
                    f"density: it derives one when every latent site of the markov step is "
                    f"Normal or MultivariateNormal, but site '{name}' is "
                    f"{type(site['fn']).__name__}; pass log_bound=lambda t, x, params: ... "
                    f"(an upper bound of log m(x_prev, x) over x_prev) or use "
                    f"backward='exact'"
                )
            if site.get("scale") is not None:
                mode = mode * site["scale"]
            total = total + mode
        return total

    return jnp.max(jax.vmap(one)(carry, values))


class BackwardStats(NamedTuple):
    """Diagnostics of one step of accept-reject backward draws."""

    accepted: jnp.ndarray  # number of draws accepted within the trial budget
    fallbacks: jnp.ndarray  # number of draws made exactly after max_trials rejections
    bound_excess: jnp.ndarray  # max of log m - log bound over the trials (<= 0 if valid)


FALLBACK_BLOCK = 32  # rows of exact fallback draws per iteration of the accept-reject sampler


def reject_backward_indices(key, fk: FeynmanKac, t, prev: ParticleState, values, log_bound,
                            num_backward, max_trials, block_size):
    """``(J, BackwardStats)``: Ñ draws from Lambda_t(i, .) per particle i by the hybrid
    accept-reject sampler (Dau & Chopin 2022, arXiv 2207.00976, section 3, "hybrid"
    rejection sampling; the rejection step is Douc et al. 2011, Algorithm 1).

    For each of the N Ñ draws, ``max_trials`` candidates k ~ w_{t-1} (inverse CDF) are
    accepted with probability ``m(c_{t-1}^k, x_t^i) / exp(log_bound[i])``; the first
    accepted is kept. The draws with no acceptance are then made exactly
    (:func:`~ppl.inference.engine.backward_log_weights`), ``min(block_size,
    FALLBACK_BLOCK)`` at a time in a
    ``lax.while_loop`` whose trip count follows the number of such draws: the result has
    law Lambda_t(i, .) exactly, whatever the budget. The fallback block is small because
    only a few per cent of the draws fall back with a useful bound, and each row of a
    block costs N transition densities whether or not it is used. ``log_bound`` has shape
    (N,) (or broadcasts to it)."""
    n = prev.log_weights.shape[0]
    key_cand, key_accept, key_fallback = jax.random.split(key, 3)
    cdf = jnp.cumsum(jnp.exp(prev.log_weights))
    shape = (n, num_backward, max_trials)
    u = jax.random.uniform(key_cand, shape, dtype=cdf.dtype) * cdf[-1]
    candidates = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, n - 1).astype(jnp.int32)

    def log_m_row(v, cand):  # one particle i, its (Ñ, K) candidates
        params, carries = take((prev.params, prev.carry), cand.reshape(-1))
        lm = jax.vmap(lambda p, c: fk.log_transition(t, p, c, v))(params, carries)
        return lm.reshape(cand.shape)

    log_m = jax.vmap(log_m_row)(values, candidates)  # (N, Ñ, K)
    excess = log_m - jnp.broadcast_to(log_bound, (n,))[:, None, None]
    log_u = jnp.log(jax.random.uniform(key_accept, shape, dtype=log_m.dtype))
    accept = log_u < excess
    first = jnp.argmax(accept, axis=-1)
    draws = jnp.take_along_axis(candidates, first[..., None], axis=-1)[..., 0]
    failed = ~jnp.any(accept, axis=-1)

    flat = draws.reshape(-1)
    num_failed = jnp.sum(failed)
    size = n * num_backward
    (rows,) = jnp.nonzero(failed.reshape(-1), size=size, fill_value=size)
    block = min(block_size, size, FALLBACK_BLOCK)
    rows = jnp.concatenate([rows, jnp.full((block,), size, rows.dtype)])

    def exact_draw(row):
        i = jnp.minimum(row // num_backward, n - 1)
        v = jax.tree.map(lambda a: a[i], values)
        logits = backward_log_weights(fk, t, prev, v)
        return categorical(particle_key(key_fallback, row.astype(jnp.uint32)), logits)

    def cond(state):
        start, _ = state
        return start < num_failed

    def body(state):
        start, flat = state
        chunk = jax.lax.dynamic_slice(rows, (start,), (block,))
        new = jax.vmap(exact_draw)(chunk)
        return start + block, flat.at[chunk].set(new, mode="drop")

    _, flat = jax.lax.while_loop(cond, body, (jnp.zeros((), rows.dtype), flat))
    stats = BackwardStats(
        accepted=size - num_failed,
        fallbacks=num_failed,
        bound_excess=jnp.max(jnp.where(jnp.isnan(excess), -jnp.inf, excess)),
    )
    return flat.reshape(n, num_backward), stats


# --------------------------------------------------------------------------- statistics


def paris_update(step_functional, t, prev: ParticleState, tau, new, backward):
    """The PaRIS statistics of step t (Olsson & Westerborn 2017, eq. (3.3)):
    ``tau_t^i = Ñ^{-1} sum_j [tau_{t-1}^{J_ij} + psi(t, c_{t-1}^{J_ij}, new^i)]``, ``vmap``
    over particles i and backward draws j. ``new`` is the step's ``(carries, latent
    values)`` and ``step_functional(t, prev_params, prev_carry, (carry, values))`` the
    term psi (``prev_params``: the previous particle's per-particle global values, its
    time-0 state)."""

    def one(new_i, idx):
        prev_params, prev_carries = take((prev.params, prev.carry), idx)
        inc = jax.vmap(
            lambda pp, cp: _as_float(step_functional(t, pp, cp, new_i), tau.dtype)
        )(prev_params, prev_carries)
        return jnp.mean(jnp.take(tau, idx, axis=0) + inc, axis=0)

    return jax.vmap(one)(new, backward)


def _as_float(value, dtype=None):
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.inexact):
        value = value.astype(jnp.result_type(float))
    return value if dtype is None else value.astype(dtype)


def user_functional(functional, fparams):
    """The user's ``psi(t, x_prev, x, params)`` as a step functional of :func:`paris_update`
    (reading the new carry, with the held global values)."""
    return lambda t, prev_params, prev, new: functional(t, prev, new[0], fparams)


def _psi_shape(functional, fk: FeynmanKac, fparams):
    ssm = fk.shared
    try:
        return jax.eval_shape(lambda: _as_float(functional(0, ssm.init, ssm.init, fparams)))
    except (TypeError, ValueError, AttributeError, IndexError, KeyError) as err:
        raise ArgumentTypeError(
            f"paris: the functional must be psi(t, x_prev, x, params) -> array, with x_prev "
            f"and x carries of the markov step (shaped like its init carry) and params the "
            f"dict of global values {sorted(fparams)}; calling it failed: {err}"
        ) from err


def path_from_backward_indices(key, run: RunOutput):
    """A path drawn through the backward indices (Cardoso et al. 2023, arXiv 2301.00900,
    section 3, Algorithm 2, last step): ``b_{T-1} ~ W_{T-1}`` and, going back,
    ``b_{t-1} = J_t^{b_t, j}`` with j uniform in 1..Ñ, down to the initial particles (so
    the time-0 state is drawn too). Given the forward particles the J_t^{i, .} are i.i.d.
    Lambda_t(i, .), so this is a backward-sampling draw (Godsill, Doucet & West 2004), the
    new reference of PPG. Needs a sweep run with ``draw_path``. Returns ``(path, indices
    (T,))``."""
    backward = run.records.backward
    num_backward = backward.shape[-1]
    key_last, key_j = jax.random.split(key)
    last = categorical(key_last, run.final.log_weights)
    js = jax.random.randint(key_j, (backward.shape[0],), 0, num_backward)

    def body(b, step):
        backward_t, j = step
        return backward_t[b, j], b

    first, index = jax.lax.scan(body, last, (backward, js), reverse=True)
    return path_at(run, index, first), index


# --------------------------------------------------------------------------- driver


class ParisStep(NamedTuple):
    """What one step records (stacked over time by the scan)."""

    estimate: jnp.ndarray  # online estimate sum_i W_t^i tau_t^i, shape psi's
    ess: jnp.ndarray
    markov_gap: jnp.ndarray
    accepted: jnp.ndarray  # reject: draws accepted within the budget (exact: N Ñ)
    fallbacks: jnp.ndarray  # reject: exact fallback draws (exact: 0)
    bound_excess: jnp.ndarray  # reject: max log m - log bound (exact: -inf)
    values: dict  # the step's latent values (N, ...)
    backward: jnp.ndarray | None  # with draw_path: J (N, Ñ)


class ParisCollector:
    """The engine collector of PaRIS (Olsson & Westerborn 2017, Algorithm 1): at every
    step the backward draws (exact or hybrid accept-reject) and the update of the
    statistics tau, carried through the time driver; the estimate after each step and,
    with ``draw_path``, the backward indices are recorded."""

    uses_key = True

    def __init__(self, fk: FeynmanKac, step_functional, spec, num_backward, backward="exact",
                 max_trials=16, log_bound=None, block_size=256, draw_path=False):
        """``log_bound(t, carries) -> (N,)`` bounds log m at each new carry (reject only;
        None: derived for Gaussian steps)."""
        self.fk, self.step_functional, self.spec = fk, step_functional, spec
        self.num_backward, self.backward = num_backward, backward
        self.max_trials, self.log_bound, self.block_size = max_trials, log_bound, block_size
        self.draw_path = draw_path

    def init(self, fk, state):
        n = state.log_weights.shape[0]
        return jnp.zeros((n, *self.spec.shape), jnp.result_type(self.spec.dtype, float))

    def _backward_draws(self, key, t, prev, result):
        fk = self.fk
        if self.backward == "exact":
            idx = exact_backward_indices(key, fk, t, prev, result.values, self.num_backward,
                                         self.block_size)
            size = idx.size
            return idx, BackwardStats(jnp.asarray(size), jnp.asarray(0),
                                      jnp.asarray(-jnp.inf))
        if self.log_bound is None:
            bound = gaussian_log_bound(fk.shared, t, prev.carry, result.values)
        else:
            bound = self.log_bound(t, result.carry)
        return reject_backward_indices(key, fk, t, prev, result.values, bound,
                                       self.num_backward, self.max_trials, self.block_size)

    def step(self, key, t, tau, prev, out, new):
        result = out.result
        idx, stats = self._backward_draws(key, t, prev, result)
        tau = paris_update(self.step_functional, t, prev, tau, (result.carry, result.values),
                           idx)
        weights = jnp.exp(new.log_weights)
        record_t = ParisStep(
            estimate=jnp.tensordot(weights.astype(tau.dtype), tau, axes=(0, 0)),
            ess=ess_normalised(weights, out.increment),
            markov_gap=markov_gap(self.fk, t, out.parents, result),
            accepted=stats.accepted,
            fallbacks=stats.fallbacks,
            bound_excess=stats.bound_excess,
            values=result.values,
            backward=idx if self.draw_path else None,
        )
        return tau, record_t


def paris_sweep(key, fk: FeynmanKac, num_particles: int, collector: ParisCollector,
                reference=None, resample="multinomial", progress_bar=False,
                desc="paris"):
    """One PaRIS sweep: the engine's time driver (resample at every step, propagate,
    reweight; conditional on ``reference`` if given, which forces multinomial
    resampling) with the :class:`ParisCollector`. Returns ``(RunOutput, path)``, the path
    drawn through the backward indices when the collector has ``draw_path`` (else None)."""
    key_run, key_path = jax.random.split(key)
    if reference is not None:
        resample = "multinomial"
    run = run_particles(key_run, fk, num_particles, resample, 1.0, collector,
                        reference=reference, progress_bar=progress_bar, desc=desc)
    path = path_from_backward_indices(key_path, run)[0] if collector.draw_path else None
    return run, path


class ParisOutput(NamedTuple):
    """One PaRIS run (a pytree: the output of the jitted core)."""

    estimate: jnp.ndarray  # E[sum_t psi | y] estimate, shape psi's
    online_estimates: jnp.ndarray  # (T, ...) estimate at every step t (sum over s <= t)
    tau: jnp.ndarray  # (N, ...) final statistics
    log_weights: jnp.ndarray  # (N,) final normalised filter log weights
    final_values: dict  # last step's latent values (N, ...) and the time-0 state sites
    log_evidence: jnp.ndarray  # filter's log p(y) estimate (a conditional sweep: not one)
    steps: ParisStep  # stacked over time (values and backward dropped)
    increments: jnp.ndarray  # (T,) l_t
    path: dict | None  # with draw_path: a path drawn through the backward indices
    globals: dict  # the global latent / param values the functional received


def run_paris(key, model, args, kwargs, num_particles: int, num_backward: int,
              functional: Callable, backward="exact", fixed=None, reference=None,
              resample="multinomial", max_trials=16, log_bound=None, block_size=256,
              draw_path=False, progress_bar=False) -> ParisOutput:
    """PaRIS over a program (Olsson & Westerborn 2017, Algorithm 1): the program read as a
    Feynman–Kac model given ``fixed`` (:func:`~ppl.inference.conditional.conditional_model`:
    the sites the step reads must be held; the time-0 state is drawn per particle), then
    :func:`paris_sweep`.

    With a ``reference`` path the forward filter is conditional SMC (reference at particle
    0, multinomial resampling forced): the conditional PaRIS sweep of PPG (Cardoso et al.
    2023, Algorithm 2). ``draw_path=True`` keeps the backward indices (T N Ñ integers) and
    returns a path drawn through them (:func:`path_from_backward_indices`).
    ``progress_bar`` shows a tqdm bar over the time steps. Pure JAX, one trace: jit it,
    vmap it over keys, scan it over PPG sweeps.
    """
    fk = conditional_model(model, args, kwargs, fixed, who="paris")
    fparams = global_values(fk)
    if reference is not None:
        reference = check_reference(fk, reference, who="paris")
    spec = _psi_shape(functional, fk, fparams)
    bound = None
    if log_bound is not None:
        def bound(t, carries):
            return jax.vmap(lambda c: jnp.asarray(log_bound(t, c, fparams)))(carries)
    collector = ParisCollector(fk, user_functional(functional, fparams), spec, num_backward,
                               backward, max_trials, bound, block_size, draw_path)
    run, path = paris_sweep(key, fk, num_particles, collector, reference, resample,
                            progress_bar)
    steps = run.records._replace(backward=None)
    final_values = {**jax.tree.map(lambda a: a[-1], steps.values), **run.final.params}
    return ParisOutput(
        estimate=steps.estimate[-1],
        online_estimates=steps.estimate,
        tau=run.collected,
        log_weights=run.final.log_weights,
        final_values=final_values,
        log_evidence=run.log_evidence,
        steps=steps._replace(values=None),
        increments=run.increments,
        path=path,
        globals=fparams,
    )


# --------------------------------------------------------------------------- result


class SmoothingPosterior(Posterior):
    """A :class:`~ppl.Posterior` from a smoother of additive functionals, with the
    smoothed expectation as :attr:`estimate` and the estimates after every step as
    :attr:`online_estimates`."""

    @property
    def estimate(self):
        """The estimate of E[sum_t psi(t, x_{t-1}, x_t, params) | y], shape psi's."""
        return self.info["estimate"]

    @property
    def online_estimates(self):
        """Estimates of E[sum_{s<=t} psi_s | y_{0:t}] for t = 0..T-1 (leading axis T)."""
        return self.info["online_estimates"]


def check_paris_run(steps, increments, log_evidence, who, diagnose=None):
    """Raise clear errors after a run: non-finite weights, a violated bound, a carry that
    is not the Markov state.

    Non-finite weights are checked first (a NaN log density also makes the carry check
    fail, which would blame the carry): ``increments`` (T,) or (sweeps, T) name the first
    bad step, and ``diagnose(include_neginf)`` (when given) returns the lines naming the
    sites, e.g. :func:`~ppl.inference.base.nonfinite_sites_at` at a prior run with the
    fixed globals ("NaN data" at site 'y', step t)."""
    increments = np.asarray(increments)
    if not np.all(np.isfinite(increments)) or not np.all(np.isfinite(log_evidence)):
        bad = np.argwhere(~np.isfinite(increments))
        where = "at the global sites"
        cause = "every particle is impossible under the data, or a log density is NaN"
        neginf = True
        if bad.size:
            t = int(bad[0][-1])
            where = f"first at step t={t}"
            value = increments[tuple(bad[0])]
            neginf = bool(np.isneginf(value))
            cause = ("a log density is NaN" if np.isnan(value) else "a log weight is +inf"
                     if value > 0 else "every particle has weight zero (impossible under "
                     "the data, or a NaN log density)")
        lines = diagnose(neginf) if diagnose is not None else []
        sites = f"; site(s) with a non-finite log density: {sites_text(lines)}" if lines else ""
        raise NonFiniteWeightError(
            f"{who}: the filter weights are not finite ({where}): {cause}{sites}"
        )
    check_markov_gap(steps.markov_gap, who)
    excess = np.asarray(steps.bound_excess)
    if np.any(excess > BOUND_TOLERANCE * (1.0 + np.abs(excess))):
        t = int(np.flatnonzero(excess > 0)[0])
        raise UnsupportedModelError(
            f"{who}(backward='reject'): the upper bound of the transition density is "
            f"violated at step t={t} (log m exceeds the bound by {float(excess.max()):.3g}); "
            f"fix log_bound (it must bound log m(x_prev, x) over every x_prev) or use "
            f"backward='exact'"
        )


# --------------------------------------------------------------------------- combinator


def _check_functional(functional):
    if not callable(functional):
        raise ArgumentTypeError(
            f"functional must be a function psi(t, x_prev, x, params) -> array, got "
            f"{functional!r}"
        )
    return functional


def _check_log_bound(log_bound):
    if log_bound is not None and not callable(log_bound):
        raise ArgumentTypeError(
            f"log_bound must be a function log_bound(t, x, params) -> scalar (an upper bound "
            f"of log m(x_prev, x) over x_prev), got {log_bound!r}"
        )
    return log_bound


def check_backward_options(functional, backward, max_trials, log_bound, block_size,
                           fixed) -> dict:
    """The validated options shared by :class:`PaRIS` and PPG (its conditional sweeps are
    PaRIS runs): the functional, the backward sampler and its budget, the density bound,
    the block size and the fixed global values, each error naming its argument."""
    if fixed is not None and not isinstance(fixed, dict):
        raise ArgumentTypeError(f"fixed must be a dict global site -> value, got {fixed!r}")
    return {
        "functional": _check_functional(functional),
        "backward": check_option("backward", backward, BACKWARD),
        "max_trials": check_count("max_trials", max_trials),
        "log_bound": _check_log_bound(log_bound),
        "block_size": check_count("block_size", block_size),
        "fixed": fixed,
    }


class PaRIS:
    """``paris(num_particles, num_backward, functional, backward, ...)``; see :func:`paris`."""

    def __init__(self, num_particles: int, num_backward=2, functional=None, backward="exact",
                 resample="multinomial", max_trials=16, log_bound=None, block_size=256,
                 fixed=None, progress_bar=False):
        self.num_particles = check_count("num_particles", num_particles)
        self.num_backward = check_count("num_backward", num_backward)
        vars(self).update(check_backward_options(functional, backward, max_trials, log_bound,
                                                 block_size, fixed))
        get_scheme(resample)
        self.resample = resample
        self.progress_bar = bool(progress_bar)
        self._runs = CompiledRuns(self.core)

    def core(self, key, model, args, kwargs, fixed=None, reference=None,
             draw_path=False) -> ParisOutput:
        """The pure, jittable run (:func:`run_paris` with this combinator's options).
        ``fixed`` (default: the combinator's) holds the global sites; a ``reference``
        path makes it a conditional sweep (PPG); ``draw_path`` returns a new path."""
        fixed = self.fixed if fixed is None else fixed
        return run_paris(key, model, args, kwargs, self.num_particles, self.num_backward,
                         self.functional, self.backward, fixed=fixed, reference=reference,
                         resample=self.resample, max_trials=self.max_trials,
                         log_bound=self.log_bound, block_size=self.block_size,
                         draw_path=draw_path, progress_bar=self.progress_bar)

    def run(self, key, model, *args, **kwargs) -> SmoothingPosterior:
        """Run PaRIS on ``model(*args, **kwargs)``; returns a :class:`SmoothingPosterior`
        whose ``estimate`` is the smoothed expectation of the additive functional."""
        out = self._runs(check_key(key), model, args, kwargs)
        check_paris_run(out.steps, out.increments, out.log_evidence, "paris",
                        diagnose=lambda neginf: nonfinite_sites_at(model, args, kwargs, self.fixed,
                                                                   neginf))
        clash = FUNCTIONAL_SITE in out.final_values
        if clash:
            raise UnsupportedModelError(
                f"paris: the program has a step site named '{FUNCTIONAL_SITE}', the name "
                f"of the PaRIS statistics in the result; rename it"
            )
        n = self.num_particles
        steps = out.steps
        return SmoothingPosterior(
            {FUNCTIONAL_SITE: out.tau, **out.final_values},
            log_weights=out.log_weights + out.log_evidence + math.log(n),
            log_evidence=out.log_evidence,
            method="paris",
            info={
                "estimate": out.estimate,
                "online_estimates": out.online_estimates,
                "ess": steps.ess,
                "log_evidence_increments": out.increments,
                "accepted": steps.accepted,
                "fallbacks": steps.fallbacks,
                "globals": out.globals,
                "num_particles": n,
                "num_backward": self.num_backward,
                "backward": self.backward,
                "max_trials": self.max_trials,
            },
        )

    def __repr__(self):
        return (
            f"paris(num_particles={self.num_particles}, num_backward={self.num_backward}, "
            f"functional={self.functional!r}, backward={self.backward!r})"
        )


def paris(num_particles: int, num_backward=2, functional=None, backward="exact",
          resample="multinomial", max_trials=16, log_bound=None, block_size=256,
          fixed=None, progress_bar=False):
    """PaRIS (Olsson & Westerborn 2017): online smoothing of an additive functional.

    ``functional`` is ``psi(t, x_prev, x, params) -> array`` (any fixed shape), summed
    over the T steps of the program's ``markov`` call: ``x_prev`` and ``x`` are the
    carries before and after step t (``x_prev`` of step 0 is the ``init`` carry) and
    ``params`` the dict of global latent (and ``ppl.param``) values. ``num_particles``
    N, ``num_backward`` Ñ (2 is the usual choice: Olsson & Westerborn 2017, section 4
    show Ñ >= 2 keeps the variance O(T)). ``backward="exact"`` (O(N^2) per step, in
    blocks of ``block_size`` rows) or ``"reject"`` (hybrid accept-reject with
    ``max_trials`` proposals per draw, linear in N; needs a bound: automatic for Gaussian
    transitions, else ``log_bound(t, x, params)``). ``resample`` is the forward filter's
    scheme (every step). ``fixed`` (site -> value) holds the program's global latent sites.
    ``progress_bar=True`` shows a tqdm bar over the time steps without leaving jit.

    ``.run(key, model, *args, **kwargs)`` returns a :class:`SmoothingPosterior`: its
    ``estimate`` is the estimate of E[sum_t psi | y], ``online_estimates`` (T, ...) the
    estimate after each step; ``samples`` hold the final particles' statistics
    (site ``"functional"``, (N, ...)) and last-step latent values, weighted by the final
    filter weights, so ``post.mean("functional") == post.estimate``. ``info`` has the
    per-step ``ess``, ``log_evidence_increments``, and for ``"reject"`` the
    ``accepted`` / ``fallbacks`` counts. ``.core(key, model, args, kwargs, fixed,
    reference, draw_path)`` is the pure jittable run for composition (PPG, score ascent).
    """
    return PaRIS(num_particles, num_backward, functional, backward, resample, max_trials,
                 log_bound, block_size, fixed, progress_bar)
