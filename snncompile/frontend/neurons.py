"""One adapter per neuron library: a torch neuron module -> IR Neuron fields + input gain.

The equations and why each mapping is exact are in docs/design neuron-mapping.md; in
short (IR: ``u = u(1-du) + x; v = v(1-dv) + u + bias``, then fire and reset):

- SpikingJelly IF/LIF/ParametricLIF: ``du = 1``, ``dv = 1/tau``, compare ``>=``;
  ``decay_input=True`` is an input gain ``1/tau``; hard reset to ``v_reset`` (the
  passes shift it to 0), soft reset subtracts ``v_threshold``.
- snnTorch Leaky/Synaptic: ``dv = 1 - beta`` (``du = 1 - alpha``), compare ``>``;
  delayed subtract (``reset_delay=True``) is an immediate subtract of ``threshold/beta``.
  RLeaky/RSynaptic are the same neuron plus a recurrent synapse from its spikes back to
  its input (one step late, :attr:`NeuronSpec.recurrent`); the recurrent bias arrives
  every step including the first, so it becomes the neuron's ``bias`` (RLeaky) or its
  ``u_init = bias/alpha`` (RSynaptic: the current sees it at step 0, the delayed
  synapse from step 1). Lapicque is a Leaky with ``beta = 1 - dt/(R*C)`` and input gain
  ``dt/C``. Alpha is refused (no LIF resets its synaptic current).
- Norse LIFCell/LIFBoxCell/LIFRecurrentCell: ``dv = dt*tau_mem_inv`` (also the input gain),
  ``du = dt*tau_syn_inv`` (1 for the box cell), ``bias = dv*v_leak``, ``v_init = v_leak``;
  the recurrent cell adds its input and recurrent weights as synapses. Leaky-integrator
  readouts (LICell, LILinearCell, LIBoxCell) are the same equations with ``threshold = +inf``
  and no reset (a neuron that never fires, ``NeuronSpec.membrane``): the module returns ``v``,
  which the model may only return (an Output in mode ``membrane``).
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
    #: A synapse (IR Linear/Conv2d) from the neuron's spikes to its own input, one step late.
    recurrent: Optional[object] = None
    #: The cell's own input weights (Norse LIFRecurrentCell), applied before ``input_gain``.
    input_synapse: Optional[object] = None
    #: The module returns the membrane ``v`` (a leaky integrator), not spikes.
    membrane: bool = False


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
    if isinstance(m, sjn.IFNode):
        return NeuronSpec(dict(params, dv=0.0))
    if isinstance(m, sjn.LIFNode):
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
    gain = None
    if isinstance(m, snntorch.Lapicque):
        # mem = (1 - dt/(R*C)) * mem + (dt/C) * x: a Leaky with an input gain (no reset_delay option).
        rc, dt = _arr(m.R) * _arr(m.C), _arr(m.time_step)
        beta, gain = 1.0 - dt / rc, dt / _arr(m.C)
    else:
        beta = np.clip(_arr(m.beta), 0.0, 1.0)
    params = dict(dv=1.0 - beta, threshold=thr, compare=">", source=f"snntorch.{type(m).__name__}")
    synaptic = isinstance(m, (snntorch.Synaptic, snntorch.RSynaptic))
    if synaptic:
        params["du"] = 1.0 - np.clip(_arr(m.alpha), 0.0, 1.0)
    else:
        params["du"] = 1.0
    mode = {0: "subtract", 1: "zero", 2: "none"}[int(m.reset_mechanism_val)]
    params["reset_mode"] = mode
    reset_delay = getattr(m, "reset_delay", True)
    if mode == "subtract" and reset_delay:
        # mem[t] = beta*mem[t-1] + x - thr*H(mem[t-1]-thr) equals an immediate subtract of
        # thr/beta applied to the decayed state (beta*(v - thr/beta) = beta*v - thr).
        if not np.all(beta > 0):
            raise _fail(path, m, "reset_delay=True with beta == 0 cannot be mapped; use reset_delay=False")
        params["reset_amount"] = thr / beta
    elif mode == "zero" and reset_delay and synaptic:
        raise _fail(path, m, f"{type(m).__name__} with reset_mechanism='zero' and reset_delay=True zeroes the "
                    "membrane one step late (a refractory step); use reset_delay=False")
    spec = NeuronSpec(params, input_gain=gain)
    if isinstance(m, (snntorch.RLeaky, snntorch.RSynaptic)):
        _snntorch_recurrent(path, m, spec)
    if mode == "subtract" and not reset_delay:
        # snnTorch's "avoid double reset" term raises the threshold to 2*thr for one step
        # when the membrane is still above thr after a subtraction; no LIF has that.
        spec.warnings.append(
            f"module '{path}' (snntorch {type(m).__name__}): reset_mechanism='subtract' with "
            f"reset_delay=False is mapped to an immediate subtract of the threshold; it equals "
            f"snnTorch exactly while the membrane never exceeds 2*threshold (snnTorch then "
            f"skips a spike); reset_delay=True or reset_mechanism='zero' map exactly")
    return spec


def _snntorch_recurrent(path: str, m, spec: NeuronSpec) -> None:
    """RLeaky/RSynaptic: the recurrent layer as an IR synapse; its bias as a constant input."""
    from snntorch._neurons.rleaky import RecurrentOneToOne as LeakyOneToOne
    from snntorch._neurons.rsynaptic import RecurrentOneToOne as SynapticOneToOne

    from snncompile.ir import nodes as ir

    rec, name = m.recurrent, f"{path}.recurrent"
    if isinstance(rec, torch.nn.Linear):
        spec.recurrent = ir.Linear(name, weight=_arr(rec.weight))
    elif isinstance(rec, torch.nn.Conv2d):
        spec.recurrent = ir.Conv2d(name, weight=_arr(rec.weight), stride=rec.stride, padding=rec.padding,
                                   dilation=rec.dilation, groups=rec.groups)
    elif isinstance(rec, (LeakyOneToOne, SynapticOneToOne)):
        v = np.ravel(_arr(rec.V))
        spec.recurrent = ("one_to_one", v)  # sized by the population shape in the converter
        return
    else:
        raise _fail(path, m, f"recurrent layer {type(rec).__name__} is not supported")
    if rec.bias is None or not np.any(_arr(rec.bias)):
        return
    b = _arr(rec.bias)
    if isinstance(rec, torch.nn.Conv2d):
        b = b.reshape(-1, 1, 1)
    if isinstance(m, _snntorch_classes()[1]):
        # RSynaptic: the bias enters the current; the delayed synapse brings it from step 1 on,
        # u_init = b/alpha brings it at step 0 (u = alpha*u_init + x).
        alpha = np.clip(_arr(m.alpha), 0.0, 1.0)
        if not np.all(alpha > 0):
            raise _fail(path, m, "a recurrent bias with alpha == 0 cannot be mapped")
        spec.recurrent.bias = _arr(rec.bias)
        spec.params["u_init"] = b / alpha
    else:
        spec.params["bias"] = b


def _snntorch_classes():
    import snntorch
    return snntorch.RLeaky, snntorch.RSynaptic


def _snntorch_alpha(path: str, m) -> NeuronSpec:
    raise _fail(path, m, "snnTorch Alpha has no exact mapping: its membrane is a difference of two "
                "synaptic traces that a spike resets, and no LIF neuron (Lava, Loihi) resets its "
                "synaptic current; use Synaptic(alpha, beta), which has the same two time constants")


# -- Norse ------------------------------------------------------------------
def _norse_rate(dt: float, inv) -> np.ndarray:
    """``dt * tau_inv`` as Norse computes it: in the parameter's own dtype (LIParameters stay
    float32 in a ``.double()`` model), so the float64 IR holds the very factor eager uses."""
    return _arr(dt * inv)


def _norse(path: str, m) -> NeuronSpec:
    from norse.torch import LIFBoxCell
    from norse.torch.functional.reset import reset_subtract, reset_value

    p, dt = m.p, float(m.dt)
    a = _norse_rate(dt, p.tau_mem_inv)
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
        params.update(du=_norse_rate(dt, p.tau_syn_inv), reset_mode="zero", reset_value=_arr(p.v_reset))
    spec = NeuronSpec(params, input_gain=a)
    if hasattr(m, "recurrent_weights"):
        # LIFRecurrentCell: i += W_in x + W_rec z[t-1], then the LIFCell update; the input gain
        # dt*tau_mem_inv scales both terms (folded into W_rec here, into W_in by the passes).
        from snncompile.ir import nodes as ir
        spec.input_synapse = ir.Linear(f"{path}.input_weights", weight=_arr(m.input_weights))
        gain = np.reshape(a, (-1, 1)) if np.ndim(a) else a
        spec.recurrent = ir.Linear(f"{path}.recurrent_weights", weight=gain * _arr(m.recurrent_weights))
    return spec


def _norse_leaky_integrator(path: str, m) -> NeuronSpec:
    """LICell / LILinearCell (``i += x; v += dt*tau_mem_inv*(v_leak - v + i); i *= 1 - dt*tau_syn_inv``)
    and LIBoxCell (no current: ``v += dt*tau_mem_inv*(v_leak - v + x)``): the LIFCell mapping
    without the spike. The module's output is ``v``."""
    from norse.torch import LIBoxCell

    p, dt = m.p, float(m.dt)
    a = _norse_rate(dt, p.tau_mem_inv)
    du = 1.0 if isinstance(m, LIBoxCell) else _norse_rate(dt, p.tau_syn_inv)
    params = dict(du=du, dv=a, threshold=np.inf, reset_mode="none", reset_amount=0.0, bias=a * _arr(p.v_leak),
                  v_init=_arr(p.v_leak), source=f"norse.{type(m).__name__}")
    spec = NeuronSpec(params, input_gain=a, membrane=True)
    if hasattr(m, "input_weights"):   # LILinearCell: i += W x
        from snncompile.ir import nodes as ir
        spec.input_synapse = ir.Linear(f"{path}.input_weights", weight=_arr(m.input_weights))
    return spec


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
        found.append(((snntorch.Leaky, snntorch.Synaptic, snntorch.RLeaky, snntorch.RSynaptic,
                       snntorch.Lapicque), _snntorch))
        found.append(((snntorch.Alpha,), _snntorch_alpha))
    if _loaded("norse"):
        from norse.torch import LIBoxCell, LICell, LIFBoxCell, LIFCell, LIFRecurrentCell, LILinearCell
        found.append(((LIFCell, LIFBoxCell, LIFRecurrentCell), _norse))
        found.append(((LICell, LILinearCell, LIBoxCell), _norse_leaky_integrator))
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
    # Exact types: a subclass (e.g. SpikingJelly's ILIFNode(LIFNode)) may change the equations;
    # one that only sets constructor defaults (SpikingResformer's ``LIF(LIFNode)``) maps as its base.
    for classes, fn in _registry():
        if type(module) in classes or any(_only_constructor(type(module), c) for c in classes):
            return fn
    return None


