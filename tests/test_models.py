"""Tests of the model zoo (ppl.models): exact answers against independent brute force, the
ppl programs' log joints against hand-written ones, and every model runs once."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import ppl.models as M
import pytest
from numpyro.infer.util import log_density
from scipy import integrate, stats
from scipy.special import expit, logsumexp

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


#: Log joints of the ppl programs are computed by JAX in float32; the hand-written ones in
#: float64 numpy. Agreement to this tolerance pins down the model (a wrong term is O(1)).
LOGJOINT_RTOL = 1e-5


def run_once(model, *args):
    """The values of the non-plate sites of one run of ``model`` under ``seed`` + ``trace``.

    The run is jitted: one XLA compilation is much cheaper than compiling each eager op.
    """

    def values():
        tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(*args)
        return {name: site["value"] for name, site in tr.items() if site["type"] != "plate"}

    return jax.jit(values)()


def quad(f, lo, hi):
    """A tight adaptive quadrature (relative tolerance only: the integrands are tiny)."""
    return integrate.quad(f, lo, hi, epsabs=0.0, epsrel=1e-12, limit=200)[0]


def log_joint_fn(model, args, kwargs=None):
    """``params -> log p(params, data)`` of a ppl program via NumPyro's ``log_density``
    (float32 JAX, jitted with the data as constants)."""
    kwargs = kwargs or {}
    return jax.jit(lambda params: log_density(model, args, kwargs, params)[0])


def model_log_joint(model, args, params, kwargs=None):
    """log p(params, data) of a ppl program at one point (see :func:`log_joint_fn`)."""
    return float(log_joint_fn(model, args, kwargs)(params))


def dense_lgssm(A, Q, C, R, m0, P0, T):
    """Mean and covariance of the joint Gaussian of (x_0, x_1..x_T, y_1..y_T), built from the
    linear map x_t = A^t x_0 + sum_{s<=t} A^{t-s} w_s, y_t = C x_t + v_t."""
    d, p = A.shape[0], C.shape[0]
    n_x = (T + 1) * d
    # x = F @ (x_0, w_1..w_T)
    F = np.zeros((n_x, n_x))
    for t in range(T + 1):
        for s in range(t + 1):
            F[t * d : (t + 1) * d, s * d : (s + 1) * d] = np.linalg.matrix_power(A, t - s)
    source_cov = np.zeros((n_x, n_x))
    source_cov[:d, :d] = P0
    for s in range(1, T + 1):
        source_cov[s * d : (s + 1) * d, s * d : (s + 1) * d] = Q
    source_mean = np.concatenate([m0, np.zeros(T * d)])
    mx, Sx = F @ source_mean, F @ source_cov @ F.T
    H = np.zeros((T * p, n_x))
    for t in range(1, T + 1):
        H[(t - 1) * p : t * p, t * d : (t + 1) * d] = C
    my, Syy = H @ mx, H @ Sx @ H.T + np.kron(np.eye(T), R)
    Sxy = Sx @ H.T
    return mx, Sx, my, Syy, Sxy


def dense_posterior(ys, A, Q, C, R, m0, P0):
    """Brute-force Gaussian conditioning: evidence and the posterior of (x_0, .., x_T)."""
    T, d = ys.shape[0], A.shape[0]
    mx, Sx, my, Syy, Sxy = dense_lgssm(A, Q, C, R, m0, P0, T)
    y = ys.reshape(-1)
    log_evidence = stats.multivariate_normal(my, Syy).logpdf(y)
    gain = np.linalg.solve(Syy, Sxy.T).T
    post_mean = mx + gain @ (y - my)
    post_cov = Sx - gain @ Sxy.T
    return log_evidence, post_mean.reshape(T + 1, d), post_cov


def block(cov, d, s, t):
    return cov[s * d : (s + 1) * d, t * d : (t + 1) * d]


# ---------------------------------------------------------------------------------------
# conjugate models
# ---------------------------------------------------------------------------------------

BERNOULLI_DATA = np.array([1, 0, 1, 1, 0, 1, 1, 1])
NORMAL_DATA = np.array([0.3, -1.2, 2.1, 0.7, 1.4])


@pytest.mark.parametrize("a,b", [(1.0, 1.0), (2.5, 0.7)])
def test_beta_bernoulli_exact_matches_quadrature(a, b):
    k, n = BERNOULLI_DATA.sum(), BERNOULLI_DATA.size

    def unnormalised(p):
        return stats.beta.pdf(p, a, b) * p**k * (1 - p) ** (n - k)

    z = quad(unnormalised, 0.0, 1.0)
    mean = quad(lambda p: p * unnormalised(p), 0.0, 1.0) / z
    second = quad(lambda p: p**2 * unnormalised(p), 0.0, 1.0) / z
    exact = M.beta_bernoulli_exact(BERNOULLI_DATA, a, b)
    np.testing.assert_allclose(exact["log_evidence"], np.log(z), rtol=1e-8)
    np.testing.assert_allclose(exact["mean"], mean, rtol=1e-8)
    np.testing.assert_allclose(exact["var"], second - mean**2, rtol=1e-7)


@pytest.mark.parametrize("mu0,tau0,sigma", [(0.0, 1.0, 1.0), (1.5, 2.0, 0.6)])
def test_normal_normal_exact_matches_quadrature(mu0, tau0, sigma):
    def unnormalised(mu):
        return stats.norm.pdf(mu, mu0, tau0) * np.prod(stats.norm.pdf(NORMAL_DATA, mu, sigma))

    z = quad(unnormalised, -15.0, 15.0)
    mean = quad(lambda m: m * unnormalised(m), -15.0, 15.0) / z
    second = quad(lambda m: m**2 * unnormalised(m), -15.0, 15.0) / z
    exact = M.normal_normal_exact(NORMAL_DATA, mu0, tau0, sigma)
    np.testing.assert_allclose(exact["log_evidence"], np.log(z), rtol=1e-8)
    np.testing.assert_allclose(exact["mean"], mean, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(exact["var"], second - mean**2, rtol=1e-6)
    # and against the dense marginal of y
    cov = sigma**2 * np.eye(NORMAL_DATA.size) + tau0**2
    dense = stats.multivariate_normal(np.full(NORMAL_DATA.size, mu0), cov).logpdf(NORMAL_DATA)
    np.testing.assert_allclose(exact["log_evidence"], dense, rtol=1e-10)


def test_conjugate_log_joints():
    a, b, p = 2.0, 3.0, 0.37
    k, n = BERNOULLI_DATA.sum(), BERNOULLI_DATA.size
    hand = stats.beta.logpdf(p, a, b) + k * np.log(p) + (n - k) * np.log1p(-p)
    got = model_log_joint(M.beta_bernoulli, (BERNOULLI_DATA, a, b), {"p": p})
    np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)

    mu0, tau0, sigma, mu = 0.5, 2.0, 0.7, -0.3
    hand = stats.norm.logpdf(mu, mu0, tau0) + stats.norm.logpdf(NORMAL_DATA, mu, sigma).sum()
    got = model_log_joint(M.normal_normal, (NORMAL_DATA, mu0, tau0, sigma), {"mu": mu})
    np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)


# ---------------------------------------------------------------------------------------
# linear-Gaussian state-space models
# ---------------------------------------------------------------------------------------

T_LGSSM = 6


def lgssm_1d_data(seed=0):
    _, ys = M.simulate_lgssm_1d(jax.random.PRNGKey(seed), T_LGSSM)
    return np.asarray(ys, np.float64)


def lgssm_2d_data(seed=0):
    _, ys = M.simulate_lgssm_2d(jax.random.PRNGKey(seed), T_LGSSM)
    return np.asarray(ys, np.float64)


def test_lgssm_1d_exact_matches_dense_gaussian():
    ys = lgssm_1d_data()
    rho, sx, sy = 0.8, 1.1, 0.6
    exact = M.lgssm_1d_exact(ys, rho, sx, sy)
    A, Q, C, R = (np.array([[v]]) for v in (rho, sx**2, 1.0, sy**2))
    log_z, mean, cov = dense_posterior(ys[:, None], A, Q, C, R, np.zeros(1), np.zeros((1, 1)))
    np.testing.assert_allclose(exact["log_evidence"], log_z, rtol=1e-10)
    np.testing.assert_allclose(exact["smoothed_means"], mean[1:, 0], atol=1e-10)
    np.testing.assert_allclose(exact["smoothed_vars"], np.diag(cov)[1:], atol=1e-10)
    e_cross = [cov[t - 1, t] + mean[t - 1, 0] * mean[t, 0] for t in range(1, T_LGSSM + 1)]
    np.testing.assert_allclose(exact["e_xprev_x"], e_cross, atol=1e-10)
    assert exact["e_xprev_x"][0] == 0.0  # x_0 = 0
    # filtering: the dense posterior given y_{1:t} only, at its last state
    for t in range(1, T_LGSSM + 1):
        _, m_t, c_t = dense_posterior(ys[:t, None], A, Q, C, R, np.zeros(1), np.zeros((1, 1)))
        np.testing.assert_allclose(exact["filter_means"][t - 1], m_t[-1, 0], atol=1e-10)
        np.testing.assert_allclose(exact["filter_vars"][t - 1], c_t[-1, -1], atol=1e-10)


@pytest.mark.parametrize("random_x0", [False, True])
def test_lgssm_2d_exact_matches_dense_gaussian(random_x0):
    ys = lgssm_2d_data()
    A, Q, C, R, x0 = M.LGSSM_2D_A, M.LGSSM_2D_Q, M.LGSSM_2D_C, M.LGSSM_2D_R, M.LGSSM_2D_X0
    P0 = np.array([[0.5, 0.2], [0.2, 0.3]]) if random_x0 else np.zeros((2, 2))
    out = M.rts_smoother(ys, A, Q, C, R, m0=x0, P0=P0)
    log_z, mean, cov = dense_posterior(ys, A, Q, C, R, np.asarray(x0), P0)
    d = 2
    np.testing.assert_allclose(out["log_evidence"], log_z, rtol=1e-10)
    np.testing.assert_allclose(out["smoothed_means"], mean[1:], atol=1e-9)
    np.testing.assert_allclose(out["smoothed_mean0"], mean[0], atol=1e-9)
    for t in range(1, T_LGSSM + 1):
        np.testing.assert_allclose(out["smoothed_covs"][t - 1], block(cov, d, t, t), atol=1e-9)
        np.testing.assert_allclose(out["cross_covs"][t - 1], block(cov, d, t - 1, t), atol=1e-9)
        e_cross = block(cov, d, t - 1, t) + np.outer(mean[t - 1], mean[t])
        np.testing.assert_allclose(out["e_xprev_x"][t - 1], e_cross, atol=1e-9)
    # the path density, with x_0 fixed or random, against the dense posterior of x_{1:T}
    post = stats.multivariate_normal(mean[1:].reshape(-1), cov[d:, d:])
    flat = post.rvs(size=3, random_state=np.random.default_rng(4))
    got = M.log_smoothing_density(flat.reshape(3, T_LGSSM, d), ys, A, Q, C, R, m0=x0, P0=P0)
    np.testing.assert_allclose(got, post.logpdf(flat), rtol=1e-9)
    if not random_x0:
        np.testing.assert_array_equal(out["cross_covs"][0], np.zeros((2, 2)))
        exact = M.lgssm_2d_exact(ys)
        np.testing.assert_allclose(exact["log_evidence"], log_z, rtol=1e-10)
        np.testing.assert_allclose(exact["smoothed_means"], mean[1:], atol=1e-9)
        np.testing.assert_allclose(exact["e_xprev_x"], out["e_xprev_x"], atol=1e-12)
        assert exact["smoothed_covs"].shape == (T_LGSSM, 2, 2)


def test_kalman_filter_general_dims():
    """A 3-D state observed through 1 channel: filter vs dense conditioning on y_{1:t}."""
    rng = np.random.default_rng(3)
    A = 0.6 * rng.normal(size=(3, 3))
    L = rng.normal(size=(3, 3))
    Q = L @ L.T + 0.1 * np.eye(3)
    C, R = rng.normal(size=(1, 3)), np.array([[0.3]])
    m0 = rng.normal(size=3)
    ys = rng.normal(size=(5, 1))
    out = M.kalman_filter(ys, A, Q, C, R, m0=m0)
    for t in range(1, 6):
        log_z, mean, cov = dense_posterior(ys[:t], A, Q, C, R, m0, np.zeros((3, 3)))
        np.testing.assert_allclose(out["filter_means"][t - 1], mean[-1], atol=1e-9)
        np.testing.assert_allclose(out["filter_covs"][t - 1], block(cov, 3, t, t), atol=1e-9)
    np.testing.assert_allclose(out["log_evidence"], log_z, rtol=1e-10)


def test_lgssm_1d_log_smoothing_density_matches_dense():
    ys = lgssm_1d_data(1)
    rho, sx, sy = 0.9, 1.0, 0.5
    A, Q, C, R = (np.array([[v]]) for v in (rho, sx**2, 1.0, sy**2))
    _, mean, cov = dense_posterior(ys[:, None], A, Q, C, R, np.zeros(1), np.zeros((1, 1)))
    post = stats.multivariate_normal(mean[1:, 0], cov[1:, 1:])
    paths = post.rvs(size=4, random_state=np.random.default_rng(0))
    paths = np.concatenate([paths, np.zeros((1, T_LGSSM))], axis=0)  # and an atypical path
    got = M.lgssm_1d_log_smoothing_density(paths, ys, rho, sx, sy)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, post.logpdf(paths), rtol=1e-9)
    fn = M.lgssm_1d_exact(ys, rho, sx, sy)["log_smoothing_density"]
    np.testing.assert_allclose(fn(paths[0]), post.logpdf(paths[0]), rtol=1e-9)


def test_lgssm_2d_log_smoothing_density_matches_dense():
    ys = lgssm_2d_data(1)
    A, Q, C, R, x0 = M.LGSSM_2D_A, M.LGSSM_2D_Q, M.LGSSM_2D_C, M.LGSSM_2D_R, M.LGSSM_2D_X0
    _, mean, cov = dense_posterior(ys, A, Q, C, R, np.asarray(x0), np.zeros((2, 2)))
    post = stats.multivariate_normal(mean[1:].reshape(-1), cov[2:, 2:])
    flat = post.rvs(size=3, random_state=np.random.default_rng(1))
    got = M.lgssm_2d_log_smoothing_density(flat.reshape(3, T_LGSSM, 2), ys)
    np.testing.assert_allclose(got, post.logpdf(flat), rtol=1e-9)
    fn = M.lgssm_2d_exact(ys)["log_smoothing_density"]
    np.testing.assert_allclose(fn(flat[0].reshape(T_LGSSM, 2)), post.logpdf(flat[0]), rtol=1e-9)


def test_lgssm_log_joints():
    ys = lgssm_1d_data()
    xs = np.linspace(-1.0, 1.5, T_LGSSM)
    rho, sx, sy = 0.7, 1.2, 0.4
    prev = np.concatenate([[0.0], xs[:-1]])
    hand = stats.norm.logpdf(xs, rho * prev, sx).sum() + stats.norm.logpdf(ys, xs, sy).sum()
    got = model_log_joint(M.lgssm_1d, (ys, rho, sx, sy), {"x": jnp.asarray(xs)})
    np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)
    got = model_log_joint(M.lgssm_1d_unknown_rho, (ys, sx, sy), {"rho": rho, "x": jnp.asarray(xs)})
    np.testing.assert_allclose(got, hand + np.log(0.5), rtol=LOGJOINT_RTOL)

    ys2 = lgssm_2d_data()
    xs2 = np.stack([np.linspace(-1, 1, T_LGSSM), np.linspace(2, 0, T_LGSSM)], axis=1)
    A, Q, C, R, x0 = M.LGSSM_2D_A, M.LGSSM_2D_Q, M.LGSSM_2D_C, M.LGSSM_2D_R, M.LGSSM_2D_X0
    prev = np.concatenate([np.asarray(x0)[None], xs2[:-1]])
    hand = sum(
        stats.multivariate_normal(A @ prev[t], Q).logpdf(xs2[t])
        + stats.multivariate_normal(C @ xs2[t], R).logpdf(ys2[t])
        for t in range(T_LGSSM)
    )
    got = model_log_joint(M.lgssm_2d, (ys2,), {"x": jnp.asarray(xs2)})
    np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)


def test_simulators_shapes():
    key = jax.random.PRNGKey(0)
    for simulate, shape in [
        (M.simulate_lgssm_1d, (T_LGSSM,)),
        (M.simulate_lgssm_2d, (T_LGSSM, 2)),
        (M.simulate_stochastic_volatility, (T_LGSSM,)),
    ]:
        xs, ys = simulate(key, T_LGSSM)
        assert xs.shape == ys.shape == shape
        assert np.all(np.isfinite(np.asarray(ys)))
    xs, ys = M.simulate_discrete_hmm(key, 5)
    assert xs.shape == ys.shape == (5,)
    assert np.asarray(ys).max() < M.HMM_EMISSION.shape[1]


# ---------------------------------------------------------------------------------------
# hidden Markov models
# ---------------------------------------------------------------------------------------


def brute_force_hmm(log_init, log_trans, log_lik):
    """Sum over all K^T paths: evidence, marginals and pairwise marginals."""
    T, K = log_lik.shape
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    lw = log_init[paths[:, 0]] + log_lik[0, paths[:, 0]]
    for t in range(1, T):
        lw = lw + log_trans[paths[:, t - 1], paths[:, t]] + log_lik[t, paths[:, t]]
    log_z = logsumexp(lw)
    w = np.exp(lw - log_z)
    smoothed = np.stack([np.bincount(paths[:, t], w, K) for t in range(T)])
    pairwise = np.zeros((T - 1, K, K))
    for t in range(T - 1):
        np.add.at(pairwise[t], (paths[:, t], paths[:, t + 1]), w)
    return log_z, smoothed, pairwise


def test_forward_backward_matches_brute_force():
    rng = np.random.default_rng(0)
    K, T = 3, 5
    log_init = np.log(rng.dirichlet(np.ones(K)))
    log_trans = np.log(rng.dirichlet(np.ones(K), size=K))
    log_lik = rng.normal(size=(T, K))
    out = M.forward_backward(log_init, log_trans, log_lik)
    log_z, smoothed, pairwise = brute_force_hmm(log_init, log_trans, log_lik)
    np.testing.assert_allclose(out["log_evidence"], log_z, rtol=1e-12)
    np.testing.assert_allclose(out["smoothed"], smoothed, atol=1e-12)
    np.testing.assert_allclose(out["pairwise"], pairwise, atol=1e-12)
    for t in range(1, T + 1):  # filtering = smoothing of the prefix
        _, smoothed_t, _ = brute_force_hmm(log_init, log_trans, log_lik[:t])
        np.testing.assert_allclose(out["filtered"][t - 1], smoothed_t[-1], atol=1e-12)


def test_discrete_hmm_exact_matches_brute_force():
    _, ys = M.simulate_discrete_hmm(jax.random.PRNGKey(2), 5)
    ys = np.asarray(ys)
    exact = M.discrete_hmm_exact(ys, init_state=1)
    log_trans, log_em = np.log(M.HMM_TRANS), np.log(M.HMM_EMISSION)
    log_z, smoothed, _ = brute_force_hmm(log_trans[1], log_trans, log_em[:, ys].T)
    np.testing.assert_allclose(exact["log_evidence"], log_z, rtol=1e-12)
    np.testing.assert_allclose(exact["smoothed"], smoothed, atol=1e-12)
    assert exact["filtered"].shape == (5, 3)


def test_discrete_hmm_log_joint():
    ys = np.array([0, 3, 1, 1, 2])
    xs = np.array([0, 2, 1, 1, 0])
    init_state = 2
    prev = np.concatenate([[init_state], xs[:-1]])
    hand = np.sum(np.log(M.HMM_TRANS[prev, xs])) + np.sum(np.log(M.HMM_EMISSION[xs, ys]))
    got = model_log_joint(M.discrete_hmm, (ys,), {"x": jnp.asarray(xs)}, {"init_state": init_state})
    np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)


def test_monad_bayes_hmm_exact_and_log_joint():
    ys = np.asarray(M.MB_HMM_VALUES[:5])
    exact = M.monad_bayes_hmm_exact(ys)
    # brute force including the uniform start x0
    log_lik = stats.norm.logpdf(ys[:, None], M.MB_HMM_MEANS[None], 1.0)
    init = np.full(3, 1 / 3) @ M.MB_HMM_TRANS
    log_z, smoothed, _ = brute_force_hmm(np.log(init), np.log(M.MB_HMM_TRANS), log_lik)
    np.testing.assert_allclose(exact["log_evidence"], log_z, rtol=1e-12)
    np.testing.assert_allclose(exact["smoothed"], smoothed, atol=1e-12)
    x0, xs = 1, np.array([2, 0, 1, 1, 0])
    prev = np.concatenate([[x0], xs[:-1]])
    hand = (
        np.log(1 / 3)
        + np.log(M.MB_HMM_TRANS[prev, xs]).sum()
        + stats.norm.logpdf(ys, M.MB_HMM_MEANS[xs], 1.0).sum()
    )
    got = model_log_joint(M.monad_bayes_hmm, (ys,), {"x0": x0, "x": jnp.asarray(xs)})
    np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)


# ---------------------------------------------------------------------------------------
# sprinkler
# ---------------------------------------------------------------------------------------


def test_sprinkler_exact_hand_checked():
    exact = M.sprinkler_exact(wet=1)
    # P(wet) = sum_{c,s,r} P(c) P(s|c) P(r|c) P(wet|s,r), by hand:
    # c=0: s,r ~ (0.5, 0.2): 0.5*0.2*0.9 + 0.5*0.8*0.9 + 0.5*0.2*0.99 = 0.549
    # c=1: s,r ~ (0.1, 0.8): 0.1*0.8*0.99 + 0.1*0.2*0.9 + 0.9*0.8*0.9 = 0.7452
    p_wet = 0.5 * 0.549 + 0.5 * 0.7452
    np.testing.assert_allclose(np.exp(exact["log_evidence"]), p_wet, rtol=1e-12)
    p_rain = 0.5 * (0.5 * 0.2 * 0.9 + 0.5 * 0.2 * 0.99) + 0.5 * (0.1 * 0.8 * 0.99 + 0.9 * 0.8 * 0.9)
    p_sprinkler = 0.5 * (0.5 * 0.8 * 0.9 + 0.5 * 0.2 * 0.99) + 0.5 * (
        0.1 * 0.2 * 0.9 + 0.1 * 0.8 * 0.99
    )
    np.testing.assert_allclose(exact["marginals"]["rain"], p_rain / p_wet, rtol=1e-12)
    np.testing.assert_allclose(exact["marginals"]["sprinkler"], p_sprinkler / p_wet, rtol=1e-12)
    np.testing.assert_allclose(exact["marginals"]["cloudy"], 0.5 * 0.7452 / p_wet, rtol=1e-12)
    # the textbook values
    np.testing.assert_allclose(exact["marginals"]["rain"], 0.7079, atol=1e-4)
    np.testing.assert_allclose(exact["marginals"]["sprinkler"], 0.4298, atol=1e-4)
    dry = M.sprinkler_exact(wet=0)
    np.testing.assert_allclose(np.exp(dry["log_evidence"]), 1 - p_wet, rtol=1e-12)


def test_sprinkler_log_joint():
    tables = {"s": (0.5, 0.1), "r": (0.2, 0.8), "w": ((0.0, 0.9), (0.9, 0.99))}
    log_joint = log_joint_fn(M.sprinkler, (1,))
    for c, s, r in itertools.product((0, 1), repeat=3):
        got = float(log_joint({"cloudy": c, "sprinkler": s, "rain": r}))
        if (s, r) == (0, 0):  # P(wet | no sprinkler, no rain) = 0; NumPyro clamps the
            assert got < -80.0  # probability to the smallest float32, log ~ -88.7
            continue
        p_s, p_r, p_w = tables["s"][c], tables["r"][c], tables["w"][s][r]
        hand = np.log(0.5 * (p_s if s else 1 - p_s) * (p_r if r else 1 - p_r) * p_w)
        np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)


def test_sprinkler_runs_enumerated():
    """The program accepts broadcast tensors as site values (as under enumeration)."""
    from numpyro.contrib.funsor import config_enumerate, enum

    model = enum(config_enumerate(M.sprinkler, default="parallel"), first_available_dim=-1)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(1)
    assert {tuple(np.shape(tr[n]["value"])) for n in M.SPRINKLER_SITES} == {(2,), (2, 1), (2, 1, 1)}


# ---------------------------------------------------------------------------------------
# every model runs once, with the documented site names
# ---------------------------------------------------------------------------------------


def _zoo_cases():
    key = jax.random.PRNGKey(0)
    T = T_LGSSM
    _, ys1 = M.simulate_lgssm_1d(key, T)
    _, ys2 = M.simulate_lgssm_2d(key, T)
    _, ysd = M.simulate_discrete_hmm(key, 5)
    _, ysv = M.simulate_stochastic_volatility(key, T)
    X = np.random.default_rng(0).normal(size=(6, 3))
    y = np.array([0, 1, 1, 0, 1, 0])
    lr_x, lr_y = M.simulate_monad_bayes_logreg_data(key, 8)
    return [
        (M.beta_bernoulli, (BERNOULLI_DATA,), {"p": (), "y": (8,)}),
        (M.normal_normal, (NORMAL_DATA,), {"mu": (), "y": (5,)}),
        (M.lgssm_1d, (ys1,), {"x": (T,), "y": (T,)}),
        (M.lgssm_1d_unknown_rho, (ys1,), {"rho": (), "x": (T,), "y": (T,)}),
        (M.lgssm_2d, (ys2,), {"x": (T, 2), "y": (T, 2)}),
        (M.discrete_hmm, (ysd,), {"x": (5,), "y": (5,)}),
        (M.sprinkler, (), {"cloudy": (), "sprinkler": (), "rain": (), "wet": ()}),
        (M.stochastic_volatility, (ysv,), {"phi": (), "sigma": (), "x": (T,), "y": (T,)}),
        (M.logistic_regression, (X, y), {"w": (3,), "b": (), "y": (6,)}),
        (
            M.eight_schools,
            (),
            {"mu": (), "tau": (), "theta_tilde": (8,), "theta": (8,), "y": (8,)},
        ),
        (
            M.monad_bayes_logreg,
            (lr_x, lr_y),
            {"m": (), "b": (), "sigma": (), "z": (8,), "label": (8,), "z_pred": ()},
        ),
        (M.monad_bayes_hmm, (), {"x0": (), "x": (16,), "y": (16,)}),
        (
            M.monad_bayes_lda,
            (),
            {"phi": (2, 4), "theta": (5, 1, 2), "z": (5, 10), "w": (5, 10)},
        ),
    ]


@pytest.mark.parametrize(
    "model,args,sites", _zoo_cases(), ids=lambda v: getattr(v, "__name__", None)
)
def test_model_runs_once(model, args, sites):
    values = run_once(model, *args)
    assert {name: tuple(np.shape(v)) for name, v in values.items()} == sites
    for name, v in values.items():
        assert np.all(np.isfinite(np.asarray(v))), name


def test_zoo_log_joints():
    """The zoo programs are the documented models (log joint at one point)."""
    # stochastic volatility
    ys = np.array([0.3, -1.1, 0.4, 2.0])
    xs = np.array([0.1, -0.2, 0.5, 0.9])
    phi, sigma = 0.6, 0.8
    prev = np.concatenate([[0.0], xs[:-1]])
    hand = (
        np.log(0.5)
        + stats.halfnorm.logpdf(sigma)
        + stats.norm.logpdf(xs, phi * prev, sigma).sum()
        + stats.norm.logpdf(ys, 0.0, np.exp(xs / 2)).sum()
    )
    params = {"phi": phi, "sigma": sigma, "x": jnp.asarray(xs)}
    np.testing.assert_allclose(
        model_log_joint(M.stochastic_volatility, (ys,), params), hand, rtol=LOGJOINT_RTOL
    )
    # logistic regression
    X = np.array([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8]])
    y = np.array([1, 0, 1])
    w, b = np.array([0.4, -0.7]), 0.2
    p = expit(X @ w + b)
    hand = stats.norm.logpdf(w).sum() + stats.norm.logpdf(b) + stats.bernoulli.logpmf(y, p).sum()
    got = model_log_joint(M.logistic_regression, (X, y), {"w": jnp.asarray(w), "b": b})
    np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)
    # eight schools (non-centred)
    mu, tau, tt = 1.0, 2.0, np.linspace(-1, 1, 8)
    theta = mu + tau * tt
    hand = (
        stats.norm.logpdf(mu, 0, 5)
        + stats.halfcauchy.logpdf(tau, scale=5)
        + stats.norm.logpdf(tt).sum()
        + stats.norm.logpdf(M.EIGHT_SCHOOLS_Y, theta, M.EIGHT_SCHOOLS_SIGMA).sum()
    )
    params = {"mu": mu, "tau": tau, "theta_tilde": jnp.asarray(tt)}
    np.testing.assert_allclose(
        model_log_joint(M.eight_schools, (), params), hand, rtol=LOGJOINT_RTOL
    )
    # monad-bayes logistic regression (noisy latent logits)
    xs, labels = np.asarray(M.MB_LOGREG_XS), np.asarray(M.MB_LOGREG_LABELS)
    m, b, sigma = 0.3, -0.2, 1.5
    z, z_pred = np.array([-2.0, -1.0, 0.5, 1.0, 3.0]), 2.2
    hand = (
        stats.norm.logpdf([m, b]).sum()
        + stats.gamma.logpdf(sigma, 1.0)
        + stats.norm.logpdf(z, m * xs + b, sigma).sum()
        + stats.bernoulli.logpmf(labels, expit(z)).sum()
        + stats.norm.logpdf(z_pred, 8 * m + b, sigma)
    )
    params = {"m": m, "b": b, "sigma": sigma, "z": jnp.asarray(z), "z_pred": z_pred}
    got = model_log_joint(M.monad_bayes_logreg, (), params)
    np.testing.assert_allclose(got, hand, rtol=LOGJOINT_RTOL)
    # monad-bayes LDA: per word, theta[topic] * phi[topic, word]
    rng = np.random.default_rng(0)
    docs = np.asarray(M.MB_LDA_DOCS)
    phi = rng.dirichlet(np.ones(4), size=2)
    theta = rng.dirichlet(np.ones(2), size=5)
    z = rng.integers(0, 2, size=docs.shape)
    hand = (
        sum(stats.dirichlet.logpdf(phi[k], np.ones(4)) for k in range(2))
        + sum(stats.dirichlet.logpdf(theta[d], np.ones(2)) for d in range(5))
        + np.log(np.take_along_axis(theta, z, axis=1)).sum()
        + np.log(phi[z, docs]).sum()
    )
    params = {"phi": jnp.asarray(phi), "theta": jnp.asarray(theta[:, None]), "z": jnp.asarray(z)}
    np.testing.assert_allclose(
        model_log_joint(M.monad_bayes_lda, (), params), hand, rtol=LOGJOINT_RTOL
    )


def test_monad_bayes_data():
    docs = np.asarray(M.MB_LDA_DOCS)
    assert docs.shape == (5, 10)
    assert docs[0].tolist() == [0, 1, 0, 1, 0, 1, 2, 1, 0, 1]
    assert M.MB_HMM_VALUES.shape == (16,)
    xs, labels = M.simulate_monad_bayes_logreg_data(jax.random.PRNGKey(0), 8)
    assert xs.shape == labels.shape == (8,)
    assert np.min(xs) >= -1 and np.max(xs) <= 1
    assert set(np.unique(np.asarray(labels)).tolist()) <= {0, 1}
    hmm_data = np.asarray(M.simulate_monad_bayes_hmm_data(jax.random.PRNGKey(1), 20))
    assert hmm_data.shape == (20,) and set(np.unique(hmm_data).tolist()) <= {0.0, 1.0, 2.0}
    lda_data = np.asarray(M.simulate_monad_bayes_lda_data(jax.random.PRNGKey(2), 3, 7))
    assert lda_data.shape == (3, 7) and lda_data.min() >= 0 and lda_data.max() <= 3
