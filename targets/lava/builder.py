"""Graph -> a network of Lava processes that runs many samples back to back.

One IR value becomes a list of Lava OutPorts whose (fan-in) sum it is, arranged as its
``Layout`` says (``layout.py``), plus a constant (``plan.const``) added where it lands. Joins
(Add) are fan-in: every operand's ports connect to the consumer's input port, shorter
branches first pass a ``Delay`` so all operands arrive on the same Lava step; the operands of
a product or mask are balanced the same way. Neurons restart at the first step of each
sample as it reaches their stage (LIFReset-style staggering), so samples run back to back
with no gap: ``period = T``.

Spiking-transformer kinds (issue 12): layouts relabel port positions (no process; a ``Route``
only where a consumer needs another arrangement); a mask of two spike trains is stock Sparse
fan-outs into an AND-firing LIF; a sum of spikes a stock Sparse of ones; graded sums and Scales
our ``Accumulate``; MatMul and graded Mul our ``Product`` (``procs/process.py`` says what a
Loihi 2 chip would use for each). The size of the result is ``size.py``'s.
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
        self.pending_recurrent: list = []  # (src name, Delay process, the Add's Layout)
        #: Neuron name -> the Value of its membrane v (sent only by a neuron a membrane readout reads).
        self.membranes: dict[str, Value] = {}
        self.final_step = sched.final_step(max(p.latency.values()))

    # -- helpers ----------------------------------------------------------------
    def _recorded(self, node) -> bool:
        """Whether a node gets a Collector: ``record`` is True (every node; a Reshape/Permute is
        derived instead, :meth:`_derived`) or a collection of the node names to record."""
        if isinstance(self.record, bool):
            return self.record and not isinstance(node, (ir.Reshape, ir.Permute))
        return node.name in self.record

    def _derived(self, node) -> bool:
        """Recorded without a process: a Reshape/Permute's counts are its input's, re-indexed."""
        return isinstance(node, (ir.Reshape, ir.Permute)) and (
            self.record is True or (not isinstance(self.record, bool) and node.name in self.record))

    def _add(self, proc):
        self.processes.append(proc)
        return proc

    @staticmethod
    def _connect(value: Value, in_port) -> None:
        """Every port of ``value`` into ``in_port`` (fan-in sums them), reshaped to its shape
        where they differ (a view of the same flat positions)."""
        shape = tuple(in_port.shape)
        for port in value.ports:
            if tuple(port.shape) != shape:
                port = port.reshape(shape)
            port.connect(in_port)

    def _dtype(self):
        return np.int64 if self.precision == "fixed" else np.float64

    def _const_lava(self, name: str, layout: Layout):
        """The constant part of a value arranged as its port (``plan.const``: float bias
        currents, or in fixed point a synapse's own integer bias that feeds a product)."""
        c = self.p.const[name]
        if c is None:
            return 0
        return layout.to_lava(c, dtype=self._dtype())

    def _const_ir(self, name: str):
        """The constant part of a value in IR (C) order, flat (0 when there is none)."""
        c = self.p.const[name]
        if c is None:
            return 0
        return np.broadcast_to(np.asarray(c, dtype=self._dtype()), self.g.shape(name)).reshape(-1).copy()

    def _collector(self, name: str, value: Value, keep_steps: bool, const):
        from snncompile.targets.lava.procs.process import Collector

        path = os.path.join(self.folder, f"{len(self.processes):04d}.npz")
        col = self._add(Collector(
            shape=value.layout.lava_shape, n_samples=self.s.n_samples, steps=self.s.steps,
            period=self.s.period, phase=value.latency, final_step=self.final_step, path=path,
            keep_steps=keep_steps, gather=value.layout.gather(), bias=const, name=f"collect:{name}"))
        self._connect(value, col.a_in)
        return path

    # -- arrangement and time -------------------------------------------------------
    def _route(self, value: Value, target: Layout, label: str) -> Value:
        """``value`` re-arranged as ``target`` (one-to-one) by a zero-latency Route process."""
        from snncompile.targets.lava.procs.process import Route

        gather = np.zeros(target.port_size, dtype=np.int64)
        gather[target.positions()] = value.layout.positions()
        route = self._add(Route(in_shape=value.layout.port_shape, out_shape=target.port_shape,
                                gather=gather, name=f"route:{label}"))
        self._connect(value, route.a_in)
        return Value([route.s_out], value.latency, target, value.binary)

    def _natural(self, value: Value, label: str) -> Value:
        """``value`` in its natural layout (a WHC image for a Conv, a pool or a MaxPool). Where
        only the port's shape differs (a flat port holding the image's positions) the ports are
        reshaped when connected: no process."""
        target = Layout(value.layout.ir_shape)
        if value.layout.same_as(target):
            if value.layout.port_shape == target.port_shape:
                return value
            return Value(value.ports, value.latency, target, value.binary)
        return self._route(value, target, label)

    def _one_to_one(self, value: Value, label: str) -> Value:
        """``value`` on a port where each position holds one element (a neuron population)."""
        if value.layout.one_to_one:
            return value
        return self._route(value, Layout(value.layout.ir_shape), label)

    def _aligned(self, value: Value, latency: int, label: str) -> Value:
        """``value`` delayed to arrive at Lava latency ``latency`` (delay balancing of joins)."""
        from snncompile.targets.lava.procs.process import Delay

        if value.latency >= latency:
            return value
        delay = self._add(Delay(shape=value.layout.port_shape, delay=latency - value.latency,
                                name=f"balance:{label}"))
        self._connect(value, delay.a_in)
        return Value([delay.s_out], latency, value.layout, value.binary)

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
                const = prm.readout_bias(self.g, self.p.const[name], self.precision)
                out_path, out_layout = self._collector(name, val, True, const), val.layout
                continue
            else:
                val = self._map(node, name)
            self.values[name] = val
            if self._derived(node):
                records[name] = ("derived", node)
            elif self._recorded(node):
                path = self._collector(name, val, False, self._const_ir(name))
                records[name] = (path, val.layout)
        for src, delay_proc, layout in self.pending_recurrent:
            val = self.values[src]
            if not val.layout.same_as(layout):   # arranged as the Add it joins
                val = self._route(val, layout, f"recurrent:{src}")
            self._connect(val, delay_proc.a_in)
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

        val = self._natural(self._single_input(name), name)
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

        val = self._natural(self._single_input(name), name)
        layout = Layout(self.g.shape(name))
        in_name = self.g.inputs_of(name)[0]
        mp = self._add(MaxPool(in_shape=val.layout.lava_shape, out_shape=layout.lava_shape,
                               kernel_size=node.kernel_size[::-1], stride=node.stride[::-1],
                               padding=node.padding[::-1],
                               bias=self._const_lava(in_name, val.layout),
                               wrap_bits=self.p.const_wrap.get(in_name, 0), name=name))
        self._connect(val, mp.a_in)
        return Value([mp.s_out], val.latency, layout, val.binary and not np.any(mp.proc_params["bias"]))

    def _flatten(self, node: ir.Flatten, name: str) -> Value:
        val = self._single_input(name)
        return Value(val.ports, val.latency, val.layout.flattened(), val.binary)

    def _add_node(self, node: ir.Add, name: str) -> Value:
        from snncompile.targets.lava.procs.process import Delay

        latency = self.p.latency[name]
        ports, layout = [], None
        for src in self.g.inputs_of(name):
            if self.g.delay(src, name):
                continue
            val = self.values[src]
            if layout is None:
                val = self._one_to_one(val, f"{src}->{name}")
                layout = val.layout
            elif not layout.same_as(val.layout):   # fan-in needs one arrangement
                val = self._route(val, layout, f"{src}->{name}")
            val = self._aligned(val, latency, f"{src}->{name}")
            ports += val.ports
        for src in self.g.inputs_of(name):
            if self.g.delay(src, name):
                rec = self._add(Delay(
                    shape=layout.lava_shape, delay=self.p.recurrent_delay[(src, name)],
                    period=self.s.period, gate_phase=latency,
                    bias=self._const_lava(src, layout), name=f"recurrent:{src}->{name}"))
                self.pending_recurrent.append((src, rec, layout))
                ports.append(rec.s_out)
        return Value(ports, latency, layout, False)

    def _neuron(self, node: ir.Neuron, name: str) -> Value:
        from lava.proc.lif.process import LIFReset

        from snncompile.targets.lava.procs.process import SnnNeuron

        val = self._one_to_one(self._single_input(name), name)
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

    # -- spiking-transformer kinds --------------------------------------------------------
    def _relabel(self, node, name: str) -> Value:
        """Reshape / Permute / Slice: the same ports, relabelled (``layout.py``)."""
        from snncompile.targets.lava.layout import layout_source

        val = self._single_input(name)
        in_shape = tuple(self.g.shape(self.g.inputs_of(name)[0]))
        source = None if isinstance(node, ir.Reshape) else layout_source(node.kind, in_shape, node)
        return Value(val.ports, val.latency, val.layout.relabelled(self.g.shape(name), source), val.binary)

    def _operand(self, src: str, latency: int, label: str) -> tuple[Value, dict]:
        """An input of one of our processes, delay-balanced, and how the process reads it."""
        val = self._aligned(self.values[src], latency, label)
        read = dict(gather=val.layout.gather(), const=self._const_ir(src) if self.precision == "fixed"
                    else 0, wrap=self.p.const_wrap.get(src, 0))
        return val, read

    def _flat_out(self, name: str) -> Layout:
        """The layout our processes send: the IR value in C order on a flat port."""
        shape = tuple(self.g.shape(name))
        return Layout(shape, (int(np.prod(shape)),), None)

    def _scale(self, node: ir.Scale, name: str) -> Value:
        from snncompile.targets.lava.procs.process import Accumulate

        src = self.g.inputs_of(name)[0]
        val, read = self._operand(src, self.values[src].latency, name)
        shape = tuple(self.g.shape(name))
        if self.precision == "fixed":
            f = prm.need_fixed(node)
            args = dict(weight=np.broadcast_to(f.weight, shape).copy(), weight_exp=f.weight_exp,
                        bias=np.broadcast_to(f.bias, shape).copy(), binary=f.num_message_bits == 0)
        else:   # the float bias travels as the value's constant part (plan.const)
            args = dict(weight=np.broadcast_to(node.weight, shape).copy())
        proc = self._add(Accumulate(op="scale", in_shape=shape, out_shape=shape,
                                    in_port=val.layout.port_shape, name=name, **read, **args))
        self._connect(val, proc.a_in)
        return Value([proc.s_out], val.latency + 1, self._flat_out(name), False)

    def _reduce_sum(self, node: ir.ReduceSum, name: str) -> Value:
        """A sum of spikes is Lava's Sparse of ones (exact: at most n); of graded values our
        Accumulate (the IR's 24-bit wrap, which Lava's 32-bit Dense would not do)."""
        src = self.g.inputs_of(name)[0]
        in_shape = tuple(self.g.shape(src))
        val = self.values[src]
        axis = node.axis % len(in_shape)
        if val.binary and self.p.const[src] is None:
            from lava.proc.sparse.process import Sparse
            from scipy.sparse import csr_matrix

            out_index = np.arange(int(np.prod(self.g.shape(name)))).reshape(
                tuple(self.g.shape(name)) if node.keepdim else
                tuple(in_shape[:axis]) + (1,) + tuple(in_shape[axis + 1:]))
            out_of_in = np.broadcast_to(out_index.reshape(
                tuple(in_shape[:axis]) + (1,) + tuple(in_shape[axis + 1:])), in_shape).reshape(-1)
            fixed = self.precision == "fixed"
            ones = csr_matrix((np.ones(val.layout.size, dtype=np.int64 if fixed else np.float64),
                               (out_of_in, val.layout.positions())), shape=(out_index.size, val.layout.port_size))
            kwargs = dict(weight_exp=0, num_weight_bits=8) if fixed else {}
            summed = self._add(Sparse(weights=ones, num_message_bits=0, name=name, **kwargs))
            self._connect(val, summed.s_in)
            return Value([summed.a_out], val.latency + 1, self._flat_out(name), False)
        from snncompile.targets.lava.procs.process import Accumulate

        val, read = self._operand(src, val.latency, name)
        proc = self._add(Accumulate(op="sum", in_shape=in_shape, out_shape=tuple(self.g.shape(name)),
                                    in_port=val.layout.port_shape, axis=axis, keepdim=node.keepdim,
                                    name=name, **read))
        self._connect(val, proc.a_in)
        return Value([proc.s_out], val.latency + 1, self._flat_out(name), False)

    def _product(self, node, name: str) -> Value:
        """MatMul, and Mul of graded values: our Product process; Mul of two spike trains (a
        mask): Lava's stock Sparse fan-outs into a LIF that fires on coincidences (an AND)."""
        lhs_name, rhs_name = self.g.inputs_of(name)
        latency = self.p.latency[name] - 1
        lhs, lread = self._operand(lhs_name, latency, f"{lhs_name}->{name}")
        rhs, rread = self._operand(rhs_name, latency, f"{rhs_name}->{name}")
        if isinstance(node, ir.Mul) and lhs.binary and rhs.binary and node.lhs == node.rhs == "spike":
            return self._spike_and(name, lhs, rhs)
        from snncompile.targets.lava.procs.process import Product

        if self.precision == "float":
            lread["const"], rread["const"] = self._const_ir(lhs_name), self._const_ir(rhs_name)
        proc = self._add(Product(
            op="matmul" if isinstance(node, ir.MatMul) else "mul",
            lhs_shape=lhs.layout.ir_shape, rhs_shape=rhs.layout.ir_shape, out_shape=self.g.shape(name),
            lhs_port=lhs.layout.port_shape, rhs_port=rhs.layout.port_shape,
            lhs_gather=lread["gather"], rhs_gather=rread["gather"], lhs_const=lread["const"],
            rhs_const=rread["const"], lhs_wrap=lread["wrap"], rhs_wrap=rread["wrap"],
            operands=(node.lhs, node.rhs), name=name))
        self._connect(lhs, proc.lhs_in)
        self._connect(rhs, proc.rhs_in)
        return Value([proc.s_out], latency + 1, self._flat_out(name), False)

    def _spike_and(self, name: str, lhs: Value, rhs: Value) -> Value:
        """An AND of two spike trains from stock processes: each operand fans out (size-1 axes
        broadcast) through a Sparse of weight 1 to one LIF per output element, which forgets
        its current and voltage every step (du = dv = 1) and fires above 1 (two coincident
        spikes). Exact in float and in Lava's bit-accurate fixed point."""
        from lava.proc.lif.process import LIF
        from lava.proc.sparse.process import Sparse
        from scipy.sparse import csr_matrix

        out_shape = tuple(self.g.shape(name))
        size = int(np.prod(out_shape))
        fixed = self.precision == "fixed"
        lif = self._add(LIF(shape=(size,), du=4095 if fixed else 1.0, dv=4095 if fixed else 1.0,
                            vth=1 if fixed else 1.5, bias_mant=0, name=f"{name}:and"))
        for side, val in (("lhs", lhs), ("rhs", rhs)):
            in_ir = np.broadcast_to(np.arange(val.layout.size).reshape(val.layout.ir_shape), out_shape)
            rows = np.arange(size)
            cols = val.layout.positions()[in_ir.reshape(-1)]
            w = csr_matrix((np.ones(size, dtype=np.int64 if fixed else np.float64), (rows, cols)),
                           shape=(size, val.layout.port_size))
            kwargs = dict(weight_exp=0, num_weight_bits=8) if fixed else {}
            fan = self._add(Sparse(weights=w, num_message_bits=0, name=f"{name}:{side}", **kwargs))
            self._connect(val, fan.s_in)
            fan.a_out.connect(lif.a_in)
        return Value([lif.s_out], lhs.latency + 1, self._flat_out(name), True)


def build(graph, x: np.ndarray, static: bool, steps: int, folder: str,
          record: bool = False, the_plan: Optional[Plan] = None, precision: str = "float") -> LavaNet:
    """Build the Lava network of ``graph`` for samples ``x`` ((N, T, *shape), or (N, *shape)
    when ``static``). Result files go to ``folder``."""
    p = the_plan or plan(graph, precision)
    sched = Schedule(n_samples=int(x.shape[0]), steps=int(steps))
    return _Builder(graph, p, sched, folder, record, precision).build(x, static)
