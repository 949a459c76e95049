"""Compose chains of convolutions with no neuron between them into one Conv2d, exactly.

On Loihi a synapse's output is a current into a neuron: ``conv -> conv`` has no chip form,
and quantizing it as graded messages multiplies two integer scales with no shift between
(Lava's Conv has no weight exponent), so one of them loses every weight bit. SDT v2's
RepConv (conv 1x1 -> BatchNorm padded by its own value -> depthwise 3x3 -> conv 1x1 -> BN)
is such a chain; composing it is RepConv's own re-parameterisation: one 3x3 conv with zero
padding 1 and a folded bias.

``P -> D`` (``P`` feeding only ``D``, no delay) becomes one Conv2d named ``D`` when the
composition is exact by geometry:

* ``P`` is 1x1 with stride 1: ``D(pad(P x) + b_P) = (D o P)(pad x) + D(b_P)``; ``P``'s
  border (its padding) is ``b_P``, uniform, so ``D`` may not pad again unless ``b_P == 0``;
* ``D`` is 1x1 with stride 1 and no padding: per tap, ``D o P`` keeps ``P``'s geometry.

Anything else (two spatial kernels, a stride before a 1x1) is left as it is.
"""
from __future__ import annotations

from math import gcd
from typing import Optional

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph

__all__ = ["compose_synapses"]


def _dense(conv: ir.Conv2d) -> np.ndarray:
    """The (C_out, C_in, kh, kw) weight of a grouped conv, zeros off its groups."""
    co, cig, kh, kw = conv.weight.shape
    g = conv.groups
    out = np.zeros((co, cig * g, kh, kw))
    per = co // g
    for i in range(g):
        out[i * per:(i + 1) * per, i * cig:(i + 1) * cig] = conv.weight[i * per:(i + 1) * per]
    return out


def _grouped(dense: np.ndarray) -> tuple[np.ndarray, int]:
    """The fewest-weights grouped form of a dense weight (block-diagonal blocks dropped)."""
    co, ci = dense.shape[:2]
    for g in sorted((d for d in range(1, gcd(co, ci) + 1) if co % d == 0 and ci % d == 0), reverse=True):
        po, pi = co // g, ci // g
        mask = np.kron(np.eye(g, dtype=bool), np.ones((po, pi), dtype=bool))
        if not np.any(dense[~mask]):
            return np.concatenate([dense[i * po:(i + 1) * po, i * pi:(i + 1) * pi] for i in range(g)]), g
    raise AssertionError("groups=1 always fits")


def _bias(conv: ir.Conv2d) -> np.ndarray:
    return np.zeros(conv.weight.shape[0]) if conv.bias is None else np.asarray(conv.bias, dtype=np.float64)


def _is_pointwise(conv: ir.Conv2d) -> bool:
    return conv.weight.shape[2:] == (1, 1) and conv.stride == (1, 1)


def composed(first: ir.Conv2d, then: ir.Conv2d) -> Optional[ir.Conv2d]:
    """``then(first(x))`` as one Conv2d named ``then.name``, or None where that is not exact."""
    p, d = _dense(first), _dense(then)
    bp, bd = _bias(first), _bias(then)
    if _is_pointwise(first) and (then.padding == (0, 0) or not np.any(bp)):
        weight = np.einsum("omij,mc->ocij", d, p[:, :, 0, 0])
        bias = bd + np.einsum("omij,m->o", d, bp)
        geometry = dict(stride=then.stride, dilation=then.dilation,
                        padding=tuple(a + b for a, b in zip(first.padding, then.padding)))
    elif _is_pointwise(then) and then.padding == (0, 0):
        weight = np.einsum("om,mcij->ocij", d[:, :, 0, 0], p)
        bias = bd + d[:, :, 0, 0] @ bp
        geometry = dict(stride=first.stride, dilation=first.dilation, padding=first.padding)
    else:
        return None
    weight, groups = _grouped(weight)
    has_bias = first.bias is not None or then.bias is not None
    return ir.Conv2d(then.name, weight=weight, bias=bias if has_bias else None, groups=groups, **geometry)


def compose_synapses(graph: Graph) -> tuple[Graph, list[str]]:
    """A copy of ``graph`` with every exact ``Conv2d -> Conv2d`` chain composed; also the
    names of the convs composed into their consumer (for the quantizer's report)."""
    graph = graph.copy().validate()
    merged = []
    changed = True
    while changed:
        changed = False
        for name in graph.order():
            node = graph.node(name)
            if not isinstance(node, ir.Conv2d):
                continue
            (src,) = graph.inputs_of(name)
            first = graph.node(src)
            if not isinstance(first, ir.Conv2d) or graph.consumers(src) != [name] or graph.delay(src, name):
                continue
            new = composed(first, node)
            if new is None:
                continue
            graph.replace(name, new)
            graph.bypass(src)
            merged.append(src)
            changed = True
            break
    graph.infer_shapes()
    return graph, merged
