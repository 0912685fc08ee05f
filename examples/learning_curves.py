"""Learning-curve extrapolation: the shipped LC-PFN next to NUTS on the same ppl program.

A curve of 100 epochs is drawn from the LC-PFN prior (Adriaensen et al. 2023,
``ppl.models.pfn_priors.learning_curve``); both methods see its first ``CUTOFF`` epochs
and predict the rest. Left: the PFN's posterior predictive (one forward pass of the network
in ``models/pfn_weights/lc_pfn.npz``); right: NUTS on the program conditioned on the prefix,
its predictive being the curve of each posterior draw plus its observation noise. Shaded:
the 5-95% and 25-75% predictive bands; line: the median (for the PFN the exact quantiles of
its predicted bar distributions, ``info["quantile"]``; for NUTS those of its draws). Saved to
``examples/learning_curves.png``.

    python examples/learning_curves.py
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ppl.inference.hamiltonian import nuts  # noqa: E402
from ppl.inference.prior_fitted import load, sample_datasets  # noqa: E402
from ppl.models.pfn_priors import LC_EPOCHS, lc_inputs, learning_curve  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "..", "models", "pfn_weights", "lc_pfn.npz")
CUTOFF = 20


LEVELS = np.array([0.05, 0.25, 0.5, 0.75, 0.95])


def bands(ax, t, q, color, label):
    """Shade the 5-95% and 25-75% bands and draw the median, from quantiles ``q`` (5, T)."""
    ax.fill_between(t, q[0], q[4], color=color, alpha=0.2, label=f"{label} 5-95%")
    ax.fill_between(t, q[1], q[3], color=color, alpha=0.35, label=f"{label} 25-75%")
    ax.plot(t, q[2], color=color, lw=1.5, label=f"{label} median")


def main():
    key = jax.random.PRNGKey(2023)
    k_data, k_pfn, k_nuts, k_noise = jax.random.split(key, 4)
    x, y, _, _, _ = sample_datasets(k_data, learning_curve, lc_inputs, LC_EPOCHS, 1,
                                    oversample=16)
    x, y = x[0], y[0]
    xt, yt, xq = x[:CUTOFF], y[:CUTOFF], x[CUTOFF:]

    net = load(WEIGHTS, inputs=lc_inputs)
    net.run(k_pfn, learning_curve, xt, yt, x_query=xq, num_samples=2000)  # compile
    start = time.perf_counter()
    post_pfn = net.run(k_pfn, learning_curve, xt, yt, x_query=xq, num_samples=2000)
    jax.block_until_ready(post_pfn.samples)
    t_pfn = time.perf_counter() - start

    start = time.perf_counter()
    post_nuts = nuts(500, num_warmup=500).run(k_nuts, learning_curve, xt, yt)
    jax.block_until_ready(post_nuts.samples)
    t_nuts = time.perf_counter() - start
    curves = post_nuts.samples["curve"][:, CUTOFF:]
    sigma = jnp.exp(post_nuts.samples["log_sigma"])[:, None]
    y_nuts = curves + sigma * jax.random.normal(k_noise, curves.shape)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, q, color, name, secs, when in (
        (axes[0], np.asarray(post_pfn.info["quantile"](LEVELS)).T, "C0", "PFN", t_pfn,
         "compiled"),
        (axes[1], np.quantile(np.asarray(y_nuts), LEVELS, axis=0), "C1", "NUTS", t_nuts,
         "with compilation"),
    ):
        bands(ax, np.asarray(xq), q, color, name)
        ax.plot(np.asarray(x), np.asarray(y), "k.", ms=3, alpha=0.4, label="held-out curve")
        ax.plot(np.asarray(xt), np.asarray(yt), "k.", ms=5, label=f"first {CUTOFF} epochs")
        ax.axvline(CUTOFF + 0.5, color="gray", ls=":")
        ax.set_title(f"{name}: {secs:.3g} s ({when})")
        ax.set_xlabel("epoch")
        ax.legend(loc="lower right", fontsize=7)
    axes[0].set_ylabel("performance")
    fig.tight_layout()
    out = os.path.join(HERE, "learning_curves.png")
    fig.savefig(out, dpi=120)
    print(f"PFN {t_pfn:.4f} s (compiled), NUTS {t_nuts:.1f} s (one run with compilation; "
          f"benchmarks/bench_pfn.py times it compiled); wrote {out}")
    print(post_nuts.summary(var_names=["log_sigma", "w"]))


if __name__ == "__main__":
    main()
