"""Models without a closed-form posterior, for testing and benchmarking inference.

* :func:`stochastic_volatility`: a nonlinear state-space model with global parameters.
* :func:`logistic_regression`: Bayesian logistic regression with Normal(0, 1) priors.
* :func:`eight_schools`: the non-centred eight schools model (Rubin 1981; Gelman et al.,
  Bayesian Data Analysis, section 5.5), with its standard data.
* The three models of monad-bayes' speed benchmark (Scibior, Kammar & Ghahramani 2018,
  "Functional programming for modular Bayesian inference"; github tweag/monad-bayes,
  ``models/LogReg.hs``, ``models/HMM.hs``, ``models/LDA.hs``, ``benchmark/Speed.hs``),
  which came from the Anglican white paper: :func:`monad_bayes_logreg`,
  :func:`monad_bayes_hmm` and :func:`monad_bayes_lda`, with their data generators.

:func:`monad_bayes_hmm` has finite discrete latent states, so it does have an exact answer
(:func:`monad_bayes_hmm_exact`, by forward-backward), as monad-bayes' own tests use.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

import ppl
from ppl import dist

from .hmm import forward_backward


def _frozen(a, dtype=np.float64):
    a = np.array(a, dtype=dtype)
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------------------
# Stochastic volatility
# ---------------------------------------------------------------------------------------


@ppl.model
def stochastic_volatility(ys):
    """Stochastic volatility: ``"phi" ~ Uniform(-1, 1)``, ``"sigma" ~ HalfNormal(1)``, then
    ``x_0 = 0``, ``x_t ~ Normal(phi x_{t-1}, sigma)`` (site ``"x"``) and observed returns
    ``y_t ~ Normal(0, exp(x_t / 2))`` (site ``"y"``), t = 1..T. Returns the log-volatilities.
    """
    phi = ppl.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = ppl.sample("sigma", dist.HalfNormal(1.0))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(phi * x, sigma))
        ppl.observe("y", dist.Normal(0.0, jnp.exp(x / 2.0)), y)
        return x

    return ppl.markov(step, init=0.0, xs=jnp.asarray(ys))


@functools.partial(jax.jit, static_argnames=("T",))
def simulate_stochastic_volatility(key, T, phi=0.95, sigma=0.25):
    """Draw ``(xs, ys)`` of shape (T,) from :func:`stochastic_volatility` with the given
    ``phi`` and ``sigma``. Jitted; ``T`` static."""
    k_x, k_y = jax.random.split(key)
    noise = sigma * jax.random.normal(k_x, (T,))

    def step(x, e):
        x = phi * x + e
        return x, x

    _, xs = jax.lax.scan(step, jnp.zeros(()), noise)
    return xs, jnp.exp(xs / 2.0) * jax.random.normal(k_y, (T,))


# ---------------------------------------------------------------------------------------
# Logistic regression
# ---------------------------------------------------------------------------------------


@ppl.model
def logistic_regression(X, y):
    """Bayesian logistic regression: ``"w" ~ Normal(0, 1)^D`` (one vector site), ``"b" ~
    Normal(0, 1)``, observed ``y_n ~ Bernoulli(sigmoid(X_n . w + b))`` (site ``"y"``) in plate
    ``"data"``. ``X`` has shape (N, D) and ``y`` shape (N,) with 0/1 entries. Returns the
    logits.
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    w = ppl.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    b = ppl.sample("b", dist.Normal(0.0, 1.0))
    logits = X @ w + b
    with ppl.plate("data", X.shape[0]):
        ppl.observe("y", dist.Bernoulli(logits=logits), y)
    return logits


# ---------------------------------------------------------------------------------------
# Eight schools
# ---------------------------------------------------------------------------------------

