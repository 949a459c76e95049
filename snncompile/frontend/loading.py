"""Safe loading of a whole pickled model (``torch.save(model)``).

Unpickling runs code, so the file is read with ``weights_only=True`` and an allow-list
made from the checkpoint's own globals: classes (and functions, e.g. surrogate
functions and Norse reset methods) defined in torch, snnTorch, SpikingJelly, Norse or
snncompile. Anything else (the user's own ``class Net``) needs ``trust_code=True``,
which loads with the full unpickler and needs the defining module to be importable.
"""
from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from snncompile.errors import SnnCompileError

#: Top-level packages whose classes may be instantiated while loading.
ALLOWED_PACKAGES = ("torch", "snntorch", "spikingjelly", "norse", "snncompile")
#: The builtins a pickled module legitimately needs (``getattr`` is replaced by _safe_getattr).
ALLOWED_BUILTINS = {"builtins.set", "builtins.frozenset", "builtins.slice", "builtins.complex",
                    "builtins.bytearray", "collections.OrderedDict", "collections.defaultdict"}


def _safe_getattr(obj, name: str):
    """``getattr`` for pickles (snnTorch stores ``Surrogate.apply``): public names of allowed
    objects only, so a pickle cannot reach ``__globals__`` and the like."""
    owner = obj if isinstance(obj, type) else type(obj)
    if not isinstance(name, str) or name.startswith("__") or not _allowed_module(owner.__module__):
        raise pickle.UnpicklingError(f"getattr({owner.__qualname__}, {name!r}) is not allowed")
    return getattr(obj, name)


def _allowed_module(module: str) -> bool:
    return module.split(".")[0] in ALLOWED_PACKAGES


#: Modules whose plain functions a model may reference (surrogate gradients, reset rules).
FUNCTION_MODULES = ("snntorch.surrogate", "snntorch._neurons", "spikingjelly.activation_based.surrogate",
                    "spikingjelly.activation_based.neuron", "norse.torch.functional")


def _allowed_object(obj) -> bool:
    """Modules, autograd functions and parameter tuples of the allowed packages; plain functions
    only from :data:`FUNCTION_MODULES` (a pickle can call what it may name, so no ``torch.hub``)."""
    module = getattr(obj, "__module__", "") or ""
    if not _allowed_module(module):
        return False
    if isinstance(obj, type):
        return issubclass(obj, (nn.Module, torch.autograd.Function, tuple))
    return callable(obj) and module.startswith(FUNCTION_MODULES)


def _resolve(qualname: str):
    """The object named ``module.attr`` (longest importable module prefix)."""
    parts = qualname.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            return obj
        except AttributeError:
            return None
    return None


def _safe_globals(path: Path, globals_in_file: list[str]) -> list:
    allowed, refused = [], []
    for name in globals_in_file:
        if name == "builtins.getattr":
            allowed.append((_safe_getattr, name))
            continue
        if name not in ALLOWED_BUILTINS and not _allowed_module(name):
            refused.append(name)  # never import a module the file names before it is allowed
            continue
        obj = _resolve(name)
        if name in ALLOWED_BUILTINS and obj is not None:
            allowed.append(obj)
        elif obj is not None and _allowed_object(obj):
            allowed.append((obj, name) if f"{obj.__module__}.{obj.__qualname__}" != name else obj)
        else:
            refused.append(name)
    scripts = [r for r in refused if r.startswith("__main__.")]
    if scripts:
        raise SnnCompileError(
            f"model file '{path}' was saved from a script: its class {scripts[0][9:]!r} lives in __main__, "
            f"which cannot be imported again. Move the class into a module (e.g. mynet.py), re-save the "
            f"model, and export with --trust-code")
    if refused:
        raise SnnCompileError(
            f"model file '{path}' contains {', '.join(repr(r) for r in refused)}, not on the allow-list "
            f"of torch / snnTorch / SpikingJelly / Norse / snncompile classes. Loading it would run code "
            f"from that file. If you trust it, rerun with --trust-code (the module defining "
            f"{refused[0].rsplit('.', 1)[0]!r} must be importable, e.g. on PYTHONPATH)")
    return allowed


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise SnnCompileError(f"model file '{path}' does not exist")
    if path.is_dir():
        raise SnnCompileError(f"model file '{path}' is a folder, not a file")
    if path.stat().st_size == 0:
        raise SnnCompileError(f"model file '{path}' is empty")


@contextlib.contextmanager
def _importable_from(*folders: Path):
    """With --trust-code the model's classes usually live in a .py beside it or in the
    working folder: make both importable while loading."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for f in added:
            sys.path.remove(f)


def load_model(path, trust_code: bool = False) -> nn.Module:
    """Load ``torch.save(model)`` output as an eval-mode module, refusing unknown classes."""
    path = Path(path)
    _check_readable(path)
    if not zipfile.is_zipfile(path):
        raise SnnCompileError(f"model file '{path}' is not a PyTorch file (torch.save writes a zip "
                              f"archive; legacy or other formats are not supported)")
    try:
        if trust_code:
            with _importable_from(Path.cwd(), path.resolve().parent):
                obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            try:
                names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception as exc:
                raise SnnCompileError(f"model file '{path}' is not a readable PyTorch file ({exc})") from None
            with torch.serialization.safe_globals(_safe_globals(path, names)):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except SnnCompileError:
        raise
    except ModuleNotFoundError as exc:
        raise SnnCompileError(f"model file '{path}' needs module '{exc.name}', which cannot be imported; "
                              f"put the code that defines the model's classes on PYTHONPATH") from None
    except AttributeError as exc:
        raise SnnCompileError(f"model file '{path}' refers to a class that its module no longer "
                              f"defines ({exc}); use the code the model was saved with") from None
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SnnCompileError(f"model file '{path}' cannot be loaded safely ({first}); if you trust "
                              f"the file, rerun with --trust-code") from None
    except Exception as exc:
        raise SnnCompileError(f"model file '{path}' is not a readable PyTorch file "
                              f"({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict):
        raise SnnCompileError(f"model file '{path}' holds a state_dict (a dict of tensors), not a model: "
                              f"save the whole model with torch.save(model, path), or build the model in "
                              f"Python and call snncompile.frontend.from_torch")
    if not isinstance(obj, nn.Module):
        raise SnnCompileError(f"model file '{path}' holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj.eval()
