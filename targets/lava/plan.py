"""What the Lava mapping needs to know about a graph before building processes.

* ``latency``: the Lava pipeline latency of every node. Lava's Dense/Conv deliver
  ``W s(t-1)``: every synapse stage adds one step, neurons/pooling/flatten add none.
  A node's value for model step t of sample k exists at Lava step
  ``k * period + t + latency``.
* ``const``: the constant part of every value (biases of synapses, carried through
  later linear stages). Lava's Dense/Conv have no bias; the constant is added where
  the current lands (neuron ``u_bias``, MaxPool, readout, a product's operand), in the IR's
  own float64. In fixed point the quantizer has folded every bias into the neurons and the
  readout except a synapse's own integer bias where it feeds a product (``ir.fixed``): that
  one travels the same way (``const`` with ``const_wrap``, the synapse's wrap width) to the
  MaxPool, Scale, ReduceSum or product that receives it.
* recurrent edges: the extra delay each needs (``need - latency[src] + 1``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable
from snncompile.targets.reference import _synapse


@dataclass(frozen=True)
class LavaMapping:
    """How one node kind maps onto Lava processes."""

    #: Lava steps the node adds: 1 for Dense/Conv synapses (they deliver ``W s(t-1)``), else 0.
    latency: int
    #: How the constant (bias) current passes the node: "synapse" (through its float op: the
    #: linear kinds), "sum" (Add), "reshape" (Flatten, Output), "consumed" (Neuron, MaxPool,
    #: products), "source" (Input).
    const: str
    #: The ``_Builder`` method (``targets/lava/builder.py``) that creates its processes
    #: (``_Builder.build`` calls ``_input`` and ``_collector`` itself: the source and the readout).
    build: str


#: The Lava target, one table per precision (the builder reads the float or fixed
#: parameters through ``params.py``; both map every kind the same way today).
_NO_MAPPING = "has no mapping for this kind of node"
LAVA_FLOAT = StageTable("lava.float", says="the Lava target", missing=_NO_MAPPING)
LAVA_FIXED = StageTable("lava.fixed", says="the Lava target (fixed point)", missing=_NO_MAPPING)
TABLES = {"float": LAVA_FLOAT, "fixed": LAVA_FIXED}
for _table in TABLES.values():
    _table.add(LavaMapping(1, "synapse", "_linear"), ir.Linear)
    _table.add(LavaMapping(1, "synapse", "_conv2d"), ir.Conv2d)
    _table.add(LavaMapping(1, "synapse", "_pool"), ir.SumPool2d, ir.AvgPool2d)
    _table.add(LavaMapping(0, "source", "_input"), ir.Input)
    _table.add(LavaMapping(0, "consumed", "_neuron"), ir.Neuron)
    _table.add(LavaMapping(0, "consumed", "_maxpool2d"), ir.MaxPool2d)
    _table.add(LavaMapping(0, "reshape", "_flatten"), ir.Flatten)
    _table.add(LavaMapping(0, "sum", "_add_node"), ir.Add)
    _table.add(LavaMapping(0, "reshape", "_collector"), ir.Output)
    # spiking transformers: layouts relabel the port positions (no process); the rest are
    # one-step stages (synapses into product units or accumulators), see builder.py
    _table.add(LavaMapping(0, "synapse", "_relabel"), ir.Reshape, ir.Permute, ir.Slice)
    _table.add(LavaMapping(1, "synapse", "_scale"), ir.Scale)
    _table.add(LavaMapping(1, "synapse", "_reduce_sum"), ir.ReduceSum)
    _table.add(LavaMapping(1, "consumed", "_product"), ir.MatMul, ir.Mul)


@dataclass
class Plan:
    order: list[str]
    latency: dict[str, int] = field(default_factory=dict)
    const: dict[str, Optional[np.ndarray]] = field(default_factory=dict)
    #: (src, dst) -> extra steps a recurrent edge needs in Lava.
    recurrent_delay: dict[tuple[str, str], int] = field(default_factory=dict)
    #: fixed point: node -> the wrap (24 or 32 bits) of the synapse whose own bias ``const`` is.
    const_wrap: dict[str, int] = field(default_factory=dict)
    #: fixed point: node -> the name of that synapse.
    const_origin: dict[str, str] = field(default_factory=dict)


def _forward_inputs(graph, name: str) -> list[str]:
    return [s for s in graph.inputs_of(name) if not graph.delay(s, name)]


def _check_mappable(graph, name: str, table: StageTable) -> LavaMapping:
    node = graph.node(name)
    mapping = table.lookup(node)
    for src in graph.inputs_of(name):
        if graph.delay(src, name) and not isinstance(node, ir.Add):
            raise SnnCompileError(
                f"recurrent edge '{src}' -> '{name}' ({node.kind}): the Lava target supports "
                f"recurrent (delayed) edges only into an Add (e.g. Neuron -> Linear --delay--> Add "
                f"-> Neuron); not supported yet here")
    if isinstance(node, ir.Add) and not _forward_inputs(graph, name):
        raise SnnCompileError(f"node '{name}' (Add): all its inputs are recurrent; the Lava "
                              f"target needs at least one non-delayed input")
    return mapping


def _const_through(node: ir.Node, c_in: Optional[np.ndarray], in_shape, out_shape):
    """The constant part of a synapse's output, given the constant part of its input."""
    has_bias = getattr(node, "bias", None) is not None
    if c_in is None and not has_bias:
        return None
    x = np.zeros(in_shape) if c_in is None else np.broadcast_to(c_in, in_shape)
    with torch.no_grad():
        out = _synapse(node, torch.as_tensor(np.array(x, dtype=np.float64))[None], {})
    out = out[0].numpy().reshape(out_shape)
    return out if np.any(out) else None


