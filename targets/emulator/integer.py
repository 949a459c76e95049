"""Batched integer simulation of a quantized graph: the equations of ``snncompile.ir.fixed``.

The graph walk (topological order, recurrent edges, recording) is the reference target's
``Simulator``; this module only swaps the arithmetic for integer-valued torch tensors.
Every value is an exact integer; the dtype it travels in is chosen by a bound that proves
no rounding and no skipped wrap can occur, else the int64 path with every wrap written out:

* synapses: float32 / float64 / int64 (below);
* neurons: ``IntNeuronState.kernel_step``, one compiled numba pass per population and step
  (int32 lanes, every wrap written out: ``lif_kernel.py``); ``exact_step`` (int64 tensor ops)
  where events are counted or a parameter needs more than 32 bits; fused (torch.compile):
  ``fast_step`` (int32 states, float64 decay products) while the activations stay below
  2**17 and |u| below 2**24;
* a static input (one image at every step): the stateless layers it feeds run once.
``tests/test_emulator_fastpaths.py`` checks each fast path against int64 on both sides
of its switch.

Exactness of the synapse products: torch has no int64 conv on CPU, so a synapse runs in
float32 or float64 when that is provably exact -- every product and partial sum is an
integer bounded by ``max|message| * max_row_L1(weights)``; float32 represents all integers
below 2**24 exactly and float64 below 2**53, so any summation order gives the exact
result. Above 2**53 it falls back to an int64 path (unfold + int64 matmul), also exact.
The transformer kinds follow the same rule (``ExactOp``): a MatMul's partial sums are bounded
by ``K * max|a| * max|b|``, a Mul's by ``max|a| * max|b|``, a ReduceSum's by ``n * max|x|``;
float32/float64 below 2**24/2**53, else int64, then the 24-bit accumulator's wrap (counted when
the report asks). Layouts are the reference's index maps. A Scale is an ``_IntSynapse``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import SnnCompileError
from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir
from snncompile.ir.kinds import StageTable
from snncompile.targets import reference
from snncompile.targets.reference import Simulator

INT = torch.int64
#: Spikes travel as float32 0/1 and synapse outputs stay in the exact float dtype of their
#: product when no wrap can occur: integer *values* in any dtype, converted only where an
#: integer operation needs them (saves a full int64<->float pass per layer and step).
SPIKE = torch.float32
_M32 = 2 ** 32 - 1


def _i(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def wrap32(x: torch.Tensor) -> torch.Tensor:
    return ((x + 2 ** 31) & _M32) - 2 ** 31


def absmax(x: torch.Tensor) -> int:
    """max |x| in one pass (0 for an empty tensor)."""
    if not x.numel():
        return 0
    lo, hi = torch.aminmax(x)
    return max(-int(lo), int(hi))


def wrap24(x: torch.Tensor) -> torch.Tensor:
    return ((x + 2 ** 23) & (2 ** 24 - 1)) - 2 ** 23


def rtz_decay(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``sign(x*f) * (|x*f| >> 12)``: Lava's decay, rounding toward zero. Integer division
    truncating toward zero by 4096 is exactly that (``|x*f| < 2**44``: no int64 overflow)."""
    return torch.div(x * factor, fx.DECAY_UNITY, rounding_mode="trunc")


def shift(x: torch.Tensor, e: int) -> torch.Tensor:
    return x << e if e > 0 else x >> (-e)


def _need_fixed(node: ir.Node):
    if node.fixed is None:
        raise SnnCompileError(f"node '{node.name}' ({node.kind}) has no fixed-point parameters: "
                              f"quantize the graph first (snncompile quantize)")
    return node.fixed


def _fire_and_reset(v, vth, reset_value, reset_amount, compare_ge: bool, reset_mode: str):
    """Threshold and reset of ``ir.fixed`` (shared by the exact and the fast step; plain
    tensor ops, so ``torch.compile`` inlines it into the fused kernel)."""
    lim = fx.STATE_MAX
    s = (v >= vth) if compare_ge else (v > vth)
    if reset_mode == "zero":
        v = torch.where(s, reset_value, v)
    elif reset_mode == "subtract":
        v = (v - reset_amount * s).clamp(-(lim - 1), lim - 1)
    return v, s.to(SPIKE)


