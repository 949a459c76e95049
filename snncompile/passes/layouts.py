"""Keep layout nodes few: identity reshapes/permutes go, chains of them merge.

Capturing a spiking transformer leaves many layout nodes: every token Linear is lowered with
a Permute/Reshape pair on each side (see ``frontend/tensor_ops.py``), and the official code
transposes back and forth around each BatchNorm1d. Adjacent inverse Permutes cancel, a
Reshape of a Reshape is one Reshape, and a Permute that only moves size-1 axes is a Reshape,
so the graph shows the layouts that change something (and an Affine meets its synapse).
"""
from __future__ import annotations

import numpy as np

from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph

_RESHAPES = (ir.Reshape, ir.Flatten)


def _is_identity(graph: Graph, name: str) -> bool:
    node = graph.node(name)
    if isinstance(node, ir.Permute):
        return node.perm == tuple(range(len(node.perm)))
    if isinstance(node, ir.Reshape):  # a Flatten stays: graphs without transformer kinds pass unchanged
        (src,) = graph.inputs_of(name)
        return tuple(graph.shape(src)) == tuple(graph.shape(name))
    return False


def _moves_only_unit_axes(node: ir.Permute, in_shape: tuple) -> bool:
    """True when the axes of size > 1 keep their order: the same memory order, a reshape."""
    kept = [p for p in node.perm if in_shape[p] != 1]
    return kept == sorted(kept)


def _pass(graph: Graph) -> bool:
    """One sweep of rewrites in topological order; True when something changed. Every rewrite
    keeps the shapes of the nodes that stay, so none are inferred in between."""
    changed = False
    for name in graph.order():
        if name not in graph:
            continue
        node = graph.node(name)
        if not isinstance(node, ir.LAYOUTS) or isinstance(node, ir.Slice):
            continue
        if _is_identity(graph, name):
            graph.bypass(name)
            changed = True
            continue
        (src,) = graph.inputs_of(name)
        prev = graph.node(src)
        if isinstance(node, ir.Permute) and _moves_only_unit_axes(node, graph.shape(src)):
            graph.replace(name, ir.Reshape(name, shape=graph.shape(name)))
            node, changed = graph.node(name), True
        if graph.delay(src, name):
            continue
        if isinstance(node, ir.Permute) and isinstance(prev, ir.Permute):
            graph.replace(name, ir.Permute(name, perm=tuple(prev.perm[p] for p in node.perm)))
            _read_through(graph, src, name)
            changed = True
        elif isinstance(node, _RESHAPES) and isinstance(prev, _RESHAPES) and ir.Reshape in (type(node), type(prev)):
            _read_through(graph, src, name)
            changed = True
    return changed


def _read_through(graph: Graph, src: str, name: str) -> None:
    """``name`` reads the input of layout ``src`` directly (its own node now does both index
    maps); ``src`` goes when nothing else reads it."""
    (before,) = graph.inputs_of(src)
    graph.set_inputs(name, [before])
    if not graph.consumers(src):
        graph.remove(src)


def simplify_layouts(graph: Graph, copy: bool = True) -> Graph:
    """Remove identity layouts, merge Permute chains and Reshape chains. Works on a copy unless
    ``copy=False``."""
    graph = graph.copy() if copy else graph
    graph.infer_shapes()
    while _pass(graph):
        pass
    return graph.infer_shapes()


def inverse_layout(node: ir.Node, arr: np.ndarray, in_shape: tuple, out_shape: tuple) -> np.ndarray:
    """An array over the layout's output, re-indexed over its input: ``layout(result) == arr``
    broadcast to ``out_shape`` (for moving an elementwise map to before the layout)."""
    full = np.broadcast_to(arr, out_shape)
    if isinstance(node, ir.Permute):
        return np.ascontiguousarray(full.transpose(np.argsort(node.perm)))
    return np.ascontiguousarray(full).reshape(in_shape)


def compact(arr: np.ndarray) -> np.ndarray:
    """``arr`` with every axis along which it is constant shrunk to size 1 (same broadcast)."""
    arr = np.asarray(arr, dtype=np.float64)
    for axis in range(arr.ndim):
        if arr.shape[axis] > 1 and np.all(arr == arr.take([0], axis=axis)):
            arr = arr.take([0], axis=axis)
    while arr.ndim and arr.shape[0] == 1:
        arr = arr[0]
    return np.array(arr)  # a writable copy, not a view of a broadcast
