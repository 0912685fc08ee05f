"""Checks of inference on the program itself: simulation-based calibration (:func:`sbc`).

Simulation-based calibration (SBC; Talts, Betancourt, Simpson, Vehtari & Gelman 2018,
"Validating Bayesian inference algorithms with simulation-based calibration",
arXiv:1804.06788) rests on the self-consistency of the Bayesian joint distribution:
if ``theta~ ~ p(theta)``, ``y~ ~ p(y | theta~)`` and ``theta_1..theta_L ~ p(theta | y~)``,
then for every scalar function ``f`` the rank statistic

    r = #{l : f(theta_l) < f(theta~)}                       (Talts et al. 2018, Theorem 1)

is uniform on ``{0, ..., L}``. Replace the exact posterior by an inference method's draws
and any departure from uniformity is a defect of the method (or of its settings).
:func:`sbc` runs that experiment for any ppl combinator on any program:

1. draws ``num_simulations`` pairs ``(theta~, y~)`` from the program's prior predictive
   (:class:`ppl.semantics.Sampler` with ``predictive=True``; one ``vmap``-ped, jitted call);
2. runs the combinator on each simulated data set (its ``.run``, compiled once: later
   simulations reuse the compiled run);
3. reduces its result to ``num_draws`` draws (resampling weighted results, thinning
   Markov chains) and ranks every scalar of every latent and deterministic site, and the
   data-dependent test quantity of Modrák, Moon, Kim, Bürkner, Huurre, Faltejsková,
   Gelman & Vehtari (2023, "Simulation-based calibration checking for Bayesian
   computation: the choice of test quantities shapes sensitivity", Bayesian Analysis):
   the log-likelihood ``log p(y~ | theta)`` of the simulated data, at ``theta~`` against
   the posterior draws. The parameter ranks alone cannot see a method that returns the
   prior; the log-likelihood rank can (the true parameter explains its own data better
   than draws that ignore them);
4. tests each rank sample for discrete uniformity with the ECDF test of Säilynoja,
   Bürkner & Vehtari (2022, "Graphical test for discrete uniformity and its
   applications in goodness-of-fit evaluation and multiple sample comparison",
   Statistics and Computing 32:32), whose simultaneous bands also make the plot.

The uniformity test (:func:`ecdf_test`, :func:`ecdf_bands`)
-----------------------------------------------------------
For ``N`` ranks on ``{0..L}`` the ECDF is evaluated at ``K - 1`` interior points
``z_j = c_j / (L + 1)`` (``K = min(L + 1, N)`` equal parts, ``c_j`` integers, so that the
points fall between rank values). Under uniformity the count ``N F(z_j) = #{r < c_j}`` is
Binomial(N, z_j) (Säilynoja et al. 2022, Section 2), and the pointwise two-sided tail
probability of an observed count ``n`` is ``t_j(n) = min(1, 2 min(P[B <= n], P[B >= n]))``.
The test statistic is the smallest of them, ``gamma = min_j t_j(N F(z_j))``: the
pointwise level at which the ECDF would just leave the pointwise binomial bands. Its
p-value ``P[gamma* <= gamma]`` under uniformity is computed *exactly*: the counts
``N F(z_1) <= N F(z_2) <= ...`` form a Markov chain (given ``N F(z_{j-1}) = a``, the next
count adds a Binomial(N - a, (z_j - z_{j-1}) / (1 - z_{j-1})) increment), so the
probability that every count stays inside given intervals is one forward recursion
(the computation Säilynoja et al. use in their optimisation-based adjustment, in place of
their simulation-based one). The simultaneous ``prob`` bands are the pointwise bands at
the largest level ``gamma`` whose exact simultaneous coverage is still ``>= prob``
(found by bisection over the finitely many values ``t_j(n)`` can take). So the p-value,
the bands and the test at any level agree, and nothing in them is random.

Several quantities are tested at once; :meth:`SBCResult.ok` controls the family-wise
error with Holm's step-down correction (Holm 1979): at ``level`` the method passes when
no quantity is rejected, i.e. when every p-value exceeds ``level / Q`` for ``Q``
quantities (the first Holm step, which is Bonferroni's test of the global null).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.primitives import Messenger

from ppl import primitives
from ppl.errors import (
    ArgumentTypeError,
    ConvergenceWarning,
    InvalidArgumentError,
    PPLError,
    ShapeMismatchError,
    UnsupportedModelError,
    check_count,
    check_probability,
)

__all__ = ["LOG_LIKELIHOOD", "ECDFBands", "SBCResult", "ecdf_bands", "ecdf_test", "sbc"]

#: The name of the data-dependent test quantity (Modrák et al. 2023): the log-likelihood
#: of the simulated data, summed over every observed site and entry.
LOG_LIKELIHOOD = "log_likelihood"

#: Two log joints of the same point that differ by more than this (absolute plus relative
#: part) mean the data enter the program other than as observed values (see :func:`sbc`).
_CONSISTENCY_ATOL, _CONSISTENCY_RTOL = 1e-2, 1e-4


# =========================================================================== uniformity


def _cut_points(num_simulations: int, num_draws: int) -> np.ndarray:
    """The integers ``0 < c_1 < ... < c_{K-1} < L + 1`` at which the ECDF is evaluated:
    ``K = min(L + 1, N)`` near-equal parts of the ``L + 1`` rank values (every value
    boundary when ``L + 1 <= N``, as Säilynoja et al. 2022 recommend ``K <= N``)."""
    values = num_draws + 1
    parts = min(values, num_simulations)
    cuts = np.unique(np.round(np.arange(1, parts) * values / parts).astype(np.int64))
    return cuts[(cuts > 0) & (cuts < values)]


@functools.lru_cache(maxsize=32)
def _tail_table(num_simulations: int, num_draws: int):
    """``(cuts, z, t)``: the cut points, ``z_j = c_j / (L + 1)``, and the pointwise
    two-sided tail probabilities ``t[j, n] = min(1, 2 min(P[B_j <= n], P[B_j >= n]))`` of
    every count ``n = 0..N`` under ``B_j ~ Binomial(N, z_j)``."""
    from scipy.special import bdtr, bdtrc

    n_sim = num_simulations
    cuts = _cut_points(num_simulations, num_draws)
    z = cuts / (num_draws + 1.0)
    n = np.arange(n_sim + 1, dtype=np.float64)[None, :]
    zz = z[:, None]
    lower = bdtr(n, n_sim, zz)  # P[B <= n]
    upper = np.where(n >= 1, bdtrc(n - 1, n_sim, zz), 1.0)  # P[B >= n] = P[B > n - 1]
    t = np.minimum(1.0, 2.0 * np.minimum(lower, upper))
    t.setflags(write=False)
    return cuts, z, t


def _log_binom_pmf(k, n, p):
    """log Binomial(n, p) pmf at ``k`` (arrays broadcast; -inf outside ``0..n``)."""
    from scipy.special import gammaln, xlog1py, xlogy

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    inside = (k >= 0) & (k <= n)
    kk, nn = np.where(inside, k, 0.0), np.where(inside, n, 0.0)
    out = (gammaln(nn + 1) - gammaln(kk + 1) - gammaln(nn - kk + 1)
           + xlogy(kk, p) + xlog1py(nn - kk, -p))
    return np.where(inside, out, -np.inf)


def _probability_inside(num_simulations, num_draws, cuts, lower, upper) -> float:
    """``P[lower_j <= N F(z_j) <= upper_j for every j]`` for ``N`` uniform ranks on
    ``{0..L}``: the forward recursion over the Markov chain of the counts (module notes).
    """
    values = num_draws + 1
    prev_cut, prev_low = 0, 0
    prev = np.ones(1)
    for cut, low, high in zip(cuts, lower, upper, strict=True):
        if low > high:
            return 0.0
        q = (cut - prev_cut) / (values - prev_cut)
        a = np.arange(prev_low, prev_low + prev.size)[:, None]
        b = np.arange(low, high + 1)[None, :]
        prev = prev @ np.exp(_log_binom_pmf(b - a, num_simulations - a, q))
        prev_cut, prev_low = cut, low
        if not prev.any():
            return 0.0
    return float(min(1.0, prev.sum()))


def _intervals(t, inside):
    """Per row of ``t``, the first and last count where ``inside(t)`` holds (the set is an
    interval: ``t`` rises then falls in ``n``); an empty row gives ``(1, 0)``."""
    mask = inside(t)
    any_row = mask.any(axis=1)
    low = np.where(any_row, mask.argmax(axis=1), 1)
    high = np.where(any_row, t.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), 0)
    return low, high


def _check_ranks(ranks, num_draws) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size < 1:
        raise ShapeMismatchError(f"ranks must be a 1-d array of at least one rank, got shape "
                                 f"{r.shape}")
    if not np.issubdtype(r.dtype, np.integer):
        if not np.all(np.isfinite(r)) or np.any(r != np.round(r)):
            raise InvalidArgumentError("ranks must be integers in 0..num_draws")
        r = r.astype(np.int64)
    if r.min() < 0 or r.max() > num_draws:
        raise InvalidArgumentError(
            f"ranks must lie in 0..num_draws={num_draws}, got values in {r.min()}..{r.max()}"
        )
    return r


def ecdf_test(ranks, num_draws: int) -> tuple[float, float]:
    """The ECDF uniformity test of ranks on ``{0, ..., num_draws}`` (Säilynoja, Bürkner &
    Vehtari 2022; see the module notes): ``(p_value, gamma)``.

    ``gamma`` is the smallest pointwise two-sided binomial tail probability of the ECDF at
    the evaluation points, and ``p_value = P[gamma* <= gamma]`` for uniform ranks, computed
    exactly (no simulation). Small p-values mean the ranks are not uniform.
    """
    num_draws = check_count("num_draws", num_draws)
    r = _check_ranks(ranks, num_draws)
    cuts, _, t = _tail_table(r.size, num_draws)
    if cuts.size == 0:
        return 1.0, 1.0
    counts = np.searchsorted(np.sort(r), cuts, side="left")  # #{r < c_j}
    gamma = float(np.min(t[np.arange(cuts.size), counts]))
    low, high = _intervals(t, lambda x: x > gamma)
    inside = _probability_inside(r.size, num_draws, cuts, low, high)
    return float(min(1.0, max(0.0, 1.0 - inside))), gamma


class ECDFBands:
    """Simultaneous ECDF bands for ``num_simulations`` uniform ranks on ``{0..num_draws}``.

    Attributes: ``z`` (the evaluation points, ``c_j / (num_draws + 1)``), ``lower`` and
    ``upper`` (the band of the ECDF at ``z``), ``gamma`` (the pointwise level of the
    band's binomial intervals), ``prob`` (the requested simultaneous coverage) and
    ``coverage`` (the exact simultaneous coverage, ``>= prob``). The ECDF-difference band
    of the plots is ``lower - z``, ``upper - z``.
    """

    def __init__(self, z, lower, upper, gamma, prob, coverage, num_simulations, num_draws):
        self.z, self.lower, self.upper = z, lower, upper
        self.gamma, self.prob, self.coverage = gamma, prob, coverage
        self.num_simulations, self.num_draws = num_simulations, num_draws

    def contains(self, ranks) -> bool:
        """Whether the ECDF of ``ranks`` lies inside the band at every point."""
        r = _check_ranks(ranks, self.num_draws)
        if r.size != self.num_simulations:
            raise ShapeMismatchError(
                f"these bands are for {self.num_simulations} ranks, got {r.size}"
            )
        ecdf = np.searchsorted(np.sort(r), self.z * (self.num_draws + 1) - 0.5) / r.size
        return bool(np.all((ecdf >= self.lower - 1e-12) & (ecdf <= self.upper + 1e-12)))

    def __repr__(self):
        return (f"ECDFBands(num_simulations={self.num_simulations}, num_draws="
                f"{self.num_draws}, prob={self.prob}, coverage={self.coverage:.4f}, "
                f"pointwise gamma={self.gamma:.3g}, points={self.z.size})")


@functools.lru_cache(maxsize=32)
def _bands(num_simulations: int, num_draws: int, prob: float) -> ECDFBands:
    cuts, z, t = _tail_table(num_simulations, num_draws)
    if cuts.size == 0:
        empty = np.zeros(0)
        return ECDFBands(z, empty, empty, 1.0, prob, 1.0, num_simulations, num_draws)
    candidates = np.unique(t)

    def coverage(gamma):
        low, high = _intervals(t, lambda x: x >= gamma)
        return _probability_inside(num_simulations, num_draws, cuts, low, high), low, high

    # coverage(gamma) falls as gamma grows; the smallest candidate gives coverage 1
    lo, hi = 0, candidates.size - 1
    if coverage(candidates[hi])[0] >= prob:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if coverage(candidates[mid])[0] >= prob:
            lo = mid
        else:
            hi = mid
    gamma = float(candidates[lo])
    cov, low, high = coverage(gamma)
    return ECDFBands(z, low / num_simulations, high / num_simulations, gamma, prob, cov,
                     num_simulations, num_draws)


def ecdf_bands(num_simulations: int, num_draws: int, prob: float = 0.95) -> ECDFBands:
    """Simultaneous ``prob`` bands for the ECDF of ``num_simulations`` uniform ranks on
    ``{0..num_draws}`` (Säilynoja, Bürkner & Vehtari 2022): the pointwise binomial
    intervals at the largest level ``gamma`` whose exact simultaneous coverage (the
    forward recursion of the module notes) is at least ``prob``. Deterministic."""
    num_simulations = check_count("num_simulations", num_simulations)
    num_draws = check_count("num_draws", num_draws)
    prob = check_probability("prob", prob)
    return _bands(num_simulations, num_draws, prob)


def _holm(pvalues: Mapping[str, float], level: float) -> list[str]:
    """The quantities Holm's step-down procedure rejects at family-wise ``level``."""
    order = sorted(pvalues, key=lambda q: pvalues[q])
    m = len(order)
    rejected = []
    for i, name in enumerate(order):
        if pvalues[name] > level / (m - i):
            break
        rejected.append(name)
    return rejected


# =========================================================================== the result


def _labels(name: str, shape: tuple) -> list[str]:
    """ArviZ's labels of a site's scalars: ``name``, ``name[2]``, ``name[1, 3]``."""
    if not shape:
        return [name]
    return [f"{name}[{', '.join(map(str, i))}]" for i in np.ndindex(*shape)]


class SBCResult:
    """The ranks of a simulation-based calibration run (:func:`sbc`) and their tests.

    Attributes:
        ranks: dict quantity -> int array ``(num_simulations,)`` of ranks in
            ``0..num_draws``. Quantities are every scalar of the ranked sites, labelled as
            ArviZ does (``"mu"``, ``"theta[2]"``, ``"L[1, 0]"``), and
            :data:`LOG_LIKELIHOOD`.
        num_draws: the number ``L`` of posterior draws each rank is taken among.
        num_simulations: the number of simulations ``N``.
        prior: dict quantity -> the simulated (true) values ``(num_simulations,)``.
        ess: per simulation, the smallest bulk ESS of the chains' latent scalars before
            thinning (MCMC methods; NaN otherwise).
        seconds: per simulation, the wall-clock seconds of the combinator's run and the
            ranking (the first includes compilation).
        method: the combinator's method name (``Posterior.method``).
        sites: dict ranked site -> its shape (for :meth:`to_arviz`).
        data_mode: how :func:`sbc` passed the simulated data to the program:
            ``"arguments"``, ``"handler"`` or ``"data_args"``.
    """

    def __init__(self, ranks: Mapping, num_draws: int, *, prior=None, ess=None, seconds=None,
                 method: str = "", sites=None, data_mode: str = ""):
        self.num_draws = check_count("num_draws", num_draws)
        if not isinstance(ranks, Mapping) or not ranks:
            raise ArgumentTypeError("ranks must be a non-empty dict quantity -> ranks")
        self.ranks = {str(k): _check_ranks(v, self.num_draws) for k, v in ranks.items()}
        sizes = {v.size for v in self.ranks.values()}
        if len(sizes) != 1:
            raise ShapeMismatchError(f"every quantity needs as many ranks; got sizes {sizes}")
        (self.num_simulations,) = sizes
        self.prior = {k: np.asarray(v) for k, v in (prior or {}).items()}
        nan = np.full(self.num_simulations, np.nan)
        self.ess = nan if ess is None else np.asarray(ess, dtype=np.float64)
        self.seconds = nan if seconds is None else np.asarray(seconds, dtype=np.float64)
        self.method = str(method)
        self.sites = dict(sites) if sites is not None else None
        self.data_mode = str(data_mode)
        self._tests = {}

    # ------------------------------------------------------------------------- tests

    def _test(self, quantity):
        if quantity not in self._tests:
            self._tests[quantity] = ecdf_test(self.ranks[quantity], self.num_draws)
        return self._tests[quantity]

    @property
    def pvalues(self) -> dict:
        """dict quantity -> p-value of the ECDF uniformity test of its ranks
        (:func:`ecdf_test`; Säilynoja et al. 2022), one test per quantity, uncorrected."""
        return {q: self._test(q)[0] for q in self.ranks}

    @property
    def gammas(self) -> dict:
        """dict quantity -> the test statistic: the smallest pointwise binomial tail
        probability of its ECDF (:func:`ecdf_test`)."""
        return {q: self._test(q)[1] for q in self.ranks}

    def rejected(self, level: float = 0.01) -> list[str]:
        """The quantities whose ranks are not uniform at family-wise error ``level``:
        Holm's step-down correction over the ``Q`` quantities (reject the smallest p-value
        if it is ``<= level / Q``, then the next against ``level / (Q - 1)``, ...)."""
        level = check_probability("level", level)
        return _holm(self.pvalues, level)

    def ok(self, level: float = 0.01) -> bool:
        """True when no quantity is rejected at family-wise error ``level`` (Holm, equal
        here to Bonferroni: every p-value ``> level / Q`` for ``Q`` quantities). A correct
        method fails with probability at most ``level`` (the quantities are dependent, so
        somewhat less)."""
        return not self.rejected(level)

    def bands(self, prob: float = 0.95) -> ECDFBands:
        """Simultaneous ``prob`` ECDF bands for these ``num_simulations`` ranks
        (:func:`ecdf_bands`; the same for every quantity)."""
        return ecdf_bands(self.num_simulations, self.num_draws, prob)

    def ecdf(self, quantity: str) -> tuple[np.ndarray, np.ndarray]:
        """``(z, F(z))``: the ECDF of the quantity's ranks scaled to ``[0, 1]``
        (``r / (num_draws + 1)``), at every rank boundary ``z = c / (num_draws + 1)``."""
        if quantity not in self.ranks:
            raise InvalidArgumentError(
                f"unknown quantity {quantity!r}; the quantities are {list(self.ranks)}"
            )
        values = self.num_draws + 1
        counts = np.bincount(self.ranks[quantity], minlength=values)
        z = np.arange(values + 1) / values
        return z, np.concatenate([[0.0], np.cumsum(counts) / self.num_simulations])

    # ------------------------------------------------------------------------- output

    def plot(self, quantities=None, prob: float = 0.95, level: float = 0.01, ncols: int = 4,
             figsize=None, fig=None):
        """The ECDF difference ``F(z) - z`` of each quantity's scaled ranks with the
        simultaneous ``prob`` band (Säilynoja et al. 2022, their ECDF-difference plot),
        one panel per quantity (``quantities``: a list of names; default all); panels of
        quantities rejected at ``level`` (Holm) are drawn in red. Returns a new
        :class:`matplotlib.figure.Figure` (not shown; save it with ``fig.savefig(path)``),
        or draws into ``fig`` (a Figure or SubFigure, e.g. one of
        ``Figure.subfigures(...)``, to put several results in one figure) and returns it."""
        from matplotlib.figure import Figure, SubFigure

        names = list(self.ranks) if quantities is None else list(quantities)
        unknown = [q for q in names if q not in self.ranks]
        if unknown or not names:
            raise InvalidArgumentError(
                f"quantities: unknown {unknown or names}; the quantities are {list(self.ranks)}"
            )
        ncols = check_count("ncols", ncols)
        band = self.bands(prob)
        rejected = set(self.rejected(level))
        pvalues = self.pvalues
        ncols = min(ncols, len(names))
        nrows = math.ceil(len(names) / ncols)
        if fig is None:
            fig = Figure(figsize=figsize or (3.0 * ncols, 2.4 * nrows), layout="constrained")
        elif not isinstance(fig, (Figure, SubFigure)):
            raise ArgumentTypeError(
                f"fig must be a matplotlib Figure or SubFigure, got {type(fig).__name__}"
            )
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
        zb = np.concatenate([[0.0], band.z, [1.0]])
        lower = np.concatenate([[0.0], band.lower - band.z, [0.0]])
        upper = np.concatenate([[0.0], band.upper - band.z, [0.0]])
        for ax, name in zip(axes.flat, names, strict=False):
            z, f = self.ecdf(name)
            color = "tab:red" if name in rejected else "tab:blue"
            ax.fill_between(zb, lower, upper, color="0.85", step=None, lw=0)
            ax.step(z, f - z, where="post", color=color, lw=1.2)
            ax.axhline(0.0, color="0.4", lw=0.6)
            ax.set_title(f"{name}  (p = {pvalues[name]:.2g})", fontsize=9, color=color)
            ax.tick_params(labelsize=7)
        for ax in axes.flat[len(names):]:
            ax.set_axis_off()
        for ax in axes[-1]:
            ax.set_xlabel("fractional rank", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("ECDF difference", fontsize=8)
        fig.suptitle(
            f"SBC of {self.method or 'inference'}: {self.num_simulations} simulations, "
            f"{self.num_draws} draws; {prob:.0%} simultaneous bands", fontsize=10,
        )
        return fig

    def to_arviz(self):
        """The ranks as ArviZ data (:func:`ppl.arviz_compat.build`: an ``xarray.DataTree``
        under ArviZ 1.x, an ``InferenceData`` under 0.x).

        Group ``posterior`` holds the *ranks*, one chain whose draws are the simulations:
        each ranked site with its shape (dims ``("chain", "draw", f"{site}_dim_0", ...)``)
        and ``log_likelihood`` (the data-dependent quantity), so ArviZ's plots of a
        posterior (``plot_dist``, ``plot_ecdf``/``plot_rank``...) show the rank
        histograms; group ``prior`` holds the simulated true values in the same layout.
        Attributes: ``sbc_num_draws`` (ranks lie in ``0..sbc_num_draws``), the p-values
        (``sbc_pvalues``, a dict as text), ``ppl_method`` and a note.
        """
        import xarray as xr

        from ppl.arviz_compat import build

        n = self.num_simulations
        sites = self.sites
        if sites is None:  # ranks made by hand: one scalar variable per quantity
            sites = {q: () for q in self.ranks}

        def dataset(source, attrs):
            data = {}
            for site, shape in sites.items():
                labels = _labels(site, tuple(shape))
                if not all(q in source for q in labels):
                    continue
                arr = np.stack([np.asarray(source[q]) for q in labels], axis=-1)
                arr = arr.reshape((1, n) + tuple(shape))
                dims = ["chain", "draw"] + [f"{site}_dim_{i}" for i in range(len(shape))]
                data[site] = (dims, arr)
            if LOG_LIKELIHOOD in source and LOG_LIKELIHOOD not in data:
                data[LOG_LIKELIHOOD] = (["chain", "draw"],
                                        np.asarray(source[LOG_LIKELIHOOD]).reshape(1, n))
            coords = {"chain": [0], "draw": np.arange(n)}
            return xr.Dataset(data, coords=coords, attrs=attrs)

        attrs = {
            "inference_library": "ppl",
            "ppl_method": self.method,
            "sbc_num_draws": self.num_draws,
            "sbc_num_simulations": n,
            "sbc_pvalues": repr({q: round(p, 6) for q, p in self.pvalues.items()}),
            "ppl_note": (
                "ppl.check.sbc: 'posterior' holds SBC ranks (one chain, one draw per "
                f"simulation; uniform on 0..{self.num_draws} for a calibrated method), "
                "'prior' the simulated true values"
            ),
        }
        groups = {"posterior": dataset(self.ranks, attrs)}
        if self.prior:
            groups["prior"] = dataset(self.prior, attrs)
        return build(groups)

    def summary(self, level: float = 0.01) -> list[tuple]:
        """Rows ``(quantity, p_value, gamma, rejected)`` of the table :meth:`__repr__`
        prints (rejection by Holm at ``level``)."""
        rejected = set(self.rejected(level))
        return [(q, self.pvalues[q], self.gammas[q], q in rejected) for q in self.ranks]

    def __repr__(self, level: float = 0.01, max_rows: int = 40):
        rows = self.summary(level)
        head = (f"SBCResult(method={self.method!r}, num_simulations={self.num_simulations}, "
                f"num_draws={self.num_draws})")
        width = max(len("quantity"), *(len(r[0]) for r in rows))
        lines = [head, f"  {'quantity':<{width}}  {'p-value':>9}  {'gamma':>9}"]
        shown = sorted(rows, key=lambda r: r[1])[:max_rows] if len(rows) > max_rows else rows
        for q, p, g, bad in shown:
            lines.append(f"  {q:<{width}}  {p:9.4f}  {g:9.3g}" + ("  REJECTED" if bad else ""))
        if len(rows) > max_rows:
            lines.append(f"  ... {len(rows) - max_rows} more (the smallest p-values shown)")
        rejected = [r[0] for r in rows if r[3]]
        verdict = ("calibrated: no quantity rejected" if not rejected else
                   f"NOT calibrated: {len(rejected)} quantit{'y' if len(rejected) == 1 else 'ies'}"
                   " rejected")
        lines.append(f"  ECDF uniformity test (Säilynoja et al. 2022), Holm over {len(rows)} "
                     f"quantities at level {level}: {verdict}")
        ess = self.ess[np.isfinite(self.ess)]
        if ess.size:
            lines.append(f"  bulk ESS before thinning: min {ess.min():.0f}, median "
                         f"{np.median(ess):.0f}")
        if np.all(np.isfinite(self.seconds)) and self.num_simulations > 1:
            lines.append(f"  time: first simulation {self.seconds[0]:.2f} s (compiles), then "
                         f"{np.mean(self.seconds[1:]) * 1e3:.1f} ms per simulation")
        return "\n".join(lines)


# =========================================================================== conditioning


class _Resimulate(Messenger):
    """Replace the data of the program's ``observe`` sites by simulated values
    (``simulated[site]``; inside a markov step its slice at the step's index)."""

    def __init__(self, fn, simulated, in_step):
        self.simulated = simulated
        self.in_step = in_step
        super().__init__(fn)

    def process_message(self, msg):
        from ppl.semantics.trace import OBSERVED, site_kind

        if (msg["type"] != "sample" or not msg["is_observed"]
                or msg["name"] not in self.simulated or site_kind(msg) != OBSERVED):
            return
        if not self.in_step and primitives.in_markov_step(msg):
            return  # a step's site, stacked by NumPyro's scan: set inside the step already
        value = self.simulated[msg["name"]]
        if self.in_step:
            t = primitives.current_step()
            if t is None:
                raise UnsupportedModelError(
                    f"sbc: the markov step's site '{msg['name']}' ran without a step index; "
                    "pass the data through data_args= instead"
                )
            value = jnp.asarray(value)[t]
        if jnp.shape(value) != jnp.shape(msg["value"]):
            raise ShapeMismatchError(
                f"sbc: the simulated data of site '{msg['name']}' have shape "
                f"{jnp.shape(value)} but the program observes shape {jnp.shape(msg['value'])}"
            )
        msg["value"] = value


@contextlib.contextmanager
def _suspended(interceptor):
    """Take ``interceptor`` off the markov interceptors within the block."""
    stack = primitives._MARKOV_INTERCEPTORS
    index = max(i for i, f in enumerate(stack) if f is interceptor)
    stack.pop(index)
    try:
        yield
    finally:
        stack.insert(index, interceptor)


def _conditioned_program(model):
    """``program(simulated, *args, **kwargs)``: ``model(*args, **kwargs)`` with the data of
    its observed sites replaced by ``simulated`` (site -> value), in every interpretation:
    the global sites through a handler around the program, a markov step's sites through
    the same handler around the step (the markov call is intercepted and re-issued with
    the wrapped step, so NumPyro's ``scan`` and the step-by-step readings of
    :class:`ppl.semantics.Sequential` both run it)."""

    def sbc_conditioned(simulated, *args, **kwargs):
        def interceptor(step, init, xs, num_steps):
            @functools.wraps(step)
            def resimulated_step(carry, x):
                return _Resimulate(step, simulated, in_step=True)(carry, x)

            with _suspended(interceptor):
                return primitives.markov(resimulated_step, init, xs=xs, length=num_steps)

        with primitives.intercept_markov(interceptor):
            return _Resimulate(model, simulated, in_step=False)(*args, **kwargs)

    sbc_conditioned.__qualname__ = f"sbc_conditioned({getattr(model, '__qualname__', model)})"
    return sbc_conditioned


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray))


