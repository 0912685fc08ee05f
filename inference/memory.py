"""A memory estimate before a run: refuse a run whose outputs cannot fit, warn for a big one.

``importance(10**9)``, ``smc(10**9)`` or ``mh(10**8, num_chains=8)`` would otherwise compile
(minutes, for a large program) and then fail in XLA's allocator, or swap the machine to a
halt. The outputs of a run (particles, sample buffers, per-step records) are its bulk and
grow as particles x steps or samples x chains x sites, and their shapes are known without
running anything: :func:`jax.eval_shape` of the jitted run traces it abstractly (no array
is allocated, whatever the sizes), and the trace is the one the run itself then reuses
(``jax.jit`` caches it), so the estimate costs nothing more than the run would.

:func:`check_memory` compares those bytes with the memory available where the run lives:
the accelerator's free memory (``device.memory_stats()``: ``bytes_limit - bytes_in_use``)
when the backend reports it, otherwise the host's available memory (``psutil`` when
installed, else ``MemAvailable`` of ``/proc/meminfo``, else the physical memory,
``os.sysconf``). Above the available memory it raises :class:`~ppl.errors.ResourceError`;
above :data:`WARN_FRACTION` of it, it warns with :class:`~ppl.errors.LargeRunWarning`.
Both name the largest outputs and what to change. The estimate is a lower bound (a run
also needs its working memory: the scan carry, temporaries), so a run that passes may still
run out; one that fails cannot fit.

Every combinator's run passes here (:class:`~ppl.inference.base.CompiledRuns`).
"""

from __future__ import annotations

import os
import re
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from ppl.errors import LargeRunWarning, ResourceError

__all__ = ["WARN_FRACTION", "available_memory", "check_memory", "output_bytes"]

#: Warn when the outputs take more than this fraction of the available memory.
WARN_FRACTION = 0.5

#: What to change, for the messages.
ADVICE = (
    "use fewer particles or samples (num_particles / num_samples / num_chains), fewer "
    "steps, thinning, or, for smc, history=False (no T x N genealogy and per-step particle "
    "records)"
)


def itemsize(dtype) -> int:
    """Bytes per element of ``dtype``, JAX's key dtypes (``key<rbg>``...) included."""
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return int(dtype.itemsize)
    return np.dtype(dtype).itemsize


def _leaf_bytes(leaf) -> int:
    return int(np.prod(leaf.shape, dtype=np.float64)) * itemsize(leaf.dtype)


def output_bytes(shapes) -> int:
    """Bytes of a pytree of arrays or ``ShapeDtypeStruct`` (e.g. :func:`jax.eval_shape`'s
    result)."""
    return sum(_leaf_bytes(leaf) for leaf in jax.tree.leaves(shapes))


_FLAT = re.compile(r"\[<flat index \d+>\]")  # key-path noise of custom pytrees


def _largest(shapes, count=3) -> str:
    leaves = jax.tree_util.tree_flatten_with_path(shapes)[0]
    leaves = sorted(leaves, key=lambda kv: -_leaf_bytes(kv[1]))[:count]
    return ", ".join(
        f"{_FLAT.sub('', jax.tree_util.keystr(path)) or 'output'} {tuple(leaf.shape)} "
        f"{np.dtype(leaf.dtype).name} ({_format(_leaf_bytes(leaf))})"
        for path, leaf in leaves
    )


def _format(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return f"{nbytes:.3g} PB"  # pragma: no cover


def _host_available() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 0


def available_memory(device=None) -> tuple[int, str]:
    """``(bytes, where)``: free memory of ``device`` (default: JAX's first device) when its
    backend reports memory statistics (GPU, TPU), else the host's available memory; 0 when
    nothing can be learned (then no check is made)."""
    device = jax.devices()[0] if device is None else device
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (backends without statistics raise various errors)
        stats = None
    if stats and stats.get("bytes_limit"):
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return max(free, 0), f"{device.platform.upper()} memory ({device})"
    return _host_available(), "host memory"


#: Output shapes per (run, argument shapes): a run's estimate is made once, not on every call.
_SHAPES = weakref.WeakKeyDictionary()


def _output_shapes(fn, args, kwargs):
    """``jax.eval_shape(fn, *args, **kwargs)``, cached per ``fn`` and the shapes and dtypes
    of the arguments (an abstract trace costs about a millisecond a call, the whole
    overhead budget of a warm ``.run``)."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    try:
        signature = (treedef, tuple((jnp.shape(x), jnp.result_type(x)) if hasattr(x, "dtype")
                                    else x for x in leaves))
        cached = _SHAPES.setdefault(fn, {})
        if signature in cached:
            return cached[signature]
    except TypeError:  # an unhashable leaf or a run that cannot be weakly referenced
        return jax.eval_shape(fn, *args, **kwargs)
    shapes = jax.eval_shape(fn, *args, **kwargs)
    cached[signature] = shapes
    return shapes


def check_memory(fn, *args, what: str = "this run", **kwargs):
    """Estimate the bytes of ``fn(*args, **kwargs)``'s outputs from their shapes
    (:func:`jax.eval_shape`, nothing allocated) and compare with :func:`available_memory`:
    raise :class:`~ppl.errors.ResourceError` when they exceed it, warn
    (:class:`~ppl.errors.LargeRunWarning`) above :data:`WARN_FRACTION` of it. Returns the
    estimate in bytes. Pass ``fn`` jitted: its trace is then cached for the run itself."""
    shapes = _output_shapes(fn, args, kwargs)
    estimate = output_bytes(shapes)
    if estimate < (1 << 20):
        return estimate  # not worth a look at the machine
    available, where = available_memory()
    if available <= 0:
        return estimate
    if estimate > available:
        raise ResourceError(
            f"{what} cannot fit: its outputs alone take about {_format(estimate)}, more than "
            f"the {_format(available)} of {where} available (largest: "
            f"{_largest(shapes)}); {ADVICE}"
        )
    if estimate > WARN_FRACTION * available:
        warnings.warn(
            f"{what}: its outputs take about {_format(estimate)}, "
            f"{100 * estimate / available:.0f}% of the {_format(available)} of {where} "
            f"available (largest: {_largest(shapes)}); it may run out of memory. To use "
            f"less, {ADVICE}",
            LargeRunWarning,
            stacklevel=3,
        )
    return estimate
