"""Cost of the MA-fBM weights inside a jitted training step (semantics/mafbm.py).

``mafbm_weights`` solves A omega = b on the host in float64 through ``jax.pure_callback``
(value and d omega/dH), once per ELBO step when the Hurst index is learned. This prints,
side by side in one run, the time of a jitted ``value_and_grad`` through the weights and
of the same step with a device float32 ``jnp.linalg.solve`` of a precomputed system
(which is what the callback avoids: it is inaccurate for large K, see the tests), and
their ratio.

    python benchmarks/bench_mafbm.py [--repeats 200]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from ppl.semantics import mafbm


def _time(fn, arg, repeats):
    jax.block_until_ready(fn(arg))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(arg))
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print(f"{'kind':>4} {'K':>3} {'callback (ms)':>14} {'f32 solve (ms)':>15} {'ratio':>7}")
    hs = np.linspace(0.05, 0.95, 181)
    for kind in mafbm.KINDS:
        for num_ou in (5, 10, 20):
            g = mafbm.geometric_speeds(num_ou, 20.0)
            g64 = np.asarray(g, np.float64)
            a32 = jnp.asarray(mafbm.matrix_a(g64, 1.0, kind), jnp.float32)
            table = jnp.asarray(mafbm.vector_b(hs, np.broadcast_to(g64, (181, num_ou)),
                                               np.ones(181), kind), jnp.float32)

            def loss_callback(h, g=g, kind=kind):
                return jnp.sum(mafbm.mafbm_weights(h, g, 1.0, kind) ** 2)

            def loss_device(h, a32=a32, table=table):
                b = jax.vmap(jnp.interp, (None, None, 1))(h, jnp.asarray(hs, jnp.float32),
                                                          table)
                return jnp.sum(jnp.linalg.solve(a32, b) ** 2)

            t_cb = _time(jax.jit(jax.value_and_grad(loss_callback)), jnp.float32(0.3),
                         args.repeats)
            t_dev = _time(jax.jit(jax.value_and_grad(loss_device)), jnp.float32(0.3),
                          args.repeats)
            print(f"{kind:>4} {num_ou:>3} {1e3 * t_cb:>14.3f} {1e3 * t_dev:>15.3f} "
                  f"{t_cb / t_dev:>7.1f}")


if __name__ == "__main__":
    main()
