"""Graph -> a network of Lava processes that runs many samples back to back.

One IR value becomes a list of Lava OutPorts whose (fan-in) sum it is, plus a
constant (``plan.const``) added where it lands. Joins (Add) are fan-in: every operand's
ports connect to the consumer's input port, shorter branches first pass a ``Delay``
so all operands arrive on the same Lava step. Neurons restart at the first step of
each sample as it reaches their stage (LIFReset-style staggering), so samples run
back to back with no gap: ``period = T``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.targets.lava import limits
from snncompile.targets.lava import params as prm
from snncompile.targets.lava.layout import Layout
from snncompile.targets.lava.plan import TABLES, Plan, plan


@dataclass
class Value:
    """An IR node's output as it exists in the Lava network."""

    ports: list
    latency: int
    layout: Layout
    #: True when the value is one port carrying 0/1 spikes (binary messages suffice).
    binary: bool


@dataclass
class Schedule:
    n_samples: int
    steps: int

    @property
    def period(self) -> int:
        return self.steps

    def final_step(self, max_latency: int) -> int:
        """Lava steps until the last sample's last step has passed a stage of that latency."""
        return (self.n_samples - 1) * self.period + self.steps + max_latency


@dataclass
class LavaNet:
    """The built network: run ``source`` for ``num_steps``; collectors write to ``folder``."""

    source: object
    num_steps: int
    output: str                                    # path of the output collector's .npz
    output_layout: Layout
    records: dict = field(default_factory=dict)    # node name -> (path, Layout)
    processes: list = field(default_factory=list)  # every process, in build order

    @property
    def process_count(self) -> int:
        return len(self.processes)


