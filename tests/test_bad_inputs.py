"""A matrix of bad inputs against every combinator: each cell ends in a named
:class:`ppl.PPLError` subclass whose message names the argument or site at fault.

Rows are the combinators (``COMBINATORS``, tiny settings), columns the bad inputs (the
``test_*`` functions below, each parametrized over the rows). To cover a new combinator,
add one :class:`Combinator` line: the program family it runs, its count argument, its
numeric and option arguments, and the families it refuses. Every error here is raised
before anything heavy runs: at construction, at ``.run``'s argument checks, or while the
program is traced. Slow cells (marked ``slow``, ~5-7 s each on a CPU): the NaN-data cells
of mh, smc and rmsmc, which compile and run the tiny program (their check reads the
weights), and the smc run of the good markov program. The whole file takes ~30-40 s on a
shared 2-core machine.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import (
    ArgumentTypeError,
    DuplicateSiteError,
    InvalidArgumentError,
    NonFiniteWeightError,
    ObserveWithoutValueError,
    PPLError,
    ShapeMismatchError,
    TracedControlFlowError,
    UnknownOptionError,
    UnsupportedModelError,
)

KEY = jax.random.PRNGKey(0)


def named(site):
    """A ``match=`` pattern for a message that names ``site`` in quotes."""
    return f"['\"]{re.escape(site)}['\"]"


# --------------------------------------------------------------------------- programs
#
# One family per kind of program. ``family(data, **defect)``: no keyword is the correct
# program; ``branch`` adds ``if <site> > 0:`` on a sampled value, ``dup`` samples a site
# name twice, ``no_value`` observes ``None``.


def static(y, branch=False, dup=False, no_value=False):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    if dup:
        ppl.sample("mu", dist.Normal(0.0, 1.0))
    if branch:
        if mu > 0:
            mu = mu + 1.0
    with ppl.plate("n", 3):
        ppl.observe("y", dist.Normal(mu, 1.0), None if no_value else y)


def markov(ys, branch=False, dup=False, no_value=False):
    theta = ppl.sample("theta", dist.Uniform(0.1, 0.9))
    if dup:
        ppl.sample("theta", dist.Uniform(0.1, 0.9))

    def step(x, y):
        x = ppl.sample("x", dist.Normal(theta * x, 1.0))
        if branch:
            if x > 0:
                x = x + 1.0
        ppl.observe("y", dist.Normal(x, 1.0), None if no_value else y)
        return x

    return ppl.markov(step, jnp.zeros(()), xs=ys)


def discrete(y, branch=False, dup=False, no_value=False):
    z = ppl.sample("z", dist.Bernoulli(0.3))
    if dup:
        ppl.sample("z", dist.Bernoulli(0.3))
    if branch:
        if z == 1:
            z = 1 - z
    with ppl.plate("n", 3):
        ppl.observe("y", dist.Normal(2.0 * z, 1.0), None if no_value else y)


GRID = np.linspace(0.0, 1.0, 11)
OBS = np.array([5, 10])


def sde(y, branch=False, dup=False, no_value=False):
    x0 = ppl.sample("x0", dist.Normal(0.0, 1.0))
    if dup:
        ppl.sample("x0", dist.Normal(0.0, 1.0))
    if branch:
        if x0 > 0:
            x0 = -x0
    x = ppl.sde("x", lambda t, x, p: -x, lambda t, x, p: 1.0, x0, jnp.asarray(GRID))
    ppl.observe("y", dist.Normal(x[OBS], 0.5), None if no_value else y)


class Family(NamedTuple):
    program: object
    data: object  # good data
    wrong_shape: object  # data the program cannot observe (ShapeMismatchError)
    nan: object  # the good data with a NaN entry, no mask
    site: str  # the latent site ``branch`` branches on


FAMILIES = {
    "static": Family(static, np.array([0.1, -0.3, 0.4], np.float32),
                     np.zeros(4, np.float32), np.array([0.1, np.nan, 0.4], np.float32), "mu"),
    "markov": Family(markov, np.array([0.1, -0.3, 0.4], np.float32),
                     np.zeros((3, 2), np.float32), np.array([0.1, np.nan, 0.4], np.float32),
                     "x"),
    "discrete": Family(discrete, np.array([0.1, 1.3, 2.4], np.float32),
                       np.zeros(4, np.float32), np.array([0.1, np.nan, 2.4], np.float32),
                       "z"),
    "sde": Family(sde, np.array([0.3, 0.1], np.float32), np.zeros(3, np.float32),
                  np.array([0.3, np.nan], np.float32), "x0"),
}


# ------------------------------------------------------------------------ combinators


def _psi(t, x_prev, x, params):
    return x


#: What a combinator that reads a program step by step (``ppl.markov``) refuses.
MARKOV_ONLY = ("static", "discrete", "sde")


class Combinator(NamedTuple):
    make: object  # make(**options) -> a configured combinator (tiny settings)
    family: str  # the program family it runs
    count: str  # its count argument (checked for 0 and '10')
    numbers: tuple = ()  # numeric options: a string for them is refused
    options: tuple = ()  # options with a fixed set of values: 'bogus' is refused
    refuses: tuple = ()  # program families it raises UnsupportedModelError on


def _with(defaults):
    return lambda **options: defaults[0](**{**defaults[1], **options})


COMBINATORS = {
    "importance": Combinator(_with((infer.importance, {"num_samples": 8})), "static",
                             "num_samples"),
    "exact": Combinator(_with((infer.exact, {"num_samples": 2})), "discrete", "num_samples",
                        refuses=("static", "markov", "sde")),
    "smc": Combinator(_with((infer.smc, {"num_particles": 8})), "static", "num_particles",
                      numbers=("ess_threshold",), options=("resample",)),
    "rmsmc": Combinator(_with((infer.rmsmc, {"num_particles": 8})), "static", "num_particles",
                        numbers=("ess_threshold",), options=("resample", "regenerate")),
    "mh": Combinator(_with((infer.mh, {"num_samples": 2})), "static", "num_samples",
                     numbers=("step_size",), options=("proposal",)),
    "tempered_smc": Combinator(_with((infer.tempered_smc, {"num_particles": 8,
                                                           "num_mcmc_steps": 1,
                                                           "max_steps": 3})),
                               "static", "num_particles", numbers=("target_ess", "step_size"),
                               options=("move", "resample"), refuses=("markov", "discrete")),
    "nuts": Combinator(_with((infer.nuts, {"num_samples": 2, "num_warmup": 2})), "static",
                       "num_samples", numbers=("target_accept_prob",),
                       options=("chain_method",), refuses=("discrete",)),
    "hmc": Combinator(_with((infer.hmc, {"num_samples": 2, "num_warmup": 2, "num_steps": 2})),
                      "static", "num_samples", numbers=("step_size", "target_accept_prob"),
                      options=("chain_method",), refuses=("discrete",)),
    "svi": Combinator(_with((infer.svi, {"num_steps": 2, "num_samples": 2})), "static",
                      "num_steps", numbers=("learning_rate", "init_scale"), options=("guide",),
                      refuses=("discrete",)),
    "pmmh": Combinator(_with((infer.pmmh, {"params": ["theta"],
                                           "likelihood": infer.smc(num_particles=8),
                                           "num_samples": 2})),
                       "markov", "num_samples", numbers=("target_accept", "step_size"),
                       options=("proposal",), refuses=MARKOV_ONLY),
    "smc2": Combinator(_with((infer.smc2, {"params": ["theta"], "num_theta": 4,
                                           "likelihood": infer.smc(num_particles=4)})),
                       "markov", "num_theta", numbers=("ess_threshold", "scale"),
                       options=("resample",), refuses=MARKOV_ONLY),
    "csmc": Combinator(_with((infer.csmc, {"num_particles": 8, "num_sweeps": 2,
                                           "num_warmup": 1, "fixed": {"theta": 0.5}})),
                       "markov", "num_particles", options=("new_path",), refuses=MARKOV_ONLY),
    "paris": Combinator(_with((infer.paris, {"num_particles": 8, "functional": _psi,
                                             "fixed": {"theta": 0.5}})),
                        "markov", "num_particles", options=("backward", "resample"),
                        refuses=MARKOV_ONLY),
    "ppg": Combinator(_with((infer.ppg, {"num_particles": 8, "num_sweeps": 2, "num_warmup": 1,
                                         "functional": _psi, "fixed": {"theta": 0.5}})),
                      "markov", "num_particles", options=("backward",), refuses=MARKOV_ONLY),
    "vsde": Combinator(_with((infer.vsde, {"num_steps": 2, "num_paths": 2, "num_samples": 2,
                                           "control": "affine", "progress_bar": False})),
                       "sde", "num_steps", numbers=("learning_rate", "init_scale"),
                       options=("control", "bound"), refuses=("static", "markov", "discrete")),
}

NAMES = list(COMBINATORS)


def cells(attribute):
    """``(combinator, value)`` for every value of a tuple field of the combinators."""
    return [pytest.param(name, v, id=f"{name}-{v}")
            for name, spec in COMBINATORS.items() for v in getattr(spec, attribute)]


def run(name, defect=None, data="data", **options):
    """Run combinator ``name`` on its family's program with ``defect`` and ``data``."""
    spec = COMBINATORS[name]
    family = FAMILIES[spec.family]
    program = family.program
    if defect:
        def program(*args, _p=family.program, **kwargs):
            return _p(*args, **kwargs, **{defect: True})
    return spec.make(**options).run(KEY, program, getattr(family, data))


