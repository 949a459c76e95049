"""The IR graph: a networkx DiGraph of typed nodes, with shapes checked on every edge.

Each networkx node ``name`` carries ``node=<Node dataclass>`` and, after
:meth:`Graph.infer_shapes`, ``shape=<output shape>``. Each edge carries ``index`` (the
position of the input at its consumer, so an Add keeps its operand order), ``shape``
and ``delay`` (0 or 1). Passes are plain functions ``Graph -> Graph`` that work on a copy.

Recurrence: an edge with ``delay=1`` delivers the producer's output of the *previous*
step (zeros at step 0), e.g. a neuron population feeding itself through a synapse
(``Neuron -> Linear --delay 1--> Add/Neuron``). Delayed edges are left out of the
topological order, so the graph without them must be acyclic.
"""
from __future__ import annotations

import copy as _copy
from typing import Iterable, Iterator, Optional

import networkx as nx
import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir.nodes import Add, Input, Neuron, Node, Output, Shape


class Graph:
    """A spiking network as a DAG of IR nodes with exactly one Input and one Output."""

    def __init__(self, name: str = "snn", timesteps: Optional[int] = None):
        self.name = name
        #: Number of steps the model was exported for (the default for running it).
        self.timesteps = timesteps
        #: Free-form metadata carried through ONNX (framework, source file, quantization...).
        self.meta: dict[str, str] = {}
        self.nx = nx.DiGraph()

    # -- building -------------------------------------------------------------
    def add(self, node: Node, inputs: Iterable[str] = (), delayed: Iterable[str] = ()) -> str:
        """Add ``node`` fed by the nodes named in ``inputs`` (in operand order).

        Names listed in ``delayed`` (a subset of ``inputs``) are recurrent inputs: their
        edge has ``delay=1``. A recurrent source may be added later with :meth:`add_edge`.
        """
        if node.name in self.nx:
            raise SnnCompileError(f"duplicate node name '{node.name}'")
        inputs = list(inputs)
        for src in inputs:
            if src not in self.nx:
                raise SnnCompileError(f"node '{node.name}' ({node.kind}): unknown input '{src}'")
        delayed = set(delayed)
        self.nx.add_node(node.name, node=node)
        for i, src in enumerate(inputs):
            self.nx.add_edge(src, node.name, index=i, delay=int(src in delayed))
        return node.name

    def add_edge(self, src: str, dst: str, delay: int = 0) -> None:
        """Append ``src`` as the last input of ``dst`` (use ``delay=1`` for a recurrent edge)."""
        for name in (src, dst):
            if name not in self.nx:
                raise SnnCompileError(f"unknown node '{name}'")
        if delay not in (0, 1):
            raise SnnCompileError(f"edge {src} -> {dst}: delay must be 0 or 1, got {delay}")
        self.nx.add_edge(src, dst, index=len(self.inputs_of(dst)), delay=int(delay))

    def delay(self, src: str, dst: str) -> int:
        """1 if the edge ``src -> dst`` is recurrent (previous step's value), else 0."""
        return int(self.nx.edges[src, dst].get("delay", 0))

    @property
    def is_recurrent(self) -> bool:
        return any(d.get("delay", 0) for _, _, d in self.nx.edges(data=True))
    def remove(self, name: str) -> None:
        self.nx.remove_node(name)

    def replace(self, name: str, node: Node) -> None:
        """Swap the node object stored under ``name`` (same name, same edges)."""
        if node.name != name:
            raise ValueError("replace keeps the node name")
        self.nx.nodes[name]["node"] = node

    def bypass(self, name: str) -> None:
        """Remove a single-input node, wiring its input straight to its consumers."""
        (src,) = self.inputs_of(name)
        for dst in list(self.nx.successors(name)):
            data = dict(self.nx.edges[name, dst])
            data["delay"] = max(data.get("delay", 0), self.delay(src, name))
            data.pop("shape", None)
            self.nx.add_edge(src, dst, **data)
        self.nx.remove_node(name)

    def set_inputs(self, name: str, inputs: list[str]) -> None:
        for src in list(self.nx.predecessors(name)):
            self.nx.remove_edge(src, name)
        for i, src in enumerate(inputs):
            self.nx.add_edge(src, name, index=i, delay=0)

    def copy(self) -> "Graph":
        return _copy.deepcopy(self)

    # -- reading --------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self.nx.nodes[name]["node"]

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def inputs_of(self, name: str) -> list[str]:
        preds = [(self.nx.edges[p, name]["index"], p) for p in self.nx.predecessors(name)]
        return [p for _, p in sorted(preds)]

    def consumers(self, name: str) -> list[str]:
        return sorted(self.nx.successors(name))

    def order(self) -> list[str]:
        """Node names in a deterministic topological order."""
        rank = {n: f"{i:09d}" for i, n in enumerate(self.nx.nodes)}
        forward = nx.DiGraph()
        forward.add_nodes_from(self.nx.nodes)
        forward.add_edges_from((a, b) for a, b, d in self.nx.edges(data=True) if not d.get("delay", 0))
        try:
            return list(nx.lexicographical_topological_sort(forward, key=rank.__getitem__))
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(forward)
            raise SnnCompileError(f"graph '{self.name}' has a cycle without a delayed (recurrent) "
                                  f"edge through {cycle}") from None

    def __iter__(self) -> Iterator[Node]:
        for name in self.order():
            yield self.node(name)

    @property
    def input(self) -> Input:
        found = [n for n in self.nx.nodes if isinstance(self.node(n), Input)]
        if len(found) != 1:
            raise SnnCompileError(f"graph '{self.name}' must have exactly one Input, has {len(found)}")
        return self.node(found[0])

    @property
    def output(self) -> Output:
        found = [n for n in self.nx.nodes if isinstance(self.node(n), Output)]
        if len(found) != 1:
            raise SnnCompileError(f"graph '{self.name}' must have exactly one Output, has {len(found)}")
        return self.node(found[0])

    def shape(self, name: str) -> Shape:
        if "shape" not in self.nx.nodes[name]:
            self.infer_shapes()
        return self.nx.nodes[name]["shape"]

    # -- checking -------------------------------------------------------------
    def infer_shapes(self) -> "Graph":
        """Compute every node's output shape; raise naming the node on any mismatch."""
        order = self.order()
        for name in order:
            self.nx.nodes[name].pop("shape", None)
        for _ in range(2 if self.is_recurrent else 1):
            self._infer_pass(order)
        return self

    def _infer_pass(self, order: list[str]) -> None:
        for name in order:
            node = self.node(name)
            ins = self.inputs_of(name)
            if node.arity is not None and len(ins) != node.arity:
                raise SnnCompileError(
                    f"node '{name}' ({node.kind}): expects {node.arity} input(s), has {len(ins)}")
            known = [self.nx.nodes[i]["shape"] for i in ins if "shape" in self.nx.nodes[i]]
            if len(known) < len(ins):
                # A recurrent input not reached yet: an Add takes the shape of its other
                # operands for now; the second pass checks every edge.
                if isinstance(node, Add) and known:
                    self.nx.nodes[name]["shape"] = known[0]
                continue
            in_shapes = [self.nx.nodes[i]["shape"] for i in ins]
            shape = tuple(int(s) for s in node.out_shape(in_shapes))
            self.nx.nodes[name]["shape"] = shape
            for i in ins:
                self.nx.edges[i, name]["shape"] = self.nx.nodes[i]["shape"]

    def validate(self) -> "Graph":
        """Shapes, one Input and one Output, finite parameters. Returns self."""
        _ = self.input, self.output
        for node in self:
            for key, arr in node.arrays().items():
                ok = np.isfinite(arr)
                if key == "threshold" and node.kind == "Neuron":
                    ok = ok | np.isposinf(arr)   # +inf: a leaky integrator that never fires
                if arr.dtype.kind in "fc" and not np.all(ok):
                    bad = int(np.size(arr) - np.count_nonzero(ok))
                    raise SnnCompileError(
                        f"node '{node.name}' ({node.kind}): parameter '{key}' has {bad} NaN/Inf value(s)")
        self.infer_shapes()
        out = self.output
        src = self.inputs_of(out.name)[0]
        if out.mode == "membrane" and not (isinstance(self.node(src), Neuron)
                                           and self.node(src).reset_mode == "none"):
            raise SnnCompileError(f"node '{out.name}' (Output): a membrane readout reads the v of a Neuron "
                                  f"without reset, but its input '{src}' is a {self.node(src).kind}"
                                  + (f" with reset '{self.node(src).reset_mode}'"
                                     if isinstance(self.node(src), Neuron) else ""))
        for name in self.nx.nodes:
            if not isinstance(self.node(name), Output) and not list(self.nx.successors(name)):
                raise SnnCompileError(f"node '{name}' ({self.node(name).kind}) leads nowhere: "
                                      f"its output is not used by the Output")
        return self

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self)} nodes, T={self.timesteps})"


