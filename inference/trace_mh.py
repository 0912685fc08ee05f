"""Trace Metropolis-Hastings: MCMC kernels that act on the trace of a program.

A program's run is a :class:`~ppl.semantics.trace.Trace` (every latent value with its log
density). An MH kernel proposes a new trace and accepts it with probability
``min(1, exp(log a))`` (Metropolis et al. 1953; Hastings 1970), which leaves the posterior
``p(x | y) ∝ p(x, y)`` invariant. Each building block below is a small pure function; bound
to a model (:func:`make_kernel`) it is a kernel ``kernel(key, trace, args, kwargs) ->
(trace, accepted)``:

* :func:`regenerate_site_step` / :func:`single_site_step` — single-site MH: pick one latent
  site uniformly (``lax.switch`` over the static list of sites) and redraw it from its prior
  given the rest (:meth:`Traced.regenerate`); the proposal's density cancels the site's own
  prior term, so ``log a`` is the change of every *other* site's log density
  (Wingate, Stuhlmüller & Goodman 2011, "Lightweight implementations of probabilistic
  programming languages via transformational compilation", section 3; monad-bayes'
  ``mhTrans``, Ścibior et al. 2018, section 7). Discrete sites work. A site is what the
  trace records under one name: a site in a ``plate`` is regenerated as a whole. On a
  ``markov`` program the units are the global sites and the time steps, a step moved on its
  Markov blanket in O(1) (:func:`markov_single_site_step`,
  :mod:`ppl.inference.local_moves`); ``block="site"`` regenerates a stacked step site
  as a whole.
* :func:`random_walk_step` — Gaussian random walk on the unconstrained coordinates
  ``u = T^{-1}(x)`` of every continuous latent site, ``u' = u + h eps``, ``eps ~ N(0, I)``,
  with ``log a = log p~(u') - log p~(u)`` where ``log p~`` is
  :meth:`Density.log_joint_unconstrained` (log joint plus log-Jacobian; the proposal is
  symmetric). Metropolis et al. 1953 in the coordinates of Stan / NumPyro.
* :func:`program_step` — a user proposal program ``proposal(current_values, *args,
  **kwargs)`` that samples some of the model's latent sites S given the current values of
  all of them. Convention for the Hastings correction: the forward density is the
  proposal's log density of the values it drew, ``log q(x'_S | x)``; the reverse density
  ``log q(x_S | x')`` is obtained by *replaying* the proposal from the proposed state
  (``current_values = x'``) with its sites fixed to the old values. Then
  ``log a = log p(x', y) - log p(x, y) + log q(x_S | x') - log q(x'_S | x)``.
  A proposed value outside its site's support is rejected. The proposal may only sample
  latent sites of the model (anything else raises :class:`UnsupportedModelError`).

:func:`run_chain` iterates a kernel on the one chain driver of :mod:`ppl.inference.kernels`
(:func:`~ppl.inference.kernels.sample_chain`: one ``lax.scan``, warmup then sampling), and
:class:`MH` vectorises chains with ``vmap`` (:func:`~ppl.inference.kernels.run_chain`); the
whole run is one ``jit``. The accept step, the random walk and the step-size adaptation are
the shared ones of :mod:`ppl.inference.kernels`. With
``proposal="random_walk"`` and ``num_warmup > 0`` the step size ``h`` is adapted during
warmup by Robbins-Monro on ``log h`` towards an acceptance probability of 0.3 (Andrieu &
Thoms 2008, "A tutorial on adaptive MCMC", section 5.1 / Algorithm 4):
``log h_{i+1} = log h_i + (i+1)^{-0.6} (abar_i - 0.3)``, ``abar_i`` the mean acceptance
probability of iteration i; the final warmup value is then kept fixed while sampling (a
fixed kernel, so the draws are a valid MH chain). ``0.3`` sits between the optimal
acceptance of a random walk in one dimension (0.44) and in many (0.234, Roberts, Gelman &
Gilks 1997).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ppl.inference.base import (
    CompiledRuns,
    check_count,
    check_key,
    check_log_weights,
    check_nonnegative,
    check_option,
    per_structure,
)
from ppl.inference.kernels import (
    MHInfo,
    cast_like,
    mh_accept,
    random_walk,
    repeat,
    sample_chain,
    step_size_adaptation,
)
from ppl.inference.kernels import run_chain as run_chains
from ppl.inference.local_moves import (
    MarkovLayout,
    markov_layout,
    propose_step,
    state_space,
    write_steps,
)
from ppl.semantics.density import Density
from ppl.semantics.sequential import replay_key
from ppl.semantics.trace import DETERMINISTIC, FACTOR, LATENT, OBSERVED, Trace, record
from ppl.semantics.traced import Traced

from ppl.errors import (
    ArgumentTypeError,
    ConvergenceWarning,
    NonFiniteWeightError,
    UnsupportedModelError,
    check_positive,
)
from ppl.posterior import Posterior

__all__ = [
    "MH",
    "MHStep",
    "make_kernel",
    "metropolis_hastings",
    "mh",
    "program_step",
    "random_walk_step",
    "regenerate_site_step",
    "run_chain",
    "single_site_step",
]

PROPOSALS = ("prior", "random_walk")
BLOCKS = ("step", "site")
TARGET_ACCEPT = 0.3  # Robbins-Monro target of the random-walk step size adaptation


class MHStep(NamedTuple):
    """One MH transition: the new state, whether the proposal was accepted and the
    acceptance probability ``min(1, exp(log a))``."""

    trace: object
    accepted: jnp.ndarray
    accept_prob: jnp.ndarray


# --------------------------------------------------------------------------- accept / reject


def metropolis_hastings(key, current, proposed, log_alpha) -> MHStep:
    """Accept ``proposed`` with probability ``min(1, exp(log_alpha))``, else keep
    ``current`` (Metropolis et al. 1953; Hastings 1970, eq. 2.3): the shared accept step
    :func:`ppl.inference.kernels.mh_accept` as an :class:`MHStep`. Works on any pytree
    state; a NaN ``log_alpha`` (e.g. ``-inf - (-inf)``) counts as a rejection. Every
    kernel of this module calls it through the module attribute, so a test can replace it."""
    state, info = mh_accept(key, current, proposed, log_alpha)
    return MHStep(state, info.accepted, info.accept_prob)


# --------------------------------------------------------------------------- (a) single site


def regenerate_site_step(key, trace: Trace, index, args, kwargs, model, sites=None) -> MHStep:
    """MH that redraws latent site ``sites[index]`` from its prior given the rest.

    ``index`` may be traced: the site is chosen with ``lax.switch`` over the static list
    ``sites`` (default: every latent site of ``trace``). The log acceptance ratio is
    :meth:`Traced.regenerate`'s: the sum over the *other* sites of the change of their log
    density (Wingate, Stuhlmüller & Goodman 2011, section 3, with the forward and reverse
    proposal probabilities 1/|sites| cancelling since the site set is fixed)."""
    sites = tuple(trace.latent_names if sites is None else sites)
    traced = Traced(model)
    key_prop, key_accept = jax.random.split(key)

    def branch(site):
        def regenerate(k, tr):
            new, log_ratio = traced.regenerate(k, tr, (site,), *args, **kwargs)
            return cast_like(new, tr), jnp.asarray(log_ratio, dtype=jnp.result_type(float))

        return regenerate

    proposed, log_alpha = jax.lax.switch(index, [branch(s) for s in sites], key_prop, trace)
    return metropolis_hastings(key_accept, trace, proposed, log_alpha)


def single_site_step(key, trace: Trace, args, kwargs, model, sites=None) -> MHStep:
    """Single-site MH (monad-bayes' ``mhTrans``): choose one latent site uniformly and
    regenerate it from the prior (:func:`regenerate_site_step`)."""
    sites = tuple(trace.latent_names if sites is None else sites)
    if not sites:
        raise UnsupportedModelError("mh: the program has no latent site to move")
    key_site, key_step = jax.random.split(key)
    index = jax.random.randint(key_site, (), 0, len(sites))
    return regenerate_site_step(key_step, trace, index, args, kwargs, model, sites)


def markov_single_site_step(key, trace: Trace, args, kwargs, model,
                            layout: MarkovLayout) -> MHStep:
    """Single-site MH on a ``markov`` program, one time step per move: choose uniformly
    one of the G global latent sites and the T steps; a global site is regenerated from
    its prior given the rest (:func:`regenerate_site_step`, a run of the whole program,
    O(T)), a step's latent sites from the transition given the previous carry, accepted
    with the ratio of its Markov blanket (:func:`ppl.inference.local_moves.step_move`,
    O(1) in T). So a move costs O(1 + G) on average, as monad-bayes' ``mhTrans``, which
    regenerates one random choice (Ścibior et al. 2018, section 7); the unit set is fixed,
    so the forward and reverse choice probabilities 1/(G+T) cancel."""
    G, T = len(layout.global_sites), layout.num_steps
    key_unit, key_prop, key_accept = jax.random.split(key, 3)
    unit = jax.random.randint(key_unit, (), 0, G + T)
    dtype = jnp.result_type(float)

    def local(k, tr):
        # accept or reject the two touched steps only, then write them in place: O(1)
        params = {n: tr.values[n] for n in layout.global_sites}
        ssm = state_space(model, args, kwargs, params=params)
        proposal = propose_step(k, tr, unit - G, layout, ssm)
        step = metropolis_hastings(key_accept, proposal.current, proposal.proposed,
                                   jnp.asarray(proposal.log_alpha, dtype))
        # the two chosen steps as a branch's result: XLA materialises them before the
        # writes instead of recomputing the choice inside each buffer's update, which
        # reads the other buffers and made it copy every buffer of the trace at every move
        chosen = jax.lax.cond(step.accepted, lambda: step.trace, lambda: proposal.current)
        written = write_steps(tr, unit - G, chosen, T)
        return MHStep(written, step.accepted, step.accept_prob)

    def global_site(k, tr):
        return regenerate_site_step(k, tr, jnp.minimum(unit, G - 1), args, kwargs, model,
                                    layout.global_sites)

    if G:
        return jax.lax.cond(unit < G, global_site, local, key_prop, trace)
    return local(key_prop, trace)


# --------------------------------------------------------------------------- (b) random walk


def _discrete_sites(model, trace: Trace, args, kwargs) -> set:
    """Names of the latent sites whose support is discrete (read from the distributions
    of one replayed run; static)."""
    raw = record(model, replay_key(), args, kwargs, substitutions=trace.select(LATENT))[2]
    return {
        n for n in trace.latent_names if raw[n]["fn"].support.is_discrete
    }


def random_walk_step(key, trace: Trace, args, kwargs, model, step_size=0.5) -> MHStep:
    """Gaussian random-walk Metropolis on the unconstrained coordinates of every latent
    site: ``u' = u + step_size * N(0, I)``, ``log a = log p~(u') - log p~(u)`` with
    ``log p~`` = :meth:`Density.log_joint_unconstrained` (Metropolis et al. 1953). Every
    latent site must be continuous (a discrete site would never move)."""
    discrete = _discrete_sites(model, trace, args, kwargs)
    if discrete:
        raise UnsupportedModelError(
            f"mh(proposal='random_walk') moves continuous sites only, and the program has "
            f"discrete latent site(s) {sorted(discrete)} it would never change; use "
            f"proposal='prior' (single-site regeneration) for them"
        )
    if not trace.latent_names:
        raise UnsupportedModelError("mh: the program has no latent site to move")
    density = Density(model)
    u = density.to_unconstrained(trace.select(LATENT), *args, **kwargs)
    key_noise, key_accept = jax.random.split(key)
    u_new = random_walk(key_noise, u, step_size)
    log_alpha = density.log_joint_unconstrained(u_new, *args, **kwargs) - (
        density.log_joint_unconstrained(u, *args, **kwargs)
    )
    values = density.to_constrained(u_new, *args, **kwargs)
    proposed = density.trace(values, *args, **kwargs)
    return metropolis_hastings(key_accept, trace, proposed, log_alpha)


# --------------------------------------------------------------------------- (c) program


def _log_support(raw, names):
    """0 if every named latent value lies in its distribution's support, else -inf."""
    inside = jnp.array(True)
    for n in names:
        inside = inside & jnp.all(raw[n]["fn"].support(raw[n]["value"]))
    return jnp.where(inside, 0.0, -jnp.inf)


