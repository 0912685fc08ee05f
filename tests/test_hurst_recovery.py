"""Hurst index recovery by ``infer.vsde`` with its default options (Daems et al., ICLR 2024,
sec. 5), against the exact likelihood of the fractional OU process.

Design (one path, precise observations): ``dX = -theta X dt + sigma dB^H`` (type II fBM,
``ppl.semantics.mafbm``'s normalisation), theta = 1, sigma = 0.5, X(0) = 0, observed at
t = 0.02, 0.04, ..., 4 (200 points) with noise sd 0.02; the program has ``ppl.param``
sites for H and theta and an ``sde`` on a grid of step 0.005 with ``ppl.fbm(hurst)`` (the
MA-fBM speeds chosen from the grid).

Exact reference. ``X(t) = sigma [B(t) - theta int_0^t e^{-theta(t-s)} B(s) ds]`` (integration
by parts; models/fou.py's docstring), a linear functional of the fBM path. With B linear
between the points of a grid of step h the integral is exact in closed form (weights ``p``,
``q`` below), so ``Cov(X(t_obs)) = sigma^2 L C_B L'`` with ``C_B`` the exact type-II fBM
covariance on the grid (Euler's 2F1 closed form, ``exact_fbm_covariance``). At h = 0.005
this matches the quadrature of ``ppl.models.fou.fou_covariance`` to 5e-5 relative
(checked in :func:`test_exact_reference_matches_fou_covariance`) at a fraction of its cost,
which the profile likelihood needs (about 30 values of H, each with a profile over theta).
The 95% profile interval of H is ``{H: 2 (max l - max_theta l(H, theta)) <= 3.84}``.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.inference.variational_sde import AffineControl, vsde
from ppl.semantics.mafbm import exact_fbm_covariance, geometric_speeds, grid_defaults
from ppl.semantics.trace import record
from scipy import linalg
from scipy.optimize import brentq, minimize_scalar

import ppl
from ppl import dist
from ppl.errors import InvalidArgumentError
from ppl.sde import approximation_error, fbm, sde

HORIZON, GRID_STEP, OBS_EVERY, OBS_SD, SIGMA, THETA = 4.0, 0.005, 4, 0.02, 0.5, 1.0
NUM_STEPS = int(round(HORIZON / GRID_STEP))
OBS_INDEX = np.arange(OBS_EVERY, NUM_STEPS + 1, OBS_EVERY)
CHI2_95 = 3.841458820694124  # 95% quantile of chi^2_1


# ----------------------------------------------------------------- the exact reference


def exact_functional(theta, num_steps, step, obs_index):
    """L (len(obs_index), num_steps): ``X(t_i) / sigma = sum_j L_ij B(s_j)``, s_j = j step,
    for B linear between grid points (B(0) = 0): interval [s_j, s_{j+1}] contributes
    ``-theta e^{-theta (t - s_{j+1})} (p B_j + q B_{j+1})`` with ``p = int_0^h e^{-theta v}
    v/h dv`` and ``q = int_0^h e^{-theta v} (h - v)/h dv``."""
    th = theta * step
    p = (-np.expm1(-th) - th * np.exp(-th)) / (theta * th)
    q = -np.expm1(-th) / theta - p
    lag = obs_index[:, None] - np.arange(1, num_steps + 1)[None, :]  # i - j
    decay = np.exp(-th * np.maximum(lag - 1, 0))
    inner = -theta * (p * decay + q * decay * np.exp(-th))
    return np.where(lag >= 1, inner, 0.0) + np.where(lag == 0, 1.0 - theta * q, 0.0)


def fbm_grid_covariance(hurst, num_steps=NUM_STEPS, step=GRID_STEP):
    s = step * np.arange(1, num_steps + 1)
    return exact_fbm_covariance(s[:, None], s[None, :], hurst, "II")


def observation_covariance(fbm_cov, theta, sigma=SIGMA):
    lmat = exact_functional(theta, NUM_STEPS, GRID_STEP, OBS_INDEX)
    return sigma**2 * lmat @ fbm_cov @ lmat.T


def gaussian_log_likelihood(y, cov):
    chol = linalg.cholesky(cov + OBS_SD**2 * np.eye(len(y)), lower=True)
    z = linalg.solve_triangular(chol, y, lower=True)
    return -0.5 * (z @ z) - np.sum(np.log(np.diag(chol))) - 0.5 * len(y) * np.log(2 * np.pi)


def profile_log_likelihood(y, hurst):
    """``max_theta l(H, theta)`` (theta on a log scale in [e^-4, e^3])."""
    fbm_cov = fbm_grid_covariance(hurst)
    res = minimize_scalar(
        lambda lt: -gaussian_log_likelihood(y, observation_covariance(fbm_cov, np.exp(lt))),
        bounds=(-4.0, 3.0), method="bounded", options={"xatol": 1e-3})
    return -res.fun


def exact_profile_interval(y):
    """(ML of H, lower, upper): the 95% profile-likelihood interval of H."""
    res = minimize_scalar(lambda h: -profile_log_likelihood(y, h), bounds=(0.05, 0.95),
                          method="bounded", options={"xatol": 1e-4})
    h_ml, l_max = res.x, -res.fun

    def excess(h):
        return 2.0 * (l_max - profile_log_likelihood(y, h)) - CHI2_95

    lo_end, hi_end = max(0.02, h_ml - 0.25), min(0.98, h_ml + 0.25)
    lo = brentq(excess, lo_end, h_ml, xtol=1e-4) if excess(lo_end) > 0 else lo_end
    hi = brentq(excess, h_ml, hi_end, xtol=1e-4) if excess(hi_end) > 0 else hi_end
    return h_ml, lo, hi


def simulate_observations(hurst, seed):
    """One exact fOU path at the observation times plus N(0, OBS_SD^2) noise."""
    cov = observation_covariance(fbm_grid_covariance(hurst), THETA)
    x = np.linalg.cholesky(cov + 1e-12 * np.eye(len(cov))) @ np.random.default_rng(
        seed).standard_normal(len(cov))
    return x + OBS_SD * np.random.default_rng(seed + 1000).standard_normal(len(cov))


# ----------------------------------------------------------------- the program


def fou_model(times, obs_index):
    def model(ys):
        hurst = ppl.param("hurst", 0.5, constraint=dist.constraints.unit_interval)
        theta = ppl.param("theta", 0.5, constraint=dist.constraints.positive)
        x = sde("x", lambda t, x, p: -p * x, lambda t, x, p: SIGMA, 0.0, times,
                noise=fbm(hurst), params=theta)
        ppl.observe("y", dist.Normal(x[obs_index], OBS_SD), ys)

    return model


# ----------------------------------------------------------------- fast tests


def test_exact_reference_matches_fou_covariance(x64):
    """The linear-functional covariance of the observations equals the quadrature of
    ``ppl.models.fou.fou_covariance`` (an independent route) to 2e-4 relative."""
    from ppl.models.fou import fou_covariance

    ref = fou_covariance(OBS_INDEX * GRID_STEP, 0.3, 1.3, SIGMA, "II")
    ours = observation_covariance(fbm_grid_covariance(0.3), 1.3)
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 2e-4


def test_fbm_speeds_from_grid_and_warning(x64):
    """``fbm(hurst)`` picks K and the speed range from the sde's grid (K = 8 over
    [0.025, 50] on [0, 4] with step 0.005), with an increment covariance error below 6% at
    H = 0.3, 0.5, 0.7 (measured: 2-6%); the former hand default fbm(h, 5, 20) is 28% off
    at H = 0.3 on this grid and warns with that figure; the grid default does not warn."""
    times = np.linspace(0.0, HORIZON, NUM_STEPS + 1)
    num_ou, gamma_min, gamma_max = grid_defaults(times)
    assert num_ou == 8
    np.testing.assert_allclose([gamma_min, gamma_max], [0.025, 50.0], rtol=1e-9)
    for hurst in (0.3, 0.5, 0.7):
        assert approximation_error(fbm(hurst), times) < 0.06
    assert approximation_error(fbm(0.3, 5, 20.0), times) > 0.2
    with pytest.raises(InvalidArgumentError, match="gamma_min"):
        geometric_speeds(4, 10.0, 20.0)

    def program(noise):
        def model():
            sde("x", lambda t, x, p: -x, lambda t, x, p: SIGMA, 0.0, jnp.asarray(times),
                noise=noise)
        return model

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, _, raw = record(program(fbm(0.3)), jax.random.PRNGKey(0), densities=False)
    meta = raw["x_noise"]["infer"]["ppl_sde"]
    assert meta["num_ou"] == 8 and meta["fbm"].gamma_min == pytest.approx(0.025)
    with pytest.warns(UserWarning, match=r"fbm\(num_ou=5, gamma_max=20\).*2\d% relative"):
        record(program(fbm(0.31, 5, 20.0)), jax.random.PRNGKey(0), densities=False)
    coarse = np.linspace(0.0, HORIZON, 101)  # step 0.04: the fastest speed is 6.25
    assert approximation_error(fbm(0.3), coarse) > 0.1

    def coarse_program():
        sde("x", lambda t, x, p: -x, lambda t, x, p: SIGMA, 0.0, jnp.asarray(coarse),
            noise=fbm(0.3))

    with pytest.warns(UserWarning, match=r"grid's MA-fBM.*finer time grid"):
        record(coarse_program, jax.random.PRNGKey(0), densities=False)


def test_vsde_defaults_and_info_on_fractional_noise(x64):
    """On a program with fractional noise the default control is the standardised affine
    one with learned increment scales; ``info["mafbm"]`` reports the MA-fBM used and its
    increment covariance error at the learned H (equal to :func:`approximation_error`), and
    ``info["param_std_error"]`` finite positive standard errors from the ELBO's curvature."""
    times = jnp.linspace(0.0, 1.0, 101)
    obs_index = np.arange(5, 101, 5)
    ys = jnp.asarray(0.3 * np.sin(3 * np.asarray(times)[obs_index]))
    post = vsde(num_steps=60, num_paths=4, num_samples=8, progress_bar=False).run(
        jax.random.PRNGKey(0), fou_model(times, obs_index), ys)
    control = post.info["controls"]["x"]
    assert isinstance(control, AffineControl) and control.standardised
    assert control.log_scale is not None
    info = post.info["mafbm"]["x"]
    num_ou, gamma_min, gamma_max = grid_defaults(np.asarray(times))
    assert (info["num_ou"], info["kind"]) == (num_ou, "II")
    np.testing.assert_allclose([info["gamma_min"], info["gamma_max"]], [gamma_min, gamma_max])
    hurst = float(post.info["params"]["hurst"])
    assert info["hurst"] == pytest.approx(hurst, rel=1e-9)
    expected = approximation_error(fbm(hurst), np.asarray(times))
    assert info["increment_covariance_error"] == pytest.approx(expected, rel=1e-9)
    for name in ("hurst", "theta"):
        se = float(post.info["param_std_error"][name])
        assert np.isfinite(se) and se > 0, (name, se)


# ----------------------------------------------------------------- slow: recovery


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7])
def test_hurst_recovered_within_exact_profile_interval(x64, hurst, seed):
    """vsde with default options learns H inside the exact likelihood's 95% profile
    interval (one path, 200 observations with sd 0.02; module docstring)."""
    ys = simulate_observations(hurst, seed)
    h_ml, lo, hi = exact_profile_interval(ys)
    times = jnp.linspace(0.0, HORIZON, NUM_STEPS + 1)
    post = vsde(progress_bar=False).run(jax.random.PRNGKey(seed), fou_model(times, OBS_INDEX),
                                        jnp.asarray(ys))
    learned = float(post.info["params"]["hurst"])
    se = float(post.info["param_std_error"]["hurst"])
    err = post.info["mafbm"]["x"]["increment_covariance_error"]
    print(f"H={hurst} seed={seed}: exact ML {h_ml:.3f} [{lo:.3f}, {hi:.3f}], vsde {learned:.3f}"
          f" (curvature se {se:.3f}), MA-fBM increment covariance error {err:.3f}")
    assert lo <= learned <= hi, (learned, h_ml, lo, hi)
