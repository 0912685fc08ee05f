"""The installed ArviZ, whichever major version it is.

ArviZ 1.x is three packages, ``arviz-base`` (the data model: results are
:class:`xarray.DataTree` objects whose children are the groups ``posterior``,
``sample_stats``, ...), ``arviz-stats`` (``summary``, ``ess``, ``loo``, ...) and
``arviz-plots`` (``plot_dist``, ``plot_trace``, ``plot_ppc_dist``, ...), which the ``arviz``
1.x package re-exports as one namespace. ArviZ 0.x (``arviz<1``) is one package whose
results are :class:`arviz.InferenceData`.

ppl installs the 1.x parts. Which one :meth:`ppl.Posterior.to_arviz` builds is decided by
what is installed, once per process:

* ``arviz`` importable with version ``< 1``: an ``arviz.InferenceData`` (the 0.x API);
* otherwise (``arviz`` 1.x, or only its parts): an ``xarray.DataTree`` (the 1.x API).

:data:`az` is that ArviZ as one namespace (``arviz`` itself when it is installed, else the
union of ``arviz_base``, ``arviz_stats`` and ``arviz_plots``, as ``arviz`` 1.x is), so that
``from ppl.arviz_compat import az`` works under either.
"""

from __future__ import annotations

import functools
import importlib
import types
from collections.abc import Mapping

__all__ = ["arviz_major", "az", "build", "describe", "group_names"]

#: The packages of ArviZ 1.x, in the order ``arviz`` 1.x re-exports them.
_PARTS_1X = ("arviz_base", "arviz_stats", "arviz_plots")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@functools.cache
def _arviz_package():
    """``arviz`` if it is installed, else None."""
    try:
        return importlib.import_module("arviz")
    except ImportError:
        return None


@functools.cache
def arviz_major() -> int:
    """0 when ``arviz`` 0.x is installed (results are ``InferenceData``), else 1 (results
    are ``xarray.DataTree``; needs ``arviz`` 1.x or the ``arviz-base`` package).

    Raises:
        ImportError: when neither is installed, with the command that installs it.
    """
    package = _arviz_package()
    if package is not None and _version_tuple(package.__version__)[0] < 1:
        return 0
    if package is None:
        try:
            importlib.import_module("arviz_base")
        except ImportError as err:
            raise ImportError(
                "ppl's ArviZ conversion needs ArviZ: pip install arviz-base arviz-stats "
                "arviz-plots (ArviZ 1.x) or pip install 'arviz<1' (ArviZ 0.x)"
            ) from err
    return 1


class _Union(types.ModuleType):
    """One namespace over several modules: an attribute is taken from the first module
    that has it (``arviz`` 1.x's own ``from arviz_base import *`` ... order)."""

    def __init__(self, modules):
        super().__init__("ppl.arviz_compat.az", "ArviZ 1.x: arviz_base, arviz_stats, "
                         "arviz_plots as one namespace")
        self._modules = tuple(modules)

    def __getattr__(self, name):
        for module in self._modules:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"ArviZ 1.x ({', '.join(_PARTS_1X)}) has no attribute {name!r}")

    def __dir__(self):
        return sorted({n for m in self._modules for n in dir(m) if not n.startswith("_")})


@functools.cache
def _installed_arviz():
    """``arviz`` itself when installed, else the union of its 1.x parts."""
    package = _arviz_package()
    if package is not None:
        return package
    arviz_major()  # raises the install hint when nothing is there
    return _Union(importlib.import_module(name) for name in _PARTS_1X)


class _LazyArviZ(types.ModuleType):
    """The installed ArviZ, imported on first attribute access (importing ppl does not
    import ArviZ or matplotlib)."""

    def __init__(self):
        super().__init__("ppl.arviz_compat.az", "the installed ArviZ")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_installed_arviz(), name)

    def __dir__(self):
        return dir(_installed_arviz())


#: The installed ArviZ as one namespace: ``az.summary``, ``az.ess``, ``az.loo``,
#: ``az.plot_trace`` ... under 0.x and 1.x alike (the functions' own arguments and results
#: follow the installed version).
az = _LazyArviZ()


def build(groups: Mapping):
    """The ArviZ object of ``groups`` (group name -> :class:`xarray.Dataset`): an
    ``arviz.InferenceData`` under ArviZ 0.x, an ``xarray.DataTree`` with one child per group
    under 1.x (see the module docstring)."""
    if arviz_major() == 0:
        return _arviz_package().InferenceData(**dict(groups))
    import xarray as xr

    return xr.DataTree.from_dict({name: ds for name, ds in groups.items()})


def group_names(data) -> list[str]:
    """The groups of an ``InferenceData`` or ``DataTree`` (``["posterior", ...]``)."""
    if hasattr(data, "groups") and callable(data.groups) and not hasattr(data, "children"):
        return list(data.groups())
    return list(data.children)


def describe() -> str:
    """One line: which ArviZ is installed and what :meth:`ppl.Posterior.to_arviz` returns."""
    package = _arviz_package()
    if arviz_major() == 0:
        return f"arviz {package.__version__}: to_arviz() returns arviz.InferenceData"
    versions = []
    for name in (("arviz",) if package is not None else ()) + _PARTS_1X:
        try:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            continue
    return ", ".join(versions) + ": to_arviz() returns xarray.DataTree"
