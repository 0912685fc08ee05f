"""Priors over datasets for prior-data fitted networks (PFNs), written as ppl programs.

Each prior is a program ``model(x, y=None)``: the inputs ``x`` are given, the outputs are
the observed site ``"y"``. Drawn with ``y=None`` under :class:`ppl.semantics.Sampler`
(``predictive=True``) it is a prior over datasets; with ``y`` given it is the likelihood
model that NUTS or any other method conditions on. Each comes with the distribution of its
inputs (``*_inputs(key, n)``), which the PFN needs to draw whole datasets.

* :func:`gp_regression` (Müller et al. 2022, "Transformers Can Do Bayesian Inference",
  section 5.1): 1-D inputs ``x ~ U(0, 1)``, a zero-mean Gaussian process with an RBF kernel
  of fixed hyperparameters (:data:`GP_LENGTHSCALE`, :data:`GP_OUTPUTSCALE`,
  :data:`GP_NOISE`), observed with Gaussian noise; :func:`gp_exact_predictive` is its exact
  posterior predictive (Rasmussen & Williams 2006, eq. 2.22-2.24) and
  :func:`gp_prior_predictive_logpdf` the prior predictive it must beat.
* :func:`learning_curve` (Adriaensen et al. 2023, "Efficient Bayesian Learning Curve
  Extrapolation using Prior-Data Fitted Networks", section 4 and appendix A, after Domhan et
  al. 2015): a weighted sum of pow3, Janoschek and ilog2 curves over epochs ``1..m``, with
  weights ``w_k ~ U(0, 1)``, the paper's "peaked" parameter priors, the constraint that the
  noiseless curve lies in ``[0, 1]`` and ends higher than it starts (a hard ``factor``: the
  prior is truncated to valid curves), and Gaussian noise with ``log sigma ~ N(-4, 1)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import distributions as dist

from ppl.primitives import deterministic, factor, observe, sample

__all__ = [
    "GP_LENGTHSCALE",
    "GP_MAX_POINTS",
    "GP_NOISE",
    "GP_OUTPUTSCALE",
    "LC_EPOCHS",
    "gp_exact_predictive",
    "gp_inputs",
    "gp_prior_predictive_logpdf",
    "gp_regression",
    "ilog2",
    "janoschek",
    "lc_curve",
    "lc_inputs",
    "learning_curve",
    "pow3",
]

#: RBF kernel lengthscale, output variance and observation-noise standard deviation.
GP_LENGTHSCALE = 0.2
GP_OUTPUTSCALE = 1.0
GP_NOISE = 0.2
#: Number of points per dataset (training plus query points) the shipped GP PFN was trained on.
GP_MAX_POINTS = 50
#: Length m of a learning curve (epochs 1..m).
LC_EPOCHS = 100


# --------------------------------------------------------------------------- GP prior


def rbf_kernel(x1, x2, lengthscale=GP_LENGTHSCALE, outputscale=GP_OUTPUTSCALE):
    """k(x, x') = s^2 exp(-(x - x')^2 / (2 l^2)) (Rasmussen & Williams 2006, eq. 2.16)."""
    d = jnp.asarray(x1)[:, None] - jnp.asarray(x2)[None, :]
    return outputscale * jnp.exp(-0.5 * (d / lengthscale) ** 2)


def gp_inputs(key, n):
    """The input distribution of the GP prior: ``n`` points ``x ~ U(0, 1)``."""
    return jax.random.uniform(key, (n,))


def gp_regression(x, y=None):
    """y ~ N(0, K(x, x) + sigma_n^2 I): a GP with RBF kernel observed with Gaussian noise.

    The latent function is integrated out (Rasmussen & Williams 2006, eq. 2.30), so the
    program has the single observed site ``"y"`` of shape ``x.shape``.
    """
    x = jnp.asarray(x)
    cov = rbf_kernel(x, x) + (GP_NOISE**2 + 1e-6) * jnp.eye(x.shape[-1])
    return observe("y", dist.MultivariateNormal(jnp.zeros(x.shape[-1]), cov), y)


def gp_exact_predictive(x_train, y_train, x_query):
    """Exact posterior predictive mean and variance of y at ``x_query`` (float64 numpy).

    Rasmussen & Williams (2006), eq. 2.22-2.24, plus the noise variance for a new y:
    mean = K*^T (K + s^2 I)^-1 y, var = k** - K*^T (K + s^2 I)^-1 K* + s^2.
    """
    xt = np.asarray(x_train, np.float64)
    yt = np.asarray(y_train, np.float64)
    xq = np.asarray(x_query, np.float64)

    def k(a, b):
        return GP_OUTPUTSCALE * np.exp(-0.5 * ((a[:, None] - b[None, :]) / GP_LENGTHSCALE) ** 2)

    kxx = k(xt, xt) + (GP_NOISE**2 + 1e-6) * np.eye(len(xt))
    chol = np.linalg.cholesky(kxx)
    kxq = k(xt, xq)
    alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, yt))
    v = np.linalg.solve(chol, kxq)
    mean = kxq.T @ alpha
    var = GP_OUTPUTSCALE - np.sum(v * v, axis=0) + GP_NOISE**2 + 1e-6
    return mean, var


def gp_prior_predictive_logpdf(y_query):
    """log N(y; 0, s^2 + sigma_n^2): the prior predictive of one y, ignoring all data."""
    var = GP_OUTPUTSCALE + GP_NOISE**2 + 1e-6
    y = np.asarray(y_query, np.float64)
    return -0.5 * (np.log(2 * np.pi * var) + y * y / var)


# --------------------------------------------------------------------------- LC prior


def pow3(t, c, a, alpha):
    """pow3(t) = c - a t^(-alpha) (Domhan et al. 2015, table 1)."""
    return c - a * t ** (-alpha)


def janoschek(t, a, beta, k, delta):
    """Janoschek(t) = a - (a - beta) exp(-k t^delta) (Domhan et al. 2015, table 1)."""
    return a - (a - beta) * jnp.exp(-k * t**delta)


def ilog2(t, c, a):
    """ilog2(t) = c - a / log(t + 1) (Domhan et al. 2015, table 1)."""
    return c - a / jnp.log(t + 1.0)


def lc_inputs(key, n=LC_EPOCHS):
    """The inputs of the learning-curve prior: the epochs ``1..n`` (deterministic)."""
    del key
    return jnp.arange(1, n + 1, dtype=jnp.result_type(float))


def lc_curve(t, w, pow3_params, janoschek_params, ilog2_params):
    """The noiseless curve sum_k w_k f_k(t) (Adriaensen et al. 2023, eq. 5; the weights are
    not normalised, as in the authors' ``lcpfn.domhan_prior.sample_prior_comb``)."""
    return (
        w[0] * pow3(t, *pow3_params)
        + w[1] * janoschek(t, *janoschek_params)
        + w[2] * ilog2(t, *ilog2_params)
    )


def learning_curve(x, y=None):
    """The LC-PFN prior (Adriaensen et al. 2023, appendix A, "peaked" priors) over epochs x.

    Latent sites: ``w`` (3,) ~ U(0, 1); pow3 ``pow3_c ~ U(0, 1.25)``, ``pow3_a ~ U(-0.6,
    0.6)``, ``pow3_alpha ~ LogNormal(0, 2)``; Janoschek ``jan_a ~ U(0, 1)``, ``jan_beta ~
    U(0, 2)``, ``jan_k ~ LogNormal(-2, 1)``, ``jan_delta ~ LogNormal(0, 0.5)``; ilog2
    ``ilog2_c ~ U(0, 1)``, ``ilog2_a ~ U(-0.5, 0.5)``; ``log_sigma ~ N(-4, 1)``. The
    factor ``"valid"`` is 0 for a noiseless curve inside [0, 1] with ``f(m) > f(1)`` and
    -inf otherwise (the paper's rejection step). ``"y" ~ N(f(x), sigma)`` elementwise.
    The constraint is checked on all m = :data:`LC_EPOCHS` epochs whatever the inputs (the
    observed prefix of a curve is conditioned on with ``x = 1..k``); the noiseless curve on
    epochs ``1..m`` is recorded as the deterministic site ``"curve"``.
    """
    t = jnp.asarray(x)
    w = sample("w", dist.Uniform(0.0, 1.0).expand([3]).to_event(1))
    p3 = (
        sample("pow3_c", dist.Uniform(0.0, 1.25)),
        sample("pow3_a", dist.Uniform(-0.6, 0.6)),
        sample("pow3_alpha", dist.LogNormal(0.0, 2.0)),
    )
    jan = (
        sample("jan_a", dist.Uniform(0.0, 1.0)),
        sample("jan_beta", dist.Uniform(0.0, 2.0)),
        sample("jan_k", dist.LogNormal(-2.0, 1.0)),
        sample("jan_delta", dist.LogNormal(0.0, 0.5)),
    )
    il2 = (
        sample("ilog2_c", dist.Uniform(0.0, 1.0)),
        sample("ilog2_a", dist.Uniform(-0.5, 0.5)),
    )
    log_sigma = sample("log_sigma", dist.Normal(-4.0, 1.0))
    epochs = jnp.arange(1, LC_EPOCHS + 1, dtype=t.dtype)
    curve = deterministic("curve", lc_curve(epochs, w, p3, jan, il2))
    valid = (
        jnp.all(jnp.isfinite(curve))
        & jnp.all(curve >= 0.0)
        & jnp.all(curve <= 1.0)
        & (curve[-1] > curve[0])
    )
    factor("valid", jnp.where(valid, 0.0, -jnp.inf))
    return observe("y", dist.Normal(lc_curve(t, w, p3, jan, il2), jnp.exp(log_sigma)), y)
