"""IR node types: one small dataclass per kind, parameters as numpy arrays.

Time is discrete and *eager*: at step t a synapse turns its input at step t into a
current at step t (no synaptic delay); a neuron integrates it and spikes at step t.
Shapes are per sample, without batch or time: ``(C, H, W)`` for images, ``(F,)`` for
vectors. Every node knows how to compute its output shape from its input shapes, so
the graph can check shapes on every edge.

Neuron semantics (float, per step t, input current ``x`` summed over incoming edges)::

    u = u * (1 - du) + x                      # synaptic current
    v = v * (1 - dv) + u + bias               # membrane
    s = v > threshold        (compare ">")    # or v >= threshold (compare ">=")
    reset "zero":     v = where(s, reset_value, v)
    reset "subtract": v = v - reset_amount * s
    reset "none":     v unchanged

A leaky integrator (Norse ``LICell``: a membrane that never spikes, read out as ``v``) is
a Neuron with ``threshold = +inf`` and reset ``"none"`` (:attr:`Neuron.never_fires`) read
by an Output in mode ``"membrane"``.

This is Lava's LIF (``du``, ``dv`` as in ``lava.proc.lif``) extended with what the
PyTorch libraries need. Library-specific forms (SpikingJelly ``decay_input``,
``v_reset`` shifts, snnTorch ``reset_delay``, Norse ``v_leak``) are normalised into
these fields by the frontend and ``snncompile.passes``.

Fixed point: a quantized graph carries integer parameters in ``fixed`` (see
``snncompile.ir.fixed``); float parameters are kept alongside for reports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from snncompile.errors import SnnCompileError

Shape = tuple[int, ...]


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected a pair, got {v!r}")
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@dataclass(eq=False)
class Node:
    """Base of all IR nodes. ``name`` is unique in its graph (usually the torch module path)."""

    name: str
    kind: ClassVar[str] = "Node"
    #: How many inputs the node takes: an int, or None for "one or more" (Add).
    arity: ClassVar[Optional[int]] = 1

    def out_shape(self, in_shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        """The node's array parameters by field name (for ONNX, equality, validation)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}

    def attributes(self) -> dict[str, Any]:
        """The node's non-array parameters by field name."""
        return {
            k: v for k, v in vars(self).items()
            if k != "name" and not isinstance(v, np.ndarray) and k != "fixed"
        }

    def _fail(self, why: str) -> SnnCompileError:
        return SnnCompileError(f"node '{self.name}' ({self.kind}): {why}")


@dataclass(eq=False)
class Input(Node):
    """Graph input: a static value presented every step, or a spike/current train."""

    shape: Shape = ()
    #: Fixed point: how values become integer messages (``snncompile.ir.fixed.InputFixed``).
    fixed: Any = None
    kind: ClassVar[str] = "Input"
    arity: ClassVar[Optional[int]] = 0

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)

    def out_shape(self, in_shapes):
        return self.shape


@dataclass(eq=False)
class Linear(Node):
    """y = x @ weight.T + bias on a flat (F,) input. weight: (out, in)."""

    weight: np.ndarray = None
    bias: Optional[np.ndarray] = None
    fixed: Any = None
    kind: ClassVar[str] = "Linear"

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if len(s) != 1 or s[0] != self.weight.shape[1]:
            raise self._fail(f"expects input shape ({self.weight.shape[1]},), got {s}")
        return (int(self.weight.shape[0]),)


@dataclass(eq=False)
class Conv2d(Node):
    """PyTorch Conv2d (cross-correlation). weight: (C_out, C_in/groups, kH, kW)."""

    weight: np.ndarray = None
    bias: Optional[np.ndarray] = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    fixed: Any = None
    kind: ClassVar[str] = "Conv2d"

    def __post_init__(self):
        self.stride, self.padding, self.dilation = map(_pair, (self.stride, self.padding, self.dilation))
        self.groups = int(self.groups)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        co, ci_g, kh, kw = self.weight.shape
        if len(s) != 3 or s[0] != ci_g * self.groups:
            raise self._fail(f"expects input (C={ci_g * self.groups}, H, W), got {s}")
        h = _conv_out(s[1], kh, self.stride[0], self.padding[0], self.dilation[0])
        w = _conv_out(s[2], kw, self.stride[1], self.padding[1], self.dilation[1])
        if h <= 0 or w <= 0:
            raise self._fail(f"input {s} too small for kernel {(kh, kw)}")
        return (int(co), h, w)


