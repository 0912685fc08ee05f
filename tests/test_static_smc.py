"""SMC and resample-move SMC on static programs: data annealing / IBIS (Chopin 2002).

Exact answers: Beta-Bernoulli and Normal-Normal evidence and posterior moments, logistic
regression's evidence by quadrature on a fine grid (two latent dimensions). Tolerances are
Monte Carlo errors at a fixed seed: for the posterior mean ``Z sd / sqrt(ESS)`` with the
run's own ESS, for the log evidence the spread of independent runs (``Z sd / sqrt(R)``
on their mean, plus the Jensen bias ``var / 2`` of log Z).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.models import conjugate, zoo
from scipy import stats
from scipy.special import expit, logsumexp

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import UnsupportedModelError
from ppl.weights import ess

Z = 4.0  # standard errors allowed (two-sided 1e-4 for a Gaussian error)

BERNOULLI = jnp.array([1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=jnp.float32)
NORMAL = jnp.array([0.9, 1.7, 0.3, 1.2, 2.1, 0.8, 1.5, 1.1, 0.4, 1.9], dtype=jnp.float32)


def weighted_moments(post, site):
    """Posterior mean and variance of ``site`` under the normalised weights, and the ESS."""
    lw = np.asarray(post.log_weights, np.float64)
    w = np.exp(lw - logsumexp(lw))
    x = np.asarray(post.samples[site], np.float64)
    mean = np.sum(w * x)
    return mean, np.sum(w * (x - mean) ** 2), float(ess(jnp.asarray(lw)))


def check_mean(post, site, exact):
    """The weighted mean within Z standard errors (posterior sd / sqrt(ESS))."""
    mean, _, n_eff = weighted_moments(post, site)
    assert abs(mean - exact["mean"]) < Z * np.sqrt(exact["var"] / n_eff), (mean, exact, n_eff)


def check_evidence(runs, exact_log_z):
    """The mean log evidence of independent runs within a Student-t interval (two-sided
    1e-4, the sd estimated from the runs themselves) of the exact one, allowing the Jensen
    bias -var/2 of log Z."""
    log_z = np.asarray(runs, np.float64)
    sd = log_z.std(ddof=1)
    err = abs(log_z.mean() + 0.5 * sd**2 - exact_log_z)
    t = stats.t.ppf(1 - 0.5e-4, len(log_z) - 1)
    assert err < t * sd / np.sqrt(len(log_z)), (log_z, exact_log_z)


# batch_size 1 is slow (keeps the fast suite under 15 minutes; batches of 5 stay fast)
@pytest.mark.parametrize("batch_size", [pytest.param(1, marks=pytest.mark.slow), 5])
def test_smc_static_beta_bernoulli(batch_size):
    exact = conjugate.beta_bernoulli_exact(BERNOULLI, 2.0, 3.0)
    smc = infer.smc(1000, batch_size=batch_size)
    runs = [smc.run(jax.random.PRNGKey(s), conjugate.beta_bernoulli, BERNOULLI, 2.0, 3.0)
            for s in range(8)]
    check_evidence([p.log_evidence for p in runs], exact["log_evidence"])
    check_mean(runs[0], "p", exact)
    steps = -(-BERNOULLI.shape[0] // batch_size)
    assert runs[0].info["ess"].shape == (steps,)
    assert runs[0].info["log_evidence_increments"].shape == (steps,)


@pytest.mark.parametrize("proposal", ["random_walk", "prior"])
def test_rmsmc_static_normal_normal(proposal):
    """IBIS with random-walk (scaled to the particles) and single-site moves."""
    exact = conjugate.normal_normal_exact(NORMAL, 0.0, 2.0, 1.0)
    rm = infer.rmsmc(500, move=infer.mh(proposal=proposal, num_mcmc_steps=3))
    runs = [rm.run(jax.random.PRNGKey(s), conjugate.normal_normal, NORMAL, 0.0, 2.0, 1.0)
            for s in range(6)]
    check_evidence([p.log_evidence for p in runs], exact["log_evidence"])
    post = runs[0]
    check_mean(post, "mu", exact)
    _, var, n_eff = weighted_moments(post, "mu")
    # the variance of a variance estimate: 2 var^2 / ESS for a Gaussian
    assert abs(var - exact["var"]) < Z * np.sqrt(2 / n_eff) * exact["var"]
    assert post.info["resampled"].any() and post.info["accept_rate"] > 0.1
    # the moves keep distinct particles (no collapse onto the prior draws)
    assert np.unique(np.asarray(post.samples["mu"])).size > 100


def logistic_evidence_by_quadrature(X, y):
    """log p(y) of ``zoo.logistic_regression`` with one covariate, on a 801^2 grid over
    +-8 prior sds (the integrand is smooth; the grid error is far below the MC error)."""
    grid = np.linspace(-8.0, 8.0, 801)
    w, b = np.meshgrid(grid, grid, indexing="ij")
    logits = X[:, 0, None, None] * w + b
    log_lik = np.sum(y[:, None, None] * np.log(expit(logits))
                     + (1 - y[:, None, None]) * np.log(expit(-logits)), axis=0)
    log_prior = stats.norm.logpdf(w) + stats.norm.logpdf(b)
    cell = (grid[1] - grid[0]) ** 2
    return float(logsumexp(log_lik + log_prior) + np.log(cell))


def test_smc_static_logistic_regression_evidence():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 1)).astype(np.float32)
    y = (rng.uniform(size=12) < expit(1.5 * X[:, 0] - 0.5)).astype(np.float32)
    exact = logistic_evidence_by_quadrature(X.astype(np.float64), y.astype(np.float64))
    rm = infer.rmsmc(300, move=infer.mh(proposal="random_walk", num_mcmc_steps=2))
    runs = [rm.run(jax.random.PRNGKey(s), zoo.logistic_regression, X, y).log_evidence
            for s in range(6)]
    check_evidence(runs, exact)


@pytest.mark.slow
def test_lda_runs_as_a_static_program():
    """monad-bayes' LDA (discrete topic per word) under smc and rmsmc, one
    word per step (monad-bayes' suspension at each factor): finite evidence, the right
    sites, topics on the simplex."""
    for combinator in (infer.smc(100, ess_threshold=1.0),
                       infer.rmsmc(100, ess_threshold=1.0)):
        post = combinator.run(jax.random.PRNGKey(0), zoo.monad_bayes_lda)
        assert np.isfinite(post.log_evidence)
        assert post.info["ess"].shape == (zoo.MB_LDA_DOCS.size,)
        assert post.samples["phi"].shape == (100, 2, 4)
        np.testing.assert_allclose(np.asarray(post.samples["phi"]).sum(-1), 1.0, rtol=1e-5)


def test_static_smc_refuses_what_it_cannot_do():
    def no_data():
        ppl.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(UnsupportedModelError, match="no observe or factor"):
        infer.smc(10).run(jax.random.PRNGKey(0), no_data)
    with pytest.raises(UnsupportedModelError, match="does not call ppl.markov"):
        infer.smc(10, proposal=lambda t, c, x: None).run(
            jax.random.PRNGKey(0), conjugate.normal_normal, NORMAL)
    with pytest.raises(UnsupportedModelError, match="discrete latent"):
        infer.rmsmc(10, move=infer.mh(proposal="random_walk")).run(
            jax.random.PRNGKey(0), zoo.monad_bayes_lda)
    with pytest.raises(ValueError, match="batch_size"):
        infer.smc(10, batch_size=0)


@ppl.model
def per_datum_latents(ys):
    """mu ~ N(0, 1); z_i ~ N(mu, 1); y_i ~ N(z_i, 1): marginally y_i ~ N(mu, 2), so the
    posterior of mu and the evidence are Normal-Normal's with sigma = sqrt(2)."""
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    with ppl.plate("data", ys.shape[0]):
        z = ppl.sample("z", dist.Normal(mu, 1.0))
        ppl.observe("y", dist.Normal(z, 1.0), ys)


def test_smc_static_redraws_latents_the_data_have_not_reached():
    """z_i enters at step i (its plate index), so after resampling the duplicated particles
    get fresh z_i for the data not seen yet (monad-bayes draws z_i only at step i): the
    evidence and mu's posterior stay exact, and the final particles' z of the last data
    point are all distinct (the redraw is a Gibbs step here: always accepted)."""
    exact = conjugate.normal_normal_exact(NORMAL, 0.0, 1.0, float(np.sqrt(2.0)))
    smc = infer.smc(1000, ess_threshold=1.0)
    runs = [smc.run(jax.random.PRNGKey(s), per_datum_latents, NORMAL) for s in range(8)]
    check_evidence([p.log_evidence for p in runs], exact["log_evidence"])
    check_mean(runs[0], "mu", exact)
    last_z = np.asarray(runs[0].samples["z"])[:, -1]
    assert np.unique(last_z).size == last_z.size
