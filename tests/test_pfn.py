"""Prior-data fitted networks (ppl.inference.pfn) on the GP prior of ppl.models.pfn_priors.

Held-out comparisons are paired over tasks: each task's mean NLL per query point under two
predictors, and the tolerance is the standard error of the per-task difference.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.inference.pfn import BarDistribution, load, make_borders, pfn, sample_datasets
from ppl.models.pfn_priors import (
    gp_exact_predictive,
    gp_inputs,
    gp_prior_predictive_logpdf,
    gp_regression,
)

import ppl
from ppl import dist
from ppl.errors import ShapeMismatchError, UnsupportedModelError

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "models", "pfn_weights")
N_POINTS = 20  # small datasets keep the test network cheap


def per_task_nll(net, key, num_tasks, num_points):
    """Per-task mean NLL per query point: (pfn, exact GP, prior predictive), each (tasks,)."""
    x, y, _, n, _ = sample_datasets(key, gp_regression, gp_inputs, num_points, num_tasks)
    lp = np.asarray(net.log_predictive(x, y, n))
    x, y, n = np.asarray(x), np.asarray(y), np.asarray(n)
    out = np.zeros((3, num_tasks))
    for b in range(num_tasks):
        k = n[b]
        mean, var = gp_exact_predictive(x[b, :k], y[b, :k], x[b, k:])
        yq = y[b, k:]
        out[0, b] = -lp[b, k:].mean()
        out[1, b] = np.mean(0.5 * (np.log(2 * np.pi * var) + (yq - mean) ** 2 / var))
        out[2, b] = -np.mean(gp_prior_predictive_logpdf(yq))
    return out


@pytest.fixture(scope="module")
def small_pfn():
    net = pfn(num_points=N_POINTS, inputs=gp_inputs, num_buckets=50, width=32, depth=2,
              heads=4, batch_size=32, chunk=75, progress_bar=False, learning_rate=2e-3)
    return net.fit(jax.random.PRNGKey(0), gp_regression, steps=150)


def test_bar_distribution_normalised_and_uniform_in_bucket():
    borders = make_borders(np.random.default_rng(0).normal(size=5000), 20)
    assert np.all(np.diff(borders) > 0)
    bars = BarDistribution(jnp.asarray(borders))
    logits = jax.random.normal(jax.random.PRNGKey(1), (20,))
    grid = np.linspace(borders[0] - 30, borders[-1] + 30, 100_001)
    density = np.exp(np.asarray(bars.log_prob(logits, jnp.asarray(grid))))
    assert abs(np.trapezoid(density, grid) - 1.0) < 2e-3
    # inside an inner bucket the density is p_k / width_k
    log_p = np.asarray(jax.nn.log_softmax(logits))
    for k in (1, 7, 18):
        y = 0.3 * borders[k] + 0.7 * borders[k + 1]
        expected = log_p[k] - np.log(borders[k + 1] - borders[k])
        assert abs(float(bars.log_prob(logits, jnp.asarray(y))) - expected) < 1e-4
    # draws land in the buckets with the predicted frequencies (z-scores from binomial SE)
    draws = np.asarray(bars.sample(jax.random.PRNGKey(2), logits, 20_000))
    counts = np.bincount(np.asarray(bars.bucket(jnp.asarray(draws))), minlength=20)
    p = np.exp(log_p)
    z = (counts / 20_000 - p) / np.sqrt(p * (1 - p) / 20_000)
    assert np.max(np.abs(z)) < 4.0


def test_small_pfn_beats_prior_predictive(small_pfn):
    nll = per_task_nll(small_pfn, jax.random.PRNGKey(7), 200, N_POINTS)
    gain = nll[2] - nll[0]
    se = gain.std(ddof=1) / np.sqrt(gain.size)
    # a clear margin: 5 standard errors and at least 0.1 nats per query point
    assert gain.mean() > max(5 * se, 0.1), (gain.mean(), se)
    # broken variant: the same network given another task's training outputs must lose
    # (shows the gain comes from conditioning on the data)
    x, y, _, n, _ = sample_datasets(jax.random.PRNGKey(7), gp_regression, gp_inputs,
                                    N_POINTS, 200)
    y_wrong = jnp.where(jnp.arange(N_POINTS)[None, :] < n[:, None], jnp.roll(y, 1, 0), y)
    lp_wrong = small_pfn.bars.log_prob(small_pfn.logits(x, y_wrong, n), y)
    mask = np.arange(N_POINTS)[None, :] >= np.asarray(n)[:, None]
    wrong = -(np.asarray(lp_wrong) * mask).sum(1) / mask.sum(1)
    loss = wrong - nll[0]
    assert loss.mean() > 5 * loss.std(ddof=1) / np.sqrt(loss.size)


def test_checkpoint_round_trip(small_pfn, tmp_path):
    path = tmp_path / "net.npz"
    small_pfn.save(path)
    loaded = load(path, inputs=gp_inputs)
    x = jnp.linspace(0, 1, 12)
    y = jnp.sin(6 * x)
    a = small_pfn.run(jax.random.PRNGKey(3), gp_regression, x[:8], y[:8], x_query=x[8:])
    b = loaded.run(jax.random.PRNGKey(3), gp_regression, x[:8], y[:8], x_query=x[8:])
    np.testing.assert_array_equal(a.samples["y"], b.samples["y"])
    np.testing.assert_array_equal(a.info["bucket_log_probs"], b.info["bucket_log_probs"])
    assert a.samples["y"].shape == (1000, 4)
    idata = a.to_arviz()
    assert "y" in idata.posterior and "y" in idata.observed_data


@pytest.mark.skipif(not os.path.exists(os.path.join(WEIGHTS, "gp_pfn.npz")),
                    reason="shipped GP network not present")
def test_shipped_gp_network_close_to_exact_gp():
    net = load(os.path.join(WEIGHTS, "gp_pfn.npz"), inputs=gp_inputs)
    nll = per_task_nll(net, jax.random.PRNGKey(11), 200, net.config.num_points)
    gap = nll[0] - nll[1]
    se = gap.std(ddof=1) / np.sqrt(gap.size)
    # stated margin for the shipped (budget-trained) network; see benchmarks/README
    assert gap.mean() < 0.12, (gap.mean(), se)  # measured 0.071 +- 0.008 on 500 tasks
    gain = nll[2] - nll[0]
    assert gain.mean() > max(5 * gain.std(ddof=1) / np.sqrt(gain.size), 0.5)


def test_latent_target_mode_runs():
    @ppl.model
    def slope(x, y=None):
        b = ppl.sample("b", dist.Normal(0.0, 1.0))
        return ppl.observe("y", dist.Normal(b * x, 0.5), y)

    net = pfn(num_points=10, target="b", num_buckets=20, width=16, depth=1, heads=2,
              batch_size=16, chunk=10, progress_bar=False)
    net.fit(jax.random.PRNGKey(0), slope, steps=10)
    x = jnp.linspace(0, 1, 6)
    post = net.run(jax.random.PRNGKey(1), slope, x, 2.0 * x, num_samples=50)
    assert post.samples["b"].shape == (50,)
    assert np.isfinite(float(post.info["mean"]))


def test_bad_input_errors(small_pfn):
    with pytest.raises(UnsupportedModelError, match="no observed site 'z'"):
        pfn(num_points=5, observed="z").fit(jax.random.PRNGKey(0), gp_regression, steps=1)
    with pytest.raises(UnsupportedModelError, match="target='theta'"):
        pfn(num_points=5, target="theta").fit(jax.random.PRNGKey(0), gp_regression, steps=1)
    with pytest.raises(ValueError, match="divisible"):
        pfn(width=30, heads=4)
    with pytest.raises(RuntimeError, match="not trained"):
        pfn().run(jax.random.PRNGKey(0), gp_regression, jnp.ones(3), jnp.ones(3), jnp.ones(2))
    key = jax.random.PRNGKey(0)
    x = jnp.linspace(0, 1, 5)
    with pytest.raises(ShapeMismatchError, match="same n"):
        small_pfn.run(key, gp_regression, x, x[:3], x_query=x)
    with pytest.raises(ValueError, match="x_query"):
        small_pfn.run(key, gp_regression, x, x)
    with pytest.raises(ValueError, match="finite"):
        small_pfn.run(key, gp_regression, x, x.at[0].set(jnp.nan), x_query=x)
    with pytest.raises(UnsupportedModelError, match="trained on the program"):
        small_pfn.run(key, lambda x, y=None: None, x, x, x_query=x)
    with pytest.raises(TypeError, match="key"):
        small_pfn.run(0, gp_regression, x, x, x_query=x)
