"""The graph passes (``snncompile/passes``): which kinds they accept and rewrite.

Declared; dispatch still inline until the passes rewrite lands. ``fold_affines`` folds
BatchNorm/input gains into a Linear, Conv2d or Add and materialises them elsewhere;
``shift_reset_values`` rewrites Neurons; every kind passes through unchanged otherwise.
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("passes")
TABLE.declare(*ir.NODE_TYPES.values())