def graphs_equal(a: Graph, b: Graph) -> bool:
    """Same nodes, kinds, attributes, edges (with operand order) and bit-identical arrays."""
    return not graph_differences(a, b)


def graph_differences(a: Graph, b: Graph) -> list[str]:
    """Human-readable list of differences (empty when equal); for tests and round trips."""
    diffs = []
    if set(a.nx.nodes) != set(b.nx.nodes):
        diffs.append(f"node sets differ: {sorted(set(a.nx.nodes) ^ set(b.nx.nodes))}")
        return diffs
    if a.timesteps != b.timesteps:
        diffs.append(f"timesteps {a.timesteps} != {b.timesteps}")
    for name in a.nx.nodes:
        na, nb = a.node(name), b.node(name)
        if type(na) is not type(nb):
            diffs.append(f"{name}: kind {na.kind} != {nb.kind}")
            continue
        if a.inputs_of(name) != b.inputs_of(name):
            diffs.append(f"{name}: inputs {a.inputs_of(name)} != {b.inputs_of(name)}")
        elif [a.delay(i, name) for i in a.inputs_of(name)] != [b.delay(i, name) for i in b.inputs_of(name)]:
            diffs.append(f"{name}: input delays differ")
        if na.attributes() != nb.attributes():
            diffs.append(f"{name}: attributes {na.attributes()} != {nb.attributes()}")
        arrs_a, arrs_b = na.arrays(), nb.arrays()
        if set(arrs_a) != set(arrs_b):
            diffs.append(f"{name}: array fields {sorted(arrs_a)} != {sorted(arrs_b)}")
            continue
        for key in arrs_a:
            x, y = arrs_a[key], arrs_b[key]
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                diffs.append(f"{name}.{key}: arrays differ ({x.dtype}{x.shape} vs {y.dtype}{y.shape})")
        if getattr(na, "fixed", None) != getattr(nb, "fixed", None):
            diffs.append(f"{name}: fixed-point parameters differ")
    return diffs
