"""Emulator target: batched, bit-exact emulation of Loihi fixed point (Lava ``fixed_pt``).

``precision="fixed"`` runs the integer equations of ``snncompile.ir.fixed`` (an unquantized
graph is quantized first with the default, data-free settings) on one of two engines that
give the same integers:

* ``events`` (default where the graph allows): the graph compiled to flat tables that a
  numba kernel steps one sample at a time, all samples in parallel, touching only the
  fan-out of non-zero messages (``events.py``, ``event_kernel.py``); spiking transformers
  too (products of spikes as AND + popcount, layouts as renamings or gathers);
* ``torch``: the whole batch one layer at a time with torch tensor ops (``integer.py``),
  int32/float where provably exact, else int64; optionally fused by torch.compile.

``precision="float"`` is the reference target's float64 simulation (the same code,
imported), so float and fixed runs share one graph walk.

Checked bit for bit against Lava: ``tests/test_emulator_lava.py`` (Lava's stock Dense, Conv,
LIF, recurrence; hypothesis, near the wrap/saturation limits) and
``tests/test_emulator_zoo_lava.py`` (snncompile's Lava target on the whole architecture
matrix); the two engines against each other: ``tests/test_emulator_events.py``.

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

from .events import NotEventEligible, build_program, run_program
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


#: Engines of a fixed-point run: "events" (compiled, event-driven, per sample; ``events.py``),
#: "torch" (batched tensor ops; ``integer.py``), or "auto": events where the graph allows.
ENGINES = ("auto", "events", "torch")


def run(graph, x, steps: Optional[int] = None, precision: str = "float", record: bool = False,
        batch_size: int = 512, fused: Optional[bool] = None, engine: str = "auto") -> RunResult:
    """Simulate ``graph`` on ``x`` ((N, T, *shape) or static (N, *shape)) in float or fixed point.

    ``engine`` (fixed point): see ``ENGINES``; both give the same integers. The event engine
    runs on ``torch.get_num_threads()`` threads, 256 samples per task
    (``events.CHUNK``).
    ``batch_size`` (float, and the torch engine): samples simulated together.
    ``fused`` (torch engine): fuse the integer neuron update with torch.compile (same
    integers; default: only for runs above ``FUSE_ABOVE`` neuron updates)."""
    if precision not in ("float", "fixed"):
        raise SnnCompileError(f"unknown precision '{precision}'; choose float or fixed")
    if engine not in ENGINES:
        raise SnnCompileError(f"unknown emulator engine '{engine}'; choose one of {', '.join(ENGINES)}")
    sim = None
    if precision == "fixed":
        graph = ensure_quantized(graph)
        # a static input (N, *shape) is the same image at every step: the stateless
        # layers it feeds are computed once per sample (events) or per batch (torch)
        static = np.shape(x)[1:] == tuple(graph.input.shape)
        program = _event_program(graph, record, static, engine)
        if program is not None:
            # binary messages only test x != 0: spike trains may stay bool/uint8
            binary = program.input_fixed.num_message_bits == 0
            xs, T = prepare_inputs(graph, x, steps, keep_integers=binary, expand_static=False)
            outputs, counts, steps_rec = run_program(program, xs, T)
            return RunResult(outputs=outputs, readout=graph.output.mode, backend="emulator",
                             precision=precision, layer_counts=counts, layer_steps=steps_rec)
        xs, T = prepare_inputs(graph, x, steps)
        if fused is None:
            n_neurons = sum(int(np.prod(n.shape)) for n in graph if isinstance(n, Neuron))
            fused = xs.shape[0] * T * n_neurons > FUSE_ABOVE
        sim = functools.partial(IntegerSimulator, fused=bool(fused), static_input=static)
    else:
        xs, T = prepare_inputs(graph, x, steps)
    outputs, counts, steps_rec = simulate(graph, xs, T, record=record, batch_size=batch_size,
                                          simulator=sim)
    return RunResult(outputs=outputs, readout=graph.output.mode, backend="emulator",
                     precision=precision, layer_counts=counts, layer_steps=steps_rec)


def _event_program(graph, record: bool, static: bool, engine: str):
    """The event program for ``graph``, or None for the torch engine (asked for, or the graph
    has no event layout under "auto"; "events" then raises with the reason)."""
    if engine == "torch":
        return None
    try:
        return build_program(graph, record=record, static_input=static)
    except NotEventEligible as err:
        if engine == "events":
            raise SnnCompileError(f"graph '{graph.name}' cannot run on the event engine: {err}") from None
        return None
