"""The model graph: sites of a program and the dependencies between them, as networkx.

Dependencies are found by NumPyro's provenance tracking (``get_model_relations``): an edge
``a -> b`` means the distribution of site ``b`` was computed from the value of site ``a``.
Inside a ``ppl.markov`` step the provenance is tracked for the whole stacked path, so for
sites of a step we keep only edges in program order (a step cannot depend on a later site
of the same step); such nodes carry ``markov=True``.
"""

from __future__ import annotations

import jax
import networkx as nx
from numpyro.infer.inspect import get_model_relations
from ppl.semantics.trace import record, site_kind

from ppl.primitives import in_markov_step


def model_graph(model, *args, **kwargs) -> nx.DiGraph:
    """A DiGraph whose nodes are the program's sites (attributes: ``kind``,
    ``distribution``, ``plates``, ``markov``) and whose edges are dependencies."""
    _, _, raw = record(model, jax.random.key(0), args, kwargs)
    relations = get_model_relations(model, model_args=args, model_kwargs=kwargs)
    order = {name: i for i, name in enumerate(raw)}
    graph = nx.DiGraph()
    for name, site in raw.items():
        kind = site_kind(site)
        if kind is None:
            continue
        graph.add_node(
            name,
            kind=kind,
            distribution=relations["sample_dist"].get(name, type(site.get("fn")).__name__),
            plates=[f.name for f in site.get("cond_indep_stack", ())],
            markov=in_markov_step(site),
        )
    for child, parents in relations["sample_sample"].items():
        for parent in parents:
            if parent not in graph or child not in graph:
                continue
            both_markov = graph.nodes[parent]["markov"] and graph.nodes[child]["markov"]
            if both_markov and order[parent] > order[child]:
                continue
            graph.add_edge(parent, child)
    return graph


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT text of a model graph: observed sites shaded, markov sites dashed."""
    lines = ["digraph model {"]
    for name, attrs in graph.nodes(data=True):
        style = ["filled"] if attrs.get("kind") == "observed" else []
        if attrs.get("markov"):
            style.append("dashed")
        shape = "box" if attrs.get("kind") in ("deterministic", "factor") else "ellipse"
        label = f"{name}\\n{attrs.get('distribution', '')}"
        lines.append(
            f'  "{name}" [label="{label}", shape={shape}, style="{",".join(style)}", '
            'fillcolor="gray85"];'
        )
    lines += [f'  "{a}" -> "{b}";' for a, b in graph.edges]
    lines.append("}")
    return "\n".join(lines)