def lif_step_exact(u, v, a, keep_u, keep_v, bias, vth, reset_value, reset_amount,
                   compare_ge: bool, reset_mode: str):
    """One LIF step, every wrap of ``ir.fixed`` written out (no fast-path shortcuts): the
    body ``torch.compile`` fuses into one elementwise kernel (see ``IntNeuronState``)."""
    lim = fx.STATE_MAX
    a = a.to(INT)
    up = wrap32(wrap32(rtz_decay(u, keep_u)) + wrap32(wrap32(a) << fx.ACT_SHIFT))
    u2 = torch.where(up > lim, up - 2 * lim, torch.where(up <= -lim, up + 2 * lim, up))
    v2 = wrap32(wrap32(rtz_decay(v, keep_v)) + u2 + bias).clamp(-(lim - 1), lim - 1)
    v2, s = _fire_and_reset(v2, vth, reset_value, reset_amount, compare_ge, reset_mode)
    return u2, v2, s


_COMPILED = {}


def compiled_lif_step(key, fn=None):
    """``fn`` (``lif_step_exact`` or ``lif_step_fast``) fused by torch.compile, one compiled
    function per ``key`` (path, state and parameter shapes, compare, reset mode) so none
    ever recompiles or falls back; the same integer-valued ops, so the same integers."""
    if key not in _COMPILED:
        import torch._dynamo
        # every key compiles the same function: let dynamo keep them all (its default limit
        # of 8 per function would silently fall back to slow recompiles)
        cfg = torch._dynamo.config
        for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(cfg, name):
                setattr(cfg, name, max(getattr(cfg, name), 1024))
        _COMPILED[key] = torch.compile(fn or lif_step_exact, dynamic=False)
    return _COMPILED[key]


#: Float64 neuron fast path (see ``IntNeuronState.fast_step``): taken while the input
#: activations stay below ``FAST_A_MAX`` and ``|u|`` below ``FAST_STATE_MAX``.
FAST_A_MAX = 2 ** 17
FAST_STATE_MAX = 2 ** 24
F64 = torch.float64
I32 = torch.int32


def lif_step_fast(u, v, a, keep_u, keep_v, bias, vth, reset_value, reset_amount,
                  compare_ge: bool, reset_mode: str):
    """``IntNeuronState.fast_step``'s arithmetic as one pure function for ``torch.compile``
    to fuse: int32 states and sums, each decay product in float64 (``keep_*`` already
    divided by 4096) truncated by the int32 conversion; exact under ``_fast_ok``'s bounds."""
    lim = fx.STATE_MAX
    u = (u.to(F64) * keep_u).to(I32) + a.to(I32) * 2 ** fx.ACT_SHIFT
    u = torch.where(u > lim, u - 2 * lim, torch.where(u <= -lim, u + 2 * lim, u))
    v = ((v.to(F64) * keep_v).to(I32) + u + bias).clamp(-(lim - 1), lim - 1)
    v, s = _fire_and_reset(v, vth, reset_value, reset_amount, compare_ge, reset_mode)
    return u, v, s


#: Activation dtypes the compiled neuron update reads as they are (others go through int64).
_KERNEL_DTYPES = (torch.float32, torch.float64, torch.int32, torch.int64)


def memory_order(t: torch.Tensor):
    """The batch axis, then the other axes from outermost to innermost in memory, when
    ``t`` is dense in that order (``t.permute(order)`` is contiguous), else None."""
    order = (0,) + tuple(sorted(range(1, t.dim()), key=lambda d: (-t.stride(d), d)))
    return order if t.permute(order).is_contiguous() else None


def _kernel_params(f: fx.NeuronFixed, shape: tuple):
    """(par, to_zero, forget_u, hold_v) for ``lif_kernel.lif_rows``, laid out as the event
    engine's (``events.EventProgram.params``), or None where a value needs more than int32."""
    def per_neuron(value):
        return np.broadcast_to(np.asarray(value, np.int64), shape).reshape(-1)
    par = np.stack([per_neuron(v) for v in (
        fx.DECAY_UNITY - (f.du + 1), fx.DECAY_UNITY - f.dv, f.effective_bias(),
        np.left_shift(f.vth, fx.VTH_SHIFT) - int(f.compare == ">="),   # v >= vth: v > vth - 1
        f.reset_value, f.reset_amount if f.reset_mode == "subtract" else 0)])
    inits = np.concatenate([per_neuron(f.u_init), per_neuron(f.v_init), par.reshape(-1)])
    if inits.size and (inits.min() < -2 ** 31 or inits.max() >= 2 ** 31):
        return None
    return (np.ascontiguousarray(par, np.int32), f.reset_mode == "zero", bool(np.all(par[0] == 0)),
            bool(np.all(par[1] == fx.DECAY_UNITY)))


