"""Stochastic volatility with PaRIS particle Gibbs: smoothing and maximum likelihood.

The model (``ppl.models.stochastic_volatility`` with its two global sites as learnable
``ppl.param`` sites): x_0 = 0, x_t ~ N(phi x_{t-1}, sigma^2), returns y_t ~ N(0, exp(x_t)).
On simulated data (phi = 0.9, sigma = 0.4, T = 200):

1. PPG smoothing (``ppg``, Cardoso et al. 2023) of the log-volatility at the true
   parameters: the additive functional psi_t = (e_t x_t, e_t x_t^2) (e_t the t-th unit
   vector) gives every smoothing mean and second moment at once; the plot shows
   E[x_t | y] with +- 2 sd bands against the simulated path (``sv_smoothing.png``).
2. MLE of (phi, sigma) by PPG score ascent (``score_ascent``): the trajectory of the
   iterates with the Polyak-Ruppert estimate and the true values (``sv_mle.png``).

    python examples/sv_smoothing.py        # about a minute on 2 CPU cores
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from ppl.inference.learning import score_ascent  # noqa: E402
from ppl.inference.paris_gibbs import ppg  # noqa: E402

import ppl  # noqa: E402
from ppl import dist  # noqa: E402
from ppl import models as zoo  # noqa: E402

HERE = Path(__file__).parent
PHI, SIGMA, T = 0.9, 0.4, 200


@ppl.model
def volatility(ys):
    """Stochastic volatility with phi and sigma as ``ppl.param`` sites."""
    phi = ppl.param("phi", 0.5, constraint=constraints.interval(-1.0, 1.0))
    sigma = ppl.param("sigma", 1.0, constraint=constraints.positive)

    def step(x, y):
        x = ppl.sample("x", dist.Normal(phi * x, sigma))
        ppl.observe("y", dist.Normal(0.0, jnp.exp(x / 2.0)), y)
        return x

    return ppl.markov(step, init=0.0, xs=ys)


def moments(t, x_prev, x, params):
    """psi_t = (e_t x_t, e_t x_t^2): summed over t, every marginal's two moments."""
    unit = jax.nn.one_hot(t, T, dtype=jnp.result_type(float))
    return jnp.stack([unit * x, unit * x**2])


def smoothing(ys, xs):
    start = time.perf_counter()
    post = ppg(num_particles=200, num_backward=2, num_sweeps=10, num_warmup=2,
               functional=moments, backward="reject",
               fixed={"phi": PHI, "sigma": SIGMA}).run(jax.random.PRNGKey(1), volatility, ys)
    mean, second = post.estimate
    sd = jnp.sqrt(jnp.maximum(second - mean**2, 0.0))
    print(f"PPG smoothing (N=200, Ñ=2, k=10, k0=2): {time.perf_counter() - start:.1f} s; "
          f"true path inside the 2-sd band at {float(jnp.mean(jnp.abs(xs - mean) < 2 * sd)):.0%}"
          f" of the steps")
    fig, ax = plt.subplots(figsize=(10, 4))
    steps = jnp.arange(1, T + 1)
    ax.fill_between(steps, mean - 2 * sd, mean + 2 * sd, color="C0", alpha=0.3,
                    label="E[x_t | y] +- 2 sd (PPG)")
    ax.plot(steps, mean, color="C0")
    ax.plot(steps, xs, color="k", lw=0.8, label="simulated x_t")
    ax.set(xlabel="t", ylabel="log-volatility x_t",
           title="Stochastic volatility: PPG smoothing at the true parameters")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(HERE / "sv_smoothing.png", dpi=120)


def mle(ys):
    start = time.perf_counter()
    result = score_ascent(num_particles=64, num_backward=2, num_steps=200,
                          step_size=0.05, backward="reject").run(
        jax.random.PRNGKey(2), volatility, ys)
    est = result.estimate
    print(f"PPG score ascent (N=64, 200 iterations): {time.perf_counter() - start:.1f} s; "
          f"phi = {float(est['phi']):.3f} (true {PHI}), sigma = {float(est['sigma']):.3f} "
          f"(true {SIGMA})")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, name, true in zip(axes, ("phi", "sigma"), (PHI, SIGMA), strict=True):
        ax.plot(result.trajectory[name], label="iterates")
        ax.axhline(true, color="k", ls="--", label="true value")
        ax.axhline(float(est[name]), color="C3", ls=":", label="estimate (averaged)")
        ax.set(xlabel="iteration", title=name)
    axes[0].legend()
    fig.suptitle("Maximum likelihood by PPG score ascent")
    fig.tight_layout()
    fig.savefig(HERE / "sv_mle.png", dpi=120)
    return result


def main():
    xs, ys = zoo.simulate_stochastic_volatility(jax.random.PRNGKey(0), T, PHI, SIGMA)
    smoothing(ys, xs)
    result = mle(ys)
    print(result.to_arviz().posterior)


if __name__ == "__main__":
    main()
