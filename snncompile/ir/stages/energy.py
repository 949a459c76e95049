"""Energy counts (``snncompile/energy/counts.py``): which kinds are counted.

Declared; dispatch still inline until the streaming counts rewrite lands (``value_kinds``,
``_sum_synapse``, ``dense_ops``): synapses (Linear, Conv2d, Sum/AvgPool2d) count synaptic
ops and dense MACs, Neurons count updates, the other kinds carry their input's value kind.
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("energy", says="the energy counts")
TABLE.declare(ir.Input, ir.Output, ir.Neuron, ir.Linear, ir.Conv2d, ir.SumPool2d, ir.AvgPool2d,
              ir.MaxPool2d, ir.Flatten, ir.Add)

#: Issue 11 in progress: the spiking-transformer kinds this stage does not handle yet.
for _kind in (ir.Reshape, ir.Permute, ir.Slice, ir.MatMul, ir.Mul, ir.ReduceSum, ir.Scale):
    TABLE.refuse(_kind, "does not handle spiking-transformer layers yet")