class IntNeuronState:
    """One LIF population in Lava's bit-accurate integer arithmetic (see ir.fixed).

    Exact paths: ``kernel_step`` (the default) is one compiled pass with the event engine's
    int32 arithmetic; ``exact_step`` writes out every wrap of ``ir.fixed`` on int64 tensors;
    fused, ``fast_step`` computes the same integers in float64 where no wrap32 can happen --
    chosen per step from cheap bounds (``_fast_ok``). The states ``u``/``v`` hold integer
    values in whichever dtype the last step used."""

    #: Allow the fast paths (compiled kernel, fused float64; tests switch them off to compare
    #: with the int64 path).
    fast = True
    #: Use the torch.compile'd fused kernels (set by the simulator; no event counting there).
    fused = False

    def __init__(self, node: ir.Neuron, batch: int):
        f: fx.NeuronFixed = _need_fixed(node)
        self.f = f
        shape = (batch,) + tuple(node.shape)
        self.keep_u = _i(fx.DECAY_UNITY - (f.du + 1))
        self.keep_v = _i(fx.DECAY_UNITY - f.dv)
        self.bias = _i(f.effective_bias())
        self.vth = _i(np.left_shift(f.vth, fx.VTH_SHIFT))
        self.reset_value = _i(f.reset_value)
        self.reset_amount = _i(f.reset_amount)
        self.u = _i(f.u_init).expand(shape).clone()
        self.v = _i(f.v_init).expand(shape).clone()
        #: When a dict: counts of "u_wrap" and "v_saturate" events (quantization diagnostics).
        self.events = None

        #: Largest |u| of the last step: while it is small, no int32 wrap can happen (fast path).
        self.u_max = absmax(self.u)
        # fast-path parameters: int32 (used only when ``fast_params`` bounds them), and the
        # decay factors as float64 keep/4096 (exact: a power-of-two scaling)
        self.i32 = {name: getattr(self, name).to(I32) for name in
                    ("bias", "vth", "reset_value", "reset_amount")}
        self.fp = {"keep_u": self.keep_u.to(F64) / fx.DECAY_UNITY,
                   "keep_v": self.keep_v.to(F64) / fx.DECAY_UNITY}
        # the fused kernel sees (batch, neurons) tensors and (neurons,) parameters: one long
        # contiguous inner loop that vectorises (a short last dim such as W = 14 does not)
        n = int(np.prod(node.shape))
        self.fp_flat = {k: t if t.dim() == 0 else t.expand(tuple(node.shape)).reshape(n).contiguous()
                        for k, t in {**self.i32, **self.fp}.items()}
        #: Parameters and initial v small enough for ``fast_step``'s bounds (checked once).
        self.fast_params = (absmax(self.v) <= FAST_STATE_MAX and absmax(self.reset_value) <= FAST_STATE_MAX
                            and absmax(self.bias) < 2 ** 29 and absmax(self.reset_amount) < 2 ** 29)
        #: The compiled update's parameters (``lif_kernel.lif_rows``), or None where one of
        #: them or an initial state does not fit its int32 lanes (then the int64 step).
        self.kernel_par = _kernel_params(f, tuple(node.shape))
        self._kernel_par_in = {}          # kernel_par's table in each memory order used

    def _decay(self, x: torch.Tensor, keep: torch.Tensor, tame: bool) -> torch.Tensor:
        """rtz decay (int32-wrapped unless ``tame``), skipping the multiply where Lava's
        factor is 0 or exactly 4096."""
        if keep.dim() == 0:
            k = int(keep)
            if k == 0:
                return torch.zeros_like(x)
            if k == fx.DECAY_UNITY:
                return x
        d = rtz_decay(x, keep)
        return d if tame else wrap32(d)

    def step(self, a: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.fast_step(a) if self._fast_ok(a) else self.exact_step(a)
        if self.fast and self.events is None and self.kernel_par is not None:
            return self.kernel_step(a)
        return self.exact_step(a)

    def kernel_step(self, a: torch.Tensor) -> torch.Tensor:
        """One step as one compiled pass (``lif_kernel``): int32 states updated in place,
        every wrap of ``lif_step_exact`` written out, so exact for any activations. The
        update is elementwise, so it runs in the memory order of ``a`` (channels-last conv
        outputs stay so, and their spikes feed the next channels-last conv without a copy)."""
        from .lif_kernel import lif_rows
        if a.dtype not in _KERNEL_DTYPES:
            a = a.to(INT)
        order = memory_order(a)
        if order is None:
            a, order = a.contiguous(), tuple(range(a.dim()))
        if self.u.dtype != I32 or memory_order(self.u) != order:
            # first step (int64 initial states, checked to fit) or another layout: a's strides
            self.u = torch.empty_like(a, dtype=I32).copy_(self.u)
            self.v = torch.empty_like(a, dtype=I32).copy_(self.v)
        if order not in self._kernel_par_in:
            par = self.kernel_par[0].reshape((6,) + tuple(a.shape[1:])).transpose(*(0,) + order[1:])
            self._kernel_par_in[order] = np.ascontiguousarray(par).reshape(6, -1)
        spikes = torch.empty_like(a, dtype=SPIKE)

        def flat(t):   # (B, n) view of t's memory
            return t.permute(order).reshape(t.shape[0], -1).numpy()
        _, to_zero, forget_u, hold_v = self.kernel_par
        lif_rows(flat(a), flat(spikes), flat(self.u), flat(self.v), self._kernel_par_in[order],
                 to_zero, forget_u, hold_v)
        self.u_max = fx.STATE_MAX            # folded into (-2**23, 2**23]
        return spikes

    def _fast_ok(self, a: torch.Tensor) -> bool:
        """Why ``fast_step`` is exact: with |a| < 2**17, |u| <= 2**24 (|decay(u)| <= |u|) and
        |a << 6| < 2**23, |u'| < 2**25: no int32 wrap, and one 24-bit fold leaves |u| <= 2**23.
        With |v| <= 2**24 (clamped to 2**23, or v_init/reset_value, checked once),
        |bias| < 2**29: |v'| < 2**30, no wrap either; with |reset_amount| < 2**29 the
        subtractive reset stays below 2**31 too. So every state and sum fits int32, and
        each decay product (|x| * 4096 < 2**37) is exact in float64: x * (keep / 4096) is
        the exact product scaled by a power of two, and its truncation is Lava's rtz."""
        return (self.fast and self.events is None and self.fast_params
                and self.u_max <= FAST_STATE_MAX and absmax(a) < FAST_A_MAX)

    def fast_step(self, a: torch.Tensor) -> torch.Tensor:
        """One fused step without int64 (conditions and proof: ``_fast_ok``): int32 states,
        the decay products in float64, ``lif_step_fast`` compiled by torch.compile."""
        shape, pf, lim = self.u.shape, self.fp_flat, fx.STATE_MAX
        names = ("keep_u", "keep_v", "bias", "vth", "reset_value", "reset_amount")
        key = ("float", shape[0], a.dtype, self.f.compare, self.f.reset_mode,
               *(tuple(pf[k].shape) for k in names))
        u, v, s = compiled_lif_step(key, lif_step_fast)(
            self.u.to(I32).reshape(shape[0], -1), self.v.to(I32).reshape(shape[0], -1),
            a.reshape(shape[0], -1), *(pf[k] for k in names), self.f.compare == ">=", self.f.reset_mode)
        self.u, self.v, self.u_max = u.view(shape), v.view(shape), lim
        return s.view(shape)

    def _shape_key(self, a: torch.Tensor) -> tuple:
        return (tuple(self.u.shape), tuple(a.shape), a.dtype, self.f.compare, self.f.reset_mode,
                *(tuple(t.shape) for t in (self.keep_u, self.keep_v, self.bias, self.vth,
                                           self.reset_value, self.reset_amount)))

    def exact_step(self, a: torch.Tensor) -> torch.Tensor:
        """One step on int64 with every wrap of ``ir.fixed`` (any input; counts events)."""
        self.u, self.v = self.u.to(INT), self.v.to(INT)
        if self.fused and self.events is None:
            f = self.f
            key = ("int",) + self._shape_key(a)
            self.u, self.v, s = compiled_lif_step(key, lif_step_exact)(
                self.u, self.v, a, self.keep_u, self.keep_v, self.bias, self.vth, self.reset_value,
                self.reset_amount, f.compare == ">=", f.reset_mode)
            self.u_max = absmax(self.u)
            return s
        lim = fx.STATE_MAX
        a = a.to(INT)
        a_max = absmax(a)
        # Fast path: |a| < 2**24 and |u| <= 2**29 keep every int32 intermediate in range
        # (|decay(u)| <= 2**29 * 4097/4096, |a << 6| < 2**30, so |u'| < 2**31; then
        # |decay(v)| < 2**23, |bias| < 2**22, so |v'| < 2**31): each wrap32 of the written
        # equations is the identity and is skipped.
        tame = a_max < 2 ** 24 and self.u_max <= 2 ** 29
        if tame:
            u = a << fx.ACT_SHIFT
            if not (self.keep_u.dim() == 0 and int(self.keep_u) == 0):   # du = 4095: u forgotten
                u = u + self._decay(self.u, self.keep_u, True)
        else:
            u = wrap32(self._decay(self.u, self.keep_u, False) + wrap32(wrap32(a) << fx.ACT_SHIFT))
        u_max = absmax(u)
        if u_max >= lim:
            if self.events is not None:
                self.events["u_wrap"] += int(((u > lim) | (u <= -lim)).sum())
            u = torch.where(u > lim, u - 2 * lim, torch.where(u <= -lim, u + 2 * lim, u))
            u_max = absmax(u)
        self.u, self.u_max = u, u_max
        v = self._decay(self.v, self.keep_v, tame) + u + self.bias
        if not tame:
            v = wrap32(v)
        if self.events is not None:
            self.events["v_saturate"] += int((v.abs() > lim - 1).sum())
        v = v.clamp_(-(lim - 1), lim - 1)
        s = (v >= self.vth) if self.f.compare == ">=" else (v > self.vth)
        if self.f.reset_mode == "zero":
            if self.reset_value.dim() == 0:
                v = v.masked_fill_(s, int(self.reset_value))
            else:
                v = torch.where(s, self.reset_value, v)
        elif self.f.reset_mode == "subtract":
            v = (v - self.reset_amount * s).clamp_(-(lim - 1), lim - 1)
        self.v = v
        return s.to(SPIKE)


def _float32_is_ieee() -> bool:
    """True unless the user allowed torch to run float32 conv/matmul in lower precision
    (bf16/tf32), where the float32 exactness argument would no longer hold."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    mkldnn = torch.backends.mkldnn
    return all(getattr(getattr(mkldnn, part, None), "fp32_precision", "none") in ("none", "ieee")
               for part in ("conv", "matmul"))


def _exact_float_dtype(bound: int):
    """The cheapest float dtype in which a synapse whose every partial sum is an integer of
    magnitude <= ``bound`` is computed exactly (any summation order), or None (int64)."""
    if bound < 2 ** 24 and _float32_is_ieee():
        return torch.float32
    if bound < 2 ** 53:
        return torch.float64
    return None


class _IntSynapse:
    """Integer weights of one synapse, prepared once (Lava's effective Dense weights)."""

    def __init__(self, node: ir.Node, in_channels: int = 0):
        f: fx.SynapseFixed = _need_fixed(node)
        self.node, self.f = node, f
        if isinstance(node, ir.Linear):
            w = fx.lava_dense_weights(f.weight, f.num_weight_bits)
        elif isinstance(node, (ir.Conv2d, ir.Scale)):
            w = np.asarray(f.weight, dtype=np.int64)
        else:  # pooling: a depthwise conv with the scalar mantissa in every tap
            kh, kw = node.kernel_size
            w = np.full((in_channels, 1, kh, kw), int(f.weight), dtype=np.int64)
        self.w = torch.from_numpy(np.ascontiguousarray(w))
        if isinstance(node, ir.Scale):     # one-to-one: each output reads one message
            self.row_l1 = int(np.abs(w).max()) if w.size else 0
        else:
            self.row_l1 = int(np.abs(w).reshape(w.shape[0], -1).sum(1).max()) if w.size else 0
        #: The synapse's own integer bias (non-zero only where it feeds a product, ir.fixed).
        self.bias = torch.from_numpy(np.asarray(f.bias, dtype=np.int64)) if np.any(f.bias) else None
        self.bias_max = int(np.abs(f.bias).max()) if self.bias is not None else 0
        self._as = {}
        #: When a dict: count of "wrap" events (outputs beyond 24/32 bits) for diagnostics.
        self.events = None
        #: True when its messages are spikes (0/1) already: the binarisation is skipped.
        self.spike_input = False

    #: Allow the exact float32/float64 products (tests switch them off: int64 everywhere).
    float_paths = True

    def _float_dtype(self, bound: int):
        return _exact_float_dtype(bound) if self.float_paths else None

    def weight_as(self, dtype):
        if dtype not in self._as:
            self._as[dtype] = self.w.to(dtype)
        return self._as[dtype]

    def __call__(self, m: torch.Tensor) -> torch.Tensor:
        node, f = self.node, self.f
        if f.num_message_bits == 0:
            if not self.spike_input:
                m = (m != 0)
            bound = self.row_l1
        else:
            bound = absmax(m) * self.row_l1
        if self.bias is not None or isinstance(node, ir.Scale):
            return self._biased(m, bound)
        if isinstance(node, ir.Linear):
            out = self._linear_float(m, bound)
            if out is not None:
                return out
            acc = self._linear(m, bound)
            if f.num_message_bits > 0:
                acc = wrap32(acc)
            out = shift(acc, f.weight_exp)
            if self.events is not None:
                self.events["wrap"] += int((out.abs() >= 2 ** 31).sum())
            return wrap32(out)
        if isinstance(node, ir.Conv2d):
            args = (node.stride, node.padding, node.dilation, node.groups)
        else:
            args = (node.stride, node.padding, (1, 1), m.shape[1])
        out = self._conv(m, bound, *args)
        if bound < 2 ** 23 and self.float_paths:   # |out| <= bound: the 24-bit wrap is the identity
            return out
        out = out.to(INT)
        if self.events is not None:
            self.events["wrap"] += int(((out < -2 ** 23) | (out >= 2 ** 23)).sum())
        return wrap24(out)

    def _biased(self, m, bound):
        """A Scale (``wrap24(shift(weight * m, weight_exp) + bias)``) or a synapse with its own bias (it feeds a
        product): the plain product, then the bias and the synapse's wrap, in int64."""
        node, f = self.node, self.f
        if isinstance(node, ir.Scale):
            dt = self._float_dtype(bound)
            out = (m.to(dt) * self.weight_as(dt)).to(INT) if dt is not None else m.to(INT) * self.w
            if f.weight_exp:
                out = shift(out, f.weight_exp)
        elif isinstance(node, ir.Linear):
            acc = self._linear(m, bound)
            out = shift(wrap32(acc) if f.num_message_bits > 0 else acc, f.weight_exp)
        else:
            args = ((node.stride, node.padding, node.dilation, node.groups) if isinstance(node, ir.Conv2d)
                    else (node.stride, node.padding, (1, 1), m.shape[1]))
            out = self._conv(m, bound, *args).to(INT)
        if self.bias is not None:
            out = out + self.bias
        return count_wrap(out, self.events, bits=32 if isinstance(node, ir.Linear) else 24)

    def _linear_float(self, m, bound):
        """Dense output kept in its exact float dtype, or None where a wrap may occur (or
        events are counted): with |acc| <= bound and |acc << e| < 2**31 neither wrap32 can
        fire, ``acc * 2**e`` is exact (a power-of-two scaling of an integer that the dtype
        holds: < 2**24 in float32, < 2**31 in float64) and floor() is the arithmetic >>."""
        dt, e = self._float_dtype(bound), self.f.weight_exp
        if dt is None or self.events is not None:
            return None
        if bound * 2 ** max(e, 0) >= (2 ** 24 if dt == torch.float32 else 2 ** 31):
            return None
        acc = F.linear(m.to(dt), self.weight_as(dt))
        if e > 0:
            return acc.mul_(2 ** e)
        if e < 0:
            return acc.mul_(2.0 ** e).floor_()
        return acc

    def _linear(self, m, bound):
        dt = self._float_dtype(bound)
        if dt is None:
            return m.to(INT) @ self.w.T
        return F.linear(m.to(dt), self.weight_as(dt)).to(INT)

    def _conv(self, m, bound, stride, padding, dilation, groups):
        dt = self._float_dtype(bound)
        if dt is not None:
            # channels-last weights: oneDNN's channels-last convs are 1.2-3.5x faster here on
            # this model's few channels, and their outputs stay channels-last (same sums)
            if ("cl", dt) not in self._as:
                self._as["cl", dt] = self.weight_as(dt).contiguous(memory_format=torch.channels_last)
            return F.conv2d(m.to(dt), self._as["cl", dt], None, stride, padding, dilation, groups)
        # int64 fallback: unfold (exact copy of the integers) then an int64 matmul per group
        n, c, h, w_ = m.shape
        co, cig, kh, kw = self.w.shape
        m = m.to(INT)
        cols = F.unfold(m.to(torch.float64), (kh, kw), dilation, padding, stride)
        if cols.abs().max() >= 2 ** 53:
            raise SnnCompileError(f"node '{self.node.name}': messages too large for exact emulation")
        cols = cols.to(INT).reshape(n, groups, cig * kh * kw, -1)
        wg = self.w.reshape(groups, co // groups, cig * kh * kw)
        out = torch.einsum("gok,ngkl->ngol", wg, cols).reshape(n, co, -1)
        ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        wo = (w_ + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        return out.reshape(n, co, ho, wo)


def input_only_nodes(graph) -> set:
    """Stateless nodes fed (without delay) only by the Input or by other such nodes: their
    values depend on the current input alone (computed once when the input is static)."""
    static = set()
    for name in graph.order():
        node, ins = graph.node(name), graph.inputs_of(name)
        if isinstance(node, ir.Input) or (
                not isinstance(node, (ir.Neuron, ir.Output)) and ins
                and all(i in static and not graph.delay(i, name) for i in ins)):
            static.add(name)
    return static


class IntegerSimulator(Simulator):
    """The reference graph walk with Loihi integer arithmetic on int64 tensors."""

    def __init__(self, graph, batch: int, record: bool = False, fused: bool = False,
                 static_input: bool = False):
        super().__init__(graph, batch, record=record)
        for state in self.neurons.values():
            state.fused = fused
        inp = graph.input
        self.input_fixed = getattr(inp, "fixed", None) or fx.InputFixed()
        #: Nodes whose value is the same at every step when the input is (``static_input``:
        #: the caller presents one image at every step): computed once, then reused.
        self.static_nodes = input_only_nodes(graph) if static_input else set()
        self._static_values: dict = {}
        self.synapses = {}
        for name in self.order:
            node = graph.node(name)
            if isinstance(node, ir.SYNAPSES + (ir.Scale,)):
                in_ch = graph.shape(self.inputs[name][0])[0]
                self.synapses[name] = _IntSynapse(node, in_ch)
                self.synapses[name].spike_input = self._spike_source(self.inputs[name][0])
        #: MatMul / Mul / ReduceSum nodes: their wrap-event counters (``events`` as synapses').
        self.products = {name: ExactOp() for name in self.order
                         if isinstance(graph.node(name), ir.PRODUCTS + (ir.ReduceSum,))}
        out = graph.output
        self.readout_fixed = getattr(out, "fixed", None) or fx.ReadoutFixed(mode=out.mode)
        self.readout_bias = _i(self.readout_fixed.bias)

    def _spike_source(self, name: str) -> bool:
        """Does ``name`` carry 0/1 spikes (a neuron's, or a binary Input's), through
        Flatten/MaxPool?"""
        node = self.graph.node(name)
        while isinstance(node, (ir.Flatten, ir.MaxPool2d)):
            name = self.inputs[name][0]
            node = self.graph.node(name)
        if isinstance(node, ir.Input):
            return self.input_fixed.num_message_bits == 0
        return isinstance(node, ir.Neuron)

    def _neuron_state(self, node, batch):
        return IntNeuronState(node, batch)

    def _record(self, name, val):
        # recorded sums stay exact integers whatever dtype the value travelled in
        super()._record(name, val.to(INT))

    def _zeros(self, shape):
        return torch.zeros(shape, dtype=INT)

    def _apply(self, node, ins, x_t):
        if node.name in self._static_values:
            return self._static_values[node.name]
        val = self._compute(node, ins, x_t)
        if node.name in self.static_nodes:
            self._static_values[node.name] = val
        return val

    def _compute(self, node, ins, x_t):
        return TABLE.lookup(node)(self, node, ins, x_t)


#: The emulator's torch engine: kind -> ``fn(sim, node, ins, x_t)``, the node's integer value.
TABLE = StageTable("emulator.torch")
@TABLE.implements(ir.Input)
def _input(sim, node, ins, x_t):
    return input_messages(x_t, sim.input_fixed)


# the same walk as the reference's: the neuron state (integer here) steps, a Flatten reshapes
TABLE.add(reference.TABLE.entries[ir.Neuron], ir.Neuron)
TABLE.add(reference.TABLE.entries[ir.Flatten], ir.Flatten)


@TABLE.implements(ir.Add)
def _add(sim, node, ins, x_t):
    # float inputs whose sum is provably below 2**24 (float32) / 2**53: the exact sum, and
    # below 2**31 the wrap32 is the identity (an exact float path: ``float_paths`` gates it)
    bound = sum(absmax(x) for x in ins)
    dt = _exact_float_dtype(bound) if _IntSynapse.float_paths else None
    if dt is not None and bound < 2 ** 31 and all(x.is_floating_point() for x in ins):
        val = ins[0].to(dt)
        for other in ins[1:]:
            val = val + other.to(dt)
        return val
    val = ins[0].to(INT)
    for other in ins[1:]:
        val = val + other.to(INT)
    return wrap32(val)


@TABLE.implements(ir.MaxPool2d)
def _maxpool2d(sim, node, ins, x_t):
    # max over integer windows; -inf padding as torch's max_pool2d (exact in float64
    # for |values| < 2**53, which int32-wrapped messages always are)
    m = ins[0]
    if not m.is_floating_point():
        m = m.to(torch.float32 if absmax(m) < 2 ** 24 else torch.float64)
    return max_pool(m, node.kernel_size, node.stride, node.padding)


@TABLE.implements(ir.Output)
def _output(sim, node, ins, x_t):
    if node.mode == "membrane":   # the integer v of the Neuron it reads (ir.fixed: Output)
        return sim.neurons[sim.inputs[node.name][0]].v.to(INT, copy=True)
    if node.mode == "potential":
        return wrap32(ins[0].to(INT)) + sim.readout_bias
    return ins[0]


@TABLE.implements(*ir.SYNAPSES, ir.Scale)
def _synapse(sim, node, ins, x_t):
    return sim.synapses[node.name](ins[0])


# layouts re-index the integers (ir.fixed): the reference's index maps work on any dtype
for _kind in (ir.Reshape, ir.Permute, ir.Slice):
    TABLE.add(reference.TABLE.entries[_kind], _kind)


def count_wrap(out: torch.Tensor, events, bits: int = 24) -> torch.Tensor:
    """``wrap24`` (or ``wrap32``) of int64 values, counting the values it changes in
    ``events["wrap"]`` when counting."""
    lim = 2 ** (bits - 1)
    if absmax(out) < lim:
        return out
    if events is not None:
        events["wrap"] += int(((out < -lim) | (out >= lim)).sum())
    return wrap24(out) if bits == 24 else wrap32(out)


class ExactOp:
    """The exact integer arithmetic of a MatMul / Mul / ReduceSum (ir.fixed): computed in a
    float dtype where every partial sum is an integer it holds exactly (``bound``), else
    int64, then the 24-bit accumulator's wrap."""

    def __init__(self):
        #: When a dict: count of "wrap" events for diagnostics (as ``_IntSynapse.events``).
        self.events = None

    def __call__(self, fn, operands, bound: int) -> torch.Tensor:
        dt = _exact_float_dtype(bound)
        if dt is None:
            out = fn(*(x.to(INT) for x in operands))
        else:
            out = fn(*(x.to(dt) for x in operands))
            if bound < 2 ** 23 and self.events is None:
                return out       # |out| <= bound: the wrap is the identity, keep the exact float
            out = out.to(INT)
        return count_wrap(out, self.events)


@TABLE.implements(ir.MatMul)
def _matmul(sim, node, ins, x_t):
    a, b = ins
    return sim.products[node.name](torch.matmul, (a, b), a.shape[-1] * absmax(a) * absmax(b))


@TABLE.implements(ir.Mul)
def _mul(sim, node, ins, x_t):
    a, b = ins
    return sim.products[node.name](torch.mul, (a, b), absmax(a) * absmax(b))


@TABLE.implements(ir.ReduceSum)
def _reduce_sum(sim, node, ins, x_t):
    (x,) = ins
    axis = node.axis % (x.dim() - 1) + 1
    return sim.products[node.name](lambda v: v.sum(axis, keepdim=node.keepdim), (x,),
                                   x.shape[axis] * absmax(x))


def max_pool(m: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """``F.max_pool2d`` of a float tensor, padded with -inf as torch pads, as two separable
    passes of elementwise maxima over strided offsets: along W, then along H (the same
    values: a max is exact; faster than torch's CPU kernel on NCHW, which also computes
    indices). A channels-last input goes to torch's channels-last kernel (3-5x faster still)."""
    if m.shape[1] > 1 and m.is_contiguous(memory_format=torch.channels_last):
        return F.max_pool2d(m, kernel, stride, padding)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        m = F.pad(m, (pw, pw, ph, ph), value=float("-inf"))
    ho, wo = (m.shape[2] - kh) // sh + 1, (m.shape[3] - kw) // sw + 1
    rows = None
    for j in range(kw):
        win = m[:, :, :, j:j + sw * (wo - 1) + 1:sw]
        rows = win.clone() if rows is None else torch.maximum(rows, win, out=rows)
    out = None
    for i in range(kh):
        win = rows[:, :, i:i + sh * (ho - 1) + 1:sh]
        out = win.clone() if out is None else torch.maximum(out, win, out=out)
    return out


def input_messages(x: torch.Tensor, f: fx.InputFixed) -> torch.Tensor:
    """Float input values -> integer messages (ir.fixed: Input)."""
    if f.num_message_bits == 0:   # one pass: the comparison writes 0/1 floats directly
        return torch.ne(x, 0, out=torch.empty(x.shape, dtype=SPIKE))
    b = f.num_message_bits
    # integer values kept in float64 (exact: |m| < 2**23); consumers convert as needed
    return torch.round(x * f.scale).clamp_(-(2 ** (b - 1)), 2 ** (b - 1) - 1)
