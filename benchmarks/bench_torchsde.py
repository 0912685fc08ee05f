"""vsde against torchsde's latent SDE: time per ELBO step on the Brownian OU problem of
``bench_vsde.py`` (K = 0), one CPU core each.

Problem (as in ``bench_vsde.py``): the latent ``dX = -X dt + dB`` on [0, 2], X(0) = 0, N
Euler steps, observed every N/10 steps with noise sd 0.3, data ``ys = sin(t)`` at the
observation times. Both contenders maximise the same Girsanov ELBO (Li, Wong, Chen &
Duvenaud, "Scalable gradients for stochastic differential equations", AISTATS 2020, eq. 9;
Daems et al., ICLR 2024, eq. 14)

    ELBO = E_Q[ sum_i log N(y_i | X_{t_i}, 0.3^2) ] - E_Q[ 1/2 int u(t, X_t)^2 dt ]

with the posterior drift ``-x + u(t, x)``, ``u`` an MLP (tanh, width 32, depth 2, last layer
initialised at zero) of ``[s, sin(pi k s), cos(pi k s)]_{k=1..8}`` (s = t / 2) and x;
``--num-paths`` paths per step, Adam at 1e-2, ``--steps`` steps:

* ``ppl``: ``vsde(...).run(key, model, ys)``, timed exactly as in ``bench_vsde.py``;
* ``torchsde``: the latent SDE written as torchsde's ``examples/latent_sde.py`` writes it: an
  ``nn.Module`` with ``f`` (posterior drift), ``h`` (prior drift ``-x``) and ``g``
  (diffusion 1), ``torchsde.sdeint(sde, x0, ts, method="euler", dt=2/N, logqp=True)``
  returning the path at the observation times and the per-interval Girsanov (log-ratio)
  terms, eager PyTorch autograd, ``torch.optim.Adam`` (float32 state; float64 output
  times and dt = (2/N)(1 + 1e-9) so that sdeint takes exactly the N grid steps).

Per-step ms is the slope between runs of ``--steps`` and ``2 * --steps`` steps for torchsde
and of ``--ppl-steps`` and ``2 * --ppl-steps`` for ppl (whose per-run fixed cost, an eager
discovery run and the posterior draws, needs long runs to separate; wall clock,
the best of ``--repeats`` runs with new seeds, after compilation for ppl and a warm-up for
torch). Both run on one thread: ``torch.set_num_threads(1)`` and, set before jax is
imported, ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``;
pin the process to one core with ``taskset`` as well. ELBO columns are the mean of the last
50 training-step ELBOs of a ``2 * --steps`` run of each; ``log Z`` is the exact log evidence of
the Euler-discretised model (Kalman filter), which both ELBOs must stay below.

torch and torchsde are needed for this script only (they are not project dependencies);
install them into a separate environment together with the project:

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 torchsde
    /tmp/torchvenv/bin/pip install -e .
    taskset -c 1 /tmp/torchvenv/bin/python benchmarks/bench_torchsde.py
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchsde  # noqa: E402
from ppl.inference.variational_sde import vsde  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vsde import (  # noqa: E402
    DEPTH,
    FEATURES,
    HORIZON,
    OBS_SD,
    WIDTH,
    _best,
    problem,
)

LEARNING_RATE, TAIL = 1e-2, 50
CONTRACT_CALLS = 2  # sdeint evaluates the prior drift twice at t0 to check shapes


# --------------------------------------------------------------------------- reference


def kalman_log_evidence(num_steps, ys):
    """Exact log evidence of the Euler-discretised OU (x_{n+1} = (1 - dt) x_n + sqrt(dt) e_n,
    x_0 = 0) observed with sd OBS_SD every num_steps / 10 steps (Kalman 1960)."""
    dt = HORIZON / num_steps
    every = num_steps // 10
    data = dict(zip(range(every, num_steps + 1, every), np.asarray(ys, np.float64).tolist(),
                    strict=True))
    m, p, log_z = 0.0, 0.0, 0.0
    for n in range(1, num_steps + 1):
        m, p = (1.0 - dt) * m, (1.0 - dt) ** 2 * p + dt
        if n in data:
            s = p + OBS_SD**2
            log_z += -0.5 * math.log(2 * math.pi * s) - 0.5 * (data[n] - m) ** 2 / s
            m, p = m + p / s * (data[n] - m), p * OBS_SD**2 / s
    return log_z


# --------------------------------------------------------------------------- ppl


def ppl_times(num_steps, args):
    """Seconds for ``ppl_steps`` and ``2 * ppl_steps`` vsde runs (best of repeats, compiled),
    exactly as ``bench_vsde.bench_steps`` times them, and the ELBO trace of a run of
    ``2 * steps`` steps (the torchsde run's length)."""
    model, ys, *_ = problem(0, num_steps)
    seconds = []
    for steps in (args.ppl_steps, 2 * args.ppl_steps):
        algo = vsde(num_steps=steps, num_paths=args.num_paths, learning_rate=LEARNING_RATE,
                    width=WIDTH, depth=DEPTH, num_features=FEATURES, num_samples=16,
                    progress_bar=False)
        algo.run(jax.random.PRNGKey(0), model, ys)  # compile
        seconds.append(_best(lambda k, a=algo: a.run(k, model, ys).info["elbo"], args.repeats))
    algo = vsde(num_steps=2 * args.steps, num_paths=args.num_paths, learning_rate=LEARNING_RATE,
                width=WIDTH, depth=DEPTH, num_features=FEATURES, num_samples=16, progress_bar=False)
    return seconds, np.asarray(algo.run(jax.random.PRNGKey(0), model, ys).info["elbo"])


# --------------------------------------------------------------------------- torchsde


class LatentSDE(torch.nn.Module):
    """Posterior ``dX = (-X + u(t, X)) dt + dW`` and prior ``dX = -X dt + dW`` in the form
    ``torchsde.sdeint(..., logqp=True)`` takes (f: posterior drift, h: prior drift, g:
    diffusion), as in torchsde's examples/latent_sde.py (Li et al., AISTATS 2020)."""

    sde_type = "ito"
    noise_type = "diagonal"

    def __init__(self):
        super().__init__()
        layers, size = [], 1 + 2 * FEATURES + 1
        for _ in range(DEPTH):
            layers += [torch.nn.Linear(size, WIDTH), torch.nn.Tanh()]
            size = WIDTH
        last = torch.nn.Linear(size, 1)
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        self.control = torch.nn.Sequential(*layers, last)
        self.register_buffer("freqs", math.pi * torch.arange(1, FEATURES + 1,
                                                             dtype=torch.float32))
        self.euler_steps = 0

    def u(self, t, x):
        """The control: MLP of the Fourier time features of s = t / HORIZON and x."""
        s = torch.as_tensor(t, dtype=x.dtype) / HORIZON
        feats = torch.cat([s.reshape(1), torch.sin(self.freqs * s), torch.cos(self.freqs * s)])
        return self.control(torch.cat([feats.expand(x.shape[0], -1), x], dim=1))

    def f(self, t, x):
        return -x + self.u(t, x)

    def h(self, t, x):
        self.euler_steps += 1  # one call per Euler step (plus sdeint's shape checks)
        return -x

    def g(self, t, x):
        return torch.ones_like(x)


def torchsde_run(num_steps, steps, num_paths, seed):
    """``steps`` Adam steps of the torchsde latent-SDE ELBO; returns the ELBO trace and the
    number of Euler steps per path in one sdeint call."""
    _, ys, times, obs_index, _ = problem(0, num_steps)
    # float64 times and a step 1e-9 longer than 2/N: with float32 times and dt = 2/N exactly,
    # rounding leaves the clock just short of t = 2 and sdeint takes an extra step of length
    # ~0; this way it takes exactly the N steps of the grid (the state stays float32)
    ts = torch.tensor(np.concatenate([[0.0], np.asarray(times, np.float64)[obs_index]]),
                      dtype=torch.float64)
    dt = HORIZON / num_steps * (1.0 + 1e-9)
    data = torch.tensor(np.asarray(ys), dtype=torch.float32)[:, None]
    torch.manual_seed(0)  # the same initial control in every run
    sde = LatentSDE()
    optimizer = torch.optim.Adam(sde.parameters(), lr=LEARNING_RATE)
    torch.manual_seed(seed)
    x0 = torch.zeros(num_paths, 1)
    elbos = np.empty(steps)
    for i in range(steps):
        optimizer.zero_grad()
        sde.euler_steps = 0
        xs, log_ratio = torchsde.sdeint(sde, x0, ts, method="euler", dt=dt, logqp=True)
        log_lik = torch.distributions.Normal(xs[1:, :, 0], OBS_SD).log_prob(data).sum(dim=0)
        elbo = (log_lik - log_ratio.sum(dim=0)).mean()
        (-elbo).backward()
        optimizer.step()
        elbos[i] = elbo.item()
    return elbos, sde.euler_steps - CONTRACT_CALLS


def torchsde_times(num_steps, args):
    """Seconds for ``steps`` and ``2 * steps`` runs (best of repeats after a warm-up), the
    ELBO trace of the first longer run and the Euler steps per sdeint call."""
    _, euler_steps = torchsde_run(num_steps, 5, args.num_paths, 0)  # warm-up
    seconds, traces = [], []
    for steps in (args.steps, 2 * args.steps):
        best = math.inf
        for seed in range(1, args.repeats + 1):
            start = time.perf_counter()
            elbos, _ = torchsde_run(num_steps, steps, args.num_paths, seed)
            best = min(best, time.perf_counter() - start)
            traces.append(elbos)
        seconds.append(best)
    return seconds, traces[args.repeats], euler_steps


# --------------------------------------------------------------------------- table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--steps", type=int, default=50,
                        help="torchsde: slope between runs of steps and 2 * steps")
    parser.add_argument("--ppl-steps", type=int, default=1000,
                        help="ppl: slope between runs of ppl-steps and 2 * ppl-steps (ppl's "
                             "fixed cost per run needs long runs to separate)")
    parser.add_argument("--num-paths", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.steps < TAIL:
        parser.error(f"--steps must be at least {TAIL} (the ELBO columns average the last "
                     f"{TAIL} steps), got {args.steps}")
    torch.set_num_threads(1)

    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, "
          f"torchsde {torchsde.__version__}; {args.num_paths} paths per step; per-step ms = "
          f"slope between runs of {args.ppl_steps} and {2 * args.ppl_steps} (ppl), "
          f"{args.steps} and {2 * args.steps} (torchsde) steps, best of {args.repeats}; "
          f"ELBO = mean of the last "
          f"{TAIL} steps; log Z = Kalman evidence")
    print("| N | ppl ms/step | torchsde ms/step | torchsde / ppl | ELBO ppl | ELBO torchsde |"
          " log Z |")
    print("|---|-------------|------------------|----------------|----------|---------------|"
          "-------|")
    for num_steps in args.ns:
        if num_steps % 10:
            parser.error(f"--ns: every N must be a multiple of 10, got {num_steps}")
        (p1, p2), ppl_elbos = ppl_times(num_steps, args)
        (t1, t2), torch_elbos, euler_steps = torchsde_times(num_steps, args)
        if euler_steps != num_steps:
            print(f"note: torchsde took {euler_steps} Euler steps for N = {num_steps}")
        ms_ppl = 1e3 * (p2 - p1) / args.ppl_steps
        ms_torch = 1e3 * (t2 - t1) / args.steps
        log_z = kalman_log_evidence(num_steps, problem(0, num_steps)[1])
        print(f"| {num_steps} | {ms_ppl:.3f} | {ms_torch:.3f} | {ms_torch / ms_ppl:.1f} | "
              f"{ppl_elbos[-TAIL:].mean():.2f} | {torch_elbos[-TAIL:].mean():.2f} | "
              f"{log_z:.2f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
