"""The one place where IR parameters become Lava process parameters.

Float today (``precision="float"``); fixed point plugs in here by reading the node's
``fixed`` dataclass (``snncompile.ir.fixed``) instead of its float arrays, so the
builder does not change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import nodes as ir
from snncompile.targets.lava.layout import Layout

NEURON_KEYS = ("du", "dv", "threshold", "bias", "reset_value", "reset_amount", "u_init", "v_init")


def check_precision(graph, precision: str) -> None:
    if precision == "float":
        return
    if precision == "fixed":
        raise SnnCompileError(
            f"graph '{graph.name}': --precision fixed on the Lava target is not available yet "
            f"(it follows the integer equations of snncompile.ir.fixed, still to be written); "
            f"use --precision float")
    raise SnnCompileError(f"unknown precision '{precision}'; choose float or fixed")


def _uniform(arr: np.ndarray) -> Optional[float]:
    flat = np.asarray(arr).reshape(-1)
    return float(flat[0]) if flat.size and np.all(flat == flat[0]) else None


@dataclass
class NeuronParams:
    """Per-neuron arrays in Lava layout (keys: du, dv, vth, bias, u_bias, reset_value,
    reset_amount, u_init, v_init) and the modes. ``stock`` says Lava's own LIFReset
    computes exactly this neuron (then ``du``, ``dv``, ``vth`` are scalars)."""

    arrays: dict
    reset_mode: str
    compare: str
    stock: bool

    def lif_kwargs(self) -> dict:
        """Arguments of Lava's LIF/LIFReset (only when ``stock``). With du = 1 the current is
        this step's input, so a constant input current is a voltage bias."""
        a = self.arrays
        return dict(du=float(a["du"].flat[0]), dv=float(a["dv"].flat[0]),
                    vth=float(a["vth"].flat[0]), bias_mant=a["bias"] + a["u_bias"])


def neuron_params(node: ir.Neuron, layout: Layout, u_bias: Optional[np.ndarray]) -> NeuronParams:
    """``u_bias``: the constant input current (IR layout) folded from upstream biases."""
    ir_vals = {key: getattr(node, key) for key in NEURON_KEYS}
    arrays = {("vth" if k == "threshold" else k): layout.to_lava(v) for k, v in ir_vals.items()}
    arrays["u_bias"] = layout.to_lava(0.0 if u_bias is None else u_bias)
    stock = (
        node.reset_mode == "zero" and node.compare == ">"
        and all(_uniform(ir_vals[k]) is not None for k in ("du", "dv", "threshold"))
        and not np.any(ir_vals["reset_value"]) and not np.any(ir_vals["u_init"])
        and not np.any(ir_vals["v_init"])
        and (_uniform(ir_vals["du"]) == 1.0 or not np.any(arrays["u_bias"]))
    )
    return NeuronParams(arrays, node.reset_mode, node.compare, stock)


def dense_weights(node: ir.Linear, in_layout: Layout) -> np.ndarray:
    return in_layout.dense_weights(np.asarray(node.weight, dtype=np.float64))


def conv_weights(node: ir.Conv2d) -> np.ndarray:
    """PyTorch (C_out, C_in/g, kH, kW) cross-correlation -> Lava (C_out, kW, kH, C_in/g)
    true convolution: flip both spatial axes, then reorder to W, H."""
    w = np.asarray(node.weight, dtype=np.float64)[:, :, ::-1, ::-1]
    return np.ascontiguousarray(w.transpose(0, 3, 2, 1))


def pool_weights(node, channels: int) -> np.ndarray:
    """Sum/average pooling as a grouped (depthwise) Lava Conv: (C, kW, kH, 1)."""
    kh, kw = node.kernel_size
    scale = 1.0 / (kh * kw) if isinstance(node, ir.AvgPool2d) else 1.0
    return np.full((channels, kw, kh, 1), scale)
