"""Amortized guides: an inference network q_phi(z | data) trained on datasets from the prior.

A program with inputs x and observed sites y is a prior over datasets: ``(z, y) ~ p(z)
p(y | z, x)``. An inference network maps a dataset to the parameters of a Gaussian guide
over the latent sites, and is trained across datasets drawn from that prior by maximising
the amortized ELBO (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", eq. 3 and
section 2.3; Gershman & Goodman 2014, "Amortized inference in probabilistic reasoning"):

    L(phi) = E_{y ~ p(y)} [ E_{q_phi(z | y)} [log p(z, y) - log q_phi(z | y)] ]
           = E_{y ~ p(y)} [ log p(y) - KL(q_phi(. | y) || p(. | y)) ],

so its maximiser is, for every y the network can distinguish, the member of the family
closest to the posterior p(z | y). The inner expectation is NumPyro's ``Trace_ELBO`` on the
program conditioned on y (``numpyro.handlers.condition`` of its observed sites); the outer
one is a batch of prior datasets drawn with the :class:`~ppl.semantics.Sampler`
representation (``predictive=True``) under ``vmap``, fresh at each step
(:class:`AmortizedELBO`, a NumPyro ``ELBO`` that averages ``Trace_ELBO`` over the batch).
Training is NumPyro's ``SVI`` with an optax optimiser, all steps in one ``lax.scan``
(optionally with a progress bar), one ``jax.jit``.

Amortization sharpens the exact methods instead of replacing them: the fitted network is a
*proposal*. Importance sampling with weights p(z, y) / q(z | y) (``infer.importance(n,
proposal=fitted.proposal)``) stays consistent whatever the network learned, and its ESS
grows as q approaches the posterior. For ``ppl.markov`` programs, :func:`amortized_step`
trains a per-step network q(x_t | x_{t-1}, y_t) whose ELBO maximiser is the locally optimal
SMC proposal p(x_t | x_{t-1}, y_t) (Doucet, Godsill & Andrieu 2000, "On sequential Monte
Carlo sampling methods for Bayesian filtering", section II.D): the ELBO of the one-step
program ``x_t ~ m(x_{t-1}, .), y_t ~ g(x_t)`` given (x_{t-1}, y_t) is maximised by that
conditional, and the training pairs (x_{t-1}, y_t) are read off trajectories simulated from
the prior. ``infer.smc(n, proposal=fitted.proposal)`` then weights by ``m g / q`` (the
guided filter), so its evidence estimate stays unbiased.

The network (equinox): the dataset's observed values are flattened into one feature
vector (or mapped by a user ``features`` function, e.g. a set summary for exchangeable
data), standardised with the mean and standard deviation over a batch of prior datasets,
and passed through an MLP with a linear skip connection whose output is, for each latent
site, a location and a scale on the unconstrained space (``biject_to`` of the site's
support, so q on the site's own space has the Jacobian included). The last layers start
at zero, so the untrained guide is the Gaussian with the prior batch's moments of the
unconstrained latents. Each site's q is ``Normal(loc, scale)`` per element (a diagonal,
amortized mean-field family). Discrete latent sites are refused (no reparameterised ELBO).

API::

    fitted = infer.amortized(hidden=(64, 64), batch_size=64).fit(key, model, *example_args,
                                                               num_steps=500)
    infer.importance(1000, proposal=fitted.proposal).run(key, model, *data_args)
    fitted.run(key, model, *data_args)            # the guide's own posterior (Posterior)

    step = infer.amortized_step(hidden=(32,)).fit(key, ssm_model, *example_args,
                                                  num_steps=300)
    infer.smc(1000, proposal=step.proposal).run(key, ssm_model, *data_args)

A fitted guide is tied to the program and to the shapes and non-data arguments it was fitted
with (the example arguments fix the covariates x and the dataset size; new data must have
the same shapes). A fitted step proposal reads the step's observed values by running the
program's step function (as captured at fit time) on the carry and the step input it is
given, so the step function may not close over per-dataset values other than its input.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.contrib.module import eqx_module
from numpyro.distributions.transforms import IdentityTransform, biject_to
from numpyro.infer import SVI as NumPyroSVI
from numpyro.infer import Trace_ELBO
from numpyro.infer.elbo import ELBO
from ppl.inference.base import CompiledRuns, check_count, check_key
from ppl.inference.progress import progress_scan
from ppl.inference.tracer_errors import control_flow_errors
from ppl.inference.variational import (
    check_continuous,
    draw_from_guide,
    make_optimizer,
    observed_values,
)
from ppl.semantics.sampler import Sampler
from ppl.semantics.sequential import Sequential, replay_key
from ppl.semantics.trace import OBSERVED, record

from ppl import dist
from ppl.errors import ArgumentTypeError, UnsupportedModelError, check_positive
from ppl.posterior import Posterior
from ppl.primitives import step_index

__all__ = [
    "Amortized",
    "AmortizedELBO",
    "AmortizedGuide",
    "AmortizedStep",
    "AmortizedStepProposal",
    "GuideNet",
    "amortized",
    "amortized_step",
    "prior_datasets",
]



# --------------------------------------------------------------------------- the ELBO


class AmortizedELBO(ELBO):
    """The amortized ELBO: NumPyro's ``Trace_ELBO`` averaged over a batch of datasets.

    ``loss(key, params, model, guide, batch)``: ``batch`` is a pytree whose leaves have a
    leading dataset axis; the loss is the mean over datasets of ``Trace_ELBO.loss`` of
    ``model(data)`` and ``guide(data)``, vmapped with one key per dataset. With datasets
    drawn from the prior this is the Monte Carlo estimate of -L(phi) (module notes).
    """

    def __init__(self, num_particles: int = 1):
        super().__init__(num_particles=num_particles)
        self.inner = Trace_ELBO(num_particles=num_particles)

    def loss(self, rng_key, param_map, model, guide, batch, **kwargs):
        size = jax.tree.leaves(batch)[0].shape[0]

        def one(key, data):
            return self.inner.loss(key, param_map, model, guide, data, **kwargs)

        return jnp.mean(jax.vmap(one)(jax.random.split(rng_key, size), batch))


# --------------------------------------------------------------------------- the network


class GuideNet(eqx.Module):
    """An MLP (tanh) with a linear skip: ``out = mlp(h) + skip(h)``, both last layers zero.

    ``h`` is the standardised feature vector; ``out`` holds a location and a raw scale
    for each unconstrained latent dimension (see :func:`_q_distributions`). Zero last
    layers make the untrained guide the Gaussian of the prior batch's moments.
    """

    layers: tuple
    skip: eqx.nn.Linear

    def __init__(self, in_size: int, out_size: int, hidden, key):
        sizes = (in_size, *tuple(hidden), out_size)
        keys = jax.random.split(key, len(sizes))
        layers = [eqx.nn.Linear(a, b, key=k)
                  for a, b, k in zip(sizes[:-1], sizes[1:], keys[:-1], strict=True)]
        layers[-1] = _zeroed(layers[-1])
        self.layers = tuple(layers)
        self.skip = _zeroed(eqx.nn.Linear(in_size, out_size, key=keys[-1]))

    def __call__(self, h):
        x = h
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x) + self.skip(h)


def _zeroed(linear):
    """``linear`` with its weight and bias set to zero."""
    return eqx.tree_at(lambda m: (m.weight, m.bias), linear,
                       (jnp.zeros_like(linear.weight), jnp.zeros_like(linear.bias)))


class _Site(NamedTuple):
    name: str
    shape: tuple  # of the unconstrained value
    support: object
    start: int
    size: int


class _Head(NamedTuple):
    """How the network's output becomes q: per-site slices, output shift and scale."""

    sites: tuple
    loc_shift: jnp.ndarray  # prior-batch mean of the unconstrained latents
    loc_scale: jnp.ndarray  # prior-batch sd of the unconstrained latents
    feature_mean: jnp.ndarray
    feature_sd: jnp.ndarray


