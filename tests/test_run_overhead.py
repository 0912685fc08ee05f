"""After the first call with given argument shapes, ``.run`` makes no eager pass over the
program (DESIGN.md: the eager checks and the structure analysis run once per model and
argument structure, everything else is an output of the compiled core).

Every combinator runs a counting wrapper of a tiny program twice, with new data of the same
shape the second time: the program must not be called at all by the second ``.run`` (not
traced again, not run eagerly), and the second result must hold the second call's data.
Wall-clock overhead is measured in ``benchmarks/bench_overhead.py``, not here. The cells
of the particle-Gibbs / SMC^2 family (6-12 s each on a shared 2-core CPU) are ``slow``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions import constraints

import ppl
from ppl import dist
from ppl import inference as infer

KEY = jax.random.PRNGKey(0)


def static(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    with ppl.plate("n", y.shape[0]):
        ppl.observe("y", dist.Normal(mu, 1.0), y)


def markov(ys):
    theta = ppl.sample("theta", dist.Uniform(0.1, 0.9))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(theta * x, 1.0))
        ppl.observe("y", dist.Normal(x, 1.0), y)
        return x

    return ppl.markov(step, jnp.zeros(()), xs=ys)


def params(ys):
    rho = ppl.param("rho", 0.5, constraint=constraints.interval(-1.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, 1.0))
        ppl.observe("y", dist.Normal(x, 1.0), y)
        return x

    return ppl.markov(step, 0.0, xs=ys)


def guide(ys):
    a = ppl.param("a", 0.5)

    def step(x, y):
        return ppl.sample("x", dist.Normal(a * x, 1.0))

    return ppl.markov(step, 0.0, xs=ys)


def discrete(y):
    z = ppl.sample("z", dist.Bernoulli(0.3))
    with ppl.plate("n", y.shape[0]):
        ppl.observe("y", dist.Normal(2.0 * z, 1.0), y)


GRID = np.linspace(0.0, 1.0, 11)


def sde(y):
    x0 = ppl.sample("x0", dist.Normal(0.0, 1.0))
    x = ppl.sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, x0, jnp.asarray(GRID))
    ppl.observe("y", dist.Normal(x[np.array([5, 10])], 0.5), y)


def psi(t, x_prev, x, p):
    return x


DATA = {static: 3, markov: 4, params: 4, discrete: 3, sde: 2}
FIXED = {"theta": 0.5}
CASES = {
    "importance": (lambda: infer.importance(8), static),
    "importance_markov": (lambda: infer.importance(8), markov),
    "exact": (lambda: infer.exact(4), discrete),
    "smc": (lambda: infer.smc(8), markov),
    "smc_static": (lambda: infer.smc(8), static),
    "rmsmc": (lambda: infer.rmsmc(8), markov),
    "mh": (lambda: infer.mh(4), static),
    "mh_markov": (lambda: infer.mh(4), markov),
    "tempered_smc": (lambda: infer.tempered_smc(8, num_mcmc_steps=1, max_steps=3), static),
    "nuts": (lambda: infer.nuts(4, num_warmup=4), static),
    "hmc": (lambda: infer.hmc(4, num_warmup=4, num_steps=2), markov),
    "svi": (lambda: infer.svi(num_steps=4, num_samples=4), markov),
    "pmmh": (lambda: infer.pmmh(["theta"], infer.smc(8), num_samples=4), markov),
    "smc2": (lambda: infer.smc2(["theta"], 4, infer.smc(4)), markov),
    "csmc": (lambda: infer.csmc(8, num_sweeps=2, num_warmup=1, fixed=FIXED), markov),
    "paris": (lambda: infer.paris(8, functional=psi, fixed=FIXED), markov),
    "ppg": (lambda: infer.ppg(8, num_sweeps=2, num_warmup=1, functional=psi, fixed=FIXED),
            markov),
    "vsde": (lambda: infer.vsde(num_steps=2, num_paths=2, num_samples=2, control="affine",
                                progress_bar=False), sde),
    "score_ascent": (lambda: infer.score_ascent(num_particles=8, num_steps=2), params),
    "score_climbing": (lambda: infer.score_climbing(guide, num_particles=8, num_steps=2,
                                                    fixed=FIXED), markov),
    "particle_gibbs": (lambda: infer.particle_gibbs(8, num_samples=2, num_warmup=1,
                                                    num_mcmc_steps=1), markov),
}


SLOW = ("rmsmc", "pmmh", "smc2", "csmc", "ppg", "score_climbing", "particle_gibbs", "svi",
        "score_ascent", "vsde", "hmc")  # the fast suite keeps one of each family


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in CASES])
def test_second_run_makes_no_pass_over_the_program(name):
    make, program = CASES[name]
    calls = []

    def counted(y):
        calls.append(type(y).__name__)
        return program(y)

    n = DATA[program]
    first_data = np.linspace(0.1, 0.4, n).astype(np.float32)
    second_data = first_data[::-1] + 1.0
    algo = make()
    algo.run(KEY, counted, first_data)
    assert calls  # traced (and checked) once
    calls.clear()
    post = algo.run(jax.random.PRNGKey(1), counted, second_data)
    assert calls == [], f"{name}: the second .run called the program {len(calls)} time(s)"
    observed = getattr(post, "observed_data", None)
    if observed and "y" in observed:  # the data of this call, not of the first
        np.testing.assert_allclose(np.asarray(observed["y"]), second_data)
