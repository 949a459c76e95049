"""Spike self-attentions among a graph's MatMuls, for the Spikingformer energy convention.

Why: the Spikingformer script (``energy_consumption_calculation/flops_counter.py``,
``get_energy_cost``) does not count the attention products it runs; it charges each block
analytically as ``T * heads * N * d * d * (min(fr_k, fr_v) + fr_q)`` from the firing rates of
q, k and v. To apply it to a graph, each pair of MatMuls that forms one attention is found
here: ``q @ (k^T @ v)`` (Spikformer ImageNet, Spikingformer) or ``(q @ k^T) @ v`` (Spikformer
CIFAR), scales and layouts allowed between the two products.
"""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir

_PASS_THROUGH = ir.LAYOUTS + (ir.Scale,)


def _producer(graph, name: str) -> str:
    """The first node above ``name`` that is not a layout or a scale."""
    while isinstance(graph.node(name), _PASS_THROUGH):
        (name,) = graph.inputs_of(name)
    return name


def _rate(op, side: int, T: int):
    """Firing rate of operand ``side`` of MatMul ``op``; None unless it is a spike train."""
    if op.input_kinds[side] != "binary":
        return None
    return op.input_events[side] / (int(np.prod(op.in_shapes[side])) * T)


def find_attentions(graph, operations, T: int) -> dict:
    """Outer MatMul name -> AttentionCounts, for every MatMul of spike trains q, k, v whose one
    operand is (a scale or layout of) another MatMul of spike trains."""
    from snncompile.energy.counts import AttentionCounts

    mats = {op.name: op for op in operations if op.kind == "MatMul"}
    found = {}
    for outer in mats.values():
        a, b = (_producer(graph, s) for s in outer.sources)
        if b in mats:       # q @ (k^T @ v)
            inner = mats[b]
            q, k, v = _rate(outer, 0, T), _rate(inner, 0, T), _rate(inner, 1, T)
            q_shape = outer.in_shapes[0]
        elif a in mats:     # (q @ k^T) @ v
            inner = mats[a]
            q, k, v = _rate(inner, 0, T), _rate(inner, 1, T), _rate(outer, 1, T)
            q_shape = inner.in_shapes[0]
        else:
            continue
        if None in (q, k, v):
            continue
        found[outer.name] = AttentionCounts(
            outer=outer.name, inner=inner.name, heads=int(np.prod(q_shape[:-2])), tokens=int(q_shape[-2]),
            head_dim=int(q_shape[-1]), fr_q=q, fr_k=k, fr_v=v)
    return found