def program_step(key, trace: Trace, args, kwargs, model, proposal) -> MHStep:
    """MH with a user proposal program ``proposal(current_values, *args, **kwargs)``.

    The proposal draws some latent sites S of the model given the dict of all current
    latent values. ``log a = log p(x', y) - log p(x, y) + log q(x_S | x') - log q(x'_S |
    x)`` (Hastings 1970), the reverse density by replaying the proposal from ``x'`` with
    its sites fixed to the old values; a value outside its site's support is rejected."""
    current = trace.select(LATENT)
    key_prop, key_accept = jax.random.split(key)
    _, forward, _ = record(proposal, key_prop, (current, *args), kwargs)
    sampled = forward.latent_names
    unknown = [s for s in sampled if s not in current]
    if unknown:
        raise UnsupportedModelError(
            f"mh: the proposal program samples site(s) {unknown} that are not latent sites "
            f"of the model (latent sites: {list(current)})"
        )
    if not sampled:
        raise UnsupportedModelError("mh: the proposal program samples no site")
    values = {**current, **cast_like(forward.select(LATENT), {s: current[s] for s in sampled})}
    _, proposed, raw = record(model, replay_key(), args, kwargs, substitutions=values)
    _, reverse, _ = record(
        proposal, replay_key(), (values, *args), kwargs,
        substitutions={s: current[s] for s in sampled},
    )
    log_alpha = (
        proposed.log_joint - trace.log_joint + reverse.log_prior - forward.log_prior
        + _log_support(raw, sampled)
    )
    return metropolis_hastings(key_accept, trace, proposed, log_alpha)


