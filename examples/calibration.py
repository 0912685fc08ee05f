"""Simulation-based calibration of NUTS and tempered SMC on the eight schools model.

``ppl.check.sbc`` draws (parameters, data) pairs from the program's prior predictive, runs
the inference method on each simulated data set and ranks the true parameters (and the
log-likelihood of the data) among the method's draws: for a correct method every rank is
uniform (Talts et al. 2018; Modrák et al. 2023). Here it checks ``infer.nuts`` and
``infer.tempered_smc`` on the non-centred eight schools model (``ppl.models.eight_schools``;
its priors mu ~ Normal(0, 5), tau ~ HalfCauchy(5) give data sets from nearly pooled to
wildly spread), prints both result tables and saves the ECDF-difference plots with their
95% simultaneous bands (Säilynoja et al. 2022) to ``examples/calibration.png``.

    python examples/calibration.py            # 200 simulations, about a minute on 2 cores
    python examples/calibration.py --quick    # 50 simulations, smaller runs
"""

import argparse
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

import ppl  # noqa: E402
from ppl import inference as infer  # noqa: E402
from ppl import models as zoo  # noqa: E402

#: The quantities drawn (every one is tested; the tables list all 19).
SHOWN = ["mu", "tau", "theta_tilde[0]", "theta[0]", "log_likelihood"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller settings")
    parser.add_argument("--out", default=str(Path(__file__).with_name("calibration.png")))
    options = parser.parse_args(argv)

    if options.quick:
        num_simulations, num_draws = 50, 49
        methods = {"nuts": infer.nuts(500, 300), "tempered_smc": infer.tempered_smc(500)}
    else:
        num_simulations, num_draws = 200, 99
        methods = {"nuts": infer.nuts(1000, 500), "tempered_smc": infer.tempered_smc(1000)}

    # The data only fix the shapes: sbc replaces y by simulated data (sigma stays).
    args = (zoo.EIGHT_SCHOOLS_Y, zoo.EIGHT_SCHOOLS_SIGMA)
    results = {}
    for i, (name, method) in enumerate(methods.items()):
        start = time.perf_counter()
        result = ppl.check.sbc(zoo.eight_schools, method, *args,
                               num_simulations=num_simulations, num_draws=num_draws,
                               key=jax.random.PRNGKey(i))
        print(f"\n{method!r}: {time.perf_counter() - start:.1f} s")
        print(result)
        print("calibrated at family-wise level 0.01:", result.ok(0.01))
        results[name] = result

    fig = Figure(figsize=(15, 5.2), layout="constrained")
    for sub, result in zip(fig.subfigures(len(results), 1), results.values(), strict=True):
        result.plot(SHOWN, ncols=len(SHOWN), fig=sub)
    fig.savefig(options.out, dpi=110)
    print(f"\nsaved {options.out}")


if __name__ == "__main__":
    main()
