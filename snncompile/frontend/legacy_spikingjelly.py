"""``spikingjelly.clock_driven`` (SpikingJelly 0.0.0.0.12) on SpikingJelly 2.0, for loading models.

The official Spikformer / Spikingformer / SDT / QKFormer code imports
``spikingjelly.clock_driven``, which SpikingJelly removed in 0.0.0.0.14. :func:`install` adds an
import hook (last on ``sys.meta_path``, so a real legacy install always wins) that serves
``spikingjelly.clock_driven`` and its ``neuron``, ``layer``, ``functional``, ``surrogate`` and
``base`` modules from the 2.0 classes. Nothing is written into site-packages.

Each legacy neuron is a subclass of its 2.0 twin with the legacy constructor; the arithmetic
is the 2.0 one, which equals the legacy source (checked against ``clock_driven/neuron.py`` at
the 0.0.0.0.12 release, tests/test_legacy_spikingjelly.py):

- charge, ``decay_input=True``: ``v += (x - (v - v_reset)) / tau`` (``v_reset`` None or 0: ``v += (x - v)/tau``);
  ``decay_input=False``: ``v = v - (v - v_reset) / tau + x``; IF: ``v += x``; ParametricLIF: ``1/tau = sigmoid(w)``,
  ``w = -log(init_tau - 1)``. One rounding difference: with ``decay_input=False`` and ``v_reset``
  None or 0, legacy evaluates ``v * (1 - 1/tau) + x`` and 2.0 ``v - v/tau + x`` (equal up to the
  last bit of ``v``; legacy's own cupy kernels round differently again);
- fire ``v >= v_threshold``; hard reset to ``v_reset``, or subtract ``v_threshold`` when ``v_reset`` is None;
- defaults ``tau = init_tau = 2``, ``decay_input=True``, ``v_threshold=1``, ``v_reset=0``,
  ``surrogate.Sigmoid()``, ``detach_reset=False`` (a gradient-only switch);
- ``MultiStep*`` take ``(T, ...)`` and loop over the first dim; ``backend='cupy'`` runs the same
  equations with torch; ``backend='lava'`` (lava-dl's quantized neurons) is refused.

Legacy names that are not provided exist as placeholders that raise a clear error when used.
"""
from __future__ import annotations

import copy
import importlib
import importlib.abc
import importlib.machinery
import sys
import types

from torch import nn

PACKAGE = "spikingjelly.clock_driven"


def _legacy(module: str):
    """Class decorator: report the class under its legacy module (pickles, reprs, and the
    frontend's SpikingJelly checks read ``__module__``)."""
    def mark(cls):
        cls.__module__, cls.__qualname__ = f"{PACKAGE}.{module}", cls.__name__
        return cls
    return mark


def _unprovided(module: str, name: str) -> type:
    """A stand-in for a legacy name we do not provide: importing works, using it says why."""
    def refuse(*args, **kwargs):
        raise NotImplementedError(
            f"{PACKAGE}.{module}.{name} is not provided by snncompile's SpikingJelly 0.0.0.0.12 "
            f"compatibility layer (it runs legacy models on SpikingJelly 2.0 and provides: "
            f"{', '.join(_PROVIDED[module])})")
    return _legacy(module)(type(name, (nn.Module,), {"__init__": refuse, "__doc__": "Not provided."}))


def _check_backend(cls_name: str, backend: str) -> None:
    if backend not in ("torch", "cupy"):
        raise NotImplementedError(
            f"{cls_name}(backend={backend!r}): only backend 'torch' and 'cupy' are provided on SpikingJelly "
            f"2.0 (both run the same equations with torch); 'lava' used lava-dl's quantized neurons")


