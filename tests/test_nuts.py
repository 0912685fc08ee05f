"""NUTS and HMC lowered to NumPyro (inference/hamiltonian.py) against exact answers.

Tolerances come from the Monte Carlo error of the chains themselves: a posterior mean is
compared with ``se = sd / sqrt(ess)``, ``ess`` from ArviZ over the chains (and the same for
a variance, with the draws of ``(x - mean)^2``); every check must be within ``K = 4``
standard errors. Recovered discrete draws are compared with their exact conditional given
each continuous draw: ``z_s - p(z = 1 | theta_s, y)`` are independent given the chain of
``theta`` (one key per draw), each with variance ``p (1 - p)``, so their mean has an
exact standard error. One deliberately wrong recovery (from the prior) and one wrong
marginalisation (hard assignments) are shown to fail the same checks.

Exact answers: conjugacy (Normal-Normal), quadrature on a grid (a two-component mixture
with a Beta weight), and ``ppl.models.forward_backward`` likelihoods on a grid (an HMM
with an unknown emission mean). The potential NUTS samples is checked pointwise against
``-Density.log_joint_unconstrained`` and against hand-written marginal densities.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from arviz_helpers import az, elpd
from numpyro.infer import MCMC
from numpyro.infer import NUTS as NumPyroNUTS
from numpyro.infer.util import initialize_model
from ppl.semantics import Density
from ppl.semantics.validity import Check, ValidityReport
from scipy import stats
from scipy.special import expit, logsumexp

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo

nuts_module = importlib.import_module("ppl.inference.hamiltonian")

KEY = jax.random.PRNGKey(20261130)
K = 4.0
NN_DATA = np.array([0.3, 1.2, -0.4, 0.8, 1.5, 0.9])


# --------------------------------------------------------------------------- models

MIX_MEANS = np.array([-2.0, 2.0])
MIX_DATA = np.array([-2.1, 1.7, 2.5, -1.0, 2.2, 0.3, 1.9, 2.8, -0.2, 1.1])


@ppl.model
def mixture(ys):
    """Two unit-variance components at -2 and +2 with weight ``w ~ Beta(2, 2)`` on +2;
    a global discrete assignment ``z_i`` per point (no enumeration annotation)."""
    w = ppl.sample("w", dist.Beta(2.0, 2.0))
    with ppl.plate("data", ys.shape[0]):
        z = ppl.sample("z", dist.Bernoulli(w))
        ppl.observe("y", dist.Normal(jnp.asarray(MIX_MEANS)[z.astype(jnp.int32)], 1.0), ys)


HMM_TRANS = np.array([[0.9, 0.1], [0.2, 0.8]])
HMM_DATA = np.array([0.1, 2.1, 1.8, 2.5, -0.3, 0.2, 2.2, 1.9, 0.4, -0.5, 1.6, 2.4])
HMM_PRIOR_SD = 3.0


@ppl.model
def hmm(ys):
    """Two-state HMM, x_0 = 0, state 0 emits Normal(0, 1), state 1 emits Normal(mu, 1),
    ``mu ~ Normal(0, 3)``; the states are discrete sites inside ``ppl.markov``."""
    mu = ppl.sample("mu", dist.Normal(0.0, HMM_PRIOR_SD))
    trans = jnp.asarray(HMM_TRANS)

    def step(x, y):
        x = ppl.sample("x", dist.Categorical(probs=trans[x]))
        ppl.observe("y", dist.Normal(jnp.where(x == 1, mu, 0.0), 1.0), y)
        return x

    return ppl.markov(step, init=0, xs=ys)


# --------------------------------------------------------------------------- exact answers


def mixture_log_lik(w):
    """log p(y | w) per grid point, summing each point's assignment out (float64)."""
    w = np.asarray(w, np.float64)[..., None]
    up, down = stats.norm.logpdf(MIX_DATA, 2.0, 1.0), stats.norm.logpdf(MIX_DATA, -2.0, 1.0)
    return np.logaddexp(np.log(w) + up, np.log1p(-w) + down).sum(-1)


