"""lava-dl netx HDF5 (``.net``) -> a quantized IR graph with netx's own integer semantics.

The layout (``lava/lib/dl/netx/hdf5.py`` and ``utils.py`` of lava-dl, archived): groups
``layer/0 .. layer/N-1`` each with a ``type`` string (``input``, ``flatten``, ``dense``,
``conv``; netx raises on ``pool``, ``average``, ``concat``, ``convT``, ``unpool``), a
``shape`` in (C, H, W) order, integer ``weight`` (dense ``(out, in)``, conv PyTorch
``(C_out, C_in/groups, kH, kW[, 1])``), optional ``bias`` and a ``neuron`` group
``{type: CUBA, iDecay, vDecay, vThMant, refDelay, gradedSpike}``. netx builds Lava
``Dense``/``Conv`` + ``LIF`` with ``du = iDecay - 1``, ``dv = vDecay``, ``vth = vThMant``,
``bias_mant = bias``, ``bias_exp = 6``; dense weights go through netx's
``optimize_weight_bits`` (mantissa, exponent, bit count); conv weights are used as they are
(netx flips/transposes them only for Lava's WHC true convolution, which our Lava target does
itself). Flatten is PyTorch (C, H, W) order.

The integers go into ``node.fixed`` (``snncompile.ir.fixed``); the float parameters are the
same network in units where ``v_float = v_int / 64`` (threshold = ``vThMant``, weights the
effective integer weights), so the reference target runs an approximation of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.ir.graph import Graph

#: netx layer types it (and so we) cannot build.
_UNSUPPORTED = ("pool", "average", "concat", "convT", "unpool", "dense_comp")
#: v_int = v_float * 64: the neuron's input activation adds ``a << 6`` to u.
NEURON_SCALE = float(2 ** fx.ACT_SHIFT)
BIAS_EXP = 6
#: Bytes of HDF5 data a netx file may declare: a dataset can declare gigabytes it never
#: wrote (a 12 KB file), so sizes are checked before reading. Real netx networks: < 100 MB.
MAX_DATASET_BYTES = 1 << 30


def read_netx(path, input_message_bits: int = 0, timesteps: Optional[int] = None) -> Graph:
    """Import a netx HDF5 file as a quantized IR graph (``node.fixed`` on every node).

    ``input_message_bits``: 0 for binary input spikes (netx's default), b > 0 for graded
    integer input messages of b bits.
    """
    path = Path(path)
    from snncompile.commands._common import check_input_file

    check_input_file(path, "netx")
    try:
        with h5py.File(path, "r") as f:
            layers = _read_layers(f, path)
    except SnnCompileError:
        raise
    except Exception as exc:  # OSError for non-HDF5, KeyError/TypeError for odd layouts
        raise SnnCompileError(f"netx file '{path}' is not a readable netx HDF5 network "
                              f"({type(exc).__name__}: {exc})") from None
    return _Builder(path, input_message_bits, timesteps).build(layers)


def _read_layers(f: h5py.File, path: Path) -> list[dict]:
    if "layer" not in f:
        raise SnnCompileError(f"netx file '{path}' has no 'layer' group (found: {', '.join(f.keys()) or 'nothing'})")
    group = f["layer"]
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    if [k for k in keys if not k.isdigit()] or [int(k) for k in keys] != list(range(len(keys))):
        raise SnnCompileError(f"netx file '{path}': layers must be named 0..N-1, found {list(group.keys())}")
    budget = [MAX_DATASET_BYTES]
    return [_to_dict(group[k], path, budget) for k in keys]


def _to_dict(group: h5py.Group, path: Path, budget: list) -> dict:
    out = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _to_dict(item, path, budget)
        else:
            budget[0] -= int(item.size) * item.dtype.itemsize
            if budget[0] < 0:
                raise SnnCompileError(f"netx file '{path}': dataset '{item.name}' of shape {item.shape} "
                                      f"declares more data than the {MAX_DATASET_BYTES >> 20} MiB a netx "
                                      f"network may hold")
            value = item[()]
            if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and value.size == 1:
                value = value.reshape(-1)[0]
            if isinstance(value, (bytes, np.bytes_)):
                value = value.decode("ascii")
            out[key] = value
    return out


def optimize_weight_bits(weight: np.ndarray) -> tuple[np.ndarray, int, int]:
    """netx's ``optimize_weight_bits``: (mantissa, num_weight_bits, weight_exp) such that
    Lava's Dense computes ``(W_mant . s) >> -weight_exp`` from integer weights ``weight``.
    Re-implemented from lava-dl ``netx/utils.py`` (same clipping, scale and precision search)."""
    w = np.asarray(weight, dtype=np.int64)
    hi, lo = int(w.max()), int(w.min())
    if (hi > 254 and lo < 0) or (lo < -256 and hi > 0):
        w = np.clip(w, -256, 254)
        hi, lo = int(w.max()), int(w.min())
    if hi < 0:
        scale, signed = -256 / lo, 0
    elif lo >= 0:
        scale, signed = (255 / hi if hi > 0 else np.inf), 0
    else:
        scale, signed = min(127 / hi, -128 / lo), 1
    if not np.isfinite(scale):  # all-zero weights
        return w, 8, 0
    scale_bits = int(np.floor(np.log2(scale))) + signed
    if scale_bits < 0:
        raise ValueError(f"weights up to {hi} exceed netx's 8-bit synapse range")
    n = 8
    while n > 0 and np.sum(np.abs(w / 2 ** n - np.round(w / 2 ** n))) != 0:
        n -= 1
    n -= signed
    return w << scale_bits, 8 - scale_bits - n, -scale_bits


class _Builder:
    def __init__(self, path: Path, input_message_bits: int, timesteps):
        self.path = path
        self.g = Graph(path.stem or "netx", timesteps=timesteps)
        self.g.meta.update({"netx.source": str(path), "quantized": "netx"})
        self.message_bits = int(input_message_bits)
        self.last: Optional[str] = None
        self.shape: tuple = ()
        self.flatten_next = False

    def fail(self, i: int, why: str) -> SnnCompileError:
        return SnnCompileError(f"netx file '{self.path}', layer {i}: {why}")

    def build(self, layers: list[dict]) -> Graph:
        if not layers:
            raise SnnCompileError(f"netx file '{self.path}' has no layers")
        for i, layer in enumerate(layers):
            kind = layer.get("type")
            if kind is None:
                raise self.fail(i, "has no 'type'")
            if kind in _UNSUPPORTED:
                raise self.fail(i, f"layer type '{kind}' is not supported (netx itself raises "
                                   f"NotImplementedError for it)")
            if kind == "input":
                self._input(i, layer)
            elif self.last is None and kind == "dense" and "weight" in layer:
                # slayer exports often start with a dense block: its weight gives the input
                # size (as netx infers it from the Dense process's s_in port).
                self._input(i, {"shape": np.array([np.asarray(self._field(i, layer, "weight")).shape[-1]])})
                self._dense(i, layer, last=i == len(layers) - 1)
            elif self.last is None:
                raise self.fail(i, f"'{kind}' layer before any input layer: the input shape is unknown "
                                   f"(netx needs input_shape for it too)")
            elif kind == "flatten":
                self.flatten_next = True
            elif kind == "dense":
                self._dense(i, layer, last=i == len(layers) - 1)
            elif kind == "conv":
                self._conv(i, layer)
            else:
                raise self.fail(i, f"unknown layer type '{kind}'")
        mode = "spikes" if isinstance(self.g.node(self.last), ir.Neuron) else "potential"
        out = ir.Output("output", mode=mode)
        out.fixed = fx.ReadoutFixed(mode=mode, scale=1.0)
        self.g.add(out, [self.last])
        try:
            self.g.validate()
            fx.check_graph(self.g)
        except SnnCompileError as exc:
            raise SnnCompileError(f"netx file '{self.path}': {exc}") from None
        return self.g

    # -- layers -----------------------------------------------------------------------
    def _input(self, i, layer):
        if self.last is not None:
            raise self.fail(i, "a second input layer")
        if "neuron" in layer:
            raise self.fail(i, "input layers with their own neuron (slayer's cuba.Input) are not "
                               "supported; export the network without the input block")
        shape = self._shape(i, layer)
        if int(np.prod(shape)) in shape:  # (F,), (1, 1, F), (F, 1, 1): a vector
            shape = (int(np.prod(shape)),)
        node = ir.Input("input", shape=shape)
        node.fixed = fx.InputFixed(scale=1.0, num_message_bits=self.message_bits)
        self.g.add(node)
        self.last, self.shape = "input", shape

    def _dense(self, i, layer, last: bool):
        if len(self.shape) != 1:
            if not self.flatten_next:
                raise self.fail(i, f"dense layer after a layer of shape {self.shape} without a "
                                   f"flatten layer")
            self._add(ir.Flatten(f"{i}.flatten"), (int(np.prod(self.shape)),))
        self.flatten_next = False
        n_out = int(np.prod(self._shape(i, layer)))
        weight = self._integers(i, "weight", self._field(i, layer, "weight"))  # netx reads weights with astype(int)
        if weight.ndim > 2:
            raise self.fail(i, f"dense weight has {weight.ndim} dimensions, expected 2 (out, in)")
        if weight.ndim == 1:
            if weight.size % n_out:
                raise self.fail(i, f"dense weight of {weight.size} values does not fit {n_out} outputs")
            weight = weight.reshape(n_out, -1)
        if weight.shape != (n_out, self.shape[0]):
            raise self.fail(i, f"dense weight of shape {weight.shape} does not fit {self.shape[0]} "
                               f"inputs and {n_out} outputs")
        try:
            mant, bits, exp = optimize_weight_bits(weight)
        except ValueError as exc:
            raise self.fail(i, str(exc)) from None
        effective = fx.lava_dense_weights(mant, bits).astype(np.float64) * 2.0 ** exp
        syn = ir.Linear(f"{i}.dense", weight=effective)
        syn.fixed = fx.SynapseFixed(weight=mant, weight_exp=exp, num_weight_bits=bits,
                                    num_message_bits=self._message_bits_in(), scale=1.0, in_scale=1.0)
        self._check_delay(i, layer)
        self._add(syn, (n_out,))
        if "neuron" not in layer:
            if not last:
                raise self.fail(i, "a dense layer without a neuron is only supported as the last "
                                   "layer (read out as accumulated potential)")
            if np.any(np.asarray(layer.get("bias", 0))):
                raise self.fail(i, "a bias on a neuron-less output layer is not supported")
            return
        self._neuron(i, layer, (n_out,))

    def _conv(self, i, layer):
        if len(self.shape) != 3:
            raise self.fail(i, f"conv layer after a layer of shape {self.shape}")
        weight = self._integers(i, "weight", self._field(i, layer, "weight"))
        if weight.ndim not in (4, 5) or weight.ndim == 5 and weight.shape[4] != 1:
            raise self.fail(i, f"conv weight of shape {weight.shape}: expected (C_out, C_in/groups, kH, kW) "
                               f"with an optional trailing unit dimension")
        weight = weight.reshape(weight.shape[:4])
        if 0 in weight.shape:
            raise self.fail(i, f"conv weight of shape {weight.shape} is empty")
        geometry = {key: self._pair(i, layer, key, default, low) for key, default, low in
                    (("stride", 1, 1), ("padding", 0, 0), ("dilation", 1, 1), ("groups", 1, 1))}
        syn = ir.Conv2d(f"{i}.conv", weight=weight.astype(np.float64), stride=geometry["stride"],
                        padding=geometry["padding"], dilation=geometry["dilation"],
                        groups=geometry["groups"][0])
        syn.fixed = fx.SynapseFixed(weight=weight, weight_exp=0, num_weight_bits=8,
                                    num_message_bits=self._message_bits_in(), scale=1.0, in_scale=1.0)
        self._check_delay(i, layer)
        try:
            shape = syn.out_shape([self.shape])
        except SnnCompileError as exc:
            raise self.fail(i, str(exc)) from None
        declared = self._shape(i, layer)
        if declared != shape:
            raise self.fail(i, f"declared shape {declared} but the convolution of {self.shape} "
                               f"gives {shape}")
        self._add(syn, shape)
        if "neuron" not in layer:
            raise self.fail(i, "conv layer without a neuron")
        self._neuron(i, layer, shape)

    def _neuron(self, i, layer, shape):
        cfg = layer["neuron"]
        if not isinstance(cfg, dict):
            raise self.fail(i, "'neuron' must be a group of neuron parameters")
        kind = cfg.get("type", "CUBA")
        if kind not in ("CUBA", "LOIHI"):
            raise self.fail(i, f"neuron type '{kind}' is not supported (only CUBA/LOIHI LIF)")
        for key in ("iDecay", "vDecay", "vThMant"):
            if key not in cfg:
                raise self.fail(i, f"CUBA neuron without '{key}'")
        ref_delay = int(np.max(self._integers(i, "neuron refDelay", cfg.get("refDelay", 1))))
        if ref_delay > 1:
            raise self.fail(i, f"refDelay={ref_delay}: a refractory period is not "
                               f"representable (Lava's LIF, which netx builds, has none)")
        if bool(np.any(cfg.get("gradedSpike", False))):
            raise self.fail(i, "gradedSpike=True: graded spikes of CUBA neurons are not "
                               "representable (Lava's LIF emits 0/1)")
        i_decay, v_decay, vth = (int(self._integers(i, f"neuron {k}", self._field(i, cfg, k)).reshape(-1)[0])
                                 for k in ("iDecay", "vDecay", "vThMant"))
        bias = self._integers(i, "bias", layer.get("bias", 0))
        if bias.ndim == 1 and len(shape) == 3 and bias.shape[0] == shape[0]:
            bias = bias.reshape(-1, 1, 1)  # channel-wise
        try:
            np.broadcast_to(bias, shape)
        except ValueError:
            raise self.fail(i, f"bias of shape {bias.shape} does not fit neurons of shape {shape}") from None
        neuron = ir.Neuron(f"{i}.neuron", shape=shape, du=i_decay / 4096, dv=v_decay / 4096,
                           threshold=float(vth), bias=bias.astype(np.float64), reset_mode="zero",
                           compare=">", source=f"netx.{kind}")
        neuron.fixed = fx.NeuronFixed(du=i_decay - 1, dv=v_decay, vth=vth, bias_mant=bias,
                                      bias_exp=BIAS_EXP, reset_mode="zero", compare=">",
                                      scale=NEURON_SCALE)
        self._add(neuron, shape)

    # -- helpers ----------------------------------------------------------------------
    def _integers(self, i, what: str, value) -> np.ndarray:
        """netx casts with ``astype(int)``, which turns NaN into -2**63 silently: refuse it."""
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf" or arr.size == 0:
            raise self.fail(i, f"{what} must be numbers, found {arr.dtype} of shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise self.fail(i, f"{what} holds NaN or Inf values")
            if not np.all(arr == np.round(arr)) or np.abs(arr).max() >= 2 ** 62:
                raise self.fail(i, f"{what} must be integers (netx stores integer parameters)")
        return arr.astype(np.int64)

    def _field(self, i, group: dict, key: str):
        if key not in group:
            raise self.fail(i, f"has no '{key}'")
        return group[key]

    def _shape(self, i, layer) -> tuple:
        if "shape" not in layer:
            raise self.fail(i, "has no 'shape'")
        shape = tuple(int(s) for s in self._integers(i, "shape", layer["shape"]).reshape(-1))
        if not shape or min(shape) < 1:
            raise self.fail(i, f"shape {shape} must be positive sizes")
        return shape

    def _pair(self, i, layer, key: str, default: int, low: int) -> tuple[int, int]:
        v = self._integers(i, key, layer.get(key, default)).reshape(-1)
        pair = (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))
        if v.size > 2 or min(pair) < low:
            raise self.fail(i, f"{key} {v.tolist()} must be {'one or two ' if key != 'groups' else ''}"
                               f"integers >= {low}")
        return pair

    def _add(self, node, shape):
        self.g.add(node, [self.last])
        self.last, self.shape = node.name, tuple(shape)

    def _message_bits_in(self) -> int:
        return self.message_bits if self.last == "input" else 0

    def _check_delay(self, i, layer):
        delay = np.asarray(layer.get("delay", 0))
        if np.any(delay):
            raise self.fail(i, f"axonal delays (up to {int(delay.max())} steps) are not "
                               f"representable: the IR has no delay lines")

