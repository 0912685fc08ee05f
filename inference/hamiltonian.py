"""NUTS and HMC lowered to NumPyro, with discrete latent sites marginalised automatically.

A program's continuous latent sites are sampled by NumPyro's ``MCMC`` with the No-U-Turn
sampler (Hoffman & Gelman 2014, JMLR 15, "The No-U-Turn Sampler", Algorithm 6 with dual
averaging of the step size; in the multinomial form of Betancourt 2017, "A Conceptual
Introduction to Hamiltonian Monte Carlo", appendix A) or with fixed-length HMC (Neal 2011,
"MCMC using Hamiltonian dynamics", Figure 2). They move on the unconstrained space
``u = T^{-1}(x)`` with the density of :meth:`ppl.semantics.Density.log_joint_unconstrained`,
``log p(T(u), y) + log |det dT/du|``: NumPyro's potential energy is its negative (a test
checks this), so ppl adds no model transformation of its own for continuous programs.

Discrete latent sites are not something HMC can move. With no annotation from the user we
marginalise them (Obermeyer et al. 2019, "Tensor variable elimination for plated factor
graphs", the enumeration behind NumPyro's ``contrib.funsor``): NUTS targets

    p(theta | y) = sum_z p(theta, z, y) / p(y)

where every discrete site is enumerated in parallel: global sites through
``config_enumerate(model, default="parallel")``, sites inside ``ppl.markov`` steps through
:func:`ppl.primitives.wrap_markov_steps` (NumPyro's ``scan`` hides its body from outer
handlers; summing over the time axis is then the forward algorithm). Afterwards the
discrete sites are recovered by exact conditional sampling, the chain rule

    p(theta, z | y) = p(theta | y) p(z | theta, y):

for each posterior draw theta_s, draw ``z_s ~ p(z | theta_s, y)`` exactly with
:class:`ppl.semantics.Enumerated` on the model conditioned on theta_s (vmapped over draws).
``(theta_s, z_s)`` then has the joint posterior as its stationary law.

Cost of the recovery (``recover_discrete=True``, the default): for programs whose discrete
sites are global (no ``markov``) one forward-filter backward-sample pass
(``infer_discrete``) per posterior draw; for discrete sites inside ``markov`` steps,
NumPyro's ``infer_discrete`` does not reach inside ``scan`` and we draw by sequential
conditioning, one enumeration (a forward pass and its gradient) per latent element per
draw: ``O(S * T)`` forward-backward passes for S draws of a T-step chain, i.e. quadratic in
T. That suits chains of a few hundred steps; switch it off (``recover_discrete=False``) for
long chains when only the continuous sites are wanted.

The result is a :class:`~ppl.Posterior`, samples chain-major, with ``sample_stats``
(``accept_prob``, ``diverging``, ``num_steps``, ``lp`` = -potential energy, ``energy``,
as NumPyro's ``extra_fields`` give them), ``observed_data``, and ``log_likelihood``: the
pointwise log density of every observed site given all latent sites of each draw (the
:class:`~ppl.semantics.Density` trace under ``vmap``; with discrete sites this is the
log-likelihood given the recovered ``z_s``, so it is absent when ``recover_discrete=False``).

A chain that never had a finite log density (NaN data inside a ``markov`` step, a +inf
factor, a NaN log density at every parameter value: NumPyro then repeats its initial
point, every transition divergent) raises :class:`~ppl.errors.NonFiniteWeightError`
naming the sites and steps (:func:`check_chains`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.contrib.funsor import config_enumerate
from numpyro.infer import HMC as NumPyroHMC
from numpyro.infer import MCMC
from numpyro.infer import NUTS as NumPyroNUTS
from ppl.inference.base import (
    RunCache,
    check_count,
    check_key,
    check_nonnegative,
    check_option,
    compile_and_call,
    nonfinite_sites_at,
    sites_text,
)
from ppl.semantics.density import Density
from ppl.semantics.enumerated import Enumerated
from ppl.semantics.sequential import replay_key
from ppl.semantics.trace import DETERMINISTIC, LATENT, OBSERVED, feasible_improper, record

from ppl.errors import (
    NonFiniteWeightError,
    UnsupportedModelError,
    check_positive,
    check_probability,
)
from ppl.posterior import Posterior
from ppl.primitives import in_markov_step, wrap_markov_steps

__all__ = [
    "HMC",
    "NUTS",
    "ModelSites",
    "check_chains",
    "complete_draws",
    "enumerate_discrete",
    "hmc",
    "inspect_sites",
    "nuts",
    "recover_discrete_sites",
]

CHAIN_METHODS = ("vectorized", "parallel", "sequential")
#: NumPyro ``HMCState`` fields collected per draw (``diverging`` is always collected).
EXTRA_FIELDS = ("accept_prob", "num_steps", "potential_energy", "energy")


# --------------------------------------------------------------------------- checks


def _check_probability(argument: str, value) -> float:
    return check_probability(argument, value)  # in (0, 1); strings refused


def _check_positive(argument: str, value) -> float:
    return check_positive(argument, value)  # finite, > 0; strings refused


# --------------------------------------------------------------------------- blocks


class ModelSites:
    """The latent sites of one program run, split into continuous and discrete ones.

    ``continuous`` and ``discrete`` are lists of site names in program order,
    ``discrete_in_markov`` says whether any discrete site lives inside a ``markov`` step,
    and ``observed_data`` maps each observed site to its data.
    """

    def __init__(self, continuous, discrete, discrete_in_markov, observed_data):
        self.continuous = list(continuous)
        self.discrete = list(discrete)
        self.discrete_in_markov = bool(discrete_in_markov)
        self.observed_data = dict(observed_data)


def inspect_sites(model, args, kwargs) -> ModelSites:
    """Run ``model`` once from the prior and classify its latent sites.

    Sites with an improper prior (``ImproperUniform``, no sampler) are put at a feasible
    point instead (:func:`ppl.semantics.trace.feasible_improper`): NUTS/HMC never draw
    from the prior, NumPyro's ``init_to_uniform`` starts every chain uniformly in (-2, 2)
    on the unconstrained space, so improper priors of any support run (the posterior must
    be proper).

    A latent site is discrete when its distribution's support is discrete; it must then be
    enumerable (``has_enumerate_support``: Bernoulli, Categorical, ...), or HMC could
    neither move it nor sum it out. Raises :class:`UnsupportedModelError` naming the site
    for a non-enumerable discrete site, and when there is no continuous latent site (NUTS
    would have nothing to move: use ``infer.exact()``).
    """
    _, trace, raw = record(feasible_improper(model), replay_key(), args, kwargs,
                           densities=False)
    continuous, discrete, in_markov = [], [], False
    for name in trace.latent_names:
        site = raw[name]
        fn = site["fn"]
        if getattr(fn.support, "is_discrete", False):
            if not getattr(fn, "has_enumerate_support", False):
                raise UnsupportedModelError(
                    f"NUTS/HMC: the discrete latent site '{name}' ({type(fn).__name__}) has "
                    "no finite support to enumerate, so it can be neither moved by HMC nor "
                    "summed out; give it a finite support or use infer.mh / infer.smc"
                )
            discrete.append(name)
            in_markov = in_markov or in_markov_step(site)
        else:
            continuous.append(name)
    if not continuous:
        raise UnsupportedModelError(
            "NUTS/HMC: the program has no continuous latent site to sample (its latent "
            f"sites {discrete} are all discrete); use infer.exact() for exact inference"
        )
    observed = {n: trace.values[n] for n in trace.names(OBSERVED)}
    return ModelSites(continuous, discrete, in_markov, observed)


def enumerate_discrete(model):
    """``model`` with every discrete latent site enumerated in parallel, no annotation needed.

    Global sites get ``infer={"enumerate": "parallel"}`` from NumPyro's
    ``config_enumerate``; sites inside ``ppl.markov`` steps get it from the same wrapper
    applied to each step through :func:`ppl.primitives.wrap_markov_steps`, a context that is
    active whenever the returned program runs (under NUTS's initialisation, its potential
    energy and gradient). NumPyro's funsor log density then sums them out (Obermeyer et al.
    2019), which is what NUTS's potential sees.
    """
    configured = config_enumerate(model, default="parallel")

    def enumerated(*args, **kwargs):
        with wrap_markov_steps(config_enumerate):
            return configured(*args, **kwargs)

    return enumerated


def recover_discrete_sites(key, model, continuous_draws: dict, args, kwargs) -> dict:
    """Exact conditional draws ``z_s ~ p(z | theta_s, y)`` of the discrete sites, one per draw.

    The chain rule ``p(theta, z | y) = p(theta | y) p(z | theta, y)``: condition the
    program on each draw ``theta_s`` of its continuous sites (``numpyro.handlers.condition``,
    which also reaches inside ``markov`` steps, so the conditioned sites score their density
    and the remaining latent sites are exactly the discrete ones) and draw once from
    :meth:`ppl.semantics.Enumerated.sample` (``infer_discrete`` for global sites, sequential
    conditioning inside ``markov``). Vmapped over the leading (draw) axis.
    """
    num_draws = jax.tree.leaves(continuous_draws)[0].shape[0]

    def one(key_s, theta_s):
        conditioned = numpyro.handlers.condition(model, data=theta_s)
        draw = Enumerated(conditioned).sample(key_s, 1, *args, **kwargs)
        return jax.tree.map(lambda v: v[0], draw)

    return jax.vmap(one)(jax.random.split(key, num_draws), continuous_draws)


def complete_draws(key, model, continuous_draws, args, kwargs, sites: ModelSites, recover,
                   flags: bool = False):
    """Samples and pointwise log-likelihoods of every draw, given its continuous sites.

    Recovers the discrete sites (when ``recover``), then replays the program at each draw
    (the :class:`~ppl.semantics.Density` trace, vmapped) to get its deterministic sites and
    the elementwise log density of every observed site. Returns ``(samples,
    log_likelihood)``; without recovery of a model with discrete sites only the
    continuous draws are returned and no log-likelihood. With ``flags`` a third output
    says, per draw, whether some site's log density is NaN or +inf there (None without a
    replay), so :func:`check_chains` looks for the sites eagerly only where there are some.
    """
    values = dict(continuous_draws)
    if sites.discrete:
        if not recover:
            return (values, {}, None) if flags else (values, {})
        values.update(recover_discrete_sites(key, model, continuous_draws, args, kwargs))
    trace = jax.vmap(lambda v: Density(model).trace(v, *args, **kwargs))(values)
    samples = trace.select(LATENT, DETERMINISTIC)
    log_likelihood = {n: trace.log_probs[n] for n in trace.names(OBSERVED)}
    if not flags:
        return samples, log_likelihood
    nonfinite = jnp.zeros(jax.tree.leaves(values)[0].shape[:1], bool)
    for lp in trace.log_probs.values():
        bad = jnp.isnan(lp) | jnp.isposinf(lp)
        nonfinite = nonfinite | jnp.any(bad.reshape(bad.shape[0], -1), axis=1)
    return samples, log_likelihood, nonfinite


def check_chains(method: str, model, args, kwargs, sites: ModelSites, samples, fields,
                 nonfinite=None):
    """Raise :class:`~ppl.errors.NonFiniteWeightError` naming the sites when a chain never
    had a finite log density.

    NumPyro's NUTS/HMC, run under ``jit``, cannot refuse an initial point whose potential
    energy (minus the log density) is NaN or infinite: it keeps the last of its tries, and
    every trajectory from there is divergent with acceptance 0, so the chain is that point
    repeated. An accepted state always has a finite energy, so a non-finite
    ``potential_energy`` at any draw means such a stuck chain; so does a chain whose every
    transition diverged with acceptance 0 when a site's log density is non-finite at its
    draws (a NaN gradient, say). The sites are found by evaluating the program at that
    draw (:func:`~ppl.inference.base.nonfinite_sites_at`: "NaN data", the step of a
    ``markov`` site, a +inf factor, a NaN log density from the parameters). ``nonfinite``
    (per draw, from :func:`complete_draws`) spares that eager evaluation when the chain is
    stuck at finite energies and no site's log density is NaN or +inf at the draw (the
    run is then not an error: the diagnostics warn)."""
    energy = np.asarray(fields["potential_energy"]).reshape(-1)
    bad = ~np.isfinite(energy)
    diverging = np.asarray(fields["diverging"]).reshape(-1)
    accepted = np.asarray(fields["accept_prob"]).reshape(-1)
    stuck = diverging.size and diverging.all() and not np.any(accepted > 0)
    if not bad.any() and not stuck:
        return
    i = int(np.flatnonzero(bad)[0]) if bad.any() else 0
    if not bad.any() and nonfinite is not None and not np.asarray(nonfinite).reshape(-1)[i]:
        return  # every transition diverged at finite densities: the diagnostics warn
    latent = set(sites.continuous) | set(sites.discrete)
    values = {n: np.asarray(v).reshape(-1, *np.shape(v)[1:])[i] if np.ndim(v) else v
              for n, v in samples.items() if n in latent}
    lines = nonfinite_sites_at(model, args, kwargs, values,
                               include_neginf=bool(np.any(np.isposinf(energy))))
    if not bad.any() and not lines:
        return  # every transition diverged at finite densities: the diagnostics warn
    if bad.any():
        value = energy[i]
        density = "NaN" if np.isnan(value) else ("+inf" if value < 0 else "-inf")
        problem = (f"the log density is {density} at draw {i}, the chain's initial point "
                   "(every transition from it diverged with acceptance 0, so the chain "
                   "repeats it)")
    else:
        problem = ("every transition diverged with acceptance 0 from the initial point, "
                   "where a log density is not finite")
    raise NonFiniteWeightError(
        f"{method}: {problem}; site(s) with a non-finite log density there: "
        f"{sites_text(lines) or 'none found (check factor terms and the gradient)'}"
    )


# --------------------------------------------------------------------------- lowering


class _Lowered:
    """One program with one static structure of its arguments, lowered to NumPyro's MCMC.

    The whole run (NumPyro's ``MCMC.run``: initialisation, warm-up and sampling; then the
    recovery of discrete sites and the replay for deterministic sites and log-likelihoods)
    is one ``jax.jit``, compiled once per model, argument structure and shapes: array
    arguments are traced, Python scalars and other non-array arguments are closed over
    as constants (a model may use them as sizes; a model that needs its data concrete gets
    every argument closed over, see :mod:`ppl.inference.base`). NumPyro's own
    ``MCMC.run`` re-jits its sampling loop on every call; under our jit a second run with
    a new key compiles nothing. Two cases run eagerly instead (only the post-processing
    is jitted): a progress bar (NumPyro then drives the loop from Python) and
    ``chain_method="parallel"`` over several devices (NumPyro ``pmap``s the chains itself).
    """

    def __init__(self, algorithm, model, treedef, is_array, static, args, kwargs):
        self.algorithm = algorithm
        self.model = model
        self.treedef, self.is_array, self.static = treedef, is_array, static
        self.sites = inspect_sites(model, args, kwargs)
        self.target = enumerate_discrete(model) if self.sites.discrete else model
        eager = algorithm.progress_bar or (
            algorithm.chain_method == "parallel"
            and algorithm.num_chains > 1
            and jax.local_device_count() >= algorithm.num_chains
        )
        self.complete = jax.jit(self._complete)
        self.run = self._run_eager if eager else jax.jit(self._run)

    def rebuild(self, arrays):
        """The ``(args, kwargs)`` of the program from its traced array leaves."""
        it = iter(arrays)
        full = [next(it) if a else s for a, s in zip(self.is_array, self.static, strict=True)]
        return jax.tree.unflatten(self.treedef, full)

    def _mcmc(self):
        """A fresh NumPyro ``MCMC`` on the lowered program (fresh per trace: NumPyro's
        kernels keep state between runs)."""

        def lowered(*arrays):
            a, kw = self.rebuild(arrays)
            return self.target(*a, **kw)

        alg = self.algorithm
        return MCMC(
            alg.kernel(lowered),
            num_warmup=alg.num_warmup,
            num_samples=alg.num_samples,
            num_chains=alg.num_chains,
            chain_method=alg.chain_method,
            progress_bar=alg.progress_bar,
            jit_model_args=True,
        )

    def _sample(self, key, arrays):
        mcmc = self._mcmc()
        mcmc.run(key, *arrays, extra_fields=EXTRA_FIELDS)
        draws = mcmc.get_samples()
        continuous = {n: draws[n] for n in self.sites.continuous}
        return continuous, mcmc.get_extra_fields(), mcmc.last_state.adapt_state.step_size

    def _complete(self, key, continuous, arrays):
        """``(samples, log_likelihood, observed data, non-finite flags)``:
        :func:`complete_draws`, and the data of this call (``self.sites.observed_data``
        are those of the call that built the lowering)."""
        a, kw = self.rebuild(arrays)
        samples, log_likelihood, nonfinite = complete_draws(
            key, self.model, continuous, a, kw, self.sites, self.algorithm.recover_discrete,
            flags=True,
        )
        _, trace, _ = record(feasible_improper(self.model), replay_key(), a, kw,
                             densities=False)
        return samples, log_likelihood, trace.select(OBSERVED), nonfinite

    def _run(self, key, arrays):
        continuous, fields, step_size = self._sample(key, arrays)
        completed = self._complete(jax.random.fold_in(key, 1), continuous, arrays)
        return (*completed, fields, step_size)

    def _run_eager(self, key, arrays):
        continuous, fields, step_size = self._sample(key, arrays)
        completed = self.complete(jax.random.fold_in(key, 1), continuous, arrays)
        return (*completed, fields, step_size)


class _HamiltonianMC:
    """What NUTS and HMC share: options, the per-model cache, and the run."""

    method = ""

    def __init__(self, num_samples, num_warmup, num_chains, target_accept_prob, progress_bar,
                 chain_method, recover_discrete):
        self.num_samples = check_count("num_samples", num_samples)
        self.num_warmup = check_nonnegative("num_warmup", num_warmup)
        self.num_chains = check_count("num_chains", num_chains)
        self.target_accept_prob = _check_probability("target_accept_prob", target_accept_prob)
        self.chain_method = check_option("chain_method", chain_method, CHAIN_METHODS)
        self.progress_bar = bool(progress_bar)
        self.recover_discrete = bool(recover_discrete)
        self._cache = RunCache()

    def kernel(self, model):  # pragma: no cover - overridden
        raise NotImplementedError

    def _lowered_run(self, key, model, args, kwargs):
        """The lowering of ``model`` for these arguments (cached) and its run on ``key``;
        arguments are traced, or closed over when the model needs them concrete
        (:func:`~ppl.inference.base.compile_and_call`)."""

        def build(split):
            return _Lowered(self, model, split.treedef, split.is_array, split.static, args,
                            kwargs)

        return compile_and_call(self._cache, model, args, kwargs, build,
                                lambda lowered, split: (lowered, lowered.run(key, split.arrays)))

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Sample ``model(*args, **kwargs)``; see the module docstring for what is returned.

        ``key`` goes to NumPyro's ``MCMC.run(key, ...)`` unchanged, so for a program
        without discrete sites the draws are NumPyro's own NUTS/HMC draws for that key
        (equal, up to float rounding, to ``MCMC.run`` under ``jax.jit``; rounding
        differences between jitted and eager code grow along a chain). The recovery of
        discrete sites uses ``jax.random.fold_in(key, 1)``. Same key, same answer.
        """
        key = check_key(key)
        lowered, (samples, log_likelihood, observed, nonfinite, fields, step_size) = (
            self._lowered_run(key, model, args, kwargs))
        check_chains(self.method, model, args, kwargs, lowered.sites, samples, fields,
                     nonfinite)
        sample_stats = {
            "accept_prob": fields["accept_prob"],
            "diverging": fields["diverging"],
            "num_steps": fields["num_steps"],
            "lp": -fields["potential_energy"],
            "energy": fields["energy"],
        }
        info = {
            "step_size": step_size,
            "num_divergences": int(jnp.sum(fields["diverging"])),
            "discrete_sites": list(lowered.sites.discrete),
            "discrete_recovered": bool(lowered.sites.discrete and self.recover_discrete),
            "discrete_in_markov": lowered.sites.discrete_in_markov,
            "num_warmup": self.num_warmup,
        }
        return Posterior(
            samples,
            num_chains=self.num_chains,
            sample_stats=sample_stats,
            observed_data=observed,
            log_likelihood=log_likelihood,
            method=self.method,
            info=info,
        )


