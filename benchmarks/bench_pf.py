"""Bootstrap particle filter on the 1-D linear-Gaussian SSM: ppl vs hand-written JAX vs
`particles`, side by side in one run.

Model: x_1 ~ N(0, 1), x_t = 0.9 x_{t-1} + N(0, 1), y_t = x_t + N(0, 0.5^2), T = 1000;
systematic resampling at every step. Contenders:

* ``hand-written JAX``: :func:`handwritten_filter`, the lowering target (one ``lax.scan``
  over time, array code over particles, the log evidence only);
* ``hand-written JAX with paths``: :func:`handwritten_filter_paths`, the same filter
  recording ancestors and states in its scan and tracing the final particles' paths back
  once at the end (the lowering target of ``.run()``, compared in the ``/ hand paths``
  column);
* ``ppl smc (core)``: ``infer.smc(...).core`` jitted, returning the log evidence (XLA drops
  what that does not need);
* ``ppl smc .run()``: the full run, which returns a ``Posterior`` with every particle's
  path traced back through the genealogy, the pointwise log-likelihood and the per-step
  filter records (particles, weights, ancestors, ESS, means);
* ``ppl .run(history=False)``: the run when only the evidence / final filter is wanted
  (no genealogy, nothing of size T x N kept);
* ``particles``: Chopin's library (NumPy), ``ESSrmin=1`` (resample at every step).

Times are the best of ``--repeats`` runs after compilation, each run with a fresh key
(seed for ``particles``) and ``block_until_ready``; the contenders are interleaved
(one run of each per round) so that a loaded machine slows them alike. The log-evidence
error is against the Kalman filter: mean and standard deviation over the timed runs.

    python benchmarks/bench_pf.py                    # N in {1000, 10000}, 5 repeats
    python benchmarks/bench_pf.py --repeats 9 --no-particles

`particles` (Chopin's library) is optional: ``pip install particles`` (0.4 pins
``numpy<2``; it also runs on NumPy 2 installed apart with ``pip install --no-deps
--target DIR particles numba llvmlite scikit-learn joblib threadpoolctl cloudpickle``
and ``PYTHONPATH=DIR``, which leaves the environment's NumPy and JAX as they are).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl import inference as infer
from ppl import models as zoo

RHO, SIGMA_X, SIGMA_Y = 0.9, 1.0, 0.5


def _bootstrap_step(num_particles):
    """One step of the hand-written bootstrap filter: systematic resampling, propagation,
    weighting; ``(x, log_w, log_z), (key, y) -> (new carry, (ancestors, states))``."""

    def step(carry, inputs):
        x, log_w, log_z = carry
        key, y = inputs
        k_res, k_move = jax.random.split(key)
        w = jnp.exp(log_w - logsumexp(log_w))
        u = (jax.random.uniform(k_res) + jnp.arange(num_particles)) / num_particles
        idx = jnp.clip(jnp.searchsorted(jnp.cumsum(w), u), 0, num_particles - 1)
        x = RHO * x[idx] + SIGMA_X * jax.random.normal(k_move, (num_particles,))
        incr = -0.5 * ((y - x) / SIGMA_Y) ** 2 - jnp.log(SIGMA_Y * jnp.sqrt(2 * jnp.pi))
        log_z = log_z + logsumexp(incr) - jnp.log(num_particles)
        return (x, incr, log_z), (idx, x)

    return step


def handwritten_filter(key, ys, num_particles):
    """The lowering target: scan over time, vmap-free array code over particles."""
    step = _bootstrap_step(num_particles)
    keys = jax.random.split(key, ys.shape[0])
    init = (jnp.zeros(num_particles), jnp.zeros(num_particles), jnp.zeros(()))
    (_, _, log_z), _ = jax.lax.scan(lambda c, i: (step(c, i)[0], None), init, (keys, ys))
    return log_z


def handwritten_filter_paths(key, ys, num_particles):
    """The lowering target of a run that returns paths: :func:`handwritten_filter` that
    also records each step's ancestors and states in the scan and traces the final
    particles' lineages back once at the end (a reverse ``lax.scan`` of gathers, Kitagawa
    1996); returns the log evidence and the paths, (N, T), particle n's path in row n."""

    def back(idx, record):
        ancestors_t, x_t = record
        return ancestors_t[idx], x_t[idx]

    keys = jax.random.split(key, ys.shape[0])
    init = (jnp.zeros(num_particles), jnp.zeros(num_particles), jnp.zeros(()))
    (_, _, log_z), (ancestors, states) = jax.lax.scan(_bootstrap_step(num_particles), init,
                                                      (keys, ys))
    final = jnp.arange(num_particles, dtype=ancestors.dtype)
    _, paths = jax.lax.scan(back, final, (ancestors, states), reverse=True)
    return log_z, paths.T


