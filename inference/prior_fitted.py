"""Prior-data fitted networks (PFNs): amortized posterior prediction trained on a ppl program.

A program ``model(x, y=None)`` with inputs ``x`` and an observed site ``y`` is a prior over
datasets. A PFN (Müller et al. 2022, "Transformers Can Do Bayesian Inference", ICLR) is a
transformer trained on datasets drawn from that prior to output the posterior predictive
distribution ``p(y* | x*, D)`` of a query point given a training set ``D`` in one forward
pass; minimising the expected negative log-likelihood of held-out points (their eq. 2,
"prior-data NLL") minimises the expected KL divergence to the true posterior predictive
(their Insight 1). Adriaensen et al. (2023, "Efficient Bayesian Learning Curve
Extrapolation using Prior-Data Fitted Networks", NeurIPS) use the same recipe on a
parametric learning-curve prior, with the training set a curve's first epochs.

The pieces, each a small function:

* :func:`sample_datasets` — prior sampling from the program: ``num_points`` inputs from
  ``inputs(key, n)``, outputs from the program's prior predictive, under ``vmap``, with a
  per-dataset training-set size ``n_train`` (the first ``n_train`` points are the training
  set, the rest the queries; for i.i.d. inputs that is a random split, for the ordered
  epochs of a learning curve it is a prefix). A program whose ``factor`` sites weigh its
  draws (a hard constraint is a factor of 0 or -inf) is sampled by rejection: draw
  ``oversample`` times more datasets and keep ``batch`` of them chosen without replacement
  with probabilities proportional to their factor weight (Gumbel top-k), which for 0/-inf
  weights is exactly rejection sampling.
* :class:`PFNNetwork` — the transformer (equinox): each training point is the embedding
  ``W_x x + W_y y``, each query ``W_x x + q`` with a learned query vector; no positional
  encodings, so the output is invariant to permutations of the training set; every token
  attends only to the training points (Müller et al. 2022, section 4.1 and figure 2), and
  to a learned attention-sink token, which lets the network tell how many points it has.
  The bucket logits come from a linear head, plus optionally a 2-layer MLP decoder
  (``decoder=H``) for bar distributions with many more buckets than the network's width.
* :class:`BarDistribution` — the Riemann ("bar") output distribution (Müller et al. 2022,
  section 4.3): K buckets whose borders are quantiles of prior samples of the target, so
  each bucket holds equal prior mass; piecewise-constant density inside, and half-normal
  tails outside the inner borders so every real value has positive density (the
  "full support" variant of the PFN code base).
* :func:`train_chunk` — ``chunk`` Adam steps (optax) on fresh prior batches inside one
  jitted ``lax.scan``; :meth:`PFN.fit` runs the chunks under a tqdm bar.
* :meth:`PFN.save` / :func:`load` — checkpoints in one ``.npz`` file (configuration,
  normalisation, bucket borders and the network's arrays).

Target modes: ``target="y"`` (default) predicts the observed site at query points;
``target="<latent site>"`` predicts a scalar latent of the program (one extra query token
without an input) from the training set: its posterior ``p(theta | D)``.

``infer.pfn(...)`` configures one; ``.fit(key, model, num_steps=...)`` trains it;
``.run(key, model, x, y, x_query=...)`` returns a :class:`~ppl.Posterior` with draws from
the predicted distribution (site ``y`` at the query points, or the latent's site), whose
``info`` holds the bucket log-probabilities, the borders, the predictive mean and the
predictive log-density function.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ppl.inference.base import check_key
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, record

from ppl.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    NotFittedError,
    ShapeMismatchError,
    UnknownOptionError,
    UnsupportedModelError,
    check_count,
    check_nonnegative,
    check_positive,
)
from ppl.posterior import Posterior
from ppl.primitives import KIND_KEY

__all__ = [
    "PFN",
    "BarDistribution",
    "PFNNetwork",
    "load",
    "make_borders",
    "pfn",
    "sample_datasets",
]

#: half-normal median / scale: the tail scale puts half the tail mass inside the edge bucket.
_HALFNORMAL_MEDIAN = 0.6744897501960817
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------- bar distribution


def make_borders(samples, num_buckets: int):
    """K + 1 bucket borders at the quantiles 0, 1/K, ..., 1 of prior samples of the target
    (Müller et al. 2022, section 4.3: equal prior mass per bucket). Ties are broken by a
    tiny spread so the borders are strictly increasing."""
    s = np.sort(np.asarray(samples, np.float64).ravel())
    s = s[np.isfinite(s)]
    if s.size < 2 * num_buckets:
        raise InvalidArgumentError(
            f"make_borders: need at least {2 * num_buckets} finite prior samples for "
            f"{num_buckets} buckets, got {s.size}"
        )
    borders = np.quantile(s, np.linspace(0.0, 1.0, num_buckets + 1))
    spread = max(float(borders[-1] - borders[0]), 1.0) * 1e-6
    for i in range(1, len(borders)):
        borders[i] = max(borders[i], borders[i - 1] + spread)
    return borders


class BarDistribution(eqx.Module):
    """The Riemann distribution over K buckets with half-normal tails.

    Bucket k in 1..K-2 has the uniform density ``p_k / (b_{k+1} - b_k)`` on ``[b_k,
    b_{k+1})``; bucket 0 is a half-normal going left from ``b_1`` and bucket K-1 one going
    right from ``b_{K-1}``, each with the scale that puts half its mass inside the original
    edge bucket (so all of R has positive density and the total mass is sum_k p_k = 1).
    """

    borders: jax.Array

    @property
    def num_buckets(self) -> int:
        return self.borders.shape[0] - 1

    @property
    def widths(self):
        return jnp.diff(self.borders)

    def _tail_scales(self):
        w = self.widths
        return w[0] / _HALFNORMAL_MEDIAN, w[-1] / _HALFNORMAL_MEDIAN

    def bucket(self, y):
        """Index of the bucket holding ``y`` (0 and K-1 are the tails)."""
        inner = self.borders[1:-1]
        return jnp.clip(jnp.searchsorted(inner, y, side="right"), 0, self.num_buckets - 1)

    def log_density_in_bucket(self, y, k):
        """log of the normalised density of bucket ``k`` at ``y`` (given y is in bucket k)."""
        w = self.widths
        s_left, s_right = self._tail_scales()
        half = 0.5 * math.log(2.0 / math.pi)
        left = half - jnp.log(s_left) - 0.5 * ((self.borders[1] - y) / s_left) ** 2
        right = half - jnp.log(s_right) - 0.5 * ((y - self.borders[-2]) / s_right) ** 2
        inner = -jnp.log(w[k])
        return jnp.where(k == 0, left, jnp.where(k == self.num_buckets - 1, right, inner))

    def log_prob(self, logits, y):
        """log p(y) for bucket logits (..., K) and values y (...)."""
        y = jnp.asarray(y)
        shape = jnp.broadcast_shapes(y.shape, logits.shape[:-1])
        y = jnp.broadcast_to(y, shape)
        k = self.bucket(y)
        log_p = jnp.broadcast_to(jax.nn.log_softmax(logits, axis=-1), (*shape, logits.shape[-1]))
        log_pk = jnp.take_along_axis(log_p, k[..., None], axis=-1)[..., 0]
        return log_pk + self.log_density_in_bucket(y, k)

    def mean(self, logits):
        """Mean: bucket midpoints inside, ``b_1 - s sqrt(2/pi)`` and ``b_{K-1} + s sqrt(2/pi)``
        for the tails."""
        b = self.borders
        s_left, s_right = self._tail_scales()
        c = math.sqrt(2.0 / math.pi)
        mids = 0.5 * (b[:-1] + b[1:])
        mids = mids.at[0].set(b[1] - s_left * c).at[-1].set(b[-2] + s_right * c)
        return jnp.sum(jax.nn.softmax(logits, axis=-1) * mids, axis=-1)

    def variance(self, logits):
        """Variance: the uniform inner buckets' second moments ``(a^2 + ab + b^2) / 3`` and
        the half-normal tails' ``e^2 -+ 2 e s sqrt(2/pi) + s^2`` about their edge ``e``."""
        b = self.borders
        s_left, s_right = self._tail_scales()
        c = math.sqrt(2.0 / math.pi)
        m2 = (b[:-1] ** 2 + b[:-1] * b[1:] + b[1:] ** 2) / 3.0
        m2 = m2.at[0].set(b[1] ** 2 - 2.0 * b[1] * s_left * c + s_left**2)
        m2 = m2.at[-1].set(b[-2] ** 2 + 2.0 * b[-2] * s_right * c + s_right**2)
        p = jax.nn.softmax(logits, axis=-1)
        return jnp.maximum(jnp.sum(p * m2, axis=-1) - self.mean(logits) ** 2, 0.0)

    def quantile(self, logits, q):
        """The ``q``-quantile (q in (0, 1), broadcast against ``logits[..., 0]``): the
        inverse of the piecewise-linear CDF inside, of the half-normal CDFs in the tails."""
        p = jax.nn.softmax(logits, axis=-1)
        q = jnp.asarray(q, p.dtype)
        shape = jnp.broadcast_shapes(q.shape, p.shape[:-1])
        q = jnp.broadcast_to(q, shape)
        p = jnp.broadcast_to(p, (*shape, p.shape[-1]))
        cum = jnp.cumsum(p, axis=-1)
        k = jnp.clip(jnp.sum(cum < q[..., None], axis=-1), 0, self.num_buckets - 1)
        p_k = jnp.take_along_axis(p, k[..., None], axis=-1)[..., 0]
        below = jnp.take_along_axis(cum, k[..., None], axis=-1)[..., 0] - p_k
        frac = jnp.clip((q - below) / jnp.maximum(p_k, 1e-30), 0.0, 1.0)
        return self._at_fraction(k, frac)

    def _at_fraction(self, k, frac):
        """The value at which bucket ``k`` holds the fraction ``frac`` of its mass to its
        left: linear inside, the inverse half-normal CDF in the tails."""
        b = self.borders
        s_left, s_right = self._tail_scales()
        ndtri = jax.scipy.special.ndtri
        inner = b[k] + frac * (b[k + 1] - b[k])
        left = b[1] - s_left * ndtri(1.0 - 0.5 * jnp.maximum(frac, 1e-12))
        right = b[-2] + s_right * ndtri(0.5 + 0.5 * jnp.minimum(frac, 1.0 - 1e-7))
        return jnp.where(k == 0, left, jnp.where(k == self.num_buckets - 1, right, inner))

    def sample(self, key, logits, num_samples: int):
        """``num_samples`` draws for each row of logits: a bucket, then a point in it.

        The bucket is found by inverting the cumulative bucket probabilities (a binary
        search, O(log K) per draw, where Gumbel-max sampling would draw K numbers)."""
        k_bucket, k_pos = jax.random.split(key)
        batch = logits.shape[:-1]
        cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1).reshape(-1, logits.shape[-1])
        v = jax.random.uniform(k_bucket, (num_samples, cdf.shape[0]), dtype=cdf.dtype)
        v = v * cdf[:, -1]  # the total is 1 up to rounding
        k = jax.vmap(lambda c, w: jnp.searchsorted(c, w, side="right"), in_axes=(0, 1),
                     out_axes=1)(cdf, v)
        k = jnp.clip(k, 0, self.num_buckets - 1).reshape(num_samples, *batch)
        return self._at_fraction(k, jax.random.uniform(k_pos, k.shape))


