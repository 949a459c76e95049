"""Give raw spikes that join a current an identity synapse of their own.

A ResNet block adds its shortcut spikes to the last conv's current before the neuron
(``Add(conv(x), spikes) -> Neuron``, SpikingJelly's Spiking ResNet). In float that is
exact as it is; in fixed point an Add needs both operands at one scale, and raw spikes
are fixed at scale 1 (one unit per spike), which forces the conv's weights to scale 1
too: they all round to 0. Routing the spikes through an identity synapse (a diagonal
Linear or a depthwise 1x1 Conv2d with weight 1) lets the quantizer pick one scale for
both operands, as Loihi would do it (spikes reach a neuron only through synapses). The
same holds for a sum of spikes straight into a neuron (SEW AND: ``Add(a, b) -> Neuron``).
"""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph

#: Nodes whose output is the spikes of a neuron (possibly pooled or re-indexed).
_SPIKE_PATH = (ir.MaxPool2d,) + ir.LAYOUTS


def _is_spikes(graph: Graph, name: str) -> bool:
    """Spikes or a sum of spikes (SEW ADD's 0/1/2 stream), possibly pooled or flattened: the
    values are spike counts at scale 1, not a synapse's current."""
    node = graph.node(name)
    while isinstance(node, _SPIKE_PATH):
        node = graph.node(graph.inputs_of(node.name)[0])
    if isinstance(node, ir.Add):
        return all(_is_spikes(graph, i) for i in graph.inputs_of(node.name) if not graph.delay(i, node.name))
    return isinstance(node, ir.Neuron)


def _identity(name: str, shape: tuple) -> ir.Node:
    if len(shape) == 1:
        return ir.Linear(name, weight=np.eye(shape[0]))
    if len(shape) == 3:
        return ir.Conv2d(name, weight=np.ones((shape[0], 1, 1, 1)), groups=shape[0])
    return ir.Scale(name, weight=np.array(1.0))      # token layouts (N, C), heads: one-to-one


def identity_synapses_for_spikes(graph: Graph) -> list[str]:
    """In place: an identity synapse on each spike operand of an Add that also has a current
    operand or feeds a neuron; returns the names of the synapses added."""
    added = []
    for name in graph.order():
        node = graph.node(name)
        if not isinstance(node, ir.Add):
            continue
        ins = graph.inputs_of(name)
        spikes = [i for i in ins if _is_spikes(graph, i)]
        into_neuron = any(isinstance(graph.node(c), ir.Neuron) for c in graph.consumers(name))
        if not spikes or (len(spikes) == len(ins) and not into_neuron):
            continue  # a sum of spikes into a synapse (SEW ADD) is a graded message, fine as it is
        for src in spikes:
            new = f"{src}.to_{name}"
            while new in graph:
                new += "_"
            edge = graph.nx.edges[src, name]
            index, delay = edge["index"], edge.get("delay", 0)
            graph.nx.remove_edge(src, name)
            graph.add(_identity(new, tuple(graph.shape(src))), [src])
            graph.nx.add_edge(new, name, index=index, delay=delay)
            added.append(new)
    if added:
        graph.infer_shapes()
    return added