def _sites_of(values: dict, raw: dict) -> tuple:
    sites, start = [], 0
    for name, value in values.items():
        shape = tuple(jnp.shape(biject_to(raw[name]["fn"].support).inv(value)))
        size = int(np.prod(shape)) if shape else 1
        sites.append(_Site(name, shape, raw[name]["fn"].support, start, size))
        start += size
    return tuple(sites)


def _unconstrained(sites, values) -> jnp.ndarray:
    """Flatten the latent values (leading batch axis) to their unconstrained coordinates."""
    parts = [biject_to(s.support).inv(values[s.name]).reshape(-1, s.size) for s in sites]
    return jnp.concatenate(parts, axis=-1)


def _flatten_features(obs: dict) -> jnp.ndarray:
    """The default features: every observed value, flattened and concatenated."""
    return jnp.concatenate([jnp.ravel(jnp.asarray(obs[n], jnp.result_type(float)))
                            for n in sorted(obs)])


def _standardiser(features):
    """Mean and sd (floored) of a batch of feature vectors, for input standardisation."""
    mean = jnp.mean(features, axis=0)
    sd = jnp.std(features, axis=0)
    return mean, jnp.where(sd > 1e-6, sd, 1.0)


def _q_distributions(head: _Head, net, features) -> dict:
    """q for every site: ``Normal(loc, scale)`` on the unconstrained space, pushed to the
    site's support by ``biject_to`` (its Jacobian enters ``log_prob``)."""
    out = net((features - head.feature_mean) / head.feature_sd)
    dim = head.loc_shift.shape[0]
    loc = head.loc_shift + head.loc_scale * out[:dim]
    scale = head.loc_scale * jax.nn.softplus(out[dim:] + math.log(math.e - 1.0))
    result = {}
    for s in head.sites:
        sl = slice(s.start, s.start + s.size)
        base = dist.Normal(loc[sl].reshape(s.shape), scale[sl].reshape(s.shape))
        if s.shape:
            base = base.to_event(len(s.shape))
        transform = biject_to(s.support)
        if isinstance(transform, IdentityTransform):
            result[s.name] = base
        else:
            result[s.name] = dist.TransformedDistribution(base, transform)
    return result


