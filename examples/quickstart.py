"""Quickstart: write a model, run importance sampling and exact enumeration, look at the
posterior with ArviZ, and save a plot.

Run with ``python examples/quickstart.py``; it prints ArviZ summaries and writes
``examples/quickstart.png``.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import ppl  # noqa: E402
from ppl import dist  # noqa: E402
from ppl import inference as infer  # noqa: E402


@ppl.model
def coin(flips):
    """A coin of unknown bias p ~ Beta(2, 2), flipped len(flips) times."""
    p = ppl.sample("p", dist.Beta(2.0, 2.0))
    with ppl.plate("flips", flips.shape[0]):
        ppl.observe("y", dist.Bernoulli(p), flips)
    return p


@ppl.model
def weather(wet):
    """The sprinkler network: was it the rain or the sprinkler that wet the grass?"""
    cloudy = ppl.sample("cloudy", dist.Bernoulli(0.5))
    sprinkler = ppl.sample("sprinkler", dist.Bernoulli(jnp.array([0.5, 0.1])[cloudy]))
    rain = ppl.sample("rain", dist.Bernoulli(jnp.array([0.2, 0.8])[cloudy]))
    p_wet = jnp.array([[0.0, 0.9], [0.9, 0.99]])[sprinkler, rain]
    ppl.observe("wet", dist.Bernoulli(p_wet), wet)


def main():
    key = jax.random.PRNGKey(0)
    flips = jnp.array([1, 0, 1, 1, 1, 0, 1, 1, 1, 1], dtype=jnp.float32)

    post = infer.importance(num_samples=20_000).run(key, coin, flips)
    heads, n = float(flips.sum()), flips.shape[0]
    exact_mean = (2 + heads) / (4 + n)
    print(post)
    print(f"E[p | flips]: importance {float(post.mean('p')):.4f}, exact {exact_mean:.4f}")
    print(post.summary(kind="stats"))  # the installed ArviZ's summary, weights resampled

    exact = infer.exact(num_samples=4000).run(key, weather, 1.0)
    print(exact)
    for site, probs in exact.info["marginals"].items():
        print(f"P({site} = 1 | wet grass) = {float(probs[1]):.4f}")
    print(exact.summary(kind="stats"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    grid = jnp.linspace(0, 1, 200)
    resampled = post.resample(jax.random.PRNGKey(1))
    axes[0].hist(resampled.samples["p"], bins=50, density=True, alpha=0.5, label="importance")
    exact_pdf = jnp.exp(dist.Beta(2 + heads, 2 + n - heads).log_prob(grid))
    axes[0].plot(grid, exact_pdf, "k", label="exact Beta posterior")
    axes[0].set_title("coin bias p")
    axes[0].legend()
    names = list(exact.info["marginals"])
    axes[1].bar(names, [float(exact.info["marginals"][s][1]) for s in names])
    axes[1].set_title("P(site = 1 | wet grass), exact")
    out = Path(__file__).with_name("quickstart.png")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
