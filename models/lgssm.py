"""Linear-Gaussian state-space models and their exact posteriors.

The model (state dimension ``d``, observation dimension ``p``)::

    x_0 = m0 (fixed; more generally x_0 ~ N(m0, P0) with P0 = 0 by default)
    x_t | x_{t-1} ~ N(A x_{t-1}, Q)        t = 1..T
    y_t | x_t     ~ N(C x_t, R)

is solved exactly by the Kalman filter (Kalman 1960, "A new approach to linear filtering
and prediction problems"), which gives the filtering distributions p(x_t | y_{1:t}) and the
log evidence log p(y_{1:T}) by the prediction-error decomposition, and by the
Rauch-Tung-Striebel smoother (Rauch, Tung & Striebel 1965, "Maximum likelihood estimates of
linear dynamic systems"), which gives the smoothing marginals p(x_t | y_{1:T}) and the
lag-one smoothed cross-covariances Cov(x_{t-1}, x_t | y_{1:T}). The whole smoothing
posterior of a path is the backward Markov chain

    p(x_{1:T} | y_{1:T}) = p(x_T | y_{1:T}) prod_{t<T} p(x_t | x_{t+1}, y_{1:t}),

whose density :func:`log_smoothing_density` evaluates.

The exact answers are float64 numpy computations. The ppl programs :func:`lgssm_1d`,
:func:`lgssm_1d_unknown_rho` and :func:`lgssm_2d` follow the zoo's state-space convention:
the ``init`` carry is the fixed x_0, and with T observations there are T latent states
x_1..x_T (site ``"x"``, stacked over time) and T observations (site ``"y"``).

:func:`lgssm_1d_x0` and :func:`lgssm_2d_x0` are the same models with the initial law: x_0
is a latent site ``"x0"`` drawn from N(m0, P0) before the ``markov`` call and passed as its
``init`` carry (the way most users write a state-space model; the inference engine reads it
as the state at time 0, the initial law M0). Their exact answers,
:func:`lgssm_1d_x0_exact` and :func:`lgssm_2d_x0_exact`, add the smoothed law of x_0 and
E[x_0 x_1^T | y] to the usual ones.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

import ppl
from ppl import dist
from ppl.errors import ArgumentTypeError, InvalidArgumentError, ShapeMismatchError

# ---------------------------------------------------------------------------------------
# Exact answers in general matrix form
# ---------------------------------------------------------------------------------------


def _as_matrix(a, name):
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    if a.ndim != 2:
        raise ShapeMismatchError(
            f"{name} must be a matrix (or a scalar for dimension 1), got {a.shape}"
        )
    return a


def _prepare(ys, A, Q, C, R, m0, P0, mask=None):
    A, Q, C, R = (_as_matrix(v, n) for v, n in ((A, "A"), (Q, "Q"), (C, "C"), (R, "R")))
    d, p = A.shape[0], C.shape[0]
    if A.shape != (d, d) or Q.shape != (d, d) or C.shape != (p, d) or R.shape != (p, p):
        raise ShapeMismatchError(
            f"inconsistent shapes A{A.shape} Q{Q.shape} C{C.shape} R{R.shape} (d={d}, p={p})"
        )
    ys = np.asarray(ys, dtype=np.float64)
    if ys.ndim == 1 and p == 1:
        ys = ys[:, None]
    if ys.ndim != 2 or ys.shape[1] != p:
        raise ShapeMismatchError(f"ys must have shape (T, {p}), got {ys.shape}")
    observed = _observed_entries(ys, mask)
    ys = np.where(observed, ys, 0.0)  # missing entries are never read: no NaN can spread
    m0 = np.zeros(d) if m0 is None else np.broadcast_to(np.asarray(m0, np.float64), (d,)).copy()
    P0 = np.zeros((d, d)) if P0 is None else _as_matrix(P0, "P0")
    return ys, A, Q, C, R, m0, P0, observed


def _observed_entries(ys, mask):
    """The (T, p) boolean array of the observed entries of ``ys`` (T, p): all of them for
    ``mask=None`` (then NaN data raise), else ``mask`` of shape (T,) (a whole step
    observed or missing) or (T, p) (some coordinates of a step missing)."""
    T, p = ys.shape
    if mask is None:
        if np.isnan(ys).any():
            first = tuple(int(i) for i in np.argwhere(np.isnan(ys))[0])
            raise InvalidArgumentError(
                f"ys holds NaN (first at index {first}); pass mask=~np.isnan(ys) "
                "(a step's update is skipped where the mask is False)"
            )
        return np.ones((T, p), bool)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ArgumentTypeError(f"mask must be a boolean array (True = observed), got {mask.dtype}")
    if mask.shape == (T,):
        mask = mask[:, None]
    if mask.shape not in ((T, 1), (T, p)):
        raise ShapeMismatchError(f"mask must have shape ({T},) or ({T}, {p}), got {mask.shape}")
    return np.broadcast_to(mask, (T, p))


def _sym(M):
    return 0.5 * (M + np.swapaxes(M, -1, -2))


def _mvn_logpdf(x, mean, cov):
    """log N(x; mean, cov), batched over the leading axes of ``x - mean``."""
    diff = np.asarray(x, np.float64) - mean
    L = np.linalg.cholesky(cov)
    flat = diff.reshape(-1, diff.shape[-1])
    z = linalg.solve_triangular(L, flat.T, lower=True).T.reshape(diff.shape)
    d = cov.shape[-1]
    return -0.5 * np.sum(z**2, -1) - np.sum(np.log(np.diag(L))) - 0.5 * d * np.log(2 * np.pi)


def kalman_filter(ys, A, Q, C, R, m0=None, P0=None, mask=None):
    """The Kalman filter (Kalman 1960) for ``x_t = A x_{t-1} + N(0, Q)``, ``y_t = C x_t +
    N(0, R)``, ``x_0 ~ N(m0, P0)`` (``m0`` defaults to 0 and ``P0`` to 0, i.e. a fixed x_0).

    Missing observations: ``mask`` (optional, boolean, True = observed) of shape (T,) marks
    whole steps, of shape (T, p) single coordinates. A step with no observed coordinate is
    predict-only (filter = prediction) and adds 0 to the log evidence; a partly observed
    step updates on its observed rows of ``C``, ``R`` and ``y_t``. The data at missing
    entries are never read (they may be NaN). ``mask=None`` means every entry is observed,
    and NaN data then raise a ``ValueError`` (NaN is never silently read as missing).

    ``ys`` has shape (T, p) (or (T,) when p = 1); ``A``, ``Q`` are (d, d), ``C`` is (p, d),
    ``R`` is (p, p); scalars are read as 1x1 matrices. Returns a dict of float64 arrays:

    * ``filter_means`` (T, d), ``filter_covs`` (T, d, d): mean and covariance of
      p(x_t | y_{1:t}), t = 1..T;
    * ``pred_means`` (T, d), ``pred_covs`` (T, d, d): of p(x_t | y_{1:t-1});
    * ``log_evidence``: log p(y_{1:T}) = sum_t log N(y_t; C pred_mean_t, C pred_cov_t C^T + R)
      (over the observed entries);
    * ``m0``, ``P0``: the prior of x_0, as used;
    * ``mask`` (T, p): the observed entries, as used.
    """
    ys, A, Q, C, R, m0, P0, observed = _prepare(ys, A, Q, C, R, m0, P0, mask)
    T, d = ys.shape[0], A.shape[0]
    fm, fP = np.zeros((T, d)), np.zeros((T, d, d))
    pm, pP = np.zeros((T, d)), np.zeros((T, d, d))
    m, P = m0, P0
    log_evidence = 0.0
    for t in range(T):
        m_pred = A @ m
        P_pred = _sym(A @ P @ A.T + Q)
        m, P = m_pred, P_pred  # predict only where the whole step is missing
        rows = np.flatnonzero(observed[t])
        if rows.size:
            C_o, R_o, y_o = C[rows], R[np.ix_(rows, rows)], ys[t, rows]
            S = _sym(C_o @ P_pred @ C_o.T + R_o)
            y_hat = C_o @ m_pred
            log_evidence += float(_mvn_logpdf(y_o, y_hat, S))
            K = np.linalg.solve(S, C_o @ P_pred).T  # P_pred C^T S^-1 (S symmetric)
            m = m_pred + K @ (y_o - y_hat)
            I_KC = np.eye(d) - K @ C_o
            P = _sym(I_KC @ P_pred @ I_KC.T + K @ R_o @ K.T)  # Joseph form
        pm[t], pP[t], fm[t], fP[t] = m_pred, P_pred, m, P
    return {
        "filter_means": fm,
        "filter_covs": fP,
        "pred_means": pm,
        "pred_covs": pP,
        "log_evidence": log_evidence,
        "m0": m0,
        "P0": P0,
        "mask": observed,
    }


def _smoother_gains(filt, A):
    """G_t = P_t A^T (P_pred_{t+1})^-1 for t = 0..T-1 (t = 0 is x_0 with the prior m0, P0)."""
    P_prev = np.concatenate([filt["P0"][None], filt["filter_covs"][:-1]], axis=0)
    # G_t^T = P_pred_{t+1}^-1 A P_t (both symmetric)
    return np.swapaxes(np.linalg.solve(filt["pred_covs"], A @ P_prev), -1, -2)


def rts_smoother(ys, A, Q, C, R, m0=None, P0=None, mask=None):
    """The Rauch-Tung-Striebel smoother (Rauch, Tung & Striebel 1965) for the model of
    :func:`kalman_filter` (same arguments, missing observations ``mask`` included: the
    smoother is unchanged, the filter it runs on skips their updates; ``Q`` must be
    positive definite).

    Returns the dict of :func:`kalman_filter` plus:

    * ``smoothed_means`` (T, d), ``smoothed_covs`` (T, d, d): of p(x_t | y_{1:T});
    * ``cross_covs`` (T, d, d): ``cross_covs[t-1] = Cov(x_{t-1}, x_t | y_{1:T})`` (rows
      x_{t-1}, columns x_t) for t = 1..T; the first is Cov(x_0, x_1 | y), which is 0 when
      P0 = 0 (x_0 fixed);
    * ``e_xprev_x`` (T, d, d): ``E[x_{t-1} x_t^T | y_{1:T}]`` for t = 1..T (with x_0);
    * ``smoothed_mean0`` (d,), ``smoothed_cov0`` (d, d): p(x_0 | y_{1:T});
    * ``gains`` (T, d, d): the smoother gains G_{t-1} = P_{t-1} A^T P_pred_t^-1, t = 1..T.
    """
    ys, A, Q, C, R, m0, P0, observed = _prepare(ys, A, Q, C, R, m0, P0, mask)
    out = kalman_filter(ys, A, Q, C, R, m0, P0, mask=observed)
    fm, fP, pm, pP = out["filter_means"], out["filter_covs"], out["pred_means"], out["pred_covs"]
    T = fm.shape[0]
    G = _smoother_gains(out, A)
    prev_means = np.concatenate([m0[None], fm[:-1]], axis=0)
    prev_covs = np.concatenate([P0[None], fP[:-1]], axis=0)
    sm, sP = fm.copy(), fP.copy()
    cross = np.zeros_like(fP)
    m_next, P_next = fm[-1], fP[-1]
    s_means0, s_covs0 = None, None
    for t in range(T - 1, -1, -1):  # 0-based: gain G[t] links x_t (x_0 for t=0) to x_{t+1}
        cross[t] = G[t] @ P_next
        m_prev = prev_means[t] + G[t] @ (m_next - pm[t])
        P_prev = _sym(prev_covs[t] + G[t] @ (P_next - pP[t]) @ G[t].T)
        if t > 0:
            sm[t - 1], sP[t - 1] = m_prev, P_prev
        else:
            s_means0, s_covs0 = m_prev, P_prev
        m_next, P_next = m_prev, P_prev
    all_means = np.concatenate([s_means0[None], sm], axis=0)
    e_xprev_x = cross + all_means[:-1, :, None] * all_means[1:, None, :]
    out.update(
        smoothed_means=sm,
        smoothed_covs=sP,
        cross_covs=cross,
        e_xprev_x=e_xprev_x,
        smoothed_mean0=s_means0,
        smoothed_cov0=s_covs0,
        gains=G,
    )
    return out


def log_smoothing_density(path, ys, A, Q, C, R, m0=None, P0=None, mask=None):
    """``log p(x_{1:T} = path | y_{1:T})``: the exact joint smoothing density of a whole path.

    Uses the backward factorisation ``p(x_T | y_{1:T}) prod_{t<T} p(x_t | x_{t+1}, y_{1:t})``
    with ``p(x_t | x_{t+1}, y_{1:t}) = N(m_t + G_t (x_{t+1} - A m_t), P_t - G_t P_pred_{t+1}
    G_t^T)`` (m_t, P_t filtered). ``path`` has shape (..., T, d); the result has the
    leading shape ``...``. ``mask`` marks missing observations as in :func:`kalman_filter`.
    """
    ys, A, Q, C, R, m0, P0, observed = _prepare(ys, A, Q, C, R, m0, P0, mask)
    d = A.shape[0]
    path = np.asarray(path, dtype=np.float64)
    filt = kalman_filter(ys, A, Q, C, R, m0, P0, mask=observed)
    fm, fP, pP = filt["filter_means"], filt["filter_covs"], filt["pred_covs"]
    T = fm.shape[0]
    if path.shape[-2:] != (T, d):
        raise ShapeMismatchError(f"path must have shape (..., {T}, {d}), got {path.shape}")
    G = _smoother_gains(filt, A)  # G[t] links x_t to x_{t+1}; G[1:] are the filtered ones
    total = _mvn_logpdf(path[..., T - 1, :], fm[T - 1], fP[T - 1])
    for t in range(T - 1):  # 0-based filtered index t, conditioning on x at index t + 1
        gain = G[t + 1]
        mean = fm[t] + (path[..., t + 1, :] - A @ fm[t]) @ gain.T
        cov = _sym(fP[t] - gain @ pP[t + 1] @ gain.T)
        total = total + _mvn_logpdf(path[..., t, :], mean, cov)
    return total


# ---------------------------------------------------------------------------------------
# 1-D model
# ---------------------------------------------------------------------------------------


def _observe_steps(ys, mask):
    """The ``xs`` of a 1-D LGSSM's ``markov`` and the observe of one step: the data
    alone, or ``(data, mask)`` with the step's mask handed to ``ppl.observe``."""
    ys = jnp.asarray(ys)
    if mask is None:
        return ys, lambda x, y, sigma_y: ppl.observe("y", dist.Normal(x, sigma_y), y)

    def observe(x, y_and_mask, sigma_y):
        y, m = y_and_mask
        ppl.observe("y", dist.Normal(x, sigma_y), y, mask=m)

    return (ys, jnp.asarray(mask)), observe


