"""PFN benchmarks: the shipped GP and learning-curve networks against their exact references.

    python benchmarks/bench_pfn.py gp --tasks 500
    python benchmarks/bench_pfn.py lc --curves 200 --nuts-curves 4 --nuts-samples 500
    python benchmarks/bench_pfn.py lc --nuts-curves 64 --nuts-chains 4 --cutoffs 10 80
    python benchmarks/bench_pfn.py lc-compare --curves 200 --baseline OLD.npz [--weights NEW.npz]
    python benchmarks/bench_pfn.py half --tasks 500     # the shipped networks in float16
    python benchmarks/bench_pfn.py nuts-chains --nuts-curves 64 --nuts-chains 4 --caches A B C

GP table (Müller et al. 2022, section 5.1): on held-out datasets drawn from the prior (50
points, 1..49 of them the training set, the rest queries), the mean NLL per query point of
the PFN's posterior predictive, of the exact GP posterior predictive and of the prior
predictive, with standard errors over tasks, and the paired gap PFN - exact.

LC table (Adriaensen et al. 2023, table 1 / figure 4): curves of 100 epochs drawn from the
prior; from the first 10, 20, 40, 80 epochs, the mean log-likelihood per epoch of the
held-out remainder under the PFN and under NUTS on the same program (``ppl.models.
learning_curve`` conditioned on the prefix; the predictive is the mixture over posterior
draws of N(curve_s(t), sigma_s)), on the same curves, and the time per curve of each
(PFN: one jitted forward pass for one curve; NUTS: one compiled run, compile excluded).
The paired PFN - NUTS difference is also given on the quarter of NUTS's curves with the
least noise, chosen by the true noise level drawn with each curve.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from ppl.inference.hamiltonian import nuts
from ppl.inference.prior_fitted import load, sample_datasets
from ppl.models.pfn_priors import (
    gp_exact_predictive,
    gp_inputs,
    gp_prior_predictive_logpdf,
    gp_regression,
    lc_curve,
    lc_inputs,
    learning_curve,
)

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "models", "pfn_weights")
CUTOFFS = (10, 20, 40, 80)


def mean_se(a):
    a = np.asarray(a)
    return a.mean(), a.std(ddof=1) / np.sqrt(a.size)


def bench_gp(tasks, seed, weights=None):
    net = load(weights or os.path.join(WEIGHTS, "gp_pfn.npz"), inputs=gp_inputs,
               progress_bar=False)
    n_pts = net.config.num_points
    x, y, _, n, _ = sample_datasets(jax.random.PRNGKey(seed), gp_regression, gp_inputs, n_pts,
                                    tasks)
    lp = np.asarray(net.log_predictive(x, y, n))  # compile
    start = time.perf_counter()
    lp = np.asarray(net.log_predictive(x, y, n).block_until_ready())
    t_pfn = (time.perf_counter() - start) / tasks
    x, y, n = np.asarray(x), np.asarray(y), np.asarray(n)
    pfn_nll, exact_nll, prior_nll = np.zeros(tasks), np.zeros(tasks), np.zeros(tasks)
    start = time.perf_counter()
    for b in range(tasks):
        k = n[b]
        mean, var = gp_exact_predictive(x[b, :k], y[b, :k], x[b, k:])
        yq = y[b, k:]
        exact_nll[b] = np.mean(0.5 * (np.log(2 * np.pi * var) + (yq - mean) ** 2 / var))
        pfn_nll[b] = -lp[b, k:].mean()
        prior_nll[b] = -np.mean(gp_prior_predictive_logpdf(yq))
    t_exact = (time.perf_counter() - start) / tasks
    print(f"GP prior, {tasks} held-out tasks of {n_pts} points (seed {seed}); "
          "NLL per query point, mean +- SE over tasks")
    print("| predictor | NLL | time per task |")
    print("| --- | --- | --- |")
    for name, v, t in (("PFN (shipped)", pfn_nll, f"{t_pfn * 1e3:.3f} ms (batched)"),
                       ("exact GP", exact_nll, f"{t_exact * 1e3:.3f} ms (numpy)"),
                       ("prior predictive", prior_nll, "-")):
        m, s = mean_se(v)
        print(f"| {name} | {m:.4f} +- {s:.4f} | {t} |")
    m, s = mean_se(pfn_nll - exact_nll)
    print(f"paired gap PFN - exact GP: {m:.4f} +- {s:.4f} nats")


def nuts_loglik(samples, y, k):
    """Mean over held-out epochs t >= k of log (1/S) sum_s N(y_t; curve_s(t), sigma_s)."""
    t = jnp.arange(1, y.shape[0] + 1, dtype=float)
    curves = jax.vmap(lambda w, *p: lc_curve(t, w, p[0:3], p[3:7], p[7:9]))(
        samples["w"], samples["pow3_c"], samples["pow3_a"], samples["pow3_alpha"],
        samples["jan_a"], samples["jan_beta"], samples["jan_k"], samples["jan_delta"],
        samples["ilog2_c"], samples["ilog2_a"])
    sigma = jnp.exp(samples["log_sigma"])[:, None]
    lp = jax.scipy.stats.norm.logpdf(y[None, k:], curves[:, k:], sigma)
    return float(jnp.mean(logsumexp(lp, axis=0) - jnp.log(lp.shape[0])))


def nuts_reference(x, y, k, curves, nuts_samples, nuts_warmup, chains=1):
    """NUTS's held-out log-likelihood on each curve index in ``curves`` cut at ``k``, and the
    seconds it took: {index: (loglik, seconds)}. Curve ``j`` is run with key ``101 + j``
    (whichever other curves are run); one untimed run first compiles. With ``chains > 1``
    the chains run vectorized and the predictive pools all their draws."""
    sampler = nuts(nuts_samples, num_warmup=nuts_warmup, num_chains=chains)
    out = {}
    for i, j in enumerate([curves[0], *curves] if curves else []):
        start = time.perf_counter()
        key = jax.random.PRNGKey(100 if i == 0 else 101 + j)
        post = sampler.run(key, learning_curve, x[j, :k], y[j, :k])
        jax.block_until_ready(post.samples)
        if i > 0:
            out[j] = (nuts_loglik(post.samples, y[j], k), time.perf_counter() - start)
    return out


def bench_lc(curves, nuts_curves, nuts_samples, nuts_warmup, seed, weights=None, cache=None,
             chains=1, cutoffs=CUTOFFS):
    net = load(weights or os.path.join(WEIGHTS, "lc_pfn.npz"), inputs=lc_inputs,
               progress_bar=False)
    m = net.config.num_points
    x, y, log_sigma, _, _ = sample_datasets(jax.random.PRNGKey(seed), learning_curve,
                                            lc_inputs, m, curves, target="log_sigma",
                                            oversample=12)
    # the quarter of NUTS's curves with the least noise, chosen by the true noise level
    # drawn with each curve (not by either method's score, which would favour that method)
    quiet = np.argsort(np.asarray(log_sigma[:nuts_curves]))[:max(nuts_curves // 4, 1)]
    stored = dict(np.load(cache)) if cache and os.path.exists(cache) else {}
    logliks = lc_curve_logliks(net, x, y, cutoffs)
    rows = {}
    for k in cutoffs:
        lp = logliks[k]
        one = (x[:1], y[:1], jnp.full((1,), k))
        net.logits(*one).block_until_ready()
        start = time.perf_counter()
        for _ in range(20):
            net.logits(*one).block_until_ready()
        t_pfn = (time.perf_counter() - start) / 20
        names = nuts_cache_names(k, nuts_curves, nuts_samples, nuts_warmup, seed, chains)
        missing = [j for j in range(nuts_curves) if names[j] not in stored]
        for j, result in nuts_reference(x, y, k, missing, nuts_samples, nuts_warmup,
                                        chains).items():
            stored[names[j]] = np.array(result)
        if cache and missing:  # after every cutoff, so an interrupted run keeps what it did
            np.savez(cache, **stored)
        ll_nuts, t_nuts = np.array([stored[name] for name in names]).T
        rows[k] = (lp, ll_nuts, t_pfn, float(np.mean(t_nuts)))
    print(f"LC prior, curves of {m} epochs (seed {seed}); mean log-likelihood per held-out "
          f"epoch. PFN on {curves} curves (and on the first {nuts_curves}); NUTS "
          f"({nuts_warmup} warm-up + {nuts_samples} draws, {chains} chain"
          f"{'s' if chains > 1 else ''}) on the first "
          f"{nuts_curves}")
    print("| cutoff | PFN (all) | PFN (NUTS's curves) | NUTS | PFN - NUTS (paired) "
          "| PFN - NUTS, lowest-noise quarter | PFN s/curve | NUTS s/curve | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, (lp, ll, tp, tn) in rows.items():
        ma, sa = mean_se(lp)
        mb, sb = mean_se(lp[:nuts_curves])
        mc, sc = mean_se(ll)
        md, sd = mean_se(lp[:nuts_curves] - ll)
        mq, sq = mean_se(lp[quiet] - ll[quiet])
        print(f"| {k}% | {ma:.3f} +- {sa:.3f} | {mb:.3f} +- {sb:.3f} | {mc:.3f} +- {sc:.3f} "
              f"| {md:+.3f} +- {sd:.3f} | {mq:+.3f} +- {sq:.3f} | {tp:.4f} | {tn:.2f} "
              f"| {tn / tp:.0f}x |")


def lc_curve_logliks(net, x, y, cutoffs=CUTOFFS):
    """{cutoff: per-curve mean log-likelihood of the held-out epochs} under ``net``."""
    return {k: np.asarray(net.log_predictive(x, y, jnp.full((x.shape[0],), k)))[:, k:].mean(1)
            for k in cutoffs}


def compare_lc(curves, seed, weights, baseline):
    """Two learning-curve networks paired per curve on the same prior curves."""
    a, b = (load(w or os.path.join(WEIGHTS, "lc_pfn.npz"), inputs=lc_inputs,
                 progress_bar=False) for w in (weights, baseline))
    x, y, _, _, _ = sample_datasets(jax.random.PRNGKey(seed), learning_curve, lc_inputs,
                                    a.config.num_points, curves, oversample=12)
    la, lb = lc_curve_logliks(a, x, y), lc_curve_logliks(b, x, y)
    print(f"LC prior, {curves} curves (seed {seed}): network minus baseline, paired per curve")
    print("| cutoff | network | baseline | network - baseline |")
    print("| --- | --- | --- | --- |")
    for k in CUTOFFS:
        (ma, _), (mb, _), (md, sd) = mean_se(la[k]), mean_se(lb[k]), mean_se(la[k] - lb[k])
        print(f"| {k}% | {ma:.3f} | {mb:.3f} | {md:+.3f} +- {sd:.3f} |")


def nuts_cache_names(k, nuts_curves, nuts_samples, nuts_warmup, seed, chains):
    """The cache keys of NUTS's results on the first ``nuts_curves`` curves cut at ``k``."""
    return [f"c{k}_j{j}_s{nuts_samples}_w{nuts_warmup}_seed{seed}"
            + (f"_chains{chains}" if chains > 1 else "") for j in range(nuts_curves)]


