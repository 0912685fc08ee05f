r"""The fractional Ornstein-Uhlenbeck process (fOU): exact moments, bridge, simulation,
likelihood. Host float64 numpy/scipy, independent of the MA-fBM approximation.

Reference answers for Daems, Opper, Crevecoeur, Birdal, "Variational Inference for SDEs
Driven by Fractional Noise" (ICLR 2024), sec. 5 (fOU bridge, Hurst recovery). The model is

    dX = -theta X dt + sigma dB^H,     X(0) = x0 (+ N(0, x0_var), independent of B),

with B^H the fBM of ``ppl.semantics.mafbm``'s types and normalisation (``alpha = H + 1/2``,
``K(u) = u^(alpha-1) / Gamma(alpha)``): type II (Riemann-Liouville) ``B(t) = int_0^t K(t-s)
dW_s``; type I (Mandelbrot-van Ness) ``B(t) = int_{-inf}^t [K(t-s) - K(-s)] dW_s``, with
``Var B(1) = V_H = 1/(Gamma(2H+1) sin(pi H))`` (V = 1 at H = 1/2; the standard fBM with
Var B(1) = 1 is ``B / sqrt(V_H)``, i.e. ``sigma_std = sigma sqrt(V_H)``).

The solution is ``X(t) = e^{-theta t} x0 + sigma I(t)`` with (integration by parts, valid
for every H in (0, 1) since B is continuous and B(0) = 0)

    I(t) = int_0^t e^{-theta(t-s)} dB(s) = B(t) - theta int_0^t e^{-theta(t-s)} B(s) ds,

so ``E X(t) = x0 e^{-theta t}`` and ``Cov(X(t), X(u)) = sigma^2 Cov(I(t), I(u))
+ x0_var e^{-theta(t+u)}``. The two types are computed by two different routes:

**Type II** (a Volterra process). Substituting ``B = K * dW`` gives ``I(t) = int_0^t
G(t-r) dW_r`` with the fOU kernel

    G(x) = K(x) - theta int_0^x e^{-theta(x-w)} K(w) dw
         = K(x) [1 - (z / alpha) 1F1(1; alpha+1; -z)],       z = theta x

(Kummer's function, scipy ``hyp1f1``; for z > 40 the equal asymptotic series
``G = K sum_{n>=1} (-1)^{n+1} (alpha-1)(alpha-2)...(alpha-n) z^-n``, from repeated
integration by parts, error O(e^{-z})). At H = 1/2, G(x) = e^{-theta x}; at theta = 0,
G = K. By the Ito isometry, with ``m = min(t, u)``, ``d = |t - u|``,

    Cov(I(t), I(u)) = J(m, d) = int_0^m G(v) G(v + d) dv.

J is computed by composite Gauss-Legendre (20 nodes a panel) on panels whose length never
exceeds their distance from the singularity of G at 0 (a dyadic mesh graded to 2^-40 m
near 0, plus the times themselves as break points, so J(t_j, d) for every j is one cumulative
sum), and the first panel ``[0, 2^-40 t_1]`` by Gauss-Jacobi with the weight
``v^(alpha-1)`` (``v^(2 alpha - 2)`` at d = 0), the rest of the integrand being smooth there.
Each panel sees the nearest singularity at least its own length away, so 20 nodes reach
float64 accuracy (Bernstein ellipse rho >= 5.8; checked in tests/test_fou.py against
adaptive ``scipy.integrate.quad``).

**Type I** (stationary increments, theta > 0). ``I(t) = Z(t) - e^{-theta t} Z(0)`` with
the stationary fOU ``Z(t) = int_{-inf}^t e^{-theta(t-s)} dB(s)``, whose autocovariance is

    c(d) = e^{-theta d} c(0) + beta(d) - theta int_0^d e^{-theta(d-r)} beta(r) dr,
    c(0) = V_H Gamma(2H+1) / (2 theta^2H) = 1 / (2 sin(pi H) theta^2H),
    beta(r) = Cov(B(r), Z(0))
            = -(V_H/2) [r^2H + theta^-2H Gamma(2H+1) (1 - e^{theta r} Q(2H+1, theta r))]

(``Z(t+d) = e^{-theta d} Z(t) + int_t^{t+d} e^{-theta(t+d-s)} dB(s)``, integrate by parts;
``Z(0) = -theta int_0^inf e^{-theta p} B(-p) dp``; Q the regularised upper incomplete
gamma function). beta(0) = 0 and beta = 0 at H = 1/2 (independent increments), so
c(d) = e^{-theta d}/(2 theta) there. The remaining integral is by adaptive
``scipy.integrate.quad`` (only an r^2H endpoint singularity). Then

    Cov(I(t), I(u)) = c(|t-u|) - e^{-theta u} c(t) - e^{-theta t} c(u) + e^{-theta(t+u)} c(0).

At theta = 0 (plain fBM, the paper's bridge with theta = 0) type I is the fBM covariance
``V_H/2 (t^2H + u^2H - |t-u|^2H)``. The test file checks this route against the
independent ``c(d) = int_0^inf G(v) G(v+d) dv``.

**The paper's bridge setting** (repository VideoNeuralSDE/MAFBM,
``experiments/bridge/main.py``): type I, SDE diffusion sigma = 1, x0 = 0, T = 2 (200 steps),
one observation y = X(2) + N(0, 0.1^2) with y = 0, MA-fBM K = 5, gamma_max = 20; runs at
theta = 0 for H = 0.1..0.9 and theta in {1, 2} for H = 0.6..0.9. Their "true variance"
uses the *standard* fBM (Var B(1) = 1) and, for theta > 0, the *stationary* fOU
autocovariance (Lysy & Pillai) conditioned on X(0) = 0 (noise 1e-7) and y. That is not the
process started at X(0) = 0 with noise from time 0 (B^H is not Markov: conditioning Z on
Z(0) = 0 differs from I(t) = Z(t) - e^{-theta t} Z(0)); at theta = 0 the two coincide. To
reproduce their reference curves use ``fou_bridge_moments(..., kind="I", obs_time=2,
obs_sigma=0.1, sigma=1/sqrt(V_H))`` at theta = 0 and :func:`fou_stationary_autocovariance`
for theta > 0. The default here is the process as the SDE defines it.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import linalg
from scipy.special import gamma as gamma_fn
from scipy.special import gammaincc, hyp1f1, roots_jacobi, roots_legendre

from ppl.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ShapeMismatchError,
    UnknownOptionError,
    check_count,
)

KINDS = ("I", "II")
NUM_NODES = 20          # Gauss-Legendre nodes per panel
GRADING_LEVELS = 40     # dyadic panels towards 0 on [0, t_1]
ASYMPTOTIC_Z = 40.0     # theta x beyond which G uses its asymptotic series
LAG_DECIMALS = 12       # lags equal to 12 digits (relative to t_max) share a quadrature
JITTER = 1e-12          # relative Cholesky jitter (times the largest variance)

__all__ = [
    "fou_covariance",
    "fou_mean",
    "fou_bridge_moments",
    "simulate_fou_exact",
    "fou_log_likelihood",
    "fou_stationary_autocovariance",
    "fou_kernel",
    "ou_covariance",
    "fbm_variance_constant",
]


# ----------------------------------------------------------------------------- checks


def _check_kind(kind) -> str:
    if kind not in KINDS:
        raise UnknownOptionError(f"kind must be one of {KINDS} (type I Mandelbrot-van Ness, "
                                 f"type II Riemann-Liouville), got {kind!r}")
    return kind


def _scalar(name, value, lo=None, lo_open=False, hi=None):
    if isinstance(value, (str, bytes)):
        raise ArgumentTypeError(f"{name} must be a real scalar, got {value!r} (a string)")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"{name} must be a real scalar, got {value!r}") from None
    if not np.isfinite(v):
        raise InvalidArgumentError(f"{name} must be finite, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InvalidArgumentError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v >= hi:
        raise InvalidArgumentError(f"{name} must be < {hi}, got {v}")
    return v


def _check_params(hurst, theta, sigma):
    h = _scalar("hurst", hurst, lo=0.0, lo_open=True, hi=1.0)
    return h, _scalar("theta", theta, lo=0.0), _scalar("sigma", sigma, lo=0.0, lo_open=True)


def _check_times(times) -> np.ndarray:
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.shape[0] < 1:
        raise ShapeMismatchError(f"times must be a 1-D array of >= 1 times, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(np.diff(t) <= 0):
        raise InvalidArgumentError(f"times must be finite, >= 0 and strictly increasing, got {t}")
    return t


def fbm_variance_constant(hurst, kind: str = "I") -> float:
    """``Var B^H(1)``: ``V_H = 1/(Gamma(2H+1) sin(pi H))`` (type I), ``1/(2H Gamma(H+1/2)^2)``
    (type II): ``ppl.semantics.mafbm``'s normalisation (module docstring)."""
    h = _scalar("hurst", hurst, lo=0.0, lo_open=True, hi=1.0)
    if _check_kind(kind) == "I":
        return 1.0 / (gamma_fn(2 * h + 1) * np.sin(np.pi * h))
    return 1.0 / (2 * h * gamma_fn(h + 0.5) ** 2)


