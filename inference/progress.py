"""Long jitted loops that report and can be interrupted: :func:`progress_scan`, a
``lax.scan`` that reports to a tqdm bar and checks for Ctrl-C, and :func:`run_interruptibly`,
which turns Ctrl-C during a run into ``KeyboardInterrupt`` (with the memory check of
:mod:`ppl.inference.memory`, :func:`guarded_run`: what every combinator's ``.run`` calls).

A jitted loop runs inside XLA, so neither a bar nor Python's SIGINT handler can act between
iterations. Both go through *host callbacks* (the technique of NumPyro's
``numpyro.util.progress_bar_factory`` and BlackJAX's ``blackjax.progress_bar``, after J.
Coullon, "How to add a progress bar to JAX scans and loops", 2021), rebuilt here because a
host callback is dear (0.1 to 0.3 ms on CPU, measured) and iterations range from a
microsecond to seconds, so reports must come by the clock, not by a fixed count, and cost
nothing in between:

* **Chunks.** The ``n`` iterations run as an outer ``lax.scan`` over chunks of ``k <= 16``
  iterations, each an inner ``lax.scan`` of the user's body (a remainder of ``n mod k``
  iterations runs after them; when the stacked outputs are big, ``k`` divides ``n`` so
  that nothing is concatenated). The inner loops are plain scans; only between chunks
  does a ``lax.cond`` ask whether to call the host. (A ``cond`` in every iteration, the
  previous design, costs about 2 us per iteration on CPU: it splits the loop body.)
* **Reports by the clock.** The host callback (a :func:`jax.pure_callback`) returns the
  iteration before which to call it next, chosen from the measured speed so that reports
  come about every :data:`REPORT_INTERVAL` seconds (the stride grows at most 16-fold per
  report, and is remembered for the next run of the same call site). The first chunk
  reports at once, so the bar appears when sampling starts. One
  :func:`jax.debug.callback` after the loop consumes the last answer, which keeps the
  chain of reports alive (``pure_callback`` results that no effect consumes are dead
  code), and closes the bar. Both callbacks are allowed under ``vmap``, inside a vmapped
  ``cond`` and under ``grad`` (an ``io_callback`` is refused in a vmapped ``cond``).
* **One report per batch.** The chunk counter is a scanned ``arange`` that depends on
  neither carry nor ``xs``, so under ``vmap`` (chains, replicate runs) it stays unbatched,
  the ``cond`` stays a ``cond``, and the callback fires once for the whole batch: the bar
  counts iterations of all chains together. Under ``pmap`` / ``shard_map`` every device
  calls back; the bar only ever moves forward, so it follows the most advanced device.
* **Interrupts.** While a run is wrapped by :func:`run_interruptibly`, Ctrl-C sets a flag
  that every report reads (through the signal wake-up pipe, so also while the main thread
  is inside XLA and the callbacks run on the runtime's threads); the report then raises
  :class:`RunInterrupted`, which aborts the XLA computation, and the wrapper raises
  ``KeyboardInterrupt``. A SIGINT handled in ordinary Python code (tracing, waiting for an
  asynchronous result) raises ``KeyboardInterrupt`` there as usual. So Ctrl-C stops a run
  within about ``REPORT_INTERVAL`` plus one chunk, or, if it came during XLA's
  compilation, at the run's first report.
* **Without a bar** a scan still checks for interrupts when it is long enough to matter:
  ``n >= CHECK_MIN_LENGTH`` iterations or a carry of ``CHECK_MIN_CARRY_BYTES`` or more (a
  big particle system: few but slow steps), unless it is nested in the body of a checked
  scan (the particle filter inside each PMMH iteration: the outer chain checks). Other
  scans are exactly ``lax.scan``.

Measured cost (the jitted core of trace MH, 201,000 iterations of a one-site model, CPU,
two shared cores, medians of 25 interleaved runs): plain ``lax.scan`` 1.184 s; checks
without a bar -2.8%; with the bar -0.4%; the previous per-iteration ``cond`` bar +2.3%.
The spread between repetitions of the whole comparison was about 10%, so the cost is below
what this machine can resolve; per run it is two host callbacks plus about four a second,
at 0.1 ms each. Results are ``lax.scan``'s, also under ``vmap``, ``grad``, a vmapped
``cond`` and sharding (``tests/test_interrupt.py``, ``tests/test_progress.py``).

Limits: a run whose scans are all short (no report) stops only when it ends; a SIGINT
during XLA's compilation takes effect when the compiler returns; on an accelerator, a
computation that does not reach a report within :data:`STOP_GRACE` seconds of Ctrl-C is
left to finish in the background after ``KeyboardInterrupt``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from ppl.inference.memory import itemsize

__all__ = ["RunInterrupted", "guarded_run", "progress_scan", "run_interruptibly"]

#: Seconds between two host reports of a running scan (the bar's refresh, and the delay
#: before a pending Ctrl-C is seen).
REPORT_INTERVAL = 0.25
#: Most iterations in one chunk (the plain inner scan between two chances to report).
MAX_CHUNK = 16
#: Without a bar, a scan this long or longer checks for interrupts ...
CHECK_MIN_LENGTH = 128
#: ... and so does a shorter one (of 2 iterations or more) whose carry has this many bytes.
CHECK_MIN_CARRY_BYTES = 1 << 20
#: The outputs of the chunks and of the remainder are concatenated only below this size;
#: above it the chunk length is chosen to divide ``n`` (no remainder, no copy).
MAX_CONCAT_BYTES = 1 << 26


class RunInterrupted(Exception):
    """Raised inside a host callback to abort a running computation after Ctrl-C;
    :func:`run_interruptibly` turns it into ``KeyboardInterrupt``."""


#: Set by the SIGINT handler of :func:`run_interruptibly`; seen by every host report.
_INTERRUPT = threading.Event()
#: Nesting depth of :func:`run_interruptibly` (only the outermost call handles SIGINT).
_DEPTH = [0]
#: The read end of the signal wake-up pipe of the running :func:`run_interruptibly` and the
#: wake-up fd it replaced (bytes read are passed on to it); see :func:`_interrupted`.
_WAKEUP = [None, -1]
#: Monitors with an open bar (closed when a run is interrupted or fails).
_OPEN = weakref.WeakSet()


class _QuietInterrupt(logging.Filter):
    """JAX logs every exception raised in a callback with its traceback; an interrupt is
    not an error worth a traceback."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, RunInterrupted)


