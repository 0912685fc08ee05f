"""Missing observations: ``ppl.observe(name, d, value, mask=...)`` and the masked Kalman
filter / RTS smoother of ``ppl.models``.

A masked-out entry contributes exactly 0 to the log density, so a program with missing
data denotes the same posterior as the program that observes only the other entries. The
exact answers here are computed two independent ways (the masked Kalman filter, whose
update is skipped on a missing step, and a dense Gaussian computation with the missing
rows dropped); every missing entry of the data is NaN, which proves it is never read.

Monte Carlo tolerances, at a fixed seed, as in ``tests/test_smc.py``:

* SMC evidence: mean of Z-hat / Z within 3 replicate standard errors of 1, and mean of
  log Z-hat within 3 standard errors of log Z - s^2/2;
* per-step means (SMC filtering, PaRIS smoothing over R runs; NUTS with ``se = sd /
  sqrt(ess)``): |z| < 3 at >= 95% of the steps and max |z| < 4.5;
* the static program's posterior mean and variance (and evidence): within 4 standard
  errors, the delta-method one of self-normalised importance sampling, or ``sd /
  sqrt(ess)`` for NUTS. NUTS runs once, on the static program and the LGSSM side by side
  (independent blocks): one compilation serves both NUTS checks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size
from ppl.inference.smoothing import paris
from ppl.semantics import Density
from scipy.stats import multivariate_normal, norm
from test_smc import assert_per_step, per_step_z

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo
from ppl.errors import NonFiniteWeightError, PPLError, ShapeMismatchError

LGSSM = dict(rho=0.9, sigma_x=1.0, sigma_y=0.5)
T = 50
R = 16  # independent runs per replicate check


# --------------------------------------------------------------------------- helpers


def simulate(rng, T, A, Q, C, R, x0):
    """Observations y_{1:T} (T, p) of the LGSSM x_t = A x_{t-1} + N(0, Q), y_t = C x_t +
    N(0, R) from x_0 = x0 (numpy: nothing to compile)."""
    x, ys = np.asarray(x0, np.float64), []
    for _ in range(T):
        x = A @ x + rng.multivariate_normal(np.zeros(len(x)), Q)
        ys.append(C @ x + rng.multivariate_normal(np.zeros(C.shape[0]), R))
    return np.array(ys)


def dense_lgssm_1d(T, rho, sigma_x, sigma_y):
    """``(Cov x_{1:T}, Cov y_{1:T})`` of the 1-D LGSSM with x_0 = 0 (both means are 0):
    Cov(x_s, x_t) = rho^|t-s| Var(x_min(s,t)), Var(x_t) = sigma_x^2 sum_{k<t} rho^2k."""
    var = sigma_x**2 * np.cumsum(rho ** (2.0 * np.arange(T)))
    i = np.arange(T)
    cov_x = rho ** np.abs(i[:, None] - i[None, :]) * var[np.minimum(i[:, None], i[None, :])]
    return cov_x, cov_x + sigma_y**2 * np.eye(T)


def gaussian_condition(cov_xx, cov_xy, cov_yy, y):
    """Mean and covariance of x | y for zero-mean jointly Gaussian (x, y)."""
    gain = np.linalg.solve(cov_yy, cov_xy.T).T
    return gain @ y, cov_xx - gain @ cov_xy.T


def assert_evidence(log_z_hats, log_z, k=3.0):
    lz = np.asarray(log_z_hats, np.float64)
    r, s2 = len(lz), lz.var(ddof=1)
    ratio = np.exp(lz - log_z)
    z_nat = (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(r))
    z_log = (lz.mean() - (log_z - s2 / 2)) / np.sqrt(s2 / r)
    assert abs(z_nat) < k and abs(z_log) < k, (z_nat, z_log)


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def series():
    """T = 50 steps of the 1-D LGSSM with 20% of the observations missing (NaN)."""
    ys = simulate(np.random.default_rng(1), T, *(np.atleast_2d(a) for a in (
        LGSSM["rho"], LGSSM["sigma_x"] ** 2, 1.0, LGSSM["sigma_y"] ** 2)), np.zeros(1))[:, 0]
    mask = np.ones(T, bool)
    mask[np.random.default_rng(0).choice(T, T // 5, replace=False)] = False
    ys = np.where(mask, np.asarray(ys), np.nan).astype(np.float32)
    exact = zoo.lgssm_1d_exact(ys, mask=mask, **LGSSM)
    return jnp.asarray(ys), jnp.asarray(mask), exact


# --------------------------------------------------------------------------- exact


def test_masked_kalman_equals_dense_gaussian_of_the_observed_entries(series):
    ys, mask, exact = series
    y, m = np.asarray(ys, np.float64), np.asarray(mask)
    cov_x, cov_y = dense_lgssm_1d(T, **LGSSM)
    obs = np.flatnonzero(m)
    log_z = multivariate_normal(np.zeros(obs.size), cov_y[np.ix_(obs, obs)]).logpdf(y[obs])
    np.testing.assert_allclose(exact["log_evidence"], log_z, rtol=1e-10)
    mean, cov = gaussian_condition(cov_x, cov_x[:, obs], cov_y[np.ix_(obs, obs)], y[obs])
    np.testing.assert_allclose(exact["smoothed_means"], mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(exact["smoothed_vars"], np.diag(cov), rtol=1e-8)
    for t in range(T):  # filtering: condition x_t on the observed y_s, s <= t
        seen = obs[obs <= t]
        if not seen.size:
            continue
        mean_t, cov_t = gaussian_condition(cov_x[t:t + 1, t:t + 1], cov_x[t:t + 1, seen],
                                           cov_y[np.ix_(seen, seen)], y[seen])
        np.testing.assert_allclose(exact["filter_means"][t], mean_t[0], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(exact["filter_vars"][t], cov_t[0, 0], rtol=1e-8)
    # a missing step is predict-only and adds nothing to the evidence
    out = zoo.kalman_filter(y, LGSSM["rho"], LGSSM["sigma_x"] ** 2, 1.0,
                            LGSSM["sigma_y"] ** 2, mask=m)
    miss = np.flatnonzero(~m)
    np.testing.assert_array_equal(out["filter_means"][miss], out["pred_means"][miss])
    np.testing.assert_array_equal(out["filter_covs"][miss], out["pred_covs"][miss])


def test_masked_kalman_2d_partly_observed_steps_equal_dense_gaussian():
    """A (T, p) mask: some coordinates of a step missing, some steps missing entirely."""
    T2, A, Q, C, R_ = 8, zoo.LGSSM_2D_A, zoo.LGSSM_2D_Q, zoo.LGSSM_2D_C, zoo.LGSSM_2D_R
    m0, P0 = zoo.LGSSM_2D_X0, zoo.LGSSM_2D_P0
    ys = simulate(np.random.default_rng(3), T2, A, Q, C, R_, m0)
    mask = np.ones((T2, 2), bool)
    mask[1, 0] = mask[4, :] = mask[6, 1] = False
    y = np.where(mask, np.asarray(ys, np.float64), np.nan)
    # dense: x_t = A^t x_0 + sum_{k<=t} A^{t-k} w_k with x_0 ~ N(m0, P0)
    d = 2
    powers = [np.linalg.matrix_power(A, k) for k in range(T2 + 1)]
    M = np.zeros((T2 * d, (T2 + 1) * d))  # x_{1:T} = M (x_0, w_{1:T})
    for t in range(T2):
        M[t * d:(t + 1) * d, :d] = powers[t + 1]
        for k in range(t + 1):
            M[t * d:(t + 1) * d, (k + 1) * d:(k + 2) * d] = powers[t - k]
    noise = np.kron(np.eye(T2 + 1), Q)
    noise[:d, :d] = P0
    cov_x = M @ noise @ M.T
    mean_x = np.concatenate([powers[t + 1] @ m0 for t in range(T2)])
    big_C = np.kron(np.eye(T2), C)
    cov_y = big_C @ cov_x @ big_C.T + np.kron(np.eye(T2), R_)
    obs = np.flatnonzero(mask.ravel())
    y_o = y.ravel()[obs] - (big_C @ mean_x)[obs]
    log_z = multivariate_normal(np.zeros(obs.size), cov_y[np.ix_(obs, obs)]).logpdf(y_o)
    mean, cov = gaussian_condition(cov_x, (cov_x @ big_C.T)[:, obs], cov_y[np.ix_(obs, obs)],
                                   y_o)
    out = zoo.rts_smoother(y, A, Q, C, R_, m0=m0, P0=P0, mask=mask)
    np.testing.assert_allclose(out["log_evidence"], log_z, rtol=1e-10)
    np.testing.assert_allclose(out["smoothed_means"].ravel(), mean + mean_x, atol=1e-9)
    np.testing.assert_allclose(
        out["smoothed_covs"], np.stack([cov[t * d:(t + 1) * d, t * d:(t + 1) * d]
                                        for t in range(T2)]), atol=1e-9)


def test_kalman_mask_none_is_all_observed_and_nan_data_raise(series):
    ys, mask, _ = series
    y = np.asarray(ys, np.float64)
    full = np.where(np.asarray(mask), y, 0.3)
    args = (LGSSM["rho"], LGSSM["sigma_x"] ** 2, 1.0, LGSSM["sigma_y"] ** 2)
    plain = zoo.kalman_filter(full, *args)
    all_true = zoo.kalman_filter(full, *args, mask=np.ones(T, bool))
    np.testing.assert_array_equal(plain["filter_means"], all_true["filter_means"])
    assert plain["log_evidence"] == all_true["log_evidence"]
    with pytest.raises(ValueError, match="NaN.*mask"):
        zoo.kalman_filter(y, *args)
    with pytest.raises(ValueError, match="shape"):
        zoo.rts_smoother(y, *args, mask=np.ones(T - 1, bool))


def test_masked_entries_score_zero_with_finite_gradients(series):
    """The program's log joint at a state path is the prior plus the observed entries
    only, and the NaN placeholders leak no NaN into it or its gradient (NUTS, SVI)."""
    ys, mask, _ = series
    x = jnp.linspace(-1.0, 1.0, T)
    log_joint = Density(zoo.lgssm_1d).log_joint
    value, grad = jax.jit(jax.value_and_grad(
        lambda v, ys, mask: log_joint({"x": v}, ys, mask=mask, **LGSSM)
    ))(x, ys, mask)
    xv, y, m = np.asarray(x, np.float64), np.asarray(ys, np.float64), np.asarray(mask)
    prior = norm.logpdf(xv, LGSSM["rho"] * np.r_[0.0, xv[:-1]], LGSSM["sigma_x"]).sum()
    likelihood = norm.logpdf(y[m], xv[m], LGSSM["sigma_y"]).sum()
    np.testing.assert_allclose(float(value), prior + likelihood, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(grad)))


# --------------------------------------------------------------------------- Monte Carlo


def test_smc_evidence_and_filtering_means_match_masked_kalman(series):
    ys, mask, exact = series
    smc = infer.smc(256)
    runs = [smc.run(k, zoo.lgssm_1d, ys, mask=mask, **LGSSM)
            for k in jax.random.split(jax.random.PRNGKey(11), R)]
    assert_evidence([p.log_evidence for p in runs], exact["log_evidence"])
    means = np.stack([np.asarray(p.info["filter_means"]["x"]) for p in runs])
    assert_per_step(per_step_z(means, exact["filter_means"]))
    # pointwise log-likelihood (ArviZ's log_likelihood group): 0 at the missing steps;
    # the observed data there stay NaN as given (ArviZ's convention for missing values)
    loglik = np.asarray(runs[0].log_likelihood["y"])
    assert np.all(np.isfinite(loglik)) and np.all(loglik[..., ~np.asarray(mask)] == 0.0)
    assert np.all(np.isnan(np.asarray(runs[0].observed_data["y"])[~np.asarray(mask)]))


def test_paris_smoothed_means_match_masked_rts(series):
    ys, mask, exact = series
    smoother = paris(200, 2, lambda t, x_prev, x, params: jnp.zeros(T).at[t].set(x))
    est = np.stack([
        np.asarray(smoother.run(k, zoo.lgssm_1d, ys, mask=mask, **LGSSM).estimate)
        for k in jax.random.split(jax.random.PRNGKey(12), R)
    ])
    assert_per_step(per_step_z(est, exact["smoothed_means"]))


# --------------------------------------------------------------------------- static program


@ppl.model
def normal_mean(y, mask, site="y"):
    mu = ppl.sample("mu", dist.Normal(0.0, 2.0))
    with ppl.plate("n", y.shape[0]):
        ppl.observe(site, dist.Normal(mu, 1.0), y, mask=mask)


@pytest.fixture(scope="module")
def static_data():
    y = 1.0 + np.random.default_rng(5).normal(size=20)
    mask = np.ones(20, bool)
    mask[[2, 7, 11, 16]] = False
    y[~mask] = np.nan
    y_o = y[mask]
    precision = 1 / 4 + y_o.size  # conjugate Normal-Normal from the observed entries only
    post_mean, post_var = y_o.sum() / precision, 1 / precision
    log_z = multivariate_normal(np.zeros(y_o.size), 4.0 + np.eye(y_o.size)).logpdf(y_o)
    return jnp.asarray(y, jnp.float32), jnp.asarray(mask), post_mean, post_var, log_z


def test_static_importance_matches_conjugate_posterior_of_observed(static_data):
    y, mask, post_mean, post_var, log_z = static_data
    post = infer.importance(4000).run(jax.random.PRNGKey(21), normal_mean, y, mask)
    w = np.exp(np.asarray(post.log_weights, np.float64) - np.max(post.log_weights))
    w /= w.sum()
    mu = np.asarray(post.samples["mu"], np.float64)
    mean = np.sum(w * mu)
    se = np.sqrt(np.sum(w**2 * (mu - mean) ** 2))  # delta method, self-normalised IS
    assert abs(mean - post_mean) < 4 * se, (mean, post_mean, se)
    var = np.sum(w * (mu - mean) ** 2)
    se_var = np.sqrt(np.sum(w**2 * ((mu - mean) ** 2 - var) ** 2))
    assert abs(var - post_var) < 4 * se_var, (var, post_var, se_var)
    # Z-hat / Z has relative variance ~ (n sum w_i^2 - 1) / n = (n / ESS - 1) / n
    n = w.size
    rel_se = np.sqrt((n * np.sum(w**2) - 1.0) / n)
    assert abs(np.exp(float(post.log_evidence) - log_z) - 1.0) < 4 * rel_se


@ppl.model
def level_and_states(y, y_mask, ys, mask):
    """The static program and the LGSSM side by side (independent a priori and given the
    data): one NUTS compile serves both checks below."""
    normal_mean(y, y_mask, site="y_static")
    return zoo.lgssm_1d(ys, mask=mask, **LGSSM)


@pytest.fixture(scope="module")
def nuts_post(static_data, series):
    y, y_mask = static_data[:2]
    ys, mask, _ = series
    return infer.nuts(num_samples=1000, num_warmup=400).run(
        jax.random.PRNGKey(22), level_and_states, y, y_mask, ys, mask
    )


def mcse_z(draws, exact):
    """(mean of draws - exact) / (sd / sqrt(ess)), per trailing entry (one chain)."""
    draws = np.asarray(draws, np.float64)
    ess = effective_sample_size(draws[None])
    return (draws.mean(0) - exact) / (draws.std(0) / np.sqrt(ess))


def test_static_nuts_matches_conjugate_posterior_of_observed(static_data, nuts_post):
    _, y_mask, post_mean, post_var, _ = static_data
    mu = np.asarray(nuts_post.samples["mu"], np.float64)
    assert abs(mcse_z(mu, post_mean)) < 4
    assert abs(mcse_z((mu - post_mean) ** 2, post_var)) < 4
    loglik = np.asarray(nuts_post.log_likelihood["y_static"])
    assert np.all(np.isfinite(loglik)) and np.all(loglik[:, ~np.asarray(y_mask)] == 0.0)


def test_nuts_state_means_match_masked_rts(series, nuts_post):
    _, mask, exact = series
    x = np.asarray(nuts_post.samples["x"], np.float64)  # (draws, T)
    assert_per_step(mcse_z(x, exact["smoothed_means"]))


# --------------------------------------------------------------------------- errors


def test_bad_mask_is_rejected_naming_the_site():
    y = jnp.zeros(5)

    def model(mask):
        with ppl.plate("n", 5):
            ppl.observe("y", dist.Normal(0.0, 1.0), y, mask=mask)

    with pytest.raises(ShapeMismatchError, match="observe\\('y'\\).*mask"):
        infer.importance(10).run(jax.random.PRNGKey(0), model, jnp.ones(4, bool))
    with pytest.raises(PPLError, match="observe\\('y'\\).*boolean"):
        infer.importance(10).run(jax.random.PRNGKey(0), model, jnp.ones(5))


def test_nan_data_without_mask_raise_naming_nan_and_the_site(series):
    ys, _, _ = series  # NaN at the missing steps, no mask given
    ys = ys.at[0].set(0.0)  # the eager check of the first step passes: NaN from step 2 on
    # data seen only as tracers inside the run's scan: found from the weights after the run
    with pytest.raises(NonFiniteWeightError, match="NaN.*'y'|'y'.*NaN") as err:
        infer.smc(64).run(jax.random.PRNGKey(0), zoo.lgssm_1d, ys, **LGSSM)
    assert "mask=~jnp.isnan(y)" in str(err.value)

    # concrete data (a static program's, checked once outside jit): rejected at the observe
    y_static = np.array([0.0, np.nan, 1.0], np.float32)
    with pytest.raises(NonFiniteWeightError, match="observe\\('y'\\).*NaN.*mask=~jnp.isnan"):
        infer.importance(50).run(jax.random.PRNGKey(0), normal_mean, y_static, None)
    with pytest.raises(NonFiniteWeightError, match="observe\\('y'\\).*NaN.*mask=~jnp.isnan"):
        ppl.semantics.Weighted(normal_mean)(jax.random.PRNGKey(0), y_static, None)

