"""Simulation-based calibration, ``ppl.check.sbc`` (ppl/check.py).

Test level. Every verdict is ``SBCResult.ok(LEVEL)``: the ECDF uniformity test of
Säilynoja, Bürkner & Vehtari (2022) on each quantity's ranks, Holm-corrected over the
quantities, at family-wise level ``LEVEL = 0.01``, at fixed seeds. A calibrated method
passes with probability >= 0.99 at any seed (the seeds below are not chosen); a broken
one must fail. The uniformity test itself is checked against its definition: p-values of
uniform ranks are uniform and the simultaneous bands cover uniform ECDFs with the stated
probability, within 4 Monte Carlo standard errors of the repetitions.

Fast tests use one tiny model per algorithm (compilation dominates: about 3 s per
combinator); the power studies (rejection rates over seeds) are marked slow.
"""

import importlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo
from ppl.check import LOG_LIKELIHOOD, SBCResult, ecdf_bands, ecdf_test, sbc
from ppl.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    UnsupportedModelError,
)
from ppl.posterior import Posterior

KEY = jax.random.PRNGKey(20260511)
LEVEL = 0.01
NN_DATA = jnp.zeros(5)  # shapes only: sbc replaces the data by simulated data
PEAKED_DATA = jnp.zeros(50)  # 50 observations: posterior sd 0.14 against prior sd 1


# --------------------------------------------------------------------------- helpers


class CountingRuns:
    """A combinator that counts its ``.run`` calls (to see when compilations happen)."""

    def __init__(self, inner):
        self.inner, self.calls, self.running = inner, 0, False

    def run(self, key, model, *args, **kwargs):
        self.calls += 1
        self.running = True
        try:
            return self.inner.run(key, model, *args, **kwargs)
        finally:
            self.running = False

    def __repr__(self):
        return f"CountingRuns({self.inner!r})"


class PriorDraws:
    """A "method" that ignores the data of ``normal_normal`` (mu ~ N(0, 1)) and returns
    prior draws: exactly what the parameter ranks cannot see (Talts et al. 2018) and the
    log-likelihood rank can (Modrák et al. 2023)."""

    def __init__(self, num_samples=100):
        self.num_samples = num_samples

    def run(self, key, model, *args, **kwargs):
        return Posterior({"mu": np.asarray(jax.random.normal(key, (self.num_samples,)))},
                         method="prior_draws")


LABEL_PROBS = np.array([0.2, 0.3, 0.5])
LABEL_MEANS = np.array([-1.0, 0.0, 1.5])


@ppl.model
def label(y):
    """A discrete latent label z ~ Categorical(0.2, 0.3, 0.5), y_i ~ Normal(mean_z, 1)."""
    z = ppl.sample("z", dist.Categorical(probs=jnp.asarray(LABEL_PROBS, jnp.float32)))
    with ppl.plate("data", y.shape[0]):
        ppl.observe("y", dist.Normal(jnp.asarray(LABEL_MEANS, jnp.float32)[z], 1.0), y)


class ExactLabel:
    """Exact posterior draws of ``label``'s z by Bayes' rule (host numpy, no compile)."""

    def __init__(self, num_samples=99):
        self.num_samples = num_samples

    def run(self, key, model, y):
        y = np.asarray(y, dtype=np.float64)
        logp = np.log(LABEL_PROBS) - 0.5 * ((y[:, None] - LABEL_MEANS) ** 2).sum(0)
        u = np.asarray(jax.random.uniform(key, (self.num_samples,)))
        p = np.exp(logp - logp.max())
        z = np.searchsorted(np.cumsum(p / p.sum()), u).clip(0, 2)
        return Posterior({"z": z.astype(np.int32)}, method="exact_label")