@ppl.model
def lgssm_1d(ys, rho=0.9, sigma_x=1.0, sigma_y=0.5, mask=None):
    """1-D linear-Gaussian state-space model: ``x_0 = 0``, ``x_t ~ Normal(rho x_{t-1},
    sigma_x)`` (site ``"x"``), observed ``y_t ~ Normal(x_t, sigma_y)`` (site ``"y"``),
    t = 1..T. Returns the stacked states x_{1:T}. Exact answer: :func:`lgssm_1d_exact`.

    ``mask`` (optional, boolean, shape (T,)): ``y_t`` is missing where it is False (it
    contributes nothing; the data there may be NaN).
    """
    xs, observe = _observe_steps(ys, mask)

    def step(x, inputs):
        x = ppl.sample("x", dist.Normal(rho * x, sigma_x))
        observe(x, inputs, sigma_y)
        return x

    return ppl.markov(step, init=0.0, xs=xs)


@ppl.model
def lgssm_1d_unknown_rho(ys, sigma_x=1.0, sigma_y=0.5):
    """:func:`lgssm_1d` with a global latent ``"rho" ~ Uniform(-1, 1)`` drawn before the
    time loop (no closed-form posterior for ``rho``; given ``rho`` the states are as in
    :func:`lgssm_1d_exact`, and ``p(y | rho)`` is its ``log_evidence``).
    """
    rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(rho * x, sigma_x))
        ppl.observe("y", dist.Normal(x, sigma_y), y)
        return x

    return ppl.markov(step, init=0.0, xs=jnp.asarray(ys))


