"""Reading a NIR file into a flat list of leaf nodes and edges, with recurrence found.

NIR graphs nest (a ``NIRGraph`` node is a subgraph with its own Input/Output nodes) and
may contain cycles (a population feeding itself through a synapse). The IR has neither
nesting nor undelayed cycles, so this module flattens subgraphs (names joined with ``.``),
removes pass-through nodes (inner Input/Output, Identity) and marks the edges that close
a cycle: those become the IR's delayed (``delay=1``) edges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nir

from snncompile.errors import SnnCompileError

#: Nodes that only pass their (summed) input on.
_PASS_THROUGH = (nir.Input, nir.Output, nir.ir.graph.Identity)


@dataclass
class FlatNIR:
    """Leaf NIR nodes by flattened name, in file order, and the edges between them."""

    nodes: dict[str, nir.NIRNode]
    edges: list[tuple[str, str]]
    input: str
    output: str
    #: Edges closing a cycle: they carry the previous step's value.
    back_edges: set[tuple[str, str]] = field(default_factory=set)

    def inputs_of(self, name: str) -> list[str]:
        return [a for a, b in self.edges if b == name]

    def consumers(self, name: str) -> list[str]:
        return [b for a, b in self.edges if a == name]

    def forward_order(self) -> list[str]:
        """Topological order ignoring back edges (file order among equals)."""
        pending = {n: sum(1 for a, b in self.edges if b == n and (a, b) not in self.back_edges)
                   for n in self.nodes}
        ready = [n for n in self.nodes if pending[n] == 0]
        order = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for a, b in self.edges:
                if a == n and (a, b) not in self.back_edges:
                    pending[b] -= 1
                    if pending[b] == 0:
                        ready.append(b)
        return order


def load(path) -> nir.NIRGraph:
    """``nir.read`` with every failure (missing, not HDF5, not NIR, bad node) named by file."""
    path = Path(path)
    from snncompile.commands._common import check_input_file

    check_input_file(path, "NIR")
    _check_hdf5(path)
    try:
        graph = nir.read(str(path), type_check=False)  # shapes: checked per node by the importer
    except Exception as exc:  # h5py OSError, KeyError for missing groups, node constructors
        raise SnnCompileError(f"NIR file '{path}' is not a readable NIR graph "
                              f"({type(exc).__name__}: {exc})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise SnnCompileError(f"NIR file '{path}' holds a single {type(graph).__name__} node, not a graph")
    return graph


#: Bytes of HDF5 data a NIR file may declare (a 35 KB file can declare gigabytes it never
#: wrote); checked before nir.read allocates them. Real NIR networks: < 100 MB.
MAX_DATASET_BYTES = 1 << 30


def _check_hdf5(path: Path) -> None:
    """Before nir.read: declared dataset sizes within :data:`MAX_DATASET_BYTES`, and every
    node type one NIR defines (nir.read asserts with an empty message otherwise)."""
    import h5py

    known = {c.__name__ for c in vars(nir).values() if isinstance(c, type) and issubclass(c, nir.NIRNode)}
    problems, total = [], [0]

    def visit(name, item):
        if not problems and any(not c.isprintable() for c in name):
            problems.append(f"the name {name!r} holds a control character (a newline, tab, ...); names "
                            f"must be printable text")
        if problems or not isinstance(item, h5py.Dataset):
            return
        total[0] += int(item.size) * item.dtype.itemsize
        if total[0] > MAX_DATASET_BYTES:
            problems.append(f"dataset '{name}' of shape {item.shape} declares more data than the "
                            f"{MAX_DATASET_BYTES >> 20} MiB a NIR network may hold")
        elif name.rsplit("/", 1)[-1] == "type" and item.dtype.kind in "SO" and item.size == 1:
            value = item[()]
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if text not in known:
                node = name.rsplit("/", 1)[0] if "/" in name else "(root)"
                problems.append(f"node '{node}' has type {text!r}, which NIR {nir_version()} does not "
                                f"define (known: {', '.join(sorted(known - {'NIRNode'}))})")

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as exc:
        raise SnnCompileError(f"NIR file '{path}' is not a readable NIR graph (not HDF5: {exc})") from None
    if problems:
        raise SnnCompileError(f"NIR file '{path}': {problems[0]}")


def nir_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("nir")
    except PackageNotFoundError:
        return "(unknown version)"


def flatten(graph: nir.NIRGraph, source: str = "NIR graph") -> FlatNIR:
    """Flatten subgraphs, drop pass-through nodes, find back edges (see module docstring)."""
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    _collect(graph, "", nodes, edges, source)
    inputs = [n for n in nodes if "." not in n and isinstance(nodes[n], nir.Input)]
    outputs = [n for n in nodes if "." not in n and isinstance(nodes[n], nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise SnnCompileError(f"{source}: the IR needs exactly one input and one output node; "
                              f"found inputs {inputs} and outputs {outputs}")
    keep = {inputs[0], outputs[0]}
    for name in [n for n, node in nodes.items() if isinstance(node, _PASS_THROUGH) and n not in keep]:
        preds = [a for a, b in edges if b == name]
        succs = [b for a, b in edges if a == name]
        edges = [(a, b) for a, b in edges if name not in (a, b)]
        edges += [(p, s) for p in preds for s in succs]
        del nodes[name]
    edges = list(dict.fromkeys(edges))
    flat = FlatNIR(nodes, edges, inputs[0], outputs[0])
    flat.back_edges = _back_edges(flat, source)
    return flat


def _collect(graph: nir.NIRGraph, prefix: str, nodes: dict, edges: list, source: str) -> None:
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            _collect(node, f"{prefix}{name}.", nodes, edges, source)
        else:
            nodes[f"{prefix}{name}"] = node
    for src, dst in graph.edges:
        edges.append((_endpoint(graph, prefix, src, "output", source),
                      _endpoint(graph, prefix, dst, "input", source)))


def _endpoint(graph: nir.NIRGraph, prefix: str, ref: str, side: str, source: str) -> str:
    """The leaf node an edge end names: a subgraph stands for its own Input/Output node."""
    head, _, rest = ref.partition(".")
    node = graph.nodes.get(ref)
    if node is None and rest and isinstance(graph.nodes.get(head), nir.NIRGraph):
        return _endpoint(graph.nodes[head], f"{prefix}{head}.", rest, side, source)
    if node is None:
        raise SnnCompileError(f"{source}: edge refers to unknown node '{prefix}{ref}'")
    if isinstance(node, nir.NIRGraph):
        kind = nir.Output if side == "output" else nir.Input
        ends = [n for n, sub in node.nodes.items() if isinstance(sub, kind)]
        if len(ends) != 1:
            raise SnnCompileError(f"{source}: subgraph '{prefix}{ref}' must have exactly one "
                                  f"{kind.__name__} node to be connected, has {len(ends)}")
        return _endpoint(node, f"{prefix}{ref}.", ends[0], side, source)
    return f"{prefix}{ref}"


def _back_edges(flat: FlatNIR, source: str) -> set[tuple[str, str]]:
    """Edges into a node still on the depth-first path from the input: they close a cycle."""
    back, done, on_path = set(), set(), set()
    stack = [(flat.input, iter(flat.consumers(flat.input)))]
    on_path.add(flat.input)
    while stack:
        name, succs = stack[-1]
        nxt = next(succs, None)
        if nxt is None:
            stack.pop()
            on_path.discard(name)
            done.add(name)
        elif nxt in on_path:
            back.add((name, nxt))
        elif nxt not in done:
            on_path.add(nxt)
            stack.append((nxt, iter(flat.consumers(nxt))))
    unreached = [n for n in flat.nodes if n not in done]
    if unreached:
        raise SnnCompileError(f"{source}: node(s) {unreached} cannot be reached from the input "
                              f"node '{flat.input}'")
    return back
