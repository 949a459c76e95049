"""Build a model from its code and load a checkpoint as researchers share it.

``export CKPT --model MODULE:CALLABLE`` needs this because most shared SNN checkpoints are
state dicts, and some models cannot be pickled whole at all (snnTorch's default surrogate is
a closure, Norse's ``LIFParameters`` holds functions). The code is imported (it runs, like
``--trust-code``); the checkpoint itself is read with ``torch.load(weights_only=True)``, so it
can only hold tensors and plain containers (plus the ``argparse.Namespace`` and numpy scalars
training scripts store beside the weights).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from snncompile.errors import SnnCompileError

#: Where training scripts put the state dict inside a checkpoint dict, in the order tried.
STATE_DICT_KEYS = ("state_dict", "model", "net", "model_state_dict")
#: Prefixes wrappers add to every key: DataParallel/DDP (``module.``), ``torch.compile`` (``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 12


@dataclass
class ModelSpec:
    """``MODULE:CALLABLE`` from the command line: a dotted module or a .py path, and a name in it."""

    module: str
    attr: str

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        module, sep, attr = text.rpartition(":")
        if not sep or not module or not attr:
            raise SnnCompileError(f"--model {text!r} must be MODULE:CALLABLE, e.g. mynets:Net or "
                                  f"models/spikformer.py:spikformer")
        return cls(module, attr)

    @property
    def is_file(self) -> bool:
        return self.module.endswith(".py") or "/" in self.module or "\\" in self.module


def parse_kwargs(text: Optional[str]) -> dict:
    """``--model-kwargs`` JSON -> keyword arguments (an object)."""
    if text is None:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnnCompileError(f"--model-kwargs is not valid JSON ({exc.msg} at character {exc.pos}): "
                              f"{text!r}") from None
    if not isinstance(kwargs, dict):
        raise SnnCompileError(f"--model-kwargs must be a JSON object of keyword arguments, e.g. "
                              f"'{{\"T\": 4}}', got {type(kwargs).__name__}")
    return kwargs


@contextlib.contextmanager
def _on_path(folder: Path):
    """The model's own imports (``from models import ...``) resolve beside its file."""
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(folder))