@dataclass(eq=False)
class _Pool2d(Node):
    kernel_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self):
        self.kernel_size, self.stride, self.padding = map(_pair, (self.kernel_size, self.stride, self.padding))

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if len(s) != 3:
            raise self._fail(f"expects a (C, H, W) input, got {s}")
        h = _conv_out(s[1], self.kernel_size[0], self.stride[0], self.padding[0])
        w = _conv_out(s[2], self.kernel_size[1], self.stride[1], self.padding[1])
        if h <= 0 or w <= 0:
            raise self._fail(f"input {s} too small for kernel {self.kernel_size}")
        return (s[0], h, w)


@dataclass(eq=False)
class SumPool2d(_Pool2d):
    """Sum over each window (zero padding). A synapse with all weights 1."""

    kind: ClassVar[str] = "SumPool2d"


@dataclass(eq=False)
class AvgPool2d(_Pool2d):
    """Mean over each window, zero padding counted (PyTorch count_include_pad=True)."""

    kind: ClassVar[str] = "AvgPool2d"


@dataclass(eq=False)
class MaxPool2d(_Pool2d):
    """Max over each window (padding never wins). On binary spikes: an OR of the window."""

    kind: ClassVar[str] = "MaxPool2d"


@dataclass(eq=False)
class Flatten(Node):
    """(C, H, W) -> (C*H*W,) in PyTorch (C-major) order."""

    kind: ClassVar[str] = "Flatten"

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        return (int(np.prod(s)),)


@dataclass(eq=False)
class Add(Node):
    """Elementwise sum of all inputs (equal shapes): residual joins of spikes or currents."""

    kind: ClassVar[str] = "Add"
    arity: ClassVar[Optional[int]] = None

    def out_shape(self, in_shapes):
        if len(in_shapes) < 2:
            raise self._fail(f"needs at least two inputs, got {len(in_shapes)}")
        if len(set(in_shapes)) != 1:
            raise self._fail(f"inputs have different shapes {in_shapes}")
        return in_shapes[0]


RESET_MODES = ("zero", "subtract", "none")
COMPARES = (">", ">=")


@dataclass(eq=False)
class Neuron(Node):
    """LIF-family neuron population (equations in the module docstring).

    Array parameters (``du``, ``dv``, ``threshold``, ``bias``, ``reset_value``,
    ``reset_amount``, ``u_init``, ``v_init``) are float64 arrays broadcastable to the
    population shape: shape ``()`` for one value for all, ``(C, 1, 1)`` per channel of a
    (C, H, W) population, or the full shape per neuron. ``threshold = +inf`` (the only
    infinite parameter allowed) makes a leaky integrator that never fires.
    """

    shape: Shape = ()
    du: np.ndarray = None
    dv: np.ndarray = None
    threshold: np.ndarray = None
    bias: np.ndarray = None
    reset_mode: str = "zero"
    reset_value: np.ndarray = None
    reset_amount: np.ndarray = None
    compare: str = ">"
    u_init: np.ndarray = None
    v_init: np.ndarray = None
    #: Where the neuron came from (e.g. "spikingjelly.IFNode"); informational.
    source: str = ""
    fixed: Any = None
    kind: ClassVar[str] = "Neuron"

    _DEFAULTS: ClassVar[dict] = {"du": 1.0, "dv": 0.0, "threshold": 1.0, "bias": 0.0,
                                 "reset_value": 0.0, "u_init": 0.0, "v_init": 0.0}

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        for key, default in self._DEFAULTS.items():
            val = getattr(self, key)
            setattr(self, key, np.asarray(default if val is None else val, dtype=np.float64))
        self.reset_amount = (np.array(self.threshold, copy=True) if self.reset_amount is None
                             else np.asarray(self.reset_amount, dtype=np.float64))
        if self.reset_mode not in RESET_MODES:
            raise self._fail(f"reset_mode must be one of {RESET_MODES}, got {self.reset_mode!r}")
        if self.compare not in COMPARES:
            raise self._fail(f"compare must be one of {COMPARES}, got {self.compare!r}")

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if self.shape and tuple(s) != self.shape:
            raise self._fail(f"population shape {self.shape} does not match its input {s}")
        for key in ("du", "dv", "threshold", "bias", "reset_value", "reset_amount", "u_init", "v_init"):
            arr = getattr(self, key)
            try:
                np.broadcast_to(arr, s)
            except ValueError:
                raise self._fail(f"parameter '{key}' of shape {arr.shape} does not broadcast to {s}") from None
        return tuple(s)

    def param(self, key: str) -> np.ndarray:
        """A parameter broadcast to the full population shape (read-only view)."""
        return np.broadcast_to(getattr(self, key), self.shape)

    @property
    def never_fires(self) -> bool:
        """A leaky integrator: every threshold is +inf (no spike, whatever ``v``)."""
        return bool(np.all(np.isposinf(self.threshold)))


