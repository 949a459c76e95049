"""The frontend (``snncompile/frontend/convert.py`` and ``tensor_ops.py``): which kinds capture produces.

Declared; dispatch still inline (``Converter.layer`` and the neuron/function handlers construct
the nodes). The spiking-transformer kinds come from tensor operations (``tensor_ops.py``);
Scale from constant scales and BatchNorms that no synapse absorbs (``passes.fold_affines``).
"""
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable

TABLE = StageTable("frontend", says="the PyTorch frontend")
TABLE.declare(ir.Input, ir.Output, ir.Neuron, ir.Linear, ir.Conv2d, ir.AvgPool2d, ir.MaxPool2d,
              ir.Flatten, ir.Add, ir.Reshape, ir.Permute, ir.Slice, ir.MatMul, ir.Mul, ir.ReduceSum, ir.Scale)
TABLE.refuse(ir.SumPool2d, "produces no SumPool2d: PyTorch has no sum-pooling module "
             "(AvgPool2d captures as AvgPool2d; SumPool2d comes from NIR import)")
