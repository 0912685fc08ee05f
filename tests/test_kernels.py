"""The MCMC kernel protocol and chain driver (inference/kernels.py) against exact answers.

* The driver on conjugate / closed-form targets: chains from an overdispersed start, with
  Robbins-Monro warm-up, estimate the posterior mean and variance within k = 4 Monte Carlo
  standard errors (:func:`ppl.semantics.validity.preserves`, the spread of R = 16
  independent replicates, which accounts for burn-in and autocorrelation).
* Kernels (building blocks) by stationarity: C = 4000 chains started at exact posterior
  draws and moved a few times still hold i.i.d. posterior draws (``se="iid"``); a kernel
  whose accept step always accepts drifts away and is caught.
* The driver's bookkeeping exactly: vmapped chains equal chains run one by one, thinning
  and warm-up keep the right iterations, adaptation acts during warm-up only.
* Change of variables: constrain / unconstrain round-trip and the log-Jacobian equals the
  log |det| of a finite-difference Jacobian, for positive, unit-interval, simplex and
  ordered supports.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.scipy import stats
from numpyro.distributions import constraints
from ppl.semantics import validity

from ppl import dist
from ppl import models as zoo
from ppl.errors import UnsupportedModelError

kernels = importlib.import_module("ppl.inference.kernels")

KEY = jax.random.PRNGKey(20261201)
NN_DATA = jnp.array([1.3, 0.4, 2.1, 1.7, 0.9, 1.5], dtype=jnp.float32)
NN_EXACT = zoo.normal_normal_exact(NN_DATA)
NUM_CHAINS = 4000  # stationarity checks: chains started at exact posterior draws
R = 16  # replicates of the end-to-end checks


def nn_log_density(mu):
    """log p(mu, y) of the Normal-Normal model (mu ~ N(0, 1), y_i ~ N(mu, 1))."""
    return stats.norm.logpdf(mu, 0.0, 1.0) + jnp.sum(stats.norm.logpdf(NN_DATA, mu, 1.0))


def moments(mean):
    return {"mean": lambda s: s["x"], "var": lambda s: (s["x"] - mean) ** 2}


def exact_draws(key, n=NUM_CHAINS):
    return NN_EXACT["mean"] + np.sqrt(NN_EXACT["var"]) * jax.random.normal(key, (n,))


# --------------------------------------------------------------------------- end to end

GAMMA_A, GAMMA_B = 3.0, 2.0  # Gamma(3, rate 2): mean 1.5, variance 0.75


def gamma_log_density(u):
    """A positive target sampled in log space: log Gamma(T(u)) + log |dT/du| with the
    Jacobian from :func:`kernels.constrain` (a wrong Jacobian biases both moments)."""
    values, log_det = kernels.constrain({"x": constraints.positive}, {"x": u})
    return dist.Gamma(GAMMA_A, GAMMA_B).log_prob(values["x"]) + log_det


TARGETS = {
    # name: (log density of u, u -> x, exact mean, exact variance, initial u spread)
    "normal_normal": (nn_log_density, lambda u: u, NN_EXACT["mean"], NN_EXACT["var"], 3.0),
    "gamma_positive": (gamma_log_density, jnp.exp, GAMMA_A / GAMMA_B, GAMMA_A / GAMMA_B**2,
                       1.0),
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_random_walk_chain_recovers_the_exact_moments(name):
    """run_chain: 4 vmapped chains from an overdispersed start, 300 warm-up iterations
    tuning the step size (Robbins-Monro towards acceptance 0.44), 1000 kept draws; the
    mean and variance of x are within 4 standard errors over 16 replicates."""
    log_density, to_x, mean, var, spread = TARGETS[name]
    kernel = kernels.random_walk_mh(log_density)

    def init(key):
        return kernels.init_mh_state(log_density, spread * jax.random.normal(key))

    @jax.jit
    def chains(key):
        return kernels.run_chain(key, kernel, init, num_samples=1000, num_warmup=300,
                                 num_chains=4, adapt=kernels.step_size_adaptation(1.0, 0.44))

    rates = []

    def run(key):
        out = chains(key)
        rates.append(float(np.mean(out.infos.accepted)))
        return {"x": to_x(out.states.position).reshape(-1)}, None, None

    report = validity.preserves(run, {"mean": mean, "var": var}, moments(mean), KEY,
                                num_replicates=R, check=False)
    print(f"\n{name}: acceptance {np.mean(rates):.2f}\n{report}")
    assert 0.3 < np.mean(rates) < 0.6  # the adaptation reached the target's neighbourhood
    report.assert_ok()


# --------------------------------------------------------------------------- stationarity


def stationarity_report(kernel, key, num_moves=5):
    """C chains at exact posterior draws, ``num_moves`` kernel steps (thinning), the last
    state checked against the exact moments with the i.i.d. standard error."""
    start = exact_draws(jax.random.fold_in(key, 1))
    states = jax.vmap(lambda x: kernels.init_mh_state(nn_log_density, x))(start)
    out = jax.jit(lambda k: kernels.run_chain(k, kernel, states, num_samples=1,
                                              num_chains=NUM_CHAINS, thinning=num_moves))(key)
    samples = {"x": out.states.position[:, -1]}
    exact = {"mean": NN_EXACT["mean"], "var": NN_EXACT["var"]}
    report = validity.preserves(lambda _: (samples, None, None), exact,
                                moments(NN_EXACT["mean"]), key, se="iid", check=False)
    return report, float(np.mean(out.infos.accepted))


def test_kernel_preserves_the_posterior_and_a_broken_accept_is_caught(monkeypatch):
    """The random-walk kernel leaves the posterior invariant; the same kernel whose accept
    step always accepts (log alpha := 0) is a plain random walk and fails the check."""
    report, rate = stationarity_report(kernels.random_walk_mh(nn_log_density, 1.0), KEY)
    print(f"\nrandom walk: acceptance {rate:.2f}\n{report}")
    assert 0.05 < rate < 0.95
    report.assert_ok()

    valid = kernels.mh_accept
    monkeypatch.setattr(kernels, "mh_accept",
                        lambda key, cur, prop, log_alpha: valid(key, cur, prop, 0.0))
    report, rate = stationarity_report(kernels.random_walk_mh(nn_log_density, 1.0), KEY)
    print(f"\naccept-always (must fail): acceptance {rate:.2f}\n{report}")
    assert rate == 1.0 and not report.ok


def test_smc_move_preserves_the_posterior():
    """as_smc_move: every particle of an exact posterior population moved by 5 kernel
    steps (vmap); the population still has the exact moments, and the info is per
    particle (accepted fraction over the steps)."""
    move = kernels.as_smc_move(kernels.random_walk_mh(nn_log_density), num_steps=5)
    start = exact_draws(jax.random.PRNGKey(5))
    particles = jax.vmap(lambda x: kernels.init_mh_state(nn_log_density, x))(start)
    moved, info = jax.jit(move)(jax.random.PRNGKey(6), particles, 0.8)  # shared step size
    assert info.accepted.shape == (NUM_CHAINS,) and info.accepted.dtype.kind == "f"
    assert 0.1 < float(info.accepted.mean()) < 0.9
    assert np.all(np.asarray(info.accepted) <= 1.0)
    np.testing.assert_allclose(moved.log_density, jax.vmap(nn_log_density)(moved.position),
                               rtol=1e-5)
    exact = {"mean": NN_EXACT["mean"], "var": NN_EXACT["var"]}
    validity.preserves(lambda _: ({"x": moved.position}, None, None), exact,
                       moments(NN_EXACT["mean"]), KEY, se="iid")


# --------------------------------------------------------------------------- bookkeeping


def nn_kernel_and_init():
    kernel = kernels.random_walk_mh(nn_log_density, 0.7)
    return kernel, lambda key: kernels.init_mh_state(nn_log_density, jax.random.normal(key))


def test_chains_are_vmapped_same_key_same_answer():
    """run_chain(num_chains=3) is sample_chain on each chain's key (split, then (init,
    run)), and the same key gives the same answer."""
    kernel, init = nn_kernel_and_init()
    adapt = kernels.step_size_adaptation(0.7, 0.44)
    run = jax.jit(lambda k: kernels.run_chain(k, kernel, init, num_samples=20, num_warmup=10,
                                              num_chains=3, adapt=adapt))
    out, again = run(KEY), run(KEY)
    np.testing.assert_array_equal(out.states.position, again.states.position)
    assert out.states.position.shape == (3, 20) and out.warmup_infos.accepted.shape == (3, 10)
    assert len({float(x) for x in out.states.position[:, -1]}) == 3  # independent chains
    for c, key_c in enumerate(jax.random.split(KEY, 3)):
        key_init, key_run = jax.random.split(key_c)
        one = kernels.sample_chain(key_run, kernel, init(key_init), num_samples=20,
                                   num_warmup=10, adapt=adapt)
        np.testing.assert_allclose(out.states.position[c], one.states.position, rtol=1e-6)
        np.testing.assert_allclose(out.adapt_state[c], one.adapt_state, rtol=1e-6)
    other = run(jax.random.PRNGKey(1))
    assert not np.allclose(other.states.position, out.states.position)


def test_thinning_and_warmup_keep_the_right_iterations():
    """With the same key the driver applies the same kernel steps whatever the split into
    warm-up, thinning and kept draws: thinning keeps every ``thinning``-th state (the last
    of each block), warm-up drops the first ``num_warmup`` ones and reports their infos."""
    kernel, init = nn_kernel_and_init()
    s0 = init(jax.random.PRNGKey(3))

    def chain(**kw):
        return kernels.sample_chain(KEY, kernel, s0, **kw)

    full = chain(num_samples=12)
    assert full.states.position.shape == (12,) and full.warmup_infos.accepted.shape == (0,)
    np.testing.assert_array_equal(full.final_state.position, full.states.position[-1])
    thinned = chain(num_samples=4, thinning=3)
    np.testing.assert_array_equal(thinned.states.position, full.states.position[2::3])
    np.testing.assert_array_equal(thinned.infos.accepted, full.infos.accepted[2::3])
    warm = chain(num_samples=7, num_warmup=5)
    np.testing.assert_array_equal(warm.states.position, full.states.position[5:])
    np.testing.assert_array_equal(warm.warmup_infos.accepted, full.infos.accepted[:5])
    both = chain(num_samples=3, num_warmup=3, thinning=2)
    np.testing.assert_array_equal(both.states.position, full.states.position[4:9:2])
    # collect: a projection of the state is stacked instead of the state
    logs = chain(num_samples=4, thinning=3, collect=lambda s: s.log_density)
    np.testing.assert_array_equal(logs.states, full.states.log_density[2::3])
    # every leaf gets the chain axis in front
    out = kernels.run_chain(KEY, kernel, init, num_samples=4, num_warmup=5, num_chains=2,
                            thinning=3)
    assert out.states.position.shape == (2, 4) and out.states.log_density.shape == (2, 4)
    assert out.infos.accept_prob.shape == (2, 4) and out.warmup_infos.accepted.shape == (2, 5)
    assert out.final_state.position.shape == (2,) and out.adapt_state is None


def test_adaptation_acts_during_warmup_only():
    """The adaptation state after the run depends on the warm-up only (it is frozen while
    sampling); without warm-up it stays at its initial value; Robbins-Monro moves log h
    by (i + 1)^-0.6 (a - target)."""
    kernel, init = nn_kernel_and_init()
    s0 = init(jax.random.PRNGKey(3))
    adapt = kernels.step_size_adaptation(5.0, 0.44)  # too big: the walk must shrink it

    def final(num_warmup, num_samples):
        return kernels.sample_chain(KEY, kernel, s0, num_samples, num_warmup,
                                    adapt=adapt).adapt_state

    np.testing.assert_array_equal(final(50, 10), final(50, 200))
    np.testing.assert_allclose(final(0, 10), np.log(5.0), rtol=1e-6)
    assert float(final(50, 10)) < np.log(5.0)
    step = kernels.robbins_monro(jnp.log(2.0), 0.9, 3, 0.4)
    np.testing.assert_allclose(step, np.log(2.0) + 4.0**-0.6 * 0.5, rtol=1e-6)


def test_init_state_errors():
    kernel, _ = nn_kernel_and_init()
    state = kernels.init_mh_state(nn_log_density, jnp.zeros(()))
    with pytest.raises(ValueError, match="leading num_chains"):
        kernels.run_chain(KEY, kernel, state, num_samples=2, num_chains=2)
    with pytest.raises(ValueError, match="thinning"):
        kernels.sample_chain(KEY, kernel, state, num_samples=2, thinning=0)


# --------------------------------------------------------------------------- accept, walk


def test_mh_accept_rate_nan_and_infinities():
    """P(accept) = min(1, exp(log alpha)); a NaN ratio and -inf always reject, +inf and 0
    always accept; the proposal is cast to the current dtypes."""
    keys = jax.random.split(KEY, 20000)
    current, proposed = {"x": jnp.zeros(())}, {"x": jnp.ones((), jnp.float32)}
    accept = jax.vmap(lambda k, la: kernels.mh_accept(k, current, proposed, la))
    _, info = accept(keys, jnp.full(20000, np.log(0.3), jnp.float32))
    rate = float(info.accepted.mean())
    assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 20000)
    np.testing.assert_allclose(info.accept_prob, 0.3, rtol=1e-5)
    for log_alpha, expected, prob in ((np.nan, False, 0.0), (-np.inf, False, 0.0),
                                      (np.inf, True, 1.0), (0.0, True, 1.0)):
        state, info = accept(keys[:50], jnp.full(50, log_alpha, jnp.float32))
        assert np.all(np.asarray(info.accepted) == expected), log_alpha
        np.testing.assert_array_equal(info.accept_prob, prob)
        np.testing.assert_array_equal(state["x"], float(expected))
    state, _ = kernels.mh_accept(KEY, {"n": jnp.int32(1)}, {"n": jnp.float32(2.0)}, 0)
    assert state["n"].dtype == jnp.int32 and int(state["n"]) == 2


def test_random_walk_scales_and_cholesky():
    """Per-leaf scales (a pytree like the position) and a Cholesky factor set the
    proposal's covariance; the walk is centred at the current position."""
    keys = jax.random.split(KEY, 20000)
    position = {"a": jnp.ones(2), "b": jnp.zeros(())}
    moves = jax.vmap(lambda k: kernels.random_walk(k, position, {"a": 0.5, "b": 2.0}))(keys)
    np.testing.assert_allclose(np.std(moves["a"], axis=0), 0.5, rtol=0.03)
    np.testing.assert_allclose(np.std(moves["b"]), 2.0, rtol=0.03)
    np.testing.assert_allclose(np.mean(moves["a"], axis=0), 1.0, atol=0.02)
    chol = jnp.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 0.3]])
    flat = jax.vmap(lambda k: ravel_pytree(
        kernels.random_walk(k, position, 2.0, cholesky=chol))[0])(keys)
    np.testing.assert_allclose(np.cov(flat.T), 4.0 * chol @ chol.T, atol=0.08)


