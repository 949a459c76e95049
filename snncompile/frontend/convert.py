"""Translate a captured run (see :mod:`.tracing`) into a raw IR graph, one step of time.

Every recorded tensor has *leading dims* (:class:`Lead`) before its per-sample shape:
``B`` (batch), ``T`` (time), ``TB`` (time and batch merged, SpikingJelly's
``flatten(0, 1)``) or ``1`` (a unit time dim from ``unsqueeze(0)`` before a ``repeat``).
They are followed through ``flatten``/``view``/``reshape``/``unsqueeze`` by concrete
sizes, so the IR only sees per-sample shapes. Every time style becomes the same per-step
graph:

- single-step models (one call = one step) map call for call;
- SpikingJelly multi-step models take (T, B, ...): the same mapping with lead (T, B);
- models whose ``forward`` loops over steps call each module once per step: ``x[t]`` of
  the (T, B, ...) input is the per-step input, and a module called again on the same
  (already mapped) inputs folds onto its first node, so the copies collapse into one
  step. A module called on *different* inputs (weight sharing) becomes another node with
  the same parameters.

Spiking transformers' tensor operations (layouts, products, reductions, token synapses) are
handled by the :class:`~snncompile.frontend.tensor_ops.TensorOps` mixin.

The raw graph may hold :class:`~snncompile.passes.Affine` nodes (BatchNorm, neuron
input gains, constant scales); :func:`snncompile.passes.canonicalize` removes them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from snncompile.errors import SnnCompileError
from snncompile.frontend.neurons import is_neuron, neuron_spec
from snncompile.frontend.tensor_ops import (_MATMUL, _TRANSPOSE, NOT_SPIKING, Ref, TensorOps, not_spiking_module)
from snncompile.frontend.tracing import Call, Captured, Const, Slot, _containers, is_bn_and_pad, library_layers
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.passes.affine import Affine

Lead = tuple  # of "B", "T", "TB", "1"


@dataclass(frozen=True)
class Not:
    """``1 - s`` of spikes ``s`` (SEW IAND); usable only as an operand of ``*``."""

    name: str


@dataclass(frozen=True)
class Copied:
    """The output of an enlarging AdaptiveAvgPool2d (SpikingJelly VGG's 7x7 pool of a 1x1 map):
    each value of node ``name`` (per-sample ``in_shape``) copied into a ``factor`` block; ``flat``
    once flattened. The next Linear sums the weights of the copies, so it needs no IR node."""

    name: str
    factor: tuple
    in_shape: tuple
    flat: bool = False


@dataclass(frozen=True)
class TimeReduced:
    """A mean or sum over the time dim: allowed as the model's output only (a rate readout)."""

    name: str
    how: str


@dataclass(frozen=True)
class Membrane:
    """The membrane ``v`` of leaky integrator ``name`` (Norse LICell's output): allowed as the
    model's output only (an Output in mode ``membrane``)."""

    name: str


class Opaque:
    """A value that is not a per-step tensor of the network (neuron state, a stack)."""

    def __init__(self, what: str):
        self.what = what


class Unsupported(Opaque):
    """The result of an operation we do not map; the error is raised where it is used."""

    def __init__(self, error: SnnCompileError):
        super().__init__("unsupported")
        self.error = error


class _Written(Opaque):
    """A preallocated (T, B, ...) buffer whose steps the model assigned (``out[t] = v``, Norse's
    ConvNet): step -> the value written there."""

    def __init__(self, items: dict):
        super().__init__("a (T, N, ...) buffer filled step by step (allowed only as the model's output)")
        self.items = items


class _Stack(Opaque):
    def __init__(self, items):
        super().__init__("a stack/cat of tensors (allowed only as the model's per-step output)")
        self.items = items


SUPPORTED = ("supported: residual '+', spike AND/IAND ('*', '1 - s'), scaling by a constant, "
             "reshape/view/flatten/transpose/permute/slices of per-sample axes, '@' and '*' of two network "
             "tensors, sum/mean over per-sample axes, and modules Conv1d/2d, Linear, BatchNorm, pooling, neurons")


def _np(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().to(torch.float64).cpu().numpy()


def _cls(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def _unsupported_module(path: str, m: nn.Module, why: str = "is not supported") -> SnnCompileError:
    return SnnCompileError(f"module '{path}' ({type(m).__module__}.{type(m).__name__}) {why}; "
                           f"supported: Conv1d/2d, Linear, BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d, MaxPool2d, Flatten, "
                           f"Dropout/Identity, VotingLayer, residual '+', and the neurons of SpikingJelly, snnTorch, Norse")


def _adaptive_kernel(path: str, m: nn.AdaptiveAvgPool2d, in_shape: tuple) -> tuple[int, int]:
    """AdaptiveAvgPool2d is a plain AvgPool2d when the output size divides the input size."""
    out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size, m.output_size)
    out = tuple(in_shape[1 + i] if o is None else int(o) for i, o in enumerate(out))
    if len(in_shape) != 3 or in_shape[1] % out[0] or in_shape[2] % out[1]:
        raise _unsupported_module(path, m, f"with output size {out} that does not divide its input "
                                  f"{in_shape[1:]} is not supported (no equal windows)")
    return (in_shape[1] // out[0], in_shape[2] // out[1])


_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_MUL = {"mul", "__mul__", "__rmul__", "__imul__", "mul_"}
_DIV = {"div", "__truediv__", "__itruediv__", "div_", "true_divide"}
_RSUB = {"__rsub__", "rsub"}
_RESHAPE = {"flatten", "view", "reshape", "unsqueeze", "squeeze", "unflatten"}
_SAME = {"contiguous", "clone", "detach", "to", "float", "double", "type_as", "__get__.data"}
_REPEAT = {"repeat", "expand"}
_REDUCE = {"mean", "sum"}


class Converter(TensorOps):
    def __init__(self, cap: Captured, input_shape: tuple, name: str, timesteps: int):
        self.cap = cap
        self.graph = Graph(name, timesteps=timesteps)
        self.input_name = "input"
        self.graph.add(ir.Input(self.input_name, shape=tuple(input_shape)))
        self.sizes = {"T": timesteps, "B": cap.batch, "1": 1}
        #: emit() key -> IR node name already made, to fold the copies of a loop over steps.
        self.made: dict[tuple, str] = {}
        #: IR node name -> how many recorded calls mapped onto it (loop counts).
        self.calls: Counter = Counter()
        #: Module path -> IR node names made for it (a module used twice gives two).
        self.nodes_of: dict[str, list[str]] = {}
        self.env: dict[int, Any] = {}
        self.lead: dict[int, Lead] = {}
        #: Slot of a (T, ...) tensor -> the last step index read from it (see check_step_order).
        self.steps_read: dict[int, int] = {}
        #: Slot of one step split off a sequence by unbind -> (sequence slot, step).
        self.step_of: dict[int, tuple] = {}
        #: Slot -> (IR node, its call count when the slot was made): see check_fresh.
        self.born: dict[int, tuple] = {}
        #: Mapping caveats (see NeuronSpec.warnings), reported by from_torch.
        self.warnings: list[str] = []

    # -- leads and shapes ------------------------------------------------------
    def size(self, lead: Lead) -> tuple:
        return tuple(self.sizes["T"] * self.sizes["B"] if s == "TB" else self.sizes[s] for s in lead)

    def per_sample(self, slot: Slot) -> tuple:
        return self.cap.shapes[slot.id][len(self.lead[slot.id]):]

    def reshaped_lead(self, lead: Lead, out_shape: tuple) -> Optional[Lead]:
        """The leading dims of a reshape's output, or None if it mixes them with sample dims."""
        n = len(lead)
        if out_shape[:n] == self.size(lead):
            return lead
        if lead == ("T", "B") and out_shape[:1] == (self.sizes["T"] * self.sizes["B"],):
            return ("TB",)
        if lead == ("TB",) and out_shape[:2] == self.size(("T", "B")):
            return ("T", "B")
        if "T" not in lead and "TB" not in lead and out_shape[:1] == (1,) and out_shape[1:n + 1] == self.size(lead):
            return ("1",) + lead
        if lead[:1] == ("1",) and out_shape[:n - 1] == self.size(lead[1:]):
            return lead[1:]
        return None

    # -- values ------------------------------------------------------------------
    def value(self, a):
        if isinstance(a, Slot):
            if a.id in self.step_of:  # a step split off by unbind: used in step order?
                base, t = self.step_of[a.id]
                self.check_step_order(base, t, "a step of a sequence (from unbind / iterating over it)")
            self.check_fresh(a)
            return self.env[a.id]
        return a

    def bind(self, slot: Slot, value) -> None:
        """``slot`` holds ``value``; a Ref remembers how often its node had been computed then."""
        self.env[slot.id] = value
        if isinstance(value, Ref):
            self.born[slot.id] = (value.name, self.calls[value.name])

    def check_fresh(self, slot: Slot) -> None:
        """A value used after its node was computed again is from an earlier time step: Python
        state across steps (``acc = acc + spk``), which the per-step graph cannot hold."""
        if slot.id in self.born:
            name, count = self.born[slot.id]
            if self.calls[name] != count:
                raise SnnCompileError(f"the model uses the output of '{name}' from an earlier time step "
                                      f"(state kept in Python across steps, e.g. a running sum); keep "
                                      f"state inside neuron modules, or return the per-step outputs")

    def ref(self, value, where: str, role: str = "input") -> str:
        if isinstance(value, Ref):
            return value.name
        if isinstance(value, Unsupported):
            raise value.error
        if isinstance(value, Opaque):
            what = value.what
        elif isinstance(value, Const):
            what = "a constant tensor"
        elif isinstance(value, Not):
            what = f"'1 - s' of spikes '{value.name}' (only usable as a factor of '*': SEW IAND)"
        elif isinstance(value, TimeReduced):
            what = f"a {value.how} over time (allowed only as the model's output)"
        elif isinstance(value, Membrane):
            what = (f"the membrane of leaky integrator '{value.name}' (a readout: allowed only as the "
                    f"model's output)")
        else:
            what = "nothing" if value is None else type(value).__name__
        raise SnnCompileError(f"{where}: its {role} is {what}, not a per-step tensor of the network")

    def set_out(self, call: Call, value, lead: Optional[Lead]) -> None:
        """Bind the (single-tensor) output of ``call``."""
        for i, slot in enumerate(_out_slots(call)):
            self.bind(slot, value if i == 0 else Opaque(f"output {i} of {call.label}"))
            self.lead[slot.id] = lead if lead is not None else ()

    def check_shape(self, name: str, slot: Slot, where: str) -> None:
        got, want = self.graph.shape(name), self.per_sample(slot)
        if tuple(got) != tuple(want):
            raise SnnCompileError(f"{where}: the IR gives per-sample shape {got}, the model {want}")

    def emit(self, key: tuple, make, inputs: list[str], module: Optional[str] = None) -> str:
        """Add the node ``make()`` fed by ``inputs``, or reuse the node made for an earlier step."""
        memo = key + (tuple(inputs),)
        if memo in self.made:
            name = self.made[memo]
            self.calls[name] += 1
            return name
        node = make()
        base, i = node.name, 1
        while node.name in self.graph:
            node.name, i = f"{base}_{i}", i + 1
        self.graph.add(node, inputs)
        self.infer_shape(node.name)
        self.made[memo] = node.name
        self.calls[node.name] += 1
        if module is not None:
            self.nodes_of.setdefault(module, []).append(node.name)
        return node.name

    def infer_shape(self, name: str) -> None:
        """Shape of the node just added from its inputs' shapes (inferring the whole graph after
        every node made capture quadratic in the graph size)."""
        g = self.graph
        ins = g.inputs_of(name)
        if any("shape" not in g.nx.nodes[i] for i in ins):
            g.infer_shapes()
            return
        node = g.node(name)
        if node.arity is not None and len(ins) != node.arity:
            raise SnnCompileError(f"node '{name}' ({node.kind}): expects {node.arity} input(s), has {len(ins)}")
        shapes = [g.nx.nodes[i]["shape"] for i in ins]
        g.nx.nodes[name]["shape"] = tuple(int(s) for s in node.out_shape(shapes))
        for i, shape in zip(ins, shapes):
            g.nx.edges[i, name]["shape"] = shape

    # -- the run ------------------------------------------------------------------
    def run(self) -> Graph:
        lead0 = ("T", "B") if self.cap.input_style == "sequence" else ("B",)
        self.env[0], self.lead[0] = Ref(self.input_name), lead0
        for call in self.cap.calls:
            if call.kind == "module":
                self.call_module(call)
            else:
                self.call_function(call)
        self.loop_warnings()
        return self.output()

    def where_module(self, call: Call) -> str:
        return f"module '{call.target}' ({_cls(type(call.module))})"

    def call_module(self, call: Call) -> None:
        path, m = call.target, call.module
        where = self.where_module(call)
        args = list(call.args)
        if not args or not isinstance(args[0], Slot):
            if args and args[0] is not None and not isinstance(args[0], Const):
                raise _unsupported_module(path, m, "is called without a tensor input")
            self.set_out(call, Opaque(f"the output of {where} on a constant"), None)
            return
        slot = args[0]
        if isinstance(self.value(slot), Copied) or _enlarges(m, self.per_sample(slot)):
            return self.copy_path(call, self.value(slot), slot, where)
        if isinstance(self.value(slot), TimeReduced) and isinstance(m, (nn.Linear, nn.Dropout, nn.Identity)):
            return self.head_of_time_mean(call, self.value(slot), slot, where)
        src = self.ref(self.value(slot), where)
        lead = self.lead[slot.id]
        out_slot = next((v for v in pytree.tree_leaves(call.out) if isinstance(v, Slot)), None)
        if out_slot is None:
            raise _unsupported_module(path, m, "returns no tensor")
        if self.cap.shapes[out_slot.id][:len(lead)] != self.size(lead):
            raise SnnCompileError(f"{where}: changes the leading (time, batch) dims {lead} of its input "
                                  f"{self.cap.shapes[slot.id]} to {self.cap.shapes[out_slot.id]}")
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and len(lead) != 1 and getattr(m, "step_mode", "s") != "m":
            raise SnnCompileError(f"{where}: a BatchNorm on a tensor with leading dims {lead} would take "
                                  f"dim 1 for channels; merge the time and batch dims first (flatten(0, 1))")
        if is_neuron(m):
            self.check_neuron_lead(path, m, lead, where)
            name = self.neuron(path, m, src, where)
            first = Membrane(name) if self.graph.node(name).never_fires else Ref(name)
            for i, s in enumerate(_out_slots(call)):
                self.bind(s, first if i == 0 else Opaque(f"the state of neuron '{name}'"))
                self.lead[s.id] = lead
        else:
            out = src
            for sub_path, sub in self._sequence(path, m):
                out = self.layer(sub_path, sub, out, where)
            self.set_out(call, Ref(out), lead)
        self.check_shape(self.env[out_slot.id].name, out_slot, where)

    def copy_path(self, call: Call, value, slot: Slot, where: str) -> None:
        """An enlarging AdaptiveAvgPool2d, then Flatten (module or function), then Linear."""
        m, lead, out = call.module, self.lead[slot.id], self.out_slot(call)
        if not isinstance(value, Copied):  # the pool itself
            in_shape = self.per_sample(slot)
            factor = tuple(o // i for o, i in zip(self.per_sample_of(out, lead)[1:], in_shape[1:]))
            return self.set_out(call, Copied(self.ref(value, where), factor, in_shape), lead)
        if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Identity)):
            return self.set_out(call, value, lead)
        if isinstance(m, nn.Flatten) and not value.flat and len(self.per_sample_of(out, lead)) == 1:
            name = self.emit(("module", call.target), lambda: ir.Flatten(call.target), [value.name])
            return self.set_out(call, Copied(name, value.factor, value.in_shape, flat=True), lead)
        if isinstance(m, nn.Linear) and value.flat:
            (c, h, w), (kh, kw) = value.in_shape, value.factor
            weight = _np(m.weight).reshape(-1, c, h, kh, w, kw).sum(axis=(3, 5)).reshape(-1, c * h * w)
            name = self.emit(("module", call.target), lambda: ir.Linear(call.target, weight=weight,
                                                                         bias=_np(m.bias)), [value.name])
            return self.set_out(call, Ref(name), lead)
        raise SnnCompileError(f"{where}: its input comes from an AdaptiveAvgPool2d that enlarges its input "
                              f"(a copy of each value); that is supported only before flatten and a Linear")

    def head_of_time_mean(self, call: Call, value: TimeReduced, slot: Slot, where: str) -> None:
        """``head(x.mean(0))``: a Linear is linear, so the mean of its per-step outputs is its output
        on the mean; the graph computes the head per step and the mean stays the readout. (Not for a
        sum over time with a bias: the bias would be added once instead of T times.)"""
        m = call.module
        if isinstance(m, nn.Linear) and value.how != "mean" and m.bias is not None:
            raise SnnCompileError(f"{where}: its input is a {value.how} over time; a Linear with a bias is "
                                  f"supported there only after a mean")
        name = value.name if not isinstance(m, nn.Linear) else self.layer(call.target, m, value.name, where)
        self.set_out(call, TimeReduced(name, value.how), self.lead[slot.id])

    def per_sample_of(self, slot: Slot, lead: Lead) -> tuple:
        return self.cap.shapes[slot.id][len(lead):]

    def check_neuron_lead(self, path, m, lead, where) -> None:
        multi = getattr(m, "step_mode", "s") == "m"
        if multi and lead == ("TB",):
            warning = (f"{where} is a multi-step neuron run on (T*B, ...) (after flatten(0, 1)): in PyTorch "
                       f"its state passes from one sample of a batch to the next, so PyTorch's outputs depend "
                       f"on the batch; the graph runs it over time for each sample (PyTorch at batch size 1)")
            if warning not in self.warnings:
                self.warnings.append(warning)
            return
        if multi and lead != ("T", "B"):
            raise SnnCompileError(f"{where}: a multi-step neuron needs (T, N, ...) inputs; "
                                  f"it gets leading dims {lead}")
        if not multi and ("T" in lead or "TB" in lead):
            raise SnnCompileError(f"{where}: a single-step neuron gets an input with a time dim "
                                  f"(leading dims {lead}); index the steps or use step_mode='m'")

    def _sequence(self, path: str, m: nn.Module):
        """(path, layer) of ``m``, or of each layer inside a SpikingJelly SeqToANNContainer."""
        if isinstance(m, _containers()):
            for name, child in m.named_children():
                yield from self._sequence(f"{path}.{name}", child)
        else:
            yield path, m

    def neuron(self, path, m, src, where) -> str:
        spec = neuron_spec(path, m)
        for w in spec.warnings:
            if w not in self.warnings:
                self.warnings.append(w)
        if spec.input_synapse is not None:
            syn = spec.input_synapse
            src = self.emit(("module", syn.name), lambda: syn, [src])
        shape = self.graph.shape(src)
        if spec.input_gain is not None:
            src = self.emit(("module", path + ".input_gain"),
                            lambda: Affine(path + ".input_gain", scale=spec.input_gain, origin="input_gain"),
                            [src])
        made = [n for n in self.nodes_of.get(path, [])]
        make = lambda: ir.Neuron(path, shape=shape, **spec.params)
        if spec.recurrent is not None:
            name = self.recurrent_neuron(path, make, spec.recurrent, src, shape)
        else:
            name = self.emit(("module", path), make, [src], path)
        if name not in made and made:
            raise SnnCompileError(f"{where} is called on two different inputs in one step; a neuron "
                                  f"module keeps one state, so use one neuron module per layer")
        return name

    def recurrent_neuron(self, path: str, make, recurrent, src: str, shape: tuple) -> str:
        """Neuron fed by ``src`` plus its own spikes through ``recurrent`` one step late:
        ``src -> Add -> Neuron -> recurrent --delay 1--> Add``."""
        memo = ("module", path, (src,))
        if memo in self.made:
            self.calls[self.made[memo]] += 1
            return self.made[memo]
        if isinstance(recurrent, tuple):  # one-to-one weights V (scalar or per neuron)
            v = np.broadcast_to(recurrent[1].reshape(-1) if recurrent[1].size > 1 else recurrent[1], shape)
            if len(shape) != 1:
                raise SnnCompileError(f"module '{path}': one-to-one recurrence on shape {shape} is not "
                                      f"supported (only on feature vectors)")
            recurrent = ir.Linear(f"{path}.recurrent", weight=np.diag(np.asarray(v, dtype=np.float64)))
        total = self.unique(f"{path}.sum")
        self.graph.nx.add_node(total, node=ir.Add(total))
        self.graph.nx.add_edge(src, total, index=0, delay=0)
        neuron = make()
        self.graph.add(neuron, [total])
        self.graph.add(recurrent, [neuron.name])
        self.graph.add_edge(recurrent.name, total, delay=1)
        self.graph.infer_shapes()
        self.made[memo] = neuron.name
        self.calls[neuron.name] += 1
        self.nodes_of.setdefault(path, []).append(neuron.name)
        return neuron.name

    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self.graph:
            name, i = f"{base}_{i}", i + 1
        return name

    def layer(self, path: str, m: nn.Module, src: str, where: str) -> str:
        """One stateless torch layer (possibly inside a SeqToANNContainer) -> IR node name."""
        in_shape = self.graph.shape(src)
        if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Identity)):
            return src
        if isinstance(m, nn.Linear) and len(in_shape) > 1:
            return self.token_linear(path, m, src)
        if isinstance(m, nn.Conv1d):
            return self.conv1d(path, m, src)
        if is_bn_and_pad(m):
            return self.bn_and_pad(path, m, src)
        if isinstance(m, nn.Linear):
            make = lambda: ir.Linear(path, weight=_np(m.weight), bias=_np(m.bias))
        elif isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                if isinstance(m.padding, str) and m.padding == "valid":
                    pad = (0, 0)
                else:
                    raise _unsupported_module(path, m, f"with padding={m.padding!r}, padding_mode="
                                              f"{m.padding_mode!r} is not supported (use integer zero padding)")
            else:
                pad = m.padding
            make = lambda: ir.Conv2d(path, weight=_np(m.weight), bias=_np(m.bias), stride=m.stride,
                                     padding=pad, dilation=m.dilation, groups=m.groups)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            make = lambda: self.batchnorm(path, m, in_shape)
        elif isinstance(m, nn.AvgPool2d):
            if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
                raise _unsupported_module(path, m, "with ceil_mode, count_include_pad=False or "
                                          "divisor_override is not supported")
            make = lambda: ir.AvgPool2d(path, kernel_size=m.kernel_size,
                                        stride=m.stride if m.stride else m.kernel_size, padding=m.padding)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            kernel = _adaptive_kernel(path, m, in_shape)
            make = lambda: ir.AvgPool2d(path, kernel_size=kernel, stride=kernel, padding=0)
        elif isinstance(m, nn.MaxPool2d):
            if m.ceil_mode or m.return_indices or m.dilation not in (1, (1, 1)):
                raise _unsupported_module(path, m, "with ceil_mode, return_indices or dilation is not supported")
            make = lambda: ir.MaxPool2d(path, kernel_size=m.kernel_size,
                                        stride=m.stride if m.stride else m.kernel_size, padding=m.padding)
        elif isinstance(m, nn.Flatten):
            with torch.no_grad():
                # per-sample, as the single-step layer (a multi-step one merges (T, B) first)
                out_shape = tuple(torch.zeros((1,) + tuple(in_shape)).flatten(m.start_dim, m.end_dim).shape[1:])
            return self.flatten(("module", path), src, out_shape, where, name=path)
        elif isinstance(m, library_layers()):
            make = lambda: self.voting(path, m, in_shape)
        elif not_spiking_module(m):
            raise _unsupported_module(path, m, f"is not supported: {not_spiking_module(m)}")
        else:
            raise _unsupported_module(path, m)
        return self.emit(("module", path), make, [src], path)

    def voting(self, path: str, m, in_shape: tuple) -> ir.Linear:
        """SpikingJelly VotingLayer: a mean over groups of ``voting_size`` features (a Linear)."""
        v = int(m.voting_size)
        if len(in_shape) != 1 or in_shape[0] % v:
            raise _unsupported_module(path, m, f"on per-sample shape {in_shape} is not supported "
                                      f"(needs (C * {v},) features)")
        c = in_shape[0] // v
        weight = np.kron(np.eye(c), np.full((1, v), 1.0 / v))
        return ir.Linear(path, weight=weight, bias=None)

    def batchnorm(self, path: str, m, in_shape: tuple) -> Affine:
        if not m.track_running_stats or m.running_mean is None:
            raise _unsupported_module(path, m, "without running statistics (track_running_stats=False) "
                                      "cannot be folded")
        inv_std = 1.0 / np.sqrt(_np(m.running_var) + m.eps)
        gamma = _np(m.weight) if m.weight is not None else np.ones_like(inv_std)
        beta = _np(m.bias) if m.bias is not None else np.zeros_like(inv_std)
        scale, shift = gamma * inv_std, beta - _np(m.running_mean) * gamma * inv_std
        if len(in_shape) == 3:
            scale, shift = scale.reshape(-1, 1, 1), shift.reshape(-1, 1, 1)
        elif len(in_shape) == 2:  # BatchNorm1d on (C, N): channels first, as torch
            scale, shift = scale.reshape(-1, 1), shift.reshape(-1, 1)
        elif len(in_shape) != 1:
            raise _unsupported_module(path, m, f"on an input of per-sample shape {in_shape} is not supported")
        return Affine(path, scale=scale, shift=shift, origin="batchnorm")

    def flatten(self, key, src: str, out_shape: tuple, where: str, name: str) -> str:
        """A reshape with per-sample output ``out_shape``: nothing, Flatten or Reshape."""
        in_shape = self.graph.shape(src)
        if int(np.prod(out_shape)) != int(np.prod(in_shape)):
            raise SnnCompileError(f"{where}: reshapes the per-sample shape {in_shape} to {tuple(out_shape)} "
                                  f"(another number of values per sample)")
        return self.layout_reshape(key, src, tuple(out_shape), name)

    # -- functions ---------------------------------------------------------------
    def where_function(self, call: Call) -> str:
        path, cls = call.scope
        inside = f" in module '{path}' ({_cls(cls)})" if path else f" in the forward of {cls.__name__}"
        return f"'{call.target}' ('{call.label}'){inside}"

    def unsupported(self, call: Call, why: str = "") -> None:
        path, cls = call.scope
        if path and cls.__module__.split(".")[0] in ("spikingjelly", "snntorch", "norse"):
            text = (f"module '{path}' ({_cls(cls)}) is not supported (it computes '{call.target}'"
                    f"{': ' + why if why else ''})")
        else:
            text = f"operation {self.where_function(call)} is not supported{': ' + why if why else ''}; {SUPPORTED}"
        self.set_out(call, Unsupported(SnnCompileError(text)), None)

    def call_function(self, call: Call) -> None:
        fname = call.target
        args = [self.value(a) for a in call.args]
        slots = [a for a in call.args if isinstance(a, Slot)]
        where = self.where_function(call)
        first = call.args[0] if call.args else None
        if fname in _SAME and isinstance(first, Slot) and len(slots) == 1:
            out = next((v for v in pytree.tree_leaves(call.out) if isinstance(v, Slot)), None)
            exact = self.cap.floating.get(out.id, True) if out is not None else False
            if not exact and isinstance(args[0], Ref) and self.is_spikes(args[0].name):
                exact = True  # 0/1 spikes survive any cast
            if out is not None and exact and self.cap.shapes[out.id] == self.cap.shapes[first.id]:
                return self.set_out(call, args[0], self.lead[first.id])
        if any(isinstance(a, Unsupported) for a in args):
            return self.set_out(call, next(a for a in args if isinstance(a, Unsupported)), None)
        if fname in NOT_SPIKING:
            return self.unsupported(call, f"module '{call.scope[0] or type(self.cap).__name__}' calls {fname}, "
                                          f"which is not supported in a spiking model: {NOT_SPIKING[fname]}")
        if fname == "__getitem__":
            return self.getitem(call, args, where)
        if fname in _TRANSPOSE and isinstance(first, Slot):
            return self.transpose(call, args[0], where)
        if fname in _MATMUL:
            return self.matmul(call, args, where)
        if fname == "unbind":
            return self.unbind(call, args, where)
        if fname == "__setitem__":
            return self.setitem(call, args, where)
        if fname in _ADD:
            return self.add(call, args, where)
        if fname in _MUL:
            return self.mul(call, args, where)
        if fname in _DIV and isinstance(first, Slot) and isinstance(args[1], (int, float)) and not call.kwargs:
            return self.scale(call, args[0], 1.0 / float(args[1]), where)
        if fname in _DIV and isinstance(first, Slot) and isinstance(args[1], Const) and not call.kwargs:
            return self.const_scale(call, first, args[0], args[1].value, where, divide=True)
        if fname in _RSUB and isinstance(first, Slot) and args[1] == 1:
            return self.not_spikes(call, args[0], where)
        if fname in _RESHAPE and isinstance(first, Slot):
            return self.reshape(call, args[0], where)
        if fname in _REPEAT and isinstance(first, Slot):
            return self.repeat(call, args[0], where)
        if fname in _REDUCE and isinstance(first, Slot):
            return self.reduce(call, args, where)
        if fname == "stack" or fname == "cat":
            return self.stack(call, args, where)
        if fname in ("relu", "relu_") and isinstance(args[0], Ref) and self.is_spikes(args[0].name):
            return self.set_out(call, args[0], self.lead[first.id])  # relu of 0/1 spikes: themselves
        if fname in ("max_pool2d", "avg_pool2d") and isinstance(first, Slot):
            return self.pool(call, args, where)
        return self.unsupported(call)

    def pool(self, call, args, where) -> None:
        """``F.max_pool2d`` / ``F.avg_pool2d`` as the module of the same name would do it."""
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        if call.target == "avg_pool2d":
            names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        kw = dict(zip(names, call.args[1:]), **call.kwargs)
        try:
            m = (nn.MaxPool2d if call.target == "max_pool2d" else nn.AvgPool2d)(**kw)
        except TypeError as exc:
            return self.unsupported(call, str(exc))
        src = self.ref(args[0], where)
        path = self.node_name(call, call.target)
        if m.ceil_mode or getattr(m, "return_indices", False) or getattr(m, "dilation", 1) not in (1, (1, 1)) \
                or not getattr(m, "count_include_pad", True) or getattr(m, "divisor_override", None) is not None:
            return self.unsupported(call, "ceil_mode, return_indices, dilation, count_include_pad=False or "
                                          "divisor_override")
        kind = ir.MaxPool2d if call.target == "max_pool2d" else ir.AvgPool2d
        stride = m.stride if m.stride else m.kernel_size
        name = self.emit(("fn", call.target, str(m.kernel_size), str(stride), str(m.padding)),
                         lambda: kind(path, kernel_size=m.kernel_size, stride=stride, padding=m.padding), [src])
        self.set_out(call, Ref(name), self.lead[call.args[0].id])

    def out_slot(self, call: Call) -> Slot:
        return next(v for v in pytree.tree_leaves(call.out) if isinstance(v, Slot))

    def getitem(self, call, args, where) -> None:
        base, idx = call.args[0], call.args[1]
        if isinstance(idx, tuple) and idx and all(i == slice(None) for i in idx[1:]):
            idx = idx[0]  # x[t, :] is x[t]
        lead = self.lead.get(base.id, ()) if isinstance(base, Slot) else ()
        if isinstance(idx, int) and lead[:1] == ("T",) and isinstance(args[0], Ref):
            self.check_step_order(base, idx, where)
            return self.set_out(call, args[0], lead[1:])
        if isinstance(base, Slot) and isinstance(args[0], Ref) and self.slice_items(call, args[0], where):
            return None
        return self.unsupported(call, "only indexing the time dim with a step number (x[t]) is supported")

    def check_step_order(self, base: Slot, idx: int, where: str) -> None:
        """Steps of a sequence must be read in order 0, 1, 2, ... (each maybe more than once):
        the graph maps step t of the model to step t of the input, so ``x[-1]`` alone, a reversed
        loop or skipped steps would be silently wrong."""
        size = self.cap.shapes[base.id][0]
        t = idx + size if idx < 0 else idx
        last = self.steps_read.get(base.id, -1)
        if t not in (last, last + 1):
            raise SnnCompileError(f"{where}: reads step {t} of a sequence after step {last}; only "
                                  f"models that read their input's steps in order 0, 1, 2, ... are supported")
        self.steps_read[base.id] = t

    def unbind(self, call, args, where) -> None:
        base = call.args[0]
        dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim", 0)
        lead = self.lead.get(base.id, ())
        if dim == 0 and lead[:1] == ("T",) and isinstance(args[0], Ref):
            for t, s in enumerate(_out_slots(call)):
                self.bind(s, args[0])
                self.lead[s.id] = lead[1:]
                self.step_of[s.id] = (base, t)
            return None
        return self.unsupported(call, "only splitting the time dim into steps is supported")

    def setitem(self, call, args, where) -> None:
        """``buf[t] = value`` (or ``buf[t, :, :]``) into a (T, B, ...) buffer: step t of the
        model's output. Anything else written into a tensor is refused."""
        idx, value = call.args[1], args[2]
        if isinstance(idx, tuple) and idx and all(i == slice(None) for i in idx[1:]):
            idx = idx[0]
        out = self.out_slot(call)
        shape, T = self.cap.shapes[out.id], self.sizes["T"]
        items = dict(args[0].items) if isinstance(args[0], _Written) else {}
        src = call.args[2]
        if (isinstance(idx, int) and isinstance(value, (Ref, Membrane)) and isinstance(src, Slot)
                and self.lead[src.id] == ("B",) and shape[:2] == (T, self.sizes["B"])
                and tuple(shape[2:]) == tuple(self.per_sample(src))
                and (isinstance(args[0], (Const, _Written)))):
            items[idx % T] = value
            return self.set_out(call, _Written(items), ("T", "B"))
        return self.unsupported(call, "only writing one step of a (T, N, ...) output buffer "
                                      "(out[t] = value) is supported")

    def add(self, call, args, where) -> None:
        if call.kwargs or len(args) != 2 or not all(isinstance(a, Slot) for a in call.args):
            if call.kwargs:
                return self.unsupported(call, f"add with {sorted(call.kwargs)}")
            return self.set_out(call, Unsupported(SnnCompileError(
                f"{where}: only '+' of two network tensors (a residual join) is supported, not of a constant")),
                None)
        a, b = call.args
        if self.lead[a.id] != self.lead[b.id]:
            return self.unsupported(call, f"operands with leading dims {self.lead[a.id]} and {self.lead[b.id]}")
        ins = [self.ref(v, where) for v in args]
        shapes = [self.graph.shape(i) for i in ins]
        if shapes[0] != shapes[1]:
            return self.unsupported(call, f"adds tensors of shapes {shapes[0]} and {shapes[1]}")
        name = self.emit(("fn", "add"), lambda: ir.Add(self.node_name(call, "add")), ins)
        self.set_out(call, Ref(name), self.lead[a.id])

    def node_name(self, call: Call, what: str) -> str:
        path = call.scope[0]
        return f"{path}.{what}" if path else what

    def mul(self, call, args, where) -> None:
        if len(args) != 2 or call.kwargs:
            return self.unsupported(call)
        a, b = args
        if isinstance(call.args[0], Slot) and isinstance(b, (int, float)):
            return self.scale(call, a, float(b), where)
        if isinstance(call.args[1], Slot) and isinstance(a, (int, float)):
            return self.scale(call, b, float(a), where)
        if isinstance(call.args[0], Slot) and isinstance(b, Const):
            return self.const_scale(call, call.args[0], a, b.value, where, divide=False)
        if isinstance(call.args[1], Slot) and isinstance(a, Const):
            return self.const_scale(call, call.args[1], b, a.value, where, divide=False)
        if isinstance(a, Not) and isinstance(b, Ref):
            a, b = b, a
        slot = call.args[0] if isinstance(call.args[0], Slot) else call.args[1]
        lead = self.lead[slot.id]
        if isinstance(a, Ref) and isinstance(b, (Ref, Not)) and self.is_spikes(a.name) and self.is_spikes(b.name) \
                and (isinstance(b, Not) or self.graph.shape(a.name) == self.graph.shape(b.name)):
            name = self.spike_logic(call, a.name, b.name, negate=isinstance(b, Not))
            return self.set_out(call, Ref(name), lead)
        if isinstance(a, Ref) and isinstance(b, Ref) and all(isinstance(v, Slot) for v in call.args):
            return self.hadamard(call, args, where)
        return self.unsupported(call, "a product of two network tensors is supported only for spikes "
                                      "(SEW AND: a * b, IAND: a * (1 - b))")

    def spike_logic(self, call, a: str, b: str, negate: bool) -> str:
        """AND(a, b) = a*b, IAND = a*(1-b) of spikes, exactly: a memoryless neuron over a + b
        (fires when both are 1: a + b > 1.5) or over a - b (fires when a=1, b=0: a - b > 0.5)."""
        if self.graph.shape(a) != self.graph.shape(b):
            raise SnnCompileError(f"{self.where_function(call)}: multiplies spikes of shapes "
                                  f"{self.graph.shape(a)} and {self.graph.shape(b)}")
        what = "iand" if negate else "and"
        if negate:
            b = self.emit(("fn", "negate"), lambda: Affine(self.node_name(call, "not"), scale=-1.0,
                                                            origin="iand"), [b])
        total = self.emit(("fn", "add"), lambda: ir.Add(self.node_name(call, f"{what}_sum")), [a, b])
        shape = self.graph.shape(a)
        return self.emit(("fn", what), lambda: ir.Neuron(
            self.node_name(call, what), shape=shape, du=1.0, dv=1.0, threshold=0.5 if negate else 1.5,
            compare=">", reset_mode="zero", source=f"spike {what.upper()}"), [total])

    def scale(self, call, value, factor: float, where) -> None:
        src = self.ref(value, where)
        name = self.emit(("fn", "scale", factor), lambda: Affine(self.node_name(call, "scale"),
                                                                 scale=factor, origin="scale"), [src])
        self.set_out(call, Ref(name), self.lead[call.args[0].id if isinstance(call.args[0], Slot)
                                                 else call.args[1].id])

    def not_spikes(self, call, value, where) -> None:
        if isinstance(value, Ref) and self.is_spikes(value.name):
            return self.set_out(call, Not(value.name), self.lead[call.args[0].id])
        return self.unsupported(call, "'1 - x' is supported only on spikes (SEW IAND)")

    def reshape(self, call, value, where) -> None:
        slot, out = call.args[0], self.out_slot(call)
        lead = self.reshaped_lead(self.lead[slot.id], self.cap.shapes[out.id])
        if isinstance(value, Copied) and not value.flat and lead is not None \
                and len(self.cap.shapes[out.id]) == len(lead) + 1:
            name = self.emit(("fn", "flatten"), lambda: ir.Flatten(self.node_name(call, call.label)), [value.name])
            return self.set_out(call, Copied(name, value.factor, value.in_shape, flat=True), lead)
        if lead is None:
            return self.unsupported(call, f"it reshapes {self.cap.shapes[slot.id]} to {self.cap.shapes[out.id]} "
                                          f"across the leading (time, batch) dims {self.lead[slot.id]}")
        src = self.ref(value, where)
        self.lead[out.id] = lead
        name = self.flatten(("fn", "flatten"), src, self.cap.shapes[out.id][len(lead):], where,
                            name=self.node_name(call, call.label))
        self.set_out(call, Ref(name), lead)

    def repeat(self, call, value, where) -> None:
        slot, out = call.args[0], self.out_slot(call)
        lead, shape = self.lead[slot.id], self.cap.shapes[out.id]
        if lead[:1] == ("1",) and shape[1:] == self.cap.shapes[slot.id][1:]:
            if shape[0] != self.sizes["T"]:
                self.warnings.append(f"the model repeats its input {shape[0]} times inside forward "
                                     f"({where}), but the export is for {self.sizes['T']} time steps; "
                                     f"the exported graph runs as many steps as it is given")
                self.sizes["T"] = shape[0]
            return self.set_out(call, value, ("T",) + lead[1:])
        return self.unsupported(call, "only repeating a static input over time is supported")

    def reduce(self, call, args, where) -> None:
        slot = call.args[0]
        dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
        if dim == 0 and self.lead[slot.id][:1] == ("T",) and not call.kwargs.get("keepdim") \
                and isinstance(args[0], Ref):
            return self.set_out(call, TimeReduced(args[0].name, call.target), self.lead[slot.id][1:])
        if isinstance(args[0], Ref) and self.reduce_axes(call, args, where):
            return None
        return self.unsupported(call, "only a mean or sum over per-sample axes, or over the time dim as "
                                      "the model's output")

    def stack(self, call, args, where) -> None:
        items = list(call.args[0]) if call.args else []
        dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim", 0)
        values = [self.env[v.id] if isinstance(v, Slot) else v for v in items]  # per-step outputs of all steps
        if call.target == "stack" and dim == 0 and values and all(isinstance(v, (Ref, Membrane)) for v in values) \
                and len(set(values)) == 1 and all(isinstance(v, Slot) for v in items):
            leads = {self.lead[v.id] for v in items}
            if len(leads) == 1 and "T" not in next(iter(leads)):
                if len(items) != self.sizes["T"]:
                    self.warnings.append(f"the model stacks {len(items)} steps inside forward ({where}), "
                                         f"but the export is for {self.sizes['T']} time steps")
                return self.set_out(call, values[0], ("T",) + leads.pop())
        self.set_out(call, _Stack(values), None)

    # -- end ---------------------------------------------------------------------
    def loop_warnings(self) -> None:
        counts = {self.calls[n] for names in self.nodes_of.values() for n in names}
        loops = max(counts, default=1)
        T = self.graph.timesteps
        if loops > 1 and loops != T and not self.cap.multistep:
            self.warnings.append(f"the model loops {loops} times inside forward, but --timesteps is {T}; "
                                 f"the exported graph runs {T} steps (set --timesteps {loops} to match)")

    def output(self) -> Graph:
        def look(v):  # the per-step output of any step: no freshness check
            return self.env[v.id] if isinstance(v, Slot) else v
        value = look(self.cap.output)
        while isinstance(value, (tuple, list)):
            if not value:
                raise SnnCompileError("model returns an empty tuple")
            value = look(value[0])  # (spikes, membrane, ...) -> spikes
        if isinstance(value, _Written):
            steps, sources = set(value.items), set(value.items.values())
            if steps != set(range(self.sizes["T"])) or len(sources) != 1:
                raise SnnCompileError(f"model {self.cap.model_name} returns a (T, N, ...) buffer with steps "
                                      f"{sorted(steps)} of {self.sizes['T']} written, from "
                                      f"{len(sources)} layer(s); every step must hold the same layer's output")
            value = sources.pop()
        if isinstance(value, Membrane):
            self.graph.add(ir.Output("output", mode="membrane"), [value.name])
            return self.graph
        if isinstance(value, _Stack):
            names = {self.ref(v, "the model's output", "output") for v in value.items}
            if len(names) != 1:
                raise SnnCompileError(f"the per-step outputs stacked by the model come from different "
                                      f"layers {sorted(names)}")
            value = Ref(names.pop())
        if isinstance(value, TimeReduced):
            value = Ref(value.name)
        src = self.ref(value, f"model {self.cap.model_name}", "output")
        mode = "spikes" if self.is_spikes(src) else "potential"
        self.graph.add(ir.Output("output", mode=mode), [src])
        return self.graph

    def is_spikes(self, name: str) -> bool:
        n = self.graph.node(name)
        while isinstance(n, (ir.Flatten, ir.MaxPool2d)):
            n = self.graph.node(self.graph.inputs_of(n.name)[0])
        return isinstance(n, ir.Neuron)


