"""The state at time 0: a global latent site whose value only flows into ``init``.

Users write a state-space model with its initial law as

    x0 = ppl.sample("x0", dist.Normal(m0, sqrt(p0)))
    ppl.markov(step, init=x0, xs=ys)

and every algorithm reads ``x0`` as the state at time 0 (the initial law M0 of the
Feynman-Kac model), not as a parameter: SMC and resample-move SMC draw it per particle,
conditional SMC samples it with the path, the smoothers (PaRIS, PPG) pass it per particle
as ``x_prev`` of the first step, PMMH integrates it out with the states, and score ascent
learns the parameters with it integrated out.

Exact answers: :func:`ppl.models.lgssm_1d_x0_exact` / :func:`ppl.models.lgssm_2d_x0_exact`
(Kalman filter and RTS smoother over the time axis 0..T, x_0 a latent state without an
observation), themselves checked here against brute-force conditioning of the joint
Gaussian of (x_0..x_T, y_1..y_T) and against the fixed-init answers in the limit P0 -> 0.

Tolerances. Every Monte Carlo check but score ascent's is
``ppl.semantics.validity.preserves``: R independent replicates at a fixed seed, each
estimate within k = 4 replicate standard errors of the exact value (the evidence on the
natural scale, mean of Z-hat, the unbiased quantity); for MCMC (csmc, ppg) a replicate is
one chain's average. The particle numbers keep the O(T/N) bias of the self-normalised
smoothers well below the standard error: on these data PaRIS's estimate of sum_t E[x_{t-1}
x_t | y] (about 147) was 1.5 low at N = 300 and 0.4 low at N = 1000 (z = -1.7 from 40
replicates; about -0.85 expected from the 10 used here), so N = 1000 (exact backward) and
N = 2000 (reject). Score ascent has no replicate spread worth the name (a run's sd was
0.003 when we ran it): its estimate must lie within a quarter of the MLE's own standard
error (observed information of the Kalman log-likelihood), see that test.

Power. The data (seed 3, T = 25, y_1 = -3.35) start far from the prior of x0 (m0 = 0,
p0 = 4): the smoothed mean of x0 is -2.82 (sd 1.04) against m0 = 0, E[x0 x1 | y] = 9.55
against m0 E[x1 | y] = 0, sum_t E[x_{t-1} x_t | y] = 147.0 against 137.5 with x_prev of
the first step held at m0, and log p(y) = -48.52 against -51.52 with x0 held at m0. Where
a test can, it asserts that such a wrong answer is more than k standard errors from its
estimate, so the checks tell the right reading of x0 from the usual wrong ones.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from arviz_helpers import az
from numpyro.distributions import constraints
from numpyro.infer.util import log_density
from ppl.semantics.validity import preserves
from scipy import optimize, stats

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as M

KEY = jax.random.PRNGKey(20261128)
K = 4.0  # tolerance in standard errors (preserves' default)
T = 25
RHO, SIGMA_X, SIGMA_Y = 0.9, 1.0, 0.5
M0, P0 = 0.0, 4.0  # prior of x0: N(M0, P0), P0 a variance
OPTS = dict(m0=M0, p0=P0)  # static keyword arguments of lgssm_1d_x0


# --------------------------------------------------------------------------- data


def _data():
    _, ys = M.simulate_lgssm_1d(jax.random.PRNGKey(3), T, RHO, SIGMA_X, SIGMA_Y)
    return jnp.asarray(ys)


YS = _data()
EXACT = M.lgssm_1d_x0_exact(np.asarray(YS, np.float64), RHO, SIGMA_X, SIGMA_Y, M0, P0)
#: The same data with x_0 held at m0 (what an engine that drops the law of x0 computes).
AT_M0 = M.lgssm_1d_x0_exact(np.asarray(YS, np.float64), RHO, SIGMA_X, SIGMA_Y, M0, 0.0)
#: sum_t E[x_{t-1} x_t | y] with x_prev of the first step held at m0 instead of x0.
SUM_XX_AT_M0 = EXACT["e_xprev_x"][1:].sum() + M0 * EXACT["smoothed_means"][0]


def check_power(report, name, wrong):
    """The report's estimate of ``name`` is more than K standard errors from ``wrong``."""
    check = next(c for c in report.checks if c.name == name)
    z = (check.estimate - wrong) / check.std_error
    assert abs(z) > K, (name, check.estimate, wrong, check.std_error, z)


