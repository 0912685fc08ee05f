"""Posterior and prior predictive draws: ``Posterior.predictive(model, *args)``.

Known answers: for the Normal-Normal model with posterior ``mu | y ~ N(m, v)`` each
replicated datum is ``N(m, v + sigma^2)`` and two of them have covariance ``v``; the prior
predictive is ``N(0, tau0^2 + sigma^2)``. On a markov program the replicated ``y_t`` minus
the path's ``x_t`` is the observation noise ``N(0, sigma_y^2)``. Tolerances: K standard
errors of the Monte Carlo mean / variance (Gaussian: se of a variance is
``var sqrt(2 / n)``), or of the importance ESS for weighted draws.
"""

import jax
import numpy as np
import pytest
from arviz_helpers import arviz_major, az

import ppl
from ppl import Posterior, dist
from ppl import inference as infer
from ppl import models as zoo
from ppl.errors import InvalidArgumentError, UnsupportedModelError

K = 4.0
DATA = np.array([1.9, 2.4, 1.3, 2.2, 1.7], np.float32)
EXACT = zoo.normal_normal_exact(DATA)
N = 4000


@pytest.fixture(scope="module")
def exact_draws():
    """Draws of the exact posterior of mu, as a Posterior (no inference run)."""
    rng = np.random.default_rng(0)
    mu = rng.normal(EXACT["mean"], np.sqrt(EXACT["var"]), size=N).astype(np.float32)
    return Posterior({"mu": mu}, method="exact").predictive(zoo.normal_normal, DATA)


def test_posterior_predictive_moments_of_the_normal_model(exact_draws):
    rep = np.asarray(exact_draws.posterior_predictive["y"], np.float64)
    assert rep.shape == (N, DATA.shape[0])
    mean, var = EXACT["mean"], EXACT["var"] + 1.0
    np.testing.assert_array_less(np.abs(rep.mean(0) - mean), K * np.sqrt(var / N))
    np.testing.assert_array_less(np.abs(rep.var(0) - var), K * var * np.sqrt(2.0 / N))
    # two replicated data share mu: covariance v (se of a covariance ~ var / sqrt(N))
    cov = np.cov(rep[:, 0], rep[:, 1])[0, 1]
    assert abs(cov - EXACT["var"]) < K * var / np.sqrt(N)
    # each draw's replicate is generated at that draw's mu (noise sd 1 around it)
    noise = rep - np.asarray(exact_draws.samples["mu"], np.float64)[:, None]
    assert abs(noise.std() - 1.0) < K / np.sqrt(2 * noise.size)


def test_prior_predictive_of_the_normal_model(exact_draws):
    both = exact_draws.predictive(zoo.normal_normal, DATA, prior=True)
    rep = np.asarray(both.prior_predictive["y"], np.float64)
    var = 1.0 + 1.0
    np.testing.assert_array_less(np.abs(rep.mean(0)), K * np.sqrt(var / N))
    np.testing.assert_array_less(np.abs(rep.var(0) - var), K * var * np.sqrt(2.0 / N))
    # the posterior predictive is kept; ArviZ gets every group
    assert both.posterior_predictive["y"].shape == rep.shape
    data = both.to_arviz()
    for group in ("posterior_predictive", "prior", "prior_predictive", "observed_data"):
        assert data[group] is not None
    assert data.posterior_predictive["y"].dims == ("chain", "draw", "y_dim_0")
    assert data.prior["mu"].shape == (1, N)


def test_weighted_results_keep_replicates_with_their_draws():
    post = infer.importance(2000).run(jax.random.PRNGKey(0), zoo.normal_normal, DATA)
    rep = post.predictive(zoo.normal_normal, DATA, key=jax.random.PRNGKey(0))
    w = np.asarray(post.weights, np.float64)
    y = np.asarray(rep.posterior_predictive["y"], np.float64)
    mean, sd = EXACT["mean"], np.sqrt(EXACT["var"] + 1.0)
    # weighted mean at the exact one (se from the importance ESS): the run's key passed
    # again draws fresh noise (before the stream was separated, y[:, 0] was 2 mu exactly)
    np.testing.assert_array_less(np.abs(w @ y - mean), K * sd / np.sqrt(post.ess))
    assert np.corrcoef(np.asarray(post.samples["mu"]), y[:, 0])[0, 1] < 0.9
    # to_arviz resamples posterior and posterior_predictive at the same rows
    data = rep.to_arviz()
    anc = data.sample_stats["ancestor"].values.ravel()
    np.testing.assert_array_equal(data.posterior_predictive["y"].values[0], y[anc])
    np.testing.assert_array_equal(data.posterior["mu"].values[0],
                                  np.asarray(post.samples["mu"])[anc])


def test_markov_program_replicates_each_step_around_its_path():
    T, n = 6, 500
    rng = np.random.default_rng(1)
    paths = rng.normal(size=(n, T)).astype(np.float32)
    ys = np.zeros(T, np.float32)
    rep = Posterior({"x": paths}).predictive(zoo.lgssm_1d, ys)
    y = np.asarray(rep.posterior_predictive["y"], np.float64)
    assert y.shape == (n, T)
    noise = y - paths
    np.testing.assert_array_less(np.abs(noise.std(0) - 0.5), K * 0.5 / np.sqrt(2 * n))


def test_the_installed_arviz_plots_the_check(exact_draws):
    import matplotlib

    matplotlib.use("Agg")
    data = exact_draws.to_arviz()
    if arviz_major() == 0:
        az.plot_ppc(data, num_pp_samples=20, show=False)
    else:
        az.plot_ppc_dist(data, num_samples=20, backend="matplotlib")


def _no_observe():
    ppl.sample("a", dist.Normal(0.0, 1.0))


def test_errors_name_what_is_wrong():
    post = Posterior({"a": np.zeros(4)})
    with pytest.raises(UnsupportedModelError, match="no observe site"):
        post.predictive(_no_observe)
    with pytest.raises(InvalidArgumentError, match=r"latent sites: \['mu'\]"):
        post.predictive(zoo.normal_normal, DATA)