def _match_arguments(args, kwargs, observed_values: Mapping):
    """site -> index of the array leaf of ``(args, kwargs)`` that *is* its data (same
    shape, same values; a unique match each way), or None when some site has none."""
    leaves, _ = jax.tree.flatten((args, kwargs))
    matches = {}
    for name, value in observed_values.items():
        value = np.asarray(value)
        found = []
        for i, leaf in enumerate(leaves):
            if not _is_array(leaf) or np.shape(leaf) != value.shape:
                continue
            try:
                as_value = np.asarray(jnp.asarray(leaf)).astype(value.dtype)
            except (TypeError, ValueError):
                continue
            if np.array_equal(as_value, value, equal_nan=True):
                found.append(i)
        if len(found) != 1:
            return None
        matches[name] = found[0]
    if len(set(matches.values())) != len(matches):
        return None
    return matches


def _replace_leaves(matches):
    """``(simulated, args, kwargs) -> (args, kwargs)`` with the matched array leaves
    replaced by the simulated data (in the leaves' dtypes)."""

    def build(simulated, args, kwargs):
        leaves, treedef = jax.tree.flatten((args, kwargs))
        for name, i in matches.items():
            leaves[i] = jnp.asarray(simulated[name], dtype=jnp.result_type(leaves[i]))
        return jax.tree.unflatten(treedef, leaves)

    return build