# --------------------------------------------------------------------------- kernels


def _step_fn(model, proposal, step_size, layout=None):
    """``step(key, trace, args, kwargs, step_size) -> MHStep`` for a proposal option
    (``layout``: a markov program's, for one-time-step moves with ``proposal="prior"``)."""
    if proposal == "prior" and layout is not None:
        return lambda k, tr, a, kw, h: markov_single_site_step(k, tr, a, kw, model, layout)
    if proposal == "prior":
        return lambda k, tr, a, kw, h: single_site_step(k, tr, a, kw, model)
    if proposal == "random_walk":
        return lambda k, tr, a, kw, h: random_walk_step(k, tr, a, kw, model, h)
    return lambda k, tr, a, kw, h: program_step(k, tr, a, kw, model, proposal)


def make_kernel(model, proposal="prior", step_size=0.5):
    """A kernel ``kernel(key, trace, args, kwargs) -> (trace, accepted)`` for ``model``:
    ``proposal`` is ``"prior"`` (single-site regeneration), ``"random_walk"`` (with
    ``step_size``) or a proposal program."""
    _check_proposal(proposal)
    step = _step_fn(model, proposal, step_size)

    def kernel(key, trace, args=(), kwargs=None):
        result = step(key, trace, tuple(args), dict(kwargs or {}), step_size)
        return result.trace, result.accepted

    return kernel


