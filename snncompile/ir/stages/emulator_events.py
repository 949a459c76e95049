"""The emulator's event engine (``targets/emulator/events.py``): kinds with an event layout.

Declared; dispatch still inline until the event engine work lands (``_Builder.build``
dispatches by method name ``_<Kind>``; a graph it cannot lay out falls back to the torch
engine with the reason, see ``NotEventEligible``).
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("emulator.events", says="the emulator's event engine")
TABLE.declare(ir.Input, ir.Output, ir.Neuron, ir.Linear, ir.Conv2d, ir.SumPool2d, ir.AvgPool2d,
              ir.MaxPool2d, ir.Flatten, ir.Add)
for _kind in ir.LAYOUTS[1:] + ir.PRODUCTS + (ir.ReduceSum, ir.Scale):
    TABLE.refuse(_kind, "has no event layout for spiking-transformer layers; the emulator runs such "
                        "a graph on its torch engine")
