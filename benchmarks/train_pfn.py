"""Train the PFNs shipped in ``models/pfn_weights/`` (Müller et al. 2022; Adriaensen et al. 2023).

    python benchmarks/train_pfn.py gp --steps 5000      # -> models/pfn_weights/gp_pfn.npz
    python benchmarks/train_pfn.py lc --steps 3000      # -> models/pfn_weights/lc_pfn.npz
    python benchmarks/train_pfn.py gp --resume F --lr 3e-4 --steps 2000 --out G   # continue F
    python benchmarks/train_pfn.py lc --resume F --decoder 256 --steps 2000 --out G  # F + decoder
    python benchmarks/train_pfn.py lc --resume F --loss-weighting dataset --out G  # see below
    python benchmarks/train_pfn.py lc --seconds 480 --width 256 --weights-dtype float16  # budget

Prints the training time, the loss at the start and the end (mean NLL per query point of the
last 100 steps), and the file written. The GP network sees datasets of 50 points
(1..49 training points, the rest queries); the learning-curve network sees whole curves of
100 epochs whose first 1..99 epochs are the training set (a prefix: the inputs are ordered).

``--seconds S`` trains to a time budget rather than a step count: a throwaway run of three
chunks of the same configuration times a chunk with its checkpoint, and the compilation;
then the network trains for as many whole chunks as fit in S seconds of training loop
(compilation included), with the whole warm-up and cosine schedule (``--max-seconds``
instead cuts a run short in the middle of its schedule).
``--weights-dtype float16`` writes the final file with half-precision weights (half the
size; on the shipped networks the mean log-likelihood moves by under 1e-4 nats).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np
from ppl.inference.prior_fitted import LOSS_WEIGHTINGS, WEIGHTS_DTYPES, load, pfn
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


def build(args, inputs, num_points, progress_bar=True):
    """The network to train: loaded from ``--resume`` (with ``--decoder`` added if asked),
    or a fresh one of the given architecture."""
    if args.resume:
        net = load(args.resume, inputs=inputs, batch_size=args.batch, learning_rate=args.lr,
                   chunk=args.chunk, loss_weighting=args.loss_weighting,
                   progress_bar=progress_bar)
        if args.decoder and net.config.decoder != args.decoder:
            net.add_decoder(jax.random.PRNGKey(args.seed + 1), args.decoder)
        return net
    return pfn(num_points=num_points, inputs=inputs, num_buckets=args.buckets,
               width=args.width, depth=args.depth, heads=args.heads, batch_size=args.batch,
               learning_rate=args.lr, decoder=args.decoder, chunk=args.chunk,
               loss_weighting=args.loss_weighting, progress_bar=progress_bar)


def probe(args, model, inputs, num_points, chunks=3):
    """(seconds per training step, seconds of compilation) of this configuration, from a
    throwaway run of ``chunks`` chunks: the median chunk after the first, and what the
    first, which compiles, takes beyond that."""
    net = build(args, inputs, num_points, progress_bar=False)
    with tempfile.TemporaryDirectory() as tmp:  # checkpoints as in the real run
        net.fit(jax.random.PRNGKey(args.seed + 1000), model, num_steps=chunks * args.chunk,
                checkpoint=os.path.join(tmp, "probe.npz"), resume=bool(args.resume))
    seconds = net.history["chunk_seconds"]
    per_chunk = float(np.median(seconds[1:]))
    return per_chunk / args.chunk, max(float(seconds[0]) - per_chunk, 0.0)


def steps_in_budget(seconds, step_seconds, compile_seconds, chunk):
    """Whole chunks of steps that fit in ``seconds`` of training loop, compilation
    included (at least one chunk)."""
    fit = int((seconds - compile_seconds) / step_seconds) // chunk * chunk
    return max(chunk, fit)


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
                             "every training-set size does "
                             "(see ppl.inference.prior_fitted.batch_loss)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--resume", default=None,
                        help="continue training this network file (its architecture, "
                             "normalisation and borders) with a fresh schedule")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop after the chunk that passes this training wall time")
    parser.add_argument("--seconds", type=float, default=None,
                        help="instead of --steps: time a short probe run of this "
                             "configuration, then train for as many steps as fit in this "
                             "many seconds, with the whole learning-rate schedule")
    parser.add_argument("--chunk", type=int, default=100,
                        help="Adam steps per jitted call (one progress-bar tick)")
    parser.add_argument("--weights-dtype", choices=WEIGHTS_DTYPES, default="float32",
                        help="precision of the weights in the final file (checkpoints "
                             "during training stay float32)")
    args = parser.parse_args(argv)

    model, inputs, num_points, filename = PRIORS[args.prior]
    out = args.out or os.path.join(WEIGHTS, filename)
    steps = args.steps
    if args.seconds is not None:
        step_seconds, compile_seconds = probe(args, model, inputs, num_points)
        steps = steps_in_budget(args.seconds, step_seconds, compile_seconds, args.chunk)
        print(f"probe: {1 / step_seconds:.2f} steps/s, {compile_seconds:.1f} s to compile "
              f"-> {steps} steps in {args.seconds:.0f} s")
    net = build(args, inputs, num_points)
    start = time.perf_counter()
    net.fit(jax.random.PRNGKey(args.seed), model, num_steps=steps, checkpoint=out,
            max_seconds=args.max_seconds, resume=bool(args.resume))
    total = time.perf_counter() - start
    if args.weights_dtype != "float32":
        net.save(out, weights_dtype=args.weights_dtype)
    loss = net.history["loss"]
    params = sum(x.size for x in jax.tree.leaves(net.network) if hasattr(x, "size"))
    c = net.config
    print(f"prior={args.prior} steps={net.history['num_steps']} batch={args.batch} "
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