@functools.partial(jax.jit, static_argnames=("T",))
def simulate_lgssm_1d(key, T, rho=0.9, sigma_x=1.0, sigma_y=0.5):
    """Draw ``(xs, ys)``, each of shape (T,), from the prior of :func:`lgssm_1d`.
    Jitted; ``T`` static."""
    k_x, k_y = jax.random.split(key)
    noise = sigma_x * jax.random.normal(k_x, (T,))

    def step(x, e):
        x = rho * x + e
        return x, x

    _, xs = jax.lax.scan(step, jnp.zeros(()), noise)
    ys = xs + sigma_y * jax.random.normal(k_y, (T,))
    return xs, ys


def _lgssm_1d_matrices(rho, sigma_x, sigma_y):
    return (
        np.array([[rho]], np.float64),
        np.array([[sigma_x**2]], np.float64),
        np.eye(1),
        np.array([[sigma_y**2]], np.float64),
    )


def lgssm_1d_log_smoothing_density(path, ys, rho=0.9, sigma_x=1.0, sigma_y=0.5, mask=None):
    """``log p(x_{1:T} = path | y_{1:T})`` for :func:`lgssm_1d` (exact; ``path`` has shape
    (..., T), result shape ``...``; ``mask`` the observed steps). See
    :func:`log_smoothing_density`."""
    A, Q, C, R = _lgssm_1d_matrices(rho, sigma_x, sigma_y)
    path = np.asarray(path, np.float64)[..., None]
    return log_smoothing_density(
        path, np.asarray(ys, np.float64)[:, None], A, Q, C, R, mask=mask
    )


