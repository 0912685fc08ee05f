"""Conjugate models with closed-form posteriors and evidence.

Two one-parameter models whose posterior is in the prior's family:

* :func:`beta_bernoulli`: ``p ~ Beta(a, b)``, ``y_i | p ~ Bernoulli(p)`` i.i.d.; the posterior
  is ``Beta(a + k, b + n - k)`` (``k`` ones among ``n``), and the evidence of the exact 0/1
  sequence is ``B(a + k, b + n - k) / B(a, b)``.
* :func:`normal_normal`: ``mu ~ Normal(mu0, tau0)``, ``y_i | mu ~ Normal(mu, sigma)`` i.i.d.;
  the posterior is Normal with precision ``1/tau0^2 + n/sigma^2`` and the evidence is the
  density of ``y`` under ``Normal(mu0 * 1, sigma^2 I + tau0^2 1 1^T)``.

The exact answers are float64 numpy/scipy computations, independent of JAX.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy import special, stats

import ppl
from ppl import dist


@ppl.model
def beta_bernoulli(data, a=1.0, b=1.0):
    """Beta-Bernoulli model: latent ``"p" ~ Beta(a, b)``, observed ``"y"`` in plate ``"data"``.

    ``data`` is a 1-D array of 0/1 outcomes; the program denotes the (unnormalised) posterior
    measure ``Beta(p; a, b) * prod_i p^y_i (1 - p)^(1 - y_i)``. Returns ``p``.
    """
    data = jnp.asarray(data)
    p = ppl.sample("p", dist.Beta(a, b))
    with ppl.plate("data", data.shape[0]):
        ppl.observe("y", dist.Bernoulli(probs=p), data)
    return p


def beta_bernoulli_exact(data, a=1.0, b=1.0):
    """Exact posterior of :func:`beta_bernoulli`: ``p | y ~ Beta(a + k, b + n - k)``.

    Returns a dict with ``mean`` and ``var`` of the posterior of ``p``, ``log_evidence`` =
    ``log B(a + k, b + n - k) - log B(a, b)`` (the log probability of the exact 0/1 sequence,
    not of the count ``k``), and the posterior parameters ``a_post``, ``b_post``.
    """
    data = np.asarray(data, dtype=np.float64)
    n, k = data.shape[0], float(np.sum(data))
    a_post, b_post = a + k, b + n - k
    mean = a_post / (a_post + b_post)
    var = a_post * b_post / ((a_post + b_post) ** 2 * (a_post + b_post + 1.0))
    log_evidence = special.betaln(a_post, b_post) - special.betaln(a, b)
    return {
        "mean": float(mean),
        "var": float(var),
        "log_evidence": float(log_evidence),
        "a_post": float(a_post),
        "b_post": float(b_post),
    }


@ppl.model
def normal_normal(data, mu0=0.0, tau0=1.0, sigma=1.0):
    """Normal-Normal model: latent ``"mu" ~ Normal(mu0, tau0)``, observed ``"y"`` i.i.d.
    ``Normal(mu, sigma)`` in plate ``"data"`` (``tau0`` and ``sigma`` are standard
    deviations). Returns ``mu``.
    """
    data = jnp.asarray(data)
    mu = ppl.sample("mu", dist.Normal(mu0, tau0))
    with ppl.plate("data", data.shape[0]):
        ppl.observe("y", dist.Normal(mu, sigma), data)
    return mu


def normal_normal_exact(data, mu0=0.0, tau0=1.0, sigma=1.0):
    """Exact posterior of :func:`normal_normal`.

    The posterior of ``mu`` is Normal with variance ``var = 1 / (1/tau0^2 + n/sigma^2)`` and
    mean ``var * (mu0/tau0^2 + sum(y)/sigma^2)``. ``log_evidence`` is ``log p(y_1..y_n)``,
    computed by the identity ``log p(y) = log p(y | mu) + log p(mu) - log p(mu | y)`` at the
    posterior mean. Returns a dict with ``mean``, ``var`` and ``log_evidence``.
    """
    data = np.asarray(data, dtype=np.float64)
    n = data.shape[0]
    var = 1.0 / (1.0 / tau0**2 + n / sigma**2)
    mean = var * (mu0 / tau0**2 + np.sum(data) / sigma**2)
    log_evidence = (
        np.sum(stats.norm.logpdf(data, mean, sigma))
        + stats.norm.logpdf(mean, mu0, tau0)
        - stats.norm.logpdf(mean, mean, np.sqrt(var))
    )
    return {"mean": float(mean), "var": float(var), "log_evidence": float(log_evidence)}