# ------------------------------------------------------------------ Brownian reference


def ou_covariance(times, theta, sigma, x0_var=0.0) -> np.ndarray:
    """Closed-form OU covariance (H = 1/2): ``sigma^2 (e^{-theta|t-u|} - e^{-theta(t+u)})
    / (2 theta) + x0_var e^{-theta(t+u)}`` (``sigma^2 min(t, u)`` at theta = 0)."""
    t = _check_times(times)
    theta = _scalar("theta", theta, lo=0.0)
    u, v = t[:, None], t[None, :]
    decay = np.exp(-theta * (u + v))
    if theta == 0:
        core = np.minimum(u, v)
    else:
        core = -np.expm1(-2 * theta * np.minimum(u, v)) * np.exp(-theta * np.abs(u - v)) / (
            2 * theta)
    return sigma**2 * core + x0_var * decay


# ------------------------------------------------------------------------ fOU kernel G


def _asymptotic_ratio(z, alpha):
    """``G/K = sum_{n>=1} (-1)^{n+1} (alpha-1)...(alpha-n) z^-n`` (z > 40, stops at the
    smallest term)."""
    total = np.zeros_like(z)
    term = -np.ones_like(z)                    # so that the n = 1 term is (alpha-1)/z
    active = np.ones(z.shape, dtype=bool)
    for n in range(1, 60):
        new = -term * (alpha - n) / z
        active &= np.abs(new) < np.abs(term) + (n == 1)
        total = total + np.where(active, new, 0.0)
        term = new
    return total


