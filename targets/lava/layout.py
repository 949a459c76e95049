"""Where an IR tensor's elements sit in Lava.

Lava's Conv works on WHC tensors (x, y, channel); the IR is CHW. Every (C, H, W)
value therefore lives in Lava as (W, H, C). A Flatten of such a value is a plain
reshape of the Lava port, so its Lava order is not PyTorch's: instead of transposing
ports we carry a permutation ``perm`` (Lava flat index i holds IR flat index perm[i])
and fold it into whatever consumes the value (Dense weight columns, neuron
parameters, the read-back of results).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Layout:
    """The Lava arrangement of one IR value of shape ``ir_shape``."""

    ir_shape: tuple
    #: for a 1-D value: Lava flat index -> IR flat index (None = identity).
    perm: Optional[np.ndarray] = None

    @property
    def is_image(self) -> bool:
        return len(self.ir_shape) == 3

    @property
    def lava_shape(self) -> tuple:
        if self.is_image:
            c, h, w = self.ir_shape
            return (w, h, c)
        return (int(np.prod(self.ir_shape)),)

    def same_as(self, other: "Layout") -> bool:
        if self.ir_shape != other.ir_shape:
            return False
        if self.perm is None or other.perm is None:
            return self.perm is None and other.perm is None
        return bool(np.array_equal(self.perm, other.perm))

    def to_lava(self, arr, dtype=np.float64) -> np.ndarray:
        """An IR-shaped (or broadcastable) array arranged as Lava holds it."""
        arr = np.broadcast_to(np.asarray(arr, dtype=dtype), self.ir_shape)
        if self.is_image:
            return np.ascontiguousarray(arr.transpose(2, 1, 0))
        flat = arr.reshape(-1)
        return flat.copy() if self.perm is None else flat[self.perm]

    def batch_to_ir(self, arr: np.ndarray) -> np.ndarray:
        """(..., lava_size) values read back from Lava -> (..., IR flat size) in IR order."""
        lead = arr.shape[:-1]
        if self.is_image:
            w, h, c = self.lava_shape
            return arr.reshape(lead + (w, h, c)).swapaxes(-1, -3).reshape(lead + (-1,))
        if self.perm is None:
            return arr
        out = np.empty_like(arr)
        out[..., self.perm] = arr
        return out

    def batch_to_lava(self, arr: np.ndarray) -> np.ndarray:
        """(..., IR flat size) -> (..., Lava flat size): the inverse of :meth:`batch_to_ir`."""
        lead = arr.shape[:-1]
        if self.is_image:
            c, h, w = self.ir_shape
            return arr.reshape(lead + (c, h, w)).swapaxes(-1, -3).reshape(lead + (-1,))
        return arr if self.perm is None else arr[..., self.perm]

    def flattened(self) -> "Layout":
        """The layout of Flatten applied to this value (a reshape of the Lava port)."""
        size = int(np.prod(self.ir_shape))
        if self.is_image:
            c, h, w = self.ir_shape
            perm = np.arange(size).reshape(c, h, w).transpose(2, 1, 0).reshape(-1)
            return Layout((size,), perm)
        return Layout((size,), self.perm)

    def dense_weights(self, weight: np.ndarray) -> np.ndarray:
        """Linear weights (out, in) with columns in this (input) layout's Lava order."""
        return weight if self.perm is None else np.ascontiguousarray(weight[:, self.perm])
