"""One MCMC kernel protocol, one chain driver, and the pieces every MH sampler shares.

**The protocol.** An MCMC kernel is a pure function ``kernel(key, state) -> (state, info)``
that leaves its target invariant: ``state`` is any pytree (a flat vector, a dict of
unconstrained values, a :class:`~ppl.semantics.trace.Trace`, a particle system ...) and
``info`` a pytree of per-step diagnostics (for MH, :class:`MHInfo`). This is the shape of
BlackJAX's kernels (``blackjax/base.py``: NamedTuple ``State`` / ``Info``) and of NumPyro's
``MCMCKernel.sample``. A kernel with tunable parameters (a step size) takes them as extra
positional arguments, ``kernel(key, state, *params)``; the chain driver passes them when it
adapts them (:class:`Adaptation`), and a kernel built by :func:`random_walk_mh` defaults
them, so the same kernel works in both roles.

**The driver.** :func:`sample_chain` runs one chain: one :func:`jax.lax.scan` (through
:func:`~ppl.inference.progress.progress_scan`, so a tqdm bar can follow it inside ``jit``)
over ``num_warmup + num_samples * thinning`` kernel applications; the first ``num_warmup``
are warm-up, where an :class:`Adaptation` may tune the kernel's parameters (only there:
the kept draws come from one fixed kernel, hence a homogeneous Markov chain); afterwards
every ``thinning``-th state is kept. Kept draws are written into a preallocated buffer
carried by the scan, so memory is ``O(num_samples)`` whatever ``num_warmup`` and
``thinning``. :func:`run_chain` vectorises it over ``num_chains`` chains with ``vmap``
(the key split once per chain) in the manner of NumPyro's one chain driver
(``numpyro/infer/mcmc.py``, ``chain_method="vectorized"``).

**Shared pieces** (one place each):

* :func:`mh_accept` — the Metropolis-Hastings accept step: accept ``proposed`` iff
  ``u < min(1, exp(log alpha))``, ``u ~ U(0, 1)`` (Metropolis, Rosenbluth, Rosenbluth,
  Teller & Teller 1953; Hastings 1970, eq. 2.3); a NaN ``log alpha`` is a rejection.
* :func:`random_walk` — the Gaussian random walk on a pytree of unconstrained values,
  ``u' = u + h eps`` (per-leaf scales, or a Cholesky factor for a correlated walk), and
  :func:`random_walk_mh`, the random-walk Metropolis kernel on an :class:`MHState`.
* :func:`robbins_monro` / :func:`step_size_adaptation` — Robbins-Monro adaptation of
  ``log h`` towards a target acceptance probability (Andrieu & Thoms 2008, "A tutorial on
  adaptive MCMC", Statistics and Computing 18, section 5.1 / Algorithm 4).
* :func:`constrain`, :func:`constrain_site`, :func:`unconstrain` — the change of variables
  ``x = T(u)``, ``T = numpyro.distributions.transforms.biject_to(support)`` site by site,
  with ``log |det dT/du|``.
* :func:`repeat` — a kernel applied ``num_steps`` times; :func:`as_smc_move` — a kernel
  turned into a move of every particle of a population (``vmap``), as BlackJAX's
  ``smc/from_mcmc.py`` does for its SMC samplers (Del Moral, Doucet & Jasra 2006,
  section 3.3.2.3: an MCMC kernel invariant for the current target as forward kernel).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro.distributions.transforms import biject_to
from ppl.inference.progress import progress_scan

from ppl.errors import (
    InvalidArgumentError,
    ShapeMismatchError,
    UnsupportedModelError,
    check_count,
    check_nonnegative,
)

__all__ = [
    "Adaptation",
    "Chain",
    "Kernel",
    "MHInfo",
    "MHState",
    "as_smc_move",
    "bijection",
    "cast_like",
    "constrain",
    "constrain_site",
    "init_mh_state",
    "mh_accept",
    "random_walk",
    "random_walk_mh",
    "repeat",
    "robbins_monro",
    "run_chain",
    "sample_chain",
    "step_size_adaptation",
    "unconstrain",
]


# --------------------------------------------------------------------------- the protocol


class Kernel(Protocol):
    """``kernel(key, state, *params) -> (state, info)``: one transition of a Markov chain
    that leaves its target invariant. ``state`` and ``info`` are pytrees; ``params`` are
    the kernel's tunable parameters (none, or what an :class:`Adaptation` tunes)."""

    def __call__(self, key, state, /, *params) -> tuple[Any, Any]: ...


