"""Tests of ppl.inference.resampling: unbiasedness, variance ordering, API and edge cases."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from ppl.inference import resampling
from ppl.inference.resampling import (
    SCHEMES,
    adaptive_resample,
    ess,
    get_scheme,
    log_normalise,
    multinomial,
    resample,
)
from scipy import stats

from ppl.errors import NonFiniteWeightError, UnknownOptionError

N = 50
REPLICATES = 4000
K_SIGMA = 4.0
SCHEME_NAMES = sorted(SCHEMES)


def skewed_log_weights(n: int = N, seed: int = 0) -> jax.Array:
    """A fixed, skewed weight vector (ESS well below n) with one impossible particle."""
    lw = 1.5 * jax.random.normal(jax.random.key(seed), (n,))
    return lw.at[7].set(-jnp.inf)


@functools.cache
def _counts_fn(resampler, num_samples, n):
    def one(key, log_weights):
        return jnp.bincount(resampler(key, log_weights, num_samples), length=n)

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def offspring_counts(resampler, log_weights, num_samples=None, replicates=REPLICATES, seed=1):
    """Offspring counts, shape (replicates, N), of ``replicates`` independent resamplings."""
    log_weights = jnp.asarray(log_weights, jnp.float32)
    keys = jax.random.split(jax.random.key(seed), replicates)
    return np.asarray(_counts_fn(resampler, num_samples, log_weights.shape[0])(keys, log_weights))


def unbiasedness_check(counts, log_weights, num_samples=None, k=K_SIGMA, agg_pvalue=1e-6):
    """Is the mean offspring count of each particle ``M w_i``, within Monte Carlo error?

    Per particle: ``|mean_i - M w_i| <= k * se_i``, with ``se_i`` the standard error from
    the replicate spread, floored at ``sqrt(f (1 - f) / R)`` with ``f = frac(M w_i)`` (no
    integer-valued count with mean ``M w_i`` has a smaller variance than ``f (1 - f)``), so
    that a resampler that is wrongly deterministic is still caught.
    Aggregate: ``sum_i z_i^2`` against the chi-square(df) upper ``agg_pvalue`` quantile,
    df = number of particles with positive weight (each ``z_i^2`` has mean about 1 whatever
    the correlation between particles, so this catches a small bias spread over many
    particles that no single ``z_i`` shows).

    Returns ``(ok, details)``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    r, n = counts.shape
    m = n if num_samples is None else num_samples
    w = np.exp(np.asarray(log_normalise(jnp.asarray(log_weights, jnp.float32)), np.float64))
    w = w / w.sum()
    expected = m * w
    mean = counts.mean(axis=0)
    frac = expected - np.floor(expected)
    se = np.maximum(counts.std(axis=0, ddof=1), np.sqrt(frac * (1.0 - frac))) / math.sqrt(r)
    dev = mean - expected
    atol = 1e-4  # float32 weights
    per_particle_ok = np.abs(dev) <= k * se + atol
    live = (w > 0) | (mean > 0)
    z = np.where(se > 0, dev / np.where(se > 0, se, 1.0), np.where(np.abs(dev) > atol, np.inf, 0))
    stat = float(np.sum(z[live] ** 2))
    df = int(live.sum())
    threshold = float(stats.chi2.isf(agg_pvalue, df))
    ok = bool(per_particle_ok.all()) and stat <= threshold
    return ok, {
        "per_particle_ok": per_particle_ok,
        "z": z,
        "chi2": stat,
        "df": df,
        "threshold": threshold,
    }


# --------------------------------------------------------------------------- unbiasedness


