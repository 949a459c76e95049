"""Capture of the tensor operations of spiking transformers (issue 11), as a Converter mixin.

The official models keep activations as ``(T, B, ...)`` and move between per-sample layouts
``(C, H, W)``, ``(C, N)``, ``(N, C)``, heads ``(h, N, d)`` / ``(h, d, N)`` with
reshape/view/flatten/transpose/permute and slices. Every such call keeps the leading dims
(``convert.Lead``) and becomes a :class:`~snncompile.ir.nodes.Reshape`, ``Permute`` or
``Slice`` on the per-sample axes (``Flatten`` stays for "to a vector"). Products of two
network tensors become ``MatMul`` / ``Mul``, sums over a per-sample axis ``ReduceSum`` (a mean
adds a scale of ``1/n``), products with constant tensors an ``Affine`` that the passes fold or
materialise as ``Scale``. Linear on tokens and Conv1d are lowered to a ``Conv2d`` on a
``(C, N, 1)`` layout so every synapse stage handles them unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from snncompile.errors import SnnCompileError
from snncompile.frontend.tracing import Call, Slot
from snncompile.ir import nodes as ir
from snncompile.passes.affine import Affine

_MATMUL = {"matmul", "__matmul__", "bmm"}
_TRANSPOSE = {"transpose", "permute", "__get__.mT", "swapaxes", "swapdims"}
#: Non-spiking operations a "spiking" model may call, with why no spiking layer computes them.
NOT_SPIKING = {
    "softmax": "it normalises by the exponentials of a whole row, which no spiking layer computes",
    "log_softmax": "it normalises by the exponentials of a whole row, which no spiking layer computes",
    "layer_norm": "it divides by statistics of each sample, which no spiking layer computes",
    "gelu": "it is a real-valued activation, not a spike (use a neuron)",
    "silu": "it is a real-valued activation, not a spike (use a neuron)",
    "sigmoid": "it is a real-valued activation, not a spike (use a neuron)",
    "tanh": "it is a real-valued activation, not a spike (use a neuron)",
    "exp": "it is a real-valued nonlinearity, which no spiking layer computes",
    "sqrt": "it is a real-valued nonlinearity, which no spiking layer computes",
}
#: Torch modules that compute the operations above.
NOT_SPIKING_MODULES = {nn.LayerNorm: "layer_norm", nn.GELU: "gelu", nn.SiLU: "silu", nn.Softmax: "softmax",
                       nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.LogSoftmax: "log_softmax"}


def not_spiking_module(m: nn.Module) -> Optional[str]:
    """Why module ``m`` (LayerNorm, GELU, Softmax...) has no spiking mapping, or None."""
    for cls, op in NOT_SPIKING_MODULES.items():
        if isinstance(m, cls):
            return f"it calls {op}, which is not supported in a spiking model: {NOT_SPIKING[op]}"
    return None


@dataclass(frozen=True)
class Ref:
    """A per-step tensor produced by IR node ``name``."""

    name: str


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


class TensorOps:
    """Handlers of :class:`~snncompile.frontend.convert.Converter` for the transformer ops."""

    # -- axes ------------------------------------------------------------------
    def sample_axis(self, slot: Slot, dim: int) -> Optional[int]:
        """Per-sample axis of torch ``dim`` of ``slot``'s tensor; None for a leading dim."""
        rank = len(self.cap.shapes[slot.id])
        n = len(self.lead[slot.id])
        d = dim % rank if -rank <= dim < rank else None
        return None if d is None or d < n else d - n

    # -- layouts -----------------------------------------------------------------
    def layout_reshape(self, key, src: str, out_shape: tuple, name: str) -> str:
        """Per-sample reshape: nothing, Flatten (to a vector) or Reshape."""
        in_shape = tuple(self.graph.shape(src))
        out_shape = tuple(int(s) for s in out_shape)
        if out_shape == in_shape:
            return src
        if len(out_shape) == 1:
            return self.emit(key, lambda: ir.Flatten(name), [src])
        return self.emit(key + (out_shape,), lambda: ir.Reshape(name, shape=out_shape), [src])

    def permute_node(self, key, src: str, perm: tuple, name: str) -> str:
        perm = tuple(int(p) for p in perm)
        if perm == tuple(range(len(perm))):
            return src
        return self.emit(key + (perm,), lambda: ir.Permute(name, perm=perm), [src])

    def transpose(self, call: Call, value, where: str) -> None:
        """``transpose(a, b)``, ``permute(...)``, ``x.mT`` on per-sample axes (leads stay)."""
        slot = call.args[0]
        lead, rank = self.lead[slot.id], len(self.cap.shapes[slot.id])
        n = len(lead)
        if call.target == "permute":
            rest = call.args[1:]
            dims = call.kwargs.get("dims", rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list))
                                   else rest)
            full = [int(d) % rank for d in dims]
        else:
            a, b = (-2, -1) if call.target == "__get__.mT" else (
                call.args[1] if len(call.args) > 1 else call.kwargs.get("dim0"),
                call.args[2] if len(call.args) > 2 else call.kwargs.get("dim1"))
            full = list(range(rank))
            full[a % rank], full[b % rank] = full[b % rank], full[a % rank]
        if sorted(full) != list(range(rank)):
            return self.unsupported(call, f"dims {tuple(full)} are not a permutation of the {rank} dims")
        if full[:n] != list(range(n)):
            return self.unsupported(call, f"it moves the leading (time, batch) dims {lead}")
        src = self.ref(value, where)
        perm = tuple(p - n for p in full[n:])
        name = self.permute_node(("fn", "permute"), src, perm, self.node_name(call, call.label))
        self.set_out(call, Ref(name), lead)

    def slice_items(self, call: Call, value, where: str) -> bool:
        """``x[:, :, a:b, ...]`` (slices of per-sample axes; leading dims whole) -> Slice nodes.
        Returns False when the index is not of that form."""
        base, idx = call.args[0], call.args[1]
        idx = idx if isinstance(idx, tuple) else (idx,)
        if not all(isinstance(i, slice) or i is Ellipsis for i in idx) or idx.count(Ellipsis) > 1:
            return False
        shape, lead = self.cap.shapes[base.id], self.lead[base.id]
        if Ellipsis in idx:
            e = idx.index(Ellipsis)
            idx = idx[:e] + (slice(None),) * (len(shape) - len(idx) + 1) + idx[e + 1:]
        src = self.ref(value, where)
        for axis, item in enumerate(idx):
            start, stop, step = item.indices(shape[axis])
            if (start, stop, step) == (0, shape[axis], 1):
                continue
            if axis < len(lead) or step != 1 or stop <= start:
                self.unsupported(call, "only slices with step 1 of per-sample axes are supported")
                return True
            k = axis - len(lead)
            src = self.emit(("fn", "slice", k, start, stop),
                            lambda k=k, start=start, stop=stop: ir.Slice(self.node_name(call, call.label),
                                                                         axis=k, start=start, stop=stop), [src])
        self.set_out(call, Ref(src), lead)
        return True

    # -- products ----------------------------------------------------------------
    def matmul(self, call: Call, args, where: str) -> None:
        if len(args) != 2 or call.kwargs or not all(isinstance(a, Slot) for a in call.args):
            return self.unsupported(call, "a matrix product is supported only of two network tensors")
        a, b = call.args
        if self.lead[a.id] != self.lead[b.id]:
            return self.unsupported(call, f"operands with leading dims {self.lead[a.id]} and {self.lead[b.id]}")
        ins = [self.ref(v, where) for v in args]
        name = self.emit(("fn", "matmul"), lambda: ir.MatMul(self.node_name(call, "matmul")), ins)
        self.set_out(call, Ref(name), self.lead[a.id])

    def hadamard(self, call: Call, args, where: str) -> None:
        """Elementwise product of two network tensors (SDT's ``k * v``, QKFormer's ``attn * k``)."""
        a, b = call.args
        if self.lead[a.id] != self.lead[b.id]:
            return self.unsupported(call, f"operands with leading dims {self.lead[a.id]} and {self.lead[b.id]}")
        ins = [self.ref(v, where) for v in args]
        name = self.emit(("fn", "mul"), lambda: ir.Mul(self.node_name(call, "mul")), ins)
        self.set_out(call, Ref(name), self.lead[a.id])

    def const_scale(self, call: Call, slot: Slot, value, const: torch.Tensor, where: str, divide: bool) -> None:
        """``x * c`` / ``x / c`` with a constant tensor ``c`` (SpikingResformer's firing-rate scales):
        an Affine with ``c`` broadcast to the per-sample axes (leading axes of ``c`` must be 1)."""
        arr = _np(const)
        lead = self.lead[slot.id]
        per = self.per_sample(slot)
        extra = arr.ndim - len(per)
        if extra > 0:
            if any(s != 1 for s in arr.shape[:extra]):
                return self.unsupported(call, f"a constant of shape {tuple(arr.shape)} that varies over the "
                                              f"leading (time, batch) dims {lead}")
            arr = arr.reshape(arr.shape[extra:])
        try:
            np.broadcast_to(arr, per)
        except ValueError:
            return self.unsupported(call, f"a constant of shape {tuple(arr.shape)} does not broadcast to {per}")
        if divide:
            arr = 1.0 / arr
        src = self.ref(value, where)
        name = self.emit(("fn", "scale", arr.tobytes(), arr.shape),
                         lambda: Affine(self.node_name(call, "scale"), scale=arr, origin="scale"), [src])
        self.set_out(call, Ref(name), lead)

    # -- reductions --------------------------------------------------------------
    def reduce_axes(self, call: Call, args, where: str) -> bool:
        """``sum(dim, keepdim)`` / ``mean(dim, keepdim)`` over per-sample axes -> ReduceSum (+ a
        scale of 1/n for a mean). Returns False when a leading dim is reduced."""
        slot = call.args[0]
        dim = call.args[1] if len(call.args) > 1 else call.kwargs.get("dim")
        keepdim = bool(call.args[2] if len(call.args) > 2 else call.kwargs.get("keepdim", False))
        if dim is None or set(call.kwargs) - {"dim", "keepdim"}:
            return False
        dims = list(dim) if isinstance(dim, (tuple, list)) else [dim]
        axes = [self.sample_axis(slot, d) for d in dims]
        if any(a is None for a in axes):
            return False
        src = self.ref(args[0], where)
        shape = self.graph.shape(src)
        n = int(np.prod([shape[a] for a in axes]))
        for a in sorted(axes, reverse=True):  # highest first: the lower axes keep their numbers
            src = self.emit(("fn", "reduce_sum", a, keepdim),
                            lambda a=a: ir.ReduceSum(self.node_name(call, call.target), axis=a, keepdim=keepdim),
                            [src])
        if call.target == "mean":
            src = self.emit(("fn", "mean_scale", n), lambda: Affine(self.node_name(call, "mean_scale"),
                                                                     scale=1.0 / n, origin="mean"), [src])
        self.set_out(call, Ref(src), self.lead[slot.id])
        return True

    # -- token synapses ----------------------------------------------------------
    def on_channel_layout(self, path: str, src: str, channel_axis: int, make_conv) -> str:
        """Run the 1x1 Conv2d from ``make_conv()`` over the per-sample tensor ``src`` whose channels
        are on ``channel_axis`` (the other axes are tokens): layout to (C, N, 1), conv, back."""
        shape = tuple(self.graph.shape(src))
        rank = len(shape)
        c = channel_axis % rank
        perm = (c,) + tuple(i for i in range(rank) if i != c)
        moved = self.permute_node(("module", path, "to_channels"), src, perm, f"{path}.to_channels")
        tokens = tuple(shape[i] for i in perm[1:])
        n = int(np.prod(tokens))
        col = self.layout_reshape(("module", path, "to_column"), moved, (shape[c], n, 1), f"{path}.to_column")
        conv = self.emit(("module", path), make_conv, [col], path)  # 1x1: the tokens stay
        back = self.layout_reshape(("module", path, "from_column"), conv, (self.graph.shape(conv)[0],) + tokens,
                                   f"{path}.from_column")
        inverse = tuple(int(i) for i in np.argsort(perm))
        return self.permute_node(("module", path, "from_channels"), back, inverse, f"{path}.from_channels")

    def token_linear(self, path: str, m: nn.Linear, src: str) -> str:
        """Linear on the last axis of a per-sample (..., C) tensor: a 1x1 Conv2d over the tokens."""
        w = _np(m.weight)
        bias = None if m.bias is None else _np(m.bias)
        return self.on_channel_layout(path, src, -1, lambda: ir.Conv2d(
            path, weight=w.reshape(w.shape + (1, 1)), bias=bias))

    def conv1d(self, path: str, m: nn.Conv1d, src: str) -> str:
        """Conv1d on per-sample (C, N): a Conv2d with kernel (k, 1) on (C, N, 1)."""
        shape = tuple(self.graph.shape(src))
        if len(shape) != 2:
            raise SnnCompileError(f"module '{path}' (Conv1d) on per-sample shape {shape} is not supported "
                                  f"(needs (C, N))")
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise SnnCompileError(f"module '{path}' (Conv1d) with padding={m.padding!r}, padding_mode="
                                  f"{m.padding_mode!r} is not supported (use integer zero padding)")
        w = _np(m.weight)
        col = self.layout_reshape(("module", path, "to_column"), src, shape + (1,), f"{path}.to_column")
        conv = self.emit(("module", path), lambda: ir.Conv2d(
            path, weight=w[..., None], bias=None if m.bias is None else _np(m.bias), stride=(m.stride[0], 1),
            padding=(m.padding[0], 0), dilation=(m.dilation[0], 1), groups=m.groups), [col], path)
        out = self.graph.shape(conv)
        return self.layout_reshape(("module", path, "from_column"), conv, out[:2], f"{path}.from_column")

    @staticmethod
    def check_bn_of_padded_input(path: str, m: nn.Module, p: int) -> None:
        """The module is recognised by its attributes: check on a probe that it computes what the
        lowering assumes, BN of the zero-padded input (else the export would be silently wrong)."""
        bn = m.bn
        probe = torch.rand((1, bn.num_features, 3, 3), generator=torch.Generator().manual_seed(0),
                           dtype=bn.running_mean.dtype)
        with torch.no_grad():
            got, want = m(probe), bn(nn.functional.pad(probe, [p] * 4))
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
            raise SnnCompileError(f"module '{path}' ({type(m).__name__}) pads its BatchNorm output with "
                                  f"values other than the BatchNorm of zero; only RepConv's BNAndPadLayer "
                                  f"border is supported")

    def bn_and_pad(self, path: str, m: nn.Module, src: str) -> str:
        """SDT v2 ``BNAndPadLayer`` after a bias-free 1x1 conv: the border it writes is BN(0), so
        it is the BN of that conv run with zero padding ``pad_pixels`` (the conv of a zero-padded
        input): the conv node gets the padding, the BN folds into it as usual."""
        conv = self.graph.node(src)
        p = int(m.pad_pixels)
        if p and not (isinstance(conv, ir.Conv2d) and conv.weight.shape[2:] == (1, 1) and conv.bias is None
                      and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0)
                      and self.graph.consumers(src) == []):
            raise SnnCompileError(f"module '{path}' ({type(m).__name__}) pads its BatchNorm output; that is "
                                  f"supported only right after a 1x1 Conv2d without bias (RepConv)")
        if p:
            self.check_bn_of_padded_input(path, m, p)
            conv.padding = (p, p)
            self.graph.infer_shapes()
        return self.emit(("module", path), lambda: self.batchnorm(path, m.bn, self.graph.shape(src)), [src], path)