def _enlarges(m: nn.Module, in_shape: tuple) -> bool:
    """An AdaptiveAvgPool2d whose output size is a whole multiple (> 1) of its input size."""
    if not isinstance(m, nn.AdaptiveAvgPool2d) or len(in_shape) != 3:
        return False
    out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size, m.output_size)
    out = tuple(in_shape[1 + i] if o is None else int(o) for i, o in enumerate(out))
    return all(o % i == 0 for o, i in zip(out, in_shape[1:])) and out != tuple(in_shape[1:]) \
        and all(o >= i for o, i in zip(out, in_shape[1:]))


def _out_slots(call: Call) -> list[Slot]:
    """The distinct output slots of ``call`` in order (the first is the network value)."""
    return list(dict.fromkeys(v for v in pytree.tree_leaves(call.out) if isinstance(v, Slot)))


def to_raw_graph(cap: Captured, input_shape: tuple, name: str, timesteps: int) -> Graph:
    converter = Converter(cap, input_shape, name, timesteps)
    graph = converter.run()
    if converter.warnings:
        graph.meta["warnings"] = "\n".join(converter.warnings)
    graph.meta["time_style"] = ("multi-step" if cap.multistep else
                                "loop" if cap.input_style == "sequence" or max(converter.calls.values(), default=1) > 1
                                else "single-step")
    return graph
