"""PPG: the PaRIS particle Gibbs sampler (bias-reduced smoothing of additive functionals).

Cardoso, Janati El Idrissi, Le Corff, Moulines & Olsson (2023), "State and parameter
learning with PaRIS particle Gibbs", ICML, arXiv 2301.00900. PaRIS
(:mod:`ppl.inference.smoothing`) is a self-normalised estimator, biased at O(T/N) for a
functional summed over T steps; PPG removes most of that bias by running PaRIS inside a
particle Gibbs chain on the states (section 3, Algorithm 2):

* sweep l = 1..k runs a *conditional* PaRIS sweep: the forward filter is conditional SMC
  with the reference path zeta[l-1] frozen at particle 0 (:mod:`ppl.inference.conditional`), and
  every particle, the reference included, draws Ñ backward indices and updates its
  statistic tau as in PaRIS; the sweep's estimate is ``sum_i W_T^i tau_T^i``;
* the new reference zeta[l] is drawn through the backward indices
  (:func:`~ppl.inference.smoothing.path_from_backward_indices`): the final index from the
  weights, then each earlier index uniformly among the Ñ backward indices of the later
  one. Given the forward particles these indices are i.i.d. draws of the backward kernel,
  so this is conditional SMC with backward sampling, a Markov kernel that leaves the
  smoothing distribution invariant;
* the estimator averages the sweeps after a burn-in of k0 (``num_warmup``):
  ``Pi_{k0,k}(h) = (k - k0)^{-1} sum_{l=k0+1}^{k} Pi^l(h)`` (Cardoso et al. 2023,
  section 3, the bias-reduced PPG estimator; their bias bound decays geometrically in
  k0). Each Pi^l(h) = sum_i W^i tau^i is the exact conditional expectation of h(zeta[l])
  given the sweep (tau averages over the uniform choice among the Ñ indices), so at
  stationarity every sweep is unbiased; the remaining bias is the chain's burn-in.

The first reference zeta[0], when none is given, is drawn the same way from an
unconditional PaRIS sweep (not counted). Passing ``reference=`` to :meth:`PPG.core` carries
the chain over, e.g. between parameter updates of score ascent (their section 4).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ppl.inference.base import (
    CompiledRuns,
    InvalidArgumentError,
    check_count,
    check_key,
    check_sweeps,
    nonfinite_sites_at,
)
from ppl.inference.kernels import sample_chain
from ppl.inference.smoothing import (
    FUNCTIONAL_SITE,
    SmoothingPosterior,
    check_backward_options,
    check_paris_run,
    run_paris,
)

__all__ = ["PPG", "PPGOutput", "ppg", "run_ppg"]


class PPGOutput(NamedTuple):
    """One PPG run (a pytree: the output of the jitted core)."""

    estimate: jnp.ndarray  # the bias-reduced estimate, shape psi's
    sweep_estimates: jnp.ndarray  # (k, ...) the estimate of every sweep l = 1..k
    online_estimates: jnp.ndarray  # (k, T, ...) per sweep, the estimate after every step
    paths: dict  # site -> (k, T, ...) the reference drawn after every sweep
    reference: dict  # the last reference, site -> (T, ...): pass it to the next run
    steps: object  # (ParisStep, increments) stacked over (sweeps, T) (diagnostics)
    log_evidence: jnp.ndarray  # (k,) of the sweeps (conditional: not an estimate of p(y))


def run_ppg(key, model, args, kwargs, num_particles: int, num_backward: int,
            num_sweeps: int, num_warmup: int, functional, backward="exact", fixed=None,
            reference=None, max_trials=16, log_bound=None, block_size=256,
            progress_bar=False) -> PPGOutput:
    """PPG (Cardoso et al. 2023, Algorithm 2): ``num_sweeps`` conditional PaRIS sweeps
    (:func:`~ppl.inference.smoothing.run_paris` with ``reference``), the kernel of a chain
    run by the one chain driver (:func:`ppl.inference.kernels.sample_chain`), each
    handing its path drawn through the backward indices to the next; the estimate is the
    mean of the sweeps ``num_warmup + 1 .. num_sweeps``. Without ``reference`` the chain
    starts from a path of an unconditional PaRIS sweep; ``fixed`` holds the global sites
    the step reads; ``progress_bar`` shows a tqdm bar over the sweeps. Pure
    and jittable."""
    options = dict(num_particles=num_particles, num_backward=num_backward,
                   functional=functional, backward=backward, fixed=fixed,
                   max_trials=max_trials, log_bound=log_bound, block_size=block_size,
                   draw_path=True)
    key_init, key_sweeps = jax.random.split(key)
    init_steps = None
    if reference is None:
        first = run_paris(key_init, model, args, kwargs, reference=None, **options)
        reference, init_steps = first.path, (first.steps, first.increments)

    def sweep(key_l, ref):
        out = run_paris(key_l, model, args, kwargs, reference=ref, **options)
        return out.path, (out.estimate, out.online_estimates, (out.steps, out.increments),
                          out.log_evidence)

    chain = sample_chain(key_sweeps, sweep, reference, num_sweeps, progress_bar=progress_bar,
                         desc="ppg")
    last, paths = chain.final_state, chain.states
    estimates, online, steps, log_z = chain.infos
    if init_steps is not None:  # keep the initial sweep's checks (gap, bound) too
        steps = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), init_steps, steps)
    return PPGOutput(
        estimate=jnp.mean(estimates[num_warmup:], axis=0),
        sweep_estimates=estimates,
        online_estimates=online,
        paths=paths,
        reference=last,
        steps=steps,
        log_evidence=log_z,
    )


class PPG:
    """``ppg(num_particles, num_backward, num_sweeps, num_warmup, functional, ...)``; see
    :func:`ppg`."""

    def __init__(self, num_particles: int, num_backward=2, num_sweeps=10, num_warmup=2,
                 functional=None, backward="exact", max_trials=16, log_bound=None,
                 block_size=256, fixed=None, progress_bar=False):
        self.num_particles = check_count("num_particles", num_particles)
        if self.num_particles < 2:
            raise InvalidArgumentError(
                "num_particles must be >= 2 for PPG (particle 0 is the frozen reference)"
            )
        self.num_backward = check_count("num_backward", num_backward)
        self.num_sweeps, self.num_warmup = check_sweeps(num_sweeps, num_warmup)
        vars(self).update(check_backward_options(functional, backward, max_trials, log_bound,
                                                 block_size, fixed))
        self.progress_bar = bool(progress_bar)
        self._runs = CompiledRuns(self.core)

    def core(self, key, model, args, kwargs, fixed=None, reference=None) -> PPGOutput:
        """The pure, jittable run (:func:`run_ppg` with this combinator's options).
        ``fixed`` (default: the combinator's) holds the global sites; ``reference`` (a
        path, site -> (T, ...), e.g. the previous run's ``reference``) starts the chain."""
        fixed = self.fixed if fixed is None else fixed
        return run_ppg(key, model, args, kwargs, self.num_particles, self.num_backward,
                       self.num_sweeps, self.num_warmup, self.functional, self.backward,
                       fixed=fixed, reference=reference, max_trials=self.max_trials,
                       log_bound=self.log_bound, block_size=self.block_size,
                       progress_bar=self.progress_bar)

    def run(self, key, model, *args, **kwargs) -> SmoothingPosterior:
        """Run PPG on ``model(*args, **kwargs)``; returns a :class:`SmoothingPosterior`
        whose ``estimate`` is the bias-reduced smoothed expectation."""
        out = self._runs(check_key(key), model, args, kwargs)
        steps, _ = jax.tree.map(
            lambda a: np.asarray(a).reshape(-1, *np.shape(a)[2:]), out.steps)
        check_paris_run(steps, out.steps[1], np.zeros(()), "ppg",  # (sweeps, T) increments
                        diagnose=lambda neginf: nonfinite_sites_at(model, args, kwargs,
                                                                   self.fixed, neginf))
        kept = slice(self.num_warmup, None)
        samples = {FUNCTIONAL_SITE: out.sweep_estimates[kept]}
        samples.update({n: v[kept] for n, v in out.paths.items()})
        return SmoothingPosterior(
            samples,
            method="ppg",
            info={
                "estimate": out.estimate,
                "online_estimates": jnp.mean(out.online_estimates[kept], axis=0),
                "sweep_estimates": out.sweep_estimates,
                "sweep_online_estimates": out.online_estimates,
                "reference": out.reference,
                "num_particles": self.num_particles,
                "num_backward": self.num_backward,
                "num_sweeps": self.num_sweeps,
                "num_warmup": self.num_warmup,
                "backward": self.backward,
            },
        )

    def __repr__(self):
        return (
            f"ppg(num_particles={self.num_particles}, num_backward={self.num_backward}, "
            f"num_sweeps={self.num_sweeps}, num_warmup={self.num_warmup}, "
            f"functional={self.functional!r}, backward={self.backward!r})"
        )


def ppg(num_particles: int, num_backward=2, num_sweeps=10, num_warmup=2, functional=None,
        backward="exact", max_trials=16, log_bound=None, block_size=256, fixed=None,
        progress_bar=False):
    """PaRIS particle Gibbs (Cardoso et al. 2023): bias-reduced smoothing of an additive
    functional ``psi(t, x_prev, x, params)`` summed over the program's ``markov`` steps
    (same convention as :func:`~ppl.inference.smoothing.paris`).

    ``num_sweeps`` (k) conditional PaRIS sweeps with ``num_particles`` (N) particles and
    ``num_backward`` (Ñ) backward draws each; the estimate averages the sweeps after the
    first ``num_warmup`` (k0). ``backward``, ``max_trials``, ``log_bound``, ``block_size``
    as in :func:`~ppl.inference.smoothing.paris`; ``fixed`` (site -> value) holds the
    global latent sites. ``progress_bar=True`` shows a tqdm bar over the sweeps.

    ``.run(key, model, *args, **kwargs)`` returns a :class:`SmoothingPosterior`:
    ``estimate`` the bias-reduced estimate; ``samples`` hold, for each kept sweep, its
    estimate (site ``"functional"``) and the reference path drawn after it (every step
    site, (k - k0, T, ...)), unweighted, so ``post.mean("functional") == post.estimate``;
    ``online_estimates`` are the kept sweeps' mean estimates after each step; ``info``
    has ``sweep_estimates`` (all k), ``reference`` (the last path). ``.core(key, model,
    args, kwargs, fixed, reference)`` is the pure jittable run for learning loops.
    """
    return PPG(num_particles, num_backward, num_sweeps, num_warmup, functional, backward,
               max_trials, log_bound, block_size, fixed, progress_bar)
