"""Markov approximation of fBM (semantics/mafbm.py; Daems et al., ICLR 2024, sec. 3).

Every closed form is checked against an independent numerical quadrature of its defining
integral (kernel representation of the two fBM types), the weights against the
quadrature least-squares solution, simulated paths against the closed-form covariance
through ``preserves`` (with a broken variant that must be detected), and the weights'
H-gradient against a quadrature derivative, under jit and vmap with x64 off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.semantics import mafbm
from ppl.semantics.validity import preserves
from scipy.integrate import quad
from scipy.special import digamma
from scipy.special import gamma as gamma_fn

from ppl.errors import ShapeMismatchError, UnknownOptionError

KINDS = ("I", "II")
# quadpack warns when 1e-12 is out of reach; the assertions below bound what it reached
pytestmark = pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")


# ------------------------------------------------------------- independent quadrature


def _kernel(u, alpha):
    return u ** (alpha - 1) / gamma_fn(alpha)


def _quad(f, a, b, **kw):
    return quad(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=200, **kw)[0]


def _quadrature_problem(hurst, gammas, T, kind):
    """A, b, c of ``int_0^T E[(B(t) - B_hat(t))^2] dt`` by quadrature of the kernel
    representation (no closed form of the module used):
    type II error = int_0^T (T-u) (K(u) - sum_k w_k e^{-g_k u})^2 du; type I adds
    int_0^T int_0^inf (K(t+v) - K(v) - sum_k w_k e^{-g_k v} (e^{-g_k t} - 1))^2 dv dt."""
    alpha = hurst + 0.5
    g = np.asarray(gammas, np.float64)
    n = len(g)
    a = np.zeros((n, n))
    b = np.zeros(n)
    for i in range(n):
        for j in range(n):
            s = g[i] + g[j]
            a[i, j] = _quad(lambda u, s=s: (T - u) * np.exp(-s * u), 0, T)
            if kind == "I":
                a[i, j] += _quad(lambda t, i=i, j=j: (1 - np.exp(-g[i] * t))
                                 * (1 - np.exp(-g[j] * t)), 0, T) * _quad(
                    lambda v, s=s: np.exp(-s * v), 0, np.inf)
        b[i] = _quad(lambda u, i=i: (T - u) * np.exp(-g[i] * u) / gamma_fn(alpha), 0, T,
                     weight="alg", wvar=(alpha - 1, 0))
        if kind == "I":
            def history(t, gk=g[i]):  # int_0^inf (K(t+v) - K(v)) e^{-gk v} dv
                shifted = _quad(lambda v: _kernel(t + v, alpha) * np.exp(-gk * v), 0, np.inf)
                at_zero = _quad(lambda v: np.exp(-gk * v) / gamma_fn(alpha), 0, 1,
                                weight="alg", wvar=(alpha - 1, 0)) + _quad(
                    lambda v: _kernel(v, alpha) * np.exp(-gk * v), 1, np.inf)
                return shifted - at_zero
            b[i] += _quad(lambda t, gk=g[i]: (np.exp(-gk * t) - 1) * history(t), 0, T)
    if kind == "II":
        c = _quad(lambda u: (T - u) / gamma_fn(alpha) ** 2, 0, T, weight="alg",
                  wvar=(2 * alpha - 2, 0))
    else:
        c = _quad(lambda t: _mvn_variance_quadrature(hurst, t), 0, T)
    return a, b, c


def _mvn_variance_quadrature(hurst, t):
    """Var B^I(t) = int_0^t K(u)^2 du + int_0^inf (K(t+v) - K(v))^2 dv, by quadrature."""
    alpha = hurst + 0.5
    head = _quad(lambda u: 1.0 / gamma_fn(alpha) ** 2, 0, t, weight="alg",
                 wvar=(2 * alpha - 2, 0))
    tail = _quad(lambda v: (_kernel(t + v, alpha) - _kernel(v, alpha)) ** 2, 0, t)
    tail += _quad(lambda v: (_kernel(t + v, alpha) - _kernel(v, alpha)) ** 2, t, np.inf)
    return head + tail


# ------------------------------------------------------------------------------ speeds


def test_geometric_speeds_grid():
    g = np.asarray(mafbm.geometric_speeds(5, 20.0))
    np.testing.assert_allclose(g, [1 / 20, 20 ** -0.5, 1.0, 20 ** 0.5, 20.0], rtol=1e-6)
    np.testing.assert_allclose(np.diff(np.log(g)), np.log(20.0) / 2, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(mafbm.geometric_speeds(1, 20.0)), [1.0])
    c = np.asarray(mafbm.stationary_covariance(g))
    np.testing.assert_allclose(c, 1 / (g[:, None] + g[None, :]), rtol=1e-6)


# ---------------------------------------------------------------- closed forms vs quad


@pytest.mark.parametrize("kind", KINDS)
def test_least_squares_problem_matches_quadrature(kind):
    """A, b, c (type II: the paper's; type I: derived in the module docstring) and the
    weights equal the quadrature least-squares solution of the same problem."""
    T = 1.5
    gammas = np.asarray(mafbm.geometric_speeds(4, 10.0), np.float64)
    for hurst in (0.3, 0.7):
        a_q, b_q, c_q = _quadrature_problem(hurst, gammas, T, kind)
        a = mafbm.matrix_a(gammas, T, kind)
        b = mafbm.vector_b(hurst, gammas, T, kind)
        c = mafbm.constant_c(hurst, T, kind)
        np.testing.assert_allclose(a, a_q, rtol=1e-10)
        np.testing.assert_allclose(b, b_q, rtol=1e-7)
        np.testing.assert_allclose(c, c_q, rtol=1e-7)
        omega, _ = mafbm.weights_and_derivative(hurst, gammas, T, kind, derivative=False)
        np.testing.assert_allclose(omega, np.linalg.solve(a_q, b_q), rtol=1e-5)


def test_type_one_variance_constant_matches_quadrature():
    """V_H = 1/(Gamma(2H+1) sin(pi H)) = Var B^I(1); self-similar: Var B^I(t) = V_H t^2H."""
    for hurst in (0.15, 0.4, 0.5, 0.85):
        for t in (0.6, 2.0):
            exact = mafbm.exact_fbm_covariance(t, t, hurst, "I")
            np.testing.assert_allclose(exact, _mvn_variance_quadrature(hurst, t), rtol=1e-7)


def test_type_two_exact_covariance_matches_quadrature():
    """The 2F1 closed form of the Riemann-Liouville covariance vs its defining integral."""
    for hurst in (0.2, 0.5, 0.8):
        alpha = hurst + 0.5
        for s, t in ((0.3, 1.0), (0.7, 0.7), (1.2, 0.4), (0.99, 1.0)):
            lo, hi = min(s, t), max(s, t)
            if lo == hi:  # the whole singularity sits in the weight
                q = _quad(lambda u: 1.0, 0, lo, weight="alg", wvar=(0, 2 * alpha - 2))
            else:
                q = _quad(lambda u, hi=hi, alpha=alpha: (hi - u) ** (alpha - 1), 0, lo,
                          weight="alg", wvar=(0, alpha - 1))
            q /= gamma_fn(alpha) ** 2
            np.testing.assert_allclose(mafbm.exact_fbm_covariance(s, t, hurst, "II"), q,
                                       rtol=1e-9)
    np.testing.assert_allclose(mafbm.exact_fbm_covariance(0.5, 0.8, 0.5, "II"), 0.5)


# -------------------------------------------------------------------- approximation error


@pytest.mark.parametrize("kind", KINDS)
def test_integrated_squared_error_falls_with_num_ou(kind, capsys):
    errors = {}
    for hurst in (0.2, 0.5, 0.8):
        errs = []
        for num_ou in (2, 4, 8):
            g = np.asarray(mafbm.geometric_speeds(num_ou, 20.0), np.float64)
            omega, _ = mafbm.weights_and_derivative(hurst, g, 1.0, kind, derivative=False)
            errs.append(mafbm.integrated_squared_error(hurst, g, omega, 1.0, kind))
            # optimality: any perturbation of the weights (a broken solve) costs error
            worse = mafbm.integrated_squared_error(hurst, g, omega * (1 + 1e-2), 1.0, kind)
            assert worse > errs[-1]
        errors[hurst] = errs
        assert errs[0] > errs[1] > errs[2], (hurst, errs)
        assert errs[2] > -1e-12
    with capsys.disabled():
        print(f"\n  type {kind} integrated squared error, K=2,4,8 (gamma_max=20, T=1): "
              + "; ".join(f"H={h}: " + ", ".join(f"{e:.2e}" for e in v)
                          for h, v in errors.items()))


def _relative_frobenius(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_type_two_approximation_accuracy(x64, capsys):
    """K=5, gamma_max=20, T=1 (Daems et al.): the relative integrated squared error
    E(omega)/c is ~0.008 at H=0.3 and ~1e-4 for H>=0.5; we also report the relative
    Frobenius error of the closed-form covariance on a 100-point grid."""
    times = np.linspace(0.01, 1.0, 100)
    g = mafbm.geometric_speeds(5, 20.0)
    rows = {}
    for hurst in (0.3, 0.5, 0.7, 0.9):
        omega = mafbm.mafbm_weights(hurst, g, 1.0, "II")
        rel_ise = mafbm.relative_squared_error(hurst, g, omega, 1.0, "II")
        cov = np.asarray(mafbm.mafbm_covariance(times, hurst, g, omega, "II"))
        exact = mafbm.exact_fbm_covariance(times[:, None], times[None, :], hurst, "II")
        rows[hurst] = (rel_ise, _relative_frobenius(cov, exact))
    with capsys.disabled():
        print("\n  type II K=5: " + "; ".join(f"H={h}: rel ISE {r:.2e}, rel cov L2 {c:.2e}"
                                             for h, (r, c) in rows.items()))
    assert 0.006 < rows[0.3][0] < 0.010
    assert rows[0.3][1] < 0.012
    for hurst in (0.5, 0.7, 0.9):
        assert rows[hurst][0] < 2e-4
        assert rows[hurst][1] < 2e-3


def test_brownian_motion_at_half(x64, capsys):
    """H=1/2: both types are standard BM, covariance min(s,t). Type II is reproduced to
    ~1e-6 at K=5; type I converges as the speed range widens (its history term needs a
    slow OU: smallest speed 1/gamma_max)."""
    times = np.linspace(0.01, 1.0, 50)
    bm = np.minimum(times[:, None], times[None, :])
    for kind in KINDS:
        np.testing.assert_allclose(mafbm.exact_fbm_covariance(times[:, None], times[None, :],
                                                              0.5, kind), bm, rtol=1e-12)
    g = mafbm.geometric_speeds(5, 20.0)
    cov = mafbm.mafbm_covariance(times, 0.5, g, mafbm.mafbm_weights(0.5, g, 1.0, "II"), "II")
    err_two = _relative_frobenius(np.asarray(cov), bm)
    errs_one = []
    for num_ou, gamma_max in ((5, 20.0), (8, 1e3), (12, 1e4)):
        g = mafbm.geometric_speeds(num_ou, gamma_max)
        omega = mafbm.mafbm_weights(0.5, g, 1.0, "I")
        errs_one.append(_relative_frobenius(
            np.asarray(mafbm.mafbm_covariance(times, 0.5, g, omega, "I")), bm))
    with capsys.disabled():
        print(f"\n  H=0.5 rel cov L2 vs min(s,t): type II K=5 {err_two:.2e}; type I "
              f"(K, gamma_max)=(5,20),(8,1e3),(12,1e4): " + ", ".join(f"{e:.2e}" for e in errs_one))
    assert err_two < 1e-5
    assert errs_one[0] > errs_one[1] > errs_one[2]
    assert errs_one[2] < 1e-4


# ------------------------------------------------------------------------ simulation


def _pairs(n):
    return [(i, j) for i in range(n) for j in range(i, n)]


def _simulation_check(kind, closed_form_kind, check):
    times = jnp.array([0.1, 0.3, 0.6, 1.0])
    hurst = 0.7
    g = mafbm.geometric_speeds(5, 20.0)
    omega = mafbm.mafbm_weights(hurst, g, 1.0, kind)
    cov = np.asarray(mafbm.mafbm_covariance(
        times, hurst, g, mafbm.mafbm_weights(hurst, g, 1.0, closed_form_kind), closed_form_kind))

    def run(key):
        return {"x": mafbm.simulate_mafbm(key, times, hurst, g, omega, kind, 20_000)}, None, None

    pairs = _pairs(len(times))
    tests = {f"cov_{i}{j}": (lambda s, i=i, j=j: s["x"][:, i] * s["x"][:, j]) for i, j in pairs}
    exact = {f"cov_{i}{j}": cov[i, j] for i, j in pairs}
    return preserves(run, exact, tests, jax.random.key(7), se="iid", k=4.0, check=check)


@pytest.mark.parametrize("kind", KINDS)
def test_simulated_paths_match_closed_form(kind, capsys):
    report = _simulation_check(kind, kind, check=True)
    with capsys.disabled():
        print(f"\n  type {kind} simulated cov z-scores: "
              + " ".join(f"{c.z:+.2f}" for c in report.checks))


def test_simulation_of_the_wrong_type_is_detected():
    """Broken variant: type II paths (Y(0)=0, type II weights) judged against type I's
    closed form must fail the same check."""
    report = _simulation_check("II", "I", check=False)
    assert not report.ok
    assert max(abs(c.z) for c in report.checks) > 10


# ------------------------------------------------------------------ precision, gradient


def _quadrature_weight_derivative(hurst, gammas, T):
    """Type II d omega/dH = A^{-1} db/dH with db/dH by quadrature of
    d/dH [(T-u) e^{-g u} u^(a-1) / Gamma(a)] = ... (log u - digamma(a))."""
    alpha = hurst + 0.5
    db = []
    for gk in gammas:
        f = (lambda u, gk=gk: (T - u) * np.exp(-gk * u))
        with_log = _quad(f, 0, T, weight="alg-loga", wvar=(alpha - 1, 0))
        plain = _quad(f, 0, T, weight="alg", wvar=(alpha - 1, 0))
        db.append((with_log - digamma(alpha) * plain) / gamma_fn(alpha))
    return np.linalg.solve(mafbm.matrix_a(gammas, T, "II"), np.array(db))


def test_weights_jit_vmap_grad_in_float32():
    assert not jax.config.jax_enable_x64
    g = mafbm.geometric_speeds(5, 20.0)
    g64 = np.asarray(g, np.float64)
    weights = jax.jit(lambda h: mafbm.mafbm_weights(h, g, 1.0, "II"))
    assert weights(0.3).dtype == jnp.float32
    d_fwd = jax.jit(jax.jacfwd(weights))(0.3)
    d_rev = jax.jit(jax.jacrev(weights))(0.3)
    d_quad = _quadrature_weight_derivative(0.3, g64, 1.0)
    np.testing.assert_allclose(d_fwd, d_quad, rtol=1e-5)
    np.testing.assert_allclose(d_rev, d_quad, rtol=1e-5)
    # type I: central difference of the float64 host solution
    hs = jnp.array([0.2, 0.45, 0.8])
    d_one = jax.jit(jax.vmap(jax.grad(lambda h: mafbm.mafbm_weights(h, g, 1.0, "I") @ g)))(hs)
    eps = 1e-5
    for h, d in zip(np.asarray(hs, np.float64), np.asarray(d_one), strict=True):
        up, _ = mafbm.weights_and_derivative(h + eps, g64, 1.0, "I", derivative=False)
        down, _ = mafbm.weights_and_derivative(h - eps, g64, 1.0, "I", derivative=False)
        np.testing.assert_allclose(d, (up - down) @ g64 / (2 * eps), rtol=1e-4)
    # vmap over H (and T) equals the loop
    batched = jax.vmap(lambda h, t: mafbm.mafbm_weights(h, g, t, "I"))(hs, jnp.array([1.0, 2, 3]))
    for k, (h, t) in enumerate(zip([0.2, 0.45, 0.8], [1.0, 2.0, 3.0], strict=True)):
        np.testing.assert_allclose(batched[k], mafbm.mafbm_weights(h, g, t, "I"), rtol=1e-6)


def test_weights_solved_in_float64_when_ill_conditioned(capsys):
    """K=20: the float32 weights are the float64 solution rounded (same error), while a
    float32 solve of the same system loses accuracy (cond(A) 4e12 type I, 1e18 type II)."""
    assert not jax.config.jax_enable_x64
    g = mafbm.geometric_speeds(20, 20.0)
    g64 = np.asarray(g, np.float64)
    rows = []
    for kind in KINDS:
        omega32 = np.asarray(jax.jit(lambda h, kind=kind: mafbm.mafbm_weights(h, g, 1.0, kind))(
            jnp.float32(0.3)), np.float64)
        omega64, _ = mafbm.weights_and_derivative(0.3, g64, 1.0, kind, derivative=False)
        a32 = jnp.asarray(mafbm.matrix_a(g64, 1.0, kind), jnp.float32)
        b32 = jnp.asarray(mafbm.vector_b(0.3, g64, 1.0, kind), jnp.float32)
        naive = np.asarray(jnp.linalg.solve(a32, b32), np.float64)
        best, rounded, float32_solve = (mafbm.integrated_squared_error(0.3, g64, w, 1.0, kind)
                                        for w in (omega64, omega32, naive))
        rows.append(f"type {kind}: float64 {best:.5e}, returned float32 {rounded:.5e}, "
                    f"float32 solve {float32_solve:.5e}")
        assert abs(rounded - best) < 1e-4 * best
        assert float32_solve > 1.1 * best
    with capsys.disabled():
        print("\n  K=20 H=0.3 integrated squared error: " + "; ".join(rows))


def test_truncated_solve_error_matches_kernel_quadrature():
    """Type II, K=10 (cond(A) 4e16): the minimum-norm weights keep moderate size and their
    closed-form error agrees with a quadrature of the kernel error itself."""
    hurst, T = 0.3, 1.0
    g = np.asarray(mafbm.geometric_speeds(10, 20.0), np.float64)
    omega, _ = mafbm.weights_and_derivative(hurst, g, T, "II", derivative=False)
    assert np.abs(omega).max() < 1e5
    alpha = hurst + 0.5

    def error(u):
        return (T - u) * (_kernel(u, alpha) - np.sum(omega * np.exp(-g * u))) ** 2

    edges = [0.0] + [T * 10.0**-k for k in range(10, 0, -1)] + [T]
    by_quadrature = sum(_quad(error, lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True))
    closed = mafbm.integrated_squared_error(hurst, g, omega, T, "II")
    np.testing.assert_allclose(closed, by_quadrature, rtol=1e-4)


def test_gradient_in_speeds_is_refused():
    g = mafbm.geometric_speeds(3, 10.0)
    with pytest.raises(NotImplementedError, match="hurst only"):
        jax.grad(lambda gs: mafbm.mafbm_weights(0.3, gs, 1.0).sum())(g)


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("hurst", [0.0, 1.0, -0.2, 1.3])
def test_hurst_outside_unit_interval_raises(hurst):
    g = mafbm.geometric_speeds(3, 10.0)
    with pytest.raises(ValueError, match="hurst"):
        mafbm.mafbm_weights(hurst, g)
    with pytest.raises(Exception, match="hurst"):  # traced: raised at run time by the callback
        jax.jit(lambda h: mafbm.mafbm_weights(h, g))(hurst).block_until_ready()
    with pytest.raises(ValueError, match="hurst"):
        mafbm.exact_fbm_covariance(0.5, 1.0, hurst, "I")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_ou"):
        mafbm.geometric_speeds(0, 10.0)
    with pytest.raises(TypeError, match="num_ou"):
        mafbm.geometric_speeds(2.5, 10.0)
    for gamma_max in (0.0, -3.0, np.inf):
        with pytest.raises(ValueError, match="gamma_max"):
            mafbm.geometric_speeds(4, gamma_max)
    with pytest.raises(ValueError, match="gamma_max"):
        mafbm.geometric_speeds(4, 1.0)
    g = mafbm.geometric_speeds(3, 10.0)
    with pytest.raises(UnknownOptionError, match="kind"):
        mafbm.mafbm_weights(0.3, g, 1.0, "III")
    with pytest.raises(ValueError, match="gammas"):
        mafbm.mafbm_weights(0.3, jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="distinct"):
        mafbm.mafbm_weights(0.3, jnp.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="T"):
        mafbm.mafbm_weights(0.3, g, 0.0)
    with pytest.raises(ValueError, match="rcond"):
        mafbm.mafbm_weights(0.3, g, 1.0, "II", rcond=-1.0)
    with pytest.raises(ShapeMismatchError, match="omega"):
        mafbm.mafbm_covariance(jnp.array([0.5, 1.0]), 0.3, g, jnp.ones(2))
    with pytest.raises(ValueError, match="times"):
        mafbm.simulate_mafbm(jax.random.key(0), jnp.array([0.5, 0.2]), 0.3, g, jnp.ones(3))
    with pytest.raises(ValueError, match="num_paths"):
        mafbm.simulate_mafbm(jax.random.key(0), jnp.array([0.5]), 0.3, g, jnp.ones(3),
                             num_paths=0)