# --------------------------------------------------------------------------- chain


class Draw(NamedTuple):
    """What one sampling iteration records (stacked by the chain driver)."""

    values: dict  # latent and deterministic sites
    log_likelihood: dict  # observed site -> pointwise log density
    site_log_probs: dict  # latent/observed/factor site -> summed log density
    log_joint: jnp.ndarray
    accept_prob: jnp.ndarray  # mean over the `num_mcmc_steps` kernel applications
    accepted: jnp.ndarray  # fraction accepted among them


def _sites(trace: Trace) -> dict:
    """The part of a trace a kept draw records (the driver's ``collect``)."""
    return {
        "values": trace.select(LATENT, DETERMINISTIC),
        "log_likelihood": {n: trace.log_probs[n] for n in trace.names(OBSERVED)},
        "site_log_probs": {
            n: jnp.sum(trace.log_probs[n]) for n in trace.names(LATENT, OBSERVED, FACTOR)
        },
        "log_joint": trace.log_joint,
    }


def _iteration_kernel(step, num_mcmc_steps, step_size, adapt, target_accept):
    """``(kernel, adaptation)`` for the chain driver of :mod:`ppl.inference.kernels`: one
    iteration is ``num_mcmc_steps`` applications of ``step(key, trace, step_size) ->
    MHStep`` (:func:`~ppl.inference.kernels.repeat`; info = mean acceptance probability and
    accepted fraction), and with ``adapt`` the step size is a kernel parameter tuned by
    :func:`~ppl.inference.kernels.step_size_adaptation`."""

    def one(key, trace, h):
        result = step(key, trace, h)
        return result.trace, MHInfo(result.accepted, result.accept_prob)

    iteration = repeat(one, num_mcmc_steps)

    def kernel(key, trace, h=step_size):
        trace, info = iteration(key, trace, h)
        accepted = info.accepted.astype(info.accept_prob.dtype)
        return trace, info._replace(accepted=accepted)

    adaptation = step_size_adaptation(step_size, target_accept) if adapt else None
    return kernel, adaptation


