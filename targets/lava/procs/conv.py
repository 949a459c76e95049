"""ProcessModels for Lava's own ``Conv`` process, used instead of Lava's (run config
``exception_proc_model_map``, see ``runner.execute``).

Why: Lava 0.10's ``PyConvModelFloat`` / ``PyConvModelFixed`` hold ``groups``,
``kernel_size``, ``stride``, ``padding`` and ``dilation`` as **int8**. Pooling maps to a
depthwise Conv (``groups = channels``), so 128 channels became ``groups = -128`` and
Lava's workers emitted zeros without an error; any grouped conv, kernel, stride, padding
or dilation above 127 was wrong the same way. Lava also convolves in **float32**
(``torch.FloatTensor``), exact only while partial sums stay below 2**24.

These models keep Lava's Conv process, its ports, its one-step latency (send the
previous step's ``a_buf``, then compute) and its fixed-point semantics (binary input
when ``num_message_bits == 0``, ``signed_clamp`` to 24 bits, ``weight_exp`` and
``num_weight_bits`` ignored: ``snncompile.ir.fixed``), with every shape field int32 and
the convolution in float64: exact for integers below 2**53 (``limits.check_conv``
refuses larger bounds) and the reference's own float64 arithmetic in float.

We widen the Var dtypes rather than writing a separate pooling process or splitting
groups into chunks of 127: one change fixes every grouped or pooled mapping and every
shape field at once, the network keeps one Lava Conv per IR node, and the arithmetic
is still the one Lava specifies.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv.process import Conv

from snncompile.ir import fixed as fx

WIDE = np.int32


def exact_conv(x_whc: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """Lava's ``conv.utils.conv`` (WHC input, (C_out, kW, kH, C_in/g) true-convolution
    weights, (W, H) shape fields) in float64 numpy; returns a float64 WHC array.

    numpy, not torch: torch's thread pool, started in the parent, hangs in a forked Lava
    worker; numpy's BLAS is fork-safe (Lava's Dense relies on it too)."""
    x = np.asarray(x_whc, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)[:, ::-1, ::-1, :]        # true conv -> correlation
    (sx, sy), (px, py), (dx, dy), g = stride, padding, dilation, int(groups)
    c_out, kx, ky, c_in_g = w.shape
    x = np.pad(x, ((px, px), (py, py), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, (dx * (kx - 1) + 1, dy * (ky - 1) + 1), axis=(0, 1))
    win = win[::sx, ::sy, :, ::dx, ::dy]                                 # (X, Y, C_in, kx, ky)
    nx, ny = win.shape[:2]
    win = win.reshape(nx, ny, g, c_in_g, kx, ky)
    w = w.reshape(g, c_out // g, kx, ky, c_in_g)
    out = np.einsum("xygcij,goijc->xygo", win, w, optimize=True)
    return out.reshape(nx, ny, c_out)


class _WideConvLogic(PyLoihiProcessModel):
    kernel_size: np.ndarray = LavaPyType(np.ndarray, WIDE, precision=32)
    stride: np.ndarray = LavaPyType(np.ndarray, WIDE, precision=32)
    padding: np.ndarray = LavaPyType(np.ndarray, WIDE, precision=32)
    dilation: np.ndarray = LavaPyType(np.ndarray, WIDE, precision=32)
    groups: np.ndarray = LavaPyType(np.ndarray, WIDE, precision=32)
    num_message_bits: np.ndarray = LavaPyType(np.ndarray, WIDE, precision=32)
    weight_exp: np.ndarray = LavaPyType(np.ndarray, WIDE, precision=32)
    num_weight_bits: np.ndarray = LavaPyType(np.ndarray, WIDE, precision=32)

    def finish(self, acc: np.ndarray) -> np.ndarray:
        return acc

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if self.num_message_bits.item() == 0:
            s_in = s_in.astype(bool)
        acc = exact_conv(s_in, self.weight, self.stride, self.padding, self.dilation, self.groups[0])
        self.a_buf = self.finish(acc)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyWideConvFloat(_WideConvLogic):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    a_buf: np.ndarray = LavaPyType(np.ndarray, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyWideConvFixed(_WideConvLogic):
    """``a = wrap24(conv2d(m, weight))`` exactly (``snncompile.ir.fixed``: Conv2d)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    weight: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)

    def finish(self, acc: np.ndarray) -> np.ndarray:
        return fx.wrap24(np.rint(acc).astype(np.int64)).astype(np.int32)


#: Conv -> our model, per precision (for ``Loihi2SimCfg(exception_proc_model_map=...)``).
CONV_MODELS = {"float": {Conv: PyWideConvFloat}, "fixed": {Conv: PyWideConvFixed}}