def fou_kernel(x, hurst, theta) -> np.ndarray:
    """The fOU Volterra kernel ``G(x) = K(x) - theta int_0^x e^{-theta(x-w)} K(w) dw``
    (module docstring), x > 0: ``I(t) = int_0^t G(t-r) dW_r`` for type II."""
    x = np.asarray(x, dtype=np.float64)
    alpha = hurst + 0.5
    k = x ** (alpha - 1) / gamma_fn(alpha)
    if theta == 0:
        return k
    z = theta * x
    small = z <= ASYMPTOTIC_Z
    zs = np.where(small, z, 1.0)
    zl = np.where(small, ASYMPTOTIC_Z + 1, z)
    ratio = np.where(small, 1.0 - zs / alpha * hyp1f1(1.0, alpha + 1, -zs),
                     _asymptotic_ratio(zl, alpha))
    return k * ratio


# -------------------------------------------------------------- type II: J(m, d) panels


def _distinct(values, scale):
    """Sorted distinct values (equal to 12 significant digits relative to ``scale`` share
    one quadrature: floating-point noise in ``t_i - t_j`` on a regular grid) and the index of
    each value among them; each representative is an actual member of its group."""
    _, first, inverse = np.unique(np.round(values / scale, LAG_DECIMALS), return_index=True,
                                  return_inverse=True)
    return values[first], inverse.ravel()


