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
    :meth:`Posterior.to_arviz` converts to :class:`arviz.InferenceData` (the ArviZ 0.x API):
    groups ``posterior``, ``sample_stats``, ``observed_data`` and ``log_likelihood``; every
    site gets dims ``("chain", "draw", f"{site}_dim_0", ...)``.

All summaries (:meth:`Posterior.mean`, :meth:`Posterior.var`, :meth:`Posterior.quantile`,
:meth:`Posterior.expectation`) use the weights where they exist. They return JAX arrays.
A ``Posterior`` is a plain Python object (not a pytree); build it outside ``jax.jit``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ppl.errors import NonFiniteWeightError, UnknownOptionError
from ppl.weights import ess, normalise

__all__ = ["Posterior"]

#: Names :meth:`Posterior.to_arviz` writes into the ``sample_stats`` group itself.
_RESERVED_STATS = ("log_weight", "log_evidence", "ess")
#: Allowed values of ``to_arviz(weights=...)``.
_WEIGHT_MODES = ("sample_stats", "resample")


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

    Raises:
        ValueError: if leading axes disagree, are not divisible by ``num_chains``, or a
            per-draw array is 0-d (the message names the site).
        NonFiniteWeightError: if a log weight is NaN or ``+inf``, or all are ``-inf``.
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
        idx = _systematic_indices(key, self.weights, n)

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
        )

    # ----------------------------------------------------------------------- arviz

    def to_arviz(self, weights: str = "sample_stats", key=None):
        """Convert to :class:`arviz.InferenceData` (ArviZ 0.x API).

        Groups (each present only when it has content):

        * ``posterior``: every site, dims ``("chain", "draw", f"{site}_dim_0", ...)``
          (scalar sites: ``("chain", "draw")``).
        * ``sample_stats``: the per-draw statistics, same dim convention. For weighted
          results also ``log_weight`` (dims ``("chain", "draw")``) and ``ess`` (0-d); when
          a log evidence is present, ``log_evidence`` (0-d, or dims ``("chain",)`` per
          chain). ``log_evidence`` and ``ess`` are also stored as dataset attributes.
        * ``observed_data``: the data, dims ``f"{site}_dim_i"``.
        * ``log_likelihood``: pointwise log-likelihoods, dims ``("chain", "draw",
          f"{site}_dim_i"...)`` (so ``az.loo`` / ``az.waic`` work on unweighted results;
          they ignore importance weights, so use ``weights="resample"`` for weighted ones).

        Args:
            weights: ``"sample_stats"`` (default) keeps the draws as they are and stores the
                log weights in ``sample_stats``; ``"resample"`` first converts to equally
                weighted draws with :meth:`resample` (one chain, same total number of
                draws) and stores no ``log_weight``. For unweighted results the two differ
                only in that ``"resample"`` reorders the draws into one chain.
            key: PRNG key for ``weights="resample"``; defaults to ``jax.random.PRNGKey(0)``,
                so the conversion is deterministic unless a key is given.

        Raises:
            UnknownOptionError: for any other value of ``weights``.
        """
        import arviz as az

        if weights not in _WEIGHT_MODES:
            raise UnknownOptionError(
                f"Posterior.to_arviz: unknown weights={weights!r}; allowed values are "
                f"{list(_WEIGHT_MODES)}"
            )
        if weights == "resample":
            post = self.resample(jax.random.PRNGKey(0) if key is None else key)
            return post.to_arviz(weights="sample_stats")

        c, d = self._num_chains, self._num_draws
        groups = {}
        meta = {"inference_library": "ppl", "ppl_method": self._method}
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
        return az.InferenceData(**groups)

    def summary(self, key=None, **kwargs):
        """``arviz.summary`` of :meth:`to_arviz`, as a pandas DataFrame.

        Keyword arguments go to :func:`arviz.summary` (e.g. ``var_names``, ``hdi_prob``,
        ``kind``). Weighted results are first resampled to equal weights
        (``to_arviz(weights="resample", key=key)``, key defaulting to
        ``jax.random.PRNGKey(0)``) because ArviZ's statistics ignore importance weights;
        their ESS/R-hat columns then describe the resampled draws, not the weights (see
        :attr:`ess` for the importance-sampling ESS).
        """
        import arviz as az

        mode = "resample" if self.is_weighted else "sample_stats"
        return az.summary(self.to_arviz(weights=mode, key=key), **kwargs)

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
