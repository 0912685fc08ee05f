"""Tests of ``infer.vsde``: variational inference over SDE paths (Daems et al., ICLR 2024).

The exact reference is the Brownian Ornstein-Uhlenbeck latent observed with Gaussian noise:
after Euler discretisation it is a linear-Gaussian state-space model, so the Kalman filter
gives the exact log evidence and the RTS smoother the exact posterior marginals. With the
affine control the variational posterior is itself Gaussian with moments we compute in
closed form from the trained coefficients, which lets every Monte Carlo output of vsde be
checked against an exact value with a z-score, and the best member of the family (a
unit-innovation-variance Gaussian guide, the Euler discretisation of a Girsanov change of
drift) is found by a deterministic optimiser to bound the ELBO gap.
"""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from ppl.inference.variational_sde import AffineControl, MLPControl, vsde
from ppl.semantics.trace import record

import ppl
from ppl import dist
from ppl.errors import UnknownOptionError, UnsupportedModelError
from ppl.sde import fbm, sde

# the module (the name ppl.inference.variational_sde is shadowed by the factory once exported)
vsde_module = importlib.import_module("ppl.inference.variational_sde")

K_SIGMA = 4.0  # z-score bound of every Monte Carlo comparison

# the OU problem: dX = -THETA X dt + SIGMA dW on [0, HORIZON], X(0) ~ N(0, 1),
# observed every 5th grid point with noise sd OBS_SD
THETA, SIGMA, OBS_SD, HORIZON, NUM_STEPS = 1.0, 1.0, 0.5, 2.0, 50
OBS_EVERY = 5


def _grid():
    return np.linspace(0.0, HORIZON, NUM_STEPS + 1)


def _obs_index():
    return np.arange(OBS_EVERY, NUM_STEPS + 1, OBS_EVERY)


def ou_model(ys):
    """OU latent with a latent initial state, observed on every 5th grid point."""
    x0 = ppl.sample("x0", dist.Normal(0.0, 1.0))
    x = sde("x", lambda t, x, p: -THETA * x, lambda t, x, p: SIGMA, x0, jnp.asarray(_grid()))
    ppl.observe("y", dist.Normal(x[_obs_index()], OBS_SD), ys)


def _data():
    rng = np.random.default_rng(0)
    t = _grid()[_obs_index()]
    return np.sin(1.5 * t) + OBS_SD * rng.standard_normal(t.shape)


# --------------------------------------------------------------------------- exact answers


def kalman_rts(ys):
    """Kalman filter + RTS smoother of the Euler-discretised OU with observations on a
    subset of the grid: returns (log evidence, smoothed means, smoothed variances) of
    x_0..x_N (Kalman 1960; Rauch, Tung & Striebel 1965)."""
    dt = HORIZON / NUM_STEPS
    a, q = 1.0 - THETA * dt, SIGMA**2 * dt
    data = dict(zip(_obs_index().tolist(), np.asarray(ys, np.float64).tolist(), strict=True))
    m, p = 0.0, 1.0
    fm, fp, pm, pp = [m], [p], [np.nan], [np.nan]
    log_z = 0.0
    for n in range(1, NUM_STEPS + 1):
        m_pred, p_pred = a * m, a * a * p + q
        if n in data:
            s = p_pred + OBS_SD**2
            log_z += -0.5 * np.log(2 * np.pi * s) - 0.5 * (data[n] - m_pred) ** 2 / s
            gain = p_pred / s
            m, p = m_pred + gain * (data[n] - m_pred), (1 - gain) * p_pred
        else:
            m, p = m_pred, p_pred
        fm.append(m), fp.append(p), pm.append(m_pred), pp.append(p_pred)
    sm, sp = np.array(fm), np.array(fp)
    for n in range(NUM_STEPS - 1, -1, -1):
        g = fp[n] * a / pp[n + 1]
        sm[n] = fm[n] + g * (sm[n + 1] - pm[n + 1])
        sp[n] = fp[n] + g * g * (sp[n + 1] - pp[n + 1])
    return log_z, sm, sp


