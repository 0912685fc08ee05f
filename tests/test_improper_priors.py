"""Improper priors (``dist.ImproperUniform(support, ...)``, Stan's flat and ``ordered``).

NUTS, HMC and SVI never draw from the prior (they start at a point of unconstrained space,
as NumPyro's ``init_to_uniform``), so they run such programs; every method that draws
latent sites from the prior refuses them with an ``UnsupportedModelError`` naming the
site. Tolerances are Monte Carlo standard errors (``sd / sqrt(ESS)``), at a fixed seed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import UnsupportedModelError

#: standard errors allowed between an estimate and its reference
Z = 5.0
PRIOR_SD = 10.0  # the proper Normal factor on the mixture means


def _mixture_data():
    k1, k2 = jax.random.split(jax.random.PRNGKey(42))
    return jnp.concatenate([jax.random.normal(k1, (30,)) - 2.0,
                            jax.random.normal(k2, (30,)) + 2.0])


@ppl.model
def ordered_mixture(ys):
    """Two-component Gaussian mixture with ordered means (labels identified)."""
    mu = ppl.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    ppl.factor("mu_prior", jnp.sum(dist.Normal(0.0, PRIOR_SD).log_prob(mu)))
    mix = dist.MixtureSameFamily(dist.Categorical(jnp.array([0.5, 0.5])), dist.Normal(mu, 1.0))
    with ppl.plate("n", ys.shape[0]):
        ppl.observe("y", mix, ys)


def numpyro_ordered_mixture(ys):
    """The same model in plain NumPyro, run by NumPyro's own MCMC as the reference."""
    mu = numpyro.sample("mu", nd.ImproperUniform(constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", jnp.sum(nd.Normal(0.0, PRIOR_SD).log_prob(mu)))
    mix = nd.MixtureSameFamily(nd.Categorical(jnp.array([0.5, 0.5])), nd.Normal(mu, 1.0))
    with numpyro.plate("n", ys.shape[0]):
        numpyro.sample("y", mix, obs=ys)


def _mean_and_mcse(draws):
    """Per-coordinate mean and Monte Carlo standard error ``sd / sqrt(ESS)`` of one chain."""
    draws = np.asarray(draws)
    ess = effective_sample_size(draws[None])
    return draws.mean(0), draws.std(0) / np.sqrt(ess)


@pytest.mark.slow
def test_nuts_ordered_vector_matches_numpyro():
    ys = _mixture_data()
    post = infer.nuts(num_samples=300, num_warmup=200).run(jax.random.PRNGKey(0),
                                                           ordered_mixture, ys)
    mu = np.asarray(post.samples["mu"])
    assert mu.shape == (300, 2)
    assert np.all(mu[:, 0] < mu[:, 1])

    mcmc = MCMC(NUTS(numpyro_ordered_mixture), num_warmup=200, num_samples=300,
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), ys)  # another key: two independent estimates
    ref = np.asarray(mcmc.get_samples()["mu"])
    assert np.all(ref[:, 0] < ref[:, 1])

    mean, se = _mean_and_mcse(mu)
    ref_mean, ref_se = _mean_and_mcse(ref)
    np.testing.assert_array_less(np.abs(mean - ref_mean), Z * np.sqrt(se**2 + ref_se**2))
    # the components sit near the clusters at -2 and +2 (sanity, not the precise check)
    assert mean[0] < -1.0 < 1.0 < mean[1]


@ppl.model
def several_supports():
    """An improper site of each of several supports, each made proper by a factor (the
    simplex is compact, so its flat prior is proper already)."""
    o = ppl.sample("o", dist.ImproperUniform(constraints.ordered_vector, (), (3,)))
    ppl.factor("o_prior", jnp.sum(dist.Normal(0.0, 1.0).log_prob(o)))
    s = ppl.sample("s", dist.ImproperUniform(constraints.positive, (2,), ()))
    ppl.factor("s_prior", jnp.sum(dist.Exponential(1.0).log_prob(s)))
    t = ppl.sample("t", dist.ImproperUniform(constraints.positive_ordered_vector, (), (3,)))
    ppl.factor("t_prior", jnp.sum(dist.Exponential(1.0).log_prob(t)))
    ppl.sample("w", dist.ImproperUniform(constraints.simplex, (), (3,)))


@pytest.mark.slow
def test_hmc_runs_and_stays_in_every_support():
    post = infer.hmc(num_samples=150, num_warmup=150, num_steps=8).run(
        jax.random.PRNGKey(2), several_supports)
    o, s, t, w = (np.asarray(post.samples[n]) for n in ("o", "s", "t", "w"))
    assert o.shape == (150, 3) and s.shape == (150, 2) and w.shape == (150, 3)
    assert np.all(np.isfinite(o)) and np.all(np.diff(o, axis=-1) > 0)
    assert np.all(s > 0)
    assert np.all(t > 0) and np.all(np.diff(t, axis=-1) > 0)
    assert np.all(w >= 0) and np.allclose(w.sum(-1), 1.0, atol=1e-5)
    assert float(np.mean(post.sample_stats["accept_prob"])) > 0.3


# --------------------------------------------------------------------------- flat prior

SIGMA = 1.0


def _flat_data():
    return 0.7 + SIGMA * jax.random.normal(jax.random.PRNGKey(7), (25,))


@ppl.model
def flat_mean(ys):
    """y_i ~ N(m, SIGMA^2) under the flat prior p(m) = 1: the posterior is exactly
    N(mean(y), SIGMA^2 / n)."""
    m = ppl.sample("m", dist.ImproperUniform(constraints.real, (), ()))
    with ppl.plate("n", ys.shape[0]):
        ppl.observe("y", dist.Normal(m, SIGMA), ys)


def _exact(ys):
    return float(jnp.mean(ys)), SIGMA / np.sqrt(ys.shape[0])


def test_nuts_flat_prior_is_exact_normal():
    ys = _flat_data()
    exact_mean, exact_sd = _exact(ys)
    post = infer.nuts(num_samples=1000, num_warmup=300).run(jax.random.PRNGKey(3), flat_mean, ys)
    m = np.asarray(post.samples["m"])
    mean, se = _mean_and_mcse(m)
    assert abs(mean - exact_mean) < Z * se
    # the sd estimate's standard error is about sd / sqrt(2 ESS) for a Gaussian
    ess = float(effective_sample_size(m[None, :]))
    assert abs(m.std() - exact_sd) < Z * exact_sd / np.sqrt(2 * ess)


def test_svi_flat_prior_is_exact_normal():
    """AutoNormal contains the exact (Gaussian) posterior, so at the optimum q is exact:
    the fitted loc and scale must equal the posterior's up to the optimiser's residual,
    and the draws from q differ from the exact moments by Monte Carlo error only."""
    import optax

    ys = _flat_data()
    exact_mean, exact_sd = _exact(ys)
    num_samples = 2000
    schedule = optax.exponential_decay(0.05, transition_steps=1500, decay_rate=0.01)
    post = infer.svi(num_steps=1500, optimizer=optax.adam(schedule), num_samples=num_samples,
                     num_particles=4).run(jax.random.PRNGKey(4), flat_mean, ys)
    params = post.info["params"]
    draws = np.asarray(post.samples["m"])
    # the draws are iid from q: MCSE of the mean is sd / sqrt(S), of the sd sd / sqrt(2 S)
    assert abs(draws.mean() - exact_mean) < Z * exact_sd / np.sqrt(num_samples)
    assert abs(draws.std() - exact_sd) < Z * exact_sd / np.sqrt(2 * num_samples)
    # the fitted parameters themselves, to the same (here looser) standard
    assert abs(float(params["m_auto_loc"]) - exact_mean) < Z * exact_sd / np.sqrt(num_samples)
    assert abs(float(params["m_auto_scale"]) - exact_sd) < Z * exact_sd / np.sqrt(2 * num_samples)


# --------------------------------------------------------------------------- refusals


@ppl.model
def flat_walk(ys):
    """A markov program whose global site ``scale`` has an improper prior."""
    scale = ppl.sample("scale", dist.ImproperUniform(constraints.positive, (), ()))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(x, scale))
        ppl.observe("y", dist.Normal(x, 1.0), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


@pytest.mark.parametrize(
    "method",
    [
        infer.importance(num_samples=50),
        infer.mh(num_samples=20),
        infer.mh(num_samples=20, proposal="random_walk"),
        infer.tempered_smc(num_particles=50),
    ],
    ids=["importance", "mh", "mh_random_walk", "tempered_smc"],
)
def test_prior_sampling_methods_refuse_improper_site(method):
    with pytest.raises(UnsupportedModelError, match=r"sample\('m'\): ImproperUniform\(real\)"):
        method.run(jax.random.PRNGKey(0), flat_mean, _flat_data())


def test_tempered_smc_names_its_reference_distribution():
    with pytest.raises(UnsupportedModelError, match="tempered_smc .*'m'.* proper prior"):
        infer.tempered_smc(num_particles=50).run(jax.random.PRNGKey(0), flat_mean, _flat_data())


def test_smc_refuses_improper_global_site():
    ys = jnp.zeros(5)
    with pytest.raises(UnsupportedModelError,
                       match=r"sample\('scale'\): ImproperUniform\(positive\).*infer.nuts"):
        infer.smc(num_particles=50).run(jax.random.PRNGKey(0), flat_walk, ys)