# --------------------------------------------------------------------------- network


class _Block(eqx.Module):
    """One pre-norm transformer layer: masked multi-head attention, then an MLP."""

    norm1: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, width, heads, hidden, key):
        k1, k2 = jax.random.split(key)
        self.norm1 = eqx.nn.LayerNorm(width)
        self.attention = eqx.nn.MultiheadAttention(heads, width, key=k1)
        self.norm2 = eqx.nn.LayerNorm(width)
        self.mlp = eqx.nn.MLP(width, width, hidden, depth=1, activation=jax.nn.gelu, key=k2)

    def __call__(self, h, mask):
        z = jax.vmap(self.norm1)(h)
        h = h + self.attention(z, z, z, mask=mask)
        return h + jax.vmap(self.mlp)(jax.vmap(self.norm2)(h))


class PFNNetwork(eqx.Module):
    """The PFN transformer over one dataset (Müller et al. 2022, section 4.1).

    ``__call__(x, y, is_train)`` with ``x`` (N, d) and ``y`` (N,) normalised, ``is_train``
    (N,) bool, returns bucket logits (N, K). Token i attends to token j iff j is a training
    point, so queries see the training set only and not each other, and there are no
    positional encodings (permutation invariance over the training set).

    With ``sink=True`` (the default) a learned token that every token attends to is prepended
    (an attention sink; it is updated by the layers like a training point and dropped from
    the output). Without it a query's attention is a softmax average over the training points,
    which is the same for a training set and for that set repeated, so the network cannot
    tell how many points it has seen; the sink's share of the attention falls as the
    training set grows, which lets posterior widths shrink with n (e.g. the 1/sqrt(1 + n)
    sd of a Normal mean).

    The output logits are a linear head of the final (layer-normed) token states. With
    ``decoder=H > 0`` a 2-layer MLP decoder (width -> H -> K, GELU; the decoder of the PFN
    reference implementation) is added to them. A linear head from a ``width``-dimensional
    state gives logits of rank at most ``width``, which limits the shapes a bar distribution
    with K >> width buckets can take (e.g. the sharp predictives of low-noise learning
    curves). The decoder's last layer starts at zero, so adding one to a trained network
    (:meth:`with_decoder`) leaves its predictions unchanged until training resumes.
    """

    x_embed: eqx.nn.Linear
    y_embed: eqx.nn.Linear
    query: jax.Array
    sink: jax.Array | None
    blocks: list
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear
    decoder: eqx.nn.MLP | None

    def __init__(self, num_features, num_buckets, width, depth, heads, hidden, key, sink=True,
                 decoder=0):
        keys = jax.random.split(key, depth + 5)
        self.x_embed = eqx.nn.Linear(num_features, width, key=keys[0])
        self.y_embed = eqx.nn.Linear(1, width, key=keys[1])
        self.query = 0.02 * jax.random.normal(keys[2], (width,))
        self.sink = 0.02 * jax.random.normal(keys[4], (width,)) if sink else None
        self.blocks = [_Block(width, heads, hidden, k) for k in keys[5:]]
        self.norm = eqx.nn.LayerNorm(width)
        self.head = eqx.nn.Linear(width, num_buckets, key=keys[3])
        self.decoder = (_zero_output_mlp(width, num_buckets, decoder, jax.random.fold_in(key, 1))
                        if decoder else None)

    def with_decoder(self, hidden, key):
        """This network with a fresh 2-layer decoder of ``hidden`` units whose output is zero
        (so the logits are unchanged); ``hidden=0`` removes the decoder."""
        width, num_buckets = self.head.in_features, self.head.out_features
        new = _zero_output_mlp(width, num_buckets, hidden, key) if hidden else None
        return eqx.tree_at(lambda n: n.decoder, self, new, is_leaf=lambda v: v is None)

    def __call__(self, x, y, is_train):
        ex = jax.vmap(self.x_embed)(x)
        ey = jax.vmap(self.y_embed)(y[:, None])
        h = ex + jnp.where(is_train[:, None], ey, self.query)
        if self.sink is not None:
            h = jnp.concatenate([self.sink[None, :], h])
            is_train = jnp.concatenate([jnp.ones((1,), bool), is_train])
        mask = jnp.broadcast_to(is_train[None, :], (h.shape[0], h.shape[0]))
        for block in self.blocks:
            h = block(h, mask)
        if self.sink is not None:
            h = h[1:]
        z = jax.vmap(self.norm)(h)
        logits = jax.vmap(self.head)(z)
        if self.decoder is not None:
            logits = logits + jax.vmap(self.decoder)(z)
        return logits