def _neurons():
    """The legacy neuron classes, defined on first use (importing SpikingJelly takes seconds)."""
    from spikingjelly.activation_based import neuron as sjn
    from spikingjelly.activation_based import surrogate

    @_legacy("neuron")
    class IFNode(sjn.IFNode):
        """Legacy single-step IF; ``cupy_fp32_inference`` runs as torch."""

        def __init__(self, v_threshold: float = 1., v_reset: float = 0., surrogate_function=surrogate.Sigmoid(),
                     detach_reset: bool = False, cupy_fp32_inference=False):
            super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode="s")

    @_legacy("neuron")
    class MultiStepIFNode(sjn.IFNode):
        """Legacy multi-step IF: input ``(T, ...)``."""

        def __init__(self, v_threshold: float = 1., v_reset: float = 0., surrogate_function=surrogate.Sigmoid(),
                     detach_reset: bool = False, backend="torch", lava_s_cale=1 << 6):
            _check_backend("MultiStepIFNode", backend)
            super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode="m",
                             store_v_seq=True)

    @_legacy("neuron")
    class LIFNode(sjn.LIFNode):
        """Legacy single-step LIF; ``cupy_fp32_inference`` runs as torch."""

        def __init__(self, tau: float = 2., decay_input: bool = True, v_threshold: float = 1., v_reset: float = 0.,
                     surrogate_function=surrogate.Sigmoid(), detach_reset: bool = False, cupy_fp32_inference=False):
            super().__init__(tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset,
                             step_mode="s")

    @_legacy("neuron")
    class MultiStepLIFNode(sjn.LIFNode):
        """Legacy multi-step LIF (the spiking transformers' neuron): input ``(T, ...)``."""

        def __init__(self, tau: float = 2., decay_input: bool = True, v_threshold: float = 1., v_reset: float = 0.,
                     surrogate_function=surrogate.Sigmoid(), detach_reset: bool = False, backend="torch",
                     lava_s_cale=1 << 6):
            _check_backend("MultiStepLIFNode", backend)
            super().__init__(tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset,
                             step_mode="m", store_v_seq=True)

    @_legacy("neuron")
    class ParametricLIFNode(sjn.ParametricLIFNode):
        """Legacy single-step PLIF (learned ``w``, ``1/tau = sigmoid(w)``)."""

        def __init__(self, init_tau: float = 2., decay_input: bool = True, v_threshold: float = 1.,
                     v_reset: float = 0., surrogate_function=surrogate.Sigmoid(), detach_reset: bool = False):
            super().__init__(init_tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset,
                             step_mode="s")

    @_legacy("neuron")
    class MultiStepParametricLIFNode(sjn.ParametricLIFNode):
        """Legacy multi-step PLIF: input ``(T, ...)``."""

        def __init__(self, init_tau: float = 2., decay_input: bool = True, v_threshold: float = 1.,
                     v_reset: float = 0., surrogate_function=surrogate.Sigmoid(), detach_reset: bool = False,
                     backend="torch"):
            _check_backend("MultiStepParametricLIFNode", backend)
            super().__init__(init_tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset,
                             step_mode="m", store_v_seq=True)

    return {cls.__name__: cls for cls in (IFNode, MultiStepIFNode, LIFNode, MultiStepLIFNode,
                                          ParametricLIFNode, MultiStepParametricLIFNode)}


def _dropouts():
    """Legacy dropouts: one mask per sequence while training (reset by ``functional.reset_net``),
    identity in eval. ``nn.Dropout`` subclasses, so the frontend maps them as dropout."""
    from spikingjelly.activation_based import base

    def make(name: str, drop, multi_step: bool, default_p: float):
        def __init__(self, p=default_p):
            assert 0 <= p < 1
            nn.Dropout.__init__(self, p)
            self.register_memory("mask", None)
            self.step_mode = "m" if multi_step else "s"

        def forward(self, x):
            if not self.training:
                return x
            if self.mask is None:
                first = x[0] if multi_step else x
                self.mask = drop(first.new_ones(first.shape), self.p, training=True)
            return x * self.mask

        return _legacy("layer")(type(name, (nn.Dropout, base.MemoryModule),
                                     {"__init__": __init__, "forward": forward, "__doc__": f"Legacy {name}."}))

    import torch.nn.functional as F
    return {name: make(name, drop, multi, p) for name, drop, multi, p in (
        ("Dropout", F.dropout, False, 0.5), ("Dropout2d", F.dropout2d, False, 0.2),
        ("MultiStepDropout", F.dropout, True, 0.5), ("MultiStepDropout2d", F.dropout2d, True, 0.5))}


def _same_in_2_0(module_name: str, names: tuple) -> dict:
    module = __import__(f"spikingjelly.activation_based.{module_name}", fromlist=["_"])
    return {name: getattr(module, name) for name in names}


