"""Emulator target: batched, bit-exact emulation of Loihi fixed point (Lava ``fixed_pt``).

``precision="fixed"`` runs the integer equations of ``snncompile.ir.fixed`` on int64
tensors for a whole batch at once (an unquantized graph is quantized first with the
default, data-free settings). ``precision="float"`` is the reference target's float64
simulation (the same code, imported), so float and fixed runs share one graph walk.

Fixed-precision results: ``outputs`` hold integers (spikes 0/1, or the readout's integer
potential per step; divide by ``graph.output.fixed.scale`` for float units);
``layer_counts``/``layer_steps`` record each node's integer values.
"""
from __future__ import annotations

from typing import Optional

from snncompile.errors import SnnCompileError
from snncompile.targets.base import RunResult, prepare_inputs
from snncompile.targets.reference import simulate

from .integer import IntegerSimulator


def ensure_quantized(graph):
    """The graph itself when quantized, else a default-quantized copy (no calibration data)."""
    from snncompile.quantize import is_quantized, quantize
    if is_quantized(graph):
        return graph
    qgraph, _ = quantize(graph)
    return qgraph


def run(graph, x, steps: Optional[int] = None, precision: str = "float", record: bool = False,
        batch_size: int = 512) -> RunResult:
    """Simulate ``graph`` on ``x`` ((N, T, *shape) or static (N, *shape)) in float or fixed point."""
    if precision not in ("float", "fixed"):
        raise SnnCompileError(f"unknown precision '{precision}'; choose float or fixed")
    xs, T = prepare_inputs(graph, x, steps)
    if precision == "fixed":
        graph = ensure_quantized(graph)
        sim = IntegerSimulator
    else:
        sim = None
    outputs, counts, steps_rec = simulate(graph, xs, T, record=record, batch_size=batch_size,
                                          simulator=sim)
    return RunResult(outputs=outputs, readout=graph.output.mode, backend="emulator",
                     precision=precision, layer_counts=counts, layer_steps=steps_rec)
