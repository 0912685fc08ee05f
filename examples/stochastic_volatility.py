"""Stochastic volatility: filter the log-volatility with SMC, learn (phi, sigma) with
PMMH, and look at the result with ArviZ.

    python examples/stochastic_volatility.py

Writes ``examples/stochastic_volatility.png`` (the filtered log-volatility band against
the truth) and ``examples/stochastic_volatility_trace.png`` (the installed ArviZ's trace
plot of the PMMH chains of phi and sigma: ``plot_trace`` under ArviZ 0.x,
``plot_trace_dist`` under 1.x).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ppl import inference as infer  # noqa: E402
from ppl import models as zoo  # noqa: E402
from ppl.arviz_compat import arviz_major, az  # noqa: E402  (the installed ArviZ, 0.x or 1.x)

PHI, SIGMA, T = 0.95, 0.25, 200


def main():
    key_data, key_smc, key_pmmh = jax.random.split(jax.random.PRNGKey(2026), 3)
    xs, ys = zoo.simulate_stochastic_volatility(key_data, T, PHI, SIGMA)

    # 1. SMC over states and (per particle, never rejuvenated) parameters
    smc = infer.smc(num_particles=2000, resample="systematic", ess_threshold=0.5)
    filtered = smc.run(key_smc, zoo.stochastic_volatility, ys)
    print(filtered)
    particles = filtered.info["particles"]["x"]  # (T, N): particles of x_t
    weights = jnp.exp(filtered.info["filter_log_weights"])  # (T, N), normalised
    mean = (weights * particles).sum(1)
    sd = jnp.sqrt((weights * (particles - mean[:, None]) ** 2).sum(1))

    # 2. PMMH over (phi, sigma), with the SMC evidence estimate as likelihood
    pmmh = infer.pmmh(
        params=["phi", "sigma"],
        likelihood=infer.smc(num_particles=200),
        num_samples=1500,
        num_warmup=500,
        num_chains=4,
        progress_bar=True,
    )
    posterior = pmmh.run(key_pmmh, zoo.stochastic_volatility, ys)
    print(posterior)
    idata = posterior.to_arviz()
    print(posterior.summary(var_names=["phi", "sigma"]))
    print(f"truth: phi = {PHI}, sigma = {SIGMA}")

    fig, top = plt.subplots(figsize=(11, 4))
    t = jnp.arange(1, T + 1)
    top.fill_between(t, mean - 2 * sd, mean + 2 * sd, alpha=0.3, label="SMC filter, ±2 sd")
    top.plot(t, mean, label="SMC filter mean")
    top.plot(t, xs, "k", lw=0.8, label="true log-volatility")
    top.set_xlabel("t")
    top.legend(loc="upper right")
    fig.tight_layout()
    out = Path(__file__).with_name("stochastic_volatility.png")
    fig.savefig(out, dpi=100)
    print(f"saved {out}")
    save_trace_plot(idata, ["phi", "sigma"], out.with_name("stochastic_volatility_trace.png"))


def save_trace_plot(idata, var_names, out):
    """The trace plot of the installed ArviZ (posterior density and chains per parameter)."""
    if arviz_major() == 0:
        axes = az.plot_trace(idata, var_names=var_names, show=False)
        axes.ravel()[0].figure.savefig(out, dpi=100)
    else:
        az.plot_trace_dist(idata, var_names=var_names, backend="matplotlib").savefig(out, dpi=100)
    print(f"saved {out}")

if __name__ == "__main__":
    main()
