"""Tests for ppl.posterior.Posterior: validation, weighted summaries, resampling, ArviZ."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from arviz_helpers import az, elpd, result_type
from jax.scipy.special import logsumexp

from ppl import Posterior
from ppl.errors import NonFiniteWeightError, UnknownOptionError

SHAPES = {"a": (), "v": (3,), "m": (2, 4)}


def make_samples(total, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=(total, *s)).astype(np.float32) for k, s in SHAPES.items()}


def weighted_posterior(n=4000, seed=1):
    """x ~ N(0, 1) draws with log weights of N(1, 0.8^2) / N(0, 1) (target N(1, 0.8^2))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    lw = -0.5 * ((x - 1.0) / 0.8) ** 2 + 0.5 * x**2 - np.log(0.8)
    return Posterior({"x": x}, log_weights=lw, log_evidence=0.0, method="is"), x, lw


# --------------------------------------------------------------------------- validation


def test_mismatched_leading_axes_names_site():
    with pytest.raises(ValueError, match="'b'"):
        Posterior({"a": np.zeros(10), "b": np.zeros(9)})
    with pytest.raises(ValueError, match="log_likelihood 'y'"):
        Posterior({"a": np.zeros(10)}, log_likelihood={"y": np.zeros((8, 3))})
    with pytest.raises(ValueError, match="log_weights"):
        Posterior({"a": np.zeros(10)}, log_weights=np.zeros(11))


def test_not_divisible_by_chains_and_0d_site():
    with pytest.raises(ValueError, match="not divisible by num_chains=4"):
        Posterior({"a": np.zeros(10)}, num_chains=4)
    with pytest.raises(ValueError, match="site 'a' is 0-d"):
        Posterior({"a": np.float32(1.0)})
    with pytest.raises(ValueError, match="num_chains"):
        Posterior({"a": np.zeros(10)}, num_chains=0)
    with pytest.raises(ValueError, match="log_evidence"):
        Posterior({"a": np.zeros(10)}, num_chains=2, log_evidence=np.zeros(3))
    with pytest.raises(ValueError, match="reserved"):
        Posterior({"a": np.zeros(10)}, sample_stats={"ess": np.zeros(10)})


def test_non_finite_weights():
    with pytest.raises(NonFiniteWeightError):
        Posterior({"a": np.zeros(3)}, log_weights=np.array([0.0, np.nan, 0.0]))
    with pytest.raises(NonFiniteWeightError):
        Posterior({"a": np.zeros(3)}, log_weights=np.full(3, -np.inf))
    # a single -inf is a weight of zero, and allowed
    post = Posterior({"a": np.arange(3.0)}, log_weights=np.array([0.0, -np.inf, 0.0]))
    np.testing.assert_allclose(post.weights, [0.5, 0.0, 0.5])
    np.testing.assert_allclose(post.ess, 2.0, rtol=1e-6)


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize("num_chains", [1, 4])
def test_get_samples_grouping_is_chain_major(num_chains):
    total = num_chains * 5
    s = make_samples(total)
    post = Posterior(s, num_chains=num_chains)
    assert post.num_chains == num_chains and post.num_draws == 5
    g = post.get_samples(group_by_chain=True)
    for k, shape in SHAPES.items():
        assert g[k].shape == (num_chains, 5, *shape)
        np.testing.assert_array_equal(g[k][-1, 0], s[k][(num_chains - 1) * 5])
    assert post.ess == total
    np.testing.assert_allclose(post.weights, np.full(total, 1 / total))


