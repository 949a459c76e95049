"""Event-driven engine of the emulator: a quantized graph compiled to flat integer tables
that ``event_kernel.run_program`` (numba) steps one sample at a time, all samples in parallel.

The same integers as the torch engine (``integer.py``) and Lava ``fixed_pt``; it differs only
in how the work is laid out:

* every value of a node lives in one int32 buffer per sample (a "slot"), in an *internal*
  order: a (C, H, W) value is stored channel-last (HWC), so the targets of one input message
  in a conv are runs of contiguous output channels; ``perm`` maps internal to PyTorch order;
  Input and Neuron ops also write a bit map of their non-zero values;
* every synapse (Linear, Conv2d, Sum/AvgPool2d) becomes, per input element, a list of
  entries (output offset, weight offset, run length): a message adds ``m * weights`` to
  those runs, and a zero message costs nothing (spikes are ~10 % dense); where every input
  lists as many entries (padded, ``padded_fan_outs``) the op carries that count (A6);
* spikes into a conv of 16, 32 or 64 input channels (or a multiple of 64) are taken a pixel
  at a time instead (``pixel_entries``, A9 = the channels): per input pixel the entries are
  (output pixel, tap), and the weight rows of that pixel's spiking channels are summed in
  registers before one add to the outputs; spikes into a Dense are taken a bit-map word
  (64 inputs) at a time the same way (A9 = 64);
* a conv of binary messages from one input channel (the first conv on MNIST spike trains)
  is a patch table instead (``patch_table``, ``K.PATCH_CONV``): each output pixel's window
  of input bits indexes a row of precomputed weight sums;
* MaxPool2d of a channel-last value runs window by window (each output pixel's channels the
  vector max of its window's input pixels); of another layout it uses the synapse geometry
  with max instead of sum; Flatten is a renaming (no op);
  recurrent (delay 1) edges read a copy of the previous step's value.

The spiking-transformer kinds (``ir.fixed``: the same integers as the torch engine):

* Reshape and Permute are renamings: the node shares its input's slot, only ``perm`` changes
  (a reshape keeps every C-order index, a permute maps them); Slice gathers the selected
  values (in the source's internal order); a synapse whose input is laid out in another order
  than channel-last gets its entry table re-sorted to that order (no copy at run time), an
  Add of differently laid out values gathers the others into the first one's order;
* MatMul of two spike operands: each step packs the rows of ``a`` and the columns of ``b`` over
  the contracted axis into bit words, then ``popcount(row AND column)``; with one spike operand
  each spike adds one row of the other operand to one output row, the sums of the selected
  values (the rows are gathered into a scratch slot unless the operand is laid out so already:
  a popcount product that feeds ``attn @ v`` through Scales writes its output transposed); of
  two graded operands a dense integer product; each then wrapped to 24 bits. Which operand is
  spikes is read off the graph (``_Builder.binary``: a Neuron's or binary Input's values
  through layouts, max-pools and ANDs), not off the ``lhs``/``rhs`` marks;
* Mul (index tables, broadcast axes repeat an offset), ReduceSum (a scatter-add), Scale
  (per-element mantissa, shift and bias) in int64 then wrap24; synapse biases (a synapse
  feeding a product) are added before the synapse's wrap.

``build_program`` refuses (``NotEventEligible``, with the reason) a graph it cannot lay out;
``targets.emulator.run`` then uses the torch engine.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from snncompile.ir import fixed as fx
from snncompile.ir import nodes as ir

from . import event_kernel as K
from .kernel_cache import cold_cache_note
from .integer import _need_fixed, input_only_nodes

#: Largest number of synapse entries (x 3 int64 arrays) the tables may hold: beyond it
#: (big images, wide convs) the tables cost more memory than the torch engine's dense convs.
MAX_ENTRIES = 5_000_000

RESET_MODES = {"zero": 0, "subtract": 1, "none": 1}


class NotEventEligible(Exception):
    """The graph cannot run on the event engine (the message says which node and why)."""


def as_int32(values, what: str) -> np.ndarray:
    """``values`` as int32 (the kernel's value and state width), or refuse the graph."""
    values = np.asarray(values, np.int64)
    if values.size and (values.min() < -2 ** 31 or values.max() >= 2 ** 31):
        raise NotEventEligible(f"{what} does not fit 32 bits")
    return values.astype(np.int32)


def hwc_perm(shape) -> np.ndarray:
    """Internal (channel-last for (C, H, W)) index -> PyTorch (C-order) index."""
    n = int(np.prod(shape))
    if len(shape) != 3:
        return np.arange(n)
    return np.arange(n).reshape(shape).transpose(1, 2, 0).reshape(-1)


@dataclass
class _Synapses:
    """The concatenated synapse tables of a program (absolute offsets)."""

    indptr: list = field(default_factory=list)
    out: list = field(default_factory=list)
    w: list = field(default_factory=list)
    length: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    n_indptr: int = 0
    n_entries: int = 0
    n_weights: int = 0

    def add(self, indptr, out, w, length, weights) -> tuple[int, int]:
        """Append one synapse's tables (relative offsets); returns its indptr offset and its
        run length (0 when the runs differ)."""
        if self.n_entries + len(out) > MAX_ENTRIES:
            raise NotEventEligible(f"synapse tables above {MAX_ENTRIES:,} entries")
        at = self.n_indptr
        self.indptr.append(np.asarray(indptr, np.int64) + self.n_entries)
        self.out.append(np.asarray(out, np.int64))
        self.w.append(np.asarray(w, np.int64) + self.n_weights)
        self.length.append(np.broadcast_to(np.asarray(length, np.int64), (len(out),)))
        self.weights.append(np.asarray(weights, np.int64).reshape(-1))
        self.n_indptr += len(indptr)
        self.n_entries += len(out)
        self.n_weights += self.weights[-1].size
        runs = np.unique(self.length[-1])
        return at, int(runs[0]) if len(runs) == 1 else 0

    def add_weights(self, weights) -> int:
        """Append weights that need no entry table (a Dense); returns their offset."""
        at = self.n_weights
        self.weights.append(np.asarray(weights, np.int64).reshape(-1))
        self.n_weights += self.weights[-1].size
        return at

    def arrays(self):
        """indptr, entry output offsets, weight offsets and run lengths (int64), weights (int32)."""
        cat = [np.concatenate(a) if a else np.zeros(0, np.int64)
               for a in (self.indptr, self.out, self.w, self.length, self.weights)]
        return [_aligned(a, t) for a, t in zip(cat, (np.int64, np.int64, np.int64, np.int64, np.int32))]


def _aligned(values, dtype) -> np.ndarray:
    """A copy of ``values`` starting on a 64-byte boundary (whole-vector loads)."""
    values = np.asarray(values, dtype).reshape(-1)
    buf = np.zeros(values.size + 64 // values.itemsize, dtype)
    skip = (-buf.ctypes.data % 64) // values.itemsize
    out = buf[skip:skip + values.size]
    out[:] = values
    return out


def conv_entries(in_shape, w_shape, stride, padding, dilation, groups):
    """Per input element (internal HWC order): the output runs of a grouped 2-D
    cross-correlation. Returns (indptr, out_offset, weight_offset, run_length); the weights
    go with ``conv_weight_rows``."""
    C, H, W = in_shape
    Co, Cig, KH, KW = w_shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    cog = Co // groups
    Ho = (H + 2 * ph - dh * (KH - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (KW - 1) - 1) // sw + 1
    if H * W * C * KH * KW // max(sh * sw, 1) > MAX_ENTRIES:
        raise NotEventEligible(f"synapse tables above {MAX_ENTRIES:,} entries")
    y, x, c, ky, kx = np.meshgrid(np.arange(H), np.arange(W), np.arange(C), np.arange(KH),
                                  np.arange(KW), indexing="ij", sparse=True)
    ny, nx = y + ph - ky * dh, x + pw - kx * dw
    oy, ox = ny // sh, nx // sw
    valid = ((ny % sh == 0) & (nx % sw == 0) & (ny >= 0) & (nx >= 0) & (oy < Ho) & (ox < Wo)
             & (c >= 0))
    full = np.broadcast_to
    p = full((y * W + x) * C + c, valid.shape)[valid]
    out = full((oy * Wo + ox) * Co + (c // Cig) * cog, valid.shape)[valid]
    w = full((((c * KH + ky) * KW + kx) * cog), valid.shape)[valid]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(p, minlength=C * H * W))])
    return indptr, out, w, cog


def reordered_rows(indptr, out, w, table_perm, value_perm):
    """A synapse's entry table (rows per input element in the internal order ``table_perm``)
    re-sorted into the internal order ``value_perm`` of the value it actually reads (a token
    layout feeding a 1x1 conv, a permuted map): the same entries, no copy of the value."""
    if np.array_equal(table_perm, value_perm):
        return indptr, out, w
    inv = np.empty(len(table_perm), np.int64)
    inv[table_perm] = np.arange(len(table_perm))
    rows = inv[value_perm]                      # value element -> its row of the table
    lens = np.diff(indptr)[rows]
    new_ptr = np.concatenate([[0], np.cumsum(lens)])
    idx = np.repeat(indptr[:-1][rows] - new_ptr[:-1], lens) + np.arange(new_ptr[-1])
    return new_ptr, np.asarray(out)[idx], np.asarray(w)[idx]


def pool_windows(in_hw, out_hw, kernel, stride, padding) -> np.ndarray:
    """(output pixels, KH * KW): the input pixel (y * W + x) of each window position; a
    position in the padding repeats the window's first input (every window holds one)."""
    (H, W), (Ho, Wo), (KH, KW), (sh, sw), (ph, pw) = in_hw, out_hw, kernel, stride, padding
    oy, ox, ky, kx = np.meshgrid(np.arange(Ho), np.arange(Wo), np.arange(KH), np.arange(KW), indexing="ij")
    iy, ix = oy * sh - ph + ky, ox * sw - pw + kx
    valid = ((iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)).reshape(Ho * Wo, KH * KW)
    pix = (iy * W + ix).reshape(Ho * Wo, KH * KW)
    if not valid.any(axis=1).all():
        raise NotEventEligible("a max-pool window lies wholly in the padding")
    first = pix[np.arange(len(pix)), np.argmax(valid, axis=1)]
    return np.where(valid, pix, first[:, None]).astype(np.int64)


def paired_runs(indptr, out, w, weights, run: int, n_out: int, budget: int = MAX_ENTRIES):
    """Each input's entries joined two by two into runs of ``2 * run`` lanes: an entry and the
    one whose outputs follow it in memory (channel-last, the next pixel of the row: a strided
    conv's odd columns feed two neighbouring pixels), their weight runs side by side; an entry
    without such a neighbour takes a zero run as its second half (adding 0 to the next pixel,
    or to ``room`` values past the slot that nothing reads). Why: per message the work is per
    entry (two table loads, an address, a loop trip) as well as its vector adds; the
    spike-train conv SNN's 16-channel conv, side by side in one process: the whole run 20.4 ->
    18.9 us a sample, one thread. Only runs of 16 lanes: each half a whole, aligned vector
    (8-lane runs paired so overlap by half a vector, which defeats store-to-load forwarding:
    no gain, measured; pairing them on aligned pixel pairs instead was 30 % slower; 32-lane
    runs paired, the shipped model's 32-channel conv: 64.9 -> 69.1 us). Returns (indptr, out, w,
    weights, run, room); the tables unchanged (room 0) for other runs, or when the joined
    table would pass ``budget`` entries or more than quadruple the weights (a 3x3 conv's grow
    x2.7 to x4)."""
    out, w = np.asarray(out, np.int64), np.asarray(w, np.int64)
    weights = np.asarray(weights, np.int64)
    counts = np.diff(indptr)
    if run != 16 or len(out) == 0:
        return indptr, out, w, weights, run, 0
    inp = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((out, inp))                  # (entries stay in their input's rows)
    inp, out, w = inp[order], out[order], w[order]
    follows = np.zeros(len(out), bool)
    follows[1:] = (inp[1:] == inp[:-1]) & (out[1:] == out[:-1] + run)
    chain_start = np.maximum.accumulate(np.where(follows, 0, np.arange(len(out))))
    right = (np.arange(len(out)) - chain_start) % 2 == 1     # 2nd, 4th, ... of a chain
    new = ~right
    group = np.cumsum(new) - 1
    n_new = int(group[-1]) + 1
    zero = len(weights)                                 # a zero run, appended below
    halves = np.full((n_new, 2), zero, np.int64)
    halves[group, right.astype(np.int64)] = w
    blocks, block = np.unique(halves, axis=0, return_inverse=True)
    if n_new > budget or len(blocks) * 2 * run > 4 * len(weights) + 2 * run:
        return indptr, out, w, weights, run, 0
    padded = np.concatenate([weights, np.zeros(run, np.int64)])
    lanes = np.arange(run)
    new_weights = np.concatenate([padded[blocks[:, 0, None] + lanes], padded[blocks[:, 1, None] + lanes]], 1)
    new_out = out[new]
    new_counts = np.bincount(inp[new], minlength=len(counts))
    room = max(0, int((new_out + 2 * run).max()) - n_out)
    return (np.concatenate([[0], np.cumsum(new_counts)]).astype(np.int64), new_out,
            block.reshape(-1).astype(np.int64) * 2 * run, new_weights.reshape(-1), 2 * run, room)


def padded_fan_outs(indptr, out, w, weights, run: int, n_out: int, budget: int = MAX_ENTRIES):
    """Every input's entry list padded to the same length, when that at most doubles the
    entries. Why: a strided conv's inputs fan out to 1, 2 or 4 output runs by the parity of
    their position, and a spike map differs step to step, so that trip count was a
    mispredicted branch at many messages (padded, measured side by side in one process: the
    spike-train conv SNN 30.6 -> 27.1 us a sample, the shipped model 105 -> 101 us, one
    thread). A padding entry adds a zero weight run (appended to ``weights``) into ``run``
    values of room past the slot's ``n_out`` that nothing reads. Returns (indptr, out, w,
    weights, room). Never past ``budget`` entries (the tables' limit)."""
    counts = np.diff(indptr)
    width = int(counts.max(initial=0))
    padded = width * len(counts)
    if run <= 0 or width == int(counts.min(initial=0)) or padded > min(2 * len(out), budget):
        return indptr, out, w, weights, 0
    slot = np.repeat(np.arange(len(counts)) * width, counts) + (np.arange(len(out)) - np.repeat(indptr[:-1], counts))
    new_out = np.full(padded, n_out, np.int64)
    new_w = np.full(padded, len(weights), np.int64)
    new_out[slot], new_w[slot] = out, w
    return (np.arange(len(counts) + 1, dtype=np.int64) * width, new_out, new_w,
            np.concatenate([np.asarray(weights, np.int64), np.zeros(run, np.int64)]), run)


#: Spikes summed in registers a bit-map word (Dense) or a pixel (conv) at a time, where the
#: layout allows (``_Builder.pixel_conv``, ``_Linear``); False: one vector add per spike
#: (kept for measurements side by side, and part of the programs' cache key). Measured side
#: by side in one process, one thread (AMD EPYC, 2026-12-03): the shipped model's 16 -> 32
#: conv 9.9 -> 6.2 us a step and its 1568 -> 10 Dense 1.40 -> 1.01 us; the spike-train conv
#: SNN's 784 -> 10 Dense 238 -> 188 ns.
GROUP_SPIKES = True
#: Fewest input channels a conv is laid out by pixel with. At 8 channels a pixel's group held
#: ~1.3 spikes and the per-spike layout (paired, padded runs) was faster: the spike-train conv
#: SNN's 8 -> 16 conv 808 -> 969 ns a step by pixel (stride 1: 1351 -> 1969); from 16 channels
#: by pixel was faster at every rate tried (16 -> 32, stride 2: 2025 -> 1481 ns; 32 -> 32:
#: 3555 -> 2874 ns, inputs firing 2-5 %).
MIN_GROUP = 16


def pixel_entries(in_shape, weight: np.ndarray, stride, padding, dilation):
    """A conv's entry table by input pixel (channel-last ``in_shape`` (C, H, W), no groups):
    per pixel y * W + x, one entry per output pixel it feeds, (that pixel's first output
    value, the tap's weight rows); weights laid out [tap][input channel][output channel], so
    channel c of a tap's rows starts c * C_out further on. Returns (indptr, out, w, weights)."""
    c_in, H, W = in_shape
    c_out, _, KH, KW = weight.shape
    indptr, out, w, _ = conv_entries((1, H, W), (c_out, 1, KH, KW), stride, padding, dilation, 1)
    rows = np.asarray(weight, np.int64).transpose(2, 3, 1, 0).reshape(-1)
    return indptr, out, np.asarray(w, np.int64) * c_in, rows


#: Largest patch table (``patch_table``, int32 values): 2 ** (KH * KW) rows of C weight sums.
PATCH_TABLE_MAX = 2 ** 15


def patch_table(weight: np.ndarray) -> np.ndarray | None:
    """(2 ** (KH * KW), C) sums of a one-input-channel conv's weights, row p summing the taps
    whose bit ``ky * KW + kx`` is set in p; None where the geometry does not suit (more than
    3 kernel rows, or a table above ``PATCH_TABLE_MAX`` values). Why: the first conv of a
    spike-train SNN on a one-channel image (MNIST) fans each input spike out to up to four
    output pixels; looking the window's bits up instead costs one vector copy a pixel
    (``event_kernel._patch_conv``)."""
    C, c_in, KH, KW = weight.shape
    if c_in != 1 or KH > 3 or (2 ** (KH * KW)) * C > PATCH_TABLE_MAX:
        return None
    taps = (np.arange(2 ** (KH * KW))[:, None] >> np.arange(KH * KW)) & 1      # (patterns, taps)
    return taps @ np.asarray(weight, np.int64).reshape(C, KH * KW).T


def _has_bias(node) -> bool:
    """Does a synapse carry an integer bias of its own (one that feeds a product)?"""
    bias = getattr(getattr(node, "fixed", None), "bias", None)
    return bias is not None and bool(np.any(bias))


def permuted(in_shape, axes, perm) -> np.ndarray:
    """The internal order of ``permute(axes)`` of a value laid out as ``perm``."""
    n = int(np.prod(in_shape))
    order = np.arange(n).reshape(in_shape).transpose(axes).reshape(-1)   # new C index -> old
    new_index = np.empty(n, np.int64)
    new_index[order] = np.arange(n)
    return new_index[perm]


def sliced(in_shape, node, perm):
    """(internal positions of the selected values in their source's order, their internal
    -> C-order map in the slice)."""
    in_shape = tuple(in_shape)
    ax = node.axis % len(in_shape)
    idx = np.indices(in_shape)[ax].reshape(-1)
    keep = (idx >= node.start) & (idx < node.stop)
    out_index = np.full(len(keep), -1, np.int64)
    out_index[keep] = np.arange(int(keep.sum()))
    sel = np.nonzero(keep[perm])[0]
    return sel, out_index[perm[sel]]


def _mm_dims(a_shape, b_shape):
    """(batch, n, k, m) of ``(..., n, k) @ (..., k, m)``."""
    return int(np.prod(a_shape[:-2])), int(a_shape[-2]), int(a_shape[-1]), int(b_shape[-1])


def conv_weight_rows(weight: np.ndarray, groups: int) -> np.ndarray:
    """Conv weights (Co, Cig, KH, KW) as rows [input channel, ky, kx] of the group's Co/groups
    output channels: the order ``conv_entries``' weight offsets index."""
    Co, Cig, KH, KW = weight.shape
    return weight.reshape(groups, Co // groups, Cig, KH, KW).transpose(0, 2, 3, 4, 1).reshape(-1)


@dataclass
class EventProgram:
    """A graph laid out for ``event_kernel.run_program`` (see the module docstring)."""

    ops: np.ndarray
    add_srcs: np.ndarray
    tables: list                  # indptr, entry out, entry w, entry length, weights
    aux: np.ndarray               # int64 tables of the transformer kinds and synapse biases
    params: np.ndarray            # (6, n): keep_u, keep_v, bias, (vth << 6) - [>=], reset value, amount
    u_init: np.ndarray
    v_init: np.ndarray
    val_size: int
    n_words: int                  # bit-map words (one bit per value of every slot)
    zero_ranges: np.ndarray       # (n, 2): value slots that must read 0 at step 0 (delayed)
    input_shape: tuple
    input_fixed: fx.InputFixed
    out_src: int
    out_perm: np.ndarray
    out_bias: np.ndarray
    out_potential: bool
    #: The readout is the membrane ``v`` of a neuron: ``out_src`` is its offset in the states.
    out_membrane: bool
    rec: np.ndarray               # (n, 3): value offset, size, counts offset
    rec_nodes: list               # (name, shape, perm) per ``rec`` row


class _Builder:
    def __init__(self, graph, record: bool, static_input: bool):
        self.g = graph
        self.static = input_only_nodes(graph) if static_input else set()
        self.ops, self.add_srcs, self.syn = [], [], _Synapses()
        self.params, self.u0, self.v0 = [], [], []
        self.n_state = 0
        self.val_size = 0
        self.n_words = 0
        #: value slot offset -> offset of its bit-map words
        self.words = {}
        self.slot, self.perm, self.prev = {}, {}, {}
        #: Slots whose ops also write the bit map of their non-zero values (Input, Neuron),
        #: and those of them that hold 0/1 only (Neuron, binary Input).
        self.listed, self.spikes = set(), set()
        #: Neuron name -> offset of its states (u, v) in the kernel's state arrays.
        self.state_at = {}
        self.record = record
        #: int64 tables of the transformer kinds (index maps, mantissas, biases, headers)
        self.aux, self.n_aux = [], 0
        self._binary = {}

    def put(self, values) -> int:
        """Append int64 ``values`` to the aux table; returns their offset."""
        values = np.asarray(values, np.int64).reshape(-1)
        at = self.n_aux
        self.aux.append(values)
        self.n_aux += values.size
        return at

    def words_scratch(self, n: int) -> int:
        """``n`` bit-map words of per-sample scratch (a MatMul's packed rows)."""
        at, self.n_words = self.n_words, self.n_words + n
        return at

    def binary(self, name: str) -> bool:
        """Does ``name`` carry 0/1 values only (a Neuron's spikes, a binary Input, through
        layouts, max-pools and ANDs)? Decides how a product is laid out."""
        if name not in self._binary:
            self._binary[name] = False          # (a cycle through delayed edges: not binary)
            node, ins = self.g.node(name), self.g.inputs_of(name)
            if isinstance(node, ir.Neuron):
                val = True
            elif isinstance(node, ir.Input):
                val = (getattr(node, "fixed", None) or fx.InputFixed()).num_message_bits == 0
            elif isinstance(node, ir.LAYOUTS + (ir.MaxPool2d, ir.Mul)):
                val = all(self.binary(i) for i in ins)
            else:
                val = False
            self._binary[name] = val
        return self._binary[name]

    def inverse(self, name: str) -> np.ndarray:
        """PyTorch (C-order) index -> internal index of ``name``'s value."""
        perm = self.perm[name]
        inv = np.empty(len(perm), np.int64)
        inv[perm] = np.arange(len(perm))
        return inv

    def alloc(self, size: int, room: int = 0) -> int:
        """A value slot of ``size`` values (plus ``room`` values that synapses may write),
        starting on a whole vector (``K.ALIGN`` values)."""
        at = -(-self.val_size // K.ALIGN) * K.ALIGN
        self.val_size = at + size + room
        self.words[at], self.n_words = self.n_words, self.n_words + (size + 63) // 64
        return at

    def op(self, kind, name, src=0, size=0, dst=0, dst_size=0, *args):
        row = [kind, src, size, dst, dst_size, int(name in self.static),
               self.words.get(src, 0), self.words.get(dst, 0), *args]
        self.ops.append(row + [0] * (K.N_COLS - len(row)))

    def source(self, src: str, dst: str) -> int:
        """The value slot ``dst`` reads ``src`` from (the previous step's copy if delayed)."""
        if self.g.delay(src, dst):
            if src not in self.prev:
                self.prev[src] = self.alloc(int(np.prod(self.g.shape(src))))
            return self.prev[src]
        return self.slot[src]

    def layouts(self) -> dict:
        """Every node's internal -> PyTorch index map, before any op is laid out (a delayed
        edge reads a node that comes later in the order). Synapses and the Input lay their
        values out themselves (channel-last images); every other node keeps the layout of its
        first input that is not delayed."""
        g, perm = self.g, {}

        def of(name):
            if name not in perm:
                node = g.node(name)
                ins = g.inputs_of(name)
                if isinstance(node, (ir.Input, ir.Conv2d, ir.SumPool2d, ir.AvgPool2d, ir.MaxPool2d)):
                    perm[name] = hwc_perm(g.shape(name))
                elif isinstance(node, (ir.Linear, ir.Mul, ir.ReduceSum)):
                    perm[name] = np.arange(int(np.prod(g.shape(name))))
                elif isinstance(node, (ir.Reshape, ir.Permute, ir.Slice)):
                    if g.delay(ins[0], name):
                        raise NotEventEligible(f"node '{name}': {node.kind} of a delayed value")
                    src = of(ins[0])
                    if isinstance(node, ir.Permute):
                        perm[name] = permuted(g.shape(ins[0]), node.perm, src)
                    elif isinstance(node, ir.Slice):
                        perm[name] = sliced(g.shape(ins[0]), node, src)[1]
                    else:
                        perm[name] = src
                elif isinstance(node, ir.MatMul):
                    perm[name] = self.matmul_layout(node)[1]
                else:
                    ready = [i for i in g.inputs_of(name) if not g.delay(i, name)]
                    if not ready:
                        raise NotEventEligible(f"node '{name}': reads delayed values only")
                    perm[name] = of(ready[0])
            return perm[name]
        for name in g.order():
            of(name)
        self.layout_of = dict(perm)
        return perm

    def build(self) -> EventProgram:
        g = self.g
        self.perm = self.layouts()
        for name in g.order():
            node = g.node(name)
            getattr(self, f"_{type(node).__name__}")(node, g.inputs_of(name))   # see _refuse_kinds
            if not np.array_equal(self.perm[name], self.layout_of[name]):   # layouts() decides
                raise AssertionError(f"node '{name}': laid out unlike layouts() said")
        for src, at in self.prev.items():      # end of step: keep the values delayed edges read
            self.op(K.COPY, "", self.slot[src], int(np.prod(g.shape(src))), at)
        self.input_values_read(g.input.name)
        out = g.output
        out_in = g.inputs_of(out.name)[0]
        readout = getattr(out, "fixed", None) or fx.ReadoutFixed(mode=out.mode)
        n_out = int(np.prod(g.shape(out_in)))
        rec, rec_nodes, c_off = [], [], 0
        if self.record:
            for name in g.order():
                if isinstance(g.node(name), ir.Output):
                    continue
                size = int(np.prod(g.shape(name)))
                rec.append((self.slot[name], size, c_off))
                rec_nodes.append((name, tuple(g.shape(name)), self.perm[name]))
                c_off += size
        params = (np.concatenate(self.params, axis=1) if self.params else np.zeros((6, 0), np.int32))
        return EventProgram(
            ops=np.asarray(self.ops, np.int64).reshape(-1, K.N_COLS),
            add_srcs=np.asarray(self.add_srcs, np.int64), tables=self.syn.arrays(),
            aux=np.concatenate(self.aux + [np.zeros(1, np.int64)]),
            params=np.ascontiguousarray(params, np.int32),
            u_init=np.concatenate(self.u0 or [np.zeros(0, np.int32)]),
            v_init=np.concatenate(self.v0 or [np.zeros(0, np.int32)]),
            val_size=self.val_size, n_words=self.n_words,
            zero_ranges=np.asarray([(at, int(np.prod(g.shape(src)))) for src, at in self.prev.items()],
                                   np.int64).reshape(-1, 2),
            input_shape=tuple(g.input.shape),
            input_fixed=getattr(g.input, "fixed", None) or fx.InputFixed(),
            out_src=self.state_at[out_in] if out.mode == "membrane" else self.slot[out_in],
            out_perm=np.ascontiguousarray(self.perm[out_in], np.int64),
            out_bias=np.broadcast_to(readout.bias, tuple(g.shape(out_in))).reshape(-1).astype(np.int64)[self.perm[out_in]],
            out_potential=out.mode == "potential", out_membrane=out.mode == "membrane",
            rec=np.asarray(rec, np.int64).reshape(-1, 3), rec_nodes=rec_nodes)

    def input_values_read(self, name: str) -> None:
        """Mark the Input op (A0) when an op reads its values; else it writes only their bit
        map, straight from the uint8 input (one 64-byte compare a word). Only the bit map is
        read when every op reading the slot is a binary synapse or a pool of spikes, the slot
        is not recorded, added or read out, and no op has aux tables (which read by offset)."""
        at = self.slot[name]
        plain_kinds = {K.INPUT, K.SYNAPSE, K.NEURON, K.MAXPOOL, K.ADD, K.COPY,   # (no aux tables
                       K.PATCH_CONV}                                           # that read values)
        readers = [row for row in self.ops if row[K.SRC] == at and row[K.KIND] != K.INPUT]
        only_bits = (at in self.spikes and not self.record and at not in self.add_srcs
                     and all(row[K.KIND] in plain_kinds for row in self.ops)
                     and all((row[K.KIND] == K.SYNAPSE and row[K.A0]) or (row[K.KIND] == K.MAXPOOL and row[K.A3])
                             or row[K.KIND] == K.PATCH_CONV
                             for row in readers)
                     and at != self.slot.get(self.g.inputs_of(self.g.output.name)[0]))
        for row in self.ops:
            if row[K.KIND] == K.INPUT:
                row[K.A0] = int(not only_bits)

    # one method per node kind -------------------------------------------------------------
    def _Input(self, node, ins):
        bits = (getattr(node, "fixed", None) or fx.InputFixed()).num_message_bits
        if bits > 32:
            raise NotEventEligible(f"node '{node.name}': {bits}-bit input messages do not fit 32 bits")
        size = int(np.prod(node.shape))
        self.slot[node.name], self.perm[node.name] = self.alloc(size), hwc_perm(node.shape)
        self.listed.add(self.slot[node.name])
        if bits == 0:
            self.spikes.add(self.slot[node.name])
        self.op(K.INPUT, node.name, 0, size, self.slot[node.name], size)

    def _new_value(self, name, perm, room: int = 0):
        self.slot[name], self.perm[name] = self.alloc(len(perm), room), perm

    def _Linear(self, node, ins):
        f = _need_fixed(node)
        w = fx.lava_dense_weights(f.weight, f.num_weight_bits)          # (out, in)
        n_out, n_in = w.shape
        binary = f.num_message_bits == 0
        if binary and f.weight_exp < 0 and np.abs(w).sum(1).max(initial=0) >= 2 ** 31:
            # the right shift needs the exact sum, which int32 sums hold only below 2**31
            # (every other case wraps to 24 or 32 bits anyway: a sum modulo 2**32 suffices)
            raise NotEventEligible(f"node '{node.name}': sums beyond 32 bits before a right shift")
        # one weight row per input, in the input's internal order, padded with zeros to a
        # multiple of 16 lanes (whole vector adds); the slot has room for the kernel's
        # copies of the outputs (``event_kernel._events_dense``)
        # copies of the outputs (``event_kernel._events_dense``); spikes sum a bit-map word's
        # rows at a time instead (``_dense_words``: rows for whole words, the last padded)
        lanes = -(-n_out // 16) * 16
        rows = np.zeros((-(-n_in // 64) * 64 if binary else n_in, lanes), np.int64)
        rows[:n_in, :n_out] = w.T[self.perm[ins[0]]]
        w0 = self.syn.add_weights(rows)
        self._new_value(node.name, np.arange(n_out), room=K.DENSE_COPIES * lanes - n_out)
        src = self.source(ins[0], node.name)
        self.op(K.SYNAPSE, node.name, src, n_in, self.slot[node.name], n_out,
                int(binary), 1, f.weight_exp, int(src in self.listed), 0, lanes, w0, self.bias_of(node),
                0, 64 if binary and GROUP_SPIKES else 0)

    def bias_of(self, node) -> int:
        """aux offset of a synapse's own integer bias in its output's internal order, or -1."""
        if not _has_bias(node):
            return -1
        bias = node.fixed.bias
        return self.put(np.broadcast_to(np.asarray(bias, np.int64), self.g.shape(node.name)).reshape(-1)
                        [self.perm[node.name]])

    def _conv_like(self, node, ins, weight, stride, padding, dilation, groups, kind=K.SYNAPSE):
        in_shape, out_shape = self.g.shape(ins[0]), self.g.shape(node.name)
        if len(in_shape) != 3:
            raise NotEventEligible(f"node '{node.name}': input of shape {in_shape} is not (C, H, W)")
        binary = int(_need_fixed(node).num_message_bits == 0) if kind == K.SYNAPSE else 0
        # binary messages: |sum| <= the row L1 of the weights; below 2**23 the wrap24 is the
        # identity (and is skipped), as in the torch engine
        row_l1 = int(np.abs(weight).reshape(weight.shape[0], -1).sum(1).max(initial=0))
        no_wrap = int(kind == K.SYNAPSE and binary and row_l1 < fx.STATE_MAX)
        if no_wrap and self.patch_conv(node, ins, weight, stride, padding, dilation, groups):
            return
        if kind == K.SYNAPSE and binary and self.pixel_conv(node, ins, weight, stride, padding, dilation,
                                                             groups, no_wrap):
            return
        indptr, out, w, run = conv_entries(in_shape, weight.shape, stride, padding, dilation, groups)
        indptr, out, w = reordered_rows(indptr, out, w, hwc_perm(in_shape), self.perm[ins[0]])
        n_out = int(np.prod(out_shape))
        rows = conv_weight_rows(weight, groups).reshape(-1)
        room = 0
        if kind == K.SYNAPSE:            # (a max-pool's table has no weights to pad)
            budget = MAX_ENTRIES - self.syn.n_entries
            indptr, out, w, rows, run, room = paired_runs(indptr, out, w, rows, run, n_out, budget)
            indptr, out, w, rows, padding = padded_fan_outs(indptr, out, w, rows, run, n_out, budget)
            room = max(room, padding)
        at, run = self.syn.add(indptr, out, w, run, rows)
        counts = np.diff(indptr)           # one length for every input's entries: the kernel
        width = int(counts[0]) if kind == K.SYNAPSE and len(counts) and np.all(counts == counts[0]) else 0
        self._new_value(node.name, hwc_perm(out_shape), room)   # finds them without indptr
        src = self.source(ins[0], node.name)
        # a synapse reads the source's bit map if it has one; a max-pool needs the values to
        # be 0/1 as well (spikes) to pool by events
        listed = src in (self.listed if kind == K.SYNAPSE else self.spikes)
        self.op(kind, node.name, src, int(np.prod(in_shape)), self.slot[node.name],
                n_out, binary, 0, 0, int(listed), at, run, width, self.bias_of(node) if kind == K.SYNAPSE else -1,
                no_wrap)

    def patch_conv(self, node, ins, weight, stride, padding, dilation, groups) -> bool:
        """Lay a conv of binary messages out as a ``K.PATCH_CONV`` op where it can be: one
        input channel with a bit map of its own (an Input or a Neuron, not delayed), a dense
        kernel (no groups, no dilation) of at most 3 rows, image rows that fit one 64-bit
        word with their padding, no bias, and sums that never wrap (the caller checks)."""
        (c_in, H, W), (C, Ho, Wo) = self.g.shape(ins[0]), self.g.shape(node.name)
        (sh, sw), (ph, pw) = stride, padding
        src = self.source(ins[0], node.name)
        table = patch_table(weight)
        if (table is None or groups != 1 or tuple(dilation) != (1, 1) or W + 2 * pw > 63
                or src not in self.listed or _has_bias(node)
                or not np.array_equal(self.perm[ins[0]], hwc_perm((c_in, H, W)))):
            return False
        _, _, KH, KW = weight.shape
        at = self.syn.add_weights(table)
        self._new_value(node.name, hwc_perm((C, Ho, Wo)))
        header = self.put([H, W, Ho, Wo, KH, KW, sh, sw, ph, pw, C, at])
        self.op(K.PATCH_CONV, node.name, src, H * W, self.slot[node.name], C * Ho * Wo, header)
        return True

    def pixel_conv(self, node, ins, weight, stride, padding, dilation, groups, no_wrap) -> bool:
        """Lay a conv of spikes out by input pixel where it can be (``pixel_entries``,
        ``event_kernel._events_pixels``): no groups, a channel-last source of 2, 4, ... 64
        channels or a multiple of 64, and outputs in whole 8-lane blocks."""
        in_shape, out_shape = tuple(self.g.shape(ins[0])), tuple(self.g.shape(node.name))
        c_in, c_out = in_shape[0], out_shape[0]
        if (not GROUP_SPIKES or groups != 1 or c_out % 8
                or not ((c_in >= MIN_GROUP and 64 % c_in == 0) or c_in % 64 == 0)
                or not np.array_equal(self.perm[ins[0]], hwc_perm(in_shape))):
            return False
        indptr, out, w, rows = pixel_entries(in_shape, weight, stride, padding, dilation)
        at, run = self.syn.add(indptr, out, w, c_out, rows)
        self._new_value(node.name, hwc_perm(out_shape))
        src = self.source(ins[0], node.name)
        self.op(K.SYNAPSE, node.name, src, int(np.prod(in_shape)), self.slot[node.name],
                int(np.prod(out_shape)), 1, 0, 0, int(src in self.listed), at, run, 0, self.bias_of(node),
                no_wrap, c_in)
        return True

    def _Conv2d(self, node, ins):
        w = np.asarray(_need_fixed(node).weight, np.int64)
        self._conv_like(node, ins, w, node.stride, node.padding, node.dilation, node.groups)

    def _pool(self, node, ins, mantissa, kind=K.SYNAPSE):
        C = self.g.shape(ins[0])[0]
        w = np.full((C, 1) + tuple(node.kernel_size), mantissa, dtype=np.int64)
        self._conv_like(node, ins, w, node.stride, node.padding, (1, 1), C, kind)

    def _SumPool2d(self, node, ins):
        self._pool(node, ins, int(_need_fixed(node).weight))

    _AvgPool2d = _SumPool2d

    def _MaxPool2d(self, node, ins):
        in_shape = tuple(self.g.shape(ins[0]))
        if not np.array_equal(self.perm[ins[0]], hwc_perm(in_shape)):
            self._pool(node, ins, 0, K.MAXPOOL)        # another layout: the per-input table
            return
        (C, H, W), out_shape = in_shape, tuple(self.g.shape(node.name))
        Ho, Wo = out_shape[1:]
        windows = pool_windows((H, W), (Ho, Wo), node.kernel_size, node.stride, node.padding)
        self._new_value(node.name, hwc_perm(out_shape))
        self.op(K.MAXPOOL_WINDOWS, node.name, self.source(ins[0], node.name), C * H * W,
                self.slot[node.name], C * Ho * Wo, self.put(windows * C), windows.shape[1], C, Ho * Wo)

    def _Flatten(self, node, ins):
        if self.g.delay(ins[0], node.name):
            raise NotEventEligible(f"node '{node.name}': Flatten of a delayed value")
        self.slot[node.name], self.perm[node.name] = self.slot[ins[0]], self.perm[ins[0]]

    def _Add(self, node, ins):
        perm = self.perm[ins[0]]
        srcs = [self.in_order(i, node.name, perm) for i in ins]
        self._new_value(node.name, perm)
        at = len(self.add_srcs)
        self.add_srcs.extend(srcs)
        self.op(K.ADD, node.name, 0, len(perm), self.slot[node.name], len(perm), at, len(ins))

    def in_order(self, src: str, dst: str, perm: np.ndarray) -> int:
        """The slot holding ``src``'s value (as ``dst`` reads it) in the internal order
        ``perm``: its own slot, or a gathered copy (labelled with ``dst``: input-only if it is)."""
        slot = self.source(src, dst)
        if np.array_equal(self.perm[src], perm):
            return slot
        return self.gather(dst, slot + self.inverse(src)[perm], slot in self.listed)

    def gather(self, name: str, offsets: np.ndarray, spikes: bool) -> int:
        """A new slot whose value j is ``val[offsets[j]]`` each step (with a bit map when the
        source's values are listed spikes)."""
        n = len(offsets)
        at = self.alloc(n)
        if spikes:
            self.listed.add(at)
            self.spikes.add(at)
        self.op(K.GATHER, name, 0, n, at, n, self.put(offsets), int(spikes))
        return at

    # spiking-transformer kinds (ir.fixed) ----------------------------------------------------
    def _renaming(self, node, ins):
        if self.g.delay(ins[0], node.name):
            raise NotEventEligible(f"node '{node.name}': {node.kind} of a delayed value")
        self.slot[node.name] = self.slot[ins[0]]

    _Reshape = _Permute = _renaming

    def _Slice(self, node, ins):
        sel, perm = sliced(self.g.shape(ins[0]), node, self.perm[ins[0]])
        src = self.source(ins[0], node.name)
        self.slot[node.name] = self.gather(node.name, src + sel, src in self.spikes)

    def _Scale(self, node, ins):
        f = _need_fixed(node)
        shape, perm = tuple(self.g.shape(node.name)), self.perm[ins[0]]

        def per_element(value):
            return np.broadcast_to(np.asarray(value, np.int64), shape).reshape(-1)[perm]
        bias = self.put(per_element(f.bias)) if np.any(f.bias) else -1
        src = self.source(ins[0], node.name)
        self._new_value(node.name, perm)
        w = per_element(f.weight)
        self.op(K.SCALE, node.name, src, len(perm), self.slot[node.name], len(perm),
                self.put(w), bias, f.weight_exp, int(f.num_message_bits == 0), int(np.all(w == w[:1])))

    def _Mul(self, node, ins):
        out_shape = tuple(self.g.shape(node.name))
        tabs = []
        for i in ins:
            shape = tuple(self.g.shape(i))
            canon = np.broadcast_to(np.arange(int(np.prod(shape))).reshape(shape), out_shape).reshape(-1)
            tabs.append(self.put(self.source(i, node.name) + self.inverse(i)[canon]))
        n = int(np.prod(out_shape))
        self._new_value(node.name, np.arange(n))
        self.op(K.MUL, node.name, 0, n, self.slot[node.name], n, *tabs)

    def _ReduceSum(self, node, ins):
        in_shape = tuple(self.g.shape(ins[0]))
        ax = node.axis % len(in_shape)
        keep = in_shape[:ax] + (1,) + in_shape[ax + 1:]
        n_out = int(np.prod(keep))
        out_of = np.broadcast_to(np.arange(n_out).reshape(keep), in_shape).reshape(-1)
        src = self.source(ins[0], node.name)
        self._new_value(node.name, np.arange(n_out))
        self.op(K.REDUCE, node.name, src, len(out_of), self.slot[node.name], n_out,
                self.put(out_of[self.perm[ins[0]]]))

    def bits_of(self, slot: int) -> int:
        """Offset of the bit map of a slot whose op writes one (listed), else -1."""
        return self.words[slot] if slot in self.listed else -1

    def feeds_row_events(self, name: str) -> bool:
        """Does ``name``'s value reach, through Scales only (elementwise, same layout), the left
        operand of a MatMul that adds its columns per spike of the right one (``attn @ v``)?
        Then a popcount MatMul lays its output out transposed and no gather is needed."""
        g = self.g
        while True:
            consumers = g.consumers(name)
            if len(consumers) != 1 or g.delay(name, consumers[0]):
                return False
            node = g.node(consumers[0])
            if isinstance(node, ir.Scale):
                name = node.name
                continue
            ins = g.inputs_of(node.name)
            return (isinstance(node, ir.MatMul) and ins[0] == name and ins[1] != name
                    and self.binary(ins[1]) and not self.binary(ins[0]))

    def matmul_layout(self, node):
        """(mode, output perm) of a MatMul: AND + popcount of two spike operands; events of the
        spike operand (the right one's output rows are columns: laid out (…, m, n)); dense."""
        a, b = self.g.inputs_of(node.name)
        nb, n, k, m = _mm_dims(self.g.shape(a), self.g.shape(b))
        bb, j, i = np.meshgrid(np.arange(nb), np.arange(m), np.arange(n), indexing="ij")
        columns = ((bb * n + i) * m + j).reshape(-1)      # internal (bb, j, i) -> C index
        if self.binary(a) and self.binary(b):
            return K.MM_POPCOUNT, columns if self.feeds_row_events(node.name) else np.arange(nb * n * m)
        if self.binary(b):
            return K.MM_EVENTS, columns
        if self.binary(a):
            return K.MM_EVENTS, np.arange(nb * n * m)
        return K.MM_DENSE, np.arange(nb * n * m)

    def _MatMul(self, node, ins):
        a, b = ins
        nb, n, k, m = _mm_dims(self.g.shape(a), self.g.shape(b))
        mode, perm = self.matmul_layout(node)
        transposed = mode == K.MM_POPCOUNT and not np.array_equal(perm, np.arange(len(perm)))
        sa, sb = self.source(a, node.name), self.source(b, node.name)
        ia, ib = self.inverse(a), self.inverse(b)
        pa, pb = self.perm[a], self.perm[b]
        # canonical (C-order) index of a[bb, i, q] and of b[bb, q, j]
        ca = lambda bb, i, q: (bb * n + i) * k + q      # noqa: E731
        cb = lambda bb, q, j: (bb * k + q) * m + j      # noqa: E731
        if mode == K.MM_POPCOUNT:
            nw = -(-k // 64)
            rw, cw = self.words_scratch(nb * n * nw), self.words_scratch(nb * m * nw)
            a_b, a_i, a_q = np.unravel_index(pa, (nb, n, k))       # internal element -> (bb, i, q)
            b_b, b_q, b_j = np.unravel_index(pb, (nb, k, m))
            hdr = [sa, len(pa), self.put((a_b * n + a_i) * nw * 64 + a_q),
                   sb, len(pb), self.put((b_b * m + b_j) * nw * 64 + b_q), rw, cw, nw, nb, n, m,
                   self.bits_of(sa), self.bits_of(sb), int(transposed)]
        elif mode == K.MM_EVENTS and self.binary(b):
            # scratch: a transposed, rows (bb, q) over i; each spike b[bb, q, j] adds row (bb, q)
            # to output row (bb, j) (the output is laid out (bb, j, i))
            bb, q, i = np.meshgrid(np.arange(nb), np.arange(k), np.arange(n), indexing="ij")
            rows = sa + ia[ca(bb, i, q).reshape(-1)]
            if np.array_equal(rows, rows[0] + np.arange(len(rows))):   # a laid out so already
                tmp, n_tmp = int(rows[0]), 0
            else:
                tmp, n_tmp = self.alloc(nb * k * n), nb * k * n
            b_b, b_q, b_j = np.unravel_index(pb, (nb, k, m))
            hdr = [tmp, n_tmp, self.put(rows), sb, len(pb), self.put((b_b * k + b_q) * n),
                   self.put((b_b * m + b_j) * n), n, self.bits_of(sb)]
        elif mode == K.MM_EVENTS:
            # scratch: b in C order, rows (bb, q) over j; each spike a[bb, i, q] adds row (bb, q)
            # to output row (bb, i)
            rows = sb + ib
            if np.array_equal(rows, rows[0] + np.arange(len(rows))):
                tmp, n_tmp = int(rows[0]), 0
            else:
                tmp, n_tmp = self.alloc(nb * k * m), nb * k * m
            a_b, a_i, a_q = np.unravel_index(pa, (nb, n, k))
            hdr = [tmp, n_tmp, self.put(rows), sa, len(pa), self.put((a_b * k + a_q) * m),
                   self.put((a_b * n + a_i) * m), m, self.bits_of(sa)]
        else:
            ta, tb = self.alloc(nb * n * k), self.alloc(nb * m * k)
            bb, j, q = np.meshgrid(np.arange(nb), np.arange(m), np.arange(k), indexing="ij")
            hdr = [ta, nb * n * k, self.put(sa + ia), tb, nb * m * k,
                   self.put(sb + ib[cb(bb, q, j).reshape(-1)]), nb, n, m, k]
        self._new_value(node.name, perm)
        self.op(K.MATMUL, node.name, 0, 0, self.slot[node.name], len(perm), mode, self.put(hdr))

    def _Neuron(self, node, ins):
        f = _need_fixed(node)
        perm = self.perm[ins[0]]
        shape = tuple(node.shape)

        def per_neuron(value, what):
            value = np.broadcast_to(np.asarray(value, np.int64), shape).reshape(-1)[perm]
            return as_int32(value, f"node '{node.name}': {what}")
        self.params.append(np.stack([per_neuron(v, what) for v, what in (
            (fx.DECAY_UNITY - (f.du + 1), "du"), (fx.DECAY_UNITY - f.dv, "dv"),
            (f.effective_bias(), "bias"),
            # v >= vth is v > vth - 1 on integers: one comparison in the kernel
            (np.left_shift(f.vth, fx.VTH_SHIFT) - int(f.compare == ">="), "threshold"),
            # no reset is a subtractive reset of 0 (the kernel knows two modes)
            (f.reset_value, "reset value"),
            (f.reset_amount if f.reset_mode == "subtract" else 0, "reset amount"))]))
        self.u0.append(per_neuron(f.u_init, "u_init"))
        self.v0.append(per_neuron(f.v_init, "v_init"))
        self._new_value(node.name, perm)
        self.listed.add(self.slot[node.name])
        self.spikes.add(self.slot[node.name])
        p_off = sum(p.shape[1] for p in self.params[:-1])
        par = self.params[-1]
        shared = np.all(par == par[:, :1], axis=1)
        flags = (int(shared.all()) | 2 * int(np.all(par[0] == 0))
                 | 4 * int(np.all(par[1] == fx.DECAY_UNITY))      # see event_kernel._neuron
                 | 8 * int(not shared.all() and bool(shared[[0, 1, 4, 5]].all()))
                 # a shared voltage decay by a power of two: a shift (event_kernel._neuron)
                 | 16 * int(bool(shared[1]) and 0 < par[1, 0] < fx.DECAY_UNITY
                            and int(par[1, 0]) & (int(par[1, 0]) - 1) == 0))
        self.op(K.NEURON, node.name, self.source(ins[0], node.name), len(perm), self.slot[node.name],
                len(perm), self.n_state, p_off, 0, RESET_MODES[f.reset_mode], flags)
        self.state_at[node.name] = self.n_state
        self.n_state += len(perm)

    def _Output(self, node, ins):
        if self.g.delay(ins[0], node.name):
            raise NotEventEligible(f"node '{node.name}': Output of a delayed value")


def build_program(graph, record: bool = False, static_input: bool = False) -> EventProgram:
    """Lay a quantized ``graph`` out for the event kernel (``NotEventEligible`` if it can't).
    The last few programs are kept, keyed by a digest of everything the layout reads (the
    graph's nodes, their parameters, edges and delays), refusals included, so evaluating a
    test set batch by batch lays the graph out once, and a graph changed in place is laid
    out again."""
    _refuse_kinds(graph)
    key = (graph_digest(graph), record, static_input, GROUP_SPIKES)
    with _PROGRAMS_LOCK:
        program = _PROGRAMS.get(key)
    if program is None:
        try:
            program = _Builder(graph, record, static_input).build()
        except NotEventEligible as refusal:   # kept too: "auto" runs would lay it out again
            program = refusal
        with _PROGRAMS_LOCK:                 # runs may come from several threads
            if len(_PROGRAMS) >= 8:
                _PROGRAMS.pop(next(iter(_PROGRAMS)))
            _PROGRAMS[key] = program
    if isinstance(program, NotEventEligible):
        raise NotEventEligible(str(program))
    return program


def _refuse_kinds(graph) -> None:
    """``NotEventEligible`` for the first node (in order) whose kind has no event layout (no
    ``_Builder`` method), before the digest: a graph run one sample at a time on the torch
    engine would otherwise be hashed for each sample only to be refused again."""
    nodes = graph.nx.nodes
    if all(hasattr(_Builder, f"_{type(nodes[n]['node']).__name__}") for n in nodes):
        return
    for name in graph.order():
        node = graph.node(name)
        if not hasattr(_Builder, f"_{type(node).__name__}"):
            raise NotEventEligible(f"node '{name}': kind {node.kind} has no event layout")


_PROGRAMS: dict = {}
_PROGRAMS_LOCK = threading.Lock()


def graph_digest(graph) -> bytes:
    """A digest of a graph's structure and every node's attributes and fixed-point
    parameters (arrays by dtype, shape and bytes), as the layout reads them: the pickle of the
    nodes without their float arrays (one C pass, ~1-2 ms for ex5's graph where walking every
    field in Python took ~15 ms, most of the cost of a run of one digit), or every field one by
    one where something does not pickle. Only a cache key: two pickles of equal graphs may
    differ (a cache miss), equal pickles are equal layouts."""
    import hashlib
    import pickle
    h = hashlib.blake2b(digest_size=20)
    nodes = graph.nx.nodes
    class _Hashing:              # the pickle goes into the hash as it is written: no copy of it
        write = h.update

    def integer_part(node):
        # the layout reads the integers (``node.fixed``) and the geometry, never a node's float
        # parameters (weights, BatchNorm-folded biases, float thresholds): leave those out
        return type(node).__name__, {k: v for k, v in vars(node).items()
                                     if not (isinstance(v, np.ndarray) and v.dtype.kind == "f")}
    try:
        pickle.Pickler(_Hashing(), protocol=pickle.HIGHEST_PROTOCOL).dump(
            (graph.timesteps, [integer_part(nodes[n]["node"]) for n in nodes],
             [(a, b, d.get("index"), d.get("delay", 0)) for a, b, d in graph.nx.edges(data=True)]))
        return b"p" + h.digest()
    except Exception:       # noqa: BLE001 (an unpicklable attribute: the field walk below)
        h = hashlib.blake2b(digest_size=20)

    def feed(value):
        if isinstance(value, np.ndarray):
            h.update(f"{value.dtype}{value.shape}".encode())
            h.update(np.ascontiguousarray(value).tobytes())
        elif hasattr(value, "__dataclass_fields__"):
            h.update(type(value).__name__.encode())
            for name in value.__dataclass_fields__:
                h.update(name.encode())
                feed(getattr(value, name))
        else:
            h.update(repr(value).encode())
    feed(graph.timesteps)
    for name in graph.order():
        feed(graph.node(name))
        for src in graph.inputs_of(name):
            feed((src, name, graph.delay(src, name)))
    return h.digest()


def _input_messages(prog: EventProgram, chunk: np.ndarray) -> np.ndarray:
    """(n, steps, input size) messages in the internal order: uint8 0/1 for binary messages
    (x != 0), else int32."""
    import torch

    from .integer import input_messages
    if prog.input_fixed.num_message_bits:
        writable = np.require(chunk, requirements=["C", "W"])   # a static input is a view
        chunk = input_messages(torch.from_numpy(writable), prog.input_fixed).numpy().astype(np.int32)
    elif chunk.dtype != np.uint8:
        chunk = (chunk != 0).view(np.uint8)
    n, steps = chunk.shape[:2]
    shape = prog.input_shape
    if len(shape) == 3 and shape[0] > 1:                  # (C, H, W) -> channel-last
        chunk = chunk.reshape((n, steps) + shape).transpose(0, 1, 3, 4, 2)
    return np.ascontiguousarray(chunk.reshape(n, steps, -1))


#: Samples per task handed to a worker thread. Measured side by side in one process (2
#: threads, 4,096 spike trains of the spike-train conv SNN, Intel VM, 2026-12-04): tasks of 64
#: (ending in tasks of 16) 11.1-11.2 us a sample, of 256 (ending in 64s) 10.5-10.6 us, of 1,024
#: 10.4-10.5 us: a task's set-up (the call, its buffers, handing the GIL between threads) and
#: its first samples' cold caches are not noise at 64.
CHUNK = 256
#: The tasks that end a run (so that the threads finish together), and the fewest samples a
#: thread is started for.
SMALL_TASK = 64


def task_ranges(n: int, threads: int) -> list[tuple[int, int]]:
    """The samples' tasks: CHUNK each, but the last ``2 * threads * CHUNK`` samples in tasks
    of SMALL_TASK, so that the threads finish together (a CLI run calls ``run_program`` once
    per chunk of its data: with whole tasks to the end, one thread idled half a task each
    time)."""
    head = n - (0 if threads == 1 else min(n, 2 * threads * CHUNK))
    return ([(lo, min(lo + CHUNK, head)) for lo in range(0, head, CHUNK)]
            + [(lo, min(lo + SMALL_TASK, n)) for lo in range(head, n, SMALL_TASK)])


def run_program(prog: EventProgram, xs: np.ndarray, T: int):
    """Run prepared inputs ``xs`` (N, T or 1 when static, *input shape; float64, or uint8
    for binary messages) on ``torch.get_num_threads()`` threads: (outputs (N, T, n_out)
    float64, layer_counts, layer_steps) in the format of ``targets.reference.simulate``."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    n, n_rec = xs.shape[0], prog.rec.shape[0]
    c_size = int(prog.rec[:, 1].sum()) if n_rec else 0
    outputs = np.empty((n, T, len(prog.out_perm)), np.float64)
    cnt = np.zeros((n, c_size), np.int64)
    stp = np.zeros((n, n_rec, T), np.int64)

    def task(lo_hi):
        lo, hi = lo_hi
        K.run_samples(_input_messages(prog, xs[lo:hi]), T, prog.ops, prog.add_srcs, *prog.tables,
                      prog.params, prog.aux, prog.u_init, prog.v_init, prog.val_size, max(prog.n_words, 1),
                      prog.zero_ranges, prog.out_src, prog.out_perm, prog.out_bias,
                      prog.out_potential, prog.out_membrane, prog.rec, outputs[lo:hi], cnt[lo:hi], stp[lo:hi])
    note = cold_cache_note(np.int32 if prog.input_fixed.num_message_bits else np.uint8)
    if note:
        print(note, file=sys.stderr, flush=True)
    threads = max(1, min(torch.get_num_threads(), -(-n // SMALL_TASK)))
    tasks = task_ranges(n, threads)
    if threads == 1:
        for lo_hi in tasks:
            task(lo_hi)
    else:
        pool = ThreadPoolExecutor(threads)
        try:
            list(pool.map(task, tasks))
        finally:   # on a stop signal (or an error) the queued chunks are dropped, not run
            pool.shutdown(wait=True, cancel_futures=True)
    layer_counts, layer_steps = {}, {}
    for r, (name, shape, perm) in enumerate(prog.rec_nodes):
        _, size, c_off = prog.rec[r]
        canon = np.empty((n, size), np.float64)
        canon[:, perm] = cnt[:, c_off:c_off + size]
        layer_counts[name] = canon.reshape((n,) + shape)
        layer_steps[name] = stp[:, r].astype(np.float64)
    return outputs, layer_counts, layer_steps