# --------------------------------------------------------------------------- prior datasets


def prior_datasets(key, model, args, kwargs, num_datasets: int):
    """``num_datasets`` draws ``(latents, observed)`` from the program's prior predictive.

    The :class:`~ppl.semantics.Sampler` representation with ``predictive=True`` (observed
    sites are drawn, not conditioned on) under ``vmap``; each returned dict has a leading
    dataset axis.
    """
    _, trace, _ = record(model, replay_key(), args, kwargs)
    observed, latent = trace.names(OBSERVED), trace.latent_names

    def one(k):
        choices = Sampler(model, predictive=True)(k, *args, **kwargs).choices
        return {n: choices[n] for n in latent}, {n: choices[n] for n in observed}

    return jax.vmap(one)(jax.random.split(key, num_datasets))


def _train(key, model_fn, guide_fn, net, optimizer, draw_batch, first, num_steps, num_particles,
           progress_bar, desc):
    """NumPyro ``SVI`` with :class:`AmortizedELBO`: init on one dataset ``first``, then
    ``num_steps`` updates in one ``lax.scan``, each on a fresh batch ``draw_batch(key)``.
    Returns the fitted network and the ELBO estimate of each step."""
    engine = NumPyroSVI(model_fn, guide_fn, optimizer, AmortizedELBO(num_particles))
    k_init, k_data = jax.random.split(key)
    state = engine.init(k_init, first)

    def body(state, i):
        state, loss = engine.update(state, draw_batch(jax.random.fold_in(k_data, i)))
        return state, -loss

    state, elbo = progress_scan(body, state, jnp.arange(num_steps), desc=desc,
                                enable=progress_bar)
    params = engine.get_params(state)
    trained = eqx.combine(params["net$params"], eqx.filter(net, eqx.is_array, inverse=True))
    return trained, elbo