logging.getLogger("jax._src.callback").addFilter(_QuietInterrupt())


def _scan_length(xs, length):
    """The static number of iterations, from ``length`` or the leading axis of ``xs``."""
    sizes = {np.shape(leaf)[0] for leaf in jax.tree.leaves(xs) if np.ndim(leaf) > 0}
    if any(np.ndim(leaf) == 0 for leaf in jax.tree.leaves(xs)):
        raise ValueError("progress_scan: every leaf of xs needs a leading (scanned) axis")
    if len(sizes) > 1:
        raise ValueError(f"progress_scan: xs leaves have different leading sizes {sorted(sizes)}")
    if length is None:
        if not sizes:
            raise ValueError("progress_scan: give length= when xs is None")
        return int(next(iter(sizes)))
    length = int(length)
    if sizes and sizes != {length}:
        raise ValueError(
            f"progress_scan: length={length} but xs has leading size {next(iter(sizes))}"
        )
    return length


def _nbytes(tree) -> int:
    """Bytes of the array leaves of ``tree`` (concrete, traced or ``ShapeDtypeStruct``)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape, dtype = np.shape(leaf), getattr(leaf, "dtype", None)
        if dtype is None:
            dtype = np.result_type(leaf)
        total += int(np.prod(shape, dtype=np.int64)) * itemsize(dtype)
    return total


def _chunk_length(n: int) -> int:
    """Iterations per chunk: up to :data:`MAX_CHUNK`, fewer for short scans so that there
    are at least 256 chances to report (a scan of a few hundred slow steps)."""
    return max(1, min(MAX_CHUNK, n // 256))


def _divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is at most ``k``."""
    return next(d for d in range(min(k, n), 0, -1) if n % d == 0)