# 120 samples is slow (keeps the fast suite under 15 minutes; 17 != N stays fast)
@pytest.mark.parametrize("num_samples", [None, 17, pytest.param(120, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_scheme_is_unbiased(name, num_samples):
    lw = skewed_log_weights()
    counts = offspring_counts(SCHEMES[name], lw, num_samples)
    m = N if num_samples is None else num_samples
    assert (counts.sum(axis=1) == m).all()
    ok, d = unbiasedness_check(counts, lw, num_samples)
    assert ok, (name, num_samples, d["chi2"], d["threshold"], np.flatnonzero(~d["per_particle_ok"]))


def test_checker_detects_argmax_resampler():
    lw = skewed_log_weights()

    def argmax_resampler(key, log_weights, num_samples=None):
        m = log_weights.shape[0] if num_samples is None else num_samples
        return jnp.full((m,), jnp.argmax(log_weights), dtype=jnp.int32)

    ok, d = unbiasedness_check(offspring_counts(argmax_resampler, lw), lw)
    assert not ok
    assert not d["per_particle_ok"][int(jnp.argmax(lw))]


def test_checker_detects_subtly_tempered_resampler():
    """Multinomial on w^0.9: a small bias, caught at least by the aggregate statistic."""
    lw = skewed_log_weights()

    def tempered(key, log_weights, num_samples=None):
        return multinomial(key, 0.9 * log_weights, num_samples)

    ok, d = unbiasedness_check(offspring_counts(tempered, lw), lw)
    assert not ok
    assert d["chi2"] > d["threshold"]


def test_checker_detects_shifted_systematic_grid():
    """Systematic resampling with the point grid shifted by half a stratum is biased."""
    lw = skewed_log_weights()

    def shifted(key, log_weights, num_samples=None):
        w = jnp.exp(log_normalise(log_weights))
        cdf = jnp.cumsum(w).at[-1].set(1.0)
        u = (jnp.arange(N) + 0.5 * jax.random.uniform(key)) / N  # U[0, 1/2) not U[0, 1)
        return jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, N - 1)

    ok, _ = unbiasedness_check(offspring_counts(shifted, lw), lw)
    assert not ok


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_impossible_particle_is_never_chosen():
    lw = skewed_log_weights()
    lw = lw.at[0].set(-jnp.inf).at[N - 1].set(-jnp.inf)
    for name in SCHEME_NAMES:
        counts = offspring_counts(SCHEMES[name], lw, replicates=500)
        assert counts[:, [0, 7, N - 1]].sum() == 0, name


# --------------------------------------------------------------------------- variance


def test_low_variance_schemes_beat_multinomial():
    lw = skewed_log_weights()
    w = np.exp(np.asarray(log_normalise(lw), np.float64))
    total_var = {
        name: float(offspring_counts(SCHEMES[name], lw).var(axis=0, ddof=1).sum())
        for name in SCHEME_NAMES
    }
    # multinomial: Var(count_i) = N w_i (1 - w_i), summed N (1 - sum w^2)
    theory = N * (1.0 - np.sum(w**2))
    assert total_var["multinomial"] == pytest.approx(theory, rel=0.05)
    for name in ("stratified", "systematic", "residual"):
        assert total_var[name] < 0.8 * total_var["multinomial"], (name, total_var)
    # systematic: each count is floor or ceil of N w_i, the least variance possible
    frac = N * w - np.floor(N * w)
    assert total_var["systematic"] == pytest.approx(np.sum(frac * (1 - frac)), rel=0.1)


# --------------------------------------------------------------------------- API


# 13 and 200 are slow (keeps the fast suite under 15 minutes; 1 and N stay fast)
@pytest.mark.parametrize("num_samples", [None, 1, pytest.param(13, marks=pytest.mark.slow),
                                         pytest.param(200, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_indices_shape_dtype_range(name, num_samples):
    lw = skewed_log_weights()
    idx = SCHEMES[name](jax.random.key(3), lw, num_samples)
    m = N if num_samples is None else num_samples
    assert idx.shape == (m,)
    assert idx.dtype == jnp.int32
    assert int(idx.min()) >= 0 and int(idx.max()) < N


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_jit_and_determinism(name):
    lw = skewed_log_weights()
    fn = SCHEMES[name]
    key = jax.random.key(11)
    eager = fn(key, lw)
    jitted = jax.jit(fn, static_argnums=2)
    np.testing.assert_array_equal(eager, jitted(key, lw, None))
    np.testing.assert_array_equal(eager, fn(key, lw))
    np.testing.assert_array_equal(fn(key, lw, 30), jitted(key, lw, 30))
    others = [fn(jax.random.key(s), lw) for s in range(12, 17)]
    assert any(not np.array_equal(eager, o) for o in others)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_vmap_over_weight_vectors(name):
    lws = jnp.stack([skewed_log_weights(seed=s) for s in range(4)])
    keys = jax.random.split(jax.random.key(0), 4)
    batched = jax.vmap(SCHEMES[name])(keys, lws)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], SCHEMES[name](keys[i], lws[i]))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_huge_log_weights_stay_in_log_space(name):
    # exp of these would overflow / underflow to inf / 0 without normalising first
    lw = jnp.array([1000.0, 1000.0 + math.log(3.0), -5000.0, 999.0])
    counts = offspring_counts(SCHEMES[name], lw, replicates=2000)
    ok, d = unbiasedness_check(counts, lw)
    assert ok, d
    assert counts[:, 2].sum() == 0


def test_degenerate_weights_all_on_one_particle():
    lw = jnp.full((N,), -jnp.inf).at[5].set(0.0)
    for name in SCHEME_NAMES:
        np.testing.assert_array_equal(SCHEMES[name](jax.random.key(0), lw), np.full(N, 5))



def test_a_point_landing_on_a_zero_weight_particle_takes_a_possible_one():
    """A prefix sum rounded differently at neighbouring entries (a parallel scan) can rise
    by an ulp at a zero-weight particle; a point in that ulp lands on it, and it must not
    be resampled: it takes the heaviest particle instead."""
    from ppl.inference.resampling import _invert

    w = jnp.array([0.25, 0.25, 0.0, 0.5])
    below = jnp.nextafter(jnp.float32(0.5), 0.0)
    cdf = jnp.array([0.25, below, 0.5, 1.0])  # entry 2 should equal entry 1
    u = jnp.array([0.1, 0.3, below, 0.9])
    assert int(jnp.searchsorted(cdf, below, side="right")) == 2  # the landing itself
    np.testing.assert_array_equal(_invert(cdf, u, w), [0, 1, 3, 3])
    # weights that are all zero keep the uniform fallback's indices
    flat = jnp.arange(1, 5) / 4.0
    np.testing.assert_array_equal(_invert(flat, jnp.array([0.1, 0.3, 0.6, 0.9]),
                                          jnp.zeros(4)), [0, 1, 2, 3])

@pytest.mark.parametrize("n", [3, 7, 50, 1000])
def test_equal_weights_low_variance_schemes_copy_each_particle_once(n):
    # n * (1/n) can round to just below 1; residual must still make one copy of each
    lw = jnp.full((n,), -2.5)
    for name in ("residual", "systematic", "stratified"):
        counts = np.bincount(np.asarray(SCHEMES[name](jax.random.key(n), lw)), minlength=n)
        np.testing.assert_array_equal(counts, np.ones(n), err_msg=name)


def test_single_particle():
    for name in SCHEME_NAMES:
        idx = SCHEMES[name](jax.random.key(0), jnp.array([-3.0]), 4)
        np.testing.assert_array_equal(idx, np.zeros(4))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_resample_preserves_evidence(name):
    lw = skewed_log_weights()
    for m in (None, 20):
        idx, new_lw = resample(jax.random.key(0), lw, name, num_samples=m)
        mm = N if m is None else m
        assert idx.shape == new_lw.shape == (mm,)
        np.testing.assert_allclose(new_lw, np.full(mm, logsumexp(lw) - math.log(mm)), rtol=1e-6)
        np.testing.assert_allclose(logsumexp(new_lw), logsumexp(lw), rtol=1e-6)
        np.testing.assert_array_equal(idx, SCHEMES[name](jax.random.key(0), lw, m))


def test_resample_default_is_systematic_and_jits():
    lw = skewed_log_weights()
    key = jax.random.key(2)
    idx, new_lw = resample(key, lw)
    np.testing.assert_array_equal(idx, resampling.systematic(key, lw))
    idx_j, new_lw_j = jax.jit(resample, static_argnames=("scheme", "num_samples"))(key, lw)
    np.testing.assert_array_equal(idx, idx_j)
    np.testing.assert_allclose(new_lw, new_lw_j)


def test_get_scheme():
    for name, fn in SCHEMES.items():
        assert get_scheme(name) is fn
    custom = lambda key, lw, num_samples=None: jnp.zeros(lw.shape[0], jnp.int32)
    assert get_scheme(custom) is custom


@pytest.mark.parametrize("bad", ["bogus", "Systematic", "", None, 3])
def test_unknown_scheme_error(bad):
    with pytest.raises(UnknownOptionError) as info:
        get_scheme(bad)
    msg = str(info.value)
    assert "resample" in msg
    for name in SCHEMES:
        assert repr(name) in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownOptionError):
        resample(jax.random.key(0), jnp.zeros(3), scheme=bad)
    with pytest.raises(UnknownOptionError):
        adaptive_resample(jax.random.key(0), jnp.zeros(3), scheme=bad)


# --------------------------------------------------------------------------- ESS, adaptive


def test_ess_and_log_normalise():
    assert float(ess(jnp.zeros(N))) == pytest.approx(N, rel=1e-5)
    assert float(ess(jnp.full(N, -jnp.inf).at[3].set(2.0))) == pytest.approx(1.0)
    assert float(ess(jnp.full(N, -jnp.inf))) == 0.0
    assert np.isnan(float(ess(jnp.zeros(N).at[0].set(jnp.nan))))
    lw = skewed_log_weights()
    w = np.exp(np.asarray(lw, np.float64))
    assert float(ess(lw)) == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-4)
    assert float(ess(lw + 5000.0)) == pytest.approx(float(ess(lw)), rel=1e-3)  # float32 input
    assert 1.0 <= float(ess(lw)) < 0.5 * N
    np.testing.assert_allclose(logsumexp(log_normalise(lw + 5000.0)), 0.0, atol=1e-3)
    batch = jnp.stack([lw, jnp.zeros(N)])
    np.testing.assert_allclose(ess(batch), [ess(lw), N], rtol=1e-5)
    np.testing.assert_allclose(log_normalise(jnp.full((2, 4), -jnp.inf)), -math.log(4))


def _k_equal(k: int) -> jax.Array:
    """k particles of equal weight, the rest impossible: ESS is exactly k."""
    return jnp.where(jnp.arange(N) < k, 0.3, -jnp.inf)


def _slow_unless(values, fast):
    return [v if v in fast else pytest.param(v, marks=pytest.mark.slow) for v in values]


@pytest.mark.parametrize("threshold", _slow_unless([0.0, 0.3, 0.5, 0.7, 1.0], (0.0, 0.5, 1.0)))
@pytest.mark.parametrize("k", _slow_unless([1, 10, 25, 40, N], (1, 25, N)))
def test_adaptive_resample_exactly_when_ess_below_threshold(k, threshold):
    lw = _k_equal(k)
    key = jax.random.key(4)
    should = (float(ess(lw)) / N) < threshold
    for fn in (adaptive_resample, jax.jit(adaptive_resample, static_argnames="scheme")):
        idx, new_lw, did = fn(key, lw, "systematic", threshold)
        assert bool(did) == should == (k / N < threshold)
        np.testing.assert_allclose(logsumexp(new_lw), logsumexp(lw), rtol=1e-6)
        if should:
            ref_idx, ref_lw = resample(key, lw, "systematic")
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_allclose(new_lw, ref_lw)
            assert np.all(np.asarray(idx) < k)
        else:
            np.testing.assert_array_equal(idx, np.arange(N))
            np.testing.assert_array_equal(new_lw, lw)
        assert idx.dtype == jnp.int32


def test_adaptive_resample_on_skewed_weights():
    lw = skewed_log_weights()
    ratio = float(ess(lw)) / N
    _, _, did = adaptive_resample(jax.random.key(0), lw, "residual", ratio + 0.01)
    assert bool(did)
    idx, new_lw, did = adaptive_resample(jax.random.key(0), lw, "residual", ratio - 0.01)
    assert not bool(did)
    np.testing.assert_array_equal(new_lw, lw)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_invalid_ess_threshold(bad):
    with pytest.raises(ValueError, match="ess_threshold"):
        adaptive_resample(jax.random.key(0), jnp.zeros(4), ess_threshold=bad)


# --------------------------------------------------------------------------- bad weights


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_all_impossible_weights_raise_when_concrete(name):
    lw = jnp.full((N,), -jnp.inf)
    with pytest.raises(NonFiniteWeightError, match="-inf"):
        SCHEMES[name](jax.random.key(0), lw)
    with pytest.raises(NonFiniteWeightError, match="-inf"):
        resample(jax.random.key(0), lw, name)
    with pytest.raises(NonFiniteWeightError, match="-inf"):
        adaptive_resample(jax.random.key(0), lw, name)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_nan_or_posinf_weight_raises_when_concrete(bad):
    lw = skewed_log_weights().at[3].set(bad)
    for name in SCHEME_NAMES:
        with pytest.raises(NonFiniteWeightError, match="particle"):
            SCHEMES[name](jax.random.key(0), lw)
    with pytest.raises(NonFiniteWeightError):
        resample(jax.random.key(0), lw)
    with pytest.raises(NonFiniteWeightError):
        adaptive_resample(jax.random.key(0), lw)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_all_impossible_weights_under_jit_flag_the_evidence(name):
    lw = jnp.full((N,), -jnp.inf)
    idx, new_lw = jax.jit(resample, static_argnames="scheme")(jax.random.key(0), lw, name)
    assert idx.shape == (N,) and int(idx.min()) >= 0 and int(idx.max()) < N
    assert np.all(np.isneginf(np.asarray(new_lw)))  # evidence estimate -inf, not NaN
    idx, new_lw, did = jax.jit(adaptive_resample, static_argnames="scheme")(
        jax.random.key(0), lw, name
    )
    assert bool(did)
    assert int(idx.min()) >= 0 and int(idx.max()) < N
    assert np.all(np.isneginf(np.asarray(new_lw)))


def test_nan_weight_under_jit_propagates_to_evidence():
    lw = skewed_log_weights().at[3].set(jnp.nan)
    idx, new_lw = jax.jit(resample)(jax.random.key(0), lw)
    assert int(idx.min()) >= 0 and int(idx.max()) < N
    assert np.all(np.isnan(np.asarray(new_lw)))
    _, new_lw, _ = jax.jit(adaptive_resample)(jax.random.key(0), lw)
    assert np.isnan(float(logsumexp(new_lw)))


def test_bad_shapes_and_num_samples():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="1-D"):
        resample(key, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="1-D"):
        resampling.systematic(key, jnp.zeros((0,)))
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="num_samples"):
            resampling.stratified(key, jnp.zeros(3), bad)