def _linear_maps():
    """x_n = A^n x_0 + sum_{j<n} A^(n-1-j) sigma sqrt(dt) e_j as a matrix on (x_0, e)."""
    dt = HORIZON / NUM_STEPS
    a = 1.0 - THETA * dt
    jac = np.zeros((NUM_STEPS + 1, NUM_STEPS + 1))
    for n in range(NUM_STEPS + 1):
        jac[n, 0] = a**n
        for j in range(n):
            jac[n, 1 + j] = a ** (n - 1 - j) * SIGMA * np.sqrt(dt)
    return jac


def affine_q_moments(offset, gain, loc0, scale0, ys, log_scale=None):
    """Exact moments of the vsde posterior with the affine control and a normal guide on x0.

    The guide is z = (x0, e_0..e_{N-1}) with x0 = loc0 + scale0 w_0 and, on each step,
    e_n = (offset_n + gain_n x_n) sqrt(dt) + w_{n+1} (w standard normal): every quantity is
    affine in w, tracked as (constant, coefficient vector). Returns the path means and
    variances and the exact ELBO E_q[log p(y | x) + log p(x0) - log q(x0)] - E_q[sum_n
    1/2 u_n^2 dt] (Girsanov; Daems et al. 2024 eq. 14 on the grid). With ``log_scale`` the
    innovation is scaled, e_n = shift_n + s_n w_{n+1}, and the step's KL gains
    1/2 (s_n^2 - 1 - log s_n^2)."""
    dt = HORIZON / NUM_STEPS
    a = 1.0 - THETA * dt
    size = NUM_STEPS + 1
    const, coef = loc0, np.zeros(size)
    coef[0] = scale0
    means, variances = [const], [coef @ coef]
    girsanov = 0.0
    for n in range(NUM_STEPS):
        shift_const = (offset[n] + gain[n] * const) * np.sqrt(dt)
        shift_coef = gain[n] * coef * np.sqrt(dt)
        scale = 1.0 if log_scale is None else np.exp(log_scale[n])
        girsanov += 0.5 * (shift_const**2 + shift_coef @ shift_coef)
        girsanov += 0.5 * (scale**2 - 1.0 - 2.0 * np.log(scale))
        e_coef = shift_coef.copy()
        e_coef[n + 1] += scale
        const = a * const + SIGMA * np.sqrt(dt) * shift_const
        coef = a * coef + SIGMA * np.sqrt(dt) * e_coef
        means.append(const), variances.append(coef @ coef)
    means, variances = np.array(means), np.array(variances)
    idx = _obs_index()
    ys = np.asarray(ys, np.float64)
    log_lik = np.sum(-0.5 * np.log(2 * np.pi * OBS_SD**2)
                     - 0.5 * ((ys - means[idx]) ** 2 + variances[idx]) / OBS_SD**2)
    cross_x0 = -0.5 * np.log(2 * np.pi) - 0.5 * (loc0**2 + scale0**2)  # E_q log N(x0; 0, 1)
    entropy_x0 = 0.5 * np.log(2 * np.pi * np.e * scale0**2)
    return means, variances, log_lik + cross_x0 + entropy_x0 - girsanov


def family_optimum_gap():
    """min over the affine family of KL(q || posterior) of the discretised model.

    The mean is free (offsets and the guide's loc reach any mean), so the optimum matches
    the posterior mean and the gap is the covariance part, 1/2 [tr(P S) - d - log det P -
    log det S], minimised over the gains and the guide's scale (L-BFGS). P = I + J'J/R^2 is
    the posterior precision of z = (x0, e) (the prior of z is standard normal)."""
    jac = _linear_maps()
    size = NUM_STEPS + 1
    obs = jac[_obs_index()]
    precision = np.eye(size) + obs.T @ obs / OBS_SD**2
    log_det_p = np.linalg.slogdet(precision)[1]
    dt = HORIZON / NUM_STEPS

    def covariance(theta):
        # z = (I - L)^{-1} (const + diag(scale0, 1, .., 1) w), L[n+1] = gain_n sqrt(dt) dx_n/dz
        lower = np.zeros((size, size))
        lower[1:, :] = (theta[1:] * np.sqrt(dt))[:, None] * jac[:NUM_STEPS]
        scales = np.diag(np.r_[np.exp(theta[0]), np.ones(NUM_STEPS)])
        root = np.linalg.solve(np.eye(size) - lower, scales)
        return root @ root.T

    def gap(theta):
        log_scale0 = theta[0]
        cov = covariance(theta)
        return 0.5 * (np.trace(precision @ cov) - size - log_det_p - 2 * log_scale0)

    result = scipy.optimize.minimize(gap, np.zeros(size), method="L-BFGS-B")
    return float(result.fun), np.diag(jac @ covariance(result.x) @ jac.T)


