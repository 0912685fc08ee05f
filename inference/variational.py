"""Stochastic variational inference for any ppl program, lowered to NumPyro's ``SVI``.

SVI fits a family q_phi(z) to the posterior p(z | y) by maximising the evidence lower bound

    ELBO(phi) = E_{q_phi}[log p(z, y) - log q_phi(z)] <= log p(y)

with stochastic gradients of reparameterised Monte Carlo estimates (Kingma & Welling 2014,
"Auto-Encoding Variational Bayes", eq. 6-7; Ranganath, Gerrish & Blei 2014, "Black Box
Variational Inference"; Hoffman et al. 2013, "Stochastic Variational Inference"). The
estimator is NumPyro's ``Trace_ELBO`` with ``num_particles`` draws per step; the
optimiser is any optax transformation (default Adam, Kingma & Ba 2015).

Improper priors (``ImproperUniform`` of any support) are fitted like any continuous
site: the structure runs put them at a feasible point
(:func:`ppl.semantics.trace.feasible_improper`), the autoguides' ``init_to_median`` finds
no sampler and falls back to NumPyro's ``init_to_uniform`` (uniform in (-2, 2) on the
unconstrained space), and the ELBO only evaluates their (constant) log density. A guide
program must then sample them: a site it leaves out would be drawn from its prior, which
raises :class:`~ppl.errors.UnsupportedModelError` naming the site.

The family (``guide=``):

* ``"normal"``: NumPyro's ``AutoNormal``, a mean-field Gaussian on the unconstrained space
  of every latent site (the automatic differentiation VI of Kucukelbir et al. 2017, JMLR
  18, "Automatic Differentiation Variational Inference", section 2.3, mean-field family);
* ``"mvn"``: ``AutoMultivariateNormal``, a full-rank Gaussian with a Cholesky factor
  (ADVI's full-rank family, same paper, eq. 4); it contains the exact posterior of every
  conjugate Gaussian model, so its optimum is exact there;
* a guide program: a callable taking the model's arguments, sampling (some of) the
  model's latent sites under the same names, with its variational parameters declared by
  ``ppl.param`` (NumPyro's ``param``). Latent sites the guide leaves out are drawn from
  their prior conditional when the model is replayed (as in NumPyro).

Known fact a test relies on: for a Gaussian posterior N(m, S) the mean-field optimum of
KL(q || p) has mean m and variances 1 / diag(S^{-1}), below diag(S) when the posterior is
correlated (Bishop 2006, *Pattern Recognition and Machine Learning*, section 10.1.2).

Discrete latent sites with finite support are summed out, as ``infer.nuts`` does: the
program is enumerated in parallel (``ppl.inference.hamiltonian.enumerate_discrete``, NumPyro's
``config_enumerate``, also inside ``ppl.markov`` steps) and the ELBO is NumPyro's
``TraceEnum_ELBO`` (Obermeyer et al. 2019, "Tensor variable elimination for plated factor
graphs"), so the guide is over the continuous sites only and the bound is on the marginal
``p(theta | y) = sum_z p(theta, z | y)``. The autoguides are built on the program with the
discrete sites hidden (``numpyro.handlers.block``); a guide program must leave them out.
After fitting, each draw theta_s of the guide is completed by an exact draw ``z_s ~ p(z |
theta_s, y)`` (``ppl.inference.hamiltonian.recover_discrete_sites``, enumeration; its cost is
given in that module: one forward-backward pass per draw for global sites, quadratic in
the length of a chain for sites inside ``markov``). So ``(theta_s, z_s) ~ q(theta) p(z |
theta, y)``. A discrete site without finite support is refused with
:class:`~ppl.errors.UnsupportedModelError` naming the site.

The whole run (NumPyro's ``SVI.init``, the ``num_steps`` updates in one ``lax.scan``, and the
``num_samples`` draws from the fitted guide, replayed through the model under ``vmap``) is
one ``jax.jit`` per model and argument structure. The result is an unweighted
:class:`~ppl.Posterior` of draws from q; ``info`` holds ``elbo`` (the ELBO estimate of
every step, shape ``(num_steps,)``), ``params`` (the fitted variational parameters, constrained
as NumPyro's ``SVI.get_params`` gives them) and ``guide``. ``log_likelihood`` and
``observed_data`` are filled as for the other methods, so ArviZ conversion works.

An ELBO estimate that is NaN or infinite at any step raises
:class:`~ppl.errors.NonFiniteWeightError` (:func:`check_elbo`): naming the sites when the
model's log density is not finite at the initial guide (NaN data, a +inf factor, a NaN
log density), else saying that the optimiser diverged, at which step, and to lower the
learning rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import SVI as NumPyroSVI
from numpyro.infer import Trace_ELBO, TraceEnum_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from numpyro.optim import _NumPyroOptim, optax_to_numpyro
from ppl.inference.base import (
    CompiledRuns,
    NonFiniteWeightError,
    check_count,
    check_key,
    check_option,
    nonfinite_sites_at,
    per_structure,
    sites_text,
)
from ppl.inference.hamiltonian import ModelSites, complete_draws, enumerate_discrete
from ppl.inference.progress import progress_scan
from ppl.semantics.sequential import replay_key
from ppl.semantics.trace import DETERMINISTIC, LATENT, OBSERVED, feasible_improper, record

from ppl.errors import ArgumentTypeError, UnsupportedModelError, check_positive
from ppl.posterior import Posterior
from ppl.primitives import in_markov_step

__all__ = ["GUIDES", "SVI", "check_continuous", "check_elbo", "classify_latents",
           "draw_from_guide", "guide_point", "make_guide",
           "make_optimizer", "observed_values", "svi"]

#: The automatic guide families ``guide=`` accepts by name.
GUIDES = ("normal", "mvn")


# --------------------------------------------------------------------------- blocks


def make_optimizer(optimizer, learning_rate: float):
    """A NumPyro optimiser from an optax transformation (or a NumPyro optimiser as is).

    ``None`` gives ``optax.adam(learning_rate)`` (Kingma & Ba 2015). Raises
    :class:`~ppl.errors.ArgumentTypeError` (a ``TypeError``) naming ``optimizer`` for
    anything else.
    """
    if optimizer is None:
        optimizer = optax.adam(learning_rate)
    if isinstance(optimizer, _NumPyroOptim):
        return optimizer
    if isinstance(optimizer, optax.GradientTransformation) or (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        return optax_to_numpyro(optimizer)
    raise ArgumentTypeError(
        f"optimizer must be an optax GradientTransformation (e.g. optax.adam(1e-2)) or a "
        f"numpyro.optim optimiser, got {optimizer!r}"
    )


def make_guide(guide, model, init_scale: float, hide=()):
    """The NumPyro guide for ``guide``: an autoguide on ``model`` (with the sites ``hide``
    hidden from it: the enumerated discrete ones) by name, or the program itself."""
    if hide and isinstance(guide, str):
        model = numpyro.handlers.block(model, hide=list(hide))
    if guide == "normal":
        return AutoNormal(model, init_scale=init_scale)
    if guide == "mvn":
        return AutoMultivariateNormal(model, init_scale=init_scale)
    return guide


def check_continuous(model, args, kwargs, what: str = "svi"):
    """``(latent site names, raw NumPyro trace)`` of one prior run; raise for a discrete
    latent site.

    Raises :class:`UnsupportedModelError` naming the first discrete site (see the module
    notes) and when the program has no latent site at all.
    """
    _, trace, raw = record(feasible_improper(model), replay_key(), args, kwargs,
                           densities=False)
    names = trace.latent_names
    for name in names:
        if getattr(raw[name]["fn"].support, "is_discrete", False):
            raise UnsupportedModelError(
                f"{what}: the latent site '{name}' ({type(raw[name]['fn']).__name__}) is "
                "discrete; the reparameterised ELBO and the Gaussian guides need continuous "
                "sites. Sum it out in the program, or use infer.nuts (which enumerates "
                "discrete sites) or infer.exact"
            )
    if not names:
        raise UnsupportedModelError(f"{what}: the program has no latent site to fit")
    return names, raw


def classify_latents(model, args, kwargs) -> ModelSites:
    """Split the latent sites of one prior run into continuous and (enumerable) discrete.

    Raises :class:`UnsupportedModelError` naming a discrete site without finite support,
    and when there is no continuous latent site (nothing to fit: use ``infer.exact``).
    """
    _, trace, raw = record(feasible_improper(model), replay_key(), args, kwargs,
                           densities=False)
    continuous, discrete, in_markov = [], [], False
    for name in trace.latent_names:
        fn = raw[name]["fn"]
        if not getattr(fn.support, "is_discrete", False):
            continuous.append(name)
        elif getattr(fn, "has_enumerate_support", False):
            discrete.append(name)
            in_markov = in_markov or in_markov_step(raw[name])
        else:
            raise UnsupportedModelError(
                f"svi: the discrete latent site '{name}' ({type(fn).__name__}) has no finite "
                "support to enumerate, so it can be neither fitted by a Gaussian guide nor "
                "summed out; give it a finite support or use infer.smc / infer.mh"
            )
    if not continuous:
        raise UnsupportedModelError(
            f"svi: the program has no continuous latent site to fit (its latent sites "
            f"{discrete} are all discrete); use infer.exact() for exact inference"
        )
    observed = {n: trace.values[n] for n in trace.names(OBSERVED)}
    return ModelSites(continuous, discrete, in_markov, observed)


def draw_from_guide(key, model, guide, params, args, kwargs, num_samples: int,
                    sites: ModelSites | None = None):
    """``num_samples`` draws from the fitted guide, each replayed through the model.

    One draw: run the guide with its parameters substituted, keep the values of the
    model's latent sites it sampled (autoguides also sample auxiliary sites, dropped
    here), and run the model with those values fixed (sites the guide left out are drawn
    from their prior conditional). With enumerated discrete ``sites``, the discrete sites
    are instead drawn from their exact conditional given the guide's draw
    (:func:`ppl.inference.hamiltonian.complete_draws`). Vmapped over keys. Returns ``(samples,
    log_likelihood)``: latent and deterministic sites, and the pointwise log density of
    each observed site.
    """
    fitted = numpyro.handlers.substitute(guide, data=params)
    latent = set(check_latent_names(model, args, kwargs))
    k_draw, k_complete = jax.random.split(key)

    def guide_draw(k):
        _, q_trace, _ = record(fitted, k, args, kwargs)
        return {n: v for n, v in q_trace.select(LATENT).items() if n in latent}

    if sites is not None and sites.discrete:
        continuous = jax.vmap(guide_draw)(jax.random.split(k_draw, num_samples))
        return complete_draws(k_complete, model, continuous, args, kwargs, sites, True)

    def one(k):
        k_q, k_p = jax.random.split(k)
        _, trace, _ = record(model, k_p, args, kwargs, substitutions=guide_draw(k_q))
        log_likelihood = {n: trace.log_probs[n] for n in trace.names(OBSERVED)}
        return trace.select(LATENT, DETERMINISTIC), log_likelihood

    return jax.vmap(one)(jax.random.split(k_draw, num_samples))


def observed_values(model, args, kwargs) -> dict:
    """The data of every observed site of one run (read without touching outer handlers)."""
    with numpyro.handlers.block():
        _, trace, _ = record(feasible_improper(model), replay_key(), args, kwargs,
                             densities=False)
    return {n: trace.values[n] for n in trace.names(OBSERVED)}


def check_latent_names(model, args, kwargs) -> list[str]:
    """Latent site names of one prior run of ``model`` (tracing only)."""
    return record(feasible_improper(model), replay_key(), args, kwargs,
                  densities=False)[1].latent_names


def fit(key, model, guide, optimizer, args, kwargs, num_steps: int, num_particles: int = 1,
        progress_bar: bool = False, desc: str = "svi", enumerate_sites: bool = False,
        track_finite: bool = False):
    """NumPyro's ``SVI.init`` then ``num_steps`` updates in one ``lax.scan``.

    Each update is one stochastic gradient step on the ``Trace_ELBO`` estimate with
    ``num_particles`` reparameterised draws (Kingma & Welling 2014, eq. 7); with
    ``enumerate_sites`` the discrete sites of ``model`` are summed out (``TraceEnum_ELBO``
    on the enumerated program, module notes). Returns ``(params, elbo)``: the constrained
    parameters and the ELBO estimate of each step; with ``track_finite``, also the initial
    parameters and the last parameters at which the ELBO estimate was finite (for
    :func:`check_elbo`).
    """
    if enumerate_sites:
        model = enumerate_discrete(model)
        elbo = TraceEnum_ELBO(num_particles=num_particles)
    else:
        elbo = Trace_ELBO(num_particles=num_particles)
    engine = NumPyroSVI(model, guide, optimizer, elbo)
    state = engine.init(key, *args, **kwargs)
    if track_finite:
        initial = engine.get_params(state)

        def tracked(carry, _):
            state, last = carry
            before = engine.get_params(state)  # the ELBO of this step is estimated here
            state, loss = engine.update(state, *args, **kwargs)
            last = jax.tree.map(lambda b, a: jnp.where(jnp.isfinite(loss), b, a), before, last)
            return (state, last), -loss

        (state, last), elbo = progress_scan(tracked, (state, initial), length=num_steps,
                                            desc=desc, enable=progress_bar)
        return engine.get_params(state), elbo, initial, last

    def body(state, _):
        state, loss = engine.update(state, *args, **kwargs)
        return state, -loss

    state, elbo = progress_scan(body, state, length=num_steps, desc=desc,
                               enable=progress_bar)
    return engine.get_params(state), elbo


def guide_point(key, guide, params, args, kwargs, latent) -> dict:
    """One draw of ``guide`` with ``params``: the values of the model's ``latent`` sites."""
    _, q_trace, _ = record(numpyro.handlers.substitute(guide, data=params), key, args, kwargs)
    return {n: v for n, v in q_trace.select(LATENT).items() if n in latent}