def _fit(key, trainer, sites, draw_examples, features, model_fn, num_steps, desc):
    """Statistics, network and training in one ``eqx.filter_jit``.

    ``draw_examples(key, num) -> (data, latents)`` draws ``num`` training examples from the
    prior (``data`` is what ``model_fn`` and the guide take, with a leading example axis);
    ``features(data) -> 1-D array`` for one example. A first batch of ``4 * batch_size``
    examples fixes the input standardisation and the output shift and scale (the prior
    moments of the unconstrained latents); the network is initialised, then trained by
    :func:`_train`. Returns ``(network, head, elbo)``.
    """

    def run(key):
        k_stats, k_net, k_train = jax.random.split(key, 3)
        data, latents = draw_examples(k_stats, 4 * trainer.batch_size)
        f_mean, f_sd = _standardiser(jax.vmap(features)(data))
        u_mean, u_sd = _standardiser(_unconstrained(sites, latents))
        head = _Head(sites, u_mean, u_sd, f_mean, f_sd)
        net = GuideNet(f_mean.shape[0], 2 * u_mean.shape[0], trainer.hidden, k_net)

        def guide_fn(example):
            module = eqx_module("net", net)
            for name, q in _q_distributions(head, module, features(example)).items():
                numpyro.sample(name, q)

        first = jax.tree.map(lambda a: a[0], data)
        trained, elbo = _train(k_train, model_fn, guide_fn, net, trainer.optimizer,
                               lambda k: draw_examples(k, trainer.batch_size)[0], first,
                               num_steps, trainer.num_particles, trainer.progress_bar, desc)
        return trained, head, elbo

    return eqx.filter_jit(run)(key)


# --------------------------------------------------------------------------- global guide


class AmortizedGuide:
    """A fitted amortized guide q(z | data) for one program (returned by
    :meth:`Amortized.fit`): ``.proposal``, ``.run``, ``.q``, ``info``."""

    def __init__(self, model, net, head, features, info, num_samples):
        self.model = model
        self.net = net
        self.head = head
        self.features = features
        self.info = info
        self.num_samples = num_samples
        self._draws = {}

    def q(self, *args, **kwargs) -> dict:
        """site -> q(z_site | data) for the data of ``model(*args, **kwargs)``."""
        obs = observed_values(self.model, args, kwargs)
        return _q_distributions(self.head, self.net, self.features(obs))

    @property
    def proposal(self):
        """A proposal program (taking the model's arguments) that samples every latent site
        from q(. | the data in those arguments): for ``infer.importance(proposal=...)``."""

        def amortized_proposal(*args, **kwargs):
            for name, q in self.q(*args, **kwargs).items():
                numpyro.sample(name, q)

        return amortized_proposal

    def run(self, key, model, *args, num_samples: int | None = None, **kwargs) -> Posterior:
        """``num_samples`` draws from q(. | data) replayed through ``model`` (unweighted; for
        an exact method use ``.proposal`` in ``infer.importance``). One jit per argument
        structure and ``num_samples``."""
        key = check_key(key)
        n = self.num_samples if num_samples is None else check_count("num_samples", num_samples)
        if model is not self.model:
            raise UnsupportedModelError(
                "AmortizedGuide.run: the guide was fitted to another program; fit one to "
                "this model"
            )
        if n not in self._draws:
            proposal = self.proposal
            self._draws[n] = CompiledRuns(
                lambda k, m, a, kw: (*draw_from_guide(k, m, proposal, {}, a, kw, n),
                                     observed_values(m, a, kw)))
        samples, log_likelihood, observed = self._draws[n](key, model, args, kwargs)
        return Posterior(samples, observed_data=observed,
                         log_likelihood=log_likelihood, method="amortized",
                         info=dict(self.info))


class _Trainer:
    """Options the two amortized methods share."""

    def __init__(self, hidden, num_steps, batch_size, optimizer, learning_rate, num_particles,
                 num_samples, features, progress_bar):
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise ArgumentTypeError(
                f"hidden must be a tuple of layer widths, e.g. hidden=(64, 64), got {hidden!r}"
            )
        self.hidden = tuple(check_count("hidden", h) for h in hidden)
        self.num_steps = check_count("num_steps", num_steps)
        self.batch_size = check_count("batch_size", batch_size)
        self.optimizer = make_optimizer(optimizer, check_positive("learning_rate", learning_rate))
        self.num_particles = check_count("num_particles", num_particles)
        self.num_samples = check_count("num_samples", num_samples)
        if features is not None and not callable(features):
            raise ArgumentTypeError(f"features must be a function of the observed values, got "
                                    f"{features!r}")
        self.features = features
        self.progress_bar = bool(progress_bar)


