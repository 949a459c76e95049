"""The graph passes (``snncompile/passes``): which kinds they accept and rewrite.

Declared; dispatch still inline. ``simplify_layouts`` removes identity Reshapes/Permutes and
merges their chains; ``fold_affines`` moves BatchNorm/input gains back through layout nodes
(re-indexing their arrays) into a Linear, Conv2d, Add or Scale and materialises them elsewhere;
``shift_reset_values`` rewrites Neurons; ``mark_operands`` sets the operand kinds of MatMul and
Mul; every kind passes through unchanged otherwise.
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("passes")
TABLE.declare(ir.Input, ir.Output, ir.Neuron, ir.Linear, ir.Conv2d, ir.SumPool2d, ir.AvgPool2d,
              ir.MaxPool2d, ir.Flatten, ir.Add, ir.Reshape, ir.Permute, ir.Slice, ir.MatMul, ir.Mul,
              ir.ReduceSum, ir.Scale)
