"""Weighted results in ArviZ: ``Posterior.to_arviz()`` resamples weighted draws by default
(ArviZ ignores weights), so ``az.summary`` and ``az.loo`` describe the posterior; the raw
weighted draws stay available with ``weights="sample_stats"``.

Tolerances: K standard errors, the standard error from the importance ESS. The resampled
draws carry no more information than the weighted ones, so ``sd / sqrt(ESS)`` (mean) and
``sd / sqrt(2 ESS)`` (sd of a Gaussian) are lower bounds of their Monte Carlo error; the
systematic resampling adds little on top (each draw is copied floor or ceil of N w_i times).
"""

import warnings

import jax
import numpy as np
import pytest
from arviz_helpers import az, elpd, group_names

from ppl import Posterior
from ppl import inference as infer
from ppl import models as zoo

KEY = jax.random.PRNGKey(1)
K = 4.0  # standard errors
DATA = np.random.default_rng(0).normal(1.2, 1.0, size=12).astype(np.float32)
EXACT = zoo.normal_normal_exact(DATA)


@pytest.fixture(scope="module")
def importance_post():
    return infer.importance(4000).run(KEY, zoo.normal_normal, DATA)


def quiet(f, *args, **kwargs):
    """ArviZ's own warnings (one chain: no R-hat) are beside the point here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*args, **kwargs)


def test_default_summary_matches_the_exact_posterior(importance_post):
    post = importance_post
    ess = post.ess
    assert 300 < ess < 2000  # weights far from uniform: the raw draws are the prior
    idata = post.to_arviz()
    table = quiet(az.summary, idata, kind="stats")
    mean, sd = EXACT["mean"], np.sqrt(EXACT["var"])
    assert abs(table.loc["mu", "mean"] - mean) < K * sd / np.sqrt(ess), table
    assert abs(table.loc["mu", "sd"] - sd) < K * sd / np.sqrt(2 * ess), table
    # the old default (raw draws, weights ignored) is far outside: the prior's N(0, 1)
    raw = quiet(az.summary, post.to_arviz(weights="sample_stats"), kind="stats")
    assert abs(raw.loc["mu", "mean"] - mean) > 10 * K * sd / np.sqrt(ess)
    # Posterior.summary is the same table
    np.testing.assert_allclose(quiet(post.summary, kind="stats").values, table.values)


def test_resampled_conversion_says_what_it_did_and_keeps_the_weights(importance_post):
    post = importance_post
    n = post.num_chains * post.num_draws
    idata = post.to_arviz()
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        attrs = idata[group].attrs
        assert attrs["ppl_weights"] == "resampled", group
        assert "resampled" in attrs["ppl_note"] and "weights='sample_stats'" in attrs["ppl_note"]
    ss = idata.sample_stats
    assert ss.attrs["importance_ess"] == pytest.approx(post.ess)
    assert ss.attrs["resampling"] == "systematic"
    assert ss.attrs["num_source_draws"] == n and ss.attrs["num_source_chains"] == 1
    assert ss.attrs["log_evidence"] == pytest.approx(float(post.log_evidence))
    np.testing.assert_array_equal(ss["source_log_weight"].values, np.asarray(post.log_weights))
    assert "log_weight" not in ss  # the resampled draws are equally weighted
    # same number of draws, one chain; every group taken at the same ancestors
    assert idata.posterior["mu"].shape == (1, n)
    anc = ss["ancestor"].values.ravel()
    np.testing.assert_array_equal(idata.posterior["mu"].values.ravel(),
                                  np.asarray(post.samples["mu"])[anc])
    np.testing.assert_array_equal(idata.log_likelihood["y"].values[0],
                                  np.asarray(post.log_likelihood["y"])[anc])
    # systematic resampling: draw i is copied floor(n w_i) or ceil(n w_i) times
    counts = np.bincount(anc, minlength=n)
    expected = n * np.asarray(post.weights, np.float64)
    assert np.all(counts >= np.floor(expected) - 1e-3)
    assert np.all(counts <= np.ceil(expected) + 1e-3)
    # deterministic by default (PRNGKey(0)); other keys give other draws
    again = post.to_arviz(key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(again.posterior["mu"].values, idata.posterior["mu"].values)
    other = post.to_arviz(key=jax.random.PRNGKey(5))
    assert not np.array_equal(other.posterior["mu"].values, idata.posterior["mu"].values)
    assert other.sample_stats.attrs["resampling_key"] == "given by the caller"
    # weights="resample" is the same conversion
    explicit = post.to_arviz(weights="resample")
    np.testing.assert_array_equal(explicit.posterior["mu"].values, idata.posterior["mu"].values)


def test_sample_stats_mode_still_returns_the_raw_weighted_draws(importance_post):
    post = importance_post
    idata = post.to_arviz(weights="sample_stats")
    np.testing.assert_array_equal(idata.posterior["mu"].values.ravel(), post.samples["mu"])
    np.testing.assert_array_equal(idata.sample_stats["log_weight"].values.ravel(),
                                  post.log_weights)
    assert float(idata.sample_stats["ess"]) == pytest.approx(post.ess)
    assert idata.posterior.attrs["ppl_weights"] == "weighted"
    assert "ancestor" not in idata.sample_stats


@pytest.mark.slow
def test_loo_of_importance_agrees_with_nuts(importance_post):
    """Both estimate the same elpd_loo on the same 12 data points, so they differ by Monte
    Carlo error only; ArviZ's reported ``se`` (~1.1 here) is the data-level standard error on
    which models are compared. We allow a tenth of it (~0.11): over seeds, the importance
    estimate moves by about 0.02 and NUTS's (1000 draws) by about 0.03, so this is about 3
    standard deviations of their difference; ignoring the weights (the old default) is off
    by ~45 se. PSIS also accepts the resampled draws (copies included): every Pareto k is
    good."""
    imp = quiet(az.loo, importance_post.to_arviz(), pointwise=True)
    nuts = infer.nuts(1000, num_warmup=500).run(jax.random.PRNGKey(2), zoo.normal_normal,
                                                DATA)
    ref = quiet(az.loo, nuts.to_arviz())
    tol = 0.1 * max(imp.se, ref.se)
    assert abs(elpd(imp) - elpd(ref)) < tol, (imp, ref)
    assert np.all(np.asarray(imp.pareto_k) < 0.7)
    raw = quiet(az.loo, importance_post.to_arviz(weights="sample_stats"))
    assert abs(elpd(raw) - elpd(ref)) > 10 * ref.se


def test_smc_on_a_markov_program_summarises_correctly():
    """Bootstrap SMC on a 5-step linear-Gaussian model: the ArviZ mean of the last state is
    the Kalman filter mean (the weights alone, at the last step, carry that correction), and
    every state's ArviZ mean is the weighted mean of the paths up to the resampling noise."""
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(0), 5)
    exact = zoo.lgssm_1d_exact(ys)
    post = infer.smc(2000).run(jax.random.PRNGKey(3), zoo.lgssm_1d, ys)
    assert post.is_weighted
    ess = post.ess
    idata = post.to_arviz()
    assert idata.posterior["x"].shape == (1, 2000, 5)
    means = idata.posterior["x"].mean(("chain", "draw")).values
    sd_last = np.sqrt(exact["filter_vars"][-1])
    assert abs(means[-1] - exact["filter_means"][-1]) < K * sd_last / np.sqrt(ess)
    sds = np.sqrt(np.asarray(post.var("x"), np.float64))
    np.testing.assert_array_less(np.abs(means - np.asarray(post.mean("x"))),
                                 K * sds / np.sqrt(ess))
    # the raw draws' (unweighted) last-state mean is far off: the default matters here
    raw_last = float(np.asarray(post.samples["x"])[:, -1].mean())
    assert abs(raw_last - exact["filter_means"][-1]) > 10 * K * sd_last / np.sqrt(ess)


