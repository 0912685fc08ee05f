"""One finite-ness check before every gradient-based sampler, optimiser and smoother returns.

NUTS and HMC (lowered to NumPyro's MCMC), SVI, PaRIS and PaRIS particle Gibbs each raise
a :class:`~ppl.errors.NonFiniteWeightError` naming the site (and the ``markov`` step) when
the log density is not finite: NaN (or infinite) data inside a ``markov`` step (traced, so
the DSL's eager data check cannot see them), a +inf ``factor``, a log density that is NaN
at every parameter value. Before, NUTS/HMC returned the initial point repeated (every
transition divergent), SVI returned NaN draws, and PaRIS/PPG blamed the carry. SVI whose
optimiser diverges (finite data, ``learning_rate=1e6``) says so, with the step; a
distribution parameter outside its constraint in an eager run (a negative scale) is an
:class:`~ppl.errors.InvalidDistributionError` naming the site instead of NumPyro's bare
``ValueError``.

Each combinator is built once per module so that its cases share one compilation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import InvalidDistributionError, NonFiniteWeightError


@ppl.model
def chain(ys, c, b):
    """A random walk with drift ``mu``; observation scale ``sqrt(c - mu^2)`` (NaN for every
    ``mu`` when ``c < 0``) and a factor ``b`` at every step."""
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(0.5 * x + mu, 1.0))
        ppl.observe("y", dist.Normal(x, jnp.sqrt(c - mu**2)), y)
        ppl.factor("f", b * jnp.ones(()))
        return x

    ppl.markov(step, 0.0, ys)


YS = jnp.array([0.1, -0.2, 0.3])
FINE_C, FINE_B = jnp.array(100.0), jnp.array(0.0)

#: case -> (arguments of ``chain``, what the error must say)
CASES = {
    "nan_data": ((YS.at[1].set(jnp.nan), FINE_C, FINE_B), r"site 'y' at step t=1: NaN data"),
    "inf_factor": ((YS, FINE_C, jnp.array(jnp.inf)), r"site 'f' at step t=0.*\+inf"),
    "nan_parameter": ((YS, jnp.array(-1.0), FINE_B),
                      r"site 'y' at step t=0.*NaN with finite data"),
}


def _psi(t, x_prev, x, params):
    return x


ALGORITHMS = {
    "nuts": infer.nuts(2, 0),
    "hmc": infer.hmc(2, 0, num_steps=2),
    "svi": infer.svi(num_steps=2, num_samples=2),
    "paris": infer.paris(4, 2, _psi, fixed={"mu": jnp.array(0.5)}),
    "ppg": infer.ppg(4, 2, num_sweeps=1, num_warmup=0, functional=_psi,
                     fixed={"mu": jnp.array(0.5)}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow)
                                    if m in ("hmc", "ppg") else m for m in ALGORITHMS])
def test_nonfinite_log_density_names_the_site_and_step(method, case):
    args, pattern = CASES[case]
    with pytest.raises(NonFiniteWeightError, match=pattern) as err:
        ALGORITHMS[method].run(jax.random.PRNGKey(0), chain, *args)
    message = str(err.value)
    assert message.startswith(method)
    assert "learning rate" not in message and "carry" not in message


@pytest.mark.parametrize("method", ["nuts", "svi"])
def test_infinite_data_make_the_log_density_minus_inf_everywhere(method):
    with pytest.raises(NonFiniteWeightError, match=r"site 'y' at step t=1: infinite data"):
        ALGORITHMS[method].run(jax.random.PRNGKey(0), chain, YS.at[1].set(jnp.inf), FINE_C,
                               FINE_B)


@ppl.model
def gaussian(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.observe("y", dist.Normal(mu, 1.0), y)


def test_svi_diverging_optimiser_is_named_with_its_step():
    svi = infer.svi(num_steps=20, num_samples=2, learning_rate=1e6)
    with pytest.raises(NonFiniteWeightError,
                       match=r"optimiser diverged.*finite up to step \d+.*at step \d+.*"
                             r"smaller learning rate") as err:
        svi.run(jax.random.PRNGKey(0), gaussian, jnp.array([0.1, 0.2]))
    assert "site" not in str(err.value)  # the data and the initial density are finite


@ppl.model
def negative_scale(y):
    s = ppl.sample("s", dist.Normal(-3.0, 0.1))  # negative in every run
    ppl.observe("y", dist.Normal(0.0, s), y)


@pytest.mark.parametrize("method", ["nuts", "svi", "tempered_smc"])
def test_invalid_parameter_names_the_site(method):
    algorithm = {
        "nuts": infer.nuts(2, 2),
        "svi": infer.svi(num_steps=2, num_samples=2),
        "tempered_smc": infer.tempered_smc(8),
    }[method]
    with pytest.raises(InvalidDistributionError,
                       match=r"site 'y': Normal parameter 'scale' must satisfy Positive"):
        algorithm.run(jax.random.PRNGKey(0), negative_scale, jnp.array([0.1, 0.2]))


@pytest.mark.slow  # one vsde compilation (~15 s)
def test_vsde_infinite_data_is_not_blamed_on_the_learning_rate():
    from ppl.inference.variational_sde import vsde

    from ppl.sde import sde

    times = jnp.linspace(0.0, 1.0, 5)

    def ou(ys):
        x = sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, 0.0, times)
        ppl.observe("y", dist.Normal(x[1:], 0.5), ys)

    fit = vsde(num_steps=2, num_paths=2, num_samples=2, control="affine", progress_bar=False)
    with pytest.raises(NonFiniteWeightError, match=r"site 'y': infinite data") as err:
        fit.run(jax.random.PRNGKey(0), ou, jnp.array([0.0, jnp.inf, 0.0, 0.0]))
    assert "lower learning_rate" not in str(err.value)
