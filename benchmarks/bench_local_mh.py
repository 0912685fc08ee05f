"""Single-site MH on long sequences: one time step per move (the default) against
whole-site regeneration (``block="site"``, the kernel of earlier versions), side by side.

Three tables (2 CPU cores, one process, best of ``--repeats`` warm calls of the jitted core
that ``.run`` calls, fresh key each call; ``.run`` adds under 5 ms, see bench_overhead):

* ``mh(num_samples=2000)`` on the 3-state discrete HMM (``zoo.discrete_hmm``, no global
  site) at T = 100 and T = 1000, and the ratio T = 1000 / T = 100: a local move costs O(1)
  in T (the draws themselves, 2000 x T states, are still written out).
* MH100 of monad-bayes' speed suite (``mh(num_samples=100)``, one chain) on its HMM
  (``zoo.monad_bayes_hmm``, a global initial state ``x0`` and T = 1000 steps), local
  against whole-site moves.
* ``rmsmc(10)`` (one MH move per particle per step, resampling at every step as
  monad-bayes) on the discrete HMM and on monad-bayes' HMM for T = 200..1000, with a
  least-squares fit ``time = a + b T + c T^2``: local moves make the run O(T) (c ~ 0),
  whole-path moves O(T^2).

    python benchmarks/bench_local_mh.py            # about 5 minutes on 2 cores
    python benchmarks/bench_local_mh.py --quick    # fewer sizes
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from ppl import inference as infer
from ppl import models as zoo


def _timed(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def warm_time(algo, model, args, repeats):
    """Best of ``repeats`` warm calls of the compiled core (first call compiles)."""
    core = lambda k: algo._runs(k, model, args, {})
    _timed(lambda: core(jax.random.PRNGKey(0)))
    return min(_timed(lambda r=r: core(jax.random.PRNGKey(10 + r))) for r in range(repeats))


def hmm_data(T, seed=0):
    return zoo.simulate_discrete_hmm(jax.random.PRNGKey(seed), T)[1]


def mb_data(T, seed=1):
    return zoo.simulate_monad_bayes_hmm_data(jax.random.PRNGKey(seed), T)


def interleaved_times(algo, model, args_list, repeats):
    """Best of ``repeats`` warm calls of the compiled core for each argument tuple, the
    calls interleaved round by round (so that a change of the machine's speed during the
    measurement moves all of them alike)."""
    cores = [lambda k, a=a: algo._runs(k, model, a, {}) for a in args_list]
    for core in cores:
        _timed(lambda core=core: core(jax.random.PRNGKey(0)))
    best = [np.inf] * len(cores)
    for r in range(repeats):
        for i, core in enumerate(cores):
            t = _timed(lambda core=core, r=r: core(jax.random.PRNGKey(10 + r)))
            best[i] = min(best[i], t)
    return best


def table_mh(repeats):
    """T = 100 and T = 1000 interleaved, best of ``max(repeats, 21)`` (a call takes tens of
    milliseconds, and the ratio of two such times is what this table reports)."""
    print("\n| mh(num_samples=2000), discrete HMM | T = 100 (s) | T = 1000 (s) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for block in ("step", "site"):
        algo = infer.mh(num_samples=2000, block=block)
        n = max(repeats, 21) if block == "step" else repeats
        t100, t1000 = interleaved_times(algo, zoo.discrete_hmm,
                                        [(hmm_data(100),), (hmm_data(1000),)], n)
        print(f"| block={block!r} | {t100:.4f} | {t1000:.4f} | {t1000 / t100:.2f} |")


def table_mh100(repeats):
    print("\n| MH100 on monad-bayes' HMM, T = 1000 | time (s) | accept rate |")
    print("| --- | ---: | ---: |")
    args = (mb_data(1000),)
    times = {}
    for block in ("step", "site"):
        algo = infer.mh(num_samples=100, block=block)
        times[block] = warm_time(algo, zoo.monad_bayes_hmm, args, repeats)
        rate = algo.run(jax.random.PRNGKey(3), zoo.monad_bayes_hmm, *args).info["accept_rate"]
        print(f"| block={block!r} | {times[block]:.4f} | {rate:.2f} |")
    print(f"| whole-site / local | {times['site'] / times['step']:.1f}x | |")


def _fit(Ts, times):
    """Least-squares ``time = a + b T + c T^2``; returns (b, c) and the share of the
    quadratic term at the largest T."""
    Ts = np.asarray(Ts, float)
    design = np.stack([np.ones_like(Ts), Ts, Ts**2], axis=1)
    a, b, c = np.linalg.lstsq(design, np.asarray(times), rcond=None)[0]
    return b, c, c * Ts[-1] ** 2 / times[-1]


def table_rmsmc(sizes, repeats):
    cols = " | ".join(f"T = {T}" for T in sizes)
    print(f"\n| rmsmc(10), moves | {cols} | slope b (ms / step) | c T_max^2 / time |")
    print("| --- |" + " ---: |" * (len(sizes) + 2))
    models = (("discrete HMM", zoo.discrete_hmm, hmm_data),
              ("monad-bayes HMM", zoo.monad_bayes_hmm, mb_data))
    for name, model, data in models:
        for block in ("step", "site"):
            algo = infer.rmsmc(10, move=infer.mh(num_mcmc_steps=1, block=block),
                               ess_threshold=1.0)
            times = [warm_time(algo, model, (data(T),), repeats) for T in sizes]
            b, c, share = _fit(sizes, times)
            cells = " | ".join(f"{t:.3f}" for t in times)
            print(f"| {name}, block={block!r} | {cells} | {1e3 * b:.3f} | {share:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}")
    table_mh(args.repeats)
    table_mh100(args.repeats)
    sizes = (200, 600, 1000) if args.quick else (200, 400, 600, 800, 1000)
    table_rmsmc(sizes, args.repeats)


if __name__ == "__main__":
    main()