# ------------------------------------------------------------------ construction and keys


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key", [0, "key", None, np.zeros(2)], ids=["int", "str", "None",
                                                                     "float-array"])
def test_a_non_key_as_key(name, key):
    spec = COMBINATORS[name]
    family = FAMILIES[spec.family]
    with pytest.raises(ArgumentTypeError, match=r"jax\.random key.*PRNGKey"):
        spec.make().run(key, family.program, family.data)


@pytest.mark.parametrize("name", NAMES)
def test_count_of_zero(name):
    count = COMBINATORS[name].count
    with pytest.raises(InvalidArgumentError, match=rf"{count} must be >= 1, got 0"):
        COMBINATORS[name].make(**{count: 0})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["10", 10.0, True])
def test_count_that_is_not_an_int(name, bad):
    count = COMBINATORS[name].count
    with pytest.raises(ArgumentTypeError, match=rf"{count} must be an integer.*{count}=10"):
        COMBINATORS[name].make(**{count: bad})


@pytest.mark.parametrize(("name", "argument"), cells("numbers"))
def test_a_string_for_a_number(name, argument):
    with pytest.raises(ArgumentTypeError, match=rf"{argument} must be .*number.*'0\.5'"):
        COMBINATORS[name].make(**{argument: "0.5"})


@pytest.mark.parametrize(("name", "argument"), cells("numbers"))
@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_a_number_out_of_range(name, argument, bad):
    with pytest.raises(InvalidArgumentError, match=rf"{argument}"):
        COMBINATORS[name].make(**{argument: bad})