def _prepend(simulated, args, kwargs):
    """The handler-wrapped program's arguments: ``(simulated, *args), kwargs``."""
    return (dict(simulated), *args), dict(kwargs)


def _user_builder(data_args):
    def build(simulated, args, kwargs):
        built = data_args(dict(simulated))
        if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[1], Mapping)):
            raise ArgumentTypeError(
                "sbc: data_args must return a pair (args, kwargs) (a tuple and a dict), got "
                f"{type(built).__name__}"
            )
        return tuple(built[0]), dict(built[1])

    return build


#: The last few handler-wrapped programs (one per model), so that repeated checks of a
#: model reuse the combinator's compiled run, and the jitted prior draws and replays.
_PROGRAMS: dict = {}
_KERNELS: dict = {}
_MAX_CACHED = 16


def _remember(cache: dict, key, make):
    """``cache[key]``, made by ``make()`` on a miss (the last :data:`_MAX_CACHED` kept;
    an unhashable key is not cached)."""
    try:
        if key in cache:
            cache[key] = cache.pop(key)  # most recent last
            return cache[key]
    except TypeError:
        return make()
    value = cache[key] = make()
    while len(cache) > _MAX_CACHED:
        cache.pop(next(iter(cache)))
    return value


class _Kernels:
    """The two jitted functions of a check, compiled once per model, way of passing the
    data and argument structure: the prior-predictive draws (vmapped over simulations)
    and the replay of the program at given latent values (vmapped over draws), which
    gives the log-likelihood of the simulated data, the log joint and the deterministic
    sites. Array arguments are traced, the other leaves are constants; with
    ``concrete=True`` (a program that needs its data concrete) every argument is a
    constant."""

    def __init__(self, model, program, build, wanted, deterministic, treedef, is_array,
                 static, concrete):
        from ppl.semantics.trace import LATENT, OBSERVED, record

        def arguments(arrays):
            it = iter(arrays)
            full = [next(it) if a else c for a, c in zip(is_array, static, strict=True)]
            return jax.tree.unflatten(treedef, full)

        def simulate(k, arrays):
            a, kw = arguments(arrays)
            _, trace, _ = record(model, k, a, kw, predictive=True)
            log_joint = trace.log_prob_sum(LATENT, OBSERVED)  # observed sites are drawn
            return {n: trace.values[n] for n in wanted}, log_joint

        def replay(values, simulated, arrays):
            a, kw = build(simulated, *arguments(arrays))
            _, trace, _ = record(program, jax.random.PRNGKey(0), a, kw, substitutions=values)
            return (trace.log_prob_sum(OBSERVED), trace.log_joint,
                    {n: trace.values[n] for n in deterministic})

        self.concrete = concrete
        self.simulate = jax.jit(jax.vmap(simulate, in_axes=(0, None)))
        self.replay = jax.jit(jax.vmap(replay, in_axes=(0, None, None)))


