"""numpy-only ProcessModels of our processes: float (``floating_pt``) and integer
(``fixed_pt``). Stateless logic is shared; only the message types differ."""
from __future__ import annotations

import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from snncompile.ir import fixed as fx
from snncompile.targets.lava.procs.process import (Accumulate, Collector, Delay, MaxPool, Product, Route,
                                                   SampleSource, SnnNeuron)

FLOAT, INT = float, np.int32


def _wrap(x: np.ndarray, bits: int) -> np.ndarray:
    """``ir.fixed``'s wrap of a synapse's output (24 bits: a Conv's, 32: a Dense's); 0: none."""
    x = np.asarray(x, dtype=np.int64)
    if bits == 24:
        return fx.wrap24(x)
    if bits == 32:
        return fx.wrap32(x)
    return x


def _window(tau: int, phase: int, period: int, n_samples: int, steps: int):
    """(sample, step) seen at Lava step ``tau`` by a stage of latency ``phase``, or None."""
    rel = tau - phase
    if rel < 0:
        return None
    k, t = divmod(rel, period)
    if k >= n_samples or t >= steps:
        return None
    return k, t


# -- SampleSource -------------------------------------------------------------
class _SourceLogic(PyLoihiProcessModel):
    dtype = FLOAT

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.data = np.asarray(p["data"]).astype(self.dtype)
        self.static, self.steps, self.period = p["static"], p["steps"], p["period"]
        self.zeros = np.zeros(p["shape"], dtype=self.data.dtype)

    def run_spk(self):
        where = _window(int(self.time_step) - 1, 0, self.period, self.data.shape[0], self.steps)
        if where is None:
            self.s_out.send(self.zeros)
        else:
            k, t = where
            self.s_out.send(self.data[k] if self.static else self.data[k, t])


@implements(proc=SampleSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySampleSourceFloat(_SourceLogic):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FLOAT)


@implements(proc=SampleSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PySampleSourceFixed(_SourceLogic):
    dtype = INT
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, INT, precision=24)


# -- Delay --------------------------------------------------------------------
class _DelayLogic(PyLoihiProcessModel):
    dtype = FLOAT

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.delay, self.period, self.gate_phase = p["delay"], p["period"], p["gate_phase"]
        self.bias = np.asarray(p["bias"])
        self.buffer = np.zeros((max(self.delay, 1),) + tuple(p["shape"]), dtype=self.dtype)
        self.head = 0

    def _gated(self, value):
        if self.gate_phase < 0:
            return value
        tau = int(self.time_step) - 1
        if tau >= self.gate_phase and (tau - self.gate_phase) % self.period == 0:
            return np.zeros_like(value)
        return value + self.bias

    def run_spk(self):
        if self.delay == 0:
            self.s_out.send(self._gated(self.a_in.recv()))
            return
        # Send first, then receive: a delay of at least one step may close a cycle.
        self.s_out.send(self._gated(self.buffer[self.head].copy()))
        self.buffer[self.head] = self.a_in.recv()
        self.head = (self.head + 1) % self.delay


@implements(proc=Delay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDelayFloat(_DelayLogic):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FLOAT)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FLOAT)


@implements(proc=Delay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyDelayFixed(_DelayLogic):
    dtype = INT
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, INT, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, INT, precision=24)


# -- MaxPool ------------------------------------------------------------------
class _MaxPoolLogic(PyLoihiProcessModel):
    dtype = FLOAT

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.kernel, self.stride, self.padding = p["kernel_size"], p["stride"], p["padding"]
        self.bias = np.asarray(p["bias"])
        self.wrap_bits = p.get("wrap_bits", 0)
        self.out_shape = tuple(p["out_shape"])

    def run_spk(self):
        x = self.a_in.recv() + self.bias
        if self.wrap_bits:
            x = _wrap(x, self.wrap_bits)
        (px, py), (kx, ky), (sx, sy) = self.padding, self.kernel, self.stride
        x = np.pad(x.astype(np.float64), ((px, px), (py, py), (0, 0)), constant_values=-np.inf)
        win = np.lib.stride_tricks.sliding_window_view(x, (kx, ky), axis=(0, 1))
        out = win[::sx, ::sy].max(axis=(-2, -1))
        self.s_out.send(out[: self.out_shape[0], : self.out_shape[1]].astype(self.dtype))