def _chain_output(chain, step_size, adaptation, num_warmup):
    """``(draws, final step size, warm-up acceptance rate)`` of one or a ``vmap`` of
    :class:`~ppl.inference.kernels.Chain` (leading chain axes kept)."""
    info = chain.infos
    draws = Draw(**chain.states, accept_prob=info.accept_prob, accepted=info.accepted)
    accepted = chain.warmup_infos.accepted
    if num_warmup:
        warmup_rate = accepted.mean(axis=-1)
    else:
        warmup_rate = jnp.zeros(accepted.shape[:-1], accepted.dtype)
    if adaptation is None:
        size = jnp.full(warmup_rate.shape, step_size, jnp.result_type(float))
    else:
        size = adaptation.parameters(chain.adapt_state)
    return draws, size, warmup_rate


def run_chain(key, step, init, num_warmup: int, num_samples: int, num_mcmc_steps: int = 1,
              step_size=0.5, adapt: bool = False, target_accept: float = TARGET_ACCEPT,
              progress_bar: bool = False):
    """One MH chain from the trace ``init``: ``(draws, final step size, warmup rate)``.

    ``step(key, trace, step_size) -> MHStep``; an iteration applies it ``num_mcmc_steps``
    times. Runs on the one chain driver :func:`ppl.inference.kernels.sample_chain`: one
    ``lax.scan`` over ``num_warmup + num_samples`` iterations; during the first
    ``num_warmup`` (discarded) ones, with ``adapt``, ``log step_size`` follows the
    Robbins-Monro recursion of Andrieu & Thoms 2008, section 5.1, towards acceptance
    probability ``target_accept``; it is frozen afterwards. Returns the last
    ``num_samples`` iterations as :class:`Draw` (leading axis ``num_samples``). With
    ``progress_bar`` a tqdm bar follows the iterations through host callbacks."""
    kernel, adaptation = _iteration_kernel(step, num_mcmc_steps, step_size, adapt,
                                           target_accept)
    chain = sample_chain(key, kernel, init, num_samples, num_warmup, adapt=adaptation,
                         collect=_sites, progress_bar=progress_bar, desc="mh")
    return _chain_output(chain, step_size, adaptation, num_warmup)


# --------------------------------------------------------------------------- combinator


def _check_proposal(proposal):
    if isinstance(proposal, str):
        return check_option("proposal", proposal, PROPOSALS)
    if not callable(proposal):
        raise ArgumentTypeError(
            f"proposal must be 'prior', 'random_walk' or a program proposal(current_values, "
            f"*args, **kwargs), got {proposal!r}"
        )
    return proposal


def _check_positive(argument, value) -> float:
    return check_positive(argument, value)  # refuses strings ('0.5'), NaN, <= 0