@functools.lru_cache(maxsize=8)
def _legendre(n):
    x, w = roots_legendre(n)
    return (x + 1) / 2, w / 2


@functools.lru_cache(maxsize=64)
def _jacobi(n, power):
    """Nodes/weights on [0, 1] for ``int_0^1 f(v) v^power dv``."""
    x, w = roots_jacobi(n, 0.0, power)
    return (x + 1) / 2, w / 2 ** (power + 1)


def _panels(times):
    """Panel edges on [eps, t_n]: dyadic grading from t_1 down to eps = 2^-40 t_1, then each
    [t_j, t_{j+1}] split so that no panel is longer than its left end. Returns (edges,
    index of each time among the edges)."""
    t1 = times[0]
    edges = list(t1 * 2.0 ** -np.arange(GRADING_LEVELS, -1, -1))
    for a, b in zip(times[:-1], times[1:], strict=True):
        x = a
        while 2 * x < b:
            x = 2 * x
            edges.append(x)
        edges.append(b)
    edges = np.asarray(edges)
    where = np.searchsorted(edges, times)
    return edges, where


def _type_two_core(times, hurst, theta):
    """``Cov(I(t_i), I(t_j)) = J(min, |t_i - t_j|)`` for times > 0 (module docstring)."""
    n = times.shape[0]
    alpha = hurst + 0.5
    lags = np.abs(times[:, None] - times[None, :])
    keys, inverse = _distinct(lags.ravel(), times[-1])
    inverse = inverse.reshape(n, n)
    edges, where = _panels(times)
    x01, w01 = _legendre(NUM_NODES)
    a, b = edges[:-1], edges[1:]
    nodes = a[:, None] + (b - a)[:, None] * x01[None, :]            # (P, q)
    weights = (b - a)[:, None] * w01[None, :]
    g_nodes = fou_kernel(nodes, hurst, theta)
    eps = edges[0]
    # first panel [0, eps]: weight v^(alpha-1) (v^(2 alpha-2) at d = 0); smooth rest
    xj, wj = _jacobi(NUM_NODES, alpha - 1)
    xj2, wj2 = _jacobi(NUM_NODES, 2 * alpha - 2)
    vj, vj2 = eps * xj, eps * xj2
    smooth_j = fou_kernel(vj, hurst, theta) * vj ** (1 - alpha)     # K-free part / Gamma
    smooth_j2 = fou_kernel(vj2, hurst, theta) * vj2 ** (1 - alpha)
    cum = np.empty((keys.shape[0], edges.shape[0]))
    for i, d in enumerate(keys):
        if d == 0:
            first = eps ** (2 * alpha - 1) * np.sum(wj2 * smooth_j2**2)
            body = np.sum(weights * g_nodes**2, axis=1)
        else:
            first = eps**alpha * np.sum(wj * smooth_j * fou_kernel(vj + d, hurst, theta))
            body = np.sum(weights * g_nodes * fou_kernel(nodes + d, hurst, theta), axis=1)
        cum[i] = np.concatenate([[first], first + np.cumsum(body)])
    lo = np.minimum(np.arange(n)[:, None], np.arange(n)[None, :])
    return cum[inverse, where[lo]]


# ---------------------------------------------------------------- type I: stationary c


def _scaled_upper_gamma(a, x):
    """``e^x Q(a, x)`` without overflow (asymptotic series beyond x = 500)."""
    x = np.asarray(x, dtype=np.float64)
    small = x <= 500
    xs = np.where(small, x, 1.0)
    out_small = np.exp(xs) * gammaincc(a, xs)
    xl = np.where(small, 501.0, x)
    series, term = np.ones_like(xl), np.ones_like(xl)
    for k in range(1, 30):
        term = term * (a - k) / xl
        series = series + term
    out_large = xl ** (a - 1) * series / gamma_fn(a)
    return np.where(small, out_small, out_large)