def check_elbo(elbo, model, initial, last, args, kwargs, learning_rate, who="svi"):
    """Raise :class:`~ppl.errors.NonFiniteWeightError` when an ELBO estimate of the run
    is NaN or infinite (the optimiser state is then NaN and so are the draws).

    The sites to blame are sought at ``initial``, a draw of the initial guide (latent
    values, :func:`guide_point`): NaN data (also inside a ``markov`` step), a +inf factor,
    a log density that is NaN at the parameters. When the data and that initial log
    density are finite and the ELBO was finite at first, the optimiser diverged: the error
    names the step at which the ELBO went non-finite and suggests a smaller learning rate
    (and names any site that is non-finite at ``last``, a draw of the guide at the last
    parameters with a finite ELBO)."""
    elbo = np.asarray(elbo)
    bad = ~np.isfinite(elbo)
    if not bad.any():
        return
    k = int(np.flatnonzero(bad)[0])
    value = "NaN" if np.isnan(elbo[k]) else f"{elbo[k]:+}"
    neginf = bool(np.isneginf(elbo[k]))  # impossible (e.g. infinite) data
    lines = nonfinite_sites_at(model, args, kwargs, initial, include_neginf=neginf)
    if k == 0 or lines:
        raise NonFiniteWeightError(
            f"{who}: the ELBO estimate is {value} at step {k} (the model's log density is "
            f"not finite, not a learning-rate problem); site(s) with a non-finite log "
            f"density at a draw of the initial guide: "
            f"{sites_text(lines) or 'none found (check factor terms and the gradient)'}"
        )
    lines = nonfinite_sites_at(model, args, kwargs, last)
    at_last = (f"; at the last parameters with a finite ELBO: {sites_text(lines)}"
               if lines else "")
    raise NonFiniteWeightError(
        f"{who}: the optimiser diverged: the ELBO estimate was finite up to step {k - 1} "
        f"(last {elbo[k - 1]:.4g}) and is {value} at step {k}, while the data and the "
        f"initial log density are finite; use a smaller learning rate (learning_rate="
        f"{learning_rate:g}, or the optimizer's), or clip the gradients, e.g. "
        f"optax.chain(optax.clip_by_global_norm(1.0), optax.adam(...)){at_last}"
    )


