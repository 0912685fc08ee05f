"""Resampling: the selection step of sequential Monte Carlo.

Every scheme here maps a key and a vector of ``N`` (unnormalised) log weights to ``M``
ancestor indices (``M = num_samples``, default ``N``), int32, such that particle ``i`` is
chosen ``M * w_i`` times in expectation, where ``w = softmax(log_weights)``. The schemes
differ only in the variance of the offspring counts; see

* R. Douc, O. Cappé and E. Moulines (2005), "Comparison of resampling schemes for particle
  filtering", Proc. 4th Int. Symp. on Image and Signal Processing and Analysis, pp. 64-69;
* N. Chopin and O. Papaspiliopoulos (2020), *An Introduction to Sequential Monte Carlo*,
  Springer, chapter 9 ("Importance resampling").

All four are built the same way: exponentiate the log weights less their maximum (never
``exp`` of raw log weights, which overflows), take the cumulative sum divided by its total,
and invert it at ``M`` points in ``[0, 1)`` with :func:`jax.numpy.searchsorted`; they differ
only in how those points are drawn. Everything is pure JAX, has no Python loop over
particles, runs in ``O(N + M log N)`` and can be wrapped in :func:`jax.jit` or
:func:`jax.vmap`.

Degenerate weights
------------------
If every log weight is ``-inf`` (every particle impossible), or a log weight is NaN or
``+inf``, the weights cannot be normalised. With concrete (non-traced) arrays every public
function here that draws indices raises :class:`ppl.errors.NonFiniteWeightError`. Under
:func:`jax.jit` (or when the weights are otherwise traced) no Python error is possible:
the indices are then drawn as if the weights were uniform (so they stay in range), and the
new log weights returned by :func:`resample` / :func:`adaptive_resample` equal
``logsumexp(log_weights) - log M``, i.e. ``-inf`` (or NaN / ``+inf``) as well. The problem
is therefore carried into the running log-evidence estimate, which the caller must check
(``jnp.isfinite``) after the traced computation returns. :func:`ess` is 0 for all ``-inf``
weights (so :func:`adaptive_resample` resamples) and NaN for NaN weights (so
:func:`adaptive_resample` does not resample and hands the NaN weights back unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl import weights
from ppl.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    NonFiniteWeightError,
    ShapeMismatchError,
    UnknownOptionError,
)

__all__ = [
    "SCHEMES",
    "adaptive_resample",
    "categorical",
    "ess",
    "get_scheme",
    "log_normalise",
    "multinomial",
    "residual",
    "resample",
    "stratified",
    "systematic",
]


# --------------------------------------------------------------------------- helpers


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_log_weights(log_weights, where: str) -> jax.Array:
    """Check shape (static) and, for concrete arrays, finiteness; return a float array."""
    lw = jnp.asarray(log_weights)
    dtype = lw.dtype if jnp.issubdtype(lw.dtype, jnp.floating) else jnp.result_type(float)
    lw = jnp.asarray(lw, dtype=dtype)  # also drops weak typing: one compile per shape
    if lw.ndim != 1 or lw.shape[0] == 0:
        raise ShapeMismatchError(
            f"{where}: log_weights must be a non-empty 1-D array of shape (N,), got shape "
            f"{lw.shape}; use jax.vmap for a batch of weight vectors"
        )
    if _is_concrete(lw):
        arr = np.asarray(lw)
        if np.any(np.isnan(arr)):
            bad = np.flatnonzero(np.isnan(arr))
            raise NonFiniteWeightError(
                f"{where}: log_weights contains NaN at particle(s) {bad[:10].tolist()}"
            )
        if np.any(np.isposinf(arr)):
            bad = np.flatnonzero(np.isposinf(arr))
            raise NonFiniteWeightError(
                f"{where}: log_weights contains +inf at particle(s) {bad[:10].tolist()}"
            )
        if np.all(np.isneginf(arr)):
            raise NonFiniteWeightError(
                f"{where}: every log weight is -inf (all {arr.shape[0]} particles are "
                "impossible), so the weights cannot be normalised; the log-evidence "
                "estimate is -inf"
            )
    return lw


def _num_samples(num_samples, n: int, where: str) -> int:
    if num_samples is None:
        return n
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise ArgumentTypeError(
            f"{where}: num_samples must be a positive int, got {num_samples!r}"
        )
    if num_samples < 1:
        raise InvalidArgumentError(
            f"{where}: num_samples must be a positive int, got {num_samples}"
        )
    return int(num_samples)


def _cdf(w: jax.Array) -> jax.Array:
    """Cumulative sum of non-negative ``w``, divided by its total, last entry exactly 1.

    If ``w`` sums to zero or to a non-finite total the uniform CDF is returned (callers
    that can hit this mask the result). Dividing by the last entry makes it exactly 1
    (``x / x == 1`` in IEEE arithmetic). On CPU and GPU ``jnp.cumsum`` is a parallel prefix
    sum, which is not monotone to the last ulp; :func:`_invert` handles the one case where
    that matters (a point landing on a zero-weight particle) instead of a ``cummax`` pass,
    which cost about 40% of the resampling step on CPU.
    """
    n = w.shape[-1]
    c = jnp.cumsum(w)
    total = c[-1]
    ok = (total > 0) & jnp.isfinite(total)
    c = jnp.where(ok, c / jnp.where(ok, total, 1.0), jnp.arange(1, n + 1, dtype=c.dtype) / n)
    return jnp.minimum(c, 1.0).at[-1].set(1.0)


def _invert(cdf: jax.Array, u: jax.Array, w: jax.Array) -> jax.Array:
    """Indices ``i`` with ``cdf[i-1] <= u < cdf[i]`` for ``u`` in ``[0, 1)``; ``w`` are the
    weights ``cdf`` was built from.

    ``side="right"`` means zero-weight particles (flat stretches of the CDF) are not
    chosen, even for ``u == 0``; ``u`` is clipped below 1 in case ``(i + U) / M`` rounds up
    to 1, and the result is clipped to ``N - 1``. A prefix sum rounded differently at
    neighbouring entries can still rise by an ulp at a zero-weight particle, and a point
    in that ulp land on it (an event of probability about 1e-7 per such particle): it then
    takes the heaviest particle, so an impossible particle (log weight ``-inf``) is never
    resampled while another is possible.
    """
    n = cdf.shape[-1]
    u = jnp.clip(u.astype(cdf.dtype), 0.0, jnp.nextafter(jnp.asarray(1.0, cdf.dtype), 0.0))
    idx = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, n - 1).astype(jnp.int32)
    heaviest = jnp.argmax(w).astype(jnp.int32)
    landed_on_zero = (w[idx] <= 0) & (w[heaviest] > 0)
    return jnp.where(landed_on_zero, heaviest, idx)


def _relative_weights(lw: jax.Array) -> jax.Array:
    """``exp(lw - max lw)``: the weights up to a constant, the largest 1 (no overflow; a
    non-finite maximum is left to :func:`_cdf`'s uniform fallback). The CDF divides by the
    total, so this saves the ``logsumexp`` a full normalisation would cost."""
    top = jnp.max(lw)
    return jnp.exp(lw - jnp.where(jnp.isfinite(top), top, 0.0))


def _validated(log_weights, num_samples, where: str) -> tuple[jax.Array, int]:
    lw = _as_log_weights(log_weights, where)
    return lw, _num_samples(num_samples, lw.shape[0], where)


# The cores are jitted (num_samples static) so that eager calls compile once per shape;
# under an outer jit they are simply inlined. Validation stays in the Python wrappers.


@partial(jax.jit, static_argnums=2)
def _multinomial(key, lw, m):
    w = _relative_weights(lw)
    u = jax.random.uniform(key, (m,), dtype=w.dtype)
    return _invert(_cdf(w), u, w)


@partial(jax.jit, static_argnums=2)
def _stratified(key, lw, m):
    w = _relative_weights(lw)
    u = (jnp.arange(m, dtype=w.dtype) + jax.random.uniform(key, (m,), dtype=w.dtype)) / m
    return _invert(_cdf(w), u, w)


@partial(jax.jit, static_argnums=2)
def _systematic(key, lw, m):
    w = _relative_weights(lw)
    u = (jnp.arange(m, dtype=w.dtype) + jax.random.uniform(key, (), dtype=w.dtype)) / m
    return _invert(_cdf(w), u, w)


@partial(jax.jit, static_argnums=2)
def _residual(key, lw, m):
    n = lw.shape[0]
    w = jnp.exp(log_normalise(lw))
    scaled = m * w
    # M w_i that should be an integer k can come out as k - 1 ulp (uniform weights, N = 7
    # say); a few-ulp tolerance keeps those k deterministic copies. Bias: O(eps) per particle.
    tol = 16 * jnp.finfo(w.dtype).eps * jnp.maximum(scaled, 1.0)
    floors = jnp.floor(scaled + tol)
    counts = floors.astype(jnp.int32)
    n_det = jnp.sum(counts)
    det = jnp.repeat(jnp.arange(n, dtype=jnp.int32), counts, total_repeat_length=m)
    resid = jnp.maximum(scaled - floors, 0.0)
    u = jax.random.uniform(key, (m,), dtype=w.dtype)
    rand = _invert(_cdf(resid), u, resid)
    return jnp.where(jnp.arange(m) < n_det, det, rand).astype(jnp.int32)


# --------------------------------------------------------------------------- schemes


def multinomial(key: jax.Array, log_weights, num_samples: int | None = None) -> jax.Array:
    """Multinomial resampling: ``M`` i.i.d. draws from ``Categorical(w)``.

    The baseline scheme: offspring counts are ``Multinomial(M, w)``, with variance
    ``M w_i (1 - w_i)``, the largest of the four (Douc, Cappé & Moulines 2005;
    Chopin & Papaspiliopoulos 2020, ch. 9). Inverts the CDF at ``M`` i.i.d. uniforms, in
    ``O(N + M log N)``; the output is in random (not sorted) order.

    Returns int32 ancestor indices of shape ``(num_samples,)`` (default ``N``).
    """
    lw, m = _validated(log_weights, num_samples, "multinomial")
    return _multinomial(key, lw, m)


def stratified(key: jax.Array, log_weights, num_samples: int | None = None) -> jax.Array:
    """Stratified resampling: one uniform in each stratum ``[j/M, (j+1)/M)``.

    ``u_j = (j + U_j) / M`` with independent ``U_j ~ U[0, 1)``. Unbiased, with offspring
    count variance never larger than multinomial's (Douc, Cappé & Moulines 2005;
    Chopin & Papaspiliopoulos 2020, ch. 9). The output is sorted.

    Returns int32 ancestor indices of shape ``(num_samples,)`` (default ``N``).
    """
    lw, m = _validated(log_weights, num_samples, "stratified")
    return _stratified(key, lw, m)


def systematic(key: jax.Array, log_weights, num_samples: int | None = None) -> jax.Array:
    """Systematic resampling: one shared uniform, ``u_j = (j + U) / M``.

    Unbiased; particle ``i`` gets either ``floor(M w_i)`` or ``ceil(M w_i)`` offspring, so
    the variance is usually the smallest of the four, though unlike stratified and residual
    it is not guaranteed to beat multinomial for every weight vector (Douc, Cappé &
    Moulines 2005; Chopin & Papaspiliopoulos 2020, ch. 9). It is the default here. The
    output is sorted.

    Returns int32 ancestor indices of shape ``(num_samples,)`` (default ``N``).
    """
    lw, m = _validated(log_weights, num_samples, "systematic")
    return _systematic(key, lw, m)


def residual(key: jax.Array, log_weights, num_samples: int | None = None) -> jax.Array:
    """Residual resampling (residual-multinomial).

    Particle ``i`` first gets ``floor(M w_i)`` deterministic copies; the remaining
    ``R = M - sum_i floor(M w_i)`` slots are filled by **multinomial** draws from the
    residual weights ``r_i ∝ M w_i - floor(M w_i)``. Unbiased, with offspring count
    variance never larger than multinomial's (Douc, Cappé & Moulines 2005;
    Chopin & Papaspiliopoulos 2020, ch. 9).

    To keep the output size fixed (needed under :func:`jax.jit`) the deterministic part is
    ``jnp.repeat(..., total_repeat_length=M)`` and ``M`` residual draws are always made;
    slot ``j`` takes the deterministic copy if ``j < M - R`` and the ``j``-th residual draw
    otherwise. The first ``M - R`` indices are sorted, the rest are in random order.
    ``floor`` is taken with a tolerance of a few ulps, so that weights with ``M w_i`` an
    integer (e.g. equal weights) give exactly ``M w_i`` copies despite rounding.

    Returns int32 ancestor indices of shape ``(num_samples,)`` (default ``N``).
    """
    lw, m = _validated(log_weights, num_samples, "residual")
    return _residual(key, lw, m)


Scheme = Callable[..., jax.Array]

SCHEMES: dict[str, Scheme] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def get_scheme(name: str | Scheme) -> Scheme:
    """The resampling function called ``name`` (a key of :data:`SCHEMES`).

    A callable with the signature ``(key, log_weights, num_samples=None) -> indices`` is
    returned unchanged. Raises :class:`ppl.errors.UnknownOptionError` for any other value.
    """
    if callable(name):
        return name
    if isinstance(name, str) and name in SCHEMES:
        return SCHEMES[name]
    raise UnknownOptionError(
        f"resample={name!r} is not a known resampling scheme; allowed values are "
        f"{', '.join(repr(k) for k in SCHEMES)}"
    )


# --------------------------------------------------------------------------- weights


def log_normalise(log_weights) -> jax.Array:
    """``log_weights - logsumexp(log_weights)`` along the last axis.

    If the total along a row is not finite (every entry ``-inf``, or a NaN / ``+inf``
    entry) that row is returned as uniform, ``-log N``, rather than NaN; check
    ``logsumexp(log_weights)`` to detect that case.
    """
    log_w, total = weights.normalise(log_weights)
    uniform = -math.log(log_w.shape[-1])
    return jnp.where(jnp.isfinite(total)[..., None], log_w, uniform)


#: Kish's effective sample size along the last axis (:func:`ppl.weights.ess`): in ``[1, N]``,
#: 0 when every log weight is ``-inf`` and NaN when one is NaN or ``+inf``.
ess = weights.ess


def categorical(key, log_weights, shape=()):
    """Indices drawn i.i.d. from ``Categorical(softmax(log_weights))`` by inverting the
    CDF at uniforms (``O(N + M log N)``; weights normalised in log space first): the one
    categorical draw of the backward kernels, conditional SMC and PaRIS. A weight of zero
    is never drawn. Returns int32 of ``shape``."""
    lw = log_weights - logsumexp(log_weights)
    cdf = jnp.cumsum(jnp.exp(lw))
    u = jax.random.uniform(key, shape, dtype=cdf.dtype) * cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right")
    return jnp.clip(idx, 0, lw.shape[0] - 1).astype(jnp.int32)


# --------------------------------------------------------------------------- resampling


def resample(
    key: jax.Array,
    log_weights,
    scheme: str | Scheme = "systematic",
    num_samples: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Resample: ancestor indices and the new (equal) log weights.

    Returns ``(indices, new_log_weights)`` with ``indices`` int32 of shape ``(M,)`` drawn
    by ``scheme`` (a name in :data:`SCHEMES` or a callable) and ``new_log_weights`` all
    equal to ``logsumexp(log_weights) - log M``, so that ``logsumexp`` of the weights, the
    running estimate of the evidence, is unchanged by resampling.

    Raises :class:`ppl.errors.NonFiniteWeightError` for concrete weights that are NaN,
    ``+inf`` or all ``-inf``; see the module docstring for the traced (jit) behaviour.
    """
    fn = get_scheme(scheme)
    lw = _as_log_weights(log_weights, "resample")
    m = _num_samples(num_samples, lw.shape[0], "resample")
    idx = fn(key, lw, num_samples=m)
    new_lw = jnp.full((m,), logsumexp(lw) - math.log(m), dtype=lw.dtype)
    return idx, new_lw


