"""Errors raised by ppl, and the argument checks that raise them. Each names the site or
argument at fault."""

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


def check_count(argument: str, value) -> int:
    """An integer count >= 1 (particles, samples, chains, steps)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{argument} must be >= 1, got {value}")
    return int(value)


def check_nonnegative(argument: str, value) -> int:
    """An integer count >= 0 (warm-up iterations)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{argument} must be >= 0, got {value}")
    return int(value)
