"""Every bad input gets a clear error of a ppl error class that names the site or argument."""

import re

import jax
import jax.numpy as jnp
import numpyro
import pytest
from ppl.semantics import Enumerated, Population, Sequential, Weighted

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import (
    DuplicateSiteError,
    NonFiniteWeightError,
    ObserveWithoutValueError,
    PPLError,
    ShapeMismatchError,
    UnknownOptionError,
    UnsupportedModelError,
)

KEY = jax.random.PRNGKey(0)


def named(site):
    """A ``match=`` pattern for a message that names ``site`` in quotes."""
    return f"['\"]{re.escape(site)}['\"]"


def normal_model(data):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    with ppl.plate("n", data.shape[0]):
        ppl.observe("obs", dist.Normal(mu, 1.0), data)


def walk_step(carry, x):
    return ppl.sample("x", dist.Normal(carry, 1.0))


def test_error_classes_are_value_errors():
    for cls in (
        ObserveWithoutValueError, DuplicateSiteError, ShapeMismatchError,
        NonFiniteWeightError, UnknownOptionError, UnsupportedModelError,
    ):
        assert issubclass(cls, PPLError) and issubclass(cls, ValueError)


# ----------------------------------------------------------------- observe without a value


def observe_none():
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.observe("y", dist.Normal(mu, 1.0), None)


def test_observe_none_through_importance():
    with pytest.raises(ObserveWithoutValueError, match=named("y")):
        infer.importance(10).run(KEY, observe_none)


def test_observe_none_under_numpyro_seed():
    with pytest.raises(ObserveWithoutValueError, match=named("y")):
        numpyro.handlers.seed(observe_none, rng_seed=0)()


# ----------------------------------------------------------------------- duplicate sites


def test_duplicate_site_name():
    def model():
        ppl.sample("z", dist.Normal(0.0, 1.0))
        ppl.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(DuplicateSiteError, match=named("z")):
        Weighted(model)(KEY)
    with pytest.raises(DuplicateSiteError, match=named("z")):
        infer.importance(10).run(KEY, model)


def test_global_site_reusing_a_markov_step_name():
    def model():
        ppl.markov(lambda c, x: ppl.sample("z", dist.Normal(c, 1.0)), 0.0, length=3)
        ppl.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(DuplicateSiteError, match=named("z")):
        infer.importance(10).run(KEY, model)


def test_markov_step_reusing_a_global_site_name():
    def model():
        ppl.sample("z", dist.Normal(0.0, 1.0))
        ppl.markov(lambda c, x: ppl.sample("z", dist.Normal(c, 1.0)), 0.0, length=3)

    with pytest.raises(DuplicateSiteError, match=named("z")):
        Weighted(model)(KEY)


# ------------------------------------------------------------------------ shape mismatch


def test_data_that_would_broadcast_against_batch_shape():
    """y of shape (5,) under a Normal of batch shape (5, 1) would silently become (5, 5)."""

    def model(y):
        mu = ppl.sample("mu", dist.Normal(jnp.zeros((5, 1)), 1.0))
        ppl.observe("y", dist.Normal(mu, 1.0), y)

    with pytest.raises(ShapeMismatchError, match=named("y")):
        infer.importance(10).run(KEY, model, jnp.zeros(5))


def test_data_of_the_wrong_length():
    def model(y):
        ppl.observe("y", dist.Normal(jnp.zeros(5), 1.0), y)

    with pytest.raises(ShapeMismatchError, match=named("y")):
        infer.importance(10).run(KEY, model, jnp.zeros(3))


@pytest.mark.parametrize("n_data", [3, 1], ids=["incompatible", "would-broadcast"])
def test_data_of_the_wrong_length_under_a_plate(n_data):
    """The plate's size counts: (3,) or (1,) data under a plate of size 5 is an error."""

    def model(y):
        with ppl.plate("n", 5):
            ppl.observe("obs", dist.Normal(0.0, 1.0), y)

    with pytest.raises(ShapeMismatchError, match=named("obs")):
        infer.importance(10).run(KEY, model, jnp.zeros(n_data))


def test_multivariate_data_with_the_wrong_event_size():
    def model(y):
        ppl.observe("v", dist.MultivariateNormal(jnp.zeros(3), jnp.eye(3)), y)

    with pytest.raises(ShapeMismatchError, match=named("v")):
        infer.importance(10).run(KEY, model, jnp.zeros(4))
    with pytest.raises(ShapeMismatchError, match=named("v")):
        Weighted(model)(KEY, jnp.zeros((2, 4)))


def test_markov_step_that_changes_the_carry_shape():
    def model():
        ppl.markov(lambda c, x: jnp.stack([c, c]), 0.0, length=3)

    with pytest.raises(ShapeMismatchError, match="markov"):
        infer.importance(10).run(KEY, model)


def test_markov_step_that_changes_the_carry_structure():
    def model():
        ppl.markov(lambda c, x: c[0], (jnp.zeros(()), jnp.zeros(())), length=3)

    with pytest.raises(ShapeMismatchError, match="markov"):
        Weighted(model)(KEY)