# --------------------------------------------------------------------------- the fitted run


@pytest.fixture(scope="module")
def ou_fit():
    """One vsde run with the affine control on the OU problem (x64), shared by the tests."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        ys = jnp.asarray(_data())
        algo = vsde(num_steps=400, num_paths=32, learning_rate=0.05, control="affine",
                    num_samples=3000, progress_bar=False)
        post = algo.run(jax.random.PRNGKey(1), ou_model, ys)
        yield post, ys
    finally:
        jax.config.update("jax_enable_x64", previous)


def test_affine_vsde_matches_its_exact_moments_and_kalman(ou_fit):
    """Every Monte Carlo output against its exact value, and the ELBO against Kalman."""
    post, ys = ou_fit
    n = post.num_draws
    log_z, smooth_mean, smooth_var = kalman_rts(ys)
    control = post.info["controls"]["x"]
    guide = post.info["guide"]["x0"]
    means, variances, elbo_exact = affine_q_moments(
        np.asarray(control.offset)[:, 0], np.asarray(control.gain)[:, 0, 0],
        float(guide["loc"]), float(guide["scale"]), ys)
    paths = np.asarray(post.samples["x"])
    # (1) the simulated controlled paths have the law of the variational posterior
    z_mean = (paths.mean(0) - means) / np.sqrt(variances / n)
    z_var = (paths.var(0, ddof=1) - variances) / (variances * np.sqrt(2.0 / (n - 1)))
    assert np.max(np.abs(z_mean)) < K_SIGMA, z_mean
    assert np.max(np.abs(z_var)) < K_SIGMA, z_var
    # (2) the ELBO estimator (analytic Girsanov cost along each path) is unbiased
    z_elbo = (post.info["elbo_final"] - elbo_exact) / post.info["elbo_std_error"]
    assert abs(z_elbo) < K_SIGMA, (post.info["elbo_final"], elbo_exact, z_elbo)
    # (3) the bound: ELBO(q) <= log Z - KL* <= log Z (exact quantities; the family's best
    # gap KL* is found by a deterministic optimiser)
    kl_star, best_var = family_optimum_gap()
    assert elbo_exact <= log_z - kl_star + 1e-6
    shortfall = (log_z - kl_star) - elbo_exact
    print(f"log Z {log_z:.4f}  ELBO(q) {elbo_exact:.4f}  gap {log_z - elbo_exact:.4f}  "
          f"family optimum gap {kl_star:.4f}  optimisation shortfall {shortfall:.4f}")
    # convergence: the trained control is within KL* of the best one (not a MC tolerance)
    assert shortfall < kl_star
    # (4) the importance-weighted evidence estimate is consistent (delta method on Z-hat)
    log_w = np.asarray(post.sample_stats["log_importance_weight"])
    w = np.exp(log_w - log_w.max())
    se_log_z = w.std(ddof=1) / (w.mean() * np.sqrt(n))
    z_evidence = (post.log_evidence - log_z) / se_log_z
    assert abs(z_evidence) < K_SIGMA, (post.log_evidence, log_z, z_evidence)
    # (5) self-normalised importance sampling recovers the RTS smoother's means
    wn = w / w.sum()
    snis_mean = wn @ paths
    snis_se = np.sqrt(np.sum(wn[:, None] ** 2 * (paths - snis_mean) ** 2, 0))
    z_rts = (snis_mean - smooth_mean) / snis_se
    assert np.max(np.abs(z_rts)) < K_SIGMA, z_rts
    # (6) the variational posterior itself is close to the smoother: mean within 0.25 of a
    # posterior sd (convergence), variance inflated by the unit-variance guide only
    mean_err = np.abs(means - smooth_mean) / np.sqrt(smooth_var)
    ratio = variances / smooth_var
    best_ratio = best_var / smooth_var
    print(f"max |mean_q - mean_RTS| / sd_RTS {mean_err.max():.3f}; var_q / var_RTS in "
          f"[{ratio.min():.3f}, {ratio.max():.3f}]; best in family [{best_ratio.min():.3f}, "
          f"{best_ratio.max():.3f}]; var_q / var_best in [{(variances / best_var).min():.3f}, "
          f"{(variances / best_var).max():.3f}]")
    assert mean_err.max() < 0.25


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_learned_noise_scale_beats_the_unit_variance_family(x64):
    """learn_noise_scale=True (a per-step log scale of each increment): the simulated paths
    and the ELBO estimator match their exact values (z-scores), and the exact ELBO comes
    closer to log Z than the best member of the unit-variance family can (gap < KL* / 2)."""
    ys = jnp.asarray(_data())
    post = vsde(num_steps=600, num_paths=32, learning_rate=0.05, control="affine",
                learn_noise_scale=True, num_samples=2000,
                progress_bar=False).run(jax.random.PRNGKey(1), ou_model, ys)
    n = post.num_draws
    log_z, smooth_mean, smooth_var = kalman_rts(ys)
    control, guide = post.info["controls"]["x"], post.info["guide"]["x0"]
    means, variances, elbo_exact = affine_q_moments(
        np.asarray(control.offset)[:, 0], np.asarray(control.gain)[:, 0, 0],
        float(guide["loc"]), float(guide["scale"]), ys, np.asarray(control.log_scale)[:, 0])
    paths = np.asarray(post.samples["x"])
    z_mean = (paths.mean(0) - means) / np.sqrt(variances / n)
    z_var = (paths.var(0, ddof=1) - variances) / (variances * np.sqrt(2.0 / (n - 1)))
    z_elbo = (post.info["elbo_final"] - elbo_exact) / post.info["elbo_std_error"]
    assert max(np.abs(z_mean).max(), np.abs(z_var).max(), abs(z_elbo)) < K_SIGMA
    kl_star, _ = family_optimum_gap()
    ratio = variances / smooth_var
    print(f"learned scale: log Z {log_z:.4f} ELBO(q) {elbo_exact:.4f} gap "
          f"{log_z - elbo_exact:.4f} (unit-variance family optimum {kl_star:.4f}); "
          f"var_q / var_RTS in [{ratio.min():.3f}, {ratio.max():.3f}]")
    assert elbo_exact <= log_z
    assert log_z - elbo_exact < 0.5 * kl_star


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_broken_girsanov_term_is_detected(monkeypatch, x64):
    """Dropping the Girsanov cost 1/2 int u^2 dt from the ELBO lets it exceed log Z."""

    def report_without_cost(self, name, simulation):
        self.simulations[name] = simulation._replace(girsanov=jnp.zeros(()))

    monkeypatch.setattr(vsde_module._Controller, "report", report_without_cost)
    ys = jnp.asarray(_data())
    post = vsde(num_steps=60, num_paths=16, learning_rate=0.05, control="affine",
                num_samples=500, progress_bar=False).run(jax.random.PRNGKey(2), ou_model, ys)
    log_z = kalman_rts(ys)[0]
    z = (post.info["elbo_final"] - log_z) / post.info["elbo_std_error"]
    assert z > K_SIGMA, (post.info["elbo_final"], log_z)


def test_posterior_draws_are_prior_traces(ou_fit):
    """A posterior draw's recorded noise reproduces its path under the uncontrolled model."""
    post, ys = ou_fit
    values = {k: v[0] for k, v in post.samples.items() if k in ("x0", "x_noise")}
    _, trace, _ = record(ou_model, jax.random.PRNGKey(0), (ys,), substitutions=values)
    np.testing.assert_allclose(trace.values["x"], post.samples["x"][0], rtol=1e-10, atol=1e-10)


