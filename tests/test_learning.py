"""Parameter learning with PPG (inference/learning.py) against exact Kalman answers.

Model: the 1-D linear-Gaussian SSM with learnable ``ppl.param`` sites rho, sigma_x,
sigma_y (x_0 = 0, x_t ~ N(rho x_{t-1}, sigma_x^2), y_t ~ N(x_t, sigma_y^2)), data simulated
with (0.9, 1, 0.5).

* Score (Fisher's identity): the PPG estimate of grad log p_theta(y) at a theta away from
  the MLE matches the exact score (central finite differences of the Kalman
  log-likelihood, float64) within 4 standard errors from 8 independent replicates; the
  broken variant that takes the expectation of each psi_t under the *filter* at time t
  instead of the smoother is detected (|z| > 4).
* MLE: the score-ascent estimate is within 2 standard errors of the exact MLE (scipy on
  the Kalman log-likelihood); the standard errors are the asymptotic ones of the MLE, from
  the observed information (the inverse of the finite-difference Hessian of the Kalman
  log-likelihood at the MLE). T = 100 in the fast test, T = 500 behind ``slow``.
* Particle Gibbs for rho and the states: posterior mean and sd of rho within 4 MCSE
  (ArviZ) of the Kalman grid posterior (as tests/test_pmmh.py), T = 50.
* Markov score climbing: a Gaussian AR guide q(x_t | x_{t-1}) = N(a x_{t-1} + b y_t, s^2)
  fitted by MSC matches the exact minimiser of KL(p || q) (a least-squares regression of
  x_t on (x_{t-1}, y_t) under the RTS smoothing moments), within 4 standard errors from
  replicate runs (slow).
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from arviz_helpers import az
from numpyro.distributions import constraints

import ppl
from ppl import dist
from ppl import models as zoo
from ppl.errors import UnknownOptionError, UnsupportedModelError

learning = importlib.import_module("ppl.inference.learning")
engine = importlib.import_module("ppl.inference.engine")
csmc_module = importlib.import_module("ppl.inference.conditional")

KEY = jax.random.PRNGKey(20261128)
TRUE = (0.9, 1.0, 0.5)
NAMES = ("rho", "sigma_x", "sigma_y")


@ppl.model
def lgssm_params(ys):
    rho = ppl.param("rho", 0.5, constraint=constraints.interval(-1.0, 1.0))
    sigma_x = ppl.param("sigma_x", 0.7, constraint=constraints.positive)
    sigma_y = ppl.param("sigma_y", 1.0, constraint=constraints.positive)

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, sigma_x))
        ppl.observe("y", dist.Normal(x, sigma_y), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


def data(T, seed=1):
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(seed), T, *TRUE)
    return ys


def kalman_loglik(theta, ys):
    """log p(y | rho, sigma_x, sigma_y) by the 1-D Kalman filter (x_0 = 0), float64,
    vectorised over arrays of parameters (checked against ``zoo.lgssm_1d_exact``)."""
    rho, sx, sy = (np.asarray(v, np.float64) for v in theta)
    m, p, total = np.zeros_like(rho), np.zeros_like(rho), np.zeros_like(rho)
    for y in np.asarray(ys, np.float64):
        m, p = rho * m, rho**2 * p + sx**2
        s = p + sy**2
        total = total - 0.5 * (np.log(2 * np.pi * s) + (y - m) ** 2 / s)
        gain = p / s
        m, p = m + gain * (y - m), (1 - gain) * p
    return total


def test_the_test_kalman_filter_is_the_zoo_one(short_data):
    theta = (0.8, 1.2, 0.6)
    exact = zoo.lgssm_1d_exact(np.asarray(short_data, np.float64), *theta)["log_evidence"]
    assert kalman_loglik(theta, short_data) == pytest.approx(exact, rel=1e-10)


def exact_score(theta, ys, h=1e-5):
    theta = np.asarray(theta, np.float64)
    grad = np.zeros(3)
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        grad[i] = (kalman_loglik(theta + e, ys) - kalman_loglik(theta - e, ys)) / (2 * h)
    return grad


def exact_mle(ys):
    """The MLE by L-BFGS on (atanh rho, log sigma_x, log sigma_y) and its standard errors
    from the observed information (finite-difference Hessian in (rho, sigma_x, sigma_y))."""

    def neg(v):
        return -kalman_loglik((np.tanh(v[0]), np.exp(v[1]), np.exp(v[2])), ys)

    v = scipy.optimize.minimize(neg, np.array([0.5, 0.0, 0.0]), method="L-BFGS-B").x
    theta = np.array([np.tanh(v[0]), np.exp(v[1]), np.exp(v[2])])
    h = 1e-4
    hess = np.zeros((3, 3))
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        hess[i] = (exact_score(theta + e, ys) - exact_score(theta - e, ys)) / (2 * h)
    cov = np.linalg.inv(-0.5 * (hess + hess.T))
    return theta, np.sqrt(np.diag(cov))


# --------------------------------------------------------------------------- score


THETA0 = {"rho": 0.8, "sigma_x": 1.2, "sigma_y": 0.6}


def filter_score(key, ys, params, num_particles):
    """BROKEN on purpose: sum_t E[psi_t | y_{0:t}] under the filter at time t (ancestor
    and particle of the bootstrap filter) instead of the smoothed E[psi_t | y_{0:T-1}]."""
    sites = learning.global_sites(lgssm_params, (ys,), {}, params)
    real = {n: s._replace(constraint=constraints.real) for n, s in sites.items()}
    theta, unravel = jax.flatten_util.ravel_pytree({n: jnp.asarray(params[n]) for n in NAMES})
    phi_at = learning.score_functional(lgssm_params, (ys,), {}, real, list(NAMES), {},
                                       unravel)
    phi = phi_at(theta)
    fk = csmc_module.conditional_model(lgssm_params, (ys,), {}, params)

    class FilterScore:
        uses_key = False

        def init(self, fk, state):
            return None

        def step(self, key, t, carry, prev, out, new):
            parents, result = out.parents, out.result
            psi = jax.vmap(lambda z, c0, c, v: phi(t, z, c0, c, v))(
                parents.params, parents.carry, result.carry, result.values)
            return carry, jnp.exp(new.log_weights) @ psi

    run = engine.run_particles(key, fk, num_particles, "multinomial", 1.0, FilterScore())
    return unravel(run.records.sum(0))


def z_scores(estimates, exact):
    est = np.stack([np.asarray(estimates[n], np.float64) for n in NAMES], axis=-1)
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    return (est.mean(axis=0) - exact) / se


@pytest.fixture(scope="module")
def short_data():
    return data(100)


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_ppg_score_matches_the_kalman_score(short_data):
    ys = short_data
    exact = exact_score([THETA0[n] for n in NAMES], ys)

    def one(key):
        score, _ = learning.fisher_score(key, lgssm_params, (ys,), {}, THETA0,
                                         num_particles=32, num_sweeps=3, num_warmup=1)
        return score

    keys = jax.random.split(KEY, 8)
    z = z_scores(jax.jit(jax.vmap(one))(keys), exact)
    assert np.all(np.abs(z) < 4.0), (z, exact)

    # power: the filter in place of the smoother misses the score
    broken = jax.jit(jax.vmap(lambda k: filter_score(k, ys, THETA0, 32)))(keys)
    z_broken = z_scores(broken, exact)
    assert np.max(np.abs(z_broken)) > 4.0, z_broken


# --------------------------------------------------------------------------- MLE


def check_mle(result, ys):
    mle, se = exact_mle(ys)
    est = np.array([float(result.estimate[n]) for n in NAMES])
    z = (est - mle) / se
    assert np.all(np.abs(z) < 2.0), (est, mle, se, z)
    return z


def test_score_ascent_finds_the_mle_on_short_data(short_data):
    algo = learning.score_ascent(num_particles=32, num_steps=120, step_size=0.05)
    result = algo.run(KEY, lgssm_params, short_data)
    check_mle(result, short_data)
    assert result.trajectory["rho"].shape == (121,)
    assert float(result.trajectory["rho"][0]) == pytest.approx(0.5)
    idata = result.to_arviz()
    assert idata.posterior["sigma_y"].shape == (1, 121)


@pytest.mark.slow
def test_score_ascent_finds_the_mle_on_500_steps():
    ys = data(500, seed=2)
    algo = learning.score_ascent(num_particles=100, num_steps=300, step_size=0.05,
                                 backward="reject")
    check_mle(algo.run(KEY, lgssm_params, ys), ys)


# --------------------------------------------------------------------------- PG


@pytest.fixture(scope="module")
def grid_posterior():
    """Mean and sd of rho under p(rho | y) (flat prior on (-1, 1)) on a fine grid."""
    ys = data(50, seed=3)
    grid = np.linspace(0.3, 1.0, 1401)[:-1] + 0.00025
    ll = kalman_loglik((grid, 1.0, 0.5), ys)
    w = np.exp(ll - ll.max())
    w /= w.sum()
    mean = float(w @ grid)
    return ys, mean, float(np.sqrt(w @ (grid - mean) ** 2)), w


def test_particle_gibbs_matches_the_kalman_grid(grid_posterior):
    ys, mean, sd, w = grid_posterior
    assert w[0] < 1e-8  # the grid covers the posterior (which the prior truncates at 1)
    algo = learning.particle_gibbs(num_particles=16, num_samples=400, num_warmup=100,
                                   num_chains=4, step_size=0.5, num_mcmc_steps=2)
    post = algo.run(KEY, zoo.lgssm_1d_unknown_rho, ys)
    idata = post.to_arviz()
    draws = idata.posterior["rho"].values.ravel()
    se_mean = float(az.mcse(idata, var_names=["rho"], method="mean")["rho"])
    se_sd = float(az.mcse(idata, var_names=["rho"], method="sd")["rho"])
    z = ((draws.mean() - mean) / se_mean, (draws.std() - sd) / se_sd)
    assert abs(z[0]) < 4.0 and abs(z[1]) < 4.0, (z, draws.mean(), mean, draws.std(), sd)
    assert post.samples["x"].shape == (1600, 50)


# --------------------------------------------------------------------------- MSC


@ppl.model
def ar_guide(ys):
    a = ppl.param("a", 0.5)
    b = ppl.param("b", 0.5)
    s = ppl.param("s", 1.0, constraint=constraints.positive)

    def step(x, y):
        return ppl.sample("x", dist.Normal(a * x + b * y, s))

    return ppl.markov(step, init=0.0, xs=ys)


def kl_optimum(ys):
    """argmin KL(p || q) over the AR guide: least squares of x_t on (x_{t-1}, y_t) under
    the RTS smoothing moments."""
    ys = np.asarray(ys, np.float64)
    ex = zoo.lgssm_1d_exact(ys, *TRUE)
    m, v, cross = ex["smoothed_means"], ex["smoothed_vars"], ex["e_xprev_x"]
    mp = np.concatenate([[0.0], m[:-1]])
    sq = v + m**2
    sqp = np.concatenate([[0.0], sq[:-1]])
    gram = np.array([[sqp.sum(), mp @ ys], [mp @ ys, ys @ ys]])
    rhs = np.array([cross.sum(), m @ ys])
    a, b = np.linalg.solve(gram, rhs)
    resid = sq.sum() - 2 * a * cross.sum() - 2 * b * (m @ ys) + a**2 * sqp.sum() \
        + 2 * a * b * (mp @ ys) + b**2 * (ys @ ys)
    return np.array([a, b, np.sqrt(resid / len(ys))])


@pytest.mark.slow
def test_score_climbing_matches_the_kl_optimum():
    ys = data(100, seed=4)
    exact = kl_optimum(ys)
    algo = learning.score_climbing(ar_guide, num_particles=32, num_steps=300,
                                   step_size=0.05)
    keys = jax.random.split(KEY, 6)
    runs = [algo.run(k, zoo.lgssm_1d, ys).estimate for k in keys]
    est = np.array([[float(r[n]) for n in ("a", "b", "s")] for r in runs])
    z = (est.mean(0) - exact) / (est.std(0, ddof=1) / np.sqrt(len(runs)))
    assert np.all(np.abs(z) < 4.0), (est.mean(0), exact, z)


# --------------------------------------------------------------------------- errors


def test_bad_options_are_named():
    with pytest.raises(UnknownOptionError, match="backward"):
        learning.score_ascent(backward="nope")
    with pytest.raises(ValueError, match="num_warmup"):
        learning.score_ascent(num_sweeps=2, num_warmup=2)
    with pytest.raises(TypeError, match="optax"):
        learning.score_ascent(optimizer="adam")


def test_a_program_without_params_is_rejected(short_data):
    with pytest.raises(UnsupportedModelError, match="param"):
        learning.score_ascent(num_steps=2).run(KEY, zoo.lgssm_1d, short_data)