def lgssm_1d_exact(ys, rho=0.9, sigma_x=1.0, sigma_y=0.5, mask=None):
    """Exact posterior of :func:`lgssm_1d` by Kalman filtering and RTS smoothing.

    Returns a dict of float64 values: ``log_evidence`` (log p(y_{1:T})), ``filter_means``,
    ``filter_vars`` (of p(x_t | y_{1:t})), ``smoothed_means``, ``smoothed_vars`` (of
    p(x_t | y_{1:T})), ``e_xprev_x`` (E[x_{t-1} x_t | y_{1:T}] for t = 1..T, with x_0 = 0),
    all arrays of shape (T,), and ``log_smoothing_density``: a function ``path -> log
    p(x_{1:T} = path | y_{1:T})`` (see :func:`lgssm_1d_log_smoothing_density`).
    ``mask`` (T,) marks the observed steps (see :func:`kalman_filter`).
    """
    ys = np.asarray(ys, np.float64)
    A, Q, C, R = _lgssm_1d_matrices(rho, sigma_x, sigma_y)
    out = rts_smoother(ys[:, None], A, Q, C, R, mask=mask)
    return {
        "log_evidence": out["log_evidence"],
        "filter_means": out["filter_means"][:, 0],
        "filter_vars": out["filter_covs"][:, 0, 0],
        "smoothed_means": out["smoothed_means"][:, 0],
        "smoothed_vars": out["smoothed_covs"][:, 0, 0],
        "e_xprev_x": out["e_xprev_x"][:, 0, 0],
        "log_smoothing_density": lambda path: lgssm_1d_log_smoothing_density(
            path, ys, rho, sigma_x, sigma_y, mask
        ),
    }


