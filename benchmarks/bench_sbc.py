"""Simulation-based calibration: ``ppl.check.sbc`` against the same loop written by hand
around NumPyro's ``MCMC(NUTS(...))``.

Model: non-centred eight schools (``ppl.models.eight_schools``; the hand-written loop uses
the same model written in plain NumPyro). Every contender does the same work per
simulation: one prior-predictive draw (all drawn up front), one NUTS run (or tempered
SMC) with the same ``num_warmup`` / ``num_samples`` (one chain), thinning to
``num_draws`` evenly spaced draws, and the ranks of the 18 scalars of ``mu``, ``tau``,
``theta_tilde`` and ``theta`` and of the log-likelihood of the simulated data (at the
true parameters against each draw), ties broken at random.

Contenders:

* ``ppl sbc nuts``: ``ppl.check.sbc(eight_schools, infer.nuts(S, W), ...)``; its
  combinator compiles once (the first simulation) and every later simulation calls the
  compiled run; sbc also computes the chains' bulk ESS and the consistency check of each
  simulation;
* ``ppl sbc tempered_smc``: ``infer.tempered_smc(num_particles)`` (no NumPyro counterpart);
* ``numpyro jit``: the hand-written loop, with ``MCMC.run`` inside a ``jax.jit`` compiled
  once and the ranks and log-likelihoods in jitted helpers: the fastest hand-written loop;
* ``numpyro run``: the hand-written loop as usually written, ``MCMC.run`` on one reused
  ``MCMC`` object (``jit_model_args=True``); NumPyro re-jits its sampling loop in every
  ``run`` call, so every simulation includes a compilation (timed on ``--eager-sims``
  simulations only).

Columns: ``sims/s`` = simulations per second after the first (compiling) simulation;
``first s`` = the first simulation (compilation included; for sbc, also the prior draws
and the replay it compiles); ``ratio`` = the contender's seconds per simulation divided by
``numpyro jit``'s. All contenders run interleaved in one process on the same machine.

    python benchmarks/bench_sbc.py
    python benchmarks/bench_sbc.py --num-simulations 100 --num-samples 1000 --num-warmup 500
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
from numpyro.infer import MCMC, NUTS, Predictive
from numpyro.infer.util import log_likelihood

import ppl
from ppl import inference as infer
from ppl import models as zoo

LATENT = ("mu", "tau", "theta_tilde")


def eight_schools_numpyro(sigma, y=None):
    """The non-centred eight schools model in plain NumPyro (as ``zoo.eight_schools``)."""
    mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
    with numpyro.plate("schools", sigma.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", nd.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", nd.Normal(theta, sigma), obs=y)


def hand_written(opts, sigma, eager):
    """The SBC loop by hand around NumPyro's MCMC: ``run(key) -> (seconds per simulation,
    ranks)``."""
    n, num_draws = opts.num_simulations, opts.num_draws
    sims = eager and opts.eager_sims or n

    def make_mcmc():
        return MCMC(NUTS(eight_schools_numpyro), num_warmup=opts.num_warmup,
                    num_samples=opts.num_samples, num_chains=1, progress_bar=False,
                    jit_model_args=True)

    def sample_in_jit(key, y):
        mcmc = make_mcmc()
        mcmc.run(key, sigma, y=y)
        return mcmc.get_samples()

    jitted_sample = jax.jit(sample_in_jit)
    reused = make_mcmc()

    def sample_eager(key, y):
        reused.run(key, sigma, y=y)
        return reused.get_samples()

    sample = sample_eager if eager else jitted_sample

    @jax.jit
    def loglik(params, y):  # (draws,) summed log-likelihood of y at each draw
        return log_likelihood(eight_schools_numpyro, params, sigma, y=y)["y"].sum(-1)

    idx = (np.arange(num_draws) * opts.num_samples) // num_draws

    def run(key):
        k_prior, k_runs, k_ties = jax.random.split(key, 3)
        prior = Predictive(eight_schools_numpyro, num_samples=sims)(k_prior, sigma)
        prior = {k: np.asarray(v) for k, v in prior.items()}
        run_keys = jax.random.split(k_runs, sims)
        seconds, below, ties = [], [], []
        for i in range(sims):
            start = time.perf_counter()
            draws = sample(run_keys[i], prior["y"][i])
            draws = {k: np.asarray(v)[idx] for k, v in draws.items()}
            params = {k: np.concatenate([prior[k][i][None], draws[k]]) for k in LATENT}
            ll = np.asarray(loglik(params, prior["y"][i]))
            b, t = [], []
            for site in ("mu", "tau", "theta_tilde", "theta"):
                truth = np.ravel(prior[site][i])
                flat = draws[site].reshape(num_draws, -1)
                b.append((flat < truth).sum(0))
                t.append((flat == truth).sum(0))
            b.append(np.array([(ll[1:] < ll[0]).sum()]))
            t.append(np.array([(ll[1:] == ll[0]).sum()]))
            below.append(np.concatenate(b))
            ties.append(np.concatenate(t))
            seconds.append(time.perf_counter() - start)
        below, ties = np.array(below), np.array(ties)
        u = np.asarray(jax.random.uniform(k_ties, below.shape))
        return np.array(seconds), below + np.minimum(np.floor(u * (ties + 1)), ties)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-simulations", type=int, default=60)
    parser.add_argument("--num-draws", type=int, default=99)
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-particles", type=int, default=1000,
                        help="tempered SMC particles")
    parser.add_argument("--eager-sims", type=int, default=4,
                        help="simulations of the plain MCMC.run loop (it recompiles each)")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()

    y, sigma = jnp.asarray(zoo.EIGHT_SCHOOLS_Y), jnp.asarray(zoo.EIGHT_SCHOOLS_SIGMA)
    key = jax.random.PRNGKey(opts.seed)
    n, num_draws = opts.num_simulations, opts.num_draws
    rows = {}
    warnings.simplefilter("ignore")  # ESS / convergence notes of single runs

    def ppl_row(name, method):
        start = time.perf_counter()
        result = ppl.check.sbc(zoo.eight_schools, method, y, sigma, num_simulations=n,
                               num_draws=num_draws, key=key, progress_bar=False)
        total = time.perf_counter() - start
        rows[name] = (result.seconds, total, result.ok(0.01))

    def numpyro_row(name, eager):
        start = time.perf_counter()
        seconds, _ = hand_written(opts, sigma, eager)(key)
        rows[name] = (seconds, time.perf_counter() - start, None)

    ppl_row("ppl sbc nuts", infer.nuts(opts.num_samples, opts.num_warmup))
    numpyro_row("numpyro jit", eager=False)
    ppl_row("ppl sbc tempered_smc", infer.tempered_smc(opts.num_particles))
    numpyro_row("numpyro run", eager=True)

    base = np.mean(rows["numpyro jit"][0][1:])
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; eight schools; "
          f"{n} simulations (numpyro run: {opts.eager_sims}), {num_draws} draws; NUTS "
          f"{opts.num_warmup} warmup + {opts.num_samples} samples, 1 chain; tempered SMC "
          f"{opts.num_particles} particles")
    header = (f"| {'contender':<22} | {'sims/s':>8} | {'ms / sim':>9} | {'first s':>8} | "
              f"{'total s':>8} | {'ratio':>6} | {'calibrated':>10} |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for name, (seconds, total, ok) in rows.items():
        per = float(np.mean(seconds[1:]))
        print(f"| {name:<22} | {1 / per:>8.2f} | {per * 1e3:>9.1f} | {seconds[0]:>8.2f} | "
              f"{total:>8.1f} | {per / base:>6.2f} | {'-' if ok is None else str(ok):>10} |")


if __name__ == "__main__":
    main()
