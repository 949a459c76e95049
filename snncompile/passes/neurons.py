"""Neuron normalisation passes."""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph


def shift_reset_values(graph: Graph) -> Graph:
    """Shift reset-to-value neurons so they reset to 0 (``V' = V - V_reset``).

    With ``v = v' + r`` the IR update ``v = v(1-dv) + u + bias`` becomes
    ``v' = v'(1-dv) + u + bias - dv*r``, the threshold ``thr - r`` and the initial
    state ``v_init - r``; spikes are unchanged. Loihi and Lava reset to 0, so this is
    what lets SpikingJelly ``v_reset != 0`` and Norse ``v_reset`` map. Only for
    ``reset_mode == "zero"``; other modes ignore ``reset_value`` (it is cleared).
    Works on a copy.
    """
    graph = graph.copy()
    for name in graph.order():
        node = graph.node(name)
        if not isinstance(node, ir.Neuron) or not np.any(node.reset_value):
            continue
        r = node.reset_value
        if node.reset_mode == "zero":
            node.bias = np.asarray(node.bias - node.dv * r, dtype=np.float64)
            node.threshold = np.asarray(node.threshold - r, dtype=np.float64)
            node.v_init = np.asarray(node.v_init - r, dtype=np.float64)
        node.reset_value = np.zeros(np.shape(r), dtype=np.float64)
    return graph
