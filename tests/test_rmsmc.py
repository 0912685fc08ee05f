"""Resample-move SMC (inference/resample_move.py) against exact answers.

* ``lgssm_1d_unknown_rho`` (T = 10): given rho the model is linear-Gaussian, so
  ``p(y | rho)`` is the Kalman filter's evidence; on a grid of rho (midpoint rule over the
  Uniform(-1, 1) prior, density 1/2) this gives the exact evidence ``p(y) = int p(y | rho)
  / 2 d rho`` and posterior mean ``E[rho | y]`` (grid error far below the MC error).
* the discrete HMM (no global sites; the moves regenerate single past steps): exact
  evidence and smoothing marginals by forward-backward.

Tolerances come from R = 16 independent runs (:func:`ppl.semantics.validity.preserves`,
``k = 4``): the self-normalised estimate of each run, and the evidence on the natural
scale (mean of Z-hat, the unbiased quantity). The runs are one jit of a ``vmap`` of the
combinator's ``core`` over keys; ``preserves`` then reads the run of each of its keys.
A deliberately broken move (accept-always) must fail the same check.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.semantics import validity
from scipy.special import logsumexp

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo
from ppl.errors import UnknownOptionError, UnsupportedModelError

rmsmc_module = importlib.import_module("ppl.inference.resample_move")

KEY = jax.random.PRNGKey(20261128)
R = 16
SIGMA_X, SIGMA_Y = 1.0, 0.5


def runs(algos, model, args, key=KEY, num_runs=R):
    """For each combinator, ``run(k)`` returning ``(samples, log_weights, log_evidence)``
    of the replicate with key ``k`` (one of ``jax.random.split(key, num_runs)``, the keys
    :func:`preserves` uses), and the raw vmapped outputs. One jit for all combinators."""
    keys = jax.random.split(key, num_runs)

    @jax.jit
    def all_runs(keys, a):
        return [jax.vmap(lambda k, alg=alg: alg.core(k, model, a, {}))(keys) for alg in algos]

    outs = all_runs(keys, args)
    index = {np.asarray(k).tobytes(): i for i, k in enumerate(keys)}
    results = []
    for out in outs:
        smc_out = getattr(out, "smc", out)

        def run(k, o=smc_out):
            i = index[np.asarray(k).tobytes()]
            samples = {**jax.tree.map(lambda a: a[i], o.globals),
                       **jax.tree.map(lambda a: a[i], o.paths)}
            return samples, o.log_weights[i], o.log_evidence[i]

        results.append(run)
    return results, outs


# --------------------------------------------------------------------------- LGSSM, rho


@pytest.fixture(scope="module")
def rho_problem():
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(3), 10, rho=0.7, sigma_x=SIGMA_X,
                                  sigma_y=SIGMA_Y)
    ys = np.asarray(ys, np.float64)
    n = 500  # midpoint rule: error ~ (2/n)^2 / 24 relative to posterior sd^2, << MC error
    width = 2.0 / n
    grid = -1.0 + width * (np.arange(n) + 0.5)  # midpoints
    log_lik = np.array([
        zoo.kalman_filter(ys, rho, SIGMA_X**2, 1.0, SIGMA_Y**2)["log_evidence"] for rho in grid
    ])
    log_post = log_lik + np.log(0.5) + np.log(width)  # Uniform(-1, 1) prior density 1/2
    log_z = logsumexp(log_post)
    w = np.exp(log_post - log_z)
    exact = {"rho_mean": float(np.sum(w * grid)), "log_evidence": float(log_z)}
    return jnp.asarray(ys, jnp.float32), exact


def rho_proposal(current, ys):
    """An asymmetric proposal program for the global rho, shrinking towards 0.7; it can
    leave rho's support (-1, 1), and such proposals must be rejected."""
    ppl.sample("rho", dist.Normal(0.5 * current["rho"] + 0.35, 0.25))


@pytest.fixture(scope="module")
def rho_runs(rho_problem):
    ys, _ = rho_problem
    algos = [
        infer.rmsmc(300, move=infer.mh(num_mcmc_steps=2), regenerate="globals"),
        infer.rmsmc(300),  # monad-bayes: a global site or a past step, uniformly
        infer.smc(300),  # no moves, for comparison
    ]
    return runs(algos, zoo.lgssm_1d_unknown_rho, (ys,))


@pytest.fixture(scope="module")
def rho_runs_other_moves(rho_problem):
    ys, _ = rho_problem
    algos = [
        infer.rmsmc(300, move=infer.mh(proposal="random_walk", num_mcmc_steps=2, step_size=0.3)),
        infer.rmsmc(300, move=infer.mh(proposal=rho_proposal, num_mcmc_steps=2)),
    ]
    return runs(algos, zoo.lgssm_1d_unknown_rho, (ys,))


def check_rho(rho_problem, runs_, which):
    _, exact = rho_problem
    (run_fns, outs) = runs_
    report = validity.preserves(
        run_fns[which], exact, {"rho_mean": lambda s: s["rho"]}, KEY, num_replicates=R
    )
    print(f"\nrate {float(outs[which].accept_rate.mean()):.2f}\n{report}")
    report.assert_ok()


@pytest.mark.parametrize("which", [0, 1], ids=["globals", "all"])
def test_rho_posterior_and_evidence_match_grid(rho_problem, rho_runs, which):
    check_rho(rho_problem, rho_runs, which)


