"""What the tests need to read ArviZ results under ArviZ 0.x and 1.x alike."""

from ppl.arviz_compat import arviz_major, az, group_names

__all__ = ["arviz_major", "az", "elpd", "group_names", "result_type"]


def elpd(loo) -> float:
    """The elpd of an ``az.loo`` result (ArviZ 0.x: ``elpd_loo``; 1.x: ``elpd``)."""
    return float(loo.elpd_loo if hasattr(loo, "elpd_loo") else loo.elpd)


def result_type():
    """The type ``Posterior.to_arviz()`` returns under the installed ArviZ."""
    if arviz_major() == 0:
        return az.InferenceData
    import xarray as xr

    return xr.DataTree
