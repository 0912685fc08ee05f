"""Errors raised by ppl, and the argument checks that raise them. Each names the site or
argument at fault."""

import re

import numpy as np


class PPLError(ValueError):
    """Base class of every error ppl raises about a program or its input."""


class ObserveWithoutValueError(PPLError):
    """`observe` was called with ``value=None``."""


class DuplicateSiteError(PPLError):
    """Two random choices in one program run share a name."""


class ShapeMismatchError(PPLError):
    """Observed data (or a markov carry) does not have the shape the model implies."""


class NonFiniteWeightError(PPLError):
    """A log weight is NaN or +inf."""


class UnknownOptionError(PPLError):
    """An option was given a value outside its allowed set."""


class UnsupportedModelError(PPLError):
    """The program is outside the class a representation or algorithm handles."""


class InvalidDistributionError(PPLError):
    """A distribution's parameter violates its constraint in a way that would give a silent
    wrong answer (``Categorical`` probs that do not sum to 1, say)."""


class InvalidArgumentError(PPLError):
    """An argument of a combinator, primitive or method has a value outside its allowed
    range (a count below one, a fraction outside [0, 1], a negative step size). A
    ``ValueError``."""


class ArgumentTypeError(PPLError, TypeError):
    """An argument has the wrong type: a string where a number is needed
    (``ess_threshold='0.5'``), a float where a count is needed, a non-key as ``key``.
    Both a ``ValueError`` (as every :class:`PPLError`) and a ``TypeError``."""


class UnsupportedOptionError(UnknownOptionError, NotImplementedError):
    """An option value, or a combination of options, that this combinator does not
    support (``smc(move=...)`` with a move that is not ``infer.mh(...)``, say). Also a
    ``NotImplementedError``."""


class NotFittedError(PPLError, RuntimeError):
    """A method that needs a trained network (or fitted state) was called before
    ``.fit``. Also a ``RuntimeError``."""


class TracedControlFlowError(PPLError, TypeError):
    """Python control flow (``if``, ``while``, ``bool``, ``int``, indexing by a boolean
    mask) on a value that is traced inside the compiled run (a sampled site, say). The
    message names the user's source line and the site(s) the value comes from, and
    suggests ``jnp.where`` / ``jax.lax.cond`` (or ``lax.fori_loop`` / ``ppl.markov`` for
    a loop). Chained from JAX's own error."""


def _type_name(value) -> str:
    return type(value).__name__


def check_count(argument: str, value) -> int:
    """An integer count >= 1 (particles, samples, chains, steps)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(
            f"{argument} must be an integer >= 1, got {value!r} (a {_type_name(value)}); "
            f"pass a Python int, e.g. {argument}={_int_hint(value, 1)}"
        )
    if value < 1:
        raise InvalidArgumentError(
            f"{argument} must be >= 1, got {value}; pass a positive integer"
        )
    return int(value)


def check_nonnegative(argument: str, value) -> int:
    """An integer count >= 0 (warm-up iterations)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(
            f"{argument} must be an integer >= 0, got {value!r} (a {_type_name(value)}); "
            f"pass a Python int, e.g. {argument}={_int_hint(value, 0)}"
        )
    if value < 0:
        raise InvalidArgumentError(
            f"{argument} must be >= 0, got {value}; pass 0 or a positive integer"
        )
    return int(value)


def _int_hint(value, lowest: int) -> int:
    """The integer a user most likely meant by ``value`` ('10' -> 10, 10.0 -> 10)."""
    if isinstance(value, bool):
        return max(lowest, 10)
    try:
        guess = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return max(lowest, 10)
    return max(lowest, guess)


def _interval(low, high, low_open, high_open) -> str:
    if low is None and high is None:
        return "a finite number"
    if high is None:
        return f"a number {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"a number {'<' if high_open else '<='} {high:g}"
    return (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
            f"{')' if high_open else ']'}")


