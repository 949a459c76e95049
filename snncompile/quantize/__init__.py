"""Loihi fixed-point quantization of an IR graph.

``quantize(graph, calib=None, weight_bits=8)`` returns ``(qgraph, report)``: a copy of
the graph whose nodes carry ``node.fixed`` (``snncompile.ir.fixed``; float parameters are
kept) and a :class:`QuantReport` (per layer: scale, exponents, saturated weights, events
and SQNR seen on the calibration data). Without calibration data the scales come from
the parameters alone (thresholds, largest possible input current, |input| <= 1).
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.passes.compose import compose_synapses

from .calibrate import calibration_ranges
from .fold import fold_channel_gains
from .realign import realign_shortcuts
from .report import LayerReport, QuantReport, diagnose
from .scales import QuantSettings, assign_fixed

__all__ = ["quantize", "is_quantized", "QuantReport", "LayerReport"]

META_KEY = "quantization"
#: Below this largest |mantissa| (5 bits) the report warns about lost weight precision.
LOW_PRECISION_MANTISSA = 32


def is_quantized(graph) -> bool:
    """True when every synapse and neuron carries fixed-point parameters."""
    # the nodes in any order (iterating the graph sorts it topologically: ~ms per call, paid on
    # every emulator run of one digit)
    nodes = [graph.node(n) for n in graph.nx.nodes]
    nodes = [n for n in nodes if isinstance(n, ir.SYNAPSES + (ir.Scale, ir.Neuron))]
    return bool(nodes) and all(getattr(n, "fixed", None) is not None for n in nodes)


def quantize(graph, calib: Optional[np.ndarray] = None, weight_bits: int = 8, input_bits: int = 8,
             steps: Optional[int] = None):
    """Quantize ``graph`` for Loihi; ``calib``: inputs (N, T, *shape) or (N, *shape) to calibrate on."""
    if not 1 <= int(weight_bits) <= 8:
        raise SnnCompileError(f"--weight-bits must be between 1 and 8 (Loihi), got {weight_bits}")
    if not 2 <= int(input_bits) <= 24:
        raise SnnCompileError(f"input bits must be between 2 and 24, got {input_bits}")
    settings = QuantSettings(weight_bits=int(weight_bits), input_bits=int(input_bits))
    qgraph, composed = compose_synapses(graph)
    folded = fold_channel_gains(qgraph)
    realigned = realign_shortcuts(qgraph)
    ranges = None
    if calib is not None:
        try:
            ranges = calibration_ranges(qgraph, calib, steps)
        except SnnCompileError as e:
            raise SnnCompileError(f"calibration data: {e}") from None
    layers = assign_fixed(qgraph, ranges, settings, realigned)
    qgraph.meta[META_KEY] = json.dumps({"target": "loihi", "weight_bits": settings.weight_bits,
                                        "input_bits": settings.input_bits,
                                        "calibrated": ranges is not None})
    if calib is not None:
        rows = diagnose(qgraph, calib, layers, steps)
    else:
        rows = [LayerReport(**vars(layers[n])) for n in qgraph.order() if n in layers]
    report = QuantReport(layers=rows, settings={"weight_bits": settings.weight_bits,
                                                "input_bits": settings.input_bits},
                         calibrated=ranges is not None, n_calib=ranges.n_samples if ranges else 0)
    if composed:
        report.warnings.append(f"conv(s) {', '.join(composed)} composed into the conv after them (no neuron "
                               f"between: Loihi has no synapse-to-synapse path)")
    if folded:
        report.warnings.append(f"per-channel gain(s) {', '.join(folded)} folded into the conv before "
                               f"them (Lava Conv has no weight exponent)")
    for r in rows:
        ev = r.events or {}
        if ev.get("u_wrap") or ev.get("wrap"):
            report.warnings.append(f"layer '{r.name}': {ev.get('u_wrap', ev.get('wrap'))} overflow "
                                   f"(wrap-around) event(s) during calibration")
        if ev.get("v_saturate"):
            report.warnings.append(f"layer '{r.name}': {ev['v_saturate']} voltage saturation event(s) "
                                   f"during calibration")
        if r.saturated_weights:
            report.warnings.append(f"layer '{r.name}': {r.saturated_weights} of {r.n_weights} weights "
                                   f"saturated at the mantissa limit")
        if r.max_mantissa is not None and 0 < r.max_mantissa < LOW_PRECISION_MANTISSA and r.name in realigned:
            report.warnings.append(
                f"layer '{r.name}': weights keep only {int(r.max_mantissa).bit_length()} bits (max |mantissa| "
                f"{r.max_mantissa}): its gain is below 2**{r.weight_exp} (Lava's smallest weight exponent)")
        elif r.max_mantissa is not None and 0 < r.max_mantissa < LOW_PRECISION_MANTISSA:
            report.warnings.append(
                f"layer '{r.name}': weights keep only {int(r.max_mantissa).bit_length()} bits (max |mantissa| "
                f"{r.max_mantissa}, weight SQNR {r.weight_sqnr_db:.1f} dB): its neuron's scale is set by "
                f"another input with a different message scale, and a Conv has no weight exponent")
        if r.bias_saturated:
            report.warnings.append(f"layer '{r.name}': {r.bias_saturated} bias value(s) saturated")
    return qgraph, report