@implements(proc=MaxPool, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMaxPoolFloat(_MaxPoolLogic):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FLOAT)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FLOAT)


@implements(proc=MaxPool, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyMaxPoolFixed(_MaxPoolLogic):
    dtype = INT
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, INT, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, INT, precision=24)


# -- SnnNeuron ----------------------------------------------------------------
@implements(proc=SnnNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySnnNeuronFloat(PyLoihiProcessModel):
    """Float equations of ``snncompile.ir.nodes.Neuron``, with the sample-start reset."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FLOAT)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FLOAT)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FLOAT)
    u: np.ndarray = LavaPyType(np.ndarray, FLOAT)
    v: np.ndarray = LavaPyType(np.ndarray, FLOAT)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.prm = {k: np.asarray(val, dtype=np.float64) for k, val in p["params"].items()}
        self.keep_u, self.keep_v = 1.0 - self.prm["du"], 1.0 - self.prm["dv"]
        self.reset_mode, self.ge = p["reset_mode"], p["compare"] == ">="
        self.period, self.offset = p["period"], p["phase"]

    def run_spk(self):
        a = self.a_in.recv()
        tau, prm = int(self.time_step) - 1, self.prm
        if tau >= self.offset and (tau - self.offset) % self.period == 0:
            self.u[:] = prm["u_init"]
            self.v[:] = prm["v_init"]
        self.u[:] = self.u * self.keep_u + a + prm["u_bias"]
        self.v[:] = self.v * self.keep_v + self.u + prm["bias"]
        s = self.v >= prm["vth"] if self.ge else self.v > prm["vth"]
        if self.reset_mode == "zero":
            self.v[:] = np.where(s, prm["reset_value"], self.v)
        elif self.reset_mode == "subtract":
            self.v[:] = self.v - prm["reset_amount"] * s
        self.s_out.send(s.astype(np.float64))
        if self.proc_params["send_v"]:
            self.v_out.send(np.array(self.v, dtype=np.float64))



@implements(proc=SnnNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PySnnNeuronFixed(PyLoihiProcessModel):
    """Integer equations of ``snncompile.ir.fixed`` (Neuron), literally, in int64."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, INT, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, INT, precision=24)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, INT, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        prm = {k: np.asarray(val, dtype=np.int64) for k, val in p["params"].items()}
        self.prm = prm
        self.keep_u = fx.DECAY_UNITY - (prm["du"] + 1)
        self.keep_v = fx.DECAY_UNITY - prm["dv"]
        self.bias = np.where(prm["bias_exp"] >= 0,
                             np.left_shift(prm["bias_mant"], np.maximum(prm["bias_exp"], 0)),
                             np.right_shift(prm["bias_mant"], np.maximum(-prm["bias_exp"], 0)))
        self.vth = np.left_shift(prm["vth"], fx.VTH_SHIFT)
        self.reset_mode, self.ge = p["reset_mode"], p["compare"] == ">="
        self.period, self.offset = p["period"], p["phase"]
        self.vmax = fx.STATE_MAX - 1

    @staticmethod
    def _rtz(x: np.ndarray) -> np.ndarray:
        return np.sign(x) * (np.abs(x) >> fx.DECAY_SHIFT)

    def run_spk(self):
        a = np.asarray(self.a_in.recv(), dtype=np.int64)
        tau, prm = int(self.time_step) - 1, self.prm
        if tau >= self.offset and (tau - self.offset) % self.period == 0:
            self.u = np.array(np.broadcast_to(prm["u_init"], self.u.shape), dtype=np.int64)
            self.v = np.array(np.broadcast_to(prm["v_init"], self.v.shape), dtype=np.int64)
        u = fx.wrap32(self._rtz(np.asarray(self.u, dtype=np.int64) * self.keep_u)
                      + fx.wrap32(fx.wrap32(a) << fx.ACT_SHIFT))
        u = np.where(u > fx.STATE_MAX, u - 2 * fx.STATE_MAX,
                     np.where(u <= -fx.STATE_MAX, u + 2 * fx.STATE_MAX, u))
        v = fx.wrap32(self._rtz(np.asarray(self.v, dtype=np.int64) * self.keep_v) + u + self.bias)
        v = np.clip(v, -self.vmax, self.vmax)
        s = v >= self.vth if self.ge else v > self.vth
        if self.reset_mode == "zero":
            v = np.where(s, prm["reset_value"], v)
        elif self.reset_mode == "subtract":
            v = np.clip(v - prm["reset_amount"] * s, -self.vmax, self.vmax)
        self.u, self.v = u, v
        self.s_out.send(s.astype(INT))
        if self.proc_params["send_v"]:   # |v| < 2**23: exact on the 24-bit port
            self.v_out.send(v.astype(INT))


# -- Collector ----------------------------------------------------------------
class _CollectorLogic(PyLoihiProcessModel):
    dtype = np.float64

    def prepare(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(-1)[self.gather] + self.bias

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.n, self.steps, self.period, self.offset = p["n_samples"], p["steps"], p["period"], p["phase"]
        self.final_step, self.path, self.keep_steps = p["final_step"], p["path"], p["keep_steps"]
        self.gather = np.asarray(p["gather"], dtype=np.int64)
        size = self.gather.size
        self.bias = np.asarray(p["bias"], dtype=self.dtype).reshape(-1)   # one per element, or one
        if self.keep_steps:
            self.values = np.zeros((self.n, self.steps, size), dtype=self.dtype)
        else:
            self.counts = np.zeros((self.n, size), dtype=self.dtype)
            self.step_sums = np.zeros((self.n, self.steps), dtype=self.dtype)

    def run_spk(self):
        a = self.a_in.recv()
        where = _window(int(self.time_step) - 1, self.offset, self.period, self.n, self.steps)
        if where is not None:
            k, t = where
            val = self.prepare(a)
            if self.keep_steps:
                self.values[k, t] = val
            else:
                self.counts[k] += val
                self.step_sums[k, t] = val.sum()
        if int(self.time_step) == self.final_step:
            if self.keep_steps:
                np.savez(self.path, values=self.values)
            else:
                np.savez(self.path, counts=self.counts, step_sums=self.step_sums)


@implements(proc=Collector, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyCollectorFloat(_CollectorLogic):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FLOAT)


@implements(proc=Collector, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyCollectorFixed(_CollectorLogic):
    """Integer values kept exactly (int64): ``wrap32(a) + bias`` (snncompile.ir.fixed: Output)."""

    dtype = np.int64

    def prepare(self, a: np.ndarray) -> np.ndarray:
        return fx.wrap32(a.reshape(-1).astype(np.int64))[self.gather] + self.bias

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, INT, precision=24)


# -- Route --------------------------------------------------------------------
class _RouteLogic(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.gather = np.asarray(self.proc_params["gather"], dtype=np.int64)
        self.out_shape = tuple(self.proc_params["out_shape"])

    def run_spk(self):
        self.s_out.send(self.a_in.recv().reshape(-1)[self.gather].reshape(self.out_shape))


@implements(proc=Route, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyRouteFloat(_RouteLogic):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FLOAT)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FLOAT)


@implements(proc=Route, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyRouteFixed(_RouteLogic):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, INT, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, INT, precision=24)


# -- Product and Accumulate: one step of latency (send what the last step computed) ------
class _Operand:
    """One operand of a Product / the input of an Accumulate: gathered into IR order, its
    constant part added (and, in fixed point, the feeding synapse's wrap applied)."""

    def __init__(self, gather, shape, const, wrap: int, fixed: bool):
        self.gather, self.shape, self.wrap, self.fixed = np.asarray(gather), tuple(shape), wrap, fixed
        self.const = np.asarray(const, dtype=np.int64 if fixed else np.float64).reshape(-1)

    def __call__(self, received: np.ndarray) -> np.ndarray:
        x = received.reshape(-1)[self.gather]
        if self.fixed:
            x = x.astype(np.int64)
            if np.any(self.const):
                x = _wrap(x + self.const, self.wrap)
        elif np.any(self.const):
            x = x + self.const
        return x.reshape(self.shape)


class _BufferedLogic(PyLoihiProcessModel):
    fixed = False

    def __init__(self, proc_params):
        super().__init__(proc_params)
        size = int(np.prod(self.proc_params["out_shape"]))
        self.buffer = np.zeros(size, dtype=np.int64 if self.fixed else np.float64)

    def result(self, value: np.ndarray) -> np.ndarray:
        """The accumulator's value: exact integers wrapped to 24 bits (fixed) or float64."""
        value = value.reshape(-1)
        return fx.wrap24(value.astype(np.int64)) if self.fixed else value.astype(np.float64)

    def out_dtype(self):
        return INT if self.fixed else FLOAT


class _ProductLogic(_BufferedLogic):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.lhs = _Operand(p["lhs_gather"], p["lhs_shape"], p["lhs_const"], p["lhs_wrap"], self.fixed)
        self.rhs = _Operand(p["rhs_gather"], p["rhs_shape"], p["rhs_const"], p["rhs_wrap"], self.fixed)
        self.matmul = p["op"] == "matmul"

    def run_spk(self):
        self.s_out.send(self.buffer.astype(self.out_dtype()))
        a, b = self.lhs(self.lhs_in.recv()), self.rhs(self.rhs_in.recv())
        self.buffer = self.result(np.matmul(a, b) if self.matmul else a * b)


@implements(proc=Product, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyProductFloat(_ProductLogic):
    lhs_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FLOAT)
    rhs_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FLOAT)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FLOAT)


