r"""Markov approximation of fractional Brownian motion (MA-fBM).

Daems, Opper, Crevecoeur, Birdal, "Variational Inference for SDEs Driven by Fractional
Noise" (ICLR 2024), section 3, after Harms & Stefanovits (2019). With
``alpha = H + 1/2`` and the normalised kernel ``K(u) = u_+^(alpha-1) / Gamma(alpha)``,

- type II (Riemann-Liouville): ``B(t) = int_0^t K(t-s) dW_s``;
- type I (Mandelbrot-van Ness): ``B(t) = int_{-inf}^t [K(t-s) - K(-s)] dW_s``.

Both are approximated by ``B_hat(t) = sum_k omega_k (Y_k(t) - Y_k(0))`` with
``dY_k = -gamma_k Y_k dt + dW`` (one W for all k): ``Y(0) = 0`` for type II, ``Y(0) ~ N(0, C)``
with ``C_ij = 1/(gamma_i + gamma_j)`` (the stationary law, so Y is driven by W on
(-inf, t]) for type I. The weights minimise the integrated squared error
``E(omega) = int_0^T E[(B(t) - B_hat(t))^2] dt = omega' A omega - 2 b' omega + c``, so
``A omega = b`` (paper eq. 9-10), with ``Z_k = Y_k(t) - Y_k(0)`` and

    A_ij = int_0^T Cov(Z_i(t), Z_j(t)) dt,  b_k = int_0^T Cov(B(t), Z_k(t)) dt,
    c = int_0^T Var B(t) dt.

Write ``s = gamma_i + gamma_j``, ``X = gamma_k T``, ``phi(x) = (x - 1 + e^-x) / x^2``.

**Type II** (the paper's formulas). ``Cov(Z_i(t), Z_j(t)) = (1 - e^{-st})/s`` gives
``A_ij = [T + (e^{-sT} - 1)/s]/s = T^2 phi(sT)``; ``Cov(B(t), Z_k(t)) = int_0^t K(u)
e^{-gamma u} du = gamma^-alpha P(alpha, gamma t)`` integrates to
``b_k = gamma^-(alpha+1) [X P(alpha, X) - alpha P(alpha+1, X)]`` (P the regularised lower
incomplete gamma function) and ``Var B(t) = t^(2H) / (2H Gamma(alpha)^2)`` to
``c = T^(2H+1) / (2H (2H+1) Gamma(alpha)^2)``.

**Type I** (derived here; checked against quadrature in tests/test_mafbm.py).
Stationarity gives ``Cov(Y_i(u), Y_j(v)) = e^{-gamma_j (v-u)}/s`` for ``u <= v``, so
``Cov(Z_i(t), Z_j(t)) = (2 - e^{-gamma_i t} - e^{-gamma_j t})/s`` and

    A_ij = [2T - (1 - e^{-gamma_i T})/gamma_i - (1 - e^{-gamma_j T})/gamma_j] / s
         = (T/s) [x_i phi(x_i) + x_j phi(x_j)],      x_i = gamma_i T.

For b: ``Cov(B(t), Y(t)) = int_0^inf K(u) e^{-gamma u} du - e^{-gamma t} int_0^inf K(v)
e^{-gamma v} dv = gamma^-alpha (1 - e^{-gamma t})`` and ``Cov(B(t), Y(0)) = int_0^inf
[K(t+v) - K(v)] e^{-gamma v} dv = gamma^-alpha [R(alpha, gamma t) - 1]`` with
``R(a, x) = e^x Q(a, x)`` (Q = 1 - P). So ``Cov(B(t), Z(t)) = gamma^-alpha [2 - e^{-gamma t}
- R(alpha, gamma t)]``; with ``int_0^X R(a, x) dx = R(a, X) - 1 + X^a / Gamma(a+1)``
(differentiate ``e^x Q``),

    b_k = gamma^-(alpha+1) [2X + e^{-X} - R(alpha, X) - X^alpha / Gamma(alpha+1)].

For ``X <= 1`` that form cancels; there we use the equal expression
``b_k = gamma^-(alpha+1) [X^alpha/Gamma(alpha+1) sum_{n>=1} X^n/(alpha+1)_n - 2(sinh X - X)]``
(from ``e^x P(a, x) = x^a M(1, a+1, x)/Gamma(a+1)``), and for ``X > 100`` the asymptotic
series of R (16 terms, truncation below 1e-18). Finally ``Var B(t) = V_H t^(2H)`` with
``V_H = 1 / (Gamma(2H+1) sin(pi H))`` (the Mandelbrot-van Ness constant
``int_0^inf ((1+u)^(H-1/2) - u^(H-1/2))^2 du + 1/(2H)`` divided by ``Gamma(alpha)^2``),
so ``c = V_H T^(2H+1) / (2H+1)``. At H = 1/2 both types are standard Brownian motion
(V = 1).

**Precision and gradients.** A is ill-conditioned. Measured at gamma_max = 20, T = 1:
cond(A) = 5e2 (type I) and 8e6 (type II) at K = 5, 4e4 / 3e15 at K = 8, 4e12 / 3e17 at
K = 20 (type II reaches float64's limit from K = 8). So :func:`mafbm_weights` solves on
the host in float64 through ``jax.pure_callback`` whatever the model's precision, and
returns the model's dtype. The solve is by symmetric eigendecomposition, dropping
eigenvalues below ``rcond = 1e-13`` times the largest (:func:`least_squares_solve`):
identical to ``A^{-1} b`` while cond(A) < 1e13 (type I up to K = 20, type II up to
K = 7), and beyond that the minimum-norm minimiser. The plain float64 solve there reaches
a 5-25% lower error (by quadrature of the kernel error; K = 8..20) but with weights of
1e5-1e6, which a float32 model cannot use (and which defeat the closed-form error's own
float64 evaluation); the truncated weights stay below ~2e4 (type II, K = 10). Pass
``rcond=0`` for the plain solve. In a float32 model prefer K <= 8. ``omega = A^+ b(H)``
is linear in b and A does not depend on H, so ``d omega/dH = A^+ db/dH`` (a
``custom_jvp``); ``db/dH`` is a five-point central difference of the float64 closed form
(step 5e-4; checked against a quadrature derivative to 1e-11 relative; scipy has no
derivative of P in its first argument). Gradients flow through ``hurst`` only:
differentiating w.r.t. the speeds or T raises.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from scipy.special import gamma as gamma_fn
from scipy.special import gammainc, gammaincc, hyp2f1

from ppl.errors import (
    InvalidArgumentError,
    ShapeMismatchError,
    UnknownOptionError,
    UnsupportedOptionError,
    check_count,
)

KINDS = ("I", "II")
_FD_STEP = 5e-4
_SMALL_X = 1.0
_LARGE_X = 100.0
RCOND = 1e-13


# ----------------------------------------------------------------------------- checks


def _check_kind(kind) -> str:
    if kind not in KINDS:
        raise UnknownOptionError(f"kind must be one of {KINDS} (type I Mandelbrot-van Ness, "
                                 f"type II Riemann-Liouville), got {kind!r}")
    return kind


def _concrete(x):
    """``x`` as a float64 numpy array, or None when it is a tracer (checked at run time)."""
    try:
        return np.asarray(x, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_hurst_values(h: np.ndarray):
    if not np.all((h > 0) & (h < 1)):
        raise InvalidArgumentError(f"hurst must lie in the open interval (0, 1), got {h}")


def _check_hurst(hurst):
    h = _concrete(hurst)
    if h is not None:
        _check_hurst_values(h)


def _check_horizon(T):
    t = _concrete(T)
    if t is not None and not np.all(np.isfinite(t) & (t > 0)):
        raise InvalidArgumentError(
            f"T (the horizon of the integrated squared error) must be > 0, got {t}"
        )


def _check_speed_values(g: np.ndarray):
    if not np.all(np.isfinite(g) & (g > 0)):
        raise InvalidArgumentError(f"gammas (OU speeds) must be finite and > 0, got {g}")
    flat = np.sort(g, axis=-1)
    if np.any(np.diff(flat, axis=-1) <= 0):
        raise InvalidArgumentError(
            f"gammas (OU speeds) must be distinct (A is singular otherwise), got {g}"
        )


def _check_speeds(gammas) -> jnp.ndarray:
    gammas = jnp.asarray(gammas)
    if gammas.ndim != 1 or gammas.shape[0] < 1:
        raise ShapeMismatchError(f"gammas must be a 1-D array of K >= 1 speeds, got shape "
                                 f"{gammas.shape}")
    g = _concrete(gammas)
    if g is not None:
        _check_speed_values(g)
    return gammas


def _check_omega(omega, gammas) -> jnp.ndarray:
    omega = jnp.asarray(omega)
    if omega.shape != gammas.shape:
        raise ShapeMismatchError(f"omega must have the shape of gammas {gammas.shape}, got "
                                 f"{omega.shape}")
    return omega


def _float_dtype(*xs):
    dtype = jnp.result_type(*xs)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.asarray(1.0).dtype
    return dtype


# ----------------------------------------------------------------------------- speeds


def geometric_speeds(num_ou: int, gamma_max, gamma_min=None) -> jnp.ndarray:
    """OU speeds on the geometric grid of Daems et al. (2024, sec. 3.2):
    ``gamma_k = r^(k - (K+1)/2)``, k = 1..K, ``r = gamma_max^(2/(K-1))``, so the grid runs
    from ``1/gamma_max`` to ``gamma_max`` and is centred (geometrically) on 1. For K = 1 it
    is ``[1.0]`` (the grid's centre; ``gamma_max`` is then only checked to be > 0). For
    K >= 2, ``gamma_max = 1`` would repeat the speed 1 and is refused.

    With ``gamma_min`` (0 < gamma_min < gamma_max) the geometric grid runs from
    ``gamma_min`` to ``gamma_max`` instead (K >= 2; the range :func:`grid_defaults`
    chooses from a time grid)."""
    if gamma_min is not None:
        k_count = check_count("num_ou", num_ou)
        lo, hi = _concrete(gamma_min), _concrete(gamma_max)
        if lo is None or hi is None or lo.ndim or hi.ndim or not (
                np.isfinite(hi) and 0 < lo < hi):
            raise InvalidArgumentError(f"gamma_min and gamma_max must be concrete scalars with "
                                       f"0 < gamma_min < gamma_max, got {gamma_min!r}, "
                                       f"{gamma_max!r}")
        if k_count < 2:
            raise InvalidArgumentError(f"num_ou must be >= 2 with gamma_min, got {num_ou!r}")
        return jnp.asarray(np.geomspace(float(lo), float(hi), k_count),
                           _float_dtype(gamma_max))
    k_count = check_count("num_ou", num_ou)
    g = _concrete(gamma_max)
    if g is not None:
        if g.ndim != 0 or not np.isfinite(g) or g <= 0:
            raise InvalidArgumentError(f"gamma_max must be a finite scalar > 0, got {gamma_max!r}")
        if k_count > 1 and g == 1:
            raise InvalidArgumentError(
                "gamma_max must differ from 1 when num_ou > 1 (all speeds would be 1 and the "
                "weights' system singular)"
            )
    if k_count == 1:
        return jnp.ones((1,), dtype=_float_dtype(gamma_max))
    k = jnp.arange(1, k_count + 1)
    exponent = (2.0 * k - (k_count + 1)) / (k_count - 1)  # = 2 (k - (K+1)/2) / (K-1)
    return jnp.exp(exponent * jnp.log(jnp.asarray(gamma_max, _float_dtype(gamma_max))))


#: ``gamma_max * dt`` of the default fastest speed (Euler's decay ``1 - 0.25`` vs ``e^-0.25``).
DEFAULT_SPEED_STEP = 0.25
#: The default slowest speed is ``1 / (DEFAULT_SLOW_FACTOR * T)`` (long memory for H > 1/2).
DEFAULT_SLOW_FACTOR = 10.0
#: Speeds per decade of the default grid, and the largest default K.
SPEEDS_PER_DECADE = 2.0
MAX_DEFAULT_NUM_OU = 10


def grid_defaults(times):
    """``(num_ou, gamma_min, gamma_max)`` chosen from a time grid (beyond Daems et al. 2024,
    whose grid is fixed by hand): the fastest speed resolved by the finest scale the grid
    has, ``gamma_max = 0.25 / max(dt)`` (so Euler's step on it, ``gamma_max dt <= 0.25``,
    stays accurate), the slowest ``gamma_min = 1 / (10 T)`` with T the horizon (the long
    memory of H > 1/2 is carried by speeds below 1/T), and ``K = 1 + ceil(2 log10(gamma_max
    / gamma_min))`` speeds (two per decade, at most 10). Measured on increments at lag 0.02
    over T = 4 (grid step 0.005: K = 8, speeds 0.025..50, type II), the relative
    (Frobenius) error of the increment covariance is ~2% at H = 0.3 and 0.5 and ~3-4% at
    H = 0.7, against 28% / 0.3% / 7% for the former fixed default K = 5, gamma_max = 20
    (benchmarks/bench_hurst.py)."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.shape[0] < 2 or not np.all(np.diff(t) > 0):
        raise InvalidArgumentError("times must be a strictly increasing 1-D grid of >= 2 "
                                   "points to choose the MA-fBM speeds from")
    horizon = float(t[-1] - t[0])
    gamma_max = DEFAULT_SPEED_STEP / float(np.max(np.diff(t)))
    gamma_min = 1.0 / (DEFAULT_SLOW_FACTOR * horizon)
    decades = np.log10(gamma_max / gamma_min)
    num_ou = int(min(MAX_DEFAULT_NUM_OU, max(2, 1 + np.ceil(SPEEDS_PER_DECADE * decades))))
    return num_ou, gamma_min, gamma_max


def stationary_covariance(gammas) -> jnp.ndarray:
    """The stationary covariance of Y, ``C_ij = 1/(gamma_i + gamma_j)``: the type I initial
    law ``Y(0) ~ N(0, C)`` (Daems et al. 2024, sec. 3)."""
    gammas = _check_speeds(gammas)
    return 1.0 / (gammas[:, None] + gammas[None, :])


def ou_transition(gammas, dt):
    """Exact transition of the K OU processes over ``dt`` with one shared W:
    ``Y(t+dt) = decay * Y(t) + N(0, cov)`` with ``decay_k = exp(-gamma_k dt)`` and
    ``cov_ij = (1 - exp(-(gamma_i+gamma_j) dt)) / (gamma_i+gamma_j)``."""
    gammas = jnp.asarray(gammas)
    s = gammas[:, None] + gammas[None, :]
    return jnp.exp(-gammas * dt), -jnp.expm1(-s * dt) / s


def psd_sqrt(cov) -> jnp.ndarray:
    """A square root ``L`` with ``L L' = cov`` of a (near-singular) PSD matrix, by symmetric
    eigendecomposition with negative round-off eigenvalues clipped to 0 (a Cholesky fails on
    the OU covariances, which are close to rank one)."""
    vals, vecs = jnp.linalg.eigh(cov)
    return vecs * jnp.sqrt(jnp.clip(vals, 0.0, None))[..., None, :]


# ------------------------------------------------------- host float64 closed forms (numpy)


def _phi(x):
    """``(x - 1 + e^-x) / x^2``, stable for small x (series below 1e-2)."""
    x = np.asarray(x, dtype=np.float64)
    small = x < 1e-2
    xs = np.where(small, x, 1.0)
    xd = np.where(small, 1.0, x)
    direct = (xd + np.expm1(-xd)) / xd**2
    series = 0.5 - xs / 6 + xs**2 / 24 - xs**3 / 120 + xs**4 / 720
    return np.where(small, series, direct)


def matrix_a(gammas, T, kind: str) -> np.ndarray:
    """The Gram matrix ``A`` of the least-squares problem (float64, host; see the module
    docstring): type II ``T^2 phi(sT)``, type I ``(T/s)[x_i phi(x_i) + x_j phi(x_j)]``.
    Leading batch dimensions of ``gammas`` (..., K) and ``T`` (...) broadcast."""
    g = np.asarray(gammas, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)[..., None, None]
    gi, gj = g[..., :, None], g[..., None, :]
    s = gi + gj
    if _check_kind(kind) == "II":
        return T**2 * _phi(s * T)
    xi, xj = gi * T, gj * T
    return (T / s) * (xi * _phi(xi) + xj * _phi(xj))


def _scaled_upper_gamma(a, x):
    """``R(a, x) = e^x Q(a, x)`` for x > 0: direct up to 100, asymptotic series above."""
    a, x = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(x, np.float64))
    big = x > _LARGE_X
    xd = np.where(big, 1.0, x)
    direct = np.exp(xd) * gammaincc(a, xd)
    xb = np.where(big, x, _LARGE_X)
    term, total = np.ones_like(xb), np.ones_like(xb)
    for n in range(1, 16):
        term = term * (a - n) / xb
        total = total + term
    asymptotic = xb ** (a - 1) / gamma_fn(a) * total
    return np.where(big, asymptotic, direct)


