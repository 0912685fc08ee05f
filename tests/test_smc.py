"""SMC (inference/filtering.py, a composition over inference/engine.py) against exact
answers: Kalman for the linear-Gaussian SSM, forward-backward for the discrete HMM.

Every tolerance comes from the Monte Carlo error of R independent runs at a fixed seed:

* evidence: Z-hat (not its log) is unbiased, so the mean of Z-hat / Z over the runs must be
  within 3 standard errors of 1; and on the log scale, E[log Z-hat] = log Z - Var/2 to
  first order (log Z-hat is asymptotically normal, Bérard, Del Moral & Doucet 2014), so the
  mean of log Z-hat must be within 3 standard errors of log Z - s^2/2 (which is below
  log Z: Jensen);
* filtering means / marginals: per time step, mean over runs within 3 standard errors of
  the exact value at >= 95% of the steps, and max |z| moderate.

The replicates are one jit of ``vmap(SMC.core)`` over keys.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist, weights
from ppl import inference as infer
from ppl import models as zoo

engine = importlib.import_module("ppl.inference.engine")

KEY = jax.random.PRNGKey(20261128)
LGSSM = dict(rho=0.9, sigma_x=1.0, sigma_y=0.5)
R = 20  # independent runs per validity check


# --------------------------------------------------------------------------- helpers


def replicate(algo, model, args, key=KEY, num_runs=R):
    """``num_runs`` independent runs of ``algo`` (an SMC combinator, or a list of them:
    then a list of results, compiled together, which is much faster than one by one):
    one jit of a vmap over keys."""
    keys = jax.random.split(key, num_runs)
    algos = algo if isinstance(algo, list) else [algo]

    def runs(keys, a):
        return [jax.vmap(lambda k, alg=alg: alg.core(k, model, a, {}))(keys) for alg in algos]

    out = jax.jit(runs)(keys, args)
    return out if isinstance(algo, list) else out[0]


def evidence_z(log_z_hats, log_z):
    """``(z natural scale, z log scale)``: mean of Z-hat / Z against 1, and mean log Z-hat
    against log Z - s^2 / 2, each in units of its replicate standard error (infinite for
    an estimator off the mark with no spread)."""
    lz = np.asarray(log_z_hats, np.float64)
    r = len(lz)
    ratio = np.exp(lz - log_z)
    s2 = lz.var(ddof=1)
    with np.errstate(divide="ignore"):
        z_nat = (ratio.mean() - 1.0) / (ratio.std(ddof=1) / np.sqrt(r))
        z_log = (lz.mean() - (log_z - s2 / 2)) / np.sqrt(s2 / r)
    return float(z_nat), float(z_log)


def assert_evidence(log_z_hats, log_z, k=3.0):
    z_nat, z_log = evidence_z(log_z_hats, log_z)
    assert abs(z_nat) < k and abs(z_log) < k, (z_nat, z_log)
    return z_nat, z_log


def assert_ancestry(paths, history, ancestors):
    """Walk the genealogy back by hand: path n at step t is particle ``idx_t[n]`` of step
    t, with ``idx_{t-1} = ancestors[t, idx_t]``, starting from the final particles."""
    paths, history, ancestors = (np.asarray(a) for a in (paths, history, ancestors))
    idx = np.arange(paths.shape[0])
    for t in range(paths.shape[1] - 1, -1, -1):
        np.testing.assert_array_equal(paths[:, t], history[t, idx])
        idx = ancestors[t, idx]
    assert len(np.unique(ancestors[-1])) < ancestors.shape[1]  # it did resample


def per_step_z(estimates, exact):
    """z-scores, per time step (and trailing axes), of the mean over runs (axis 0)."""
    est = np.asarray(estimates, np.float64)
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    return (est.mean(axis=0) - np.asarray(exact)) / se


def assert_per_step(z, frac=0.95, max_abs=4.5):
    z = np.abs(np.asarray(z)).ravel()
    assert np.mean(z < 3.0) >= frac and z.max() < max_abs, (np.mean(z < 3.0), z.max())


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def lgssm_data():
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), 50, **LGSSM)
    return ys, zoo.lgssm_1d_exact(ys, **LGSSM)


@pytest.fixture(scope="module")
def short_data():
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(2), 5, **LGSSM)
    return ys, zoo.lgssm_1d_exact(ys, **LGSSM)


@pytest.fixture(scope="module")
def lgssm_runs(lgssm_data):
    ys, _ = lgssm_data
    return replicate(infer.smc(500), zoo.lgssm_1d, (ys,))


# --------------------------------------------------------------------------- LGSSM


def lgssm_failures(out, exact, k=3.0, frac=0.95, max_abs=4.5):
    """The LGSSM validity battery on R runs; returns the failed checks (empty if valid).

    Evidence (natural and log scale, see the module docstring), and per time step the
    filtering mean and second moment, the latter from the recorded particles and
    filtering weights."""
    failures = {}
    z_nat, z_log = evidence_z(out.log_evidence, exact["log_evidence"])
    if not (abs(z_nat) < k and abs(z_log) < k):
        failures["log_evidence"] = (z_nat, z_log)
    w = jnp.exp(out.steps.log_weights)
    second = jnp.sum(w * out.steps.values["x"] ** 2, axis=-1)
    exact_second = exact["filter_vars"] + exact["filter_means"] ** 2
    for name, est, ex in (("filter_mean", out.steps.filter_means["x"], exact["filter_means"]),
                          ("filter_second_moment", second, exact_second)):
        z = np.abs(per_step_z(est, ex))
        if not (np.mean(z < k) >= frac and z.max() < max_abs):
            failures[name] = (float(np.mean(z < k)), float(z.max()))
    return failures


def test_lgssm_evidence_and_filter_moments_match_kalman(lgssm_data, lgssm_runs):
    """T = 50, N = 500, 20 runs: Z-hat / Z has mean 1; log Z-hat sits below log Z by about
    Var / 2 (Jensen); filtering mean and second moment match Kalman at every step."""
    _, exact = lgssm_data
    assert lgssm_failures(lgssm_runs, exact) == {}
    assert np.mean(lgssm_runs.log_evidence) < exact["log_evidence"]
    # the increments add up to the estimate
    total = lgssm_runs.log_evidence_init + lgssm_runs.steps.log_evidence_increment.sum(-1)
    np.testing.assert_allclose(total, lgssm_runs.log_evidence, rtol=1e-6)


def test_short_series_evidence_is_unbiased_for_every_scheme(short_data):
    """T = 5, where Z-hat / Z has small variance, so E[Z-hat / Z] = 1 is a sharp check;
    ess_threshold=1 resamples at every step, so each scheme is exercised each time."""
    ys, exact = short_data
    schemes = ("systematic", "stratified", "residual", "multinomial")
    algos = [infer.smc(200, resample=scheme, ess_threshold=1.0) for scheme in schemes]
    outs = replicate(algos, zoo.lgssm_1d, (ys,), num_runs=50)
    for scheme, out in zip(schemes, outs, strict=True):
        assert bool(out.steps.resampled[:, 1:].all()), scheme
        assert_evidence(out.log_evidence, exact["log_evidence"])
        assert_ancestry(out.paths["x"][0], out.steps.values["x"][0], out.steps.ancestors[0])


def test_guided_proposal_is_valid_and_beats_the_bootstrap(lgssm_data, lgssm_runs):
    """The locally optimal proposal q(x_t | x_{t-1}, y_t) (Doucet, Godsill & Andrieu 2000):
    the evidence stays unbiased and its spread shrinks."""
    ys, exact = lgssm_data
    sx2, sy2, rho = LGSSM["sigma_x"] ** 2, LGSSM["sigma_y"] ** 2, LGSSM["rho"]
    s2 = 1.0 / (1.0 / sx2 + 1.0 / sy2)

    def optimal(t, x_prev, y):
        ppl.sample("x", dist.Normal(s2 * (rho * x_prev / sx2 + y / sy2), jnp.sqrt(s2)))

    out = replicate(infer.smc(500, proposal=optimal), zoo.lgssm_1d, (ys,))
    assert_evidence(out.log_evidence, exact["log_evidence"])
    assert_per_step(per_step_z(out.steps.filter_means["x"], exact["filter_means"]))
    assert np.std(out.log_evidence) < 0.5 * np.std(lgssm_runs.log_evidence)


def test_without_history_the_evidence_and_final_particles_are_the_same(lgssm_data):
    """``history=False`` keeps no genealogy, yet with the same key it estimates the same
    evidence, with the same final weighted particles and per-step summaries."""
    ys, _ = lgssm_data
    full = infer.smc(100).run(KEY, zoo.lgssm_1d, ys)
    lean = infer.smc(100, history=False).run(KEY, zoo.lgssm_1d, ys)
    np.testing.assert_allclose(lean.log_evidence, full.log_evidence, rtol=1e-6)
    np.testing.assert_allclose(lean.log_weights, full.log_weights, rtol=1e-6)
    np.testing.assert_allclose(lean.samples["x"], full.samples["x"][..., -1], rtol=1e-6)
    for name in ("ess", "resampled", "log_evidence_increments"):
        np.testing.assert_allclose(lean.info[name], full.info[name], rtol=1e-5)
    np.testing.assert_allclose(lean.info["filter_means"]["x"], full.info["filter_means"]["x"],
                               rtol=1e-5, atol=1e-6)
    assert "ancestors" in full.info and "ancestors" not in lean.info
    with pytest.raises(TypeError, match="history"):
        infer.smc(100, history="no")


def test_particle_keys_give_independent_standard_normal_draws():
    """The per-particle keys (the shared key with the index XOR-ed in) are distinct, keep
    a typed key's implementation, and their draws are independent N(0, 1): the sample
    mean, variance and lag-1 correlation across 20000 particles are within 4 SE, and two
    consecutive splits of the shared key give uncorrelated populations."""
    n = 20000
    index = jnp.arange(n, dtype=jnp.uint32)
    key_a, key_b = jax.random.split(KEY)
    draw = jax.vmap(lambda k, i: jax.random.normal(engine.particle_key(k, i)),
                    in_axes=(None, 0))
    a, b = np.asarray(draw(key_a, index)), np.asarray(draw(key_b, index))
    keys = jax.vmap(engine.particle_key, in_axes=(None, 0))(key_a, index)
    assert len(np.unique(np.asarray(keys), axis=0)) == n
    se = 1.0 / np.sqrt(n)
    assert abs(a.mean()) < 4 * se and abs(a.var() - 1.0) < 4 * np.sqrt(2.0) * se
    assert abs(np.corrcoef(a[1:], a[:-1])[0, 1]) < 4 * se
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 * se
    typed = engine.particle_key(jax.random.key(0), 3)
    assert jax.random.key_impl(typed) == jax.random.key_impl(jax.random.key(0))


# --------------------------------------------------------------------------- HMM


def test_discrete_hmm_evidence_and_filtered_marginals():
    _, ys = zoo.simulate_discrete_hmm(jax.random.PRNGKey(3), 40)
    exact = zoo.discrete_hmm_exact(ys)
    out = replicate(infer.smc(500), zoo.discrete_hmm, (ys,))
    assert_evidence(out.log_evidence, exact["log_evidence"])
    w = jnp.exp(out.steps.log_weights)  # (R, T, N)
    one_hot = jax.nn.one_hot(out.steps.values["x"], 3)  # (R, T, N, K)
    filtered = jnp.einsum("rtn,rtnk->rtk", w, one_hot)
    assert_per_step(per_step_z(filtered, exact["filtered"]))
    fm = exact["filtered"] @ np.arange(3.0)
    assert_per_step(per_step_z(out.steps.filter_means["x"], fm))


# --------------------------------------------------------------------------- globals


@ppl.model
def offset_lgssm(y0, ys):
    """A global offset theta ~ N(0, 1), observed once before the markov call (so it
    weights the initial particles) and shifting every y_t: a linear-Gaussian model in the
    augmented state (x_t, theta)."""
    theta = ppl.sample("theta", dist.Normal(0.0, 1.0))
    ppl.observe("y0", dist.Normal(theta, 1.0), y0)
    ppl.deterministic("two_theta", 2.0 * theta)

    def step(x, y):
        x = ppl.sample("x", dist.Normal(0.9 * x, 1.0))
        ppl.observe("y", dist.Normal(x + theta, 0.5), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


def offset_exact(y0, ys):
    """Kalman on (x, theta) with theta | y0 ~ N(y0 / 2, 1 / 2); plus log N(y0; 0, 2)."""
    y0 = float(y0)
    out = zoo.kalman_filter(
        np.asarray(ys, np.float64), A=np.diag([0.9, 1.0]), Q=np.diag([1.0, 0.0]),
        C=np.array([[1.0, 1.0]]), R=np.array([[0.25]]), m0=np.array([0.0, y0 / 2]),
        P0=np.diag([0.0, 0.5]),
    )
    log_p_y0 = -0.5 * np.log(2 * np.pi * 2.0) - y0**2 / 4.0
    return out["log_evidence"] + log_p_y0, out["filter_means"]


def test_global_sites_are_drawn_per_particle_and_weight_the_start():
    y0 = jnp.asarray(1.3)
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(4), 10, **LGSSM)
    ys = ys + 1.0
    log_z, filter_means = offset_exact(y0, ys)
    out = replicate(infer.smc(1000), offset_lgssm, (y0, ys))
    assert out.globals["theta"].shape == (R, 1000)
    np.testing.assert_allclose(out.globals["two_theta"], 2 * out.globals["theta"], rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(out.log_evidence_init)))
    assert_evidence(out.log_evidence, log_z)
    assert_per_step(per_step_z(out.steps.filter_means["x"], filter_means[:, 0]))
    # the final weighted particles estimate E[theta | y0, y_{1:T}]
    w = jnp.exp(out.log_weights - jax.scipy.special.logsumexp(out.log_weights, -1, keepdims=True))
    theta_mean = jnp.sum(w * out.globals["theta"], -1)
    assert abs(float(per_step_z(theta_mean, filter_means[-1, 1]))) < 3.0


# --------------------------------------------------------------------------- the Posterior


def test_posterior_with_threshold_zero_is_importance_sampling_over_paths(short_data):
    """ess_threshold=0 never resamples: ancestors are the identity and each final log
    weight is the path's log-likelihood sum_t log g(x_t, y_t) (sequential importance
    sampling). Also: the Posterior's shapes, ArviZ conversion, same key same answer."""
    ys, _ = short_data
    algo = infer.smc(128, ess_threshold=0.0)
    post = algo.run(KEY, zoo.lgssm_1d, ys)
    assert not bool(post.info["resampled"].any())
    np.testing.assert_array_equal(post.info["ancestors"], np.tile(np.arange(128), (5, 1)))
    np.testing.assert_allclose(post.log_weights, post.log_likelihood["y"].sum(-1),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        jax.scipy.special.logsumexp(post.log_weights) - np.log(128), post.log_evidence,
        rtol=1e-5,
    )
    np.testing.assert_allclose(post.log_likelihood["y"],
                               dist.Normal(post.samples["x"], 0.5).log_prob(ys), rtol=1e-5)
    np.testing.assert_array_equal(post.observed_data["y"], ys)
    assert post.samples["x"].shape == (128, 5) and post.log_weights.shape == (128,)
    info = post.info
    assert info["ancestors"].shape == (5, 128) and info["ess"].shape == (5,)
    assert info["resampled"].shape == (5,) and info["log_evidence_increments"].shape == (5,)
    assert info["filter_means"]["x"].shape == (5,) and info["particles"]["x"].shape == (5, 128)
    assert post.to_arviz().posterior["x"].shape == (1, 128, 5)
    again = algo.run(KEY, zoo.lgssm_1d, ys)
    np.testing.assert_array_equal(post.samples["x"], again.samples["x"])
    np.testing.assert_array_equal(post.log_weights, again.log_weights)
    other = algo.run(jax.random.PRNGKey(1), zoo.lgssm_1d, ys)
    assert not np.array_equal(post.samples["x"], other.samples["x"])


