"""The memory estimate before a run (inference/memory.py, called by every ``.run`` through
``CompiledRuns``).

``importance(10**12)`` and ``smc(10**9)`` are refused with :class:`ppl.errors.ResourceError`
(also a ``MemoryError`` and a ``PPLError``) in about the time of tracing, before anything is
compiled or allocated, and the message gives the size, the largest outputs and what to
change. A normal run does not warn. :func:`check_memory` warns above half of the available
memory and raises above all of it (the available memory patched small); the estimate is
the outputs' bytes, e.g. SMC with history keeps 20 T N bytes on the 1-D linear-Gaussian
model (the figure its docstring gives).
"""

import time
import warnings

import jax
import jax.numpy as jnp
import pytest
from ppl.inference import memory

import ppl
from ppl import dist
from ppl import inference as infer
from ppl import models as zoo
from ppl.errors import LargeRunWarning, PPLError, ResourceError


@ppl.model
def normal_mean(y):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.observe("y", dist.Normal(mu, 1.0), y)


KEY = jax.random.PRNGKey(0)


def test_huge_importance_is_refused_quickly():
    start = time.monotonic()
    with pytest.raises(ResourceError, match="cannot fit") as info:
        infer.importance(10**12).run(KEY, normal_mean, jnp.ones(3))
    assert time.monotonic() - start < 20  # traced, not compiled or allocated
    assert isinstance(info.value, MemoryError) and isinstance(info.value, PPLError)
    message = str(info.value)
    assert "importance(num_samples=1000000000000" in message
    assert "(1000000000000, 3)" in message and "fewer particles or samples" in message


def test_huge_smc_is_refused_and_names_history():
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), 100)
    with pytest.raises(ResourceError, match="history=False"):
        infer.smc(10**9).run(KEY, zoo.lgssm_1d, ys)


@pytest.mark.slow  # keeps the fast suite under 15 minutes; run with -m slow
def test_normal_runs_do_not_warn():
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LargeRunWarning)
        infer.importance(1000).run(KEY, normal_mean, jnp.ones(3))
        infer.smc(200).run(KEY, zoo.lgssm_1d, ys)
        infer.mh(500).run(KEY, normal_mean, jnp.ones(3))


def test_smc_history_is_20_TN_bytes_and_check_memory_thresholds(monkeypatch):
    T, N = 300, 400
    _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), T)
    runs = {h: jax.jit(lambda k, y, h=h: infer.smc(N, history=h).core(k, zoo.lgssm_1d, (y,), {}))
            for h in (True, False)}
    with_history = memory.output_bytes(jax.eval_shape(runs[True], KEY, ys))
    without = memory.output_bytes(jax.eval_shape(runs[False], KEY, ys))
    assert with_history == pytest.approx(20 * T * N, rel=0.01)
    assert without < 0.02 * with_history

    assert memory.available_memory()[0] > 0
    monkeypatch.setattr(memory, "available_memory", lambda: (int(1.5 * with_history), "test"))
    with pytest.warns(LargeRunWarning, match="history=False"):
        assert memory.check_memory(runs[True], KEY, ys) == with_history
    monkeypatch.setattr(memory, "available_memory", lambda: (with_history // 2, "test"))
    with pytest.raises(ResourceError, match=r"\.paths\['x'\] \(400, 300\)"):
        memory.check_memory(runs[True], KEY, ys)
