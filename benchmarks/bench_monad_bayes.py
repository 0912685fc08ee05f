"""monad-bayes' speed suite on ppl: logistic regression, HMM and LDA under MH, SMC and
resample-move SMC, with monad-bayes' reported timings printed next to ppl's.

The suite is monad-bayes' ``benchmark/Speed.hs`` (Scibior, Kammar & Ghahramani 2018,
"Functional programming for modular Bayesian inference", section 8; github
tweag/monad-bayes): models ``LR n`` and ``HMM n`` (n data points) for n in {10, 100, 200,
..., 1000} and ``LDA w`` (5 documents of w words) for w in {5, 50, 100, ..., 500}; data
simulated once at the largest size and cut to each size, as monad-bayes does
(``ppl.models.simulate_monad_bayes_*_data``); algorithms

* ``MH100``: ``infer.mh(num_samples=100, proposal="prior")``, one chain of 100 single-site
  regeneration steps (monad-bayes' ``mh 100``). On the HMM (a markov program) a move
  regenerates one time step and is scored on its Markov blanket (O(1) in T), or the global
  initial state ``x0`` by a run of the program, as monad-bayes picks one random choice. On
  LR and LDA a ppl site is what the trace records under one name, so the plate site ``"z"``
  is regenerated as a whole, where monad-bayes picks one scalar random choice: the cost of
  one step (one run of the program) is the same, the kernel is coarser.
* ``SMC100``: SMC with 100 particles and systematic resampling at every step
  (``ess_threshold=1``, as monad-bayes' ``smcSystematic``): ``infer.smc(100)`` on the
  programs as written. The HMM is a ``ppl.markov`` program (one step per time point); LR
  and LDA are static programs (plates), which ``infer.smc`` runs by data annealing
  (:mod:`ppl.inference.data_annealing`): one observation per step, in program order along
  the plates, which is monad-bayes' suspension at each ``factor``. For reference it also
  runs ``infer.importance(100)`` (likelihood weighting, the same O(N n) cost) and, for
  LR, ``infer.tempered_smc(100)`` (adaptive tempering, random-walk moves: a different
  algorithm; LDA has discrete latent sites, which tempered SMC does not take).
* ``RMSMC10-1``: ``infer.rmsmc(10, move=infer.mh(num_mcmc_steps=1))`` (monad-bayes'
  resample-move SMC with 10 particles and 1 MH move per step), resampling at every step as
  above, on the programs as written (on LR and LDA: IBIS, a single-site move on the
  program with the observations so far). On LR and LDA each move reruns the program, O(n)
  per step and O(n^2) per run, as in monad-bayes; on the HMM a move is scored on its Markov
  blanket, O(1) per step and O(n) per run.

Timing: the jitted core that ``.run()`` calls (one ``jax.jit`` per model, size and
algorithm, compiled on the first call) and the full ``.run()`` (the core plus the host-side
checks and the ``Posterior``). ``compile`` is the first call minus a warm call; ``core``
and ``.run()`` are the best of ``--repeats`` calls after compilation (one call when a warm
call takes over ``--slow`` seconds), each with a fresh key, with ``jax.block_until_ready``
on the outputs. ``log Z`` is ppl's mean log-evidence estimate over the ``.run()`` calls
(estimates from few particles are biased low). ``mb 2022``
is monad-bayes' reported time for that cell (2022, its own machine; quoted, not
re-measured): a reference, not a ratio measured here.

    python benchmarks/bench_monad_bayes.py --quick        # a few sizes, a couple of minutes
    python benchmarks/bench_monad_bayes.py --reference    # the cells monad-bayes reported
    python benchmarks/bench_monad_bayes.py                # the full grid (long: RMSMC is O(n^2))
    python benchmarks/bench_monad_bayes.py --models LR --sizes 200 500 --algorithms MH100
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax
import numpy as np

from ppl import inference as infer
from ppl import models as zoo

#: monad-bayes' reported timings in seconds (2022, on its own machine; quoted here, not
#: re-measured): (model, size, algorithm) -> seconds.
MONAD_BAYES_2022 = {
    ("LR", 200, "MH100"): 0.076,
    ("LR", 200, "SMC100"): 0.048,
    ("LR", 500, "MH100"): 0.274,
    ("LR", 500, "SMC100"): 0.116,
    ("LDA", 50, "MH100"): 0.256,
    ("LDA", 50, "SMC100"): 0.067,
    ("HMM", 1000, "SMC100"): 0.217,
}

FULL_SIZES = {
    "LR": [10] + list(range(100, 1001, 100)),
    "HMM": [10] + list(range(100, 1001, 100)),
    "LDA": [5] + list(range(50, 501, 50)),
}
QUICK_SIZES = {"LR": [200], "HMM": [200], "LDA": [50]}
REFERENCE_SIZES = {"LR": [200, 500], "HMM": [1000], "LDA": [50]}
ALGORITHMS = ("MH100", "SMC100", "RMSMC10-1")


# --------------------------------------------------------------------------- the grid


class Cell(NamedTuple):
    """One timed configuration: the suite's algorithm name, what ppl runs, the
    combinator, the program and its arguments (None: not run, ``note`` says why)."""

    algorithm: str
    runs: str
    combinator: object
    program: object
    args: tuple
    note: str = ""


def simulate(max_sizes, seed=0):
    """Data at the largest size of each model (monad-bayes simulates 1000 points / words
    and takes prefixes)."""
    k_lr, k_hmm, k_lda = jax.random.split(jax.random.PRNGKey(seed), 3)
    data = {}
    if "LR" in max_sizes:
        data["LR"] = zoo.simulate_monad_bayes_logreg_data(k_lr, max_sizes["LR"])
    if "HMM" in max_sizes:
        data["HMM"] = zoo.simulate_monad_bayes_hmm_data(k_hmm, max_sizes["HMM"])
    if "LDA" in max_sizes:
        data["LDA"] = zoo.simulate_monad_bayes_lda_data(k_lda, num_docs=5,
                                                        num_words=max_sizes["LDA"])
    return data


def cells(model, n, data, algorithms, ess_threshold):
    """The configurations of one (model, size)."""
    mh = infer.mh(num_samples=100, proposal="prior")
    smc = infer.smc(100, resample="systematic", ess_threshold=ess_threshold)
    rmsmc = infer.rmsmc(10, move=infer.mh(num_mcmc_steps=1), resample="systematic",
                        ess_threshold=ess_threshold)
    if model == "LR":
        xs, labels = data["LR"]
        args, program = (xs[:n], labels[:n]), zoo.monad_bayes_logreg
    elif model == "LDA":
        args, program = (data["LDA"][:, :n],), zoo.monad_bayes_lda
    else:
        args, program = (data["HMM"][:n],), zoo.monad_bayes_hmm
    out = []
    if "MH100" in algorithms:
        out.append(Cell("MH100", "mh(100, prior)", mh, program, args))
    if "SMC100" in algorithms:
        out.append(Cell("SMC100", "smc(100)", smc, program, args))
        if model != "HMM":
            out.append(Cell("SMC100", "alt: importance(100)", infer.importance(100),
                            program, args))
            if model == "LR":
                out.append(Cell("SMC100", "alt: tempered_smc(100)", infer.tempered_smc(100),
                                program, args))
            else:
                out.append(Cell("SMC100", "alt: tempered_smc(100)", None, None,
                                args, "n/a: discrete latent z"))
    if "RMSMC10-1" in algorithms:
        out.append(Cell("RMSMC10-1", "rmsmc(10, 1 mh step)", rmsmc, program, args))
    return out


# --------------------------------------------------------------------------- timing


def _timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def time_cell(cell: Cell, repeats: int, slow: float):
    """``(compile, best core, best .run(), mean log Z)`` for one configuration.

    The core is the jitted function ``.run()`` calls (``combinator._runs``, cached per
    model and argument structure), so timing it and ``.run()`` costs one compilation. A
    configuration whose warm call takes over ``slow`` seconds is timed once.
    """
    algo, model, args = cell.combinator, cell.program, cell.args
    core = lambda k: algo._runs(k, model, args, {})
    first, _ = _timed(lambda: core(jax.random.PRNGKey(0)))
    warm, _ = _timed(lambda: core(jax.random.PRNGKey(1)))
    core_times, run_times, log_z = [], [], []
    for r in range(1 if warm > slow else repeats):
        t, _ = _timed(lambda r=r: core(jax.random.PRNGKey(100 + r)))
        core_times.append(t)
        t, post = _timed(lambda r=r: algo.run(jax.random.PRNGKey(200 + r), model, *args))
        run_times.append(t)
        if post.log_evidence is not None:
            log_z.append(float(post.log_evidence))
    mean_log_z = float(np.mean(log_z)) if log_z else None
    return max(first - warm, 0.0), min(core_times), min(run_times), mean_log_z


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--quick", action="store_true",
                      help=f"sizes {QUICK_SIZES} (a couple of minutes)")
    grid.add_argument("--reference", action="store_true",
                      help=f"the cells monad-bayes published: sizes {REFERENCE_SIZES}")
    parser.add_argument("--models", nargs="+", choices=("LR", "HMM", "LDA"),
                        default=["LR", "HMM", "LDA"])
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="override the sizes (for every model chosen)")
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow", type=float, default=2.0,
                        help="time a configuration once if its warm call takes longer (s)")
    parser.add_argument("--ess-threshold", type=float, default=1.0,
                        help="SMC / RMSMC resampling threshold (1: every step, as monad-bayes)")
    args = parser.parse_args()

    sizes = QUICK_SIZES if args.quick else REFERENCE_SIZES if args.reference else FULL_SIZES
    sizes = {m: (args.sizes or sizes[m]) for m in args.models}
    data = simulate({m: max(s) for m, s in sizes.items()})
    print(f"jax {jax.__version__}, devices {jax.devices()}, repeats {args.repeats}, "
          f"ess_threshold {args.ess_threshold}")
    header = (f"{'model':<7} {'algorithm':<10} {'ppl runs':<40} {'compile':>8} {'core':>8} "
              f"{'.run()':>8} {'mb 2022':>8} {'log Z':>9}")
    print(header)
    print("-" * len(header))
    for model in args.models:
        for n in sizes[model]:
            for cell in cells(model, n, data, args.algorithms, args.ess_threshold):
                name = f"{model}{n}"
                ref = MONAD_BAYES_2022.get((model, n, cell.algorithm))
                if cell.combinator is None:
                    print(f"{name:<7} {cell.algorithm:<10} {cell.runs:<40} {cell.note}")
                    continue
                compile_s, core_s, run_s, log_z = time_cell(cell, args.repeats, args.slow)
                print(f"{name:<7} {cell.algorithm:<10} {cell.runs:<40} {compile_s:>8.2f} "
                      f"{core_s:>8.4f} {run_s:>8.4f} {_fmt(ref, '.3f'):>8} "
                      f"{_fmt(log_z, '.2f'):>9}", flush=True)


if __name__ == "__main__":
    main()
