"""Per-channel affine maps that exist only between the frontend and the passes.

BatchNorm (eval) and the input gains of some neurons (SpikingJelly ``decay_input``,
Norse's ``dt * tau_mem_inv``) are both ``y = x * scale + shift`` with per-channel (or
scalar) arrays. The frontend emits them as :class:`Affine` nodes; :func:`fold_affines`
removes every one of them, so the canonical IR (what targets and ONNX see) has none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.passes.layouts import compact, inverse_layout


@dataclass(eq=False)
class Affine(ir.Node):
    """``y = x * scale + shift``; arrays broadcast to the input shape. Frontend-only."""

    scale: np.ndarray = None
    shift: np.ndarray = None
    #: What it came from ("batchnorm", "input_gain"), for messages.
    origin: str = ""
    kind: ClassVar[str] = "Affine"

    def __post_init__(self):
        self.scale = np.asarray(1.0 if self.scale is None else self.scale, dtype=np.float64)
        self.shift = np.asarray(0.0 if self.shift is None else self.shift, dtype=np.float64)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        for key in ("scale", "shift"):
            try:
                np.broadcast_to(getattr(self, key), s)
            except ValueError:
                raise self._fail(f"{self.origin or 'affine'} parameter '{key}' of shape "
                                 f"{getattr(self, key).shape} does not fit input {s}") from None
        return tuple(s)


def _per_out_channel(arr: np.ndarray, shape: tuple) -> Optional[np.ndarray]:
    """``arr`` as one value per output channel (shape[0],), or None if it varies within a channel."""
    full = np.broadcast_to(arr, shape)
    if len(shape) == 1:
        return np.array(full, dtype=np.float64)
    flat = full.reshape(shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        return None
    return np.array(flat[:, 0], dtype=np.float64)


def _fold_into_synapse(syn: ir.Node, scale: np.ndarray, shift: np.ndarray) -> ir.Node:
    """A copy of Linear/Conv2d ``syn`` whose output is ``old_output * scale + shift``."""
    n_out = syn.weight.shape[0]
    w = syn.weight * scale.reshape((n_out,) + (1,) * (syn.weight.ndim - 1))
    b = (np.zeros(n_out) if syn.bias is None else syn.bias) * scale + shift
    new = type(syn)(**{**vars(syn), "weight": w, "bias": b})
    return new


#: Producers after which an unabsorbed affine map becomes an ir.Scale (transformer layouts,
#: products, reductions): there a diagonal Linear / depthwise Conv2d would not say what it is.
_SCALED = (ir.Reshape, ir.Permute, ir.Slice, ir.MatMul, ir.Mul, ir.ReduceSum, ir.Scale)


def _as_scale(name: str, affine: Affine, shape: tuple) -> ir.Scale:
    bias = compact(affine.shift)
    return ir.Scale(name, weight=compact(np.broadcast_to(affine.scale, shape)),
                    bias=None if not np.any(bias) else bias)


def _materialize(name: str, affine: Affine, shape: tuple, producer: ir.Node,
                 via_layout: bool) -> Optional[ir.Node]:
    """The affine map as a node of its own: a diagonal Linear or a depthwise 1x1 Conv2d (the
    kinds every stage runs), or an ir.Scale after a transformer op, on another rank, or when it
    was moved back through layout nodes (a transformer graph)."""
    if via_layout or isinstance(producer, _SCALED) or len(shape) not in (1, 3):
        return _as_scale(name, affine, shape)
    if len(shape) == 1:
        scale = np.broadcast_to(affine.scale, shape)
        return ir.Linear(name, weight=np.diag(scale).astype(np.float64),
                         bias=np.array(np.broadcast_to(affine.shift, shape), dtype=np.float64))
    if len(shape) == 3:
        scale, shift = _per_out_channel(affine.scale, shape), _per_out_channel(affine.shift, shape)
        if scale is None or shift is None:
            return None
        return ir.Conv2d(name, weight=scale.reshape(-1, 1, 1, 1), bias=shift, groups=shape[0])
    return None


def _push(graph: Graph, src: str, scale: np.ndarray, shift: np.ndarray, consumer: str, origin: str,
          via_layout: bool = False) -> None:
    """Make the value flowing ``src -> consumer`` be multiplied by ``scale`` and shifted."""
    node = graph.node(src)
    shape = graph.shape(src)
    only_consumer = graph.consumers(src) == [consumer] and not graph.delay(src, consumer)
    if only_consumer and isinstance(node, (ir.Linear, ir.Conv2d)):
        s, b = _per_out_channel(scale, shape), _per_out_channel(shift, shape)
        if s is not None and b is not None:
            graph.replace(src, _fold_into_synapse(node, s, b))
            return
    if only_consumer and isinstance(node, ir.Add) and not np.any(shift):
        # A pure gain distributes over the operands of a sum.
        for operand in graph.inputs_of(src):
            _push(graph, operand, scale, shift, src, origin, via_layout)
        return
    if only_consumer and isinstance(node, Affine):
        node.shift = np.asarray(node.shift * scale + shift, dtype=np.float64)
        node.scale = np.asarray(node.scale * scale, dtype=np.float64)
        return
    if only_consumer and isinstance(node, ir.Scale):
        bias = compact(np.broadcast_to((0.0 if node.bias is None else node.bias) * scale + shift, shape))
        graph.replace(src, ir.Scale(src, weight=compact(np.broadcast_to(node.weight * scale, shape)),
                                    bias=bias if np.any(bias) else None))
        return
    if only_consumer and isinstance(node, ir.MatMul) and np.ndim(compact(scale)) == 0 and not np.any(shift):
        # (s * a) @ b = s * (a @ b): a constant gain joins a Scale already on an operand (Spikformer's
        # (q @ k^T) * 0.125 and the next LIF's input gain), never a new one on spikes.
        for operand in graph.inputs_of(src):
            if isinstance(graph.node(operand), ir.Scale) and graph.consumers(operand) == [src]:
                _push(graph, operand, scale, shift, src, origin, via_layout)
                return
    if only_consumer and isinstance(node, (ir.Reshape, ir.Permute, ir.Flatten, ir.Slice)):
        # An elementwise map commutes with an index map: re-index its arrays over the input.
        (before,) = graph.inputs_of(src)
        in_shape = graph.shape(before)
        if isinstance(node, ir.Slice):
            s_in, b_in = np.ones(in_shape), np.zeros(in_shape)
            window = [slice(None)] * len(in_shape)
            window[node.axis % len(in_shape)] = slice(node.start, node.stop)
            s_in[tuple(window)], b_in[tuple(window)] = np.broadcast_to(scale, shape), np.broadcast_to(shift, shape)
        else:
            s_in, b_in = (inverse_layout(node, a, in_shape, shape) for a in (scale, shift))
        _push(graph, before, compact(s_in), compact(b_in), src, origin, via_layout=True)
        return
    name = _unique(graph, f"{src}.{origin or 'affine'}")
    synapse = _materialize(name, Affine(name, scale=scale, shift=shift), shape, node, via_layout)
    if synapse is None:
        raise SnnCompileError(f"node '{src}': cannot fold a per-neuron {origin or 'affine map'} "
                              f"of shape {np.shape(scale)} that varies within a channel of {shape}")
    index = graph.nx.edges[src, consumer]["index"]
    delay = graph.delay(src, consumer)
    graph.nx.remove_edge(src, consumer)
    graph.add(synapse, [src])
    graph.nx.add_edge(name, consumer, index=index, delay=delay)
    graph.nx.nodes[name]["shape"] = tuple(shape)  # one-to-one (whole-graph inference is slow on big nets)


def _unique(graph: Graph, name: str) -> str:
    base, i = name, 1
    while name in graph:
        name, i = f"{base}{i}", i + 1
    return name


def fold_affines(graph: Graph, copy: bool = True) -> Graph:
    """Fold every :class:`Affine` into the synapse before it (BatchNorm folding, input gains),
    moving it back through layout nodes first.

    Where the producer cannot absorb it (shared by several consumers, a spike source,
    the graph input) the map becomes a node of its own (diagonal Linear / depthwise
    1x1 Conv2d, or a Scale after transformer ops), which is still exact. Works on a copy
    unless ``copy=False``.
    """
    graph = graph.copy() if copy else graph
    graph.infer_shapes()
    for name in graph.order():
        node = graph.node(name)
        if not isinstance(node, Affine):
            continue
        (src,) = graph.inputs_of(name)
        _push(graph, src, node.scale, node.shift, name, node.origin)
        graph.bypass(name)  # an Affine keeps its input's shape: the other shapes stay valid
    return graph.infer_shapes()