_CONCRETIZATION = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


# =========================================================================== sbc


def _check_key(key):
    """``key`` as a typed key (any implementation; see
    :func:`ppl.inference.base.check_key`), or an error naming ``key``."""
    from ppl.inference.base import check_key

    try:
        return check_key(key)
    except ArgumentTypeError as err:
        raise ArgumentTypeError(f"sbc: key: {err}") from None


class _Structure:
    """The program's sites from one run on the given data: kinds, names and shapes."""

    def __init__(self, model, args, kwargs):
        from ppl.semantics.trace import (
            DETERMINISTIC,
            FACTOR,
            LATENT,
            OBSERVED,
            PARAM,
            record,
        )

        # one compiled run (compiling once is cheaper than running the program eagerly,
        # op by op); a program that needs its data concrete runs eagerly
        leaves, treedef = jax.tree.flatten((args, kwargs))
        is_array = [_is_array(leaf) for leaf in leaves]

        def run(arrays):
            it = iter(arrays)
            a, kw = jax.tree.unflatten(
                treedef, [next(it) if flag else leaf for flag, leaf in zip(is_array, leaves,
                                                                          strict=True)])
            return record(model, jax.random.PRNGKey(0), a, kw)[1]

        try:
            trace = jax.jit(run)([leaf for leaf, flag in zip(leaves, is_array, strict=True)
                                  if flag])
        except _CONCRETIZATION:
            trace = record(model, jax.random.PRNGKey(0), args, kwargs)[1]
        self.latent = trace.names(LATENT)
        self.deterministic = trace.names(DETERMINISTIC)
        self.observed = trace.names(OBSERVED)
        factor, param = trace.names(FACTOR), trace.names(PARAM)
        if factor:
            raise UnsupportedModelError(
                f"sbc: the program has factor site(s) {factor}; simulation-based calibration "
                "needs exact draws from the joint p(theta, y), and prior-predictive simulation "
                "ignores factor terms (they reweight the joint). Write them as observe sites "
                "of a distribution, or check the method on a program without them"
            )
        if param:
            raise UnsupportedModelError(
                f"sbc: the program has learnable parameter site(s) {param} (ppl.param): they "
                "have no prior to draw the true values from; make them latent sample sites"
            )
        if not self.latent:
            raise UnsupportedModelError(
                "sbc: the program has no latent sample sites: there is nothing whose "
                "posterior could be calibrated"
            )
        if not self.observed:
            raise UnsupportedModelError(
                "sbc: the program has no observe sites: SBC simulates data and conditions "
                "on them, so the program must observe something"
            )
        self.shapes = {n: tuple(jnp.shape(trace.values[n])) for n in trace.names()}
        self.data = {n: trace.values[n] for n in self.observed}


