"""Realign the graded operand of a membrane shortcut with a Scale that has a weight exponent.

An Add sums currents with no weights of its own, so every stream into it needs one integer
scale. When one stream is the output of a synapse on graded messages (SpikingResformer's
prologue conv on the image, then a max pool; SDT v2's encode conv; a 1x1 channel gain on
the shortcut itself) and another a synapse on spikes, the common scale is the smaller one,
and the graded synapse's 8-bit weights (a Conv has no weight exponent on Loihi) round to 0.
On a chip the graded stream reaches the sum through a one-to-one synapse of its own, with
Lava Dense's ``weight_exp``: here an ``ir.Scale`` whose ``SynapseFixed.weight_exp`` the
quantizer sets (``a = wrap24(shift(w * m, weight_exp) + bias)``, ``ir.fixed``). Then each
synapse keeps its own scale and the Scale's 8-bit mantissa times ``2**weight_exp`` maps one
onto the other: exact in float (an identity, or the channel gain it replaces), one rounding
of the shortcut stream in fixed point.

The same exponent serves every Scale of a real stream (a token mean's ``1/n``): at exponent 0
its mantissa was ``w * gain`` rounded, 1 bit for SDT v2's ``* 1/32``.

Only spiking-transformer graphs (they run on the emulator's torch engine, which implements
Scale); a plain network keeps its Adds for Lava.
"""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.passes.operands import value_domains

from .calibrate import TRANSFORMER_KINDS


def producer(graph, name: str) -> str:
    """The node behind max pools and layouts."""
    while isinstance(graph.node(name), (ir.MaxPool2d,) + ir.LAYOUTS):
        name = graph.inputs_of(name)[0]
    return name


def readers(graph, name: str, through_add: bool = False) -> set[str]:
    """The nodes that read ``name``'s value, behind max pools and layouts (and Adds)."""
    passing = (ir.MaxPool2d,) + ir.LAYOUTS + ((ir.Add,) if through_add else ())
    out = set()
    for c in graph.consumers(name):
        out |= readers(graph, c, through_add) if isinstance(graph.node(c), passing) else {c}
    return out


def _is_channel_gain(node, graph) -> bool:
    if not isinstance(node, ir.Conv2d):
        return False
    co, cig, kh, kw = node.weight.shape
    return (cig == 1 and (kh, kw) == (1, 1) and node.groups == co == graph.shape(graph.inputs_of(node.name)[0])[0]
            and node.stride == (1, 1) and node.padding == (0, 0))


def _as_scale(graph, name: str) -> None:
    node = graph.node(name)
    c = node.weight.shape[0]
    graph.replace(name, ir.Scale(name, weight=node.weight.reshape(c, 1, 1),
                                 bias=None if node.bias is None else np.reshape(node.bias, (c, 1, 1))))


def _insert_identity(graph, src: str, add: str) -> str:
    name = f"{src}.realign"
    while name in graph:
        name += "_"
    index, delay = graph.nx.edges[src, add]["index"], graph.delay(src, add)
    graph.nx.remove_edge(src, add)
    graph.add(ir.Scale(name, weight=np.array(1.0)), [src])
    graph.nx.add_edge(name, add, index=index, delay=delay)
    return name


def realign_shortcuts(graph) -> set[str]:
    """Rewrite ``graph`` in place; returns the names of its realigning Scales (the quantizer
    gives exactly these a weight exponent). An Add with an operand from a synapse on graded
    messages gets a realigning Scale on every synapse operand (a channel gain feeding it only
    becomes that Scale); a channel gain that reads such an Add (the realigned stream into its
    neuron) becomes one too; so does every Scale of a real stream (SDT v2's token mean
    ``* 1/32`` kept 1 bit of mantissa at e = 0: 58 % more spikes in the LIF after it)."""
    if not any(isinstance(n, TRANSFORMER_KINDS) for n in graph):
        return set()
    graph.infer_shapes()
    dom = value_domains(graph)
    made: set[str] = set()
    joined: set[str] = set()
    for add in [n.name for n in graph if isinstance(n, ir.Add)]:
        srcs = [s for s in graph.inputs_of(add) if isinstance(graph.node(producer(graph, s)), ir.SYNAPSES)]
        if not any(dom[graph.inputs_of(producer(graph, s))[0]] == "real" for s in srcs):
            continue                                    # synapses on spikes share one scale
        joined.add(add)
        for src in srcs:
            if _is_channel_gain(graph.node(src), graph) and graph.consumers(src) == [add]:
                _as_scale(graph, src)
                made.add(src)
            else:
                made.add(_insert_identity(graph, src, add))
    for node in list(graph):
        name = node.name
        if name not in made and _is_channel_gain(node, graph) and producer(graph, graph.inputs_of(name)[0]) in joined:
            _as_scale(graph, name)
            made.add(name)
        elif isinstance(node, ir.Scale) and dom[graph.inputs_of(name)[0]] == "real":
            made.add(name)      # a Scale of a real stream (a mean's 1/n): its mantissa needs the exponent
    graph.infer_shapes()
    return made