# slow (keeps the fast suite under 15 minutes): the random-walk and program proposals have
# their own fast kernel tests in test_mh.py; here they run inside rmsmc
@pytest.mark.slow
@pytest.mark.parametrize("which", [0, 1], ids=["random_walk", "program"])
def test_rho_posterior_with_other_moves(rho_problem, rho_runs_other_moves, which):
    check_rho(rho_problem, rho_runs_other_moves, which)


def test_moves_change_the_globals(rho_runs):
    """Moves are accepted, and keep the population of rho diverse where plain SMC
    (resampling the same prior draws over and over) collapses to few values."""
    _, outs = rho_runs
    distinct = [
        np.mean([len(np.unique(np.asarray(r))) for r in np.asarray(getattr(o, "smc", o)
                 .globals["rho"])]) for o in outs
    ]
    print("distinct rho values per run:", distinct)
    for out in outs[:-1]:
        assert np.all(np.asarray(out.accept_rate) > 0)
    assert min(distinct[:-1]) > 3 * distinct[-1]


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_broken_move_is_detected(rho_problem, monkeypatch):
    """Accepting every move (regenerating rho from its prior) forgets the data: the
    posterior mean of rho fails the check the valid moves pass."""
    ys, exact = rho_problem

    mh_module = importlib.import_module("ppl.inference.trace_mh")
    valid = mh_module.metropolis_hastings

    def accept_always(key, current, proposed, log_alpha):
        return valid(key, current, proposed, jnp.zeros(()))

    monkeypatch.setattr(mh_module, "metropolis_hastings", accept_always)
    (run,), _ = runs([infer.rmsmc(300, regenerate="globals")], zoo.lgssm_1d_unknown_rho,
                     (ys,))
    report = validity.preserves(
        run, {"rho_mean": exact["rho_mean"]}, {"rho_mean": lambda s: s["rho"]}, KEY,
        num_replicates=R, check=False,
    )
    print(f"\naccept-always (must fail)\n{report}")
    assert not report.ok


# --------------------------------------------------------------------------- HMM


def test_discrete_hmm_evidence_and_smoothing():
    """No global sites: every move regenerates one past step x_s from the transition.
    Evidence and the smoothing marginals P(x_1 = k | y), P(x_T = k | y) are exact. Run
    through the public ``.run`` (one compile, R calls), which also checks the layout."""
    _, ys = zoo.simulate_discrete_hmm(jax.random.PRNGKey(4), 12)
    exact = zoo.discrete_hmm_exact(ys)
    T = len(ys)
    targets = {"log_evidence": exact["log_evidence"]}
    tests = {}
    for t in (0, T - 1):
        for k in range(3):
            targets[f"P(x_{t + 1}={k})"] = exact["smoothed"][t, k]
            tests[f"P(x_{t + 1}={k})"] = lambda s, t=t, k=k: (s["x"][:, t] == k)
    algo = infer.rmsmc(200, move=infer.mh(num_mcmc_steps=2))
    posts = []

    def run(k):
        posts.append(algo.run(k, zoo.discrete_hmm, ys))
        return posts[-1]

    report = validity.preserves(run, targets, tests, KEY, num_replicates=R)
    rates = [p.info["accept_rate"] for p in posts]
    print(f"\nacceptance {np.mean(rates):.2f}\n{report}")
    assert min(rates) > 0
    post = posts[0]
    assert post.samples["x"].shape == (200, T) and post.log_weights.shape == (200,)
    np.testing.assert_allclose(
        logsumexp(np.asarray(post.log_weights, np.float64)) - np.log(200),
        float(post.log_evidence), rtol=1e-5,
    )
    assert post.info["accept_rate_per_step"].shape == (T,)
    assert post.info["ess"].shape == (T,)
    idata = post.to_arviz()
    assert idata.posterior["x"].shape == (1, 200, T)


# --------------------------------------------------------------------------- API, errors


def test_smc_with_move_is_rmsmc():
    algo = infer.smc(50, resample="multinomial", ess_threshold=0.7, move=infer.mh(num_mcmc_steps=3))
    assert isinstance(algo, infer.RMSMC)
    assert (algo.num_particles, algo.resample, algo.ess_threshold, algo.move.num_mcmc_steps) == (
        50, "multinomial", 0.7, 3
    )


def test_errors():
    # a static program runs as IBIS (tests/test_static_smc.py); markov-only options refuse it
    with pytest.raises(UnsupportedModelError, match="markov"):
        infer.rmsmc(10, regenerate="steps").run(KEY, zoo.normal_normal, jnp.ones(3))
    with pytest.raises(UnknownOptionError, match="regenerate"):
        infer.rmsmc(10, regenerate="everything")
    with pytest.raises(TypeError, match="move"):
        infer.rmsmc(10, move="prior")
    with pytest.raises(ValueError, match="num_particles"):
        infer.rmsmc(0)
    ys = jnp.array([0, 1, 2, 3])
    with pytest.raises(UnsupportedModelError, match="regenerate"):
        infer.rmsmc(10, regenerate="globals").run(KEY, zoo.discrete_hmm, ys)
    with pytest.raises(UnsupportedModelError, match="random_walk"):
        infer.rmsmc(10, move=infer.mh(proposal="random_walk")).run(KEY, zoo.discrete_hmm, ys)
