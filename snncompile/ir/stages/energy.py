"""Energy counts (``snncompile/energy/counts.py``): which kinds are counted, and as what.

The entry of a kind is its role in the counts: ``synapse`` (Linear, Conv2d, Sum/AvgPool2d:
synaptic ops and dense MACs through a fan-out map), ``neuron`` (updates and spikes),
``operation`` (the spiking-transformer arithmetic between activations: MatMul, Mul,
ReduceSum, Scale; ``snncompile/energy/operations.py`` charges them) or ``free`` (routing
and merging that costs no operation: layouts, MaxPool, Add, Input, Output). ``count_record``
dispatches every node through this table, so a kind without an entry fails by name.
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("energy", says="the energy counts")
TABLE.add("synapse", ir.Linear, ir.Conv2d, ir.SumPool2d, ir.AvgPool2d)
TABLE.add("neuron", ir.Neuron)
TABLE.add("operation", ir.MatMul, ir.Mul, ir.ReduceSum, ir.Scale)
TABLE.add("free", ir.Input, ir.Output, ir.MaxPool2d, ir.Add, *ir.LAYOUTS)
