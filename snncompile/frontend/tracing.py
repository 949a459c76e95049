"""Capture a model by running it once on a concrete example input.

Why execution and not torch.fx or torch.export: real SNN code branches on shapes
(``x.ndim``, ``for t in range(x.shape[0])``, ``x.size(0)``), builds state with
``torch.zeros(...)``, assigns into state tuples and calls a module twice. Symbolic tracing
(fx) fails on all of these, and ``torch.export`` creates the neurons' state inside the
graph and drops the final state (recurrence is lost). Running the model eagerly makes
every such Python decision concrete, and records only what touches the network's tensors:

- a ``TorchFunctionMode`` sees every torch function and tensor method called *outside*
  leaf modules (``+``, ``flatten``, ``view``, ``x[t]``, ``torch.stack``, ``*``...); an
  in-place ``buf[t] = value`` of a network value gives ``buf`` a fresh slot (Norse's ConvNet
  fills its output buffer step by step);
- forward hooks on every module record each call of a *leaf* (a neuron, a torch layer we
  map, a SpikingJelly container, or an unsupported torch layer to name in an error) with
  its inputs and outputs; nothing inside a leaf is recorded.

Tensors are identified by object identity; an input of a call that was not produced by a
recorded call is a constant (state created by ``zeros``, parameters, buffers). The
result is a flat list of :class:`Call` records with concrete shapes, which
:mod:`snncompile.frontend.convert` turns into IR. Which leading dims of each tensor are
time and batch is decided there from the concrete shapes (see ``convert.Lead``).

The example batch has ``B = 2`` samples (3 when T = 2), so that batch, time and
per-sample dims can be told apart by size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils.weak import WeakIdKeyDictionary

from snncompile.errors import SnnCompileError
from snncompile.frontend.neurons import is_neuron

#: Stateless torch modules the frontend translates one to one.
DIRECT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                  nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Dropout2d, nn.Identity)
#: torch containers whose forward is only calls of their children (never leaves).
_TORCH_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _containers() -> tuple[type, ...]:
    """SpikingJelly wrappers mapped as a whole (their layers one by one)."""
    try:
        from spikingjelly.activation_based import layer
        return (layer.SeqToANNContainer,)
    except Exception:  # pragma: no cover
        return ()


def library_layers() -> tuple[type, ...]:
    """Library modules (not neurons) the converter maps as one layer."""
    try:
        from spikingjelly.activation_based import layer
        return (layer.VotingLayer,)
    except Exception:  # pragma: no cover
        return ()


def is_bn_and_pad(m: nn.Module) -> bool:
    """SDT v2's ``BNAndPadLayer``: BatchNorm2d, then a border of ``pad_pixels`` filled with the
    value the BN gives a zero input (RepConv). Recognised by its two attributes."""
    return isinstance(getattr(m, "bn", None), nn.BatchNorm2d) and isinstance(getattr(m, "pad_pixels", None), int) \
        and not isinstance(m, nn.modules.batchnorm._BatchNorm)


def is_leaf(m: nn.Module) -> bool:
    """Modules recorded as one call: mapped ones, and torch layers (refused by name if unmapped)."""
    if is_neuron(m) or isinstance(m, DIRECT_MODULES + _containers() + library_layers()) or is_bn_and_pad(m):
        return True
    if isinstance(m, _TORCH_CONTAINERS):
        return False
    return type(m).__module__.startswith("torch.nn.")


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


@dataclass(frozen=True)
class Slot:
    """A tensor produced during the run (the model input or a recorded call's output)."""

    id: int


@dataclass(frozen=True)
class Const:
    """A tensor that no recorded call produced: a constant of the network (or state)."""

    value: torch.Tensor


@dataclass
class Call:
    """One recorded call: a leaf module (``kind == 'module'``) or a torch function."""

    kind: str
    #: Module path, or the function's name (``add``, ``__getitem__``, ``flatten``).
    target: str
    #: A name for messages, unique per function name (``add``, ``add_1``...).
    label: str
    args: tuple
    kwargs: dict
    out: Any
    #: (path, class) of the innermost module running, for messages ("" = the model).
    scope: tuple
    module: Optional[nn.Module] = None


@dataclass
class Captured:
    calls: list
    #: Concrete shape of every slot's tensor (slot 0 is the model's input).
    shapes: dict
    output: Any
    #: How the input is given: "step" (B, *shape) per call, "sequence" (T, B, *shape).
    input_style: str
    #: True for SpikingJelly multi-step models (their layers take (T, B, ...)).
    multistep: bool
    timesteps: int
    batch: int
    model_name: str
    #: Whether each slot's tensor has a floating-point dtype (a cast to int changes currents).
    floating: dict = field(default_factory=dict)


class _SequenceInput(Exception):
    """Raised in a step-style run when forward indexes its input by step (``x[t]``)."""


class _Recorder(TorchFunctionMode):
    def __init__(self, run: "_Run"):
        super().__init__()
        self.run = run

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        run = self.run
        if run.leaf_depth:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if name == "__get__":  # a tensor property: name it by the property (x.T, x.data, x.shape)
            name = f"{name}.{getattr(getattr(func, '__self__', None), '__name__', '?')}"
        if run.input_style == "step" and args and name in ("__getitem__", "unbind", "select") \
                and run.is_input(args[0]) and _indexes_first_dim(name, args, kwargs):
            raise _SequenceInput()
        if run.static_multistep and run.touches_input((args, kwargs)) and not _reads_static_input(name, args):
            raise _SequenceInput()
        out = func(*args, **kwargs)
        run.record_function(name, args, kwargs, out)
        return out


#: What a multi-step model may do with a static (B, ...) input before repeating it over T.
_STATIC_INPUT_OPS = ("unsqueeze", "size", "dim", "__len__")


def _reads_static_input(name: str, args) -> bool:
    """A static input given to a multi-step model must first get its time dim (the official
    transformers' ``x.unsqueeze(0).repeat(T, ...)``); its shape may be read."""
    if name.startswith("__get__"):
        return True
    if name == "unsqueeze":
        return (args[1] if len(args) > 1 else None) == 0
    return name in _STATIC_INPUT_OPS


def _indexes_first_dim(name: str, args, kwargs) -> bool:
    if name == "__getitem__":
        idx = args[1]
        if isinstance(idx, tuple):
            idx = idx[0] if idx else None
        return isinstance(idx, int)
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return dim == 0


class _Run:
    """State of one recording run."""

    def __init__(self, model: nn.Module, input_style: str, multistep: bool = False):
        self.model = model
        self.input_style = input_style
        #: A multi-step model run on a static (B, ...) input: it must repeat it over T itself.
        self.static_multistep = multistep and input_style == "step"
        #: Weak: a tensor that dies leaves the map, so a new tensor at its address is not taken for it.
        self.slots = WeakIdKeyDictionary()
        self.shapes: dict[int, tuple] = {}
        self.floating: dict[int, bool] = {}
        self.calls: list[Call] = []
        self.labels: dict[str, int] = {}
        self.leaf_depth = 0
        self.stack: list[tuple[str, nn.Module]] = []
        self.pending: list = []

    def is_input(self, t) -> bool:
        return isinstance(t, torch.Tensor) and self.slots.get(t) == 0

    def touches_input(self, value) -> bool:
        return any(self.is_input(v) for v in pytree.tree_leaves(value))

    def new_slot(self, t: torch.Tensor) -> Slot:
        i = len(self.shapes)
        self.slots[t] = i
        self.shapes[i] = tuple(int(s) for s in t.shape)
        self.floating[i] = t.is_floating_point()
        return Slot(i)

    def slot_outputs(self, out):
        """Fresh slots for a call's output tensors; a tensor returned twice (Norse returns the
        spikes and a state holding the same spikes) keeps its first slot."""
        seen: dict[int, Slot] = {}

        def slot(v):
            if not isinstance(v, torch.Tensor):
                return v
            if id(v) not in seen:
                seen[id(v)] = self.new_slot(v)
            return seen[id(v)]
        return pytree.tree_map(slot, out)

    def encode(self, value):
        def enc(v):
            if isinstance(v, torch.Tensor):
                i = self.slots.get(v)
                return Slot(i) if i is not None else Const(v.detach())
            return v
        return pytree.tree_map(enc, value)

    def touches_network(self, value) -> bool:
        return any(isinstance(v, torch.Tensor) and v in self.slots for v in pytree.tree_leaves(value))

    def label(self, name: str) -> str:
        n = self.labels.get(name, 0)
        self.labels[name] = n + 1
        return name if n == 0 else f"{name}_{n}"

    def scope(self) -> tuple:
        if not self.stack:
            return ("", type(self.model))
        path, m = self.stack[-1]
        return (path, type(m))

    def record_function(self, name, args, kwargs, out) -> None:
        if not self.touches_network((args, kwargs)):
            return  # constants: state created by zeros(), arithmetic on parameters
        if name == "__setitem__" and isinstance(args[0], torch.Tensor):
            # in place: the tensor now holds network values; a fresh slot for it (later reads)
            enc_args, enc_kwargs = self.encode(args), self.encode(kwargs)
            self.calls.append(Call("function", name, self.label(name), enc_args, enc_kwargs,
                                   self.new_slot(args[0]), self.scope()))
            return
        tensors_out = [v for v in pytree.tree_leaves(out) if isinstance(v, torch.Tensor)]
        if not tensors_out:
            return  # sizes, dims, shapes: concrete Python values, nothing to map
        enc_args, enc_kwargs = self.encode(args), self.encode(kwargs)
        enc_out = self.slot_outputs(out)
        self.calls.append(Call("function", name, self.label(name), enc_args, enc_kwargs, enc_out, self.scope()))

    # module hooks ------------------------------------------------------------
    def pre_hook(self, path):
        def hook(m, args, kwargs):
            self.stack.append((path, m))
            if self.static_multistep and self.leaf_depth == 0 and is_leaf(m) and self.touches_input((args, kwargs)):
                raise _SequenceInput()
            if is_leaf(m):
                if self.leaf_depth == 0:
                    self.pending.append((self.encode(args), self.encode(kwargs), self.scope_above()))
                self.leaf_depth += 1
        return hook

    def scope_above(self) -> tuple:
        if len(self.stack) < 2:
            return ("", type(self.model))
        path, m = self.stack[-2]
        return (path, type(m))

    def post_hook(self, path):
        def hook(m, args, kwargs, out):
            if is_leaf(m):
                self.leaf_depth -= 1
                if self.leaf_depth == 0:
                    enc_args, enc_kwargs, scope = self.pending.pop()
                    enc_out = self.slot_outputs(out)
                    self.calls.append(Call("module", path, path, enc_args, enc_kwargs, enc_out, scope, m))
            self.stack.pop()
        return hook


def example_batch(timesteps: int) -> int:
    """Batch size of the example run: distinct from T so that leading dims are told apart."""
    return 3 if timesteps == 2 else 2


def _example(shape, lead_shape, dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(tuple(lead_shape) + tuple(shape), generator=gen) < 0.5).to(dtype)


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


def _record(model: nn.Module, x: torch.Tensor, input_style: str, multistep: bool) -> tuple[_Run, Any]:
    run = _Run(model, input_style, multistep)
    run.new_slot(x)
    handles = []
    for path, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(run.pre_hook(path), with_kwargs=True))
        handles.append(m.register_forward_hook(run.post_hook(path), with_kwargs=True))
    try:
        with torch.no_grad(), _Recorder(run):
            out = model(x)
    except Exception as exc:
        exc.snncompile_where = run.stack[-1] if len(run.stack) > 1 else None
        raise
    finally:
        for h in handles:
            h.remove()
    return run, out


