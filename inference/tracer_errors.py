"""Python control flow on a traced value, explained.

Inside a run every sampled value is a JAX tracer (the run is one ``jax.jit``), so a
program that writes ``if mu > 0:``, ``while x < 1:``, ``int(n)``, ``np.asarray(x)`` or
``y[x > 0]`` on a sampled value fails with one of JAX's concretization errors
(:data:`CONCRETIZATION_ERRORS`), which name neither the site nor the way out.
:func:`traced_control_flow_error` turns such an error into a
:class:`~ppl.errors.TracedControlFlowError` (chained from JAX's) whose message has

* the user's source line: the innermost frame of the traceback outside jax, numpyro, the
  standard library, other installed packages and ppl's own code;
* the site(s) the value depends on, found by tracing the program once more, alone, with
  ``jax.make_jaxpr``: a first pass records the latent (and ``param``) sites reached
  before the failure; a second pass substitutes every recorded site by an argument of the
  traced function, so that JAX's own message says which arguments (sites) the failing
  value depends on. A ``markov`` call runs its step once (at ``t = 0``) in both passes, so
  the sites of a step are found too. Where no site is involved (a value computed with
  ``jax.numpy`` from the data inside the run), the message says so; where the passes do
  not reproduce the failure at the same line, the sites are left out;
* what to write instead: ``jnp.where`` / ``jax.lax.cond`` for a branch,
  ``jax.lax.fori_loop`` / ``jax.lax.while_loop`` / ``ppl.markov`` for a loop, ``jnp``
  instead of ``np``, ``jnp.where(mask, ...)`` instead of boolean-mask indexing.

:func:`control_flow_errors` is the same as a context manager, for the runs that call
``jax.jit`` themselves rather than through :func:`~ppl.inference.base.compile_and_call`.
"""

from __future__ import annotations

import contextlib
import inspect
import linecache
import os
import re
import sysconfig
import traceback

import jax
import jax.numpy as jnp
import numpyro
from numpyro.primitives import Messenger

from ppl.errors import TracedControlFlowError
from ppl.primitives import intercept_markov, stacked_placeholder, step_index

__all__ = ["CONCRETIZATION_ERRORS", "control_flow_errors", "traced_control_flow_error",
           "user_frame"]

#: JAX's errors for a traced value used where a concrete one is needed (``int(x)``,
#: ``np.asarray(x)``, ``if x:``, ``x[mask]``); ``TracerBoolConversionError`` is a
#: ``ConcretizationTypeError``.
CONCRETIZATION_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.NonConcreteBooleanIndexError,
)

_HERE = os.path.dirname(os.path.abspath(__file__))
#: ppl's own code (the DSL, the representations, the algorithms); ``ppl.models`` is not
#: in it: a zoo model is a program like the user's.
_PPL_DIRS = tuple(
    os.path.join(os.path.dirname(_HERE), d) + os.sep for d in ("ppl", "semantics", "inference")
)
_LIBRARY_DIRS = tuple(
    os.path.abspath(p) + os.sep
    for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib",
                                                     "platlib")}
    if p
)