def _beta(r, hurst, theta):
    """``beta(r) = Cov(B(r), Z(0))`` for type I (module docstring)."""
    v = fbm_variance_constant(hurst, "I")
    h2 = 2 * hurst
    r = np.asarray(r, dtype=np.float64)
    return -0.5 * v * (r**h2 + theta**-h2 * gamma_fn(h2 + 1)
                       * (1.0 - _scaled_upper_gamma(h2 + 1, theta * r)))


def _lag_panels(lags, theta):
    """Panel edges on [0, max lag] for the cumulative integral of type I: dyadic grading to
    2^-40 of the first positive lag, then each gap between consecutive lags split so that no
    panel is longer than its left end nor than 4/theta. Returns (edges, index of each lag)."""
    first = lags[0]
    edges = [0.0] + list(first * 2.0 ** -np.arange(GRADING_LEVELS, -1, -1))
    for a, b in zip(lags[:-1], lags[1:], strict=True):
        x = a
        while True:
            x = min(2 * x, x + 4.0 / theta)
            if x >= b:
                break
            edges.append(x)
        edges.append(b)
    edges = np.asarray(edges)
    return edges, np.searchsorted(edges, lags)


def _stationary_c(lags, hurst, theta):
    """Stationary type-I fOU autocovariance c(d) (sigma = 1) at each distinct sorted lag >= 0:
    ``e^{-theta d} c(0) + beta(d) - theta A(d)``, ``A(d) = int_0^d e^{-theta(d-r)} beta(r)
    dr`` by the recursion ``A(b) = e^{-theta(b-a)} A(a) + int_a^b e^{-theta(b-r)} beta(r) dr``
    over panels (20-node Gauss-Legendre each; the first panel [0, 2^-40 d_1] by Gauss-Jacobi
    with weight r^2H, beta(r) / r^2H being smooth there)."""
    lags = np.asarray(lags, dtype=np.float64)
    c0 = 1.0 / (2 * np.sin(np.pi * hurst) * theta ** (2 * hurst))
    out = np.full(lags.shape, c0)
    pos = lags > 0
    if not np.any(pos):
        return out
    d = lags[pos]
    edges, where = _lag_panels(d, theta)
    a, b = edges[:-1], edges[1:]
    x01, w01 = _legendre(NUM_NODES)
    nodes = a[:, None] + (b - a)[:, None] * x01[None, :]
    pieces = np.sum((b - a)[:, None] * w01 * np.exp(-theta * (b[:, None] - nodes))
                    * _beta(nodes, hurst, theta), axis=1)
    eps = edges[1]
    xj, wj = _jacobi(NUM_NODES, 2 * hurst)
    rj = eps * xj
    pieces[0] = eps ** (2 * hurst + 1) * np.sum(wj * np.exp(-theta * (eps - rj))
                                                * _beta(rj, hurst, theta) / rj ** (2 * hurst))
    decay = np.exp(-theta * (b - a))
    acc = np.empty(edges.shape[0])
    acc[0] = 0.0
    for i in range(pieces.shape[0]):
        acc[i + 1] = decay[i] * acc[i] + pieces[i]
    out[pos] = np.exp(-theta * d) * c0 + _beta(d, hurst, theta) - theta * acc[where]
    return out


def fou_stationary_autocovariance(lags, hurst, theta, sigma=1.0) -> np.ndarray:
    """Autocovariance ``sigma^2 c(d)`` of the stationary type-I fOU
    ``Z(t) = int_{-inf}^t e^{-theta(t-s)} sigma dB(s)`` (mafbm normalisation; multiply sigma
    by ``sqrt(1/V_H)`` for the standard fBM), theta > 0. Module docstring for c."""
    h, theta, sigma = _check_params(hurst, theta, sigma)
    if theta == 0:
        raise InvalidArgumentError(
            "theta must be > 0 for the stationary fOU (no stationary law at 0)"
        )
    d = np.abs(np.asarray(lags, dtype=np.float64))
    if not np.all(np.isfinite(d)):
        raise InvalidArgumentError("lags must be finite")
    keys, inverse = _distinct(d.ravel(), max(float(d.max(initial=0.0)), 1e-300))
    return sigma**2 * _stationary_c(keys, h, theta)[inverse].reshape(d.shape)