class MH:
    """``mh(num_samples, num_warmup, num_chains, proposal, num_mcmc_steps, ...)``; see
    :func:`mh`."""

    def __init__(self, num_samples: int = 1000, num_warmup: int = 0, num_chains: int = 1,
                 proposal="prior", num_mcmc_steps: int = 1, step_size=0.5,
                 adapt_step_size=True, progress_bar: bool = False, block="step"):
        self.progress_bar = bool(progress_bar)
        self.block = check_option("block", block, BLOCKS)
        self._layouts = {}
        self.num_samples = check_count("num_samples", num_samples)
        self.num_warmup = check_nonnegative("num_warmup", num_warmup)
        self.num_chains = check_count("num_chains", num_chains)
        self.proposal = _check_proposal(proposal)
        self.num_mcmc_steps = check_count("num_mcmc_steps", num_mcmc_steps)
        self.step_size = _check_positive("step_size", step_size)
        self.adapt_step_size = bool(adapt_step_size)
        self._runs = CompiledRuns(self._core)

    @property
    def adapts(self) -> bool:
        """True when the random-walk step size is tuned during warmup."""
        return self.proposal == "random_walk" and self.adapt_step_size and self.num_warmup > 0

    def kernel(self, model):
        """This combinator's kernel for ``model``: ``kernel(key, trace, args, kwargs) ->
        (trace, accepted)`` (proposal and step size; no adaptation)."""
        return make_kernel(model, self.proposal, self.step_size)

    def layout(self, model, args, kwargs):
        """The :class:`~ppl.inference.local_moves.MarkovLayout` that one-time-step moves use
        on ``model``, or None (not ``proposal="prior"`` with ``block="step"``, a static
        program, or a markov program that cannot be moved locally: a
        :class:`~ppl.errors.ConvergenceWarning` then says why). Read once per program and
        argument structure."""
        if self.proposal != "prior" or self.block != "step":
            return None
        return per_structure(self._layouts, model, args, kwargs,
                             lambda: _local_layout(model, args, kwargs))

    def core(self, key, model, args, kwargs):
        """The pure, jittable run: ``num_chains`` chains (``vmap``; one after the other
        with one-time-step moves, whose in-place writes and global/step branches ``vmap``
        would turn into O(T) selects),
        each initialised from the prior and run by the chain driver
        :func:`ppl.inference.kernels.run_chain`. Leading axes (num_chains, num_samples)."""
        layout = self.layout(model, args, kwargs)
        step = _step_fn(model, self.proposal, self.step_size, layout)
        kernel, adaptation = _iteration_kernel(
            partial(_bind, step, args, kwargs), self.num_mcmc_steps, self.step_size,
            self.adapts, TARGET_ACCEPT,
        )
        chains = run_chains(
            key, kernel, lambda k: Traced(model)(k, *args, **kwargs), self.num_samples,
            self.num_warmup, self.num_chains, adapt=adaptation, collect=_sites,
            progress_bar=self.progress_bar, desc="mh",
            vectorize=layout is None,
        )
        return _chain_output(chains, self.step_size, adaptation, self.num_warmup)

    def _core(self, key, model, args, kwargs):
        """What ``run`` compiles: :meth:`core`, the draws flattened chain-major, and the
        observed data (read while traced, so ``run`` makes no eager pass over the model)."""
        draws, step_size, warmup_rate = self.core(key, model, args, kwargs)
        flat = jax.tree.map(lambda a: a.reshape((-1, *a.shape[2:])), draws)
        observed = record(model, replay_key(), args, kwargs, densities=False)[1].select(OBSERVED)
        return draws.accepted, flat, step_size, warmup_rate, observed

    def run(self, key, model, *args, **kwargs) -> Posterior:
        """Run the chains on ``model(*args, **kwargs)``; an unweighted
        :class:`~ppl.Posterior` with draws grouped chain-major."""
        accepted, flat, step_size, warmup_rate, observed = self._runs(
            check_key(key), model, args, kwargs)
        check_log_weights(flat.log_joint, flat.site_log_probs, what="MH log joint")
        bad = ~np.isfinite(np.asarray(flat.log_joint))
        if bad.any():
            raise NonFiniteWeightError(
                f"mh: {int(bad.sum())} draw(s) have log joint -inf (a chain started where "
                "the data are impossible and never left); site log densities: "
                f"{[n for n, v in flat.site_log_probs.items() if np.isneginf(v).any()]}"
            )
        accepted = np.asarray(accepted)
        return Posterior(
            flat.values,
            num_chains=self.num_chains,
            sample_stats={"accept_prob": flat.accept_prob, "log_joint": flat.log_joint},
            observed_data=observed,
            log_likelihood=flat.log_likelihood,
            method="mh",
            info={
                "accept_rate": float(accepted.mean()),
                "accept_rate_per_chain": accepted.mean(axis=1),
                "warmup_accept_rate": np.asarray(warmup_rate),
                "step_size": np.asarray(step_size) if self.proposal == "random_walk" else None,
                "proposal": self.proposal,
                "num_mcmc_steps": self.num_mcmc_steps,
                "num_warmup": self.num_warmup,
                "block": "step" if self.layout(model, args, kwargs) else "site",
            },
        )

    def __repr__(self):
        return (
            f"mh(num_samples={self.num_samples}, num_warmup={self.num_warmup}, "
            f"num_chains={self.num_chains}, proposal={self.proposal!r}, "
            f"num_mcmc_steps={self.num_mcmc_steps}, step_size={self.step_size}, "
            f"block={self.block!r})"
        )


