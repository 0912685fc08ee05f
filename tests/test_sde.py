"""Tests of the ``ppl.sde`` primitive: prior simulation by Euler-Maruyama, Brownian and
MA-fBM noise (Daems et al., ICLR 2024), shapes, determinism and argument checks.

The exact references are the laws of the Euler recursions themselves: the scheme is linear
for an OU drift, so the covariance of the (augmented) discrete state is computed exactly by
its Lyapunov recursion and the Monte Carlo moments are compared with z-scores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.semantics.mafbm import (
    geometric_speeds,
    mafbm_covariance,
    mafbm_weights,
    stationary_covariance,
)
from ppl.semantics.trace import record

import ppl
from ppl import dist
from ppl.errors import ShapeMismatchError, UnknownOptionError
from ppl.sde import brownian, fbm, sde

K_SIGMA = 4.0


def _draw_paths(model, num, seed=0, site="x"):
    """``num`` prior draws of the site (one jit, vmapped over keys)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), num)
    return np.asarray(jax.jit(jax.vmap(lambda k: record(model, k)[1].values[site]))(keys))


# --------------------------------------------------------------------------- shapes


def test_shapes_sites_and_determinism():
    times = jnp.linspace(0.0, 1.0, 11)

    def model():
        theta = ppl.sample("theta", dist.LogNormal(0.0, 0.1))
        return sde("x", lambda t, x, p: -p * x, lambda t, x, p: jnp.array([1.0, 0.5]),
                   jnp.zeros(2), times, params=theta)

    path, trace, _ = record(model, jax.random.PRNGKey(0))
    assert path.shape == (11, 2)
    assert trace.kind("x_noise") == "latent" and trace.values["x_noise"].shape == (10, 2)
    assert trace.kind("x") == "deterministic"
    np.testing.assert_array_equal(path[0], jnp.zeros(2))
    again, _, _ = record(model, jax.random.PRNGKey(0))
    other, _, _ = record(model, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(path, again)
    assert not np.allclose(path, other)


def test_fractional_shapes_and_type_one_site():
    times = jnp.linspace(0.0, 1.0, 21)

    def model(kind):
        return sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, jnp.zeros(3), times,
                   noise=fbm(0.3, num_ou=4, gamma_max=8.0, kind=kind))

    path, trace, _ = record(model, jax.random.PRNGKey(0), ("II",))
    assert path.shape == (21, 3) and "x_y0" not in trace.values
    path, trace, _ = record(model, jax.random.PRNGKey(0), ("I",))
    assert trace.kind("x_y0") == "latent" and trace.values["x_y0"].shape == (3, 4)


# --------------------------------------------------------------------------- checks


