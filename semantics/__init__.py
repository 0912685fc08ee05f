"""Representations of programs, each a pure JAX function of a key (Ścibior et al., POPL
2018, "Denotational validation of higher-order Bayesian inference"):

- :class:`Sampler` — prior / prior predictive simulation
- :class:`Weighted` — likelihood weighting or importance weighting against a proposal
- :class:`Population` — N weighted draws in parallel; evidence estimate
- :class:`Traced` — traces with replay and regeneration (MH)
- :class:`Density` — the log joint, constrained and unconstrained
- :class:`Sequential` — a ``markov`` program as a steppable state-space model
- :class:`Enumerated` — exact evidence, marginals and draws by enumeration (funsor)
- :func:`model_graph` — the dependency graph (networkx), with :func:`to_dot`
- :func:`preserves` — the executable validity check used throughout the tests
- :mod:`ppl.semantics.mafbm` — the Markov approximation of fractional Brownian motion
  (Daems et al., ICLR 2024) that ``ppl.sde`` and ``infer.vsde`` build on
"""

from ppl.semantics import mafbm
from ppl.semantics.density import Density
from ppl.semantics.enumerated import Enumerated
from ppl.semantics.graph import model_graph, to_dot
from ppl.semantics.population import Particles, Population, effective_sample_size, log_evidence
from ppl.semantics.sampler import Draw, Sampler
from ppl.semantics.sequential import Sequential, StateSpace, StepResult
from ppl.semantics.trace import Trace, record
from ppl.semantics.traced import Traced
from ppl.semantics.validity import ValidityReport, preserves
from ppl.semantics.weighted import Weighted, WeightedDraw

__all__ = [
    "Density", "Draw", "Enumerated", "Particles", "Population", "Sampler", "Sequential",
    "StateSpace", "StepResult", "Trace", "Traced", "ValidityReport", "Weighted",
    "WeightedDraw", "effective_sample_size", "log_evidence", "mafbm", "model_graph",
    "preserves",
    "record", "to_dot",
]
