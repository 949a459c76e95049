"""Synapse wiring on cores: which source neurons a range of target neurons reads, and how many
weights each source axon stores on that core.

Why a module of its own: every per-core number (input axons, synapse memory, synaptic ops,
output axons of the source, messages between cores) follows from one question: for the
target neurons ``[start, stop)`` (flat, C-major), how many of them does each source element
feed? :meth:`Geometry.fanin` answers it as a list of :class:`Entry` (a channel range of the
source with one spatial count map), without building a (targets x sources) matrix, so that
a million-neuron layer maps in seconds.

A source is seen as ``(channels, positions)``: ``(C_in, H*W)`` for a conv/pool input,
``(1, n)`` for a dense one; its flat order is PyTorch's C-major order in both cases.
Every tap of a kernel that falls inside the input counts as a stored weight (zeros too:
nengo-loihi stores full kernels), taps in the padding do not.

The spiking-transformer wiring adds :class:`Sparse` (explicit one-weight synapses, CSR by
target: product-unit operands, masks, sums of ones, one-to-one reads through a layout) and
:class:`Mapped` (a Dense/Conv whose input or output passes through Reshape/Permute/Slice);
both report counts in the source population's flat order, as ``(1, n)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass
class Entry:
    """Source channels ``[c0, c1)`` each feed, at position p, ``counts[p]`` target neurons."""

    c0: int
    c1: int
    counts: np.ndarray       # (positions,) int64


class Geometry:
    """Base: a synapse from a source of ``source_shape`` (channels, positions) to ``n_targets``."""

    kind = "dense"           # "dense" | "conv": which synop energy and memory layout applies
    source_shape: tuple[int, int]
    n_targets: int

    def fanin(self, start: int, stop: int) -> list[Entry]:
        raise NotImplementedError


@dataclass
class Dense(Geometry):
    """Every target reads every source element (Linear)."""

    n_sources: int
    n_targets: int
    kind = "dense"

    @property
    def source_shape(self):
        return (1, self.n_sources)

    @property
    def synapses(self) -> int:
        return self.n_sources * self.n_targets

    def fanin(self, start, stop):
        return [Entry(0, 1, np.full(self.n_sources, stop - start, dtype=np.int64))]


@dataclass
class Identity(Geometry):
    """Target i reads source i only (a neuron fed straight by another population or the input)."""

    n_targets: int
    kind = "dense"

    @property
    def source_shape(self):
        return (1, self.n_targets)

    @property
    def synapses(self) -> int:
        return self.n_targets

    def fanin(self, start, stop):
        counts = np.zeros(self.n_targets, dtype=np.int64)
        counts[start:stop] = 1
        return [Entry(0, 1, counts)]


def _footprint_prefix(n_out: int, n_in: int, k: int, stride: int, pad: int, dil: int) -> np.ndarray:
    """(n_out + 1, n_in): row o = how often each input index is read by outputs ``[0, o)``."""
    rows = np.zeros((n_out + 1, n_in), dtype=np.int64)
    taps = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :] * dil
    for o in range(n_out):
        t = taps[o][(taps[o] >= 0) & (taps[o] < n_in)]
        np.add.at(rows[o + 1], t, 1)
    return np.cumsum(rows, axis=0)


@dataclass
class Conv(Geometry):
    """A 2-D convolution (or a pooling window: ``groups == channels``, one tap per window cell)."""

    in_shape: tuple[int, int, int]      # (C_in, H, W)
    out_shape: tuple[int, int, int]     # (C_out, Ho, Wo)
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    kind = "conv"

    def __post_init__(self):
        (ci, h, w), (co, ho, wo) = self.in_shape, self.out_shape
        self.n_targets = co * ho * wo
        self._rows = _footprint_prefix(ho, h, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0])
        self._cols = _footprint_prefix(wo, w, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1])
        self._full = self._rect(0, ho, 0, wo)

    @property
    def source_shape(self):
        c, h, w = self.in_shape
        return (c, h * w)

    @property
    def pointwise(self) -> bool:
        """A 1x1 conv of stride 1 without padding: a Linear per position (token-wise Linear)."""
        return self.kernel == (1, 1) and tuple(self.stride) == (1, 1) and tuple(self.padding) == (0, 0)

    def pointwise_counts(self, targets: np.ndarray) -> np.ndarray:
        """(C_in, H*W) weights each source stores for an arbitrary set of target indices (pointwise)."""
        co, ho, wo = self.out_shape
        hw = ho * wo
        ch, pos = np.divmod(np.asarray(targets, dtype=np.int64), hw)
        cpg_out, cpg_in = co // self.groups, self.in_shape[0] // self.groups
        per_group = np.bincount((ch // cpg_out) * hw + pos, minlength=self.groups * hw).reshape(self.groups, hw)
        return np.repeat(per_group, cpg_in, axis=0)

    def _rect(self, h0, h1, w0, w1) -> np.ndarray:
        r = self._rows[h1] - self._rows[h0]
        c = self._cols[w1] - self._cols[w0]
        return np.outer(r, c).ravel()

    def _positions(self, p0: int, p1: int) -> np.ndarray:
        """Count map of output positions ``[p0, p1)`` of one channel (flat H*W order)."""
        wo = self.out_shape[2]
        (h0, w0), (h1, w1) = divmod(p0, wo), divmod(p1, wo)
        if h0 == h1:
            return self._rect(h0, h0 + 1, w0, w1)
        out = self._rect(h0, h0 + 1, w0, wo)
        if h1 > h0 + 1:
            out = out + self._rect(h0 + 1, h1, 0, wo)
        if w1:
            out = out + self._rect(h1, h1 + 1, 0, w1)
        return out

    def fanin(self, start, stop):
        co, ho, wo = self.out_shape
        hw = ho * wo
        cpg_out, cpg_in = co // self.groups, self.in_shape[0] // self.groups
        first, p_first = divmod(start, hw)
        last, p_last = divmod(stop - 1, hw)
        segments = []                         # (out channel, count map) of partial channels
        full_from, full_to = first, last + 1  # output channels wholly inside [start, stop)
        if first == last:
            if p_first or p_last + 1 < hw:
                segments.append((first, self._positions(p_first, p_last + 1)))
                full_from = full_to = first
        else:
            if p_first:
                segments.append((first, self._positions(p_first, hw)))
                full_from = first + 1
            if p_last + 1 < hw:
                segments.append((last, self._positions(0, p_last + 1)))
                full_to = last
        by_group: dict[int, np.ndarray] = {}
        for c, counts in segments:
            g = c // cpg_out
            by_group[g] = by_group.get(g, 0) + counts
        entries = []
        if full_to > full_from:
            g_lo, g_hi = -(-full_from // cpg_out), full_to // cpg_out   # groups wholly covered
            if g_hi > g_lo:
                entries.append(Entry(g_lo * cpg_in, g_hi * cpg_in, self._full * cpg_out))
            for g in {full_from // cpg_out, (full_to - 1) // cpg_out}:
                if g_lo <= g < g_hi:
                    continue
                n = min(full_to, (g + 1) * cpg_out) - max(full_from, g * cpg_out)
                by_group[g] = by_group.get(g, 0) + self._full * n
        entries += [Entry(g * cpg_in, (g + 1) * cpg_in, counts) for g, counts in sorted(by_group.items())]
        return entries


def pool_geometry(in_shape, out_shape, kernel, stride, padding) -> Conv:
    """A pooling window as a depthwise conv with all taps present."""
    return Conv(tuple(in_shape), tuple(out_shape), tuple(kernel), tuple(stride), tuple(padding), (1, 1),
                groups=int(in_shape[0]))


@dataclass
class Sparse(Geometry):
    """Explicit one-weight synapses: target t reads sources ``src[ptr[t]:ptr[t + 1]]`` (CSR by
    target). The spiking-transformer wiring: a mask's or a product unit's operand (one per
    target, size-1 axes broadcast), a sum of ones (each source into its one accumulator), a
    neuron fed one-to-one by another population through a Permute or Slice."""

    n_sources: int
    n_targets: int
    ptr: np.ndarray = None    # (n_targets + 1,) int64
    src: np.ndarray = None    # (synapses,) int64 source of each synapse, grouped by target
    kind = "dense"

    @property
    def source_shape(self):
        return (1, self.n_sources)

    @property
    def synapses(self) -> int:
        return int(self.src.size)

    @cached_property
    def indexed(self) -> bool:
        """Some source feeds more than one target: its weights on a core need target indices
        (nengo-loihi's sparse compression); with one weight per axon the axon's compartment
        base suffices (no index bits), as for the one-to-one ``Identity``."""
        return bool(self.src.size) and int(np.bincount(self.src, minlength=1).max()) > 1

    def fanin(self, start, stop):
        used = self.src[self.ptr[start]:self.ptr[stop]]
        return [Entry(0, 1, np.bincount(used, minlength=self.n_sources).astype(np.int64))]

    def rows(self, targets: np.ndarray) -> "Sparse":
        """The same synapses for new targets: new target i is old target ``targets[i]``."""
        targets = np.asarray(targets, dtype=np.int64)
        lens = self.ptr[targets + 1] - self.ptr[targets]
        ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        starts = np.repeat(self.ptr[targets] - ptr[:-1], lens)
        src = self.src[np.arange(int(ptr[-1]), dtype=np.int64) + starts]
        return Sparse(self.n_sources, len(targets), ptr, src)

    def through(self, index: np.ndarray | None, n_sources: int) -> "Sparse":
        """Sources re-indexed: old source s is element ``index[s]`` of a source of ``n_sources``."""
        if index is None:
            return Sparse(n_sources, self.n_targets, self.ptr, self.src)
        return Sparse(n_sources, self.n_targets, self.ptr, np.asarray(index, dtype=np.int64)[self.src])


def select(index: np.ndarray, n_sources: int) -> Sparse:
    """Target i reads source ``index[i]`` (one synapse each)."""
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    return Sparse(n_sources, index.size, np.arange(index.size + 1, dtype=np.int64), index)


def gather_sum(target_of_source: np.ndarray, n_targets: int) -> Sparse:
    """Each source feeds its one target ``target_of_source[s]`` (a sum of ones)."""
    t = np.asarray(target_of_source, dtype=np.int64).reshape(-1)
    order = np.argsort(t, kind="stable")
    ptr = np.concatenate([[0], np.cumsum(np.bincount(t, minlength=n_targets))]).astype(np.int64)
    return Sparse(t.size, n_targets, ptr, order.astype(np.int64))


@dataclass
class Mapped(Geometry):
    """A Dense / Conv / pool synapse read and written through layouts (Reshape, Permute, Slice:
    axon routing, no neurons): its input element j is element ``source_index[j]`` of a source
    population of ``n_sources``; population neuron i is its output ``target_index[i]`` (None:
    the same flat order). Count maps come back in the source population's flat order."""

    inner: Geometry
    n_sources: int
    source_index: np.ndarray | None = None
    target_index: np.ndarray | None = None

    def __post_init__(self):
        self.n_targets = (self.inner.n_targets if self.target_index is None else int(self.target_index.size))
        self.kind = self.inner.kind

    @property
    def source_shape(self):
        return (1, self.n_sources)

    def _inner_counts(self, start, stop) -> np.ndarray:
        c, hw = self.inner.source_shape
        if self.target_index is None:
            runs = [(start, stop)]
        elif isinstance(self.inner, Dense):
            runs = [(0, stop - start)]          # every target reads every source: only the count matters
        elif isinstance(self.inner, Conv) and self.inner.pointwise:
            return self.inner.pointwise_counts(self.target_index[start:stop]).reshape(-1)
        else:
            t = np.sort(self.target_index[start:stop])
            cut = np.flatnonzero(np.diff(t) != 1) + 1
            runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(t, cut) if r.size]
        flat = np.zeros((c, hw), dtype=np.int64)
        for a, b in runs:
            for e in self.inner.fanin(a, b):
                flat[e.c0:e.c1] += e.counts
        return flat.reshape(-1)

    def fanin(self, start, stop):
        counts = self._inner_counts(start, stop)
        if self.source_index is None:
            return [Entry(0, 1, counts)]
        out = np.zeros(self.n_sources, dtype=np.int64)
        out[self.source_index] = counts       # layouts are injective: no two inputs share a source
        return [Entry(0, 1, out)]
