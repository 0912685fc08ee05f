"""The DSL's behaviour: primitives, markov, interoperation with NumPyro, graph, caching."""

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import numpyro
import numpyro.distributions as nd
import pytest
from arviz_helpers import group_names
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import log_density
from ppl.semantics import Density, Sampler, Traced, Weighted, model_graph, record, to_dot

import ppl
from ppl import dist
from ppl import inference as infer

KEY = jax.random.PRNGKey(3)
YS = jnp.array([0.1, 0.5, -0.2, 1.0])


def random_walk(ys):
    """A global scale, then a Gaussian random walk observed with noise, one markov call."""
    s = ppl.sample("s", dist.HalfNormal(1.0))

    def step(carry, y_t):
        x = ppl.sample("x", dist.Normal(carry, 1.0))
        ppl.observe("y", dist.Normal(x, s), y_t)
        ppl.deterministic("t", ppl.current_step())
        return x

    return ppl.markov(step, 0.0, xs=ys)


# ------------------------------------------------------------------- plain NumPyro models


def plain_numpyro(y):
    mu = numpyro.sample("mu", nd.Normal(0.0, 1.0))
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", nd.Normal(mu, 1.0), obs=y)


def test_plain_numpyro_model_runs_unchanged():
    y = jnp.arange(4.0)
    draw = Weighted(plain_numpyro)(KEY, y)
    assert draw.trace.latent_names == ["mu"] and draw.trace.observed_names == ["y"]
    mu = draw.trace.values["mu"]
    expected = nd.Normal(mu, 1.0).log_prob(y).sum()
    np.testing.assert_allclose(draw.log_weight, expected, rtol=1e-6)

    post = infer.importance(50).run(KEY, plain_numpyro, y)
    assert post.samples["mu"].shape == (50,)
    idata = post.to_arviz()
    assert {"posterior", "log_likelihood", "observed_data"} <= set(group_names(idata))
    assert list(idata.posterior.data_vars) == ["mu"]
    assert idata.posterior["mu"].shape == (1, 50)
    assert list(idata.log_likelihood.data_vars) == ["y"]
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "y_dim_0")
    assert idata.log_likelihood["y"].shape == (1, 50, 4)
    assert list(idata.observed_data.data_vars) == ["y"]
    np.testing.assert_array_equal(idata.observed_data["y"].values, np.asarray(y))


# ------------------------------------------------------------ ppl models under NumPyro


def test_numpyro_seed_and_trace_stack_markov_sites():
    tr = numpyro.handlers.trace(numpyro.handlers.seed(random_walk, 0)).get_trace(YS)
    assert tr["s"]["type"] == "sample" and jnp.shape(tr["s"]["value"]) == ()
    for name in ("x", "y", "t"):
        assert jnp.shape(tr[name]["value"]) == (4,), name
    assert tr["y"]["is_observed"]
    np.testing.assert_array_equal(tr["y"]["value"], YS)
    np.testing.assert_array_equal(tr["t"]["value"], np.arange(4))


def test_numpyro_log_density_equals_density_log_joint():
    values = {"s": jnp.array(0.7), "x": jnp.array([0.1, 0.2, 0.3, 0.4])}
    numpyro_lp, _ = log_density(random_walk, (YS,), {}, values)
    ppl_lp = Density(random_walk).log_joint(values, YS)
    np.testing.assert_allclose(numpyro_lp, ppl_lp, rtol=1e-6)
    by_hand = (
        nd.HalfNormal(1.0).log_prob(0.7)
        + nd.Normal(jnp.array([0.0, 0.1, 0.2, 0.3]), 1.0).log_prob(values["x"]).sum()
        + nd.Normal(values["x"], 0.7).log_prob(YS).sum()
    )
    np.testing.assert_allclose(ppl_lp, by_hand, rtol=1e-5)


@pytest.mark.slow
def test_numpyro_nuts_runs_on_a_markov_model():
    mcmc = MCMC(NUTS(random_walk), num_warmup=200, num_samples=200, progress_bar=False)
    mcmc.run(KEY, YS[:3])
    samples = mcmc.get_samples()
    assert samples["s"].shape == (200,) and samples["x"].shape == (200, 3)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in samples.values())
    assert bool(jnp.all(samples["s"] > 0))


