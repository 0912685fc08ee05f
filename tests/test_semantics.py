"""Each representation against an exact answer (the validity criterion, executable)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.semantics import (
    Density,
    Enumerated,
    Population,
    Sampler,
    Sequential,
    Traced,
    Weighted,
    preserves,
)

import ppl
from ppl import dist
from ppl import models as zoo

KEY = jax.random.PRNGKey(20261128)
BB_DATA = jnp.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 0], dtype=jnp.float32)
NN_DATA = jnp.array([0.8, 1.9, 1.2, 0.4, 1.5], dtype=jnp.float32)


def moments(site):
    return {"mean": lambda s: s[site], "second_moment": lambda s: s[site] ** 2}


def exact_moments(exact):
    return {
        "mean": exact["mean"],
        "second_moment": exact["var"] + exact["mean"] ** 2,
        "log_evidence": exact["log_evidence"],
    }


@pytest.mark.parametrize(
    "model, data, exact, site",
    [
        (zoo.beta_bernoulli, BB_DATA, zoo.beta_bernoulli_exact(np.asarray(BB_DATA)), "p"),
        (zoo.normal_normal, NN_DATA, zoo.normal_normal_exact(np.asarray(NN_DATA)), "mu"),
    ],
    ids=["beta_bernoulli", "normal_normal"],
)
def test_population_estimates_posterior_and_evidence(model, data, exact, site):
    population = jax.jit(lambda k: Population(model, 2000)(k, data))
    report = preserves(population, exact_moments(exact), moments(site), KEY, num_replicates=20)
    assert report.ok


def test_weighted_with_exact_posterior_proposal_has_constant_weight(x64):
    """With q = the exact posterior, w = p(x, y) / q(x) = p(y) for every draw."""
    exact = zoo.normal_normal_exact(np.asarray(NN_DATA, dtype=np.float64))

    def posterior(data):
        ppl.sample("mu", dist.Normal(exact["mean"], np.sqrt(exact["var"])))

    draws = jax.vmap(lambda k: Weighted(zoo.normal_normal, posterior)(k, NN_DATA))(
        jax.random.split(KEY, 50)
    )
    np.testing.assert_allclose(draws.log_weight, exact["log_evidence"], rtol=0, atol=1e-9)


def test_validity_check_detects_a_wrong_measure():
    """A test that cannot fail is a defect: a population of the wrong model must fail."""

    def wrong_model(data):
        p = ppl.sample("p", dist.Beta(2.0, 1.0))  # not the prior the exact answer is for
        with ppl.plate("data", data.shape[0]):
            ppl.observe("y", dist.Bernoulli(p), data)

    exact = exact_moments(zoo.beta_bernoulli_exact(np.asarray(BB_DATA)))
    population = jax.jit(lambda k: Population(wrong_model, 2000)(k, BB_DATA))
    report = preserves(population, exact, moments("p"), KEY, num_replicates=20, check=False)
    assert not report.ok
    with pytest.raises(AssertionError, match="not preserved"):
        report.assert_ok()


def test_sampler_draws_the_prior():
    model = zoo.beta_bernoulli
    draw = jax.jit(jax.vmap(lambda k: Sampler(model)(k, BB_DATA).choices))
    prior = {"mean": 0.5, "second_moment": 1 / 12 + 0.25}  # Beta(1, 1)
    preserves(lambda k: (draw(jax.random.split(k, 4000)), None, None), prior, moments("p"), KEY,
              se="iid")


def test_enumerated_matches_brute_force_on_sprinkler(x64):
    exact = zoo.sprinkler_exact(wet=1)
    enumerated = Enumerated(zoo.sprinkler)
    log_z = jax.jit(lambda: enumerated.log_evidence(wet=1))()
    np.testing.assert_allclose(log_z, exact["log_evidence"], atol=1e-6)
    marginals = jax.jit(lambda: enumerated.marginals(wet=1))()
    for site, p_one in exact["marginals"].items():
        np.testing.assert_allclose(marginals[site][1], p_one, atol=1e-6)
        np.testing.assert_allclose(marginals[site].sum(), 1.0, atol=1e-6)


def test_enumerated_draws_follow_the_exact_marginals():
    exact = zoo.sprinkler_exact(wet=1)
    draws = jax.jit(lambda k: Enumerated(zoo.sprinkler).sample(k, 4000, wet=1))
    tests = {site: (lambda s, site=site: s[site]) for site in exact["marginals"]}
    preserves(lambda k: (draws(k), None, None), exact["marginals"], tests, KEY, se="iid")


def test_enumerated_matches_forward_backward_on_hmm(x64):
    ys = zoo.simulate_discrete_hmm(jax.random.PRNGKey(3), 25)[1]
    exact = zoo.discrete_hmm_exact(ys)
    enumerated = Enumerated(zoo.discrete_hmm)
    log_z = jax.jit(enumerated.log_evidence)(ys)
    np.testing.assert_allclose(log_z, exact["log_evidence"], atol=1e-6)
    marginals = jax.jit(enumerated.marginals)(ys)
    np.testing.assert_allclose(marginals["x"], exact["smoothed"], atol=1e-6)


def test_sequential_reproduces_kalman_evidence(x64):
    """Besag's identity, deterministic: for any path x, log p(y) = log p(x, y) - log p(x | y),
    with log p(x, y) stepped through Sequential and log p(x | y) the exact RTS density."""
    params = dict(rho=0.9, sigma_x=1.0, sigma_y=0.5)
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), 40, **params)
    ys = jnp.asarray(ys, dtype=jnp.float64)
    exact = zoo.lgssm_1d_exact(ys, **params)
    ssm = Sequential(zoo.lgssm_1d).state_space(KEY, ys, **params)
    for shift in (0.0, 0.7):
        path = jnp.asarray(exact["smoothed_means"]) + shift * jnp.sin(jnp.arange(40.0))
        log_joint = ssm.log_joint({"x": path})
        log_smooth = zoo.lgssm_1d_log_smoothing_density(path, ys, **params)
        np.testing.assert_allclose(log_joint - log_smooth, exact["log_evidence"], atol=1e-8)


def test_sequential_reproduces_kalman_evidence_2d(x64):
    _, ys = zoo.simulate_lgssm_2d(jax.random.PRNGKey(2), 30)
    ys = jnp.asarray(ys, dtype=jnp.float64)
    exact = zoo.lgssm_2d_exact(ys)
    ssm = Sequential(zoo.lgssm_2d).state_space(KEY, ys)
    path = jnp.asarray(exact["smoothed_means"]) + 0.3
    log_joint = ssm.log_joint({"x": path})
    log_smooth = zoo.lgssm_2d_log_smoothing_density(path, ys)
    np.testing.assert_allclose(log_joint - log_smooth, exact["log_evidence"], atol=1e-8)


def test_sequential_step_draws_the_transition():
    """One step from a fixed carry draws x ~ N(rho * carry, sigma_x) and weights by g."""
    ys = jnp.array([0.3, -0.2, 0.5])
    ssm = Sequential(zoo.lgssm_1d).state_space(KEY, ys, rho=0.9, sigma_x=1.0, sigma_y=0.5)
    steps = jax.jit(jax.vmap(lambda k: ssm.step(k, 1, jnp.asarray(2.0))))(
        jax.random.split(KEY, 4000)
    )
    x = steps.values["x"]
    preserves(
        lambda k: ({"x": x}, None, None),
        {"mean": 1.8, "second_moment": 1.0 + 1.8**2},
        moments("x"), KEY, se="iid",
    )
    expected_g = dist.Normal(x, 0.5).log_prob(ys[1])
    np.testing.assert_allclose(steps.log_weight, expected_g, rtol=1e-6)
    np.testing.assert_allclose(steps.log_transition, dist.Normal(1.8, 1.0).log_prob(x), rtol=1e-6)


def test_log_joint_agrees_across_traced_density_and_sequential(x64):
    ys = jnp.array([0.3, -0.2, 0.5, 1.1])
    model = zoo.lgssm_1d_unknown_rho
    trace = Traced(model)(KEY, ys)
    latents = trace.select("latent")
    density = Density(model).log_joint(latents, ys)
    ssm = Sequential(model).state_space(KEY, ys, params={"rho": latents["rho"]})
    np.testing.assert_allclose(density, trace.log_joint, rtol=1e-10)
    np.testing.assert_allclose(ssm.log_joint({"x": latents["x"]}), trace.log_joint, rtol=1e-10)


def test_traced_replay_reproduces_the_log_density():
    trace = Traced(zoo.normal_normal)(KEY, NN_DATA)
    replayed = Traced(zoo.normal_normal).replay(trace, NN_DATA)
    for name in trace.log_probs:
        np.testing.assert_array_equal(replayed.log_probs[name], trace.log_probs[name])
    np.testing.assert_array_equal(replayed.values["mu"], trace.values["mu"])


# slow (keeps the fast suite under 15 minutes): the mh tests check regeneration moves on conjugate
# models
@pytest.mark.slow
def test_regeneration_mh_preserves_the_posterior():
    """The MH kernel built from Traced.regenerate leaves the exact posterior invariant:
    start 4000 independent chains at exact posterior draws, apply 5 moves, compare."""
    exact = zoo.beta_bernoulli_exact(np.asarray(BB_DATA))
    a, b = 1 + float(BB_DATA.sum()), 1 + float((1 - BB_DATA).sum())
    traced = Traced(zoo.beta_bernoulli)

    def chain(key):
        k0, k1 = jax.random.split(key)
        p0 = dist.Beta(a, b).sample(k0)
        trace = Density(zoo.beta_bernoulli).trace({"p": p0}, BB_DATA)

        def move(trace, k):
            kp, ku = jax.random.split(k)
            proposal, log_ratio = traced.regenerate(kp, trace, "p", BB_DATA)
            accept = jnp.log(jax.random.uniform(ku)) < log_ratio
            return jax.tree.map(lambda n, o: jnp.where(accept, n, o), proposal, trace), accept

        trace, accepted = jax.lax.scan(move, trace, jax.random.split(k1, 5))
        return trace.values["p"], accepted.mean()

    p, acceptance = jax.jit(jax.vmap(chain))(jax.random.split(KEY, 4000))
    assert 0.05 < float(acceptance.mean()) < 0.95
    target = {"mean": exact["mean"], "second_moment": exact["var"] + exact["mean"] ** 2}
    preserves(lambda k: ({"p": p}, None, None), target, moments("p"), KEY, se="iid")


def test_regenerate_log_ratio_is_the_likelihood_ratio(x64):
    trace = Traced(zoo.normal_normal)(KEY, NN_DATA)
    new, log_ratio = Traced(zoo.normal_normal).regenerate(KEY, trace, ["mu"], NN_DATA)
    like = lambda mu: dist.Normal(mu, 1.0).log_prob(NN_DATA).sum()
    np.testing.assert_allclose(log_ratio, like(new.values["mu"]) - like(trace.values["mu"]),
                               rtol=1e-10)


def test_density_unconstrained_includes_the_jacobian(x64):
    density = Density(zoo.beta_bernoulli)
    u = {"p": jnp.asarray(0.4)}
    p = jax.nn.sigmoid(u["p"])
    constrained = density.to_constrained(u, BB_DATA)
    np.testing.assert_allclose(constrained["p"], p, rtol=1e-12)
    expected = density.log_joint({"p": p}, BB_DATA) + jnp.log(p * (1 - p))
    np.testing.assert_allclose(density.log_joint_unconstrained(u, BB_DATA), expected, rtol=1e-10)
    np.testing.assert_allclose(density.to_unconstrained(constrained, BB_DATA)["p"], 0.4,
                               rtol=1e-10)
