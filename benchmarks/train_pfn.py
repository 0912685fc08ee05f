"""Train the PFNs shipped in ``models/pfn_weights/`` (Müller et al. 2022; Adriaensen et al. 2023).

    python benchmarks/train_pfn.py gp --steps 5000      # -> models/pfn_weights/gp_pfn.npz
    python benchmarks/train_pfn.py lc --steps 3000      # -> models/pfn_weights/lc_pfn.npz
    python benchmarks/train_pfn.py gp --resume F --lr 3e-4 --steps 2000 --out G   # continue F
    python benchmarks/train_pfn.py lc --resume F --decoder 256 --steps 2000 --out G  # F + decoder
    python benchmarks/train_pfn.py lc --resume F --loss-weighting dataset --out G  # see below

Prints the training time, the loss at the start and the end (mean NLL per query point of the
last 100 steps), and the file written. The GP network sees datasets of 50 points
(1..49 training points, the rest queries); the learning-curve network sees whole curves of
100 epochs whose first 1..99 epochs are the training set (a prefix: the inputs are ordered).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np
from ppl.inference.pfn import LOSS_WEIGHTINGS, load, pfn
from ppl.models.pfn_priors import (
    GP_MAX_POINTS,
    LC_EPOCHS,
    gp_inputs,
    gp_regression,
    lc_inputs,
    learning_curve,
)

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "models", "pfn_weights")
PRIORS = {
    "gp": (gp_regression, gp_inputs, GP_MAX_POINTS, "gp_pfn.npz"),
    "lc": (learning_curve, lc_inputs, LC_EPOCHS, "lc_pfn.npz"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", choices=sorted(PRIORS))
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--buckets", type=int, default=100)
    parser.add_argument("--decoder", type=int, default=0,
                        help="hidden units of a 2-layer MLP decoder added to the linear head "
                             "(with --resume: added to the loaded network, output starting "
                             "at zero)")
    parser.add_argument("--loss-weighting", choices=LOSS_WEIGHTINGS, default="point",
                        help="point: every query point weighs the same in the loss; dataset: "
                             "every training-set size does (see ppl.inference.pfn.batch_loss)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--resume", default=None,
                        help="continue training this network file (its architecture, "
                             "normalisation and borders) with a fresh schedule")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop after the chunk that passes this training wall time")
    args = parser.parse_args(argv)

    model, inputs, num_points, filename = PRIORS[args.prior]
    out = args.out or os.path.join(WEIGHTS, filename)
    if args.resume:
        net = load(args.resume, inputs=inputs, batch_size=args.batch, learning_rate=args.lr,
                   chunk=100, loss_weighting=args.loss_weighting)
        if args.decoder and net.config.decoder != args.decoder:
            net.add_decoder(jax.random.PRNGKey(args.seed + 1), args.decoder)
    else:
        net = pfn(num_points=num_points, inputs=inputs, num_buckets=args.buckets,
                  width=args.width, depth=args.depth, heads=args.heads, batch_size=args.batch,
                  learning_rate=args.lr, decoder=args.decoder, chunk=100,
                  loss_weighting=args.loss_weighting)
    start = time.perf_counter()
    net.fit(jax.random.PRNGKey(args.seed), model, steps=args.steps, checkpoint=out,
            max_seconds=args.max_seconds, resume=bool(args.resume))
    total = time.perf_counter() - start
    loss = net.history["loss"]
    params = sum(x.size for x in jax.tree.leaves(net.network) if hasattr(x, "size"))
    c = net.config
    print(f"prior={args.prior} steps={net.history['steps']} batch={args.batch} "
          f"width={c.width} depth={c.depth} heads={c.heads} buckets={c.num_buckets} "
          f"sink={c.sink} decoder={c.decoder} params={params} "
          f"loss_weighting={net.loss_weighting}"
          + (f" resumed from {args.resume}" if args.resume else ""))
    print(f"training loop {net.history['seconds']:.1f} s (total with set-up and compile "
          f"{total:.1f} s); loss first 100 steps {np.mean(loss[:100]):.3f}, last 100 steps "
          f"{np.mean(loss[-100:]):.3f}; short batches {net.history['short_batches']}; "
          f"prior acceptance {net.history['acceptance']:.3f}")
    print(f"wrote {os.path.normpath(out)} ({os.path.getsize(out) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