# --------------------------------------------------------------------------- wrong variants


def _forget_reweighting(real):
    """The engine's move without its reweighting: every log potential log G_t is 0."""

    def propagate(*args, **kwargs):
        result, log_g = real(*args, **kwargs)
        return result, jnp.zeros_like(log_g)

    return propagate


def _keep_weights_after_resampling(real):
    """The engine's resampling that keeps the old weights on the resampled particles."""

    def resample(key, state, *args, **kwargs):
        new, idx, resampled = real(key, state, *args, **kwargs)
        log_w, _ = weights.normalise(state.log_weights[idx])
        return new._replace(log_weights=log_w), idx, resampled

    return resample


@pytest.mark.parametrize("block, breaker", [
    ("propagate", _forget_reweighting),
    ("resample", _keep_weights_after_resampling),
])
@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_a_wrong_smc_fails_the_checks(monkeypatch, lgssm_data, block, breaker):
    """The LGSSM battery has power over the engine's blocks: an SMC whose move forgets to
    reweight the particles fails the evidence check; one that keeps the weights after
    resampling (counting them twice) fails the filtering checks (its evidence bias, about
    a 1-sigma shift here, is only caught on short series)."""
    ys, exact = lgssm_data
    monkeypatch.setattr(engine, block, breaker(getattr(engine, block)))
    out = replicate(infer.smc(500), zoo.lgssm_1d, (ys,))
    failures = lgssm_failures(out, exact)
    assert "filter_mean" in failures
    if block == "propagate":
        assert "log_evidence" in failures