# --------------------------------------------------------------------------- exact answers


def dense_joint(A, Q, C, R, m0, P0, T):
    """Mean and covariance of the joint Gaussian of z = (x_0, x_1..x_T, y_1..y_T), built as
    z = L s + mean from the independent sources s = (x_0 - m0, w_1..w_T, v_1..v_T)."""
    d, p = A.shape[0], C.shape[0]
    n_x, n_s = (T + 1) * d, (T + 1) * d + T * p
    L = np.zeros((n_x + T * p, n_s))
    L[:d, :d] = np.eye(d)
    for t in range(1, T + 1):  # x_t = A x_{t-1} + w_t
        L[t * d:(t + 1) * d] = A @ L[(t - 1) * d:t * d]
        L[t * d:(t + 1) * d, t * d:(t + 1) * d] += np.eye(d)
    for t in range(1, T + 1):  # y_t = C x_t + v_t
        row = n_x + (t - 1) * p
        L[row:row + p] = C @ L[t * d:(t + 1) * d]
        L[row:row + p, n_x + (t - 1) * p:n_x + t * p] += np.eye(p)
    source_cov = np.zeros((n_s, n_s))
    source_cov[:d, :d] = P0
    for t in range(1, T + 1):
        source_cov[t * d:(t + 1) * d, t * d:(t + 1) * d] = Q
        source_cov[n_x + (t - 1) * p:n_x + t * p, n_x + (t - 1) * p:n_x + t * p] = R
    mean = np.zeros(n_x + T * p)
    for t in range(T + 1):
        mean[t * d:(t + 1) * d] = np.linalg.matrix_power(A, t) @ m0
    for t in range(1, T + 1):
        mean[n_x + (t - 1) * p:n_x + t * p] = C @ mean[t * d:(t + 1) * d]
    return mean, L @ source_cov @ L.T, n_x


def condition(ys, A, Q, C, R, m0, P0):
    """Brute force: log p(y) and the mean (T + 1, d) and covariance of p(x_0..x_T | y)."""
    T, d = ys.shape[0], A.shape[0]
    mean, cov, n_x = dense_joint(A, Q, C, R, m0, P0, T)
    y = ys.reshape(-1)
    S_xx, S_xy, S_yy = cov[:n_x, :n_x], cov[:n_x, n_x:], cov[n_x:, n_x:]
    log_z = stats.multivariate_normal(mean[n_x:], S_yy).logpdf(y)
    gain = S_xy @ np.linalg.inv(S_yy)
    post_mean = mean[:n_x] + gain @ (y - mean[n_x:])
    post_cov = S_xx - gain @ S_xy.T
    return log_z, post_mean.reshape(T + 1, d), post_cov


def _block(cov, d, s, t):
    return cov[s * d:(s + 1) * d, t * d:(t + 1) * d]