def mixture_conditional(w):
    """p(z_i = 1 | w, y) for each draw of ``w``: (S, N)."""
    w = np.asarray(w, np.float64)[:, None]
    up = w * stats.norm.pdf(MIX_DATA, 2.0, 1.0)
    return up / (up + (1 - w) * stats.norm.pdf(MIX_DATA, -2.0, 1.0))


def grid_moments(grid, log_post):
    """Posterior mean and variance of a scalar parameter from its log density on a fine
    uniform grid (the trapezoid rule's error is far below the Monte Carlo error)."""
    p = np.exp(log_post - logsumexp(log_post))
    mean = np.sum(p * grid)
    return mean, np.sum(p * (grid - mean) ** 2)


def mixture_exact():
    grid = np.linspace(1e-6, 1 - 1e-6, 20001)
    log_post = stats.beta.logpdf(grid, 2.0, 2.0) + mixture_log_lik(grid)
    mean, var = grid_moments(grid, log_post)
    p = np.exp(log_post - logsumexp(log_post))
    marginals = (p[:, None] * mixture_conditional(grid)).sum(0)
    return {"mean": mean, "var": var, "z": marginals}


def hmm_log_lik_table(mu):
    """log p(y_t | x_t = k, mu): (T, 2)."""
    return np.stack([stats.norm.logpdf(HMM_DATA, 0.0, 1.0),
                     stats.norm.logpdf(HMM_DATA, mu, 1.0)], axis=1)


def hmm_forward_backward(mu):
    log_trans = np.log(HMM_TRANS)
    return zoo.forward_backward(log_trans[0], log_trans, hmm_log_lik_table(mu))


def hmm_exact():
    grid = np.linspace(-2.0, 6.0, 801)  # the posterior sd is about 0.5
    log_ev = np.array([hmm_forward_backward(m)["log_evidence"] for m in grid])
    log_post = stats.norm.logpdf(grid, 0.0, HMM_PRIOR_SD) + log_ev
    mean, var = grid_moments(grid, log_post)
    return {"mean": mean, "var": var}


# --------------------------------------------------------------------------- helpers


def chains(post, values):
    """A per-draw array as (num_chains, num_draws) float64."""
    return np.asarray(values, np.float64).reshape(post.num_chains, post.num_draws)


def ess_check(name, post, values, exact):
    """Mean of ``values`` over all draws vs ``exact``, se = sd / sqrt(ArviZ ESS)."""
    x = chains(post, values)
    se = x.std() / np.sqrt(az.ess(x))
    return Check(name, float(x.mean()), float(exact), float(se), K)


def moment_checks(post, site, exact_mean, exact_var):
    x = np.asarray(post.samples[site], np.float64)
    return [
        ess_check(f"{site} mean", post, x, exact_mean),
        ess_check(f"{site} var", post, (x - x.mean()) ** 2, exact_var),
    ]


def conditional_checks(name, draws, probs):
    """Discrete draws (S, N) vs their exact conditional probabilities (S, N): the mean
    residual of each element, with its exact standard error sqrt(sum p (1 - p)) / S."""
    draws, probs = np.asarray(draws, np.float64), np.asarray(probs, np.float64)
    s = draws.shape[0]
    resid = (draws - probs).mean(0)
    se = np.sqrt((probs * (1 - probs)).sum(0)) / s
    return [Check(f"{name}[{i}] | theta", r, 0.0, e, K)
            for i, (r, e) in enumerate(zip(resid, se, strict=True))]


def numpyro_potential_at(model, args, u):
    """NumPyro's potential energy of ``model`` -- the function ``initialize_model`` hands
    to NUTS (with funsor enumeration when the model has enumerated sites) -- at the
    unconstrained point(s) ``u`` (vmapped over a leading axis when ``u`` has one); jitted,
    because NumPyro's initialisation is slow to run eagerly."""

    def potential(u_one):
        return initialize_model(KEY, model, model_args=args).potential_fn(u_one)

    batched = jnp.ndim(next(iter(u.values()))) > 0
    return jax.jit(jax.vmap(potential) if batched else potential)(u)


def report(checks):
    rep = ValidityReport(list(checks))
    print(rep)
    return rep


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def nn_algo():
    return infer.nuts(num_samples=1000, num_warmup=500, num_chains=4)