#: Fixed point: kinds that take a feeding synapse's own integer bias (ir.fixed) and the kinds
#: it passes unchanged (re-indexed); any other consumer of one is refused.
_FIXED_CONST_TAKERS = (ir.MaxPool2d, ir.Scale, ir.ReduceSum, ir.MatMul, ir.Mul)
_FIXED_CONST_PASSERS = (ir.Flatten, ir.Reshape, ir.Permute, ir.Slice)


def _fixed_const(graph, p: Plan, name: str, ins: list[str]) -> None:
    """``const`` in fixed point: a Conv/Linear's own integer bias (``f.bias``, non-zero only
    where it feeds a product) travelling to the node that adds it."""
    node = graph.node(name)
    pending = [s for s in ins if p.const.get(s) is not None]
    p.const[name] = None
    if pending and isinstance(node, _FIXED_CONST_PASSERS):
        with torch.no_grad():
            c = torch.as_tensor(np.asarray(p.const[pending[0]], dtype=np.float64))[None]
            p.const[name] = np.rint(_synapse(node, c, {})[0].numpy()).astype(np.int64)
        p.const_wrap[name] = p.const_wrap[pending[0]]
        p.const_origin[name] = p.const_origin[pending[0]]
        return
    if pending and not isinstance(node, _FIXED_CONST_TAKERS):
        raise SnnCompileError(
            f"node '{name}' ({node.kind}): it receives the integer bias of synapse "
            f"'{p.const_origin[pending[0]]}' "
            f"(kept on that synapse because it feeds a product), which the Lava mapping can add only "
            f"in a MaxPool, Scale, ReduceSum or product; not supported here")
    f = getattr(node, "fixed", None)
    if isinstance(node, (ir.Conv2d, ir.Linear)) and f is not None and np.any(f.bias):
        shape = graph.shape(name)
        bias = np.asarray(f.bias, dtype=np.int64)
        if isinstance(node, ir.Conv2d) and bias.ndim == 1:
            bias = bias.reshape(-1, 1, 1)
        p.const[name] = np.array(np.broadcast_to(bias, shape))
        p.const_wrap[name] = 24 if isinstance(node, ir.Conv2d) else 32
        p.const_origin[name] = name


def plan(graph, precision: str = "float") -> Plan:
    """Latency and constant current of every node; checks that everything maps."""
    graph.validate()
    p = Plan(order=graph.order())
    for name in p.order:
        mapping = _check_mappable(graph, name, TABLES[precision])
        node = graph.node(name)
        ins = _forward_inputs(graph, name)
        shape = graph.shape(name)
        if mapping.const == "source":
            p.latency[name], p.const[name] = 0, None
            continue
        lat_in = max(p.latency[s] for s in ins)
        p.latency[name] = lat_in + mapping.latency
        if precision == "fixed":
            _fixed_const(graph, p, name, ins)
        elif mapping.const == "synapse":
            p.const[name] = _const_through(node, p.const[ins[0]], graph.shape(ins[0]), shape)
        elif mapping.const == "sum":
            parts = [p.const[s] for s in ins if p.const[s] is not None]
            p.const[name] = np.sum([np.broadcast_to(c, shape) for c in parts], axis=0) if parts else None
        elif mapping.const == "reshape":
            c = p.const[ins[0]]
            p.const[name] = None if c is None else np.asarray(c).reshape(shape)
        else:  # "consumed" (Neuron, MaxPool): the constant is consumed there
            p.const[name] = None
    for dst in p.order:
        for src in graph.inputs_of(dst):
            if graph.delay(src, dst):
                extra = p.latency[dst] - p.latency[src] + 1
                if extra < 0:
                    raise SnnCompileError(
                        f"recurrent edge '{src}' -> '{dst}': its source is {-extra} Lava step(s) "
                        f"too deep in the pipeline to arrive by the next step; not supported yet")
                p.recurrent_delay[(src, dst)] = extra
    return p
