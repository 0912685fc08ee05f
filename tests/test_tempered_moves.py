"""Tempered SMC's ``infer.mh(...)`` moves on a peaked posterior, and the collapse warning.

The model is kidiq-like (posteriordb ``kidiq-kidscore_momiq``): a linear regression
``y ~ Normal(b0 + b1 x, sigma)`` on n = 200 simulated points with an *uncentred* covariate
``x ~ Normal(100, 15)`` (like ``mom_iq``), so the posterior of (b0, b1) is far narrower
than the prior and correlated at about -0.99. With sigma known and a Normal prior the
posterior is Gaussian and exact (conjugacy).

``infer.mh(proposal="random_walk")`` as a tempered-SMC move must be the particle-adapted
random walk (covariance-scaled, step size retuned each step): the former fixed-scale trace
kernel (``step_size=0.5`` in unconstrained units whatever the posterior's scale) collapsed
on this model: its first run here gives b0 = 38.4 +- 7.5 against the exact 32.5 +- 8.9
(mean z = 14.8, variance z = -4.5); over 20 seeds its run means scattered 13.7 iid standard
errors (3 of 20 single runs passed by luck, hence R = 4 runs). A prior-proposal move with
one MCMC step per tempering step collapses too, and must say so with a
:class:`ppl.ParticleCollapseWarning`.

Tolerance. Each run of N particles: its mean and variance are compared with the exact
ones in standard errors computed for an effective sample size ``ESS = target_ess * N``
(the ESS of the last reweighting; the moves only add diversity): ``se(mean) = sd /
sqrt(ESS)`` and, for the variance, the sampling sd of a Gaussian variance estimate,
``se(var) = var * sqrt(2 / (ESS - 1))``; each |z| <= K = 4. (Over 20 seeds the spread of
the run means was 1.09 iid standard errors for N particles, i.e. 0.77 of the se used here.)
"""

import functools
import importlib
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from ppl import inference as infer

tempered = importlib.import_module("ppl.inference.tempered")

KEY = jax.random.PRNGKey(20260212)
K = 4.0
R = 4  # independent runs of the accuracy check
NUM_PARTICLES = 1000
TARGET_ESS = 0.5
N_DATA = 200
SIGMA = 18.0  # known noise sd
PRIOR_SD = 100.0  # beta ~ Normal(0, 100) per coordinate: flat-ish, as in kidiq

_rng = np.random.default_rng(0)
X_DATA = _rng.normal(100.0, 15.0, N_DATA).astype(np.float32)
Y_DATA = (26.0 + 0.6 * X_DATA + _rng.normal(0.0, SIGMA, N_DATA)).astype(np.float32)
ARGS = (jnp.asarray(X_DATA), jnp.asarray(Y_DATA))


@ppl.model
def regression(x, y):
    beta = ppl.sample("beta", dist.Normal(jnp.zeros(2), PRIOR_SD).to_event(1))
    ppl.observe("y", dist.Normal(beta[0] + beta[1] * x, SIGMA), y)


def exact_posterior():
    """Mean and covariance of beta | y: precision ``X^T X / sigma^2 + I / tau^2``, mean
    ``cov X^T y / sigma^2`` (Normal prior, known sigma), in float64 on the float32 data the
    model sees."""
    design = np.stack([np.ones(N_DATA), X_DATA.astype(np.float64)], axis=1)
    precision = design.T @ design / SIGMA**2 + np.eye(2) / PRIOR_SD**2
    cov = np.linalg.inv(precision)
    return cov @ (design.T @ Y_DATA.astype(np.float64) / SIGMA**2), cov


def mh_random_walk():
    return infer.mh(proposal="random_walk", num_mcmc_steps=10)


@functools.cache
def good_runs():
    """R runs (independent keys, one compilation) of the composition DESIGN.md shows, on
    the regression, with the collapse warning turned into an error (a healthy run must
    not warn)."""
    algo = infer.tempered_smc(NUM_PARTICLES, move=mh_random_walk(), target_ess=TARGET_ESS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ppl.ParticleCollapseWarning)
        return [algo.run(k, regression, *ARGS) for k in jax.random.split(KEY, R)]


def z_scores(draws, mean, cov, ess):
    """Per coordinate: (mean z, variance z) of ``draws`` (N, D) against the exact moments."""
    var = np.diag(cov)
    z_mean = (draws.mean(0) - mean) / np.sqrt(var / ess)
    z_var = (draws.var(0) - var) / (var * np.sqrt(2.0 / (ess - 1)))
    return z_mean, z_var


def test_exact_posterior_is_peaked_and_correlated():
    """The premise: posterior sd 1-2 orders of magnitude below the prior's, |corr| > 0.98."""
    _, cov = exact_posterior()
    sd = np.sqrt(np.diag(cov))
    assert np.all(sd < PRIOR_SD / 10)
    assert cov[0, 1] / (sd[0] * sd[1]) < -0.98


