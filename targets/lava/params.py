"""The one place where IR parameters become Lava process parameters.

``precision="float"`` reads the nodes' float arrays; ``precision="fixed"`` reads their
``fixed`` dataclasses (``snncompile.ir.fixed``, the integer source of truth), so the
builder is the same for both. In fixed point the synapse biases are already folded
into the neurons' ``bias_mant`` and the readout's bias by the quantizer: no constant
currents are added.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.targets.lava.layout import Layout

NEURON_KEYS = ("du", "dv", "threshold", "bias", "reset_value", "reset_amount", "u_init", "v_init")
FIXED_NEURON_KEYS = ("du", "dv", "vth", "bias_mant", "bias_exp", "reset_value", "reset_amount",
                     "u_init", "v_init")
#: num_message_bits for graded (non-binary) float messages into Dense/Conv.
GRADED_BITS = 24


def prepare_graph(graph, precision: str):
    """The graph to map: as is for float; quantized (default scales if it is not) for fixed,
    exactly as the emulator does, so both run the same integers."""
    if precision == "float":
        return graph
    if precision == "fixed":
        from snncompile.targets.emulator import ensure_quantized
        return ensure_quantized(graph)
    raise SnnCompileError(f"unknown precision '{precision}'; choose float or fixed")


def need_fixed(node: ir.Node):
    if getattr(node, "fixed", None) is None:
        raise SnnCompileError(f"node '{node.name}' ({node.kind}) has no fixed-point parameters: "
                              f"quantize the graph first (snncompile quantize)")
    return node.fixed


def _uniform(arr: np.ndarray) -> Optional[float]:
    flat = np.asarray(arr).reshape(-1)
    return flat[0].item() if flat.size and np.all(flat == flat[0]) else None


# -- input ----------------------------------------------------------------------
def input_messages(node: ir.Input, x: np.ndarray, precision: str) -> tuple[np.ndarray, bool]:
    """(values the source sends, whether they are binary spikes)."""
    if precision == "float":
        return x, bool(np.all((x == 0) | (x == 1)))
    import torch

    from snncompile.targets.emulator.integer import input_messages as int_messages

    f = getattr(node, "fixed", None) or fx.InputFixed()
    msgs = int_messages(torch.from_numpy(np.asarray(x, dtype=np.float64)), f).numpy()
    return msgs.astype(np.int64), f.num_message_bits == 0


# -- synapses -------------------------------------------------------------------
def message_bits(node: ir.Node, in_binary: bool, precision: str) -> int:
    if precision == "fixed":
        return need_fixed(node).num_message_bits
    return 0 if in_binary else GRADED_BITS


def dense_kwargs(node: ir.Linear, in_layout: Layout, precision: str) -> dict:
    if precision == "fixed":
        f = need_fixed(node)
        return dict(weights=in_layout.dense_weights(np.asarray(f.weight, dtype=np.int64)),
                    weight_exp=f.weight_exp, num_weight_bits=f.num_weight_bits)
    return dict(weights=in_layout.dense_weights(np.asarray(node.weight, dtype=np.float64)))


#: Lava's Sparse beats Dense on graded messages (a csr dot product) below this density;
#: on binary spikes both index the active columns and Dense is as fast. Measured with
#: numpy/scipy on a 1000x1000 matrix: 5 % density, 0.04 ms vs 0.21 ms per step.
SPARSE_MAX_DENSITY = 0.1
SPARSE_MIN_SIZE = 4096


def use_sparse(weights: np.ndarray, num_message_bits: int, precision: str) -> bool:
    """Sparse where it pays: float, graded messages, a large and mostly-zero matrix. (Fixed
    point keeps Dense: its int32 wrap-around is what snncompile.ir.fixed specifies.)"""
    return (precision == "float" and num_message_bits > 0 and weights.size >= SPARSE_MIN_SIZE
            and np.count_nonzero(weights) <= SPARSE_MAX_DENSITY * weights.size)


def _conv_layout(w: np.ndarray) -> np.ndarray:
    """PyTorch (C_out, C_in/g, kH, kW) cross-correlation -> Lava (C_out, kW, kH, C_in/g)
    true convolution: flip both spatial axes, then reorder to W, H."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def conv_weights(node: ir.Conv2d, precision: str = "float") -> np.ndarray:
    if precision == "fixed":
        return _conv_layout(np.asarray(need_fixed(node).weight, dtype=np.int64))
    return _conv_layout(np.asarray(node.weight, dtype=np.float64))