def _zero_output_mlp(width, num_buckets, hidden, key):
    """A width -> hidden -> num_buckets GELU MLP whose last layer is zero (output 0)."""
    mlp = eqx.nn.MLP(width, num_buckets, check_count("decoder", hidden), depth=1,
                     activation=jax.nn.gelu, key=key)
    last = mlp.layers[-1]
    return eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                       (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))


# --------------------------------------------------------------------------- prior sampling


def _as_features(x):
    """The inputs of one dataset as (N, d): 1-D inputs (N,) become one feature."""
    x = jnp.asarray(x)
    return x[:, None] if x.ndim == 1 else x


def _draw_program(key, model, x, observed, target):
    """One prior-predictive draw of the program at inputs x: (y, target value, factor lw)."""
    _, trace, _ = record(model, key, (x,), {}, predictive=True)
    y = trace.values[observed]
    t = y if target == observed else trace.values[target]
    return y, t, trace.log_prob_sum(FACTOR)


def sample_datasets(key, model, inputs, num_points, batch, observed="y", target="y",
                    oversample=1, min_train=1, max_train=None):
    """A batch of datasets from the program's prior predictive, with training-set sizes.

    Returns ``(x, y, t, n_train, short)``: inputs ``(batch, N)`` (as ``inputs`` gives them),
    outputs ``(batch, N)``, the target (``y`` again, or the latent ``(batch,)``), the
    training-set sizes ``(batch,)`` drawn uniformly from ``min_train..max_train`` (Müller et
    al. 2022, section 4.2: the number of training points varies), and ``short``: True when
    fewer than ``batch`` of the ``oversample * batch`` draws had positive factor weight (the
    batch then holds rejected draws; :meth:`PFN.fit` counts these).
    """
    k_x, k_prog, k_sel, k_n = jax.random.split(key, 4)
    total = batch * oversample
    xs = jax.vmap(lambda k: inputs(k, num_points))(jax.random.split(k_x, total))
    ys, ts, lws = jax.vmap(lambda k, x: _draw_program(k, model, x, observed, target))(
        jax.random.split(k_prog, total), xs
    )
    if oversample > 1:
        gumbel = jax.random.gumbel(k_sel, (total,))
        scores = jnp.where(jnp.isfinite(lws), lws + gumbel, -jnp.inf)
        _, keep = jax.lax.top_k(scores, batch)
        short = jnp.sum(jnp.isfinite(lws)) < batch
        xs, ys, ts = xs[keep], ys[keep], ts[keep]
    else:
        short = jnp.any(~jnp.isfinite(lws))
    hi = num_points - 1 if max_train is None else max_train
    n_train = jax.random.randint(k_n, (batch,), min_train, hi + 1)
    return xs, ys, ts, n_train, short


