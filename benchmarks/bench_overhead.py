"""Per-call overhead of ``.run`` over its jitted core, for every combinator.

After the first call with given argument shapes, ``.run(key, model, *args)`` should do no
eager Python pass over the model (DESIGN.md): it calls its jitted core and builds a
``ppl.Posterior`` from the outputs. This script measures, after warm-up, the median wall
time of ``.run`` and of its core alone (the cached jitted function the run calls, found in
the combinator's :class:`~ppl.inference.base.CompiledRuns` / run cache; outputs waited
for with ``jax.block_until_ready``), on a small static program and a small ``markov``
program per combinator, and prints ``overhead = run - core`` (target: at most 5 ms).

Models (tiny settings, as ``tests/test_bad_inputs.py``'s table, so the core is short and
the overhead shows): ``static`` is ``zoo.normal_normal`` on 20 points (``zoo.sprinkler``
for ``exact``, an 11-point SDE grid for ``vsde``); ``markov`` is ``zoo.lgssm_1d`` with
T = 100 (``zoo.lgssm_1d_unknown_rho`` where the combinator needs a global latent site:
pmmh, smc2, particle_gibbs; ``zoo.discrete_hmm`` T = 100 for ``exact``; an LGSSM with
``ppl.param`` sites for score_ascent; a 101-point SDE grid for ``vsde``).

    python benchmarks/bench_overhead.py [--repeats 9] [--only mh,smc]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints
from ppl.inference.base import CompiledRuns, split_arguments

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo

T = 100


# --------------------------------------------------------------------------- programs


@ppl.model
def lgssm_params(ys):
    rho = ppl.param("rho", 0.5, constraint=constraints.interval(-1.0, 1.0))
    sigma_x = ppl.param("sigma_x", 0.7, constraint=constraints.positive)

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, sigma_x))
        ppl.observe("y", dist.Normal(x, 0.5), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


@ppl.model
def ar_guide(ys):
    a = ppl.param("a", 0.5)
    b = ppl.param("b", 0.5)
    s = ppl.param("s", 1.0, constraint=constraints.positive)

    def step(x, y):
        return ppl.sample("x", dist.Normal(a * x + b * y, s))

    return ppl.markov(step, init=0.0, xs=ys)


def sde_program(num_steps):
    grid = jnp.linspace(0.0, 1.0, num_steps + 1)
    obs = np.arange(num_steps // 2, num_steps + 1, num_steps // 2)

    def sde_model(y):
        x0 = ppl.sample("x0", dist.Normal(0.0, 1.0))
        x = ppl.sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, x0, grid)
        ppl.observe("y", dist.Normal(x[obs], 0.5), y)

    return sde_model, (np.array([0.3, 0.1], np.float32),)


def psi(t, x_prev, x, params):
    return x


_, YS = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), T)
YS = np.asarray(YS)
_, HMM_YS = zoo.simulate_discrete_hmm(jax.random.PRNGKey(2), T)
HMM_YS = np.asarray(HMM_YS)
NORMAL = (np.asarray(np.random.default_rng(0).normal(1.0, 1.0, 20), np.float32),)
STATIC = ("static", zoo.normal_normal, NORMAL)
MARKOV = ("markov", zoo.lgssm_1d, (YS,))
MARKOV_RHO = ("markov", zoo.lgssm_1d_unknown_rho, (YS,))

#: combinator -> (make, [(model label, program, args)])
CELLS = {
    "importance": (lambda: infer.importance(num_samples=8), [STATIC, MARKOV]),
    "exact": (lambda: infer.exact(num_samples=2),
              [("static", zoo.sprinkler, ()), ("markov", zoo.discrete_hmm, (HMM_YS,))]),
    "smc": (lambda: infer.smc(num_particles=8), [STATIC, MARKOV]),
    "rmsmc": (lambda: infer.rmsmc(num_particles=8), [STATIC, MARKOV]),
    "mh": (lambda: infer.mh(num_samples=2), [STATIC, MARKOV]),
    "tempered_smc": (lambda: infer.tempered_smc(num_particles=8, num_mcmc_steps=1,
                                                max_steps=3), [STATIC]),
    "nuts": (lambda: infer.nuts(num_samples=2, num_warmup=2), [STATIC, MARKOV]),
    "hmc": (lambda: infer.hmc(num_samples=2, num_warmup=2, num_steps=2), [STATIC, MARKOV]),
    "svi": (lambda: infer.svi(num_steps=2, num_samples=2), [STATIC, MARKOV]),
    "pmmh": (lambda: infer.pmmh(params=["rho"], likelihood=infer.smc(num_particles=8),
                                num_samples=2), [MARKOV_RHO]),
    "smc2": (lambda: infer.smc2(params=["rho"], num_theta=4,
                                likelihood=infer.smc(num_particles=4)), [MARKOV_RHO]),
    "csmc": (lambda: infer.csmc(num_particles=8, num_sweeps=2, num_warmup=1), [MARKOV]),
    "paris": (lambda: infer.paris(num_particles=8, functional=psi), [MARKOV]),
    "ppg": (lambda: infer.ppg(num_particles=8, num_sweeps=2, num_warmup=1, functional=psi),
            [MARKOV]),
    "vsde": (lambda: infer.vsde(num_steps=2, num_paths=2, num_samples=2, control="affine",
                                progress_bar=False),
             [("static", *sde_program(10)), ("markov", *sde_program(100))]),
    "score_ascent": (lambda: infer.score_ascent(num_particles=8, num_steps=2),
                     [("markov", lgssm_params, (YS,))]),
    "score_climbing": (lambda: infer.score_climbing(ar_guide, num_particles=8, num_steps=2),
                       [MARKOV]),
    "particle_gibbs": (lambda: infer.particle_gibbs(num_particles=8, num_samples=2,
                                                    num_warmup=1, num_mcmc_steps=1),
                       [MARKOV_RHO]),
}


# --------------------------------------------------------------------------- the core


def _entry(cache, split):
    entry = cache.get(split.cache_key)
    if entry is not None:
        return entry, split.arrays
    for key, entry in cache.concrete.items():  # a model that needs concrete data
        if key[0] is split.cache_key[0]:
            return entry, []
    raise LookupError("no compiled run cached: call .run first")


def core_of(comb, model, args, kwargs=None):
    """``core(key)``: the jitted function ``comb.run`` calls (after a warm-up run)."""
    kwargs = kwargs or {}
    split = split_arguments(model, args, kwargs)
    runs = getattr(comb, "_runs", None)
    if isinstance(runs, CompiledRuns):
        fn, arrays = _entry(runs._cache, split)
        return lambda key: fn(key, arrays)
    if isinstance(comb, infer.hamiltonian._HamiltonianMC):
        lowered, arrays = _entry(comb._cache, split)
        return lambda key: lowered.run(key, arrays)
    if isinstance(comb, infer.VSDE):
        entry, arrays = _entry(comb._cache, split)
        if callable(entry):  # the jitted (key, phi0, fixed, arrays) of the eager setup
            state = comb._initial(jax.random.key(0), model, args, kwargs)
            phi0, fixed = state[2], state[3]
            return lambda key: entry(key, phi0, fixed, arrays)
        return lambda key: entry.run(key, arrays)
    if isinstance(comb, infer.Exact):  # three jits built in run (no cache of its own)
        from ppl.semantics.enumerated import Enumerated

        enumerated = Enumerated(model)
        fn = jax.jit(lambda k, a: (enumerated.log_evidence(*a, **kwargs),
                                   enumerated.marginals(*a, **kwargs),
                                   comb._draws(k, model, enumerated, a, kwargs)))
        return lambda key: fn(key, args)
    raise TypeError(f"no core known for {comb!r}")


# --------------------------------------------------------------------------- timing


def _timed(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def measure(name, make, label, model, args, repeats):
    comb = make()
    for i in range(2):  # compile, then one warm call
        jax.block_until_ready(comb.run(jax.random.key(100 + i), model, *args))
    core = core_of(comb, model, args)
    jax.block_until_ready(core(jax.random.key(99)))
    run_t, core_t = [], []
    for r in range(repeats):  # interleaved, a new key each round
        key = jax.random.key(r)
        run_t.append(_timed(lambda k=key: comb.run(k, model, *args)))
        core_t.append(_timed(lambda k=key: core(k)))
    return 1e3 * statistics.median(run_t), 1e3 * statistics.median(core_t)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--only", default="", help="comma-separated combinators")
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s]
    print(f"jax {jax.__version__} on {jax.default_backend()}; median of {args.repeats} "
          "calls after warm-up, interleaved; ms")
    print("| combinator     | model  |   run ms |  core ms | overhead ms |")
    print("|----------------|--------|----------|----------|-------------|")
    for name, (make, cells) in CELLS.items():
        if only and name not in only:
            continue
        for label, model, model_args in cells:
            try:
                run_ms, core_ms = measure(name, make, label, model, model_args, args.repeats)
            except Exception as e:  # noqa: BLE001  (report and go on)
                print(f"| {name:<14} | {label:<6} | failed: {type(e).__name__}: {e}"[:300])
                continue
            print(f"| {name:<14} | {label:<6} | {run_ms:8.2f} | {core_ms:8.2f} | "
                  f"{run_ms - core_ms:11.2f} |", flush=True)


if __name__ == "__main__":
    main()
