"""The emulator's event engine (``targets/emulator/events.py``): kinds with an event layout.

Declared; dispatch is inline (``_Builder.build`` dispatches by method name ``_<Kind>``). The
spiking-transformer kinds are laid out too: Reshape/Permute as renamings, Slice as a gather,
MatMul as AND + popcount (two spike operands) or sums of the values a spike operand selects,
Mul, ReduceSum and Scale as index tables, all with ``ir.fixed``'s wraps. A graph it still
cannot lay out (a layout of a delayed value, tables too large, ...) falls back to the torch
engine with the reason, see ``NotEventEligible``.
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("emulator.events", says="the emulator's event engine")
TABLE.declare(ir.Input, ir.Output, ir.Neuron, ir.Linear, ir.Conv2d, ir.SumPool2d, ir.AvgPool2d,
              ir.MaxPool2d, ir.Flatten, ir.Add)
TABLE.declare(*ir.LAYOUTS[1:], *ir.PRODUCTS, ir.ReduceSum, ir.Scale)
