"""NIR files from snnTorch's and SpikingJelly's own exporters, with their known gaps named.

Both exporters lose semantics silently or fail with messages that name no module
(``shared/design/neuron-mapping.md``): snnTorch writes ``reset_mechanism='subtract'`` (its
default) as a reset to zero and drops modules it does not know with a print; SpikingJelly
raises on BatchNorm/MaxPool and soft reset without naming the module, and its neurons fire
on ``>=`` where NIR fires on ``>``. ``library_to_nir`` checks the model first, then calls the
library's exporter, so users get one precise warning or ``SnnCompileError`` per module.
"""
from __future__ import annotations

import nir
import torch

from snncompile.errors import SnnCompileError

#: Module classes snnTorch's ``export_to_nir`` maps (anything else is dropped by it).
_SNNTORCH_EXPORTS = ("Leaky", "Synaptic", "RLeaky", "RSynaptic")
_TORCH_EXPORTS = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.AvgPool2d, torch.nn.Flatten)
_SNNTORCH_NEURONS = _SNNTORCH_EXPORTS
#: snnTorch neurons whose ``reset_mechanism='zero'`` is not NIR's reset (checked in their source).
_ZERO_RESET_QUIRKS = {
    "RLeaky": "also discards the input of the step after a spike (mem = 0)",
    "Synaptic": "also zeroes the synaptic current",
    "RSynaptic": "also zeroes the synaptic current",
}


def library_of(model: torch.nn.Module) -> str:
    """'snntorch' or 'spikingjelly': the library whose exporter fits the model's modules."""
    roots = {type(m).__module__.split(".")[0] for m in model.modules()}
    if "snntorch" in roots:
        return "snntorch"
    if "spikingjelly" in roots:
        return "spikingjelly"
    raise SnnCompileError("model has neither snnTorch nor SpikingJelly modules; "
                          "no library NIR exporter applies")


def library_to_nir(model: torch.nn.Module, example_input: torch.Tensor, path=None,
                   dt: float = 1e-4) -> tuple[nir.NIRGraph, list[str]]:
    """Export ``model`` with its own library's NIR exporter; returns (NIR graph, warnings).

    ``example_input``: one batch as the model takes it (SpikingJelly multi-step: (T, N, ...)).
    Raises ``SnnCompileError`` naming the module for what the exporter cannot write.
    """
    library = library_of(model)
    check = _check_snntorch if library == "snntorch" else _check_spikingjelly
    warnings = check(model)
    try:
        if library == "snntorch":
            from snntorch.export_nir import export_to_nir
            graph = export_to_nir(model, example_input, ignore_dims=[0])
        else:
            from spikingjelly.activation_based.nir_exchange import export_to_nir
            graph = export_to_nir(model, example_input, dt=dt)
    except SnnCompileError:
        raise
    except Exception as exc:  # the exporters raise ValueError/NotImplementedError/RuntimeError
        raise SnnCompileError(f"{library}'s NIR exporter failed on {type(model).__name__}: "
                              f"{type(exc).__name__}: {exc}") from None
    if path is not None:
        nir.write(str(path), graph)
    return graph, warnings


def _modules(model: torch.nn.Module):
    for name, module in model.named_modules():
        if name:
            yield name, module, type(module).__name__


def _check_snntorch(model: torch.nn.Module) -> list[str]:
    import snntorch as snn

    warnings = []
    exported = tuple(getattr(snn, c) for c in _SNNTORCH_EXPORTS) + _TORCH_EXPORTS
    for name, module, cls in _modules(model):
        inside_recurrent = any(name.startswith(p + ".") for p, m in model.named_modules()
                               if isinstance(m, (snn.RLeaky, snn.RSynaptic)))
        if inside_recurrent or isinstance(module, torch.nn.Sequential):
            continue
        if not isinstance(module, exported):
            raise SnnCompileError(f"module '{name}' ({cls}): snnTorch's NIR exporter does not "
                                  f"export {cls} (it would drop the module silently)")
        if isinstance(module, tuple(getattr(snn, c) for c in _SNNTORCH_NEURONS)):
            where = f"module '{name}' (snntorch.{cls})"
            if module.reset_mechanism != "zero":
                warnings.append(
                    f"{where}: reset_mechanism='{module.reset_mechanism}' is written by snnTorch's "
                    f"NIR exporter as a reset to zero (NIR has no subtractive or no-reset field): "
                    f"the NIR graph's spikes will differ from the model's")
            elif cls in _ZERO_RESET_QUIRKS:
                warnings.append(f"{where}: snnTorch's {cls} reset to zero {_ZERO_RESET_QUIRKS[cls]}; "
                                f"NIR resets only v after a spike: the NIR graph's spikes will differ")
            if float(module.graded_spikes_factor) != 1.0:
                warnings.append(f"{where}: graded_spikes_factor={float(module.graded_spikes_factor):g} "
                                f"is not exported; NIR spikes are 1")
            if getattr(module, "inhibition", False):
                raise SnnCompileError(f"{where}: inhibition=True has no NIR equivalent")
            if cls in ("Leaky", "Synaptic"):
                _check_per_neuron(module, where)
    return warnings


def _check_per_neuron(module, where: str) -> None:
    """snnTorch's exporter copies beta/alpha/threshold as they are: a scalar gives a NIR node
    without a shape, and NIR's type inference then fails with a message naming no module."""
    keys = ("alpha", "beta", "threshold") if hasattr(module, "alpha") else ("beta", "threshold")
    sizes = {k: int(torch.as_tensor(getattr(module, k)).numel()) for k in keys}
    if min(sizes.values()) <= 1 or len(set(sizes.values())) > 1:
        raise SnnCompileError(
            f"{where}: snnTorch's NIR exporter needs {', '.join(keys)} as tensors with one value "
            f"per neuron (got sizes {sizes}); e.g. beta=torch.full((n,), 0.9), "
            f"threshold=torch.ones(n)")


def _check_spikingjelly(model: torch.nn.Module) -> list[str]:
    from spikingjelly.activation_based import neuron

    warnings = []
    for name, module, cls in _modules(model):
        if "BatchNorm" in cls or "MaxPool" in cls:
            raise SnnCompileError(
                f"module '{name}' ({cls}): NIR has no {cls[:-2] if cls[-2:] in ('1d', '2d') else cls} "
                f"node and SpikingJelly's NIR exporter fails on it; fold BatchNorm into the "
                f"convolution before it, or export with `snncompile export model.pt` instead")
        if isinstance(module, neuron.BaseNode):
            where = f"module '{name}' (spikingjelly.{cls})"
            if module.v_reset is None:
                raise SnnCompileError(f"{where}: soft reset (v_reset=None, subtract threshold) has "
                                      f"no NIR equivalent; SpikingJelly's NIR exporter refuses it")
            warnings.append(f"{where}: fires on v >= v_threshold; NIR fires on v > v_threshold, so "
                            f"spikes can differ where v equals the threshold exactly")
    return warnings