class NUTS(_HamiltonianMC):
    """``nuts(num_samples, num_warmup, num_chains, ...)``; see :func:`nuts`."""

    method = "nuts"

    def __init__(self, num_samples: int, num_warmup: int = 1000, num_chains: int = 1, *,
                 target_accept_prob=0.8, max_tree_depth: int = 10, dense_mass: bool = False,
                 progress_bar: bool = False, chain_method: str = "vectorized",
                 recover_discrete: bool = True):
        super().__init__(num_samples, num_warmup, num_chains, target_accept_prob,
                         progress_bar, chain_method, recover_discrete)
        self.max_tree_depth = check_count("max_tree_depth", max_tree_depth)
        self.dense_mass = bool(dense_mass)

    def kernel(self, model):
        """NumPyro's NUTS kernel on the (lowered) ``model``."""
        return NumPyroNUTS(
            model,
            target_accept_prob=self.target_accept_prob,
            max_tree_depth=self.max_tree_depth,
            dense_mass=self.dense_mass,
        )

    def __repr__(self):
        return (
            f"nuts(num_samples={self.num_samples}, num_warmup={self.num_warmup}, "
            f"num_chains={self.num_chains}, target_accept_prob={self.target_accept_prob}, "
            f"chain_method={self.chain_method!r}, recover_discrete={self.recover_discrete})"
        )


