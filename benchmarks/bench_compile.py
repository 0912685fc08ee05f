"""Compile time of every combinator: first-call time minus warm-call time of ``.run``.

The first ``.run(key, model, *args)`` with given argument shapes traces the program and
compiles the whole run (one ``jit``); a second call with a new key reuses it. Their
difference is the trace + compile cost. Each cell runs in a fresh Python process (nothing
cached from another cell: JAX's in-memory caches, NumPyro's, ppl's), with a time limit
(``--timeout``, 240 s by default; ``>240 s`` when exceeded). ``n/a``: the combinator
refuses that program (a discrete-only program for NUTS, a static one for PaRIS, ...).

Models (columns):

* ``LGSSM T=1000``: ``zoo.lgssm_1d`` (``zoo.lgssm_1d_unknown_rho`` for pmmh, smc2 and
  particle_gibbs, which need a global latent site; the same LGSSM with ``ppl.param``
  sites for score_ascent; ``zoo.lgssm_1d`` with an AR guide for score_climbing);
* ``HMM T=1000``: ``zoo.discrete_hmm`` (3 states, 4 symbols);
* ``logreg``: ``zoo.logistic_regression``, N = 1000, D = 10 (as ``bench_nuts.py``);
* ``8 schools``: ``zoo.eight_schools`` (non-centred);
* ``SDE N=800``: ``bench_vsde.py``'s problem with an 800-step grid and MA-fBM noise
  (K = 5 OU components), MLP control (width 32, depth 2) for vsde;
* ``PaRIS T=500``: ``bench_paris.py``'s problem (``zoo.lgssm_1d``, T = 500, functional
  ``(x_t, x_{t-1} x_t)``; paris with ``backward="reject"``).

Settings are small (a warm call takes well under a second to a few seconds) since only the
difference matters: see ``SETTINGS``.

    python benchmarks/bench_compile.py [--timeout 240] [--only nuts,smc] [--models logreg]
    python benchmarks/bench_compile.py --cell smc lgssm        # one cell, in this process
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODELS = {  # column key -> header
    "lgssm": "LGSSM T=1000",
    "hmm": "HMM T=1000",
    "logreg": "logreg",
    "schools": "8 schools",
    "sde": "SDE N=800",
    "paris": "PaRIS T=500",
}

#: combinator -> the model columns it runs on (the others: n/a)
APPLIES = {
    "importance": ("lgssm", "hmm", "logreg", "schools", "sde"),
    "exact": ("hmm",),
    "smc": ("lgssm", "hmm", "logreg", "schools", "sde", "paris"),
    "rmsmc": ("lgssm", "hmm", "logreg", "schools", "sde"),
    "mh": ("lgssm", "hmm", "logreg", "schools", "sde"),
    "tempered_smc": ("logreg", "schools", "sde"),
    "nuts": ("lgssm", "logreg", "schools", "sde"),
    "hmc": ("lgssm", "logreg", "schools", "sde"),
    "svi": ("lgssm", "logreg", "schools", "sde"),
    "pmmh": ("lgssm",),
    "smc2": ("lgssm",),
    "csmc": ("lgssm", "hmm", "paris"),
    "paris": ("lgssm", "hmm", "paris"),
    "ppg": ("lgssm", "hmm", "paris"),
    "vsde": ("sde",),
    "score_ascent": ("lgssm",),
    "score_climbing": ("lgssm",),
    "particle_gibbs": ("lgssm",),
}

SETTINGS = {
    "importance": "importance(num_samples=1000)",
    "exact": "exact(num_samples=100)",
    "smc": "smc(num_particles=100)",
    "rmsmc": "rmsmc(num_particles=100)",
    "mh": "mh(num_samples=100)",
    "tempered_smc": "tempered_smc(num_particles=100, num_mcmc_steps=2)",
    "nuts": "nuts(num_samples=50, num_warmup=50)",
    "hmc": "hmc(num_samples=50, num_warmup=50, num_steps=10)",
    "svi": "svi(num_steps=100, num_samples=100)",
    "pmmh": "pmmh(params=['rho'], likelihood=smc(num_particles=100), num_samples=50)",
    "smc2": "smc2(params=['rho'], num_theta=20, likelihood=smc(num_particles=50))",
    "csmc": "csmc(num_particles=100, num_sweeps=10, num_warmup=2)",
    "paris": "paris(num_particles=100, functional=psi)",
    "ppg": "ppg(num_particles=100, num_sweeps=5, num_warmup=1, functional=psi)",
    "vsde": "vsde(num_steps=100, num_paths=8, num_samples=16, control='mlp', width=32, "
            "depth=2)",
    "score_ascent": "score_ascent(num_particles=50, num_steps=20)",
    "score_climbing": "score_climbing(ar_guide, num_particles=50, num_steps=20)",
    "particle_gibbs": "particle_gibbs(num_particles=50, num_samples=20, num_warmup=5)",
}


# --------------------------------------------------------------------------- one cell


def make_cell(name, column):
    """``(combinator, model, args)`` of one cell (imports here: the parent stays light)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ppl import inference as infer
    from ppl import models as zoo

    def psi(t, x_prev, x, params):
        x, x_prev = jnp.asarray(x, jnp.float32), jnp.asarray(x_prev, jnp.float32)
        return jnp.stack([x, x_prev * x])

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_overhead import ar_guide, lgssm_params

    options = dict(vars(infer), psi=psi, ar_guide=ar_guide)
    comb = eval(SETTINGS[name], options)  # noqa: S307  (our own table)
    if name == "paris" and column == "paris":
        comb = infer.paris(num_particles=100, functional=psi, backward="reject")
    if name == "vsde":
        comb.progress_bar = False

    if column in ("lgssm", "paris"):
        T = 1000 if column == "lgssm" else 500
        _, ys = zoo.simulate_lgssm_1d(jax.random.PRNGKey(1), T)
        model = {"pmmh": zoo.lgssm_1d_unknown_rho, "smc2": zoo.lgssm_1d_unknown_rho,
                 "particle_gibbs": zoo.lgssm_1d_unknown_rho,
                 "score_ascent": lgssm_params}.get(name, zoo.lgssm_1d)
        return comb, model, (np.asarray(ys),)
    if column == "hmm":
        _, ys = zoo.simulate_discrete_hmm(jax.random.PRNGKey(2), 1000)
        return comb, zoo.discrete_hmm, (np.asarray(ys),)
    if column == "logreg":
        k_x, k_w, k_y = jax.random.split(jax.random.PRNGKey(123), 3)
        X = jax.random.normal(k_x, (1000, 10))
        w = jax.random.normal(k_w, (10,))
        y = jax.random.bernoulli(k_y, jax.nn.sigmoid(X @ w + 0.5)).astype(jnp.int32)
        return comb, zoo.logistic_regression, (X, y)
    if column == "schools":
        return comb, zoo.eight_schools, ()
    if column == "sde":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench_vsde import problem

        model, ys, *_ = problem(5, 800)
        return comb, model, (ys,)
    raise ValueError(column)