def particles_filter(ys, num_particles):
    """``seed -> log evidence`` of `particles`' bootstrap filter on the same model."""
    import particles
    from particles import kalman
    from particles import state_space_models as ssms

    model = kalman.LinearGauss(sigmaX=SIGMA_X, sigmaY=SIGMA_Y, rho=RHO, sigma0=SIGMA_X)
    data = np.asarray(ys, dtype=np.float64)

    def once(seed):
        np.random.seed(seed)
        fk = ssms.Bootstrap(ssm=model, data=data)
        pf = particles.SMC(fk=fk, N=num_particles, resampling="systematic", ESSrmin=1.0,
                           store_history=False, collect=[])
        pf.run()
        return pf.logLt

    return once


def contenders(ys, n, with_particles):
    """``name -> (run r -> log evidence)``; the JAX ones compiled by a first call."""
    algo = infer.smc(num_particles=n, resample="systematic", ess_threshold=1.0)
    light = infer.smc(num_particles=n, resample="systematic", ess_threshold=1.0,
                      history=False)
    core = jax.jit(lambda k: algo.core(k, zoo.lgssm_1d, (ys,), {}).log_evidence)
    hand = jax.jit(handwritten_filter, static_argnums=2)
    hand_paths = jax.jit(handwritten_filter_paths, static_argnums=2)

    def key(r):
        return jax.random.PRNGKey(r)

    methods = {
        "hand-written JAX": lambda r: hand(key(r), ys, n),
        "hand-written JAX with paths": lambda r: hand_paths(key(r), ys, n)[0],
        "ppl smc (core)": lambda r: core(key(r)),
        "ppl smc .run()": lambda r: algo.run(key(r), zoo.lgssm_1d, ys).log_evidence,
        "ppl .run(history=False)": lambda r: light.run(key(r), zoo.lgssm_1d, ys)
        .log_evidence,
    }
    for fn in methods.values():
        jax.block_until_ready(fn(0))  # compile
    if with_particles:
        try:
            methods["particles"] = particles_filter(ys, n)
        except ImportError:
            print("(particles not installed: pip install particles)")
    return methods


def interleaved_best(methods, repeats):
    """Best time and the log evidences of each method over ``repeats`` rounds, one run
    of every method per round (run ``r`` uses key / seed ``r + 1``)."""
    times = {name: [] for name in methods}
    values = {name: [] for name in methods}
    for r in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            value = jax.block_until_ready(fn(r + 1))
            times[name].append(time.perf_counter() - start)
            values[name].append(float(value))
    return {name: (min(times[name]), np.asarray(values[name])) for name in methods}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--N", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-particles", action="store_true")
    args = parser.parse_args()

    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(0), args.T, RHO, SIGMA_X, SIGMA_Y)
    exact = float(zoo.lgssm_1d_exact(np.asarray(ys), RHO, SIGMA_X, SIGMA_Y)["log_evidence"])
    versions = f"jax {jax.__version__}, numpy {np.__version__}"
    if not args.no_particles:
        try:
            from importlib.metadata import version

            versions += f", particles {version('particles')}"
        except Exception:  # noqa: BLE001  (not installed: reported below)
            pass
    print(f"T = {args.T}, Kalman log evidence {exact:.3f}; {versions}; "
          f"{jax.devices()[0].platform} ({os.cpu_count()} cores, {platform.machine()}); "
          f"best of {args.repeats} interleaved runs after compilation")
    header = (f"| {'N':>6} | {'method':<27} | {'time (s)':>9} | {'/ hand JAX':>10} | "
              f"{'/ hand paths':>12} | {'particles /':>11} | {'log Z err (mean +- sd)':>22} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for n in args.N:
        rows = interleaved_best(contenders(ys, n, not args.no_particles), args.repeats)
        base = rows["hand-written JAX"][0]
        base_paths = rows["hand-written JAX with paths"][0]
        slow = rows["particles"][0] if "particles" in rows else np.nan
        for name, (t, log_z) in rows.items():
            err = log_z - exact
            speedup = f"{slow / t:>11.1f}" if np.isfinite(slow) else f"{'-':>11}"
            print(f"| {n:>6} | {name:<27} | {t:>9.4f} | {t / base:>10.2f} | "
                  f"{t / base_paths:>12.2f} | {speedup} | "
                  f"{err.mean():>+12.3f} +- {err.std(ddof=1):>6.3f} |")


if __name__ == "__main__":
    main()
