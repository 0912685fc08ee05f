"""Exact enumeration: ``factor`` inside a ``markov`` step, ``deterministic`` sites in the
samples, and the named error for distribution parameters off the simplex."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from ppl.semantics.enumerated import Enumerated
from scipy.special import logsumexp

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.primitives import check_distribution_arguments

PI = jnp.array([0.6, 0.4])
T = jnp.array([[0.9, 0.1], [0.25, 0.75]])
MU = jnp.array([-0.5, 1.0])
YS = jnp.array([0.1, 1.2, 0.9, -0.3, 1.7])
KEY = jax.random.PRNGKey(0)


def hmm(use_factor):
    """A 2-state HMM; the emission is an ``observe`` or the same log density as a factor.
    Its deterministic sites (one global, one per step) add nothing to the weight."""

    def model(ys):
        z0 = ppl.sample("z0", dist.Categorical(probs=PI))
        ppl.deterministic("z0_plus_one", z0 + 1)

        def step(z, y):
            z = ppl.sample("z", dist.Categorical(probs=T[z]))
            mean = ppl.deterministic("mean", MU[z])
            if use_factor:
                ppl.factor("lik", dist.Normal(mean, 1.0).log_prob(y))
            else:
                ppl.observe("y", dist.Normal(mean, 1.0), y)
            return z

        return ppl.markov(step, init=z0, xs=ys)

    return model


def forward_backward(ys):
    """Hand-written forward-backward: log p(ys), P(z0 | ys) and P(z_t | ys), t = 1..T."""
    log_t = np.log(np.asarray(T, np.float64))
    lik = np.asarray(dist.Normal(MU[None, :], 1.0).log_prob(ys[:, None]), np.float64)
    alpha = [np.log(np.asarray(PI, np.float64))]  # filtering messages over z_0 .. z_T
    for t in range(len(ys)):
        alpha.append(logsumexp(alpha[-1][:, None] + log_t, axis=0) + lik[t])
    beta = [np.zeros(2)]
    for t in reversed(range(len(ys))):
        beta.insert(0, logsumexp(log_t + lik[t][None, :] + beta[0][None, :], axis=1))
    log_z = float(logsumexp(alpha[-1]))
    post = np.exp(np.array(alpha) + np.array(beta) - log_z)
    return log_z, post[0], post[1:]


def enumerate_exactly(model, *args):
    """``(log evidence, marginals)`` of ``model`` by enumeration (no posterior draws)."""
    enumerated = Enumerated(model)
    return jax.jit(lambda: (enumerated.log_evidence(*args), enumerated.marginals(*args)))()


@pytest.fixture(scope="module")
def factor_hmm_run():
    return infer.exact(num_samples=100).run(KEY, hmm(use_factor=True), YS)


def test_factor_in_markov_equals_observe_under_exact(factor_hmm_run):
    log_z, marginals = enumerate_exactly(hmm(use_factor=False), YS)
    np.testing.assert_allclose(factor_hmm_run.log_evidence, log_z, rtol=1e-6)
    for site in ("z0", "z"):
        np.testing.assert_allclose(factor_hmm_run.info["marginals"][site], marginals[site],
                                   atol=1e-6)


def test_factor_in_markov_matches_forward_backward(factor_hmm_run):
    log_z, post0, post = forward_backward(YS)
    np.testing.assert_allclose(factor_hmm_run.log_evidence, log_z, rtol=1e-5)
    np.testing.assert_allclose(factor_hmm_run.info["marginals"]["z0"], post0, atol=1e-5)
    np.testing.assert_allclose(factor_hmm_run.info["marginals"]["z"], post, atol=1e-5)
    assert factor_hmm_run.samples["z"].shape == (100, len(YS))


def test_factor_in_markov_step_under_a_plate():
    ys = jnp.array([[0.1, 1.2, 0.3], [0.9, -0.3, 2.0]])

    def model(use_factor):
        def m(ys):
            z0 = ppl.sample("z0", dist.Categorical(probs=PI))

            def step(z, y):
                z = ppl.sample("z", dist.Categorical(probs=T[z]))
                with ppl.plate("obs", 3):
                    if use_factor:
                        ppl.factor("lik", dist.Normal(MU[z], 1.0).log_prob(y))
                    else:
                        ppl.observe("y", dist.Normal(MU[z], 1.0), y)
                return z

            return ppl.markov(step, init=z0, xs=ys)

        return m

    log_z_factor = jax.jit(lambda: Enumerated(model(True)).log_evidence(ys))()
    log_z_observe = jax.jit(lambda: Enumerated(model(False)).log_evidence(ys))()
    np.testing.assert_allclose(log_z_factor, log_z_observe, rtol=1e-6)


def test_numpyro_factor_in_markov_step():
    def model(ys):
        z0 = ppl.sample("z0", dist.Categorical(probs=PI))

        def step(z, y):
            z = ppl.sample("z", dist.Categorical(probs=T[z]))
            numpyro.factor("lik", dist.Normal(MU[z], 1.0).log_prob(y))
            return z

        return ppl.markov(step, init=z0, xs=ys)

    log_z = jax.jit(lambda: Enumerated(model).log_evidence(YS))()
    np.testing.assert_allclose(log_z, forward_backward(YS)[0], rtol=1e-5)


def test_exact_samples_include_deterministic_sites(factor_hmm_run):
    samples = factor_hmm_run.samples
    assert {"z0", "z", "z0_plus_one", "mean"} <= set(samples)
    np.testing.assert_array_equal(samples["z0_plus_one"], samples["z0"] + 1)
    assert samples["mean"].shape == (100, len(YS))
    np.testing.assert_array_equal(samples["mean"], MU[samples["z"]])
    # the draws are exact: their frequencies match the marginals (100 draws, binomial s.e.)
    freq = np.mean(np.asarray(samples["z"]) == 1, axis=0)
    p = np.asarray(factor_hmm_run.info["marginals"]["z"])[:, 1]
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 100) + 1e-6)


def test_exact_samples_include_deterministic_sites_without_markov():
    def model(y):
        c = ppl.sample("c", dist.Categorical(probs=jnp.array([0.2, 0.3, 0.5])))
        ppl.deterministic("square", c**2)
        ppl.observe("y", dist.Normal(c, 1.0), y)

    samples = infer.exact(num_samples=30).run(KEY, model, 1.0).samples
    np.testing.assert_array_equal(samples["square"], samples["c"] ** 2)


def unnormalised_model():
    z = ppl.sample("z", dist.Categorical(probs=jnp.array([0.5, 0.8])))
    ppl.observe("y", dist.Normal(z, 1.0), 0.0)


@pytest.mark.parametrize("method", [infer.exact(num_samples=2), infer.importance(4)],
                         ids=["exact", "importance"])
def test_unnormalised_probs_raise_named_error_at_run(method):
    with pytest.raises(ppl.InvalidDistributionError, match=r"site 'z'.*'probs'.*sums to 1\.3"):
        method.run(KEY, unnormalised_model)
    assert issubclass(ppl.InvalidDistributionError, ppl.PPLError)


@pytest.mark.parametrize("method", [infer.exact(num_samples=2), infer.importance(4)],
                         ids=["exact", "importance"])
def test_unnormalised_probs_in_a_markov_step_and_as_data(method):
    bad_t = jnp.array([[0.9, 0.3], [0.6, 0.6]])  # every row sums to more than 1

    def step_model(ys):
        z0 = ppl.sample("z0", dist.Categorical(probs=PI))

        def step(z, y):
            z = ppl.sample("z", dist.Categorical(probs=bad_t[z]))
            ppl.observe("y", dist.Normal(MU[z], 1.0), y)
            return z

        return ppl.markov(step, init=z0, xs=ys)

    with pytest.raises(ppl.InvalidDistributionError, match="site 'z'"):
        method.run(KEY, step_model, YS[:3])

    def observed_model(probs, k):
        ppl.observe("k", dist.Categorical(probs=probs), k)

    with pytest.raises(ppl.InvalidDistributionError, match="site 'k'"):
        infer.importance(4).run(KEY, observed_model, jnp.array([0.1, 0.2]), 1)


def test_normalised_probs_do_not_raise():
    x = jax.random.uniform(jax.random.PRNGKey(1), (1000,))

    def model():
        z = ppl.sample("z", dist.Categorical(probs=jnp.array([0.2, 0.8])))
        ppl.sample("w", dist.Categorical(probs=x / x.sum()))  # float32 normalised, K = 1000
        ppl.sample("m", dist.Multinomial(5, probs=jnp.ones(7) / 7))
        ppl.observe("y", dist.Normal(z, 1.0), 0.0)

    post = infer.importance(4).run(KEY, model)
    assert np.isfinite(post.log_evidence)
    # exact with normalised probs: test_exact_samples_include_deterministic_sites_*


def test_check_distribution_arguments_directly():
    with pytest.raises(ppl.InvalidDistributionError, match="negative entry"):
        check_distribution_arguments(
            "p", dist.Categorical(probs=np.array([1.2, -0.2]), validate_args=False)
        )
    batched = dist.Categorical(probs=np.array([[0.5, 0.5], [0.5, 0.6]]), validate_args=False)
    with pytest.raises(ppl.InvalidDistributionError, match=r"batch index \(1,\)"):
        check_distribution_arguments("p", batched.expand([3, 2]).to_event(1))
    check_distribution_arguments("ok", dist.Categorical(logits=jnp.array([3.0, 5.0])))
    check_distribution_arguments("ok", dist.Normal(0.0, 1.0))
    # under tracing the values are unknown: no check, no error
    jax.jit(lambda p: check_distribution_arguments("p", dist.Categorical(probs=p)) or 0.0)(
        jnp.array([0.5, 0.8])
    )


def test_the_eager_check_runs_once_per_argument_structure():
    calls = []

    def model(y):
        calls.append(1)
        z = ppl.sample("z", dist.Categorical(probs=jnp.array([0.2, 0.8])))
        ppl.observe("y", dist.Normal(z, 1.0), y)

    algo = infer.importance(4)
    algo.run(KEY, model, jnp.zeros(()))
    first = len(calls)  # the eager check and the trace of the compiled run
    algo.run(KEY, model, jnp.ones(()))
    assert len(calls) == first