@pytest.fixture(scope="module")
def importance_result():
    """Likelihood weighting with 2000 particles on Normal-Normal (5 observations): the
    posterior sd is 0.41, the importance ESS about 800, so its resampled draws are close
    to exact. The run's compilations are recorded against the run that triggered them."""
    counting = CountingRuns(infer.importance(2000))
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append((counting.calls, counting.running))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = sbc(zoo.normal_normal, counting, NN_DATA, num_simulations=100,
                     num_draws=49, key=KEY, progress_bar=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return result, compiles, counting.calls


# --------------------------------------------------------------------------- calibrated


def test_importance_many_particles_is_calibrated(importance_result):
    result, compiles, calls = importance_result
    print(f"\n{result}")
    assert calls == 100
    assert result.data_mode == "arguments"  # the data argument itself is replaced
    assert set(result.ranks) == {"mu", LOG_LIKELIHOOD}
    assert all(r.shape == (100,) and r.min() >= 0 and r.max() <= 49
               for r in result.ranks.values())
    assert result.ok(LEVEL), result.rejected(LEVEL)


def test_later_simulations_compile_nothing(importance_result):
    """The combinator's run is compiled once: every compilation happens before the
    simulations (the prior draws), in the first one (its run and the replay) or after the
    last one (the ranks' tie-breaking), none in simulations 2 to 100."""
    _, compiles, calls = importance_result
    assert any(running for _, running in compiles), "no compilation seen in the first run"
    late = [(c, running) for c, running in compiles
            if c >= 2 and (c < calls or running)]
    assert not late, late


# slow (keeps the fast suite under 15 minutes): SBC's calibrated check stays fast on
# importance sampling; NUTS has its own fast known-answer tests
@pytest.mark.slow
def test_nuts_is_calibrated():
    """NUTS on Normal-Normal, 400 draws thinned to 39 (bulk ESS is about 200 here)."""
    result = sbc(zoo.normal_normal, infer.nuts(400, 200), NN_DATA, num_simulations=100,
                 num_draws=39, key=KEY, progress_bar=False)
    print(f"\n{result}")
    assert result.method == "nuts"
    assert np.nanmedian(result.ess) >= 39
    assert result.ok(LEVEL), result.rejected(LEVEL)


def test_discrete_latent_ties_are_broken_at_random():
    """Exact posterior draws of a discrete label pass. Ranks of a discrete site tie with
    the true value; counting only ``#{draws < truth}`` would pile them up low and fail
    (checked by hand: both quantities then have p < 1e-80 at this seed), so this also
    tests the tie-breaking."""
    result = sbc(label, ExactLabel(), jnp.zeros(3), num_simulations=200, num_draws=99,
                 key=KEY, progress_bar=False)
    print(f"\n{result}")
    assert result.ok(LEVEL), result.rejected(LEVEL)


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_markov_program_with_transformed_data_goes_through_the_handler():
    """The data reach the observe sites of a markov step only transformed (``xs=2 *
    raw``), so sbc sets the observed values by a handler inside each step, under SMC's
    step-by-step reading of the program; the result is calibrated."""

    @ppl.model
    def doubled(raw):
        rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))

        def step(x, y):
            x = ppl.sample("x", dist.Normal(rho * x, 1.0))
            ppl.observe("y", dist.Normal(x, 0.5), y)
            return x

        return ppl.markov(step, init=0.0, xs=2.0 * raw)

    result = sbc(doubled, infer.smc(300), jnp.ones(4), num_simulations=50, num_draws=19,
                 key=KEY, progress_bar=False)
    print(f"\n{result}")
    assert result.data_mode == "handler"
    # every scalar of the path is its own quantity, labelled as ArviZ does ...
    assert list(result.ranks) == ["rho", "x[0]", "x[1]", "x[2]", "x[3]", LOG_LIKELIHOOD]
    assert result.ok(LEVEL), result.rejected(LEVEL)
    # ... and to_arviz puts them back into the site's shape
    data = result.to_arviz()
    assert data["posterior"]["x"].shape == (1, 50, 4)
    np.testing.assert_array_equal(np.asarray(data["posterior"]["x"])[0, :, 2],
                                  result.ranks["x[2]"])
    np.testing.assert_array_equal(np.asarray(data["prior"]["x"])[0, :, 2],
                                  result.prior["x[2]"])


# --------------------------------------------------------------------------- detection


# slow (keeps the fast suite under 15 minutes): a miscalibrated-method control; the calibrated
# runs stay fast
@pytest.mark.slow
def test_too_few_particles_fail():
    """Two importance particles on a posterior seven times narrower than the prior: the
    resampled draws sit near the prior draws that happened to be proposed; SBC rejects."""
    result = sbc(zoo.normal_normal, infer.importance(2), PEAKED_DATA, num_simulations=100,
                 num_draws=49, key=KEY, progress_bar=False)
    print(f"\n{result}")
    assert not result.ok(LEVEL)
    assert set(result.rejected(LEVEL)) == {"mu", LOG_LIKELIHOOD}


def test_log_likelihood_sees_a_method_that_ignores_the_data():
    """Prior draws in place of the posterior: the rank of mu is uniform (SBC's blind
    spot), the rank of the log-likelihood is not (Modrák et al. 2023)."""
    result = sbc(zoo.normal_normal, PriorDraws(), NN_DATA, num_simulations=100,
                 num_draws=49, key=KEY, progress_bar=False)
    print(f"\n{result}")
    assert result.rejected(LEVEL) == [LOG_LIKELIHOOD]
    assert result.pvalues["mu"] > LEVEL