def trace(model: nn.Module, input_shape: tuple, timesteps: int) -> Captured:
    """Run ``model`` once on an example input and record its calls (see the module docstring)."""
    multistep = step_mode(model) == "m"
    batch = example_batch(timesteps)
    try:
        dtype = next(model.parameters()).dtype
    except StopIteration:
        dtype = torch.float32
    # A multi-step model takes (T, B, ...), or a static (B, ...) image it repeats over T itself
    # (the spiking transformers' forward); the static run stops as soon as the input is used
    # otherwise (see _reads_static_input).
    styles = ["step", "sequence"]
    for style in styles:
        lead_shape = (timesteps, batch) if style == "sequence" else (batch,)
        reset_state(model)
        try:
            run, out = _record(model, _example(input_shape, lead_shape, dtype), style, multistep)
            break
        except _SequenceInput:
            continue
        except SnnCompileError:
            raise
        except Exception as exc:
            where = getattr(exc, "snncompile_where", None)
            at = f" in module '{where[0]}' ({type(where[1]).__name__})" if where else ""
            raise SnnCompileError(f"model {type(model).__name__} does not run on inputs of shape "
                                  f"({'T, N, ' if style == 'sequence' else 'N, '}"
                                  f"{', '.join(map(str, input_shape))}){at}: {_first_line(exc)}; "
                                  f"check --input-shape") from None
        finally:
            reset_state(model)
    output = run.encode(out)
    return Captured(run.calls, run.shapes, output, style, multistep, timesteps, batch,
                    type(model).__name__, run.floating)