#: Estimated treatment effects of the eight schools (Rubin 1981).
EIGHT_SCHOOLS_Y = _frozen([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
#: Their standard errors.
EIGHT_SCHOOLS_SIGMA = _frozen([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@ppl.model
def eight_schools(y=EIGHT_SCHOOLS_Y, sigma=EIGHT_SCHOOLS_SIGMA):
    """Non-centred eight schools: ``"mu" ~ Normal(0, 5)``, ``"tau" ~ HalfCauchy(5)``,
    ``"theta_tilde" ~ Normal(0, 1)`` in plate ``"schools"``, ``theta = mu + tau
    theta_tilde`` (deterministic site ``"theta"``), observed ``y_j ~ Normal(theta_j,
    sigma_j)`` (site ``"y"``). Returns ``theta``.
    """
    y, sigma = jnp.asarray(y), jnp.asarray(sigma)
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    with ppl.plate("schools", y.shape[0]):
        theta_tilde = ppl.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = ppl.deterministic("theta", mu + tau * theta_tilde)
        ppl.observe("y", dist.Normal(theta, sigma), y)
    return theta


# ---------------------------------------------------------------------------------------
# monad-bayes benchmark: logistic regression (models/LogReg.hs)
# ---------------------------------------------------------------------------------------

#: monad-bayes' small LogReg test data set (``LogReg.xs``, ``LogReg.labels``).
MB_LOGREG_XS = _frozen([-10.0, -5.0, 2.0, 6.0, 10.0])
MB_LOGREG_LABELS = _frozen([0, 0, 1, 1, 1], dtype=np.int32)


@ppl.model
def monad_bayes_logreg(xs=MB_LOGREG_XS, labels=MB_LOGREG_LABELS):
    """monad-bayes' ``logisticRegression``: ``"m" ~ Normal(0, 1)``, ``"b" ~ Normal(0, 1)``,
    ``"sigma" ~ Gamma(1, 1)``; for each point a latent noisy logit ``"z" ~ Normal(m x + b,
    sigma)`` (plate ``"data"``) and an observed label ``"label" ~ Bernoulli(sigmoid(z))``
    (monad-bayes writes this as ``factor (if label then p else 1 - p)``, the same weight).
    Like monad-bayes it returns the predicted probability at x = 8, drawn through a latent
    ``"z_pred" ~ Normal(8 m + b, sigma)``.
    """
    xs, labels = jnp.asarray(xs), jnp.asarray(labels)
    m = ppl.sample("m", dist.Normal(0.0, 1.0))
    b = ppl.sample("b", dist.Normal(0.0, 1.0))
    sigma = ppl.sample("sigma", dist.Gamma(1.0, 1.0))
    with ppl.plate("data", xs.shape[0]):
        z = ppl.sample("z", dist.Normal(m * xs + b, sigma))
        ppl.observe("label", dist.Bernoulli(logits=z), labels)
    z_pred = ppl.sample("z_pred", dist.Normal(8.0 * m + b, sigma))
    return jax.nn.sigmoid(z_pred)


@functools.partial(jax.jit, static_argnames=("n",))
def simulate_monad_bayes_logreg_data(key, n):
    """monad-bayes' ``LogReg.syntheticData n``: ``x ~ Uniform(-1, 1)`` and an independent
    label ``~ Bernoulli(0.5)``. Returns ``(xs, labels)`` of shape (n,). Jitted; ``n`` static."""
    k_x, k_l = jax.random.split(key)
    xs = jax.random.uniform(k_x, (n,), minval=-1.0, maxval=1.0)
    labels = jax.random.bernoulli(k_l, 0.5, (n,)).astype(jnp.int32)
    return xs, labels


# ---------------------------------------------------------------------------------------
# monad-bayes benchmark: HMM (models/HMM.hs)
# ---------------------------------------------------------------------------------------

#: monad-bayes' HMM transition matrix (``HMM.trans``; rows: from, columns: to).
MB_HMM_TRANS = _frozen([[0.1, 0.4, 0.5], [0.2, 0.6, 0.2], [0.15, 0.7, 0.15]])
#: monad-bayes' emission means (``HMM.emissionMean``); the emission sd is 1.
MB_HMM_MEANS = _frozen([-1.0, 1.0, 0.0])
#: monad-bayes' observed values (``HMM.values``), in list order.
MB_HMM_VALUES = _frozen(
    [0.9, 0.8, 0.7, 0.0, -0.025, -5.0, -2.0, -0.1, 0.0, 0.13, 0.45, 6.0, 0.2, 0.3, -1.0, -1.0]
)


@ppl.model
def monad_bayes_hmm(ys=MB_HMM_VALUES):
    """monad-bayes' ``hmm``: 3 states, ``"x0" ~ uniform{0, 1, 2}`` (a global latent drawn
    before the time loop, monad-bayes' ``start``), ``x_t ~ Categorical(MB_HMM_TRANS[x_{t-1}])``
    (site ``"x"``), observed ``y_t ~ Normal(MB_HMM_MEANS[x_t], 1)`` (site ``"y"``).

    monad-bayes folds its data list from the right, so its first transition explains the
    *last* list element; here ``ys`` is in time order, so ``monad_bayes_hmm(values[::-1])``
    is the measure of monad-bayes' ``hmm values`` (the log evidence differs between the two
    orders; the benchmark's cost does not). Returns the stacked states x_{1:T}.
    """
    trans, means = jnp.asarray(MB_HMM_TRANS), jnp.asarray(MB_HMM_MEANS)
    x0 = ppl.sample("x0", dist.Categorical(probs=jnp.ones(3) / 3.0))

    def step(x, y):
        x = ppl.sample("x", dist.Categorical(probs=trans[x]))
        ppl.observe("y", dist.Normal(means[x], 1.0), y)
        return x

    return ppl.markov(step, init=x0, xs=jnp.asarray(ys))


@functools.partial(jax.jit, static_argnames=("n",))
def simulate_monad_bayes_hmm_data(key, n):
    """monad-bayes' ``HMM.syntheticData n``: ``n`` values drawn uniformly from {0, 1, 2}
    (as floats; not a draw from the HMM). Jitted; ``n`` static."""
    return jax.random.randint(key, (n,), 0, 3).astype(jnp.float32)


def monad_bayes_hmm_exact(ys=MB_HMM_VALUES):
    """Exact posterior of :func:`monad_bayes_hmm` over x_{1:T} (x0 summed out), by
    :func:`ppl.models.hmm.forward_backward` with p(x_1) = uniform @ MB_HMM_TRANS. Returns a dict:
    ``log_evidence``, ``filtered``, ``smoothed`` (T, 3)."""
    ys = np.asarray(ys, np.float64)
    log_lik = stats.norm.logpdf(ys[:, None], MB_HMM_MEANS[None, :], 1.0)
    init = np.full(3, 1.0 / 3.0) @ MB_HMM_TRANS
    out = forward_backward(np.log(init), np.log(MB_HMM_TRANS), log_lik)
    return {k: out[k] for k in ("log_evidence", "filtered", "smoothed")}


# ---------------------------------------------------------------------------------------
# monad-bayes benchmark: LDA (models/LDA.hs)
# ---------------------------------------------------------------------------------------

#: monad-bayes' LDA vocabulary.
MB_LDA_VOCABULARY = ("bear", "wolf", "python", "prolog")
_MB_LDA_TEXT = (
    "bear wolf bear wolf bear wolf python wolf bear wolf",
    "python prolog python prolog python prolog python prolog python prolog",
    "bear wolf bear wolf bear wolf bear wolf bear wolf",
    "python prolog python prolog python prolog python prolog python prolog",
    "bear wolf bear python bear wolf bear wolf bear wolf",
)
#: monad-bayes' 5 documents of 10 words, as word indices into the vocabulary, shape (5, 10).
MB_LDA_DOCS = _frozen(
    [[MB_LDA_VOCABULARY.index(w) for w in doc.split()] for doc in _MB_LDA_TEXT], dtype=np.int32
)


@ppl.model
def monad_bayes_lda(docs=MB_LDA_DOCS, num_topics=2, vocab_size=4):
    """monad-bayes' ``lda`` (2 topics, 4 words): per topic a word distribution ``"phi" ~
    Dirichlet(1, 1, 1, 1)`` (plate ``"topics"``, value (2, 4)); per document a topic
    distribution ``"theta" ~ Dirichlet(1, 1)`` (plate ``"docs"``, dim -2, value (D, 1, 2));
    per word a topic ``"z" ~ Categorical(theta_d)`` (plates ``"docs"`` x ``"words"``, value
    (D, N)) and the observed word ``"w" ~ Categorical(phi[z])`` (monad-bayes writes this as
    ``factor phi[z][w]``, the same weight). ``docs`` is an integer array (D, N) of word
    indices. Returns ``phi``.
    """
    docs = jnp.asarray(docs)
    num_docs, num_words = docs.shape
    with ppl.plate("topics", num_topics):
        phi = ppl.sample("phi", dist.Dirichlet(jnp.ones(vocab_size)))
    with ppl.plate("docs", num_docs, dim=-2):
        theta = ppl.sample("theta", dist.Dirichlet(jnp.ones(num_topics)))
        with ppl.plate("words", num_words, dim=-1):
            z = ppl.sample("z", dist.Categorical(probs=theta))
            ppl.observe("w", dist.Categorical(probs=phi[z]), docs)
    return phi


@functools.partial(jax.jit, static_argnames=("num_docs", "num_words", "vocab_size"))
def simulate_monad_bayes_lda_data(key, num_docs=5, num_words=10, vocab_size=4):
    """monad-bayes' ``LDA.syntheticData d w``: ``num_docs`` documents of ``num_words`` words
    drawn uniformly from the vocabulary. Returns an integer array (num_docs, num_words).
    Jitted; ``num_docs``, ``num_words``, ``vocab_size`` static."""
    return jax.random.randint(key, (num_docs, num_words), 0, vocab_size)
