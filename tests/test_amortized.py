"""Amortized guides (inference/amortization.py): trained on prior datasets, used as proposals.

What is measured, and why the tolerances are what they are:

* Normal-Normal with n = 5 observations: a guide trained for 500 SVI steps (batch of 64
  prior datasets per step, one hidden layer of 16) is compared, on 8 held-out datasets drawn
  from the prior with a key the training never used, with the exact conjugate posterior.
  Training is short, so the guide is held to a stated approximation tolerance (mean within
  0.25 posterior sd, sd within 25%) and must give importance sampling a higher ESS per
  sample than the prior proposal on every held-out dataset. The importance estimates with
  the amortized proposal (posterior mean and second moment, log evidence) must stay within
  ``K = 4`` Monte Carlo standard errors of the exact values (``preserves``, 16 replicates):
  the exact method stays exact whatever the network learned.
* The 1-D LGSSM (T = 20): a per-step proposal q(x_t | x_{t-1}, y_t) trained for 300 steps
  is compared with the locally optimal proposal p(x_t | x_{t-1}, y_t) (known in closed
  form), gives SMC a higher mean ESS than the bootstrap filter on held-out data, and the
  guided filter's evidence matches the Kalman filter's within ``K`` standard errors
  (``preserves`` over 16 replicates).
* The check that fails for a wrong method: the same guide with its network at
  initialisation fails the closeness checks on every held-out dataset.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ppl.inference.amortization import AmortizedGuide, amortized, amortized_step, prior_datasets
from ppl.inference.filtering import smc
from ppl.inference.importance_sampling import importance
from ppl.semantics.validity import preserves

import ppl
from ppl import dist
from ppl import models as zoo
from ppl.errors import UnsupportedModelError

KEY = jax.random.PRNGKey(20261128)
K = 4.0
N_OBS = 5
T = 20
NUM_IS = 500
NUM_HELD_OUT = 8
GUIDE_MEAN_TOL, GUIDE_SD_TOL = 0.25, 0.25


def adam(steps, lr=1e-2):
    return optax.adam(optax.exponential_decay(lr, steps, 0.1))


@pytest.fixture(scope="module")
def nn_guide():
    alg = amortized(hidden=(16,), num_steps=500, batch_size=64, optimizer=adam(500))
    return alg.fit(KEY, zoo.normal_normal, jnp.zeros(N_OBS))


@pytest.fixture(scope="module")
def guided_is(nn_guide):
    """Importance sampling with the amortized proposal (one compilation for the module)."""
    return importance(NUM_IS, proposal=nn_guide.proposal)


@pytest.fixture(scope="module")
def held_out():
    """Datasets from the prior with a key the training never saw."""
    _, observed = prior_datasets(jax.random.PRNGKey(7), zoo.normal_normal, (jnp.zeros(N_OBS),),
                                 {}, NUM_HELD_OUT)
    return np.asarray(observed["y"])


def test_guide_close_to_exact_posterior(nn_guide, held_out):
    assert nn_guide.info["elbo"].shape == (500,)
    for data in held_out:
        exact = zoo.normal_normal_exact(data)
        q = nn_guide.q(data)["mu"]
        sd = np.sqrt(exact["var"])
        print(f"q mean error / sd {(float(q.loc) - exact['mean']) / sd:+.3f}, "
              f"q sd / exact sd - 1 {float(q.scale) / sd - 1.0:+.3f}")
        assert abs(float(q.loc) - exact["mean"]) / sd < GUIDE_MEAN_TOL
        assert abs(float(q.scale) / sd - 1.0) < GUIDE_SD_TOL


def test_amortized_proposal_raises_ess_over_prior(guided_is, held_out):
    prior_is = importance(NUM_IS)
    prior_ess, guided_ess = [], []
    for i, data in enumerate(held_out):
        key = jax.random.fold_in(KEY, i)
        prior_ess.append(prior_is.run(key, zoo.normal_normal, data).ess / NUM_IS)
        guided_ess.append(guided_is.run(key, zoo.normal_normal, data).ess / NUM_IS)
    prior_ess, guided_ess = np.array(prior_ess), np.array(guided_ess)
    print("ESS / N prior", np.round(prior_ess, 3), "amortized", np.round(guided_ess, 3))
    assert np.all(guided_ess > prior_ess), (prior_ess, guided_ess)
    assert guided_ess.mean() > 0.8 and guided_ess.mean() > 1.5 * prior_ess.mean()


def test_importance_with_amortized_proposal_stays_exact(guided_is, held_out):
    data = held_out[0]
    exact = zoo.normal_normal_exact(data)
    report = preserves(
        lambda k: guided_is.run(k, zoo.normal_normal, data),
        {"mean": exact["mean"], "second": exact["var"] + exact["mean"] ** 2,
         "log_evidence": exact["log_evidence"]},
        {"mean": lambda s: s["mu"], "second": lambda s: s["mu"] ** 2},
        jax.random.PRNGKey(11), num_replicates=16, k=K,
    )
    print(report)


def test_untrained_guide_is_detected(nn_guide, held_out):
    """The same guide with its network at initialisation (zero output: the Gaussian of the
    prior's moments) fails the closeness checks the trained guide passes."""
    zero = jax.tree.map(jnp.zeros_like, nn_guide.net)
    untrained = AmortizedGuide(nn_guide.model, zero, nn_guide.head, nn_guide.features, {}, 10)
    failures = 0
    for data in held_out:
        exact = zoo.normal_normal_exact(data)
        q = untrained.q(data)["mu"]
        sd = np.sqrt(exact["var"])
        failures += (abs(float(q.loc) - exact["mean"]) / sd >= GUIDE_MEAN_TOL
                     or abs(float(q.scale) / sd - 1.0) >= GUIDE_SD_TOL)
    assert failures == NUM_HELD_OUT


def test_guide_posterior_run_and_arviz(nn_guide, held_out):
    post = nn_guide.run(KEY, zoo.normal_normal, held_out[0], num_samples=200)
    again = nn_guide.run(KEY, zoo.normal_normal, held_out[0], num_samples=200)
    np.testing.assert_array_equal(post.samples["mu"], again.samples["mu"])
    assert post.samples["mu"].shape == (200,)
    idata = post.to_arviz()
    assert idata.posterior["mu"].shape == (1, 200)
    assert idata.log_likelihood["y"].shape == (1, 200, N_OBS)
    with pytest.raises(UnsupportedModelError, match="another program"):
        nn_guide.run(KEY, zoo.beta_bernoulli, held_out[0])


# --------------------------------------------------------------------------- SMC


@pytest.fixture(scope="module")
def lgssm_proposal():
    alg = amortized_step(hidden=(16,), num_steps=300, batch_size=16, optimizer=adam(300))
    return alg.fit(KEY, zoo.lgssm_1d, jnp.zeros(T))


@pytest.mark.slow
def test_step_proposal_close_to_locally_optimal(lgssm_proposal):
    """p(x_t | x_{t-1}, y_t) for rho = 0.9, sigma_x = 1, sigma_y = 0.5: variance 1 / (1 +
    4) = 0.2, mean 0.2 (0.9 x_{t-1} + 4 y_t); held to the guide tolerances above."""
    sd = np.sqrt(0.2)
    for x_prev, y in [(0.0, 0.0), (1.0, 0.5), (-1.5, -2.0), (2.0, 1.0)]:
        q = lgssm_proposal.q(3, jnp.asarray(x_prev), jnp.asarray(y))["x"]
        mean = 0.2 * (0.9 * x_prev + 4.0 * y)
        print(f"step q: mean error / sd {(float(q.loc) - mean) / sd:+.3f}, "
              f"sd ratio - 1 {float(q.scale) / sd - 1.0:+.3f}")
        assert abs(float(q.loc) - mean) / sd < GUIDE_MEAN_TOL
        assert abs(float(q.scale) / sd - 1.0) < GUIDE_SD_TOL


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_guided_smc_beats_bootstrap_and_stays_exact(lgssm_proposal):
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(5), T)
    exact = zoo.lgssm_1d_exact(ys)
    ess = {}
    for name, proposal in (("bootstrap", None), ("guided", lgssm_proposal.proposal)):
        alg = smc(200, proposal=proposal)
        runs = []

        def run(k, alg=alg, runs=runs):
            post = alg.run(k, zoo.lgssm_1d, ys)
            runs.append(float(np.mean(post.info["ess"])))
            return post

        report = preserves(run, {"log_evidence": exact["log_evidence"]}, {},
                           jax.random.PRNGKey(3), num_replicates=16, k=K)
        ess[name] = np.mean(runs)
        print(name, f"mean ESS {ess[name]:.1f} of 200", report, sep="\n")
    assert ess["guided"] > 1.3 * ess["bootstrap"], ess


# --------------------------------------------------------------------------- errors


def test_errors():
    with pytest.raises(ValueError, match="num_steps"):
        amortized(num_steps=0)
    with pytest.raises(ValueError, match="hidden"):
        amortized(hidden=(0,))
    with pytest.raises(ValueError, match="batch_size"):
        amortized_step(batch_size=0)
    with pytest.raises(TypeError, match="features"):
        amortized(features=3)
    with pytest.raises(TypeError, match="optimizer"):
        amortized(optimizer="adam")

    @ppl.model
    def coin(ys):
        z = ppl.sample("z", dist.Bernoulli(0.5))
        ppl.observe("y", dist.Normal(z * 1.0, 1.0), ys)

    with pytest.raises(UnsupportedModelError, match="'z'"):
        amortized(num_steps=2).fit(KEY, coin, jnp.zeros(3))
    with pytest.raises(UnsupportedModelError, match="rho"):
        amortized_step(num_steps=2).fit(KEY, zoo.lgssm_1d_unknown_rho, jnp.zeros(4))
