"""The event-driven integer kernel (numba): one sample at a time, every op of the program.

Why a compiled per-sample kernel: the torch engine steps a whole batch through one layer at a
time, so every state and activation leaves the cache between layers, and its dense convs
multiply every zero of a ~10 % dense spike map. Here one sample's values fit in L1/L2 and a
synapse only touches the fan-out of the messages that are non-zero, found through a bit map
of each value (``events.py`` lays a synapse out as runs of contiguous output channels, added
with explicit vector instructions, ``simd.py``).

Arithmetic: every value and state is int32 and every wrap of ``snncompile.ir.fixed`` is
written out -- the equations of ``integer.lif_step_exact`` and ``integer._IntSynapse``.
Synapse sums wrap modulo 2**32 (lanes of int32); that is exact because each sum is then
reduced modulo 2**24 (Conv) or 2**32 (Dense), and ``events.py`` refuses the one case that
needs the exact sum (a right-shifting Dense of spikes whose sums could pass 2**31). Shifts
are formed in int64 before their wraps; decays in float64 (exact, see ``_lif``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from .lif_vector import lif16, lif16_tail
from .simd import (add8, add16, add_selected8, add_selected16, add_selected32, add_selected64, copy8, copy16,
                   load, madd8, madd16, max16_of, nonzero_mask16, nonzero_mask64_u8, popcount, trailing_zeros)

# op kinds
(INPUT, SYNAPSE, MAXPOOL, ADD, NEURON, COPY, GATHER, SCALE, MUL, REDUCE, MATMUL, MAXPOOL_WINDOWS,
 PATCH_CONV) = range(13)
# MatMul modes: AND + popcount of two spike operands; events of one spike operand selecting
# rows of the other; a dense integer product (neither operand is spikes)
MM_POPCOUNT, MM_EVENTS, MM_DENSE = range(3)
# columns of an op row: its value slots (and their bit-map words), flag for input-only ops
# (computed at step 0 only), then per-kind arguments (see events.py)
KIND, SRC, SIZE, DST, DST_SIZE, STATIC, SRC_BITS, DST_BITS, A0, A1, A2, A3, A4, A5, A6, A7, A8, A9 = range(18)
N_COLS = 18
ALIGN = 16                        # value slots start on 64-byte boundaries (whole vectors)
DENSE_COPIES = 4                  # copies of a Dense's outputs (see _events_dense)

LIM = 2 ** 23                     # fx.STATE_MAX
M32 = 2 ** 32 - 1
M24 = 2 ** 24 - 1
NEG = -(2 ** 31)                  # the smallest int32 message: the max-pool's start value
DECAY_SCALE = 2.0 ** -12          # 1 / 4096 (see _lif)
I32_0, I32_LIM, I32_2LIM = np.int32(0), np.int32(LIM), np.int32(2 * LIM)
I32_LO, I32_HI = np.int32(-(LIM - 1)), np.int32(LIM - 1)    # the state's clamp

#: The per-op kernels (and ``_step``) are compiled without numba's reference counting
#: (``_nrt=False``): they only take views of the arrays ``run_samples`` owns and allocate
#: nothing (numba refuses to compile an allocation there). With counting, every view was an
#: atomic increment and decrement of its parent's count, ~40 an op: 115 of the 185 ns a
#: 10-neuron population cost (measured), and with one thread per core reading the same
#: tables, those counts' cache lines moved between the cores at every op.
kernel = njit(cache=True, _nrt=False)


@njit(inline="always")
def _wrap32(x):
    return ((x + 2 ** 31) & M32) - 2 ** 31


@njit(inline="always")
def _wrap24(x):
    return ((x + 2 ** 23) & M24) - 2 ** 23


@njit(inline="always")
def _pack(val, at, size, bits, wat):
    """Bit map of the non-zero values of a slot: bit b of word w is value 64 * w + b (whole
    words from four 16-lane vector compares)."""
    full = size >> 6
    for wi in range(full):
        base = at + (wi << 6)
        bits[wat + wi] = (nonzero_mask16(val, base) | (nonzero_mask16(val, base + 16) << 16)
                          | (nonzero_mask16(val, base + 32) << 32) | (nonzero_mask16(val, base + 48) << 48))
    if size & 63:                  # the last, partial word: the values past the slot masked
        base = at + (full << 6)    # off (``run_program`` allocates 64 values of room)
        word = (nonzero_mask16(val, base) | (nonzero_mask16(val, base + 16) << 16)
                | (nonzero_mask16(val, base + 32) << 32) | (nonzero_mask16(val, base + 48) << 48))
        bits[wat + full] = word & ((np.int64(1) << (size & 63)) - 1)


def _pack_messages(x_t, size, bits, wat):
    """The bit map of a step's binary input messages, read straight from the uint8 input."""


@overload(_pack_messages, inline="always")
def _pack_messages_impl(x_t, size, bits, wat):
    if x_t.dtype == types.uint8:
        def impl(x_t, size, bits, wat):
            full = size >> 6
            for wi in range(full):
                bits[wat + wi] = nonzero_mask64_u8(x_t, wi << 6)
            if size & 63:              # the last word, byte by byte: x_t ends at the row's end
                word = np.int64(0)
                for i in range(full << 6, size):
                    if x_t[i] != 0:
                        word |= np.int64(1) << (i & 63)
                bits[wat + full] = word
        return impl

    def never(x_t, size, bits, wat):   # (graded inputs copy their values: events.py)
        raise AssertionError("binary input messages are uint8")
    return never


@njit(inline="always")
def _fan_out(indptr, ip, i, e0, width):
    """The entries lo..hi of input i. Where every input lists ``width`` entries (padded:
    ``events.padded_fan_outs``) they follow from i, and the message's adds need not wait for
    a read of ``indptr`` (``e0``: the synapse's first entry). Only the 8-, 16- and 32-lane
    loops use it (each use compiles its loops twice); the others read ``indptr``."""
    if width:
        lo = e0 + i * width
        return lo, lo + width
    return load(indptr, ip + i), load(indptr, ip + i + 1)


