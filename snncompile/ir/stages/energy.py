"""Energy counts (``snncompile/energy/counts.py``): which kinds are counted.

Declared; dispatch still inline until the streaming counts rewrite lands (``value_kinds``,
``_sum_synapse``, ``dense_ops``): synapses (Linear, Conv2d, Sum/AvgPool2d) count synaptic
ops and dense MACs, Neurons count updates, the other kinds carry their input's value kind.
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("energy", says="the energy counts")
TABLE.declare(*ir.NODE_TYPES.values())