def test_lgssm_1d_x0_exact_matches_brute_force():
    ys = np.array([0.7, -1.3, 2.2])
    rho, sx, sy, m0, p0 = 0.8, 1.1, 0.6, 0.5, 1.7
    ex = M.lgssm_1d_x0_exact(ys, rho, sx, sy, m0, p0)
    A, Q, C, R = (np.array([[v]]) for v in (rho, sx**2, 1.0, sy**2))
    log_z, mean, cov = condition(ys[:, None], A, Q, C, R, np.array([m0]), np.array([[p0]]))
    np.testing.assert_allclose(ex["log_evidence"], log_z, rtol=1e-12)
    np.testing.assert_allclose(ex["smoothed_means"], mean[1:, 0], atol=1e-12)
    np.testing.assert_allclose(ex["smoothed_vars"], np.diag(cov)[1:], atol=1e-12)
    np.testing.assert_allclose(ex["smoothed_mean0"], mean[0, 0], atol=1e-12)
    np.testing.assert_allclose(ex["smoothed_var0"], cov[0, 0], atol=1e-12)
    e_cross = [cov[t - 1, t] + mean[t - 1, 0] * mean[t, 0] for t in range(1, 4)]
    np.testing.assert_allclose(ex["e_xprev_x"], e_cross, atol=1e-12)
    np.testing.assert_allclose(ex["e_x0_x1"], e_cross[0], atol=1e-12)
    # the functional sum_{t=1..T} x_{t-1} x_t with x_0 the time-0 state
    np.testing.assert_allclose(ex["e_xprev_x"].sum(), sum(e_cross), atol=1e-12)
    # filtering: the brute-force posterior given y_{1:t} only, at its last state
    for t in range(1, 4):
        _, m_t, c_t = condition(ys[:t, None], A, Q, C, R, np.array([m0]), np.array([[p0]]))
        np.testing.assert_allclose(ex["filter_means"][t - 1], m_t[-1, 0], atol=1e-12)
        np.testing.assert_allclose(ex["filter_vars"][t - 1], c_t[-1, -1], atol=1e-12)
    # the path density of x_{1:T} (x_0 integrated out)
    post = stats.multivariate_normal(mean[1:, 0], cov[1:, 1:])
    paths = post.rvs(size=3, random_state=np.random.default_rng(0))
    np.testing.assert_allclose(ex["log_smoothing_density"](paths), post.logpdf(paths),
                               rtol=1e-10)


def test_lgssm_2d_x0_exact_matches_brute_force():
    _, ys = M.simulate_lgssm_2d(jax.random.PRNGKey(0), 3)
    ys = np.asarray(ys, np.float64)
    m0, P0 = np.array([0.3, -0.8]), np.array([[0.9, -0.2], [-0.2, 0.4]])
    ex = M.lgssm_2d_x0_exact(ys, m0=m0, P0=P0)
    A, Q, C, R = M.LGSSM_2D_A, M.LGSSM_2D_Q, M.LGSSM_2D_C, M.LGSSM_2D_R
    log_z, mean, cov = condition(ys, A, Q, C, R, m0, P0)
    d = 2
    np.testing.assert_allclose(ex["log_evidence"], log_z, rtol=1e-12)
    np.testing.assert_allclose(ex["smoothed_means"], mean[1:], atol=1e-12)
    np.testing.assert_allclose(ex["smoothed_mean0"], mean[0], atol=1e-12)
    np.testing.assert_allclose(ex["smoothed_cov0"], _block(cov, d, 0, 0), atol=1e-12)
    for t in range(1, 4):
        np.testing.assert_allclose(ex["smoothed_covs"][t - 1], _block(cov, d, t, t), atol=1e-12)
        np.testing.assert_allclose(ex["cross_covs"][t - 1], _block(cov, d, t - 1, t),
                                   atol=1e-12)
        e_cross = _block(cov, d, t - 1, t) + np.outer(mean[t - 1], mean[t])
        np.testing.assert_allclose(ex["e_xprev_x"][t - 1], e_cross, atol=1e-12)
    np.testing.assert_allclose(ex["e_x0_x1"], _block(cov, d, 0, 1) + np.outer(mean[0], mean[1]),
                               atol=1e-12)
    post = stats.multivariate_normal(mean[1:].reshape(-1), cov[d:, d:])
    flat = post.rvs(size=3, random_state=np.random.default_rng(1))
    np.testing.assert_allclose(ex["log_smoothing_density"](flat.reshape(3, 3, d)),
                               post.logpdf(flat), rtol=1e-10)
    # the defaults: m0 = LGSSM_2D_X0, P0 = LGSSM_2D_P0
    default = M.lgssm_2d_x0_exact(ys)
    log_z, mean, _ = condition(ys, A, Q, C, R, np.asarray(M.LGSSM_2D_X0), M.LGSSM_2D_P0)
    np.testing.assert_allclose(default["log_evidence"], log_z, rtol=1e-12)
    np.testing.assert_allclose(default["smoothed_mean0"], mean[0], atol=1e-12)


