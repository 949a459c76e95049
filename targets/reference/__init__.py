"""Reference target: float64 simulation of the IR, batched over samples, in eager time.

This is the meaning of the graph: every other target is checked against it. It runs
the node equations of ``snncompile.ir.nodes`` literally, with torch tensors for the
synapse operators (the same conv/linear kernels PyTorch uses).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable
from snncompile.targets.base import RunResult, prepare_inputs

DTYPE = torch.float64


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=DTYPE)


class NeuronState:
    """State and per-step update of one Neuron population (float equations)."""

    def __init__(self, node: ir.Neuron, batch: int):
        self.node = node
        shape = (batch,) + tuple(node.shape)
        self.keep_u = 1.0 - _t(node.du)
        self.keep_v = 1.0 - _t(node.dv)
        self.bias = _t(node.bias)
        self.threshold = _t(node.threshold)
        self.reset_value = _t(node.reset_value)
        self.reset_amount = _t(node.reset_amount)
        self.u = _t(node.u_init).expand(shape).clone()
        self.v = _t(node.v_init).expand(shape).clone()

    def step(self, x: torch.Tensor) -> torch.Tensor:
        node = self.node
        self.u = self.u * self.keep_u + x
        self.v = self.v * self.keep_v + self.u + self.bias
        s = (self.v >= self.threshold) if node.compare == ">=" else (self.v > self.threshold)
        if node.reset_mode == "zero":
            self.v = torch.where(s, self.reset_value, self.v)
        elif node.reset_mode == "subtract":
            self.v = self.v - self.reset_amount * s
        return s.to(DTYPE)


#: The reference stage: kind -> ``fn(sim, node, ins, x_t)`` giving the node's value at step t.
TABLE = StageTable("reference")


def _weights(node: ir.Node, cache: dict):
    if node.name not in cache:
        cache[node.name] = (_t(node.weight), None if node.bias is None else _t(node.bias))
    return cache[node.name]


def batch_invariant_linear(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear`` with every row computed on its own (``torch.mv``). BLAS picks its kernel and
    its split of the sums by the number of rows, so F.linear's float64 rows differ in their last
    bits with the batch size (on this machine's MKL: 1-3 rows, and 16-32 rows at K = 1024): a
    result would depend on ``--chunk-size``. One row at a time always takes the same path."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.stack([torch.mv(w, row) for row in rows]) if len(rows) else rows.new_zeros((0, w.shape[0]))
    if b is not None:
        out = out + b
    return out.reshape(x.shape[:-1] + (w.shape[0],))


@TABLE.implements(ir.Linear)
def _linear(sim, node, ins, x_t):
    return batch_invariant_linear(ins[0], *_weights(node, sim.cache))


@TABLE.implements(ir.Conv2d)
def _conv2d(sim, node, ins, x_t):
    w, b = _weights(node, sim.cache)
    return F.conv2d(ins[0], w, b, node.stride, node.padding, node.dilation, node.groups)


@TABLE.implements(ir.SumPool2d)
def _sumpool2d(sim, node, ins, x_t):
    return F.avg_pool2d(ins[0], node.kernel_size, node.stride, node.padding,
                        count_include_pad=True, divisor_override=1)


@TABLE.implements(ir.AvgPool2d)
def _avgpool2d(sim, node, ins, x_t):
    return F.avg_pool2d(ins[0], node.kernel_size, node.stride, node.padding, count_include_pad=True)


@TABLE.implements(ir.MaxPool2d)
def _maxpool2d(sim, node, ins, x_t):
    return F.max_pool2d(ins[0], node.kernel_size, node.stride, node.padding)


@TABLE.implements(ir.Input)
def _input(sim, node, ins, x_t):
    return x_t


@TABLE.implements(ir.Neuron)
def _neuron(sim, node, ins, x_t):
    return sim.neurons[node.name].step(ins[0])


@TABLE.implements(ir.Flatten)
def _flatten(sim, node, ins, x_t):
    return ins[0].reshape(ins[0].shape[0], -1)


@TABLE.implements(ir.Add)
def _add(sim, node, ins, x_t):
    val = ins[0]
    for other in ins[1:]:
        val = val + other
    return val


@TABLE.implements(ir.Output)
def _output(sim, node, ins, x_t):
    if node.mode == "membrane":   # the membrane of the Neuron it reads (validated), after its step
        return sim.neurons[sim.inputs[node.name][0]].v
    return ins[0]


# -- spiking-transformer kinds: per-sample axes are axis + 1 (the batch is axis 0) ---------
@TABLE.implements(ir.Reshape)
def _reshape(sim, node, ins, x_t):
    return ins[0].reshape((ins[0].shape[0],) + node.shape)


@TABLE.implements(ir.Permute)
def _permute(sim, node, ins, x_t):
    return ins[0].permute(0, *(p + 1 for p in node.perm))


@TABLE.implements(ir.Slice)
def _slice(sim, node, ins, x_t):
    axis = node.axis % (ins[0].dim() - 1) + 1
    return ins[0].narrow(axis, node.start, node.stop - node.start)


@TABLE.implements(ir.MatMul)
def _matmul(sim, node, ins, x_t):
    # one sample at a time, for the reason of batch_invariant_linear (batched BLAS is not)
    a, b = ins
    if len(a) <= 1:
        return torch.matmul(a, b)
    return torch.stack([torch.matmul(a[i], b[i]) for i in range(len(a))])


@TABLE.implements(ir.Mul)
def _mul(sim, node, ins, x_t):
    return ins[0] * ins[1]


@TABLE.implements(ir.ReduceSum)
def _reduce_sum(sim, node, ins, x_t):
    axis = node.axis % (ins[0].dim() - 1) + 1
    return ins[0].sum(axis, keepdim=node.keepdim)


@TABLE.implements(ir.Scale)
def _scale(sim, node, ins, x_t):
    w, b = _weights(node, sim.cache)
    return ins[0] * w if b is None else ins[0] * w + b


@dataclass
class _CacheOnly:
    """The part of a Simulator a synapse entry reads (its weight cache)."""

    cache: dict


def _synapse(node: ir.Node, x: torch.Tensor, cache: dict) -> torch.Tensor:
    """One synapse's float output on ``x`` (used outside a Simulator, e.g. by the Lava plan)."""
    return TABLE.lookup(node)(_CacheOnly(cache), node, [x], None)


