"""Log weights: the one place where they are normalised, averaged and counted.

Every weighted representation and algorithm (``Population``, importance sampling, the
particle engine, SMC^2, tempered SMC, ``Posterior``) keeps its weights on the log scale
and reads them through these functions, so a degenerate population behaves the same way
everywhere:

* :func:`normalise` — ``lw - logsumexp(lw)`` and the log total; a row whose total is not
  finite (all ``-inf``, or a NaN / ``+inf`` entry) is handed back unchanged, so the problem
  reaches the evidence estimate, which the algorithms check, instead of becoming NaN here;
* :func:`log_mean_exp` — ``logsumexp(lw) - log N``, the evidence estimate of one population
  (Ścibior et al., POPL 2018, section 6);
* :func:`ess` — Kish's effective sample size ``(sum w)^2 / sum w^2`` (Kong, Liu & Wong 1994),
  0 when every weight is zero and NaN when a weight is NaN or ``+inf``;
* :func:`ess_normalised` — the same for weights already normalised by :func:`normalise`,
  without its two ``logsumexp`` passes;
* :func:`weighted_mean` — ``sum_n W_n x_n`` over the leading axis.

This module sits below ``ppl.semantics`` and ``ppl.inference`` (it imports neither).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import logsumexp

__all__ = ["ess", "ess_normalised", "log_mean_exp", "normalise", "weighted_mean"]


def normalise(log_weights, axis: int = -1):
    """``(log_weights - logsumexp(log_weights), logsumexp(log_weights))`` along ``axis``.

    A row whose total is not finite is returned unchanged (see the module docstring).
    """
    lw = jnp.asarray(log_weights)
    total = logsumexp(lw, axis=axis, keepdims=True)
    finite = jnp.isfinite(total)
    out = jnp.where(finite, lw - jnp.where(finite, total, 0.0), lw)
    return out, jnp.squeeze(total, axis=axis)


def log_mean_exp(log_weights, axis: int = -1):
    """``logsumexp(log_weights) - log N`` along ``axis``: the log of the mean weight."""
    lw = jnp.asarray(log_weights)
    return logsumexp(lw, axis=axis) - math.log(lw.shape[axis])


def ess(log_weights, axis: int = -1):
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` along ``axis``, in ``[1, N]``.

    Computed on the normalised weights as ``exp(-logsumexp(2 log W))``; 0 when every log
    weight is ``-inf`` and NaN when one is NaN or ``+inf``.
    """
    log_w, total = normalise(log_weights, axis)
    value = jnp.exp(-logsumexp(2.0 * log_w, axis=axis))
    return jnp.where(jnp.isfinite(total), value, jnp.where(jnp.isneginf(total), 0.0, jnp.nan))


def ess_normalised(weights, total):
    """Kish's ESS ``1 / sum_n W_n^2`` of weights ``W = exp(normalised log weights)`` whose
    log total before normalising was ``total`` (the second output of :func:`normalise`).
    Same values as :func:`ess`; ``W <= 1`` cannot overflow."""
    value = 1.0 / jnp.sum(weights * weights, axis=-1)
    fallback = jnp.where(jnp.isneginf(total), 0.0, jnp.nan).astype(value.dtype)
    return jnp.where(jnp.isfinite(total), value, fallback)


def weighted_mean(weights, x):
    """``sum_n weights[n] x[n]`` over the leading axis (``weights`` normalised); integer
    or boolean values are averaged as floats."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(weights.dtype)
    return jnp.tensordot(weights.astype(x.dtype), x, axes=(0, 0))