def _b_type_two(alpha, g, T):
    x = g * T
    return g ** (-alpha - 1) * (x * gammainc(alpha, x) - alpha * gammainc(alpha + 1, x))


def _b_type_one(alpha, g, T):
    x = g * T
    alpha, x, g = np.broadcast_arrays(alpha, x, g)
    small = x <= _SMALL_X
    # small X: X^a/Gamma(a+1) sum_{n>=1} X^n/(a+1)_n - 2 (sinh X - X)
    xs = np.where(small, x, _SMALL_X)
    term, series = np.ones_like(xs), np.zeros_like(xs)
    for n in range(1, 30):
        term = term * xs / (alpha + n)
        series = series + term
    sinh_minus, odd = np.zeros_like(xs), xs.copy()
    for n in range(1, 12):
        odd = odd * xs * xs / ((2 * n) * (2 * n + 1))
        sinh_minus = sinh_minus + odd
    small_form = xs**alpha / gamma_fn(alpha + 1) * series - 2.0 * sinh_minus
    # X > 1: 2X + e^-X - R(a, X) - X^a/Gamma(a+1)
    xl = np.where(small, 2.0 * _SMALL_X, x)
    large_form = (2.0 * xl + np.exp(-xl) - _scaled_upper_gamma(alpha, xl)
                  - xl**alpha / gamma_fn(alpha + 1))
    return g ** (-alpha - 1) * np.where(small, small_form, large_form)