@pytest.mark.parametrize(("name", "argument"), cells("options"))
def test_an_unknown_option_value(name, argument):
    with pytest.raises(UnknownOptionError, match=rf"{argument}='bogus'"):
        COMBINATORS[name].make(**{argument: "bogus"})


def test_argument_errors_keep_their_builtin_bases():
    """``except ValueError`` / ``except TypeError`` written against the old errors still
    catch the new ones."""
    with pytest.raises(ValueError):
        infer.smc(num_particles=0)
    with pytest.raises(TypeError):
        infer.smc(num_particles="10")
    with pytest.raises(TypeError):
        infer.smc(10, ess_threshold="0.5")
    with pytest.raises(ValueError):
        infer.smc(10, ess_threshold="0.5")
    with pytest.raises(TypeError):
        infer.importance(8).run("not a key", static, FAMILIES["static"].data)
    assert issubclass(TracedControlFlowError, TypeError)
    assert issubclass(TracedControlFlowError, PPLError)


# ---------------------------------------------------------------- bad programs and data


@pytest.mark.parametrize("name", NAMES)
def test_python_branch_on_a_sampled_value(name):
    site = FAMILIES[COMBINATORS[name].family].site
    with pytest.raises(TracedControlFlowError, match=named(site)) as info:
        run(name, "branch")
    message = str(info.value)
    assert "jnp.where" in message and "lax.cond" in message
    assert f"if {'z == 1' if site == 'z' else site + ' > 0'}:" in message  # the user's line
    assert __file__ in message
    assert isinstance(info.value.__cause__, jax.errors.ConcretizationTypeError)