class Amortized(_Trainer):
    """``amortized(hidden=(64, 64), num_steps=1000, batch_size=64, ...)``; see
    :func:`amortized`."""

    def fit(self, key, model, *args, num_steps: int | None = None, **kwargs) -> AmortizedGuide:
        """Train q(z | data) on prior datasets of ``model(*args, **kwargs)`` (the example
        arguments fix the inputs and the dataset's shape)."""
        key = check_key(key)
        num_steps = self.num_steps if num_steps is None else check_count("num_steps", num_steps)
        latent_names, raw = check_continuous(model, args, kwargs, what="amortized")
        features = self.features or _flatten_features
        sites = _sites_of({n: raw[n]["value"] for n in latent_names}, raw)

        def draw_examples(k, num):
            latents, observed = prior_datasets(k, model, args, kwargs, num)
            return observed, latents

        def model_fn(data):
            return numpyro.handlers.condition(model, data=data)(*args, **kwargs)

        with control_flow_errors(model, args, kwargs, where="amortized"):
            trained, head, elbo = _fit(key, self, sites, draw_examples, features, model_fn,
                                       num_steps, "amortized")
        info = {"elbo": elbo, "num_steps": num_steps, "batch_size": self.batch_size,
                "latent_sites": [s.name for s in sites]}
        return AmortizedGuide(model, trained, head, features, info, self.num_samples)

    def __repr__(self):
        return (f"amortized(hidden={self.hidden}, num_steps={self.num_steps}, "
                f"batch_size={self.batch_size})")


# --------------------------------------------------------------------------- step proposal


class AmortizedStepProposal:
    """A fitted per-step proposal q(x_t | carry, y_t) for a ``ppl.markov`` program
    (returned by :meth:`AmortizedStep.fit`): ``.proposal(t, carry, x)`` for ``infer.smc``."""

    def __init__(self, step_fn, net, head, features, info):
        self.step_fn = step_fn
        self.net = net
        self.head = head
        self.features = features
        self.info = info

    def _step_observed(self, t, carry, x) -> dict:
        with numpyro.handlers.block(), step_index(t):
            _, trace, _ = record(self.step_fn, replay_key(), (carry, x))
        return {n: trace.values[n] for n in trace.names(OBSERVED)}

    def q(self, t, carry, x) -> dict:
        """site -> q(x_t | carry, observations of step t given its input ``x``)."""
        feats = self.features(carry, self._step_observed(t, carry, x))
        return _q_distributions(self.head, self.net, feats)

    @property
    def proposal(self):
        """The program ``proposal(t, carry, x)`` that ``infer.smc(proposal=...)`` expects."""

        def amortized_step_proposal(t, carry, x):
            for name, q in self.q(t, carry, x).items():
                numpyro.sample(name, q)

        return amortized_step_proposal


def _step_features(carry, obs: dict) -> jnp.ndarray:
    """Default per-step features: the flattened carry and the step's observed values."""
    parts = [jnp.ravel(jnp.asarray(c, jnp.result_type(float))) for c in jax.tree.leaves(carry)]
    return jnp.concatenate(parts + [_flatten_features(obs)])


