"""One adapter per neuron library: a torch neuron module -> IR Neuron fields + input gain.

The equations and why each mapping is exact are in docs/design neuron-mapping.md; in
short (IR: ``u = u(1-du) + x; v = v(1-dv) + u + bias``, then fire and reset):

- SpikingJelly IF/LIF/ParametricLIF: ``du = 1``, ``dv = 1/tau``, compare ``>=``;
  ``decay_input=True`` is an input gain ``1/tau``; hard reset to ``v_reset`` (the
  passes shift it to 0), soft reset subtracts ``v_threshold``.
- snnTorch Leaky/Synaptic: ``dv = 1 - beta`` (``du = 1 - alpha``), compare ``>``;
  delayed subtract (``reset_delay=True``) is an immediate subtract of ``threshold/beta``.
- Norse LIFCell/LIFBoxCell: ``dv = dt*tau_mem_inv`` (also the input gain),
  ``du = dt*tau_syn_inv`` (1 for the box cell), ``bias = dv*v_leak``, ``v_init = v_leak``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from snncompile.errors import SnnCompileError


@dataclass
class NeuronSpec:
    """What a neuron module becomes: IR Neuron keyword arguments and an input gain."""

    params: dict = field(default_factory=dict)
    #: Multiplies the neuron's input current (folded into the synapse before it).
    input_gain: Optional[np.ndarray] = None
    #: Where the mapping is exact only under a condition the user should know.
    warnings: list = field(default_factory=list)


def _arr(v) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float64).cpu().numpy()
    return np.asarray(v, dtype=np.float64)


def _fail(path: str, module, why: str) -> SnnCompileError:
    return SnnCompileError(f"module '{path}' ({type(module).__module__}.{type(module).__name__}): {why}")


# -- SpikingJelly -----------------------------------------------------------
def _spikingjelly(path: str, m) -> NeuronSpec:
    from spikingjelly.activation_based import neuron as sjn

    vth = _arr(m.v_threshold)
    params = dict(du=1.0, threshold=vth, compare=">=", source=f"spikingjelly.{type(m).__name__}")
    if m.v_reset is None:
        params.update(reset_mode="subtract", reset_amount=vth)
        v_reset = np.float64(0.0)
    else:
        v_reset = _arr(m.v_reset)
        params.update(reset_mode="zero", reset_value=v_reset, v_init=v_reset)
    if type(m) is sjn.IFNode:
        return NeuronSpec(dict(params, dv=0.0))
    if type(m) is sjn.LIFNode:
        inv_tau = 1.0 / _arr(m.tau)
    else:  # ParametricLIFNode: 1/tau = sigmoid(w)
        inv_tau = _arr(torch.sigmoid(m.w.detach().to(torch.float64)))
    # H = V - (V - Vr)/tau + g*X with g = 1/tau if decay_input else 1
    params.update(dv=inv_tau, bias=inv_tau * v_reset)
    return NeuronSpec(params, input_gain=inv_tau if m.decay_input else None)


# -- snnTorch ---------------------------------------------------------------
def _snntorch(path: str, m) -> NeuronSpec:
    import snntorch

    if getattr(m, "inhibition", False):
        raise _fail(path, m, "inhibition=True has no neuromorphic equivalent; train without it")
    if getattr(m, "state_quant", False):
        raise _fail(path, m, "state_quant is not supported; use snncompile quantize instead")
    if not np.all(_arr(m.graded_spikes_factor) == 1.0):
        raise _fail(path, m, "graded_spikes_factor != 1 is not supported")
    thr = _arr(m.threshold)
    if not np.all(thr > 0):
        raise _fail(path, m, "threshold must be positive")
    beta = np.clip(_arr(m.beta), 0.0, 1.0)
    params = dict(dv=1.0 - beta, threshold=thr, compare=">", source=f"snntorch.{type(m).__name__}")
    if isinstance(m, snntorch.Synaptic):
        params["du"] = 1.0 - np.clip(_arr(m.alpha), 0.0, 1.0)
    else:
        params["du"] = 1.0
    mode = {0: "subtract", 1: "zero", 2: "none"}[int(m.reset_mechanism_val)]
    params["reset_mode"] = mode
    if mode == "subtract" and m.reset_delay:
        # mem[t] = beta*mem[t-1] + x - thr*H(mem[t-1]-thr) equals an immediate subtract of
        # thr/beta applied to the decayed state (beta*(v - thr/beta) = beta*v - thr).
        if not np.all(beta > 0):
            raise _fail(path, m, "reset_delay=True with beta == 0 cannot be mapped; use reset_delay=False")
        params["reset_amount"] = thr / beta
    elif mode == "zero" and m.reset_delay and isinstance(m, snntorch.Synaptic):
        raise _fail(path, m, "Synaptic with reset_mechanism='zero' and reset_delay=True zeroes the "
                    "membrane one step late (a refractory step); use reset_delay=False")
    spec = NeuronSpec(params)
    if mode == "subtract" and not m.reset_delay:
        # snnTorch's "avoid double reset" term raises the threshold to 2*thr for one step
        # when the membrane is still above thr after a subtraction; no LIF has that.
        spec.warnings.append(
            f"module '{path}' (snntorch {type(m).__name__}): reset_mechanism='subtract' with "
            f"reset_delay=False is mapped to an immediate subtract of the threshold; it equals "
            f"snnTorch exactly while the membrane never exceeds 2*threshold (snnTorch then "
            f"skips a spike); reset_delay=True or reset_mechanism='zero' map exactly")
    return spec


# -- Norse ------------------------------------------------------------------
def _norse(path: str, m) -> NeuronSpec:
    from norse.torch import LIFBoxCell
    from norse.torch.functional.reset import reset_subtract, reset_value

    p, dt = m.p, float(m.dt)
    a = dt * _arr(p.tau_mem_inv)
    params = dict(dv=a, threshold=_arr(p.v_th), compare=">", bias=a * _arr(p.v_leak),
                  v_init=_arr(p.v_leak), source=f"norse.{type(m).__name__}")
    if isinstance(m, LIFBoxCell):
        params["du"] = 1.0
        reset = getattr(p, "reset_method", reset_value)
        if reset is reset_subtract:
            params.update(reset_mode="subtract", reset_amount=_arr(p.v_th))
        elif reset is reset_value:
            params.update(reset_mode="zero", reset_value=_arr(p.v_reset))
        else:
            raise _fail(path, m, f"reset method {reset!r} is not supported")
    else:
        params.update(du=dt * _arr(p.tau_syn_inv), reset_mode="zero", reset_value=_arr(p.v_reset))
    return NeuronSpec(params, input_gain=a)


def _loaded(package: str) -> bool:
    """A model can only contain a library's neurons if that library is imported already;
    checking sys.modules keeps the import of unused libraries (seconds) off the export path."""
    return package in sys.modules


def _registry() -> list[tuple[tuple[type, ...], Callable]]:
    """(classes, adapter) for the neuron libraries that are loaded."""
    found = []
    if _loaded("spikingjelly"):
        from spikingjelly.activation_based import neuron as sjn
        found.append(((sjn.IFNode, sjn.LIFNode, sjn.ParametricLIFNode), _spikingjelly))
    found += _legacy_spikingjelly()
    if _loaded("snntorch"):
        import snntorch
        found.append(((snntorch.Leaky, snntorch.Synaptic), _snntorch))
    if _loaded("norse"):
        from norse.torch import LIFBoxCell, LIFCell
        found.append(((LIFCell, LIFBoxCell), _norse))
    return found


def _legacy_spikingjelly() -> list[tuple[tuple[type, ...], Callable]]:
    """SpikingJelly 0.0.0.0.12 neurons (served by :mod:`.legacy_spikingjelly`): mapped as their 2.0 twins."""
    if not _loaded("snncompile.frontend.legacy_spikingjelly"):
        return []
    from snncompile.frontend import legacy_spikingjelly as legacy
    classes = legacy.neuron_classes()
    return [(classes, lambda path, m: _spikingjelly(path, legacy.activation_based_twin(m)))] if classes else []


def _neuron_base_classes() -> tuple[type, ...]:
    """Base classes of every neuron of the libraries: such a module is a neuron even if unsupported."""
    bases = []
    if _loaded("spikingjelly"):
        from spikingjelly.activation_based.neuron.base_node import BaseNode, SimpleBaseNode
        bases += [BaseNode, SimpleBaseNode]
    if _loaded("snntorch"):
        from snntorch._neurons.neurons import SpikingNeuron
        bases.append(SpikingNeuron)
    if _loaded("norse"):
        from norse.torch.module.snn import SNNCell
        bases.append(SNNCell)
    return tuple(bases)


def is_neuron(module) -> bool:
    """True for any neuron module of the supported libraries (a leaf when tracing)."""
    return isinstance(module, _neuron_base_classes()) or _adapter(module) is not None


def _adapter(module):
    # Exact types: a subclass (e.g. SpikingJelly's ILIFNode(LIFNode)) may change the equations.
    for classes, fn in _registry():
        if type(module) in classes:
            return fn
    return None


def neuron_spec(path: str, module) -> NeuronSpec:
    """The IR form of neuron ``module`` at ``path``; a clear error for unsupported ones."""
    fn = _adapter(module)
    if fn is None:
        raise _fail(path, module, "this neuron type is not supported (supported: SpikingJelly IFNode, "
                    "LIFNode, ParametricLIFNode; snnTorch Leaky, Synaptic; Norse LIFCell, LIFBoxCell)")
    return fn(path, module)
