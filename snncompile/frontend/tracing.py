"""Capture a model's per-step structure with ``torch.fx``, neurons kept as leaves.

``torch.fx.symbolic_trace`` fails on SNN libraries (control flow on tensors inside the
neurons), so neurons, SpikingJelly containers and every module we translate directly
are leaves. Shapes come from running the traced module once on an example input
(``ShapeProp``); the neurons' state is reset before and after.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from snncompile.errors import SnnCompileError
from snncompile.frontend.neurons import is_neuron

#: Stateless torch modules the frontend translates one to one.
DIRECT_MODULES = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                  nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Dropout2d, nn.Identity)


def _containers() -> tuple[type, ...]:
    try:
        from spikingjelly.activation_based import layer
        return (layer.SeqToANNContainer,)
    except Exception:  # pragma: no cover
        return ()


class LeafTracer(fx.Tracer):
    """fx tracer that does not look inside neurons, SpikingJelly containers or torch layers."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_neuron(m) or isinstance(m, DIRECT_MODULES + _containers()):
            return True
        return super().is_leaf_module(m, qualname)


def reset_state(model: nn.Module) -> None:
    """Clear the hidden state of every neuron (SpikingJelly, snnTorch; Norse is stateless)."""
    for m in model.modules():
        if not is_neuron(m):
            continue
        if hasattr(m, "reset") and callable(m.reset) and type(m).__module__.startswith("spikingjelly"):
            m.reset()
        elif hasattr(m, "reset_mem"):
            m.reset_mem()


def step_mode(model: nn.Module) -> str:
    """'m' when SpikingJelly multi-step modules take (T, N, ...) inputs, else 's'."""
    modes = {getattr(m, "step_mode", None) for m in model.modules()
             if type(m).__module__.startswith("spikingjelly")} - {None}
    if len(modes) > 1:
        raise SnnCompileError("model mixes SpikingJelly single-step and multi-step modules; "
                              "use functional.set_step_mode(model, 'm') or 's' for all of them")
    return modes.pop() if modes else "s"


class _ShapeProp(ShapeProp):
    """ShapeProp that remembers which node was running, to name it in errors."""

    current = None

    def run_node(self, n):
        self.current = n
        return super().run_node(n)


def _where(node, modules: dict) -> str:
    if node is None:
        return ""
    if node.op == "call_module":
        m = modules.get(str(node.target))
        return f" in module '{node.target}' ({type(m).__name__})"
    return f" at '{node.name}'"


@dataclass
class Traced:
    module: fx.GraphModule
    #: Leading dims of every tensor before the per-sample shape: 1 (N) or 2 (T, N).
    lead: int
    #: How the input is given: "step" (N, *shape) per call, "sequence" (T, N, *shape).
    input_style: str


def _example(shape, lead_shape, dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(tuple(lead_shape) + tuple(shape), generator=gen) < 0.5).to(dtype)


def _indexes_input(gm: fx.GraphModule) -> bool:
    """True if forward indexes its input with an int (``x[step]``: a sequence in a loop)."""
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        for user in node.users:
            if user.op == "call_function" and user.target.__name__ == "getitem" and isinstance(user.args[1], int):
                return True
        return False
    return False


def trace(model: nn.Module, input_shape: tuple, timesteps: int) -> Traced:
    """Trace ``model`` and annotate every fx node with its tensor shape."""
    try:
        graph = LeafTracer().trace(model)
    except SnnCompileError:
        raise
    except Exception as exc:
        raise SnnCompileError(f"cannot trace model {type(model).__name__} with torch.fx: {exc}. "
                              f"Keep Python control flow on tensors inside neuron modules") from None
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        raise SnnCompileError(f"model {type(model).__name__}: forward takes no input")
    mode = step_mode(model)
    sequence = mode == "m" or _indexes_input(gm)
    lead = 2 if mode == "m" else 1
    batch = 1  # one sample is enough for shapes; keeps big models fast
    lead_shape = (timesteps, batch) if sequence else (batch,)
    try:
        dtype = next(model.parameters()).dtype
    except StopIteration:
        dtype = torch.float32
    reset_state(model)
    prop = _ShapeProp(gm)
    try:
        # ShapeProp prints the traceback of a failing node itself; we report it in one line.
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            prop.propagate(_example(input_shape, lead_shape, dtype))
    except SnnCompileError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc
        text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise SnnCompileError(f"model {type(model).__name__} does not run on inputs of shape "
                              f"({'T, N, ' if sequence else 'N, '}{', '.join(map(str, input_shape))})"
                              f"{_where(prop.current, dict(gm.named_modules()))}: {text}; "
                              f"check --input-shape") from None
    finally:
        reset_state(model)
    return Traced(gm, lead, "sequence" if sequence else "step")