def vector_b(hurst, gammas, T, kind: str) -> np.ndarray:
    """The cross term ``b`` (float64, host; see the module docstring for both types).
    ``hurst`` (...), ``gammas`` (..., K), ``T`` (...) broadcast."""
    alpha = np.asarray(hurst, dtype=np.float64)[..., None] + 0.5
    g = np.asarray(gammas, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)[..., None]
    if _check_kind(kind) == "II":
        return _b_type_two(alpha, g, T)
    return _b_type_one(alpha, g, T)


def constant_c(hurst, T, kind: str) -> np.ndarray:
    """``c = int_0^T Var B(t) dt`` (float64, host): ``T^(2H+1)/(2H(2H+1)Gamma(H+1/2)^2)`` for
    type II, ``V_H T^(2H+1)/(2H+1)`` with ``V_H = 1/(Gamma(2H+1) sin(pi H))`` for type I."""
    h = np.asarray(hurst, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    return _variance_constant(h, kind) * T ** (2 * h + 1) / (2 * h + 1)


def _variance_constant(h, kind):
    """``Var B(1)``: ``1/(2H Gamma(H+1/2)^2)`` (type II), ``1/(Gamma(2H+1) sin(pi H))`` (I)."""
    if _check_kind(kind) == "II":
        return 1.0 / (2 * h * gamma_fn(h + 0.5) ** 2)
    return 1.0 / (gamma_fn(2 * h + 1) * np.sin(np.pi * h))


def _b_and_derivative(hurst, gammas, T, kind):
    """b and db/dH: one vectorised evaluation of the float64 closed form of b at H and at the
    four points of a five-point central difference (step 5e-4, shrunk near 0 and 1)."""
    h = np.asarray(hurst, dtype=np.float64)
    step = np.minimum(_FD_STEP, 0.25 * np.minimum(h, 1 - h))
    offsets = np.array([0.0, -2.0, -1.0, 1.0, 2.0]).reshape((5,) + (1,) * h.ndim)
    bs = vector_b(h + offsets * step, gammas, T, kind)
    db = (bs[1] - 8 * bs[2] + 8 * bs[3] - bs[4]) / (12 * step[..., None])
    return bs[0], db


def least_squares_solve(a, rhs, rcond=RCOND):
    """``A^+ rhs`` by symmetric eigendecomposition, dropping eigenvalues below
    ``rcond * lambda_max``: the exact solve where cond(A) < 1/rcond, and the minimum-norm
    least-squares solution (to working precision) where A is numerically singular.
    ``a`` (..., K, K), ``rhs`` (..., K, m)."""
    lam, vecs = np.linalg.eigh(a)
    keep = lam > rcond * lam[..., -1:]
    coef = np.swapaxes(vecs, -1, -2) @ rhs
    coef = np.where(keep[..., None], coef / np.where(keep, lam, 1.0)[..., None], 0.0)
    return vecs @ coef


def weights_and_derivative(hurst, gammas, T, kind: str, derivative: bool = True,
                           rcond: float = RCOND):
    """Host float64 ``omega = A^+ b`` and ``d omega / dH = A^+ db/dH`` (numpy; the second is
    None without ``derivative``). Leading batch dimensions broadcast."""
    h = np.asarray(hurst, dtype=np.float64)
    _check_hurst_values(h)  # repeated here: traced arguments are only seen on the host
    _check_speed_values(np.asarray(gammas, dtype=np.float64))
    if not np.all(np.asarray(T, dtype=np.float64) > 0):
        raise InvalidArgumentError(
            f"T (the horizon of the integrated squared error) must be > 0, got {T}"
        )
    a = matrix_a(gammas, T, kind)
    if derivative:
        rhs = np.stack(_b_and_derivative(h, gammas, T, kind), axis=-1)
    else:
        rhs = vector_b(h, gammas, T, kind)[..., None]
    shape = np.broadcast_shapes(a.shape[:-1], rhs.shape[:-1])
    sol = least_squares_solve(np.broadcast_to(a, shape + a.shape[-1:]),
                              np.broadcast_to(rhs, shape + rhs.shape[-1:]), rcond)
    return sol[..., 0], (sol[..., 1] if derivative else None)


# ----------------------------------------------------------------------------- weights


def _host_weights(kind, rcond, dtype, hurst, gammas, T):
    omega, _ = weights_and_derivative(hurst, gammas, T, kind, derivative=False, rcond=rcond)
    return omega.astype(dtype)


def _host_weights_jvp(kind, rcond, dtype, hurst, gammas, T):
    omega, d_omega = weights_and_derivative(hurst, gammas, T, kind, derivative=True,
                                            rcond=rcond)
    return omega.astype(dtype), d_omega.astype(dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _weights(hurst, gammas, T, kind, rcond):
    out = jax.ShapeDtypeStruct(gammas.shape, gammas.dtype)
    host = functools.partial(_host_weights, kind, rcond, np.dtype(gammas.dtype))
    return jax.pure_callback(host, out, hurst, gammas, T, vmap_method="expand_dims")


def _weights_jvp(kind, rcond, primals, tangents):
    hurst, gammas, T = primals
    hurst_dot, gammas_dot, T_dot = tangents
    if type(gammas_dot) is not SymbolicZero or type(T_dot) is not SymbolicZero:
        raise UnsupportedOptionError("mafbm_weights is differentiable in hurst only; pass gammas "
                                     "and T as constants (or wrap them in lax.stop_gradient)")
    out = jax.ShapeDtypeStruct(gammas.shape, gammas.dtype)
    host = functools.partial(_host_weights_jvp, kind, rcond, np.dtype(gammas.dtype))
    omega, d_omega = jax.pure_callback(host, (out, out), hurst, gammas, T,
                                       vmap_method="expand_dims")
    if type(hurst_dot) is SymbolicZero:
        return omega, jnp.zeros_like(omega)
    return omega, d_omega * hurst_dot


_weights.defjvp(_weights_jvp, symbolic_zeros=True)


def mafbm_weights(hurst, gammas, T=1.0, kind: str = "II", rcond: float = RCOND) -> jnp.ndarray:
    """Optimal MA-fBM weights omega (K,): the solution of ``A omega = b`` minimising the
    integrated squared error over [0, T] (Daems et al. 2024, eq. 9-10; type I's A, b derived
    in the module docstring); minimum-norm where A is numerically singular: eigenvalues
    below ``rcond * lambda_max`` are dropped (``rcond=0`` keeps all positive ones; see the
    module docstring).

    Solved on the host in float64 (``pure_callback``) whatever the model precision; the
    result has the dtype of ``hurst``/``gammas`` promoted. Works under ``jit`` and ``vmap``
    with a traced ``hurst`` and is differentiable in ``hurst`` (``custom_jvp``:
    ``d omega/dH = A^+ db/dH``), forward and reverse mode. A traced ``hurst`` outside
    (0, 1) raises at run time (an XLA runtime error carrying the message)."""
    _check_kind(kind)
    gammas = _check_speeds(gammas)
    _check_hurst(hurst)
    _check_horizon(T)
    if jnp.ndim(hurst) != 0 or jnp.ndim(T) != 0:
        raise ShapeMismatchError(f"hurst and T must be scalars (vmap for a batch), got shapes "
                                 f"{jnp.shape(hurst)} and {jnp.shape(T)}")
    rcond = float(rcond)
    if not 0 <= rcond < 1:
        raise InvalidArgumentError(f"rcond must lie in [0, 1), got {rcond}")
    dtype = _float_dtype(hurst, gammas)
    return _weights(jnp.asarray(hurst, dtype), gammas.astype(dtype), jnp.asarray(T, dtype), kind,
                    rcond)


def integrated_squared_error(hurst, gammas, omega, T=1.0, kind: str = "II") -> float:
    """``omega' A omega - 2 b' omega + c`` = ``int_0^T E[(B(t) - B_hat(t))^2] dt`` (Daems et
    al. 2024, eq. 9), evaluated on the host in float64 (concrete inputs only)."""
    _check_kind(kind)
    gammas = _check_speeds(gammas)
    omega = np.asarray(_check_omega(omega, gammas), dtype=np.float64)
    _check_hurst(hurst)
    _check_horizon(T)
    lam, vecs = np.linalg.eigh(matrix_a(gammas, T, kind))
    z = vecs.T @ omega  # eigenbasis: no cancellation in omega' A omega (checked against
    # quadrature of the kernel error to 1e-5 relative for |omega| up to 1e4)
    beta = vecs.T @ vector_b(hurst, gammas, T, kind)
    return float(np.sum(lam * z**2) - 2 * np.sum(beta * z) + constant_c(hurst, T, kind))


def relative_squared_error(hurst, gammas, omega, T=1.0, kind: str = "II") -> float:
    """The integrated squared error relative to the process's own size,
    ``int_0^T E[(B - B_hat)^2] dt / int_0^T E[B^2] dt`` = ``E(omega) / c`` (float64, host)."""
    return integrated_squared_error(hurst, gammas, omega, T, kind) / float(
        constant_c(hurst, T, kind))


# ------------------------------------------------------------------------- covariances


def exact_fbm_covariance(s, t, hurst, kind: str = "II") -> np.ndarray:
    """Covariance of the exact process of that type, normalised by ``1/Gamma(H+1/2)`` as in
    the module docstring (float64, host; ``s`` and ``t`` broadcast).

    Type I: ``V_H/2 (s^2H + t^2H - |t-s|^2H)`` with ``V_H = 1/(Gamma(2H+1) sin(pi H))``
    (so ``V_H = 1`` at H = 1/2, not the standard-fBM 1 at every H).
    Type II, for ``s <= t`` (closed form through Euler's integral of 2F1):
    ``int_0^s (s-u)^(a-1) (t-u)^(a-1) du / Gamma(a)^2
    = s^a t^(a-1) 2F1(1-a, 1; a+1; s/t) / (a Gamma(a)^2)``, a = H + 1/2."""
    _check_kind(kind)
    h = np.asarray(hurst, dtype=np.float64)
    _check_hurst_values(h)
    s, t = np.broadcast_arrays(np.asarray(s, np.float64), np.asarray(t, np.float64))
    if np.any(s < 0) or np.any(t < 0):
        raise InvalidArgumentError("times must be >= 0")
    if kind == "I":
        return 0.5 * _variance_constant(h, "I") * (s ** (2 * h) + t ** (2 * h)
                                                   - np.abs(t - s) ** (2 * h))
    a = h + 0.5
    lo, hi = np.minimum(s, t), np.maximum(s, t)
    safe_hi = np.where(hi > 0, hi, 1.0)
    value = (lo**a * safe_hi ** (a - 1) * hyp2f1(1 - a, 1.0, a + 1, lo / safe_hi)
             / (a * gamma_fn(a) ** 2))
    return np.where(lo > 0, value, 0.0)


def _check_times(times) -> jnp.ndarray:
    times = jnp.asarray(times)
    if times.ndim != 1 or times.shape[0] < 1:
        raise ShapeMismatchError(f"times must be a 1-D array of >= 1 times, got shape "
                                 f"{times.shape}")
    t = _concrete(times)
    if t is not None and (np.any(t < 0) or np.any(np.diff(t) <= 0)):
        raise InvalidArgumentError(f"times must be >= 0 and strictly increasing, got {t}")
    return times


def _ou_cross_covariance(u, v, gammas, kind):
    """``Cov(Y_i(u), Y_j(v))`` (..., K, K) for the chosen initial law; u, v broadcast."""
    u, v = u[..., None, None], v[..., None, None]
    gi, gj = gammas[:, None], gammas[None, :]
    s = gi + gj
    m = jnp.minimum(u, v)
    stationary = jnp.exp(-gi * (u - m) - gj * (v - m)) / s
    if kind == "I":
        return stationary
    return stationary - jnp.exp(-gi * u - gj * v) / s


@functools.partial(jax.jit, static_argnames="kind")
def _covariance(times, gammas, omega, kind):
    u, v = times[:, None], times[None, :]
    zero = jnp.zeros_like(u)
    c = (_ou_cross_covariance(u, v, gammas, kind) - _ou_cross_covariance(u, zero, gammas, kind)
         - _ou_cross_covariance(zero, v, gammas, kind)
         + _ou_cross_covariance(zero, zero, gammas, kind))
    return jnp.einsum("i,...ij,j->...", omega, c, omega)


def mafbm_covariance(times, hurst, gammas, omega, kind: str = "II") -> jnp.ndarray:
    """Closed-form covariance (n, n) of ``B_hat(t) = sum_k omega_k (Y_k(t) - Y_k(0))`` at
    ``times`` (all Y_k driven by one W; Daems et al. 2024, sec. 3):
    ``Cov(Z_i(u), Z_j(v)) = c_ij(u,v) - c_ij(u,0) - c_ij(0,v) + c_ij(0,0)`` with
    ``c_ij(u,v) = Cov(Y_i(u), Y_j(v))`` equal to ``e^{-gamma_i(u-m) - gamma_j(v-m)}/s_ij``,
    m = min(u, v), for type I (stationary) minus ``e^{-gamma_i u - gamma_j v}/s_ij`` for type
    II (Y(0) = 0). ``hurst`` enters only through omega; it is accepted for a uniform
    signature and checked. Jittable; computed in the inputs' dtype."""
    _check_kind(kind)
    _check_hurst(hurst)
    times = _check_times(times)
    gammas = _check_speeds(gammas)
    omega = _check_omega(omega, gammas)
    dtype = _float_dtype(times, gammas, omega)
    return _covariance(times.astype(dtype), gammas.astype(dtype), omega.astype(dtype), kind)


def simulate_mafbm(key, times, hurst, gammas, omega, kind: str = "II",
                   num_paths: int = 1) -> jnp.ndarray:
    """Paths (num_paths, n) of ``B_hat(t) = sum_k omega_k (Y_k(t) - Y_k(0))`` at ``times``,
    simulated exactly: the joint Gaussian OU transition of :func:`ou_transition` between
    consecutive times (the first from t = 0), one shared W, in a ``lax.scan``; type II
    starts at Y(0) = 0, type I at ``Y(0) ~ N(0, C)`` (:func:`stationary_covariance`). Matrix
    square roots by :func:`psd_sqrt`. ``hurst`` enters only through omega (checked)."""
    _check_kind(kind)
    _check_hurst(hurst)
    num_paths = check_count("num_paths", num_paths)
    times = _check_times(times)
    gammas = _check_speeds(gammas)
    omega = _check_omega(omega, gammas)
    dtype = _float_dtype(times, gammas, omega)
    return _simulate(key, times.astype(dtype), gammas.astype(dtype), omega.astype(dtype), kind,
                     num_paths)


@functools.partial(jax.jit, static_argnames=("kind", "num_paths"))
def _simulate(key, times, gammas, omega, kind, num_paths):
    dtype = times.dtype
    num_ou = gammas.shape[0]
    key_init, key_steps = jax.random.split(key)
    if kind == "I":
        y0 = jax.random.normal(key_init, (num_paths, num_ou), dtype) @ psd_sqrt(
            1.0 / (gammas[:, None] + gammas[None, :])).T
    else:
        y0 = jnp.zeros((num_paths, num_ou), dtype)
    dts = jnp.diff(times, prepend=jnp.zeros((1,), dtype))
    decays, covs = jax.vmap(lambda dt: ou_transition(gammas, dt))(dts)
    roots = jax.vmap(psd_sqrt)(covs)
    noise = jax.random.normal(key_steps, (times.shape[0], num_paths, num_ou), dtype)

    def step(y, inputs):
        decay, root, xi = inputs
        y = y * decay + xi @ root.T
        return y, (y - y0) @ omega

    _, paths = jax.lax.scan(step, y0, (decays, roots, noise))
    return paths.T


def increment_covariance_error(hurst, gammas, omega, times, kind: str = "II",
                               max_points: int = 200) -> float:
    """Relative (Frobenius) error of the MA-fBM covariance of the increments
    ``B(t_{i+1}) - B(t_i)`` against the exact fBM of that type, on ``times`` (from
    ``B(t_0)``; thinned to at most ``max_points`` increments by taking every m-th time, so
    the lag is the grid's step times m): ``||D (C_hat - C) D'||_F / ||D C D'||_F`` with the
    closed forms :func:`mafbm_covariance` and :func:`exact_fbm_covariance` (float64, host).
    The quality figure ``vsde`` reports in ``info["mafbm"]``."""
    _check_kind(kind)
    h = float(np.asarray(hurst, dtype=np.float64))
    _check_hurst_values(np.asarray(h))
    t = np.asarray(times, dtype=np.float64)
    stride = max(1, int(np.ceil((t.shape[0] - 1) / int(max_points))))
    t = t[::stride]
    if t.shape[0] < 2:
        raise InvalidArgumentError("times must hold >= 2 points")
    g = np.asarray(gammas, dtype=np.float64)
    w = np.asarray(omega, dtype=np.float64)
    approx = _covariance_host(t - t[0], g, w, kind)
    exact = exact_fbm_covariance((t - t[0])[:, None], (t - t[0])[None, :], h, kind)
    inc_a = approx[1:, 1:] - approx[:-1, 1:] - approx[1:, :-1] + approx[:-1, :-1]
    inc_e = exact[1:, 1:] - exact[:-1, 1:] - exact[1:, :-1] + exact[:-1, :-1]
    return float(np.linalg.norm(inc_a - inc_e) / np.linalg.norm(inc_e))


def _covariance_host(times, gammas, omega, kind):
    """:func:`mafbm_covariance` in float64 numpy (whatever JAX's precision)."""
    u, v = times[:, None, None, None], times[None, :, None, None]
    gi, gj = gammas[:, None], gammas[None, :]
    s = gi + gj

    def cross(a, b):
        m = np.minimum(a, b)
        out = np.exp(-gi * (a - m) - gj * (b - m)) / s
        return out if kind == "I" else out - np.exp(-gi * a - gj * b) / s

    zero = np.zeros_like(u)
    c = cross(u, v) - cross(u, zero) - cross(zero, v) + cross(zero, zero)
    return np.einsum("i,...ij,j->...", omega, c, omega)