@implements(proc=Product, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyProductFixed(_ProductLogic):
    """Exact int64 products and sums, then the 24-bit accumulator's wrap (``ir.fixed``)."""

    fixed = True
    lhs_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, INT, precision=24)
    rhs_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, INT, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, INT, precision=24)


class _AccumulateLogic(_BufferedLogic):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.x = _Operand(p["gather"], p["in_shape"], p["const"], p["wrap"], self.fixed)
        dtype = np.int64 if self.fixed else np.float64
        self.weight = np.asarray(p["weight"], dtype=dtype)
        self.bias = np.asarray(p["bias"], dtype=dtype)
        self.weight_exp, self.op = p["weight_exp"], p["op"]
        self.axis, self.keepdim = p["axis"], p["keepdim"]
        self.binary = p["binary"]

    def compute(self, x: np.ndarray) -> np.ndarray:
        if self.binary:     # a synapse with num_message_bits 0 reads spikes (ir.fixed)
            x = (x != 0).astype(x.dtype)
        if self.op == "sum":
            return x.sum(self.axis, keepdims=self.keepdim)
        out = x * self.weight
        if self.fixed:
            e = self.weight_exp
            out = out << e if e > 0 else out >> -e
            return out + self.bias
        return out

    def run_spk(self):
        self.s_out.send(self.buffer.astype(self.out_dtype()))
        self.buffer = self.result(self.compute(self.x(self.a_in.recv())))


@implements(proc=Accumulate, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyAccumulateFloat(_AccumulateLogic):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FLOAT)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FLOAT)


@implements(proc=Accumulate, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyAccumulateFixed(_AccumulateLogic):
    fixed = True
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, INT, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, INT, precision=24)