class MHInfo(NamedTuple):
    """What one Metropolis-Hastings step reports."""

    accepted: jnp.ndarray  # bool: the proposal was accepted
    accept_prob: jnp.ndarray  # min(1, exp(log alpha)), 0 for a NaN ratio


class MHState(NamedTuple):
    """The state of a Metropolis kernel on a density: the position (a pytree of
    unconstrained values), the log target density there and whatever else the density
    function returned with it (``aux``, e.g. the prior and likelihood terms separately)."""

    position: Any
    log_density: jnp.ndarray
    aux: Any = ()


# --------------------------------------------------------------------------- accept


def cast_like(new, old):
    """``new`` with the dtypes of ``old``, leaf by leaf (so a scan carry, a ``switch``
    branch or a ``where`` keeps one type)."""
    return jax.tree.map(lambda a, b: jnp.asarray(a, dtype=jnp.result_type(b)), new, old)


def mh_accept(key, current, proposed, log_alpha):
    """The Metropolis-Hastings accept step: ``(state, MHInfo)``.

    Accepts ``proposed`` iff ``u < min(1, exp(log_alpha))`` with ``u ~ U(0, 1)``, i.e. with
    that probability (Metropolis et al. 1953; Hastings 1970, eq. 2.3:
    ``log_alpha`` is the log ratio of target times reverse proposal over target times
    forward proposal). A NaN ``log_alpha`` (``-inf - (-inf)``, a density that cannot be
    evaluated) is a rejection. ``current`` and ``proposed`` are pytrees of one structure
    (the proposal is cast to the current dtypes); ``log_alpha`` is a scalar (``vmap`` for
    a population). The acceptance probability is computed once, as a value of its own
    (``exp`` is not duplicated into the consumers of ``accepted``), which lets XLA update
    a state in place when the accept decision reads it (the local moves of
    :func:`ppl.inference.trace_mh.markov_single_site_step`)."""
    log_alpha = jnp.asarray(log_alpha)
    if not jnp.issubdtype(log_alpha.dtype, jnp.floating):
        log_alpha = log_alpha.astype(jnp.result_type(float))
    log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
    accept_prob = jnp.exp(jnp.minimum(log_alpha, 0.0))
    accepted = jax.random.uniform(key, dtype=log_alpha.dtype) < accept_prob
    proposed = cast_like(proposed, current)
    state = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), proposed, current)
    return state, MHInfo(accepted, accept_prob)


# --------------------------------------------------------------------------- random walk


