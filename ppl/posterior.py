"""The result type every ppl inference method returns: :class:`Posterior`.

Conventions
-----------
Leading axis
    Every per-draw array (``samples[site]``, ``sample_stats[name]``, ``log_weights``,
    ``log_likelihood[site]``) has a leading axis of size ``num_chains * num_draws``, in
    *chain-major* order: chain 0's ``num_draws`` draws first, then chain 1's, and so on.
    This is the layout of NumPyro's ``MCMC.get_samples()``; ``get_samples(group_by_chain=True)``
    reshapes it to ``(num_chains, num_draws, ...)``. Trailing axes are the site's own shape
    (``()`` for a scalar site).

Weights in log space
    Importance-weighted results (importance sampling, SMC, ...) carry *unnormalised* log
    weights, one per draw. They are never exponentiated before normalisation: normalised
    weights are ``exp(lw - logsumexp(lw))`` and Kish's effective sample size is
    ``exp(2 logsumexp(lw) - logsumexp(2 lw))``. The weights are normalised over *all* draws
    of all chains at once, so log weights of different chains must be on a common scale (to
    pool independent SMC runs, add each run's log-evidence estimate to its particles' log
    weights). A log weight of ``-inf`` (weight zero) is allowed; NaN or ``+inf``, or every
    weight ``-inf``, raises :class:`ppl.errors.NonFiniteWeightError`. ``log_weights=None``
    means equally weighted draws (MCMC, exact samplers, resampled results).

Log evidence
    ``log_evidence`` is an estimate of ``log p(data)``: a scalar, or one value per chain
    (shape ``(num_chains,)``) when each chain is an independent run.

ArviZ
    :meth:`Posterior.to_arviz` converts to what the installed ArviZ expects
    (:mod:`ppl.arviz_compat`): an :class:`xarray.DataTree` under ArviZ 1.x (``arviz-base``),
    an ``arviz.InferenceData`` under 0.x; groups ``posterior``, ``sample_stats``,
    ``observed_data`` and ``log_likelihood``; every site gets dims
    ``("chain", "draw", f"{site}_dim_0", ...)``. ArviZ ignores importance weights, so by
    default a *weighted* result is first resampled to equally weighted draws (systematic
    resampling, deterministic unless a key is given); ``weights="sample_stats"`` gives the
    raw weighted draws. See :meth:`Posterior.to_arviz`.

MCMC diagnostics
    A result of an MCMC method (:data:`MCMC_METHODS`) with several chains and no weights is
    checked once, when it is built: rank-normalised split R-hat and bulk ESS of every scalar
    of every site, and the number of divergent transitions (a ``"diverging"`` sample stat).
    Problems give one :class:`ppl.errors.ConvergenceWarning`; the figures are in
    :meth:`Posterior.diagnostics`.

All summaries (:meth:`Posterior.mean`, :meth:`Posterior.var`, :meth:`Posterior.quantile`,
:meth:`Posterior.expectation`) use the weights where they exist. They return JAX arrays.
A ``Posterior`` is a plain Python object (not a pytree); build it outside ``jax.jit``.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl.arviz_compat import az, build
from ppl.errors import ConvergenceWarning, NonFiniteWeightError, UnknownOptionError
from ppl.weights import ess, normalise

__all__ = ["MCMC_METHODS", "Posterior", "check_mcmc_diagnostics", "mcmc_diagnostics"]

#: Names :meth:`Posterior.to_arviz` writes into the ``sample_stats`` group itself.
_RESERVED_STATS = ("log_weight", "log_evidence", "ess")
#: The groups :meth:`Posterior.predictive` fills (ArviZ's names).
PREDICTIVE_GROUPS = ("posterior_predictive", "prior", "prior_predictive")
#: Folded into the key of :meth:`Posterior.predictive` ("pred" in ASCII).
_PREDICTIVE_STREAM = 0x70726564
#: Allowed values of ``to_arviz(weights=...)``.
_WEIGHT_MODES = ("auto", "sample_stats", "resample")

#: Methods whose draws are Markov chains. A Posterior of one of these methods with several
#: chains and no weights is checked by :func:`check_mcmc_diagnostics` when it is built.
MCMC_METHODS = frozenset({"nuts", "hmc", "mh", "pmmh", "particle_gibbs", "csmc", "ppg"})
#: A scalar whose rank-normalised split R-hat exceeds this is flagged: the threshold of
#: Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization, folding, and
#: localization: an improved R-hat", used by Stan and ArviZ.
RHAT_THRESHOLD = 1.01
#: A scalar whose bulk ESS is below this many draws *per chain* (in total:
#: ``ESS_BULK_PER_CHAIN * num_chains``) is flagged, as rstan's ``check_hmc_diagnostics`` /
#: ``monitor`` do (Vehtari et al. 2021: 100 per chain, 400 for four chains).
ESS_BULK_PER_CHAIN = 100
#: Sites with more values than this (draws x scalars) are not checked, to keep the check
#: cheap; they are listed in ``diagnostics()["skipped_sites"]``.
_MAX_CHECKED_VALUES = 5_000_000


# --------------------------------------------------------------------------- helpers


def _leading(x) -> int | None:
    """Size of the leading axis of ``x``, or None for a 0-d value."""
    shape = np.shape(x)
    return shape[0] if shape else None


def _systematic_indices(key, weights: jax.Array, num_samples: int) -> jax.Array:
    """Systematic resampling: ``num_samples`` ancestor indices drawn from normalised ``weights``.

    One uniform offset ``u ~ U(0, 1)`` gives the positions ``(u + arange(M)) / M``; each is
    inverted in the cumulative weights with ``searchsorted`` (side ``"right"``, so a draw of
    weight zero is never chosen). Index ``i`` is chosen ``M * w_i`` times in expectation,
    and always either ``floor(M w_i)`` or ``ceil(M w_i)`` times.
    """
    cumulative = jnp.cumsum(weights)
    cumulative = cumulative.at[-1].set(1.0)  # guard against round-off below 1
    u = jax.random.uniform(key, (), dtype=cumulative.dtype)
    positions = (u + jnp.arange(num_samples, dtype=cumulative.dtype)) / num_samples
    idx = jnp.searchsorted(cumulative, positions, side="right")
    return jnp.clip(idx, 0, weights.shape[0] - 1).astype(jnp.int32)


def _dims(name: str, ndim: int) -> list[str]:
    return [f"{name}_dim_{i}" for i in range(ndim)]


def _per_draw_dataset(arrays: Mapping, num_chains: int, num_draws: int, attrs=None):
    """An xarray Dataset of per-draw arrays, reshaped to dims (chain, draw, name_dim_i...)."""
    import xarray as xr

    data_vars = {}
    for name, value in arrays.items():
        arr = np.asarray(value)
        arr = arr.reshape((num_chains, num_draws) + arr.shape[1:])
        data_vars[name] = (["chain", "draw", *_dims(name, arr.ndim - 2)], arr)
    coords = {"chain": np.arange(num_chains), "draw": np.arange(num_draws)}
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))


# --------------------------------------------------------------------------- MCMC checks


def _split_chains(x: np.ndarray) -> np.ndarray:
    """``(chains, draws, k)`` -> ``(2 chains, draws // 2, k)``: first and last halves (the
    middle draw of an odd count is dropped), as ArviZ and NumPyro split chains."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks (1-based) along the last axis of 2-d ``a``, ties sharing their average rank:
    ``scipy.stats.rankdata(a, axis=-1)`` in numpy (scipy.stats costs seconds to import)."""
    size = a.shape[-1]
    order = np.argsort(a, axis=-1)
    s = np.take_along_axis(a, order, axis=-1)
    pos = np.broadcast_to(np.arange(size), a.shape)
    first = np.ones(a.shape, dtype=bool)  # first of a run of equal values
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    last = np.ones(a.shape, dtype=bool)
    last[:, :-1] = first[:, 1:]
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=-1)
    end = np.minimum.accumulate(np.where(last, pos, size - 1)[:, ::-1], axis=-1)[:, ::-1]
    ranks = np.empty(a.shape)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=-1)
    return ranks


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise ``(chains, draws, k)`` over all chains and draws, per scalar:
    ``Phi^-1((rank - 3/8) / (S + 1/4))`` with average ranks for ties (Vehtari et al. 2021)."""
    from scipy.special import ndtri

    c, n, k = x.shape
    ranks = _average_ranks(np.ascontiguousarray(x.reshape(c * n, k).T))
    return ndtri((ranks.T - 0.375) / (c * n + 0.25)).reshape(c, n, k)


