"""Explicit vector and bit operations for the event kernel, as numba intrinsics (LLVM IR).

Why: LLVM vectorises a loop with a runtime trip count in blocks of several vectors, so the
short runs of a synapse (8 or 16 output channels) ran in its scalar remainder (measured: the
conv with 16-channel runs took twice as long), and numba has no count-trailing-zeros, nor a
vector value it keeps in registers across a loop (``add_selected*``: the weight rows of a
word's spikes summed before one add to memory). These intrinsics state the width outright;
LLVM lowers them to what the CPU has (AVX-512, AVX2 or SSE), so they stay portable. Lanes
are int32 with two's-complement wrapping: exact for sums that the kernel reduces modulo
2**32 or 2**24.

Editing this file: numba's on-disk cache of ``event_kernel.py`` does not notice changes here;
touch ``event_kernel.py`` (or delete ``__pycache__/event_kernel*.nb*``) to recompile.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

I32, I64 = ir.IntType(32), ir.IntType(64)


def _int32_arrays(*arrays) -> bool:
    """The intrinsics read and write int32 lanes: refuse (a typing error) anything else."""
    return all(isinstance(a, types.Array) and a.dtype == types.int32 and a.layout == "C" for a in arrays)


def _vec_ptr(context, builder, arr_type, arr, offset, width):
    data = context.make_array(arr_type)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), ir.VectorType(I32, width).as_pointer())


def _splat(builder, scalar, width):
    vty = ir.VectorType(I32, width)
    scalar = builder.trunc(scalar, I32) if scalar.type.width > 32 else scalar
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), ir.Constant(vty, [0] * width))


def _vector_madd(width: int):
    @intrinsic
    def madd(typingctx, dst, dst_off, src, src_off, m):
        """dst[dst_off:+width] += m * src[src_off:+width] (int32 lanes)."""
        if not _int32_arrays(dst, src):
            return None

        def codegen(context, builder, sig, args):
            d, doff, s, soff, mul = args
            dp = _vec_ptr(context, builder, sig.args[0], d, doff, width)
            sp = _vec_ptr(context, builder, sig.args[2], s, soff, width)
            prod = builder.mul(builder.load(sp, align=4), _splat(builder, mul, width))
            builder.store(builder.add(builder.load(dp, align=4), prod), dp, align=4)
            return context.get_dummy_value()
        return types.void(dst, dst_off, src, src_off, m), codegen
    return madd


def _vector_store(width: int, accumulate: bool):
    @intrinsic
    def store(typingctx, dst, dst_off, src, src_off):
        """dst[dst_off:+width] += src[src_off:+width] (``accumulate``), else = (int32 lanes)."""
        if not _int32_arrays(dst, src):
            return None

        def codegen(context, builder, sig, args):
            d, doff, s, soff = args
            dp = _vec_ptr(context, builder, sig.args[0], d, doff, width)
            value = builder.load(_vec_ptr(context, builder, sig.args[2], s, soff, width), align=4)
            if accumulate:
                value = builder.add(builder.load(dp, align=4), value)
            builder.store(value, dp, align=4)
            return context.get_dummy_value()
        return types.void(dst, dst_off, src, src_off), codegen
    return store


def _selected_sum(width: int):
    @intrinsic
    def add_selected(typingctx, dst, dst_off, src, src_off, stride, word):
        """dst[dst_off:+width] += the sum, over the set bits b of ``word``, of
        src[src_off + b * stride:+width] (int32 lanes). The sum is kept in registers and
        added to ``dst`` once: several spikes of one word cost one read-modify-write."""
        if not _int32_arrays(dst, src):
            return None

        def codegen(context, builder, sig, args):
            d, doff, s, soff, step, bits = args
            vty = ir.VectorType(I32, width)
            src_data = context.make_array(sig.args[2])(context, builder, s).data
            acc = cgutils.alloca_once_value(builder, ir.Constant(vty, [0] * width))
            left = cgutils.alloca_once_value(builder, bits)
            ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(I64, [I64]), "llvm.ctpop.i64")
            cttz = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(I64, [I64, ir.IntType(1)]), "llvm.cttz.i64")
            with cgutils.for_range(builder, builder.call(ctpop, [bits])):
                cur = builder.load(left)
                b = builder.call(cttz, [cur, ir.Constant(ir.IntType(1), 1)])
                builder.store(builder.and_(cur, builder.sub(cur, ir.Constant(I64, 1))), left)
                row = builder.gep(src_data, [builder.add(soff, builder.mul(b, step))])
                row = builder.load(builder.bitcast(row, vty.as_pointer()), align=4)
                builder.store(builder.add(builder.load(acc), row), acc)
            dp = _vec_ptr(context, builder, sig.args[0], d, doff, width)
            builder.store(builder.add(builder.load(dp, align=4), builder.load(acc)), dp, align=4)
            return context.get_dummy_value()
        return types.void(dst, dst_off, src, src_off, stride, word), codegen
    return add_selected


add8, add16 = _vector_store(8, True), _vector_store(16, True)
copy8, copy16 = _vector_store(8, False), _vector_store(16, False)
madd8, madd16 = _vector_madd(8), _vector_madd(16)
add_selected8, add_selected16, add_selected32, add_selected64 = (_selected_sum(w) for w in (8, 16, 32, 64))


@intrinsic
def max16_of(typingctx, dst, dst_off, src, a_off, b_off):
    """dst[dst_off:+16] = max(src[a_off:+16], src[b_off:+16]) (signed int32 lanes); with
    ``a_off`` the destination itself, a running max."""
    if not _int32_arrays(dst, src):
        return None

    def codegen(context, builder, sig, args):
        d, doff, s, aoff, boff = args
        dp = _vec_ptr(context, builder, sig.args[0], d, doff, 16)
        a = builder.load(_vec_ptr(context, builder, sig.args[2], s, aoff, 16), align=4)
        b = builder.load(_vec_ptr(context, builder, sig.args[2], s, boff, 16), align=4)
        builder.store(builder.select(builder.icmp_signed(">", b, a), b, a), dp, align=4)
        return context.get_dummy_value()
    return types.void(dst, dst_off, src, a_off, b_off), codegen


@intrinsic
def trailing_zeros(typingctx, x):
    """Index of the lowest set bit of a non-zero int64 (``llvm.cttz``: one instruction)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(I64, [I64, ir.IntType(1)]), "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])
    return types.int64(types.int64), codegen


