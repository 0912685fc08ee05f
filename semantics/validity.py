"""The executable validity criterion: does a building block preserve the measure?

Ścibior et al. (POPL 2018) call an inference transformation *valid* when it preserves the
measure a program denotes. We check it statistically on programs whose answer is known
exactly: run the representation (or the transformation of one) at a fixed seed, estimate
expectations of test functions (self-normalised where the result is weighted) and, where
the method estimates it, the evidence; then require each estimate to lie within ``k``
Monte Carlo standard errors of the exact value.

Standard errors come either from independent replicates (``se="replicates"``, valid for
any algorithm, MCMC included: the spread of R independent runs) or from one run by the
delta method for self-normalised importance sampling (``se="iid"``, valid for independent
weighted draws: Var ~ sum_i w_i^2 (f_i - mu)^2 with normalised w). The evidence is
compared on the natural scale, mean of Z-hat over replicates, because Z-hat (not its log)
is the unbiased quantity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax
import numpy as np
from scipy.special import logsumexp

from ppl.errors import ArgumentTypeError, InvalidArgumentError, UnknownOptionError

LOG_EVIDENCE = "log_evidence"


@dataclass
class Check:
    """One comparison: estimate vs exact value with its Monte Carlo standard error."""

    name: str
    estimate: float
    exact: float
    std_error: float
    k: float

    @property
    def z(self) -> float:
        if self.std_error == 0:
            return 0.0 if np.isclose(self.estimate, self.exact, atol=1e-6) else np.inf
        return (self.estimate - self.exact) / self.std_error

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.estimate)) and abs(self.z) <= self.k


@dataclass
class ValidityReport:
    """All checks of one :func:`preserves` call; ``assert_ok()`` raises on any failure."""

    checks: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def __str__(self):
        rows = [f"{'check':<24}{'estimate':>14}{'exact':>14}{'std err':>12}{'z':>8}  ok"]
        for c in self.checks:
            rows.append(
                f"{c.name:<24}{c.estimate:>14.6g}{c.exact:>14.6g}{c.std_error:>12.3g}"
                f"{c.z:>8.2f}  {'yes' if c.ok else 'NO'}"
            )
        return "\n".join(rows)

    def assert_ok(self):
        if not self.ok:
            raise AssertionError("the measure is not preserved:\n" + str(self))
        return self


def weighted_samples(result):
    """``(samples, log_weights or None, log_evidence or None)`` of a result: a Posterior,
    a Particles population, or such a tuple."""
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], Mapping):
        return result
    if hasattr(result, "samples"):
        return result.samples, result.log_weights, result.log_evidence
    if hasattr(result, "trace") and hasattr(result, "log_weights"):
        return result.trace.values, result.log_weights, result.log_evidence
    raise ArgumentTypeError(f"cannot read weighted samples from {type(result).__name__}")


def _normalised(log_weights, n):
    if log_weights is None:
        return np.full(n, 1.0 / n)
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    return np.exp(lw - logsumexp(lw))


def estimate(samples, log_weights, f) -> tuple[float, float]:
    """Self-normalised estimate of E[f] and its delta-method (iid) standard error."""
    values = np.asarray(f(samples), dtype=np.float64)
    w = _normalised(log_weights, values.shape[0])
    mean = float(np.sum(w * values))
    return mean, float(np.sqrt(np.sum(w**2 * (values - mean) ** 2)))


def _replicate_check(name, values, exact, k):
    values = np.asarray(values, dtype=np.float64)
    se = float(np.std(values, ddof=1) / np.sqrt(len(values)))
    return Check(name, float(values.mean()), float(exact), se, k)


def _evidence_check(log_zs, exact, k):
    log_zs = np.asarray(log_zs, dtype=np.float64)
    r = len(log_zs)
    z = np.exp(log_zs - log_zs.max())
    est = float(np.log(z.mean()) + log_zs.max())
    se = float(np.std(z, ddof=1) / np.sqrt(r) / z.mean()) if r > 1 else 0.0
    return Check(LOG_EVIDENCE, est, float(exact), se, k)


def preserves(
    run: Callable,
    exact: Mapping,
    test_functions: Mapping,
    key,
    num_replicates: int = 16,
    k: float = 4.0,
    se: str = "replicates",
    check: bool = True,
) -> ValidityReport:
    """Check that ``run(key)`` estimates the exact answers within ``k`` standard errors.

    ``exact`` maps check names to exact values; ``test_functions`` maps the same names
    (except ``"log_evidence"``) to functions of the samples dict returning one value per
    draw. If ``exact`` has ``"log_evidence"``, the result's evidence estimate is checked
    too. With ``se="iid"`` a single run is used. Raises AssertionError (with the table)
    when ``check`` and any comparison fails; returns the :class:`ValidityReport`.
    """
    if se not in ("replicates", "iid"):
        raise UnknownOptionError(f"se must be 'replicates' or 'iid', got {se!r}")
    missing = [n for n in exact if n != LOG_EVIDENCE and n not in test_functions]
    if missing:
        raise InvalidArgumentError(f"no test function for exact value(s) {missing}")
    replicates = 1 if se == "iid" else int(num_replicates)
    if se == "replicates" and replicates < 2:
        raise InvalidArgumentError("se='replicates' needs num_replicates >= 2")
    per_name = {name: [] for name in test_functions if name in exact}
    iid_se, log_zs = {}, []
    for key_r in jax.random.split(key, replicates):
        samples, log_weights, log_z = weighted_samples(run(key_r))
        for name in per_name:
            mean, std_error = estimate(samples, log_weights, test_functions[name])
            per_name[name].append(mean)
            iid_se[name] = std_error
        if log_z is not None:
            log_zs.append(float(np.asarray(log_z)))
    report = ValidityReport()
    for name, values in per_name.items():
        if se == "iid":
            report.checks.append(Check(name, values[0], float(exact[name]), iid_se[name], k))
        else:
            report.checks.append(_replicate_check(name, values, exact[name], k))
    if LOG_EVIDENCE in exact:
        if not log_zs:
            raise InvalidArgumentError(
                "exact log_evidence given but the result has no log_evidence"
            )
        report.checks.append(_evidence_check(log_zs, exact[LOG_EVIDENCE], k))
    if check:
        report.assert_ok()
    return report