def random_walk(key, position, scale=1.0, cholesky=None):
    """Gaussian random walk on a pytree of unconstrained values (symmetric, so the
    proposal densities cancel in the MH ratio; Metropolis et al. 1953).

    Without ``cholesky``: ``u'_l = u_l + s_l * eps_l``, ``eps_l ~ N(0, I)`` for each leaf
    ``l`` (one key per leaf, from ``jax.random.split(key, num_leaves)``), with ``scale``
    a number or a pytree of the structure of ``position`` (per-site scales). With a
    Cholesky factor ``L`` (D, D) of a proposal covariance: the flattened position moves
    as ``u' = u + scale * L @ eps`` (a correlated walk; D = total size of the leaves)."""
    if cholesky is not None:
        flat, unravel = ravel_pytree(position)
        eps = jax.random.normal(key, flat.shape, flat.dtype)
        return unravel(flat + scale * (cholesky @ eps))
    leaves, treedef = jax.tree.flatten(position)
    if jax.tree.structure(scale) == treedef:
        scales = jax.tree.leaves(scale)
    else:
        scales = [scale] * len(leaves)
    keys = jax.random.split(key, len(leaves))
    moved = [
        x + s * jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
        for x, s, k in zip(leaves, scales, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, moved)


def _evaluate(log_density_fn, position, has_aux):
    if has_aux:
        log_density, aux = log_density_fn(position)
        return jnp.asarray(log_density), aux
    return jnp.asarray(log_density_fn(position)), ()


def init_mh_state(log_density_fn, position, has_aux=False) -> MHState:
    """The :class:`MHState` at ``position`` (``log_density_fn(position)`` returns the log
    target, or ``(log target, aux)`` with ``has_aux``)."""
    return MHState(position, *_evaluate(log_density_fn, position, has_aux))


def random_walk_mh(log_density_fn, step_size=1.0, cholesky=None, has_aux=False) -> Kernel:
    """The random-walk Metropolis kernel (Metropolis et al. 1953) for ``log_density_fn``:
    ``kernel(key, state: MHState, step_size=step_size) -> (MHState, MHInfo)``.

    Proposes :func:`random_walk` of ``state.position`` (scale ``step_size``, optionally
    correlated by ``cholesky``) and accepts with :func:`mh_accept` at ``log alpha = log
    pi(u') - log pi(u)``. The density at the current state is carried in the state, never
    recomputed (exact also for a pseudo-marginal density, Andrieu & Roberts 2009). The
    optional third argument overrides the step size: that is what
    :func:`step_size_adaptation` tunes."""

    def kernel(key, state: MHState, step_size=step_size):
        key_move, key_accept = jax.random.split(key)
        position = random_walk(key_move, state.position, step_size, cholesky)
        log_density, aux = _evaluate(log_density_fn, position, has_aux)
        proposed = MHState(position, log_density, aux)
        return mh_accept(key_accept, state, proposed, log_density - state.log_density)

    return kernel


# --------------------------------------------------------------------------- adaptation


def robbins_monro(log_step_size, accept_prob, iteration, target, decay=0.6):
    """One Robbins-Monro step on the log step size, ``log h_{i+1} = log h_i + (i + 1)^(-decay)
    (a_i - target)`` with ``a_i`` the acceptance probability of iteration ``i`` (from 0)
    (Andrieu & Thoms 2008, section 5.1, Algorithm 4; the gains ``(i+1)^(-decay)``,
    ``1/2 < decay <= 1``, satisfy the Robbins-Monro conditions)."""
    return log_step_size + (iteration + 1.0) ** -decay * (accept_prob - target)


class Adaptation(NamedTuple):
    """A warm-up adaptation hook for :func:`sample_chain` / :func:`run_chain`.

    ``init`` is the initial adaptation state (a pytree). At every iteration the kernel runs
    as ``kernel(key, state, parameters(adapt_state))``; then, during warm-up only,
    ``adapt_state = update(adapt_state, iteration, state, info)`` (``iteration`` counts
    from 0, ``state`` and ``info`` are the kernel's output of that iteration). After
    warm-up the adaptation state, hence the kernel, is frozen, so the kept draws are a
    valid (homogeneous) Markov chain (Andrieu & Thoms 2008, section 2)."""

    init: Any
    update: Callable
    parameters: Callable = lambda adapt_state: adapt_state


def step_size_adaptation(step_size, target_accept, decay=0.6) -> Adaptation:
    """Robbins-Monro adaptation of a step size towards acceptance probability
    ``target_accept`` (:func:`robbins_monro` on ``log h``; the kernel's ``info`` must have
    ``accept_prob``). The kernel receives the step size ``h = exp(log h)``."""

    def update(log_h, iteration, state, info):
        return robbins_monro(log_h, info.accept_prob, iteration, target_accept, decay)

    log_h = jnp.log(jnp.asarray(step_size, dtype=jnp.result_type(float)))
    return Adaptation(log_h, update, jnp.exp)


# --------------------------------------------------------------------------- composition


def _mean_over_steps(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return jnp.mean(x, axis=0)


def repeat(kernel, num_steps: int) -> Kernel:
    """``kernel`` applied ``num_steps`` times (a ``lax.scan`` over the keys
    ``jax.random.split(key, num_steps)``; with one step the key is used as is). The info
    is the mean over the steps of each leaf (a boolean ``accepted`` becomes the accepted
    fraction, so the type does not depend on ``num_steps``). Parameters pass through."""
    num_steps = check_count("num_steps", num_steps)

    def repeated(key, state, *params):
        if num_steps == 1:
            state, info = kernel(key, state, *params)
            return state, jax.tree.map(lambda x: _mean_over_steps(jnp.asarray(x)[None]), info)

        def body(s, k):
            return kernel(k, s, *params)

        state, infos = jax.lax.scan(body, state, jax.random.split(key, num_steps))
        return state, jax.tree.map(_mean_over_steps, infos)

    return repeated


def as_smc_move(kernel, num_steps: int = 1):
    """An SMC move from an MCMC kernel: ``move(key, particles, *params) -> (particles,
    infos)`` applies :func:`repeat` ``(kernel, num_steps)`` to every particle of the
    population (``vmap`` over the leading axis of every leaf of ``particles``, one key per
    particle from ``jax.random.split(key, N)``), with ``params`` shared by all particles
    (BlackJAX ``smc/from_mcmc.py``; the forward kernel of an SMC sampler, Del Moral, Doucet
    & Jasra 2006, section 3.3.2.3). ``infos`` has a leading particle axis, averaged over
    the steps as in :func:`repeat`."""
    step = repeat(kernel, num_steps)

    def move(key, particles, *params):
        leaves = jax.tree.leaves(particles)
        if not leaves:
            raise InvalidArgumentError("as_smc_move: the population has no array leaf")
        keys = jax.random.split(key, jnp.shape(leaves[0])[0])
        return jax.vmap(lambda k, p: step(k, p, *params))(keys, particles)

    return move


# --------------------------------------------------------------------------- the driver


class Chain(NamedTuple):
    """What :func:`sample_chain` returns (with a leading ``num_chains`` axis on every leaf
    from :func:`run_chain`)."""

    states: Any  # collect(state) of the kept draws, leading axis num_samples
    infos: Any  # the kernel's info at the kept draws, leading axis num_samples
    warmup_infos: Any  # the kernel's info at each warm-up iteration, leading axis num_warmup
    final_state: Any  # the last state (to continue the chain)
    adapt_state: Any  # the final (frozen) adaptation state; None without adaptation


def _buffer(shapes, size):
    return jax.tree.map(lambda s: jnp.zeros((size, *s.shape), s.dtype), shapes)


def _write(buffer, index, value):
    return jax.tree.map(
        lambda b, v: jax.lax.dynamic_update_index_in_dim(b, jnp.asarray(v, b.dtype), index, 0),
        buffer, value,
    )


def sample_chain(key, kernel, init_state, num_samples: int, num_warmup: int = 0,
                 thinning: int = 1, adapt: Adaptation | None = None, collect=None,
                 progress_bar: bool = False, desc: str = "mcmc") -> Chain:
    """One MCMC chain from ``init_state``: a :class:`Chain` (no chain axis).

    One ``lax.scan`` (:func:`~ppl.inference.progress.progress_scan`, a tqdm bar labelled
    ``desc`` with ``progress_bar``) over ``num_warmup + num_samples * thinning`` iterations
    with keys ``jax.random.split(key, total)``; iteration ``i`` applies ``kernel(key_i,
    state)``, or ``kernel(key_i, state, adapt.parameters(a))`` with an :class:`Adaptation`,
    which is updated during the ``num_warmup`` warm-up iterations only. After warm-up the
    state of every ``thinning``-th iteration (the last of each block of ``thinning``) is
    kept: ``states`` holds ``collect(state)`` (default: the state) of the ``num_samples``
    kept draws, ``infos`` their infos, ``warmup_infos`` the warm-up iterations' infos."""
    num_samples = check_count("num_samples", num_samples)
    num_warmup = check_nonnegative("num_warmup", num_warmup)
    thinning = check_count("thinning", thinning)
    collect = (lambda state: state) if collect is None else collect
    total = num_warmup + num_samples * thinning
    a0 = None if adapt is None else adapt.init

    def step(k, state, a):
        if adapt is None:
            return kernel(k, state)
        return kernel(k, state, adapt.parameters(a))

    keys = jax.random.split(key, total)
    state_shape, info_shape = jax.eval_shape(step, keys[0], init_state, a0)
    init_state = cast_like(init_state, state_shape)  # one carry type (no weak types)
    kept_shape = jax.eval_shape(collect, state_shape)

    def body(carry, xs):
        state, a, kept, kept_infos, warmup_infos = carry
        i, k = xs
        state, info = step(k, state, a)
        state = cast_like(state, state_shape)
        if adapt is not None:
            new = cast_like(adapt.update(a, i, state, info), a)
            a = jax.tree.map(lambda n, o: jnp.where(i < num_warmup, n, o), new, a)
        # unconditional writes: warm-up iterations write slot 0 (overwritten by the first
        # kept draw) of the kept buffers and slot i of the warm-up one (slot num_warmup,
        # dropped, after warm-up); within a thinning block the last write wins
        slot = jnp.clip((i - num_warmup) // thinning, 0, num_samples - 1)
        kept = _write(kept, slot, collect(state))
        kept_infos = _write(kept_infos, slot, info)
        warmup_infos = _write(warmup_infos, jnp.minimum(i, num_warmup), info)
        return (state, a, kept, kept_infos, warmup_infos), None

    init = (init_state, a0, _buffer(kept_shape, num_samples), _buffer(info_shape, num_samples),
            _buffer(info_shape, num_warmup + 1))
    iterations = (jnp.arange(total), keys)
    (state, a, kept, kept_infos, warmup_infos), _ = progress_scan(
        body, init, iterations, desc=desc, enable=progress_bar
    )
    warmup_infos = jax.tree.map(lambda b: b[:num_warmup], warmup_infos)
    return Chain(kept, kept_infos, warmup_infos, state, a)


def run_chain(key, kernel, init_state, num_samples: int, num_warmup: int = 0,
              num_chains: int = 1, thinning: int = 1, adapt: Adaptation | None = None,
              collect=None, progress_bar: bool = False, desc: str = "mcmc",
              vectorize: bool = True) -> Chain:
    """``num_chains`` independent chains of :func:`sample_chain`, vectorised with ``vmap``
    (or, with ``vectorize=False``, run one after the other with ``lax.map``: for a kernel
    whose branches differ in cost, which ``vmap`` would all evaluate at every step);
    every leaf of the returned :class:`Chain` has a leading ``num_chains`` axis.

    The chain keys are ``jax.random.split(key, num_chains)``; chain ``c`` splits its key
    into ``(key_init, key_run)`` and runs :func:`sample_chain` with ``key_run``, so the
    same key gives the same chains. ``init_state`` is either a function ``init_state(key)
    -> state`` called with each chain's ``key_init`` (e.g. a prior draw) or a pytree of
    states with a leading ``num_chains`` axis. Adaptation (per chain), thinning, ``collect``
    and the progress bar (one bar for all chains) as in :func:`sample_chain`."""
    num_chains = check_count("num_chains", num_chains)
    draw = callable(init_state)
    if not draw:
        sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(init_state)}
        if sizes != {num_chains}:
            raise ShapeMismatchError(
                f"run_chain: init_state must be a function key -> state or a pytree whose "
                f"leaves have a leading num_chains={num_chains} axis; leading sizes {sizes}"
            )

    def chain(k, state):
        key_init, key_run = jax.random.split(k)
        if draw:
            state = init_state(key_init)
        return sample_chain(key_run, kernel, state, num_samples, num_warmup, thinning, adapt,
                            collect, progress_bar, desc)

    keys = jax.random.split(key, num_chains)
    if not vectorize and num_chains == 1:
        # one chain needs no loop: a ``lax.map`` of length one would copy every kept
        # buffer (num_samples x the state) into its stacked output
        state = None if draw else jax.tree.map(lambda x: x[0], init_state)
        return jax.tree.map(lambda x: x[None], chain(keys[0], state))
    if not vectorize:
        return jax.lax.map(lambda kc: chain(*kc), (keys, None if draw else init_state))
    if draw:
        return jax.vmap(lambda k: chain(k, None))(keys)
    return jax.vmap(chain)(keys, init_state)


# --------------------------------------------------------------------------- constraints


def bijection(support):
    """``biject_to(support)``: NumPyro's bijection from unconstrained reals onto
    ``support``; :class:`UnsupportedModelError` for a support that has none (discrete)."""
    try:
        return biject_to(support)
    except NotImplementedError as e:
        raise UnsupportedModelError(
            f"the support {support} has no bijection to unconstrained space (a discrete "
            "site?); this algorithm needs continuous sites"
        ) from e


def constrain_site(support, u):
    """``(x, log |det dT/du|)`` with ``x = T(u)``, ``T = biject_to(support)``; the
    log-Jacobian summed over the site's elements. For a map that changes dimension (the
    simplex, stick-breaking from R^(K-1)) it is NumPyro's: the Jacobian of ``u ->
    x[:-1]``. Use this one inside an effect handler, where each site's support is known
    only when it is drawn (it may depend on earlier sites)."""
    transform = bijection(support)
    value = transform(u)
    return value, jnp.sum(transform.log_abs_det_jacobian(u, value))


def constrain(supports: Mapping, u: Mapping):
    """``(values, log_abs_det)`` for a dict of unconstrained values ``u`` (site -> array):
    ``values[n] = T_n(u[n])`` with ``T_n = biject_to(supports[n])``, and ``log_abs_det =
    sum_n log |det dT_n/du_n|`` (:func:`constrain_site`), the term that turns a density in
    x into one in u: ``log p_u(u) = log p_x(T(u)) + log_abs_det``."""
    values, log_det = {}, jnp.zeros(())
    for name, value in u.items():
        values[name], site_log_det = constrain_site(supports[name], value)
        log_det = log_det + site_log_det
    return values, log_det


def unconstrain(supports: Mapping, values: Mapping) -> dict:
    """``u[n] = T_n^{-1}(values[n])`` with ``T_n = biject_to(supports[n])``: the inverse of
    :func:`constrain` (for values inside their supports)."""
    return {n: bijection(supports[n]).inv(jnp.asarray(v)) for n, v in values.items()}