def test_result_and_arviz(ou_fit):
    """The result is a Posterior with the ELBO trace, params and an ArviZ conversion."""
    post, _ = ou_fit
    assert post.method == "vsde"
    assert post.samples["x"].shape == (3000, NUM_STEPS + 1)
    assert post.info["elbo"].shape == (400,)
    assert np.isfinite(post.info["elbo"]).all()
    idata = post.to_arviz()
    assert "x" in idata.posterior and "elbo" in idata.sample_stats


# --------------------------------------------------------------------------- default MLP


@pytest.mark.slow
def test_mlp_control_elbo_below_and_near_evidence(x64):
    """The default MLP control on the OU problem: ELBO below log Z (MC error) and the
    importance-sampling evidence consistent with Kalman."""
    ys = jnp.asarray(_data())
    post = vsde(num_steps=400, num_paths=16, learning_rate=1e-2, width=32, depth=2,
                num_samples=2000, progress_bar=False).run(jax.random.PRNGKey(3), ou_model, ys)
    log_z = kalman_rts(ys)[0]
    elbo, se = post.info["elbo_final"], post.info["elbo_std_error"]
    print(f"MLP control: log Z {log_z:.4f} ELBO {elbo:.4f} +- {se:.4f} "
          f"(start {float(post.info['elbo'][0]):.3f}) IS {post.log_evidence:.4f}")
    assert (elbo - log_z) / se < K_SIGMA
    log_w = np.asarray(post.sample_stats["log_importance_weight"])
    w = np.exp(log_w - log_w.max())
    se_log_z = w.std(ddof=1) / (w.mean() * np.sqrt(w.size))
    assert abs(post.log_evidence - log_z) / se_log_z < K_SIGMA


