"""What a pickled model may name, and how each name is looked up without running code.

A ``torch.save(model)`` pickle names classes (the modules, parameter NamedTuples), a few
torch rebuild helpers, and functions stored as attributes (surrogate gradients, Norse
step and reset functions). Everything else is refused *by name*, before any module is
imported: importing a module runs its top-level code (``torch.utils.model_dump.__main__``
would run ``sys.exit(main())``), so only modules under :data:`CLASS_MODULES` are ever
imported, and never a test module or a ``__main__``.
"""
from __future__ import annotations

import importlib
import sys

import torch
from torch import nn

#: Modules whose classes (nn.Module subclasses, NamedTuple parameters, autograd Functions)
#: a model may name. Prefixes of dotted module names; whole libraries are never listed.
CLASS_MODULES = (
    "torch.nn.modules.",
    "snntorch._neurons.", "snntorch.surrogate",
    "spikingjelly.activation_based.neuron", "spikingjelly.activation_based.layer",
    "spikingjelly.activation_based.surrogate", "spikingjelly.activation_based.base",
    # SpikingJelly 2.0's model zoo (its modules define nn.Module classes only)
    "spikingjelly.activation_based.model.sew_resnet", "spikingjelly.activation_based.model.spiking_resnet",
    "spikingjelly.activation_based.model.ms_resnet", "spikingjelly.activation_based.model.spiking_vgg",
    "spikingjelly.activation_based.model.parametric_lif_net",
    # the legacy import path, served on SpikingJelly 2.0 by frontend.legacy_spikingjelly
    "spikingjelly.clock_driven.neuron", "spikingjelly.clock_driven.layer",
    "spikingjelly.clock_driven.surrogate", "spikingjelly.clock_driven.base",
    "norse.torch.module.", "norse.torch.functional.lif", "norse.torch.functional.leaky_integrator",
    "norse.torch.functional.threshold",
)

#: Plain functions a model may *reference* (stored as attributes, never called while
#: loading): the step and reset functions Norse modules keep, surrogate functions.
REFERENCED_FUNCTIONS = frozenset({
    "norse.torch.functional.reset.reset_value",
    "norse.torch.functional.reset.reset_subtract",
    "norse.torch.functional.lif.lif_step",
    "norse.torch.functional.lif.lif_feed_forward_step",
    "norse.torch.functional.lif_box.lif_box_feed_forward_step",
    "norse.torch.functional.leaky_integrator.li_step",
    "norse.torch.functional.leaky_integrator.li_feed_forward_step",
    "norse.torch.functional.leaky_integrator_box.li_box_feed_forward_step",
    "norse.torch.functional.threshold.heaviside",
    "norse.torch.functional.heaviside.heaviside",
    "spikingjelly.activation_based.surrogate.heaviside",
})

#: Storage type names of the persistent ids torch.save writes -> element dtype.
STORAGE_TYPES = {f"torch.{name}Storage": dtype for name, dtype in {
    "Float": torch.float32, "Double": torch.float64, "Half": torch.float16, "BFloat16": torch.bfloat16,
    "Long": torch.int64, "Int": torch.int32, "Short": torch.int16, "Char": torch.int8,
    "Byte": torch.uint8, "Bool": torch.bool}.items()}


class StorageType:
    """Stands for ``torch.FloatStorage`` & co.: only persistent_load may use it."""

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return self.name


def _unsafe_module(module: str) -> bool:
    parts = module.split(".")
    return any(p == "__main__" or p.startswith(("test", "_test")) or p == "conftest" for p in parts)


def class_module_allowed(module: str) -> bool:
    """A module whose classes may be named (and hence imported)."""
    if _unsafe_module(module):
        return False
    return any(module.startswith(p) if p.endswith(".") else module == p or module.startswith(p + ".")
               for p in CLASS_MODULES)


def allowed_class(obj) -> bool:
    """Classes a pickle may create (``__new__`` + state) or name: modules, parameter
    NamedTuples, and autograd Functions (snnTorch keeps ``ATan.apply``)."""
    if not isinstance(obj, type) or not class_module_allowed(obj.__module__):
        return False
    if issubclass(obj, nn.Module) or issubclass(obj, torch.autograd.Function):
        return True
    return issubclass(obj, tuple) and hasattr(obj, "_fields")  # a NamedTuple


def _import_attr(module: str, qualname: str):
    mod = sys.modules.get(module) or importlib.import_module(module)
    obj = mod
    for attr in qualname.split("."):
        if attr.startswith("__"):
            return None
        obj = getattr(obj, attr, None)
    return obj


def refusal(full_name: str) -> str | None:
    """None when ``module.qualname`` may appear in a model file, else why not (no import)."""
    if full_name in SPECIAL or full_name in REFERENCED_FUNCTIONS or full_name in STORAGE_TYPES:
        return None
    if full_name.startswith("torch.") and isinstance(getattr(torch, full_name[6:], None), torch.dtype):
        return None
    module = full_name.rsplit(".", 1)[0]
    if not class_module_allowed(module):
        return "not on the allow-list"
    return None


def resolve(module: str, name: str):
    """The object a GLOBAL names, imported only once :func:`refusal` has allowed it."""
    full_name = f"{module}.{name}"
    why = refusal(full_name)
    if why:
        raise PermissionError(f"{full_name!r}, {why}")
    if full_name in SPECIAL:
        return SPECIAL[full_name]
    if full_name in STORAGE_TYPES:
        return StorageType(full_name, STORAGE_TYPES[full_name])
    if full_name.startswith("torch.") and "." not in full_name[6:] and \
            isinstance(getattr(torch, full_name[6:], None), torch.dtype):
        return getattr(torch, full_name[6:])
    obj = _import_attr(module, name)
    if full_name in REFERENCED_FUNCTIONS:   # REDUCE never calls it (unpickler.Unpickler.reduce)
        if obj is None or not callable(obj):
            raise PermissionError(f"{full_name!r} does not exist in the installed library")
        return obj
    if obj is None or not allowed_class(obj):
        raise PermissionError(f"{full_name!r}, not on the allow-list (not a module, parameter or "
                              f"autograd class)")
    return obj


#: Names with a fixed meaning while loading; the callables among them are
#: :class:`snncompile.frontend.unpickler.Unpickler` methods, looked up by tag.
SPECIAL = {
    "torch._utils._rebuild_tensor_v2": "rebuild_tensor",
    "torch._utils._rebuild_parameter": "rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state": "rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2": "rebuild_from_type",
    "collections.OrderedDict": "ordered_dict",
    "builtins.set": "set", "__builtin__.set": "set",
    "builtins.frozenset": "frozenset", "__builtin__.frozenset": "frozenset",
    "builtins.getattr": "getattr", "__builtin__.getattr": "getattr",
    "_codecs.encode": "encode",
    "torch.device": "device",
    "torch.Size": "size",
    "copyreg._reconstructor": "reconstructor",
    "torch._tensor.Tensor": torch.Tensor, "torch.Tensor": torch.Tensor,
    "torch.nn.parameter.Parameter": nn.Parameter,
}
