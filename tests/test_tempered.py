"""Adaptive tempered SMC (inference/tempered.py) against exact answers and against NUTS.

Tolerances come from the Monte Carlo error of R independent runs at a fixed seed (one jit
of a ``lax.map`` of ``TemperedSMC.core`` over keys), checked with :func:`ppl.semantics.preserves`
(k = 4 standard errors):

* evidence: Z-hat is unbiased on the natural scale, so the mean of Z-hat / Z over the runs
  must lie within k standard errors of 1 (``preserves``' ``log_evidence`` check);
* posterior mean and second moment (hence variance) of the conjugate models: the mean over
  runs of each run's estimate within k standard errors of the exact value;
* against NUTS (eight schools, logistic regression): |SMC mean - NUTS mean| within k
  combined standard errors, sqrt(se_smc^2 + se_nuts^2), with se_smc from the replicates and
  se_nuts = posterior sd / sqrt(ESS) (NumPyro's effective sample size).

A deliberately broken variant (the incremental weights ignored: no reweighting/resampling)
must fail the same exact-answer checks.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS
from ppl.semantics import preserves

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo

tempered = importlib.import_module("ppl.inference.tempered")

KEY = jax.random.PRNGKey(20260211)
R = 16  # independent runs per validity check
K = 4.0  # z-score bound

NN_DATA = np.random.default_rng(0).normal(1.0, 1.0, size=20)
BB_DATA = (np.random.default_rng(1).uniform(size=30) < 0.3).astype(np.float64)


# --------------------------------------------------------------------------- helpers


def replicate(algo, model, args, key=KEY, num_runs=R):
    """``num_runs`` independent runs of ``algo.core`` over split keys: one jit of a
    ``lax.map`` (compiles like a single run, unlike a vmap of the while loop)."""
    keys = jax.random.split(key, num_runs)
    runs = jax.jit(lambda ks, a: jax.lax.map(lambda k: algo.core(k, model, a, {}), ks))
    return runs(keys, args)


def as_run(out):
    """A ``run(key)`` for :func:`preserves` that hands back the precomputed replicates in
    turn (the replicates were drawn from independent keys by :func:`replicate`)."""
    it = iter(range(out.log_evidence.shape[0]))

    def run(_key):
        r = next(it)
        return {k: v[r] for k, v in out.samples.items()}, None, out.log_evidence[r]

    return run


def moment_checks(site, exact):
    """Exact posterior mean, second moment and log evidence, with test functions."""
    values = {
        "mean": exact["mean"],
        "second_moment": exact["var"] + exact["mean"] ** 2,
        "log_evidence": exact["log_evidence"],
    }
    tests = {"mean": lambda s: s[site], "second_moment": lambda s: s[site] ** 2}
    return values, tests


CONJUGATE = {
    "normal_normal": (zoo.normal_normal, NN_DATA, "mu", zoo.normal_normal_exact(NN_DATA)),
    "beta_bernoulli": (zoo.beta_bernoulli, BB_DATA, "p", zoo.beta_bernoulli_exact(BB_DATA)),
}
NUM_PARTICLES = 400
TARGET_ESS = 0.5


MH_MOVES = {
    "mh_prior": infer.mh(proposal="prior", num_mcmc_steps=3),
    "mh_random_walk": infer.mh(proposal="random_walk", num_mcmc_steps=5, step_size=0.3),
}


@functools.cache
def conjugate_runs(name, move):
    """R runs of tempered SMC (400 particles) on a conjugate model, shared between tests;
    ``move`` a string option or a key of ``MH_MOVES`` (an ``infer.mh`` combinator)."""
    model, data, _, _ = CONJUGATE[name]
    move = MH_MOVES.get(move, move)
    algo = infer.tempered_smc(NUM_PARTICLES, move=move, target_ess=TARGET_ESS, max_steps=50)
    return replicate(algo, model, (jnp.asarray(data, jnp.float32),))


# --------------------------------------------------------------------------- exact answers


@pytest.mark.parametrize(
    "name,move",
    [("normal_normal", "random_walk"), ("beta_bernoulli", "random_walk"),
     pytest.param("beta_bernoulli", "mh_prior", marks=pytest.mark.slow),
     pytest.param("beta_bernoulli", "hmc", marks=pytest.mark.slow),
     pytest.param("normal_normal", "hmc", marks=pytest.mark.slow),
     pytest.param("normal_normal", "mh_random_walk", marks=pytest.mark.slow)],
)
def test_conjugate_evidence_and_posterior(name, move):
    """Evidence (mean of Z-hat / Z), posterior mean, second moment and variance vs the
    exact answer, over R runs; with the built-in moves and with ``infer.mh`` kernels run on
    the tempered program."""
    _, _, site, exact = CONJUGATE[name]
    out = conjugate_runs(name, move)
    values, tests = moment_checks(site, exact)
    report = preserves(as_run(out), values, tests, KEY, num_replicates=R, k=K)
    print(f"\n{name} / {move}\n{report}")
    var = np.asarray(jnp.var(out.samples[site], axis=1), np.float64)
    z_var = (var.mean() - exact["var"]) / (var.std(ddof=1) / np.sqrt(R))
    print(f"var: {var.mean():.5g} exact {exact['var']:.5g} z={z_var:.2f}")
    assert abs(z_var) <= K


def test_schedule_is_increasing_and_ends_at_one():
    """In every run: b_0 = 0 < b_1 < ... < b_T = 1 with NaN padding after T; the ESS of
    each adaptive step's incremental weights at target_ess * N (the bisection's target; the
    last step, b = 1, at or above it); acceptance rates in (0, 1]; the log evidence is the
    sum of the increments."""
    out = conjugate_runs("normal_normal", "random_walk")
    betas = np.asarray(out.betas)
    assert betas.shape == (R, 51)
    for r in range(R):
        t = int(out.num_steps[r])
        schedule = betas[r, : t + 1]
        assert t >= 2  # 20 observations: more than one step at ESS 0.5
        assert schedule[0] == 0.0 and schedule[-1] == 1.0
        assert np.all(np.diff(schedule) > 0)
        assert np.all(np.isnan(betas[r, t + 1 :]))
        ess_steps = np.asarray(out.ess[r, :t])
        np.testing.assert_allclose(ess_steps[:-1], TARGET_ESS * NUM_PARTICLES, rtol=1e-3)
        assert ess_steps[-1] >= TARGET_ESS * NUM_PARTICLES * (1 - 1e-3)
        acc = np.asarray(out.accept_rate[r, :t])
        assert np.all((acc > 0) & (acc <= 1))
        increments = np.asarray(out.log_evidence_increments[r, :t], np.float64)
        np.testing.assert_allclose(increments.sum(), out.log_evidence[r], rtol=1e-5)
        assert not bool(out.forced_final[r])
    print("schedule of run 0:", betas[0, : int(out.num_steps[0]) + 1])


def test_run_returns_posterior_and_forces_last_step():
    """``.run``: an equally weighted Posterior with log evidence and info; same key, same
    answer; with max_steps=1 the single step jumps from the prior to b = 1, with a warning."""
    algo = infer.tempered_smc(200, max_steps=1)
    data = jnp.asarray(NN_DATA, jnp.float32)
    with pytest.warns(RuntimeWarning, match="max_steps"):
        post = algo.run(KEY, zoo.normal_normal, data)
    assert post.log_weights is None and post.samples["mu"].shape == (200,)
    assert np.isfinite(float(post.log_evidence))
    np.testing.assert_array_equal(post.info["schedule"], [0.0, 1.0])
    assert post.info["forced_final"] and post.info["num_steps"] == 1
    assert post.info["betas"].shape == (2,)
    with pytest.warns(RuntimeWarning):
        again = algo.run(KEY, zoo.normal_normal, data)
    np.testing.assert_array_equal(np.asarray(again.samples["mu"]), np.asarray(post.samples["mu"]))
    idata = post.to_arviz()
    assert "mu" in idata.posterior and "y" in idata.log_likelihood
    assert float(idata.sample_stats.attrs["log_evidence"]) == float(post.log_evidence)


# slow (keeps the fast suite under 15 minutes): a broken-method control; the conjugate checks stay
# fast
@pytest.mark.slow
def test_broken_variant_without_reweighting_is_detected(monkeypatch):
    """Ignoring the incremental weights (no reweighting/resampling, only the MCMC moves)
    leaves the particles behind the moving target: the exact checks must fail."""
    model, data, site, exact = CONJUGATE["normal_normal"]
    values, tests = moment_checks(site, exact)
    algo = infer.tempered_smc(NUM_PARTICLES, num_mcmc_steps=1)
    monkeypatch.setattr(tempered, "resample_particles", lambda key, particles, lw, s: particles)
    out = replicate(algo, model, (jnp.asarray(data, jnp.float32),))
    report = preserves(as_run(out), values, tests, KEY, num_replicates=R, k=K, check=False)
    print(f"\nbroken (no reweighting):\n{report}")
    assert not report.ok


# --------------------------------------------------------------------------- against NUTS


def nuts_moments(model, args, sites, num_warmup=500, num_samples=1500, num_chains=2, seed=1):
    """NUTS run directly in NumPyro: per site the posterior mean and its MC standard error
    sd / sqrt(ESS)."""
    mcmc = MCMC(NUTS(model), num_warmup=num_warmup, num_samples=num_samples,
                num_chains=num_chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *args)
    samples = mcmc.get_samples(group_by_chain=True)
    out = {}
    for s in sites:
        x = np.asarray(samples[s], np.float64)
        ess = effective_sample_size(x)
        flat = x.reshape((-1,) + x.shape[2:])
        out[s] = (flat.mean(0), flat.std(0) / np.sqrt(ess))
    return out


def compare_to_nuts(out, reference, label):
    """Max |z| of SMC (mean over replicates) against NUTS, with the combined error."""
    worst = 0.0
    for s, (m_nuts, se_nuts) in reference.items():
        means = np.asarray(jnp.mean(out.samples[s], axis=1), np.float64)  # (R, ...)
        m_smc = means.mean(0)
        se_smc = means.std(0, ddof=1) / np.sqrt(means.shape[0])
        z = (m_smc - m_nuts) / np.sqrt(se_smc**2 + se_nuts**2)
        print(f"{label} {s}: smc {np.round(m_smc, 3)} nuts {np.round(m_nuts, 3)} "
              f"z {np.round(z, 2)}")
        worst = max(worst, float(np.max(np.abs(z))))
    return worst


@functools.cache
def eight_schools_nuts():
    return nuts_moments(zoo.eight_schools, (), ["mu", "tau", "theta_tilde"])


@functools.cache
def logreg_problem():
    key_x, key_y = jax.random.split(jax.random.PRNGKey(3))
    X = jax.random.normal(key_x, (100, 3))
    w = jnp.array([1.0, -0.5, 0.25])
    y = jax.random.bernoulli(key_y, jax.nn.sigmoid(X @ w + 0.3)).astype(jnp.float32)
    return (X, y), nuts_moments(zoo.logistic_regression, (X, y), ["w", "b"])


@pytest.mark.parametrize(
    "num_particles,move",
    [pytest.param(500, "hmc", marks=pytest.mark.slow),
     pytest.param(500, "random_walk", marks=pytest.mark.slow),
     pytest.param(2000, "random_walk", marks=pytest.mark.slow),
     pytest.param(2000, "hmc", marks=pytest.mark.slow)],
)
def test_eight_schools_matches_nuts(num_particles, move):
    """Non-centred eight schools: posterior means of mu, tau, theta_tilde vs NUTS. Slow
    (about 20 s of CPU, compiling NUTS and the SMC run on this model; running them is
    quick): the fast suite compares logistic regression with NUTS instead."""
    out = replicate(infer.tempered_smc(num_particles, move=move), zoo.eight_schools, ())
    assert compare_to_nuts(out, eight_schools_nuts(), f"eight schools {move}") <= K


@pytest.mark.parametrize(
    "num_particles,move",
    [pytest.param(500, "hmc", marks=pytest.mark.slow),
     pytest.param(500, "random_walk", marks=pytest.mark.slow),
     pytest.param(2000, "random_walk", marks=pytest.mark.slow),
     pytest.param(2000, "hmc", marks=pytest.mark.slow)],
)
def test_logistic_regression_matches_nuts(num_particles, move):
    """Logistic regression on 100 simulated points: posterior means of w, b vs NUTS."""
    args, reference = logreg_problem()
    out = replicate(infer.tempered_smc(num_particles, move=move), zoo.logistic_regression,
                    args)
    assert compare_to_nuts(out, reference, f"logreg {move}") <= K


# --------------------------------------------------------------------------- errors


@ppl.model
def markov_program(ys):
    rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, 1.0))
        ppl.observe("y", dist.Normal(x, 1.0), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


@ppl.model
def discrete_program(ys):
    z = ppl.sample("z", dist.Bernoulli(0.5))
    ppl.observe("y", dist.Normal(2.0 * z, 1.0), ys)


@ppl.model
def no_latent_program(ys):
    ppl.observe("y", dist.Normal(0.0, 1.0), ys)


def test_unsupported_programs():
    algo = infer.tempered_smc(10)
    with pytest.raises(ppl.UnsupportedModelError, match="markov"):
        algo.run(KEY, markov_program, jnp.zeros(3))
    with pytest.raises(ppl.UnsupportedModelError, match=r"\['z'\].*discrete"):
        algo.run(KEY, discrete_program, jnp.zeros(()))
    with pytest.raises(ppl.UnsupportedModelError, match="no latent"):
        algo.run(KEY, no_latent_program, jnp.zeros(()))


@ppl.model
def impossible_program(ys):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.observe("y", dist.Uniform(mu + 100.0, mu + 101.0), ys)


@pytest.mark.filterwarnings("ignore:Out-of-support values")
def test_impossible_data_is_reported():
    with pytest.raises(ppl.NonFiniteWeightError, match="'y'"):
        infer.tempered_smc(10, max_steps=3).run(KEY, impossible_program, jnp.zeros(()))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(num_particles=1), ValueError, "num_particles"),
        (dict(num_particles=0), ValueError, "num_particles"),
        (dict(num_particles=10.5), TypeError, "num_particles"),
        (dict(move="gibbs"), ppl.UnknownOptionError, "move"),
        (dict(move=object()), TypeError, "move"),
        (dict(move=infer.smc(10)), TypeError, "move"),
        (dict(target_ess=0.0), ValueError, "target_ess"),
        (dict(target_ess=1.0), ValueError, "target_ess"),
        (dict(target_ess="half"), TypeError, "target_ess"),
        (dict(resample="stochastic"), ppl.UnknownOptionError, "resample"),
        (dict(num_mcmc_steps=0), ValueError, "num_mcmc_steps"),
        (dict(max_steps=0), ValueError, "max_steps"),
        (dict(step_size=-0.1), ValueError, "step_size"),
        (dict(step_size=float("nan")), ValueError, "step_size"),
        (dict(num_leapfrog=0), ValueError, "num_leapfrog"),
    ],
)
def test_bad_options(kwargs, error, match):
    kwargs = {"num_particles": 10, **kwargs}
    with pytest.raises(error, match=match):
        infer.tempered_smc(**kwargs)


def test_bad_key():
    with pytest.raises(TypeError, match="key"):
        infer.tempered_smc(10).run(0, zoo.normal_normal, jnp.asarray(NN_DATA))