def test_markov_xs_of_different_lengths():
    def model():
        ppl.markov(lambda c, x: c + x[0] + x[1], 0.0, xs=(jnp.zeros(3), jnp.zeros(4)))

    with pytest.raises(ShapeMismatchError, match="markov.*xs"):
        Weighted(model)(KEY)


def test_markov_length_disagreeing_with_xs():
    def model():
        ppl.markov(lambda c, x: c + x, 0.0, xs=jnp.zeros(3), length=4)

    with pytest.raises(ShapeMismatchError, match="length"):
        Weighted(model)(KEY)


@pytest.mark.parametrize("length", [None, 0])
def test_markov_without_a_valid_length(length):
    def model():
        ppl.markov(walk_step, 0.0, length=length)

    with pytest.raises(ValueError, match="length"):
        Weighted(model)(KEY)


# ------------------------------------------------------------------- non-finite weights


def test_nan_factor_is_rejected_eagerly():
    def model():
        ppl.factor("f", jnp.nan)

    with pytest.raises(NonFiniteWeightError, match=named("f")):
        Weighted(model)(KEY)


def test_nan_log_density_under_jit_names_the_site():
    def model(y):
        s = ppl.sample("s", dist.Normal(-5.0, 0.1))  # always negative
        ppl.observe("y", dist.Normal(0.0, jnp.sqrt(s)), y)

    with pytest.raises(NonFiniteWeightError, match=named("y")):
        infer.importance(10).run(KEY, model, jnp.array(1.0))


def test_every_weight_minus_infinity():
    def model(y):
        ppl.sample("s", dist.Normal(0.0, 1.0))
        ppl.observe("y", dist.Uniform(0.0, 1.0), y)

    with pytest.raises(NonFiniteWeightError, match="-inf.*'y'"):
        infer.importance(10).run(KEY, model, jnp.array(2.0))


# --------------------------------------------------------------------- counts below one


@pytest.mark.parametrize("make", [infer.importance, lambda n: infer.exact(num_samples=n)])
def test_sample_count_below_one(make):
    with pytest.raises(ValueError, match="num_samples"):
        make(0)
    with pytest.raises(ValueError, match="num_samples"):
        make(-3)


@pytest.mark.parametrize("make", [infer.importance, lambda n: infer.exact(num_samples=n)])
@pytest.mark.parametrize("count", [2.5, 10.0, "10", True])
def test_sample_count_not_an_integer(make, count):
    with pytest.raises(TypeError, match="num_samples"):
        make(count)


def test_population_size_below_one():
    with pytest.raises(ValueError, match="num_particles"):
        Population(normal_model, 0)


# ----------------------------------------------------------------------- unknown options


def test_unknown_resampling_scheme():
    with pytest.raises(UnknownOptionError, match="resample='foo'"):
        infer.resampling.get_scheme("foo")


def test_unknown_to_arviz_weights():
    post = infer.importance(10).run(KEY, normal_model, jnp.zeros(3))
    with pytest.raises(UnknownOptionError, match="weights='bogus'"):
        post.to_arviz(weights="bogus")


@pytest.mark.parametrize("combinator", [infer.importance(10), infer.exact(10)])
@pytest.mark.parametrize("key", ["not a key", 0])
def test_run_needs_a_key(combinator, key):
    with pytest.raises(TypeError, match="key"):
        combinator.run(key, normal_model, jnp.zeros(3))


# --------------------------------------------------------------------- unsupported models


def test_sequential_needs_a_markov_call():
    def model():
        ppl.sample("a", dist.Normal(0.0, 1.0))

    with pytest.raises(UnsupportedModelError, match="markov"):
        Sequential(model).state_space(KEY)


def test_sequential_rejects_two_markov_calls():
    def model():
        ppl.markov(walk_step, 0.0, length=3)
        ppl.markov(walk_step, 0.0, length=3)

    with pytest.raises(UnsupportedModelError, match="markov twice"):
        Sequential(model).state_space(KEY)


def test_sequential_rejects_a_site_after_the_markov_call():
    def model():
        ppl.markov(walk_step, 0.0, length=3)
        ppl.sample("late", dist.Normal(0.0, 1.0))

    with pytest.raises(UnsupportedModelError, match=named("late")):
        Sequential(model).state_space(KEY)


def continuous_latent(y):
    ppl.sample("c", dist.Bernoulli(0.5))
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.observe("y", dist.Normal(mu, 1.0), y)


def test_exact_rejects_a_continuous_latent():
    with pytest.raises(UnsupportedModelError, match=named("mu")):
        infer.exact().run(KEY, continuous_latent, jnp.array(1.0))


def test_enumerated_rejects_a_continuous_latent():
    with pytest.raises(UnsupportedModelError, match=named("mu")):
        Enumerated(continuous_latent).log_evidence(jnp.array(1.0))


@pytest.mark.parametrize("bad", [2.5, "a", True])
def test_population_rejects_non_integer_particles(bad):
    with pytest.raises(TypeError, match="num_particles"):
        Population(normal_model, bad)
