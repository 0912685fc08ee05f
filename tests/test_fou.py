"""Exact fractional Ornstein-Uhlenbeck reference answers (ppl.models.fou).

Every closed form or quadrature is checked against an independent route: the OU closed form
at H = 1/2; adaptive ``scipy.integrate.quad`` for the panel quadratures; the stationary
type-I autocovariance against ``int_0^inf G(v) G(v+d) dv``; the fBM covariance at theta = 0;
and a brute-force Monte Carlo (exact fBM on a fine grid by Cholesky of
``mafbm.exact_fbm_covariance``, then the OU integral step by step) with z-scores from the
Monte Carlo standard error. A deliberately wrong answer (the other type, or the Brownian
covariance) is shown to fail the same Monte Carlo check.
"""

import warnings

import jax
import numpy as np
import pytest
from ppl.models import fou
from ppl.semantics.mafbm import exact_fbm_covariance
from scipy import integrate, optimize

from ppl.errors import ShapeMismatchError, UnknownOptionError

K_SIGMA = 4.0


# ------------------------------------------------------------------- H = 1/2 and theta = 0


@pytest.mark.parametrize("kind", ["I", "II"])
def test_half_hurst_is_the_ou_closed_form(kind):
    t = np.array([0.0, 0.01, 0.3, 0.31, 1.0, 2.5, 7.0])
    cov = fou.fou_covariance(t, 0.5, 1.3, 0.7, kind, x0_var=0.2)
    ref = fou.ou_covariance(t, 1.3, 0.7, x0_var=0.2)
    np.testing.assert_allclose(cov, ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["I", "II"])