@pytest.fixture(scope="module")
def nn_post(nn_algo):
    return nn_algo.run(KEY, zoo.normal_normal, jnp.asarray(NN_DATA))


@pytest.fixture(scope="module")
def mix_post():
    algo = infer.nuts(num_samples=1000, num_warmup=400, num_chains=2)
    return algo.run(KEY, mixture, jnp.asarray(MIX_DATA))


@pytest.fixture(scope="module")
def hmm_post():
    algo = infer.nuts(num_samples=1000, num_warmup=400, num_chains=2)
    return algo.run(KEY, hmm, jnp.asarray(HMM_DATA))


# --------------------------------------------------------------------------- the density


def test_numpyro_potential_is_minus_density_log_joint_unconstrained(x64):
    """NumPyro's potential energy (what NUTS samples) equals ``-Density.log_joint_
    unconstrained`` at a point, and both equal the hand-written density with the
    log-Jacobian of the logit transform."""
    data = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    u = {"p": jnp.array(0.37)}
    numpyro_potential = float(numpyro_potential_at(zoo.beta_bernoulli, (data, 2.0, 3.0), u))
    density = float(Density(zoo.beta_bernoulli).log_joint_unconstrained(u, data, 2.0, 3.0))
    p = expit(0.37)
    by_hand = (
        stats.beta.logpdf(p, 2.0, 3.0)
        + stats.bernoulli.logpmf(np.asarray(data), p).sum()
        + np.log(p * (1 - p))
    )
    assert numpyro_potential == pytest.approx(-density, abs=1e-10)
    assert density == pytest.approx(by_hand, abs=1e-10)


def test_potential_sums_out_global_discrete_sites(x64):
    """With automatic enumeration the potential is the marginal ``-log p(w, y)`` (plus the
    Jacobian): each assignment ``z_i`` summed out; it is not the density at one z."""
    u = 0.4
    w = expit(u)
    by_hand = stats.beta.logpdf(w, 2.0, 2.0) + mixture_log_lik(w) + np.log(w * (1 - w))
    potential = numpyro_potential_at(nuts_module.enumerate_discrete(mixture),
                                     (jnp.asarray(MIX_DATA),), {"w": jnp.array(u)})
    assert float(potential) == pytest.approx(-by_hand, abs=1e-8)


def test_potential_sums_out_states_inside_markov(x64):
    """Inside ``ppl.markov`` the states are enumerated too: the potential at mu is
    ``-(log N(mu; 0, 3) + log p(y | mu))`` with the evidence from forward-backward."""
    mus = np.array([0.5, 2.0])
    potentials = numpyro_potential_at(nuts_module.enumerate_discrete(hmm),
                                      (jnp.asarray(HMM_DATA),), {"mu": jnp.asarray(mus)})
    for mu, potential in zip(mus, np.asarray(potentials), strict=True):
        by_hand = (stats.norm.logpdf(mu, 0.0, HMM_PRIOR_SD)
                   + hmm_forward_backward(mu)["log_evidence"])
        assert float(potential) == pytest.approx(-by_hand, abs=1e-8)


# --------------------------------------------------------------------------- continuous


def test_normal_normal_posterior_moments(nn_post):
    exact = zoo.normal_normal_exact(NN_DATA)
    report(moment_checks(nn_post, "mu", exact["mean"], exact["var"])).assert_ok()
    # power: the same checks reject the prior (mean 0, variance 1)
    assert not report(moment_checks(nn_post, "mu", 0.0, 1.0)).ok