# --------------------------------------------------------------------------- the PFN


class _Config(eqx.Module):
    """Static hyperparameters of a PFN (stored in checkpoints)."""

    num_points: int = eqx.field(static=True)
    num_features: int = eqx.field(static=True)
    num_buckets: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)
    observed: str = eqx.field(static=True)
    target: str = eqx.field(static=True)
    sink: bool = eqx.field(static=True, default=True)
    decoder: int = eqx.field(static=True, default=0)


class _Normaliser(eqx.Module):
    """Affine standardisation of inputs, outputs (network inputs) learnt from prior draws."""

    x_mean: jax.Array
    x_std: jax.Array
    y_mean: jax.Array
    y_std: jax.Array

    def x(self, x):
        return (_as_features(x) - self.x_mean) / self.x_std

    def y(self, y):
        return (y - self.y_mean) / self.y_std


def _tokens(config, norm, x, y, n_train):
    """Token inputs of one dataset: (x (T, d), y (T,), is_train (T,), is_query (T,)).

    Target ``y``: T = N, the first ``n_train`` points train, the rest are queries. Latent
    target: T = N + 1, the extra last token (input 0) is the one query.
    """
    xf = norm.x(x)
    yn = norm.y(y)
    idx = jnp.arange(x.shape[0])
    is_train = idx < n_train
    if config.target == config.observed:
        return xf, yn, is_train, ~is_train
    xf = jnp.concatenate([xf, jnp.zeros((1, xf.shape[-1]), xf.dtype)])
    yn = jnp.concatenate([yn, jnp.zeros((1,), yn.dtype)])
    is_train = jnp.concatenate([is_train, jnp.zeros((1,), bool)])
    return xf, yn, is_train, ~jnp.concatenate([jnp.ones_like(idx, bool), jnp.zeros((1,), bool)])


def _dataset_nll(net, config, norm, bars, x, y, t, n_train):
    """Sum and count of the NLL of the targets at the query tokens of one dataset (eq. 2 of
    Müller et al. 2022, the prior-data negative log-likelihood)."""
    xf, yn, is_train, is_query = _tokens(config, norm, x, y, n_train)
    logits = net(xf, yn, is_train)
    target = t if config.target == config.observed else jnp.concatenate([y, t[None]])
    lp = bars.log_prob(logits, target)
    return -jnp.sum(jnp.where(is_query, lp, 0.0)), jnp.sum(is_query)


LOSS_WEIGHTINGS = ("point", "dataset")


def _check_choice(where, argument, value, choices):
    """Raise :class:`UnknownOptionError` naming ``where`` and ``argument`` unless
    ``value`` is one of ``choices``."""
    if value not in choices:
        raise UnknownOptionError(
            f"{where}: {argument} must be one of {choices}, got {value!r}"
        )


def batch_loss(net, config, norm, bars, x, y, t, n_train, weighting="point"):
    """NLL of a batch of datasets' query points.

    ``weighting="point"``: the mean NLL per query point over the batch, so a dataset counts
    in proportion to its number of queries (short training sets dominate).
    ``weighting="dataset"``: the mean over datasets of each dataset's mean NLL per query, so
    every training-set size counts equally, as when each batch shares one training-set size
    and its loss is the mean over its queries (Müller et al. 2022, section 4.2). Both have
    the same minimiser, the posterior predictive at every training-set size (eq. 2); they
    differ in how a network of limited capacity trades one size against another.
    """
    _check_choice("batch_loss", "loss_weighting", weighting, LOSS_WEIGHTINGS)
    nll, count = jax.vmap(lambda *a: _dataset_nll(net, config, norm, bars, *a))(x, y, t, n_train)
    if weighting == "dataset":
        return jnp.mean(nll / jnp.maximum(count, 1))
    return jnp.sum(nll) / jnp.maximum(jnp.sum(count), 1)


def train_chunk(params, static, opt_state, key, *, optimizer, sample, config, norm, bars, chunk,
                weighting="point"):
    """``chunk`` Adam steps, each on a fresh prior batch, in one ``lax.scan``; ``weighting``
    as in :func:`batch_loss`.

    Returns ``(params, opt_state, losses (chunk,), short batches)``.
    """

    def step(carry, k):
        params, opt_state = carry
        x, y, t, n, short = sample(k)

        def loss_fn(p):
            return batch_loss(eqx.combine(p, static), config, norm, bars, x, y, t, n,
                              weighting)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, short)

    (params, opt_state), (losses, shorts) = jax.lax.scan(
        step, (params, opt_state), jax.random.split(key, chunk)
    )
    return params, opt_state, losses, jnp.sum(shorts)