# --------------------------------------------------------------------------- parameters


def test_hurst_gradient_matches_finite_difference(x64):
    """d ELBO / d H flows through the MA-fBM weights omega(H) (common random numbers)."""
    times = jnp.linspace(0.0, 1.0, 21)

    def model(ys):
        h = ppl.param("hurst", 0.4, constraint=dist.constraints.unit_interval)
        x = sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, 0.0, times,
                noise=fbm(h, num_ou=4, gamma_max=5.0))
        ppl.observe("y", dist.Normal(x[5::5], 0.2), ys)

    ys = jnp.array([0.3, 0.1, -0.4, 0.2])
    algo = vsde(control="mlp", width=8, depth=1)
    structure, static, phi, fixed = algo._initial(jax.random.PRNGKey(0), model, (ys,), {})
    keys = jax.random.split(jax.random.PRNGKey(1), 16)

    def mean_elbo(free_h):
        p = {**phi, "params": {"hurst": free_h}}
        terms = jax.vmap(lambda k: vsde_module._one_path(
            p, fixed, structure, static, model, (ys,), {}, None, k))(keys)
        return jnp.mean(terms.elbo)

    h0 = phi["params"]["hurst"]
    eps = 1e-4
    # one compilation: value and gradient at h0 - eps, h0, h0 + eps
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(mean_elbo)))(h0 + jnp.array([-eps, 0.0,
                                                                                     eps]))
    grad, fd = grads[1], (values[2] - values[0]) / (2 * eps)
    assert np.isfinite(grad) and abs(float(grad)) > 1e-3
    np.testing.assert_allclose(grad, fd, rtol=1e-4)


@pytest.mark.slow
def test_params_are_learned_and_reported(x64):
    """A ppl.param drift rate is learned with the control (a 2-D path) and reported
    constrained, with its trajectory."""
    times = jnp.linspace(0.0, 2.0, 41)

    def model(ys):
        rate = ppl.param("rate", 0.5, constraint=dist.constraints.positive)
        x = sde("x", lambda t, x, p: -p * x, lambda t, x, p: jnp.array([1.0, 0.5]),
                jnp.array([2.0, 1.0]), times, params=rate)
        ppl.observe("y", dist.Normal(x[4::4], 0.1), ys)

    ys = jnp.exp(-3.0 * times[4::4])[:, None] * jnp.array([2.0, 1.0])
    post = vsde(num_steps=200, num_paths=8, learning_rate=0.05, control="affine", num_samples=10,
                progress_bar=False).run(jax.random.PRNGKey(0), model, ys)
    rate = float(post.info["params"]["rate"])
    assert post.samples["x"].shape == (10, 41, 2)
    assert post.info["param_trace"]["rate"].shape == (200,)
    assert rate > 1.5  # moved from 0.5 towards the decay rate 3 of the data
    assert post.info["elbo"][-20:].mean() > post.info["elbo"][:20].mean()


# --------------------------------------------------------------------------- errors