class HMC(_HamiltonianMC):
    """``hmc(num_samples, num_warmup, num_chains, num_steps, step_size, ...)``; see :func:`hmc`."""

    method = "hmc"

    def __init__(self, num_samples: int, num_warmup: int = 1000, num_chains: int = 1, *,
                 num_steps: int | None = None, step_size: float = 1.0,
                 trajectory_length: float = 2 * math.pi, adapt_step_size: bool = True,
                 target_accept_prob=0.8, dense_mass: bool = False, progress_bar: bool = False,
                 chain_method: str = "vectorized", recover_discrete: bool = True):
        super().__init__(num_samples, num_warmup, num_chains, target_accept_prob,
                         progress_bar, chain_method, recover_discrete)
        self.num_steps = None if num_steps is None else check_count("num_steps", num_steps)
        self.step_size = _check_positive("step_size", step_size)
        self.trajectory_length = _check_positive("trajectory_length", trajectory_length)
        self.adapt_step_size = bool(adapt_step_size)
        self.dense_mass = bool(dense_mass)

    def kernel(self, model):
        """NumPyro's HMC kernel on the (lowered) ``model``."""
        return NumPyroHMC(
            model,
            step_size=self.step_size,
            num_steps=self.num_steps,
            # NumPyro adapts the step size only when the trajectory length is left free
            trajectory_length=None if self.num_steps is not None else self.trajectory_length,
            adapt_step_size=self.adapt_step_size,
            target_accept_prob=self.target_accept_prob,
            dense_mass=self.dense_mass,
        )

    def __repr__(self):
        return (
            f"hmc(num_samples={self.num_samples}, num_warmup={self.num_warmup}, "
            f"num_chains={self.num_chains}, num_steps={self.num_steps}, "
            f"step_size={self.step_size}, chain_method={self.chain_method!r})"
        )