def adaptive_resample(
    key: jax.Array,
    log_weights,
    scheme: str | Scheme = "systematic",
    ess_threshold: float = 0.5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Resample only if the weights have degenerated: ``ess(lw) / N < ess_threshold``.

    Returns ``(indices, new_log_weights, resampled)``. If ``resampled`` (a boolean scalar
    array) is true these are as in :func:`resample`; otherwise ``indices`` is
    ``arange(N)`` and the log weights are returned unchanged. The choice is made with
    :func:`jax.lax.cond`, so this works under :func:`jax.jit`. ``ess_threshold = 0``
    never resamples; ``ess_threshold = 1`` resamples unless the weights are equal (up to
    rounding in the ESS).
    This is the usual adaptive rule (Chopin & Papaspiliopoulos 2020, chs. 9-10).

    Raises :class:`~ppl.errors.InvalidArgumentError` (a ``ValueError``) if
    ``ess_threshold`` is not a number in ``[0, 1]`` and
    :class:`ppl.errors.NonFiniteWeightError` as :func:`resample` does.
    """
    if _is_concrete(ess_threshold):
        if isinstance(ess_threshold, (bool, str, bytes)) or ess_threshold is None:
            raise ArgumentTypeError(
                f"ess_threshold must be a number in [0, 1], got {ess_threshold!r}"
            )
        t = np.asarray(ess_threshold)
        if t.ndim != 0 or not np.isfinite(t) or not (0.0 <= float(t) <= 1.0):
            raise InvalidArgumentError(
                f"ess_threshold must be a number in [0, 1] (a fraction of the number of "
                f"particles), got {ess_threshold!r}"
            )
    fn = get_scheme(scheme)
    lw = _as_log_weights(log_weights, "adaptive_resample")
    n = lw.shape[0]
    do = ess(lw) / n < ess_threshold

    def _yes(k):
        idx = fn(k, lw, num_samples=n)
        return idx, jnp.full((n,), logsumexp(lw) - math.log(n), dtype=lw.dtype)

    def _no(k):
        return jnp.arange(n, dtype=jnp.int32), lw

    idx, new_lw = jax.lax.cond(do, _yes, _no, key)
    return idx, new_lw, do
