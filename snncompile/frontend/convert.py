"""Translate a traced model (fx graph with shapes) into a raw IR graph, one step of time.

Every time style becomes the same per-step graph:

- single-step models (one call = one step) map node for node;
- SpikingJelly multi-step models take (T, N, ...); their modules act per step, so the
  same mapping holds with two leading dims instead of one;
- models whose ``forward`` loops over steps unroll under fx into T copies; a module
  called again with the same (already mapped) inputs folds onto its first node, so the
  copies collapse into one step. A module called with *different* inputs (weight
  sharing) is refused.

The raw graph may hold :class:`~snncompile.passes.Affine` nodes (BatchNorm, neuron
input gains); :func:`snncompile.passes.canonicalize` removes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import fx, nn

from snncompile.errors import SnnCompileError
from snncompile.frontend.neurons import is_neuron, neuron_spec
from snncompile.frontend.tracing import Traced, _containers
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph
from snncompile.passes.affine import Affine


@dataclass(frozen=True)
class Ref:
    """A per-step tensor produced by IR node ``name``."""

    name: str


@dataclass(frozen=True)
class NeuronCall:
    """The (tuple) result of a neuron module: item 0 is its spikes, the rest is state."""

    name: str


class Opaque:
    """A value that is not a per-step tensor (neuron state, constants, sizes)."""

    def __init__(self, what: str):
        self.what = what


def _np(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().to(torch.float64).cpu().numpy()


def _module_where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
        return f" in module '{path}' ({cls_name})"
    return ""


def _unsupported_module(path: str, m: nn.Module, why: str = "is not supported") -> SnnCompileError:
    return SnnCompileError(f"module '{path}' ({type(m).__module__}.{type(m).__name__}) {why}; "
                           f"supported: Conv2d, Linear, BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d, MaxPool2d, Flatten, "
                           f"Dropout/Identity, residual '+', and the neurons of SpikingJelly, snnTorch, Norse")


def _adaptive_kernel(path: str, m: nn.AdaptiveAvgPool2d, in_shape: tuple) -> tuple[int, int]:
    """AdaptiveAvgPool2d is a plain AvgPool2d when the output size divides the input size."""
    out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size, m.output_size)
    out = tuple(in_shape[1 + i] if o is None else int(o) for i, o in enumerate(out))
    if len(in_shape) != 3 or in_shape[1] % out[0] or in_shape[2] % out[1]:
        raise _unsupported_module(path, m, f"with output size {out} that does not divide its input "
                                  f"{in_shape[1:]} is not supported (no equal windows)")
    return (in_shape[1] // out[0], in_shape[2] // out[1])


class Converter:
    def __init__(self, traced: Traced, input_shape: tuple, name: str, timesteps: int):
        self.traced = traced
        self.modules = dict(traced.module.named_modules())
        self.graph = Graph(name, timesteps=timesteps)
        self.input_name = "input"
        self.graph.add(ir.Input(self.input_name, shape=tuple(input_shape)))
        #: emit() key -> (input names, IR node name) already made, to fold unrolled copies.
        self.made: dict[tuple, tuple[list[str], str]] = {}
        self.env: dict[fx.Node, Any] = {}
        #: Mapping caveats (see NeuronSpec.warnings), reported by from_torch.
        self.warnings: list[str] = []

    # -- helpers ---------------------------------------------------------------
    def shape_of(self, node: fx.Node) -> tuple:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise SnnCompileError(f"no tensor shape for '{node.name}'{_module_where(node)}")
        return tuple(int(s) for s in meta.shape)[self.traced.lead:]

    def ref(self, value, node: fx.Node, role: str = "input") -> str:
        if isinstance(value, Ref):
            return value.name
        if isinstance(value, NeuronCall):
            return value.name  # a neuron returning spikes only (init_hidden, SpikingJelly)
        if isinstance(value, _Stack):
            what = "a stack/cat of tensors (allowed only as the model's per-step output)"
        else:
            what = value.what if isinstance(value, Opaque) else type(value).__name__
        raise SnnCompileError(f"'{node.name}'{_module_where(node)}: its {role} is {what}, "
                              f"not a per-step tensor of the network")

    def emit(self, key: tuple, make, inputs: list[str], where: str) -> Ref:
        """Add the node ``make()`` fed by ``inputs``, or reuse the copy made for an earlier step.

        ``key`` is ("module", path) for a module (one IR node per module) or ("fn", kind)
        for a function (one IR node per kind and inputs).
        """
        if key[0] == "module":
            if key in self.made:
                prev_inputs, name = self.made[key]
                if prev_inputs != inputs:
                    raise SnnCompileError(f"{where} is called on different inputs ({prev_inputs} and "
                                          f"{inputs}); shared (reused) modules are not supported")
                return Ref(name)
            memo = key
        else:
            memo = key + (tuple(inputs),)
            if memo in self.made:
                return Ref(self.made[memo][1])
        node = make()
        base, i = node.name, 1
        while node.name in self.graph:
            node.name, i = f"{base}_{i}", i + 1
        self.graph.add(node, inputs)
        self.made[memo] = (inputs, node.name)
        return Ref(node.name)

    # -- fx nodes ------------------------------------------------------------
    def run(self) -> Graph:
        result = None
        for node in self.traced.module.graph.nodes:
            if node.op == "placeholder":
                if node is not self._first_placeholder():
                    self.env[node] = Opaque(f"extra forward argument '{node.name}'")
                elif self.traced.input_style == "sequence" and self.traced.lead == 1:
                    self.env[node] = _Sequence()
                else:
                    self.env[node] = Ref(self.input_name)
            elif node.op == "get_attr":
                self.env[node] = Opaque(f"attribute '{node.target}'")
            elif node.op == "call_module":
                self.env[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.env[node] = self.call_function(node)
            elif node.op == "output":
                result = self.output(node)
        return result

    def _first_placeholder(self) -> fx.Node:
        return next(n for n in self.traced.module.graph.nodes if n.op == "placeholder")

    def arg(self, a):
        if isinstance(a, fx.Node):
            return self.env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        return a

    def call_module(self, node: fx.Node):
        path = str(node.target)
        m = self.modules[path]
        args = [self.arg(a) for a in node.args]
        if not args:
            raise _unsupported_module(path, m, "is called without an input")
        src = self.ref(args[0], node)
        where = f"module '{path}' ({type(m).__name__})"
        if is_neuron(m):
            return self.neuron(path, m, src, node, where)
        out = src
        for sub_path, sub in self._sequence(path, m):
            out = self.layer(sub_path, sub, out, node, where)
        return Ref(out)

    def _sequence(self, path: str, m: nn.Module):
        """(path, layer) of ``m``, or of each layer inside a SpikingJelly SeqToANNContainer."""
        if isinstance(m, _containers()):
            for name, child in m.named_children():
                yield from self._sequence(f"{path}.{name}", child)
        else:
            yield path, m

    def neuron(self, path, m, src, node, where) -> NeuronCall:
        spec = neuron_spec(path, m)
        for w in spec.warnings:
            if w not in self.warnings:
                self.warnings.append(w)
        shape = self.graph.shape(src)
        if spec.input_gain is not None:
            src = self.emit(("module", path + ".input_gain"),
                            lambda: Affine(path + ".input_gain", scale=spec.input_gain, origin="input_gain"),
                            [src], where).name
        ref = self.emit(("module", path), lambda: ir.Neuron(path, shape=shape, **spec.params), [src], where)
        self.graph.infer_shapes()
        return NeuronCall(ref.name)

    def layer(self, path: str, m: nn.Module, src: str, node: fx.Node, where: str) -> str:
        """One stateless torch layer (possibly inside a SeqToANNContainer) -> IR node name."""
        in_shape = self.graph.shape(src)
        if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Identity)):
            return src
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
            if path == str(node.target):
                out_shape = self.shape_of(node)
            else:  # inside a SeqToANNContainer: the container's output shape is not this layer's
                with torch.no_grad():
                    out_shape = tuple(m(torch.zeros((1,) + tuple(in_shape))).shape[1:])
            return self.flatten(("module", path), src, out_shape, where, name=path)
        else:
            raise _unsupported_module(path, m)
        out = self.emit(("module", path), make, [src], where).name
        self.graph.infer_shapes()
        return out

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
        elif len(in_shape) != 1:
            raise _unsupported_module(path, m, f"on an input of per-sample shape {in_shape} is not supported")
        return Affine(path, scale=scale, shift=shift, origin="batchnorm")

    def flatten(self, key, src: str, out_shape: tuple, where: str, name: str) -> str:
        """A reshape with per-sample output ``out_shape``: Flatten, nothing, or an error."""
        in_shape = self.graph.shape(src)
        if out_shape == in_shape:
            return src
        if out_shape != (int(np.prod(in_shape)),):
            raise SnnCompileError(f"{where}: reshapes the per-sample shape {in_shape} to {out_shape}; "
                                  f"only flattening each sample (and each step) to a vector is supported")
        out = self.emit(key, lambda: ir.Flatten(name), [src], where).name
        self.graph.infer_shapes()
        return out

    def call_function(self, node: fx.Node):
        fn = node.target
        fname = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
        where = f"'{fname}' ('{node.name}'){_module_where(node)}"
        args = [self.arg(a) for a in node.args]
        if fname == "getitem":
            base, idx = args
            if isinstance(base, _Sequence) and isinstance(idx, int):
                return Ref(self.input_name)
            if isinstance(base, NeuronCall):
                return Ref(base.name) if idx == 0 else Opaque(f"the state of neuron '{base.name}'")
            if isinstance(base, (list, tuple)):
                return base[idx]
            return Opaque(f"an item of {getattr(base, 'what', type(base).__name__)}")
        if fname in ("add", "iadd", "add_"):
            if node.kwargs:
                raise SnnCompileError(f"{where}: add with {sorted(node.kwargs)} is not supported")
            if len(args) != 2 or not all(isinstance(a, (Ref, NeuronCall)) for a in args):
                raise SnnCompileError(f"{where}: only '+' of two network tensors (a residual join) is "
                                      f"supported, not of a constant")
            ins = [self.ref(a, node) for a in args]
            shapes = [self.graph.shape(i) for i in ins]
            if shapes[0] != shapes[1]:
                raise SnnCompileError(f"{where}: adds tensors of shapes {shapes[0]} and {shapes[1]}")
            out = self.emit(("fn", "add"), lambda: ir.Add(node.name), ins, where)
            self.graph.infer_shapes()
            return out
        if fname in ("flatten", "view", "reshape"):
            src = self.ref(args[0], node)
            return Ref(self.flatten(("fn", "flatten"), src, self.shape_of(node), where, name=node.name))
        if fname in ("size", "dim"):
            return Opaque("a size")
        if fname in ("contiguous", "clone", "detach"):
            return args[0]
        if fname in ("stack", "cat"):
            items = args[0]
            return _Stack(list(items))
        raise SnnCompileError(f"operation {where} is not supported; supported: residual '+', flatten/view "
                              f"to a vector, and modules Conv2d, Linear, BatchNorm, pooling, neurons")

    def output(self, node: fx.Node) -> Graph:
        (value,) = node.args
        value = self.arg(value)
        while isinstance(value, (tuple, list)) and not isinstance(value, _Stack):
            if not value:
                raise SnnCompileError("model returns an empty tuple")
            value = value[0]  # (spikes, membrane, ...) -> spikes
        if isinstance(value, _Stack):
            names = {self.ref(v, node, "output") for v in value.items}
            if len(names) != 1:
                raise SnnCompileError(f"the per-step outputs stacked by the model come from different "
                                      f"layers {sorted(names)}")
            value = Ref(names.pop())
        src = self.ref(value, node, "output")
        mode = "spikes" if self._is_spikes(src) else "potential"
        self.graph.add(ir.Output("output", mode=mode), [src])
        return self.graph

    def _is_spikes(self, name: str) -> bool:
        n = self.graph.node(name)
        while isinstance(n, (ir.Flatten, ir.MaxPool2d)):
            n = self.graph.node(self.graph.inputs_of(n.name)[0])
        return isinstance(n, ir.Neuron)


class _Sequence(Opaque):
    """The whole (T, N, ...) input of a model that loops over steps; ``x[t]`` is the Input."""

    def __init__(self):
        super().__init__("the whole input sequence (index it per step)")


class _Stack:
    def __init__(self, items):
        self.items = items


def to_raw_graph(traced: Traced, input_shape: tuple, name: str, timesteps: int) -> Graph:
    converter = Converter(traced, input_shape, name, timesteps)
    graph = converter.run()
    if converter.warnings:
        graph.meta["warnings"] = "\n".join(converter.warnings)
    return graph
