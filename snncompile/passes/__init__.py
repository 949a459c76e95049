"""Graph rewrites, each a plain function ``Graph -> Graph`` working on a copy.

:func:`canonicalize` runs them in order and is what the frontend applies: after it the
graph has only the kinds of ``snncompile.ir.nodes`` (no BatchNorm, no input gains) and
neurons reset to 0.
"""
from __future__ import annotations

from snncompile.errors import SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.nodes import NODE_TYPES
from snncompile.passes.affine import Affine, fold_affines
from snncompile.passes.layouts import simplify_layouts
from snncompile.passes.neurons import shift_reset_values
from snncompile.passes.operands import mark_operands, value_domains
from snncompile.passes.pool_bias import move_bias_after_maxpool

__all__ = ["Affine", "canonicalize", "fold_affines", "mark_operands", "move_bias_after_maxpool",
           "shift_reset_values", "simplify_layouts", "value_domains"]


def canonicalize(graph: Graph) -> Graph:
    """Layout chains merged (so a BatchNorm meets its synapse), BatchNorm / input-gain folding,
    reset shifts, biases moved past max pools, operand kinds of products; checks shapes."""
    graph = simplify_layouts(fold_affines(simplify_layouts(graph), copy=False), copy=False)
    graph = mark_operands(move_bias_after_maxpool(shift_reset_values(graph)))
    for node in graph:
        if NODE_TYPES.get(node.kind) is not type(node):
            raise SnnCompileError(f"node '{node.name}': kind {node.kind} left after the passes")
    return graph.validate()
