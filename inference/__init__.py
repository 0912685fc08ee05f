"""Inference: building blocks and the algorithms composed from them.

Every sequential algorithm is a composition over one particle engine,
:mod:`ppl.inference.engine` (a Feynman–Kac model read from the program, one SMC step, one
time driver with collectors), and every MCMC algorithm over one kernel protocol and chain
driver, :mod:`ppl.inference.kernels`. Configure a combinator once, then
``.run(key, model, *args, **kwargs)``:

- :func:`importance` — likelihood weighting or importance sampling with a proposal program
- :func:`exact` — exact enumeration (funsor) of finite discrete programs
- :mod:`ppl.inference.resampling` — the resampling schemes SMC is built from
- :func:`svi` — stochastic variational inference, lowered to NumPyro's SVI
- :func:`amortized`, :func:`amortized_step` — inference networks trained across datasets
  from the prior, usable as proposals for importance sampling and SMC
- :func:`paris`, :func:`csmc`, :func:`ppg` — PaRIS smoothing of additive functionals,
  conditional SMC (particle Gibbs for states) and PaRIS particle Gibbs
- :func:`score_ascent`, :func:`score_climbing`, :func:`particle_gibbs` — parameter
  learning for state-space programs (Fisher's identity through PPG, Markov score
  climbing, particle Gibbs for states and parameters)
- :func:`pfn` — prior-data fitted networks: a transformer trained on datasets drawn from
  a program, predicting its posterior predictive (or a latent's posterior) in one pass
- :func:`vsde` — variational inference for SDE paths (``ppl.sde``), Brownian or fractional
"""

from ppl.inference import engine, kernels, resampling
from ppl.inference.amortization import Amortized, AmortizedStep, amortized, amortized_step
from ppl.inference.conditional import CSMC, csmc
from ppl.inference.enumeration import Exact, exact
from ppl.inference.filtering import SMC, smc
from ppl.inference.hamiltonian import HMC, NUTS, hmc, nuts
from ppl.inference.importance_sampling import Importance, importance
from ppl.inference.learning import (
    ParticleGibbs,
    ScoreAscent,
    ScoreClimbing,
    fisher_score,
    particle_gibbs,
    score_ascent,
    score_climbing,
)
from ppl.inference.marginal_mh import PMMH, pmmh
from ppl.inference.paris_gibbs import PPG, ppg
from ppl.inference.prior_fitted import PFN, pfn
from ppl.inference.prior_fitted import load as load_pfn
from ppl.inference.resample_move import RMSMC, rmsmc
from ppl.inference.smc_squared import SMC2, smc2
from ppl.inference.smoothing import PaRIS, SmoothingPosterior, paris
from ppl.inference.tempered import TemperedSMC, tempered_smc
from ppl.inference.trace_mh import MH, mh
from ppl.inference.variational import SVI, svi
from ppl.inference.variational_sde import VSDE, AffineControl, MLPControl, vsde

__all__ = ["engine", "kernels",
           "Exact", "Importance", "SMC", "exact", "importance", "resampling", "smc",
           "TemperedSMC", "tempered_smc",
           "HMC", "NUTS", "hmc", "nuts",
           "MH", "mh", "RMSMC", "rmsmc",
           "PMMH", "pmmh", "SMC2", "smc2",
           "SVI", "svi", "Amortized", "AmortizedStep", "amortized", "amortized_step",
           "VSDE", "AffineControl", "MLPControl", "vsde",
           "CSMC", "csmc", "PaRIS", "SmoothingPosterior", "paris", "PPG", "ppg",
           "ParticleGibbs", "ScoreAscent", "ScoreClimbing", "fisher_score",
           "particle_gibbs", "score_ascent", "score_climbing", "PFN", "pfn", "load_pfn"]
