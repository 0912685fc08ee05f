"""Several MCMC chains are checked when their Posterior is built: rank-normalised split
R-hat > 1.01, bulk ESS < 100 per chain, or divergent transitions give one
``ppl.ConvergenceWarning``; the figures are in ``Posterior.diagnostics()``."""

import warnings

import jax
import numpy as np
import pytest
from arviz_helpers import az

import ppl
from ppl import ConvergenceWarning, Posterior
from ppl import inference as infer
from ppl import models as zoo

C, D = 2, 1000


def good_chains(seed=0, shape=(3,)):
    """Independent N(0, 1) draws: C chains of D draws, chain-major."""
    return np.random.default_rng(seed).normal(size=(C * D, *shape))


def no_warning(build):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build()


def test_one_chain_in_another_mode_is_named_with_its_r_hat():
    """Label switching in miniature: chain 1 of ``mu[1]`` sits 2 sd away."""
    mu = good_chains()
    mu.reshape(C, D, 3)[1, :, 1] += 2.0
    with pytest.warns(ConvergenceWarning, match=r"R-hat > 1\.01 at mu\[1\] \(1\.") as record:
        post = Posterior({"mu": mu, "s": good_chains(1, ())}, num_chains=C, method="nuts")
    assert len(record) == 1
    message = str(record[0].message)
    assert "bulk ESS < 200 (100 per chain) at mu[1]" in message
    assert "mu[0]" not in message and " s " not in message
    assert record[0].filename == __file__  # points at the line that built it
    diag = post.diagnostics()
    assert list(diag["high_r_hat"]) == ["mu[1]"] and list(diag["low_ess_bulk"]) == ["mu[1]"]
    assert diag["r_hat"]["mu"].shape == (3,) and diag["r_hat"]["s"].shape == ()
    assert not diag["converged"] and diag["num_divergences"] is None
    # the figures are ArviZ's (R-hat exactly, bulk ESS within 1%)
    idata = post.to_arviz()
    np.testing.assert_allclose(diag["r_hat"]["mu"], az.rhat(idata)["mu"].values, rtol=1e-8)
    np.testing.assert_allclose(diag["ess_bulk"]["mu"], az.ess(idata, method="bulk")["mu"],
                               rtol=0.01)
    assert diag["r_hat"]["mu"][1] > 1.3 and diag["ess_bulk"]["mu"][1] < 20


def test_good_chains_give_no_warning():
    post = no_warning(lambda: Posterior(
        {"mu": good_chains(), "m": good_chains(2, (2, 2)), "k": np.arange(C * D) % 3},
        num_chains=C, method="mh"))
    diag = post.diagnostics()
    assert diag["converged"] and diag["high_r_hat"] == {} and diag["low_ess_bulk"] == {}
    assert np.all(diag["r_hat"]["mu"] < 1.01) and np.all(diag["ess_bulk"]["m"] > 200)
    assert diag["r_hat_threshold"] == 1.01 and diag["ess_bulk_threshold"] == 100 * C


def test_divergences_are_counted_and_warned():
    diverging = np.zeros(C * D, dtype=bool)
    diverging[[10, D + 3, D + 400]] = True
    match = r"3 of 2000 transitions diverged \(per chain: 1, 2\)"
    with pytest.warns(ConvergenceWarning, match=match):
        post = Posterior({"mu": good_chains()}, num_chains=C, method="nuts",
                         sample_stats={"diverging": diverging})
    diag = post.diagnostics()
    assert diag["num_divergences"] == 3
    np.testing.assert_array_equal(diag["divergences_per_chain"], [1, 2])
    assert diag["high_r_hat"] == {} and not diag["converged"]
    no_warning(lambda: Posterior({"mu": good_chains()}, num_chains=C, method="nuts",
                                 sample_stats={"diverging": np.zeros(C * D, dtype=bool)}))


def test_only_several_unweighted_mcmc_chains_are_checked_when_built():
    bad = good_chains()
    bad.reshape(C, D, 3)[1] += 3.0
    no_warning(lambda: Posterior({"mu": bad}, num_chains=C, method="exact"))  # not MCMC
    no_warning(lambda: Posterior({"mu": bad}, num_chains=C))  # built by hand, no method
    no_warning(lambda: Posterior({"mu": bad[:D]}, method="nuts"))  # one chain
    weighted = no_warning(lambda: Posterior({"mu": bad}, num_chains=C, method="nuts",
                                            log_weights=np.zeros(C * D)))
    assert weighted.diagnostics() == {"num_chains": C, "num_draws": D, "importance_ess":
                                      pytest.approx(C * D)}
    # on request, any unweighted result is diagnosed (without a warning)
    by_hand = no_warning(lambda: Posterior({"mu": bad}, num_chains=C))
    assert "mu[0]" in by_hand.diagnostics()["high_r_hat"]
    single = Posterior({"mu": np.linspace(0, 1, D)}, method="nuts")  # a trend within a chain
    assert single.diagnostics()["r_hat"]["mu"] > 1.5


def test_degenerate_sites_are_not_flagged():
    """Constant or non-finite scalars get NaN; too few draws skip the figures."""
    const = np.ones(C * D)
    nonfinite = good_chains(3, ())
    nonfinite[5] = np.inf
    post = no_warning(lambda: Posterior({"c": const, "f": nonfinite, "mu": good_chains()},
                                        num_chains=C, method="hmc"))
    diag = post.diagnostics()
    assert np.isnan(diag["r_hat"]["c"]) and np.isnan(diag["ess_bulk"]["f"])
    short = no_warning(lambda: Posterior({"mu": good_chains()[:6]}, num_chains=2, method="hmc"))
    assert short.diagnostics()["skipped_sites"] == ["mu"]


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_real_nuts_run_on_a_well_posed_model_is_silent():
    data = np.array([0.3, 1.2, -0.4, 0.8, 1.5, 0.9])
    algo = infer.nuts(500, num_warmup=300, num_chains=2)
    post = no_warning(lambda: algo.run(jax.random.PRNGKey(0), zoo.normal_normal, data))
    diag = post.diagnostics()
    assert diag["converged"] and diag["num_divergences"] == 0
    assert diag["r_hat"]["mu"] < 1.01 and diag["ess_bulk"]["mu"] > 200


def test_real_nuts_run_that_is_too_short_warns_at_the_callers_line():
    """Fifteen draws per chain cannot reach a bulk ESS of 100 per chain."""
    data = np.array([0.3, 1.2, -0.4, 0.8, 1.5, 0.9])
    algo = infer.nuts(15, num_warmup=50, num_chains=2)
    with pytest.warns(ConvergenceWarning, match=r"nuts: 2 chains of 15 draws.*bulk ESS < 200"
                      ) as record:
        algo.run(jax.random.PRNGKey(0), zoo.normal_normal, data)
    assert record[0].filename == __file__


def test_convergence_warning_is_exported():
    assert ppl.ConvergenceWarning is ConvergenceWarning and issubclass(ConvergenceWarning,
                                                                      UserWarning)