def _is_user_file(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    path = os.path.abspath(filename)
    if any(part in path for part in (f"{os.sep}site-packages{os.sep}",
                                     f"{os.sep}dist-packages{os.sep}")):
        return False
    return not path.startswith(_PPL_DIRS) and not path.startswith(_LIBRARY_DIRS)


def user_frame(err: BaseException):
    """The innermost frame of ``err``'s traceback in the user's code, as a
    ``traceback.FrameSummary`` (``filename``, ``lineno``, ``name``, ``line``), or None."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if _is_user_file(f.filename)]
    return frames[-1] if frames else None


# --------------------------------------------------------------------------- the probe


class _Recorder(Messenger):
    """Records the latent and ``param`` sites of a run, in order, with their shapes and
    whether they are drawn inside a markov step (the step's name) or not (None)."""

    def __init__(self, fn=None):
        super().__init__(fn)
        self.sites = {}
        self.step = None

    def postprocess_message(self, msg):
        if msg["type"] not in ("sample", "param") or msg.get("is_observed"):
            return
        if msg["name"] in self.sites or msg.get("value") is None:
            return
        value = msg["value"]
        self.sites[msg["name"]] = (self.step, jax.ShapeDtypeStruct(jnp.shape(value),
                                                                   jnp.result_type(value)))


def _probe(model, args, kwargs, values, recorder):
    """``model(*args, **kwargs)`` under ``seed``, ``substitute(values)`` and ``recorder``,
    with every ``markov`` call running its step once."""

    def first_step(step, init, xs, num_steps):
        x0 = None if xs is None else jax.tree.map(lambda a: a[0], xs)
        recorder.step = getattr(step, "__name__", "step")
        try:
            with step_index(jnp.asarray(0)):
                step(init, x0)
        finally:
            recorder.step = None
        return stacked_placeholder(init, num_steps)

    seeded = numpyro.handlers.seed(model, rng_seed=0)
    with intercept_markov(first_step), recorder:
        numpyro.handlers.substitute(seeded, data=values)(*args, **kwargs)


def _trace_once(model, args, kwargs, values):
    """``(recorded sites, the concretization error or None)`` of one probe pass."""
    recorder = _Recorder()
    try:
        jax.make_jaxpr(lambda v: _probe(model, args, kwargs, v, recorder))(values)
    except CONCRETIZATION_ERRORS as e:
        return recorder.sites, e
    return recorder.sites, None


_DEPENDS = re.compile(r"depends on the values? of the arguments? (.*?)\.\s*$", re.M)
_ARGUMENT = re.compile(r"""\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]""")


def _dependencies(err) -> list[str] | None:
    """The site names JAX's message says the failing value depends on ([] where it says
    the value comes from operations on constants, None where it does not say)."""
    text = str(err)
    found = _DEPENDS.search(text)
    if found:
        return [a or b for a, b in _ARGUMENT.findall(found.group(1))]
    if "became a tracer due to JAX operations" in text:
        return []
    return None


def _same_line(err, frame) -> bool:
    other = user_frame(err)
    return (other is not None and frame is not None and other.filename == frame.filename
            and other.lineno == frame.lineno)


def _site_description(model, args, kwargs, frame) -> str:
    """What the site probe finds out (see the module docstring), as a clause, or ""."""
    sites, first = _trace_once(model, args, kwargs, {})
    if not sites and first is None:
        return ""
    values = {n: jnp.zeros(spec.shape, spec.dtype) for n, (_, spec) in sites.items()}
    _, second = _trace_once(model, args, kwargs, values)

    def named(names):
        return ", ".join(
            f"'{n}'" + (f" (in markov step `{sites[n][0]}`)" if sites[n][0] else "")
            for n in names
        )

    if second is not None and _same_line(second, frame):
        deps = _dependencies(second)
        if deps:
            deps = [n for n in deps if n in sites]
            plural = "s" if len(deps) > 1 else ""
            return f"; the value depends on the sampled site{plural} {named(deps)}"
        if deps == [] and first is not None:
            return (
                "; the value depends on no sampled site: it is computed with jax.numpy "
                "inside the compiled run (from the data, say), so it is traced too; compute "
                "it with numpy (np.asarray(y), np.max(y)) on the data, or pass it as a Python "
                "number"
            )
    if first is not None and _same_line(first, frame) and sites:
        recent = list(sites)[-3:][::-1]
        return f"; the site(s) sampled last before it: {named(recent)}"
    return ""


# --------------------------------------------------------------------------- the error


def _headline(err) -> str:
    if isinstance(err, jax.errors.TracerBoolConversionError):
        return "Python control flow on a traced value"
    if isinstance(err, jax.errors.TracerArrayConversionError):
        return "numpy on a traced value"
    if isinstance(err, jax.errors.NonConcreteBooleanIndexError):
        return "boolean-mask indexing with a traced mask"
    return "a traced value where Python needs a concrete one"


def _hint(err, line: str) -> str:
    stripped = line.lstrip()
    if stripped.startswith(("while ", "for ")) or re.search(r"\brange\(", stripped):
        return (
            "For a loop whose length or condition depends on it, use jax.lax.fori_loop or "
            "jax.lax.while_loop, or ppl.markov(step, init, length=...) for a loop over "
            "time steps (its sites are then one per step)."
        )
    if isinstance(err, jax.errors.TracerBoolConversionError):
        return (
            "Write the branch as data: jnp.where(cond, a, b) (both sides computed), or "
            "jax.lax.cond(cond, true_fn, false_fn, *operands); a site sampled in one branch "
            "only can be sampled before the branch and selected with jnp.where."
        )
    if isinstance(err, jax.errors.TracerArrayConversionError):
        return (
            "Use jax.numpy (jnp.sum, jnp.exp, ...) instead of numpy on values that depend "
            "on sampled sites."
        )
    if isinstance(err, jax.errors.NonConcreteBooleanIndexError):
        return (
            "x[mask] has a shape that depends on the traced mask: use jnp.where(mask, x, 0) "
            "(or ppl.observe(name, d, y, mask=mask) for missing data)."
        )
    return (
        "Keep traced values out of int(), float(), shapes and Python indexing: use "
        "x.astype(int), jnp.take / jax.lax.dynamic_slice for indexing, jnp.where or "
        "jax.lax.cond for a branch, and jax.lax.fori_loop / ppl.markov for a loop."
    )


def _argument_names(model, args, kwargs) -> list[str]:
    """A name for each of ``args`` then ``kwargs``: the model's parameter names where its
    signature says, else ``argument i``."""
    names = [f"argument {i}" for i in range(len(args))] + list(kwargs)
    try:
        params = list(inspect.signature(getattr(model, "fn", model)).parameters.values())
    except (TypeError, ValueError):
        return names
    for i, p in enumerate(params[: len(args)]):
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names[i] = p.name
    return names


def _pandas_hint(model, args, kwargs) -> str:
    """A hint naming the arguments that are pandas objects (JAX arithmetic with a traced
    value hands a ``Series`` to pandas, which calls NumPy on the tracer), or ''."""
    values = list(args) + list((kwargs or {}).values())
    names = _argument_names(model, args, kwargs or {})
    pandas = [n for n, v in zip(names, values, strict=True)
              if type(v).__module__.split(".")[0] == "pandas"]
    if not pandas:
        return ""
    one = len(pandas) == 1
    return (f"; {', '.join(repr(n) for n in pandas)} "
            f"{'is a pandas object' if one else 'are pandas objects'}: arithmetic between "
            "a traced value and a pandas Series or DataFrame runs in pandas (NumPy), not "
            f"JAX; pass {'its' if one else 'their'} `.to_numpy()`")


def traced_control_flow_error(err, model=None, args=(), kwargs=None, traced_arguments=False,
                              where="") -> TracedControlFlowError:
    """The :class:`~ppl.errors.TracedControlFlowError` for JAX's concretization error
    ``err`` raised while running ``model(*args, **kwargs)`` (``model=None``: no site
    probe); ``traced_arguments``: the arguments are themselves tracers (``.run`` under an
    outer ``jit``/``vmap``); ``where`` prefixes the message (a combinator's name)."""
    kwargs = kwargs or {}
    frame = user_frame(err)
    if frame is not None:
        line = frame.line or linecache.getline(frame.filename, frame.lineno).strip()
        location = (f'\n  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n'
                    f"    {line}\n")
    else:
        line, location = "", " "
    sites = ""
    if model is not None and not traced_arguments and frame is not None:
        try:
            sites = _site_description(model, args, kwargs, frame)
        except Exception:  # noqa: BLE001 - the probe is best effort: never hide err
            sites = ""
    if traced_arguments:
        sites += ("; the run's arguments are themselves traced (.run called under an outer "
                  "jax.jit or jax.vmap), so data-dependent Python code cannot run either: "
                  "pass concrete data")
    sites += _pandas_hint(model, args, kwargs)
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    prefix = f"{where}: " if where else ""
    return TracedControlFlowError(
        f"{prefix}{_headline(err)}{sites}.{location}"
        f"Inside a run every sampled value is a JAX tracer (the run is compiled with "
        f"jax.jit), so Python's if/while/bool()/int()/float(), numpy and boolean-mask "
        f"indexing cannot read it. {_hint(err, line)}\n"
        f"(JAX: {type(err).__name__}: {first})"
    )


@contextlib.contextmanager
def control_flow_errors(model=None, args=(), kwargs=None, where=""):
    """Within the block, re-raise JAX's concretization errors as
    :func:`traced_control_flow_error` (chained from the original)."""
    try:
        yield
    except CONCRETIZATION_ERRORS as err:
        traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((args, kwargs)))
        raise traced_control_flow_error(err, model, args, kwargs, traced, where) from err
