"""The intermediate representation: typed nodes in a networkx graph, and its file formats."""
from snncompile.ir.graph import Graph, graph_differences, graphs_equal
from snncompile.ir.nodes import (
    NODE_TYPES, Add, AvgPool2d, Conv2d, Flatten, Input, Linear, MaxPool2d, Neuron, Node, Output,
    SumPool2d,
)

__all__ = [
    "Graph", "graphs_equal", "graph_differences", "NODE_TYPES", "Node", "Input", "Linear", "Conv2d",
    "SumPool2d", "AvgPool2d", "MaxPool2d", "Flatten", "Add", "Neuron", "Output",
]
