"""PMMH (inference/marginal_mh.py) against a grid posterior from the exact Kalman likelihood.

Model: ``lgssm_1d_unknown_rho`` (rho ~ Uniform(-1, 1), sigma_x = 1, sigma_y = 0.5) with
T = 50 simulated observations. Exact answer: p(rho | y) is proportional to the Kalman
evidence ``lgssm_1d_exact(ys, rho)["log_evidence"]`` times the flat prior; its mean and sd
(and the smoothing means E[x_t | y] = int E[x_t | y, rho] p(rho | y) drho) are computed on a
fine grid of rho (300 midpoint cells of width about 0.002 over the region where the
likelihood is not negligible; the posterior sd is 0.07, so the grid error is far below the
Monte Carlo error).

Tolerances: the standard error of a chain average is ArviZ's MCSE, ``sd / sqrt(ESS)`` with
the ESS estimated across all chains (``az.mcse(method="mean")``, and ``method="sd"`` for
the posterior sd); an estimate passes when it is within 4 MCSE of the exact value (4
rather than 3 because the ESS is itself estimated from a few hundred effective draws).

Power: Monte Carlo within Metropolis (the likelihood of the current state re-estimated at
every iteration instead of kept) is run the same way and must miss the grid answer by more
than 4 MCSE.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from arviz_helpers import az

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo

pmmh_module = importlib.import_module("ppl.inference.marginal_mh")

KEY = jax.random.PRNGKey(20261128)
K = 4.0  # tolerance in MCSE units
T = 50
SIGMA_X, SIGMA_Y = 1.0, 0.5


# --------------------------------------------------------------------------- exact answer


@pytest.fixture(scope="module")
def data():
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), T, rho=0.9, sigma_x=SIGMA_X,
                                  sigma_y=SIGMA_Y)
    return ys


@pytest.fixture(scope="module")
def grid_posterior(data):
    """Mean and sd of rho, and E[x_t | y], under p(rho | y) by the midpoint rule (flat
    prior): a coarse pass over (-1, 1) finds where the likelihood is within e^-30 of its
    maximum, and 300 cells of width ~0.002 cover that region up to rho = 1."""

    def log_lik(rhos):
        return [zoo.lgssm_1d_exact(data, r, SIGMA_X, SIGMA_Y) for r in rhos]

    coarse = np.linspace(-1.0, 1.0, 41)[1:-1]
    ll = np.array([e["log_evidence"] for e in log_lik(coarse)])
    lo = max(-1.0, coarse[np.argmax(ll > ll.max() - 30.0)] - 0.05)
    h = (1.0 - lo) / 300
    grid = lo + h * (np.arange(300) + 0.5)
    exact = log_lik(grid)
    log_lik = np.array([e["log_evidence"] for e in exact])
    w = np.exp(log_lik - log_lik.max())
    w /= w.sum()
    mean = float(w @ grid)
    sd = float(np.sqrt(w @ (grid - mean) ** 2))
    smoothed = w @ np.stack([e["smoothed_means"] for e in exact])
    return {"mean": mean, "sd": sd, "smoothed_means": smoothed}


def z_scores(post, grid_posterior):
    """z of the posterior mean and sd of rho (ArviZ MCSE across chains)."""
    idata = post.to_arviz()
    draws = idata.posterior["rho"].values.ravel()
    se_mean = float(az.mcse(idata, var_names=["rho"], method="mean")["rho"])
    se_sd = float(az.mcse(idata, var_names=["rho"], method="sd")["rho"])
    z_mean = (draws.mean() - grid_posterior["mean"]) / se_mean
    z_sd = (draws.std() - grid_posterior["sd"]) / se_sd
    return float(z_mean), float(z_sd)


def run(data, num_samples=800, num_warmup=200, return_paths=False, num_particles=200,
        **kwargs):
    algo = infer.pmmh(params=["rho"], likelihood=infer.smc(num_particles=num_particles),
                      num_samples=num_samples, num_warmup=num_warmup, num_chains=4,
                      step_size=0.5, return_paths=return_paths, **kwargs)
    return algo.run(KEY, zoo.lgssm_1d_unknown_rho, data)


# --------------------------------------------------------------------------- validity


@pytest.fixture(scope="module")
def posterior(data):
    return run(data, return_paths=True)


def test_posterior_of_rho_matches_the_kalman_grid(posterior, grid_posterior):
    z_mean, z_sd = z_scores(posterior, grid_posterior)
    assert abs(z_mean) < K and abs(z_sd) < K, (z_mean, z_sd)
    rhat = float(az.rhat(posterior.to_arviz(), var_names=["rho"])["rho"])
    assert rhat < 1.05, rhat


def test_paths_match_the_smoothing_means(posterior, grid_posterior):
    """With return_paths each draw carries one path from its SMC run's final particles:
    the draws target p(rho, x_{1:T} | y), so E[x_t | y] matches the grid average of the
    RTS smoothing means (checked at 5 times, 4 MCSE each)."""
    x = posterior.samples["x"]
    assert x.shape == (4 * 800, T)
    idata = posterior.to_arviz()
    times = [0, 12, 25, 37, T - 1]
    se = az.mcse(idata, var_names=["x"], method="mean")["x"].values[times]
    z = (np.asarray(x)[:, times].mean(0) - grid_posterior["smoothed_means"][times]) / se
    assert np.all(np.abs(z) < K), z


def test_the_current_estimate_is_kept(posterior):
    """The likelihood estimate of the current state is stored, not recomputed: a rejected
    proposal leaves both rho and its estimate exactly as they were."""
    rho = np.asarray(posterior.get_samples(group_by_chain=True)["rho"])
    log_lik = np.asarray(posterior.sample_stats["log_likelihood_estimate"]).reshape(rho.shape)
    stayed = rho[:, 1:] == rho[:, :-1]
    assert 0.3 < stayed.mean() < 0.95  # rejections happen, and moves too
    np.testing.assert_array_equal(log_lik[:, 1:][stayed], log_lik[:, :-1][stayed])
    assert np.all(log_lik[:, 1:][~stayed] != log_lik[:, :-1][~stayed])
    accept = np.asarray(posterior.sample_stats["accept_prob"])
    assert accept.shape == (3200,) and np.all((accept >= 0) & (accept <= 1))
    assert posterior.num_chains == 4 and posterior.method == "pmmh"
    assert posterior.info["accept_rate"].shape == (4,)


# --------------------------------------------------------------------------- wrong variants


def _monte_carlo_within_metropolis(real):
    """Re-estimate the current state's likelihood with a fresh SMC run every iteration
    (MCWM, Beaumont 2003; O'Neill et al. 2000): it mixes well but is not exact."""

    def pmmh_step(key, state, estimate, scale):
        key_refresh, key_step = jax.random.split(key)
        return real(key_step, estimate(key_refresh, state.u), estimate, scale)

    return pmmh_step


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_recomputing_the_current_estimate_is_detected(monkeypatch, data, grid_posterior):
    """The same check, run on MCWM (the current estimate recomputed each iteration instead
    of kept) with 25 particles, where its bias is clear: the posterior mean of rho comes
    out about 0.06 (almost one posterior sd) too high and the sd too wide, while the chain
    mixes well (it is the target, not the mixing, that is wrong)."""
    monkeypatch.setattr(pmmh_module, "pmmh_step",
                        _monte_carlo_within_metropolis(pmmh_module.pmmh_step))
    post = run(data, num_samples=400, num_warmup=100, num_particles=25)
    z_mean, z_sd = z_scores(post, grid_posterior)
    assert abs(z_mean) > K or abs(z_sd) > K, (z_mean, z_sd)
    assert float(az.rhat(post.to_arviz(), var_names=["rho"])["rho"]) < 1.05


# --------------------------------------------------------------------------- behaviour


@ppl.model
def two_globals(ys):
    """rho first, then a per-particle offset b integrated out by the SMC."""
    rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))
    b = ppl.sample("b", dist.Normal(0.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, 1.0))
        ppl.observe("y", dist.Normal(x + b, 0.5), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


@ppl.model
def offset_first(ys):
    b = ppl.sample("b", dist.Normal(0.0, 1.0))
    rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, 1.0))
        ppl.observe("y", dist.Normal(x + b, 0.5), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


@ppl.model
def discrete_param(ys):
    k = ppl.sample("k", dist.Categorical(probs=jnp.ones(3) / 3))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(0.5 * x, 1.0))
        ppl.observe("y", dist.Normal(x + k, 0.5), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_other_globals_paths_same_key_and_options(data):
    """Global sites not in params (b) are drawn per particle by the SMC and come back with
    the paths; same key, same answer; init_params and a per-param step_size are used."""
    algo = infer.pmmh(["rho"], infer.smc(20), num_samples=5, num_chains=2, return_paths=True,
                      init_params={"rho": 0.5}, step_size={"rho": 0.3})
    a = algo.run(KEY, two_globals, data[:10])
    b = algo.run(KEY, two_globals, data[:10])
    np.testing.assert_array_equal(a.samples["rho"], b.samples["rho"])
    np.testing.assert_array_equal(a.samples["x"], b.samples["x"])
    assert set(a.samples) == {"rho", "b", "x"}
    assert a.samples["x"].shape == (10, 10) and a.samples["b"].shape == (10,)
    assert np.all(np.abs(np.asarray(a.samples["rho"])) < 1.0)
    np.testing.assert_allclose(a.info["step_size"]["rho"], [0.3, 0.3])
    other = algo.run(jax.random.PRNGKey(1), two_globals, data[:10])
    assert not np.array_equal(a.samples["x"], other.samples["x"])


def test_errors_name_the_argument_or_site(data):
    smc = infer.smc(10)
    with pytest.raises(ppl.UnsupportedModelError, match="markov"):
        infer.pmmh(["mu"], smc, 5).run(KEY, zoo.normal_normal, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"\['x'\].*global latent.*\['rho'\]"):
        infer.pmmh(["x"], smc, 5).run(KEY, zoo.lgssm_1d_unknown_rho, data)
    with pytest.raises(ValueError, match="nope"):
        infer.pmmh(["rho", "nope"], smc, 5).run(KEY, zoo.lgssm_1d_unknown_rho, data)
    with pytest.raises(ppl.UnsupportedModelError, match=r"\['b'\].*before"):
        infer.pmmh(["rho"], smc, 5).run(KEY, offset_first, data)
    with pytest.raises(ppl.UnsupportedModelError, match="'k'.*continuous"):
        infer.pmmh(["k"], smc, 5).run(KEY, discrete_param, data)
    with pytest.raises(TypeError, match="likelihood.*SMC"):
        infer.pmmh(["rho"], infer.importance(10), 5)
    with pytest.raises(ppl.UnknownOptionError, match="proposal"):
        infer.pmmh(["rho"], smc, 5, proposal="prior_ish")
    with pytest.raises(ValueError, match="num_samples"):
        infer.pmmh(["rho"], smc, 0)
    with pytest.raises(ValueError, match="num_warmup"):
        infer.pmmh(["rho"], smc, 5, num_warmup=-1)
    with pytest.raises(ValueError, match="step_size"):
        infer.pmmh(["rho"], smc, 5, step_size=-0.1)
    with pytest.raises(ValueError, match="init_params.*sigma"):
        infer.pmmh(["rho"], smc, 5, init_params={"sigma": 1.0})
    with pytest.raises(ValueError, match="more than once"):
        infer.pmmh(["rho", "rho"], smc, 5)
    with pytest.raises(TypeError, match="params"):
        infer.pmmh([], smc, 5)
    with pytest.raises(TypeError, match="key"):
        infer.pmmh(["rho"], smc, 5).run(0, zoo.lgssm_1d_unknown_rho, data)