class _Builder:
    def __init__(self, graph, p: Plan, sched: Schedule, folder: str, record: bool, precision: str):
        self.g, self.p, self.s, self.folder, self.record = graph, p, sched, folder, record
        self.precision = precision
        self.values: dict[str, Value] = {}
        self.processes: list = []
        self.pending_recurrent: list = []  # (src name, Delay process)
        #: Neuron name -> the Value of its membrane v (sent only by a neuron a membrane readout reads).
        self.membranes: dict[str, Value] = {}
        self.final_step = sched.final_step(max(p.latency.values()))

    # -- helpers ----------------------------------------------------------------
    def _add(self, proc):
        self.processes.append(proc)
        return proc

    @staticmethod
    def _connect(value: Value, in_port) -> None:
        for port in value.ports:
            port.connect(in_port)

    def _const_lava(self, name: str, layout: Layout):
        """The float constant current of a value (fixed point: folded by the quantizer)."""
        c = self.p.const[name]
        if c is None or self.precision == "fixed":
            return 0
        return layout.to_lava(c)

    def _collector(self, name: str, value: Value, keep_steps: bool, const):
        from snncompile.targets.lava.procs.process import Collector

        path = os.path.join(self.folder, f"{len(self.processes):04d}.npz")
        col = self._add(Collector(
            shape=value.layout.lava_shape, n_samples=self.s.n_samples, steps=self.s.steps,
            period=self.s.period, phase=value.latency, final_step=self.final_step, path=path,
            keep_steps=keep_steps, bias=const, name=f"collect:{name}"))
        self._connect(value, col.a_in)
        return path

    # -- node kinds --------------------------------------------------------------
    def build(self, x: np.ndarray, static: bool) -> LavaNet:
        out_path = out_layout = None
        records = {}
        for name in self.p.order:
            node = self.g.node(name)
            if isinstance(node, ir.Input):
                val = self._input(node, x, static)
                source = self.processes[-1]
            elif isinstance(node, ir.Output):
                src = self.g.inputs_of(name)[0]
                val = self.membranes[src] if node.mode == "membrane" else self.values[src]
                const = prm.readout_bias(self.g, val.layout, self.p.const[name], self.precision)
                out_path, out_layout = self._collector(name, val, True, const), val.layout
                continue
            else:
                val = self._map(node, name)
            self.values[name] = val
            if self.record:
                path = self._collector(name, val, False, self._const_lava(name, val.layout))
                records[name] = (path, val.layout)
        for src, delay_proc in self.pending_recurrent:
            self._connect(self.values[src], delay_proc.a_in)
        return LavaNet(source=source, num_steps=self.final_step, output=out_path,
                       output_layout=out_layout, records=records, processes=self.processes)

    def _map(self, node: ir.Node, name: str) -> Value:
        method = getattr(self, TABLES[self.precision].lookup(node).build)
        try:
            return method(node, name)
        except SnnCompileError:
            raise
        except Exception as exc:  # Lava's process constructors validate with plain exceptions
            raise SnnCompileError(f"node '{name}' ({node.kind}): Lava rejected its mapping: "
                                  f"{type(exc).__name__}: {exc}") from exc

    def _input(self, node: ir.Input, x: np.ndarray, static: bool) -> Value:
        from snncompile.targets.lava.procs.process import SampleSource

        layout = Layout(tuple(node.shape))
        lead = x.shape[:1] if static else x.shape[:2]
        flat = x.reshape(lead + (-1,))
        msgs, binary = prm.input_messages(node, flat, self.precision)
        data = np.ascontiguousarray(layout.batch_to_lava(msgs)).reshape(lead + layout.lava_shape)
        src = self._add(SampleSource(data=data, shape=layout.lava_shape, steps=self.s.steps,
                                     period=self.s.period, static=static, name=f"input:{node.name}"))
        return Value([src.s_out], 0, layout, binary)

    def _single_input(self, name: str) -> Value:
        return self.values[self.g.inputs_of(name)[0]]

    def _bits(self, node, val: Value) -> int:
        return prm.message_bits(node, val.binary, self.precision)

    def _linear(self, node: ir.Linear, name: str) -> Value:
        from lava.proc.dense.process import Dense
        from lava.proc.sparse.process import Sparse

        val = self._single_input(name)
        kwargs = prm.dense_kwargs(node, val.layout, self.precision)
        bits = self._bits(node, val)
        if prm.use_sparse(kwargs["weights"], bits, self.precision):
            from scipy.sparse import csr_matrix

            kwargs["weights"] = csr_matrix(kwargs["weights"])
            synapse = self._add(Sparse(**kwargs, num_message_bits=bits, name=name))
        else:
            synapse = self._add(Dense(**kwargs, num_message_bits=bits, name=name))
        self._connect(val, synapse.s_in)
        return Value([synapse.a_out], val.latency + 1, Layout(self.g.shape(name)), False)

    def _conv(self, name: str, weight: np.ndarray, node, groups: int, dilation=(1, 1)) -> Value:
        from lava.proc.conv.process import Conv

        val = self._single_input(name)
        bits = self._bits(node, val)
        if self.precision == "fixed":
            limits.check_conv(name, node.kind, weight, bits)
        conv = self._add(Conv(weight=weight, input_shape=val.layout.lava_shape,
                              padding=tuple(node.padding[::-1]), stride=tuple(node.stride[::-1]),
                              dilation=tuple(dilation[::-1]), groups=groups,
                              num_message_bits=bits, name=name))
        self._connect(val, conv.s_in)
        layout = Layout(self.g.shape(name))
        if tuple(conv.a_out.shape) != layout.lava_shape:  # guards the layout arithmetic
            raise SnnCompileError(f"node '{name}': Lava Conv output {conv.a_out.shape} does not "
                                  f"match the IR shape {self.g.shape(name)}")
        return Value([conv.a_out], val.latency + 1, layout, False)

    def _conv2d(self, node: ir.Conv2d, name: str) -> Value:
        return self._conv(name, prm.conv_weights(node, self.precision), node, node.groups, node.dilation)

    def _pool(self, node, name: str) -> Value:
        channels = self.g.shape(name)[0]
        return self._conv(name, prm.pool_weights(node, channels, self.precision), node, channels)

    def _maxpool2d(self, node: ir.MaxPool2d, name: str) -> Value:
        from snncompile.targets.lava.procs.process import MaxPool

        val = self._single_input(name)
        layout = Layout(self.g.shape(name))
        in_name = self.g.inputs_of(name)[0]
        mp = self._add(MaxPool(in_shape=val.layout.lava_shape, out_shape=layout.lava_shape,
                               kernel_size=node.kernel_size[::-1], stride=node.stride[::-1],
                               padding=node.padding[::-1],
                               bias=self._const_lava(in_name, val.layout), name=name))
        self._connect(val, mp.a_in)
        return Value([mp.s_out], val.latency, layout, val.binary and not np.any(mp.proc_params["bias"]))

    def _flatten(self, node: ir.Flatten, name: str) -> Value:
        val = self._single_input(name)
        layout = val.layout.flattened()
        ports = val.ports if len(val.layout.lava_shape) == 1 else [
            port.reshape(layout.lava_shape) for port in val.ports]
        return Value(ports, val.latency, layout, val.binary)

    def _add_node(self, node: ir.Add, name: str) -> Value:
        from snncompile.targets.lava.procs.process import Delay

        latency = self.p.latency[name]
        ports, layout = [], None
        for src in self.g.inputs_of(name):
            if self.g.delay(src, name):
                continue
            val = self.values[src]
            if layout is None:
                layout = val.layout
            elif not layout.same_as(val.layout):
                raise SnnCompileError(f"node '{name}' (Add): its inputs are laid out differently in "
                                      f"Lava (a flattened image joined with a vector); not supported")
            if val.latency < latency:  # delay-balance the shorter branch
                delay = self._add(Delay(shape=layout.lava_shape, delay=latency - val.latency,
                                        name=f"balance:{src}->{name}"))
                self._connect(val, delay.a_in)
                val = Value([delay.s_out], latency, layout, val.binary)
            ports += val.ports
        for src in self.g.inputs_of(name):
            if self.g.delay(src, name):
                rec = self._add(Delay(
                    shape=layout.lava_shape, delay=self.p.recurrent_delay[(src, name)],
                    period=self.s.period, gate_phase=latency,
                    bias=self._const_lava(src, layout), name=f"recurrent:{src}->{name}"))
                self.pending_recurrent.append((src, rec))
                ports.append(rec.s_out)
        return Value(ports, latency, layout, False)

    def _neuron(self, node: ir.Neuron, name: str) -> Value:
        from lava.proc.lif.process import LIFReset

        from snncompile.targets.lava.procs.process import SnnNeuron

        val = self._single_input(name)
        in_name = self.g.inputs_of(name)[0]
        np_ = prm.neuron_params(node, val.layout, self.p.const[in_name], self.precision)
        shape = val.layout.lava_shape
        send_v = self.g.output.mode == "membrane" and self.g.inputs_of(self.g.output.name)[0] == name
        if np_.stock and not send_v:
            neuron = LIFReset(shape=shape, reset_interval=self.s.period,
                              reset_offset=(val.latency + 1) % self.s.period, name=name,
                              **np_.lif_kwargs())
        else:
            neuron = SnnNeuron(shape=shape, params=np_.arrays, reset_mode=np_.reset_mode,
                               compare=np_.compare, period=self.s.period, phase=val.latency,
                               send_v=send_v, name=name)
            if send_v:
                self.membranes[name] = Value([neuron.v_out], val.latency, val.layout, False)
        self._add(neuron)
        self._connect(val, neuron.a_in)
        return Value([neuron.s_out], val.latency, val.layout, True)


def build(graph, x: np.ndarray, static: bool, steps: int, folder: str,
          record: bool = False, the_plan: Optional[Plan] = None, precision: str = "float") -> LavaNet:
    """Build the Lava network of ``graph`` for samples ``x`` ((N, T, *shape), or (N, *shape)
    when ``static``). Result files go to ``folder``."""
    p = the_plan or plan(graph, precision)
    sched = Schedule(n_samples=int(x.shape[0]), steps=int(steps))
    return _Builder(graph, p, sched, folder, record, precision).build(x, static)