@intrinsic
def nonzero_mask16(typingctx, arr, off):
    """Bits 0..15 set where arr[off + l] != 0 (int32 lanes): a vector compare and a mask move."""
    if not _int32_arrays(arr):
        return None

    def codegen(context, builder, sig, args):
        a, o = args
        vty = ir.VectorType(I32, 16)
        x = builder.load(_vec_ptr(context, builder, sig.args[0], a, o, 16), align=4)
        mask = builder.icmp_signed("!=", x, ir.Constant(vty, [0] * 16))
        return builder.zext(builder.bitcast(mask, ir.IntType(16)), I64)
    return types.int64(arr, off), codegen


@intrinsic
def load(typingctx, arr, idx):
    """arr[idx] for a 1-D array without the negative-index fix-up numba adds to a signed
    index it cannot prove non-negative (every index here is)."""
    def codegen(context, builder, sig, args):
        a, i = args
        data = context.make_array(sig.args[0])(context, builder, a).data
        return builder.load(builder.gep(data, [i]))
    return arr.dtype(arr, idx), codegen


@intrinsic
def popcount(typingctx, x):
    """Number of set bits of an int64 (``llvm.ctpop``: one instruction where the CPU has it)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(I64, [I64]), "llvm.ctpop.i64")
        return builder.call(fn, [args[0]])
    return types.int64(types.int64), codegen


@intrinsic
def nonzero_mask64_u8(typingctx, arr, off):
    """Bit l set where arr[off + l] != 0, for l < 64 (uint8 lanes): one 64-byte compare."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and arr.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        a, o = args
        vty = ir.VectorType(ir.IntType(8), 64)
        data = context.make_array(sig.args[0])(context, builder, a).data
        x = builder.load(builder.bitcast(builder.gep(data, [o]), vty.as_pointer()), align=1)
        return builder.bitcast(builder.icmp_unsigned("!=", x, ir.Constant(vty, [0] * 64)), I64)
    return types.int64(arr, off), codegen
