"""The `model` decorator: marks a plain Python function as a ppl program.

A ppl program is any Python function that calls the primitives of :mod:`ppl.primitives`
(or NumPyro's own ``numpyro.sample`` and friends). The decorator does not change what the
function computes; it gives it a readable ``repr`` and a stable identity so that inference
can cache its compiled form.
"""

from __future__ import annotations

import functools

from ppl.errors import ArgumentTypeError


class Model:
    """A ppl program: a callable that makes random choices through effect handlers."""

    def __init__(self, fn):
        if not callable(fn):
            raise ArgumentTypeError(f"ppl.model expects a function, got {type(fn).__name__}")
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self):
        return f"<ppl.model {getattr(self.fn, '__qualname__', self.fn)}>"


def model(fn):
    """Decorate a function that uses ppl primitives; returns a :class:`Model`.

    Decorating is optional: every inference method also accepts the plain function.
    """
    return fn if isinstance(fn, Model) else Model(fn)