# --------------------------------------------------------------------------- the test


def test_uniform_ranks_give_uniform_pvalues_and_covered_bands():
    """2000 uniform rank samples (N = 50, L = 19): P[p <= a] = a for a = 0.05 and 0.2, and
    the 95% simultaneous bands contain the ECDF in 95% of them, each within 4 Monte Carlo
    standard errors."""
    rng = np.random.default_rng(0)
    reps, n, num_draws = 2000, 50, 19
    bands = ecdf_bands(n, num_draws, 0.95)
    assert bands.coverage >= 0.95
    pvalues, inside = [], 0
    for _ in range(reps):
        ranks = rng.integers(0, num_draws + 1, n)
        pvalues.append(ecdf_test(ranks, num_draws)[0])
        inside += bands.contains(ranks)
    pvalues = np.array(pvalues)
    for a in (0.05, 0.2):
        assert abs(np.mean(pvalues <= a) - a) <= 4 * np.sqrt(a * (1 - a) / reps), a
    assert abs(inside / reps - bands.coverage) <= 4 * np.sqrt(0.05 * 0.95 / reps)


def test_exact_pvalue_matches_simulation():
    """``ecdf_test`` against its definition, computed independently here with
    scipy.stats: for N = 100 ranks on 0..99 the ECDF is checked at z = 1/100..99/100,
    gamma = min_z 2 min(P[B <= n_z], P[B >= n_z]) with B ~ Binomial(100, z), and the
    p-value of a sample is P[gamma* <= its gamma] under uniform ranks: estimated from
    20000 simulated samples, within 4 Monte Carlo standard errors, at three samples."""
    from scipy import stats

    rng = np.random.default_rng(1)
    n, num_draws, reps = 100, 99, 20000
    ranks = rng.integers(0, num_draws + 1, (reps, n))
    per_value = np.zeros((reps, num_draws + 1), dtype=np.int64)
    np.add.at(per_value, (np.arange(reps)[:, None], ranks), 1)
    below = np.cumsum(per_value, axis=1)[:, :-1]  # #{r < c}, c = 1..99
    z = np.arange(1, num_draws + 1) / (num_draws + 1)
    tails = np.minimum(stats.binom.cdf(below, n, z), stats.binom.sf(below - 1, n, z))
    gammas = np.minimum(1.0, 2.0 * tails).min(axis=1)
    for i in np.argsort(gammas)[[200, 1000, 6000]]:  # near the 1%, 5% and 30% points
        p_exact, gamma = ecdf_test(ranks[i], num_draws)
        assert gamma == pytest.approx(gammas[i], rel=1e-9)
        p_sim = np.mean(gammas <= gammas[i])
        assert abs(p_sim - p_exact) <= 4 * np.sqrt(p_exact * (1 - p_exact) / reps), i


def test_non_uniform_ranks_are_rejected():
    rng = np.random.default_rng(2)
    overconfident = np.clip(np.round(rng.beta(0.5, 0.5, 200) * 49), 0, 49).astype(int)
    biased = np.clip(np.round(rng.beta(2.0, 1.2, 200) * 49), 0, 49).astype(int)
    for ranks in (overconfident, biased):
        assert ecdf_test(ranks, 49)[0] < 1e-4
    assert ecdf_test(np.tile(np.arange(50), 4), 49)[0] > 0.99  # as uniform as can be


def test_holm_correction():
    """Holm at level a over Q quantities rejects the smallest p-value only below a / Q."""
    rng = np.random.default_rng(3)
    good = rng.integers(0, 50, 100)
    bad = np.clip(np.round(rng.beta(0.7, 0.7, 100) * 49), 0, 49).astype(int)
    result = SBCResult({"a": good, "b": bad, "c": rng.integers(0, 50, 100)}, 49)
    p = result.pvalues
    assert result.rejected(LEVEL) == (["b"] if p["b"] <= LEVEL / 3 else [])
    assert result.ok(p["b"] * 3 * 0.99) and not result.ok(min(1.0, p["b"] * 3 * 1.01))


# --------------------------------------------------------------------------- output