def compare_nuts_chains(caches, nuts_curves, nuts_samples, nuts_warmup, seed, chains):
    """NUTS with ``chains`` chains against one chain, per curve, from the results cached by
    earlier ``lc`` runs (``caches``: the files that hold them, merged)."""
    stored = {}
    for cache in caches:
        stored.update(np.load(cache))
    print(f"NUTS ({nuts_warmup} warm-up + {nuts_samples} draws), {chains} chains minus 1 "
          f"chain, held-out log-likelihood per curve on the first {nuts_curves} curves "
          f"(seed {seed})")
    print("| cutoff | difference | range |")
    print("| --- | --- | --- |")
    for k in CUTOFFS:
        many, one = ([stored[name][0] for name in nuts_cache_names(
            k, nuts_curves, nuts_samples, nuts_warmup, seed, c)] for c in (chains, 1))
        d = np.array(many) - np.array(one)
        md, sd = mean_se(d)
        print(f"| {k}% | {md:+.3f} +- {sd:.3f} | {d.min():+.2f}..{d.max():+.2f} |")


def compare_half_precision(tasks, seed):
    """Each shipped network against its copy saved with float16 weights and loaded back:
    file sizes and the change in log predictive density, per query point (largest) and per
    task (mean over query points, paired), on ``tasks`` prior datasets."""
    priors = (("gp_pfn.npz", gp_inputs, gp_regression), ("lc_pfn.npz", lc_inputs,
                                                          learning_curve))
    print(f"Shipped networks with float16 weights, {tasks} prior tasks (seed {seed}): change "
          "in log predictive density (half - full)")
    print("| network | file (float32) | file (float16) | largest change at a query point "
          "| mean change per task |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, inputs, model in priors:
            path, half_path = os.path.join(WEIGHTS, name), os.path.join(tmp, name)
            full = load(path, inputs=inputs, progress_bar=False)
            full.save(half_path, weights_dtype="float16")
            half = load(half_path, inputs=inputs, progress_bar=False)
            m = full.config.num_points
            x, y, _, n, _ = sample_datasets(jax.random.PRNGKey(seed), model, inputs, m, tasks,
                                            oversample=12)
            query = np.arange(m)[None, :] >= np.asarray(n)[:, None]
            change = np.asarray(half.log_predictive(x, y, n) - full.log_predictive(x, y, n))
            md, sd = mean_se((change * query).sum(1) / query.sum(1))
            print(f"| {name} | {os.path.getsize(path) / 1e6:.2f} MB "
                  f"| {os.path.getsize(half_path) / 1e6:.2f} MB "
                  f"| {np.abs(change[query]).max():.4f} | {md:+.1e} +- {sd:.1e} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=["gp", "lc", "lc-compare", "nuts-chains", "half"])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--curves", type=int, default=200)
    parser.add_argument("--nuts-curves", type=int, default=4)
    parser.add_argument("--nuts-samples", type=int, default=500)
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--cutoffs", type=int, nargs="+", default=list(CUTOFFS),
                        choices=CUTOFFS, help="LC: the cutoffs (%% of the curve) to run")
    parser.add_argument("--nuts-chains", type=int, default=1,
                        help="LC: NUTS chains per curve (vectorized; the predictive pools "
                             "their draws)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--nuts-cache", default=None,
                        help="LC: .npz file that stores NUTS's per-curve results, reused by "
                             "later runs with the same curves and settings (a run with more "
                             "curves only runs NUTS on the new ones)")
    parser.add_argument("--caches", nargs="+", default=None,
                        help="nuts-chains: the --nuts-cache files of earlier lc runs (with "
                             "--nuts-chains C and with one chain), read together")
    parser.add_argument("--weights", default=None,
                        help="network file (default: the shipped one in models/pfn_weights)")
    parser.add_argument("--baseline", default=None,
                        help="lc-compare: the network file --weights is paired against")
    args = parser.parse_args(argv)
    if args.table == "gp":
        bench_gp(args.tasks, args.seed, args.weights)
    elif args.table == "half":
        compare_half_precision(args.tasks, args.seed)
    elif args.table == "nuts-chains":
        if not args.caches or args.nuts_chains < 2:
            parser.error("nuts-chains needs --caches FILE [FILE ...] and --nuts-chains > 1")
        compare_nuts_chains(args.caches, args.nuts_curves, args.nuts_samples,
                            args.nuts_warmup, args.seed, args.nuts_chains)
    elif args.table == "lc-compare":
        if args.baseline is None:
            parser.error("lc-compare needs --baseline FILE")
        compare_lc(args.curves, args.seed, args.weights, args.baseline)
    else:
        bench_lc(args.curves, args.nuts_curves, args.nuts_samples, args.nuts_warmup, args.seed,
                 args.weights, args.nuts_cache, args.nuts_chains, args.cutoffs)


if __name__ == "__main__":
    main()
