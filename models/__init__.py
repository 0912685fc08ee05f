"""The model zoo: ppl programs, with their exact answers where one exists.

Models with exact answers (float64 numpy/scipy, independent of the inference code):

* :func:`beta_bernoulli` / :func:`beta_bernoulli_exact` (conjugate Beta posterior, evidence
  of the 0/1 sequence);
* :func:`normal_normal` / :func:`normal_normal_exact` (conjugate Normal posterior, evidence);
* :func:`lgssm_1d` / :func:`lgssm_1d_exact` and :func:`lgssm_2d` / :func:`lgssm_2d_exact`
  (Kalman filter and Rauch-Tung-Striebel smoother: evidence, filtering and smoothing
  moments, E[x_{t-1} x_t^T | y]; :func:`lgssm_1d_log_smoothing_density` and
  :func:`lgssm_2d_log_smoothing_density` give the exact density of a whole smoothed path);
  the general-form :func:`kalman_filter`, :func:`rts_smoother`, :func:`log_smoothing_density`;
  missing observations: each of these, :func:`lgssm_1d`, :func:`lgssm_1d_x0` and their
  exact answers take ``mask=`` (True = observed; a missing step is predict-only);
* :func:`lgssm_1d_x0` / :func:`lgssm_1d_x0_exact` and :func:`lgssm_2d_x0` /
  :func:`lgssm_2d_x0_exact`: the same with the initial law, x_0 a latent site ``"x0"`` ~
  N(m0, P0) passed as the ``init`` carry (also the smoothed law of x_0 and E[x_0 x_1^T | y]);
* :func:`discrete_hmm` / :func:`discrete_hmm_exact` (forward-backward, Rabiner 1989; the
  generic :func:`forward_backward`);
* :func:`sprinkler` / :func:`sprinkler_exact` (enumeration of the 8 joint states);
* :func:`monad_bayes_hmm` / :func:`monad_bayes_hmm_exact` (forward-backward);
* the fractional Ornstein-Uhlenbeck process ``dX = -theta X dt + sigma dB^H`` (types I and
  II of fractional Brownian motion): :func:`fou_covariance`, :func:`fou_mean`,
  :func:`fou_bridge_moments`, :func:`fou_log_likelihood`, :func:`simulate_fou_exact`,
  :func:`fou_stationary_autocovariance`, :func:`ou_covariance` (module ``fou``).

Models without exact answers:

* :func:`lgssm_1d_unknown_rho` (global ``rho`` with the 1-D LGSSM; exact given ``rho``);
* :func:`stochastic_volatility`, :func:`logistic_regression`, :func:`eight_schools`;
* :func:`monad_bayes_logreg`, :func:`monad_bayes_lda` (with :func:`monad_bayes_hmm`, the
  three models of monad-bayes' speed benchmark).

Simulators: :func:`simulate_lgssm_1d`, :func:`simulate_lgssm_2d`,
:func:`simulate_discrete_hmm`, :func:`simulate_stochastic_volatility`,
:func:`simulate_monad_bayes_logreg_data`, :func:`simulate_monad_bayes_hmm_data`,
:func:`simulate_monad_bayes_lda_data`.

State-space convention: the ``init`` carry of ``ppl.markov`` is x_0, fixed or (in the
``*_x0`` models) a latent site ``"x0"`` drawn before the ``markov`` call; with T
observations the latent states are x_1..x_T (site ``"x"``, stacked over time) and the
observations are site ``"y"``.
"""

