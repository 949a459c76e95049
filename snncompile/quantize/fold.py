"""Fold per-channel gains (1x1 depthwise convs) into the conv before them, exactly.

Lava's Conv ignores ``weight_exp``, so two convs in a row multiply their integer scales
with no shift in between and cannot both keep 8-bit mantissas. The common case is a
per-channel gain after a conv (e.g. SpikingJelly's ``decay_input`` 1/tau, or a BatchNorm
split off by the frontend): ``D(P(x)) = P'(x)`` with ``P'.weight = g * P.weight`` and
``P'.bias = g * P.bias + D.bias`` -- exact in float, so the quantizer sees one synapse.
When P has other consumers it is kept for them (the folded copy reads P's input). In a
transformer graph a positive gain after ``P -> MaxPool2d`` folds into P too (a positive
gain and a per-channel shift commute with max): the quantizer keeps P's bias there.
"""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir


def _is_channel_gain(node, graph) -> bool:
    if not isinstance(node, ir.Conv2d):
        return False
    co, cig, kh, kw = node.weight.shape
    c_in = graph.shape(graph.inputs_of(node.name)[0])[0]
    return (cig == 1 and kh == kw == 1 and node.groups == c_in == co and node.stride == (1, 1)
            and node.padding == (0, 0))


def fold_channel_gains(graph) -> list[str]:
    """Rewrite ``graph`` in place; returns the names of the folded gain nodes."""
    graph.infer_shapes()
    from .calibrate import TRANSFORMER_KINDS
    transformer = any(isinstance(n, TRANSFORMER_KINDS) for n in graph)
    folded = []
    for name in list(graph.order()):
        node = graph.node(name)
        if not _is_channel_gain(node, graph):
            continue
        (src,) = graph.inputs_of(name)
        pool = None
        if transformer and isinstance(graph.node(src), ir.MaxPool2d) and np.all(node.weight > 0) \
                and not graph.delay(src, name):
            # max(g * x) + b == max(g * x + b) for g > 0: the gain moves before the pool
            pool, (src,) = src, graph.inputs_of(src)
        prev = graph.node(src)
        if not isinstance(prev, ir.Conv2d) or graph.delay(src, pool or name):
            continue
        g = node.weight.reshape(-1)
        bias = (np.zeros(len(g)) if prev.bias is None else prev.bias) * g
        if node.bias is not None:
            bias = bias + node.bias
        merged = ir.Conv2d(name, weight=prev.weight * g[:, None, None, None], bias=bias,
                           stride=prev.stride, padding=prev.padding, dilation=prev.dilation,
                           groups=prev.groups)
        if pool:     # conv -> pool -> gain  becomes  conv' -> pool' (pool' named as the gain was)
            if graph.consumers(src) == [pool] and graph.consumers(pool) == [name]:
                graph.replace(src, type(prev)(**{**vars(merged), "name": src}))
                graph.bypass(name)
            else:    # the pooled value has other consumers: the gain's branch gets its own copies
                (prev_in,) = graph.inputs_of(src)
                consumers = [(c, dict(graph.nx.edges[name, c])) for c in graph.consumers(name)]
                graph.remove(name)
                graph.add(type(prev)(**{**vars(merged), "name": f"{name}.conv"}), [prev_in])
                old = graph.node(pool)
                graph.add(type(old)(**{**vars(old), "name": name}), [f"{name}.conv"])
                for c, data in consumers:
                    graph.nx.add_edge(name, c, **{k: v for k, v in data.items() if k != "shape"})
            folded.append(name)
            continue
        (prev_in,) = graph.inputs_of(src)
        consumers = [(c, dict(graph.nx.edges[name, c])) for c in graph.consumers(name)]
        graph.remove(name)
        graph.add(merged, [prev_in], delayed=[prev_in] if graph.delay(prev_in, src) else [])
        for c, data in consumers:
            graph.nx.add_edge(name, c, **{k: v for k, v in data.items() if k != "shape"})
        if not graph.consumers(src):
            graph.remove(src)
        folded.append(name)
    graph.infer_shapes()
    return folded
