"""Bootstrap particle filter on the 1-D linear-Gaussian SSM: ppl vs hand-written JAX vs
`particles`, side by side in one run.

Model: x_1 ~ N(0, 1), x_t = 0.9 x_{t-1} + N(0, 1), y_t = x_t + N(0, 0.5^2), T = 1000;
systematic resampling at every step. Times are the best of ``--repeats`` runs after
compilation (each run with a fresh key, ``block_until_ready``); the log-evidence error is
against the Kalman filter, averaged over those runs.

    python benchmarks/bench_pf.py            # N in {1000, 10000}
    python benchmarks/bench_pf.py --no-particles

`particles` (Chopin's library) is optional: ``pip install particles``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl import inference as infer
from ppl import models as zoo

RHO, SIGMA_X, SIGMA_Y = 0.9, 1.0, 0.5


def handwritten_filter(key, ys, num_particles):
    """The lowering target: scan over time, vmap-free array code over particles."""

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
        return (x, incr, log_z), None

    keys = jax.random.split(key, ys.shape[0])
    init = (jnp.zeros(num_particles), jnp.zeros(num_particles), jnp.zeros(()))
    (_, _, log_z), _ = jax.lax.scan(step, init, (keys, ys))
    return log_z


def best_time(fn, repeats):
    times, values = [], []
    for r in range(repeats):
        start = time.perf_counter()
        value = fn(r + 1)
        times.append(time.perf_counter() - start)
        values.append(float(value))
    return min(times), np.mean(values)


def run_particles(ys, num_particles, repeats):
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

    return best_time(once, repeats)


def time_ppl_and_jax(ys, n, repeats):
    """Best time and mean log evidence of the hand-written filter and of ppl's SMC (its
    pure jitted core, and the full ``.run`` that builds the Posterior)."""
    algo = infer.smc(num_particles=n, resample="systematic", ess_threshold=1.0)
    core = jax.jit(lambda k: algo.core(k, zoo.lgssm_1d, (ys,), {}).log_evidence)
    hand = jax.jit(handwritten_filter, static_argnums=2)
    methods = {
        "hand-written JAX": lambda r: hand(jax.random.PRNGKey(r), ys, n),
        "ppl smc (core)": lambda r: core(jax.random.PRNGKey(r)),
        "ppl smc .run()": lambda r: algo.run(jax.random.PRNGKey(r), zoo.lgssm_1d, ys)
        .log_evidence,
    }
    rows = {}
    for name, fn in methods.items():
        jax.block_until_ready(fn(0))  # compile
        rows[name] = best_time(lambda r, fn=fn: jax.block_until_ready(fn(r)), repeats)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=1000)
    parser.add_argument("--N", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-particles", action="store_true")
    args = parser.parse_args()

    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(0), args.T, RHO, SIGMA_X, SIGMA_Y)
    exact = float(zoo.lgssm_1d_exact(np.asarray(ys), RHO, SIGMA_X, SIGMA_Y)["log_evidence"])
    print(f"T = {args.T}, Kalman log evidence {exact:.3f}, devices {jax.devices()}")
    header = (f"{'N':>7} {'method':<22} {'time (s)':>10} {'vs JAX':>8} "
              f"{'log Z err':>10}")
    print(header)
    print("-" * len(header))
    for n in args.N:
        rows = time_ppl_and_jax(ys, n, args.repeats)
        if not args.no_particles:
            try:
                rows["particles"] = run_particles(ys, n, args.repeats)
            except ImportError:
                print("(particles not installed: pip install particles)")
        base = rows["hand-written JAX"][0]
        for name, (t, log_z) in rows.items():
            print(f"{n:>7} {name:<22} {t:>10.4f} {t / base:>8.2f} {log_z - exact:>10.3f}")


if __name__ == "__main__":
    main()
