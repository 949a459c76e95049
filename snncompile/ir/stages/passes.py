"""The graph passes (``snncompile/passes``): which kinds they accept and rewrite.

Declared; dispatch still inline until the passes rewrite lands. ``fold_affines`` folds
BatchNorm/input gains into a Linear, Conv2d or Add and materialises them elsewhere;
``shift_reset_values`` rewrites Neurons; every kind passes through unchanged otherwise.
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("passes")
TABLE.declare(ir.Input, ir.Output, ir.Neuron, ir.Linear, ir.Conv2d, ir.SumPool2d, ir.AvgPool2d,
              ir.MaxPool2d, ir.Flatten, ir.Add)

#: Issue 11 in progress: the spiking-transformer kinds this stage does not handle yet.
for _kind in (ir.Reshape, ir.Permute, ir.Slice, ir.MatMul, ir.Mul, ir.ReduceSum, ir.Scale):
    TABLE.refuse(_kind, "does not handle spiking-transformer layers yet")