class Simulator:
    """Steps a graph one time step at a time for a batch of samples."""

    def __init__(self, graph, batch: int, record: bool = False, steps: int = 0):
        graph.validate()
        self.graph = graph
        self.order = graph.order()
        self.inputs = {n: graph.inputs_of(n) for n in self.order}
        #: (src, dst) of recurrent edges: dst reads src's value of the previous step.
        self.delayed = {(s, d) for d in self.order for s in self.inputs[d] if graph.delay(s, d)}
        self.previous: dict[str, torch.Tensor] = {}
        self.neurons = {n: self._neuron_state(graph.node(n), batch) for n in self.order
                        if isinstance(graph.node(n), ir.Neuron)}
        self.cache: dict = {}
        self.record = record
        self.layer_counts: dict[str, torch.Tensor] = {}
        self.layer_steps: dict[str, list] = {}

    # Hooks a subclass overrides to run the same graph walk with other arithmetic
    # (the emulator's integer simulator does): state per neuron, one node's value, zeros.
    def _neuron_state(self, node: ir.Neuron, batch: int):
        return NeuronState(node, batch)

    def _apply(self, node: ir.Node, ins: list, x_t: torch.Tensor) -> torch.Tensor:
        return TABLE.lookup(node)(self, node, ins, x_t)

    def _zeros(self, shape: tuple) -> torch.Tensor:
        return torch.zeros(shape, dtype=DTYPE)

    def step(self, x_t: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        out = None
        for name in self.order:
            node = self.graph.node(name)
            ins = [self._read(values, i, name) for i in self.inputs[name]]
            val = self._apply(node, ins, x_t)
            if isinstance(node, ir.Output):
                out = val
            values[name] = val
            if self.record and not isinstance(node, ir.Output):
                self._record(name, val)
        if self.delayed:
            self.previous = {s: values[s] for s, _ in self.delayed}
        return out

    def _read(self, values: dict, src: str, dst: str) -> torch.Tensor:
        if (src, dst) not in self.delayed:
            return values[src]
        if src in self.previous:
            return self.previous[src]
        batch = next(iter(values.values())).shape[0]
        return self._zeros((batch,) + tuple(self.graph.shape(src)))

    def _record(self, name: str, val: torch.Tensor) -> None:
        if name in self.layer_counts:
            self.layer_counts[name] += val
        else:
            self.layer_counts[name] = val.clone()
        self.layer_steps.setdefault(name, []).append(val.reshape(val.shape[0], -1).sum(1))


def simulate(graph, xs: np.ndarray, T: int, record: bool = False, batch_size: int = 512,
             simulator=None) -> tuple[np.ndarray, dict, dict]:
    """Run prepared inputs ``xs`` (N, T, *shape) in batches through ``simulator(graph, batch,
    record=...)`` (default :class:`Simulator`); returns (outputs (N, T, n_out) float64,
    layer_counts, layer_steps). Shared by every target that steps the graph in Python."""
    simulator = simulator or Simulator
    outputs, counts, steps_rec = [], {}, {}
    with torch.no_grad():
        for lo in range(0, xs.shape[0], batch_size):
            chunk = torch.from_numpy(xs[lo:lo + batch_size])
            sim = simulator(graph, chunk.shape[0], record=record)
            outs = [sim.step(chunk[:, t]) for t in range(T)]
            outputs.append(torch.stack(outs, 1).reshape(chunk.shape[0], T, -1).to(DTYPE).numpy())
            for name, c in sim.layer_counts.items():
                counts.setdefault(name, []).append(c.to(DTYPE).numpy())
                steps_rec.setdefault(name, []).append(torch.stack(sim.layer_steps[name], 1).to(DTYPE).numpy())
    return (np.concatenate(outputs) if outputs else np.zeros((0, T, 0)),
            {k: np.concatenate(v) for k, v in counts.items()},
            {k: np.concatenate(v) for k, v in steps_rec.items()})


def run(graph, x, steps: Optional[int] = None, precision: str = "float", record: bool = False,
        batch_size: int = 512) -> RunResult:
    """Simulate ``graph`` on inputs ``x`` ((N, T, *shape) or static (N, *shape))."""
    if precision != "float":
        raise SnnCompileError("the reference target is float only; use --backend emulator "
                              "or lava for --precision fixed")
    xs, T = prepare_inputs(graph, x, steps)
    outputs, counts, steps_rec = simulate(graph, xs, T, record=record, batch_size=batch_size)
    return RunResult(outputs=outputs, readout=graph.output.mode, backend="reference",
                     precision="float", layer_counts=counts, layer_steps=steps_rec)
