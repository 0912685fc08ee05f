"""The first two combinators, importance and exact, against exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
from arviz_helpers import az
from ppl.semantics import preserves

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo

KEY = jax.random.PRNGKey(7)
BB_DATA = jnp.array([1, 1, 0, 1, 1, 1, 0, 1], dtype=jnp.float32)


def test_importance_recovers_beta_bernoulli():
    exact = zoo.beta_bernoulli_exact(np.asarray(BB_DATA))
    algo = infer.importance(num_samples=3000)
    preserves(
        lambda k: algo.run(k, zoo.beta_bernoulli, BB_DATA),
        {"mean": exact["mean"], "var_proxy": exact["var"] + exact["mean"] ** 2,
         "log_evidence": exact["log_evidence"]},
        {"mean": lambda s: s["p"], "var_proxy": lambda s: s["p"] ** 2},
        KEY, num_replicates=16,
    )


def test_importance_with_a_proposal_program():
    data = jnp.array([0.8, 1.9, 1.2, 0.4, 1.5])
    exact = zoo.normal_normal_exact(np.asarray(data))

    def proposal(data):  # a deliberately offset, wider proposal
        ppl.sample("mu", dist.Normal(0.5, 1.0))

    algo = infer.importance(num_samples=2000, proposal=proposal)
    post = algo.run(KEY, zoo.normal_normal, data)
    assert post.log_weights.shape == (2000,)
    preserves(
        lambda k: algo.run(k, zoo.normal_normal, data),
        {"mean": exact["mean"], "log_evidence": exact["log_evidence"]},
        {"mean": lambda s: s["mu"]}, KEY, num_replicates=16,
    )


def test_importance_posterior_converts_to_arviz():
    xs, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(0), 12)
    post = infer.importance(num_samples=64).run(KEY, zoo.lgssm_1d, jnp.asarray(ys))
    idata = post.to_arviz(weights="sample_stats")
    assert idata.posterior["x"].shape == (1, 64, 12)
    assert idata.log_likelihood["y"].shape == (1, 64, 12)
    assert idata.observed_data["y"].shape == (12,)
    assert idata.sample_stats["log_weight"].shape == (1, 64)
    assert post.info["ess"].shape == (1,)  # per step, as SMC's: importance is one step
    np.testing.assert_allclose(float(post.info["ess"][0]), post.ess, rtol=1e-4)
    resampled = post.to_arviz(weights="resample", key=KEY)
    assert "log_weight" not in resampled.sample_stats
    assert az.summary(resampled, var_names=["x"]).shape[0] == 12


def test_exact_combinator_on_sprinkler(x64):
    exact = zoo.sprinkler_exact(wet=1)
    post = infer.exact(num_samples=3000).run(KEY, zoo.sprinkler, wet=1)
    np.testing.assert_allclose(post.log_evidence, exact["log_evidence"], atol=1e-6)
    for site, p_one in exact["marginals"].items():
        np.testing.assert_allclose(post.info["marginals"][site][1], p_one, atol=1e-6)
    tests = {site: (lambda s, site=site: s[site]) for site in exact["marginals"]}
    preserves(lambda k: post, exact["marginals"], tests, KEY, se="iid")
    assert set(post.to_arviz().posterior.data_vars) == set(exact["marginals"])


def test_exact_combinator_on_hmm(x64):
    ys = zoo.simulate_discrete_hmm(jax.random.PRNGKey(5), 12)[1]
    exact = zoo.discrete_hmm_exact(ys)
    post = infer.exact(num_samples=3000).run(KEY, zoo.discrete_hmm, ys)
    np.testing.assert_allclose(post.log_evidence, exact["log_evidence"], atol=1e-6)
    np.testing.assert_allclose(post.info["marginals"]["x"], exact["smoothed"], atol=1e-6)
    # joint draws: single-time and pairwise frequencies against forward-backward
    tests, target = {}, {}
    for t in (0, 5, 11):
        for k in range(3):
            tests[f"x{t}={k}"] = lambda s, t=t, k=k: s["x"][:, t] == k
            target[f"x{t}={k}"] = exact["smoothed"][t, k]
    for t in (2, 8):
        for a, b in ((0, 0), (1, 2), (2, 2)):
            tests[f"x{t},{t + 1}={a},{b}"] = (
                lambda s, t=t, a=a, b=b: (s["x"][:, t] == a) & (s["x"][:, t + 1] == b)
            )
            target[f"x{t},{t + 1}={a},{b}"] = exact["pairwise"][t, a, b]
    preserves(lambda k: post, target, tests, KEY, se="iid")
