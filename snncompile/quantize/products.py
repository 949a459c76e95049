"""Quantizer helpers for the spiking-transformer kinds (products, sums, Scale; ``ir.fixed``).

Spikes and counts have scale 1, so products and sums need no scale of their own; what they
need is (a) a bound on the sums they form, for the neuron they feed, (b) a gain in front of
a neuron that a bare count would reach, and (c) neuron scales that keep dyadic Scales
(``* 0.125``) exact.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.passes.operands import value_domains

#: Largest denominator of a dyadic gain/threshold ratio the neuron scale is rounded to.
EXACT_DENOMINATOR_MAX = 2 ** 12


def value_bounds(graph: Graph, const: dict, input_max: float) -> dict[str, float]:
    """Data-free float bound of every node's |value|: the Input's ``input_max``, spikes 1,
    a synapse its row L1 norm times its input's bound plus its constant, sums and products
    the sums and products of their operands' bounds (a MatMul's over its K terms)."""
    from .scales import _amax, _row_l1

    bound: dict[str, float] = {}
    for node in graph:
        ins = [bound.get(i, 1.0) for i in graph.inputs_of(node.name)]
        if isinstance(node, ir.Input):
            b = input_max
        elif isinstance(node, ir.Neuron):
            b = 1.0
        elif isinstance(node, ir.SYNAPSES + (ir.Scale,)):
            b = _row_l1(node) * ins[0] + _amax(const[node.name])
        elif isinstance(node, ir.Add):
            b = float(sum(ins))
        elif isinstance(node, ir.ReduceSum):
            b = ins[0] * graph.shape(graph.inputs_of(node.name)[0])[node.axis]
        elif isinstance(node, ir.MatMul):
            b = ins[0] * ins[1] * graph.shape(graph.inputs_of(node.name)[0])[-1]
        elif isinstance(node, ir.Mul):
            b = ins[0] * ins[1]
        else:  # layouts, MaxPool, Output
            b = ins[0]
        bound[node.name] = b
    return bound


def identity_scales_for_counts(graph: Graph) -> list[str]:
    """In place: an identity ``Scale`` between a count (a product or sum of spikes, through
    layouts) and the neuron it feeds, so the neuron's scale is free (a count reaches a
    neuron at scale 1, where a threshold of 0.5 has no integer mantissa). Returns the names."""
    dom = value_domains(graph)
    added = []
    for node in list(graph):
        if not isinstance(node, ir.Neuron):
            continue
        (src,) = graph.inputs_of(node.name)
        first = src
        while isinstance(graph.node(first), ir.LAYOUTS):
            first = graph.inputs_of(first)[0]
        if dom[src] != "count" or not isinstance(graph.node(first), ir.PRODUCTS + (ir.ReduceSum,)):
            continue
        new = f"{src}.to_{node.name}"
        while new in graph:
            new += "_"
        delay = graph.delay(src, node.name)
        graph.nx.remove_edge(src, node.name)
        graph.add(ir.Scale(new, weight=np.array(1.0)), [src])
        graph.nx.add_edge(new, node.name, index=0, delay=delay)
        added.append(new)
    if added:
        graph.infer_shapes()
    return added


def exact_threshold_units(t0: float, units_max: float, gains: list[tuple[np.ndarray, float]]) -> float:
    """The largest integer threshold mantissa ``vth <= t0 * units_max`` (neuron units
    ``S / 64 = vth / t0``) that also makes each feeder's mantissa ``w * S / (64 * sigma_in)``
    an exact integer where that is possible: ``gains`` lists (weights, sigma_in) of the
    feeders with one mantissa per value (Scale, 1x1 Conv); ratios ``w / (sigma_in * t0)``
    that are dyadic with small denominators make ``vth`` a multiple of their denominators."""
    vth_max = math.floor(t0 * units_max)
    step = 1
    for weight, sigma_in in gains:
        values = np.unique(np.asarray(weight, dtype=np.float64))
        if values.size > 16:
            continue
        try:
            dens = [(Fraction(float(w)) / (Fraction(sigma_in) * Fraction(t0))).denominator
                    for w in values if w != 0]
        except (OverflowError, ValueError):
            continue
        for d in dens:
            if d <= EXACT_DENOMINATOR_MAX:
                step = step * d // math.gcd(step, d)
    vth = (vth_max // step) * step if vth_max >= step else vth_max
    return float(max(vth, 1))


def _bits(n: float) -> int:
    return max(int(math.ceil(math.log2(n + 1))), 1) if n > 0 else 1


def product_note(lhs: str, rhs, k: int, int_bound: float) -> str:
    """The report's note for a product or sum: how a chip computes it and its width."""
    width = f"|result| <= {int_bound:.0f} ({_bits(int_bound)} bits)"
    if rhs is None:
        how = "popcount" if lhs == "spike" else "exact sum"
        return f"sum over {k} {lhs} values: {how}, {width}"
    kinds = {lhs, rhs}
    if kinds == {"spike"}:
        how = "AND + popcount" if k > 1 else "AND"
    elif "real" in kinds:
        how = "sum of the activations the spikes select"
    else:
        how = "sum of the counts the spikes select" if "spike" in kinds else "product of counts"
    return f"{lhs} x {rhs}: {how}, {width}"