@pytest.mark.parametrize("hurst", [0.1, 0.3, 0.7, 0.9])
def test_zero_theta_is_the_fbm_covariance(kind, hurst):
    t = np.array([0.05, 0.3, 0.31, 1.0, 2.0])
    cov = fou.fou_covariance(t, hurst, 0.0, 1.7, kind)
    ref = 1.7**2 * exact_fbm_covariance(t[:, None], t[None, :], hurst, kind)
    np.testing.assert_allclose(cov, ref, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------- quadrature against quad


def _smooth(v, hurst, theta):
    v = max(v, 1e-300)
    return fou.fou_kernel(v, hurst, theta) * v ** (0.5 - hurst)


def _quad_j(m, d, hurst, theta):
    """``J(m, d) = int_0^m G(v) G(v+d) dv`` by adaptive QAWS (algebraic endpoint weight)."""
    a = hurst + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        if d == 0:
            return integrate.quad(lambda v: _smooth(v, hurst, theta) ** 2, 0, m, weight="alg",
                                  wvar=(2 * a - 2, 0), epsabs=0, epsrel=1e-13, limit=200)[0]
        return integrate.quad(lambda v: _smooth(v, hurst, theta) * fou.fou_kernel(v + d, hurst,
                                                                                  theta),
                              0, m, weight="alg", wvar=(a - 1, 0), epsabs=0, epsrel=1e-13,
                              limit=200)[0]


@pytest.mark.parametrize("hurst", [0.1, 0.3, 0.7, 0.9])
def test_kernel_matches_quadrature(hurst):
    """G(x) = K(x) - theta int_0^x e^{-theta(x-w)} K(w) dw, on both sides of the switch to
    the asymptotic series at theta x = 40."""
    a = hurst + 0.5
    for theta in (0.5, 2.0):
        for x in (0.01, 0.5, 3.0, 19.0, 21.0, 30.0):
            q = integrate.quad(lambda w, x=x, theta=theta: np.exp(-theta * (x - w)), 0, x,
                               weight="alg", wvar=(a - 1, 0), epsabs=0, epsrel=1e-13,
                               limit=200)[0]
            ref = (x ** (a - 1) - theta * q) / fou.gamma_fn(a)
            assert abs(fou.fou_kernel(x, hurst, theta) - ref) <= 1e-10 * abs(ref) + 1e-13


@pytest.mark.parametrize("hurst", [0.1, 0.7])
@pytest.mark.parametrize("theta", [0.0, 5.0, 30.0])
def test_type_two_panels_match_adaptive_quadrature(hurst, theta):
    t = np.array([0.05, 0.3, 0.31, 1.0, 2.0])
    cov = fou.fou_covariance(t, hurst, theta, 1.0, "II")
    for i in range(len(t)):
        for j in range(i + 1):
            ref = _quad_j(t[j], t[i] - t[j], hurst, theta)
            assert abs(cov[i, j] - ref) <= 1e-12 * abs(ref), (i, j, cov[i, j], ref)


@pytest.mark.parametrize("hurst", [0.1, 0.3, 0.7, 0.9])
def test_stationary_autocovariance_two_routes(hurst):
    """c(d) through beta (the module's route) against ``int_0^inf G(v) G(v+d) dv``."""
    theta = 1.0
    lags = np.array([0.0, 0.7])
    c = fou.fou_stationary_autocovariance(lags, hurst, theta)
    assert c[0] == pytest.approx(1 / (2 * np.sin(np.pi * hurst) * theta ** (2 * hurst)),
                                 rel=1e-14)
    for d, value in zip(lags, c, strict=True):
        def f(v, d=d):
            return fou.fou_kernel(v, hurst, theta) * fou.fou_kernel(v + d, hurst, theta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            ref = (integrate.quad(f, 0, 1, limit=200)[0]
                   + integrate.quad(f, 1, np.inf, limit=500)[0])
        assert value == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("kind", ["I", "II"])
@pytest.mark.parametrize("hurst", [0.1, 0.5, 0.9])
def test_covariance_is_symmetric_psd(kind, hurst):
    t = np.linspace(0, 3, 61)[1:]
    cov = fou.fou_covariance(t, hurst, 1.0, 0.8, kind, x0_var=0.1)
    assert np.array_equal(cov, cov.T)
    eig = np.linalg.eigvalsh(cov)
    assert eig.min() > 0, eig.min()


# ------------------------------------------------------------- brute-force Monte Carlo


def _monte_carlo_fou(hurst, theta, sigma, kind, horizon=1.0, num_fine=500, num_paths=4000,
                     seed=0):
    """fBM exactly on a fine grid (Cholesky of mafbm.exact_fbm_covariance), then
    ``X_{k+1} = e^{-theta dt} X_k + sigma (B_{k+1} - B_k) (1 - e^{-theta dt}) / (theta dt)``
    (the OU integral of the piecewise-linear interpolant of B). Returns (fine times, paths)."""
    s = horizon * np.arange(1, num_fine + 1) / num_fine
    cov_b = exact_fbm_covariance(s[:, None], s[None, :], hurst, kind)
    chol = np.linalg.cholesky(cov_b + 1e-13 * np.eye(num_fine))
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((num_paths, num_fine)) @ chol.T
    db = np.diff(np.concatenate([np.zeros((num_paths, 1)), b], axis=1), axis=1)
    dt = horizon / num_fine
    decay = np.exp(-theta * dt)
    gain = -np.expm1(-theta * dt) / (theta * dt)
    x = np.zeros(num_paths)
    out = np.empty((num_paths, num_fine))
    for k in range(num_fine):
        x = decay * x + sigma * gain * db[:, k]
        out[:, k] = x
    return s, out


def _z_scores(paths, cov):
    """z of every E[X_i X_j] (mean 0) against ``cov``, se from the sample of products."""
    prods = paths[:, :, None] * paths[:, None, :]
    mean = prods.mean(axis=0)
    se = prods.std(axis=0, ddof=1) / np.sqrt(paths.shape[0])
    iu = np.triu_indices(cov.shape[0])
    return ((mean - cov) / se)[iu]


@pytest.mark.parametrize("kind", ["I", "II"])
@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_covariance_matches_brute_force_monte_carlo(kind, hurst):
    theta, sigma = 2.0, 0.8
    s, paths = _monte_carlo_fou(hurst, theta, sigma, kind)
    pick = np.array([99, 249, 499])                 # t = 0.2, 0.5, 1.0
    t = s[pick]
    z = _z_scores(paths[:, pick], fou.fou_covariance(t, hurst, theta, sigma, kind))
    print(kind, hurst, "z", np.round(z, 2))
    assert np.max(np.abs(z)) < K_SIGMA, z
    # a wrong answer fails the same check: H off by 0.1, and the Brownian OU (the other
    # type is printed: it differs from this one by only a few percent at these times)
    other = "II" if kind == "I" else "I"
    z_other = _z_scores(paths[:, pick], fou.fou_covariance(t, hurst, theta, sigma, other))
    z_h = _z_scores(paths[:, pick], fou.fou_covariance(t, hurst + 0.1, theta, sigma, kind))
    z_ou = _z_scores(paths[:, pick], fou.ou_covariance(t, theta, sigma))
    print(f"   max|z|: other type {np.abs(z_other).max():.1f}  H+0.1 {np.abs(z_h).max():.1f}"
          f"  OU {np.abs(z_ou).max():.1f}")
    assert np.max(np.abs(z_h)) > 2 * K_SIGMA
    assert np.max(np.abs(z_ou)) > 2 * K_SIGMA


def test_simulate_exact_matches_covariance_and_keys():
    t = np.linspace(0, 2, 11)[1:]
    cov = fou.fou_covariance(t, 0.3, 1.0, 1.0, "I", x0_var=0.5)
    paths = fou.simulate_fou_exact(3, t, 0.3, 1.0, 1.0, "I", num_paths=20000, x0=1.0,
                                   x0_var=0.5)
    assert paths.shape == (20000, 10)
    centred = paths - fou.fou_mean(t, 1.0, 1.0)
    z = _z_scores(centred, cov)
    assert np.max(np.abs(z)) < K_SIGMA, z
    mean_z = centred.mean(0) / (np.sqrt(np.diag(cov)) / np.sqrt(20000))
    assert np.max(np.abs(mean_z)) < K_SIGMA
    a = fou.simulate_fou_exact(jax.random.PRNGKey(1), t, 0.3, 1.0, 1.0, num_paths=3)
    b = fou.simulate_fou_exact(jax.random.PRNGKey(1), t, 0.3, 1.0, 1.0, num_paths=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fou.simulate_fou_exact(jax.random.PRNGKey(2), t, 0.3, 1.0,
                                                        1.0, num_paths=3))


# ------------------------------------------------------------------------------ bridge


@pytest.mark.parametrize("kind", ["I", "II"])
def test_bridge_pins_at_obs_time(kind):
    t = np.linspace(0, 2, 21)
    mean, var = fou.fou_bridge_moments(t, 0.3, 1.0, 1.0, obs_time=2.0, obs_value=0.4,
                                       obs_sigma=1e-6, kind=kind, x0=1.0)
    prior = np.diag(fou.fou_covariance(t, 0.3, 1.0, 1.0, kind))
    assert var[-1] < 1e-11 * prior[-1]
    assert mean[-1] == pytest.approx(0.4, abs=1e-9)
    assert var[0] == 0 and mean[0] == 1.0            # X(0) = x0 deterministically
    assert np.all(var[1:-1] < prior[1:-1]) and np.all(var[1:-1] > 0)


@pytest.mark.parametrize("hurst", [0.1, 0.3, 0.7, 0.9])
def test_stationary_autocovariance_long_lag_expansion(hurst):
    """Cheridito, Kawaguchi & Maejima (2003), Thm 2.3: ``c(d) = (V_H/2) sum_{n=1}^N
    theta^-2n prod_{k=0}^{2n-1} (2H - k) d^(2H-2n) + O(d^(2H-2N-2))`` (here N = 3)."""
    theta, d = 2.0, np.array([25.0, 50.0])
    c = fou.fou_stationary_autocovariance(d, hurst, theta)
    series = sum(0.5 * fou.fbm_variance_constant(hurst) * theta ** (-2 * n)
                 * np.prod([2 * hurst - k for k in range(2 * n)]) * d ** (2 * hurst - 2 * n)
                 for n in (1, 2, 3))
    np.testing.assert_allclose(c, series, rtol=1e-6)


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("kind", ["I", "II"])
def test_bridge_far_from_obs_is_the_prior_when_theta_is_large(kind, hurst):
    """With theta = 30 the observation at t = 2 leaves the variance at t <= 1 at its prior
    value up to the long-memory correlation: exactly e^{-2 theta d} at H = 1/2, and for type I
    ``rho(d)^2 c0 / (c0 + s^2)`` with rho from the long-lag expansion of c (Cheridito et al.
    2003), a relative 1e-4..1e-3 at H = 0.3, 0.7; type II below 2e-3."""
    theta, obs_sigma = 30.0, 0.1
    t = np.array([0.2, 0.5, 1.0, 1.99, 2.0])
    mean, var = fou.fou_bridge_moments(t, hurst, theta, 1.0, obs_time=2.0, obs_value=0.0,
                                       obs_sigma=obs_sigma, kind=kind)
    prior = np.diag(fou.fou_covariance(t, hurst, theta, 1.0, kind))
    rel = 1 - var / prior
    print(kind, hurst, "relative variance reduction", rel)
    np.testing.assert_array_equal(mean, 0.0)
    assert rel[-1] > 0.25 and rel[-2] > 0.1           # near the observation: informative
    if hurst == 0.5:
        np.testing.assert_allclose(rel[:3], 0.0, atol=1e-20)
    elif kind == "I":
        d = 2.0 - t[:3]
        v = fou.fbm_variance_constant(hurst)
        c0 = 1 / (2 * np.sin(np.pi * hurst) * theta ** (2 * hurst))
        rho = v * hurst * (2 * hurst - 1) * theta**-2 * d ** (2 * hurst - 2) / c0
        np.testing.assert_allclose(rel[:3], rho**2 * c0 / (c0 + obs_sigma**2), rtol=0.02)
    else:
        assert np.all(rel[:3] < 2e-3)


def test_bridge_paper_setting_theta_zero():
    """The paper's theta = 0 reference (standard fBM, sigma = 1): var(t) = t^2H -
    R(t, 2)^2 / (2^2H + 0.01), with R the standard fBM covariance."""
    h = 0.3
    t = np.linspace(0.01, 2, 50)
    _, var = fou.fou_bridge_moments(t, h, 0.0, 1 / np.sqrt(fou.fbm_variance_constant(h)),
                                    obs_time=2.0, obs_sigma=0.1, kind="I")
    r = 0.5 * (t ** (2 * h) + 2 ** (2 * h) - (2 - t) ** (2 * h))
    np.testing.assert_allclose(var, t ** (2 * h) - r**2 / (2 ** (2 * h) + 0.01), rtol=1e-12)


# ------------------------------------------------------------------------- likelihood


def test_log_likelihood_matches_scipy_and_recovers_hurst():
    from scipy.stats import multivariate_normal

    t = np.linspace(0, 20, 101)[1:]
    truth, theta, sigma, obs = 0.7, 1.0, 1.0, 0.1
    y = fou.simulate_fou_exact(11, t, truth, theta, sigma, "I", num_paths=4)
    y = y + obs * np.random.default_rng(12).standard_normal(y.shape)
    ll = fou.fou_log_likelihood(y, t, truth, theta, sigma, obs, "I")
    cov = fou.fou_covariance(t, truth, theta, sigma, "I") + obs**2 * np.eye(len(t))
    ref = multivariate_normal(np.zeros(len(t)), cov).logpdf(y)
    np.testing.assert_allclose(ll, ref, rtol=1e-10)

    def nll(h):
        return -np.sum(fou.fou_log_likelihood(y, t, h, theta, sigma, obs, "I"))

    best = optimize.minimize_scalar(nll, bounds=(0.05, 0.95), method="bounded",
                                    options={"xatol": 1e-4}).x
    step = 1e-3
    info = (nll(best + step) - 2 * nll(best) + nll(best - step)) / step**2
    se = 1 / np.sqrt(info)
    print(f"H_hat {best:.4f}  se {se:.4f}  z {(best - truth) / se:.2f}")
    assert abs(best - truth) < K_SIGMA * se
    assert se < 0.05


@pytest.mark.slow
def test_log_likelihood_recovers_hurst_type_two():
    t = np.linspace(0, 10, 101)[1:]
    truth, theta, sigma, obs = 0.3, 1.0, 1.0, 0.05
    y = fou.simulate_fou_exact(5, t, truth, theta, sigma, "II", num_paths=4)
    y = y + obs * np.random.default_rng(6).standard_normal(y.shape)

    def nll(h):
        return -np.sum(fou.fou_log_likelihood(y, t, h, theta, sigma, obs, "II"))

    best = optimize.minimize_scalar(nll, bounds=(0.05, 0.95), method="bounded",
                                    options={"xatol": 1e-4}).x
    step = 1e-3
    se = 1 / np.sqrt((nll(best + step) - 2 * nll(best) + nll(best - step)) / step**2)
    print(f"H_hat {best:.4f}  se {se:.4f}")
    assert abs(best - truth) < K_SIGMA * se


# --------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    t = np.array([0.5, 1.0])
    with pytest.raises(UnknownOptionError, match="kind"):
        fou.fou_covariance(t, 0.3, 1.0, 1.0, kind="III")
    with pytest.raises(ValueError, match="hurst"):
        fou.fou_covariance(t, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="theta"):
        fou.fou_covariance(t, 0.3, -1.0, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        fou.fou_covariance(t, 0.3, 1.0, 0.0)
    with pytest.raises(ValueError, match="x0_var"):
        fou.fou_covariance(t, 0.3, 1.0, 1.0, x0_var=-1.0)
    with pytest.raises(ValueError, match="times"):
        fou.fou_covariance(np.array([1.0, 0.5]), 0.3, 1.0, 1.0)
    with pytest.raises(ShapeMismatchError, match="times"):
        fou.fou_covariance(np.ones((2, 2)), 0.3, 1.0, 1.0)
    with pytest.raises(ValueError, match="obs_time"):
        fou.fou_bridge_moments(t, 0.3, 1.0, 1.0, obs_time=0.0)
    with pytest.raises(ValueError, match="obs_sigma"):
        fou.fou_bridge_moments(t, 0.3, 1.0, 1.0, obs_time=2.0, obs_sigma=-0.1)
    with pytest.raises(ShapeMismatchError, match="y"):
        fou.fou_log_likelihood(np.zeros(3), t, 0.3, 1.0, 1.0, 0.1, "I")
    with pytest.raises(ValueError, match="y"):
        fou.fou_log_likelihood(np.array([0.0, np.nan]), t, 0.3, 1.0, 1.0, 0.1, "I")
    with pytest.raises(ValueError, match="num_paths"):
        fou.simulate_fou_exact(0, t, 0.3, 1.0, 1.0, num_paths=0)
    with pytest.raises(TypeError, match="num_paths"):
        fou.simulate_fou_exact(0, t, 0.3, 1.0, 1.0, num_paths=1.5)
    with pytest.raises(ValueError, match="theta"):
        fou.fou_stationary_autocovariance([0.0], 0.3, 0.0)