def _ranked_sites(structure: _Structure, sites) -> list[str]:
    if sites is None:
        return structure.latent + structure.deterministic
    if isinstance(sites, str):
        sites = [sites]
    try:
        sites = list(sites)
    except TypeError:
        raise ArgumentTypeError(f"sites must be a list of site names, got {sites!r}") from None
    allowed = structure.latent + structure.deterministic
    unknown = [s for s in sites if s not in allowed]
    if unknown or not sites:
        raise InvalidArgumentError(
            f"sites: {unknown or 'an empty list'} {'are' if unknown else 'is'} not latent or "
            f"deterministic sites of the program; choose among {allowed}"
        )
    return sites


def _thin(post, num_draws, key, latent, mcmc_methods):
    """The posterior reduced to ``num_draws`` draws of the latent sites, and the chains'
    smallest bulk ESS (NaN unless an MCMC method): weighted results are resampled
    (systematic), unweighted ones thinned to ``num_draws`` evenly spaced draws of the
    chain-major draws (for MCMC: every ``S / num_draws``-th draw of each chain)."""
    from ppl.posterior import Posterior, mcmc_diagnostics

    missing = [n for n in latent if n not in post.samples]
    if missing:
        raise UnsupportedModelError(
            f"sbc: the result of {post.method or 'the method'} has no draws of latent "
            f"site(s) {missing}; SBC needs every latent site (for infer.nuts / infer.hmc "
            "with discrete sites keep recover_discrete=True)"
        )
    ess = np.nan
    if post.is_weighted:
        draws = post.resample(key, num_draws).samples
        return {n: np.asarray(draws[n]) for n in latent}, ess
    total = post.num_chains * post.num_draws
    if total < num_draws:
        raise InvalidArgumentError(
            f"sbc: num_draws={num_draws} but {post.method or 'the method'} returns only "
            f"{total} draws per run; lower num_draws or ask the method for more draws"
        )
    samples = {n: np.asarray(post.samples[n]) for n in latent}
    if post.method in mcmc_methods and post.num_draws >= 4:
        chains = Posterior(samples, num_chains=post.num_chains)
        values = [np.ravel(v) for v in mcmc_diagnostics(chains)["ess_bulk"].values()]
        values = np.concatenate(values) if values else np.zeros(0)
        values = values[np.isfinite(values)]
        ess = float(values.min()) if values.size else np.nan
    idx = (np.arange(num_draws) * total) // num_draws
    return {n: v[idx] for n, v in samples.items()}, ess


