"""Float-side analysis the quantizer needs: constant (bias) currents and calibration ranges.

Both run the reference target's float simulation (imported, not copied): the constant
currents by walking the synapses on zeros, the ranges by recording the largest magnitude
of every node's value and of every neuron's ``u`` and ``v`` over calibration data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from snncompile.errors import SnnCompileError
from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.targets.base import prepare_inputs
from snncompile.targets.reference import DTYPE, TABLE as REFERENCE, Simulator, _CacheOnly, _synapse

#: Nodes that carry a value on linearly with no gain of their own (scales walk through them).
THROUGH = (ir.Add,) + ir.LAYOUTS + (ir.ReduceSum,)
#: Nodes with a gain (an integer weight mantissa) and, in float, a bias.
GAINS = ir.SYNAPSES + (ir.Scale,)


#: The spiking-transformer kinds: graphs with them run on the emulator only (both engines apply
#: synapse biases; Lava and NIR refuse them).
TRANSFORMER_KINDS = tuple(ir.NODE_TYPES[k] for k in fx.TRANSFORMER_KIND_NAMES)


def biases_kept(graph, through_maxpool: bool = True) -> set[str]:
    """Synapses/Scales whose value reaches a product (MatMul, Mul) through :data:`THROUGH`
    nodes: their constant part cannot move into a neuron (a bias times spikes is not a
    constant), so they keep it as their own integer bias (``ir.fixed``). In a transformer
    graph (``through_maxpool``) also those that reach a MaxPool of currents (SDT's and
    QKFormer's pooled BN outputs): the max of the integers with their bias is exact."""
    pools = through_maxpool and any(isinstance(n, TRANSFORMER_KINDS) for n in graph)
    kept = set()
    for node in graph:
        if not isinstance(node, GAINS):
            continue
        frontier, seen = [node.name], set()
        while frontier:
            n = frontier.pop()
            for c in graph.consumers(n):
                cnode = graph.node(c)
                if isinstance(cnode, ir.PRODUCTS) or (pools and isinstance(cnode, ir.MaxPool2d)):
                    kept.add(node.name)
                elif isinstance(cnode, THROUGH) and c not in seen:
                    seen.add(c)
                    frontier.append(c)
    return kept


def constant_parts(graph) -> dict[str, np.ndarray]:
    """Per node, the part of its output that does not depend on input or spikes.

    Loihi synapses have no bias: every synapse bias is moved into the neuron it reaches.
    Synapses, pooling, layouts, sums and Add are linear, so a node's value is (its value with
    all biases zero) + (its value on all-zero inputs and spikes); the second part is what
    this computes, exactly, per element (padding borders included). A synapse in
    :func:`biases_kept` realizes its own constant: its consumers see 0 from it. MaxPool is
    not linear: a non-zero constant reaching one is an error.
    """
    out: dict[str, torch.Tensor] = {}
    flow: dict[str, torch.Tensor] = {}
    kept = biases_kept(graph)
    cache: dict = {}
    for node in graph:
        name = node.name
        ins = [flow[i] for i in graph.inputs_of(name) if not graph.delay(i, name)]
        shape = (1,) + tuple(graph.shape(name))
        if isinstance(node, (ir.Input, ir.Neuron)):
            val = torch.zeros(shape, dtype=DTYPE)
        elif isinstance(node, ir.Flatten):
            val = ins[0].reshape(1, -1)
        elif isinstance(node, ir.Add):
            val = sum(ins[1:], ins[0]) if ins else torch.zeros(shape, dtype=DTYPE)
        elif isinstance(node, ir.Output):
            val = ins[0]
        elif isinstance(node, ir.MaxPool2d):
            if torch.any(ins[0] != 0):
                raise SnnCompileError(f"node '{name}' (MaxPool2d): its input carries a constant (bias) "
                                      f"current; Loihi has no max over currents -- pool after the neuron")
            val = torch.zeros(shape, dtype=DTYPE)
        elif isinstance(node, GAINS):
            val = _synapse(node, ins[0], cache)
        else:  # layouts, products, sums: the reference's own arithmetic on the constants
            val = REFERENCE.lookup(node)(_CacheOnly(cache), node, ins, None)
        out[name] = val
        flow[name] = torch.zeros_like(val) if name in kept else val
    return {k: v[0].numpy() for k, v in out.items()}


@dataclass
class Ranges:
    """Largest magnitudes seen in float over calibration data."""

    value: dict[str, float] = field(default_factory=dict)    # node output (currents, messages)
    u: dict[str, float] = field(default_factory=dict)
    v: dict[str, float] = field(default_factory=dict)
    input_binary: bool = True
    input_max: float = 0.0
    n_samples: int = 0


class _RangeSimulator(Simulator):
    """The reference simulator, also keeping max |value| per node and max |u|, |v| per neuron."""

    def __init__(self, graph, batch, record=False):
        super().__init__(graph, batch, record=record)
        self.ranges = Ranges()

    def _apply(self, node, ins, x_t):
        val = super()._apply(node, ins, x_t)
        r = self.ranges
        m = float(val.abs().max()) if val.numel() else 0.0
        r.value[node.name] = max(r.value.get(node.name, 0.0), m)
        if isinstance(node, ir.Neuron):
            st = self.neurons[node.name]
            r.u[node.name] = max(r.u.get(node.name, 0.0), float(st.u.abs().max()))
            r.v[node.name] = max(r.v.get(node.name, 0.0), float(st.v.abs().max()))
        return val


def calibration_ranges(graph, x, steps=None, batch_size: int = 256) -> Ranges:
    """Run the float reference over ``x`` and return the ranges the quantizer scales by."""
    xs, T = prepare_inputs(graph, x, steps)
    total = Ranges(input_binary=bool(np.all((xs == 0) | (xs == 1))),
                   input_max=float(np.abs(xs).max()) if xs.size else 0.0, n_samples=int(xs.shape[0]))
    with torch.no_grad():
        for lo in range(0, xs.shape[0], batch_size):
            chunk = torch.from_numpy(xs[lo:lo + batch_size])
            sim = _RangeSimulator(graph, chunk.shape[0])
            for t in range(T):
                sim.step(chunk[:, t])
            for key in ("value", "u", "v"):
                mine, theirs = getattr(total, key), getattr(sim.ranges, key)
                for k, val in theirs.items():
                    mine[k] = max(mine.get(k, 0.0), val)
    return total
