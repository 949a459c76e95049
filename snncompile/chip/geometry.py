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
"""
from __future__ import annotations

from dataclasses import dataclass

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