def test_python_loop_on_a_sampled_value_suggests_a_loop_combinator():
    def model():
        n = ppl.sample("n", dist.Poisson(3.0))
        total = 0.0
        while total < n:
            total = total + 1.0

    with pytest.raises(TracedControlFlowError, match=named("n")) as info:
        infer.importance(4).run(KEY, model)
    assert "fori_loop" in str(info.value) and "ppl.markov" in str(info.value)


def _numpy_on_a_site():
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.deterministic("e", np.exp(mu))


def _mask_from_a_site():
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0), sample_shape=(3,))
    ppl.deterministic("pos", mu[mu > 0])


@pytest.mark.parametrize(("model", "fragment"), [
    (_numpy_on_a_site, r"numpy on a traced value.*'mu'"),
    (_mask_from_a_site, r"boolean-mask indexing.*'mu'"),
], ids=["numpy", "mask"])
def test_other_concrete_uses_of_a_sampled_value(model, fragment):
    with pytest.raises(TracedControlFlowError, match=fragment) as info:
        infer.importance(4).run(KEY, model)
    assert "jnp" in str(info.value)


def test_branch_on_data_computed_with_jnp_says_no_site_is_involved():
    def model(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        if jnp.max(y) > 0:  # traced inside the run even on concrete data
            mu = mu + 1.0
        with ppl.plate("n", 3):
            ppl.observe("y", dist.Normal(mu, 1.0), y)

    with pytest.raises(TracedControlFlowError, match="no sampled site.*numpy"):
        infer.importance(4).run(KEY, model, jnp.zeros(3))


@pytest.mark.parametrize("name", NAMES)
def test_observe_without_a_value(name):
    with pytest.raises(ObserveWithoutValueError, match=named("y")):
        run(name, "no_value")


@pytest.mark.parametrize("name", NAMES)
def test_a_site_name_used_twice(name):
    family = FAMILIES[COMBINATORS[name].family]
    site = {"markov": "theta"}.get(COMBINATORS[name].family, family.site)
    with pytest.raises(DuplicateSiteError, match=named(site)):
        run(name, "dup")


@pytest.mark.parametrize("name", NAMES)
def test_data_of_the_wrong_shape(name):
    with pytest.raises(ShapeMismatchError, match=named("y")):
        run(name, data="wrong_shape")


#: NaN cells that compile and run a particle or MCMC program (15-30 s each on a CPU):
#: marked slow.
SLOW_NAN = {"mh", "smc", "rmsmc"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW_NAN else n for n in NAMES
])
def test_nan_data_without_a_mask(name):
    """NaN data in a static program without ``mask=``: the error names the site and
    suggests the mask (found in an eager pass over the concrete data, or, for mh, smc and
    rmsmc, from the weights of a run: slow)."""
    if COMBINATORS[name].family == "markov":
        pytest.skip("a static-program cell; this combinator takes markov programs only")
    with pytest.raises(NonFiniteWeightError, match=rf"{named('y')}.*mask"):
        run(name, data="nan")


@pytest.mark.parametrize(("name", "family"), [
    pytest.param(n, f, id=f"{n}-{f}") for n, s in COMBINATORS.items() for f in s.refuses
])
def test_a_program_kind_the_combinator_does_not_handle(name, family):
    if COMBINATORS[name].refuses == MARKOV_ONLY:
        what = "ppl.markov"
    elif family == "discrete":
        what = named("z")  # the discrete site
    elif name == "exact":
        what = named(FAMILIES[family].site if family != "markov" else "theta")
    elif name == "vsde":
        what = "ppl.sde"
    else:
        what = "markov"
    with pytest.raises(UnsupportedModelError, match=what):
        COMBINATORS[name].make().run(KEY, FAMILIES[family].program, FAMILIES[family].data)


# ------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("name", [
    "importance", pytest.param("smc", marks=pytest.mark.slow), "exact",
])
def test_the_good_programs_run(name):
    """The correct program of a family runs (so the cells above fail for their defect,
    not for the setup): one combinator per family here, to stay fast (smc on the markov
    family compiles a particle filter: slow)."""
    spec = COMBINATORS[name]
    family = FAMILIES[spec.family]
    spec.make().run(KEY, family.program, family.data)