#: Per legacy module: the names provided (2.0 objects with the legacy signature and behaviour).
_PROVIDED = {
    "neuron": ("IFNode", "MultiStepIFNode", "LIFNode", "MultiStepLIFNode", "ParametricLIFNode",
               "MultiStepParametricLIFNode"),
    "layer": ("SeqToANNContainer", "MultiStepContainer", "Dropout", "Dropout2d", "MultiStepDropout",
              "MultiStepDropout2d", "NeuNorm", "SynapseFilter", "DropConnectLinear", "PrintShapeModule",
              "ElementWiseRecurrentContainer", "LinearRecurrentContainer"),
    "functional": ("reset_net", "multi_step_forward", "seq_to_ann_forward", "redundant_one_hot",
                   "first_spike_index", "kernel_dot_product", "spike_similar_loss", "set_threshold_margin",
                   "temporal_efficient_training_cross_entropy", "kaiming_normal_conv_linear_weight"),
    "surrogate": ("heaviside", "SurrogateFunctionBase", "PiecewiseQuadratic", "PiecewiseExp", "Sigmoid",
                  "SoftSign", "ATan", "NonzeroSignLogAbs", "Erf", "PiecewiseLeakyReLU",
                  "SquarewaveFourierSeries", "S2NN", "QPseudoSpike", "check_manual_grad", "piecewise_quadratic",
                  "piecewise_exp", "sigmoid", "soft_sign", "atan", "nonzero_sign_log_abs", "erf",
                  "piecewise_leaky_relu", "squarewave_fourier_series", "s2nn", "q_pseudo_spike"),
    "base": ("MemoryModule",),
}
#: Names the 0.0.0.0.12 modules had that are not provided (placeholders that raise when used).
_NOT_PROVIDED = {
    "neuron": ("BaseNode", "AdaptiveBaseNode", "QIFNode", "EIFNode", "MultiStepEIFNode", "GeneralNode",
               "MultiStepGeneralNode", "LIAFNode", "check_backend"),
    "layer": ("DCT", "AXAT", "ChannelsPool", "STDPLearner", "ConvBatchNorm2d",
              "MultiStepThresholdDependentBatchNorm1d", "MultiStepThresholdDependentBatchNorm2d",
              "MultiStepThresholdDependentBatchNorm3d", "MultiStepTemporalWiseAttention"),
    "functional": ("spike_cluster", "fused_conv2d_weight_of_convbn2d", "fused_conv2d_bias_of_convbn2d",
                   "scale_fused_conv2d_weight_of_convbn2d", "scale_fused_conv2d_bias_of_convbn2d",
                   "fuse_convbn2d"),
    "surrogate": ("MultiArgsSurrogateFunctionBase", "check_cuda_grad"),
    "base": (),
}


#: Legacy modules imported their siblings (``from spikingjelly.clock_driven.neuron import surrogate`` works).
_SIBLINGS = {"neuron": ("surrogate", "base"), "layer": ("base", "functional"), "functional": ("neuron",)}


def _contents(module: str) -> dict:
    if module == "neuron":
        provided = _neurons()
    elif module == "layer":
        provided = dict(_same_in_2_0("layer", tuple(n for n in _PROVIDED["layer"] if "Dropout" not in n)),
                        **_dropouts())
    else:
        provided = _same_in_2_0(module, _PROVIDED[module])
    provided.update({name: _unprovided(module, name) for name in _NOT_PROVIDED[module]})
    provided.update({name: importlib.import_module(f"{PACKAGE}.{name}") for name in _SIBLINGS.get(module, ())})
    return provided


class _LegacyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``spikingjelly.clock_driven[.neuron|.layer|...]`` when no real legacy package has it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == PACKAGE:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        if fullname.startswith(PACKAGE + "."):
            sub = fullname[len(PACKAGE) + 1:]
            if sub not in _PROVIDED:
                raise ModuleNotFoundError(
                    f"{fullname} is not provided by snncompile's SpikingJelly 0.0.0.0.12 compatibility "
                    f"layer (provided: {', '.join(f'{PACKAGE}.{m}' for m in _PROVIDED)})", name=fullname)
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = "SpikingJelly 0.0.0.0.12 names served by snncompile.frontend.legacy_spikingjelly."
        if module.__name__ == PACKAGE:
            module.__path__ = []
            return
        sub = module.__name__.rsplit(".", 1)[1]
        module.__dict__.update(_contents(sub))
        setattr(sys.modules[PACKAGE], sub, module)


_FINDER = _LegacyFinder()


def install() -> None:
    """Make ``import spikingjelly.clock_driven...`` work on SpikingJelly 2.0 (idempotent).

    Appended to ``sys.meta_path``: a real SpikingJelly 0.0.0.0.12 install is found first."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)


def neuron_classes() -> tuple[type, ...]:
    """The legacy neuron classes, if legacy code was imported through this layer (else empty)."""
    module = sys.modules.get(f"{PACKAGE}.neuron")
    if module is None or module.__loader__ is not _FINDER:
        return ()
    return tuple(getattr(module, name) for name in _PROVIDED["neuron"])


def activation_based_twin(m: nn.Module) -> nn.Module:
    """The SpikingJelly 2.0 neuron ``m`` is a legacy-signature subclass of (same state, same
    equations): the frontend maps that one."""
    twin = copy.copy(m)
    twin.__class__ = type(m).__mro__[1]
    return twin