# One small function per run width, each a single simple loop nest: several cases in one
# body made LLVM compile the whole event loop several times slower. Table entries are read
# with ``load``: numba's own indexing adds a negative-index fix-up to every access.

@kernel
def _events16(val, bits, wat, src, size, dst, indptr, ip, ent_out, ent_w, ent_len, wts, run, binary,
              width):
    """Runs of exactly 16 lanes: one 16-lane vector add each."""
    e0 = load(indptr, ip)
    for wi in range((size + 63) // 64):
        word = bits[wat + wi]
        while word != 0:
            i = wi * 64 + trailing_zeros(word)
            word &= word - 1
            lo, hi = _fan_out(indptr, ip, i, e0, width)
            if binary:
                for e in range(lo, hi):
                    add16(val, dst + load(ent_out, e), wts, load(ent_w, e))
            elif val[src + i] == 1:    # (a count of 1: no multiply)
                for e in range(lo, hi):
                    add16(val, dst + load(ent_out, e), wts, load(ent_w, e))
            else:
                m = np.int64(val[src + i])
                for e in range(lo, hi):
                    madd16(val, dst + load(ent_out, e), wts, load(ent_w, e), m)


@kernel
def _events32(val, bits, wat, src, size, dst, indptr, ip, ent_out, ent_w, ent_len, wts, run, binary,
              width):
    """Runs of exactly 32 lanes (``events.paired_runs``): two 16-lane vector adds each."""
    e0 = load(indptr, ip)
    for wi in range((size + 63) // 64):
        word = bits[wat + wi]
        while word != 0:
            i = wi * 64 + trailing_zeros(word)
            word &= word - 1
            lo, hi = _fan_out(indptr, ip, i, e0, width)
            m = np.int64(1) if binary else np.int64(val[src + i])
            if m == 1:                 # (a count of 1: no multiply)
                for e in range(lo, hi):
                    o, w = dst + load(ent_out, e), load(ent_w, e)
                    add16(val, o, wts, w)
                    add16(val, o + 16, wts, w + 16)
            else:
                for e in range(lo, hi):
                    o, w = dst + load(ent_out, e), load(ent_w, e)
                    madd16(val, o, wts, w, m)
                    madd16(val, o + 16, wts, w + 16, m)


@kernel
def _events16n(val, bits, wat, src, size, dst, indptr, ip, ent_out, ent_w, ent_len, wts, run, binary,
               width):
    """Runs of a multiple of 16 lanes: 16-lane vector adds."""
    for wi in range((size + 63) // 64):
        word = bits[wat + wi]
        while word != 0:
            i = wi * 64 + trailing_zeros(word)
            word &= word - 1
            lo, hi = load(indptr, ip + i), load(indptr, ip + i + 1)
            if binary:
                for e in range(lo, hi):
                    o, w = dst + load(ent_out, e), load(ent_w, e)
                    for q in range(run >> 4):
                        add16(val, o + (q << 4), wts, w + (q << 4))
            else:
                m = np.int64(val[src + i])
                if m == 1:             # counts of spike adds are mostly 1: no multiply
                    for e in range(lo, hi):
                        o, w = dst + load(ent_out, e), load(ent_w, e)
                        for q in range(run >> 4):
                            add16(val, o + (q << 4), wts, w + (q << 4))
                else:
                    for e in range(lo, hi):
                        o, w = dst + load(ent_out, e), load(ent_w, e)
                        for q in range(run >> 4):
                            madd16(val, o + (q << 4), wts, w + (q << 4), m)


@kernel
def _events8(val, bits, wat, src, size, dst, indptr, ip, ent_out, ent_w, ent_len, wts, run, binary,
             width):
    """Runs of exactly 8 lanes: one 8-lane vector add each."""
    e0 = load(indptr, ip)
    for wi in range((size + 63) // 64):
        word = bits[wat + wi]
        while word != 0:
            i = wi * 64 + trailing_zeros(word)
            word &= word - 1
            lo, hi = _fan_out(indptr, ip, i, e0, width)
            if binary:
                for e in range(lo, hi):
                    add8(val, dst + load(ent_out, e), wts, load(ent_w, e))
            else:
                m = np.int64(val[src + i])
                for e in range(lo, hi):
                    madd8(val, dst + load(ent_out, e), wts, load(ent_w, e), m)


@kernel
def _events_any(val, bits, wat, src, size, dst, indptr, ip, ent_out, ent_w, ent_len, wts, run, binary,
                width):
    """Runs of any length: lane by lane."""
    for wi in range((size + 63) // 64):
        word = bits[wat + wi]
        while word != 0:
            i = wi * 64 + trailing_zeros(word)
            word &= word - 1
            lo, hi = load(indptr, ip + i), load(indptr, ip + i + 1)
            if binary:
                for e in range(lo, hi):
                    o, w = dst + load(ent_out, e), load(ent_w, e)
                    for j in range(load(ent_len, e)):
                        val[o + j] += wts[w + j]
            else:
                m = np.int64(val[src + i])
                for e in range(lo, hi):
                    o, w = dst + load(ent_out, e), load(ent_w, e)
                    for j in range(load(ent_len, e)):
                        val[o + j] += m * wts[w + j]


@kernel
def _events_dense(val, bits, wat, src, size, dst, wts, w0, lanes, binary):
    """A Dense: input i adds weight row i (rows in the input's internal order, ``lanes`` a
    multiple of 16) to the outputs; no table lookups. Every input adds into the same lanes,
    so successive inputs go to DENSE_COPIES copies of the outputs in turn (``lanes`` apart,
    summed at the end): with one copy each add waits for the store of the one before."""
    k = 0
    for wi in range((size + 63) // 64):
        word = bits[wat + wi]
        while word != 0:
            i = wi * 64 + trailing_zeros(word)
            word &= word - 1
            w, at = w0 + i * lanes, dst + (k & (DENSE_COPIES - 1)) * lanes
            k += 1
            if binary or val[src + i] == 1:     # (a count of 1: no multiply)
                for q in range(lanes >> 4):
                    add16(val, at + (q << 4), wts, w + (q << 4))
            else:
                m = np.int64(val[src + i])
                for q in range(lanes >> 4):
                    madd16(val, at + (q << 4), wts, w + (q << 4), m)


@njit(inline="always")
def _add_selected_run(val, o, wts, w, stride, word, n):
    """val[o:o + n] += the weight rows w + b * stride (n lanes each) of the set bits b of
    ``word``, summed in registers: 64-, 32-, 16- and 8-lane blocks (n a multiple of 8)."""
    q = 0
    while q + 64 <= n:
        add_selected64(val, o + q, wts, w + q, stride, word)
        q += 64
    if q + 32 <= n:
        add_selected32(val, o + q, wts, w + q, stride, word)
        q += 32
    if q + 16 <= n:
        add_selected16(val, o + q, wts, w + q, stride, word)
        q += 16
    if q + 8 <= n:
        add_selected8(val, o + q, wts, w + q, stride, word)


@kernel
def _dense_words(val, bits, wat, size, dst, wts, w0, lanes):
    """A Dense of spikes: the weight rows of each bit-map word's spikes summed in registers,
    then added to the outputs once a word (``lanes`` a multiple of 16), not a vector add per
    spike into four copies of the outputs (``_events_dense``, kept for graded messages);
    measured: ``events.GROUP_SPIKES``."""
    for wi in range((size + 63) // 64):
        _add_selected_run(val, dst, wts, w0 + wi * 64 * lanes, lanes, bits[wat + wi], lanes)


@kernel
def _events_pixels(val, bits, wat, size, dst, indptr, ip, ent_out, ent_w, wts, run, c_in):
    """A conv of spikes by input pixel (``events.pixel_entries``): the entries are per pixel
    (output pixel offset, the tap's weights ``[c][run]``), and the spikes of one pixel's
    channels -- one group of ``c_in`` bits of the channel-last bit map (a power of two up
    to 64), or one word of 64 channels (``c_in`` a multiple of 64) -- are summed in
    registers per tap: one read-modify-write of the outputs per pixel and tap, not per spike,
    and tables per pixel (16x smaller at 16 channels)."""
    if c_in >= 64:
        words_per_pixel = c_in >> 6
        for wi in range((size + 63) // 64):
            word = bits[wat + wi]
            if word != 0:
                p = wi // words_per_pixel
                c0 = (wi - p * words_per_pixel) << 6
                for e in range(load(indptr, ip + p), load(indptr, ip + p + 1)):
                    _add_selected_run(val, dst + load(ent_out, e), wts, load(ent_w, e) + c0 * run, run,
                                      word, run)
        return
    shift = trailing_zeros(np.int64(c_in))
    group = (np.int64(1) << c_in) - 1
    firsts = np.int64(0)           # bit 0 of every pixel's group
    for q in range(64 >> shift):
        firsts |= np.int64(1) << (q * c_in)
    for wi in range((size + 63) // 64):
        word = bits[wat + wi]
        active = word              # the pixels with a spike: each group OR-ed into its bit 0
        s = c_in >> 1
        while s > 0:
            active |= active >> s
            s >>= 1
        active &= firsts
        while active != 0:
            j = trailing_zeros(active)
            active &= active - 1
            p = (wi * 64 + j) >> shift
            spikes = (word >> j) & group
            for e in range(load(indptr, ip + p), load(indptr, ip + p + 1)):
                _add_selected_run(val, dst + load(ent_out, e), wts, load(ent_w, e), run, spikes, run)


@kernel
def _synapse(val, bits, op, indptr, ent_out, ent_w, ent_len, wts, aux):
    src, size, dst, dst_size = op[SRC], op[SIZE], op[DST], op[DST_SIZE]
    binary, post, exp, listed, ip, run = op[A0], op[A1], op[A2], op[A3], op[A4], op[A5]
    if not listed:
        _pack(val, src, size, bits, op[SRC_BITS])
    acc = val[dst:dst + dst_size]
    grouped = op[A9]               # spikes summed per word (Dense) or per pixel (conv, c_in)
    zeros = val[dst:dst + ((run if grouped else DENSE_COPIES * run) if post == 1 else dst_size)]
    for j in range(zeros.shape[0]):
        zeros[j] = 0
    args = (val, bits, op[SRC_BITS], src, size, dst, indptr, ip, ent_out, ent_w, ent_len, wts, run,
            binary, op[A6] if post == 0 else 0)    # (A6: a conv's entries per input, or 0)
    if grouped and post == 1:
        _dense_words(val, bits, op[SRC_BITS], size, dst, wts, op[A6], run)
    elif grouped:
        _events_pixels(val, bits, op[SRC_BITS], size, dst, indptr, ip, ent_out, ent_w, wts, run, grouped)
    elif post == 1:
        _events_dense(val, bits, op[SRC_BITS], src, size, dst, wts, op[A6], run, binary)
        for c in range(1, DENSE_COPIES):
            copy = val[dst + c * run:dst + c * run + dst_size]
            for j in range(dst_size):
                acc[j] += copy[j]
    elif run == 16:
        _events16(*args)
    elif run == 32:
        _events32(*args)
    elif run > 0 and run % 16 == 0:
        _events16n(*args)
    elif run == 8:
        _events8(*args)
    else:
        _events_any(*args)
    bias = op[A7]                  # the synapse's own integer bias (it feeds a product), or -1
    if post == 0:                  # Conv / pooling: Lava Conv's 24-bit signed clamp (a wrap)
        if bias >= 0:
            for j in range(dst_size):
                acc[j] = _wrap24(np.int64(acc[j]) + aux[bias + j])
        elif not op[A8]:           # (A8: binary messages whose sums stay below 2**23: no wrap)
            for j in range(dst_size):
                acc[j] = _wrap24(acc[j])
    else:                          # Dense: the weight exponent on the sum, (the bias,) then wrap32
        for j in range(dst_size):
            a = np.int64(acc[j])
            a = a << exp if exp >= 0 else a >> (-exp)
            acc[j] = _wrap32(a + aux[bias + j] if bias >= 0 else a)


@kernel
def _maxpool(val, bits, op, indptr, ent_out):
    """Max over each window. Of spikes (a listed source: values 0 or 1) it is an OR: the
    outputs start at 0 and each spike sets its windows to 1. Of other values every input
    is compared (padding never wins: every window holds at least one input)."""
    src, size, dst, dst_size, ip = op[SRC], op[SIZE], op[DST], op[DST_SIZE], op[A4]
    acc = val[dst:dst + dst_size]
    if op[A3]:
        acc[:] = 0
        for wi in range((size + 63) // 64):
            word = bits[op[SRC_BITS] + wi]
            while word != 0:
                i = wi * 64 + trailing_zeros(word)
                word &= word - 1
                for e in range(load(indptr, ip + i), load(indptr, ip + i + 1)):
                    acc[load(ent_out, e)] = 1
        return
    acc[:] = NEG
    msgs = val[src:src + size]
    for i in range(size):
        m = msgs[i]
        for e in range(load(indptr, ip + i), load(indptr, ip + i + 1)):
            o = load(ent_out, e)
            if m > acc[o]:
                acc[o] = m


@kernel
def _maxpool_windows(val, op, aux):
    """Max-pool of a channel-last value, output pixel by output pixel: its C channels are the
    lane-wise max of its window's input pixels' C contiguous channels (16-lane vector max
    where C allows). Every window lists ``A1`` input pixels (a padded position repeats one of
    the window's inputs: max is idempotent), so no loop's trip count depends on the data;
    spikes and graded values alike (the per-spike OR it replaces: 2.2 -> 0.7 us a step on the
    shipped MNIST model's 32x14x14 pool, the same 2.5 us on its 16x28x28 one)."""
    src, dst, t, k, C, n_pix = op[SRC], op[DST], op[A0], op[A1], op[A2], op[A3]
    vec = C & ~15 if k > 1 else 0
    for p in range(n_pix):
        o = dst + p * C
        first = src + load(aux, t + p * k)
        if vec:                    # (whole vectors: a scalar copy first stalled the vector reads)
            second = src + load(aux, t + p * k + 1)
            for c in range(0, vec, 16):
                max16_of(val, o + c, val, first + c, second + c)
            for j in range(2, k):
                q = src + load(aux, t + p * k + j)
                for c in range(0, vec, 16):
                    max16_of(val, o + c, val, o + c, q + c)
        for c in range(vec, C):    # the channels past the last whole vector
            m = val[first + c]
            for j in range(1, k):
                m = max(m, val[src + load(aux, t + p * k + j) + c])
            val[o + c] = m


@njit(inline="always")
def _row_bits(bits, wat, y, H, W, pw):
    """Row ``y`` of a one-channel image's bit map (bit ``x + pw``: column x; 0 outside the
    image, and in the ``pw`` padding bits below it). The row's W bits start at bit y * W of
    the map and may run into the next word."""
    if y < 0 or y >= H:
        return np.int64(0)
    at = y * W
    k, s = wat + (at >> 6), at & 63
    row = bits[k] >> s             # (an arithmetic shift: the sign copies are masked off)
    if s + W > 64:
        row = (row & ((np.int64(1) << (64 - s)) - 1)) | (bits[k + 1] << (64 - s))
    return (row & ((np.int64(1) << W) - 1)) << pw


@njit(inline="always")
def _copy_run(val, o, wts, w, n):
    """val[o:o + n] = wts[w:w + n]: 16- and 8-lane vector copies, then lane by lane."""
    q = 0
    while q + 16 <= n:
        copy16(val, o + q, wts, w + q)
        q += 16
    if q + 8 <= n:
        copy8(val, o + q, wts, w + q)
        q += 8
    while q < n:
        val[o + q] = wts[w + q]
        q += 1


@njit(inline="always")
def _patch_rows(val, bits, wat, o, wts, tab, H, W, Ho, Wo, KH, KW, sh, sw, ph, pw, C):
    """``_patch_conv``'s loops (inlined: where the caller passes constants, LLVM specialises)."""
    mask = (np.int64(1) << KW) - 1
    for oy in range(Ho):
        y = oy * sh - ph
        r0 = _row_bits(bits, wat, y, H, W, pw)
        r1 = _row_bits(bits, wat, y + 1, H, W, pw) if KH > 1 else np.int64(0)
        r2 = _row_bits(bits, wat, y + 2, H, W, pw) if KH > 2 else np.int64(0)
        for ox in range(Wo):
            p = (r0 & mask) | ((r1 & mask) << KW) | ((r2 & mask) << (2 * KW))
            r0, r1, r2 = r0 >> sw, r1 >> sw, r2 >> sw
            _copy_run(val, o, wts, tab + p * C, C)
            o += C


@kernel
def _patch_conv(val, bits, op, wts, aux):
    """A conv of binary messages from a one-channel image (``events.patch_table``): each
    output pixel's window of input bits (at most 3 rows of KW bits, cut from the rows' bit
    maps) is the index of a precomputed row of weight sums, copied to the pixel's C
    channels. Every pixel costs the same few instructions whatever the spikes: measured on
    the spike-train MNIST conv SNN's first conv (8@3x3/2, ~13 % of the 784 inputs set), 640
    -> 280 ns a step against the per-spike fan-out (four 8-lane adds a spike). 3x3 kernels
    of 8 or 16 channels, stride 1 or 2, have loops of their own (constant shifts and copy
    widths: 440 -> 280 ns measured)."""
    h = op[A0]
    H, W, Ho, Wo, KH, KW = aux[h], aux[h + 1], aux[h + 2], aux[h + 3], aux[h + 4], aux[h + 5]
    sh, sw, ph, pw, C, tab = aux[h + 6], aux[h + 7], aux[h + 8], aux[h + 9], aux[h + 10], aux[h + 11]
    wat, o = op[SRC_BITS], op[DST]
    if KH == 3 and KW == 3 and (C == 8 or C == 16) and (sw == 1 or sw == 2):
        if C == 8:
            if sw == 1:
                _patch_rows(val, bits, wat, o, wts, tab, H, W, Ho, Wo, 3, 3, sh, 1, ph, pw, 8)
            else:
                _patch_rows(val, bits, wat, o, wts, tab, H, W, Ho, Wo, 3, 3, sh, 2, ph, pw, 8)
        elif sw == 1:
            _patch_rows(val, bits, wat, o, wts, tab, H, W, Ho, Wo, 3, 3, sh, 1, ph, pw, 16)
        else:
            _patch_rows(val, bits, wat, o, wts, tab, H, W, Ho, Wo, 3, 3, sh, 2, ph, pw, 16)
    else:
        _patch_rows(val, bits, wat, o, wts, tab, H, W, Ho, Wo, KH, KW, sh, sw, ph, pw, C)


@njit(inline="always")
def _lif(a, u, v, keep_u, keep_v, bias, vth, r_val, r_amt, to_zero, forget_u, hold_v):
    """``integer.lif_step_exact`` for one neuron: (u, v, spike); ``vth`` is the threshold
    minus 1 for ``>=``. The int32 conversions are the wraps to 32 bits. A decay
    ``rtz(x * keep / 4096)`` is ``x * (keep * 2**-12)`` in float64 converted to int32: with
    |x| < 2**31 and keep <= 4096 the product is exact (< 2**43), and the conversion truncates
    toward zero, as Lava does (cheaper than int64 products on every CPU we tried).
    ``forget_u``: keep_u is 0 (du = 4095: the current is the input alone); ``hold_v``: keep_v
    is 4096 (dv = 0: no leak, an IF neuron). The common cases, worth their own loops.
    The state's sums and clamp are int32 (``I32_*``; with numba's int64 promotion they were
    64-bit vector min/max, half the lanes per instruction); a subtractive reset stays int64
    (``v - amount`` may pass 32 bits)."""
    du = I32_0 if forget_u else np.int32(u * (keep_u * DECAY_SCALE))
    up = np.int32(du + np.int32(np.int64(a) << 6))   # (the torch engine passes float activations)
    up = np.int32(up - I32_2LIM) if up > I32_LIM else up
    up = np.int32(up + I32_2LIM) if up <= -I32_LIM else up
    dv = v if hold_v else np.int32(v * (keep_v * DECAY_SCALE))
    vn = np.int32(np.int32(dv + up) + np.int32(bias))
    vn = min(max(vn, I32_LO), I32_HI)
    s = vn > vth
    if to_zero:                    # a constant in each loop (see _lif_variants)
        return up, (r_val if s else vn), s
    return up, (np.int32(min(max(np.int64(vn) - r_amt, -(LIM - 1)), LIM - 1)) if s else vn), s


@njit(inline="always")
def _population(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val, r_amt,
                to_zero, forget_u, hold_v, shift_v):
    """One population's update and the bit map of its spikes: whole vectors of 16 neurons with
    ``lif_vector.lif16`` (their words of the bit map as they complete), the last fewer than 16
    with masked lanes (``lif16_tail``; a scalar loop of ``_lif`` here was two thirds of the
    kernel's cold compile).
    The parameters are scalars (shared) or arrays (per neuron); the flags constants (see
    ``_neuron_flags``). ``u`` is not stored where ``forget_u``: no step reads it."""
    size = a_in.shape[0]
    vec = size & ~15
    word = np.int64(0)
    for i in range(0, vec, 16):
        word |= lif16(a_in, spikes, u_, v_, i, k_u, k_v, v_shift, bias, vth, r_val, r_amt, to_zero,
                      forget_u, hold_v, shift_v) << (i & 63)
        if (i & 63) == 48:
            bits[wat + (i >> 6)] = word
            word = 0
    if vec < size:                 # the last neurons, and the last, partial word of the bit map
        word |= lif16_tail(a_in, spikes, u_, v_, vec, size - vec, k_u, k_v, v_shift, bias, vth, r_val,
                           r_amt, to_zero, forget_u, hold_v, shift_v) << (vec & 63)
    if size & 63:
        bits[wat + (size >> 6)] = word


@njit(inline="always")
def _resets(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val, r_amt,
            to_zero, forget_u, hold_v, shift_v):
    """``_neuron_flags``' inner levels: the reset mode and the current's decay as constants."""
    if to_zero:
        if forget_u:
            _population(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val,
                        r_amt, True, True, hold_v, shift_v)
        else:
            _population(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val,
                        r_amt, True, False, hold_v, shift_v)
    elif forget_u:
        _population(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val,
                    r_amt, False, True, hold_v, shift_v)
    else:
        _population(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val,
                    r_amt, False, False, hold_v, shift_v)


@njit(inline="always")
def _neuron_flags(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val, r_amt,
                  to_zero, forget_u, hold_v, shift_v):
    """``_population`` with the reset mode (to a value; subtract, which is also "none" with 0),
    the current's decay (none or a product) and the voltage's (none, a shift or a product) as
    constants, one loop each: LLVM keeps only the arithmetic that case needs (a select on a
    loop-invariant mode instead was 60 % slower on this CPU)."""
    if hold_v:
        _resets(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val, r_amt,
                to_zero, forget_u, True, False)
    elif shift_v:
        _resets(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val, r_amt,
                to_zero, forget_u, False, True)
    else:
        _resets(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, bias, vth, r_val, r_amt,
                to_zero, forget_u, False, False)


@kernel
def _neuron(val, bits, op, U, V, par):
    """One population of one sample: parameters as scalars where the population shares them
    (all of them, or all but bias and threshold: BatchNorm folded per channel), else arrays."""
    size, dst, so, po = op[SIZE], op[DST], op[A0], op[A1]
    to_zero = op[A3] == 0         # reset to a value, else subtract (no reset: subtract 0)
    a_in, spikes = val[op[SRC]:op[SRC] + size], val[dst:dst + size]
    u_, v_ = U[so:so + size], V[so:so + size]
    flags = op[A4]                 # 1: shared parameters, 2: keep_u == 0, 4: keep_v == 4096,
    forget_u, hold_v = (flags & 2) != 0, (flags & 4) != 0   # 8: shared but bias and threshold,
    shift_v = (flags & 16) != 0    # 16: a shared keep_v that is a power of two below 4096
    wat = op[DST_BITS]
    k_u, k_v, r_val, r_amt = np.int64(par[0, po]), np.int64(par[1, po]), np.int32(par[4, po]), np.int64(par[5, po])
    v_shift = 12 - trailing_zeros(k_v) if shift_v else 0
    if flags & 8:
        _neuron_flags(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, par[2, po:po + size],
                      par[3, po:po + size], r_val, r_amt, to_zero, forget_u, hold_v, shift_v)
    elif flags & 1:
        _neuron_flags(bits, a_in, spikes, u_, v_, wat, k_u, k_v, v_shift, np.int64(par[2, po]),
                      np.int64(par[3, po]), r_val, r_amt, to_zero, forget_u, hold_v, shift_v)
    else:                          # (never shift_v: keep_v differs between neurons)
        _neuron_flags(bits, a_in, spikes, u_, v_, wat, par[0, po:po + size], par[1, po:po + size],
                      0, par[2, po:po + size], par[3, po:po + size], par[4, po:po + size],
                      par[5, po:po + size], to_zero, forget_u, hold_v, False)


# -- spiking-transformer kinds (ir.fixed): index maps, Scale, Mul, ReduceSum, MatMul ----------

@kernel
def _gather(val, bits, op, aux):
    """dst[j] = val[aux[t + j]]: a layout that is not a renaming (Slice, a value needed in
    another order); with A1 also the bit map of the copied (spike) values."""
    dst, n, t = op[DST], op[SIZE], op[A0]
    for j in range(n):
        val[dst + j] = val[load(aux, t + j)]
    if op[A1]:
        _pack(val, dst, n, bits, op[DST_BITS])


@kernel
def _scale(val, op, aux):
    """Scale: ``wrap24(shift(weight * m, weight_exp) + bias)``, per element (int64); binary
    messages (``num_message_bits == 0``) are ``m != 0``. The common case (graded, no shift,
    no bias: ``* 0.125`` into a LIF) has a loop of its own."""
    src, n, dst, w, b, exp, binary = op[SRC], op[SIZE], op[DST], op[A0], op[A1], op[A2], op[A3]
    if exp == 0 and b < 0 and not binary:
        x, y = val[src:src + n], val[dst:dst + n]   # views: plain indices, loops that vectorise
        if op[A4]:                 # one mantissa for every element
            k = load(aux, w)
            for j in range(n):
                y[j] = _wrap24(np.int64(x[j]) * k)
        else:
            ws = aux[w:w + n]
            for j in range(n):
                y[j] = _wrap24(np.int64(x[j]) * ws[j])
        return
    for j in range(n):
        m = np.int64(val[src + j])
        if binary:
            m = np.int64(m != 0)
        p = m * load(aux, w + j)
        p = p << exp if exp >= 0 else p >> (-exp)
        if b >= 0:
            p += load(aux, b + j)
        val[dst + j] = _wrap24(p)


@kernel
def _mul(val, op, aux):
    """Mul: ``wrap24(a * b)`` per output element, its operands read through index tables
    (broadcast axes repeat an offset); the int64 product of two int32 values is exact."""
    n, dst, ia, ib = op[SIZE], op[DST], op[A0], op[A1]
    for j in range(n):
        val[dst + j] = _wrap24(np.int64(val[load(aux, ia + j)]) * np.int64(val[load(aux, ib + j)]))


@kernel
def _reduce(val, op, aux):
    """ReduceSum: input element i adds into output ``aux[t + i]``; int32 lanes wrap modulo
    2**32, then the 24-bit wrap (exact modulo 2**24)."""
    src, n, dst, n_out, t = op[SRC], op[SIZE], op[DST], op[DST_SIZE], op[A0]
    for j in range(n_out):
        val[dst + j] = 0
    for i in range(n):
        x = val[src + i]
        if x != 0:
            o = dst + load(aux, t + i)
            val[o] = val[o] + x
    for j in range(n_out):
        val[dst + j] = _wrap24(val[dst + j])


@njit(inline="always")
def _pack_rows(val, bits, src, size, listed, wat, tab, words):
    """Set bit ``tab[i]`` of the scratch words for every non-zero value i of a slot (through
    the slot's own bit map when it has one)."""
    if listed:
        for wi in range((size + 63) // 64):
            word = bits[wat + wi]
            while word != 0:
                i = wi * 64 + trailing_zeros(word)
                word &= word - 1
                p = load(tab, i)
                bits[words + (p >> 6)] |= np.int64(1) << (p & 63)
    else:
        for i in range(size):
            if val[src + i] != 0:
                p = load(tab, i)
                bits[words + (p >> 6)] |= np.int64(1) << (p & 63)


@kernel
def _matmul_popcount(val, bits, op, aux):
    """Both operands spikes: ``c[b, i, j] = popcount(row(a)[b, i] AND col(b)[b, j])``; the
    bit rows (and columns) over the contracted axis are packed each step from the spikes.
    With ``transposed`` the output is laid out (b, j, i)."""
    h = op[A1]
    a_src, a_size, a_tab = aux[h], aux[h + 1], aux[h + 2]
    b_src, b_size, b_tab = aux[h + 3], aux[h + 4], aux[h + 5]
    rw, cw, nw, nb, n, m = aux[h + 6], aux[h + 7], aux[h + 8], aux[h + 9], aux[h + 10], aux[h + 11]
    a_bits, b_bits, transposed = aux[h + 12], aux[h + 13], aux[h + 14]
    for w in range(nb * n * nw):
        bits[rw + w] = 0
    for w in range(nb * m * nw):
        bits[cw + w] = 0
    _pack_rows(val, bits, a_src, a_size, a_bits >= 0, a_bits, aux[a_tab:a_tab + a_size], rw)
    _pack_rows(val, bits, b_src, b_size, b_bits >= 0, b_bits, aux[b_tab:b_tab + b_size], cw)
    dst = op[DST]
    if transposed:                 # rows of the output are columns of b
        rw, cw, n, m = cw, rw, m, n
    if nw == 1:                    # (the result <= the contracted length < 2**23: no wrap)
        for b in range(nb):
            cols = bits[cw + b * m:cw + (b + 1) * m]
            for i in range(n):
                r = bits[rw + b * n + i]
                out = val[dst + (b * n + i) * m:dst + (b * n + i + 1) * m]
                if r == 0:
                    out[:] = 0
                else:
                    for j in range(m):
                        out[j] = popcount(r & cols[j])
        return
    for b in range(nb):
        for i in range(n):
            r = rw + (b * n + i) * nw
            o = dst + (b * n + i) * m
            for j in range(m):
                c = cw + (b * m + j) * nw
                s = 0
                for w in range(nw):
                    s += popcount(bits[r + w] & bits[c + w])
                val[o + j] = _wrap24(s)


@njit(inline="always")
def _add_row(val, o, t, run):
    """val[o:o + run] += val[t:t + run]: 16-lane vector adds, then the rest lane by lane."""
    q = 0
    while q + 16 <= run:
        add16(val, o + q, val, t + q)
        q += 16
    while q < run:
        val[o + q] += val[t + q]
        q += 1


@kernel
def _matmul_events(val, bits, op, aux):
    """One operand spikes: each spike adds a row of the other operand (gathered into a
    scratch slot in the needed order) to one output row -- sums of the selected values."""
    h = op[A1]
    tmp, tmp_size, g_tab = aux[h], aux[h + 1], aux[h + 2]
    ev_src, ev_size, t_tab, o_tab, run = aux[h + 3], aux[h + 4], aux[h + 5], aux[h + 6], aux[h + 7]
    for q in range(tmp_size):      # (none when the operand is laid out in row order already)
        val[tmp + q] = val[load(aux, g_tab + q)]
    dst, n_out = op[DST], op[DST_SIZE]
    for j in range(n_out):
        val[dst + j] = 0
    ev_bits = aux[h + 8]
    if ev_bits >= 0:               # the spikes' own bit map
        for wi in range((ev_size + 63) // 64):
            word = bits[ev_bits + wi]
            while word != 0:
                i = wi * 64 + trailing_zeros(word)
                word &= word - 1
                _add_row(val, dst + load(aux, o_tab + i), tmp + load(aux, t_tab + i), run)
    else:
        for i in range(ev_size):
            if val[ev_src + i] != 0:
                _add_row(val, dst + load(aux, o_tab + i), tmp + load(aux, t_tab + i), run)
    for j in range(n_out):             # int32 sums wrapped modulo 2**32: exact modulo 2**24
        val[dst + j] = _wrap24(val[dst + j])


@kernel
def _matmul_dense(val, op, aux):
    """Neither operand spikes: ``wrap24(sum_k a * b)`` with each product (int64, exact)
    reduced modulo 2**24 before the sum (no int64 overflow for any K)."""
    h = op[A1]
    ta, ta_size, tab_a, tb, tb_size, tab_b = aux[h], aux[h + 1], aux[h + 2], aux[h + 3], aux[h + 4], aux[h + 5]
    nb, n, m, k = aux[h + 6], aux[h + 7], aux[h + 8], aux[h + 9]
    for q in range(ta_size):
        val[ta + q] = val[load(aux, tab_a + q)]
    for q in range(tb_size):
        val[tb + q] = val[load(aux, tab_b + q)]
    dst = op[DST]
    for b in range(nb):
        for i in range(n):
            ra = ta + (b * n + i) * k
            for j in range(m):
                rb = tb + (b * m + j) * k
                s = np.int64(0)
                for q in range(k):
                    s += (np.int64(val[ra + q]) * np.int64(val[rb + q])) & M24
                val[dst + (b * n + i) * m + j] = _wrap24(s & M24)


@kernel
def _matmul(val, bits, op, aux):
    mode = op[A0]
    if mode == MM_POPCOUNT:
        _matmul_popcount(val, bits, op, aux)
    elif mode == MM_EVENTS:
        _matmul_events(val, bits, op, aux)
    else:
        _matmul_dense(val, op, aux)


@kernel
def _step(val, bits, U, V, x_t, t, ops, add_srcs, indptr, ent_out, ent_w, ent_len, wts, par, aux):
    for k in range(ops.shape[0]):
        op = ops[k]
        if op[STATIC] and t > 0:
            continue
        kind = op[KIND]
        if kind == INPUT:          # x_t: 0/1 (uint8) or int32 messages (events._input_messages)
            if op[A0]:             # some op reads the values, not only their bit map
                messages = val[op[DST]:op[DST] + op[SIZE]]
                for i in range(op[SIZE]):
                    messages[i] = x_t[i]
                _pack(val, op[DST], op[SIZE], bits, op[DST_BITS])
            else:
                _pack_messages(x_t, op[SIZE], bits, op[DST_BITS])
        elif kind == SYNAPSE:
            _synapse(val, bits, op, indptr, ent_out, ent_w, ent_len, wts, aux)
        elif kind == NEURON:
            _neuron(val, bits, op, U, V, par)
        elif kind == MAXPOOL:
            _maxpool(val, bits, op, indptr, ent_out)
        elif kind == MAXPOOL_WINDOWS:
            _maxpool_windows(val, op, aux)
        elif kind == PATCH_CONV:
            _patch_conv(val, bits, op, wts, aux)
        elif kind == ADD:          # int32 lanes: the sum wraps modulo 2**32, as wrap32 does
            total = val[op[DST]:op[DST] + op[SIZE]]
            first = val[add_srcs[op[A0]]:add_srcs[op[A0]] + op[SIZE]]
            for i in range(op[SIZE]):
                total[i] = first[i]
            for a in range(op[A0] + 1, op[A0] + op[A1]):
                term = val[add_srcs[a]:add_srcs[a] + op[SIZE]]
                for i in range(op[SIZE]):
                    total[i] += term[i]
        elif kind == COPY:
            source, copy = val[op[SRC]:op[SRC] + op[SIZE]], val[op[DST]:op[DST] + op[SIZE]]
            for i in range(op[SIZE]):
                copy[i] = source[i]
        elif kind == GATHER:
            _gather(val, bits, op, aux)
        elif kind == SCALE:
            _scale(val, op, aux)
        elif kind == MUL:
            _mul(val, op, aux)
        elif kind == REDUCE:
            _reduce(val, op, aux)
        elif kind == MATMUL:
            _matmul(val, bits, op, aux)


@njit(nogil=True, cache=True)
def run_samples(x, T, ops, add_srcs, indptr, ent_out, ent_w, ent_len, wts, par, aux, u_init, v_init,
                val_size, n_words, zero_ranges, out_src, out_perm, out_bias, out_potential, out_membrane,
                rec, out, counts, steps):
    """Run every sample of ``x`` (N, T or 1, input size; uint8 0/1 for binary messages, else
    int32) through the program, one after the other; fills ``out`` (N, T, outputs; float64, in
    PyTorch order: value i goes to ``out_perm[i]``) with the values at ``out_src``, or with
    ``out_membrane`` the neuron states ``V`` from ``out_src``, and, when
    ``rec`` has rows, ``counts``/``steps`` (events.py). Releases the GIL: ``events.py`` runs
    one call per thread on its own share of the samples."""
    buf = np.zeros(val_size + 64 + ALIGN, np.int32)   # room: _pack reads whole words
    skip = (-(buf.ctypes.data >> 2)) & (ALIGN - 1)
    _samples(x, T, ops, add_srcs, indptr, ent_out, ent_w, ent_len, wts, par, aux, u_init, v_init,
             buf[skip:skip + val_size], np.empty(n_words, np.int64), np.empty_like(u_init),
             np.empty_like(v_init), zero_ranges, out_src, out_perm, out_bias, out_potential,
             out_membrane, rec, out, counts, steps)


@kernel
def _samples(x, T, ops, add_srcs, indptr, ent_out, ent_w, ent_len, wts, par, aux, u_init, v_init,
             val, bits, U, V, zero_ranges, out_src, out_perm, out_bias, out_potential, out_membrane,
             rec, out, counts, steps):
    """``run_samples``' loop over its samples, in buffers it allocated; without reference
    counts (see ``kernel``): the tables are shared by every thread, and counting each view of
    them per step made the two threads' cores trade those counts' cache lines."""
    u_read = False                 # U only if a population's current decays: no other step reads it
    for k in range(ops.shape[0]):  # (the copy of both cost ~40 ns a step on the spike-train conv SNN)
        if ops[k, KIND] == NEURON and not (ops[k, A4] & 2):
            u_read = True
    for n in range(x.shape[0]):
        if u_read:
            for i in range(U.shape[0]):            # (a loop: numba's U[:] = u_init is 10x slower)
                U[i] = u_init[i]
        for i in range(V.shape[0]):
            V[i] = v_init[i]
        for r in range(zero_ranges.shape[0]):      # delayed values read 0 at step 0
            val[zero_ranges[r, 0]:zero_ranges[r, 0] + zero_ranges[r, 1]] = 0
        for t in range(T):
            _step(val, bits, U, V, x[n, t if x.shape[1] > 1 else 0], t, ops, add_srcs, indptr,
                  ent_out, ent_w, ent_len, wts, par, aux)
            out_size = out_perm.shape[0]
            readout = V[out_src:out_src + out_size] if out_membrane else val[out_src:out_src + out_size]
            for i in range(out_size):    # (float64 holds these integers exactly)
                out[n, t, out_perm[i]] = np.float64(np.int64(readout[i]) + out_bias[i] if out_potential
                                                    else readout[i])
            for r in range(rec.shape[0]):
                off, size, c_off = rec[r, 0], rec[r, 1], rec[r, 2]
                values, sums = val[off:off + size], counts[n, c_off:c_off + size]
                total = 0
                for i in range(size):
                    total += values[i]
                    sums[i] += values[i]
                steps[n, r, t] = total
