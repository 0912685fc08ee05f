"""Errors raised by ppl. Each names the site or argument at fault."""


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