class PFN:
    """``pfn(...)``: a prior-data fitted network for one program; see :func:`pfn`."""

    method = "pfn"

    def __init__(self, num_points=50, inputs=None, target="y", observed="y", num_buckets=100,
                 width=64, depth=3, heads=4, hidden=None, batch_size=64, learning_rate=1e-3,
                 warmup=None, chunk=100, min_train=1, sink=True, decoder=0,
                 loss_weighting="point", progress_bar=True):
        self.num_points = check_count("num_points", num_points)
        if self.num_points < 2:
            raise InvalidArgumentError(f"pfn: num_points must be >= 2, got {num_points}")
        if inputs is not None and not callable(inputs):
            raise ArgumentTypeError(f"pfn: inputs must be a function (key, n) -> x, got {inputs!r}")
        self.inputs = inputs if inputs is not None else _uniform_inputs
        if not isinstance(target, str) or not isinstance(observed, str):
            raise ArgumentTypeError("pfn: target and observed must be site names (str)")
        self.target, self.observed = target, observed
        self.num_buckets = check_count("num_buckets", num_buckets)
        if self.num_buckets < 3:
            raise InvalidArgumentError(f"pfn: num_buckets must be >= 3, got {num_buckets}")
        self.width = check_count("width", width)
        self.depth = check_count("depth", depth)
        self.heads = check_count("heads", heads)
        if self.width % self.heads:
            raise InvalidArgumentError(f"pfn: width={width} is not divisible by heads={heads}")
        self.hidden = 2 * self.width if hidden is None else check_count("hidden", hidden)
        self.batch_size = check_count("batch_size", batch_size)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.warmup = None if warmup is None else check_nonnegative("warmup", warmup)
        self.chunk = check_count("chunk", chunk)
        self.min_train = check_count("min_train", min_train)
        self.sink = bool(sink)
        self.decoder = 0 if not decoder else check_count("decoder", decoder)
        _check_choice("pfn", "loss_weighting", loss_weighting, LOSS_WEIGHTINGS)
        self.loss_weighting = loss_weighting
        self.progress_bar = bool(progress_bar)
        self.network = None
        self.config = None
        self.normaliser = None
        self.bars = None
        self.model_name = None
        self.history = {}
        self._predict = {}

    # ------------------------------------------------------------------- set-up

    @property
    def latent_mode(self) -> bool:
        return self.target != self.observed

    def _max_train(self):
        return self.num_points if self.latent_mode else self.num_points - 1

    def _check_program(self, key, model):
        """Sites of one prior draw; raises naming the observed/target site if absent."""
        x = self.inputs(key, self.num_points)
        _, trace, raw = record(model, key, (x,), {}, predictive=True)
        observed = [n for n, site in raw.items()
                    if site.get("infer", {}).get(KIND_KEY) == "observe"]
        if self.observed not in observed:
            raise UnsupportedModelError(
                f"pfn: the program has no observed site '{self.observed}' (observed sites: "
                f"{observed}); a PFN prior is a program model(x, y=None)"
            )
        yshape = jnp.shape(trace.values[self.observed])
        if yshape != (self.num_points,):
            raise ShapeMismatchError(
                f"pfn: observed site '{self.observed}' has shape {yshape} for "
                f"{self.num_points} inputs; it must have one value per input"
            )
        if self.latent_mode:
            latent = [n for n in trace.names(LATENT, DETERMINISTIC) if n not in observed]
            if self.target not in latent:
                raise UnsupportedModelError(
                    f"pfn: target='{self.target}' is not a latent site of the program "
                    f"(latent sites: {latent})"
                )
            if jnp.shape(trace.values[self.target]) != ():
                raise ShapeMismatchError(
                    f"pfn: target site '{self.target}' has shape "
                    f"{jnp.shape(trace.values[self.target])}; only scalar latents are supported"
                )
        return x

    def _acceptance(self, key, model, draws=2048):
        """Fraction of prior draws with finite factor weight (for rejection sampling)."""
        xs = jax.vmap(lambda k: self.inputs(k, self.num_points))(jax.random.split(key, draws))
        _, _, lws = jax.jit(jax.vmap(
            lambda k, x: _draw_program(k, model, x, self.observed, self.observed)
        ))(jax.random.split(jax.random.fold_in(key, 1), draws), xs)
        return float(jnp.mean(jnp.isfinite(lws)))

    def _prior_statistics(self, key, model, oversample, draws=20_000):
        """Normaliser and bucket borders from ``draws`` prior datasets' worth of samples."""
        batch = max(1, draws // self.num_points) if not self.latent_mode else draws // 4
        x, y, t, _, _ = jax.jit(lambda k: sample_datasets(
            k, model, self.inputs, self.num_points, batch, self.observed, self.target,
            oversample, self.min_train, self._max_train()))(key)
        xf = np.asarray(jax.vmap(_as_features)(x))
        xf = xf.reshape(-1, xf.shape[-1])
        y = np.asarray(y)
        norm = _Normaliser(
            jnp.asarray(xf.mean(0)), jnp.asarray(np.maximum(xf.std(0), 1e-8)),
            jnp.asarray(y.mean()), jnp.asarray(max(float(y.std()), 1e-8)),
        )
        return norm, BarDistribution(jnp.asarray(make_borders(t, self.num_buckets)))

    # ------------------------------------------------------------------- training

    def fit(self, key, model, num_steps=1000, checkpoint=None, max_seconds=None,
            resume=False):
        """Train on ``num_steps`` fresh prior batches; returns ``self``.

        The loop is ``ceil(num_steps / chunk)`` calls of the jitted :func:`train_chunk` (each a
        ``lax.scan`` over ``chunk`` Adam steps) under a tqdm bar. Adam with global-norm
        clipping at 1 and a linear warm-up then cosine decay of the learning rate (Müller
        et al. 2022, appendix: Adam with warm-up and cosine annealing). ``self.history``
        gets the per-step losses, the wall time (in all, and per chunk with its checkpoint,
        the first one including compilation) and the number of short batches. With
        ``checkpoint=path`` the network is saved there after every chunk (so an interrupted
        run leaves its latest state). With ``max_seconds`` training stops after the first
        chunk that ends past that wall time (``history["num_steps"]`` says how many were run).
        With ``resume=True`` training continues from the current network (trained or
        loaded from a checkpoint, for the same program) with a fresh optimizer and learning
        rate schedule, keeping its normalisation and bucket borders.
        """
        key = check_key(key)
        num_steps = check_count("num_steps", num_steps)
        k_check, k_acc, k_stats, k_init, k_train = jax.random.split(key, 5)
        x0 = self._check_program(k_check, model)
        rate = self._acceptance(k_acc, model)
        if rate == 0.0:
            raise UnsupportedModelError(
                "pfn: no prior draw out of 2048 had a finite factor weight; the program's "
                "constraints reject everything"
            )
        oversample = 1 if rate == 1.0 else int(math.ceil(2.0 / rate)) + 1
        if resume:
            net = self._resumable(model, x0)
        else:
            num_features = _as_features(x0).shape[-1]
            self.config = _Config(self.num_points, num_features, self.num_buckets, self.width,
                                  self.depth, self.heads, self.hidden, self.observed,
                                  self.target, self.sink, self.decoder)
            self.normaliser, self.bars = self._prior_statistics(k_stats, model, oversample)
            net = PFNNetwork(num_features, self.num_buckets, self.width, self.depth,
                             self.heads, self.hidden, k_init, sink=self.sink,
                             decoder=self.decoder)
        chunk = min(self.chunk, num_steps)
        num_chunks = -(-num_steps // chunk)
        total = num_chunks * chunk
        warmup = max(min(total // 10, 500) if self.warmup is None else int(self.warmup), 1)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, self.learning_rate, warmup, max(total, warmup + 1),
            end_value=0.05 * self.learning_rate)
        optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
        params, static = eqx.partition(net, eqx.is_array)
        opt_state = optimizer.init(params)

        def sample(k):
            return sample_datasets(k, model, self.inputs, self.num_points, self.batch_size,
                                   self.observed, self.target, oversample, self.min_train,
                                   self._max_train())

        run_chunk = jax.jit(lambda p, s, k: train_chunk(
            p, static, s, k, optimizer=optimizer, sample=sample, config=self.config,
            norm=self.normaliser, bars=self.bars, chunk=chunk, weighting=self.loss_weighting))
        losses, short = [], 0
        start = time.perf_counter()
        bar = _progress(num_chunks * chunk, self.progress_bar)
        chunk_seconds = []
        for k in jax.random.split(k_train, num_chunks):
            chunk_start = time.perf_counter()
            params, opt_state, chunk_losses, chunk_short = run_chunk(params, opt_state, k)
            chunk_losses = np.asarray(chunk_losses)
            losses.append(chunk_losses)
            short += int(chunk_short)
            if bar is not None:
                bar.update(chunk)
                bar.set_postfix(loss=f"{chunk_losses.mean():.3f}")
            self.network = eqx.combine(params, static)
            self.model_name = _model_name(model)
            self.history = {"loss": np.concatenate(losses),
                            "seconds": time.perf_counter() - start, "short_batches": short,
                            "acceptance": rate, "oversample": oversample,
                            "num_steps": len(losses) * chunk}
            self._predict = {}
            if checkpoint is not None:
                self.save(checkpoint)
            chunk_seconds.append(time.perf_counter() - chunk_start)
            self.history["chunk_seconds"] = np.array(chunk_seconds)
            if max_seconds is not None and self.history["seconds"] > max_seconds:
                break
        if bar is not None:
            bar.close()
        return self

    def add_decoder(self, key, hidden):
        """Give the trained network a 2-layer MLP decoder of ``hidden`` units (see
        :class:`PFNNetwork`) whose output starts at zero: predictions are unchanged until
        training continues with ``.fit(..., resume=True)``. Returns ``self``."""
        self._check_fitted()
        key = check_key(key)
        if self.config.decoder:
            raise InvalidArgumentError(f"pfn.add_decoder: the network already has a decoder of "
                                       f"{self.config.decoder} units")
        hidden = check_count("hidden", hidden)
        self.network = self.network.with_decoder(hidden, key)
        self.config = dataclasses.replace(self.config, decoder=hidden)
        self.decoder = hidden
        self._predict = {}
        return self

    def _resumable(self, model, x0):
        """The current network, checked to fit ``model`` and its inputs (``fit(resume=True)``)."""
        if self.network is None:
            raise NotFittedError("pfn.fit(resume=True): there is no network to resume; train "
                                 "one first or load a checkpoint with "
                                 "ppl.inference.prior_fitted.load")
        name = _model_name(model)
        if self.model_name is not None and name != self.model_name:
            raise UnsupportedModelError(
                f"pfn.fit(resume=True): the network was trained on '{self.model_name}', "
                f"not '{name}'")
        if _as_features(x0).shape[-1] != self.config.num_features:
            raise ShapeMismatchError(
                f"pfn.fit(resume=True): the inputs have {_as_features(x0).shape[-1]} "
                f"features, the network was trained on {self.config.num_features}")
        return self.network

    # ------------------------------------------------------------------- prediction

    def _check_fitted(self):
        if self.network is None:
            raise NotFittedError("pfn: the network is not trained; call .fit(key, model, ...) "
                                 "or load a checkpoint with ppl.inference.prior_fitted.load(path)")

    def logits(self, x, y, n_train):
        """Bucket logits for a padded batch: ``x``, ``y`` (B, T) with the first
        ``n_train[b]`` points of row b the training set. Returns (B, T, K) for target ``y``
        (rows at training positions are meaningless) or (B, K) for a latent target."""
        self._check_fitted()
        fn = self._predict.get("logits")
        if fn is None:
            net, config, norm = self.network, self.config, self.normaliser

            def one(x, y, n):
                xf, yn, is_train, _ = _tokens(config, norm, x, y, n)
                out = net(xf, yn, is_train)
                return out if config.target == config.observed else out[-1]

            fn = self._predict["logits"] = jax.jit(jax.vmap(one))
        return fn(jnp.asarray(x), jnp.asarray(y), jnp.asarray(n_train))

    def log_predictive(self, x, y, n_train):
        """log p(y_i | x_i, training set) at every query position of a padded batch
        (B, T); training positions hold 0. Target ``y`` only."""
        if self.latent_mode:
            raise UnsupportedModelError("pfn: log_predictive is for target='y'; use .run")
        logits = self.logits(x, y, n_train)
        lp = self.bars.log_prob(logits, jnp.asarray(y))
        mask = jnp.arange(jnp.shape(y)[1])[None, :] >= jnp.asarray(n_train)[:, None]
        return jnp.where(mask, lp, 0.0)

    def _check_data(self, x, y, x_query):
        x, y = jnp.asarray(x, float), jnp.asarray(y, float)
        if x.ndim not in (1, 2) or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ShapeMismatchError(
                f"pfn.run: x must be (n,) or (n, d) and y (n,) with the same n; got x "
                f"{x.shape}, y {y.shape}"
            )
        if x.shape[0] < 1:
            raise ShapeMismatchError("pfn.run: the training set is empty (need n >= 1)")
        if _as_features(x).shape[-1] != self.config.num_features:
            raise ShapeMismatchError(
                f"pfn.run: x has {_as_features(x).shape[-1]} features, the network was "
                f"trained on {self.config.num_features}"
            )
        if not (np.all(np.isfinite(np.asarray(x))) and np.all(np.isfinite(np.asarray(y)))):
            raise InvalidArgumentError("pfn.run: x and y must be finite")
        if self.latent_mode:
            if x_query is not None:
                raise InvalidArgumentError(
                    f"pfn.run: x_query is not used for target='{self.target}'"
                )
            n = x.shape[0]
            if n > self.config.num_points:
                raise ShapeMismatchError(
                    f"pfn.run: {n} training points, the network was trained on at most "
                    f"{self.config.num_points}")
            return x, y, None
        if x_query is None:
            raise InvalidArgumentError("pfn.run: give the query inputs x_query for target='y'")
        xq = jnp.asarray(x_query, float)
        if xq.ndim != x.ndim or _as_features(xq).shape[-1] != _as_features(x).shape[-1]:
            raise ShapeMismatchError(
                f"pfn.run: x_query has shape {xq.shape}, incompatible with x {x.shape}")
        if xq.shape[0] < 1:
            raise ShapeMismatchError("pfn.run: x_query is empty")
        if not np.all(np.isfinite(np.asarray(xq))):
            raise InvalidArgumentError("pfn.run: x_query must be finite")
        return x, y, xq

    def run(self, key, model, x, y, x_query=None, num_samples=1000) -> Posterior:
        """Posterior predictive at ``x_query`` given the training set ``(x, y)`` (target
        ``y``), or the posterior of the target latent given ``(x, y)``.

        Returns a :class:`~ppl.Posterior` with ``num_samples`` equally weighted draws from
        the bar distribution: site ``observed`` of shape ``(num_samples, len(x_query))``,
        or site ``target`` of shape ``(num_samples,)``. ``info`` holds ``bucket_log_probs``
        (Q, K) or (K,), ``borders``, ``mean``, ``variance``, ``log_density`` (a function of
        values shaped like the query, returning the predicted log density) and ``quantile``
        (a function of probabilities (P,), returning the exact quantiles (Q, P) or (P,) of
        the predicted bar distributions, e.g. for predictive bands). The forward pass and
        the draws are one jitted function (:func:`_predict_and_sample`), compiled once per
        data shapes and ``num_samples``.
        """
        key = check_key(key)
        self._check_fitted()
        num_samples = check_count("num_samples", num_samples)
        name = _model_name(model)
        if self.model_name is not None and name != self.model_name:
            raise UnsupportedModelError(
                f"pfn.run: this network was trained on the program '{self.model_name}', "
                f"not '{name}'")
        x, y, xq = self._check_data(x, y, x_query)
        draws, logits, log_probs, mean = _predict_and_sample(
            self.network, self.config, self.normaliser, self.bars, key, x, y, xq, num_samples)
        site = self.target if self.latent_mode else self.observed
        bars = self.bars
        info = {
            "bucket_log_probs": log_probs,
            "borders": bars.borders,
            "mean": mean,
            "log_density": lambda v: bars.log_prob(logits, jnp.asarray(v)),
            "quantile": lambda q: bars.quantile(logits[..., None, :], jnp.asarray(q)),
            "variance": bars.variance(logits),
        }
        if xq is not None:
            info["x_query"] = xq
        return Posterior({site: draws}, observed_data={self.observed: y}, method=self.method,
                         info=info)

    # ------------------------------------------------------------------- checkpoints

    def save(self, path, weights_dtype="float32"):
        """Write configuration, normaliser, borders and network arrays to ``path`` (.npz).

        ``weights_dtype="float16"`` stores the network's weights in half precision (half
        the file; :func:`load` casts them back to float32, so predictions move by the
        rounding of each weight, about 5e-4 relative). The normaliser and the bucket
        borders are always stored in full precision."""
        self._check_fitted()
        _check_choice("pfn.save", "weights_dtype", weights_dtype, WEIGHTS_DTYPES)
        leaves = jax.tree.leaves(eqx.filter(self.network, eqx.is_array))
        meta = {f: getattr(self.config, f) for f in _Config.__dataclass_fields__}
        meta.update(version=_FORMAT_VERSION, model=self.model_name, min_train=self.min_train,
                    weights_dtype=weights_dtype)
        arrays = {f"leaf_{i}": _stored(np.asarray(v), weights_dtype, i)
                  for i, v in enumerate(leaves)}
        n = self.normaliser
        np.savez(path, meta=np.array(json.dumps(meta)), borders=np.asarray(self.bars.borders),
                 x_mean=np.asarray(n.x_mean), x_std=np.asarray(n.x_std),
                 y_mean=np.asarray(n.y_mean), y_std=np.asarray(n.y_std), **arrays)


WEIGHTS_DTYPES = ("float32", "float16")


def _stored(array, weights_dtype, index):
    """Network array ``index`` as written to a checkpoint: floating arrays in
    ``weights_dtype``, refused where a finite weight would overflow it."""
    if not np.issubdtype(array.dtype, np.floating):
        return array
    finite = np.abs(array[np.isfinite(array)])
    if finite.size and finite.max() > np.finfo(weights_dtype).max:
        raise InvalidArgumentError(
            f"pfn.save: network array {index} has weights beyond the range of "
            f"{weights_dtype} (largest |w| = {finite.max():.3g}); save in float32"
        )
    return array.astype(weights_dtype)


@eqx.filter_jit
def _predict_and_sample(net, config, norm, bars, key, x, y, xq, num_samples):
    """The forward pass and the draws of :meth:`PFN.run`, compiled as one function.

    ``xq`` is None for a latent target (its logits are those of the extra query token),
    otherwise the query inputs appended after the ``len(x)`` training points. Draws come
    from the bar distribution (Müller et al. 2022, section 4.3) via
    :meth:`BarDistribution.sample`. ``num_samples`` and the array shapes are static, so
    repeated calls with the same shapes reuse the compiled function. Returns ``(draws,
    logits, bucket log-probabilities, mean)``.
    """
    n = x.shape[0]
    if xq is not None:
        x = jnp.concatenate([x, xq])
        y = jnp.concatenate([y, jnp.zeros(xq.shape[0], y.dtype)])
    xf, yn, is_train, _ = _tokens(config, norm, x, y, n)
    logits = net(xf, yn, is_train)
    logits = logits[n:] if xq is not None else logits[-1]
    draws = bars.sample(key, logits, num_samples)
    return draws, logits, jax.nn.log_softmax(logits, axis=-1), bars.mean(logits)


def load(path, inputs=None, progress_bar=True, **options) -> PFN:
    """A trained :class:`PFN` from a checkpoint written by :meth:`PFN.save`.

    ``options`` are the training options of :func:`pfn` (``batch_size``, ``learning_rate``,
    ``warmup``, ``chunk``, ``loss_weighting``) used if training continues with
    ``.fit(..., resume=True)``; the architecture comes from the checkpoint."""
    architecture = {"num_points", "target", "observed", "num_buckets", "width", "depth",
                    "heads", "hidden", "min_train", "sink", "decoder"}
    if architecture & set(options):
        raise InvalidArgumentError(f"pfn.load: {sorted(architecture & set(options))} come from the "
                                   "checkpoint and cannot be given")
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    meta = json.loads(str(data["meta"]))
    meta.setdefault("sink", False)  # checkpoints written before the attention sink existed
    meta.setdefault("decoder", 0)  # ... and before the MLP decoder
    if meta.get("version") != _FORMAT_VERSION:
        raise InvalidArgumentError(
            f"pfn.load: {path} has checkpoint version {meta.get('version')}, "
            f"expected {_FORMAT_VERSION}"
        )
    pfn_ = PFN(num_points=meta["num_points"], inputs=inputs, target=meta["target"],
               observed=meta["observed"], num_buckets=meta["num_buckets"], width=meta["width"],
               depth=meta["depth"], heads=meta["heads"], hidden=meta["hidden"],
               min_train=meta["min_train"], sink=meta["sink"], decoder=meta["decoder"],
               progress_bar=progress_bar,
               **options)
    pfn_.config = _Config(*(meta[f] for f in _Config.__dataclass_fields__))
    skeleton = PFNNetwork(meta["num_features"], meta["num_buckets"], meta["width"],
                          meta["depth"], meta["heads"], meta["hidden"], jax.random.key(0),
                          sink=meta["sink"], decoder=meta["decoder"])
    params, static = eqx.partition(skeleton, eqx.is_array)
    leaves, treedef = jax.tree.flatten(params)
    if len(leaves) != sum(k.startswith("leaf_") for k in data):
        raise InvalidArgumentError(
            f"pfn.load: {path} does not match the network its metadata describes"
        )
    new = [data[f"leaf_{i}"] for i in range(len(leaves))]
    for i, (a, b) in enumerate(zip(leaves, new, strict=True)):
        if a.shape != b.shape:
            raise InvalidArgumentError(
                f"pfn.load: array {i} has shape {b.shape}, expected {a.shape}"
            )
    new = [jnp.asarray(b, a.dtype) for a, b in zip(leaves, new, strict=True)]
    pfn_.network = eqx.combine(jax.tree.unflatten(treedef, new), static)
    pfn_.normaliser = _Normaliser(*(jnp.asarray(data[k])
                                    for k in ("x_mean", "x_std", "y_mean", "y_std")))
    pfn_.bars = BarDistribution(jnp.asarray(data["borders"]))
    pfn_.model_name = meta.get("model")
    return pfn_


def pfn(num_points=50, inputs=None, target="y", observed="y", num_buckets=100, width=64,
        depth=3, heads=4, **options) -> PFN:
    """A prior-data fitted network (Müller et al. 2022) for a program ``model(x, y=None)``.

    Args:
        num_points: points per prior dataset (training plus query points); the training set
            size is drawn uniformly from ``min_train..num_points - 1`` (``..num_points`` for
            a latent target).
        inputs: ``inputs(key, n) -> x`` draws the inputs of one dataset (default ``U(0, 1)``
            1-D points); see ``ppl.models.pfn_priors``.
        target: ``"y"`` (the observed site: posterior predictive) or the name of a scalar
            latent site (its posterior).
        observed: name of the program's observed site.
        num_buckets, width, depth, heads: bar distribution and transformer sizes.
        **options: ``hidden`` (MLP width, default 2 * width), ``batch_size=64``,
            ``learning_rate=1e-3``, ``warmup`` (default min(num_steps / 10, 500)),
            ``chunk=100`` (steps per jitted scan), ``min_train=1``, ``sink=True`` (a learned
            token every token attends to, so the network can tell the training-set size;
            see :class:`PFNNetwork`), ``decoder=0`` (hidden units of a 2-layer MLP decoder
            added to the linear head; 0 for none; worth it when ``num_buckets`` is much
            larger than ``width``), ``loss_weighting="point"`` (``"dataset"``: every
            training-set size weighs the same in the loss instead of every query point; see
            :func:`batch_loss`), ``progress_bar=True``.
    """
    return PFN(num_points=num_points, inputs=inputs, target=target, observed=observed,
               num_buckets=num_buckets, width=width, depth=depth, heads=heads, **options)


def _uniform_inputs(key, n):
    """Default input distribution: ``n`` 1-D points ``x ~ U(0, 1)``."""
    return jax.random.uniform(key, (n,))


def _model_name(model) -> str:
    fn = getattr(model, "fn", model)
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def _progress(total, enable):
    if not enable:
        return None
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc="pfn training", file=sys.stderr, dynamic_ncols=True)
