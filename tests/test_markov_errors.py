"""Bad ``ppl.markov`` programs end in one named error under every combinator.

Every interpretation of a program (NumPyro's ``scan`` lowering for importance, mh, nuts,
svi; :class:`ppl.semantics.Sequential` stepping for smc and the particle smoothers;
enumeration for exact) runs a markov step through the same checks in ``ppl.markov``, so
the error, and its message, do not depend on the method. The matrix below is
``BAD_PROGRAMS x COMBINATORS``; add a combinator to ``COMBINATORS`` (tiny settings: every
error is raised while the program is traced, before anything is compiled) or a program to
``BAD_PROGRAMS`` to extend it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.semantics import Enumerated

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import DuplicateSiteError, PPLError, ShapeMismatchError, UnsupportedModelError

KEY = jax.random.PRNGKey(0)
T = 4
YS = jnp.array([-0.8, -0.2, 0.5, 1.1])
TRANS = jnp.array([[0.8, 0.2], [0.3, 0.7]])
MEANS = jnp.array([-1.0, 1.0])


def named(site):
    """A ``match=`` pattern for a message that names ``site`` in quotes."""
    return f"['\"]{re.escape(site)}['\"]"


# --------------------------------------------------------------------------- programs
#
# Two families, so that every combinator has one it accepts when the program is right:
# "gauss" (a random walk observed with noise, global scale "s": continuous) and "hmm" (a
# two-state HMM with a discrete global offset "s": exact enumerates it). A program is built
# by ``make(family, **bad)``: no keyword gives the correct program, one keyword one defect.


def gauss(col=False, dup=False, dup_global=False, carry_dtype=False, carry_shape=False,
          vector_data=False):
    def program(ys):
        s = ppl.sample("s", dist.HalfNormal(1.0))

        def step(c, y):
            prev = c[0] if carry_shape else c
            x = ppl.sample("s" if dup_global else "x", dist.Normal(prev, s))
            if dup:
                x = ppl.sample("x", dist.Normal(x, s))
            ppl.observe("y", dist.Normal(x, 0.5), y)
            if carry_dtype:
                return c + x  # init is int32
            if carry_shape:
                return jnp.stack([x, x, x])  # init has shape (2,)
            return x

        # jnp.int32(0), not 0: lax.scan lets a Python number's (weak) int become float
        init = jnp.int32(0) if carry_dtype else jnp.zeros(2) if carry_shape else 0.0
        return ppl.markov(step, init=init, xs=ys)

    return program


def hmm(col=False, dup=False, dup_global=False, carry_dtype=False, carry_shape=False,
        vector_data=False):
    def program(ys):
        s = ppl.sample("s", dist.Bernoulli(0.5))

        def step(c, y):
            prev = c[0] if carry_shape else c.astype(jnp.int32) if carry_dtype else c
            z = ppl.sample("s" if dup_global else "z", dist.Categorical(probs=TRANS[prev]))
            if dup:
                z = ppl.sample("z", dist.Categorical(probs=TRANS[z]))
            ppl.observe("y", dist.Normal(MEANS[z] + s, 0.5), y)
            if carry_shape:
                return jnp.stack([z, z, z])
            return z  # int32: init 0.0 (carry_dtype) is float32

        init = jnp.float32(0.0) if carry_dtype else jnp.zeros(2, jnp.int32) if carry_shape else 0
        return ppl.markov(step, init=init, xs=ys)

    return program


FAMILIES = {"gauss": gauss, "hmm": hmm}


class Bad(NamedTuple):
    defect: dict  # the keyword of the program factory that introduces the defect
    data: object  # the data the program is run on
    error: type
    match: dict  # family -> regex the message must match


BAD_PROGRAMS = {
    # (T, 1) data for a scalar observation per step: scan's stacking would broadcast (T, T)
    "column_data": Bad(
        {}, YS[:, None], ShapeMismatchError,
        {f: r"observe\('y'\).*data has shape \(1,\).*batch shape is \(\).*xs=ys of shape \(T,\)"
         for f in FAMILIES},
    ),
    # (T, 3) data, three observations per step of a scalar distribution, without a plate
    "vector_data": Bad(
        {}, jnp.tile(YS[:, None], (1, 3)), ShapeMismatchError,
        {f: r"observe\('y'\).*data has shape \(3,\).*expand\(\(3,\)\)" for f in FAMILIES},
    ),
    # T = 0
    "empty_xs": Bad(
        {}, jnp.zeros((0,)), ShapeMismatchError,
        {f: r"markov\(step 'step'\).*T = 0" for f in FAMILIES},
    ),
    # a step samples the same name twice
    "duplicate_in_step": Bad(
        {"dup": True}, YS, DuplicateSiteError,
        {"gauss": named("x") + ".*twice in one step", "hmm": named("z") + ".*twice in one step"},
    ),
    # a step site reuses the name of a global site
    "step_reuses_global_name": Bad(
        {"dup_global": True}, YS, DuplicateSiteError,
        {f: named("s") + ".*outside the step" for f in FAMILIES},
    ),
    # the step returns a carry of another dtype than init's
    "carry_dtype": Bad(
        {"carry_dtype": True}, YS, ShapeMismatchError,
        {"gauss": r"markov\(step 'step'\).*dtype.*from int32 to float32.*init=jnp.asarray\(0.0\)",
         "hmm": r"markov\(step 'step'\).*dtype.*from float32 to int32"},
    ),
    # the step returns a carry of another shape than init's
    "carry_shape": Bad(
        {"carry_shape": True}, YS, ShapeMismatchError,
        {f: r"markov\(step 'step'\).*shape.*from \(2,\) to \(3,\)" for f in FAMILIES},
    ),
}


# ------------------------------------------------------------------------ combinators


def _psi(t, x_prev, x, params):
    return x


class Combinator(NamedTuple):
    make: object  # () -> a configured combinator, tiny settings
    family: str = "gauss"  # the program family it runs
    refuses_markov: bool = False  # it rejects every markov program (static models only)


COMBINATORS = {
    "importance": Combinator(lambda: infer.importance(8)),
    "smc": Combinator(lambda: infer.smc(num_particles=8)),
    "rmsmc": Combinator(lambda: infer.rmsmc(num_particles=8)),
    "mh": Combinator(lambda: infer.mh(num_samples=2)),
    "nuts": Combinator(lambda: infer.nuts(num_samples=2, num_warmup=2)),
    "svi": Combinator(lambda: infer.svi(num_steps=2, num_samples=2)),
    "exact": Combinator(lambda: infer.exact(num_samples=2), family="hmm"),
    "paris": Combinator(lambda: infer.paris(num_particles=8, functional=_psi, fixed={"s": 1.0})),
    "ppg": Combinator(lambda: infer.ppg(num_particles=8, num_sweeps=2, num_warmup=1,
                                        functional=_psi, fixed={"s": 1.0})),
    "csmc": Combinator(lambda: infer.csmc(num_particles=8, num_sweeps=2, num_warmup=1,
                                          fixed={"s": 1.0})),
    "pmmh": Combinator(lambda: infer.pmmh(params=["s"], likelihood=infer.smc(num_particles=8),
                                          num_samples=2)),
    "tempered_smc": Combinator(lambda: infer.tempered_smc(num_particles=8, num_mcmc_steps=1),
                               refuses_markov=True),
}


@pytest.mark.parametrize("combinator", list(COMBINATORS))
@pytest.mark.parametrize("program", list(BAD_PROGRAMS))
def test_bad_markov_program_gets_one_named_error(program, combinator):
    bad, spec = BAD_PROGRAMS[program], COMBINATORS[combinator]
    model = FAMILIES[spec.family](**bad.defect)
    error, match = bad.error, bad.match[spec.family]
    if spec.refuses_markov and program != "empty_xs":  # T = 0 is refused at the call
        error, match = UnsupportedModelError, "markov"
    with pytest.raises(error, match=match) as info:
        spec.make().run(KEY, model, bad.data)
    assert isinstance(info.value, PPLError)


# ------------------------------------------------- the same checks, beyond the combinators


def test_length_zero_names_the_step():
    def model():
        def walk(c, x):
            return ppl.sample("x", dist.Normal(c, 1.0))

        return ppl.markov(walk, 0.0, length=0)

    for method in (infer.importance(4), infer.smc(num_particles=4), infer.nuts(2, num_warmup=2)):
        with pytest.raises(ShapeMismatchError, match=r"markov\(step 'walk'\).*T = 0"):
            method.run(KEY, model)


def test_empty_xs_in_a_pytree():
    def model(ys, mask):
        def step(c, ym):
            return ppl.sample("x", dist.Normal(c, 1.0))

        return ppl.markov(step, 0.0, xs=(ys, mask))

    with pytest.raises(ShapeMismatchError, match="T = 0"):
        infer.importance(4).run(KEY, model, jnp.zeros(0), jnp.zeros(0, bool))


def test_carry_float32_to_float64_under_x64(x64):
    def model(ys):
        def step(c, y):
            x = ppl.sample("x", dist.Normal(c, 1.0))  # float64 under x64
            ppl.observe("y", dist.Normal(x, 0.5), y)
            return x

        return ppl.markov(step, init=jnp.zeros((), jnp.float32), xs=ys)

    ys = jnp.asarray(np.asarray(YS), jnp.float64)
    for method in (infer.importance(4), infer.smc(num_particles=4), infer.nuts(2, num_warmup=2)):
        with pytest.raises(ShapeMismatchError, match="from float32 to float64"):
            method.run(KEY, model, ys)


def test_python_number_init_may_take_the_steps_dtype():
    """As in ``lax.scan``, a carry that starts from a Python number (weakly typed) may take
    the dtype type promotion gives it: ``init=0`` with a float step runs, also under the
    particle methods (whose carry is no longer weakly typed when the step runs)."""

    def model(ys):
        def step(c, y):
            x = ppl.sample("x", dist.Normal(c, 1.0))
            ppl.observe("y", dist.Normal(x, 0.5), y)
            return x

        return ppl.markov(step, init=0, xs=ys)

    for method in (infer.importance(4), infer.smc(num_particles=4)):
        assert np.isfinite(float(method.run(KEY, model, YS).log_evidence))


def test_checks_run_under_plain_numpyro_handlers():
    """The checks are in ``ppl.markov`` itself: a NumPyro user's ``trace``/``seed`` (no
    ppl representation on the stack) gets the named error, not a wrong log density or an
    ``AssertionError``."""
    import numpyro

    def run(program, data):
        return numpyro.handlers.trace(numpyro.handlers.seed(program, 0)).get_trace(data)

    with pytest.raises(ShapeMismatchError, match=r"\(1,\)"):
        run(gauss(), YS[:, None])
    with pytest.raises(DuplicateSiteError, match=named("x")):
        run(gauss(dup=True), YS)
    with pytest.raises(DuplicateSiteError, match=named("s")):
        run(gauss(dup_global=True), YS)
    with pytest.raises(ShapeMismatchError, match="dtype"):
        run(gauss(carry_dtype=True), YS)


# ------------------------------------------------------------- the correct programs run


@pytest.mark.parametrize("combinator", ["importance", "smc"])
def test_correct_program_runs(combinator):
    spec = COMBINATORS[combinator]
    post = spec.make().run(KEY, FAMILIES[spec.family](), YS)
    assert np.isfinite(float(post.log_evidence))


def column_hmm(ys):
    """The HMM on (T, 1) data, fixed as the error says: a plate of size 1 in the step."""
    s = ppl.sample("s", dist.Bernoulli(0.5))

    def step(c, y):
        z = ppl.sample("z", dist.Categorical(probs=TRANS[c]))
        with ppl.plate("k", 1):
            ppl.observe("y", dist.Normal(MEANS[z] + s, 0.5), y)
        return z

    return ppl.markov(step, init=0, xs=ys)


def test_column_data_under_a_plate_gives_the_exact_scalar_answer():
    """Exact log evidence (the enumeration ``infer.exact`` runs, without its marginals and
    draws, to keep the test short) on (T, 1) data under a plate equals that on (T,) data."""

    def log_evidence(model, ys):
        return float(jax.jit(lambda ys: Enumerated(model).log_evidence(ys))(ys))

    want = log_evidence(hmm(), YS)
    got = log_evidence(column_hmm, YS[:, None])
    assert np.isfinite(want) and got == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("to_event", [False, True])
def test_column_data_with_expand_gives_the_scalar_answer(to_event):
    """(T, 1) data scored by ``d.expand((1,))`` (or ``.to_event(1)``, as the error
    suggests) give importance sampling's answer on (T,) data: same key, same draws."""

    def column_gauss(ys):
        s = ppl.sample("s", dist.HalfNormal(1.0))

        def step(c, y):
            x = ppl.sample("x", dist.Normal(c, s))
            d = dist.Normal(x, 0.5).expand((1,))
            ppl.observe("y", d.to_event(1) if to_event else d, y)
            return x

        return ppl.markov(step, init=0.0, xs=ys)

    want = float(infer.importance(64).run(KEY, gauss(), YS).log_evidence)
    got = float(infer.importance(64).run(KEY, column_gauss, YS[:, None]).log_evidence)
    assert np.isfinite(want) and got == pytest.approx(want, abs=1e-4)