def test_plot_to_arviz_and_repr(importance_result):
    from matplotlib.figure import Figure

    from ppl.arviz_compat import group_names

    result, _, _ = importance_result
    fig = result.plot()
    assert isinstance(fig, Figure)
    assert len([ax for ax in fig.axes if ax.axison]) == 2
    band = result.bands(0.9)
    assert band.z.shape == band.lower.shape == band.upper.shape
    assert np.all(band.lower <= band.z) and np.all(band.z <= band.upper)
    assert band.coverage >= 0.9
    data = result.to_arviz()
    assert set(group_names(data)) == {"posterior", "prior"}
    ranks = data["posterior"]["mu"]
    assert ranks.shape == (1, 100)
    np.testing.assert_array_equal(np.asarray(ranks).ravel(), result.ranks["mu"])
    assert data["posterior"].attrs["sbc_num_draws"] == 49
    text = repr(result)
    assert "mu" in text and LOG_LIKELIHOOD in text and "Holm" in text


# --------------------------------------------------------------------------- errors


def sbc_args(**overrides):
    """The options of the fixture's run (so its compiled prior draws and replay serve)."""
    options = dict(num_simulations=100, num_draws=49, key=KEY, progress_bar=False)
    options.update(overrides)
    return options


@pytest.mark.parametrize(
    ("option", "value", "error", "match"),
    [
        ("num_simulations", 0, InvalidArgumentError, "num_simulations"),
        ("num_simulations", 2.5, ArgumentTypeError, "num_simulations"),
        ("num_draws", -1, InvalidArgumentError, "num_draws"),
        ("num_draws", "10", ArgumentTypeError, "num_draws"),
        ("key", None, ArgumentTypeError, "key"),
        ("key", 3, ArgumentTypeError, "key"),
        ("sites", ["nope"], InvalidArgumentError, "sites"),
        ("data_args", "y", ArgumentTypeError, "data_args"),
    ],
)
def test_bad_arguments_are_named(option, value, error, match):
    with pytest.raises(error, match=match):
        sbc(zoo.normal_normal, PriorDraws(), NN_DATA, **sbc_args(**{option: value}))


def test_bad_model_or_inference():
    with pytest.raises(ArgumentTypeError, match="model"):
        sbc("model", PriorDraws(), NN_DATA, **sbc_args())
    with pytest.raises(ArgumentTypeError, match="inference"):
        sbc(zoo.normal_normal, "nuts", NN_DATA, **sbc_args())


def test_too_few_draws_per_run():
    with pytest.raises(InvalidArgumentError, match="num_draws=200"):
        sbc(zoo.normal_normal, PriorDraws(100), NN_DATA, **sbc_args(num_draws=200))


