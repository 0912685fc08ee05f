"""NUTS through ppl vs NumPyro's NUTS directly, on the same models, keys and settings.

Models: non-centred eight schools (``ppl.models.eight_schools``) and Bayesian logistic
regression (``ppl.models.logistic_regression``, N = 1000 points, D = 10 features,
simulated). Every contender uses the same key, ``num_warmup``, ``num_samples`` and
``num_chains`` (vectorized chains), no progress bar.

Contenders:

* ``ppl``: ``infer.nuts(...).run(key, model, *args)``; a ``Posterior`` with the
  deterministic sites, the pointwise log-likelihood and the sample stats, everything in
  one ``jax.jit`` compiled once per model;
* ``numpyro jit``: NumPyro's ``MCMC(NUTS(model)).run`` inside ``jax.jit`` (compiled once),
  returning ``get_samples()``: the same sampler computation without ppl's wrapping, so
  ``ppl / numpyro jit`` is ppl's overhead (target at most 1.05);
* ``numpyro run``: ``MCMC.run`` called as usual on one reused ``MCMC`` object, then
  ``get_samples()``. NumPyro re-jits its sampling loop inside every ``run`` call (the
  jitted loop body is a new function each call), so each of its runs includes a
  compilation; it is shown for reference (``--no-eager`` skips it).

Times are wall-clock seconds after compilation: each contender runs once first (compiling)
and is then timed on ``--repeats`` runs, each with a new key (the same new keys for every
contender), with ``jax.block_until_ready`` on the results; the table shows the best
(minimum) of them, the least disturbed by other load on the machine. The contenders are
interleaved within each repeat, so they share the machine's load. ``numpyro run``, which
recompiles every time, is timed on only ``--eager-repeats`` of them.

    python benchmarks/bench_nuts.py
    python benchmarks/bench_nuts.py --num-samples 2000 --num-chains 4 --repeats 20
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS

from ppl import inference as infer
from ppl import models as zoo


def logistic_data(key, n=1000, d=10):
    k_x, k_w, k_y = jax.random.split(key, 3)
    X = jax.random.normal(k_x, (n, d))
    w = jax.random.normal(k_w, (d,))
    y = jax.random.bernoulli(k_y, jax.nn.sigmoid(X @ w + 0.5)).astype(jnp.int32)
    return X, y


def contenders(model, args, num_warmup, num_samples, num_chains, eager):
    """name -> ``run(key)`` returning arrays to block on."""
    ppl_nuts = infer.nuts(num_samples, num_warmup, num_chains)

    def make_mcmc():
        return MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples,
                    num_chains=num_chains, chain_method="vectorized", progress_bar=False)

    def numpyro_in_jit(key, *a):
        mcmc = make_mcmc()
        mcmc.run(key, *a)
        return mcmc.get_samples()

    jitted = jax.jit(numpyro_in_jit)
    reused = make_mcmc()

    def numpyro_run(key):
        reused.run(key, *args)
        return reused.get_samples()

    runs = {
        "ppl": lambda key: ppl_nuts.run(key, model, *args).samples,
        "numpyro jit": lambda key: jitted(key, *args),
    }
    if eager:
        runs["numpyro run"] = numpyro_run
    return runs


def bench(name, model, args, opts):
    runs = contenders(model, args, opts.num_warmup, opts.num_samples, opts.num_chains,
                      not opts.no_eager)
    key = jax.random.PRNGKey(opts.seed)
    means = {}
    for label, run in runs.items():  # compile (and check the contenders agree)
        out = jax.block_until_ready(run(key))
        means[label] = {k: float(jnp.mean(v)) for k, v in out.items() if v.ndim == 1}
    times = {label: [] for label in runs}
    for r in range(opts.repeats):
        key_r = jax.random.fold_in(key, r + 1)
        for label, run in runs.items():
            if label == "numpyro run" and r >= opts.eager_repeats:
                continue  # it recompiles on every call: a couple of runs say enough
            start = time.perf_counter()
            jax.block_until_ready(run(key_r))
            times[label].append(time.perf_counter() - start)
    best = {label: min(t) for label, t in times.items()}
    return best, means


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--eager-repeats", type=int, default=2,
                        help="timed runs of NumPyro's plain MCMC.run (at most --repeats)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-eager", action="store_true",
                        help="skip NumPyro's plain MCMC.run (it recompiles on every call)")
    opts = parser.parse_args()

    X, y = logistic_data(jax.random.PRNGKey(123))
    problems = [
        ("eight schools (non-centred)", zoo.eight_schools,
         (jnp.asarray(zoo.EIGHT_SCHOOLS_Y), jnp.asarray(zoo.EIGHT_SCHOOLS_SIGMA))),
        ("logistic regression N=1000 D=10", zoo.logistic_regression, (X, y)),
    ]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; warmup {opts.num_warmup}, "
          f"samples {opts.num_samples}, chains {opts.num_chains} (vectorized); best of "
          f"{opts.repeats} runs after compilation ({opts.eager_repeats} for numpyro run), "
          "seconds")
    header = (f"| {'model':<32} | {'ppl':>8} | {'numpyro jit':>11} | {'numpyro run':>11} | "
              f"{'ppl / numpyro jit':>17} | {'ppl / numpyro run':>17} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    notes = []
    for name, model, args in problems:
        best, means = bench(name, model, args, opts)
        eager = best.get("numpyro run")
        print(
            f"| {name:<32} | {best['ppl']:>8.3f} | {best['numpyro jit']:>11.3f} | "
            f"{eager if eager is not None else float('nan'):>11.3f} | "
            f"{best['ppl'] / best['numpyro jit']:>17.3f} | "
            f"{(best['ppl'] / eager) if eager else float('nan'):>17.3f} |"
        )
        site = "mu" if "mu" in means["ppl"] else "b"
        agree = ", ".join(f"{label} {m[site]:.4f}" for label, m in means.items())
        notes.append(f"{name}: posterior mean of {site} at the first key: {agree}")
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