def pool_weights(node, channels: int, precision: str = "float") -> np.ndarray:
    """Sum/average pooling as a grouped (depthwise) Lava Conv: (C, kW, kH, 1)."""
    kh, kw = node.kernel_size
    if precision == "fixed":
        return np.full((channels, kw, kh, 1), int(need_fixed(node).weight), dtype=np.int64)
    scale = 1.0 / (kh * kw) if isinstance(node, ir.AvgPool2d) else 1.0
    return np.full((channels, kw, kh, 1), scale)


# -- neurons --------------------------------------------------------------------
@dataclass
class NeuronParams:
    """Per-neuron arrays in Lava layout and the modes. ``stock`` says Lava's own LIFReset
    computes exactly this neuron (then ``du``, ``dv``, ``vth`` are uniform).

    Float keys: du, dv, vth, bias, u_bias, reset_value, reset_amount, u_init, v_init.
    Fixed keys: du, dv, vth, bias_mant, bias_exp, reset_value, reset_amount, u_init, v_init."""

    arrays: dict
    reset_mode: str
    compare: str
    stock: bool
    precision: str = "float"

    def lif_kwargs(self) -> dict:
        """Arguments of Lava's LIFReset (only when ``stock``). In float, with du = 1 the
        current is this step's input, so a constant input current is a voltage bias."""
        a = self.arrays
        scalars = {k: a[k].reshape(-1)[0].item() for k in ("du", "dv", "vth")}
        if self.precision == "fixed":
            return dict(scalars, bias_mant=a["bias_mant"], bias_exp=a["bias_exp"])
        return dict(scalars, bias_mant=a["bias"] + a["u_bias"])


def neuron_params(node: ir.Neuron, layout: Layout, u_bias: Optional[np.ndarray],
                  precision: str = "float") -> NeuronParams:
    """``u_bias``: the constant input current (IR layout) folded from upstream biases (float)."""
    if precision == "fixed":
        f = need_fixed(node)
        vals = {k: np.asarray(getattr(f, k), dtype=np.int64) for k in FIXED_NEURON_KEYS}
        arrays = {k: layout.to_lava(v, dtype=np.int64) for k, v in vals.items()}
        stock = (f.reset_mode == "zero" and f.compare == ">"
                 and all(_uniform(vals[k]) is not None for k in ("du", "dv", "vth"))
                 and not any(np.any(vals[k]) for k in ("reset_value", "u_init", "v_init")))
        return NeuronParams(arrays, f.reset_mode, f.compare, stock, "fixed")
    vals = {key: getattr(node, key) for key in NEURON_KEYS}
    arrays = {("vth" if k == "threshold" else k): layout.to_lava(v) for k, v in vals.items()}
    arrays["u_bias"] = layout.to_lava(0.0 if u_bias is None else u_bias)
    stock = (
        node.reset_mode == "zero" and node.compare == ">"
        and all(_uniform(vals[k]) is not None for k in ("du", "dv", "threshold"))
        and not any(np.any(vals[k]) for k in ("reset_value", "u_init", "v_init"))
        and (_uniform(vals["du"]) == 1.0 or not np.any(arrays["u_bias"]))
    )
    return NeuronParams(arrays, node.reset_mode, node.compare, stock, "float")


def readout_bias(graph, float_const, precision: str):
    """What the output collector adds per step, in IR (C) order: the float constant current of
    a potential readout, or the fixed readout's integer bias."""
    out = graph.output
    if out.mode != "potential":
        return 0
    shape = graph.shape(graph.inputs_of(out.name)[0])
    if precision == "fixed":
        f = getattr(out, "fixed", None) or fx.ReadoutFixed(mode=out.mode)
        return np.broadcast_to(np.asarray(f.bias, dtype=np.int64), shape).reshape(-1).copy()
    if float_const is None:
        return 0.0
    return np.broadcast_to(np.asarray(float_const, dtype=np.float64), shape).reshape(-1).copy()