READOUTS = ("spikes", "potential", "membrane")


@dataclass(eq=False)
class Output(Node):
    """The readout. ``spikes``: the input's spikes (counts summed over time).
    ``potential``: the input is a current (a final layer without a neuron, as in many
    SpikingJelly classifiers); per step it is the value itself and ``counts`` is its sum
    over time (the accumulated potential of a non-leaky, non-spiking integrator).
    ``membrane``: the input is a Neuron (a leaky integrator that never fires, Norse
    ``LICell``); per step the value is that neuron's membrane ``v`` after the step, and
    ``counts`` is its sum over time."""

    mode: str = "spikes"
    #: Fixed point: the integer readout (``snncompile.ir.fixed.ReadoutFixed``).
    fixed: Any = None
    kind: ClassVar[str] = "Output"

    def __post_init__(self):
        if self.mode not in READOUTS:
            raise self._fail(f"mode must be one of {READOUTS}, got {self.mode!r}")

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        return tuple(s)


# -- spiking-transformer kinds (issue 11; design notes in docs/transformer-ir.md) -------------
#: What an operand of a product holds: "spike" (0/1), "count" (integers >= 0: sums and
#: products of spikes) or "real" (a synapse's current, a membrane stream). Set on MatMul and
#: Mul by ``snncompile.passes.operands.mark_operands`` from the producers (checked on reading).
OPERANDS = ("spike", "count", "real")


def _axis(axis: int, rank: int, node: "Node") -> int:
    if not -rank <= axis < rank:
        raise node._fail(f"axis {axis} is out of range for a rank-{rank} input")
    return axis % rank


@dataclass(eq=False)
class Reshape(Node):
    """Per-sample reshape in C (row-major) order: an index map, no arithmetic (axon routing on a
    chip). ``shape`` is the per-sample output shape (no -1)."""

    shape: Shape = ()
    kind: ClassVar[str] = "Reshape"

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if int(np.prod(s)) != int(np.prod(self.shape)) or any(d <= 0 for d in self.shape):
            raise self._fail(f"cannot reshape {tuple(s)} ({int(np.prod(s))} values) to {self.shape}")
        return self.shape


@dataclass(eq=False)
class Permute(Node):
    """Per-sample axis permutation: output axis i is input axis ``perm[i]`` (torch.permute)."""

    perm: tuple[int, ...] = ()
    kind: ClassVar[str] = "Permute"

    def __post_init__(self):
        self.perm = tuple(int(p) for p in self.perm)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        if sorted(self.perm) != list(range(len(s))):
            raise self._fail(f"perm {self.perm} is not a permutation of the {len(s)} axes of {tuple(s)}")
        return tuple(s[p] for p in self.perm)


@dataclass(eq=False)
class Slice(Node):
    """``x[..., start:stop, ...]`` along one per-sample ``axis`` (step 1)."""

    axis: int = 0
    start: int = 0
    stop: int = 0
    kind: ClassVar[str] = "Slice"

    def __post_init__(self):
        self.axis, self.start, self.stop = int(self.axis), int(self.start), int(self.stop)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        ax = _axis(self.axis, len(s), self)
        if not 0 <= self.start < self.stop <= s[ax]:
            raise self._fail(f"slice {self.start}:{self.stop} does not fit axis {ax} of size {s[ax]}")
        return tuple(s[:ax]) + (self.stop - self.start,) + tuple(s[ax + 1:])


def _check_operands(node: "Node") -> None:
    for side in ("lhs", "rhs"):
        if getattr(node, side) not in OPERANDS:
            raise node._fail(f"{side} must be one of {OPERANDS}, got {getattr(node, side)!r}")


