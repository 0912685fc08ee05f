"""Discrete hidden Markov models and the exact forward-backward algorithm.

:func:`forward_backward` is the forward-backward algorithm of Rabiner 1989 ("A tutorial on
hidden Markov models and selected applications in speech recognition"), in log space: it
gives the log evidence log p(y_{1:T}), the filtering marginals p(x_t | y_{1:t}), the
smoothing marginals p(x_t | y_{1:T}) and the pairwise smoothing marginals
p(x_t, x_{t+1} | y_{1:T}) of any finite-state HMM, given the log-likelihood table
log p(y_t | x_t = k).

:func:`discrete_hmm` is a ppl program: a K = 3 state chain with categorical observations
over 4 symbols. Following the zoo's state-space convention, the initial carry is a fixed
state x_0 = ``init_state``; the first latent state x_1 is drawn from ``trans[init_state]``.
:func:`discrete_hmm_exact` solves it with :func:`forward_backward`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

import ppl
from ppl import dist
from ppl.errors import ShapeMismatchError


def forward_backward(log_init_probs, log_trans, log_lik):
    """Exact inference in a finite-state HMM (Rabiner 1989), in log space, float64 numpy.

    Arguments: ``log_init_probs`` (K,) = log p(x_1 = k); ``log_trans`` (K, K) with
    ``log_trans[i, j] = log p(x_{t+1} = j | x_t = i)``; ``log_lik`` (T, K) with
    ``log_lik[t, k] = log p(y_t | x_t = k)``.

    Returns a dict: ``log_evidence`` (log p(y_{1:T})), ``filtered`` (T, K; p(x_t | y_{1:t})),
    ``smoothed`` (T, K; p(x_t | y_{1:T})), ``pairwise`` (T-1, K, K; ``pairwise[t, i, j] =
    p(x_t = i, x_{t+1} = j | y_{1:T})``), and the log messages ``log_alpha`` (T, K; log
    p(y_{1:t}, x_t)) and ``log_beta`` (T, K; log p(y_{t+1:T} | x_t)).
    """
    log_init_probs = np.asarray(log_init_probs, np.float64)
    log_trans = np.asarray(log_trans, np.float64)
    log_lik = np.asarray(log_lik, np.float64)
    T, K = log_lik.shape
    if log_init_probs.shape != (K,) or log_trans.shape != (K, K):
        raise ShapeMismatchError(
            f"shapes: log_init_probs {log_init_probs.shape}, log_trans {log_trans.shape}, "
            f"log_lik {log_lik.shape}; expected (K,), (K, K), (T, K)"
        )
    log_alpha = np.zeros((T, K))
    log_alpha[0] = log_init_probs + log_lik[0]
    for t in range(1, T):
        log_alpha[t] = logsumexp(log_alpha[t - 1][:, None] + log_trans, axis=0) + log_lik[t]
    log_beta = np.zeros((T, K))
    for t in range(T - 2, -1, -1):
        log_beta[t] = logsumexp(log_trans + (log_lik[t + 1] + log_beta[t + 1])[None, :], axis=1)
    log_evidence = float(logsumexp(log_alpha[-1]))
    filtered = np.exp(log_alpha - logsumexp(log_alpha, axis=1, keepdims=True))
    smoothed = np.exp(log_alpha + log_beta - log_evidence)
    log_pair = (
        log_alpha[:-1, :, None]
        + log_trans[None]
        + (log_lik[1:] + log_beta[1:])[:, None, :]
        - log_evidence
    )
    return {
        "log_evidence": log_evidence,
        "filtered": filtered,
        "smoothed": smoothed / smoothed.sum(axis=1, keepdims=True),
        "pairwise": np.exp(log_pair),
        "log_alpha": log_alpha,
        "log_beta": log_beta,
    }


def _frozen(a):
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


#: Default transition matrix of :func:`discrete_hmm` (rows: from, columns: to); sticky.
HMM_TRANS = _frozen([[0.80, 0.15, 0.05], [0.10, 0.80, 0.10], [0.05, 0.15, 0.80]])
#: Default emission matrix of :func:`discrete_hmm` (rows: state, columns: 4 symbols).
HMM_EMISSION = _frozen([[0.6, 0.2, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.1, 0.1, 0.2, 0.6]])


@ppl.model
def discrete_hmm(ys, trans=HMM_TRANS, emission=HMM_EMISSION, init_state=0):
    """Discrete HMM: fixed ``x_0 = init_state``, ``x_t ~ Categorical(trans[x_{t-1}])`` (site
    ``"x"``), observed ``y_t ~ Categorical(emission[x_t])`` (site ``"y"``), t = 1..T, with
    ``ys`` an integer array (T,). Returns the stacked states. Exact answer:
    :func:`discrete_hmm_exact`.
    """
    trans, emission = jnp.asarray(trans), jnp.asarray(emission)

    def step(x, y):
        x = ppl.sample("x", dist.Categorical(probs=trans[x]))
        ppl.observe("y", dist.Categorical(probs=emission[x]), y)
        return x

    return ppl.markov(step, init=jnp.asarray(init_state), xs=jnp.asarray(ys))


@functools.partial(jax.jit, static_argnames=("T",))
def simulate_discrete_hmm(key, T, trans=HMM_TRANS, emission=HMM_EMISSION, init_state=0):
    """Draw ``(xs, ys)``, integer arrays of shape (T,), from the prior of
    :func:`discrete_hmm`. Jitted; ``T`` static."""
    log_trans, log_emission = jnp.log(jnp.asarray(trans)), jnp.log(jnp.asarray(emission))

    def step(x, k):
        k_x, k_y = jax.random.split(k)
        x = jax.random.categorical(k_x, log_trans[x])
        y = jax.random.categorical(k_y, log_emission[x])
        return x, (x, y)

    _, (xs, ys) = jax.lax.scan(step, jnp.asarray(init_state), jax.random.split(key, T))
    return xs, ys


def discrete_hmm_exact(ys, trans=HMM_TRANS, emission=HMM_EMISSION, init_state=0):
    """Exact posterior of :func:`discrete_hmm` by :func:`forward_backward` with
    p(x_1) = ``trans[init_state]``.

    Returns a dict: ``log_evidence``, ``filtered`` (T, K), ``smoothed`` (T, K) and
    ``pairwise`` (T-1, K, K).
    """
    trans, emission = np.asarray(trans, np.float64), np.asarray(emission, np.float64)
    ys = np.asarray(ys, dtype=int)
    with np.errstate(divide="ignore"):
        log_trans, log_emission = np.log(trans), np.log(emission)
    out = forward_backward(log_trans[init_state], log_trans, log_emission[:, ys].T)
    return {k: out[k] for k in ("log_evidence", "filtered", "smoothed", "pairwise")}