# --------------------------------------------------------------------------- errors


def test_bad_options_raise_clear_errors():
    with pytest.raises(ValueError, match="num_particles"):
        infer.smc(0)
    with pytest.raises(TypeError, match="num_particles"):
        infer.smc(10.5)
    with pytest.raises(ppl.UnknownOptionError, match="resample"):
        infer.smc(10, resample="bogus")
    for bad in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(ValueError, match="ess_threshold"):
            infer.smc(10, ess_threshold=bad)
    with pytest.raises(NotImplementedError, match="move"):
        infer.smc(10, move=object())
    with pytest.raises(TypeError, match="proposal"):
        infer.smc(10, proposal=3)
    with pytest.raises(TypeError, match="key"):
        infer.smc(10).run(0, zoo.lgssm_1d, jnp.zeros(3))


def test_unsupported_model_and_bad_proposal():
    # a static program runs by data annealing (tests/test_static_smc.py), but a guided
    # proposal needs markov steps
    with pytest.raises(ppl.UnsupportedModelError, match="markov"):
        infer.smc(10, proposal=lambda t, c, x: None).run(KEY, zoo.normal_normal, jnp.zeros(3))

    def wrong_site(t, x_prev, y):
        ppl.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ppl.UnsupportedModelError, match="proposal"):
        infer.smc(10, proposal=wrong_site).run(KEY, zoo.lgssm_1d, jnp.zeros(3))


@ppl.model
def broken_at_step_two(ys):
    def step(x, y):
        x = ppl.sample("x", dist.Normal(x, 1.0))
        scale = jnp.where(ppl.current_step() == 2, 0.0, 1.0)  # log density NaN at t = 2
        ppl.observe("y", dist.Normal(x, scale), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


def test_non_finite_weights_name_the_step_and_site():
    with pytest.raises(ppl.NonFiniteWeightError, match=r"t=2.*'y'"):
        infer.smc(16).run(KEY, broken_at_step_two, jnp.ones(4))