def test_mh_random_walk_move_matches_exact_posterior():
    """``tempered_smc(move=infer.mh(proposal="random_walk", num_mcmc_steps=10))``: in each
    of R runs, posterior means and variances of both coefficients within K standard errors
    of the exact ones; and the mean over the runs within K standard errors (ESS R times
    larger). Fails on the fixed-scale trace kernel (see the module docstring)."""
    mean, cov = exact_posterior()
    ess = TARGET_ESS * NUM_PARTICLES
    run_means = []
    for r, post in enumerate(good_runs()):
        draws = np.asarray(post.samples["beta"], np.float64)
        z_mean, z_var = z_scores(draws, mean, cov, ess)
        print(f"\nrun {r}: means {draws.mean(0)} exact {mean} z {z_mean}")
        print(f"run {r}: sds {draws.std(0)} exact {np.sqrt(np.diag(cov))} z(var) {z_var}")
        assert np.all(np.abs(z_mean) <= K), (r, z_mean)
        assert np.all(np.abs(z_var) <= K), (r, z_var)
        run_means.append(draws.mean(0))
    z_pooled = (np.mean(run_means, 0) - mean) / np.sqrt(np.diag(cov) / (R * ess))
    assert np.all(np.abs(z_pooled) <= K), z_pooled


def test_mh_random_walk_move_is_the_adapted_random_walk():
    """The mh move's random walk is the particle-adapted one: it ran the mh object's
    ``num_mcmc_steps``, started from the default move's step size 2.38 / sqrt(D) (mh's
    default ``step_size`` 0.5 is the unit), retuned it, and accepted about a quarter of
    its proposals."""
    post = good_runs()[0]
    n = post.info["num_steps"]
    sizes = np.asarray(post.info["step_size"][:n])
    accept = np.asarray(post.info["accept_rate"][:n])
    assert post.info["num_mcmc_steps"] == 10
    assert sizes[0] == pytest.approx(2.38 / math.sqrt(2), rel=1e-6)
    assert np.ptp(sizes) > 0  # adapted
    assert np.all((accept[1:] > 0.1) & (accept[1:] < 0.5)), accept
    assert min(post.info["num_unique"].values()) > 0.9 * NUM_PARTICLES


def test_mh_step_size_is_a_multiplier_of_the_adapted_scale():
    """A step size the user set is not ignored: ``step_size=1.0`` (twice mh's default)
    starts at twice 2.38 / sqrt(D) relative to the particle covariance, and with
    ``adapt_step_size=False`` stays there."""
    move = infer.mh(proposal="random_walk", num_mcmc_steps=2, step_size=1.0,
                    adapt_step_size=False)
    assert tempered._mh_relative_step_size(move, 2) == pytest.approx(2 * 2.38 / math.sqrt(2))
    post = infer.tempered_smc(200, move=move).run(KEY, regression, *ARGS)
    n = post.info["num_steps"]
    np.testing.assert_allclose(post.info["step_size"][:n], 2 * 2.38 / math.sqrt(2), rtol=1e-6)


def test_collapse_warning_fires_on_prior_proposal_with_one_step():
    """``infer.mh(proposal="prior", num_mcmc_steps=1)`` regenerates beta from its flat prior:
    late in the schedule almost nothing is accepted and the population becomes a few
    copies. The warning gives the figures and the fixes."""
    algo = infer.tempered_smc(NUM_PARTICLES, move=infer.mh(proposal="prior", num_mcmc_steps=1),
                              target_ess=TARGET_ESS)
    with pytest.warns(ppl.ParticleCollapseWarning, match="collapsed") as record:
        post = algo.run(KEY, regression, *ARGS)
    message = str(record[0].message)
    assert "distinct value(s) of site 'beta'" in message
    assert "num_mcmc_steps" in message and "random_walk" in message
    assert post.info["num_unique"]["beta"] < tempered.COLLAPSE_UNIQUE * NUM_PARTICLES
    assert issubclass(ppl.ParticleCollapseWarning, ppl.ConvergenceWarning)
    assert issubclass(ppl.ParticleCollapseWarning, UserWarning)


def test_check_collapse_thresholds():
    """The rule itself, on hand-made diagnostics: low late acceptance alone, few distinct
    values alone, and neither."""
    def out(accept):
        padded = np.full(10, np.nan)
        padded[: len(accept)] = accept
        return tempered.TemperedOutput(
            {}, {}, {}, {}, 0.0, np.int32(len(accept)), None, None, padded, None, None, False
        )

    healthy = {"beta": 950}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ppl.ParticleCollapseWarning)
        assert tempered.check_collapse(out([0.4, 0.3, 0.25, 0.25]), healthy, 1000,
                                       "random_walk", 5) == []
        # one bad step among the last three (as HMC after an overshoot) is not a collapse
        assert tempered.check_collapse(out([0.4, 0.0, 0.6, 0.0]), healthy, 1000, "hmc", 5) == []
    with pytest.warns(ppl.ParticleCollapseWarning, match="accepted"):
        tempered.check_collapse(out([0.4, 0.01, 0.001, 0.0]), healthy, 1000, "random_walk", 5)
    with pytest.warns(ppl.ParticleCollapseWarning, match="only 12 distinct"):
        tempered.check_collapse(out([0.3, 0.3]), {"beta": 12}, 1000, "random_walk", 5)


def test_distinct_values():
    """The fewest distinct values over a site's coordinates."""
    a = np.array([[0.0, 1.0], [0.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    assert tempered.distinct_values(a) == 2
    assert tempered.distinct_values(np.arange(5.0)) == 5
    assert tempered.distinct_values(np.zeros((3, 0))) == 3
