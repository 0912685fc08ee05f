"""Progress bars for jitted loops: :func:`progress_scan`, a ``lax.scan`` that reports to tqdm.

A jitted loop runs on the device, so a bar cannot be updated from Python between
iterations. Instead the loop body calls back to the host with :func:`jax.debug.callback`,
carrying only the iteration number, and the host advances a tqdm bar (written to stderr).
This is the technique of NumPyro's ``numpyro.util.progress_bar_factory`` and BlackJAX's
``blackjax.progress_bar`` (after J. Coullon, "How to add a progress bar to JAX scans and
loops", 2021), rebuilt here on ``jax.debug.callback`` with these choices:

* Only every ``every``-th iteration (and the first and the last) calls back: the callback
  sits in a ``lax.cond`` whose predicate depends on the iteration counter alone, so the
  other iterations pay one integer comparison.
* The counter is a scanned ``arange`` that does not depend on the carry or on ``xs``.
  Under ``vmap`` (chains, replicate runs) it stays unbatched, so the ``cond`` stays a
  ``cond`` (a batched predicate would turn it into a ``select`` that runs the callback every
  iteration) and the callback fires *once per iteration for the whole batch*, not once per
  chain: the bar counts iterations of all chains together, as if it followed chain 0.
* ``ordered=False``: ordered effects are not allowed under ``vmap`` and would serialise the
  loop with the host. Callbacks may then arrive late or (across devices) repeatedly, so the
  host side only ever moves the bar *forward* to ``i + 1`` (repeated or out-of-order reports
  are harmless) and closes it when iteration ``length - 1`` reports.
* The bar is opened by the first report of a run (not at trace time), so a jitted function
  that is called many times shows one bar per call; ``jit`` caches are unaffected.

Under ``pmap`` / ``shard_map`` every device calls back; the forward-only update makes the
bar follow the most advanced device. In a sharded ``jit`` (one program over many devices,
:mod:`ppl.inference.sharding`) the callback runs once.
"""

from __future__ import annotations

import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["progress_scan"]


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


class _Bar:
    """Host side of one :func:`progress_scan` call site: a tqdm bar opened on the first
    report of a run, moved forward only, closed when the last iteration reports."""

    def __init__(self, length: int, desc: str):
        self.length = length
        self.desc = desc
        self.bar = None
        self.lock = threading.Lock()  # callbacks may arrive on several runtime threads

    def report(self, i):
        from tqdm.auto import tqdm

        done = int(i) + 1
        with self.lock:
            if self.bar is None:
                if done == self.length and self.length > 1:
                    return  # a repeated final report of a run already closed
                self.bar = tqdm(total=self.length, desc=self.desc, file=sys.stderr,
                                dynamic_ncols=True, leave=True)
            if done > self.bar.n:
                self.bar.update(done - self.bar.n)
            if done >= self.length:
                self.bar.close()
                self.bar = None


def progress_scan(body, init, xs=None, length=None, desc="", enable=True, every=None):
    """``jax.lax.scan(body, init, xs, length)`` with a tqdm progress bar on stderr.

    ``body(carry, x) -> (carry, y)`` as for ``lax.scan``; returns ``(final carry, stacked
    ys)``, exactly ``lax.scan``'s result. The bar (label ``desc``) advances every
    ``every`` iterations (default ``max(1, length // 20)``: about 20 updates), through
    :func:`jax.debug.callback` with ``ordered=False``, so it works inside ``jit``, under
    ``vmap`` (one bar for the whole batch: the counter is never batched, see the module
    notes) and nested in other loops. ``enable=False`` is exactly ``lax.scan`` (no callback
    is traced). The technique is NumPyro's / BlackJAX's (Coullon 2021).
    """
    if not enable:
        return jax.lax.scan(body, init, xs, length=length)
    n = _scan_length(xs, length)
    if every is None:
        every = max(1, n // 20)
    elif isinstance(every, bool) or int(every) != every or every < 1:
        raise ValueError(f"progress_scan: every must be a positive integer, got {every!r}")
    every = int(every)
    bar = _Bar(n, desc)

    def report(i):
        jax.debug.callback(bar.report, i, ordered=False)
        return None

    def wrapped(carry, step):
        i, x = step
        carry, y = body(carry, x)
        fire = (i == 0) | ((i + 1) % every == 0) | (i == n - 1)
        jax.lax.cond(fire, report, lambda i: None, i)
        return carry, y

    return jax.lax.scan(wrapped, init, (jnp.arange(n, dtype=jnp.int32), xs), length=n)