def _bind(step, args, kwargs, key, trace, step_size):
    return step(key, trace, args, kwargs, step_size)


def _local_layout(model, args, kwargs):
    """A markov program's layout for one-time-step moves, or None; warns when a markov
    program must fall back to whole-site moves."""
    from ppl.inference.data_annealing import calls_markov  # data_annealing imports mh

    if not calls_markov(model, args, kwargs):
        return None
    shapes = jax.eval_shape(lambda: record(model, replay_key(), args, kwargs)[1])
    layout, reason = markov_layout(model, args, kwargs, shapes)
    if layout is None:
        warnings.warn(
            f"mh: this markov program's steps cannot be moved one at a time ({reason}); "
            "each move regenerates a whole site (every time step of it) from its prior, "
            "which is rarely accepted on long sequences. Pass block='site' to choose this "
            "explicitly, or write the step so that its new carry is a function of its own "
            "draws (return x)", ConvergenceWarning, stacklevel=4,
        )
    return layout


def mh(num_samples: int = 1000, num_warmup: int = 0, num_chains: int = 1, proposal="prior",
       num_mcmc_steps: int = 1, step_size=0.5, adapt_step_size=True,
       progress_bar=False, block="step") -> MH:
    """Trace Metropolis-Hastings.

    ``proposal``: ``"prior"`` (default; single-site MH regenerating one uniformly chosen
    latent site from its prior, works for discrete sites), ``"random_walk"`` (Gaussian
    random walk of scale ``step_size`` on the unconstrained coordinates of all latent
    sites, which must be continuous; tuned during warmup towards acceptance 0.3 unless
    ``adapt_step_size=False``), or a program ``proposal(current_values, *args, **kwargs)``
    sampling some of the model's latent sites (see the module docstring for the reverse-move
    convention). Each of the ``num_warmup + num_samples`` iterations applies the kernel
    ``num_mcmc_steps`` times. Chains start from a prior draw and are run in parallel (``vmap``).
    ``progress_bar=True`` shows a tqdm bar (one for all chains) without leaving jit.

    On a ``ppl.markov`` program, ``proposal="prior"`` moves one time step at a time
    (``block="step"``, the default): a move picks uniformly one global latent site or one
    of the T steps, and a step's latent sites are redrawn from the transition given the
    previous carry and accepted with the ratio of the step's and the next step's densities
    (its Markov blanket), so a move costs O(1) in T, not a run of the program
    (:mod:`ppl.inference.local_moves`; needs one ``markov`` call, no site after it and a
    step whose new carry is a function of its own draws; otherwise a
    :class:`~ppl.errors.ConvergenceWarning` says why and moves regenerate whole sites).
    ``block="site"`` regenerates a whole site as the trace records it (all T steps of a
    step site at once), the kernel of earlier versions. ``info["block"]`` says which ran.

    ``.run(key, model, *args, **kwargs)`` returns an unweighted :class:`~ppl.Posterior`
    with ``num_chains * num_samples`` draws, chain-major; ``sample_stats`` has
    ``accept_prob`` (mean MH acceptance probability over the iteration's ``num_mcmc_steps``) and
    ``log_joint``; ``info`` has ``accept_rate`` (fraction of accepted proposals over all
    sampling iterations and chains), ``accept_rate_per_chain``, ``warmup_accept_rate`` and
    the final ``step_size`` per chain (random walk). As a ``move`` inside
    :func:`ppl.inference.resample_move` only ``proposal``, ``num_mcmc_steps`` and ``step_size``
    count.
    """
    return MH(num_samples, num_warmup, num_chains, proposal, num_mcmc_steps, step_size,
              adapt_step_size, progress_bar, block)
