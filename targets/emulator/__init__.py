"""Emulator target: batched, bit-exact emulation of Loihi fixed point (Lava ``fixed_pt``).

``precision="fixed"`` runs the integer equations of ``snncompile.ir.fixed`` on integer-valued
tensors (int32/float where provably exact, else int64; see ``integer.py``) for a whole batch at once (an unquantized graph is quantized first with the
default, data-free settings). ``precision="float"`` is the reference target's float64
simulation (the same code, imported), so float and fixed runs share one graph walk.

Checked bit for bit against Lava: ``tests/test_emulator_lava.py`` (Lava's stock Dense, Conv,
LIF, recurrence; hypothesis, near the wrap/saturation limits) and
``tests/test_emulator_zoo_lava.py`` (snncompile's Lava target on the whole architecture matrix).

Fixed-precision results: ``outputs`` hold integers (spikes 0/1, or the readout's integer
potential per step; divide by ``graph.output.fixed.scale`` for float units);
``layer_counts``/``layer_steps`` record each node's integer values.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir.nodes import Neuron
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


#: Above this many neuron updates (samples x steps x neurons) a fixed-point run fuses the
#: neuron update with torch.compile: ~12 s of compilation once (3 LIF layers, cold cache),
#: then ~2 ns less per neuron update than the eager int32 fast path on a 2-core CPU
#: (bench_emulator.py network: 47 vs 68 ms per 512 samples), so it pays off above ~5e9.
FUSE_ABOVE = 5e9


def run(graph, x, steps: Optional[int] = None, precision: str = "float", record: bool = False,
        batch_size: int = 512, fused: Optional[bool] = None) -> RunResult:
    """Simulate ``graph`` on ``x`` ((N, T, *shape) or static (N, *shape)) in float or fixed point.

    ``fused``: fuse the integer neuron update with torch.compile (same integers; default:
    only for runs above ``FUSE_ABOVE`` neuron updates, where compiling pays off)."""
    if precision not in ("float", "fixed"):
        raise SnnCompileError(f"unknown precision '{precision}'; choose float or fixed")
    xs, T = prepare_inputs(graph, x, steps)
    if precision == "fixed":
        graph = ensure_quantized(graph)
        if fused is None:
            n_neurons = sum(int(np.prod(n.shape)) for n in graph if isinstance(n, Neuron))
            fused = xs.shape[0] * T * n_neurons > FUSE_ABOVE
        # a static input (N, *shape) is the same image at every step: the stateless
        # layers it feeds are computed once per batch (IntegerSimulator.static_nodes)
        static = np.shape(x)[1:] == tuple(graph.input.shape)
        sim = functools.partial(IntegerSimulator, fused=bool(fused), static_input=static)
    else:
        sim = None
    outputs, counts, steps_rec = simulate(graph, xs, T, record=record, batch_size=batch_size,
                                          simulator=sim)
    return RunResult(outputs=outputs, readout=graph.output.mode, backend="emulator",
                     precision=precision, layer_counts=counts, layer_steps=steps_rec)
