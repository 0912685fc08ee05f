"""PaRIS (Olsson & Westerborn 2017) against the exact RTS smoother of the LGSSMs.

The functional is psi = (x_t, x_{t-1} x_t) (1-D) or (x_t, vec(x_{t-1} x_t^T)) (2-D), whose
smoothed expectation summed over t is the sum of the RTS means and of E[x_{t-1} x_t^T | y].
Tolerances are k = 4 replicate standard errors (``preserves``); N is large against T in
the fast tests so that the O(T/N) bias of PaRIS is well below the Monte Carlo error
(``tests/test_ppg.py`` shows that bias at small N).
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.inference.smoothing import paris
from ppl.models import (
    lgssm_1d,
    lgssm_1d_exact,
    lgssm_1d_unknown_rho,
    lgssm_2d,
    lgssm_2d_exact,
    simulate_lgssm_1d,
    simulate_lgssm_2d,
)
from ppl.semantics.validity import preserves
from test_csmc import non_markov_carry

import ppl
from ppl import dist
from ppl.errors import UnknownOptionError, UnsupportedModelError

# the module (``ppl.inference.smoothing`` may also name the function once registered)
paris_module = importlib.import_module("ppl.inference.smoothing")


def psi_1d(t, x_prev, x, params):
    return jnp.stack([x, x_prev * x])


def psi_2d(t, x_prev, x, params):
    return jnp.concatenate([x, jnp.outer(x_prev, x).reshape(-1)])


def data_1d(T, seed=1):
    _, ys = simulate_lgssm_1d(jax.random.PRNGKey(seed), T)
    ex = lgssm_1d_exact(np.asarray(ys))
    return ys, {"sum_x": ex["smoothed_means"].sum(), "sum_xx": ex["e_xprev_x"].sum()}


TESTS_1D = {
    "sum_x": lambda s: s["functional"][:, 0],
    "sum_xx": lambda s: s["functional"][:, 1],
}
T = 40
# module-level combinators: each compiles once per model and data shape, shared by tests
EXACT = paris(300, 2, psi_1d)
REJECT = paris(300, 2, psi_1d, backward="reject", max_trials=4)


# "reject" is slow here (keeps the fast suite under 15 minutes): the 2-D test runs it fast
@pytest.mark.parametrize("backward", ["exact", pytest.param("reject", marks=pytest.mark.slow)])
def test_paris_recovers_rts_1d(backward):
    ys, exact = data_1d(T)
    smoother = EXACT if backward == "exact" else REJECT
    report = preserves(lambda k: smoother.run(k, lgssm_1d, ys), exact, TESTS_1D,
                       jax.random.PRNGKey(0), num_replicates=10)
    print(report)
    post = smoother.run(jax.random.PRNGKey(3), lgssm_1d, ys)
    if backward == "reject":  # the budget of 4 trials is used up sometimes: fallbacks ran
        print("fallbacks", int(np.sum(post.info["fallbacks"])), "of", T * 300 * 2)
        assert int(np.sum(post.info["fallbacks"])) > 0
        assert int(np.sum(post.info["accepted"])) > 0


def test_paris_recovers_rts_2d():
    _, ys = simulate_lgssm_2d(jax.random.PRNGKey(2), 20)
    ex = lgssm_2d_exact(np.asarray(ys))
    exact = {f"x{i}": ex["smoothed_means"][:, i].sum() for i in range(2)}
    exact.update({f"xx{i}": ex["e_xprev_x"].sum(0).reshape(-1)[i] for i in range(4)})
    tests = {f"x{i}": (lambda s, i=i: s["functional"][:, i]) for i in range(2)}
    tests.update({f"xx{i}": (lambda s, i=i: s["functional"][:, 2 + i]) for i in range(4)})
    smoother = paris(200, 2, psi_2d, backward="reject")
    print(preserves(lambda k: smoother.run(k, lgssm_2d, ys), exact, tests,
                    jax.random.PRNGKey(1), num_replicates=6))


# slow (keeps the fast suite under 15 minutes): a broken-method control; the valid smoother's
# checks stay fast
@pytest.mark.slow
def test_dropping_filter_weights_is_detected(monkeypatch):
    """A broken backward kernel m(x_{t-1}^k, x_t^i) without the filter weights w_{t-1}^k
    fails the check (T = 3: every backward step matters and the standard errors are
    small; the right kernel passes it: z = -1.5 and -0.7 when we ran it)."""
    ys, exact = data_1d(3)

    def broken(fk, t, prev, values):
        return jax.vmap(lambda p, c: fk.log_transition(t, p, c, values))(prev.params, prev.carry)

    monkeypatch.setattr(paris_module, "backward_log_weights", broken)
    smoother = paris(300, 2, psi_1d)
    bad = preserves(lambda k: smoother.run(k, lgssm_1d, ys), exact, TESTS_1D,
                    jax.random.PRNGKey(0), num_replicates=12, check=False)
    print(bad)
    assert not bad.ok


def test_result_api_and_determinism():
    ys, _ = data_1d(T)
    post = EXACT.run(jax.random.PRNGKey(0), lgssm_1d, ys)
    again = EXACT.run(jax.random.PRNGKey(0), lgssm_1d, ys)
    np.testing.assert_array_equal(post.estimate, again.estimate)
    np.testing.assert_allclose(post.mean("functional"), post.estimate, rtol=1e-5)
    assert post.online_estimates.shape == (T, 2)
    np.testing.assert_allclose(post.online_estimates[-1], post.estimate)
    assert post.samples["functional"].shape == (300, 2)
    assert post.samples["x"].shape == (300,)
    assert "functional" in post.to_arviz().posterior


def test_global_sites_need_params():
    ys, _ = data_1d(T)
    with pytest.raises(UnsupportedModelError, match="rho"):
        EXACT.run(jax.random.PRNGKey(0), lgssm_1d_unknown_rho, ys)
    fixed = paris(300, 2, psi_1d, fixed={"rho": 0.9})
    post = fixed.run(jax.random.PRNGKey(0), lgssm_1d_unknown_rho, ys)
    plain = EXACT.run(jax.random.PRNGKey(0), lgssm_1d, ys)
    np.testing.assert_allclose(post.estimate, plain.estimate, rtol=1e-4)


@ppl.model
def laplace_walk(ys):
    def step(x, y):
        x = ppl.sample("x", dist.Laplace(x, 1.0))
        ppl.observe("y", dist.Normal(x, 0.5), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


def test_bad_input():
    ys, _ = data_1d(5)
    with pytest.raises(UnknownOptionError, match="backward"):
        paris(16, 2, psi_1d, backward="fast")
    with pytest.raises(TypeError, match="functional"):
        paris(16, 2, None)
    with pytest.raises(ValueError, match="num_backward"):
        paris(16, 0, psi_1d)
    with pytest.raises(ValueError, match="num_particles"):
        paris(0, 2, psi_1d)
    with pytest.raises(UnknownOptionError, match="resample"):
        paris(16, 2, psi_1d, resample="bogus")
    with pytest.raises(TypeError, match="log_bound"):
        paris(16, 2, psi_1d, backward="reject", log_bound=3.0)
    # no bound can be derived for a Laplace transition
    with pytest.raises(UnsupportedModelError, match="Laplace"):
        paris(16, 2, psi_1d, backward="reject").run(jax.random.PRNGKey(0), laplace_walk, ys)
    # ... a user bound is used and checked: a wrong one is caught
    low = paris(16, 2, psi_1d, backward="reject", log_bound=lambda t, x, p: -5.0)
    with pytest.raises(UnsupportedModelError, match="bound"):
        low.run(jax.random.PRNGKey(0), laplace_walk, ys)
    # the likelihood reads the previous carry: the carry is not the Markov state
    with pytest.raises(UnsupportedModelError, match="Markov state"):
        paris(16, 2, psi_1d).run(jax.random.PRNGKey(0), non_markov_carry, ys)
    with pytest.raises(TypeError, match="psi"):
        paris(16, 2, lambda t, x: x).run(jax.random.PRNGKey(0), lgssm_1d, ys)


@pytest.mark.slow
@pytest.mark.parametrize("backward", ["exact", "reject"])
def test_paris_rts_1d_issue_size(backward):
    """The issue's check: T = 500, N = 500, Ñ = 2, 20 seeds."""
    ys, exact = data_1d(500)
    smoother = paris(500, 2, psi_1d, backward=backward)
    print(preserves(lambda k: smoother.run(k, lgssm_1d, ys), exact, TESTS_1D,
                    jax.random.PRNGKey(0), num_replicates=20))