@contextlib.contextmanager
def _stderr_kept_on_success():
    """What the model's code writes to stderr is shown if it succeeds; on failure our one
    ``error:`` line replaces it (argparse's usage text, tracebacks printed by the code)."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield
    sys.stderr.write(buffer.getvalue())


def _import_module(spec: ModelSpec):
    from snncompile.frontend import legacy_spikingjelly
    legacy_spikingjelly.install()  # official transformer code imports spikingjelly.clock_driven
    with _stderr_kept_on_success():
        return _import_module_quietly(spec)


def _import_module_quietly(spec: ModelSpec):
    try:
        if spec.is_file:
            path = Path(spec.module)
            if not path.is_file():
                raise SnnCompileError(f"--model: file '{path}' does not exist")
            name = path.stem
            other = getattr(sys.modules.get(name), "__file__", None)
            if name in sys.modules and (other is None or Path(other).resolve() != path.resolve()):
                raise SnnCompileError(f"--model: file '{path}' has the name of the already imported module "
                                      f"'{name}'; rename the file")
            with _on_path(path.resolve().parent):
                loader_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[name] = module  # dataclasses and pickling look the module up by name
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)
                    raise
                return module
        with _on_path(Path.cwd()):
            return importlib.import_module(spec.module)
    except SnnCompileError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and spec.module.startswith(exc.name) and not spec.is_file:
            raise SnnCompileError(f"--model: module '{spec.module}' cannot be imported (no module "
                                  f"'{exc.name}'; is it on PYTHONPATH or in the working folder?)") from None
        hint = ("; SpikingJelly's model zoo imports torchvision only for load_state_dict_from_url: install "
                "torchvision, or copy the model's code into your own module" if str(exc.name).startswith(
                    "torchvision") else "")
        raise SnnCompileError(f"--model: importing '{spec.module}' failed: {exc}{hint}") from None
    except SystemExit as exc:  # a training script that parses its arguments at import
        raise SnnCompileError(f"--model: importing '{spec.module}' exited (SystemExit {exc.code}); point "
                              f"--model at the module that defines the model, not a script") from None
    except Exception as exc:
        raise SnnCompileError(f"--model: importing '{spec.module}' failed: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None


def build_model(spec: ModelSpec, kwargs: dict) -> nn.Module:
    """Import ``spec.module`` (this runs its code) and call ``spec.attr(**kwargs)``."""
    module = _import_module(spec)
    target = module
    for part in spec.attr.split("."):
        if not hasattr(target, part):
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise SnnCompileError(f"--model: '{spec.module}' has no '{spec.attr}' (it defines: "
                                  f"{', '.join(names) or 'no classes or functions'})")
        target = getattr(target, part)
    if not callable(target):
        raise SnnCompileError(f"--model: '{spec.module}:{spec.attr}' is a {type(target).__name__}, "
                              f"not a class or function")
    try:
        with _stderr_kept_on_success():
            model = target(**kwargs)
    except SystemExit as exc:
        raise SnnCompileError(f"--model: calling {spec.attr}(**{kwargs}) exited (SystemExit {exc.code})") from None
    except Exception as exc:
        raise SnnCompileError(f"--model: calling {spec.attr}(**{kwargs}) raised "
                              f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise SnnCompileError(f"--model: {spec.attr}(...) returned a {type(model).__name__}, "
                              f"not a torch.nn.Module")
    return model


def _metadata_globals() -> list:
    """What ``weights_only`` may rebuild besides tensors: argparse.Namespace and numpy scalars."""
    import argparse

    import numpy as np
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # pragma: no cover - numpy < 1.25
        from numpy.core.multiarray import scalar
    dtypes = {type(np.dtype(code)) for code in "?bhilqBHILQefd"}
    return [argparse.Namespace, np.dtype, (scalar, "numpy.core.multiarray.scalar"),
            (scalar, "numpy._core.multiarray.scalar"), *sorted(dtypes, key=str)]


def read_checkpoint(path: Path):
    """``torch.load(path, weights_only=True)``, with plain-words errors."""
    if not path.exists():
        raise SnnCompileError(f"checkpoint '{path}' does not exist")
    if path.is_dir() or path.stat().st_size == 0:
        raise SnnCompileError(f"checkpoint '{path}' is {'a folder' if path.is_dir() else 'empty'}")
    try:
        with torch.serialization.safe_globals(_metadata_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _unsafe_globals(path)
        model_class = _pickled_model_class(names)
        if model_class:
            raise SnnCompileError(
                f"checkpoint '{path}' is a whole pickled model ({model_class}), not a state dict: export "
                f"it without --model (add --trust-code if its classes are your own), or save "
                f"model.state_dict() instead") from None
        what = ", ".join(names[:3]) or _first_line(exc)
        raise SnnCompileError(f"checkpoint '{path}' holds Python objects that are not tensors ({what}); "
                              f"reading it would run code. Save model.state_dict() (a dict of "
                              f"tensors)") from None
    except Exception as exc:
        raise SnnCompileError(f"checkpoint '{path}' is not a readable PyTorch file "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _unsafe_globals(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        return []
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []


#: Globals that only a pickled nn.Module (not a state dict) references.
_MODULE_MARKERS = ("torch.nn.modules.", "torch._utils._rebuild_parameter", "snntorch.", "spikingjelly.", "norse.")


def _pickled_model_class(names: list[str]) -> Optional[str]:
    """The model class of a ``torch.save(model)`` file (judged by name, nothing imported), else None."""
    if not any(n.startswith(_MODULE_MARKERS) for n in names):
        return None
    classes = [n for n in names if n.rsplit(".", 1)[-1][:1].isupper()]
    own = [n for n in classes if not n.startswith(("torch.", "collections.", "snntorch.", "spikingjelly.", "norse."))]
    return (own or classes or names)[0]


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def find_state_dict(obj, path: Path, key: Optional[str] = None) -> dict:
    """The state dict inside a checkpoint: ``obj[key]``, ``obj`` itself, or the first of :data:`STATE_DICT_KEYS`."""
    if not isinstance(obj, dict):
        raise SnnCompileError(f"checkpoint '{path}' holds a {type(obj).__name__}, not a state dict "
                              f"(a dict of tensors)")
    if key is not None:
        if key not in obj:
            raise SnnCompileError(f"checkpoint '{path}' has no key '{key}' (top-level keys: "
                                  f"{_listed(sorted(map(str, obj)))})")
        if not _is_state_dict(obj[key]):
            raise SnnCompileError(f"checkpoint '{path}': '{key}' holds a {type(obj[key]).__name__}, "
                                  f"not a state dict (a dict of tensors)")
        return obj[key]
    if _is_state_dict(obj):
        return obj
    for name in STATE_DICT_KEYS:
        if _is_state_dict(obj.get(name)):
            return obj[name]
    raise SnnCompileError(f"checkpoint '{path}' holds no state dict at its top level or under "
                          f"{', '.join(repr(k) for k in STATE_DICT_KEYS)} (top-level keys: "
                          f"{_listed(sorted(map(str, obj)))}); name the key with --key")


def strip_wrapper_prefixes(state: dict, expected: set[str]) -> dict:
    """Drop DataParallel/DDP/``torch.compile`` prefixes that every key has but the model's lack."""
    while True:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)
                       and not all(k.startswith(p) for k in expected)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}


def _listed(names: list[str]) -> str:
    more = len(names) - _MAX_LISTED
    return ", ".join(names[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def load_weights(model: nn.Module, state: dict, path: Path) -> None:
    """Load ``state`` into ``model``; every missing, unexpected or misshapen key is an error."""
    own = model.state_dict()
    state = strip_wrapper_prefixes(state, set(own))
    for name, value in state.items():
        if name in own and tuple(value.shape) != tuple(own[name].shape):
            raise SnnCompileError(f"checkpoint '{path}': parameter '{name}' has shape {tuple(value.shape)}, "
                                  f"the model's has {tuple(own[name].shape)} (check --model-kwargs)")
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing from the checkpoint: {_listed(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"not in the model: {_listed(result.unexpected_keys)}")
    if problems:
        raise SnnCompileError(f"checkpoint '{path}' does not fit the model ({'; '.join(problems)})")


def model_from_checkpoint(path, model_spec: str, kwargs: Optional[dict] = None,
                          key: Optional[str] = None) -> nn.Module:
    """Build ``MODULE:CALLABLE(**kwargs)`` and load checkpoint ``path`` into it (eval mode).

    The checkpoint is read before the model's code runs, so a bad file runs no code."""
    path = Path(path)
    spec = ModelSpec.parse(model_spec)
    state = find_state_dict(read_checkpoint(path), path, key)
    model = build_model(spec, kwargs or {})
    load_weights(model, state, path)
    return model.eval()
