"""The particle engine: how a program is read as a Feynman–Kac model (which global sites
are the time-0 state, which are parameters), and the engine's blocks on their own.

The statistical checks of the engine are those of the algorithms composed from it
(tests/test_smc.py, test_csmc.py, test_paris.py, test_initial_state.py ...), whose
broken-block controls patch the engine's blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.inference import engine
from ppl.semantics.sequential import Sequential, step_reads

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import UnknownOptionError, UnsupportedModelError

YS = jnp.array([0.3, -0.5, 1.2, 0.8, -0.1])


def volatility(ys):
    phi = ppl.sample("phi", dist.Uniform(-1.0, 1.0))
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    x0 = ppl.sample("x0", dist.Normal(0.0, scale))  # its law reads `scale`, the step does not

    def step(x, y):
        x = ppl.sample("x", dist.Normal(phi * x, 0.5))
        ppl.observe("y", dist.Normal(0.0, jnp.exp(x / 2)), y)
        return x

    return ppl.markov(step, init=x0, xs=ys)


def x0_read_by_step(ys):
    x0 = ppl.sample("x0", dist.Normal(0.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(0.9 * x + 0.1 * x0, 1.0))  # the step reads x0
        ppl.observe("y", dist.Normal(x, 0.5), y)
        return x

    return ppl.markov(step, init=x0, xs=ys)


def test_the_sites_the_step_does_not_read_are_the_time_0_state():
    assert step_reads(volatility, (YS,), {}) == ("phi",)
    assert Sequential(volatility).initial_sites(YS) == ("scale", "x0")
    assert Sequential(volatility).initial_sites(YS, fixed={"phi": 0.5}) == ("scale", "x0")
    assert step_reads(x0_read_by_step, (YS,), {}) == ("x0",)
    assert Sequential(x0_read_by_step).initial_sites(YS) == ()


def test_the_reading_works_inside_jit():
    reads = jax.jit(lambda ys: jnp.asarray(len(step_reads(volatility, (ys,), {}))))(YS)
    assert int(reads) == 1


@pytest.mark.slow
def test_smoothers_name_the_parameter_to_fix():
    psi = lambda t, xp, x, p: x  # noqa: E731
    with pytest.raises(UnsupportedModelError, match="'phi'.*fixed="):
        infer.paris(16, functional=psi).run(jax.random.PRNGKey(0), volatility, YS)
    with pytest.raises(UnsupportedModelError, match="'x0'"):
        infer.csmc(8, num_sweeps=3, num_warmup=1).run(jax.random.PRNGKey(0), x0_read_by_step,
                                                      YS)
    # fixing the parameter the step reads is enough: scale and x0 are drawn per particle
    post = infer.csmc(8, num_sweeps=3, num_warmup=1, fixed={"phi": 0.5}).run(
        jax.random.PRNGKey(0), volatility, YS)
    assert post.samples["x0"].shape == (2,) and post.samples["scale"].shape == (2,)
    assert post.samples["x"].shape == (2, 5)


def test_initial_population_draws_the_time_0_state_per_particle():
    fk = engine.FeynmanKac(volatility, (YS,), {}, fixed={"phi": 0.5}, states_only=True)
    assert fk.per_particle == ("scale", "x0") and fk.reads == ()
    state, l_init = fk.initial(jax.random.PRNGKey(1), 64)
    np.testing.assert_array_equal(state.carry, state.params["x0"])
    assert np.unique(np.asarray(state.params["x0"])).size == 64
    assert float(l_init) == 0.0  # no global observe site
    np.testing.assert_allclose(jnp.exp(state.log_weights), 1.0 / 64, rtol=1e-6)
    ref = {"scale": jnp.asarray(2.0), "x0": jnp.asarray(-3.0)}
    state, _ = fk.initial(jax.random.PRNGKey(1), 64, reference=ref)
    assert float(state.params["x0"][0]) == -3.0 and float(state.carry[0]) == -3.0


def test_conditional_resampling_keeps_the_reference_and_the_evidence_scale():
    fk = engine.FeynmanKac(volatility, (YS,), {}, fixed={"phi": 0.5}, states_only=True)
    state, _ = fk.initial(jax.random.PRNGKey(2), 32)
    state = state._replace(log_weights=jnp.log(jax.nn.softmax(jnp.arange(32.0))))
    moved, ancestors, resampled = engine.resample(jax.random.PRNGKey(3), state,
                                                  "multinomial", 0.5, conditional=True)
    assert int(ancestors[engine.REFERENCE_INDEX]) == engine.REFERENCE_INDEX and bool(resampled)
    np.testing.assert_allclose(jnp.exp(moved.log_weights), 1.0 / 32, rtol=1e-6)
    kept, same, no = engine.resample(jax.random.PRNGKey(3), state, "systematic", 0.0)
    assert not bool(no) and np.array_equal(np.asarray(same), np.arange(32))


def test_one_driver_same_key_same_answer_and_paths_buffer():
    fk = engine.FeynmanKac(volatility, (YS,), {})
    zeros = {"x": jnp.zeros((50, 5))}
    run = jax.jit(lambda k: engine.run_particles(k, fk, 50, paths=zeros))
    a, b = run(jax.random.PRNGKey(4)), run(jax.random.PRNGKey(4))
    np.testing.assert_array_equal(a.final.paths["x"], b.final.paths["x"])
    # the last column of the buffer is the final particles' latent values
    np.testing.assert_array_equal(a.final.paths["x"][:, -1], a.final.carry)
    stopped = engine.run_particles(jax.random.PRNGKey(4), fk, 50, num_active=5)
    np.testing.assert_allclose(stopped.log_evidence, a.log_evidence, rtol=1e-5)


def test_a_misspelt_fixed_site_is_named():
    psi = lambda t, xp, x, p: x  # noqa: E731
    with pytest.raises(UnknownOptionError, match="'rh0'"):
        infer.paris(16, functional=psi, fixed={"phi": 0.5, "rh0": 1.0}).run(
            jax.random.PRNGKey(0), volatility, YS)
