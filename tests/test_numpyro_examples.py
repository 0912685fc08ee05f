"""NumPyro's example models that need their data concrete run unchanged.

``glmm`` (NumPyro ``examples/ucbadmit.py``) computes ``len(np.unique(dept))``;
``multinomial`` and ``dawid_skene`` (``examples/annotation.py``) compute
``int(np.max(annotations))``. Traced data raises JAX's concretization errors there, so
``.run`` compiles such a model again with its arguments closed over as constants
(:func:`ppl.inference.base.compile_and_call`), as NumPyro does. Checked: each model runs
under ``infer.nuts`` and ``infer.importance``; NUTS posterior means of ``glmm`` match
NumPyro's own ``MCMC(NUTS(glmm))`` within K Monte Carlo standard errors (each side's
``sd / sqrt(ess)``, ESS from ``numpyro.diagnostics.effective_sample_size`` over the
chains); a second ``.run`` with the same data does not run the model again (nothing is
traced or compiled); the concrete run agrees with the traced run of the same model with
the concrete quantity passed in; a model branching on a sampled value still raises.
Marked ``slow`` (compilation-bound): ``dawid_skene``, and every combinator running (twice)
a small model that needs concrete data.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.special import expit
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS
from numpyro.ops.indexing import Vindex
from ppl.inference.base import split_arguments

import ppl
from ppl import inference as infer

KEY = jax.random.PRNGKey(0)
K = 5  # z-score bound of the Monte Carlo comparison (2 sites, two-sided)


# ------------------------------------------------------------------ NumPyro's models
# Copied verbatim from NumPyro (https://github.com/pyro-ppl/numpyro), examples/ucbadmit.py
# (glmm) and examples/annotation.py (multinomial, dawid_skene).
# Copyright Contributors to the Pyro project. SPDX-License-Identifier: Apache-2.0


def glmm(dept, male, applications, admit=None):
    v_mu = numpyro.sample("v_mu", dist.Normal(0, jnp.array([4.0, 1.0])))

    sigma = numpyro.sample("sigma", dist.HalfNormal(jnp.ones(2)))
    L_Rho = numpyro.sample("L_Rho", dist.LKJCholesky(2, concentration=2))
    scale_tril = sigma[..., jnp.newaxis] * L_Rho
    # non-centered parameterization
    num_dept = len(np.unique(dept))
    z = numpyro.sample("z", dist.Normal(jnp.zeros((num_dept, 2)), 1))
    v = jnp.dot(scale_tril, z.T).T

    logits = v_mu[0] + v[dept, 0] + (v_mu[1] + v[dept, 1]) * male
    if admit is None:
        # we use a Delta site to record probs for predictive distribution
        probs = expit(logits)
        numpyro.sample("probs", dist.Delta(probs), obs=probs)
    numpyro.sample("admit", dist.Binomial(applications, logits=logits), obs=admit)


def multinomial(annotations):
    """
    This model corresponds to the plate diagram in Figure 1 of reference [1].
    """
    num_classes = int(np.max(annotations)) + 1
    num_items, num_positions = annotations.shape

    with numpyro.plate("class", num_classes):
        zeta = numpyro.sample("zeta", dist.Dirichlet(jnp.ones(num_classes)))

    pi = numpyro.sample("pi", dist.Dirichlet(jnp.ones(num_classes)))

    with numpyro.plate("item", num_items, dim=-2):
        c = numpyro.sample("c", dist.Categorical(pi), infer={"enumerate": "parallel"})

        with numpyro.plate("position", num_positions):
            numpyro.sample("y", dist.Categorical(zeta[c]), obs=annotations)


def dawid_skene(positions, annotations):
    """
    This model corresponds to the plate diagram in Figure 2 of reference [1].
    """
    num_annotators = int(np.max(positions)) + 1
    num_classes = int(np.max(annotations)) + 1
    num_items, num_positions = annotations.shape

    with numpyro.plate("annotator", num_annotators, dim=-2):
        with numpyro.plate("class", num_classes):
            beta = numpyro.sample("beta", dist.Dirichlet(jnp.ones(num_classes)))

    pi = numpyro.sample("pi", dist.Dirichlet(jnp.ones(num_classes)))

    with numpyro.plate("item", num_items, dim=-2):
        c = numpyro.sample("c", dist.Categorical(pi), infer={"enumerate": "parallel"})

        # here we use Vindex to allow broadcasting for the second index `c`
        # ref: http://num.pyro.ai/en/latest/utilities.html#numpyro.contrib.indexing.vindex
        with numpyro.plate("position", num_positions):
            numpyro.sample(
                "y", dist.Categorical(Vindex(beta)[positions, c, :]), obs=annotations
            )


# ------------------------------------------------------------------ small simulated data


def ucb_data():
    """3 departments x (male, female): admissions simulated from a binomial GLMM."""
    rng = np.random.default_rng(1)
    dept = np.repeat(np.arange(3), 2)
    male = np.tile([1, 0], 3)
    applications = rng.integers(40, 120, size=6)
    logits = np.array([0.8, -0.2, -1.0])[dept] + 0.3 * male
    admit = rng.binomial(applications, 1.0 / (1.0 + np.exp(-logits)))
    return dept, male, applications, admit


def annotation_data(num_items=8, num_classes=3, seed=2):
    """Annotator 0 rates each item twice, annotator 1 once; mostly the true class."""
    rng = np.random.default_rng(seed)
    positions = np.array([0, 0, 1])
    truth = rng.integers(0, num_classes, size=num_items)
    noise = rng.integers(0, num_classes, size=(num_items, 3))
    keep = rng.random((num_items, 3)) < 0.8
    annotations = np.where(keep, truth[:, None], noise)
    return positions, annotations


UCB = ucb_data()
POSITIONS, ANNOTATIONS = annotation_data()


# ------------------------------------------------------------------ (a) they run, (c) once

GLMM_CALLS = []


def glmm_counted(*args, **kwargs):
    """``glmm``, counting how often it is run (traced, compiled or replayed)."""
    GLMM_CALLS.append(1)
    return glmm(*args, **kwargs)


@pytest.fixture(scope="module")
def glmm_nuts():
    algo = infer.nuts(200, num_warmup=200, num_chains=2)
    return algo, algo.run(KEY, glmm_counted, *UCB)


@pytest.mark.slow
def test_glmm_runs_under_nuts_and_a_second_run_does_not_trace_again(glmm_nuts):
    algo, post = glmm_nuts
    assert post.samples["z"].shape == (400, 3, 2)  # num_dept = 3, from np.unique
    assert post.samples["v_mu"].shape == (400, 2)
    assert float(np.mean(post.sample_stats["accept_prob"])) > 0.5
    calls = len(GLMM_CALLS)
    again = algo.run(jax.random.PRNGKey(1), glmm_counted, *UCB)
    assert len(GLMM_CALLS) == calls  # neither a failed trace nor a new lowering
    assert not np.array_equal(again.samples["v_mu"], post.samples["v_mu"])
    assert len(algo._cache.concrete) == 1 and len(algo._cache.needs_concrete) == 1


def test_glmm_runs_under_importance_compiled_once_per_data():
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return glmm(*args, **kwargs)

    algo = infer.importance(200)
    first = algo.run(KEY, counted, *UCB)
    assert first.samples["z"].shape == (200, 3, 2)
    assert np.isfinite(first.log_evidence)
    traced = len(calls)
    again = algo.run(jax.random.PRNGKey(1), counted, *UCB)
    copies = algo.run(KEY, counted, *(np.array(a) for a in UCB))  # equal data, new arrays
    assert len(calls) == traced
    np.testing.assert_array_equal(copies.log_weights, first.log_weights)
    assert not np.array_equal(again.log_weights, first.log_weights)
    assert len(algo._runs._cache.concrete) == 1
    # the concrete runs are keyed by the data's contents: other data is compiled anew
    dept, male, applications, admit = UCB
    keys = [split_arguments(counted, data, {}, concrete=True).cache_key
            for data in (UCB, tuple(np.array(a) for a in UCB),
                         (dept, male, applications, admit + 1))]
    assert keys[0] == keys[1] and keys[0] != keys[2]


@pytest.mark.parametrize("model, data, recover", [
    (multinomial, (ANNOTATIONS,), False),
    pytest.param(dawid_skene, (POSITIONS, ANNOTATIONS), True, marks=pytest.mark.slow),
], ids=["multinomial", "dawid_skene"])
@pytest.mark.slow
def test_annotation_models_run_under_nuts_and_importance(model, data, recover):
    """The discrete class ``c`` of each item is summed out by NUTS (NumPyro's funsor
    enumeration, as NumPyro's NUTS does) and, with ``recover_discrete``, drawn exactly
    afterwards."""
    num_items = ANNOTATIONS.shape[0]
    post = infer.nuts(100, num_warmup=100, recover_discrete=recover).run(KEY, model, *data)
    assert post.info["discrete_sites"] == ["c"]
    assert post.info["discrete_recovered"] == recover
    assert post.samples["pi"].shape == (100, 3)
    assert np.isfinite(np.asarray(post.sample_stats["lp"])).all()
    if recover:
        c = np.asarray(post.samples["c"])
        assert c.shape == (100, num_items, 1) and c.min() >= 0 and c.max() < 3
    post = infer.importance(200).run(KEY, model, *data)
    assert post.samples["c"].shape == (200, num_items, 1)
    assert np.isfinite(post.log_evidence)


# ------------------------------------------------------------------ (b) NumPyro's answer


def _mean_and_se(draws):
    """Posterior mean and its Monte Carlo standard error ``sd / sqrt(ess)`` from draws
    shaped (chains, samples, ...)."""
    draws = np.asarray(draws, np.float64)
    ess = effective_sample_size(draws)
    return draws.mean(axis=(0, 1)), draws.std(axis=(0, 1), ddof=1) / np.sqrt(ess)


@pytest.mark.slow
def test_glmm_nuts_matches_numpyro_mcmc(glmm_nuts):
    _, post = glmm_nuts
    mcmc = MCMC(NUTS(glmm), num_warmup=200, num_samples=200, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), *UCB)
    theirs = mcmc.get_samples(group_by_chain=True)
    for name in ("v_mu", "sigma"):
        ours = np.asarray(post.samples[name]).reshape(2, 200, -1)
        m1, se1 = _mean_and_se(ours)
        m2, se2 = _mean_and_se(theirs[name])
        z = (m1 - m2) / np.sqrt(se1**2 + se2**2)
        assert np.all(np.abs(z) < K), (name, m1, m2, se1, se2, z)


# ------------------------------------------------------------------ the markov engine


def test_concrete_run_equals_the_traced_run_of_the_same_model():
    """A markov program reading ``float(np.std(ys))`` under SMC (the concrete path) gives
    the answer of the same program with that number passed in (the traced path)."""

    def ar(ys, s=None):
        s = float(np.std(ys)) if s is None else s
        rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))

        def step(x, y):
            x = ppl.sample("x", dist.Normal(rho * x, 1.0))
            ppl.observe("y", dist.Normal(x, s), y)
            return x

        return ppl.markov(step, init=0.0, xs=jnp.asarray(ys))

    ys = np.array([0.3, -0.2, 0.5, 1.0, 0.1, -0.4, 0.2, 0.0], np.float32)
    algo = infer.smc(64)
    concrete = algo.run(KEY, ar, ys)
    traced = algo.run(KEY, ar, ys, s=float(np.std(ys)))
    np.testing.assert_allclose(concrete.log_evidence, traced.log_evidence, rtol=1e-5)
    np.testing.assert_allclose(concrete.samples["rho"], traced.samples["rho"], rtol=1e-5)


# ------------------------------------------------------------------ (d) still an error


def branch_on_sample(ys):
    num_classes = int(np.max(ys)) + 1  # needs the data concrete ...
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    if mu > 0:  # ... and branches on a sampled value: an error under every method
        mu = -mu
    with numpyro.plate("n", ys.shape[0]):
        numpyro.sample("y", dist.Normal(mu, num_classes), obs=ys)


@pytest.mark.parametrize("algo", [infer.importance(10), infer.nuts(5, num_warmup=5)],
                         ids=["importance", "nuts"])
def test_branching_on_a_sampled_value_still_raises(algo):
    # concrete data cannot cure it: JAX's error, chained, under a named one
    with pytest.raises(ppl.TracedControlFlowError, match="(?s)'mu'.*if mu > 0") as info:
        algo.run(KEY, branch_on_sample, np.array([0.5, 1.0, 2.0]))
    assert isinstance(info.value.__cause__, jax.errors.TracerBoolConversionError)
    cache = algo._runs._cache if hasattr(algo, "_runs") else algo._cache
    assert not cache.needs_concrete and not cache.concrete  # nothing remembered


# ------------------------------------------------------------------ every combinator


def ar_concrete(ys):
    """An AR(1) state-space program whose noise scale is read from the data concretely."""
    s = float(np.std(ys))
    rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, 1.0))
        ppl.observe("y", dist.Normal(x, s), y)
        return x

    return ppl.markov(step, init=0.0, xs=jnp.asarray(ys))


def ar_param_concrete(ys):
    s = float(np.std(ys))
    rho = ppl.param("rho", 0.5, constraint=dist.constraints.interval(-1.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, 1.0))
        ppl.observe("y", dist.Normal(x, s), y)
        return x

    return ppl.markov(step, init=0.0, xs=jnp.asarray(ys))


def ar_guide(ys):
    a = ppl.param("a", 0.5)

    def step(x, y):
        return ppl.sample("x", dist.Normal(a * x + 0.1 * y, 1.0))

    return ppl.markov(step, init=0.0, xs=ys)  # a numpy xs, indexed by a traced step


GRID = np.linspace(0.0, 1.0, 11)


def ou_concrete(ys):
    s = float(np.std(ys))
    x0 = ppl.sample("x0", dist.Normal(0.0, 1.0))
    x = ppl.sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, x0, jnp.asarray(GRID))
    ppl.observe("y", dist.Normal(x[np.array([5, 10])], s), ys)


def discrete_concrete(ys):
    k = int(np.max(ys)) + 1
    z = ppl.sample("z", dist.Categorical(jnp.ones(k) / k))
    with ppl.plate("n", ys.shape[0]):
        ppl.observe("y", dist.Categorical(jax.nn.one_hot(z, k) * 0.5 + 0.5 / k), ys)


YS = np.array([0.3, -0.2, 0.5, 1.0, 0.1, -0.4, 0.2, 0.0], np.float32)
PSI = lambda t, x_prev, x, params: x  # noqa: E731
GLMM = (glmm, *UCB)
AR = (ar_concrete, YS)
EVERY = {
    "importance": (lambda: infer.importance(50), GLMM),
    "smc_static": (lambda: infer.smc(50), GLMM),
    "smc": (lambda: infer.smc(50), AR),
    "rmsmc": (lambda: infer.rmsmc(50), AR),
    "mh": (lambda: infer.mh(20), GLMM),
    "tempered_smc": (lambda: infer.tempered_smc(50, max_steps=5), GLMM),
    "pmmh": (lambda: infer.pmmh(["rho"], infer.smc(20), 10), AR),
    "smc2": (lambda: infer.smc2(["rho"], 10, infer.smc(10)), AR),
    "nuts": (lambda: infer.nuts(20, 20), GLMM),
    "hmc": (lambda: infer.hmc(20, 20, num_steps=5), GLMM),
    "nuts_progress_bar": (lambda: infer.nuts(20, 20, progress_bar=True), GLMM),
    "svi": (lambda: infer.svi(num_steps=20, num_samples=20), GLMM),
    "csmc": (lambda: infer.csmc(10, num_sweeps=3, num_warmup=1, fixed={"rho": 0.5}), AR),
    "paris": (lambda: infer.paris(16, functional=PSI, fixed={"rho": 0.5}), AR),
    "ppg": (lambda: infer.ppg(16, num_sweeps=3, num_warmup=1, functional=PSI,
                              fixed={"rho": 0.5}), AR),
    "score_ascent": (lambda: infer.score_ascent(num_particles=8, num_steps=5, fixed=None),
                     (ar_param_concrete, YS)),
    "score_climbing": (lambda: infer.score_climbing(ar_guide, num_particles=8, num_steps=5),
                       (ar_param_concrete, YS)),
    "particle_gibbs": (lambda: infer.particle_gibbs(num_particles=8, num_samples=5,
                                                    num_warmup=2), AR),
    "vsde": (lambda: infer.vsde(num_steps=5, num_paths=4, num_samples=5, control="affine",
                                progress_bar=False), (ou_concrete, np.array([0.3, 0.1]))),
    "exact": (lambda: infer.exact(10), (discrete_concrete, np.array([0, 1, 1, 2]))),
}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:tempered_smc")
@pytest.mark.parametrize("name", list(EVERY))
def test_every_combinator_runs_a_model_that_needs_concrete_data(name):
    make, (model, *data) = EVERY[name]
    algo = make()
    algo.run(KEY, model, *data)
    algo.run(jax.random.PRNGKey(1), model, *data)