class AmortizedStep(_Trainer):
    """``amortized_step(hidden=(32, 32), num_steps=1000, batch_size=16, ...)``; see
    :func:`amortized_step`."""

    def fit(self, key, model, *args, num_steps: int | None = None, **kwargs):
        """Train q(x_t | x_{t-1}, y_t) on one-step examples from prior trajectories of
        ``model(*args, **kwargs)`` (a program with one ``ppl.markov`` and no global latent
        sites)."""
        key = check_key(key)
        num_steps = self.num_steps if num_steps is None else check_count("num_steps", num_steps)
        check_continuous(model, args, kwargs, what="amortized_step")
        ssm = Sequential(model).state_space(replay_key(), *args, **kwargs)
        if ssm.params:
            raise UnsupportedModelError(
                f"amortized_step: the program has global latent site(s) {sorted(ssm.params)}; "
                "the per-step proposal needs a markov program whose only latent sites are "
                "inside its step"
            )
        features = self.features or _step_features
        with step_index(0):
            _, step_trace, step_raw = record(ssm.step_fn, replay_key(), (ssm.init, ssm.inputs(0)))
        step_latent = step_trace.latent_names
        step_observed = step_trace.names(OBSERVED)

        def examples(k, num):
            """One-step examples (t, carry_{t-1}, y_t, x_t) from ``num`` prior trajectories,
            flattened over trajectories and time."""
            path, obs = prior_datasets(k, model, args, kwargs, num)

            def carries(path_n):
                def body(carry, t):
                    new = ssm.replay_step(t, carry, {n: path_n[n][t] for n in step_latent})
                    return new.carry, carry

                return jax.lax.scan(body, ssm.init, jnp.arange(ssm.num_steps))[1]

            prev = jax.vmap(carries)(path)
            t = jnp.broadcast_to(jnp.arange(ssm.num_steps), (num, ssm.num_steps))

            def flat(a):
                return a.reshape((-1, *a.shape[2:]))

            return (flat(t), jax.tree.map(flat, prev),
                    {n: flat(obs[n]) for n in step_observed},
                    {n: flat(path[n]) for n in step_latent})

        sites = _sites_of({n: step_raw[n]["value"] for n in step_latent}, step_raw)

        def draw_examples(k, num):
            t, carry, obs, latents = examples(k, num)
            return (t, carry, obs), latents

        def model_fn(data):
            t, carry, obs = data
            with step_index(t):
                numpyro.handlers.condition(ssm.step_fn, data=obs)(carry, ssm.inputs(t))

        def step_features(data):
            _, carry, obs = data
            return features(carry, obs)

        with control_flow_errors(model, args, kwargs, where="amortized_step"):
            trained, head, elbo = _fit(key, self, sites, draw_examples, step_features,
                                       model_fn, num_steps, "amortized_step")
        info = {"elbo": elbo, "num_steps": num_steps, "batch_size": self.batch_size,
                "latent_sites": step_latent}
        return AmortizedStepProposal(ssm.step_fn, trained, head, features, info)

    def __repr__(self):
        return (f"amortized_step(hidden={self.hidden}, num_steps={self.num_steps}, "
                f"batch_size={self.batch_size})")


def amortized(hidden=(64, 64), num_steps: int = 1000, batch_size: int = 64, optimizer=None,
              *,
              learning_rate: float = 1e-3, num_particles: int = 1, num_samples: int = 1000,
              features=None, progress_bar: bool = False) -> Amortized:
    """An amortized Gaussian guide q(z | data) trained by SVI on prior datasets (module notes).

    ``hidden``: widths of the MLP's hidden layers; ``num_steps``: SVI steps; ``batch_size``:
    prior datasets per step; ``optimizer``: an optax transformation (default
    ``optax.adam(learning_rate)``); ``num_particles``: draws of z per dataset per ELBO
    estimate; ``num_samples``: default draws of :meth:`AmortizedGuide.run`; ``features``:
    ``observed dict -> 1-D array`` (default: everything flattened).

    ``.fit(key, model, *example_args, num_steps=None, **example_kwargs)`` returns an
    :class:`AmortizedGuide` with ``.proposal`` (for ``infer.importance``), ``.run(key,
    model, *args)`` (a :class:`~ppl.Posterior` of draws from q), ``.q(*args)`` and
    ``info["elbo"]``.
    """
    return Amortized(hidden, num_steps, batch_size, optimizer, learning_rate, num_particles,
                     num_samples, features, progress_bar)


def amortized_step(hidden=(32, 32), num_steps: int = 1000, batch_size: int = 16,
                   optimizer=None, *, learning_rate: float = 1e-3, num_particles: int = 1,
                   features=None, progress_bar: bool = False) -> AmortizedStep:
    """An amortized per-step SMC proposal q(x_t | x_{t-1}, y_t) for ``ppl.markov`` programs.

    Trained by SVI on one-step examples from ``batch_size`` prior trajectories per step (all
    their time steps); ``features``: ``(carry, step observed dict) -> 1-D array`` (default:
    both flattened). ``.fit(key, model, *example_args, num_steps=None)`` returns an
    :class:`AmortizedStepProposal` whose ``.proposal`` is the ``proposal(t, carry, x)``
    program of ``infer.smc``; its ELBO optimum is the locally optimal proposal.
    """
    return AmortizedStep(hidden, num_steps, batch_size, optimizer, learning_rate, num_particles,
                         1, features, progress_bar)