def _only_constructor(cls: type, base: type) -> bool:
    """True when ``cls`` derives from ``base`` and the classes between define no method but __init__."""
    if not issubclass(cls, base) or cls is base:
        return False
    for c in cls.__mro__[:cls.__mro__.index(base)]:
        for k, v in vars(c).items():
            if k != "__init__" and (callable(v) or isinstance(v, (property, staticmethod, classmethod))):
                return False
    return True


def neuron_spec(path: str, module) -> NeuronSpec:
    """The IR form of neuron ``module`` at ``path``; a clear error for unsupported ones."""
    fn = _adapter(module)
    if fn is None and type(module).__name__.startswith("OTTT"):
        raise _fail(path, module, "OTTT (online training through time) neurons are not supported: "
                    "in training they return traces with the spikes, and OTTT models use weight-standardized "
                    "layers; in eval an OTTTLIFNode computes LIFNode's spikes, so export the trained network "
                    "rebuilt with LIFNode (same tau, decay_input, v_reset) and plain Conv2d/Linear")
    if fn is None:
        raise _fail(path, module, "this neuron type is not supported (supported: SpikingJelly IFNode, "
                    "LIFNode, ParametricLIFNode; snnTorch Leaky, Synaptic, RLeaky, RSynaptic, Lapicque; Norse LIFCell, LIFBoxCell, LIFRecurrentCell, LICell, LILinearCell, LIBoxCell)")
    return fn(path, module)