# --------------------------------------------------------------------------- constraints

SUPPORTS = {
    # name: (support, unconstrained point, the coordinates of x the Jacobian is taken of)
    "positive": (constraints.positive, np.array([-0.7, 0.2, 1.3]), slice(None)),
    "unit_interval": (constraints.unit_interval, np.array([-1.2, 0.4]), slice(None)),
    "simplex": (constraints.simplex, np.array([0.3, -0.5, 1.1]), slice(0, -1)),
    "ordered": (constraints.ordered_vector, np.array([-0.4, 0.9, -1.5, 0.2]), slice(None)),
}


def finite_difference_log_det(fn, u, h=1e-6):
    """log |det J| of ``fn`` at ``u`` with the Jacobian by central differences."""
    columns = [(np.asarray(fn(u + h * e)) - np.asarray(fn(u - h * e))) / (2 * h)
               for e in np.eye(u.shape[0])]
    return np.linalg.slogdet(np.stack(columns, axis=1))[1]


@pytest.mark.parametrize("name", list(SUPPORTS))
def test_constrain_round_trip_and_log_jacobian(x64, name):
    """constrain / unconstrain invert each other; the log-Jacobian is the log |det| of a
    finite-difference Jacobian (for the simplex, of u -> x[:-1], K - 1 free coordinates);
    over a dict of sites it is the sum over the sites."""
    support, u, free = SUPPORTS[name]
    u = jnp.asarray(u, jnp.float64)
    x, log_det = kernels.constrain_site(support, u)
    assert bool(jnp.all(support(x)))
    np.testing.assert_allclose(kernels.unconstrain({"s": support}, {"s": x})["s"], u,
                               rtol=1e-9, atol=1e-12)
    numeric = finite_difference_log_det(lambda v: kernels.constrain_site(support, v)[0][free],
                                        np.asarray(u))
    np.testing.assert_allclose(log_det, numeric, rtol=1e-6, atol=1e-8)
    values, total = kernels.constrain({"s": support, "r": constraints.real},
                                      {"s": u, "r": jnp.array([0.5, -2.0])})
    np.testing.assert_allclose(values["s"], x)
    np.testing.assert_allclose(values["r"], [0.5, -2.0])
    np.testing.assert_allclose(total, log_det)


def test_discrete_support_has_no_bijection():
    with pytest.raises(UnsupportedModelError, match="no bijection"):
        kernels.unconstrain({"k": constraints.nonnegative_integer}, {"k": jnp.array(3)})