@ppl.model
def lgssm_1d_x0(ys, rho=0.9, sigma_x=1.0, sigma_y=0.5, m0=0.0, p0=1.0, mask=None):
    """:func:`lgssm_1d` with the initial law: ``x_0 ~ Normal(m0, sqrt(p0))`` (site
    ``"x0"``, ``p0 > 0`` a variance) drawn before the time loop and passed as the ``init``
    carry, then ``x_t ~ Normal(rho x_{t-1}, sigma_x)`` (site ``"x"``), observed ``y_t ~
    Normal(x_t, sigma_y)`` (site ``"y"``), t = 1..T. Returns the stacked states x_{1:T}.
    Exact answer: :func:`lgssm_1d_x0_exact`. ``mask`` as in :func:`lgssm_1d`.
    """
    x0 = ppl.sample("x0", dist.Normal(m0, jnp.sqrt(p0)))
    xs, observe = _observe_steps(ys, mask)

    def step(x, inputs):
        x = ppl.sample("x", dist.Normal(rho * x, sigma_x))
        observe(x, inputs, sigma_y)
        return x

    return ppl.markov(step, init=x0, xs=xs)


def lgssm_1d_x0_exact(ys, rho=0.9, sigma_x=1.0, sigma_y=0.5, m0=0.0, p0=1.0, mask=None):
    """Exact posterior of :func:`lgssm_1d_x0` (x_0 ~ N(m0, p0), p0 a variance >= 0; p0 = 0
    is :func:`lgssm_1d_exact` with x_0 = m0) by Kalman filtering and RTS smoothing over the
    time axis 0..T, where x_0 is a latent state without an observation.

    Returns a dict of float64 values, the keys of :func:`lgssm_1d_exact` and three more:

    * ``log_evidence``: log p(y_{1:T}) (x_0 integrated out);
    * ``filter_means``, ``filter_vars`` (T,): of p(x_t | y_{1:t}), t = 1..T;
    * ``smoothed_means``, ``smoothed_vars`` (T,): of p(x_t | y_{1:T}), t = 1..T;
    * ``e_xprev_x`` (T,): E[x_{t-1} x_t | y_{1:T}] for t = 1..T; the first entry is
      E[x_0 x_1 | y], so ``e_xprev_x.sum()`` is the smoothed sum over the program's T steps
      of ``x_prev * x`` with ``x_prev`` of the first step the time-0 state;
    * ``smoothed_mean0``, ``smoothed_var0``: mean and variance of p(x_0 | y_{1:T});
    * ``e_x0_x1``: E[x_0 x_1 | y_{1:T}] (= ``e_xprev_x[0]``);
    * ``log_smoothing_density``: ``path -> log p(x_{1:T} = path | y_{1:T})`` (x_0
      integrated out; ``path`` of shape (..., T)).

    ``mask`` (T,) marks the observed steps (see :func:`kalman_filter`).
    """
    p0 = float(p0)
    if not p0 >= 0.0:
        raise InvalidArgumentError(f"p0 must be a variance >= 0, got {p0!r}")
    ys = np.asarray(ys, np.float64)
    A, Q, C, R = _lgssm_1d_matrices(rho, sigma_x, sigma_y)
    m0v, P0 = np.array([float(m0)]), np.array([[p0]])
    out = rts_smoother(ys[:, None], A, Q, C, R, m0=m0v, P0=P0, mask=mask)
    e_xprev_x = out["e_xprev_x"][:, 0, 0]
    return {
        "log_evidence": out["log_evidence"],
        "filter_means": out["filter_means"][:, 0],
        "filter_vars": out["filter_covs"][:, 0, 0],
        "smoothed_means": out["smoothed_means"][:, 0],
        "smoothed_vars": out["smoothed_covs"][:, 0, 0],
        "e_xprev_x": e_xprev_x,
        "smoothed_mean0": float(out["smoothed_mean0"][0]),
        "smoothed_var0": float(out["smoothed_cov0"][0, 0]),
        "e_x0_x1": float(e_xprev_x[0]),
        "log_smoothing_density": lambda path: log_smoothing_density(
            np.asarray(path, np.float64)[..., None], ys[:, None], A, Q, C, R, m0=m0v, P0=P0,
            mask=mask,
        ),
    }