class _Monitor:
    """Host side of one :func:`progress_scan` call site: times the run, chooses when the
    next report comes, raises :class:`RunInterrupted` after Ctrl-C, and (with ``show``)
    keeps a tqdm bar opened at the first report of a run, moved forward only, closed by the
    final report."""

    def __init__(self, length: int, chunk: int, desc: str, show: bool, every):
        self.length = length
        self.chunk = chunk
        self.desc = desc
        self.show = show
        self.cap = length if every is None else max(every, 1)
        self.bar = None
        self.time = None  # time of the last report of the current run (None: no run)
        self.done = 0  # iterations done at the last report
        # iterations until the next report; kept from one run to the next of this call
        # site, so a repeated short run asks the host once (at its start)
        self.stride = chunk
        self.lock = threading.Lock()  # callbacks may arrive on several runtime threads

    def report(self, start):
        """A report before iteration ``start``: returns the iteration before which the
        next report comes (at least one chunk later, about REPORT_INTERVAL seconds)."""
        if _interrupted():
            raise RunInterrupted("interrupted (Ctrl-C)")
        start = int(np.ravel(start)[0])
        now = time.perf_counter()
        with self.lock:
            if self.time is None or (start == 0 and self.done > 0):  # a new run
                self.close()
                self.time, self.done = now, start
                if self.show:
                    from tqdm.auto import tqdm

                    self.bar = tqdm(total=self.length, desc=self.desc, file=sys.stderr,
                                    dynamic_ncols=True, leave=True, miniters=1)
                    _OPEN.add(self)
            elif start > self.done:  # repeated or out-of-order reports (devices) are skipped
                rate = (start - self.done) / max(now - self.time, 1e-9)
                self.stride = int(min(max(rate * REPORT_INTERVAL, self.chunk),
                                      16 * self.stride, self.cap))
                self.time, self.done = now, start
            if self.bar is not None and start > self.bar.n:
                self.bar.update(start - self.bar.n)
            return np.int32(min(start + self.stride, self.length))

    def finish(self, _):
        """The final report (it also keeps the chain of reports alive: see the module
        notes): the bar to ``length`` and closed; the run is over."""
        with self.lock:
            if self.bar is not None and self.length > self.bar.n:
                self.bar.update(self.length - self.bar.n)
            self.close()

    def close(self):
        """Close the bar (if any) and end the current run."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.time, self.done = None, 0
        _OPEN.discard(self)


#: Depth of checked scans whose body is being traced in this thread: a scan nested in one
#: needs no checks of its own (the outer one checks between its iterations).
_NESTING = threading.local()


def _nested() -> bool:
    return getattr(_NESTING, "depth", 0) > 0


def _traced_inside(scan, *args, **kwargs):
    _NESTING.depth = getattr(_NESTING, "depth", 0) + 1
    try:
        return scan(*args, **kwargs)
    finally:
        _NESTING.depth -= 1


def _chunked_scan(body, init, xs, n, k, monitor, concat_limit):
    """``lax.scan(body, init, xs, length=n)`` as ``n // k`` chunks of ``k`` iterations
    (a report may come before each chunk) and a remainder of ``n % k`` iterations. Returns
    None instead when the remainder's outputs would have to be concatenated to stacked
    outputs larger than ``concat_limit`` bytes."""
    m, r = divmod(n, k)
    head = jax.tree.map(lambda x: x[: m * k].reshape(m, k, *x.shape[1:]), xs)
    out = jax.ShapeDtypeStruct((), jnp.int32)

    def ask(start, _):
        return jax.pure_callback(monitor.report, out, start, vmap_method="sequential")

    def chunk(carry, step):
        carry, nxt = carry
        j, x = step
        start = j * k
        nxt = jax.lax.cond(start >= nxt, ask, lambda s, n: n, start, nxt)
        carry, y = _traced_inside(jax.lax.scan, body, carry, x, length=k)
        return (carry, nxt), y

    (carry, nxt), ys = jax.lax.scan(
        chunk, (init, jnp.int32(0)), (jnp.arange(m, dtype=jnp.int32), head), length=m
    )
    ys = jax.tree.map(lambda y: y.reshape(m * k, *y.shape[2:]), ys)
    if r:
        if _nbytes(ys) > concat_limit:
            return None
        tail = jax.tree.map(lambda x: x[m * k:], xs)
        carry, ys_tail = _traced_inside(jax.lax.scan, body, carry, tail, length=r)
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, ys_tail)
    # the one effect that keeps the reports alive (a pure_callback whose answers are
    # never consumed by an effect would be dead code), and the bar's last update
    jax.debug.callback(monitor.finish, nxt, ordered=False)
    return carry, ys


def progress_scan(body, init, xs=None, length=None, desc="", enable=True, every=None):
    """``jax.lax.scan(body, init, xs, length)`` with a tqdm progress bar on stderr and
    Ctrl-C checks (see the module notes).

    ``body(carry, x) -> (carry, y)`` as for ``lax.scan``; returns ``(final carry, stacked
    ys)``, exactly ``lax.scan``'s result. With ``enable`` a bar (label ``desc``) opens when
    the first iteration starts and moves about every :data:`REPORT_INTERVAL` seconds (and at
    least every ``every`` iterations when given), through host callbacks that work inside
    ``jit``, under ``vmap`` (one bar for the whole batch) and nested in other loops. Every
    report also stops the run if Ctrl-C was pressed under :func:`run_interruptibly`.
    ``enable=False`` reports nothing but still checks for Ctrl-C in long scans (``length >=
    CHECK_MIN_LENGTH`` or a carry of at least ``CHECK_MIN_CARRY_BYTES``) that are not
    nested in the body of a checked scan; any other is exactly ``lax.scan``. The technique
    is NumPyro's / BlackJAX's (Coullon 2021).
    """
    n = _scan_length(xs, length)
    if every is not None and (isinstance(every, bool) or int(every) != every or every < 1):
        raise ValueError(f"progress_scan: every must be a positive integer, got {every!r}")
    long_enough = n >= CHECK_MIN_LENGTH or (n >= 2 and _nbytes(init) >= CHECK_MIN_CARRY_BYTES)
    checked = n >= 1 and (enable or (long_enough and not _nested()))
    if not checked:
        return jax.lax.scan(body, init, xs, length=length)
    k = _chunk_length(n)
    divisor = _divisor_at_most(n, k)
    if 2 * divisor >= k:
        k = divisor  # no remainder
    monitor = _Monitor(n, k, desc, bool(enable), None if every is None else int(every))
    result = _chunked_scan(body, init, xs, n, k, monitor, MAX_CONCAT_BYTES)
    if result is None:  # big stacked outputs: no remainder, so no concatenation
        k = divisor
        monitor = _Monitor(n, k, desc, bool(enable), None if every is None else int(every))
        result = _chunked_scan(body, init, xs, n, k, monitor, float("inf"))
    return result


# --------------------------------------------------------------------------- Ctrl-C

#: Modules whose frames on the stack make the SIGINT handler only set the flag: JAX's host
#: callbacks (a KeyboardInterrupt raised there is lost: the run went on) and XLA's
#: compilation (a KeyboardInterrupt raised as the compiler returns has crashed the
#: interpreter at exit with SIGSEGV); the run then stops at its first report.
_DEFER_MODULES = frozenset({"jax._src.callback", "jax._src.debugging", "jax._src.compiler"})
#: Seconds to let a computation that is still running (asynchronous dispatch) reach its
#: next report and stop, after Ctrl-C, before ``KeyboardInterrupt`` is raised anyway.
STOP_GRACE = 5.0


def _interrupted() -> bool:
    """Whether Ctrl-C was pressed during the current :func:`run_interruptibly`.

    Python runs a signal handler only in the main thread, between bytecodes; while XLA
    runs a computation the main thread is often inside that C++ call, and the host
    callbacks run on the runtime's threads. So the C-level part of Python's signal handling
    is used too: it writes the signal number to the wake-up fd
    (:func:`signal.set_wakeup_fd`) at once, whatever the main thread is doing, and every
    report reads that pipe (one non-blocking read)."""
    if _INTERRUPT.is_set():
        return True
    fd, forward = _WAKEUP
    if fd is None:
        return False
    try:
        data = os.read(fd, 512)
    except OSError:  # nothing pending (BlockingIOError), or the run just ended
        return False
    if forward >= 0:
        try:
            os.write(forward, data)  # the replaced wake-up fd still hears of its signals
        except OSError:
            pass
    if int(signal.SIGINT) in data:
        _INTERRUPT.set()
    return _INTERRUPT.is_set()


_CALLBACK_CODES = frozenset({_Monitor.report.__code__, _Monitor.finish.__code__})


def _defer(frame) -> bool:
    """Whether a SIGINT handler running in ``frame`` must not raise (see _DEFER_MODULES)."""
    while frame is not None:
        if (frame.f_globals.get("__name__") in _DEFER_MODULES
                or frame.f_code in _CALLBACK_CODES):
            return True
        frame = frame.f_back
    return False


def _arrays(out):
    return [x for x in jax.tree.leaves(out)
            if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)]


def _wait(arrays, timeout=None):
    """Wait for ``arrays`` without blocking signal handling, then block on them (raising
    the computation's error, if any). With ``timeout``, give up quietly.

    A helper thread blocks on the arrays and sets an event; the main thread waits on the
    event, a lock acquisition that a signal interrupts (POSIX), so a SIGINT handler runs at
    once, as it does in a ``sleep``. Unlike polling with sleeps, the wait ends as soon as
    the run does (a doubling sleep could add up to the run's own duration) and takes no
    CPU from the run."""
    try:
        ready = all(x.is_ready() for x in arrays)
    except RuntimeError:  # a deleted (donated) buffer: nothing to wait for
        return
    if not ready:
        done = threading.Event()

        def block():
            try:
                jax.block_until_ready(arrays)
            except Exception:  # noqa: BLE001  (the main thread blocks again: raised there)
                pass
            finally:
                done.set()

        threading.Thread(target=block, daemon=True, name="ppl-wait").start()
        if not done.wait(timeout):
            return
        try:
            all(x.is_ready() for x in arrays)
        except RuntimeError:  # deleted meanwhile
            return
    if timeout is None:
        jax.block_until_ready(arrays)


def run_interruptibly(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` (a jitted run), waited for, with Ctrl-C turned into a prompt
    ``KeyboardInterrupt``; the outputs are ready when it returns.

    For the duration of the call a SIGINT handler and a signal wake-up pipe are installed
    (in the main thread, when the current handler is a Python function: the default one,
    which raises ``KeyboardInterrupt``, or one of the caller's, which is called in turn).
    A SIGINT sets a flag that the next report of any :func:`progress_scan` sees (through
    the pipe, even while the main thread is inside XLA); the report raises
    :class:`RunInterrupted`, which aborts the computation, and this function raises
    ``KeyboardInterrupt`` in place of the runtime's error. Where the handler runs in
    ordinary Python code (tracing, waiting for an asynchronous result) it also calls the
    previous handler (``KeyboardInterrupt`` at once), and a computation still running
    asynchronously stops at its next report (waited for at most :data:`STOP_GRACE`
    seconds). A run with no report in it (scans shorter than ``CHECK_MIN_LENGTH``) stops
    when it ends, then raises. Nested calls, calls from other threads and calls under an
    ignored or default-action SIGINT are plain calls."""
    previous = signal.getsignal(signal.SIGINT)
    if (_DEPTH[0] or not callable(previous)
            or threading.current_thread() is not threading.main_thread()):
        return fn(*args, **kwargs)

    def handler(signum, frame):
        _INTERRUPT.set()
        if not _defer(frame):
            previous(signum, frame)

    _INTERRUPT.clear()
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.signal(signal.SIGINT, handler)
    try:
        forward = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not allowed here: the flag alone
        forward = None
    _WAKEUP[:] = [read_fd, -1 if forward is None else forward]
    _DEPTH[0] += 1
    out = None
    try:
        try:
            out = fn(*args, **kwargs)
            _wait(_arrays(out))
        except KeyboardInterrupt:
            _INTERRUPT.set()
            _wait(_arrays(out), timeout=STOP_GRACE)  # let a running computation stop
            _close_bars()
            raise KeyboardInterrupt("run interrupted (Ctrl-C)") from None
        except Exception as e:
            if not _interrupted():
                raise
            _close_bars()
            if "RunInterrupted" in str(e):  # our abort: the runtime's traceback says nothing
                raise KeyboardInterrupt("run interrupted (Ctrl-C)") from None
            raise KeyboardInterrupt("run interrupted (Ctrl-C)") from e
        if _interrupted():
            _close_bars()
            raise KeyboardInterrupt("run interrupted (Ctrl-C); it had no report to stop at")
        return out
    finally:
        _DEPTH[0] -= 1
        _WAKEUP[:] = [None, -1]
        if forward is not None:
            signal.set_wakeup_fd(forward)
        signal.signal(signal.SIGINT, previous)
        _INTERRUPT.clear()
        os.close(read_fd)
        os.close(write_fd)


def _close_bars():
    for monitor in list(_OPEN):
        monitor.close()


def guarded_run(fn, *args, what=None):
    """``fn(*args)``, a jitted run, as every combinator's ``.run`` calls it (through
    :class:`~ppl.inference.base.CompiledRuns`): first the memory estimate of
    :func:`ppl.inference.memory.check_memory` (its abstract trace is the one the run then
    reuses), then the run under :func:`run_interruptibly`. ``what`` (the combinator, or a
    bound method of it) names the run in the memory messages."""
    from ppl.inference.memory import check_memory

    what = getattr(what, "__self__", what)
    name = "this run" if what is None else what if isinstance(what, str) else repr(what)
    check_memory(fn, *args, what=name)
    return run_interruptibly(fn, *args)
