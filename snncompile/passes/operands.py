"""What each activation holds (spike / count / real), and the operand kinds of products.

A spiking transformer multiplies activations with each other (``q @ k^T``, ``k * v``). How
such a product is computed on a chip and how it is counted depends on what its operands
hold: two spike trains (an AND and a popcount), spikes and integer counts (a sum of
selected integers), or spikes and a real-valued current. :func:`value_domains` derives it
from the producers; :func:`mark_operands` writes it onto every MatMul and Mul, so later
stages (ONNX, quantizer, energy) read it from the node instead of re-deriving it.
"""
from __future__ import annotations

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph

_RANK = {"spike": 0, "count": 1, "real": 2}


def _widest(kinds: list[str]) -> str:
    return max(kinds, key=_RANK.__getitem__) if kinds else "spike"


def value_domains(graph: Graph) -> dict[str, str]:
    """Node name -> "spike" (0/1), "count" (integers >= 0) or "real", in topological order.

    The graph input counts as real (its values are data). Layouts, max pools and the
    readout pass their input's domain on; a sum or a product of spikes and counts is a
    count, except that a product of two spike trains is spikes again (an AND)."""
    dom: dict[str, str] = {}
    order = graph.order()
    for name in order + (order if graph.is_recurrent else []):
        node = graph.node(name)
        ins = [dom.get(i, "spike") for i in graph.inputs_of(name)]
        widest = _widest(ins)
        if isinstance(node, ir.Input):
            dom[name] = "real"
        elif isinstance(node, ir.Neuron):
            dom[name] = "spike"
        elif isinstance(node, ir.LAYOUTS + (ir.MaxPool2d, ir.Output)):
            dom[name] = widest
        elif isinstance(node, ir.Mul):
            dom[name] = "spike" if widest == "spike" else widest
        elif isinstance(node, (ir.MatMul, ir.ReduceSum, ir.Add, ir.SumPool2d)):
            dom[name] = "real" if widest == "real" else "count"
        else:  # Linear, Conv2d, AvgPool2d, Scale: currents
            dom[name] = "real"
    return dom


def mark_operands(graph: Graph) -> Graph:
    """In place: set ``lhs``/``rhs`` of every MatMul and Mul from its producers. Returns the graph."""
    dom = value_domains(graph)
    for node in graph:
        if isinstance(node, ir.PRODUCTS):
            a, b = graph.inputs_of(node.name)
            node.lhs, node.rhs = dom[a], dom[b]
    return graph


def check_operands(graph: Graph) -> None:
    """Raise naming the node when a MatMul/Mul's recorded operand kinds disagree with the graph
    (an edited or hostile file); used when reading ONNX."""
    dom = value_domains(graph)
    for node in graph:
        if isinstance(node, ir.PRODUCTS):
            a, b = graph.inputs_of(node.name)
            if (node.lhs, node.rhs) != (dom[a], dom[b]):
                raise SnnCompileError(f"node '{node.name}' ({node.kind}): records operands "
                                      f"({node.lhs}, {node.rhs}) but its inputs hold ({dom[a]}, {dom[b]})")