# ---------------------------------------------------------------------------------------
# 2-D model
# ---------------------------------------------------------------------------------------


def _as_float(a):
    """``a`` as a JAX array of the default float dtype. The dtype is explicit because JAX
    keeps the device copy of a read-only numpy constant (the matrices below) made under
    one ``jax_enable_x64`` setting and hands it back under the other."""
    return jnp.asarray(a, dtype=jnp.result_type(float))


def _frozen(a):
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


_THETA = np.pi / 12  # a slow rotation: 15 degrees per step
#: Default transition of :func:`lgssm_2d`: a damped slow rotation, 0.95 R(pi/12).
LGSSM_2D_A = _frozen(
    0.95 * np.array([[np.cos(_THETA), -np.sin(_THETA)], [np.sin(_THETA), np.cos(_THETA)]])
)
#: Default state noise covariance of :func:`lgssm_2d` (correlated).
LGSSM_2D_Q = _frozen([[0.30, 0.05], [0.05, 0.20]])
#: Default observation matrix of :func:`lgssm_2d` (mixes both coordinates).
LGSSM_2D_C = _frozen([[1.0, 0.0], [0.5, 1.0]])
#: Default observation noise covariance of :func:`lgssm_2d`.
LGSSM_2D_R = _frozen([[0.50, 0.10], [0.10, 0.40]])
#: Default fixed initial state x_0 of :func:`lgssm_2d`.
LGSSM_2D_X0 = _frozen([1.0, 0.0])
#: Default prior covariance of the initial state x_0 of :func:`lgssm_2d_x0` (whose prior
#: mean defaults to :data:`LGSSM_2D_X0`).
LGSSM_2D_P0 = _frozen([[0.50, 0.15], [0.15, 0.30]])