def check_number(argument: str, value, low=None, high=None, low_open=False,
                 high_open=False) -> float:
    """A real, finite scalar (a Python or numpy number, or a 0-d array) within the given
    bounds, as a float. Strings (``'0.5'``), booleans, ``None`` and arrays of several
    entries are refused with :class:`ArgumentTypeError`; a value out of range, NaN or
    infinite with :class:`InvalidArgumentError`; both name ``argument``."""
    what = _interval(low, high, low_open, high_open)
    ok_type = not isinstance(value, (bool, np.bool_, str, bytes)) and (
        isinstance(value, (int, float, np.integer, np.floating))
        or (hasattr(value, "dtype") and np.ndim(value) == 0
            and np.issubdtype(value.dtype, np.number)
            and not np.issubdtype(value.dtype, np.complexfloating))
    )
    if not ok_type:
        hint = ""
        if isinstance(value, str):
            try:
                hint = f"; pass {argument}={float(value)!r}, not the string {value!r}"
            except ValueError:
                pass
        raise ArgumentTypeError(
            f"{argument} must be {what}, got {value!r} (a {_type_name(value)}){hint}"
        )
    number = float(value)
    inside = np.isfinite(number) and not (
        (low is not None and (number <= low if low_open else number < low))
        or (high is not None and (number >= high if high_open else number > high))
    )
    if not inside:
        raise InvalidArgumentError(f"{argument} must be {what}, got {value!r}")
    return number


def check_positive(argument: str, value) -> float:
    """A finite number > 0 (a step size, a learning rate, a scale), as a float."""
    return check_number(argument, value, low=0.0, low_open=True)


def check_probability(argument: str, value, closed: bool = False) -> float:
    """A number strictly between 0 and 1 (``closed=True``: in [0, 1]), as a float."""
    return check_number(argument, value, 0.0, 1.0, low_open=not closed,
                        high_open=not closed)


def improper_base(d):
    """The ``ImproperUniform`` that ``d`` is (through ``Independent``, ``Expanded`` and
    ``Masked`` wrappers, as ``to_event``, ``expand`` and plates build them), or None.

    Such a distribution has a log density (a constant on its support) and a support with a
    bijection to unconstrained space, but no sampler: NumPyro's way to write Stan's flat
    and ``ordered`` priors."""
    from numpyro.distributions import ImproperUniform
    from numpyro.distributions.distribution import (
        ExpandedDistribution,
        Independent,
        MaskedDistribution,
    )

    while isinstance(d, (Independent, ExpandedDistribution, MaskedDistribution)):
        d = d.base_dist
    return d if isinstance(d, ImproperUniform) else None


def improper_prior_error(name: str, d, consequence: str | None = None) -> UnsupportedModelError:
    """The :class:`UnsupportedModelError` for drawing site ``name`` of improper prior ``d``
    from its prior; ``consequence`` says what that stops (by default: any method that
    samples the prior)."""
    from numpyro.distributions import constraints

    base = improper_base(d)
    support = base.support if base is not None else d.support
    while type(support) is constraints._IndependentConstraint:  # not real_vector etc.
        support = support.base_constraint
    constraint = re.sub(r"(?<!^)(?=[A-Z])", "_", type(support).__name__.lstrip("_")).lower()
    if consequence is None:
        consequence = (
            "it cannot be drawn from the prior, as importance, smc, mh, exact and the other "
            "methods that sample the prior need"
        )
    return UnsupportedModelError(
        f"sample('{name}'): ImproperUniform({constraint}) has no sampler, so {consequence}; "
        f"give '{name}' a proper prior or use infer.nuts / infer.hmc / infer.svi (which "
        "start in unconstrained space)"
    )


class ConvergenceWarning(UserWarning):
    """Several MCMC chains that do not look converged: split R-hat above 1.01, bulk ESS
    below 100 per chain, or divergent transitions (see ``Posterior.diagnostics``)."""


class ParticleCollapseWarning(ConvergenceWarning):
    """A particle method's population collapsed: its MCMC moves stopped accepting, or its
    final particles are a few repeated values, so the posterior's spread is underestimated
    (e.g. ``tempered_smc`` with a prior-proposal ``infer.mh`` move). A
    :class:`ConvergenceWarning`, so one filter silences both."""


class ResourceError(PPLError, MemoryError):
    """A run whose outputs alone would not fit in the memory available (estimated from
    their shapes before compiling; see :mod:`ppl.inference.memory`). Also a
    ``MemoryError``."""


class LargeRunWarning(UserWarning):
    """A run whose outputs would take more than half of the memory available."""
