"""Every PRNG implementation: raw and typed keys of threefry2x32, rbg and unsafe_rbg.

``check_key`` turns any accepted key into a typed key, so every combinator (and NumPyro's
``seed``, which takes only typed keys and raw threefry keys) runs under any implementation:
a raw key made under ``jax_default_prng_impl="rbg"`` (shape (4,)) and the typed key
``jax.random.key(0, impl="rbg")`` give the same answer, twice. No module creates a key when
it is imported (such a key would have the implementation of import time).

The fast cells run the main families under ``rbg`` (raw and typed); every combinator under
``rbg`` and ``unsafe_rbg`` is ``slow`` (each costs a compilation).
"""

from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.inference.base import check_key
from test_bad_inputs import COMBINATORS, FAMILIES
from test_numpyro_examples import YS, ar_guide, ar_param_concrete

import ppl
from ppl import dist
from ppl import inference as infer
from ppl.errors import ArgumentTypeError

IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ check_key


@pytest.mark.parametrize("impl", IMPLS)
def test_typed_keys_of_every_implementation_are_accepted_as_they_are(impl):
    key = jax.random.key(3, impl=impl)
    out = check_key(key)
    assert jax.random.key_impl(out) == jax.random.key_impl(key)
    np.testing.assert_array_equal(jax.random.key_data(out), jax.random.key_data(key))


@pytest.mark.parametrize("impl", IMPLS)
def test_raw_keys_of_the_default_implementation_are_wrapped(impl):
    with jax.default_prng_impl(impl):
        raw = jax.random.PRNGKey(3)
        out = check_key(raw)
        assert jax.random.key_impl(out) == jax.random.key_impl(jax.random.key(0))
    np.testing.assert_array_equal(jax.random.key_data(out), raw)


def test_a_raw_key_of_another_implementation_names_the_fix():
    with jax.default_prng_impl("rbg"):
        raw = jax.random.PRNGKey(0)  # shape (4,)
    with pytest.raises(ArgumentTypeError, match=r"shape \(4,\).*jax.random.key\(0, impl="):
        check_key(raw)


def test_a_batch_of_typed_keys_is_refused():
    with pytest.raises(ArgumentTypeError, match=r"shape \(2,\).*keys\[0\]"):
        check_key(jax.random.split(jax.random.key(0)))


def _module_level_key_calls(path: pathlib.Path) -> list[str]:
    """``jax.random.<f>(...)`` / ``PRNGKey(...)`` calls evaluated when ``path`` is imported:
    in module-level statements, outside function and class-method bodies (default
    arguments and class attributes included)."""
    found = []

    def visit(node, top):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults = node.args.defaults + [d for d in node.args.kw_defaults if d]
            for d in defaults:
                visit(d, top)
            return
        if isinstance(node, ast.Call) and top:
            name = ast.unparse(node.func)
            if name.endswith(("PRNGKey", "random.key", "random.split", "wrap_key_data")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
        for child in ast.iter_child_nodes(node):
            visit(child, top)

    visit(ast.parse(path.read_text()), True)
    return found


def test_no_module_creates_a_key_at_import_time():
    files = [p for d in ("ppl", "inference", "semantics", "models") for p in (ROOT / d).glob(
        "*.py")]
    assert len(files) > 30
    found = [hit for p in files for hit in _module_level_key_calls(p)]
    assert not found, found


# ------------------------------------------------------------------ every combinator

#: name -> (make, program, data); the combinators of ``test_bad_inputs`` on their families'
#: good programs, and the learning and amortized ones.
CASES = {name: (spec.make, FAMILIES[spec.family].program, FAMILIES[spec.family].data)
         for name, spec in COMBINATORS.items()}
CASES.update({
    "score_ascent": (lambda: infer.score_ascent(num_particles=8, num_steps=3, fixed=None),
                     ar_param_concrete, YS),
    "score_climbing": (lambda: infer.score_climbing(ar_guide, num_particles=8, num_steps=3),
                       ar_param_concrete, YS),
    "particle_gibbs": (lambda: infer.particle_gibbs(num_particles=8, num_samples=3,
                                                    num_warmup=1),
                       FAMILIES["markov"].program, FAMILIES["markov"].data),
})
FAST = ("smc", *(pytest.param(n, marks=pytest.mark.slow) for n in ("nuts", "svi")))


def _values(post) -> dict:
    """Every array a result carries that the key decides."""
    out = {f"samples/{k}": v for k, v in post.samples.items()}
    if post.log_weights is not None:
        out["log_weights"] = post.log_weights
    if getattr(post, "estimate", None) is not None:
        out["estimate"] = post.estimate
    return {k: np.asarray(v) for k, v in out.items()}


def _same_answer(impl, name):
    make, program, data = CASES[name]
    with jax.default_prng_impl(impl):
        raw = jax.random.PRNGKey(0)
        first = _values(make().run(raw, program, data))
    typed = _values(make().run(jax.random.key(0, impl=impl), program, data))
    again = _values(make().run(jax.random.key(0, impl=impl), program, data))
    other = _values(make().run(jax.random.key(1, impl=impl), program, data))
    assert first.keys() == typed.keys() == again.keys()
    for k in first:
        np.testing.assert_array_equal(first[k], typed[k], err_msg=f"{name} {impl} raw vs typed")
        np.testing.assert_array_equal(typed[k], again[k], err_msg=f"{name} {impl} twice")
    if name != "exact":  # its 2 draws of 3 binary sites may coincide for two keys
        assert any(not np.array_equal(typed[k], other[k]) for k in typed), f"{name}: key ignored"


@pytest.mark.parametrize("name", FAST)
def test_main_combinators_under_rbg_raw_and_typed(name):
    _same_answer("rbg", name)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("impl", ("rbg", "unsafe_rbg"))
@pytest.mark.parametrize("name", [n for n in CASES])
def test_every_combinator_under_every_implementation(impl, name):
    _same_answer(impl, name)


def _coin(y):
    p = ppl.sample("p", dist.Beta(1.0, 1.0))
    with ppl.plate("n", y.shape[0]):
        ppl.observe("y", dist.Bernoulli(p), y)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ("rbg", "unsafe_rbg"))
def test_amortized_and_pfn_under_other_implementations(impl):
    key = jax.random.key(0, impl=impl)
    y = jnp.array([1.0, 0.0, 1.0])
    guide = infer.amortized(hidden=(8,), num_steps=3, batch_size=4).fit(key, _coin, y)
    post = infer.importance(8, proposal=guide.proposal).run(key, _coin, y)
    assert np.all(np.isfinite(np.asarray(post.log_weights)))
    net = infer.pfn(num_points=3, observed="y", target="p", num_buckets=10, width=8, depth=1,
                    heads=2, batch_size=4, progress_bar=False).fit(key, _coin, num_steps=2)
    assert net is not None


def test_results_resample_and_convert_with_typed_keys_of_any_implementation():
    post = infer.importance(16).run(jax.random.PRNGKey(0), FAMILIES["static"].program,
                                    FAMILIES["static"].data)
    for impl in IMPLS:
        key = jax.random.key(2, impl=impl)
        assert post.resample(key).samples["mu"].shape == (16,)
        assert post.to_arviz(key=key).posterior["mu"].shape == (1, 16)
