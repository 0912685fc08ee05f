"""Adaptive tempered SMC: ppl's ``infer.tempered_smc`` vs BlackJAX's
``adaptive_tempered_smc``, side by side in one run, on Bayesian logistic regression.

Model: ``ppl.models.logistic_regression`` (``w ~ N(0, I_D)``, ``b ~ N(0, 1)``, ``y_n ~
Bernoulli(sigmoid(X_n w + b))``) with simulated data, ``--num-data`` points and
``--num-features`` features (default 200 x 5, so 6 unconstrained dimensions).

Both samplers use the same number of particles, target ESS (the next exponent solves
ESS(incremental weights) = ``target_ess * N`` by bisection), systematic resampling at every
step, and the same MCMC kernel with the same number of steps per tempering step:

* ``--move random_walk``: Gaussian random walk Metropolis, proposal ``x + s L z`` with
  ``L L^T`` the particles' weighted covariance (plus jitter) and ``s = 2.38 / sqrt(D)``;
* ``--move hmc``: HMC with ``--num-leapfrog`` leapfrog steps of size ``D^(-1/4)`` and
  inverse mass matrix the particles' weighted variances (plus jitter).

ppl runs ``infer.tempered_smc(N, move, num_mcmc_steps, adapt_step_size=False)`` (step-size
adaptation off, so the kernel is the fixed one above). BlackJAX gets the same kernel
through ``blackjax.inner_kernel_tuning``, whose parameter-update function sets ``L`` (or
the inverse mass) from the weighted particles after each step (``blackjax.hmc.build_kernel()``
with the number of leapfrog steps fixed, or ``random_walk.build_additive_step()`` with
``random_walk.normal(L)``), driven by the usual ``lax.while_loop`` until the exponent
reaches 1, summing the per-step ``log_likelihood_increment`` into the log evidence. What
differs, because the two APIs are built differently:

* order within a step: ppl reweights to the new exponent, resamples, then moves the
  particles with a kernel invariant for the *new* tempered target (Del Moral, Doucet &
  Jasra 2006, section 3.3.2.3); BlackJAX resamples with the previous weights, moves with
  a kernel invariant for the *previous* target, then reweights (its first move is at
  exponent 0, and its final population is weighted, not moved at exponent 1). Both are
  valid SMC samplers with one likelihood evaluation per particle and MCMC step;
* the covariance that scales the kernel: ppl uses the particles weighted by the
  incremental weights of the current step (an estimate at the new exponent); BlackJAX's
  update function sees the particles after the previous step with their weights;
* the next exponent: ppl solves for it on an equally weighted population (resampled at
  the end of the previous step); BlackJAX solves on its particles as they are, ignoring
  their current weights (they are resampled only afterwards). The schedules therefore
  differ: on the default problem BlackJAX takes 10 steps where ppl takes 8, hence the
  ``ms/step`` column. ppl halves the bracket 50 times, BlackJAX's ``solver.dichotomy``
  stops at an ESS tolerance of 1e-4.

Contenders (times after compilation, best of ``--repeats`` runs with fresh keys, the
contenders interleaved so they share the machine's load; ``jax.block_until_ready``):

* ``ppl core``: the jitted core that ``.run()`` calls;
* ``ppl .run()``: the full call (core, checks, ``Posterior``);
* ``blackjax``: hand-written JAX log prior and log likelihood on a flat position vector
  (what a BlackJAX user writes);
* ``blackjax, ppl densities``: BlackJAX driven by ppl's own log prior / log likelihood of
  the model (``ppl.inference.tempered.tempering_parts``), which separates the cost of the
  algorithm from the cost of evaluating the model through ppl's handlers.

``compile`` is the first call minus the best warm call (``ppl .run()`` reuses the core
compiled for ``ppl core``). ``ratio`` is time / time of ``blackjax``; ``steps`` is the mean
number of tempering steps and ``ms/step`` the time over it; ``log Z`` is the mean +- sd of
the log-evidence estimate over ``--seeds`` seeds, and ``z`` compares each mean with
``blackjax``'s (difference over its standard error). With ``--reference-particles`` one ppl
run with that many particles (HMC, 10 moves per step) gives a reference log Z.

    python benchmarks/bench_tempered.py                      # random walk and HMC, N = 1000
    python benchmarks/bench_tempered.py --move hmc --num-particles 4000 --seeds 16

BlackJAX is a benchmark-only dependency: ``pip install blackjax``.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from ppl.inference.tempered import prior_particle, tempering_parts

from ppl import inference as infer
from ppl import models as zoo

MAX_STEPS = 500  # a bound on BlackJAX's while loop (ppl's max_steps is its default, 200)


def logistic_data(key, n, d):
    """X ~ N(0, I), w ~ N(0, I), b = 0.5, y ~ Bernoulli(sigmoid(X w + b))."""
    k_x, k_w, k_y = jax.random.split(key, 3)
    X = jax.random.normal(k_x, (n, d))
    w = jax.random.normal(k_w, (d,))
    y = jax.random.bernoulli(k_y, jax.nn.sigmoid(X @ w + 0.5)).astype(jnp.int32)
    return X, y


# --------------------------------------------------------------------------- BlackJAX


def handwritten_densities(X, y):
    """Log prior, log likelihood and a prior sampler on flat positions ``x = (b, w)`` of
    dimension D + 1, written directly in JAX (a flat vector rather than a dict of sites:
    BlackJAX's kernels ravel pytree positions at every step, which costs time)."""
    norm = -0.5 * math.log(2 * math.pi)

    def log_prior(x):
        return jnp.sum(norm - 0.5 * x**2)

    def log_lik(x):
        logits = X @ x[1:] + x[0]
        return jnp.sum(y * logits - jax.nn.softplus(logits))

    def draw(key):
        return jax.random.normal(key, (X.shape[1] + 1,))

    return log_prior, log_lik, draw


def ppl_densities(X, y):
    """The same three functions on flat unconstrained vectors, from ppl's model
    (``tempering_parts``: log prior with Jacobian, log likelihood of every observe)."""
    model, args = zoo.logistic_regression, (X, y)
    template = prior_particle(jax.random.PRNGKey(0), model, args, {})
    _, unravel = ravel_pytree(template)

    def log_prior(x):
        return tempering_parts(model, args, {}, unravel(x))[0]

    def log_lik(x):
        return tempering_parts(model, args, {}, unravel(x))[1]

    def draw(key):
        return ravel_pytree(prior_particle(key, model, args, {}))[0]

    return log_prior, log_lik, draw


def _rows(particles):
    return jax.vmap(lambda p: ravel_pytree(p)[0])(particles)


def _weighted_cov(particles, weights):
    """Covariance of the particles (as rows) under normalised weights."""
    x = _rows(particles)
    mean = weights @ x
    centred = x - mean
    return (centred * weights[:, None]).T @ centred


def blackjax_sampler(densities, num_particles, move, num_mcmc_steps, target_ess,
                     num_leapfrog):
    """``run(key) -> (log Z, number of tempering steps)`` for BlackJAX's adaptive tempered
    SMC with the kernel described in the module docstring (jittable)."""
    import blackjax
    from blackjax.mcmc import random_walk
    from blackjax.smc import resampling

    log_prior, log_lik, draw = densities

    def precondition(particles, weights):
        cov = _weighted_cov(particles, weights)
        dim = cov.shape[0]
        var = jnp.maximum(jnp.diag(cov), 0.0)
        jitter = 1e-6 * jnp.mean(var) + jnp.finfo(cov.dtype).tiny
        if move == "hmc":
            return {"inverse_mass_matrix": (var + jitter)[None]}
        chol = jnp.linalg.cholesky(cov + jitter * jnp.eye(dim, dtype=cov.dtype))
        chol = jnp.where(jnp.all(jnp.isfinite(chol)), chol, jnp.diag(jnp.sqrt(var + jitter)))
        return {"chol": (2.38 / math.sqrt(dim) * chol)[None]}

    if move == "hmc":
        hmc_kernel = blackjax.hmc.build_kernel()

        def step_fn(key, state, logdensity, inverse_mass_matrix, step_size):
            # the number of leapfrog steps is a Python int here (static, as in ppl), not a
            # traced kernel parameter, so BlackJAX's integration loop has a static length
            return hmc_kernel(key, state, logdensity, step_size, inverse_mass_matrix,
                              num_leapfrog)

        init_fn = blackjax.hmc.init
    else:
        additive = random_walk.build_additive_step()

        def step_fn(key, state, logdensity, chol):
            return additive(key, state, logdensity, random_walk.normal(chol))

        init_fn = random_walk.init

    def update(key, state, info):
        params = precondition(state.particles, state.weights)
        if move == "hmc":
            dim = params["inverse_mass_matrix"].shape[-1]
            params["step_size"] = jnp.full((1,), dim**-0.25)
        return params

    def run(key):
        k_init, k_loop = jax.random.split(key)
        positions = jax.vmap(draw)(jax.random.split(k_init, num_particles))
        uniform = jnp.full((num_particles,), 1.0 / num_particles)
        initial = update(None, _Pop(positions, uniform), None)
        sampler = blackjax.inner_kernel_tuning(
            smc_algorithm=blackjax.adaptive_tempered_smc,
            logprior_fn=log_prior,
            loglikelihood_fn=log_lik,
            mcmc_step_fn=step_fn,
            mcmc_init_fn=init_fn,
            resampling_fn=resampling.systematic,
            mcmc_parameter_update_fn=update,
            initial_parameter_value=initial,
            num_mcmc_steps=num_mcmc_steps,
            target_ess=target_ess,
        )

        def cond(carry):
            t, state, _, _ = carry
            return (state.sampler_state.tempering_param < 1.0) & (t < MAX_STEPS)

        def body(carry):
            t, state, k, log_z = carry
            k, k_step = jax.random.split(k)
            state, info = sampler.step(k_step, state)
            return t + 1, state, k, log_z + info.log_likelihood_increment

        init = (jnp.zeros((), jnp.int32), sampler.init(positions), k_loop, jnp.zeros(()))
        t, _, _, log_z = jax.lax.while_loop(cond, body, init)
        return log_z, t

    return run


class _Pop:
    """Particles and weights, shaped like the state ``update`` receives."""

    def __init__(self, particles, weights):
        self.particles = particles
        self.weights = weights


# --------------------------------------------------------------------------- timing


def contenders(X, y, args, move):
    """name -> ``run(seed) -> (log Z, tempering steps)`` (each blocks on its result)."""
    algo = infer.tempered_smc(args.num_particles, move=move, num_mcmc_steps=args.num_mcmc_steps,
                              target_ess=args.target_ess, resample="systematic",
                              num_leapfrog=args.num_leapfrog, adapt_step_size=False)
    model, data = zoo.logistic_regression, (X, y)

    def ppl_core(seed):
        out = algo._runs(jax.random.PRNGKey(seed), model, data, {})
        return out.log_evidence, out.num_steps

    def ppl_run(seed):
        post = algo.run(jax.random.PRNGKey(seed), model, X, y)
        return post.log_evidence, post.info["num_steps"]

    options = (args.num_particles, move, args.num_mcmc_steps, args.target_ess,
               args.num_leapfrog)
    bj = jax.jit(blackjax_sampler(handwritten_densities(X, y), *options))
    bj_ppl = jax.jit(blackjax_sampler(ppl_densities(X, y), *options))
    return {
        "ppl core": ppl_core,
        "ppl .run()": ppl_run,
        "blackjax": lambda seed: bj(jax.random.PRNGKey(seed)),
        "blackjax, ppl densities": lambda seed: bj_ppl(jax.random.PRNGKey(seed)),
    }


def measure(fns, repeats, seeds):
    """Compile each contender, time ``repeats`` fresh-key runs (interleaved), then collect
    the log evidence and number of steps over ``seeds`` seeds."""
    compile_s, times = {}, {name: [] for name in fns}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(0))
        compile_s[name] = time.perf_counter() - start
    for r in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(1000 + r))
            times[name].append(time.perf_counter() - start)
    for name in fns:
        compile_s[name] -= min(times[name])  # first call minus a warm call
    stats = {}
    for name, fn in fns.items():
        out = [jax.block_until_ready(fn(s)) for s in range(1, seeds + 1)]
        log_z = np.array([float(z) for z, _ in out])
        steps = np.array([int(t) for _, t in out])
        stats[name] = (log_z, steps)
    return compile_s, {n: min(t) for n, t in times.items()}, stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--move", nargs="+", choices=("random_walk", "hmc"),
                        default=["random_walk", "hmc"])
    parser.add_argument("--num-particles", type=int, default=1000)
    parser.add_argument("--num-mcmc-steps", type=int, default=5)
    parser.add_argument("--num-leapfrog", type=int, default=10)
    parser.add_argument("--target-ess", type=float, default=0.5)
    parser.add_argument("--num-data", type=int, default=200)
    parser.add_argument("--num-features", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--reference-particles", type=int, default=20000,
                        help="particles of one reference ppl run (0: none)")
    args = parser.parse_args()

    import blackjax

    X, y = logistic_data(jax.random.PRNGKey(0), args.num_data, args.num_features)
    print(f"logistic regression {args.num_data} x {args.num_features}, N = "
          f"{args.num_particles}, {args.num_mcmc_steps} MCMC steps, target ESS "
          f"{args.target_ess}; jax {jax.__version__}, blackjax {blackjax.__version__}, "
          f"devices {jax.devices()}")
    header = (f"{'move':<12} {'contender':<24} {'compile':>8} {'time (s)':>9} {'ratio':>6} "
              f"{'steps':>6} {'ms/step':>8} {'log Z (mean +- sd)':>20} {'z':>6}")
    print(header)
    print("-" * len(header))
    for move in args.move:
        compile_s, best, stats = measure(contenders(X, y, args, move), args.repeats,
                                         args.seeds)
        base_t = best["blackjax"]
        base_z = stats["blackjax"][0]
        for name in best:
            log_z, steps = stats[name]
            se = math.sqrt(log_z.var(ddof=1) / log_z.size + base_z.var(ddof=1) / base_z.size)
            z = (log_z.mean() - base_z.mean()) / se if name != "blackjax" else 0.0
            shared = name == "ppl .run()"  # the same compiled core as "ppl core"
            comp = "shared" if shared else f"{compile_s[name]:.2f}"
            print(f"{move:<12} {name:<24} {comp:>8} {best[name]:>9.4f} "
                  f"{best[name] / base_t:>6.2f} {steps.mean():>6.1f} "
                  f"{1e3 * best[name] / steps.mean():>8.2f} "
                  f"{log_z.mean():>11.3f} +- {log_z.std(ddof=1):<5.3f} {z:>6.2f}",
                  flush=True)
    if args.reference_particles:
        ref = infer.tempered_smc(args.reference_particles, move="hmc", num_mcmc_steps=10)
        post = ref.run(jax.random.PRNGKey(12345), zoo.logistic_regression, X, y)
        print(f"reference: ppl tempered_smc({args.reference_particles}, hmc, 10 steps) "
              f"log Z = {float(post.log_evidence):.3f} ({post.info['num_steps']} steps)")




if __name__ == "__main__":
    main()
