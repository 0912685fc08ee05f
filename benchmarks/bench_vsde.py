"""vsde: time per ELBO step against the number of OU components K and of time steps N,
side by side with a hand-written JAX ELBO step; and (``--recovery``) Hurst-index recovery
on exactly simulated fractional OU paths.

Problem: an OU latent ``dX = -X dt + dB`` on [0, 2] (N Euler steps) observed every N/10
steps with noise sd 0.3; ``B`` Brownian (K = 0) or the MA-fBM of K OU components (type II,
H = 0.7, gamma_max chosen so that gamma_max dt = 0.2, capped at 20). Every contender runs
the same Adam loop (``--steps`` steps of ``--num-paths`` paths, one ``lax.scan`` in one
``jit``) with the same MLP control (width 32, depth 2, 8 Fourier time features):

* ``ppl``: ``vsde(...).run(key, model, ys)``: the program run under the control handler,
  through NumPyro's trace/substitute/seed handlers, then 16 posterior draws;
* ``jax``: the same ELBO written by hand (Euler-Maruyama on the augmented state in a scan,
  Girsanov cost as an extra state, no handlers), same optimiser and control.

Per-step times are the slope between runs of ``--steps`` and ``2 * --steps`` steps
(wall clock after compilation, the best of ``--repeats`` runs with new keys), which
separates ppl's fixed per-run cost (one eager discovery run of the program, the posterior
draws and the ``Posterior``), reported on its own.

Hurst recovery (``--recovery``): for true H in {0.3, 0.5, 0.7} and ``--seeds`` seeds, 8
independent type-II fOU paths (theta 1) on [0, 4] are simulated exactly (Cholesky of the
exact covariance from ``ppl.models.fou``), each observed every 0.04 with noise sd 0.1, and
the shared H is learned by vsde on a 200-step grid (MA-fBM K = 5, gamma_max = 20; affine
control, 3000 Adam steps at 0.1), with the paper's family (unit-variance increments) and
with ``learn_noise_scale=True``. The table also shows the maximum-likelihood H under the
same discretised MA-fBM model (exact Kalman likelihood), the statistical baseline.

    python benchmarks/bench_vsde.py
    python benchmarks/bench_vsde.py --recovery --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ppl.inference.variational_sde import MLPControl, vsde
from ppl.semantics.mafbm import geometric_speeds, mafbm_weights

import ppl
from ppl import dist
from ppl.sde import fbm, sde

HORIZON, OBS_SD, HURST, WIDTH, DEPTH, FEATURES = 2.0, 0.3, 0.7, 32, 2, 8


def problem(num_ou, num_steps):
    """The model, its data and the MA-fBM constants for (K, N)."""
    times = jnp.linspace(0.0, HORIZON, num_steps + 1)
    obs_index = np.arange(num_steps // 10, num_steps + 1, num_steps // 10)
    gamma_max = min(20.0, 0.2 / (HORIZON / num_steps))
    noise = fbm(HURST, num_ou, gamma_max) if num_ou else None

    def model(ys):
        x = sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, 0.0, times, noise=noise)
        ppl.observe("y", dist.Normal(x[obs_index], OBS_SD), ys)

    ys = jnp.asarray(np.sin(np.asarray(times)[obs_index]))
    return model, ys, times, obs_index, gamma_max


def hand_written(num_ou, num_steps, steps, num_paths, lr):
    """The same ELBO and Adam loop in plain JAX (no ppl, no NumPyro handlers)."""
    _, ys, times, obs_index, gamma_max = problem(num_ou, num_steps)
    dts = jnp.diff(times)
    if num_ou:
        gammas = geometric_speeds(num_ou, gamma_max)
        omega = mafbm_weights(HURST, gammas, HORIZON)
    else:
        gammas = omega = jnp.zeros((0,))
    state_size = 1 + num_ou
    control = MLPControl(jax.random.PRNGKey(0), np.asarray(times), state_size, (), WIDTH, DEPTH,
                         FEATURES)
    params, static = eqx.partition(control, eqx.is_inexact_array)
    optimizer = optax.adam(lr)

    def path_elbo(params, key):
        u_fn = eqx.combine(params, static)
        eps = jax.random.normal(key, (num_steps,))

        def step(carry, inp):
            x, y, cost = carry
            t, dt, e = inp
            u = u_fn(t, jnp.concatenate([x[None], y]))
            dw = u * dt + jnp.sqrt(dt) * e
            x_new = x + (-x - jnp.sum(omega * gammas * y)) * dt + (jnp.sum(omega) if num_ou
                                                                   else 1.0) * dw
            return (x_new, y - gammas * y * dt + dw, cost + 0.5 * u**2 * dt), x_new

        init = (jnp.zeros(()), jnp.zeros((num_ou,)), jnp.zeros(()))
        (_, _, cost), xs = jax.lax.scan(step, init, (times[:-1], dts, eps))
        path = jnp.concatenate([jnp.zeros((1,)), xs])
        log_lik = jnp.sum(jax.scipy.stats.norm.logpdf(ys, path[obs_index], OBS_SD))
        return log_lik - cost

    def loss(params, key):
        return -jnp.mean(jax.vmap(path_elbo, (None, 0))(params, jax.random.split(key,
                                                                                  num_paths)))

    @jax.jit
    def run(key):
        def body(carry, key):
            params, state = carry
            value, grads = jax.value_and_grad(loss)(params, key)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), -value

        _, elbos = jax.lax.scan(body, (params, optimizer.init(params)),
                                jax.random.split(key, steps))
        return elbos

    return run


def timed(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _best(fn, repeats):
    return min(timed(lambda r=r: fn(jax.random.PRNGKey(r))) for r in range(1, repeats + 1))


def bench_steps(args):
    print(f"jax {jax.__version__} on {jax.default_backend()}; {args.num_paths} paths per step; "
          f"per-step ms = slope between runs of {args.steps} and {2 * args.steps} steps (best of "
          f"{args.repeats} each, after compilation); ppl fixed = ppl's per-run overhead (one "
          "eager discovery run of the program, 16 posterior draws, the Posterior)")
    print("| K (OU comps) | N (steps) | ppl ms/step | jax ms/step | ppl / jax | ppl fixed s |"
          " ELBO ppl | ELBO jax |")
    print("|--------------|-----------|-------------|-------------|-----------|-------------|"
          "----------|----------|")
    for num_ou in args.ks:
        for num_steps in args.ns:
            model, ys, *_ = problem(num_ou, num_steps)
            times_ppl, times_jax = [], []
            for steps in (args.steps, 2 * args.steps):
                algo = vsde(num_steps=steps, num_paths=args.num_paths, learning_rate=1e-2,
                            width=WIDTH, depth=DEPTH, num_features=FEATURES, num_samples=16,
                            progress_bar=False)
                jax_run = hand_written(num_ou, num_steps, steps, args.num_paths, 1e-2)
                post = algo.run(jax.random.PRNGKey(0), model, ys)  # compile
                jax_elbos = jax_run(jax.random.PRNGKey(0))
                times_ppl.append(_best(lambda k, a=algo, m=model, y=ys: a.run(k, m, y).info["elbo"],
                                       args.repeats))
                times_jax.append(_best(jax_run, args.repeats))
            ms_ppl = 1e3 * (times_ppl[1] - times_ppl[0]) / args.steps
            ms_jax = 1e3 * (times_jax[1] - times_jax[0]) / args.steps
            fixed = times_ppl[0] - ms_ppl * args.steps / 1e3
            print(f"| {num_ou:12d} | {num_steps:9d} | {ms_ppl:11.3f} | {ms_jax:11.3f} | "
                  f"{ms_ppl / ms_jax:9.2f} | {fixed:11.2f} | "
                  f"{float(post.info['elbo'][-50:].mean()):8.2f} | "
                  f"{float(jax_elbos[-50:].mean()):8.2f} |")
            sys.stdout.flush()


# --------------------------------------------------------------------------- recovery


def recovery(args):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from scipy.optimize import minimize_scalar
    from test_sde import _euler_fbm_kalman_nll
    from test_vsde import fou_paths

    jax.config.update("jax_enable_x64", True)
    theta, horizon, num_steps, every, obs_sd, num_paths = 1.0, 4.0, 200, 2, 0.1, 8
    dt = horizon / num_steps
    times = jnp.linspace(0.0, horizon, num_steps + 1)
    idx = np.arange(every, num_steps + 1, every)

    def model(ys):
        h = ppl.param("hurst", 0.5, constraint=dist.constraints.unit_interval)
        x = sde("x", lambda t, x, p: -theta * x, lambda t, x, p: 1.0, jnp.zeros(num_paths),
                times, noise=fbm(h, 5, 20.0, "II"))
        ppl.observe("y", dist.Normal(x[idx], obs_sd), ys)

    print("| true H | seed | vsde H (unit scale) | vsde H (learned scale) | ML H | seconds |")
    print("|--------|------|---------------------|------------------------|------|---------|")
    for hurst in (0.3, 0.5, 0.7):
        for seed in range(args.seeds):
            ys = fou_paths(hurst, seed, idx * dt, num_paths, obs_sd, theta)
            ml = minimize_scalar(lambda h, ys=ys: _euler_fbm_kalman_nll(
                h, ys, idx, 5, 20.0, dt, num_steps, theta, obs_sd), bounds=(0.05, 0.95),
                method="bounded", options={"xatol": 1e-3}).x
            start = time.perf_counter()
            learned = []
            for learn_scale in (False, True):
                post = vsde(num_steps=3000, num_paths=16, learning_rate=0.1, control="affine",
                            learn_noise_scale=learn_scale, num_samples=16,
                            progress_bar=False).run(jax.random.PRNGKey(seed), model,
                                                    jnp.asarray(ys))
                learned.append(float(post.info["params"]["hurst"]))
            print(f"| {hurst:6.1f} | {seed:4d} | {learned[0]:19.3f} | {learned[1]:22.3f} | "
                  f"{ml:4.3f} | {(time.perf_counter() - start) / 2:7.1f} |")
            sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--num-paths", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 2, 5, 10])
    parser.add_argument("--ns", type=int, nargs="+", default=[100, 400, 1600])
    parser.add_argument("--recovery", action="store_true", help="Hurst recovery table only")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if args.recovery:
        recovery(args)
    else:
        bench_steps(args)


if __name__ == "__main__":
    main()
