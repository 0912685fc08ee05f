"""PaRIS smoothing of an additive functional: ppl vs `particles`' ``collectors.Paris``,
side by side in one run, and the cost of one PPG sweep as N and Ñ grow.

Model: the 1-D linear-Gaussian SSM ``x_1 ~ N(0, 1)``, ``x_t = 0.9 x_{t-1} + N(0, 1)``,
``y_t = x_t + N(0, 0.5^2)``, T = 500 (``ppl.models.lgssm_1d``; in `particles`
``kalman.LinearGauss(sigmaX=1, sigmaY=0.5, rho=0.9, sigma0=1)``, the same law). Functional
``psi_t = (x_t, x_{t-1} x_t)`` (x_0 = 0), whose smoothed expectation the RTS smoother gives
exactly. Both smoothers resample at every step (multinomial in ppl, `particles`'
default systematic with ``ESSrmin=1``) and draw Ñ = 2 backward indices per particle by the
hybrid accept-reject of Dau & Chopin (2022): ``particles`` with its default budget of N
trials per draw, ppl with ``max_trials=16`` (``backward="reject"``) and, for reference,
ppl's exact O(N^2) draws (``backward="exact"``). Every variant draws exactly from the
backward kernel, so their errors have the same law.

Table 1: time of one run (after compilation for ppl: best of ``--repeats``; `particles`:
``--particles-runs`` runs, best), the ratio `particles` / ppl, and the error of the
estimate against RTS for both components: mean +- sd over the runs (ppl: ``--seeds``
independent runs, vmapped; `particles`: its runs).

Table 2: one PPG sweep (a conditional PaRIS sweep with a frozen reference path and a new
path drawn through the backward indices, accept-reject draws) timed for N in ``--sweep-N``
at Ñ = 2 and for Ñ in ``--sweep-K`` at N = 500: seconds per sweep and seconds per sweep
per N Ñ (constant when the cost is linear in both).

    python benchmarks/bench_paris.py                  # 5-20 minutes on 2 busy cores
    python benchmarks/bench_paris.py --no-particles   # ppl only
    python benchmarks/bench_paris.py --only-sweeps --repeats 5   # table 2 only

`particles` (Chopin's library) is optional; it needs numpy < 2 (its 0.3/0.4 releases).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from ppl.inference.smoothing import run_paris

from ppl import models as zoo

RHO, SIGMA_X, SIGMA_Y = 0.9, 1.0, 0.5


def psi(t, x_prev, x, params):
    """The additive functional (x_t, x_{t-1} x_t)."""
    return jnp.stack([x, x_prev * x])


def exact_answer(ys):
    """E[sum_t x_t | y] and E[sum_t x_{t-1} x_t | y] from the RTS smoother."""
    ex = zoo.lgssm_1d_exact(np.asarray(ys, np.float64), RHO, SIGMA_X, SIGMA_Y)
    return np.array([ex["smoothed_means"].sum(), ex["e_xprev_x"].sum()])


def ppl_runner(ys, n, num_backward, backward):
    """A jitted ``key -> estimate`` and its vmapped version over keys."""

    def one(key):
        return run_paris(key, zoo.lgssm_1d, (ys,), {}, n, num_backward, psi,
                         backward=backward).estimate

    return jax.jit(one), jax.jit(jax.vmap(one))


def particles_runner(ys, n, num_backward):
    """``seed -> estimate`` of `particles`' PaRIS on the same model and data."""
    import particles
    from particles import collectors, kalman
    from particles import state_space_models as ssms

    model = kalman.LinearGauss(sigmaX=SIGMA_X, sigmaY=SIGMA_Y, rho=RHO, sigma0=SIGMA_X)
    # the bound of log m(x_prev, x) = log N(x; rho x_prev, sigma_x^2) for the rejection step
    model.upper_bound_log_pt = lambda t: -np.log(SIGMA_X * np.sqrt(2 * np.pi))
    data = np.asarray(ys, dtype=np.float64)

    def add_func(t, xp, x):
        prev = np.zeros_like(x) if xp is None else xp
        x, prev = np.broadcast_arrays(x, prev)
        return np.stack([x, prev * x], axis=-1)

    def once(seed):
        np.random.seed(seed)
        fk = ssms.Bootstrap(ssm=model, data=data)
        fk.add_func = add_func
        pf = particles.SMC(fk=fk, N=n, resampling="systematic", ESSrmin=1.0,
                           store_history=False, collect=[collectors.Paris(Nparis=num_backward)])
        pf.run()
        return np.asarray(pf.summaries.paris[-1])

    return once


def timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def table_paris(ys, exact, args):
    n, nb = args.N, 2
    print(f"\nTable 1: PaRIS, T = {len(ys)}, N = {n}, Ñ = {nb}; error = estimate - RTS "
          f"(mean +- sd over runs)")
    header = (f"| {'method':<30} | {'time (s)':>9} | {'particles /':>11} | "
              f"{'err sum x_t':>18} | {'err sum x_{t-1} x_t':>20} | {'runs':>4} |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    rows = {}
    for backward in ("reject", "exact"):
        single, batch = ppl_runner(ys, n, nb, backward)
        timed(single, jax.random.PRNGKey(0))  # compile
        best = min(timed(single, jax.random.PRNGKey(r + 1))[0] for r in range(args.repeats))
        keys = jax.random.split(jax.random.PRNGKey(1234), args.seeds)
        estimates = np.asarray(batch(keys), np.float64)
        rows[f"ppl paris(backward={backward!r})"] = (best, estimates - exact)
    if not args.no_particles:
        try:
            run = particles_runner(ys, n, nb)
        except ImportError:
            print("(particles not installed: pip install particles)")
        else:
            times, errs = [], []
            for r in range(args.particles_runs):
                t, est = timed(run, r + 1)
                times.append(t)
                errs.append(est - exact)
            rows["particles collectors.Paris"] = (min(times), np.asarray(errs))
    slow = rows.get("particles collectors.Paris", (np.nan,))[0]
    for name, (t, err) in rows.items():
        sd = err.std(axis=0, ddof=1) if len(err) > 1 else np.full(2, np.nan)
        ratio = f"{slow / t:>11.1f}" if np.isfinite(slow) else f"{'-':>11}"
        print(f"| {name:<30} | {t:>9.3f} | {ratio} | {err[:, 0].mean():>+8.3f} +- "
              f"{sd[0]:>6.3f} | {err[:, 1].mean():>+9.3f} +- {sd[1]:>7.3f} | {len(err):>4} |")


def sweep_runner(ys, n, nb):
    """A jitted ``(key, reference) -> (estimate, new reference)``: one PPG sweep."""

    def sweep(key, reference):
        out = run_paris(key, zoo.lgssm_1d, (ys,), {}, n, nb, psi, backward="reject",
                        reference=reference, draw_path=True)
        return out.estimate, out.path

    return jax.jit(sweep)


def table_sweeps(ys, args):
    print(f"\nTable 2: one PPG sweep (conditional PaRIS, accept-reject, max_trials=16), "
          f"T = {len(ys)}; best of {args.repeats} after compilation")
    header = (f"| {'N':>5} | {'Ñ':>3} | {'s / sweep':>10} | {'us / (sweep N Ñ)':>17} | "
              f"{'fallback draws':>14} |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    configs = [(n, 2) for n in args.sweep_N] + [(500, k) for k in args.sweep_K if k != 2]
    reference = {"x": jnp.asarray(ys, jnp.float32)}  # any path will do for the timing
    for n, nb in configs:
        sweep = sweep_runner(ys, n, nb)
        _, (_, ref) = timed(sweep, jax.random.PRNGKey(0), reference)  # compile
        best = np.inf
        for r in range(args.repeats):
            t, (_, ref) = timed(sweep, jax.random.PRNGKey(r + 1), ref)
            best = min(best, t)
        fallbacks = run_paris(jax.random.PRNGKey(7), zoo.lgssm_1d, (ys,), {}, n, nb, psi,
                              backward="reject", reference=ref).steps.fallbacks
        share = float(np.sum(fallbacks)) / (len(ys) * n * nb)
        print(f"| {n:>5} | {nb:>3} | {best:>10.4f} | {1e6 * best / (n * nb):>17.2f} | "
              f"{share:>13.2%} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=500)
    parser.add_argument("--N", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--particles-runs", type=int, default=1)
    parser.add_argument("--sweep-N", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--sweep-K", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--no-particles", action="store_true")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--only-sweeps", action="store_true")
    args = parser.parse_args()

    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(0), args.T, RHO, SIGMA_X, SIGMA_Y)
    exact = exact_answer(ys)
    versions = f"jax {jax.__version__}, numpy {np.__version__}"
    if not args.no_particles:
        try:
            import particles

            versions += f", particles {particles.__version__}"
        except ImportError:
            pass
    print(f"T = {args.T}; RTS: E[sum x_t | y] = {exact[0]:.3f}, E[sum x_(t-1) x_t | y] = "
          f"{exact[1]:.3f}; {versions}; {jax.devices()[0].platform} ({os.cpu_count()} "
          f"cores, {platform.machine()})")
    if not args.only_sweeps:
        table_paris(ys, exact, args)
    if not args.no_sweeps:
        table_sweeps(ys, args)


if __name__ == "__main__":
    main()