@ppl.model
def lgssm_2d(ys, A=LGSSM_2D_A, Q=LGSSM_2D_Q, C=LGSSM_2D_C, R=LGSSM_2D_R, x0=LGSSM_2D_X0):
    """Linear-Gaussian state-space model in matrix form: ``x_0 = x0`` (fixed), ``x_t ~
    MultivariateNormal(A x_{t-1}, Q)`` (site ``"x"``, shape (T, d)), observed ``y_t ~
    MultivariateNormal(C x_t, R)`` (site ``"y"``, data of shape (T, p)). The defaults are a
    damped slow rotation in 2-D with correlated noises. Returns the states (T, d). Exact
    answer: :func:`lgssm_2d_exact`.
    """
    A, Q, C, R = (_as_float(v) for v in (A, Q, C, R))

    def step(x, y):
        x = ppl.sample("x", dist.MultivariateNormal(A @ x, covariance_matrix=Q))
        ppl.observe("y", dist.MultivariateNormal(C @ x, covariance_matrix=R), y)
        return x

    return ppl.markov(step, init=_as_float(x0), xs=jnp.asarray(ys))


@functools.partial(jax.jit, static_argnames=("T",))
def simulate_lgssm_2d(
    key,
    T,
    A=LGSSM_2D_A,
    Q=LGSSM_2D_Q,
    C=LGSSM_2D_C,
    R=LGSSM_2D_R,
    x0=LGSSM_2D_X0,
):
    """Draw ``(xs, ys)`` of shapes (T, d) and (T, p) from the prior of :func:`lgssm_2d`.
    Jitted; ``T`` static."""
    dtype = jnp.result_type(float)  # one float type for every array, whatever x64 says
    A, Q, C, R, x0 = (jnp.asarray(v, dtype=dtype) for v in (A, Q, C, R, x0))
    k_x, k_y = jax.random.split(key)
    w = jax.random.normal(k_x, (T, A.shape[0]), dtype) @ jnp.linalg.cholesky(Q).T
    v = jax.random.normal(k_y, (T, C.shape[0]), dtype) @ jnp.linalg.cholesky(R).T

    def step(x, e):
        x = A @ x + e
        return x, x

    _, xs = jax.lax.scan(step, x0, w)
    return xs, xs @ C.T + v


def lgssm_2d_log_smoothing_density(
    path,
    ys,
    A=LGSSM_2D_A,
    Q=LGSSM_2D_Q,
    C=LGSSM_2D_C,
    R=LGSSM_2D_R,
    x0=LGSSM_2D_X0,
):
    """``log p(x_{1:T} = path | y_{1:T})`` for :func:`lgssm_2d` (exact; ``path`` has shape
    (..., T, d), result shape ``...``). See :func:`log_smoothing_density`."""
    return log_smoothing_density(path, ys, A, Q, C, R, m0=x0)


def lgssm_2d_exact(
    ys,
    A=LGSSM_2D_A,
    Q=LGSSM_2D_Q,
    C=LGSSM_2D_C,
    R=LGSSM_2D_R,
    x0=LGSSM_2D_X0,
):
    """Exact posterior of :func:`lgssm_2d` by Kalman filtering and RTS smoothing.

    Returns a dict of float64 values: ``log_evidence``, ``filter_means`` (T, d),
    ``filter_covs`` (T, d, d), ``smoothed_means`` (T, d), ``smoothed_covs`` (T, d, d),
    ``cross_covs`` (T, d, d; Cov(x_{t-1}, x_t | y), zero at t = 1), ``e_xprev_x`` (T, d, d;
    E[x_{t-1} x_t^T | y_{1:T}] with x_0 = x0) and ``log_smoothing_density`` (a function
    ``path -> log p(x_{1:T} = path | y_{1:T})``).
    """
    out = rts_smoother(ys, A, Q, C, R, m0=x0)
    keys = (
        "log_evidence",
        "filter_means",
        "filter_covs",
        "smoothed_means",
        "smoothed_covs",
        "cross_covs",
        "e_xprev_x",
    )
    res = {k: out[k] for k in keys}
    res["log_smoothing_density"] = lambda path: lgssm_2d_log_smoothing_density(
        path, ys, A, Q, C, R, x0
    )
    return res


