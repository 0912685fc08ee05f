"""Trace MH (inference/trace_mh.py) against exact answers.

Two kinds of check, each with a tolerance from the Monte Carlo standard error
(:func:`ppl.semantics.validity.preserves`, ``k = 4``):

* kernels (building blocks): an MH kernel is valid when it leaves the posterior invariant.
  Start ``C = 4000`` independent chains at *exact* posterior draws, apply the kernel 5
  times; the draws are still i.i.d. from the posterior, so the mean of f over chains has
  the i.i.d. standard error ``sd(f) / sqrt(C)`` (``se="iid"``). Posterior mean and
  variance (f = x and f = (x - m)^2, whose expectation is the variance) are checked;
  a kernel that does not preserve the posterior (accept-always; a proposal program
  without its Hastings correction) drifts away from it and is caught.
* the whole algorithm (``infer.mh(...).run``): chains start from the prior, so burn-in and
  autocorrelation matter. The standard error is the spread of R = 16 independent
  replicates (each 4 chains), which accounts for both: no ESS estimate is needed.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.semantics import validity
from ppl.semantics.density import Density
from ppl.semantics.trace import LATENT, record
from ppl.semantics.traced import Traced

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo
from ppl.errors import UnknownOptionError, UnsupportedModelError

mh_module = importlib.import_module("ppl.inference.trace_mh")

KEY = jax.random.PRNGKey(20261128)
NUM_CHAINS = 4000  # independent chains started at exact posterior draws
NUM_MOVES = 5

BB_DATA = jnp.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0], dtype=jnp.float32)
NN_DATA = jnp.array([1.3, 0.4, 2.1, 1.7, 0.9, 1.5], dtype=jnp.float32)


def moments(site, mean):
    """Test functions for the posterior mean and variance of a scalar site."""
    return {
        "mean": lambda s: s[site],
        "var": lambda s: (s[site] - mean) ** 2,
    }


def exact_moments(exact):
    return {"mean": exact["mean"], "var": exact["var"]}


def normal_posterior_draws(key, exact, n=NUM_CHAINS):
    return {"mu": exact["mean"] + np.sqrt(exact["var"]) * jax.random.normal(key, (n,))}


def stationarity_run(step, model, args, values, key, num_moves=NUM_MOVES):
    """Apply ``step(key, trace) -> MHStep`` ``num_moves`` times to chains started at the
    latent ``values`` (leading chain axis); one jit of a vmap over chains."""

    @jax.jit
    def run(key, values):
        def chain(k, v):
            trace = Density(model).trace(v, *args)

            def body(tr, kk):
                result = step(kk, tr)
                return result.trace, result.accepted

            trace, accepted = jax.lax.scan(body, trace, jax.random.split(k, num_moves))
            return trace.select(LATENT), accepted.mean()

        n = jax.tree.leaves(values)[0].shape[0]
        return jax.vmap(chain)(jax.random.split(key, n), values)

    return run(key, values)


def check_stationary(step, model, args, values, exact, tests, key=KEY):
    samples, accepted = stationarity_run(step, model, args, values, key)
    report = validity.preserves(
        lambda k: (samples, None, None), exact, tests, key, se="iid", check=False
    )
    return report, float(np.mean(accepted))


# --------------------------------------------------------------------------- kernels


def asymmetric_proposal(current, data):
    """An autoregressive proposal towards 1.5: q(mu' | mu) = N(0.5 mu + 0.75, 0.4), not
    symmetric, so the Hastings correction matters."""
    ppl.sample("mu", dist.Normal(0.5 * current["mu"] + 0.75, 0.4))


def nn_kernel_steps():
    model, args = zoo.normal_normal, (NN_DATA,)
    return {
        "prior": lambda k, tr: mh_module.single_site_step(k, tr, args, {}, model),
        "random_walk": lambda k, tr: mh_module.random_walk_step(k, tr, args, {}, model, 0.5),
        "program": lambda k, tr: mh_module.program_step(
            k, tr, args, {}, model, asymmetric_proposal
        ),
    }


@pytest.mark.parametrize("kernel", ["prior", "random_walk", "program"])
def test_kernel_preserves_normal_normal(kernel):
    """Each kernel, from exact posterior draws, keeps the posterior (mean, variance)."""
    exact = zoo.normal_normal_exact(NN_DATA)
    values = normal_posterior_draws(jax.random.PRNGKey(1), exact)
    report, rate = check_stationary(
        nn_kernel_steps()[kernel], zoo.normal_normal, (NN_DATA,), values,
        exact_moments(exact), moments("mu", exact["mean"]),
    )
    print(f"\n{kernel}: acceptance {rate:.2f}\n{report}")
    assert 0.05 < rate < 1.0  # the kernel really moves (and really rejects)
    report.assert_ok()


def test_broken_kernels_are_detected():
    """Two invalid kernels fail the same check: accept-always (regenerating mu from the
    prior and never rejecting: the chain forgets the data) and the asymmetric proposal
    program without the Hastings correction log q(x|x') - log q(x'|x)."""
    model, args = zoo.normal_normal, (NN_DATA,)
    exact = zoo.normal_normal_exact(NN_DATA)
    values = normal_posterior_draws(jax.random.PRNGKey(1), exact)

    def accept_always(key, trace):
        proposed, _ = Traced(model).regenerate(key, trace, ("mu",), *args)
        return mh_module.MHStep(proposed, jnp.asarray(True), jnp.ones(()))

    def no_hastings(key, trace):
        k_prop, k_accept = jax.random.split(key)
        _, forward, _ = record(asymmetric_proposal, k_prop, (trace.select(LATENT), *args))
        proposed = Density(model).trace(forward.select(LATENT), *args)
        log_alpha = proposed.log_joint - trace.log_joint  # missing q terms
        return mh_module.metropolis_hastings(k_accept, trace, proposed, log_alpha)

    for name, step in (("accept-always", accept_always), ("no Hastings", no_hastings)):
        report, _ = check_stationary(
            step, model, args, values, exact_moments(exact), moments("mu", exact["mean"])
        )
        print(f"\n{name} (must fail)\n{report}")
        assert not report.ok, name


# slow (keeps the fast suite under 15 minutes): the sprinkler's marginals under mh stay fast
@pytest.mark.slow
def test_single_site_kernel_discrete_sprinkler():
    """Single-site regeneration on the binary sprinkler network, from exact joint draws,
    keeps the three posterior marginals."""
    exact = zoo.sprinkler_exact(1)
    joint = jnp.asarray(exact["joint"].reshape(-1), dtype=jnp.float32)
    states = jax.random.categorical(jax.random.PRNGKey(2), jnp.log(joint), shape=(NUM_CHAINS,))
    c, s, r = states // 4, (states // 2) % 2, states % 2
    values = {"cloudy": c, "sprinkler": s, "rain": r}
    step = lambda k, tr: mh_module.single_site_step(k, tr, (1,), {}, zoo.sprinkler)  # noqa: E731
    tests = {n: (lambda smp, n=n: smp[n]) for n in zoo.SPRINKLER_SITES}
    report, rate = check_stationary(
        step, zoo.sprinkler, (1,), values, exact["marginals"], tests
    )
    print(f"\nsprinkler kernel: acceptance {rate:.2f}\n{report}")
    assert rate > 0.05
    report.assert_ok()


def test_make_kernel_interface():
    """``make_kernel(model, proposal)`` is ``kernel(key, trace, args, kwargs) -> (trace,
    accepted)``, pure: same key, same answer."""
    trace = Traced(zoo.normal_normal)(jax.random.PRNGKey(0), NN_DATA)
    for proposal in ("prior", "random_walk", asymmetric_proposal):
        kernel = mh_module.make_kernel(zoo.normal_normal, proposal)
        new, accepted = jax.jit(kernel)(jax.random.PRNGKey(3), trace, (NN_DATA,), {})
        again, _ = jax.jit(kernel)(jax.random.PRNGKey(3), trace, (NN_DATA,), {})
        assert accepted.dtype == jnp.bool_ and new.kinds == trace.kinds
        np.testing.assert_array_equal(new.values["mu"], again.values["mu"])


# --------------------------------------------------------------------------- mh(...).run

R = 16  # replicates for the end-to-end checks


def replicate_check(algo, model, args, exact, tests, key=KEY):
    report = validity.preserves(lambda k: algo.run(k, model, *args), exact, tests, key,
                                num_replicates=R)
    print(f"\n{algo}\n{report}")
    return report


# slow (keeps the fast suite under 15 minutes): prior-proposal MH stays checked fast on
# normal-normal and the sprinkler
@pytest.mark.slow
def test_mh_beta_bernoulli_prior():
    exact = zoo.beta_bernoulli_exact(BB_DATA)
    algo = infer.mh(500, num_warmup=100, num_chains=4)
    replicate_check(algo, zoo.beta_bernoulli, (BB_DATA,), exact_moments(exact),
                    moments("p", exact["mean"]))


def test_mh_normal_normal_random_walk_adapts():
    """Random walk with Robbins-Monro step-size adaptation during warmup: the posterior is
    recovered, and the adapted step size gives an acceptance rate near the 0.3 target
    (started from 5.0, where acceptance is ~0.1)."""
    exact = zoo.normal_normal_exact(NN_DATA)
    algo = infer.mh(500, num_warmup=300, num_chains=4, proposal="random_walk", step_size=5.0)
    replicate_check(algo, zoo.normal_normal, (NN_DATA,), exact_moments(exact),
                    moments("mu", exact["mean"]))
    post = algo.run(KEY, zoo.normal_normal, NN_DATA)
    rate, step_size = post.info["accept_rate"], post.info["step_size"]
    print(f"acceptance {rate:.3f}, adapted step sizes {step_size}")
    assert np.all(step_size < 2.0) and 0.2 < rate < 0.45


def test_mh_sprinkler_marginals():
    exact = zoo.sprinkler_exact(1)
    algo = infer.mh(500, num_warmup=100, num_chains=4)
    tests = {n: (lambda smp, n=n: smp[n]) for n in zoo.SPRINKLER_SITES}
    replicate_check(algo, zoo.sprinkler, (1,), exact["marginals"], tests)


def test_mh_posterior_layout():
    """Chain-major draws, per-draw ``accept_prob``, overall rates in ``info``, ArviZ."""
    algo = infer.mh(50, num_warmup=10, num_chains=3, proposal=asymmetric_proposal, num_mcmc_steps=2)
    post = algo.run(KEY, zoo.normal_normal, NN_DATA)
    assert post.samples["mu"].shape == (150,) and post.num_chains == 3
    prob = np.asarray(post.sample_stats["accept_prob"])
    assert prob.shape == (150,) and np.all((prob >= 0) & (prob <= 1))
    assert post.info["accept_rate_per_chain"].shape == (3,)
    assert 0 < post.info["accept_rate"] < 1
    idata = post.to_arviz()
    assert idata.posterior["mu"].shape == (3, 50)
    assert "accept_prob" in idata.sample_stats
    again = algo.run(KEY, zoo.normal_normal, NN_DATA)
    np.testing.assert_array_equal(post.samples["mu"], again.samples["mu"])
    grouped = np.asarray(post.samples["mu"]).reshape(3, 50)
    assert not np.allclose(grouped[0], grouped[1])  # chains are independent


# --------------------------------------------------------------------------- errors


def test_errors():
    with pytest.raises(UnknownOptionError, match="proposal"):
        infer.mh(100, proposal="gibbs")
    with pytest.raises(ValueError, match="num_samples"):
        infer.mh(0)
    with pytest.raises(ValueError, match="num_warmup"):
        infer.mh(10, num_warmup=-1)
    with pytest.raises(ValueError, match="num_chains"):
        infer.mh(10, num_chains=0)
    with pytest.raises(ValueError, match="step_size"):
        infer.mh(10, step_size=0.0)
    with pytest.raises(TypeError, match="proposal"):
        infer.mh(10, proposal=3)

    def bad_proposal(current, data):
        ppl.sample("sigma", dist.HalfNormal(1.0))

    with pytest.raises(UnsupportedModelError, match="sigma"):
        infer.mh(10, proposal=bad_proposal).run(KEY, zoo.normal_normal, NN_DATA)
    with pytest.raises(UnsupportedModelError, match="discrete"):
        infer.mh(10, proposal="random_walk").run(KEY, zoo.sprinkler, 1)
