"""Ctrl-C and progress of long runs (inference/progress.py: ``progress_scan``,
``run_interruptibly``; every ``.run`` goes through them via ``CompiledRuns``).

In child processes (a SIGINT must reach a real main thread, and a failure must not take
pytest down), three long runs start together: trace MH without a bar, SMC without a bar
(1e6 steps) and trace MH with a bar. Each child prints ``running`` just before ``.run``,
``compiled`` whenever XLA finishes compiling (``jax.monitoring``'s backend-compile event)
and ``sampling`` at the first host report of the run. Compilation is part of a run, and a
SIGINT that lands there can only be acted on when the compiler returns. SIGINT comes 1 s
after ``sampling`` (MH), 2 s after ``running`` (SMC: tracing, compiling or sampling,
whichever it is in) and 1 s after the bar shows (MH with a bar). Each child must exit with a
``KeyboardInterrupt`` traceback (non-zero code, ``finished`` never printed), within a few
seconds of the later of the SIGINT and the end of the last compilation (the runs would take
minutes; before this mechanism they ran to the end, or swallowed the interrupt). The bar
must be on stderr within 2 s of the end of compilation.

In process: the chunked scan computes exactly ``lax.scan``'s result (with a remainder,
with a remainder whose outputs are too big to concatenate, without a bar), works under
``vmap``, inside a vmapped ``cond``, under ``grad``; a SIGINT during a jitted run wrapped by
``run_interruptibly`` raises ``KeyboardInterrupt`` promptly and restores the handler.

Overhead: see the notes of inference/progress.py (below what a shared CPU can resolve).
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ppl.inference import progress
from ppl.inference.progress import progress_scan, run_interruptibly

PRELUDE = textwrap.dedent(
    """
    import sys, time
    import jax, jax.numpy as jnp

    def _compiled(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            print("compiled", flush=True)

    jax.monitoring.register_event_duration_secs_listener(_compiled)
    import ppl
    from ppl import dist, inference as infer
    from ppl import models as zoo

    @ppl.model
    def normal_mean(y):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.observe("y", dist.Normal(mu, 1.0), y)

    key = jax.random.PRNGKey(0)

    from ppl.inference import progress
    _report = progress._Monitor.report

    def report(self, start):
        if start == 0:
            print("sampling", flush=True)
        return _report(self, start)

    progress._Monitor.report = report
    """
)

RUNS = {
    # 20,000 x 500 MH steps: minutes
    "mh": "infer.mh(20_000, num_mcmc_steps=500).run(key, normal_mean, jnp.ones(3))",
    # 10^6 steps of 500 particles, no genealogy: a minute or more
    "smc": "infer.smc(500, history=False).run(key, zoo.lgssm_1d, "
           "jnp.sin(jnp.arange(1_000_000) / 10.0))",
    "mh_bar": "infer.mh(20_000, num_mcmc_steps=500, progress_bar=True).run(key, normal_mean, "
              "jnp.ones(3))",
}

#: when each child gets SIGINT: (stream, text, seconds after it)
TRIGGERS = {"mh": ("out", "sampling", 1.0), "smc": ("out", "running", 2.0),
            "mh_bar": ("err", "mh:", 1.0)}
STOP_WITHIN = 3.0  # seconds from max(SIGINT, end of compilation) to the KeyboardInterrupt
EXIT_WITHIN = 15.0  # seconds from the KeyboardInterrupt to the end of the process (teardown)
BAR_WITHIN = 2.0  # seconds after the end of compilation


class Child:
    """A child process running one long ``.run``; its output lines with arrival times."""

    def __init__(self, run, trigger):
        self.trigger = trigger
        script = PRELUDE + f'print("running", flush=True)\n{run}\nprint("finished", flush=True)\n'
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                        for s, lines in ((self.proc.stdout, self.out),
                                         (self.proc.stderr, self.err))]
        for r in self.readers:
            r.start()
        self.sigint = self.exited = None

    @staticmethod
    def _read(stream, lines):
        # raw reads, not readline: a tqdm bar rewrites its line with "\r", no newline
        while raw := os.read(stream.fileno(), 1 << 16):
            for part in raw.decode(errors="replace").replace("\r", "\n").split("\n"):
                if part.strip():
                    lines.append((time.monotonic(), part))

    def first(self, lines, text):
        return next((t for t, line in list(lines) if text in line), None)

    def stdout_text(self):
        return "\n".join(line for _, line in self.out)

    def stderr_text(self):
        return "\n".join(line for _, line in self.err)


def _drive(children, timeout=90.0):
    """Send each child SIGINT when its trigger line has been out for the trigger's delay;
    wait for all to end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(c.exited is None for c in children):
        now = time.monotonic()
        for c in children:
            stream, text, delay = c.trigger
            seen = c.first(c.out if stream == "out" else c.err, text)
            if c.sigint is None and seen is not None and now - seen >= delay:
                c.proc.send_signal(signal.SIGINT)
                c.sigint = time.monotonic()
            if c.exited is None and c.proc.poll() is not None:
                c.exited = time.monotonic()
        time.sleep(0.02)
    for c in children:
        if c.proc.poll() is None:
            c.proc.kill()
        c.proc.wait()
        for r in c.readers:
            r.join(timeout=5)


@pytest.fixture(scope="module")
def children():
    started = {name: Child(run, TRIGGERS[name]) for name, run in RUNS.items()}
    _drive(list(started.values()))
    return started


def _last_compile_before(child, t):
    times = [s for s, line in child.out if line == "compiled" and s <= t]
    return max(times) if times else None


@pytest.mark.parametrize("name", ["mh", "smc", "mh_bar"])
@pytest.mark.slow
def test_ctrl_c_stops_a_long_run_with_keyboard_interrupt(children, name):
    c = children[name]
    assert c.sigint is not None, f"never started: {c.stdout_text()} {c.stderr_text()[-2000:]}"
    assert c.exited is not None, "still running after SIGINT (killed)"
    assert c.proc.returncode != 0
    assert "KeyboardInterrupt" in c.stderr_text(), c.stderr_text()[-2000:]
    assert "finished" not in c.stdout_text()
    stopped = c.first(c.err, "KeyboardInterrupt")
    compiled = _last_compile_before(c, stopped)
    start = max(c.sigint, compiled or c.sigint)
    assert stopped - start < STOP_WITHIN, (
        f"KeyboardInterrupt {stopped - c.sigint:.1f} s after SIGINT, "
        f"{stopped - (compiled or c.sigint):.1f} s after the last compilation"
    )
    assert c.exited - stopped < EXIT_WITHIN  # nothing left running


@pytest.mark.slow
def test_progress_bar_appears_when_sampling_starts(children):
    c = children["mh_bar"]
    bar = c.first(c.err, "mh:")
    assert bar is not None, c.stderr_text()[-2000:]
    compiled = _last_compile_before(c, bar)
    assert compiled is not None
    assert bar - compiled < BAR_WITHIN, f"bar {bar - compiled:.1f} s after compilation"


# --------------------------------------------------------------------------- in process


def body(carry, x):
    a, b = carry
    a = 0.9 * a + x["u"]
    b = b + jnp.sin(a) * x["v"]
    return (a, b), {"a": a, "ab": a * b}


def xs_of(n):
    return {"u": jnp.linspace(-1.0, 1.0, n), "v": jnp.cos(jnp.arange(n, dtype=jnp.float32))}


INIT = (jnp.float32(0.5), jnp.float32(-1.0))


def assert_same(x, y):
    for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("n", [1, 130, 1031, 4096])
@pytest.mark.parametrize("enable", [False, True])
def test_chunked_scan_is_lax_scan(n, enable, monkeypatch):
    """Lengths with no remainder (4096 = 256 x 16), with one (1031 is prime: chunks of 4 and
    3 more), short; the bar on or off (off: checks from CHECK_MIN_LENGTH = 128 on)."""
    xs = xs_of(n)
    f = jax.jit(lambda xs: progress_scan(body, INIT, xs, enable=enable))
    assert_same(f(xs), jax.lax.scan(body, INIT, xs))
    jaxpr = str(jax.make_jaxpr(lambda xs: progress_scan(body, INIT, xs, enable=enable))(xs))
    assert ("pure_callback" in jaxpr) == (enable or n >= progress.CHECK_MIN_LENGTH)
    # outputs too big to concatenate: chunks that divide n (1031: chunks of 1)
    monkeypatch.setattr(progress, "MAX_CONCAT_BYTES", 0)
    g = jax.jit(lambda xs: progress_scan(body, INIT, xs, enable=True))
    assert_same(g(xs), jax.lax.scan(body, INIT, xs))
    jax.effects_barrier()


def test_vmap_cond_and_grad():
    """Under vmap (one report per batch), inside a vmapped cond (an io_callback would be
    refused there) and under grad (the callbacks carry integers only)."""
    n = 300
    xs = xs_of(n)

    def run(a0, xs):
        return progress_scan(body, (a0, jnp.float32(-1.0)), xs, enable=False)[0][1]

    a0 = jnp.array([0.1, 0.5, 0.9])
    plain = jax.vmap(lambda a: jax.lax.scan(body, (a, jnp.float32(-1.0)), xs)[0][1])(a0)
    np.testing.assert_array_equal(jax.jit(jax.vmap(lambda a: run(a, xs)))(a0), plain)
    in_cond = jax.jit(jax.vmap(lambda a: jax.lax.cond(a > 0.3, lambda: run(a, xs),
                                                        lambda: a)))(a0)
    np.testing.assert_array_equal(in_cond, jnp.where(a0 > 0.3, plain, a0))
    grad = jax.jit(jax.grad(lambda a: run(a, xs)))(0.5)
    expected = jax.grad(lambda a: jax.lax.scan(body, (a, jnp.float32(-1.0)), xs)[0][1])(0.5)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    jax.effects_barrier()


def test_sigint_during_a_wrapped_run_raises_keyboard_interrupt():
    """SIGINT (sent to this process) 0.5 s into a jitted 10^8-iteration scan: the run stops
    within a second or two and run_interruptibly raises KeyboardInterrupt; the SIGINT
    handler is restored and the flag cleared."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")

    def spin(c, _):
        return jnp.sin(c) * 1.0001 + 0.1, None

    f = jax.jit(lambda c: progress_scan(spin, c, length=100_000_000, enable=False)[0])
    f.lower(jnp.ones(4)).compile()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(f, jnp.ones(4))
    elapsed = time.monotonic() - start
    timer.join()
    assert elapsed < 3.0, f"stopped after {elapsed:.1f} s"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not progress._INTERRUPT.is_set()
    # an uninterrupted run returns its (ready) result
    out = run_interruptibly(jax.jit(lambda c: progress_scan(spin, c, length=1000)[0]),
                            jnp.ones(4))
    assert out.is_ready()


def test_scan_nested_in_a_checked_scan_has_no_checks_of_its_own():
    """A long scan inside the body of a checked one (the particle filter in each PMMH
    iteration) is a plain scan: one callback site in all, the outer one."""
    def inner(c, _):
        return c * 0.5 + 1.0, None

    def outer(c, _):
        c, _ = progress_scan(inner, c, length=200, enable=False)
        return c, c

    def run(c):
        return progress_scan(outer, c, length=300, enable=False)

    jaxpr = str(jax.make_jaxpr(run)(1.0))
    assert jaxpr.count("pure_callback[") == 1
    plain = jax.lax.scan(lambda c, _: (jax.lax.scan(inner, c, length=200)[0],) * 2, 1.0,
                         length=300)
    assert_same(jax.jit(run)(1.0), plain)
    jax.effects_barrier()