def _rank_rhat_and_bulk_ess(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat (the larger of the bulk and folded-tail values, ArviZ's
    default ``method="rank"``) and bulk ESS of ``(chains, draws >= 4, k)`` float draws, one
    per scalar: NumPyro's ``split_gelman_rubin`` / ``effective_sample_size`` formulas on
    rank-normalised split chains. NaN for a scalar that is constant or not finite."""
    from numpyro.diagnostics import effective_sample_size, gelman_rubin

    c, n, k = x.shape
    rhat = np.full(k, np.nan)
    ess_bulk = np.full(k, np.nan)
    flat = x.reshape(c * n, k)
    valid = np.all(np.isfinite(flat), axis=0)
    valid[valid] = np.ptp(flat[:, valid], axis=0) > 0
    if not valid.any():
        return rhat, ess_bulk
    x = x[:, :, valid]
    z = _z_scale(_split_chains(x))
    folded = np.abs(x - np.median(x.reshape(c * n, -1), axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = gelman_rubin(_z_scale(_split_chains(folded)))
        rhat[valid] = np.fmax(gelman_rubin(z), tail)
        ess = effective_sample_size(z)
    # ArviZ's bound tau >= 1 / log10(S): ESS in (0, S log10 S] even for a few draws.
    cap = z.shape[0] * z.shape[1] * np.log10(z.shape[0] * z.shape[1])
    ess_bulk[valid] = np.where((ess > 0) & (ess < cap), ess, cap)
    return rhat, ess_bulk


def _labels(name: str, shape: tuple) -> list[str]:
    """ArviZ's row labels of a site's scalars: ``name``, ``name[2]``, ``name[1, 3]``."""
    if not shape:
        return [name]
    return [f"{name}[{', '.join(map(str, i))}]" for i in np.ndindex(*shape)]


def mcmc_diagnostics(post: Posterior) -> dict:
    """Convergence figures of the (unweighted) chains of ``post``, computed on the host.

    Per scalar of every site: the rank-normalised split R-hat (ArviZ's default, the larger
    of the bulk and the folded "tail" values) and the bulk ESS (Vehtari et al. 2021), with
    NumPyro's ``gelman_rubin`` / ``effective_sample_size`` formulas: ``r_hat`` is
    ``az.rhat``'s, ``ess_bulk`` agrees with ``az.ess(method="bulk")`` within about 1% (ArviZ
    adds one more autocorrelation term). Both need at least 4 draws per chain; a constant or
    non-finite scalar gets NaN and is never flagged.

    Returns a dict: ``num_chains``, ``num_draws``; ``r_hat`` and ``ess_bulk`` (site ->
    array of the site's shape); ``num_divergences`` and ``divergences_per_chain`` (from a
    ``"diverging"`` sample stat, else None); ``r_hat_threshold`` (:data:`RHAT_THRESHOLD`)
    and ``ess_bulk_threshold`` (:data:`ESS_BULK_PER_CHAIN` x ``num_chains``); ``high_r_hat``
    and ``low_ess_bulk`` (scalar label as in ``az.summary``, e.g. ``"m[1, 3]"`` -> value,
    worst first); ``skipped_sites`` (not numeric, fewer than 4 draws per chain, or more
    than 5e6 values, about 2 s of work); ``converged`` (nothing flagged, no divergence).
    """
    c, d = post.num_chains, post.num_draws
    r_hat, ess_bulk, skipped = {}, {}, []
    high, low = [], []
    ess_min = ESS_BULK_PER_CHAIN * c
    for name, value in post.samples.items():
        arr = np.asarray(value)
        shape = tuple(arr.shape[1:])
        numeric = np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
        if d < 4 or not numeric or arr.size == 0 or arr.size > _MAX_CHECKED_VALUES:
            skipped.append(name)
            continue
        rh, eb = _rank_rhat_and_bulk_ess(arr.reshape(c, d, -1).astype(np.float64))
        r_hat[name], ess_bulk[name] = rh.reshape(shape), eb.reshape(shape)
        for label, r, e in zip(_labels(name, shape), rh, eb, strict=True):
            if r > RHAT_THRESHOLD:
                high.append((label, float(r)))
            if e < ess_min:
                low.append((label, float(e)))
    diverging = post.sample_stats.get("diverging")
    num_div = per_chain = None
    if diverging is not None:
        div = np.asarray(diverging).reshape(c, d, -1).any(axis=-1)
        per_chain = div.sum(axis=1)
        num_div = int(per_chain.sum())
    return {
        "num_chains": c,
        "num_draws": d,
        "r_hat": r_hat,
        "ess_bulk": ess_bulk,
        "num_divergences": num_div,
        "divergences_per_chain": per_chain,
        "r_hat_threshold": RHAT_THRESHOLD,
        "ess_bulk_threshold": ess_min,
        "high_r_hat": dict(sorted(high, key=lambda t: -t[1])),
        "low_ess_bulk": dict(sorted(low, key=lambda t: t[1])),
        "skipped_sites": skipped,
        "converged": not high and not low and not num_div,
    }


def _listing(flagged: dict, fmt: str, limit: int = 5) -> str:
    items = [f"{label} ({fmt.format(v)})" for label, v in list(flagged.items())[:limit]]
    more = len(flagged) - limit
    return ", ".join(items) + (f" and {more} more" if more > 0 else "")


def _diagnostics_message(method: str, diag: dict) -> str:
    c, d = diag["num_chains"], diag["num_draws"]
    parts = []
    if diag["high_r_hat"]:
        parts.append(
            f"split R-hat > {diag['r_hat_threshold']} at {_listing(diag['high_r_hat'], '{:.4f}')}"
        )
    if diag["low_ess_bulk"]:
        parts.append(
            f"bulk ESS < {diag['ess_bulk_threshold']} ({ESS_BULK_PER_CHAIN} per chain) at "
            f"{_listing(diag['low_ess_bulk'], '{:.0f}')}"
        )
    if diag["num_divergences"]:
        per_chain = ", ".join(map(str, np.asarray(diag["divergences_per_chain"]).tolist()))
        parts.append(
            f"{diag['num_divergences']} of {c * d} transitions diverged (per chain: "
            f"{per_chain})"
        )
    return (
        f"{method or 'MCMC'}: {c} chains of {d} draws may not have converged: "
        + "; ".join(parts)
        + ". Thresholds as Stan and ArviZ (Vehtari et al. 2021); every figure is in "
        "Posterior.diagnostics(). Run longer chains, look for several modes (R-hat), or "
        "reparameterise (divergences)."
    )


def _stacklevel_outside_ppl() -> int:
    """The ``stacklevel`` (for a ``warnings.warn`` in the caller) of the first frame outside
    ppl's packages, so a warning points at the user's line, however deep ppl called it."""
    prefixes = tuple(
        os.path.dirname(m.__file__) + os.sep
        for name in ("ppl", "ppl.inference", "ppl.semantics", "ppl.models")
        if (m := sys.modules.get(name)) is not None and getattr(m, "__file__", None)
    )
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(prefixes):
        frame, level = frame.f_back, level + 1
    return level


def check_mcmc_diagnostics(post: Posterior) -> dict:
    """:func:`mcmc_diagnostics` of ``post``, and one :class:`~ppl.errors.ConvergenceWarning`
    naming every flagged scalar (worst five per kind) and the divergences, if any.

    Thresholds (as Stan and ArviZ): rank-normalised split R-hat > :data:`RHAT_THRESHOLD`
    (1.01), bulk ESS < :data:`ESS_BULK_PER_CHAIN` (100) per chain, and any divergent
    transition. ``Posterior`` calls this once, when an MCMC result (:data:`MCMC_METHODS`)
    with several chains and no weights is built. Returns the figures.
    """
    diag = mcmc_diagnostics(post)
    if not diag["converged"]:
        warnings.warn(
            _diagnostics_message(post.method, diag),
            ConvergenceWarning,
            stacklevel=_stacklevel_outside_ppl(),
        )
    return diag


class Posterior:
    """Draws from (an approximation of) a posterior, with optional importance weights.

    Every inference method in ppl returns one. See the module docstring for the
    conventions (chain-major leading axis, weights in log space).

    Args:
        samples: dict site name -> array of shape ``(num_chains * num_draws, *site_shape)``,
            chain-major (chain 0's draws first), like NumPyro's ``MCMC.get_samples()``.
        num_chains: number of chains (independent runs); must divide the leading axis.
        log_weights: optional unnormalised log importance weights, shape
            ``(num_chains * num_draws,)``; ``None`` for equally weighted draws.
        log_evidence: optional estimate of ``log p(data)``: a scalar or one value per
            chain (shape ``(num_chains,)``).
        sample_stats: optional dict name -> per-draw array ``(num_chains * num_draws, ...)``
            (e.g. ``"accept_prob"``, ``"diverging"``). Per-run quantities that are not per
            draw (e.g. the per-step ESS of an SMC run) belong in ``info``. The names
            ``"log_weight"``, ``"log_evidence"`` and ``"ess"`` are reserved.
        observed_data: optional dict observed site -> the observed array.
        log_likelihood: optional dict observed site -> pointwise log-likelihood of shape
            ``(num_chains * num_draws, *data_shape)``.
        method: name of the algorithm that produced the draws.
        info: optional dict of anything else (diagnostics, exact marginals, ...).
        predictive: optional dict group -> dict site -> per-draw array, for the groups
            ``"posterior_predictive"`` (aligned with the draws: leading axis
            ``num_chains * num_draws``), ``"prior"`` and ``"prior_predictive"`` (any number
            of draws, one chain); filled by :meth:`predictive`.

    Raises:
        ValueError: if leading axes disagree, are not divisible by ``num_chains``, or a
            per-draw array is 0-d (the message names the site).
        NonFiniteWeightError: if a log weight is NaN or ``+inf``, or all are ``-inf``.

    Warns:
        ConvergenceWarning: for ``num_chains > 1``, no weights and ``method`` in
            :data:`MCMC_METHODS`, when a scalar's split R-hat exceeds 1.01 or its bulk ESS
            is below 100 per chain, or a transition diverged (:func:`check_mcmc_diagnostics`;
            the figures are kept for :meth:`diagnostics`).
    """

    def __init__(
        self,
        samples,
        *,
        num_chains=1,
        log_weights=None,
        log_evidence=None,
        sample_stats=None,
        observed_data=None,
        log_likelihood=None,
        method="",
        info=None,
        predictive=None,
    ):
        if not isinstance(samples, Mapping):
            raise TypeError(
                f"Posterior: samples must be a dict site -> array, got {type(samples).__name__}"
            )
        if isinstance(num_chains, bool) or int(num_chains) != num_chains or num_chains < 1:
            raise ValueError(
                f"Posterior: num_chains must be a positive integer, got {num_chains!r}"
            )
        num_chains = int(num_chains)
        self._samples = dict(samples)
        self._sample_stats = dict(sample_stats or {})
        self._observed_data = dict(observed_data or {})
        self._log_likelihood = dict(log_likelihood or {})
        self._method = str(method)
        self._info = dict(info or {})
        self._num_chains = num_chains
        self._predictive = {g: dict(v) for g, v in (predictive or {}).items()}
        unknown = sorted(set(self._predictive) - set(PREDICTIVE_GROUPS))
        if unknown:
            raise ValueError(f"Posterior: unknown predictive group(s) {unknown}; allowed: "
                             f"{list(PREDICTIVE_GROUPS)}")

        reserved = sorted(set(self._sample_stats) & set(_RESERVED_STATS))
        if reserved:
            raise ValueError(
                f"Posterior: sample_stats name(s) {reserved} are reserved; pass log weights "
                "and log evidence through log_weights= and log_evidence="
            )

        # Every per-draw array, labelled for error messages.
        per_draw = [(f"site '{k}'", v) for k, v in self._samples.items()]
        per_draw += [(f"sample_stats '{k}'", v) for k, v in self._sample_stats.items()]
        per_draw += [(f"log_likelihood '{k}'", v) for k, v in self._log_likelihood.items()]
        per_draw += [(f"posterior_predictive '{k}'", v)
                     for k, v in self._predictive.get("posterior_predictive", {}).items()]
        if log_weights is not None:
            per_draw.append(("log_weights", log_weights))
        if not per_draw:
            raise ValueError(
                "Posterior: no per-draw arrays (samples, sample_stats, log_likelihood or "
                "log_weights) to take the number of draws from"
            )
        total = None
        first = None
        for label, value in per_draw:
            n = _leading(value)
            if n is None:
                raise ValueError(
                    f"Posterior: {label} is 0-d; per-draw arrays need a leading axis of size "
                    "num_chains * num_draws"
                )
            if total is None:
                total, first = n, label
            elif n != total:
                raise ValueError(
                    f"Posterior: {label} has leading axis {n} but {first} has {total}; all "
                    "per-draw arrays must share the leading axis num_chains * num_draws"
                )
        if total == 0:
            raise ValueError(f"Posterior: {first} has no draws (leading axis of size 0)")
        if total % num_chains:
            raise ValueError(
                f"Posterior: leading axis {total} of {first} is not divisible by "
                f"num_chains={num_chains}"
            )
        self._num_draws = total // num_chains

        if log_weights is not None:
            lw = jnp.asarray(log_weights)
            if not jnp.issubdtype(lw.dtype, jnp.floating):
                lw = lw.astype(jnp.result_type(float))
            if lw.ndim != 1:
                raise ValueError(
                    f"Posterior: log_weights must have shape ({total},), got {lw.shape}"
                )
            arr = np.asarray(lw)
            if np.any(np.isnan(arr)) or np.any(arr == np.inf):
                bad = np.flatnonzero(np.isnan(arr) | (arr == np.inf))
                raise NonFiniteWeightError(
                    f"Posterior: log_weights has {bad.size} NaN or +inf entries (first at "
                    f"draw {bad[0]})"
                )
            if not np.any(np.isfinite(arr)):
                raise NonFiniteWeightError(
                    "Posterior: every log weight is -inf (all draws have weight zero)"
                )
            log_weights = lw
        self._log_weights = log_weights

        if log_evidence is not None:
            shape = np.shape(log_evidence)
            if shape not in ((), (num_chains,)):
                raise ValueError(
                    f"Posterior: log_evidence must be a scalar or have shape ({num_chains},) "
                    f"(one per chain), got shape {shape}"
                )
        self._log_evidence = log_evidence

        # Several unweighted chains of an MCMC method: check convergence once, here.
        self._diagnostics = None
        if num_chains > 1 and log_weights is None and self._method in MCMC_METHODS:
            try:
                self._diagnostics = check_mcmc_diagnostics(self)
            except jax.errors.TracerArrayConversionError:
                pass  # built under a jax transformation: nothing concrete to check

    # ----------------------------------------------------------------------- accessors

    @property
    def samples(self) -> dict:
        """dict site -> array ``(num_chains * num_draws, *site_shape)``, chain-major."""
        return self._samples

    @property
    def log_weights(self):
        """Unnormalised log importance weights ``(num_chains * num_draws,)``, or None."""
        return self._log_weights

    @property
    def log_evidence(self):
        """Estimate of ``log p(data)`` (scalar or per chain), or None."""
        return self._log_evidence

    @property
    def num_chains(self) -> int:
        """Number of chains (independent runs)."""
        return self._num_chains

    @property
    def num_draws(self) -> int:
        """Number of draws *per chain*."""
        return self._num_draws

    @property
    def method(self) -> str:
        """Name of the algorithm that produced this result."""
        return self._method

    @property
    def info(self) -> dict:
        """Anything else the algorithm reported (per-run diagnostics, exact marginals...)."""
        return self._info

    @property
    def observed_data(self) -> dict:
        """dict observed site -> observed array."""
        return self._observed_data

    @property
    def log_likelihood(self) -> dict:
        """dict observed site -> pointwise log-likelihood ``(num_chains * num_draws, ...)``."""
        return self._log_likelihood

    @property
    def sample_stats(self) -> dict:
        """dict name -> per-draw statistic ``(num_chains * num_draws, ...)``."""
        return self._sample_stats

    @property
    def is_weighted(self) -> bool:
        """True if the draws carry importance weights."""
        return self._log_weights is not None

    @property
    def _total(self) -> int:
        return self._num_chains * self._num_draws

    def get_samples(self, group_by_chain: bool = False) -> dict:
        """The samples dict; with ``group_by_chain=True`` each array has leading axes
        ``(num_chains, num_draws)`` instead of ``(num_chains * num_draws,)``."""
        if not group_by_chain:
            return dict(self._samples)
        c, d = self._num_chains, self._num_draws
        return {k: v.reshape((c, d) + tuple(np.shape(v)[1:])) for k, v in self._samples.items()}

    # ----------------------------------------------------------------------- weights

    @property
    def weights(self) -> jax.Array:
        """Normalised weights ``(num_chains * num_draws,)`` summing to one.

        ``exp(lw - logsumexp(lw))`` for weighted results, uniform otherwise.
        """
        if self._log_weights is None:
            return jnp.full((self._total,), 1.0 / self._total)
        log_w, _ = normalise(self._log_weights)
        return jnp.exp(log_w)

    @property
    def ess(self) -> float:
        """Kish effective sample size ``exp(2 logsumexp(lw) - logsumexp(2 lw))``.

        Equals the total number of draws ``num_chains * num_draws`` for unweighted results.
        (This is the importance-sampling ESS; it ignores autocorrelation within chains.)
        """
        if self._log_weights is None:
            return float(self._total)
        return float(ess(self._log_weights))

    def diagnostics(self) -> dict:
        """Convergence figures of the chains: :func:`mcmc_diagnostics` (split R-hat and bulk
        ESS per scalar, divergences, the flagged scalars and the thresholds).

        Computed once: when the result was built, for an MCMC result with several chains
        (which also warned then on a problem), else on the first call (no warning; a single
        chain gets the split R-hat of its two halves). A weighted result is not a set of
        Markov chains: it gets ``{"num_chains", "num_draws", "importance_ess"}`` only.
        """
        if self._diagnostics is None:
            if self.is_weighted:
                return {
                    "num_chains": self._num_chains,
                    "num_draws": self._num_draws,
                    "importance_ess": self.ess,
                }
            self._diagnostics = mcmc_diagnostics(self)
        return dict(self._diagnostics)

    # ----------------------------------------------------------------------- summaries

    def _site(self, site: str) -> jax.Array:
        if site not in self._samples:
            raise KeyError(f"Posterior has no site '{site}'; sites are {sorted(self._samples)}")
        x = jnp.asarray(self._samples[site])
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.result_type(float))
        return x

    def _weighted_mean(self, x: jax.Array) -> jax.Array:
        w = self.weights.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else self.weights
        return jnp.tensordot(w, x, axes=(0, 0))

    def mean(self, site: str) -> jax.Array:
        """Posterior mean of ``site`` (weighted where weights exist); shape ``site_shape``."""
        return self._weighted_mean(self._site(site))

    def var(self, site: str) -> jax.Array:
        """Posterior variance of ``site``, elementwise: ``sum_i w_i (x_i - mean)^2``.

        This is the plug-in (``ddof=0``) estimate, with uniform weights for unweighted
        results, so it matches ``np.var`` there.
        """
        x = self._site(site)
        m = self._weighted_mean(x)
        return self._weighted_mean((x - m) ** 2)

    def quantile(self, site: str, q) -> jax.Array:
        """Quantile(s) ``q`` (in [0, 1]) of ``site``; shape ``q.shape + site_shape``.

        Unweighted results use :func:`jax.numpy.quantile` (linear interpolation, numpy's
        default). Weighted results sort the draws of each element, drop draws of weight
        zero, and interpolate the sorted values linearly against the midpoints of the
        cumulative weights, ``C_i - w_i / 2`` (so equal weights give numpy's
        ``method="hazen"``); ``q`` below the first midpoint or above the last gives the
        smallest or largest value.
        """
        x = self._site(site)
        q_arr = jnp.asarray(q, dtype=x.dtype)
        q_np = np.asarray(q_arr)
        if np.any(np.isnan(q_np)) or np.any((q_np < 0) | (q_np > 1)):
            raise ValueError(f"Posterior.quantile: q must lie in [0, 1], got {q!r}")
        if self._log_weights is None:
            return jnp.quantile(x, q_arr, axis=0)
        w = self.weights
        keep = np.asarray(w > 0)
        x, w = x[keep], w[keep]
        w = (w / jnp.sum(w)).astype(x.dtype)
        site_shape = x.shape[1:]
        flat = x.reshape(x.shape[0], -1)  # (n, k)
        order = jnp.argsort(flat, axis=0)
        xs = jnp.take_along_axis(flat, order, axis=0)
        ws = w[order]  # (n, k)
        mid = jnp.cumsum(ws, axis=0) - ws / 2
        interp = jax.vmap(lambda xp, fp: jnp.interp(q_arr.ravel(), xp, fp), in_axes=(1, 1))
        out = interp(mid, xs)  # (k, nq)
        return out.T.reshape(q_arr.shape + site_shape)

    def expectation(self, f: Callable[[dict], jax.Array]) -> jax.Array:
        """Weighted expectation ``sum_i w_i f(samples)_i``.

        ``f`` maps the samples dict (leading axis ``num_chains * num_draws``) to a per-draw
        array with the same leading axis, e.g. ``lambda s: s["x"] ** 2``.
        """
        fx = jnp.asarray(f(self._samples))
        if fx.ndim == 0 or fx.shape[0] != self._total:
            raise ValueError(
                f"Posterior.expectation: f must return a per-draw array with leading axis "
                f"{self._total}, got shape {fx.shape}"
            )
        if not jnp.issubdtype(fx.dtype, jnp.inexact):
            fx = fx.astype(jnp.result_type(float))
        return self._weighted_mean(fx)

    # ----------------------------------------------------------------------- resampling

    def resample(self, key, num_draws: int | None = None) -> Posterior:
        """A new, unweighted, single-chain Posterior drawn by systematic resampling.

        Draws ``num_draws`` (default: the total number of draws) indices from
        :attr:`weights` with systematic resampling and takes those rows of the samples,
        ``sample_stats`` and ``log_likelihood``, so they stay consistent. ``observed_data``,
        ``method`` and ``log_evidence`` are carried over (a per-chain log evidence is pooled
        into one estimate, ``logsumexp(log_evidence) - log(num_chains)``, and the per-chain
        values are kept in ``info["log_evidence_per_chain"]``). ``info`` is copied and gets
        ``info["ess_before_resampling"]`` (:attr:`ess` of this result). Unweighted results
        are resampled with uniform weights.
        """
        n = self._total if num_draws is None else int(num_draws)
        if n < 1:
            raise ValueError(f"Posterior.resample: num_draws must be positive, got {num_draws}")
        return self._take_draws(_systematic_indices(key, self.weights, n))

    def _take_draws(self, idx) -> Posterior:
        """The unweighted, single-chain Posterior of rows ``idx`` (see :meth:`resample`)."""

        def take(d):
            return {k: jnp.asarray(v)[idx] for k, v in d.items()}

        info = dict(self._info)
        info["ess_before_resampling"] = self.ess
        log_evidence = self._log_evidence
        if log_evidence is not None and np.shape(log_evidence) != ():
            info["log_evidence_per_chain"] = log_evidence
            le = jnp.asarray(log_evidence)
            log_evidence = logsumexp(le) - math.log(le.shape[0])
        return Posterior(
            take(self._samples),
            num_chains=1,
            log_weights=None,
            log_evidence=log_evidence,
            sample_stats=take(self._sample_stats),
            observed_data=dict(self._observed_data),
            log_likelihood=take(self._log_likelihood),
            method=self._method,
            info=info,
            predictive=self._predictive_taken(take),
        )

    def _predictive_taken(self, take) -> dict:
        """The predictive groups with the posterior predictive at the rows ``take`` picks
        (the prior groups are not draws of this posterior: kept as they are)."""
        out = dict(self._predictive)
        if "posterior_predictive" in out:
            out["posterior_predictive"] = take(out["posterior_predictive"])
        return out

    # ----------------------------------------------------------------------- predictive

    @property
    def posterior_predictive(self) -> dict:
        """dict observed site -> posterior predictive draws, one per draw (chain-major);
        empty until :meth:`predictive` fills it."""
        return dict(self._predictive.get("posterior_predictive", {}))

    @property
    def prior_predictive(self) -> dict:
        """dict observed site -> prior predictive draws (``predictive(..., prior=True)``)."""
        return dict(self._predictive.get("prior_predictive", {}))

    def predictive(self, model, *args, key=None, prior=False, **kwargs) -> Posterior:
        """Posterior (or prior) predictive draws of the observed sites of ``model``.

        ``post.predictive(model, *args)`` runs ``model(*args, **kwargs)`` once per draw with
        its latent sites set to that draw (every site of :attr:`samples` the program samples;
        markov step sites by their whole paths) and its ``observe`` sites *drawn* from their
        distributions instead of conditioned: the posterior predictive
        ``p(y_rep | y) = E_post[p(y_rep | latents)]`` (Gelman, Meng & Stern 1996,
        "Posterior predictive assessment of model fitness via realized discrepancies").
        With ``prior=True`` the latents are drawn from the prior too (the prior predictive;
        as many draws as this result has). One ``jit``-compiled ``vmap`` over the draws;
        the data arguments are closed over, so programs that need concrete data work.

        Returns a new :class:`Posterior`, the same draws and weights, with the draws in
        :attr:`posterior_predictive` (leading axis aligned with the draws: weighted results
        keep their weights, and :meth:`to_arviz` resamples them together) or
        :attr:`prior_predictive` (and the prior's latents); :meth:`to_arviz` writes them
        into the groups ``posterior_predictive`` / ``prior`` / ``prior_predictive``, beside
        ``observed_data`` (taken from the program's arguments when the result has none),
        so ``az.plot_ppc`` (ArviZ 0.x) / ``az.plot_ppc_dist`` (1.x) work.
        Chain both to have both: ``post.predictive(m, y).predictive(m, y, prior=True)``.

        Args:
            model: the program the result is of.
            *args, **kwargs: its arguments, as given to ``.run`` (the observed values are
                not read, only their shapes).
            key: PRNG key of the draws (default ``jax.random.key(0)``); the draws use
                ``fold_in(key, "pred")``, so passing the key of the run does not reuse its
                random numbers.
            prior: draw from the prior predictive instead of the posterior predictive.

        Raises:
            UnsupportedModelError: if the program has no observed site.
            InvalidArgumentError: if no site of :attr:`samples` is a latent site of the
                program (posterior predictive of another program).
        """
        from ppl.errors import InvalidArgumentError, UnsupportedModelError
        from ppl.inference.base import check_key
        from ppl.semantics.trace import LATENT, OBSERVED, record

        key = check_key(jax.random.key(0) if key is None else key)
        _, trace, _ = record(model, key, args, kwargs)
        observed = trace.names(OBSERVED)
        if not observed:
            raise UnsupportedModelError(
                "Posterior.predictive: the program has no observe site, so it has nothing "
                "to predict"
            )
        latent = [n for n in trace.names(LATENT) if n in self._samples]
        if not prior and trace.names(LATENT) and not latent:
            raise InvalidArgumentError(
                f"Posterior.predictive: none of this result's sites {sorted(self._samples)} "
                f"is a latent site of the program (its latent sites: "
                f"{trace.names(LATENT)}); pass the program the result is of"
            )
        n = self._total
        # a stream of its own: the run's key (or key(0)) passed again draws nothing the
        # run drew (the particle keys of the engine are derived from the same key)
        keys = jax.random.split(jax.random.fold_in(key, _PREDICTIVE_STREAM), n)
        values = {} if prior else {s: jnp.asarray(self._samples[s]) for s in latent}

        def one(k, v):
            _, tr, _ = record(model, k, args, kwargs, substitutions=v or None,
                              predictive=True)
            return ({s: tr.values[s] for s in observed},
                    {s: tr.values[s] for s in trace.names(LATENT)})

        draws, latents = jax.jit(jax.vmap(one))(keys, values)
        groups = dict(self._predictive)
        if prior:
            groups["prior"] = latents
            groups["prior_predictive"] = draws
        else:
            groups["posterior_predictive"] = draws
        return Posterior(
            self._samples,
            num_chains=self._num_chains,
            log_weights=self._log_weights,
            log_evidence=self._log_evidence,
            sample_stats=self._sample_stats,
            observed_data=self._observed_data or {s: trace.values[s] for s in observed},
            log_likelihood=self._log_likelihood,
            method=self._method,
            info=self._info,
            predictive=groups,
        )

    # ----------------------------------------------------------------------- arviz

    def to_arviz(self, weights: str = "auto", key=None):
        """Convert to the installed ArviZ's result type: an :class:`xarray.DataTree` (one
        child per group) under ArviZ 1.x or with only ``arviz-base`` installed, an
        ``arviz.InferenceData`` under ArviZ 0.x (:func:`ppl.arviz_compat.arviz_major`).
        Both have the same groups, variables, dims and attributes.

        ArviZ's statistics (``az.summary``, ``az.loo``, ``az.plot_*``) treat every draw as
        equally weighted; they never read importance weights. So by default a *weighted*
        result (importance sampling, SMC, ...) is converted after **resampling** to equally
        weighted draws, which those statistics then describe correctly; unweighted results
        (MCMC, exact samplers, SVI...) are converted as they are.

        Groups (each present only when it has content):

        * ``posterior``: every site, dims ``("chain", "draw", f"{site}_dim_0", ...)``
          (scalar sites: ``("chain", "draw")``).
        * ``sample_stats``: the per-draw statistics, same dim convention; when a log
          evidence is present, ``log_evidence`` (0-d, or dims ``("chain",)`` per chain, also
          a dataset attribute). Raw weighted draws (``weights="sample_stats"``) also get
          ``log_weight`` (dims ``("chain", "draw")``) and ``ess`` (0-d, also an attribute).
        * ``observed_data``: the data, dims ``f"{site}_dim_i"``.
        * ``log_likelihood``: pointwise log-likelihoods, dims ``("chain", "draw",
          f"{site}_dim_i"...)``, of the same draws as ``posterior`` (so ``az.loo`` /
          ``az.waic`` are right for resampled draws too).
        * ``posterior_predictive``, ``prior``, ``prior_predictive``: after
          :meth:`predictive` (the posterior predictive at the same draws as ``posterior``).

        Resampled conversions (the default for weighted results, or ``weights="resample"``):
        the ``num_chains * num_draws`` draws are replaced by as many equally weighted draws,
        in **one chain**, chosen by *systematic* resampling (each draw is copied
        ``floor(M w_i)`` or ``ceil(M w_i)`` times: the lowest-variance standard scheme).
        Copies of a draw stay adjacent, so ArviZ's autocorrelation-based ESS sees them as
        correlated; still, the resampled draws carry no more information than the weighted
        ones: take the importance ESS (:attr:`ess`, attribute ``importance_ess``), not
        ArviZ's ``ess_bulk``, as their effective size. Every per-draw array (posterior,
        sample_stats, log_likelihood) is taken at the same rows. ``sample_stats`` also gets
        ``ancestor`` (dims ``("chain", "draw")``: each draw's index among the original,
        chain-major draws) and, for weighted results, ``source_log_weight`` (dims
        ``("source_draw",)``: the original unnormalised log weights), unless a sample stat
        of that name exists; a
        per-chain log evidence is pooled into one (``logsumexp - log num_chains``). Its
        attributes: ``importance_ess`` (:attr:`ess`), ``num_source_draws``,
        ``num_source_chains``, ``resampling``, ``resampling_key``. Every group's attributes
        get ``ppl_weights="resampled"`` and a ``ppl_note`` saying what was done.

        Args:
            weights: ``"auto"`` (default): resample weighted results, keep unweighted ones;
                ``"sample_stats"``: the raw draws, with the log weights in ``sample_stats``
                (ArviZ ignores them: use this to read or reweight the draws yourself);
                ``"resample"``: always resample (for unweighted results this only reorders
                the draws into one chain).
            key: PRNG key of the resampling. Default ``jax.random.key(0)``: the
                conversion is deterministic, the same draws on every call; pass keys to see
                the resampling noise.

        Raises:
            UnknownOptionError: for any other value of ``weights``.
        """
        if weights not in _WEIGHT_MODES:
            raise UnknownOptionError(
                f"Posterior.to_arviz: unknown weights={weights!r}; allowed values are "
                f"{list(_WEIGHT_MODES)}"
            )
        if weights == "resample" or (weights == "auto" and self.is_weighted):
            return self._to_arviz_resampled(key)
        return self._inference_data()

    def _to_arviz_resampled(self, key):
        """:meth:`to_arviz` of the systematically resampled draws, with the provenance."""
        given = key is not None
        idx = _systematic_indices(jax.random.key(0) if key is None else key,
                                  self.weights, self._total)
        post = self._take_draws(idx)
        n, importance_ess = self._total, self.ess
        key_text = "given by the caller" if given else "key(0), the default"
        if self.is_weighted:
            note = (
                f"ppl: the {n} weighted draws (importance ESS {importance_ess:.1f}) were "
                f"resampled to {n} equally weighted draws in one chain (systematic "
                f"resampling, key {key_text}) because ArviZ ignores weights; sample_stats "
                "keeps the original log weights (source_log_weight) and each draw's ancestor; "
                "to_arviz(weights='sample_stats') gives the raw weighted draws"
            )
        else:
            note = (
                f"ppl: the {n} unweighted draws were resampled uniformly into one chain "
                f"(systematic resampling, key {key_text}); each draw's ancestor is in "
                "sample_stats"
            )
        stats = {"ancestor": (("chain", "draw"), np.asarray(idx).reshape(1, n))}
        if self.is_weighted:
            stats["source_log_weight"] = (("source_draw",), np.asarray(self._log_weights))
        stats = {k: v for k, v in stats.items() if k not in self._sample_stats}
        stats_attrs = {
            "importance_ess": importance_ess,
            "num_source_draws": n,
            "num_source_chains": self._num_chains,
            "resampling": "systematic",
            "resampling_key": key_text,
        }
        le = self._log_evidence
        if le is not None and np.shape(le) != ():
            stats_attrs["log_evidence_per_chain"] = np.asarray(le).tolist()
        meta = {"ppl_weights": "resampled", "ppl_note": note}
        return post._inference_data(meta, stats, stats_attrs)

    def _inference_data(self, extra_meta=None, extra_stats=None, stats_attrs=None):
        """The ArviZ object of these draws as they are (see :meth:`to_arviz`); the extras
        go into every group's attributes, ``sample_stats`` and its attributes."""
        c, d = self._num_chains, self._num_draws
        groups = {}
        meta = {"inference_library": "ppl", "ppl_method": self._method}
        if self._log_weights is not None:
            meta["ppl_weights"] = "weighted"
            meta["ppl_note"] = (
                "ppl: weighted draws; their log weights are sample_stats['log_weight'], which "
                "ArviZ's statistics ignore (to_arviz() resamples them by default)"
            )
        meta.update(extra_meta or {})
        if self._samples:
            groups["posterior"] = _per_draw_dataset(self._samples, c, d, meta)

        stats = _per_draw_dataset(self._sample_stats, c, d, meta)
        if self._log_weights is not None:
            lw = np.asarray(self._log_weights).reshape(c, d)
            stats["log_weight"] = (("chain", "draw"), lw)
            ess = self.ess
            stats["ess"] = ((), np.asarray(ess))
            stats.attrs["ess"] = ess
        if self._log_evidence is not None:
            le = np.asarray(self._log_evidence)
            stats["log_evidence"] = ((), le) if le.ndim == 0 else (("chain",), le)
            stats.attrs["log_evidence"] = float(le) if le.ndim == 0 else le.tolist()
        for name, value in (extra_stats or {}).items():
            stats[name] = value
        stats.attrs.update(stats_attrs or {})
        if stats.data_vars:
            groups["sample_stats"] = stats

        if self._observed_data:
            import xarray as xr

            obs = {}
            for name, value in self._observed_data.items():
                arr = np.asarray(value)
                obs[name] = (_dims(name, arr.ndim), arr)
            groups["observed_data"] = xr.Dataset(obs, attrs=meta)
        if self._log_likelihood:
            groups["log_likelihood"] = _per_draw_dataset(self._log_likelihood, c, d, meta)
        if self._predictive.get("posterior_predictive"):
            groups["posterior_predictive"] = _per_draw_dataset(
                self._predictive["posterior_predictive"], c, d, meta)
        for name in ("prior", "prior_predictive"):
            arrays = self._predictive.get(name)
            if arrays:
                n_prior = _leading(next(iter(arrays.values())))
                groups[name] = _per_draw_dataset(arrays, 1, n_prior, meta)
        return build(groups)

    def summary(self, key=None, **kwargs):
        """``summary`` of the installed ArviZ (:data:`ppl.arviz_compat.az`) on
        :meth:`to_arviz`, as a pandas DataFrame.

        Keyword arguments go to that ``summary`` (e.g. ``var_names``, ``kind``; ArviZ 0.x
        also takes ``hdi_prob``, 1.x ``ci_prob``). Weighted results are first resampled to
        equal weights (``to_arviz(key=key)``, key defaulting to ``jax.random.key(0)``)
        because ArviZ's statistics ignore importance weights; their ESS/R-hat columns then describe
        the resampled draws, not the weights (see :attr:`ess` for the importance-sampling
        ESS).
        """
        return az.summary(self.to_arviz(key=key), **kwargs)

    # ----------------------------------------------------------------------- repr

    def __repr__(self) -> str:
        head = (
            f"Posterior(method={self._method!r}, num_chains={self._num_chains}, "
            f"num_draws={self._num_draws}"
        )
        lines = [head + (", weighted" if self.is_weighted else "") + ")"]
        if self._samples:
            width = max(len(k) for k in self._samples)
            for k, v in self._samples.items():
                lines.append(f"  {k:<{width}} : {tuple(np.shape(v)[1:])}")
        extras = []
        if self._log_evidence is not None:
            le = np.asarray(self._log_evidence)
            le_txt = f"{float(le):.4g}" if le.ndim == 0 else np.array2string(le, precision=4)
            extras.append(f"log_evidence={le_txt}")
        if self.is_weighted:
            extras.append(f"ess={self.ess:.1f} of {self._total}")
        if extras:
            lines.append("  " + ", ".join(extras))
        return "\n".join(lines)