from .conjugate import beta_bernoulli, beta_bernoulli_exact, normal_normal, normal_normal_exact
from .fou import (
    fbm_variance_constant,
    fou_bridge_moments,
    fou_covariance,
    fou_kernel,
    fou_log_likelihood,
    fou_mean,
    fou_stationary_autocovariance,
    ou_covariance,
    simulate_fou_exact,
)
from .hmm import (
    HMM_EMISSION,
    HMM_TRANS,
    discrete_hmm,
    discrete_hmm_exact,
    forward_backward,
    simulate_discrete_hmm,
)
from .lgssm import (
    LGSSM_2D_A,
    LGSSM_2D_C,
    LGSSM_2D_P0,
    LGSSM_2D_Q,
    LGSSM_2D_R,
    LGSSM_2D_X0,
    kalman_filter,
    lgssm_1d,
    lgssm_1d_exact,
    lgssm_1d_log_smoothing_density,
    lgssm_1d_unknown_rho,
    lgssm_1d_x0,
    lgssm_1d_x0_exact,
    lgssm_2d,
    lgssm_2d_exact,
    lgssm_2d_log_smoothing_density,
    lgssm_2d_x0,
    lgssm_2d_x0_exact,
    log_smoothing_density,
    rts_smoother,
    simulate_lgssm_1d,
    simulate_lgssm_2d,
)
from .sprinkler import SPRINKLER_SITES, sprinkler, sprinkler_exact
from .zoo import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    MB_HMM_MEANS,
    MB_HMM_TRANS,
    MB_HMM_VALUES,
    MB_LDA_DOCS,
    MB_LDA_VOCABULARY,
    MB_LOGREG_LABELS,
    MB_LOGREG_XS,
    eight_schools,
    logistic_regression,
    monad_bayes_hmm,
    monad_bayes_hmm_exact,
    monad_bayes_lda,
    monad_bayes_logreg,
    simulate_monad_bayes_hmm_data,
    simulate_monad_bayes_lda_data,
    simulate_monad_bayes_logreg_data,
    simulate_stochastic_volatility,
    stochastic_volatility,
)

__all__ = [
    "fbm_variance_constant",
    "fou_bridge_moments",
    "fou_covariance",
    "fou_kernel",
    "fou_log_likelihood",
    "fou_mean",
    "fou_stationary_autocovariance",
    "ou_covariance",
    "simulate_fou_exact",
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "HMM_EMISSION",
    "HMM_TRANS",
    "LGSSM_2D_A",
    "LGSSM_2D_C",
    "LGSSM_2D_P0",
    "LGSSM_2D_Q",
    "LGSSM_2D_R",
    "LGSSM_2D_X0",
    "MB_HMM_MEANS",
    "MB_HMM_TRANS",
    "MB_HMM_VALUES",
    "MB_LDA_DOCS",
    "MB_LDA_VOCABULARY",
    "MB_LOGREG_LABELS",
    "MB_LOGREG_XS",
    "SPRINKLER_SITES",
    "beta_bernoulli",
    "beta_bernoulli_exact",
    "discrete_hmm",
    "discrete_hmm_exact",
    "eight_schools",
    "forward_backward",
    "kalman_filter",
    "lgssm_1d",
    "lgssm_1d_exact",
    "lgssm_1d_log_smoothing_density",
    "lgssm_1d_unknown_rho",
    "lgssm_1d_x0",
    "lgssm_1d_x0_exact",
    "lgssm_2d",
    "lgssm_2d_exact",
    "lgssm_2d_log_smoothing_density",
    "lgssm_2d_x0",
    "lgssm_2d_x0_exact",
    "log_smoothing_density",
    "logistic_regression",
    "monad_bayes_hmm",
    "monad_bayes_hmm_exact",
    "monad_bayes_lda",
    "monad_bayes_logreg",
    "normal_normal",
    "normal_normal_exact",
    "rts_smoother",
    "simulate_discrete_hmm",
    "simulate_lgssm_1d",
    "simulate_lgssm_2d",
    "simulate_monad_bayes_hmm_data",
    "simulate_monad_bayes_lda_data",
    "simulate_monad_bayes_logreg_data",
    "simulate_stochastic_volatility",
    "sprinkler",
    "sprinkler_exact",
    "stochastic_volatility",
]
