"""Safe loading of a whole pickled model (``torch.save(model)``).

Unpickling runs code, so without ``trust_code`` the file is read by our own unpickler
(:mod:`snncompile.frontend.unpickler`): it rebuilds tensors and creates the classes of
:data:`~snncompile.frontend.pickle_policy.CLASS_MODULES` (torch, snnTorch, SpikingJelly,
Norse modules) the way torch.save writes them, and calls nothing else. Anything else
(the user's own ``class Net``) needs ``trust_code=True``, which loads with the full
unpickler and needs the defining module to be importable. Either way a model carrying
hooks (code run around ``forward`` that tracing would not see) is refused by name.
"""
from __future__ import annotations

import contextlib
import pickle
import pickletools
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from snncompile.errors import SnnCompileError
from snncompile.frontend import pickle_policy
from snncompile.frontend.unpickler import MAX_TENSOR_BYTES, RefusedFile, load_zip, read_pickle

#: nn.Module attributes holding hooks that change what forward (or its gradient) computes.
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _names_in_file(path: Path) -> list[str]:
    """The ``module.name`` of every GLOBAL in the file's pickle, read without running it."""
    with zipfile.ZipFile(path) as archive:
        data = read_pickle(archive)
    return [arg.replace(" ", ".", 1) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"]


def _check_names(path: Path, names: list[str]) -> None:
    """Refuse, listing them all, the names that are not on the allow-list (no import)."""
    refused = list(dict.fromkeys(n for n in names if pickle_policy.refusal(n)))
    scripts = [r for r in refused if r.startswith("__main__.")]
    if scripts:
        raise SnnCompileError(
            f"model file '{path}' was saved from a script: its class {scripts[0][9:]!r} lives in __main__, "
            f"which cannot be imported again. Move the class into a module (e.g. mynet.py), re-save the "
            f"model, and export with --trust-code")
    if refused:
        raise SnnCompileError(
            f"model file '{path}' contains {', '.join(repr(r) for r in refused)}, not on the allow-list "
            f"of torch / snnTorch / SpikingJelly / Norse module classes. Loading it would run code "
            f"from that file. If you trust it, rerun with --trust-code (the module defining "
            f"{refused[0].rsplit('.', 1)[0]!r} must be importable, e.g. on PYTHONPATH)")


def _check_loaded(path: Path, model: nn.Module) -> None:
    """What a trusted load may still bring: hooks (code run around ``forward`` that the
    traced graph would silently leave out) and expanded tensors of absurd logical size."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict(keep_vars=True).values()
                if isinstance(t, torch.Tensor))
    if total > MAX_TENSOR_BYTES:
        raise SnnCompileError(f"model file '{path}': its parameters and buffers span {total:,} bytes, over "
                              f"the {MAX_TENSOR_BYTES >> 30} GiB limit (an expanded or stride-0 tensor?)")
    for name, module in model.named_modules():
        for attr in HOOK_DICTS:
            if getattr(module, attr, None):
                kind = attr.strip("_").replace("_", " ")[:-1]
                raise SnnCompileError(
                    f"model file '{path}': module '{name or type(module).__name__}' has a {kind} "
                    f"({type(module).__name__}.{attr}); hooks change what the model computes outside "
                    f"its forward and cannot be exported. Remove them and save the model again")
        if "forward" in vars(module):
            raise SnnCompileError(f"model file '{path}': module '{name or type(module).__name__}' replaces "
                                  f"its forward method with an instance attribute; this is not exported")
    from torch.nn.modules import module as torch_module
    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        if getattr(torch_module, attr, None):
            raise SnnCompileError(f"loading model file '{path}' registered a global {attr[8:-1].replace('_', ' ')}"
                                  f" (torch.nn.modules.module.{attr}); it is not exported")


def _check_readable(path: Path) -> None:
    from snncompile.commands._common import check_input_file

    check_input_file(path, "model")
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
                names = _names_in_file(path)
            except SnnCompileError:
                raise
            except Exception as exc:
                raise SnnCompileError(f"model file '{path}' is not a readable PyTorch file ({exc})") from None
            _check_names(path, names)
            obj = load_zip(path)
    except SnnCompileError:
        raise
    except RefusedFile as exc:
        raise SnnCompileError(f"model file '{path}' cannot be loaded safely: {exc}; if you trust "
                              f"the file, rerun with --trust-code") from None
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
        raise SnnCompileError(f"model file '{path}' holds {_a(type(obj).__name__)}, not a torch.nn.Module")
    _check_loaded(path, obj)
    return obj.eval()


def _a(noun: str) -> str:
    """'a Linear', 'an int'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
