"""Hurst index on one fractional OU path: exact ML, MA-fBM ML and ``infer.vsde``'s estimate.

Design (tests/test_hurst_recovery.py): ``dX = -theta X dt + 0.5 dB^H`` (type II fBM), theta =
1, X(0) = 0, one path observed at t = 0.02, ..., 4 (200 points) with noise sd 0.02; the
program learns ``hurst`` and ``theta`` (``ppl.param``) with an sde on a grid of step 0.005
(800 steps).

Columns:

* exact ML [95% CI]: the exact fOU likelihood (the observations' covariance as a linear
  functional of the exact fBM covariance; see the test module), profiled over theta;
* MA-fBM ML: the maximum of the exact likelihood of the *approximate* model vsde fits (the
  Euler-discretised augmented system of Daems et al. 2024, eq. 11, on the 800-step grid), by
  a Kalman filter, profiled over theta; for the former default speeds (K = 5, gamma_max =
  20) and the grid's default (``mafbm.grid_defaults``: K = 8, 0.025..50); ``inc. err``: the
  relative error of the MA-fBM increment covariance at lag 0.02 (``sde.approximation_error``);
* vsde: ``infer.vsde()`` with its defaults (``fbm(hurst)``), the curvature standard error
  of ``info["param_std_error"]`` and the wall time of the fit; with ``--paper`` also the
  paper's family (MLP control, unit increment scale, Adam 1e-2, 1000 steps: the former
  defaults) with the former fixed MA-fBM (K = 5, gamma_max = 20).

Then the compile time (first call minus warm call of a 20-step fit on the 800-step grid)
and the time per optimisation step.

    python benchmarks/bench_hurst.py [--hursts 0.3 0.5 0.7] [--seeds 0] [--paper]
                                     [--timings-only | --no-timings]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq, minimize_scalar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
jax.config.update("jax_enable_x64", True)

from ppl.inference.variational_sde import vsde  # noqa: E402
from ppl.semantics.mafbm import grid_defaults, mafbm_weights  # noqa: E402
from test_hurst_recovery import (  # noqa: E402
    CHI2_95,
    GRID_STEP,
    HORIZON,
    NUM_STEPS,
    OBS_EVERY,
    OBS_INDEX,
    OBS_SD,
    SIGMA,
    exact_profile_interval,
    fou_model,
    simulate_observations,
)

import ppl  # noqa: E402
from ppl import dist  # noqa: E402
from ppl.sde import approximation_error, fbm, sde  # noqa: E402

TIMES = np.linspace(0.0, HORIZON, NUM_STEPS + 1)


def kalman_log_likelihood(y, hurst, theta, gammas):
    """Exact log-likelihood of y under the Euler recursion of the type-II augmented system
    z = (X, Y_1..Y_K) on the grid (what vsde's program simulates)."""
    omega = np.asarray(mafbm_weights(hurst, jnp.asarray(gammas), HORIZON, "II"), np.float64)
    k, dt = len(gammas), GRID_STEP
    m = np.eye(k + 1)
    m[0, 0] = 1 - theta * dt
    m[0, 1:] = -SIGMA * omega * gammas * dt
    m[1:, 1:] -= np.diag(gammas) * dt
    v = np.r_[SIGMA * omega.sum(), np.ones(k)]
    noise = dt * np.outer(v, v)
    mean, cov, ll, j = np.zeros(k + 1), np.zeros((k + 1, k + 1)), 0.0, 0
    for step in range(1, NUM_STEPS + 1):
        mean, cov = m @ mean, m @ cov @ m.T + noise
        if step % OBS_EVERY == 0:
            var = cov[0, 0] + OBS_SD**2
            resid = y[j] - mean[0]
            j += 1
            ll -= 0.5 * (np.log(2 * np.pi * var) + resid**2 / var)
            gain = cov[:, 0] / var
            mean, cov = mean + gain * resid, cov - np.outer(gain, cov[0])
    return ll


def mafbm_ml(y, gammas):
    def profile(h):
        return -minimize_scalar(lambda lt: -kalman_log_likelihood(y, h, np.exp(lt), gammas),
                                bounds=(-4.0, 3.0), method="bounded",
                                options={"xatol": 1e-3}).fun

    res = minimize_scalar(lambda h: -profile(h), bounds=(0.05, 0.95), method="bounded",
                          options={"xatol": 1e-3})
    h_ml, l_max = res.x, -res.fun

    def excess(h):
        return 2 * (l_max - profile(h)) - CHI2_95

    lo = brentq(excess, max(0.02, h_ml - 0.25), h_ml, xtol=1e-3)
    hi = brentq(excess, h_ml, min(0.98, h_ml + 0.25), xtol=1e-3)
    return h_ml, lo, hi


def paper_model(ys):
    times = jnp.asarray(TIMES)
    hurst = ppl.param("hurst", 0.5, constraint=dist.constraints.unit_interval)
    theta = ppl.param("theta", 0.5, constraint=dist.constraints.positive)
    x = sde("x", lambda t, x, p: -p * x, lambda t, x, p: SIGMA, 0.0, times,
            noise=fbm(hurst, 5, 20.0), params=theta)
    ppl.observe("y", dist.Normal(x[OBS_INDEX], OBS_SD), ys)


def table(args):
    old = np.asarray([20.0 ** ((2 * k - 6) / 4) for k in range(1, 6)])
    num_ou, lo_g, hi_g = grid_defaults(TIMES)
    new = np.geomspace(lo_g, hi_g, num_ou)
    model = fou_model(jnp.asarray(TIMES), OBS_INDEX)
    head = ("| true H | seed | exact ML [95% CI] | MA-fBM ML K=5,g=20 (inc. err) | "
            f"MA-fBM ML K={num_ou},{lo_g:.3g}..{hi_g:.3g} (inc. err) | vsde default (se) | "
            "fit s |")
    if args.paper:
        head += " paper family | fit s |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for hurst in args.hursts:
        for seed in args.seeds:
            y = simulate_observations(hurst, seed)
            h, lo, hi = exact_profile_interval(y)
            cells = [f"{hurst:.2f}", str(seed), f"{h:.3f} [{lo:.3f}, {hi:.3f}]"]
            for gammas, noise in ((old, fbm(h, 5, 20.0)), (new, fbm(h))):
                m, mlo, mhi = mafbm_ml(y, gammas)
                err = approximation_error(noise, TIMES)  # increments at lag 0.02
                cells.append(f"{m:.3f} [{mlo:.3f}, {mhi:.3f}] ({err:.3f})")
            start = time.perf_counter()
            post = vsde(progress_bar=False).run(jax.random.PRNGKey(seed), model, jnp.asarray(y))
            learned = float(post.info["params"]["hurst"])
            se = float(post.info["param_std_error"]["hurst"])
            inside = "in" if lo <= learned <= hi else "OUT"
            cells += [f"{learned:.3f} ({se:.3f}) {inside}", f"{time.perf_counter() - start:.0f}"]
            if args.paper:
                start = time.perf_counter()
                post = vsde(num_steps=1000, control="mlp", learning_rate=1e-2,
                            learn_noise_scale=False, progress_bar=False).run(
                    jax.random.PRNGKey(seed), paper_model, jnp.asarray(y))
                cells += [f"{float(post.info['params']['hurst']):.3f}",
                          f"{time.perf_counter() - start:.0f}"]
            print("| " + " | ".join(cells) + " |")
            sys.stdout.flush()


def timings():
    model = fou_model(jnp.asarray(TIMES), OBS_INDEX)
    y = jnp.asarray(simulate_observations(0.5, 0))
    algo = vsde(num_steps=20, num_samples=16, progress_bar=False)
    start = time.perf_counter()
    jax.block_until_ready(algo.run(jax.random.PRNGKey(0), model, y).info["elbo"])
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(algo.run(jax.random.PRNGKey(1), model, y).info["elbo"])
    warm = time.perf_counter() - start
    long = vsde(num_steps=420, num_samples=16, progress_bar=False)
    long.run(jax.random.PRNGKey(0), model, y)
    start = time.perf_counter()
    jax.block_until_ready(long.run(jax.random.PRNGKey(1), model, y).info["elbo"])
    per_step = (time.perf_counter() - start - warm) / 400
    print(f"\ndefault vsde on the {NUM_STEPS}-step grid (K = {grid_defaults(TIMES)[0]}, "
          f"16 paths): compile {first - warm:.1f} s (first call {first:.1f} s, warm "
          f"{warm:.2f} s), {1e3 * per_step:.1f} ms per optimisation step")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hursts", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--paper", action="store_true", help="also the paper's family")
    parser.add_argument("--timings-only", action="store_true")
    parser.add_argument("--no-timings", action="store_true")
    args = parser.parse_args()
    if not args.no_timings:
        timings()
    if not args.timings_only:
        table(args)


if __name__ == "__main__":
    main()
