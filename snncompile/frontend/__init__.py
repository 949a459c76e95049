"""PyTorch models -> canonical IR.

``from_torch(model, input_shape, timesteps)`` runs the model once on an example input and
records its calls (neurons and torch layers as leaves, see :mod:`.tracing`), maps every module and residual ``+`` to IR nodes for one time step, then runs
:func:`snncompile.passes.canonicalize` (BatchNorm and input-gain folding, reset shifts).
``load_model(path)`` reads a whole pickled model safely (see :mod:`.loading`).
"""
from __future__ import annotations

import logging
import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from snncompile.errors import SnnCompileError
from snncompile.ir.graph import Graph

# torch logs "Triton not available" when SpikingJelly imports its kernels: noise on a CPU install.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

__all__ = ["MappingWarning", "from_torch", "load_model", "mapping_warnings", "to_raw_graph_from_torch"]


def load_model(path, trust_code: bool = False) -> nn.Module:
    from snncompile.frontend import legacy_spikingjelly
    from snncompile.frontend.loading import load_model as _load
    legacy_spikingjelly.install()  # models saved with SpikingJelly 0.0.0.0.12 name spikingjelly.clock_driven
    return _load(path, trust_code=trust_code)


def _check_finite(model: nn.Module) -> None:
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and t.numel() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise SnnCompileError(f"parameter '{name}' of the model has {bad} NaN/Inf value(s)")


def _check_args(input_shape, timesteps) -> tuple[tuple[int, ...], int]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise SnnCompileError(f"input shape {input_shape!r} must be a sequence of positive integers") from None
    if not shape or any(s <= 0 for s in shape) or len(shape) not in (1, 3):
        raise SnnCompileError(f"input shape {shape} must be (F,) or (C, H, W) with positive sizes")
    if int(timesteps) < 1:
        raise SnnCompileError(f"timesteps must be at least 1, got {timesteps}")
    return shape, int(timesteps)


def to_raw_graph_from_torch(model: nn.Module, input_shape: Sequence[int], timesteps: int,
                            name: Optional[str] = None) -> Graph:
    """The IR straight from tracing, before the passes (may hold Affine nodes)."""
    from snncompile.frontend.convert import to_raw_graph
    from snncompile.frontend.tracing import trace

    shape, timesteps = _check_args(input_shape, timesteps)
    if not isinstance(model, nn.Module):
        raise SnnCompileError(f"expected a torch.nn.Module, got {type(model).__name__}")
    _check_finite(model)
    model.eval()
    captured = trace(model, shape, timesteps)
    graph = to_raw_graph(captured, shape, name or type(model).__name__, timesteps)
    graph.meta["framework"] = _framework(model)
    return graph


def from_torch(model: nn.Module, input_shape: Sequence[int], timesteps: int,
               name: Optional[str] = None) -> Graph:
    """Canonical IR of ``model`` for inputs of per-sample ``input_shape`` over ``timesteps`` steps."""
    from snncompile.passes import canonicalize

    graph = canonicalize(to_raw_graph_from_torch(model, input_shape, timesteps, name))
    for message in mapping_warnings(graph):
        warnings.warn(message, MappingWarning, stacklevel=2)
    return graph


class MappingWarning(UserWarning):
    """A layer maps exactly only under a stated condition (the message says which)."""


def mapping_warnings(graph: Graph) -> list[str]:
    """The caveats the frontend recorded in ``graph.meta['warnings']`` (one per line)."""
    text = graph.meta.get("warnings", "")
    return [line for line in text.split("\n") if line]


def _framework(model: nn.Module) -> str:
    libs = sorted({type(m).__module__.split(".")[0] for m in model.modules()} &
                  {"snntorch", "spikingjelly", "norse"})
    return ",".join(libs) or "torch"