def test_errors():
    times = jnp.linspace(0.0, 1.0, 11)

    def no_sde():
        ppl.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(UnsupportedModelError, match="no ppl.sde"):
        vsde(num_steps=2, progress_bar=False).run(jax.random.PRNGKey(0), no_sde)

    def discrete():
        ppl.sample("k", dist.Bernoulli(0.5))
        sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, 0.0, times)

    with pytest.raises(UnsupportedModelError, match="'k' is discrete"):
        vsde(num_steps=2, progress_bar=False).run(jax.random.PRNGKey(0), discrete)
    with pytest.raises(UnknownOptionError, match="control"):
        vsde(control="spline")
    with pytest.raises(ValueError, match="num_steps"):
        vsde(num_steps=0)
    with pytest.raises(TypeError, match="control"):
        vsde(control=3)


def test_controls_start_at_zero():
    times = np.linspace(0.0, 1.0, 11)
    mlp = MLPControl(jax.random.PRNGKey(0), times, state_size=3, out_shape=(), width=8)
    affine = AffineControl(times, state_size=3, out_shape=(2,))
    state = jnp.ones(3)
    assert float(mlp(jnp.asarray(0.3), state)) == 0.0
    with_context = MLPControl(jax.random.PRNGKey(0), times, 3, (2,), 8, context_size=4)
    assert with_context(jnp.asarray(0.3), state, jnp.ones(4)).shape == (2,)
    np.testing.assert_array_equal(affine(jnp.asarray(0.3), state), jnp.zeros(2))


# --------------------------------------------------------------------------- fOU bridge


def exact_fou_covariance(hurst, theta, horizon, kind, num=1000):
    """Covariance of the exact fractional OU X(t) = int_0^t e^{-theta(t-s)} dB^H(s) =
    B(t) - theta int_0^t e^{-theta(t-s)} B(s) ds (integration by parts), on the grid
    s_i = i horizon / num, i = 1..num, from the exact fBM covariance of that type (the
    integral by the trapezoid rule); independent of the MA-fBM code."""
    from ppl.semantics.mafbm import exact_fbm_covariance

    s = np.linspace(0.0, horizon, num + 1)[1:]
    cov_b = exact_fbm_covariance(s[:, None], s[None, :], hurst, kind)
    ds = horizon / num
    op = np.eye(num)
    for i in range(num):
        w = np.full(i + 2, ds)  # trapezoid on 0, s_0..s_i (B(0) = 0 drops out)
        w[0] *= 0.5
        w[-1] *= 0.5
        op[i, : i + 1] -= theta * w[1:] * np.exp(-theta * (s[i] - s[: i + 1]))
    return s, op @ cov_b @ op.T


