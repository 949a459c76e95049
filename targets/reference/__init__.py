"""Reference target: float64 simulation of the IR, batched over samples, in eager time.

This is the meaning of the graph: every other target is checked against it. It runs
the node equations of ``snncompile.ir.nodes`` literally, with torch tensors for the
synapse operators (the same conv/linear kernels PyTorch uses).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
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


def _synapse(node: ir.Node, x: torch.Tensor, cache: dict) -> torch.Tensor:
    if isinstance(node, ir.Linear):
        if node.name not in cache:
            cache[node.name] = (_t(node.weight), None if node.bias is None else _t(node.bias))
        w, b = cache[node.name]
        return F.linear(x, w, b)
    if isinstance(node, ir.Conv2d):
        if node.name not in cache:
            cache[node.name] = (_t(node.weight), None if node.bias is None else _t(node.bias))
        w, b = cache[node.name]
        return F.conv2d(x, w, b, node.stride, node.padding, node.dilation, node.groups)
    if isinstance(node, ir.SumPool2d):
        return F.avg_pool2d(x, node.kernel_size, node.stride, node.padding,
                            count_include_pad=True, divisor_override=1)
    if isinstance(node, ir.AvgPool2d):
        return F.avg_pool2d(x, node.kernel_size, node.stride, node.padding, count_include_pad=True)
    if isinstance(node, ir.MaxPool2d):
        return F.max_pool2d(x, node.kernel_size, node.stride, node.padding)
    raise SnnCompileError(f"node '{node.name}': the reference target cannot run kind {node.kind}")


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
        self.neurons = {n: NeuronState(graph.node(n), batch) for n in self.order
                        if isinstance(graph.node(n), ir.Neuron)}
        self.cache: dict = {}
        self.record = record
        self.layer_counts: dict[str, torch.Tensor] = {}
        self.layer_steps: dict[str, list] = {}

    def step(self, x_t: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        out = None
        for name in self.order:
            node = self.graph.node(name)
            ins = [self._read(values, i, name) for i in self.inputs[name]]
            if isinstance(node, ir.Input):
                val = x_t
            elif isinstance(node, ir.Neuron):
                val = self.neurons[name].step(ins[0])
            elif isinstance(node, ir.Flatten):
                val = ins[0].reshape(ins[0].shape[0], -1)
            elif isinstance(node, ir.Add):
                val = ins[0]
                for other in ins[1:]:
                    val = val + other
            elif isinstance(node, ir.Output):
                val = out = ins[0]
            else:
                val = _synapse(node, ins[0], self.cache)
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
        return torch.zeros((batch,) + tuple(self.graph.shape(src)), dtype=DTYPE)

    def _record(self, name: str, val: torch.Tensor) -> None:
        if name in self.layer_counts:
            self.layer_counts[name] += val
        else:
            self.layer_counts[name] = val.clone()
        self.layer_steps.setdefault(name, []).append(val.reshape(val.shape[0], -1).sum(1))


def run(graph, x, steps: Optional[int] = None, precision: str = "float", record: bool = False,
        batch_size: int = 512) -> RunResult:
    """Simulate ``graph`` on inputs ``x`` ((N, T, *shape) or static (N, *shape))."""
    if precision != "float":
        raise SnnCompileError("the reference target is float only; use --backend emulator "
                              "or lava for --precision fixed")
    xs, T = prepare_inputs(graph, x, steps)
    outputs, counts, steps_rec = [], {}, {}
    with torch.no_grad():
        for lo in range(0, xs.shape[0], batch_size):
            chunk = torch.from_numpy(xs[lo:lo + batch_size])
            sim = Simulator(graph, chunk.shape[0], record=record)
            outs = [sim.step(chunk[:, t]) for t in range(T)]
            outputs.append(torch.stack(outs, 1).reshape(chunk.shape[0], T, -1).numpy())
            for name, c in sim.layer_counts.items():
                counts.setdefault(name, []).append(c.numpy())
                steps_rec.setdefault(name, []).append(torch.stack(sim.layer_steps[name], 1).numpy())
    return RunResult(
        outputs=np.concatenate(outputs) if outputs else np.zeros((0, T, 0)),
        readout=graph.output.mode,
        backend="reference",
        precision="float",
        layer_counts={k: np.concatenate(v) for k, v in counts.items()},
        layer_steps={k: np.concatenate(v) for k, v in steps_rec.items()},
    )
