"""Data as users hand them over: a Python list of numbers, a tuple of such lists, a list of
rows, a pandas ``Series``. ``ppl.markov`` reads a list of numbers and a ``Series`` given as
``xs`` (or inside ``xs``) as one array with a leading time axis, under every
interpretation, so a run on them is the run on the NumPy array; a list of lists, rows or
sequences alike, is refused with a message that says how to say which; a pandas object that
meets a traced value inside a model gets an error that names the argument. Float arguments
(a list of floats, a scale) are traced, so new values reuse the compiled run."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import ShapeMismatchError, TracedControlFlowError

pd = pytest.importorskip("pandas")

KEY = jax.random.PRNGKey(3)
YS = [0.3, -1.2, 0.8, 2.1, -0.4, 0.05]


@ppl.model
def ssm(ys):
    x0 = ppl.sample("x0", dist.Normal(0.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(0.9 * x, 1.0))
        ppl.observe("y", dist.Normal(x, 0.5), y)
        return x

    return ppl.markov(step, init=x0, xs=ys)


@ppl.model
def ssm_rows(rows):
    """Each step observes a row of two numbers."""

    def step(x, row):
        x = ppl.sample("x", dist.Normal(0.9 * x, 1.0))
        ppl.observe("y", dist.Normal(x, 0.5).expand([2]).to_event(1), row)
        return x

    return ppl.markov(step, init=0.0, xs=rows)


COMBINATORS = {
    "smc": lambda: infer.smc(num_particles=64),
    "mh": lambda: infer.mh(num_samples=50),
}


def _same_posterior(a, b):
    assert a.samples.keys() == b.samples.keys()
    for name in a.samples:
        np.testing.assert_array_equal(np.asarray(a.samples[name]), np.asarray(b.samples[name]))
    if a.log_weights is not None:
        np.testing.assert_array_equal(np.asarray(a.log_weights), np.asarray(b.log_weights))


@pytest.mark.parametrize("name", sorted(COMBINATORS))
def test_a_list_of_numbers_is_the_array(name):
    algo = COMBINATORS[name]()
    as_list = algo.run(KEY, ssm, YS)
    as_array = algo.run(KEY, ssm, np.asarray(YS, dtype=np.float32))
    _same_posterior(as_list, as_array)
    assert np.shape(as_list.samples["x"])[-1] == len(YS)


@ppl.model
def driven(inputs):
    """Each step reads a pair (observation, control) from a pytree of two sequences."""

    def step(x, yu):
        y, u = yu
        x = ppl.sample("x", dist.Normal(0.9 * x + u, 1.0))
        ppl.observe("y", dist.Normal(x, 0.5), y)
        return x

    return ppl.markov(step, init=0.0, xs=inputs)


def test_a_tuple_of_lists_is_several_sequences():
    us = [0.1 * t for t in range(len(YS))]
    algo = infer.smc(num_particles=64)
    as_arrays = (np.asarray(YS, np.float32), np.asarray(us, np.float32))
    _same_posterior(algo.run(KEY, driven, (YS, us)), algo.run(KEY, driven, as_arrays))


def test_a_list_of_lists_asks_rows_or_sequences():
    rows = [[y, y + 0.1] for y in YS]
    with pytest.raises(ShapeMismatchError, match=r"markov\(step 'step'\).*np.asarray\(rows\)"):
        infer.smc(num_particles=8).run(KEY, ssm_rows, rows)
    np.testing.assert_equal(np.shape(infer.smc(num_particles=8).run(
        KEY, ssm_rows, np.asarray(rows, np.float32)).samples["x"]), (8, len(YS)))


def test_a_pandas_series_is_its_values():
    algo = infer.mh(num_samples=50)  # NumPyro's scan: a Series is no JAX type
    series = pd.Series(np.asarray(YS, dtype=np.float32), name="y")
    _same_posterior(algo.run(KEY, ssm, series), algo.run(KEY, ssm, series.to_numpy()))


@ppl.model
def regression(x, y):
    a = ppl.sample("a", dist.Normal(0.0, 10.0))
    b = ppl.sample("b", dist.Normal(0.0, 10.0))
    with ppl.plate("n", len(y)):
        ppl.observe("y", dist.Normal(a + b * x, 1.0), y)


def test_pandas_meeting_a_traced_value_names_the_argument():
    frame = pd.DataFrame({"x": np.arange(5.0), "y": np.arange(5.0)})
    algo = infer.importance(num_samples=8)
    with pytest.raises(TracedControlFlowError, match=r"'x' is a pandas object.*to_numpy"):
        algo.run(KEY, regression, frame["x"], frame["y"].to_numpy())
    post = algo.run(KEY, regression, frame["x"].to_numpy(), frame["y"].to_numpy())
    assert np.isfinite(np.asarray(post.log_weights)).all()


@ppl.model
def scaled(ys, scale):
    mu = ppl.sample("mu", dist.Normal(0.0, scale))
    with ppl.plate("n", len(ys)):
        ppl.observe("y", dist.Normal(mu, 1.0), ys)


@ppl.model
def switched(ys, scale):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    if scale > 1.0:  # Python control flow on a float argument: needs it concrete
        mu = ppl.deterministic("mu_scaled", mu * scale)
    with ppl.plate("n", len(ys)):
        ppl.observe("y", dist.Normal(mu, 1.0), ys)


def test_python_floats_are_traced_so_new_values_reuse_the_compiled_run():
    algo = infer.importance(num_samples=16)
    first = algo.run(KEY, ssm, YS)
    second = algo.run(KEY, ssm, [y + 1.0 for y in YS])
    assert len(algo._runs._cache) == 1 and not algo._runs._cache.concrete
    assert not np.array_equal(np.asarray(first.log_weights), np.asarray(second.log_weights))
    narrow = algo.run(KEY, scaled, np.ones(4, np.float32), 0.1)
    wide = algo.run(KEY, scaled, np.ones(4, np.float32), np.float32(10.0))
    assert len(algo._runs._cache) == 2
    np.testing.assert_allclose(np.asarray(wide.samples["mu"]),
                               100.0 * np.asarray(narrow.samples["mu"]), rtol=1e-5)


def test_a_float_argument_in_python_control_flow_runs_with_it_concrete():
    algo = infer.importance(num_samples=16)
    post = algo.run(KEY, switched, np.ones(4, np.float32), 2.0)
    np.testing.assert_allclose(np.asarray(post.samples["mu_scaled"]),
                               2.0 * np.asarray(post.samples["mu"]), rtol=1e-6)
    assert "mu_scaled" not in algo.run(KEY, switched, np.ones(4, np.float32), 0.5).samples