def test_argument_checks():
    coarse = jnp.linspace(0.0, 1.0, 11)  # dt = 0.1

    def with_noise(noise, times=coarse, drift=lambda t, x, p: -x):
        return lambda: sde("x", drift, lambda t, x, p: 1.0, 0.0, times, noise=noise)

    with pytest.raises(ValueError, match="gamma_max"):
        record(with_noise(fbm(0.3, num_ou=5, gamma_max=20.0)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="strictly increasing"):
        record(with_noise(brownian(), jnp.array([0.0, 0.5, 0.5, 1.0])), jax.random.PRNGKey(0))
    with pytest.raises(ShapeMismatchError, match="times"):
        record(with_noise(brownian(), jnp.zeros((3, 2))), jax.random.PRNGKey(0))
    with pytest.raises(ShapeMismatchError, match="drift"):
        record(with_noise(brownian(), drift=lambda t, x, p: jnp.zeros(2)), jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="noise"):
        record(with_noise("white"), jax.random.PRNGKey(0))
    with pytest.raises(UnknownOptionError, match="kind"):
        fbm(0.3, kind="III")
    with pytest.raises(ValueError, match="hurst"):
        fbm(1.2)
    with pytest.raises(ValueError, match="num_ou"):
        fbm(0.3, num_ou=1)


# --------------------------------------------------------------------------- Brownian law


def _euler_ou_moments(x0, theta, sigma, dt, num_steps, sigma_scale=1.0):
    """Exact mean and variance of the Euler recursion X_{n+1} = (1 - theta dt) X_n +
    sigma sqrt(dt) eps_n (Kloeden & Platen 1992, eq. 9.1.3)."""
    a = 1.0 - theta * dt
    mean, var = [x0], [0.0]
    for _ in range(num_steps):
        mean.append(a * mean[-1])
        var.append(a * a * var[-1] + (sigma_scale * sigma) ** 2 * dt)
    return np.array(mean), np.array(var)


def test_brownian_ou_matches_euler_law(x64):
    """Every grid marginal's mean and variance within MC error of the exact Euler law; the
    same check rejects a diffusion scaled by 1.1 (the power of the test)."""
    theta, sigma, x0, num_steps = 1.5, 0.8, 1.0, 20
    times = jnp.linspace(0.0, 1.0, num_steps + 1)

    def model():
        sde("x", lambda t, x, p: -theta * x, lambda t, x, p: sigma, x0, times)

    n = 4000
    paths = _draw_paths(model, n)
    mean, var = _euler_ou_moments(x0, theta, sigma, 1.0 / num_steps, num_steps)
    z_mean = (paths[:, 1:].mean(0) - mean[1:]) / np.sqrt(var[1:] / n)
    z_var = (paths[:, 1:].var(0, ddof=1) - var[1:]) / (var[1:] * np.sqrt(2.0 / (n - 1)))
    print(f"max |z| mean {np.abs(z_mean).max():.2f}, var {np.abs(z_var).max():.2f}")
    assert np.abs(z_mean).max() < K_SIGMA and np.abs(z_var).max() < K_SIGMA
    _, wrong = _euler_ou_moments(x0, theta, sigma, 1.0 / num_steps, num_steps, 1.1)
    z_wrong = (paths[:, -1].var(ddof=1) - wrong[-1]) / (wrong[-1] * np.sqrt(2.0 / (n - 1)))
    assert abs(z_wrong) > K_SIGMA


# --------------------------------------------------------------------------- fBM law


def _euler_fbm_system(hurst, num_ou, gamma_max, kind, dt, num_steps, sigma=1.0, theta=0.0):
    """One Euler step of the augmented system (Daems et al. 2024, eq. 11) with drift
    -theta X: z_{n+1} = M z_n + v sqrt(dt) eps_n, z = (X, Y_1..Y_K). Returns (M, v, gammas,
    omega), the weights fitted over the horizon dt * num_steps."""
    gammas = np.asarray(geometric_speeds(num_ou, gamma_max), np.float64)
    omega = np.asarray(mafbm_weights(hurst, jnp.asarray(gammas), dt * num_steps, kind),
                       np.float64)
    m = np.eye(num_ou + 1)
    m[0, 0] = 1.0 - theta * dt
    m[0, 1:] = -sigma * omega * gammas * dt
    m[1:, 1:] -= np.diag(gammas) * dt
    return m, np.r_[sigma * omega.sum(), np.ones(num_ou)], gammas, omega


def _euler_fbm_covariance(hurst, num_ou, gamma_max, kind, dt, num_steps, sigma=1.0, theta=0.0):
    """Exact covariance of X on the grid under the Euler recursion of the augmented system
    (Daems et al. 2024, eq. 11) with drift -theta X: z = (X, Y_1..Y_K), z_{n+1} = M z_n +
    v sqrt(dt) eps_n, Cov(z_0) = diag(0, C) for type I (0 for type II)."""
    m, v, gammas, omega = _euler_fbm_system(hurst, num_ou, gamma_max, kind, dt, num_steps,
                                            sigma, theta)
    size = num_ou + 1
    cov = np.zeros((size, size))
    if kind == "I":
        cov[1:, 1:] = np.asarray(stationary_covariance(jnp.asarray(gammas)))
    covs = [cov]  # joint covariance of z_n with z_n; cross-times via M powers
    for _ in range(num_steps):
        cov = m @ cov @ m.T + dt * np.outer(v, v)
        covs.append(cov)
    # Cov(X_i, X_j), i <= j: e_0' M^(j-i) Cov(z_i) e_0
    out = np.zeros((num_steps + 1, num_steps + 1))
    for i in range(num_steps + 1):
        cross = covs[i]
        for j in range(i, num_steps + 1):
            out[i, j] = out[j, i] = cross[0, 0]
            cross = m @ cross
    return out, gammas, omega


def _euler_fbm_kalman_nll(hurst, ys, obs_index, num_ou, gamma_max, dt, num_steps, theta,
                          obs_sd):
    """Exact negative log-likelihood of independent paths under the Euler recursion of the
    type-II augmented system (the law of :func:`_euler_fbm_covariance`, sigma 1, drift
    -theta X), observed as ``ys[i, m] = X_m(obs_index[i] dt) + N(0, obs_sd^2)``: a Kalman
    filter on z = (X, Y_1..Y_K), O(N K^2) instead of a dense covariance. ``ys`` is
    (len(obs_index), M), one column per path (the filter's covariances are shared)."""
    m, v, _, _ = _euler_fbm_system(hurst, num_ou, gamma_max, "II", dt, num_steps, 1.0, theta)
    noise = dt * np.outer(v, v)
    ys = np.asarray(ys, np.float64).reshape(len(obs_index), -1)
    mean, cov, nll = np.zeros((num_ou + 1, ys.shape[1])), np.zeros((num_ou + 1,) * 2), 0.0
    row = {int(k): i for i, k in enumerate(obs_index)}
    for step in range(1, num_steps + 1):
        mean, cov = m @ mean, m @ cov @ m.T + noise
        if step in row:
            var = cov[0, 0] + obs_sd**2
            resid = ys[row[step]] - mean[0]
            nll += np.sum(0.5 * (np.log(2 * np.pi * var) + resid**2 / var))
            gain = cov[:, 0] / var
            mean, cov = mean + np.outer(gain, resid), cov - np.outer(gain, cov[0])
    return nll


def test_kalman_likelihood_matches_dense_euler_covariance(x64):
    """The Kalman reference likelihood used for Hurst recovery equals the Gaussian likelihood
    from the dense Euler covariance (two paths, observations every 3rd step)."""
    from scipy.stats import multivariate_normal

    num_steps, dt, theta, obs_sd, hurst = 30, 0.02, 1.0, 0.1, 0.3
    idx = np.arange(3, num_steps + 1, 3)
    ys = np.random.default_rng(0).standard_normal((idx.size, 2))
    cov, _, _ = _euler_fbm_covariance(hurst, 5, 20.0, "II", dt, num_steps, 1.0, theta)
    law = multivariate_normal(np.zeros(idx.size), cov[np.ix_(idx, idx)] + obs_sd**2 *
                              np.eye(idx.size))
    dense = -law.logpdf(ys.T).sum()
    kalman = _euler_fbm_kalman_nll(hurst, ys, idx, 5, 20.0, dt, num_steps, theta, obs_sd)
    np.testing.assert_allclose(kalman, dense, rtol=1e-10)


@pytest.mark.parametrize("kind,hurst", [("II", 0.3), ("I", 0.7)])
def test_fbm_paths_match_euler_law_and_mafbm(x64, kind, hurst):
    """fBM-driven paths (drift 0, sigma 1 = the approximate fBM itself): covariances at three
    times within MC error of the exact Euler covariance; and the Euler covariance is close
    to the closed-form MA-fBM covariance (the discretisation error, reported)."""
    num_ou, gamma_max, num_steps = 5, 20.0, 100
    times = jnp.linspace(0.0, 1.0, num_steps + 1)

    def model():
        sde("x", lambda t, x, p: jnp.zeros_like(x), lambda t, x, p: 1.0, 0.0, times,
            noise=fbm(hurst, num_ou, gamma_max, kind))

    n = 4000
    paths = _draw_paths(model, n, seed=1)
    exact, gammas, omega = _euler_fbm_covariance(hurst, num_ou, gamma_max, kind, 0.01,
                                                 num_steps)
    idx = np.array([25, 50, 100])
    emp = np.cov(paths[:, idx].T)
    ref = exact[np.ix_(idx, idx)]
    # Var of a sample covariance of Gaussians: (S_ij^2 + S_ii S_jj) / (n - 1)
    se = np.sqrt((ref**2 + np.outer(np.diag(ref), np.diag(ref))) / (n - 1))
    z = (emp - ref) / se
    print(f"{kind} H={hurst}: max |z| {np.abs(z).max():.2f}")
    assert np.abs(z).max() < K_SIGMA, z
    closed = np.asarray(mafbm_covariance(times[idx], hurst, jnp.asarray(gammas),
                                         jnp.asarray(omega), kind))
    rel = np.linalg.norm(ref - closed) / np.linalg.norm(closed)
    print(f"{kind} H={hurst}: Euler vs closed-form MA-fBM covariance, rel. L2 {rel:.4f}")
    assert rel < 0.05  # Euler's O(gamma_max dt) bias at gamma_max dt = 0.2


def test_fbm_hurst_from_param_is_traced(x64):
    """A Hurst index from a ppl.param site works under jit and is differentiable."""
    times = jnp.linspace(0.0, 1.0, 41)

    def model(h_free):
        h = jax.nn.sigmoid(h_free)
        return sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, 0.0, times,
                   noise=fbm(h, num_ou=4, gamma_max=10.0))

    def final(h_free):
        path, _, _ = record(model, jax.random.PRNGKey(0), (h_free,))
        return path[-1]

    g = jax.jit(jax.grad(final))(0.2)
    assert np.isfinite(g) and g != 0.0