# --------------------------------------------------------------------------------- markov


def test_markov_returns_stacked_carries():
    def model():
        return ppl.markov(lambda c, x: c + x, jnp.zeros(2), xs=jnp.ones((3, 2)))

    carries = record(model, KEY)[0]
    assert carries.shape == (3, 2)
    np.testing.assert_array_equal(carries, [[1, 1], [2, 2], [3, 3]])


def test_markov_stacks_random_carries_and_sites():
    value, trace, _ = record(random_walk, KEY, (YS,))
    assert value.shape == (4,)
    np.testing.assert_array_equal(value, trace.values["x"])


def test_markov_with_pytree_carry_and_length():
    seen = []

    def step(carry, x):
        seen.append(x)
        a, b = carry
        return a + 1.0, b * 2.0

    def model():
        return ppl.markov(step, (jnp.zeros(()), jnp.ones(2)), length=3)

    a, b = record(model, KEY)[0]
    assert seen and all(x is None for x in seen)
    assert a.shape == (3,) and b.shape == (3, 2)
    np.testing.assert_array_equal(a, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(b, [[2.0, 2.0], [4.0, 4.0], [8.0, 8.0]])


def test_current_step_is_the_time_index():
    assert ppl.current_step() is None
    trace = Traced(random_walk)(KEY, YS)
    assert trace.kind("t") == "deterministic"
    np.testing.assert_array_equal(trace.values["t"], np.arange(4))


# ----------------------------------------------------------- deterministic, factor, param


def test_deterministic_in_trace_and_posterior():
    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.deterministic("mu2", 2.0 * mu)
        ppl.observe("y", dist.Normal(mu, 1.0), y)

    trace = Traced(model)(KEY, jnp.array(0.5))
    assert trace.kind("mu2") == "deterministic"
    assert "mu2" not in trace.log_probs  # adds nothing to the weight
    np.testing.assert_allclose(trace.values["mu2"], 2.0 * trace.values["mu"])

    post = infer.importance(20).run(KEY, model, jnp.array(0.5))
    np.testing.assert_allclose(post.samples["mu2"], 2.0 * post.samples["mu"])


def test_factor_adds_exactly_its_value():
    def model():
        ppl.sample("a", dist.Normal(0.0, 1.0))
        ppl.factor("f", 1.25)
        ppl.factor("g", jnp.array([0.5, -0.25]))

    draw = Weighted(model)(KEY)
    assert draw.trace.kind("f") == "factor" and draw.trace.kind("g") == "factor"
    assert float(draw.log_weight) == 1.5


def test_factor_with_observe():
    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.observe("y", dist.Normal(mu, 1.0), y)
        ppl.factor("f", -0.75)

    draw = Weighted(model)(KEY, jnp.array(0.3))
    mu = draw.trace.values["mu"]
    np.testing.assert_allclose(
        draw.log_weight, nd.Normal(mu, 1.0).log_prob(0.3) - 0.75, rtol=1e-6
    )


def test_param_returns_its_init_under_record():
    def model():
        return ppl.param("theta", jnp.array([1.0, 2.0]))

    value, trace, _ = record(model, KEY)
    np.testing.assert_array_equal(value, [1.0, 2.0])
    assert trace.kind("theta") == "param"
    np.testing.assert_array_equal(trace.values["theta"], [1.0, 2.0])


# --------------------------------------------------------------------------------- Sampler


def observe_in_and_out_of_markov(y0, ys):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.observe("y0", dist.Normal(mu, 1.0), y0)

    def step(carry, y_t):
        x = ppl.sample("x", dist.Normal(carry, 1.0))
        ppl.observe("y", dist.Normal(x, 1.0), y_t)
        return x

    ppl.markov(step, mu, xs=ys)


def test_predictive_sampler_draws_observed_sites():
    y0, ys = jnp.zeros(3), jnp.zeros(4)
    choices = Sampler(observe_in_and_out_of_markov, predictive=True)(KEY, y0, ys).choices
    assert set(choices) == {"mu", "y0", "x", "y"}
    assert choices["y0"].shape == y0.shape and choices["y"].shape == ys.shape
    assert bool(jnp.all(choices["y0"] != y0)) and bool(jnp.all(choices["y"] != ys))
    plated = Sampler(hierarchical, predictive=True)(KEY, jnp.zeros(3)).choices
    assert plated["y"].shape == (3,) and "prior_tilt" not in plated


def test_prior_sampler_returns_latent_and_deterministic_choices_only():
    y0, ys = jnp.zeros(3), jnp.zeros(4)
    choices = Sampler(observe_in_and_out_of_markov)(KEY, y0, ys).choices
    assert set(choices) == {"mu", "x"}
    assert set(Sampler(random_walk)(KEY, YS).choices) == {"s", "x", "t"}


# --------------------------------------------------------------------------- ppl.model


def undecorated(y):
    """A normal mean with known noise."""
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.observe("y", dist.Normal(mu, 1.0), y)


decorated = ppl.model(undecorated)


def test_model_decorator_keeps_name_and_docstring():
    assert isinstance(decorated, ppl.Model)
    assert decorated.__name__ == "undecorated"
    assert decorated.__doc__ == "A normal mean with known noise."
    assert ppl.model(decorated) is decorated
    assert "undecorated" in repr(decorated)


def test_decorated_and_undecorated_models_agree_everywhere():
    y = jnp.array(0.4)
    lw = [infer.importance(30).run(KEY, m, y).log_weights for m in (decorated, undecorated)]
    np.testing.assert_array_equal(*lw)
    draws = [Sampler(m)(KEY, y).choices["mu"] for m in (decorated, undecorated)]
    np.testing.assert_array_equal(*draws)
    values = {"mu": jnp.array(0.1)}
    np.testing.assert_allclose(
        Density(decorated).log_joint(values, y), Density(undecorated).log_joint(values, y)
    )
    assert set(model_graph(decorated, y).edges) == set(model_graph(undecorated, y).edges)


# --------------------------------------------------------------------------- model graph


def hierarchical(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    tau = ppl.sample("tau", dist.HalfNormal(1.0))
    with ppl.plate("groups", 3):
        theta = ppl.sample("theta", dist.Normal(mu, tau))
        ppl.observe("y", dist.Normal(theta, 1.0), y)
    ppl.factor("prior_tilt", -0.5 * tau**2)


def test_model_graph_of_a_hierarchical_model():
    graph = model_graph(hierarchical, jnp.zeros(3))
    assert isinstance(graph, nx.DiGraph)
    kinds = dict(graph.nodes(data="kind"))
    assert kinds == {
        "mu": "latent", "tau": "latent", "theta": "latent", "y": "observed",
        "prior_tilt": "factor",
    }
    assert graph.nodes["theta"]["plates"] == ["groups"]
    assert graph.nodes["y"]["distribution"] == "Normal"
    assert {("mu", "theta"), ("tau", "theta"), ("theta", "y")} <= set(graph.edges)
    assert ("tau", "prior_tilt") in graph.edges
    assert not graph.has_edge("mu", "y") and not graph.has_edge("y", "theta")
    assert nx.is_directed_acyclic_graph(graph)

    dot = to_dot(graph)
    assert isinstance(dot, str) and dot.startswith("digraph")
    for name in graph.nodes:
        assert f'"{name}"' in dot
    assert '"theta" -> "y"' in dot


def test_model_graph_marks_markov_sites():
    graph = model_graph(random_walk, YS)
    assert not graph.nodes["s"]["markov"]
    assert graph.nodes["x"]["markov"] and graph.nodes["y"]["markov"]
    assert graph.has_edge("x", "y") and graph.has_edge("s", "y")


# ------------------------------------------------------------------------ determinism


def test_same_key_same_answer_and_one_compilation():
    imp = infer.importance(100)
    first = imp.run(KEY, hierarchical, jnp.zeros(3))
    again = imp.run(KEY, hierarchical, jnp.zeros(3))
    np.testing.assert_array_equal(first.log_weights, again.log_weights)
    np.testing.assert_array_equal(first.samples["theta"], again.samples["theta"])
    other = imp.run(jax.random.PRNGKey(4), hierarchical, jnp.zeros(3))
    assert not np.array_equal(first.log_weights, other.log_weights)
    imp.run(KEY, hierarchical, jnp.ones(3))  # new data of the same shape: no recompilation
    assert len(imp._runs._cache) == 1