def _count_below(prior, draws):
    """Per scalar: ``#{draws < prior}`` and ``#{draws == prior}`` (draws: leading axis L)."""
    prior = np.ravel(prior)
    flat = np.reshape(draws, (draws.shape[0], -1))
    return (flat < prior).sum(axis=0), (flat == prior).sum(axis=0)


def _progress(iterable, total, enable, desc):
    if not enable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc)


def sbc(model, inference, *args, num_simulations: int = 200, num_draws: int = 100,
        key=None, progress_bar: bool = True, sites=None, data_args=None,
        **kwargs) -> SBCResult:
    """Simulation-based calibration of ``inference`` on ``model`` (Talts et al. 2018).

    Call it as ``inference.run`` is called: ``sbc(model, infer.nuts(500, 500), y, sigma,
    key=key)`` checks ``infer.nuts(500, 500).run(key, model, y, sigma)``. ``args`` and
    ``kwargs`` are the program's arguments *with* the observed data (their values only
    fix the data's shapes and the covariates); each simulation replaces the data by a
    draw from the prior predictive. Returns an :class:`SBCResult` (ranks, p-values,
    ``.ok()``, ``.bands()``, ``.plot()``, ``.to_arviz()``).

    How the simulated data reach the program (so that the combinator's compiled run is
    reused: one compilation for all simulations):

    * when every observed site's data is one of the array arguments as given (``y`` in
      ``observe("y", d, y)``, or ``ys`` in ``markov(step, init, xs=ys)`` with ``observe("y",
      d, y)`` in the step), that argument is replaced by the simulated data; proposals and
      guides that take the program's arguments then see the simulated data too;
    * otherwise (data transformed or sliced before ``observe``) the program is wrapped in a
      handler that sets each ``observe`` site's value to the simulated one (inside
      ``markov`` steps too), and the combinator runs the wrapped program on
      ``(simulated, *args)``. A proposal or guide program would then receive that extra
      first argument: pass ``data_args`` instead;
    * ``data_args``: a function ``simulated -> (args, kwargs)`` (``simulated``: dict
      observed site -> simulated data) that builds the program's arguments yourself.

    Whichever way, each simulation checks that the program, run on the arguments built
    from the simulated data, gives the simulated point the log joint density the
    simulation had; otherwise the data enter the program other than as observed values
    (a data-dependent prior, data used as covariates) and an
    :class:`~ppl.errors.UnsupportedModelError` says so.

    What is ranked (Talts et al. 2018, Algorithm 1): every scalar of every latent and
    deterministic site (``sites=[names]`` to choose), labelled ``"mu"``, ``"theta[2]"``;
    and ``"log_likelihood"``, the log density of the simulated data, summed over every
    observed site, at the true parameters against the posterior draws (the
    data-dependent test quantity of Modrák et al. 2023, which detects, e.g., a method that
    ignores the data). A rank is ``#{draws < true value}``, ties broken uniformly at
    random (discrete sites), so it is uniform on ``0..num_draws`` for exact inference.

    How a result becomes ``num_draws`` draws:

    * weighted results (importance sampling, SMC): systematic resampling of
      ``num_draws`` draws (``Posterior.resample``);
    * Markov chains (:data:`ppl.posterior.MCMC_METHODS`) and every other unweighted
      result: ``num_draws`` evenly spaced draws of the ``S`` chain-major draws (every
      ``S / num_draws``-th draw of each chain). For the thinned draws to be nearly
      independent (Talts et al. 2018, Section 5.1: autocorrelated draws give
      non-uniform ranks even for a correct sampler) the chains' bulk ESS must be at
      least ``num_draws``: it is computed per simulation (the smallest over the latent
      scalars, :func:`ppl.posterior.mcmc_diagnostics`), kept in ``result.ess``, and a
      :class:`~ppl.errors.ConvergenceWarning` says when it fell short (then ask for more
      ``num_samples``, or rank fewer ``num_draws``).

    Warnings the combinator raises during the simulations are collected and given once
    each, with the number of simulations that raised them. An error in a simulation is
    raised with a note naming the simulation.

    Args:
        model: the program.
        inference: a configured combinator (anything with ``.run(key, model, *args,
            **kwargs)`` returning a :class:`~ppl.Posterior`).
        *args, **kwargs: the program's arguments, as for ``.run`` (the names of sbc's own
            keyword arguments below cannot be passed on to the program: use
            ``data_args`` for a program with such an argument).
        num_simulations: simulations ``N`` (the number of ranks per quantity).
        num_draws: posterior draws ``L`` each rank is taken among (ranks in ``0..L``);
            every run must return at least ``L`` draws (or be weighted).
        key: a ``jax.random`` key (required): prior draws, runs, resampling and ties.
        progress_bar: a tqdm bar over the simulations.
        sites: the latent/deterministic sites to rank (default: all).
        data_args: ``simulated -> (args, kwargs)``, see above.

    Raises:
        ArgumentTypeError, InvalidArgumentError: bad arguments (named).
        UnsupportedModelError: a program without latent or observe sites, with factor or
            param sites, or one whose data are not only observed values.

    Cost: one compilation of the combinator's run (the first simulation), then one call
    of the compiled run per simulation (a Python loop: combinators are not pure functions
    that could be vmapped over simulations), plus one jitted replay per simulation for the
    log-likelihood. A program that needs its data as concrete values (NumPyro-style
    ``int(np.max(y))``) is compiled once per simulation by the combinators.
    """
    from ppl.posterior import MCMC_METHODS

    if not callable(model):
        raise ArgumentTypeError(f"sbc: model must be a program (a callable), got {model!r:.80}")
    if not callable(getattr(inference, "run", None)):
        raise ArgumentTypeError(
            f"sbc: inference must be a configured combinator with a .run(key, model, *args) "
            f"method, e.g. infer.nuts(500, 500), got {inference!r:.80}"
        )
    num_simulations = check_count("num_simulations", num_simulations)
    num_draws = check_count("num_draws", num_draws)
    if key is None:
        raise ArgumentTypeError(
            "sbc: key is required (key=jax.random.PRNGKey(0)): every random choice of the "
            "check (prior draws, runs, resampling, ties) comes from it"
        )
    key = _check_key(key)
    if data_args is not None and not callable(data_args):
        raise ArgumentTypeError(
            f"sbc: data_args must be a function simulated -> (args, kwargs), got "
            f"{data_args!r:.80}"
        )

    structure = _Structure(model, args, kwargs)
    ranked = _ranked_sites(structure, sites)
    latent, observed = structure.latent, structure.observed

    # -- how the simulated data reach the program ---------------------------------------
    matches = None
    if data_args is not None:
        program, build, mode = model, _user_builder(data_args), "data_args"
    else:
        matches = _match_arguments(args, kwargs, structure.data)
        if matches is not None:
            program, build, mode = model, _replace_leaves(matches), "arguments"
        else:
            program = _remember(_PROGRAMS, model, lambda: _conditioned_program(model))
            build, mode = _prepend, "handler"

    # -- the jitted prior draws and replays, compiled once per model and arguments -------
    wanted = tuple(dict.fromkeys(latent + ranked + observed))
    det_ranked = tuple(n for n in ranked if n not in latent)
    leaves, treedef = jax.tree.flatten((args, kwargs))
    is_array = tuple(_is_array(leaf) for leaf in leaves)
    arrays = [leaf for leaf, a in zip(leaves, is_array, strict=True) if a]
    static = tuple(None if a else leaf for leaf, a in zip(leaves, is_array, strict=True))
    match_key = None if matches is None else tuple(sorted(matches.items()))
    cache_key = (model, mode, data_args, match_key, wanted, det_ranked, treedef, is_array,
                 static)

    def kernels(concrete):
        if concrete:  # every argument a constant: not cached (keyed by the data)
            return _Kernels(model, program, build, wanted, det_ranked, treedef,
                            (False,) * len(leaves), tuple(leaves), True)
        return _remember(_KERNELS, cache_key, lambda: _Kernels(
            model, program, build, wanted, det_ranked, treedef, is_array, static, False))

    # -- 1. the prior predictive draws, all at once -------------------------------------
    k_prior, k_runs, k_thin, k_ties = jax.random.split(key, 4)
    prior_keys = jax.random.split(k_prior, num_simulations)
    compiled = kernels(False)
    try:
        simulations, sim_log_joint = compiled.simulate(prior_keys, arrays)
    except _CONCRETIZATION:  # the program needs its data concrete (int(np.max(y)), ...)
        compiled = kernels(True)
        simulations, sim_log_joint = compiled.simulate(prior_keys, [])
    call_arrays = [] if compiled.concrete else arrays
    simulations = {n: np.asarray(v) for n, v in simulations.items()}
    sim_log_joint = np.asarray(sim_log_joint)

    quantities = [q for s in ranked for q in _labels(s, structure.shapes[s])]
    loglik_name = LOG_LIKELIHOOD if LOG_LIKELIHOOD not in quantities else "log_likelihood(data)"
    below = np.zeros((num_simulations, len(quantities) + 1), dtype=np.int64)
    ties = np.zeros_like(below)
    prior_loglik = np.zeros(num_simulations)
    ess = np.full(num_simulations, np.nan)
    seconds = np.full(num_simulations, np.nan)
    run_keys = jax.random.split(k_runs, num_simulations)
    thin_keys = jax.random.split(k_thin, num_simulations)
    caught_by_category: dict = {}
    method = ""

    iterator = _progress(range(num_simulations), num_simulations, progress_bar,
                         f"sbc {getattr(inference, '__class__', type(inference)).__name__}")
    for i in iterator:
        start = time.perf_counter()
        simulated = {n: simulations[n][i] for n in observed}
        try:
            a, kw = build(simulated, args, kwargs)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                post = inference.run(run_keys[i], program, *a, **kw)
            method = post.method
            draws, ess[i] = _thin(post, num_draws, thin_keys[i], latent, MCMC_METHODS)
            truth = {n: simulations[n][i][None] for n in latent}
            stacked = {n: np.concatenate([truth[n], draws[n].astype(truth[n].dtype)])
                       for n in latent}
            loglik, log_joint, det = compiled.replay(stacked, simulated, call_arrays)
            loglik, log_joint = np.asarray(loglik), np.asarray(log_joint)
        except PPLError as err:
            err.add_note(f"(ppl.check.sbc: raised in simulation {i} of {num_simulations}, "
                         f"running {inference!r:.120})")
            raise
        tolerance = _CONSISTENCY_ATOL + _CONSISTENCY_RTOL * abs(sim_log_joint[i])
        if not abs(float(log_joint[0]) - float(sim_log_joint[i])) <= tolerance:
            raise UnsupportedModelError(
                f"sbc: the program run on the arguments built from the simulated data gives "
                f"the simulated point log density {float(log_joint[0]):.6g}, but the "
                f"simulation drew it with {float(sim_log_joint[i]):.6g} (simulation {i}, "
                f"data passed by {mode}): the data enter the program other than as the "
                f"values of its observe sites {observed} (a prior or covariate computed from "
                "the data?). SBC needs data that only are observed; pass data_args= to "
                "build the program's arguments from the simulated data yourself"
            )
        for w in caught:
            entry = caught_by_category.setdefault(w.category, [0, i, str(w.message)])
            entry[0] += 1
        column = 0
        for site in ranked:
            values = det[site][1:] if site in det else draws[site]
            truth_value = det[site][0] if site in det else simulations[site][i]
            less, equal = _count_below(np.asarray(truth_value), np.asarray(values))
            below[i, column:column + less.size] = less
            ties[i, column:column + less.size] = equal
            column += less.size
        less, equal = _count_below(loglik[:1], loglik[1:, None])
        below[i, -1], ties[i, -1] = less[0], equal[0]
        prior_loglik[i] = loglik[0]
        seconds[i] = time.perf_counter() - start

    # -- ranks: ties broken uniformly at random -------------------------------------------
    u = np.asarray(jax.random.uniform(k_ties, below.shape))
    ranks = below + np.minimum(np.floor(u * (ties + 1)).astype(np.int64), ties)
    names = quantities + [loglik_name]
    prior_values = {}
    for site in ranked:
        flat = simulations[site].reshape(num_simulations, -1)
        for j, label in enumerate(_labels(site, structure.shapes[site])):
            prior_values[label] = flat[:, j]
    prior_values[loglik_name] = prior_loglik

    for category, (count, first, message) in caught_by_category.items():
        warnings.warn(
            f"sbc: {count} of {num_simulations} simulations raised a {category.__name__} "
            f"(first in simulation {first}): {message}", category, stacklevel=2,
        )
    short = np.isfinite(ess) & (ess < num_draws)
    if short.any():
        warnings.warn(
            f"sbc: in {int(short.sum())} of {num_simulations} simulations the chains' bulk "
            f"ESS (smallest over the latent scalars; median {np.nanmedian(ess):.0f}) was below "
            f"num_draws={num_draws}, so the {num_draws} thinned draws are autocorrelated and "
            "the ranks are not uniform even for a correct sampler (Talts et al. 2018, "
            "Section 5.1); run longer chains (num_samples) or rank fewer num_draws",
            ConvergenceWarning, stacklevel=2,
        )
    sites_shapes = {s: structure.shapes[s] for s in ranked}
    return SBCResult(
        dict(zip(names, ranks.T, strict=True)), num_draws, prior=prior_values, ess=ess,
        seconds=seconds, method=method, sites=sites_shapes, data_mode=mode,
    )