@pytest.mark.parametrize("p0", [0.0, 1e-10])
def test_x0_exact_tends_to_the_fixed_init_answer(p0):
    """P0 -> 0 with m0 = the old fixed init gives lgssm_1d_exact / lgssm_2d_exact, and the
    smoothed law of x0 collapses on m0; a diffuse P0 changes the answers."""
    ys = np.asarray(YS, np.float64)
    fixed, limit = M.lgssm_1d_exact(ys), M.lgssm_1d_x0_exact(ys, m0=0.0, p0=p0)
    for key in ("filter_means", "filter_vars", "smoothed_means", "smoothed_vars",
                "e_xprev_x"):
        np.testing.assert_allclose(limit[key], fixed[key], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(limit["log_evidence"], fixed["log_evidence"], rtol=1e-9)
    np.testing.assert_allclose(limit["smoothed_mean0"], 0.0, atol=1e-8)
    np.testing.assert_allclose(limit["smoothed_var0"], 0.0, atol=1e-9)
    assert abs(EXACT["log_evidence"] - AT_M0["log_evidence"]) > 0.5
    assert EXACT["smoothed_var0"] > 0.3

    _, ys2 = M.simulate_lgssm_2d(jax.random.PRNGKey(2), 20)
    ys2 = np.asarray(ys2, np.float64)
    x0 = np.array([0.4, -1.2])
    fixed = M.lgssm_2d_exact(ys2, x0=x0)
    limit = M.lgssm_2d_x0_exact(ys2, m0=x0, P0=p0 * np.eye(2))
    for key in ("filter_means", "filter_covs", "smoothed_means", "smoothed_covs",
                "cross_covs", "e_xprev_x"):
        np.testing.assert_allclose(limit[key], fixed[key], rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(limit["log_evidence"], fixed["log_evidence"], rtol=1e-9)
    np.testing.assert_allclose(limit["smoothed_mean0"], x0, atol=1e-8)
    path = fixed["smoothed_means"]
    np.testing.assert_allclose(limit["log_smoothing_density"](path),
                               fixed["log_smoothing_density"](path), rtol=1e-8)


def test_x0_programs_log_joint():
    """The programs are the models of the exact answers: NumPyro's log joint of a point
    equals the hand-written one (x0 term included)."""
    ys = np.asarray(YS, np.float64)[:6]
    xs = np.linspace(-1.0, 1.5, 6)
    x0, rho, sx, sy, m0, p0 = -0.4, 0.7, 1.2, 0.4, 0.5, 2.0
    prev = np.concatenate([[x0], xs[:-1]])
    hand = (stats.norm.logpdf(x0, m0, np.sqrt(p0)) + stats.norm.logpdf(xs, rho * prev, sx).sum()
            + stats.norm.logpdf(ys, xs, sy).sum())
    got = log_density(M.lgssm_1d_x0, (jnp.asarray(ys), rho, sx, sy, m0, p0), {},
                      {"x0": x0, "x": jnp.asarray(xs)})[0]
    np.testing.assert_allclose(float(got), hand, rtol=1e-5)

    _, ys2 = M.simulate_lgssm_2d(jax.random.PRNGKey(1), 4)
    ys2 = np.asarray(ys2, np.float64)
    xs2 = np.stack([np.linspace(-1, 1, 4), np.linspace(2, 0, 4)], axis=1)
    x0 = np.array([0.2, 0.9])
    A, Q, C, R = M.LGSSM_2D_A, M.LGSSM_2D_Q, M.LGSSM_2D_C, M.LGSSM_2D_R
    prev = np.concatenate([x0[None], xs2[:-1]])
    hand = stats.multivariate_normal(M.LGSSM_2D_X0, M.LGSSM_2D_P0).logpdf(x0) + sum(
        stats.multivariate_normal(A @ prev[t], Q).logpdf(xs2[t])
        + stats.multivariate_normal(C @ xs2[t], R).logpdf(ys2[t])
        for t in range(4)
    )
    got = log_density(M.lgssm_2d_x0, (jnp.asarray(ys2),), {},
                      {"x0": jnp.asarray(x0), "x": jnp.asarray(xs2)})[0]
    np.testing.assert_allclose(float(got), hand, rtol=1e-5)


# --------------------------------------------------------------------------- SMC


SMC = infer.smc(500)


def test_smc_evidence_filter_and_x0():
    """N = 500, 20 runs: the evidence (x0 integrated out), the filtering mean at T, and the
    smoothed mean and second moment of x0 from the weighted final particles (each carries
    the x0 of its lineage)."""
    exact = {
        "log_evidence": EXACT["log_evidence"],
        "filter_mean_T": EXACT["filter_means"][-1],
        "mean_x0": EXACT["smoothed_mean0"],
        "second_x0": EXACT["smoothed_var0"] + EXACT["smoothed_mean0"] ** 2,
    }
    tests = {
        "filter_mean_T": lambda s: s["x"][:, -1],
        "mean_x0": lambda s: s["x0"],
        "second_x0": lambda s: s["x0"] ** 2,
    }
    post = SMC.run(KEY, M.lgssm_1d_x0, YS, **OPTS)
    assert post.samples["x0"].shape == (500,) and post.samples["x"].shape == (500, T)
    report = preserves(lambda k: SMC.run(k, M.lgssm_1d_x0, YS, **OPTS), exact, tests, KEY,
                       num_replicates=20)
    print(report)
    check_power(report, "log_evidence", AT_M0["log_evidence"])
    check_power(report, "mean_x0", M0)


def test_smc_2d_evidence_and_x0():
    """The 2-D model, x0 ~ MVN(m0, P0): evidence and smoothed mean of each coordinate of
    x0 (N = 500, 12 runs)."""
    _, ys = M.simulate_lgssm_2d(jax.random.PRNGKey(2), 20)
    ex = M.lgssm_2d_x0_exact(np.asarray(ys, np.float64))
    exact = {"log_evidence": ex["log_evidence"]}
    exact.update({f"mean_x0_{i}": ex["smoothed_mean0"][i] for i in range(2)})
    tests = {f"mean_x0_{i}": (lambda s, i=i: s["x0"][:, i]) for i in range(2)}
    print(preserves(lambda k: SMC.run(k, M.lgssm_2d_x0, ys), exact, tests, KEY,
                    num_replicates=12))


# --------------------------------------------------------------------------- RMSMC


def test_rmsmc_evidence_and_filter():
    """Resample-move SMC with one single-site MH move per step (N = 200, 16 runs): the
    moves leave the weights alone, so the evidence is SMC's, and the weighted final
    particles are the filter at T."""
    algo = infer.rmsmc(200, move=infer.mh(num_mcmc_steps=1))
    exact = {"log_evidence": EXACT["log_evidence"], "filter_mean_T": EXACT["filter_means"][-1]}
    report = preserves(lambda k: algo.run(k, M.lgssm_1d_x0, YS, **OPTS), exact,
                       {"filter_mean_T": lambda s: s["x"][:, -1]}, KEY, num_replicates=16)
    print(report)
    check_power(report, "log_evidence", AT_M0["log_evidence"])


# --------------------------------------------------------------------------- CSMC


TIMES = (0, 12, T - 1)


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_csmc_samples_the_states_and_x0():
    """Particle Gibbs for the states with x0 among them (N = 30, 130 sweeps of which 10
    are warm-up, 12 independent chains): smoothed means and second moments of x_t at three
    times and of x0. Nothing to fix: rho and the sigmas are Python constants."""
    algo = infer.csmc(30, num_sweeps=130, num_warmup=10, fixed=None)
    post = algo.run(KEY, M.lgssm_1d_x0, YS, **OPTS)
    assert post.samples["x"].shape == (120, T) and post.samples["x0"].shape == (120,)
    exact = {"mean_x0": EXACT["smoothed_mean0"],
             "second_x0": EXACT["smoothed_var0"] + EXACT["smoothed_mean0"] ** 2}
    tests = {"mean_x0": lambda s: s["x0"], "second_x0": lambda s: s["x0"] ** 2}
    for t in TIMES:
        m, v = EXACT["smoothed_means"][t], EXACT["smoothed_vars"][t]
        exact[f"mean_x{t + 1}"], exact[f"second_x{t + 1}"] = m, v + m**2
        tests[f"mean_x{t + 1}"] = lambda s, t=t: s["x"][:, t]
        tests[f"second_x{t + 1}"] = lambda s, t=t: s["x"][:, t] ** 2
    report = preserves(lambda k: algo.run(k, M.lgssm_1d_x0, YS, **OPTS), exact, tests, KEY,
                       num_replicates=12)
    print(report)
    check_power(report, "mean_x0", M0)


# --------------------------------------------------------------------------- PaRIS, PPG


def psi(t, x_prev, x, params):
    """(x, x_prev x) as in tests/test_paris.py, and the first step's x_prev and x_prev x
    alone: x_prev of step 0 is the particle's time-0 state x0."""
    first = t == 0
    return jnp.stack([x, x_prev * x, jnp.where(first, x_prev, 0.0),
                      jnp.where(first, x_prev * x, 0.0)])


SMOOTHED = {
    "sum_x": EXACT["smoothed_means"].sum(),
    "sum_xx": EXACT["e_xprev_x"].sum(),  # includes E[x0 x1 | y]
    "mean_x0": EXACT["smoothed_mean0"],
    "x0_x1": EXACT["e_x0_x1"],
}
FUNCTIONAL = {name: (lambda s, i=i: s["functional"][:, i]) for i, name in enumerate(SMOOTHED)}


def smoother_power(report):
    """The wrong answers of an engine whose x_prev of the first step is not x0."""
    check_power(report, "sum_xx", SUM_XX_AT_M0)
    check_power(report, "mean_x0", M0)
    check_power(report, "x0_x1", M0 * EXACT["smoothed_means"][0])


@pytest.mark.parametrize("backward,num_particles", [
    ("exact", 1000), pytest.param("reject", 2000, marks=pytest.mark.slow)])
def test_paris_sums_over_the_steps_from_x0(backward, num_particles):
    """PaRIS (10 runs): E[sum_t psi | y] for psi = (x, x_prev x, first-step x_prev, first-step
    x_prev x), against the RTS sums with E[x0 x1 | y] in them. (The forward filter's
    evidence is left to the SMC tests: with a log Z-hat sd of 0.3 here, 10 runs are too few
    for its natural-scale check.)"""
    smoother = infer.paris(num_particles, num_backward=2, functional=psi, backward=backward,
                           fixed=None)
    report = preserves(lambda k: smoother.run(k, M.lgssm_1d_x0, YS, **OPTS), SMOOTHED,
                       FUNCTIONAL, KEY, num_replicates=10)
    print(report)
    smoother_power(report)


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_paris_2d_from_x0():
    """The 2-D model (x0 ~ MVN(m0, P0), T = 20), PaRIS with the accept-reject backward
    kernel (N = 600, 8 runs): sum of smoothed means, sum of E[x_{t-1} x_t^T | y] (with
    E[x0 x1^T | y]) and the smoothed mean of x0."""
    _, ys = M.simulate_lgssm_2d(jax.random.PRNGKey(2), 20)
    ex = M.lgssm_2d_x0_exact(np.asarray(ys, np.float64))

    def psi_2d(t, x_prev, x, params):
        return jnp.concatenate([x, jnp.outer(x_prev, x).reshape(-1),
                                jnp.where(t == 0, x_prev, jnp.zeros_like(x_prev))])

    exact = {f"sum_x[{i}]": ex["smoothed_means"][:, i].sum() for i in range(2)}
    exact.update({f"sum_xx[{i},{j}]": ex["e_xprev_x"].sum(0)[i, j]
                  for i in range(2) for j in range(2)})
    exact.update({f"mean_x0[{i}]": ex["smoothed_mean0"][i] for i in range(2)})
    tests = {name: (lambda s, i=i: s["functional"][:, i]) for i, name in enumerate(exact)}
    smoother = infer.paris(600, num_backward=2, functional=psi_2d, backward="reject",
                           fixed=None)
    print(preserves(lambda k: smoother.run(k, M.lgssm_2d_x0, ys), exact, tests, KEY,
                    num_replicates=8))


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_ppg_sums_over_the_steps_from_x0():
    """PaRIS particle Gibbs (N = 100, 10 sweeps of which 2 warm-up, 10 independent
    chains): the same functional; PPG removes PaRIS's O(T/N) bias, so N can be small."""
    smoother = infer.ppg(100, num_backward=2, num_sweeps=10, num_warmup=2, functional=psi,
                         fixed=None)
    post = smoother.run(KEY, M.lgssm_1d_x0, YS, **OPTS)
    np.testing.assert_allclose(post.mean("functional"), post.estimate, rtol=1e-5)
    report = preserves(lambda k: smoother.run(k, M.lgssm_1d_x0, YS, **OPTS), SMOOTHED,
                       FUNCTIONAL, KEY, num_replicates=10)
    print(report)
    smoother_power(report)


# --------------------------------------------------------------------------- PMMH


@ppl.model
def lgssm_x0_rho(ys, rho=None):
    """:func:`ppl.models.lgssm_1d_x0` (m0 = M0, p0 = P0) whose rho, unless given as data,
    is a global latent site ~ Uniform(-1, 1) drawn before x0."""
    if rho is None:
        rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))
    x0 = ppl.sample("x0", dist.Normal(M0, np.sqrt(P0)))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, SIGMA_X))
        ppl.observe("y", dist.Normal(x, SIGMA_Y), y)
        return x

    return ppl.markov(step, init=x0, xs=ys)


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_pmmh_runs_with_x0_integrated_out():
    """PMMH over rho with x0 drawn from its prior in every particle: it runs, moves, and
    each draw carries a path and an x0. The likelihood it uses, the SMC evidence at a
    given rho (here the true one, passed as data), matches the Kalman evidence with x0
    integrated out (N = 300, 16 runs)."""
    algo = infer.pmmh(params=["rho"], likelihood=infer.smc(100), num_samples=150,
                      num_warmup=50, num_chains=2, step_size=0.5, return_paths=True)
    post = algo.run(KEY, lgssm_x0_rho, YS)
    rho = np.asarray(post.samples["rho"])
    assert rho.shape == (300,) and np.all(np.abs(rho) < 1.0)
    assert post.samples["x"].shape == (300, T) and post.samples["x0"].shape == (300,)
    assert np.all(np.isfinite(np.asarray(post.sample_stats["log_likelihood_estimate"])))
    assert 0.0 < np.mean(rho[1:] != rho[:-1]) < 1.0  # moves are accepted and rejected

    likelihood = infer.smc(300)
    report = preserves(lambda k: likelihood.run(k, lgssm_x0_rho, YS, jnp.asarray(RHO)),
                       {"log_evidence": EXACT["log_evidence"]}, {}, KEY, num_replicates=16)
    print(report)
    check_power(report, "log_evidence", AT_M0["log_evidence"])


