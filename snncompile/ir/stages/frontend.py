"""The frontend (``snncompile/frontend/convert.py``): which kinds capture produces.

Declared; dispatch still inline until the frontend rewrite lands (``Converter.layer`` and
the neuron/function handlers construct the nodes).
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("frontend", says="the PyTorch frontend")
TABLE.declare(ir.Input, ir.Output, ir.Neuron, ir.Linear, ir.Conv2d, ir.AvgPool2d, ir.MaxPool2d,
              ir.Flatten, ir.Add)
TABLE.refuse(ir.SumPool2d, "produces no SumPool2d: PyTorch has no sum-pooling module "
             "(AvgPool2d captures as AvgPool2d; SumPool2d comes from NIR import)")
#: Issue 11 in progress: the spiking-transformer kinds this stage does not handle yet.
for _kind in (ir.Reshape, ir.Permute, ir.Slice, ir.MatMul, ir.Mul, ir.ReduceSum, ir.Scale):
    TABLE.refuse(_kind, "does not handle spiking-transformer layers yet")
