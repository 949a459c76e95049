"""Move a synapse's bias past a MaxPool2d into the neuron after it.

``Conv2d(bias) -> MaxPool2d -> Neuron`` (snnTorch's tutorial CSNN, Norse's ConvNet) pools
currents that carry a constant; Loihi has no max over currents plus a constant, but
``max(x + b) = max(x) + b`` for a per-channel ``b``, and a neuron whose current does not
decay (``du = 1``: ``u = x``) adds its input to ``v`` exactly as it adds ``bias``. So the
bias leaves the synapse and joins the neuron's ``bias``. Exact in float; other cases
(a decaying current, several consumers) are left as they are.
"""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph


def move_bias_after_maxpool(graph: Graph) -> Graph:
    """``Conv2d(b) -> MaxPool2d -> Neuron(du=1)`` becomes ``Conv2d -> MaxPool2d -> Neuron(bias + b)``."""
    graph = graph.copy()
    for name in graph.order():
        pool = graph.node(name)
        if not isinstance(pool, ir.MaxPool2d):
            continue
        (src,) = graph.inputs_of(name)
        conv = graph.node(src)
        users = graph.consumers(name)
        if not isinstance(conv, ir.Conv2d) or conv.bias is None or not np.any(conv.bias) \
                or graph.consumers(src) != [name] or len(users) != 1:
            continue
        neuron = graph.node(users[0])
        if not isinstance(neuron, ir.Neuron) or not np.all(neuron.du == 1.0) or \
                graph.delay(src, name) or graph.delay(name, users[0]) or len(graph.inputs_of(users[0])) != 1:
            continue
        b = conv.bias.reshape(-1, 1, 1)
        neuron.bias = np.asarray(neuron.bias + b, dtype=np.float64)
        conv.bias = None
    return graph
