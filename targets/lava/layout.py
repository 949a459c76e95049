"""Where an IR tensor's elements sit in Lava.

A value travels on Lava OutPorts of some ``port_shape``; ``pos`` says, for every IR flat index
(C order), which flat position of the port holds it. Lava's Conv works on WHC tensors (x, y,
channel) while the IR is CHW, so a (C, H, W) value made by a Conv, a pool or the Input lives as
(W, H, C) (its "natural" layout). Layout kinds (Flatten, Reshape, Permute, Slice) never move
data in Lava: they only relabel ``pos`` (on a chip they are axon routing, decided at mapping
time). Consumers fold ``pos`` into what they do: Dense weight columns, the gather of our own
product processes, the read-back of results; a consumer that needs a particular arrangement
(a Conv needs the natural WHC image, a neuron population a one-to-one port) gets a ``Route``
process (``procs/process.py``) in between. Most values keep ``pos = None`` (the identity).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


def _whc_positions(ir_shape: tuple) -> np.ndarray:
    """IR flat index of a (C, H, W) value -> flat position in its (W, H, C) port."""
    c, h, w = ir_shape
    return np.arange(c * h * w).reshape(w, h, c).transpose(2, 1, 0).reshape(-1)


@dataclass(frozen=True, eq=False)
class Layout:
    """The Lava arrangement of one IR value of shape ``ir_shape``.

    ``Layout(shape)`` is the natural layout (WHC port for a 3-D value, a flat port otherwise)."""

    ir_shape: tuple
    port_shape: Optional[tuple] = None
    #: IR flat index -> port flat position (None: the identity).
    pos: Optional[np.ndarray] = None

    def __post_init__(self):
        shape = tuple(int(s) for s in self.ir_shape)
        object.__setattr__(self, "ir_shape", shape)
        if self.port_shape is None:
            if len(shape) == 3:
                object.__setattr__(self, "port_shape", (shape[2], shape[1], shape[0]))
                object.__setattr__(self, "pos", _whc_positions(shape))
            else:
                object.__setattr__(self, "port_shape", (int(np.prod(shape)),))
        else:
            object.__setattr__(self, "port_shape", tuple(int(s) for s in self.port_shape))
        if self.pos is not None:
            pos = np.asarray(self.pos, dtype=np.int64)
            if pos.size == self.port_size and np.array_equal(pos, np.arange(pos.size)):
                pos = None
            object.__setattr__(self, "pos", pos)

    # -- sizes and shapes -----------------------------------------------------------
    @property
    def size(self) -> int:
        return int(np.prod(self.ir_shape))

    @property
    def port_size(self) -> int:
        return int(np.prod(self.port_shape))

    @property
    def lava_shape(self) -> tuple:
        return self.port_shape

    @property
    def is_image(self) -> bool:
        return len(self.port_shape) == 3

    def positions(self) -> np.ndarray:
        return np.arange(self.size) if self.pos is None else self.pos

    @property
    def one_to_one(self) -> bool:
        """Every port position holds exactly one IR element (a neuron population can sit on it)."""
        if self.pos is None:
            return self.size == self.port_size
        return self.size == self.port_size and np.unique(self.pos).size == self.size

    def is_natural(self) -> bool:
        """Arranged exactly as ``Layout(ir_shape)`` (what a Conv/pool consumes or produces)."""
        return self.same_as(Layout(self.ir_shape))

    def same_as(self, other: "Layout") -> bool:
        return (self.ir_shape == other.ir_shape and self.port_size == other.port_size
                and np.array_equal(self.positions(), other.positions()))

    # -- relabelling by layout kinds ----------------------------------------------------
    def relabelled(self, ir_shape: tuple, source: Optional[np.ndarray] = None) -> "Layout":
        """The layout of a layout node's output: ``source[j]`` is the input IR flat index that
        output IR flat index j reads (None: a reshape, the same C-order flat indices)."""
        pos = self.positions() if source is None else self.positions()[source]
        return Layout(tuple(ir_shape), self.port_shape, pos)

    def flattened(self) -> "Layout":
        """The layout of Flatten applied to this value (the same port, relabelled)."""
        return self.relabelled((self.size,))

    # -- moving arrays in and out ---------------------------------------------------------
    def to_lava(self, arr, dtype=np.float64) -> np.ndarray:
        """An IR-shaped (or broadcastable) array arranged as the port holds it (one-to-one only)."""
        arr = np.broadcast_to(np.asarray(arr, dtype=dtype), self.ir_shape).reshape(-1)
        if self.pos is None:
            return arr.copy().reshape(self.port_shape)
        out = np.zeros(self.port_size, dtype=dtype)
        out[self.pos] = arr
        return out.reshape(self.port_shape)

    def batch_to_ir(self, arr: np.ndarray) -> np.ndarray:
        """(..., port size) values read back from Lava -> (..., IR flat size) in IR order."""
        return arr if self.pos is None else arr[..., self.pos]

    def batch_to_lava(self, arr: np.ndarray) -> np.ndarray:
        """(..., IR flat size) -> (..., port size): the inverse of :meth:`batch_to_ir`."""
        if self.pos is None:
            return arr
        out = np.zeros(arr.shape[:-1] + (self.port_size,), dtype=arr.dtype)
        out[..., self.pos] = arr
        return out

    def dense_weights(self, weight: np.ndarray) -> np.ndarray:
        """Weights (out, IR size) with columns at this (input) layout's port positions (columns
        of port positions that hold none of this value's elements are zero)."""
        if self.pos is None and self.size == self.port_size:
            return weight
        out = np.zeros((weight.shape[0], self.port_size), dtype=weight.dtype)
        out[:, self.positions()] = weight
        return out

    def gather(self) -> np.ndarray:
        """Port flat positions to read, in IR flat order (what our own processes gather)."""
        return self.positions().copy()


def layout_source(kind: str, in_shape: tuple, node) -> np.ndarray:
    """For a Permute or Slice node: output IR flat index -> input IR flat index."""
    idx = np.arange(int(np.prod(in_shape))).reshape(in_shape)
    if kind == "Permute":
        return idx.transpose(node.perm).reshape(-1)
    axis = node.axis % len(in_shape)
    return np.take(idx, np.arange(node.start, node.stop), axis=axis).reshape(-1)
