"""The event kernel's neuron update on 16 neurons at once, as one numba intrinsic (LLVM IR).

Why: LLVM vectorises ``event_kernel._lif``'s loop 8 lanes wide on this CPU (its cost model
prefers 256-bit vectors even where the CPU has AVX-512), and the update is bound by its
~25 instructions a vector, not by memory. Written as 16-lane vector IR, LLVM emits whole
AVX-512 (or pairs of AVX2) instructions; and the spikes' bit map comes out of the same
compare, so the population is not read again to pack it.

The arithmetic is ``event_kernel._lif``'s (``integer.lif_step_exact``), lane by lane: int32
lanes wrap as its int32 conversions do; the decays are float64 products truncated toward
zero (exact, see ``_lif``). One difference of form, not of result: a subtractive reset's
amount is first clamped to +-2**24, so that ``v - amount`` fits 32 bits (|v| < 2**23: the
clamped result is the same). ``tests/test_emulator_events.py`` holds the two equal.

The last neurons of a population (fewer than 16) take the same update with masked loads and
stores (``lif16_tail``): a scalar loop there, in each of the kernel's 36 specialised
populations, was two thirds of the kernel's cold compile (LLVM vectorised and unrolled every
one of them; measured on a 2-vCPU VM: the uint8 kernel 112 -> 30 s, ``python -m
snncompile.targets.emulator`` 124 -> 47 s).

Editing this file: numba's on-disk cache of ``event_kernel.py`` does not notice changes
here; touch ``event_kernel.py`` (and ``lif_kernel.py``) to recompile.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import _int32_arrays, _splat, _vec_ptr

LANES = 16
I16, I32, I64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
V32, VF64 = ir.VectorType(I32, LANES), ir.VectorType(ir.DoubleType(), LANES)
VMASK = ir.VectorType(ir.IntType(1), LANES)
LIM = 2 ** 23                      # fx.STATE_MAX


def _vec(value) -> ir.Constant:
    return ir.Constant(V32, [value] * LANES)


class _Lanes:
    """Loads and stores of 16 int32 lanes at index ``i`` of 1-D int32 arrays; with ``mask``
    (16 x i1) only the lanes it sets: masked loads (0 elsewhere) and stores, which never
    touch memory past the population's end."""

    def __init__(self, context, builder, i, mask=None):
        self.context, self.builder, self.i, self.mask = context, builder, i, mask

    def _ptr(self, arr_type, arr):
        return _vec_ptr(self.context, self.builder, arr_type, arr, self.i, LANES)

    def load(self, arr_type, arr):
        ptr = self._ptr(arr_type, arr)
        if self.mask is None:
            return self.builder.load(ptr, align=4)
        fnty = ir.FunctionType(V32, [ptr.type, I32, VMASK, V32])
        name = "llvm.masked.load.v16i32." + _mangled(ptr)
        fn = cgutils.get_or_insert_function(self.builder.module, fnty, name)
        return self.builder.call(fn, [ptr, ir.Constant(I32, 4), self.mask, _vec(0)])

    def store(self, value, arr_type, arr):
        ptr = self._ptr(arr_type, arr)
        if self.mask is None:
            self.builder.store(value, ptr, align=4)
            return
        fnty = ir.FunctionType(ir.VoidType(), [V32, ptr.type, I32, VMASK])
        name = "llvm.masked.store.v16i32." + _mangled(ptr)
        fn = cgutils.get_or_insert_function(self.builder.module, fnty, name)
        self.builder.call(fn, [value, ptr, ir.Constant(I32, 4), self.mask])

    def param(self, typ, value):
        """A parameter: 16 lanes of a per-neuron array, or a scalar repeated."""
        return self.load(typ, value) if isinstance(typ, types.Array) else _splat(self.builder, value, LANES)


def _mangled(ptr) -> str:
    """The pointer's part of a masked load/store intrinsic's name: typed pointers (LLVM 14/15,
    numba 0.60/0.61) spell the pointee, opaque ones do not."""
    return "p0" if getattr(ptr.type, "is_opaque", False) else "p0v16i32"


def _min(builder, a, b):
    return builder.select(builder.icmp_signed("<", a, b), a, b)


def _max(builder, a, b):
    return builder.select(builder.icmp_signed(">", a, b), a, b)


def _decay(builder, x, keep):
    """rtz(x * keep / 4096) on int32 lanes: float64 product, truncated toward zero."""
    scale = builder.fmul(builder.sitofp(keep, VF64), ir.Constant(VF64, [2.0 ** -12] * LANES))
    return builder.fptosi(builder.fmul(builder.sitofp(x, VF64), scale), V32)