def _type_one_core(times, hurst, theta):
    n = times.shape[0]
    if theta == 0:
        v = fbm_variance_constant(hurst, "I")
        u, w = times[:, None], times[None, :]
        return 0.5 * v * (u ** (2 * hurst) + w ** (2 * hurst) - np.abs(u - w) ** (2 * hurst))
    lags = np.abs(times[:, None] - times[None, :])
    every = np.concatenate([lags.ravel(), times, [0.0]])
    keys, inverse = _distinct(every, times[-1])
    c = _stationary_c(keys, hurst, theta)[inverse]
    c_lag = c[: n * n].reshape(n, n)
    c_t = c[n * n: n * n + n]
    c0 = c[-1]
    e = np.exp(-theta * times)
    return c_lag - e[None, :] * c_t[:, None] - e[:, None] * c_t[None, :] + np.outer(e, e) * c0


# --------------------------------------------------------------------------- public API


def fou_covariance(times, hurst, theta, sigma, kind: str = "II", x0_var=0.0) -> np.ndarray:
    """Exact covariance matrix (n, n), float64, of the fOU ``dX = -theta X dt + sigma dB^H``
    at ``times`` (strictly increasing, >= 0), ``X(0) = x0 + N(0, x0_var)`` independent of B:
    ``sigma^2 Cov(I(t), I(u)) + x0_var e^{-theta(t+u)}`` (module docstring; Daems et al.
    2024, sec. 5's exact reference). H = 1/2 gives :func:`ou_covariance`."""
    kind = _check_kind(kind)
    t = _check_times(times)
    h, theta, sigma = _check_params(hurst, theta, sigma)
    x0_var = _scalar("x0_var", x0_var, lo=0.0)
    positive = t > 0
    core = np.zeros((t.shape[0], t.shape[0]))
    tp = t[positive]
    if tp.size:
        inner = _type_two_core(tp, h, theta) if kind == "II" else _type_one_core(tp, h, theta)
        core[np.ix_(positive, positive)] = inner
    cov = sigma**2 * core + x0_var * np.exp(-theta * (t[:, None] + t[None, :]))
    return 0.5 * (cov + cov.T)


def fou_mean(times, theta, x0=0.0) -> np.ndarray:
    """``E X(t) = x0 e^{-theta t}``."""
    t = _check_times(times)
    return _scalar("x0", x0) * np.exp(-_scalar("theta", theta, lo=0.0) * t)


def fou_bridge_moments(times, hurst, theta, sigma, obs_time, obs_value=0.0, obs_sigma=0.1,
                       kind: str = "II", x0=0.0, x0_var=0.0):
    """Exact posterior mean and variance of X(times) given ``y = X(obs_time) + N(0,
    obs_sigma^2)`` (Gaussian conditioning: ``m + k (y - m_o) / (k_oo + s^2)``, ``diag -
    k^2 / (k_oo + s^2)``). Daems et al. 2024's first experiment is obs_time = 2, y = 0,
    obs_sigma = 0.1 (module docstring for their exact setting). Returns (mean, var), (n,)."""
    t = _check_times(times)
    obs_time = _scalar("obs_time", obs_time, lo=0.0, lo_open=True)
    obs_value = _scalar("obs_value", obs_value)
    obs_sigma = _scalar("obs_sigma", obs_sigma, lo=0.0)
    grid, inverse = np.unique(np.concatenate([t, [obs_time]]), return_inverse=True)
    cov = fou_covariance(grid, hurst, theta, sigma, kind, x0_var)
    mean = fou_mean(grid, theta, x0)
    o = inverse[-1]
    denom = cov[o, o] + obs_sigma**2
    if denom <= 0:
        raise InvalidArgumentError(
            "the observation has zero variance (obs_sigma = 0 and X(obs_time) deterministic)"
        )
    k = cov[inverse[:-1], o]
    post_mean = mean[inverse[:-1]] + k * (obs_value - mean[o]) / denom
    post_var = np.diag(cov)[inverse[:-1]] - k**2 / denom
    return post_mean, np.maximum(post_var, 0.0)