#: JAX's events for the stages of a compilation (trace to jaxpr, lower to MLIR, XLA).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


def run_cell(name, column):
    """Time the first and a warm ``.run``, and sum JAX's compile events during the first
    (every compilation: the run's jit and each eager op compiled on first use); print one
    JSON line."""
    import jax

    comb, model, args = make_cell(name, column)
    jax.block_until_ready(jax.random.split(jax.random.key(0)))  # JAX itself warmed up
    spent = {"s": 0.0, "n": 0, "on": True}

    def listen(event, duration, **_):
        if spent["on"] and event in COMPILE_EVENTS:
            spent["s"] += duration
            spent["n"] += event == COMPILE_EVENTS[-1]

    jax.monitoring.register_event_duration_secs_listener(listen)
    start = time.perf_counter()
    jax.block_until_ready(comb.run(jax.random.key(0), model, *args))
    first = time.perf_counter() - start
    spent["on"] = False
    warm = []
    for i in (1, 2):
        start = time.perf_counter()
        jax.block_until_ready(comb.run(jax.random.key(i), model, *args))
        warm.append(time.perf_counter() - start)
    print(json.dumps({"first": first, "warm": min(warm), "compile": spent["s"],
                      "compilations": spent["n"]}), flush=True)


# --------------------------------------------------------------------------- the table


def cell_in_subprocess(name, column, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--cell", name, column]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f">{timeout:.0f} s", None, None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return "error", None, last[:200]
    t = json.loads(lines[-1])
    return (f"{t['first'] - t['warm']:.1f} [{t['compile']:.1f}/{t['compilations']}]",
            f"{t['warm']:.2f}", None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--only", default="", help="comma-separated combinators")
    parser.add_argument("--models", default="", help="comma-separated columns: "
                        + ",".join(MODELS))
    parser.add_argument("--cell", nargs=2, metavar=("COMBINATOR", "MODEL"))
    args = parser.parse_args()
    if args.cell:
        run_cell(*args.cell)
        return
    import jax

    only = [s for s in args.only.split(",") if s] or list(APPLIES)
    columns = [s for s in args.models.split(",") if s] or list(MODELS)
    print(f"jax {jax.__version__} on {jax.default_backend()}; seconds: first .run minus "
          f"warm .run [JAX compile events during the first .run: trace + lower + XLA "
          f"seconds / number of XLA compilations], each cell in a fresh process, limit "
          f"{args.timeout:.0f} s")
    head = "| combinator     | " + " | ".join(f"{MODELS[c]:>16}" for c in columns) + " |"
    print(head)
    print("|----------------|" + "|".join("-" * 18 for _ in columns) + "|")
    errors, warm_rows = [], []
    for name in only:
        cells, warm = [], []
        for column in columns:
            if column not in APPLIES[name]:
                cells.append("n/a")
                warm.append("n/a")
                continue
            text, warm_text, error = cell_in_subprocess(name, column, args.timeout)
            if error:
                errors.append(f"{name} / {MODELS[column]}: {error}")
            cells.append(text)
            warm.append(warm_text or "-")
        print(f"| {name:<14} | " + " | ".join(f"{c:>16}" for c in cells) + " |", flush=True)
        warm_rows.append(f"| {name:<14} | " + " | ".join(f"{c:>16}" for c in warm) + " |")
    print("\nwarm .run, seconds (the better of two calls)")
    print(head)
    print("|----------------|" + "|".join("-" * 18 for _ in columns) + "|")
    print("\n".join(warm_rows))
    for line in errors:
        print(line)


if __name__ == "__main__":
    main()