# --------------------------------------------------------------------------- score ascent


#: Prior of x0 in the learning test: the x0 = m0 reading moves the MLE of rho by 0.83 of
#: its standard error on these data (0.804 against 0.871).
M0_LEARN, P0_LEARN = 2.0, 4.0


@ppl.model
def lgssm_x0_learnt_rho(ys):
    """rho a ``ppl.param`` (init 0.5, in (-1, 1)); x0 ~ N(M0_LEARN, P0_LEARN) the state at
    time 0; sigma_x, sigma_y known."""
    rho = ppl.param("rho", 0.5, constraint=constraints.interval(-1.0, 1.0))
    x0 = ppl.sample("x0", dist.Normal(M0_LEARN, np.sqrt(P0_LEARN)))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, SIGMA_X))
        ppl.observe("y", dist.Normal(x, SIGMA_Y), y)
        return x

    return ppl.markov(step, init=x0, xs=ys)


def kalman_mle_rho(ys, m0, p0):
    """argmax_rho of the Kalman log evidence (grid over (-1, 1), refined by a bounded
    scalar search in the best grid cell) and its standard error from the observed
    information (central second difference)."""

    def log_lik(r):
        return M.lgssm_1d_x0_exact(ys, r, SIGMA_X, SIGMA_Y, m0, p0)["log_evidence"]

    grid = np.linspace(-0.995, 0.995, 400)
    i = int(np.argmax([log_lik(r) for r in grid]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    mle = optimize.minimize_scalar(lambda r: -log_lik(r), bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-10}).x
    h = 1e-4
    curvature = (log_lik(mle + h) - 2 * log_lik(mle) + log_lik(mle - h)) / h**2
    return float(mle), float(1.0 / np.sqrt(-curvature))


@pytest.mark.slow
def test_score_ascent_learns_rho_with_x0_integrated_out():
    """PPG score ascent (N = 32, 200 steps) from rho = 0.5, three seeds: each estimate lies
    within a quarter of the MLE's standard error (0.08) of the exact MLE. When we ran it
    (on the same problem, the x0 step written out as a first markov step) one run's sd was
    0.003 = 0.04 SE and the worst of 6 seeds 0.056 SE off, so 0.25 SE is 6 Monte Carlo sds
    of a run; the MLE of the x0 = m0 reading is 0.83 SE away and fails it."""
    ys = np.asarray(YS, np.float64)
    mle, se = kalman_mle_rho(ys, M0_LEARN, P0_LEARN)
    wrong, _ = kalman_mle_rho(ys, M0_LEARN, 0.0)
    assert abs(mle - wrong) > 0.5 * se  # the check below tells them apart
    algo = infer.score_ascent(num_particles=32, num_steps=200, step_size=0.05, fixed=None)
    estimates = np.array([float(algo.run(k, lgssm_x0_learnt_rho, YS).estimate["rho"])
                          for k in jax.random.split(KEY, 3)])
    z = (estimates - mle) / se
    print("estimates", estimates, "mle", mle, "se", se, "z", z, "x0 = m0 mle", wrong)
    assert np.all(np.abs(z) < 0.25), (estimates, mle, se, z)


# --------------------------------------------------------------------------- particle Gibbs


@pytest.mark.slow
def test_particle_gibbs_moves_rho_and_samples_x0_with_the_path():
    """Particle Gibbs on (rho, states) with x0 drawn from its prior: rho is the parameter
    (the step reads it), x0 the time-0 state sampled with each path by conditional SMC.
    The posterior means of rho and of x0 match a grid over rho of the exact (Kalman,
    x0 ~ N(m0, P0)) answers within 4 Monte Carlo standard errors of 4 chains (ArviZ's
    MCSE); holding x0 at m0 would put E[x0 | y] at m0, more than 4 of those errors away
    (checked)."""
    ys = np.asarray(YS, np.float64)
    grid = np.linspace(-0.995, 0.995, 200)
    exact = [M.lgssm_1d_x0_exact(ys, r, SIGMA_X, SIGMA_Y, M0, P0) for r in grid]
    lz = np.array([e["log_evidence"] for e in exact])
    w = np.exp(lz - lz.max())
    w /= w.sum()
    truth = {"rho": float(w @ grid),
             "x0": float(w @ np.array([e["smoothed_mean0"] for e in exact]))}
    algo = infer.particle_gibbs(num_particles=32, num_samples=300, num_warmup=100,
                                num_chains=4, step_size=0.5, num_mcmc_steps=2)
    post = algo.run(KEY, lgssm_x0_rho, YS)
    assert post.samples["x0"].shape == (1200,) and post.samples["x"].shape == (1200, T)
    idata = post.to_arviz()
    for name, value in truth.items():
        draws = idata.posterior[name].values.ravel()
        se = float(az.mcse(idata, var_names=[name], method="mean")[name])
        assert abs(draws.mean() - value) < K * se, (name, draws.mean(), value, se)
    se_x0 = float(az.mcse(idata, var_names=["x0"], method="mean")["x0"])
    assert abs(truth["x0"] - M0) > K * se_x0