def test_unweighted_results_are_unchanged():
    rng = np.random.default_rng(0)
    post = Posterior({"a": rng.normal(size=(2 * 50, 3))}, num_chains=2, method="exact")
    default = post.to_arviz()
    raw = post.to_arviz(weights="sample_stats")
    assert default.posterior["a"].shape == (2, 50, 3)
    np.testing.assert_array_equal(default.posterior["a"].values, raw.posterior["a"].values)
    assert "ppl_weights" not in default.posterior.attrs
    assert "sample_stats" not in group_names(default)


def test_several_weighted_chains_are_pooled_into_one():
    """Per-chain log weights on a common scale are normalised together: the resampled
    draws are one chain of all draws, and the per-chain log evidence is kept."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    lw = -0.5 * ((x - 1.0) / 0.5) ** 2 + 0.5 * x**2
    post = Posterior({"x": x}, num_chains=2, log_weights=lw, log_evidence=np.array([0.1, 0.3]))
    idata = post.to_arviz()
    assert idata.posterior["x"].shape == (1, 400)
    assert idata.sample_stats.attrs["log_evidence_per_chain"] == pytest.approx([0.1, 0.3])
    assert idata.sample_stats.attrs["num_source_chains"] == 2
    se = 0.5 / np.sqrt(post.ess)
    assert abs(float(idata.posterior["x"].mean()) - float(post.mean("x"))) < K * se