def test_result_layout_and_arviz(nn_post):
    post, n, c = nn_post, len(NN_DATA), 4
    assert post.method == "nuts" and post.num_chains == c and post.num_draws == 1000
    assert post.samples["mu"].shape == (c * 1000,)
    assert post.get_samples(group_by_chain=True)["mu"].shape == (c, 1000)
    for stat in ("accept_prob", "diverging", "num_steps", "lp", "energy"):
        assert post.sample_stats[stat].shape == (c * 1000,)
    assert post.sample_stats["diverging"].dtype == jnp.bool_
    assert 0.6 < float(jnp.mean(post.sample_stats["accept_prob"])) <= 1.0
    # pointwise log-likelihood: log N(y_i; mu_s, 1) at every draw
    expected = stats.norm.logpdf(NN_DATA[None, :], np.asarray(post.samples["mu"])[:, None], 1.0)
    np.testing.assert_allclose(post.log_likelihood["y"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(post.observed_data["y"], NN_DATA, rtol=1e-6)

    idata = post.to_arviz()
    assert idata.posterior["mu"].dims == ("chain", "draw")
    assert idata.posterior.sizes["chain"] == c and idata.posterior.sizes["draw"] == 1000
    assert idata.sample_stats["accept_prob"].dims == ("chain", "draw")
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "y_dim_0")
    assert idata.log_likelihood["y"].shape == (c, 1000, n)
    assert idata.observed_data["y"].shape == (n,)
    summary = az.summary(idata, var_names=["mu"])
    assert summary.loc["mu", "r_hat"] < 1.05
    assert np.isfinite(elpd(az.loo(idata)))


def test_same_key_same_answer_and_no_recompilation(nn_algo, nn_post):
    again = nn_algo.run(KEY, zoo.normal_normal, jnp.asarray(NN_DATA))
    np.testing.assert_array_equal(again.samples["mu"], nn_post.samples["mu"])
    other = nn_algo.run(jax.random.PRNGKey(1), zoo.normal_normal, jnp.asarray(NN_DATA))
    assert not np.allclose(other.samples["mu"], nn_post.samples["mu"])
    assert len(nn_algo._cache) == 1  # one lowering (and one jit) for the model


def test_draws_equal_numpyro_nuts(nn_post):
    """ppl adds no transformation of a continuous model: the draws are NumPyro's own NUTS
    draws for the same key and settings (``MCMC.run`` under ``jax.jit``, as ppl runs it)."""

    def numpyro_run(key, data):
        mcmc = MCMC(NumPyroNUTS(zoo.normal_normal), num_warmup=500, num_samples=1000,
                    num_chains=4, chain_method="vectorized", progress_bar=False)
        mcmc.run(key, data)
        return mcmc.get_samples()["mu"]

    theirs = jax.jit(numpyro_run)(KEY, jnp.asarray(NN_DATA))
    np.testing.assert_allclose(nn_post.samples["mu"], theirs, rtol=1e-4, atol=1e-4)


def test_hmc_normal_normal():
    algo = infer.hmc(num_samples=1000, num_warmup=300, num_chains=2, num_steps=4,
                     chain_method="sequential")
    post = algo.run(KEY, zoo.normal_normal, jnp.asarray(NN_DATA))
    assert post.method == "hmc"
    assert np.all(np.asarray(post.sample_stats["num_steps"]) == 4)
    exact = zoo.normal_normal_exact(NN_DATA)
    report(moment_checks(post, "mu", exact["mean"], exact["var"])).assert_ok()


# --------------------------------------------------------------------------- discrete


# slow (keeps the fast suite under 15 minutes): NUTS' fast known answers are normal-normal, the
# flat prior and equality with NumPyro's NUTS
@pytest.mark.slow
def test_mixture_continuous_posterior_matches_quadrature(mix_post):
    exact = mixture_exact()
    assert mix_post.info["discrete_sites"] == ["z"] and mix_post.info["discrete_recovered"]
    report(moment_checks(mix_post, "w", exact["mean"], exact["var"])).assert_ok()
    # power: hard assignments (each point to its nearer component, no marginalisation)
    # give Beta(2 + 7, 2 + 3) for w, which the same checks reject
    hard = stats.beta(2 + int((MIX_DATA > 0).sum()), 2 + int((MIX_DATA < 0).sum()))
    assert not report(moment_checks(mix_post, "w", hard.mean(), hard.var())).ok


def test_mixture_recovered_assignments_match_exact_conditional(mix_post):
    z = np.asarray(mix_post.samples["z"])
    assert z.shape == (mix_post.num_chains * mix_post.num_draws, len(MIX_DATA))
    probs = mixture_conditional(mix_post.samples["w"])
    report(conditional_checks("z", z, probs)).assert_ok()
    # and their marginals match the exact P(z_i = 1 | y), se from the chains' ESS
    exact = mixture_exact()["z"]
    report([ess_check(f"P(z[{i}]=1)", mix_post, z[:, i], exact[i])
            for i in range(len(MIX_DATA)) if 0.01 < exact[i] < 0.99]).assert_ok()
    # power: assignments drawn from the prior given w (ignoring y) are rejected
    rng = np.random.default_rng(0)
    w = np.asarray(mix_post.samples["w"], np.float64)[:, None]
    prior_draws = rng.random(z.shape) < w
    assert not report(conditional_checks("z prior", prior_draws, probs)).ok
    # the log-likelihood is given the recovered assignment
    expected = stats.norm.logpdf(MIX_DATA[None, :], MIX_MEANS[z.astype(int)], 1.0)
    np.testing.assert_allclose(mix_post.log_likelihood["y"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_hmm_with_states_in_markov(hmm_post):
    exact = hmm_exact()
    assert hmm_post.info["discrete_sites"] == ["x"]
    report(moment_checks(hmm_post, "mu", exact["mean"], exact["var"])).assert_ok()
    # recovered paths: each state's residual against the exact smoothing marginal
    # p(x_t = 1 | mu_s, y) from forward-backward at that draw's mu
    # (every 4th draw: forward-backward in numpy is the slow part of this test)
    x = np.asarray(hmm_post.samples["x"])
    assert x.shape == (hmm_post.num_chains * hmm_post.num_draws, len(HMM_DATA))
    mus = np.asarray(hmm_post.samples["mu"], np.float64)[::4]
    probs = np.array([hmm_forward_backward(m)["smoothed"][:, 1] for m in mus])
    report(conditional_checks("x", x[::4], probs)).assert_ok()


def test_complete_draws_without_recovery():
    """``recover_discrete=False`` keeps only the continuous sites and no log-likelihood
    (a pointwise log-likelihood would need the summed-out assignments)."""
    sites = nuts_module.inspect_sites(mixture, (jnp.asarray(MIX_DATA),), {})
    assert sites.continuous == ["w"] and sites.discrete == ["z"]
    draws = {"w": jnp.array([0.3, 0.6, 0.7])}
    samples, loglik = nuts_module.complete_draws(
        KEY, mixture, draws, (jnp.asarray(MIX_DATA),), {}, sites, recover=False)
    assert set(samples) == {"w"} and loglik == {}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda: infer.nuts(num_samples=0), ValueError, "num_samples"),
        (lambda: infer.nuts(100, num_warmup=-1), ValueError, "num_warmup"),
        (lambda: infer.nuts(100, num_chains=0), ValueError, "num_chains"),
        (lambda: infer.nuts(100, chain_method="threads"), ppl.UnknownOptionError,
         "chain_method"),
        (lambda: infer.nuts(100, target_accept_prob=1.5), ValueError, "target_accept_prob"),
        (lambda: infer.hmc(100, num_steps=0), ValueError, "num_steps"),
        (lambda: infer.hmc(100, step_size=-0.1), ValueError, "step_size"),
        (lambda: infer.hmc(0), ValueError, "num_samples"),
    ],
)
def test_bad_options(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_bad_models_and_keys():
    algo = infer.nuts(10, 10)
    with pytest.raises(TypeError, match="key"):
        algo.run(0, zoo.normal_normal, jnp.asarray(NN_DATA))

    def poisson_latent():
        n = ppl.sample("n", dist.Poisson(3.0))
        ppl.observe("y", dist.Normal(n, 1.0), 2.0)

    with pytest.raises(ppl.UnsupportedModelError, match="'n'"):
        algo.run(KEY, poisson_latent)
    with pytest.raises(ppl.UnsupportedModelError, match="exact"):
        algo.run(KEY, zoo.sprinkler)


def test_repr():
    assert "num_samples=5" in repr(infer.nuts(5, 2))
    assert "num_steps=3" in repr(infer.hmc(5, 2, num_steps=3))
    assert numpyro.__version__  # lowered to NumPyro