def nuts(num_samples: int, num_warmup: int = 1000, num_chains: int = 1, **options) -> NUTS:
    """The No-U-Turn sampler (Hoffman & Gelman 2014), lowered to NumPyro's ``MCMC``.

    Keyword options: ``target_accept_prob=0.8`` (dual-averaging target),
    ``max_tree_depth=10``, ``dense_mass=False``, ``progress_bar=False``,
    ``chain_method="vectorized"`` (or ``"parallel"``, ``"sequential"``), and
    ``recover_discrete=True``: discrete latent sites are always summed out of the
    density NUTS samples; with this option they are then drawn from their exact
    conditional given each draw (cost in the module docstring).

    ``.run(key, model, *args, **kwargs)`` returns a :class:`~ppl.Posterior` with
    ``num_chains * num_samples`` draws (chain-major), ``sample_stats`` ``accept_prob``,
    ``diverging``, ``num_steps``, ``lp``, ``energy``, ``log_likelihood`` per observed site
    and ``observed_data``; ``info`` has the adapted ``step_size`` and ``num_divergences``.
    """
    return NUTS(num_samples, num_warmup, num_chains, **options)


def hmc(num_samples: int, num_warmup: int = 1000, num_chains: int = 1, **options) -> HMC:
    """Hamiltonian Monte Carlo (Neal 2011) with ``num_steps`` leapfrog steps of size
    ``step_size``, lowered to NumPyro's ``MCMC``.

    Keyword options as :func:`nuts` (without ``max_tree_depth``), plus ``num_steps=None``
    (leapfrog steps per iteration; None: ``ceil(trajectory_length / step_size)`` with
    ``trajectory_length=2 pi``) and ``step_size=1.0`` (the initial step size; adapted
    during warm-up by dual averaging towards ``target_accept_prob`` unless
    ``adapt_step_size=False``).
    """
    return HMC(num_samples, num_warmup, num_chains, **options)