def test_programs_sbc_cannot_check():
    @ppl.model
    def no_latent(y):
        ppl.observe("y", dist.Normal(0.0, 1.0), y)

    @ppl.model
    def no_data():
        ppl.sample("mu", dist.Normal(0.0, 1.0))

    @ppl.model
    def with_factor(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.factor("soft", -mu**2)
        ppl.observe("y", dist.Normal(mu, 1.0), y)

    @ppl.model
    def data_dependent_prior(y):
        mu = ppl.sample("mu", dist.Normal(jnp.mean(y), 1.0))
        with ppl.plate("data", y.shape[0]):
            ppl.observe("y", dist.Normal(mu, 1.0), y)

    y = jnp.ones(())
    with pytest.raises(UnsupportedModelError, match="no latent"):
        sbc(no_latent, PriorDraws(), y, **sbc_args())
    with pytest.raises(UnsupportedModelError, match="no observe"):
        sbc(no_data, PriorDraws(), **sbc_args())
    with pytest.raises(UnsupportedModelError, match="factor site.*'soft'"):
        sbc(with_factor, PriorDraws(), y, **sbc_args())
    with pytest.raises(UnsupportedModelError, match="other than as the values"):
        sbc(data_dependent_prior, PriorDraws(), jnp.ones(3), **sbc_args())


def test_data_args_builds_the_arguments():
    """``data_args`` maps the simulated data to the program's arguments; the result is
    the same as with the automatic replacement of the data argument."""
    auto = sbc(zoo.normal_normal, PriorDraws(), NN_DATA, **sbc_args())
    manual = sbc(zoo.normal_normal, PriorDraws(), NN_DATA,
                 data_args=lambda sim: ((sim["y"],), {}), **sbc_args())
    assert manual.data_mode == "data_args"
    for q in auto.ranks:
        np.testing.assert_array_equal(auto.ranks[q], manual.ranks[q])


# --------------------------------------------------------------------------- power (slow)

SEEDS = range(10)


def verdicts(alg, model, data, num_simulations, num_draws):
    """The SBC results of ``alg`` at 10 seeds (keys 1000..1009), warnings silenced."""
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in SEEDS:
            results.append(sbc(model, alg, data, num_simulations=num_simulations,
                               num_draws=num_draws, key=jax.random.PRNGKey(1000 + seed),
                               progress_bar=False))
    rejected = [not r.ok(LEVEL) for r in results]
    print(f"\n{alg!r}: rejected at {sum(rejected)} of {len(rejected)} seeds; smallest "
          f"p-values {[round(min(r.pvalues.values()), 4) for r in results]}")
    return results, rejected


@pytest.mark.slow
def test_power_too_few_particles():
    """Importance sampling on Normal-Normal with 50 observations (posterior sd 0.14 against
    prior sd 1), 100 simulations, 49 draws. Measured (2 shared cores, 45 to 55 s): 30 particles
    rejected at 10 of 10 seeds (100 particles: 7 of 10); 20000 particles (importance ESS
    about 4000) at 0 of 10. Asserted: power >= 0.8, false positives <= 1 of 10 (at most
    1% per seed for an exact method: two or more has probability <= 0.4%)."""
    _, broken = verdicts(infer.importance(30), zoo.normal_normal, PEAKED_DATA, 100, 49)
    _, correct = verdicts(infer.importance(20000), zoo.normal_normal, PEAKED_DATA, 100, 49)
    assert sum(broken) >= 8
    assert sum(correct) <= 1


@ppl.model
def ridge(y):
    """Only a + b is identified: a strongly correlated 2-D Gaussian posterior (with 20
    observations the correlation of a and b is -0.95)."""
    a = ppl.sample("a", dist.Normal(0.0, 1.0))
    b = ppl.sample("b", dist.Normal(0.0, 1.0))
    with ppl.plate("data", y.shape[0]):
        ppl.observe("y", dist.Normal(a + b, 1.0), y)


@pytest.mark.slow
def test_power_mean_field_svi_on_a_correlated_posterior():
    """Mean-field SVI (``guide="normal"``) on :func:`ridge`: its optimum variances
    1 / diag(S^-1) are a tenth of the marginal posterior variances, so the ranks of a
    and b pile up at both ends. The full-rank guide (``"mvn"``) contains the posterior.
    Both with Adam, step size 0.05 decaying to 5e-4 over 2000 steps, 4 particles per ELBO
    estimate, 100 draws; 100 simulations, 49 draws. Measured (2 shared cores, 60 to 90 s):
    mean-field rejected at 10 of 10 seeds, full-rank at 0 of 10 (with a constant step
    size 0.05 and one particle, 1500 steps: 1 of 10, the optimisation noise shows)."""

    def alg(guide):
        steps = 2000
        return infer.svi(guide=guide, num_steps=steps, num_samples=100, num_particles=4,
                         optimizer=optax.adam(optax.exponential_decay(0.05, steps, 0.01)))

    results, broken = verdicts(alg("normal"), ridge, jnp.zeros(20), 100, 49)
    _, correct = verdicts(alg("mvn"), ridge, jnp.zeros(20), 100, 49)
    assert sum(broken) >= 8
    assert all({"a", "b"} <= set(r.rejected(LEVEL)) for r, bad in zip(results, broken,
                                                                        strict=True) if bad)
    assert sum(correct) <= 1


@pytest.mark.slow
def test_power_broken_mh_kernel(monkeypatch):
    """The broken kernel of tests/test_mh.py: accept every prior-regeneration proposal
    (``metropolis_hastings`` with log alpha = 0). The chain is then a sequence of
    independent *prior* draws: the ranks of mu stay uniform (SBC's blind spot for a
    method that ignores the data) and only the log-likelihood rank sees it. Normal-Normal,
    5 observations, ``infer.mh(2000, num_warmup=300)``, 100 simulations, 39 draws.
    Measured (2 shared cores, 60 to 100 s): broken kernel rejected at 10 of 10 seeds, always on
    the log-likelihood; the valid kernel at 0 of 10."""
    mh_module = importlib.import_module("ppl.inference.trace_mh")
    valid = mh_module.metropolis_hastings
    _, correct = verdicts(infer.mh(2000, num_warmup=300), zoo.normal_normal, NN_DATA, 100,
                          39)

    def accept_always(key, current, proposed, log_alpha):
        return valid(key, current, proposed, jnp.zeros(()))

    monkeypatch.setattr(mh_module, "metropolis_hastings", accept_always)
    results, broken = verdicts(infer.mh(2000, num_warmup=300), zoo.normal_normal, NN_DATA,
                               100, 39)
    assert sum(broken) >= 8
    assert sum(LOG_LIKELIHOOD in r.rejected(LEVEL) for r in results) >= 8
    assert sum(correct) <= 1