@ppl.model
def lgssm_2d_x0(
    ys, A=LGSSM_2D_A, Q=LGSSM_2D_Q, C=LGSSM_2D_C, R=LGSSM_2D_R, m0=LGSSM_2D_X0, P0=LGSSM_2D_P0
):
    """:func:`lgssm_2d` with the initial law: ``x_0 ~ MultivariateNormal(m0, P0)`` (site
    ``"x0"``, shape (d,); ``P0`` positive definite) drawn before the time loop and passed
    as the ``init`` carry, then ``x_t ~ MultivariateNormal(A x_{t-1}, Q)`` (site ``"x"``,
    shape (T, d)), observed ``y_t ~ MultivariateNormal(C x_t, R)`` (site ``"y"``). Returns
    the states (T, d). Exact answer: :func:`lgssm_2d_x0_exact`.
    """
    A, Q, C, R, m0, P0 = (_as_float(v) for v in (A, Q, C, R, m0, P0))
    x0 = ppl.sample("x0", dist.MultivariateNormal(m0, covariance_matrix=P0))

    def step(x, y):
        x = ppl.sample("x", dist.MultivariateNormal(A @ x, covariance_matrix=Q))
        ppl.observe("y", dist.MultivariateNormal(C @ x, covariance_matrix=R), y)
        return x

    return ppl.markov(step, init=x0, xs=jnp.asarray(ys))


def lgssm_2d_x0_exact(
    ys,
    A=LGSSM_2D_A,
    Q=LGSSM_2D_Q,
    C=LGSSM_2D_C,
    R=LGSSM_2D_R,
    m0=LGSSM_2D_X0,
    P0=LGSSM_2D_P0,
):
    """Exact posterior of :func:`lgssm_2d_x0` (x_0 ~ N(m0, P0); ``P0`` = 0 is
    :func:`lgssm_2d_exact` with x_0 = m0) by Kalman filtering and RTS smoothing over the
    time axis 0..T, where x_0 is a latent state without an observation.

    Returns a dict of float64 values, the keys of :func:`lgssm_2d_exact` and three more:
    ``log_evidence``, ``filter_means`` (T, d), ``filter_covs`` (T, d, d),
    ``smoothed_means`` (T, d), ``smoothed_covs`` (T, d, d), ``cross_covs`` (T, d, d;
    Cov(x_{t-1}, x_t | y), t = 1..T, the first Cov(x_0, x_1 | y)), ``e_xprev_x`` (T, d, d;
    E[x_{t-1} x_t^T | y], t = 1..T, the first E[x_0 x_1^T | y]), ``smoothed_mean0`` (d,),
    ``smoothed_cov0`` (d, d) (of p(x_0 | y)), ``e_x0_x1`` (d, d; = ``e_xprev_x[0]``) and
    ``log_smoothing_density`` (``path -> log p(x_{1:T} = path | y)``, x_0 integrated out).
    """
    out = rts_smoother(ys, A, Q, C, R, m0=m0, P0=P0)
    m0, P0 = out["m0"], out["P0"]
    if not np.all(np.linalg.eigvalsh(_sym(P0)) >= -1e-12 * max(1.0, np.abs(P0).max())):
        raise InvalidArgumentError(
            f"P0 must be a covariance matrix (positive semi-definite), got {P0}"
        )
    keys = (
        "log_evidence",
        "filter_means",
        "filter_covs",
        "smoothed_means",
        "smoothed_covs",
        "cross_covs",
        "e_xprev_x",
        "smoothed_mean0",
        "smoothed_cov0",
    )
    res = {k: out[k] for k in keys}
    res["e_x0_x1"] = out["e_xprev_x"][0]
    res["log_smoothing_density"] = lambda path: log_smoothing_density(
        path, ys, A, Q, C, R, m0=m0, P0=P0
    )
    return res
