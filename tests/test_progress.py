"""``progress_scan`` (inference/progress.py): a ``lax.scan`` with a tqdm bar on stderr.

Checks: the result is ``lax.scan``'s, bar on or off, plain, inside ``jit`` and under
``vmap``; with the bar on, stderr shows it (``desc`` and ``100/100``) and stdout stays
clean; off, nothing is written and the traced program (a short scan) is exactly
``lax.scan``'s. The host reports are counted: they come by the clock, at least every
``every=10`` iterations, so 100 fast iterations give about a dozen, each at a distinct,
increasing iteration, and the same number under ``vmap`` over 3 chains (a callback per
chain would triple them and repeat each iteration, a cond turned into a select would report
before every chunk): the check that fails if the counter got batched.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.inference import progress
from ppl.inference.progress import progress_scan

N = 100


def body(carry, x):
    a, b = carry
    a = 0.9 * a + x["u"]
    b = b + jnp.sin(a) * x["v"]
    return (a, b), {"a": a, "ab": a * b}


XS = {"u": jnp.linspace(-1.0, 1.0, N), "v": jnp.cos(jnp.arange(N, dtype=jnp.float32))}
INIT = (jnp.float32(0.5), jnp.float32(-1.0))


def assert_same(x, y):
    for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def finish(x):
    jax.block_until_ready(x)
    jax.effects_barrier()  # wait for the host callbacks
    return x


@pytest.fixture
def reports(monkeypatch):
    """Record the host reports (callbacks): the iteration each comes before."""
    calls = []
    original = progress._Monitor.report

    def counting(self, start):
        calls.append(int(start))
        return original(self, start)

    monkeypatch.setattr(progress._Monitor, "report", counting)
    return calls


def assert_once_per_batch(reports, every=10):
    """Reports start at 0, never repeat an iteration, and come at least every ``every``."""
    assert reports[0] == 0 and reports == sorted(set(reports))
    assert len(reports) <= N // every + 3
    assert max(np.diff(reports + [N])) <= every


def test_same_result_as_lax_scan_and_bar_on_stderr(capfd, reports):
    expected = jax.lax.scan(body, INIT, XS)
    on = finish(progress_scan(body, INIT, XS, desc="sampling", every=10))
    assert_same(on, expected)
    out, err = capfd.readouterr()
    assert "sampling" in err and f"{N}/{N}" in err and "100%" in err
    assert out == ""
    assert_once_per_batch(reports)
    count = len(reports)

    off = finish(progress_scan(body, INIT, XS, desc="sampling", enable=False))
    assert_same(off, expected)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert len(reports) == count  # no callback when off (a short scan)


def test_off_is_exactly_lax_scan():
    def run(enable):
        return progress_scan(body, INIT, XS, enable=enable)

    plain = str(jax.make_jaxpr(lambda: jax.lax.scan(body, INIT, XS))())
    assert str(jax.make_jaxpr(lambda: run(False))()) == plain
    assert "debug_callback" in str(jax.make_jaxpr(lambda: run(True))())


def test_inside_jit_twice_and_with_length_only(capfd, reports):
    f = jax.jit(lambda xs: progress_scan(body, INIT, xs, desc="jitted", every=10))
    expected = jax.lax.scan(body, INIT, XS)
    assert_same(finish(f(XS)), expected)
    assert_same(finish(f(XS)), expected)  # a second call of the compiled run: a second bar
    err = capfd.readouterr().err
    assert err.count("jitted: 100%") >= 2
    second = reports.index(0, 1)  # each call reports from iteration 0 on
    assert_once_per_batch(reports[:second])
    assert_once_per_batch(reports[second:])

    def count(c, _):
        return c + 1, c

    g = jax.jit(lambda: progress_scan(count, 0, length=7, desc="len"))
    before = len(reports)
    assert_same(finish(g()), jax.lax.scan(count, 0, length=7))
    assert "len: 100%" in capfd.readouterr().err and reports[before] == 0


def test_under_vmap_one_bar_for_all_chains(capfd, reports):
    inits = (jnp.array([0.0, 0.5, 1.0]), jnp.array([1.0, -1.0, 2.0]))
    xs = jax.tree.map(lambda a: jnp.stack([a, 2 * a, -a]), XS)  # batched xs too

    def chain(init, xs):
        return progress_scan(body, init, xs, desc="chains", every=10)

    def chain_plain(init, xs):
        return jax.lax.scan(body, init, xs)

    out = finish(jax.jit(jax.vmap(chain))(inits, xs))
    assert_same(out, jax.vmap(chain_plain)(inits, xs))
    err = capfd.readouterr().err
    assert "chains: 100%" in err
    assert_once_per_batch(reports)  # once for the whole batch, not per chain


def test_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        progress_scan(body, INIT, XS, every=0)
    with pytest.raises(ValueError, match="length"):
        progress_scan(body, INIT, None)
    with pytest.raises(ValueError, match="length=5"):
        progress_scan(body, INIT, XS, length=5)


# --------------------------------------------------------------------------- combinators


def _combinators():
    """Each long-running combinator whose loop is a ``progress_scan``, its bar label, and the
    program it runs (small sizes: the check is the bar and the unchanged answer)."""
    from ppl import inference as infer
    from ppl import models as zoo

    def psi(t, x_prev, x, params):
        return x

    return {
        "smc": lambda bar: (infer.smc(16, progress_bar=bar), zoo.lgssm_1d),
        "rmsmc": lambda bar: (infer.rmsmc(8, progress_bar=bar), zoo.lgssm_1d_unknown_rho),
        "paris": lambda bar: (infer.paris(8, functional=psi, progress_bar=bar), zoo.lgssm_1d),
        "csmc": lambda bar: (infer.csmc(8, num_sweeps=6, num_warmup=2, progress_bar=bar),
                             zoo.lgssm_1d),
        "ppg": lambda bar: (infer.ppg(8, num_sweeps=4, num_warmup=1, functional=psi,
                                      progress_bar=bar), zoo.lgssm_1d),
        "particle_gibbs": lambda bar: (
            infer.particle_gibbs(8, num_samples=4, num_warmup=2, num_mcmc_steps=2,
                                 progress_bar=bar), zoo.lgssm_1d_unknown_rho),
    }


SLOW_BARS = ("particle_gibbs", "csmc", "rmsmc", "ppg")  # compile-heavy: smc and paris stay fast


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BARS else n
    for n in _combinators()
])
def test_combinator_progress_bar_reports_and_changes_nothing(name, capfd):
    """``progress_bar=True`` draws a bar labelled with the combinator's name on stderr from
    inside the jitted run; the draws for the same key are those without it."""
    make = _combinators()[name]
    ys = jnp.linspace(-1.0, 1.0, 8)
    key = jax.random.PRNGKey(0)
    algo, model = make(True)
    on = algo.run(key, model, ys)
    jax.effects_barrier()
    assert f"{name}: 100%" in capfd.readouterr().err
    plain, _ = make(False)
    off = plain.run(key, model, ys)
    assert not capfd.readouterr().err
    assert_same(on.samples, off.samples)