def _cholesky(cov):
    """Lower Cholesky factor of ``cov + jitter I``, jitter = 1e-12 max(diag) (x10 up to
    1e-6 if needed; 0-variance rows, e.g. t = 0 with x0_var = 0, stay 0)."""
    scale = max(float(np.max(np.diag(cov))), 1e-300)
    jitter = JITTER
    while jitter <= 1e-6:
        try:
            return np.linalg.cholesky(cov + jitter * scale * np.eye(cov.shape[0]))
        except np.linalg.LinAlgError:
            jitter *= 10
    raise np.linalg.LinAlgError("fOU covariance is not positive definite even with 1e-6 "
                                "relative jitter")


def _normals(key_or_seed, shape):
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        return np.random.default_rng(int(key_or_seed)).standard_normal(shape)
    try:
        import jax
        import jax.numpy as jnp
        key = jnp.asarray(key_or_seed) if not hasattr(key_or_seed, "dtype") else key_or_seed
        return np.asarray(jax.random.normal(key, shape, dtype=jnp.float32 if not
                                            jax.config.read("jax_enable_x64") else
                                            jnp.float64), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ArgumentTypeError(f"key_or_seed must be an int seed or a JAX PRNG key, got "
                                f"{key_or_seed!r}") from err


def simulate_fou_exact(key_or_seed, times, hurst, theta, sigma, kind: str = "II",
                       num_paths=1, x0=0.0, x0_var=0.0) -> np.ndarray:
    """Exact joint draws (num_paths, n) of X(times): ``mean + L eps`` with L the Cholesky
    factor of :func:`fou_covariance` plus 1e-12 relative jitter (float64). An int seed uses
    numpy's default_rng; a JAX key uses jax.random.normal."""
    num_paths = check_count("num_paths", num_paths)
    cov = fou_covariance(times, hurst, theta, sigma, kind, x0_var)
    chol = _cholesky(cov)
    eps = _normals(key_or_seed, (num_paths, cov.shape[0]))
    return fou_mean(times, theta, x0)[None, :] + eps @ chol.T


def fou_log_likelihood(y, times, hurst, theta, sigma, obs_sigma, kind: str = "II", x0=0.0,
                       x0_var=0.0):
    """Exact Gaussian log-likelihood of ``y_i = X(t_i) + N(0, obs_sigma^2)`` (independent):
    ``log N(y; x0 e^{-theta t}, C + obs_sigma^2 I)``. ``y`` is (n,) or (..., n) (independent
    paths; one value per path)."""
    t = _check_times(times)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim < 1 or y.shape[-1] != t.shape[0]:
        raise ShapeMismatchError(f"y must have last axis {t.shape[0]} (one per time), got "
                                 f"shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise InvalidArgumentError("y must be finite")
    obs_sigma = _scalar("obs_sigma", obs_sigma, lo=0.0)
    cov = fou_covariance(t, hurst, theta, sigma, kind, x0_var) + obs_sigma**2 * np.eye(len(t))
    try:
        chol = linalg.cholesky(cov, lower=True)
    except linalg.LinAlgError as err:
        raise InvalidArgumentError("covariance + obs_sigma^2 I is singular; use obs_sigma > 0 or "
                                   "times > 0") from err
    resid = y - fou_mean(t, theta, x0)
    z = linalg.solve_triangular(chol, np.moveaxis(resid.reshape(-1, len(t)), -1, 0), lower=True)
    quad = np.sum(z**2, axis=0)
    logdet = 2 * np.sum(np.log(np.diag(chol)))
    out = -0.5 * (quad + logdet + len(t) * np.log(2 * np.pi))
    return out.reshape(y.shape[:-1]) if y.ndim > 1 else float(out[0])