@dataclass(eq=False)
class MatMul(Node):
    """Product of two activations ``a @ b`` (inputs in that order) over the last two axes,
    batched over equal leading axes (heads): ``(..., n, k) @ (..., k, m) -> (..., n, m)``.
    Attention's ``q @ k^T``, ``attn @ v``, ``k^T @ v``; ``lhs``/``rhs`` say what each holds."""

    lhs: str = "real"
    rhs: str = "real"
    kind: ClassVar[str] = "MatMul"
    arity: ClassVar[Optional[int]] = 2

    def __post_init__(self):
        _check_operands(self)

    def out_shape(self, in_shapes):
        a, b = (tuple(s) for s in in_shapes)
        if len(a) < 2 or len(a) != len(b) or a[:-2] != b[:-2] or a[-1] != b[-2]:
            raise self._fail(f"cannot multiply per-sample shapes {a} @ {b} (needs (..., n, k) @ (..., k, m) "
                             f"with equal leading axes)")
        return a[:-1] + (b[-1],)


@dataclass(eq=False)
class Mul(Node):
    """Elementwise product of two activations of equal rank, a size-1 axis broadcast (torch
    rules). Of two spike trains it is an AND: SDT's ``k * v`` and ``q * kv`` masks, QKFormer's
    ``attn * k``."""

    lhs: str = "real"
    rhs: str = "real"
    kind: ClassVar[str] = "Mul"
    arity: ClassVar[Optional[int]] = 2

    def __post_init__(self):
        _check_operands(self)

    def out_shape(self, in_shapes):
        a, b = (tuple(s) for s in in_shapes)
        if len(a) != len(b) or any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
            raise self._fail(f"cannot broadcast per-sample shapes {a} and {b} (equal rank, size-1 axes only)")
        return tuple(max(x, y) for x, y in zip(a, b))


@dataclass(eq=False)
class ReduceSum(Node):
    """Sum over one per-sample ``axis`` (kept as size 1 when ``keepdim``). A mean is a
    ReduceSum followed by a Scale of ``1/n``."""

    axis: int = 0
    keepdim: bool = False
    kind: ClassVar[str] = "ReduceSum"

    def __post_init__(self):
        self.axis, self.keepdim = int(self.axis), bool(self.keepdim)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        ax = _axis(self.axis, len(s), self)
        if not self.keepdim and len(s) == 1:
            raise self._fail("summing away the only axis would leave a scalar per sample")
        return tuple(s[:ax]) + ((1,) if self.keepdim else ()) + tuple(s[ax + 1:])


@dataclass(eq=False)
class Scale(Node):
    """``y = x * weight (+ bias)``, arrays broadcast to the input shape: a constant scale
    (``* 0.125``, SpikingResformer's per-head firing-rate buffers, ``1/n`` of a mean) or a
    BatchNorm that no synapse before it can absorb. A one-to-one synapse."""

    weight: np.ndarray = None
    bias: Optional[np.ndarray] = None
    fixed: Any = None
    kind: ClassVar[str] = "Scale"

    def __post_init__(self):
        self.weight = np.asarray(1.0 if self.weight is None else self.weight, dtype=np.float64)
        if self.bias is not None:
            self.bias = np.asarray(self.bias, dtype=np.float64)

    def out_shape(self, in_shapes):
        (s,) = in_shapes
        for key in ("weight", "bias"):
            arr = getattr(self, key)
            if arr is None:
                continue
            if arr.ndim > len(s):
                raise self._fail(f"'{key}' of shape {arr.shape} has more axes than its input {tuple(s)}")
            try:
                if np.broadcast_shapes(arr.shape, tuple(s)) != tuple(s):
                    raise ValueError
            except ValueError:
                raise self._fail(f"'{key}' of shape {arr.shape} does not broadcast to {tuple(s)}") from None
        return tuple(s)


NODE_TYPES: dict[str, type[Node]] = {
    cls.kind: cls
    for cls in (Input, Linear, Conv2d, SumPool2d, AvgPool2d, MaxPool2d, Flatten, Add, Neuron, Output,
                Reshape, Permute, Slice, MatMul, Mul, ReduceSum, Scale)
}
SYNAPSES = (Linear, Conv2d, SumPool2d, AvgPool2d)
#: Kinds that only re-index values (no arithmetic): a value's domain passes through them.
LAYOUTS = (Flatten, Reshape, Permute, Slice)
#: Products and reductions of activations (spiking transformers).
PRODUCTS = (MatMul, Mul)