def _lif_lanes(a_in, spikes, u, v, i, n, keep_u, keep_v, v_shift, bias, vth, r_val, r_amt,
               to_zero, forget_u, hold_v, shift_v):
    """Neurons i..i+15 of a population: reads ``a_in``, updates ``u`` and ``v`` in place
    (``u`` is not written where ``forget_u``: no step reads it), writes ``spikes`` (0/1);
    returns the 16 spike bits (bit l: neuron i + l) as an int64. The parameters are int32
    arrays indexed like the states, or integer scalars shared by the population; the three
    flags are the constants of ``event_kernel._lif``, and ``shift_v``: ``keep_v`` is
    ``2 ** (12 - v_shift)`` (its decay is an arithmetic shift that rounds toward zero: 3
    instructions instead of the float product's 11 a vector; tau = 2 is SpikingJelly's
    default). ``n``: None for 16 whole lanes, else the integer count of lanes below 16 that
    ``lif16_tail`` updates (the others are neither read nor written; their bits are 0).
    The (signature, codegen) of both intrinsics."""
    params = (keep_u, keep_v, bias, vth, r_val, r_amt)
    if not (_int32_arrays(a_in, spikes, u, v) and isinstance(v_shift, types.Integer)
            and all(isinstance(p, types.Integer) or _int32_arrays(p) for p in params)
            and (n is None or isinstance(n, types.Integer))):
        return None
    masked = n is not None

    def codegen(context, builder, sig, args):
        arg_types = list(sig.args)
        args = list(args)
        mask = None
        if masked:             # lanes 0..n-1
            count, count_type = args.pop(5), arg_types.pop(5)
            count = context.cast(builder, count, count_type, types.int32)
            lane = ir.Constant(V32, list(range(LANES)))
            mask = builder.icmp_unsigned("<", lane, _splat(builder, count, LANES))
        a_t, s_t, u_t, v_t, _, ku_t, kv_t, _, *p_t = arg_types[:12]
        a_a, s_a, u_a, v_a, idx, ku_a, kv_a, shift, *p_a = args[:12]
        to_zero_, forget_u_, hold_v_, shift_v_ = args[12:]
        lanes = _Lanes(context, builder, idx, mask)
        k_u, k_v = lanes.param(ku_t, ku_a), lanes.param(kv_t, kv_a)
        b, th, r_value, r_amount = (lanes.param(t, a) for t, a in zip(p_t, p_a))
        a = lanes.load(a_t, a_a)
        u_old, v_old = lanes.load(u_t, u_a), lanes.load(v_t, v_a)
        du = builder.select(forget_u_, _vec(0), _decay(builder, u_old, k_u))
        up = builder.add(du, builder.shl(a, _vec(6)))
        up = builder.select(builder.icmp_signed(">", up, _vec(LIM)), builder.sub(up, _vec(2 * LIM)), up)
        up = builder.select(builder.icmp_signed("<=", up, _vec(-LIM)), builder.add(up, _vec(2 * LIM)), up)
        s = _splat(builder, shift, LANES)
        halved = builder.ashr(builder.add(v_old, builder.lshr(builder.ashr(v_old, _vec(31)),
                                                              builder.sub(_vec(32), s))), s)
        dv = builder.select(hold_v_, v_old, builder.select(shift_v_, halved, _decay(builder, v_old, k_v)))
        vn = builder.add(builder.add(dv, up), b)
        vn = _min(builder, _max(builder, vn, _vec(-(LIM - 1))), _vec(LIM - 1))
        fired = builder.icmp_signed(">", vn, th)
        if masked:
            fired = builder.and_(fired, mask)
        amount = _min(builder, _max(builder, r_amount, _vec(-2 ** 24)), _vec(2 ** 24))
        subtracted = _min(builder, _max(builder, builder.sub(vn, amount), _vec(-(LIM - 1))), _vec(LIM - 1))
        after = builder.select(to_zero_, r_value, subtracted)
        lanes.store(builder.select(fired, after, vn), v_t, v_a)
        with builder.if_then(builder.not_(forget_u_)):
            lanes.store(up, u_t, u_a)
        lanes.store(builder.zext(fired, V32), s_t, s_a)
        return builder.zext(builder.bitcast(fired, I16), I64)

    lanes_args = (a_in, spikes, u, v, i) + (() if n is None else (n,))
    sig = types.int64(*lanes_args, keep_u, keep_v, v_shift, bias, vth, r_val, r_amt,
                      to_zero, forget_u, hold_v, shift_v)
    return sig, codegen


@intrinsic
def lif16(typingctx, a_in, spikes, u, v, i, keep_u, keep_v, v_shift, bias, vth, r_val, r_amt,
          to_zero, forget_u, hold_v, shift_v):
    """Neurons i..i+15 (see ``_lif_lanes``)."""
    return _lif_lanes(a_in, spikes, u, v, i, None, keep_u, keep_v, v_shift, bias, vth, r_val, r_amt,
                      to_zero, forget_u, hold_v, shift_v)


@intrinsic
def lif16_tail(typingctx, a_in, spikes, u, v, i, n, keep_u, keep_v, v_shift, bias, vth, r_val, r_amt,
               to_zero, forget_u, hold_v, shift_v):
    """Neurons i..i+n-1, n < 16: the last of a population (see ``_lif_lanes``)."""
    return _lif_lanes(a_in, spikes, u, v, i, n, keep_u, keep_v, v_shift, bias, vth, r_val, r_amt,
                      to_zero, forget_u, hold_v, shift_v)