# --------------------------------------------------------------------------- combinator


class SVI:
    """``svi(guide="normal", num_steps=1000, optimizer=None, num_samples=1000, ...)``; see
    :func:`svi`."""

    def __init__(self, guide="normal", num_steps: int = 1000, optimizer=None,
                 num_samples: int = 1000, *, learning_rate: float = 1e-2,
                 num_particles: int = 1, init_scale: float = 0.1, progress_bar: bool = False):
        if isinstance(guide, str):
            check_option("guide", guide, GUIDES)
        elif not callable(guide):
            raise ArgumentTypeError(
                f"guide must be one of {list(GUIDES)} or a guide program (a callable), "
                f"got {guide!r}"
            )
        self.guide = guide
        self.num_steps = check_count("num_steps", num_steps)
        self.num_samples = check_count("num_samples", num_samples)
        self.num_particles = check_count("num_particles", num_particles)
        self.init_scale = check_positive("init_scale", init_scale)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.optimizer = make_optimizer(optimizer, self.learning_rate)
        self.progress_bar = bool(progress_bar)
        self._runs = CompiledRuns(self._core)
        self._checked = {}  # argument structure -> discrete site names

    def _core(self, key, model, args, kwargs):
        k_fit, k_draw = jax.random.split(key)
        sites = classify_latents(model, args, kwargs)
        guide = make_guide(self.guide, model, self.init_scale, hide=sites.discrete)
        params, elbo, initial, last = fit(
            k_fit, model, guide, self.optimizer, args, kwargs, self.num_steps,
            self.num_particles, self.progress_bar, enumerate_sites=bool(sites.discrete),
            track_finite=True,
        )
        samples, log_likelihood = draw_from_guide(
            k_draw, model, guide, params, args, kwargs, self.num_samples, sites
        )
        observed = observed_values(model, args, kwargs)
        latent = set(sites.continuous)
        initial, last = (guide_point(k_draw, guide, p, args, kwargs, latent)
                         for p in (initial, last))  # where check_elbo looks for the sites
        return samples, log_likelihood, elbo, params, observed, initial, last

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Fit the guide to ``model(*args, **kwargs)`` and draw ``num_samples`` from it."""
        key = check_key(key)
        # one eager run per argument structure: its errors (a discrete site that cannot be
        # enumerated, an invalid distribution parameter at a prior draw) before compiling
        discrete = per_structure(self._checked, model, args, kwargs,
                                 lambda: list(classify_latents(model, args, kwargs).discrete))
        samples, log_likelihood, elbo, params, observed, initial, last = self._runs(
            key, model, args, kwargs)
        check_elbo(elbo, model, initial, last, args, kwargs, self.learning_rate)
        guide_name = self.guide if isinstance(self.guide, str) else getattr(
            self.guide, "__name__", repr(self.guide))
        info = {"elbo": elbo, "params": params, "guide": guide_name,
                "num_steps": self.num_steps,
                "discrete_sites": list(discrete)}
        return Posterior(samples, observed_data=observed, log_likelihood=log_likelihood,
                         method="svi", info=info)

    def __repr__(self):
        return (f"svi(guide={self.guide!r}, num_steps={self.num_steps}, "
                f"num_samples={self.num_samples}, num_particles={self.num_particles})")


def svi(guide="normal", num_steps: int = 1000, optimizer=None, num_samples: int = 1000,
        **options) -> SVI:
    """Stochastic variational inference lowered to NumPyro's ``SVI`` (module notes).

    ``guide``: ``"normal"`` (mean-field ``AutoNormal``), ``"mvn"``
    (``AutoMultivariateNormal``) or a guide program; ``num_steps``: optimisation steps (one
    ``lax.scan``); ``optimizer``: an optax transformation (default
    ``optax.adam(learning_rate)``); ``num_samples``: draws from the fitted guide. Keyword
    options: ``learning_rate=1e-2`` (for the default optimiser), ``num_particles=1``
    (draws per ELBO estimate), ``init_scale=0.1`` (initial scale of the autoguides),
    ``progress_bar=False``.

    ``.run(key, model, *args, **kwargs)`` returns an unweighted :class:`~ppl.Posterior`
    with ``info["elbo"]`` (per step), ``info["params"]`` and ``info["guide"]``. Same key,
    same answer.
    """
    return SVI(guide, num_steps, optimizer, num_samples, **options)
