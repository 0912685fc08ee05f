"""What a kept draw of ``mh`` costs on a long sequence: the jitted core of
``mh(num_samples=2000)`` on the 3-state discrete HMM at T = 100 and T = 1000, with parts of
the per-draw record replaced by scalars, and a bare ``lax.scan`` writing the same
2000 x T path and log-likelihood (the floor for the writes themselves).

A diagnosis of the T = 1000 / T = 100 ratio in benchmarks/README.md ("Local MH moves"):
run it under the default allocator and under ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` to
see how much of the record's cost is the first touch of fresh pages. The variants
replace ``ppl.inference.trace_mh._sites`` (what a kept draw records) for the length of
this script only; their draws are not a valid MH output.

    python benchmarks/bench_mh_record.py              # best of 31 interleaved calls
    python benchmarks/bench_mh_record.py --repeats 21
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from ppl.inference import trace_mh

from ppl import inference as infer
from ppl import models as zoo

NUM_SAMPLES = 2000
FULL = trace_mh._sites


def record_without(ll=True, path=True, sums=True):
    """A ``_sites`` that keeps what is flagged True and puts a scalar in place of the rest
    (``sums=False`` also drops the T-long sums of ``site_log_probs`` and ``log_joint``)."""

    def sites(trace):
        out = FULL(trace)
        if not ll:
            out["log_likelihood"] = {n: jnp.zeros(()) for n in out["log_likelihood"]}
        if not path:
            out["values"] = {n: v[..., 0] for n, v in out["values"].items()}
        if not sums:
            out["site_log_probs"] = {n: trace.log_probs[n][0] for n in out["site_log_probs"]}
            out["log_joint"] = next(iter(out["site_log_probs"].values()))
        return out

    return sites


VARIANTS = {
    "everything (as mh does)": FULL,
    "no pointwise log-likelihood": record_without(ll=False),
    "no path": record_without(path=False),
    "neither, nor any sum over T": record_without(ll=False, path=False, sums=False),
}


def bare_writes(T):
    """A ``lax.scan`` of NUM_SAMPLES iterations writing an int32 and a float32 row of
    length T into carried buffers (one entry of the row changed per iteration)."""

    def run(key):
        row = jax.random.normal(key, (T,))

        def body(carry, i):
            r, f, s = carry
            r = r.at[i % T].add(1.0)
            f = jax.lax.dynamic_update_index_in_dim(f, r, i, 0)
            s = jax.lax.dynamic_update_index_in_dim(s, r.astype(jnp.int32), i, 0)
            return (r, f, s), None

        init = (row, jnp.zeros((NUM_SAMPLES, T)), jnp.zeros((NUM_SAMPLES, T), jnp.int32))
        return jax.lax.scan(body, init, jnp.arange(NUM_SAMPLES))[0][1:]

    return jax.jit(run)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    data = {T: zoo.simulate_discrete_hmm(jax.random.PRNGKey(0), T)[1] for T in (100, 1000)}
    calls = {}
    for name, sites in VARIANTS.items():
        trace_mh._sites = sites
        algo = infer.mh(num_samples=NUM_SAMPLES)
        for T, ys in data.items():
            core = jax.jit(lambda k, algo=algo, ys=ys: algo._core(k, zoo.discrete_hmm, (ys,), {}))
            jax.block_until_ready(core(jax.random.PRNGKey(0)))  # compile with this record
            calls[name, T] = core
    trace_mh._sites = FULL
    for T in data:
        calls["bare lax.scan writing the same rows", T] = bare_writes(T)
        jax.block_until_ready(calls["bare lax.scan writing the same rows", T](
            jax.random.PRNGKey(0)))
    best = dict.fromkeys(calls, np.inf)
    for r in range(args.repeats):
        for k, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call(jax.random.PRNGKey(r + 1)))
            best[k] = min(best[k], time.perf_counter() - start)
    print(f"\nbest of {args.repeats} interleaved calls; jax {jax.__version__}")
    print("| recorded per draw | T = 100 (ms) | T = 1000 (ms) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name in dict.fromkeys(n for n, _ in calls):
        t100, t1000 = best[name, 100], best[name, 1000]
        print(f"| {name} | {1e3 * t100:.2f} | {1e3 * t1000:.2f} | {t1000 / t100:.2f} |")


if __name__ == "__main__":
    main()
