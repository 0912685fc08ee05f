"""The sprinkler Bayesian network (Pearl 1988; Russell & Norvig's "wet grass" example).

::

    cloudy    ~ Bernoulli(0.5)
    sprinkler ~ Bernoulli(0.1 if cloudy else 0.5)
    rain      ~ Bernoulli(0.8 if cloudy else 0.2)
    wet       ~ Bernoulli(P[sprinkler, rain]),  P = [[0.0, 0.9], [0.9, 0.99]]   (observed)

Every latent site is binary, so the exact posterior is a sum over the 2^3 joint states
(:func:`sprinkler_exact`). With ``wet = 1``: P(wet) = 0.6471, P(rain | wet) = 0.7079,
P(sprinkler | wet) = 0.4298, P(cloudy | wet) = 0.5758.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

import ppl
from ppl import dist

_P_CLOUDY = 0.5
_P_SPRINKLER = (0.5, 0.1)  # indexed by cloudy
_P_RAIN = (0.2, 0.8)  # indexed by cloudy
_P_WET = ((0.0, 0.9), (0.9, 0.99))  # indexed by [sprinkler, rain]

#: The latent sites of :func:`sprinkler`, in the order they are drawn.
SPRINKLER_SITES = ("cloudy", "sprinkler", "rain")


@ppl.model
def sprinkler(wet=1):
    """The sprinkler network with ``wet`` observed (site ``"wet"``); latent binary sites
    ``"cloudy"``, ``"sprinkler"``, ``"rain"``. The conditional probability tables are
    indexed with ``jnp`` so the program also runs with the sites enumerated (their values
    then are broadcast tensors). Returns ``(cloudy, sprinkler, rain)``.

    NumPyro clamps Bernoulli probabilities away from 0, so the impossible state (no
    sprinkler, no rain, wet) gets log weight about -88.7 in float32 (-708 in float64)
    instead of -inf: a relative error below 1e-38 in any sum over states.
    """
    cloudy = ppl.sample("cloudy", dist.Bernoulli(probs=_P_CLOUDY))
    c = jnp.asarray(cloudy, dtype=jnp.int32)
    sprinkler_on = ppl.sample("sprinkler", dist.Bernoulli(probs=jnp.array(_P_SPRINKLER)[c]))
    rain = ppl.sample("rain", dist.Bernoulli(probs=jnp.array(_P_RAIN)[c]))
    s, r = jnp.asarray(sprinkler_on, jnp.int32), jnp.asarray(rain, jnp.int32)
    ppl.observe("wet", dist.Bernoulli(probs=jnp.array(_P_WET)[s, r]), jnp.asarray(wet))
    return cloudy, sprinkler_on, rain


def _log_joint_table(wet):
    """log p(cloudy, sprinkler, rain, wet) as a (2, 2, 2) float64 array."""
    table = np.zeros((2, 2, 2))
    for c, s, r in itertools.product((0, 1), repeat=3):
        p_s, p_r, p_w = _P_SPRINKLER[c], _P_RAIN[c], _P_WET[s][r]
        table[c, s, r] = (
            (_P_CLOUDY if c else 1 - _P_CLOUDY)
            * (p_s if s else 1 - p_s)
            * (p_r if r else 1 - p_r)
            * (p_w if wet else 1 - p_w)
        )
    with np.errstate(divide="ignore"):
        return np.log(table)


def sprinkler_exact(wet=1):
    """Exact posterior of :func:`sprinkler` by brute-force enumeration of the 8 joint states.

    Returns a dict: ``log_evidence`` = log P(wet), ``marginals`` = {site: P(site = 1 | wet)}
    for the three latent sites, and ``joint`` (2, 2, 2) = P(cloudy, sprinkler, rain | wet).
    """
    log_joint = _log_joint_table(int(wet))
    evidence = np.exp(log_joint).sum()
    joint = np.exp(log_joint) / evidence
    marginals = {
        "cloudy": float(joint[1].sum()),
        "sprinkler": float(joint[:, 1].sum()),
        "rain": float(joint[:, :, 1].sum()),
    }
    return {"log_evidence": float(np.log(evidence)), "marginals": marginals, "joint": joint}
