"""A fractional Ornstein-Uhlenbeck process fitted by variational inference over its paths,
with the Hurst index learned (Daems, Opper, Crevecoeur & Birdal, ICLR 2024).

    python examples/fractional_ou.py

The data are noisy observations of one fOU path ``dX = -theta X dt + dB^H`` (type II,
Riemann-Liouville fBM) simulated exactly, by a Cholesky factor of its covariance computed
from the exact fBM covariance (independent of the Markov approximation used to fit). The
program drives the SDE by the Markov-approximate fBM (``fbm(hurst)``: its OU speeds chosen
from the time grid) with the Hurst index a learnable ``param``; ``vsde`` fits a control of
the driving noise and the Hurst index jointly, once with its defaults (for fractional noise a
standardised affine control with learned increment scales) and once as the paper sets it up
(``fbm(hurst, num_ou=5, gamma_max=20)``, unit-variance increments), which biases H upwards
and warns that its approximation is far from the fBM on this grid.

Writes ``examples/fractional_ou.png``: posterior path bands (5-95% and the mean) against
the true path and the data, and the Hurst index's trajectories during training.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ppl.inference.variational_sde import vsde  # noqa: E402
from ppl.semantics.mafbm import exact_fbm_covariance  # noqa: E402

import ppl  # noqa: E402
from ppl import dist  # noqa: E402
from ppl.sde import fbm, sde  # noqa: E402

TRUE_HURST, THETA, HORIZON, NUM_STEPS, OBS_EVERY, OBS_SD = 0.3, 1.0, 4.0, 800, 4, 0.3


def exact_fou_path(rng, hurst, num=NUM_STEPS):
    """One exact fOU path on the grid (without t = 0): X = B - theta int e^{-theta(t-s)} B ds
    with B from the exact fBM covariance (trapezoid rule for the integral)."""
    s = np.linspace(0.0, HORIZON, num + 1)[1:]
    cov_b = exact_fbm_covariance(s[:, None], s[None, :], hurst, "II")
    ds = HORIZON / num
    op = np.eye(num)
    for i in range(num):
        w = np.full(i + 2, ds)
        w[0] *= 0.5
        w[-1] *= 0.5
        op[i, : i + 1] -= THETA * w[1:] * np.exp(-THETA * (s[i] - s[: i + 1]))
    cov = op @ cov_b @ op.T
    return np.linalg.cholesky(cov + 1e-12 * np.eye(num)) @ rng.standard_normal(num)


TIMES = jnp.linspace(0.0, HORIZON, NUM_STEPS + 1)
OBS_INDEX = np.arange(OBS_EVERY, NUM_STEPS + 1, OBS_EVERY)


def fou(ys, paper_speeds=False):
    """The model: fOU latent path observed with Gaussian noise; the Hurst index is learned.
    ``paper_speeds``: the paper's MA-fBM (5 OU speeds up to 20) instead of the grid's."""
    hurst = ppl.param("hurst", 0.5, constraint=dist.constraints.unit_interval)
    noise = fbm(hurst, num_ou=5, gamma_max=20.0) if paper_speeds else fbm(hurst)
    x = sde("x", lambda t, x, p: -THETA * x, lambda t, x, p: 1.0, 0.0, TIMES, noise=noise)
    ppl.observe("y", dist.Normal(x[OBS_INDEX], OBS_SD), ys)


def main():
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    path = np.r_[0.0, exact_fou_path(rng, TRUE_HURST)]
    ys = jnp.asarray(path[OBS_INDEX] + OBS_SD * rng.standard_normal(OBS_INDEX.size))

    # vsde's defaults, then the paper's set-up (its speeds, unit-variance increments)
    fits = {}
    runs = (("defaults", vsde(num_paths=16, num_samples=500), False),
            ("paper's set-up", vsde(num_steps=3000, num_paths=16, learning_rate=0.1,
                                    control="affine", learn_noise_scale=False,
                                    num_samples=500), True))
    for label, algo, paper_speeds in runs:
        post = algo.run(jax.random.PRNGKey(0), fou, ys, paper_speeds)
        fits[label] = post
        error = post.info["mafbm"]["x"]["increment_covariance_error"]
        print(f"{label}: true H = {TRUE_HURST}, learned H = "
              f"{float(post.info['params']['hurst']):.3f}; ELBO {post.info['elbo_final']:.2f} "
              f"+- {post.info['elbo_std_error']:.2f}, importance-sampling log evidence "
              f"{post.log_evidence:.2f}; MA-fBM increment covariance error {error:.3f}")
    post = fits["defaults"]

    t = np.asarray(TIMES)
    lo, hi = np.asarray(post.quantile("x", jnp.array([0.05, 0.95])))
    fig, (ax_path, ax_h) = plt.subplots(1, 2, figsize=(12, 4), width_ratios=(2, 1))
    ax_path.fill_between(t, lo, hi, alpha=0.3, label="posterior 5-95%")
    ax_path.plot(t, np.asarray(post.mean("x")), label="posterior mean")
    ax_path.plot(t, path, "k", lw=0.8, label="true path")
    ax_path.plot(t[OBS_INDEX], ys, ".", ms=3, color="C3", label="data")
    ax_path.set(xlabel="t", ylabel="x",
                title="fractional OU: vsde posterior paths (defaults)")
    ax_path.legend(fontsize=8)
    for label, fit in fits.items():
        ax_h.plot(np.asarray(fit.info["param_trace"]["hurst"]), label=f"H, {label}")
    ax_h.axhline(TRUE_HURST, color="k", ls="--", label="true H")
    ax_h.set(xlabel="optimisation step", ylabel="H", title="Hurst index during training")
    ax_h.legend(fontsize=8)
    fig.tight_layout()
    out = Path(__file__).with_suffix(".png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