@pytest.mark.slow
@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_fractional_ou_bridge_variance(x64, hurst):
    """The paper's first experiment (Daems et al. 2024, sec. 5.1): a fractional OU from
    X(0) = 0, observed X(2) = 0 with noise sd 0.1. (a) the importance-reweighted variance
    over time is within MC error of the exact bridge variance of the Euler-discretised
    MA-fBM model; (b) that model's bridge variance is within 3% of the exact fOU bridge
    (exact fBM covariance); (c) the variational variance is reported against both."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_sde import _euler_fbm_covariance

    theta, horizon, num_steps, pin_sd, num_ou, gamma_max = 1.0, 2.0, 200, 0.1, 5, 20.0
    times = jnp.linspace(0.0, horizon, num_steps + 1)

    def model(y):
        x = sde("x", lambda t, x, p: -theta * x, lambda t, x, p: 1.0, 0.0, times,
                noise=fbm(hurst, num_ou, gamma_max, "II"))
        ppl.observe("y", dist.Normal(x[-1], pin_sd), y)

    post = vsde(num_steps=400, num_paths=16, learning_rate=0.05, control="affine",
                num_samples=2000, progress_bar=False).run(jax.random.PRNGKey(0), model,
                                                       jnp.array(0.0))
    cov_euler, _, _ = _euler_fbm_covariance(hurst, num_ou, gamma_max, "II",
                                            horizon / num_steps, num_steps, 1.0, theta)
    bridge_euler = np.diag(cov_euler) - cov_euler[:, -1] ** 2 / (cov_euler[-1, -1] + pin_sd**2)
    s, cov_exact = exact_fou_covariance(hurst, theta, horizon, "II")
    bridge_exact = np.diag(cov_exact) - cov_exact[:, -1] ** 2 / (cov_exact[-1, -1] + pin_sd**2)
    idx = np.arange(20, num_steps + 1, 20)
    exact_at = bridge_exact[idx * (s.size // num_steps) - 1]
    paths = np.asarray(post.samples["x"])
    log_w = np.asarray(post.sample_stats["log_importance_weight"])
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    mean = w @ paths
    var_is = w @ (paths - mean) ** 2
    se = np.sqrt(np.sum(w[:, None] ** 2 * ((paths - mean) ** 2 - var_is) ** 2, 0))
    z = (var_is[idx] - bridge_euler[idx]) / se[idx]
    var_q = np.asarray(post.var("x"))[idx]
    print(f"\nH={hurst} t      {np.round(np.asarray(times)[idx], 2)}\n"
          f"vsde q    {np.round(var_q, 4)}\nIS        {np.round(var_is[idx], 4)}\n"
          f"Euler     {np.round(bridge_euler[idx], 4)}\nexact fOU {np.round(exact_at, 4)}\n"
          f"z(IS)     {np.round(z, 2)}  ESS {1 / np.sum(w**2):.0f}")
    assert np.abs(z).max() < K_SIGMA
    assert np.abs(bridge_euler[idx] / exact_at - 1).max() < 0.03


def fou_paths(hurst, seed, times, num_paths, obs_sd, theta=1.0):
    """Independent exact type-II fOU paths at ``times`` (Cholesky of the exact covariance of
    ``ppl.models.fou``, independent of the MA-fBM code) plus N(0, obs_sd^2) noise:
    (len(times), num_paths)."""
    from ppl.models.fou import fou_covariance

    cov = fou_covariance(times, hurst, theta, 1.0, "II")
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(len(times)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_paths, len(times))) @ chol.T
    return (x + obs_sd * rng.standard_normal(x.shape)).T


@pytest.mark.slow
@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7])
def test_hurst_recovery(x64, hurst):
    """Hurst recovery (Daems et al. 2024, sec. 5): 8 independent exact type-II fOU paths
    (theta 1) on [0, 4], each observed every 0.04 (100 points) with noise sd 0.1; the
    program has one shared ``ppl.param`` H and an 8-coordinate ``sde`` on a 200-step grid
    (MA-fBM K = 5, gamma_max = 20). vsde (affine control with learned increment scales)
    learns H within 0.05 of the true H, the issue's criterion, and within 0.03 of the maximum
    likelihood H of the same discretised model (exact Kalman likelihood), the statistical
    baseline. (One path on [0, 4] is too little data: there even the ML H misses by up to
    0.25; a longer horizon with K = 5 biases the MA-fBM itself, since its weights then fit
    the kernel over the whole horizon.)"""
    import sys

    from scipy.optimize import minimize_scalar

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_sde import _euler_fbm_kalman_nll

    theta, horizon, num_steps, every, obs_sd, num_paths = 1.0, 4.0, 200, 2, 0.1, 8
    dt = horizon / num_steps
    times = jnp.linspace(0.0, horizon, num_steps + 1)
    idx = np.arange(every, num_steps + 1, every)
    ys = fou_paths(hurst, 0, idx * dt, num_paths, obs_sd, theta)
    ml = minimize_scalar(lambda h: _euler_fbm_kalman_nll(h, ys, idx, 5, 20.0, dt, num_steps,
                                                         theta, obs_sd),
                         bounds=(0.05, 0.95), method="bounded", options={"xatol": 1e-3}).x

    def model(ys):
        h = ppl.param("hurst", 0.5, constraint=dist.constraints.unit_interval)
        path = sde("x", lambda t, x, p: -theta * x, lambda t, x, p: 1.0, jnp.zeros(num_paths),
                   times, noise=fbm(h, 5, 20.0, "II"))
        ppl.observe("y", dist.Normal(path[idx], obs_sd), ys)

    post = vsde(num_steps=3000, num_paths=16, learning_rate=0.1, control="affine",
                learn_noise_scale=True, num_samples=16,
                progress_bar=False).run(jax.random.PRNGKey(0), model, jnp.asarray(ys))
    learned = float(post.info["params"]["hurst"])
    print(f"true H {hurst}: vsde {learned:.3f}, maximum likelihood {ml:.3f}")
    assert abs(learned - hurst) < 0.05
    assert abs(learned - ml) < 0.03