def test_unweighted_summaries_match_numpy():
    s = make_samples(200)
    post = Posterior(s, num_chains=4)
    np.testing.assert_allclose(post.mean("m"), s["m"].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(post.var("v"), s["v"].var(0), rtol=1e-5)
    q = post.quantile("m", [0.1, 0.5])
    assert q.shape == (2, 2, 4)
    np.testing.assert_allclose(q, np.quantile(s["m"], [0.1, 0.5], axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        post.expectation(lambda d: d["a"] ** 2), np.mean(s["a"] ** 2), rtol=1e-5
    )
    with pytest.raises(KeyError, match="nope"):
        post.mean("nope")


def test_weighted_mean_var_match_analytic_weighted_values():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    lw = rng.normal(size=50).astype(np.float32) * 2.0
    post = Posterior({"x": x}, log_weights=lw)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    mean = (w[:, None] * x).sum(0)
    var = (w[:, None] * (x - mean) ** 2).sum(0)
    np.testing.assert_allclose(post.weights, w, rtol=1e-5)
    np.testing.assert_allclose(post.mean("x"), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(post.var("x"), var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        post.expectation(lambda d: d["x"].sum(-1)), mean.sum(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(post.ess, 1.0 / np.sum(w**2), rtol=1e-4)
    # log weights far beyond float32's exp range (exp(200) = inf) are normalised stably
    big = Posterior({"x": x}, log_weights=lw + np.float32(200.0))
    assert 200.0 > np.log(np.finfo(np.float32).max)
    np.testing.assert_allclose(big.mean("x"), mean, rtol=1e-3, atol=1e-4)


def test_weighted_quantile():
    x = np.array([3.0, 1.0, 2.0, 10.0], dtype=np.float32)
    lw = np.log(np.array([0.25, 0.25, 0.5, 1e-30]))
    lw[3] = -np.inf  # zero weight: must not affect the quantiles
    post = Posterior({"x": x}, log_weights=lw)
    # sorted values 1, 2, 3 with weights .25, .5, .25 -> midpoints .125, .5, .875
    np.testing.assert_allclose(post.quantile("x", 0.5), 2.0, rtol=1e-6)
    np.testing.assert_allclose(post.quantile("x", [0.0, 0.3125, 1.0]), [1.0, 1.5, 3.0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        post.quantile("x", 1.5)


def test_weighted_quantile_equal_weights_is_hazen():
    x = np.random.default_rng(0).normal(size=(101, 2)).astype(np.float32)
    post = Posterior({"x": x}, log_weights=np.zeros(101))
    qs = np.array([0.05, 0.5, 0.9])
    np.testing.assert_allclose(
        post.quantile("x", qs), np.quantile(x, qs, axis=0, method="hazen"), rtol=1e-5, atol=1e-5
    )


# --------------------------------------------------------------------------- resampling


def test_resample_matches_weighted_mean_within_mc_error():
    post, x, lw = weighted_posterior()
    target_mean, target_sd = float(post.mean("x")), float(jnp.sqrt(post.var("x")))
    rs = post.resample(jax.random.PRNGKey(0), num_draws=4000)
    assert rs.log_weights is None and rs.num_chains == 1 and rs.num_draws == 4000
    assert rs.log_evidence == post.log_evidence
    assert rs.info["ess_before_resampling"] == pytest.approx(post.ess)
    # systematic resampling adds at most the variance of multinomial resampling; 4 standard
    # errors based on the importance ESS bound the difference between the two means.
    tol = 4.0 * target_sd / np.sqrt(post.ess)
    assert abs(float(rs.mean("x")) - target_mean) < tol
    # and both are close to the analytic target N(1, 0.8^2)
    assert abs(target_mean - 1.0) < 4.0 * 0.8 / np.sqrt(post.ess)


def test_resample_keeps_rows_consistent():
    n = 12
    x = np.arange(n, dtype=np.float32)
    post = Posterior(
        {"x": x},
        num_chains=2,
        log_weights=np.linspace(-2, 2, n),
        log_evidence=np.array([-1.0, -2.0]),
        sample_stats={"idx": np.arange(n)},
        observed_data={"y": np.ones(3)},
        log_likelihood={"y": np.tile(x[:, None], (1, 3))},
        method="smc",
    )
    rs = post.resample(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(rs.samples["x"], rs.sample_stats["idx"])
    np.testing.assert_array_equal(rs.log_likelihood["y"][:, 0], rs.samples["x"])
    np.testing.assert_array_equal(rs.observed_data["y"], np.ones(3))
    assert rs.method == "smc"
    np.testing.assert_allclose(
        rs.log_evidence, logsumexp(jnp.array([-1.0, -2.0])) - np.log(2), rtol=1e-6
    )
    # systematic: each index appears floor or ceil of N * w_i times
    counts = np.bincount(np.asarray(rs.samples["x"]).astype(int), minlength=n)
    expected = n * np.asarray(post.weights)
    assert np.all(counts >= np.floor(expected) - 1e-6)
    assert np.all(counts <= np.ceil(expected) + 1e-6)


def test_resample_never_picks_zero_weight():
    lw = np.array([0.0, -np.inf, 0.0, -np.inf])
    post = Posterior({"x": np.arange(4.0)}, log_weights=lw)
    for seed in range(5):
        rs = post.resample(jax.random.PRNGKey(seed), num_draws=50)
        assert set(np.asarray(rs.samples["x"]).tolist()) <= {0.0, 2.0}


# --------------------------------------------------------------------------- arviz


@pytest.mark.parametrize("num_chains", [1, 4])
def test_to_arviz_round_trip_shapes_and_names(num_chains):
    draws = 6
    s = make_samples(num_chains * draws)
    stats = {
        "accept_prob": np.full(num_chains * draws, 0.9),
        "diverging": np.zeros(num_chains * draws, dtype=bool),
    }
    post = Posterior(s, num_chains=num_chains, sample_stats=stats, method="nuts")
    idata = post.to_arviz()
    assert isinstance(idata, result_type())
    ds = idata.posterior
    assert set(ds.data_vars) == set(SHAPES)
    assert ds["a"].dims == ("chain", "draw")
    assert ds["v"].dims == ("chain", "draw", "v_dim_0")
    assert ds["m"].dims == ("chain", "draw", "m_dim_0", "m_dim_1")
    for k, shape in SHAPES.items():
        assert ds[k].shape == (num_chains, draws, *shape)
        np.testing.assert_array_equal(ds[k].values, post.get_samples(group_by_chain=True)[k])
    assert set(idata.sample_stats.data_vars) == {"accept_prob", "diverging"}
    assert idata.sample_stats["diverging"].dims == ("chain", "draw")
    assert "log_weight" not in idata.sample_stats


def test_to_arviz_weighted_sample_stats_vs_resample():
    post, x, lw = weighted_posterior(n=400)
    idata = post.to_arviz(weights="sample_stats")
    ss = idata.sample_stats
    assert ss["log_weight"].dims == ("chain", "draw")
    np.testing.assert_allclose(ss["log_weight"].values.ravel(), lw, rtol=1e-6)
    assert ss.attrs["ess"] == pytest.approx(post.ess)
    assert float(ss["ess"]) == pytest.approx(post.ess)
    assert ss.attrs["log_evidence"] == 0.0 and float(ss["log_evidence"]) == 0.0
    np.testing.assert_array_equal(idata.posterior["x"].values.ravel(), x)

    rs = post.to_arviz(weights="resample")
    assert "log_weight" not in rs.sample_stats
    assert "ess" not in rs.sample_stats
    assert float(rs.sample_stats["log_evidence"]) == 0.0
    assert rs.posterior["x"].shape == (1, 400)
    # default key is PRNGKey(0): deterministic, and equal to an explicit PRNGKey(0)
    again = post.to_arviz(weights="resample", key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(rs.posterior["x"].values, again.posterior["x"].values)
    other = post.to_arviz(weights="resample", key=jax.random.PRNGKey(7))
    assert not np.array_equal(rs.posterior["x"].values, other.posterior["x"].values)


def test_to_arviz_per_chain_log_evidence():
    post = Posterior(
        {"x": np.zeros(8)}, num_chains=2, log_weights=np.zeros(8), log_evidence=np.array([1.0, 2.0])
    )
    ss = post.to_arviz(weights="sample_stats").sample_stats
    assert ss["log_evidence"].dims == ("chain",)
    assert ss.attrs["log_evidence"] == [1.0, 2.0]


def test_to_arviz_unknown_option():
    post = Posterior({"x": np.zeros(4)})
    with pytest.raises(UnknownOptionError, match="weights") as err:
        post.to_arviz(weights="ignore")
    assert "sample_stats" in str(err.value) and "resample" in str(err.value)
    assert isinstance(err.value, ValueError)


def normal_model_posterior(num_chains=4, draws=250, n_obs=20, seed=0):
    """Conjugate N(mu, 1) likelihood with flat prior: mu | y ~ N(ybar, 1/n)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0.5, 1.0, size=n_obs).astype(np.float32)
    mu = rng.normal(y.mean(), 1 / np.sqrt(n_obs), size=num_chains * draws).astype(np.float32)
    ll = -0.5 * (y[None, :] - mu[:, None]) ** 2 - 0.5 * np.log(2 * np.pi)
    return Posterior(
        {"mu": mu},
        num_chains=num_chains,
        observed_data={"y": y},
        log_likelihood={"y": ll},
        method="exact",
    )


def test_arviz_loo_runs_with_log_likelihood():
    post = normal_model_posterior()
    idata = post.to_arviz()
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "y_dim_0")
    assert idata.observed_data["y"].dims == ("y_dim_0",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata)
    assert np.isfinite(elpd(loo))
    assert loo.n_data_points == 20


def test_summary_returns_dataframe_with_sites():
    post = Posterior(make_samples(400), num_chains=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = post.summary()
    assert isinstance(df, pd.DataFrame)
    assert "a" in df.index and "v[0]" in df.index and "m[1, 3]" in df.index
    # weighted results are summarised after resampling
    wpost, _, _ = weighted_posterior(n=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wdf = wpost.summary(kind="stats")
    assert list(wdf.index) == ["x"]
    assert abs(wdf.loc["x", "mean"] - float(wpost.mean("x"))) < 0.2


def test_repr_mentions_method_sites_evidence_and_ess():
    post, _, _ = weighted_posterior(n=100)
    text = repr(post)
    assert "method='is'" in text and "num_draws=100" in text
    assert "x" in text and "log_evidence=0" in text and "ess=" in text
    plain = repr(Posterior(make_samples(8), num_chains=2, method="nuts"))
    assert "(2, 4)" in plain and "ess" not in plain
